//! PostgreSQL's md5 password scheme: the stored hash is `"md5" + hex(md5(password + user))`,
//! and the client answers a 4-byte salt with `"md5" + hex(md5(hex_hash + salt))`.
//!
//! Checking a response against what is stored (which may be a SCRAM verifier, and then must
//! refuse md5) is [`StoredPassword::verify_md5`](crate::StoredPassword::verify_md5).

use md5::{Digest, Md5};
use rand::RngCore;

/// The stored form of a password: `"md5" + hex(md5(password + user))`.
pub fn md5_hash(user: &str, password: &str) -> String {
    let mut hasher = Md5::new();
    hasher.update(password.as_bytes());
    hasher.update(user.as_bytes());
    format!("md5{}", hex(&hasher.finalize()))
}

/// What a client sends in PasswordMessage for `salt`, given the stored hash (`md5...`, or
/// just its 32 hex digits).
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

/// Whether `s` has the shape of a stored md5 hash: `md5` and 32 lowercase hex digits, the
/// test PostgreSQL applies (`get_password_type`).
pub fn is_md5_hash(s: &str) -> bool {
    s.strip_prefix("md5").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A fresh salt from the operating system's CSPRNG.
pub fn random_salt() -> [u8; 4] {
    let mut salt = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    salt
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
    fn stored_hash_matches_one_made_by_postgresql() {
        // `SET password_encryption = 'md5'; CREATE ROLE carol PASSWORD 'password'` in
        // PostgreSQL 15, then `SELECT rolpassword FROM pg_authid`.
        assert_eq!(
            md5_hash("carol", "password"),
            "md58c93d9ddf10222254a014ace6b6ef393"
        );
    }

    #[test]
    fn salted_response_matches_a_reference_computation() {
        // python3: h = md5(b"passwordpostgres").hexdigest(); md5(h.encode() + b"\x01\x02\x03\x04")
        let expected = "md598511ceaec347a656f032c7f2a16ef17";
        let stored = md5_hash("postgres", "password");
        assert_eq!(md5_salted_response(&stored, [1, 2, 3, 4]), expected);
        assert_eq!(md5_salted_response(&stored[3..], [1, 2, 3, 4]), expected);
        assert_eq!(
            md5_client_response("postgres", "password", [1, 2, 3, 4]),
            expected
        );
    }

    #[test]
    fn only_md5_and_32_lowercase_hex_digits_is_a_stored_hash() {
        assert!(is_md5_hash("md532e12f215ba27cb750c9e093ce4b5127"));
        assert!(!is_md5_hash("md532E12F215BA27CB750C9E093CE4B5127"));
        assert!(!is_md5_hash("md532e12f215ba27cb750c9e093ce4b512"));
        assert!(!is_md5_hash("xyz32e12f215ba27cb750c9e093ce4b5127"));
        assert!(!is_md5_hash("md5\u{e9}2e12f215ba27cb750c9e093ce4b51"));
    }

    #[test]
    fn random_salts_differ() {
        assert_ne!(random_salt(), random_salt());
    }
}
