//! The mock upstream both ways: the in-process `kind = "mock"` provider behind the gateway,
//! and the HTTP `gateway mock` server (its fault modes, seen through the gateway).
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const DEMO: &str = "[providers.demo]\nkind = \"mock\"\nlatency = \"5ms\"\n[models.demo]\ntargets = [\"demo/mock-model\"]\n";

#[tokio::test]
async fn in_process_mock_answers_chat_plain_and_streamed() {
    let gw = Gateway::start(DEMO).await;
    let got = post(
        &gw.url("/v1/chat/completions"),
        r#"{"model":"demo","messages":[{"role":"user","content":"ping pong"}]}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    let v = got.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "mock-model");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("ping pong")
    );
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let resp = send(
        &client(),
        "POST",
        &gw.url("/v1/chat/completions"),
        &[],
        r#"{"model":"demo","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let (text, clean) = read_stream(resp).await;
    assert!(clean);
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let content: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(content.contains("hi"), "{content}");
    assert!(text.contains("\"usage\""));
}

#[tokio::test]
async fn in_process_mock_answers_completions_embeddings_and_responses() {
    let gw = Gateway::start(DEMO).await;
    let v = post(
        &gw.url("/v1/completions"),
        r#"{"model":"demo","prompt":"once upon"}"#,
    )
    .await
    .json();
    assert_eq!(v["object"], "text_completion");
    let v = post(
        &gw.url("/v1/embeddings"),
        r#"{"model":"demo","input":["a","b","c"]}"#,
    )
    .await
    .json();
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 16);
    let v = post(
        &gw.url("/v1/responses"),
        r#"{"model":"demo","input":"hello"}"#,
    )
    .await
    .json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
}

#[tokio::test]
async fn in_process_mock_honours_fault_headers() {
    let gw = Gateway::start(DEMO).await;
    let got = post_with(
        &gw.url("/v1/chat/completions"),
        &[("x-mock-fault", "status=503,retry-after=2")],
        r#"{"model":"demo"}"#,
    )
    .await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("retry-after"), "2");
    let resp = send(
        &client(),
        "POST",
        &gw.url("/v1/chat/completions"),
        &[("x-mock-fault", "drop-mid-stream")],
        r#"{"model":"demo","stream":true}"#,
    )
    .await;
    let (text, clean) = read_stream(resp).await;
    assert!(!clean);
    assert!(text.contains("upstream_stream_error"), "{text}");
}

async fn mock_server(
    opts: gateway::upstream::mock::MockOptions,
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
async fn gateway_mock_server_faults_seen_through_the_gateway() {
    let (addr, _stop) = mock_server(gateway::upstream::mock::MockOptions::default()).await;
    let cfg = config_for(
        &format!("http://{addr}/v1"),
        "timeouts = { first_byte = \"300ms\", idle = \"300ms\" }\nbreaker = { failure_threshold = 100 }\nretry = { max_attempts = 1 }",
    );
    let gw = Gateway::start(&cfg).await;
    let url = gw.url("/v1/chat/completions");

    let ok = post(&url, CHAT).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.json()["model"],
        "upstream-model",
        "the mock echoes the rewritten model"
    );

    post_with(&url, &[("x-mock-fault", "hang")], CHAT)
        .await
        .assert_error(504, "upstream_timeout");

    for (fault, code) in [
        ("drop-mid-stream", "upstream_stream_error"),
        ("stall-mid-stream", "upstream_idle_timeout"),
    ] {
        let resp = send(
            &client(),
            "POST",
            &url,
            &[("x-mock-fault", fault), ("x-mock-chunk-interval", "20ms")],
            CHAT_STREAM,
        )
        .await;
        assert_eq!(resp.status(), 200, "{fault}");
        let (text, clean) = read_stream(resp).await;
        assert!(!clean, "{fault}: {text}");
        assert!(text.contains(code), "{fault}: {text}");
        assert!(!text.contains("[DONE]"));
    }

    // A plain answer that stalls half-way is a clean error, not a truncated 200.
    post_with(&url, &[("x-mock-fault", "stall-mid-stream")], CHAT)
        .await
        .assert_error(504, "upstream_timeout");

    // Last: a 429 makes the gateway leave the provider alone for its retry-after.
    let got = post_with(&url, &[("x-mock-fault", "429;retry-after-ms=1500")], CHAT).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.header("retry-after-ms"), "1500");
    post(&url, CHAT).await.assert_error(429, "rate_limited");
}

#[tokio::test]
async fn gateway_mock_server_paces_chunks_and_reports_latency_header() {
    let (addr, _stop) = mock_server(gateway::upstream::mock::MockOptions {
        chunks: 7,
        chunk_interval: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let gw = Gateway::start(&config_for(&format!("http://{addr}/v1"), "")).await;
    let resp = send(
        &client(),
        "POST",
        &gw.url("/v1/chat/completions"),
        &[("x-mock-chunks", "3")],
        CHAT_STREAM,
    )
    .await;
    let (text, clean) = read_stream(resp).await;
    assert!(clean);
    let content_events = text.matches("\"content\"").count();
    assert_eq!(content_events, 3, "{text}");
    let bad = post_with(
        &gw.url("/v1/chat/completions"),
        &[("x-mock-latency", "soon")],
        CHAT,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], json!("invalid_mock_header"));
}
