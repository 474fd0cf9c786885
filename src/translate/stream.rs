//! The two stream translators: state machines fed the upstream's SSE body in whatever byte
//! chunks it arrives, each returning the bytes to send downstream so far.
//!
//! - [`ChatToMessagesStream`]: OpenAI `chat.completion.chunk`s (and `data: [DONE]`) as
//!   Anthropic events: `message_start`, then per content block `content_block_start`,
//!   `content_block_delta`s and `content_block_stop` (blocks open and close in order; a
//!   switch between reasoning, text and a tool call, or a new tool call index, opens the next
//!   block), then `message_delta` and `message_stop`.
//! - [`MessagesToChatStream`]: Anthropic events as `chat.completion.chunk`s: a role chunk,
//!   content / reasoning / tool call deltas, a chunk with `finish_reason`, a usage chunk
//!   (`choices: []`) and `data: [DONE]`.
//!
//! Invariants: the output depends only on the bytes fed, never on how they were split; a
//! translator emits its target's end of stream (`message_stop`, `[DONE]`) only when the
//! upstream finished, and otherwise at most one error event, after which it ignores all
//! input; what it buffers is bounded by [`super::MAX_SSE_LINE`].
//!
//! Choices where the contract is silent:
//! - OpenAI sends usage in a last chunk with empty `choices` (when `include_usage` was set,
//!   which [`super::messages_to_chat`] always does for streams), after the `finish_reason`:
//!   `message_delta` waits for that chunk, or for `[DONE]`, or for the end of the body. A
//!   stream that ends after a `finish_reason` but without `[DONE]` is complete; one that ends
//!   before it (and before `[DONE]`) is cut. `[DONE]` without a `finish_reason` is a complete
//!   answer that stopped by itself (`end_turn`, or `tool_use` after tool calls).
//! - A tool call delta without `index` continues the open call when its id is absent or the
//!   same, and starts the next call otherwise. A call whose first delta has no id gets
//!   `toolu_<message id>_<index>`. A delta for a call whose block was already closed (another
//!   block began since) cannot be expressed in Anthropic's grammar and fails the stream.
//! - Reasoning deltas (`reasoning_content`, or `reasoning`) become `thinking` blocks with an
//!   empty signature and no `signature_delta`; `refusal` deltas become text.
//! - Only choice 0 is read (a translated request asks for one).
//! - The chat stream's `id` is the Anthropic message id, unchanged; `model` is the model the
//!   client asked for. Anthropic `ping`s, `signature_delta`s, `citations_delta`s and blocks
//!   with no chat counterpart are dropped. Anthropic's `event: error` becomes OpenAI's in-band
//!   `{"error":{...,"code":"upstream_stream_error"}}` with the error type leading the message.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::node::{Fields, NULL, Node};
use super::response::{FALLBACK_COMPLETION_ID, FALLBACK_MESSAGE_ID, reasoning_of};
use super::sse::{self, Event, Reader};
use super::vocab::{self, Tokens};

/// Where a stream translator stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// The upstream has not finished yet.
    Streaming,
    /// The target's end of stream was emitted.
    Complete,
    /// An error event was emitted; all further input is ignored.
    Failed,
}

/// Code of the error event of a stream that failed upstream (contract §5).
const STREAM_ERROR: &str = "upstream_stream_error";
const CUT: &str = "the upstream closed the stream before it finished";
const TOO_LONG: &str = "the upstream sent an SSE line longer than 16 MiB";

/// The message of an upstream in-band error object, with its type in front when it has one.
fn error_message(error: &Node) -> String {
    let message = error
        .get("message")
        .and_then(Node::as_str)
        .or_else(|| error.as_str())
        .unwrap_or("the upstream reported an error");
    match error.kind() {
        Some(t) if !t.is_empty() => format!("{t}: {message}"),
        _ => message.to_owned(),
    }
}

/// The data of an event, surrounding whitespace trimmed.
fn payload(e: &Event) -> &[u8] {
    e.data.trim_ascii()
}

// ---------------------------------------------------------------------------------------
// OpenAI chunks → Anthropic events

/// The open Anthropic content block.
#[derive(Debug)]
enum Block {
    Text(u64),
    Thinking(u64),
    Tool {
        index: u64,
        /// The OpenAI `tool_calls[].index` it carries.
        call: u64,
        id: String,
    },
}

