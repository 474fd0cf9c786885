//! The OpenAI ↔ Anthropic translation (`gateway::translate`) against recorded shapes: the
//! fixtures under `tests/fixtures/translate/` (each an input and the exact expected output,
//! compared as parsed JSON; streams as exact event sequences, fed whole, byte by byte and
//! split in two at every byte), then tables for what the fixtures do not show: every refusal
//! and its message, every stop reason, tool_choice, error bodies, and the ways a stream can
//! end.

use std::path::Path;

use serde_json::{Value, json};

use gateway::translate::{
    ChatToMessagesStream, MessagesToChatStream, StreamState, chat_to_messages,
    chat_to_messages_response, error_to_chat, error_to_messages, estimate_input_tokens,
    messages_to_chat, messages_to_chat_response,
};

// ---------------------------------------------------------------------------------------
// SSE output, parsed strictly: any framing other than the exact grammar fails the test.

/// `event: <name>\ndata: <json>\n\n` frames as `{"event", "data"}`; the name must match
/// the data's `type`.
fn anthropic_events(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).expect("output is UTF-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "unterminated frame: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|frame| {
            let (event, data) = frame.split_once('\n').expect("two lines");
            let name = event.strip_prefix("event: ").expect("event line");
            let data: Value =
                serde_json::from_str(data.strip_prefix("data: ").expect("data line")).unwrap();
            assert_eq!(data["type"], name, "event name and type differ");
            json!({"event": name, "data": data})
        })
        .collect()
}

/// `data: <json>\n\n` frames as values, `[DONE]` as the string.
fn chat_events(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).expect("output is UTF-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "unterminated frame: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|frame| {
            let data = frame.strip_prefix("data: ").expect("data line");
            assert!(!data.contains('\n'), "one line per frame");
            if data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

/// Either translator, fed the same way.
enum Translator {
    ToMessages(ChatToMessagesStream),
    ToChat(MessagesToChatStream),
}

impl Translator {
    fn new(kind: &str, model: &str, created: u64) -> Self {
        match kind {
            "chat_stream_to_messages" => Self::ToMessages(ChatToMessagesStream::new(model)),
            "messages_stream_to_chat" => Self::ToChat(MessagesToChatStream::new(model, created)),
            other => panic!("not a stream kind: {other}"),
        }
    }
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self {
            Self::ToMessages(t) => t.feed(chunk),
            Self::ToChat(t) => t.feed(chunk),
        }
    }
    fn finish(&mut self) -> Vec<u8> {
        match self {
            Self::ToMessages(t) => t.finish(),
            Self::ToChat(t) => t.finish(),
        }
    }
    fn state(&self) -> StreamState {
        match self {
            Self::ToMessages(t) => t.state(),
            Self::ToChat(t) => t.state(),
        }
    }
    fn usage(&self) -> Option<(u64, u64)> {
        match self {
            Self::ToMessages(t) => t.usage(),
            Self::ToChat(t) => t.usage(),
        }
    }
}

/// Feeds `input` split at `cuts` (ascending offsets), then ends it.
fn run(
    kind: &str,
    model: &str,
    created: u64,
    input: &[u8],
    cuts: &[usize],
) -> (Vec<u8>, Translator) {
    let mut t = Translator::new(kind, model, created);
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        out.extend(t.feed(&input[at..cut]));
        at = cut;
    }
    out.extend(t.finish());
    (out, t)
}

// ---------------------------------------------------------------------------------------
// Fixtures

fn fixtures() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate");
    let mut all: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let doc: Value = serde_json::from_slice(&std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, doc)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(all.len() >= 12, "fixtures missing from {}", dir.display());
    all
}

#[test]
fn fixtures_translate_exactly() {
    for (name, fx) in fixtures() {
        let kind = fx["kind"].as_str().unwrap();
        let model = fx["model"].as_str().unwrap();
        let created = fx["created"].as_u64().unwrap_or(0);
        if kind.contains("stream") {
            check_stream_fixture(&name, kind, model, created, &fx);
            continue;
        }
        let input = serde_json::to_vec(&fx["input"]).unwrap();
        let out = match kind {
            "messages_to_chat" => messages_to_chat(&input, model),
            "chat_to_messages" => chat_to_messages(&input, model),
            "chat_to_messages_response" => chat_to_messages_response(&input, model),
            "messages_to_chat_response" => messages_to_chat_response(&input, model, created),
            other => panic!("{name}: unknown kind {other}"),
        };
        let out: Value =
            serde_json::from_slice(&out.unwrap_or_else(|e| panic!("{name}: {e}"))).unwrap();
        assert_eq!(out, fx["expected"], "{name}");
    }
}

