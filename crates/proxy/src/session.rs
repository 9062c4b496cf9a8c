//! One client connection from accept to close: the gateway handshake with [`ProxyHooks`], the
//! backend login with the mapped user, database and parameters, the minted cancel key, the
//! relay, and one log line when it ends.

use std::future::Future;
use std::mem::Discriminant;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use pgbastion_gateway::{ClientConn, ConnectionState, GatewayConfig, GatewayError, Outcome};
use pgbastion_wire::{CancelKey, ProtocolVersion};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::admin;
use crate::admission::{Admitted, Proof, ProxyConn};
use crate::audit::{Audited, Opening};
use crate::backend::BackendError;
use crate::cancel::CancelTarget;
use crate::clients::{BackendOf, ClientId, ClientInfo, Registered};
use crate::config::ListenerMode;
use crate::drain::Drain;
use crate::greeting;
use crate::hooks::ProxyHooks;
use crate::limits::{ConnectionLimiter, RateLimiter};
use crate::login;
use crate::login_plan::LoginPlan;
use crate::metrics::{CancelResult, ClientGuard, ListenerMetrics, Metered, RefusalReason};
use crate::pooled_client::PooledClient;
use crate::refusal::Refusal;
use crate::relay;
use crate::session_switch::{ClientIdentity, SessionSwitch};
use crate::settings::Listener;
use crate::shared::Shared;
use crate::warn_limit::WarnLimiter;

/// One listener's view: its handshake policy, its limits and its hooks.
pub struct ListenerContext {
    /// The listener's address.
    pub address: SocketAddr,
    /// TLS, PROXY header and timeouts.
    pub gateway: Arc<GatewayConfig>,
    /// The hooks (routing, authentication).
    pub hooks: ProxyHooks,
    /// Cancel requests per client address.
    pub cancel_rate: RateLimiter,
    /// Whether routes with a pool are served through it here.
    pub pooled: bool,
    /// The session switch of a pooled listener.
    pub switch: Option<Arc<SessionSwitch>>,
    /// Refusals and failed backend logins, logged at most once per interval per kind.
    pub warnings: WarnLimiter<SessionWarning>,
    /// The process's shutdown signal.
    pub drain: Drain,
    /// The listener's metric handles.
    pub metrics: Arc<ListenerMetrics>,
}

/// Lines of a listener's sessions that can come in floods (one per attempt of a scanner, or
/// of every client while a backend is down).
#[derive(Debug, PartialEq, Eq, Hash)]
pub enum SessionWarning {
    /// A connection refused during the handshake, by client address and reason.
    Refused(IpAddr, Discriminant<GatewayError>),
    /// A failed backend login, by route and reason.
    BackendLogin(usize, Discriminant<BackendError>),
}

impl SessionWarning {
    fn backend_login(route: usize, error: &BackendError) -> Self {
        Self::BackendLogin(route, std::mem::discriminant(error))
    }
}

impl ListenerContext {
    /// A context for `listener`.
    pub fn new(
        shared: Arc<Shared>,
        listener: &Listener,
        limiter: Arc<ConnectionLimiter>,
        drain: Drain,
    ) -> Self {
        let metrics = shared
            .lasting
            .metrics
            .listener(&listener.address.to_string());
        Self {
            metrics,
            address: listener.address,
            gateway: listener.gateway.clone(),
            hooks: ProxyHooks { shared, limiter },
            cancel_rate: RateLimiter::new(listener.limits.cancel_rate_per_ip),
            pooled: listener.mode == ListenerMode::Pooled,
            switch: listener.session_switch.clone(),
            warnings: WarnLimiter::default(),
            drain,
        }
    }
}

/// How long a forwarded cancel request may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one accepted client, inside a `conn` span named by the connection's
/// [`ClientId`](crate::clients::ClientId) that gains the client's address (the
/// real one behind a PROXY header), server name, user, database and route as they become
/// known, so every log line of the connection carries them.
pub async fn serve_client(stream: TcpStream, peer: SocketAddr, ctx: Arc<ListenerContext>) {
    let id = ctx.hooks.shared.lasting.client_ids.next();
    let span = tracing::info_span!(
        "conn",
        %id,
        %peer,
        client = tracing::field::Empty,
        sni = tracing::field::Empty,
        user = tracing::field::Empty,
        database = tracing::field::Empty,
        route = tracing::field::Empty,
    );
    serve_in_span(stream, peer, ctx, id).instrument(span).await;
}

