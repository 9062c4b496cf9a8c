//! The client side of SCRAM-SHA-256(-PLUS), for logging into PostgreSQL backends.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::keys::{self, Key};
use super::messages::{valid_nonce, Attributes};
use super::{random_nonce, ChannelBinding, ScramError, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use crate::ct;

/// The most PBKDF2 iterations we run for a server; more is a denial of service on us.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// What the client proves itself with.
#[derive(Clone)]
pub enum ClientCredential {
    /// The password (SASLprep-normalised as PostgreSQL does).
    Password(Vec<u8>),
    /// Keys instead of the password, e.g. the ClientKey a server recovered from another
    /// exchange ([`ScramSuccess::client_key`](super::ScramSuccess::client_key)) and the
    /// ServerKey from the stored secret. `ClientProof = ClientKey XOR HMAC(H(ClientKey),
    /// AuthMessage)` needs nothing else. Without `server_key` the server's signature cannot
    /// be computed, so [`ScramClientFinalSent::verify_server_final`] skips that check (it
    /// still refuses `e=` errors and malformed messages): this is the only case in which the
    /// server is not authenticated.
    Keys {
        /// The ClientKey.
        client_key: Key,
        /// The ServerKey, when known.
        server_key: Option<Key>,
    },
    /// A password whose PBKDF2 result is looked up in (and added to) `cache`: a proxy that
    /// logs into the same backend user again and again pays PBKDF2 once per (password, salt,
    /// iterations) instead of once per connection.
    CachedPassword {
        /// The password.
        password: Vec<u8>,
        /// The shared cache.
        cache: std::sync::Arc<SaltedKeyCache>,
    },
}

/// ClientKey and ServerKey (the password SASLprep-normalised as for
/// [`ClientCredential::Password`]) by (password, salt, iterations), for
/// [`ClientCredential::CachedPassword`]. Entries are keyed by a SHA-256 of the three, so the
/// cache holds no password; it is emptied when it reaches its capacity.
#[derive(Debug, Default)]
pub struct SaltedKeyCache {
    entries: std::sync::Mutex<std::collections::HashMap<Key, (Key, Key)>>,
}

/// Entries a [`SaltedKeyCache`] holds before it starts over.
const KEY_CACHE_CAPACITY: usize = 4096;

impl SaltedKeyCache {
    /// The keys for `password` with `salt` and `iterations`, derived on a miss.
    pub fn keys(&self, password: &[u8], salt: &[u8], iterations: u32) -> (Key, Key) {
        if let Some(found) = self.cached(password, salt, iterations) {
            return found;
        }
        let salted = keys::salted_password(password, salt, iterations);
        let derived = (keys::client_key(&salted), keys::server_key(&salted));
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= KEY_CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert(Self::id(password, salt, iterations), derived);
        }
        derived
    }

    /// The keys for `password` with `salt` and `iterations` if they are cached (no PBKDF2).
    pub fn cached(&self, password: &[u8], salt: &[u8], iterations: u32) -> Option<(Key, Key)> {
        let id = Self::id(password, salt, iterations);
        self.entries.lock().ok().and_then(|e| e.get(&id).copied())
    }

    fn id(password: &[u8], salt: &[u8], iterations: u32) -> Key {
        keys::hmac(&keys::sha256(password), &[salt, &iterations.to_be_bytes()])
    }

    /// How many derivations are cached.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Password(_) => "Password(<redacted>)",
            Self::Keys { .. } => "Keys(<redacted>)",
            Self::CachedPassword { .. } => "CachedPassword(<redacted>)",
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

/// A client exchange that sent the client-final message and waits for the server-final one.
pub struct ScramClientFinalSent {
    expected_signature: Option<Key>,
}

impl fmt::Debug for ScramClientFinalSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramClientFinalSent { .. }")
    }
}

impl ScramClient {
    /// A client with a fresh random nonce (18 random bytes, base64, as libpq).
    pub fn new(credential: ClientCredential, binding: ChannelBinding) -> Self {
        Self::with_nonce(credential, binding, random_nonce())
    }

    /// A client with a given nonce (for recorded exchanges in tests). It must be printable
    /// ASCII without commas, as RFC 5802 requires.
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

