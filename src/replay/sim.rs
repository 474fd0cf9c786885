//! The replay driver: a discrete-event loop on a virtual clock that drives the policy core
//! ([`crate::policy::walk`]) exactly as the live proxy does, with recorded provider
//! behaviour ([`super::model`]) in place of sockets.
//!
//! Each request arrives at its recorded time and walks its chain in the candidate's order
//! (`Plan::order`): backoffs are events; a slot comes from the provider's real
//! [`crate::policy::bulkhead::Bulkhead`] (a queued waiter is woken through an event, and
//! cancelled at its `queue_timeout`); the breaker admission is taken once the slot is held
//! (`slot_granted`); the attempt holds its slot for its simulated duration; its verdict goes
//! through `Walk::outcome` and [`walk::settle`] (a committed stream's at the end of its
//! body, through `stream_verdict`), and latencies through [`walk::observe_latency`]. A
//! request whose client left in the recording leaves at the same time here.
//!
//! Invariants: virtual time only moves forward; events at the same time run in the order
//! they were scheduled, after which arrivals at that time come in log order; the only
//! randomness is one `fastrand::Rng` seeded by `--seed` (backoff jitter). Hence the same
//! inputs give the same run. The instants handed to the policy core are one real
//! `Instant::now()` taken at the start plus the virtual offset.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::behaviour::{Micros, Played, micros};
use super::log::Log;
use super::model::{Answer, Model};
use super::tally::{Outcome, Tally};
use crate::policy::breaker::{Outcome as Verdict, Ticket};
use crate::policy::bulkhead::{Admission, Rejected};
use crate::policy::classify::{self, Observed, StreamEnd};
use crate::policy::walk::{self, BreakerState, End, Guarded, SkipReason, Step, Walk};
use crate::runtime::Runtime;
use crate::runtime::route::{self, Plan, Target};

/// One attempt on a timeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Sent, epoch microseconds.
    pub t: i64,
    /// Time to its verdict (a stream: its end), milliseconds.
    pub ms: f32,
    /// The breaker heard a failure.
    pub failed: bool,
}

/// What the candidate did with one provider.
#[derive(Debug, Clone, Default)]
pub struct ProviderRun {
    /// Attempts sent.
    pub attempts: u64,
    /// Attempts the breaker heard as failures.
    pub failures: u64,
    /// Attempts with nothing recorded in the window.
    pub unobserved: u64,
    /// Transitions to open (a failed probe reopening counts too).
    pub opens: u64,
    /// Open episodes `[from, to)` in epoch microseconds: from the transition to open to the
    /// transition to closed, or for one still open at the end, to the last request it
    /// turned away.
    pub open: Vec<(i64, i64)>,
    /// Targets passed over, by reason.
    pub skips: BTreeMap<&'static str, u64>,
    /// Every attempt, in sending order.
    pub samples: Vec<Sample>,
    /// An episode still open: its start and the last request it turned away.
    episode: Option<(i64, i64)>,
}

/// The candidate's run over the whole log.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Per model asked for, by its id in [`Log::models`]: the requests as they settled.
    pub models: Vec<Tally>,
    /// The latest end of any request (its arrival plus the longer of its recorded and
    /// candidate durations), epoch microseconds.
    pub last_end: i64,
    /// Per provider of the candidate config.
    pub providers: BTreeMap<String, ProviderRun>,
}

/// Where an attempt stands.
#[derive(Debug)]
struct Flight {
    target: usize,
    ticket: Ticket,
    played: Played,
    sent: Micros,
}

#[derive(Debug)]
enum Phase {
    /// Between steps (only while being handled).
    Idle,
    /// Sleeping a backoff.
    Backoff,
    /// Waiting in a bulkhead queue.
    Queued { target: usize, id: u64 },
    /// An attempt in flight, before its verdict.
    Attempt(Flight),
    /// A committed stream, before its end.
    Streaming(Flight, u16),
}

