//! Config reload and the service manager.
//!
//! A reload reads and validates the file, compiles a new [`Runtime`] that carries provider
//! health and pools over from the running one, and swaps it in atomically. Requests in
//! flight finish on the snapshot they began with. Compiling re-reads the `[server.tls]`
//! pair and the `ca_file`s, so a renewed certificate is picked up; new TLS handshakes use
//! it, open connections keep theirs. An invalid file, or a TLS file that cannot be read or
//! does not match, changes nothing: the reason is logged and counted in
//! `gateway_config_reloads_total{result="error"}`.
//!
//! Triggers: SIGHUP, a change of the config file (the directory is watched, since editors
//! save by rename; only create/modify/remove of that file count, debounced), and
//! `POST /admin/reload`. Around each reload systemd hears `RELOADING=1` … `READY=1`
//! (so `Type=notify-reload` works); `READY=1` at start-up, `STOPPING=1` on drain, and
//! watchdog pings when `WatchdogSec` is set, all through `sd-notify` (no-ops without
//! `NOTIFY_SOCKET`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use crate::config::{Config, ConfigError};
use crate::observe::accesslog::AccessLog;
use crate::observe::logging::Telemetry;
use crate::runtime::{Runtime, State};

/// Reloads the config file now. Returns the new generation, or why the file was refused
/// (the running config then stays).
pub fn reload(state: &State, trigger: &str) -> Result<u64, ConfigError> {
    let _one_at_a_time = state.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
    notify_reloading();
    let result = compile(state);
    match &result {
        Ok(rt) => {
            let generation = rt.generation;
            let current = state.runtime();
            if rt.config.log.level != current.config.log.level {
                crate::observe::logging::set_level(&rt.config.log.level);
            }
            if rt.config.log.format != current.config.log.format {
                tracing::warn!("log.format changed; it takes effect at the next restart");
            }
            if rt.config.server.listen != current.config.server.listen {
                tracing::warn!(
                    "server.listen changed to {}; the listener stays on {} until a restart",
                    rt.config.server.listen,
                    current.config.server.listen
                );
            }
            match (&state.tls, &rt.tls) {
                (Some(_), None) => tracing::warn!(
                    "[server.tls] was removed; the listener keeps serving HTTPS with its last \
                     certificate until a restart"
                ),
                (None, Some(_)) => tracing::warn!(
                    "[server.tls] was added; the listener stays plain HTTP until a restart"
                ),
                _ => {}
            }
            tracing::info!(trigger, generation, "config reloaded");
        }
        Err(e) => tracing::error!(
            trigger,
            "config reload refused, keeping the running config: {e}"
        ),
    }
    state.telemetry.metrics.reload(result.is_ok());
    let out = result.map(|rt| {
        let generation = rt.generation;
        apply_access_log(&state.telemetry, &rt.config);
        if let (Some(live), Some(new)) = (&state.tls, &rt.tls) {
            live.replace(new.clone());
        }
        state.swap(rt);
        generation
    });
    notify(&[sd_notify::NotifyState::Ready]);
    out
}

fn compile(state: &State) -> Result<Runtime, ConfigError> {
    let path = &state.config_path;
    let config = Config::load(path, &state.overrides)?;
    let current = state.runtime();
    Runtime::build_with(config, current.generation + 1, Some(&current)).map_err(|e| e.in_file(path))
}

/// Opens, switches or closes the access log to match `config` (no-op when unchanged).
pub fn apply_access_log(t: &Telemetry, config: &Config) {
    let want = config.log.access_log.trim();
    let current = t.access.load();
    let same = match current.as_ref() {
        Some(log) => log.path() == Path::new(want),
        None => want.is_empty(),
    };
    if same {
        return;
    }
    if want.is_empty() {
        t.access.store(None);
        return;
    }
    match AccessLog::open(Path::new(want), t.metrics.access_log_dropped()) {
        Ok(log) => t.access.store(Some(Arc::new(log))),
        Err(e) => {
            tracing::error!("cannot open access log {want}: {e}; access logging stays as it was")
        }
    }
}

/// Sends a state to systemd; a no-op outside systemd.
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify: {e}");
    }
}

fn notify_reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[sd_notify::NotifyState::Reloading, now]),
        Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
    }
}

/// Pings the systemd watchdog at half its interval, when `WatchdogSec` is set.
pub fn spawn_watchdog() {
    if let Some(every) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval((every / 2).max(Duration::from_millis(10)));
            loop {
                tick.tick().await;
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// Reloads on every SIGHUP.
pub fn spawn_sighup(state: Arc<State>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let s = state.clone();
                    let _ = tokio::task::spawn_blocking(move || reload(&s, "SIGHUP")).await;
                }
            });
        }
        Err(e) => tracing::warn!("cannot handle SIGHUP ({e}); reload with POST /admin/reload"),
    }
}

/// How long file events are collected before one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches the config file and reloads when it is written, replaced or removed. The
/// returned watcher must be kept alive.
pub fn watch_file(state: Arc<State>) -> Option<notify::RecommendedWatcher> {
    let path = absolute(&state.config_path);
    let (dir, name) = (
        path.parent()?.to_path_buf(),
        path.file_name()?.to_os_string(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        // Reading the file is an event too: react to writes, creates, renames and
        // removals only, or every reload would trigger the next.
        let relevant = matches!(
            ev.kind,
            EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(notify::event::ModifyKind::Data(_))
                | EventKind::Modify(notify::event::ModifyKind::Name(_))
                | EventKind::Modify(notify::event::ModifyKind::Any)
        );
        if relevant
            && ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| tracing::warn!("cannot watch the config file: {e}"))
    .ok()?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!("cannot watch {}: {e}", dir.display()))
        .ok()?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Editors write in several steps: wait for the burst to end.
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&s, "file change")).await;
        }
    });
    Some(watcher)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}
