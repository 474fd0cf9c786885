//! Per-provider running statistics: EWMA of the time to first byte and of the success
//! rate. Lock-free (an `f64` in an `AtomicU64`, updated by compare-and-swap); read by the
//! admin API now and by the `speed`/`balanced` strategies later. Carried over across
//! reloads with the provider's other state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Weight of a new sample.
const ALPHA: f64 = 0.1;

/// An exponentially weighted moving average; empty until its first sample.
#[derive(Debug)]
pub struct Ewma(AtomicU64);

impl Default for Ewma {
    fn default() -> Self {
        Ewma(AtomicU64::new(f64::NAN.to_bits()))
    }
}

impl Ewma {
    /// Adds a sample.
    pub fn observe(&self, x: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let cur = f64::from_bits(bits);
                let next = if cur.is_nan() {
                    x
                } else {
                    cur + ALPHA * (x - cur)
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

/// What the gateway has seen of one provider.
#[derive(Debug, Default)]
pub struct Stats {
    latency_ms: Ewma,
    success: Ewma,
}

impl Stats {
    /// Records the time to response headers of an attempt that got them.
    pub fn observe_latency(&self, d: Duration) {
        self.latency_ms.observe(d.as_secs_f64() * 1000.0);
    }

    /// Records an attempt's verdict (neutral outcomes are not recorded).
    pub fn observe_outcome(&self, success: bool) {
        self.success.observe(if success { 1.0 } else { 0.0 });
    }

    /// EWMA of the time to first byte, in milliseconds.
    pub fn latency_ms(&self) -> Option<f64> {
        self.latency_ms.get()
    }

    /// EWMA of successes among attempts with a verdict, 0..=1.
    pub fn success_rate(&self) -> Option<f64> {
        self.success.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_starts_empty_then_tracks() {
        let s = Stats::default();
        assert_eq!(s.latency_ms(), None);
        assert_eq!(s.success_rate(), None);
        s.observe_latency(Duration::from_millis(100));
        assert_eq!(s.latency_ms(), Some(100.0));
        s.observe_latency(Duration::from_millis(200));
        assert!((s.latency_ms().unwrap() - 110.0).abs() < 1e-9);
        s.observe_outcome(true);
        s.observe_outcome(false);
        assert!((s.success_rate().unwrap() - 0.9).abs() < 1e-9);
    }
}
