//! The Anthropic Messages API through the gateway (issue 11) over real sockets: passthrough
//! to `kind = "anthropic"` providers byte for byte apart from `model`, translation both ways
//! when client and target differ (answers, errors and streams), Anthropic-shaped errors,
//! failover across APIs, and count_tokens.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use support::*;

const MSG: &str = r#"{"model":"claude","max_tokens":64,"system":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"sig=="},{"type":"text","text":"hello"}]},{"role":"user","content":"again"}],"unknown_field":{"kept":true}}"#;

fn anthropic_message(text: &str) -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
           "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
           "usage": {"input_tokens": 7, "output_tokens": 2, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 0}})
}

fn anthropic_stream() -> Reply {
    let ev = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    Reply::stream(
        vec![
            ev(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "stop_reason": null, "usage": {"input_tokens": 7, "output_tokens": 1}}}),
            ),
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ev("ping", json!({"type": "ping"})),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            ),
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
            ),
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 2}}),
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ],
        Duration::ZERO,
        End::Clean,
    )
}

fn config(providers: &str, targets: &str) -> String {
    format!(
        "[server]\napi_keys = [\"client-key-0123456789\"]\n{providers}\n[models.claude]\ntargets = [{targets}]\n"
    )
}

const KEY: (&str, &str) = ("x-api-key", "client-key-0123456789");

#[tokio::test]
async fn messages_pass_through_to_an_anthropic_provider_byte_for_byte() {
    let up = Upstream::start(|_, _| Reply::json(200, anthropic_message("hi there"))).await;
    let base = up.url().trim_end_matches("/v1").to_string();
    let gw = Gateway::start(&config(
        &format!("[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{base}\"\napi_keys = [\"sk-ant-provider-key-42\"]\n"),
        "\"claude/claude-x\"",
    ))
    .await;
    let got = post_with(
        &gw.url("/v1/messages"),
        &[
            KEY,
            ("anthropic-beta", "prompt-caching-2024-07-31"),
            ("content-type", "application/json"),
        ],
        MSG,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["content"][0]["text"], "hi there");
    assert_eq!(got.header("request-id"), got.header("x-request-id"));
    let r = &up.requests()[0];
    assert_eq!(r.uri.path(), "/v1/messages");
    assert_eq!(r.headers["x-api-key"], "sk-ant-provider-key-42");
    assert!(!r.headers.contains_key("authorization"));
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert_eq!(r.headers["anthropic-beta"], "prompt-caching-2024-07-31");
    // Every byte but the model: cache_control, thinking blocks and unknown fields survive.
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        MSG.replace(r#""model":"claude""#, r#""model":"claude-x""#)
    );
    assert_eq!(
        gw.metric(r#"gateway_tokens_total{model="claude",provider="claude",kind="completion"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_client_anthropic_version_is_kept() {
    let up = Upstream::start(|_, _| Reply::json(200, anthropic_message("ok"))).await;
    let base = up.url().trim_end_matches("/v1").to_string();
    let gw = Gateway::start(&config(
        &format!("[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{base}\"\n"),
        "\"claude/c\"",
    ))
    .await;
    let got = post_with(
        &gw.url("/v1/messages"),
        &[KEY, ("anthropic-version", "2099-01-01")],
        MSG,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(up.requests()[0].headers["anthropic-version"], "2099-01-01");
}

#[tokio::test]
async fn messages_to_an_openai_provider_are_translated_both_ways() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config(
        &format!("[providers.oai]\nbase_url = \"{}\"\n", up.url()),
        "\"oai/gpt-4o\"",
    ))
    .await;
    let got = post_with(&gw.url("/v1/messages"), &[KEY], MSG).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let v = got.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["content"][0]["text"], "hello");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 3);
    let r = &up.requests()[0];
    assert_eq!(r.uri.path(), "/v1/chat/completions");
    let sent = r.json();
    assert_eq!(sent["model"], "gpt-4o");
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(
        sent["messages"].as_array().unwrap().last().unwrap()["content"],
        "again"
    );
}

