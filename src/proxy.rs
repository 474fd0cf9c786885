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

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, request};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{ReadError, ResponseBody, UpstreamBody, read_to_bytes};
use crate::error::{GatewayError, UpstreamError};
use crate::headers::{self as hdr, strip_hop_by_hop};
use crate::logging::{RequestLog, ms};
use crate::router::{self, Target};
use crate::runtime::Runtime;
use crate::stream::{GuardedStream, Outcome, Settle};
use crate::upstream::error_chain;
use crate::{auth, payload};

/// Handles one `/v1/*` request on the snapshot `rt`.
pub async fn handle(
    rt: Arc<Runtime>,
    req: Request<Incoming>,
    request_id: HeaderValue,
    start: Instant,
) -> Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str())
        .to_owned();
    let mut log = RequestLog::new(request_id, parts.method.clone(), path, start);

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
    let Some(plan) = router::resolve(&rt, &inspected.model) else {
        let e = GatewayError::ModelNotFound(inspected.model.clone());
        log.model = Some(inspected.model);
        return reply_error(e, log);
    };
    log.model = Some(inspected.model.clone());

    // Walking the whole chain (failover, retries) arrives with the resilience layer; for now
    // the first target serves.
    let target = &plan.targets()[0];
    let body = payload::rewrite(&bytes, &inspected.model_range, &target.model_json);
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(hdr::REQUEST_ID, log.request_id.clone());
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let upstream_path = log.path.strip_prefix("/v1").unwrap_or(&log.path).to_owned();

    log.target = Some(target.label.clone());
    log.attempts += 1;
    match attempt(target, &upstream_path, headers, body, inspected.stream, &rt).await {
        Err(e) => reply_error(e.into(), log),
        Ok((resp, first_byte, upstream)) => {
            log.first_byte = Some(first_byte);
            match upstream {
                Answer::Whole => reply(resp, log, Outcome::Completed),
                Answer::Stream {
                    body,
                    idle,
                    deadline,
                } => {
                    let mut resp = resp;
                    log.status = resp.status().as_u16();
                    decorate(resp.headers_mut(), &log);
                    let settle = Settle::new(log);
                    *resp.body_mut() = ResponseBody::Stream(Box::new(GuardedStream::new(
                        body, idle, deadline, settle,
                    )));
                    resp
                }
            }
        }
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
        ms(log.first_byte.unwrap_or_default()),
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
    Settle::new(log).finish(outcome);
    resp
}

/// Answers with one of the gateway's own errors.
fn reply_error(e: GatewayError, log: RequestLog) -> Response<ResponseBody> {
    if e.status().is_server_error() {
        tracing::warn!(
            request_id = log.request_id.to_str().unwrap_or("-"),
            code = e.code(),
            "{e}"
        );
    }
    reply(e.to_response(), log, Outcome::Completed)
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
