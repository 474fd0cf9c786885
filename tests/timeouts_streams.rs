//! Timeouts, each against an upstream that stalls at exactly that point, and streaming:
//! pass-through as chunks arrive, mid-stream failures as error events, client disconnects.
//!
//! Timers are short, but nothing asserts elapsed time: which error code comes back shows
//! which timer fired (the other timers are set far longer).
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use support::*;

fn timeouts(connect: &str, first_byte: &str, idle: &str, total: &str) -> String {
    format!(
        "timeouts = {{ connect = \"{connect}\", first_byte = \"{first_byte}\", idle = \"{idle}\", total = \"{total}\" }}"
    )
}

#[tokio::test]
async fn connect_timeout_covers_the_tls_handshake() {
    // A TCP listener that accepts and never speaks TLS: TCP connects, the handshake hangs.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let url = format!("https://{addr}/v1");
    let gw = Gateway::start(&config_for(&url, &timeouts("300ms", "60s", "60s", "10m"))).await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    got.assert_error(502, "upstream_unavailable");
    assert!(
        got.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connect timed out"),
        "{}",
        got.text()
    );
}

#[tokio::test]
async fn connection_refused_is_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = Gateway::start(&config_for(&format!("http://127.0.0.1:{port}/v1"), "")).await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    got.assert_error(502, "upstream_unavailable");
    // Retried once on the same target (max_attempts = 2), then given up.
    assert_eq!(got.header("x-gateway-attempts"), "2");
    assert_eq!(got.header("x-should-retry"), "false");
    assert_eq!(got.header("x-gateway-target"), "up/upstream-model");
}

#[tokio::test]
async fn first_byte_timeout_is_504_and_cancels_the_upstream_request() {
    let up = Upstream::start(|_, _| Reply::Hang).await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        &timeouts("5s", "300ms", "60s", "10m"),
    ))
    .await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    got.assert_error(504, "upstream_timeout");
    assert!(got.text().contains("first_byte"), "{}", got.text());
    assert!(
        up.wait_cancelled(1, Duration::from_secs(10)).await,
        "upstream request not dropped"
    );
}

#[tokio::test]
async fn idle_timeout_mid_body_of_a_plain_response_is_504() {
    let full = chat_completion("a fairly long answer").to_string();
    let first = bytes::Bytes::copy_from_slice(&full.as_bytes()[..full.len() / 2]);
    let up = Upstream::start(move |_, _| Reply::Partial {
        first: first.clone(),
        declared_len: full.len(),
        end: End::Stall,
    })
    .await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        &timeouts("5s", "60s", "300ms", "10m"),
    ))
    .await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    got.assert_error(504, "upstream_timeout");
    assert!(got.text().contains("idle"), "{}", got.text());
}

#[tokio::test]
async fn drop_mid_body_of_a_plain_response_is_502_not_a_truncated_200() {
    let full = chat_completion("a fairly long answer").to_string();
    let first = bytes::Bytes::copy_from_slice(&full.as_bytes()[..full.len() / 2]);
    let up = Upstream::start(move |_, _| Reply::Partial {
        first: first.clone(),
        declared_len: full.len(),
        end: End::Drop,
    })
    .await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    post(&gw.url("/v1/chat/completions"), CHAT)
        .await
        .assert_error(502, "upstream_unavailable");
}

#[tokio::test]
async fn total_timeout_on_a_plain_response_is_504() {
    let up =
        Upstream::start(|_, _| Reply::Delay(Duration::from_secs(30), Box::new(Reply::ok()))).await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        &timeouts("5s", "60s", "60s", "300ms"),
    ))
    .await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    got.assert_error(504, "upstream_timeout");
    assert!(got.text().contains("total"), "{}", got.text());
}

