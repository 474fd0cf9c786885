//! `--html FILE`: the report as one self-contained page — inline CSS and SVG, no script, no
//! external asset — with the figures as tables and, per provider, a timeline of its
//! circuit and its attempts, recorded beside candidate.
//!
//! Each timeline shares one time axis (UTC) over the replay's span: two lanes show when the
//! circuit was open (recorded: inferred from skips; candidate: from the breaker); below,
//! the median time to verdict of the attempts in each of [`BUCKETS`] slices, on a log scale
//! (so 20 ms answers and 60 s timeouts both read), and the failures per slice as bars.
//! Invariants: output depends only on the report (fixed decimals, ordered maps), and every
//! name from the config or the log is escaped.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::report::{Figures, ProviderFigures, Report, Side, Timeline};
use super::sim::Sample;

/// Time slices per timeline.
pub const BUCKETS: usize = 120;

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 130.0;
const RIGHT: f64 = 40.0;
const RECORDED: &str = "#1f77b4";
const CANDIDATE: &str = "#ff7f0e";
const OPEN: &str = "#d62728";
const CLOSED: &str = "#e3f1e6";

/// `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "–".to_string(), f)
}

fn pair(s: &mut String, r: String, c: String) {
    let _ = write!(
        s,
        "<td class=r>{}</td><td class=c>{}</td>",
        escape(&r),
        escape(&c)
    );
}

fn figures_row(s: &mut String, name: &str, f: &Side<Figures>) {
    let (r, c) = (&f.recorded, &f.candidate);
    let _ = write!(s, "<tr><th>{}</th>", escape(name));
    pair(s, r.requests.to_string(), c.requests.to_string());
    let pct = |x| opt(x, |v| format!("{:.2} %", v * 100.0));
    pair(s, pct(r.success_rate), pct(c.success_rate));
    let n = |x| opt(x, |v| format!("{v:.2}"));
    pair(s, n(r.attempts_per_request), n(c.attempts_per_request));
    let ms = |x| opt(x, |v| format!("{v:.1}"));
    pair(s, ms(r.p50_ms), ms(c.p50_ms));
    pair(s, ms(r.p95_ms), ms(c.p95_ms));
    pair(s, ms(r.p99_ms), ms(c.p99_ms));
    pair(
        s,
        format!("{:.6}", r.cost_usd),
        format!("{:.6}", c.cost_usd),
    );
    pair(s, r.unknown.to_string(), c.unknown.to_string());
    s.push_str("</tr>\n");
}

/// One row per error code or status of `f`, recorded beside candidate.
fn error_rows(s: &mut String, name: &str, f: &Side<Figures>) {
    let (r, c) = (&f.recorded.errors, &f.candidate.errors);
    let codes: std::collections::BTreeSet<&String> = r.keys().chain(c.keys()).collect();
    for code in codes {
        let n = |m: &std::collections::BTreeMap<String, u64>| m.get(code).copied().unwrap_or(0);
        let _ = write!(
            s,
            "<tr><th>{}</th><td style=\"text-align:left\">{}</td>",
            escape(name),
            escape(code)
        );
        pair(s, n(r).to_string(), n(c).to_string());
        s.push_str("</tr>\n");
    }
}

fn provider_row(s: &mut String, name: &str, p: &Side<ProviderFigures>) {
    let (r, c) = (&p.recorded, &p.candidate);
    let _ = write!(s, "<tr><th>{}</th>", escape(name));
    pair(s, r.attempts.to_string(), c.attempts.to_string());
    pair(s, r.failures.to_string(), c.failures.to_string());
    pair(s, r.circuit_opens.to_string(), c.circuit_opens.to_string());
    pair(s, format!("{:.1}", r.open_s), format!("{:.1}", c.open_s));
    pair(s, r.unobserved.to_string(), c.unobserved.to_string());
    s.push_str("</tr>\n");
}

