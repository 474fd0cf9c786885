//! The commit point of a stream (contract §6): a stream commits at its first *content*
//! event, not at its headers. Until then the proxy holds the headers and the preamble
//! (OpenAI's role-only chunk, Anthropic's `message_start` and `ping`, Responses'
//! `response.created`, SSE comments), so an upstream that answers 200 and then stays silent,
//! or sends an error event before any content, has failed before the commit point and can
//! still be retried or failed over without the client seeing the false start.
//!
//! [`FirstContent`] is a pure scanner over the stream's bytes, fed in whatever pieces the
//! network delivers (an event may be split anywhere, lines may end in `\n` or `\r\n`); it
//! reports the first event that carries content or an error. Content is, per API: chat —
//! non-empty `delta.content`, `delta.tool_calls`, a reasoning delta or a `finish_reason`;
//! completions — non-empty `text` or a `finish_reason`; Responses — an event whose type ends
//! in `.delta`, or `response.completed`; Messages — `content_block_delta` or
//! `message_delta`; any other stream — its first event. The end of a stream (`[DONE]`,
//! `message_stop`) commits too: what came is the whole answer.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Longest partial event kept while waiting for its end; longer ones are judged as they are
/// (a real preamble event is a few hundred bytes).
const MAX_PENDING: usize = 1 << 20;

/// What the bytes so far show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Only preamble so far.
    Nothing,
    /// An event with content (or the stream's end): commit.
    Content,
    /// An error event before any content, with its message.
    Error(String),
}

/// Scans a stream for its first content event.
#[derive(Debug, Default)]
pub struct FirstContent {
    /// The bytes of the event not yet ended by a blank line.
    pending: Vec<u8>,
}

impl FirstContent {
    /// Feeds the next bytes of the stream; returns what the complete events so far show.
    pub fn feed(&mut self, chunk: &[u8]) -> Seen {
        self.pending.extend_from_slice(chunk);
        loop {
            let Some((end, sep)) = event_end(&self.pending) else {
                if self.pending.len() > MAX_PENDING {
                    let event = std::mem::take(&mut self.pending);
                    return judge_event(&event);
                }
                return Seen::Nothing;
            };
            let event: Vec<u8> = self.pending.drain(..end + sep).collect();
            match judge_event(&event[..end]) {
                Seen::Nothing => {}
                seen => return seen,
            }
        }
    }
}

/// Where the first complete event ends: (its length, the separator's length).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

/// Judges one SSE event (without its terminating blank line).
fn judge_event(event: &[u8]) -> Seen {
    let text = String::from_utf8_lossy(event);
    let mut name: Option<&str> = None;
    let mut data = String::new();
    let mut has_data = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("data:") {
            if has_data {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
            has_data = true;
        }
    }
    if name == Some("error") {
        return Seen::Error(error_message(&data));
    }
    if !has_data {
        // A comment or an empty event: preamble.
        return Seen::Nothing;
    }
    let data = data.trim();
    if data == "[DONE]" {
        return Seen::Content;
    }
    // Read only the fields that decide, borrowed and unparsed (`RawValue`): no tree of the
    // whole event is built. An event that is not a JSON object is some other stream: its
    // first event commits it.
    // (A derived struct would also read a JSON array, field by position: objects only.)
    let parsed = data
        .starts_with('{')
        .then(|| serde_json::from_str::<EventIn<'_>>(data).ok())
        .flatten();
    let Some(e) = parsed else {
        return Seen::Content;
    };
    if e.error.is_some() {
        return Seen::Error(error_message(data));
    }
    let typ = e
        .r#type
        .and_then(|t| serde_json::from_str::<std::borrow::Cow<'_, str>>(t.get()).ok());
    if let Some(t) = typ.as_deref().or(name) {
        return match t {
            "error" | "response.failed" | "response.error" => Seen::Error(error_message(data)),
            "content_block_delta" | "message_delta" | "response.completed" | "message_stop" => {
                Seen::Content
            }
            t if t.ends_with(".delta") => Seen::Content,
            "message_start" | "ping" | "content_block_start" | "content_block_stop" => {
                Seen::Nothing
            }
            t if t.starts_with("response.") => Seen::Nothing,
            _ => Seen::Content,
        };
    }
    if let Some(choices) = e.choices {
        let content = choices.iter().any(|c| {
            let d = c.delta.as_ref();
            c.finish_reason.is_some()
                || nonempty_str(c.text)
                || d.is_some_and(|d| {
                    nonempty_str(d.content)
                        || nonempty_array(d.tool_calls)
                        || nonempty_str(d.reasoning_content)
                        || nonempty_str(d.reasoning)
                })
        });
        return if content {
            Seen::Content
        } else {
            Seen::Nothing
        };
    }
    Seen::Content
}

/// The fields of an event that decide whether it carries content. `null` reads as absent.
#[derive(Deserialize)]
struct EventIn<'a> {
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
    #[serde(default, borrow)]
    r#type: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "choices")]
    choices: Option<Vec<ChoiceIn<'a>>>,
}

#[derive(Deserialize, Default)]
struct ChoiceIn<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaIn<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<&'a RawValue>,
    #[serde(default, borrow)]
    text: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct DeltaIn<'a> {
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_calls: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reasoning: Option<&'a RawValue>,
}

