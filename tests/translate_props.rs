//! Property tests of `gateway::translate`:
//!
//! - random valid chat documents survive chat → messages → chat, and random valid messages
//!   documents survive messages → chat → messages, without losing any text, image or tool
//!   call (ids, names, arguments as JSON values);
//! - a random answer rendered as a stream in one API and translated gives the same bytes
//!   however it is split, follows the target grammar, and reassembles to the original text,
//!   reasoning, tool calls, stop reason and usage (and back again through the other
//!   translator);
//! - arbitrary bytes, and arbitrary JSON built from both APIs' vocabulary, never make any
//!   entry point panic, and streams always end complete or failed in well-formed frames.
//!
//! Case counts stay low (64–256) so the suite stays quick on two cores.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};

use gateway::translate::{
    ChatToMessagesStream, MessagesToChatStream, StreamState, chat_to_messages,
    chat_to_messages_response, error_to_chat, error_to_messages, estimate_input_tokens,
    messages_to_chat, messages_to_chat_response,
};

// ---------------------------------------------------------------------------------------
// Building blocks

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.!?\n\"\\\\{}é東☀]{1,16}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,10}"
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

/// A tool call's arguments: a JSON object, nested a little.
fn args() -> impl Strategy<Value = Value> {
    let inner = prop_oneof![
        leaf(),
        prop::collection::vec(leaf(), 0..3).prop_map(Value::from),
    ];
    prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// Ascending cut points inside `len` bytes.
fn cuts(len: usize, picks: &[Index]) -> Vec<usize> {
    let mut v: Vec<usize> = picks.iter().map(|i| i.index(len.max(1))).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `s` split at the given char positions into non-empty pieces.
fn pieces(s: &str, picks: &[Index]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut at = cuts(chars.len(), picks);
    at.retain(|&c| c > 0);
    at.push(chars.len());
    let mut out = Vec::new();
    let mut from = 0;
    for to in at {
        if to > from {
            out.push(chars[from..to].iter().collect());
            from = to;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Documents reduced to what must survive

#[derive(Debug, Clone, PartialEq)]
enum Item {
    System(String),
    User(String),
    Image(String, String),
    Assistant(String),
    Call(String, String, Value),
    Result(String, String),
}

/// Adjacent assistant texts read as one: both APIs put one assistant turn's text together.
fn merge_assistant(items: Vec<Item>) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    for it in items {
        if let (Some(Item::Assistant(prev)), Item::Assistant(t)) = (out.last_mut(), &it) {
            prev.push_str(t);
            continue;
        }
        out.push(it);
    }
    out
}

fn texts_of_parts(content: &Value, sep: &str) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(sep),
        _ => String::new(),
    }
}

fn chat_items(doc: &Value) -> Vec<Item> {
    let mut system = Vec::new();
    let mut items = Vec::new();
    for m in doc["messages"].as_array().unwrap() {
        match m["role"].as_str().unwrap() {
            "system" | "developer" => system.push(texts_of_parts(&m["content"], "\n\n")),
            "user" => match &m["content"] {
                Value::String(s) => items.push(Item::User(s.clone())),
                Value::Array(parts) => {
                    for p in parts {
                        match p["type"].as_str().unwrap() {
                            "text" => items.push(Item::User(p["text"].as_str().unwrap().into())),
                            "image_url" => {
                                let url = p["image_url"]["url"].as_str().unwrap();
                                let (mt, data) = url
                                    .strip_prefix("data:")
                                    .unwrap()
                                    .split_once(";base64,")
                                    .unwrap();
                                items.push(Item::Image(mt.into(), data.into()));
                            }
                            other => panic!("unexpected part {other}"),
                        }
                    }
                }
                other => panic!("unexpected content {other}"),
            },
            "assistant" => {
                if let Some(s) = m["content"].as_str().filter(|s| !s.is_empty()) {
                    items.push(Item::Assistant(s.into()));
                }
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    let args: Value =
                        serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                    items.push(Item::Call(
                        c["id"].as_str().unwrap().into(),
                        c["function"]["name"].as_str().unwrap().into(),
                        args,
                    ));
                }
            }
            "tool" => items.push(Item::Result(
                m["tool_call_id"].as_str().unwrap().into(),
                texts_of_parts(&m["content"], "\n"),
            )),
            other => panic!("unexpected role {other}"),
        }
    }
    let mut all = Vec::new();
    if !system.is_empty() {
        all.push(Item::System(system.join("\n\n")));
    }
    all.extend(items);
    merge_assistant(all)
}

fn messages_items(doc: &Value) -> Vec<Item> {
    let mut all = Vec::new();
    match &doc["system"] {
        Value::Null => {}
        s => all.push(Item::System(texts_of_parts(s, "\n\n"))),
    }
    for m in doc["messages"].as_array().unwrap() {
        let assistant = m["role"] == "assistant";
        let blocks = match &m["content"] {
            Value::String(s) => {
                all.push(if assistant {
                    Item::Assistant(s.clone())
                } else {
                    Item::User(s.clone())
                });
                continue;
            }
            Value::Array(b) => b,
            other => panic!("unexpected content {other}"),
        };
        for b in blocks {
            match b["type"].as_str().unwrap() {
                "text" if assistant => {
                    all.push(Item::Assistant(b["text"].as_str().unwrap().into()))
                }
                "text" => all.push(Item::User(b["text"].as_str().unwrap().into())),
                "image" => all.push(Item::Image(
                    b["source"]["media_type"].as_str().unwrap().into(),
                    b["source"]["data"].as_str().unwrap().into(),
                )),
                "tool_use" => all.push(Item::Call(
                    b["id"].as_str().unwrap().into(),
                    b["name"].as_str().unwrap().into(),
                    b["input"].clone(),
                )),
                "tool_result" => {
                    let mut t = texts_of_parts(&b["content"], "\n");
                    if b["is_error"] == true {
                        // OpenAI has no error flag: it travels as a prefix of the text.
                        t.insert_str(0, "Error: ");
                    }
                    all.push(Item::Result(b["tool_use_id"].as_str().unwrap().into(), t));
                }
                // Thinking only steers the provider that made it; dropped by design.
                "thinking" => {}
                other => panic!("unexpected block {other}"),
            }
        }
    }
    merge_assistant(all)
}

// ---------------------------------------------------------------------------------------
// Random chat documents

#[derive(Debug, Clone)]
enum ChatTurn {
    User(Vec<String>, bool),
    Assistant(String),
    Tools(Option<String>, Vec<(String, Value, String)>, bool),
}

fn chat_turn() -> impl Strategy<Value = ChatTurn> {
    prop_oneof![
        (prop::collection::vec(text(), 1..3), any::<bool>())
            .prop_map(|(t, s)| ChatTurn::User(t, s)),
        text().prop_map(ChatTurn::Assistant),
        (
            prop::option::of(text()),
            prop::collection::vec((name(), args(), text()), 1..4),
            any::<bool>(),
        )
            .prop_map(|(t, c, parts)| ChatTurn::Tools(t, c, parts)),
    ]
}

fn chat_doc() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(chat_turn(), 1..8),
    )
        .prop_map(|(system, turns)| {
            let mut messages: Vec<Value> = system
                .into_iter()
                .map(|s| json!({"role": "system", "content": s}))
                .collect();
            let mut last_assistant = false;
            let mut call = 0;
            for turn in turns {
                match turn {
                    ChatTurn::User(texts, as_string) => {
                        let content = if as_string && texts.len() == 1 {
                            json!(texts[0])
                        } else {
                            texts
                                .iter()
                                .map(|t| json!({"type": "text", "text": t}))
                                .collect()
                        };
                        messages.push(json!({"role": "user", "content": content}));
                        last_assistant = false;
                    }
                    // Two assistant turns in a row would merge into one Anthropic turn and
                    // reorder text around tool calls; a valid conversation alternates.
                    _ if last_assistant => {}
                    ChatTurn::Assistant(t) => {
                        messages.push(json!({"role": "assistant", "content": t}));
                        last_assistant = true;
                    }
                    ChatTurn::Tools(t, calls, parts) => {
                        let mut tool_calls = Vec::new();
                        let mut results = Vec::new();
                        for (name, args, result) in calls {
                            call += 1;
                            let id = format!("call_{call}");
                            tool_calls.push(json!({"id": id, "type": "function",
                                "function": {"name": name, "arguments": args.to_string()}}));
                            let content = if parts {
                                json!([{"type": "text", "text": result}])
                            } else {
                                json!(result)
                            };
                            results.push(
                                json!({"role": "tool", "tool_call_id": id, "content": content}),
                            );
                        }
                        messages.push(
                            json!({"role": "assistant", "content": t, "tool_calls": tool_calls}),
                        );
                        messages.extend(results);
                        last_assistant = false;
                    }
                }
            }
            json!({"model": "gpt-4o", "messages": messages})
        })
}

