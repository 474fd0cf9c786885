//! What one upstream attempt did, as a timeline the candidate's timeouts can cut: when
//! response headers came (if they did), when a stream's first content came, and how the
//! body ended (whole, broken, or never).
//!
//! [`Behaviour::from_record`] reads it from an access-log attempt (contract §8);
//! [`Behaviour::play`] replays it under a candidate's [`Timeouts`] the way the live proxy
//! would see it, answering [`Played`]: a failure the walk hears before the commit point, a
//! whole answer, or a stream that commits and later ends. The cut mirrors the live driver
//! (`proxy::attempt`, `hold_until_content`, the stream guard): the first-byte budget is
//! `min(first_byte, total)`; a stream must show content within `first_token` (and `idle`,
//! `total`) after sending; a body must end within `total`. A timeout the candidate sets
//! shorter than what was recorded turns the outcome into that timeout; a longer one cannot
//! reveal what the provider would have done later, so a recorded silence (a hang, a
//! timeout) stays silent until the candidate's own timer fires.
//!
//! Invariants: all times are microseconds from the attempt's sending; `play` is a pure
//! function (no clock), so the same behaviour and timeouts always play the same way.

use std::time::Duration;

use crate::config::Timeouts;
use crate::error::UpstreamError;

/// Microseconds from sending the attempt.
pub type Micros = u64;

/// Microseconds of a duration, saturating.
pub fn micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds of a logged millisecond figure; negative, NaN or missing is 0.
pub fn micros_of_ms(ms: f64) -> Micros {
    if ms.is_finite() && ms > 0.0 {
        // `as` saturates on overflow: no panic on absurd input.
        (ms * 1000.0).round() as u64
    } else {
        0
    }
}

/// The response head of an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Head {
    /// When the headers came.
    pub at: Micros,
    /// Their status.
    pub status: u16,
    /// Their `retry-after`.
    pub retry_after: Option<Duration>,
    /// A 400 that says the prompt does not fit (inferred: the request moved on after it).
    pub context_overflow: bool,
}

/// How a connection failed, as far as replay needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// Connect or DNS failure.
    Connect,
    /// TLS handshake failure.
    Tls,
    /// Reset, closed early, protocol error.
    Reset,
    /// A stream's error event before its first content.
    ErrorEvent,
    /// The body was larger than `max_body_size`.
    TooLarge,
    /// The body went silent (recorded `timeout_idle` after a stream's commit).
    Idle,
    /// The body was still coming when the recorded `total` passed.
    Total,
}

/// How the body ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tail {
    /// Whole, at this time.
    Complete(Micros),
    /// Broken, at this time.
    Broke(Break, Micros),
    /// Nothing more came: a hang, or a timeout that cut it (the recorded time is a lower
    /// bound, so only the candidate's own timers decide when it ends).
    Silent,
}

/// What a provider did with one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// Response headers, if any came.
    pub head: Option<Head>,
    /// A stream's first content event. The access log does not record it apart from the
    /// headers, so a committed stream's content is taken to come with its headers.
    pub content: Option<Micros>,
    /// How the body ended.
    pub tail: Tail,
}

/// Times below this many microseconds (about 35.8 minutes) pack exactly; longer ones in
/// whole milliseconds, up to about 24.8 days (then they saturate).
const EXACT: u64 = 1 << 31;
/// The packed `None`.
const NONE: u32 = u32::MAX;

/// A time packed into 31 bits and a unit flag; never [`NONE`].
fn pack_micros(t: Micros) -> u32 {
    if t < EXACT {
        t as u32
    } else {
        // Milliseconds with the top bit set; saturate below NONE.
        let ms = (t / 1000).min(u64::from(u32::MAX >> 1) - 1);
        (ms as u32) | (1 << 31)
    }
}

fn unpack_micros(p: u32) -> Micros {
    if p & (1 << 31) == 0 {
        u64::from(p)
    } else {
        u64::from(p & !(1 << 31)) * 1000
    }
}

fn pack_opt(t: Option<Micros>) -> u32 {
    t.map_or(NONE, pack_micros)
}

fn unpack_opt(p: u32) -> Option<Micros> {
    (p != NONE).then(|| unpack_micros(p))
}