impl Block {
    fn index(&self) -> u64 {
        match self {
            Block::Text(i) | Block::Thinking(i) | Block::Tool { index: i, .. } => *i,
        }
    }
}

/// Translates an OpenAI chat completion stream into an Anthropic Messages stream.
#[derive(Debug)]
pub struct ChatToMessagesStream {
    model: String,
    reader: Reader,
    state: StreamState,
    /// The message id, once the first chunk gave it.
    id: Option<String>,
    block: Option<Block>,
    next_index: u64,
    /// OpenAI indices of every tool call that had a block, to catch one resumed later.
    calls: BTreeSet<u64>,
    /// The stop reason, once a `finish_reason` arrived.
    stop: Option<&'static str>,
    tokens: Option<Tokens>,
    /// Usage arrived with or after the `finish_reason`: `message_delta` can go.
    final_usage: bool,
    committed: bool,
    /// The upstream body ended; what is left to read is its unterminated tail.
    at_end: bool,
}

impl ChatToMessagesStream {
    /// A translator answering a client that asked for `requested_model`.
    pub fn new(requested_model: &str) -> Self {
        Self {
            model: requested_model.to_owned(),
            reader: Reader::default(),
            state: StreamState::Streaming,
            id: None,
            block: None,
            next_index: 0,
            calls: BTreeSet::new(),
            stop: None,
            tokens: None,
            final_usage: false,
            committed: false,
            at_end: false,
        }
    }

