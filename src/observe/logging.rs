//! Logging: the tracing subscriber (text or JSON, written through a [`Batch`] so a slow
//! terminal or journal never stalls a request, and a busy gateway writes its lines in a few
//! calls a second instead of one wakeup and one `write(2)` per request) and the
//! one-line-per-request record.
//!
//! Secrets never reach a log line: upstream keys live only in sensitive `HeaderValue`s, and
//! anything that must name a key uses [`crate::policy::keys::redact`].

use std::time::{Duration, SystemTime};

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use http::{HeaderValue, Method};
use serde::Serialize;
use tokio::time::Instant;

use crate::observe::accesslog::AccessLog;
use crate::observe::batch::{Batch, Writer};
use crate::observe::metrics::Metrics;
use crate::observe::usage::Usage;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Changes the level filter of the installed subscriber (set by [`init`]).
type SetLevel = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();

/// Bytes of log lines that may wait for standard error; more are dropped.
const STDERR_CAPACITY: usize = 4 * 1024 * 1024;

/// Log lines into the standard-error batch (or straight to standard error, if its writer
/// thread could not start).
#[derive(Debug, Clone)]
struct Stderr(Option<Batch>);

/// One formatted event: the fmt layer writes it with one `write_all`.
#[derive(Debug)]
enum Line<'a> {
    Batch(&'a Batch),
    Direct(std::io::Stderr),
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Line<'a> {
        match &self.0 {
            Some(b) => Line::Batch(b),
            None => Line::Direct(std::io::stderr()),
        }
    }
}

impl std::io::Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            // A line that does not fit (standard error stalled) is dropped, never waited on.
            Line::Batch(b) => {
                b.push(buf, false);
                Ok(buf.len())
            }
            Line::Direct(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Line::Batch(_) => Ok(()),
            Line::Direct(e) => e.flush(),
        }
    }
}

/// Installs the global subscriber. Keep the guard alive until exit: dropping it writes the
/// lines still waiting.
pub fn init(level: &str, format: LogFormat) -> Option<Writer> {
    let (writer, guard) = match Batch::start("log", std::io::stderr(), STDERR_CAPACITY, None) {
        Ok((batch, guard)) => {
            let _ = REQUEST_LINES.set((batch.clone(), format));
            (Stderr(Some(batch)), Some(guard))
        }
        Err(_) => (Stderr(None), None),
    };
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Text => {
            let builder = builder.with_ansi(false).with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = SET_LEVEL.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = SET_LEVEL.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }
    }
    guard
}

/// Applies a new `log.level` (on reload). The format needs a restart.
pub fn set_level(level: &str) {
    if let (Some(set), Ok(filter)) = (SET_LEVEL.get(), EnvFilter::try_new(level))
        && let Err(e) = set(filter)
    {
        tracing::warn!("cannot change the log level: {e}");
    }
}

thread_local! {
    /// The access log line being serialized, reused from request to request.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where [`init`] sends log lines, and their format: the request line is written there
/// directly (see [`RequestLine`]).
static REQUEST_LINES: OnceLock<(Batch, LogFormat)> = OnceLock::new();

/// The fields of the one line per request (contract §8), in their order on the line.
#[derive(Debug, Serialize)]
struct RequestLine<'a> {
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    status: u16,
    duration_ms: f64,
    model: &'a str,
    target: &'a str,
    attempts: u32,
    queue_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_byte_ms: Option<f64>,
    stream: bool,
    outcome: &'static str,
}

