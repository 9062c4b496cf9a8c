//! [`Proxy::reload`]: the configuration file read again, checked whole and put in force
//! atomically, without dropping anyone.
//!
//! What a reload replaces: routes, users, `[jwt]` (token keys rebuilt when its settings
//! changed, refreshed otherwise), listeners (TLS certificates and keys included) and the
//! pool settings of routes. What it keeps: the cancel registry, the pools of unchanged
//! routes, the key derivation threads and the backend connector. Sessions in progress keep
//! the configuration they started with to their end.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};

use tokio::net::TcpListener;

use crate::config::ConfigError;
use crate::listeners::ListenerChanges;
use crate::server::{shared_for, start_tokens, InForce, Proxy};
use crate::settings::Settings;
use crate::tokens::Tokens;

/// Why a reload was refused; the configuration in force stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy was not given the file its settings came from.
    #[error("no configuration file to reload (the proxy was built from settings in code)")]
    NoConfigFile,
    /// The new file is not a valid configuration (the message names the file and line).
    #[error("configuration refused, the old one stays in force: {0}")]
    Config(#[from] ConfigError),
    /// The new `[jwt]` keys cannot be loaded.
    #[error("configuration {path} refused, the old one stays in force: cannot load the new [jwt] keys: {source}")]
    Tokens {
        /// The file.
        path: PathBuf,
        /// Why.
        source: pgbastion_jwt::JwtError,
    },
    /// A new listener cannot bind.
    #[error("configuration {path} refused, the old one stays in force: cannot listen on {address}: {source}")]
    Bind {
        /// The file.
        path: PathBuf,
        /// The new listener's address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What a reload did with the token keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKeys {
    /// No `[jwt]` before or after.
    Unconfigured,
    /// `[jwt]` unchanged: the keys in force, refreshed now.
    Refreshed,
    /// `[jwt]` changed (added, removed or edited): keys loaded from the new settings.
    Rebuilt,
}

impl TokenKeys {
    /// How the summary line says it.
    fn as_str(self) -> &'static str {
        match self {
            Self::Unconfigured => "none",
            Self::Refreshed => "refreshed",
            Self::Rebuilt => "rebuilt",
        }
    }
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Routes before and after.
    pub routes: (usize, usize),
    /// Local users before and after.
    pub users: (usize, usize),
    /// Listeners opened, closed and kept.
    pub listeners: ListenerChanges,
    /// What became of the token keys.
    pub token_keys: TokenKeys,
    /// Pools let go because their route was removed or changed.
    pub pools_released: usize,
    /// Settings that changed but take effect only at the next start.
    pub needs_restart: Vec<&'static str>,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.listeners;
        write!(
            f,
            "routes {} -> {}, users {} -> {}, listeners opened {} closed {} kept {}, \
             token keys {}, pools released {}",
            self.routes.0,
            self.routes.1,
            self.users.0,
            self.users.1,
            l.opened,
            l.closed,
            l.kept,
            self.token_keys.as_str(),
            self.pools_released,
        )
    }
}

impl Proxy {
    /// Reads the configuration file again, checks it whole (as at start) and puts it in force
    /// for new connections; sessions in progress keep theirs. On any error nothing changes.
    /// Logs one line with the outcome (SIGHUP and the admin console both call this).
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let result = self.reload_file().await;
        report(&result);
        self.lasting
            .metrics
            .reloaded(crate::metrics::Outcome::of(result.is_ok()));
        result
    }

    async fn reload_file(&self) -> Result<ReloadSummary, ReloadError> {
        let path = self.config_file.clone().ok_or(ReloadError::NoConfigFile)?;
        let _one_at_a_time = self.reloading.lock().await;
        let settings = Arc::new(Settings::load(&path)?);
        let old = self.in_force.load();
        let (tokens, token_keys) =
            self.tokens_for(&settings, &old)
                .await
                .map_err(|source| ReloadError::Tokens {
                    path: path.clone(),
                    source,
                })?;
        let bound = self
            .bind_new(&settings)
            .await
            .map_err(|(address, source)| ReloadError::Bind {
                path: path.clone(),
                address,
                source,
            })?;
        let shared = Arc::new(shared_for(&settings, tokens, self.lasting.clone()));
        let in_force = Arc::new(InForce { settings, shared });
        // The pools learn the new routes first, so that no new client makes a pool of a
        // route in force that is not kept.
        // Backend certificates and keys may have been replaced in place.
        self.lasting.connector.reread_tls_files();
        let retired = self.lasting.pools.retain_routes(&in_force.settings.routes);
        let pools_released = retired.len();
        // Their idle connections close now; the sessions that hold them go on with them.
        tokio::spawn(async move {
            for pool in retired {
                pool.pool().retire().await;
            }
        });
        self.in_force.store(in_force.clone());
        self.lasting.settings.store(in_force.settings.clone());
        let settings = &in_force.settings;
        self.lasting
            .metrics
            .readiness
            .set_backends_of(&settings.routes);
        let listeners = match &mut *self.running.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(running) => running.update(&settings.listeners, bound, &in_force.shared),
            None => ListenerChanges::default(),
        };
        Ok(ReloadSummary {
            routes: (old.settings.routes.0.len(), settings.routes.0.len()),
            users: (old.settings.users.len(), settings.users.len()),
            listeners,
            token_keys,
            pools_released,
            needs_restart: needs_restart(&old.settings, settings),
        })
    }

    /// The token keys of the new settings: the ones in force, refreshed, when `[jwt]` is
    /// unchanged; new ones when it changed.
    async fn tokens_for(
        &self,
        settings: &Settings,
        old: &InForce,
    ) -> Result<(Option<Arc<Tokens>>, TokenKeys), pgbastion_jwt::JwtError> {
        if settings.jwt == old.settings.jwt {
            let Some(tokens) = &old.shared.tokens else {
                return Ok((None, TokenKeys::Unconfigured));
            };
            tokens.refresh().await;
            return Ok((Some(tokens.clone()), TokenKeys::Refreshed));
        }
        let tokens = match &settings.jwt {
            Some(jwt) => Some(start_tokens(jwt, self.lasting.metrics.clone()).await?),
            None => None,
        };
        Ok((tokens, TokenKeys::Rebuilt))
    }

    /// Binds the listeners of `settings` that are not served yet, on the accept loops'
    /// runtime. Nothing is bound before [`Proxy::serve`] runs: its caller binds them all.
    async fn bind_new(
        &self,
        settings: &Settings,
    ) -> Result<HashMap<SocketAddr, TcpListener>, (SocketAddr, std::io::Error)> {
        let (runtime, new): (_, Vec<SocketAddr>) = {
            let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(running) = running.as_ref() else {
                return Ok(HashMap::new());
            };
            let new = settings
                .listeners
                .iter()
                .map(|l| l.address)
                .filter(|address| !running.serves(*address))
                .collect();
            (running.runtime().clone(), new)
        };
        let mut bound = HashMap::new();
        for address in new {
            let socket = runtime
                .spawn(TcpListener::bind(address))
                .await
                .map_err(|e| (address, std::io::Error::other(e)))?
                .map_err(|e| (address, e))?;
            bound.insert(address, socket);
        }
        Ok(bound)
    }
}

