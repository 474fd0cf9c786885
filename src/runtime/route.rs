//! Routing: from the `model` a client asked for to the chain of targets that may serve it,
//! and the order in which one request tries them (contract §6 "Routing strategies").
//!
//! Lookups over the immutable [`Runtime`] snapshot: an alias's targets are compiled once,
//! with their pre-encoded model and header values. A model that is not an alias but reads
//! `provider/model` with a known provider goes to that provider alone.
//!
//! Each [`Target`] carries its [`TargetStats`]: one object per provider + upstream model,
//! shared by every alias that names the pair and by direct `provider/model` requests for it,
//! and carried over a reload when the provider's health is (same kind and `base_url`).
//! Direct requests name arbitrary models, so the [`TargetRegistry`] keeps statistics for at
//! most [`MAX_DIRECT_TARGETS`] pairs beyond the configured ones; past that a direct target
//! gets statistics of its own that nothing keeps. The order itself is decided by
//! [`crate::policy::strategy`]; this module only gathers each target's [`Figures`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::config::{Config, ProviderSettings, RoutingConfig, Strategy};
use crate::error::GatewayError;
use crate::payload::encode_model;
use crate::policy::health::Health;
use crate::policy::strategy::{self, Figures, Swrr};
use crate::policy::target_stats::TargetStats;
use crate::policy::walk::Guarded;
use crate::runtime::Runtime;
use crate::upstream::Provider;

/// One provider/model pair a request may be sent to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The provider.
    pub provider: Arc<Provider>,
    /// Model name sent upstream.
    pub model: Arc<str>,
    /// `model` encoded as a JSON string, ready to splice into the body.
    pub model_json: Bytes,
    /// `provider/model`, for `x-gateway-target` and logs.
    pub label: HeaderValue,
    /// Relative weight (`weighted`).
    pub weight: u32,
    /// USD per million prompt tokens.
    pub input_cost: Option<f64>,
    /// USD per million completion tokens.
    pub output_cost: Option<f64>,
    /// What the gateway has seen of this provider + model: latency per kind, success rate.
    /// Record each attempt here (`observe_latency`, `observe_verdict`).
    pub stats: Arc<TargetStats>,
}

impl Target {
    /// A target with default weight and no costs.
    pub fn new(provider: Arc<Provider>, model: &str, stats: Arc<TargetStats>) -> Target {
        let label = format!("{}/{}", provider.name, model);
        Target::labelled(provider, model, &label, stats)
    }

    fn labelled(
        provider: Arc<Provider>,
        model: &str,
        label: &str,
        stats: Arc<TargetStats>,
    ) -> Target {
        Target {
            label: HeaderValue::from_str(label)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            model_json: encode_model(model),
            model: model.into(),
            provider,
            weight: 1,
            input_cost: None,
            output_cost: None,
            stats,
        }
    }

    /// `provider/model` as text.
    pub fn label_str(&self) -> &str {
        self.label.to_str().unwrap_or("")
    }

    /// `input_cost + output_cost` (a missing one counts 0); `None` when neither is set.
    pub fn cost(&self) -> Option<f64> {
        match (self.input_cost, self.output_cost) {
            (None, None) => None,
            (i, o) => Some(i.unwrap_or(0.0) + o.unwrap_or(0.0)),
        }
    }

    /// What a strategy knows of this target for a request of kind `stream`, at `now`.
    pub fn figures(&self, stream: bool, routing: &RoutingConfig, now: Instant) -> Figures {
        Figures {
            weight: self.weight,
            cost: self.cost().unwrap_or(0.0),
            latency_ms: self.stats.latency_ms(stream),
            in_flight: self.provider.health.bulkhead.in_flight(),
            max_concurrency: self.provider.settings.limits.max_concurrency,
            success_rate: self.stats.success_rate(now, routing.success_window),
        }
    }

