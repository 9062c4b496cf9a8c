//! The proxy's pools: one per (route, [`PoolKey`]), made on first use, of backend
//! connections logged in by the route's plan without anything that belongs to one client.
//! A route is known by its contents, not its position, so that a reload which moves an
//! unchanged route keeps its pools ([`Pools::retain_routes`]).

use std::collections::{BTreeSet, HashMap};
use std::mem::Discriminant;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pgbastion_wire::{ErrorResponse, Severity, SqlState};

use crate::admin::pause::Pauses;
use crate::backend::{BackendError, Connector};
use crate::backend_reset;
use crate::login_plan::{LoginPlan, PoolKey};
use crate::metrics::{Durations, Metrics, PoolLabels};
use crate::pool::{Caps, Lease, Manager, Pool, PoolError, PoolSettings};
use crate::pooled_session::{GiveBack, Lender, PooledBackend};
use crate::route::{Route, Routes};
use crate::warn_limit::WarnLimiter;

/// How long a reset or a health check may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens, resets and checks the backend connections of one pool.
pub struct BackendManager {
    connector: Arc<Connector>,
    plan: LoginPlan,
    reset: String,
    statements: usize,
    /// What a fresh login of this pool reported (the greeting of its clients).
    greeting: Mutex<Option<Vec<(String, String)>>>,
}

impl BackendManager {
    /// Parameters the backend reported at login, once one connection was made.
    pub fn greeting(&self) -> Option<Vec<(String, String)>> {
        self.greeting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Manager for BackendManager {
    type Conn = PooledBackend;
    type Error = BackendError;

    async fn connect(&self) -> Result<PooledBackend, BackendError> {
        let conn = self.connector.connect(&self.plan).await?;
        *self.greeting.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(conn.parameters.clone());
        Ok(PooledBackend::new(conn, self.statements))
    }

    async fn reset(&self, backend: &mut PooledBackend) -> Result<(), BackendError> {
        if !self.reset.is_empty() {
            backend_reset::reset(&mut backend.conn, &self.reset, RESET_TIMEOUT)
                .await
                .map_err(|error| BackendError::Protocol(error.to_string()))?;
        }
        if !self.reset.trim().eq_ignore_ascii_case("DISCARD ALL") {
            // Statements pgbastion prepared must not outlive a reset it cannot see into.
            backend_reset::reset(&mut backend.conn, "DEALLOCATE ALL", RESET_TIMEOUT)
                .await
                .map_err(|error| BackendError::Protocol(error.to_string()))?;
        }
        backend.forget_session();
        Ok(())
    }

    async fn check(&self, backend: &mut PooledBackend) -> bool {
        backend_reset::check(&mut backend.conn, RESET_TIMEOUT)
            .await
            .is_ok()
    }

    fn rehome(&self, backend: &mut PooledBackend) -> bool {
        match backend.conn.stream.rehome() {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "pool: a backend connection could not move to this worker; closed");
                false
            }
        }
    }

    async fn close(&self, backend: PooledBackend) {
        backend_reset::terminate(backend.conn, RESET_TIMEOUT).await;
    }
}

/// One pool, as clients use it.
#[derive(Clone)]
pub struct RoutePool {
    pool: Pool<BackendManager>,
    route: usize,
    /// Failed backend connects, logged at most once per interval per reason.
    warnings: Arc<WarnLimiter<Discriminant<BackendError>>>,
    /// The checkout wait histogram of this pool's labels.
    checkout_wait: Durations,
    /// The backend database (what PAUSE names).
    database: String,
    /// The backend user.
    user: String,
    /// The database the client using this handle asked for (PAUSE may name it instead).
    client_database: String,
    /// The admin console's pauses.
    pauses: Pauses,
}

impl RoutePool {
    /// This pool as used by a client of database `database` (what PAUSE may name).
    pub fn for_client(self, database: &str) -> Self {
        Self {
            client_database: database.to_owned(),
            ..self
        }
    }

