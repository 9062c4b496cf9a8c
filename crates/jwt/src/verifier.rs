//! The verifier: the current key set plus the settings, swapped whole on refresh.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::claims::{ClaimRules, Claims};
use crate::error::JwtError;
use crate::fetch::Fetcher;
use crate::keys::{KeySet, VerifyingKey};
use crate::pem::parse_pem;
use crate::settings::{JwtSettings, KeySource};
use crate::token::Token;

/// Checks tokens against the keys of one issuer.
///
/// [`JwtVerifier::verify`] is synchronous and does no I/O; [`JwtVerifier::refresh`] reloads
/// the keys (a reload or a timer calls it) and replaces the set only when loading succeeded.
pub struct JwtVerifier {
    settings: JwtSettings,
    fetcher: Option<Fetcher>,
    keys: RwLock<Arc<KeySet>>,
}

impl JwtVerifier {
    /// A verifier with the keys loaded once from `settings.keys`; fails when none load.
    pub async fn new(settings: JwtSettings) -> Result<Self, JwtError> {
        let fetcher = match settings.keys {
            KeySource::PemFiles(_) => None,
            KeySource::JwksUrl(_) | KeySource::OidcDiscovery(_) => Some(Fetcher::new(&settings)?),
        };
        let keys = load(&settings, fetcher.as_ref()).await?;
        Ok(Self {
            settings,
            fetcher,
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    /// A verifier over the public keys in `pem` (the text of a key file), built without I/O:
    /// for fuzz targets and tests that hold their keys in memory. [`JwtVerifier::refresh`]
    /// still reloads from `settings.keys` (and keeps these keys when that fails).
    pub fn from_pem(settings: JwtSettings, pem: &str) -> Result<Self, JwtError> {
        let keys = KeySet::new(parse_pem(pem)?)?;
        Ok(Self {
            settings,
            fetcher: None,
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    /// Reloads the keys (files re-read, URLs re-fetched) and returns how many there are now.
    /// On error the previous keys stay in use.
    pub async fn refresh(&self) -> Result<usize, JwtError> {
        let keys = load(&self.settings, self.fetcher.as_ref()).await?;
        let count = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
        Ok(count)
    }

    /// How many keys are in use.
    pub fn key_count(&self) -> usize {
        self.current_keys().len()
    }

    /// The settings this verifier checks against.
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// Checks `token`'s signature and registered claims, returning its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        self.verify_at(token, SystemTime::now())
    }

    /// [`JwtVerifier::verify`] with the clock given.
    pub(crate) fn verify_at(&self, token: &str, now: SystemTime) -> Result<Claims, JwtError> {
        let token = Token::parse(token)?;
        let keys = self.current_keys();
        let candidates = keys.candidates(token.alg, token.kid.as_deref())?;
        if !candidates
            .iter()
            .any(|key| key.verifies(token.alg, token.signing_input, token.signature))
        {
            return Err(JwtError::BadSignature);
        }
        let rules = ClaimRules {
            issuer: &self.settings.issuer,
            audience: self.settings.audience.as_deref(),
            leeway: self.settings.leeway,
        };
        rules.check(token.payload_object()?, now)
    }

    fn current_keys(&self) -> Arc<KeySet> {
        // A panic while holding the lock cannot leave a half-written set: writers swap an Arc.
        Arc::clone(
            &self
                .keys
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("settings", &self.settings)
            .field("keys", &self.current_keys())
            .finish()
    }
}

/// Loads the whole key set named by `settings`.
async fn load(settings: &JwtSettings, fetcher: Option<&Fetcher>) -> Result<KeySet, JwtError> {
    let keys = match (&settings.keys, fetcher) {
        (KeySource::PemFiles(paths), _) => load_pem_files(paths).await?,
        (KeySource::JwksUrl(url), Some(fetcher)) => fetcher.jwks(url).await?,
        (KeySource::OidcDiscovery(url), Some(fetcher)) => {
            let jwks_uri = fetcher.discover(url, &settings.issuer).await?;
            fetcher.jwks(&jwks_uri).await?
        }
        (KeySource::JwksUrl(_) | KeySource::OidcDiscovery(_), None) => {
            return Err(JwtError::Fetch("no HTTP client".into()));
        }
    };
    KeySet::new(keys)
}

async fn load_pem_files(paths: &[PathBuf]) -> Result<Vec<VerifyingKey>, JwtError> {
    let mut keys = Vec::new();
    for path in paths {
        let in_file = |why: String| JwtError::KeyLoad(format!("{}: {why}", path.display()));
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| in_file(e.to_string()))?;
        keys.extend(parse_pem(&text).map_err(|e| match e {
            JwtError::KeyLoad(why) => in_file(why),
            other => other,
        })?);
    }
    Ok(keys)
}
