//! The response-body wrapper of streamed answers.
//!
//! Every streamed response passes through one [`GuardedStream`]. It forwards chunks as they
//! arrive (no buffering, no re-encoding), enforces the `idle` gap between chunks, the
//! attempt's `total` deadline and the drain's hard stop, and turns an upstream failure after
//! the first byte into one SSE error event followed by an aborted connection, never a clean
//! end.
//!
//! `total` and the hard stop are checked on every poll, before the upstream body is polled:
//! an upstream that always has the next chunk ready (or a client that reads slower than the
//! upstream writes) never makes the inner body return `Pending`, and a deadline checked only
//! then would never fire. Whenever the stream returns `Pending`, every timer has registered
//! the waker.
//!
//! It owns the request's [`Settle`] and settles it exactly once: when the body ends, when it
//! fails, or when it is dropped before either (the client went away). Later stages hang the
//! concurrency permit, the breaker outcome and metrics on that same settle.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::lease::{Outcome, Settle, StreamFailure};
use crate::body::{BoxError, UpstreamBody, after};
use crate::error::{Api, anthropic_error_body, error_body};
use crate::observe::usage::SseUsage;
use crate::upstream::error_chain;

enum Phase {
    Streaming,
    /// The error event is out. The next poll yields once so hyper flushes it (hyper polls
    /// the body again before flushing while its buffer has room); the one after aborts.
    Aborting {
        yielded: bool,
    },
    Done,
}

/// A streamed upstream body with timeouts and a settle-once guard.
pub struct GuardedStream {
    /// The client's API: the shape of the error event.
    api: Api,
    /// Bytes read before the commit point, sent before anything else.
    held: Option<Bytes>,
    inner: UpstreamBody,
    idle: Duration,
    last_chunk: Instant,
    idle_timer: Pin<Box<Sleep>>,
    total_timer: Pin<Box<Sleep>>,
    /// True when the bytes sent so far end at an SSE event boundary.
    at_boundary: bool,
    phase: Phase,
    settle: Option<Settle>,
    /// Resolves when the drain budget is spent.
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Follows the stream for the provider's `usage`.
    usage: SseUsage,
    /// Polls since the stream started; paces the check of `stop` on the ready path.
    polls: u32,
}

/// On the ready path the hard stop is polled once every this many polls, since polling it
/// takes the cancellation token's lock (shared by every stream). A stream that returns
/// `Pending` polls it every time; one that never does sees the stop within this many chunks.
const STOP_CHECK_EVERY: u32 = 16;

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream").finish_non_exhaustive()
    }
}

impl GuardedStream {
    /// Wraps `inner`, sending `held` first (the preamble and first content event read
    /// before the commit point); `deadline` is the attempt's `total` deadline.
    pub fn new(
        api: Api,
        held: Bytes,
        inner: UpstreamBody,
        idle: Duration,
        deadline: Instant,
        settle: Settle,
        stop: Pin<Box<WaitForCancellationFutureOwned>>,
    ) -> Self {
        let now = Instant::now();
        Self {
            api,
            held: (!held.is_empty()).then_some(held),
            inner,
            idle,
            last_chunk: now,
            idle_timer: Box::pin(tokio::time::sleep_until(after(now, idle))),
            total_timer: Box::pin(tokio::time::sleep_until(deadline)),
            at_boundary: true,
            phase: Phase::Streaming,
            settle: Some(settle),
            stop,
            usage: SseUsage::default(),
            polls: 0,
        }
    }

    fn settle(&mut self, outcome: Outcome) {
        if let Some(mut s) = self.settle.take() {
            if let Some(u) = self.usage.last {
                s.set_usage(u);
            }
            s.finish(outcome);
        }
    }