impl RequestLine<'_> {
    /// Logs the line at `info`, where the level filter lets it through. Once [`init`] ran,
    /// it is formatted here exactly as the subscriber's own layout would (text or JSON) and
    /// pushed straight to the log writer: the generic event machinery (a visitor per field,
    /// a `dyn Debug` per value) cost more than the rest of the request's logging together.
    fn log(&self) {
        if !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        let Some((batch, format)) = REQUEST_LINES.get() else {
            tracing::info!(
                request_id = self.request_id,
                method = self.method,
                path = self.path,
                status = self.status,
                duration_ms = self.duration_ms,
                model = self.model,
                target = self.target,
                attempts = self.attempts,
                queue_ms = self.queue_ms,
                first_byte_ms = self.first_byte_ms,
                stream = self.stream,
                outcome = self.outcome,
                "request"
            );
            return;
        };
        LINE.with_borrow_mut(|buf| {
            buf.clear();
            let written = match format {
                LogFormat::Text => self.text(buf).is_ok(),
                LogFormat::Json => self.json(buf).is_ok(),
            };
            if written {
                batch.push(buf, true);
            }
        });
    }

    /// `2026-11-21T13:46:08.000567Z  INFO request request_id="…" … outcome="completed"`:
    /// strings quoted and escaped as `Debug` does, floats as `Debug` does (`0.0`), an
    /// absent `first_byte_ms` left out.
    fn text(&self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        use std::io::Write;
        let now = humantime::format_rfc3339_micros(SystemTime::now());
        write!(
            buf,
            "{now}  INFO request request_id={:?} method={:?} path={:?} status={} duration_ms={:?} \
             model={:?} target={:?} attempts={} queue_ms={:?}",
            self.request_id,
            self.method,
            self.path,
            self.status,
            self.duration_ms,
            self.model,
            self.target,
            self.attempts,
            self.queue_ms,
        )?;
        if let Some(fb) = self.first_byte_ms {
            write!(buf, " first_byte_ms={fb:?}")?;
        }
        write!(buf, " stream={} outcome={:?}", self.stream, self.outcome)
    }

    /// The same fields as one JSON object, as the JSON layout writes them.
    fn json(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
        #[derive(Serialize)]
        struct Json<'a> {
            timestamp: String,
            level: &'static str,
            message: &'static str,
            #[serde(flatten)]
            line: &'a RequestLine<'a>,
        }
        serde_json::to_writer(
            buf,
            &Json {
                timestamp: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                level: "INFO",
                message: "request",
                line: self,
            },
        )
    }
}

/// Milliseconds with microsecond resolution, for logs and `server-timing`.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Where finished requests are reported: metrics, and the access log when configured.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// The metrics registry.
    pub metrics: Metrics,
    /// The access log, swapped on reload when `log.access_log` changes.
    pub access: ArcSwapOption<AccessLog>,
}

impl Telemetry {
    /// Closes the access log and waits until its queued lines are in the file. Blocks: call
    /// it at exit, off the async runtime (dropping the log on the runtime does not wait).
    pub fn close_access_log(&self) {
        if let Some(log) = self.access.swap(None) {
            // Another holder (a request finishing its line) closes it when it lets go.
            if let Ok(mut log) = Arc::try_unwrap(log) {
                log.close();
            }
        }
    }
}

/// One upstream attempt, as the access log shows it (contract §8): what the provider did,
/// not only what the client got, so `gateway replay` can play it again.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    /// Provider name.
    pub provider: Arc<str>,
    /// Upstream model.
    pub model: Arc<str>,
    /// The provider key used, as `…abcd`.
    pub key: Option<Box<str>>,
    /// When it was sent, in milliseconds from the request's arrival.
    pub start_ms: f64,
    /// Until its verdict: the headers for a failure before them, the end of the body
    /// otherwise (a stream's end: it held its slot that long).
    pub ms: f64,
    /// Sent to response headers, if it got them.
    pub first_byte_ms: Option<f64>,
    /// HTTP status of the provider's answer, if it gave one.
    pub status: Option<u16>,
    /// Why it failed, from a fixed vocabulary (`connect`, `tls`, `reset`,
    /// `timeout_first_byte`, `timeout_first_token`, `timeout_idle`, `timeout_total`,
    /// `error_event`, `body_too_large`, `client_gone`), or null.
    pub error: Option<&'static str>,
    /// The answer's `retry-after` / `retry-after-ms`, in milliseconds.
    pub retry_after_ms: Option<f64>,
}

/// A target passed over without an attempt.
#[derive(Debug, Clone, Serialize)]
pub struct SkipRecord {
    /// `provider/model`.
    pub target: Arc<str>,
    /// `circuit_open`, `rate_limited`, `keys_cooling`, `queue_full`, `queue_timeout` or
    /// `retry_budget_exhausted`.
    pub reason: &'static str,
}

