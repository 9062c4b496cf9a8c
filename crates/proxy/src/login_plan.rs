//! The backend login as a plan. [`LoginPlan::build`] decides, from the route, its captures,
//! the client's startup message, the client's address and what authentication proved, where
//! to connect and how (address, TLS), as whom (user, database, secret) and with which startup
//! parameters. It is a pure function, table-tested against the precedence rules of
//! `docs/configuration.md`; [`Connector::connect`](crate::backend::Connector::connect)
//! carries the plan out, and [`LoginPlan::pool_identity`] says which logins a pooled backend
//! connection could serve.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use pgbastion_gateway::{ClientInfo, ScramKeys};

use crate::backend::{BackendError, BackendSecret};
use crate::config::ClientAddrParam;
use crate::external::Decision;
use crate::route::{option_words, Captures, Route};
use crate::target::{Address, FillError, Target, TlsSettings};
use crate::template::Values;

/// What authenticating the client learned that the backend login uses.
#[derive(Debug, Clone, Copy)]
pub enum BackendProof<'a> {
    /// Nothing: the login uses the backend URL's credentials.
    None,
    /// The client's own password (`passthrough`): the backend checks it.
    Password(&'a str),
    /// The external authenticator's decision: its `user=`, `database=` and other parameter
    /// lines, `_META_TARGET_HOST` and `_META_TARGET_CRED`.
    External(&'a Decision),
    /// The keys recovered from the client's SCRAM proof. Used on `auth_query` routes only,
    /// where the verifier the client proved itself against is the backend's own.
    ScramKeys(&'a ScramKeys),
}

impl<'a> BackendProof<'a> {
    fn decision(&self) -> Option<&'a Decision> {
        match self {
            Self::External(decision) => Some(decision),
            _ => None,
        }
    }

    /// The value of the authenticator's last `name=` line.
    fn decided(&self, name: &str) -> Option<String> {
        let decision = self.decision()?;
        decision
            .parameters
            .iter()
            .rfind(|(n, _)| n == name)
            .map(|(_, value)| value.clone())
    }
}

/// The client's address as a startup parameter (the route's `client_addr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    /// `-c pgbastion.client_addr=IP` appended to `options`.
    Options(IpAddr),
    /// `crdb:remote_addr=IP:PORT` (CockroachDB).
    Crdb(SocketAddr),
}

/// The startup parameter `client_addr = "crdb"` sets.
const CRDB_REMOTE_ADDR: &str = "crdb:remote_addr";

impl ClientAddr {
    fn for_route(param: ClientAddrParam, client: SocketAddr) -> Option<Self> {
        match param {
            ClientAddrParam::None => None,
            ClientAddrParam::Options => Some(Self::Options(client.ip())),
            ClientAddrParam::Crdb => Some(Self::Crdb(client)),
        }
    }

    fn apply(self, parameters: &mut Vec<(String, String)>) {
        match self {
            Self::Options(ip) => {
                let word = format!("-c pgbastion.client_addr={ip}");
                let options = match get(parameters, "options") {
                    Some(existing) if !existing.is_empty() => format!("{existing} {word}"),
                    _ => word,
                };
                set(parameters, "options", options);
            }
            Self::Crdb(address) => set(parameters, CRDB_REMOTE_ADDR, address.to_string()),
        }
    }
}

/// One backend login, decided: everything [`Connector::connect`] needs.
///
/// [`Connector::connect`]: crate::backend::Connector::connect
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPlan {
    /// Where to connect.
    pub address: Address,
    /// How to set up TLS.
    pub tls: TlsSettings,
    /// The backend user.
    pub user: String,
    /// The backend database.
    pub database: String,
    /// The other startup parameters, in order, without the client's address
    /// ([`LoginPlan::startup_parameters`] adds it).
    pub parameters: Vec<(String, String)>,
    /// The client's address as a startup parameter, if the route passes it.
    pub client_addr: Option<ClientAddr>,
    /// The secret, if the backend asks for one.
    pub secret: Option<BackendSecret>,
    /// Send a PROXY v2 header saying the connection comes from this client address.
    pub proxy_from: Option<SocketAddr>,
    /// For the whole connect and login.
    pub timeout: Duration,
}

