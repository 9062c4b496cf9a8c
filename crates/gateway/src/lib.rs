//! The server side of the PostgreSQL protocol, as a library: accept a connection, handle the
//! PROXY header, TLS (SSLRequest or PostgreSQL 17 direct TLS with ALPN), the startup packet
//! and every client authentication mode, calling your [`Hooks`] at each step.
//!
//! See `docs/gateway.md` for the hook order and one example per authentication mode.

pub mod acceptor;
mod auth;
pub mod cancel_keys;
pub mod config;
pub mod conn;
mod driver;
pub mod error;
mod handshake;
pub mod hooks;
pub mod proxy_protocol;
pub mod session;
pub mod state;
pub mod stream;
pub mod tls;

pub use acceptor::Acceptor;
pub use cancel_keys::CancelKeys;
pub use config::GatewayConfig;
pub use conn::{ClientConn, ClientIo, Detached};
pub use driver::{
    accept, report, serve, serve_listener, serve_listener_with, serve_session, Outcome,
};
pub use error::GatewayError;
pub use hooks::{AuthMethod, Credential, Flow, HookError, HookResult, Hooks, ScramKeys};
pub use session::{HookMessages, Session};
pub use state::{ClientInfo, ConnectionState, Phase};
pub use tls::{TlsConfig, TlsInfo};
