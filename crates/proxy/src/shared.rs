//! [`Shared`]: what every connection of the proxy shares.

use std::sync::Arc;

use crate::auth_query::Lookups;
use crate::backend::Connector;
use crate::cancel::CancelRegistry;
use crate::metrics::Metrics;
use crate::pools::Pools;
use crate::route::Routes;
use crate::tokens::Tokens;
use crate::users::Users;

/// What every connection of the proxy shares.
pub struct Shared {
    /// Routes in order.
    pub routes: Routes,
    /// Local users.
    pub users: Users,
    /// Token verification (`[jwt]`).
    pub tokens: Option<Arc<Tokens>>,
    /// The issuer advertised to OAUTHBEARER clients.
    pub oauth_issuer: String,
    /// The scope advertised to OAUTHBEARER clients.
    pub oauth_scope: String,
    /// Minted cancel keys.
    pub cancel: Arc<CancelRegistry>,
    /// Backend logins (TLS configurations, SCRAM key cache).
    pub connector: Arc<Connector>,
    /// The pools of pooled routes, made as clients first need them.
    pub pools: Pools,
    /// auth_query verifier lookups (kept connections, remembered answers).
    pub lookups: Lookups,
    /// The process's metrics (they outlive a configuration: carry them to the next one).
    pub metrics: Arc<Metrics>,
}
