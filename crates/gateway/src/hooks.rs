//! The [`Hooks`] trait: where a user of the library decides what the gateway does.
//!
//! Hook order for one connection:
//!
//! 1. PROXY header (policy from [`GatewayConfig`](crate::GatewayConfig)) → [`Hooks::on_connect`]
//!    (admission: the real client address is known, nothing else)
//! 2. TLS upgrade → [`Hooks::after_tls`] (only when TLS was negotiated)
//! 3. StartupMessage → [`Hooks::on_startup`]
//! 4. [`Hooks::auth_method`] picks the mode → the exchange → [`Hooks::validate_credentials`]
//!    (or [`Hooks::scram_secret`], then [`Hooks::scram_verified`], for SCRAM)
//! 5. AuthenticationOk → [`Hooks::after_auth`]
//! 6. Every client message → [`Hooks::on_message`] (when the gateway drives the session with
//!    [`serve`](crate::serve))
//!
//! Every hook gets the connection's [`Hooks::Data`], a value of the implementor's own type
//! that starts as `Default::default()` and is handed back by
//! [`accept`](crate::accept) with the connection. Every hook has a default, so
//! `impl Hooks for MyServer { type Data = (); }` is a trust-everyone server.

use std::fmt;
use std::future::Future;

use pgbastion_auth::scram::ScramSecret;
use pgbastion_wire::Frame;

use crate::conn::{ClientConn, ClientIo};
use crate::state::ConnectionState;

/// What to do after a hook ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Carry on with the built-in processing.
    Continue,
    /// The hook answered the client itself; skip the built-in processing of this step.
    Handled,
    /// Stop processing and hand the raw stream back ([`Outcome::Detached`](crate::Outcome)).
    Detach,
}

/// How a client proves who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// No credential asked for.
    Trust,
    /// `AuthenticationCleartextPassword`; the password goes to [`Hooks::validate_credentials`].
    Cleartext,
    /// `AuthenticationMD5Password` with a fresh salt per connection.
    Md5,
    /// SASL `SCRAM-SHA-256`, and `SCRAM-SHA-256-PLUS` (channel binding `tls-server-end-point`)
    /// over TLS. The secret comes from [`Hooks::scram_secret`].
    ScramSha256,
    /// A TLS client certificate verified against the configured CA; by default its common
    /// name must equal the startup user.
    Certificate,
    /// SASL `OAUTHBEARER` (RFC 7628, as PostgreSQL 18): the bearer token goes to the hook;
    /// failures answer with the discovery document of `issuer`.
    OAuthBearer {
        /// The issuer URL (or its full `/.well-known/...` discovery URL).
        issuer: String,
        /// Scopes the client must request.
        scope: String,
    },
    /// A JWT sent as a cleartext password (CockroachDB pg-auth-proxy style).
    JwtPassword,
}

/// A credential presented by a client, one variant per mode. `Debug` never shows secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A cleartext password.
    Password {
        /// Startup user.
        user: String,
        /// The password.
        password: String,
    },
    /// An md5 response: `"md5" + hex(md5(hex(md5(password + user)) + salt))`.
    Md5 {
        /// Startup user.
        user: String,
        /// What the client sent.
        response: String,
        /// The salt this connection used.
        salt: [u8; 4],
    },
    /// A verified TLS client certificate.
    Certificate {
        /// Startup user.
        user: String,
        /// The certificate subject's common name.
        common_name: Option<String>,
    },
    /// A bearer token from OAUTHBEARER.
    BearerToken {
        /// Startup user.
        user: String,
        /// The token.
        token: String,
    },
    /// A JWT sent as the password.
    Jwt {
        /// Startup user.
        user: String,
        /// The token.
        token: String,
    },
}

impl Credential {
    /// The startup user the credential was presented for.
    pub fn user(&self) -> &str {
        match self {
            Self::Password { user, .. }
            | Self::Md5 { user, .. }
            | Self::Certificate { user, .. }
            | Self::BearerToken { user, .. }
            | Self::Jwt { user, .. } => user,
        }
    }

