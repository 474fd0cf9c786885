//! A batching line writer: requests append finished lines to a shared byte buffer, and one
//! writer thread takes the whole buffer at a time and writes it with one call. Both the log
//! lines (standard error) and the access log go through it.
//!
//! Why not a channel per line: a channel wakes its reader for every line, so each request
//! paid a futex wake, a context switch and a `write(2)` of its own — about a third of the
//! gateway's CPU per request at `info`. Here the writer thread is woken only when the buffer
//! goes from empty to not empty; it then waits [`LINGER`] for more lines to gather and
//! writes them together, so under load it wakes about 1/[`LINGER`] times a second whatever
//! the request rate, and never while idle.
//!
//! Invariants: [`Batch::push`] never blocks on I/O (it holds a mutex only to copy the line)
//! and never lets the buffer grow past its capacity: a line that does not fit is dropped and
//! reported to the caller. Lines are written whole and in the order pushed. Closing writes
//! everything pushed before it, flushes, and ends the thread; dropping the last handle
//! closes without waiting on a tokio worker (a stalled disk must not stall a worker).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer waits after the first line of a batch for more to gather.
pub const LINGER: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct State {
    buf: Vec<u8>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A line sink: cheap to clone, every clone feeds the same writer thread.
#[derive(Debug, Clone)]
pub struct Batch {
    shared: Arc<Shared>,
    capacity: usize,
}

/// Owns the writer thread: closing or dropping it writes what is left and ends the thread.
#[derive(Debug)]
pub struct Writer {
    batch: Batch,
    thread: Option<JoinHandle<()>>,
}

impl Batch {
    /// Starts a writer thread named `name` writing batches to `out`. At most `capacity`
    /// bytes wait; `on_error` hears a failed write (not for standard error itself).
    pub fn start<W: Write + Send + 'static>(
        name: &str,
        out: W,
        capacity: usize,
        on_error: Option<fn()>,
    ) -> std::io::Result<(Batch, Writer)> {
        let batch = Batch {
            shared: Arc::new(Shared::default()),
            capacity,
        };
        let shared = batch.shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&shared, out, on_error))?;
        Ok((
            batch.clone(),
            Writer {
                batch,
                thread: Some(thread),
            },
        ))
    }

    /// Appends `line` and, when `newline`, a `\n`. False when it did not fit (the writer
    /// is behind) or the writer is closed: the line is dropped.
    pub fn push(&self, line: &[u8], newline: bool) -> bool {
        let n = line.len() + usize::from(newline);
        let mut st = self.shared.lock();
        if st.closed || st.buf.len().saturating_add(n) > self.capacity {
            return false;
        }
        let was_empty = st.buf.is_empty();
        st.buf.extend_from_slice(line);
        if newline {
            st.buf.push(b'\n');
        }
        drop(st);
        if was_empty {
            self.shared.wake.notify_one();
        }
        true
    }
}

impl Writer {
    /// Stops taking lines and waits until every line pushed is written and flushed.
    /// Blocks the calling thread: call it off the async runtime.
    pub fn close(&mut self) {
        self.batch.shared.lock().closed = true;
        self.batch.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.batch.shared.lock().closed = true;
        self.batch.shared.wake.notify_one();
        let Some(t) = self.thread.take() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            let _ = t.join();
        }
        // On a tokio worker the thread finishes on its own, unjoined.
    }
}

fn run<W: Write>(shared: &Shared, mut out: W, on_error: Option<fn()>) {
    let mut spare: Vec<u8> = Vec::new();
    loop {
        let mut st = shared.lock();
        while st.buf.is_empty() && !st.closed {
            st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.buf.is_empty() {
            // Closed, and nothing left.
            break;
        }
        if !st.closed {
            // Let more lines gather (a close cuts the wait short).
            st = shared
                .wake
                .wait_timeout_while(st, LINGER, |s| !s.closed)
                .map_or_else(|e| e.into_inner().0, |r| r.0);
        }
        std::mem::swap(&mut st.buf, &mut spare);
        drop(st);
        let ok = out.write_all(&spare).and_then(|()| out.flush()).is_ok();
        if !ok && let Some(f) = on_error {
            f();
        }
        spare.clear();
        // A burst can leave a large buffer behind: give it back once things are quiet.
        if spare.capacity() > 1024 * 1024 {
            spare = Vec::new();
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// A sink that reports each write it gets.
    struct Sink(std::sync::mpsc::Sender<Vec<u8>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_pushed_together_are_written_in_one_call_in_order() {
        let (tx, rx) = channel();
        let (b, mut w) = Batch::start("t", Sink(tx), 1 << 20, None).unwrap();
        for i in 0..100 {
            assert!(b.push(format!("{i}").as_bytes(), true));
        }
        w.close();
        let writes: Vec<Vec<u8>> = rx.try_iter().collect();
        let text: String = writes.iter().map(|w| String::from_utf8_lossy(w)).collect();
        let expect: String = (0..100).map(|i| format!("{i}\n")).collect();
        assert_eq!(text, expect);
        // 100 lines pushed within one linger: far fewer writes than lines.
        assert!(writes.len() < 10, "{} writes", writes.len());
    }

    #[test]
    fn a_line_that_does_not_fit_is_dropped_and_said_so() {
        let (tx, _rx) = channel();
        let (b, mut w) = Batch::start("t", Sink(tx), 8, None).unwrap();
        assert!(!b.push(b"123456789", false), "longer than the capacity");
        assert!(!b.push(b"12345678", true), "its newline does not fit");
        assert!(b.push(b"1234567", true));
        w.close();
        assert!(!b.push(b"x", true), "closed");
    }

    #[test]
    fn close_writes_what_is_left() {
        let path = std::env::temp_dir().join(format!("gw-batch-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let (b, mut w) = Batch::start("t", file, 1 << 20, None).unwrap();
        b.push(b"a", true);
        b.push(b"b", true);
        w.close();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
        let _ = std::fs::remove_file(&path);
    }
}
