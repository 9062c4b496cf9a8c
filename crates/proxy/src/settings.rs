//! [`Settings`]: a configuration file checked and compiled into what the proxy runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use pgbastion_gateway::proxy_protocol::{ProxyProtocolMode, TrustedProxies};
use pgbastion_gateway::tls::{certified_key_from_pem, SniCertificates};
use pgbastion_gateway::{GatewayConfig, TlsConfig};
use toml::Spanned;

use crate::admin::settings::Admin;
use crate::audit::{AuditConfig, AuditSettings};
use crate::config::{
    self, AuthMode, ConfigError, ConfigFile, ExternalConfig, JwtConfig, ListenerConfig,
    ListenerMode, LogConfig, PoolsConfig, ProxyProtocol, RouteConfig, SourceFile,
};
use crate::route::{AuthQuery, Captures, External, Matcher, Route, Routes};
use crate::secret::Secret;
use crate::session_switch::SessionSwitch;
use crate::target::TargetTemplate;
use crate::template::{Text, Values};

mod pool;

/// `grace_period` when the file has none.
const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// The longest `grace_period` accepted.
const MAX_GRACE_PERIOD: Duration = Duration::from_secs(24 * 3600);
/// `upgrade_settle` when the file has none.
const DEFAULT_UPGRADE_SETTLE: Duration = Duration::from_secs(2);
/// The longest `upgrade_settle` accepted.
const MAX_UPGRADE_SETTLE: Duration = Duration::from_secs(600);

/// Per-listener limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Client connections at once.
    pub max_connections: usize,
    /// Connections at once per client address (0: unlimited).
    pub max_connections_per_ip: usize,
    /// New connections per second per client address (0: unlimited).
    pub connection_rate_per_ip: u32,
    /// Cancel requests per second per client address.
    pub cancel_rate_per_ip: u32,
}

/// A listener, ready to bind.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Where to listen.
    pub address: SocketAddr,
    /// Handshake policy (TLS, PROXY header, timeouts).
    pub gateway: Arc<GatewayConfig>,
    /// Connection limits.
    pub limits: Limits,
    /// Transparent, or served through the routes' pools.
    pub mode: ListenerMode,
    /// The session switch of a pooled listener.
    pub session_switch: Option<Arc<SessionSwitch>>,
}

/// Token validation settings (`[jwt]`), with paths and environment references resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Jwt {
    /// Required issuer.
    pub issuer: String,
    /// Required audience.
    pub audience: Option<String>,
    /// OIDC discovery URL.
    pub oidc_discovery: Option<String>,
    /// JWKS URL.
    pub jwks_url: Option<String>,
    /// PEM key files.
    pub keys: Vec<std::path::PathBuf>,
    /// CA certificates for the discovery and JWKS servers.
    pub ca_file: Option<PathBuf>,
    /// Whether `http://` key URLs are allowed (`insecure = true`).
    pub insecure: bool,
    /// The user claim.
    pub claim: String,
    /// Key refresh period.
    pub refresh: Duration,
    /// Clock skew allowance.
    pub leeway: Duration,
    /// OAUTHBEARER scope.
    pub scope: String,
}

/// Everything the proxy runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// Routes in file order.
    pub routes: Routes,
    /// Local users: name → stored password (verifier, md5 hash or plaintext).
    pub users: HashMap<String, Secret>,
    /// `[jwt]`.
    pub jwt: Option<Jwt>,
    /// `[log]`.
    pub log: LogConfig,
    /// The configuration file's directory, where its relative paths start.
    pub dir: PathBuf,
    /// The most SCRAM iterations a backend may ask for.
    pub max_scram_iterations: u32,
    /// `[pools]`: backend-wide caps over all pools.
    pub pools: PoolsConfig,
    /// `pid_file`, resolved against the file's directory.
    pub pid_file: Option<PathBuf>,
    /// How long SIGTERM lets clients inside a transaction finish (`grace_period`).
    pub grace_period: Duration,
    /// How long, in an upgrade, the sessions the old process accepted last (still logging
    /// in, or about to send their first query) get before its drain starts
    /// (`upgrade_settle`).
    pub upgrade_settle: Duration,
    /// `[metrics] address`: where the metrics and health endpoint listens, if anywhere.
    pub metrics_address: Option<SocketAddr>,
    /// `[audit]`: the query audit, if on.
    pub audit: Option<AuditSettings>,
    /// `[admin]`: who may open the admin console, if anyone.
    pub admin: Option<Admin>,
}

impl Settings {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::at(
                &SourceFile {
                    path: path.to_owned(),
                    text: String::new(),
                },
                None,
                format!("cannot read the configuration file: {e}"),
            )
        })?;
        Self::from_source(&SourceFile {
            path: path.to_owned(),
            text,
        })
    }

    /// Parses and checks configuration text (`file.path` resolves relative paths).
    pub fn from_source(file: &SourceFile) -> Result<Self, ConfigError> {
        let parsed: ConfigFile = config::parse(file)?;
        Compiler { file }.compile(parsed)
    }
}

