//! A stored password, parsed once: a SCRAM verifier, an md5 hash or a plaintext password,
//! told apart as PostgreSQL's `get_password_type()` does, and what each can verify.

use std::fmt;

use crate::md5::{is_md5_hash, md5_hash, md5_salted_response};
use crate::scram::{ScramSecret, SecretError};

/// What a user's stored password is. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredPassword {
    /// `SCRAM-SHA-256$...`: checks cleartext passwords (PBKDF2) and SCRAM exchanges; cannot
    /// answer an md5 challenge.
    ScramVerifier(ScramSecret),
    /// `md5` and 32 lowercase hex digits: checks cleartext passwords and md5 responses;
    /// cannot verify SCRAM.
    Md5Hash(String),
    /// Anything else: the password itself, which can check every method.
    Plaintext(String),
}

impl StoredPassword {
    /// Reads a stored password. A string that starts like a SCRAM verifier but is not one
    /// is refused rather than taken for a plaintext password: whoever wrote it meant a
    /// verifier, and as a plaintext password it would let in anyone who has the string.
    pub fn parse(stored: &str) -> Result<Self, SecretError> {
        match stored.parse::<ScramSecret>() {
            Ok(secret) => Ok(Self::ScramVerifier(secret)),
            Err(SecretError::NotScramSha256) if is_md5_hash(stored) => {
                Ok(Self::Md5Hash(stored.to_owned()))
            }
            Err(SecretError::NotScramSha256) => Ok(Self::Plaintext(stored.to_owned())),
            Err(other) => Err(other),
        }
    }

    /// Whether `password`, sent in clear by `user`, is this password. Constant time; only
    /// for a SCRAM verifier does this run PBKDF2 (with the verifier's iteration count):
    /// callers that must not reveal the kind of password, or whether the user exists, by the
    /// time a check takes run the same PBKDF2 against a decoy otherwise.
    pub fn verify_cleartext(&self, user: &str, password: &str) -> bool {
        match self {
            Self::ScramVerifier(secret) => secret.verify_password(password.as_bytes()),
            Self::Md5Hash(hash) => {
                crate::ct::eq(md5_hash(user, password).as_bytes(), hash.as_bytes())
            }
            Self::Plaintext(stored) => crate::ct::eq(password.as_bytes(), stored.as_bytes()),
        }
    }

    /// Whether `response` answers the md5 challenge `salt` for `user`. Constant time. A SCRAM
    /// verifier never matches: as in PostgreSQL, md5 against a SCRAM-stored user is refused.
    pub fn verify_md5(&self, user: &str, salt: [u8; 4], response: &str) -> bool {
        let hash = match self {
            Self::ScramVerifier(_) => return false,
            Self::Md5Hash(hash) => hash.clone(),
            Self::Plaintext(password) => md5_hash(user, password),
        };
        crate::ct::eq(
            md5_salted_response(&hash, salt).as_bytes(),
            response.as_bytes(),
        )
    }

    /// The verifier a SCRAM exchange checks the client against: the stored one, or for a
    /// plaintext password one derived now with a fresh salt and `iterations` (PBKDF2: derive
    /// it once and keep it). `None` for an md5 hash, which cannot verify SCRAM.
    pub fn scram_secret(&self, iterations: u32) -> Option<ScramSecret> {
        match self {
            Self::ScramVerifier(secret) => Some(secret.clone()),
            Self::Md5Hash(_) => None,
            Self::Plaintext(password) => {
                Some(ScramSecret::generate(password.as_bytes(), iterations))
            }
        }
    }
}

