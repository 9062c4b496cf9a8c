//! Per-listener settings for the gateway.

use std::time::Duration;

use crate::proxy_protocol::{ProxyProtocolMode, TrustedProxies};
use crate::tls::TlsConfig;

/// How a listener treats its clients before a hook gets a say.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// TLS termination; `None` answers SSLRequest with `N` and refuses direct TLS.
    pub tls: Option<TlsConfig>,
    /// Refuse clients that do not upgrade to TLS (FATAL 28000 at startup).
    pub require_tls: bool,
    /// PROXY protocol policy.
    pub proxy_protocol: ProxyProtocolMode,
    /// Peers allowed to send a PROXY header.
    pub trusted_proxies: TrustedProxies,
    /// Time the client has from connect to the StartupMessage: PROXY header, TLS handshake
    /// and the packet itself (default 10 s). Well-behaved clients send it at once; a socket
    /// that stays silent holds a file descriptor (and, in a proxy, a connection slot) only
    /// this long instead of the whole `auth_timeout`.
    pub startup_timeout: Duration,
    /// Time the client has from connect to the end of authentication, as PostgreSQL's
    /// `authentication_timeout` (default 60 s). It bounds the whole handshake, the startup
    /// phase included.
    pub auth_timeout: Duration,
    /// The `server_version` reported after authentication.
    pub server_version: String,
    /// ParameterStatus values sent after authentication, besides `server_version`.
    pub parameter_status: Vec<(String, String)>,
    /// The largest message accepted from an authenticated client (PostgreSQL: 1 GiB - 1).
    pub max_message_len: usize,
    /// Iterations for SCRAM secrets the gateway derives from plaintext passwords.
    pub scram_iterations: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            tls: None,
            require_tls: false,
            proxy_protocol: ProxyProtocolMode::Off,
            trusted_proxies: TrustedProxies::default(),
            startup_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(60),
            server_version: "16.0 (pgbastion)".to_owned(),
            parameter_status: default_parameter_status(),
            max_message_len: pgbastion_wire::limits::PQ_LARGE_MESSAGE_LIMIT,
            scram_iterations: 4096,
        }
    }
}

/// The ParameterStatus set libpq and drivers expect after authentication.
pub fn default_parameter_status() -> Vec<(String, String)> {
    [
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("IntervalStyle", "postgres"),
        ("is_superuser", "off"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