    /// The pool's counters.
    pub fn pool(&self) -> &Pool<BackendManager> {
        &self.pool
    }

    /// Parameters for a client's greeting: a login's, from the manager's memory or from a
    /// connection checked out (and given back) for the purpose.
    pub async fn greeting(&self) -> Result<Vec<(String, String)>, ErrorResponse> {
        if let Some(greeting) = self.pool.manager().greeting() {
            return Ok(greeting);
        }
        let lease = self.checkout().await?;
        let greeting = lease.conn.parameters.clone();
        lease.release();
        Ok(greeting)
    }
}

impl RoutePool {
    /// What a client is told when no backend can be had.
    fn refusal(&self, error: PoolError<BackendError>) -> ErrorResponse {
        match error {
            PoolError::Timeout { waited } => ErrorResponse::new(
                Severity::Error,
                SqlState::TOO_MANY_CONNECTIONS,
                format!(
                    "no backend connection of route {} became free within {:.1} s \
                     (the pool's checkout_timeout)",
                    self.route,
                    waited.as_secs_f64()
                ),
            ),
            PoolError::Connect(error) => {
                if let Some(suppressed) = self.warnings.admit(std::mem::discriminant(&error)) {
                    tracing::warn!(route = self.route, %error, suppressed, "pool could not open a backend connection");
                }
                error.to_client().with_severity(Severity::Error)
            }
        }
    }
}

impl Lender for RoutePool {
    type Lease = Lease<BackendManager>;

    async fn checkout(&self) -> Result<Lease<BackendManager>, ErrorResponse> {
        let started = std::time::Instant::now();
        let timeout = self.pool.settings().checkout_timeout;
        let until = tokio::time::Instant::now() + timeout;
        let pool = (self.database.as_str(), self.user.as_str());
        if !self
            .pauses
            .wait_resumed(pool, &self.client_database, until)
            .await
        {
            return Err(ErrorResponse::new(
                Severity::Error,
                SqlState::TOO_MANY_CONNECTIONS,
                format!(
                    "the pools of database \"{}\" are paused (admin console PAUSE) and were not \
                     resumed within {:.1} s (the pool's checkout_timeout)",
                    self.database,
                    timeout.as_secs_f64()
                ),
            ));
        }
        // The pause's wait counts against the same checkout_timeout.
        let got = self.checkout_live(started, until).await;
        self.checkout_wait.observe(started.elapsed());
        got
    }

    async fn give_back(&self, lease: Lease<BackendManager>, how: GiveBack) {
        match how {
            GiveBack::Clean => lease.release(),
            GiveBack::Reset => {
                if let Err(error) = lease.reset_and_release().await {
                    tracing::info!(route = self.route, %error, "reset failed; backend connection closed");
                }
            }
            GiveBack::Close => drop(lease),
            GiveBack::Broken => lease.discard_after_error(),
        }
    }
}

impl RoutePool {
    /// A checked-out backend that has not closed while idle, by `until`, for a checkout
    /// that began at `started` (a timeout says how long it waited in all).
    async fn checkout_live(
        &self,
        started: std::time::Instant,
        until: tokio::time::Instant,
    ) -> Result<Lease<BackendManager>, ErrorResponse> {
        let refusal = |error| match error {
            PoolError::Timeout { .. } => self.refusal(PoolError::Timeout {
                waited: started.elapsed(),
            }),
            error => self.refusal(error),
        };
        // A backend that died while idle (the server restarted, an administrator killed it)
        // has said so by closing: such a one is dropped and another taken, so the client
        // never sees it. The pool then checks its other idle connections.
        for _ in 0..=self.pool.settings().size {
            let checkout = self.pool.checkout_until(until).await;
            let mut lease = checkout.map_err(refusal)?;
            if !lease.conn.looks_closed() {
                return Ok(lease);
            }
            tracing::info!(
                route = self.route,
                "an idle backend connection was closed; using another"
            );
            lease.discard_after_error();
        }
        Err(self.refusal(PoolError::Timeout {
            waited: self.pool.settings().checkout_timeout,
        }))
    }
}

