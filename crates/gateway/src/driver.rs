//! The connection driver: runs the lifecycle for one client, calling the hooks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pgbastion_wire::{
    BackendMessage, CancelKey, ErrorResponse, FrontendTag, Severity, SqlState, TransactionStatus,
};
use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::acceptor::Acceptor;
use crate::auth;
use crate::config::GatewayConfig;
use crate::conn::{ClientConn, ClientIo, Detached};
use crate::error::GatewayError;
use crate::handshake::{self, Startup};
use crate::hooks::{Flow, HookError, HookResult, Hooks};
use crate::session::{HookMessages, Session};
use crate::state::{ConnectionState, Phase};

/// How [`accept`] ended. `D` is the hooks' [`Data`](Hooks::Data) for the connection, handed
/// back with it wherever there is a connection to hand back.
#[derive(Debug)]
pub enum Outcome<S, D> {
    /// The client is authenticated and got ReadyForQuery (unless `after_auth` handled that);
    /// drive the session yourself or pass it to [`serve`].
    Authenticated {
        /// The connection.
        conn: ClientConn<S>,
        /// What the hooks kept for it.
        data: D,
    },
    /// `on_startup` returned [`Flow::Handled`]: the connection is yours from the startup
    /// message on.
    Handled {
        /// The connection.
        conn: ClientConn<S>,
        /// What the hooks kept for it.
        data: D,
    },
    /// A hook asked to detach: the raw stream and unread bytes.
    Detached {
        /// The stream, the bytes read but not consumed, and the state.
        raw: Detached<S>,
        /// What the hooks kept for it.
        data: D,
    },
    /// The connection carried a CancelRequest (nothing else can follow on it). Forward the
    /// request, then close `conn` with [`ClientConn::close_gracefully`]: PostgreSQL closes
    /// a cancel connection only after it has signalled the backend, drivers wait for that
    /// close before their next statement, and over TLS the close must carry close_notify.
    Cancel {
        /// The request.
        request: CancelKey,
        /// The connection it came on (its state says who sent it).
        conn: ClientConn<S>,
        /// What the hooks kept for it (`on_connect` ran, and may have refused it).
        data: D,
    },
    /// The client went away before sending anything that needed an answer.
    Closed,
}

/// Runs PROXY header → TLS → startup → authentication for one client. On failure the
/// client has been sent a FATAL ErrorResponse (when it could be) and the error is returned
/// for logging.
pub async fn accept<S: ClientIo, H: Hooks>(
    io: S,
    peer: SocketAddr,
    config: &GatewayConfig,
    hooks: &H,
) -> Result<Outcome<S, H::Data>, GatewayError> {
    let mut conn = ClientConn::new(io, ConnectionState::new(peer));
    let mut data = H::Data::default();
    let connected = Instant::now();
    let startup_timeout = config.startup_timeout.min(config.auth_timeout);
    conn.set_deadline(Some(connected + startup_timeout));
    match run_handshake(&mut conn, &mut data, config, hooks, connected).await {
        Ok(Step::Proceed) => {
            conn.set_deadline(None);
            Ok(Outcome::Authenticated { conn, data })
        }
        Ok(Step::Handled) => {
            conn.set_deadline(None);
            Ok(Outcome::Handled { conn, data })
        }
        Ok(Step::Detach) => Ok(Outcome::Detached {
            raw: conn.detach()?,
            data,
        }),
        Ok(Step::Cancel(request)) => Ok(Outcome::Cancel {
            request,
            conn,
            data,
        }),
        Ok(Step::Closed) => Ok(Outcome::Closed),
        Err(error) => {
            report(&mut conn, &error).await;
            Err(error)
        }
    }
}

/// Sends the client the error `error` maps to, if any, ignoring write failures (the client
/// may be gone; the original error is what matters).
pub async fn report<S: ClientIo>(conn: &mut ClientConn<S>, error: &GatewayError) {
    if let Some(response) = error.client_error() {
        if conn.send_error(response).is_ok() && conn.flush().await.is_ok() {
            conn.close_gracefully().await;
        }
    }
}

enum Step {
    Proceed,
    Handled,
    Detach,
    Cancel(CancelKey),
    Closed,
}

