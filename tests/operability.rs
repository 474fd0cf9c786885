//! Operability over real sockets: metrics after scripted traffic, the admin API and its
//! guard, hot reload (under load, invalid files, state carried over, file watch), graceful
//! drain, and the access log.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::json;
use support::*;

async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    collect(send(&client(), "GET", url, headers, "").await).await
}

async fn admin_post(gw: &Gateway, path: &str) -> Got {
    collect(send(&client(), "POST", &gw.url(path), &[], "").await).await
}

async fn providers(gw: &Gateway) -> serde_json::Value {
    get(&gw.url("/admin/providers"), &[]).await.json()
}

fn provider<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn metrics_reflect_scripted_traffic() {
    let up = Upstream::start(|r, _| {
        if r.headers.contains_key("x-fail") {
            Reply::json(503, json!({"error": {"message": "down"}}))
        } else {
            Reply::ok()
        }
    })
    .await;
    let cfg = format!(
        "[providers.up]\nbase_url = \"{}\"\nretry = {{ max_attempts = 2, backoff = \"1ms\" }}\n\
         breaker = {{ failure_threshold = 2 }}\n\
         [models.m]\ntargets = [{{ provider = \"up\", model = \"x\", input_cost = 1.0, output_cost = 2.0 }}]\n",
        up.url()
    );
    let gw = Gateway::start(&cfg).await;
    let url = gw.url("/v1/chat/completions");
    for _ in 0..3 {
        assert_eq!(post(&url, CHAT).await.status, 200);
    }
    post(&url, "not json").await;
    post(&url, r#"{"model":"nope"}"#).await;
    // Two 503 attempts (a retry), which opens the circuit; then a local rejection.
    assert_eq!(post_with(&url, &[("x-fail", "1")], CHAT).await.status, 503);
    post(&url, CHAT).await.assert_error(503, "circuit_open");

    let m = gw.metrics().await;
    assert!(m.ends_with("# EOF\n"), "OpenMetrics text");
    let v = |s: &str| metric_value(&m, s);
    assert_eq!(
        v(r#"gateway_requests_total{model="m",provider="up",status="200"}"#),
        3.0
    );
    assert_eq!(
        v(r#"gateway_requests_total{model="",provider="none",status="400"}"#),
        1.0
    );
    assert_eq!(
        v(r#"gateway_requests_total{model="nope",provider="none",status="404"}"#),
        1.0
    );
    assert_eq!(
        v(r#"gateway_requests_total{model="m",provider="up",status="503"}"#),
        1.0
    );
    assert_eq!(
        v(r#"gateway_requests_total{model="m",provider="none",status="503"}"#),
        1.0
    );
    assert_eq!(
        v(r#"gateway_request_duration_seconds_count{model="m",provider="up"}"#),
        4.0
    );
    assert_eq!(
        v(r#"gateway_upstream_first_byte_seconds_count{provider="up"}"#),
        5.0
    );
    assert_eq!(v(r#"gateway_queue_wait_seconds_count{provider="up"}"#), 5.0);
    assert_eq!(
        v(r#"gateway_upstream_errors_total{provider="up",kind="status_5xx"}"#),
        2.0
    );
    assert_eq!(v(r#"gateway_retries_total{provider="up"}"#), 1.0);
    assert_eq!(
        v(r#"gateway_rejections_total{provider="up",reason="circuit_open"}"#),
        1.0
    );
    assert_eq!(v(r#"gateway_breaker_state{provider="up"}"#), 2.0);
    assert_eq!(
        v(r#"gateway_breaker_transitions_total{provider="up",to="open"}"#),
        1.0
    );
    // Usage of the test upstream: 3 prompt + 1 completion tokens per answer.
    assert_eq!(
        v(r#"gateway_tokens_total{model="m",provider="up",kind="prompt"}"#),
        9.0
    );
    assert_eq!(
        v(r#"gateway_tokens_total{model="m",provider="up",kind="completion"}"#),
        3.0
    );
    let cost = v(r#"gateway_cost_usd_total{model="m",provider="up"}"#);
    assert!((cost - 3.0 * (3.0 + 2.0) / 1e6).abs() < 1e-12, "{cost}");
    assert!(
        v(r#"gateway_upstream_connections{provider="up"}"#) >= 1.0,
        "pooled keep-alive socket"
    );
    assert_eq!(v(r#"gateway_in_flight{provider="up"}"#), 0.0);
    assert_eq!(v(r#"gateway_queue_depth{provider="up"}"#), 0.0);
}

#[tokio::test]
async fn metrics_show_queue_wait_in_flight_and_queue_rejections() {
    let (up, gate) = gated(1).await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "limits = { max_concurrency = 1, queue_size = 1, queue_timeout = \"30s\" }",
    ))
    .await;
    let url = gw.url("/v1/chat/completions");
    let first = stream_post(&url).await;
    let u2 = url.clone();
    let second = tokio::spawn(async move { read_stream(stream_post(&u2).await).await });
    until("queued", async || {
        gw.metric(r#"gateway_queue_depth{provider="up"}"#).await == 1.0
    })
    .await;
    assert_eq!(gw.metric(r#"gateway_in_flight{provider="up"}"#).await, 1.0);
    // The queue (size 1) is full: the third is turned away.
    post(&url, CHAT_STREAM)
        .await
        .assert_error(503, "queue_full");
    assert_eq!(
        gw.metric(r#"gateway_rejections_total{provider="up",reason="queue_full"}"#)
            .await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.notify_one();
    assert!(read_stream(first).await.1);
    gate.notify_one();
    assert!(second.await.unwrap().1);
    let m = gw.metrics().await;
    // Three waits: the first (none), the one turned away (none), the second (≥ 50 ms).
    assert_eq!(
        metric_value(&m, r#"gateway_queue_wait_seconds_count{provider="up"}"#),
        3.0,
        "{m}"
    );
    assert!(
        metric_value(&m, r#"gateway_queue_wait_seconds_sum{provider="up"}"#) >= 0.05,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"gateway_queue_wait_seconds_bucket{le="0.025",provider="up"}"#
        ),
        2.0,
        "{m}"
    );
    assert_eq!(metric_value(&m, r#"gateway_in_flight{provider="up"}"#), 0.0);
}

#[tokio::test]
async fn stream_usage_is_counted() {
    let up = Upstream::start(|_, _| Reply::stream(vec![
            bytes::Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"),
            bytes::Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7}}\n\n"),
            bytes::Bytes::from_static(b"data: [DONE]\n\n"),
        ], Duration::ZERO, End::Clean))
    .await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    assert!(
        read_stream(
            send(
                &client(),
                "POST",
                &gw.url("/v1/chat/completions"),
                &[],
                body
            )
            .await
        )
        .await
        .1
    );
    until("stream settled", async || {
        gw.metric(r#"gateway_tokens_total{model="m",provider="up",kind="prompt"}"#)
            .await
            == 11.0
    })
    .await;
    assert_eq!(
        gw.metric(r#"gateway_tokens_total{model="m",provider="up",kind="completion"}"#)
            .await,
        7.0
    );
    // The request body went upstream unchanged: the gateway never asks for usage itself.
    assert_eq!(
        std::str::from_utf8(&up.requests()[0].body).unwrap(),
        body.replace("\"m\"", "\"upstream-model\"")
    );
}

#[tokio::test]
async fn admin_providers_and_kill_switch() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "breaker = { cooldown = \"100ms\" }")).await;
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), CHAT).await.status,
        200
    );
    let doc = providers(&gw).await;
    assert_eq!(doc["generation"], 1);
    let p = provider(&doc, "up");
    assert_eq!(p["state"], "closed");
    assert_eq!(p["consecutive_failures"], 0);
    assert!(p["retry_in_s"].is_null());
    assert_eq!(p["in_flight"], 0);
    assert_eq!(p["queued"], 0);
    assert!(p["connections"].as_i64().unwrap() >= 1);
    assert!(p["ewma_latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(p["success_rate"], 1.0);

    let got = admin_post(&gw, "/admin/providers/up/open").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["state"], "forced_open");
    // Well past the 100 ms cooldown, a forced-open circuit is still open.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        post(&gw.url("/v1/chat/completions"), CHAT)
            .await
            .assert_error(503, "circuit_open");
    }
    assert_eq!(
        provider(&providers(&gw).await, "up")["state"],
        "forced_open"
    );
    assert_eq!(up.hits(), 1);
    assert_eq!(
        admin_post(&gw, "/admin/providers/up/close").await.json()["state"],
        "closed"
    );
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), CHAT).await.status,
        200
    );
    admin_post(&gw, "/admin/providers/nope/open")
        .await
        .assert_error(404, "provider_not_found");
    let wrong = collect(
        send(
            &client(),
            "GET",
            &gw.url("/admin/providers/up/open"),
            &[],
            "",
        )
        .await,
    )
    .await;
    wrong.assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn admin_key_guards_admin_only() {
    let gw = Gateway::start(
        "[server]\nadmin_key = \"adm-secret-123\"\n[providers.demo]\nkind = \"mock\"\n",
    )
    .await;
    get(&gw.url("/admin/providers"), &[])
        .await
        .assert_error(401, "invalid_api_key");
    get(
        &gw.url("/admin/providers"),
        &[("authorization", "Bearer nope")],
    )
    .await
    .assert_error(401, "invalid_api_key");
    let ok = get(
        &gw.url("/admin/providers"),
        &[("authorization", "Bearer adm-secret-123")],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert!(!ok.text().contains("adm-secret"));
    // /metrics, /healthz and /readyz stay open.
    for p in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get(&gw.url(p), &[]).await.status, 200, "{p}");
    }
}

#[tokio::test]
async fn without_admin_key_only_loopback_peers_are_answered() {
    let gw = Gateway::start("[providers.demo]\nkind = \"mock\"\n").await;
    assert_eq!(get(&gw.url("/admin/providers"), &[]).await.status, 200);
    let req = http::Request::get("/admin/providers").body(()).unwrap();
    let remote: std::net::SocketAddr = "192.0.2.7:5555".parse().unwrap();
    let resp = gateway::server::admin::handle(&gw.state, req, remote).await;
    assert_eq!(resp.status(), 403);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"code\":\"forbidden\""));
}

fn reload_config(up: &str, model: &str, extra: &str) -> String {
    format!(
        "[providers.up]\nbase_url = \"{up}\"\n{extra}\n[models.m]\ntargets = [\"up/{model}\"]\n"
    )
}

#[tokio::test]
async fn reload_under_load_fails_no_request_and_keeps_streams_intact() {
    let up = Upstream::start(|r, _| {
        if r.json()["stream"] == true {
            Reply::stream(sse_chunks(20), Duration::from_millis(25), End::Clean)
        } else {
            Reply::ok()
        }
    })
    .await;
    let (gw, path) = Gateway::start_file(&reload_config(&up.url(), "v1", "")).await;
    let url = gw.url("/v1/chat/completions");
    // A stream that spans every reload below.
    let stream = stream_post(&url).await;
    assert_eq!(stream.headers()["x-gateway-target"], "up/v1");
    let stream = tokio::spawn(read_stream(stream));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, done) = (url.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let c = client();
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let got = collect(send(&c, "POST", &url, &[], CHAT).await).await;
                    if got.status != 200 {
                        failures.push(got.text());
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();
    for i in 0..10 {
        let model = if i % 2 == 0 { "v2" } else { "v1" };
        std::fs::write(
            &path,
            reload_config(
                &up.url(),
                model,
                &format!("timeouts = {{ idle = \"{}s\" }}", 20 + i),
            ),
        )
        .unwrap();
        let got = admin_post(&gw, "/admin/reload").await;
        assert_eq!(got.status, 200, "{}", got.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for l in loaders {
        let failures = l.await.unwrap();
        assert!(failures.is_empty(), "failed during reloads: {failures:?}");
    }
    assert!(done.load(Ordering::SeqCst) >= 10);
    let (text, clean) = stream.await.unwrap();
    assert!(
        clean && text.ends_with("data: [DONE]\n\n"),
        "the stream spanning reloads ended badly: {text}"
    );
    assert!(providers(&gw).await["generation"].as_u64().unwrap() >= 11);
    // The new config serves new requests.
    assert_eq!(post(&url, CHAT).await.header("x-gateway-target"), "up/v1");
}

#[tokio::test]
async fn invalid_reload_keeps_serving_the_running_config() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let (gw, path) = Gateway::start_file(&reload_config(&up.url(), "v1", "")).await;
    std::fs::write(
        &path,
        reload_config(&up.url(), "v1", "timeouts = { idle = \"soon\" }"),
    )
    .unwrap();
    let got = admin_post(&gw, "/admin/reload").await;
    got.assert_error(400, "invalid_config");
    let msg = got.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("gateway.toml") && msg.contains("providers.up.timeouts.idle"),
        "{msg}"
    );
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), CHAT).await.status,
        200
    );
    assert_eq!(providers(&gw).await["generation"], 1);
    assert_eq!(
        gw.metric(r#"gateway_config_reloads_total{result="error"}"#)
            .await,
        1.0
    );
    std::fs::write(&path, reload_config(&up.url(), "v2", "")).unwrap();
    assert_eq!(
        admin_post(&gw, "/admin/reload").await.json()["generation"],
        2
    );
    assert_eq!(
        gw.metric(r#"gateway_config_reloads_total{result="ok"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn breaker_state_survives_a_reload_unless_base_url_changes() {
    let up = Upstream::start(|_, _| Reply::json(500, json!({}))).await;
    let other = Upstream::start(|_, _| Reply::ok()).await;
    let extra =
        "retry = { max_attempts = 1 }\nbreaker = { failure_threshold = 1, cooldown = \"60s\" }";
    let (gw, path) = Gateway::start_file(&reload_config(&up.url(), "v1", extra)).await;
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), CHAT).await.status,
        500
    );
    assert_eq!(provider(&providers(&gw).await, "up")["state"], "open");
    // Same base_url, other settings: still open, same countdown.
    std::fs::write(
        &path,
        reload_config(
            &up.url(),
            "v2",
            &format!("{extra}\ntimeouts = {{ first_byte = \"9s\" }}"),
        ),
    )
    .unwrap();
    assert_eq!(admin_post(&gw, "/admin/reload").await.status, 200);
    let p = providers(&gw).await;
    assert_eq!(provider(&p, "up")["state"], "open");
    assert!(provider(&p, "up")["retry_in_s"].as_f64().unwrap() > 50.0);
    post(&gw.url("/v1/chat/completions"), CHAT)
        .await
        .assert_error(503, "circuit_open");
    // Another base_url is another provider: fresh state.
    std::fs::write(&path, reload_config(&other.url(), "v2", extra)).unwrap();
    assert_eq!(admin_post(&gw, "/admin/reload").await.status, 200);
    assert_eq!(provider(&providers(&gw).await, "up")["state"], "closed");
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), CHAT).await.status,
        200
    );
}

#[tokio::test]
async fn editing_the_file_reloads_it() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let (gw, path) = Gateway::start_file(&reload_config(&up.url(), "v1", "")).await;
    let _watcher = gateway::runtime::reload::watch_file(gw.state.clone()).expect("watching");
    // Save the way editors do: write a temporary file, rename it over the config.
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, reload_config(&up.url(), "v2", "")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    until("reloaded", async || providers(&gw).await["generation"] == 2).await;
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), CHAT)
            .await
            .header("x-gateway-target"),
        "up/v2"
    );
    // Reading the file (as every reload does) must not trigger another reload.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(providers(&gw).await["generation"], 2);
    // A broken save is refused and counted; the running config stays.
    std::fs::write(&path, "[[[ not toml").unwrap();
    until("refused", async || {
        gw.metric(r#"gateway_config_reloads_total{result="error"}"#)
            .await
            >= 1.0
    })
    .await;
    assert_eq!(providers(&gw).await["generation"], 2);
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), CHAT).await.status,
        200
    );
}

#[tokio::test]
async fn drain_completes_streams_in_flight_and_refuses_new_connections() {
    let up = Upstream::start(|_, _| {
        Reply::stream(sse_chunks(10), Duration::from_millis(50), End::Clean)
    })
    .await;
    let mut gw = Gateway::start(&config_for(&up.url(), "")).await;
    let stream = stream_post(&gw.url("/v1/chat/completions")).await;
    let reader = tokio::spawn(read_stream(stream));
    gw.shutdown();
    until("draining", async || gw.state.is_draining()).await;
    // The listener is closed: new connections are refused.
    until("listener closed", async || {
        tokio::net::TcpStream::connect(gw.addr).await.is_err()
    })
    .await;
    let (text, clean) = reader.await.unwrap();
    assert!(clean && text.ends_with("data: [DONE]\n\n"), "{text}");
    let task = std::mem::replace(&mut gw.task, tokio::spawn(async { Ok(()) }));
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("server ends after the drain")
        .unwrap()
        .unwrap();
}

/// A connection that has not sent its first byte when the drain begins is closed at once:
/// it holds nothing in flight, so it must not hold the drain for `header_read_timeout`
/// (here a minute, with a drain budget of 30 s).
#[tokio::test]
async fn a_silent_connection_does_not_hold_the_drain() {
    let mut gw = Gateway::start(
        "[server]\nheader_read_timeout = \"60s\"\nshutdown_timeout = \"30s\"\n\
         [providers.demo]\nkind = \"mock\"\n",
    )
    .await;
    let silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Served once, so the listener has surely accepted the silent connection before.
    let health = collect(send(&client(), "GET", &gw.url("/healthz"), &[], "").await).await;
    assert_eq!(health.status, 200);
    gw.shutdown();
    let task = std::mem::replace(&mut gw.task, tokio::spawn(async { Ok(()) }));
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the drain does not wait for a connection that never spoke")
        .unwrap()
        .unwrap();
    drop(silent);
}

#[tokio::test]
async fn drain_deadline_ends_open_streams_with_an_error_event() {
    let up = Upstream::start(|_, _| {
        Reply::stream(sse_chunks(1000), Duration::from_millis(50), End::Clean)
    })
    .await;
    let cfg = format!(
        "[server]\nshutdown_timeout = \"300ms\"\n{}",
        config_for(&up.url(), "")
    );
    let mut gw = Gateway::start(&cfg).await;
    let stream = stream_post(&gw.url("/v1/chat/completions")).await;
    let reader = tokio::spawn(read_stream(stream));
    gw.shutdown();
    let (text, clean) = reader.await.unwrap();
    assert!(!clean, "{text}");
    assert!(!text.contains("[DONE]"));
    let v = last_event(&text);
    assert_eq!(v["error"]["code"], "upstream_stream_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down")
    );
    let task = std::mem::replace(&mut gw.task, tokio::spawn(async { Ok(()) }));
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("server ends")
        .unwrap()
        .unwrap();
    // Being cut at shutdown is not the provider's fault.
    assert_eq!(
        gw.state.runtime().providers["up"]
            .health
            .breaker
            .consecutive_failures(),
        0
    );
}

#[tokio::test]
async fn access_log_has_one_line_per_request_with_the_contract_fields() {
    let up = Upstream::start(|_, n| {
        if n == 0 {
            Reply::json(502, json!({}))
        } else {
            Reply::ok()
        }
    })
    .await;
    let dir = std::env::temp_dir().join(format!("gateway-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("access.jsonl");
    let _ = std::fs::remove_file(&log_path);
    let cfg = format!(
        "[server]\napi_keys = [\"k-123456789\"]\n[log]\naccess_log = \"{}\"\n\
         [providers.up]\nbase_url = \"{}\"\nretry = {{ backoff = \"1ms\" }}\n\
         [models.m]\ntargets = [{{ provider = \"up\", model = \"x\", input_cost = 2.0, output_cost = 4.0 }}]\n",
        log_path.display(),
        up.url()
    );
    let gw = Gateway::start(&cfg).await;
    let auth = [("authorization", "Bearer k-123456789")];
    let url = gw.url("/v1/chat/completions");
    assert_eq!(
        post_with(&url, &[("x-request-id", "acc-1"), auth[0]], CHAT)
            .await
            .status,
        200
    );
    post_with(&url, &[("x-request-id", "acc-2")], CHAT)
        .await
        .assert_error(401, "invalid_api_key");
    post_with(
        &url,
        &[("x-request-id", "acc-3"), auth[0]],
        r#"{"model":"zzz"}"#,
    )
    .await
    .assert_error(404, "model_not_found");
    assert!(
        read_stream(
            send(
                &client(),
                "POST",
                &url,
                &[("x-request-id", "acc-4"), auth[0]],
                CHAT_STREAM
            )
            .await
        )
        .await
        .1
    );
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    };
    until("four lines written", async || lines().len() == 4).await;
    let lines = lines();
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap()
            .clone()
    };
    for l in &lines {
        for f in [
            "ts",
            "request_id",
            "model",
            "target",
            "status",
            "attempts",
            "queue_ms",
            "first_byte_ms",
            "duration_ms",
            "stream",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
            "strategy",
            "code",
            "skipped",
        ] {
            assert!(l.get(f).is_some(), "{f} missing in {l}");
        }
        // `ts` is the arrival, RFC 3339 UTC with milliseconds.
        let ts = l["ts"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-11-30T12:00:00.000Z".len(),
            "{ts}"
        );
    }
    let ok = by_id("acc-1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["model"], "m");
    assert_eq!(ok["target"], "up/x");
    assert_eq!(ok["stream"], false);
    let attempts = ok["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "a 502 then a success: {ok}");
    assert_eq!(ok["strategy"], "failover");
    assert_eq!(ok["code"], json!(null));
    assert_eq!(ok["skipped"], json!([]));
    assert_eq!(attempts[0]["provider"], "up");
    assert_eq!(attempts[0]["model"], "x");
    assert_eq!(attempts[0]["status"], 502);
    assert_eq!(attempts[0]["error"], json!(null));
    assert_eq!(attempts[0]["retry_after_ms"], json!(null));
    assert_eq!(attempts[0]["key"], json!(null), "the provider has no keys");
    assert_eq!(attempts[1]["status"], 200);
    assert!(attempts[0]["ms"].as_f64().unwrap() >= 0.0);
    assert!(attempts[0]["first_byte_ms"].as_f64().unwrap() <= attempts[0]["ms"].as_f64().unwrap());
    assert!(
        attempts[1]["start_ms"].as_f64().unwrap()
            >= attempts[0]["start_ms"].as_f64().unwrap() + attempts[0]["ms"].as_f64().unwrap(),
        "the retry starts after the first attempt's verdict"
    );
    assert_eq!(ok["prompt_tokens"], 3);
    assert_eq!(ok["completion_tokens"], 1);
    assert!((ok["cost_usd"].as_f64().unwrap() - (3.0 * 2.0 + 4.0) / 1e6).abs() < 1e-12);
    let denied = by_id("acc-2");
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["attempts"], json!([]));
    assert_eq!(denied["code"], "invalid_api_key");
    assert_eq!(by_id("acc-3")["status"], 404);
    assert_eq!(by_id("acc-3")["code"], "model_not_found");
    let stream = by_id("acc-4");
    assert_eq!(stream["stream"], true);
    let a = &stream["attempts"][0];
    assert!(
        a["ms"].as_f64().unwrap() >= a["first_byte_ms"].as_f64().unwrap(),
        "a stream attempt lasts until its body ends: {a}"
    );
    assert!(
        !std::fs::read_to_string(&log_path)
            .unwrap()
            .contains("k-123456789"),
        "client key in the access log"
    );
}

#[tokio::test]
async fn every_contract_metric_is_exposed_from_the_start() {
    let gw =
        Gateway::start("[providers.demo]\nkind = \"mock\"\n[models.d]\ntargets = [\"demo/x\"]\n")
            .await;
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), r#"{"model":"d"}"#)
            .await
            .status,
        200
    );
    let m = gw.metrics().await;
    for name in [
        "gateway_requests_total{",
        "gateway_request_duration_seconds_bucket{",
        "gateway_upstream_first_byte_seconds_bucket{",
        "gateway_queue_wait_seconds_bucket{",
        "gateway_queue_depth{",
        "gateway_in_flight{",
        "gateway_upstream_connections{",
        "gateway_breaker_state{",
        "gateway_breaker_transitions_total{",
        "gateway_rejections_total{",
        "gateway_upstream_errors_total{",
        "gateway_retries_total{",
        "gateway_tokens_total{",
        "gateway_cost_usd_total{",
        "gateway_config_reloads_total{",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{m}"
        );
    }
    assert_eq!(
        metric_value(&m, r#"gateway_config_reloads_total{result="error"}"#),
        0.0
    );
    assert!(m.contains(r#"gateway_rejections_total{provider="demo",reason="queue_timeout"} 0"#));
    // No labels, and no access log configured: the counter is there, at zero.
    assert!(
        m.lines().any(|l| l == "gateway_access_log_dropped_total 0"),
        "{m}"
    );
}

#[tokio::test]
async fn access_log_says_what_each_provider_did_and_what_was_passed_over() {
    let limited = Upstream::start(|_, _| {
        Reply::Full(
            http::StatusCode::TOO_MANY_REQUESTS,
            vec![("retry-after", "2".into())],
            bytes::Bytes::from_static(b"{}"),
        )
    })
    .await;
    let ok = Upstream::start(|_, _| Reply::ok()).await;
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_url = format!("http://{}/v1", refused.local_addr().unwrap());
    drop(refused);
    let dir = std::env::temp_dir().join(format!("gateway-access2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("access.jsonl");
    let _ = std::fs::remove_file(&log_path);
    let gw = Gateway::start(&format!(
        "[log]\naccess_log = \"{}\"\n\
         [providers.off]\nkind = \"mock\"\n\
         [providers.down]\nbase_url = \"{refused_url}\"\nretry = {{ max_attempts = 1 }}\n\
         [providers.slow]\nbase_url = \"{}\"\napi_keys = [\"sk-access-log-key-9876\"]\n\
         [providers.up]\nbase_url = \"{}\"\n\
         [models.m]\ntargets = [\"off/x\", \"down/y\", \"slow/z\", \"up/w\"]\n",
        log_path.display(),
        limited.url(),
        ok.url()
    ))
    .await;
    let admin = send(
        &client(),
        "POST",
        &gw.url("/admin/providers/off/open"),
        &[],
        "",
    )
    .await;
    assert_eq!(admin.status(), 200);
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-gateway-target"), "up/w");
    until("line written", async || {
        std::fs::read_to_string(&log_path).is_ok_and(|t| t.lines().count() == 1)
    })
    .await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !text.contains("sk-access-log-key-9876"),
        "a whole key in the access log"
    );
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        line["skipped"],
        json!([{"target": "off/x", "reason": "circuit_open"}])
    );
    let a = line["attempts"].as_array().unwrap();
    assert_eq!(a.len(), 3, "{line}");
    assert_eq!(
        (a[0]["provider"].as_str(), a[0]["error"].as_str()),
        (Some("down"), Some("connect"))
    );
    assert_eq!(a[0]["status"], json!(null));
    assert_eq!(a[0]["first_byte_ms"], json!(null));
    assert_eq!(a[1]["provider"], "slow");
    assert_eq!(a[1]["status"], 429);
    assert_eq!(a[1]["retry_after_ms"], 2000.0);
    assert_eq!(a[1]["key"], "…9876");
    assert_eq!(a[2]["provider"], "up");
    assert_eq!(a[2]["status"], 200);
    // The next request finds `slow` paused after its 429.
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), CHAT).await.status,
        200
    );
    until("second line", async || {
        std::fs::read_to_string(&log_path).is_ok_and(|t| t.lines().count() == 2)
    })
    .await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    let second: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    let reasons: Vec<&str> = second["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["circuit_open", "rate_limited"], "{second}");
}
