//! The access log (contract §8): one JSON object per `/v1/*` request, appended to a file.
//!
//! Lines are handed to a dedicated writer thread through a bounded channel, so a slow or
//! stalled disk never slows a request. When the writer falls behind by more than
//! [`CAPACITY`] lines, new lines are dropped (never blocked on), counted, and a warning is
//! logged at most once every 10 s. Dropping the last handle flushes and closes the file.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lines buffered between requests and the writer thread.
pub const CAPACITY: usize = 16 * 1024;

/// A handle on an open access log.
#[derive(Debug)]
pub struct AccessLog {
    path: PathBuf,
    tx: Option<SyncSender<Vec<u8>>>,
    writer: Option<JoinHandle<()>>,
    dropped: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl AccessLog {
    /// Opens (creating or appending) `path` and starts its writer thread.
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = sync_channel::<Vec<u8>>(CAPACITY);
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, BufWriter::with_capacity(64 * 1024, file)))?;
        Ok(AccessLog {
            path: path.to_path_buf(),
            tx: Some(tx),
            writer: Some(writer),
            dropped: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one line (without its newline). Never blocks.
    pub fn write(&self, line: Vec<u8>) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
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
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued, flush, and end.
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn write_lines(rx: Receiver<Vec<u8>>, mut out: BufWriter<std::fs::File>) {
    while let Ok(line) = rx.recv() {
        let mut ok = write_line(&mut out, &line);
        // Write whatever else is waiting, then flush once.
        while let Ok(line) = rx.try_recv() {
            ok &= write_line(&mut out, &line);
        }
        if !(ok && out.flush().is_ok()) {
            tracing::warn!("access log write failed");
        }
    }
    let _ = out.flush();
}

fn write_line(out: &mut BufWriter<std::fs::File>, line: &[u8]) -> bool {
    out.write_all(line)
        .and_then(|()| out.write_all(b"\n"))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_flushed_when_the_log_closes() {
        let dir = std::env::temp_dir().join(format!("gw-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.jsonl");
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::open(&path).unwrap();
        for i in 0..100 {
            log.write(format!("{{\"n\":{i}}}").into_bytes());
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert_eq!(text.lines().last(), Some("{\"n\":99}"));
    }
}