/// How long a refused connection may take to send its startup packet and read the refusal.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

async fn run_handshake<S: ClientIo, H: Hooks>(
    conn: &mut ClientConn<S>,
    data: &mut H::Data,
    config: &GatewayConfig,
    hooks: &H,
    connected: Instant,
) -> Result<Step, GatewayError> {
    handshake::read_proxy_header(conn, config).await?;
    if let Err(refusal) = hooks.on_connect(conn.state(), data).await {
        return refuse(conn, data, config, hooks, refusal).await;
    }
    match handshake::read_startup(conn, config, hooks, data).await? {
        Startup::Started => {}
        Startup::Cancel(request) => return Ok(Step::Cancel(request)),
        Startup::Closed => return Ok(Step::Closed),
        Startup::Detach => return Ok(Step::Detach),
    }
    conn.set_deadline(Some(connected + config.auth_timeout));
    match hooks.on_startup(conn, data).await? {
        Flow::Continue => {}
        Flow::Handled => return Ok(Step::Handled),
        Flow::Detach => return Ok(Step::Detach),
    }
    let method = hooks.auth_method(conn.state(), data).await?;
    auth::authenticate(conn, data, config, hooks, &method).await?;
    conn.send(&BackendMessage::Authentication(
        pgbastion_wire::Authentication::Ok,
    ))?;
    conn.state_mut().phase = Phase::Authenticated;
    match hooks.after_auth(conn, data).await? {
        Flow::Continue => send_ready(conn, config)?,
        Flow::Handled => {}
        Flow::Detach => return Ok(Step::Detach),
    }
    conn.flush().await?;
    Ok(Step::Proceed)
}

/// A connection `on_connect` refused. Like PostgreSQL with too many clients, the startup
/// packet is still read, briefly, so the client learns why as a FATAL rather than from a
/// reset; a cancel request is still served. The grace is short and fixed so that refused
/// sockets cannot pile up: a silent one is sent the refusal and closed after it.
async fn refuse<S: ClientIo, H: Hooks>(
    conn: &mut ClientConn<S>,
    data: &mut H::Data,
    config: &GatewayConfig,
    hooks: &H,
    refusal: HookError,
) -> Result<Step, GatewayError> {
    let grace = Instant::now() + REFUSAL_GRACE;
    conn.set_deadline(Some(conn.deadline().map_or(grace, |d| d.min(grace))));
    match handshake::read_startup(conn, config, hooks, data).await {
        Ok(Startup::Cancel(request)) => Ok(Step::Cancel(request)),
        Ok(Startup::Closed) => Ok(Step::Closed),
        // A StartupMessage, nothing in time, or garbage: the answer is the refusal.
        Ok(Startup::Started | Startup::Detach) | Err(_) => Err(GatewayError::Hook(refusal)),
    }
}

/// Queues the standard end of startup: ParameterStatus, BackendKeyData, ReadyForQuery.
fn send_ready<S: ClientIo>(
    conn: &mut ClientConn<S>,
    config: &GatewayConfig,
) -> Result<(), GatewayError> {
    conn.send_parameter_status("server_version", &config.server_version)?;
    for (name, value) in &config.parameter_status {
        conn.send_parameter_status(name, value)?;
    }
    let key_len = if conn.state().client.as_ref().map(|c| c.version.minor) >= Some(2) {
        32
    } else {
        4
    };
    let mut key = vec![0u8; key_len];
    let mut rng = rand::thread_rng();
    rng.fill_bytes(&mut key);
    conn.send_backend_key_data(rng.next_u32() & 0x7fff_ffff, Bytes::from(key))?;
    conn.send_ready_for_query(TransactionStatus::Idle)
}

/// Pending output that is flushed even while more client messages are buffered.
const FLUSH_THRESHOLD: usize = 64 * 1024;

