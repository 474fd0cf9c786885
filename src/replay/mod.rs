//! `gateway replay` (contract §9): what a candidate config would have done with the traffic
//! an access log recorded — before it goes live, with no sockets and no sleeping.
//!
//! The candidate is compiled exactly as the server compiles it (by the caller, `cli`), and
//! its own policy code — router, strategies, breakers, retry budget, backoff, 429 pauses,
//! key cooldowns, bulkheads, timeouts — is driven on a virtual clock by [`sim`], a second
//! driver of the decision core beside the live proxy. Layers, each using only those below:
//!
//! - [`behaviour`]: one attempt's timeline (headers, content, end) and how the candidate's
//!   timeouts cut it.
//! - [`log`]: access-log lines read into requests and each provider's attempts, indexed by
//!   time; unreadable lines counted.
//! - [`fault`]: `--fault` specs.
//! - [`model`]: what a provider answers at a time: nearest recorded attempt, fault,
//!   unobserved, unknown.
//! - [`sim`]: the discrete-event loop.
//! - [`report`]: recorded and candidate figures side by side; [`text`], [`json`] and
//!   [`html`] render them.
//!
//! Invariants: the same config, logs, flags and `--seed` give byte-identical output; no
//! input panics (bad lines are counted, bad flags are usage errors).

pub mod behaviour;
pub mod fault;
pub mod html;
pub mod json;
pub mod log;
pub mod model;
pub mod report;
pub mod sim;
pub mod tally;
pub mod text;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::runtime::Runtime;
pub use fault::Fault;
use log::{Log, ReadError};
use model::Model;
use report::Report;

/// Output format on standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: side by side columns.
    Text,
    /// One JSON object.
    Json,
}

/// What to replay, and how to report it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Output on standard output.
    pub format: Format,
    /// Also write the HTML page here.
    pub html: Option<PathBuf>,
    /// Seeds the backoff jitter.
    pub seed: u64,
    /// How far from an attempt's time a recorded attempt may be to stand for it.
    pub window: Duration,
    /// What-if faults.
    pub faults: Vec<Fault>,
    /// Access-log files, `-` for standard input.
    pub logs: Vec<String>,
}

/// Why a replay did not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag that does not fit the config (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A log that cannot be read (exit 1).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The HTML page cannot be written (exit 1).
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

impl Error {
    /// The process exit code (contract §9): 2 usage, 1 unreadable log or unwritable page.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Read(_) | Error::Write { .. } => 1,
        }
    }
}