fn check_stream_fixture(name: &str, kind: &str, model: &str, created: u64, fx: &Value) {
    let input: String = fx["input_sse"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let input = input.as_bytes();
    let (whole, t) = run(kind, model, created, input, &[]);
    let events = if kind == "chat_stream_to_messages" {
        anthropic_events(&whole)
    } else {
        chat_events(&whole)
    };
    let expected = fx["expected_events"].as_array().unwrap();
    assert_eq!(events.len(), expected.len(), "{name}: {events:#?}");
    for (i, (got, want)) in events.iter().zip(expected).enumerate() {
        assert_eq!(got, want, "{name}: event {i}");
    }
    let want_state = match fx["expected_state"].as_str() {
        Some("failed") => StreamState::Failed,
        _ => StreamState::Complete,
    };
    assert_eq!(t.state(), want_state, "{name}");
    let want_usage = fx["expected_usage"]
        .as_array()
        .map(|u| (u[0].as_u64().unwrap(), u[1].as_u64().unwrap()));
    assert_eq!(t.usage(), want_usage, "{name}");

    // However the bytes arrive, the output is the same bytes.
    let cuts: Vec<usize> = (1..input.len()).collect();
    assert_eq!(
        run(kind, model, created, input, &cuts).0,
        whole,
        "{name}: byte by byte"
    );
    for cut in 1..input.len() {
        assert_eq!(
            run(kind, model, created, input, &[cut]).0,
            whole,
            "{name}: cut at {cut}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Refusals

fn refusal(result: Result<Vec<u8>, gateway::translate::TranslateError>) -> String {
    match result {
        Ok(out) => panic!("translated: {}", String::from_utf8_lossy(&out)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn messages_requests_that_would_change_meaning_are_refused_naming_the_field() {
    let user = |content: Value| json!({"max_tokens": 10, "messages": [{"role": "user", "content": content}]});
    let table: Vec<(Value, &str)> = vec![
        (
            json!({"messages": [
                {"role": "user", "content": "search"},
                {"role": "assistant", "content": "ok"},
                {"role": "assistant", "content": [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}]}
            ]}),
            r#"messages[2].content[0]: block type "server_tool_use" has no OpenAI counterpart"#,
        ),
        (
            user(json!([{"type": "search_result", "source": "x", "title": "t", "content": []}])),
            r#"messages[0].content[0]: block type "search_result" has no OpenAI counterpart"#,
        ),
        (
            user(json!([{"type": "tool_use", "id": "t", "name": "n", "input": {}}])),
            r#"messages[0].content[0]: block type "tool_use" is not allowed in a user message"#,
        ),
        (
            user(json!([{"text": "no type"}])),
            "messages[0].content[0]: must be a content block with a type",
        ),
        (
            user(json!([{"type": "image", "source": {"type": "file", "file_id": "file_011"}}])),
            r#"messages[0].content[0].source.type: image source "file" has no OpenAI counterpart"#,
        ),
        (
            user(
                json!([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]),
            ),
            r#"messages[0].content[0].source.type: document source "url" has no OpenAI counterpart"#,
        ),
        (
            user(json!([{"type": "tool_result", "content": "no id"}])),
            "messages[0].content[0].tool_use_id: must be a string",
        ),
        (
            user(json!(7)),
            "messages[0].content: must be a string or an array of content blocks",
        ),
        (
            json!({"messages": [{"role": "developer", "content": "x"}]}),
            r#"messages[0].role: must be "user", "assistant" or "system", not "developer""#,
        ),
        (
            json!({"system": [{"type": "image"}], "messages": []}),
            r#"system[0]: block type "image" has no OpenAI counterpart"#,
        ),
        (
            json!({"model": "m"}),
            "messages: must be an array of messages",
        ),
        (
            json!({"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}),
            r#"tools[0]: tool type "web_search_20250305" has no OpenAI counterpart"#,
        ),
        (
            json!({"messages": [], "mcp_servers": [{"type": "url", "url": "https://mcp", "name": "m"}]}),
            "mcp_servers: MCP servers have no OpenAI counterpart",
        ),
        (
            json!({"messages": [], "tools": [{"name": "a"}], "tool_choice": {"type": "tool"}}),
            "tool_choice.name: must be a string",
        ),
        (
            json!({"messages": [], "max_tokens": 0}),
            "max_tokens: must be a positive integer",
        ),
        (
            json!({"messages": [], "temperature": "hot"}),
            "temperature: must be a number",
        ),
        (
            json!({"messages": [], "stop_sequences": ["a", 1]}),
            "stop_sequences[1]: must be a string",
        ),
    ];
    for (body, want) in table {
        let body = serde_json::to_vec(&body).unwrap();
        assert_eq!(refusal(messages_to_chat(&body, "gpt-4o")), want);
    }
    assert_eq!(
        refusal(messages_to_chat(b"{", "m")).split(' ').next(),
        Some("body:")
    );
    assert_eq!(
        refusal(messages_to_chat(b"[]", "m")),
        "body: must be a JSON object"
    );
}

#[test]
fn chat_requests_that_would_change_meaning_are_refused_naming_the_field() {
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let with = |extra: Value| {
        let mut body = json!({"model": "gpt-4o", "messages": msgs});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let call = |arguments: &str| {
        json!({"messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": arguments}}
            ]}
        ]})
    };
    let table: Vec<(Value, &str)> = vec![
        (
            with(json!({"n": 3})),
            "n: 3 choices have no Anthropic counterpart (only 1)",
        ),
        (
            with(json!({"logprobs": true})),
            "logprobs: log probabilities have no Anthropic counterpart",
        ),
        (
            with(json!({"top_logprobs": 2})),
            "top_logprobs: log probabilities have no Anthropic counterpart",
        ),
        (
            with(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
            ),
            r#"response_format.type: "json_schema" has no Anthropic counterpart"#,
        ),
        (
            with(json!({"response_format": {"type": "json_object"}})),
            r#"response_format.type: "json_object" has no Anthropic counterpart"#,
        ),
        (
            with(json!({"audio": {"voice": "alloy", "format": "wav"}})),
            "audio: audio output has no Anthropic counterpart",
        ),
        (
            with(json!({"modalities": ["text", "audio"]})),
            r#"modalities: only "text" has an Anthropic counterpart"#,
        ),
        (
            with(json!({"functions": [{"name": "f"}]})),
            "functions: legacy function calling has no Anthropic counterpart; use tools",
        ),
        (
            with(json!({"logit_bias": {"50256": -100}})),
            "logit_bias: token biases have no Anthropic counterpart",
        ),
        (
            with(json!({"web_search_options": {}})),
            "web_search_options: web search has no Anthropic counterpart here",
        ),
        (
            call(r#"{"a": 1"#),
            "messages[1].tool_calls[1].function.arguments: is not valid JSON (EOF while parsing an object at line 1 column 7)",
        ),
        (
            call("[1, 2]"),
            "messages[1].tool_calls[1].function.arguments: must be a JSON object",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}),
            r#"messages[0].content[0]: part type "input_audio" has no Anthropic counterpart"#,
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]}),
            "messages[0].content[0].file.file_data: must be a data URL (files by id have no Anthropic counterpart)",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "data:text/csv;base64,YSxi"}}]}]}),
            r#"messages[0].content[0].file.file_data: file type "text/csv" has no Anthropic counterpart (only PDF and images)"#,
        ),
        (
            json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
            r#"messages[0].role: legacy "function" messages have no Anthropic counterpart; use tools"#,
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id: must be a string",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "x", "input": "y"}}]}]}),
            r#"messages[0].tool_calls[0].type: tool call type "custom" has no Anthropic counterpart"#,
        ),
        (
            with(json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]})),
            r#"tools[0].type: tool type "custom" has no Anthropic counterpart"#,
        ),
        (
            with(
                json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}),
            ),
            r#"tool_choice.type: "allowed_tools" has no Anthropic counterpart"#,
        ),
        (
            with(json!({"max_tokens": -5})),
            "max_tokens: must be a positive integer",
        ),
        (
            with(json!({"max_completion_tokens": 1.5})),
            "max_completion_tokens: must be a positive integer",
        ),
        (with(json!({"stream": "yes"})), "stream: must be a boolean"),
    ];
    for (body, want) in table {
        let body = serde_json::to_vec(&body).unwrap();
        assert_eq!(refusal(chat_to_messages(&body, "claude")), want);
    }
}

