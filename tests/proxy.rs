//! The core proxy over real sockets: routing, the in-place model rewrite, header rules,
//! pass-through of upstream answers, client keys, endpoints and gateway headers.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test]
async fn alias_routes_to_first_target_and_rewrites_only_the_model() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let body = r#"{ "messages":[{"role":"user","content":"hi \"there\""}], "model" : "m", "temperature":0.70,"x":{"model":"keep"},"n":1e2 }"#;
    let got = post(&gw.url("/v1/chat/completions"), body).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["choices"][0]["message"]["content"], "hello");
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].uri.path(), "/v1/chat/completions");
    let expected = body.replace(r#""model" : "m""#, r#""model" : "upstream-model""#);
    assert_eq!(
        std::str::from_utf8(&reqs[0].body).unwrap(),
        expected,
        "only the model value changes"
    );
    assert_eq!(got.header("x-gateway-target"), "up/upstream-model");
    assert_eq!(got.header("x-gateway-attempts"), "1");
}

#[tokio::test]
async fn provider_slash_model_goes_straight_to_the_provider() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let got = post(
        &gw.url("/v1/chat/completions"),
        r#"{"model":"up/meta-llama/Llama-3-8B"}"#,
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(up.requests()[0].json()["model"], "meta-llama/Llama-3-8B");
    assert_eq!(got.header("x-gateway-target"), "up/meta-llama/Llama-3-8B");
}

#[tokio::test]
async fn every_v1_endpoint_is_routed_with_its_path_and_query() {
    let up = Upstream::start(|_, _| Reply::json(200, json!({"ok": true}))).await;
    let base = format!("http://{}/openai/v1/", up.addr);
    let gw = Gateway::start(&config_for(&base, "")).await;
    for path in [
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/audio/speech",
        "/v1/chat/completions?api-version=2",
    ] {
        let got = post(&gw.url(path), r#"{"model":"m","input":"x"}"#).await;
        assert_eq!(got.status, 200, "{path}: {}", got.text());
    }
    let paths: Vec<String> = up.requests().iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(
        paths,
        [
            "/openai/v1/completions",
            "/openai/v1/embeddings",
            "/openai/v1/responses",
            "/openai/v1/audio/speech",
            "/openai/v1/chat/completions?api-version=2"
        ]
    );
}

#[tokio::test]
async fn unknown_model_is_404() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    for model in ["gpt-9", "nope/x", "up/"] {
        let got = post(
            &gw.url("/v1/chat/completions"),
            &json!({"model": model}).to_string(),
        )
        .await;
        got.assert_error(404, "model_not_found");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn bad_bodies_are_400_invalid_json() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    for body in [
        "",
        "not json",
        "[]",
        "{}",
        r#"{"model":42}"#,
        r#"{"model":"m""#,
        r#"{"model":"m","model":"m"}"#,
    ] {
        let got = post(&gw.url("/v1/chat/completions"), body).await;
        got.assert_error(400, "invalid_json");
        assert!(!got.header("x-request-id").is_empty());
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn provider_key_replaces_client_auth_and_rotates() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "api_keys = [\"sk-upstream-one-1111\", \"sk-upstream-two-2222\"]\nheaders = { \"OpenAI-Organization\" = \"org-9\" }",
    ))
    .await;
    for _ in 0..4 {
        let got = post_with(
            &gw.url("/v1/chat/completions"),
            &[
                ("authorization", "Bearer client-key"),
                ("x-custom", "kept"),
                ("user-agent", "agent/1.0"),
            ],
            CHAT,
        )
        .await;
        assert_eq!(got.status, 200);
    }
    let auths: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        auths,
        [
            "Bearer sk-upstream-one-1111",
            "Bearer sk-upstream-two-2222",
            "Bearer sk-upstream-one-1111",
            "Bearer sk-upstream-two-2222"
        ]
    );
    let r = &up.requests()[0];
    assert_eq!(r.headers["openai-organization"], "org-9");
    assert_eq!(r.headers["x-custom"], "kept");
    assert_eq!(r.headers["user-agent"], "agent/1.0");
    assert_eq!(
        r.headers["host"],
        up.addr.to_string(),
        "Host comes from base_url"
    );
    assert!(r.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn without_provider_keys_client_authorization_is_not_forwarded() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    post_with(
        &gw.url("/v1/chat/completions"),
        &[("authorization", "Bearer client-secret")],
        CHAT,
    )
    .await;
    assert!(!up.requests()[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let up = Upstream::start(|_, _| {
        Reply::Full(
            http::StatusCode::OK,
            vec![
                ("content-type", "application/json".into()),
                ("connection", "x-upstream-hop".into()),
                ("x-upstream-hop", "1".into()),
                ("keep-alive", "timeout=5".into()),
                ("x-upstream-kept", "1".into()),
            ],
            bytes::Bytes::from(chat_completion("x").to_string()),
        )
    })
    .await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let got = post_with(
        &gw.url("/v1/chat/completions"),
        &[
            ("connection", "x-client-hop"),
            ("x-client-hop", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("x-client-kept", "1"),
        ],
        CHAT,
    )
    .await;
    assert_eq!(got.status, 200);
    let h = &up.requests()[0].headers;
    for gone in ["x-client-hop", "te", "proxy-authorization"] {
        assert!(!h.contains_key(gone), "{gone} forwarded upstream");
    }
    assert!(h.contains_key("x-client-kept"));
    assert!(!got.headers.contains_key("x-upstream-hop"));
    assert!(!got.headers.contains_key("keep-alive"));
    assert_eq!(got.header("x-upstream-kept"), "1");
}

#[tokio::test]
async fn upstream_errors_pass_through_untouched() {
    let body = json!({"error": {"message": "bad param", "type": "invalid_request_error", "param": "temperature", "code": "weird"}});
    let b2 = body.clone();
    let up = Upstream::start(move |_, n| match n {
        0 => Reply::json(400, b2.clone()),
        _ => Reply::Full(
            http::StatusCode::SERVICE_UNAVAILABLE,
            vec![("retry-after", "7".into())],
            bytes::Bytes::from_static(b"upstream down"),
        ),
    })
    .await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json(), body);
    assert_eq!(got.header("x-gateway-target"), "up/upstream-model");
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), "upstream down");
    assert_eq!(got.header("retry-after"), "7");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let up = Upstream::start(|_, _| {
        Reply::Full(
            http::StatusCode::TEMPORARY_REDIRECT,
            vec![("location", "http://127.0.0.1:1/elsewhere".into())],
            bytes::Bytes::new(),
        )
    })
    .await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 307);
    assert_eq!(got.header("location"), "http://127.0.0.1:1/elsewhere");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn client_keys_guard_v1_only() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let cfg = format!(
        "[server]\napi_keys = [\"gw-key-1\", \"gw-key-2\"]\n{}",
        config_for(&up.url(), "")
    );
    let gw = Gateway::start(&cfg).await;
    let url = gw.url("/v1/chat/completions");
    post(&url, CHAT).await.assert_error(401, "invalid_api_key");
    post_with(&url, &[("authorization", "Bearer wrong")], CHAT)
        .await
        .assert_error(401, "invalid_api_key");
    post_with(&url, &[("authorization", "gw-key-1")], CHAT)
        .await
        .assert_error(401, "invalid_api_key");
    assert_eq!(up.hits(), 0, "rejected requests never reach the provider");
    assert_eq!(
        post_with(&url, &[("authorization", "Bearer gw-key-2")], CHAT)
            .await
            .status,
        200
    );
    let models = collect(send(&client(), "GET", &gw.url("/v1/models"), &[], "").await).await;
    models.assert_error(401, "invalid_api_key");
    let health = collect(send(&client(), "GET", &gw.url("/healthz"), &[], "").await).await;
    assert_eq!(health.status, 200);
    // The key the client sent never goes upstream.
    assert_ne!(
        up.requests()[0]
            .headers
            .get("authorization")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer gw-key-2"[..])
    );
}