/// `choices` as a list of objects; anything else (not a list, odd entries) reads as
/// entries without content, as a lenient reader of the tree would see them.
fn choices<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<ChoiceIn<'de>>>, D::Error> {
    let raw: Option<&'de RawValue> = Option::deserialize(d)?;
    let Some(raw) = raw else { return Ok(None) };
    let Ok(items) = serde_json::from_str::<Vec<&'de RawValue>>(raw.get()) else {
        return Ok(None);
    };
    Ok(Some(
        items
            .into_iter()
            .map(|i| {
                // Objects only: a derived struct would read an array by position.
                i.get()
                    .starts_with('{')
                    .then(|| serde_json::from_str::<ChoiceIn<'de>>(i.get()).ok())
                    .flatten()
                    .unwrap_or_default()
            })
            .collect(),
    ))
}

/// A JSON string with at least one character.
fn nonempty_str(v: Option<&RawValue>) -> bool {
    v.is_some_and(|v| v.get().starts_with('"') && v.get().len() > 2)
}

/// A JSON array with at least one element.
fn nonempty_array(v: Option<&RawValue>) -> bool {
    v.is_some_and(|v| {
        v.get()
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(|inner| !inner.trim().is_empty())
    })
}

fn error_message(data: &str) -> String {
    serde_json::from_str::<Value>(data.trim())
        .map(|v| error_message_of(&v))
        .unwrap_or_else(|_| data.chars().take(512).collect())
}

fn error_message_of(v: &Value) -> String {
    let e = v.get("error").unwrap_or(v);
    let m = e
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| e.as_str())
        .unwrap_or("an error event");
    m.chars().take(512).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(parts: &[&str]) -> Seen {
        let mut f = FirstContent::default();
        for p in parts {
            match f.feed(p.as_bytes()) {
                Seen::Nothing => {}
                s => return s,
            }
        }
        Seen::Nothing
    }

    const ROLE: &str = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
    const TEXT: &str = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";

    #[test]
    fn odd_shapes_are_read_leniently() {
        let ev = |d: &str| format!("data: {d}\n\n");
        // Not content: empty or non-string content, an empty tool list, a null error.
        for d in [
            r#"{"choices":[{"delta":{"content":["x"]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[ ]}}]}"#,
            r#"{"error":null,"choices":[{"delta":{"content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":"odd"}, 7]}"#,
            r#"{"choices":[[null, "stop", "text"]]}"#,
        ] {
            assert_eq!(scan(&[&ev(d)]), Seen::Nothing, "{d}");
        }
        // Content: escapes in text, a null type beside content, JSON that is no object or
        // whose `choices` is no list (some other stream: its first event commits it).
        for d in [
            r#"{"choices":"none"}"#,
            r#"{"choices":[{"delta":{"content":"é"}}]}"#,
            r#"{"type":null,"choices":[{"text":"x"}]}"#,
            "5",
            "[1]",
        ] {
            assert_eq!(scan(&[&ev(d)]), Seen::Content, "{d}");
        }
        assert_eq!(
            scan(&[&ev(r#"{"error":{"message":"boom"}}"#)]),
            Seen::Error("boom".into())
        );
    }

    #[test]
    fn chat_preamble_then_content() {
        assert_eq!(scan(&[ROLE]), Seen::Nothing);
        assert_eq!(scan(&[ROLE, ": keep-alive\n\n", TEXT]), Seen::Content);
        let tool = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n";
        assert_eq!(scan(&[ROLE, tool]), Seen::Content);
        let finish = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(scan(&[ROLE, finish]), Seen::Content);
        let reasoning = "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n";
        assert_eq!(scan(&[reasoning]), Seen::Content);
        assert_eq!(scan(&["data: [DONE]\n\n"]), Seen::Content);
    }

    #[test]
    fn split_anywhere_and_crlf() {
        let all = format!("{ROLE}{TEXT}").replace("\n\n", "\r\n\r\n");
        for cut in 0..all.len() {
            let (a, b) = all.split_at(cut);
            assert_eq!(scan(&[a, b]), Seen::Content, "cut at {cut}");
        }
        // The role chunk alone, however split, is not content.
        for cut in 0..ROLE.len() {
            let (a, b) = ROLE.split_at(cut);
            assert_eq!(scan(&[a, b]), Seen::Nothing, "cut at {cut}");
        }
    }

    #[test]
    fn error_events_before_content() {
        let openai = "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        assert_eq!(scan(&[ROLE, openai]), Seen::Error("overloaded".into()));
        let anthropic = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(scan(&[anthropic]), Seen::Error("Overloaded".into()));
    }

    #[test]
    fn messages_and_responses_grammar() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n";
        let ping = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
        let block = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
        let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
        assert_eq!(scan(&[start, ping, block]), Seen::Nothing);
        assert_eq!(scan(&[start, ping, block, delta]), Seen::Content);
        let created = "event: response.created\ndata: {\"type\":\"response.created\"}\n\n";
        let added = "data: {\"type\":\"response.output_item.added\"}\n\n";
        let text = "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n";
        assert_eq!(scan(&[created, added]), Seen::Nothing);
        assert_eq!(scan(&[created, added, text]), Seen::Content);
        let failed = "data: {\"type\":\"response.failed\",\"response\":{}}\n\n";
        assert!(matches!(scan(&[created, failed]), Seen::Error(_)));
    }

    #[test]
    fn any_other_stream_commits_at_its_first_event() {
        assert_eq!(scan(&["data: hello\n\n"]), Seen::Content);
        assert_eq!(scan(&["data: {\"foo\":1}\n\n"]), Seen::Content);
        assert_eq!(scan(&[": comment only\n\n"]), Seen::Nothing);
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        let odd: [&[u8]; 5] = [
            b"\xff\xfe\n\n",
            b"data:\n\n",
            b"\n\n\n\n",
            b"event:\n\n",
            b"data: {\"choices\":7}\n\n",
        ];
        for o in odd {
            let _ = FirstContent::default().feed(o);
        }
    }
}
