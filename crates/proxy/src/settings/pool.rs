//! A route's `pool = { … }`, checked and compiled into a [`RoutePool`].

use std::time::Duration;

use crate::backend_reset::DEFAULT_RESET;
use crate::config::{AuthMode, ConfigError, PoolConfig, RouteConfig};
use crate::pool::PoolSettings;
use crate::route::RoutePool;
use toml::Spanned;

use super::Compiler;

/// Prepared statements a backend keeps by default (transaction mode).
pub const DEFAULT_STATEMENTS_PER_BACKEND: usize = 256;
/// Prepared statements a client may hold by default (transaction mode).
pub const DEFAULT_STATEMENTS_PER_CLIENT: usize = 1000;

impl Compiler<'_> {
    /// The route's pool, with unset keys at [`PoolSettings::default`]: `size` at least 1,
    /// `min_idle` at most `size`, a checkout timeout, and never on a passthrough route.
    pub(super) fn route_pool(&self, r: &RouteConfig) -> Result<Option<RoutePool>, ConfigError> {
        let Some(table) = &r.pool else {
            return Ok(None);
        };
        if *r.auth.get_ref() == AuthMode::Passthrough {
            return self.error(
                table.span(),
                "pool: a route with auth = \"passthrough\" cannot be pooled: pgbastion does \
                 not check those passwords itself, the backend does at each login, and a \
                 pooled client gets a backend connection that is already logged in; use \
                 auth = \"scram\" with auth_query = { … } to check clients against the \
                 backend's own verifiers, or remove pool",
            );
        }
        let pool = table.get_ref();
        let settings = self.pool_settings(pool, table.span())?;
        let reset = match &pool.reset {
            None => Some(DEFAULT_RESET.to_owned()),
            Some(sql) if sql.trim().is_empty() => None,
            Some(sql) if sql.contains('\0') => {
                return self.error(table.span(), "pool.reset must not contain a NUL character")
            }
            Some(sql) => Some(sql.clone()),
        };
        let at_least_one = |value: &Option<Spanned<usize>>, default: usize, key: &str| match value {
            None => Ok(default),
            Some(given) if *given.get_ref() == 0 => {
                self.error(given.span(), format!("pool.{key} must be at least 1"))
            }
            Some(given) => Ok(*given.get_ref()),
        };
        Ok(Some(RoutePool {
            mode: pool.mode,
            session_state: pool.session_state,
            reset,
            settings,
            statements_per_backend: at_least_one(
                &pool.statements_per_backend,
                DEFAULT_STATEMENTS_PER_BACKEND,
                "statements_per_backend",
            )?,
            statements_per_client: at_least_one(
                &pool.statements_per_client,
                DEFAULT_STATEMENTS_PER_CLIENT,
                "statements_per_client",
            )?,
            cache_unnamed: pool.cache_unnamed,
        }))
    }

    fn pool_settings(
        &self,
        pool: &PoolConfig,
        span: std::ops::Range<usize>,
    ) -> Result<PoolSettings, ConfigError> {
        let defaults = PoolSettings::default();
        let size = pool.size.as_ref().map_or(defaults.size, |s| *s.get_ref());
        if let Some(given) = pool.size.as_ref().filter(|_| size == 0) {
            return self.error(given.span(), "pool.size must be at least 1");
        }
        let min_idle = pool
            .min_idle
            .as_ref()
            .map_or(defaults.min_idle, |m| *m.get_ref());
        if let Some(given) = pool.min_idle.as_ref().filter(|_| min_idle > size) {
            return self.error(
                given.span(),
                format!("pool.min_idle ({min_idle}) must be at most pool.size ({size})"),
            );
        }
        let checkout_timeout = pool.checkout_timeout.unwrap_or(defaults.checkout_timeout);
        if checkout_timeout.is_zero() {
            return self.error(
                span,
                "pool.checkout_timeout must be more than 0s (how long a client may wait for a \
                 backend connection before it is refused with 53300)",
            );
        }
        let never_if_zero = |d: Duration| Some(d).filter(|d| !d.is_zero());
        Ok(PoolSettings {
            size,
            min_idle,
            max_lifetime: pool
                .max_lifetime
                .map_or(defaults.max_lifetime, never_if_zero),
            idle_timeout: pool
                .idle_timeout
                .map_or(defaults.idle_timeout, never_if_zero),
            checkout_timeout,
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::compile;
    use super::*;
    use crate::config::{ListenerMode, PoolMode, PoolsConfig, SessionStatePolicy};
    use crate::Settings;

    /// A file whose only route (on line 1) has `pool = { … }` with `keys`, after `before`.
    fn with_pool(before: &str, auth: &str, keys: &str) -> String {
        format!(
            "[[route]]\nauth = \"{auth}\"\ninsecure = true\nbackend = \"postgres://h/db\"\n\
             pool = {{ {keys} }}\n{before}"
        )
    }

    fn pooled(keys: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        compile(dir.path(), &with_pool("", "trust", keys))
    }

    fn refusal(keys: &str) -> String {
        pooled(keys).unwrap_err().to_string()
    }

    fn route_pool(keys: &str) -> RoutePool {
        let settings = pooled(keys).unwrap_or_else(|e| panic!("{keys}: {e}"));
        settings.routes.0[0].pool.clone().unwrap()
    }

    #[test]
    fn a_pool_with_only_a_mode_takes_the_documented_defaults() {
        let pool = route_pool("mode = \"session\"");
        assert_eq!(
            pool,
            RoutePool {
                mode: PoolMode::Session,
                session_state: SessionStatePolicy::Pin,
                reset: Some("DISCARD ALL".to_owned()),
                settings: PoolSettings {
                    size: 20,
                    min_idle: 0,
                    max_lifetime: Some(Duration::from_secs(3600)),
                    idle_timeout: Some(Duration::from_secs(600)),
                    checkout_timeout: Duration::from_secs(10),
                    ..PoolSettings::default()
                },
                statements_per_backend: 256,
                statements_per_client: 1000,
                cache_unnamed: false,
            }
        );
    }

    #[test]
    fn every_pool_key_is_read() {
        let pool = route_pool(
            "mode = \"transaction\", size = 4, min_idle = 2, max_lifetime = \"30m\", \
             idle_timeout = \"90s\", checkout_timeout = \"2500ms\", \
             reset = \"RESET ALL\", session_state = \"refuse\", statements_per_backend = 8, \
             statements_per_client = 9, cache_unnamed = true",
        );
        assert_eq!(
            (pool.statements_per_backend, pool.statements_per_client),
            (8, 9)
        );
        assert!(pool.cache_unnamed);
        assert_eq!(pool.mode, PoolMode::Transaction);
        assert_eq!(pool.session_state, SessionStatePolicy::Refuse);
        assert_eq!(pool.reset.as_deref(), Some("RESET ALL"));
        let s = pool.settings;
        assert_eq!((s.size, s.min_idle), (4, 2));
        assert_eq!(s.max_lifetime, Some(Duration::from_secs(1800)));
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(90)));
        assert_eq!(s.checkout_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn zero_lifetimes_and_an_empty_reset_turn_them_off() {
        let pool = route_pool(
            "mode = \"session\", max_lifetime = \"0s\", idle_timeout = \"0s\", reset = \"\"",
        );
        assert_eq!(pool.settings.max_lifetime, None);
        assert_eq!(pool.settings.idle_timeout, None);
        assert_eq!(pool.reset, None);
    }

    #[test]
    fn routes_without_pool_and_listeners_without_mode_stay_transparent() {
        let dir = tempfile::tempdir().unwrap();
        let route = "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n";
        let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\n\n";
        let settings = compile(dir.path(), &format!("{listener}{route}")).unwrap();
        assert!(settings.routes.0[0].pool.is_none());
        assert_eq!(settings.listeners[0].mode, ListenerMode::Transparent);
        assert_eq!(settings.pools, PoolsConfig::default());
        let default_listener = compile(dir.path(), route).unwrap();
        assert_eq!(
            default_listener.listeners[0].mode,
            ListenerMode::Transparent
        );
    }

    #[test]
    fn a_pooled_listener_and_the_pools_caps_are_read() {
        let dir = tempfile::tempdir().unwrap();
        // Valid even though no route has a pool: its clients are then served transparently.
        let text = "[pools]\nmax_db_connections = 50\nmax_user_connections = 30\n\n\
                    [[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"pooled\"\n\n\
                    [[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n";
        let settings = compile(dir.path(), text).unwrap();
        assert_eq!(settings.listeners[0].mode, ListenerMode::Pooled);
        assert_eq!(
            settings.pools,
            PoolsConfig {
                max_db_connections: 50,
                max_user_connections: 30,
            }
        );
    }

    #[test]
    fn out_of_range_pool_values_are_refused_with_key_and_line() {
        for (keys, message) in [
            (
                "mode = \"session\", size = 0",
                "pool.size must be at least 1",
            ),
            (
                "mode = \"session\", size = 3, min_idle = 4",
                "pool.min_idle (4) must be at most pool.size (3)",
            ),
            (
                "mode = \"session\", min_idle = 21",
                "pool.min_idle (21) must be at most pool.size (20)",
            ),
            (
                "mode = \"session\", checkout_timeout = \"0s\"",
                "pool.checkout_timeout must be more than 0s",
            ),
        ] {
            let error = refusal(keys);
            assert!(
                error.contains(&format!("pgbastion.toml:5: {message}")),
                "{keys}: {error}"
            );
        }
    }

    #[test]
    fn malformed_pool_keys_are_refused_with_their_line() {
        for (keys, words) in [
            ("size = 4", "missing field `mode`"),
            ("mode = \"statement\"", "unknown variant `statement`"),
            (
                "mode = \"session\", session_state = \"maybe\"",
                "unknown variant `maybe`",
            ),
            ("mode = \"session\", size = -1", "invalid value"),
            (
                "mode = \"session\", idle_timeout = \"soon\"",
                "invalid duration \"soon\"",
            ),
            (
                "mode = \"session\", max_size = 4",
                "unknown field `max_size`",
            ),
        ] {
            let error = refusal(keys);
            assert!(
                error.contains("pgbastion.toml:5") && error.contains(words),
                "{keys}: {error}"
            );
        }
    }

    #[test]
    fn a_pool_on_a_passthrough_route_is_refused_with_a_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let text = with_pool("", "passthrough", "mode = \"transaction\"");
        let error = compile(dir.path(), &text).unwrap_err().to_string();
        assert!(
            error.contains("pgbastion.toml:5: pool: a route with auth = \"passthrough\"")
                && error.contains("auth_query"),
            "{error}"
        );
    }

    #[test]
    fn unknown_listener_modes_and_pools_keys_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let route = "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n";
        for (text, line, words) in [
            (
                format!("[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"session\"\n{route}"),
                3,
                "unknown variant `session`",
            ),
            (
                format!("[pools]\nmax_server_connections = 5\n{route}"),
                2,
                "unknown field `max_server_connections`",
            ),
            (
                format!("[pools]\nmax_db_connections = -5\n{route}"),
                2,
                "invalid value",
            ),
        ] {
            let error = compile(dir.path(), &text).unwrap_err().to_string();
            assert!(
                error.contains(&format!("pgbastion.toml:{line}")) && error.contains(words),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn a_session_switch_needs_a_pooled_listener_and_known_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let route = "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n";
        let listener = |mode: &str, statement: &str| {
            format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"{mode}\"\n\
                 session_switch = {{ statement = \"{statement}\", key = \"k\" }}\n{route}"
            )
        };
        let good = compile(
            dir.path(),
            &listener("pooled", "SELECT set_config('a.b', $1, false)"),
        );
        assert!(good.unwrap().listeners[0].session_switch.is_some());
        for (text, words) in [
            (listener("transparent", "SELECT $1"), "pgbastion.toml:4: session_switch needs mode = \"pooled\""),
            (listener("pooled", "SELECT $8"), "pgbastion.toml:4: session_switch.statement: the session switch statement must use placeholders $1 to $7 (it uses $8)"),
        ] {
            let error = compile(dir.path(), &text).unwrap_err().to_string();
            assert!(error.contains(words), "{error}");
        }
    }
}
