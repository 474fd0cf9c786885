//! Resilience for agents (issue 9) over real sockets: a stream commits at its first content
//! event, a timeout moves on instead of retrying the same target, and a full context window
//! moves to the next target.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use support::*;

fn chain(a: &str, a_extra: &str, b: &str) -> String {
    format!(
        "[providers.a]\nbase_url = \"{a}\"\n{a_extra}\n[providers.b]\nbase_url = \"{b}\"\n\
         [models.m]\ntargets = [\"a/model-a\", \"b/model-b\"]\n"
    )
}

const ROLE: &str = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";

fn b_stream() -> Reply {
    Reply::stream(
        vec![
            Bytes::from_static(ROLE.as_bytes()),
            Bytes::from_static(b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"from b\"},\"finish_reason\":null}]}\n\n"),
            Bytes::from_static(b"data: [DONE]\n\n"),
        ],
        Duration::ZERO,
        End::Clean,
    )
}

#[tokio::test]
async fn headers_then_silence_fails_over_within_first_token() {
    // a answers 200 at once and then says nothing, for good.
    let a = Upstream::start(|_, _| Reply::stream(vec![], Duration::ZERO, End::Stall)).await;
    let b = Upstream::start(|_, _| b_stream()).await;
    let gw = Gateway::start(&chain(
        &a.url(),
        "timeouts = { first_token = \"1s\" }\nretry = { max_attempts = 3 }",
        &b.url(),
    ))
    .await;
    let started = Instant::now();
    let resp = stream_post(&gw.url("/v1/chat/completions")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-gateway-target"], "b/model-b");
    let (text, clean) = read_stream(resp).await;
    let took = started.elapsed();
    assert!(clean);
    assert!(text.contains("from b") && !text.contains("error"), "{text}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(
        took < Duration::from_secs(10),
        "about a second, not 3 x 30 s: {took:?}"
    );
    assert_eq!(a.hits(), 1, "a timeout is not retried on the same target");
    assert_eq!(
        gw.metric(r#"gateway_upstream_errors_total{provider="a",kind="timeout"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn an_error_event_before_content_fails_over_and_is_never_seen() {
    let a = Upstream::start(|_, _| {
        Reply::stream(
            vec![
                Bytes::from_static(ROLE.as_bytes()),
                Bytes::from_static(
                    b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
                ),
            ],
            Duration::ZERO,
            End::Clean,
        )
    })
    .await;
    let b = Upstream::start(|_, _| b_stream()).await;
    let gw = Gateway::start(&chain(&a.url(), "retry = { max_attempts = 1 }", &b.url())).await;
    let resp = stream_post(&gw.url("/v1/chat/completions")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-gateway-attempts"], "2");
    let (text, clean) = read_stream(resp).await;
    assert!(clean);
    assert_eq!(
        text.matches("\"role\"").count(),
        1,
        "a's false start never reached the client: {text}"
    );
    assert!(!text.contains("overloaded"), "{text}");
    assert!(text.contains("from b"));
    assert_eq!(
        gw.metric(r#"gateway_upstream_errors_total{provider="a",kind="status_5xx"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn with_nowhere_to_go_a_false_start_is_a_clean_error() {
    let a = Upstream::start(|_, _| {
        Reply::stream(
            vec![Bytes::from_static(ROLE.as_bytes())],
            Duration::ZERO,
            End::Drop,
        )
    })
    .await;
    let gw = Gateway::start(&config_for(&a.url(), "retry = { max_attempts = 1 }")).await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT_STREAM).await;
    got.assert_error(502, "upstream_unavailable");
}

#[tokio::test]
async fn the_first_content_chunk_is_not_held_back() {
    let (up, gate) = gated(1).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let resp = stream_post(&gw.url("/v1/chat/completions")).await;
    assert_eq!(resp.status(), 200);
    // The upstream holds its [DONE] until the gate opens: the content chunk must already be
    // here, or this would wait forever.
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
        .await
        .expect("the first content arrives before the upstream finishes")
        .unwrap()
        .unwrap();
    let data = frame.into_data().unwrap();
    assert!(String::from_utf8_lossy(&data).contains("c0"), "{data:?}");
    gate.notify_one();
}

#[tokio::test]
async fn a_full_context_window_moves_to_the_next_target() {
    let too_long = json!({"error": {"message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}});
    let a = Upstream::start(move |_, _| Reply::json(400, too_long.clone())).await;
    let b = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&chain(
        &a.url(),
        "breaker = { failure_threshold = 1 }",
        &b.url(),
    ))
    .await;
    for _ in 0..3 {
        let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("x-gateway-target"), "b/model-b");
    }
    assert_eq!(
        a.hits(),
        3,
        "never retried on a, and neutral: a's circuit stays closed"
    );
    assert_eq!(
        gw.metric(r#"gateway_breaker_state{provider="a"}"#).await,
        0.0
    );
}

#[tokio::test]
async fn anthropic_prompt_too_long_and_413_move_on_too_and_pass_through_at_the_end() {
    let a = Upstream::start(|_, _| {
        Reply::json(400, json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000 maximum"}}))
    })
    .await;
    let b =
        Upstream::start(|_, _| Reply::json(413, json!({"error": {"message": "too big"}}))).await;
    let gw = Gateway::start(&chain(&a.url(), "", &b.url())).await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    // Both moved on; with no target left, the last answer is passed through.
    assert_eq!(got.status, 413);
    assert_eq!(got.json()["error"]["message"], "too big");
    assert_eq!(got.header("x-should-retry"), "false");
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

#[tokio::test]
async fn other_client_errors_are_never_failed_over() {
    let filter = json!({"error": {"message": "flagged by the content filter", "type": "invalid_request_error", "code": "content_filter"}});
    let a = Upstream::start(move |_, _| Reply::json(400, filter.clone())).await;
    let b = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&chain(&a.url(), "", &b.url())).await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["error"]["code"], "content_filter");
    assert_eq!(
        b.hits(),
        0,
        "a refusal on the request's merits is not resent elsewhere"
    );
}

#[tokio::test]
async fn the_access_log_names_first_token_timeouts_and_error_events() {
    let a = Upstream::start(|_, n| {
        if n == 0 {
            Reply::stream(vec![], Duration::ZERO, End::Stall)
        } else {
            Reply::stream(
                vec![Bytes::from_static(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")],
                Duration::ZERO,
                End::Clean,
            )
        }
    })
    .await;
    let b = Upstream::start(|_, _| b_stream()).await;
    let dir = std::env::temp_dir().join(format!("gateway-commit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.jsonl");
    let _ = std::fs::remove_file(&path);
    let gw = Gateway::start(&format!(
        "[log]\naccess_log = \"{}\"\n{}",
        path.display(),
        chain(
            &a.url(),
            "timeouts = { first_token = \"300ms\" }\nretry = { max_attempts = 1 }",
            &b.url()
        )
    ))
    .await;
    for _ in 0..2 {
        let (_, clean) = read_stream(stream_post(&gw.url("/v1/chat/completions")).await).await;
        assert!(clean);
    }
    until("two lines", async || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 2)
    })
    .await;
    let errors: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["attempts"][0]["status"], 200, "{v}");
            assert!(v["attempts"][0]["first_byte_ms"].is_number());
            v["attempts"][0]["error"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(errors, ["timeout_first_token", "error_event"]);
}
