#![allow(clippy::unwrap_used)] // tests fail loudly on purpose
//! Verification against a live test issuer: every key source, every algorithm, every refusal.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{claims, discovery_verifier, now, settings, within, ALGS, AUDIENCE};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pgbastion_jwt::{JwtError, JwtSettings, JwtVerifier, KeySource};
use pgbastion_testkit::TestIssuer;
use serde_json::json;

async fn pem_verifier(issuer: &TestIssuer, dir: &tempfile::TempDir) -> JwtVerifier {
    let paths: Vec<_> = ALGS
        .iter()
        .map(|alg| {
            let path = dir.path().join(format!("{alg}.pem"));
            std::fs::write(&path, issuer.public_key_pem(alg)).unwrap();
            path
        })
        .collect();
    JwtVerifier::new(settings(issuer, KeySource::PemFiles(paths)))
        .await
        .unwrap()
}

fn assert_all_algorithms_verify(issuer: &TestIssuer, verifier: &JwtVerifier) {
    for alg in ALGS {
        let token = issuer.sign(alg, claims(issuer, json!({"sub": alg})));
        let verified = verifier
            .verify(&token)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.subject(), Some(alg));
    }
}

#[tokio::test]
async fn every_algorithm_verifies_via_oidc_discovery() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        assert_eq!(verifier.key_count(), 3);
        assert_all_algorithms_verify(&issuer, &verifier);
    })
    .await;
}

#[tokio::test]
async fn every_algorithm_verifies_via_jwks_url() {
    within(async {
        let issuer = TestIssuer::start().await;
        let keys = KeySource::JwksUrl(issuer.jwks_url());
        let verifier = JwtVerifier::new(settings(&issuer, keys)).await.unwrap();
        assert_all_algorithms_verify(&issuer, &verifier);
    })
    .await;
}

#[tokio::test]
async fn every_algorithm_verifies_via_pem_files() {
    within(async {
        let issuer = TestIssuer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let verifier = pem_verifier(&issuer, &dir).await;
        assert_eq!(verifier.key_count(), 3);
        assert_all_algorithms_verify(&issuer, &verifier);
    })
    .await;
}

#[tokio::test]
async fn token_without_kid_verifies_with_the_keys_of_its_type() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        for kid in ["rsa-1", "ec-1", "ed-1"] {
            let token = issuer.sign_with(kid, None, claims(&issuer, json!({})));
            assert!(verifier.verify(&token).is_ok(), "{kid}");
        }
    })
    .await;
}

#[tokio::test]
async fn claims_are_readable_by_name_and_dotted_path() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let token = issuer.sign("ES256", claims(&issuer, json!({"realm": {"role": "dba"}})));
        let verified = verifier.verify(&token).unwrap();
        assert_eq!(verified.get_str("realm.role"), Some("dba"));
        assert_eq!(verified.as_map()["iss"], issuer.issuer());
    })
    .await;
}

#[tokio::test]
async fn token_for_makes_a_token_the_verifier_accepts() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let token = issuer.token_for("bob", AUDIENCE, Duration::from_secs(60));
        assert_eq!(verifier.verify(&token).unwrap().subject(), Some("bob"));
    })
    .await;
}

#[tokio::test]
async fn expired_token_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        for alg in ALGS {
            let token = issuer.sign(alg, claims(&issuer, json!({"exp": now() - 120})));
            assert_eq!(
                verifier.verify(&token).unwrap_err(),
                JwtError::Expired,
                "{alg}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn token_without_exp_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let token = issuer.sign("RS256", claims(&issuer, json!({"exp": null})));
        assert_eq!(
            verifier.verify(&token).unwrap_err(),
            JwtError::MissingClaim("exp")
        );
    })
    .await;
}

#[tokio::test]
async fn token_not_yet_valid_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let token = issuer.sign("ES256", claims(&issuer, json!({"nbf": now() + 120})));
        assert_eq!(verifier.verify(&token).unwrap_err(), JwtError::NotYetValid);
    })
    .await;
}

#[tokio::test]
async fn leeway_is_honoured_for_exp_and_nbf() {
    within(async {
        let issuer = TestIssuer::start().await;
        let lenient = discovery_verifier(&issuer).await;
        let keys = KeySource::OidcDiscovery(issuer.discovery_url());
        let strict = settings(&issuer, keys).with_leeway(Duration::ZERO);
        let strict = JwtVerifier::new(strict).await.unwrap();

        let just_expired = issuer.sign("EdDSA", claims(&issuer, json!({"exp": now() - 10})));
        assert!(lenient.verify(&just_expired).is_ok());
        assert_eq!(strict.verify(&just_expired).unwrap_err(), JwtError::Expired);

        let almost_valid = issuer.sign("EdDSA", claims(&issuer, json!({"nbf": now() + 10})));
        assert!(lenient.verify(&almost_valid).is_ok());
        assert_eq!(
            strict.verify(&almost_valid).unwrap_err(),
            JwtError::NotYetValid
        );
    })
    .await;
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let other = format!("{}/other", issuer.issuer());
        let token = issuer.sign("RS256", claims(&issuer, json!({"iss": other})));
        assert_eq!(verifier.verify(&token).unwrap_err(), JwtError::WrongIssuer);
    })
    .await;
}

