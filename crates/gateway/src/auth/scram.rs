//! SCRAM-SHA-256 and SCRAM-SHA-256-PLUS over the SASL messages of the protocol.

use bytes::Bytes;
use pgbastion_auth::scram::{ScramError, ScramSecret, ScramServer, ServerBinding};
use pgbastion_wire::{Authentication, SaslInitialResponse, SaslResponse};

use super::{challenge, read_auth_response};
use crate::config::GatewayConfig;
use crate::conn::{ClientConn, ClientIo};
use crate::error::GatewayError;
use crate::hooks::{Hooks, ScramKeys};

/// The longest SASLInitialResponse or SASLResponse of a SCRAM exchange, as PostgreSQL's
/// SCRAM mechanism allows (`PG_MAX_SASL_MESSAGE_LENGTH`): a client-first or client-final
/// message is well under 200 bytes, so anything longer (a 60 kB nonce we would echo) is
/// refused before it is buffered.
const MAX_SCRAM_MESSAGE_LEN: usize = pgbastion_wire::limits::PG_MAX_SASL_MESSAGE_LENGTH;

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

pub(super) async fn authenticate<S: ClientIo, H: Hooks>(
    conn: &mut ClientConn<S>,
    data: &mut H::Data,
    config: &GatewayConfig,
    hooks: &H,
    user: String,
) -> Result<(), GatewayError> {
    let binding = server_binding(conn);
    let mut mechanisms = Vec::with_capacity(2);
    if matches!(binding, ServerBinding::Offered(_)) {
        mechanisms.push(SCRAM_SHA_256_PLUS.to_owned());
    }
    mechanisms.push(SCRAM_SHA_256.to_owned());
    challenge(conn, Authentication::Sasl { mechanisms }).await?;

    let stored = hooks.scram_secret(conn.state(), data).await?;
    let known_user = stored.is_some();
    let secret = stored.unwrap_or_else(|| decoy_secret(&user, config.scram_iterations));
    let server_key = secret.server_key;

    let frame = read_auth_response(conn, "SASL initial response", MAX_SCRAM_MESSAGE_LEN).await?;
    let initial = SaslInitialResponse::decode(&frame.body)?;
    let client_first = initial.data.unwrap_or_default();
    let (server, server_first) = ScramServer::new(secret, binding)
        .handle_client_first(&initial.mechanism, &client_first)
        .map_err(|e| scram_error(e, &user))?;
    challenge(
        conn,
        Authentication::SaslContinue(Bytes::from(server_first)),
    )
    .await?;

    let frame = read_auth_response(conn, "SASL response", MAX_SCRAM_MESSAGE_LEN).await?;
    let response = SaslResponse::decode(&frame.body);
    let outcome = server
        .handle_client_final(&response.data)
        .map_err(|e| scram_error(e, &user))?;
    if !known_user {
        return Err(GatewayError::InvalidPassword { user });
    }
    conn.send(&pgbastion_wire::BackendMessage::Authentication(
        Authentication::SaslFinal(Bytes::from(outcome.server_final)),
    ))?;
    let keys = ScramKeys {
        client_key: outcome.client_key,
        server_key,
    };
    hooks.scram_verified(data, keys);
    conn.state_mut().authenticated_user = Some(user);
    Ok(())
}

/// Channel binding is offered whenever the client is on TLS and we know the certificate we
/// served, as PostgreSQL does.
fn server_binding<S: ClientIo>(conn: &ClientConn<S>) -> ServerBinding {
    conn.state()
        .tls
        .as_ref()
        .and_then(|tls| tls.server_certificate.as_ref())
        .and_then(|cert| {
            // libpq refuses channel binding for certificates without a signature hash
            // (Ed25519): offering PLUS would break its default channel_binding=prefer.
            let hash = pgbastion_auth::scram::signature_hash(cert)?;
            Some(ServerBinding::Offered(
                pgbastion_auth::scram::tls_server_end_point_hash(cert, hash),
            ))
        })
        .unwrap_or(ServerBinding::NotOffered)
}

/// A secret for users that do not exist: the exchange runs to the end and fails there, and
/// the salt is the same on every attempt (derived from the user and a per-process random
/// value), so the client cannot tell unknown users from wrong passwords.
fn decoy_secret(user: &str, iterations: u32) -> ScramSecret {
    static MOCK_NONCE: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let nonce = MOCK_NONCE.get_or_init(|| {
        let mut nonce = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        nonce
    });
    ScramSecret::mock(user, nonce, iterations)
}

fn scram_error(error: ScramError, user: &str) -> GatewayError {
    match error {
        ScramError::InvalidProof => GatewayError::InvalidPassword {
            user: user.to_owned(),
        },
        other => GatewayError::Sasl(other.to_string()),
    }
}
