//! The backend login of one client: the route's backend for it, and the login with the mapped
//! user, database and parameters and the secret its proof gives.

use pgbastion_auth::scram::ClientCredential;
use pgbastion_gateway::ConnectionState;

use crate::admission::{Chosen, Proof};
use crate::backend::{BackendConn, BackendError, BackendSecret, Login};
use crate::config::ClientAddrParam;
use crate::route::{Captures, Route};
use crate::shared::Shared;
use crate::target::{Address, Target};

/// The route's backend for one client: placeholders filled in, the URL parsed, and the
/// certificate files that depend on the client checked.
pub fn backend_target(
    route: &Route,
    captures: &Captures,
    user: &str,
    database: &str,
) -> Result<Target, BackendError> {
    let url = route
        .backend_url(captures, user, database)
        .map_err(BackendError::Auth)?;
    let target = Target::parse(&url).map_err(|e| {
        BackendError::Auth(format!(
            "{} has an unusable backend URL for this client: {e}",
            route.describe()
        ))
    })?;
    route
        .check_templated_files(&target)
        .map_err(|message| BackendError::Tls {
            address: target.address.to_string(),
            message,
        })?;
    Ok(target)
}

/// Connects to the backend of the connection's route, with the mapped identity.
pub async fn connect_backend(
    shared: &Shared,
    state: &ConnectionState,
    chosen: &Chosen,
    proof: &Proof,
) -> Result<BackendConn, BackendError> {
    let client = state
        .client
        .as_ref()
        .ok_or_else(|| BackendError::Protocol("no startup message".to_owned()))?;
    let mut target = backend_target(
        &chosen.route,
        &chosen.captures,
        client.user(),
        client.database(),
    )?;
    // The client's own parameters, less protocol options and the `options` words that
    // routing consumed (PostgreSQL would refuse `endpoint=…` as a server argument).
    let mut parameters: Vec<(String, String)> = client
        .parameters
        .iter()
        .filter(|(name, _)| !name.starts_with("_pq_."))
        .filter_map(|(name, value)| match name.as_str() {
            "options" => chosen
                .route
                .backend_options(value)
                .map(|options| (name.clone(), options)),
            _ => Some((name.clone(), value.clone())),
        })
        .collect();
    for (name, value) in &target.parameters {
        if name == "application_name" && parameters.iter().any(|(n, _)| n == name) {
            continue;
        }
        set(&mut parameters, name, value.clone());
    }
    let decision = match proof {
        Proof::External(decision) => Some(decision),
        _ => None,
    };
    if let Some(decision) = decision {
        for (name, value) in &decision.parameters {
            set(&mut parameters, name, value.clone());
        }
        if let Some(host) = &decision.host {
            target.address = parse_host(host).ok_or_else(|| {
                BackendError::Auth(format!(
                    "the authenticator's _META_TARGET_HOST \"{host}\" is not host:port"
                ))
            })?;
        }
    }
    let param = |name: &str| {
        parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    // The authenticator's `user=` / `database=` lines, else the URL's, else the client's.
    // (`parameters` always holds the client's own user, so it cannot be asked.)
    let decided = |name: &str| {
        decision.and_then(|d| {
            d.parameters
                .iter()
                .rfind(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        })
    };
    let user = decided("user")
        .or_else(|| target.user.clone())
        .unwrap_or_else(|| client.user().to_owned());
    let database = decided("database")
        .or_else(|| target.database.clone())
        .unwrap_or_else(|| client.database().to_owned());
    match chosen.route.client_addr {
        ClientAddrParam::None => {}
        ClientAddrParam::Options => {
            let option = format!("-c pgbastion.client_addr={}", state.client_addr.ip());
            let options = match param("options") {
                Some(existing) if !existing.is_empty() => format!("{existing} {option}"),
                _ => option,
            };
            set(&mut parameters, "options", options);
        }
        ClientAddrParam::Crdb => set(
            &mut parameters,
            "crdb:remote_addr",
            state.client_addr.to_string(),
        ),
    }
    let mut secret = proof
        .forward_secret()
        .or_else(|| target.password.clone().map(BackendSecret::Password));
    let mut user = user;
    if chosen.route.auth_query.is_some() {
        // The client proved itself with the backend's own verifier: log in as that user with
        // the keys recovered from its proof.
        if let Proof::ScramKeys(keys) = proof {
            secret = Some(BackendSecret::ScramKeys(ClientCredential::Keys {
                client_key: keys.client_key,
                server_key: Some(keys.server_key),
            }));
            user = client.user().to_owned();
        }
    }
    let login = Login {
        target: &target,
        user: &user,
        database: &database,
        parameters: &parameters,
        secret: secret.as_ref(),
        proxy_from: chosen.route.proxy_protocol.then_some(state.client_addr),
        timeout: target
            .connect_timeout
            .unwrap_or(chosen.route.connect_timeout),
    };
    shared.connector.connect(login).await
}

fn set(parameters: &mut Vec<(String, String)>, name: &str, value: String) {
    match parameters.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value,
        None => parameters.push((name.to_owned(), value)),
    }
}

fn parse_host(host: &str) -> Option<Address> {
    let (name, port) = host.rsplit_once(':')?;
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!name.is_empty()).then(|| Address::Tcp(name.to_owned(), port))
}