#[tokio::test]
async fn wrong_audience_is_refused_and_audience_arrays_are_searched() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let token = issuer.sign("ES256", claims(&issuer, json!({"aud": "someone-else"})));
        assert_eq!(
            verifier.verify(&token).unwrap_err(),
            JwtError::WrongAudience
        );
        let token = issuer.sign("ES256", claims(&issuer, json!({"aud": null})));
        assert_eq!(
            verifier.verify(&token).unwrap_err(),
            JwtError::WrongAudience
        );
        let token = issuer.sign("ES256", claims(&issuer, json!({"aud": ["x", AUDIENCE]})));
        assert!(verifier.verify(&token).is_ok());
    })
    .await;
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let token = issuer.sign_with("rsa-1", Some("rsa-9"), claims(&issuer, json!({})));
        assert_eq!(
            verifier.verify(&token).unwrap_err(),
            JwtError::UnknownKey("rsa-9".into())
        );
    })
    .await;
}

#[tokio::test]
async fn kid_of_a_key_of_another_type_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let token = issuer.sign_with("ec-1", Some("rsa-1"), claims(&issuer, json!({})));
        assert_eq!(
            verifier.verify(&token).unwrap_err(),
            JwtError::KeyMismatch("rsa-1".into())
        );
    })
    .await;
}

#[tokio::test]
async fn token_signed_by_another_key_with_a_known_kid_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let impostor = issuer.add_key("ES256");
        let token = issuer.sign_with(&impostor, Some("ec-1"), claims(&issuer, json!({})));
        assert_eq!(verifier.verify(&token).unwrap_err(), JwtError::BadSignature);
    })
    .await;
}

#[tokio::test]
async fn tampered_signature_or_payload_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        for alg in ALGS {
            let token = issuer.sign(alg, claims(&issuer, json!({})));
            let (signed, signature) = token.rsplit_once('.').unwrap();
            let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
            sig[5] ^= 1;
            let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig));
            assert_eq!(
                verifier.verify(&forged).unwrap_err(),
                JwtError::BadSignature,
                "{alg}"
            );

            let (header, _) = signed.split_once('.').unwrap();
            let admin = claims(&issuer, json!({"sub": "admin"}));
            let payload = URL_SAFE_NO_PAD.encode(admin.to_string());
            let forged = format!("{header}.{payload}.{signature}");
            assert_eq!(
                verifier.verify(&forged).unwrap_err(),
                JwtError::BadSignature,
                "{alg}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims(&issuer, json!({})).to_string());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let err = verifier.verify(&token).unwrap_err();
            assert!(
                matches!(
                    err,
                    JwtError::UnsupportedAlgorithm(_) | JwtError::Malformed(_)
                ),
                "{err:?}"
            );
        }
        let token = format!("{header}.{payload}.");
        assert_eq!(
            verifier.verify(&token).unwrap_err(),
            JwtError::UnsupportedAlgorithm("none".into())
        );
    })
    .await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let verifier = pem_verifier(&issuer, &dir).await;
        let public_pem = issuer.public_key_pem("RS256");
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("rsa-1".into());
            let key = EncodingKey::from_secret(public_pem.as_bytes());
            let token = jsonwebtoken::encode(&header, &claims(&issuer, json!({})), &key).unwrap();
            let err = verifier.verify(&token).unwrap_err();
            assert_eq!(err, JwtError::UnsupportedAlgorithm(format!("{alg:?}")));
        }
    })
    .await;
}

#[tokio::test]
async fn garbage_is_malformed_and_messages_never_contain_the_token() {
    within(async {
        let issuer = TestIssuer::start().await;
        let verifier = discovery_verifier(&issuer).await;
        let expired = issuer.sign("RS256", claims(&issuer, json!({"exp": now() - 120})));
        let (_, signature) = expired.rsplit_once('.').unwrap();
        for token in [expired.as_str(), "not-a-token", "a.b.c", ""] {
            let message = verifier.verify(token).unwrap_err().to_string();
            assert!(!message.contains(signature), "{message}");
        }
        assert!(matches!(
            verifier.verify("a.b.c"),
            Err(JwtError::Malformed(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    within(async {
        let issuer = TestIssuer::start().await;
        let keys = KeySource::OidcDiscovery(issuer.discovery_url());
        let settings = JwtSettings::new("https://someone-else", keys).allowing_http();
        let err = JwtVerifier::new(settings).await.unwrap_err();
        assert!(matches!(err, JwtError::Fetch(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn new_fails_when_keys_cannot_be_loaded() {
    within(async {
        let issuer = TestIssuer::start().await;
        let missing = KeySource::PemFiles(vec!["/nonexistent/key.pem".into()]);
        let err = JwtVerifier::new(settings(&issuer, missing))
            .await
            .unwrap_err();
        assert!(matches!(err, JwtError::KeyLoad(_)), "{err:?}");

        let not_found = KeySource::JwksUrl(format!("{}/nothing", issuer.issuer()));
        let err = JwtVerifier::new(settings(&issuer, not_found))
            .await
            .unwrap_err();
        assert!(matches!(err, JwtError::Fetch(_)), "{err:?}");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = format!("http://{}/jwks", listener.local_addr().unwrap());
        drop(listener);
        let err = JwtVerifier::new(settings(&issuer, KeySource::JwksUrl(closed)))
            .await
            .unwrap_err();
        assert!(matches!(err, JwtError::Fetch(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn fetch_gives_up_after_the_http_timeout() {
    within(async {
        let issuer = TestIssuer::start().await;
        // Accepts but never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", silent.local_addr().unwrap());
        let keys = KeySource::JwksUrl(url);
        let settings = settings(&issuer, keys).with_http_timeout(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = JwtVerifier::new(settings).await.unwrap_err();
        assert!(matches!(err, JwtError::Fetch(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(silent);
    })
    .await;
}

#[test]
fn verifier_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<JwtVerifier>();
}
