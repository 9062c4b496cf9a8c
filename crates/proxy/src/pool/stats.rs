//! Counters of one pool and the [`PoolStats`] snapshot read from them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A snapshot of one pool, for the admin console and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// The configured size.
    pub size: usize,
    /// Connections open now: idle, leased, being opened, checked or reset.
    pub open: usize,
    /// Idle connections.
    pub idle: usize,
    /// Open connections that are not idle.
    pub in_use: usize,
    /// Checkouts waiting now for a slot or a cap.
    pub waiting: usize,
    /// Checkouts that got a connection, in total.
    pub checkouts: u64,
    /// Time those checkouts spent, in total (waiting, checking and connecting).
    pub wait_time: Duration,
    /// Checkouts that failed with [`super::PoolError::Timeout`], in total.
    pub timeouts: u64,
    /// Connections opened (attempts), in total.
    pub connects: u64,
    /// Attempts that failed, in total.
    pub connect_failures: u64,
}

/// The live counters behind [`PoolStats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) open: AtomicUsize,
    pub(super) waiting: AtomicUsize,
    pub(super) checkouts: AtomicU64,
    pub(super) wait_nanos: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) connects: AtomicU64,
    pub(super) connect_failures: AtomicU64,
}

impl Counters {
    pub(super) fn checked_out(&self, took: Duration) {
        self.checkouts.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, size: usize, idle: usize) -> PoolStats {
        let open = self.open.load(Ordering::Relaxed);
        PoolStats {
            size,
            open,
            idle,
            in_use: open.saturating_sub(idle),
            waiting: self.waiting.load(Ordering::Relaxed),
            checkouts: self.checkouts.load(Ordering::Relaxed),
            wait_time: Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed)),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
        }
    }
}

/// One open connection in [`Counters::open`], from the start of its connect until it is
/// dropped (closed).
#[derive(Debug)]
pub(super) struct OpenCount(Arc<Counters>);

impl OpenCount {
    pub(super) fn new(counters: &Arc<Counters>) -> Self {
        counters.open.fetch_add(1, Ordering::Relaxed);
        Self(counters.clone())
    }
}

impl Drop for OpenCount {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
