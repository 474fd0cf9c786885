//! The circuit breaker of one provider: a lock-free state machine whose methods take `now`.
//!
//! States: closed → open after `failure_threshold` consecutive failures; open rejects
//! without touching the network until its cooldown has passed; then half-open admits
//! exactly `half_open_probes` requests (all others see it open). A probe success closes the
//! circuit; a probe failure reopens it with the cooldown doubled, up to `max_cooldown`.
//! An operator may force it open (it then never half-opens by itself) or closed.
//!
//! State, probe count and an epoch share one `AtomicU64` updated by compare-and-swap, so
//! "exactly N probes" holds under any contention and a stale ticket (from before a
//! transition) can never move the state. What counts as a failure is the caller's business
//! (contract §6); the breaker only hears [`Outcome`]s.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Breaker as Settings;

/// Breaker state, as shown to operators and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed,
    /// Requests are rejected locally until the cooldown has passed.
    Open,
    /// A limited number of probes are let through.
    HalfOpen,
    /// Opened by an operator; stays open until closed by one.
    ForcedOpen,
}

impl State {
    /// `closed`, `open`, `half_open`, `forced_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
        }
    }

    fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
        }
    }

    fn from_code(c: u64) -> State {
        match c & 0xff {
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Closed,
        }
    }
}

/// What an attempt meant for the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered (including its own 4xx).
    Success,
    /// Connect error, reset, timeout, 500/502/503/504.
    Failure,
    /// Says nothing about health: 429, client gone, local overload.
    Neutral,
}

/// Permission to send one request; hand it back through [`Breaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "record the outcome, or a half-open probe slot leaks"]
pub struct Ticket {
    probe: bool,
    epoch: u32,
    half_opened: bool,
}

impl Ticket {
    /// True for the request whose admission moved the circuit from open to half-open.
    pub fn half_opened(&self) -> bool {
        self.half_opened
    }

    /// True when this request is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A state change, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub to: State,
}

// Word layout: bits 0..8 state, 8..32 probes admitted in this half-open window, 32..64 epoch
// (bumped on every transition, so a compare-and-swap never succeeds on a stale view).
fn pack(state: State, probes: u32, epoch: u32) -> u64 {
    state.code() | (u64::from(probes & 0xff_ffff) << 8) | (u64::from(epoch) << 32)
}

fn unpack(w: u64) -> (State, u32, u32) {
    (
        State::from_code(w),
        ((w >> 8) & 0xff_ffff) as u32,
        (w >> 32) as u32,
    )
}

