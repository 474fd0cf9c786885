//! The access log (contract §8): one JSON object per `/v1/*` request, appended to a file.
//!
//! Lines are handed to a dedicated writer thread through a [`Batch`], which writes many
//! lines with one call, so a slow or stalled disk never slows a request and a busy gateway
//! does not wake a thread per request. When the writer falls behind by more than
//! [`CAPACITY`] bytes, new lines are dropped (never blocked on), counted in
//! `gateway_access_log_dropped_total` (a counter owned by the metrics, so the count survives
//! a reopen on reload), and a warning is logged at most once every 10 s.
//!
//! Dropping the log closes its batch; the writer then writes what is queued, flushes and
//! ends. That drop never waits for the writer on a tokio thread (a reload can drop the old
//! log on a worker, and a stalled disk must not stall the worker). Off the runtime the drop
//! waits, and [`AccessLog::close`] waits explicitly, which is how the process flushes the
//! file at exit.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::observe::batch::{Batch, Writer};

/// Bytes of lines waiting for the writer thread (about 16,000 lines).
pub const CAPACITY: usize = 8 * 1024 * 1024;

/// A handle on an open access log.
#[derive(Debug)]
pub struct AccessLog {
    path: PathBuf,
    batch: Batch,
    writer: Writer,
    /// `gateway_access_log_dropped_total`, shared with the metrics registry.
    dropped: Counter,
    last_warning: Mutex<Option<Instant>>,
}

