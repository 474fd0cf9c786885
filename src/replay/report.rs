//! The figures of a replay, recorded beside candidate (contract §9): per model and in total,
//! per provider, and the per-provider timelines the HTML page draws.
//!
//! Recorded figures come from the log alone; candidate figures from the [`Run`]. A request
//! succeeds when its final answer is a 2xx. Requests whose fate is unknown (a provider
//! with nothing recorded to go by) are counted, and left out of the success rate and the
//! latencies. Percentiles are nearest-rank over every other request's duration (arrival to
//! the end of its answer, a stream's end included). The log has no breaker transitions, so
//! the recorded circuit figures are inferred from `circuit_open` skips: an episode runs from
//! the failure before the first skip (or that skip) until the verdict of the provider's next
//! attempt that is not a failure (or its last skip), and counts as one opening (a reopening
//! after a failed probe cannot be seen). The candidate's opens are its breaker's transitions
//! to open, reopenings included.
//!
//! Invariants: every map is ordered (`BTreeMap`), so every rendering of a report is the same
//! for the same inputs.

use std::collections::BTreeMap;
use std::time::Duration;

use super::log::{History, Lines, Log};
use super::sim::{ProviderRun, Run, Sample};
use super::tally::{Outcome, Tally, percentile};

/// Recorded beside candidate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Side<T> {
    /// What the log says happened.
    pub recorded: T,
    /// What the candidate config would have done.
    pub candidate: T,
}

/// Request figures (the JSON `f`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Requests.
    pub requests: u64,
    /// Share of requests (known ones) whose final answer was a 2xx; `None` without any.
    pub success_rate: Option<f64>,
    /// Requests that did not succeed, by the gateway's error code, else by status.
    pub errors: BTreeMap<String, u64>,
    /// Mean upstream attempts per request.
    pub attempts_per_request: Option<f64>,
    /// Duration percentiles, milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th.
    pub p95_ms: Option<f64>,
    /// 99th.
    pub p99_ms: Option<f64>,
    /// Summed cost.
    pub cost_usd: f64,
    /// Requests whose fate is unknown.
    pub unknown: u64,
}

/// Provider figures (the JSON `p`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderFigures {
    /// Attempts sent.
    pub attempts: u64,
    /// Attempts the breaker heard as failures.
    pub failures: u64,
    /// Times its circuit opened.
    pub circuit_opens: u64,
    /// Seconds its circuit was open.
    pub open_s: f64,
    /// Attempts with nothing recorded in the window.
    pub unobserved: u64,
    /// Times one of its targets was passed over, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
}

/// One provider on a timeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Attempts, in sending order.
    pub samples: Vec<Sample>,
    /// Open circuit episodes, epoch microseconds.
    pub open: Vec<(i64, i64)>,
}

/// Everything a replay reports.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The candidate config, as given.
    pub config: String,
    /// `--window`.
    pub window: Duration,
    /// `--seed`.
    pub seed: u64,
    /// `--fault` specs, as given.
    pub faults: Vec<String>,
    /// Line counts.
    pub lines: Lines,
    /// Over every request.
    pub total: Side<Figures>,
    /// Per model asked for.
    pub models: BTreeMap<String, Side<Figures>>,
    /// Per provider (of the log or of the candidate config).
    pub providers: BTreeMap<String, Side<ProviderFigures>>,
    /// Per provider, for the HTML page.
    pub timelines: BTreeMap<String, Side<Timeline>>,
    /// First arrival to the last end, epoch microseconds.
    pub span: (i64, i64),
}

/// The figures of a tally: its latencies sorted, the percentiles read off them.
fn figures(mut t: Tally) -> Figures {
    t.latencies.sort_unstable_by(f32::total_cmp);
    let pct = |p: f64| percentile(&t.latencies, p);
    Figures {
        requests: t.requests,
        success_rate: (t.known > 0).then(|| t.success as f64 / t.known as f64),
        attempts_per_request: (t.requests > 0).then(|| t.attempts as f64 / t.requests as f64),
        p50_ms: pct(50.0),
        p95_ms: pct(95.0),
        p99_ms: pct(99.0),
        cost_usd: t.cost,
        unknown: t.unknown,
        errors: t.errors,
    }
}

/// Recorded circuit episodes of one provider, inferred from its skips and attempts, in the
/// order the breaker heard of them: a skip when it happened (its request's arrival), an
/// attempt at its verdict. A `circuit_open` skip with no episode running starts one, from
/// the last failure's verdict before it (the failure that opened it) or else the skip; the
/// next verdict that is not a failure (a probe that succeeded) ends it. Skips while that
/// probe is under way belong to the same episode.
fn recorded_episodes(h: &History) -> Vec<(i64, i64)> {
    enum Heard {
        Skip,
        Failure,
        Other,
    }
    let mut heard: Vec<(i64, Heard)> = h
        .entries
        .iter()
        .map(|e| {
            let verdict = e.t.saturating_add((f64::from(e.ms) * 1000.0) as i64);
            (
                verdict,
                if e.failed {
                    Heard::Failure
                } else {
                    Heard::Other
                },
            )
        })
        .chain(
            h.skips
                .iter()
                .filter(|s| s.reason == "circuit_open")
                .map(|s| (s.t, Heard::Skip)),
        )
        .collect();
    // Stable: at equal times skips (chained last) come after verdicts.
    heard.sort_by_key(|(t, _)| *t);
    let mut episodes = Vec::new();
    let mut current: Option<(i64, i64)> = None;
    let mut last_failure: Option<i64> = None;
    for (t, what) in heard {
        match what {
            Heard::Skip => match &mut current {
                Some((_, last)) => *last = t,
                None => current = Some((last_failure.filter(|&f| f <= t).unwrap_or(t), t)),
            },
            Heard::Failure => last_failure = Some(t),
            Heard::Other => {
                last_failure = None;
                if let Some((from, _)) = current.take() {
                    episodes.push((from, t.max(from)));
                }
            }
        }
    }
    episodes.extend(current);
    episodes
}

