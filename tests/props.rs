//! Property tests over everything that parses outside input: request bodies, `retry-after`
//! headers, SSE streams, config text, mock fault parameters, `x-gateway-strategy`.
//! Arbitrary input must never panic, and well-formed input must give the one right answer
//! however it is written (whitespace, escapes, key order) or split (chunk boundaries). The
//! routing strategies' invariants (an order is a permutation; exact weighted counts) hold
//! for any figures.
//!
//! Case counts stay at proptest's default (256) or lower for the slow ones, so the suite
//! stays quick on two cores.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::{Map, Value};

use gateway::config::{Config, MAX_DURATION, Overrides, Size};
use gateway::headers::{MAX_RETRY_AFTER, retry_after, retry_after_at};
use gateway::observe::usage::{SseUsage, Usage};
use gateway::payload::{encode_model, inspect, rewrite};
use gateway::upstream::mock::{Fault, MockOptions};

// ---------------------------------------------------------------------------------------
// JSON bodies written every legal way.

/// Decides how a value is written (whitespace, escapes) from a tape of arbitrary bytes, so
/// proptest can shrink the writing along with the value.
struct Tape<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Tape<'_> {
    fn next(&mut self) -> u8 {
        if self.bytes.is_empty() {
            return 0;
        }
        let b = self.bytes[self.at % self.bytes.len()];
        self.at += 1;
        b
    }

    fn ws(&mut self, out: &mut String) {
        out.push_str(match self.next() % 5 {
            0 | 1 => "",
            2 => " ",
            3 => "\n  ",
            _ => "\t\r\n",
        });
    }
}

/// Writes `s` as a JSON string, escaping some characters as `\uXXXX` (surrogate pairs
/// outside the BMP) and the rest raw where JSON allows.
fn write_str(s: &str, tape: &mut Tape, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let must = c == '"' || c == '\\' || (c as u32) < 0x20;
        if must || tape.next().is_multiple_of(4) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out.push('"');
}

fn write_value(v: &Value, tape: &mut Tape, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&v.to_string()),
        Value::String(s) => write_str(s, tape, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                tape.ws(out);
                write_value(item, tape, out);
                tape.ws(out);
            }
            out.push(']');
        }
        Value::Object(m) => write_object(m.iter(), tape, out),
    }
}

fn write_object<'a>(
    fields: impl Iterator<Item = (&'a String, &'a Value)>,
    tape: &mut Tape,
    out: &mut String,
) {
    out.push('{');
    tape.ws(out);
    for (i, (k, v)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
            tape.ws(out);
        }
        write_str(k, tape, out);
        tape.ws(out);
        out.push(':');
        tape.ws(out);
        write_value(v, tape, out);
        tape.ws(out);
    }
    out.push('}');
}

/// Arbitrary JSON values; nested objects often carry a `"model"` key of their own.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![Just("model".to_string()), ".{0,6}"],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A request body: arbitrary other top-level fields (never a second `model`), the model
/// at an arbitrary position, written with arbitrary whitespace and escapes.
#[derive(Debug, Clone)]
struct Body {
    text: String,
    model: String,
    others: BTreeMap<String, Value>,
}

fn body() -> impl Strategy<Value = Body> {
    (
        prop::collection::btree_map(
            prop_oneof![
                3 => ".{0,8}".prop_filter("one model", |k| k != "model"),
                1 => prop::sample::select(&["stream", "messages", "Model", "model "][..])
                    .prop_map(str::to_string),
            ],
            json_value(),
            0..6,
        ),
        ".{0,24}",
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(others, model, at, tape)| {
            let mut fields: Vec<(String, Value)> =
                others.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let at = at.index(fields.len() + 1);
            fields.insert(at, ("model".into(), Value::String(model.clone())));
            let mut text = String::new();
            let mut tape = Tape {
                bytes: &tape,
                at: 0,
            };
            tape.ws(&mut text);
            write_object(fields.iter().map(|(k, v)| (k, v)), &mut tape, &mut text);
            tape.ws(&mut text);
            Body {
                text,
                model,
                others,
            }
        })
}