/// A [`Behaviour`] in 20 bytes instead of 64, as the log keeps one per recorded attempt
/// (a million-request log holds over a million). Lossless for every time under about 35.8
/// minutes; longer times keep whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    head_at: u32,
    retry_after: u32,
    content: u32,
    tail_at: u32,
    status: u16,
    /// 0 no head, 1 head, 2 head with context overflow.
    head: u8,
    /// 0 complete, 1 silent, 2.. broke, by [`Break`].
    tail: u8,
}

const BREAKS: [Break; 7] = [
    Break::Connect,
    Break::Tls,
    Break::Reset,
    Break::ErrorEvent,
    Break::TooLarge,
    Break::Idle,
    Break::Total,
];

impl From<Behaviour> for Packed {
    fn from(b: Behaviour) -> Packed {
        let (tail, tail_at) = match b.tail {
            Tail::Complete(t) => (0, pack_micros(t)),
            Tail::Silent => (1, 0),
            Tail::Broke(k, t) => {
                let i = BREAKS.iter().position(|x| *x == k).unwrap_or(2);
                (2 + i as u8, pack_micros(t))
            }
        };
        Packed {
            head_at: b.head.map_or(0, |h| pack_micros(h.at)),
            retry_after: pack_opt(b.head.and_then(|h| h.retry_after).map(micros)),
            content: pack_opt(b.content),
            tail_at,
            status: b.head.map_or(0, |h| h.status),
            head: b.head.map_or(0, |h| 1 + u8::from(h.context_overflow)),
            tail,
        }
    }
}

impl From<Packed> for Behaviour {
    fn from(p: Packed) -> Behaviour {
        let at = unpack_micros(p.tail_at);
        Behaviour {
            head: (p.head > 0).then(|| Head {
                at: unpack_micros(p.head_at),
                status: p.status,
                retry_after: unpack_opt(p.retry_after).map(Duration::from_micros),
                context_overflow: p.head == 2,
            }),
            content: unpack_opt(p.content),
            tail: match p.tail {
                0 => Tail::Complete(at),
                1 => Tail::Silent,
                k => Tail::Broke(
                    BREAKS
                        .get(usize::from(k - 2))
                        .copied()
                        .unwrap_or(Break::Reset),
                    at,
                ),
            },
        }
    }
}

/// One attempt as the access log records it, borrowed from the parsed line.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// `ms`: until the verdict.
    pub ms: f64,
    /// `first_byte_ms`.
    pub first_byte_ms: Option<f64>,
    /// `status`.
    pub status: Option<u16>,
    /// `error`.
    pub error: Option<&'a str>,
    /// `retry_after_ms`.
    pub retry_after_ms: Option<f64>,
    /// The request asked for a stream.
    pub stream: bool,
    /// This attempt answered the client: it is the request's last attempt and the client
    /// got a 2xx (so a stream that failed after it did so after committing).
    pub answered: bool,
    /// Another attempt followed this one in the same request.
    pub followed: bool,
}

fn is_2xx(s: u16) -> bool {
    (200..300).contains(&s)
}

impl Record<'_> {
    /// The attempt was a stream that reached the client: a failure it records came after
    /// its commit point.
    pub fn committed_stream(&self) -> bool {
        self.stream && self.answered && self.status.is_some_and(is_2xx)
    }
}

impl Behaviour {
    /// The behaviour a logged attempt shows. Unknown `error` words (a newer gateway) read
    /// as a reset: some failure of the connection.
    pub fn from_record(r: &Record<'_>) -> Behaviour {
        let at = micros_of_ms(r.ms);
        let head = r.status.map(|status| Head {
            at: r.first_byte_ms.map_or(at, micros_of_ms).min(at.max(1)),
            status,
            retry_after: r.retry_after_ms.and_then(|ms| {
                (ms.is_finite() && ms >= 0.0)
                    .then(|| Duration::try_from_secs_f64(ms / 1000.0).ok())
                    .flatten()
            }),
            // The walk moves on after a 400 only when the prompt did not fit the model.
            context_overflow: status == 400 && r.followed,
        });
        let committed_stream = r.committed_stream();
        let content = if r.stream && head.is_some_and(|h| is_2xx(h.status)) {
            head.map(|h| h.at)
        } else {
            None
        };
        let (content, tail) = match r.error {
            None => (content, Tail::Complete(at)),
            Some("connect") => (None, Tail::Broke(Break::Connect, at)),
            Some("tls") => (None, Tail::Broke(Break::Tls, at)),
            Some("timeout_first_byte") => (None, Tail::Silent),
            Some("timeout_first_token") => (None, Tail::Silent),
            Some("error_event") => (None, Tail::Broke(Break::ErrorEvent, at)),
            Some("body_too_large") => (None, Tail::Broke(Break::TooLarge, at)),
            // The client left: the provider had not finished by then (a lower bound).
            Some("client_gone") if committed_stream => (content, Tail::Complete(at)),
            Some("client_gone") => (None, Tail::Silent),
            Some("timeout_idle") if committed_stream => (content, Tail::Broke(Break::Idle, at)),
            Some("timeout_idle") => (None, Tail::Silent),
            Some("timeout_total") if committed_stream => (content, Tail::Broke(Break::Total, at)),
            Some("timeout_total") => (None, Tail::Broke(Break::Total, at)),
            Some(_) if committed_stream => (content, Tail::Broke(Break::Reset, at)),
            Some(_) => (None, Tail::Broke(Break::Reset, at)),
        };
        let head = match r.error {
            Some("connect" | "tls" | "timeout_first_byte") => None,
            _ => head,
        };
        Behaviour {
            head,
            content: content.filter(|_| head.is_some()),
            tail,
        }
    }

