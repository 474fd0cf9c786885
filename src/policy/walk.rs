//! The walk along a chain of targets (contract §5, §6), as a state machine that is told
//! what happened and answers what to do next. It owns no sockets and reads no clock: the
//! live proxy drives it with real time and I/O, `gateway replay` with a virtual clock.
//!
//! The driver's loop:
//!
//! 1. [`Walk::next`] answers [`Step::Backoff`] (sleep, then ask again), [`Step::Acquire`]
//!    (queue for a slot of that target's provider, with that key) or [`Step::Done`].
//! 2. It reports the queue's answer: [`Walk::slot_refused`], or [`Walk::slot_granted`],
//!    which takes the breaker's admission (a half-open probe included) only now that the
//!    slot is held, and may still pass the target over.
//! 3. It sends, and reports what came back with [`Walk::outcome`], which classifies it
//!    ([`super::classify`]), applies it to the provider (key set aside, 429 pause) and says
//!    whether the answer commits. The breaker verdict is the driver's to settle, with
//!    [`settle`], when the attempt's slot is given back (at the end of a stream).
//!
//! Rules: each target is tried up to `max_attempts` times with backoff, retries inside the
//! retry budget; a target that cannot be tried (429 pause, every key set aside, open
//! circuit, spent budget, full queue or queue timeout) is passed over without counting an
//! attempt; a refused or rate-limited key is set aside and the request goes again at once
//! with the next key (no backoff, not a retry). When nothing commits, [`End`] says what the
//! client gets.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{self, Outcome, Ticket, Transition};
use super::budget;
use super::bulkhead::Rejected;
use super::classify::{Next, Observed, classify};
use super::health::Health;
use super::keys::{Cooling, Key, Pick};
use super::target_stats::TargetStats;
use crate::config::ProviderSettings;
use crate::error::{GatewayError, UpstreamError};

/// Wait after a 429 that names none.
pub const DEFAULT_429_WAIT: Duration = Duration::from_secs(5);

/// What the walk needs to know of a target: its provider's state and settings.
pub trait Guarded {
    /// The provider's health (breaker, budget, bulkhead, keys, pause, statistics).
    fn health(&self) -> &Health;
    /// The provider's settings.
    fn settings(&self) -> &ProviderSettings;
    /// The target's own statistics (provider + upstream model), when it keeps them.
    fn target_stats(&self) -> Option<&TargetStats> {
        None
    }
}

/// Records the time from sending to response headers of an attempt that got them, for
/// the provider and for the target (per kind: streamed answers apart from plain ones).
pub fn observe_latency<T: Guarded>(t: &T, stream: bool, d: Duration, alpha: f64) {
    t.health().stats.observe_latency(d);
    if let Some(s) = t.target_stats() {
        s.observe_latency(stream, d, alpha);
    }
}

/// Why a target was passed over without an attempt (the access log's `skipped[].reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Its circuit is open (or forced open), or its half-open probes are out.
    CircuitOpen,
    /// Its provider is paused after a 429.
    RateLimited,
    /// Every key of its provider is set aside.
    KeysCooling,
    /// Its provider's queue is full.
    QueueFull,
    /// No slot came within `queue_timeout`.
    QueueTimeout,
    /// A retry was needed and its provider's retry budget is spent.
    RetryBudgetExhausted,
}

impl SkipReason {
    /// The access log's name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::CircuitOpen => "circuit_open",
            SkipReason::RateLimited => "rate_limited",
            SkipReason::KeysCooling => "keys_cooling",
            SkipReason::QueueFull => "queue_full",
            SkipReason::QueueTimeout => "queue_timeout",
            SkipReason::RetryBudgetExhausted => "retry_budget_exhausted",
        }
    }
}

/// A target passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skip {
    /// Index of the target in the chain.
    pub target: usize,
    /// Why.
    pub reason: SkipReason,
}

