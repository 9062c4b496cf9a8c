//! SCRAM-SHA-256 (RFC 5802, RFC 7677) and SCRAM-SHA-256-PLUS with `tls-server-end-point`
//! channel binding (RFC 5929), as PostgreSQL speaks them.
//!
//! Both sides are consuming state machines: each step takes the peer's message and returns
//! the next state and the message to send, so a wrong-order call does not compile.

mod client;
mod keys;
mod messages;
mod secret;
mod server;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

pub use client::{
    ChannelBinding, ClientCredential, ScramClient, ScramClientFinalSent, MAX_ITERATIONS,
};
pub use keys::{Key, KEY_LEN};
pub use secret::{ScramSecret, DEFAULT_ITERATIONS};
pub use server::{ScramServer, ScramServerFirstSent, ScramSuccess, ServerBinding};

/// The mechanism without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The mechanism with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Why a SCRAM exchange failed. Messages never include secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message did not follow the grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client chose a mechanism that was not offered.
    #[error("client selected an invalid SASL authentication mechanism {0:?}")]
    UnsupportedMechanism(String),
    /// A channel binding type other than `tls-server-end-point`.
    #[error("unsupported SCRAM channel-binding type {0:?}")]
    UnsupportedChannelBinding(String),
    /// The client sent an authorization identity.
    #[error("client uses authorization identity, but it is not supported")]
    AuthzidNotSupported,
    /// The client said the server does not support channel binding, but it does: someone
    /// in the middle removed SCRAM-SHA-256-PLUS from the offer.
    #[error("SCRAM channel binding negotiation error: the client believes the server does not support channel binding")]
    DowngradeDetected,
    /// The channel binding data differs: the TLS session is not the one the client sees.
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The nonce in a later message is not the one agreed.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client's proof is wrong: wrong password.
    #[error("SCRAM proof invalid")]
    InvalidProof,
    /// The server's signature is wrong: it does not know the secret.
    #[error("SCRAM server signature invalid")]
    InvalidServerSignature,
    /// The server answered with `e=`.
    #[error("SCRAM server error: {0}")]
    ServerError(String),
    /// A stored secret is not in `SCRAM-SHA-256$...` form.
    #[error("invalid SCRAM secret")]
    InvalidSecret,
}

/// 18 random bytes, base64: the nonce size libpq and PostgreSQL use.
fn random_nonce() -> String {
    let mut raw = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    B64.encode(raw)
}

/// The `tls-server-end-point` channel binding data for a server certificate (RFC 5929
/// section 4.1): its DER hashed with the certificate's signature hash, SHA-256 when that is
/// MD5 or SHA-1 or cannot be determined (Ed25519 certificates have none; PostgreSQL refuses
/// channel binding for them, we use SHA-256 on both sides).
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let oid = x509_parser::parse_x509_certificate(cert_der)
        .map(|(_, cert)| cert.signature_algorithm.algorithm.to_id_string())
        .unwrap_or_default();
    match oid.as_str() {
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => sha2::Sha384::digest(cert_der).to_vec(),
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => sha2::Sha512::digest(cert_der).to_vec(),
        _ => sha2::Sha256::digest(cert_der).to_vec(),
    }
}

#[cfg(test)]
mod tests;
