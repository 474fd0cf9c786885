//! `--format json`: the report as one JSON object, in the schema of contract §9:
//! `{"lines": {"read", "requests", "unreadable"}, "total": F, "models": {ALIAS: F},
//! "providers": {NAME: P}}`, F = `{"recorded": f, "candidate": f}`, P likewise with p.
//!
//! Extra keys (allowed by the contract): `lines.without_model`, `p.skipped`, and the run's
//! `config`, `window_s`, `seed` and `faults`. A figure with nothing to measure (no request,
//! so no success rate or percentile) is `null`. Invariants: keys are sorted and floats are
//! rounded to fixed places (milliseconds to the microsecond, rates to 1e-6, costs to 1e-9),
//! so the output is byte-identical for the same report.

use serde_json::{Map, Value, json};

use super::report::{Figures, ProviderFigures, Report, Side};

fn round(x: f64, places: i32) -> Value {
    let k = 10f64.powi(places);
    let r = (x * k).round() / k;
    // -0.0 and 0.0 print differently; NaN and infinities are not JSON.
    if r == 0.0 || !r.is_finite() {
        json!(0.0)
    } else {
        json!(r)
    }
}

fn opt(x: Option<f64>, places: i32) -> Value {
    x.map_or(Value::Null, |x| round(x, places))
}

fn figures(f: &Figures) -> Value {
    json!({
        "requests": f.requests,
        "success_rate": opt(f.success_rate, 6),
        "errors": f.errors,
        "attempts_per_request": opt(f.attempts_per_request, 6),
        "p50_ms": opt(f.p50_ms, 3),
        "p95_ms": opt(f.p95_ms, 3),
        "p99_ms": opt(f.p99_ms, 3),
        "cost_usd": round(f.cost_usd, 9),
        "unknown": f.unknown,
    })
}

fn provider(p: &ProviderFigures) -> Value {
    json!({
        "attempts": p.attempts,
        "failures": p.failures,
        "circuit_opens": p.circuit_opens,
        "open_s": round(p.open_s, 3),
        "unobserved": p.unobserved,
        "skipped": p.skipped,
    })
}

fn side<T>(s: &Side<T>, f: impl Fn(&T) -> Value) -> Value {
    json!({"recorded": f(&s.recorded), "candidate": f(&s.candidate)})
}

/// The report as JSON, pretty-printed, with a final newline.
pub fn render(r: &Report) -> String {
    let models: Map<String, Value> = r
        .models
        .iter()
        .map(|(k, v)| (k.clone(), side(v, figures)))
        .collect();
    let providers: Map<String, Value> = r
        .providers
        .iter()
        .map(|(k, v)| (k.clone(), side(v, provider)))
        .collect();
    let v = json!({
        "lines": {
            "read": r.lines.read,
            "requests": r.lines.requests,
            "unreadable": r.lines.unreadable,
            "without_model": r.lines.without_model,
        },
        "total": side(&r.total, figures),
        "models": models,
        "providers": providers,
        "config": r.config,
        "window_s": round(r.window.as_secs_f64(), 3),
        "seed": r.seed,
        "faults": r.faults,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}