proptest! {
    #[test]
    fn inspect_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = inspect(&bytes);
    }

    #[test]
    fn inspect_never_panics_on_json_ish_text(text in r#"[{}\[\]":, a-z0-9\\.\-]{0,64}"#) {
        let _ = inspect(text.as_bytes());
    }

    #[test]
    fn inspect_finds_the_model_however_the_body_is_written(b in body()) {
        let i = inspect(b.text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {}", b.text));
        prop_assert_eq!(&i.model, &b.model);
        let raw: String = serde_json::from_slice(&b.text.as_bytes()[i.model_range.clone()]).unwrap();
        prop_assert_eq!(&raw, &b.model);
        prop_assert_eq!(i.stream, b.others.get("stream") == Some(&Value::Bool(true)));
    }

    #[test]
    fn rewrite_changes_the_top_level_model_and_no_other_byte(b in body(), new in ".{0,24}") {
        let bytes = Bytes::from(b.text.clone());
        let i = inspect(&bytes).unwrap();
        let new_json = encode_model(&new);
        let out = rewrite(&bytes, &i.model_range, &new_json).to_bytes();
        let (start, end) = (i.model_range.start, i.model_range.end);
        let tail = bytes.len() - end;
        prop_assert_eq!(&out[..start], &bytes[..start], "prefix changed");
        prop_assert_eq!(&out[out.len() - tail..], &bytes[end..], "suffix changed");
        if bytes[start..end] != new_json[..] {
            prop_assert_eq!(&out[start..out.len() - tail], &new_json[..]);
        }
        // The result is the same document with only the top-level model replaced: nested
        // `"model"` keys and every other field are untouched.
        let got: Value = serde_json::from_slice(&out).unwrap();
        let mut want: Value = serde_json::from_str(&b.text).unwrap();
        want["model"] = Value::String(new.clone());
        prop_assert_eq!(&got["model"], &Value::String(new));
        prop_assert_eq!(got, want);
    }
}

// ---------------------------------------------------------------------------------------
// retry-after

fn headers(pairs: &[(&'static str, HeaderValue)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.clone());
    }
    h
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

/// Numbers as an upstream might write them: plain, fractional, exponent, huge, negative.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        Just("1e20".to_string()),
        Just("1e309".to_string()),
        Just("-0".to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
    ]
}

proptest! {
    #[test]
    fn retry_after_never_panics_and_stays_bounded(
        a in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        ms in prop::option::of(prop_oneof![
            number_text().prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..40),
        ]),
        now in any::<u64>(),
    ) {
        let mut h = HeaderMap::new();
        for (name, v) in [("retry-after", a), ("retry-after-ms", ms)] {
            if let Some(v) = v.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                h.insert(name, v);
            }
        }
        let now = UNIX_EPOCH.checked_add(Duration::from_secs(now >> 20)).unwrap_or(UNIX_EPOCH);
        for d in [retry_after(&h), retry_after_at(&h, now)].into_iter().flatten() {
            prop_assert!(d <= MAX_RETRY_AFTER, "{d:?}");
        }
    }

    #[test]
    fn numeric_retry_after_is_exact_up_to_the_clamp(secs in any::<u64>(), ms in any::<u64>()) {
        let want = |d: Duration| Some(d.min(MAX_RETRY_AFTER));
        let h = headers(&[("retry-after", value(&secs.to_string()))]);
        prop_assert_eq!(retry_after(&h), want(Duration::from_secs(secs)));
        let h = headers(&[("retry-after-ms", value(&ms.to_string()))]);
        let got = retry_after(&h).unwrap();
        // Milliseconds go through f64: exact to well under a microsecond below the clamp.
        let exact = Duration::from_millis(ms).min(MAX_RETRY_AFTER);
        prop_assert!(got.abs_diff(exact) < Duration::from_micros(1), "{got:?} vs {exact:?}");
    }

    #[test]
    fn fractional_and_negative_retry_after(secs in -1e30f64..1e30f64) {
        let h = headers(&[("retry-after", value(&secs.to_string()))]);
        let got = retry_after(&h);
        if secs < 0.0 {
            prop_assert_eq!(got, None);
        } else {
            let want = Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()));
            prop_assert_eq!(got, Some(want));
        }
    }

    #[test]
    fn http_dates_count_from_now(date in 0u64..253_402_300_800, now in 0u64..253_402_300_800) {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let h = headers(&[("retry-after", value(&httpdate::fmt_http_date(at(date))))]);
        let want = Duration::from_secs(date.saturating_sub(now)).min(MAX_RETRY_AFTER);
        prop_assert_eq!(retry_after_at(&h, at(now)), Some(want));
    }
}

