//! Per-target statistics (contract §6): what the gateway has seen of one target (provider +
//! upstream model). They feed the `speed`, `cost` and `balanced` strategies and
//! `/admin/models`, and carry over reloads with their target.
//!
//! - Latency: two EWMAs of the time from sending to response headers, one for streamed and
//!   one for plain requests (a plain answer's headers come after the whole generation, a
//!   stream's after its first token, so one average of both would describe neither). Each is
//!   an `f64` in an `AtomicU64`, updated by compare-and-swap; empty until its first sample.
//! - Success rate: successes / verdicts over a sliding window, kept as [`BUCKETS`] time
//!   buckets plus running sums behind one short mutex, so a read is O(1) whatever the
//!   window and the count is exact (no verdict lost to a race). The window covers the last
//!   `success_window` to within one bucket (`success_window / BUCKETS`).
//!
//! Every method takes `now` (and the setting in force), never reads a clock: the same code
//! runs on the live clock and on replay's virtual one. One `TargetStats` only ever sees one
//! `success_window`: the runtime gives a target fresh window buckets when the setting
//! changes (see [`TargetStats::successor`]); a mismatch anyway restarts the window.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets of the success window.
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
    /// Adds a sample with weight `alpha` (in (0, 1], validated with the config); the first
    /// sample is taken as is. A non-finite sample is ignored.
    pub fn observe(&self, x: f64, alpha: f64) {
        if !x.is_finite() {
            return;
        }
        // The closure always returns `Some`, so the update cannot fail.
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

    fn copy(&self) -> Ewma {
        Ewma(AtomicU64::new(self.0.load(Ordering::Acquire)))
    }
}

/// The success window: verdicts per bucket of `width`, and their sums over the buckets
/// still inside the window.
#[derive(Debug)]
struct Window {
    /// Bucket width in nanoseconds; 0 until the first use.
    width: u64,
    /// The newest bucket (time since `base` / `width`) the sums cover.
    newest: u64,
    ok: u64,
    total: u64,
    /// `(ok, total)` of bucket `i` at `i % BUCKETS`, for the buckets
    /// `newest - BUCKETS + 1 ..= newest`.
    ring: [(u64, u64); BUCKETS as usize],
}

impl Window {
    const EMPTY: Window = Window {
        width: 0,
        newest: 0,
        ok: 0,
        total: 0,
        ring: [(0, 0); BUCKETS as usize],
    };

    /// Makes `bucket` (of the given width) the newest, dropping the buckets that left the
    /// window on the way.
    fn advance(&mut self, width: u64, bucket: u64) {
        if self.width != width {
            // A different window setting: the old buckets mean nothing in the new one.
            *self = Window {
                width,
                newest: bucket,
                ..Window::EMPTY
            };
            return;
        }
        if bucket <= self.newest {
            return;
        }
        let steps = (bucket - self.newest).min(BUCKETS);
        for i in 1..=steps {
            let slot = &mut self.ring[((self.newest + i) % BUCKETS) as usize];
            self.ok -= slot.0;
            self.total -= slot.1;
            *slot = (0, 0);
        }
        self.newest = bucket;
    }
}

/// What the gateway has seen of one target (provider + upstream model).
#[derive(Debug)]
pub struct TargetStats {
    stream_ms: Ewma,
    plain_ms: Ewma,
    /// Origin of the window's buckets.
    base: Instant,
    window: Mutex<Window>,
}

impl TargetStats {
    /// Empty statistics; `now` anchors the success window's buckets.
    pub fn new(now: Instant) -> TargetStats {
        TargetStats {
            stream_ms: Ewma::default(),
            plain_ms: Ewma::default(),
            base: now,
            window: Mutex::new(Window::EMPTY),
        }
    }

    /// The same latency averages with an empty success window: what a target keeps over a
    /// reload that changes `success_window` (verdicts counted in buckets of the old width
    /// cannot be re-counted in the new ones).
    pub fn successor(&self, now: Instant) -> TargetStats {
        TargetStats {
            stream_ms: self.stream_ms.copy(),
            plain_ms: self.plain_ms.copy(),
            ..TargetStats::new(now)
        }
    }

    /// Records the time from sending to response headers of an attempt that got them, into
    /// the EWMA of its kind (`stream` or not), with weight `alpha` (`[routing] ewma_alpha`).
    pub fn observe_latency(&self, stream: bool, d: Duration, alpha: f64) {
        let ms = d.as_secs_f64() * 1000.0;
        if stream {
            self.stream_ms.observe(ms, alpha);
        } else {
            self.plain_ms.observe(ms, alpha);
        }
    }

    /// The latency EWMA of one kind, in milliseconds; `None` before its first sample.
    pub fn latency_ms(&self, stream: bool) -> Option<f64> {
        if stream {
            self.stream_ms.get()
        } else {
            self.plain_ms.get()
        }
    }