    /// Reads the next chunk of the upstream body; returns the bytes to send downstream.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.state != StreamState::Streaming {
            return out;
        }
        let mut events = Vec::new();
        let read = self.reader.feed(chunk, &mut events);
        self.on_events(events, &mut out);
        if read.is_err() {
            self.fail_into(&mut out, STREAM_ERROR, TOO_LONG);
        }
        out
    }

    /// The upstream body ended: the closing events of a finished answer, or the error event
    /// of a cut one (never `message_stop`).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.state != StreamState::Streaming {
            return out;
        }
        let mut events = Vec::new();
        let read = self.reader.finish(&mut events);
        self.at_end = true;
        self.on_events(events, &mut out);
        if read.is_err() {
            self.fail_into(&mut out, STREAM_ERROR, TOO_LONG);
        }
        if self.state == StreamState::Streaming {
            if self.stop.is_some() {
                self.end(&mut out);
            } else {
                self.fail_into(&mut out, STREAM_ERROR, CUT);
            }
        }
        out
    }

    /// Ends the stream with the contract's error event,
    /// `{"type":"error","error":{"type":"api_error","message":"<code>: <message>"}}`, for a
    /// failure the translator cannot see (reset, idle timeout); nothing if it already ended.
    pub fn fail(&mut self, code: &str, message: &str) -> Vec<u8> {
        let mut out = Vec::new();
        self.fail_into(&mut out, code, message);
        out
    }

    /// Where the stream stands.
    pub fn state(&self) -> StreamState {
        self.state
    }

    /// `(prompt, completion)` tokens reported so far; the prompt includes cached tokens.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.tokens.map(|t| (t.prompt(), t.output))
    }

    /// Whether the output holds a content event yet (`content_block_delta` or
    /// `message_delta`, contract §6): the gateway's commit point.
    pub fn committed(&self) -> bool {
        self.committed
    }

    fn on_events(&mut self, events: Vec<Event>, out: &mut Vec<u8>) {
        for e in events {
            if self.state != StreamState::Streaming {
                break;
            }
            self.on_event(&e, out);
        }
    }

    fn on_event(&mut self, e: &Event, out: &mut Vec<u8>) {
        let data = payload(e);
        if data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            self.start(None, out);
            if self.stop.is_none() {
                self.close_block(out);
                self.stop = Some(vocab::stop_reason(None, !self.calls.is_empty()));
            }
            self.end(out);
            return;
        }
        let Ok(Node::Obj(chunk)) = serde_json::from_slice::<Node>(data) else {
            // At the end, an unterminated tail that does not parse is a chunk cut short:
            // the stream was cut, which `finish` says next.
            if !self.at_end {
                self.fail_into(
                    out,
                    STREAM_ERROR,
                    "the upstream sent a chunk that is not a JSON object",
                );
            }
            return;
        };
        if let Some(error) = chunk.field("error") {
            self.fail_into(out, STREAM_ERROR, &error_message(error));
            return;
        }
        if e.name.as_deref() == Some("error") {
            let chunk = Node::Obj(chunk);
            self.fail_into(out, STREAM_ERROR, &error_message(&chunk));
            return;
        }
        self.start(Some(&chunk), out);
        let choices = chunk
            .field("choices")
            .and_then(Node::as_array)
            .unwrap_or_default();
        for choice in choices {
            if choice.get("index").and_then(Node::count).unwrap_or(0) != 0 || self.stop.is_some() {
                continue;
            }
            if let Some(delta) = choice.get("delta").and_then(Node::as_object) {
                self.on_delta(delta, out);
                if self.state != StreamState::Streaming {
                    return;
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Node::as_str) {
                self.close_block(out);
                self.stop = Some(vocab::stop_reason(Some(reason), !self.calls.is_empty()));
            }
        }
        if let Some(tokens) = chunk.field("usage").and_then(Tokens::from_chat) {
            self.tokens = Some(tokens);
            self.final_usage = self.stop.is_some();
        }
        if self.stop.is_some() && self.final_usage {
            self.end(out);
        }
    }

    fn on_delta(&mut self, delta: &Fields, out: &mut Vec<u8>) {
        if let Some(r) = reasoning_of(delta) {
            if !matches!(self.block, Some(Block::Thinking(_))) {
                let index = self.open_block(
                    out,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                );
                self.block = Some(Block::Thinking(index));
            }
            self.delta(out, json!({"type": "thinking_delta", "thinking": r}));
        }
        for key in ["content", "refusal"] {
            if let Some(text) = delta
                .get(key)
                .and_then(Node::as_str)
                .filter(|t| !t.is_empty())
            {
                if !matches!(self.block, Some(Block::Text(_))) {
                    let index = self.open_block(out, json!({"type": "text", "text": ""}));
                    self.block = Some(Block::Text(index));
                }
                self.delta(out, json!({"type": "text_delta", "text": text}));
            }
        }
        let calls = delta
            .get("tool_calls")
            .and_then(Node::as_array)
            .unwrap_or_default();
        for call in calls {
            self.on_tool_call(call, out);
            if self.state != StreamState::Streaming {
                return;
            }
        }
    }

    fn on_tool_call(&mut self, call: &Node, out: &mut Vec<u8>) {
        let id = call
            .get("id")
            .and_then(Node::as_str)
            .filter(|s| !s.is_empty());
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Node::as_str);
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Node::as_str)
            .unwrap_or_default();
        let open = match &self.block {
            Some(Block::Tool {
                call, id: open_id, ..
            }) => Some((*call, open_id.as_str())),
            _ => None,
        };
        let index = match (call.get("index").and_then(Node::count), open) {
            (Some(i), _) => i,
            (None, Some((open_call, open_id))) if id.is_none_or(|id| id == open_id) => open_call,
            (None, _) => self.calls.last().map_or(0, |i| i.saturating_add(1)),
        };
        if open.is_none_or(|(open_call, _)| open_call != index) {
            if self.calls.contains(&index) {
                let message = format!("tool call {index} resumed after another block began");
                self.fail_into(out, STREAM_ERROR, &message);
                return;
            }
            let id = match id {
                Some(id) => id.to_owned(),
                None => vocab::fallback_tool_id(
                    self.id.as_deref().unwrap_or(FALLBACK_MESSAGE_ID),
                    index,
                ),
            };
            let block = self.open_block(
                out,
                json!({"type": "tool_use", "id": id, "name": name.unwrap_or_default(), "input": {}}),
            );
            self.calls.insert(index);
            self.block = Some(Block::Tool {
                index: block,
                call: index,
                id,
            });
        }
        if !arguments.is_empty() {
            self.delta(
                out,
                json!({"type": "input_json_delta", "partial_json": arguments}),
            );
        }
    }

    /// `message_start`, once, before anything else.
    fn start(&mut self, chunk: Option<&Fields>, out: &mut Vec<u8>) {
        if self.id.is_some() {
            return;
        }
        let id = chunk
            .and_then(|c| c.get("id"))
            .and_then(Node::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(FALLBACK_MESSAGE_ID)
            .to_owned();
        if let Some(t) = chunk
            .and_then(|c| c.get("usage"))
            .and_then(Tokens::from_chat)
        {
            self.tokens = Some(t);
        }
        let usage = Tokens {
            output: 0,
            ..self.tokens.unwrap_or_default()
        };
        let message = json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage.to_messages(),
            },
        });
        sse::write_event(out, "message_start", &message);
        self.id = Some(id);
    }

    /// Closes the open block, if any, and opens the next one; returns its index.
    fn open_block(&mut self, out: &mut Vec<u8>, content_block: Value) -> u64 {
        self.close_block(out);
        let index = self.next_index;
        self.next_index = self.next_index.saturating_add(1);
        let start =
            json!({"type": "content_block_start", "index": index, "content_block": content_block});
        sse::write_event(out, "content_block_start", &start);
        index
    }

    /// A delta to the open block.
    fn delta(&mut self, out: &mut Vec<u8>, delta: Value) {
        let Some(index) = self.block.as_ref().map(Block::index) else {
            return;
        };
        let event = json!({"type": "content_block_delta", "index": index, "delta": delta});
        sse::write_event(out, "content_block_delta", &event);
        self.committed = true;
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(block) = self.block.take() {
            let stop = json!({"type": "content_block_stop", "index": block.index()});
            sse::write_event(out, "content_block_stop", &stop);
        }
    }

    /// `message_delta` and `message_stop`.
    fn end(&mut self, out: &mut Vec<u8>) {
        self.close_block(out);
        let usage = match self.tokens {
            Some(t) => t.to_messages(),
            None => json!({"output_tokens": 0}),
        };
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
            "usage": usage,
        });
        sse::write_event(out, "message_delta", &delta);
        sse::write_event(out, "message_stop", &json!({"type": "message_stop"}));
        self.committed = true;
        self.state = StreamState::Complete;
    }

    fn fail_into(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        if self.state != StreamState::Streaming {
            return;
        }
        let error = json!({
            "type": "error",
            "error": {"type": "api_error", "message": format!("{code}: {message}")},
        });
        sse::write_event(out, "error", &error);
        self.state = StreamState::Failed;
    }
}

