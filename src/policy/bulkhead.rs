//! The bulkhead of one provider: at most `max_concurrency` requests in flight, at most
//! `queue_size` more waiting, first come first served, for up to `queue_timeout`.
//!
//! Pure accounting, no clock and no runtime: a request asks for a slot and is granted one,
//! queued (with a [`Waiter`] to call when a slot is handed to it) or refused. Whoever holds
//! a slot gives it back with [`Bulkhead::release`], which hands it straight to the first
//! waiter still there. The caller owns time: it cancels a waiter whose `queue_timeout`
//! passed ([`Bulkhead::cancel`]). The live proxy waits on a channel; `gateway replay` on its
//! virtual clock — one set of rules for both.
//!
//! Invariants: `in_flight` counts slots handed out and not yet released; a waiter is either
//! in the queue or has been handed a slot (its wake call ran, under the lock, and returned
//! true), never both, so a cancelled waiter that lost the race to a hand-over knows it holds
//! a slot. Rejections here are the gateway's own overload: they never touch the breaker.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Limits;

/// Called, under the bulkhead's lock, when a slot is handed to a waiter. Returns false
/// when the waiter is gone (the slot then goes to the next one).
pub type Waiter = Box<dyn FnOnce() -> bool + Send>;

/// Why no slot was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `queue_size` requests are already waiting.
    QueueFull,
    /// No slot within `queue_timeout`.
    QueueTimeout,
}

/// The answer to a request for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A slot is held now.
    Granted,
    /// Waiting in line; the id cancels the wait.
    Queued(u64),
    /// The queue is full.
    Full,
}

struct Inner {
    max: u32,
    queue_size: u32,
    queue_timeout: Duration,
    in_flight: u32,
    waiting: VecDeque<(u64, Waiter)>,
    next_id: u64,
}

