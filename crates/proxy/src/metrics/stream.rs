//! [`Metered`]: a client stream ([`Observed`]) that counts the bytes both ways and times queries and
//! transactions from the client's side of the protocol: a query cycle ends at each
//! ReadyForQuery the client receives, a transaction at each one that says idle. The same
//! view serves the transparent relay and the pooled sessions (whose ReadyForQuery messages
//! are the multiplexer's), with no change to either.
//!
//! The messages sent to the client are followed by a [`FrameScanner`], which reads only
//! their 5-byte headers; the time is read once per read or write, not per message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbastion_wire::{Direction, FrameScanner};
use prometheus_client::metrics::counter::Counter;

use super::Durations;
use crate::clients::ClientStats;
use crate::observed::{Observed, Observer};

/// When one kind of cycle (a query, a transaction) started.
#[derive(Debug, Default)]
struct Stopwatch {
    /// The first client bytes since the last cycle ended.
    pending: Option<Instant>,
    /// When the last cycle ended: where the next one starts when the client sent it ahead
    /// (pipelining) and so before that end.
    last_end: Option<Instant>,
}

impl Stopwatch {
    fn client_sent(&mut self, now: Instant) {
        self.pending.get_or_insert(now);
    }

    fn end(&mut self, now: Instant) -> Duration {
        let start = self.pending.take().or(self.last_end).unwrap_or(now);
        self.last_end = Some(now);
        now.saturating_duration_since(start)
    }
}

/// What is counted on one session's client stream.
#[derive(Debug)]
pub struct SessionMeter {
    received: Counter,
    sent: Counter,
    queries: Durations,
    transactions: Durations,
    scanner: FrameScanner,
    query: Stopwatch,
    transaction: Stopwatch,
    /// The session's own counts in the client registry (the admin console's SHOW STATS).
    client: Option<Arc<ClientStats>>,
}

impl SessionMeter {
    pub(super) fn new(
        received: Counter,
        sent: Counter,
        queries: Durations,
        transactions: Durations,
    ) -> Self {
        Self {
            received,
            sent,
            queries,
            transactions,
            scanner: FrameScanner::new(Direction::Backend),
            query: Stopwatch::default(),
            transaction: Stopwatch::default(),
            client: None,
        }
    }

    /// The same meter, also counting into `client`, the session's counts in the registry.
    pub fn counting(self, client: Arc<ClientStats>) -> Self {
        Self {
            client: Some(client),
            ..self
        }
    }
}

impl Observer for SessionMeter {
    fn client_sent(&mut self, bytes: &[u8]) {
        let bytes = bytes.len() as u64;
        self.received.inc_by(bytes);
        if let Some(client) = &self.client {
            client.received(bytes);
        }
        let now = Instant::now();
        self.query.client_sent(now);
        self.transaction.client_sent(now);
    }

    fn client_received(&mut self, bytes: &[u8]) {
        self.sent.inc_by(bytes.len() as u64);
        if let Some(client) = &self.client {
            client.sent(bytes.len() as u64);
        }
        let (ready, idle) = (self.scanner.ready_count(), self.scanner.idle_ready_count());
        // A stream the scanner cannot follow (a length below 4) is still relayed; it is
        // only no longer timed.
        let _ = self.scanner.feed(bytes);
        let ready = self.scanner.ready_count() - ready;
        let idle = self.scanner.idle_ready_count() - idle;
        if ready == 0 {
            return;
        }
        let now = Instant::now();
        for _ in 0..ready {
            let took = self.query.end(now);
            self.queries.observe(took);
            if let Some(client) = &self.client {
                client.query_done(took);
            }
        }
        for _ in 0..idle {
            let took = self.transaction.end(now);
            self.transactions.observe(took);
            if let Some(client) = &self.client {
                client.transaction_done(took);
            }
        }
    }
}

/// A client stream whose traffic a [`SessionMeter`] counts (from a message boundary on).
pub type Metered<S> = Observed<S, SessionMeter>;

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> (SessionMeter, Durations, Durations) {
        let queries = Durations::default();
        let transactions = Durations::default();
        let meter = SessionMeter::new(
            Counter::default(),
            Counter::default(),
            queries.clone(),
            transactions.clone(),
        );
        (meter, queries, transactions)
    }

    fn count(histogram: &Durations) -> u64 {
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("h", "h", histogram.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("h_count "))
            .and_then(|n| n.parse().ok())
            .unwrap()
    }

    #[test]
    fn each_ready_for_query_ends_a_query_and_each_idle_one_a_transaction() {
        let (mut meter, queries, transactions) = meter();
        meter.client_sent(&[0; 10]);
        meter.client_received(b"C\0\0\0\x0aBEGIN\0Z\0\0\0\x05T");
        meter.client_sent(&[0; 10]);
        // Split inside the second ReadyForQuery: counted once whole.
        meter.client_received(b"C\0\0\0\x0bCOMMIT\0Z\0\0");
        assert_eq!((count(&queries), count(&transactions)), (1, 0));
        meter.client_received(b"\0\x05IZ\0\0\0\x05I");
        assert_eq!((count(&queries), count(&transactions)), (3, 2));
    }

    #[test]
    fn a_pipelined_query_starts_when_the_one_before_it_ended() {
        let mut watch = Stopwatch::default();
        let t0 = Instant::now();
        watch.client_sent(t0);
        watch.client_sent(t0 + Duration::from_millis(1));
        let first = watch.end(t0 + Duration::from_millis(10));
        let second = watch.end(t0 + Duration::from_millis(30));
        assert_eq!(first, Duration::from_millis(10));
        assert_eq!(second, Duration::from_millis(20));
    }
}
