//! Repeated warnings, logged at most once per interval for each kind.
//!
//! A flood (a scanner failing TLS handshakes, a backend that is down while hundreds of
//! clients try it, clients over a connection limit) would otherwise write one line per
//! attempt and bury everything else. A [`WarnLimiter`] lets the first warning of a kind
//! through, stays quiet for the rest of the interval, and reports on the next line that gets
//! through how many it held back. The caller chooses the kind: a call site and what makes
//! its warnings "the same" (a backend address, a client address, an error variant).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a kind stays quiet after one of its warnings was logged.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The most kinds remembered at once. A peer that can choose the kind (its own address) must
/// not grow the map without bound: past this, kinds whose interval is over are forgotten
/// (with their held-back counts), and if every one is still fresh a new kind is held back.
const MAX_KINDS: usize = 4096;

/// Decides which warnings of each kind are logged.
#[derive(Debug)]
pub struct WarnLimiter<K> {
    interval: Duration,
    kinds: Mutex<HashMap<K, Window>>,
}

/// One kind's current interval.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When its last logged warning was.
    logged_at: Instant,
    /// Warnings held back since then.
    held_back: u64,
}

impl<K: Hash + Eq> Default for WarnLimiter<K> {
    fn default() -> Self {
        Self::new(WARN_INTERVAL)
    }
}

impl<K: Hash + Eq> WarnLimiter<K> {
    /// At most one warning of a kind per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a warning of `kind` is logged now: `Some(n)` when it is, `n` being how many of
    /// its kind were held back since the last one logged (log it as a field, e.g.
    /// `suppressed = n`); `None` to stay quiet.
    pub fn admit(&self, kind: K) -> Option<u64> {
        self.admit_at(kind, Instant::now())
    }

    fn admit_at(&self, kind: K, now: Instant) -> Option<u64> {
        // A panic elsewhere while holding the lock must not silence warnings for good.
        let mut kinds = self
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(window) = kinds.get_mut(&kind) {
            if now.saturating_duration_since(window.logged_at) < self.interval {
                window.held_back += 1;
                return None;
            }
            let held_back = window.held_back;
            *window = Window::new(now);
            return Some(held_back);
        }
        if kinds.len() >= MAX_KINDS {
            let interval = self.interval;
            kinds.retain(|_, w| now.saturating_duration_since(w.logged_at) < interval);
            if kinds.len() >= MAX_KINDS {
                return None;
            }
        }
        kinds.insert(kind, Window::new(now));
        Some(0)
    }
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            logged_at: now,
            held_back: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_warning_of_a_kind_is_logged_and_repeats_within_the_interval_are_not() {
        let limiter = WarnLimiter::new(10 * SECOND);
        let start = Instant::now();
        assert_eq!(limiter.admit_at("backend down", start), Some(0));
        assert_eq!(limiter.admit_at("backend down", start + SECOND), None);
        assert_eq!(limiter.admit_at("backend down", start + 9 * SECOND), None);
    }

    #[test]
    fn the_next_warning_after_the_interval_carries_the_count_held_back() {
        let limiter = WarnLimiter::new(10 * SECOND);
        let start = Instant::now();
        assert_eq!(limiter.admit_at(1, start), Some(0));
        for i in 1..=5 {
            assert_eq!(limiter.admit_at(1, start + i * SECOND), None);
        }
        assert_eq!(limiter.admit_at(1, start + 10 * SECOND), Some(5));
        assert_eq!(limiter.admit_at(1, start + 11 * SECOND), None);
        assert_eq!(limiter.admit_at(1, start + 25 * SECOND), Some(1));
        assert_eq!(limiter.admit_at(1, start + 40 * SECOND), Some(0));
    }

    #[test]
    fn kinds_are_limited_independently() {
        let limiter = WarnLimiter::new(10 * SECOND);
        let start = Instant::now();
        assert_eq!(limiter.admit_at("10.0.0.1", start), Some(0));
        assert_eq!(limiter.admit_at("10.0.0.2", start), Some(0));
        assert_eq!(limiter.admit_at("10.0.0.1", start + SECOND), None);
        assert_eq!(limiter.admit_at("10.0.0.2", start + SECOND), None);
    }

    #[test]
    fn a_flood_of_new_kinds_is_bounded_and_forgotten_once_its_interval_is_over() {
        let limiter = WarnLimiter::new(10 * SECOND);
        let start = Instant::now();
        let max = u32::try_from(MAX_KINDS).unwrap();
        for kind in 0..max {
            assert_eq!(limiter.admit_at(kind, start), Some(0));
        }
        assert_eq!(
            limiter.admit_at(max, start + SECOND),
            None,
            "over the bound"
        );
        assert_eq!(
            limiter.admit_at(0, start + SECOND),
            None,
            "a known kind still counts"
        );
        assert_eq!(limiter.admit_at(max, start + 10 * SECOND), Some(0));
        assert_eq!(
            limiter.kinds.lock().unwrap().len(),
            1,
            "the old kinds are forgotten"
        );
    }
}
