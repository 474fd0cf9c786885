//! The mock speaks every API: Anthropic Messages (plain, streamed, tool use, count_tokens,
//! errors and every fault in Anthropic's shape) and the Responses API's full event grammar,
//! checked in-process through `respond` and over a real socket through `serve_mock`.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::time::Duration;

use bytes::Bytes;
use gateway::upstream::mock::{MockBody, MockOptions, TOOL_HEADER, TOOL_INPUT_HEADER, respond};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::*;

const MESSAGES: &str = r#"{"model":"claude-test","max_tokens":64,"messages":[{"role":"user","content":"hello mock"}]}"#;
const MESSAGES_STREAM: &str = r#"{"model":"claude-test","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hello mock"}]}"#;
const RESPONSES_STREAM: &str = r#"{"model":"gpt-test","stream":true,"input":"hello responses"}"#;

/// A messages request with two tools, `lookup` and `get_weather`, whose schema covers
/// string, integer, enum, boolean and array arguments, and an optional one (`note`);
/// `last` is the last user message's content.
fn tool_request(stream: bool, last: Value, extra: Value) -> String {
    let mut v = json!({
        "model": "claude-test", "max_tokens": 64, "stream": stream,
        "tools": [
            {"name": "lookup", "description": "d", "input_schema": {"type": "object", "properties": {}}},
            {"name": "get_weather", "description": "d", "input_schema": {"type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                               "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                               "hourly": {"type": "boolean"}, "note": {"type": "string"},
                               "tags": {"type": "array", "items": {"type": "string"}}},
                "required": ["city", "days", "units", "hourly", "tags"]}}
        ],
        "messages": [{"role": "user", "content": last}],
    });
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v.to_string()
}

/// The input the mock derives from `get_weather`'s schema.
fn weather_input() -> Value {
    json!({"city": "mock", "days": 1, "units": "celsius", "hourly": false, "tags": ["mock"]})
}

/// What `respond` answers, its body read to the end or to its error.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    clean: bool,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts an Anthropic-shaped error of this status and `type`; returns its message.
    fn anthropic_error(&self, status: u16, kind: &str) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
        v["error"]["message"].as_str().unwrap().to_string()
    }
}

async fn drain(mut body: MockBody) -> (String, bool) {
    let mut out = Vec::new();
    let clean = loop {
        match tokio::time::timeout(Duration::from_secs(3600), body.frame()).await {
            Err(_) => break false, // stalled (paused time makes this instant)
            Ok(None) => break true,
            Ok(Some(Err(_))) => break false,
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), clean)
}

async fn call(path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    call_with(path, headers, body, &MockOptions::default()).await
}

async fn call_with(path: &str, headers: &[(&str, &str)], body: &str, opts: &MockOptions) -> Answer {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let r = respond(&Method::POST, path, &h, body.as_bytes(), opts).await;
    let (parts, b) = r.into_parts();
    let (body, clean) = drain(b).await;
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        clean,
    }
}

/// The `event: NAME\ndata: {json}\n\n` frames of a stream; every frame must be one.
fn frames(text: &str) -> Vec<(String, Value)> {
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "torn frame: {text:?}"
    );
    text.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let mut lines = f.lines();
            let name = lines.next().and_then(|l| l.strip_prefix("event: "));
            let data = lines.next().and_then(|l| l.strip_prefix("data: "));
            assert!(lines.next().is_none(), "frame: {f:?}");
            let (Some(name), Some(data)) = (name, data) else {
                panic!("not an event frame: {f:?}")
            };
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["type"], name, "the data names its event: {f}");
            (name.to_string(), v)
        })
        .collect()
}

fn names(frames: &[(String, Value)]) -> Vec<&str> {
    frames.iter().map(|(n, _)| n.as_str()).collect()
}

fn repeat(name: &str, n: usize) -> Vec<&str> {
    vec![name; n]
}