// ---------------------------------------------------------------------------------------
// Anthropic events → OpenAI chunks

/// What an Anthropic content block is, seen from the chat side.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Thinking,
    /// A tool call, with its index in `tool_calls`.
    Tool(u64),
    /// No chat counterpart: its deltas are dropped.
    Other,
}

/// Translates an Anthropic Messages stream into an OpenAI chat completion stream.
#[derive(Debug)]
pub struct MessagesToChatStream {
    model: String,
    created: u64,
    usage_chunk: bool,
    reader: Reader,
    state: StreamState,
    id: Option<String>,
    role_sent: bool,
    blocks: BTreeMap<u64, Kind>,
    next_call: u64,
    tokens: Option<Tokens>,
    finish_sent: bool,
    committed: bool,
    /// The upstream body ended; what is left to read is its unterminated tail.
    at_end: bool,
}

impl MessagesToChatStream {
    /// A translator answering a client that asked for `requested_model`; `created` is the
    /// Unix time every chunk carries.
    pub fn new(requested_model: &str, created: u64) -> Self {
        Self {
            model: requested_model.to_owned(),
            created,
            usage_chunk: true,
            reader: Reader::default(),
            state: StreamState::Streaming,
            id: None,
            role_sent: false,
            blocks: BTreeMap::new(),
            next_call: 0,
            tokens: None,
            finish_sent: false,
            committed: false,
            at_end: false,
        }
    }

    /// Whether to end with the usage chunk (`choices: []`), on by default. A client that did
    /// not ask for `stream_options.include_usage` may not expect a chunk without choices.
    pub fn with_usage_chunk(mut self, on: bool) -> Self {
        self.usage_chunk = on;
        self
    }

