//! Routing strategies (contract §6 "Routing strategies"): the order in which one request
//! walks an alias's targets.
//!
//! Pure functions of the targets' figures: no clock, no RNG, no I/O. `failover` keeps the
//! configured order; `weighted` puts first the pick of a smooth weighted round-robin
//! (nginx's algorithm: over any k·Σweights consecutive picks each target leads exactly
//! k·weight times) and keeps the others in configured order; `speed`, `cost` and
//! `balanced` sort by a score built from success rate, estimated latency and cost, ties
//! keeping the configured order. Availability is not decided here: unavailable targets keep
//! their place and the walk passes over them.

use std::sync::Mutex;

use crate::config::Strategy;

/// Weights of the three terms of a score (`[routing]` `speed` / `cost` / `balanced`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreWeights {
    /// Weight of the success rate.
    pub success: f64,
    /// Weight of the latency term.
    pub latency: f64,
    /// Weight of the cost term.
    pub cost: f64,
}

/// What a strategy knows of one target.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Figures {
    /// `weight` (default 1).
    pub weight: u32,
    /// `input_cost + output_cost`, USD per million tokens (0 without costs).
    pub cost: f64,
    /// EWMA of the time to response headers for this request's kind (stream or not), in
    /// milliseconds; `None` before the first sample.
    pub latency_ms: Option<f64>,
    /// Requests in flight to the target's provider.
    pub in_flight: u32,
    /// The provider's `max_concurrency`.
    pub max_concurrency: u32,
    /// Successes / verdicts over the success window; `None` without a verdict.
    pub success_rate: Option<f64>,
}

impl Figures {
    /// The latency a strategy sees: the EWMA times `1 + in_flight / max_concurrency`, so a
    /// target near its capacity looks slower than an idle one. No sample yet counts as 0
    /// (the fastest), so a new target is tried and measured.
    pub fn latency_estimate(&self) -> f64 {
        let ewma = self.latency_ms.unwrap_or(0.0);
        let load = f64::from(self.in_flight) / f64::from(self.max_concurrency.max(1));
        ewma * (1.0 + load)
    }

    /// The success rate a strategy sees: 1.0 without a verdict.
    pub fn success(&self) -> f64 {
        self.success_rate.unwrap_or(1.0)
    }
}

/// The score of each target under `w`, in configured order:
/// `w.success · success + w.latency · (1 − latency / max_latency) + w.cost · (1 − cost / max_cost)`,
/// where a term whose maximum over the targets is 0 contributes its full weight.
pub fn scores(targets: &[Figures], w: ScoreWeights) -> Vec<f64> {
    let max_latency = targets
        .iter()
        .map(Figures::latency_estimate)
        .fold(0.0, f64::max);
    let max_cost = targets.iter().map(|t| t.cost).fold(0.0, f64::max);
    let term = |x: f64, max: f64| if max > 0.0 { 1.0 - x / max } else { 1.0 };
    targets
        .iter()
        .map(|t| {
            w.success * t.success()
                + w.latency * term(t.latency_estimate(), max_latency)
                + w.cost * term(t.cost, max_cost)
        })
        .collect()
}

/// Indexes of `targets` in descending score; ties keep the configured order.
pub fn by_score(targets: &[Figures], w: ScoreWeights) -> Vec<usize> {
    let s = scores(targets, w);
    let mut order: Vec<usize> = (0..targets.len()).collect();
    // A stable sort keeps configured order among equal scores.
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    order
}

/// Smooth weighted round-robin state of one alias (nginx's algorithm). One short critical
/// section per pick: a handful of integer additions over the alias's targets.
#[derive(Debug, Default)]
pub struct Swrr {
    current: Mutex<Vec<i64>>,
}

impl Swrr {
    /// The index of the next pick among `weights` (a weight of 0 is never picked while
    /// another is positive).
    pub fn pick(&self, weights: &[u32]) -> usize {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.len() != weights.len() {
            *cur = vec![0; weights.len()];
        }
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            cur[i] += i64::from(w);
            if cur[i] > cur[best] {
                best = i;
            }
        }
        if let Some(c) = cur.get_mut(best) {
            *c -= total;
        }
        best
    }
}

