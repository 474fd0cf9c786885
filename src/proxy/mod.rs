//! The request pipeline for `/v1/*`, as ordered phases over one per-request record:
//!
//! 1. authenticate the client (`server.api_keys`);
//! 2. read the body, at most `max_body_size` (413 before reading when `Content-Length`
//!    says so, while reading otherwise);
//! 3. find `model` and `stream` (one parse), resolve the model to its targets;
//! 4. attempt the target: rewrite `model` in place, forward headers, send with the
//!    `first_byte` timeout (capped by `total`);
//! 5. answer: a stream is passed through [`GuardedStream`]; anything else is read whole
//!    (with `idle`, `total` and the size limit) before the client sees a byte;
//! 6. decorate the response with the gateway headers and settle the request once.

pub mod auth;

pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, request};
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::body::{ReadError, ResponseBody, UpstreamBody, read_to_bytes};
use crate::error::{GatewayError, UpstreamError};
use crate::headers::{self as hdr, strip_hop_by_hop};
use crate::observe::logging::{AttemptRecord, RequestLog, Telemetry, ms};
use crate::observe::metrics::Rejection;
use crate::policy::keys::{Cooling, Key, Pick};
use crate::proxy::stream::{GuardedStream, Lease, Outcome, Settle};
use crate::runtime::route::{self, Plan, Target};
use crate::runtime::{Runtime, State};
use crate::upstream::{Provider, error_chain};
use crate::{payload, policy::breaker, policy::budget, policy::bulkhead};

/// Handles one `/v1/*` request on the current snapshot, which it holds to the end.
pub async fn handle(
    state: &State,
    req: Request<Incoming>,
    request_id: HeaderValue,
    start: Instant,
) -> Response<ResponseBody> {
    let rt = state.runtime();
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str())
        .to_owned();
    let mut log = RequestLog::new(
        state.telemetry.clone(),
        request_id,
        parts.method.clone(),
        path,
        start,
    );

    if !auth::is_authorized(&rt.server.api_keys, &parts.headers) {
        return reply_error(GatewayError::InvalidApiKey, log);
    }
    if hdr::is_websocket_upgrade(&parts.method, &parts.headers) {
        return reply_error(GatewayError::WebsocketUnsupported, log);
    }
    let path = parts.uri.path();
    if path == "/v1/models" || path.starts_with("/v1/models/") {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return reply_error(
                GatewayError::MethodNotAllowed(parts.method.to_string()),
                log,
            );
        }
        let body = match path.strip_prefix("/v1/models/") {
            None => rt.models_json.clone(),
            Some(id) => match rt.model_json(id) {
                Some(b) => b,
                None => {
                    let e = GatewayError::ModelNotFound(id.to_string());
                    return reply_error(e, log);
                }
            },
        };
        let mut resp = Response::new(ResponseBody::full(body));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return reply(resp, log, Outcome::Completed);
    }
    if parts.method != Method::POST {
        return reply_error(
            GatewayError::MethodNotAllowed(parts.method.to_string()),
            log,
        );
    }

    let bytes = match read_request_body(&rt, &parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return reply_error(e, log),
    };
    let inspected = match payload::inspect(&bytes) {
        Ok(i) => i,
        Err(m) => return reply_error(GatewayError::InvalidJson(m), log),
    };
    log.stream = inspected.stream;
    let plan = route::resolve(&rt, &inspected.model);
    log.model_label = Some(match &plan {
        Some(Plan::Alias(route)) => route.alias.clone(),
        _ => state.telemetry.metrics.free_model_label(&inspected.model),
    });
    let Some(plan) = plan else {
        let e = GatewayError::ModelNotFound(inspected.model.clone());
        log.model = Some(inspected.model);
        return reply_error(e, log);
    };
    log.model = Some(inspected.model);

    let mut headers = parts.headers;
    let sdk_retry = headers
        .get("x-stainless-retry-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|n| n > 0);
    hdr::clean_for_upstream(&mut headers);
    headers.insert(hdr::REQUEST_ID, log.request_id.clone());
    let upstream_path = log.path.strip_prefix("/v1").unwrap_or(&log.path).to_owned();
    let req = Prepared {
        bytes,
        model_range: inspected.model_range,
        stream: inspected.stream,
        headers,
        path: upstream_path,
        sdk_retry,
        stop: state.hard_stop.clone(),
    };
    walk(&rt, plan.targets(), &req, log).await
}