    /// A hang: no headers, nothing.
    pub fn hang() -> Behaviour {
        Behaviour {
            head: None,
            content: None,
            tail: Tail::Silent,
        }
    }

    /// A refused connection, at once.
    pub fn refused() -> Behaviour {
        Behaviour {
            head: None,
            content: None,
            tail: Tail::Broke(Break::Connect, 0),
        }
    }

    /// A whole answer with `status`, at once.
    pub fn status(status: u16, retry_after: Option<Duration>) -> Behaviour {
        Behaviour {
            head: Some(Head {
                at: 0,
                status,
                retry_after,
                context_overflow: false,
            }),
            content: None,
            tail: Tail::Complete(0),
        }
    }

    /// A success: headers (and a stream's content) at `first_byte`, the end at `end`.
    pub fn success(first_byte: Micros, end: Micros, stream: bool) -> Behaviour {
        Behaviour {
            head: Some(Head {
                at: first_byte,
                status: 200,
                retry_after: None,
                context_overflow: false,
            }),
            content: stream.then_some(first_byte),
            tail: Tail::Complete(end.max(first_byte)),
        }
    }

    /// The same behaviour `d` later in every respect (`slow:DUR`).
    pub fn delayed(mut self, d: Micros) -> Behaviour {
        if let Some(h) = &mut self.head {
            h.at = h.at.saturating_add(d);
        }
        self.content = self.content.map(|c| c.saturating_add(d));
        self.tail = match self.tail {
            Tail::Complete(t) => Tail::Complete(t.saturating_add(d)),
            Tail::Broke(b, t) => Tail::Broke(b, t.saturating_add(d)),
            Tail::Silent => Tail::Silent,
        };
        self
    }

    /// Time to the verdict as recorded, for timelines; `None` for a silence.
    pub fn recorded_ms(&self) -> Option<f64> {
        match self.tail {
            Tail::Complete(t) | Tail::Broke(_, t) => Some(t as f64 / 1000.0),
            Tail::Silent => None,
        }
    }

