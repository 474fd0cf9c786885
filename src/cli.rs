//! The command line: `gateway` (serve), `gateway check`, `gateway replay`, `gateway mock`,
//! `gateway --version`.
//!
//! Exit codes (contract §1): 0 clean exit, including after a drained SIGTERM; 2 usage or
//! config error; 1 any other fatal error.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{self, Config, LogFormat, Overrides, ProviderKind};
use crate::observe::logging;
use crate::policy::keys::redact;
use crate::replay;
use crate::runtime::{Runtime, State};
use crate::upstream::mock::{self, Fault, MockOptions};
use crate::{runtime::reload, server};

/// OpenAI-compatible reverse proxy for LLM traffic: failover, circuit breakers, timeouts.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: $GATEWAY_CONFIG, then ./gateway.toml]
    #[arg(long, global = true, env = "GATEWAY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen address, overriding server.listen (e.g. 127.0.0.1:4000)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Log format, overriding log.format
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level or filter, overriding log.level (e.g. info, debug, gateway=debug)
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// What to do; without one, serve.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config, print a summary; exit 0 when valid, 2 when not
    Check,
    /// Replay recorded access logs through the config: what would it have done?
    Replay(ReplayArgs),
    /// Run a fault-injecting OpenAI-compatible upstream for tests and chaos drills
    Mock(MockArgs),
}

/// `gateway mock` flags.
#[derive(Debug, Args)]
pub struct MockArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:4010", value_name = "ADDR")]
    pub listen: String,
    /// Delay before each response's headers (e.g. 200ms)
    #[arg(long, default_value = "0ms", value_parser = parse_duration, value_name = "DUR")]
    pub latency: Duration,
    /// Content chunks per streamed answer
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub chunks: u32,
    /// Delay between streamed chunks
    #[arg(long, default_value = "10ms", value_parser = parse_duration, value_name = "DUR")]
    pub chunk_interval: Duration,
    /// none | hang | status=N[,retry-after=S] | drop-mid-stream | stall-mid-stream
    #[arg(long, default_value = "none", value_parser = parse_fault, value_name = "MODE")]
    pub fault: Fault,
}

/// `gateway replay` flags (contract §9).
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Report format on standard output
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub format: ReplayFormat,
    /// Also write a self-contained HTML page with per-provider timelines
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Seed of the backoff jitter
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
    /// How far in time a recorded attempt may be from a replayed one to stand for it
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DUR")]
    pub window: Duration,
    /// What-if fault, repeatable: PROVIDER=MODE@START+DURATION, MODE hang | refused | 500 |
    /// 503 | 429 | slow:DUR, START an RFC 3339 time or +OFFSET from the first request
    #[arg(long = "fault", value_parser = parse_replay_fault, value_name = "SPEC")]
    pub faults: Vec<replay::Fault>,
    /// Access-log files (JSON Lines); - reads standard input
    #[arg(required = true, value_name = "LOG.jsonl")]
    pub logs: Vec<String>,
}

/// `gateway replay --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// Recorded and candidate side by side, for people
    Text,
    /// One JSON object (contract §9)
    Json,
}

fn parse_replay_fault(s: &str) -> Result<replay::Fault, String> {
    s.parse()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mock::parse_delay(s)
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    s.parse()
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config.clone().unwrap_or_else(config::default_path);
    match &cli.command {
        Some(Command::Check) => check(&path, &overrides(&cli)),
        Some(Command::Replay(args)) => run_replay(&path, args),
        Some(Command::Mock(args)) => run_mock(args),
        None => serve(&path, &overrides(&cli)),
    }
}

fn overrides(cli: &Cli) -> Overrides {
    Overrides {
        listen: cli.listen.clone(),
        log_level: cli.log_level.clone(),
        log_format: cli.log_format,
    }
}

fn load(path: &Path, overrides: &Overrides) -> Result<Runtime, ExitCode> {
    let compiled = Config::load(path, overrides)
        .and_then(|c| Runtime::build(c, 1).map_err(|e| e.in_file(path)));
    compiled.map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        })
}

