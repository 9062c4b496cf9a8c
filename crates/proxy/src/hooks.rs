//! The proxy's gateway hooks: limits at connect, routing at startup, the route's authentication mode,
//! and credential checks (local users, tokens, the backend itself, an external command).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use pgbastion_auth::scram::ScramSecret;
use pgbastion_gateway::{
    AuthMethod, ClientConn, ClientIo, ConnectionState, Credential, Flow, HookError, HookResult,
    Hooks,
};
use pgbastion_wire::SqlState;

use crate::auth_query;
use crate::backend::{BackendConn, BackendSecret};
use crate::config::{AuthMode, ExternalMethod};
use crate::external;
use crate::limits::ConnectionLimiter;
use crate::route::{Captures, MatchInput, Route};
use crate::session::{self, Shared};

/// The route a connection matched, and its captures.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The route.
    pub route: Route,
    /// Regex captures for the backend URL.
    pub captures: Captures,
}

/// A secret for the backend learned while authenticating the client.
#[derive(Clone)]
pub struct ForwardSecret(pub BackendSecret);

/// A backend connection opened while checking the client's password (passthrough).
pub struct Preconnected(pub Mutex<Option<BackendConn>>);

/// The external authenticator's decision for this connection.
#[derive(Debug, Clone)]
pub struct ExternalDecision(pub external::Decision);

/// The verified token's claims (string values).
#[derive(Debug, Clone)]
pub struct TokenClaims(pub BTreeMap<String, String>);

/// Hooks of one listener.
pub struct ProxyHooks {
    pub(crate) shared: Arc<Shared>,
    pub(crate) limiter: Arc<ConnectionLimiter>,
}

fn chosen(state: &ConnectionState) -> HookResult<Chosen> {
    state.extensions.get::<Chosen>().cloned().ok_or_else(|| {
        HookError::new(
            SqlState::INTERNAL_ERROR,
            "no route was chosen for this connection",
        )
    })
}

/// What routes are matched against: the SNI name, the startup parameters and, once verified,
/// the token's claims.
fn match_input<'a>(
    state: &'a ConnectionState,
    claims: Option<&'a BTreeMap<String, String>>,
) -> HookResult<MatchInput<'a>> {
    let client = state
        .client
        .as_ref()
        .ok_or_else(|| refused("no startup message"))?;
    Ok(MatchInput {
        sni: state
            .tls
            .as_ref()
            .and_then(|tls| tls.server_name.as_deref()),
        parameters: &client.parameters,
        claims,
    })
}

fn refused(message: impl Into<String>) -> HookError {
    HookError::new(SqlState::INVALID_AUTHORIZATION_SPECIFICATION, message)
}

impl ProxyHooks {
    /// Counts the connection against the listener's limits from accept on (a socket that
    /// never sends a startup packet counts too), keeping the permit with the connection.
    fn admit(&self, state: &mut ConnectionState) -> HookResult<()> {
        let permit = self
            .limiter
            .admit(state.client_addr.ip())
            .map_err(|refusal| HookError::new(SqlState::TOO_MANY_CONNECTIONS, refusal.message()))?;
        state.extensions.insert(permit);
        Ok(())
    }

    fn start(&self, state: &mut ConnectionState) -> HookResult<()> {
        let input = match_input(state, None)?;
        let client = state
            .client
            .as_ref()
            .ok_or_else(|| refused("no startup message"))?;
        let Some((route, captures)) = self.shared.routes.select(&input) else {
            let sni = input
                .sni
                .map(|sni| format!(", server name \"{sni}\""))
                .unwrap_or_default();
            return Err(refused(format!(
                "no route for user \"{}\", database \"{}\"{sni}",
                client.user(),
                client.database()
            )));
        };
        if route.auth.secret_in_clear() && !route.insecure && state.tls.is_none() {
            return Err(refused(format!(
                "{} takes secrets in clear and accepts only TLS connections (connect with sslmode=require)",
                route.describe()
            )));
        }
        let chosen = Chosen {
            route: route.clone(),
            captures,
        };
        state.extensions.insert(chosen);
        Ok(())
    }