/// A request ready to be sent to any target.
struct Prepared {
    bytes: Bytes,
    model_range: std::ops::Range<usize>,
    stream: bool,
    /// Client headers, cleaned of what must not be forwarded.
    headers: HeaderMap,
    /// Path and query with the leading `/v1` removed.
    path: String,
    /// The client says this request is itself a retry (`x-stainless-retry-count` > 0).
    sdk_retry: bool,
    /// Cancelled when the drain budget is spent: a stream still open must end.
    stop: CancellationToken,
}

/// How the last step of a walk ended, deciding the answer when no target served.
enum Last {
    /// An attempt got an HTTP response (5xx, 408, 429, a refused key): passed through.
    Response(Response<ResponseBody>),
    /// An attempt got no HTTP response: 502 or 504.
    Failed(UpstreamError),
    /// A retry was needed after an attempt, and the budget said no.
    BudgetSpent(Duration),
}

/// Why targets were passed over without an attempt; decides the answer when no target
/// could even be tried (contract §5).
#[derive(Default)]
struct Passed {
    /// The first target's reason.
    first: Option<GatewayError>,
    /// The first local-overload reason (`queue_full`, `queue_timeout`): it wins, since a
    /// retry a moment later can reach that target.
    overload: Option<GatewayError>,
    /// Earliest half-open among open (not forced-open) circuits: `circuit_open`'s
    /// `retry-after`.
    earliest_half_open: Option<Duration>,
}

impl Passed {
    fn note(&mut self, e: GatewayError) {
        if let GatewayError::CircuitOpen {
            retry_after: Some(w),
        } = e
        {
            self.earliest_half_open = Some(self.earliest_half_open.map_or(w, |e| e.min(w)));
        }
        if matches!(
            e,
            GatewayError::QueueFull { .. } | GatewayError::QueueTimeout { .. }
        ) && self.overload.is_none()
        {
            self.overload = Some(e.clone());
        }
        if self.first.is_none() {
            self.first = Some(e);
        }
    }

    fn answer(self) -> GatewayError {
        match self.overload.or(self.first) {
            Some(GatewayError::CircuitOpen { .. }) | None => GatewayError::CircuitOpen {
                retry_after: self.earliest_half_open,
            },
            Some(e) => e,
        }
    }
}

