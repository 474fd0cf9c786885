//! What a provider answers a replayed attempt (contract §9): the outcome of its recorded
//! attempt nearest in time within `--window`, preferring the same upstream model; a
//! `--fault` covering that time overrides it; with nothing recorded in the window the
//! attempt is *unobserved* and counts as a success at the median of the provider's
//! recorded successes (first byte and end, of the request's kind when it has some), or, if
//! it has none, as [`Answer::Unknown`].
//!
//! Invariants: answers depend only on the log, the faults, the window and the arguments —
//! no state changes between calls, so the order of questions cannot change an answer.

use std::time::Duration;

use super::behaviour::{Behaviour, Micros, Tail, micros};
use super::fault::{Fault, Mode, covers};
use super::log::Log;

/// The answer to "what would this provider have done?".
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// This.
    Known {
        /// What it does.
        behaviour: Behaviour,
        /// Nothing was recorded in the window: a success at the median (counted apart).
        unobserved: bool,
    },
    /// Nothing recorded in the window and no recorded success to go by.
    Unknown,
}

/// Medians of a provider's recorded successes: (first byte, end).
type Median = Option<(Micros, Micros)>;

/// The providers as the log and the faults show them.
#[derive(Debug)]
pub struct Model<'a> {
    log: &'a Log,
    /// Each fault with its window in epoch microseconds.
    faults: Vec<(Fault, (i64, i64))>,
    window: i64,
    /// Per provider id: the medians of plain and of streamed successes.
    medians: Vec<[Median; 2]>,
}

fn median(mut v: Vec<Micros>) -> Option<Micros> {
    v.sort_unstable();
    // The lower middle: a recorded value, and the same for any order of equal inputs.
    v.get(v.len().checked_sub(1)? / 2).copied()
}

impl<'a> Model<'a> {
    /// The model of `log`'s providers under `faults`, with `window` to find the nearest
    /// recorded attempt.
    pub fn new(log: &'a Log, faults: &[Fault], window: Duration) -> Model<'a> {
        let first = log.first().unwrap_or(0);
        let medians = log
            .history
            .iter()
            .map(|h| {
                let mut kinds = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
                for e in &h.entries {
                    let b = Behaviour::from(e.behaviour);
                    if let (Some(head), Tail::Complete(end)) = (b.head, b.tail)
                        && (200..300).contains(&head.status)
                    {
                        let k = &mut kinds[usize::from(b.content.is_some())];
                        k.0.push(head.at);
                        k.1.push(end);
                    }
                }
                kinds.map(|(fb, end)| Some((median(fb)?, median(end)?)))
            })
            .collect();
        Model {
            log,
            faults: faults
                .iter()
                .map(|f| (f.clone(), f.window(first)))
                .collect(),
            window: i64::try_from(micros(window)).unwrap_or(i64::MAX),
            medians,
        }
    }

    /// What `provider` does with an attempt for upstream `model`, sent at `t` (epoch
    /// microseconds), for a request that asked for a stream or not.
    pub fn answer(&self, provider: &str, model: &str, t: i64, stream: bool) -> Answer {
        let id = self.log.providers.get(provider);
        let recorded = id
            .and_then(|p| self.log.history(p))
            .and_then(|h| {
                let m = self.log.upstream_models.get(model);
                h.nearest(m, t, self.window)
            })
            .map(|e| (Behaviour::from(e.behaviour), false));
        let base = recorded.or_else(|| {
            let m = self.medians.get(id? as usize)?;
            let (fb, end) = m[usize::from(stream)].or(m[usize::from(!stream)])?;
            Some((Behaviour::success(fb, end, stream), true))
        });
        // The last fault given wins where several cover the same time.
        let fault = self
            .faults
            .iter()
            .rev()
            .find(|(f, w)| f.provider == provider && covers(*w, t));
        match (fault, base) {
            (Some((f, w)), base) => match f.apply(t, w.1, base.map(|b| b.0)) {
                Some(behaviour) => Answer::Known {
                    behaviour,
                    // A slowed-down guess is still a guess.
                    unobserved: matches!(f.mode, Mode::Slow(_)) && base.is_some_and(|b| b.1),
                },
                None => Answer::Unknown,
            },
            (None, Some((behaviour, unobserved))) => Answer::Known {
                behaviour,
                unobserved,
            },
            (None, None) => Answer::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts: &str, provider: &str, fb: f64, ms: f64, status: u16) -> String {
        format!(
            r#"{{"ts":"{ts}","model":"m","status":{status},"duration_ms":{ms},"stream":false,"attempts":[{{"provider":"{provider}","model":"x","start_ms":0,"ms":{ms},"first_byte_ms":{fb},"status":{status},"error":null,"retry_after_ms":null}}]}}"#
        )
    }

    fn log(lines: &[String]) -> Log {
        let mut l = Log::default();
        l.add(lines.join("\n").as_bytes()).unwrap();
        l.finish();
        l
    }

    #[test]
    fn recorded_then_unobserved_then_unknown() {
        let l = log(&[
            line("2026-01-01T00:00:00Z", "a", 10.0, 12.0, 200),
            line("2026-01-01T00:00:01Z", "a", 30.0, 32.0, 200),
            line("2026-01-01T00:00:02Z", "a", 20.0, 22.0, 503),
        ]);
        let m = Model::new(&l, &[], Duration::from_secs(60));
        let t0 = l.first().unwrap();
        let Answer::Known {
            behaviour,
            unobserved: false,
        } = m.answer("a", "x", t0 + 2_100_000, false)
        else {
            panic!()
        };
        assert_eq!(behaviour.head.map(|h| h.status), Some(503));
        // An hour later nothing is in the window: a success at the median of successes.
        match m.answer("a", "x", t0 + 3_600_000_000, false) {
            Answer::Known {
                behaviour,
                unobserved: true,
            } => assert_eq!(behaviour, Behaviour::success(10_000, 12_000, false)),
            a => panic!("{a:?}"),
        }
        // A provider the log never saw.
        assert_eq!(m.answer("b", "x", t0, false), Answer::Unknown);
    }

    #[test]
    fn a_fault_overrides_the_log_in_its_window_only() {
        let l = log(&[line("2026-01-01T00:00:00Z", "a", 10.0, 12.0, 200)]);
        let faults: Vec<Fault> = vec![
            "a=503@+1m+1m".parse().unwrap(),
            "a=hang@+90s+1m".parse().unwrap(),
            "b=slow:1s@+0s+1h".parse().unwrap(),
        ];
        let m = Model::new(&l, &faults, Duration::from_secs(3600));
        let t0 = l.first().unwrap();
        let at = |s: i64| m.answer("a", "x", t0 + s * 1_000_000, false);
        assert!(
            matches!(at(30), Answer::Known { behaviour, .. } if behaviour.head.is_some_and(|h| h.status == 200))
        );
        assert!(
            matches!(at(70), Answer::Known { behaviour, .. } if behaviour.head.is_some_and(|h| h.status == 503))
        );
        assert!(
            matches!(at(100), Answer::Known { behaviour, .. } if behaviour == Behaviour::hang()),
            "the later fault wins where both cover"
        );
        assert!(
            matches!(at(200), Answer::Known { behaviour, .. } if behaviour.head.is_some_and(|h| h.status == 200))
        );
        // Slowing down a provider nothing is known of tells nothing.
        assert_eq!(m.answer("b", "x", t0, false), Answer::Unknown);
    }
}
