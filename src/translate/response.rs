//! Whole answers and upstream error bodies, both ways: an OpenAI chat completion as an
//! Anthropic message ([`chat_to_messages_response`]) and the reverse
//! ([`messages_to_chat_response`]); an upstream error body in the other API's error shape
//! ([`error_to_messages`], [`error_to_chat`]).
//!
//! Invariants: `model` in an answer is the model the client asked for (its alias), not the
//! upstream's; ids are the upstream's own, unchanged (`chatcmpl-…` as a message id, `msg_…`
//! as a completion id, `call_…` as a `tool_use.id`, `toolu_…` as a `tool_calls[].id`), so a
//! tool result sent back later names the call it answers on either side. Stop reasons and
//! usage go through [`super::vocab`], the same tables the streams use. The error functions
//! never fail: whatever the body, the client gets a well-formed error.
//!
//! Choices where the contract is silent:
//! - `reasoning_content` (or `reasoning`, as vLLM and OpenRouter name it) becomes a leading
//!   `thinking` block with an empty `signature`; thinking blocks become `reasoning_content`.
//!   Best effort: an unsigned thinking block is refused by Anthropic if the client later
//!   sends it there in its history.
//! - OpenAI `refusal` text becomes a text block (the client must see why it got nothing).
//! - Tool call arguments that are not a JSON object are refused, except in an answer cut by
//!   `length`, where the call is kept with `input: {}` (the answer says it was cut).
//! - Anthropic blocks with no chat counterpart (`redacted_thinking`, server tool blocks,
//!   which a translated request never asks for) are dropped from answers.
//! - Error bodies: the message keeps the upstream's code in front (`<code>: <message>`), as
//!   the gateway's own Anthropic errors do; an OpenAI `context_length_exceeded` reads
//!   `prompt is too long: …`, the words Anthropic clients (Claude Code) look for before they
//!   compact, and an Anthropic "prompt is too long" gets OpenAI's `context_length_exceeded`
//!   code. The OpenAI `code` is otherwise the Anthropic error type.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Value, json};

use super::node::{Fields, Node};
use super::request::parse_arguments;
use super::vocab::{self, Tokens};
use super::{TranslateError, field, kind, parse_fields, parse_object, to_bytes};

type Result<T> = std::result::Result<T, TranslateError>;

/// Id of an answer whose upstream gave none.
pub(crate) const FALLBACK_MESSAGE_ID: &str = "msg_gateway";
/// Id of a completion whose upstream gave none.
pub(crate) const FALLBACK_COMPLETION_ID: &str = "chatcmpl-gateway";
/// Longest excerpt of a non-JSON upstream error body quoted in the translated error.
const MAX_EXCERPT_CHARS: usize = 512;

/// An OpenAI chat completion as an Anthropic message answering a client that asked for
/// `requested_model`.
///
/// The completion is read as a borrowing [`Node`], not into a `Value` tree, and written
/// from a struct: this runs once per translated request.
pub fn chat_to_messages_response(body: &[u8], requested_model: &str) -> Result<Vec<u8>> {
    let doc = parse_fields(body)?;
    let Some(choices) = doc.get("choices").and_then(Node::as_array) else {
        return Err(TranslateError::new("choices", "must be an array"));
    };
    // A translated request never asks for more than one choice; the first is the answer.
    let Some((c, choice)) = choices
        .iter()
        .enumerate()
        .find(|(_, c)| c.as_object().is_some())
    else {
        return Err(TranslateError::new("choices", "must hold one answer"));
    };
    let path = || format!("choices[{c}].message");
    let Some(message) = choice.get("message").and_then(Node::as_object) else {
        return Err(TranslateError::new(path(), "must be an object"));
    };
    let finish = str_of(choice.get("finish_reason"));

    let message_id = str_of(doc.get("id")).unwrap_or(FALLBACK_MESSAGE_ID);
    let mut content = Vec::new();
    if let Some(thinking) = reasoning_of(message) {
        content.push(Block::Thinking {
            signature: "",
            thinking,
            kind: "thinking",
        });
    }
    let text = chat_text(message);
    if !text.is_empty() {
        content.push(Block::Text { text, kind: "text" });
    }
    let calls = message
        .get("tool_calls")
        .and_then(Node::as_array)
        .unwrap_or_default();
    for (j, call) in calls.iter().enumerate() {
        let cpath = || format!("{}.tool_calls[{j}]", path());
        let function = call.get("function");
        let Some(name) = str_of(function.and_then(|f| f.get("name"))) else {
            return Err(TranslateError::new(
                format!("{}.function.name", cpath()),
                "must be a string",
            ));
        };
        let id = match str_of(call.get("id")) {
            Some(id) if !id.is_empty() => Cow::Borrowed(id),
            _ => Cow::Owned(vocab::fallback_tool_id(message_id, j as u64)),
        };
        let arguments = str_of(function.and_then(|f| f.get("arguments"))).unwrap_or("");
        let input = match parse_arguments(arguments) {
            Ok(input) => input,
            Err(_) if finish == Some("length") => json!({}),
            Err(m) => {
                return Err(TranslateError::new(
                    format!("{}.function.arguments", cpath()),
                    m,
                ));
            }
        };
        content.push(Block::ToolUse {
            id,
            input,
            name,
            kind: "tool_use",
        });
    }

    let usage = doc
        .get("usage")
        .and_then(Tokens::from_chat)
        .unwrap_or_default();
    let answer = MessageAnswer {
        content,
        id: message_id,
        model: requested_model,
        role: "assistant",
        stop_reason: vocab::stop_reason(finish, !calls.is_empty()),
        stop_sequence: None,
        kind: "message",
        usage: usage.messages_usage(),
    };
    to_bytes(&answer, body.len())
}