// ---------------------------------------------------------------------------------------
// Random messages documents

#[derive(Debug, Clone)]
struct UserTurn {
    texts: Vec<String>,
    as_string: bool,
    images: Vec<(String, String)>,
    results: Vec<(String, bool, bool)>,
}

#[derive(Debug, Clone)]
struct AssistantTurn {
    thinking: Option<String>,
    texts: Vec<String>,
    as_string: bool,
    calls: Vec<(String, Value)>,
}

fn image() -> impl Strategy<Value = (String, String)> {
    (
        prop::sample::select(vec!["image/png", "image/jpeg", "image/webp"]),
        "[A-Za-z0-9+/]{4,12}={0,2}",
    )
        .prop_map(|(mt, d)| (mt.to_owned(), d))
}

fn user_turn() -> impl Strategy<Value = UserTurn> {
    (
        prop::collection::vec(text(), 0..3),
        any::<bool>(),
        prop::collection::vec(image(), 0..2),
        prop::collection::vec((text(), any::<bool>(), any::<bool>()), 4),
    )
        .prop_map(|(texts, as_string, images, results)| UserTurn {
            texts,
            as_string,
            images,
            results,
        })
}

fn assistant_turn() -> impl Strategy<Value = AssistantTurn> {
    (
        prop::option::of(text()),
        prop::collection::vec(text(), 0..3),
        any::<bool>(),
        prop::collection::vec((name(), args()), 0..4),
    )
        .prop_map(|(thinking, texts, as_string, calls)| AssistantTurn {
            thinking,
            texts,
            as_string,
            calls,
        })
}