#[tokio::test]
async fn a_chat_stream_reaches_an_anthropic_client_as_messages_events() {
    let up = Upstream::start(|_, _| Reply::sse(3, Duration::ZERO)).await;
    let gw = Gateway::start(&config(
        &format!("[providers.oai]\nbase_url = \"{}\"\n", up.url()),
        "\"oai/gpt-4o\"",
    ))
    .await;
    let body = MSG.replacen("{", "{\"stream\":true,", 1);
    let resp = send(&client(), "POST", &gw.url("/v1/messages"), &[KEY], body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (text, clean) = read_stream(resp).await;
    assert!(clean, "{text}");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"), "{text}");
    assert_eq!(events.last(), Some(&"message_stop"), "{text}");
    assert!(events.contains(&"content_block_delta"));
    assert!(text.contains("c0 ") && text.contains("c2 "), "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn an_openai_client_reaches_an_anthropic_provider_plain_and_streamed() {
    let up = Upstream::start(|r, _| {
        if r.json()["stream"] == true {
            anthropic_stream()
        } else {
            Reply::json(200, anthropic_message("from claude"))
        }
    })
    .await;
    let base = up.url().trim_end_matches("/v1").to_string();
    let gw = Gateway::start(&config(&format!("[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{base}\"\napi_keys = [\"sk-ant-provider-key-42\"]\n"), "\"claude/claude-x\"")).await;
    let chat = r#"{"model":"claude","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#;
    let got = post_with(
        &gw.url("/v1/chat/completions"),
        &[("authorization", "Bearer client-key-0123456789")],
        chat,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let v = got.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "from claude");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let sent = up.requests()[0].json();
    assert_eq!(up.requests()[0].uri.path(), "/v1/messages");
    assert_eq!(sent["system"], "be brief");
    assert_eq!(
        sent["max_tokens"], 4096,
        "a translated request without max_tokens gets 4096"
    );
    let stream_body = chat.replacen("{", "{\"stream\":true,", 1);
    let resp = send(
        &client(),
        "POST",
        &gw.url("/v1/chat/completions"),
        &[("authorization", "Bearer client-key-0123456789")],
        stream_body,
    )
    .await;
    let (text, clean) = read_stream(resp).await;
    assert!(clean);
    assert!(
        text.contains("\"content\":\"Hel\"") && text.contains("\"content\":\"lo\""),
        "{text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn errors_on_messages_have_the_anthropic_shape() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config(
        &format!("[providers.oai]\nbase_url = \"{}\"\n", up.url()),
        "\"oai/gpt-4o\"",
    ))
    .await;
    let url = gw.url("/v1/messages");
    let cases: Vec<(Got, u16, &str, &str)> = vec![
        (post_with(&url, &[("x-api-key", "wrong")], MSG).await, 401, "authentication_error", "invalid_api_key"),
        (post_with(&url, &[KEY], r#"{"model":"nope","messages":[]}"#).await, 404, "not_found_error", "model_not_found"),
        (post_with(&url, &[KEY], "not json").await, 400, "invalid_request_error", "invalid_json"),
        (
            post_with(&url, &[KEY], r#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":[{"type":"server_tool_use","id":"x","name":"web_search","input":{}}]}]}"#).await,
            400,
            "invalid_request_error",
            "invalid_request",
        ),
    ];
    for (got, status, kind, code) in cases {
        assert_eq!(got.status, status, "{}", got.text());
        let v = got.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{code}: ")), "{message}");
        assert_eq!(got.header("x-should-retry"), "false");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn a_failing_messages_stream_ends_with_an_error_event_not_message_stop() {
    let ev = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let up = Upstream::start(move |_, _| {
        Reply::stream(
            vec![
                ev("message_start", json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}})),
                ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "part"}})),
            ],
            Duration::from_millis(10),
            End::Drop,
        )
    })
    .await;
    let base = up.url().trim_end_matches("/v1").to_string();
    let gw = Gateway::start(&config(
        &format!("[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{base}\"\n"),
        "\"claude/c\"",
    ))
    .await;
    let body = MSG.replacen("{", "{\"stream\":true,", 1);
    let resp = send(&client(), "POST", &gw.url("/v1/messages"), &[KEY], body).await;
    assert_eq!(resp.status(), 200);
    let (text, clean) = read_stream(resp).await;
    assert!(!clean);
    assert!(!text.contains("message_stop"), "{text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{text}");
    let v: Value = serde_json::from_str(last.trim_start_matches("event: error\ndata: ")).unwrap();
    assert_eq!(v["type"], "error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("upstream_stream_error: ")
    );
}

