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
pub mod commit;
pub mod convert;
pub mod lease;

pub mod stream;

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, request};
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::body::{ReadError, ResponseBody, UpstreamBody, read_to_bytes};
use crate::config::ProviderKind;
use crate::error::Api;
use crate::error::{GatewayError, UpstreamError};
use crate::headers::{self as hdr, strip_hop_by_hop};
use crate::observe::logging::{AttemptRecord, RequestLog, SkipRecord, ms};
use crate::observe::metrics::{Metrics, Rejection};
use crate::payload;
use crate::policy::breaker;
use crate::policy::classify::{self, Observed};
use crate::policy::keys::Key;
use crate::policy::walk::{self, End, SkipReason, Step, Walk};
use crate::runtime::route::{self, Plan, Target};
use crate::runtime::{Runtime, State};
use crate::upstream::error_chain;
use commit::{FirstContent, Seen};
use convert::Conversion;
use lease::{Lease, Outcome, Settle, on_transition};
use stream::GuardedStream;

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

    // Errors on /v1/messages take the Anthropic shape, from the first one on.
    let p = parts.uri.path();
    if p == "/v1/messages" || p.starts_with("/v1/messages/") {
        log.api = Api::Anthropic;
    }
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
    let asked = match route::requested_strategy(&parts.headers) {
        Ok(s) => s,
        Err(e) => return reply_error(e, log),
    };
    if let Plan::Alias(r) = &plan {
        log.strategy = Some(asked.unwrap_or(r.strategy).as_str());
    }
    let order = plan.order(asked, inspected.stream, &rt.config.routing, Instant::now());

    let mut headers = parts.headers;
    let sdk_retry = headers
        .get("x-stainless-retry-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|n| n > 0);
    hdr::clean_for_upstream(&mut headers);
    headers.insert(hdr::REQUEST_ID, log.request_id.clone());
    let upstream_path = log.path.strip_prefix("/v1").unwrap_or(&log.path).to_owned();
    let mut order = order;
    if log.api == Api::Anthropic && upstream_path.starts_with("/messages/count_tokens") {
        // Counted by an Anthropic provider (or the mock) when the first target is one;
        // otherwise estimated here and said so (contract §10).
        let targets = plan.targets();
        let native = |i: &usize| {
            targets
                .get(*i)
                .is_some_and(|t| t.provider.kind != ProviderKind::Openai)
        };
        if !order.first().is_some_and(native) {
            return count_tokens_estimate(&bytes, log);
        }
        order.retain(native);
    }
    let req = Prepared {
        bytes,
        model_range: inspected.model_range,
        stream: inspected.stream,
        headers,
        path: upstream_path,
        sdk_retry,
        stop: state.hard_stop.clone(),
        api: log.api,
        requested_model: log.model.clone().unwrap_or_default(),
    };
    walk(&rt, plan.targets(), order, &req, log).await
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
    /// The API the client speaks.
    api: Api,
    /// The model the client asked for (named in translated answers).
    requested_model: String,
}

