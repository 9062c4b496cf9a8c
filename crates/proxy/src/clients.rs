//! Client connections: an ID per accepted connection, unique for the life of the process
//! (across reloads), shown in its log lines and wherever the connection is named; and the
//! registry of sessions ([`Clients`]) that the admin console lists and ends.
//!
//! Registering costs one lock when a session starts and one when it ends; what a session
//! does in between is counted in its own atomics ([`ClientStats`]), never under the lock.

mod stats;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

pub use stats::{ClientStats, Totals};

use pgbastion_gateway::ConnectionState;

use crate::drain::Drain;

/// One accepted client connection's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Hands out [`ClientId`]s, from 1 on.
#[derive(Debug, Default)]
pub struct ClientIds {
    last: AtomicU64,
}

impl ClientIds {
    /// The next connection's ID.
    pub fn next(&self) -> ClientId {
        ClientId(self.last.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// What the registry knows of one session, from its start.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The connection's ID.
    pub id: ClientId,
    /// The user it logged in as.
    pub user: String,
    /// The database it asked for.
    pub database: String,
    /// The client's address (the real one behind a PROXY header).
    pub address: SocketAddr,
    /// The listener it connected to.
    pub listener: SocketAddr,
    /// Its route's number; `None` on the admin console.
    pub route: Option<usize>,
    /// Whether it uses TLS.
    pub tls: bool,
    /// Its `application_name`.
    pub application_name: String,
    /// When it connected.
    pub connected: SystemTime,
}

impl ClientInfo {
    /// The session of `state`'s client, connection `id` on `listener`, of route `route`
    /// (`None`: the admin console), starting now.
    pub fn of(
        state: &ConnectionState,
        listener: SocketAddr,
        id: ClientId,
        route: Option<usize>,
    ) -> Self {
        let client = state.client.as_ref();
        let parameter = |name: &str| client.and_then(|c| c.parameter(name)).unwrap_or_default();
        Self {
            id,
            user: parameter("user").to_owned(),
            database: client.map(|c| c.database().to_owned()).unwrap_or_default(),
            address: state.client_addr,
            listener,
            route,
            tls: state.tls.is_some(),
            application_name: parameter("application_name").to_owned(),
            connected: SystemTime::now(),
        }
    }

    /// Whether this is an admin console session.
    pub fn is_console(&self) -> bool {
        self.route.is_none()
    }
}

/// One registered session as the console sees it.
#[derive(Debug, Clone)]
pub struct ClientView {
    /// Who it is.
    pub info: ClientInfo,
    /// What it has done so far.
    pub totals: Totals,
}

struct Entry {
    info: ClientInfo,
    stats: Arc<ClientStats>,
    kill: Drain,
}

#[derive(Default)]
struct Registry {
    live: BTreeMap<ClientId, Entry>,
    /// What ended sessions did, by database.
    ended: BTreeMap<String, Totals>,
}

/// The sessions open now, and what ended ones did, by database.
#[derive(Default)]
pub struct Clients {
    registry: Mutex<Registry>,
}

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl Clients {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a session until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, info: ClientInfo) -> Registered {
        let stats = Arc::new(ClientStats::default());
        let kill = Drain::default();
        let id = info.id;
        let entry = Entry {
            info,
            stats: stats.clone(),
            kill: kill.clone(),
        };
        self.lock().live.insert(id, entry);
        Registered {
            clients: self.clone(),
            id,
            stats,
            kill,
        }
    }

    /// Every session open now, by ID.
    pub fn list(&self) -> Vec<ClientView> {
        self.lock()
            .live
            .values()
            .map(|entry| ClientView {
                info: entry.info.clone(),
                totals: entry.stats.totals(),
            })
            .collect()
    }

    /// What every session did, open or ended, by database.
    pub fn totals_by_database(&self) -> BTreeMap<String, Totals> {
        let registry = self.lock();
        let mut totals = registry.ended.clone();
        for entry in registry.live.values() {
            let sum = totals.entry(entry.info.database.clone()).or_default();
            sum.add(&entry.stats.totals());
        }
        totals
    }

    /// Ends the session `id` (FATAL 57P01 at its next message boundary; a statement running
    /// is cancelled first). Whether it was found.
    pub fn kill(&self, id: ClientId) -> bool {
        let registry = self.lock();
        let found = registry.live.get(&id);
        if let Some(entry) = found {
            entry.kill.start(Duration::ZERO);
        }
        found.is_some()
    }

    /// Ends every session but the console's whose `database` is `database` (every one with
    /// `None`). How many were told.
    pub fn kill_database(&self, database: Option<&str>) -> usize {
        let registry = self.lock();
        let targets = registry.live.values().filter(|entry| {
            !entry.info.is_console() && database.is_none_or(|db| entry.info.database == db)
        });
        targets
            .map(|entry| entry.kill.start(Duration::ZERO))
            .count()
    }
}

/// A registered session: dropped when it ends, which folds its counts into its database's.
pub struct Registered {
    clients: Arc<Clients>,
    id: ClientId,
    stats: Arc<ClientStats>,
    kill: Drain,
}

impl Registered {
    /// Where the session counts its traffic.
    pub fn stats(&self) -> Arc<ClientStats> {
        self.stats.clone()
    }

    /// The session's own end signal, set by [`Clients::kill`] (watch it with
    /// [`Drain::watch_with`]).
    pub fn kill(&self) -> &Drain {
        &self.kill
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut registry = self.clients.lock();
        if let Some(entry) = registry.live.remove(&self.id) {
            let totals = entry.stats.totals();
            registry
                .ended
                .entry(entry.info.database)
                .or_default()
                .add(&totals);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, database: &str, route: Option<usize>) -> ClientInfo {
        let address: SocketAddr = "127.0.0.1:5000".parse().expect("address");
        ClientInfo {
            id: ClientId(id),
            user: "app".into(),
            database: database.into(),
            address,
            listener: address,
            route,
            tls: false,
            application_name: String::new(),
            connected: SystemTime::now(),
        }
    }

    #[test]
    fn ids_start_at_one_and_never_repeat() {
        let ids = ClientIds::default();
        assert_eq!(ids.next(), ClientId(1));
        assert_eq!(ids.next(), ClientId(2));
        assert_eq!(ids.next().to_string(), "3");
    }

    #[test]
    fn a_session_is_listed_until_it_ends_and_its_counts_stay_with_its_database() {
        let clients = Arc::new(Clients::default());
        let one = clients.register(info(1, "app", Some(1)));
        let two = clients.register(info(2, "other", Some(1)));
        one.stats().query_done(Duration::from_micros(5));
        assert_eq!(clients.list().len(), 2);
        drop(one);
        assert_eq!(clients.list().len(), 1);
        assert_eq!(clients.list()[0].info.id, ClientId(2));
        let totals = clients.totals_by_database();
        assert_eq!(totals["app"].queries, 1);
        assert_eq!(totals["other"].queries, 0);
        drop(two);
    }

    #[test]
    fn kill_ends_the_named_session_and_kill_database_spares_the_console() {
        let clients = Arc::new(Clients::default());
        let app = clients.register(info(1, "app", Some(1)));
        let console = clients.register(info(2, "app", None));
        let other = clients.register(info(3, "other", Some(1)));
        assert!(clients.kill(ClientId(3)));
        assert!(!clients.kill(ClientId(9)));
        assert!(other.kill().is_draining() && !app.kill().is_draining());
        assert_eq!(clients.kill_database(Some("app")), 1);
        assert!(app.kill().is_draining() && !console.kill().is_draining());
        assert_eq!(clients.kill_database(None), 2);
    }
}
