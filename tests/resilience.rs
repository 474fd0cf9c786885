//! Resilience over real sockets: failover chains, the circuit breaker, 429 handling, the
//! retry budget, bulkheads and the commit point.
//!
//! Time-dependent steps wait for a state (polled, bounded), never for a fixed sleep, and
//! nothing asserts how long a step took except the pool test, with a generous bound.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gateway::policy::breaker::State as Breaker;
use http_body_util::BodyExt;
use support::*;
use tokio::time::Instant;

/// An alias `m` over `a` then `b`, each with its own extra provider TOML.
fn chain(a: &str, a_extra: &str, b: &str, b_extra: &str) -> String {
    format!(
        "[providers.a]\nbase_url = \"{a}\"\n{a_extra}\n[providers.b]\nbase_url = \"{b}\"\n{b_extra}\n\
         [models.m]\ntargets = [\"a/model-a\", \"b/model-b\"]\n"
    )
}

fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/v1", l.local_addr().unwrap())
}

fn breaker_state(gw: &Gateway, provider: &str) -> Breaker {
    gw.state.runtime().providers[provider]
        .health
        .breaker
        .state(Instant::now())
}

#[tokio::test]
async fn hung_provider_fails_over_to_the_next_target() {
    let a = Upstream::start(|_, _| Reply::Hang).await;
    let b = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&chain(
        &a.url(),
        "timeouts = { first_byte = \"300ms\" }",
        &b.url(),
        "",
    ))
    .await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("x-gateway-target"), "b/model-b");
    // A timeout is not retried on the same target (contract §6): one attempt on a, then b.
    assert_eq!(got.header("x-gateway-attempts"), "2");
    assert_eq!(a.hits(), 1);
    assert_eq!(b.requests()[0].json()["model"], "model-b");
}

#[tokio::test]
async fn refused_connection_fails_over_fast() {
    let b = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&chain(
        &closed_port_url(),
        "retry = { max_attempts = 1 }",
        &b.url(),
        "",
    ))
    .await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-gateway-target"), "b/model-b");
    assert_eq!(got.header("x-gateway-attempts"), "2");
}

#[tokio::test]
async fn client_errors_are_not_retried_or_failed_over() {
    let a =
        Upstream::start(|_, _| Reply::json(400, serde_json::json!({"error": {"message": "bad"}})))
            .await;
    let b = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&chain(
        &a.url(),
        "breaker = { failure_threshold = 1 }",
        &b.url(),
        "",
    ))
    .await;
    for _ in 0..3 {
        let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(got.status, 400);
        assert_eq!(got.header("x-gateway-attempts"), "1");
    }
    assert_eq!(b.hits(), 0);
    assert_eq!(
        breaker_state(&gw, "a"),
        Breaker::Closed,
        "a 4xx is not a provider failure"
    );
}

#[tokio::test]
async fn three_500s_open_the_circuit_and_rejections_stay_local() {
    let up =
        Upstream::start(|_, _| Reply::json(500, serde_json::json!({"error": {"message": "boom"}})))
            .await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "retry = { max_attempts = 1 }\nbreaker = { failure_threshold = 3, cooldown = \"60s\" }",
    ))
    .await;
    for _ in 0..3 {
        let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(
            got.status, 500,
            "the last attempt's own response passes through"
        );
        assert_eq!(got.json()["error"]["message"], "boom");
    }
    assert_eq!(breaker_state(&gw, "up"), Breaker::Open);
    for _ in 0..100 {
        let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
        got.assert_error(503, "circuit_open");
        let retry_after: u64 = got.header("retry-after").parse().unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert!(got.headers.get("x-gateway-attempts").is_none());
    }
    assert_eq!(up.hits(), 3, "an open circuit never touches the network");
}