#[test]
fn http_date_one_second_ahead_of_now() {
    let now = SystemTime::now();
    let h = headers(&[(
        "retry-after",
        value(&httpdate::fmt_http_date(now + Duration::from_secs(60))),
    )]);
    let d = retry_after_at(&h, now).unwrap();
    assert!(
        d > Duration::from_secs(58) && d <= Duration::from_secs(60),
        "{d:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The SSE usage scanner

/// Feeds `stream` to a fresh scanner, cut at `cuts` (arbitrary offsets).
fn scan(stream: &[u8], cuts: &[prop::sample::Index]) -> Option<Usage> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    at.sort_unstable();
    let mut s = SseUsage::default();
    let mut from = 0;
    for to in at.into_iter().chain([stream.len()]) {
        s.feed(&stream[from..to]);
        from = to;
    }
    s.last
}

/// One SSE event of a chat stream: content, a comment, a named event, or usage.
fn event() -> impl Strategy<Value = (String, Option<Usage>)> {
    let eol = prop_oneof![Just("\n"), Just("\r\n")];
    prop_oneof![
        (".{0,20}", eol.clone()).prop_map(|(text, eol)| {
            let delta = serde_json::json!({"choices": [{"delta": {"content": text}}]});
            (format!("data: {delta}{eol}{eol}"), None)
        }),
        ("[^\r\n]{0,20}", eol.clone()).prop_map(|(c, eol)| (format!(": {c}{eol}{eol}"), None)),
        (any::<u64>(), any::<u64>(), eol.clone(), any::<bool>()).prop_map(
            |(p, c, eol, responses)| {
                let (line, usage) = if responses {
                    let v = serde_json::json!({"type": "response.completed",
                    "response": {"usage": {"input_tokens": p, "output_tokens": c}}});
                    (
                        format!("event: response.completed{eol}data: {v}{eol}{eol}"),
                        Usage {
                            prompt: p,
                            completion: c,
                        },
                    )
                } else {
                    let v = serde_json::json!({"choices": [],
                    "usage": {"prompt_tokens": p, "completion_tokens": c}});
                    (
                        format!("data:{v}{eol}{eol}"),
                        Usage {
                            prompt: p,
                            completion: c,
                        },
                    )
                };
                (line, Some(usage))
            }
        ),
    ]
}

proptest! {
    #[test]
    fn sse_scanner_never_panics(
        stream in prop::collection::vec(any::<u8>(), 0..512),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let _ = scan(&stream, &cuts);
    }

    #[test]
    fn sse_usage_is_the_same_however_the_stream_is_split(
        events in prop::collection::vec(event(), 0..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let stream: String = events.iter().map(|(e, _)| e.as_str()).collect::<String>() + "data: [DONE]\n\n";
        let want = events.iter().rev().find_map(|(_, u)| *u);
        prop_assert_eq!(scan(stream.as_bytes(), &[]), want);
        prop_assert_eq!(scan(stream.as_bytes(), &cuts), want);
    }
}

// ---------------------------------------------------------------------------------------
// Config text

fn no_env(_: &str) -> Option<String> {
    None
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Durations a valid config may hold, the bounds included.
fn valid_duration() -> impl Strategy<Value = String> {
    let unit = prop::sample::select(&["ms", "s", "m", "h"][..]);
    prop_oneof![
        6 => (1u64..1000, unit).prop_map(|(n, u)| format!("{n}{u}")),
        1 => prop::sample::select(&["0s", "1ns", "100days", "2400h", "99days 23h 59m"][..])
            .prop_map(str::to_string),
    ]
}

/// Durations as written in a config, sane or not.
fn any_duration() -> impl Strategy<Value = String> {
    let unit =
        prop::sample::select(&["ns", "ms", "s", "m", "h", "days", "w", "y", "", "parsecs"][..]);
    prop_oneof![
        3 => valid_duration(),
        1 => (any::<u64>(), unit).prop_map(|(n, u)| format!("{n}{u}")),
        1 => prop::sample::select(&["99999999999999h", "500y", "100days 1ns", "-1s", "1e9s"][..])
            .prop_map(str::to_string),
        1 => "\\PC{0,10}",
    ]
}

/// Any TOML value, for keys that expect something else.
fn any_toml() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "\\PC{0,12}".prop_map(|s| toml_str(&s)),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ]
}

/// What a key expects.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Dur,
    /// A `u32` (or wider) count.
    Count,
    Ratio,
    Size,
    /// One of the valid choices, or (when wild) one of the invalid ones.
    Str(&'static [&'static str], &'static [&'static str]),
    Bool,
}

