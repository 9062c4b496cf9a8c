//! The configuration file: its TOML shape, and loading with errors that name the key and line.
//!
//! [`load`] parses and checks everything that can be checked without a client: addresses,
//! CIDRs, regexes, backend URLs (with placeholders), certificate files, the TLS rule for routes
//! that receive secrets in clear. docs/configuration.md documents every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Why a configuration was refused. The message names the key and, where known, the line.
#[derive(Debug, thiserror::Error)]
#[error("{path}{location}: {message}")]
pub struct ConfigError {
    path: String,
    location: String,
    message: String,
}

impl ConfigError {
    /// An error at byte `span` of the file (line and column are computed from it).
    pub(crate) fn at(
        file: &SourceFile,
        span: Option<std::ops::Range<usize>>,
        message: String,
    ) -> Self {
        let location = span
            .map(|span| {
                let before = &file.text[..span.start.min(file.text.len())];
                let line = before.matches('\n').count() + 1;
                format!(":{line}")
            })
            .unwrap_or_default();
        Self {
            path: file.path.display().to_string(),
            location,
            message,
        }
    }

    /// The message without the file and line.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A configuration file's name and text (for error positions and relative paths).
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its contents.
    pub text: String,
}

impl SourceFile {
    /// Resolves a path from the file relative to the file's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.dir().join(path)
        }
    }

    /// The file's directory, where relative paths start.
    pub fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[[listener]]`: where clients connect. Default: one on 127.0.0.1:6432.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// `[[user]]`: the local user list for password modes.
    #[serde(default, rename = "user")]
    pub users: Vec<UserConfig>,
    /// `[jwt]`: token validation for `jwt` and `oauth` routes (spanned: errors about the
    /// table as a whole name its line).
    pub jwt: Option<Spanned<JwtConfig>>,
    /// `[[route]]`: where each client goes; the first match wins.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// The most PBKDF2 iterations a backend may ask for in SCRAM (a backend asking for more
    /// is refused before any are run).
    #[serde(default = "default_max_scram_iterations")]
    pub max_scram_iterations: Spanned<u32>,
    /// `[pools]`: limits across every pool.
    #[serde(default)]
    pub pools: PoolsConfig,
    /// Where pgbastion writes its process ID once it listens (relative to the file's
    /// directory); removed at a clean exit.
    pub pid_file: Option<PathBuf>,
    /// How long SIGTERM lets a client inside a transaction finish (a humantime duration,
    /// checked in [`crate::Settings::load`] so that an error names its line).
    pub grace_period: Option<Spanned<String>>,
    /// How long, in an upgrade, the sessions the old process accepted last get before its
    /// drain starts (a humantime duration, checked like `grace_period`).
    pub upgrade_settle: Option<Spanned<String>>,
    /// `[metrics]`: the Prometheus and health endpoint (none without it).
    pub metrics: Option<MetricsConfig>,
    /// `[audit]`: the query audit (off without it).
    pub audit: Option<Spanned<crate::audit::AuditConfig>>,
    /// `[admin]`: the admin console (none without it).
    pub admin: Option<crate::admin::settings::AdminConfig>,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` of the HTTP endpoint (`/metrics`, `/vars`, `/health`, `/ready`).
    pub address: Spanned<String>,
}

fn default_max_scram_iterations() -> Spanned<u32> {
    Spanned::new(0..0, 100_000)
}

/// `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `host:port` to listen on.
    pub address: Spanned<String>,
    /// PROXY protocol policy: `off`, `optional` or `required`.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// Networks (CIDR or address) allowed to send a PROXY header.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// TLS termination.
    pub tls: Option<TlsConfig>,
    /// Refuse clients that do not use TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Most client connections at once (further ones get 53300).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections at once from one client address (0: no limit).
    #[serde(default)]
    pub max_connections_per_ip: usize,
    /// New connections per second allowed from one client address, with bursts up to the
    /// same number (0: no limit).
    #[serde(default)]
    pub connection_rate_per_ip: u32,
    /// Cancel requests per second allowed from one client address.
    #[serde(default = "default_cancel_rate")]
    pub cancel_rate_per_ip: u32,
    /// Time from connect to the StartupMessage (PROXY header and TLS handshake included).
    #[serde(default = "default_startup_timeout", with = "humantime_serde_compat")]
    pub startup_timeout: Duration,
    /// Time from connect to the end of authentication.
    #[serde(default = "default_auth_timeout", with = "humantime_serde_compat")]
    pub auth_timeout: Duration,
    /// Whether clients of this listener are served through their route's pool.
    #[serde(default)]
    pub mode: ListenerMode,
    /// On a pooled listener: the statement that tells each checked-out backend who the
    /// client is.
    pub session_switch: Option<Spanned<SessionSwitchConfig>>,
}

