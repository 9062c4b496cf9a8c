//! Client authentication: one function per [`AuthMethod`], all ending in either `Ok(())`
//! (the caller sends AuthenticationOk) or a [`GatewayError`] that maps to the FATAL error
//! PostgreSQL itself would send.

use pgbastion_wire::{Authentication, BackendMessage, Frame, PasswordMessage};

use crate::config::GatewayConfig;
use crate::conn::{ClientConn, ClientIo};
use crate::error::GatewayError;
use crate::hooks::{AuthMethod, Credential, Hooks};

mod oauth;
mod scram;

/// The longest PasswordMessage PostgreSQL accepts (`PG_MAX_AUTH_TOKEN_LENGTH`).
const MAX_PASSWORD_MESSAGE_LEN: usize = pgbastion_wire::limits::PG_MAX_AUTH_TOKEN_LENGTH;

/// Runs the exchange for `method`.
pub(crate) async fn authenticate<S: ClientIo, H: Hooks>(
    conn: &mut ClientConn<S>,
    data: &mut H::Data,
    config: &GatewayConfig,
    hooks: &H,
    method: &AuthMethod,
) -> Result<(), GatewayError> {
    let user = startup_user(conn);
    match method {
        AuthMethod::Trust => {
            conn.state_mut().authenticated_user = Some(user);
            Ok(())
        }
        AuthMethod::Cleartext => {
            let password = request_password(conn).await?;
            let credential = Credential::Password {
                user: user.clone(),
                password,
            };
            validate(conn, data, hooks, &credential, || {
                GatewayError::InvalidPassword { user }
            })
            .await
        }
        AuthMethod::JwtPassword => {
            let token = request_password(conn).await?;
            let credential = Credential::Jwt {
                user: user.clone(),
                token,
            };
            validate(conn, data, hooks, &credential, || {
                GatewayError::InvalidPassword { user }
            })
            .await
        }
        AuthMethod::Md5 => md5(conn, data, hooks, user).await,
        AuthMethod::Certificate => certificate(conn, data, hooks, user).await,
        AuthMethod::ScramSha256 => scram::authenticate(conn, data, config, hooks, user).await,
        AuthMethod::OAuthBearer { issuer, scope } => {
            oauth::authenticate(conn, data, hooks, user, issuer, scope).await
        }
    }
}

fn startup_user<S: ClientIo>(conn: &ClientConn<S>) -> String {
    conn.state()
        .client
        .as_ref()
        .map(|client| client.user().to_owned())
        .unwrap_or_default()
}

async fn validate<S: ClientIo, H: Hooks>(
    conn: &mut ClientConn<S>,
    data: &mut H::Data,
    hooks: &H,
    credential: &Credential,
    refusal: impl FnOnce() -> GatewayError,
) -> Result<(), GatewayError> {
    if hooks
        .validate_credentials(conn.state(), data, credential)
        .await?
    {
        conn.state_mut().authenticated_user = Some(credential.user().to_owned());
        Ok(())
    } else {
        Err(refusal())
    }
}

/// Sends an authentication request and flushes it.
pub(crate) async fn challenge<S: ClientIo>(
    conn: &mut ClientConn<S>,
    request: Authentication,
) -> Result<(), GatewayError> {
    conn.send(&BackendMessage::Authentication(request))?;
    conn.flush().await
}

/// Reads the client's next authentication message (`p`) of at most `max_len` bytes (the
/// length word included, as PostgreSQL counts), refusing anything else. The limit depends on
/// the exchange, as in PostgreSQL: see the callers.
pub(crate) async fn read_auth_response<S: ClientIo>(
    conn: &mut ClientConn<S>,
    expected: &'static str,
    max_len: usize,
) -> Result<Frame, GatewayError> {
    let frame = conn
        .read_frame(max_len)
        .await?
        .ok_or(GatewayError::UnexpectedEof)?;
    if frame.tag != b'p' {
        return Err(GatewayError::UnexpectedMessage {
            expected,
            tag: char::from(frame.tag),
        });
    }
    Ok(frame)
}

async fn request_password<S: ClientIo>(conn: &mut ClientConn<S>) -> Result<String, GatewayError> {
    challenge(conn, Authentication::CleartextPassword).await?;
    password_response(conn).await
}

async fn password_response<S: ClientIo>(conn: &mut ClientConn<S>) -> Result<String, GatewayError> {
    let frame = read_auth_response(conn, "password response", MAX_PASSWORD_MESSAGE_LEN).await?;
    let message = PasswordMessage::decode(&frame.body)?;
    Ok(message.password)
}

async fn md5<S: ClientIo, H: Hooks>(
    conn: &mut ClientConn<S>,
    data: &mut H::Data,
    hooks: &H,
    user: String,
) -> Result<(), GatewayError> {
    let salt = pgbastion_auth::md5::random_salt();
    challenge(conn, Authentication::Md5Password { salt }).await?;
    let response = password_response(conn).await?;
    let credential = Credential::Md5 {
        user: user.clone(),
        response,
        salt,
    };
    validate(conn, data, hooks, &credential, || {
        GatewayError::InvalidPassword { user }
    })
    .await
}

async fn certificate<S: ClientIo, H: Hooks>(
    conn: &mut ClientConn<S>,
    data: &mut H::Data,
    hooks: &H,
    user: String,
) -> Result<(), GatewayError> {
    let refused = |reason: &str| GatewayError::AuthFailed {
        method: "certificate",
        user: user.clone(),
        reason: reason.to_owned(),
    };
    let tls = conn
        .state()
        .tls
        .as_ref()
        .ok_or_else(|| refused("the connection is not encrypted"))?;
    if tls.peer_certificates.is_empty() {
        return Err(refused("no client certificate was presented"));
    }
    let credential = Credential::Certificate {
        user: user.clone(),
        common_name: tls.client_common_name(),
    };
    let reason = "the certificate's common name does not match the user";
    validate(conn, data, hooks, &credential, || refused(reason)).await
}
