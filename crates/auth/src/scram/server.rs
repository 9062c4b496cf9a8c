//! The server side of SCRAM-SHA-256(-PLUS), as a consuming state machine.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::keys::{self, Key};
use super::messages::{attribute, attribute_after_extensions, parse_gs2, valid_nonce, Gs2Flag};
use super::{random_nonce, ScramError, ScramSecret, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use crate::md5::constant_time_eq;

const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// What the server offers for channel binding.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerBinding {
    /// No TLS (or no known certificate): only SCRAM-SHA-256.
    NotOffered,
    /// SCRAM-SHA-256-PLUS with `tls-server-end-point`: the hash of our certificate.
    Offered(Vec<u8>),
}

impl std::fmt::Debug for ServerBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotOffered => "NotOffered",
            Self::Offered(_) => "Offered(tls-server-end-point)",
        })
    }
}

/// A SCRAM exchange waiting for the client-first message.
#[derive(Debug)]
pub struct ScramServer {
    secret: ScramSecret,
    binding: ServerBinding,
    nonce: String,
}

/// A SCRAM exchange waiting for the client-final message.
#[derive(Debug)]
pub struct ScramServerFirstSent {
    secret: ScramSecret,
    expected_cbind: Vec<u8>,
    nonce: String,
    client_first_bare: Vec<u8>,
    server_first: Vec<u8>,
}

/// A successful exchange.
pub struct ScramSuccess {
    /// The server-final message (`v=...`) for AuthenticationSASLFinal.
    pub server_final: Vec<u8>,
    /// The client's ClientKey, recovered from its proof: enough to log into another server
    /// holding the same secret as this user, without the password.
    pub client_key: Key,
}

impl std::fmt::Debug for ScramSuccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSuccess { .. }")
    }
}

impl ScramServer {
    /// An exchange against `secret`, with a fresh random server nonce.
    pub fn new(secret: ScramSecret, binding: ServerBinding) -> Self {
        Self::with_nonce(secret, binding, random_nonce())
    }

    /// An exchange with a given server nonce (for replaying recorded exchanges in tests).
    pub fn with_nonce(secret: ScramSecret, binding: ServerBinding, nonce: String) -> Self {
        Self {
            secret,
            binding,
            nonce,
        }
    }

    /// The mechanisms to advertise, preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        match self.binding {
            ServerBinding::Offered(_) => &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
            ServerBinding::NotOffered => &[SCRAM_SHA_256],
        }
    }

    /// Handles the SASLInitialResponse: the chosen mechanism and the client-first message.
    /// Returns the next state and the server-first message.
    pub fn handle_client_first(
        self,
        mechanism: &str,
        client_first: &[u8],
    ) -> Result<(ScramServerFirstSent, Vec<u8>), ScramError> {
        if !self.mechanisms().contains(&mechanism) {
            return Err(ScramError::UnsupportedMechanism(mechanism.to_owned()));
        }
        let plus = mechanism == SCRAM_SHA_256_PLUS;
        let (flag, gs2_header, bare) = parse_gs2(client_first)?;
        let cbind_data: &[u8] = match (&flag, &self.binding) {
            (Gs2Flag::Used(kind), ServerBinding::Offered(data)) if plus => {
                if kind != TLS_SERVER_END_POINT {
                    return Err(ScramError::UnsupportedChannelBinding(kind.clone()));
                }
                data
            }
            (Gs2Flag::Used(_), _) => {
                return Err(ScramError::Malformed(
                    "channel binding data sent without selecting SCRAM-SHA-256-PLUS",
                ))
            }
            (_, _) if plus => {
                return Err(ScramError::Malformed(
                    "SCRAM-SHA-256-PLUS selected without channel binding data",
                ))
            }
            (Gs2Flag::SupportedNotUsed, ServerBinding::Offered(_)) => {
                return Err(ScramError::DowngradeDetected)
            }
            _ => &[],
        };
        let after_user = match bare {
            [b'm', b'=', ..] => return Err(ScramError::Malformed("mandatory extension")),
            _ => attribute(bare, b'n')?.1,
        };
        let (client_nonce, _extensions) = attribute(after_user, b'r')?;
        if !valid_nonce(client_nonce) {
            return Err(ScramError::Malformed("invalid client nonce"));
        }
        let nonce = format!("{}{}", String::from_utf8_lossy(client_nonce), self.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.secret.salt),
            self.secret.iterations
        )
        .into_bytes();
        let state = ScramServerFirstSent {
            expected_cbind: [gs2_header, cbind_data].concat(),
            secret: self.secret,
            nonce,
            client_first_bare: bare.to_vec(),
            server_first: server_first.clone(),
        };
        Ok((state, server_first))
    }
}

impl ScramServerFirstSent {
    /// Handles the client-final message: checks channel binding, nonce and proof.
    pub fn handle_client_final(self, client_final: &[u8]) -> Result<ScramSuccess, ScramError> {
        let (cbind, rest) = attribute(client_final, b'c')?;
        let cbind = B64
            .decode(cbind)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if !constant_time_eq(&cbind, &self.expected_cbind) {
            return Err(ScramError::ChannelBindingMismatch);
        }
        let (nonce, rest) = attribute(rest, b'r')?;
        if nonce != self.nonce.as_bytes() {
            return Err(ScramError::NonceMismatch);
        }
        let (proof, rest) = attribute_after_extensions(rest, b'p')?;
        if !rest.is_empty() {
            return Err(ScramError::Malformed("attributes after the proof"));
        }
        let proof: Key = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed(
                "proof is not 32 base64-encoded bytes",
            ))?;
        let without_proof = &client_final[..client_final.len() - proof_attribute_len(client_final)];
        let auth_message =
            keys::auth_message(&self.client_first_bare, &self.server_first, without_proof);
        let signature = keys::hmac(&self.secret.stored_key, &[&auth_message]);
        let client_key = keys::xor(&proof, &signature);
        if !constant_time_eq(&keys::sha256(&client_key), &self.secret.stored_key) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = keys::hmac(&self.secret.server_key, &[&auth_message]);
        Ok(ScramSuccess {
            server_final: format!("v={}", B64.encode(server_signature)).into_bytes(),
            client_key,
        })
    }
}

/// Length of `,p=...` at the end of a client-final message.
fn proof_attribute_len(client_final: &[u8]) -> usize {
    client_final
        .windows(3)
        .rposition(|w| w == b",p=")
        .map_or(0, |i| client_final.len() - i)
}