#[tokio::test]
async fn models_health_and_ready_endpoints() {
    let gw = Gateway::start(
        "[providers.demo]\nkind = \"mock\"\n[models.b]\ntargets = [\"demo/x\"]\n[models.a]\ntargets = [\"demo/y\"]\n",
    )
    .await;
    let c = client();
    let got = collect(send(&c, "GET", &gw.url("/v1/models"), &[], "").await).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json(),
        json!({"object": "list", "data": [
            {"id": "a", "object": "model", "created": 0, "owned_by": "gateway"},
            {"id": "b", "object": "model", "created": 0, "owned_by": "gateway"}]})
    );
    assert_eq!(
        collect(send(&c, "GET", &gw.url("/healthz"), &[], "").await)
            .await
            .status,
        200
    );
    assert_eq!(
        collect(send(&c, "GET", &gw.url("/readyz"), &[], "").await)
            .await
            .status,
        200
    );
    collect(send(&c, "GET", &gw.url("/nope"), &[], "").await)
        .await
        .assert_error(404, "not_found");
    collect(send(&c, "GET", &gw.url("/v1/chat/completions"), &[], "").await)
        .await
        .assert_error(405, "method_not_allowed");
    gw.state.start_draining();
    assert_eq!(
        collect(send(&c, "GET", &gw.url("/readyz"), &[], "").await)
            .await
            .status,
        503
    );
    assert_eq!(
        collect(send(&c, "GET", &gw.url("/healthz"), &[], "").await)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn request_id_is_echoed_or_generated_and_timing_reported() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let got = post_with(
        &gw.url("/v1/chat/completions"),
        &[("x-request-id", "trace-abc-123")],
        CHAT,
    )
    .await;
    assert_eq!(got.header("x-request-id"), "trace-abc-123");
    assert_eq!(up.requests()[0].headers["x-request-id"], "trace-abc-123");
    let a = post(&gw.url("/v1/chat/completions"), CHAT).await;
    let b = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert!(a.header("x-request-id").len() >= 16);
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
    let timing = a.header("server-timing");
    let parts: Vec<&str> = timing.split(", ").collect();
    assert_eq!(parts.len(), 3, "{timing}");
    for (p, name) in parts.iter().zip(["queue", "upstream", "total"]) {
        let dur = p
            .strip_prefix(&format!("{name};dur="))
            .unwrap_or_else(|| panic!("{timing}"));
        assert!(dur.parse::<f64>().unwrap() >= 0.0);
    }
}

