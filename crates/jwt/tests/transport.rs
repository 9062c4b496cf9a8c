#![allow(clippy::unwrap_used)] // tests fail loudly on purpose
//! How keys are fetched: https only (with the issuer's CA file), plain http only when allowed
//! explicitly, and fetch failures that say which URL failed and why.

mod common;

use std::path::PathBuf;

use common::{claims, within, AUDIENCE};
use pgbastion_jwt::{JwtError, JwtSettings, JwtVerifier, KeySource};
use pgbastion_testkit::TestIssuer;
use serde_json::json;

/// The issuer's CA certificate written into `dir`.
fn ca_file(issuer: &TestIssuer, dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("idp-ca.crt");
    std::fs::write(&path, issuer.ca_cert_pem().unwrap()).unwrap();
    path
}

fn strict(issuer: &TestIssuer, keys: KeySource) -> JwtSettings {
    JwtSettings::new(issuer.issuer(), keys).with_audience(AUDIENCE)
}

#[tokio::test]
async fn keys_are_fetched_over_https_with_the_issuers_ca_file() {
    within(async {
        let issuer = TestIssuer::start_https().await;
        let dir = tempfile::tempdir().unwrap();
        for keys in [
            KeySource::OidcDiscovery(issuer.discovery_url()),
            KeySource::JwksUrl(issuer.jwks_url()),
        ] {
            let settings = strict(&issuer, keys).with_ca_file(ca_file(&issuer, &dir));
            let verifier = JwtVerifier::new(settings).await.unwrap();
            assert_eq!(verifier.key_count(), 3);
            let token = issuer.sign("ES256", claims(&issuer, json!({})));
            assert!(verifier.verify(&token).is_ok());
        }
    })
    .await;
}

#[tokio::test]
async fn https_from_a_private_ca_is_refused_without_its_ca_file_and_says_why() {
    within(async {
        let issuer = TestIssuer::start_https().await;
        let url = issuer.jwks_url();
        let err = JwtVerifier::new(strict(&issuer, KeySource::JwksUrl(url.clone())))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, JwtError::Fetch(_)), "{err:?}");
        assert!(text.contains(&url), "{text}");
        assert!(text.to_lowercase().contains("certificate"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn http_urls_are_refused_unless_allowed() {
    within(async {
        let issuer = TestIssuer::start().await;
        for (keys, url) in [
            (KeySource::JwksUrl(issuer.jwks_url()), issuer.jwks_url()),
            (
                KeySource::OidcDiscovery(issuer.discovery_url()),
                issuer.discovery_url(),
            ),
        ] {
            let err = JwtVerifier::new(strict(&issuer, keys.clone()))
                .await
                .unwrap_err();
            assert_eq!(err, JwtError::InsecureUrl(url.clone()));
            assert!(err.to_string().contains("not https"), "{err}");

            let allowed = strict(&issuer, keys).allowing_http();
            let verifier = JwtVerifier::new(allowed).await.unwrap();
            assert_eq!(verifier.key_count(), 3);
        }
    })
    .await;
}

#[tokio::test]
async fn a_discovered_http_jwks_uri_is_refused() {
    within(async {
        let issuer = TestIssuer::start_https().await;
        let plain = TestIssuer::start().await;
        issuer.set_discovered_jwks_uri(&plain.jwks_url());
        let dir = tempfile::tempdir().unwrap();
        let keys = KeySource::OidcDiscovery(issuer.discovery_url());
        let settings = strict(&issuer, keys).with_ca_file(ca_file(&issuer, &dir));
        let err = JwtVerifier::new(settings).await.unwrap_err();
        assert_eq!(err, JwtError::InsecureUrl(plain.jwks_url()));
    })
    .await;
}

#[tokio::test]
async fn a_fetch_failure_names_the_url_and_the_whole_cause() {
    within(async {
        let issuer = TestIssuer::start().await;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = format!("http://{}/jwks", listener.local_addr().unwrap());
        drop(listener);
        let settings = strict(&issuer, KeySource::JwksUrl(closed.clone())).allowing_http();
        let err = JwtVerifier::new(settings).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&closed), "{text}");
        assert!(text.contains("Connection refused"), "{text}");
        assert_eq!(text.matches(&closed).count(), 1, "{text}");
    })
    .await;
}

#[tokio::test]
async fn a_key_file_error_says_its_cause_once() {
    within(async {
        let issuer = TestIssuer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.pem");
        std::fs::write(&path, "not a key").unwrap();
        let keys = KeySource::PemFiles(vec![path.clone()]);
        let err = JwtVerifier::new(strict(&issuer, keys)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "could not load keys: {}: no PEM block found",
                path.display()
            )
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreadable_ca_file_is_a_key_load_error_naming_it() {
    within(async {
        let issuer = TestIssuer::start_https().await;
        let settings = strict(&issuer, KeySource::JwksUrl(issuer.jwks_url()))
            .with_ca_file("/nonexistent/ca.crt");
        let err = JwtVerifier::new(settings).await.unwrap_err();
        assert!(matches!(err, JwtError::KeyLoad(_)), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/ca.crt"), "{err}");
    })
    .await;
}
