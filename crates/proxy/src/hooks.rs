//! The proxy's gateway hooks: limits at connect, routing at startup, the route's authentication mode,
//! and credential checks (local users, tokens, the backend itself, an external command). What
//! they decide goes into the connection's [`ProxyConn`], which the session gets by move.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use pgbastion_auth::scram::ScramSecret;
use pgbastion_gateway::{
    AuthMethod, ClientConn, ClientIo, ConnectionState, Credential, Flow, HookError, HookResult,
    Hooks, ScramKeys,
};
use pgbastion_jwt::JwtError;

use crate::admission::{Chosen, Proof, ProxyConn};
use crate::auth_query;
use crate::config::{AuthMode, ExternalMethod};
use crate::external;
use crate::limits::ConnectionLimiter;
use crate::login;
use crate::metrics::RefusalReason;
use crate::refusal::Refusal;
use crate::route::{AuthQuery, Captures, External, MatchInput, Route};
use crate::shared::Shared;

/// Hooks of one listener.
pub struct ProxyHooks {
    pub(crate) shared: Arc<Shared>,
    pub(crate) limiter: Arc<ConnectionLimiter>,
}

/// Adds what the startup told of the connection to its `conn` span (see
/// [`serve_client`](crate::session::serve_client)).
fn record_in_span(state: &ConnectionState) {
    let span = tracing::Span::current();
    span.record("client", tracing::field::display(state.client_addr));
    if let Some(sni) = state
        .tls
        .as_ref()
        .and_then(|tls| tls.server_name.as_deref())
    {
        span.record("sni", sni);
    }
    if let Some(client) = &state.client {
        span.record("user", client.user());
        span.record("database", client.database());
    }
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
        .ok_or_else(|| HookError::from(Refusal::Internal("no startup message")))?;
    Ok(MatchInput {
        sni: state
            .tls
            .as_ref()
            .and_then(|tls| tls.server_name.as_deref()),
        parameters: &client.parameters,
        claims,
    })
}

/// Routes (and the admin console) whose authentication sends a secret in clear refuse
/// plaintext clients unless they say `insecure = true`; `what` names them to the client.
pub(crate) fn require_tls_for_secrets(
    auth: AuthMode,
    insecure: bool,
    what: impl std::fmt::Display,
    state: &ConnectionState,
) -> HookResult<()> {
    if auth.secret_in_clear() && !insecure && state.tls.is_none() {
        return Err(Refusal::SecretsInClear {
            route: what.to_string(),
        }
        .into());
    }
    Ok(())
}

/// [`require_tls_for_secrets`] for `route`.
fn route_requires_tls(route: &Route, state: &ConnectionState) -> HookResult<()> {
    require_tls_for_secrets(route.auth, route.insecure, route.describe(), state)
}

impl ProxyHooks {
    /// Counts the connection against the listener's limits from accept on (a socket that
    /// never sends a startup packet counts too), keeping the permit with the connection.
    fn admit(&self, state: &ConnectionState, data: &mut ProxyConn) -> HookResult<()> {
        let permit = self
            .limiter
            .admit(state.client_addr.ip())
            .map_err(|refusal| {
                self.shared.lasting.metrics.refused(RefusalReason::Limits);
                Refusal::TooManyConnections(refusal.message())
            })?;
        data.permit = Some(permit);
        Ok(())
    }

    fn start(&self, state: &ConnectionState, data: &mut ProxyConn) -> HookResult<()> {
        record_in_span(state);
        if let Some(admin) = self.console_for(state) {
            return self.start_console(admin, state, data);
        }
        let input = match_input(state, None)?;
        let Some((route, captures)) = self.shared.routes.select(&input) else {
            self.shared.lasting.metrics.refused(RefusalReason::NoRoute);
            let client = state.client.as_ref();
            return Err(Refusal::NoRoute {
                user: client.map(|c| c.user().to_owned()).unwrap_or_default(),
                database: client.map(|c| c.database().to_owned()),
                sni: input.sni.map(str::to_owned),
            }
            .into());
        };
        let metrics = &self.shared.lasting.metrics;
        metrics.route_hit(route.number);
        route_requires_tls(route, state).inspect_err(|_| metrics.refused(RefusalReason::Tls))?;
        data.attempt = Some(metrics.auth_attempt(route.auth.name()));
        tracing::Span::current().record("route", route.number);
        data.chosen = Some(Chosen {
            route: route.clone(),
            captures,
        });
        Ok(())
    }

