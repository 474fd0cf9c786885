//! How one replayed request ended ([`Outcome`]) and the running figures of many
//! ([`Tally`]), accumulated as each request settles so that a replay of millions of
//! requests holds no record per request: only its latency, as an `f32` of milliseconds,
//! for the percentiles.
//!
//! Invariants: a tally's figures do not depend on the order requests were added in, except
//! for the last bits of the summed cost (the simulation settles requests in one
//! deterministic order, so output stays byte-identical); percentiles are nearest-rank.

use std::collections::BTreeMap;

use super::behaviour::Micros;

/// How one request ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Status the client got (499: it left first).
    pub status: u16,
    /// The gateway's own error code, if it answered with one.
    pub code: Option<&'static str>,
    /// Arrival to the end of the answer (a stream: its end), with the recorded overhead.
    pub duration: Micros,
    /// Upstream attempts.
    pub attempts: u32,
    /// Some attempt found nothing recorded in the window and no recorded success to go by.
    pub unknown: bool,
    /// Recorded tokens at the answering target's prices.
    pub cost_usd: Option<f64>,
}

/// Request figures as they accumulate.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Requests added.
    pub requests: u64,
    /// Requests whose fate is known.
    pub known: u64,
    /// Known requests answered with a 2xx.
    pub success: u64,
    /// Upstream attempts, summed.
    pub attempts: u64,
    /// Requests that did not succeed, by the gateway's code, else by status.
    pub errors: BTreeMap<String, u64>,
    /// Durations of the known requests, milliseconds, in the order added.
    pub latencies: Vec<f32>,
    /// Summed cost.
    pub cost: f64,
    /// Requests whose fate is unknown.
    pub unknown: u64,
}

impl Tally {
    /// Counts one request; `code` keys its error when it did not succeed (else its status).
    pub fn add(&mut self, o: &Outcome, code: Option<&str>) {
        self.requests += 1;
        self.attempts += u64::from(o.attempts);
        self.cost += o.cost_usd.unwrap_or(0.0);
        if o.unknown {
            self.unknown += 1;
            return;
        }
        self.known += 1;
        self.latencies.push((o.duration as f64 / 1000.0) as f32);
        if !(200..300).contains(&o.status) {
            let key = code.map_or_else(|| o.status.to_string(), str::to_string);
            *self.errors.entry(key).or_default() += 1;
        } else {
            self.success += 1;
        }
    }

    /// Adds `other`'s figures to these (a total over several tallies).
    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.known += other.known;
        self.success += other.success;
        self.attempts += other.attempts;
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += n;
        }
        self.latencies.extend_from_slice(&other.latencies);
        self.cost += other.cost;
        self.unknown += other.unknown;
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f32], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).map(|&v| f64::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f32> = (1..=100u8).map(f32::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn merging_sums_every_figure() {
        let o = |status, unknown| Outcome {
            status,
            duration: 2000,
            attempts: 2,
            unknown,
            cost_usd: Some(0.5),
            ..Outcome::default()
        };
        let (mut a, mut b) = (Tally::default(), Tally::default());
        a.add(&o(200, false), None);
        b.add(&o(503, false), Some("circuit_open"));
        b.add(&o(0, true), None);
        a.merge(&b);
        assert_eq!((a.requests, a.known, a.success, a.unknown), (3, 2, 1, 1));
        assert_eq!((a.attempts, a.cost), (6, 1.5));
        assert_eq!(a.latencies, vec![2.0, 2.0]);
        assert_eq!(a.errors, BTreeMap::from([("circuit_open".to_string(), 1)]));
    }
}
