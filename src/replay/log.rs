//! Reading access logs (contract §8) into the requests to replay and the index of what each
//! provider did, attempt by attempt.
//!
//! Lines that do not parse — not JSON, a `ts` that is not RFC 3339, a missing `status` or
//! `duration_ms`, a cut last line — are counted in [`Lines::unreadable`] and skipped, never
//! fatal; blank lines are ignored. Only a source that cannot be opened or read fails
//! ([`ReadError`]). Lines without a `model` (answered before routing: 401, bad JSON,
//! `GET /v1/models`) ask nothing of a routing config and are counted apart.
//!
//! `ts` has millisecond resolution (truncated), which is coarse enough to swap a stream's
//! end and another request's failure — and so decide whether three failures were
//! consecutive. Lines are written as requests end, so within one file the true end times
//! (`ts` + its lost fraction + `duration_ms`) never decrease from line to line; each
//! arrival is placed at the middle of the sub-millisecond interval that order allows
//! ([`refine`]; with nothing to go by, the middle of its millisecond).
//!
//! Invariants: requests are in arrival order (ties keep the order of the files and lines);
//! each provider's attempts are in sending order, so the nearest attempt to a time is a
//! binary search; times are microseconds since the Unix epoch. Names (aliases, providers,
//! upstream models) are interned once.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::BufRead;

use serde::Deserialize;

use super::behaviour::{Behaviour, Micros, Packed, Record, micros_of_ms};
use super::fault::epoch_micros;
use crate::error::UpstreamError;
use crate::policy::breaker::Outcome;
use crate::policy::classify::{self, Observed, StreamEnd};

/// Interned names, in first-seen order.
#[derive(Debug, Default)]
pub struct Names {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32>,
}

impl Names {
    /// The id of `name`, adding it if new.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    /// The id of `name`, if seen.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The name of `id` (empty for an unknown id).
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// None yet.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Line counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    /// Non-blank lines read.
    pub read: u64,
    /// Lines replayed as requests (those with a `model`).
    pub requests: u64,
    /// Lines that did not parse.
    pub unreadable: u64,
    /// Lines that parsed but name no model (answered before routing).
    pub without_model: u64,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Arrival, microseconds since the Unix epoch.
    pub ts: i64,
    /// The model asked for (an alias or `provider/model`), interned in [`Log::models`].
    pub model: u32,
    /// `"stream": true`.
    pub stream: bool,
    /// Status the client got.
    pub status: u16,
    /// The gateway's error code, if it answered with its own error, interned in
    /// [`Log::codes`].
    pub code: Option<u32>,
    /// Arrival to the end of the answer.
    pub duration: Micros,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Cost (0 when the log has none: it is only ever summed).
    pub cost_usd: f64,
    /// Tokens the provider reported (kept narrow: a request is held for every line).
    pub prompt_tokens: Option<u32>,
    /// Tokens the provider reported.
    pub completion_tokens: Option<u32>,
    /// The client left before the end (`outcome: client_gone`): it leaves at the same time
    /// in the replay.
    pub client_gone: bool,
    /// Time the gateway spent on this request outside attempts, queues and backoffs
    /// (reading, routing, answering), added to its replayed duration.
    pub overhead: Micros,
}

/// One recorded attempt.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Its request, as read (an index into the requests before they are sorted).
    pub req: u32,
    /// When it was sent, microseconds since the Unix epoch.
    pub t: i64,
    /// Upstream model, interned in [`Log::upstream_models`].
    pub model: u32,
    /// The breaker heard a failure.
    pub failed: bool,
    /// Time to its verdict, as recorded (for timelines).
    pub ms: f32,
    /// What the provider did (packed: a log holds one per recorded attempt).
    pub behaviour: Packed,
}

/// A target passed over, as recorded.
#[derive(Debug, Clone, Copy)]
pub struct Skip {
    /// The request's arrival (the log has no time of its own for a skip).
    pub t: i64,
    /// The access log's reason.
    pub reason: &'static str,
    /// Its request, as read.
    pub req: u32,
}

