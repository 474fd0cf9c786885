//! A fault-injecting upstream that speaks the OpenAI APIs (Chat Completions, Completions,
//! Embeddings, Responses) and Anthropic's Messages API, used two ways:
//!
//! - in-process, as provider `kind = "mock"` (the shipped `demo` provider): canned answers
//!   with no network, so the gateway answers with no API keys;
//! - over HTTP, as `gateway mock`: a real server for tests, benchmarks and chaos-testing
//!   agents.
//!
//! Both honour per-request headers that override the defaults: `x-mock-fault`,
//! `x-mock-latency`, `x-mock-chunks`, `x-mock-chunk-interval`, and ask for tool calls with
//! `x-mock-tool` and `x-mock-tool-input`. Fault modes
//! ([`Fault`]): `none`, `hang`, `status=N[,retry-after=S]` (`overloaded` is `status=529`),
//! `drop-mid-stream`, `stall-mid-stream`; they apply to every path alike. The mock's own
//! errors are OpenAI-shaped, and Anthropic-shaped on `/v1/messages` and
//! `/v1/messages/count_tokens`.
//!
//! Invariants: every stream follows its API's event grammar exactly (Chat chunks and
//! `[DONE]`; the Responses events from `response.created` to `response.completed`, numbered
//! by `sequence_number`; the Messages events from `message_start` to `message_stop`), and a
//! drop or stall fault cuts it at half its events, so its final event is never sent. A
//! request with `tools` gets a tool call in its API's shape when its `tool_choice` forces
//! one, or when its last, fresh user turn asks for one (`x-mock-tool: NAME`, or the words
//! "use tool" in the text; see `choose_tool`). No input panics: the request is only read
//! through `get`/`as_*`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
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
/// `x-mock-tool`: the tool to call, when the request defines it (see [`choose_tool`]).
pub const TOOL_HEADER: &str = "x-mock-tool";
/// `x-mock-tool-input`: the JSON object to call it with, instead of one built from its schema.
pub const TOOL_INPUT_HEADER: &str = "x-mock-tool-input";

