//! Fetching key sets and discovery documents over HTTP(S).

use std::path::Path;

use serde_json::Value;

use crate::error::JwtError;
use crate::jwks::parse_jwks;
use crate::keys::VerifyingKey;
use crate::settings::JwtSettings;

/// The largest discovery or JWKS document read; real ones are a few KiB.
pub const MAX_DOCUMENT_LEN: usize = 512 * 1024;

/// An HTTP client for key documents, every request bounded by the configured timeout.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    allow_http: bool,
}

impl Fetcher {
    /// A client for `settings`: its timeout, its CA file (replacing the public roots) and
    /// whether plain `http://` is allowed.
    pub(crate) fn new(settings: &JwtSettings) -> Result<Self, JwtError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.http_timeout)
            // Also refuses a redirect from https to http.
            .https_only(!settings.allow_http);
        if let Some(path) = &settings.ca_file {
            builder = builder.tls_built_in_root_certs(false);
            for certificate in read_ca_file(path)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder
            .build()
            .map_err(|e| JwtError::Fetch(format!("HTTP client: {}", chain(&e))))?;
        Ok(Self {
            client,
            allow_http: settings.allow_http,
        })
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
        let parsed = self.checked_url(url, what)?;
        // reqwest's own text is "error sending request for url (...)": the cause is in the
        // source chain, and the URL is said once, here.
        let failed = |e: reqwest::Error| {
            JwtError::Fetch(format!("{what} {url}: {}", chain(&e.without_url())))
        };
        let mut response = self.client.get(parsed).send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwtError::Fetch(format!(
                "{what} {url}: HTTP status {status}"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_LEN {
                return Err(JwtError::Fetch(format!(
                    "{what} {url}: larger than {MAX_DOCUMENT_LEN} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| JwtError::Fetch(format!("{what} {url}: {e}")))
    }

    /// Parses `url`, refusing schemes other than https (and http when allowed).
    fn checked_url(&self, url: &str, what: &str) -> Result<reqwest::Url, JwtError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| JwtError::Fetch(format!("{what} URL {url:?}: {e}")))?;
        match parsed.scheme() {
            "https" => Ok(parsed),
            "http" if self.allow_http => Ok(parsed),
            "http" => Err(JwtError::InsecureUrl(url.to_owned())),
            other => Err(JwtError::Fetch(format!(
                "{what} URL {url:?}: scheme {other:?} is not https"
            ))),
        }
    }
}

/// The certificates of a PEM file.
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, JwtError> {
    let in_file = |why: String| JwtError::KeyLoad(format!("CA file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| in_file(e.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| in_file(chain(&e)))?;
    if certificates.is_empty() {
        return Err(in_file("no certificate in the file".into()));
    }
    Ok(certificates)
}

/// `error` and every source under it, joined by ": ", each text said once (some errors
/// repeat their source's text in their own).
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
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
