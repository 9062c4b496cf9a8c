//! [`Proxy`]: settings turned into listeners that accept, limit, authenticate, route and relay.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pgbastion_gateway::Acceptor;
use tokio::net::{TcpListener, TcpStream};

use crate::backend::Connector;
use crate::cancel::CancelRegistry;
use crate::kdf::Kdf;
use crate::limits::ConnectionLimiter;
use crate::metrics::Metrics;
use crate::pool::Caps;
use crate::pools::Pools;
use crate::session::{serve_client, ListenerContext};
use crate::settings::{Listener, Settings};
use crate::shared::Shared;
use crate::tokens::Tokens;
use crate::users::Users;
use crate::workers::Workers;

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
}

impl Proxy {
    /// Builds the proxy (loads token keys).
    pub async fn new(settings: Settings) -> Result<Self, ProxyError> {
        let metrics = Arc::new(Metrics::new());
        metrics.readiness.set_backends(
            settings
                .routes
                .0
                .iter()
                .filter_map(|route| route.backend.fixed_address())
                .collect(),
        );
        let tokens = match &settings.jwt {
            Some(jwt) => {
                let tokens = Arc::new(Tokens::new(jwt, metrics.clone()).await?);
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
            metrics.clone(),
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
                metrics.clone(),
            ),
            lookups: Default::default(),
            metrics,
        });
        Ok(Self {
            shared,
            listeners: settings.listeners,
            workers: None,
        })
    }

    /// Runs sessions on `workers` (thread-per-core runtimes) instead of the runtime that
    /// calls [`Proxy::serve`]; the accept loops stay on the caller's runtime.
    pub fn with_workers(mut self, workers: Workers) -> Self {
        self.workers = Some(Arc::new(workers));
        self
    }

    /// The process's metrics and readiness state (for the metrics endpoint).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Refreshes the token keys now (SIGHUP).
    pub async fn refresh_keys(&self) {
        if let Some(tokens) = &self.shared.tokens {
            tokens.refresh().await;
        }
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

    /// Serves the bound listeners until `shutdown` completes. Sessions in progress keep their
    /// own tasks.
    pub async fn serve(
        &self,
        bound: Vec<(TcpListener, Listener)>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut tasks = Vec::new();
        for (socket, listener) in bound {
            let ctx = Arc::new(ListenerContext::new(
                self.shared.clone(),
                &listener,
                ConnectionLimiter::new(listener.limits),
            ));
            tasks.push(tokio::spawn(accept_loop(socket, ctx, self.workers.clone())));
        }
        self.shared.metrics.readiness.set_listening();
        shutdown.await;
        for task in tasks {
            task.abort();
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
