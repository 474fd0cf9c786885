//! One attempt's hold on a provider, and how a response is settled.
//!
//! The live proxy's side of the bulkhead ([`acquire`], [`Slot`]: a queue wait on a channel,
//! bounded by `queue_timeout`), the [`Lease`] that holds an attempt's slot and breaker
//! ticket until its verdict, and the [`Settle`] that ends a request exactly once: breaker
//! verdict (through [`crate::policy::walk::settle`]), slot, log line, metrics, access log.
//! Every path — a whole answer, a stream's end or failure, a client gone — goes through it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::observe::logging::{RequestLog, Telemetry};
use crate::observe::usage::Usage;
use crate::policy::breaker::{self, Ticket};
use crate::policy::bulkhead::{Admission, Rejected};
use crate::policy::classify::{self, StreamEnd};
use crate::policy::health::Health;
use crate::policy::target_stats::TargetStats;
use crate::policy::walk;
use crate::runtime::route::Target;
use crate::upstream::Provider;

/// How a proxied response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The body was delivered whole.
    Completed,
    /// The upstream failed mid-body (reset, idle or total timeout).
    Failed(StreamFailure),
    /// The client went away before the end.
    ClientGone,
}

impl Outcome {
    /// The log line's `outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed(StreamFailure::Error) => "upstream_stream_error",
            Outcome::Failed(StreamFailure::Idle) => "upstream_idle_timeout",
            Outcome::Failed(StreamFailure::Total) => "upstream_total_timeout",
            Outcome::Failed(StreamFailure::Shutdown) => "shutdown",
            Outcome::ClientGone => "client_gone",
        }
    }
}

/// Why a stream failed after its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFailure {
    /// The upstream connection broke.
    Error,
    /// No chunk for `idle`.
    Idle,
    /// The attempt's `total` deadline passed.
    Total,
    /// The gateway's drain budget ran out (SIGTERM) before the stream ended.
    Shutdown,
}

/// A bulkhead slot held by the live proxy; given back (to the next waiter, if any) on drop.
#[derive(Debug)]
pub struct Slot {
    health: Arc<Health>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.health.bulkhead.release();
    }
}

/// Waits for a slot of `health`'s bulkhead, at most its `queue_timeout`; returns it with the
/// time spent waiting. A waiter dropped on the way (client gone) leaves the queue, or gives
/// back the slot it was handed meanwhile.
pub async fn acquire(health: &Arc<Health>) -> Result<(Slot, Duration), Rejected> {
    let slot = || Slot {
        health: health.clone(),
    };
    if health.bulkhead.try_acquire() {
        return Ok((slot(), Duration::ZERO));
    }
    let start = Instant::now();
    let (tx, rx) = oneshot::channel::<()>();
    let id = match health
        .bulkhead
        .acquire(Box::new(move || tx.send(()).is_ok()))
    {
        Admission::Granted => return Ok((slot(), Duration::ZERO)),
        Admission::Full => return Err(Rejected::QueueFull),
        Admission::Queued(id) => id,
    };
    let mut waiting = Waiting {
        health,
        id,
        rx: Some(rx),
    };
    let timeout = health.bulkhead.queue_timeout();
    let granted = match waiting.rx.as_mut() {
        Some(rx) => tokio::time::timeout(timeout, rx).await,
        None => return Err(Rejected::QueueFull),
    };
    waiting.rx = None;
    match granted {
        Ok(Ok(())) => Ok((slot(), start.elapsed())),
        // The sender is dropped only when the slot went elsewhere, which cannot happen
        // while this receiver lives; answer as a full queue if it ever does.
        Ok(Err(_)) => Err(Rejected::QueueFull),
        Err(_) if health.bulkhead.cancel(id) => Err(Rejected::QueueTimeout),
        // Handed a slot just as the timeout fired: it is ours.
        Err(_) => Ok((slot(), start.elapsed())),
    }
}

/// A place in a bulkhead's queue; leaving it early (client gone) cancels the wait, or gives
/// back a slot that was handed over meanwhile.
struct Waiting<'a> {
    health: &'a Arc<Health>,
    id: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.rx.is_some() && !self.health.bulkhead.cancel(self.id) {
            self.health.bulkhead.release();
        }
    }
}

