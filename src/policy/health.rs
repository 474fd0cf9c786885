//! Everything a provider's past tells about it: its breaker, retry budget, bulkhead, key
//! pool, 429 pause and statistics, in one place that a reload carries over when the
//! provider's kind and `base_url` are unchanged.
//!
//! Settings inside are updated in place on reload, so requests in flight and new ones
//! share one breaker, one budget, one bulkhead. Every method takes `now`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::Breaker;
use super::budget::Budget;
use super::bulkhead::Bulkhead;
use super::keys::{Key, KeyPool};
use super::stats::Stats;
use crate::config::ProviderSettings;

/// A provider's health and the state of its guards.
#[derive(Debug)]
pub struct Health {
    /// Circuit breaker.
    pub breaker: Breaker,
    /// Retry budget.
    pub budget: Budget,
    /// Concurrency limit and queue.
    pub bulkhead: Bulkhead,
    /// EWMA latency and success rate.
    pub stats: Stats,
    /// Sockets open to the provider, counted by the connector.
    pub connections: Arc<AtomicI64>,
    /// The provider's keys and their cooldowns.
    pub keys: KeyPool,
    /// Start of this provider's clock (for `pause_until`).
    base: Instant,
    /// Nanoseconds since `base` until which a 429 says to leave the provider alone.
    pause_until: AtomicU64,
}

impl Health {
    /// Fresh health: circuit closed, budget empty, every slot and key free.
    pub fn new(s: &ProviderSettings, keys: &[Arc<Key>], now: Instant) -> Health {
        Health {
            keys: KeyPool::new(keys.to_vec(), now),
            breaker: Breaker::new(&s.breaker, now),
            budget: Budget::new(&s.retry, now),
            bulkhead: Bulkhead::new(&s.limits),
            stats: Stats::default(),
            connections: Arc::new(AtomicI64::new(0)),
            base: now,
            pause_until: AtomicU64::new(0),
        }
    }

    /// Applies a provider's (new) settings and keys in place.
    pub fn update(&self, s: &ProviderSettings, keys: &[Arc<Key>]) {
        self.keys.update(keys);
        self.breaker.update(&s.breaker);
        self.budget.update(&s.retry);
        self.bulkhead.update(&s.limits);
    }

    fn since(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time left before a 429's `retry-after` lets this provider be tried again.
    pub fn paused(&self, now: Instant) -> Option<Duration> {
        let t = self.since(now);
        let until = self.pause_until.load(Ordering::Acquire);
        (t < until).then(|| Duration::from_nanos(until - t))
    }

    /// Leaves the provider alone for `wait` (from a 429). A later, shorter 429 never
    /// shortens a pause already running.
    pub fn pause(&self, now: Instant, wait: Duration) {
        let until = self
            .since(now)
            .saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
        self.pause_until.fetch_max(until, Ordering::AcqRel);
    }
}
