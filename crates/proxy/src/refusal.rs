//! [`Refusal`]: every reason the proxy itself turns a client away, and the one place that
//! decides what the client is told (SQLSTATE, severity, message). What a client that has not
//! authenticated may learn is decided here too: nothing of the backend's roles, addresses or
//! files, and no key-loading detail; those go to the log line of the failure.
//!
//! The gateway decides its own protocol-level errors (`GatewayError::client_error`); the relay
//! its two FATALs (backend lost, invalid message length). Everything the proxy's hooks and
//! session refuse goes through here.

use pgbastion_gateway::HookError;
use pgbastion_jwt::JwtError;
use pgbastion_wire::{ErrorResponse, Severity, SqlState};

use crate::backend::BackendError;

/// Why the proxy refuses a client.
#[derive(Debug)]
pub enum Refusal {
    /// The hooks ran out of order (no startup message, or no route chosen yet): a bug, not
    /// the client's doing.
    Internal(&'static str),
    /// No route matches the client's startup (or its token's claims).
    NoRoute {
        /// The user the client sent.
        user: String,
        /// The database the client sent (None when refused for the token's claims).
        database: Option<String>,
        /// The TLS server name, if any.
        sni: Option<String>,
    },
    /// The route takes secrets in clear and the client is not on TLS.
    SecretsInClear {
        /// The route, as `route N (auth = …)`.
        route: String,
    },
    /// A user not in `[admin] users` asked for the admin console.
    NotAdmin {
        /// The user the client sent.
        user: String,
    },
    /// A connection limit (its message names which).
    TooManyConnections(String),
    /// A token route on a proxy without `[jwt]`.
    TokensNotConfigured,
    /// The token failed verification.
    Token(JwtError),
    /// The token is valid but names another user.
    ClaimMismatch {
        /// The claim that must name the user.
        claim: String,
        /// The user the client sent.
        user: String,
    },
    /// A wrong password, or a lookup that failed (as PostgreSQL answers both).
    PasswordFailed {
        /// The user the client sent.
        user: String,
    },
    /// The external authenticator failed (not: refused).
    AuthenticatorFailed,
    /// A backend login made to check the credential of a client that has not authenticated
    /// yet failed (passthrough).
    BackendBeforeAuth {
        /// What failed.
        error: BackendError,
        /// The user the client sent.
        user: String,
    },
    /// The backend login of an authenticated client failed: the backend's own refusal is
    /// forwarded whole, the proxy's own failures say what failed without addresses or paths.
    Backend(BackendError),
}

impl Refusal {
    /// What the client is told. Every variant is named: a new one cannot be added without
    /// deciding its answer.
    pub fn response(&self) -> ErrorResponse {
        let (code, message) = match self {
            Self::Internal(what) => (SqlState::INTERNAL_ERROR, (*what).to_owned()),
            Self::NoRoute {
                user,
                database,
                sni,
            } => {
                let database = database
                    .as_ref()
                    .map(|database| format!(", database \"{database}\""))
                    .unwrap_or_else(|| " with this token's claims".to_owned());
                let sni = sni
                    .as_ref()
                    .map(|sni| format!(", server name \"{sni}\""))
                    .unwrap_or_default();
                (
                    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                    format!("no route for user \"{user}\"{database}{sni}"),
                )
            }
            Self::SecretsInClear { route } => (
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                format!(
                    "{route} takes secrets in clear and accepts only TLS connections \
                     (connect with sslmode=require)"
                ),
            ),
            Self::NotAdmin { user } => (
                SqlState::INSUFFICIENT_PRIVILEGE,
                format!("user \"{user}\" may not use the admin console (not in [admin] users)"),
            ),
            Self::TooManyConnections(message) => (SqlState::TOO_MANY_CONNECTIONS, message.clone()),
            Self::TokensNotConfigured => (
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "token authentication is not configured".to_owned(),
            ),
            Self::Token(error) => (SqlState::INVALID_PASSWORD, token_message(error)),
            Self::ClaimMismatch { claim, user } => (
                SqlState::INVALID_PASSWORD,
                format!("token refused: its \"{claim}\" claim does not name user \"{user}\""),
            ),
            Self::PasswordFailed { user } => password_failed(user),
            Self::AuthenticatorFailed => (
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                "authentication failed: the authenticator did not answer".to_owned(),
            ),
            Self::BackendBeforeAuth { error, user } => before_auth(error, user),
            Self::Backend(error) => return error.to_client(),
        };
        ErrorResponse::new(Severity::Fatal, code, message)
    }
}

/// PostgreSQL's refusal of a wrong password.
fn password_failed(user: &str) -> (SqlState, String) {
    (
        SqlState::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

/// What is wrong with a token is the client's to know; a key-loading failure (it names files
/// and URLs) is the operator's.
fn token_message(error: &JwtError) -> String {
    match error {
        JwtError::Malformed(_)
        | JwtError::UnsupportedAlgorithm(_)
        | JwtError::UnknownKey(_)
        | JwtError::KeyMismatch(_)
        | JwtError::BadSignature
        | JwtError::MissingClaim(_)
        | JwtError::Expired
        | JwtError::NotYetValid
        | JwtError::WrongIssuer
        | JwtError::WrongAudience => format!("token refused: {error}"),
        JwtError::KeyLoad(_) | JwtError::Fetch(_) | JwtError::InsecureUrl(_) => {
            "token refused: the keys to check it are not available".to_owned()
        }
    }
}

/// The backend's own refusals name the role the client was mapped to, the proxy's address and
/// the database: an authentication refusal (class 28) becomes PostgreSQL's answer for the
/// user the client sent, any other keeps its SQLSTATE and loses its words. The proxy's own
/// messages (connect, timeout, TLS) never hold an address or path.
fn before_auth(error: &BackendError, user: &str) -> (SqlState, String) {
    match error {
        BackendError::Refused(response) => match response.sqlstate() {
            Some(code) if code.class() == "28" => password_failed(user),
            code => (
                code.unwrap_or(SqlState::SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION),
                "the backend refused the login (pgbastion's log has the details)".to_owned(),
            ),
        },
        BackendError::Connect { .. }
        | BackendError::Timeout(_)
        | BackendError::Tls { .. }
        | BackendError::Auth(_)
        | BackendError::Protocol(_) => {
            let response = error.to_client();
            (
                response.sqlstate().unwrap_or(SqlState::CONNECTION_FAILURE),
                response.message().to_owned(),
            )
        }
    }
}

impl From<Refusal> for HookError {
    fn from(refusal: Refusal) -> Self {
        HookError::forward(refusal.response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend_refusal(code: &[u8; 5], message: &str) -> BackendError {
        BackendError::Refused(ErrorResponse::new(
            Severity::Fatal,
            SqlState::from_bytes(code).unwrap(),
            message,
        ))
    }

    /// Every variant: the SQLSTATE and message a client sees. What the backend said about the
    /// mapped role `tenant_7` and the address `10.1.2.3` must never reach a client that has
    /// not authenticated.
    #[test]
    fn every_refusal_maps_to_one_sqlstate_and_message() {
        let leak = "password authentication failed for user \"tenant_7\" from 10.1.2.3";
        let connect = BackendError::Connect {
            address: "10.1.2.3:5432".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let table: Vec<(Refusal, &str, &str)> = vec![
            (Refusal::Internal("no route was chosen for this connection"), "XX000", "no route was chosen for this connection"),
            (
                Refusal::NoRoute { user: "alice".into(), database: Some("app".into()), sni: Some("t1.example.com".into()) },
                "28000",
                "no route for user \"alice\", database \"app\", server name \"t1.example.com\"",
            ),
            (
                Refusal::NoRoute { user: "alice".into(), database: None, sni: None },
                "28000",
                "no route for user \"alice\" with this token's claims",
            ),
            (
                Refusal::SecretsInClear { route: "route 2 (auth = \"cleartext\")".into() },
                "28000",
                "route 2 (auth = \"cleartext\") takes secrets in clear and accepts only TLS connections (connect with sslmode=require)",
            ),
            (Refusal::NotAdmin { user: "app".into() }, "42501", "user \"app\" may not use the admin console (not in [admin] users)"),
            (Refusal::TooManyConnections("too many connections from 127.0.0.1".into()), "53300", "too many connections from 127.0.0.1"),
            (Refusal::TokensNotConfigured, "28000", "token authentication is not configured"),
            (Refusal::Token(JwtError::Expired), "28P01", "token refused: token has expired"),
            (
                Refusal::Token(JwtError::Fetch("https://idp.internal/keys: connection refused".into())),
                "28P01",
                "token refused: the keys to check it are not available",
            ),
            (
                Refusal::ClaimMismatch { claim: "sub".into(), user: "alice".into() },
                "28P01",
                "token refused: its \"sub\" claim does not name user \"alice\"",
            ),
            (Refusal::PasswordFailed { user: "alice".into() }, "28P01", "password authentication failed for user \"alice\""),
            (Refusal::AuthenticatorFailed, "28000", "authentication failed: the authenticator did not answer"),
            (
                Refusal::BackendBeforeAuth { error: backend_refusal(b"28P01", leak), user: "alice".into() },
                "28P01",
                "password authentication failed for user \"alice\"",
            ),
            (
                Refusal::BackendBeforeAuth { error: backend_refusal(b"3D000", "database \"tenant_7_db\" does not exist"), user: "alice".into() },
                "3D000",
                "the backend refused the login (pgbastion's log has the details)",
            ),
            (
                Refusal::BackendBeforeAuth {
                    error: backend_refusal(b"28000", "no pg_hba.conf entry for host \"10.1.2.3\", user \"tenant_7\""),
                    user: "alice".into(),
                },
                "28P01",
                "password authentication failed for user \"alice\"",
            ),
            (
                Refusal::BackendBeforeAuth {
                    error: BackendError::Tls { address: "10.1.2.3:5432".into(), message: "certs/tenant_7.crt does not exist".into() },
                    user: "alice".into(),
                },
                "08001",
                "could not set up TLS to the backend as the route's sslmode requires (pgbastion's log has the details)",
            ),
            (
                Refusal::Token(JwtError::KeyLoad("/etc/pgbastion/tenant_7.pem: unreadable".into())),
                "28P01",
                "token refused: the keys to check it are not available",
            ),
            (
                Refusal::BackendBeforeAuth { error: connect, user: "alice".into() },
                "08001",
                "could not connect to the backend: connection refused",
            ),
            // Authenticated: the backend's refusal is forwarded whole.
            (Refusal::Backend(backend_refusal(b"28P01", leak)), "28P01", leak),
            (
                Refusal::Backend(BackendError::Timeout("10.1.2.3:5432".into())),
                "08001",
                "the backend did not complete login in time",
            ),
        ];
        for (refusal, code, message) in table {
            let response = refusal.response();
            assert_eq!(
                (
                    response.sqlstate().map(|s| s.to_string()),
                    response.message()
                ),
                (Some(code.to_owned()), message),
                "{refusal:?}"
            );
            assert_eq!(response.severity(), Some(Severity::Fatal), "{refusal:?}");
            if !matches!(refusal, Refusal::Backend(_)) {
                assert!(
                    !response.message().contains("10.1.2.3")
                        && !response.message().contains("tenant_7"),
                    "{refusal:?} told an unauthenticated client about the backend"
                );
            }
        }
    }

    #[test]
    fn a_backend_refusal_reaches_the_client_whole_through_a_hook_error() {
        let mut refused = ErrorResponse::new(
            Severity::Fatal,
            SqlState::INVALID_CATALOG_NAME,
            "database \"x\" does not exist",
        );
        refused.set(pgbastion_wire::ErrorField::Hint, "create it first");
        let error = HookError::from(Refusal::Backend(BackendError::Refused(refused)));
        let response = error.client_response();
        assert_eq!(
            response.get(pgbastion_wire::ErrorField::Hint),
            Some("create it first")
        );
        assert_eq!(response.sqlstate(), Some(SqlState::INVALID_CATALOG_NAME));
    }
}
