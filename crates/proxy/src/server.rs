//! [`Proxy`]: settings turned into listeners that accept, limit, authenticate, route and relay.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpListener;

use crate::backend::Connector;
use crate::cancel::CancelRegistry;
use crate::kdf::Kdf;
use crate::listeners::RunningListeners;
use crate::pool::Caps;
use crate::pools::Pools;
use crate::settings::{Listener, Settings};
use crate::shared::{Lasting, Shared};
use crate::swap::Swap;
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

/// The configuration in force: the settings it came from and what its connections share.
pub(crate) struct InForce {
    /// As loaded (a reload compares the next ones with them).
    pub(crate) settings: Settings,
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
}

impl Proxy {
    /// Builds the proxy (loads token keys).
    pub async fn new(settings: Settings) -> Result<Self, ProxyError> {
        let kdf = Kdf::start().map_err(ProxyError::Threads)?;
        let connector = Arc::new(Connector::new(
            settings.dir.clone(),
            kdf.clone(),
            settings.max_scram_iterations,
        ));
        let lasting = Arc::new(Lasting {
            cancel: Arc::new(CancelRegistry::default()),
            connector: connector.clone(),
            pools: Pools::new(
                connector,
                Caps::new(
                    settings.pools.max_db_connections,
                    settings.pools.max_user_connections,
                ),
            ),
            kdf,
        });
        let tokens = match &settings.jwt {
            Some(jwt) => Some(start_tokens(jwt).await?),
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

    /// Binds every listener.
    pub async fn bind(&self) -> Result<Vec<(TcpListener, Listener)>, ProxyError> {
        let mut bound = Vec::new();
        for listener in &self.in_force.load().settings.listeners {
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

    /// Serves the bound listeners until `shutdown` completes; reloads meanwhile open, update
    /// and close listeners. Sessions in progress keep their own tasks.
    pub async fn serve(
        &self,
        bound: Vec<(TcpListener, Listener)>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut running =
            RunningListeners::new(tokio::runtime::Handle::current(), self.workers.clone());
        let shared = self.in_force.load().shared.clone();
        for (socket, listener) in bound {
            running.start(socket, &listener, shared.clone());
        }
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some(running);
        shutdown.await;
        if let Some(mut running) = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            running.close_all();
        }
    }
}

/// Loads the token keys of `jwt` and starts their periodic refresh.
pub(crate) async fn start_tokens(
    jwt: &crate::settings::Jwt,
) -> Result<Arc<Tokens>, pgbastion_jwt::JwtError> {
    let tokens = Arc::new(Tokens::new(jwt).await?);
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
        lasting,
    }
}