/// `session_switch = { statement = "…", key = "…" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSwitchConfig {
    /// The statement, with placeholders `$1` … `$7` (see docs/pooling.md).
    pub statement: String,
    /// The HMAC key signing the values (`${ENV}` allowed).
    pub key: Spanned<String>,
}

/// What a listener does with routes that have a `pool`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Every client gets a backend connection of its own, whatever its route's `pool` says.
    #[default]
    Transparent,
    /// Clients of routes with a `pool` are served through it (others as on a transparent
    /// listener).
    Pooled,
}

fn default_startup_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_connections() -> usize {
    10_000
}

fn default_cancel_rate() -> u32 {
    10
}

fn default_auth_timeout() -> Duration {
    Duration::from_secs(60)
}

/// The PROXY protocol policy of a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// No header expected; a header is a protocol error.
    #[default]
    Off,
    /// A header is accepted from trusted peers.
    Optional,
    /// Every connection must start with a header from a trusted peer.
    Required,
}

/// `tls = { ... }` of a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM), relative to the configuration file.
    pub cert: Spanned<String>,
    /// Private key (PEM).
    pub key: Spanned<String>,
    /// CA for client certificates; when set, clients may present one.
    pub client_ca: Option<Spanned<String>>,
    /// Certificates for particular SNI names (`*.example.com` wildcards: one or more labels).
    #[serde(default)]
    pub sni: Vec<SniCertConfig>,
}

/// One entry of `tls.sni`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertConfig {
    /// The SNI name or `*.suffix` wildcard pattern.
    pub name: Spanned<String>,
    /// Certificate chain (PEM).
    pub cert: Spanned<String>,
    /// Private key (PEM).
    pub key: Spanned<String>,
}

/// `[[user]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user name clients log in with.
    pub name: String,
    /// A SCRAM-SHA-256 verifier, an md5 hash (`md5` + 32 hex digits) or plaintext.
    pub password: Spanned<String>,
}

/// `[jwt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// OIDC discovery document URL (its `jwks_uri` gives the keys).
    pub oidc_discovery: Option<Spanned<String>>,
    /// JWKS URL.
    pub jwks_url: Option<Spanned<String>>,
    /// PEM public key files.
    #[serde(default)]
    pub keys: Vec<Spanned<String>>,
    /// PEM CA certificates trusted (instead of the public roots) for the discovery and JWKS
    /// servers, relative to the configuration file.
    pub ca_file: Option<Spanned<String>>,
    /// Allows `http://` discovery and JWKS URLs (refused otherwise: over plain HTTP anyone
    /// on the path can substitute the signing keys).
    #[serde(default)]
    pub insecure: bool,
    /// The claim that names the user (compared with the startup user).
    #[serde(default = "default_claim")]
    pub claim: String,
    /// How often keys are reloaded.
    #[serde(default = "default_refresh", with = "humantime_serde_compat")]
    pub refresh: Duration,
    /// Clock skew allowed for `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde_compat")]
    pub leeway: Duration,
    /// The OAUTHBEARER scope advertised to clients (`oauth` routes).
    #[serde(default = "default_scope")]
    pub scope: String,
}

fn default_claim() -> String {
    "sub".to_owned()
}

