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
        Ok((batch, guard)) => (Stderr(Some(batch)), Some(guard)),
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
        tracing::info!(
            request_id = self.request_id.to_str().unwrap_or("-"),
            method = self.method.as_str(),
            path = self.path.as_str(),
            status = self.status,
            duration_ms = ms(duration),
            model = self.model.as_deref().unwrap_or("-"),
            target = target.unwrap_or("-"),
            attempts = self.attempts,
            queue_ms = ms(self.queue),
            first_byte_ms = self.first_byte.map(ms),
            stream = self.stream,
            outcome,
            "request"
        );
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
