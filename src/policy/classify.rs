//! Outcome classification (contract §6): the one place that says what an upstream attempt
//! meant — a provider failure, a success or neither for the breaker — and what the walk does
//! next: commit the answer, retry the same target, go again with another key, pause the
//! provider and move on, or stop.
//!
//! A provider failure is a connect/DNS/TLS error, a reset, a timeout, an error event before
//! a stream's first content, or HTTP 500, 502, 503, 504, 529. Fast failures (refused, reset,
//! 5xx) are retried on the same target; a timeout is not (a provider silent for 30 s will
//! not answer in the next 30 s either): the walk moves on at once. A 429 is not a failure:
//! it pauses the provider (or sets aside one of several keys). A refused key (401, 402, 403
//! when the gateway sent one of the provider's keys) is not a failure either: the key is set
//! aside. A prompt too long for the model (400 `context_length_exceeded`, Anthropic's
//! "prompt is too long", or a 413) moves to the next target, which may have a larger
//! window, and is neutral. Every other answer, the provider's own 4xx included, is a
//! success for the breaker and goes to the client.

use std::time::Duration;

use super::breaker::Outcome;
use super::keys::Cooling;
use crate::error::UpstreamError;

/// What came back from one attempt, as far as policy cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// An HTTP answer (for a non-stream request, with its whole body read).
    Answer {
        /// Its status.
        status: u16,
        /// Its `retry-after-ms` / `retry-after`, if any.
        retry_after: Option<Duration>,
        /// Its body says the prompt does not fit the model ([`is_context_overflow`]).
        context_overflow: bool,
    },
    /// No usable HTTP answer.
    Failed(UpstreamError),
}

/// What the walk does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The answer goes to the client: a success, or the provider's own client error.
    Commit,
    /// A fast failure: the same target again (within `max_attempts` and the retry budget),
    /// then the next target.
    Retry,
    /// Move to the next target at once, without retrying this one (a timeout, a prompt too
    /// long for this model).
    MoveOn,
    /// Set this key aside and go again at once with the next key of the same provider.
    NextKey(Cooling),
    /// Pause the provider (429) and move on to the next target.
    Pause,
    /// Stop the walk: no other target would answer differently (an answer too large).
    Stop,
}

/// The verdict on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What the breaker (and the success rate) hears.
    pub health: Outcome,
    /// What the walk does next.
    pub next: Next,
}

/// HTTP statuses that are provider failures.
pub fn is_failure_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504 | 529)
}

/// Classifies an attempt. `keyed`: the attempt carried one of the provider's keys;
/// `several_keys`: the provider has more than one.
pub fn classify(observed: &Observed, keyed: bool, several_keys: bool) -> Verdict {
    let (health, next) = match observed {
        Observed::Answer {
            context_overflow: true,
            ..
        }
        | Observed::Answer { status: 413, .. } => (Outcome::Neutral, Next::MoveOn),
        Observed::Answer { status, .. } => match *status {
            401..=403 if keyed => (Outcome::Neutral, Next::NextKey(Cooling::Refused)),
            429 if keyed && several_keys => (Outcome::Neutral, Next::NextKey(Cooling::RateLimited)),
            429 => (Outcome::Neutral, Next::Pause),
            s if is_failure_status(s) => (Outcome::Failure, Next::Retry),
            // A request timeout says nothing about health; another try may fit in time.
            408 => (Outcome::Neutral, Next::Retry),
            _ => (Outcome::Success, Next::Commit),
        },
        // Oversized is a property of the answer, not of the provider's health, and another
        // attempt would get the same answer.
        Observed::Failed(UpstreamError::TooLarge(_)) => (Outcome::Neutral, Next::Stop),
        Observed::Failed(e) if e.is_timeout() => (Outcome::Failure, Next::MoveOn),
        Observed::Failed(_) => (Outcome::Failure, Next::Retry),
    };
    Verdict { health, next }
}

/// True when a 400 answer's body says the prompt does not fit the model: OpenAI's code
/// `context_length_exceeded`, or an Anthropic `invalid_request_error` whose message says the
/// prompt is too long. Reads at most the first 64 KiB; never fails.
pub fn is_context_overflow(status: u16, body: &[u8]) -> bool {
    if status != 400 {
        return false;
    }
    let head = &body[..body.len().min(64 * 1024)];
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(head) else {
        return false;
    };
    let e = &v["error"];
    if e["code"].as_str() == Some("context_length_exceeded") {
        return true;
    }
    let anthropic =
        v["type"].as_str() == Some("error") && e["type"].as_str() == Some("invalid_request_error");
    let message = e["message"].as_str().unwrap_or("").to_ascii_lowercase();
    anthropic && message.contains("prompt is too long")
}

