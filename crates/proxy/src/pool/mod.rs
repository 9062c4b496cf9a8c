//! A generic, async, fair connection pool: the machinery behind pooled routes.
//!
//! A [`Pool`] hands out [`Lease`]s on connections that a [`Manager`] opens, resets and checks.
//! It knows nothing of PostgreSQL; `crate::backend_reset` has the backend operations a
//! manager of backend connections needs.
//!
//! - **Fair**: a checkout takes an idle connection (the most recently used one) or opens a
//!   new one while fewer than [`PoolSettings::size`] are open; otherwise it waits in line
//!   (first in, first out per worker thread, and never overtaken by a checkout that arrived
//!   more than 2 ms later on another: see `slots`) for at most [`PoolSettings::checkout_timeout`], then fails
//!   with [`PoolError::Timeout`].
//! - **RAII**: a lease comes back through [`Lease::release`] (clean: transaction mode at
//!   ReadyForQuery `I`) or [`Lease::reset_and_release`] (session mode: the manager's reset
//!   first; a failed reset closes it). A dropped lease closes its connection: that is what
//!   happens to a client that leaves inside a transaction, in COPY or in an unknown state.
//! - **Lifecycle**: a maintenance task per pool (stopped when the last [`Pool`] handle is
//!   dropped) keeps [`PoolSettings::min_idle`] connections open without clients, retires
//!   idle ones past their jittered [`PoolSettings::max_lifetime`] and closes those idle past
//!   [`PoolSettings::idle_timeout`]. After a connection fails
//!   ([`Lease::discard_after_error`], a failed connect) idle connections are checked before
//!   they are handed out, and so are long-idle ones.
//! - **Caps**: connections also hold permits of backend-wide [`Caps`] shared across pools.
//! - **Local first**: sessions run on thread-per-core workers ([`crate::workers`]), and a
//!   connection's socket wakes the worker it is registered with. A checkout takes an idle
//!   connection of its own worker when there is one (the most recently used of them), else
//!   any, whose socket then moves to the checkout's worker ([`Manager::rehome`]); a slot freed
//!   on a worker goes to that worker's first waiter unless another worker's has waited
//!   [`slots`]' slack longer. So in the steady state a worker's clients take turns on its
//!   own connections and no exchange crosses threads, while `size`, the waiting line and
//!   `min_idle` stay the whole pool's.
//!
//! Every open connection holds a slot: a checkout holds one from its first wait to the end of
//! its lease (a reset included), so a connection can never be handed out twice or before its
//! reset has finished, and at most `size` are ever open.

mod caps;
mod lease;
mod maintenance;
mod settings;
mod slots;
mod stats;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub use caps::{CapKey, Caps, PoolCaps};
pub use lease::Lease;
pub use settings::PoolSettings;
pub use stats::PoolStats;

use caps::CapPermits;
use slots::Slots;
use stats::{Counters, OpenCount};

/// Opens, resets, checks and closes the connections of one pool. Each future must end on
/// its own in bounded time (the backend manager puts a timeout on every wait): the pool adds
/// none around them.
pub trait Manager: Send + Sync + 'static {
    /// A connection.
    type Conn: Send + 'static;
    /// Why a connect or a reset failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a new connection.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;

    /// Makes a connection fit for another client (session mode, before it goes back idle).
    /// An error closes the connection.
    fn reset(&self, conn: &mut Self::Conn) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether an idle connection still works (asked before a suspect one is handed out).
    fn check(&self, conn: &mut Self::Conn) -> impl Future<Output = bool> + Send;

    /// Moves an idle connection's socket to the calling thread's runtime (a checkout on
    /// another worker than the one it was last used on), so that its readiness wakes that
    /// thread; `false` closes it. Connections that are not sockets need nothing.
    fn rehome(&self, conn: &mut Self::Conn) -> bool {
        let _ = conn;
        true
    }

    /// Closes an idle connection politely (e.g. with a Terminate message). Leases dropped
    /// mid-use are closed by dropping the connection instead: it may be mid-message.
    fn close(&self, conn: Self::Conn) -> impl Future<Output = ()> + Send {
        async move { drop(conn) }
    }
}

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E: std::error::Error + 'static> {
    /// No slot (or no backend-wide cap) came free within the checkout timeout. Clients get
    /// SQLSTATE 53300 `too_many_connections`.
    #[error("no backend connection became free within {waited:?}")]
    Timeout {
        /// How long the checkout waited.
        waited: Duration,
    },
    /// A new connection was needed and could not be opened; its slot went to the next waiter.
    #[error("could not open a backend connection: {0}")]
    Connect(#[source] E),
}

