//! An authenticated client of a pooled route on a pooled listener: its pool, its greeting
//! (the pool's parameters with the client's own, a cancel key minted by pgbastion), then
//! the pooled session.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use pgbastion_gateway::ClientConn;
use pgbastion_wire::{ErrorResponse, ProtocolVersion, TransactionStatus};
use tokio::net::TcpStream;

use crate::audit::{Audited, Opening};
use crate::cancel::{CancelRegistry, CancelSlot, CancelTarget};
use crate::config::{PoolMode, SessionStatePolicy};
use crate::drain::stopper::Stopper;
use crate::drain::DrainWatch;
use crate::greeting;
use crate::login_plan::LoginPlan;
use crate::metrics::{ClientGuard, Metered, RefusalReason, SessionMeter};
use crate::multiplex::{Multiplexer, Policy};
use crate::pooled_session::{Lender, PooledSession};
use crate::pools::Pools;
use crate::route::{self, Route};
use crate::session_switch::{ClientIdentity, SessionSwitch};

/// What a pooled client needs besides its connection.
pub struct PooledClient<'a> {
    /// Every pool.
    pub pools: &'a Pools,
    /// Minted cancel keys.
    pub cancel: &'a Arc<CancelRegistry>,
    /// The listener's session switch.
    pub switch: Option<&'a SessionSwitch>,
    /// The client's route and its pool settings.
    pub route: &'a Route,
    /// How the route pools.
    pub pool: &'a route::RoutePool,
    /// The client's login plan (its pool key and session parameters come from it).
    pub plan: LoginPlan,
    /// Who the client is, for the session switch.
    pub identity: ClientIdentity,
    /// The client's protocol version (the cancel key's length depends on it).
    pub version: ProtocolVersion,
    /// The longest client message accepted.
    pub max_message_len: usize,
    /// pgbastion's shutdown signal.
    pub drain: DrainWatch,
    /// What is counted on the client's stream.
    pub meter: SessionMeter,
    /// The client in the connection gauges.
    pub guard: &'a mut ClientGuard,
    /// The session's audit, when `[audit]` is on.
    pub audit: Option<Opening>,
}

impl<'a> PooledClient<'a> {
    /// Serves the client to the end; the session's log lines are written here. An `async`
    /// block, not an `async fn`, for the reason given at [`PooledSession::run`].
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub fn serve(
        mut self,
        mut conn: ClientConn<TcpStream>,
        started: Instant,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            let route_pool = self
                .pools
                .get(
                    self.route,
                    &self.plan,
                    &self.pool.settings,
                    self.pool.reset.as_deref().unwrap_or(""),
                    self.pool.statements_per_backend,
                )
                .for_client(&self.identity.database);
            let transaction = self.pool.mode == PoolMode::Transaction;
            // Session mode: the client's backend, from the start.
            let held = if transaction {
                None
            } else {
                match route_pool.checkout().await {
                    Ok(lease) => Some(lease),
                    Err(error) => return self.refuse(conn, error.into_fatal()).await,
                }
            };
            let greeting = match &held {
                Some(lease) => Ok(lease.conn.parameters.clone()),
                None => route_pool.greeting().await,
            };
            let greeting = match greeting {
                Ok(greeting) => greeting,
                Err(error) => return self.refuse(conn, error.into_fatal()).await,
            };
            let (_, session_parameters) = self.plan.pool_identity();
            let mut wanted = greeting;
            for (name, value) in session_parameters {
                match wanted
                    .iter_mut()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                {
                    Some(entry) => entry.1 = value,
                    None => wanted.push((name, value)),
                }
            }
            let slot = Arc::new(CancelSlot::default());
            let registration =
                self.cancel
                    .register(None, self.version, CancelTarget::Pooled(slot.clone()));
            let greeted = greeting::greet(
                &mut conn,
                &[],
                &wanted,
                Some(registration.key()),
                TransactionStatus::Idle,
            );
            if greeted.await.is_err() {
                return;
            }
            let Ok(detached) = conn.detach() else {
                return;
            };
            // Only the stream and the unread bytes go on: the rest of the handshake's state, and
            // the handshake's read buffer (16 KiB, of which `buffered` is a view), go now rather
            // than live as long as an idle client does.
            let stream = detached.stream;
            let client_in = BytesMut::from(&detached.buffered[..]);
            drop((detached.buffered, detached.state));
            let policy = Policy {
                transaction,
                statements_per_client: self.pool.statements_per_client,
                refuse_session_state: self.pool.session_state == SessionStatePolicy::Refuse,
                max_message_len: self.max_message_len,
            };
            wanted.retain(|(name, _)| !READ_ONLY.iter().any(|r| r.eq_ignore_ascii_case(name)));
            let mux = Multiplexer::new(policy, wanted);
            self.guard.session_started();
            tracing::info!(
                client = %self.identity.address, user = %self.identity.user,
                database = %self.identity.database, route = self.route.number,
                pool = if transaction { "transaction" } else { "session" },
                backend = %self.plan.address, "session started"
            );
            let identity = self.identity.clone();
            let switch_group = self
                .switch
                .map(|switch| move |pid: u32| switch.group(&identity, pid));
            let session = PooledSession {
                lender: &route_pool,
                mux,
                slot: &slot,
                switch: switch_group
                    .as_ref()
                    .map(|f| f as &(dyn Fn(u32) -> bytes::Bytes + Send + Sync)),
                held,
                proven: false,
                drain: Stopper::new(Some(self.drain.clone())),
            };
            let audit = self.audit.take().map(Opening::start);
            let tap = audit.as_ref().map(|audit| audit.tap(&client_in));
            let pooled = session
                .run(
                    Metered::new(Audited::new(stream, tap), self.meter),
                    client_in,
                )
                .await;
            drop(registration);
            if let Some(audit) = audit {
                audit.end(pooled.end.as_str());
            }
            tracing::info!(
                client = %self.identity.address, user = %self.identity.user,
                database = %self.identity.database, route = self.route.number,
                duration_ms = started.elapsed().as_millis() as u64,
                checkouts = pooled.checkouts, ended_by = pooled.end.as_str(),
                backend = %self.plan.address, "session ended"
            );
        }
    }

    /// Refuses the client: no backend for it.
    async fn refuse(&self, conn: ClientConn<TcpStream>, error: ErrorResponse) {
        self.guard.metrics().refused(RefusalReason::Backend);
        tracing::warn!(error = %error.message(), "no backend for a pooled client");
        greeting::refuse(conn, error).await;
    }
}

/// Parameters the backend reports but no one can set: they are the same on every backend
/// of a pool and are never set at checkout.
const READ_ONLY: [&str; 6] = [
    "server_version",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "session_authorization",
    "in_hot_standby",
];