async fn serve_in_span(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerContext>,
    id: ClientId,
) {
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let _open = ctx.drain.enter();
    let mut guard = ctx.metrics.accepted();
    // What follows the handshake is decided in a block of its own, as boxed steps: the
    // handshake's outcome and the admission are gone before they run, and a session's task
    // keeps only a pointer and the few values above (a future keeps every local live across
    // an await, sized for the largest).
    let mut next = {
        // A connection still in its handshake when the drain starts is simply closed.
        let accepted = tokio::select! {
            accepted = Box::pin(pgbastion_gateway::accept(stream, peer, &ctx.gateway, &ctx.hooks)) => accepted,
            () = ctx.drain.started() => return,
        };
        after_handshake(accepted, &ctx, (id, started, peer), &mut guard)
    };
    while let Some(step) = next {
        next = step.0.await;
    }
}

/// A step of a connection's life, boxed. A step may name the one after it: its own future is
/// gone before the next one runs, so a long step (a pooled session) carries nothing of the
/// short ones before it (a future keeps its arguments for as long as it runs).
struct Step<'a>(Pin<Box<dyn Future<Output = Option<Step<'a>>> + Send + 'a>>);

impl<'a> Step<'a> {
    /// A step after which there is nothing more.
    fn last(work: impl Future<Output = ()> + Send + 'a) -> Self {
        Self(Box::pin(work.map(|()| None)))
    }

    /// A step that may name the next.
    fn then(work: impl Future<Output = Option<Step<'a>>> + Send + 'a) -> Self {
        Self(Box::pin(work))
    }
}

/// What a connection does once its handshake ended: its session, the admin console, a
/// refusal, or a cancel request forwarded (`None`: nothing more).
fn after_handshake<'a>(
    accepted: Result<Outcome<TcpStream, ProxyConn>, GatewayError>,
    ctx: &'a ListenerContext,
    (id, started, peer): (ClientId, Instant, SocketAddr),
    guard: &'a mut ClientGuard,
) -> Option<Step<'a>> {
    match accepted {
        Ok(Outcome::Authenticated { conn, mut data }) => {
            if let Some(attempt) = data.attempt.take() {
                attempt.succeeded();
            }
            if data.console {
                if let Err(refusal) = ctx.hooks.admit_console(conn.state()) {
                    return Some(Step::last(greeting::refuse(conn, refusal.response())));
                }
                guard.session_started();
                return Some(Step::last(admin::console::serve(conn, ctx, id)));
            }
            Some(match data.admitted() {
                Ok(admitted) if ctx.pooled && admitted.chosen.route.pool.is_some() => {
                    Step::then(serve_pooled(conn, admitted, ctx, (id, started), guard))
                }
                Ok(admitted) => Step::last(run_session(conn, admitted, ctx, id, started, guard)),
                Err(refusal) => Step::last(greeting::refuse(conn, refusal.response())),
            })
        }
        Ok(Outcome::Cancel {
            request,
            mut conn,
            data: held,
        }) => Some(Step::last(async move {
            forward_cancel(ctx, &request, conn.state()).await;
            // Only now may the client see its cancel connection close: drivers take that
            // close to mean the backend has been signalled, and run their next statement.
            // Until then it holds its slot under the listener's limits (`held`).
            conn.close_gracefully().await;
            drop(held);
        })),
        Ok(Outcome::Handled { .. } | Outcome::Detached { .. } | Outcome::Closed) => None,
        Err(error) => {
            ctx.metrics.handshake_failed(&error);
            let kind = SessionWarning::Refused(peer.ip(), std::mem::discriminant(&error));
            if let Some(suppressed) = ctx.warnings.admit(kind) {
                tracing::info!(peer = %peer, %error, suppressed, "connection refused");
            }
            None
        }
    }
}

