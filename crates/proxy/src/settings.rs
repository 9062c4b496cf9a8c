//! [`Settings`]: a configuration file checked and compiled into what the proxy runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use pgbastion_gateway::proxy_protocol::{ProxyProtocolMode, TrustedProxies};
use pgbastion_gateway::tls::{certified_key_from_pem, SniCertificates};
use pgbastion_gateway::{GatewayConfig, TlsConfig};
use toml::Spanned;

use crate::config::{
    self, AuthMode, ConfigError, ConfigFile, JwtConfig, ListenerConfig, LogConfig, ProxyProtocol,
    RouteConfig, SourceFile,
};
use crate::route::{AuthQuery, External, Matcher, Route, Routes};
use crate::target::Target;

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
}

/// Token validation settings (`[jwt]`), with paths and environment references resolved.
#[derive(Debug, Clone)]
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
    pub users: HashMap<String, String>,
    /// `[jwt]`.
    pub jwt: Option<Jwt>,
    /// `[log]`.
    pub log: LogConfig,
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

impl Compiler<'_> {
    fn error<T>(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError::at(self.file, Some(span), message.into()))
    }

    fn env(&self, value: &Spanned<String>) -> Result<String, ConfigError> {
        config::expand_env(self.file, value, &|_| false)
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
            if users.insert(user.name.clone(), password).is_some() {
                return self.error(
                    user.password.span(),
                    format!("user \"{}\" is listed twice", user.name),
                );
            }
        }
        let jwt = parsed.jwt.as_ref().map(|j| self.jwt(j)).transpose()?;
        if parsed.routes.is_empty() {
            return Err(ConfigError::at(
                self.file,
                None,
                "no [[route]]: add at least one, e.g.\n[[route]]\nauth = \"scram\"\nbackend = \"postgres://127.0.0.1:5432\""
                    .to_owned(),
            ));
        }
        let any_tls = listeners.iter().any(|l| l.gateway.tls.is_some());
        let routes = parsed
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(i + 1, r, &users, jwt.is_some(), any_tls))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            listeners,
            routes: Routes(routes),
            users,
            jwt,
            log: parsed.log,
        })
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
        })
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
            certs.add(&sni.name, pair(&sni.cert, &sni.key)?);
        }
        let client_ca = tls
            .client_ca
            .as_ref()
            .map(|ca| self.read(ca, "tls client_ca"))
            .transpose()?;
        TlsConfig::new(Arc::new(certs), client_ca.as_deref())
            .or_else(|e| self.error(tls.cert.span(), format!("tls: {e}")))
    }

    fn jwt(&self, j: &JwtConfig) -> Result<Jwt, ConfigError> {
        let sources = usize::from(j.oidc_discovery.is_some())
            + usize::from(j.jwks_url.is_some())
            + usize::from(!j.keys.is_empty());
        if sources != 1 {
            return Err(ConfigError::at(
                self.file,
                None,
                "[jwt] needs exactly one of oidc_discovery, jwks_url or keys".to_owned(),
            ));
        }
        let keys = j
            .keys
            .iter()
            .map(|k| {
                let path = self.file.resolve(&self.env(k)?);
                if path.exists() {
                    Ok(path)
                } else {
                    self.error(
                        k.span(),
                        format!("jwt key file {} does not exist", path.display()),
                    )
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Jwt {
            issuer: j.issuer.clone(),
            audience: j.audience.clone(),
            oidc_discovery: j.oidc_discovery.as_ref().map(|u| self.env(u)).transpose()?,
            jwks_url: j.jwks_url.as_ref().map(|u| self.env(u)).transpose()?,
            keys,
            claim: j.claim.clone(),
            refresh: j.refresh,
            leeway: j.leeway,
            scope: j.scope.clone(),
        })
    }

    fn matcher(&self, value: &Spanned<String>) -> Result<Matcher, ConfigError> {
        Matcher::parse(value.get_ref())
            .or_else(|e| self.error(value.span(), format!("invalid regex: {e}")))
    }

    fn route(
        &self,
        number: usize,
        r: &RouteConfig,
        users: &HashMap<String, String>,
        have_jwt: bool,
        any_tls: bool,
    ) -> Result<Route, ConfigError> {
        let m = &r.matcher;
        let mut parameters = Vec::new();
        for (name, value) in [
            ("user", &m.user),
            ("database", &m.database),
            ("options", &m.options),
        ] {
            if let Some(value) = value {
                parameters.push((name.to_owned(), self.matcher(value)?));
            }
        }
        for (name, value) in &m.parameters {
            parameters.push((name.clone(), self.matcher(value)?));
        }
        let claims = m
            .claim
            .iter()
            .map(|(name, value)| Ok((name.clone(), self.matcher(value)?)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let sni = m.sni.as_ref().map(|s| self.matcher(s)).transpose()?;
        let auth = *r.auth.get_ref();
        let auth_span = r.auth.span();
        if !claims.is_empty() && !matches!(auth, AuthMode::Jwt | AuthMode::Oauth) {
            return self.error(auth_span, "match.claim needs auth = \"jwt\" or \"oauth\"");
        }
        if matches!(auth, AuthMode::Jwt | AuthMode::Oauth) && !have_jwt {
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
        if uses_users && users.is_empty() {
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
        if auth == AuthMode::Cert && !any_tls {
            return self.error(
                auth_span,
                "auth = \"cert\" needs a listener with tls and client_ca",
            );
        }
        if auth.secret_in_clear() && !r.insecure && !any_tls {
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
        let external = match (&r.external, auth) {
            (Some(e), _) => {
                let command = e
                    .command
                    .get_ref()
                    .iter()
                    .map(|arg| self.env(&Spanned::new(e.command.span(), arg.clone())))
                    .collect::<Result<Vec<_>, _>>()?;
                if command.is_empty() {
                    return self.error(e.command.span(), "external.command is empty");
                }
                Some(External {
                    command,
                    timeout: e.timeout,
                    method: e.method,
                })
            }
            (None, AuthMode::External) => {
                return self.error(
                    auth_span,
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
        let backend = config::expand_env(self.file, &r.backend, &|name| {
            name == "user"
                || name == "database"
                || name
                    .parse::<usize>()
                    .is_ok_and(|n| n >= 1 && n <= capture_names.len())
                || capture_names.iter().any(|c| c.as_deref() == Some(name))
        })?;
        let probe = crate::route::substitute(&backend, &Default::default(), "user", "database");
        let target =
            Target::parse(&probe).or_else(|e| self.error(r.backend.span(), e.to_string()))?;
        for path in [&target.sslrootcert, &target.sslcert, &target.sslkey]
            .into_iter()
            .flatten()
        {
            if !path.to_string_lossy().contains('$')
                && !self.file.resolve(&path.to_string_lossy()).exists()
            {
                return self.error(
                    r.backend.span(),
                    format!("backend URL: file {} does not exist", path.display()),
                );
            }
        }
        let auth_query = match &r.auth_query {
            Some(q) => Some(AuthQuery {
                query: q.query.clone(),
                user: q.user.clone(),
                password: q.password.as_ref().map(|p| self.env(p)).transpose()?,
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
            proxy_protocol: r.proxy_protocol,
            client_addr: r.client_addr,
            connect_timeout: r.connect_timeout,
            external,
            auth_query,
        })
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
    }
}