struct Compiler<'a> {
    file: &'a SourceFile,
}

/// What the checks of one route need to know about the rest of the file.
struct FileFacts<'a> {
    users: &'a HashMap<String, Secret>,
    have_jwt: bool,
    any_tls: bool,
    any_client_ca: bool,
}

impl Compiler<'_> {
    fn error<T>(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::at(self.file, Some(span), message.into()))
    }

    fn env(&self, value: &Spanned<String>) -> Result<String, ConfigError> {
        config::expand_env(self.file, value)
    }

    fn compile(&self, parsed: ConfigFile) -> Result<Settings, ConfigError> {
        let listeners = if parsed.listeners.is_empty() {
            vec![default_listener()]
        } else {
            parsed
                .listeners
                .iter()
                .map(|l| self.listener(l))
                .collect::<Result<_, _>>()?
        };
        let mut users = HashMap::new();
        for user in &parsed.users {
            let password = self.env(&user.password)?;
            if password.starts_with("SCRAM-SHA-256$") {
                if let Err(e) = password.parse::<pgbastion_auth::scram::ScramSecret>() {
                    return self
                        .error(user.password.span(), format!("user \"{}\": {e}", user.name));
                }
            }
            if users
                .insert(user.name.clone(), Secret::new(password))
                .is_some()
            {
                return self.error(
                    user.password.span(),
                    format!("user \"{}\" is listed twice", user.name),
                );
            }
        }
        let jwt = parsed.jwt.as_ref().map(|j| self.jwt(j)).transpose()?;
        if *parsed.max_scram_iterations.get_ref() == 0 {
            return self.error(
                parsed.max_scram_iterations.span(),
                "max_scram_iterations must be at least 1",
            );
        }
        if parsed.routes.is_empty() {
            return Err(ConfigError::at(
                self.file,
                None,
                "no [[route]]: add at least one, e.g.\n[[route]]\nauth = \"scram\"\nbackend = \"postgres://127.0.0.1:5432\""
                    .to_owned(),
            ));
        }
        let facts = FileFacts {
            users: &users,
            have_jwt: jwt.is_some(),
            any_tls: listeners.iter().any(|l| l.gateway.tls.is_some()),
            any_client_ca: parsed
                .listeners
                .iter()
                .any(|l| l.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some())),
        };
        let routes = parsed
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(i + 1, r, &facts))
            .collect::<Result<Vec<_>, _>>()?;
        let metrics_address = parsed
            .metrics
            .as_ref()
            .map(|m| self.metrics_address(&m.address, &listeners))
            .transpose()?;
        let admin = parsed
            .admin
            .as_ref()
            .map(|a| Admin::compile(self.file, a, &users, (facts.have_jwt, facts.any_client_ca)))
            .transpose()?;
        Ok(Settings {
            listeners,
            routes: Routes(routes),
            users,
            jwt,
            log: parsed.log,
            dir: self.file.dir().to_owned(),
            max_scram_iterations: parsed.max_scram_iterations.into_inner(),
            pools: parsed.pools,
            pid_file: parsed.pid_file.map(|p| self.file.dir().join(p)),
            grace_period: self.grace_period(parsed.grace_period.as_ref())?,
            upgrade_settle: self.duration(
                "upgrade_settle",
                parsed.upgrade_settle.as_ref(),
                DEFAULT_UPGRADE_SETTLE,
                (MAX_UPGRADE_SETTLE, "10m"),
            )?,
            metrics_address,
            audit: parsed.audit.as_ref().map(|a| self.audit(a)).transpose()?,
            admin,
        })
    }

    /// `[audit]`, its path resolved.
    fn audit(&self, audit: &Spanned<AuditConfig>) -> Result<AuditSettings, ConfigError> {
        AuditSettings::compile(self.file, audit.get_ref())
            .or_else(|message| self.error(audit.span(), message))
    }

    /// `grace_period`: 30 s when absent, at most a day (a deadline must stay computable).
    fn grace_period(&self, value: Option<&Spanned<String>>) -> Result<Duration, ConfigError> {
        self.duration(
            "grace_period",
            value,
            DEFAULT_GRACE_PERIOD,
            (MAX_GRACE_PERIOD, "24h"),
        )
    }

    /// The duration `key` (`default` when absent), at most `max` (with its text).
    fn duration(
        &self,
        key: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
        (max, max_text): (Duration, &str),
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let text = value.get_ref();
        match humantime::parse_duration(text) {
            Ok(duration) if duration <= max => Ok(duration),
            Ok(_) => self.error(value.span(), format!("{key} must be at most {max_text}")),
            Err(e) => self.error(
                value.span(),
                format!("{key}: invalid duration \"{text}\" ({e}); write e.g. \"30s\""),
            ),
        }
    }

    /// `[metrics] address`: host:port, and not a listener's.
    fn metrics_address(
        &self,
        value: &Spanned<String>,
        listeners: &[Listener],
    ) -> Result<SocketAddr, ConfigError> {
        let Ok(address) = value.get_ref().parse::<SocketAddr>() else {
            return self.error(
                value.span(),
                format!(
                    "[metrics] address \"{}\" is not host:port (e.g. 127.0.0.1:9930)",
                    value.get_ref()
                ),
            );
        };
        if listeners.iter().any(|l| l.address == address) {
            return self.error(
                value.span(),
                format!("[metrics] address {address} is also a listener's address"),
            );
        }
        Ok(address)
    }

    fn listener(&self, l: &ListenerConfig) -> Result<Listener, ConfigError> {
        let address: SocketAddr = match l.address.get_ref().parse() {
            Ok(address) => address,
            Err(_) => {
                return self.error(
                    l.address.span(),
                    format!(
                        "listener address \"{}\" is not host:port (e.g. 127.0.0.1:6432)",
                        l.address.get_ref()
                    ),
                )
            }
        };
        let mut networks = Vec::new();
        for net in &l.trusted_proxies {
            let text = net.get_ref();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => networks.push(net),
                Err(_) => {
                    return self.error(
                        net.span(),
                        format!("trusted_proxies: \"{text}\" is not a CIDR or an address"),
                    )
                }
            }
        }
        if l.proxy_protocol != ProxyProtocol::Off && networks.is_empty() {
            return self.error(
                l.address.span(),
                "proxy_protocol is on but trusted_proxies is empty: nobody could send a header; \
                 list your load balancers' addresses",
            );
        }
        let tls = match &l.tls {
            Some(tls) => Some(self.tls(tls)?),
            None => None,
        };
        if l.require_tls && tls.is_none() {
            return self.error(
                l.address.span(),
                "require_tls = true needs tls = { cert = …, key = … }",
            );
        }
        let gateway = GatewayConfig {
            tls,
            require_tls: l.require_tls,
            proxy_protocol: match l.proxy_protocol {
                ProxyProtocol::Off => ProxyProtocolMode::Off,
                ProxyProtocol::Optional => ProxyProtocolMode::Optional,
                ProxyProtocol::Required => ProxyProtocolMode::Required,
            },
            trusted_proxies: TrustedProxies::new(networks),
            startup_timeout: l.startup_timeout,
            auth_timeout: l.auth_timeout,
            ..GatewayConfig::default()
        };
        Ok(Listener {
            address,
            gateway: Arc::new(gateway),
            limits: Limits {
                max_connections: l.max_connections,
                max_connections_per_ip: l.max_connections_per_ip,
                connection_rate_per_ip: l.connection_rate_per_ip,
                cancel_rate_per_ip: l.cancel_rate_per_ip,
            },
            mode: l.mode,
            session_switch: self.session_switch(l)?,
        })
    }

    /// A listener's `session_switch`: pooled listeners only (a transparent listener's
    /// clients keep their own backend and tell it who they are by other means).
    fn session_switch(
        &self,
        l: &ListenerConfig,
    ) -> Result<Option<Arc<SessionSwitch>>, ConfigError> {
        let Some(table) = &l.session_switch else {
            return Ok(None);
        };
        if l.mode != ListenerMode::Pooled {
            return self.error(
                table.span(),
                "session_switch needs mode = \"pooled\": on a transparent listener every client \
                 keeps its own backend connection, so there is nothing to switch (use the \
                 route's client_addr or proxy_protocol to tell the backend who the client is)",
            );
        }
        let switch = table.get_ref();
        let key = self.env(&switch.key)?;
        if key.is_empty() {
            return self.error(switch.key.span(), "session_switch.key must not be empty");
        }
        match SessionSwitch::new(switch.statement.clone(), Secret::new(key)) {
            Ok(built) => Ok(Some(Arc::new(built))),
            Err(error) => self.error(table.span(), format!("session_switch.statement: {error}")),
        }
    }

    fn read(&self, value: &Spanned<String>, what: &str) -> Result<Vec<u8>, ConfigError> {
        let path = self.file.resolve(&self.env(value)?);
        std::fs::read(&path)
            .or_else(|e| self.error(value.span(), format!("{what} {}: {e}", path.display())))
    }

    fn tls(&self, tls: &config::TlsConfig) -> Result<TlsConfig, ConfigError> {
        let pair = |cert: &Spanned<String>, key: &Spanned<String>| {
            let (cert_pem, key_pem) = (self.read(cert, "tls cert")?, self.read(key, "tls key")?);
            certified_key_from_pem(&cert_pem, &key_pem)
                .or_else(|e| self.error(cert.span(), format!("tls cert/key: {e}")))
        };
        let mut certs = SniCertificates::new(Some(pair(&tls.cert, &tls.key)?));
        for sni in &tls.sni {
            if let Err(e) = pgbastion_gateway::tls::check_sni_pattern(sni.name.get_ref()) {
                return self.error(sni.name.span(), format!("tls.sni name: {e}"));
            }
            certs.add(sni.name.get_ref(), pair(&sni.cert, &sni.key)?);
        }
        let client_ca = tls
            .client_ca
            .as_ref()
            .map(|ca| self.read(ca, "tls client_ca"))
            .transpose()?;
        TlsConfig::new(Arc::new(certs), client_ca.as_deref())
            .or_else(|e| self.error(tls.cert.span(), format!("tls: {e}")))
    }

    fn jwt(&self, table: &Spanned<JwtConfig>) -> Result<Jwt, ConfigError> {
        let j = table.get_ref();
        let sources = usize::from(j.oidc_discovery.is_some())
            + usize::from(j.jwks_url.is_some())
            + usize::from(!j.keys.is_empty());
        if sources != 1 {
            return self.error(
                table.span(),
                "[jwt] needs exactly one of oidc_discovery, jwks_url or keys",
            );
        }
        let keys = j
            .keys
            .iter()
            .map(|k| self.existing_file(k, "jwt key file"))
            .collect::<Result<_, _>>()?;
        let url = |key: &str, value: &Option<Spanned<String>>| {
            value
                .as_ref()
                .map(|u| self.key_url(key, u, j.insecure))
                .transpose()
        };
        Ok(Jwt {
            issuer: j.issuer.clone(),
            audience: j.audience.clone(),
            oidc_discovery: url("oidc_discovery", &j.oidc_discovery)?,
            jwks_url: url("jwks_url", &j.jwks_url)?,
            keys,
            ca_file: j
                .ca_file
                .as_ref()
                .map(|f| self.existing_file(f, "jwt ca_file"))
                .transpose()?,
            insecure: j.insecure,
            claim: j.claim.clone(),
            refresh: j.refresh,
            leeway: j.leeway,
            scope: j.scope.clone(),
        })
    }

    /// A discovery or JWKS URL: https, or http with `insecure = true`.
    fn key_url(
        &self,
        key: &str,
        value: &Spanned<String>,
        insecure: bool,
    ) -> Result<String, ConfigError> {
        let url = self.env(value)?;
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("https") => Ok(url),
            Some("http") if insecure => Ok(url),
            Some("http") => self.error(
                value.span(),
                format!(
                    "[jwt] {key}: http:// is refused (anyone on the path could substitute the \
                     signing keys); use https (with ca_file for a private CA), or set \
                     insecure = true in [jwt] to allow it"
                ),
            ),
            _ => self.error(value.span(), format!("[jwt] {key}: not an https:// URL")),
        }
    }

    /// A file path relative to the configuration file, which must exist.
    fn existing_file(&self, value: &Spanned<String>, what: &str) -> Result<PathBuf, ConfigError> {
        let path = self.file.resolve(&self.env(value)?);
        if path.exists() {
            return Ok(path);
        }
        self.error(
            value.span(),
            format!("{what} {} does not exist", path.display()),
        )
    }

    /// The matcher for `match.<key>` (only `sni` takes a `*.` wildcard).
    fn matcher(&self, key: &str, value: &Spanned<String>) -> Result<Matcher, ConfigError> {
        let parsed = match key {
            "sni" => Matcher::parse_sni(value.get_ref()),
            _ => Matcher::parse(value.get_ref()),
        };
        parsed.or_else(|e| self.error(value.span(), format!("match.{key}: {e}")))
    }

    fn route(
        &self,
        number: usize,
        r: &RouteConfig,
        facts: &FileFacts<'_>,
    ) -> Result<Route, ConfigError> {
        let m = &r.matcher;
        let mut parameters = Vec::new();
        for (name, value) in [
            ("user", &m.user),
            ("database", &m.database),
            ("options", &m.options),
        ] {
            if let Some(value) = value {
                parameters.push((name.to_owned(), self.matcher(name, value)?));
            }
        }
        for (name, value) in &m.parameters {
            let matcher = self.matcher(&format!("parameters.{name}"), value)?;
            parameters.push((name.clone(), matcher));
        }
        let claims = m
            .claim
            .iter()
            .map(|(name, value)| Ok((name.clone(), self.matcher(&format!("claim.{name}"), value)?)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let sni = m.sni.as_ref().map(|s| self.matcher("sni", s)).transpose()?;
        let auth = *r.auth.get_ref();
        self.check_auth(r, facts, !claims.is_empty())?;
        let external = match (&r.external, auth) {
            (Some(e), _) => Some(self.external(e)?),
            (None, AuthMode::External) => {
                return self.error(
                    r.auth.span(),
                    "auth = \"external\" needs external = { command = [...] }",
                )
            }
            (None, _) => None,
        };
        let capture_names: Vec<Option<String>> = sni
            .iter()
            .chain(parameters.iter().map(|(_, m)| m))
            .chain(claims.iter().map(|(_, m)| m))
            .flat_map(Matcher::capture_names)
            .collect();
        let backend = self.backend(&r.backend, &capture_names)?;
        let auth_query = match &r.auth_query {
            Some(q) => Some(AuthQuery {
                query: q.query.clone(),
                user: q.user.clone(),
                password: q
                    .password
                    .as_ref()
                    .map(|p| self.env(p).map(Secret::new))
                    .transpose()?,
            }),
            None => None,
        };
        Ok(Route {
            number,
            sni,
            parameters,
            claims,
            auth,
            backend,
            insecure: r.insecure,
            strip_options: self.strip_options(r)?,
            proxy_protocol: r.proxy_protocol,
            client_addr: r.client_addr,
            connect_timeout: r.connect_timeout,
            external,
            auth_query,
            files_dir: self.file.dir().to_owned(),
            pool: self.route_pool(r)?,
        })
    }

    /// `strip_options`: default on exactly when the route matches on `options`.
    fn strip_options(&self, r: &RouteConfig) -> Result<bool, ConfigError> {
        let matches_options = r.matcher.options.is_some();
        match &r.strip_options {
            None => Ok(matches_options),
            Some(strip) if *strip.get_ref() && !matches_options => self.error(
                strip.span(),
                "strip_options = true needs match.options (it removes the words that match)",
            ),
            Some(strip) => Ok(*strip.get_ref()),
        }
    }

    /// The rules between a route's `auth` and the rest of the file.
    fn check_auth(
        &self,
        r: &RouteConfig,
        facts: &FileFacts<'_>,
        has_claims: bool,
    ) -> Result<(), ConfigError> {
        let auth = *r.auth.get_ref();
        let auth_span = r.auth.span();
        if has_claims && !matches!(auth, AuthMode::Jwt | AuthMode::Oauth) {
            return self.error(auth_span, "match.claim needs auth = \"jwt\" or \"oauth\"");
        }
        if matches!(auth, AuthMode::Jwt | AuthMode::Oauth) && !facts.have_jwt {
            return self.error(
                auth_span,
                format!("auth = \"{}\" needs a [jwt] section", auth.name()),
            );
        }
        let uses_users = matches!(auth, AuthMode::Cleartext | AuthMode::Md5)
            || (auth == AuthMode::Scram && r.auth_query.is_none());
        if r.auth_query.is_some() && auth != AuthMode::Scram {
            return self.error(auth_span, "auth_query works with auth = \"scram\" only");
        }
        if uses_users && facts.users.is_empty() {
            return self.error(
                auth_span,
                format!(
                    "auth = \"{}\" checks passwords against [[user]] entries, and there are none \
                     (or use auth = \"passthrough\" to let the backend check them, or auth_query \
                     with auth = \"scram\")",
                    auth.name()
                ),
            );
        }
        if auth == AuthMode::Cert && !facts.any_client_ca {
            let missing = if facts.any_tls {
                "no listener's tls has client_ca"
            } else {
                "no listener has tls"
            };
            return self.error(
                auth_span,
                format!(
                    "auth = \"cert\" needs a listener with tls = {{ cert = …, key = …, \
                     client_ca = … }} (client_ca: the CA that signs client certificates); \
                     {missing}"
                ),
            );
        }
        if auth.secret_in_clear() && !r.insecure && !facts.any_tls {
            return self.error(
                auth_span,
                format!(
                    "auth = \"{}\" receives secrets in clear, and no listener has TLS: add tls to \
                     the listener (and require_tls = true), or set insecure = true on this route \
                     to accept plaintext (only on trusted networks)",
                    auth.name()
                ),
            );
        }
        Ok(())
    }

    /// `external = { … }`: `${ENV}` expanded; a relative program path (one with a `/`) resolved
    /// against the configuration file's directory and checked to be an executable file. A bare
    /// name is left to `PATH` when the command runs.
    fn external(&self, e: &ExternalConfig) -> Result<External, ConfigError> {
        let span = e.command.span();
        let mut command = e
            .command
            .get_ref()
            .iter()
            .map(|arg| self.env(&Spanned::new(span.clone(), arg.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(program) = command.first_mut() else {
            return self.error(span, "external.command is empty");
        };
        if program.contains('/') {
            // Collecting the components drops the `.` of `./authenticator.sh`.
            let path: PathBuf = self.file.resolve(program).components().collect();
            self.executable(&path, span.clone())?;
            *program = path.into_os_string().into_string().or_else(|_| {
                self.error(span, "external.command: the resolved path is not UTF-8")
            })?;
        }
        Ok(External {
            command,
            timeout: e.timeout,
            method: e.method,
            dir: self.file.dir().to_owned(),
        })
    }

    fn executable(&self, path: &Path, span: std::ops::Range<usize>) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;

        let shown = path.display();
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => {
                self.error(span, format!("external.command: {shown} is not a file"))
            }
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => self.error(
                span,
                format!("external.command: {shown} is not executable (chmod +x it)"),
            ),
            Ok(_) => Ok(()),
            Err(e) => self.error(span, format!("external.command: {shown}: {e}")),
        }
    }

    /// The backend URL, compiled once: `${ENV}` expanded, every placeholder naming a capture
    /// group of the route (`capture_names`), `${user}` or `${database}`, the URL taken apart.
    /// It is checked with every capture empty; certificate files must exist, except those
    /// whose path has a placeholder: they are known (and checked) per connection.
    fn backend(
        &self,
        value: &Spanned<String>,
        capture_names: &[Option<String>],
    ) -> Result<TargetTemplate, ConfigError> {
        let text = Text::compile(value.get_ref(), capture_names)
            .or_else(|e| self.error(value.span(), format!("backend: {e}")))?;
        let template =
            TargetTemplate::compile(&text).or_else(|e| self.error(value.span(), e.to_string()))?;
        let captures = Captures::default();
        let probe = Values {
            captures: &captures,
            user: "user",
            database: "database",
        };
        let target = template
            .fill(&probe)
            .or_else(|e| self.error(value.span(), e.to_string()))?;
        for (key, path) in template.files(&target.tls, false) {
            if !self.file.resolve(&path.to_string_lossy()).exists() {
                return self.error(
                    value.span(),
                    format!("backend URL: {key} file {} does not exist", path.display()),
                );
            }
        }
        Ok(template)
    }
}

fn default_listener() -> Listener {
    Listener {
        address: SocketAddr::from(([127, 0, 0, 1], 6432)),
        gateway: Arc::new(GatewayConfig::default()),
        limits: Limits {
            max_connections: 10_000,
            max_connections_per_ip: 0,
            connection_rate_per_ip: 0,
            cancel_rate_per_ip: 10,
        },
        mode: ListenerMode::Transparent,
        session_switch: None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    pub(super) fn compile(dir: &Path, text: &str) -> Result<Settings, ConfigError> {
        Settings::from_source(&SourceFile {
            path: dir.join("pgbastion.toml"),
            text: text.to_owned(),
        })
    }

    fn write(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn external_route(command: &str) -> String {
        format!(
            "[[route]]\nauth = \"external\"\ninsecure = true\nbackend = \"postgres://h/db\"\n\
             external = {{ command = {command} }}\n"
        )
    }

    #[test]
    fn grace_period_defaults_to_30_s_and_a_bad_one_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let route = "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n";
        let settings = compile(dir.path(), route).unwrap();
        assert_eq!(settings.grace_period, Duration::from_secs(30));
        let settings = compile(dir.path(), &format!("grace_period = \"2s\"\n{route}")).unwrap();
        assert_eq!(settings.grace_period, Duration::from_secs(2));
        for (value, words) in [("\"soon\"", "invalid duration"), ("\"2d\"", "at most 24h")] {
            let text = format!("\ngrace_period = {value}\n{route}");
            let error = compile(dir.path(), &text).unwrap_err().to_string();
            assert!(error.contains("pgbastion.toml:2: grace_period"), "{error}");
            assert!(error.contains(words), "{error}");
        }
    }

    #[test]
    fn upgrade_settle_defaults_to_2_s_and_a_bad_one_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let route = "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n";
        let settings = compile(dir.path(), route).unwrap();
        assert_eq!(settings.upgrade_settle, Duration::from_secs(2));
        let settings = compile(dir.path(), &format!("upgrade_settle = \"15s\"\n{route}")).unwrap();
        assert_eq!(settings.upgrade_settle, Duration::from_secs(15));
        for (value, words) in [("\"soon\"", "invalid duration"), ("\"1h\"", "at most 10m")] {
            let text = format!("\nupgrade_settle = {value}\n{route}");
            let error = compile(dir.path(), &text).unwrap_err().to_string();
            assert!(
                error.contains("pgbastion.toml:2: upgrade_settle"),
                "{error}"
            );
            assert!(error.contains(words), "{error}");
        }
    }

    #[test]
    fn a_relative_authenticator_path_starts_at_the_configuration_file() {
        let dir = tempfile::tempdir().unwrap();
        let script = write(dir.path(), "auth.sh", 0o755);
        let settings = compile(dir.path(), &external_route("[\"./auth.sh\", \"--flag\"]")).unwrap();
        let external = settings.routes.0[0].external.clone().unwrap();
        assert_eq!(
            external.command,
            [script.display().to_string(), "--flag".to_owned()]
        );
        // A bare name is left to PATH when the command runs.
        let settings = compile(dir.path(), &external_route("[\"python3\"]")).unwrap();
        let external = settings.routes.0[0].external.clone().unwrap();
        assert_eq!(external.command, ["python3"]);
    }

    #[test]
    fn a_missing_or_non_executable_authenticator_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "plain.sh", 0o644);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for (command, words) in [
            ("[\"./missing.sh\"]", "missing.sh"),
            ("[\"./plain.sh\"]", "not executable"),
            ("[\"./sub\"]", "not a file"),
        ] {
            let error = compile(dir.path(), &external_route(command))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("pgbastion.toml:5: external.command"),
                "{error}"
            );
            assert!(error.contains(words), "{error}");
        }
    }

    #[test]
    fn placeholders_in_certificate_paths_are_checked_per_connection() {
        let dir = tempfile::tempdir().unwrap();
        for query in [
            "sslmode=verify-ca&sslrootcert=certs/${tenant}.pem",
            "sslmode=verify-full&sslrootcert=${1}",
            "sslcert=certs/${user}.crt&sslkey=certs/${user}.key",
        ] {
            let text = format!(
                "[[route]]\nmatch = {{ database = \"/(?P<tenant>.*)/\" }}\nauth = \"trust\"\n\
                 backend = \"postgres://h/db?{query}\"\n"
            );
            compile(dir.path(), &text).unwrap_or_else(|e| panic!("{query}: {e}"));
        }
        // Without a placeholder the file must exist at load.
        let text = "[[route]]\nauth = \"trust\"\n\
                    backend = \"postgres://h/db?sslmode=verify-ca&sslrootcert=certs/t1.pem\"\n";
        let error = compile(dir.path(), text).unwrap_err().to_string();
        assert!(
            error.contains(":3: backend URL: sslrootcert file certs/t1.pem does not exist"),
            "{error}"
        );
    }

    #[test]
    fn cert_routes_need_a_listener_with_client_ca() {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/certs");
        let dir = tempfile::tempdir().unwrap();
        let listener = |client_ca: &str| {
            format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\n\
                 tls = {{ cert = \"{0}/server.pem\", key = \"{0}/server.key\"{client_ca} }}\n",
                certs.display()
            )
        };
        let route = "[[route]]\nauth = \"cert\"\nbackend = \"postgres://h/db\"\n";
        let error = compile(dir.path(), &format!("{}{route}", listener("")))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(":5: auth = \"cert\" needs a listener with tls")
                && error.contains("no listener's tls has client_ca"),
            "{error}"
        );
        let with_ca = format!(", client_ca = \"{}/ca.pem\"", certs.display());
        compile(dir.path(), &format!("{}{route}", listener(&with_ca))).unwrap();
    }

    #[test]
    fn jwt_key_urls_must_be_https_unless_insecure_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let route = "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n\n";
        for key in ["oidc_discovery", "jwks_url"] {
            let jwt = format!("[jwt]\nissuer = \"https://idp\"\n{key} = \"http://idp/keys\"\n");
            let error = compile(dir.path(), &format!("{route}{jwt}"))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!(
                    "pgbastion.toml:7: [jwt] {key}: http:// is refused"
                )) && error.contains("insecure = true"),
                "{error}"
            );
            let insecure = format!("{route}{jwt}insecure = true\n");
            let settings = compile(dir.path(), &insecure).unwrap();
            assert!(settings.jwt.unwrap().insecure);
            let https = format!("{route}{}", jwt.replace("http:", "https:"));
            compile(dir.path(), &https).unwrap();
        }
    }

    #[test]
    fn jwt_ca_file_is_relative_to_the_configuration_file_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n\n\
                    [jwt]\nissuer = \"https://idp\"\njwks_url = \"https://idp/keys\"\n\
                    ca_file = \"idp-ca.pem\"\n";
        let error = compile(dir.path(), text).unwrap_err().to_string();
        assert!(
            error.contains(":8: jwt ca_file") && error.contains("does not exist"),
            "{error}"
        );
        std::fs::write(dir.path().join("idp-ca.pem"), "x").unwrap();
        let jwt = compile(dir.path(), text).unwrap().jwt.unwrap();
        assert_eq!(jwt.ca_file, Some(dir.path().join("idp-ca.pem")));
    }

    #[test]
    fn a_star_outside_a_leading_sni_wildcard_is_refused_with_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let refused = [
            ("user = \"app_*\"", "match.user"),
            ("database = \"*\"", "match.database"),
            ("options = \"endpoint=*\"", "match.options"),
            ("sni = \"*example.com\"", "match.sni"),
            ("sni = \"db.*.example.com\"", "match.sni"),
            ("sni = \"*.*.example.com\"", "match.sni"),
            ("sni = \"*.\"", "match.sni"),
            (
                "parameters = { application_name = \"rep*\" }",
                "match.parameters.application_name",
            ),
        ];
        for (matcher, key) in refused {
            let text = format!(
                "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n\
                 match = {{ {matcher} }}\n"
            );
            let error = compile(dir.path(), &text).unwrap_err().to_string();
            assert!(
                error.contains(&format!("pgbastion.toml:4: {key}: "))
                    && error.contains("leading \"*.\""),
                "{matcher}: {error}"
            );
        }
        for accepted in ["sni = \"*.db.example.com\"", "user = \"/app_.*/\""] {
            let text = format!(
                "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n\
                 match = {{ {accepted} }}\n"
            );
            compile(dir.path(), &text).unwrap_or_else(|e| panic!("{accepted}: {e}"));
        }
    }

    #[test]
    fn an_sni_certificate_name_with_a_stray_star_is_refused_with_its_line() {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/certs");
        let dir = tempfile::tempdir().unwrap();
        let text = |name: &str| {
            format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\n\
                 tls = {{ cert = \"{0}/server.pem\", key = \"{0}/server.key\", sni = [\n\
                 {{ name = \"{name}\", cert = \"{0}/server.pem\", key = \"{0}/server.key\" }},\n\
                 ] }}\n[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n",
                certs.display()
            )
        };
        let error = compile(dir.path(), &text("*example.com"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("pgbastion.toml:4: tls.sni name: ") && error.contains("leading \"*.\""),
            "{error}"
        );
        compile(dir.path(), &text("*.example.com")).unwrap();
    }

    #[test]
    fn backend_placeholders_must_name_a_capture_group_or_a_set_variable() {
        let dir = tempfile::tempdir().unwrap();
        let route = |matcher: &str, backend: &str| {
            format!(
                "[[route]]\nauth = \"trust\"\nmatch = {{ {matcher} }}\n\
                 backend = \"{backend}\"\n"
            )
        };
        let cases = [
            (
                "user = \"/(a)(b)/\"",
                "postgres://h/${3}",
                "${3}: this route's regexes have 2 capture groups",
            ),
            (
                "user = \"app\"",
                "postgres://h/${1}",
                "${1}: this route's regexes have 0 capture groups",
            ),
            (
                "user = \"/(?P<tenant>.*)/\"",
                "postgres://h/${tenat}",
                "${tenat} is neither a named capture group of this route (tenant) nor a set \
                 environment variable",
            ),
        ];
        for (matcher, backend, message) in cases {
            let error = compile(dir.path(), &route(matcher, backend))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("pgbastion.toml:4: backend: {message}")),
                "{backend}: {error}"
            );
        }
        compile(
            dir.path(),
            &route("user = \"/(?P<tenant>.*)/\"", "postgres://h/${tenant}_${1}"),
        )
        .unwrap();
    }

    #[test]
    fn strip_options_defaults_to_whether_the_route_matches_on_options() {
        let dir = tempfile::tempdir().unwrap();
        let route = |extra: &str| {
            format!("[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n{extra}")
        };
        let strip =
            |extra: &str| compile(dir.path(), &route(extra)).unwrap().routes.0[0].strip_options;
        assert!(!strip(""));
        assert!(strip("match = { options = \"/.*endpoint=(\\\\w+).*/\" }\n"));
        assert!(!strip(
            "match = { options = \"/.*endpoint=(\\\\w+).*/\" }\nstrip_options = false\n"
        ));
        let error = compile(dir.path(), &route("strip_options = true\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("pgbastion.toml:4: strip_options = true needs match.options"),
            "{error}"
        );
    }

    #[test]
    fn debug_output_of_settings_holds_no_password() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("PGB_TEST_DEBUG_SECRET", "env-secret-pw");
        let scram = pgbastion_auth::scram::ScramSecret::generate(b"x", 4096).to_string();
        let text = format!(
            "[[user]]\nname = \"alice\"\npassword = \"plain-secret-pw\"\n\n\
             [[user]]\nname = \"bob\"\npassword = \"${{PGB_TEST_DEBUG_SECRET}}\"\n\n\
             [[user]]\nname = \"carol\"\npassword = \"{scram}\"\n\n\
             [[route]]\nmatch = {{ user = \"alice\" }}\nauth = \"md5\"\n\
             backend = \"postgres://app:url-secret-pw@h/db?password=query-secret-pw\"\n\n\
             [[route]]\nauth = \"scram\"\nbackend = \"postgres://h/db\"\n\
             auth_query = {{ query = \"SELECT 1\", user = \"q\", password = \"query-user-secret-pw\" }}\n"
        );
        let settings = compile(dir.path(), &text).unwrap();
        let debug = format!("{settings:?}");
        let kdf = crate::kdf::Kdf::with_threads(1).unwrap();
        let users = format!(
            "{:?}",
            crate::users::Users::new(settings.users.clone(), kdf)
        );
        let scram_keys = scram.split('$').nth(2).unwrap().to_owned();
        for secret in [
            "plain-secret-pw",
            "env-secret-pw",
            "url-secret-pw",
            "query-secret-pw",
            "query-user-secret-pw",
            scram_keys.as_str(),
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
            assert!(!users.contains(secret), "{secret} in {users}");
        }
        assert!(
            debug.contains("alice") && debug.contains("<redacted>"),
            "{debug}"
        );
    }

    #[test]
    fn a_jwt_table_without_one_key_source_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n\n\
                    [jwt]\nissuer = \"https://issuer.example\"\n";
        let error = compile(dir.path(), text).unwrap_err().to_string();
        assert!(
            error.contains("pgbastion.toml:5: [jwt] needs exactly one of"),
            "{error}"
        );
    }

    #[test]
    fn a_metrics_address_must_be_host_port_and_no_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let route = "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n";
        let with = |metrics: &str| {
            let listener = "[[listener]]\naddress = \"127.0.0.1:6432\"\n";
            compile(
                dir.path(),
                &format!("{listener}[metrics]\naddress = \"{metrics}\"\n{route}"),
            )
        };
        let settings = with("127.0.0.1:9930").unwrap();
        assert_eq!(
            settings.metrics_address,
            Some(SocketAddr::from(([127, 0, 0, 1], 9930)))
        );
        for (address, words) in [
            ("localhost", "is not host:port"),
            ("127.0.0.1:6432", "is also a listener's address"),
        ] {
            let error = with(address).unwrap_err().to_string();
            assert!(error.contains("pgbastion.toml:4:"), "{error}");
            assert!(error.contains(words), "{error}");
        }
        assert_eq!(compile(dir.path(), route).unwrap().metrics_address, None);
    }
}
