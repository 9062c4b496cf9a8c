use super::*;

const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &[u8] =
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_secret() -> ScramSecret {
    static SECRET: std::sync::OnceLock<ScramSecret> = std::sync::OnceLock::new();
    SECRET
        .get_or_init(|| {
            let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
            ScramSecret::from_password(b"pencil", &salt, 4096)
        })
        .clone()
}

fn password(p: &str) -> ClientCredential {
    ClientCredential::Password(p.as_bytes().to_vec())
}

/// Runs a whole exchange; returns the server's result and, on success, the client's check
/// of the server-final message.
fn exchange(
    secret: ScramSecret,
    server_binding: ServerBinding,
    credential: ClientCredential,
    client_binding: ChannelBinding,
) -> Result<(ScramSuccess, Result<(), ScramError>), ScramError> {
    let client = ScramClient::new(credential, client_binding);
    let (server, server_first) = ScramServer::new(secret, server_binding)
        .handle_client_first(client.mechanism(), &client.client_first_message())?;
    let (client, client_final) = client.handle_server_first(&server_first)?;
    let success = server.handle_client_final(&client_final)?;
    let verified = client.verify_server_final(&success.server_final);
    Ok((success, verified))
}

#[test]
fn client_reproduces_the_rfc_7677_exchange() {
    let client = ScramClient::with_nonce(
        password("pencil"),
        ChannelBinding::NotSupported,
        RFC_CLIENT_NONCE.into(),
    )
    .with_username("user");
    assert_eq!(client.client_first_message(), RFC_CLIENT_FIRST);
    let (client, client_final) = client.handle_server_first(RFC_SERVER_FIRST).unwrap();
    assert_eq!(client_final, RFC_CLIENT_FINAL);
    client.verify_server_final(RFC_SERVER_FINAL).unwrap();
}

#[test]
fn server_reproduces_the_rfc_7677_exchange() {
    let server = ScramServer::with_nonce(
        rfc_secret(),
        ServerBinding::NotOffered,
        RFC_SERVER_NONCE.into(),
    );
    let (server, server_first) = server
        .handle_client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST)
        .unwrap();
    assert_eq!(server_first, RFC_SERVER_FIRST);
    let success = server.handle_client_final(RFC_CLIENT_FINAL).unwrap();
    assert_eq!(success.server_final, RFC_SERVER_FINAL);
}