fn messages_doc() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just(Value::Null),
            text().prop_map(Value::from),
            prop::collection::vec(text(), 1..3)
                .prop_map(|t| t.iter().map(|t| json!({"type": "text", "text": t})).collect()),
        ],
        prop::collection::vec((user_turn(), assistant_turn()), 1..5),
        any::<bool>(),
    )
        .prop_map(|(system, rounds, end_on_user)| {
            let mut messages = Vec::new();
            let mut pending: Vec<String> = Vec::new();
            let mut call = 0;
            let count = rounds.len();
            for (k, (u, a)) in rounds.into_iter().enumerate() {
                // The user turn answers every call of the assistant turn before it.
                let mut blocks = Vec::new();
                for (id, (result, as_blocks, is_error)) in pending.drain(..).zip(u.results.iter().cycle()) {
                    let content = if *as_blocks {
                        json!([{"type": "text", "text": result}, {"type": "text", "text": result}])
                    } else {
                        json!(result)
                    };
                    let mut b = json!({"type": "tool_result", "tool_use_id": id, "content": content});
                    if *is_error {
                        b["is_error"] = true.into();
                    }
                    blocks.push(b);
                }
                for (mt, data) in &u.images {
                    blocks.push(json!({"type": "image", "source": {"type": "base64", "media_type": mt, "data": data}}));
                }
                let texts = if u.texts.is_empty() && blocks.is_empty() {
                    vec!["hi".to_owned()]
                } else {
                    u.texts.clone()
                };
                let content = if blocks.is_empty() && u.as_string && texts.len() == 1 {
                    json!(texts[0])
                } else {
                    blocks.extend(texts.iter().map(|t| json!({"type": "text", "text": t})));
                    Value::Array(blocks)
                };
                messages.push(json!({"role": "user", "content": content}));
                if end_on_user && k + 1 == count {
                    break;
                }

                let mut blocks = Vec::new();
                if let Some(t) = &a.thinking {
                    blocks.push(json!({"type": "thinking", "thinking": t, "signature": "c2ln"}));
                }
                let texts = if a.texts.is_empty() && a.calls.is_empty() {
                    vec!["ok".to_owned()]
                } else {
                    a.texts.clone()
                };
                blocks.extend(texts.iter().map(|t| json!({"type": "text", "text": t})));
                for (name, input) in &a.calls {
                    call += 1;
                    let id = format!("toolu_{call:02}");
                    blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                    pending.push(id);
                }
                let content = if a.as_string && a.thinking.is_none() && a.calls.is_empty() && texts.len() == 1 {
                    json!(texts[0])
                } else {
                    Value::Array(blocks)
                };
                messages.push(json!({"role": "assistant", "content": content}));
            }
            let mut doc = json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "messages": messages});
            if !system.is_null() {
                doc["system"] = system;
            }
            doc
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn chat_documents_survive_the_round_trip(doc in chat_doc()) {
        let there = chat_to_messages(&serde_json::to_vec(&doc).unwrap(), "claude").unwrap();
        let there_doc: Value = serde_json::from_slice(&there).unwrap();
        // Anthropic's alternation holds on the way.
        let roles: Vec<_> = there_doc["messages"].as_array().unwrap().iter().map(|m| m["role"].clone()).collect();
        prop_assert!(roles.windows(2).all(|w| w[0] != w[1]), "{roles:?}");
        let back = messages_to_chat(&there, "gpt-4o").unwrap();
        let back: Value = serde_json::from_slice(&back).unwrap();
        prop_assert_eq!(chat_items(&back), chat_items(&doc));
    }

    #[test]
    fn messages_documents_survive_the_round_trip(doc in messages_doc()) {
        let there = messages_to_chat(&serde_json::to_vec(&doc).unwrap(), "gpt-4o").unwrap();
        let back = chat_to_messages(&there, "claude").unwrap();
        let back: Value = serde_json::from_slice(&back).unwrap();
        prop_assert_eq!(messages_items(&back), messages_items(&doc));
        prop_assert_eq!(&back["max_tokens"], &json!(1000));
    }
}

