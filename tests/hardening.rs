//! Hardening (issue 7) over real sockets: client credentials stay at the gateway, errors an
//! agent can act on (`x-should-retry`, `retry-after`, 405, 426, `/v1/models/{id}`), breaker
//! admission after the provider slot, identity encoding upstream, and the provider key pool.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use support::*;

const CLIENT_KEY: &str = "client-key-0123456789";
const K1: &str = "sk-upstream-aaaaaaaa1111";
const K2: &str = "sk-upstream-bbbbbbbb2222";

fn keyed(url: &str, keys: &[&str], extra: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        "[server]\napi_keys = [\"{CLIENT_KEY}\"]\n\n[providers.up]\nbase_url = \"{url}\"\napi_keys = [{}]\n{extra}\n\n[models.m]\ntargets = [\"up/upstream-model\"]\n",
        keys.join(", ")
    )
}

fn auth_of(r: &Recorded) -> String {
    r.headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn admin_get(gw: &Gateway, path: &str) -> Got {
    collect(send(&client(), "GET", &gw.url(path), &[], "").await).await
}

async fn admin_post(gw: &Gateway, path: &str) -> Got {
    collect(send(&client(), "POST", &gw.url(path), &[], "").await).await
}

#[tokio::test]
async fn client_credentials_never_reach_the_provider() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&keyed(&up.url(), &[K1], "")).await;
    let bearer = format!("Bearer {CLIENT_KEY}");
    // The client key in each accepted form, with every other credential a client may carry.
    let forms: [(&str, &str); 3] = [
        ("authorization", &bearer),
        ("x-api-key", CLIENT_KEY),
        ("api-key", CLIENT_KEY),
    ];
    for (name, value) in forms {
        let got = post_with(
            &gw.url("/v1/chat/completions"),
            &[
                (name, value),
                ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
                ("x-goog-api-key", "goog-secret-key"),
                ("cookie", "session=secret-cookie"),
                ("accept-encoding", "gzip, br"),
                ("x-custom", "kept"),
                ("content-type", "application/json"),
            ],
            CHAT,
        )
        .await;
        assert_eq!(got.status, 200, "{name}: {}", got.text());
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        for h in [
            "proxy-authorization",
            "x-api-key",
            "api-key",
            "x-goog-api-key",
            "cookie",
        ] {
            assert!(!r.headers.contains_key(h), "{h} reached the provider");
        }
        // The provider's own key, set by the gateway, and nothing of the client's.
        assert_eq!(auth_of(r), format!("Bearer {K1}"));
        assert_eq!(r.headers["accept-encoding"], "identity");
        assert_eq!(r.headers["x-custom"], "kept");
        let all = format!("{:?}", r.headers);
        assert!(!all.contains(CLIENT_KEY), "client key leaked: {all}");
        assert!(!all.contains("secret"), "a client secret leaked: {all}");
    }
}

#[tokio::test]
async fn a_provider_without_keys_gets_no_authorization_at_all() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let got = post_with(
        &gw.url("/v1/chat/completions"),
        &[
            ("authorization", "Bearer client-supplied"),
            ("x-api-key", "client-supplied"),
        ],
        CHAT,
    )
    .await;
    assert_eq!(got.status, 200);
    let r = &up.requests()[0];
    assert!(!r.headers.contains_key("authorization"));
    assert!(!r.headers.contains_key("x-api-key"));
}