/// Walks the chain: each target up to `max_attempts` times (with backoff, inside the retry
/// budget), passing over targets that cannot be tried (pending 429, every key set aside,
/// open circuit, spent budget, full queue) without counting an attempt. A key the provider
/// refuses (401/402/403), or rate-limits while others remain, is set aside and the request
/// goes again at once with the next key. Returns at the first answer that commits: a
/// success, a client error, or the first byte of a stream.
async fn walk(
    rt: &Runtime,
    targets: &[Target],
    req: &Prepared,
    mut log: RequestLog,
) -> Response<ResponseBody> {
    let telemetry = log.telemetry.clone();
    let metrics = &telemetry.metrics;
    let mut last: Option<Last> = None;
    let mut passed = Passed::default();
    'targets: for target in targets {
        let p = &target.provider;
        // Keys this request already had refused or rate-limited on this provider.
        let mut tried_keys: Vec<Arc<Key>> = Vec::new();
        // The next attempt re-sends at once with another key: no backoff, not a retry.
        let mut key_retry = false;
        let mut try_no = 0;
        while try_no < p.settings.retry.max_attempts {
            if try_no > 0 && !key_retry {
                tokio::time::sleep(budget::backoff(&p.settings.retry, try_no)).await;
            }
            let now = Instant::now();
            // Local reasons to pass the target over, cheapest first; nothing is taken yet.
            if let Some(wait) = p.throttled(now) {
                passed.note(GatewayError::RateLimited { retry_after: wait });
                continue 'targets;
            }
            let key = match p.health.keys.pick(now, &tried_keys) {
                Pick::NoKeys => None,
                Pick::Key(k) => Some(k),
                // Every key was tried by this request: its last answer stands.
                Pick::Exhausted { .. } if !tried_keys.is_empty() => continue 'targets,
                Pick::Exhausted { wait, why } => {
                    passed.note(match why {
                        Cooling::RateLimited => GatewayError::RateLimited { retry_after: wait },
                        Cooling::Refused => GatewayError::KeysCooling { retry_after: wait },
                    });
                    continue 'targets;
                }
            };
            if let Err(wait) = p.health.breaker.would_admit(now) {
                metrics.rejection(&p.name, Rejection::CircuitOpen);
                let forced = p.health.breaker.is_forced_open();
                passed.note(GatewayError::CircuitOpen {
                    retry_after: (!forced).then_some(wait),
                });
                continue 'targets;
            }
            let is_retry = !key_retry && (try_no > 0 || (log.attempts == 0 && req.sdk_retry));
            if is_retry {
                if !p.health.budget.try_withdraw(now) {
                    let hint = Duration::from_secs(1);
                    metrics.rejection(&p.name, Rejection::RetryBudgetExhausted);
                    match last {
                        Some(_) => last = Some(Last::BudgetSpent(hint)),
                        None => {
                            passed.note(GatewayError::RetryBudgetExhausted { retry_after: hint })
                        }
                    }
                    continue 'targets;
                }
                metrics.retry(&p.name);
            } else if !key_retry {
                p.health.budget.deposit(now);
            }
            let queued_at = Instant::now();
            let slot = match p.health.bulkhead.acquire().await {
                Ok((slot, waited)) => {
                    log.queue += waited;
                    metrics.queue_wait(&p.name, waited);
                    slot
                }
                Err(r) => {
                    let waited = queued_at.elapsed();
                    log.queue += waited;
                    metrics.queue_wait(&p.name, waited);
                    let retry_after = p
                        .health
                        .bulkhead
                        .queue_timeout()
                        .max(Duration::from_secs(1));
                    let (e, why) = match r {
                        bulkhead::Rejected::QueueFull => (
                            GatewayError::QueueFull { retry_after },
                            Rejection::QueueFull,
                        ),
                        bulkhead::Rejected::QueueTimeout => (
                            GatewayError::QueueTimeout { retry_after },
                            Rejection::QueueTimeout,
                        ),
                    };
                    metrics.rejection(&p.name, why);
                    passed.note(e);
                    continue 'targets;
                }
            };
            // The admission (a half-open probe included) is taken only now that the slot is
            // held: the circuit may have opened, or another request taken the probe, while
            // this one waited.
            let mut lease = match p.health.breaker.admit(Instant::now()) {
                Ok(ticket) => {
                    if ticket.half_opened() {
                        on_transition(&telemetry, p, breaker::State::HalfOpen);
                    }
                    Lease::new(p.clone(), ticket, telemetry.clone())
                }
                Err(wait) => {
                    drop(slot);
                    metrics.rejection(&p.name, Rejection::CircuitOpen);
                    let forced = p.health.breaker.is_forced_open();
                    passed.note(GatewayError::CircuitOpen {
                        retry_after: (!forced).then_some(wait),
                    });
                    continue 'targets;
                }
            };
            lease.hold(slot);
            key_retry = false;
            log.attempts += 1;
            log.target = Some(target.label.clone());
            log.provider = Some(p.name.clone());
            log.prices = (target.input_cost, target.output_cost);
            let body = payload::rewrite(&req.bytes, &req.model_range, &target.model_json);
            let mut headers = req.headers.clone();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            let sent = Instant::now();
            let result = attempt(
                target,
                &req.path,
                headers,
                body,
                key.as_deref(),
                req.stream,
                rt,
            )
            .await;
            let now = Instant::now();
            let took = now - sent;
            let mut record = AttemptRecord {
                provider: p.name.clone(),
                key: key.as_ref().map(|k| k.redacted().into()),
                status: None,
                error: None,
                ms: ms(took),
            };
            match &result {
                Ok((resp, first_byte, _)) => {
                    record.status = Some(resp.status().as_u16());
                    log.first_byte = Some(*first_byte);
                    metrics.first_byte(&p.name, *first_byte);
                    p.health.stats.observe_latency(*first_byte);
                }
                Err(e) => {
                    record.error = Some(e.to_string());
                    if let Some(kind) = e.kind() {
                        metrics.upstream_error(&p.name, kind);
                    }
                }
            }
            log.attempt_log.push(record);
            if !matches!(result, Ok((_, _, Answer::Stream { .. }))) {
                log.upstream_spent += took;
            }
            match result {
                Ok((
                    mut resp,
                    _,
                    Answer::Stream {
                        body,
                        idle,
                        deadline,
                    },
                )) => {
                    log.status = resp.status().as_u16();
                    decorate(resp.headers_mut(), &log);
                    let stop = Box::pin(req.stop.clone().cancelled_owned());
                    let settle = Settle::new(log, Some(lease));
                    *resp.body_mut() = ResponseBody::Stream(Box::pin(GuardedStream::new(
                        body, idle, deadline, settle, stop,
                    )));
                    return resp;
                }
                Ok((resp, _, Answer::Whole)) => {
                    let status = resp.status().as_u16();
                    match (status, key) {
                        // The provider refused this key, not the request: set it aside and
                        // go again at once with the next one.
                        (401..=403, Some(k)) => {
                            lease.settle(breaker::Outcome::Neutral);
                            tracing::warn!(
                                provider = &*p.name,
                                key = k.redacted(),
                                status,
                                "the provider refused a key; set aside for {}",
                                humantime::format_duration(p.key_cooldown)
                            );
                            p.health
                                .keys
                                .set_aside(&k, now, p.key_cooldown, Cooling::Refused);
                            tried_keys.push(k);
                            last = Some(Last::Response(resp));
                            key_retry = true;
                            continue;
                        }
                        (429, key) => {
                            metrics.upstream_error(&p.name, "status_429");
                            lease.settle(breaker::Outcome::Neutral);
                            let wait = hdr::retry_after(resp.headers())
                                .unwrap_or(DEFAULT_429_WAIT)
                                .min(p.settings.breaker.max_cooldown);
                            last = Some(Last::Response(resp));
                            match key {
                                // One of several keys: only that key waits.
                                Some(k) if p.health.keys.len() > 1 => {
                                    p.health.keys.set_aside(&k, now, wait, Cooling::RateLimited);
                                    tried_keys.push(k);
                                    key_retry = true;
                                    continue;
                                }
                                _ => {
                                    p.throttle(now, wait);
                                    continue 'targets;
                                }
                            }
                        }
                        (500 | 502 | 503 | 504, _) => {
                            metrics.upstream_error(&p.name, "status_5xx");
                            lease.settle(breaker::Outcome::Failure);
                            last = Some(Last::Response(resp));
                        }
                        (408, _) => {
                            lease.settle(breaker::Outcome::Neutral);
                            last = Some(Last::Response(resp));
                        }
                        _ => {
                            lease.settle(breaker::Outcome::Success);
                            if resp.status().is_success()
                                && !resp.headers().contains_key(header::CONTENT_ENCODING)
                                && let ResponseBody::Full(Some(b)) = resp.body()
                            {
                                log.usage = crate::observe::usage::from_json(b);
                            }
                            return reply(resp, log, Outcome::Completed);
                        }
                    }
                }
                Err(e @ UpstreamError::TooLarge(_)) => {
                    // Oversized is a property of the answer, not of the provider's health,
                    // and a retry would get the same answer.
                    lease.settle(breaker::Outcome::Neutral);
                    last = Some(Last::Failed(e));
                    break 'targets;
                }
                Err(e) => {
                    lease.settle(breaker::Outcome::Failure);
                    tracing::debug!(target = target.label_str(), "attempt failed: {e}");
                    last = Some(Last::Failed(e));
                }
            }
            try_no += 1;
        }
    }
    // The gateway already retried or failed over after an attempt: SDKs must not multiply
    // the load by retrying on top. (The gateway's own errors carry the header from
    // `GatewayError::to_response`.)
    let gave_up = log.attempts > 1;
    let mut resp = match last {
        Some(Last::Response(resp)) => resp,
        Some(Last::Failed(e)) => log_error(&GatewayError::from(e), &log),
        Some(Last::BudgetSpent(retry_after)) => {
            log_error(&GatewayError::RetryBudgetExhausted { retry_after }, &log)
        }
        None => log_error(&passed.answer(), &log),
    };
    if gave_up {
        resp.headers_mut()
            .insert(hdr::SHOULD_RETRY, HeaderValue::from_static("false"));
    }
    reply(resp, log, Outcome::Completed)
}