    /// Checks an md5 or cleartext credential against a stored password (a SCRAM verifier,
    /// an `md5...` hash or a plaintext password, see
    /// [`StoredPassword`](pgbastion_auth::StoredPassword)), in constant time. Other
    /// credentials never match, nor does md5 against a SCRAM verifier. A cleartext check
    /// against a SCRAM verifier runs PBKDF2: call it off the async threads then.
    pub fn matches_password(&self, stored: &str) -> bool {
        let Ok(stored) = pgbastion_auth::StoredPassword::parse(stored) else {
            return false;
        };
        match self {
            Self::Password { user, password } => stored.verify_cleartext(user, password),
            Self::Md5 {
                user,
                response,
                salt,
            } => stored.verify_md5(user, *salt, response),
            _ => false,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Password { .. } => "Password",
            Self::Md5 { .. } => "Md5",
            Self::Certificate { common_name, .. } => {
                return f
                    .debug_struct("Certificate")
                    .field("user", &self.user())
                    .field("common_name", common_name)
                    .finish();
            }
            Self::BearerToken { .. } => "BearerToken",
            Self::Jwt { .. } => "Jwt",
        };
        f.debug_struct(kind)
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}

/// What a successful SCRAM exchange hands to [`Hooks::scram_verified`]: the ClientKey recovered
/// from the client's proof and the secret's ServerKey. With them a proxy can log into a
/// backend that holds the same SCRAM secret for the user, without ever knowing the password
/// ([`ClientCredential::Keys`](pgbastion_auth::scram::ClientCredential::Keys)).
#[derive(Clone)]
pub struct ScramKeys {
    /// `ClientKey`.
    pub client_key: pgbastion_auth::scram::Key,
    /// `ServerKey`.
    pub server_key: pgbastion_auth::scram::Key,
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramKeys(<redacted>)")
    }
}

/// An error a hook reports. Its message is shown to the client, so keep secrets out of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HookError {
    /// The SQLSTATE the client receives.
    pub code: pgbastion_wire::SqlState,
    /// The message the client receives.
    pub message: String,
    /// A whole response to send instead of one made of `code` and `message` (a backend's
    /// refusal forwarded with its detail, hint and other fields).
    response: Option<Box<pgbastion_wire::ErrorResponse>>,
}

impl HookError {
    /// An error with `code` and `message`.
    pub fn new(code: pgbastion_wire::SqlState, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            response: None,
        }
    }

    /// An error that reaches the client as `response`, every field kept (its severity
    /// becomes FATAL: the connection ends).
    pub fn forward(response: pgbastion_wire::ErrorResponse) -> Self {
        Self {
            code: response
                .sqlstate()
                .unwrap_or(pgbastion_wire::SqlState::INTERNAL_ERROR),
            message: response.message().to_owned(),
            response: Some(Box::new(response)),
        }
    }

    /// The FATAL ErrorResponse the client receives.
    pub fn client_response(&self) -> pgbastion_wire::ErrorResponse {
        use pgbastion_wire::{ErrorResponse, Severity};
        match &self.response {
            Some(response) => (**response).clone().into_fatal(),
            None => ErrorResponse::new(Severity::Fatal, self.code, self.message.clone()),
        }
    }
}

/// A gateway failure inside a hook (an encode error, a write that failed) becomes the
/// client-visible error the gateway would have sent for it, or an internal error.
impl From<crate::error::GatewayError> for HookError {
    fn from(error: crate::error::GatewayError) -> Self {
        match error.client_error() {
            Some(response) => Self::new(
                response
                    .sqlstate()
                    .unwrap_or(pgbastion_wire::SqlState::INTERNAL_ERROR),
                response.message(),
            ),
            None => Self::new(pgbastion_wire::SqlState::INTERNAL_ERROR, error.to_string()),
        }
    }
}

/// The result type of hooks.
pub type HookResult<T> = Result<T, HookError>;

/// Callbacks that shape each connection. All have defaults; implement the ones you need.
///
/// Methods take the connection (`&mut ClientConn<S>`) where a hook may want to write to the
/// client, and only the state where it may not. All of them take the connection's own
/// [`Data`](Hooks::Data), where hooks keep what they learn for later hooks and for whoever
/// drives the session.
pub trait Hooks: Send + Sync {
    /// What the hooks keep for one connection (a permit, the route it matched, what proved
    /// the client's identity). It starts as `Default::default()` when the connection is
    /// accepted, every hook gets it by `&mut`, and [`accept`](crate::accept) returns it with
    /// the connection ([`Outcome`](crate::Outcome)). `()` when there is nothing to keep.
    type Data: Default + Send;