/// How the mock misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Accept the request and never answer.
    Hang,
    /// Answer with this status and an error body in the path's API shape (OpenAI's, or
    /// Anthropic's on `/v1/messages`).
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
    /// `status=429,retry-after=2`, `429;retry-after-ms=1500`, and `overloaded` for
    /// `status=529` (Anthropic's `overloaded_error`).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split([',', ';']).map(str::trim);
        let head = parts.next().unwrap_or_default();
        let mut fault = match head {
            "" | "none" => Fault::None,
            "hang" => Fault::Hang,
            "drop-mid-stream" => Fault::DropMidStream,
            "stall-mid-stream" => Fault::StallMidStream,
            // Anthropic's "overloaded" status; on the Messages paths its body says
            // `overloaded_error`.
            "overloaded" => Fault::Status {
                status: StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                retry_after: None,
                retry_after_ms: None,
            },
            other => {
                let code = other.strip_prefix("status=").unwrap_or(other);
                let status = code
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .filter(|s| s.as_u16() >= 200)
                    .ok_or_else(|| {
                        format!(
                            "unknown fault {s:?}; use none, hang, drop-mid-stream, stall-mid-stream, \
                             overloaded or status=N[,retry-after=S]"
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

/// Which vocabulary the mock's own errors use: OpenAI's (`{"error": {...}}`) or, for the
/// Anthropic paths `/v1/messages` and `/v1/messages/count_tokens`, Anthropic's
/// (`{"type": "error", "error": {"type", "message"}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    fn of(path: &str) -> Api {
        if path.ends_with("/messages") || path.contains("/messages/") {
            Api::Anthropic
        } else {
            Api::OpenAi
        }
    }

    /// An error answer in this API's shape. Anthropic bodies carry no `code`, so the code
    /// leads the message (`invalid_mock_header: ...`), and their `type` follows the status
    /// (529 and 503 `overloaded_error`, 429 `rate_limit_error`, ...), as the translator
    /// names them.
    fn error(self, status: StatusCode, message: &str, code: &str) -> Response<MockBody> {
        let openai = error_body(message, "invalid_request_error", code);
        let body = match self {
            Api::OpenAi => openai,
            Api::Anthropic => Bytes::from(crate::translate::error_to_messages(
                status.as_u16(),
                &openai,
            )),
        };
        json_response(status, body)
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

/// An OpenAI-shaped error answer (`type: "invalid_request_error"`, this `code`).
pub fn error_response(status: StatusCode, message: &str, code: &str) -> Response<MockBody> {
    Api::OpenAi.error(status, message, code)
}

/// Answers one request the way an OpenAI-compatible or Anthropic provider would, with `opts`
/// (after the request's `x-mock-*` headers) deciding latency, pacing and faults.
pub async fn respond(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    defaults: &MockOptions,
) -> Response<MockBody> {
    let path = path.split('?').next().unwrap_or(path);
    let api = Api::of(path);
    let opts = match defaults.with_headers(headers) {
        Ok(o) => o,
        Err(e) => return api.error(StatusCode::BAD_REQUEST, &e, "invalid_mock_header"),
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
            let mut r = api.error(
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
    if method == Method::GET && path.ends_with("/models") {
        return json_response(StatusCode::OK, Bytes::from(models_list().to_string()));
    }
    if method != Method::POST {
        return api.error(
            StatusCode::NOT_FOUND,
            &format!("no route for {method} {path}"),
            "not_found",
        );
    }
    let Some(endpoint) = Endpoint::of(path) else {
        return api.error(
            StatusCode::NOT_FOUND,
            &format!("no route for POST {path}"),
            "not_found",
        );
    };
    let req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return api.error(
                StatusCode::BAD_REQUEST,
                "body is not a JSON object",
                "invalid_json",
            );
        }
    };
    if let Err(e) = endpoint.validate(&req) {
        return api.error(StatusCode::BAD_REQUEST, &e, "invalid_request");
    }
    let end = match opts.fault {
        Fault::DropMidStream => End::Drop,
        Fault::StallMidStream => End::Stall,
        _ => End::Clean,
    };
    if endpoint == Endpoint::CountTokens {
        return match crate::translate::estimate_input_tokens(body) {
            Ok(n) => whole_response(Bytes::from(json!({"input_tokens": n}).to_string()), end),
            Err(e) => api.error(StatusCode::BAD_REQUEST, &e.to_string(), "invalid_request"),
        };
    }
    let tool = match choose_tool(endpoint, &req, headers, opts.chunks) {
        Ok(t) => t,
        Err(ToolError::Header(e)) => {
            return api.error(StatusCode::BAD_REQUEST, &e, "invalid_mock_header");
        }
        Err(ToolError::Request(e)) => {
            return api.error(StatusCode::BAD_REQUEST, &e, "invalid_request");
        }
    };
    let answer = Answer::new(endpoint, &req, body, opts.chunks, tool);
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true)
        && endpoint != Endpoint::Embeddings;
    let mut r = if stream {
        let mut events = answer.events();
        if end != End::Clean {
            // Half the events: never the last (`[DONE]`, `message_stop`, `response.completed`).
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
        whole_response(answer.whole(), end)
    };
    if api == Api::Anthropic
        && let Ok(v) = HeaderValue::from_str(&format!("req_mock{:012x}", answer.serial))
    {
        // The Anthropic SDKs expose it as `_request_id`.
        r.headers_mut().insert("request-id", v);
    }
    r
}

/// A 200 JSON answer; with a drop or stall fault, half of it and then the fault.
fn whole_response(whole: Bytes, end: End) -> Response<MockBody> {
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

/// `GET /v1/models`, readable by both SDKs: OpenAI's `object`/`created`/`owned_by` and
/// Anthropic's `type`/`display_name`/`created_at`/`has_more` side by side.
fn models_list() -> Value {
    json!({"object": "list", "has_more": false, "first_id": "mock-model", "last_id": "mock-model",
        "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "gateway-mock",
                  "type": "model", "display_name": "Mock model", "created_at": "1970-01-01T00:00:00Z"}]})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Messages,
    CountTokens,
}

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        Some(if path.ends_with("/chat/completions") {
            Endpoint::Chat
        } else if path.ends_with("/completions") {
            Endpoint::Completions
        } else if path.ends_with("/embeddings") {
            Endpoint::Embeddings
        } else if path.ends_with("/responses") {
            Endpoint::Responses
        } else if path.ends_with("/messages/count_tokens") {
            Endpoint::CountTokens
        } else if path.ends_with("/messages") {
            Endpoint::Messages
        } else {
            return None;
        })
    }

    /// What the Messages API itself refuses with 400, so that a translator's mistake (no
    /// `max_tokens`, an OpenAI `tool` message left in `messages`) shows against the mock
    /// too. The OpenAI endpoints take anything.
    fn validate(self, req: &Value) -> Result<(), String> {
        if !matches!(self, Endpoint::Messages | Endpoint::CountTokens) {
            return Ok(());
        }
        if req
            .get("model")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err("model: Field required".into());
        }
        if self == Endpoint::Messages {
            match req.get("max_tokens") {
                None | Some(Value::Null) => return Err("max_tokens: Field required".into()),
                Some(v) if v.as_u64().is_none_or(|n| n < 1) => {
                    return Err("max_tokens: must be an integer of at least 1".into());
                }
                _ => {}
            }
        }
        let Some(messages) = req.get("messages").and_then(Value::as_array) else {
            return Err("messages: Field required".into());
        };
        if messages.is_empty() && self == Endpoint::Messages {
            return Err("messages: at least one message is required".into());
        }
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str);
            // Claude Code sends `system` messages in `messages` too.
            if !matches!(role, Some("user" | "assistant" | "system")) {
                return Err(format!(
                    "messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
                ));
            }
            if m.get("content").is_none_or(Value::is_null) {
                return Err(format!("messages.{i}.content: Field required"));
            }
        }
        Ok(())
    }
}

