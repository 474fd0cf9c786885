//! Routing strategies (contract §6 "Routing strategies"): the order in which one request
//! walks an alias's targets.
//!
//! Pure functions of the targets' [`Figures`]: no clock, no RNG, no I/O; the one piece of
//! state is the weighted round-robin's counters ([`Swrr`]). `failover` keeps the configured
//! order; `weighted` puts first the pick of a smooth weighted round-robin (nginx's
//! algorithm) and keeps the others in configured order; `speed`, `cost` and `balanced` sort
//! by descending score
//! `w.success · success_rate + w.latency · (1 − latency / max_latency) + w.cost · (1 − cost / max_cost)`,
//! ties keeping the configured order.
//!
//! Invariants: an order is a permutation of `0..targets.len()`; availability is not decided
//! here (unavailable targets keep their place and the walk passes over them); a term whose
//! maximum over the alias's targets is 0 contributes its full weight; a target with no
//! latency sample counts as latency 0, so it is tried and measured; over any k·Σweight
//! consecutive `weighted` picks each target goes first exactly k·weight times.

use std::sync::Mutex;

use crate::config::{RoutingConfig, ScoreWeights, Strategy};

/// What a strategy knows of one target.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Figures {
    /// `weight` (default 1).
    pub weight: u32,
    /// `input_cost + output_cost`, USD per million tokens (0 without costs: a local model).
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
    /// The latency a strategy sees, in milliseconds: the EWMA times
    /// `1 + in_flight / max_concurrency`, so a target near its capacity looks slower than an
    /// idle one. No sample yet counts as 0 (the fastest), so a new target is tried and
    /// measured.
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
/// the maxima taken over `targets`; a term whose maximum is 0 contributes its full weight.
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
    // `+ 0.0` makes −0.0 equal to 0.0 under `total_cmp`; a NaN (impossible from validated
    // figures) would sort last instead of upsetting the sort.
    let s: Vec<f64> = scores(targets, w)
        .into_iter()
        .map(|x| {
            if x.is_nan() {
                f64::NEG_INFINITY
            } else {
                x + 0.0
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..targets.len()).collect();
    // A stable sort keeps configured order among equal scores.
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    order
}

/// Smooth weighted round-robin state of one alias (nginx's algorithm): each pick adds every
/// target's weight to its counter, takes the largest counter (the first on a tie) and takes
/// the sum of the weights off it. The counters always sum to 0, and after Σweight picks they
/// are back where they started, each target having been picked exactly weight times: so any
/// run of k·Σweight consecutive picks picks each target k·weight times, spread out rather
/// than in bursts. One short critical section per pick.
#[derive(Debug, Default)]
pub struct Swrr {
    current: Mutex<Vec<i64>>,
}

impl Swrr {
    /// The index of the next pick among `weights`, advancing the rotation. A weight of 0 is
    /// never picked while another is positive. `weights` must not be empty.
    pub fn pick(&self, weights: &[u32]) -> usize {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.len() != weights.len() {
            *cur = vec![0; weights.len()];
        }
        let best = next(&cur, weights);
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        for (c, &w) in cur.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        if let Some(c) = cur.get_mut(best) {
            *c -= total;
        }
        best
    }

    /// The index [`Swrr::pick`] would return now, without advancing the rotation (for
    /// `/admin/models`, which must not change what the next request gets).
    pub fn peek(&self, weights: &[u32]) -> usize {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.len() != weights.len() {
            return next(&vec![0; weights.len()], weights);
        }
        next(&cur, weights)
    }
}

/// The index with the largest `current + weight`, the first on a tie.
fn next(current: &[i64], weights: &[u32]) -> usize {
    let mut best = 0;
    let mut best_value = i64::MIN;
    for (i, (&c, &w)) in current.iter().zip(weights).enumerate() {
        let v = c + i64::from(w);
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best
}

/// The order in which one request tries `targets` (figures in configured order) under
/// `strategy`. `weighted` advances `swrr`.
pub fn order(
    strategy: Strategy,
    targets: &[Figures],
    routing: &RoutingConfig,
    swrr: &Swrr,
) -> Vec<usize> {
    order_with(strategy, targets, routing, |w| swrr.pick(w))
}

/// The order [`order`] would give now, without advancing the weighted round-robin.
pub fn peek_order(
    strategy: Strategy,
    targets: &[Figures],
    routing: &RoutingConfig,
    swrr: &Swrr,
) -> Vec<usize> {
    order_with(strategy, targets, routing, |w| swrr.peek(w))
}

fn order_with(
    strategy: Strategy,
    targets: &[Figures],
    routing: &RoutingConfig,
    first: impl FnOnce(&[u32]) -> usize,
) -> Vec<usize> {
    if targets.is_empty() {
        return Vec::new();
    }
    match strategy {
        Strategy::Failover => (0..targets.len()).collect(),
        Strategy::Weighted => {
            let w: Vec<u32> = targets.iter().map(|t| t.weight).collect();
            let first = first(&w);
            std::iter::once(first)
                .chain((0..targets.len()).filter(|&i| i != first))
                .collect()
        }
        Strategy::Speed => by_score(targets, routing.speed),
        Strategy::Cost => by_score(targets, routing.cost),
        Strategy::Balanced => by_score(targets, routing.balanced),
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

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    fn routing() -> RoutingConfig {
        RoutingConfig::default()
    }

    /// A hosted model (slow, dear), a cheaper hosted one, a local one (free, fastest but
    /// flaky): the README's worked example.
    fn chain() -> [Figures; 3] {
        [
            fig(Some(800.0), 12.5, Some(1.0)),
            fig(Some(400.0), 0.75, Some(1.0)),
            fig(Some(200.0), 0.0, Some(0.5)),
        ]
    }

    #[test]
    fn scores_follow_the_formula_exactly() {
        let r = routing();
        // balanced 0.4 / 0.3 / 0.3; max latency 800, max cost 12.5.
        close(
            &scores(&chain(), r.balanced),
            &[
                0.4 * 1.0 + 0.3 * 0.0 + 0.3 * 0.0,
                0.4 * 1.0 + 0.3 * 0.5 + 0.3 * (1.0 - 0.06),
                0.4 * 0.5 + 0.3 * 0.75 + 0.3 * 1.0,
            ],
        );
        // = 0.4, 0.832, 0.725
        assert_eq!(
            order(Strategy::Balanced, &chain(), &r, &Swrr::default()),
            [1, 2, 0]
        );
        // speed 0.2 / 0.6 / 0.2: 0.2, 0.688, 0.75
        close(&scores(&chain(), r.speed), &[0.2, 0.688, 0.75]);
        assert_eq!(
            order(Strategy::Speed, &chain(), &r, &Swrr::default()),
            [2, 1, 0]
        );
        // cost 0.2 / 0.2 / 0.6: 0.2, 0.864, 0.85
        close(&scores(&chain(), r.cost), &[0.2, 0.864, 0.85]);
        assert_eq!(
            order(Strategy::Cost, &chain(), &r, &Swrr::default()),
            [1, 2, 0]
        );
        assert_eq!(
            order(Strategy::Failover, &chain(), &r, &Swrr::default()),
            [0, 1, 2]
        );
    }

    #[test]
    fn the_readme_worked_example() {
        let r = routing();
        let swrr = Swrr::default();
        // Local's two slots both busy: 200 ms counts as 400 ms; mini goes first for speed.
        let mut busy = chain();
        busy[2].max_concurrency = 2;
        busy[2].in_flight = 2;
        close(&scores(&busy, r.speed), &[0.2, 0.688, 0.6]);
        assert_eq!(order(Strategy::Speed, &busy, &r, &swrr), [1, 2, 0]);
        // Local recovered: it leads every score strategy.
        let mut well = chain();
        well[2].success_rate = Some(1.0);
        close(&scores(&well, r.balanced), &[0.4, 0.832, 0.925]);
        close(&scores(&well, r.speed), &[0.2, 0.688, 0.85]);
        close(&scores(&well, r.cost), &[0.2, 0.864, 0.95]);
        for s in [Strategy::Speed, Strategy::Cost, Strategy::Balanced] {
            assert_eq!(order(s, &well, &r, &swrr), [2, 1, 0], "{s:?}");
        }
        // Weighted 1, 2, 1: mini, gpt-4o, local, mini first, the rest in configured order.
        let mut w = chain();
        w[1].weight = 2;
        let firsts: Vec<Vec<usize>> = (0..4)
            .map(|_| order(Strategy::Weighted, &w, &r, &swrr))
            .collect();
        assert_eq!(
            firsts,
            [vec![1, 0, 2], vec![0, 1, 2], vec![2, 0, 1], vec![1, 0, 2]]
        );
    }

    #[test]
    fn in_flight_makes_a_busy_target_look_slower() {
        let mut busy = fig(Some(100.0), 0.0, None);
        busy.in_flight = 10; // at capacity: 100 ms looks like 200 ms
        assert_eq!(busy.latency_estimate(), 200.0);
        busy.in_flight = 5; // half: 150 ms
        assert_eq!(busy.latency_estimate(), 150.0);
        busy.in_flight = 6; // 160 ms: now slower than an idle 155 ms target
        let idle = fig(Some(155.0), 0.0, None);
        let r = routing();
        // speed: max latency 160; busy 0.2 + 0.6·0 + 0.2, idle 0.2 + 0.6·(1 − 155/160) + 0.2.
        close(
            &scores(&[busy, idle], r.speed),
            &[0.4, 0.4 + 0.6 * (1.0 - 155.0 / 160.0)],
        );
        assert_eq!(by_score(&[busy, idle], r.speed), [1, 0]);
        busy.in_flight = 0;
        assert_eq!(by_score(&[busy, idle], r.speed), [0, 1]);
        // A provider with max_concurrency 0 (impossible after validation) is not a panic.
        busy.max_concurrency = 0;
        assert_eq!(busy.latency_estimate(), 100.0);
    }

    #[test]
    fn no_sample_counts_as_fastest_and_no_verdict_as_all_success() {
        let r = routing();
        let t = [fig(Some(300.0), 0.0, Some(1.0)), fig(None, 0.0, None)];
        // balanced: the measured one loses its latency term, the new one has it all.
        close(&scores(&t, r.balanced), &[0.4 + 0.0 + 0.3, 1.0]);
        assert_eq!(by_score(&t, r.balanced), [1, 0]);
        // Even at capacity, no sample is latency 0.
        let mut new = fig(None, 0.0, None);
        new.in_flight = 10;
        assert_eq!(new.latency_estimate(), 0.0);
    }

    #[test]
    fn zero_maxima_give_full_weight_and_ties_keep_configured_order() {
        let r = routing();
        // No latency sample and no cost anywhere: every term is whole.
        let same = [fig(None, 0.0, None); 4];
        close(&scores(&same, r.cost), &[1.0; 4]);
        for s in Strategy::ALL {
            assert_eq!(order(s, &same, &r, &Swrr::default()), [0, 1, 2, 3], "{s:?}");
        }
        // Equal scores among others keep their configured order too.
        let t = [
            fig(Some(100.0), 1.0, None),
            fig(Some(50.0), 1.0, None),
            fig(Some(100.0), 1.0, None),
            fig(Some(50.0), 1.0, None),
        ];
        assert_eq!(by_score(&t, r.speed), [1, 3, 0, 2]);
    }

    #[test]
    fn swrr_follows_nginx_and_gives_exact_counts_over_any_run() {
        let s = Swrr::default();
        // Weights {a: 1, b: 3}: counters (1,3)→b, (2,2)→a (first on a tie), (−1,5)→b, (0,4)→b.
        let picks: Vec<usize> = (0..8).map(|_| s.pick(&[1, 3])).collect();
        assert_eq!(picks, [1, 0, 1, 1, 1, 0, 1, 1]);
        // nginx's own example, weights {5, 1, 1}: a a b a c a a.
        let s = Swrr::default();
        let picks: Vec<usize> = (0..7).map(|_| s.pick(&[5, 1, 1])).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        // Any run of k·Σw consecutive picks, wherever it starts, gives k·w each.
        let weights = [1u32, 2, 3, 0, 4];
        let sum = 10;
        let s = Swrr::default();
        let picks: Vec<usize> = (0..200).map(|_| s.pick(&weights)).collect();
        for k in 1..=3 {
            for start in 0..(200 - k * sum) {
                let mut counts = [0u32; 5];
                for &p in &picks[start..start + k * sum] {
                    counts[p] += 1;
                }
                let want = weights.map(|w| w * k as u32);
                assert_eq!(counts, want, "run of {} from {start}", k * sum);
            }
        }
    }

    #[test]
    fn swrr_counts_stay_exact_under_contention() {
        // 8 threads × 600 picks over Σw = 6: every pick is one step of one rotation.
        let s = Swrr::default();
        let weights = [1u32, 2, 3];
        let counts: Vec<[usize; 3]> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        let mut c = [0usize; 3];
                        for _ in 0..600 {
                            c[s.pick(&weights)] += 1;
                        }
                        c
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total = counts.iter().fold([0usize; 3], |mut acc, c| {
            for i in 0..3 {
                acc[i] += c[i];
            }
            acc
        });
        assert_eq!(total, [800, 1600, 2400]);
    }

    #[test]
    fn weighted_puts_the_pick_first_and_peek_does_not_advance() {
        let r = routing();
        let mut t = [fig(None, 0.0, None); 3];
        t[2].weight = 2;
        let s = Swrr::default();
        // Σw = 4: counters (1,1,2)→2, (2,2,0)→0, (−1,3,2)→1, (0,0,4)→2, then (0,0,0) again.
        assert_eq!(peek_order(Strategy::Weighted, &t, &r, &s), [2, 0, 1]);
        assert_eq!(peek_order(Strategy::Weighted, &t, &r, &s), [2, 0, 1]);
        assert_eq!(order(Strategy::Weighted, &t, &r, &s), [2, 0, 1]);
        assert_eq!(peek_order(Strategy::Weighted, &t, &r, &s), [0, 1, 2]);
        assert_eq!(order(Strategy::Weighted, &t, &r, &s), [0, 1, 2]);
        assert_eq!(order(Strategy::Weighted, &t, &r, &s), [1, 0, 2]);
        assert_eq!(order(Strategy::Weighted, &t, &r, &s), [2, 0, 1]);
        // Other strategies leave the rotation alone: the period starts over with 2.
        order(Strategy::Balanced, &t, &r, &s);
        assert_eq!(order(Strategy::Weighted, &t, &r, &s), [2, 0, 1]);
        assert!(order(Strategy::Weighted, &[], &r, &s).is_empty());
    }

    #[test]
    fn custom_weights_change_the_order() {
        let mut r = routing();
        // Latency alone: the fastest first even though it fails half the time.
        r.balanced = ScoreWeights::new(0.0, 1.0, 0.0);
        assert_eq!(
            order(Strategy::Balanced, &chain(), &r, &Swrr::default()),
            [2, 1, 0]
        );
        // Success alone: ties between the two reliable ones keep configured order.
        r.balanced = ScoreWeights::new(1.0, 0.0, 0.0);
        assert_eq!(
            order(Strategy::Balanced, &chain(), &r, &Swrr::default()),
            [0, 1, 2]
        );
    }
}