/// The string at `v`, if that is one.
fn str_of<'n>(v: Option<&'n Node>) -> Option<&'n str> {
    v.and_then(Node::as_str)
}

/// The text of an OpenAI answer: `content` (a string or text/refusal parts), else `refusal`.
fn chat_text<'m>(m: &'m Fields) -> Cow<'m, str> {
    let text = match m.get("content") {
        Some(Node::Str(s)) => Cow::Borrowed(&**s),
        Some(Node::Arr(parts)) => {
            let mut text = String::new();
            for p in parts {
                let piece = match p.kind() {
                    Some("text") => p.get("text"),
                    Some("refusal") => p.get("refusal"),
                    _ => None,
                };
                text.push_str(piece.and_then(Node::as_str).unwrap_or_default());
            }
            Cow::Owned(text)
        }
        _ => Cow::Borrowed(""),
    };
    if text.is_empty() {
        Cow::Borrowed(m.get("refusal").and_then(Node::as_str).unwrap_or_default())
    } else {
        text
    }
}

/// The Anthropic message [`chat_to_messages_response`] writes (keys in the order a `Value`
/// map writes them).
#[derive(Serialize)]
struct MessageAnswer<'a> {
    content: Vec<Block<'a>>,
    id: &'a str,
    model: &'a str,
    role: &'static str,
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
    #[serde(rename = "type")]
    kind: &'static str,
    usage: vocab::MessagesUsage,
}

/// A content block of [`MessageAnswer`].
#[derive(Serialize)]
#[serde(untagged)]
enum Block<'a> {
    Thinking {
        signature: &'static str,
        thinking: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    Text {
        text: Cow<'a, str>,
        #[serde(rename = "type")]
        kind: &'static str,
    },
    ToolUse {
        id: Cow<'a, str>,
        input: Value,
        name: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

/// The reasoning text of an OpenAI message or delta: `reasoning_content`, or `reasoning` as
/// vLLM and OpenRouter name it; `None` when empty.
pub(crate) fn reasoning_of<'m>(m: &'m Fields) -> Option<&'m str> {
    ["reasoning_content", "reasoning"]
        .into_iter()
        .find_map(|k| m.get(k).and_then(Node::as_str))
        .filter(|s| !s.is_empty())
}

