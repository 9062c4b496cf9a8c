//! The query audit (`[audit]`, off by default): one JSON line per event to stdout or a file
//! — a session's start (who, from where, how authenticated, to which backend), each Query
//! and Parse text, each ErrorResponse with its SQLSTATE, and its end (duration, bytes,
//! transactions, who ended it).
//!
//! Every event has its `seq` in its session (a gap: events dropped); an `error` follows
//! the statement(s) it answers in that order.
//!
//! A session opens with an [`Opening`] (built from what admission decided, before the proof
//! is spent on the backend login), becomes a [`SessionAudit`] when it starts, hands a [`Tap`]
//! to its client stream ([`Audited`]) and ends with [`SessionAudit::end`]. Events go to the
//! [`AuditLog`]'s writer thread through a bounded queue: a relay never waits for the audit.
//! No secret is ever part of an event: passwords, tokens and SCRAM messages are exchanged
//! before the session starts, and the identity recorded is a name (a token's `sub`, a
//! certificate's CN), never a credential.

mod event;
mod settings;
mod tap;
mod writer;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use pgbastion_gateway::ConnectionState;

use crate::admission::{Chosen, Proof};
use crate::clients::ClientId;
use crate::config::AuthMode;
use crate::login_plan::LoginPlan;
use crate::observed::Observer;
pub use event::{
    AdminCommand, ErrorEvent, Event, FunctionCall, Record, SessionEnd, SessionStart, Statement,
    TlsFacts, ARG_LIMIT,
};
pub use settings::{AuditConfig, AuditDestination, AuditSettings};
use tap::Totals;
pub use tap::{Audited, Tap, TEXT_LIMIT};
pub use writer::{AuditError, AuditLog};

/// A session about to start, with what its `session_start` event will say.
#[derive(Debug)]
pub struct Opening {
    log: Arc<AuditLog>,
    id: ClientId,
    start: SessionStart,
}

impl Opening {
    /// The audit of connection `id`, when there is an audit log: what its state, route and
    /// proof say about it, and its backend login's `plan` (`None`: none could be made).
    pub fn new(
        log: Option<&Arc<AuditLog>>,
        id: ClientId,
        (state, chosen, proof): (&ConnectionState, &Chosen, &Proof),
        plan: Option<&LoginPlan>,
        pooled: bool,
    ) -> Option<Self> {
        let log = log?.clone();
        let client = state.client.as_ref();
        let start = SessionStart {
            client_addr: state.client_addr.to_string(),
            peer_addr: state.peer_addr.to_string(),
            tls: state.tls.as_ref().map(|tls| TlsFacts {
                version: tls.protocol_version.clone(),
                sni: tls.server_name.clone(),
                client_subject: tls
                    .peer_certificates
                    .first()
                    .and_then(|der| certificate_subject(der)),
            }),
            user: client.map(|c| c.user().to_owned()).unwrap_or_default(),
            database: client.map(|c| c.database().to_owned()).unwrap_or_default(),
            route: chosen.route.number,
            auth: chosen.route.auth.name(),
            identity: identity(chosen.route.auth, proof, state),
            backend: plan.map(|p| p.address.to_string()),
            backend_user: plan.map(|p| p.user.clone()),
            backend_database: plan.map(|p| p.database.clone()),
            pooled,
        };
        Some(Self { log, id, start })
    }

    /// The session has started: `session_start` is written.
    pub fn start(self) -> SessionAudit {
        let totals = Arc::<Totals>::default();
        totals.send(
            &self.log,
            self.id,
            Event::SessionStart(Box::new(self.start)),
        );
        SessionAudit {
            log: self.log,
            id: self.id,
            started: Instant::now(),
            totals,
        }
    }
}

/// A started session's audit.
#[derive(Debug)]
pub struct SessionAudit {
    log: Arc<AuditLog>,
    id: ClientId,
    started: Instant,
    totals: Arc<Totals>,
}

impl SessionAudit {
    /// The tap for the session's client stream; `pending` are client bytes read before it
    /// (they are audited now).
    pub fn tap(&self, pending: &[u8]) -> Box<Tap> {
        let mut tap = Box::new(Tap::new(self.log.clone(), self.id, self.totals.clone()));
        if !pending.is_empty() {
            tap.client_sent(pending);
        }
        tap
    }

    /// The session ended (`ended_by`: who ended it): `session_end` is written.
    pub fn end(self, ended_by: &'static str) {
        let total = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let end = SessionEnd {
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_from_client: total(&self.totals.from_client),
            bytes_to_client: total(&self.totals.to_client),
            transactions: total(&self.totals.transactions),
            ended_by,
            dropped: total(&self.totals.dropped),
        };
        self.totals.send(&self.log, self.id, Event::SessionEnd(end));
    }
}

/// Who authentication proved the client to be: a token's `sub`, a client certificate's CN
/// (`cert` routes), else the user name established (the startup `user`, unless a hook
/// mapped it).
fn identity(auth: AuthMode, proof: &Proof, state: &ConnectionState) -> Option<String> {
    match proof {
        Proof::Token(claims) => claims.get("sub").cloned(),
        _ if auth == AuthMode::Cert => state.tls.as_ref()?.client_common_name(),
        _ => state
            .authenticated_user
            .clone()
            .or_else(|| state.client.as_ref().map(|c| c.user().to_owned())),
    }
}

/// A DER certificate's subject, RFC 4514 style.
fn certificate_subject(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(certificate.subject().to_string())
}
