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
use crate::logging::{AttemptRecord, RequestLog, Telemetry, ms};
use crate::metrics::Rejection;
use crate::router::{self, Plan, Target};
use crate::runtime::{Runtime, State};
use crate::stream::{GuardedStream, Lease, Outcome, Settle};
use crate::upstream::{Provider, error_chain};
use crate::{auth, breaker, limit, payload, retry};

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
    if parts.uri.path() == "/v1/models" {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return reply_error(
                GatewayError::MethodNotAllowed(parts.method.to_string()),
                log,
            );
        }
        let mut resp = Response::new(ResponseBody::full(rt.models_json.clone()));
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
    let plan = router::resolve(&rt, &inspected.model);
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
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
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
    /// An attempt got an HTTP response (5xx, 408, 429): passed through.
    Response(Response<ResponseBody>),
    /// An attempt got no HTTP response: 502 or 504.
    Failed(UpstreamError),
    /// A retry was needed after an attempt, and the budget said no.
    BudgetSpent(Duration),
}

/// Walks the chain: each target up to `max_attempts` times (with backoff, inside the retry
/// budget), passing over targets that cannot be tried (open circuit, pending 429, full
/// queue, spent budget) without counting an attempt. Returns at the first answer that
/// commits: a success, a client error, or the first byte of a stream.
async fn walk(
    rt: &Runtime,
    targets: &[Target],
    req: &Prepared,
    mut log: RequestLog,
) -> Response<ResponseBody> {
    let telemetry = log.telemetry.clone();
    let metrics = &telemetry.metrics;
    let mut last: Option<Last> = None;
    let mut first_reason: Option<GatewayError> = None;
    // Earliest half-open among open circuits: the `retry-after` of `circuit_open`.
    let mut earliest_half_open: Option<Duration> = None;
    'targets: for target in targets {
        let p = &target.provider;
        let mut skip = |e: GatewayError, why: Option<Rejection>| {
            if let Some(why) = why {
                metrics.rejection(&p.name, why);
            }
            if first_reason.is_none() {
                first_reason = Some(e);
            }
        };
        for try_no in 0..p.settings.retry.max_attempts {
            if try_no > 0 {
                tokio::time::sleep(retry::backoff(&p.settings.retry, try_no)).await;
            }
            let now = Instant::now();
            if let Some(wait) = p.throttled(now) {
                skip(GatewayError::RateLimited { retry_after: wait }, None);
                continue 'targets;
            }
            let mut lease = match p.health.breaker.admit(now) {
                Ok(ticket) => {
                    if ticket.half_opened() {
                        on_transition(&telemetry, p, breaker::State::HalfOpen);
                    }
                    Lease::new(p.clone(), ticket, telemetry.clone())
                }
                Err(wait) => {
                    earliest_half_open = Some(earliest_half_open.map_or(wait, |w| w.min(wait)));
                    skip(
                        GatewayError::CircuitOpen { retry_after: wait },
                        Some(Rejection::CircuitOpen),
                    );
                    continue 'targets;
                }
            };
            let is_retry = try_no > 0 || (log.attempts == 0 && req.sdk_retry);
            if is_retry {
                if !p.health.budget.try_withdraw(now) {
                    lease.settle(breaker::Outcome::Neutral);
                    let hint = Duration::from_secs(1);
                    metrics.rejection(&p.name, Rejection::RetryBudgetExhausted);
                    match last {
                        Some(_) => last = Some(Last::BudgetSpent(hint)),
                        None => skip(
                            GatewayError::RetryBudgetExhausted { retry_after: hint },
                            None,
                        ),
                    }
                    continue 'targets;
                }
                metrics.retry(&p.name);
            } else {
                p.health.budget.deposit(now);
            }
            let queued_at = Instant::now();
            match p.health.bulkhead.acquire().await {
                Ok((slot, waited)) => {
                    log.queue += waited;
                    metrics.queue_wait(&p.name, waited);
                    lease.hold(slot);
                }
                Err(r) => {
                    let waited = queued_at.elapsed();
                    log.queue += waited;
                    metrics.queue_wait(&p.name, waited);
                    lease.settle(breaker::Outcome::Neutral);
                    let retry_after = p
                        .health
                        .bulkhead
                        .queue_timeout()
                        .max(Duration::from_secs(1));
                    match r {
                        limit::Rejected::QueueFull => skip(
                            GatewayError::QueueFull { retry_after },
                            Some(Rejection::QueueFull),
                        ),
                        limit::Rejected::QueueTimeout => skip(
                            GatewayError::QueueTimeout { retry_after },
                            Some(Rejection::QueueTimeout),
                        ),
                    }
                    continue 'targets;
                }
            }
            log.attempts += 1;
            log.target = Some(target.label.clone());
            log.provider = Some(p.name.clone());
            log.prices = (target.input_cost, target.output_cost);
            let body = payload::rewrite(&req.bytes, &req.model_range, &target.model_json);
            let mut headers = req.headers.clone();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            let sent = Instant::now();
            let result = attempt(target, &req.path, headers, body, req.stream, rt).await;
            let now = Instant::now();
            let took = now - sent;
            let mut record = AttemptRecord {
                provider: p.name.clone(),
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
                    *resp.body_mut() = ResponseBody::Stream(Box::new(GuardedStream::new(
                        body, idle, deadline, settle, stop,
                    )));
                    return resp;
                }
                Ok((resp, _, Answer::Whole)) => {
                    let status = resp.status().as_u16();
                    match status {
                        429 => {
                            metrics.upstream_error(&p.name, "status_429");
                            lease.settle(breaker::Outcome::Neutral);
                            p.throttle(
                                now,
                                hdr::retry_after(resp.headers()).unwrap_or(DEFAULT_429_WAIT),
                            );
                            last = Some(Last::Response(resp));
                            continue 'targets;
                        }
                        500 | 502 | 503 | 504 => {
                            metrics.upstream_error(&p.name, "status_5xx");
                            lease.settle(breaker::Outcome::Failure);
                            last = Some(Last::Response(resp));
                        }
                        408 => {
                            lease.settle(breaker::Outcome::Neutral);
                            last = Some(Last::Response(resp));
                        }
                        _ => {
                            lease.settle(breaker::Outcome::Success);
                            if resp.status().is_success()
                                && !resp.headers().contains_key(header::CONTENT_ENCODING)
                                && let ResponseBody::Full(Some(b)) = resp.body()
                            {
                                log.usage = crate::usage::from_json(b);
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
        }
    }
    let budget_spent = matches!(last, Some(Last::BudgetSpent(_)))
        || (last.is_none()
            && matches!(
                first_reason,
                Some(GatewayError::RetryBudgetExhausted { .. })
            ));
    // The gateway already retried or failed over after an attempt, or its budget forbids
    // retries: SDKs must not multiply the load by retrying on top.
    let gave_up = log.attempts > 1 || budget_spent;
    let mut resp = match last {
        Some(Last::Response(resp)) => resp,
        Some(Last::Failed(e)) => log_error(&GatewayError::from(e), &log),
        Some(Last::BudgetSpent(retry_after)) => {
            log_error(&GatewayError::RetryBudgetExhausted { retry_after }, &log)
        }
        None => {
            // Validation guarantees at least one target, so a reason was noted.
            let e = match first_reason {
                Some(GatewayError::CircuitOpen { retry_after }) => GatewayError::CircuitOpen {
                    retry_after: earliest_half_open.unwrap_or(retry_after),
                },
                Some(e) => e,
                None => GatewayError::CircuitOpen {
                    retry_after: Duration::from_secs(1),
                },
            };
            log_error(&e, &log)
        }
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
    stream: bool,
    rt: &Runtime,
) -> Result<(Response<ResponseBody>, Duration, Answer), UpstreamError> {
    let t = &target.provider.settings.timeouts;
    let sent = Instant::now();
    let deadline = sent + t.total;
    let first_byte_budget = t.first_byte.min(t.total);
    let resp = target
        .provider
        .send(path, headers, body, first_byte_budget)
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
        && !v.is_empty()
        && v.len() <= 128
        && v.to_str().is_ok()
    {
        return v.clone();
    }
    let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}