impl LoginPlan {
    /// The login for a client of `route`, from (in precedence order, see
    /// `docs/configuration.md`): what authentication proved, the route's backend URL filled
    /// with `captures` and the client's user and database, and the client's startup message.
    pub fn build(
        route: &Route,
        captures: &Captures,
        client: &ClientInfo,
        client_addr: SocketAddr,
        proof: BackendProof<'_>,
    ) -> Result<Self, BackendError> {
        let mut target = fill_target(route, captures, client.user(), client.database())?;
        if let Some(host) = proof.decision().and_then(|d| d.host.as_deref()) {
            target.address = authenticator_host(host)?;
        }
        let keys = match proof {
            BackendProof::ScramKeys(keys) if route.auth_query.is_some() => Some(keys),
            _ => None,
        };
        let client_addr_param = ClientAddr::for_route(route.client_addr, client_addr);
        Ok(Self {
            user: backend_user(&target, client, &proof, keys.is_some()),
            database: proof
                .decided("database")
                .or_else(|| target.database.clone())
                .unwrap_or_else(|| client.database().to_owned()),
            parameters: parameters(route, client, &target, &proof, client_addr_param),
            client_addr: client_addr_param,
            secret: secret(&target, &proof, keys),
            proxy_from: route.proxy_protocol.then_some(client_addr),
            timeout: target.connect_timeout.unwrap_or(route.connect_timeout),
            address: target.address,
            tls: target.tls,
        })
    }

    /// The startup parameters to send besides `user` and `database`: [`LoginPlan::parameters`]
    /// with the client's address added.
    pub fn startup_parameters(&self) -> Vec<(String, String)> {
        let mut parameters = self.parameters.clone();
        if let Some(client_addr) = self.client_addr {
            client_addr.apply(&mut parameters);
        }
        parameters
    }

    /// What a pooled backend connection logged in by this plan shares with other clients'
    /// logins ([`PoolKey`]), and the session parameters a pool sets with `SET` when it hands
    /// such a connection to this client (every startup parameter but `options` and
    /// `replication`, which only a login can set). The client's address (PROXY header,
    /// `client_addr`) is in neither: it belongs to one client.
    pub fn pool_identity(&self) -> (PoolKey, Vec<(String, String)>) {
        let (login_only, mut session): (Vec<_>, Vec<_>) = self
            .parameters
            .iter()
            .cloned()
            .partition(|(name, _)| LOGIN_ONLY.contains(&name.as_str()));
        // `-c name=value` words of `options` are settings like any other: set per client,
        // so that clients differing only in them share a pool.
        let options = get(&login_only, "options").map(|options| {
            let (settings, rest) = split_options(options);
            session.extend(settings);
            rest
        });
        let key = PoolKey {
            address: self.address.clone(),
            tls: self.tls.clone(),
            user: self.user.clone(),
            database: self.database.clone(),
            options: options.filter(|rest| !rest.is_empty()),
            replication: get(&login_only, "replication").map(str::to_owned),
        };
        (key, session)
    }

    /// The login of a pooled backend connection serving clients like this one: nothing of
    /// one client (its address, in a PROXY header or a parameter), only the parameters a
    /// login alone can set, and of `options` only what is not a `-c` setting; the rest is
    /// set per client at checkout.
    pub fn for_pool(&self) -> Self {
        let (key, _) = self.pool_identity();
        let mut parameters: Vec<(String, String)> = Vec::new();
        if let Some(options) = key.options {
            parameters.push(("options".to_owned(), options));
        }
        if let Some(replication) = key.replication {
            parameters.push(("replication".to_owned(), replication));
        }
        Self {
            parameters,
            client_addr: None,
            proxy_from: None,
            ..self.clone()
        }
    }
}

/// Splits a startup `options` string into its settings (`-c name=value`, `-cname=value`,
/// `--name=value`, values unescaped) and its other words, kept as written.
fn split_options(options: &str) -> (Vec<(String, String)>, String) {
    let mut settings = Vec::new();
    let mut rest: Vec<&str> = Vec::new();
    let mut words = option_words(options).into_iter();
    while let Some(word) = words.next() {
        let setting = match word {
            "-c" => match words.next() {
                Some(next) => Some(next),
                None => {
                    rest.push(word);
                    continue;
                }
            },
            _ => word.strip_prefix("-c").or_else(|| word.strip_prefix("--")),
        };
        match setting.and_then(|s| s.split_once('=')) {
            Some((name, value)) if !name.is_empty() => {
                settings.push((unescape(name).replace('-', "_"), unescape(value)));
            }
            _ => rest.push(word),
        }
    }
    (settings, rest.join(" "))
}

/// An `options` word's text: each backslash keeps the character after it.
fn unescape(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Startup parameters that cannot be changed with `SET` after login.
const LOGIN_ONLY: [&str; 2] = ["options", "replication"];

/// What backend logins must have in common for a pooled connection of one to serve another:
/// the same backend (address, TLS settings), role, database and login-only parameters. The
/// secret is not part of it: a pool must hand a connection only to a client authenticated
/// for its user and database. No caller outside tests yet: the connection pools that follow
/// are keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Where.
    pub address: Address,
    /// How TLS is set up.
    pub tls: TlsSettings,
    /// The backend user.
    pub user: String,
    /// The backend database.
    pub database: String,
    /// The `options` startup parameter, without the client's address that `client_addr`
    /// adds.
    pub options: Option<String>,
    /// The `replication` startup parameter.
    pub replication: Option<String>,
}

