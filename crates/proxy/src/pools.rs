//! The proxy's pools: one per (route, [`PoolKey`]), made on first use, of backend
//! connections logged in by the route's plan without anything that belongs to one client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pgbastion_wire::{ErrorResponse, Severity, SqlState};
use prometheus_client::metrics::histogram::Histogram;

use crate::backend::{BackendError, Connector};
use crate::backend_reset;
use crate::login_plan::{LoginPlan, PoolKey};
use crate::metrics::{Metrics, PoolLabels};
use crate::pool::{Caps, Lease, Manager, Pool, PoolError, PoolSettings};
use crate::pooled_session::{GiveBack, Lender, PooledBackend};

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

    async fn close(&self, backend: PooledBackend) {
        backend_reset::terminate(backend.conn, RESET_TIMEOUT).await;
    }
}

/// One pool, as clients use it.
#[derive(Clone)]
pub struct RoutePool {
    pool: Pool<BackendManager>,
    route: usize,
    checkout_wait: Histogram,
}

impl RoutePool {
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
                tracing::warn!(route = self.route, %error, "pool could not open a backend connection");
                error.to_client().with_severity(Severity::Error)
            }
        }
    }
}

impl Lender for RoutePool {
    type Lease = Lease<BackendManager>;

    async fn checkout(&self) -> Result<Lease<BackendManager>, ErrorResponse> {
        let started = std::time::Instant::now();
        let got = self.checkout_live().await;
        self.checkout_wait.observe(started.elapsed().as_secs_f64());
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
    /// A checked-out backend that has not closed while idle.
    async fn checkout_live(&self) -> Result<Lease<BackendManager>, ErrorResponse> {
        // A backend that died while idle (the server restarted, an administrator killed it)
        // has said so by closing: such a one is dropped and another taken, so the client
        // never sees it. The pool then checks its other idle connections.
        for _ in 0..=self.pool.settings().size {
            let mut lease = self.pool.checkout().await.map_err(|e| self.refusal(e))?;
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

/// Every pool of the proxy.
pub struct Pools {
    connector: Arc<Connector>,
    caps: Caps,
    metrics: Arc<Metrics>,
    pools: Mutex<HashMap<(usize, PoolKey), RoutePool>>,
}

impl Pools {
    /// No pools yet; each will count against `caps` and report to `metrics`.
    pub fn new(connector: Arc<Connector>, caps: Caps, metrics: Arc<Metrics>) -> Self {
        Self {
            connector,
            caps,
            metrics,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The pool of route `route` for logins like `plan`, made on first use with `settings`.
    pub fn get(
        &self,
        route: usize,
        plan: &LoginPlan,
        settings: &PoolSettings,
        reset: &str,
        statements: usize,
    ) -> RoutePool {
        let (key, _) = plan.pool_identity();
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools
            .entry((route, key))
            .or_insert_with(|| {
                let manager = BackendManager {
                    connector: self.connector.clone(),
                    plan: plan.for_pool(),
                    reset: reset.to_owned(),
                    statements,
                    greeting: Mutex::new(None),
                };
                let caps =
                    self.caps
                        .for_pool(&plan.address.to_string(), &plan.database, &plan.user);
                let pool = Pool::new(manager, settings.clone(), caps);
                let labels = PoolLabels {
                    route: route.to_string(),
                    backend: plan.address.to_string(),
                    database: plan.database.clone(),
                    user: plan.user.clone(),
                };
                let checkout_wait = self
                    .metrics
                    .track_pool(labels, Box::new(pool.stats_reader()));
                RoutePool {
                    pool,
                    route,
                    checkout_wait,
                }
            })
            .clone()
    }
}