// ---------------------------------------------------------------------------------------
// Streams

/// A whole answer, to be rendered as a stream in either API.
#[derive(Debug, Clone)]
struct Answer {
    reasoning: String,
    text: String,
    calls: Vec<(String, String, Value)>,
    stop: &'static str,
    prompt: u64,
    cached: u64,
    completion: u64,
    crlf: bool,
    /// The first piece of a tool call's arguments rides in the delta that opens the call
    /// (some servers send them so; OpenAI sends `""` there).
    eager: bool,
    /// Where every piece of text and arguments is split into deltas.
    splits: Vec<Index>,
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop::option::of(text()),
        prop::option::of(text()),
        prop::collection::vec((name(), args()), 0..3),
        prop::sample::select(vec!["end_turn", "max_tokens", "stop_sequence"]),
        (0u64..100_000, 0u64..100_000, 0u64..10_000),
        (any::<bool>(), any::<bool>()),
        prop::collection::vec(any::<Index>(), 0..4),
    )
        .prop_map(
            |(reasoning, text, calls, stop, (a, b, completion), (crlf, eager), splits)| {
                let calls: Vec<_> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, (n, a))| (format!("call_{i}x"), n, a))
                    .collect();
                let stop = if calls.is_empty() { stop } else { "tool_use" };
                Answer {
                    reasoning: reasoning.unwrap_or_default(),
                    text: text.unwrap_or_default(),
                    calls,
                    stop,
                    prompt: a.max(b),
                    cached: a.min(b),
                    completion,
                    crlf,
                    eager,
                    splits,
                }
            },
        )
}

