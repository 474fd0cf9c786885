//! The compiled, immutable snapshot of a config ([`Runtime`]) and the live state that
//! holds the current one ([`State`]).
//!
//! A request takes one `load_full()` of the snapshot and keeps it to its end, so a whole
//! stream sees one config even if a reload swaps in another meanwhile. Everything the
//! request path needs is precomputed here: routes with encoded model names, header values,
//! the `/v1/models` answer, the listener's TLS config.

pub mod reload;
pub mod route;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde_json::json;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, Overrides};
use crate::observe::logging::Telemetry;
use crate::observe::metrics::{ProviderGauges, Scrape};
use crate::policy::target_stats::TargetStats;
use crate::runtime::route::{Route, Target, TargetRegistry};
use crate::tls::ServerTls;
use crate::upstream::Provider;

/// Server-level settings the request path reads.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Client keys; empty = no client auth.
    pub api_keys: Box<[Box<[u8]>]>,
    /// Largest request body, and largest buffered upstream body.
    pub max_body_size: u64,
    /// Cut-off for slow request headers.
    pub header_read_timeout: Duration,
    /// Drain budget.
    pub shutdown_timeout: Duration,
}

/// One compiled config.
#[derive(Debug)]
pub struct Runtime {
    /// Increases by one on every successful reload; 1 for the first config.
    pub generation: u64,
    /// The config this was compiled from.
    pub config: Config,
    /// Server settings.
    pub server: ServerSettings,
    /// Providers by name.
    pub providers: HashMap<String, Arc<Provider>>,
    /// Model aliases.
    pub models: HashMap<String, Route>,
    /// Every target's statistics, by `provider/model` (direct targets too, bounded).
    pub targets: TargetRegistry,
    /// The `GET /v1/models` body.
    pub models_json: Bytes,
    /// Each alias's `GET /v1/models/{id}` body.
    pub model_entries: HashMap<String, Bytes>,
    /// The listener's TLS config, from `[server.tls]` (its files read and checked).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Runtime {
    /// Compiles a validated config.
    pub fn build(config: Config, generation: u64) -> Result<Runtime, ConfigError> {
        Self::build_with(config, generation, None)
    }

    /// Compiles a validated config, carrying over from `prev` (the running snapshot) the
    /// health and pools of providers whose kind and `base_url` are unchanged, the statistics
    /// of their targets, and the `weighted` rotation of aliases whose targets and weights are
    /// unchanged.
    pub fn build_with(
        config: Config,
        generation: u64,
        prev: Option<&Runtime>,
    ) -> Result<Runtime, ConfigError> {
        let now = tokio::time::Instant::now();
        // Read on every compile, so a reload picks up a renewed certificate.
        let tls = config
            .server
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        let mut providers = HashMap::with_capacity(config.providers.len());
        for (name, p) in &config.providers {
            let old = prev.and_then(|r| r.providers.get(name)).map(|p| &**p);
            providers.insert(
                name.clone(),
                Arc::new(Provider::build(name, p, &config, now, old)?),
            );
        }
        let targets = TargetRegistry::compile(&config, &providers, prev, now);
        let mut models = HashMap::with_capacity(config.models.len());
        for (alias, m) in &config.models {
            let chain = m
                .targets
                .iter()
                .map(|t| {
                    // Validation guarantees the provider exists.
                    let p = providers
                        .get(&t.provider)
                        .cloned()
                        .ok_or_else(|| ConfigError {
                            file: String::new(),
                            key: format!("models.{alias}"),
                            message: format!("unknown provider {:?}", t.provider),
                        })?;
                    let label = format!("{}/{}", t.provider, t.model);
                    // Every configured pair was registered by `compile`.
                    let stats = targets
                        .get(&label)
                        .unwrap_or_else(|| Arc::new(TargetStats::new(now)));
                    let mut target = Target::new(p, &t.model, stats);
                    target.weight = t.weight;
                    target.input_cost = t.input_cost;
                    target.output_cost = t.output_cost;
                    Ok(target)
                })
                .collect::<Result<Box<[Target]>, ConfigError>>()?;
            // The rotation is only meaningful over the same targets and weights.
            let swrr = prev
                .and_then(|r| r.models.get(alias))
                .filter(|old| same_rotation(&old.targets, &chain))
                .map(|old| old.swrr.clone())
                .unwrap_or_default();
            models.insert(
                alias.clone(),
                Route {
                    alias: alias.as_str().into(),
                    strategy: m.strategy,
                    targets: chain,
                    swrr,
                },
            );
        }
        let data: Vec<_> = config
            .models
            .keys()
            .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "gateway"}))
            .collect();
        let model_entries = data
            .iter()
            .filter_map(|m| Some((m["id"].as_str()?.to_string(), Bytes::from(m.to_string()))))
            .collect();
        let models_json = Bytes::from(json!({"object": "list", "data": data}).to_string());
        // Everything compiled: only now may carried-over health take the new settings.
        for p in providers.values() {
            p.health.update(&p.settings, &p.keys);
        }
        let s = &config.server;
        let server = ServerSettings {
            api_keys: s.api_keys.iter().map(|k| k.as_bytes().into()).collect(),
            max_body_size: s.max_body_size.0,
            header_read_timeout: s.header_read_timeout,
            shutdown_timeout: s.shutdown_timeout,
        };
        Ok(Runtime {
            generation,
            config,
            server,
            providers,
            models,
            targets,
            models_json,
            model_entries,
            tls,
        })
    }
}