/// Every fault names a provider of the candidate config.
pub fn check_faults(rt: &Runtime, faults: &[Fault]) -> Result<(), Error> {
    for f in faults {
        if !rt.providers.contains_key(&f.provider) {
            let mut known: Vec<&str> = rt.providers.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(Error::Usage(format!(
                "--fault {}: no provider {:?} in the config (known: {})",
                f.spec,
                f.provider,
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Replays `opts.logs` through the compiled candidate `rt` (read from `config`); returns
/// what goes to standard output, having written the HTML page if asked.
pub fn run(rt: &Runtime, config: &Path, opts: &Options) -> Result<String, Error> {
    check_faults(rt, &opts.faults)?;
    let log = Log::read(&opts.logs)?;
    let report = replay(rt, config, &log, opts);
    if let Some(path) = &opts.html {
        std::fs::write(path, html::render(&report)).map_err(|error| Error::Write {
            path: path.display().to_string(),
            error,
        })?;
    }
    Ok(match opts.format {
        Format::Text => text::render(&report),
        Format::Json => json::render(&report),
    })
}

/// The report of one replay of an already read log.
pub fn replay(rt: &Runtime, config: &Path, log: &Log, opts: &Options) -> Report {
    let model = Model::new(log, &opts.faults, opts.window);
    // Timelines keep every attempt: only for the page.
    let samples = opts.html.is_some();
    let run = sim::run(rt, log, &model, opts.seed, samples);
    let mut report = Report::build(log, run, samples);
    report.config = config.display().to_string();
    report.window = opts.window;
    report.seed = opts.seed;
    report.faults = opts.faults.iter().map(|f| f.spec.clone()).collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    fn runtime(toml: &str) -> Runtime {
        let c = Config::parse_with(toml, &Overrides::default(), &|_| None).unwrap();
        Runtime::build(c, 1).unwrap()
    }

    fn at(secs: f64) -> String {
        let t0 = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let t: SystemTime = t0 + Duration::from_secs_f64(secs);
        humantime::format_rfc3339_millis(t).to_string()
    }

    /// A request for `model` at `secs`, answered by `provider`/`upstream` with `status`
    /// after `ms` (headers at `ms` too), in one attempt and nothing else.
    fn line(
        secs: f64,
        model: &str,
        provider: &str,
        upstream: &str,
        status: u16,
        ms: f64,
    ) -> String {
        format!(
            r#"{{"ts":"{}","model":"{model}","strategy":"failover","status":{status},"code":null,"attempts":[{{"provider":"{provider}","model":"{upstream}","key":null,"start_ms":0,"ms":{ms},"first_byte_ms":{ms},"status":{status},"error":null,"retry_after_ms":null}}],"skipped":[],"queue_ms":0,"duration_ms":{ms},"stream":false,"prompt_tokens":10,"completion_tokens":20,"cost_usd":null}}"#,
            at(secs)
        )
    }

    fn read(lines: &[String]) -> Log {
        let mut log = Log::default();
        log.add(lines.join("\n").as_bytes()).unwrap();
        log.finish();
        log
    }

    fn opts(faults: &[&str]) -> Options {
        Options {
            format: Format::Json,
            html: None,
            seed: 0,
            window: Duration::from_secs(300),
            faults: faults.iter().map(|f| f.parse().unwrap()).collect(),
            logs: Vec::new(),
        }
    }

    fn report(toml: &str, lines: &[String], faults: &[&str]) -> Report {
        let rt = runtime(toml);
        let o = opts(faults);
        check_faults(&rt, &o.faults).unwrap();
        replay(&rt, Path::new("candidate.toml"), &read(lines), &o)
    }

    #[test]
    fn a_provider_that_answered_503_for_ten_minutes_opens_the_candidates_circuit() {
        // Recorded: `a` alone, 503 in 5 ms to every request, one every 10 s for 10 minutes;
        // `b` served its own direct traffic in 20 ms.
        let mut lines = Vec::new();
        for k in 0..60 {
            let t = f64::from(k) * 10.0;
            lines.push(line(t, "m", "a", "x", 503, 5.0));
            lines.push(line(t + 5.0, "b/y", "b", "y", 200, 20.0));
        }
        let r = report(
            "[providers.a]\nkind = \"mock\"\nretry = { max_attempts = 1 }\n\
             breaker = { failure_threshold = 3, cooldown = \"60s\" }\n\
             [providers.b]\nkind = \"mock\"\n\
             [models.m]\ntargets = [\"a/x\", \"b/y\"]\n",
            &lines,
            &[],
        );
        let m = &r.models["m"];
        assert_eq!(m.recorded.success_rate, Some(0.0));
        assert_eq!(m.recorded.errors, BTreeMap::from([("503".into(), 60)]));
        assert_eq!(m.candidate.success_rate, Some(1.0), "failed over to b");
        assert!(m.candidate.errors.is_empty());
        // Three failures open it at 20 s; probes at 90 s, 220 s and 470 s fail and reopen
        // it with the cooldown doubled (120 s, 240 s, 480 s).
        let a = &r.providers["a"].candidate;
        assert_eq!((a.attempts, a.failures, a.circuit_opens), (6, 6, 4));
        assert_eq!(a.skipped.get("circuit_open"), Some(&54));
        // Open from 20.005 s to the last request it turned away, at 590 s.
        assert!((a.open_s - 569.995).abs() < 1e-6, "{}", a.open_s);
        assert_eq!(m.candidate.attempts_per_request, Some(66.0 / 60.0));
        assert_eq!(m.candidate.p50_ms, Some(20.0));
        assert_eq!(m.candidate.p99_ms, Some(25.0), "5 ms on a, then 20 ms on b");
        assert_eq!(r.providers["b"].candidate.attempts, 120);
        assert_eq!(r.providers["a"].recorded.failures, 60);
        assert_eq!(r.total.candidate.unknown, 0);
    }

    #[test]
    fn a_ten_minute_hang_is_cut_by_first_byte_and_failed_over() {
        // Recorded: openai answered everything in 100 ms; local served its own in 50 ms.
        let mut lines = Vec::new();
        for k in 0..120 {
            let t = f64::from(k) * 10.0;
            lines.push(line(t, "m", "openai", "gpt", 200, 100.0));
            lines.push(line(t + 5.0, "local/llama", "local", "llama", 200, 50.0));
        }
        let r = report(
            "[providers.openai]\nkind = \"mock\"\ntimeouts = { first_byte = \"5s\" }\n\
             [providers.local]\nkind = \"mock\"\n\
             [models.m]\ntargets = [\"openai/gpt\", \"local/llama\"]\n",
            &lines,
            &["openai=hang@+1m+10m"],
        );
        let m = &r.models["m"];
        assert_eq!(m.recorded.success_rate, Some(1.0));
        assert_eq!(m.candidate.success_rate, Some(1.0));
        // Timeouts at 60, 70 and 80 s open the circuit (at 85 s); probes at 150, 280 and
        // 530 s hang too; after the fault the probe at 1020 s closes it.
        let o = &r.providers["openai"].candidate;
        assert_eq!((o.failures, o.circuit_opens), (6, 4));
        assert_eq!(o.attempts, 6 + 24);
        // Six requests waited 5 s and then got local's 50 ms; 90 went to local at once.
        assert_eq!(m.candidate.p50_ms, Some(50.0));
        assert_eq!(m.candidate.p95_ms, Some(100.0));
        assert_eq!(m.candidate.p99_ms, Some(5050.0));
        assert_eq!(m.recorded.p99_ms, Some(100.0));
        assert!((o.open_s - (1020.1 - 85.0)).abs() < 1e-6, "{}", o.open_s);
        assert_eq!(o.unobserved, 0);
    }

    #[test]
    fn slots_are_held_for_the_attempt_so_queues_fill_and_time_out() {
        let lines: Vec<String> = [0.0, 0.1, 0.2, 2.5]
            .iter()
            .map(|&t| line(t, "m", "a", "x", 200, 3000.0))
            .collect();
        let r = report(
            "[providers.a]\nkind = \"mock\"\n\
             limits = { max_concurrency = 1, queue_size = 1, queue_timeout = \"1s\" }\n\
             [models.m]\ntargets = [\"a/x\"]\n",
            &lines,
            &[],
        );
        let m = &r.models["m"].candidate;
        assert_eq!(m.success_rate, Some(0.5));
        assert_eq!(
            m.errors,
            BTreeMap::from([("queue_full".into(), 1), ("queue_timeout".into(), 1)])
        );
        // 3 s; 1 s in the queue; refused at once; 0.5 s in the queue, then 3 s.
        assert_eq!(m.p50_ms, Some(1000.0));
        assert_eq!(m.p99_ms, Some(3500.0));
        let a = &r.providers["a"].candidate;
        assert_eq!(a.attempts, 2);
        assert_eq!(a.skipped.get("queue_full"), Some(&1));
        assert_eq!(a.skipped.get("queue_timeout"), Some(&1));
    }

    #[test]
    fn nothing_recorded_in_the_window_is_unobserved_or_unknown() {
        let lines = vec![
            line(0.0, "m", "a", "x", 200, 30.0),
            line(1.0, "m", "a", "x", 200, 10.0),
            line(2.0, "m", "a", "x", 200, 20.0),
            line(3600.0, "m", "a", "x", 200, 10.0),
            line(3601.0, "n", "b", "y", 200, 10.0),
        ];
        let r = report(
            "[providers.a]\nkind = \"mock\"\n[providers.c]\nkind = \"mock\"\n\
             [models.m]\ntargets = [\"a/x\"]\n[models.n]\ntargets = [\"c/z\"]\n",
            &lines,
            &["a=slow:1s@+10m+1m"],
        );
        // Every `a` attempt had a recorded neighbour but the last... which is its own.
        assert_eq!(r.providers["a"].candidate.unobserved, 0);
        // `c` never appears in the log: its requests are unknown.
        let n = &r.models["n"].candidate;
        assert_eq!((n.requests, n.unknown, n.success_rate), (1, 1, None));
        assert_eq!(r.total.candidate.unknown, 1);
        // A window of 1 s around nothing: a success at the median of a's successes.
        let rt = runtime("[providers.a]\nkind = \"mock\"\n[models.m]\ntargets = [\"a/x\"]\n");
        let mut o = opts(&[]);
        o.window = Duration::from_millis(1);
        let lines = vec![
            line(0.0, "m", "a", "x", 200, 30.0),
            line(1.0, "m", "a", "x", 200, 10.0),
        ];
        let mut log = read(&lines);
        // Shift the attempts 10 s away from their requests: none is within the window.
        for h in &mut log.history {
            for e in &mut h.entries {
                e.t += 10_000_000;
            }
        }
        let r = replay(&rt, Path::new("c.toml"), &log, &o);
        assert_eq!(r.providers["a"].candidate.unobserved, 2);
        assert_eq!(
            r.models["m"].candidate.p50_ms,
            Some(10.0),
            "the lower median"
        );
    }

    #[test]
    fn a_model_the_candidate_does_not_know_is_404_and_invalid_strategy_stays() {
        let mut bad = line(1.0, "m", "a", "x", 400, 0.1);
        bad = bad
            .replace(r#""code":null"#, r#""code":"invalid_strategy""#)
            .replace(r#""attempts":[{"#, r#""attempts":[],"x":[{"#);
        let lines = vec![line(0.0, "gone", "a", "x", 200, 5.0), bad];
        let r = report(
            "[providers.a]\nkind = \"mock\"\n[models.m]\ntargets = [\"a/x\"]\n",
            &lines,
            &[],
        );
        assert_eq!(
            r.models["gone"].candidate.errors,
            BTreeMap::from([("model_not_found".into(), 1)])
        );
        assert_eq!(
            r.models["m"].candidate.errors,
            BTreeMap::from([("invalid_strategy".into(), 1)])
        );
    }

    #[test]
    fn a_client_that_left_leaves_at_the_same_time() {
        let gone = line(0.0, "m", "a", "x", 499, 2000.0)
            .replace(r#""attempts":[{"#, r#""attempts":[],"x":[{"#)
            .replace(
                r#""cost_usd":null"#,
                r#""cost_usd":null,"outcome":"client_gone""#,
            );
        let lines = vec![gone, line(1.0, "m", "a", "x", 200, 5000.0)];
        let r = report(
            "[providers.a]\nkind = \"mock\"\n[models.m]\ntargets = [\"a/x\"]\n",
            &lines,
            &[],
        );
        let m = &r.models["m"].candidate;
        assert_eq!(m.errors, BTreeMap::from([("499".into(), 1)]));
        assert_eq!(m.p50_ms, Some(2000.0));
        let a = &r.providers["a"].candidate;
        assert_eq!((a.attempts, a.failures), (2, 0), "leaving is no failure");
    }

    #[test]
    fn the_same_inputs_and_seed_give_the_same_bytes() {
        let mut lines = Vec::new();
        for k in 0..200 {
            let t = f64::from(k) * 0.5;
            let status = if (40..120).contains(&k) { 503 } else { 200 };
            lines.push(line(t, "m", "a", "x", status, 5.0 + f64::from(k % 7)));
            lines.push(line(t + 0.25, "b/y", "b", "y", 200, 20.0));
        }
        let toml = "[providers.a]\nkind = \"mock\"\nretry = { max_attempts = 3 }\n\
                    [providers.b]\nkind = \"mock\"\n\
                    [models.m]\ntargets = [\"a/x\", \"b/y\"]\n";
        let run = |seed| {
            let rt = runtime(toml);
            let mut o = opts(&["b=500@+20s+5s"]);
            o.seed = seed;
            json::render(&replay(&rt, Path::new("c.toml"), &read(&lines), &o))
        };
        let first = run(7);
        assert_eq!(first, run(7));
        assert!(first.contains("\"seed\": 7"), "{first}");
    }
}
