//! `--fault PROVIDER=MODE@START+DURATION` (contract §9): what a provider did in a window of
//! the replay, overriding what the log says — "what if openai had hung for ten minutes at
//! noon?".
//!
//! MODE is `hang`, `refused`, `500`, `503`, `429` (its `retry-after` is the rest of the
//! window) or `slow:DUR` (what the log says, `DUR` later in every respect); START is an
//! RFC 3339 time (`2026-11-30T12:00:00Z`, or with a `±HH:MM` offset) or an offset from the
//! first request (`+10m`). Parsing is pure and every mistake is reported with the fix, as a
//! usage error; a spec is bound to the log's time only once the first request is known
//! ([`Fault::window`]).

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::behaviour::{Behaviour, micros};

/// What the provider does during the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Never answers: only the candidate's timeouts end an attempt.
    Hang,
    /// Refuses connections at once.
    Refused,
    /// Answers this status (500 or 503) at once.
    Status(u16),
    /// Answers 429 at once, with `retry-after` = the rest of the window.
    RateLimited,
    /// Does what the log says, this much later.
    Slow(Duration),
}

/// When the fault starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// This long after the first request.
    Offset(Duration),
    /// At this time.
    At(SystemTime),
}

/// One `--fault`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The spec as given, for reports.
    pub spec: String,
    /// The provider it applies to.
    pub provider: String,
    /// What it does.
    pub mode: Mode,
    /// When it starts.
    pub start: Start,
    /// How long it lasts.
    pub duration: Duration,
}

const FORM: &str = "write PROVIDER=MODE@START+DURATION, e.g. openai=hang@+10m+15m or \
                    local=503@2026-11-30T12:00:00Z+5m";

fn parse_duration(what: &str, s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|_| {
        format!("{what} {s:?} is not a duration: write a number and a unit, like 90s or 10m")
    })?;
    if d > crate::config::MAX_DURATION {
        return Err(format!("{what} {s:?}: at most 100 days"));
    }
    Ok(d)
}

/// An RFC 3339 time, `Z` or a `±HH:MM` offset.
fn rfc3339(s: &str) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339(s) {
        return Some(t);
    }
    // humantime reads only `Z`: take a numeric offset off and apply it by hand.
    let (base, off) = s.split_at(s.len().checked_sub(6)?);
    let sign = match off.as_bytes().first()? {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = off.get(1..)?.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    let local = humantime::parse_rfc3339(&format!("{base}Z")).ok()?;
    let shift = Duration::from_secs(u64::try_from(h * 3600 + m * 60).ok()?);
    // 12:00+01:00 is 11:00Z.
    if sign > 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        let (provider, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} has no '=': {FORM}"))?;
        if provider.is_empty() {
            return Err(format!("{s:?} names no provider: {FORM}"));
        }
        let (mode, when) = rest
            .split_once('@')
            .ok_or_else(|| format!("{s:?} has no '@START': {FORM}"))?;
        let mode = match mode {
            "hang" => Mode::Hang,
            "refused" => Mode::Refused,
            "500" => Mode::Status(500),
            "503" => Mode::Status(503),
            "429" => Mode::RateLimited,
            m => match m.strip_prefix("slow:") {
                Some(d) => Mode::Slow(parse_duration("slow:", d)?),
                None => {
                    return Err(format!(
                        "unknown mode {m:?} in {s:?}: use hang, refused, 500, 503, 429 or slow:DUR"
                    ));
                }
            },
        };
        // The duration follows the last '+' (an RFC 3339 offset may hold one too).
        let (start, length) = when
            .rsplit_once('+')
            .filter(|(start, _)| !start.is_empty())
            .ok_or_else(|| format!("{s:?} has no '+DURATION' after START: {FORM}"))?;
        let duration = parse_duration("DURATION", length)?;
        if duration.is_zero() {
            return Err(format!("{s:?} lasts no time: give a DURATION above 0"));
        }
        let start = match start.strip_prefix('+') {
            Some(off) => Start::Offset(parse_duration("START offset", off)?),
            None => Start::At(rfc3339(start).ok_or_else(|| {
                format!(
                    "START {start:?} in {s:?} is neither an RFC 3339 time \
                     (2026-11-30T12:00:00Z) nor an offset from the first request (+10m)"
                )
            })?),
        };
        Ok(Fault {
            spec: s.to_string(),
            provider: provider.to_string(),
            mode,
            start,
            duration,
        })
    }
}

/// Microseconds since the Unix epoch (negative before it), saturating.
pub fn epoch_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