/// What the log says of one provider.
#[derive(Debug, Default)]
pub struct History {
    /// Its attempts, in sending order.
    pub entries: Vec<Entry>,
    /// Indexes into `entries` per upstream model, in sending order.
    by_model: HashMap<u32, Vec<u32>>,
    /// Targets of this provider passed over, in arrival order.
    pub skips: Vec<Skip>,
}

impl History {
    /// The attempt nearest to `t` within `window` microseconds, preferring attempts for
    /// upstream model `model`. At equal distance the earlier one.
    pub fn nearest(&self, model: Option<u32>, t: i64, window: i64) -> Option<&Entry> {
        if let Some(ids) = model.and_then(|m| self.by_model.get(&m)) {
            let at = |k: usize| {
                ids.get(k)
                    .and_then(|&i| self.entries.get(i as usize))
                    .map_or(i64::MAX, |e| e.t)
            };
            if let Some(k) = nearest(ids.len(), at, t, window) {
                return ids.get(k).and_then(|&i| self.entries.get(i as usize));
            }
        }
        let at = |k: usize| self.entries.get(k).map_or(i64::MAX, |e| e.t);
        nearest(self.entries.len(), at, t, window).and_then(|k| self.entries.get(k))
    }

    fn index(&mut self) {
        self.entries.sort_by_key(|e| e.t);
        self.skips.sort_by_key(|s| s.t);
        self.by_model.clear();
        for (i, e) in self.entries.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            self.by_model.entry(e.model).or_default().push(i);
        }
    }
}

/// The index in `0..n` whose time (`at`, non-decreasing) is nearest to `t`, within
/// `window`; the earlier at a tie.
fn nearest(n: usize, at: impl Fn(usize) -> i64, t: i64, window: i64) -> Option<usize> {
    // First index at or after t.
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if at(mid) < t {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let after = (lo < n).then(|| (lo, at(lo).saturating_sub(t)));
    let before = lo.checked_sub(1).map(|k| (k, t.saturating_sub(at(k))));
    let best = match (before, after) {
        (Some(b), Some(a)) => Some(if a.1 < b.1 { a } else { b }),
        (b, a) => b.or(a),
    };
    best.filter(|&(_, d)| d <= window).map(|(k, _)| k)
}

/// What `ts` leaves out: microseconds of its millisecond, `[0, 1000)`.
const TS_STEP: i64 = 1000;

/// Slack for lines written a little out of the order their requests ended in (two threads
/// finishing at the same moment): microseconds.
const ORDER_SLACK: i64 = 50;

/// The sub-millisecond offset of each request's arrival, from the order of the lines: line
/// `i` was written no later than line `i + 1`, so (up to [`ORDER_SLACK`]) its true end —
/// `ts` plus offset plus duration — is no later either. A forward pass bounds each offset
/// from below, a backward pass from above; the offset is the middle of the two (both
/// within the millisecond `ts` truncated).
pub fn refine(requests: &[Request]) -> Vec<i64> {
    let end = |r: &Request| {
        r.ts.saturating_add(i64::try_from(r.duration).unwrap_or(i64::MAX))
    };
    let clamp = |x: i64| x.clamp(0, TS_STEP - 1);
    let mut lower = Vec::with_capacity(requests.len());
    let mut latest = i64::MIN;
    for r in requests {
        let lo = clamp(latest.saturating_sub(ORDER_SLACK).saturating_sub(end(r)));
        lower.push(lo);
        latest = latest.max(end(r).saturating_add(lo));
    }
    let mut upper = vec![TS_STEP - 1; requests.len()];
    let mut earliest = i64::MAX;
    for (i, r) in requests.iter().enumerate().rev() {
        let hi = clamp(earliest.saturating_add(ORDER_SLACK).saturating_sub(end(r)));
        upper[i] = hi;
        earliest = earliest.min(end(r).saturating_add(hi));
    }
    lower
        .into_iter()
        .zip(upper)
        // Bounds that cross (lines from two gateways in one file) fall back to the lower.
        .map(|(lo, hi)| if lo <= hi { (lo + hi) / 2 } else { lo })
        .collect()
}

/// Everything read from the logs.
#[derive(Debug, Default)]
pub struct Log {
    /// Line counts.
    pub lines: Lines,
    /// Requests in arrival order.
    pub requests: Vec<Request>,
    /// Models asked for.
    pub models: Names,
    /// Providers named by attempts or skips.
    pub providers: Names,
    /// Upstream models named by attempts.
    pub upstream_models: Names,
    /// The gateway's error codes of the requests.
    pub codes: Names,
    /// Per provider id.
    pub history: Vec<History>,
}

/// A log source that cannot be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {source_name}: {error}")]
pub struct ReadError {
    /// The path, or `-` for standard input.
    pub source_name: String,
    /// Why.
    pub error: std::io::Error,
}

#[derive(Deserialize)]
struct LineIn<'a> {
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    status: u16,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    attempts: Vec<AttemptIn<'a>>,
    #[serde(default, borrow)]
    skipped: Vec<SkipIn<'a>>,
    #[serde(default)]
    queue_ms: Option<f64>,
    duration_ms: f64,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(default, borrow)]
    outcome: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AttemptIn<'a> {
    #[serde(borrow)]
    provider: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    /// Only whether one was sent matters (a 401 on a key of ours is not a failure).
    #[serde(default)]
    key: Option<serde::de::IgnoredAny>,
    start_ms: f64,
    ms: f64,
    #[serde(default)]
    first_byte_ms: Option<f64>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(default)]
    retry_after_ms: Option<f64>,
}