fn finish_of(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        _ => "stop",
    }
}

impl Answer {
    fn nl(&self) -> &'static str {
        if self.crlf { "\r\n" } else { "\n" }
    }

    fn openai_sse(&self) -> Vec<u8> {
        let nl = self.nl();
        let mut out = String::new();
        let mut frame = |delta: Value, finish: Value, usage: Option<Value>| {
            let mut c = json!({"id": "chatcmpl-r", "object": "chat.completion.chunk", "created": 1, "model": "up",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
            if let Some(u) = usage {
                c["choices"] = json!([]);
                c["usage"] = u;
            }
            out.push_str(&format!("data: {c}{nl}{nl}"));
        };
        frame(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            None,
        );
        for p in pieces(&self.reasoning, &self.splits) {
            frame(json!({"reasoning_content": p}), Value::Null, None);
        }
        for p in pieces(&self.text, &self.splits) {
            frame(json!({"content": p}), Value::Null, None);
        }
        for (i, (id, name, args)) in self.calls.iter().enumerate() {
            let mut rest = pieces(&args.to_string(), &self.splits).into_iter();
            let first = if self.eager {
                rest.next().unwrap_or_default()
            } else {
                String::new()
            };
            frame(
                json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": first}}]}),
                Value::Null,
                None,
            );
            for p in rest {
                frame(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}),
                    Value::Null,
                    None,
                );
            }
        }
        frame(json!({}), json!(finish_of(self.stop)), None);
        frame(
            Value::Null,
            Value::Null,
            Some(
                json!({"prompt_tokens": self.prompt, "completion_tokens": self.completion,
                "total_tokens": self.prompt + self.completion, "prompt_tokens_details": {"cached_tokens": self.cached}}),
            ),
        );
        out.push_str(&format!("data: [DONE]{nl}{nl}"));
        out.into_bytes()
    }

    fn anthropic_sse(&self) -> Vec<u8> {
        let nl = self.nl();
        let mut out = String::new();
        let mut frame = |data: Value| {
            out.push_str(&format!(
                "event: {}{nl}data: {data}{nl}{nl}",
                data["type"].as_str().unwrap()
            ));
        };
        frame(
            json!({"type": "message_start", "message": {"id": "msg_r", "type": "message", "role": "assistant",
            "model": "up", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.prompt - self.cached, "cache_read_input_tokens": self.cached,
                "cache_creation_input_tokens": 0, "output_tokens": 1}}}),
        );
        frame(json!({"type": "ping"}));
        let mut index = 0;
        let mut block = |start: Value, deltas: Vec<Value>, frame: &mut dyn FnMut(Value)| {
            frame(json!({"type": "content_block_start", "index": index, "content_block": start}));
            for d in deltas {
                frame(json!({"type": "content_block_delta", "index": index, "delta": d}));
            }
            frame(json!({"type": "content_block_stop", "index": index}));
            index += 1;
        };
        if !self.reasoning.is_empty() {
            let mut deltas: Vec<Value> = pieces(&self.reasoning, &self.splits)
                .into_iter()
                .map(|p| json!({"type": "thinking_delta", "thinking": p}))
                .collect();
            deltas.push(json!({"type": "signature_delta", "signature": "c2ln"}));
            block(
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                deltas,
                &mut frame,
            );
        }
        if !self.text.is_empty() {
            let deltas = pieces(&self.text, &self.splits)
                .into_iter()
                .map(|p| json!({"type": "text_delta", "text": p}))
                .collect();
            block(json!({"type": "text", "text": ""}), deltas, &mut frame);
        }
        for (id, name, args) in &self.calls {
            let deltas = pieces(&args.to_string(), &self.splits)
                .into_iter()
                .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                .collect();
            block(
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                deltas,
                &mut frame,
            );
        }
        frame(
            json!({"type": "message_delta", "delta": {"stop_reason": self.stop, "stop_sequence": null},
            "usage": {"output_tokens": self.completion}}),
        );
        frame(json!({"type": "message_stop"}));
        out.into_bytes()
    }
}

