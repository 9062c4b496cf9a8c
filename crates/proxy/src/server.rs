//! [`Proxy`]: settings turned into listeners that accept, limit, authenticate, route and relay.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::admin::control::Control;
use crate::audit::{AuditError, AuditLog};
use crate::backend::Connector;
use crate::cancel::CancelRegistry;
use crate::clients::ClientIds;
use crate::drain::stopper::CLOSING_LIMIT;
use crate::drain::Drain;
use crate::kdf::Kdf;
use crate::listeners::RunningListeners;
use crate::metrics::Metrics;
use crate::pool::Caps;
use crate::pools::Pools;
use crate::settings::{Listener, Settings};
use crate::shared::{Lasting, Shared};
use crate::swap::Swap;
use crate::tokens::Tokens;
use crate::users::Users;
use crate::workers::Workers;

/// How long, after the last session's deadline, its goodbye (57P01, a Terminate to its
/// backend) may take before [`Proxy::serve`] stops waiting for it.
const GOODBYE_LIMIT: Duration = Duration::from_secs(5);

/// How long closing the pools' idle backends may take at shutdown.
const POOL_CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener could not bind.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The key derivation threads could not be started.
    #[error("cannot start the key derivation threads: {0}")]
    Threads(std::io::Error),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The token keys could not be loaded. The cause is the source, not repeated in this
    /// text: `{:#}` (anyhow) prints the chain.
    #[error("cannot load the [jwt] keys")]
    Tokens(#[from] pgbastion_jwt::JwtError),
}

/// The configuration in force: the settings it came from and what its connections share.
pub(crate) struct InForce {
    /// As loaded (a reload compares the next ones with them); the same `Arc` as
    /// [`Lasting::settings`].
    pub(crate) settings: Arc<Settings>,
    /// What connections accepted under it share.
    pub(crate) shared: Arc<Shared>,
}

/// A configured proxy, ready to bind.
pub struct Proxy {
    pub(crate) lasting: Arc<Lasting>,
    pub(crate) in_force: Swap<InForce>,
    /// The accept loops, once [`Proxy::serve`] runs.
    pub(crate) running: Mutex<Option<RunningListeners>>,
    pub(crate) workers: Option<Arc<Workers>>,
    /// The file [`Proxy::reload`] reads.
    pub(crate) config_file: Option<PathBuf>,
    /// One reload at a time (SIGHUP and an admin command may ask together).
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// Whether the accept loops of [`Proxy::serve`] have started (see [`Proxy::accepting`]).
    pub(crate) accepting: tokio::sync::watch::Sender<bool>,
    /// Whether an upgrade is under way: the console's RELOAD is refused meanwhile.
    upgrading: AtomicBool,
    drain: Drain,
}

/// How long the audit writer gets, at the end, to write the events still queued.
pub const AUDIT_CLOSE_LIMIT: Duration = Duration::from_secs(5);