#[derive(Deserialize)]
struct SkipIn<'a> {
    #[serde(borrow)]
    target: Cow<'a, str>,
    #[serde(borrow)]
    reason: Cow<'a, str>,
}

/// The access log's skip reasons, as static names (unknown ones read as `other`).
fn reason(r: &str) -> &'static str {
    match r {
        "circuit_open" => "circuit_open",
        "rate_limited" => "rate_limited",
        "keys_cooling" => "keys_cooling",
        "queue_full" => "queue_full",
        "queue_timeout" => "queue_timeout",
        "retry_budget_exhausted" => "retry_budget_exhausted",
        _ => "other",
    }
}

/// The upstream error an `error` word names (unknown words: a reset).
fn upstream_error(word: &str) -> UpstreamError {
    let zero = std::time::Duration::ZERO;
    match word {
        "connect" => UpstreamError::Connect(String::new()),
        "tls" => UpstreamError::Tls(String::new()),
        "timeout_first_byte" => UpstreamError::FirstByteTimeout(zero),
        "timeout_first_token" => UpstreamError::FirstTokenTimeout(zero),
        "timeout_idle" => UpstreamError::IdleTimeout(zero),
        "timeout_total" => UpstreamError::TotalTimeout(zero),
        "error_event" => UpstreamError::ErrorEvent(String::new()),
        "body_too_large" => UpstreamError::TooLarge(0),
        _ => UpstreamError::Reset(String::new()),
    }
}

/// Whether the breaker heard a failure from a recorded attempt: the one classification
/// the server uses ([`classify`]), on what the log says.
fn recorded_failure(r: &Record<'_>, keyed: bool) -> bool {
    let verdict = match (r.error, r.status) {
        (Some("client_gone"), _) => Outcome::Neutral,
        (Some(_), _) if r.committed_stream() => classify::stream_verdict(StreamEnd::Failed),
        (Some(w), _) => {
            classify::classify(&Observed::Failed(upstream_error(w)), keyed, false).health
        }
        (None, Some(status)) => {
            let answer = Observed::Answer {
                status,
                retry_after: None,
                context_overflow: status == 400 && r.followed,
            };
            classify::classify(&answer, keyed, false).health
        }
        (None, None) => Outcome::Neutral,
    };
    verdict == Outcome::Failure
}