/// A tool call the mock makes instead of (after) its text.
#[derive(Debug, Clone)]
struct ToolCall {
    name: String,
    /// Arguments built from the tool's JSON schema (see [`sample_of`]).
    input: Value,
    /// `input` serialized, split into the streamed argument deltas.
    pieces: Vec<String>,
}

impl ToolCall {
    fn arguments(&self) -> String {
        self.pieces.concat()
    }
}

/// Why the tool choice cannot be made: a bad `x-mock-tool` header, or a request naming a
/// tool it does not define.
enum ToolError {
    Header(String),
    Request(String),
}

/// How a request's `tool_choice` steers the mock, across the three vocabularies
/// (`{"type": "auto" | "any" | "tool" | "none"}`, `"auto" | "required" | "none"`,
/// `{"type": "function", ...}`).
enum Choice<'a> {
    Auto,
    Never,
    Any,
    Named(&'a str),
}

fn tool_choice(req: &Value) -> Choice<'_> {
    let Some(c) = req.get("tool_choice") else {
        return Choice::Auto;
    };
    let kind = c.as_str().or_else(|| c.get("type").and_then(Value::as_str));
    match kind {
        Some("none") => Choice::Never,
        Some("required" | "any") => Choice::Any,
        Some("tool" | "function") => c
            .get("name")
            .or_else(|| c.pointer("/function/name"))
            .and_then(Value::as_str)
            .map_or(Choice::Any, Choice::Named),
        _ => Choice::Auto,
    }
}

/// The tool call the answer makes, if any. A request with `tools` gets one when its
/// `tool_choice` forces one (`any`, `required`, or a named tool), or, with the default
/// `auto`, when its last turn is a fresh user turn (not a tool result) and either the
/// request carries `x-mock-tool: NAME` or the turn's text has the words "use tool" (any
/// case; "Use ToolSearch" in an agent's reminders does not count). The tool is the named
/// one, else the first whose name the text has as a word, else the first. A turn that
/// carries a tool result gets the text answer, so an agent's loop ends. The input is
/// `x-mock-tool-input` when sent, else built from the tool's schema ([`sample_of`]).
fn choose_tool(
    endpoint: Endpoint,
    req: &Value,
    headers: &HeaderMap,
    chunks: u32,
) -> Result<Option<ToolCall>, ToolError> {
    let tools: Vec<(&str, &Value)> = req
        .get("tools")
        .and_then(Value::as_array)
        .map(|ts| ts.iter().filter_map(tool_def).collect())
        .unwrap_or_default();
    let header = match headers.get(TOOL_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(name)) => Some(name.trim()),
        Some(Err(_)) => return Err(ToolError::Header(format!("bad {TOOL_HEADER}: not text"))),
    };
    if let Some(name) = header
        && !tools.iter().any(|(n, _)| *n == name)
    {
        return Err(ToolError::Header(format!(
            "bad {TOOL_HEADER}: {name:?} is not among the request's tools"
        )));
    }
    let given = match headers.get(TOOL_INPUT_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => match serde_json::from_str::<Value>(v) {
            Ok(input @ Value::Object(_)) => Some(input),
            _ => {
                return Err(ToolError::Header(format!(
                    "bad {TOOL_INPUT_HEADER}: not a JSON object: {v:?}"
                )));
            }
        },
        Some(Err(_)) => {
            return Err(ToolError::Header(format!(
                "bad {TOOL_INPUT_HEADER}: not text"
            )));
        }
    };
    if tools.is_empty() {
        return Ok(None);
    }
    let (said, fresh) = last_user_turn(endpoint, req);
    let mentioned = || {
        tools
            .iter()
            .find(|(n, _)| has_word(&said, n))
            .map(|(n, _)| *n)
    };
    let name = match tool_choice(req) {
        Choice::Never => return Ok(None),
        Choice::Named(n) => {
            if !tools.iter().any(|(t, _)| *t == n) {
                return Err(ToolError::Request(format!(
                    "tool_choice: names {n:?}, which is not among the request's tools"
                )));
            }
            Some(n)
        }
        Choice::Any => header.or_else(mentioned),
        Choice::Auto => {
            let asked = header.is_some() || has_word(&said.to_lowercase(), "use tool");
            if !(fresh && asked) {
                return Ok(None);
            }
            header.or_else(mentioned)
        }
    };
    let Some((name, schema)) = name
        .and_then(|n| tools.iter().find(|(t, _)| *t == n))
        .or_else(|| tools.first())
    else {
        return Ok(None);
    };
    let input = given.unwrap_or_else(|| sample_of(schema, 0));
    Ok(Some(ToolCall {
        name: (*name).to_string(),
        pieces: split_chars(&input.to_string(), chunks.max(1) as usize),
        input,
    }))
}