#[tokio::test]
async fn a_chain_mixes_apis_gpt_then_claude() {
    let gpt =
        Upstream::start(|_, _| Reply::json(503, json!({"error": {"message": "overloaded"}}))).await;
    let claude = Upstream::start(|_, _| Reply::json(529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))).await;
    let deepseek = Upstream::start(|_, _| Reply::ok()).await;
    let claude_base = claude.url().trim_end_matches("/v1").to_string();
    let gw = Gateway::start(&format!(
        "[providers.openai]\nbase_url = \"{}\"\nretry = {{ max_attempts = 1 }}\n\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{claude_base}\"\nretry = {{ max_attempts = 1 }}\n\
         [providers.deepseek]\nbase_url = \"{}\"\n\
         [models.\"gpt-4o\"]\ntargets = [\"openai/gpt-4o\", \"claude/claude-3-5-sonnet\", \"deepseek/deepseek-v3\"]\n",
        gpt.url(),
        deepseek.url()
    ))
    .await;
    let got = post(
        &gw.url("/v1/chat/completions"),
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-gateway-target"), "deepseek/deepseek-v3");
    assert_eq!(got.header("x-gateway-attempts"), "3");
    assert_eq!(claude.requests()[0].uri.path(), "/v1/messages");
    assert_eq!(
        gw.metric(r#"gateway_upstream_errors_total{provider="claude",kind="status_5xx"}"#)
            .await,
        1.0,
        "a 529 is a provider failure"
    );
}

#[tokio::test]
async fn count_tokens_goes_to_anthropic_or_is_estimated() {
    let up = Upstream::start(|_, _| Reply::json(200, json!({"input_tokens": 1234}))).await;
    let oai = Upstream::start(|_, _| Reply::ok()).await;
    let base = up.url().trim_end_matches("/v1").to_string();
    let gw = Gateway::start(&format!(
        "[server]\napi_keys = [\"client-key-0123456789\"]\n\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{base}\"\n\
         [providers.oai]\nbase_url = \"{}\"\n\
         [models.claude]\ntargets = [\"claude/c\"]\n[models.gpt]\ntargets = [\"oai/g\"]\n",
        oai.url()
    ))
    .await;
    let url = gw.url("/v1/messages/count_tokens");
    let got = post_with(
        &url,
        &[KEY],
        r#"{"model":"claude","messages":[{"role":"user","content":"hello there"}]}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["input_tokens"], 1234);
    assert_eq!(up.requests()[0].uri.path(), "/v1/messages/count_tokens");
    assert!(got.headers.get("x-gateway-estimate").is_none());
    let got = post_with(&url, &[KEY], r#"{"model":"gpt","messages":[{"role":"user","content":"hello there, how are you today?"}]}"#).await;
    assert_eq!(got.status, 200);
    assert!(got.json()["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(got.header("x-gateway-estimate"), "true");
    assert_eq!(oai.hits(), 0);
}

#[tokio::test]
async fn an_anthropic_client_fails_over_across_apis_in_both_directions() {
    let claude_down = Upstream::start(|_, _| {
        Reply::json(529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    })
    .await;
    let claude_up =
        Upstream::start(|_, _| Reply::json(200, anthropic_message("from claude"))).await;
    let oai_down =
        Upstream::start(|_, _| Reply::json(503, json!({"error": {"message": "busy"}}))).await;
    let oai_up = Upstream::start(|_, _| Reply::ok()).await;
    let base = |u: &Upstream| u.url().trim_end_matches("/v1").to_string();
    let gw = Gateway::start(&format!(
        "[server]\napi_keys = [\"client-key-0123456789\"]\n\
         [providers.claude_down]\nkind = \"anthropic\"\nbase_url = \"{}\"\nretry = {{ max_attempts = 1 }}\n\
         [providers.claude_up]\nkind = \"anthropic\"\nbase_url = \"{}\"\n\
         [providers.oai_down]\nbase_url = \"{}\"\nretry = {{ max_attempts = 1 }}\n\
         [providers.oai_up]\nbase_url = \"{}\"\n\
         [models.to_openai]\ntargets = [\"claude_down/c\", \"oai_up/g\"]\n\
         [models.to_anthropic]\ntargets = [\"oai_down/g\", \"claude_up/c\"]\n",
        base(&claude_down),
        base(&claude_up),
        oai_down.url(),
        oai_up.url()
    ))
    .await;
    // Anthropic first, then an OpenAI-compatible provider: the answer is translated back.
    let body = MSG.replace(r#""model":"claude""#, r#""model":"to_openai""#);
    let got = post_with(&gw.url("/v1/messages"), &[KEY], &body).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("x-gateway-target"), "oai_up/g");
    assert_eq!(got.json()["type"], "message");
    assert_eq!(got.json()["content"][0]["text"], "hello");
    assert_eq!(oai_up.requests()[0].uri.path(), "/v1/chat/completions");
    // OpenAI-compatible first, then Anthropic: passed through untouched.
    let body = MSG.replace(r#""model":"claude""#, r#""model":"to_anthropic""#);
    let got = post_with(&gw.url("/v1/messages"), &[KEY], &body).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("x-gateway-target"), "claude_up/c");
    assert_eq!(got.json()["content"][0]["text"], "from claude");
    assert_eq!(oai_down.requests()[0].uri.path(), "/v1/chat/completions");
    assert_eq!(
        String::from_utf8_lossy(&claude_up.requests()[0].body),
        MSG.replace(r#""model":"claude""#, r#""model":"c""#)
    );
}
