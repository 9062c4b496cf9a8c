//! Token verification for `jwt` and `oauth` routes, with keys refreshed on a timer and on
//! demand (SIGHUP).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pgbastion_jwt::{JwtSettings, JwtVerifier, KeySource};

use crate::metrics::{Metrics, Outcome};
use crate::settings::Jwt;

/// A verifier plus the claim that names the user.
pub struct Tokens {
    verifier: JwtVerifier,
    /// The claim compared with the startup user.
    pub claim: String,
    refresh: Duration,
    metrics: Arc<Metrics>,
}

impl Tokens {
    /// Loads the keys once (fails when none can be loaded); refreshes are counted in
    /// `metrics`.
    pub async fn new(jwt: &Jwt, metrics: Arc<Metrics>) -> Result<Self, pgbastion_jwt::JwtError> {
        let keys = if let Some(url) = &jwt.oidc_discovery {
            KeySource::OidcDiscovery(url.clone())
        } else if let Some(url) = &jwt.jwks_url {
            KeySource::JwksUrl(url.clone())
        } else {
            KeySource::PemFiles(jwt.keys.clone())
        };
        let mut settings = JwtSettings::new(jwt.issuer.clone(), keys).with_leeway(jwt.leeway);
        if let Some(audience) = &jwt.audience {
            settings = settings.with_audience(audience.clone());
        }
        if let Some(ca_file) = &jwt.ca_file {
            settings = settings.with_ca_file(ca_file.clone());
        }
        if jwt.insecure {
            settings = settings.allowing_http();
        }
        Ok(Self {
            verifier: JwtVerifier::new(settings).await?,
            claim: jwt.claim.clone(),
            refresh: jwt.refresh,
            metrics,
        })
    }

    /// Verifies a token; returns its claims with string and number values as strings.
    pub fn verify(&self, token: &str) -> Result<BTreeMap<String, String>, pgbastion_jwt::JwtError> {
        let claims = self.verifier.verify(token)?;
        Ok(claims
            .as_map()
            .iter()
            .filter_map(|(name, value)| {
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((name.clone(), text))
            })
            .collect())
    }

    /// Reloads the keys now; on failure the old keys stay.
    pub async fn refresh(&self) {
        let refreshed = self.verifier.refresh().await;
        self.metrics.key_refresh(Outcome::of(refreshed.is_ok()));
        match refreshed {
            Ok(count) => tracing::info!(keys = count, "token keys refreshed"),
            Err(error) => tracing::warn!(%error, "token key refresh failed; keeping the old keys"),
        }
    }

    /// Refreshes the keys every `refresh` period while these keys are in use: the task ends
    /// once the last configuration holding them is gone (a reload that changed `[jwt]`).
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tokens = Arc::downgrade(self);
        let period = self.refresh.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(tokens) = tokens.upgrade() else {
                    return;
                };
                tokens.refresh().await;
            }
        })
    }
}