    /// Reads the next chunk of the upstream body; returns the bytes to send downstream.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.state != StreamState::Streaming {
            return out;
        }
        let mut events = Vec::new();
        let read = self.reader.feed(chunk, &mut events);
        self.on_events(events, &mut out);
        if read.is_err() {
            self.fail_into(&mut out, STREAM_ERROR, TOO_LONG);
        }
        out
    }

    /// The upstream body ended: the closing chunks of a finished answer (one whose
    /// `message_delta` arrived, even without `message_stop`), or the error event of a cut
    /// one (never `[DONE]`).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.state != StreamState::Streaming {
            return out;
        }
        let mut events = Vec::new();
        let read = self.reader.finish(&mut events);
        self.at_end = true;
        self.on_events(events, &mut out);
        if read.is_err() {
            self.fail_into(&mut out, STREAM_ERROR, TOO_LONG);
        }
        if self.state == StreamState::Streaming {
            if self.finish_sent {
                self.end(&mut out);
            } else {
                self.fail_into(&mut out, STREAM_ERROR, CUT);
            }
        }
        out
    }

    /// Ends the stream with OpenAI's in-band error event,
    /// `{"error":{"message","type":"server_error","param":null,"code"}}`, for a failure the
    /// translator cannot see (reset, idle timeout); nothing if it already ended.
    pub fn fail(&mut self, code: &str, message: &str) -> Vec<u8> {
        let mut out = Vec::new();
        self.fail_into(&mut out, code, message);
        out
    }

    /// Where the stream stands.
    pub fn state(&self) -> StreamState {
        self.state
    }

    /// `(prompt, completion)` tokens reported so far; the prompt includes cache reads and
    /// writes, as OpenAI counts it.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.tokens.map(|t| (t.prompt(), t.output))
    }

    /// Whether the output holds a content chunk yet (non-empty `delta.content`,
    /// `delta.tool_calls`, a reasoning delta or a `finish_reason`, contract §6): the
    /// gateway's commit point.
    pub fn committed(&self) -> bool {
        self.committed
    }

    fn on_events(&mut self, events: Vec<Event>, out: &mut Vec<u8>) {
        for e in events {
            if self.state != StreamState::Streaming {
                break;
            }
            self.on_event(&e, out);
        }
    }

    fn on_event(&mut self, e: &Event, out: &mut Vec<u8>) {
        let data = payload(e);
        if data.is_empty() {
            return;
        }
        let Ok(event @ Node::Obj(_)) = serde_json::from_slice::<Node>(data) else {
            // At the end, an unterminated tail that does not parse is a event cut short:
            // the stream was cut, which `finish` says next.
            if !self.at_end {
                self.fail_into(
                    out,
                    STREAM_ERROR,
                    "the upstream sent an event that is not a JSON object",
                );
            }
            return;
        };
        let kind_of_event = event.kind().or(e.name.as_deref()).unwrap_or_default();
        match kind_of_event {
            "message_start" => {
                let message = event.get("message");
                if self.id.is_none()
                    && let Some(id) = message.and_then(|m| m.get("id")).and_then(Node::as_str)
                    && !id.is_empty()
                {
                    self.id = Some(id.to_owned());
                }
                if let Some(usage) = message.and_then(|m| m.get("usage")) {
                    self.merge_usage(usage);
                }
                self.start(out);
            }
            "content_block_start" => {
                self.start(out);
                let index = event.get("index").and_then(Node::count).unwrap_or(0);
                let block = event.get("content_block").unwrap_or(&NULL);
                let k = match block.kind() {
                    Some("text") => {
                        self.text(out, block.get("text"));
                        Kind::Text
                    }
                    Some("thinking") => {
                        self.reasoning(out, block.get("thinking"));
                        Kind::Thinking
                    }
                    Some("tool_use") => self.tool_start(out, block),
                    _ => Kind::Other,
                };
                self.blocks.insert(index, k);
            }
            "content_block_delta" => {
                self.start(out);
                let index = event.get("index").and_then(Node::count).unwrap_or(0);
                let block = self.blocks.get(&index).copied();
                let delta = event.get("delta").unwrap_or(&NULL);
                match (delta.kind(), block) {
                    (_, Some(Kind::Other)) => {}
                    (Some("text_delta"), _) => self.text(out, delta.get("text")),
                    (Some("thinking_delta"), _) => self.reasoning(out, delta.get("thinking")),
                    (Some("input_json_delta"), Some(Kind::Tool(call))) => {
                        if let Some(json) = delta
                            .get("partial_json")
                            .and_then(Node::as_str)
                            .filter(|s| !s.is_empty())
                        {
                            self.arguments(out, call, json);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                self.start(out);
                if let Some(usage) = event.get("usage") {
                    self.merge_usage(usage);
                }
                let stop = event
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Node::as_str);
                self.finish_chunk(out, vocab::finish_reason(stop));
            }
            "message_stop" => {
                self.start(out);
                self.finish_chunk(out, vocab::finish_reason(None));
                self.end(out);
            }
            "error" => {
                let error = event.get("error").unwrap_or(&NULL);
                self.fail_into(out, STREAM_ERROR, &error_message(error));
            }
            // `ping`, `content_block_stop` and whatever a later API version adds.
            _ => {}
        }
    }

    fn merge_usage(&mut self, usage: &Node) {
        if usage.as_object().is_some() {
            self.tokens
                .get_or_insert_with(Tokens::default)
                .merge_messages(|k| usage.get(k).and_then(Node::count));
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id.as_deref().unwrap_or(FALLBACK_COMPLETION_ID),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        })
    }

    /// The role chunk, once, before anything else.
    fn start(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.role_sent, true) {
            return;
        }
        // The role chunk is preamble, not content: it does not commit the stream.
        let chunk = self.chunk(json!({"role": "assistant", "content": ""}), None);
        sse::write_data(out, &chunk);
    }

    fn text(&mut self, out: &mut Vec<u8>, text: Option<&Node>) {
        if let Some(t) = text.and_then(Node::as_str).filter(|t| !t.is_empty()) {
            self.content_chunk(out, json!({"content": t}));
        }
    }

    fn reasoning(&mut self, out: &mut Vec<u8>, text: Option<&Node>) {
        if let Some(t) = text.and_then(Node::as_str).filter(|t| !t.is_empty()) {
            self.content_chunk(out, json!({"reasoning_content": t}));
        }
    }

    fn tool_start(&mut self, out: &mut Vec<u8>, block: &Node) -> Kind {
        let call = self.next_call;
        self.next_call = self.next_call.saturating_add(1);
        let id = match block
            .get("id")
            .and_then(Node::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(id) => id.to_owned(),
            None => {
                vocab::fallback_tool_id(self.id.as_deref().unwrap_or(FALLBACK_COMPLETION_ID), call)
            }
        };
        let name = block.get("name").and_then(Node::as_str).unwrap_or_default();
        let delta = json!({"tool_calls": [{
            "index": call,
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }]});
        self.content_chunk(out, delta);
        // A start that already holds the whole input (some proxies send it so) is its
        // first arguments delta.
        if let Some(input) = block
            .get("input")
            .filter(|i| i.as_object().is_some_and(|o| !o.0.is_empty()))
            // Through a `Value`, whose keys are sorted: the arguments read as the whole
            // answer's translation writes them.
            && let Ok(json) = serde_json::to_value(input).and_then(|v| serde_json::to_string(&v))
        {
            self.arguments(out, call, &json);
        }
        Kind::Tool(call)
    }

    fn arguments(&mut self, out: &mut Vec<u8>, call: u64, json: &str) {
        let delta = json!({"tool_calls": [{"index": call, "function": {"arguments": json}}]});
        self.content_chunk(out, delta);
    }

    fn content_chunk(&mut self, out: &mut Vec<u8>, delta: Value) {
        if self.finish_sent {
            return;
        }
        let chunk = self.chunk(delta, None);
        sse::write_data(out, &chunk);
        self.committed = true;
    }

    /// The chunk with `finish_reason`, once.
    fn finish_chunk(&mut self, out: &mut Vec<u8>, finish_reason: &str) {
        if std::mem::replace(&mut self.finish_sent, true) {
            return;
        }
        let chunk = self.chunk(json!({}), Some(finish_reason));
        sse::write_data(out, &chunk);
        self.committed = true;
    }

    /// The usage chunk and `[DONE]`.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.usage_chunk {
            let chunk = json!({
                "id": self.id.as_deref().unwrap_or(FALLBACK_COMPLETION_ID),
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.tokens.unwrap_or_default().to_chat(),
            });
            sse::write_data(out, &chunk);
        }
        sse::write_done(out);
        self.state = StreamState::Complete;
    }

    fn fail_into(&mut self, out: &mut Vec<u8>, code: &str, message: &str) {
        if self.state != StreamState::Streaming {
            return;
        }
        let error = json!({"error": {
            "message": message,
            "type": "server_error",
            "param": null,
            "code": code,
        }});
        sse::write_data(out, &error);
        self.state = StreamState::Failed;
    }
}
