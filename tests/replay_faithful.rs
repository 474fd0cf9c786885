//! Replay is faithful (contract §9): a log recorded by a real gateway, against real upstream
//! sockets whose faults switch during the run, replayed with the config that recorded it,
//! reproduces each model's success rate within 1 percentage point and its p50 latency
//! within 10 %.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Gateway, Reply, Upstream, chat_completion, client, collect, send, sse_chunks};

/// How long the traffic runs.
const RUN: Duration = Duration::from_secs(6);

/// Which part of the run `elapsed` falls in: 0 all well, 1 `a` answers 503, 2 both
/// answer 503, 3 all well again.
fn phase(elapsed: Duration) -> u8 {
    match elapsed.as_millis() {
        0..2000 => 0,
        2000..3000 => 1,
        3000..4000 => 2,
        _ => 3,
    }
}

fn unavailable() -> Reply {
    Reply::json(
        503,
        serde_json::json!({"error": {"message": "overloaded", "type": "server_error"}}),
    )
}

/// An upstream answering after `delay` (a stream: three chunks 2 ms apart), or 503 at once
/// while `down(phase)`.
async fn upstream(start: Arc<Instant>, delay: Duration, down: fn(u8) -> bool) -> Upstream {
    Upstream::start(move |req, _| {
        if down(phase(start.elapsed())) {
            return unavailable();
        }
        let answer = if req.json()["stream"] == true {
            Reply::sse(3, Duration::from_millis(2))
        } else {
            Reply::json(200, chat_completion("hello"))
        };
        Reply::Delay(delay, Box::new(answer))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_run_replayed_with_its_own_config_reproduces_it() {
    let _ = sse_chunks; // the stream answer's chunks come from support
    let start = Arc::new(Instant::now());
    let a = upstream(start.clone(), Duration::from_millis(20), |p| {
        p == 1 || p == 2
    })
    .await;
    let b = upstream(start.clone(), Duration::from_millis(10), |p| p == 2).await;
    let dir = std::env::temp_dir().join(format!("gateway-faithful-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.jsonl");
    let _ = std::fs::remove_file(&log);
    let toml = format!(
        "[log]\naccess_log = \"{}\"\n\
         [providers.a]\nbase_url = \"{}\"\n\
         retry = {{ max_attempts = 2, backoff = \"5ms\", max_backoff = \"20ms\" }}\n\
         breaker = {{ failure_threshold = 3, cooldown = \"500ms\", max_cooldown = \"500ms\" }}\n\
         [providers.b]\nbase_url = \"{}\"\nretry = {{ max_attempts = 1 }}\n\
         breaker = {{ failure_threshold = 3, cooldown = \"500ms\", max_cooldown = \"500ms\" }}\n\
         [models.m]\ntargets = [\"a/x\", \"b/y\"]\n\
         [models.n]\ntargets = [\"b/y\"]\n",
        log.display(),
        a.url(),
        b.url()
    );
    // `a` retries with backoff, so jitter is replayed too (seeded, hence not the same
    // draws). `b` does not: the only target of `n`, its circuit decides `n`'s success, and
    // one retry landing a millisecond earlier between two failures (jitter) can open it
    // earlier and shift every later probe — chance, not a difference of rules.
    let config = dir.join("gateway.toml");
    std::fs::write(&config, &toml).unwrap();
    let gw = Gateway::start(&toml).await;

    // Open-loop traffic, as real clients send it: one request every 4 ms whatever the
    // answers; every other one is a stream for `n`. The log's millisecond timestamps cannot
    // always tell whether a success still in flight when a fault began ended between two
    // failures, which decides when three failures in a row open the circuit: the replayed
    // opening may move by up to the length of those answers (b's streams: ~20 ms), and
    // every later probe with it. Over a run of seconds that is a fraction of 1 %.
    let url = gw.url("/v1/chat/completions");
    let t0 = tokio::time::Instant::now();
    let n = u64::try_from(RUN.as_millis()).unwrap() / 4;
    let mut tasks = Vec::new();
    for k in 0..n {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(t0 + Duration::from_millis(4 * k)).await;
            let body = if k % 2 == 0 {
                r#"{"model":"n","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
            } else {
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
            };
            collect(send(&client(), "POST", &url, &[], body).await)
                .await
                .status
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let lines = || std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
    support::until("every line written", async || lines() == n as usize).await;
    drop(gw);

    let out = support::gateway_command(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--format",
        "json",
    ])
    .arg(&log)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lines"]["requests"], n);
    assert_eq!(v["lines"]["unreadable"], 0);
    for m in ["m", "n"] {
        let (r, c) = (&v["models"][m]["recorded"], &v["models"][m]["candidate"]);
        let f = |side: &Value, k: &str| side[k].as_f64().unwrap();
        eprintln!(
            "model {m}: success {:.4} recorded, {:.4} replayed; p50 {:.2} ms recorded, \
             {:.2} ms replayed; p95 {:.2} / {:.2} ms; attempts/request {:.3} / {:.3}",
            f(r, "success_rate"),
            f(c, "success_rate"),
            f(r, "p50_ms"),
            f(c, "p50_ms"),
            f(r, "p95_ms"),
            f(c, "p95_ms"),
            f(r, "attempts_per_request"),
            f(c, "attempts_per_request"),
        );
        // The run must have exercised failures, or the comparison proves little.
        assert!(f(r, "success_rate") < 0.95, "{m}: {r}");
        assert!(
            (f(r, "success_rate") - f(c, "success_rate")).abs() <= 0.01,
            "{m}: success rate {r} vs {c}"
        );
        let (p50r, p50c) = (f(r, "p50_ms"), f(c, "p50_ms"));
        assert!(
            (p50r - p50c).abs() <= 0.1 * p50r,
            "{m}: p50 {p50r} vs {p50c}"
        );
        assert_eq!(c["unknown"], 0);
    }
    for p in ["a", "b"] {
        let (r, c) = (
            &v["providers"][p]["recorded"],
            &v["providers"][p]["candidate"],
        );
        eprintln!(
            "provider {p}: attempts {} / {}, failures {} / {}, circuit opens {} / {}",
            r["attempts"],
            c["attempts"],
            r["failures"],
            c["failures"],
            r["circuit_opens"],
            c["circuit_opens"]
        );
        assert_eq!(
            c["unobserved"], 0,
            "{p}: every attempt had a recorded neighbour"
        );
        assert!(c["circuit_opens"].as_u64().unwrap() >= 1, "{p}: {c}");
    }
}
