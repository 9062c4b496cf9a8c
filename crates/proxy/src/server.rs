//! [`Proxy`]: settings turned into listeners that accept, limit, authenticate, route and relay.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pgbastion_gateway::Acceptor;
use tokio::net::{TcpListener, TcpStream};

use crate::backend::Connector;
use crate::cancel::CancelRegistry;
use crate::drain::stopper::CLOSING_LIMIT;
use crate::drain::Drain;
use crate::kdf::Kdf;
use crate::limits::ConnectionLimiter;
use crate::pool::Caps;
use crate::pools::Pools;
use crate::session::{serve_client, ListenerContext};
use crate::settings::{Listener, Settings};
use crate::shared::Shared;
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
    /// The token keys could not be loaded. The cause is the source, not repeated in this
    /// text: `{:#}` (anyhow) prints the chain.
    #[error("cannot load the [jwt] keys")]
    Tokens(#[from] pgbastion_jwt::JwtError),
}

/// A configured proxy, ready to bind.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    workers: Option<Arc<Workers>>,
    drain: Drain,
    grace_period: Duration,
}

impl Proxy {
    /// Builds the proxy (loads token keys).
    pub async fn new(settings: Settings) -> Result<Self, ProxyError> {
        let tokens = match &settings.jwt {
            Some(jwt) => {
                let tokens = Arc::new(Tokens::new(jwt).await?);
                tokens.spawn_refresh();
                Some(tokens)
            }
            None => None,
        };
        let (oauth_issuer, oauth_scope) = settings
            .jwt
            .as_ref()
            .map(|jwt| (jwt.issuer.clone(), jwt.scope.clone()))
            .unwrap_or_default();
        let kdf = Kdf::start().map_err(ProxyError::Threads)?;
        let connector = Arc::new(Connector::new(
            settings.dir,
            kdf.clone(),
            settings.max_scram_iterations,
        ));
        let shared = Arc::new(Shared {
            routes: settings.routes,
            users: Users::new(settings.users, kdf.clone()),
            tokens,
            oauth_issuer,
            oauth_scope,
            cancel: Arc::new(CancelRegistry::default()),
            connector: connector.clone(),
            pools: Pools::new(
                connector,
                Caps::new(
                    settings.pools.max_db_connections,
                    settings.pools.max_user_connections,
                ),
            ),
            lookups: Default::default(),
        });
        Ok(Self {
            shared,
            listeners: settings.listeners,
            workers: None,
            drain: Drain::default(),
            grace_period: settings.grace_period,
        })
    }

    /// Runs sessions on `workers` (thread-per-core runtimes) instead of the runtime that
    /// calls [`Proxy::serve`]; the accept loops stay on the caller's runtime.
    pub fn with_workers(mut self, workers: Workers) -> Self {
        self.workers = Some(Arc::new(workers));
        self
    }

    /// Refreshes the token keys now (SIGHUP).
    pub async fn refresh_keys(&self) {
        if let Some(tokens) = &self.shared.tokens {
            tokens.refresh().await;
        }
    }

    /// The configured `grace_period`: what SIGTERM gives clients inside a transaction.
    pub fn grace_period(&self) -> Duration {
        self.grace_period
    }

    /// Starts the graceful drain: the listeners close, idle clients get FATAL 57P01, clients
    /// inside a transaction or a statement get `grace` to finish (then their statement is
    /// cancelled on the backend and they get 57P01). [`Proxy::serve`] returns once every
    /// session has ended. A second call can only shorten the wait.
    pub fn drain(&self, grace: Duration) {
        self.drain.start(grace);
    }

    /// Whether the drain has started (`/ready` is false from then on).
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// The drain signal itself, for tasks that outlive a borrow of the proxy (a readiness
    /// endpoint, an admin command).
    pub fn drain_handle(&self) -> Drain {
        self.drain.clone()
    }

    /// Binds every listener.
    pub async fn bind(&self) -> Result<Vec<(TcpListener, Listener)>, ProxyError> {
        let mut bound = Vec::new();
        for listener in &self.listeners {
            let socket = TcpListener::bind(listener.address)
                .await
                .map_err(|source| ProxyError::Bind {
                    address: listener.address,
                    source,
                })?;
            bound.push((socket, listener.clone()));
        }
        Ok(bound)
    }

    /// Serves the bound listeners until `shutdown` yields a grace period (or
    /// [`Proxy::drain`] is called), then drains: the listening sockets close at once, and
    /// this returns when every connection has ended (at the latest a few seconds after the
    /// grace period), with the pools' idle backends closed.
    pub async fn serve(
        &self,
        bound: Vec<(TcpListener, Listener)>,
        shutdown: impl Future<Output = Duration>,
    ) {
        let mut tasks = Vec::new();
        for (socket, listener) in bound {
            let ctx = Arc::new(ListenerContext::new(
                self.shared.clone(),
                &listener,
                ConnectionLimiter::new(listener.limits),
                self.drain.clone(),
            ));
            tasks.push(tokio::spawn(accept_loop(socket, ctx, self.workers.clone())));
        }
        tokio::select! {
            grace = shutdown => self.drain.start(grace),
            () = self.drain.started() => {}
        }
        for task in tasks {
            task.abort();
            // Awaited: the listening socket is closed once the task is gone.
            let _ = task.await;
        }
        tracing::info!(
            connections = self.drain.live(),
            "draining: listeners closed, waiting for sessions to end"
        );
        self.wait_for_sessions().await;
        let pools = self.shared.pools.close();
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

async fn accept_loop(
    socket: TcpListener,
    ctx: Arc<ListenerContext>,
    workers: Option<Arc<Workers>>,
) {
    // Accept errors (out of file descriptors and the like) are waited out and logged once
    // per burst by the Acceptor; the loop itself never ends.
    let mut acceptor = Acceptor::new(socket);
    loop {
        let (stream, peer) = acceptor.accept().await;
        let ctx = ctx.clone();
        match &workers {
            None => {
                tokio::spawn(serve_client(stream, peer, ctx));
            }
            Some(workers) => hand_over(workers, stream, peer, ctx),
        }
    }
}

/// Moves an accepted connection to a worker's runtime.
fn hand_over(workers: &Workers, stream: TcpStream, peer: SocketAddr, ctx: Arc<ListenerContext>) {
    // The socket leaves this runtime's reactor and joins the worker's.
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot hand a connection to a worker");
            return;
        }
    };
    workers.spawn(move || async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => serve_client(stream, peer, ctx).await,
            Err(error) => tracing::warn!(%peer, %error, "a worker cannot take a connection"),
        }
    });
}
