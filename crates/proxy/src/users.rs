//! The local user list: stored passwords (SCRAM verifier, md5 hash or plaintext) and how
//! each kind of client credential is checked against them.

use std::collections::HashMap;

use pgbastion_auth::md5::{constant_time_eq, is_md5_hash, md5_hash};
use pgbastion_auth::scram::ScramSecret;
use pgbastion_gateway::Credential;

use crate::secret::Secret;

/// Users with their secrets, SCRAM secrets derived once at load.
#[derive(Debug, Default)]
pub struct Users {
    stored: HashMap<String, Secret>,
    scram: HashMap<String, ScramSecret>,
}

/// PBKDF2 iterations for SCRAM secrets derived from plaintext passwords (PostgreSQL's default).
const ITERATIONS: u32 = 4096;

impl Users {
    /// From name → stored password. Plaintext passwords get a SCRAM secret now, so that SCRAM
    /// logins do not run PBKDF2 per connection; md5 hashes cannot (SCRAM is refused for them).
    pub fn new(stored: HashMap<String, Secret>) -> Self {
        let scram = stored
            .iter()
            .filter_map(|(name, password)| {
                let password = password.expose();
                let secret = match password.parse::<ScramSecret>() {
                    Ok(secret) => secret,
                    Err(_) if is_md5_hash(password) => return None,
                    Err(_) => ScramSecret::generate(password.as_bytes(), ITERATIONS),
                };
                Some((name.clone(), secret))
            })
            .collect();
        Self { stored, scram }
    }

    /// The SCRAM secret of `user` (None: unknown, or only an md5 hash is known).
    pub fn scram_secret(&self, user: &str) -> Option<ScramSecret> {
        self.scram.get(user).cloned()
    }

    /// Checks a cleartext or md5 credential against the stored password.
    pub fn check(&self, credential: &Credential) -> bool {
        let Some(stored) = self.stored.get(credential.user()) else {
            return false;
        };
        let stored = stored.expose();
        match credential {
            Credential::Password { user, password } => {
                if let Ok(secret) = stored.parse::<ScramSecret>() {
                    secret.verify_password(password.as_bytes())
                } else if is_md5_hash(stored) {
                    constant_time_eq(md5_hash(user, password).as_bytes(), stored.as_bytes())
                } else {
                    constant_time_eq(password.as_bytes(), stored.as_bytes())
                }
            }
            Credential::Md5 { .. } => {
                // md5 needs the plaintext or the md5 hash; a SCRAM verifier cannot answer it.
                stored.parse::<ScramSecret>().is_err() && credential.matches_password(stored)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_form_checks_cleartext_and_the_right_ones_md5() {
        let scram = ScramSecret::generate(b"s3cret", 4096).to_string();
        let users = Users::new(HashMap::from([
            ("plain".to_owned(), "s3cret".into()),
            ("hashed".to_owned(), md5_hash("hashed", "s3cret").into()),
            ("verifier".to_owned(), scram.into()),
        ]));
        for user in ["plain", "hashed", "verifier"] {
            let good = Credential::Password {
                user: user.into(),
                password: "s3cret".into(),
            };
            let bad = Credential::Password {
                user: user.into(),
                password: "S3cret".into(),
            };
            assert!(users.check(&good), "{user}");
            assert!(!users.check(&bad), "{user}");
        }
        let salt = [1, 2, 3, 4];
        let md5 = |user: &str| Credential::Md5 {
            user: user.into(),
            response: pgbastion_auth::md5::md5_client_response(user, "s3cret", salt),
            salt,
        };
        assert!(users.check(&md5("plain")));
        assert!(users.check(&md5("hashed")));
        assert!(!users.check(&md5("verifier")));
        assert!(users.scram_secret("plain").is_some());
        assert!(users.scram_secret("verifier").is_some());
        assert!(users.scram_secret("hashed").is_none());
        assert!(!users.check(&Credential::Password {
            user: "nobody".into(),
            password: "s3cret".into()
        }));
    }
}