#[derive(Debug)]
struct Active<'a> {
    plan: Plan<'a>,
    walk: Walk,
    phase: Phase,
    /// Bumped at each phase change, so a stale timer finds a different token.
    token: u32,
    /// Status of the last answer the walk kept (passed through if nothing commits).
    last_status: Option<u16>,
    skips_seen: usize,
    arrived: Micros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Step(u32),
    QueueTimeout(u32),
    Handed,
    AttemptEnd(u32),
    StreamEnd(u32),
    ClientGone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    at: Micros,
    seq: u64,
    req: u32,
    kind: Kind,
}

/// Runs the candidate `rt` over `log`, providers answering as `model` says, backoffs drawn
/// from a RNG seeded with `seed`. `samples`: keep every attempt for timelines.
pub fn run(rt: &Runtime, log: &Log, model: &Model<'_>, seed: u64, samples: bool) -> Run {
    let providers = rt
        .providers
        .keys()
        .map(|n| (n.clone(), ProviderRun::default()))
        .collect();
    let mut sim = Sim {
        rt,
        log,
        model,
        base: Instant::now(),
        first: log.first().unwrap_or(0),
        rng: fastrand::Rng::with_seed(seed),
        now: 0,
        seq: 0,
        heap: BinaryHeap::new(),
        active: HashMap::new(),
        handed: Arc::new(Mutex::new(Vec::new())),
        samples,
        run: Run {
            models: vec![Tally::default(); log.models.len()],
            last_end: i64::MIN,
            providers,
        },
    };
    sim.go();
    sim.close_episodes();
    sim.run
}

struct Sim<'a, 'm> {
    rt: &'a Runtime,
    log: &'a Log,
    model: &'a Model<'m>,
    /// The real instant virtual time 0 stands for.
    base: Instant,
    /// The first request's arrival, epoch microseconds (virtual time 0).
    first: i64,
    rng: fastrand::Rng,
    now: Micros,
    seq: u64,
    heap: BinaryHeap<Reverse<Event>>,
    active: HashMap<u32, Active<'a>>,
    /// Requests a bulkhead handed a slot to, from inside its lock.
    handed: Arc<Mutex<Vec<u32>>>,
    /// Keep every attempt (for `--html` only: 16 bytes an attempt).
    samples: bool,
    run: Run,
}

/// What the walk does after a slot was granted.
enum Then {
    /// Steps again at once (the circuit opened while it waited).
    Continue,
    /// Waits for its attempt's verdict.
    Wait,
    /// The request ended (its provider's answer is unknown).
    Ended,
}

