//! Prometheus metrics (contract §7): one registry built at start-up, typed label sets,
//! base units, `gateway_` prefix, served as OpenMetrics text at `GET /metrics`.
//!
//! Label values come from the config (provider names, model aliases) or from small fixed
//! sets (status codes, reasons, kinds). The one label a client chooses — `model` for a
//! `provider/model` request or an unknown model — is bounded: past [`MAX_FREE_MODELS`]
//! distinct values it reads `other`.
//!
//! Gauges that describe state (queue depth, in flight, open connections, breaker state)
//! are not maintained on the request path: they are read from the providers' live state at
//! scrape time.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::policy::breaker::State as BreakerState;

/// Histogram buckets for LLM traffic: a few milliseconds to ten minutes.
const BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
];

/// Distinct client-chosen `model` label values kept before `other`.
pub const MAX_FREE_MODELS: usize = 256;

type Label = Arc<str>;
type Hist = Family<ProviderL, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// `{model, provider, status}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestL {
    model: Label,
    provider: Label,
    status: u16,
}

/// `{model, provider}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelProviderL {
    model: Label,
    provider: Label,
}

/// `{provider}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderL {
    provider: Label,
}

/// `{provider, to}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionL {
    provider: Label,
    to: &'static str,
}

/// `{provider, reason}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionL {
    provider: Label,
    reason: &'static str,
}

/// `{provider, kind}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorL {
    provider: Label,
    kind: &'static str,
}

/// `{model, provider, kind}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenL {
    model: Label,
    provider: Label,
    kind: &'static str,
}

/// `{provider, state}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyStateL {
    provider: Label,
    state: &'static str,
}

/// `{result}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultL {
    result: &'static str,
}

/// Why a target was passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Circuit open.
    CircuitOpen,
    /// Queue full.
    QueueFull,
    /// Queue timeout.
    QueueTimeout,
    /// Retry budget spent.
    RetryBudgetExhausted,
}

impl Rejection {
    fn as_str(self) -> &'static str {
        match self {
            Rejection::CircuitOpen => "circuit_open",
            Rejection::QueueFull => "queue_full",
            Rejection::QueueTimeout => "queue_timeout",
            Rejection::RetryBudgetExhausted => "retry_budget_exhausted",
        }
    }
}