/// How a streamed answer ended, after its first byte reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Delivered whole.
    Completed,
    /// The upstream broke, went idle or passed `total`.
    Failed,
    /// The gateway's drain deadline cut it.
    Shutdown,
    /// The client went away.
    ClientGone,
}

/// What the breaker hears of a stream's end: cutting it at shutdown or losing the client
/// says nothing about the provider.
pub fn stream_verdict(end: StreamEnd) -> Outcome {
    match end {
        StreamEnd::Completed => Outcome::Success,
        StreamEnd::Failed => Outcome::Failure,
        StreamEnd::Shutdown | StreamEnd::ClientGone => Outcome::Neutral,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Observed {
        Observed::Answer {
            status,
            retry_after: None,
            context_overflow: false,
        }
    }

    #[test]
    fn statuses() {
        let v = |s, keyed, several| classify(&answer(s), keyed, several);
        for s in [500, 502, 503, 504, 529] {
            assert_eq!(
                v(s, true, true),
                Verdict {
                    health: Outcome::Failure,
                    next: Next::Retry
                }
            );
        }
        for s in [200, 201, 400, 404, 422, 501, 505] {
            assert_eq!(
                v(s, true, true),
                Verdict {
                    health: Outcome::Success,
                    next: Next::Commit
                }
            );
        }
        assert_eq!(v(408, false, false).next, Next::Retry);
        assert_eq!(v(408, false, false).health, Outcome::Neutral);
        for s in [401, 402, 403] {
            assert_eq!(v(s, true, false).next, Next::NextKey(Cooling::Refused));
            assert_eq!(v(s, true, false).health, Outcome::Neutral);
            // Without a key of ours, a 401 is the provider's answer on the request's merits.
            assert_eq!(v(s, false, false).next, Next::Commit);
        }
        assert_eq!(v(429, true, true).next, Next::NextKey(Cooling::RateLimited));
        assert_eq!(v(429, true, false).next, Next::Pause);
        assert_eq!(v(429, false, false).next, Next::Pause);
        assert_eq!(v(429, true, true).health, Outcome::Neutral);
    }

    #[test]
    fn failures() {
        let d = Duration::from_secs(1);
        for e in [
            UpstreamError::Connect("refused".into()),
            UpstreamError::Tls("bad cert".into()),
            UpstreamError::Reset("reset".into()),
            UpstreamError::ErrorEvent("overloaded".into()),
        ] {
            let v = classify(&Observed::Failed(e), true, true);
            assert_eq!(
                v,
                Verdict {
                    health: Outcome::Failure,
                    next: Next::Retry
                }
            );
        }
        // A timeout is a failure, but never retried on the same target.
        for e in [
            UpstreamError::FirstByteTimeout(d),
            UpstreamError::FirstTokenTimeout(d),
            UpstreamError::IdleTimeout(d),
            UpstreamError::TotalTimeout(d),
        ] {
            let v = classify(&Observed::Failed(e), true, true);
            assert_eq!(v.health, Outcome::Failure);
            assert_eq!(v.next, Next::MoveOn);
        }
        let v = classify(&Observed::Failed(UpstreamError::TooLarge(1)), true, true);
        assert_eq!(
            v,
            Verdict {
                health: Outcome::Neutral,
                next: Next::Stop
            }
        );
    }

    #[test]
    fn a_full_context_window_moves_on_and_is_neutral() {
        let openai = br#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let anthropic = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        let filter = br#"{"error":{"message":"content policy","type":"invalid_request_error","code":"content_filter"}}"#;
        assert!(is_context_overflow(400, openai));
        assert!(is_context_overflow(400, anthropic));
        assert!(!is_context_overflow(400, filter));
        assert!(!is_context_overflow(500, openai));
        assert!(!is_context_overflow(400, b"not json"));
        let over = Observed::Answer {
            status: 400,
            retry_after: None,
            context_overflow: true,
        };
        let v = classify(&over, true, true);
        assert_eq!((v.health, v.next), (Outcome::Neutral, Next::MoveOn));
        assert_eq!(classify(&answer(413), false, false).next, Next::MoveOn);
        // Any other 4xx (a content-filter refusal) goes to the client as it is.
        assert_eq!(classify(&answer(400), false, false).next, Next::Commit);
    }

    #[test]
    fn stream_ends() {
        assert_eq!(stream_verdict(StreamEnd::Completed), Outcome::Success);
        assert_eq!(stream_verdict(StreamEnd::Failed), Outcome::Failure);
        assert_eq!(stream_verdict(StreamEnd::Shutdown), Outcome::Neutral);
        assert_eq!(stream_verdict(StreamEnd::ClientGone), Outcome::Neutral);
    }
}
