//! The vocabulary both directions must agree on, kept in one place so a whole answer and its
//! streamed form always say the same thing: stop reasons, token usage, error types by status.
//!
//! Usage is the one subtle mapping: Anthropic's `input_tokens` counts only the uncached part
//! of the prompt (cache reads and cache writes are reported beside it), while OpenAI's
//! `prompt_tokens` counts the whole prompt, cached tokens included, and reports the cached
//! part inside it as `prompt_tokens_details.cached_tokens`. OpenAI reports no cache writes, so
//! they fold into `input_tokens` coming back.

use serde::Serialize;
use serde_json::{Value, json};

use super::count_of;
use super::node::Node;

/// An Anthropic `stop_reason` for an OpenAI `finish_reason`.
///
/// `stop` carries no record of which stop sequence matched, so it is `end_turn` (with
/// `stop_sequence: null`); `content_filter` is `refusal`, Anthropic's name for an answer the
/// provider's safety layer cut. A `stop` or a missing reason beside tool calls is
/// `tool_use`: some servers (older Ollama, vLLM) report `stop` when the model called tools,
/// and an Anthropic client only runs tools on `tool_use`. Anything unknown is `end_turn`.
pub(crate) fn stop_reason(finish_reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if has_tool_calls => "tool_use",
        _ => "end_turn",
    }
}

/// An OpenAI `finish_reason` for an Anthropic `stop_reason`.
///
/// `stop_sequence` is `stop` (OpenAI uses one reason for both); `refusal` is
/// `content_filter`; `model_context_window_exceeded` is `length` (the answer was cut);
/// `pause_turn` (a server tool's long turn, never asked for by a translated request) and
/// anything unknown are `stop`.
pub(crate) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Token usage in Anthropic's terms, the finer of the two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tokens {
    /// Prompt tokens read neither from nor into the cache.
    pub input: u64,
    /// Prompt tokens read from the cache.
    pub cache_read: u64,
    /// Prompt tokens written to the cache.
    pub cache_creation: u64,
    /// Generated tokens.
    pub output: u64,
}

impl Tokens {
    /// From an OpenAI `usage` object; `None` when it is not one. Its cached part is
    /// `prompt_tokens_details.cached_tokens`, or DeepSeek's `prompt_cache_hit_tokens`.
    pub fn from_chat(usage: &Node) -> Option<Tokens> {
        let usage = usage.as_object()?;
        let count = |k: &str| usage.get(k).and_then(Node::count);
        let prompt = count("prompt_tokens");
        let completion = count("completion_tokens");
        if prompt.is_none() && completion.is_none() {
            return None;
        }
        let prompt = prompt.unwrap_or(0);
        let cached = usage
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Node::count)
            .or_else(|| count("prompt_cache_hit_tokens"))
            .unwrap_or(0)
            .min(prompt);
        Some(Tokens {
            input: prompt - cached,
            cache_read: cached,
            cache_creation: 0,
            output: completion.unwrap_or(0),
        })
    }

    /// Updates from an Anthropic `usage` object, field by field: `message_delta` repeats
    /// only some of what `message_start` said, and a field it leaves out keeps its value.
    /// `get` reads a count of that object by name (from a `Value` or a `Node` alike).
    pub fn merge_messages(&mut self, get: impl Fn(&str) -> Option<u64>) {
        if let Some(n) = get("input_tokens") {
            self.input = n;
        }
        if let Some(n) = get("cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = get("cache_creation_input_tokens") {
            self.cache_creation = n;
        }
        if let Some(n) = get("output_tokens") {
            self.output = n;
        }
    }

    /// From an Anthropic `usage` object; `None` when it is not one.
    pub fn from_messages(usage: &Value) -> Option<Tokens> {
        usage.as_object()?;
        let mut t = Tokens::default();
        t.merge_messages(|k| usage.get(k).and_then(count_of));
        Some(t)
    }

    /// The whole prompt, cached parts included (OpenAI's `prompt_tokens`).
    pub fn prompt(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_creation)
    }

    /// As an OpenAI `usage` object.
    pub fn to_chat(self) -> Value {
        let prompt = self.prompt();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }

    /// As an Anthropic `usage` object.
    pub fn to_messages(self) -> Value {
        json!(self.messages_usage())
    }

    /// As an Anthropic `usage` object, to serialize as it stands.
    pub fn messages_usage(self) -> MessagesUsage {
        MessagesUsage {
            cache_creation_input_tokens: self.cache_creation,
            cache_read_input_tokens: self.cache_read,
            input_tokens: self.input,
            output_tokens: self.output,
        }
    }
}

/// An Anthropic `usage` object (keys in the order a `Value` map writes them).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct MessagesUsage {
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    input_tokens: u64,
    output_tokens: u64,
}

/// An id for a tool call whose upstream gave none: unique within the answer, and made of the
/// characters Anthropic allows in ids (`[A-Za-z0-9_-]`) so the call can be answered later.
pub(crate) fn fallback_tool_id(message_id: &str, k: u64) -> String {
    let base: String = message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect();
    format!("toolu_{base}_{k}")
}

/// The Anthropic error `type` for an HTTP status (contract §5). Statuses the table does not
/// name fall back by class: other 4xx are the client's (`invalid_request_error`), anything
/// else the provider's (`api_error`).
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The OpenAI error `type` for an HTTP status, as OpenAI itself names them.
pub(crate) fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_are_inside_prompt_tokens_but_beside_input_tokens() {
        let t = Tokens::from_chat(&Node::from(json!({
            "prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020,
            "prompt_tokens_details": {"cached_tokens": 800}
        })))
        .unwrap_or_default();
        assert_eq!(
            t,
            Tokens {
                input: 200,
                cache_read: 800,
                cache_creation: 0,
                output: 20
            }
        );
        let back = t.to_chat();
        assert_eq!(back["prompt_tokens"], 1000);
        assert_eq!(back["prompt_tokens_details"]["cached_tokens"], 800);
        assert_eq!(back["total_tokens"], 1020);
    }

    #[test]
    fn cached_tokens_above_the_prompt_are_clamped() {
        let t = Tokens::from_chat(&Node::from(json!({
            "prompt_tokens": 5, "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 9}
        })))
        .unwrap_or_default();
        assert_eq!((t.input, t.cache_read), (0, 5));
    }

    #[test]
    fn huge_counts_saturate() {
        let t = Tokens {
            input: u64::MAX,
            cache_read: 5,
            cache_creation: 5,
            output: u64::MAX,
        };
        assert_eq!(t.prompt(), u64::MAX);
        assert_eq!(t.to_chat()["total_tokens"], u64::MAX);
    }

    #[test]
    fn error_types_follow_the_contract_table() {
        let table = [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (405, "invalid_request_error"),
            (413, "request_too_large"),
            (426, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "api_error"),
            (529, "overloaded_error"),
        ];
        for (status, t) in table {
            assert_eq!(anthropic_error_type(status), t, "{status}");
        }
    }
}
