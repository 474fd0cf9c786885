//! Translation between the OpenAI Chat Completions API and the Anthropic Messages API
//! (contract §10): requests, answers, upstream error bodies and SSE streams, both ways, plus
//! the token estimate behind `/v1/messages/count_tokens` for targets that cannot count.
//!
//! Invariants: every function here is pure — bytes in, bytes out, no I/O, no clock (a
//! `created` timestamp is passed in), no global state — and never panics, whatever the
//! input: outside data is only read through `get`/`as_*` (of a `Value` or a borrowing
//! `Node`), numbers are read checked and added saturating, and every
//! buffer a stream keeps is bounded ([`MAX_SSE_LINE`]).
//!
//! What has no counterpart on the other side is dropped when it only steers the provider
//! (`cache_control`, `top_k`, `seed`, thinking signatures, …) and refused with a
//! [`TranslateError`] when dropping it would change what the client gets (an unknown content
//! block, `n > 1`, `logprobs`, JSON output modes going to Anthropic, server tools, …). Each
//! such choice is written down where it is made, in [`request`] and [`response`].
//!
//! # Layout
//!
//! - [`request`]: request bodies, both ways.
//! - [`response`]: whole answers and upstream error bodies, both ways.
//! - [`stream`]: the two SSE state machines, fed arbitrary byte chunks.
//! - [`count`]: the deterministic input-token estimate.
//! - `node`: a JSON document borrowing from its source, for the translations that read one.
//! - `sse`: the SSE reader and frame writers the streams share.
//! - `vocab`: what both directions must agree on: stop reasons, usage, error types.

pub mod count;
mod node;
pub mod request;
pub mod response;
mod sse;
pub mod stream;
mod vocab;

use std::fmt;

use serde_json::{Map, Value};

pub use count::estimate_input_tokens;
pub use request::{DEFAULT_MAX_TOKENS, chat_to_messages, messages_to_chat};
pub use response::{
    chat_to_messages_response, error_to_chat, error_to_messages, messages_to_chat_response,
};
pub use sse::MAX_SSE_LINE;
pub use stream::{ChatToMessagesStream, MessagesToChatStream, StreamState};
pub use vocab::anthropic_error_type;

/// A body that cannot be translated; the proxy answers it 400 `invalid_request` (requests)
/// or treats it as a failed upstream answer (answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    /// Where in the body, as a JSON path: `messages[2].content[0]`, `tool_choice.type`, or
    /// `body` for the document as a whole.
    pub field: String,
    /// What is wrong there, as the end of a sentence that starts with the field.
    pub message: String,
}

impl TranslateError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for TranslateError {}

/// Parses a body that must be a JSON object.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, TranslateError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(TranslateError::new("body", "must be a JSON object")),
        Err(e) => Err(TranslateError::new(
            "body",
            format!("is not valid JSON ({e})"),
        )),
    }
}

/// Parses a body that must be a JSON object, as a borrowing [`node::Fields`]: the same
/// errors as [`parse_object`].
fn parse_fields(body: &[u8]) -> Result<node::Fields<'_>, TranslateError> {
    match serde_json::from_slice::<node::Node>(body) {
        Ok(node::Node::Obj(fields)) => Ok(fields),
        Ok(_) => Err(TranslateError::new("body", "must be a JSON object")),
        Err(e) => Err(TranslateError::new(
            "body",
            format!("is not valid JSON ({e})"),
        )),
    }
}

/// Serializes a document we built from a body of `len` bytes. A translation is about as
/// long as its input, so the buffer is sized once; when it came out much shorter (an answer
/// with large fields left behind), the spare room is given back, since the bytes may be held
/// for a whole stream or for a retry. Cannot fail for the documents built here (their keys
/// are strings), but a failure is still answered as an error rather than a panic.
fn to_bytes(doc: &impl serde::Serialize, len: usize) -> Result<Vec<u8>, TranslateError> {
    let mut out = Vec::with_capacity(len.saturating_add(128));
    serde_json::to_writer(&mut out, doc)
        .map_err(|e| TranslateError::new("body", format!("could not be serialized ({e})")))?;
    if out.capacity() > 2 * out.len() + 4096 {
        out.shrink_to_fit();
    }
    Ok(out)
}

/// A field of an object, with `null` read as absent: SDKs send `"temperature": null` to mean
/// "not set".
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// The `type` of a block or part.
fn kind(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

/// A non-negative integer, also when written as a whole float (`12.0`).
fn count_of(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    whole_count(v.as_f64()?)
}

/// A float that is a whole non-negative count, as the count.
fn whole_count(f: f64) -> Option<u64> {
    // The upper bound keeps the cast exact; beyond it no token count is real anyway.
    (f.fract() == 0.0 && (0.0..9.0e15).contains(&f)).then_some(f as u64)
}
