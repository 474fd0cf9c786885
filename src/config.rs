//! Configuration: the TOML schema, its defaults, `${VAR}` interpolation and validation.
//!
//! Invariants: a [`Config`] that [`Config::load`] returns has passed [`Config::validate`],
//! so later stages (compiling the [`crate::runtime::Runtime`]) never see a target naming an
//! unknown provider, a zero concurrency limit, an unparsable URL or a duration over
//! [`MAX_DURATION`] (100 days, so `Instant + duration` cannot overflow). Every error names the
//! file, a dotted key path (`models.coder.targets[1]`) and what to do about it. Files the
//! config points at (the `[server.tls]` pair, a provider's `ca_file`) are read and checked
//! when the config is compiled ([`crate::tls`]), with errors of the same shape, so
//! `gateway check` and a reload refuse them too.
//!
//! Per-provider sections (`timeouts`, `limits`, `pool`, `breaker`, `retry`) are read as
//! *patches* whose keys are all optional; `[defaults.*]` patches the built-in defaults and
//! each provider's patch is applied on top of that (see [`Config::provider_settings`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// A configuration error: which file, which key, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {}{message}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ConfigError {
    /// The file the error is in (as given on the command line).
    pub file: String,
    /// Dotted key path with indexes, e.g. `models.coder.targets[1]`; empty for file-level errors.
    pub key: String,
    /// What is wrong, and the fix.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: String::new(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same error, attributed to `file`.
    pub fn in_file(mut self, file: &Path) -> Self {
        self.file = file.display().to_string();
        self
    }
}

