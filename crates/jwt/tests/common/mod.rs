//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a subset of the helpers

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgbastion_jwt::{JwtSettings, JwtVerifier, KeySource};
use pgbastion_testkit::TestIssuer;
use serde_json::{json, Value};

/// The algorithms the issuer signs with.
pub const ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

/// The audience tokens are minted for.
pub const AUDIENCE: &str = "pgbastion";

/// Runs `test` with an outer limit so a hang fails with context.
pub async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .expect("test timed out")
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid claims for `issuer`, with `changes` merged over them (`null` removes a claim).
pub fn claims(issuer: &TestIssuer, changes: Value) -> Value {
    let mut claims = json!({
        "iss": issuer.issuer(), "aud": AUDIENCE, "sub": "alice", "exp": now() + 300,
    });
    for (name, value) in changes.as_object().unwrap() {
        match value {
            Value::Null => claims.as_object_mut().unwrap().remove(name),
            value => claims
                .as_object_mut()
                .unwrap()
                .insert(name.clone(), value.clone()),
        };
    }
    claims
}

/// Settings for `issuer` requiring [`AUDIENCE`]; plain http is allowed because these tests
/// are about verifying tokens (tests/transport.rs is about how keys are fetched).
pub fn settings(issuer: &TestIssuer, keys: KeySource) -> JwtSettings {
    JwtSettings::new(issuer.issuer(), keys)
        .with_audience(AUDIENCE)
        .allowing_http()
}

/// A verifier reading `issuer`'s discovery document.
pub async fn discovery_verifier(issuer: &TestIssuer) -> JwtVerifier {
    let keys = KeySource::OidcDiscovery(issuer.discovery_url());
    JwtVerifier::new(settings(issuer, keys)).await.unwrap()
}