/// A value for a key of `kind`: in its valid range (bounds included), or, when `wild`, of
/// the right type but any value.
fn typed(kind: Kind, wild: bool) -> BoxedStrategy<String> {
    match (kind, wild) {
        (Kind::Dur, false) => valid_duration().prop_map(|d| toml_str(&d)).boxed(),
        (Kind::Dur, true) => any_duration().prop_map(|d| toml_str(&d)).boxed(),
        (Kind::Count, false) => {
            prop_oneof![4 => 1i64..5, 1 => Just(i64::from(u32::MAX)), 1 => 1..=i64::from(u32::MAX)]
                .prop_map(|n| n.to_string())
                .boxed()
        }
        (Kind::Count, true) => prop_oneof![0i64..5, any::<i64>(), Just(i64::MAX)]
            .prop_map(|n| n.to_string())
            .boxed(),
        (Kind::Ratio, false) => (0.0f64..=1.0).prop_map(|f| format!("{f:?}")).boxed(),
        (Kind::Ratio, true) => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}"))
            .boxed(),
        (Kind::Size, false) => prop_oneof![
            (0u64..1 << 20).prop_map(|n| toml_str(&format!("{n}KiB"))),
            (0..=i64::MAX).prop_map(|n| n.to_string()),
            Just(toml_str("16GiB")),
        ]
        .boxed(),
        (Kind::Size, true) => prop_oneof![
            any::<u64>().prop_map(|n| toml_str(&format!("{n}MiB"))),
            any::<i64>().prop_map(|n| n.to_string()),
            Just(toml_str("1e30GiB")),
            Just(toml_str("99999999999999999999999GiB")),
            Just(toml_str("-1B")),
        ]
        .boxed(),
        (Kind::Str(valid, _), false) => prop::sample::select(valid).prop_map(toml_str).boxed(),
        (Kind::Str(valid, invalid), true) => prop::sample::select([valid, invalid].concat())
            .prop_map(toml_str)
            .boxed(),
        (Kind::Bool, _) => any::<bool>().prop_map(|b| b.to_string()).boxed(),
    }
}

