//! `--format text` (the default): the report for people — per model and in total, then per
//! provider, recorded and candidate side by side in two aligned columns.
//!
//! Invariants: fixed decimals everywhere and ordered maps, so the same report prints the
//! same bytes; a figure with nothing to measure prints `-`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::report::{Figures, ProviderFigures, Report, Side};

const LABEL: usize = 30;
const VALUE: usize = 14;

fn row(s: &mut String, label: &str, recorded: String, candidate: String) {
    let _ = writeln!(s, "  {label:<LABEL$}{recorded:>VALUE$}{candidate:>VALUE$}");
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "-".to_string(), f)
}

fn ms(x: Option<f64>) -> String {
    opt(x, |v| format!("{v:.1} ms"))
}

fn figures(s: &mut String, title: &str, f: &Side<Figures>) {
    let _ = writeln!(s, "{title}");
    let (r, c) = (&f.recorded, &f.candidate);
    row(
        s,
        "requests",
        r.requests.to_string(),
        c.requests.to_string(),
    );
    let pct = |x| opt(x, |v| format!("{:.2} %", v * 100.0));
    row(s, "success", pct(r.success_rate), pct(c.success_rate));
    let apr = |x| opt(x, |v| format!("{v:.2}"));
    row(
        s,
        "attempts per request",
        apr(r.attempts_per_request),
        apr(c.attempts_per_request),
    );
    row(s, "latency p50", ms(r.p50_ms), ms(c.p50_ms));
    row(s, "latency p95", ms(r.p95_ms), ms(c.p95_ms));
    row(s, "latency p99", ms(r.p99_ms), ms(c.p99_ms));
    row(
        s,
        "cost",
        format!("${:.6}", r.cost_usd),
        format!("${:.6}", c.cost_usd),
    );
    if r.unknown + c.unknown > 0 {
        row(s, "unknown", r.unknown.to_string(), c.unknown.to_string());
    }
    let codes: BTreeSet<&String> = r.errors.keys().chain(c.errors.keys()).collect();
    let n = |m: &BTreeMap<String, u64>, k: &String| m.get(k).copied().unwrap_or(0).to_string();
    for k in codes {
        row(s, &format!("errors {k}"), n(&r.errors, k), n(&c.errors, k));
    }
    let _ = writeln!(s);
}

fn provider(s: &mut String, name: &str, p: &Side<ProviderFigures>) {
    let _ = writeln!(s, "provider {name}");
    let (r, c) = (&p.recorded, &p.candidate);
    row(
        s,
        "attempts",
        r.attempts.to_string(),
        c.attempts.to_string(),
    );
    row(
        s,
        "failures",
        r.failures.to_string(),
        c.failures.to_string(),
    );
    row(
        s,
        "circuit opens",
        r.circuit_opens.to_string(),
        c.circuit_opens.to_string(),
    );
    row(
        s,
        "seconds open",
        format!("{:.1}", r.open_s),
        format!("{:.1}", c.open_s),
    );
    row(
        s,
        "unobserved attempts",
        r.unobserved.to_string(),
        c.unobserved.to_string(),
    );
    let reasons: BTreeSet<&&str> = r.skipped.keys().chain(c.skipped.keys()).collect();
    let n = |m: &BTreeMap<&str, u64>, k: &str| m.get(k).copied().unwrap_or(0).to_string();
    for k in reasons {
        row(
            s,
            &format!("skipped {k}"),
            n(&r.skipped, k),
            n(&c.skipped, k),
        );
    }
    let _ = writeln!(s);
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "gateway replay of {} request(s) through {}",
        r.lines.requests, r.config
    );
    let _ = writeln!(
        s,
        "lines: {} read, {} unreadable, {} without a model; window {}, seed {}",
        r.lines.read,
        r.lines.unreadable,
        r.lines.without_model,
        humantime::format_duration(r.window),
        r.seed
    );
    for f in &r.faults {
        let _ = writeln!(s, "fault: {f}");
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  {:<LABEL$}{:>VALUE$}{:>VALUE$}",
        "", "recorded", "candidate"
    );
    figures(&mut s, "total", &r.total);
    for (m, f) in &r.models {
        figures(&mut s, &format!("model {m}"), f);
    }
    for (name, p) in &r.providers {
        provider(&mut s, name, p);
    }
    let _ = writeln!(
        s,
        "success: share of requests answered 2xx (unknown ones left out); latency: arrival to \
         the end of the answer;\nrecorded circuit figures are inferred from circuit_open skips \
         (a reopening after a failed probe is not seen)."
    );
    s
}