fn default_refresh() -> Duration {
    Duration::from_secs(3600)
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_scope() -> String {
    "openid".to_owned()
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// What the connection must look like; an empty match takes everything.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// How clients of this route authenticate.
    pub auth: Spanned<AuthMode>,
    /// The backend, as a libpq-style URL; `${1}`, `${name}` take regex captures, `${user}` and
    /// `${database}` the client's.
    pub backend: Spanned<String>,
    /// Allow secrets in clear over plaintext client connections on this route.
    #[serde(default)]
    pub insecure: bool,
    /// Remove the `options` words that `match.options` matches before the options reach the
    /// backend (PostgreSQL refuses a routing token such as `endpoint=…` as an argument).
    /// Default: true when the route has `match.options`.
    pub strip_options: Option<Spanned<bool>>,
    /// Send a PROXY v2 header with the client's address to the backend.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Pass the client's address to the backend as a startup parameter.
    #[serde(default)]
    pub client_addr: ClientAddrParam,
    /// Backend connect (and login) timeout.
    #[serde(default = "default_connect_timeout", with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// `auth = "external"`: the authenticator.
    pub external: Option<ExternalConfig>,
    /// `auth = "scram"`: fetch SCRAM verifiers from the backend instead of `[[user]]`.
    pub auth_query: Option<AuthQueryConfig>,
    /// Backend connection pooling for clients of pooled listeners (spanned: refusals of the
    /// table as a whole name its line).
    pub pool: Option<Spanned<PoolConfig>>,
}

/// `pool = { ... }` of a route. Unset keys take [`crate::pool::PoolSettings::default`]'s
/// values; docs/configuration.md lists them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// When a backend goes back to the pool: at the end of the session or of each
    /// transaction.
    pub mode: PoolMode,
    /// The most backend connections of one pool.
    pub size: Option<Spanned<usize>>,
    /// Idle backend connections kept open even without clients.
    pub min_idle: Option<Spanned<usize>>,
    /// Idle connections older than this are replaced (`"0s"`: never).
    #[serde(default, with = "humantime_serde_compat::option")]
    pub max_lifetime: Option<Duration>,
    /// Idle connections unused this long are closed, down to `min_idle` (`"0s"`: never).
    #[serde(default, with = "humantime_serde_compat::option")]
    pub idle_timeout: Option<Duration>,
    /// How long a client waits for a backend connection before 53300.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub checkout_timeout: Option<Duration>,
    /// The SQL run on a backend before it serves another client in session mode (`""`:
    /// none).
    pub reset: Option<String>,
    /// What transaction mode does when a client changes session state.
    #[serde(default)]
    pub session_state: SessionStatePolicy,
    /// Prepared statements each backend keeps (transaction mode; least recently used
    /// closed beyond).
    pub statements_per_backend: Option<Spanned<usize>>,
    /// Prepared statements one client may hold at once (transaction mode).
    pub statements_per_client: Option<Spanned<usize>>,
    /// Transaction mode: a client's unnamed statements are made on backends as named
    /// statements of pgbastion's, prepared once per backend and text.
    #[serde(default)]
    pub cache_unnamed: bool,
}

/// When a pooled backend connection goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// When the client leaves (after the route's `reset`).
    Session,
    /// After each transaction (at ReadyForQuery `I`).
    Transaction,
}

/// What transaction mode does with a client that changes session state (SET, LISTEN,
/// session advisory locks, temporary tables, WITH HOLD cursors, SQL PREPARE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatePolicy {
    /// The client keeps its backend connection until it leaves.
    #[default]
    Pin,
    /// The statement is refused with an error.
    Refuse,
}

/// `[pools]`: backend-wide caps over all pools (0: no cap), like PgBouncer's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolsConfig {
    /// The most pooled connections to one database of one backend, across pools.
    #[serde(default)]
    pub max_db_connections: usize,
    /// The most pooled connections as one user to one backend, across pools.
    #[serde(default)]
    pub max_user_connections: usize,
}

/// `auth_query = { ... }` of a `scram` route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthQueryConfig {
    /// The query; `$1` is the user name; the last column of the first row is the verifier.
    #[serde(default = "default_auth_query")]
    pub query: String,
    /// The backend user that runs the query.
    pub user: String,
    /// Its password (`${ENV}` allowed).
    pub password: Option<Spanned<String>>,
}

fn default_auth_query() -> String {
    "SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1".to_owned()
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `match = { ... }`: every given key must hold. Values are exact, `*.wildcards` (SNI) or
/// `/regex/`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// The TLS SNI name.
    pub sni: Option<Spanned<String>>,
    /// The startup `user`.
    pub user: Option<Spanned<String>>,
    /// The startup `database`.
    pub database: Option<Spanned<String>>,
    /// The startup `options` string.
    pub options: Option<Spanned<String>>,
    /// Any other startup parameter, by name.
    #[serde(default)]
    pub parameters: BTreeMap<String, Spanned<String>>,
    /// JWT claims (for `jwt` and `oauth` routes), by name.
    #[serde(default)]
    pub claim: BTreeMap<String, Spanned<String>>,
}