/// The order in which one request tries the targets under `strategy`.
pub fn order(
    strategy: Strategy,
    targets: &[Figures],
    weights: &crate::config::RoutingWeights,
    swrr: &Swrr,
) -> Vec<usize> {
    match strategy {
        Strategy::Failover => (0..targets.len()).collect(),
        Strategy::Weighted => {
            let w: Vec<u32> = targets.iter().map(|t| t.weight).collect();
            let first = swrr.pick(&w);
            std::iter::once(first)
                .chain((0..targets.len()).filter(|&i| i != first))
                .collect()
        }
        Strategy::Speed => by_score(targets, weights.speed),
        Strategy::Cost => by_score(targets, weights.cost),
        Strategy::Balanced => by_score(targets, weights.balanced),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(latency_ms: Option<f64>, cost: f64, success_rate: Option<f64>) -> Figures {
        Figures {
            weight: 1,
            cost,
            latency_ms,
            in_flight: 0,
            max_concurrency: 10,
            success_rate,
        }
    }

    const BALANCED: ScoreWeights = ScoreWeights {
        success: 0.4,
        latency: 0.3,
        cost: 0.3,
    };

    #[test]
    fn scores_follow_the_formula_exactly() {
        // A hosted model (slow, dear), a cheaper hosted one, a local one (free, fastest).
        let t = [
            fig(Some(800.0), 10.0, Some(0.9)),
            fig(Some(400.0), 0.75, Some(1.0)),
            fig(Some(200.0), 0.0, Some(0.5)),
        ];
        let s = scores(&t, BALANCED);
        let want = [
            0.4 * 0.9 + 0.3 * 0.0 + 0.3 * 0.0,
            0.4 * 1.0 + 0.3 * 0.5 + 0.3 * (1.0 - 0.075),
            0.4 * 0.5 + 0.3 * 0.75 + 0.3 * 1.0,
        ];
        for (got, want) in s.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        assert_eq!(by_score(&t, BALANCED), vec![1, 2, 0]);
    }

    #[test]
    fn in_flight_makes_a_busy_target_look_slower() {
        let mut busy = fig(Some(100.0), 0.0, None);
        busy.in_flight = 10; // at capacity: 100 ms looks like 200 ms
        assert_eq!(busy.latency_estimate(), 200.0);
        let idle = fig(Some(150.0), 0.0, None);
        let speed = ScoreWeights {
            success: 0.2,
            latency: 0.6,
            cost: 0.2,
        };
        assert_eq!(by_score(&[busy, idle], speed), vec![1, 0]);
    }

    #[test]
    fn no_sample_counts_as_fastest_and_zero_maxima_give_full_weight() {
        let t = [fig(Some(300.0), 0.0, None), fig(None, 0.0, None)];
        let s = scores(&t, BALANCED);
        assert!((s[0] - (0.4 + 0.0 + 0.3)).abs() < 1e-12);
        assert!((s[1] - 1.0).abs() < 1e-12);
        // All equal: configured order.
        let same = [fig(None, 0.0, None); 3];
        assert_eq!(by_score(&same, BALANCED), vec![0, 1, 2]);
    }

    #[test]
    fn swrr_gives_exact_counts_and_spreads_picks() {
        let s = Swrr::default();
        let picks: Vec<usize> = (0..8).map(|_| s.pick(&[1, 3])).collect();
        // nginx's sequence for weights {1, 3}: b b a b, twice.
        assert_eq!(picks, vec![1, 0, 1, 1, 1, 0, 1, 1]);
        let s = Swrr::default();
        let mut counts = [0usize; 3];
        for _ in 0..(5 * 6) {
            counts[s.pick(&[1, 2, 3])] += 1;
        }
        assert_eq!(counts, [5, 10, 15]);
    }
}
