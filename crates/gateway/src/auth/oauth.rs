//! SASL OAUTHBEARER (RFC 7628) as PostgreSQL 18 speaks it, including the discovery exchange
//! libpq 18 starts with.

use bytes::Bytes;
use pgbastion_auth::oauthbearer::{self, ClientInitialResponse, OAuthErrorResponse};
use pgbastion_wire::{Authentication, SaslInitialResponse, SaslResponse};

use super::{challenge, read_auth_response};

/// The longest SASL message of an OAUTHBEARER exchange: bearer tokens (JWTs with many claims)
/// run to kilobytes, so PostgreSQL 18 gives this mechanism `PG_MAX_AUTH_TOKEN_LENGTH`
/// (`max_message_length` in src/backend/libpq/auth-oauth.c) instead of SCRAM's 1024 bytes.
const MAX_OAUTH_MESSAGE_LEN: usize = pgbastion_wire::limits::PG_MAX_AUTH_TOKEN_LENGTH;
use crate::conn::{ClientConn, ClientIo};
use crate::error::GatewayError;
use crate::hooks::{Credential, Hooks};

pub(super) async fn authenticate<S: ClientIo, H: Hooks>(
    conn: &mut ClientConn<S>,
    data: &mut H::Data,
    hooks: &H,
    user: String,
    issuer: &str,
    scope: &str,
) -> Result<(), GatewayError> {
    let mechanisms = vec![oauthbearer::OAUTHBEARER.to_owned()];
    challenge(conn, Authentication::Sasl { mechanisms }).await?;
    let frame = read_auth_response(conn, "SASL initial response", MAX_OAUTH_MESSAGE_LEN).await?;
    let initial = SaslInitialResponse::decode(&frame.body)?;
    if initial.mechanism != oauthbearer::OAUTHBEARER {
        return Err(GatewayError::Sasl(
            "client selected an invalid SASL authentication mechanism".to_owned(),
        ));
    }
    let message = match initial.data {
        Some(data) => data,
        None => {
            // No initial response: ask for it with an empty challenge (RFC 4422 section 5).
            challenge(conn, Authentication::SaslContinue(Bytes::new())).await?;
            let frame = read_auth_response(conn, "SASL response", MAX_OAUTH_MESSAGE_LEN).await?;
            SaslResponse::decode(&frame.body).data
        }
    };
    let parsed = oauthbearer::parse_initial_response(&message).map_err(sasl)?;
    let refusal = match parsed {
        ClientInitialResponse::Discovery => {
            "the client asked for the issuer (discovery)".to_owned()
        }
        ClientInitialResponse::Token(token) => {
            let credential = Credential::BearerToken {
                user: user.clone(),
                token: token.expose().to_owned(),
            };
            match hooks
                .validate_credentials(conn.state(), data, &credential)
                .await
            {
                Ok(true) => {
                    conn.state_mut().authenticated_user = Some(user);
                    return Ok(());
                }
                Ok(false) => "the bearer token was not accepted".to_owned(),
                // A hook that says why it refused (an expired token) still owes the client
                // the RFC 7628 error challenge: PostgreSQL 18 sends it for every failed
                // validation, and clients wait for it to learn where to get a new token.
                Err(error) => error.message,
            }
        }
    };
    let error = OAuthErrorResponse {
        issuer: issuer.to_owned(),
        scope: scope.to_owned(),
    };
    challenge(
        conn,
        Authentication::SaslContinue(Bytes::from(error.to_json())),
    )
    .await?;
    let frame = read_auth_response(conn, "SASL response", MAX_OAUTH_MESSAGE_LEN).await?;
    oauthbearer::parse_error_acknowledgement(&SaslResponse::decode(&frame.body).data)
        .map_err(sasl)?;
    Err(GatewayError::AuthFailed {
        method: "OAuth bearer",
        user,
        reason: refusal,
    })
}

fn sasl(error: oauthbearer::OAuthBearerError) -> GatewayError {
    GatewayError::Sasl(error.to_string())
}
