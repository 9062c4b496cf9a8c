//! Client connections: an ID per accepted connection, unique for the life of the process
//! (across reloads), shown in its log lines and wherever the connection is named; and the
//! registry of sessions ([`Clients`]) that the admin console lists and ends.
//!
//! Registering costs one lock when a session starts and one when it ends; what a session
//! does in between is counted in its own atomics ([`ClientStats`]), never under the lock.
//! Readers copy `Arc`s under the lock and read or format them after releasing it.
//!
//! What ended sessions did is kept by client database for SHOW STATS, for at most
//! [`ENDED_NAMES`] names (the name is the client's choice): past that, the totals of
//! further names go to one row, [`OTHERS`].

mod stats;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

pub use stats::{ClientStats, Totals};

use pgbastion_gateway::ConnectionState;

use crate::drain::Drain;
use crate::login_plan::LoginPlan;

/// How many client database names the totals of ended sessions are kept under.
pub const ENDED_NAMES: usize = 1_000;

/// The name the totals of ended sessions go under once [`ENDED_NAMES`] names are taken.
pub const OTHERS: &str = "(others)";

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
    /// Where its queries go; `None` on the admin console.
    pub backend: Option<BackendOf>,
    /// Whether it uses TLS.
    pub tls: bool,
    /// Its `application_name`.
    pub application_name: String,
    /// When it connected.
    pub connected: SystemTime,
}

/// Where a session's queries go, as the pools and PAUSE name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendOf {
    /// The backend database.
    pub database: String,
    /// The backend user.
    pub user: String,
    /// Whether the session uses the pool of that database and user (a pooled session).
    pub pooled: bool,
}

impl BackendOf {
    /// Where `plan` logs in (`pooled`: through the pool of that database and user).
    pub fn planned(plan: &LoginPlan, pooled: bool) -> Self {
        Self {
            database: plan.database.clone(),
            user: plan.user.clone(),
            pooled,
        }
    }
}

impl ClientInfo {
    /// The session of `state`'s client, connection `id` on `listener`, of route `route`
    /// going to `backend` (both `None`: the admin console), starting now.
    pub fn of(
        state: &ConnectionState,
        listener: SocketAddr,
        id: ClientId,
        route: Option<usize>,
        backend: Option<BackendOf>,
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
            backend,
            tls: state.tls.is_some(),
            application_name: parameter("application_name").to_owned(),
            connected: SystemTime::now(),
        }
    }

    /// Whether this is an admin console session.
    pub fn is_console(&self) -> bool {
        self.route.is_none()
    }

    /// Whether `database` names this session's database, the client's or the backend's
    /// (what KILL and PAUSE match).
    pub fn uses_database(&self, database: &str) -> bool {
        self.database == database
            || self
                .backend
                .as_ref()
                .is_some_and(|b| b.database == database)
    }

    /// The pool it uses, as (backend database, backend user); `None` if not pooled.
    pub fn pool(&self) -> Option<(&str, &str)> {
        let backend = self.backend.as_ref().filter(|b| b.pooled)?;
        Some((backend.database.as_str(), backend.user.as_str()))
    }
}

/// One registered session as the console sees it.
#[derive(Debug, Clone)]
pub struct ClientView {
    /// Who it is.
    pub info: Arc<ClientInfo>,
    /// What it has done so far.
    pub totals: Totals,
}

struct Entry {
    info: Arc<ClientInfo>,
    stats: Arc<ClientStats>,
    kill: Drain,
}

#[derive(Default)]
struct Registry {
    live: BTreeMap<ClientId, Entry>,
    /// What ended sessions did, by client database (at most [`ENDED_NAMES`] names, then
    /// [`OTHERS`]).
    ended: BTreeMap<Arc<str>, Totals>,
}

impl Registry {
    /// Adds what an ended session of `database` did.
    fn ended(&mut self, database: &str, totals: &Totals) {
        if let Some(sum) = self.ended.get_mut(database) {
            return sum.add(totals);
        }
        let name = if self.ended.len() < ENDED_NAMES {
            database
        } else {
            OTHERS
        };
        self.ended.entry(name.into()).or_default().add(totals);
    }
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
            info: Arc::new(info),
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