/// A pool of connections from one [`Manager`]. Cheap to clone: clones share the pool, and the
/// last one dropped stops its maintenance task and closes its idle connections (leased ones
/// close when their lease ends). Create it inside a tokio runtime.
pub struct Pool<M: Manager> {
    shared: Arc<Shared<M>>,
    _maintenance: Arc<maintenance::Handle<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _maintenance: self._maintenance.clone(),
        }
    }
}

impl<M: Manager> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("settings", &self.shared.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<M: Manager> Pool<M> {
    /// A pool of `manager`'s connections, counting against `caps`, and its maintenance task
    /// (which opens the `min_idle` connections at once). Settings out of range are brought
    /// into it (size at least 1, min_idle at most size).
    pub fn new(manager: M, settings: PoolSettings, caps: PoolCaps) -> Self {
        let settings = settings.clamped();
        let shared = Arc::new(Shared {
            slots: Slots::new(settings.size),
            manager,
            settings,
            caps,
            state: Mutex::new(State::default()),
            counters: Arc::new(Counters::default()),
        });
        let maintenance = maintenance::Handle::start(shared.clone());
        Self {
            shared,
            _maintenance: Arc::new(maintenance),
        }
    }

    /// The manager.
    pub fn manager(&self) -> &M {
        &self.shared.manager
    }

    /// The settings in force.
    pub fn settings(&self) -> &PoolSettings {
        &self.shared.settings
    }

    /// A connection: an idle one (checked first when suspect), else a new one while the pool
    /// has room, else the first that comes free, in arrival order.
    pub async fn checkout(&self) -> Result<Lease<M>, PoolError<M::Error>> {
        let deadline = Instant::now() + self.shared.settings.checkout_timeout;
        self.checkout_until(deadline).await
    }

    /// [`Pool::checkout`], waiting at most until `deadline` (a caller that has already
    /// waited for something else gives what is left of its `checkout_timeout`).
    pub async fn checkout_until(&self, deadline: Instant) -> Result<Lease<M>, PoolError<M::Error>> {
        let shared = &self.shared;
        let started = Instant::now();
        let timed_out = || {
            shared.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            PoolError::Timeout {
                waited: started.elapsed(),
            }
        };
        let waiting = &shared.counters.waiting;
        let permit = shared
            .slots
            .acquire_until(deadline, waiting)
            .await
            .ok_or_else(timed_out)?;
        let pooled = match shared.take_idle().await {
            Some(pooled) => pooled,
            None => {
                let caps = shared
                    .caps
                    .acquire(deadline, waiting)
                    .await
                    .ok_or_else(timed_out)?;
                shared.connect(caps).await.map_err(PoolError::Connect)?
            }
        };
        shared.counters.checked_out(started.elapsed());
        Ok(Lease::new(shared.clone(), pooled, permit))
    }

    /// A snapshot of the pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats()
    }

    /// Closes the pool (shutdown): its idle connections are closed politely now, and those
    /// given back later are closed instead of kept.
    pub async fn close(&self) {
        for pooled in self.shared.close_pool() {
            self.shared.close(pooled).await;
        }
    }

    /// Retires the pool (a reload replaced it): its idle connections are closed now and it
    /// no longer keeps `min_idle` open, while the sessions that hold it go on using it; its
    /// other connections close when the last of them lets it go.
    pub async fn retire(&self) {
        let idle = {
            let mut state = self.shared.state();
            state.retired = true;
            std::mem::take(&mut state.idle)
        };
        for idle in idle {
            self.shared.close(idle.pooled).await;
        }
    }

    /// Reads the pool's counters while the pool exists, without keeping it alive (for the
    /// metrics, read at scrape time).
    pub fn stats_reader(&self) -> impl Fn() -> Option<PoolStats> + Send + Sync + 'static {
        let shared = Arc::downgrade(&self.shared);
        move || shared.upgrade().map(|shared| shared.stats())
    }
}

/// What the pool handles, its leases and its maintenance task share.
struct Shared<M: Manager> {
    manager: M,
    settings: PoolSettings,
    /// One per connection that may be open: held by each checkout (and lease) and by the
    /// maintenance task while it opens one; idle connections hold none.
    slots: Arc<Slots>,
    caps: PoolCaps,
    state: Mutex<State<M>>,
    counters: Arc<Counters>,
}