impl Proxy {
    /// Builds the proxy (loads token keys).
    pub async fn new(settings: Settings) -> Result<Self, ProxyError> {
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::new());
        metrics.readiness.set_backends_of(&settings.routes);
        let kdf = Kdf::start().map_err(ProxyError::Threads)?;
        let connector = Arc::new(Connector::new(
            settings.dir.clone(),
            kdf.clone(),
            settings.max_scram_iterations,
            metrics.clone(),
        ));
        let audit = settings
            .audit
            .as_ref()
            .map(|audit| AuditLog::start(audit, metrics.audit()))
            .transpose()?
            .map(Arc::new);
        let lasting = Arc::new(Lasting {
            cancel: Arc::new(CancelRegistry::default()),
            client_ids: ClientIds::default(),
            clients: Arc::default(),
            control: Control::default(),
            settings: Swap::new(settings.clone()),
            connector: connector.clone(),
            pools: Pools::new(
                connector,
                Caps::new(
                    settings.pools.max_db_connections,
                    settings.pools.max_user_connections,
                ),
                metrics.clone(),
            ),
            kdf,
            metrics,
            audit,
        });
        let tokens = match &settings.jwt {
            Some(jwt) => Some(start_tokens(jwt, lasting.metrics.clone()).await?),
            None => None,
        };
        let shared = Arc::new(shared_for(&settings, tokens, lasting.clone()));
        Ok(Self {
            lasting,
            in_force: Swap::new(Arc::new(InForce { settings, shared })),
            running: Mutex::new(None),
            workers: None,
            config_file: None,
            reloading: tokio::sync::Mutex::new(()),
            accepting: tokio::sync::watch::Sender::new(false),
            upgrading: AtomicBool::new(false),
            drain: Drain::default(),
        })
    }

    /// Runs sessions on `workers` (thread-per-core runtimes) instead of the runtime that
    /// calls [`Proxy::serve`]; the accept loops stay on the caller's runtime.
    pub fn with_workers(mut self, workers: Workers) -> Self {
        self.workers = Some(Arc::new(workers));
        self
    }

    /// Makes [`Proxy::reload`] re-read `path` (the file the settings came from).
    pub fn with_config_file(mut self, path: PathBuf) -> Self {
        self.config_file = Some(path);
        self
    }

    /// Has the audit log's file opened afresh (SIGUSR1, with the log file); nothing without
    /// one.
    pub fn reopen_audit(&self) {
        if let Some(audit) = &self.lasting.audit {
            audit.reopen();
        }
    }

    /// Ends the audit log once serving is over: later events are dropped, and the writer
    /// gets at most [`AUDIT_CLOSE_LIMIT`] to write those queued (the rest is logged and
    /// counted as dropped). Nothing without one.
    pub async fn close_audit(&self) {
        if let Some(audit) = self.lasting.audit.clone() {
            let closing = tokio::task::spawn_blocking(move || audit.close(AUDIT_CLOSE_LIMIT));
            let _ = closing.await;
        }
    }

    /// The configured `grace_period`: what SIGTERM gives clients inside a transaction.
    pub fn grace_period(&self) -> Duration {
        self.in_force.load().settings.grace_period
    }

    /// Starts the graceful drain: the listeners close, idle clients get FATAL 57P01, clients
    /// inside a transaction or a statement get `grace` to finish (then their statement is
    /// cancelled on the backend and they get 57P01). [`Proxy::serve`] returns once every
    /// session has ended. A second call can only shorten the wait.
    pub fn drain(&self, grace: Duration) {
        self.lasting.metrics.readiness.set_draining();
        self.drain.start(grace);
    }

    /// Whether the drain has started (`/ready` is false from then on).
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// The drain signal itself, for tasks that outlive a borrow of the proxy and need to know
    /// whether it drains. Start a drain with [`Proxy::drain`], which also turns `/ready`
    /// false.
    pub fn drain_handle(&self) -> Drain {
        self.drain.clone()
    }

    /// The configured `upgrade_settle`: how long, in an upgrade, the sessions accepted last
    /// get before the drain starts (read at start).
    pub fn upgrade_settle(&self) -> Duration {
        self.in_force.load().settings.upgrade_settle
    }

    /// Says whether an upgrade is under way (the binary's business): meanwhile the admin
    /// console's RELOAD is refused, as a new listener bound by this process would take an
    /// address from the process taking over.
    pub fn set_upgrading(&self, upgrading: bool) {
        self.upgrading.store(upgrading, Ordering::Relaxed);
    }

    /// Whether an upgrade is under way ([`Proxy::set_upgrading`]).
    pub fn is_upgrading(&self) -> bool {
        self.upgrading.load(Ordering::Relaxed)
    }

    /// The process's metrics and readiness state (for the metrics endpoint).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.lasting.metrics.clone()
    }

    /// Binds every listener.
    pub async fn bind(&self) -> Result<Vec<(TcpListener, Listener)>, ProxyError> {
        self.bind_adopting(|_| None).await
    }

    /// Serves the bound listeners until `shutdown` yields a grace period (or
    /// [`Proxy::drain`] is called), then drains: the listening sockets close at once, and
    /// this returns when every connection has ended (at the latest a few seconds after the
    /// grace period), with the pools' idle backends closed. The admin console's requests
    /// are answered throughout, the drain included.
    pub async fn serve(
        &self,
        bound: Vec<(TcpListener, Listener)>,
        shutdown: impl Future<Output = Duration>,
    ) {
        let mut running = RunningListeners::new(
            tokio::runtime::Handle::current(),
            self.workers.clone(),
            self.drain.clone(),
        );
        let shared = self.in_force.load().shared.clone();
        for (socket, listener) in bound {
            running.start(socket, &listener, shared.clone());
        }
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some(running);
        self.lasting.metrics.readiness.set_listening();
        self.accepting.send_replace(true);
        let answering = self.answer_requests();
        tokio::pin!(answering);
        tokio::select! {
            grace = shutdown => self.drain(grace),
            () = self.drain.started() => {}
            () = &mut answering => {}
        }
        // The consoles open during the drain may still ask (SHUTDOWN to shorten it).
        tokio::select! {
            () = self.drained() => {}
            () = answering => {}
        }
    }

    /// The drain, once started: the listeners close, the sessions end, the pools close.
    async fn drained(&self) {
        self.stop_accepting().await;
        tracing::info!(
            connections = self.drain.live(),
            "draining: listeners closed, waiting for sessions to end"
        );
        self.wait_for_sessions().await;
        let pools = self.lasting.pools.close();
        if tokio::time::timeout(POOL_CLOSE_LIMIT, pools).await.is_err() {
            tracing::warn!("draining: the pools' idle backends did not all close in time");
        }
    }

    /// Waits for every connection to end, at most until the drain's deadline, the closing
    /// limit and the goodbye limit have passed.
    async fn wait_for_sessions(&self) {
        let limit = CLOSING_LIMIT + GOODBYE_LIMIT;
        let until = self
            .drain
            .deadline()
            .map_or_else(|| tokio::time::Instant::now() + limit, |d| d + limit);
        if tokio::time::timeout_at(until, self.drain.all_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = self.drain.live(),
                "draining: connections still open after the grace period; exiting anyway"
            );
        }
    }
}

/// Loads the token keys of `jwt` and starts their periodic refresh.
pub(crate) async fn start_tokens(
    jwt: &crate::settings::Jwt,
    metrics: Arc<Metrics>,
) -> Result<Arc<Tokens>, pgbastion_jwt::JwtError> {
    let tokens = Arc::new(Tokens::new(jwt, metrics).await?);
    tokens.spawn_refresh();
    Ok(tokens)
}

/// What the connections of `settings` share, with `tokens` for its `[jwt]`.
pub(crate) fn shared_for(
    settings: &Settings,
    tokens: Option<Arc<Tokens>>,
    lasting: Arc<Lasting>,
) -> Shared {
    let (oauth_issuer, oauth_scope) = settings
        .jwt
        .as_ref()
        .map(|jwt| (jwt.issuer.clone(), jwt.scope.clone()))
        .unwrap_or_default();
    Shared {
        routes: settings.routes.clone(),
        users: Users::new(settings.users.clone(), lasting.kdf.clone()),
        tokens,
        oauth_issuer,
        oauth_scope,
        lookups: Default::default(),
        admin: settings.admin.clone(),
        lasting,
    }
}
