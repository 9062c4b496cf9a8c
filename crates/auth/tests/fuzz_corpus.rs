//! The `scram_server` and `oauthbearer` fuzz targets on the stable toolchain: their seed
//! corpora (fuzz/corpus/<target>/seed-*) are kept equal to what is built here, and every
//! file of each corpus is replayed through the target's body (fuzz/harness/<target>.rs).
//! Regenerate the seeds after a deliberate change with
//! `PGBASTION_WRITE_FUZZ_SEEDS=1 cargo test -p pgbastion-auth --test fuzz_corpus`.

#[path = "../../../fuzz/harness/oauthbearer.rs"]
mod oauthbearer;
#[path = "../../../fuzz/harness/replay.rs"]
mod replay;
#[path = "../../../fuzz/harness/scram_server.rs"]
mod scram_server;

use pgbastion_auth::oauthbearer::client_initial_response;
use pgbastion_auth::scram::{
    ChannelBinding, ClientCredential, ScramClient, ScramError, ScramSecret, ScramServer,
    SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use scram_server::{binding, BINDING_DATA, ITERATIONS, PASSWORD, SALT, SERVER_NONCE};

const CLIENT_NONCE: &str = "fuzzClientNonce";
const NO_BINDING: u8 = 0;
const OFFERS_BINDING: u8 = 1;

/// One target input: flags, then mechanism and client messages joined with NUL.
fn input(flags: u8, mechanism: &str, messages: &[&[u8]]) -> Vec<u8> {
    let mut parts = vec![mechanism.as_bytes()];
    parts.extend_from_slice(messages);
    [vec![flags], parts.join(&0u8)].concat()
}

/// A whole exchange of a client with `password` and `client_binding` against the fixed
/// server, as target input.
fn exchange(flags: u8, password: &[u8], client_binding: ChannelBinding) -> Vec<u8> {
    let client = ScramClient::with_nonce(
        ClientCredential::Password(password.to_vec()),
        client_binding,
        CLIENT_NONCE.to_owned(),
    );
    let client_first = client.client_first_message();
    let server = ScramServer::with_nonce(
        ScramSecret::from_password(PASSWORD, SALT, ITERATIONS),
        binding(flags),
        SERVER_NONCE.to_owned(),
    );
    let mechanism = client.mechanism();
    let (_, server_first) = server
        .handle_client_first(mechanism, &client_first)
        .expect("the server accepts the seed's client-first");
    let (_, client_final) = client
        .handle_server_first(&server_first)
        .expect("the client accepts the server-first");
    input(flags, mechanism, &[&client_first, &client_final])
}

fn scram_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let plus = || ChannelBinding::TlsServerEndPoint(BINDING_DATA.to_vec());
    vec![
        (
            "seed-success",
            exchange(NO_BINDING, PASSWORD, ChannelBinding::NotSupported),
        ),
        (
            "seed-success-plus",
            exchange(OFFERS_BINDING, PASSWORD, plus()),
        ),
        (
            "seed-wrong-password",
            exchange(NO_BINDING, b"wrong", ChannelBinding::NotSupported),
        ),
        (
            "seed-wrong-password-plus",
            exchange(OFFERS_BINDING, b"wrong", plus()),
        ),
        (
            "seed-downgrade",
            input(OFFERS_BINDING, SCRAM_SHA_256, &[b"y,,n=,r=abc"]),
        ),
        (
            "seed-client-first-only",
            input(NO_BINDING, SCRAM_SHA_256, &[b"n,,n=alice,r=abc,x=ext"]),
        ),
        (
            "seed-authzid",
            input(NO_BINDING, SCRAM_SHA_256, &[b"n,a=bob,n=,r=abc"]),
        ),
        (
            "seed-plus-without-offer",
            input(
                NO_BINDING,
                SCRAM_SHA_256_PLUS,
                &[b"p=tls-server-end-point,,n=,r=abc"],
            ),
        ),
        (
            "seed-unknown-mechanism",
            input(NO_BINDING, "PLAIN", &[b"alice"]),
        ),
        (
            "seed-final-wrong-nonce",
            input(
                NO_BINDING,
                SCRAM_SHA_256,
                &[b"n,,n=,r=abc", b"c=biws,r=abcX,p=AAAA"],
            ),
        ),
    ]
}

fn oauthbearer_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let raw = |text: &str| text.as_bytes().to_vec();
    vec![
        (
            "seed-token",
            client_initial_response(Some("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2ln")),
        ),
        ("seed-discovery", client_initial_response(None)),
        ("seed-acknowledgement", vec![0x01]),
        (
            "seed-lowercase-scheme-extra-pair",
            raw("y,,\x01host=db.example.com\x01auth=bearer  abc-._~+/==\x01\x01"),
        ),
        (
            "seed-channel-binding",
            raw("p=tls-unique,,\x01auth=Bearer x\x01\x01"),
        ),
        ("seed-authzid", raw("n,a=alice,\x01auth=Bearer x\x01\x01")),
        (
            "seed-two-auth-values",
            raw("n,,\x01auth=Bearer x\x01auth=Bearer y\x01\x01"),
        ),
        ("seed-unterminated", raw("n,,\x01auth=Bearer x\x01")),
        // Found by fuzzing: a one-letter token appears in any Debug text; the harness
        // checked "Debug does not contain the token" and panicked.
        (
            "seed-crash-one-letter-token",
            raw("y,,\x01hort=`b.exa.c,,\x01auth=Bearer e\x01\x01"),
        ),
    ]
}

#[test]
fn the_committed_scram_server_seeds_match_what_is_built_here() {
    replay::check_seeds("scram_server", &scram_seeds());
}

#[test]
fn every_scram_server_corpus_file_runs_without_panicking() {
    let ran = replay::replay("scram_server", scram_server::fuzz_scram_server);
    assert!(ran >= scram_seeds().len());
}

#[test]
fn the_committed_oauthbearer_seeds_match_what_is_built_here() {
    replay::check_seeds("oauthbearer", &oauthbearer_seeds());
}

#[test]
fn every_oauthbearer_corpus_file_runs_without_panicking() {
    let ran = replay::replay("oauthbearer", oauthbearer::fuzz_oauthbearer);
    assert!(ran >= oauthbearer_seeds().len());
}

#[test]
fn the_scram_seeds_reach_the_proof_check() {
    let outcome = |name: &str| {
        let seed = scram_seeds()
            .into_iter()
            .find(|(n, _)| *n == name)
            .expect(name);
        scram_server::server_exchange(&seed.1).map(|r| r.err())
    };
    assert_eq!(outcome("seed-success"), Some(None));
    assert_eq!(outcome("seed-success-plus"), Some(None));
    assert_eq!(
        outcome("seed-wrong-password"),
        Some(Some(ScramError::InvalidProof))
    );
    assert_eq!(
        outcome("seed-wrong-password-plus"),
        Some(Some(ScramError::InvalidProof))
    );
    assert_eq!(
        outcome("seed-final-wrong-nonce"),
        Some(Some(ScramError::NonceMismatch))
    );
}