/// How clients of a route authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No check.
    Trust,
    /// A cleartext password checked against `[[user]]`.
    Cleartext,
    /// md5 against `[[user]]`.
    Md5,
    /// SCRAM-SHA-256(-PLUS) against `[[user]]`.
    Scram,
    /// A client certificate whose CN equals the user.
    Cert,
    /// A JWT sent as the password.
    Jwt,
    /// OAUTHBEARER with a JWT.
    Oauth,
    /// An external command decides (and may choose the backend).
    External,
    /// The backend checks the client's cleartext password itself.
    Passthrough,
}

impl AuthMode {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trust => "trust",
            Self::Cleartext => "cleartext",
            Self::Md5 => "md5",
            Self::Scram => "scram",
            Self::Cert => "cert",
            Self::Jwt => "jwt",
            Self::Oauth => "oauth",
            Self::External => "external",
            Self::Passthrough => "passthrough",
        }
    }

    /// Whether the client sends a secret in clear (a password or a token).
    pub fn secret_in_clear(self) -> bool {
        matches!(
            self,
            Self::Cleartext | Self::Jwt | Self::Oauth | Self::Passthrough | Self::External
        )
    }
}

/// How the client's address reaches the backend as a startup parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAddrParam {
    /// Not passed.
    #[default]
    None,
    /// `options=-c pgbastion.client_addr=ADDR` (read it with `current_setting`).
    Options,
    /// `crdb:remote_addr=ADDR:PORT` (CockroachDB).
    Crdb,
}

/// `external = { ... }` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// argv of the authenticator (no shell).
    pub command: Spanned<Vec<String>>,
    /// How long it may run.
    #[serde(default = "default_external_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// How the client's password is asked for: `cleartext` or `md5`.
    #[serde(default = "default_external_method")]
    pub method: ExternalMethod,
}

fn default_external_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_external_method() -> ExternalMethod {
    ExternalMethod::Cleartext
}

/// The password exchange used with an external authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalMethod {
    /// The authenticator gets the password (`_SOURCE_CRED`).
    Cleartext,
    /// The authenticator gets the md5 response and the salt (`_SOURCE_CRED`, `_SOURCE_SALT`).
    Md5,
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter (`info`, `pgbastion=debug`, ...); `RUST_LOG` overrides it.
    pub level: Option<String>,
    /// Where log lines go: `stderr`, `syslog`, or a file path.
    #[serde(default)]
    pub destination: LogDestination,
}

/// Where log lines go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogDestination {
    /// Standard error (under systemd, the journal).
    #[default]
    Stderr,
    /// The local syslog socket `/dev/log` (under systemd, the journal's).
    Syslog,
    /// A file, appended to and reopened on SIGUSR1 (relative to the configuration file's
    /// directory).
    File(PathBuf),
}

impl<'de> Deserialize<'de> for LogDestination {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "stderr" => Ok(Self::Stderr),
            "syslog" => Ok(Self::Syslog),
            "journald" => Err(serde::de::Error::custom(
                "log destination \"journald\" is not supported: use \"syslog\" (on systemd \
                 machines /dev/log feeds the journal) or \"stderr\" (systemd puts a service's \
                 stderr in the journal)",
            )),
            "" => Err(serde::de::Error::custom(
                "log destination is empty: write \"stderr\", \"syslog\" or a file path",
            )),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Durations as humantime strings (`"5s"`, `"1h 30m"`, `"250ms"`).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration \"{text}\" ({e}); write e.g. \"5s\", \"250ms\", \"1h\""
            ))
        })
    }

    /// An optional duration (with `#[serde(default)]`: absent is `None`).
    pub mod option {
        use std::time::Duration;

        use serde::Deserializer;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// Parses the file's text (no semantic checks; see [`crate::Settings::load`]).
pub fn parse(file: &SourceFile) -> Result<ConfigFile, ConfigError> {
    toml::from_str(&file.text).map_err(|e| ConfigError::at(file, e.span(), e.message().to_owned()))
}

/// `value` with its `${NAME}` environment references expanded
/// ([`crate::template::expand_env`]); an error names the value's line.
pub fn expand_env(file: &SourceFile, value: &Spanned<String>) -> Result<String, ConfigError> {
    crate::template::expand_env(value.get_ref())
        .map_err(|e| ConfigError::at(file, Some(value.span()), e.to_string()))
}