/// Everything the request log line needs; filled in as the request goes, emitted once.
#[derive(Debug)]
pub struct RequestLog {
    /// Where the record goes when done.
    pub telemetry: Arc<Telemetry>,
    /// `x-request-id`
    pub request_id: HeaderValue,
    /// Client method.
    pub method: Method,
    /// Client path (and query).
    pub path: String,
    /// Requested model, once known.
    pub model: Option<String>,
    /// The `model` metric label (an alias, or a bounded free value).
    pub model_label: Option<Arc<str>>,
    /// `provider/model` of the last attempt.
    pub target: Option<HeaderValue>,
    /// Provider of the last attempt.
    pub provider: Option<Arc<str>>,
    /// Upstream attempts.
    pub attempts: u32,
    /// Each attempt, for the access log.
    pub attempt_log: Vec<AttemptRecord>,
    /// When the request arrived.
    pub start: Instant,
    /// When the request arrived, on the wall clock (the access log's `ts`).
    pub arrived: SystemTime,
    /// The strategy that ordered the targets (`None` for a `provider/model` request).
    pub strategy: Option<&'static str>,
    /// The gateway's error code, when it answered with its own error.
    pub code: Option<&'static str>,
    /// The API the client speaks: the shape of the gateway's errors.
    pub api: crate::error::Api,
    /// Targets passed over, for the access log.
    pub skipped: Vec<SkipRecord>,
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
    /// Usage the provider reported.
    pub usage: Option<Usage>,
    /// USD per million prompt and completion tokens of the answering target.
    pub prices: (Option<f64>, Option<f64>),
    emitted: bool,
}

#[derive(Serialize)]
struct AccessLine<'a> {
    ts: String,
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    model: Option<&'a str>,
    strategy: Option<&'a str>,
    target: Option<&'a str>,
    status: u16,
    code: Option<&'a str>,
    attempts: &'a [AttemptRecord],
    skipped: &'a [SkipRecord],
    queue_ms: f64,
    first_byte_ms: Option<f64>,
    duration_ms: f64,
    stream: bool,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    cost_usd: Option<f64>,
    outcome: &'a str,
}

impl RequestLog {
    /// A record for a request that just arrived.
    pub fn new(
        telemetry: Arc<Telemetry>,
        request_id: HeaderValue,
        method: Method,
        path: String,
        start: Instant,
    ) -> Self {
        Self {
            telemetry,
            request_id,
            method,
            path,
            model: None,
            model_label: None,
            target: None,
            provider: None,
            attempts: 0,
            attempt_log: Vec::new(),
            start,
            arrived: SystemTime::now(),
            strategy: None,
            code: None,
            api: crate::error::Api::OpenAi,
            skipped: Vec::new(),
            queue: Duration::ZERO,
            first_byte: None,
            upstream_spent: Duration::ZERO,
            status: 0,
            stream: false,
            usage: None,
            prices: (None, None),
            emitted: false,
        }
    }

    /// Milliseconds from the request's arrival to `t`.
    pub fn since_arrival(&self, t: Instant) -> f64 {
        ms(t.saturating_duration_since(self.start))
    }

    /// Closes the last attempt when its stream ends: its `ms` runs to the end of the body,
    /// and a failure names its kind.
    pub fn end_attempt(&mut self, now: Instant, error: Option<&'static str>) {
        let end = self.since_arrival(now);
        if let Some(a) = self.attempt_log.last_mut() {
            a.ms = (end - a.start_ms).max(0.0);
            if error.is_some() {
                a.error = error;
            }
        }
    }

    /// Cost of the reported usage at the answering target's prices.
    pub fn cost(&self) -> Option<f64> {
        let u = self.usage?;
        let (input, output) = self.prices;
        if input.is_none() && output.is_none() {
            return None;
        }
        Some(
            (u.prompt as f64 * input.unwrap_or(0.0) + u.completion as f64 * output.unwrap_or(0.0))
                / 1_000_000.0,
        )
    }