/// What the driver does next.
#[derive(Debug, Clone)]
pub enum Step {
    /// Wait this long (backoff before a retry), then call [`Walk::next`] again.
    Backoff(Duration),
    /// Queue for a slot of target `target`'s provider, then send with `key`.
    Acquire {
        /// Index of the target in the chain.
        target: usize,
        /// The provider key to send with (`None`: the provider has none).
        key: Option<Arc<Key>>,
        /// This attempt is a retry (counted in `gateway_retries_total`).
        retry: bool,
    },
    /// Nothing more to try: answer the client.
    Done(End),
}

/// How a walk that did not commit ends.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// Pass through the last HTTP answer an attempt got (the driver holds it).
    PassLast,
    /// Answer with the gateway's own error.
    Error(GatewayError),
}

/// What the walk decided about an attempt's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The breaker verdict, to settle with [`settle`] when the attempt's slot is released.
    /// For a committed stream, the verdict comes at the end of its body instead.
    pub health: Outcome,
    /// The answer goes to the client (a success or the provider's own client error).
    pub commit: bool,
    /// The driver keeps this answer: it is passed through if nothing else commits.
    pub keep: bool,
}

/// How the last step ended, deciding the answer when no target served.
#[derive(Debug, Clone, PartialEq)]
enum Last {
    /// An attempt got an HTTP answer (the driver holds it).
    Response,
    /// An attempt got no HTTP answer: 502 or 504.
    Failed(UpstreamError),
    /// A retry was needed after an attempt, and the budget said no.
    BudgetSpent,
}

/// The reasons of the targets passed over, deciding the answer when none could be tried.
#[derive(Debug, Default)]
struct Passed {
    first: Option<GatewayError>,
    /// A local-overload reason wins: a retry a moment later can reach that target.
    overload: Option<GatewayError>,
    /// Earliest half-open among open (not forced-open) circuits: `circuit_open`'s
    /// `retry-after`.
    earliest_half_open: Option<Duration>,
}

impl Passed {
    fn note(&mut self, e: GatewayError) {
        if let GatewayError::CircuitOpen {
            retry_after: Some(w),
        } = e
        {
            self.earliest_half_open = Some(self.earliest_half_open.map_or(w, |e| e.min(w)));
        }
        if matches!(
            e,
            GatewayError::QueueFull { .. } | GatewayError::QueueTimeout { .. }
        ) && self.overload.is_none()
        {
            self.overload = Some(e.clone());
        }
        if self.first.is_none() {
            self.first = Some(e);
        }
    }

    fn answer(&mut self) -> GatewayError {
        match self.overload.take().or(self.first.take()) {
            Some(GatewayError::CircuitOpen { .. }) | None => GatewayError::CircuitOpen {
                retry_after: self.earliest_half_open,
            },
            Some(e) => e,
        }
    }
}

/// One request's walk along its chain.
#[derive(Debug)]
pub struct Walk {
    order: Vec<usize>,
    pos: usize,
    try_no: u32,
    /// The backoff before the current retry has been asked for.
    backed_off: bool,
    /// The next attempt re-sends at once with another key: no backoff, not a retry.
    key_retry: bool,
    /// Keys this request already had refused or rate-limited on the current target.
    tried_keys: Vec<Arc<Key>>,
    /// The key of the attempt in progress.
    key: Option<Arc<Key>>,
    sdk_retry: bool,
    passed: Passed,
    last: Option<Last>,
    attempts: u32,
    skipped: Vec<Skip>,
}

impl Walk {
    /// A walk over the targets in `order` (indexes into the chain). `sdk_retry`: the client
    /// says this request is itself a retry, so its first attempt draws on the budget.
    pub fn new(order: Vec<usize>, sdk_retry: bool) -> Walk {
        Walk {
            order,
            pos: 0,
            try_no: 0,
            backed_off: false,
            key_retry: false,
            tried_keys: Vec::new(),
            key: None,
            sdk_retry,
            passed: Passed::default(),
            last: None,
            attempts: 0,
            skipped: Vec::new(),
        }
    }

    /// Upstream attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Targets passed over so far, in order.
    pub fn skipped(&self) -> &[Skip] {
        &self.skipped
    }

    /// The target of the current step.
    fn current(&self) -> Option<usize> {
        self.order.get(self.pos).copied()
    }