    /// False while the walk would pass this target over without trying it: its circuit is
    /// open, its provider is paused after a 429, or every key of its provider is cooling.
    /// (A full queue or a spent retry budget is found out only by trying.)
    pub fn available(&self, now: Instant) -> bool {
        let p = &self.provider;
        p.health.breaker.would_admit(now).is_ok()
            && p.health.paused(now).is_none()
            && p.health.keys.any_ready(now).is_ok()
    }
}

impl Guarded for Target {
    fn health(&self) -> &Health {
        &self.provider.health
    }

    fn settings(&self) -> &ProviderSettings {
        &self.provider.settings
    }

    fn target_stats(&self) -> Option<&TargetStats> {
        Some(&self.stats)
    }
}

/// A model alias: a strategy over a chain of targets.
#[derive(Debug, Clone)]
pub struct Route {
    /// The alias (also the `model` metric label).
    pub alias: Arc<str>,
    /// How targets are ordered unless a request asks otherwise (`x-gateway-strategy`).
    pub strategy: Strategy,
    /// The chain, in configured order.
    pub targets: Box<[Target]>,
    /// The `weighted` rotation; carried over a reload that keeps the same targets and
    /// weights in the same order.
    pub swrr: Arc<Swrr>,
}

impl Route {
    /// Indexes into [`Route::targets`] in the order one request tries them under `strategy`
    /// (the alias's own, or the one `x-gateway-strategy` asked for). `stream` picks the
    /// latency EWMA of the request's kind. Every target is in the order, available or not:
    /// the walk passes over those that cannot be tried. `weighted` advances the rotation,
    /// so call this once per request.
    pub fn order(
        &self,
        strategy: Strategy,
        stream: bool,
        routing: &RoutingConfig,
        now: Instant,
    ) -> Vec<usize> {
        match strategy {
            // No statistics needed: skip reading them.
            Strategy::Failover => (0..self.targets.len()).collect(),
            Strategy::Weighted => {
                let w: Vec<Figures> = self
                    .targets
                    .iter()
                    .map(|t| Figures {
                        weight: t.weight,
                        ..Figures::default()
                    })
                    .collect();
                strategy::order(strategy, &w, routing, &self.swrr)
            }
            _ => strategy::order(
                strategy,
                &self.figures(stream, routing, now),
                routing,
                &self.swrr,
            ),
        }
    }

    /// Every target's figures, in configured order.
    pub fn figures(&self, stream: bool, routing: &RoutingConfig, now: Instant) -> Vec<Figures> {
        self.targets
            .iter()
            .map(|t| t.figures(stream, routing, now))
            .collect()
    }
}

/// The targets chosen for one request.
#[derive(Debug)]
pub enum Plan<'a> {
    /// An alias from `[models]`.
    Alias(&'a Route),
    /// `provider/model` sent straight to a known provider.
    Direct(Target),
}

impl Plan<'_> {
    /// The targets, in configured order.
    pub fn targets(&self) -> &[Target] {
        match self {
            Plan::Alias(r) => &r.targets,
            Plan::Direct(t) => std::slice::from_ref(t),
        }
    }

    /// Indexes into [`Plan::targets`] in the order to try them: [`Route::order`] under
    /// `strategy` (`None`: the alias's own) for an alias, `[0]` for a direct target.
    pub fn order(
        &self,
        strategy: Option<Strategy>,
        stream: bool,
        routing: &RoutingConfig,
        now: Instant,
    ) -> Vec<usize> {
        match self {
            Plan::Alias(r) => r.order(strategy.unwrap_or(r.strategy), stream, routing, now),
            Plan::Direct(_) => vec![0],
        }
    }
}

/// Resolves a requested model: an alias first, then `provider/model`.
pub fn resolve<'a>(rt: &'a Runtime, model: &str) -> Option<Plan<'a>> {
    if let Some(route) = rt.models.get(model) {
        return Some(Plan::Alias(route));
    }
    let (provider, upstream_model) = model.split_once('/')?;
    if upstream_model.is_empty() {
        return None;
    }
    let p = rt.providers.get(provider)?;
    let stats = rt.targets.direct(model);
    Some(Plan::Direct(Target::labelled(
        p.clone(),
        upstream_model,
        model,
        stats,
    )))
}