/// Opens `up`'s circuit (threshold 1) with one failing request.
async fn open_circuit(gw: &Gateway) {
    let got = post_with(&gw.url("/v1/chat/completions"), &[("x-fail", "1")], CHAT).await;
    assert_eq!(got.status, 500);
    assert_eq!(breaker_state(gw, "up"), Breaker::Open);
}

fn fails_when_told(
    delay_ok: Duration,
) -> impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static {
    move |r, _| {
        if r.headers.contains_key("x-fail") {
            Reply::json(500, serde_json::json!({"error": {"message": "boom"}}))
        } else {
            Reply::Delay(delay_ok, Box::new(Reply::ok()))
        }
    }
}

#[tokio::test]
async fn half_open_admits_exactly_one_probe_among_fifty() {
    let up = Upstream::start(fails_when_told(Duration::from_millis(300))).await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "retry = { max_attempts = 1 }\nbreaker = { failure_threshold = 1, cooldown = \"200ms\", half_open_probes = 1 }",
    ))
    .await;
    open_circuit(&gw).await;
    until("half-open", async || {
        breaker_state(&gw, "up") == Breaker::HalfOpen
    })
    .await;
    let url = gw.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, CHAT).await })
        })
        .collect();
    let mut ok = 0;
    let mut rejected = 0;
    for t in tasks {
        let got = t.await.unwrap();
        match got.status.as_u16() {
            200 => ok += 1,
            503 => {
                got.assert_error(503, "circuit_open");
                rejected += 1;
            }
            s => panic!("unexpected {s}: {}", got.text()),
        }
    }
    assert_eq!((ok, rejected), (1, 49));
    assert_eq!(up.hits(), 2, "one failure, then exactly one probe");
    assert_eq!(
        breaker_state(&gw, "up"),
        Breaker::Closed,
        "the probe's success closed it"
    );
    assert_eq!(post(&url, CHAT).await.status, 200);
}

#[tokio::test]
async fn failed_probe_reopens_with_doubled_cooldown() {
    let up = Upstream::start(fails_when_told(Duration::ZERO)).await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "retry = { max_attempts = 1 }\nbreaker = { failure_threshold = 1, cooldown = \"1s\", max_cooldown = \"1m\" }",
    ))
    .await;
    open_circuit(&gw).await;
    let rt = gw.state.runtime();
    let b = &rt.providers["up"].health.breaker;
    assert!(b.retry_in(Instant::now()).unwrap() <= Duration::from_secs(1));
    until("half-open", async || {
        breaker_state(&gw, "up") == Breaker::HalfOpen
    })
    .await;
    // The probe fails: open again, for twice as long.
    let got = post_with(&gw.url("/v1/chat/completions"), &[("x-fail", "1")], CHAT).await;
    assert_eq!(got.status, 500);
    assert_eq!(breaker_state(&gw, "up"), Breaker::Open);
    let left = b.retry_in(Instant::now()).unwrap();
    assert!(
        left > Duration::from_secs(1) && left <= Duration::from_secs(2),
        "{left:?}"
    );
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    got.assert_error(503, "circuit_open");
    assert_eq!(got.header("retry-after"), "2");
}

#[tokio::test]
async fn a_429_skips_the_provider_until_retry_after_without_touching_its_breaker() {
    let a = Upstream::start(|_, _| {
        Reply::Full(
            http::StatusCode::TOO_MANY_REQUESTS,
            vec![("retry-after", "30".into())],
            bytes::Bytes::from_static(b"{\"error\":{\"message\":\"slow down\"}}"),
        )
    })
    .await;
    let b = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&chain(
        &a.url(),
        "breaker = { failure_threshold = 1 }",
        &b.url(),
        "",
    ))
    .await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("x-gateway-attempts"),
        "2",
        "a 429 is not retried on the same target"
    );
    for _ in 0..5 {
        let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.header("x-gateway-attempts"),
            "1",
            "a is skipped without an attempt"
        );
    }
    assert_eq!(a.hits(), 1);
    let rt = gw.state.runtime();
    assert_eq!(
        rt.providers["a"].health.breaker.state(Instant::now()),
        Breaker::Closed
    );
    assert_eq!(rt.providers["a"].health.breaker.consecutive_failures(), 0);
    let left = rt.providers["a"].health.paused(Instant::now()).unwrap();
    assert!(
        left > Duration::from_secs(25) && left <= Duration::from_secs(30),
        "{left:?}"
    );
}

