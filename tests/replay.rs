//! `gateway replay` through the real binary: the JSON schema of contract §9, standard input,
//! exit codes, config errors reported exactly as `gateway check` reports them, fault specs
//! checked against the config, and byte-identical output for the same inputs and seed.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;

use support::gateway_command as gateway;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gateway-replay-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const CONFIG: &str = "[providers.a]\nkind = \"mock\"\nretry = { max_attempts = 1 }\n\
                      breaker = { failure_threshold = 3, cooldown = \"60s\" }\n\
                      [providers.b]\nkind = \"mock\"\n\
                      [models.m]\ntargets = [\"a/x\", \"b/y\"]\n";

fn at(secs: u64) -> String {
    let t0 = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
    humantime::format_rfc3339_millis(t0 + std::time::Duration::from_secs(secs)).to_string()
}

fn line(secs: u64, model: &str, provider: &str, upstream: &str, status: u16, ms: f64) -> String {
    format!(
        r#"{{"ts":"{}","request_id":"r","method":"POST","path":"/v1/chat/completions","model":"{model}","strategy":"failover","target":"{provider}/{upstream}","status":{status},"code":null,"attempts":[{{"provider":"{provider}","model":"{upstream}","key":null,"start_ms":0,"ms":{ms},"first_byte_ms":{ms},"status":{status},"error":null,"retry_after_ms":null}}],"skipped":[],"queue_ms":0,"first_byte_ms":{ms},"duration_ms":{ms},"stream":false,"prompt_tokens":null,"completion_tokens":null,"cost_usd":null,"outcome":"completed"}}"#,
        at(secs)
    )
}

/// `a` answered 503 for ten minutes; `b` served its direct traffic; a cut last line.
fn outage_log() -> String {
    let mut s = String::new();
    for k in 0..60 {
        s.push_str(&line(k * 10, "m", "a", "x", 503, 5.0));
        s.push('\n');
        s.push_str(&line(k * 10 + 5, "b/y", "b", "y", 200, 20.0));
        s.push('\n');
    }
    s.push_str("{\"ts\":\"2026-01-01T00:10:00.000Z\",\"mod");
    s
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn json_has_the_contract_schema_and_the_candidates_figures() {
    let d = dir("json");
    let config = write(&d, "gateway.toml", CONFIG);
    let log = write(&d, "access.jsonl", &outage_log());
    let out = gateway(&["replay", "--config", &config, "--format", "json", &log])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["lines"]["read"], 121);
    assert_eq!(v["lines"]["requests"], 120);
    assert_eq!(v["lines"]["unreadable"], 1);
    for f in [&v["total"], &v["models"]["m"], &v["models"]["b/y"]] {
        for side in ["recorded", "candidate"] {
            let f = &f[side];
            for key in [
                "requests",
                "success_rate",
                "errors",
                "attempts_per_request",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "cost_usd",
                "unknown",
            ] {
                assert!(f.get(key).is_some(), "{side} lacks {key}: {f}");
            }
        }
    }
    let m = &v["models"]["m"];
    assert_eq!(m["recorded"]["success_rate"], 0.0);
    assert_eq!(m["recorded"]["errors"]["503"], 60);
    assert_eq!(m["candidate"]["success_rate"], 1.0);
    let a = &v["providers"]["a"];
    for key in [
        "attempts",
        "failures",
        "circuit_opens",
        "open_s",
        "unobserved",
    ] {
        assert!(a["recorded"].get(key).is_some(), "{key}");
        assert!(a["candidate"].get(key).is_some(), "{key}");
    }
    assert_eq!(a["candidate"]["circuit_opens"], 4);
    assert_eq!(a["candidate"]["attempts"], 6);
    assert_eq!(a["recorded"]["attempts"], 60);
}