    /// As soon as the connection is accepted (after the PROXY header, when one is expected,
    /// so `state.client_addr` is the real client): admission, such as connection limits.
    /// An error refuses the connection. As PostgreSQL does with too many clients, the gateway
    /// still reads the startup packet for a short while (at most one second) so that the
    /// client gets the error as a FATAL, then closes; a CancelRequest on a refused connection
    /// is still returned as [`Outcome::Cancel`](crate::Outcome) (a cancel is not a session).
    /// What is admitted can be kept in `data` (a permit released on drop).
    fn on_connect(
        &self,
        state: &ConnectionState,
        data: &mut Self::Data,
    ) -> impl Future<Output = HookResult<()>> + Send {
        let _ = (state, data);
        async { Ok(()) }
    }

    /// After the TLS handshake: SNI, ALPN and the client certificate are in `conn.state().tls`.
    /// Return [`Flow::Detach`] to take the stream (e.g. an SNI router).
    fn after_tls<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        data: &mut Self::Data,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        let _ = (conn, data);
        async { Ok(Flow::Continue) }
    }

    /// After the StartupMessage (in `conn.state().client`). [`Flow::Handled`] skips the
    /// gateway's authentication: the connection is returned as
    /// [`Outcome::Handled`](crate::Outcome) for the caller to drive.
    fn on_startup<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        data: &mut Self::Data,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        let _ = (conn, data);
        async { Ok(Flow::Continue) }
    }

    /// The authentication mode for this connection. Default: [`AuthMethod::Trust`].
    fn auth_method(
        &self,
        state: &ConnectionState,
        data: &mut Self::Data,
    ) -> impl Future<Output = HookResult<AuthMethod>> + Send {
        let _ = (state, data);
        async { Ok(AuthMethod::Trust) }
    }

    /// Decides whether a credential is valid. Default: a certificate whose common name equals
    /// the user is accepted, everything else refused. What the check learns (claims, a backend
    /// connection) can be kept in `data`.
    fn validate_credentials(
        &self,
        state: &ConnectionState,
        data: &mut Self::Data,
        credential: &Credential,
    ) -> impl Future<Output = HookResult<bool>> + Send {
        let _ = (state, data);
        let valid = matches!(
            credential,
            Credential::Certificate { user, common_name: Some(cn) } if user == cn
        );
        async move { Ok(valid) }
    }

    /// The SCRAM secret for the startup user, for [`AuthMethod::ScramSha256`]. `None` for an
    /// unknown user: the exchange then runs against a decoy secret and fails at the end, so
    /// clients cannot probe which users exist.
    fn scram_secret(
        &self,
        state: &ConnectionState,
        data: &mut Self::Data,
    ) -> impl Future<Output = HookResult<Option<ScramSecret>>> + Send {
        let _ = (state, data);
        async { Ok(None) }
    }

    /// After a SCRAM exchange succeeded (before AuthenticationOk): the keys it recovered, to
    /// keep in `data` when the session will log into a backend with them. Default: dropped.
    fn scram_verified(&self, data: &mut Self::Data, keys: ScramKeys) {
        let _ = (data, keys);
    }

    /// After AuthenticationOk was sent. [`Flow::Continue`] lets the gateway send the
    /// configured ParameterStatus messages, a BackendKeyData and ReadyForQuery; return
    /// [`Flow::Handled`] when the hook sends them itself (a proxy relays its backend's).
    fn after_auth<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        data: &mut Self::Data,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        let _ = (conn, data);
        async { Ok(Flow::Continue) }
    }

    /// Every client message once authenticated, when the gateway drives the session.
    /// [`Flow::Continue`] means "not handled": the gateway answers Query and Sync with a
    /// `0A000` error and ReadyForQuery so the client never hangs.
    fn on_message<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        data: &mut Self::Data,
        frame: Frame,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        let _ = (conn, data, frame);
        async { Ok(Flow::Continue) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(password: &str) -> Credential {
        Credential::Password {
            user: "alice".into(),
            password: password.into(),
        }
    }

    #[test]
    fn a_stored_md5_hash_is_not_a_password_that_logs_in() {
        let hash = pgbastion_auth::md5::md5_hash("alice", "s3cret");
        assert!(password("s3cret").matches_password(&hash));
        assert!(!password(&hash).matches_password(&hash));
    }

    #[test]
    fn md5_never_matches_a_scram_verifier() {
        let secret = pgbastion_auth::scram::ScramSecret::generate(b"s3cret", 4096).to_string();
        let salt = [1, 2, 3, 4];
        let md5 = Credential::Md5 {
            user: "alice".into(),
            response: pgbastion_auth::md5::md5_client_response("alice", "s3cret", salt),
            salt,
        };
        assert!(!md5.matches_password(&secret));
        assert!(password("s3cret").matches_password(&secret));
    }
}