#[tokio::test]
async fn a_429_with_nowhere_else_to_go_passes_through_then_is_answered_locally() {
    let up = Upstream::start(|_, _| {
        Reply::Full(
            http::StatusCode::TOO_MANY_REQUESTS,
            vec![("retry-after-ms", "20000".into())],
            bytes::Bytes::from_static(b"upstream says slow down"),
        )
    })
    .await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.text(), "upstream says slow down");
    assert_eq!(got.header("retry-after-ms"), "20000");
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    got.assert_error(429, "rate_limited");
    let secs: u64 = got.header("retry-after").parse().unwrap();
    assert!((1..=20).contains(&secs));
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn an_absurd_retry_after_is_capped_at_max_cooldown_not_a_panic() {
    // The in-process mock sends the fault's `retry-after` verbatim: a provider can say 1e20.
    let gw = Gateway::start(
        "[providers.demo]\nkind = \"mock\"\nbreaker = { max_cooldown = \"2m\" }\n\
         [models.d]\ntargets = [\"demo/x\"]\n",
    )
    .await;
    let fault = [("x-mock-fault", "status=429,retry-after=1e20")];
    let got = post_with(&gw.url("/v1/chat/completions"), &fault, r#"{"model":"d"}"#).await;
    assert_eq!(got.status, 429, "{}", got.text());
    assert_eq!(got.header("retry-after"), "1e20", "passed through as sent");
    let left = gw.state.runtime().providers["demo"]
        .health
        .paused(Instant::now())
        .expect("the provider is paused");
    assert!(
        left > Duration::from_secs(100) && left <= Duration::from_secs(120),
        "{left:?}"
    );
    // The gateway is still serving, and answers the pause itself.
    let got = post(&gw.url("/v1/chat/completions"), r#"{"model":"d"}"#).await;
    got.assert_error(429, "rate_limited");
    assert!(got.header("retry-after").parse::<u64>().unwrap() <= 120);
}

#[test]
fn retry_after_forms() {
    use gateway::headers::retry_after;
    let h = |k: &str, v: &str| {
        let mut m = http::HeaderMap::new();
        m.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
        m
    };
    assert_eq!(
        retry_after(&h("retry-after", "7")),
        Some(Duration::from_secs(7))
    );
    assert_eq!(
        retry_after(&h("retry-after-ms", "1500")),
        Some(Duration::from_millis(1500))
    );
    let future = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
    let d = retry_after(&h("retry-after", &future)).unwrap();
    assert!(
        d > Duration::from_secs(100) && d <= Duration::from_secs(120),
        "{d:?}"
    );
    assert_eq!(retry_after(&h("retry-after", "soon")), None);
    assert_eq!(retry_after(&http::HeaderMap::new()), None);
}

#[tokio::test]
async fn spent_retry_budget_stops_retries() {
    let up = Upstream::start(|_, _| {
        Reply::json(
            502,
            serde_json::json!({"error": {"message": "bad gateway"}}),
        )
    })
    .await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "retry = { max_attempts = 3, budget_ratio = 0.0, budget_min_per_sec = 0, backoff = \"1ms\" }\nbreaker = { failure_threshold = 100 }",
    ))
    .await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    got.assert_error(503, "retry_budget_exhausted");
    assert_eq!(got.header("x-should-retry"), "false");
    assert!(!got.header("retry-after").is_empty());
    assert_eq!(up.hits(), 1, "the retry was not sent");
    // An SDK's own retry counts as a retry: with the budget spent it is not sent at all.
    let got = post_with(
        &gw.url("/v1/chat/completions"),
        &[("x-stainless-retry-count", "1")],
        CHAT,
    )
    .await;
    got.assert_error(503, "retry_budget_exhausted");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn retries_inside_the_budget_reach_a_recovering_provider() {
    let up = Upstream::start(|_, n| {
        if n == 0 {
            Reply::json(503, serde_json::json!({}))
        } else {
            Reply::ok()
        }
    })
    .await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "retry = { max_attempts = 2, backoff = \"1ms\" }",
    ))
    .await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-gateway-attempts"), "2");
}