/// Sends a client's cancel request on to the backend it names, if the key is one we minted,
/// and waits until the backend has closed its side (it has then signalled the backend).
async fn forward_cancel(ctx: &ListenerContext, request: &CancelKey, state: &ConnectionState) {
    let ip = state.client_addr.ip();
    let metrics = ctx.metrics.metrics();
    if !ctx.cancel_rate.allow(ip) {
        metrics.cancel(CancelResult::Ignored);
        tracing::debug!(client = %state.client_addr, "cancel request over the rate limit ignored");
        return;
    }
    let Some(target) = ctx.hooks.shared.lasting.cancel.lookup(request) else {
        metrics.cancel(CancelResult::Ignored);
        tracing::debug!(client = %state.client_addr, "cancel request with an unknown key ignored");
        return;
    };
    match target.forward(CANCEL_TIMEOUT).await {
        Ok(true) => metrics.cancel(CancelResult::Forwarded),
        // A pooled client whose query had already finished.
        Ok(false) => metrics.cancel(CancelResult::Ignored),
        Err(error) => {
            metrics.cancel(CancelResult::Failed);
            tracing::warn!(%error, "could not forward a cancel request");
        }
    }
}

/// Sends the client `refusal` as a FATAL and closes the connection.
async fn refuse(conn: ClientConn<TcpStream>, refusal: Refusal) {
    greeting::refuse(conn, refusal.response()).await;
}

/// An established transparent session (an `async` block, not an `async fn`, and its
/// arguments taken apart in the signature: an `async fn` keeps a second copy of its arguments
/// for as long as it runs, and an idle session is mostly this future).
#[allow(clippy::manual_async_fn)] // on purpose: see run_session
fn run_session<'a>(
    mut conn: ClientConn<TcpStream>,
    Admitted {
        chosen,
        permit,
        proof,
    }: Admitted,
    ctx: &'a ListenerContext,
    id: ClientId,
    started: Instant,
    guard: &'a mut ClientGuard,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        let shared = &ctx.hooks.shared;
        // Named here, so the future owns it: the permit is held until the session ends.
        let _permit = &permit;
        // Made once: the audit, the registry and the backend login all read it.
        let plan = login::plan(conn.state(), &chosen, &proof);
        let audit = shared.lasting.audit.as_ref();
        let facts = (conn.state(), &chosen, &proof);
        let audit = Opening::new(audit, id, facts, plan.as_ref().ok(), false);
        let backend_of = transparent_backend(conn.state(), plan.as_ref().ok());
        let backend = match (proof, plan) {
            (Proof::Passthrough(backend), _) => Ok(backend),
            (_, Ok(plan)) => Box::pin(shared.lasting.connector.connect(&plan)).await,
            (_, Err(error)) => Err(error),
        };
        let state = conn.state().clone();
        let route = chosen.route.number;
        let auth = chosen.route.auth.name();
        let (user, database) = state
            .client
            .as_ref()
            .map(|c| (c.user().to_owned(), c.database().to_owned()))
            .unwrap_or_default();
        let mut backend = match backend {
            Ok(backend) => backend,
            Err(error) => {
                if let Some(suppressed) = ctx
                    .warnings
                    .admit(SessionWarning::backend_login(route, &error))
                {
                    tracing::warn!(client = %state.client_addr, %user, %database, route, %error, suppressed, "backend login failed");
                }
                shared.lasting.metrics.refused(RefusalReason::Backend);
                refuse(conn, Refusal::Backend(error)).await;
                return;
            }
        };
        let version = state
            .client
            .as_ref()
            .map_or(ProtocolVersion::V3_0, |client| client.version);
        let registration = backend.cancel_key().map(|target| {
            shared.lasting.cancel.register(
                Some(target.key.process_id),
                version,
                CancelTarget::Fixed(target),
            )
        });
        let key = registration.as_ref().map(|r| r.key());
        let greeted = greeting::greet(
            &mut conn,
            &backend.notices,
            &backend.parameters,
            key,
            backend.status,
        );
        if greeted.await.is_err() {
            return;
        }
        let Ok(detached) = conn.detach() else {
            return;
        };
        guard.session_started();
        tracing::info!(
            client = %state.client_addr, %user, %database, route, auth, backend = %backend.address,
            tls = state.tls.is_some(), "session started"
        );
        let audit = audit.map(Opening::start);
        let tap = audit.as_ref().map(|audit| audit.tap(&detached.buffered));
        let pending = std::mem::take(&mut backend.buffered).freeze();
        let backend_address = backend.address.clone();
        let registered = register(shared, &state, ctx, (id, route), backend_of);
        let stop = relay::Stop {
            watch: ctx.drain.watch_with(registered.kill()),
            cancel: backend.cancel_key(),
        };
        let meter = ctx
            .metrics
            .session_meter(route)
            .counting(registered.stats());
        let metered = Metered::new(Audited::new(detached.stream, tap), meter);
        let relayed = relay::relay(
            metered,
            detached.buffered,
            backend.stream,
            pending,
            Some(stop),
        )
        .await;
        drop(registration);
        if let Some(audit) = audit {
            audit.end(relayed.end.as_str());
        }
        tracing::info!(
            client = %state.client_addr, %user, %database, route, auth,
            duration_ms = started.elapsed().as_millis() as u64,
            bytes_from_client = relayed.client_bytes, bytes_to_client = relayed.backend_bytes,
            backend = %backend_address, tls = state.tls.is_some(), ended_by = relayed.end.as_str(),
            "session ended"
        );
    }
}

