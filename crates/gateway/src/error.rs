//! Why a client connection ended, and the one place that decides what the client is told.

use std::io;

use pgbastion_wire::{
    DecodeError, EncodeError, ErrorResponse, ProtocolVersion, Severity, SqlState,
};

use crate::hooks::HookError;
use crate::proxy_protocol::ProxyHeaderError;

/// Why the gateway gave up on a client connection.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Reading from or writing to the client failed.
    #[error("client I/O: {0}")]
    Io(#[from] io::Error),
    /// The client closed the connection in the middle of a message.
    #[error("client closed the connection mid-message")]
    UnexpectedEof,
    /// The stream was already given up (a failed TLS upgrade).
    #[error("client stream already closed")]
    Closed,
    /// The client did not finish authenticating within `auth_timeout`.
    #[error("authentication timed out")]
    Timeout,
    /// The client sent bytes that are not a valid protocol message.
    #[error("invalid message from client: {0}")]
    Decode(#[from] DecodeError),
    /// A message could not be encoded (a hook passed a string with a NUL byte, say).
    #[error("could not encode a message: {0}")]
    Encode(#[from] EncodeError),
    /// The PROXY header was missing, malformed or untrusted.
    #[error(transparent)]
    ProxyHeader(#[from] ProxyHeaderError),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(io::Error),
    /// A direct TLS connection arrived on a listener without TLS.
    #[error("direct TLS connection on a listener without TLS")]
    DirectTlsNotConfigured,
    /// A direct TLS client did not negotiate ALPN `postgresql`.
    #[error("direct TLS connection without ALPN \"postgresql\"")]
    DirectTlsWithoutAlpn,
    /// An SSLRequest arrived over an already encrypted connection.
    #[error("SSLRequest over an already encrypted connection")]
    SslRequestOverTls,
    /// Bytes followed the SSLRequest before the TLS handshake (CVE-2021-23214 class).
    #[error("received unencrypted data after SSL request")]
    DataAfterSslRequest,
    /// The client asked for a protocol version we cannot speak.
    #[error("unsupported frontend protocol {}.{}", .0.major, .0.minor)]
    UnsupportedProtocol(ProtocolVersion),
    /// The StartupMessage had no user.
    #[error("no user name in the startup packet")]
    MissingUser,
    /// The listener requires TLS and the client did not upgrade.
    #[error("TLS required")]
    TlsRequired,
    /// The client sent a message that does not belong in this phase.
    #[error("expected {expected}, got message type {tag:?}")]
    UnexpectedMessage {
        /// What the gateway was waiting for.
        expected: &'static str,
        /// The tag that arrived.
        tag: char,
    },
    /// The credential was wrong (28P01).
    #[error("password authentication failed for user {user:?}")]
    InvalidPassword {
        /// The startup user.
        user: String,
    },
    /// Authentication was refused for another reason (28000).
    #[error("{method} authentication failed for user {user:?}: {reason}")]
    AuthFailed {
        /// Which mode refused (`certificate`, `OAuth bearer`, ...).
        method: &'static str,
        /// The startup user.
        user: String,
        /// Why, safe to show the client.
        reason: String,
    },
    /// The SASL exchange was malformed.
    #[error("SASL exchange failed: {0}")]
    Sasl(String),
    /// A hook refused the connection.
    #[error("hook refused the connection: {0}")]
    Hook(#[from] HookError),
}

impl GatewayError {
    /// The FATAL error the client is sent, or `None` when nothing can or should be sent
    /// (the client is gone, or TLS failed and there is no channel to talk on).
    pub fn client_error(&self) -> Option<ErrorResponse> {
        let (code, message) = match self {
            Self::Io(_) | Self::UnexpectedEof | Self::Closed | Self::TlsHandshake(_) => {
                return None
            }
            Self::DirectTlsNotConfigured => return None,
            Self::Timeout => (
                SqlState::QUERY_CANCELED,
                "canceling authentication due to timeout".to_owned(),
            ),
            Self::Decode(e) => (SqlState::PROTOCOL_VIOLATION, format!("invalid message: {e}")),
            Self::Encode(_) => (SqlState::INTERNAL_ERROR, "internal error".to_owned()),
            Self::ProxyHeader(e) => (proxy_header_code(e), e.to_string()),
            Self::DirectTlsWithoutAlpn => (
                SqlState::PROTOCOL_VIOLATION,
                "received direct SSL connection request without ALPN protocol negotiation extension"
                    .to_owned(),
            ),
            Self::SslRequestOverTls | Self::DataAfterSslRequest => {
                (SqlState::PROTOCOL_VIOLATION, self.to_string())
            }
            Self::UnsupportedProtocol(v) => (
                SqlState::FEATURE_NOT_SUPPORTED,
                format!(
                    "unsupported frontend protocol {}.{}: server supports 3.0 to 3.2",
                    v.major, v.minor
                ),
            ),
            Self::MissingUser => (
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "no PostgreSQL user name specified in startup packet".to_owned(),
            ),
            Self::TlsRequired => (
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "this server requires TLS: connect with sslmode=require".to_owned(),
            ),
            Self::UnexpectedMessage { .. } | Self::Sasl(_) => {
                (SqlState::PROTOCOL_VIOLATION, self.to_string())
            }
            Self::InvalidPassword { user } => (
                SqlState::INVALID_PASSWORD,
                format!("password authentication failed for user \"{user}\""),
            ),
            Self::AuthFailed {
                method,
                user,
                reason,
            } => (
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                format!("{method} authentication failed for user \"{user}\": {reason}"),
            ),
            Self::Hook(e) => return Some(e.client_response()),
        };
        Some(ErrorResponse::new(Severity::Fatal, code, message))
    }
}

fn proxy_header_code(error: &ProxyHeaderError) -> SqlState {
    match error {
        ProxyHeaderError::Untrusted(_) => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        ProxyHeaderError::Malformed(_)
        | ProxyHeaderError::TooLong
        | ProxyHeaderError::Missing
        | ProxyHeaderError::NotAccepted => SqlState::PROTOCOL_VIOLATION,
    }
}