fn header(s: &mut String, first: &str, columns: &[&str]) {
    let _ = write!(s, "<tr><th rowspan=2>{first}</th>");
    for c in columns {
        let _ = write!(s, "<th colspan=2>{c}</th>");
    }
    s.push_str("</tr>\n<tr>");
    for _ in columns {
        s.push_str("<th class=r>rec.</th><th class=c>cand.</th>");
    }
    s.push_str("</tr>\n");
}

/// A UTC time of day (or date and time, over a long span) for an axis label.
fn clock(t: i64, long: bool) -> String {
    let at = u64::try_from(t)
        .ok()
        .and_then(|us| UNIX_EPOCH.checked_add(Duration::from_micros(us)));
    let Some(at) = at else {
        return String::new();
    };
    // 2026-01-01T00:10:00Z
    let full = humantime::format_rfc3339_seconds(at).to_string();
    let (date, time) = full.split_once('T').unwrap_or((&full, ""));
    let time = time.trim_end_matches('Z');
    if long {
        format!(
            "{} {}",
            date.get(5..).unwrap_or(date),
            time.get(..5).unwrap_or(time)
        )
    } else {
        time.to_string()
    }
}

/// A round step (microseconds) that puts at most eight ticks on a span of `dt`.
fn tick_step(dt: f64) -> i64 {
    const S: i64 = 1_000_000;
    const STEPS: [i64; 24] = [
        1,
        2,
        5,
        10,
        15,
        30,
        60,
        120,
        300,
        600,
        900,
        1800,
        3600,
        2 * 3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86_400,
        2 * 86_400,
        7 * 86_400,
        14 * 86_400,
        30 * 86_400,
        90 * 86_400,
        365 * 86_400,
    ];
    STEPS
        .iter()
        .map(|s| s * S)
        .find(|&s| dt / s as f64 <= 8.0)
        .unwrap_or(365 * 86_400 * S)
}

/// Per slice: the median time to verdict (ms) and the failures.
fn buckets(samples: &[Sample], span: (i64, i64)) -> Vec<(Option<f64>, u64)> {
    let width = (span.1.saturating_sub(span.0)).max(1) as f64 / BUCKETS as f64;
    let mut slices: Vec<(Vec<f32>, u64)> = vec![(Vec::new(), 0); BUCKETS];
    for s in samples {
        let k = ((s.t.saturating_sub(span.0)) as f64 / width).floor();
        let k = if k.is_finite() && k > 0.0 {
            (k as usize).min(BUCKETS - 1)
        } else {
            0
        };
        slices[k].0.push(s.ms);
        slices[k].1 += u64::from(s.failed);
    }
    slices
        .into_iter()
        .map(|(mut v, failed)| {
            v.sort_unstable_by(f32::total_cmp);
            let median = v.get(v.len().saturating_sub(1) / 2).map(|&m| f64::from(m));
            (median, failed)
        })
        .collect()
}

