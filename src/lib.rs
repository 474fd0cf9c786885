#![forbid(unsafe_code)]
//! gateway: a single-binary, OpenAI-compatible reverse proxy for LLM traffic.
//!
//! # Layout
//!
//! - [`cli`]: command line, exit codes; the binary is a thin shell over it.
//! - [`config`]: the TOML schema, defaults, `${VAR}` interpolation, validation.
//! - [`runtime`]: the compiled, immutable snapshot of a config, and the live [`runtime::State`]
//!   that holds the current one behind an `ArcSwap`.
//! - [`router`]: model → chain of targets, a pure lookup over the snapshot.
//! - [`payload`]: one parse of the request body; `model` rewritten in place.
//! - [`upstream`]: providers, the pooled HTTP client per provider, connect timeout.
//! - [`proxy`]: the `/v1/*` request pipeline: walks the failover chain.
//! - [`breaker`]: the lock-free circuit breaker of a provider.
//! - [`limit`]: the bulkhead of a provider (concurrency cap, bounded queue).
//! - [`retry`]: backoff with jitter, and the retry budget of a provider.
//! - [`stream`]: the response-body wrapper that enforces `idle`/`total` on streams, turns a
//!   mid-stream failure into an SSE error event, and settles each request exactly once.
//! - [`body`]: the body types of an exchange.
//! - [`server`]: accept loop (plain or TLS), endpoints, drain.
//! - [`tls`]: the listener's certificate and key, providers' private CAs; ring only.
//! - [`stats`]: per-provider EWMA latency and success rate.
//! - [`auth`]: client keys.
//! - [`keys`]: a provider's key pool: round-robin, per-key cooldowns.
//! - [`error`]: the gateway's own errors and their status/code mapping.
//! - [`headers`]: hop-by-hop rules and the gateway's header names.
//! - [`logging`]: subscriber set-up and the per-request record (log line, metrics, access
//!   log), emitted exactly once.
//! - [`metrics`]: the Prometheus registry.
//! - [`accesslog`]: the JSON Lines access log, written off the request path.
//! - [`usage`]: token usage read from answers and streams.
//! - [`translate`]: OpenAI Chat Completions ↔ Anthropic Messages: requests, answers, errors,
//!   streams and the count_tokens estimate, as pure functions over bytes.
//! - [`admin`]: `/admin/*`: provider state, kill switch, reload.
//! - [`reload`]: config reload (SIGHUP, file watch, admin) and systemd notifications.
//! - [`mock`]: the fault-injecting OpenAI-compatible upstream (`kind = "mock"`, `gateway mock`).

pub mod accesslog;
pub mod admin;
pub mod auth;
pub mod body;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod error;
pub mod headers;
pub mod keys;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod mock;
pub mod payload;
pub mod proxy;
pub mod reload;
pub mod retry;
pub mod router;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod stream;
pub mod tls;
pub mod translate;
pub mod upstream;
pub mod usage;
