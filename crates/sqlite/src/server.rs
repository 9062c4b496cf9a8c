//! The embedded server's accept loop: [`LocalTrust`] authentication, one [`SqliteSession`](crate::SqliteSession) per
//! client, each with a cancel key of its own that a CancelRequest can use.
//!
//! This is its own loop rather than the gateway's `serve_listener_with` because the embedded
//! server needs what that one drops: CancelRequest connections, and the BackendKeyData it sends
//! (the key must be registered against the session it cancels).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pgbastion_gateway::{
    ClientConn, ClientIo, Flow, GatewayConfig, GatewayError, HookError, HookResult, Hooks, Outcome,
};
use pgbastion_wire::{CancelKey, ProtocolVersion, SqlState, TransactionStatus};
use tokio::net::{TcpListener, TcpStream};

use crate::cancel::{self, CancelRegistry};
use crate::{server_version, SqliteBackend, SqliteError};

/// The embedded backend's client policy: trust, for loopback clients only.
#[derive(Debug, Default)]
pub struct LocalTrust;

impl LocalTrust {
    /// Whether `addr` is a local client. A dual-stack listener (`[::]:6432`) sees local IPv4
    /// clients as `::ffff:127.0.0.1`, which is loopback too.
    pub fn is_local(addr: SocketAddr) -> bool {
        addr.ip().to_canonical().is_loopback()
    }
}

impl Hooks for LocalTrust {
    type Data = ();

    fn on_startup<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        _data: &mut (),
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        let local = Self::is_local(conn.state().client_addr);
        async move {
            if local {
                Ok(Flow::Continue)
            } else {
                Err(HookError::new(
                    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                    "the embedded database trusts local clients only (127.0.0.1 or ::1); \
                     configure the proxy (--config) to serve other hosts",
                ))
            }
        }
    }
}

/// [`LocalTrust`], leaving the end of startup (ParameterStatus, BackendKeyData,
/// ReadyForQuery) to the server, which mints the cancel key.
struct Embedded;

impl Hooks for Embedded {
    type Data = ();

    fn on_startup<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        data: &mut (),
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        LocalTrust.on_startup(conn, data)
    }

    fn after_auth<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        _data: &mut (),
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        let _ = conn;
        async { Ok(Flow::Handled) }
    }
}

/// Serves `backend` to clients of `listener`: [`LocalTrust`] authentication, one
/// [`SqliteSession`](crate::SqliteSession) per client, CancelRequests for their running statements. Runs until the
/// future is dropped; a failed accept (out of file descriptors) never ends it (the gateway's
/// [`Acceptor`](pgbastion_gateway::Acceptor) backs off and logs once per burst).
pub async fn serve_listener(
    listener: TcpListener,
    backend: Arc<SqliteBackend>,
    config: Arc<GatewayConfig>,
) {
    let config = Arc::new(GatewayConfig {
        server_version: server_version(),
        ..(*config).clone()
    });
    let registry = Arc::new(CancelRegistry::default());
    let mut acceptor = pgbastion_gateway::Acceptor::new(listener);
    loop {
        let (stream, peer) = acceptor.accept().await;
        let (backend, config, registry) = (backend.clone(), config.clone(), registry.clone());
        tokio::spawn(async move {
            serve_connection(stream, peer, &backend, &config, &registry).await;
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    backend: &SqliteBackend,
    config: &GatewayConfig,
    registry: &Arc<CancelRegistry>,
) {
    // Small answers (ReadyForQuery) must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    match pgbastion_gateway::accept(stream, peer, config, &Embedded).await {
        Ok(Outcome::Authenticated { conn, .. }) => {
            serve_client(conn, backend, config, registry).await
        }
        Ok(Outcome::Cancel {
            request, mut conn, ..
        }) => {
            // Whether it matched is nobody's business: PostgreSQL answers neither way, and
            // closes only once the statement has been signalled.
            cancel::cancel(registry, &request);
            conn.close_gracefully().await;
        }
        // Failures were reported to the client by `accept`; nothing else can happen with
        // these hooks.
        Ok(Outcome::Handled { .. } | Outcome::Detached { .. } | Outcome::Closed) | Err(_) => {}
    }
}

async fn serve_client<S: ClientIo>(
    mut conn: ClientConn<S>,
    backend: &SqliteBackend,
    config: &GatewayConfig,
    registry: &Arc<CancelRegistry>,
) {
    let mut session = match backend.session(conn.state()) {
        Ok(session) => session,
        Err(error) => {
            let error = GatewayError::Hook(session_error(&error));
            pgbastion_gateway::report(&mut conn, &error).await;
            return;
        }
    };
    let version = conn
        .state()
        .client
        .as_ref()
        .map_or(ProtocolVersion::V3_0, |client| client.version);
    let registration = registry.register(None, version, session.interrupter());
    if finish_startup(&mut conn, config, registration.key().clone())
        .await
        .is_err()
    {
        return;
    }
    let _ = pgbastion_gateway::serve_session(conn, config, &mut session).await;
}

/// What the client is told when its session cannot start.
fn session_error(error: &SqliteError) -> HookError {
    match error {
        SqliteError::InvalidSetting(invalid) => {
            HookError::new(SqlState::INVALID_PARAMETER_VALUE, invalid.to_string())
        }
        SqliteError::Sqlite(_) => HookError::new(
            SqlState::CANNOT_CONNECT_NOW,
            format!("cannot open the database: {error}"),
        ),
    }
}

/// Sends the end of startup: ParameterStatus, the session's BackendKeyData, ReadyForQuery.
async fn finish_startup<S: ClientIo>(
    conn: &mut ClientConn<S>,
    config: &GatewayConfig,
    key: CancelKey,
) -> Result<(), GatewayError> {
    conn.send_parameter_status("server_version", &config.server_version)?;
    for (name, value) in &config.parameter_status {
        conn.send_parameter_status(name, value)?;
    }
    conn.send_backend_key_data(key.process_id, key.secret_key)?;
    conn.send_ready_for_query(TransactionStatus::Idle)?;
    conn.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_in_every_spelling_is_local_and_nothing_else_is() {
        let local = [
            "127.0.0.1:1",
            "127.9.9.9:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ];
        let remote = ["10.0.0.1:1", "[::ffff:10.0.0.1]:1", "[fd00::2]:1", "[::]:1"];
        for addr in local {
            assert!(
                LocalTrust::is_local(addr.parse().unwrap_or_else(|_| panic!("{addr}"))),
                "{addr}"
            );
        }
        for addr in remote {
            assert!(
                !LocalTrust::is_local(addr.parse().unwrap_or_else(|_| panic!("{addr}"))),
                "{addr}"
            );
        }
    }
}