#[tokio::test]
async fn body_over_limit_is_413_by_content_length_and_while_streaming() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let cfg = format!(
        "[server]\nmax_body_size = \"1KiB\"\n{}",
        config_for(&up.url(), "")
    );
    let gw = Gateway::start(&cfg).await;
    let big = format!(r#"{{"model":"m","pad":"{}"}}"#, "x".repeat(2000));
    post(&gw.url("/v1/chat/completions"), &big)
        .await
        .assert_error(413, "request_too_large");

    // Content-Length announces too much, and no body follows: answered before any body is read.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"));

    // Chunked, no Content-Length: cut off while reading.
    let chunks = futures_chunks(&big);
    let resp = gateway_chunked_post(&gw.url("/v1/chat/completions"), chunks).await;
    resp.assert_error(413, "request_too_large");
    assert_eq!(up.hits(), 0);
    let ok = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(ok.status, 200);
}

fn futures_chunks(s: &str) -> Vec<bytes::Bytes> {
    s.as_bytes()
        .chunks(300)
        .map(bytes::Bytes::copy_from_slice)
        .collect()
}

async fn gateway_chunked_post(url: &str, chunks: Vec<bytes::Bytes>) -> Got {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let c: Client<_, Chunked> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::post(url)
        .body(Chunked(chunks.into()))
        .unwrap();
    collect(c.request(req).await.unwrap()).await
}

/// A body of unknown length, so it is sent chunked.
struct Chunked(std::collections::VecDeque<bytes::Bytes>);

impl http_body::Body for Chunked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let resp = send(
        &h2_client(),
        "POST",
        &gw.url("/v1/chat/completions"),
        &[],
        CHAT,
    )
    .await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let got = collect(resp).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["choices"][0]["message"]["content"], "hello");
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let gw = Gateway::start(
        "[server]\nheader_read_timeout = \"200ms\"\n[providers.demo]\nkind = \"mock\"\n",
    )
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    // The gateway closes the connection (read returns 0 or an error), well before 10 s.
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("connection cut");
    // A reset (Err) is a cut-off too.
    if let Ok(n) = r {
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || head.contains("408"), "{head:?}");
    }
}

/// A plain connection that never sends a byte, or stops inside what could be h2c's preface,
/// is closed at `header_read_timeout` too: the listener waits for the bytes that tell HTTP/1
/// from h2c no longer than that.
#[tokio::test]
async fn a_silent_connection_is_cut_off() {
    let gw = Gateway::start(
        "[server]\nheader_read_timeout = \"200ms\"\n[providers.demo]\nkind = \"mock\"\n",
    )
    .await;
    use tokio::io::AsyncWriteExt;
    // Nothing, part of the h2c preface, or all of it (h2c then has no header timer of its
    // own) and then silence.
    for sent in [
        &b""[..],
        b"PRI * HTTP/2",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(sent).await.unwrap();
        // After a whole preface the server sends its SETTINGS first.
        let closed = closed_by_peer(&mut s, Duration::from_secs(10)).await;
        assert_eq!(closed, Ok(()), "{sent:?}: connection not cut");
    }
    // The listener still serves everyone else, over HTTP/1.1 and h2c alike.
    for c in [client(), h2_client()] {
        let health = collect(send(&c, "GET", &gw.url("/healthz"), &[], "").await).await;
        assert_eq!(health.status, 200);
    }
}

#[tokio::test]
async fn pool_http2_setting_picks_the_upstream_protocol() {
    for (mode, version) in [
        ("always", http::Version::HTTP_2),
        ("never", http::Version::HTTP_11),
        ("auto", http::Version::HTTP_11),
    ] {
        let up = Upstream::start(|_, _| Reply::ok()).await;
        let gw = Gateway::start(&config_for(
            &up.url(),
            &format!("pool = {{ http2 = \"{mode}\" }}"),
        ))
        .await;
        let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(got.status, 200, "{mode}: {}", got.text());
        assert_eq!(up.requests()[0].version, version, "{mode}");
    }
}