fn check(path: &Path, overrides: &Overrides) -> ExitCode {
    match load(path, overrides) {
        Ok(rt) => {
            print!("{}", summary(path, &rt.config));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The `gateway check` report: providers with their resolved settings, models with their
/// targets. Keys are shown redacted.
pub fn summary(path: &Path, c: &Config) -> String {
    let mut s = String::new();
    let fd = |d: Duration| humantime::format_duration(d).to_string();
    let _ = writeln!(s, "{}: ok", path.display());
    let auth = if c.server.api_keys.is_empty() {
        "off".to_string()
    } else {
        format!("{} key(s)", c.server.api_keys.len())
    };
    let _ = writeln!(
        s,
        "listen {}  client auth {}  max_body_size {}",
        c.server.listen, auth, c.server.max_body_size
    );
    if let Some(tls) = &c.server.tls {
        // Load succeeded, so the pair was read and matches.
        let _ = writeln!(s, "tls: cert {}, key {} (pair ok)", tls.cert, tls.key);
    }
    let _ = writeln!(s, "\nproviders:");
    for (name, p) in &c.providers {
        let st = c.provider_settings(p);
        let what = match p.kind {
            ProviderKind::Mock => format!(
                "mock (in-process), latency {}",
                fd(p.latency.unwrap_or_default())
            ),
            ProviderKind::Openai | ProviderKind::Anthropic => {
                let keys: Vec<String> = p.api_keys.iter().map(|k| redact(k)).collect();
                let keys = if keys.is_empty() {
                    "none".into()
                } else {
                    keys.join(", ")
                };
                let ca = if p.ca_file.is_empty() {
                    String::new()
                } else {
                    format!("  trusts only: {}", p.ca_file)
                };
                let api = if p.kind == ProviderKind::Anthropic {
                    "anthropic "
                } else {
                    ""
                };
                format!(
                    "{api}{}  keys: {keys}{ca}",
                    p.base_url.as_deref().unwrap_or_default()
                )
            }
        };
        let _ = writeln!(s, "  {name}: {what}");
        let t = &st.timeouts;
        let _ = writeln!(
            s,
            "    timeouts: connect {}, first_byte {}, idle {}, total {}",
            fd(t.connect),
            fd(t.first_byte),
            fd(t.idle),
            fd(t.total)
        );
        let l = &st.limits;
        let _ = writeln!(
            s,
            "    limits: max_concurrency {}, queue_size {}, queue_timeout {}",
            l.max_concurrency,
            l.queue_size,
            fd(l.queue_timeout)
        );
        let b = &st.breaker;
        let _ = writeln!(
            s,
            "    breaker: failure_threshold {}, cooldown {}..{}, half_open_probes {}",
            b.failure_threshold,
            fd(b.cooldown),
            fd(b.max_cooldown),
            b.half_open_probes
        );
        let r = &st.retry;
        let _ = writeln!(
            s,
            "    retry: max_attempts {}, backoff {}..{}, budget {}% + {}/s",
            r.max_attempts,
            fd(r.backoff),
            fd(r.max_backoff),
            r.budget_ratio * 100.0,
            r.budget_min_per_sec
        );
    }
    let _ = writeln!(s, "\nmodels:");
    if c.models.is_empty() {
        let _ = writeln!(s, "  (none; clients may still ask for \"provider/model\")");
    }
    for (alias, m) in &c.models {
        let targets: Vec<String> = m
            .targets
            .iter()
            .map(|t| format!("{}/{}", t.provider, t.model))
            .collect();
        let strategy = m.strategy.as_str();
        let _ = writeln!(s, "  {alias} ({strategy}): {}", targets.join(" -> "));
    }
    let r = &c.routing;
    let w = |w: crate::config::ScoreWeights| format!("{}/{}/{}", w.success, w.latency, w.cost);
    let _ = writeln!(
        s,
        "\nrouting: ewma_alpha {}, success_window {}; weights success/latency/cost: \
         balanced {}, speed {}, cost {}",
        r.ewma_alpha,
        fd(r.success_window),
        w(r.balanced),
        w(r.speed),
        w(r.cost)
    );
    s
}

/// `gateway replay`: the candidate config is compiled as `serve` and `check` compile it
/// (same validation, same messages, exit 2), then the logs are replayed through it.
fn run_replay(path: &Path, args: &ReplayArgs) -> ExitCode {
    // Command-line overrides concern a listener; the candidate is the file as written.
    let rt = match load(path, &Overrides::default()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let opts = replay::Options {
        format: match args.format {
            ReplayFormat::Text => replay::Format::Text,
            ReplayFormat::Json => replay::Format::Json,
        },
        html: args.html.clone(),
        seed: args.seed,
        window: args.window,
        faults: args.faults.clone(),
        logs: args.logs.clone(),
    };
    match replay::run(&rt, path, &opts) {
        Ok(out) => {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn serve(path: &Path, overrides: &Overrides) -> ExitCode {
    let runtime = match load(path, overrides) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let _guard = logging::init(&runtime.config.log.level, runtime.config.log.format);
    let addr = match runtime.config.listen_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}", e.in_file(path));
            return ExitCode::from(2);
        }
    };
    let tokio = match tokio_runtime() {
        Ok(t) => t,
        Err(code) => return code,
    };
    let state = State::with_overrides(runtime, path.to_path_buf(), overrides.clone());
    let telemetry = state.telemetry.clone();
    let code = tokio.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {addr}: {e}");
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        };
        reload::spawn_sighup(state.clone());
        let _watcher = reload::watch_file(state.clone());
        reload::spawn_watchdog();
        let scheme = if state.tls.is_some() { "https" } else { "http" };
        tracing::info!(
            "gateway {} listening on {scheme}://{} (config {})",
            env!("CARGO_PKG_VERSION"),
            listener.local_addr().unwrap_or(addr),
            path.display()
        );
        reload::notify(&[sd_notify::NotifyState::Ready]);
        match server::run(listener, state, shutdown_signal()).await {
            Ok(()) => {
                tracing::info!("drained; bye");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("server failed: {e}");
                ExitCode::from(1)
            }
        }
    });
    // Requests still alive (streams cut at the drain) write their lines as the runtime
    // drops them; then, off the runtime, the access log is flushed before the process exits.
    drop(tokio);
    telemetry.close_access_log();
    code
}

fn run_mock(args: &MockArgs) -> ExitCode {
    let _guard = logging::init("info", LogFormat::Text);
    let opts = MockOptions {
        latency: args.latency,
        chunks: args.chunks,
        chunk_interval: args.chunk_interval,
        fault: args.fault.clone(),
    };
    let tokio = match tokio_runtime() {
        Ok(t) => t,
        Err(code) => return code,
    };
    tokio.block_on(async move {
        let listener = match TcpListener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", args.listen);
                return ExitCode::from(1);
            }
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            "gateway mock listening on http://{addr}/v1 ({})",
            mock::describe(&opts)
        );
        match crate::server::serve_mock(listener, opts, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: draining"),
                _ = int.recv() => tracing::info!("SIGINT: draining"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