/// The route's backend for one client: placeholders filled in. Pure: the certificate files
/// it names are checked by [`Route::check_templated_files`].
pub fn fill_target(
    route: &Route,
    captures: &Captures,
    user: &str,
    database: &str,
) -> Result<Target, BackendError> {
    let values = Values {
        captures,
        user,
        database,
    };
    route.backend.fill(&values).map_err(|error| {
        let route = route.describe();
        BackendError::Auth(match &error {
            FillError::Target(e) => {
                format!("{route} has an unusable backend URL for this client: {e}")
            }
            FillError::FileName(_) => format!("{route}: {error}"),
        })
    })
}

/// On `auth_query` routes (with the client's SCRAM keys), the client's user; else the
/// authenticator's `user=` line, the URL's user, the client's user, in that order.
fn backend_user(
    target: &Target,
    client: &ClientInfo,
    proof: &BackendProof<'_>,
    with_keys: bool,
) -> String {
    if with_keys {
        return client.user().to_owned();
    }
    proof
        .decided("user")
        .or_else(|| target.user.clone())
        .unwrap_or_else(|| client.user().to_owned())
}

/// The SCRAM keys on `auth_query` routes; else the client's password (passthrough) or the
/// authenticator's `_META_TARGET_CRED`, else the URL's password.
fn secret(
    target: &Target,
    proof: &BackendProof<'_>,
    keys: Option<&ScramKeys>,
) -> Option<BackendSecret> {
    if let Some(keys) = keys {
        return Some(BackendSecret::ScramKeys {
            client_key: keys.client_key,
            server_key: keys.server_key,
        });
    }
    let forwarded = match proof {
        BackendProof::Password(password) => Some((*password).to_owned()),
        BackendProof::External(decision) => decision.credential.clone(),
        BackendProof::None | BackendProof::ScramKeys(_) => None,
    };
    forwarded
        .or_else(|| target.password.clone())
        .map(BackendSecret::Password)
}

/// Later wins: the client's parameters (less the protocol options `_pq_.*` and the `options`
/// words routing consumed), the URL's (but the client's `application_name` stays), the
/// authenticator's lines. `user` and `database` are chosen apart; with `client_addr =
/// "crdb"`, a `crdb:remote_addr` of the client's own is replaced by the real one.
fn parameters(
    route: &Route,
    client: &ClientInfo,
    target: &Target,
    proof: &BackendProof<'_>,
    client_addr: Option<ClientAddr>,
) -> Vec<(String, String)> {
    let mut parameters: Vec<(String, String)> = client
        .parameters
        .iter()
        .filter(|(name, _)| !name.starts_with("_pq_."))
        .filter_map(|(name, value)| match name.as_str() {
            "options" => route
                .backend_options(value)
                .map(|options| (name.clone(), options)),
            _ => Some((name.clone(), value.clone())),
        })
        .collect();
    for (name, value) in &target.parameters {
        if name == "application_name" && get(&parameters, name).is_some() {
            continue;
        }
        set(&mut parameters, name, value.clone());
    }
    for (name, value) in proof.decision().map_or(&[][..], |d| &d.parameters) {
        set(&mut parameters, name, value.clone());
    }
    let crdb = matches!(client_addr, Some(ClientAddr::Crdb(_)));
    parameters.retain(|(name, _)| {
        name != "user" && name != "database" && !(crdb && name == CRDB_REMOTE_ADDR)
    });
    parameters
}

/// `_META_TARGET_HOST`: `host:port`, `[::1]:5432`.
fn authenticator_host(host: &str) -> Result<Address, BackendError> {
    let parsed = host.rsplit_once(':').and_then(|(name, port)| {
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().ok()?;
        (!name.is_empty()).then(|| Address::Tcp(name.to_owned(), port))
    });
    parsed.ok_or_else(|| {
        BackendError::Auth(format!(
            "the authenticator's _META_TARGET_HOST \"{host}\" is not host:port"
        ))
    })
}

fn get<'p>(parameters: &'p [(String, String)], name: &str) -> Option<&'p str> {
    parameters
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value.as_str())
}

fn set(parameters: &mut Vec<(String, String)>, name: &str, value: String) {
    match parameters.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value,
        None => parameters.push((name.to_owned(), value)),
    }
}

#[cfg(test)]
mod tests;
