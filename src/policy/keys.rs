//! The key pool of a provider (contract §6 "Keys"): its `api_keys` rotate round-robin; a
//! key the provider answered 401, 402 or 403 is set aside for `key_cooldown`, and a 429 on
//! one of several keys sets aside that key alone, for its `retry-after`. The provider is
//! passed over only when every key is set aside.
//!
//! Invariants: a key's secret lives only in a sensitive `HeaderValue` and is shown only as
//! its last four characters ([`Key::redacted`]); the pool lives in the provider's health, so
//! a reload keeps the state of every key it keeps (matched by value) and forgets the rest.
//! Every method takes `now`; nothing here reads a clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::time::Instant;

/// A key as it may be shown: `…abcd` (last four characters), or `…` for short keys.
pub fn redact(key: &str) -> String {
    let n = key.chars().count();
    if n < 12 {
        return "…".into();
    }
    let tail: String = key.chars().skip(n - 4).collect();
    format!("…{tail}")
}

/// Why a key is set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cooling {
    /// The provider refused the key (401, 402, 403): `key_cooldown`.
    Refused,
    /// The provider rate-limited the key (429): its `retry-after`.
    RateLimited,
}

impl Cooling {
    fn code(self) -> u8 {
        match self {
            Cooling::Refused => 1,
            Cooling::RateLimited => 2,
        }
    }

    fn from_code(c: u8) -> Cooling {
        if c == 2 {
            Cooling::RateLimited
        } else {
            Cooling::Refused
        }
    }
}

/// One upstream key and its cooldown.
pub struct Key {
    /// The header value sent upstream (`Bearer <key>`), marked sensitive.
    value: HeaderValue,
    /// `…abcd`, for logs, metrics and the admin API.
    redacted: Box<str>,
    /// Nanoseconds since the pool's base until which the key is set aside.
    until: AtomicU64,
    /// [`Cooling`] code of the last set-aside.
    why: AtomicU8,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("key", &self.redacted).finish()
    }
}

impl Key {
    /// A ready key: `value` is what goes upstream, `secret` the bare key (for its tail).
    pub fn new(mut value: HeaderValue, secret: &str) -> Key {
        value.set_sensitive(true);
        Key {
            value,
            redacted: redact(secret).into(),
            until: AtomicU64::new(0),
            why: AtomicU8::new(0),
        }
    }

    /// The header value to send.
    pub fn value(&self) -> &HeaderValue {
        &self.value
    }

    /// The key as it may be shown: `…abcd`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

/// What the pool offers for the next attempt.
#[derive(Debug, Clone)]
pub enum Pick {
    /// The provider has no keys: send without one.
    NoKeys,
    /// Send with this key.
    Key(Arc<Key>),
    /// Every key is set aside (or was already tried by this request).
    Exhausted {
        /// Until the first key is ready again (zero if only tried keys are ready).
        wait: Duration,
        /// Why that first key is set aside.
        why: Cooling,
    },
}

/// One key's state, for the admin API and metrics.
#[derive(Debug, Clone)]
pub struct KeyView {
    /// `…abcd`
    pub key: Box<str>,
    /// Time left until it is ready; `None` when ready.
    pub retry_in: Option<Duration>,
}

/// A provider's keys.
#[derive(Debug)]
pub struct KeyPool {
    keys: ArcSwap<Box<[Arc<Key>]>>,
    next: AtomicUsize,
    base: Instant,
}

impl KeyPool {
    /// A pool of ready keys.
    pub fn new(keys: Vec<Arc<Key>>, now: Instant) -> KeyPool {
        KeyPool {
            keys: ArcSwap::from_pointee(keys.into_boxed_slice()),
            next: AtomicUsize::new(0),
            base: now,
        }
    }