/// The strategy an `x-gateway-strategy` value names: `failover`, `weighted`, `speed`, `cost`
/// or `balanced`, ASCII case-insensitive, surrounding spaces ignored. Anything else is the
/// 400 `invalid_strategy`.
pub fn parse_strategy_header(v: &HeaderValue) -> Result<Strategy, GatewayError> {
    v.to_str()
        .ok()
        .and_then(|s| Strategy::from_name(s.trim()))
        .ok_or_else(|| {
            let shown: String = String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(64)
                .collect();
            GatewayError::InvalidStrategy(shown)
        })
}

/// The strategy a request asks for with `x-gateway-strategy`, if it sends the header (the
/// first value when it sends several).
pub fn requested_strategy(headers: &HeaderMap) -> Result<Option<Strategy>, GatewayError> {
    headers
        .get(crate::headers::GATEWAY_STRATEGY)
        .map(parse_strategy_header)
        .transpose()
}

/// Statistics kept for direct `provider/model` targets beyond the configured ones: the same
/// bound as the metrics' free model labels, since both are keyed by what clients send.
pub const MAX_DIRECT_TARGETS: usize = 256;

/// Every target's [`TargetStats`] in one snapshot, by `provider/model` (a provider name
/// holds no `/`, so the label is a unique key).
#[derive(Debug)]
pub struct TargetRegistry {
    /// Anchors the windows of statistics made after the compile.
    base: Instant,
    /// The targets the config names; fixed at compile.
    configured: HashMap<Box<str>, Arc<TargetStats>>,
    /// Direct targets met since, at most [`MAX_DIRECT_TARGETS`].
    direct: RwLock<HashMap<Box<str>, Arc<TargetStats>>>,
}

impl TargetRegistry {
    /// Statistics for every target `config` names, and for the direct targets of `prev`
    /// (up to the bound). A pair keeps its statistics from `prev` when its provider kept its
    /// health (same kind and `base_url`, so the same `Arc<Health>`): with the same
    /// `success_window` the very object, else its latencies with a fresh window. Otherwise
    /// its statistics start empty.
    pub(crate) fn compile(
        config: &Config,
        providers: &HashMap<String, Arc<Provider>>,
        prev: Option<&Runtime>,
        now: Instant,
    ) -> TargetRegistry {
        let carry = |provider: &str, label: &str| -> Option<Arc<TargetStats>> {
            let prev = prev?;
            let (new, old) = (providers.get(provider)?, prev.providers.get(provider)?);
            if !Arc::ptr_eq(&new.health, &old.health) {
                return None;
            }
            let stats = prev.targets.get(label)?;
            if prev.config.routing.success_window == config.routing.success_window {
                Some(stats)
            } else {
                Some(Arc::new(stats.successor(now)))
            }
        };
        let mut configured: HashMap<Box<str>, Arc<TargetStats>> = HashMap::new();
        for t in config.models.values().flat_map(|m| &m.targets) {
            let label = format!("{}/{}", t.provider, t.model);
            if !configured.contains_key(label.as_str()) {
                let stats =
                    carry(&t.provider, &label).unwrap_or_else(|| Arc::new(TargetStats::new(now)));
                configured.insert(label.into(), stats);
            }
        }
        let mut direct = HashMap::new();
        if let Some(prev) = prev {
            let old = prev
                .targets
                .direct
                .read()
                .unwrap_or_else(|e| e.into_inner());
            for label in old.keys() {
                if direct.len() >= MAX_DIRECT_TARGETS {
                    break;
                }
                let Some((provider, _)) = label.split_once('/') else {
                    continue;
                };
                if configured.contains_key(label) {
                    continue;
                }
                if let Some(stats) = carry(provider, label) {
                    direct.insert(label.clone(), stats);
                }
            }
        }
        TargetRegistry {
            base: now,
            configured,
            direct: RwLock::new(direct),
        }
    }