    /// Writes the request's log line, metrics and access log line, once; `outcome` says
    /// how the body ended.
    pub fn emit(&mut self, outcome: &'static str) {
        if std::mem::replace(&mut self.emitted, true) {
            return;
        }
        let duration = self.start.elapsed();
        let target = self.target.as_ref().and_then(|v| v.to_str().ok());
        RequestLine {
            request_id: self.request_id.to_str().unwrap_or("-"),
            method: self.method.as_str(),
            path: self.path.as_str(),
            status: self.status,
            duration_ms: ms(duration),
            model: self.model.as_deref().unwrap_or("-"),
            target: target.unwrap_or("-"),
            attempts: self.attempts,
            queue_ms: ms(self.queue),
            first_byte_ms: self.first_byte.map(ms),
            stream: self.stream,
            outcome,
        }
        .log();
        let t = &*self.telemetry;
        let model = self
            .model_label
            .clone()
            .unwrap_or_else(|| t.metrics.free_model_label(""));
        let provider = self
            .provider
            .clone()
            .unwrap_or_else(|| t.metrics.no_provider());
        t.metrics.request(&model, &provider, self.status, duration);
        let cost = self.cost();
        if let Some(u) = self.usage {
            t.metrics
                .usage(&model, &provider, u.prompt, u.completion, cost);
        }
        if let Some(log) = t.access.load().as_ref() {
            let line = AccessLine {
                ts: humantime::format_rfc3339_millis(self.arrived).to_string(),
                request_id: self.request_id.to_str().unwrap_or(""),
                method: self.method.as_str(),
                path: &self.path,
                model: self.model.as_deref(),
                strategy: self.strategy,
                target,
                status: self.status,
                code: self.code,
                attempts: &self.attempt_log,
                skipped: &self.skipped,
                queue_ms: ms(self.queue),
                first_byte_ms: self.first_byte.map(ms),
                duration_ms: ms(duration),
                stream: self.stream,
                prompt_tokens: self.usage.map(|u| u.prompt),
                completion_tokens: self.usage.map(|u| u.completion),
                cost_usd: cost,
                outcome,
            };
            LINE.with_borrow_mut(|buf| {
                buf.clear();
                if serde_json::to_writer(&mut *buf, &line).is_ok() {
                    log.write(buf);
                }
                // A huge line (many attempts) does not pin its buffer on this thread.
                if buf.capacity() > 64 * 1024 {
                    *buf = Vec::new();
                }
            });
        }
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

    fn line(first_byte_ms: Option<f64>) -> RequestLine<'static> {
        RequestLine {
            request_id: "e91e",
            method: "POST",
            path: "/v1/chat/\"x\"",
            status: 200,
            duration_ms: 51.97,
            model: "demo",
            target: "demo/mock-model",
            attempts: 1,
            queue_ms: 0.0,
            first_byte_ms,
            stream: false,
            outcome: "completed",
        }
    }

    /// The line after its timestamp.
    fn after_timestamp(buf: &[u8], sep: &str) -> String {
        let s = String::from_utf8(buf.to_vec()).unwrap();
        let (ts, rest) = s.split_once(sep).unwrap();
        assert!(
            humantime::parse_rfc3339(ts.trim_matches('"')).is_ok(),
            "{ts}"
        );
        rest.to_string()
    }

    #[test]
    fn the_text_line_has_the_subscriber_layout() {
        let mut buf = Vec::new();
        line(Some(51.793)).text(&mut buf).unwrap();
        assert_eq!(
            after_timestamp(&buf, "  "),
            "INFO request request_id=\"e91e\" method=\"POST\" path=\"/v1/chat/\\\"x\\\"\" \
             status=200 duration_ms=51.97 model=\"demo\" target=\"demo/mock-model\" \
             attempts=1 queue_ms=0.0 first_byte_ms=51.793 stream=false outcome=\"completed\""
        );
        buf.clear();
        line(None).text(&mut buf).unwrap();
        assert!(!String::from_utf8(buf).unwrap().contains("first_byte_ms"));
    }

    #[test]
    fn the_json_line_has_the_same_fields() {
        let mut buf = Vec::new();
        line(None).json(&mut buf).unwrap();
        let rest = after_timestamp(&buf[r#"{"timestamp":"#.len()..], ",");
        assert_eq!(
            rest,
            r#""level":"INFO","message":"request","request_id":"e91e","method":"POST","path":"/v1/chat/\"x\"","status":200,"duration_ms":51.97,"model":"demo","target":"demo/mock-model","attempts":1,"queue_ms":0.0,"stream":false,"outcome":"completed"}"#
        );
    }
}
