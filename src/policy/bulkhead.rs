//! The bulkhead of one provider: at most `max_concurrency` requests in flight, at most
//! `queue_size` more waiting (first come, first served) for up to `queue_timeout`.
//!
//! The permit is held by the response-body wrapper until the body ends, not until the
//! headers arrive, so a long stream occupies its slot for as long as it runs. Rejections
//! here are the gateway's own overload: they never touch the provider's breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::Limits;

/// Why no slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `queue_size` requests are already waiting.
    QueueFull,
    /// No slot within `queue_timeout`.
    QueueTimeout,
}

/// A provider's concurrency limit and wait queue.
#[derive(Debug)]
pub struct Bulkhead {
    slots: Arc<Semaphore>,
    // Settings live in atomics so a config reload can change them in place.
    max: AtomicU32,
    queue_size: AtomicU32,
    queue_timeout: AtomicU64,
    queued: AtomicU32,
    in_flight: Arc<AtomicU32>,
}

/// A granted slot; freed on drop.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: Arc<AtomicU32>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, in_flight: &Arc<AtomicU32>) -> Slot {
        in_flight.fetch_add(1, Ordering::AcqRel);
        Slot {
            _permit: permit,
            in_flight: in_flight.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Leaves the queue count when the waiter is done or cancelled (client gone).
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// A bulkhead with all slots free.
    pub fn new(l: &Limits) -> Bulkhead {
        Bulkhead {
            slots: Arc::new(Semaphore::new(l.max_concurrency as usize)),
            max: AtomicU32::new(l.max_concurrency),
            queue_size: AtomicU32::new(l.queue_size),
            queue_timeout: AtomicU64::new(nanos(l.queue_timeout)),
            queued: AtomicU32::new(0),
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Applies new limits (config reload) without dropping anyone: more slots are added
    /// at once; fewer are taken back as requests in flight finish.
    pub fn update(&self, l: &Limits) {
        self.queue_size.store(l.queue_size, Ordering::Relaxed);
        self.queue_timeout
            .store(nanos(l.queue_timeout), Ordering::Relaxed);
        let old = self.max.swap(l.max_concurrency, Ordering::AcqRel);
        let new = l.max_concurrency;
        if new > old {
            self.slots.add_permits((new - old) as usize);
        } else if new < old {
            let surplus = (old - new) as usize;
            let gone = self.slots.forget_permits(surplus);
            if gone < surplus {
                // The rest are in use: queue for them like any request, then retire them.
                let slots = self.slots.clone();
                let rest = (surplus - gone) as u32;
                tokio::spawn(async move {
                    if let Ok(p) = slots.acquire_many_owned(rest).await {
                        p.forget();
                    }
                });
            }
        }
    }

    /// Waits for a slot; returns it with the time spent waiting.
    pub async fn acquire(&self) -> Result<(Slot, Duration), Rejected> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok((Slot::new(p, &self.in_flight), Duration::ZERO));
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.queue_size.load(Ordering::Relaxed) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejected::QueueFull);
        }
        let _waiting = Waiting(&self.queued);
        let start = Instant::now();
        match tokio::time::timeout(self.queue_timeout(), self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok((Slot::new(p, &self.in_flight), start.elapsed())),
            // The semaphore is never closed; treat it as full if it ever is.
            Ok(Err(_)) => Err(Rejected::QueueFull),
            Err(_) => Err(Rejected::QueueTimeout),
        }
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> u32 {
        self.queued.load(Ordering::Acquire)
    }

    /// `queue_timeout`, the hint given to clients turned away.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_nanos(self.queue_timeout.load(Ordering::Relaxed))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: u32, queue: u32, timeout_ms: u64) -> Limits {
        Limits {
            max_concurrency: max,
            queue_size: queue,
            queue_timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn caps_in_flight_and_queues_fifo() {
        let b = Arc::new(Bulkhead::new(&limits(1, 2, 10_000)));
        let (p1, waited) = b.acquire().await.unwrap();
        assert_eq!(waited, Duration::ZERO);
        assert_eq!(b.in_flight(), 1);
        let (b2, b3) = (b.clone(), b.clone());
        let w2 = tokio::spawn(async move { b2.acquire().await });
        tokio::task::yield_now().await;
        let w3 = tokio::spawn(async move { b3.acquire().await });
        tokio::task::yield_now().await;
        assert_eq!(b.queued(), 2);
        assert_eq!(b.acquire().await.unwrap_err(), Rejected::QueueFull);
        tokio::time::advance(Duration::from_millis(300)).await;
        drop(p1);
        let (p2, waited) = w2.await.unwrap().unwrap();
        assert!(waited >= Duration::from_millis(300));
        assert!(!w3.is_finished());
        drop(p2);
        let _p3 = w3.await.unwrap().unwrap();
        assert_eq!(b.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_timeout_and_zero_queue() {
        let b = Bulkhead::new(&limits(1, 1, 500));
        let _p = b.acquire().await.unwrap();
        assert_eq!(b.acquire().await.unwrap_err(), Rejected::QueueTimeout);
        assert_eq!(b.queued(), 0);
        let z = Bulkhead::new(&limits(1, 0, 500));
        let _p = z.acquire().await.unwrap();
        assert_eq!(z.acquire().await.unwrap_err(), Rejected::QueueFull);
    }

    #[tokio::test(start_paused = true)]
    async fn update_grows_and_shrinks_without_dropping_anyone() {
        let b = Bulkhead::new(&limits(2, 0, 500));
        let p1 = b.acquire().await.unwrap();
        let p2 = b.acquire().await.unwrap();
        b.update(&limits(3, 0, 500));
        let p3 = b.acquire().await.unwrap();
        assert_eq!(b.in_flight(), 3);
        b.update(&limits(1, 0, 500));
        assert_eq!(b.acquire().await.unwrap_err(), Rejected::QueueFull);
        drop((p1, p2));
        tokio::task::yield_now().await;
        // Two slots were retired as they came free; the third is still in use.
        assert_eq!(b.acquire().await.unwrap_err(), Rejected::QueueFull);
        drop(p3);
        b.acquire().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiter_leaves_the_queue() {
        let b = Bulkhead::new(&limits(1, 5, 10_000));
        let _p = b.acquire().await.unwrap();
        let waiter = b.acquire();
        let r = tokio::time::timeout(Duration::from_millis(10), waiter).await;
        assert!(r.is_err());
        assert_eq!(b.queued(), 0);
    }
}