    /// The statistics of `provider/model`, if this snapshot keeps any.
    pub fn get(&self, label: &str) -> Option<Arc<TargetStats>> {
        if let Some(s) = self.configured.get(label) {
            return Some(s.clone());
        }
        let direct = self.direct.read().unwrap_or_else(|e| e.into_inner());
        direct.get(label).cloned()
    }

    /// Direct targets with statistics kept (besides the configured ones).
    pub fn direct_len(&self) -> usize {
        self.direct.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The statistics of a direct `provider/model` target: the configured target's when the
    /// config names the pair, else the kept ones, else new ones, kept while fewer than
    /// [`MAX_DIRECT_TARGETS`] are.
    fn direct(&self, label: &str) -> Arc<TargetStats> {
        if let Some(s) = self.get(label) {
            return s;
        }
        let mut direct = self.direct.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = direct.get(label) {
            return s.clone();
        }
        let stats = Arc::new(TargetStats::new(self.base));
        if direct.len() < MAX_DIRECT_TARGETS {
            direct.insert(label.into(), stats.clone());
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Config, Overrides};

    fn config(text: &str) -> Config {
        Config::parse_with(text, &Overrides::default(), &|_| None).unwrap()
    }

    fn rt() -> Runtime {
        Runtime::build(
            config(
                r#"
            [providers.a]
            kind = "mock"
            [providers.local]
            kind = "mock"
            [models.coder]
            targets = ["a/x", { provider = "local", model = "meta/llama", weight = 3 }]
            [models."a/shadowed"]
            targets = ["local/other"]
            "#,
            ),
            1,
        )
        .unwrap()
    }

    #[test]
    fn alias_resolves_to_its_chain() {
        let rt = rt();
        let plan = resolve(&rt, "coder").unwrap();
        let t = plan.targets();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].label_str(), "a/x");
        assert_eq!(&*t[1].model, "meta/llama");
        assert_eq!(t[1].weight, 3);
        assert_eq!(&t[1].model_json[..], br#""meta/llama""#);
    }

    #[test]
    fn provider_slash_model_is_direct() {
        let rt = rt();
        let plan = resolve(&rt, "local/meta-llama/Llama-3-8B").unwrap();
        assert!(matches!(plan, Plan::Direct(_)));
        assert_eq!(&*plan.targets()[0].model, "meta-llama/Llama-3-8B");
        assert_eq!(&*plan.targets()[0].provider.name, "local");
        assert_eq!(plan.targets()[0].label_str(), "local/meta-llama/Llama-3-8B");
        let routing = RoutingConfig::default();
        let now = Instant::now();
        assert_eq!(plan.order(Some(Strategy::Speed), true, &routing, now), [0]);
    }

    #[test]
    fn alias_wins_over_direct() {
        let rt = rt();
        assert_eq!(
            resolve(&rt, "a/shadowed").unwrap().targets()[0].label_str(),
            "local/other"
        );
    }

    #[test]
    fn unknown_models() {
        let rt = rt();
        for m in ["gpt-4o", "nope/x", "a/", "", "/x"] {
            assert!(resolve(&rt, m).is_none(), "{m}");
        }
    }

    /// A hosted model, a cheaper hosted one and a local one (free), on three providers.
    const CHAIN: &str = r#"
        [providers.hosted]
        kind = "mock"
        limits = { max_concurrency = 4 }
        [providers.cheap]
        kind = "mock"
        [providers.local]
        kind = "mock"
        limits = { max_concurrency = 2 }
        [models.m]
        strategy = "balanced"
        targets = [
          { provider = "hosted", model = "big", input_cost = 2.5, output_cost = 10.0 },
          { provider = "cheap", model = "small", input_cost = 0.15, output_cost = 0.6, weight = 2 },
          { provider = "local", model = "free" },
        ]
    "#;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn route_order_uses_the_latency_of_the_request_kind() {
        let rt = Runtime::build(config(CHAIN), 1).unwrap();
        let r = &rt.models["m"];
        let routing = &rt.config.routing;
        let now = Instant::now();
        let alpha = routing.ewma_alpha;
        // Plain: hosted 800, cheap 400, local 200 ms. Streams: local is the slowest to its
        // first token.
        for (t, plain, stream) in [(0, 800, 300), (1, 400, 200), (2, 200, 900)] {
            r.targets[t].stats.observe_latency(false, ms(plain), alpha);
            r.targets[t].stats.observe_latency(true, ms(stream), alpha);
        }
        let f = r.figures(false, routing, now);
        assert_eq!(f[0].cost, 12.5);
        assert_eq!(f[1].cost, 0.75);
        assert_eq!(f[2].cost, 0.0);
        assert_eq!(f[1].weight, 2);
        assert_eq!(f[2].latency_ms, Some(200.0));
        assert_eq!(f[2].max_concurrency, 2);
        // speed, plain: 0.2, 0.688, 0.85; streams (max 900 ms): 0.6, 0.855, 0.4.
        assert_eq!(r.order(Strategy::Speed, false, routing, now), [2, 1, 0]);
        assert_eq!(r.order(Strategy::Speed, true, routing, now), [1, 0, 2]);
        assert_eq!(r.order(Strategy::Failover, true, routing, now), [0, 1, 2]);
        // The alias's own strategy unless the request names another.
        let plan = Plan::Alias(r);
        assert_eq!(plan.order(None, false, routing, now), [2, 1, 0]);
        assert_eq!(
            plan.order(Some(Strategy::Failover), false, routing, now),
            [0, 1, 2]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_and_failures_reorder_the_chain() {
        let rt = Runtime::build(config(CHAIN), 1).unwrap();
        let r = &rt.models["m"];
        let routing = &rt.config.routing;
        let t0 = Instant::now();
        for (t, plain) in [(0, 800), (1, 400), (2, 200)] {
            r.targets[t]
                .stats
                .observe_latency(false, ms(plain), routing.ewma_alpha);
        }
        assert_eq!(r.order(Strategy::Speed, false, routing, t0), [2, 1, 0]);
        // Both local slots taken: 200 ms looks like 400 ms; speed scores are now hosted
        // 0.2 + 0 + 0, cheap 0.2 + 0.6·0.5 + 0.2·0.94, local 0.2 + 0.6·0.5 + 0.2: local still
        // wins on cost. With the cost term gone it is a tie, kept in configured order.
        let local = &r.targets[2].provider.health.bulkhead;
        assert!(local.try_acquire());
        assert!(local.try_acquire());
        let f = r.figures(false, routing, t0);
        assert_eq!((f[2].in_flight, f[2].latency_estimate()), (2, 400.0));
        assert_eq!(r.order(Strategy::Speed, false, routing, t0), [2, 1, 0]);
        let mut latency_only = routing.clone();
        latency_only.speed = crate::config::ScoreWeights::new(0.0, 1.0, 0.0);
        assert_eq!(
            r.order(Strategy::Speed, false, &latency_only, t0),
            [1, 2, 0]
        );
        // Failures of local over the window: 1 success in 4 costs it 0.2 · 0.75.
        let window = routing.success_window;
        r.targets[2].stats.observe_verdict(true, t0, window);
        for _ in 0..3 {
            r.targets[2].stats.observe_verdict(false, t0, window);
        }
        assert_eq!(r.figures(false, routing, t0)[2].success_rate, Some(0.25));
        assert_eq!(r.order(Strategy::Speed, false, routing, t0), [1, 2, 0]);
        // A window later the failures no longer count.
        assert_eq!(r.figures(false, routing, t0 + window)[2].success_rate, None);
        assert_eq!(
            r.order(Strategy::Speed, false, routing, t0 + window),
            [2, 1, 0]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn weighted_rotates_and_availability_is_reported() {
        let rt = Runtime::build(config(CHAIN), 1).unwrap();
        let r = &rt.models["m"];
        let routing = &rt.config.routing;
        let now = Instant::now();
        // Weights 1, 2, 1: counters (1,2,1)→1, (2,0,2)→0, (−1,2,3)→2, (0,4,0)→1.
        let firsts: Vec<usize> = (0..8)
            .map(|_| r.order(Strategy::Weighted, false, routing, now)[0])
            .collect();
        assert_eq!(firsts, [1, 0, 2, 1, 1, 0, 2, 1]);
        assert_eq!(r.order(Strategy::Weighted, false, routing, now), [1, 0, 2]);
        assert!(r.targets.iter().all(|t| t.available(now)));
        r.targets[0].provider.health.breaker.force_open();
        r.targets[1]
            .provider
            .health
            .pause(now, Duration::from_secs(5));
        assert!(!r.targets[0].available(now));
        assert!(!r.targets[1].available(now));
        assert!(r.targets[1].available(now + Duration::from_secs(5)));
        assert!(r.targets[2].available(now));
    }

    fn http_chain(local_url: &str, window: &str, weight: u32) -> Config {
        config(&format!(
            r#"
            [routing]
            success_window = "{window}"
            [providers.hosted]
            base_url = "http://127.0.0.1:9/v1"
            [providers.local]
            base_url = "{local_url}"
            [models.m]
            strategy = "weighted"
            targets = ["hosted/big", {{ provider = "local", model = "free", weight = {weight} }}]
            [models.n]
            targets = ["local/free"]
            "#
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn stats_and_rotation_carry_over_a_reload() {
        let now = Instant::now();
        let one = Runtime::build(http_chain("http://127.0.0.1:11434/v1", "5m", 3), 1).unwrap();
        let window = one.config.routing.success_window;
        let m = &one.models["m"];
        // One target, one statistics object, whichever alias names it.
        assert!(Arc::ptr_eq(
            &m.targets[1].stats,
            &one.models["n"].targets[0].stats
        ));
        m.targets[1].stats.observe_latency(false, ms(100), 0.2);
        m.targets[1].stats.observe_verdict(false, now, window);
        m.targets[0].stats.observe_latency(false, ms(700), 0.2);
        let routing = &one.config.routing;
        assert_eq!(m.order(Strategy::Weighted, false, routing, now)[0], 1);
        // An unchanged config: the same objects, the rotation goes on where it was.
        let two = Runtime::build_with(
            http_chain("http://127.0.0.1:11434/v1", "5m", 3),
            2,
            Some(&one),
        )
        .unwrap();
        let m2 = &two.models["m"];
        assert!(Arc::ptr_eq(&m.targets[0].stats, &m2.targets[0].stats));
        assert!(Arc::ptr_eq(&m.targets[1].stats, &m2.targets[1].stats));
        assert!(Arc::ptr_eq(&m.swrr, &m2.swrr));
        // Weights 1, 3: counters (1,3)→1, (2,2)→0 — the second pick, not a fresh first.
        assert_eq!(m2.order(Strategy::Weighted, false, routing, now)[0], 0);
        // local's base_url changes: its target starts over, hosted's keeps its figures.
        // A new weight: a new rotation.
        let three = Runtime::build_with(
            http_chain("http://127.0.0.1:8001/v1", "5m", 2),
            3,
            Some(&two),
        )
        .unwrap();
        let m3 = &three.models["m"];
        assert!(Arc::ptr_eq(&m2.targets[0].stats, &m3.targets[0].stats));
        assert_eq!(m3.targets[1].stats.latency_ms(false), None);
        assert_eq!(m3.targets[1].stats.success_rate(now, window), None);
        assert!(!Arc::ptr_eq(&m2.swrr, &m3.swrr));
        assert_eq!(m3.order(Strategy::Weighted, false, routing, now)[0], 1);
        // A new success_window: latencies stay, the window starts empty.
        m3.targets[0].stats.observe_verdict(true, now, window);
        let four = Runtime::build_with(
            http_chain("http://127.0.0.1:8001/v1", "10m", 2),
            4,
            Some(&three),
        )
        .unwrap();
        let t4 = &four.models["m"].targets[0];
        assert!(!Arc::ptr_eq(&m3.targets[0].stats, &t4.stats));
        assert_eq!(t4.stats.latency_ms(false), Some(700.0));
        let w4 = four.config.routing.success_window;
        assert_eq!(t4.stats.success_rate(now, w4), None);
        assert!(Arc::ptr_eq(&m3.swrr, &four.models["m"].swrr));
    }

    #[tokio::test(start_paused = true)]
    async fn direct_targets_share_stats_and_are_bounded() {
        let now = Instant::now();
        let one = Runtime::build(http_chain("http://127.0.0.1:11434/v1", "5m", 1), 1).unwrap();
        let direct = |rt: &Runtime, model: &str| match resolve(rt, model) {
            Some(Plan::Direct(t)) => t.stats,
            _ => panic!("{model} is not direct"),
        };
        // A direct request for a configured pair shares the alias target's statistics.
        assert!(Arc::ptr_eq(
            &direct(&one, "local/free"),
            &one.models["m"].targets[1].stats
        ));
        assert_eq!(one.targets.direct_len(), 0);
        let a = direct(&one, "local/other");
        assert!(Arc::ptr_eq(&a, &direct(&one, "local/other")));
        a.observe_latency(true, ms(50), 0.2);
        for i in 1..MAX_DIRECT_TARGETS {
            direct(&one, &format!("hosted/m{i}"));
        }
        assert_eq!(one.targets.direct_len(), MAX_DIRECT_TARGETS);
        // Past the bound: statistics nothing keeps.
        let past = direct(&one, "hosted/one-too-many");
        assert!(!Arc::ptr_eq(&past, &direct(&one, "hosted/one-too-many")));
        assert_eq!(one.targets.direct_len(), MAX_DIRECT_TARGETS);
        // A reload keeps the direct targets of providers that kept their health.
        let two = Runtime::build_with(
            http_chain("http://127.0.0.1:8001/v1", "5m", 1),
            2,
            Some(&one),
        )
        .unwrap();
        assert_eq!(two.targets.direct_len(), MAX_DIRECT_TARGETS - 1);
        assert!(two.targets.get("local/other").is_none());
        assert!(Arc::ptr_eq(
            &direct(&one, "hosted/m7"),
            &direct(&two, "hosted/m7")
        ));
        assert_eq!(direct(&two, "local/other").latency_ms(true), None);
        let _ = now;
    }

    #[test]
    fn strategy_header_values() {
        for (v, want) in [
            ("failover", Strategy::Failover),
            ("weighted", Strategy::Weighted),
            ("speed", Strategy::Speed),
            ("cost", Strategy::Cost),
            ("balanced", Strategy::Balanced),
            ("Speed", Strategy::Speed),
            (" BALANCED ", Strategy::Balanced),
        ] {
            assert_eq!(
                parse_strategy_header(&HeaderValue::from_str(v).unwrap()),
                Ok(want),
                "{v:?}"
            );
        }
        for bad in ["fastest", "", "speed,cost", "random"] {
            let e = parse_strategy_header(&HeaderValue::from_str(bad).unwrap()).unwrap_err();
            assert_eq!(e, GatewayError::InvalidStrategy(bad.into()));
            assert_eq!(e.code(), "invalid_strategy");
        }
        let odd = HeaderValue::from_bytes(b"sp\xffeed").unwrap();
        assert_eq!(
            parse_strategy_header(&odd),
            Err(GatewayError::InvalidStrategy("sp\u{fffd}eed".into()))
        );
        let long = HeaderValue::from_str(&"x".repeat(500)).unwrap();
        let Err(GatewayError::InvalidStrategy(shown)) = parse_strategy_header(&long) else {
            panic!("accepted");
        };
        assert_eq!(shown.len(), 64);
        let mut h = HeaderMap::new();
        assert_eq!(requested_strategy(&h), Ok(None));
        h.insert("x-gateway-strategy", HeaderValue::from_static("cost"));
        assert_eq!(requested_strategy(&h), Ok(Some(Strategy::Cost)));
    }
}