    /// Settles as failed and returns the SSE error event to send.
    fn fail(&mut self, why: StreamFailure, detail: String) -> Bytes {
        self.settle(Outcome::Failed(why));
        self.phase = Phase::Aborting { yielded: false };
        let (code, message) = match why {
            StreamFailure::Idle => (
                "upstream_idle_timeout",
                format!(
                    "the provider sent nothing for {}; the stream was cut",
                    humantime::format_duration(self.idle)
                ),
            ),
            StreamFailure::Total => (
                "upstream_stream_error",
                format!("the stream exceeded the total timeout: {detail}"),
            ),
            StreamFailure::Error => (
                "upstream_stream_error",
                format!("the provider's stream failed: {detail}"),
            ),
            StreamFailure::Shutdown => (
                "upstream_stream_error",
                "the gateway is shutting down and its drain time ran out; the stream was cut"
                    .to_string(),
            ),
        };
        let mut ev = Vec::with_capacity(message.len() + 160);
        if !self.at_boundary {
            // Terminate the half-sent event so ours parses on its own.
            ev.extend_from_slice(b"\n\n");
        }
        match self.api {
            Api::OpenAi => {
                ev.extend_from_slice(b"data: ");
                ev.extend_from_slice(&error_body(&message, "server_error", code));
            }
            // Anthropic clients end on `event: error`, never `message_stop` (contract §5).
            Api::Anthropic => {
                ev.extend_from_slice(b"event: error\ndata: ");
                ev.extend_from_slice(&anthropic_error_body(502, &format!("{code}: {message}")));
            }
        }
        ev.extend_from_slice(b"\n\n");
        Bytes::from(ev)
    }

    /// The deadlines that hold whatever the upstream's pace, checked before each poll of the
    /// upstream body: the hard stop (every [`STOP_CHECK_EVERY`] polls) and `total` (a clock
    /// read, no timer poll).
    fn check_deadlines(&mut self, cx: &mut Context<'_>, now: Instant) -> Option<StreamFailure> {
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(STOP_CHECK_EVERY) && self.stop.as_mut().poll(cx).is_ready() {
            return Some(StreamFailure::Shutdown);
        }
        if now >= self.total_timer.deadline() {
            return Some(StreamFailure::Total);
        }
        None
    }

    /// Polls the timers (registering the waker with each); returns the failure if one fired.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Option<StreamFailure> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Some(StreamFailure::Shutdown);
        }
        if self.total_timer.as_mut().poll(cx).is_ready() {
            return Some(StreamFailure::Total);
        }
        // The idle timer is re-armed lazily: a chunk only records its time, and the timer,
        // when it fires early, is pushed to `last_chunk + idle`.
        loop {
            if self.idle_timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            let due = after(self.last_chunk, self.idle);
            if Instant::now() >= due {
                return Some(StreamFailure::Idle);
            }
            self.idle_timer.as_mut().reset(due);
        }
    }
}