    /// `(bucket width, bucket of now)` for `window`.
    fn bucket(&self, now: Instant, window: Duration) -> (u64, u64) {
        let width = u64::try_from(window.as_nanos() / u128::from(BUCKETS))
            .unwrap_or(u64::MAX)
            .max(1);
        let since =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        (width, since / width)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // The window holds plain counters; a panic elsewhere cannot leave them torn.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an attempt's verdict at `now` (neutral outcomes are no verdict: do not call).
    /// `window` is `[routing] success_window`. A verdict stamped earlier than the window
    /// already covers (a slow caller) still counts if its bucket is inside the window.
    pub fn observe_verdict(&self, success: bool, now: Instant, window: Duration) {
        let (width, bucket) = self.bucket(now, window);
        let mut w = self.lock();
        w.advance(width, bucket);
        if bucket.saturating_add(BUCKETS) <= w.newest {
            return; // already outside the window
        }
        let slot = &mut w.ring[(bucket % BUCKETS) as usize];
        slot.1 += 1;
        slot.0 += u64::from(success);
        w.total += 1;
        w.ok += u64::from(success);
    }

    /// Successes / verdicts over the last `window` (to within one bucket); `None` without
    /// a verdict.
    pub fn success_rate(&self, now: Instant, window: Duration) -> Option<f64> {
        let (width, bucket) = self.bucket(now, window);
        let mut w = self.lock();
        w.advance(width, bucket);
        (w.total > 0).then(|| w.ok as f64 / w.total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHA: f64 = 0.2;

    #[test]
    fn ewma_starts_empty_then_tracks_each_kind_apart() {
        let s = TargetStats::new(Instant::now());
        assert_eq!(s.latency_ms(false), None);
        assert_eq!(s.latency_ms(true), None);
        s.observe_latency(false, Duration::from_millis(100), ALPHA);
        assert_eq!(s.latency_ms(false), Some(100.0), "first sample as is");
        s.observe_latency(false, Duration::from_millis(200), ALPHA);
        // 100 + 0.2 · (200 − 100)
        assert!((s.latency_ms(false).unwrap() - 120.0).abs() < 1e-9);
        assert_eq!(s.latency_ms(true), None, "streams are kept apart");
        s.observe_latency(true, Duration::from_millis(40), ALPHA);
        s.observe_latency(true, Duration::from_millis(90), 0.5);
        assert!((s.latency_ms(true).unwrap() - 65.0).abs() < 1e-9);
        assert!((s.latency_ms(false).unwrap() - 120.0).abs() < 1e-9);
        // α = 1: the newest sample alone.
        s.observe_latency(false, Duration::from_millis(7), 1.0);
        assert_eq!(s.latency_ms(false), Some(7.0));
    }

    #[test]
    fn success_rate_covers_the_window_only() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60); // buckets of 1 s
        let s = TargetStats::new(t0);
        assert_eq!(s.success_rate(t0, window), None, "no verdict: None");
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
        // The verdicts of t0's bucket count until the window has slid a whole window past
        // that bucket's start, and not a nanosecond longer.
        let edge = t0 + window;
        assert_eq!(
            s.success_rate(edge - Duration::from_nanos(1), window),
            Some(5.0 / 8.0)
        );
        assert_eq!(s.success_rate(edge, window), Some(1.0));
        assert_eq!(s.success_rate(t1 + window, window), None);
    }

    #[test]
    fn late_verdicts_count_while_their_bucket_is_in_the_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let s = TargetStats::new(t0);
        s.observe_verdict(true, t0 + Duration::from_secs(50), window);
        // Stamped 40 s before the newest bucket: inside the window, counted.
        s.observe_verdict(false, t0 + Duration::from_secs(10), window);
        assert_eq!(
            s.success_rate(t0 + Duration::from_secs(50), window),
            Some(0.5)
        );
        // Stamped 61 s before: outside, dropped.
        s.observe_verdict(false, t0 + Duration::from_secs(100), window);
        s.observe_verdict(false, t0 + Duration::from_secs(39), window);
        assert_eq!(
            s.success_rate(t0 + Duration::from_secs(100), window),
            Some(1.0 / 2.0),
            "t0+50 ok and t0+100 failed remain; t0+10 has left, t0+39 came too late"
        );
    }

    #[test]
    fn a_long_silence_empties_the_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(300);
        let s = TargetStats::new(t0);
        s.observe_verdict(false, t0, window);
        let later = t0 + Duration::from_secs(86_400);
        assert_eq!(s.success_rate(later, window), None);
        s.observe_verdict(true, later, window);
        assert_eq!(s.success_rate(later, window), Some(1.0));
    }

    #[test]
    fn a_new_window_setting_restarts_the_count_and_successor_keeps_latencies() {
        let t0 = Instant::now();
        let s = TargetStats::new(t0);
        s.observe_verdict(false, t0, Duration::from_secs(60));
        s.observe_latency(true, Duration::from_millis(30), ALPHA);
        assert_eq!(s.success_rate(t0, Duration::from_secs(120)), None);
        let next = s.successor(t0);
        assert_eq!(next.latency_ms(true), Some(30.0));
        assert_eq!(next.latency_ms(false), None);
        assert_eq!(next.success_rate(t0, Duration::from_secs(60)), None);
    }
}