/// Every key the schema knows, by table, with the kind of value it expects. The provider
/// `p` and the alias `m` are written apart (they must hang together to validate).
const SECTIONS: &[(&str, &[(&str, Kind)])] = &[
    (
        "server",
        &[
            (
                "listen",
                Kind::Str(&["127.0.0.1:0", "[::1]:65535"], &["0.0.0.0:1", "nope"]),
            ),
            ("admin_key", Kind::Str(&["", "k"], &[])),
            ("max_body_size", Kind::Size),
            ("header_read_timeout", Kind::Dur),
            ("shutdown_timeout", Kind::Dur),
            ("allow_unauthenticated", Kind::Bool),
        ],
    ),
    (
        "log",
        &[
            (
                "level",
                Kind::Str(&["info", "debug", "gateway=trace"], &["[[", ""]),
            ),
            ("format", Kind::Str(&["text", "json"], &["xml"])),
        ],
    ),
    (
        "defaults.timeouts",
        &[
            ("connect", Kind::Dur),
            ("first_byte", Kind::Dur),
            ("idle", Kind::Dur),
            ("total", Kind::Dur),
        ],
    ),
    (
        "defaults.limits",
        &[
            ("max_concurrency", Kind::Count),
            ("queue_size", Kind::Count),
            ("queue_timeout", Kind::Dur),
        ],
    ),
    (
        "defaults.pool",
        &[
            ("max_idle_per_host", Kind::Count),
            ("idle_timeout", Kind::Dur),
            ("http2", Kind::Str(&["auto", "always", "never"], &["maybe"])),
        ],
    ),
    (
        "defaults.breaker",
        &[
            ("failure_threshold", Kind::Count),
            ("cooldown", Kind::Dur),
            ("max_cooldown", Kind::Dur),
            ("half_open_probes", Kind::Count),
        ],
    ),
    (
        "defaults.retry",
        &[
            ("max_attempts", Kind::Count),
            ("backoff", Kind::Dur),
            ("max_backoff", Kind::Dur),
            ("budget_ratio", Kind::Ratio),
            ("budget_min_per_sec", Kind::Count),
        ],
    ),
    (
        "routing",
        &[("ewma_alpha", Kind::Ratio), ("success_window", Kind::Dur)],
    ),
    (
        "providers.p.timeouts",
        &[("idle", Kind::Dur), ("total", Kind::Dur)],
    ),
    (
        "providers.p.breaker",
        &[("cooldown", Kind::Dur), ("max_cooldown", Kind::Dur)],
    ),
];

