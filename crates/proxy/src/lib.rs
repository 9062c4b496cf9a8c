//! pgbastion's proxy engine: the configuration model, routing, the backend connector, the
//! relay, cancel forwarding, limits and reloads. The `pgbastion` binary is a thin shell around
//! [`Proxy`].

pub mod admin;
pub mod admission;
pub mod audit;
pub mod auth_query;
pub mod backend;
pub mod backend_reset;
pub mod backend_socket;
pub mod cancel;
pub mod clients;
pub mod config;
pub mod dormant;
pub mod drain;
pub mod external;
pub mod greeting;
pub mod handover;
pub mod hooks;
pub mod kdf;
pub mod limits;
pub mod listeners;
pub mod login;
pub mod login_plan;
pub mod metrics;
pub mod multiplex;
pub mod observed;
pub mod pool;
pub mod pooled_client;
pub mod pooled_session;
pub mod pools;
pub mod refusal;
pub mod relay;
pub mod reload;
pub mod route;
pub mod secret;
pub mod server;
pub mod session;
pub mod session_switch;
pub mod settings;
pub mod shared;
pub mod sql_scan;
pub mod swap;
pub mod target;
pub mod template;
pub mod tls_client;
pub mod tokens;
pub mod users;
pub mod warn_limit;
pub mod workers;

pub use config::ConfigError;
pub use metrics::Metrics;
pub use reload::{ReloadError, ReloadSummary, TokenKeys};
pub use server::{Proxy, ProxyError};
pub use settings::Settings;
pub use workers::Workers;