#[tokio::test]
async fn client_keys_are_checked_in_every_form() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&keyed(&up.url(), &[K1], "")).await;
    let url = gw.url("/v1/chat/completions");
    for (name, value) in [
        ("authorization", "Bearer wrong-key"),
        ("x-api-key", "wrong-key"),
        ("api-key", "wrong-key"),
        ("authorization", CLIENT_KEY), // no Bearer scheme
    ] {
        let got = post_with(&url, &[(name, value)], CHAT).await;
        got.assert_error(401, "invalid_api_key");
        assert_eq!(got.header("x-should-retry"), "false");
    }
    post(&url, CHAT).await.assert_error(401, "invalid_api_key");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn the_gateways_own_errors_tell_sdks_not_to_retry() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "[server]\nmax_body_size = \"1KiB\"\n{}",
        config_for(&up.url(), "")
    ))
    .await;
    let c = client();
    let big = format!(r#"{{"model":"m","pad":"{}"}}"#, "x".repeat(2000));
    let url = gw.url("/v1/chat/completions");
    let cases: Vec<(Got, u16, &str)> = vec![
        (post(&url, "not json").await, 400, "invalid_json"),
        (
            post(&url, r#"{"model":"nope","messages":[]}"#).await,
            404,
            "model_not_found",
        ),
        (
            collect(send(&c, "GET", &url, &[], "").await).await,
            405,
            "method_not_allowed",
        ),
        (post(&url, &big).await, 413, "request_too_large"),
        (
            collect(send(&c, "GET", &gw.url("/nowhere"), &[], "").await).await,
            404,
            "not_found",
        ),
    ];
    for (got, status, code) in cases {
        got.assert_error(status, code);
        assert_eq!(got.header("x-should-retry"), "false", "{code}");
    }
    // A forced-open circuit: final, and no retry-after (it never half-opens by itself).
    assert_eq!(
        admin_post(&gw, "/admin/providers/up/open").await.status,
        200
    );
    let got = post(&url, CHAT).await;
    got.assert_error(503, "circuit_open");
    assert_eq!(got.header("x-should-retry"), "false");
    assert!(got.headers.get("retry-after").is_none());
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn local_overload_stays_retryable_and_wins_when_nothing_was_tried() {
    let (busy, gate) = gated(2).await;
    let gw = Gateway::start(&format!(
        "[providers.a]\nkind = \"mock\"\n\
         [providers.b]\nbase_url = \"{}\"\nlimits = {{ max_concurrency = 1, queue_size = 0 }}\n\
         [models.m]\ntargets = [\"a/x\", \"b/y\"]\n\
         [models.only_b]\ntargets = [\"b/y\"]\n",
        busy.url()
    ))
    .await;
    assert_eq!(admin_post(&gw, "/admin/providers/a/open").await.status, 200);
    // b's only slot is held by a stream.
    let held = send(
        &client(),
        "POST",
        &gw.url("/v1/chat/completions"),
        &[],
        r#"{"model":"only_b","stream":true,"messages":[]}"#,
    )
    .await;
    assert_eq!(held.status(), 200);
    // only_b: queue_full, retryable after its retry-after.
    let got = post(
        &gw.url("/v1/chat/completions"),
        r#"{"model":"only_b","messages":[]}"#,
    )
    .await;
    got.assert_error(503, "queue_full");
    assert!(got.headers.get("x-should-retry").is_none());
    assert!(got.header("retry-after").parse::<u64>().unwrap() >= 1);
    // m: a is forced open (first), b is full: the overload decides the answer.
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    got.assert_error(503, "queue_full");
    assert!(got.headers.get("x-should-retry").is_none());
    gate.notify_one();
    assert!(read_stream(held).await.1);
}

#[tokio::test]
async fn models_are_listed_and_answered_by_id() {
    let gw = Gateway::start("[providers.demo]\nkind = \"mock\"\n[models.m]\ntargets = [\"demo/x\"]\n[models.\"team/coder\"]\ntargets = [\"demo/y\"]\n").await;
    let c = client();
    let got = collect(send(&c, "GET", &gw.url("/v1/models/m"), &[], "").await).await;
    assert_eq!(got.status, 200);
    let v = got.json();
    assert_eq!(v["id"], "m");
    assert_eq!(v["object"], "model");
    assert_eq!(v["owned_by"], "gateway");
    let got = collect(send(&c, "GET", &gw.url("/v1/models/team/coder"), &[], "").await).await;
    assert_eq!(got.json()["id"], "team/coder");
    let got = collect(send(&c, "GET", &gw.url("/v1/models/gpt-9"), &[], "").await).await;
    got.assert_error(404, "model_not_found");
    assert_eq!(got.header("x-should-retry"), "false");
    for (method, path) in [("POST", "/v1/models/m"), ("DELETE", "/v1/models")] {
        let got = collect(send(&c, method, &gw.url(path), &[], "").await).await;
        got.assert_error(405, "method_not_allowed");
    }
    let list = collect(send(&c, "GET", &gw.url("/v1/models"), &[], "").await).await;
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 2);
}

/// Sends raw bytes on a fresh connection and returns what came back until the peer closed
/// or the head of a response was read.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("the gateway answers")
            .unwrap();
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if n == 0 || text.contains("}}") {
            return text.into_owned();
        }
    }
}