#[tokio::test]
async fn messages_plain_answer_has_the_messages_shape() {
    let a = call("/v1/messages", &[], MESSAGES).await;
    assert_eq!(a.status, 200);
    assert!(a.clean);
    assert_eq!(a.headers["content-type"], "application/json");
    assert!(
        a.headers["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let v = a.json();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "content",
            "id",
            "model",
            "role",
            "stop_reason",
            "stop_sequence",
            "type",
            "usage"
        ]
    );
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-test");
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
    assert_eq!(v["content"][0]["type"], "text");
    assert!(
        v["content"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with("You said: hello mock")
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    let usage = &v["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0);
    assert!(usage["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_read_input_tokens"], 0);

    // count_tokens says what the answer's usage says.
    let c = call("/v1/messages/count_tokens", &[], MESSAGES).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.json(), json!({"input_tokens": usage["input_tokens"]}));
}

#[tokio::test]
async fn messages_stream_follows_the_event_grammar() {
    let a = call("/v1/messages", &[("x-mock-chunks", "4")], MESSAGES_STREAM).await;
    assert_eq!(a.status, 200);
    assert!(a.clean);
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let f = frames(&a.body);
    let mut want = vec!["message_start", "content_block_start", "ping"];
    want.extend(repeat("content_block_delta", 4));
    want.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&f), want);

    let start = &f[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["type"], "message");
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["model"], "claude-test");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    let input_tokens = start["usage"]["input_tokens"].as_u64().unwrap();
    assert!(input_tokens > 0);
    assert_eq!(
        f[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(f[2].1, json!({"type": "ping"}));
    let text: String = f[3..7]
        .iter()
        .map(|(_, v)| {
            assert_eq!(v["index"], 0);
            assert_eq!(v["delta"]["type"], "text_delta");
            v["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert!(text.ends_with("You said: hello mock"), "{text}");
    assert_eq!(f[7].1, json!({"type": "content_block_stop", "index": 0}));
    let delta = &f[8].1;
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(
        delta["usage"]["output_tokens"].as_u64(),
        Some(text.split_whitespace().count() as u64)
    );
    assert_eq!(f[9].1, json!({"type": "message_stop"}));

    // The plain answer to the same request carries the same text and usage.
    let plain = call("/v1/messages", &[("x-mock-chunks", "4")], MESSAGES)
        .await
        .json();
    assert_eq!(plain["content"][0]["text"], text.as_str());
    assert_eq!(plain["usage"]["input_tokens"], input_tokens);
}

#[tokio::test]
async fn messages_tool_use_stream_carries_the_input_as_json_deltas() {
    let body = tool_request(
        true,
        json!("please use tool get_weather for Paris"),
        json!({}),
    );
    let a = call("/v1/messages", &[], &body).await;
    assert_eq!(a.status, 200);
    assert!(a.clean);
    let f = frames(&a.body);
    let deltas = f.iter().filter(|(_, v)| v["index"] == 1).count() - 2;
    assert!(deltas >= 2, "the input is split over several deltas");
    let mut want = vec!["message_start", "content_block_start", "ping"];
    want.extend(repeat("content_block_delta", 5));
    want.extend(["content_block_stop", "content_block_start"]);
    want.extend(repeat("content_block_delta", deltas));
    want.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&f), want);

    let start = &f[9].1;
    assert_eq!(start["index"], 1);
    let block = &start["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather", "the tool the text names");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["input"], json!({}));
    let partial: String = f[10..10 + deltas]
        .iter()
        .map(|(_, v)| {
            assert_eq!(v["index"], 1);
            assert_eq!(v["delta"]["type"], "input_json_delta");
            v["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    let input: Value = serde_json::from_str(&partial).unwrap();
    assert_eq!(input, weather_input());
    assert_eq!(
        f[10 + deltas].1,
        json!({"type": "content_block_stop", "index": 1})
    );
    assert_eq!(f[11 + deltas].1["delta"]["stop_reason"], "tool_use");

    // Plain: a text block, then the tool_use block with the same input.
    let body = tool_request(false, json!("please use tool get_weather"), json!({}));
    let v = call("/v1/messages", &[], &body).await.json();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["content"][1]["type"], "tool_use");
    assert_eq!(v["content"][1]["name"], "get_weather");
    assert_eq!(v["content"][1]["input"], weather_input());
}

#[tokio::test]
async fn tool_use_triggers() {
    let tool_of = |a: &Answer| {
        let v = a.json();
        assert_eq!(a.status, 200, "{v}");
        v["content"][1]["name"].as_str().map(str::to_string)
    };
    let plain = |last: Value, extra: Value| tool_request(false, last, extra);

    // No trigger: text only.
    let a = call("/v1/messages", &[], &plain(json!("hi"), json!({}))).await;
    assert_eq!(tool_of(&a), None);
    assert_eq!(a.json()["stop_reason"], "end_turn");
    // "use tool" in any case, no tool named: the first tool.
    let a = call(
        "/v1/messages",
        &[],
        &plain(json!("USE TOOL now"), json!({})),
    )
    .await;
    assert_eq!(tool_of(&a).as_deref(), Some("lookup"));
    // The header names the tool; text blocks count as the turn's text.
    let a = call(
        "/v1/messages",
        &[(TOOL_HEADER, "get_weather")],
        &plain(json!([{"type": "text", "text": "hi"}]), json!({})),
    )
    .await;
    assert_eq!(tool_of(&a).as_deref(), Some("get_weather"));
    // A turn carrying a tool result gets text, even with the header: agent loops end.
    let result =
        json!([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "use tool again"}]);
    let a = call(
        "/v1/messages",
        &[(TOOL_HEADER, "get_weather")],
        &plain(result, json!({})),
    )
    .await;
    assert_eq!(tool_of(&a), None);
    // tool_choice forces or forbids.
    let a = call(
        "/v1/messages",
        &[],
        &plain(json!("hi"), json!({"tool_choice": {"type": "any"}})),
    )
    .await;
    assert_eq!(tool_of(&a).as_deref(), Some("lookup"));
    let a = call(
        "/v1/messages",
        &[],
        &plain(
            json!("hi"),
            json!({"tool_choice": {"type": "tool", "name": "get_weather"}}),
        ),
    )
    .await;
    assert_eq!(tool_of(&a).as_deref(), Some("get_weather"));
    let a = call(
        "/v1/messages",
        &[],
        &plain(json!("use tool"), json!({"tool_choice": {"type": "none"}})),
    )
    .await;
    assert_eq!(tool_of(&a), None);
    // Claude Code's shape: reminders before the prompt, a `system` message after the turn.
    // "Use ToolSearch" is not "use tool"; the header still works, and the input header wins.
    let claude_code = |prompt: &str| {
        let mut v: Value = serde_json::from_str(&plain(json!("x"), json!({}))).unwrap();
        v["messages"] = json!([
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>Use ToolSearch first</system-reminder>"},
                {"type": "text", "text": prompt}]},
            {"role": "system", "content": [{"type": "text", "text": "Use ToolSearch; use tools well"}]}
        ]);
        v.to_string()
    };
    let a = call("/v1/messages", &[], &claude_code("hi")).await;
    assert_eq!(tool_of(&a), None);
    assert!(
        a.json()["content"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with("You said: hi")
    );
    let a = call(
        "/v1/messages",
        &[],
        &claude_code("now use tool get_weather"),
    )
    .await;
    assert_eq!(tool_of(&a).as_deref(), Some("get_weather"));
    let a = call(
        "/v1/messages",
        &[
            (TOOL_HEADER, "lookup"),
            (TOOL_INPUT_HEADER, r#"{"q": [1, "two"]}"#),
        ],
        &claude_code("hi"),
    )
    .await;
    assert_eq!(tool_of(&a).as_deref(), Some("lookup"));
    assert_eq!(a.json()["content"][1]["input"], json!({"q": [1, "two"]}));
    let a = call(
        "/v1/messages",
        &[(TOOL_HEADER, "lookup"), (TOOL_INPUT_HEADER, "[1]")],
        &claude_code("hi"),
    )
    .await;
    assert!(
        a.anthropic_error(400, "invalid_request_error")
            .contains("x-mock-tool-input")
    );
    // Without tools, "use tool" is just text.
    let a = call(
        "/v1/messages",
        &[],
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"use tool"}]}"#,
    )
    .await;
    assert_eq!(a.json()["stop_reason"], "end_turn");
    // A tool nobody defined is a 400, in the API's shape.
    let a = call(
        "/v1/messages",
        &[(TOOL_HEADER, "nope")],
        &plain(json!("hi"), json!({})),
    )
    .await;
    assert!(
        a.anthropic_error(400, "invalid_request_error")
            .starts_with("invalid_mock_header: ")
    );
    let a = call(
        "/v1/messages",
        &[],
        &plain(
            json!("hi"),
            json!({"tool_choice": {"type": "tool", "name": "nope"}}),
        ),
    )
    .await;
    a.anthropic_error(400, "invalid_request_error");
}