/// Declares a resolved settings struct with built-in defaults, and its patch: the same keys,
/// all optional, as written in `[defaults.X]` or `[providers.P.X]`.
macro_rules! section {
    (
        $(#[$meta:meta])* $name:ident / $patch:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name { $( #[doc = concat!("`", stringify!($field), "`")] pub $field: $ty ),* }

        impl Default for $name {
            fn default() -> Self { Self { $( $field: $default ),* } }
        }

        #[doc = concat!("Optional overrides of [`", stringify!($name), "`], as written in the file.")]
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $patch { $( $(#[$fmeta])* #[serde(default)] pub $field: Option<$ty> ),* }

        impl $patch {
            /// `base` with every key this patch sets replaced.
            pub fn apply(&self, base: &$name) -> $name {
                $name { $( $field: self.$field.clone().unwrap_or_else(|| base.$field.clone()) ),* }
            }
        }
    };
}

section! {
    /// Upstream timeouts; each cuts a different kind of hang.
    Timeouts / TimeoutsPatch {
        #[serde(deserialize_with = "opt_duration")] connect: Duration = Duration::from_secs(5),
        #[serde(deserialize_with = "opt_duration")] first_byte: Duration = Duration::from_secs(60),
        #[serde(deserialize_with = "opt_duration")] first_token: Duration = Duration::from_secs(60),
        #[serde(deserialize_with = "opt_duration")] idle: Duration = Duration::from_secs(30),
        #[serde(deserialize_with = "opt_duration")] total: Duration = Duration::from_secs(600),
    }
}

section! {
    /// Per-provider bulkhead: concurrency cap and bounded wait queue.
    Limits / LimitsPatch {
        max_concurrency: u32 = 1024,
        queue_size: u32 = 1024,
        #[serde(deserialize_with = "opt_duration")] queue_timeout: Duration = Duration::from_secs(10),
    }
}

section! {
    /// Upstream connection pool.
    Pool / PoolPatch {
        max_idle_per_host: usize = 256,
        #[serde(deserialize_with = "opt_duration")] idle_timeout: Duration = Duration::from_secs(90),
        http2: Http2Mode = Http2Mode::Auto,
    }
}

section! {
    /// Circuit breaker.
    Breaker / BreakerPatch {
        failure_threshold: u32 = 3,
        #[serde(deserialize_with = "opt_duration")] cooldown: Duration = Duration::from_secs(60),
        #[serde(deserialize_with = "opt_duration")] max_cooldown: Duration = Duration::from_secs(600),
        half_open_probes: u32 = 1,
    }
}

section! {
    /// Retries and the retry budget.
    Retry / RetryPatch {
        max_attempts: u32 = 2,
        #[serde(deserialize_with = "opt_duration")] backoff: Duration = Duration::from_millis(250),
        #[serde(deserialize_with = "opt_duration")] max_backoff: Duration = Duration::from_secs(4),
        budget_ratio: f64 = 0.2,
        budget_min_per_sec: u32 = 10,
    }
}

/// HTTP/2 use towards a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Http2Mode {
    /// Negotiated by ALPN on TLS; HTTP/1.1 on plain http.
    Auto,
    /// HTTP/2 only (h2c prior knowledge on plain http).
    Always,
    /// HTTP/1.1 only.
    Never,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    #[serde(default)]
    pub server: ServerConfig,
    /// `[log]`
    #[serde(default)]
    pub log: LogConfig,
    /// `[defaults.*]`
    #[serde(default)]
    pub defaults: Defaults,
    /// `[providers.NAME]`
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `[models.ALIAS]`
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// `[routing]`
    #[serde(default)]
    pub routing: RoutingConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Client keys (`Authorization: Bearer <key>`); empty = no client auth.
    pub api_keys: Vec<String>,
    /// Guards `/admin/*`; empty = loopback peers only.
    pub admin_key: String,
    /// Largest request (and buffered response) body.
    pub max_body_size: Size,
    /// Slow clients are cut off after this long without complete headers.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// Drain budget on SIGTERM.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// Allow a non-loopback `listen` with no `api_keys`.
    pub allow_unauthenticated: bool,
    /// `[server.tls]`: serve HTTPS instead of plain HTTP.
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: the listener's certificate chain and private key, both PEM files, read
/// at start and again on every reload (the pair is checked by [`crate::tls`] when the
/// config is compiled). Relative paths are relative to the working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    #[serde(default)]
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    #[serde(default)]
    pub key: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4000".into(),
            api_keys: Vec::new(),
            admin_key: String::new(),
            max_body_size: Size(16 << 20),
            header_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            allow_unauthenticated: false,
            tls: None,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `gateway=debug,hyper=info`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// Path of the JSON Lines access log; empty = off.
    pub access_log: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            access_log: String::new(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[defaults.*]`: patches applied to the built-in defaults, inherited by every provider.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// `[defaults.timeouts]`
    #[serde(default)]
    pub timeouts: TimeoutsPatch,
    /// `[defaults.limits]`
    #[serde(default)]
    pub limits: LimitsPatch,
    /// `[defaults.pool]`
    #[serde(default)]
    pub pool: PoolPatch,
    /// `[defaults.breaker]`
    #[serde(default)]
    pub breaker: BreakerPatch,
    /// `[defaults.retry]`
    #[serde(default)]
    pub retry: RetryPatch,
}

/// What answers for a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible HTTP server.
    #[default]
    Openai,
    /// In-process canned answers; no network.
    Mock,
    /// The Anthropic Messages API (`{base_url}/v1/messages`, key in `x-api-key`).
    Anthropic,
}

impl ProviderKind {
    /// `openai`, `mock` or `anthropic`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Mock => "mock",
            ProviderKind::Anthropic => "anthropic",
        }
    }
}

/// `base_url` of a `kind = "anthropic"` provider that sets none.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// `[providers.NAME]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `openai` (default) or `mock`.
    #[serde(default)]
    pub kind: ProviderKind,
    /// Base URL including the API prefix, e.g. `https://api.openai.com/v1`.
    pub base_url: Option<String>,
    /// Upstream keys; several rotate round-robin.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// How long a key answered 401, 402 or 403 is set aside (default 30 minutes).
    #[serde(default, deserialize_with = "opt_duration")]
    pub key_cooldown: Option<Duration>,
    /// PEM bundle of the CAs that upstream TLS to this provider trusts *instead of* the
    /// public roots; empty = the public (webpki) roots.
    #[serde(default)]
    pub ca_file: String,
    /// Extra headers sent on every upstream request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Overrides of `[defaults.timeouts]`.
    #[serde(default)]
    pub timeouts: TimeoutsPatch,
    /// Overrides of `[defaults.limits]`.
    #[serde(default)]
    pub limits: LimitsPatch,
    /// Overrides of `[defaults.pool]`.
    #[serde(default)]
    pub pool: PoolPatch,
    /// Overrides of `[defaults.breaker]`.
    #[serde(default)]
    pub breaker: BreakerPatch,
    /// Overrides of `[defaults.retry]`.
    #[serde(default)]
    pub retry: RetryPatch,
    /// `kind = "mock"` only: delay before each answer.
    #[serde(default, deserialize_with = "opt_duration")]
    pub latency: Option<Duration>,
}

/// Routing strategy of a model alias (contract §6 "Routing strategies"): the order in which
/// one request tries the alias's targets. Whatever the order, the request walks it as a
/// failover chain: targets that cannot be tried are passed over where they stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The configured order.
    #[default]
    Failover,
    /// Smooth weighted round-robin (nginx's algorithm) over `weight` picks the first target;
    /// the others follow in configured order. Over any k·Σweight consecutive requests each
    /// target goes first exactly k·weight times.
    Weighted,
    /// Descending score under `[routing] speed` weights (latency counts most).
    Speed,
    /// Descending score under `[routing] cost` weights (price counts most).
    Cost,
    /// Descending score under `[routing] balanced` weights.
    Balanced,
}

impl Strategy {
    /// Every strategy, in the order the docs list them.
    pub const ALL: [Strategy; 5] = [
        Strategy::Failover,
        Strategy::Weighted,
        Strategy::Speed,
        Strategy::Cost,
        Strategy::Balanced,
    ];

    /// The name used in the config, the `x-gateway-strategy` header and `/admin/models`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Failover => "failover",
            Strategy::Weighted => "weighted",
            Strategy::Speed => "speed",
            Strategy::Cost => "cost",
            Strategy::Balanced => "balanced",
        }
    }

    /// The strategy named `s`, compared ASCII case-insensitively (a header value, unlike the
    /// config, is typed by hand in agents and scripts).
    pub fn from_name(s: &str) -> Option<Strategy> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    /// True for the strategies that sort by score (`speed`, `cost`, `balanced`).
    pub fn is_scored(self) -> bool {
        matches!(self, Strategy::Speed | Strategy::Cost | Strategy::Balanced)
    }
}

/// `[routing]`: the statistics and weights behind the `speed`, `cost` and `balanced`
/// strategies (contract §6). A weights table given in the file replaces the whole default
/// set: keys it leaves out weigh 0 (`speed = { latency = 1 }` is latency alone).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Weight of the newest sample in a target's latency EWMA, in (0, 1].
    pub ewma_alpha: f64,
    /// A target's success rate counts the verdicts of this sliding window.
    #[serde(deserialize_with = "duration")]
    pub success_window: Duration,
    /// Weights of the `balanced` strategy.
    pub balanced: ScoreWeights,
    /// Weights of the `speed` strategy.
    pub speed: ScoreWeights,
    /// Weights of the `cost` strategy.
    pub cost: ScoreWeights,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            ewma_alpha: 0.2,
            success_window: Duration::from_secs(300),
            balanced: ScoreWeights::new(0.4, 0.3, 0.3),
            speed: ScoreWeights::new(0.2, 0.6, 0.2),
            cost: ScoreWeights::new(0.2, 0.2, 0.6),
        }
    }
}

