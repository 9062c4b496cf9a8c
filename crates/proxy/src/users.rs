//! The local user list: stored passwords (SCRAM verifier, md5 hash or plaintext) and how
//! each kind of client credential is checked against them.

use std::collections::HashMap;
use std::sync::Arc;

use pgbastion_auth::scram::{ScramSecret, DEFAULT_ITERATIONS};
use pgbastion_auth::StoredPassword;
use pgbastion_gateway::Credential;

use crate::kdf::Kdf;
use crate::secret::Secret;

/// Users with their stored passwords, parsed once; SCRAM secrets of plaintext passwords
/// derived once at load.
#[derive(Debug)]
pub struct Users {
    entries: HashMap<String, Entry>,
    /// What cleartext checks of users without a SCRAM verifier run PBKDF2 against.
    decoy: Arc<ScramSecret>,
    kdf: Kdf,
}

#[derive(Debug)]
struct Entry {
    stored: StoredPassword,
    /// For SCRAM logins: the verifier, or one derived from a plaintext password.
    scram: Option<ScramSecret>,
}

impl Users {
    /// From name → stored password; PBKDF2 for cleartext checks runs on `kdf`. Plaintext
    /// passwords get a SCRAM secret now, so that SCRAM logins do not run PBKDF2 per
    /// connection; md5 hashes cannot (SCRAM is refused for them). A stored password that
    /// cannot be read (a broken SCRAM verifier, which the configuration check refuses
    /// anyway) leaves its user unable to log in.
    pub fn new(stored: HashMap<String, Secret>, kdf: Kdf) -> Self {
        let entries: HashMap<_, _> = stored
            .into_iter()
            .filter_map(|(name, password)| {
                let stored = StoredPassword::parse(password.expose()).ok()?;
                let scram = stored.scram_secret(DEFAULT_ITERATIONS);
                Some((name, Entry { stored, scram }))
            })
            .collect();
        let decoy = Arc::new(decoy_secret(decoy_iterations(
            entries.values().map(|e| &e.stored),
        )));
        Self {
            entries,
            decoy,
            kdf,
        }
    }

    /// The SCRAM secret of `user` (None: unknown, or only an md5 hash is known).
    pub fn scram_secret(&self, user: &str) -> Option<ScramSecret> {
        self.entries.get(user).and_then(|e| e.scram.clone())
    }

    /// Checks a cleartext or md5 credential against the stored password. Cleartext checks
    /// run PBKDF2 (on the [`Kdf`] threads) once whoever asks, so that neither an unknown user
    /// nor the kind of password stored shows in the time they take.
    pub async fn check(&self, credential: &Credential) -> bool {
        match credential {
            Credential::Password { user, password } => {
                self.check_cleartext(user.clone(), password.clone()).await
            }
            Credential::Md5 {
                user,
                response,
                salt,
            } => self
                .entries
                .get(user)
                .is_some_and(|e| e.stored.verify_md5(user, *salt, response)),
            _ => false,
        }
    }

    async fn check_cleartext(&self, user: String, password: String) -> bool {
        let stored = self.entries.get(&user).map(|e| e.stored.clone());
        let decoy = self.decoy.clone();
        self.kdf
            .run(move || verify_cleartext_evenly(stored.as_ref(), &decoy, &user, &password))
            .await
            .unwrap_or(false)
    }
}

/// The verifier a cleartext check runs PBKDF2 against: the user's own SCRAM verifier, or the
/// decoy for an unknown user or one whose stored password needs no PBKDF2.
fn pbkdf2_target<'a>(
    stored: Option<&'a StoredPassword>,
    decoy: &'a ScramSecret,
) -> &'a ScramSecret {
    match stored {
        Some(StoredPassword::ScramVerifier(secret)) => secret,
        Some(StoredPassword::Md5Hash(_) | StoredPassword::Plaintext(_)) | None => decoy,
    }
}

/// A cleartext check that runs exactly one PBKDF2, against [`pbkdf2_target`].
fn verify_cleartext_evenly(
    stored: Option<&StoredPassword>,
    decoy: &ScramSecret,
    user: &str,
    password: &str,
) -> bool {
    let derived_matches = pbkdf2_target(stored, decoy).verify_password(password.as_bytes());
    match stored {
        Some(StoredPassword::ScramVerifier(_)) => derived_matches,
        Some(other) => {
            std::hint::black_box(derived_matches);
            other.verify_cleartext(user, password)
        }
        None => false,
    }
}

