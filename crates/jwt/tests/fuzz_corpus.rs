//! The `jwt` fuzz target on the stable toolchain: its seed corpus (fuzz/corpus/jwt/seed-*)
//! is kept equal to what is built here, and every file of the corpus is replayed through the
//! target's body (fuzz/harness/jwt.rs). Regenerate the seeds after a deliberate change with
//! `PGBASTION_WRITE_FUZZ_SEEDS=1 cargo test -p pgbastion-jwt --test fuzz_corpus`.
//!
//! Seeds are signed with Ed25519, whose signatures are deterministic, so the committed files
//! can be compared byte for byte.

#[path = "../../../fuzz/harness/jwt.rs"]
mod jwt;
#[path = "../../../fuzz/harness/replay.rs"]
mod replay;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use jwt::{AUDIENCE, ISSUER};

/// The private half of the harness's Ed25519 key: a fuzz fixture, trusted nowhere.
const ED25519_PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIF73KyqALLHvuWK9th47RQEThXXhN3yNW8M4dOrrSDV7
-----END PRIVATE KEY-----
";

/// Far in the future (2100-01-01), so the valid seeds stay valid.
const LATER: u64 = 4_102_444_800;

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// `header.payload.signature`, signed with the Ed25519 key whatever the header says.
fn signed(header: &str, payload: &str) -> Vec<u8> {
    let input = format!("{}.{}", b64(header), b64(payload));
    let key = EncodingKey::from_ed_pem(ED25519_PRIVATE_KEY.as_bytes()).expect("the seed key");
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::EdDSA).expect("signs");
    format!("{input}.{signature}").into_bytes()
}

fn claims(extra: &str) -> String {
    format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","exp":{LATER}{extra}}}"#)
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let eddsa = r#"{"alg":"EdDSA","typ":"JWT"}"#;
    vec![
        ("seed-valid", signed(eddsa, &claims(""))),
        (
            "seed-valid-unknown-kid-audience-list",
            signed(
                r#"{"alg":"EdDSA","kid":"rotated-away"}"#,
                &format!(
                    r#"{{"iss":"{ISSUER}","aud":["other","{AUDIENCE}"],"exp":{LATER},"nbf":0}}"#
                ),
            ),
        ),
        (
            "seed-expired",
            signed(
                eddsa,
                &format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":1000000000}}"#),
            ),
        ),
        (
            "seed-not-yet-valid",
            signed(eddsa, &claims(&format!(r#","nbf":{LATER}"#))),
        ),
        (
            "seed-wrong-issuer",
            signed(
                eddsa,
                &format!(r#"{{"iss":"https://evil.invalid","aud":"{AUDIENCE}","exp":{LATER}}}"#),
            ),
        ),
        (
            "seed-wrong-audience",
            signed(
                eddsa,
                &format!(r#"{{"iss":"{ISSUER}","aud":"other","exp":{LATER}}}"#),
            ),
        ),
        (
            "seed-no-exp",
            signed(
                eddsa,
                &format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#),
            ),
        ),
        ("seed-payload-not-an-object", signed(eddsa, "[1,2,3]")),
        (
            "seed-rs256-header",
            signed(r#"{"alg":"RS256"}"#, &claims("")),
        ),
        (
            "seed-es256-header",
            signed(r#"{"alg":"ES256"}"#, &claims("")),
        ),
        (
            "seed-hs256-header",
            signed(r#"{"alg":"HS256"}"#, &claims("")),
        ),
        (
            "seed-alg-none",
            format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&claims(""))).into_bytes(),
        ),
        (
            "seed-crit-header",
            signed(r#"{"alg":"EdDSA","crit":["exp"]}"#, &claims("")),
        ),
        (
            "seed-two-parts",
            format!("{}.{}", b64(eddsa), b64(&claims(""))).into_bytes(),
        ),
    ]
}

#[test]
fn the_committed_jwt_seeds_match_what_is_built_here() {
    replay::check_seeds("jwt", &seeds());
}

#[test]
fn every_jwt_corpus_file_runs_without_panicking() {
    assert!(replay::replay("jwt", jwt::fuzz_jwt) >= seeds().len());
}

#[test]
fn the_valid_jwt_seeds_pass_every_check() {
    for name in ["seed-valid", "seed-valid-unknown-kid-audience-list"] {
        let (_, token) = seeds().into_iter().find(|(n, _)| *n == name).expect(name);
        let token = String::from_utf8(token).expect("ASCII");
        assert!(jwt::verifier().verify(&token).is_ok(), "{name}");
    }
}
