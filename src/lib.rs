#![forbid(unsafe_code)]
// Clocks and the global RNG are banned in `policy` only (clippy.toml, src/policy/mod.rs).
#![allow(clippy::disallowed_methods)]
//! gateway: a single-binary, OpenAI-compatible reverse proxy for LLM traffic.
//!
//! # Layout
//!
//! Folders are layers; a module depends only on the ones below it (no import cycles, checked
//! by `module_cycles.py` in CI). The path of a request, top to bottom:
//!
//! - [`server`]: the listener (plain or TLS), endpoints, drain; `/admin/*`.
//! - [`proxy`]: the `/v1/*` pipeline: client auth, body limits, routing, the walk along a
//!   chain of targets, and the stream wrapper that settles every request exactly once.
//! - [`runtime`]: the compiled snapshot of a config (routes, providers) and the live
//!   [`runtime::State`] behind an `ArcSwap`; reload.
//! - [`upstream`]: providers: the pooled HTTP client per provider, the in-process mock.
//! - [`observe`]: log lines, the access log, Prometheus metrics, token usage.
//! - [`translate`]: OpenAI Chat Completions ↔ Anthropic Messages: requests, answers, errors,
//!   streams and the count_tokens estimate, as pure functions over bytes.
//! - [`policy`]: the pure decision core: breaker, retry budget and backoff, bulkhead, key
//!   pool, statistics. It takes `now` and owns no sockets.
//!
//! Beside the request path, [`replay`] (`gateway replay`) is the policy core's second
//! driver: it compiles a candidate config through [`runtime`] and runs recorded access-log
//! traffic through the same rules on a virtual clock. Only [`cli`] uses it.
//!
//! Leaves used by all: [`config`] (schema, defaults, validation), [`error`] (the one place
//! that maps an error to its status, code and body), [`body`] (the body types of an
//! exchange), [`payload`] (one parse of the request body; `model` rewritten in place),
//! [`headers`] (hop-by-hop and credential rules, the gateway's header names), [`tls`]
//! (certificates and private CAs; ring only). [`cli`] is the command line; the binary is a
//! thin shell over it.

pub mod body;
pub mod cli;
pub mod config;
pub mod error;
pub mod headers;
pub mod observe;
pub mod payload;
pub mod policy;
pub mod proxy;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod translate;
pub mod upstream;
