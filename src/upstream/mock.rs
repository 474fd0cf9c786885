//! A fault-injecting OpenAI-compatible upstream, used two ways:
//!
//! - in-process, as provider `kind = "mock"` (the shipped `demo` provider): canned answers
//!   with no network, so the gateway answers with no API keys;
//! - over HTTP, as `gateway mock`: a real server for tests, benchmarks and chaos-testing
//!   agents.
//!
//! Both honour per-request headers that override the defaults: `x-mock-fault`,
//! `x-mock-latency`, `x-mock-chunks`, `x-mock-chunk-interval`. Fault modes
//! ([`Fault`]): `none`, `hang`, `status=N[,retry-after=S]`, `drop-mid-stream`,
//! `stall-mid-stream`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use serde_json::{Value, json};
use tokio::time::Sleep;

use crate::body::BoxError;
use crate::error::error_body;

/// `x-mock-fault`
pub const FAULT_HEADER: &str = "x-mock-fault";
/// `x-mock-latency`
pub const LATENCY_HEADER: &str = "x-mock-latency";
/// `x-mock-chunks`
pub const CHUNKS_HEADER: &str = "x-mock-chunks";
/// `x-mock-chunk-interval`
pub const CHUNK_INTERVAL_HEADER: &str = "x-mock-chunk-interval";

/// How the mock misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Accept the request and never answer.
    Hang,
    /// Answer with this status and an OpenAI-shaped error body.
    Status {
        /// The status.
        status: StatusCode,
        /// `retry-after` value to send, verbatim.
        retry_after: Option<String>,
        /// `retry-after-ms` value to send, verbatim.
        retry_after_ms: Option<String>,
    },
    /// Send half of the body, then reset the connection.
    DropMidStream,
    /// Send half of the body, then go silent with the connection open.
    StallMidStream,
}

impl FromStr for Fault {
    type Err = String;

    /// `none`, `hang`, `drop-mid-stream`, `stall-mid-stream`, `status=503`, `503`,
    /// `status=429,retry-after=2`, `429;retry-after-ms=1500`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split([',', ';']).map(str::trim);
        let head = parts.next().unwrap_or_default();
        let mut fault = match head {
            "" | "none" => Fault::None,
            "hang" => Fault::Hang,
            "drop-mid-stream" => Fault::DropMidStream,
            "stall-mid-stream" => Fault::StallMidStream,
            other => {
                let code = other.strip_prefix("status=").unwrap_or(other);
                let status = code
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .filter(|s| s.as_u16() >= 200)
                    .ok_or_else(|| {
                        format!(
                            "unknown fault {s:?}; use none, hang, drop-mid-stream, stall-mid-stream \
                             or status=N[,retry-after=S]"
                        )
                    })?;
                Fault::Status {
                    status,
                    retry_after: None,
                    retry_after_ms: None,
                }
            }
        };
        for p in parts {
            match (&mut fault, p.split_once('=')) {
                (Fault::Status { retry_after, .. }, Some(("retry-after", v))) => {
                    *retry_after = Some(v.to_string())
                }
                (Fault::Status { retry_after_ms, .. }, Some(("retry-after-ms", v))) => {
                    *retry_after_ms = Some(v.to_string())
                }
                _ => return Err(format!("unknown fault option {p:?} in {s:?}")),
            }
        }
        Ok(fault)
    }
}

/// What the mock does by default; each request may override it with `x-mock-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockOptions {
    /// Delay before the response headers.
    pub latency: Duration,
    /// Number of content chunks in a streamed answer.
    pub chunks: u32,
    /// Delay between streamed chunks.
    pub chunk_interval: Duration,
    /// Fault to inject.
    pub fault: Fault,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            chunks: 5,
            chunk_interval: Duration::from_millis(10),
            fault: Fault::None,
        }
    }
}