/// One provider's timeline as an SVG.
fn timeline(s: &mut String, name: &str, t: &Side<Timeline>, span: (i64, i64)) {
    let plot = WIDTH - LEFT - RIGHT;
    let dt = (span.1.saturating_sub(span.0)).max(1) as f64;
    let x = |at: i64| LEFT + (at.saturating_sub(span.0)) as f64 / dt * plot;
    let rec = buckets(&t.recorded.samples, span);
    let cand = buckets(&t.candidate.samples, span);
    // Log scale over whole decades covering every median (at least 1 ms .. 1 s).
    let medians = rec.iter().chain(&cand).filter_map(|b| b.0);
    let (lo, hi) = medians.fold((f64::INFINITY, 0f64), |(lo, hi), m| {
        (lo.min(m.max(0.1)), hi.max(m))
    });
    let lo_dec = if lo.is_finite() {
        lo.log10().floor().min(0.0)
    } else {
        0.0
    };
    let hi_dec = hi.max(1.0).log10().ceil().max(lo_dec + 3.0);
    let (lane_h, chart_top, chart_h, bars_h) = (16.0, 92.0, 170.0, 50.0);
    let bars_top = chart_top + chart_h + 26.0;
    let height = bars_top + bars_h + 46.0;
    let y = |ms: f64| {
        let v = ms.max(10f64.powf(lo_dec)).log10();
        chart_top + chart_h - (v - lo_dec) / (hi_dec - lo_dec) * chart_h
    };
    let _ = writeln!(
        s,
        "<h3>{name}</h3>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
         aria-label=\"timeline of provider {name}\">",
        name = escape(name)
    );
    // Legend.
    let _ = writeln!(
        s,
        "<g font-size=\"12\"><line x1=\"{LEFT}\" y1=\"12\" x2=\"{l2}\" y2=\"12\" \
         stroke=\"{RECORDED}\" stroke-width=\"2\"/><text x=\"{t1}\" y=\"16\">recorded</text>\
         <line x1=\"{c1}\" y1=\"12\" x2=\"{c2}\" y2=\"12\" stroke=\"{CANDIDATE}\" \
         stroke-width=\"2\"/><text x=\"{t2}\" y=\"16\">candidate</text>\
         <rect x=\"{o1}\" y=\"6\" width=\"20\" height=\"12\" fill=\"{OPEN}\"/>\
         <text x=\"{t3}\" y=\"16\">circuit open</text>\
         <rect x=\"{k1}\" y=\"6\" width=\"20\" height=\"12\" fill=\"{CLOSED}\" stroke=\"#999\"/>\
         <text x=\"{t4}\" y=\"16\">closed</text></g>",
        l2 = LEFT + 24.0,
        t1 = LEFT + 30.0,
        c1 = LEFT + 110.0,
        c2 = LEFT + 134.0,
        t2 = LEFT + 140.0,
        o1 = LEFT + 230.0,
        t3 = LEFT + 256.0,
        k1 = LEFT + 350.0,
        t4 = LEFT + 376.0,
    );
    // Circuit lanes.
    for (k, (label, tl)) in [("recorded", &t.recorded), ("candidate", &t.candidate)]
        .into_iter()
        .enumerate()
    {
        let top = 34.0 + k as f64 * (lane_h + 8.0);
        let _ = writeln!(
            s,
            "<text x=\"{tx}\" y=\"{ty:.1}\" font-size=\"12\" text-anchor=\"end\">{label} circuit</text>\
             <rect x=\"{LEFT}\" y=\"{top:.1}\" width=\"{plot:.1}\" height=\"{lane_h}\" fill=\"{CLOSED}\"/>",
            tx = LEFT - 6.0,
            ty = top + 12.0,
        );
        for &(from, to) in &tl.open {
            let (a, b) = (x(from), x(to));
            let _ = writeln!(
                s,
                "<rect x=\"{a:.1}\" y=\"{top:.1}\" width=\"{w:.1}\" height=\"{lane_h}\" fill=\"{OPEN}\"/>",
                w = (b - a).max(1.5)
            );
        }
    }
    // Latency axis.
    let _ = writeln!(
        s,
        "<text x=\"14\" y=\"{ty:.1}\" font-size=\"12\" transform=\"rotate(-90 14 {ty:.1})\" \
         text-anchor=\"middle\">time to verdict (median)</text>",
        ty = chart_top + chart_h / 2.0
    );
    let mut d = lo_dec;
    while d <= hi_dec + 1e-9 {
        let ms = 10f64.powf(d);
        let label = if ms >= 1000.0 {
            format!("{} s", ms / 1000.0)
        } else {
            format!("{ms} ms")
        };
        let yy = y(ms);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{x2:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"end\">{label}</text>",
            x2 = WIDTH - RIGHT,
            tx = LEFT - 6.0,
            ty = yy + 4.0,
        );
        d += 1.0;
    }
    let slice = plot / BUCKETS as f64;
    // A line through the slices that had attempts (an empty slice tells nothing, so the
    // line goes on across it), and a dot on each, so sparse traffic still shows.
    for (series, color, width) in [(&rec, RECORDED, 3.0), (&cand, CANDIDATE, 1.5)] {
        let mut path = String::new();
        let mut dots = String::new();
        for (k, (m, _)) in series.iter().enumerate() {
            if let Some(m) = m {
                let (px, py) = (LEFT + (k as f64 + 0.5) * slice, y(*m));
                let pen = if path.is_empty() { "M" } else { "L" };
                let _ = write!(path, "{pen}{px:.1},{py:.1} ");
                let _ = write!(dots, "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"2.2\"/>");
            }
        }
        if !path.is_empty() {
            let _ = writeln!(
                s,
                "<path d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\" \
                 stroke-linejoin=\"round\"/><g fill=\"{color}\">{dots}</g>",
                path.trim_end()
            );
        }
    }
    // Failures per slice.
    let most = rec
        .iter()
        .chain(&cand)
        .map(|b| b.1)
        .max()
        .unwrap_or(0)
        .max(1);
    let _ = writeln!(
        s,
        "<text x=\"{tx}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"end\">failures</text>\
         <text x=\"{tx}\" y=\"{t2:.1}\" font-size=\"11\" text-anchor=\"end\">{most}</text>\
         <line x1=\"{LEFT}\" y1=\"{b:.1}\" x2=\"{x2:.1}\" y2=\"{b:.1}\" stroke=\"#999\"/>",
        tx = LEFT - 6.0,
        ty = bars_top + bars_h / 2.0 + 4.0,
        t2 = bars_top + 8.0,
        b = bars_top + bars_h,
        x2 = WIDTH - RIGHT,
    );
    for (k, (r, c)) in rec.iter().zip(&cand).enumerate() {
        for (j, (n, color)) in [(r.1, RECORDED), (c.1, CANDIDATE)].into_iter().enumerate() {
            if n == 0 {
                continue;
            }
            let h = n as f64 / most as f64 * bars_h;
            let _ = writeln!(
                s,
                "<rect x=\"{bx:.1}\" y=\"{by:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{color}\"/>",
                bx = LEFT + k as f64 * slice + j as f64 * slice / 2.0,
                by = bars_top + bars_h - h,
                w = (slice / 2.0 - 0.5).max(0.5),
            );
        }
    }
    // Time axis: ticks on round times, at most eight.
    let long = dt > 86_400e6;
    let axis = bars_top + bars_h;
    let step = tick_step(dt);
    let mut at = span
        .0
        .div_euclid(step)
        .saturating_add(1)
        .saturating_mul(step);
    if span.0.rem_euclid(step) == 0 {
        at = span.0;
    }
    let mut ticks = Vec::new();
    while at <= span.1 && ticks.len() < 12 {
        ticks.push(at);
        at = at.saturating_add(step);
    }
    for at in ticks {
        let px = x(at);
        let _ = writeln!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{chart_top:.1}\" x2=\"{px:.1}\" y2=\"{axis:.1}\" stroke=\"#eee\"/>\
             <text x=\"{px:.1}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            clock(at, long),
            ty = axis + 16.0,
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{cx:.1}\" y=\"{ty:.1}\" font-size=\"12\" text-anchor=\"middle\">time (UTC)</text>\n</svg>",
        cx = LEFT + plot / 2.0,
        ty = axis + 34.0,
    );
}

