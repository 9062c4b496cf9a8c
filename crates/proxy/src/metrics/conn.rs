//! Handles resolved once per listener ([`ListenerMetrics`]) and the RAII guards of one
//! connection: its state in the connection gauges ([`ClientGuard`]) and its authentication
//! attempt ([`AuthAttempt`]).

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use pgbastion_gateway::GatewayError;

use super::labels::{ConnState, ListenerLabels, RefusalReason, RouteLabels, StateLabels};
use super::{Metrics, SessionMeter};

/// One listener's metric handles, resolved when the listener starts.
#[derive(Debug)]
pub struct ListenerMetrics {
    metrics: Arc<Metrics>,
    handshake: Gauge,
    session: Gauge,
    opened: Counter,
    closed: Counter,
    sessions: Counter,
    received: Counter,
    sent: Counter,
    tls_failures: Counter,
}

impl ListenerMetrics {
    pub(super) fn new(metrics: Arc<Metrics>, address: &str) -> Self {
        let listener = ListenerLabels {
            listener: address.to_owned(),
        };
        let state = |state| {
            metrics
                .connections
                .get_or_create(&StateLabels {
                    listener: address.to_owned(),
                    state,
                })
                .clone()
        };
        let (handshake, session) = (state(ConnState::Handshake), state(ConnState::Session));
        let opened = metrics.opened.get_or_create(&listener).clone();
        let closed = metrics.closed.get_or_create(&listener).clone();
        let sessions = metrics.sessions.get_or_create(&listener).clone();
        let received = metrics.received.get_or_create(&listener).clone();
        let sent = metrics.sent.get_or_create(&listener).clone();
        let tls_failures = metrics.tls_failures.get_or_create(&listener).clone();
        Self {
            metrics,
            handshake,
            session,
            opened,
            closed,
            sessions,
            received,
            sent,
            tls_failures,
        }
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts an accepted connection; it stays in the gauge until the guard is dropped.
    pub fn accepted(self: &Arc<Self>) -> ClientGuard {
        self.opened.inc();
        self.handshake.inc();
        ClientGuard {
            listener: self.clone(),
            in_session: false,
        }
    }

    /// Counts a connection the gateway gave up on: a failed TLS handshake, or a refusal
    /// for its reason. Clients that left, and authentication failures (counted by their
    /// [`AuthAttempt`]) and refusals of the proxy's hooks (counted where they are decided),
    /// are not counted here.
    pub fn handshake_failed(&self, error: &GatewayError) {
        let reason = match error {
            GatewayError::TlsHandshake(_) | GatewayError::DirectTlsWithoutAlpn => {
                self.tls_failures.inc();
                return;
            }
            GatewayError::TlsRequired | GatewayError::DirectTlsNotConfigured => RefusalReason::Tls,
            GatewayError::ProxyHeader(_) => RefusalReason::ProxyHeader,
            GatewayError::Timeout => RefusalReason::Timeout,
            GatewayError::Decode(_)
            | GatewayError::UnexpectedMessage { .. }
            | GatewayError::SslRequestOverTls
            | GatewayError::DataAfterSslRequest
            | GatewayError::UnsupportedProtocol(_)
            | GatewayError::MissingUser => RefusalReason::Protocol,
            GatewayError::Io(_)
            | GatewayError::UnexpectedEof
            | GatewayError::Closed
            | GatewayError::Encode(_)
            | GatewayError::InvalidPassword { .. }
            | GatewayError::AuthFailed { .. }
            | GatewayError::Sasl(_)
            | GatewayError::Hook(_) => return,
        };
        self.metrics.refused(reason);
    }

    /// The byte counters and duration histograms of a session on route `route`.
    pub fn session_meter(&self, route: usize) -> SessionMeter {
        let labels = RouteLabels::new(route);
        SessionMeter::new(
            self.received.clone(),
            self.sent.clone(),
            self.metrics.queries.get_or_create(&labels).clone(),
            self.metrics.transactions.get_or_create(&labels).clone(),
        )
    }
}

/// One client connection in the connection gauges, from accept until dropped.
#[derive(Debug)]
pub struct ClientGuard {
    listener: Arc<ListenerMetrics>,
    in_session: bool,
}

impl ClientGuard {
    /// The connection is authenticated and its session begins.
    pub fn session_started(&mut self) {
        if !std::mem::replace(&mut self.in_session, true) {
            self.listener.handshake.dec();
            self.listener.session.inc();
            self.listener.sessions.inc();
        }
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Metrics {
        self.listener.metrics()
    }

    fn state(&self) -> &Gauge {
        if self.in_session {
            &self.listener.session
        } else {
            &self.listener.handshake
        }
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.listener.closed.inc();
        self.state().dec();
    }
}

/// One client's authentication: counted as a failure when dropped, unless
/// [`AuthAttempt::succeeded`] said otherwise.
#[derive(Debug)]
pub struct AuthAttempt {
    success: Counter,
    failure: Counter,
    done: bool,
}

impl AuthAttempt {
    pub(super) fn new(success: Counter, failure: Counter) -> Self {
        Self {
            success,
            failure,
            done: false,
        }
    }

    /// The client authenticated.
    pub fn succeeded(mut self) {
        self.done = true;
        self.success.inc();
    }
}

impl Drop for AuthAttempt {
    fn drop(&mut self) {
        if !self.done {
            self.failure.inc();
        }
    }
}