impl fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ScramVerifier(secret) => f.debug_tuple("ScramVerifier").field(secret).finish(),
            Self::Md5Hash(_) => f.write_str("Md5Hash(<redacted>)"),
            Self::Plaintext(_) => f.write_str("Plaintext(<redacted>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::md5::md5_client_response;

    const SALT: [u8; 4] = [1, 2, 3, 4];

    fn each_form(user: &str, password: &str) -> [StoredPassword; 3] {
        [
            ScramSecret::generate(password.as_bytes(), 4096).to_string(),
            md5_hash(user, password),
            password.to_owned(),
        ]
        .map(|stored| StoredPassword::parse(&stored).unwrap())
    }

    #[test]
    fn each_stored_form_is_recognised_as_postgresql_does() {
        let [scram, md5, plain] = each_form("alice", "s3cret");
        assert!(matches!(scram, StoredPassword::ScramVerifier(_)));
        assert!(matches!(md5, StoredPassword::Md5Hash(_)));
        assert!(matches!(plain, StoredPassword::Plaintext(_)));
        // Upper-case hex is not an md5 hash to PostgreSQL either: it is a password.
        let upper = md5_hash("alice", "s3cret").to_uppercase();
        assert!(matches!(
            StoredPassword::parse(&upper),
            Ok(StoredPassword::Plaintext(_))
        ));
    }

    #[test]
    fn a_broken_scram_verifier_is_refused_not_taken_for_a_password() {
        let secret = ScramSecret::generate(b"pw", 4096).to_string();
        let broken = secret.replace("SCRAM-SHA-256$4096:", "SCRAM-SHA-256$x:");
        assert_eq!(StoredPassword::parse(&broken), Err(SecretError::Iterations));
    }

    #[test]
    fn every_form_verifies_the_right_cleartext_password_only() {
        for stored in each_form("alice", "s3cret") {
            assert!(stored.verify_cleartext("alice", "s3cret"), "{stored:?}");
            assert!(!stored.verify_cleartext("alice", "S3cret"), "{stored:?}");
            assert!(!stored.verify_cleartext("alice", ""), "{stored:?}");
        }
        // The md5 hash is salted with the user name.
        let [_, md5, _] = each_form("alice", "s3cret");
        assert!(!md5.verify_cleartext("bob", "s3cret"));
    }

    #[test]
    fn md5_responses_verify_against_md5_hashes_and_plaintext() {
        let [_, md5, plain] = each_form("alice", "s3cret");
        let response = md5_client_response("alice", "s3cret", SALT);
        for stored in [&md5, &plain] {
            assert!(stored.verify_md5("alice", SALT, &response), "{stored:?}");
            assert!(!stored.verify_md5("alice", [0; 4], &response), "{stored:?}");
            let wrong = md5_client_response("alice", "S3cret", SALT);
            assert!(!stored.verify_md5("alice", SALT, &wrong), "{stored:?}");
        }
        // From plaintext the hash is made with the user asking; a stored hash already has
        // its user inside.
        assert!(!plain.verify_md5("bob", SALT, &response));
    }

    #[test]
    fn md5_auth_against_a_scram_stored_user_is_refused() {
        let secret = ScramSecret::generate(b"s3cret", 4096).to_string();
        let stored = StoredPassword::parse(&secret).unwrap();
        // Neither the password nor the verifier string (as if it were a password) works.
        for password in ["s3cret", secret.as_str()] {
            let response = md5_client_response("alice", password, SALT);
            assert!(!stored.verify_md5("alice", SALT, &response));
        }
    }

    #[test]
    fn scram_secrets_come_from_verifiers_and_plaintext_but_not_md5_hashes() {
        let [scram, md5, plain] = each_form("alice", "s3cret");
        let StoredPassword::ScramVerifier(verifier) = &scram else {
            unreachable!()
        };
        assert_eq!(scram.scram_secret(1).as_ref(), Some(verifier));
        assert_eq!(md5.scram_secret(4096), None);
        let derived = plain.scram_secret(2).unwrap();
        assert_eq!(derived.iterations, 2);
        assert!(derived.verify_password(b"s3cret"));
        assert!(!derived.verify_password(b"S3cret"));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        for stored in each_form("alice", "s3cret") {
            let text = format!("{stored:?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(!text.contains("md5"), "{text}");
        }
    }
}