/// The pools of one key: one per route that logs in with that key.
type RoutesPools = Vec<(Route, RoutePool)>;

/// Every pool of the proxy.
pub struct Pools {
    connector: Arc<Connector>,
    caps: Caps,
    metrics: Arc<Metrics>,
    /// Per key, the pools of each route with that key (almost always one).
    pools: Mutex<HashMap<PoolKey, RoutesPools>>,
    /// The routes of the configuration in force, once a reload has set them: a client of an
    /// older configuration whose route is gone gets a pool of its own, not kept here.
    in_force: Mutex<Option<Routes>>,
    /// The admin console's PAUSE and RESUME, which every pool's checkouts obey.
    pauses: Pauses,
}

impl Pools {
    /// No pools yet; each will count against `caps` and report to `metrics`.
    pub fn new(connector: Arc<Connector>, caps: Caps, metrics: Arc<Metrics>) -> Self {
        Self {
            connector,
            caps,
            metrics,
            pools: Mutex::new(HashMap::new()),
            in_force: Mutex::new(None),
            pauses: Pauses::default(),
        }
    }

    /// What is paused (the admin console's PAUSE and RESUME).
    pub fn pauses(&self) -> &Pauses {
        &self.pauses
    }

    /// Forgets the pools of the backend databases `databases` (every pool with `None`) and
    /// returns them to be retired (the admin console's KILL): clients that come later get
    /// new ones.
    pub fn forget_databases(&self, databases: Option<&BTreeSet<String>>) -> Vec<RoutePool> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        forget(&mut pools, |_, pool| {
            databases.is_some_and(|names| !names.contains(&pool.database))
        })
    }

    /// Closes every pool (shutdown): idle backends get a Terminate, and backends given
    /// back later are closed.
    pub async fn close(&self) {
        let pools: Vec<RoutePool> = self
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .flatten()
            .map(|(_, pool)| pool.clone())
            .collect();
        for pool in pools {
            pool.pool().close().await;
        }
    }

    /// The pool of `route` for logins like `plan`, made on first use with `settings`.
    pub fn get(
        &self,
        route: &Route,
        plan: &LoginPlan,
        settings: &PoolSettings,
        reset: &str,
        statements: usize,
    ) -> RoutePool {
        let (key, _) = plan.pool_identity();
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let found = pools
            .get(&key)
            .and_then(|of_key| of_key.iter().find(|(r, _)| r.same_as(route)));
        if let Some((_, pool)) = found {
            // The route's number in the caller's configuration (a reload may have moved it).
            return RoutePool {
                route: route.number,
                ..pool.clone()
            };
        }
        let manager = BackendManager {
            connector: self.connector.clone(),
            plan: plan.for_pool(),
            reset: reset.to_owned(),
            statements,
            greeting: Mutex::new(None),
        };
        let caps = self
            .caps
            .for_pool(&plan.address.to_string(), &plan.database, &plan.user);
        let pool = Pool::new(manager, settings.clone(), caps);
        let labels = PoolLabels {
            route: route.number.to_string(),
            backend: plan.address.to_string(),
            database: plan.database.clone(),
            user: plan.user.clone(),
        };
        let checkout_wait = self
            .metrics
            .track_pool(labels, Box::new(pool.stats_reader()));
        let pool = RoutePool {
            pool,
            route: route.number,
            warnings: Arc::default(),
            checkout_wait,
            database: plan.database.clone(),
            user: plan.user.clone(),
            client_database: String::new(),
            pauses: self.pauses.clone(),
        };
        if self.is_in_force(route) {
            let of_key = pools.entry(key).or_default();
            of_key.push((route.clone(), pool.clone()));
        }
        pool
    }

    fn is_in_force(&self, route: &Route) -> bool {
        let in_force = self.in_force.lock().unwrap_or_else(PoisonError::into_inner);
        in_force
            .as_ref()
            .is_none_or(|routes| routes.0.iter().any(|r| r.same_as(route)))
    }

    /// Forgets the pools of routes that are not in `routes`, the routes now in force (a
    /// reload removed or changed them), and returns them to be retired
    /// ([`Pool::retire`](crate::pool::Pool::retire)); the pools of unchanged routes keep
    /// their connections.
    pub fn retain_routes(&self, routes: &Routes) -> Vec<RoutePool> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        *self.in_force.lock().unwrap_or_else(PoisonError::into_inner) = Some(routes.clone());
        forget(&mut pools, |route, _| {
            routes.0.iter().any(|r| r.same_as(route))
        })
    }
}