/// The settings that changed but are read only at start.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut names = Vec::new();
    if old.pools != new.pools {
        names.push("[pools]");
    }
    if old.max_scram_iterations != new.max_scram_iterations {
        names.push("max_scram_iterations");
    }
    if old.log != new.log {
        names.push("[log]");
    }
    if old.pid_file != new.pid_file {
        names.push("pid_file");
    }
    if old.upgrade_settle != new.upgrade_settle {
        names.push("upgrade_settle");
    }
    if old.metrics_address != new.metrics_address {
        names.push("[metrics]");
    }
    if old.audit != new.audit {
        names.push("[audit]");
    }
    names
}

/// The one log line of a reload. (The place to count reloads by result.)
fn report(result: &Result<ReloadSummary, ReloadError>) {
    match result {
        Ok(summary) => {
            tracing::info!("configuration reloaded: {summary}");
            if !summary.needs_restart.is_empty() {
                tracing::warn!(
                    "changed settings that take effect only at restart (the old values stay): {}",
                    summary.needs_restart.join(", ")
                );
            }
        }
        // One line, whatever the message holds (some suggest a snippet of TOML).
        Err(error) => tracing::error!("{}", error.to_string().replace('\n', " ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceFile;

    fn settings(text: &str) -> Settings {
        Settings::from_source(&SourceFile {
            path: PathBuf::from("/etc/pgbastion/pgbastion.toml"),
            text: text.to_owned(),
        })
        .unwrap()
    }

    const APP: &str = "[[route]]\nmatch = { database = \"app\" }\nauth = \"trust\"\n\
                       backend = \"postgres://app:pw1@127.0.0.1:5432/app\"\n";

    #[test]
    fn a_route_is_the_same_wherever_it_stands_and_not_once_anything_of_it_changed() {
        let first = settings(APP);
        let other = "[[route]]\nmatch = { database = \"other\" }\nauth = \"trust\"\n\
                     backend = \"postgres://127.0.0.1:5432/other\"\n";
        let moved = settings(&format!("{other}{APP}"));
        assert_eq!(moved.routes.0[1].number, 2);
        assert!(moved.routes.0[1].same_as(&first.routes.0[0]));
        assert!(!moved.routes.0[0].same_as(&first.routes.0[0]));
        for changed in [
            APP.replace("pw1", "pw2"),
            APP.replace("\"app\" }", "\"/app|apps/\" }"),
            format!("{APP}pool = {{ mode = \"session\", size = 2 }}\n"),
        ] {
            let changed = settings(&changed);
            assert!(
                !changed.routes.0[0].same_as(&first.routes.0[0]),
                "{changed:?}"
            );
        }
        let regex = settings(&APP.replace("\"app\" }", "\"/app|apps/\" }"));
        let again = settings(&APP.replace("\"app\" }", "\"/app|apps/\" }"));
        assert!(regex.routes.0[0].same_as(&again.routes.0[0]));
    }

    #[test]
    fn settings_read_only_at_start_are_named_when_a_reload_changes_them() {
        let old = settings(APP);
        assert!(needs_restart(&old, &settings(APP)).is_empty());
        let new = settings(&format!(
            "max_scram_iterations = 5000\n{APP}[pools]\nmax_db_connections = 3\n[log]\nformat = \"json\"\n\
             [audit]\ndestination = \"stdout\"\n"
        ));
        assert_eq!(
            needs_restart(&old, &new),
            ["[pools]", "max_scram_iterations", "[log]", "[audit]"]
        );
    }

    #[test]
    fn a_reload_summary_reads_as_one_line() {
        let summary = ReloadSummary {
            routes: (1, 2),
            users: (0, 1),
            listeners: ListenerChanges {
                opened: 1,
                closed: 0,
                kept: 1,
            },
            token_keys: TokenKeys::Refreshed,
            pools_released: 0,
            needs_restart: Vec::new(),
        };
        assert_eq!(
            summary.to_string(),
            "routes 1 -> 2, users 0 -> 1, listeners opened 1 closed 0 kept 1, token keys \
             refreshed, pools released 0"
        );
    }
}