/// Drives the policy core's [`Walk`] along the chain with real time and real I/O: sleeps
/// its backoffs, waits in the bulkhead queue, sends, and reports what came back. Returns at
/// the first answer that commits (a success, a client error, or the first byte of a
/// stream), or with the walk's verdict when nothing did.
async fn walk(
    rt: &Runtime,
    targets: &[Target],
    order: Vec<usize>,
    req: &Prepared,
    mut log: RequestLog,
) -> Response<ResponseBody> {
    let telemetry = log.telemetry.clone();
    let metrics = &telemetry.metrics;
    let mut walk = Walk::new(order, req.sdk_retry);
    let mut rng = fastrand::Rng::new();
    // The last HTTP answer that did not commit: passed through if nothing else does.
    let mut last: Option<Response<ResponseBody>> = None;
    let mut skips_seen = 0;
    loop {
        let step = walk.next(targets, Instant::now(), &mut rng);
        count_skips(&walk, &mut skips_seen, targets, metrics);
        let (i, key, retry) = match step {
            Step::Backoff(d) => {
                tokio::time::sleep(d).await;
                continue;
            }
            Step::Done(end) => return give_up(end, &walk, targets, last, log),
            Step::Acquire { target, key, retry } => (target, key, retry),
        };
        let Some(target) = targets.get(i) else {
            continue;
        };
        let p = &target.provider;
        if retry {
            metrics.retry(&p.name);
        }
        let queued_at = Instant::now();
        let slot = match lease::acquire(&p.health).await {
            Ok((slot, waited)) => {
                log.queue += waited;
                metrics.queue_wait(&p.name, waited);
                slot
            }
            Err(r) => {
                let waited = queued_at.elapsed();
                log.queue += waited;
                metrics.queue_wait(&p.name, waited);
                walk.slot_refused(r, p.health.bulkhead.queue_timeout());
                count_skips(&walk, &mut skips_seen, targets, metrics);
                continue;
            }
        };
        let ticket = match walk.slot_granted(targets, Instant::now()) {
            Some(ticket) => ticket,
            None => {
                drop(slot);
                count_skips(&walk, &mut skips_seen, targets, metrics);
                continue;
            }
        };
        if ticket.half_opened() {
            on_transition(&telemetry, p, breaker::State::HalfOpen);
        }
        let window = rt.config.routing.success_window;
        let lease = Lease::new(target, window, ticket, slot, telemetry.clone());
        log.attempts = walk.attempts();
        log.target = Some(target.label.clone());
        log.provider = Some(p.name.clone());
        log.prices = (target.input_cost, target.output_cost);
        let conv = match convert::plan(req.api, &req.path, p.kind) {
            Ok(c) => c,
            Err(e) => return reply_error(e, log),
        };
        let body = match convert::request_body(
            conv,
            &req.bytes,
            &req.model_range,
            &target.model_json,
            &target.model,
        ) {
            Ok(b) => b,
            Err(e) => return reply_error(e, log),
        };
        let upstream_path = convert::upstream_path(conv, &req.path, p.kind);
        let mut headers = req.headers.clone();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let sent = Instant::now();
        let result = attempt(
            target,
            &upstream_path,
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
            model: target.model.clone(),
            key: key.as_ref().map(|k| k.redacted().into()),
            start_ms: log.since_arrival(sent),
            ms: ms(took),
            first_byte_ms: None,
            status: None,
            error: None,
            retry_after_ms: None,
        };
        let mut retry_after = None;
        match &result {
            Ok((resp, first_byte, _)) => {
                record.status = Some(resp.status().as_u16());
                record.first_byte_ms = Some(ms(*first_byte));
                retry_after = hdr::retry_after(resp.headers());
                record.retry_after_ms = retry_after.map(ms);
                log.first_byte = Some(*first_byte);
                metrics.first_byte(&p.name, *first_byte);
                let alpha = rt.config.routing.ewma_alpha;
                walk::observe_latency(target, req.stream, *first_byte, alpha);
            }
            Err(e) => {
                record.error = Some(e.log_code());
                if let Some(kind) = e.kind() {
                    metrics.upstream_error(&p.name, kind);
                }
            }
        }
        log.attempt_log.push(record);
        let (mut resp, answer) = match result {
            Ok((resp, _, answer)) => (resp, answer),
            Err(e) => {
                tracing::debug!(target = target.label_str(), "attempt failed: {e}");
                log.upstream_spent += took;
                let d = walk.outcome(targets, Observed::Failed(e), now);
                lease.settle(d.health);
                continue;
            }
        };
        if let Answer::Stream {
            mut body,
            idle,
            deadline,
        } = answer
        {
            // A 2xx stream commits at its first content event, not at its headers: until
            // then a silent upstream or an error event is a failure like any other.
            let max = rt.server.max_body_size;
            let held = match hold_until_content(&mut body, sent, &p.settings.timeouts, max).await {
                Ok(held) => held,
                Err(e) => {
                    let now = Instant::now();
                    if let Some(a) = log.attempt_log.last_mut() {
                        a.error = Some(e.log_code());
                        a.ms = ms(now - sent);
                    }
                    if let Some(kind) = e.kind() {
                        metrics.upstream_error(&p.name, kind);
                    }
                    tracing::debug!(
                        target = target.label_str(),
                        "stream failed before content: {e}"
                    );
                    log.upstream_spent += now - sent;
                    let d = walk.outcome(targets, Observed::Failed(e), now);
                    lease.settle(d.health);
                    continue;
                }
            };
            // Across APIs, the client gets the stream in its own grammar.
            let (held, body) =
                match convert::stream_translator(conv, &req.requested_model, unix_now()) {
                    None => (held, body),
                    Some(mut tr) => {
                        let held = Bytes::from(tr.feed(&held));
                        let body =
                            UpstreamBody::Boxed(Box::pin(convert::TranslatedBody::new(body, tr)));
                        resp.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/event-stream"),
                        );
                        (held, body)
                    }
                };
            // The verdict of a committed stream comes at its end.
            note_skips(&walk, targets, &mut log);
            log.status = resp.status().as_u16();
            decorate(resp.headers_mut(), &log);
            let stop = Box::pin(req.stop.clone().cancelled_owned());
            let settle = Settle::new(log, Some(lease));
            *resp.body_mut() = ResponseBody::Stream(Box::pin(GuardedStream::new(
                req.api, held, body, idle, deadline, settle, stop,
            )));
            return resp;
        }
        log.upstream_spent += took;
        let status = resp.status().as_u16();
        if status == 429 {
            metrics.upstream_error(&p.name, "status_429");
        } else if classify::is_failure_status(status) {
            metrics.upstream_error(&p.name, "status_5xx");
        }
        let context_overflow = match resp.body() {
            ResponseBody::Full(Some(b)) => classify::is_context_overflow(status, b),
            _ => false,
        };
        let observed = Observed::Answer {
            status,
            retry_after,
            context_overflow,
        };
        let d = walk.outcome(targets, observed, now);
        lease.settle(d.health);
        if conv != Conversion::Pass
            && let ResponseBody::Full(b) = resp.body()
        {
            let original = b.clone().unwrap_or_default();
            match convert::answer_body(conv, status, &original, &req.requested_model, unix_now()) {
                Ok(t) => {
                    *resp.body_mut() = ResponseBody::full(t);
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
                Err(why) if d.commit => {
                    let e = GatewayError::UpstreamUnavailable(UpstreamError::Reset(format!(
                        "the provider's answer cannot be translated: {why}"
                    )));
                    return reply_error(e, log);
                }
                Err(_) => {}
            }
        }
        if d.commit {
            note_skips(&walk, targets, &mut log);
            if resp.status().is_success()
                && !resp.headers().contains_key(header::CONTENT_ENCODING)
                && let ResponseBody::Full(Some(b)) = resp.body()
            {
                log.usage = crate::observe::usage::from_json(b);
            }
            return reply(resp, log, Outcome::Completed);
        }
        if let (401..=403, Some(k)) = (status, &key) {
            tracing::warn!(
                provider = &*p.name,
                key = k.redacted(),
                status,
                "the provider refused a key; set aside for {}",
                humantime::format_duration(p.settings.key_cooldown)
            );
        }
        if d.keep {
            last = Some(resp);
        }
    }
}

