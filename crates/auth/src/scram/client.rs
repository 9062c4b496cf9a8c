//! The client side of SCRAM-SHA-256(-PLUS), for logging into PostgreSQL backends.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::keys::{self, Key};
use super::messages::{attribute, attribute_after_extensions, valid_nonce};
use super::{random_nonce, ScramError, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use crate::md5::constant_time_eq;

/// The most PBKDF2 iterations we run for a server; more is a denial of service on us.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Channel binding from the client's side.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// The client does not do channel binding (gs2 `n`): no TLS.
    NotSupported,
    /// The client could, but the server did not offer it (gs2 `y`).
    SupportedButNotUsed,
    /// `tls-server-end-point` with the hash of the server's certificate (gs2 `p=...`).
    TlsServerEndPoint(Vec<u8>),
}

impl std::fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotSupported => "NotSupported",
            Self::SupportedButNotUsed => "SupportedButNotUsed",
            Self::TlsServerEndPoint(_) => "TlsServerEndPoint",
        })
    }
}

impl ChannelBinding {
    fn gs2_header(&self) -> &'static str {
        match self {
            Self::NotSupported => "n,,",
            Self::SupportedButNotUsed => "y,,",
            Self::TlsServerEndPoint(_) => "p=tls-server-end-point,,",
        }
    }

    fn data(&self) -> &[u8] {
        match self {
            Self::TlsServerEndPoint(data) => data,
            _ => &[],
        }
    }
}

/// What the client proves itself with.
#[derive(Clone)]
pub enum ClientCredential {
    /// The password.
    Password(Vec<u8>),
    /// Keys recovered from another exchange (see
    /// [`ScramSuccess::client_key`](super::ScramSuccess::client_key)). Without `server_key`
    /// the server's signature cannot be checked and is accepted as is.
    Keys {
        /// The ClientKey.
        client_key: Key,
        /// The ServerKey, when known.
        server_key: Option<Key>,
    },
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Password(_) => "Password(<redacted>)",
            Self::Keys { .. } => "Keys(<redacted>)",
        })
    }
}

/// A client exchange before the server-first message.
#[derive(Debug)]
pub struct ScramClient {
    credential: ClientCredential,
    binding: ChannelBinding,
    nonce: String,
    username: String,
}

/// A client exchange waiting for the server-final message.
#[derive(Debug)]
pub struct ScramClientFinalSent {
    expected_signature: Option<Key>,
}

impl ScramClient {
    /// A client with a fresh random nonce.
    pub fn new(credential: ClientCredential, binding: ChannelBinding) -> Self {
        Self::with_nonce(credential, binding, random_nonce())
    }

    /// A client with a given nonce (for recorded exchanges in tests).
    pub fn with_nonce(
        credential: ClientCredential,
        binding: ChannelBinding,
        nonce: String,
    ) -> Self {
        Self {
            credential,
            binding,
            nonce,
            username: String::new(),
        }
    }

    /// Sends `username` in the client-first message (PostgreSQL ignores it; other SCRAM
    /// servers need it). Commas and `=` are escaped as RFC 5802 requires.
    pub fn with_username(mut self, username: &str) -> Self {
        self.username = username.replace('=', "=3D").replace(',', "=2C");
        self
    }

    /// The mechanism to name in SASLInitialResponse.
    pub fn mechanism(&self) -> &'static str {
        match self.binding {
            ChannelBinding::TlsServerEndPoint(_) => SCRAM_SHA_256_PLUS,
            _ => SCRAM_SHA_256,
        }
    }

    /// The client-first message. The user name is left empty, as libpq does: PostgreSQL
    /// takes the user from the startup packet.
    pub fn client_first_message(&self) -> Vec<u8> {
        format!("{}{}", self.binding.gs2_header(), self.client_first_bare()).into_bytes()
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.username, self.nonce)
    }

    /// Handles the server-first message; returns the next state and the client-final message.
    pub fn handle_server_first(
        self,
        server_first: &[u8],
    ) -> Result<(ScramClientFinalSent, Vec<u8>), ScramError> {
        let (nonce, rest) = attribute_after_extensions(server_first, b'r')?;
        if !nonce.starts_with(self.nonce.as_bytes())
            || nonce.len() == self.nonce.len()
            || !valid_nonce(nonce)
        {
            return Err(ScramError::NonceMismatch);
        }
        let (salt, rest) = attribute(rest, b's')?;
        let salt = B64
            .decode(salt)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let (iterations, _) = attribute(rest, b'i')?;
        let iterations: u32 = std::str::from_utf8(iterations)
            .ok()
            .and_then(|i| i.parse().ok())
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or(ScramError::Malformed("invalid iteration count"))?;
        let (client_key, server_key) = match &self.credential {
            ClientCredential::Password(password) => {
                let salted = keys::salted_password(password, &salt, iterations);
                (keys::client_key(&salted), Some(keys::server_key(&salted)))
            }
            ClientCredential::Keys {
                client_key,
                server_key,
            } => (*client_key, *server_key),
        };
        let cbind = [self.binding.gs2_header().as_bytes(), self.binding.data()].concat();
        let without_proof = format!(
            "c={},r={}",
            B64.encode(cbind),
            String::from_utf8_lossy(nonce)
        );
        let auth_message = keys::auth_message(
            self.client_first_bare().as_bytes(),
            server_first,
            without_proof.as_bytes(),
        );
        let stored_key = keys::sha256(&client_key);
        let proof = keys::xor(&client_key, &keys::hmac(&stored_key, &[&auth_message]));
        let client_final = format!("{without_proof},p={}", B64.encode(proof)).into_bytes();
        let expected_signature = server_key.map(|key| keys::hmac(&key, &[&auth_message]));
        Ok((ScramClientFinalSent { expected_signature }, client_final))
    }
}

impl ScramClientFinalSent {
    /// Checks the server-final message: the server proves it knew the secret too.
    pub fn verify_server_final(self, server_final: &[u8]) -> Result<(), ScramError> {
        if let Some(error) = server_final.strip_prefix(b"e=") {
            return Err(ScramError::ServerError(
                String::from_utf8_lossy(error).into_owned(),
            ));
        }
        let (verifier, _) = attribute(server_final, b'v')?;
        let verifier = B64
            .decode(verifier)
            .map_err(|_| ScramError::Malformed("verifier is not base64"))?;
        match self.expected_signature {
            Some(expected) if !constant_time_eq(&expected, &verifier) => {
                Err(ScramError::InvalidServerSignature)
            }
            _ => Ok(()),
        }
    }
}