/// A tool definition's name and argument schema, in any of the three shapes (Anthropic
/// `name` + `input_schema`, Chat `function.name` + `function.parameters`, Responses `name` +
/// `parameters`).
fn tool_def(t: &Value) -> Option<(&str, &Value)> {
    let name = t
        .get("name")
        .or_else(|| t.pointer("/function/name"))
        .and_then(Value::as_str)?;
    let schema = t
        .get("input_schema")
        .or_else(|| t.get("parameters"))
        .or_else(|| t.pointer("/function/parameters"))
        .unwrap_or(&Value::Null);
    Some((name, schema))
}

/// A value that fits a JSON schema: the first `enum` value or the `const`, else by `type`
/// (`"mock"`, `1`, `false`, one sample item; an object's `required` properties, or every
/// property when it lists none). Optional properties stay out, so an agent's tool is not
/// called with every flag it has. Depth is capped, so a recursive or hostile schema ends.
fn sample_of(schema: &Value, depth: u32) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(v) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
        .or_else(|| schema.get("const"))
    {
        return v.clone();
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    };
    let ty = ty.or_else(|| schema.get("properties").map(|_| "object"));
    match ty {
        Some("string") => json!("mock"),
        Some("integer" | "number") => json!(1),
        Some("boolean") => json!(false),
        Some("array") => match schema.get("items") {
            Some(items @ Value::Object(_)) => json!([sample_of(items, depth + 1)]),
            _ => json!([]),
        },
        Some("object") => {
            let props = schema.get("properties").and_then(Value::as_object);
            let required: Option<Vec<&str>> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect());
            let map = props
                .into_iter()
                .flatten()
                .filter(|(k, _)| required.as_ref().is_none_or(|r| r.contains(&k.as_str())))
                .map(|(k, s)| (k.clone(), sample_of(s, depth + 1)))
                .collect();
            Value::Object(map)
        }
        _ if depth == 0 => json!({}),
        _ => Value::Null,
    }
}

/// What the user said last: the last text of the request's last user message (Claude
/// Code, for one, sends its reminders first and the prompt last), and whether that turn is
/// a fresh one: the last turn, not a tool result. System and developer messages are not
/// turns (Claude Code appends a `system` message after the user's).
fn last_user_turn(endpoint: Endpoint, req: &Value) -> (String, bool) {
    let empty = Value::Null;
    match endpoint {
        Endpoint::Chat | Endpoint::Messages | Endpoint::CountTokens => {
            let messages = req
                .get("messages")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let last_turn = messages
                .iter()
                .rev()
                .find(|m| !matches!(role(m), "system" | "developer"));
            let fresh = last_turn.is_some_and(|m| {
                let content = m.get("content").unwrap_or(&empty);
                m.get("role").and_then(Value::as_str) == Some("user")
                    && !content.as_array().is_some_and(|blocks| {
                        blocks
                            .iter()
                            .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                    })
            });
            let said = messages
                .iter()
                .rev()
                .find(|m| role(m) == "user")
                .map(|m| last_text(m.get("content").unwrap_or(&empty)))
                .unwrap_or_default();
            (said, fresh)
        }
        Endpoint::Responses => match req.get("input") {
            Some(Value::Array(items)) => {
                let is_message = |i: &Value| {
                    i.get("type")
                        .and_then(Value::as_str)
                        .is_none_or(|t| t == "message")
                };
                let is_user = |i: &Value| is_message(i) && role(i) == "user";
                let fresh = items
                    .iter()
                    .rev()
                    .find(|i| !(is_message(i) && matches!(role(i), "system" | "developer")))
                    .is_some_and(is_user);
                let said = items
                    .iter()
                    .rev()
                    .find(|i| is_user(i))
                    .map(|i| last_text(i.get("content").unwrap_or(&empty)))
                    .unwrap_or_default();
                (said, fresh)
            }
            Some(v) => (text_of(v), true),
            None => (String::new(), true),
        },
        Endpoint::Completions => (text_of(req.get("prompt").unwrap_or(&empty)), true),
        Endpoint::Embeddings => (text_of(req.get("input").unwrap_or(&empty)), true),
    }
}

/// A message's or item's `role`, `""` when it has none.
fn role(m: &Value) -> &str {
    m.get("role").and_then(Value::as_str).unwrap_or_default()
}

