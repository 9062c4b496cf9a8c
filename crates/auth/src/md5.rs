//! PostgreSQL's md5 password scheme: the stored hash is `"md5" + hex(md5(password + user))`,
//! and the client answers a 4-byte salt with `"md5" + hex(md5(hex_hash + salt))`.

use md5::{Digest, Md5};
use rand::RngCore;
use subtle::ConstantTimeEq;

/// The stored form of a password: `"md5" + hex(md5(password + user))`.
pub fn md5_hash(user: &str, password: &str) -> String {
    let mut hasher = Md5::new();
    hasher.update(password.as_bytes());
    hasher.update(user.as_bytes());
    format!("md5{}", hex(&hasher.finalize()))
}

/// What a client sends for `salt`, given the stored hash (`md5...`).
pub fn md5_salted_response(stored_hash: &str, salt: [u8; 4]) -> String {
    let hex_part = stored_hash.strip_prefix("md5").unwrap_or(stored_hash);
    let mut hasher = Md5::new();
    hasher.update(hex_part.as_bytes());
    hasher.update(salt);
    format!("md5{}", hex(&hasher.finalize()))
}

/// What a client sends for `salt`, from the plaintext password.
pub fn md5_client_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    md5_salted_response(&md5_hash(user, password), salt)
}

/// Checks a client's md5 `response` against a stored secret, which may be an `md5...` hash
/// (35 characters, as PostgreSQL stores it) or a plaintext password. Constant time.
pub fn verify_md5_response(stored: &str, user: &str, salt: [u8; 4], response: &str) -> bool {
    let stored_hash = if is_md5_hash(stored) {
        stored.to_owned()
    } else {
        md5_hash(user, stored)
    };
    constant_time_eq(
        md5_salted_response(&stored_hash, salt).as_bytes(),
        response.as_bytes(),
    )
}

/// Whether `s` has the shape of a stored md5 hash.
pub fn is_md5_hash(s: &str) -> bool {
    s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A fresh salt from the operating system's CSPRNG.
pub fn random_salt() -> [u8; 4] {
    let mut salt = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    salt
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_hash_matches_postgresql() {
        // python3 -c "import hashlib;print(hashlib.md5(b'passwordpostgres').hexdigest())"
        assert_eq!(
            md5_hash("postgres", "password"),
            "md532e12f215ba27cb750c9e093ce4b5127"
        );
    }

    #[test]
    fn responses_verify_from_either_stored_form() {
        let salt = [1, 2, 3, 4];
        let response = md5_client_response("alice", "secret", salt);
        assert!(verify_md5_response("secret", "alice", salt, &response));
        assert!(verify_md5_response(
            &md5_hash("alice", "secret"),
            "alice",
            salt,
            &response
        ));
        assert!(!verify_md5_response("wrong", "alice", salt, &response));
        assert!(!verify_md5_response("secret", "bob", salt, &response));
        assert!(!verify_md5_response("secret", "alice", [0; 4], &response));
    }
}