/// Removes from `pools` those that `keep` does not keep, and returns them.
fn forget(
    pools: &mut HashMap<PoolKey, RoutesPools>,
    keep: impl Fn(&Route, &RoutePool) -> bool,
) -> Vec<RoutePool> {
    let mut forgotten = Vec::new();
    pools.retain(|_, of_key| {
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(of_key)
            .into_iter()
            .partition(|(route, pool)| keep(route, pool));
        *of_key = kept;
        forgotten.extend(gone.into_iter().map(|(_, pool)| pool));
        !of_key.is_empty()
    });
    forgotten
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::SourceFile;
    use crate::kdf::Kdf;
    use crate::target::{Address, TlsSettings};
    use crate::Settings;

    fn routes(text: &str) -> Routes {
        Settings::from_source(&SourceFile {
            path: PathBuf::from("/etc/pgbastion/pgbastion.toml"),
            text: text.to_owned(),
        })
        .unwrap()
        .routes
    }

    fn route(database: &str) -> String {
        format!(
            "[[route]]\nmatch = {{ database = \"{database}\" }}\nauth = \"trust\"\n\
             backend = \"postgres://127.0.0.1:5432/app\"\npool = {{ mode = \"session\" }}\n"
        )
    }

    fn plan() -> LoginPlan {
        LoginPlan {
            address: Address::Tcp("127.0.0.1".into(), 5432),
            tls: TlsSettings::default(),
            user: "app".into(),
            database: "app".into(),
            parameters: Vec::new(),
            client_addr: None,
            secret: None,
            proxy_from: None,
            timeout: Duration::from_secs(5),
        }
    }

    fn get(pools: &Pools, route: &Route) -> RoutePool {
        let pool = route.pool.as_ref().unwrap();
        pools.get(route, &plan(), &pool.settings, "", 1)
    }

    fn same(a: &RoutePool, b: &RoutePool) -> bool {
        std::ptr::eq(a.pool().manager(), b.pool().manager())
    }

    #[tokio::test]
    async fn pools_follow_their_route_by_its_contents_across_reloads() {
        let metrics = Arc::new(Metrics::new());
        let connector = Arc::new(Connector::new(
            PathBuf::from("/"),
            Kdf::start().unwrap(),
            10_000,
            metrics.clone(),
        ));
        let pools = Pools::new(connector, Caps::new(0, 0), metrics);
        let first = routes(&format!("{}{}", route("a"), route("b")));
        let a = get(&pools, &first.0[0]);
        assert!(same(&a, &get(&pools, &first.0[0])));
        let b = get(&pools, &first.0[1]);
        assert!(!same(&a, &b), "two routes, two pools");

        // Route a moved to second place, route b removed.
        let second = routes(&format!("{}{}", route("c"), route("a")));
        assert_eq!(pools.retain_routes(&second).len(), 1);
        let moved = get(&pools, &second.0[1]);
        assert!(same(&a, &moved));
        assert_eq!(moved.route, 2, "named by its new number");

        // A late client of the removed route gets a pool of its own each time.
        let late = get(&pools, &first.0[1]);
        assert!(!same(&late, &b));
        assert!(!same(&late, &get(&pools, &first.0[1])));
    }
}
