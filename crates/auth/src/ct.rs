//! Constant-time comparison of secrets (proofs, hashes, passwords, cancel keys).
//!
//! Its own module so that every mechanism (md5, SCRAM) and every crate that compares a
//! secret uses the same function, without one mechanism importing another.

use subtle::ConstantTimeEq;

/// Whether `a` and `b` are equal, in time that depends only on their lengths (never on
/// where they first differ).
pub fn eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_are_equal_and_anything_else_is_not() {
        assert!(eq(b"", b""));
        assert!(eq(b"secret", b"secret"));
        assert!(!eq(b"secret", b"secreT"));
        assert!(!eq(b"secret", b"secret "));
        assert!(!eq(b"", b"x"));
    }
}