    /// Plays the behaviour under the candidate's timeouts, for a request that asked for a
    /// stream or not.
    pub fn play(&self, t: &Timeouts, stream: bool) -> Played {
        let total = micros(t.total);
        let idle = micros(t.idle);
        // `proxy::attempt`: the wait for headers is cut by `first_byte`, capped by `total`.
        let fb_budget = micros(t.first_byte).min(total);
        let fb_timeout = || {
            if t.total < t.first_byte {
                UpstreamError::TotalTimeout(t.total)
            } else {
                UpstreamError::FirstByteTimeout(t.first_byte)
            }
        };
        let Some(head) = self.head else {
            return match self.tail {
                Tail::Broke(k, at) if !matches!(k, Break::Idle | Break::Total) => {
                    let at = if k == Break::Connect {
                        at.min(micros(t.connect))
                    } else {
                        at
                    };
                    if at <= fb_budget {
                        Played::failed(error(k, t), at, None)
                    } else {
                        Played::failed(fb_timeout(), fb_budget, None)
                    }
                }
                _ => Played::failed(fb_timeout(), fb_budget, None),
            };
        };
        if head.at > fb_budget {
            return Played::failed(fb_timeout(), fb_budget, None);
        }
        let fb = head.at;
        if stream && is_2xx(head.status) {
            // `hold_until_content`: content within `first_token`, `total`, and `idle` after
            // the headers; at a tie `total` names the timeout, then `first_token`.
            let first_token = micros(t.first_token);
            let limit = first_token.min(total).min(fb.saturating_add(idle));
            // Headers after `first_token` already: the wait ends as soon as it begins.
            let cut = limit.max(fb);
            let cut_error = if cut >= total {
                UpstreamError::TotalTimeout(t.total)
            } else if cut >= first_token {
                UpstreamError::FirstTokenTimeout(t.first_token)
            } else {
                UpstreamError::IdleTimeout(t.idle)
            };
            let commit = match (self.content, self.tail) {
                (Some(c), _) if c <= limit => c.max(fb),
                (Some(_), _) => return Played::failed(cut_error, cut, Some(fb)),
                (None, Tail::Broke(k, at)) if !matches!(k, Break::Idle | Break::Total) => {
                    return if at <= limit {
                        Played::failed(error(k, t), at.max(fb), Some(fb))
                    } else {
                        Played::failed(cut_error, cut, Some(fb))
                    };
                }
                // A stream that ends before any content commits as it is.
                (None, Tail::Complete(at)) if at <= limit => at.max(fb),
                (None, _) => return Played::failed(cut_error, cut, Some(fb)),
            };
            // After the commit the stream guard enforces `idle` and the `total` deadline.
            let (end, completed) = match self.tail {
                Tail::Complete(at) if at <= total => (at.max(commit), true),
                Tail::Complete(_) => (total, false),
                Tail::Broke(_, at) => (at.max(commit).min(total), false),
                Tail::Silent => (commit.saturating_add(idle).min(total), false),
            };
            return Played::Stream {
                status: head.status,
                first_byte: fb,
                commit,
                end: end.max(commit),
                completed,
            };
        }
        // A whole body, read with `idle` between chunks and the `total` deadline.
        match self.tail {
            Tail::Complete(at) if at <= total => Played::Answer {
                status: head.status,
                retry_after: head.retry_after,
                context_overflow: head.context_overflow,
                first_byte: fb,
                at: at.max(fb),
            },
            Tail::Complete(_) | Tail::Broke(Break::Total, _) => {
                Played::failed(UpstreamError::TotalTimeout(t.total), total, None)
            }
            Tail::Broke(Break::Idle, _) | Tail::Silent => {
                let cut = fb.saturating_add(idle).min(total);
                let e = if cut >= total {
                    UpstreamError::TotalTimeout(t.total)
                } else {
                    UpstreamError::IdleTimeout(t.idle)
                };
                Played::failed(e, cut, None)
            }
            Tail::Broke(_, at) if at > total => {
                Played::failed(UpstreamError::TotalTimeout(t.total), total, None)
            }
            Tail::Broke(k, at) => Played::failed(error(k, t), at.max(fb), None),
        }
    }
}

/// The upstream error a break reads as (messages say it was replayed).
fn error(k: Break, t: &Timeouts) -> UpstreamError {
    let why = "as recorded".to_string();
    match k {
        Break::Connect => UpstreamError::Connect(why),
        Break::Tls => UpstreamError::Tls(why),
        Break::Reset => UpstreamError::Reset(why),
        Break::ErrorEvent => UpstreamError::ErrorEvent(why),
        Break::TooLarge => UpstreamError::TooLarge(0),
        Break::Idle => UpstreamError::IdleTimeout(t.idle),
        Break::Total => UpstreamError::TotalTimeout(t.total),
    }
}

/// A behaviour played under the candidate's timeouts: what the walk hears, and when.
#[derive(Debug, Clone, PartialEq)]
pub enum Played {
    /// No usable answer: the walk hears `Observed::Failed(error)` at `at`.
    Failed {
        /// What failed.
        error: UpstreamError,
        /// When.
        at: Micros,
        /// Headers came at this time (a stream that failed before its content): the
        /// latency the live proxy records for it.
        first_byte: Option<Micros>,
    },
    /// A whole HTTP answer at `at`, its headers at `first_byte`.
    Answer {
        /// Its status.
        status: u16,
        /// Its `retry-after`.
        retry_after: Option<Duration>,
        /// The prompt did not fit the model.
        context_overflow: bool,
        /// Headers.
        first_byte: Micros,
        /// The whole body.
        at: Micros,
    },
    /// A 2xx stream: headers at `first_byte`, commits at `commit`, ends at `end`.
    Stream {
        /// Its status.
        status: u16,
        /// Headers.
        first_byte: Micros,
        /// First content event: the commit point.
        commit: Micros,
        /// End of the body.
        end: Micros,
        /// Delivered whole (else it broke, went idle or passed `total`).
        completed: bool,
    },
}