    async fn check(
        &self,
        state: &mut ConnectionState,
        credential: &Credential,
    ) -> HookResult<bool> {
        let Chosen { route, .. } = chosen(state)?;
        match route.auth {
            AuthMode::Cleartext | AuthMode::Md5 => Ok(self.shared.users.check(credential)),
            AuthMode::Cert => Ok(matches!(
                credential,
                Credential::Certificate { user, common_name: Some(cn) } if user == cn
            )),
            AuthMode::Jwt | AuthMode::Oauth => self.check_token(state, credential, route.auth),
            AuthMode::Passthrough => self.passthrough(state, credential).await,
            AuthMode::External => self.external(state, credential, &route).await,
            AuthMode::Trust | AuthMode::Scram => Ok(false),
        }
    }

    fn check_token(
        &self,
        state: &mut ConnectionState,
        credential: &Credential,
        auth: AuthMode,
    ) -> HookResult<bool> {
        let token = match credential {
            Credential::Jwt { token, .. } | Credential::BearerToken { token, .. } => token,
            _ => return Ok(false),
        };
        let tokens = self
            .shared
            .tokens
            .as_ref()
            .ok_or_else(|| refused("token authentication is not configured"))?;
        let claims = tokens.verify(token).map_err(|e| {
            HookError::new(SqlState::INVALID_PASSWORD, format!("token refused: {e}"))
        })?;
        let user = credential.user();
        match claims.get(&tokens.claim) {
            Some(value) if value == user => {}
            _ => {
                return Err(HookError::new(
                    SqlState::INVALID_PASSWORD,
                    format!(
                        "token refused: its \"{}\" claim does not name user \"{user}\"",
                        tokens.claim
                    ),
                ))
            }
        }
        let input = match_input(state, Some(&claims))?;
        let (route, captures) = self
            .shared
            .routes
            .select_with_claims(&input, auth)
            .ok_or_else(|| {
                refused(format!(
                    "no route for user \"{user}\" with this token's claims"
                ))
            })?;
        state.extensions.insert(Chosen {
            route: route.clone(),
            captures,
        });
        state.extensions.insert(TokenClaims(claims));
        Ok(true)
    }

    async fn passthrough(
        &self,
        state: &mut ConnectionState,
        credential: &Credential,
    ) -> HookResult<bool> {
        let Credential::Password { password, .. } = credential else {
            return Ok(false);
        };
        let secret = BackendSecret::Password(password.clone());
        state.extensions.insert(ForwardSecret(secret));
        match session::connect_backend(&self.shared, state).await {
            Ok(backend) => {
                state
                    .extensions
                    .insert(Preconnected(Mutex::new(Some(backend))));
                Ok(true)
            }
            Err(error) => {
                tracing::warn!(client = %state.client_addr, %error, "passthrough: backend login failed");
                let response = error.to_client();
                Err(HookError::new(
                    response.sqlstate().unwrap_or(SqlState::INVALID_PASSWORD),
                    response.message(),
                ))
            }
        }
    }

