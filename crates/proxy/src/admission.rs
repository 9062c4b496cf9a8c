//! What authenticating one client establishes, passed on by move: [`ProxyConn`] while the
//! gateway runs the [`ProxyHooks`](crate::hooks::ProxyHooks), [`Admitted`] once it has.

use std::collections::BTreeMap;

use pgbastion_gateway::ScramKeys;

use crate::backend::BackendConn;
use crate::external::Decision;
use crate::limits::Permit;
use crate::metrics::AuthAttempt;
use crate::refusal::Refusal;
use crate::route::{Captures, Route};

/// The route a connection matched, and its captures.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The route.
    pub route: Route,
    /// Regex captures for the backend URL.
    pub captures: Captures,
}

/// What proved the client's identity, as the backend login needs it.
#[derive(Default)]
pub enum Proof {
    /// Nothing to pass on: trust, a client certificate or a local user's password.
    #[default]
    Local,
    /// The client's password, for the backend to check (passthrough, while its backend
    /// connection is being opened).
    Password(String),
    /// A verified token's claims (string values).
    Token(BTreeMap<String, String>),
    /// The external authenticator's decision.
    External(Decision),
    /// The keys recovered from the client's SCRAM proof.
    ScramKeys(ScramKeys),
    /// The backend connection that accepted the client's password (passthrough).
    Passthrough(BackendConn),
}

/// What the proxy's hooks keep for one connection while the gateway authenticates it: each
/// hook fills in what it decides, for the next ones and for the session.
#[derive(Default)]
pub struct ProxyConn {
    /// The connection's slot under the listener's limits (`on_connect`).
    pub permit: Option<Permit>,
    /// The route chosen at startup (chosen again once a token's claims are known).
    pub chosen: Option<Chosen>,
    /// What proved the client's identity (the credential checks).
    pub proof: Proof,
    /// The authentication attempt in the metrics (from the route's choice): a failure
    /// unless the session marks it a success.
    pub attempt: Option<AuthAttempt>,
    /// The client asked for the admin console and may use it (it has no route).
    pub console: bool,
}

impl ProxyConn {
    /// The route chosen at startup. Every hook after `on_startup` has one: its absence is
    /// a bug, refused as an internal error.
    pub fn chosen(&self) -> Result<&Chosen, Refusal> {
        self.chosen.as_ref().ok_or_else(not_admitted)
    }

    /// The connection as the session needs it, once the gateway has authenticated it.
    pub fn admitted(self) -> Result<Admitted, Refusal> {
        match (self.permit, self.chosen) {
            (Some(permit), Some(chosen)) => Ok(Admitted {
                chosen,
                permit,
                proof: self.proof,
            }),
            _ => Err(not_admitted()),
        }
    }
}

fn not_admitted() -> Refusal {
    Refusal::Internal("no route was chosen for this connection")
}

/// An authenticated connection: what admission decided and what proved the identity.
pub struct Admitted {
    /// The route and its captures.
    pub chosen: Chosen,
    /// The connection's slot under the listener's limits, released when the session ends.
    pub permit: Permit,
    /// What proved the client's identity.
    pub proof: Proof,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_without_a_route_or_permit_is_not_admitted() {
        let conn = ProxyConn::default();
        assert!(matches!(conn.chosen(), Err(Refusal::Internal(_))));
        assert!(matches!(conn.admitted(), Err(Refusal::Internal(_))));
    }
}