impl RoutingConfig {
    /// The score weights of a scored strategy; `None` for `failover` and `weighted`.
    pub fn weights(&self, s: Strategy) -> Option<ScoreWeights> {
        match s {
            Strategy::Failover | Strategy::Weighted => None,
            Strategy::Speed => Some(self.speed),
            Strategy::Cost => Some(self.cost),
            Strategy::Balanced => Some(self.balanced),
        }
    }
}

/// Weights of the three terms of a target's score (contract §6):
/// `success · success_rate + latency · (1 − latency / max_latency) + cost · (1 − cost / max_cost)`.
/// Only their ratios matter; a key left out of a table in the file weighs 0.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreWeights {
    /// Weight of the success rate.
    pub success: f64,
    /// Weight of the latency term.
    pub latency: f64,
    /// Weight of the cost term.
    pub cost: f64,
}

impl ScoreWeights {
    /// Weights `success`, `latency`, `cost`.
    pub const fn new(success: f64, latency: f64, cost: f64) -> Self {
        Self {
            success,
            latency,
            cost,
        }
    }
}

/// `[models.ALIAS]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// How targets are ordered.
    #[serde(default)]
    pub strategy: Strategy,
    /// `"provider/model"` strings or `{ provider, model, ... }` tables.
    pub targets: Vec<TargetConfig>,
}

/// One target of a model alias.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// Provider name.
    pub provider: String,
    /// Model name sent upstream.
    pub model: String,
    /// Relative weight (`weighted`, `balanced`).
    pub weight: u32,
    /// USD per million prompt tokens.
    pub input_cost: Option<f64>,
    /// USD per million completion tokens.
    pub output_cost: Option<f64>,
}

fn one() -> u32 {
    1
}

impl TargetConfig {
    /// Splits `"P/M"` at the first `/`.
    pub fn parse(s: &str) -> Option<Self> {
        let (provider, model) = s.split_once('/')?;
        if provider.is_empty() || model.is_empty() {
            return None;
        }
        Some(Self {
            provider: provider.into(),
            model: model.into(),
            weight: 1,
            input_cost: None,
            output_cost: None,
        })
    }
}

