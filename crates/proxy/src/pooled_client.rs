//! An authenticated client of a pooled route on a pooled listener: its pool, its greeting
//! (the pool's parameters with the client's own, a cancel key minted by pgbastion), then
//! the pooled session.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures_util::future::Map;
use futures_util::FutureExt;
use pgbastion_gateway::ClientConn;
use pgbastion_wire::{ErrorResponse, ProtocolVersion, TransactionStatus};
use tokio::net::TcpStream;

use crate::audit::{Audited, Opening};
use crate::cancel::{CancelRegistry, CancelSlot, CancelTarget};
use crate::clients::Registered;
use crate::config::{PoolMode, SessionStatePolicy};
use crate::drain::stopper::Stopper;
use crate::drain::{DrainWatch, Phase};
use crate::greeting;
use crate::limits::Permit;
use crate::login_plan::LoginPlan;
use crate::metrics::{ClientGuard, Metered, RefusalReason, SessionMeter};
use crate::multiplex::{Multiplexer, Policy};
use crate::pooled_session::{Lender, Pooled, PooledSession, Switch};
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
    /// What the session holds until it ends: its line in the list of clients and its slot
    /// under the listener's limits (dropped in that order, as a transparent session's are:
    /// a client admitted in its place is never listed beside it).
    pub held: (Registered, Permit),
}

/// A pooled client's session, greeted and running: what a pooled client is for most of its
/// life.
pub type Serving<'a> = Map<Run<'a>, Box<dyn FnOnce(Pooled) + Send + 'a>>;

/// The running session itself.
type Run<'a> = Pin<Box<dyn Future<Output = Pooled> + Send + 'a>>;

impl<'a> PooledClient<'a> {
    /// Greets the client of `route`, which pools as `pool` says, and returns its session,
    /// which writes the session's last log line when it ends; `None` when the client was
    /// refused or went away.
    ///
    /// Two steps, so that the session (which may last hours) keeps nothing of this one: the
    /// client's handshake, its route and plan, the checkout of session mode.
    pub async fn open(
        mut self,
        mut conn: ClientConn<TcpStream>,
        (route, pool): (&Route, &route::RoutePool),
        started: Instant,
    ) -> Option<Serving<'a>> {
        let route_pool = self
            .pools
            .get(
                route,
                &self.plan,
                &pool.settings,
                pool.reset.as_deref().unwrap_or(""),
                pool.statements_per_backend,
            )
            .for_client(&self.identity.database);
        let transaction = pool.mode == PoolMode::Transaction;
        // Session mode: the client's backend, from the start.
        let held = if transaction {
            None
        } else {
            match self.unless_drained(route_pool.checkout()).await {
                Some(Ok(lease)) => Some(lease),
                Some(Err(error)) => return self.refuse(conn, error.into_fatal()).await,
                None => return shut_out(conn).await,
            }
        };
        let greeting = match &held {
            Some(lease) => Some(Ok(lease.conn.parameters.clone())),
            None => self.unless_drained(route_pool.greeting()).await,
        };
        let greeting = match greeting {
            Some(Ok(greeting)) => greeting,
            Some(Err(error)) => return self.refuse(conn, error.into_fatal()).await,
            None => return shut_out(conn).await,
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
        greeted.await.ok()?;
        let detached = conn.detach().ok()?;
        // Only the stream and the unread bytes go on: the rest of the handshake's state, and
        // the handshake's read buffer (16 KiB, of which `buffered` is a view), go now rather
        // than live as long as an idle client does.
        let stream = detached.stream;
        let client_in = BytesMut::from(&detached.buffered[..]);
        drop((detached.buffered, detached.state));
        let policy = Policy {
            transaction,
            statements_per_client: pool.statements_per_client,
            cache_unnamed: pool.cache_unnamed,
            refuse_session_state: pool.session_state == SessionStatePolicy::Refuse,
            max_message_len: self.max_message_len,
        };
        wanted.retain(|(name, _)| !READ_ONLY.iter().any(|r| r.eq_ignore_ascii_case(name)));
        let mux = Multiplexer::new(policy, wanted);
        self.guard.session_started();
        let Self {
            identity,
            plan,
            switch,
            drain,
            meter,
            audit,
            held: kept,
            ..
        } = self;
        let backend = plan.address;
        tracing::info!(
            client = %identity.address, user = %identity.user,
            database = %identity.database, route = route.number,
            pool = if transaction { "transaction" } else { "session" },
            backend = %backend, "session started"
        );
        let switch = switch.map(|switch| {
            let identity = identity.clone();
            Box::new(move |pid: u32| switch.group(&identity, pid)) as Switch<'a>
        });
        let session = PooledSession {
            lender: route_pool,
            mux,
            slot,
            switch,
            held,
            proven: false,
            drain: Stopper::new(Some(drain)),
        };
        let audit = audit.map(Opening::start);
        let tap = audit.as_ref().map(|audit| audit.tap(&client_in));
        let client = tokio::io::split(Metered::new(Audited::new(stream, tap), meter));
        let route = route.number;
        let end = move |pooled: Pooled| {
            drop(registration);
            if let Some(audit) = audit {
                audit.end(pooled.end.as_str());
            }
            tracing::info!(
                client = %identity.address, user = %identity.user,
                database = %identity.database, route,
                duration_ms = started.elapsed().as_millis() as u64,
                checkouts = pooled.checkouts, ended_by = pooled.end.as_str(),
                backend = %backend, "session ended"
            );
            drop(kept);
        };
        let run: Run<'a> = Box::pin(session.run(client, client_in));
        Some(run.map(Box::new(end)))
    }

    /// `wait`'s outcome, or `None` when pgbastion starts shutting down (or the client is
    /// killed from the console) first: a client not greeted yet has run nothing and holds
    /// nothing, so it does not wait for a backend (up to the pool's `checkout_timeout`) only
    /// to be told to go.
    async fn unless_drained<T>(&mut self, wait: impl Future<Output = T>) -> Option<T> {
        let drain = &mut self.drain;
        let drained = async {
            while drain.phase() == Phase::Serving {
                drain.changed().await;
            }
        };
        tokio::select! {
            biased;
            outcome = wait => Some(outcome),
            () = drained => None,
        }
    }

    /// Refuses the client: no backend for it.
    async fn refuse<T>(&self, conn: ClientConn<TcpStream>, error: ErrorResponse) -> Option<T> {
        self.guard.metrics().refused(RefusalReason::Backend);
        tracing::warn!(error = %error.message(), "no backend for a pooled client");
        greeting::refuse(conn, error).await;
        None
    }
}

/// Ends a client not greeted yet because pgbastion shuts down, in PostgreSQL's own words.
async fn shut_out<T>(conn: ClientConn<TcpStream>) -> Option<T> {
    greeting::refuse(conn, crate::relay::shutdown_error()).await;
    None
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
