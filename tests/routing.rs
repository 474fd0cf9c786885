//! Routing strategies over real sockets: `GET /admin/models` (shape, the order of each
//! strategy from synthetic statistics, the in-flight factor, availability, a peek that
//! leaves the weighted rotation alone) and `x-gateway-strategy` staying at the gateway.
//!
//! The statistics are recorded straight into the targets' `TargetStats`, as the proxy will.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::time::Duration;

use gateway::config::Strategy;
use gateway::policy::keys::Cooling;
use serde_json::Value;
use support::*;
use tokio::time::Instant;

/// A hosted model, a cheaper hosted one and a local one, under every strategy.
fn config() -> String {
    let targets = r#"[
  { provider = "hosted", model = "big", input_cost = 2.5, output_cost = 10.0 },
  { provider = "cheap", model = "small", input_cost = 0.15, output_cost = 0.6, weight = 2 },
  { provider = "local", model = "free" },
]"#;
    let mut s = String::from(
        "[providers.hosted]\nkind = \"mock\"\n\
         [providers.cheap]\nkind = \"mock\"\n\
         [providers.local]\nkind = \"mock\"\nlimits = { max_concurrency = 2 }\n\
         [providers.keyed]\nkind = \"mock\"\napi_keys = [\"sk-test-0001\"]\n\
         [models.paused]\ntargets = [\"keyed/k\", \"cheap/small\"]\n",
    );
    for st in Strategy::ALL {
        s.push_str(&format!(
            "[models.chain-{0}]\nstrategy = \"{0}\"\ntargets = {targets}\n",
            st.as_str()
        ));
    }
    s
}

async fn models(gw: &Gateway) -> Value {
    let got = collect(send(&client(), "GET", &gw.url("/admin/models"), &[], "").await).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), "application/json");
    got.json()
}

fn model<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no model {name}"))
}

fn order(doc: &Value, name: &str) -> Vec<String> {
    model(doc, name)["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap().to_string())
        .collect()
}

fn target<'a>(doc: &'a Value, name: &str, label: &str) -> &'a Value {
    model(doc, name)["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == label)
        .unwrap()
}

fn approx(v: &Value, want: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"));
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
}

const HOSTED: &str = "hosted/big";
const CHEAP: &str = "cheap/small";
const LOCAL: &str = "local/free";

#[tokio::test]
async fn admin_models_shows_each_strategy_order_and_its_figures() {
    let gw = Gateway::start(&config()).await;
    let rt = gw.state.runtime();
    let routing = &rt.config.routing;
    let now = Instant::now();
    let chain = &rt.models["chain-balanced"].targets;
    // Plain latencies 800 / 400 / 200 ms; cheap 4 successes of 4, local 1 of 2, hosted none.
    for (t, ms) in [(0, 800), (1, 400), (2, 200)] {
        chain[t]
            .stats
            .observe_latency(false, Duration::from_millis(ms), routing.ewma_alpha);
    }
    // Streams are measured apart and do not show here.
    chain[0]
        .stats
        .observe_latency(true, Duration::from_millis(5), routing.ewma_alpha);
    for _ in 0..4 {
        chain[1]
            .stats
            .observe_verdict(true, now, routing.success_window);
    }
    chain[2]
        .stats
        .observe_verdict(true, now, routing.success_window);
    chain[2]
        .stats
        .observe_verdict(false, now, routing.success_window);

    let doc = models(&gw).await;
    assert_eq!(doc["generation"], 1);
    let names: Vec<&str> = doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "chain-balanced",
            "chain-cost",
            "chain-failover",
            "chain-speed",
            "chain-weighted",
            "paused"
        ],
        "sorted by name"
    );
    assert_eq!(model(&doc, "chain-speed")["strategy"], "speed");
    // Every alias shares the three targets' statistics: one target, one record.
    assert_eq!(order(&doc, "chain-failover"), [HOSTED, CHEAP, LOCAL]);
    // balanced 0.4/0.3/0.3: hosted 0.4, cheap 0.832, local 0.725.
    assert_eq!(order(&doc, "chain-balanced"), [CHEAP, LOCAL, HOSTED]);
    // speed 0.2/0.6/0.2: hosted 0.2, cheap 0.688, local 0.75.
    assert_eq!(order(&doc, "chain-speed"), [LOCAL, CHEAP, HOSTED]);
    // cost 0.2/0.2/0.6: hosted 0.2, cheap 0.864, local 0.85.
    assert_eq!(order(&doc, "chain-cost"), [CHEAP, LOCAL, HOSTED]);
    // weighted 1/2/1: the rotation's first pick is cheap, the others follow in order.
    assert_eq!(order(&doc, "chain-weighted"), [CHEAP, HOSTED, LOCAL]);

    let h = target(&doc, "chain-balanced", HOSTED);
    assert_eq!(h["weight"], 1);
    approx(&h["cost"], 12.5);
    approx(&h["latency_ms"], 800.0);
    assert!(h["success_rate"].is_null(), "no verdict yet: {h}");
    assert_eq!(h["in_flight"], 0);
    approx(&h["score"], 0.4);
    assert_eq!(h["available"], true);
    let c = target(&doc, "chain-balanced", CHEAP);
    assert_eq!(c["weight"], 2);
    approx(&c["cost"], 0.75);
    approx(&c["success_rate"], 1.0);
    approx(&c["score"], 0.832);
    let l = target(&doc, "chain-balanced", LOCAL);
    assert!(l["cost"].is_null(), "no costs configured: {l}");
    approx(&l["success_rate"], 0.5);
    approx(&l["score"], 0.725);
    approx(&target(&doc, "chain-speed", LOCAL)["score"], 0.75);
    approx(&target(&doc, "chain-cost", CHEAP)["score"], 0.864);
    for m in ["chain-failover", "chain-weighted"] {
        assert!(target(&doc, m, HOSTED)["score"].is_null(), "{m}");
    }
    let keyed = target(&doc, "paused", "keyed/k");
    assert!(keyed["latency_ms"].is_null(), "no sample yet");
    assert_eq!(keyed.as_object().unwrap().len(), 8, "{keyed}");

    // One of local's two slots taken: 200 ms looks like 300 ms, and speed now prefers
    // cheap (0.688) to local (0.2·0.5 + 0.6·(1 − 300/800) + 0.2 = 0.675).
    let local = &rt.providers["local"].health.bulkhead;
    assert!(local.try_acquire());
    let doc = models(&gw).await;
    let l = target(&doc, "chain-speed", LOCAL);
    assert_eq!(l["in_flight"], 1);
    approx(&l["latency_ms"], 300.0);
    approx(&l["score"], 0.675);
    assert_eq!(order(&doc, "chain-speed"), [CHEAP, LOCAL, HOSTED]);
    local.release();
    assert_eq!(
        order(&models(&gw).await, "chain-speed"),
        [LOCAL, CHEAP, HOSTED]
    );
}

