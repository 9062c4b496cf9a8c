//! Fetching key sets and discovery documents over HTTP(S).

use std::time::Duration;

use serde_json::Value;

use crate::error::JwtError;
use crate::jwks::parse_jwks;
use crate::keys::VerifyingKey;

/// The largest discovery or JWKS document read; real ones are a few KiB.
pub const MAX_DOCUMENT_LEN: usize = 512 * 1024;

/// An HTTP client for key documents, every request bounded by the configured timeout.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    /// A client whose requests each give up after `timeout`.
    pub(crate) fn new(timeout: Duration) -> Result<Self, JwtError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| JwtError::Fetch(format!("HTTP client: {}", e.without_url())))?;
        Ok(Self { client })
    }

    /// The keys of the JWKS at `url`.
    pub(crate) async fn jwks(&self, url: &str) -> Result<Vec<VerifyingKey>, JwtError> {
        parse_jwks(&self.get_json(url, "key set").await?)
    }

    /// The `jwks_uri` of the discovery document at `url`, after checking its `issuer`.
    pub(crate) async fn discover(&self, url: &str, issuer: &str) -> Result<String, JwtError> {
        let document = self.get_json(url, "discovery document").await?;
        jwks_uri_of(&document, issuer)
    }

    /// GETs `url` and parses its body, reading at most [`MAX_DOCUMENT_LEN`] bytes.
    async fn get_json(&self, url: &str, what: &str) -> Result<Value, JwtError> {
        let failed = |e: reqwest::Error| JwtError::Fetch(format!("{what}: {}", e.without_url()));
        let mut response = self.client.get(url).send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwtError::Fetch(format!("{what}: HTTP status {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_LEN {
                return Err(JwtError::Fetch(format!(
                    "{what}: larger than {MAX_DOCUMENT_LEN} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| JwtError::Fetch(format!("{what}: {e}")))
    }
}

/// Reads `jwks_uri`, refusing a document that names another issuer (OpenID Connect
/// Discovery §4.3: the `issuer` must be identical to the one the configuration names).
fn jwks_uri_of(document: &Value, issuer: &str) -> Result<String, JwtError> {
    match document.get("issuer") {
        None => {}
        Some(Value::String(found)) if found == issuer => {}
        Some(_) => {
            return Err(JwtError::Fetch(
                "discovery document names another issuer".into(),
            ));
        }
    }
    match document.get("jwks_uri") {
        Some(Value::String(uri)) => Ok(uri.clone()),
        _ => Err(JwtError::Fetch("discovery document has no jwks_uri".into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn jwks_uri_is_read_when_the_issuer_matches_or_is_absent() {
        let doc = json!({"issuer": "https://idp", "jwks_uri": "https://idp/keys"});
        assert_eq!(
            jwks_uri_of(&doc, "https://idp").unwrap(),
            "https://idp/keys"
        );
        let doc = json!({"jwks_uri": "https://idp/keys"});
        assert_eq!(
            jwks_uri_of(&doc, "https://idp").unwrap(),
            "https://idp/keys"
        );
    }

    #[test]
    fn discovery_naming_another_issuer_is_refused() {
        let doc = json!({"issuer": "https://evil", "jwks_uri": "https://evil/keys"});
        assert!(matches!(
            jwks_uri_of(&doc, "https://idp"),
            Err(JwtError::Fetch(_))
        ));
    }

    #[test]
    fn discovery_without_jwks_uri_is_refused() {
        let doc = json!({"issuer": "https://idp", "jwks_uri": 3});
        assert!(matches!(
            jwks_uri_of(&doc, "https://idp"),
            Err(JwtError::Fetch(_))
        ));
    }
}
