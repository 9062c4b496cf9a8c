//! What authenticating one client establishes, passed on by move: [`ProxyConn`] while the
//! gateway runs the [`ProxyHooks`](crate::hooks::ProxyHooks), [`Admitted`] once it has.

use std::collections::BTreeMap;

use pgbastion_gateway::ScramKeys;

use crate::backend::{BackendConn, BackendSecret};
use crate::external::Decision;
use crate::limits::Permit;
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

impl Proof {
    /// The secret this proof gives the backend login: the client's own password
    /// (passthrough) or the authenticator's `_META_TARGET_CRED`.
    pub fn forward_secret(&self) -> Option<BackendSecret> {
        match self {
            Self::Password(password) => Some(BackendSecret::Password(password.clone())),
            Self::External(decision) => decision.credential.clone().map(BackendSecret::Password),
            Self::Local | Self::Token(_) | Self::ScramKeys(_) | Self::Passthrough(_) => None,
        }
    }
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

    fn decision(credential: Option<&str>) -> Decision {
        Decision {
            parameters: Vec::new(),
            host: None,
            credential: credential.map(str::to_owned),
        }
    }

    fn forwarded(proof: &Proof) -> Option<String> {
        match proof.forward_secret() {
            Some(BackendSecret::Password(password)) => Some(password),
            Some(BackendSecret::ScramKeys { .. }) => Some("<keys>".to_owned()),
            None => None,
        }
    }

    #[test]
    fn only_a_passthrough_password_or_an_authenticator_credential_is_forwarded() {
        let keys = ScramKeys {
            client_key: [1; 32],
            server_key: [2; 32],
        };
        let cases = [
            (Proof::Local, None),
            (Proof::Password("client".into()), Some("client")),
            (Proof::Token(BTreeMap::new()), None),
            (Proof::External(decision(Some("decided"))), Some("decided")),
            (Proof::External(decision(None)), None),
            (Proof::ScramKeys(keys), None),
        ];
        for (proof, expected) in cases {
            assert_eq!(forwarded(&proof).as_deref(), expected);
        }
    }

    #[test]
    fn a_connection_without_a_route_or_permit_is_not_admitted() {
        let conn = ProxyConn::default();
        assert!(matches!(conn.chosen(), Err(Refusal::Internal(_))));
        assert!(matches!(conn.admitted(), Err(Refusal::Internal(_))));
    }
}