/// Numbers the answers of this process, for ids that differ between answers.
static SERIAL: AtomicU64 = AtomicU64::new(1);

/// The canned answer to one request.
struct Answer {
    endpoint: Endpoint,
    model: String,
    pieces: Vec<String>,
    tool: Option<ToolCall>,
    input_tokens: u64,
    include_usage: bool,
    embeddings: Vec<Vec<f32>>,
    base64: bool,
    created: u64,
    serial: u64,
}

impl Answer {
    fn new(
        endpoint: Endpoint,
        req: &Value,
        body: &[u8],
        chunks: u32,
        tool: Option<ToolCall>,
    ) -> Self {
        let model = req
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("mock-model")
            .to_string();
        let (said, _) = last_user_turn(endpoint, req);
        let words = said.split_whitespace().count().max(1) as u64;
        // The Messages API counts what count_tokens estimates, so the two agree.
        let input_tokens = match endpoint {
            Endpoint::Messages => crate::translate::estimate_input_tokens(body).unwrap_or(words),
            _ => words,
        };
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
            tool,
            input_tokens,
            include_usage: req
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true),
            embeddings: if endpoint == Endpoint::Embeddings {
                inputs.iter().map(|t| embed(t)).collect()
            } else {
                Vec::new()
            },
            base64: req.get("encoding_format").and_then(Value::as_str) == Some("base64"),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// An id for this answer: `prefix` and the serial (`msg_mock00000000002a`).
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}mock{:012x}", self.serial)
    }

    /// Words of text, plus a token per 4 bytes of tool arguments.
    fn output_tokens(&self) -> u64 {
        let args = self.tool.as_ref().map_or(0, |t| t.arguments().len());
        self.text().split_whitespace().count() as u64 + args.div_ceil(4) as u64
    }

    fn usage(&self) -> Value {
        let (p, c) = (self.input_tokens, self.output_tokens());
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    }

    fn text(&self) -> String {
        self.pieces.concat()
    }

    fn whole(&self) -> Bytes {
        let v = match self.endpoint {
            Endpoint::Chat => {
                let mut message = json!({"role": "assistant", "content": self.text()});
                if let Some(t) = &self.tool {
                    message["tool_calls"] = json!([{"id": self.id("call_"), "type": "function",
                        "function": {"name": t.name, "arguments": t.arguments()}}]);
                }
                json!({
                    "id": self.id("chatcmpl-"), "object": "chat.completion", "created": self.created,
                    "model": self.model,
                    "choices": [{"index": 0, "message": message, "logprobs": null,
                                 "finish_reason": self.finish_reason()}],
                    "usage": self.usage(),
                })
            }
            Endpoint::Completions => json!({
                "id": self.id("cmpl-"), "object": "text_completion", "created": self.created,
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
                       "usage": {"prompt_tokens": self.input_tokens, "total_tokens": self.input_tokens}})
            }
            Endpoint::Responses => self.response_object(true),
            Endpoint::Messages => {
                let mut content = vec![json!({"type": "text", "text": self.text()})];
                if let Some(t) = &self.tool {
                    content.push(json!({"type": "tool_use", "id": self.id("toolu_"),
                        "name": t.name, "input": t.input}));
                }
                json!({
                    "id": self.id("msg_"), "type": "message", "role": "assistant",
                    "model": self.model, "content": content,
                    "stop_reason": self.stop_reason(), "stop_sequence": null,
                    "usage": self.anthropic_usage(self.output_tokens()),
                })
            }
            Endpoint::CountTokens => json!({"input_tokens": self.input_tokens}),
        };
        Bytes::from(v.to_string())
    }

    fn finish_reason(&self) -> &'static str {
        if self.tool.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    fn stop_reason(&self) -> &'static str {
        if self.tool.is_some() {
            "tool_use"
        } else {
            "end_turn"
        }
    }

    fn anthropic_usage(&self, output_tokens: u64) -> Value {
        json!({"input_tokens": self.input_tokens, "output_tokens": output_tokens,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    }

    /// The Responses API's message item, `text` so far, `status` `in_progress` or
    /// `completed`.
    fn response_message(&self, text: &str, status: &str) -> Value {
        let content = if status == "completed" {
            json!([Self::output_text(text)])
        } else {
            json!([])
        };
        json!({"id": self.id("msg_"), "type": "message", "status": status, "role": "assistant",
               "content": content})
    }

    fn output_text(text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    }

    /// The Responses API's function call item.
    fn response_call(&self, t: &ToolCall, arguments: &str, status: &str) -> Value {
        json!({"id": self.id("fc_"), "type": "function_call", "status": status,
               "call_id": self.id("call_"), "name": t.name, "arguments": arguments})
    }

    /// The Responses API's response object: `in_progress` with no output yet, or
    /// `completed` with its output items and usage.
    fn response_object(&self, done: bool) -> Value {
        let (p, c) = (self.input_tokens, self.output_tokens());
        let mut output = Vec::new();
        if done {
            output.push(self.response_message(&self.text(), "completed"));
            if let Some(t) = &self.tool {
                output.push(self.response_call(t, &t.arguments(), "completed"));
            }
        }
        json!({
            "id": self.id("resp_"), "object": "response", "created_at": self.created,
            "status": if done { "completed" } else { "in_progress" },
            "background": false, "error": null, "incomplete_details": null, "instructions": null,
            "max_output_tokens": null, "model": self.model, "output": output,
            "parallel_tool_calls": true, "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null}, "store": false, "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
            "truncation": "disabled", "user": null, "metadata": {},
            "usage": if done { json!({
                "input_tokens": p, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": c, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": p + c}) } else { Value::Null },
        })
    }

    /// The SSE events of a streamed answer, one chunk each.
    fn events(&self) -> Vec<Bytes> {
        match self.endpoint {
            Endpoint::Chat => self.chat_events(),
            Endpoint::Completions => self.completions_events(),
            Endpoint::Responses => self.responses_events(),
            Endpoint::Messages => self.messages_events(),
            Endpoint::Embeddings | Endpoint::CountTokens => vec![self.whole()],
        }
    }

    fn chat_events(&self) -> Vec<Bytes> {
        let id = self.id("chatcmpl-");
        let chunk = |delta: Value, finish: Value| {
            data_frame(
                json!({"id": id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}),
            )
        };
        let mut out = Vec::with_capacity(self.pieces.len() + 4);
        for (i, p) in self.pieces.iter().enumerate() {
            let delta = if i == 0 {
                json!({"role": "assistant", "content": p})
            } else {
                json!({"content": p})
            };
            out.push(chunk(delta, Value::Null));
        }
        if let Some(t) = &self.tool {
            out.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": self.id("call_"), "type": "function",
                    "function": {"name": t.name, "arguments": ""}}]}),
                Value::Null,
            ));
            for p in &t.pieces {
                out.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}),
                    Value::Null,
                ));
            }
        }
        out.push(chunk(json!({}), json!(self.finish_reason())));
        if self.include_usage {
            out.push(data_frame(json!({"id": id, "object": "chat.completion.chunk",
                "created": self.created, "model": self.model, "choices": [], "usage": self.usage()})));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }

    fn completions_events(&self) -> Vec<Bytes> {
        let id = self.id("cmpl-");
        let mut out = Vec::with_capacity(self.pieces.len() + 3);
        for p in &self.pieces {
            out.push(data_frame(json!({"id": id, "object": "text_completion", "created": self.created,
                "model": self.model, "choices": [{"index": 0, "text": p, "logprobs": null, "finish_reason": null}]})));
        }
        out.push(data_frame(json!({"id": id, "object": "text_completion", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}]})));
        if self.include_usage {
            out.push(data_frame(
                json!({"id": id, "object": "text_completion", "created": self.created,
                "model": self.model, "choices": [], "usage": self.usage()}),
            ));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }

    /// The Responses API's grammar: `response.created`, `response.in_progress`, then per
    /// output item `output_item.added`, its content (`content_part.added`, text deltas,
    /// `output_text.done`, `content_part.done`; or function call argument deltas and
    /// `function_call_arguments.done`), `output_item.done`; last `response.completed`. Every
    /// event names itself in `type` and counts up in `sequence_number` from 0.
    fn responses_events(&self) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(self.pieces.len() + 16);
        let mut seq = 0u64;
        let mut event = |kind: &str, mut v: Value| {
            v["type"] = json!(kind);
            v["sequence_number"] = json!(seq);
            seq += 1;
            named_frame(kind, &v)
        };
        let item_id = self.id("msg_");
        let text = self.text();
        out.push(event(
            "response.created",
            json!({"response": self.response_object(false)}),
        ));
        out.push(event(
            "response.in_progress",
            json!({"response": self.response_object(false)}),
        ));
        out.push(event(
            "response.output_item.added",
            json!({"output_index": 0, "item": self.response_message("", "in_progress")}),
        ));
        let at = json!({"item_id": item_id, "output_index": 0, "content_index": 0});
        let with = |extra: Value| {
            let mut v = at.clone();
            if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            v
        };
        out.push(event(
            "response.content_part.added",
            with(json!({"part": Self::output_text("")})),
        ));
        for p in &self.pieces {
            out.push(event(
                "response.output_text.delta",
                with(json!({"delta": p, "logprobs": []})),
            ));
        }
        out.push(event(
            "response.output_text.done",
            with(json!({"text": text, "logprobs": []})),
        ));
        out.push(event(
            "response.content_part.done",
            with(json!({"part": Self::output_text(&text)})),
        ));
        out.push(event(
            "response.output_item.done",
            json!({"output_index": 0, "item": self.response_message(&text, "completed")}),
        ));
        if let Some(t) = &self.tool {
            let fc_id = self.id("fc_");
            out.push(event(
                "response.output_item.added",
                json!({"output_index": 1, "item": self.response_call(t, "", "in_progress")}),
            ));
            for p in &t.pieces {
                out.push(event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": fc_id, "output_index": 1, "delta": p}),
                ));
            }
            out.push(event(
                "response.function_call_arguments.done",
                json!({"item_id": fc_id, "output_index": 1, "name": t.name,
                       "arguments": t.arguments()}),
            ));
            out.push(event(
                "response.output_item.done",
                json!({"output_index": 1,
                       "item": self.response_call(t, &t.arguments(), "completed")}),
            ));
        }
        out.push(event(
            "response.completed",
            json!({"response": self.response_object(true)}),
        ));
        out
    }

    /// The Messages API's grammar: `message_start` (empty content, input usage),
    /// `content_block_start` (text, index 0), `ping`, `text_delta`s, `content_block_stop`;
    /// with a tool call a `tool_use` block at index 1 whose input comes as
    /// `input_json_delta`s; then `message_delta` (stop reason, output tokens) and
    /// `message_stop`.
    fn messages_events(&self) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(self.pieces.len() + 12);
        let event = |kind: &str, mut v: Value| {
            v["type"] = json!(kind);
            named_frame(kind, &v)
        };
        out.push(event(
            "message_start",
            json!({"message": {"id": self.id("msg_"), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": self.anthropic_usage(1)}}),
        ));
        out.push(event(
            "content_block_start",
            json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        out.push(event("ping", json!({})));
        for p in &self.pieces {
            out.push(event(
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": p}}),
            ));
        }
        out.push(event("content_block_stop", json!({"index": 0})));
        if let Some(t) = &self.tool {
            out.push(event(
                "content_block_start",
                json!({"index": 1, "content_block": {"type": "tool_use", "id": self.id("toolu_"),
                    "name": t.name, "input": {}}}),
            ));
            for p in &t.pieces {
                out.push(event(
                    "content_block_delta",
                    json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": p}}),
                ));
            }
            out.push(event("content_block_stop", json!({"index": 1})));
        }
        out.push(event(
            "message_delta",
            json!({"delta": {"stop_reason": self.stop_reason(), "stop_sequence": null},
                   "usage": {"output_tokens": self.output_tokens()}}),
        ));
        out.push(event("message_stop", json!({})));
        out
    }
}

/// `data: {json}\n\n`: an OpenAI Chat or Completions stream event.
fn data_frame(v: Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// `event: KIND\ndata: {json}\n\n`: a Responses or Messages stream event.
fn named_frame(kind: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {v}\n\n"))
}

/// The text of a message `content`, a `prompt` or an `input`: a string, or the text parts
/// of an array (and of the `content` of its parts, as in a `tool_result`). Nesting is
/// bounded by the JSON parser's own depth limit.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let mut s = String::new();
            for item in items {
                let t = match item {
                    Value::String(t) => t.clone(),
                    Value::Object(_) => match item.get("text").or_else(|| item.get("content")) {
                        Some(Value::String(t)) => t.clone(),
                        Some(inner @ Value::Array(_)) => text_of(inner),
                        _ => String::new(),
                    },
                    _ => String::new(),
                };
                if !t.is_empty() {
                    if !s.is_empty() {
                        s.push(' ');
                    }
                    s.push_str(&t);
                }
            }
            s
        }
        _ => String::new(),
    }
}

/// The last text of a message `content`: the string, or the last part or block that has
/// text (a `tool_result`'s own content included).
fn last_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .rev()
            .map(|item| match item {
                Value::String(t) => t.clone(),
                Value::Object(_) => match item.get("text").or_else(|| item.get("content")) {
                    Some(Value::String(t)) => t.clone(),
                    Some(inner @ Value::Array(_)) => last_text(inner),
                    _ => String::new(),
                },
                _ => String::new(),
            })
            .find(|t| !t.is_empty())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Whether `text` has `word` with no letter, digit or `_` right before or after it.
fn has_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    !word.is_empty()
        && text.match_indices(word).any(|(i, _)| {
            let before = text.get(..i).and_then(|t| t.chars().next_back());
            let after = text.get(i + word.len()..).and_then(|t| t.chars().next());
            !before.is_some_and(is_word) && !after.is_some_and(is_word)
        })
}

