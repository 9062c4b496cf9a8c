//! The backend login of one client: the route's backend for it, the [`LoginPlan`] its proof
//! gives, and the login itself.

use pgbastion_gateway::ConnectionState;

use crate::admission::{Chosen, Proof};
use crate::backend::{BackendConn, BackendError};
use crate::login_plan::{self, BackendProof, LoginPlan};
use crate::route::{Captures, Route};
use crate::shared::Shared;
use crate::target::{Address, Target, TlsSettings};

/// The route's backend for one client: placeholders filled in, and the certificate files
/// that depend on the client checked.
pub fn backend_target(
    route: &Route,
    captures: &Captures,
    user: &str,
    database: &str,
) -> Result<Target, BackendError> {
    let target = login_plan::fill_target(route, captures, user, database)?;
    check_files(route, &target.address, &target.tls)?;
    Ok(target)
}

/// Certificate files named through placeholders must exist.
fn check_files(route: &Route, address: &Address, tls: &TlsSettings) -> Result<(), BackendError> {
    route
        .check_templated_files(tls)
        .map_err(|message| BackendError::Tls {
            address: address.to_string(),
            message,
        })
}

/// The login of the connection's client on its route, as [`LoginPlan::build`] decides, with
/// the certificate files it names checked.
pub fn plan(
    state: &ConnectionState,
    chosen: &Chosen,
    proof: &Proof,
) -> Result<LoginPlan, BackendError> {
    let client = state
        .client
        .as_ref()
        .ok_or_else(|| BackendError::Protocol("no startup message".to_owned()))?;
    let plan = LoginPlan::build(
        &chosen.route,
        &chosen.captures,
        client,
        state.client_addr,
        backend_proof(proof),
    )?;
    check_files(&chosen.route, &plan.address, &plan.tls)?;
    Ok(plan)
}

/// Connects to the backend of the connection's route, with the mapped identity.
pub async fn connect_backend(
    shared: &Shared,
    state: &ConnectionState,
    chosen: &Chosen,
    proof: &Proof,
) -> Result<BackendConn, BackendError> {
    let plan = plan(state, chosen, proof)?;
    shared.lasting.connector.connect(&plan).await
}

/// What authentication proved that the backend login uses.
fn backend_proof(proof: &Proof) -> BackendProof<'_> {
    match proof {
        Proof::External(decision) => BackendProof::External(decision),
        Proof::ScramKeys(keys) => BackendProof::ScramKeys(keys),
        Proof::Password(password) => BackendProof::Password(password),
        Proof::Local | Proof::Token(_) | Proof::Passthrough(_) => BackendProof::None,
    }
}