/// The iteration count most stored verifiers use (PostgreSQL's default when none is
/// stored): the decoy costs what a typical known user costs.
fn decoy_iterations<'a>(stored: impl Iterator<Item = &'a StoredPassword>) -> u32 {
    let mut counts = HashMap::<u32, usize>::new();
    for password in stored {
        if let StoredPassword::ScramVerifier(secret) = password {
            *counts.entry(secret.iterations).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(iterations, count)| (count, iterations))
        .map_or(DEFAULT_ITERATIONS, |(iterations, _)| iterations)
}

/// A verifier no password matches (its keys come from a random value, not a password).
fn decoy_secret(iterations: u32) -> ScramSecret {
    let nonce: [u8; 32] = rand::random();
    ScramSecret::mock("decoy", &nonce, iterations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbastion_auth::md5::{md5_client_response, md5_hash};
    use std::time::{Duration, Instant};

    fn users(stored: &[(&str, String)]) -> Users {
        let stored = stored
            .iter()
            .map(|(name, password)| ((*name).to_owned(), Secret::from(password.clone())))
            .collect();
        Users::new(stored, Kdf::with_threads(1).unwrap())
    }

    fn cleartext(user: &str, password: &str) -> Credential {
        Credential::Password {
            user: user.into(),
            password: password.into(),
        }
    }

    async fn within<T>(work: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .expect("timed out")
    }

    #[tokio::test]
    async fn every_stored_form_checks_cleartext_and_the_right_ones_md5() {
        let users = users(&[
            ("plain", "s3cret".to_owned()),
            ("hashed", md5_hash("hashed", "s3cret")),
            (
                "verifier",
                ScramSecret::generate(b"s3cret", 4096).to_string(),
            ),
        ]);
        for user in ["plain", "hashed", "verifier"] {
            assert!(
                within(users.check(&cleartext(user, "s3cret"))).await,
                "{user}"
            );
            assert!(
                !within(users.check(&cleartext(user, "S3cret"))).await,
                "{user}"
            );
        }
        let salt = [1, 2, 3, 4];
        let md5 = |user: &str| Credential::Md5 {
            user: user.into(),
            response: md5_client_response(user, "s3cret", salt),
            salt,
        };
        assert!(within(users.check(&md5("plain"))).await);
        assert!(within(users.check(&md5("hashed"))).await);
        assert!(!within(users.check(&md5("verifier"))).await);
        assert!(!within(users.check(&md5("nobody"))).await);
        assert!(users.scram_secret("plain").is_some());
        assert!(users.scram_secret("verifier").is_some());
        assert!(users.scram_secret("hashed").is_none());
        assert!(!within(users.check(&cleartext("nobody", "s3cret"))).await);
    }

    #[tokio::test]
    async fn a_broken_verifier_logs_nobody_in_not_even_with_itself_as_the_password() {
        let broken = ScramSecret::generate(b"pw", 4096)
            .to_string()
            .replace("SCRAM-SHA-256$4096:", "SCRAM-SHA-256$x:");
        let users = users(&[("broken", broken.clone())]);
        assert!(!within(users.check(&cleartext("broken", &broken))).await);
        assert!(users.scram_secret("broken").is_none());
    }

    #[test]
    fn unknown_users_run_the_same_pbkdf2_as_scram_stored_ones() {
        let verifier = ScramSecret::generate(b"s3cret", 8192);
        let users = users(&[
            ("verifier", verifier.to_string()),
            ("plain", "s3cret".to_owned()),
        ]);
        let stored = |user: &str| users.entries.get(user).map(|e| &e.stored);
        assert!(std::ptr::eq(
            pbkdf2_target(stored("verifier"), &users.decoy),
            match stored("verifier") {
                Some(StoredPassword::ScramVerifier(secret)) => secret,
                _ => unreachable!(),
            }
        ));
        for user in ["nobody", "plain"] {
            let target = pbkdf2_target(stored(user), &users.decoy);
            assert!(std::ptr::eq(target, &*users.decoy), "{user}");
            assert_eq!(target.iterations, verifier.iterations, "{user}");
        }
    }

    #[test]
    fn the_decoy_costs_what_most_stored_verifiers_cost() {
        let verifier = |i| StoredPassword::ScramVerifier(ScramSecret::generate(b"pw", i));
        let stored = [verifier(2), verifier(3), verifier(3)];
        assert_eq!(decoy_iterations(stored.iter()), 3);
        assert_eq!(decoy_iterations([].iter()), DEFAULT_ITERATIONS);
        let plain = StoredPassword::Plaintext("pw".into());
        assert_eq!(decoy_iterations([plain].iter()), DEFAULT_ITERATIONS);
    }

    /// Median time of `check` for each credential over `rounds` interleaved runs (so that
    /// load on the machine affects both alike).
    async fn median_checks(
        users: &Users,
        credentials: [&Credential; 2],
        rounds: usize,
    ) -> [Duration; 2] {
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (credential, times) in credentials.iter().zip(&mut times) {
                let start = Instant::now();
                std::hint::black_box(users.check(credential).await);
                times.push(start.elapsed());
            }
        }
        times.map(|mut times| {
            times.sort();
            times[rounds / 2]
        })
    }

    #[tokio::test]
    async fn unknown_users_take_as_long_as_scram_stored_ones_on_cleartext_routes() {
        let users = users(&[(
            "verifier",
            ScramSecret::generate(b"s3cret", 4096).to_string(),
        )]);
        let (known, unknown) = (cleartext("verifier", "guess"), cleartext("nobody", "guess"));
        let [known, unknown] = within(median_checks(&users, [&known, &unknown], 21)).await;
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        assert!(
            (0.5..2.0).contains(&ratio),
            "unknown user {unknown:?}, known user {known:?}"
        );
    }
}