    /// The mechanism to name in SASLInitialResponse: SCRAM-SHA-256-PLUS exactly when
    /// binding with [`ChannelBinding::TlsServerEndPoint`].
    pub fn mechanism(&self) -> &'static str {
        match self.binding {
            ChannelBinding::TlsServerEndPoint(_) => SCRAM_SHA_256_PLUS,
            ChannelBinding::NotSupported | ChannelBinding::SupportedButNotUsed => SCRAM_SHA_256,
        }
    }

    /// The client-first message for SASLInitialResponse. The user name is empty unless set
    /// with [`with_username`](Self::with_username), as libpq does: PostgreSQL takes the user
    /// from the startup packet.
    pub fn client_first_message(&self) -> Vec<u8> {
        format!("{}{}", self.binding.gs2_header(), self.client_first_bare()).into_bytes()
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.username, self.nonce)
    }

    /// Handles the server-first message (AuthenticationSASLContinue); returns the next state
    /// and the client-final message for SASLResponse. Runs PBKDF2 here, with as many
    /// iterations as the server asks (up to [`MAX_ITERATIONS`]): a caller that must not block
    /// or must bound that uses [`read_server_first`](Self::read_server_first) instead.
    pub fn handle_server_first(
        self,
        server_first: &[u8],
    ) -> Result<(ScramClientFinalSent, Vec<u8>), ScramError> {
        let pending = self.read_server_first(server_first)?;
        let keys = pending.key_derivation().derive();
        Ok(pending.answer(keys))
    }

    /// The first half of [`handle_server_first`](Self::handle_server_first): checks and reads
    /// the server-first message, without running PBKDF2. The caller can look at the
    /// iteration count the server asked for, run the [`KeyDerivation`] where it likes (a
    /// thread of its own), then [`answer`](ScramClientKeysNeeded::answer).
    pub fn read_server_first(
        self,
        server_first: &[u8],
    ) -> Result<ScramClientKeysNeeded, ScramError> {
        let first = ServerFirst::parse(server_first, &self.nonce)?;
        Ok(ScramClientKeysNeeded {
            nonce: first.nonce.to_owned(),
            salt: first.salt,
            iterations: first.iterations,
            client_first_bare: self.client_first_bare(),
            server_first: server_first.to_vec(),
            credential: self.credential,
            binding: self.binding,
        })
    }
}

/// A client exchange that read the server-first message and needs the ClientKey (and
/// ServerKey) before it can send the client-final one.
pub struct ScramClientKeysNeeded {
    credential: ClientCredential,
    binding: ChannelBinding,
    client_first_bare: String,
    server_first: Vec<u8>,
    /// The combined nonce (ours and the server's).
    nonce: String,
    salt: Vec<u8>,
    iterations: u32,
}

impl fmt::Debug for ScramClientKeysNeeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClientKeysNeeded")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramClientKeysNeeded {
    /// The PBKDF2 iteration count the server asked for.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The work that gives the keys: an owned value that can move to another thread.
    pub fn key_derivation(&self) -> KeyDerivation {
        KeyDerivation {
            credential: self.credential.clone(),
            salt: self.salt.clone(),
            iterations: self.iterations,
        }
    }

    /// The next state and the client-final message for SASLResponse, from the keys the
    /// [`KeyDerivation`] gave.
    pub fn answer(self, keys: ClientKeys) -> (ScramClientFinalSent, Vec<u8>) {
        let cbind = [self.binding.gs2_header().as_bytes(), self.binding.data()].concat();
        let without_proof = format!("c={},r={}", B64.encode(cbind), self.nonce);
        let auth_message = keys::auth_message(
            self.client_first_bare.as_bytes(),
            &self.server_first,
            without_proof.as_bytes(),
        );
        let signature = keys::client_signature(&keys::sha256(&keys.client_key), &auth_message);
        let proof = keys::xor(&keys.client_key, &signature);
        let client_final = format!("{without_proof},p={}", B64.encode(proof)).into_bytes();
        let expected_signature = keys
            .server_key
            .map(|key| keys::server_signature(&key, &auth_message));
        (ScramClientFinalSent { expected_signature }, client_final)
    }
}