    fn move_on(&mut self) {
        self.pos += 1;
        self.try_no = 0;
        self.backed_off = false;
        self.key_retry = false;
        self.tried_keys.clear();
        self.key = None;
    }

    fn pass_over(&mut self, target: usize, reason: SkipReason, e: GatewayError) {
        self.skipped.push(Skip { target, reason });
        self.passed.note(e);
        self.move_on();
    }

    /// What to do next.
    pub fn next<T: Guarded>(
        &mut self,
        targets: &[T],
        now: Instant,
        rng: &mut fastrand::Rng,
    ) -> Step {
        loop {
            let Some(i) = self.current() else {
                return Step::Done(self.end());
            };
            let Some(t) = targets.get(i) else {
                self.move_on();
                continue;
            };
            let (h, s) = (t.health(), t.settings());
            if self.try_no >= s.retry.max_attempts {
                self.move_on();
                continue;
            }
            if self.try_no > 0 && !self.key_retry && !self.backed_off {
                self.backed_off = true;
                return Step::Backoff(budget::backoff(&s.retry, self.try_no, rng));
            }
            // Local reasons to pass the target over, cheapest first; nothing is taken yet.
            if let Some(wait) = h.paused(now) {
                self.pass_over(
                    i,
                    SkipReason::RateLimited,
                    GatewayError::RateLimited { retry_after: wait },
                );
                continue;
            }
            let key = match h.keys.pick(now, &self.tried_keys) {
                Pick::NoKeys => None,
                Pick::Key(k) => Some(k),
                // Every key was tried by this request: its last answer stands.
                Pick::Exhausted { .. } if !self.tried_keys.is_empty() => {
                    self.move_on();
                    continue;
                }
                Pick::Exhausted { wait, why } => {
                    let e = match why {
                        Cooling::RateLimited => GatewayError::RateLimited { retry_after: wait },
                        Cooling::Refused => GatewayError::KeysCooling { retry_after: wait },
                    };
                    self.pass_over(i, SkipReason::KeysCooling, e);
                    continue;
                }
            };
            if let Err(wait) = h.breaker.would_admit(now) {
                let forced = h.breaker.is_forced_open();
                let e = GatewayError::CircuitOpen {
                    retry_after: (!forced).then_some(wait),
                };
                self.pass_over(i, SkipReason::CircuitOpen, e);
                continue;
            }
            let retry =
                !self.key_retry && (self.try_no > 0 || (self.attempts == 0 && self.sdk_retry));
            if retry {
                if !h.budget.try_withdraw(now) {
                    let hint = Duration::from_secs(1);
                    self.skipped.push(Skip {
                        target: i,
                        reason: SkipReason::RetryBudgetExhausted,
                    });
                    match self.last {
                        Some(_) => self.last = Some(Last::BudgetSpent),
                        None => self
                            .passed
                            .note(GatewayError::RetryBudgetExhausted { retry_after: hint }),
                    }
                    self.move_on();
                    continue;
                }
            } else if !self.key_retry {
                h.budget.deposit(now);
            }
            self.key = key.clone();
            return Step::Acquire {
                target: i,
                key,
                retry,
            };
        }
    }

    /// The queue refused the slot asked for in the last [`Step::Acquire`].
    pub fn slot_refused(&mut self, why: Rejected, queue_timeout: Duration) {
        let Some(i) = self.current() else { return };
        let retry_after = queue_timeout.max(Duration::from_secs(1));
        let (reason, e) = match why {
            Rejected::QueueFull => (
                SkipReason::QueueFull,
                GatewayError::QueueFull { retry_after },
            ),
            Rejected::QueueTimeout => (
                SkipReason::QueueTimeout,
                GatewayError::QueueTimeout { retry_after },
            ),
        };
        self.pass_over(i, reason, e);
    }