    async fn external(
        &self,
        state: &mut ConnectionState,
        credential: &Credential,
        route: &Route,
    ) -> HookResult<bool> {
        let Some(authenticator) = &route.external else {
            return Ok(false);
        };
        let (secret, salt) = match credential {
            Credential::Password { password, .. } => (password.clone(), [0u8; 4]),
            Credential::Md5 { response, salt, .. } => (response.clone(), *salt),
            _ => return Ok(false),
        };
        let parameters = state
            .client
            .as_ref()
            .map(|c| c.parameters.clone())
            .unwrap_or_default();
        let input = external::Input {
            parameters: &parameters,
            credential: &secret,
            salt,
        };
        match external::run(
            &authenticator.command,
            &authenticator.dir,
            authenticator.timeout,
            &input,
        )
        .await
        {
            Ok(decision) => {
                if let Some(credential) = &decision.credential {
                    state
                        .extensions
                        .insert(ForwardSecret(BackendSecret::Password(credential.clone())));
                }
                state.extensions.insert(ExternalDecision(decision));
                Ok(true)
            }
            Err(external::ExternalError::Refused(status)) => {
                tracing::info!(client = %state.client_addr, %status, "external authenticator refused the client");
                Ok(false)
            }
            Err(error) => {
                tracing::warn!(client = %state.client_addr, %error, "external authenticator failed");
                Err(HookError::new(
                    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                    "authentication failed: the authenticator did not answer",
                ))
            }
        }
    }
}

impl Hooks for ProxyHooks {
    fn on_connect(
        &self,
        state: &mut ConnectionState,
    ) -> impl Future<Output = HookResult<()>> + Send {
        let result = self.admit(state);
        async move { result }
    }

    fn on_startup<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        let result = self.start(conn.state_mut()).map(|()| Flow::Continue);
        async move { result }
    }

    fn auth_method(
        &self,
        state: &ConnectionState,
    ) -> impl Future<Output = HookResult<AuthMethod>> + Send {
        let method = chosen(state).map(|Chosen { route, .. }| match route.auth {
            AuthMode::Trust => AuthMethod::Trust,
            AuthMode::Cleartext | AuthMode::Passthrough => AuthMethod::Cleartext,
            AuthMode::Md5 => AuthMethod::Md5,
            AuthMode::Scram => AuthMethod::ScramSha256,
            AuthMode::Cert => AuthMethod::Certificate,
            AuthMode::Jwt => AuthMethod::JwtPassword,
            AuthMode::Oauth => AuthMethod::OAuthBearer {
                issuer: self.shared.oauth_issuer.clone(),
                scope: self.shared.oauth_scope.clone(),
            },
            AuthMode::External => match route.external.map(|e| e.method) {
                Some(ExternalMethod::Md5) => AuthMethod::Md5,
                _ => AuthMethod::Cleartext,
            },
        });
        async move { method }
    }

    fn validate_credentials(
        &self,
        state: &mut ConnectionState,
        credential: &Credential,
    ) -> impl Future<Output = HookResult<bool>> + Send {
        self.check(state, credential)
    }

    fn scram_secret(
        &self,
        state: &ConnectionState,
    ) -> impl Future<Output = HookResult<Option<ScramSecret>>> + Send {
        let user = state
            .client
            .as_ref()
            .map(|c| c.user().to_owned())
            .unwrap_or_default();
        let chosen = state.extensions.get::<Chosen>().cloned();
        let database = state
            .client
            .as_ref()
            .map(|c| c.database().to_owned())
            .unwrap_or_default();
        async move {
            let Some(Chosen { route, captures }) = chosen else {
                return Ok(None);
            };
            let Some(query) = &route.auth_query else {
                return Ok(self.shared.users.scram_secret(&user));
            };
            let fetched = async {
                let target = session::backend_target(&route, &captures, &user, &database)?;
                let db = target.database.clone().unwrap_or(database);
                auth_query::fetch_secret(
                    query,
                    &target,
                    &db,
                    &user,
                    route.connect_timeout,
                    &self.shared.connector,
                )
                .await
            };
            fetched.await.map_err(|error| {
                tracing::warn!(%user, %error, "auth_query failed");
                let response = error.to_client();
                HookError::new(
                    response.sqlstate().unwrap_or(SqlState::CONNECTION_FAILURE),
                    format!("auth_query: {}", response.message()),
                )
            })
        }
    }

    fn after_auth<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        // The session sends the backend's ParameterStatus, a minted BackendKeyData and
        // ReadyForQuery once the backend is connected.
        let _ = conn;
        async { Ok(Flow::Handled) }
    }
}
