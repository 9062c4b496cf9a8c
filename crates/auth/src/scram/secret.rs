//! The stored SCRAM verifier, in PostgreSQL's `pg_authid.rolpassword` format.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

use super::keys::{self, Key, KEY_LEN};

/// The iteration count PostgreSQL uses by default (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// The salt length PostgreSQL uses (`SCRAM_DEFAULT_SALT_LEN`).
pub const SALT_LEN: usize = 16;

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`: what a server needs to
/// verify a client without knowing its password. `Display` writes that format and
/// [`FromStr`] reads it; `Debug` hides the keys and the salt.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Salt.
    pub salt: Vec<u8>,
    /// `StoredKey = H(ClientKey)`.
    pub stored_key: Key,
    /// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Key,
}

/// Why a stored secret could not be read. Messages never include the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// It does not start with `SCRAM-SHA-256$` (an md5 hash or a plaintext password?).
    #[error("not a SCRAM-SHA-256 secret")]
    NotScramSha256,
    /// The `$` and `:` separators are not where the format puts them.
    #[error(
        "SCRAM secret is not in the form SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
    )]
    Layout,
    /// The iteration count is not a positive 32-bit integer.
    #[error("invalid iteration count in SCRAM secret")]
    Iterations,
    /// The salt is not base64.
    #[error("invalid salt in SCRAM secret")]
    Salt,
    /// The StoredKey is not 32 base64-encoded bytes.
    #[error("invalid StoredKey in SCRAM secret")]
    StoredKey,
    /// The ServerKey is not 32 base64-encoded bytes.
    #[error("invalid ServerKey in SCRAM secret")]
    ServerKey,
}

impl ScramSecret {
    /// Derives the secret for `password` with the given salt and iteration count, as
    /// PostgreSQL does: the password is SASLprep-normalised first, or used as raw bytes when
    /// it is not UTF-8 or SASLprep refuses it.
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = keys::salted_password(password, salt, iterations);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: keys::sha256(&keys::client_key(&salted)),
            server_key: keys::server_key(&salted),
        }
    }

    /// Derives a secret for `password` with [`SALT_LEN`] fresh random salt bytes.
    pub fn generate(password: &[u8], iterations: u32) -> Self {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self::from_password(password, &salt, iterations)
    }

    /// Whether `password` derives this secret (a cleartext password checked against a stored
    /// verifier, as PostgreSQL does for `password` authentication). Runs PBKDF2 once with the
    /// secret's iterations; compares in constant time.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let derived = Self::from_password(password, &self.salt, self.iterations);
        let stored = crate::ct::eq(&derived.stored_key, &self.stored_key);
        let server = crate::ct::eq(&derived.server_key, &self.server_key);
        stored & server
    }

    /// A stand-in secret for a user that does not exist, so the exchange can run to the end
    /// and fail with [`InvalidProof`](super::ScramError::InvalidProof) there, as PostgreSQL's
    /// mock authentication does. The salt is derived from `username` and `server_nonce` (a
    /// random value the server keeps for its lifetime), so asking twice shows the same salt,
    /// as for a real user; no password can match the keys. Costs no PBKDF2.
    pub fn mock(username: &str, server_nonce: &[u8], iterations: u32) -> Self {
        let digest = keys::hmac(server_nonce, &[b"mock salt", username.as_bytes()]);
        Self {
            iterations,
            salt: digest[..SALT_LEN].to_vec(),
            stored_key: keys::hmac(server_nonce, &[b"mock stored key", username.as_bytes()]),
            server_key: keys::hmac(server_nonce, &[b"mock server key", username.as_bytes()]),
        }
    }
}

impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl FromStr for ScramSecret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or(SecretError::NotScramSha256)?;
        let (params, keys) = rest.split_once('$').ok_or(SecretError::Layout)?;
        let (iterations, salt) = params.split_once(':').ok_or(SecretError::Layout)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(SecretError::Layout)?;
        Ok(Self {
            iterations: iterations
                .parse()
                .ok()
                .filter(|&i| i > 0)
                .ok_or(SecretError::Iterations)?,
            salt: B64.decode(salt).map_err(|_| SecretError::Salt)?,
            stored_key: decode_key(stored_key).ok_or(SecretError::StoredKey)?,
            server_key: decode_key(server_key).ok_or(SecretError::ServerKey)?,
        })
    }
}

fn decode_key(b64: &str) -> Option<Key> {
    let bytes = B64.decode(b64).ok()?;
    <[u8; KEY_LEN]>::try_from(bytes).ok()
}
