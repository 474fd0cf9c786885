//! Per-target statistics (contract §6): latency EWMAs kept apart for streamed and plain
//! requests, and the success rate over a sliding window. They feed the `speed`, `cost` and
//! `balanced` strategies and `/admin/models`, and carry over reloads with their target.
//!
//! Lock-free: an `f64` per EWMA in an `AtomicU64` (compare-and-swap), and the success
//! window as [`BUCKETS`] time buckets of atomics. Every method takes `now` (and the
//! settings in force), so the same code runs on the live clock and on replay's virtual one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets of the success window: the rate covers the last `window`, to within one
/// bucket (`window / BUCKETS`).
pub const BUCKETS: u64 = 60;

/// An exponentially weighted moving average; empty until its first sample.
#[derive(Debug)]
pub struct Ewma(AtomicU64);

impl Default for Ewma {
    fn default() -> Self {
        Ewma(AtomicU64::new(f64::NAN.to_bits()))
    }
}

impl Ewma {
    /// Adds a sample with weight `alpha` (the first sample is taken as is).
    pub fn observe(&self, x: f64, alpha: f64) {
        if !x.is_finite() {
            return;
        }
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let cur = f64::from_bits(bits);
                let next = if cur.is_nan() {
                    x
                } else {
                    cur + alpha * (x - cur)
                };
                Some(next.to_bits())
            });
    }

    /// The average, or `None` before the first sample.
    pub fn get(&self) -> Option<f64> {
        let v = f64::from_bits(self.0.load(Ordering::Acquire));
        (!v.is_nan()).then_some(v)
    }
}

#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket-time (since `base`) this bucket counts, plus one (0 = never used).
    slot: AtomicU64,
    ok: AtomicU64,
    total: AtomicU64,
}

/// What the gateway has seen of one target (provider + upstream model).
#[derive(Debug)]
pub struct TargetStats {
    stream_ms: Ewma,
    plain_ms: Ewma,
    base: Instant,
    buckets: [Bucket; BUCKETS as usize],
}

impl TargetStats {
    /// Empty statistics; `now` anchors the success window's buckets.
    pub fn new(now: Instant) -> TargetStats {
        TargetStats {
            stream_ms: Ewma::default(),
            plain_ms: Ewma::default(),
            base: now,
            buckets: Default::default(),
        }
    }

    /// Records the time from sending to response headers of an attempt that got them.
    pub fn observe_latency(&self, stream: bool, d: Duration, alpha: f64) {
        let ms = d.as_secs_f64() * 1000.0;
        if stream {
            self.stream_ms.observe(ms, alpha);
        } else {
            self.plain_ms.observe(ms, alpha);
        }
    }

    /// The latency EWMA of one kind, in milliseconds.
    pub fn latency_ms(&self, stream: bool) -> Option<f64> {
        if stream {
            self.stream_ms.get()
        } else {
            self.plain_ms.get()
        }
    }

    fn slot(&self, now: Instant, window: Duration) -> u64 {
        let width = (window.as_nanos() / u128::from(BUCKETS)).max(1);
        let since = now.saturating_duration_since(self.base).as_nanos();
        u64::try_from(since / width).unwrap_or(u64::MAX - 1) + 1
    }

    /// Records a verdict (neutral outcomes are no verdict and are not recorded).
    pub fn observe_verdict(&self, success: bool, now: Instant, window: Duration) {
        let slot = self.slot(now, window);
        let b = &self.buckets[(slot % BUCKETS) as usize];
        let seen = b.slot.load(Ordering::Acquire);
        if seen != slot
            && b.slot
                .compare_exchange(seen, slot, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // A verdict racing with this reset may be lost; the rate is an estimate.
            b.ok.store(0, Ordering::Release);
            b.total.store(0, Ordering::Release);
        }
        b.total.fetch_add(1, Ordering::AcqRel);
        if success {
            b.ok.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Successes / verdicts over the last `window`; `None` without a verdict.
    pub fn success_rate(&self, now: Instant, window: Duration) -> Option<f64> {
        let cur = self.slot(now, window);
        let (mut ok, mut total) = (0u64, 0u64);
        for b in &self.buckets {
            let slot = b.slot.load(Ordering::Acquire);
            if slot != 0 && slot <= cur && cur - slot < BUCKETS {
                ok += b.ok.load(Ordering::Acquire);
                total += b.total.load(Ordering::Acquire);
            }
        }
        (total > 0).then(|| ok as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_starts_empty_then_tracks_each_kind_apart() {
        let now = Instant::now();
        let s = TargetStats::new(now);
        assert_eq!(s.latency_ms(false), None);
        s.observe_latency(false, Duration::from_millis(100), 0.2);
        s.observe_latency(false, Duration::from_millis(200), 0.2);
        assert!((s.latency_ms(false).unwrap() - 120.0).abs() < 1e-9);
        assert_eq!(s.latency_ms(true), None, "streams are kept apart");
        s.observe_latency(true, Duration::from_millis(40), 0.2);
        assert_eq!(s.latency_ms(true), Some(40.0));
    }

    #[test]
    fn success_rate_covers_the_window_only() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let s = TargetStats::new(t0);
        assert_eq!(s.success_rate(t0, window), None);
        for _ in 0..3 {
            s.observe_verdict(false, t0, window);
        }
        s.observe_verdict(true, t0, window);
        assert_eq!(s.success_rate(t0, window), Some(0.25));
        let t1 = t0 + Duration::from_secs(30);
        for _ in 0..4 {
            s.observe_verdict(true, t1, window);
        }
        assert_eq!(s.success_rate(t1, window), Some(5.0 / 8.0));
        // A minute after the failures they have left the window; the later verdicts remain.
        let t2 = t0 + Duration::from_secs(61);
        assert_eq!(s.success_rate(t2, window), Some(1.0));
        let t3 = t1 + Duration::from_secs(61);
        assert_eq!(s.success_rate(t3, window), None);
    }
}