    /// The slot asked for is held: takes the breaker's admission. `None`: the circuit opened
    /// (or another request took the probe) while this one waited; the target is passed
    /// over, and the driver gives the slot back and asks [`Walk::next`] again.
    pub fn slot_granted<T: Guarded>(&mut self, targets: &[T], now: Instant) -> Option<Ticket> {
        let i = self.current()?;
        let h = targets.get(i).map(Guarded::health)?;
        match h.breaker.admit(now) {
            Ok(ticket) => {
                self.attempts += 1;
                self.key_retry = false;
                self.backed_off = false;
                Some(ticket)
            }
            Err(wait) => {
                let forced = h.breaker.is_forced_open();
                let e = GatewayError::CircuitOpen {
                    retry_after: (!forced).then_some(wait),
                };
                self.pass_over(i, SkipReason::CircuitOpen, e);
                None
            }
        }
    }

    /// What the attempt got. Applies it to the provider (a key set aside, a 429 pause) and
    /// says whether it commits; after a non-committing answer the driver asks
    /// [`Walk::next`] again.
    pub fn outcome<T: Guarded>(
        &mut self,
        targets: &[T],
        observed: Observed,
        now: Instant,
    ) -> Decision {
        let Some(i) = self.current() else {
            return Decision {
                health: Outcome::Neutral,
                commit: false,
                keep: false,
            };
        };
        let Some(t) = targets.get(i) else {
            return Decision {
                health: Outcome::Neutral,
                commit: false,
                keep: false,
            };
        };
        let (h, s) = (t.health(), t.settings());
        let key = self.key.take();
        let verdict = classify(&observed, key.is_some(), h.keys.len() > 1);
        let keep = matches!(observed, Observed::Answer { .. });
        let retry_after = match &observed {
            Observed::Answer { retry_after, .. } => *retry_after,
            Observed::Failed(_) => None,
        };
        match verdict.next {
            Next::Commit => {}
            Next::Retry => {
                self.last = Some(match observed {
                    Observed::Answer { .. } => Last::Response,
                    Observed::Failed(e) => Last::Failed(e),
                });
                self.try_no += 1;
            }
            Next::NextKey(why) => {
                let wait = match why {
                    Cooling::Refused => s.key_cooldown,
                    Cooling::RateLimited => retry_after
                        .unwrap_or(DEFAULT_429_WAIT)
                        .min(s.breaker.max_cooldown),
                };
                if let Some(k) = key {
                    h.keys.set_aside(&k, now, wait, why);
                    self.tried_keys.push(k);
                }
                self.last = Some(Last::Response);
                self.key_retry = true;
            }
            Next::MoveOn => {
                self.last = Some(match observed {
                    Observed::Answer { .. } => Last::Response,
                    Observed::Failed(e) => Last::Failed(e),
                });
                self.move_on();
            }
            Next::Pause => {
                let wait = retry_after
                    .unwrap_or(DEFAULT_429_WAIT)
                    .min(s.breaker.max_cooldown);
                h.pause(now, wait);
                self.last = Some(Last::Response);
                self.move_on();
            }
            Next::Stop => {
                if let Observed::Failed(e) = observed {
                    self.last = Some(Last::Failed(e));
                }
                self.pos = self.order.len();
            }
        }
        Decision {
            health: verdict.health,
            commit: verdict.next == Next::Commit,
            keep,
        }
    }

    /// The answer when nothing committed.
    fn end(&mut self) -> End {
        match self.last.take() {
            Some(Last::Response) => End::PassLast,
            Some(Last::Failed(e)) => End::Error(GatewayError::from(e)),
            Some(Last::BudgetSpent) => End::Error(GatewayError::RetryBudgetExhausted {
                retry_after: Duration::from_secs(1),
            }),
            None => End::Error(self.passed.answer()),
        }
    }

    /// The client must not retry on top: the gateway already retried or failed over after
    /// an attempt (contract §5). The gateway's own errors say so by themselves.
    pub fn gave_up(&self) -> bool {
        self.attempts > 1
    }
}

/// Hands an attempt's verdict to its provider's breaker and statistics and to its target's
/// success window (`window` = `[routing] success_window`); neutral outcomes are no verdict.
/// Returns the breaker's state change, if any. Runs exactly once per admitted attempt.
pub fn settle(
    h: &Health,
    target: Option<&TargetStats>,
    ticket: Ticket,
    verdict: Outcome,
    now: Instant,
    window: Duration,
) -> Option<Transition> {
    let success = match verdict {
        Outcome::Success => Some(true),
        Outcome::Failure => Some(false),
        Outcome::Neutral => None,
    };
    if let Some(ok) = success {
        h.stats.observe_outcome(ok);
        if let Some(t) = target {
            t.observe_verdict(ok, now, window);
        }
    }
    h.breaker.record(ticket, verdict, now)
}