impl<'a> Sim<'a, '_> {
    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    fn epoch(&self, t: Micros) -> i64 {
        self.first
            .saturating_add(i64::try_from(t).unwrap_or(i64::MAX))
    }

    fn schedule(&mut self, at: Micros, req: u32, kind: Kind) {
        self.seq += 1;
        self.heap.push(Reverse(Event {
            at,
            seq: self.seq,
            req,
            kind,
        }));
    }

    fn go(&mut self) {
        let log = self.log;
        let mut next = 0usize;
        loop {
            let arrival = log
                .requests
                .get(next)
                .map(|r| u64::try_from(r.ts.saturating_sub(self.first)).unwrap_or(0));
            let event = self.heap.peek().map(|e| e.0.at);
            match (arrival, event) {
                (None, None) => return,
                // Events due at an arrival's time go first: a slot freed at t is free for a
                // request arriving at t.
                (Some(a), Some(e)) if e <= a => self.event(),
                (Some(a), _) => {
                    self.now = self.now.max(a);
                    self.arrive(next);
                    next += 1;
                }
                (None, Some(_)) => self.event(),
            }
        }
    }

    fn event(&mut self) {
        let Some(Reverse(ev)) = self.heap.pop() else {
            return;
        };
        self.now = self.now.max(ev.at);
        let Some(mut a) = self.active.remove(&ev.req) else {
            return;
        };
        let i = ev.req;
        let keep = match (ev.kind, &a.phase) {
            (Kind::Step(tok), Phase::Backoff) if tok == a.token => {
                a.phase = Phase::Idle;
                self.drive(i, &mut a)
            }
            (Kind::QueueTimeout(tok), Phase::Queued { target, id }) if tok == a.token => {
                let (target, id) = (*target, *id);
                match a.plan.targets().get(target) {
                    Some(t) if t.health().bulkhead.cancel(id) => {
                        a.phase = Phase::Idle;
                        let qt = t.health().bulkhead.queue_timeout();
                        a.walk.slot_refused(Rejected::QueueTimeout, qt);
                        self.note_skips(&mut a);
                        self.drive(i, &mut a)
                    }
                    // Handed a slot at this very time: its event comes next.
                    _ => true,
                }
            }
            (Kind::Handed, Phase::Queued { target, .. }) => {
                let target = *target;
                a.phase = Phase::Idle;
                match self.granted(i, &mut a, target) {
                    Then::Continue => self.drive(i, &mut a),
                    Then::Wait => true,
                    Then::Ended => false,
                }
            }
            (Kind::AttemptEnd(tok), Phase::Attempt(_)) if tok == a.token => {
                self.attempt_end(i, &mut a)
            }
            (Kind::StreamEnd(tok), Phase::Streaming(..)) if tok == a.token => {
                let Phase::Streaming(f, status) = std::mem::replace(&mut a.phase, Phase::Idle)
                else {
                    return;
                };
                let completed = matches!(
                    f.played,
                    Played::Stream {
                        completed: true,
                        ..
                    }
                );
                let end = if completed {
                    StreamEnd::Completed
                } else {
                    StreamEnd::Failed
                };
                self.settle(&a, &f, classify::stream_verdict(end));
                self.finish(i, &a, status, None, Some(f.target));
                false
            }
            (Kind::ClientGone, _) => {
                self.client_gone(i, &mut a);
                false
            }
            // A stale timer or hand-over: the request has moved on.
            _ => true,
        };
        if keep {
            self.active.insert(i, a);
        }
    }

    fn arrive(&mut self, n: usize) {
        let log = self.log;
        let Some(r) = log.requests.get(n) else { return };
        let i = u32::try_from(n).unwrap_or(u32::MAX);
        // A bad `x-gateway-strategy` is refused before routing, whatever the config.
        if log.code(r) == Some("invalid_strategy") {
            let o = Outcome {
                status: r.status,
                code: Some("invalid_strategy"),
                duration: r.duration,
                ..Outcome::default()
            };
            self.settled(i, &o);
            return;
        }
        let Some(plan) = route::resolve(self.rt, log.models.name(r.model)) else {
            let o = Outcome {
                status: 404,
                code: Some("model_not_found"),
                duration: r.overhead,
                ..Outcome::default()
            };
            self.settled(i, &o);
            return;
        };
        // The candidate's own strategy for the alias (the log does not tell a per-request
        // `x-gateway-strategy` from the alias's).
        let order = plan.order(None, r.stream, &self.rt.config.routing, self.instant());
        let mut a = Active {
            plan,
            walk: Walk::new(order, false),
            phase: Phase::Idle,
            token: 0,
            last_status: None,
            skips_seen: 0,
            arrived: self.now,
        };
        if r.client_gone {
            self.schedule(self.now.saturating_add(r.duration), i, Kind::ClientGone);
        }
        if self.drive(i, &mut a) {
            self.active.insert(i, a);
        }
    }

    /// Steps the walk until it waits for an event or ends. False when it ended.
    fn drive(&mut self, i: u32, a: &mut Active<'a>) -> bool {
        loop {
            let now = self.instant();
            let step = a.walk.next(a.plan.targets(), now, &mut self.rng);
            self.note_skips(a);
            match step {
                Step::Backoff(d) => {
                    a.phase = Phase::Backoff;
                    a.token = a.token.wrapping_add(1);
                    self.schedule(self.now.saturating_add(micros(d)), i, Kind::Step(a.token));
                    return true;
                }
                Step::Done(end) => {
                    let (status, code) = match end {
                        End::PassLast => (a.last_status.unwrap_or(502), None),
                        End::Error(e) => (e.status().as_u16(), Some(e.code())),
                    };
                    self.finish(i, a, status, code, None);
                    return false;
                }
                Step::Acquire { target, .. } => {
                    let Some(t) = a.plan.targets().get(target) else {
                        continue;
                    };
                    // As `proxy::lease::acquire`: a free slot at once, else the queue.
                    let bulkhead = &t.health().bulkhead;
                    let queue_timeout = bulkhead.queue_timeout();
                    let handed = self.handed.clone();
                    let admission = if bulkhead.try_acquire() {
                        Admission::Granted
                    } else {
                        // Called under the bulkhead's lock when a slot is handed over: the
                        // hand-over becomes an event at that virtual time.
                        bulkhead.acquire(Box::new(move || {
                            handed.lock().unwrap_or_else(|e| e.into_inner()).push(i);
                            true
                        }))
                    };
                    match admission {
                        Admission::Granted => match self.granted(i, a, target) {
                            Then::Continue => continue,
                            Then::Wait => return true,
                            Then::Ended => return false,
                        },
                        Admission::Full => {
                            a.walk.slot_refused(Rejected::QueueFull, queue_timeout);
                            self.note_skips(a);
                        }
                        Admission::Queued(id) => {
                            a.phase = Phase::Queued { target, id };
                            a.token = a.token.wrapping_add(1);
                            let at = self.now.saturating_add(micros(queue_timeout));
                            self.schedule(at, i, Kind::QueueTimeout(a.token));
                            return true;
                        }
                    }
                }
            }
        }
    }

    /// The slot is held: takes the breaker's admission and sends.
    fn granted(&mut self, i: u32, a: &mut Active<'a>, target: usize) -> Then {
        let now = self.instant();
        let Some(ticket) = a.walk.slot_granted(a.plan.targets(), now) else {
            if let Some(t) = a.plan.targets().get(target) {
                t.health().bulkhead.release();
                self.drain_handed();
            }
            self.note_skips(a);
            return Then::Continue;
        };
        let Some(t) = a.plan.targets().get(target) else {
            return Then::Continue;
        };
        let stream = self.log.requests.get(i as usize).is_some_and(|r| r.stream);
        let answer = self
            .model
            .answer(&t.provider.name, &t.model, self.epoch(self.now), stream);
        let p = self
            .run
            .providers
            .entry(t.provider.name.to_string())
            .or_default();
        p.attempts += 1;
        match answer {
            Answer::Unknown => {
                // Nothing to go by: the request's fate is unknown; its slot and probe go back.
                let f = Flight {
                    target,
                    ticket,
                    played: Played::Failed {
                        error: crate::error::UpstreamError::Reset(String::new()),
                        at: 0,
                        first_byte: None,
                    },
                    sent: self.now,
                };
                self.settle(a, &f, Verdict::Neutral);
                self.finish_unknown(i, a);
                Then::Ended
            }
            Answer::Known {
                behaviour,
                unobserved,
            } => {
                if unobserved {
                    p.unobserved += 1;
                }
                let played = behaviour.play(&t.provider.settings.timeouts, stream);
                let at = self.now.saturating_add(played.verdict_at());
                a.phase = Phase::Attempt(Flight {
                    target,
                    ticket,
                    played,
                    sent: self.now,
                });
                a.token = a.token.wrapping_add(1);
                self.schedule(at, i, Kind::AttemptEnd(a.token));
                Then::Wait
            }
        }
    }

    /// The attempt's verdict is due. False when the request ended.
    fn attempt_end(&mut self, i: u32, a: &mut Active<'a>) -> bool {
        let Phase::Attempt(f) = std::mem::replace(&mut a.phase, Phase::Idle) else {
            return true;
        };
        let now = self.instant();
        let stream = self.log.requests.get(i as usize).is_some_and(|r| r.stream);
        let alpha = self.rt.config.routing.ewma_alpha;
        let targets = a.plan.targets();
        let Some(t) = targets.get(f.target) else {
            return self.drive(i, a);
        };
        let dur = |m: Micros| Duration::from_micros(m);
        match &f.played {
            Played::Failed {
                error, first_byte, ..
            } => {
                if let Some(fb) = first_byte {
                    walk::observe_latency(t, stream, dur(*fb), alpha);
                }
                let d = a
                    .walk
                    .outcome(targets, Observed::Failed(error.clone()), now);
                self.settle(a, &f, d.health);
                self.drive(i, a)
            }
            Played::Answer {
                status,
                retry_after,
                context_overflow,
                first_byte,
                ..
            } => {
                walk::observe_latency(t, stream, dur(*first_byte), alpha);
                let observed = Observed::Answer {
                    status: *status,
                    retry_after: *retry_after,
                    context_overflow: *context_overflow,
                };
                let d = a.walk.outcome(targets, observed, now);
                self.settle(a, &f, d.health);
                if d.commit {
                    self.finish(i, a, *status, None, Some(f.target));
                    return false;
                }
                if d.keep {
                    a.last_status = Some(*status);
                }
                self.drive(i, a)
            }
            Played::Stream {
                status,
                first_byte,
                end,
                ..
            } => {
                walk::observe_latency(t, stream, dur(*first_byte), alpha);
                let observed = Observed::Answer {
                    status: *status,
                    retry_after: None,
                    context_overflow: false,
                };
                let d = a.walk.outcome(targets, observed, now);
                if !d.commit {
                    self.settle(a, &f, d.health);
                    return self.drive(i, a);
                }
                // Committed: the verdict comes at the end of the body, the slot held till then.
                let at = f.sent.saturating_add(*end).max(self.now);
                let status = *status;
                a.phase = Phase::Streaming(f, status);
                a.token = a.token.wrapping_add(1);
                self.schedule(at, i, Kind::StreamEnd(a.token));
                true
            }
        }
    }

    /// Hands an attempt's verdict to its breaker and statistics and frees its slot.
    fn settle(&mut self, a: &Active<'a>, f: &Flight, verdict: Verdict) {
        let Some(t) = a.plan.targets().get(f.target) else {
            return;
        };
        let now = self.instant();
        let window = self.rt.config.routing.success_window;
        let h = t.health();
        let transition = walk::settle(h, t.target_stats(), f.ticket, verdict, now, window);
        let (sent, at) = (self.epoch(f.sent), self.epoch(self.now));
        let p = self
            .run
            .providers
            .entry(t.provider.name.to_string())
            .or_default();
        let failed = verdict == Verdict::Failure;
        p.failures += u64::from(failed);
        if self.samples {
            p.samples.push(Sample {
                t: sent,
                ms: (self.now.saturating_sub(f.sent) as f64 / 1000.0) as f32,
                failed,
            });
        }
        match transition.map(|t| t.to) {
            Some(BreakerState::Open) => {
                p.opens += 1;
                if p.episode.is_none() {
                    p.episode = Some((at, at));
                }
            }
            Some(BreakerState::Closed) => {
                if let Some((from, _)) = p.episode.take() {
                    p.open.push((from, at));
                }
            }
            _ => {}
        }
        h.bulkhead.release();
        self.drain_handed();
    }

    /// Turns the bulkhead's hand-overs into events now.
    fn drain_handed(&mut self) {
        let handed: Vec<u32> =
            std::mem::take(&mut *self.handed.lock().unwrap_or_else(|e| e.into_inner()));
        for i in handed {
            self.schedule(self.now, i, Kind::Handed);
        }
    }

    /// Counts the targets the walk passed over since last time.
    fn note_skips(&mut self, a: &mut Active<'a>) {
        let skipped = a.walk.skipped();
        for s in skipped.iter().skip(a.skips_seen) {
            let Some(t) = a.plan.targets().get(s.target) else {
                continue;
            };
            let now = self
                .first
                .saturating_add(i64::try_from(self.now).unwrap_or(i64::MAX));
            let p = self
                .run
                .providers
                .entry(t.provider.name.to_string())
                .or_default();
            *p.skips.entry(s.reason.as_str()).or_default() += 1;
            if s.reason == SkipReason::CircuitOpen
                && let Some((_, last)) = &mut p.episode
            {
                *last = now;
            }
        }
        a.skips_seen = skipped.len();
    }

    /// The client left (as it did in the recording): everything it held goes back, and
    /// says nothing about the provider.
    fn client_gone(&mut self, i: u32, a: &mut Active<'a>) {
        let mut answered_by = None;
        let status = match std::mem::replace(&mut a.phase, Phase::Idle) {
            Phase::Idle | Phase::Backoff => 499,
            Phase::Queued { target, id } => {
                if let Some(t) = a.plan.targets().get(target)
                    && !t.health().bulkhead.cancel(id)
                {
                    // Handed a slot meanwhile: give it back.
                    t.health().bulkhead.release();
                    self.drain_handed();
                }
                499
            }
            Phase::Attempt(f) => {
                self.settle(a, &f, Verdict::Neutral);
                499
            }
            Phase::Streaming(f, status) => {
                self.settle(a, &f, classify::stream_verdict(StreamEnd::ClientGone));
                answered_by = Some(f.target);
                status
            }
        };
        // A stream already under way was answered by its target (its cost counts).
        let answered_by = (status != 499).then_some(answered_by).flatten();
        if let Some(mut o) = self.outcome(i, a, status, None, answered_by) {
            // It left when it left: the recorded overhead is already inside that time.
            if let Some(r) = self.log.requests.get(i as usize) {
                o.duration = r.duration;
            }
            self.settled(i, &o);
        }
    }

    fn finish_unknown(&mut self, i: u32, a: &Active<'a>) {
        let o = Outcome {
            status: 0,
            code: None,
            duration: self.now.saturating_sub(a.arrived),
            attempts: a.walk.attempts(),
            unknown: true,
            cost_usd: None,
        };
        self.settled(i, &o);
    }

    /// Counts how request `i` ended in its model's tally.
    fn settled(&mut self, i: u32, o: &Outcome) {
        let Some(r) = self.log.requests.get(i as usize) else {
            return;
        };
        if let Some(t) = self.run.models.get_mut(r.model as usize) {
            t.add(o, o.code);
        }
        let longest = i64::try_from(r.duration.max(o.duration)).unwrap_or(i64::MAX);
        self.run.last_end = self.run.last_end.max(r.ts.saturating_add(longest));
    }

    /// Records how the request ended. `answered_by`: the target whose answer the client
    /// got, for its cost.
    fn finish(
        &mut self,
        i: u32,
        a: &Active<'a>,
        status: u16,
        code: Option<&'static str>,
        answered_by: Option<usize>,
    ) {
        if let Some(o) = self.outcome(i, a, status, code, answered_by) {
            self.settled(i, &o);
        }
    }

    /// How request `i` ended, as [`Sim::finish`] records it.
    fn outcome(
        &self,
        i: u32,
        a: &Active<'a>,
        status: u16,
        code: Option<&'static str>,
        answered_by: Option<usize>,
    ) -> Option<Outcome> {
        let r = self.log.requests.get(i as usize)?;
        let cost = answered_by
            .and_then(|k| a.plan.targets().get(k))
            .filter(|_| (200..300).contains(&status))
            .and_then(|t| cost(t, r.prompt_tokens, r.completion_tokens));
        let duration = self
            .now
            .saturating_sub(a.arrived)
            .saturating_add(r.overhead);
        Some(Outcome {
            status,
            code,
            duration,
            attempts: a.walk.attempts(),
            unknown: false,
            cost_usd: cost,
        })
    }

    /// Closes the episodes still open at the end, at the last request they turned away.
    fn close_episodes(&mut self) {
        for p in self.run.providers.values_mut() {
            if let Some((from, last)) = p.episode.take() {
                p.open.push((from, last.max(from)));
            }
        }
    }
}

/// What the live proxy would log as the request's cost: tokens at the target's prices.
fn cost(t: &Target, prompt: Option<u32>, completion: Option<u32>) -> Option<f64> {
    if t.input_cost.is_none() && t.output_cost.is_none() {
        return None;
    }
    let (p, c) = (f64::from(prompt?), f64::from(completion.unwrap_or(0)));
    Some((p * t.input_cost.unwrap_or(0.0) + c * t.output_cost.unwrap_or(0.0)) / 1_000_000.0)
}