/// Accepts clients from `listener` forever (accept errors such as running out of file
/// descriptors are waited out, see [`Acceptor`]), running [`accept`] then [`serve`] for each
/// on its own task. Connections that end in another [`Outcome`] (a cancel request, a
/// detach, a hook that handled startup) are closed: servers that need those drive
/// [`accept`] themselves.
pub async fn serve_listener<H: Hooks + 'static>(
    listener: TcpListener,
    config: Arc<GatewayConfig>,
    hooks: Arc<H>,
) {
    serve_listener_with(listener, config, hooks.clone(), move |_, data| {
        Ok(HookMessages {
            hooks: hooks.clone(),
            data,
        })
    })
    .await;
}

/// Like [`serve_listener`], with a session per connection: `new_session` is called once a
/// client is authenticated, with its state and what the hooks kept for it, and the
/// [`Session`] it returns handles that client's messages. An error from it is sent to the
/// client as a FATAL and ends the connection.
pub async fn serve_listener_with<H, T, F>(
    listener: TcpListener,
    config: Arc<GatewayConfig>,
    hooks: Arc<H>,
    new_session: F,
) where
    H: Hooks + 'static,
    T: Session<TcpStream> + 'static,
    F: Fn(&ConnectionState, H::Data) -> HookResult<T> + Send + Sync + 'static,
{
    let new_session = Arc::new(new_session);
    let mut acceptor = Acceptor::new(listener);
    loop {
        let (stream, peer) = acceptor.accept().await;
        let (config, hooks, new_session) = (config.clone(), hooks.clone(), new_session.clone());
        tokio::spawn(async move {
            let Ok(Outcome::Authenticated { mut conn, data }) =
                accept(stream, peer, &config, &*hooks).await
            else {
                return;
            };
            match new_session(conn.state(), data) {
                Ok(mut session) => {
                    let _ = serve_session(conn, &config, &mut session).await;
                }
                Err(error) => {
                    report(&mut conn, &GatewayError::Hook(error)).await;
                }
            }
        });
    }
}

/// Drives an authenticated session with the hooks: every client message goes to
/// [`Hooks::on_message`] with `data`, what the hooks kept for the connection. See
/// [`serve_session`].
pub async fn serve<S: ClientIo, H: Hooks>(
    conn: ClientConn<S>,
    data: H::Data,
    config: &GatewayConfig,
    hooks: &H,
) -> Result<(), GatewayError> {
    serve_session(conn, config, &mut HookMessages { hooks, data }).await
}

/// Drives an authenticated session: every client message goes to [`Session::on_message`];
/// messages it did not handle get a `0A000` error (and ReadyForQuery after Query or Sync) so
/// clients never hang. Returns when the client sends Terminate or goes away.
pub async fn serve_session<S: ClientIo, T: Session<S>>(
    mut conn: ClientConn<S>,
    config: &GatewayConfig,
    session: &mut T,
) -> Result<(), GatewayError> {
    loop {
        let frame = match conn.read_frame(config.max_message_len).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(error) => {
                report(&mut conn, &error).await;
                return Err(error);
            }
        };
        let tag = FrontendTag::from_byte(frame.tag);
        if tag == Some(FrontendTag::Terminate) {
            return Ok(());
        }
        match session.on_message(&mut conn, frame).await {
            Ok(Flow::Handled) => {}
            Ok(Flow::Continue) => answer_unhandled(&mut conn, tag)?,
            Ok(Flow::Detach) => return Ok(()),
            Err(error) => {
                let error = GatewayError::Hook(error);
                report(&mut conn, &error).await;
                return Err(error);
            }
        }
        // Answers to pipelined messages go out together: flush when nothing more is buffered
        // from the client, or when enough output is pending.
        if conn.buffered().is_empty() || conn.pending_output() >= FLUSH_THRESHOLD {
            conn.flush().await?;
        }
    }
}

fn answer_unhandled<S: ClientIo>(
    conn: &mut ClientConn<S>,
    tag: Option<FrontendTag>,
) -> Result<(), GatewayError> {
    if matches!(tag, Some(FrontendTag::Query | FrontendTag::Sync)) {
        conn.send_error(ErrorResponse::new(
            Severity::Error,
            SqlState::FEATURE_NOT_SUPPORTED,
            "this server does not handle that message",
        ))?;
        conn.send_ready_for_query(TransactionStatus::Idle)?;
    }
    Ok(())
}