    async fn check(
        &self,
        state: &ConnectionState,
        data: &mut ProxyConn,
        credential: &Credential,
    ) -> HookResult<bool> {
        let auth = match self.console_auth(data) {
            Some(auth) => auth,
            None => data.chosen()?.route.auth,
        };
        match auth {
            AuthMode::Cleartext | AuthMode::Md5 => Ok(self.shared.users.check(credential).await),
            AuthMode::Cert => Ok(matches!(
                credential,
                Credential::Certificate { user, common_name: Some(cn) } if user == cn
            )),
            AuthMode::Jwt | AuthMode::Oauth => self.check_token(state, data, credential, auth),
            AuthMode::Passthrough => self.passthrough(state, data, credential).await,
            AuthMode::External => self.external(state, data, credential).await,
            AuthMode::Trust | AuthMode::Scram => Ok(false),
        }
    }

    fn check_token(
        &self,
        state: &ConnectionState,
        data: &mut ProxyConn,
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
            .ok_or(Refusal::TokensNotConfigured)?;
        let claims = tokens.verify(token).map_err(|error| {
            if matches!(
                error,
                JwtError::KeyLoad(_) | JwtError::Fetch(_) | JwtError::InsecureUrl(_)
            ) {
                tracing::warn!(%error, "token keys unavailable while checking a token");
            }
            Refusal::Token(error)
        })?;
        let user = credential.user();
        match claims.get(&tokens.claim) {
            Some(value) if value == user => {}
            _ => {
                return Err(Refusal::ClaimMismatch {
                    claim: tokens.claim.clone(),
                    user: user.to_owned(),
                }
                .into())
            }
        }
        if data.console {
            // The console has no route to choose again with the claims.
            data.proof = Proof::Token(claims);
            return Ok(true);
        }
        let input = match_input(state, Some(&claims))?;
        let (route, captures) = self
            .shared
            .routes
            .select_with_claims(&input, auth)
            .ok_or_else(|| Refusal::NoRoute {
                user: user.to_owned(),
                database: None,
                sni: None,
            })?;
        // The token was read on the route chosen without claims; the rule is the final
        // route's, which may be stricter.
        route_requires_tls(route, state)?;
        tracing::Span::current().record("route", route.number);
        data.chosen = Some(Chosen {
            route: route.clone(),
            captures,
        });
        data.proof = Proof::Token(claims);
        Ok(true)
    }

    /// The gateway's authentication method for `auth` (`external`: the route's external
    /// authenticator).
    fn method_of(&self, auth: AuthMode, external: Option<&External>) -> AuthMethod {
        match auth {
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
            AuthMode::External => match external.map(|e| e.method) {
                Some(ExternalMethod::Md5) => AuthMethod::Md5,
                _ => AuthMethod::Cleartext,
            },
        }
    }

    /// The auth_query verifier of `user` on the route's backend.
    async fn lookup(
        &self,
        query: &AuthQuery,
        route: &Route,
        captures: &Captures,
        user: &str,
        database: &str,
    ) -> Result<Option<ScramSecret>, auth_query::LookupError> {
        let target = login::backend_target(route, captures, user, database)?;
        let database = target.database.as_deref().unwrap_or(database);
        let lookup = auth_query::Lookup {
            query,
            route: route.number,
            target: &target,
            database,
            user,
            timeout: route.connect_timeout,
        };
        self.shared
            .lookups
            .fetch(&lookup, &self.shared.lasting.connector)
            .await
    }