#[tokio::test]
async fn stream_passes_chunks_through_before_the_upstream_finishes() {
    let (up, gate) = gated(3).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let resp = stream_post(&gw.url("/v1/chat/completions")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-gateway-target"], "up/upstream-model");
    let mut body = resp.into_body();
    // The upstream holds its last chunk until the gate opens; the first must arrive anyway.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first chunk arrives while the upstream still holds the last one")
        .unwrap()
        .unwrap();
    assert!(
        std::str::from_utf8(first.data_ref().unwrap())
            .unwrap()
            .starts_with("data: ")
    );
    gate.notify_one();
    let rest = body.collect().await.expect("clean end").to_bytes();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn stream_is_not_re_encoded() {
    let chunks = vec![
        bytes::Bytes::from_static(b": keep-alive comment\n\n"),
        bytes::Bytes::from_static(b"event: custom\r\ndata: {\"a\":  1}\r\n\r\n"),
        bytes::Bytes::from_static(b"data: [DONE]\n\n"),
    ];
    let expected: Vec<u8> = chunks.concat();
    let up = Upstream::start(move |_, _| Reply::stream(chunks.clone(), Duration::ZERO, End::Clean))
        .await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let (text, clean) = read_stream(stream_post(&gw.url("/v1/chat/completions")).await).await;
    assert!(clean);
    assert_eq!(text.as_bytes(), &expected[..]);
}

async fn assert_stream_error(reply: Reply, provider_extra: &str, code: &str) -> String {
    let up = Upstream::start(move |_, _| reply.clone()).await;
    let gw = Gateway::start(&config_for(&up.url(), provider_extra)).await;
    let resp = stream_post(&gw.url("/v1/chat/completions")).await;
    assert_eq!(resp.status(), 200);
    let (text, clean) = read_stream(resp).await;
    assert!(!clean, "a failed stream must not end cleanly: {text}");
    assert!(!text.contains("[DONE]"), "{text}");
    let v = last_event(&text);
    assert_eq!(v["error"]["code"], code, "{text}");
    assert!(v["error"]["message"].is_string());
    assert_eq!(
        text.matches("\"error\"").count(),
        1,
        "exactly one error event: {text}"
    );
    text
}

#[tokio::test]
async fn stream_that_drops_mid_way_ends_with_an_error_event() {
    let text = assert_stream_error(
        // The interval lets the upstream flush its chunks before it drops the connection.
        Reply::stream(
            sse_chunks(3)[..2].to_vec(),
            Duration::from_millis(50),
            End::Drop,
        ),
        "",
        "upstream_stream_error",
    )
    .await;
    assert!(
        text.starts_with("data: "),
        "chunks before the failure are delivered: {text}"
    );
}

#[tokio::test]
async fn stream_dropping_inside_an_event_still_yields_a_parsable_error_event() {
    let chunks = vec![
        bytes::Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"),
        bytes::Bytes::from_static(b"data: {\"cho"),
    ];
    let text = assert_stream_error(
        Reply::Sse {
            chunks,
            interval: Duration::from_millis(50),
            end: End::Drop,
            gate: None,
        },
        "",
        "upstream_stream_error",
    )
    .await;
    assert!(
        text.contains("data: {\"cho\n\ndata: {\"error\""),
        "{text:?}"
    );
}

#[tokio::test]
async fn stream_that_stalls_ends_with_an_idle_timeout_event() {
    assert_stream_error(
        Reply::stream(sse_chunks(3)[..2].to_vec(), Duration::ZERO, End::Stall),
        &timeouts("5s", "60s", "300ms", "10m"),
        "upstream_idle_timeout",
    )
    .await;
}

#[tokio::test]
async fn stream_over_total_ends_with_an_error_event() {
    // A chunk every 50 ms keeps `idle` (60 s) happy; `total` (500 ms) cuts it.
    assert_stream_error(
        Reply::stream(sse_chunks(400), Duration::from_millis(50), End::Clean),
        &timeouts("5s", "60s", "60s", "500ms"),
        "upstream_stream_error",
    )
    .await;
}

/// Bound on how long a stream that should be cut may run: far above the deadlines under
/// test (about 1 s), far below forever.
const CUT_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn total_ends_a_stream_that_never_pauses() {
    // A chunk every 5 ms: the body is almost always ready, and `idle` (60 s) never fires.
    let text = tokio::time::timeout(
        CUT_WITHIN,
        assert_stream_error(
            Reply::Endless(Duration::from_millis(5)),
            &timeouts("5s", "60s", "60s", "1s"),
            "upstream_stream_error",
        ),
    )
    .await
    .expect("`total` (1 s) cuts a stream that never pauses");
    assert!(text.starts_with("data: "), "chunks came through first");
    assert!(
        last_event(&text)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("total timeout"),
        "{}",
        last_event(&text)
    );
}

#[tokio::test]
async fn drain_deadline_ends_a_stream_that_never_pauses() {
    let up = Upstream::start(|_, _| Reply::Endless(Duration::from_millis(5))).await;
    let cfg = format!(
        "[server]\nshutdown_timeout = \"300ms\"\n{}",
        config_for(&up.url(), "")
    );
    let mut gw = Gateway::start(&cfg).await;
    let resp = stream_post(&gw.url("/v1/chat/completions")).await;
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(read_stream(resp));
    gw.shutdown();
    let (text, clean) = tokio::time::timeout(CUT_WITHIN, reader)
        .await
        .expect("the drain deadline cuts a stream that never pauses")
        .unwrap();
    assert!(!clean, "a cut stream must not end cleanly");
    assert!(!text.contains("[DONE]"));
    assert_eq!(
        text.matches("\"error\"").count(),
        1,
        "exactly one error event"
    );
    let v = last_event(&text);
    assert_eq!(v["error"]["code"], "upstream_stream_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{v}"
    );
    let task = std::mem::replace(&mut gw.task, tokio::spawn(async { Ok(()) }));
    tokio::time::timeout(CUT_WITHIN, task)
        .await
        .expect("the server ends after the drain")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn stream_failing_before_its_first_byte_is_a_plain_error() {
    let up = Upstream::start(|_, _| Reply::Hang).await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        &timeouts("5s", "300ms", "60s", "10m"),
    ))
    .await;
    let got = collect(stream_post(&gw.url("/v1/chat/completions")).await).await;
    got.assert_error(504, "upstream_timeout");
}

#[tokio::test]
async fn client_disconnect_mid_stream_drops_the_upstream_request() {
    let up = Upstream::start(|_, _| {
        Reply::stream(sse_chunks(1000), Duration::from_millis(200), End::Clean)
    })
    .await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let resp = stream_post(&gw.url("/v1/chat/completions")).await;
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert!(
        up.wait_cancelled(1, Duration::from_secs(10)).await,
        "upstream stream still running after the client left"
    );
}

#[tokio::test]
async fn client_disconnect_before_headers_drops_the_upstream_request() {
    let up = Upstream::start(|_, _| Reply::Hang).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    // Give up on the request after it reached the upstream.
    let waiting = tokio::spawn(async move { send(&c, "POST", &url, &[], CHAT).await });
    while up.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    waiting.abort();
    assert!(
        up.wait_cancelled(1, Duration::from_secs(10)).await,
        "upstream request still pending after the client left"
    );
}