#[tokio::test]
async fn a_websocket_upgrade_is_refused_with_426() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let text = raw(
        gw.addr,
        b"GET /v1/responses HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 426"), "{text}");
    assert!(text.contains("websocket_unsupported"), "{text}");
    assert!(text.to_ascii_lowercase().contains("x-should-retry: false"));
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn unusable_request_ids_are_replaced() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let url = gw.url("/v1/chat/completions");
    let long = "x".repeat(129);
    let max = "y".repeat(128);
    for (sent, kept) in [
        ("abc-123_XYZ.~", true),
        (max.as_str(), true),
        (long.as_str(), false),
        ("has space", false),
        ("tab\there", false),
    ] {
        let got = post_with(&url, &[("x-request-id", sent)], CHAT).await;
        assert_eq!(got.status, 200);
        let id = got.header("x-request-id");
        assert_eq!(id == sent, kept, "{sent:?} -> {id:?}");
        assert!((1..=128).contains(&id.len()));
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
}

#[tokio::test]
async fn a_refused_key_is_set_aside_and_the_request_goes_again_at_once() {
    let up = Upstream::start(|r, _| {
        if auth_of(r) == format!("Bearer {K1}") {
            Reply::json(
                401,
                json!({"error": {"message": "bad key", "code": "invalid_api_key"}}),
            )
        } else {
            Reply::ok()
        }
    })
    .await;
    let gw = Gateway::start(&keyed(&up.url(), &[K1, K2], "key_cooldown = \"20m\"")).await;
    let auth = format!("Bearer {CLIENT_KEY}");
    let url = gw.url("/v1/chat/completions");
    let got = post_with(&url, &[("authorization", &auth)], CHAT).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("x-gateway-attempts"), "2");
    for _ in 0..4 {
        let got = post_with(&url, &[("authorization", &auth)], CHAT).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("x-gateway-attempts"), "1");
    }
    let keys: Vec<String> = up.requests().iter().map(auth_of).collect();
    assert_eq!(keys.len(), 6);
    assert_eq!(keys[0], format!("Bearer {K1}"));
    assert!(
        keys[1..].iter().all(|k| *k == format!("Bearer {K2}")),
        "{keys:?}"
    );

    let admin = admin_get(&gw, "/admin/providers").await;
    assert!(!admin.text().contains(K1) && !admin.text().contains(K2));
    let p = &admin.json()["providers"][0];
    assert_eq!(p["state"], "closed");
    assert_eq!(p["keys"][0]["key"], "…1111");
    assert_eq!(p["keys"][0]["state"], "cooling");
    let left = p["keys"][0]["retry_in_s"].as_f64().unwrap();
    assert!(left > 1000.0 && left <= 1200.0, "{left}");
    assert_eq!(
        p["keys"][1],
        json!({"key": "…2222", "state": "ready", "retry_in_s": null})
    );
    assert_eq!(
        gw.metric(r#"gateway_provider_keys{provider="up",state="cooling"}"#)
            .await,
        1.0
    );
    assert_eq!(
        gw.metric(r#"gateway_provider_keys{provider="up",state="ready"}"#)
            .await,
        1.0
    );
    // A refused key is neither a provider failure nor a retry.
    assert_eq!(
        gw.metric(r#"gateway_retries_total{provider="up"}"#).await,
        0.0
    );
    assert!(!gw.metrics().await.contains(K1));
}

#[tokio::test]
async fn when_every_key_is_refused_the_answer_passes_through_then_keys_cool() {
    let up = Upstream::start(|_, _| {
        Reply::json(
            403,
            json!({"error": {"message": "key revoked", "code": "forbidden"}}),
        )
    })
    .await;
    let gw = Gateway::start(&keyed(&up.url(), &[K1, K2], "")).await;
    let auth = format!("Bearer {CLIENT_KEY}");
    let url = gw.url("/v1/chat/completions");
    let got = post_with(&url, &[("authorization", &auth)], CHAT).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.json()["error"]["message"], "key revoked");
    assert_eq!(got.header("x-gateway-attempts"), "2");
    assert_eq!(got.header("x-should-retry"), "false");
    // Both keys cool now: the provider is passed over without a request.
    let got = post_with(&url, &[("authorization", &auth)], CHAT).await;
    got.assert_error(503, "keys_cooling");
    assert_eq!(got.header("x-should-retry"), "false");
    let secs: u64 = got.header("retry-after").parse().unwrap();
    assert!(
        secs > 1700 && secs <= 1800,
        "default key_cooldown is 30m: {secs}"
    );
    assert_eq!(up.hits(), 2);
    assert_eq!(
        gw.metric(r#"gateway_breaker_state{provider="up"}"#).await,
        0.0,
        "a refused key says nothing about the provider's health"
    );
}

#[tokio::test]
async fn keys_cooling_fails_over_to_the_next_target() {
    let a = Upstream::start(|_, _| Reply::json(401, json!({"error": {"message": "no"}}))).await;
    let b = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "[providers.a]\nbase_url = \"{}\"\napi_keys = [\"{K1}\"]\n\
         [providers.b]\nbase_url = \"{}\"\n\
         [models.m]\ntargets = [\"a/x\", \"b/y\"]\n",
        a.url(),
        b.url()
    ))
    .await;
    for attempts in ["2", "1"] {
        let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("x-gateway-target"), "b/y");
        assert_eq!(got.header("x-gateway-attempts"), attempts);
    }
    assert_eq!(a.hits(), 1, "the cooling key is not sent again");
}

