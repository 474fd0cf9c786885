//! Observability: what the gateway tells operators about each request and about itself.
//!
//! - [`logging`]: subscriber set-up and the per-request record (log line, metrics, access
//!   log line), emitted exactly once.
//! - [`metrics`]: the Prometheus registry, label sets bounded by the config.
//! - [`accesslog`]: the JSON Lines access log, written off the request path.
//! - [`usage`]: token usage read from answers and streams.
//!
//! Nothing here decides anything about a request: this layer only records.

pub mod accesslog;
pub mod batch;
pub mod logging;
pub mod metrics;
pub mod usage;