/// One provider's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    // Settings live in atomics so a config reload can change them in place, keeping state.
    threshold: AtomicU32,
    probes: AtomicU32,
    base_cooldown: AtomicU64,
    max_cooldown: AtomicU64,
    base: Instant,
    word: AtomicU64,
    failures: AtomicU32,
    /// Nanoseconds since `base` when the open circuit may half-open.
    open_until: AtomicU64,
    /// Current cooldown in nanoseconds (doubles on failed probes).
    cooldown: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: &Settings, now: Instant) -> Breaker {
        let b = Breaker {
            threshold: AtomicU32::new(0),
            probes: AtomicU32::new(0),
            base_cooldown: AtomicU64::new(0),
            max_cooldown: AtomicU64::new(0),
            base: now,
            word: AtomicU64::new(pack(State::Closed, 0, 0)),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            cooldown: AtomicU64::new(nanos(settings.cooldown)),
        };
        b.update(settings);
        b
    }

    /// Applies new settings (config reload), keeping the state; the current cooldown is
    /// kept within the new bounds.
    pub fn update(&self, s: &Settings) {
        let base = nanos(s.cooldown);
        let max = nanos(s.max_cooldown).max(base);
        self.threshold
            .store(s.failure_threshold.max(1), Ordering::Relaxed);
        self.probes
            .store(s.half_open_probes.max(1), Ordering::Relaxed);
        self.base_cooldown.store(base, Ordering::Relaxed);
        self.max_cooldown.store(max, Ordering::Relaxed);
        let cd = self.cooldown.load(Ordering::Relaxed).clamp(base, max);
        self.cooldown.store(cd, Ordering::Relaxed);
    }

    /// One compare-and-swap of the state word; `Err` carries the word as it now is.
    fn swap_word(&self, current: u64, next: u64) -> Result<u64, u64> {
        self.word
            .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
    }

    fn since(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.base))
    }

    /// Asks to send one request. `Err` carries the time until the circuit may half-open.
    pub fn admit(&self, now: Instant) -> Result<Ticket, Duration> {
        let t = self.since(now);
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let (state, probes, epoch) = unpack(w);
            match state {
                State::Closed => {
                    return Ok(Ticket {
                        probe: false,
                        epoch,
                        half_opened: false,
                    });
                }
                State::ForcedOpen => {
                    return Err(Duration::from_nanos(
                        self.base_cooldown.load(Ordering::Relaxed),
                    ));
                }
                State::Open => {
                    let until = self.open_until.load(Ordering::Acquire);
                    if t < until {
                        return Err(Duration::from_nanos(until - t));
                    }
                    // Cooldown over: this request becomes the first probe.
                    let next = pack(State::HalfOpen, 1, epoch.wrapping_add(1));
                    match self.swap_word(w, next) {
                        Ok(_) => {
                            return Ok(Ticket {
                                probe: true,
                                epoch: epoch.wrapping_add(1),
                                half_opened: true,
                            });
                        }
                        Err(cur) => w = cur,
                    }
                }
                State::HalfOpen => {
                    if probes >= self.probes.load(Ordering::Relaxed) {
                        // Probes are out; their verdict decides. A short hint for the client.
                        return Err(Duration::from_secs(1));
                    }
                    let next = pack(State::HalfOpen, probes + 1, epoch);
                    match self.swap_word(w, next) {
                        Ok(_) => {
                            return Ok(Ticket {
                                probe: true,
                                epoch,
                                half_opened: false,
                            });
                        }
                        Err(cur) => w = cur,
                    }
                }
            }
        }
    }

    /// Would [`Breaker::admit`] let a request through now? Changes nothing: a request asks
    /// this before it queues for a provider slot, and takes its admission (a probe
    /// included) only once it holds the slot, so no probe waits in a queue and nothing
    /// admitted while closed is sent after the circuit opened. `Err` as for `admit`.
    pub fn would_admit(&self, now: Instant) -> Result<(), Duration> {
        let (state, probes, _) = unpack(self.word.load(Ordering::Acquire));
        match state {
            State::Closed => Ok(()),
            State::ForcedOpen => Err(Duration::from_nanos(
                self.base_cooldown.load(Ordering::Relaxed),
            )),
            State::Open => {
                let until = self.open_until.load(Ordering::Acquire);
                let t = self.since(now);
                if t < until {
                    Err(Duration::from_nanos(until - t))
                } else {
                    Ok(())
                }
            }
            State::HalfOpen if probes < self.probes.load(Ordering::Relaxed) => Ok(()),
            State::HalfOpen => Err(Duration::from_secs(1)),
        }
    }

    /// True while an operator holds the circuit open.
    pub fn is_forced_open(&self) -> bool {
        unpack(self.word.load(Ordering::Acquire)).0 == State::ForcedOpen
    }

    /// Reports how an admitted request went; returns the transition it caused, if any.
    pub fn record(&self, ticket: Ticket, outcome: Outcome, now: Instant) -> Option<Transition> {
        match (ticket.probe, outcome) {
            (false, Outcome::Success) => {
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
                None
            }
            (false, Outcome::Neutral) => None,
            (false, Outcome::Failure) => {
                let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if n < self.threshold.load(Ordering::Relaxed) {
                    return None;
                }
                let w = self.word.load(Ordering::Acquire);
                let (state, _, epoch) = unpack(w);
                // Only a closed circuit opens on ordinary failures; late failures of
                // requests admitted before it opened change nothing.
                if state != State::Closed || epoch != ticket.epoch {
                    return None;
                }
                let base = self.base_cooldown.load(Ordering::Relaxed);
                self.cooldown.store(base, Ordering::Relaxed);
                self.open(w, epoch, base, now)
            }
            (true, Outcome::Success) => {
                let w = self.word.load(Ordering::Acquire);
                let (state, _, epoch) = unpack(w);
                if state != State::HalfOpen || epoch != ticket.epoch {
                    return None;
                }
                let next = pack(State::Closed, 0, epoch.wrapping_add(1));
                self.word
                    .compare_exchange(w, next, Ordering::AcqRel, Ordering::Acquire)
                    .ok()
                    .map(|_| {
                        self.failures.store(0, Ordering::Relaxed);
                        let base = self.base_cooldown.load(Ordering::Relaxed);
                        self.cooldown.store(base, Ordering::Relaxed);
                        Transition { to: State::Closed }
                    })
            }
            (true, Outcome::Failure) => {
                let w = self.word.load(Ordering::Acquire);
                let (state, _, epoch) = unpack(w);
                if state != State::HalfOpen || epoch != ticket.epoch {
                    return None;
                }
                let max = self.max_cooldown.load(Ordering::Relaxed);
                let doubled = self
                    .cooldown
                    .load(Ordering::Relaxed)
                    .saturating_mul(2)
                    .min(max);
                let t = self.open(w, epoch, doubled, now);
                if t.is_some() {
                    self.cooldown.store(doubled, Ordering::Relaxed);
                }
                t
            }
            (true, Outcome::Neutral) => {
                // The probe told us nothing: give its slot back so another request probes.
                let mut w = self.word.load(Ordering::Acquire);
                loop {
                    let (state, probes, epoch) = unpack(w);
                    if state != State::HalfOpen || epoch != ticket.epoch || probes == 0 {
                        return None;
                    }
                    let next = pack(State::HalfOpen, probes - 1, epoch);
                    match self.swap_word(w, next) {
                        Ok(_) => return None,
                        Err(cur) => w = cur,
                    }
                }
            }
        }
    }

    fn open(&self, w: u64, epoch: u32, cooldown: u64, now: Instant) -> Option<Transition> {
        // `open_until` is published before the state that makes readers look at it.
        let until = self.since(now).saturating_add(cooldown);
        let prev_until = self.open_until.swap(until, Ordering::AcqRel);
        let next = pack(State::Open, 0, epoch.wrapping_add(1));
        match self
            .word
            .compare_exchange(w, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Some(Transition { to: State::Open }),
            Err(_) => {
                // Lost the race to another transition; leave its deadline in place.
                let _ = self.open_until.compare_exchange(
                    until,
                    prev_until,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                None
            }
        }
    }

    /// Operator kill switch: open until [`Breaker::force_close`].
    pub fn force_open(&self) -> Option<Transition> {
        self.force(State::ForcedOpen)
    }

    /// Operator override: close now and forget past failures.
    pub fn force_close(&self) -> Option<Transition> {
        self.failures.store(0, Ordering::Relaxed);
        let base = self.base_cooldown.load(Ordering::Relaxed);
        self.cooldown.store(base, Ordering::Relaxed);
        self.force(State::Closed)
    }

    fn force(&self, to: State) -> Option<Transition> {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let (state, _, epoch) = unpack(w);
            if state == to {
                return None;
            }
            let next = pack(to, 0, epoch.wrapping_add(1));
            match self.swap_word(w, next) {
                Ok(_) => return Some(Transition { to }),
                Err(cur) => w = cur,
            }
        }
    }

    /// Current state. An open circuit whose cooldown has passed reads as half-open.
    pub fn state(&self, now: Instant) -> State {
        let (state, _, _) = unpack(self.word.load(Ordering::Acquire));
        if state == State::Open && self.since(now) >= self.open_until.load(Ordering::Acquire) {
            State::HalfOpen
        } else {
            state
        }
    }

    /// Consecutive failures counted while closed.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Time until an open circuit half-opens; `None` unless open.
    pub fn retry_in(&self, now: Instant) -> Option<Duration> {
        let (state, _, _) = unpack(self.word.load(Ordering::Acquire));
        (state == State::Open).then(|| {
            Duration::from_nanos(
                self.open_until
                    .load(Ordering::Acquire)
                    .saturating_sub(self.since(now)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn settings(threshold: u32, probes: u32) -> Settings {
        Settings {
            failure_threshold: threshold,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(35),
            half_open_probes: probes,
        }
    }

    fn fail(b: &Breaker, now: Instant) -> Option<Transition> {
        let t = b.admit(now).unwrap();
        b.record(t, Outcome::Failure, now)
    }

    #[tokio::test(start_paused = true)]
    async fn would_admit_asks_without_taking() {
        let now = Instant::now();
        let b = Breaker::new(&settings(1, 1), now);
        assert_eq!(b.would_admit(now), Ok(()));
        fail(&b, now);
        assert_eq!(b.would_admit(now), Err(Duration::from_secs(10)));
        let later = now + Duration::from_secs(10);
        // Asking any number of times takes no probe.
        for _ in 0..3 {
            assert_eq!(b.would_admit(later), Ok(()));
        }
        let probe = b.admit(later).unwrap();
        assert!(probe.is_probe());
        assert!(b.would_admit(later).is_err(), "the one probe is out");
        b.record(probe, Outcome::Success, later);
        assert_eq!(b.would_admit(later), Ok(()));
        b.force_open();
        assert!(b.is_forced_open());
        assert!(b.would_admit(later + Duration::from_secs(3600)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_consecutive_failures() {
        let now = Instant::now();
        let b = Breaker::new(&settings(3, 1), now);
        assert_eq!(fail(&b, now), None);
        assert_eq!(fail(&b, now), None);
        // A success in between resets the count.
        let t = b.admit(now).unwrap();
        b.record(t, Outcome::Success, now);
        assert_eq!(b.consecutive_failures(), 0);
        fail(&b, now);
        fail(&b, now);
        assert_eq!(fail(&b, now), Some(Transition { to: State::Open }));
        assert_eq!(b.state(now), State::Open);
        assert_eq!(b.admit(now), Err(Duration::from_secs(10)));
        assert_eq!(
            b.retry_in(now + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_outcomes_never_count() {
        let now = Instant::now();
        let b = Breaker::new(&settings(1, 1), now);
        for _ in 0..10 {
            let t = b.admit(now).unwrap();
            assert_eq!(b.record(t, Outcome::Neutral, now), None);
        }
        assert_eq!(b.state(now), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_probe_success_closes() {
        let now = Instant::now();
        let b = Breaker::new(&settings(1, 2), now);
        fail(&b, now);
        let later = now + Duration::from_secs(10);
        assert_eq!(b.state(later), State::HalfOpen);
        let p1 = b.admit(later).unwrap();
        let p2 = b.admit(later).unwrap();
        assert!(p1.is_probe() && p2.is_probe());
        assert!(b.admit(later).is_err(), "only two probes");
        assert_eq!(
            b.record(p1, Outcome::Success, later),
            Some(Transition { to: State::Closed })
        );
        // The second probe's verdict arrives after the transition: ignored.
        assert_eq!(b.record(p2, Outcome::Failure, later), None);
        assert_eq!(b.state(later), State::Closed);
        assert!(!b.admit(later).unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_doubles_cooldown_up_to_max() {
        let now = Instant::now();
        let b = Breaker::new(&settings(1, 1), now);
        fail(&b, now);
        let mut t = now;
        for expected in [20, 35, 35] {
            t += b.retry_in(t).unwrap();
            let p = b.admit(t).unwrap();
            assert!(p.is_probe());
            assert_eq!(
                b.record(p, Outcome::Failure, t),
                Some(Transition { to: State::Open })
            );
            assert_eq!(b.retry_in(t), Some(Duration::from_secs(expected)));
            assert!(
                b.admit(t + Duration::from_secs(expected) - Duration::from_millis(1))
                    .is_err()
            );
        }
        // A success resets the cooldown to its base.
        t += b.retry_in(t).unwrap();
        let p = b.admit(t).unwrap();
        b.record(p, Outcome::Success, t);
        fail(&b, t);
        assert_eq!(b.retry_in(t), Some(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_probe_gives_its_slot_back() {
        let now = Instant::now();
        let b = Breaker::new(&settings(1, 1), now);
        fail(&b, now);
        let t = now + Duration::from_secs(10);
        let p = b.admit(t).unwrap();
        assert!(b.admit(t).is_err());
        b.record(p, Outcome::Neutral, t);
        assert!(b.admit(t).unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_from_before_opening_change_nothing() {
        let now = Instant::now();
        let b = Breaker::new(&settings(2, 1), now);
        let early: Vec<Ticket> = (0..5).map(|_| b.admit(now).unwrap()).collect();
        for t in &early[..2] {
            b.record(*t, Outcome::Failure, now);
        }
        assert_eq!(b.state(now), State::Open);
        let t = now + Duration::from_secs(10);
        let probe = b.admit(t).unwrap();
        for e in &early[2..] {
            assert_eq!(b.record(*e, Outcome::Failure, t), None);
        }
        assert_eq!(b.state(t), State::HalfOpen);
        assert_eq!(
            b.record(probe, Outcome::Success, t),
            Some(Transition { to: State::Closed })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forced_open_never_half_opens() {
        let now = Instant::now();
        let b = Breaker::new(&settings(3, 1), now);
        assert_eq!(
            b.force_open(),
            Some(Transition {
                to: State::ForcedOpen
            })
        );
        let much_later = now + Duration::from_secs(3600);
        assert!(b.admit(much_later).is_err());
        assert_eq!(b.state(much_later), State::ForcedOpen);
        assert_eq!(b.force_close(), Some(Transition { to: State::Closed }));
        assert!(b.admit(much_later).is_ok());
    }

    #[test]
    fn exactly_n_probes_under_contention() {
        for probes in [1u32, 3] {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let now = Instant::now();
                let b = Arc::new(Breaker::new(&settings(1, probes), now));
                fail(&b, now);
                let t = now + Duration::from_secs(10);
                let barrier = Arc::new(tokio::sync::Barrier::new(200));
                let tasks: Vec<_> = (0..200)
                    .map(|_| {
                        let (b, barrier) = (b.clone(), barrier.clone());
                        tokio::spawn(async move {
                            barrier.wait().await;
                            b.admit(t).is_ok()
                        })
                    })
                    .collect();
                let mut admitted = 0;
                for task in tasks {
                    admitted += u32::from(task.await.unwrap());
                }
                assert_eq!(admitted, probes);
            });
        }
    }
}