#[tokio::test]
async fn a_rate_limited_key_waits_alone() {
    let up = Upstream::start(|r, _| {
        if auth_of(r) == format!("Bearer {K1}") {
            Reply::Full(
                http::StatusCode::TOO_MANY_REQUESTS,
                vec![("retry-after", "30".into())],
                bytes::Bytes::from_static(b"{\"error\":{\"message\":\"slow down\"}}"),
            )
        } else {
            Reply::ok()
        }
    })
    .await;
    let gw = Gateway::start(&keyed(&up.url(), &[K1, K2], "")).await;
    let auth = format!("Bearer {CLIENT_KEY}");
    let url = gw.url("/v1/chat/completions");
    for _ in 0..3 {
        let got = post_with(&url, &[("authorization", &auth)], CHAT).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    assert_eq!(up.hits(), 4, "one 429 on k1, then k2 only");
    let p = &admin_get(&gw, "/admin/providers").await.json()["providers"][0];
    assert_eq!(p["keys"][0]["state"], "cooling");
    let left = p["keys"][0]["retry_in_s"].as_f64().unwrap();
    assert!(left > 20.0 && left <= 30.0, "{left}");
    assert_eq!(p["keys"][1]["state"], "ready");
}

/// An upstream for the admission tests: `x-fail` answers 500; `x-hold` streams one chunk,
/// waits for `gate`, then ends (`x-drop`: resets instead); anything else answers 200.
async fn admission_upstream() -> (Upstream, Arc<Notify>) {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let up = Upstream::start(move |r, _| {
        if r.headers.contains_key("x-fail") {
            Reply::json(500, json!({"error": {"message": "boom"}}))
        } else if r.headers.contains_key("x-hold") {
            Reply::Sse {
                chunks: sse_chunks(2),
                interval: Duration::ZERO,
                end: if r.headers.contains_key("x-drop") {
                    End::Drop
                } else {
                    End::Clean
                },
                gate: Some(g.clone()),
            }
        } else {
            Reply::ok()
        }
    })
    .await;
    (up, gate)
}

async fn hold(gw: &Gateway, extra: &[(&str, &str)]) -> http::Response<hyper::body::Incoming> {
    let mut h = vec![("x-hold", "1")];
    h.extend_from_slice(extra);
    let resp = send(
        &client(),
        "POST",
        &gw.url("/v1/chat/completions"),
        &h,
        CHAT_STREAM,
    )
    .await;
    assert_eq!(resp.status(), 200);
    resp
}

fn queued(gw: &Gateway, provider: &str) -> u32 {
    gw.state.runtime().providers[provider]
        .health
        .bulkhead
        .queued()
}

#[tokio::test]
async fn nothing_admitted_while_closed_is_sent_after_the_circuit_opened() {
    let (up, gate) = admission_upstream().await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "limits = { max_concurrency = 1, queue_size = 4, queue_timeout = \"30s\" }\n\
         breaker = { failure_threshold = 1, cooldown = \"60s\" }\nretry = { max_attempts = 1 }",
    ))
    .await;
    let held = hold(&gw, &[("x-drop", "1")]).await;
    // Queued while the circuit is closed.
    let url = gw.url("/v1/chat/completions");
    let waiting = tokio::spawn(async move { post(&url, CHAT).await });
    until("a request queued", async || queued(&gw, "up") == 1).await;
    // The stream holding the slot fails: the circuit opens as the slot comes free.
    gate.notify_one();
    assert!(!read_stream(held).await.1);
    let got = waiting.await.unwrap();
    got.assert_error(503, "circuit_open");
    assert_eq!(
        up.hits(),
        1,
        "the queued request was not sent to an open circuit"
    );
}