    /// The live sessions' shared parts, copied under the lock.
    fn live(&self) -> Vec<(Arc<ClientInfo>, Arc<ClientStats>)> {
        let registry = self.lock();
        let live = registry.live.values();
        live.map(|e| (e.info.clone(), e.stats.clone())).collect()
    }

    /// Every session open now, by ID.
    pub fn list(&self) -> Vec<ClientView> {
        let live = self.live().into_iter();
        live.map(|(info, stats)| ClientView {
            info,
            totals: stats.totals(),
        })
        .collect()
    }

    /// What every session did, open or ended, by client database (ended ones past
    /// [`ENDED_NAMES`] names under [`OTHERS`]).
    pub fn totals_by_database(&self) -> BTreeMap<String, Totals> {
        let (ended, live) = {
            let registry = self.lock();
            let ended: Vec<(Arc<str>, Totals)> = registry
                .ended
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            let live = registry.live.values();
            let live: Vec<_> = live.map(|e| (e.info.clone(), e.stats.clone())).collect();
            (ended, live)
        };
        let mut totals: BTreeMap<String, Totals> =
            ended.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        for (info, stats) in live {
            let sum = totals.entry(info.database.clone()).or_default();
            sum.add(&stats.totals());
        }
        totals
    }

    /// The backend databases of the sessions open now whose client or backend database is
    /// `database`, and `database` itself (what KILL and PAUSE act on).
    pub fn backend_databases(&self, database: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::from([database.to_owned()]);
        for (info, _) in self.live() {
            if let Some(backend) = info
                .backend
                .as_ref()
                .filter(|_| info.uses_database(database))
            {
                names.insert(backend.database.clone());
            }
        }
        names
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

    /// Ends every session but the console's whose client or backend database is `database`
    /// (every one with `None`). How many were told.
    pub fn kill_database(&self, database: Option<&str>) -> usize {
        let registry = self.lock();
        let targets = registry.live.values().filter(|entry| {
            !entry.info.is_console() && database.is_none_or(|db| entry.info.uses_database(db))
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
            registry.ended(&entry.info.database, &entry.stats.totals());
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
            backend: route.map(|_| BackendOf {
                database: format!("{database}_prod"),
                user: "postgres".into(),
                pooled: true,
            }),
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
        assert_eq!(clients.kill_database(Some("app_prod")), 1);
        assert!(app.kill().is_draining() && !console.kill().is_draining());
        assert_eq!(clients.kill_database(Some("app")), 1);
        assert_eq!(clients.kill_database(None), 2);
    }

    #[test]
    fn either_name_finds_the_backend_databases_of_live_sessions() {
        let clients = Arc::new(Clients::default());
        let _app = clients.register(info(1, "app", Some(1)));
        let names = |db: &str| {
            clients
                .backend_databases(db)
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(names("app"), ["app", "app_prod"]);
        assert_eq!(names("app_prod"), ["app_prod"]);
        assert_eq!(names("other"), ["other"]);
    }

    #[test]
    fn ended_totals_keep_at_most_the_bound_of_names_then_go_to_others() {
        let clients = Arc::new(Clients::default());
        for n in 0..ENDED_NAMES + 40 {
            let session = clients.register(info(n as u64, &format!("db{n}"), Some(1)));
            session.stats().query_done(Duration::from_micros(1));
        }
        let totals = clients.totals_by_database();
        assert_eq!(totals.len(), ENDED_NAMES + 1);
        assert_eq!(totals[OTHERS].queries, 40);
        assert_eq!(totals["db0"].queries, 1);
        // A name already kept still gets its own totals.
        let again = clients.register(info(9_999, "db0", Some(1)));
        again.stats().query_done(Duration::from_micros(1));
        drop(again);
        assert_eq!(clients.totals_by_database()["db0"].queries, 2);
    }
}
