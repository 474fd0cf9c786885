//! The policy core: every rule that decides what happens to a request, as pure code that
//! takes `now` (and, where chance is involved, a seeded RNG) and owns no sockets.
//!
//! The live proxy ([`crate::proxy`]) drives it on the real clock; `gateway replay` will
//! drive the same code on a virtual one. Nothing here reads a clock, the global RNG or the
//! network, so one implementation of each rule serves both.
//!
//! - [`breaker`]: the lock-free circuit breaker of a provider.
//! - [`budget`]: backoff with full jitter, and the Finagle-style retry budget.
//! - [`bulkhead`]: the concurrency cap and bounded wait queue of a provider.
//! - [`classify`]: the one place that says what an attempt meant (failure, success,
//!   neutral) and what the walk does next.
//! - [`health`]: a provider's guards and statistics in one place, carried over reloads.
//! - [`keys`]: a provider's key pool: round-robin, per-key cooldowns.
//! - [`stats`]: EWMA latency and success rate.
//! - [`strategy`]: routing strategies: the order in which a request tries an alias's targets.
//! - [`target_stats`]: per-target latency EWMAs (per kind) and windowed success rate.
//! - [`walk`]: the walk along a chain as a state machine: told what happened, it answers
//!   what to do next.

// No clock, no global RNG: `now` and a seeded `fastrand::Rng` come from the caller.
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod classify;
pub mod health;
pub mod keys;
pub mod stats;
pub mod strategy;
pub mod target_stats;
pub mod walk;
