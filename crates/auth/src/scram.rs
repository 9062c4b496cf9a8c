//! SCRAM-SHA-256 (RFC 5802, RFC 7677) and SCRAM-SHA-256-PLUS with `tls-server-end-point`
//! channel binding (RFC 5929), as PostgreSQL speaks them.
//!
//! Both sides are consuming state machines: each step takes the peer's message and returns
//! the next state and the message to send, so a wrong-order call does not compile.
//!
//! ```text
//! server: ScramServer --handle_client_first--> ScramServerFirstSent --handle_client_final--> ScramSuccess
//! client: ScramClient --handle_server_first--> ScramClientFinalSent --verify_server_final--> ()
//! ```
//!
//! Key derivation lives in one private module both sides use. Secrets (passwords, keys,
//! proofs) never appear in `Debug` output or error messages, and are compared in constant
//! time.

mod channel_binding;
mod client;
mod keys;
mod messages;
mod secret;
mod server;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

pub use channel_binding::{
    signature_hash, tls_server_end_point, tls_server_end_point_hash, CertHash, ChannelBinding,
    ServerBinding,
};
pub use client::{
    ClientCredential, ClientKeys, KeyDerivation, SaltedKeyCache, ScramClient, ScramClientFinalSent,
    ScramClientKeysNeeded, MAX_ITERATIONS,
};
pub use keys::{Key, KEY_LEN};
pub use secret::{ScramSecret, SecretError, DEFAULT_ITERATIONS, SALT_LEN};
pub use server::{ScramServer, ScramServerFirstSent, ScramSuccess};

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
    /// The client chose a mechanism that is not SCRAM-SHA-256(-PLUS).
    #[error("client selected an invalid SASL authentication mechanism {0:?}")]
    UnsupportedMechanism(String),
    /// The client chose SCRAM-SHA-256-PLUS, but the server did not offer it (no TLS, or no
    /// certificate to bind to). PostgreSQL reports this as an invalid mechanism.
    #[error("client selected SCRAM-SHA-256-PLUS, but channel binding was not offered")]
    ChannelBindingRequiredButNotOffered,
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
    /// The server answered with `e=<value>` (RFC 5802 `server-error-value`).
    #[error("SCRAM server error: {0}")]
    ServerError(String),
}

/// 18 random bytes, base64: the nonce size libpq and PostgreSQL use.
fn random_nonce() -> String {
    let mut raw = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    B64.encode(raw)
}

#[cfg(test)]
mod tests;