/// One key written: its table (an index into [`SECTIONS`]), name and value.
type Entry = (usize, &'static str, String);

/// Config text from the known keys, each present or not. Tame: every value in its valid
/// range (so many configs validate and get compiled, extremes included). Wild: any value
/// of the key's type, and now and then one of another type.
fn config_text(wild: bool) -> impl Strategy<Value = String> {
    let mut keys: Vec<BoxedStrategy<Option<Entry>>> = Vec::new();
    for (si, (_, fields)) in SECTIONS.iter().enumerate() {
        for (key, kind) in fields.iter() {
            let v = if wild {
                prop_oneof![6 => typed(*kind, true), 1 => any_toml()].boxed()
            } else {
                typed(*kind, false)
            };
            keys.push(
                prop::option::weighted(0.5, v)
                    .prop_map(move |v| v.map(|v| (si, *key, v)))
                    .boxed(),
            );
        }
    }
    let provider = prop_oneof![
        prop::option::of(typed(Kind::Dur, wild)).prop_map(|l| format!(
            "kind = \"mock\"\n{}",
            l.map(|l| format!("latency = {l}\n")).unwrap_or_default()
        )),
        Just("base_url = \"http://127.0.0.1:1/v1\"\n".to_string()),
        Just(
            "base_url = \"https://api.example.com/v1\"\napi_keys = [\"k1\", \"k2\"]\n".to_string()
        ),
    ];
    let strategy = prop::sample::select(&["failover", "weighted", "speed", "cost", "balanced"][..]);
    (keys, provider, strategy).prop_map(|(set, provider, strategy)| {
        let mut text = String::new();
        for (si, (section, _)) in SECTIONS.iter().enumerate() {
            let present: Vec<_> = set.iter().flatten().filter(|(s, _, _)| *s == si).collect();
            if present.is_empty() {
                continue;
            }
            text.push_str(&format!("[{section}]\n"));
            for (_, key, v) in present {
                text.push_str(&format!("{key} = {v}\n"));
            }
        }
        text.push_str(&format!(
            "[providers.p]\n{provider}[models.m]\nstrategy = \"{strategy}\"\ntargets = [\"p/x\"]\n"
        ));
        text
    })
}

/// Parses `text`; when it validates, checks every duration is within the limit and that it
/// compiles (or is refused) without a panic. True when it validated.
fn parse_and_compile(text: &str) -> Result<bool, TestCaseError> {
    let Ok(c) = Config::parse_with(text, &Overrides::default(), &no_env) else {
        return Ok(false);
    };
    let s = &c.server;
    prop_assert!(s.header_read_timeout <= MAX_DURATION && s.shutdown_timeout <= MAX_DURATION);
    for p in c.providers.values() {
        let st = c.provider_settings(p);
        for d in [
            st.timeouts.connect,
            st.timeouts.first_byte,
            st.timeouts.idle,
            st.timeouts.total,
            st.limits.queue_timeout,
            st.pool.idle_timeout,
            st.breaker.cooldown,
            st.breaker.max_cooldown,
            st.retry.backoff,
            st.retry.max_backoff,
            p.latency.unwrap_or_default(),
        ] {
            prop_assert!(d <= MAX_DURATION, "{d:?} in\n{text}");
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let _ = gateway::runtime::Runtime::build(c, 1);
    Ok(true)
}

proptest! {
    #[test]
    fn config_parse_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = Config::parse_with(&text, &Overrides::default(), &no_env);
    }

    #[test]
    fn config_parse_never_panics_on_toml_ish_text(text in r#"[\[\]a-z_.= "0-9\n{},]{0,160}"#) {
        let _ = Config::parse_with(&text, &Overrides::default(), &no_env);
    }
}

proptest! {
    // Each case compiles a runtime (HTTP clients, TLS roots): fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn known_keys_with_in_range_values_compile(text in config_text(false)) {
        parse_and_compile(&text)?;
    }

    #[test]
    fn known_keys_with_any_values_are_refused_or_compile(text in config_text(true)) {
        parse_and_compile(&text)?;
    }
}

/// The tame generator is worth running: most of its configs validate (and so compile).
#[test]
fn in_range_configs_mostly_validate() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = config_text(false);
    let mut valid = 0;
    for _ in 0..100 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        if Config::parse_with(&text, &Overrides::default(), &no_env).is_ok() {
            valid += 1;
        }
    }
    assert!(valid >= 30, "only {valid} of 100 in-range configs validate");
}

#[test]
fn config_durations_at_and_past_the_limit() {
    let with = |d: &str| {
        Config::parse_with(
            &format!(
                "[providers.p]\nkind = \"mock\"\nlatency = {}\n",
                toml_str(d)
            ),
            &Overrides::default(),
            &no_env,
        )
    };
    assert!(with("100days").is_ok());
    for d in [
        "100days 1ns",
        "500y",
        "99999999999999h",
        "18446744073709551615s",
    ] {
        let e = with(d).unwrap_err();
        assert_eq!(e.key, "providers.p.latency", "{d}");
    }
}

// ---------------------------------------------------------------------------------------
// Sizes and mock fault parameters

