//! Logging: the tracing subscriber (text or JSON, written through a non-blocking writer so a
//! slow terminal or journal never stalls a request) and the one-line-per-request record.
//!
//! Secrets never reach a log line: upstream keys live only in sensitive `HeaderValue`s, and
//! anything that must name a key uses [`redact`].

use std::time::Duration;

use http::{HeaderValue, Method};
use tokio::time::Instant;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Keep the guard alive until exit so buffered lines flush.
pub fn init(level: &str, format: LogFormat) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}

/// A key as it may be shown: `…abcd` (last four characters), or `…` for short keys.
pub fn redact(key: &str) -> String {
    let n = key.chars().count();
    if n < 12 {
        return "…".into();
    }
    let tail: String = key.chars().skip(n - 4).collect();
    format!("…{tail}")
}

/// Milliseconds with microsecond resolution, for logs and `server-timing`.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Everything the request log line needs; filled in as the request goes, emitted once.
#[derive(Debug)]
pub struct RequestLog {
    /// `x-request-id`
    pub request_id: HeaderValue,
    /// Client method.
    pub method: Method,
    /// Client path (and query).
    pub path: String,
    /// Requested model, once known.
    pub model: Option<String>,
    /// `provider/model` of the last attempt.
    pub target: Option<HeaderValue>,
    /// Upstream attempts.
    pub attempts: u32,
    /// When the request arrived.
    pub start: Instant,
    /// Time spent waiting for a provider slot.
    pub queue: Duration,
    /// Time from sending upstream to the response headers of the answering attempt.
    pub first_byte: Option<Duration>,
    /// Time spent in upstream attempts that got no usable answer.
    pub upstream_spent: Duration,
    /// Status sent to the client.
    pub status: u16,
    /// `"stream": true`
    pub stream: bool,
    emitted: bool,
}

impl RequestLog {
    /// A record for a request that just arrived.
    pub fn new(request_id: HeaderValue, method: Method, path: String, start: Instant) -> Self {
        Self {
            request_id,
            method,
            path,
            model: None,
            target: None,
            attempts: 0,
            start,
            queue: Duration::ZERO,
            first_byte: None,
            upstream_spent: Duration::ZERO,
            status: 0,
            stream: false,
            emitted: false,
        }
    }

    /// Writes the request's log line once; `outcome` says how the body ended.
    pub fn emit(&mut self, outcome: &'static str) {
        if std::mem::replace(&mut self.emitted, true) {
            return;
        }
        let s = |v: &Option<HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        tracing::info!(
            request_id = self.request_id.to_str().unwrap_or("-"),
            method = self.method.as_str(),
            path = self.path.as_str(),
            status = self.status,
            duration_ms = ms(self.start.elapsed()),
            model = self.model.as_deref().unwrap_or("-"),
            target = s(&self.target).as_str(),
            attempts = self.attempts,
            queue_ms = ms(self.queue),
            first_byte_ms = self.first_byte.map(ms),
            stream = self.stream,
            outcome,
            "request"
        );
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        // Dropped unwritten: the client left before the answer (hyper dropped the request).
        if !self.emitted {
            if self.status == 0 {
                self.status = 499;
            }
            self.emit("client_gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_at_most_four_characters() {
        assert_eq!(redact("sk-proj-abcdefghijklmnop"), "…mnop");
        assert_eq!(redact("short"), "…");
    }
}