/// Wait after a 429 that names none.
const DEFAULT_429_WAIT: Duration = Duration::from_secs(5);

/// Hands an attempt's verdict to the provider's breaker and statistics, reporting a
/// state change.
pub fn record(t: &Telemetry, p: &Provider, ticket: breaker::Ticket, verdict: breaker::Outcome) {
    match verdict {
        breaker::Outcome::Success => p.health.stats.observe_outcome(true),
        breaker::Outcome::Failure => p.health.stats.observe_outcome(false),
        breaker::Outcome::Neutral => {}
    }
    if let Some(tr) = p.health.breaker.record(ticket, verdict, Instant::now()) {
        on_transition(t, p, tr.to);
    }
}

/// Logs and counts a breaker state change.
pub fn on_transition(t: &Telemetry, p: &Provider, to: breaker::State) {
    t.metrics.transition(&p.name, to);
    match to {
        breaker::State::Open => tracing::warn!(provider = &*p.name, "circuit opened"),
        to => tracing::info!(provider = &*p.name, "circuit {}", to.as_str()),
    }
}

/// What an attempt produced besides the response head.
enum Answer {
    /// The body is already whole in the response.
    Whole,
    /// The body is to be streamed through a guard.
    Stream {
        body: UpstreamBody,
        idle: Duration,
        deadline: Instant,
    },
}