// ---------------------------------------------------------------------------------------
// Parameters both ways

fn to_chat(body: Value) -> Value {
    let out = messages_to_chat(&serde_json::to_vec(&body).unwrap(), "gpt-4o").unwrap();
    serde_json::from_slice(&out).unwrap()
}

fn to_messages(body: Value) -> Value {
    let out = chat_to_messages(&serde_json::to_vec(&body).unwrap(), "claude").unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn tool_choice_both_ways() {
    let tools_m = json!([{"name": "get", "input_schema": {"type": "object"}}]);
    let tools_c = json!([{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}]);
    let table = [
        (json!({"type": "auto"}), json!("auto"), None),
        (json!({"type": "any"}), json!("required"), None),
        (json!({"type": "none"}), json!("none"), None),
        (
            json!({"type": "tool", "name": "get"}),
            json!({"type": "function", "function": {"name": "get"}}),
            None,
        ),
        (
            json!({"type": "auto", "disable_parallel_tool_use": true}),
            json!("auto"),
            Some(false),
        ),
        (
            json!({"type": "tool", "name": "get", "disable_parallel_tool_use": true}),
            json!({"type": "function", "function": {"name": "get"}}),
            Some(false),
        ),
    ];
    for (anthropic, openai, parallel) in table {
        let chat = to_chat(json!({"messages": [], "tools": tools_m, "tool_choice": anthropic}));
        assert_eq!(chat["tool_choice"], openai, "{anthropic}");
        assert_eq!(
            chat.get("parallel_tool_calls").cloned(),
            parallel.map(Value::from),
            "{anthropic}"
        );

        let mut back = json!({"messages": [], "tools": tools_c, "tool_choice": openai});
        if let Some(p) = parallel {
            back["parallel_tool_calls"] = p.into();
        }
        assert_eq!(to_messages(back)["tool_choice"], anthropic, "{openai}");
    }
    // parallel_tool_calls: false alone still needs an Anthropic tool_choice to say it.
    let m = to_messages(json!({"messages": [], "tools": tools_c, "parallel_tool_calls": false}));
    assert_eq!(
        m["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    // Without tools, tool_choice has nothing to steer: dropped both ways.
    let c = to_chat(
        json!({"messages": [], "tool_choice": {"type": "any", "disable_parallel_tool_use": true}}),
    );
    assert!(c.get("tool_choice").is_none() && c.get("parallel_tool_calls").is_none());
    let m = to_messages(json!({"messages": [], "tool_choice": "required"}));
    assert!(m.get("tool_choice").is_none());
}

#[test]
fn max_tokens_defaults_and_scalars() {
    let m = to_messages(json!({"messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(m["max_tokens"], 4096);
    let m = to_messages(
        json!({"messages": [], "max_tokens": 77, "temperature": 0.3, "top_p": 1, "stop": ["x", "y"]}),
    );
    assert_eq!(
        (
            &m["max_tokens"],
            &m["temperature"],
            &m["top_p"],
            &m["stop_sequences"]
        ),
        (&json!(77), &json!(0.3), &json!(1), &json!(["x", "y"]))
    );
    assert!(m.get("stream").is_none());
    let m = to_messages(json!({"messages": [], "safety_identifier": "u-1"}));
    assert_eq!(m["metadata"], json!({"user_id": "u-1"}));
    let c = to_chat(
        json!({"messages": [], "max_tokens": 5, "top_p": 0.5, "top_k": 3, "stop_sequences": [], "stream": false}),
    );
    assert_eq!(
        c,
        json!({"model": "gpt-4o", "messages": [], "max_tokens": 5, "top_p": 0.5, "stream": false})
    );
    // Anthropic structured output is OpenAI's json_schema response format.
    let c = to_chat(
        json!({"messages": [], "output_format": {"type": "json_schema", "schema": {"type": "object"}}}),
    );
    assert_eq!(
        c["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}, "strict": true}})
    );
    // A lone system string stays a string; an assistant prefill stays the last message.
    let m = to_messages(json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "The colour is"}
    ]}));
    assert_eq!(m["system"], "Be brief.");
    assert_eq!(
        m["messages"][1],
        json!({"role": "assistant", "content": "The colour is"})
    );
}

#[test]
fn assistant_turns_of_only_thinking_are_dropped_and_empty_arguments_are_an_empty_object() {
    let c = to_chat(json!({"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "abc"}]},
        {"role": "user", "content": "y"}
    ]}));
    assert_eq!(
        c["messages"],
        json!([{"role": "user", "content": "x"}, {"role": "user", "content": "y"}])
    );
    let m = to_messages(json!({"messages": [
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}}]}
    ]}));
    assert_eq!(m["messages"][0]["content"][0]["input"], json!({}));
}