impl Body for GuardedStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Done => return Poll::Ready(None),
            Phase::Aborting { yielded: false } => {
                this.phase = Phase::Aborting { yielded: true };
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Phase::Aborting { yielded: true } => {
                this.phase = Phase::Done;
                return Poll::Ready(Some(Err(
                    "upstream stream failed; connection aborted".into()
                )));
            }
            Phase::Streaming => {}
        }
        if let Some(held) = this.held.take() {
            this.usage.feed(&held);
            this.at_boundary = held.ends_with(b"\n\n") || held.ends_with(b"\r\n\r\n");
            return Poll::Ready(Some(Ok(Frame::data(held))));
        }
        let now = Instant::now();
        if let Some(why) = this.check_deadlines(cx, now) {
            let ev = this.fail(why, "deadline reached".to_string());
            return Poll::Ready(Some(Ok(Frame::data(ev))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref()
                    && !d.is_empty()
                {
                    this.last_chunk = now;
                    this.usage.feed(d);
                    this.at_boundary = d.ends_with(b"\n\n") || d.ends_with(b"\r\n\r\n");
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let ev = this.fail(StreamFailure::Error, error_chain(e.as_ref()));
                Poll::Ready(Some(Ok(Frame::data(ev))))
            }
            Poll::Ready(None) => {
                this.phase = Phase::Done;
                this.settle(Outcome::Completed);
                Poll::Ready(None)
            }
            Poll::Pending => match this.poll_timers(cx) {
                None => Poll::Pending,
                Some(why) => {
                    let detail = "deadline reached".to_string();
                    let ev = this.fail(why, detail);
                    Poll::Ready(Some(Ok(Frame::data(ev))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown on purpose: a stream is sent chunked, so an error event can still follow.
        SizeHint::default()
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. Dropping `inner` with it cancels the
        // upstream request at once.
        self.settle(Outcome::ClientGone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::logging::{RequestLog, Telemetry};
    use crate::upstream::mock::MockBody;
    use http::{HeaderValue, Method};
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    /// A guarded stream over an upstream that always has its next chunk ready.
    fn always_ready(total: Duration, stop: &CancellationToken) -> GuardedStream {
        let chunk = Bytes::from_static(b"data: {\"choices\":[]}\n\n");
        let inner = UpstreamBody::Boxed(Box::pin(MockBody::ready(vec![chunk; 10_000])));
        let log = RequestLog::new(
            Arc::new(Telemetry::default()),
            HeaderValue::from_static("t"),
            Method::POST,
            "/v1/chat/completions".into(),
            Instant::now(),
        );
        GuardedStream::new(
            Api::OpenAi,
            Bytes::new(),
            inner,
            Duration::from_secs(60),
            Instant::now() + total,
            Settle::new(log, None),
            Box::pin(stop.clone().cancelled_owned()),
        )
    }

    /// The next frame's data, as text; panics on an error or the end.
    async fn next_text(s: &mut GuardedStream) -> String {
        let f = s.frame().await.expect("a frame").expect("not an error");
        String::from_utf8(f.into_data().expect("data").to_vec()).unwrap()
    }

    /// After the error event: the connection is aborted, never ended cleanly.
    async fn assert_aborted(s: &mut GuardedStream) {
        assert!(matches!(s.frame().await, Some(Err(_))));
        assert!(s.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn total_cuts_an_upstream_that_is_always_ready() {
        let stop = CancellationToken::new();
        let mut s = always_ready(Duration::from_secs(1), &stop);
        for _ in 0..100 {
            assert!(next_text(&mut s).await.contains("choices"));
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        // The inner body is ready on this poll too; the deadline wins all the same.
        let ev = next_text(&mut s).await;
        assert!(ev.starts_with("data: {\"error\""), "{ev}");
        assert!(ev.contains("upstream_stream_error"), "{ev}");
        assert!(ev.contains("total timeout"), "{ev}");
        assert_aborted(&mut s).await;
    }

    #[tokio::test(start_paused = true)]
    async fn hard_stop_cuts_an_upstream_that_is_always_ready() {
        let stop = CancellationToken::new();
        let mut s = always_ready(Duration::from_secs(600), &stop);
        for _ in 0..100 {
            assert!(next_text(&mut s).await.contains("choices"));
        }
        stop.cancel();
        let mut passed = 0;
        let ev = loop {
            let t = next_text(&mut s).await;
            if t.contains("\"error\"") {
                break t;
            }
            passed += 1;
        };
        assert!(passed < STOP_CHECK_EVERY, "{passed} chunks after the stop");
        assert!(ev.contains("upstream_stream_error"), "{ev}");
        assert!(ev.contains("shutting down"), "{ev}");
        assert_aborted(&mut s).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_within_its_deadlines_ends_cleanly() {
        let chunk = Bytes::from_static(b"data: [DONE]\n\n");
        let log = RequestLog::new(
            Arc::new(Telemetry::default()),
            HeaderValue::from_static("t"),
            Method::POST,
            "/v1/chat/completions".into(),
            Instant::now(),
        );
        let stop = CancellationToken::new();
        let mut s = GuardedStream::new(
            Api::OpenAi,
            Bytes::new(),
            UpstreamBody::Boxed(Box::pin(MockBody::ready(vec![chunk; 3]))),
            Duration::from_secs(1),
            Instant::now() + Duration::from_secs(1),
            Settle::new(log, None),
            Box::pin(stop.cancelled_owned()),
        );
        let body = (&mut s).collect().await.expect("clean end").to_bytes();
        assert_eq!(body.len(), 3 * 14);
        assert!(s.is_end_stream());
    }
}
