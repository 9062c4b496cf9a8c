//! What the gateway knows about a connection, readable from every hook (what the hooks
//! themselves keep is their [`Hooks::Data`](crate::Hooks::Data)).

use std::net::SocketAddr;

use pgbastion_wire::ProtocolVersion;

use crate::proxy_protocol::ProxyInfo;
use crate::tls::TlsInfo;

/// Where a connection is in its lifecycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepted; PROXY header and TLS (if any) being handled.
    #[default]
    Connected,
    /// A StartupMessage arrived; authentication under way.
    Started,
    /// Authentication succeeded.
    Authenticated,
}

/// What the client sent in its StartupMessage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The protocol version the client asked for.
    pub requested_version: ProtocolVersion,
    /// The version in use: the requested one, or the newest we speak if the client asked for
    /// a newer 3.x minor version.
    pub version: ProtocolVersion,
    /// Every startup parameter, in the client's order (`user`, `database`, `options`,
    /// `application_name`, `_pq_.*` protocol options, ...).
    pub parameters: Vec<(String, String)>,
}

impl ClientInfo {
    /// A startup parameter by name.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The `user` parameter (always present: startup without one is refused).
    pub fn user(&self) -> &str {
        self.parameter("user").unwrap_or_default()
    }

    /// The `database` parameter, defaulting to the user name as PostgreSQL does.
    pub fn database(&self) -> &str {
        self.parameter("database")
            .filter(|db| !db.is_empty())
            .unwrap_or_else(|| self.user())
    }
}

/// Everything learned about a connection so far.
#[derive(Clone, Debug)]
pub struct ConnectionState {
    /// The TCP peer (a load balancer, when a PROXY header was accepted).
    pub peer_addr: SocketAddr,
    /// The real client: the PROXY header's source when one was accepted, else `peer_addr`.
    pub client_addr: SocketAddr,
    /// The PROXY header, when one was accepted.
    pub proxy: Option<ProxyInfo>,
    /// TLS details, once the upgrade completed.
    pub tls: Option<TlsInfo>,
    /// The startup message, once it arrived.
    pub client: Option<ClientInfo>,
    /// The lifecycle phase.
    pub phase: Phase,
    /// The user name that authentication established (may differ from the startup `user`
    /// when a hook maps identities).
    pub authenticated_user: Option<String>,
}

impl ConnectionState {
    /// A fresh state for a connection from `peer_addr`.
    pub fn new(peer_addr: SocketAddr) -> Self {
        Self {
            peer_addr,
            client_addr: peer_addr,
            proxy: None,
            tls: None,
            client: None,
            phase: Phase::Connected,
            authenticated_user: None,
        }
    }

    /// Whether a StartupMessage arrived.
    pub fn has_started(&self) -> bool {
        self.phase >= Phase::Started
    }

    /// Whether authentication succeeded.
    pub fn is_authenticated(&self) -> bool {
        self.phase == Phase::Authenticated
    }

    /// The SNI name the client sent over TLS.
    pub fn server_name(&self) -> Option<&str> {
        self.tls.as_ref()?.server_name.as_deref()
    }
}
