//! The resilience checks every request pays for: breaker admit + record, retry budget
//! deposit and withdraw, and the whole open-circuit rejection, both as pure work
//! (route, admit, build the 503) and as seen by a client over a keep-alive loopback
//! connection.
//!
//! Run with `cargo bench --bench resilience`.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

use std::sync::LazyLock;
use std::time::Duration;

use divan::Bencher;
use gateway::config::{Breaker as BreakerSettings, Config, Overrides, Retry};
use gateway::error::GatewayError;
use gateway::policy::breaker::{Breaker, Outcome};
use gateway::policy::budget::Budget;
use gateway::runtime::route::resolve;
use gateway::runtime::{Runtime, State};
use tokio::time::Instant;

fn main() {
    divan::Divan::default().config_with_args().main();
}

fn breaker_settings() -> BreakerSettings {
    BreakerSettings {
        failure_threshold: 3,
        cooldown: Duration::from_secs(60),
        max_cooldown: Duration::from_secs(600),
        half_open_probes: 1,
    }
}

#[divan::bench]
fn breaker_admit_record_closed(b: Bencher) {
    let now = Instant::now();
    let br = Breaker::new(&breaker_settings(), now);
    b.bench_local(|| {
        let t = br.admit(divan::black_box(now)).unwrap();
        br.record(t, Outcome::Success, now)
    });
}

#[divan::bench]
fn breaker_admit_open(b: Bencher) {
    let now = Instant::now();
    let br = Breaker::new(&breaker_settings(), now);
    br.force_open();
    b.bench_local(|| br.admit(divan::black_box(now)).is_err());
}

#[divan::bench(threads = [1, 2])]
fn breaker_admit_record_contended(b: Bencher) {
    static BR: LazyLock<(Breaker, Instant)> = LazyLock::new(|| {
        let now = Instant::now();
        (Breaker::new(&breaker_settings(), now), now)
    });
    b.bench(|| {
        let (br, now) = &*BR;
        let t = br.admit(*now).unwrap();
        br.record(t, Outcome::Success, *now)
    });
}

fn retry_settings() -> Retry {
    Retry {
        max_attempts: 2,
        backoff: Duration::from_millis(250),
        max_backoff: Duration::from_secs(4),
        budget_ratio: 0.2,
        budget_min_per_sec: 10,
    }
}

#[divan::bench]
fn budget_deposit(b: Bencher) {
    let now = Instant::now();
    let budget = Budget::new(&retry_settings(), now);
    b.bench_local(|| budget.deposit(divan::black_box(now)));
}

#[divan::bench]
fn budget_try_withdraw(b: Bencher) {
    let now = Instant::now();
    let budget = Budget::new(&retry_settings(), now);
    for _ in 0..1000 {
        budget.deposit(now);
    }
    // Spent after the first ~300 withdrawals: measures the check itself.
    b.bench_local(|| budget.try_withdraw(divan::black_box(now)));
}

const CONFIG: &str = r#"
[providers.a]
base_url = "http://127.0.0.1:9/v1"
[providers.b]
base_url = "http://127.0.0.1:9/v1"
[models.m]
targets = ["a/x", "b/y"]
"#;

fn runtime() -> Runtime {
    let c = Config::parse_with(CONFIG, &Overrides::default(), &|_| None).unwrap();
    Runtime::build(c, 1).unwrap()
}

/// Route, find every circuit open, build the OpenAI-shaped 503: the CPU part of a local
/// rejection.
#[divan::bench]
fn open_circuit_rejection_pure(b: Bencher) {
    let rt = runtime();
    for p in rt.providers.values() {
        p.health.breaker.force_open();
    }
    b.bench_local(|| {
        let now = Instant::now();
        let plan = resolve(&rt, divan::black_box("m")).unwrap();
        let mut wait = None;
        for t in plan.targets() {
            if let Err(w) = t.provider.health.breaker.admit(now) {
                wait.get_or_insert(w);
            }
        }
        GatewayError::CircuitOpen { retry_after: wait }.to_response()
    });
}

/// The same rejection as a client sees it: one request on a keep-alive loopback
/// connection to a running gateway, to the end of the response body.
#[divan::bench(sample_count = 200)]
fn open_circuit_rejection_http(b: Bencher) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (url, _stop) = tokio.block_on(async {
        let rt = runtime();
        for p in rt.providers.values() {
            p.health.breaker.force_open();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = State::new(rt, "bench.toml".into());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(gateway::server::run(listener, state, async {
            let _ = rx.await;
        }));
        (format!("http://{addr}/v1/chat/completions"), tx)
    });
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body =
        bytes::Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
    b.bench_local(|| {
        tokio.block_on(async {
            let req = http::Request::post(&url)
                .body(Full::new(body.clone()))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            assert_eq!(resp.status(), 503);
            resp.into_body().collect().await.unwrap()
        })
    });
}
