//! The stored SCRAM verifier, in PostgreSQL's `pg_authid.rolpassword` format.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

use super::keys::{self, Key, KEY_LEN};
use super::ScramError;

/// The iteration count PostgreSQL uses by default (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`: what a server needs to
/// verify a client without knowing its password. `Debug` hides the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Salt.
    pub salt: Vec<u8>,
    /// `H(ClientKey)`.
    pub stored_key: Key,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Key,
}

impl ScramSecret {
    /// Derives the secret for `password` with the given salt and iteration count.
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = keys::salted_password(password, salt, iterations);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: keys::sha256(&keys::client_key(&salted)),
            server_key: keys::server_key(&salted),
        }
    }

    /// Derives a secret for `password` with 16 fresh random salt bytes.
    pub fn generate(password: &[u8], iterations: u32) -> Self {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self::from_password(password, &salt, iterations)
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
    type Err = ScramError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || ScramError::InvalidSecret;
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or_else(malformed)?;
        let (params, keys) = rest.split_once('$').ok_or_else(malformed)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(malformed)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(malformed)?;
        let iterations: u32 = iterations.parse().map_err(|_| malformed())?;
        if iterations == 0 {
            return Err(malformed());
        }
        let key = |b64: &str| -> Result<Key, ScramError> {
            let bytes = B64.decode(b64).map_err(|_| malformed())?;
            <[u8; KEY_LEN]>::try_from(bytes).map_err(|_| malformed())
        };
        Ok(Self {
            iterations,
            salt: B64.decode(salt).map_err(|_| malformed())?,
            stored_key: key(stored_key)?,
            server_key: key(server_key)?,
        })
    }
}