/// True when two chains name the same targets with the same weights in the same order.
fn same_rotation(a: &[Target], b: &[Target]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.label == y.label && x.weight == y.weight)
}

impl Runtime {
    /// What a metrics scrape needs from this snapshot: each provider's live state and the
    /// series the config makes predictable.
    pub fn scrape(&self, now: tokio::time::Instant) -> Scrape {
        let providers = self
            .providers
            .values()
            .map(|p| {
                let h = &p.health;
                let keys = h.keys.view(now);
                let cooling = keys.iter().filter(|k| k.retry_in.is_some()).count();
                ProviderGauges {
                    name: p.name.clone(),
                    queued: h.bulkhead.queued(),
                    in_flight: h.bulkhead.in_flight(),
                    connections: h.connections.load(Ordering::Relaxed),
                    breaker: h.breaker.state(now),
                    keys_ready: keys.len() - cooling,
                    keys_cooling: cooling,
                }
            })
            .collect();
        let routes = self
            .models
            .values()
            .map(|r| {
                let providers = r.targets.iter().map(|t| t.provider.name.clone()).collect();
                (r.alias.clone(), providers)
            })
            .collect();
        Scrape { providers, routes }
    }

    /// The `GET /v1/models/{id}` body of an alias.
    pub fn model_json(&self, id: &str) -> Option<Bytes> {
        self.model_entries.get(id).cloned()
    }
}

/// Process-wide state: the current snapshot, telemetry, and the lifecycle flags.
#[derive(Debug)]
pub struct State {
    current: ArcSwap<Runtime>,
    draining: AtomicBool,
    /// The config file, for reloads.
    pub config_path: PathBuf,
    /// Command-line values that override the file, on every reload too.
    pub overrides: Overrides,
    /// Metrics and the access log.
    pub telemetry: Arc<Telemetry>,
    /// Serialises reloads (never taken on the request path).
    pub(crate) reload_lock: Mutex<()>,
    /// Cancelled when the drain budget is spent: streams still open end with an error event.
    pub hard_stop: CancellationToken,
    /// The listener's TLS, when the first config had `[server.tls]`; plain HTTP otherwise.
    /// Fixed for the life of the process (adding or removing `[server.tls]` needs a
    /// restart); a reload replaces the certificate inside.
    pub tls: Option<Arc<ServerTls>>,
}

impl State {
    /// State serving `runtime`, with fresh telemetry (and the access log its config names).
    pub fn new(runtime: Runtime, config_path: PathBuf) -> Arc<State> {
        Self::with_overrides(runtime, config_path, Overrides::default())
    }

    /// [`State::new`], remembering the command-line overrides for reloads.
    pub fn with_overrides(
        runtime: Runtime,
        config_path: PathBuf,
        overrides: Overrides,
    ) -> Arc<State> {
        let telemetry = Arc::new(Telemetry::default());
        crate::runtime::reload::apply_access_log(&telemetry, &runtime.config);
        let tls = runtime.tls.clone().map(|c| Arc::new(ServerTls::new(c)));
        Arc::new(State {
            current: ArcSwap::from_pointee(runtime),
            draining: AtomicBool::new(false),
            config_path,
            overrides,
            telemetry,
            reload_lock: Mutex::new(()),
            hard_stop: CancellationToken::new(),
            tls,
        })
    }

    /// The current snapshot; hold it for the whole request.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Replaces the snapshot; requests in flight keep the one they loaded.
    pub fn swap(&self, runtime: Runtime) {
        self.current.store(Arc::new(runtime));
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the start of shutdown: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