#[tokio::test]
async fn a_half_open_probe_is_not_stuck_behind_a_full_queue() {
    let (up, gate) = admission_upstream().await;
    let provider = |max: u32| {
        config_for(
            &up.url(),
            &format!(
                "limits = {{ max_concurrency = {max}, queue_size = 4, queue_timeout = \"30s\" }}\n\
                 breaker = {{ failure_threshold = 1, cooldown = \"1s\" }}\nretry = {{ max_attempts = 1 }}"
            ),
        )
    };
    let (gw, path) = Gateway::start_file(&provider(2)).await;
    // A healthy stream holds one slot through what follows.
    let held = hold(&gw, &[]).await;
    // Another request fails: the circuit opens.
    let got = post_with(&gw.url("/v1/chat/completions"), &[("x-fail", "1")], CHAT).await;
    assert_eq!(got.status, 500);
    // The operator shrinks the provider to one slot: the held stream fills it.
    std::fs::write(&path, provider(1)).unwrap();
    assert_eq!(admin_post(&gw, "/admin/reload").await.status, 200);
    until("cooldown over", async || {
        admin_get(&gw, "/admin/providers").await.json()["providers"][0]["state"] == "half_open"
    })
    .await;
    // Two requests wait for the slot. Neither takes the probe while it waits, so the second
    // is queued too instead of being turned away as "circuit open".
    let url = gw.url("/v1/chat/completions");
    let first = tokio::spawn({
        let url = url.clone();
        async move { post(&url, CHAT).await }
    });
    until("first queued", async || queued(&gw, "up") == 1).await;
    let second = tokio::spawn(async move { post(&url, CHAT).await });
    until("both queued", async || queued(&gw, "up") == 2).await;
    gate.notify_one();
    assert!(read_stream(held).await.1);
    // The first to get the slot probes, succeeds and closes the circuit; the second follows.
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    assert_eq!(
        admin_get(&gw, "/admin/providers").await.json()["providers"][0]["state"],
        "closed"
    );
}