fn open_seconds(open: &[(i64, i64)]) -> f64 {
    // A fold from +0.0: an empty `sum()` of floats is -0.0, which prints as "-0.0".
    open.iter()
        .map(|(a, b)| b.saturating_sub(*a).max(0) as f64 / 1e6)
        .fold(0.0, |acc, x| acc + x)
}

impl Report {
    /// The report of `run` over `log`; `with_samples`: every attempt on the timelines.
    pub fn build(log: &Log, run: Run, with_samples: bool) -> Report {
        let mut recorded = vec![Tally::default(); log.models.len()];
        let mut span = (i64::MAX, run.last_end);
        for r in &log.requests {
            let o = Outcome {
                status: r.status,
                code: None,
                duration: r.duration,
                attempts: r.attempts,
                unknown: false,
                cost_usd: Some(r.cost_usd),
            };
            if let Some(t) = recorded.get_mut(r.model as usize) {
                t.add(&o, log.code(r));
            }
            span.0 = span.0.min(r.ts);
            let d = i64::try_from(r.duration).unwrap_or(i64::MAX);
            span.1 = span.1.max(r.ts.saturating_add(d));
        }
        if span.0 > span.1 {
            span = (0, 0);
        }
        let mut total = Side::<Tally>::default();
        let mut models = BTreeMap::new();
        let candidate = run
            .models
            .into_iter()
            .chain(std::iter::repeat_with(Tally::default));
        for (id, (recorded, candidate)) in recorded.into_iter().zip(candidate).enumerate() {
            if recorded.requests == 0 {
                continue;
            }
            total.recorded.merge(&recorded);
            total.candidate.merge(&candidate);
            let name = log.models.name(u32::try_from(id).unwrap_or(u32::MAX));
            models.insert(
                name.to_string(),
                Side {
                    recorded: figures(recorded),
                    candidate: figures(candidate),
                },
            );
        }
        let mut providers: BTreeMap<String, Side<ProviderFigures>> = BTreeMap::new();
        let mut timelines: BTreeMap<String, Side<Timeline>> = BTreeMap::new();
        for (id, h) in log.history.iter().enumerate() {
            let name = log
                .providers
                .name(u32::try_from(id).unwrap_or(u32::MAX))
                .to_string();
            let open = recorded_episodes(h);
            let mut skipped = BTreeMap::new();
            for s in &h.skips {
                *skipped.entry(s.reason).or_default() += 1;
            }
            let p = providers.entry(name.clone()).or_default();
            p.recorded = ProviderFigures {
                attempts: h.entries.len() as u64,
                failures: h.entries.iter().filter(|e| e.failed).count() as u64,
                circuit_opens: open.len() as u64,
                open_s: open_seconds(&open),
                unobserved: 0,
                skipped,
            };
            let samples = h.entries.iter().map(|e| Sample {
                t: e.t,
                ms: e.ms,
                failed: e.failed,
            });
            timelines.entry(name).or_default().recorded = Timeline {
                samples: if with_samples {
                    samples.collect()
                } else {
                    Vec::new()
                },
                open,
            };
        }
        for (name, p) in run.providers {
            let ProviderRun {
                attempts,
                failures,
                unobserved,
                opens,
                open,
                skips,
                samples,
                ..
            } = p;
            providers.entry(name.clone()).or_default().candidate = ProviderFigures {
                attempts,
                failures,
                circuit_opens: opens,
                open_s: open_seconds(&open),
                unobserved,
                skipped: skips,
            };
            timelines.entry(name).or_default().candidate = Timeline { samples, open };
        }
        Report {
            lines: log.lines,
            total: Side {
                recorded: figures(total.recorded),
                candidate: figures(total.candidate),
            },
            models,
            providers,
            timelines,
            span,
            ..Report::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_keyed_by_code_else_status_and_unknown_is_apart() {
        let mut t = Tally::default();
        let o = |status, unknown| Outcome {
            status,
            duration: 1000,
            attempts: 1,
            unknown,
            ..Outcome::default()
        };
        t.add(&o(200, false), None);
        t.add(&o(503, false), None);
        t.add(&o(503, false), Some("circuit_open"));
        t.add(&o(0, true), None);
        let f = figures(t);
        assert_eq!(f.requests, 4);
        assert_eq!(f.unknown, 1);
        assert_eq!(f.success_rate, Some(1.0 / 3.0));
        assert_eq!(
            f.errors,
            BTreeMap::from([("503".to_string(), 1), ("circuit_open".to_string(), 1)])
        );
        assert_eq!(f.attempts_per_request, Some(1.0));
        assert_eq!(f.p50_ms, Some(1.0));
    }
}
