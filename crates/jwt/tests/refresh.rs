#![allow(clippy::unwrap_used)] // tests fail loudly on purpose
//! Refreshing keys: new keys are picked up, failures keep the keys in use.

mod common;

use common::{claims, discovery_verifier, settings, within};
use pgbastion_jwt::{JwtError, JwtVerifier, KeySource};
use pgbastion_testkit::TestIssuer;
use serde_json::json;

#[tokio::test]
async fn refresh_picks_up_a_newly_published_key() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let kid = issuer.add_key("EdDSA");
        let token = issuer.sign_with(&kid, Some(&kid), claims(&issuer, json!({})));
        assert_eq!(
            verifier.verify(&token).unwrap_err(),
            JwtError::UnknownKey(kid.clone())
        );

        assert_eq!(verifier.refresh().await.unwrap(), 4);
        assert!(verifier.verify(&token).is_ok());
    })
    .await;
}

#[tokio::test]
async fn refresh_drops_keys_no_longer_published() {
    within(async {
        let issuer = TestIssuer::start().await;
        let keys = KeySource::JwksUrl(issuer.jwks_url());
        let verifier = JwtVerifier::new(settings(&issuer, keys)).await.unwrap();
        let token = issuer.sign("ES256", claims(&issuer, json!({})));
        assert!(verifier.verify(&token).is_ok());

        issuer.unpublish("ec-1");
        assert_eq!(verifier.refresh().await.unwrap(), 2);
        assert_eq!(
            verifier.verify(&token).unwrap_err(),
            JwtError::UnknownKey("ec-1".into())
        );
    })
    .await;
}

#[tokio::test]
async fn failed_fetch_keeps_the_old_keys() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let token = issuer.sign("RS256", claims(&issuer, json!({})));

        issuer.set_unavailable(true);
        let err = verifier.refresh().await.unwrap_err();
        assert!(matches!(err, JwtError::Fetch(_)), "{err:?}");
        assert_eq!(verifier.key_count(), 3);
        assert!(verifier.verify(&token).is_ok());

        issuer.set_unavailable(false);
        assert_eq!(verifier.refresh().await.unwrap(), 3);
    })
    .await;
}

#[tokio::test]
async fn refresh_rereads_a_rewritten_pem_file() {
    within(async {
        let issuer = TestIssuer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ec.pem");
        std::fs::write(&path, issuer.public_key_pem("ES256")).unwrap();
        let keys = KeySource::PemFiles(vec![path.clone()]);
        let verifier = JwtVerifier::new(settings(&issuer, keys)).await.unwrap();

        let rotated = issuer.add_key("ES256");
        let token = issuer.sign_with(&rotated, Some(&rotated), claims(&issuer, json!({})));
        assert_eq!(verifier.verify(&token).unwrap_err(), JwtError::BadSignature);

        std::fs::write(&path, issuer.public_key_pem_of(&rotated)).unwrap();
        assert_eq!(verifier.refresh().await.unwrap(), 1);
        assert!(verifier.verify(&token).is_ok());
    })
    .await;
}

#[tokio::test]
async fn broken_pem_file_keeps_the_old_keys() {
    within(async {
        let issuer = TestIssuer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ed.pem");
        std::fs::write(&path, issuer.public_key_pem("EdDSA")).unwrap();
        let keys = KeySource::PemFiles(vec![path.clone()]);
        let verifier = JwtVerifier::new(settings(&issuer, keys)).await.unwrap();
        let token = issuer.sign("EdDSA", claims(&issuer, json!({})));

        std::fs::write(&path, "-----BEGIN PUBLIC KEY-----\ntruncated").unwrap();
        let err = verifier.refresh().await.unwrap_err();
        assert!(matches!(err, JwtError::KeyLoad(_)), "{err:?}");
        assert!(verifier.verify(&token).is_ok());

        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            verifier.refresh().await,
            Err(JwtError::KeyLoad(_))
        ));
        assert!(verifier.verify(&token).is_ok());
    })
    .await;
}
