//! Retries: exponential backoff with full jitter, and a Finagle-style retry budget per
//! provider.
//!
//! The budget keeps retries to a provider under `budget_ratio` of its requests over a 10 s
//! window, plus a floor of `budget_min_per_sec` retries per second, so a provider in trouble
//! sees at most a bounded multiple of its normal load. Counters live in ten one-second
//! buckets of atomics: no lock, no allocation, a handful of atomic loads per check.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Retry as Settings;

/// The budget window.
pub const WINDOW: Duration = Duration::from_secs(10);
const BUCKETS: usize = 10;

/// The delay before retry number `retry` (1 for the first retry): uniformly random in
/// `[0, min(max_backoff, backoff * 2^(retry-1))]` ("full jitter").
pub fn backoff(s: &Settings, retry: u32, rng: &mut fastrand::Rng) -> Duration {
    let exp = retry.saturating_sub(1).min(30);
    let cap = s.backoff.saturating_mul(1u32 << exp).min(s.max_backoff);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.u64(0..=nanos))
}

#[derive(Debug, Default)]
struct Bucket {
    /// Which second (since `base`) this bucket counts, plus one (0 = never used).
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// A provider's retry budget.
#[derive(Debug)]
pub struct Budget {
    /// `budget_ratio` as f64 bits (updated in place on reload).
    ratio: AtomicU64,
    min_per_sec: AtomicU32,
    base: Instant,
    buckets: [Bucket; BUCKETS],
}

impl Budget {
    /// An empty budget.
    pub fn new(s: &Settings, now: Instant) -> Budget {
        Budget {
            ratio: AtomicU64::new(s.budget_ratio.to_bits()),
            min_per_sec: AtomicU32::new(s.budget_min_per_sec),
            base: now,
            buckets: Default::default(),
        }
    }

    /// Applies new settings (config reload), keeping the counts.
    pub fn update(&self, s: &Settings) {
        self.ratio
            .store(s.budget_ratio.to_bits(), Ordering::Relaxed);
        self.min_per_sec
            .store(s.budget_min_per_sec, Ordering::Relaxed);
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.base).as_secs() + 1
    }

    /// The bucket of `now`, reset first if it still holds an older second.
    fn bucket(&self, now: Instant) -> &Bucket {
        let sec = self.second(now);
        let b = &self.buckets[(sec % BUCKETS as u64) as usize];
        let seen = b.second.load(Ordering::Acquire);
        if seen != sec
            && b.second
                .compare_exchange(seen, sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // A count racing with this reset may be lost; the budget is an estimate.
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }

    /// Counts one ordinary request (a first attempt).
    pub fn deposit(&self, now: Instant) {
        self.bucket(now).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let (requests, retries) = self.window(now);
        let ratio = f64::from_bits(self.ratio.load(Ordering::Relaxed));
        let floor = f64::from(self.min_per_sec.load(Ordering::Relaxed));
        let allowed = ratio * requests as f64 + floor * WINDOW.as_secs_f64();
        if (retries + 1) as f64 > allowed {
            return false;
        }
        self.bucket(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Requests and retries counted in the last [`WINDOW`].
    pub fn window(&self, now: Instant) -> (u64, u64) {
        let sec = self.second(now);
        let oldest = sec.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| {
                let s = b.second.load(Ordering::Acquire);
                s >= oldest && s <= sec && s != 0
            })
            .fold((0, 0), |(q, r), b| {
                (
                    q + b.requests.load(Ordering::Relaxed),
                    r + b.retries.load(Ordering::Relaxed),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ratio: f64, min: u32) -> Settings {
        Settings {
            max_attempts: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            budget_ratio: ratio,
            budget_min_per_sec: min,
        }
    }

    #[test]
    fn backoff_is_jittered_within_the_exponential_cap() {
        let s = settings(0.2, 0);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            assert!(backoff(&s, 1, &mut rng) <= Duration::from_millis(100));
            assert!(backoff(&s, 2, &mut rng) <= Duration::from_millis(200));
            assert!(backoff(&s, 3, &mut rng) <= Duration::from_millis(350));
            assert!(backoff(&s, 40, &mut rng) <= Duration::from_millis(350));
        }
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(&s, 3, &mut rng)).collect();
        assert!(spread.len() > 10, "full jitter spreads retries");
        // Seeded: the same seed gives the same delays (replay is deterministic).
        let a: Vec<_> = (1..20)
            .map(|n| backoff(&s, n, &mut fastrand::Rng::with_seed(n.into())))
            .collect();
        let b: Vec<_> = (1..20)
            .map(|n| backoff(&s, n, &mut fastrand::Rng::with_seed(n.into())))
            .collect();
        assert_eq!(a, b);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_under_ratio_plus_floor() {
        let now = Instant::now();
        let b = Budget::new(&settings(0.2, 0), now);
        assert!(!b.try_withdraw(now), "no requests, no floor: no retries");
        for _ in 0..100 {
            b.deposit(now);
        }
        let granted = (0..100).filter(|_| b.try_withdraw(now)).count();
        assert_eq!(granted, 20);

        let b = Budget::new(&settings(0.0, 1), now);
        let granted = (0..100).filter(|_| b.try_withdraw(now)).count();
        assert_eq!(granted, 10, "floor: 1/s over a 10 s window");
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let now = Instant::now();
        let b = Budget::new(&settings(0.5, 0), now);
        for _ in 0..10 {
            b.deposit(now);
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw(now)).count(), 5);
        let later = now + Duration::from_secs(5);
        assert_eq!(b.window(later), (10, 5));
        assert!(!b.try_withdraw(later));
        let much_later = now + Duration::from_secs(11);
        assert_eq!(b.window(much_later), (0, 0));
        for _ in 0..4 {
            b.deposit(much_later);
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw(much_later)).count(), 2);
    }
}