/// One attempt's hold on a provider: the breaker's ticket and the bulkhead slot. Settled
/// exactly once: explicitly with a verdict, or on drop (the request was abandoned, e.g. the
/// client left) as neutral, so a half-open probe slot can never leak.
#[derive(Debug)]
pub struct Lease {
    telemetry: Arc<Telemetry>,
    provider: Arc<Provider>,
    /// The target's statistics and `[routing] success_window`, for its verdict.
    stats: Arc<TargetStats>,
    window: Duration,
    ticket: Option<Ticket>,
    slot: Option<Slot>,
}

impl Lease {
    /// A lease on `target`'s provider for an admitted request holding `slot`.
    pub fn new(
        target: &Target,
        window: Duration,
        ticket: Ticket,
        slot: Slot,
        telemetry: Arc<Telemetry>,
    ) -> Lease {
        Lease {
            telemetry,
            provider: target.provider.clone(),
            stats: target.stats.clone(),
            window,
            ticket: Some(ticket),
            slot: Some(slot),
        }
    }

    /// Reports the attempt's verdict to the breaker and frees the slot.
    pub fn settle(mut self, verdict: breaker::Outcome) {
        self.release(verdict);
    }

    fn release(&mut self, verdict: breaker::Outcome) {
        if let Some(ticket) = self.ticket.take() {
            let p = &self.provider;
            let now = Instant::now();
            let stats = Some(&*self.stats);
            if let Some(t) = walk::settle(&p.health, stats, ticket, verdict, now, self.window) {
                on_transition(&self.telemetry, p, t.to);
            }
        }
        self.slot = None;
    }
}

/// Logs and counts a breaker state change.
pub fn on_transition(t: &Telemetry, p: &Provider, to: breaker::State) {
    t.metrics.transition(&p.name, to);
    match to {
        breaker::State::Open => tracing::warn!(provider = &*p.name, "circuit opened"),
        to => tracing::info!(provider = &*p.name, "circuit {}", to.as_str()),
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release(breaker::Outcome::Neutral);
    }
}

/// What must happen exactly once when a response is over.
#[derive(Debug)]
pub struct Settle {
    log: RequestLog,
    lease: Option<Lease>,
}

impl Settle {
    /// Settles with the request's log record and, for a streamed attempt, its lease.
    pub fn new(log: RequestLog, lease: Option<Lease>) -> Self {
        Self { log, lease }
    }

    /// The usage the provider reported in the stream.
    pub fn set_usage(&mut self, u: Usage) {
        self.log.usage = Some(u);
    }

    /// Records the outcome: the breaker verdict (a completed stream is a success, a failed
    /// one a failure, a client that left says nothing), the slot, the log line.
    pub fn finish(mut self, outcome: Outcome) {
        if let Some(lease) = self.lease.take() {
            // A streamed attempt held its slot until now; a failure names its kind.
            let (error, kind) = match outcome {
                Outcome::Completed => (None, None),
                Outcome::ClientGone => (Some("client_gone"), None),
                Outcome::Failed(StreamFailure::Error) => (Some("reset"), Some("reset")),
                Outcome::Failed(StreamFailure::Idle) => (Some("timeout_idle"), Some("timeout")),
                Outcome::Failed(StreamFailure::Total) => (Some("timeout_total"), Some("timeout")),
                // Cut by the gateway's drain, not by the provider.
                Outcome::Failed(StreamFailure::Shutdown) => (None, None),
            };
            if let Some(kind) = kind {
                lease
                    .telemetry
                    .metrics
                    .upstream_error(&lease.provider.name, kind);
            }
            if let Outcome::Failed(why) = outcome {
                self.log.code = Some(match why {
                    StreamFailure::Idle => "upstream_idle_timeout",
                    _ => "upstream_stream_error",
                });
            }
            self.log.end_attempt(Instant::now(), error);
            lease.settle(classify::stream_verdict(match outcome {
                Outcome::Completed => StreamEnd::Completed,
                Outcome::Failed(StreamFailure::Shutdown) => StreamEnd::Shutdown,
                Outcome::Failed(_) => StreamEnd::Failed,
                Outcome::ClientGone => StreamEnd::ClientGone,
            }));
        }
        self.log.emit(outcome.as_str());
    }
}