#[tokio::test]
async fn admin_models_peeks_at_the_weighted_rotation_without_advancing_it() {
    let gw = Gateway::start(&config()).await;
    for _ in 0..3 {
        assert_eq!(
            order(&models(&gw).await, "chain-weighted"),
            [CHEAP, HOSTED, LOCAL]
        );
    }
    // A request takes the pick; the view shows the next one. Weights 1/2/1: counters
    // (1,2,1)→cheap, (2,0,2)→hosted, (−1,2,3)→local, (0,4,0)→cheap.
    let rt = gw.state.runtime();
    let route = &rt.models["chain-weighted"];
    let now = Instant::now();
    for want in [
        [CHEAP, HOSTED, LOCAL],
        [HOSTED, CHEAP, LOCAL],
        [LOCAL, HOSTED, CHEAP],
    ] {
        assert_eq!(order(&models(&gw).await, "chain-weighted"), want);
        let taken = route.order(Strategy::Weighted, false, &rt.config.routing, now);
        let labels: Vec<&str> = taken
            .iter()
            .map(|&i| route.targets[i].label_str())
            .collect();
        assert_eq!(labels, want);
    }
}

#[tokio::test]
async fn unavailable_targets_keep_their_place_and_say_so() {
    let gw = Gateway::start(&config()).await;
    let opened = collect(
        send(
            &client(),
            "POST",
            &gw.url("/admin/providers/local/open"),
            &[],
            "",
        )
        .await,
    )
    .await;
    assert_eq!(opened.status, 200, "{}", opened.text());
    let doc = models(&gw).await;
    for st in Strategy::ALL {
        let name = format!("chain-{}", st.as_str());
        assert_eq!(target(&doc, &name, LOCAL)["available"], false, "{name}");
        assert_eq!(target(&doc, &name, CHEAP)["available"], true, "{name}");
    }
    // No statistics anywhere: every score strategy ties on latency and success, so cost
    // decides; the open circuit does not move local from first place.
    assert_eq!(order(&doc, "chain-cost"), [LOCAL, CHEAP, HOSTED]);
    assert_eq!(order(&doc, "chain-failover"), [HOSTED, CHEAP, LOCAL]);

    // A 429 pause, and every key cooling, make a target unavailable too.
    let rt = gw.state.runtime();
    let now = Instant::now();
    rt.providers["cheap"]
        .health
        .pause(now, Duration::from_secs(60));
    let keyed = &rt.providers["keyed"];
    keyed.health.keys.set_aside(
        &keyed.keys[0],
        now,
        Duration::from_secs(60),
        Cooling::Refused,
    );
    let doc = models(&gw).await;
    assert_eq!(target(&doc, "paused", "keyed/k")["available"], false);
    assert_eq!(target(&doc, "paused", CHEAP)["available"], false);
    assert_eq!(order(&doc, "paused"), ["keyed/k", CHEAP]);
}

#[tokio::test]
async fn admin_models_answers_get_only() {
    let gw = Gateway::start(&config()).await;
    for method in ["POST", "DELETE", "PUT"] {
        collect(send(&client(), method, &gw.url("/admin/models"), &[], "").await)
            .await
            .assert_error(405, "method_not_allowed");
    }
    // With a trailing slash, like the other admin routes.
    let got = collect(send(&client(), "GET", &gw.url("/admin/models/"), &[], "").await).await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn the_strategy_header_is_not_forwarded_upstream() {
    let up = Upstream::start(|_, _| Reply::ok()).await;
    let gw = Gateway::start(&config_for(&up.url(), "")).await;
    let got = post_with(
        &gw.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("x-gateway-strategy", "speed"),
            ("x-kept", "1"),
        ],
        CHAT,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = &up.requests()[0].headers;
    assert!(!seen.contains_key("x-gateway-strategy"));
    assert_eq!(seen["x-kept"], "1");
}