/// Splits `text` at word boundaries into at most `n` non-empty pieces that concatenate to it.
fn split_pieces(text: &str, n: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let n = n.min(words.len()).max(1);
    let per = words.len().div_ceil(n);
    words.chunks(per).map(|c| c.concat()).collect()
}

/// Splits `text` at character boundaries into at most `n` non-empty pieces that
/// concatenate to it (streamed tool arguments, which break anywhere).
fn split_chars(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.min(chars.len()).max(1);
    let per = chars.len().div_ceil(n).max(1);
    chars.chunks(per).map(|c| c.iter().collect()).collect()
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

    #[test]
    fn overloaded_is_529() {
        assert!(
            matches!("overloaded;retry-after=3".parse::<Fault>(), Ok(Fault::Status { status, retry_after: Some(r), .. }) if status == 529 && r == "3")
        );
    }

    #[test]
    fn chars_split_anywhere_and_concatenate_back() {
        for t in ["", "{}", r#"{"city":"Zürich"}"#] {
            for n in 1..25 {
                let p = split_chars(t, n);
                assert_eq!(p.concat(), t);
                assert!(p.len() <= n.max(1));
                assert!(p.iter().all(|p| !p.is_empty()) || t.is_empty());
            }
        }
    }

    #[test]
    fn samples_fit_their_schema_and_end() {
        let schema = json!({"type": "object", "properties": {
            "s": {"type": "string"}, "n": {"type": ["null", "number"]}, "e": {"enum": [3, 4]},
            "c": {"const": "x"}, "o": {"properties": {"b": {"type": "boolean"}}},
            "a": {"type": "array", "items": {"type": "integer"}}, "u": {}}});
        assert_eq!(
            sample_of(&schema, 0),
            json!({"s": "mock", "n": 1, "e": 3, "c": "x", "o": {"b": false}, "a": [1], "u": null})
        );
        let only_required = json!({"type": "object", "required": ["a", "zzz"],
            "properties": {"a": {"type": "boolean"}, "b": {"type": "string"}}});
        assert_eq!(sample_of(&only_required, 0), json!({"a": false}));
        assert_eq!(sample_of(&Value::Null, 0), json!({}));
        // A schema nested deeper than the cap ends in null instead of recursing on.
        let mut deep = json!({"type": "string"});
        for _ in 0..50 {
            deep = json!({"type": "array", "items": deep});
        }
        let mut v = &sample_of(&deep, 0);
        let mut depth = 0;
        while let Some(inner) = v.get(0) {
            v = inner;
            depth += 1;
        }
        assert!(depth <= 9 && v.is_null(), "{depth} {v}");
    }

    #[test]
    fn words_are_whole() {
        assert!(has_word("please use tool now", "use tool"));
        assert!(has_word("use tool", "use tool"));
        assert!(has_word("use tool: get_weather.", "get_weather"));
        assert!(!has_word("use toolsearch", "use tool"));
        assert!(!has_word("reuse tool", "use tool"));
        assert!(!has_word("get_weather_2", "get_weather"));
        assert!(!has_word("anything", ""));
        assert!(has_word("Zürich use tool", "use tool"));
    }

    #[test]
    fn the_last_text_is_what_was_said() {
        let content = json!([{"type": "text", "text": "<system-reminder>x</system-reminder>"},
            {"type": "text", "text": "the prompt"}, {"type": "image"}]);
        assert_eq!(last_text(&content), "the prompt");
        let result = json!([{"type": "tool_result", "content": [{"type": "text", "text": "out"}]}]);
        assert_eq!(last_text(&result), "out");
        assert_eq!(last_text(&json!(7)), "");
    }

    #[test]
    fn text_of_reads_nested_tool_results() {
        let content = json!([{"type": "tool_result", "tool_use_id": "t",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"type": "text", "text": "c"}, 7, null]);
        assert_eq!(text_of(&content), "a b c");
    }

    #[tokio::test]
    async fn no_panic_on_odd_messages_requests() {
        for body in [
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":null}]}"#,
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[1,{"type":"tool_result"}]}],"tools":[1,{"name":5},{"name":"t","input_schema":[]}],"tool_choice":7}"#,
            r#"{"model":"m","max_tokens":1e3,"messages":[{"role":"assistant","content":"x"}],"stream":"yes"}"#,
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"use tool"}],"tools":[{"name":""}],"tool_choice":{"type":"tool"}}"#,
            r#"{"model":"m","max_tokens":1,"stream":true,"messages":[{"role":"user","content":"use tool"}],"tools":[{"name":"t","input_schema":{"type":"object","properties":[]}}]}"#,
        ] {
            for path in [
                "/v1/messages",
                "/v1/messages/count_tokens",
                "/v1/responses",
                "/v1/chat/completions",
            ] {
                let r = respond(
                    &Method::POST,
                    path,
                    &HeaderMap::new(),
                    body.as_bytes(),
                    &MockOptions::default(),
                )
                .await;
                let _ = r.into_body().collect().await;
            }
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