// ---------------------------------------------------------------------------------------
// Answers: every stop reason, usage

#[test]
fn every_finish_reason_maps_to_a_stop_reason() {
    let table = [
        ("stop", false, "end_turn"),
        ("length", false, "max_tokens"),
        ("tool_calls", true, "tool_use"),
        ("function_call", false, "tool_use"),
        ("content_filter", false, "refusal"),
        ("stop", true, "tool_use"),
        ("something_new", false, "end_turn"),
    ];
    for (finish, tools, want) in table {
        let calls = if tools {
            json!([{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}])
        } else {
            json!(null)
        };
        let body = json!({"id": "x", "choices": [{"index": 0, "finish_reason": finish,
            "message": {"role": "assistant", "content": "t", "tool_calls": calls}}]});
        let out = chat_to_messages_response(&serde_json::to_vec(&body).unwrap(), "m").unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["stop_reason"], want, "{finish}");
        assert_eq!(out["stop_sequence"], Value::Null);
    }
}

#[test]
fn every_stop_reason_maps_to_a_finish_reason() {
    let table = [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ];
    for (stop, want) in table {
        let body = json!({"id": "msg_1", "type": "message", "content": [{"type": "text", "text": "t"}],
            "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 2}});
        let out = messages_to_chat_response(&serde_json::to_vec(&body).unwrap(), "m", 5).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], want, "{stop}");
    }
}