#[test]
fn secrets_round_trip_through_postgresql_format() {
    let secret = rfc_secret();
    let text = secret.to_string();
    assert!(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
    assert_eq!(text.parse::<ScramSecret>().unwrap(), secret);
    assert!(!format!("{secret:?}").contains(&B64.encode(secret.stored_key)));
    for bad in [
        "",
        "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
        "md5abc",
        "SCRAM-SHA-256$x:c2FsdA==$a:b",
    ] {
        assert_eq!(
            bad.parse::<ScramSecret>(),
            Err(ScramError::InvalidSecret),
            "{bad}"
        );
    }
}

#[test]
fn plain_exchange_succeeds_and_both_sides_verify() {
    let secret = ScramSecret::generate(b"s3cret", 4096);
    let (_, verified) = exchange(
        secret,
        ServerBinding::NotOffered,
        password("s3cret"),
        ChannelBinding::NotSupported,
    )
    .unwrap();
    verified.unwrap();
}

#[test]
fn wrong_password_is_an_invalid_proof() {
    let secret = ScramSecret::generate(b"s3cret", 4096);
    let result = exchange(
        secret,
        ServerBinding::NotOffered,
        password("guess"),
        ChannelBinding::NotSupported,
    );
    assert_eq!(result.unwrap_err(), ScramError::InvalidProof);
}

#[test]
fn channel_binding_succeeds_when_both_sides_see_the_same_certificate() {
    let secret = ScramSecret::generate(b"pw", 4096);
    let hash = tls_server_end_point(b"not a certificate");
    let (_, verified) = exchange(
        secret,
        ServerBinding::Offered(hash.clone()),
        password("pw"),
        ChannelBinding::TlsServerEndPoint(hash),
    )
    .unwrap();
    verified.unwrap();
}

#[test]
fn channel_binding_fails_when_the_client_sees_another_certificate() {
    let secret = ScramSecret::generate(b"pw", 4096);
    let result = exchange(
        secret,
        ServerBinding::Offered(vec![1; 32]),
        password("pw"),
        ChannelBinding::TlsServerEndPoint(vec![2; 32]),
    );
    assert_eq!(result.unwrap_err(), ScramError::ChannelBindingMismatch);
}

#[test]
fn a_client_that_thinks_binding_was_not_offered_detects_a_downgrade() {
    let secret = ScramSecret::generate(b"pw", 4096);
    let result = exchange(
        secret,
        ServerBinding::Offered(vec![1; 32]),
        password("pw"),
        ChannelBinding::SupportedButNotUsed,
    );
    assert_eq!(result.unwrap_err(), ScramError::DowngradeDetected);
}

#[test]
fn plus_is_refused_when_not_offered_and_mechanisms_must_match_the_gs2_flag() {
    let server = || ScramServer::new(rfc_secret(), ServerBinding::Offered(vec![1; 32]));
    assert!(matches!(
        ScramServer::new(rfc_secret(), ServerBinding::NotOffered)
            .handle_client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc"),
        Err(ScramError::UnsupportedMechanism(_))
    ));
    assert!(matches!(
        server().handle_client_first(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc"),
        Err(ScramError::Malformed(_))
    ));
    assert!(matches!(
        server().handle_client_first(SCRAM_SHA_256_PLUS, b"n,,n=,r=abc"),
        Err(ScramError::Malformed(_))
    ));
    assert!(matches!(
        server().handle_client_first(SCRAM_SHA_256_PLUS, b"p=tls-unique,,n=,r=abc"),
        Err(ScramError::UnsupportedChannelBinding(_))
    ));
    assert_eq!(
        server()
            .handle_client_first(SCRAM_SHA_256, b"n,a=admin,n=,r=abc")
            .unwrap_err(),
        ScramError::AuthzidNotSupported
    );
    assert!(matches!(
        server().handle_client_first(SCRAM_SHA_256, b"n,,m=ext,n=,r=abc"),
        Err(ScramError::Malformed(_))
    ));
}

#[test]
fn a_tampered_nonce_is_refused() {
    let client = ScramClient::new(password("pencil"), ChannelBinding::NotSupported);
    let (server, server_first) = ScramServer::new(rfc_secret(), ServerBinding::NotOffered)
        .handle_client_first(SCRAM_SHA_256, &client.client_first_message())
        .unwrap();
    let (_, client_final) = client.handle_server_first(&server_first).unwrap();
    let text = String::from_utf8(client_final).unwrap();
    let tampered = text.replacen(",r=", ",r=X", 1);
    assert_eq!(
        server.handle_client_final(tampered.as_bytes()).unwrap_err(),
        ScramError::NonceMismatch
    );
}

#[test]
fn a_client_refuses_a_server_nonce_that_does_not_extend_its_own() {
    let client = ScramClient::new(password("x"), ChannelBinding::NotSupported);
    assert_eq!(
        client
            .handle_server_first(b"r=someone-else,s=c2FsdA==,i=4096")
            .unwrap_err(),
        ScramError::NonceMismatch
    );
}

#[test]
fn a_client_refuses_a_server_that_does_not_know_the_secret() {
    let client = ScramClient::with_nonce(
        password("pencil"),
        ChannelBinding::NotSupported,
        RFC_CLIENT_NONCE.into(),
    )
    .with_username("user");
    let (client, _) = client.handle_server_first(RFC_SERVER_FIRST).unwrap();
    assert_eq!(
        client
            .verify_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap_err(),
        ScramError::InvalidServerSignature
    );
}

#[test]
fn a_recovered_client_key_logs_into_a_server_with_the_same_secret() {
    let secret = ScramSecret::generate(b"only-the-client-knows", 4096);
    let (success, _) = exchange(
        secret.clone(),
        ServerBinding::NotOffered,
        password("only-the-client-knows"),
        ChannelBinding::NotSupported,
    )
    .unwrap();
    let keys = ClientCredential::Keys {
        client_key: success.client_key,
        server_key: Some(secret.server_key),
    };
    let (_, verified) = exchange(
        secret,
        ServerBinding::NotOffered,
        keys,
        ChannelBinding::NotSupported,
    )
    .unwrap();
    verified.unwrap();
}

#[test]
fn passwords_are_saslprep_normalised_like_postgresql() {
    // U+00AA normalises to "a" under NFKC; the secret must not depend on the form typed.
    let salt = b"0123456789abcdef";
    assert_eq!(
        ScramSecret::from_password("\u{00AA}".as_bytes(), salt, 4096),
        ScramSecret::from_password(b"a", salt, 4096)
    );
    // Invalid UTF-8 falls back to the raw bytes instead of failing.
    let raw = ScramSecret::from_password(b"\xff\xfe", salt, 4096);
    assert_ne!(raw, ScramSecret::from_password(b"", salt, 4096));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_server_never_panics_on_arbitrary_client_messages(
            first in proptest::collection::vec(any::<u8>(), 0..80),
            last in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let server = ScramServer::new(rfc_secret(), ServerBinding::Offered(vec![1; 32]));
            for mechanism in [SCRAM_SHA_256, SCRAM_SHA_256_PLUS] {
                let server = ScramServer::new(rfc_secret(), ServerBinding::Offered(vec![1; 32]));
                let _ = server.handle_client_first(mechanism, &first);
            }
            if let Ok((state, _)) = server.handle_client_first(SCRAM_SHA_256, b"y,,n=,r=abc") {
                let _ = state.handle_client_final(&last);
            }
            let (state, _) = ScramServer::new(rfc_secret(), ServerBinding::NotOffered)
                .handle_client_first(SCRAM_SHA_256, b"n,,n=,r=abc")
                .unwrap();
            let _ = state.handle_client_final(&last);
        }

        #[test]
        fn the_client_never_panics_on_arbitrary_server_messages(
            first in proptest::collection::vec(any::<u8>(), 0..80),
            last in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let client = ScramClient::with_nonce(password("x"), ChannelBinding::NotSupported, "abc".into());
            let _ = client.handle_server_first(&first);
            let client = ScramClient::with_nonce(password("x"), ChannelBinding::NotSupported, "abc".into());
            let (state, _) = client.handle_server_first(b"r=abcdef,s=c2FsdA==,i=1").unwrap();
            let _ = state.verify_server_final(&last);
        }
    }
}