impl AccessLog {
    /// Opens (creating or appending) `path` and starts its writer thread; lines dropped
    /// because the writer fell behind are counted in `dropped`.
    pub fn open(path: &Path, dropped: Counter) -> std::io::Result<AccessLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Self::start(path, file, CAPACITY, dropped)
    }

    /// The writer thread over any sink, with `capacity` bytes of queue.
    fn start<W: Write + Send + 'static>(
        path: &Path,
        out: W,
        capacity: usize,
        dropped: Counter,
    ) -> std::io::Result<AccessLog> {
        let (batch, writer) = Batch::start(
            "access-log",
            out,
            capacity,
            Some(|| tracing::warn!("access log write failed")),
        )?;
        Ok(AccessLog {
            path: path.to_path_buf(),
            batch,
            writer,
            dropped,
            last_warning: Mutex::new(None),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one line (without its newline). Never blocks.
    pub fn write(&self, line: &[u8]) {
        if self.batch.push(line, true) {
            return;
        }
        let n = self.dropped.inc() + 1;
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(
                path = %self.path.display(),
                dropped_total = n,
                "access log writer is behind; dropping lines"
            );
        }
    }

    /// Stops taking lines and waits until those queued are written and flushed. Blocks the
    /// calling thread: call it off the async runtime (at exit).
    pub fn close(&mut self) {
        self.writer.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{Receiver, Sender, channel};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gw-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    /// A file whose first write blocks until the gate opens: a stalled disk. `entered`
    /// hears when the writer is stuck there.
    struct Stalled {
        file: std::fs::File,
        gate: Option<Receiver<()>>,
        entered: Sender<()>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(gate) = self.gate.take() {
                let _ = self.entered.send(());
                let _ = gate.recv();
            }
            self.file.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.file.flush()
        }
    }

    /// An access log on `path` whose writer is stuck in its first write until the returned
    /// sender opens the gate (or is dropped).
    fn stalled(path: &Path, capacity: usize, dropped: Counter) -> (AccessLog, Sender<()>) {
        let (open, gate) = channel();
        let (entered_tx, entered) = channel();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        let sink = Stalled {
            file,
            gate: Some(gate),
            entered: entered_tx,
        };
        let log = AccessLog::start(path, sink, capacity, dropped).unwrap();
        log.write(b"{\"n\":0}");
        entered
            .recv_timeout(Duration::from_secs(20))
            .expect("the writer takes the first line");
        (log, open)
    }

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count()
    }

    #[test]
    fn lines_are_flushed_when_the_log_closes() {
        let path = temp("access.jsonl");
        let log = AccessLog::open(&path, Counter::default()).unwrap();
        for i in 0..100 {
            log.write(format!("{{\"n\":{i}}}").as_bytes());
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert_eq!(text.lines().last(), Some("{\"n\":99}"));
    }

    #[tokio::test]
    async fn dropping_on_the_runtime_does_not_wait_for_a_stalled_writer() {
        let path = temp("stalled.jsonl");
        let (log, open) = stalled(&path, CAPACITY, Counter::default());
        for i in 1..100 {
            log.write(format!("{{\"n\":{i}}}").as_bytes());
        }
        // A drop that joined the writer would block this runtime thread until the gate
        // opens. The watchdog opens it after 10 s, so a regression fails instead of hanging.
        let fired = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (open, fired) = (open.clone(), fired.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(10));
                fired.store(true, Ordering::SeqCst);
                let _ = open.send(());
            })
        };
        drop(log);
        assert!(
            !fired.load(Ordering::SeqCst),
            "drop waited for the stalled writer"
        );
        let _ = open.send(());
        // The handle is gone, yet every queued line reaches the file.
        let deadline = Instant::now() + Duration::from_secs(20);
        while lines(&path) < 100 {
            assert!(Instant::now() < deadline, "lines lost: {}", lines(&path));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lines(&path), 100);
        drop(watchdog);
    }

    #[test]
    fn close_waits_for_queued_lines() {
        let path = temp("close.jsonl");
        let (mut log, open) = stalled(&path, CAPACITY, Counter::default());
        log.write(b"{\"n\":1}");
        open.send(()).unwrap();
        log.close();
        assert_eq!(lines(&path), 2);
    }

    #[tokio::test]
    async fn lines_dropped_by_a_stalled_writer_are_counted_across_a_reload() {
        let path = temp("dropped.jsonl");
        let config = |access: &Path| {
            crate::config::Config::parse_with(
                &format!(
                    "[providers.demo]\nkind = \"mock\"\n[log]\naccess_log = {:?}\n",
                    access.display().to_string()
                ),
                &crate::config::Overrides::default(),
                &|_| None,
            )
            .unwrap()
        };
        let rt = crate::runtime::Runtime::build(config(&path), 1).unwrap();
        let t = crate::observe::logging::Telemetry::default();
        assert!(
            t.metrics
                .render(&rt.scrape(tokio::time::Instant::now()))
                .lines()
                .any(|l| l == "gateway_access_log_dropped_total 0"),
            "exposed at 0 from the start"
        );
        // Capacity 8 bytes: the writer holds line 0 (stuck in its write), line 1 (8 bytes
        // with its newline) waits in the queue, lines 2..=10 are dropped.
        let (log, open) = stalled(&path, 8, t.metrics.access_log_dropped());
        for i in 1..=10 {
            log.write(format!("{{\"n\":{i}}}").as_bytes());
        }
        t.access.store(Some(Arc::new(log)));
        let dropped = |t: &crate::observe::logging::Telemetry| {
            let text = t.metrics.render(&rt.scrape(tokio::time::Instant::now()));
            text.lines()
                .find_map(|l| l.strip_prefix("gateway_access_log_dropped_total "))
                .map(|v| v.parse::<f64>().unwrap())
        };
        assert_eq!(dropped(&t), Some(9.0));
        // A reload to another file reopens the log; the count carries on.
        crate::runtime::reload::apply_access_log(&t, &config(&temp("dropped-2.jsonl")));
        assert_ne!(t.access.load().as_ref().unwrap().path(), path);
        assert_eq!(dropped(&t), Some(9.0));
        open.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while lines(&path) < 2 {
            assert!(Instant::now() < deadline, "queued lines lost");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lines(&path), 2);
    }
}