#[tokio::test]
async fn full_queue_is_503_and_leaves_the_breaker_alone() {
    let (up, gate) = gated(1).await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "limits = { max_concurrency = 1, queue_size = 0 }\nbreaker = { failure_threshold = 1 }",
    ))
    .await;
    let url = gw.url("/v1/chat/completions");
    // The first request holds the only slot (its stream waits on the gate).
    let first = stream_post(&url).await;
    assert_eq!(first.status(), 200);
    for _ in 0..3 {
        let got = post(&url, CHAT).await;
        got.assert_error(503, "queue_full");
        assert!(got.header("retry-after").parse::<u64>().unwrap() >= 1);
    }
    assert_eq!(breaker_state(&gw, "up"), Breaker::Closed);
    assert_eq!(up.hits(), 1);
    gate.notify_one();
    let (_, clean) = read_stream(first).await;
    assert!(clean);
    until("slot freed", async || in_flight(&gw, "up") == 0).await;
    let again = stream_post(&url).await;
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn queue_timeout_is_503_and_leaves_the_breaker_alone() {
    let (up, gate) = gated(1).await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "limits = { max_concurrency = 1, queue_size = 10, queue_timeout = \"200ms\" }\nbreaker = { failure_threshold = 1 }",
    ))
    .await;
    let url = gw.url("/v1/chat/completions");
    let first = stream_post(&url).await;
    let got = post(&url, CHAT).await;
    got.assert_error(503, "queue_timeout");
    assert!(!got.header("retry-after").is_empty());
    assert_eq!(breaker_state(&gw, "up"), Breaker::Closed);
    gate.notify_one();
    drop(first);
}

#[tokio::test]
async fn queue_wait_is_reported_apart_from_upstream_time() {
    let (up, gate) = gated(1).await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "limits = { max_concurrency = 1, queue_size = 10, queue_timeout = \"30s\" }",
    ))
    .await;
    let url = gw.url("/v1/chat/completions");
    let first = stream_post(&url).await;
    let u2 = url.clone();
    let second = tokio::spawn(async move { post(&u2, CHAT).await });
    until("second request queued", async || {
        gw.state.runtime().providers["up"].health.bulkhead.queued() == 1
    })
    .await;
    let queued_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.notify_one();
    read_stream(first).await;
    let waited = queued_at.elapsed();
    // The second request's answer also waits on the gate; open it again.
    gate.notify_one();
    let got = second.await.unwrap();
    assert_eq!(got.status, 200);
    let timing = got.header("server-timing");
    let queue_ms: f64 = timing
        .split(", ")
        .next()
        .unwrap()
        .strip_prefix("queue;dur=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        queue_ms >= 100.0 && queue_ms <= waited.as_secs_f64() * 1000.0 + 1000.0,
        "{timing}"
    );
    assert!(timing.contains("upstream;dur="));
}