#[test]
fn answers_with_odd_shapes() {
    // Tool call arguments cut by max tokens are kept as an empty input, not refused.
    let body = json!({"id": "c", "choices": [{"index": 0, "finish_reason": "length", "message": {
        "role": "assistant", "content": null,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": [1, 2"}}]}}]});
    let out: Value = serde_json::from_slice(
        &chat_to_messages_response(&serde_json::to_vec(&body).unwrap(), "m").unwrap(),
    )
    .unwrap();
    assert_eq!(
        out["content"],
        json!([{"type": "tool_use", "id": "call_1", "name": "f", "input": {}}])
    );
    assert_eq!(out["stop_reason"], "max_tokens");
    // Without the cut they are refused.
    let body = serde_json::to_vec(&body).unwrap();
    let body = String::from_utf8(body)
        .unwrap()
        .replace("\"length\"", "\"tool_calls\"");
    assert_eq!(
        refusal(chat_to_messages_response(body.as_bytes(), "m")),
        "choices[0].message.tool_calls[0].function.arguments: is not valid JSON (EOF while parsing a list at line 1 column 11)"
    );
    // A refusal is the text the client sees; no usage means zeros.
    let body = json!({"id": "c", "choices": [{"index": 0, "finish_reason": "content_filter",
        "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}}]});
    let out: Value = serde_json::from_slice(
        &chat_to_messages_response(&serde_json::to_vec(&body).unwrap(), "m").unwrap(),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"id": "c", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "I can't help with that."}],
            "stop_reason": "refusal", "stop_sequence": null,
            "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}})
    );
    assert_eq!(
        refusal(chat_to_messages_response(b"{\"choices\": []}", "m")),
        "choices: must hold one answer"
    );
    // An Anthropic answer with nothing in it is an empty string, not null.
    let out: Value = serde_json::from_slice(
        &messages_to_chat_response(
            br#"{"id":"msg_1","content":[],"stop_reason":"end_turn"}"#,
            "m",
            1,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        out["choices"][0]["message"],
        json!({"role": "assistant", "content": ""})
    );
}

// ---------------------------------------------------------------------------------------
// Error bodies

#[test]
fn openai_errors_become_anthropic_errors() {
    let table: Vec<(u16, &[u8], Value)> = vec![
        (
            401,
            br#"{"error":{"message":"Incorrect API key provided: sk-abc.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid_api_key: Incorrect API key provided: sk-abc."}}),
        ),
        (
            400,
            br#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens."}}),
        ),
        (
            429,
            br#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "rate_limit_exceeded: Rate limit reached for gpt-4o"}}),
        ),
        (
            403,
            br#"{"error":{"message":"Country not supported","type":"request_forbidden","code":null}}"#,
            json!({"type": "error", "error": {"type": "permission_error", "message": "Country not supported"}}),
        ),
        (
            404,
            br#"{"object":"error","message":"The model `llama` does not exist.","type":"NotFoundError","param":null,"code":404}"#,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "The model `llama` does not exist."}}),
        ),
        (
            413,
            b"<html><body>413 Request Entity Too Large</body></html>",
            json!({"type": "error", "error": {"type": "request_too_large", "message": "<html><body>413 Request Entity Too Large</body></html>"}}),
        ),
        (
            500,
            br#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#,
            json!({"type": "error", "error": {"type": "api_error", "message": "The server had an error while processing your request."}}),
        ),
        (502, b"", json!({"type": "error", "error": {"type": "api_error", "message": "upstream answered HTTP 502"}})),
        (
            503,
            br#"{"detail":"Service Unavailable"}"#,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Service Unavailable"}}),
        ),
        (504, b"[1,2]", json!({"type": "error", "error": {"type": "api_error", "message": "upstream answered HTTP 504"}})),
        (
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        (
            402,
            br#"{"error":"Insufficient balance"}"#,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "Insufficient balance"}}),
        ),
    ];
    for (status, body, want) in table {
        let got: Value = serde_json::from_slice(&error_to_messages(status, body)).unwrap();
        assert_eq!(got, want, "{status}");
    }
}

#[test]
fn anthropic_errors_become_openai_errors() {
    let table: Vec<(u16, &[u8], Value)> = vec![
        (
            400,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"},"request_id":"req_1"}"#,
            json!({"error": {"message": "prompt is too long: 210000 tokens > 200000 maximum", "type": "invalid_request_error", "param": null, "code": "context_length_exceeded"}}),
        ),
        (
            401,
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            json!({"error": {"message": "invalid x-api-key", "type": "authentication_error", "param": null, "code": "authentication_error"}}),
        ),
        (
            429,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
            json!({"error": {"message": "Number of request tokens has exceeded your per-minute rate limit", "type": "rate_limit_error", "param": null, "code": "rate_limit_error"}}),
        ),
        (
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded_error"}}),
        ),
        (
            500,
            b"\xff\xfe not text",
            json!({"error": {"message": "\u{fffd}\u{fffd} not text", "type": "server_error", "param": null, "code": null}}),
        ),
        (
            404,
            b"",
            json!({"error": {"message": "upstream answered HTTP 404", "type": "not_found_error", "param": null, "code": null}}),
        ),
    ];
    for (status, body, want) in table {
        let got: Value = serde_json::from_slice(&error_to_chat(status, body)).unwrap();
        assert_eq!(got, want, "{status}");
    }
    // A huge non-JSON body is quoted only in part.
    let big = vec![b'x'; 100_000];
    let got: Value = serde_json::from_slice(&error_to_chat(502, &big)).unwrap();
    assert_eq!(got["error"]["message"].as_str().unwrap().len(), 512);
}

// ---------------------------------------------------------------------------------------
// Stream endings

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "x",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

fn event_names(out: &[u8]) -> Vec<String> {
    anthropic_events(out)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_cut_chat_stream_ends_with_an_error_event_never_message_stop() {
    let mut t = ChatToMessagesStream::new("claude");
    let mut out = t.feed(chunk(json!({"role": "assistant", "content": ""}), None).as_bytes());
    assert!(!t.committed(), "the role chunk is preamble");
    out.extend(t.feed(chunk(json!({"content": "Hel"}), None).as_bytes()));
    assert!(t.committed());
    out.extend(t.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"lo"));
    out.extend(t.finish());
    assert_eq!(t.state(), StreamState::Failed);
    let events = anthropic_events(&out);
    assert_eq!(
        event_names(&out),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        events[3]["data"],
        json!({"type": "error", "error": {"type": "api_error",
            "message": "upstream_stream_error: the upstream closed the stream before it finished"}})
    );
    // Ended is ended: nothing more, whatever comes.
    assert!(t.fail("upstream_idle_timeout", "late").is_empty());
    assert!(t.feed(b"data: [DONE]\n\n").is_empty());
    assert!(t.finish().is_empty());
}

#[test]
fn the_gateway_can_end_a_chat_stream_with_its_own_error() {
    let mut t = ChatToMessagesStream::new("claude");
    let _ = t.feed(chunk(json!({"content": "Hi"}), None).as_bytes());
    let out = t.fail("upstream_idle_timeout", "no data for 30s");
    assert_eq!(
        anthropic_events(&out),
        [
            json!({"event": "error", "data": {"type": "error", "error": {"type": "api_error",
            "message": "upstream_idle_timeout: no data for 30s"}}})
        ]
    );
    assert!(t.finish().is_empty());
}

#[test]
fn a_chat_stream_that_finished_without_done_is_complete() {
    let mut t = ChatToMessagesStream::new("claude");
    let mut out = t.feed(chunk(json!({"content": "Hi"}), Some("stop")).as_bytes());
    assert_eq!(
        event_names(&out).last().map(String::as_str),
        Some("content_block_stop")
    );
    out.extend(t.finish());
    assert_eq!(t.state(), StreamState::Complete);
    assert_eq!(
        event_names(&out),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
}

#[test]
fn usage_in_the_finish_chunk_ends_the_message_at_once() {
    let mut t = ChatToMessagesStream::new("claude");
    let body = json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}});
    let out = t.feed(format!("data: {body}\n\n").as_bytes());
    assert_eq!(t.state(), StreamState::Complete);
    let events = anthropic_events(&out);
    assert_eq!(
        events[4]["data"]["usage"],
        json!({"input_tokens": 6, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4, "output_tokens": 2})
    );
    assert_eq!(t.usage(), Some((10, 2)));
}

#[test]
fn an_openai_in_band_error_becomes_an_anthropic_error_event() {
    let mut t = ChatToMessagesStream::new("claude");
    let mut out = t.feed(chunk(json!({"content": "Hi"}), None).as_bytes());
    out.extend(t.feed(
        br#"data: {"error":{"message":"The server had an error","type":"server_error","code":null}}

"#,
    ));
    assert_eq!(t.state(), StreamState::Failed);
    assert_eq!(
        anthropic_events(&out).last().unwrap()["data"],
        json!({"type": "error", "error": {"type": "api_error",
            "message": "upstream_stream_error: server_error: The server had an error"}})
    );
}

#[test]
fn tool_calls_without_index_and_a_resumed_call() {
    // Each call complete in one delta, without `index` (as some servers send them).
    let mut t = ChatToMessagesStream::new("claude");
    let mut out = Vec::new();
    for (id, args) in [("call_a", "{\"x\":1}"), ("call_b", "{\"y\":2}")] {
        let delta = json!({"tool_calls": [{"id": id, "type": "function", "function": {"name": "f", "arguments": args}}]});
        out.extend(t.feed(chunk(delta, None).as_bytes()));
    }
    out.extend(t.feed(chunk(json!({}), Some("tool_calls")).as_bytes()));
    out.extend(t.finish());
    let events = anthropic_events(&out);
    let starts: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "content_block_start")
        .map(|e| {
            (
                e["data"]["index"].clone(),
                e["data"]["content_block"]["id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        starts,
        [(json!(0), json!("call_a")), (json!(1), json!("call_b"))]
    );
    assert_eq!(events.last().unwrap()["event"], "message_stop");

    // A call that comes back after another block began cannot be expressed: the stream fails.
    let mut t = ChatToMessagesStream::new("claude");
    let call = |i: u64, args: &str| json!({"tool_calls": [{"index": i, "id": format!("call_{i}"), "function": {"name": "f", "arguments": args}}]});
    let _ = t.feed(chunk(call(0, "{"), None).as_bytes());
    let _ = t.feed(chunk(call(1, "{}"), None).as_bytes());
    let out = t.feed(
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
            None,
        )
        .as_bytes(),
    );
    assert_eq!(t.state(), StreamState::Failed);
    assert_eq!(
        anthropic_events(&out)[0]["data"]["error"]["message"],
        "upstream_stream_error: tool call 0 resumed after another block began"
    );
}

#[test]
fn a_missing_tool_call_id_gets_one_anthropic_accepts() {
    let mut t = ChatToMessagesStream::new("claude");
    let mut out = t.feed(
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}),
            None,
        )
        .as_bytes(),
    );
    out.extend(t.finish());
    let events = anthropic_events(&out);
    assert_eq!(
        events[1]["data"]["content_block"]["id"],
        "toolu_chatcmpl-1_0"
    );
    assert_eq!(
        events.last().unwrap()["event"],
        "error",
        "no finish_reason: cut"
    );
}