#[tokio::test]
async fn messages_bad_input_is_an_anthropic_error() {
    for (body, says) in [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_json"),
        (
            r#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            "model",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (r#"{"model":"m","max_tokens":5}"#, "messages"),
        (r#"{"model":"m","max_tokens":5,"messages":[]}"#, "messages"),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"tool","content":"x"}]}"#,
            "messages.0.role",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user"}]}"#,
            "messages.0.content",
        ),
    ] {
        let a = call("/v1/messages", &[], body).await;
        let msg = a.anthropic_error(400, "invalid_request_error");
        assert!(msg.contains(says), "{body}: {msg}");
    }
    let a = call("/v1/messages", &[("x-mock-latency", "soon")], MESSAGES).await;
    assert!(
        a.anthropic_error(400, "invalid_request_error")
            .starts_with("invalid_mock_header: ")
    );
    // count_tokens: no max_tokens needed, but messages are.
    let a = call(
        "/v1/messages/count_tokens",
        &[],
        r#"{"model":"m","messages":[{"role":"user","content":"count me"}]}"#,
    )
    .await;
    assert!(a.json()["input_tokens"].as_u64().unwrap() > 0);
    call("/v1/messages/count_tokens", &[], r#"{"model":"m"}"#)
        .await
        .anthropic_error(400, "invalid_request_error");
    // Other paths under /v1/messages are unknown, in Anthropic's shape.
    call("/v1/messages/batches", &[], MESSAGES)
        .await
        .anthropic_error(404, "not_found_error");
}

#[tokio::test(start_paused = true)]
async fn every_fault_applies_to_messages() {
    for (fault, status, kind) in [
        ("status=400", 400, "invalid_request_error"),
        ("status=401", 401, "authentication_error"),
        ("status=403", 403, "permission_error"),
        ("status=404", 404, "not_found_error"),
        ("status=413", 413, "request_too_large"),
        ("status=429", 429, "rate_limit_error"),
        ("status=500", 500, "api_error"),
        ("503", 503, "overloaded_error"),
        ("overloaded", 529, "overloaded_error"),
        ("status=529", 529, "overloaded_error"),
    ] {
        for path in ["/v1/messages", "/v1/messages/count_tokens"] {
            let a = call(path, &[("x-mock-fault", fault)], MESSAGES_STREAM).await;
            let msg = a.anthropic_error(status, kind);
            assert!(msg.contains("mock_fault"), "{fault}: {msg}");
        }
    }
    let a = call(
        "/v1/messages",
        &[(
            "x-mock-fault",
            "status=429,retry-after=2,retry-after-ms=1500",
        )],
        MESSAGES,
    )
    .await;
    a.anthropic_error(429, "rate_limit_error");
    assert_eq!(a.headers["retry-after"], "2");
    assert_eq!(a.headers["retry-after-ms"], "1500");
    let a = call(
        "/v1/messages",
        &[("x-mock-fault", "overloaded;retry-after=7")],
        MESSAGES,
    )
    .await;
    a.anthropic_error(529, "overloaded_error");
    assert_eq!(a.headers["retry-after"], "7");

    // Latency delays the headers.
    let t0 = tokio::time::Instant::now();
    let a = call("/v1/messages", &[("x-mock-latency", "3s")], MESSAGES).await;
    assert_eq!(a.status, 200);
    assert!(t0.elapsed() >= Duration::from_secs(3));

    // hang never answers.
    let mut h = HeaderMap::new();
    h.insert("x-mock-fault", HeaderValue::from_static("hang"));
    let opts = MockOptions::default();
    let hung = respond(
        &Method::POST,
        "/v1/messages",
        &h,
        MESSAGES.as_bytes(),
        &opts,
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), hung)
            .await
            .is_err()
    );

    // Mid-stream: half the events, never message_stop; then an error or silence.
    for fault in ["drop-mid-stream", "stall-mid-stream"] {
        let a = call("/v1/messages", &[("x-mock-fault", fault)], MESSAGES_STREAM).await;
        assert_eq!(a.status, 200);
        assert!(!a.clean, "{fault}");
        let f = frames(&a.body);
        assert_eq!(f.len(), 11 / 2, "{fault}: half of 11 events");
        assert_eq!(f[0].0, "message_start");
        assert!(!names(&f).contains(&"message_stop"), "{fault}");

        // Plain: half the JSON, then the same end.
        let a = call("/v1/messages", &[("x-mock-fault", fault)], MESSAGES).await;
        assert_eq!(a.status, 200);
        assert!(!a.clean, "{fault}");
        assert!(serde_json::from_str::<Value>(&a.body).is_err());
        let whole: usize = a.headers["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(a.body.len(), whole / 2);
    }
}

#[tokio::test]
async fn responses_stream_follows_the_event_grammar() {
    let a = call("/v1/responses", &[("x-mock-chunks", "3")], RESPONSES_STREAM).await;
    assert_eq!(a.status, 200);
    assert!(a.clean);
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let f = frames(&a.body);
    let mut want = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    want.extend(repeat("response.output_text.delta", 3));
    want.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names(&f), want);
    for (i, (_, v)) in f.iter().enumerate() {
        assert_eq!(v["sequence_number"], i, "sequence numbers count up from 0");
    }

    let created = &f[0].1["response"];
    assert_eq!(created["object"], "response");
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    assert_eq!(f[1].1["response"]["status"], "in_progress");
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"));

    let added = &f[2].1;
    assert_eq!(added["output_index"], 0);
    let item = &added["item"];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["status"], "in_progress");
    assert_eq!(item["content"], json!([]));
    let item_id = item["id"].as_str().unwrap();
    assert!(item_id.starts_with("msg_"));

    for (_, v) in &f[3..9] {
        assert_eq!(v["item_id"], item_id);
        assert_eq!(v["output_index"], 0);
        assert_eq!(v["content_index"], 0);
    }
    assert_eq!(f[3].1["part"]["type"], "output_text");
    assert_eq!(f[3].1["part"]["text"], "");
    let text: String = f[4..7]
        .iter()
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert!(text.ends_with("You said: hello responses"), "{text}");
    assert_eq!(f[7].1["text"], text.as_str());
    assert_eq!(
        f[8].1["part"],
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    );
    let done = &f[9].1;
    assert_eq!(done["output_index"], 0);
    assert_eq!(done["item"]["status"], "completed");
    assert_eq!(done["item"]["content"][0]["text"], text.as_str());

    let completed = &f[10].1["response"];
    assert_eq!(completed["id"], id);
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["model"], "gpt-test");
    assert_eq!(completed["output"], json!([done["item"]]));
    let u = &completed["usage"];
    let (i, o) = (
        u["input_tokens"].as_u64().unwrap(),
        u["output_tokens"].as_u64().unwrap(),
    );
    assert!(i > 0 && o > 0);
    assert_eq!(u["total_tokens"], i + o);

    // Plain: the same response object as response.completed's.
    let v = call(
        "/v1/responses",
        &[("x-mock-chunks", "3")],
        r#"{"model":"gpt-test","input":"hello responses"}"#,
    )
    .await
    .json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v.get("output_text").is_none(), "the SDKs compute it");
    let out = &v["output"];
    assert_eq!(out.as_array().unwrap().len(), 1);
    assert_eq!(out[0]["type"], "message");
    assert_eq!(out[0]["role"], "assistant");
    assert_eq!(
        out[0]["content"],
        json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
    );
    assert_eq!(v["usage"], completed["usage"]);
}