    /// Takes a reloaded key list: keys already in the pool (same value) keep their state.
    pub fn update(&self, keys: &[Arc<Key>]) {
        let old = self.keys.load();
        let merged: Vec<Arc<Key>> = keys
            .iter()
            .map(|k| {
                old.iter()
                    .find(|o| o.value == k.value)
                    .cloned()
                    .unwrap_or_else(|| k.clone())
            })
            .collect();
        self.keys.store(Arc::new(merged.into_boxed_slice()));
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    /// True when the provider has no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn since(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The next ready key, round-robin, skipping keys in `tried` (this request's earlier
    /// keys). Without `tried`, a request never sees `Exhausted` while any key is ready.
    pub fn pick(&self, now: Instant, tried: &[Arc<Key>]) -> Pick {
        let keys = self.keys.load();
        let n = keys.len();
        if n == 0 {
            return Pick::NoKeys;
        }
        let t = self.since(now);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut soonest: Option<(u64, Cooling)> = None;
        for i in 0..n {
            let k = &keys[start.wrapping_add(i) % n];
            let until = k.until.load(Ordering::Acquire);
            if until > t {
                let why = Cooling::from_code(k.why.load(Ordering::Relaxed));
                if soonest.is_none_or(|(u, _)| until < u) {
                    soonest = Some((until, why));
                }
                continue;
            }
            if tried.iter().any(|x| Arc::ptr_eq(x, k)) {
                if soonest.is_none_or(|(u, _)| u > t) {
                    soonest = Some((t, Cooling::Refused));
                }
                continue;
            }
            return Pick::Key(k.clone());
        }
        let (until, why) = soonest.unwrap_or((t, Cooling::Refused));
        Pick::Exhausted {
            wait: Duration::from_nanos(until.saturating_sub(t)),
            why,
        }
    }

    /// True when at least one key is ready (or the provider has none).
    pub fn any_ready(&self, now: Instant) -> Result<(), (Duration, Cooling)> {
        match self.pick_peek(now) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn pick_peek(&self, now: Instant) -> Option<(Duration, Cooling)> {
        let keys = self.keys.load();
        let t = self.since(now);
        let mut soonest: Option<(u64, Cooling)> = None;
        for k in keys.iter() {
            let until = k.until.load(Ordering::Acquire);
            if until <= t {
                return None;
            }
            if soonest.is_none_or(|(u, _)| until < u) {
                soonest = Some((until, Cooling::from_code(k.why.load(Ordering::Relaxed))));
            }
        }
        soonest.map(|(u, why)| (Duration::from_nanos(u - t), why))
    }

    /// Sets `key` aside for `wait` from `now`. A longer set-aside already running stays.
    pub fn set_aside(&self, key: &Key, now: Instant, wait: Duration, why: Cooling) {
        let until = self
            .since(now)
            .saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
        key.why.store(why.code(), Ordering::Relaxed);
        key.until.fetch_max(until, Ordering::AcqRel);
    }

    /// Every key with its state, in configured order.
    pub fn view(&self, now: Instant) -> Vec<KeyView> {
        let t = self.since(now);
        self.keys
            .load()
            .iter()
            .map(|k| {
                let until = k.until.load(Ordering::Acquire);
                KeyView {
                    key: k.redacted.clone(),
                    retry_in: (until > t).then(|| Duration::from_nanos(until - t)),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<Key> {
        Arc::new(Key::new(
            HeaderValue::from_str(&format!("Bearer {s}")).unwrap(),
            s,
        ))
    }

    fn picked(p: Pick) -> String {
        match p {
            Pick::Key(k) => k.redacted().to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn redaction_keeps_at_most_four_characters() {
        assert_eq!(redact("sk-proj-abcdefghijklmnop"), "…mnop");
        assert_eq!(redact("short"), "…");
    }

    #[tokio::test(start_paused = true)]
    async fn rotates_and_skips_cooling_keys() {
        let now = Instant::now();
        let pool = KeyPool::new(
            vec![key("sk-aaaaaaaaaaaa1111"), key("sk-bbbbbbbbbbbb2222")],
            now,
        );
        assert_eq!(picked(pool.pick(now, &[])), "…1111");
        assert_eq!(picked(pool.pick(now, &[])), "…2222");
        assert_eq!(picked(pool.pick(now, &[])), "…1111");
        let keys = pool.keys.load_full();
        pool.set_aside(&keys[0], now, Duration::from_secs(60), Cooling::Refused);
        for _ in 0..4 {
            assert_eq!(picked(pool.pick(now, &[])), "…2222");
        }
        assert!(pool.any_ready(now).is_ok());
        pool.set_aside(&keys[1], now, Duration::from_secs(5), Cooling::RateLimited);
        match pool.pick(now, &[]) {
            Pick::Exhausted { wait, why } => {
                assert_eq!(wait, Duration::from_secs(5));
                assert_eq!(why, Cooling::RateLimited);
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(
            pool.any_ready(now),
            Err((Duration::from_secs(5), Cooling::RateLimited))
        );
        let later = now + Duration::from_secs(6);
        assert_eq!(picked(pool.pick(later, &[])), "…2222");
        let view = pool.view(later);
        assert_eq!(view[0].retry_in, Some(Duration::from_secs(54)));
        assert_eq!(view[1].retry_in, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_does_not_reuse_its_keys() {
        let now = Instant::now();
        let pool = KeyPool::new(vec![key("sk-aaaaaaaaaaaa1111"), key("sk-b2222")], now);
        let first = match pool.pick(now, &[]) {
            Pick::Key(k) => k,
            p => panic!("{p:?}"),
        };
        let second = match pool.pick(now, std::slice::from_ref(&first)) {
            Pick::Key(k) => k,
            p => panic!("{p:?}"),
        };
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.redacted(), "…");
        assert!(matches!(
            pool.pick(now, &[first, second]),
            Pick::Exhausted { wait, .. } if wait == Duration::ZERO
        ));
        assert!(matches!(
            KeyPool::new(vec![], now).pick(now, &[]),
            Pick::NoKeys
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn reload_keeps_the_state_of_kept_keys() {
        let now = Instant::now();
        let a = key("sk-aaaaaaaaaaaa1111");
        let pool = KeyPool::new(vec![a.clone(), key("sk-bbbbbbbbbbbb2222")], now);
        pool.set_aside(&a, now, Duration::from_secs(60), Cooling::Refused);
        pool.update(&[key("sk-aaaaaaaaaaaa1111"), key("sk-cccccccccccc3333")]);
        let view = pool.view(now);
        assert_eq!(&*view[0].key, "…1111");
        assert_eq!(view[0].retry_in, Some(Duration::from_secs(60)));
        assert_eq!(&*view[1].key, "…3333");
        assert_eq!(view[1].retry_in, None);
    }
}
