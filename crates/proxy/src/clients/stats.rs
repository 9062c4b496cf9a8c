//! [`ClientStats`]: what one session did, counted in atomics by its client stream, and
//! [`Totals`], their sum over sessions (SHOW STATS).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One session's live counters.
#[derive(Debug, Default)]
pub struct ClientStats {
    queries: AtomicU64,
    transactions: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    query_micros: AtomicU64,
    transaction_micros: AtomicU64,
}

fn micros(took: Duration) -> u64 {
    u64::try_from(took.as_micros()).unwrap_or(u64::MAX)
}

impl ClientStats {
    /// The client sent `bytes`.
    pub fn received(&self, bytes: u64) {
        self.received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The client was sent `bytes`.
    pub fn sent(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A query cycle (up to a ReadyForQuery) took `took`.
    pub fn query_done(&self, took: Duration) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.query_micros.fetch_add(micros(took), Ordering::Relaxed);
    }

    /// A transaction (up to a ReadyForQuery 'I') took `took`.
    pub fn transaction_done(&self, took: Duration) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.transaction_micros
            .fetch_add(micros(took), Ordering::Relaxed);
    }

    /// The counts now.
    pub fn totals(&self) -> Totals {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Totals {
            queries: read(&self.queries),
            transactions: read(&self.transactions),
            received: read(&self.received),
            sent: read(&self.sent),
            query_micros: read(&self.query_micros),
            transaction_micros: read(&self.transaction_micros),
        }
    }
}

/// Counts of one session or summed over several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Query cycles (each up to a ReadyForQuery).
    pub queries: u64,
    /// Transactions (each up to a ReadyForQuery 'I').
    pub transactions: u64,
    /// Bytes received from clients.
    pub received: u64,
    /// Bytes sent to clients.
    pub sent: u64,
    /// Time spent in queries, in microseconds.
    pub query_micros: u64,
    /// Time spent in transactions, in microseconds.
    pub transaction_micros: u64,
}

impl Totals {
    /// Adds `more` into these.
    pub fn add(&mut self, more: &Totals) {
        self.queries += more.queries;
        self.transactions += more.transactions;
        self.received += more.received;
        self.sent += more.sent;
        self.query_micros += more.query_micros;
        self.transaction_micros += more.transaction_micros;
    }
}