#[tokio::test]
async fn responses_input_items_and_function_calls() {
    // Item input: the last user message is what the mock echoes.
    let body = json!({"model": "gpt-test", "input": [
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second, use tool"}]}
    ], "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object",
        "properties": {"command": {"type": "array", "items": {"type": "string"}}}}}],
        "stream": true});
    let a = call("/v1/responses", &[], &body.to_string()).await;
    let f = frames(&a.body);
    let n = names(&f);
    let calls = n
        .iter()
        .filter(|e| **e == "response.function_call_arguments.delta")
        .count();
    assert!(calls >= 2);
    let tail: Vec<&str> = n[n.len() - calls - 4..].to_vec();
    let mut want = vec!["response.output_item.added"];
    want.extend(repeat("response.function_call_arguments.delta", calls));
    want.extend([
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(tail, want);
    for (i, (_, v)) in f.iter().enumerate() {
        assert_eq!(v["sequence_number"], i);
    }
    let args: String = f
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"command": ["mock"]})
    );
    let completed = &f.last().unwrap().1["response"];
    assert!(
        completed["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with("You said: second, use tool")
    );
    let call_item = &completed["output"][1];
    assert_eq!(call_item["type"], "function_call");
    assert_eq!(call_item["name"], "shell");
    assert_eq!(call_item["arguments"], args.as_str());
    assert!(call_item["call_id"].as_str().unwrap().starts_with("call_"));

    // After the function's output, the answer is text only.
    let body = json!({"model": "gpt-test", "tools": body["tools"], "input": [
        {"role": "user", "content": "use tool"},
        {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "done"}
    ]});
    let v = call("/v1/responses", &[], &body.to_string()).await.json();
    assert_eq!(v["output"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn chat_tool_calls_plain_and_streamed() {
    let body = |stream: bool| {
        json!({"model": "gpt-test", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "get_time",
                "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}]})
        .to_string()
    };
    let v = call(
        "/v1/chat/completions",
        &[(TOOL_HEADER, "get_time")],
        &body(false),
    )
    .await
    .json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let tc = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(tc["type"], "function");
    assert_eq!(tc["function"]["name"], "get_time");
    assert_eq!(tc["function"]["arguments"], r#"{"zone":"mock"}"#);

    let a = call(
        "/v1/chat/completions",
        &[(TOOL_HEADER, "get_time")],
        &body(true),
    )
    .await;
    assert!(a.body.ends_with("data: [DONE]\n\n"));
    let chunks: Vec<Value> = a
        .body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"zone":"mock"}"#);
    let first = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"]["tool_calls"].is_array())
        .unwrap();
    assert_eq!(
        first["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test(start_paused = true)]
async fn faults_apply_to_responses() {
    let a = call(
        "/v1/responses",
        &[("x-mock-fault", "status=503,retry-after=1")],
        RESPONSES_STREAM,
    )
    .await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["error"]["code"], "mock_fault");
    assert_eq!(a.headers["retry-after"], "1");
    for fault in ["drop-mid-stream", "stall-mid-stream"] {
        let a = call(
            "/v1/responses",
            &[("x-mock-fault", fault)],
            RESPONSES_STREAM,
        )
        .await;
        assert!(!a.clean, "{fault}");
        let f = frames(&a.body);
        assert_eq!(f.len(), 13 / 2, "{fault}");
        assert!(!names(&f).contains(&"response.completed"), "{fault}");
    }
}

async fn mock_server(
    opts: MockOptions,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway::server::serve_mock(listener, opts, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

#[tokio::test]
async fn mock_server_speaks_messages_and_responses_over_http() {
    let (addr, _stop) = mock_server(MockOptions {
        chunk_interval: Duration::from_millis(1),
        ..Default::default()
    })
    .await;
    let url = |p: &str| format!("http://{addr}{p}");
    let json_headers = [
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ];

    let got = post(&url("/v1/messages"), MESSAGES).await;
    assert_eq!(got.status, 200);
    let v = got.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(got.header("request-id").starts_with("req_"));
    let counted = post(&url("/v1/messages/count_tokens"), MESSAGES)
        .await
        .json();
    assert_eq!(counted["input_tokens"], v["usage"]["input_tokens"]);

    let resp = send(
        &client(),
        "POST",
        &url("/v1/messages"),
        &json_headers,
        tool_request(true, json!("use tool get_weather"), json!({})),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (text, clean) = read_stream(resp).await;
    assert!(clean);
    let f = frames(&text);
    assert_eq!(f.first().unwrap().0, "message_start");
    assert_eq!(f.last().unwrap().0, "message_stop");
    let partial: String = f
        .iter()
        .filter_map(|(_, v)| v["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        weather_input()
    );

    // Faults over the socket, in Anthropic's shape.
    let got = post_with(
        &url("/v1/messages"),
        &[("x-mock-fault", "overloaded")],
        MESSAGES,
    )
    .await;
    assert_eq!(got.status, 529);
    assert_eq!(got.json()["error"]["type"], "overloaded_error");
    let resp = send(
        &client(),
        "POST",
        &url("/v1/messages"),
        &[("x-mock-fault", "drop-mid-stream")],
        MESSAGES_STREAM,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (text, clean) = read_stream(resp).await;
    assert!(!clean);
    assert!(text.starts_with("event: message_start\n"));
    assert!(!text.contains("message_stop"));

    // Responses, streamed over the socket.
    let resp = send(
        &client(),
        "POST",
        &url("/v1/responses"),
        &json_headers,
        RESPONSES_STREAM,
    )
    .await;
    let (text, clean) = read_stream(resp).await;
    assert!(clean);
    let f = frames(&text);
    assert_eq!(f.first().unwrap().0, "response.created");
    assert_eq!(f.last().unwrap().0, "response.completed");

    // /v1/models reads as both APIs' model list.
    let resp = send(&client(), "GET", &url("/v1/models"), &[], Bytes::new()).await;
    let v = collect(resp).await.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["has_more"], false);
    assert_eq!(v["data"][0]["id"], "mock-model");
    assert_eq!(v["data"][0]["type"], "model");
}
