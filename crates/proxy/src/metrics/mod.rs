//! [`Metrics`]: the proxy's Prometheus metrics, one value for the life of the process (it
//! outlives configuration reloads), and the readiness state the health endpoint reports.
//!
//! The hot path stays cheap: counters and gauges are atomics, and the handles a connection
//! needs are resolved once, per listener ([`ListenerMetrics`]) or per connection
//! ([`SessionMeter`], [`AuthAttempt`]), never per message. Pool gauges are read from each
//! pool's own counters when scraped ([`pools`]).

mod audit;
mod conn;
mod durations;
mod labels;
mod pools;
mod ready;
mod stream;

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

pub use audit::AuditCounters;
pub use conn::{AuthAttempt, ClientGuard, ListenerMetrics};
pub use durations::Durations;
pub use labels::{CancelResult, Outcome, RefusalReason};
pub use pools::{PoolLabels, StatsReader};
pub use ready::{NotReady, Readiness};
pub use stream::{Metered, SessionMeter};

use labels::{
    AuthLabels, CancelLabels, ListenerLabels, ReasonLabels, ResultLabels, RouteLabels, StateLabels,
};
use pools::PoolDirectory;

type HistogramFamily<L> = Family<L, Durations>;

/// Every metric of the proxy, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    connections: Family<StateLabels, Gauge>,
    opened: Family<ListenerLabels, Counter>,
    closed: Family<ListenerLabels, Counter>,
    sessions: Family<ListenerLabels, Counter>,
    received: Family<ListenerLabels, Counter>,
    sent: Family<ListenerLabels, Counter>,
    tls_failures: Family<ListenerLabels, Counter>,
    auth: Family<AuthLabels, Counter>,
    route_hits: Family<RouteLabels, Counter>,
    refusals: Family<ReasonLabels, Counter>,
    backend_connects: Family<ResultLabels, Counter>,
    queries: HistogramFamily<RouteLabels>,
    transactions: HistogramFamily<RouteLabels>,
    checkout_wait: HistogramFamily<PoolLabels>,
    cancels: Family<CancelLabels, Counter>,
    key_refreshes: Family<ResultLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    pools: PoolDirectory,
    audit: AuditCounters,
    /// Whether the proxy is ready for clients (`/ready`).
    pub readiness: Readiness,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `pgbastion_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pgbastion");
        let metrics = Self {
            connections: Family::default(),
            opened: Family::default(),
            closed: Family::default(),
            sessions: Family::default(),
            received: Family::default(),
            sent: Family::default(),
            tls_failures: Family::default(),
            auth: Family::default(),
            route_hits: Family::default(),
            refusals: Family::default(),
            backend_connects: Family::default(),
            queries: Family::default(),
            transactions: Family::default(),
            checkout_wait: Family::default(),
            cancels: Family::default(),
            key_refreshes: Family::default(),
            reloads: Family::default(),
            pools: PoolDirectory::default(),
            audit: AuditCounters::default(),
            readiness: Readiness::default(),
            registry: Registry::default(),
        };
        metrics.register(&mut registry);
        Self {
            registry,
            ..metrics
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "client_connections",
            "Client connections open now, by listener and state (handshake: not yet \
             authenticated; session: served)",
            self.connections.clone(),
        );
        r.register(
            "client_connections_opened",
            "Client connections accepted, by listener",
            self.opened.clone(),
        );
        r.register(
            "client_connections_closed",
            "Client connections closed, by listener",
            self.closed.clone(),
        );
        r.register(
            "sessions_started",
            "Client sessions started (authenticated and logged into a backend or a pool)",
            self.sessions.clone(),
        );
        let bytes = Unit::Bytes;
        r.register_with_unit(
            "client_received",
            "Bytes received from clients in sessions",
            bytes.clone(),
            self.received.clone(),
        );
        r.register_with_unit(
            "client_sent",
            "Bytes sent to clients in sessions",
            bytes,
            self.sent.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "Client TLS handshakes that failed, by listener",
            self.tls_failures.clone(),
        );
        r.register(
            "auth_attempts",
            "Client authentications by mode and result (failure: refused, or abandoned \
             by the client)",
            self.auth.clone(),
        );
        r.register(
            "route_hits",
            "Connections whose startup matched a route, by route number",
            self.route_hits.clone(),
        );
        r.register(
            "refusals",
            "Connections refused before their session, by reason",
            self.refusals.clone(),
        );
        r.register(
            "backend_connects",
            "Backend logins (transparent sessions, pools, passthrough checks), by result",
            self.backend_connects.clone(),
        );
        r.register_with_unit(
            "query_duration",
            "Queries (each cycle up to a ReadyForQuery), by route",
            Unit::Seconds,
            self.queries.clone(),
        );
        r.register_with_unit(
            "transaction_duration",
            "Transactions (each up to a ReadyForQuery 'I', single statements included), by \
             route",
            Unit::Seconds,
            self.transactions.clone(),
        );
        r.register_with_unit(
            "pool_checkout_wait",
            "Time a pooled client waited for a backend (timeouts included), by pool",
            Unit::Seconds,
            self.checkout_wait.clone(),
        );
        r.register(
            "cancel_requests",
            "Cancel requests, by result",
            self.cancels.clone(),
        );
        r.register(
            "token_key_refreshes",
            "Token key refreshes ([jwt]), by result",
            self.key_refreshes.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads, by result",
            self.reloads.clone(),
        );
        r.register_collector(Box::new(self.pools.clone()));
        self.audit.register(r);
    }

    /// Every live pool's counters, by labels (pools alike in their labels added up): what
    /// the metrics endpoint and the admin console's SHOW POOLS read.
    pub fn pools(&self) -> std::collections::BTreeMap<PoolLabels, crate::pool::PoolStats> {
        self.pools.snapshot()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The handles of one listener, named by its address.
    pub fn listener(self: &Arc<Self>, address: &str) -> Arc<ListenerMetrics> {
        Arc::new(ListenerMetrics::new(self.clone(), address))
    }

    /// Counts a connection refused before its session.
    pub fn refused(&self, reason: RefusalReason) {
        self.refusals.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a connection whose startup matched route `number`.
    pub fn route_hit(&self, number: usize) {
        self.route_hits
            .get_or_create(&RouteLabels::new(number))
            .inc();
    }

    /// Counts a backend login and its result.
    pub fn backend_connect(&self, result: Outcome) {
        self.backend_connects
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a cancel request and what became of it.
    pub fn cancel(&self, result: CancelResult) {
        self.cancels.get_or_create(&CancelLabels { result }).inc();
    }

    /// Counts a token key refresh and its result.
    pub fn key_refresh(&self, result: Outcome) {
        self.key_refreshes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a configuration reload (SIGHUP, the admin `RELOAD`) and its result.
    pub fn reloaded(&self, result: Outcome) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// An authentication attempt in `mode` (a route's `auth`): a failure unless
    /// [`AuthAttempt::succeeded`] is called before it is dropped.
    pub fn auth_attempt(&self, mode: &'static str) -> AuthAttempt {
        let counter = |result| {
            self.auth
                .get_or_create(&AuthLabels { mode, result })
                .clone()
        };
        AuthAttempt::new(counter(Outcome::Success), counter(Outcome::Failure))
    }

    /// The query audit's counters.
    pub fn audit(&self) -> AuditCounters {
        self.audit.clone()
    }

    /// Starts reporting the gauges of a pool (while it exists) and returns its checkout wait
    /// histogram.
    pub fn track_pool(&self, labels: PoolLabels, stats: StatsReader) -> Durations {
        let wait = self.checkout_wait.get_or_create(&labels).clone();
        self.pools.track(labels, stats);
        wait
    }
}

#[cfg(test)]
mod tests;