/// `breaker::State` re-exported for drivers that log transitions.
pub use breaker::State as BreakerState;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    struct T {
        health: Health,
        settings: ProviderSettings,
    }

    impl Guarded for T {
        fn health(&self) -> &Health {
            &self.health
        }
        fn settings(&self) -> &ProviderSettings {
            &self.settings
        }
    }

    /// Targets whose provider settings come from `provider_toml` (one line of overrides).
    fn targets(n: usize, provider_toml: &str, keys: &[&str], now: Instant) -> Vec<T> {
        let text = format!("[providers.p]\nkind = \"mock\"\n{provider_toml}\n");
        let cfg = Config::parse_with(&text, &Default::default(), &|_| None).unwrap();
        let settings = cfg.provider_settings(&cfg.providers["p"]);
        let keys: Vec<Arc<Key>> = keys
            .iter()
            .map(|k| {
                Arc::new(Key::new(
                    http::HeaderValue::from_str(&format!("Bearer {k}")).unwrap(),
                    k,
                ))
            })
            .collect();
        (0..n)
            .map(|_| T {
                health: Health::new(&settings, &keys, now),
                settings: settings.clone(),
            })
            .collect()
    }

    fn answer(status: u16) -> Observed {
        Observed::Answer {
            status,
            retry_after: None,
            context_overflow: false,
        }
    }

    fn acquire(w: &mut Walk, t: &[T], now: Instant, rng: &mut fastrand::Rng) -> usize {
        loop {
            match w.next(t, now, rng) {
                Step::Backoff(_) => continue,
                Step::Acquire { target, .. } => return target,
                Step::Done(e) => panic!("walk ended: {e:?}"),
            }
        }
    }

    /// Drives one attempt on the next target with `observed`; returns the target and the
    /// decision, settling the breaker verdict at once.
    fn attempt(
        w: &mut Walk,
        t: &[T],
        observed: Observed,
        now: Instant,
        rng: &mut fastrand::Rng,
    ) -> (usize, Decision) {
        let i = acquire(w, t, now, rng);
        assert!(t[i].health.bulkhead.try_acquire());
        let ticket = w.slot_granted(t, now).unwrap();
        let d = w.outcome(t, observed, now);
        settle(
            &t[i].health,
            None,
            ticket,
            d.health,
            now,
            Duration::from_secs(60),
        );
        t[i].health.bulkhead.release();
        (i, d)
    }

    #[test]
    fn retries_fast_failures_then_fails_over_then_passes_the_last_answer() {
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let t = targets(2, "", &[], now);
        let mut w = Walk::new(vec![0, 1], false);
        assert_eq!(attempt(&mut w, &t, answer(503), now, &mut rng).0, 0);
        // max_attempts = 2 by default: a backoff, then the same target again.
        assert!(matches!(w.next(&t, now, &mut rng), Step::Backoff(_)));
        assert_eq!(attempt(&mut w, &t, answer(502), now, &mut rng).0, 0);
        assert_eq!(attempt(&mut w, &t, answer(500), now, &mut rng).0, 1);
        assert_eq!(attempt(&mut w, &t, answer(504), now, &mut rng).0, 1);
        assert!(matches!(
            w.next(&t, now, &mut rng),
            Step::Done(End::PassLast)
        ));
        assert_eq!(w.attempts(), 4);
        assert!(w.gave_up());
    }

    #[test]
    fn a_success_commits_and_a_client_error_is_not_failed_over() {
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let t = targets(2, "", &[], now);
        let mut w = Walk::new(vec![1, 0], false);
        let (i, d) = attempt(&mut w, &t, answer(422), now, &mut rng);
        assert_eq!(i, 1, "the order is the walk's");
        assert!(d.commit);
        assert_eq!(d.health, Outcome::Success);
    }

    #[test]
    fn no_answer_at_all_ends_in_the_gateways_own_error() {
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let t = targets(1, "retry = { max_attempts = 1 }", &[], now);
        let mut w = Walk::new(vec![0], false);
        let e = UpstreamError::FirstByteTimeout(Duration::from_secs(1));
        attempt(&mut w, &t, Observed::Failed(e), now, &mut rng);
        match w.next(&t, now, &mut rng) {
            Step::Done(End::Error(e)) => assert_eq!(e.code(), "upstream_timeout"),
            s => panic!("{s:?}"),
        }
        assert!(
            !w.gave_up(),
            "one attempt: the gateway's own 504 says so itself"
        );
    }

    #[test]
    fn an_open_circuit_is_passed_over_and_reported_with_its_half_open() {
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let t = targets(
            2,
            "retry = { max_attempts = 1 }\nbreaker = { failure_threshold = 1, cooldown = \"30s\" }",
            &[],
            now,
        );
        let mut w = Walk::new(vec![0, 1], false);
        attempt(&mut w, &t, answer(500), now, &mut rng);
        attempt(&mut w, &t, answer(500), now, &mut rng);
        // Both circuits are open now.
        let later = now + Duration::from_secs(10);
        let mut w = Walk::new(vec![0, 1], false);
        match w.next(&t, later, &mut rng) {
            Step::Done(End::Error(GatewayError::CircuitOpen { retry_after })) => {
                assert_eq!(retry_after, Some(Duration::from_secs(20)));
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(
            w.skipped(),
            &[
                Skip {
                    target: 0,
                    reason: SkipReason::CircuitOpen
                },
                Skip {
                    target: 1,
                    reason: SkipReason::CircuitOpen
                }
            ]
        );
        // An operator's forced open has no half-open, hence no retry-after.
        t[0].health.breaker.force_open();
        let mut w = Walk::new(vec![0], false);
        match w.next(&t, later, &mut rng) {
            Step::Done(End::Error(GatewayError::CircuitOpen { retry_after })) => {
                assert_eq!(retry_after, None)
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn admission_is_taken_only_once_the_slot_is_held() {
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let t = targets(
            1,
            "retry = { max_attempts = 1 }\nbreaker = { failure_threshold = 1, cooldown = \"1s\" }",
            &[],
            now,
        );
        // Asked to queue while closed ...
        let mut w = Walk::new(vec![0], false);
        assert_eq!(acquire(&mut w, &t, now, &mut rng), 0);
        // ... meanwhile another request fails and opens the circuit ...
        let mut other = Walk::new(vec![0], false);
        attempt(&mut other, &t, answer(500), now, &mut rng);
        // ... so the slot, once granted, is not used.
        assert!(w.slot_granted(&t, now).is_none());
        assert!(matches!(
            w.next(&t, now, &mut rng),
            Step::Done(End::Error(GatewayError::CircuitOpen { .. }))
        ));
        assert_eq!(w.attempts(), 0);
    }

    #[test]
    fn local_overload_decides_when_nothing_was_tried() {
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let t = targets(2, "", &[], now);
        t[0].health.breaker.force_open();
        let mut w = Walk::new(vec![0, 1], false);
        assert_eq!(acquire(&mut w, &t, now, &mut rng), 1);
        w.slot_refused(Rejected::QueueTimeout, Duration::from_millis(300));
        match w.next(&t, now, &mut rng) {
            Step::Done(End::Error(GatewayError::QueueTimeout { retry_after })) => {
                assert_eq!(retry_after, Duration::from_secs(1), "at least 1 s")
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn a_refused_key_goes_again_at_once_with_the_next_and_cools() {
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let t = targets(
            1,
            "key_cooldown = \"10m\"",
            &["sk-aaaaaaaaaa1111", "sk-bbbbbbbbbb2222"],
            now,
        );
        let mut w = Walk::new(vec![0], false);
        let first = match w.next(&t, now, &mut rng) {
            Step::Acquire {
                key: Some(k),
                retry: false,
                ..
            } => k,
            s => panic!("{s:?}"),
        };
        assert!(t[0].health.bulkhead.try_acquire());
        let ticket = w.slot_granted(&t, now).unwrap();
        let d = w.outcome(&t, answer(401), now);
        assert_eq!(
            (d.commit, d.keep, d.health),
            (false, true, Outcome::Neutral)
        );
        settle(
            &t[0].health,
            None,
            ticket,
            d.health,
            now,
            Duration::from_secs(60),
        );
        t[0].health.bulkhead.release();
        // No backoff, not a retry, another key.
        match w.next(&t, now, &mut rng) {
            Step::Acquire {
                key: Some(k),
                retry: false,
                ..
            } => assert!(!Arc::ptr_eq(&k, &first)),
            s => panic!("{s:?}"),
        }
        assert!(t[0].health.bulkhead.try_acquire());
        let _ticket = w.slot_granted(&t, now).unwrap();
        let d = w.outcome(&t, answer(403), now);
        assert!(!d.commit);
        // Both keys tried: the last answer stands.
        assert!(matches!(
            w.next(&t, now, &mut rng),
            Step::Done(End::PassLast)
        ));
        // A later request finds every key cooling.
        let mut w = Walk::new(vec![0], false);
        match w.next(&t, now + Duration::from_secs(60), &mut rng) {
            Step::Done(End::Error(GatewayError::KeysCooling { retry_after })) => {
                assert_eq!(retry_after, Duration::from_secs(540))
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(w.skipped()[0].reason, SkipReason::KeysCooling);
    }

    #[test]
    fn a_429_pauses_the_provider_for_its_retry_after_capped() {
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let t = targets(
            2,
            "breaker = { cooldown = \"10s\", max_cooldown = \"60s\" }",
            &[],
            now,
        );
        let mut w = Walk::new(vec![0, 1], false);
        let ra = Observed::Answer {
            status: 429,
            retry_after: Some(Duration::from_secs(3600)),
            context_overflow: false,
        };
        let (i, d) = attempt(&mut w, &t, ra, now, &mut rng);
        assert_eq!((i, d.commit), (0, false));
        assert_eq!(t[0].health.paused(now), Some(Duration::from_secs(60)));
        assert_eq!(
            attempt(&mut w, &t, answer(200), now, &mut rng).0,
            1,
            "moved on at once"
        );
        let mut w = Walk::new(vec![0], false);
        match w.next(&t, now + Duration::from_secs(50), &mut rng) {
            Step::Done(End::Error(GatewayError::RateLimited { retry_after })) => {
                assert_eq!(retry_after, Duration::from_secs(10))
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn a_spent_budget_stops_retries() {
        let now = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        let t = targets(
            1,
            "retry = { max_attempts = 3, budget_ratio = 0.0, budget_min_per_sec = 0 }",
            &[],
            now,
        );
        let mut w = Walk::new(vec![0], false);
        attempt(&mut w, &t, answer(503), now, &mut rng);
        match w.next(&t, now, &mut rng) {
            Step::Backoff(_) => {}
            s => panic!("{s:?}"),
        }
        match w.next(&t, now, &mut rng) {
            Step::Done(End::Error(GatewayError::RetryBudgetExhausted { .. })) => {}
            s => panic!("{s:?}"),
        }
        assert_eq!(w.skipped()[0].reason, SkipReason::RetryBudgetExhausted);
        // A client's own retry draws on the budget from its first attempt.
        let mut w = Walk::new(vec![0], true);
        assert!(matches!(
            w.next(&t, now, &mut rng),
            Step::Done(End::Error(_))
        ));
    }

    #[test]
    fn the_same_seed_gives_the_same_backoffs() {
        let now = Instant::now();
        let t = targets(
            1,
            "retry = { max_attempts = 5 }\nbreaker = { failure_threshold = 100 }",
            &[],
            now,
        );
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut w = Walk::new(vec![0], false);
            let mut waits = Vec::new();
            for _ in 0..4 {
                attempt(&mut w, &t, answer(503), now, &mut rng);
                if let Step::Backoff(d) = w.next(&t, now, &mut rng) {
                    waits.push(d);
                }
            }
            waits
        };
        assert_eq!(run(9), run(9));
    }
}