/// Strict Anthropic frames, as (name, data).
fn anthropic_events(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"));
    text.split_terminator("\n\n")
        .map(|frame| {
            let (event, data) = frame.split_once('\n').unwrap();
            let name = event.strip_prefix("event: ").unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name);
            data
        })
        .collect()
}

/// Strict chat frames; `[DONE]` as the string.
fn chat_events(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"));
    text.split_terminator("\n\n")
        .map(|frame| {
            let data = frame.strip_prefix("data: ").unwrap();
            assert!(!data.contains('\n'));
            if data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

/// What a client reassembles from a stream.
#[derive(Debug, Default, PartialEq)]
struct Heard {
    reasoning: String,
    text: String,
    calls: Vec<(String, String, Value)>,
    stop: String,
    usage: Value,
}

/// Checks the Anthropic grammar and reassembles the answer.
fn hear_anthropic(events: &[Value]) -> Heard {
    let mut heard = Heard::default();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"message_start"));
    assert_eq!(&types[types.len() - 2..], ["message_delta", "message_stop"]);
    let mut open: Option<u64> = None;
    let mut next = 0;
    let mut args = String::new();
    for e in &events[1..events.len() - 2] {
        match e["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!(open, None, "blocks close before the next opens");
                assert_eq!(e["index"], next);
                open = Some(next);
                next += 1;
                let b = &e["content_block"];
                if b["type"] == "tool_use" {
                    heard.calls.push((
                        b["id"].as_str().unwrap().into(),
                        b["name"].as_str().unwrap().into(),
                        Value::Null,
                    ));
                    args.clear();
                }
            }
            "content_block_delta" => {
                assert_eq!(Some(e["index"].as_u64().unwrap()), open);
                let d = &e["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => heard.text.push_str(d["text"].as_str().unwrap()),
                    "thinking_delta" => heard.reasoning.push_str(d["thinking"].as_str().unwrap()),
                    "input_json_delta" => args.push_str(d["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(Some(e["index"].as_u64().unwrap()), open);
                open = None;
                if let Some(last) = heard.calls.last_mut()
                    && last.2.is_null()
                {
                    last.2 = if args.is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&args).unwrap()
                    };
                }
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(open, None);
    let delta = &events[events.len() - 2];
    heard.stop = delta["delta"]["stop_reason"].as_str().unwrap().into();
    heard.usage = delta["usage"].clone();
    heard
}

/// Checks the chat grammar and reassembles the answer.
fn hear_chat(events: &[Value]) -> Heard {
    let mut heard = Heard::default();
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let id = events[0]["id"].clone();
    let mut args: Vec<String> = Vec::new();
    let mut finish = None;
    for e in &events[..events.len() - 1] {
        assert_eq!(e["id"], id, "one id for the whole stream");
        assert_eq!(e["object"], "chat.completion.chunk");
        let choices = e["choices"].as_array().unwrap();
        if choices.is_empty() {
            heard.usage = e["usage"].clone();
            continue;
        }
        assert!(
            finish.is_none(),
            "nothing after the finish_reason but usage"
        );
        let d = &choices[0]["delta"];
        if let Some(t) = d["content"].as_str() {
            heard.text.push_str(t);
        }
        if let Some(t) = d["reasoning_content"].as_str() {
            heard.reasoning.push_str(t);
        }
        for c in d["tool_calls"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap() as usize;
            if let Some(id) = c["id"].as_str() {
                assert_eq!(i, heard.calls.len());
                heard.calls.push((
                    id.into(),
                    c["function"]["name"].as_str().unwrap().into(),
                    Value::Null,
                ));
                args.push(String::new());
            }
            args[i].push_str(c["function"]["arguments"].as_str().unwrap());
        }
        if let Some(f) = choices[0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    for (call, a) in heard.calls.iter_mut().zip(&args) {
        call.2 = if a.is_empty() {
            json!({})
        } else {
            serde_json::from_str(a).unwrap()
        };
    }
    heard.stop = finish.unwrap();
    heard
}

fn feed_split<F: FnMut(&[u8]) -> Vec<u8>>(input: &[u8], at: &[usize], mut feed: F) -> Vec<u8> {
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in at.iter().chain(std::iter::once(&input.len())) {
        out.extend(feed(&input[from..cut]));
        from = cut;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn openai_streams_translate_the_same_however_split(a in answer(), picks in prop::collection::vec(any::<Index>(), 0..24)) {
        let input = a.openai_sse();
        let mut whole_t = ChatToMessagesStream::new("claude");
        let mut whole = whole_t.feed(&input);
        whole.extend(whole_t.finish());
        let mut t = ChatToMessagesStream::new("claude");
        let mut split = feed_split(&input, &cuts(input.len(), &picks), |c| t.feed(c));
        split.extend(t.finish());
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(t.state(), StreamState::Complete);
        prop_assert_eq!(t.usage(), Some((a.prompt, a.completion)));

        let heard = hear_anthropic(&anthropic_events(&whole));
        let want_stop = if a.stop == "stop_sequence" { "end_turn" } else { a.stop };
        prop_assert_eq!(heard, Heard {
            reasoning: a.reasoning.clone(),
            text: a.text.clone(),
            calls: a.calls.clone(),
            stop: want_stop.into(),
            usage: json!({"input_tokens": a.prompt - a.cached, "cache_read_input_tokens": a.cached,
                "cache_creation_input_tokens": 0, "output_tokens": a.completion}),
        });
    }

    #[test]
    fn anthropic_streams_translate_the_same_however_split(a in answer(), picks in prop::collection::vec(any::<Index>(), 0..24)) {
        let input = a.anthropic_sse();
        let mut whole_t = MessagesToChatStream::new("gpt-4o", 7);
        let mut whole = whole_t.feed(&input);
        whole.extend(whole_t.finish());
        let mut t = MessagesToChatStream::new("gpt-4o", 7);
        let mut split = feed_split(&input, &cuts(input.len(), &picks), |c| t.feed(c));
        split.extend(t.finish());
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(t.state(), StreamState::Complete);
        prop_assert_eq!(t.usage(), Some((a.prompt, a.completion)));

        let events = chat_events(&whole);
        let heard = hear_chat(&events);
        prop_assert_eq!(&heard, &Heard {
            reasoning: a.reasoning.clone(),
            text: a.text.clone(),
            calls: a.calls.clone(),
            stop: finish_of(a.stop).into(),
            usage: json!({"prompt_tokens": a.prompt, "completion_tokens": a.completion,
                "total_tokens": a.prompt + a.completion, "prompt_tokens_details": {"cached_tokens": a.cached}}),
        });

        // And back through the other translator: the Anthropic answer again.
        let mut back = ChatToMessagesStream::new("claude");
        let mut again = feed_split(&whole, &cuts(whole.len(), &picks), |c| back.feed(c));
        again.extend(back.finish());
        let heard = hear_anthropic(&anthropic_events(&again));
        prop_assert_eq!(heard.text, a.text);
        prop_assert_eq!(heard.reasoning, a.reasoning);
        prop_assert_eq!(heard.calls, a.calls);
    }
}

// ---------------------------------------------------------------------------------------
// Nothing panics

fn vocabulary_json() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "messages",
        "role",
        "content",
        "type",
        "text",
        "tool_calls",
        "function",
        "arguments",
        "source",
        "data",
        "media_type",
        "url",
        "tools",
        "tool_choice",
        "name",
        "input",
        "id",
        "system",
        "choices",
        "delta",
        "usage",
        "index",
        "finish_reason",
        "stop_reason",
        "max_tokens",
        "stream",
        "error",
        "message",
        "content_block",
        "partial_json",
        "image_url",
        "file",
        "file_data",
        "tool_use_id",
        "tool_call_id",
        "is_error",
        "input_schema",
        "parameters",
        "n",
        "logprobs",
        "response_format",
        "stop",
        "stop_sequences",
        "metadata",
        "user_id",
        "thinking",
        "reasoning_content",
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "cached_tokens",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "temperature",
        "title",
        "filename",
    ]);
    let words = prop::sample::select(vec![
        "user",
        "assistant",
        "system",
        "tool",
        "developer",
        "text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "base64",
        "url",
        "function",
        "auto",
        "any",
        "none",
        "required",
        "data:image/png;base64,AAAA",
        "data:application/pdf;base64,JV",
        "message_start",
        "content_block_start",
        "content_block_delta",
        "message_delta",
        "message_stop",
        "text_delta",
        "input_json_delta",
        "thinking_delta",
        "error",
        "stop",
        "length",
        "tool_calls",
        "{}",
        "{\"a\":1}",
        "[1]",
        "{",
        "",
        "[DONE]",
        "ping",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        words.prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec((keys.clone(), inner), 0..8).prop_map(|kv| Value::Object(
                kv.into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Map<_, _>>()
            )),
        ]
    })
}

/// Every entry point on one body; streams get it as their input too.
fn everything(body: &[u8], picks: &[Index]) {
    for out in [
        messages_to_chat(body, "m"),
        chat_to_messages(body, "m"),
        chat_to_messages_response(body, "m"),
        messages_to_chat_response(body, "m", 0),
    ]
    .into_iter()
    .flatten()
    {
        assert!(serde_json::from_slice::<Value>(&out).unwrap().is_object());
    }
    let _ = estimate_input_tokens(body);
    for status in [0, 200, 400, 429, 529, 999] {
        assert!(serde_json::from_slice::<Value>(&error_to_messages(status, body)).is_ok());
        assert!(serde_json::from_slice::<Value>(&error_to_chat(status, body)).is_ok());
    }
    let at = cuts(body.len(), picks);

    let mut t = ChatToMessagesStream::new("m");
    let mut out = feed_split(body, &at, |c| t.feed(c));
    out.extend(t.finish());
    assert_ne!(t.state(), StreamState::Streaming);
    let events = anthropic_events(&out);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "message_stop" || e["type"] == "error")
            .count(),
        1
    );

    let mut t = MessagesToChatStream::new("m", 0);
    let mut out = feed_split(body, &at, |c| t.feed(c));
    out.extend(t.finish());
    assert_ne!(t.state(), StreamState::Streaming);
    let events = chat_events(&out);
    let ends = events
        .iter()
        .filter(|e| **e == json!("[DONE]") || e.get("error").is_some())
        .count();
    assert_eq!(ends, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), picks in prop::collection::vec(any::<Index>(), 0..8)) {
        everything(&body, &picks);
    }

    #[test]
    fn arbitrary_sse_lines_never_panic(lines in prop::collection::vec(
        prop_oneof![
            Just("\n".to_owned()), Just("\r\n".to_owned()), Just("\r".to_owned()),
            Just("data: [DONE]\n".to_owned()), Just(": c\n".to_owned()), Just("event: error\n".to_owned()),
            "[a-z:{}\" ]{0,12}",
        ], 0..24), picks in prop::collection::vec(any::<Index>(), 0..8)) {
        everything(lines.concat().as_bytes(), &picks);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn arbitrary_documents_never_panic(doc in vocabulary_json(), events in prop::collection::vec(vocabulary_json(), 0..8),
            picks in prop::collection::vec(any::<Index>(), 0..8)) {
        everything(&serde_json::to_vec(&doc).unwrap(), &picks);
        // The same values as SSE events of either API.
        let mut sse = String::new();
        for e in &events {
            let name = e.get("type").and_then(Value::as_str).unwrap_or("message");
            sse.push_str(&format!("event: {name}\ndata: {e}\n\n"));
        }
        everything(sse.as_bytes(), &picks);
    }
}