#[test]
fn reads_standard_input_and_several_files() {
    let d = dir("stdin");
    let config = write(&d, "gateway.toml", CONFIG);
    let log = write(&d, "a.jsonl", &line(0, "m", "b", "y", 200, 20.0));
    let mut child = gateway(&["replay", "--config", &config, "--format", "json", &log, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(line(1, "m", "a", "x", 200, 10.0).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["lines"]["requests"], 2);
}

#[test]
fn config_errors_are_reported_as_check_reports_them() {
    let d = dir("badconfig");
    let config = write(
        &d,
        "gateway.toml",
        "[providers.a]\nkind = \"mock\"\n[models.m]\ntargets = [\"nope/x\"]\n",
    );
    let log = write(&d, "a.jsonl", "");
    let check = gateway(&["check", "--config", &config]).output().unwrap();
    let replay = gateway(&["replay", "--config", &config, &log])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    assert_eq!(replay.status.code(), Some(2));
    assert!(!check.stderr.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&replay.stderr),
        String::from_utf8_lossy(&check.stderr)
    );
    // No config at all: the same fallback and message as the server.
    let empty = dir("noconfig");
    let out = gateway(&["replay", &log])
        .current_dir(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.toml"));
}

#[test]
fn usage_errors_exit_2_and_an_unreadable_log_exits_1() {
    let d = dir("usage");
    let config = write(&d, "gateway.toml", CONFIG);
    let log = write(&d, "a.jsonl", &line(0, "m", "a", "x", 200, 10.0));
    let out = gateway(&[
        "replay",
        "--config",
        &config,
        "--fault",
        "a=boom@+1m+1m",
        &log,
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--fault") && err.contains("unknown mode \"boom\""),
        "{err}"
    );
    let out = gateway(&[
        "replay",
        "--config",
        &config,
        "--fault",
        "zz=hang@+1m+1m",
        &log,
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no provider \"zz\" in the config (known: a, b)"),
        "{err}"
    );
    let out = gateway(&["replay", "--config", &config, "--window", "soon", &log])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = gateway(&["replay", "--config", &config]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a log is required");
    let missing = d.join("missing.jsonl");
    let out = gateway(&["replay", "--config", &config, missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("missing.jsonl"),
        "{err}"
    );
}

#[test]
fn the_same_inputs_and_seed_give_byte_identical_output() {
    let d = dir("determinism");
    let config = write(
        &d,
        "gateway.toml",
        &CONFIG.replace("max_attempts = 1", "max_attempts = 3"),
    );
    let log = write(&d, "access.jsonl", &outage_log());
    let run = |format: &str, seed: &str| {
        let out = gateway(&[
            "replay",
            "--config",
            &config,
            "--format",
            format,
            "--seed",
            seed,
            "--fault",
            "b=503@+2m+1m",
            &log,
        ])
        .output()
        .unwrap();
        ok(&out)
    };
    assert_eq!(run("json", "3"), run("json", "3"));
    assert_eq!(run("text", "3"), run("text", "3"));
    let page = |name: &str| {
        let path = d.join(name);
        let out = gateway(&[
            "replay",
            "--config",
            &config,
            "--seed",
            "3",
            "--html",
            path.to_str().unwrap(),
            &log,
        ])
        .output()
        .unwrap();
        ok(&out);
        std::fs::read(path).unwrap()
    };
    assert_eq!(page("one.html"), page("two.html"));
}

/// The page written by `--html` over the outage log, and where it is.
fn outage_page(name: &str) -> (String, PathBuf) {
    let d = dir(name);
    let config = write(&d, "gateway.toml", CONFIG);
    let log = write(&d, "access.jsonl", &outage_log());
    let page = d.join("replay.html");
    let out = gateway(&[
        "replay",
        "--config",
        &config,
        "--fault",
        "b=503@+3m+30s",
        "--html",
        page.to_str().unwrap(),
        &log,
    ])
    .output()
    .unwrap();
    ok(&out);
    (std::fs::read_to_string(&page).unwrap(), page)
}

#[test]
fn the_html_page_is_self_contained_with_a_timeline_per_provider() {
    let (html, _) = outage_page("html");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), 2, "one timeline per provider");
    for want in [
        "<h3>a</h3>",
        "<h3>b</h3>",
        "recorded circuit",
        "candidate circuit",
        "time (UTC)",
        "time to verdict (median)",
        "b=503@+3m+30s",
    ] {
        assert!(html.contains(want), "{want:?} missing");
    }
    // No script and nothing fetched: the only URL is the SVG namespace.
    assert!(!html.contains("<script"));
    assert!(!html.contains("src="));
    assert!(!html.contains("href="));
    assert_eq!(
        html.matches("http").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );
    // A page that cannot be written is exit 1.
    let d = dir("html-unwritable");
    let config = write(&d, "gateway.toml", CONFIG);
    let log = write(&d, "access.jsonl", &outage_log());
    let out = gateway(&[
        "replay",
        "--config",
        &config,
        "--html",
        d.join("no/such/dir/x.html").to_str().unwrap(),
        &log,
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_html_page_renders_in_headless_chromium() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        eprintln!("skipped: /usr/bin/chromium is missing (apt-get install -y chromium)");
        return;
    }
    let (_, page) = outage_page("chromium");
    let d = page.parent().unwrap();
    let shot = d.join("replay.png");
    let profile = d.join("profile");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1600",
            &format!("file://{}", page.display()),
        ])
        .output()
        .unwrap();
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}); chromium said: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A blank page compresses to a few KiB; tables and timelines do not.
    assert!(png.len() > 20_000, "{} bytes", png.len());
}

