//! Per-provider running statistics: EWMA of the time to first byte and of the success
//! rate, shown by `/admin/providers`. The routing strategies use the per-target figures of
//! [`super::target_stats`] instead. Lock-free (the shared [`Ewma`]); carried over across
//! reloads with the provider's other state.

use std::time::Duration;

// One EWMA for every statistic: the per-target one, with this module's fixed weight.
use super::target_stats::Ewma;

/// Weight of a new sample.
const ALPHA: f64 = 0.1;

/// What the gateway has seen of one provider.
#[derive(Debug, Default)]
pub struct Stats {
    latency_ms: Ewma,
    success: Ewma,
}

impl Stats {
    /// Records the time to response headers of an attempt that got them.
    pub fn observe_latency(&self, d: Duration) {
        self.latency_ms.observe(d.as_secs_f64() * 1000.0, ALPHA);
    }

    /// Records an attempt's verdict (neutral outcomes are not recorded).
    pub fn observe_outcome(&self, success: bool) {
        self.success.observe(if success { 1.0 } else { 0.0 }, ALPHA);
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