#[test]
fn an_overlong_line_fails_the_stream() {
    let mut t = ChatToMessagesStream::new("claude");
    let _ = t.feed(b"data: ");
    let out = t.feed(&vec![b'a'; gateway::translate::MAX_SSE_LINE]);
    assert_eq!(t.state(), StreamState::Failed);
    assert_eq!(
        anthropic_events(&out)[0]["data"]["error"]["message"],
        "upstream_stream_error: the upstream sent an SSE line longer than 16 MiB"
    );
    let mut t = MessagesToChatStream::new("gpt", 0);
    let _ = t.feed(b"data: ");
    let out = t.feed(&vec![b'a'; gateway::translate::MAX_SSE_LINE]);
    assert_eq!(
        chat_events(&out)[0]["error"]["code"],
        "upstream_stream_error"
    );
}

fn anthropic_frame(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap()
    )
}

#[test]
fn a_cut_messages_stream_ends_with_an_error_event_never_done() {
    let mut t = MessagesToChatStream::new("gpt-4o", 9);
    let mut out = t.feed(
        anthropic_frame(json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3, "output_tokens": 1}}}))
            .as_bytes(),
    );
    out.extend(t.feed(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"));
    assert!(!t.committed(), "message_start and ping are preamble");
    out.extend(t.feed(
        anthropic_frame(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})).as_bytes(),
    ));
    assert!(!t.committed());
    out.extend(t.feed(
        anthropic_frame(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})).as_bytes(),
    ));
    assert!(t.committed());
    out.extend(t.finish());
    assert_eq!(t.state(), StreamState::Failed);
    let events = chat_events(&out);
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[2],
        json!({"error": {"message": "the upstream closed the stream before it finished",
            "type": "server_error", "param": null, "code": "upstream_stream_error"}})
    );
    assert_eq!(t.usage(), Some((3, 1)));
}