/// An Anthropic message as an OpenAI chat completion answering a client that asked for
/// `requested_model`; `created` is the Unix time to stamp it with.
pub fn messages_to_chat_response(
    body: &[u8],
    requested_model: &str,
    created: u64,
) -> Result<Vec<u8>> {
    let doc = parse_object(body)?;
    let Some(blocks) = field(&doc, "content").and_then(Value::as_array) else {
        return Err(TranslateError::new("content", "must be an array of blocks"));
    };
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let path = format!("content[{j}]");
        match kind(b) {
            Some("text") => {
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default())
            }
            Some("thinking") => {
                reasoning.push_str(
                    b.get("thinking")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
            }
            Some("tool_use") => {
                let Some(name) = b.get("name").and_then(Value::as_str) else {
                    return Err(TranslateError::new(
                        format!("{path}.name"),
                        "must be a string",
                    ));
                };
                let id = b.get("id").and_then(Value::as_str).unwrap_or_default();
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                let arguments = serde_json::to_string(&input)
                    .map_err(|e| TranslateError::new(format!("{path}.input"), e.to_string()))?;
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }));
            }
            _ => {}
        }
    }
    let content = match (text.is_empty(), calls.is_empty()) {
        (true, false) => Value::Null,
        _ => text.into(),
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    let usage = field(&doc, "usage")
        .and_then(Tokens::from_messages)
        .unwrap_or_default();
    let id = field(&doc, "id")
        .and_then(Value::as_str)
        .unwrap_or(FALLBACK_COMPLETION_ID);
    let stop = field(&doc, "stop_reason").and_then(Value::as_str);
    to_bytes(
        &json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": requested_model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": vocab::finish_reason(stop),
            }],
            "usage": usage.to_chat(),
        }),
        body.len(),
    )
}

// ---------------------------------------------------------------------------------------
// Error bodies

/// What an upstream error body says, read from any of the shapes servers use.
struct Upstream {
    message: String,
    /// OpenAI `error.code` (string or number).
    code: Option<String>,
    /// `error.type`.
    kind: Option<String>,
    /// The body is Anthropic's envelope (`{"type":"error","error":{...}}`), so `kind` is an
    /// Anthropic error type. OpenAI uses some of the same names for other statuses
    /// (`invalid_request_error` on a 401), so the names alone do not tell.
    anthropic: bool,
}

fn read_error(status: u16, body: &[u8]) -> Upstream {
    let generic = || format!("upstream answered HTTP {status}");
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            generic()
        } else {
            text.chars().take(MAX_EXCERPT_CHARS).collect()
        };
        return Upstream {
            message,
            code: None,
            kind: None,
            anthropic: false,
        };
    };
    let as_text = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    // OpenAI and Anthropic nest under `error`; vLLM puts `message` at the top; FastAPI
    // servers answer `{"detail": ...}`.
    let error = doc.get("error");
    let message = as_text(error.and_then(|e| e.get("message")))
        .or_else(|| as_text(error))
        .or_else(|| as_text(doc.get("message")))
        .or_else(|| as_text(doc.get("detail")))
        .unwrap_or_else(generic);
    let code = as_text(error.and_then(|e| e.get("code")));
    let kind = as_text(error.and_then(|e| e.get("type")));
    Upstream {
        message,
        code,
        kind,
        anthropic: doc.get("type").and_then(Value::as_str) == Some("error"),
    }
}

/// An upstream error (OpenAI-shaped, or anything else) as an Anthropic error body for
/// HTTP `status`. Never fails.
pub fn error_to_messages(status: u16, body: &[u8]) -> Vec<u8> {
    let up = read_error(status, body);
    let anthropic_types = [
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "billing_error",
        "timeout_error",
    ];
    // An upstream that already speaks Anthropic's error vocabulary keeps its type.
    let kind = up
        .kind
        .as_deref()
        .filter(|_| up.anthropic)
        .and_then(|k| anthropic_types.iter().find(|t| **t == k).copied())
        .unwrap_or_else(|| vocab::anthropic_error_type(status));
    let too_long = up.code.as_deref() == Some("context_length_exceeded")
        || up.message.contains("maximum context length");
    let message = if too_long {
        format!("prompt is too long: {}", up.message)
    } else if let Some(code) = up.code {
        format!("{code}: {}", up.message)
    } else {
        up.message
    };
    let doc = json!({"type": "error", "error": {"type": kind, "message": message}});
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// An upstream error (Anthropic-shaped, or anything else) as an OpenAI error body for HTTP
/// `status`. Never fails.
pub fn error_to_chat(status: u16, body: &[u8]) -> Vec<u8> {
    let up = read_error(status, body);
    let too_long = up
        .message
        .to_ascii_lowercase()
        .contains("prompt is too long");
    let code = if too_long {
        Some("context_length_exceeded".to_owned())
    } else {
        up.kind.or(up.code)
    };
    let doc = json!({"error": {
        "message": up.message,
        "type": vocab::openai_error_type(status),
        "param": null,
        "code": code,
    }});
    serde_json::to_vec(&doc).unwrap_or_default()
}
