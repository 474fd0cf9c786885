//! The input-token estimate behind `/v1/messages/count_tokens` for targets that cannot count
//! (contract §10: answered by the gateway itself, marked `x-gateway-estimate: true`).
//!
//! Invariant: deterministic — the same body gives the same number, on any machine — and
//! cheap: one walk over the parsed body, no tokenizer. The estimate is what a reader can
//! check by hand:
//!
//! - text (system, text blocks, tool results, tool definitions, tool call inputs as JSON):
//!   one token per [`BYTES_PER_TOKEN`] UTF-8 bytes, rounded up over the whole body. Bytes,
//!   not characters, so CJK text (about one token per character) is not undercounted
//!   fourfold;
//! - each message: [`MESSAGE_OVERHEAD`] tokens for its role and separators;
//! - each image: [`IMAGE_TOKENS`], Anthropic's figure for a full-size image;
//! - each base64 PDF: one token per [`PDF_BYTES_PER_TOKEN`] decoded bytes, at least
//!   [`IMAGE_TOKENS`] (a page costs about as much as an image, and pages cannot be counted
//!   without parsing the file);
//! - tools: [`TOOLS_OVERHEAD`] once when there are any, the system prompt Anthropic adds for
//!   tool use;
//! - thinking blocks count nothing: Anthropic strips them from earlier turns.

use serde_json::Value;

use super::{TranslateError, field, kind, parse_object};

/// UTF-8 bytes per token of text.
pub const BYTES_PER_TOKEN: u64 = 4;
/// Tokens per message for its role and separators.
pub const MESSAGE_OVERHEAD: u64 = 4;
/// Tokens per image.
pub const IMAGE_TOKENS: u64 = 1_600;
/// Decoded PDF bytes per token.
pub const PDF_BYTES_PER_TOKEN: u64 = 32;
/// Tokens added once when the request defines tools.
pub const TOOLS_OVERHEAD: u64 = 346;

/// An estimate of the input tokens of an Anthropic `/v1/messages` request body.
pub fn estimate_input_tokens(messages_body: &[u8]) -> Result<u64, TranslateError> {
    let req = parse_object(messages_body)?;
    let Some(messages) = field(&req, "messages").and_then(Value::as_array) else {
        return Err(TranslateError::new(
            "messages",
            "must be an array of messages",
        ));
    };
    let mut tally = Tally::default();
    if let Some(system) = field(&req, "system") {
        tally.content(system);
    }
    for m in messages {
        tally.fixed = tally.fixed.saturating_add(MESSAGE_OVERHEAD);
        if let Some(content) = m.get("content") {
            tally.content(content);
        }
    }
    if let Some(tools) = field(&req, "tools").and_then(Value::as_array)
        && !tools.is_empty()
    {
        tally.fixed = tally.fixed.saturating_add(TOOLS_OVERHEAD);
        for t in tools {
            tally.json(t);
        }
    }
    Ok(tally
        .bytes
        .div_ceil(BYTES_PER_TOKEN)
        .saturating_add(tally.fixed))
}

#[derive(Default)]
struct Tally {
    /// Bytes of text.
    bytes: u64,
    /// Tokens counted directly (overheads, images, PDFs).
    fixed: u64,
}

impl Tally {
    fn text(&mut self, s: &str) {
        self.bytes = self.bytes.saturating_add(s.len() as u64);
    }

    /// The length of a value written as JSON, without building the string.
    fn json(&mut self, v: &Value) {
        let mut counter = Counter(0);
        // Counting into a sink cannot fail; a failure would only undercount.
        let _ = serde_json::to_writer(&mut counter, v);
        self.bytes = self.bytes.saturating_add(counter.0);
    }

    /// A string, or an array of blocks (of a message, a system prompt, a tool result).
    fn content(&mut self, content: &Value) {
        match content {
            Value::String(s) => self.text(s),
            Value::Array(blocks) => blocks.iter().for_each(|b| self.block(b)),
            _ => {}
        }
    }

    fn block(&mut self, b: &Value) {
        let str_of = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default();
        match kind(b) {
            Some("text") => self.text(str_of("text")),
            Some("image") => self.fixed = self.fixed.saturating_add(IMAGE_TOKENS),
            Some("document") => self.document(b),
            Some("tool_use") => {
                self.text(str_of("name"));
                if let Some(input) = b.get("input") {
                    self.json(input);
                }
            }
            Some("tool_result") => {
                if let Some(c) = b.get("content") {
                    // Tool results nest blocks only one level deep in valid requests, and
                    // serde_json's recursion limit bounds this in any case.
                    self.content(c);
                }
            }
            Some("thinking" | "redacted_thinking") => {}
            _ => self.json(b),
        }
    }

    fn document(&mut self, b: &Value) {
        let source = b.get("source").unwrap_or(&Value::Null);
        match kind(source) {
            Some("base64") => {
                let data = source
                    .get("data")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let decoded = (data.len() as u64).saturating_mul(3) / 4;
                let tokens = (decoded / PDF_BYTES_PER_TOKEN).max(IMAGE_TOKENS);
                self.fixed = self.fixed.saturating_add(tokens);
            }
            Some("text") => {
                self.text(
                    source
                        .get("data")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
            }
            Some("content") => {
                if let Some(c) = source.get("content") {
                    self.content(c);
                }
            }
            _ => self.json(source),
        }
    }
}

/// An `io::Write` sink that only counts.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len() as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_counts_a_token_per_four_bytes_plus_message_overhead() {
        let body = br#"{"model":"m","system":"12345678","messages":[
            {"role":"user","content":"abcd"},
            {"role":"assistant","content":[{"type":"text","text":"efgh"}]}
        ]}"#;
        // 16 bytes = 4 tokens, 2 messages x 4.
        assert_eq!(estimate_input_tokens(body), Ok(12));
    }

    #[test]
    fn images_tools_and_documents() {
        let body = br#"{"messages":[{"role":"user","content":[
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},
            {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"AAAA"}}
        ]}],"tools":[{"name":"a","input_schema":{}}]}"#;
        let tool_bytes = br#"{"input_schema":{},"name":"a"}"#.len() as u64;
        let want = MESSAGE_OVERHEAD + 2 * IMAGE_TOKENS + TOOLS_OVERHEAD + tool_bytes.div_ceil(4);
        assert_eq!(estimate_input_tokens(body), Ok(want));
    }

    #[test]
    fn thinking_is_not_counted_and_cjk_is_counted_by_bytes() {
        let body = r#"{"messages":[{"role":"assistant","content":[
            {"type":"thinking","thinking":"a long chain of thought","signature":"x"},
            {"type":"text","text":"日本語"}
        ]}]}"#;
        // 9 bytes -> 3 tokens.
        assert_eq!(
            estimate_input_tokens(body.as_bytes()),
            Ok(3 + MESSAGE_OVERHEAD)
        );
    }

    #[test]
    fn refuses_what_is_not_a_messages_request() {
        assert_eq!(
            estimate_input_tokens(b"[]").map_err(|e| e.field),
            Err("body".to_owned())
        );
        assert_eq!(
            estimate_input_tokens(b"{}").map_err(|e| e.to_string()),
            Err("messages: must be an array of messages".to_owned())
        );
    }
}