/// Deriving the client's keys for one exchange: PBKDF2 with the server's salt and iteration
/// count, unless the credential already holds the keys or they are cached.
pub struct KeyDerivation {
    credential: ClientCredential,
    salt: Vec<u8>,
    iterations: u32,
}

impl fmt::Debug for KeyDerivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyDerivation")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl KeyDerivation {
    /// The keys, if they come without PBKDF2: the credential holds them, or a
    /// [`ClientCredential::CachedPassword`] cache has them.
    pub fn without_pbkdf2(&self) -> Option<ClientKeys> {
        match &self.credential {
            ClientCredential::Password(_) => None,
            ClientCredential::Keys {
                client_key,
                server_key,
            } => Some(ClientKeys {
                client_key: *client_key,
                server_key: *server_key,
            }),
            ClientCredential::CachedPassword { password, cache } => cache
                .cached(password, &self.salt, self.iterations)
                .map(ClientKeys::from_pair),
        }
    }

    /// The keys, running PBKDF2 when [`without_pbkdf2`](Self::without_pbkdf2) has none
    /// (and filling the cache of a [`ClientCredential::CachedPassword`]).
    pub fn derive(self) -> ClientKeys {
        match self.credential {
            ClientCredential::Password(password) => {
                let salted = keys::salted_password(&password, &self.salt, self.iterations);
                ClientKeys::from_pair((keys::client_key(&salted), keys::server_key(&salted)))
            }
            ClientCredential::Keys {
                client_key,
                server_key,
            } => ClientKeys {
                client_key,
                server_key,
            },
            ClientCredential::CachedPassword { password, cache } => {
                ClientKeys::from_pair(cache.keys(&password, &self.salt, self.iterations))
            }
        }
    }
}

/// The ClientKey, and the ServerKey when known, for one exchange. `Debug` hides them.
#[derive(Clone)]
pub struct ClientKeys {
    client_key: Key,
    server_key: Option<Key>,
}

impl ClientKeys {
    fn from_pair((client_key, server_key): (Key, Key)) -> Self {
        Self {
            client_key,
            server_key: Some(server_key),
        }
    }
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientKeys(<redacted>)")
    }
}

/// The fields of a server-first message we use.
struct ServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

impl<'a> ServerFirst<'a> {
    /// `[reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]`; the nonce
    /// must extend `client_nonce`.
    fn parse(message: &'a [u8], client_nonce: &str) -> Result<Self, ScramError> {
        let mut attrs = Attributes::new(message);
        attrs.refuse_mandatory_extension()?;
        let nonce = attrs.expect(b'r')?;
        let nonce = std::str::from_utf8(nonce)
            .ok()
            .filter(|n| n.len() > client_nonce.len() && n.starts_with(client_nonce))
            .filter(|n| valid_nonce(n.as_bytes()))
            .ok_or(ScramError::NonceMismatch)?;
        let salt = B64
            .decode(attrs.expect(b's')?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations = std::str::from_utf8(attrs.expect(b'i')?)
            .ok()
            .and_then(|i| i.parse().ok())
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or(ScramError::Malformed("invalid iteration count"))?;
        attrs.skip_extensions()?;
        Ok(Self {
            nonce,
            salt,
            iterations,
        })
    }
}

impl ScramClientFinalSent {
    /// Checks the server-final message (AuthenticationSASLFinal): the server proves it knew
    /// the secret too (constant-time comparison). A server `e=` error becomes
    /// [`ScramError::ServerError`].
    pub fn verify_server_final(self, server_final: &[u8]) -> Result<(), ScramError> {
        if let Some(error) = server_final.strip_prefix(b"e=") {
            let end = error.iter().position(|&b| b == b',').unwrap_or(error.len());
            let text = String::from_utf8_lossy(error.get(..end).unwrap_or_default());
            return Err(ScramError::ServerError(text.into_owned()));
        }
        let mut attrs = Attributes::new(server_final);
        let verifier = B64
            .decode(attrs.expect(b'v')?)
            .map_err(|_| ScramError::Malformed("verifier is not base64"))?;
        attrs.skip_extensions()?;
        match self.expected_signature {
            Some(expected) if !ct::eq(&expected, &verifier) => {
                Err(ScramError::InvalidServerSignature)
            }
            Some(_) | None => Ok(()),
        }
    }
}