#[test]
fn a_messages_stream_without_message_stop_is_complete_after_message_delta() {
    let mut t = MessagesToChatStream::new("gpt-4o", 9).with_usage_chunk(false);
    let mut out = t.feed(
        anthropic_frame(json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 7}}))
            .as_bytes(),
    );
    assert!(t.committed(), "a finish_reason is content");
    out.extend(t.finish());
    assert_eq!(t.state(), StreamState::Complete);
    let events = chat_events(&out);
    assert_eq!(
        events.len(),
        3,
        "role, finish, [DONE]: no usage chunk when asked so"
    );
    assert_eq!(events[0]["id"], "chatcmpl-gateway");
    assert_eq!(events[1]["choices"][0]["finish_reason"], "length");
    assert_eq!(events[2], "[DONE]");
    assert_eq!(t.usage(), Some((0, 7)));
}

#[test]
fn count_tokens_estimate_is_deterministic() {
    let fx = fixtures()
        .into_iter()
        .find(|(n, _)| n == "claude_code_request.json")
        .unwrap()
        .1;
    let body = serde_json::to_vec(&fx["input"]).unwrap();
    let n = estimate_input_tokens(&body).unwrap();
    assert_eq!(estimate_input_tokens(&body).unwrap(), n);
    // ~1.2 KB of text and tool schemas, three messages, tools present.
    assert!((346 + 12 + 200..346 + 12 + 500).contains(&n), "{n}");
}

#[test]
fn system_turns_inside_messages_become_system_messages_in_place() {
    // Claude Code 2.x sends system reminders as `role: "system"` turns inside `messages`.
    let out = to_chat(json!({
        "model": "m", "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "reminder one"}, {"type": "text", "text": "two"}]},
            {"role": "system", "content": "plain"},
            {"role": "user", "content": "again"}
        ]
    }));
    let roles: Vec<&str> = out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "system", "system", "user"]);
    assert_eq!(out["messages"][1]["content"], "reminder one\n\ntwo");
    assert_eq!(out["messages"][2]["content"], "plain");
    let refused = gateway::translate::messages_to_chat(
        br#"{"model":"m","max_tokens":1,"messages":[{"role":"tool","content":"x"}]}"#,
        "m",
    )
    .unwrap_err();
    assert!(
        refused.to_string().starts_with("messages[0].role: "),
        "{refused}"
    );
}