/// Where a transparent session of `state`'s client goes by its login `plan` (the client's
/// own names where none could be made: its backend login then fails anyway).
fn transparent_backend(state: &ConnectionState, plan: Option<&LoginPlan>) -> BackendOf {
    if let Some(plan) = plan {
        return BackendOf::planned(plan, false);
    }
    let client = state.client.as_ref();
    let (database, user) = client
        .map(|c| (c.database().to_owned(), c.user().to_owned()))
        .unwrap_or_default();
    BackendOf {
        database,
        user,
        pooled: false,
    }
}

/// Registers the session of `state`'s client (the admin console lists and ends it).
fn register(
    shared: &Shared,
    state: &ConnectionState,
    ctx: &ListenerContext,
    (id, route): (ClientId, usize),
    backend: BackendOf,
) -> Registered {
    let info = ClientInfo::of(state, ctx.address, id, Some(route), Some(backend));
    shared.lasting.clients.register(info)
}

/// A client of a pooled route on a pooled listener, up to its greeting: its session is the
/// step after this one.
async fn serve_pooled<'a>(
    conn: ClientConn<TcpStream>,
    Admitted {
        chosen,
        permit,
        proof,
    }: Admitted,
    ctx: &'a ListenerContext,
    (id, started): (ClientId, Instant),
    guard: &'a mut ClientGuard,
) -> Option<Step<'a>> {
    let shared = &ctx.hooks.shared;
    let pool = chosen.route.pool.as_ref()?;
    let state = conn.state().clone();
    let plan = match login::plan(&state, &chosen, &proof) {
        Ok(plan) => plan,
        Err(error) => {
            shared.lasting.metrics.refused(RefusalReason::Backend);
            let kind = SessionWarning::backend_login(chosen.route.number, &error);
            if let Some(suppressed) = ctx.warnings.admit(kind) {
                tracing::warn!(client = %state.client_addr, %error, suppressed, "backend login failed");
            }
            refuse(conn, Refusal::Backend(error)).await;
            return None;
        }
    };
    let client = state.client.as_ref();
    let parameter = |name: &str| client.and_then(|c| c.parameter(name)).unwrap_or_default();
    let backend = BackendOf::planned(&plan, true);
    let registered = register(shared, &state, ctx, (id, chosen.route.number), backend);
    let facts = (&state, &chosen, &proof);
    let audit = Opening::new(shared.lasting.audit.as_ref(), id, facts, Some(&plan), true);
    let meter = ctx.metrics.session_meter(chosen.route.number);
    let pooled = PooledClient {
        pools: &shared.lasting.pools,
        cancel: &shared.lasting.cancel,
        switch: ctx.switch.as_deref(),
        plan,
        identity: ClientIdentity {
            address: state.client_addr,
            user: parameter("user").to_owned(),
            database: client.map(|c| c.database().to_owned()).unwrap_or_default(),
            application_name: parameter("application_name").to_owned(),
        },
        version: client.map_or(ProtocolVersion::V3_0, |c| c.version),
        max_message_len: ctx.gateway.max_message_len,
        drain: ctx.drain.watch_with(registered.kill()),
        meter: meter.counting(registered.stats()),
        guard,
        audit,
        held: (registered, permit),
    };
    let serving = pooled.open(conn, (&chosen.route, pool), started).await?;
    Some(Step::last(serving))
}
