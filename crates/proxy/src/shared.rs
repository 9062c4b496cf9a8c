//! [`Shared`]: what every connection of the proxy shares. One configuration's part
//! ([`Shared`] itself: routes, users, token keys) is replaced as a whole by a reload; the
//! process-lifetime part ([`Lasting`]) is made once at start and carried across reloads.

use std::sync::Arc;

use crate::admin::control::Control;
use crate::admin::settings::Admin;
use crate::audit::AuditLog;
use crate::auth_query::Lookups;
use crate::backend::Connector;
use crate::cancel::CancelRegistry;
use crate::clients::{ClientIds, Clients};
use crate::kdf::Kdf;
use crate::metrics::Metrics;
use crate::pools::Pools;
use crate::route::Routes;
use crate::settings::Settings;
use crate::swap::Swap;
use crate::tokens::Tokens;
use crate::users::Users;

/// What lives as long as the process, whatever the reloads: sessions of every configuration
/// share it.
pub struct Lasting {
    /// Minted cancel keys: a session opened before a reload stays cancellable after it.
    pub cancel: Arc<CancelRegistry>,
    /// Client connection IDs, unique for the life of the process.
    pub client_ids: ClientIds,
    /// The sessions open now (the admin console lists and ends them).
    pub clients: Arc<Clients>,
    /// Requests of admin console sessions to the proxy.
    pub control: Control,
    /// The settings in force (a reload replaces them; the admin console's SHOW reads them).
    pub settings: Swap<Settings>,
    /// Backend logins (TLS configurations, SCRAM key cache).
    pub connector: Arc<Connector>,
    /// The pools of pooled routes, made as clients first need them; a reload keeps those of
    /// unchanged routes ([`Pools::retain_routes`]).
    pub pools: Pools,
    /// The key derivation threads (users' SCRAM verifiers of every configuration use them).
    pub kdf: Kdf,
    /// The process's metrics: counters and gauges go on across reloads.
    pub metrics: Arc<Metrics>,
    /// The query audit log, when `[audit]` is on (read at start only).
    pub audit: Option<Arc<AuditLog>>,
}

/// What every connection of one configuration shares. A session holds the `Arc<Shared>` of
/// the configuration it started with to its end.
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
    /// auth_query verifier lookups (kept connections, remembered answers) of these routes.
    pub lookups: Lookups,
    /// `[admin]`: who may open the admin console.
    pub admin: Option<Admin>,
    /// The process-lifetime state.
    pub lasting: Arc<Lasting>,
}