impl MockOptions {
    /// These options with the request's `x-mock-*` headers applied.
    pub fn with_headers(&self, h: &HeaderMap) -> Result<MockOptions, String> {
        let mut o = self.clone();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        if let Some(v) = get(FAULT_HEADER) {
            o.fault = v.parse()?;
        }
        if let Some(v) = get(LATENCY_HEADER) {
            o.latency = parse_delay(v).map_err(|e| format!("bad {LATENCY_HEADER}: {e}"))?;
        }
        if let Some(v) = get(CHUNKS_HEADER) {
            o.chunks = v
                .parse()
                .map_err(|_| format!("bad {CHUNKS_HEADER}: {v:?}"))?;
        }
        if let Some(v) = get(CHUNK_INTERVAL_HEADER) {
            o.chunk_interval =
                parse_delay(v).map_err(|e| format!("bad {CHUNK_INTERVAL_HEADER}: {e}"))?;
        }
        Ok(o)
    }
}

/// A mock delay (`--latency`, `x-mock-latency`, ...): a duration of at most
/// [`crate::config::MAX_DURATION`], like any duration in a config.
pub fn parse_delay(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (write e.g. 250ms, 2s)"))?;
    if d > crate::config::MAX_DURATION {
        return Err(format!("{s:?}: at most 100 days"));
    }
    Ok(d)
}

/// How a [`MockBody`] ends once its chunks are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Clean,
    Drop,
    Stall,
}

/// A paced body: chunks separated by an interval, then a clean end, an error, or silence.
#[derive(Debug)]
pub struct MockBody {
    chunks: VecDeque<Bytes>,
    interval: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    end: End,
}

impl MockBody {
    fn new(chunks: Vec<Bytes>, interval: Duration, end: End) -> Self {
        Self {
            chunks: chunks.into(),
            interval,
            sleep: None,
            end,
        }
    }

    fn full(b: Bytes) -> Self {
        Self::new(vec![b], Duration::ZERO, End::Clean)
    }

    /// `chunks` back to back, never `Pending`: an upstream that is always ready (tests).
    pub fn ready(chunks: Vec<Bytes>) -> Self {
        Self::new(chunks, Duration::ZERO, End::Clean)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(s) = self.sleep.as_mut() {
            if s.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        if let Some(c) = self.chunks.pop_front() {
            if !self.interval.is_zero() && (!self.chunks.is_empty() || self.end != End::Clean) {
                self.sleep = Some(Box::pin(tokio::time::sleep(self.interval)));
            }
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        match self.end {
            End::Clean => Poll::Ready(None),
            End::Drop => {
                self.end = End::Clean;
                Poll::Ready(Some(Err("mock: connection dropped mid-stream".into())))
            }
            End::Stall => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end == End::Clean && self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.end == End::Clean {
            SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
        } else {
            SizeHint::default()
        }
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut r = Response::new(MockBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub fn error_response(status: StatusCode, message: &str, code: &str) -> Response<MockBody> {
    json_response(status, error_body(message, "invalid_request_error", code))
}

/// Answers one request the way an OpenAI-compatible provider would, with `opts` (after the
/// request's `x-mock-*` headers) deciding latency, pacing and faults.
pub async fn respond(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    defaults: &MockOptions,
) -> Response<MockBody> {
    let opts = match defaults.with_headers(headers) {
        Ok(o) => o,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e, "invalid_mock_header"),
    };
    if !opts.latency.is_zero() {
        tokio::time::sleep(opts.latency).await;
    }
    match &opts.fault {
        Fault::Hang => std::future::pending::<()>().await,
        Fault::Status {
            status,
            retry_after,
            retry_after_ms,
        } => {
            let mut r = error_response(
                *status,
                &format!("mock fault: status {}", status.as_u16()),
                "mock_fault",
            );
            for (name, v) in [
                ("retry-after", retry_after),
                ("retry-after-ms", retry_after_ms),
            ] {
                if let Some(v) = v.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                    r.headers_mut().insert(name, v);
                }
            }
            return r;
        }
        _ => {}
    }
    let path = path.split('?').next().unwrap_or(path);
    if method == Method::GET && path.ends_with("/models") {
        let list = json!({"object": "list", "data": [
            {"id": "mock-model", "object": "model", "created": 0, "owned_by": "gateway-mock"}
        ]});
        return json_response(StatusCode::OK, Bytes::from(list.to_string()));
    }
    if method != Method::POST {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("no route for {method} {path}"),
            "not_found",
        );
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "body is not a JSON object",
                "invalid_json",
            );
        }
    };
    let endpoint = if path.ends_with("/chat/completions") {
        Endpoint::Chat
    } else if path.ends_with("/completions") {
        Endpoint::Completions
    } else if path.ends_with("/embeddings") {
        Endpoint::Embeddings
    } else if path.ends_with("/responses") {
        Endpoint::Responses
    } else {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("no route for POST {path}"),
            "not_found",
        );
    };
    let answer = Answer::new(endpoint, &req, opts.chunks);
    let end = match opts.fault {
        Fault::DropMidStream => End::Drop,
        Fault::StallMidStream => End::Stall,
        _ => End::Clean,
    };
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true)
        && endpoint != Endpoint::Embeddings;
    if stream {
        let mut events = answer.events();
        if end != End::Clean {
            events.truncate(events.len() / 2);
        }
        let mut r = Response::new(MockBody::new(events, opts.chunk_interval, end));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        let whole = answer.whole();
        let len = whole.len();
        let mut r = if end == End::Clean {
            json_response(StatusCode::OK, whole)
        } else {
            let half = whole.slice(..len / 2);
            let mut r = json_response(StatusCode::OK, Bytes::new());
            *r.body_mut() = MockBody::new(vec![half], Duration::ZERO, end);
            r
        };
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        r
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
}

