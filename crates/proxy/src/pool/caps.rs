//! Backend-wide connection caps shared by pools, like PgBouncer's `max_db_connections` and
//! `max_user_connections`: however many pools lead to one database (or log in as one user)
//! on one backend, together they open at most so many connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// What a cap counts connections of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CapKey {
    /// Connections to one database of one backend.
    Database {
        /// The backend's address, as the pool's key spells it.
        backend: String,
        /// The database.
        database: String,
    },
    /// Connections as one user to one backend.
    User {
        /// The backend's address.
        backend: String,
        /// The backend user.
        user: String,
    },
}

/// The registry of caps, one per proxy (the `[pools]` limits), handed to each pool at creation
/// through [`Caps::for_pool`]. A cap lives as long as a pool or a connection uses it.
#[derive(Debug)]
pub struct Caps {
    max_per_database: usize,
    max_per_user: usize,
    semaphores: Mutex<HashMap<CapKey, Weak<Semaphore>>>,
}

impl Caps {
    /// Caps of `max_db_connections` per (backend, database) and `max_user_connections` per
    /// (backend, user); 0 is no cap.
    pub fn new(max_db_connections: usize, max_user_connections: usize) -> Self {
        Self {
            max_per_database: max_db_connections,
            max_per_user: max_user_connections,
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    /// The caps of a pool of connections to `database` as `user` on `backend`.
    pub fn for_pool(&self, backend: &str, database: &str, user: &str) -> PoolCaps {
        let database = CapKey::Database {
            backend: backend.to_owned(),
            database: database.to_owned(),
        };
        let user = CapKey::User {
            backend: backend.to_owned(),
            user: user.to_owned(),
        };
        // Always the database cap before the user cap: every pool waits in the same order,
        // so no two checkouts can each hold the cap the other waits for.
        let semaphores = [(database, self.max_per_database), (user, self.max_per_user)]
            .into_iter()
            .filter(|(_, max)| *max > 0)
            .map(|(key, max)| self.semaphore(key, max))
            .collect();
        PoolCaps { semaphores }
    }

    fn semaphore(&self, key: CapKey, max: usize) -> Arc<Semaphore> {
        let mut semaphores = self
            .semaphores
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(semaphore) = semaphores.get(&key).and_then(Weak::upgrade) {
            return semaphore;
        }
        semaphores.retain(|_, semaphore| semaphore.strong_count() > 0);
        let semaphore = Arc::new(Semaphore::new(max));
        semaphores.insert(key, Arc::downgrade(&semaphore));
        semaphore
    }
}

/// The caps one pool's connections count against (none, when `[pools]` sets no limit).
#[derive(Debug, Clone, Default)]
pub struct PoolCaps {
    semaphores: Vec<Arc<Semaphore>>,
}

impl PoolCaps {
    /// No caps.
    pub fn none() -> Self {
        Self::default()
    }

    /// A permit of every cap, waiting in line for each until `deadline`; `None` when the
    /// deadline passed (nothing is kept then).
    pub(super) async fn acquire(
        &self,
        deadline: Instant,
        waiting: &AtomicUsize,
    ) -> Option<CapPermits> {
        let mut permits = Vec::with_capacity(self.semaphores.len());
        for semaphore in &self.semaphores {
            permits.push(acquire_until(semaphore, deadline, waiting).await?);
        }
        Some(CapPermits { _permits: permits })
    }

    /// A permit of every cap if each has one free and nobody waits for it.
    pub(super) fn try_acquire(&self) -> Option<CapPermits> {
        let permits = self
            .semaphores
            .iter()
            .map(|semaphore| semaphore.clone().try_acquire_owned().ok())
            .collect::<Option<_>>()?;
        Some(CapPermits { _permits: permits })
    }
}

/// The cap permits of one open connection, held for its whole life.
#[derive(Debug)]
pub(super) struct CapPermits {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// A permit of `semaphore`: at once if one is free and nobody is waiting, else in FIFO order
/// (tokio's semaphore is fair) until `deadline`, counted in `waiting` meanwhile. `None` when
/// the deadline passed; the place in line is given up then.
pub(super) async fn acquire_until(
    semaphore: &Arc<Semaphore>,
    deadline: Instant,
    waiting: &AtomicUsize,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = semaphore.clone().try_acquire_owned() {
        return Some(permit);
    }
    let _waiting = Waiting::new(waiting);
    // The pools never close their semaphores: an error cannot happen, and is a timeout if it did.
    tokio::time::timeout_at(deadline, semaphore.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// Counts one waiter while it lives (also when a checkout is cancelled mid-wait).
pub(super) struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    pub(super) fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