/// Reads a stream until its first content event (contract §6), within `first_token` from
/// `sent` (and `idle` between chunks, `total` overall). Returns the bytes read, to be sent
/// first once the stream commits; a stream that ends before any content commits as it is.
/// Silence, an error event or a broken connection before content is the attempt's failure.
async fn hold_until_content(
    body: &mut UpstreamBody,
    sent: Instant,
    t: &crate::config::Timeouts,
    max: u64,
) -> Result<Bytes, UpstreamError> {
    use http_body_util::BodyExt;
    let first_token_at = crate::body::after(sent, t.first_token);
    let total_at = crate::body::after(sent, t.total);
    let mut scan = FirstContent::default();
    let mut held: Vec<u8> = Vec::new();
    loop {
        let idle_at = crate::body::after(Instant::now(), t.idle);
        let until = first_token_at.min(total_at).min(idle_at);
        let frame = match tokio::time::timeout_at(until, body.frame()).await {
            Err(_) => {
                let now = Instant::now();
                return Err(if now >= total_at {
                    UpstreamError::TotalTimeout(t.total)
                } else if now >= first_token_at {
                    UpstreamError::FirstTokenTimeout(t.first_token)
                } else {
                    UpstreamError::IdleTimeout(t.idle)
                });
            }
            Ok(None) => return Ok(Bytes::from(held)),
            Ok(Some(Err(e))) => return Err(UpstreamError::Reset(error_chain(e.as_ref()))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        held.extend_from_slice(&data);
        if held.len() as u64 > max {
            return Err(UpstreamError::TooLarge(max));
        }
        match scan.feed(&data) {
            Seen::Nothing => {}
            Seen::Content => return Ok(Bytes::from(held)),
            Seen::Error(m) => return Err(UpstreamError::ErrorEvent(m)),
        }
    }
}

/// `{"input_tokens": N}` estimated by the gateway, with `x-gateway-estimate: true`.
fn count_tokens_estimate(body: &Bytes, log: RequestLog) -> Response<ResponseBody> {
    match crate::translate::estimate_input_tokens(body) {
        Ok(n) => {
            let mut resp = Response::new(ResponseBody::full(
                serde_json::json!({ "input_tokens": n }).to_string(),
            ));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(hdr::GATEWAY_ESTIMATE, HeaderValue::from_static("true"));
            reply(resp, log, Outcome::Completed)
        }
        Err(e) => reply_error(GatewayError::Untranslatable(e.to_string()), log),
    }
}

/// Seconds since the Unix epoch, for the `created` of translated answers.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts the targets the walk passed over since the last call, by reason.
fn count_skips(walk: &Walk, seen: &mut usize, targets: &[Target], metrics: &Metrics) {
    for s in walk.skipped().iter().skip(*seen) {
        let why = match s.reason {
            SkipReason::CircuitOpen => Rejection::CircuitOpen,
            SkipReason::QueueFull => Rejection::QueueFull,
            SkipReason::QueueTimeout => Rejection::QueueTimeout,
            SkipReason::RetryBudgetExhausted => Rejection::RetryBudgetExhausted,
            SkipReason::RateLimited | SkipReason::KeysCooling => continue,
        };
        if let Some(t) = targets.get(s.target) {
            metrics.rejection(&t.provider.name, why);
        }
    }
    *seen = walk.skipped().len();
}

/// Copies the targets the walk passed over into the access log record.
fn note_skips(walk: &Walk, targets: &[Target], log: &mut RequestLog) {
    log.skipped = walk
        .skipped()
        .iter()
        .filter_map(|s| {
            Some(SkipRecord {
                target: targets.get(s.target)?.label_str().into(),
                reason: s.reason.as_str(),
            })
        })
        .collect();
}

/// The answer when nothing committed: the last upstream answer passed through, or the
/// gateway's own error.
fn give_up(
    end: End,
    walk: &Walk,
    targets: &[Target],
    last: Option<Response<ResponseBody>>,
    mut log: RequestLog,
) -> Response<ResponseBody> {
    note_skips(walk, targets, &mut log);
    let mut resp = match (end, last) {
        (End::PassLast, Some(resp)) => resp,
        (End::Error(e), _) => log_error(&e, &mut log),
        // The walk keeps no answer it did not see: a missing one is a driver bug, answered
        // as a failed upstream rather than a panic.
        (End::PassLast, None) => log_error(
            &GatewayError::UpstreamUnavailable(UpstreamError::Reset("no answer kept".into())),
            &mut log,
        ),
    };
    // The gateway already retried or failed over after an attempt: SDKs must not multiply
    // the load by retrying on top. (Its own errors carry the header from `to_response`.)
    if walk.gave_up() {
        resp.headers_mut()
            .insert(hdr::SHOULD_RETRY, HeaderValue::from_static("false"));
    }
    reply(resp, log, Outcome::Completed)
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
    if log.api == Api::Anthropic {
        h.insert(hdr::ANTHROPIC_REQUEST_ID, log.request_id.clone());
    }
    h.insert(hdr::REQUEST_ID, log.request_id.clone());
    if log.attempts == 0 {
        return;
    }
    if let Some(t) = &log.target {
        h.insert(hdr::GATEWAY_TARGET, t.clone());
    }
    h.insert(hdr::GATEWAY_ATTEMPTS, HeaderValue::from(log.attempts));
    let timing = server_timing(
        log.queue,
        log.first_byte.unwrap_or(log.upstream_spent),
        log.start.elapsed(),
    );
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(timing)) {
        h.insert(hdr::SERVER_TIMING, v);
    }
}

/// `queue;dur=Q, upstream;dur=U, total;dur=T` in milliseconds with three decimals, written
/// from whole microseconds (integer formatting; no float is rounded on the hot path).
fn server_timing(queue: Duration, upstream: Duration, total: Duration) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(64);
    for (i, (name, d)) in [("queue", queue), ("upstream", upstream), ("total", total)]
        .into_iter()
        .enumerate()
    {
        let us = d.as_micros();
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(s, "{sep}{name};dur={}.{:03}", us / 1000, us % 1000);
    }
    s
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
fn reply_error(e: GatewayError, mut log: RequestLog) -> Response<ResponseBody> {
    let resp = log_error(&e, &mut log);
    reply(resp, log, Outcome::Completed)
}

/// The response for an error, logged when it is the gateway's or a provider's fault; its
/// code goes to the access log.
fn log_error(e: &GatewayError, log: &mut RequestLog) -> Response<ResponseBody> {
    log.code = Some(e.code());
    let api = log.api;
    if e.status().is_server_error() {
        tracing::warn!(
            request_id = log.request_id.to_str().unwrap_or("-"),
            code = e.code(),
            "{e}"
        );
    }
    e.to_response_in(api)
}

/// The client's `x-request-id` when it is usable, else a new random one.
pub fn request_id(parts: &request::Parts) -> HeaderValue {
    if let Some(v) = parts.headers.get(hdr::REQUEST_ID)
        && (1..=128).contains(&v.len())
        && v.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return v.clone();
    }
    // 32 hex digits written in place: one allocation (the header's own), not three.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_is_milliseconds_with_three_decimals() {
        let t = server_timing(
            Duration::ZERO,
            Duration::from_micros(1_234_567),
            Duration::from_micros(1_234_605),
        );
        assert_eq!(
            t,
            "queue;dur=0.000, upstream;dur=1234.567, total;dur=1234.605"
        );
    }
}