impl Fault {
    /// The window `[start, end)` in microseconds since the Unix epoch, given the first
    /// request's arrival.
    pub fn window(&self, first: i64) -> (i64, i64) {
        let start = match self.start {
            Start::Offset(d) => first.saturating_add(i64::try_from(micros(d)).unwrap_or(i64::MAX)),
            Start::At(t) => epoch_micros(t),
        };
        let end = start.saturating_add(i64::try_from(micros(self.duration)).unwrap_or(i64::MAX));
        (start, end)
    }

    /// What the provider does for an attempt sent at `t` inside the window ending at `end`
    /// (both in epoch microseconds), given what it would have done otherwise (`None`:
    /// nothing is known of it). `None` when still nothing is known.
    pub fn apply(&self, t: i64, end: i64, base: Option<Behaviour>) -> Option<Behaviour> {
        match self.mode {
            Mode::Hang => Some(Behaviour::hang()),
            Mode::Refused => Some(Behaviour::refused()),
            Mode::Status(s) => Some(Behaviour::status(s, None)),
            Mode::RateLimited => {
                let rest = u64::try_from(end.saturating_sub(t)).unwrap_or(0);
                Some(Behaviour::status(429, Some(Duration::from_micros(rest))))
            }
            Mode::Slow(d) => base.map(|b| b.delayed(micros(d))),
        }
    }
}

/// Whether `t` (epoch microseconds) is inside `[start, end)`.
pub fn covers((start, end): (i64, i64), t: i64) -> bool {
    start <= t && t < end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::behaviour::Head;

    #[test]
    fn parses_every_mode_and_both_kinds_of_start() {
        let f: Fault = "openai=hang@+10m+15m".parse().unwrap();
        assert_eq!(f.provider, "openai");
        assert_eq!(f.mode, Mode::Hang);
        assert_eq!(f.start, Start::Offset(Duration::from_secs(600)));
        assert_eq!(f.duration, Duration::from_secs(900));
        let f: Fault = "local=503@2026-11-30T12:00:00Z+5m".parse().unwrap();
        assert_eq!(f.mode, Mode::Status(503));
        assert_eq!(
            f.start,
            Start::At(humantime::parse_rfc3339("2026-11-30T12:00:00Z").unwrap())
        );
        let f: Fault = "local=500@2026-11-30T13:00:00+01:00+5m".parse().unwrap();
        assert_eq!(
            f.start,
            Start::At(humantime::parse_rfc3339("2026-11-30T12:00:00Z").unwrap()),
            "an offset is applied"
        );
        assert_eq!(f.mode, Mode::Status(500));
        let f: Fault = "a=slow:2s@+0s+1h".parse().unwrap();
        assert_eq!(f.mode, Mode::Slow(Duration::from_secs(2)));
        assert_eq!(f.start, Start::Offset(Duration::ZERO));
        assert_eq!(
            "a=429@+1m+1m".parse::<Fault>().unwrap().mode,
            Mode::RateLimited
        );
        assert_eq!(
            "a=refused@+1m+1m".parse::<Fault>().unwrap().mode,
            Mode::Refused
        );
    }

    #[test]
    fn mistakes_say_what_to_write() {
        for (spec, says) in [
            ("openai", "has no '='"),
            ("=hang@+1m+1m", "names no provider"),
            ("openai=hang", "has no '@START'"),
            ("openai=boom@+1m+1m", "unknown mode \"boom\""),
            ("openai=hang@+1m", "has no '+DURATION'"),
            (
                "openai=hang@+1m+soon",
                "DURATION \"soon\" is not a duration",
            ),
            ("openai=hang@noon+1m", "START \"noon\""),
            ("openai=slow:x@+1m+1m", "slow: \"x\""),
            ("openai=hang@+1m+0s", "lasts no time"),
            ("openai=hang@+1m+500y", "at most 100 days"),
        ] {
            let e = spec.parse::<Fault>().unwrap_err();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    #[test]
    fn a_429_says_retry_after_the_rest_of_the_window() {
        let f: Fault = "p=429@+1m+10m".parse().unwrap();
        let first = 1_000_000_000;
        let w = f.window(first);
        assert_eq!(w, (first + 60_000_000, first + 660_000_000));
        let t = first + 160_000_000;
        assert!(covers(w, t));
        assert!(!covers(w, w.1));
        let b = f.apply(t, w.1, None).unwrap();
        assert_eq!(
            b.head,
            Some(Head {
                at: 0,
                status: 429,
                retry_after: Some(Duration::from_secs(500)),
                context_overflow: false
            })
        );
        // `slow` needs to know what the provider did.
        let slow: Fault = "p=slow:1s@+0s+1m".parse().unwrap();
        assert_eq!(slow.apply(t, w.1, None), None);
        let b = slow
            .apply(t, w.1, Some(Behaviour::success(1000, 5000, false)))
            .unwrap();
        assert_eq!(b, Behaviour::success(1_001_000, 1_005_000, false));
    }
}