impl Played {
    fn failed(error: UpstreamError, at: Micros, first_byte: Option<Micros>) -> Played {
        Played::Failed {
            error,
            at,
            first_byte,
        }
    }

    /// When the walk hears the verdict (a stream: its commit).
    pub fn verdict_at(&self) -> Micros {
        match self {
            Played::Failed { at, .. } | Played::Answer { at, .. } => *at,
            Played::Stream { commit, .. } => *commit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ms: f64, fb: Option<f64>, status: Option<u16>, error: Option<&str>) -> Record<'_> {
        Record {
            ms,
            first_byte_ms: fb,
            status,
            error,
            retry_after_ms: None,
            stream: false,
            answered: true,
            followed: false,
        }
    }

    fn timeouts(first_byte: u64, first_token: u64, idle: u64, total: u64) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_millis(first_byte),
            first_token: Duration::from_millis(first_token),
            idle: Duration::from_millis(idle),
            total: Duration::from_millis(total),
        }
    }

    #[test]
    fn a_plain_answer_plays_as_recorded_under_generous_timeouts() {
        let b = Behaviour::from_record(&rec(120.0, Some(100.0), Some(200), None));
        let p = b.play(&timeouts(60_000, 60_000, 30_000, 600_000), false);
        assert_eq!(
            p,
            Played::Answer {
                status: 200,
                retry_after: None,
                context_overflow: false,
                first_byte: 100_000,
                at: 120_000
            }
        );
    }

    #[test]
    fn shorter_candidate_timeouts_cut_the_recorded_times() {
        // Headers after 3 s; the candidate waits 1 s for them.
        let b = Behaviour::from_record(&rec(3500.0, Some(3000.0), Some(200), None));
        match b.play(&timeouts(1000, 60_000, 30_000, 600_000), false) {
            Played::Failed {
                error: UpstreamError::FirstByteTimeout(d),
                at: 1_000_000,
                ..
            } => assert_eq!(d, Duration::from_secs(1)),
            p => panic!("{p:?}"),
        }
        // `total` shorter than `first_byte` names the total timeout.
        match b.play(&timeouts(5000, 60_000, 30_000, 2000), false) {
            Played::Failed {
                error: UpstreamError::TotalTimeout(_),
                at: 2_000_000,
                ..
            } => {}
            p => panic!("{p:?}"),
        }
        // The body ends after 3.5 s; `total` 3.2 s cuts it.
        match b.play(&timeouts(5000, 60_000, 30_000, 3200), false) {
            Played::Failed {
                error: UpstreamError::TotalTimeout(_),
                at: 3_200_000,
                ..
            } => {}
            p => panic!("{p:?}"),
        }
        // A stream's first content (taken at its headers) must come within `first_token`.
        let mut r = rec(9000.0, Some(3000.0), Some(200), None);
        r.stream = true;
        let s = Behaviour::from_record(&r);
        match s.play(&timeouts(5000, 2000, 30_000, 600_000), true) {
            // Headers at 3 s, past `first_token`: the wait for content ends at once.
            Played::Failed {
                error: UpstreamError::FirstTokenTimeout(_),
                at: 3_000_000,
                first_byte: Some(3_000_000),
            } => {}
            p => panic!("{p:?}"),
        }
        match s.play(&timeouts(5000, 4000, 30_000, 600_000), true) {
            Played::Stream {
                status: 200,
                first_byte: 3_000_000,
                commit: 3_000_000,
                end: 9_000_000,
                completed: true,
            } => {}
            p => panic!("{p:?}"),
        }
        match s.play(&timeouts(5000, 4000, 30_000, 6000), true) {
            Played::Stream {
                end: 6_000_000,
                completed: false,
                ..
            } => {}
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn a_recorded_silence_lasts_until_the_candidates_own_timer() {
        // Recorded: no headers within the old 60 s first_byte.
        let b = Behaviour::from_record(&rec(60_000.0, None, None, Some("timeout_first_byte")));
        assert_eq!(b, Behaviour::hang());
        match b.play(&timeouts(5000, 60_000, 30_000, 600_000), false) {
            Played::Failed {
                error: UpstreamError::FirstByteTimeout(_),
                at: 5_000_000,
                ..
            } => {}
            p => panic!("{p:?}"),
        }
        // A longer candidate timeout waits longer: the provider stays silent.
        match b.play(&timeouts(90_000, 60_000, 30_000, 600_000), false) {
            Played::Failed { at: 90_000_000, .. } => {}
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn fast_failures_keep_their_recorded_time_and_kind() {
        let b = Behaviour::from_record(&rec(0.4, None, None, Some("connect")));
        match b.play(&timeouts(5000, 5000, 5000, 5000), false) {
            Played::Failed {
                error: UpstreamError::Connect(_),
                at: 400,
                ..
            } => {}
            p => panic!("{p:?}"),
        }
        let b = Behaviour::from_record(&rec(3.0, Some(3.0), Some(503), None));
        assert!(matches!(
            b.play(&timeouts(5000, 5000, 5000, 5000), false),
            Played::Answer {
                status: 503,
                at: 3000,
                ..
            }
        ));
        let b = Behaviour::from_record(&rec(0.5, None, None, Some("no_such_word")));
        assert_eq!(b.tail, Tail::Broke(Break::Reset, 500));
    }

    #[test]
    fn a_stream_that_failed_after_its_commit_is_told_from_one_that_failed_before() {
        let mut r = rec(800.0, Some(100.0), Some(200), Some("reset"));
        r.stream = true;
        let after = Behaviour::from_record(&r);
        assert_eq!(after.content, Some(100_000));
        match after.play(&timeouts(5000, 5000, 5000, 5000), true) {
            Played::Stream {
                commit: 100_000,
                end: 800_000,
                completed: false,
                ..
            } => {}
            p => panic!("{p:?}"),
        }
        r.answered = false;
        let before = Behaviour::from_record(&r);
        assert!(matches!(
            before.play(&timeouts(5000, 5000, 5000, 5000), true),
            Played::Failed {
                error: UpstreamError::Reset(_),
                at: 800_000,
                first_byte: Some(100_000)
            }
        ));
    }

    #[test]
    fn a_400_followed_by_another_attempt_was_a_full_context_window() {
        let mut r = rec(5.0, Some(5.0), Some(400), None);
        r.followed = true;
        assert!(matches!(
            Behaviour::from_record(&r).play(&Timeouts::default(), false),
            Played::Answer {
                context_overflow: true,
                ..
            }
        ));
    }

    #[test]
    fn absurd_numbers_do_not_panic() {
        for ms in [f64::NAN, -1.0, 1e300, f64::INFINITY] {
            let mut r = rec(ms, Some(ms), Some(200), None);
            r.retry_after_ms = Some(ms);
            let b = Behaviour::from_record(&r);
            let _ = b.play(&Timeouts::default(), true);
            let _ = b.delayed(u64::MAX).play(&Timeouts::default(), false);
        }
    }

    #[test]
    fn packing_keeps_every_behaviour_under_half_an_hour_exactly() {
        assert_eq!(std::mem::size_of::<Packed>(), 20);
        let mut rng = fastrand::Rng::with_seed(7);
        let errors = [
            None,
            Some("connect"),
            Some("tls"),
            Some("reset"),
            Some("timeout_first_byte"),
            Some("timeout_first_token"),
            Some("timeout_idle"),
            Some("timeout_total"),
            Some("error_event"),
            Some("body_too_large"),
            Some("client_gone"),
        ];
        for _ in 0..5000 {
            let ms = rng.f64() * 2_000_000.0;
            let r = Record {
                ms,
                first_byte_ms: rng.bool().then(|| rng.f64() * ms),
                status: rng.bool().then(|| rng.u16(100..600)),
                error: errors[rng.usize(..errors.len())],
                retry_after_ms: rng.bool().then(|| f64::from(rng.u32(..2_000_000))),
                stream: rng.bool(),
                answered: rng.bool(),
                followed: rng.bool(),
            };
            let b = Behaviour::from_record(&r);
            let back = Behaviour::from(Packed::from(b));
            assert_eq!(back, b, "{r:?}");
        }
        // Longer times keep their milliseconds.
        let long = Behaviour::success(3_000_000_123, 90_000_000_999, true);
        let back = Behaviour::from(Packed::from(long));
        assert_eq!(
            back,
            Behaviour::success(3_000_000_000, 90_000_000_000, true)
        );
        for b in [
            Behaviour::hang(),
            Behaviour::refused(),
            Behaviour::status(429, None),
        ] {
            assert_eq!(Behaviour::from(Packed::from(b)), b);
        }
    }
}