/// The idle connections, and what decides whether they are suspect.
struct State<M: Manager> {
    /// Oldest idle first: a checkout takes the last (most recently used), the maintenance
    /// task closes from the front.
    idle: Vec<Idle<M>>,
    /// When a connection last failed (connect or use).
    last_error: Option<Instant>,
    /// Set when the last pool handle is gone: released connections are closed.
    closed: bool,
    /// Set when a reload replaced the pool: it keeps serving its holders, without `min_idle`.
    retired: bool,
}

impl<M: Manager> Default for State<M> {
    fn default() -> Self {
        Self {
            idle: Vec::new(),
            last_error: None,
            closed: false,
            retired: false,
        }
    }
}

/// An open connection with what the pool keeps with it for its whole life. Always boxed:
/// a lease is then a few pointers, and a client's session future that holds one (or the
/// room for one) stays small.
struct Pooled<M: Manager> {
    conn: M::Conn,
    /// The worker whose runtime its socket is registered with (whose thread its readiness
    /// wakes): the one that opened it or last checked it out; 0 off the workers.
    home: usize,
    /// When it is due to retire (its jittered max_lifetime).
    retire_at: Option<Instant>,
    _open: OpenCount,
    _caps: CapPermits,
}

/// An idle connection and since when.
struct Idle<M: Manager> {
    pooled: Box<Pooled<M>>,
    since: Instant,
}

impl<M: Manager> Shared<M> {
    fn state(&self) -> MutexGuard<'_, State<M>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> PoolStats {
        let idle = self.state().idle.len();
        self.counters.snapshot(self.settings.size, idle)
    }

    /// Opens a connection that holds `caps`.
    async fn connect(&self, caps: CapPermits) -> Result<Box<Pooled<M>>, M::Error> {
        let open = OpenCount::new(&self.counters);
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        match Box::pin(self.manager.connect()).await {
            Ok(conn) => Ok(Box::new(Pooled {
                conn,
                home: crate::workers::index(),
                retire_at: self.settings.draw_lifetime().map(|l| Instant::now() + l),
                _open: open,
                _caps: caps,
            })),
            Err(error) => {
                self.counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.note_error();
                Err(error)
            }
        }
    }

    /// The most recently used idle connection, of the calling worker's own if it has one,
    /// that is not due to retire and, if suspect, passes its check, moved to the calling
    /// worker; retired and failed ones are closed on the way.
    async fn take_idle(self: &Arc<Self>) -> Option<Box<Pooled<M>>> {
        let home = crate::workers::index();
        loop {
            let now = Instant::now();
            let (idle, suspect) = {
                let mut state = self.state();
                let last = state.idle.len().checked_sub(1)?;
                let at = state
                    .idle
                    .iter()
                    .rposition(|idle| idle.pooled.home == home)
                    .unwrap_or(last);
                let idle = state.idle.remove(at);
                let suspect = now.duration_since(idle.since) >= self.settings.health_check_after
                    || state.last_error.is_some_and(|error| error >= idle.since);
                (idle, suspect)
            };
            let mut pooled = idle.pooled;
            if pooled.retire_at.is_some_and(|at| at <= now) {
                self.close_in_background(pooled);
                continue;
            }
            if pooled.home != home {
                if !self.manager.rehome(&mut pooled.conn) {
                    continue;
                }
                pooled.home = home;
            }
            if !suspect || Box::pin(self.manager.check(&mut pooled.conn)).await {
                return Some(pooled);
            }
            tracing::debug!("pool: an idle connection failed its check; closed");
        }
    }

    /// Puts a connection back as idle (or closes it when the pool is gone).
    fn return_idle(&self, pooled: Box<Pooled<M>>) {
        let mut state = self.state();
        if state.closed {
            return;
        }
        state.idle.push(Idle {
            pooled,
            since: Instant::now(),
        });
    }

    /// Marks the pool closed and takes out its idle connections, to be closed.
    fn close_pool(&self) -> Vec<Box<Pooled<M>>> {
        let mut state = self.state();
        state.closed = true;
        std::mem::take(&mut state.idle)
            .into_iter()
            .map(|idle| idle.pooled)
            .collect()
    }

    /// Marks idle connections suspect: a connection just failed.
    fn note_error(&self) {
        self.state().last_error = Some(Instant::now());
    }

    /// Closes an idle connection politely; its slot counts as open until that is done.
    async fn close(&self, pooled: Box<Pooled<M>>) {
        let Pooled {
            conn, _open, _caps, ..
        } = *pooled;
        self.manager.close(conn).await;
    }

    fn close_in_background(self: &Arc<Self>, pooled: Box<Pooled<M>>) {
        let shared = self.clone();
        tokio::spawn(async move { shared.close(pooled).await });
    }
}