#[tokio::test]
async fn client_disconnect_frees_its_slot_at_once() {
    let up = Upstream::start(|_, _| {
        Reply::stream(sse_chunks(1000), Duration::from_millis(100), End::Clean)
    })
    .await;
    let gw = Gateway::start(&config_for(
        &up.url(),
        "limits = { max_concurrency = 1, queue_size = 0 }",
    ))
    .await;
    let url = gw.url("/v1/chat/completions");
    let resp = stream_post(&url).await;
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(in_flight(&gw, "up"), 1, "a stream holds its slot");
    drop(body);
    until("slot freed", async || in_flight(&gw, "up") == 0).await;
    assert_eq!(
        breaker_state(&gw, "up"),
        Breaker::Closed,
        "a client leaving is not a provider failure"
    );
    let resp = stream_post(&url).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn stream_failure_after_the_first_byte_counts_but_is_never_retried() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let a = Upstream::start(move |_, _| {
        h.fetch_add(1, Ordering::SeqCst);
        Reply::stream(
            sse_chunks(3)[..1].to_vec(),
            Duration::from_millis(50),
            End::Drop,
        )
    })
    .await;
    let b = Upstream::start(|_, _| Reply::sse(3, Duration::ZERO)).await;
    let gw = Gateway::start(&chain(
        &a.url(),
        "breaker = { failure_threshold = 1 }",
        &b.url(),
        "",
    ))
    .await;
    let resp = stream_post(&gw.url("/v1/chat/completions")).await;
    assert_eq!(resp.headers()["x-gateway-target"], "a/model-a");
    let (text, clean) = read_stream(resp).await;
    assert!(!clean);
    assert!(text.contains("upstream_stream_error"));
    assert_eq!(b.hits(), 0, "never failed over after the commit point");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    until("stream failure recorded", async || {
        breaker_state(&gw, "a") == Breaker::Open
    })
    .await;
    assert_eq!(
        gw.metric(r#"gateway_upstream_errors_total{provider="a",kind="reset"}"#)
            .await,
        1.0
    );
    // Next request: a is open, b serves.
    let resp = stream_post(&gw.url("/v1/chat/completions")).await;
    assert_eq!(resp.headers()["x-gateway-target"], "b/model-b");
    assert!(read_stream(resp).await.1);
}

#[tokio::test]
async fn every_circuit_open_answers_with_the_earliest_half_open() {
    let a = Upstream::start(fails_when_told(Duration::ZERO)).await;
    let gw = Gateway::start(&chain(
        &a.url(),
        "retry = { max_attempts = 1 }\nbreaker = { failure_threshold = 1, cooldown = \"30s\" }",
        &closed_port_url(),
        "retry = { max_attempts = 1 }\nbreaker = { failure_threshold = 1, cooldown = \"5s\" }",
    ))
    .await;
    let got = post_with(&gw.url("/v1/chat/completions"), &[("x-fail", "1")], CHAT).await;
    // a answered 500, b refused: the last attempt got no HTTP response.
    got.assert_error(502, "upstream_unavailable");
    assert_eq!(got.header("x-should-retry"), "false");
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    got.assert_error(503, "circuit_open");
    let secs: u64 = got.header("retry-after").parse().unwrap();
    // The earliest half-open of the chain: b's 5 s, not a's 30 s.
    assert!((1..=5).contains(&secs), "{secs}");
    // Contract §5: circuit_open is final for the SDK; it must not sleep out retry-after.
    assert_eq!(got.header("x-should-retry"), "false");
}

#[tokio::test]
async fn the_pool_is_never_a_hidden_queue() {
    let up =
        Upstream::start(|_, _| Reply::Delay(Duration::from_secs(2), Box::new(Reply::ok()))).await;
    let gw = Gateway::start(&config_for(&up.url(), "limits = { max_concurrency = 300 }")).await;
    let url = gw.url("/v1/chat/completions");
    let start = Instant::now();
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, CHAT).await.status.as_u16() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let took = start.elapsed();
    // A pool of 10 sockets would need 60 s; allow a busy 2-core machine plenty of slack.
    assert!(
        took < Duration::from_secs(15),
        "300 concurrent 2 s requests took {took:?}"
    );
    assert_eq!(up.hits(), 300);
}