/// One upstream attempt. Returns the response (body whole unless streaming), the time to
/// response headers, and how the body is to be sent.
async fn attempt(
    target: &Target,
    path: &str,
    headers: HeaderMap,
    body: crate::body::OutboundBody,
    key: Option<&Key>,
    stream: bool,
    rt: &Runtime,
) -> Result<(Response<ResponseBody>, Duration, Answer), UpstreamError> {
    let t = &target.provider.settings.timeouts;
    let sent = Instant::now();
    let deadline = sent + t.total;
    let first_byte_budget = t.first_byte.min(t.total);
    let resp = target
        .provider
        .send(path, headers, body, key, first_byte_budget)
        .await
        .map_err(|e| match e {
            UpstreamError::FirstByteTimeout(_) if t.total < t.first_byte => {
                UpstreamError::TotalTimeout(t.total)
            }
            e => e,
        })?;
    let first_byte = sent.elapsed();
    let (mut head, body) = resp.into_parts();
    strip_hop_by_hop(&mut head.headers);
    head.headers.remove(header::CONTENT_LENGTH);
    if stream && head.status.is_success() {
        let resp = Response::from_parts(head, ResponseBody::empty());
        return Ok((
            resp,
            first_byte,
            Answer::Stream {
                body,
                idle: t.idle,
                deadline,
            },
        ));
    }
    let bytes = read_to_bytes(body, rt.server.max_body_size, t.idle, Some(deadline))
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => UpstreamError::TooLarge(rt.server.max_body_size),
            ReadError::Idle => UpstreamError::IdleTimeout(t.idle),
            ReadError::Deadline => UpstreamError::TotalTimeout(t.total),
            ReadError::Body(e) => UpstreamError::Reset(error_chain(e.as_ref())),
        })?;
    Ok((
        Response::from_parts(head, ResponseBody::full(bytes)),
        first_byte,
        Answer::Whole,
    ))
}

async fn read_request_body(
    rt: &Runtime,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Bytes, GatewayError> {
    let max = rt.server.max_body_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(GatewayError::RequestTooLarge(max));
    }
    // A client that trickles its body is cut off like one that trickles its headers.
    read_to_bytes(body, max, rt.server.header_read_timeout, None)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => GatewayError::RequestTooLarge(max),
            ReadError::Idle | ReadError::Deadline => {
                GatewayError::BadBody("the client stopped sending the body".into())
            }
            ReadError::Body(e) => GatewayError::BadBody(error_chain(e.as_ref())),
        })
}

/// Adds the gateway's headers, from what the record knows so far.
fn decorate(h: &mut HeaderMap, log: &RequestLog) {
    h.insert(hdr::REQUEST_ID, log.request_id.clone());
    if log.attempts == 0 {
        return;
    }
    if let Some(t) = &log.target {
        h.insert(hdr::GATEWAY_TARGET, t.clone());
    }
    h.insert(hdr::GATEWAY_ATTEMPTS, HeaderValue::from(log.attempts));
    let timing = format!(
        "queue;dur={:.3}, upstream;dur={:.3}, total;dur={:.3}",
        ms(log.queue),
        ms(log.first_byte.unwrap_or(log.upstream_spent)),
        ms(log.start.elapsed())
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert(hdr::SERVER_TIMING, v);
    }
}

/// Finishes a response whose body is already whole.
fn reply(
    mut resp: Response<ResponseBody>,
    mut log: RequestLog,
    outcome: Outcome,
) -> Response<ResponseBody> {
    log.status = resp.status().as_u16();
    decorate(resp.headers_mut(), &log);
    Settle::new(log, None).finish(outcome);
    resp
}

/// Answers with one of the gateway's own errors.
fn reply_error(e: GatewayError, log: RequestLog) -> Response<ResponseBody> {
    let resp = log_error(&e, &log);
    reply(resp, log, Outcome::Completed)
}

/// The response for an error, logged when it is the gateway's or a provider's fault.
fn log_error(e: &GatewayError, log: &RequestLog) -> Response<ResponseBody> {
    if e.status().is_server_error() {
        tracing::warn!(
            request_id = log.request_id.to_str().unwrap_or("-"),
            code = e.code(),
            "{e}"
        );
    }
    e.to_response()
}

/// The client's `x-request-id` when it is usable, else a new random one.
pub fn request_id(parts: &request::Parts) -> HeaderValue {
    if let Some(v) = parts.headers.get(hdr::REQUEST_ID)
        && (1..=128).contains(&v.len())
        && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return v.clone();
    }
    let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}