#[test]
fn text_puts_recorded_and_candidate_side_by_side() {
    let d = dir("text");
    let config = write(&d, "gateway.toml", CONFIG);
    let log = write(&d, "access.jsonl", &outage_log());
    let out = gateway(&["replay", "--config", &config, &log])
        .output()
        .unwrap();
    let text = ok(&out);
    for want in [
        "gateway replay of 120 request(s) through",
        "lines: 121 read, 1 unreadable, 0 without a model; window 5m, seed 0",
        "recorded     candidate",
        "model m",
        "provider a",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    let row = |label: &str| {
        text.lines()
            .skip_while(|l| *l != "model m")
            .find(|l| l.trim_start().starts_with(label))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(row("success"), "success 0.00 % 100.00 %");
    assert_eq!(row("errors 503"), "errors 503 60 0");
    assert_eq!(
        row("attempts per request"),
        "attempts per request 1.00 1.10"
    );
    assert_eq!(row("latency p50"), "latency p50 5.0 ms 20.0 ms");
}

#[test]
fn the_shipped_example_runs_and_replays_faithfully_with_its_own_config() {
    let run = |config: &str| {
        let out = gateway(&[
            "replay",
            "--config",
            config,
            "--format",
            "json",
            "examples/replay/access.jsonl",
        ])
        .output()
        .unwrap();
        serde_json::from_str::<serde_json::Value>(&ok(&out)).unwrap()
    };
    // A log recorded by a real gateway while its "openai" upstream hung for 50 s.
    let same = run("examples/replay/recorded.toml");
    assert_eq!(same["lines"]["requests"], 600);
    for (model, f) in same["models"].as_object().unwrap() {
        let (r, c) = (&f["recorded"], &f["candidate"]);
        let rate = |s: &serde_json::Value| s["success_rate"].as_f64().unwrap();
        let p50 = |s: &serde_json::Value| s["p50_ms"].as_f64().unwrap();
        assert!((rate(r) - rate(c)).abs() <= 0.01, "{model}: {r} vs {c}");
        assert!(
            (p50(r) - p50(c)).abs() <= 0.1 * p50(r),
            "{model}: {r} vs {c}"
        );
    }
    assert_eq!(same["providers"]["openai"]["candidate"]["unobserved"], 0);
    // The candidate fails over to the local model and cuts the wait at 2 s.
    let candidate = run("examples/replay/candidate.toml");
    let total = &candidate["total"];
    assert_eq!(total["recorded"]["success_rate"], 0.62);
    assert_eq!(total["candidate"]["success_rate"], 1.0);
}