// Targets come as a string or a table; a hand-written visitor gives a precise error for each
// form where `#[serde(untagged)]` would only say "did not match any variant".
impl<'de> Deserialize<'de> for TargetConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = TargetConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#""provider/model" or { provider = "...", model = "..." }"#)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TargetConfig, E> {
                TargetConfig::parse(s).ok_or_else(|| {
                    E::custom(format!(
                        "target {s:?} must read \"provider/model\", e.g. \"openai/gpt-4o\""
                    ))
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<TargetConfig, A::Error> {
                TargetTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| {
                    TargetConfig {
                        provider: t.provider,
                        model: t.model,
                        weight: t.weight,
                        input_cost: t.input_cost,
                        output_cost: t.output_cost,
                    }
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetTable {
    provider: String,
    model: String,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    input_cost: Option<f64>,
    #[serde(default)]
    output_cost: Option<f64>,
}

/// A byte size: `"16MiB"`, `"512KB"`, or an integer number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    /// Parses `"16MiB"`, `"1.5GB"`, `"100"`, `"100B"`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "kib" => 1 << 10,
            "mb" | "m" => 1_000_000,
            "mib" => 1 << 20,
            "gb" | "g" => 1_000_000_000,
            "gib" => 1 << 30,
            _ => return None,
        };
        let bytes = num * mult as f64;
        // `as u64` would saturate silently: a size past 2^64 bytes is refused instead.
        (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(Size(bytes as u64))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a size such as "16MiB", "512KB", or a number of bytes"#)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                Size::parse(s).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size {s:?}: write a number and a unit, like \"16MiB\" or \"512KB\""
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The longest duration a config may name (contract §2). Anything longer is a typo, and the
/// bound keeps every `Instant + duration` made from the config far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 24 * 3600);

fn parse_duration<E: de::Error>(s: &str) -> Result<Duration, E> {
    let d = humantime::parse_duration(s).map_err(|_| {
        E::custom(format!(
            "invalid duration {s:?}: write a number and a unit, like \"250ms\", \"30s\" or \"10m\""
        ))
    })?;
    if d > MAX_DURATION {
        return Err(E::custom(format!(
            "invalid duration {s:?}: at most 100 days"
        )));
    }
    Ok(d)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Command-line values that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--log-level`
    pub log_level: Option<String>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

/// Everything that applies to one provider once defaults are merged in.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Bulkhead.
    pub limits: Limits,
    /// Connection pool.
    pub pool: Pool,
    /// Circuit breaker.
    pub breaker: Breaker,
    /// Retries.
    pub retry: Retry,
    /// How long a key the provider refused (401, 402, 403) is set aside.
    pub key_cooldown: Duration,
}

/// `key_cooldown` when the config sets none.
pub const DEFAULT_KEY_COOLDOWN: Duration = Duration::from_secs(30 * 60);

impl Config {
    /// Reads, interpolates, parses and validates `path`, applying `overrides` first.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "",
                format!(
                    "cannot read the config file: {e} (pass --config PATH or set GATEWAY_CONFIG)"
                ),
            )
            .in_file(path)
        })?;
        Self::parse_with(&text, overrides, &|name| std::env::var(name).ok())
            .map_err(|e| e.in_file(path))
    }

    /// Parses and validates TOML text; `env` resolves `${NAME}` values. The returned error's
    /// `file` is empty.
    pub fn parse_with(
        text: &str,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let msg = e.to_string();
            ConfigError::new("", format!("invalid TOML: {}", msg.trim_end()))
        })?;
        interpolate_table(&mut table, "", env)?;
        let mut config: Config = serde_path_to_error::deserialize(table).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            schema_error(key, e.into_inner().to_string())
        })?;
        if let Some(listen) = &overrides.listen {
            config.server.listen = listen.clone();
        }
        if let Some(level) = &overrides.log_level {
            config.log.level = level.clone();
        }
        if let Some(format) = overrides.log_format {
            config.log.format = format;
        }
        for p in config.providers.values_mut() {
            if p.kind == ProviderKind::Anthropic && p.base_url.is_none() {
                p.base_url = Some(ANTHROPIC_BASE_URL.to_string());
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The settings of provider `name`: built-in defaults, patched by `[defaults.*]`, patched
    /// by the provider's own sections.
    pub fn provider_settings(&self, p: &ProviderConfig) -> ProviderSettings {
        let d = &self.defaults;
        ProviderSettings {
            timeouts: p.timeouts.apply(&d.timeouts.apply(&Timeouts::default())),
            limits: p.limits.apply(&d.limits.apply(&Limits::default())),
            pool: p.pool.apply(&d.pool.apply(&Pool::default())),
            breaker: p.breaker.apply(&d.breaker.apply(&Breaker::default())),
            retry: p.retry.apply(&d.retry.apply(&Retry::default())),
            key_cooldown: p.key_cooldown.unwrap_or(DEFAULT_KEY_COOLDOWN),
        }
    }

    /// The listen address, parsed (validation guarantees it parses).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!(
                    "{:?} is not an IP:port address; write e.g. \"127.0.0.1:4000\"",
                    self.server.listen
                ),
            )
        })
    }

    /// Checks everything serde cannot: references between sections, ranges, addresses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addr = self.listen_addr()?;
        if !addr.ip().is_loopback()
            && self.server.api_keys.is_empty()
            && !self.server.allow_unauthenticated
        {
            return Err(ConfigError::new(
                "server.listen",
                format!(
                    "{addr} is reachable from other machines but server.api_keys is empty; \
                     set server.api_keys, or set server.allow_unauthenticated = true to serve without client auth"
                ),
            ));
        }
        for (i, k) in self.server.api_keys.iter().enumerate() {
            if k.is_empty() {
                return Err(ConfigError::new(
                    format!("server.api_keys[{i}]"),
                    "empty key; remove it or set a value",
                ));
            }
        }
        if let Some(tls) = &self.server.tls {
            for (key, path, what) in [
                ("cert", &tls.cert, "the PEM certificate chain"),
                ("key", &tls.key, "the PEM private key"),
            ] {
                if path.trim().is_empty() {
                    return Err(ConfigError::new(
                        format!("server.tls.{key}"),
                        format!(
                            "missing; set the path of {what} (or remove [server.tls] to serve plain HTTP)"
                        ),
                    ));
                }
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::new(
                "log.level",
                format!(
                    "invalid level {:?} ({e}); use error, warn, info, debug or trace",
                    self.log.level
                ),
            ));
        }

        if self.providers.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "no providers configured; add a [providers.NAME] table (kind = \"mock\" needs no network)",
            ));
        }
        validate_patches(
            "defaults",
            &self.defaults.limits,
            &self.defaults.breaker,
            &self.defaults.retry,
        )?;
        for (name, p) in &self.providers {
            let at = format!("providers.{}", key_segment(name));
            if name.is_empty() || name.contains('/') {
                return Err(ConfigError::new(
                    at,
                    "a provider name must be non-empty and contain no '/'",
                ));
            }
            validate_provider(&at, p)?;
            validate_patches(&at, &p.limits, &p.breaker, &p.retry)?;
            let s = self.provider_settings(p);
            if s.breaker.cooldown > s.breaker.max_cooldown {
                return Err(ConfigError::new(
                    format!("{at}.breaker.cooldown"),
                    format!(
                        "cooldown ({}) exceeds max_cooldown ({}); raise max_cooldown or lower cooldown",
                        humantime::format_duration(s.breaker.cooldown),
                        humantime::format_duration(s.breaker.max_cooldown)
                    ),
                ));
            }
        }
        validate_routing(&self.routing)?;
        for (alias, m) in &self.models {
            let at = format!("models.{}", key_segment(alias));
            if m.targets.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.targets"),
                    "no targets; list at least one \"provider/model\"",
                ));
            }
            for (i, t) in m.targets.iter().enumerate() {
                if !self.providers.contains_key(&t.provider) {
                    let known: Vec<&str> = self.providers.keys().map(String::as_str).collect();
                    return Err(ConfigError::new(
                        format!("{at}.targets[{i}]"),
                        format!(
                            "unknown provider {:?} (known: {})",
                            t.provider,
                            known.join(", ")
                        ),
                    ));
                }
                if t.model.is_empty() {
                    return Err(ConfigError::new(
                        format!("{at}.targets[{i}].model"),
                        "empty model name",
                    ));
                }
                for (key, cost) in [("input_cost", t.input_cost), ("output_cost", t.output_cost)] {
                    if cost.is_some_and(|c| !(c.is_finite() && c >= 0.0)) {
                        return Err(ConfigError::new(
                            format!("{at}.targets[{i}].{key}"),
                            "a cost must be a non-negative number (USD per million tokens)",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn validate_routing(r: &RoutingConfig) -> Result<(), ConfigError> {
    let a = r.ewma_alpha;
    // Written so that NaN fails too.
    if !(a > 0.0 && a <= 1.0) {
        return Err(ConfigError::new(
            "routing.ewma_alpha",
            format!(
                "must be greater than 0 and at most 1 (the weight of the newest latency sample; 0.2 is the default), got {a}"
            ),
        ));
    }
    if r.success_window.is_zero() {
        return Err(ConfigError::new(
            "routing.success_window",
            "must be longer than 0; write e.g. \"5m\"",
        ));
    }
    for (name, w) in [
        ("balanced", r.balanced),
        ("speed", r.speed),
        ("cost", r.cost),
    ] {
        for (key, v) in [
            ("success", w.success),
            ("latency", w.latency),
            ("cost", w.cost),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::new(
                    format!("routing.{name}.{key}"),
                    format!("a weight must be a finite number of at least 0, got {v}"),
                ));
            }
        }
        if w.success + w.latency + w.cost <= 0.0 {
            return Err(ConfigError::new(
                format!("routing.{name}"),
                "the weights sum to 0; give success, latency or cost a positive weight \
                 (keys left out of the table weigh 0)",
            ));
        }
    }
    Ok(())
}

fn validate_provider(at: &str, p: &ProviderConfig) -> Result<(), ConfigError> {
    match (p.kind, &p.base_url) {
        (ProviderKind::Openai, None) => {
            return Err(ConfigError::new(
                format!("{at}.base_url"),
                "missing; set the provider's OpenAI-compatible base URL, e.g. \"https://api.openai.com/v1\"",
            ));
        }
        (ProviderKind::Openai | ProviderKind::Anthropic, Some(url)) => {
            check_base_url(url).map_err(|m| ConfigError::new(format!("{at}.base_url"), m))?;
        }
        (ProviderKind::Mock, Some(_)) => {
            return Err(ConfigError::new(
                format!("{at}.base_url"),
                "a kind = \"mock\" provider answers in-process; remove base_url",
            ));
        }
        (ProviderKind::Mock | ProviderKind::Anthropic, None) => {}
    }
    if p.kind == ProviderKind::Mock && !p.ca_file.is_empty() {
        return Err(ConfigError::new(
            format!("{at}.ca_file"),
            "a kind = \"mock\" provider makes no TLS connections; remove ca_file",
        ));
    }
    if p.kind != ProviderKind::Mock && p.latency.is_some() {
        return Err(ConfigError::new(
            format!("{at}.latency"),
            "latency applies to kind = \"mock\" providers only; remove it",
        ));
    }
    for (i, k) in p.api_keys.iter().enumerate() {
        if k.is_empty() || http::HeaderValue::from_str(&format!("Bearer {k}")).is_err() {
            return Err(ConfigError::new(
                format!("{at}.api_keys[{i}]"),
                "empty or not a valid header value; check the key (or its ${VAR})",
            ));
        }
    }
    for (name, value) in &p.headers {
        let key = format!("{at}.headers.{}", key_segment(name));
        let hn = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::new(&key, "not a valid HTTP header name"))?;
        if crate::headers::is_hop_by_hop(&hn)
            || hn == http::header::HOST
            || hn == http::header::CONTENT_LENGTH
        {
            return Err(ConfigError::new(
                &key,
                "this header is managed by the gateway and cannot be set",
            ));
        }
        http::HeaderValue::from_str(value)
            .map_err(|_| ConfigError::new(&key, "not a valid HTTP header value"))?;
    }
    Ok(())
}

fn validate_patches(
    at: &str,
    limits: &LimitsPatch,
    breaker: &BreakerPatch,
    retry: &RetryPatch,
) -> Result<(), ConfigError> {
    let nonzero = [
        (
            "limits.max_concurrency",
            limits.max_concurrency,
            "at least 1",
        ),
        (
            "breaker.failure_threshold",
            breaker.failure_threshold,
            "at least 1",
        ),
        (
            "breaker.half_open_probes",
            breaker.half_open_probes,
            "at least 1",
        ),
        (
            "retry.max_attempts",
            retry.max_attempts,
            "at least 1 (1 = no retries)",
        ),
    ];
    for (key, v, fix) in nonzero {
        if v == Some(0) {
            return Err(ConfigError::new(
                format!("{at}.{key}"),
                format!("must be {fix}, got 0"),
            ));
        }
    }
    if let Some(r) = retry.budget_ratio
        && !(r.is_finite() && (0.0..=1.0).contains(&r))
    {
        return Err(ConfigError::new(
            format!("{at}.retry.budget_ratio"),
            format!("must be between 0.0 and 1.0, got {r}"),
        ));
    }
    Ok(())
}

/// Checks a provider base URL: http or https, a host, no userinfo, no query.
pub fn check_base_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|_| {
        format!("{url:?} is not a valid URL; write e.g. \"https://api.openai.com/v1\"")
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!("{url:?} must start with http:// or https://"));
        }
    }
    let Some(auth) = uri.authority() else {
        return Err(format!("{url:?} has no host"));
    };
    if auth.as_str().contains('@') {
        return Err(
            "credentials in the URL are not allowed (they would leak into logs); put keys in api_keys"
                .into(),
        );
    }
    if uri.query().is_some() {
        return Err(format!("{url:?} must not carry a query string"));
    }
    Ok(uri)
}

/// Quotes a table key for a dotted path when it is not a bare TOML key.
fn key_segment(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// Rewrites serde's "unknown field `x`, expected ..." so the path names the bad key itself.
fn schema_error(key: String, msg: String) -> ConfigError {
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, tail)) = rest.split_once('`')
    {
        let seg = key_segment(field);
        // serde_path_to_error names the key itself for some containers and not for others.
        let full = if key.is_empty() {
            seg
        } else if key == seg || key.ends_with(&format!(".{seg}")) {
            key
        } else {
            format!("{key}.{seg}")
        };
        let expected = tail.trim_start_matches(',').trim();
        return ConfigError::new(full, format!("unknown key (a typo?); {expected}"));
    }
    ConfigError::new(key, msg)
}

fn interpolate_table(
    t: &mut toml::Table,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (k, v) in t.iter_mut() {
        let path = if at.is_empty() {
            key_segment(k)
        } else {
            format!("{at}.{}", key_segment(k))
        };
        interpolate_value(v, &path, env)?;
    }
    Ok(())
}

fn interpolate_value(
    v: &mut toml::Value,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        toml::Value::String(s) => {
            if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                *s = env(name).ok_or_else(|| {
                    ConfigError::new(
                        at,
                        format!(
                            "environment variable {name} is not set; export it or change this value"
                        ),
                    )
                })?;
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{at}[{i}]"), env)?;
            }
        }
        toml::Value::Table(t) => interpolate_table(t, at, env)?,
        _ => {}
    }
    Ok(())
}

/// Where the config file is: `--config`, else `$GATEWAY_CONFIG`, else `./gateway.toml`
/// (clap applies the first two; this is the last fallback).
pub fn default_path() -> PathBuf {
    PathBuf::from("gateway.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(text, &Overrides::default(), &|n| {
            (n == "KEY").then(|| "sk-test-1234".to_string())
        })
    }

    const MIN: &str = "[providers.demo]\nkind = \"mock\"\n";

    #[test]
    fn defaults_apply_and_providers_override() {
        let c = parse(
            r#"
            [defaults.timeouts]
            first_byte = "20s"
            [providers.a]
            base_url = "http://127.0.0.1:1/v1"
            timeouts = { idle = "5s" }
            [providers.b]
            kind = "mock"
            "#,
        )
        .unwrap();
        let a = c.provider_settings(&c.providers["a"]);
        assert_eq!(a.timeouts.first_byte, Duration::from_secs(20));
        assert_eq!(a.timeouts.idle, Duration::from_secs(5));
        assert_eq!(a.timeouts.connect, Duration::from_secs(5));
        let b = c.provider_settings(&c.providers["b"]);
        assert_eq!(b.timeouts.idle, Duration::from_secs(30));
        assert_eq!(b.limits.max_concurrency, 1024);
    }

    #[test]
    fn contract_example_parses() {
        let text = r#"
[server]
listen = "127.0.0.1:4000"
api_keys = []
admin_key = ""
max_body_size = "16MiB"
header_read_timeout = "10s"
shutdown_timeout = "30s"
[log]
level = "info"
format = "text"
access_log = ""
[defaults.timeouts]
connect = "5s"
first_byte = "60s"
idle = "30s"
total = "10m"
[defaults.limits]
max_concurrency = 256
queue_size = 1024
queue_timeout = "10s"
[defaults.pool]
max_idle_per_host = 256
idle_timeout = "90s"
http2 = "auto"
[defaults.breaker]
failure_threshold = 3
cooldown = "60s"
max_cooldown = "10m"
half_open_probes = 1
[defaults.retry]
max_attempts = 2
backoff = "250ms"
max_backoff = "4s"
budget_ratio = 0.2
budget_min_per_sec = 10
[routing]
ewma_alpha = 0.2
success_window = "5m"
balanced = { success = 0.4, latency = 0.3, cost = 0.3 }
speed    = { success = 0.2, latency = 0.6, cost = 0.2 }
cost     = { success = 0.2, latency = 0.2, cost = 0.6 }
[providers.openai]
base_url = "https://api.openai.com/v1"
api_keys = ["${KEY}"]
headers = { "OpenAI-Organization" = "org-123" }
timeouts = { first_byte = "30s" }
[providers.local]
base_url = "http://127.0.0.1:11434/v1"
[providers.demo]
kind = "mock"
latency = "50ms"
[models."gpt-4o"]
strategy = "failover"
targets = ["openai/gpt-4o", "local/llama3.1:8b"]
[models.coder]
strategy = "balanced"
targets = [
  { provider = "openai", model = "gpt-4o-mini", weight = 1, input_cost = 0.15, output_cost = 0.60 },
  { provider = "local",  model = "qwen2.5-coder:7b", weight = 3 },
]
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.providers["openai"].api_keys, vec!["sk-test-1234"]);
        assert_eq!(c.server.max_body_size, Size(16 << 20));
        assert_eq!(c.models["coder"].targets[1].weight, 3);
        assert_eq!(c.models["coder"].strategy, Strategy::Balanced);
        assert_eq!(c.models["gpt-4o"].targets[1].model, "llama3.1:8b");
        let s = c.provider_settings(&c.providers["openai"]);
        assert_eq!(s.timeouts.first_byte, Duration::from_secs(30));
        assert_eq!(s.timeouts.total, Duration::from_secs(600));
        assert_eq!(c.providers["demo"].latency, Some(Duration::from_millis(50)));
        assert_eq!(c.routing, RoutingConfig::default());
    }

    #[test]
    fn routing_defaults_and_tables() {
        let r = parse(MIN).unwrap().routing;
        assert_eq!(r, RoutingConfig::default());
        assert_eq!(r.ewma_alpha, 0.2);
        assert_eq!(r.success_window, Duration::from_secs(300));
        assert_eq!(r.balanced, ScoreWeights::new(0.4, 0.3, 0.3));
        assert_eq!(r.speed, ScoreWeights::new(0.2, 0.6, 0.2));
        assert_eq!(r.cost, ScoreWeights::new(0.2, 0.2, 0.6));
        // A table replaces the whole set: keys left out weigh 0; other tables keep theirs.
        let r = parse(&format!(
            "{MIN}[routing]\newma_alpha = 1\nsuccess_window = \"30s\"\nspeed = {{ latency = 1 }}\n"
        ))
        .unwrap()
        .routing;
        assert_eq!(r.ewma_alpha, 1.0);
        assert_eq!(r.success_window, Duration::from_secs(30));
        assert_eq!(r.speed, ScoreWeights::new(0.0, 1.0, 0.0));
        assert_eq!(r.balanced, ScoreWeights::new(0.4, 0.3, 0.3));
        assert_eq!(r.weights(Strategy::Speed), Some(r.speed));
        assert_eq!(r.weights(Strategy::Weighted), None);
    }

    #[test]
    fn routing_validation_names_the_key_and_the_fix() {
        let err = |routing: &str| parse(&format!("{MIN}[routing]\n{routing}\n")).unwrap_err();
        for alpha in ["0", "-0.5", "1.5", "nan"] {
            let e = err(&format!("ewma_alpha = {alpha}"));
            assert_eq!(e.key, "routing.ewma_alpha", "{alpha}");
            assert!(
                e.message
                    .starts_with("must be greater than 0 and at most 1 (the weight of the newest"),
                "{}",
                e.message
            );
        }
        let e = err("speed = { success = 0.2, latency = -0.6 }");
        assert_eq!(e.key, "routing.speed.latency");
        assert_eq!(
            e.message,
            "a weight must be a finite number of at least 0, got -0.6"
        );
        let e = err("cost = { cost = inf }");
        assert_eq!(e.key, "routing.cost.cost");
        let e = err("balanced = { success = 0, latency = 0 }");
        assert_eq!(e.key, "routing.balanced");
        assert!(
            e.message.starts_with("the weights sum to 0;"),
            "{}",
            e.message
        );
        assert_eq!(
            e.in_file(Path::new("gateway.toml")).to_string(),
            "gateway.toml: routing.balanced: the weights sum to 0; give success, latency or \
             cost a positive weight (keys left out of the table weigh 0)"
        );
        let e = err("success_window = \"0s\"");
        assert_eq!(e.key, "routing.success_window");
        let e = err("success_window = \"soon\"");
        assert_eq!(e.key, "routing.success_window");
        let e = err("speed = { latnecy = 1 }");
        assert_eq!(e.key, "routing.speed.latnecy");
        assert!(e.message.starts_with("unknown key"), "{}", e.message);
        let e = err("alpha = 0.3");
        assert_eq!(e.key, "routing.alpha");
    }

    #[test]
    fn strategy_names() {
        for s in Strategy::ALL {
            assert_eq!(Strategy::from_name(s.as_str()), Some(s));
            let c = parse(&format!(
                "{MIN}[models.m]\nstrategy = \"{}\"\ntargets = [\"demo/x\"]\n",
                s.as_str()
            ))
            .unwrap();
            assert_eq!(c.models["m"].strategy, s);
        }
        assert_eq!(Strategy::from_name("Cost"), Some(Strategy::Cost));
        assert_eq!(Strategy::from_name("fast"), None);
        // The config, unlike the header, takes the names as written.
        let e = parse(&format!(
            "{MIN}[models.m]\nstrategy = \"Speed\"\ntargets = [\"demo/x\"]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "models.m.strategy");
    }

    #[test]
    fn target_splits_at_first_slash() {
        let t = TargetConfig::parse("local/meta-llama/Llama-3-8B").unwrap();
        assert_eq!(t.provider, "local");
        assert_eq!(t.model, "meta-llama/Llama-3-8B");
        assert!(TargetConfig::parse("nope").is_none());
        assert!(TargetConfig::parse("/x").is_none());
    }

    #[test]
    fn unknown_provider_names_the_target() {
        let e = parse(&format!(
            "{MIN}[models.coder]\ntargets = [\"demo/x\", {{ provider = \"foo\", model = \"m\" }}]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "models.coder.targets[1]");
        assert_eq!(e.message, "unknown provider \"foo\" (known: demo)");
        let e = e.in_file(Path::new("gateway.toml"));
        assert_eq!(
            e.to_string(),
            "gateway.toml: models.coder.targets[1]: unknown provider \"foo\" (known: demo)"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let e = parse(&format!("{MIN}[server]\nlisten_addr = \"x\"\n")).unwrap_err();
        assert_eq!(e.key, "server.listen_addr");
        assert!(e.message.starts_with("unknown key"), "{}", e.message);
        let e = parse(&format!("{MIN}[defaults.timeouts]\nconect = \"1s\"\n")).unwrap_err();
        assert_eq!(e.key, "defaults.timeouts.conect");
        let e = parse(&format!(
            "{MIN}[models.m]\ntargets = [{{ provider = \"demo\", model = \"x\", wieght = 2 }}]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "models.m.targets[0].wieght");
        let e = parse(&format!("{MIN}[bogus]\n")).unwrap_err();
        assert_eq!(e.key, "bogus");
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(&format!("{MIN}[defaults.timeouts]\nidle = \"soon\"\n")).unwrap_err();
        assert_eq!(e.key, "defaults.timeouts.idle");
        assert!(
            e.message.contains("invalid duration \"soon\""),
            "{}",
            e.message
        );
        let e = parse(&format!("{MIN}[server]\nmax_body_size = \"lots\"\n")).unwrap_err();
        assert_eq!(e.key, "server.max_body_size");
        let e = parse(&format!("{MIN}[defaults.limits]\nmax_concurrency = 0\n")).unwrap_err();
        assert_eq!(e.key, "defaults.limits.max_concurrency");
        let e = parse("[providers.p]\nbase_url = \"http://127.0.0.1/v1\"\nbreaker = { failure_threshold = 0 }\n").unwrap_err();
        assert_eq!(e.key, "providers.p.breaker.failure_threshold");
        let e = parse(&format!("{MIN}[defaults.pool]\nhttp2 = \"maybe\"\n")).unwrap_err();
        assert_eq!(e.key, "defaults.pool.http2");
        let e = parse(&format!("{MIN}[models.m]\ntargets = [\"justamodel\"]\n")).unwrap_err();
        assert_eq!(e.key, "models.m.targets[0]");
        assert!(e.message.contains("provider/model"), "{}", e.message);
    }

    #[test]
    fn durations_over_100_days_are_refused() {
        let e = parse(&format!("{MIN}[defaults.timeouts]\ntotal = \"500y\"\n")).unwrap_err();
        assert_eq!(e.key, "defaults.timeouts.total");
        assert!(
            e.message
                .starts_with("invalid duration \"500y\": at most 100 days"),
            "{}",
            e.message
        );
        let e = parse(&format!(
            "{MIN}[server]\nshutdown_timeout = \"99999999999999h\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "server.shutdown_timeout");
        let e = parse("[providers.demo]\nkind = \"mock\"\nlatency = \"101days\"\n").unwrap_err();
        assert_eq!(e.key, "providers.demo.latency");
        assert!(e.message.contains("at most 100 days"), "{}", e.message);
        // Overflowing humantime's own arithmetic is a plain parse error, not a panic.
        let e = parse(&format!(
            "{MIN}[defaults.breaker]\ncooldown = \"99999999999999999999999s\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "defaults.breaker.cooldown");
        let c = parse(&format!(
            "{MIN}[defaults.breaker]\ncooldown = \"100days\"\nmax_cooldown = \"100days\"\n"
        ))
        .unwrap();
        let b = c.provider_settings(&c.providers["demo"]).breaker;
        assert_eq!(b.max_cooldown, MAX_DURATION);
    }

    #[test]
    fn queue_size_zero_is_valid() {
        let c = parse(&format!("{MIN}[defaults.limits]\nqueue_size = 0\n")).unwrap();
        assert_eq!(
            c.provider_settings(&c.providers["demo"]).limits.queue_size,
            0
        );
    }

    #[test]
    fn base_url_rules() {
        for (url, frag) in [
            ("ftp://x/v1", "http:// or https://"),
            ("https://user:pw@api.example.com/v1", "credentials"),
            ("not a url", "not a valid URL"),
        ] {
            let e = parse(&format!("[providers.p]\nbase_url = {url:?}\n")).unwrap_err();
            assert_eq!(e.key, "providers.p.base_url");
            assert!(e.message.contains(frag), "{url}: {}", e.message);
            assert!(!e.message.contains("pw@"), "secret leaked: {}", e.message);
        }
        let e = parse("[providers.p]\n").unwrap_err();
        assert_eq!(e.key, "providers.p.base_url");
    }

    #[test]
    fn no_providers_is_an_error() {
        let e = parse("").unwrap_err();
        assert_eq!(e.key, "providers");
    }

    #[test]
    fn env_interpolation() {
        let e = parse(
            "[providers.p]\nbase_url = \"http://127.0.0.1/v1\"\napi_keys = [\"${MISSING_VAR}\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "providers.p.api_keys[0]");
        assert!(e.message.contains("MISSING_VAR"));
        // Only the exact form is interpolated.
        let c =
            parse("[providers.p]\nbase_url = \"http://127.0.0.1/v1\"\napi_keys = [\"x${KEY}\"]\n")
                .unwrap();
        assert_eq!(c.providers["p"].api_keys, vec!["x${KEY}"]);
    }

    #[test]
    fn non_loopback_listen_needs_keys() {
        let e = parse(&format!("{MIN}[server]\nlisten = \"0.0.0.0:4000\"\n")).unwrap_err();
        assert_eq!(e.key, "server.listen");
        parse(&format!(
            "{MIN}[server]\nlisten = \"0.0.0.0:4000\"\napi_keys = [\"k\"]\n"
        ))
        .unwrap();
        parse(&format!(
            "{MIN}[server]\nlisten = \"0.0.0.0:4000\"\nallow_unauthenticated = true\n"
        ))
        .unwrap();
        let c = Config::parse_with(
            &format!("{MIN}[server]\nlisten = \"127.0.0.1:1\"\n"),
            &Overrides {
                listen: Some("0.0.0.0:9".into()),
                ..Default::default()
            },
            &|_| None,
        );
        assert_eq!(c.unwrap_err().key, "server.listen");
    }

    #[test]
    fn server_tls_keys() {
        let c = parse(&format!(
            "{MIN}[server.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n"
        ))
        .unwrap();
        let tls = c.server.tls.unwrap();
        assert_eq!((tls.cert.as_str(), tls.key.as_str()), ("/c.pem", "/k.pem"));
        let e = parse(&format!(
            "{MIN}[server.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nca = \"x\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "server.tls.ca");
        assert!(e.message.starts_with("unknown key"), "{}", e.message);
        let e = parse(&format!("{MIN}[server.tls]\ncert = \"/c.pem\"\n")).unwrap_err();
        assert_eq!(e.key, "server.tls.key");
        assert!(e.message.contains("private key"), "{}", e.message);
        assert!(parse(MIN).unwrap().server.tls.is_none());
    }

    #[test]
    fn ca_file_is_per_http_provider() {
        let c =
            parse("[providers.p]\nbase_url = \"https://llm.internal/v1\"\nca_file = \"/ca.pem\"\n")
                .unwrap();
        assert_eq!(c.providers["p"].ca_file, "/ca.pem");
        let e = parse("[providers.demo]\nkind = \"mock\"\nca_file = \"/ca.pem\"\n").unwrap_err();
        assert_eq!(e.key, "providers.demo.ca_file");
        let e = parse(&format!("{MIN}[defaults]\nca_file = \"/ca.pem\"\n")).unwrap_err();
        assert_eq!(e.key, "defaults.ca_file");
    }

    #[test]
    fn toml_syntax_error_is_reported() {
        let e = parse("[providers.demo\nkind = 1").unwrap_err();
        assert!(e.message.starts_with("invalid TOML"), "{}", e.message);
    }

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("16MiB"), Some(Size(16 << 20)));
        assert_eq!(Size::parse("512KB"), Some(Size(512_000)));
        assert_eq!(Size::parse("100"), Some(Size(100)));
        assert_eq!(Size::parse("1.5 GiB"), Some(Size(3 << 29)));
        assert_eq!(Size::parse("x"), None);
        assert_eq!(Size::parse("99999999999999999999999GiB"), None);
        assert_eq!(Size::parse("1e400"), None);
        assert_eq!(Size::parse("."), None);
        let c = parse(&format!("{MIN}[server]\nmax_body_size = 1024\n")).unwrap();
        assert_eq!(c.server.max_body_size, Size(1024));
    }
}
