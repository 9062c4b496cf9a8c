//! Key derivation shared by the client and the server (RFC 5802 section 3).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Length of every SCRAM-SHA-256 key, signature and proof.
pub const KEY_LEN: usize = 32;

/// A 32-byte key.
pub type Key = [u8; KEY_LEN];

/// `HMAC-SHA-256(key, parts...)`.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `SHA-256(data)`.
pub fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// The password as PostgreSQL feeds it to PBKDF2: SASLprep-normalised, or the raw bytes when
/// SASLprep refuses it (PostgreSQL does the same, for non-UTF-8 and odd passwords).
pub fn normalize(password: &[u8]) -> Vec<u8> {
    std::str::from_utf8(password)
        .ok()
        .and_then(|p| stringprep::saslprep(p).ok())
        .map_or_else(|| password.to_vec(), |p| p.into_owned().into_bytes())
}

/// `Hi(password, salt, i)`: PBKDF2-HMAC-SHA-256.
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(&normalize(password), salt, iterations, &mut out);
    out
}

/// `ClientKey = HMAC(SaltedPassword, "Client Key")`.
pub fn client_key(salted: &Key) -> Key {
    hmac(salted, &[b"Client Key"])
}

/// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
pub fn server_key(salted: &Key) -> Key {
    hmac(salted, &[b"Server Key"])
}

/// `ClientSignature = HMAC(StoredKey, AuthMessage)`.
pub fn client_signature(stored_key: &Key, auth_message: &[u8]) -> Key {
    hmac(stored_key, &[auth_message])
}

/// `ServerSignature = HMAC(ServerKey, AuthMessage)`.
pub fn server_signature(server_key: &Key, auth_message: &[u8]) -> Key {
    hmac(server_key, &[auth_message])
}

/// `a XOR b`: turns a ClientKey into a ClientProof and back.
pub fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// The AuthMessage both sides sign.
pub fn auth_message(
    client_first_bare: &[u8],
    server_first: &[u8],
    client_final_without_proof: &[u8],
) -> Vec<u8> {
    [
        client_first_bare,
        b",",
        server_first,
        b",",
        client_final_without_proof,
    ]
    .concat()
}