/// The report as a self-contained HTML page.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let title = format!("gateway replay: {}", r.config);
    let _ = writeln!(
        s,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>\n\
         body {{ font: 14px/1.45 system-ui, -apple-system, \"Segoe UI\", sans-serif; margin: 24px; color: #222; }}\n\
         h1 {{ font-size: 22px; }} h2 {{ font-size: 18px; margin-top: 28px; }} h3 {{ font-size: 15px; margin: 22px 0 4px; }}\n\
         table {{ border-collapse: collapse; margin: 8px 0; }}\n\
         th, td {{ padding: 2px 6px; border-bottom: 1px solid #e5e5e5; text-align: right; white-space: nowrap; font-size: 13px; }}\n\
         th {{ background: #f6f6f6; font-weight: 600; }} tr th:first-child {{ text-align: left; }}\n\
         .r {{ color: {RECORDED}; }} .c {{ color: #b35600; }}\n\
         p.note {{ color: #555; max-width: 1100px; }}\n\
         </style>\n</head>\n<body>",
        escape(&title)
    );
    let _ = writeln!(s, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(
        s,
        "<p>{} request(s) replayed from {} line(s) read ({} unreadable, {} without a model); \
         window {}, seed {}.</p>",
        r.lines.requests,
        r.lines.read,
        r.lines.unreadable,
        r.lines.without_model,
        humantime::format_duration(r.window),
        r.seed
    );
    if !r.faults.is_empty() {
        let faults: Vec<String> = r
            .faults
            .iter()
            .map(|f| format!("<code>{}</code>", escape(f)))
            .collect();
        let _ = writeln!(s, "<p>Faults: {}.</p>", faults.join(", "));
    }
    s.push_str("<h2>Requests</h2>\n<table>\n");
    header(
        &mut s,
        "model",
        &[
            "requests",
            "success",
            "attempts / request",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "cost USD",
            "unknown",
        ],
    );
    figures_row(&mut s, "total", &r.total);
    for (m, f) in &r.models {
        figures_row(&mut s, m, f);
    }
    s.push_str(
        "</table>\n<h2>Errors</h2>\n<p class=note>Requests that did not get a 2xx, by the \
                gateway's error code, else by status.</p>\n<table>\n<tr><th>model</th><th>code \
                or status</th><th class=r>recorded</th><th class=c>candidate</th></tr>\n",
    );
    error_rows(&mut s, "total", &r.total);
    for (m, f) in &r.models {
        error_rows(&mut s, m, f);
    }
    s.push_str("</table>\n<h2>Providers</h2>\n<table>\n");
    header(
        &mut s,
        "provider",
        &[
            "attempts",
            "failures",
            "circuit opens",
            "seconds open",
            "unobserved",
        ],
    );
    for (name, p) in &r.providers {
        provider_row(&mut s, name, p);
    }
    s.push_str("</table>\n<h2>Timelines</h2>\n");
    let _ = writeln!(
        s,
        "<p class=note>Per provider: when its circuit was open (recorded: inferred from \
         <code>circuit_open</code> skips, from the failure that opened it to the probe that \
         closed it), the median time from sending an attempt to its verdict in each of \
         {BUCKETS} slices (log scale), and failed attempts per slice.</p>"
    );
    for (name, t) in &r.timelines {
        timeline(&mut s, name, t, r.span);
    }
    s.push_str("</body>\n</html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn slices_take_the_median_and_count_failures() {
        let s = |t, ms, failed| Sample { t, ms, failed };
        let b = buckets(
            &[
                s(0, 1.0, false),
                s(1, 3.0, true),
                s(2, 2.0, false),
                s(1_199, 9.0, true),
            ],
            (0, 1200),
        );
        assert_eq!(b.len(), BUCKETS);
        assert_eq!(b[0], (Some(2.0), 1));
        assert_eq!(b[BUCKETS - 1], (Some(9.0), 1));
        assert_eq!(b[1], (None, 0));
    }

    #[test]
    fn axis_labels_read_as_utc() {
        let t = 1_767_225_600_000_000 + 610_000_000; // 2026-01-01T00:10:10Z
        assert_eq!(clock(t, false), "00:10:10");
        assert_eq!(clock(t, true), "01-01 00:10");
        assert_eq!(clock(-5, false), "");
    }
}
