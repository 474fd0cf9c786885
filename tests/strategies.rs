//! Routing strategies over real sockets (contract §6): three mock upstreams that differ in
//! latency, cost and failure rate, and the traffic going where each strategy says.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use support::*;

fn alias(strategy: &str, providers: &[(&str, &Upstream, &str)]) -> String {
    let mut cfg = String::new();
    let mut targets = Vec::new();
    for (name, up, extra) in providers {
        cfg += &format!(
            "[providers.{name}]\nbase_url = \"{}\"\nretry = {{ max_attempts = 1 }}\nbreaker = {{ failure_threshold = 1000 }}\n",
            up.url()
        );
        targets.push(format!(
            "{{ provider = \"{name}\", model = \"m-{name}\"{extra} }}"
        ));
    }
    cfg + &format!(
        "[models.m]\nstrategy = \"{strategy}\"\ntargets = [{}]\n",
        targets.join(", ")
    )
}

async fn served_by(gw: &Gateway) -> String {
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 200, "{}", got.text());
    got.header("x-gateway-target").to_string()
}

/// An upstream answering after a delay (milliseconds) that the test can change.
async fn delayed(ms: &Arc<AtomicU64>) -> Upstream {
    let ms = ms.clone();
    Upstream::start(move |_, _| {
        Reply::Delay(
            Duration::from_millis(ms.load(Ordering::SeqCst)),
            Box::new(Reply::ok()),
        )
    })
    .await
}

#[tokio::test]
async fn weighted_one_to_three_is_exactly_a_quarter_and_three_quarters() {
    let a = Upstream::start(|_, _| Reply::ok()).await;
    let b = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&alias(
        "weighted",
        &[("a", &a, ", weight = 1"), ("b", &b, ", weight = 3")],
    ))
    .await;
    for _ in 0..400 {
        served_by(&gw).await;
    }
    assert_eq!((a.hits(), b.hits()), (100, 300));
}

#[tokio::test]
async fn speed_moves_to_the_faster_target_when_the_first_slows_down() {
    let fast = Arc::new(AtomicU64::new(1));
    let steady = Arc::new(AtomicU64::new(60));
    let a = delayed(&fast).await;
    let b = delayed(&steady).await;
    let c = Upstream::start(|_, _| Reply::Delay(Duration::from_millis(400), Box::new(Reply::ok())))
        .await;
    let gw = Gateway::start(&alias(
        "speed",
        &[("a", &a, ""), ("b", &b, ""), ("c", &c, "")],
    ))
    .await;
    // Unmeasured targets count as the fastest, so each is tried once and measured.
    for _ in 0..3 {
        served_by(&gw).await;
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (1, 1, 1));
    for _ in 0..5 {
        assert_eq!(served_by(&gw).await, "a/m-a");
    }
    // a slows down to well beyond b: within a handful of requests, b takes over.
    fast.store(500, Ordering::SeqCst);
    let mut switched_after = None;
    for i in 1..=8 {
        if served_by(&gw).await == "b/m-b" {
            switched_after = Some(i);
            break;
        }
    }
    let n = switched_after.expect("speed never moved off the slowed target");
    assert!(n <= 5, "took {n} requests");
    for _ in 0..5 {
        assert_eq!(served_by(&gw).await, "b/m-b");
    }
    assert_eq!(c.hits(), 1, "the slowest target was only measured");
}

#[tokio::test]
async fn balanced_moves_off_a_target_whose_success_rate_drops() {
    let failing = Arc::new(AtomicU64::new(0));
    let f = failing.clone();
    // a is the faster target, so balanced puts it first while it is healthy.
    let a = Upstream::start(move |_, _| {
        let reply = if f.load(Ordering::SeqCst) == 1 {
            Reply::json(500, json!({"error": {"message": "boom"}}))
        } else {
            Reply::ok()
        };
        Reply::Delay(Duration::from_millis(5), Box::new(reply))
    })
    .await;
    let b = Upstream::start(|_, _| Reply::Delay(Duration::from_millis(60), Box::new(Reply::ok())))
        .await;
    // Latency left out of the score: on a busy 2-core machine a 5 ms upstream can answer
    // later than a 60 ms one, and this test is about the success term.
    let gw = Gateway::start(&format!(
        "[routing]\nbalanced = {{ success = 0.7, latency = 0.0, cost = 0.3 }}\n{}",
        alias("balanced", &[("a", &a, ""), ("b", &b, "")])
    ))
    .await;
    for _ in 0..2 {
        served_by(&gw).await;
    }
    for _ in 0..4 {
        assert_eq!(served_by(&gw).await, "a/m-a");
    }
    failing.store(1, Ordering::SeqCst);
    // Each failure fails over to b (the client still gets 200) and lowers a's success rate
    // until its latency advantage no longer keeps it first.
    let mut moved_after = None;
    for i in 1..=20 {
        served_by(&gw).await;
        let before = a.hits();
        if served_by(&gw).await == "b/m-b" && a.hits() == before {
            moved_after = Some(i);
            break;
        }
    }
    assert!(
        moved_after.is_some(),
        "balanced never moved off the failing target"
    );
    let a_hits = a.hits();
    for _ in 0..10 {
        assert_eq!(served_by(&gw).await, "b/m-b");
    }
    assert_eq!(a.hits(), a_hits, "a is no longer tried first");
    let doc = collect(send(&client(), "GET", &gw.url("/admin/models"), &[], "").await)
        .await
        .json();
    let targets = doc["models"][0]["targets"].as_array().unwrap().clone();
    assert_eq!(targets[0]["target"], "b/m-b");
    assert!(targets[1]["success_rate"].as_f64().unwrap() < 1.0);
}

#[tokio::test]
async fn cost_prefers_the_cheap_target_and_the_header_overrides_per_request() {
    let dear = Upstream::start(|_, _| Reply::ok()).await;
    let cheap = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&alias(
        "cost",
        &[
            ("dear", &dear, ", input_cost = 2.5, output_cost = 10.0"),
            ("cheap", &cheap, ", input_cost = 0.15, output_cost = 0.6"),
        ],
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(served_by(&gw).await, "cheap/m-cheap");
    }
    let url = gw.url("/v1/chat/completions");
    let got = post_with(&url, &[("x-gateway-strategy", "failover")], CHAT).await;
    assert_eq!(got.header("x-gateway-target"), "dear/m-dear");
    assert!(
        !dear.requests()[0]
            .headers
            .contains_key("x-gateway-strategy")
    );
    let got = post_with(&url, &[("x-gateway-strategy", "fastest")], CHAT).await;
    got.assert_error(400, "invalid_strategy");
    assert_eq!(got.header("x-should-retry"), "false");
}