    async fn passthrough(
        &self,
        state: &ConnectionState,
        data: &mut ProxyConn,
        credential: &Credential,
    ) -> HookResult<bool> {
        let Credential::Password { password, .. } = credential else {
            return Ok(false);
        };
        let proof = Proof::Password(password.clone());
        match login::connect_backend(&self.shared, state, data.chosen()?, &proof).await {
            Ok(backend) => {
                data.proof = Proof::Passthrough(backend);
                Ok(true)
            }
            Err(error) => {
                tracing::warn!(client = %state.client_addr, %error, "passthrough: backend login failed");
                Err(Refusal::BackendBeforeAuth {
                    error,
                    user: credential.user().to_owned(),
                }
                .into())
            }
        }
    }

    async fn external(
        &self,
        state: &ConnectionState,
        data: &mut ProxyConn,
        credential: &Credential,
    ) -> HookResult<bool> {
        let Some(authenticator) = &data.chosen()?.route.external else {
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
                data.proof = Proof::External(decision);
                Ok(true)
            }
            Err(external::ExternalError::Refused(status)) => {
                tracing::info!(client = %state.client_addr, %status, "external authenticator refused the client");
                Ok(false)
            }
            Err(error) => {
                tracing::warn!(client = %state.client_addr, %error, "external authenticator failed");
                Err(Refusal::AuthenticatorFailed.into())
            }
        }
    }
}

impl Hooks for ProxyHooks {
    type Data = ProxyConn;

    fn on_connect(
        &self,
        state: &ConnectionState,
        data: &mut ProxyConn,
    ) -> impl Future<Output = HookResult<()>> + Send {
        let result = self.admit(state, data);
        async move { result }
    }

    fn on_startup<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        data: &mut ProxyConn,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        let result = self.start(conn.state(), data).map(|()| Flow::Continue);
        async move { result }
    }

    fn auth_method(
        &self,
        _state: &ConnectionState,
        data: &mut ProxyConn,
    ) -> impl Future<Output = HookResult<AuthMethod>> + Send {
        let method = match self.console_auth(data) {
            Some(auth) => Ok(self.method_of(auth, None)),
            None => data
                .chosen()
                .map(|Chosen { route, .. }| self.method_of(route.auth, route.external.as_ref())),
        };
        async move { Ok(method?) }
    }

    fn validate_credentials(
        &self,
        state: &ConnectionState,
        data: &mut ProxyConn,
        credential: &Credential,
    ) -> impl Future<Output = HookResult<bool>> + Send {
        self.check(state, data, credential)
    }

    async fn scram_secret(
        &self,
        state: &ConnectionState,
        data: &mut ProxyConn,
    ) -> HookResult<Option<ScramSecret>> {
        let Some(client) = &state.client else {
            return Ok(None);
        };
        let user = client.user();
        if data.console {
            return Ok(self.shared.users.scram_secret(user));
        }
        let Chosen { route, captures } = data.chosen()?;
        let Some(query) = &route.auth_query else {
            return Ok(self.shared.users.scram_secret(user));
        };
        match self
            .lookup(query, route, captures, user, client.database())
            .await
        {
            Ok(secret) => Ok(secret),
            Err(error) => {
                // As PostgreSQL does when it cannot read a password: the exchange runs
                // against a decoy and the client hears only that its password failed.
                // The lookup role, the backend's words and its address stay in the log.
                tracing::warn!(?user, route = route.number, %error, "auth_query failed; refusing the client as for a wrong password");
                Ok(None)
            }
        }
    }

    fn scram_verified(&self, data: &mut ProxyConn, keys: ScramKeys) {
        data.proof = Proof::ScramKeys(keys);
    }

    fn after_auth<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        data: &mut ProxyConn,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        // The session sends the backend's ParameterStatus, a minted BackendKeyData and
        // ReadyForQuery once the backend is connected.
        let _ = (conn, data);
        async { Ok(Flow::Handled) }
    }
}