/// The canned answer to one request.
struct Answer {
    endpoint: Endpoint,
    model: String,
    pieces: Vec<String>,
    prompt_tokens: u64,
    include_usage: bool,
    embeddings: Vec<Vec<f32>>,
    base64: bool,
    created: u64,
}

impl Answer {
    fn new(endpoint: Endpoint, req: &Value, chunks: u32) -> Self {
        let model = req
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("mock-model")
            .to_string();
        let said = match endpoint {
            Endpoint::Chat => req
                .get("messages")
                .and_then(Value::as_array)
                .and_then(|m| {
                    m.iter()
                        .rev()
                        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                })
                .map(|m| text_of(m.get("content").unwrap_or(&Value::Null)))
                .unwrap_or_default(),
            Endpoint::Completions => text_of(req.get("prompt").unwrap_or(&Value::Null)),
            Endpoint::Responses | Endpoint::Embeddings => {
                text_of(req.get("input").unwrap_or(&Value::Null))
            }
        };
        let prompt_tokens = said.split_whitespace().count().max(1) as u64;
        let snippet: String = said.chars().take(200).collect();
        let reply = format!("This is a mock reply from gateway. You said: {snippet}");
        let pieces = split_pieces(&reply, chunks.max(1) as usize);
        let inputs: Vec<String> = match req.get("input") {
            Some(Value::Array(items)) => items.iter().map(text_of).collect(),
            Some(v) => vec![text_of(v)],
            None => vec![String::new()],
        };
        Self {
            endpoint,
            model,
            pieces,
            prompt_tokens,
            include_usage: req
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true),
            embeddings: inputs.iter().map(|t| embed(t)).collect(),
            base64: req.get("encoding_format").and_then(Value::as_str) == Some("base64"),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn completion_tokens(&self) -> u64 {
        self.pieces.concat().split_whitespace().count() as u64
    }

    fn usage(&self) -> Value {
        let (p, c) = (self.prompt_tokens, self.completion_tokens());
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    }

    fn text(&self) -> String {
        self.pieces.concat()
    }

    fn whole(&self) -> Bytes {
        let v = match self.endpoint {
            Endpoint::Chat => json!({
                "id": "chatcmpl-mock", "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text()},
                             "logprobs": null, "finish_reason": "stop"}],
                "usage": self.usage(),
            }),
            Endpoint::Completions => json!({
                "id": "cmpl-mock", "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": self.text(), "logprobs": null, "finish_reason": "stop"}],
                "usage": self.usage(),
            }),
            Endpoint::Embeddings => {
                let data: Vec<Value> = self
                    .embeddings
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let embedding = if self.base64 {
                            let bytes: Vec<u8> = e.iter().flat_map(|f| f.to_le_bytes()).collect();
                            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                        } else {
                            json!(e)
                        };
                        json!({"object": "embedding", "index": i, "embedding": embedding})
                    })
                    .collect();
                json!({"object": "list", "data": data, "model": self.model,
                       "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens}})
            }
            Endpoint::Responses => self.response_object("completed"),
        };
        Bytes::from(v.to_string())
    }

    fn response_object(&self, status: &str) -> Value {
        let (p, c) = (self.prompt_tokens, self.completion_tokens());
        let done = status == "completed";
        json!({
            "id": "resp_mock", "object": "response", "created_at": self.created, "status": status,
            "model": self.model,
            "output": if done { json!([{
                "type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": self.text(), "annotations": []}]
            }]) } else { json!([]) },
            "usage": if done { json!({"input_tokens": p, "output_tokens": c, "total_tokens": p + c}) } else { Value::Null },
        })
    }

    /// The SSE events of a streamed answer, one chunk each.
    fn events(&self) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(self.pieces.len() + 3);
        let data = |v: Value| Bytes::from(format!("data: {v}\n\n"));
        match self.endpoint {
            Endpoint::Chat => {
                let chunk = |delta: Value, finish: Value| {
                    json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model,
                           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
                };
                for (i, p) in self.pieces.iter().enumerate() {
                    let delta = if i == 0 {
                        json!({"role": "assistant", "content": p})
                    } else {
                        json!({"content": p})
                    };
                    out.push(data(chunk(delta, Value::Null)));
                }
                out.push(data(chunk(json!({}), json!("stop"))));
                if self.include_usage {
                    out.push(data(json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                        "created": self.created, "model": self.model, "choices": [], "usage": self.usage()})));
                }
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Endpoint::Completions => {
                for p in &self.pieces {
                    out.push(data(json!({"id": "cmpl-mock", "object": "text_completion", "created": self.created,
                        "model": self.model, "choices": [{"index": 0, "text": p, "logprobs": null, "finish_reason": null}]})));
                }
                out.push(data(json!({"id": "cmpl-mock", "object": "text_completion", "created": self.created,
                    "model": self.model, "choices": [{"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}]})));
                if self.include_usage {
                    out.push(data(json!({"id": "cmpl-mock", "object": "text_completion", "created": self.created,
                        "model": self.model, "choices": [], "usage": self.usage()})));
                }
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Endpoint::Responses => {
                let mut seq = 0u64;
                let mut event = |kind: &str, mut v: Value| {
                    v["type"] = json!(kind);
                    v["sequence_number"] = json!(seq);
                    seq += 1;
                    Bytes::from(format!("event: {kind}\ndata: {v}\n\n"))
                };
                out.push(event(
                    "response.created",
                    json!({"response": self.response_object("in_progress")}),
                ));
                for p in &self.pieces {
                    out.push(event(
                        "response.output_text.delta",
                        json!({
                        "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": p}),
                    ));
                }
                out.push(event(
                    "response.completed",
                    json!({"response": self.response_object("completed")}),
                ));
            }
            Endpoint::Embeddings => out.push(self.whole()),
        }
        out
    }
}

/// The text of a message `content`, a `prompt` or an `input`: a string, or the text parts
/// of an array.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let mut s = String::new();
            for item in items {
                let t = match item {
                    Value::String(t) => t.as_str(),
                    Value::Object(_) => item
                        .get("text")
                        .or_else(|| item.get("content"))
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    _ => "",
                };
                if !t.is_empty() {
                    if !s.is_empty() {
                        s.push(' ');
                    }
                    s.push_str(t);
                }
            }
            s
        }
        _ => String::new(),
    }
}

/// Splits `text` at word boundaries into at most `n` non-empty pieces that concatenate to it.
fn split_pieces(text: &str, n: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let n = n.min(words.len()).max(1);
    let per = words.len().div_ceil(n);
    words.chunks(per).map(|c| c.concat()).collect()
}

/// A deterministic 16-dimensional unit vector derived from the text.
fn embed(text: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut v = Vec::with_capacity(16);
    for i in 0..16u64 {
        for b in text.bytes().chain(i.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        v.push(((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32);
    }
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// A one-line summary of the options, for the `gateway mock` start-up message.
pub fn describe(o: &MockOptions) -> String {
    let mut s = format!(
        "latency {}, {} chunks every {}",
        humantime::format_duration(o.latency),
        o.chunks,
        humantime::format_duration(o.chunk_interval)
    );
    if o.fault != Fault::None {
        let _ = write!(s, ", fault {:?}", o.fault);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn fault_syntax() {
        assert_eq!("hang".parse::<Fault>(), Ok(Fault::Hang));
        assert_eq!("none".parse::<Fault>(), Ok(Fault::None));
        assert_eq!(
            "status=429,retry-after=2".parse::<Fault>(),
            Ok(Fault::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some("2".into()),
                retry_after_ms: None
            })
        );
        assert!(
            matches!("503".parse::<Fault>(), Ok(Fault::Status { status, .. }) if status == 503)
        );
        assert!("explode".parse::<Fault>().is_err());
        assert!("status=99999".parse::<Fault>().is_err());
        assert!("status=429,retry-after=1e20".parse::<Fault>().is_ok());
        assert!("hang,retry-after=1".parse::<Fault>().is_err());
    }

    #[test]
    fn mock_headers_are_bounded() {
        let opts = |name: &'static str, v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(v));
            MockOptions::default().with_headers(&h)
        };
        assert!(opts(LATENCY_HEADER, "500y").is_err());
        assert!(opts(LATENCY_HEADER, "99999999999999999999h").is_err());
        assert!(opts(CHUNK_INTERVAL_HEADER, "101days").is_err());
        assert!(opts(CHUNKS_HEADER, "99999999999").is_err());
        assert_eq!(
            opts(LATENCY_HEADER, "100days").unwrap().latency,
            crate::config::MAX_DURATION
        );
    }

    #[test]
    fn pieces_concatenate_back() {
        let t = "one two three four five six seven";
        for n in 1..10 {
            let p = split_pieces(t, n);
            assert_eq!(p.concat(), t);
            assert!(p.len() <= n);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn streams_chat_with_done_and_usage() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"user","content":"hello there"}]}"#;
        let r = respond(
            &Method::POST,
            "/v1/chat/completions",
            &HeaderMap::new(),
            body,
            &MockOptions::default(),
        )
        .await;
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(text.contains("\"usage\""));
        assert!(text.contains("hello"));
    }

    #[tokio::test(start_paused = true)]
    async fn drop_mid_stream_errors_after_half() {
        let mut h = HeaderMap::new();
        h.insert(FAULT_HEADER, HeaderValue::from_static("drop-mid-stream"));
        let r = respond(
            &Method::POST,
            "/v1/chat/completions",
            &h,
            br#"{"model":"m","stream":true}"#,
            &MockOptions::default(),
        )
        .await;
        let mut body = r.into_body();
        let mut frames = 0;
        loop {
            match body.frame().await {
                Some(Ok(_)) => frames += 1,
                Some(Err(_)) => break,
                None => panic!("clean end despite drop fault"),
            }
        }
        assert!(frames >= 1);
    }

    #[tokio::test]
    async fn embeddings_plain_and_base64() {
        let r = respond(
            &Method::POST,
            "/v1/embeddings",
            &HeaderMap::new(),
            br#"{"model":"e","input":["a","b"],"encoding_format":"base64"}"#,
            &MockOptions::default(),
        )
        .await;
        let v: Value =
            serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        let b = base64::engine::general_purpose::STANDARD
            .decode(v["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(b.len(), 16 * 4);
    }
}