impl Log {
    /// Reads every source in order (`-` is standard input).
    pub fn read(sources: &[String]) -> Result<Log, ReadError> {
        let mut log = Log::default();
        for s in sources {
            let fail = |error| ReadError {
                source_name: s.clone(),
                error,
            };
            if s == "-" {
                log.add(std::io::stdin().lock()).map_err(fail)?;
            } else {
                let f = std::fs::File::open(s).map_err(fail)?;
                log.add(std::io::BufReader::with_capacity(256 * 1024, f))
                    .map_err(fail)?;
            }
        }
        log.finish();
        Ok(log)
    }

    /// Reads one source; call [`Log::finish`] after the last.
    pub fn add(&mut self, mut r: impl BufRead) -> std::io::Result<()> {
        // Where this source's requests, attempts and skips begin, to refine its arrivals
        // once its last line is read (lines are in place already: no second copy).
        let first = self.requests.len();
        let starts: Vec<(usize, usize)> = self
            .history
            .iter()
            .map(|h| (h.entries.len(), h.skips.len()))
            .collect();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if r.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.lines.read += 1;
            if self.line(&buf).is_none() {
                self.lines.unreadable += 1;
            }
        }
        let requests = self.requests.get_mut(first..).unwrap_or_default();
        let offsets = refine(requests);
        for (r, delta) in requests.iter_mut().zip(&offsets) {
            r.ts = r.ts.saturating_add(*delta);
        }
        let delta = |req: u32| {
            (req as usize)
                .checked_sub(first)
                .and_then(|k| offsets.get(k))
                .copied()
                .unwrap_or(0)
        };
        for (i, h) in self.history.iter_mut().enumerate() {
            let (entries, skips) = starts.get(i).copied().unwrap_or((0, 0));
            for e in h.entries.iter_mut().skip(entries) {
                e.t = e.t.saturating_add(delta(e.req));
            }
            for s in h.skips.iter_mut().skip(skips) {
                s.t = s.t.saturating_add(delta(s.req));
            }
        }
        Ok(())
    }

    /// Orders what was read: requests by arrival, attempts by sending.
    pub fn finish(&mut self) {
        // Stable: equal arrivals keep the order of files and lines.
        self.requests.sort_by_key(|r| r.ts);
        for h in &mut self.history {
            h.index();
        }
    }

    /// The first request's arrival.
    pub fn first(&self) -> Option<i64> {
        self.requests.first().map(|r| r.ts)
    }

    /// The gateway's error code of a request, if any.
    pub fn code(&self, r: &Request) -> Option<&str> {
        r.code.map(|c| self.codes.name(c))
    }

    /// The history of provider `id`.
    pub fn history(&self, id: u32) -> Option<&History> {
        self.history.get(id as usize)
    }

    fn provider(&mut self, name: &str) -> usize {
        let id = self.providers.intern(name) as usize;
        if self.history.len() <= id {
            self.history.resize_with(id + 1, History::default);
        }
        id
    }

    /// Parses one line; `None` when it does not parse.
    fn line(&mut self, bytes: &[u8]) -> Option<()> {
        let l: LineIn<'_> = serde_json::from_slice(bytes).ok()?;
        let ts = epoch_micros(humantime::parse_rfc3339(l.ts.trim()).ok()?);
        let Some(model) = l.model.as_deref() else {
            self.lines.without_model += 1;
            return Some(());
        };
        let model = self.models.intern(model);
        // The index this request will have, for refining its attempts' times.
        let req = u32::try_from(self.requests.len()).unwrap_or(u32::MAX);
        let answered = (200..300).contains(&l.status);
        let n = l.attempts.len();
        for (i, a) in l.attempts.iter().enumerate() {
            let record = Record {
                ms: a.ms,
                first_byte_ms: a.first_byte_ms,
                status: a.status,
                error: a.error.as_deref(),
                retry_after_ms: a.retry_after_ms,
                stream: l.stream,
                answered: answered && i + 1 == n,
                followed: i + 1 < n,
            };
            let entry = Entry {
                req,
                t: ts.saturating_add(i64::try_from(micros_of_ms(a.start_ms)).unwrap_or(i64::MAX)),
                model: self.upstream_models.intern(&a.model),
                failed: recorded_failure(&record, a.key.is_some()),
                ms: if a.ms.is_finite() {
                    a.ms.max(0.0) as f32
                } else {
                    0.0
                },
                behaviour: Behaviour::from_record(&record).into(),
            };
            let p = self.provider(&a.provider);
            self.history[p].entries.push(entry);
        }
        for s in &l.skipped {
            // `provider/model`: a provider name holds no '/'.
            let provider = s.target.split_once('/').map_or(&*s.target, |(p, _)| p);
            let p = self.provider(provider);
            self.history[p].skips.push(Skip {
                t: ts,
                reason: reason(&s.reason),
                req,
            });
        }
        let duration = micros_of_ms(l.duration_ms);
        let queue = l.queue_ms.map_or(0, micros_of_ms);
        let overhead = match (l.attempts.first(), l.attempts.last()) {
            (Some(first), Some(last)) => {
                let before = micros_of_ms(first.start_ms).saturating_sub(queue);
                let end = micros_of_ms(last.start_ms).saturating_add(micros_of_ms(last.ms));
                before.saturating_add(duration.saturating_sub(end))
            }
            _ => duration.saturating_sub(queue),
        };
        self.requests.push(Request {
            ts,
            model,
            stream: l.stream,
            status: l.status,
            code: l.code.as_deref().map(|c| self.codes.intern(c)),
            duration,
            attempts: u32::try_from(n).unwrap_or(u32::MAX),
            cost_usd: l.cost_usd.filter(|c| c.is_finite()).unwrap_or(0.0),
            prompt_tokens: l
                .prompt_tokens
                .map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
            completion_tokens: l
                .completion_tokens
                .map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
            client_gone: l.outcome.as_deref() == Some("client_gone"),
            overhead,
        });
        self.lines.requests += 1;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::behaviour::Tail;

    const OK: &str = r#"{"ts":"2026-11-21T14:15:02.729Z","request_id":"r1","method":"POST","path":"/v1/chat/completions","model":"gpt-4o","strategy":"failover","target":"local/llama","status":200,"code":null,"attempts":[{"provider":"openai","model":"gpt-4o","key":"…x9Qa","start_ms":0.31,"ms":0.412,"first_byte_ms":null,"status":null,"error":"connect","retry_after_ms":null},{"provider":"local","model":"llama","key":null,"start_ms":0.9,"ms":41.542,"first_byte_ms":41.512,"status":200,"error":null,"retry_after_ms":null}],"skipped":[{"target":"anthropic/claude","reason":"circuit_open"}],"queue_ms":0.0,"first_byte_ms":41.512,"duration_ms":56.258,"stream":false,"prompt_tokens":5,"completion_tokens":14,"cost_usd":3.3e-6,"outcome":"completed"}"#;

    fn read(text: &str) -> Log {
        let mut log = Log::default();
        log.add(text.as_bytes()).unwrap();
        log.finish();
        log
    }

    #[test]
    fn reads_a_line_of_the_documented_shape() {
        let log = read(OK);
        assert_eq!(
            log.lines,
            Lines {
                read: 1,
                requests: 1,
                unreadable: 0,
                without_model: 0
            }
        );
        let r = &log.requests[0];
        assert_eq!(log.models.name(r.model), "gpt-4o");
        assert_eq!((r.status, r.attempts, r.duration), (200, 2, 56_258));
        assert_eq!(r.cost_usd, 3.3e-6);
        // 0.31 ms before the first attempt, 56.258 − 42.442 after the last.
        assert_eq!(r.overhead, 310 + 13_816);
        let openai = log.history(log.providers.get("openai").unwrap()).unwrap();
        assert_eq!(openai.entries.len(), 1);
        assert!(
            openai.entries[0].failed,
            "a refused connection is a failure"
        );
        assert_eq!(
            Behaviour::from(openai.entries[0].behaviour).tail,
            Tail::Broke(super::super::behaviour::Break::Connect, 412)
        );
        let local = log.history(log.providers.get("local").unwrap()).unwrap();
        assert!(!local.entries[0].failed);
        assert_eq!(local.entries[0].t, r.ts + 900);
        let anthropic = log
            .history(log.providers.get("anthropic").unwrap())
            .unwrap();
        assert_eq!(anthropic.skips[0].reason, "circuit_open");
    }

    #[test]
    fn unreadable_lines_are_counted_never_fatal() {
        let text = format!(
            "{OK}\nnot json\n\n{{\"ts\":\"yesterday\",\"model\":\"m\",\"status\":200,\"duration_ms\":1}}\n\
             {{\"ts\":\"2026-11-21T14:15:02.729Z\",\"model\":\"m\"}}\n\
             {{\"ts\":\"2026-11-21T14:15:02.729Z\",\"model\":null,\"status\":401,\"duration_ms\":0.1}}\n\
             {}",
            &OK[..OK.len() / 2]
        );
        let log = read(&text);
        assert_eq!(
            log.lines,
            Lines {
                read: 6,
                requests: 1,
                unreadable: 4,
                without_model: 1
            }
        );
        // Bytes that are not UTF-8 are an unreadable line too.
        let mut log = Log::default();
        log.add(&b"\xff\xfe\n"[..]).unwrap();
        assert_eq!(log.lines.unreadable, 1);
    }

    #[test]
    fn the_order_of_lines_narrows_each_arrival_within_its_millisecond() {
        let r = |ts, duration| Request {
            ts,
            model: 0,
            stream: false,
            status: 200,
            code: None,
            duration,
            attempts: 1,
            cost_usd: 0.0,
            prompt_tokens: None,
            completion_tokens: None,
            client_gone: false,
            overhead: 0,
        };
        // Nothing to go by: the middle of the millisecond.
        assert_eq!(refine(&[r(0, 5_000), r(9_000, 5_000)]), vec![499, 499]);
        // B (arrived at 1.010 s, 0.2 ms long) was written before A (1.000 s, 10 ms long):
        // B ended first, so A arrived at least 0.15 ms into its millisecond (0.05 ms of
        // slack) and B at most 0.85 ms into its own.
        let b = r(1_010_000, 200);
        let a = r(1_000_000, 10_000);
        assert_eq!(refine(&[b, a]), vec![849 / 2, (150 + 999) / 2]);
        // Lines from two machines can contradict each other: bounds stay in the millisecond.
        let d = refine(&[r(5_000_000, 0), r(0, 0)]);
        assert!(d.iter().all(|&x| (0..1000).contains(&x)), "{d:?}");
    }

    #[test]
    fn the_nearest_attempt_within_the_window_prefers_the_same_model() {
        let mut h = History::default();
        let e = |t, model| Entry {
            req: 0,
            t,
            model,
            failed: false,
            ms: 1.0,
            behaviour: Behaviour::hang().into(),
        };
        h.entries = vec![e(100, 1), e(200, 2), e(400, 2), e(1000, 1)];
        h.index();
        let at = |m, t, w| h.nearest(m, t, w).map(|e| e.t);
        assert_eq!(at(None, 260, 1000), Some(200));
        assert_eq!(at(None, 300, 1000), Some(200), "a tie goes to the earlier");
        assert_eq!(at(Some(1), 260, 1000), Some(100), "same model first");
        assert_eq!(at(Some(1), 700, 1000), Some(1000));
        assert_eq!(
            at(Some(1), 260, 100),
            Some(200),
            "else any model in the window"
        );
        assert_eq!(at(None, 2000, 500), None, "nothing in the window");
        assert_eq!(at(Some(7), 0, 100), Some(100));
        assert_eq!(at(None, i64::MIN, i64::MAX), Some(100));
        assert_eq!(at(None, i64::MAX, 10), None);
        let empty = History::default();
        assert!(empty.nearest(Some(1), 5, 5).is_none());
    }
}