proptest! {
    #[test]
    fn size_parse_never_panics(s in "\\PC{0,24}") {
        let _ = Size::parse(&s);
    }

    #[test]
    fn sizes_in_range_are_exact(n in 0u64..(1 << 33), unit in prop::sample::select(
        &[("", 1u64), ("B", 1), ("KB", 1000), ("KiB", 1024), ("MB", 1_000_000), ("MiB", 1 << 20), ("GiB", 1 << 30)][..]
    )) {
        prop_assert_eq!(Size::parse(&format!("{n}{}", unit.0)), Some(Size(n * unit.1)));
    }

    #[test]
    fn mock_parameters_never_panic_and_stay_bounded(
        fault in "\\PC{0,30}",
        latency in prop_oneof![any_duration(), "\\PC{0,12}"],
        chunks in "\\PC{0,12}",
        interval in prop_oneof![any_duration(), "\\PC{0,12}"],
    ) {
        let _ = fault.parse::<Fault>();
        let mut h = HeaderMap::new();
        for (name, v) in [
            (gateway::upstream::mock::FAULT_HEADER, fault),
            (gateway::upstream::mock::LATENCY_HEADER, latency),
            (gateway::upstream::mock::CHUNKS_HEADER, chunks),
            (gateway::upstream::mock::CHUNK_INTERVAL_HEADER, interval),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(name, v);
            }
        }
        if let Ok(o) = MockOptions::default().with_headers(&h) {
            prop_assert!(o.latency <= MAX_DURATION && o.chunk_interval <= MAX_DURATION);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Routing strategies

fn figures() -> impl Strategy<Value = gateway::policy::strategy::Figures> {
    (
        0u32..5,
        prop_oneof![Just(0.0), 0.0f64..1e6],
        prop::option::of(0.0f64..1e7),
        0u32..300,
        1u32..300,
        prop::option::of(0.0f64..=1.0),
    )
        .prop_map(
            |(weight, cost, latency_ms, in_flight, max_concurrency, success_rate)| {
                gateway::policy::strategy::Figures {
                    weight,
                    cost,
                    latency_ms,
                    in_flight,
                    max_concurrency,
                    success_rate,
                }
            },
        )
}

fn score_weights() -> impl Strategy<Value = gateway::config::ScoreWeights> {
    (0.0f64..10.0, 0.0f64..10.0, 0.0f64..10.0)
        .prop_map(|(s, l, c)| gateway::config::ScoreWeights::new(s, l, c))
}

proptest! {
    #[test]
    fn every_strategy_orders_a_permutation(
        targets in prop::collection::vec(figures(), 0..12),
        w in score_weights(),
        picks in 0usize..20,
    ) {
        use gateway::config::{RoutingConfig, Strategy};
        use gateway::policy::strategy::{order, peek_order, scores, Swrr};
        let routing = RoutingConfig { balanced: w, ..RoutingConfig::default() };
        let swrr = Swrr::default();
        for _ in 0..picks {
            order(Strategy::Weighted, &targets, &routing, &swrr);
        }
        for st in Strategy::ALL {
            let peeked = peek_order(st, &targets, &routing, &swrr);
            let o = order(st, &targets, &routing, &swrr);
            prop_assert_eq!(&peeked, &o, "{:?}", st);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..targets.len()).collect::<Vec<_>>());
        }
        // Scores are finite, and the order is by descending score, ties in configured order.
        let s = scores(&targets, w);
        prop_assert!(s.iter().all(|x| x.is_finite()));
        let o = order(Strategy::Balanced, &targets, &routing, &swrr);
        for pair in o.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            prop_assert!(s[a] > s[b] || (s[a] == s[b] && a < b), "{:?} {:?}", s, o);
        }
    }

    #[test]
    fn weighted_counts_are_exact_over_any_run(
        weights in prop::collection::vec(0u32..6, 1..8),
        start in 0usize..40,
        k in 1usize..3,
    ) {
        let sum: u32 = weights.iter().sum();
        prop_assume!(sum > 0);
        let swrr = gateway::policy::strategy::Swrr::default();
        for _ in 0..start {
            swrr.pick(&weights);
        }
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..k * sum as usize {
            counts[swrr.pick(&weights)] += 1;
        }
        let want: Vec<u32> = weights.iter().map(|w| w * k as u32).collect();
        prop_assert_eq!(counts, want);
    }

    #[test]
    fn strategy_header_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            let parsed = gateway::runtime::route::parse_strategy_header(&v);
            let named = std::str::from_utf8(&bytes).ok().and_then(|s| {
                gateway::config::Strategy::from_name(s.trim())
            });
            prop_assert_eq!(parsed.ok(), named);
        }
    }
}