/// A provider's concurrency limit and wait queue.
pub struct Bulkhead {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead")
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl Bulkhead {
    /// A bulkhead with all slots free.
    pub fn new(l: &Limits) -> Bulkhead {
        Bulkhead {
            inner: Mutex::new(Inner {
                max: l.max_concurrency,
                queue_size: l.queue_size,
                queue_timeout: l.queue_timeout,
                in_flight: 0,
                waiting: VecDeque::new(),
                next_id: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent counts.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies new limits (config reload) without dropping anyone: more slots go to the
    /// waiters at once; fewer are taken back as requests in flight finish.
    pub fn update(&self, l: &Limits) {
        let mut g = self.lock();
        g.max = l.max_concurrency;
        g.queue_size = l.queue_size;
        g.queue_timeout = l.queue_timeout;
        while g.in_flight < g.max && hand_over(&mut g) {}
    }

    /// Takes a slot if one is free now; never queues.
    pub fn try_acquire(&self) -> bool {
        let mut g = self.lock();
        if g.in_flight < g.max && g.waiting.is_empty() {
            g.in_flight += 1;
            true
        } else {
            false
        }
    }

    /// Takes a free slot, or joins the queue with `wake`, or is refused.
    pub fn acquire(&self, wake: Waiter) -> Admission {
        let mut g = self.lock();
        if g.in_flight < g.max && g.waiting.is_empty() {
            g.in_flight += 1;
            return Admission::Granted;
        }
        if g.waiting.len() >= g.queue_size as usize {
            return Admission::Full;
        }
        let id = g.next_id;
        g.next_id = g.next_id.wrapping_add(1);
        g.waiting.push_back((id, wake));
        Admission::Queued(id)
    }

    /// Leaves the queue (timeout, client gone). False when the waiter was already handed a
    /// slot: the caller then holds it and must release it.
    pub fn cancel(&self, id: u64) -> bool {
        let mut g = self.lock();
        match g.waiting.iter().position(|(i, _)| *i == id) {
            Some(pos) => {
                g.waiting.remove(pos);
                true
            }
            None => false,
        }
    }

    /// Gives a slot back: it goes to the first waiter still there, or is freed (or retired,
    /// after a reload lowered `max_concurrency`).
    pub fn release(&self) {
        let mut g = self.lock();
        g.in_flight = g.in_flight.saturating_sub(1);
        while g.in_flight < g.max && hand_over(&mut g) {}
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> u32 {
        self.lock().in_flight
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> u32 {
        u32::try_from(self.lock().waiting.len()).unwrap_or(u32::MAX)
    }

    /// `queue_timeout`: the longest wait, and the hint given to clients turned away.
    pub fn queue_timeout(&self) -> Duration {
        self.lock().queue_timeout
    }

    /// `max_concurrency`.
    pub fn max_concurrency(&self) -> u32 {
        self.lock().max
    }
}

/// Hands one slot to the first waiter that takes it; false when nobody is waiting.
fn hand_over(g: &mut Inner) -> bool {
    while let Some((_, wake)) = g.waiting.pop_front() {
        // Counted before the wake call, which runs under the lock: a waiter that cancels
        // afterwards finds itself gone from the queue and knows it holds this slot.
        g.in_flight += 1;
        if wake() {
            return true;
        }
        g.in_flight -= 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn limits(max: u32, queue: u32) -> Limits {
        Limits {
            max_concurrency: max,
            queue_size: queue,
            queue_timeout: Duration::from_secs(10),
        }
    }

    /// A waiter that records its wake-up in `woken` (by its number) and accepts.
    fn waiter(n: u32, woken: &Arc<Mutex<Vec<u32>>>) -> Waiter {
        let w = woken.clone();
        Box::new(move || {
            w.lock().unwrap().push(n);
            true
        })
    }

    #[test]
    fn caps_in_flight_and_hands_slots_over_first_come_first_served() {
        let b = Bulkhead::new(&limits(1, 2));
        let woken = Arc::new(Mutex::new(Vec::new()));
        assert!(b.try_acquire());
        assert_eq!(b.in_flight(), 1);
        assert!(matches!(b.acquire(waiter(2, &woken)), Admission::Queued(_)));
        assert!(matches!(b.acquire(waiter(3, &woken)), Admission::Queued(_)));
        assert_eq!(b.queued(), 2);
        assert_eq!(b.acquire(waiter(4, &woken)), Admission::Full);
        assert!(!b.try_acquire(), "waiters go first");
        b.release();
        assert_eq!(*woken.lock().unwrap(), vec![2]);
        assert_eq!(b.in_flight(), 1, "the slot passed to waiter 2");
        b.release();
        b.release();
        assert_eq!(*woken.lock().unwrap(), vec![2, 3]);
        assert_eq!((b.in_flight(), b.queued()), (0, 0));
    }

    #[test]
    fn a_cancelled_waiter_leaves_and_a_late_cancel_owns_its_slot() {
        let b = Bulkhead::new(&limits(1, 5));
        let woken = Arc::new(Mutex::new(Vec::new()));
        assert!(b.try_acquire());
        let Admission::Queued(first) = b.acquire(waiter(1, &woken)) else {
            panic!()
        };
        let Admission::Queued(second) = b.acquire(waiter(2, &woken)) else {
            panic!()
        };
        assert!(b.cancel(first), "timed out while queued");
        assert_eq!(b.queued(), 1);
        b.release();
        assert_eq!(*woken.lock().unwrap(), vec![2]);
        assert!(
            !b.cancel(second),
            "already handed a slot: the caller must release it"
        );
        b.release();
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn a_waiter_that_is_gone_passes_its_slot_on() {
        let b = Bulkhead::new(&limits(1, 5));
        let woken = Arc::new(Mutex::new(Vec::new()));
        assert!(b.try_acquire());
        let _ = b.acquire(Box::new(|| false));
        let _ = b.acquire(waiter(2, &woken));
        b.release();
        assert_eq!(*woken.lock().unwrap(), vec![2]);
        assert_eq!(b.in_flight(), 1);
    }

    #[test]
    fn zero_queue_refuses_at_once() {
        let b = Bulkhead::new(&limits(1, 0));
        assert!(b.try_acquire());
        assert_eq!(b.acquire(Box::new(|| true)), Admission::Full);
    }

    #[test]
    fn update_grows_and_shrinks_without_dropping_anyone() {
        let b = Bulkhead::new(&limits(2, 4));
        let woken = Arc::new(Mutex::new(Vec::new()));
        assert!(b.try_acquire());
        assert!(b.try_acquire());
        let _ = b.acquire(waiter(3, &woken));
        b.update(&limits(3, 4));
        assert_eq!(
            *woken.lock().unwrap(),
            vec![3],
            "a new slot goes to the waiter"
        );
        assert_eq!(b.in_flight(), 3);
        b.update(&limits(1, 4));
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        let _ = b.acquire(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            true
        }));
        b.release();
        b.release();
        assert_eq!(count.load(Ordering::SeqCst), 0, "two slots retired first");
        b.release();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(b.in_flight(), 1);
    }
}