/// All of the gateway's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestL, Counter>,
    duration: Family<ModelProviderL, Histogram, fn() -> Histogram>,
    first_byte: Hist,
    queue_wait: Hist,
    queue_depth: Family<ProviderL, Gauge>,
    in_flight: Family<ProviderL, Gauge>,
    connections: Family<ProviderL, Gauge>,
    breaker_state: Family<ProviderL, Gauge>,
    keys: Family<KeyStateL, Gauge>,
    transitions: Family<TransitionL, Counter>,
    rejections: Family<RejectionL, Counter>,
    upstream_errors: Family<ErrorL, Counter>,
    retries: Family<ProviderL, Counter>,
    tokens: Family<TokenL, Counter>,
    cost: Family<ModelProviderL, Counter<f64, AtomicU64>>,
    reloads: Family<ResultL, Counter>,
    /// Shared with every access log opened, so the count survives a reopen on reload.
    access_log_dropped: Counter,
    free_models: Mutex<HashSet<Label>>,
    none: Label,
    other: Label,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(histogram),
            first_byte: Family::new_with_constructor(histogram),
            queue_wait: Family::new_with_constructor(histogram),
            queue_depth: Family::default(),
            in_flight: Family::default(),
            connections: Family::default(),
            breaker_state: Family::default(),
            keys: Family::default(),
            transitions: Family::default(),
            rejections: Family::default(),
            upstream_errors: Family::default(),
            retries: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            reloads: Family::default(),
            access_log_dropped: Counter::default(),
            free_models: Mutex::new(HashSet::new()),
            none: "none".into(),
            other: "other".into(),
        };
        let mut r = Registry::default();
        r.register(
            "gateway_requests",
            "Requests answered, by requested model, final provider and status",
            m.requests.clone(),
        );
        r.register(
            "gateway_request_duration_seconds",
            "Whole request, arrival to end of response body",
            m.duration.clone(),
        );
        r.register(
            "gateway_upstream_first_byte_seconds",
            "Request sent upstream to response headers, per attempt",
            m.first_byte.clone(),
        );
        r.register(
            "gateway_queue_wait_seconds",
            "Time waiting for a provider slot (bulkhead), per attempt",
            m.queue_wait.clone(),
        );
        r.register(
            "gateway_queue_depth",
            "Requests waiting for a provider slot",
            m.queue_depth.clone(),
        );
        r.register(
            "gateway_in_flight",
            "Requests holding a provider slot (streams until their body ends)",
            m.in_flight.clone(),
        );
        r.register(
            "gateway_upstream_connections",
            "Sockets open to the provider",
            m.connections.clone(),
        );
        r.register(
            "gateway_breaker_state",
            "Circuit state: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        r.register(
            "gateway_provider_keys",
            "Provider keys by state: ready, or cooling after a 401/402/403 or a 429",
            m.keys.clone(),
        );
        r.register(
            "gateway_breaker_transitions",
            "Circuit state changes, by new state",
            m.transitions.clone(),
        );
        r.register(
            "gateway_rejections",
            "Targets passed over without an attempt, by reason",
            m.rejections.clone(),
        );
        r.register(
            "gateway_upstream_errors",
            "Failed upstream attempts, by kind",
            m.upstream_errors.clone(),
        );
        r.register(
            "gateway_retries",
            "Retries sent to the provider (including SDK retries)",
            m.retries.clone(),
        );
        r.register(
            "gateway_tokens",
            "Tokens reported by providers' usage, by kind",
            m.tokens.clone(),
        );
        r.register(
            "gateway_cost_usd",
            "Cost in USD from usage and the target's configured prices",
            m.cost.clone(),
        );
        r.register(
            "gateway_config_reloads",
            "Config reloads, by result",
            m.reloads.clone(),
        );
        r.register(
            "gateway_access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            m.access_log_dropped.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The `model` label for a requested model that is not an alias: kept as is until
    /// [`MAX_FREE_MODELS`] distinct values have been seen, then `other`.
    pub fn free_model_label(&self, model: &str) -> Label {
        let mut seen = self.free_models.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = seen.get(model) {
            return l.clone();
        }
        if seen.len() >= MAX_FREE_MODELS {
            return self.other.clone();
        }
        let l: Label = model.into();
        seen.insert(l.clone());
        l
    }

    /// `gateway_access_log_dropped_total`, for the access log to count into (a handle on
    /// the one registered counter).
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// The `provider` label of a request the gateway answered before any provider.
    pub fn no_provider(&self) -> Label {
        self.none.clone()
    }

    /// Counts one answered request and its duration.
    pub fn request(&self, model: &Label, provider: &Label, status: u16, duration: Duration) {
        self.requests
            .get_or_create(&RequestL {
                model: model.clone(),
                provider: provider.clone(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&ModelProviderL {
                model: model.clone(),
                provider: provider.clone(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Tokens and cost from a response's `usage`.
    pub fn usage(
        &self,
        model: &Label,
        provider: &Label,
        prompt: u64,
        completion: u64,
        cost: Option<f64>,
    ) {
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenL {
                        model: model.clone(),
                        provider: provider.clone(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        if let Some(c) = cost.filter(|c| *c > 0.0) {
            self.cost
                .get_or_create(&ModelProviderL {
                    model: model.clone(),
                    provider: provider.clone(),
                })
                .inc_by(c);
        }
    }

    /// Time to response headers of one attempt.
    pub fn first_byte(&self, provider: &Label, d: Duration) {
        self.first_byte
            .get_or_create(&ProviderL {
                provider: provider.clone(),
            })
            .observe(d.as_secs_f64());
    }

    /// Time one attempt waited for a slot.
    pub fn queue_wait(&self, provider: &Label, d: Duration) {
        self.queue_wait
            .get_or_create(&ProviderL {
                provider: provider.clone(),
            })
            .observe(d.as_secs_f64());
    }

    /// A target passed over.
    pub fn rejection(&self, provider: &Label, why: Rejection) {
        self.rejections
            .get_or_create(&RejectionL {
                provider: provider.clone(),
                reason: why.as_str(),
            })
            .inc();
    }

    /// A failed attempt; `kind` is one of `connect`, `tls`, `timeout`, `status_5xx`,
    /// `status_429`, `reset`.
    pub fn upstream_error(&self, provider: &Label, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&ErrorL {
                provider: provider.clone(),
                kind,
            })
            .inc();
    }

    /// A retry sent.
    pub fn retry(&self, provider: &Label) {
        self.retries
            .get_or_create(&ProviderL {
                provider: provider.clone(),
            })
            .inc();
    }

    /// A breaker state change.
    pub fn transition(&self, provider: &Label, to: BreakerState) {
        let to = match to {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open | BreakerState::ForcedOpen => "open",
        };
        self.transitions
            .get_or_create(&TransitionL {
                provider: provider.clone(),
                to,
            })
            .inc();
    }

    /// A config reload.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultL {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Creates the zero-valued series every configured provider and alias will have, so
    /// each metric is visible (and rates work) before its first event.
    fn ensure_series(&self, scrape: &Scrape) {
        for p in &scrape.providers {
            let pl = ProviderL {
                provider: p.name.clone(),
            };
            let _ = self.first_byte.get_or_create(&pl);
            let _ = self.queue_wait.get_or_create(&pl);
            let _ = self.retries.get_or_create(&pl);
            for to in ["closed", "open", "half_open"] {
                let _ = self.transitions.get_or_create(&TransitionL {
                    provider: p.name.clone(),
                    to,
                });
            }
            for why in [
                Rejection::CircuitOpen,
                Rejection::QueueFull,
                Rejection::QueueTimeout,
                Rejection::RetryBudgetExhausted,
            ] {
                let _ = self.rejections.get_or_create(&RejectionL {
                    provider: p.name.clone(),
                    reason: why.as_str(),
                });
            }
            for kind in [
                "connect",
                "tls",
                "timeout",
                "status_5xx",
                "status_429",
                "reset",
            ] {
                let _ = self.upstream_errors.get_or_create(&ErrorL {
                    provider: p.name.clone(),
                    kind,
                });
            }
        }
        for (alias, providers) in &scrape.routes {
            for provider in providers {
                let ml = ModelProviderL {
                    model: alias.clone(),
                    provider: provider.clone(),
                };
                let _ = self.duration.get_or_create(&ml);
                let _ = self.cost.get_or_create(&ml);
                for kind in ["prompt", "completion"] {
                    let _ = self.tokens.get_or_create(&TokenL {
                        model: alias.clone(),
                        provider: provider.clone(),
                        kind,
                    });
                }
            }
        }
        for result in ["ok", "error"] {
            let _ = self.reloads.get_or_create(&ResultL { result });
        }
    }

    /// Reads the state gauges from `rt` and encodes everything as OpenMetrics text.
    pub fn render(&self, scrape: &Scrape) -> String {
        self.ensure_series(scrape);
        for fam in [
            &self.queue_depth,
            &self.in_flight,
            &self.connections,
            &self.breaker_state,
        ] {
            fam.clear();
        }
        self.keys.clear();
        for p in &scrape.providers {
            let l = ProviderL {
                provider: p.name.clone(),
            };
            self.queue_depth.get_or_create(&l).set(i64::from(p.queued));
            self.in_flight.get_or_create(&l).set(i64::from(p.in_flight));
            self.connections.get_or_create(&l).set(p.connections.max(0));
            let state = match p.breaker {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open | BreakerState::ForcedOpen => 2,
            };
            self.breaker_state.get_or_create(&l).set(state);
            for (state, n) in [("ready", p.keys_ready), ("cooling", p.keys_cooling)] {
                self.keys
                    .get_or_create(&KeyStateL {
                        provider: p.name.clone(),
                        state,
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::with_capacity(16 * 1024);
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What a scrape reads from the running config: each provider's live state, and which
/// series the config makes predictable (exposed at zero before their first event). The
/// caller fills it in, so this module never reaches into the runtime.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Every provider's gauges.
    pub providers: Vec<ProviderGauges>,
    /// Every alias with the providers of its targets.
    pub routes: Vec<(Label, Vec<Label>)>,
}

/// One provider's state at scrape time.
#[derive(Debug)]
pub struct ProviderGauges {
    /// Provider name.
    pub name: Label,
    /// Requests waiting for a slot.
    pub queued: u32,
    /// Requests holding a slot.
    pub in_flight: u32,
    /// Sockets open to it.
    pub connections: i64,
    /// Circuit state.
    pub breaker: BreakerState,
    /// Keys ready to use.
    pub keys_ready: usize,
    /// Keys set aside.
    pub keys_cooling: usize,
}

/// `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
