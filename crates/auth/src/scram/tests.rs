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
}

#[test]
fn malformed_secrets_are_refused_with_the_reason() {
    let key = B64.encode([7u8; 32]);
    let cases = [
        ("", SecretError::NotScramSha256),
        (
            "md532e12f215ba27cb750c9e093ce4b5127",
            SecretError::NotScramSha256,
        ),
        ("SCRAM-SHA-256$4096:c2FsdA==", SecretError::Layout),
        ("SCRAM-SHA-256$4096$a:b", SecretError::Layout),
        (
            &format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
            SecretError::Iterations,
        ),
        (
            &format!("SCRAM-SHA-256$x:c2FsdA==${key}:{key}"),
            SecretError::Iterations,
        ),
        (
            &format!("SCRAM-SHA-256$4096:***${key}:{key}"),
            SecretError::Salt,
        ),
        (
            &format!("SCRAM-SHA-256$4096:c2FsdA==$AAAA:{key}"),
            SecretError::StoredKey,
        ),
        (
            &format!("SCRAM-SHA-256$4096:c2FsdA==${key}:AAAA"),
            SecretError::ServerKey,
        ),
    ];
    for (text, error) in cases {
        assert_eq!(text.parse::<ScramSecret>(), Err(error), "{text}");
    }
}

/// Verifiers from PostgreSQL 15: `SET password_encryption = 'scram-sha-256'; CREATE ROLE
/// alice PASSWORD 'correct horse battery staple'; CREATE ROLE bob PASSWORD E'I\u00A8X'`,
/// then `SELECT rolpassword FROM pg_authid`. Bob's password is changed by SASLprep (U+00A8
/// becomes a space and a combining diaeresis), so his checks that normalisation.
const POSTGRES_VERIFIERS: [(&str, &str); 2] = [
    (
        "correct horse battery staple",
        "SCRAM-SHA-256$4096:qJjdoJ7Gr2f5CKc2DqzmIA==$hZJgJV663+GXdDyYM+kStXclN5ls2DoY+zLPiaUg28w=:VOFt+WKhXhca77Vd+fj6zoiJ4agprMBcezTPSerSY1o=",
    ),
    (
        "I\u{00A8}X",
        "SCRAM-SHA-256$4096:sJnaCmXm4EPZKYvhmi3aOg==$CxGCsexOWV0cMHrsBrKlzVMiDqk+Q9OXTCSf9lElkEo=:T18pUzZP4I8r68CDJ+xdkPdKSMXN6vtPX3d6688Lbx8=",
    ),
];

#[test]
fn secrets_derived_from_passwords_match_those_postgresql_stores() {
    for (password, verifier) in POSTGRES_VERIFIERS {
        let parsed: ScramSecret = verifier.parse().unwrap();
        let derived =
            ScramSecret::from_password(password.as_bytes(), &parsed.salt, parsed.iterations);
        assert_eq!(derived, parsed, "{password:?}");
        assert_eq!(derived.to_string(), verifier);
    }
}

#[test]
fn client_and_server_agree_on_secrets_postgresql_stores() {
    for (password, verifier) in POSTGRES_VERIFIERS {
        let secret: ScramSecret = verifier.parse().unwrap();
        let (_, verified) = exchange(
            secret,
            ServerBinding::NotOffered,
            self::password(password),
            ChannelBinding::NotSupported,
        )
        .unwrap();
        verified.unwrap();
    }
}

#[test]
fn pbkdf2_matches_published_sha256_vectors() {
    // PBKDF2-HMAC-SHA-256 vectors in the style of RFC 6070 (as published on Stack Overflow
    // question 5130513 and reproduced by Python's hashlib.pbkdf2_hmac).
    let one = keys::salted_password(b"password", b"salt", 1);
    let many = keys::salted_password(b"password", b"salt", 4096);
    assert_eq!(
        crate::md5::hex(&one),
        "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
    );
    assert_eq!(
        crate::md5::hex(&many),
        "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
    );
}

#[test]
fn debug_output_never_shows_secrets() {
    let secret = rfc_secret();
    let stored_key = format!("{:?}", secret.stored_key);
    let server = ScramServer::new(secret.clone(), ServerBinding::NotOffered);
    let client = ScramClient::new(password("pencil"), ChannelBinding::NotSupported);
    let (server, server_first) = server
        .handle_client_first(SCRAM_SHA_256, &client.client_first_message())
        .unwrap();
    let (client_state, client_final) = client.handle_server_first(&server_first).unwrap();
    let success = server.handle_client_final(&client_final).unwrap();
    let keys = ClientCredential::Keys {
        client_key: success.client_key,
        server_key: Some(secret.server_key),
    };
    let outputs = [
        format!("{secret:?}"),
        format!(
            "{:?}",
            ScramServer::new(secret.clone(), ServerBinding::NotOffered)
        ),
        format!("{client_state:?}"),
        format!("{success:?}"),
        format!("{keys:?}"),
        format!("{:?}", password("pencil")),
    ];
    for output in outputs {
        assert!(!output.contains("pencil"), "{output}");
        assert!(!output.contains(&stored_key), "{output}");
        assert!(
            !output.contains(&format!("{:?}", success.client_key)),
            "{output}"
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
fn the_mechanism_and_the_gs2_flag_must_agree_as_postgresql_checks_them() {
    let server = || ScramServer::new(rfc_secret(), ServerBinding::Offered(vec![1; 32]));
    assert_eq!(
        ScramServer::new(rfc_secret(), ServerBinding::NotOffered)
            .handle_client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc")
            .unwrap_err(),
        ScramError::ChannelBindingRequiredButNotOffered
    );
    assert_eq!(
        server()
            .handle_client_first("SCRAM-SHA-1", b"n,,n=,r=abc")
            .unwrap_err(),
        ScramError::UnsupportedMechanism("SCRAM-SHA-1".into())
    );
    assert_eq!(
        server()
            .handle_client_first(SCRAM_SHA_256_PLUS, b"y,,n=,r=abc")
            .unwrap_err(),
        ScramError::DowngradeDetected
    );
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

#[test]
fn a_client_without_binding_support_logs_into_a_server_offering_it() {
    let secret = ScramSecret::generate(b"pw", 4096);
    let (_, verified) = exchange(
        secret,
        ServerBinding::Offered(vec![1; 32]),
        password("pw"),
        ChannelBinding::NotSupported,
    )
    .unwrap();
    verified.unwrap();
}

#[test]
fn a_client_that_supports_binding_logs_into_a_server_not_offering_it() {
    let secret = ScramSecret::generate(b"pw", 4096);
    let (_, verified) = exchange(
        secret,
        ServerBinding::NotOffered,
        password("pw"),
        ChannelBinding::SupportedButNotUsed,
    )
    .unwrap();
    verified.unwrap();
}

#[test]
fn a_client_final_replaying_another_gs2_flag_fails_the_binding_check() {
    let (server, _) = ScramServer::with_nonce(rfc_secret(), ServerBinding::NotOffered, "S".into())
        .handle_client_first(SCRAM_SHA_256, b"n,,n=,r=C")
        .unwrap();
    // "eSws" is "y,,": the header the client sent was "n,,".
    assert_eq!(
        server
            .handle_client_final(b"c=eSws,r=CS,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap_err(),
        ScramError::ChannelBindingMismatch
    );
}

#[test]
fn client_final_messages_out_of_grammar_are_malformed() {
    let server = || {
        ScramServer::with_nonce(rfc_secret(), ServerBinding::NotOffered, "S".into())
            .handle_client_first(SCRAM_SHA_256, b"n,,n=,r=C")
            .unwrap()
            .0
    };
    let proof = "p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for bad in [
        format!("r=CS,c=biws,{proof}"),
        format!("c=biws,r=CS,{proof},"),
        format!("c=biws,r=CS,{proof},x=1"),
        format!("c=biws,r=CS,m=ext,{proof}"),
        "c=biws,r=CS,p=AAAA".to_owned(),
        "c=biws,r=CS".to_owned(),
        "c=!!!!,r=CS".to_owned(),
    ] {
        assert!(
            matches!(
                server().handle_client_final(bad.as_bytes()),
                Err(ScramError::Malformed(_))
            ),
            "{bad}"
        );
    }
    // An optional extension before the proof is allowed; the proof is then just wrong.
    let with_extension = format!("c=biws,r=CS,x=1,{proof}");
    assert_eq!(
        server()
            .handle_client_final(with_extension.as_bytes())
            .unwrap_err(),
        ScramError::InvalidProof
    );
}

#[test]
fn client_first_messages_out_of_grammar_are_refused() {
    let server = || ScramServer::new(rfc_secret(), ServerBinding::NotOffered);
    for bad in [
        &b"n,,r=abc"[..],
        b"n,,n=,r=",
        b"n,,n=,r=a b",
        b"n,,n=,r=abc,",
        b"n,,n=",
        b"n,,n=,x=1,r=abc",
        b"n,,",
    ] {
        assert!(
            matches!(
                server().handle_client_first(SCRAM_SHA_256, bad),
                Err(ScramError::Malformed(_))
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // The user name is ignored, as PostgreSQL does; extensions after the nonce are skipped.
    for good in [
        &b"n,,n=*,r=abc"[..],
        b"n,,n=someone,r=abc",
        b"n,,n=,r=abc,x=1",
    ] {
        server().handle_client_first(SCRAM_SHA_256, good).unwrap();
    }
}

#[test]
fn the_server_first_message_carries_both_nonces_salt_and_iterations() {
    let (_, server_first) =
        ScramServer::with_nonce(rfc_secret(), ServerBinding::NotOffered, "SERVER".into())
            .handle_client_first(SCRAM_SHA_256, b"n,,n=,r=client")
            .unwrap();
    assert_eq!(
        server_first,
        b"r=clientSERVER,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
}

#[test]
fn the_server_advertises_plus_first_only_when_it_can_bind() {
    assert_eq!(
        ScramServer::new(rfc_secret(), ServerBinding::Offered(vec![1])).mechanisms(),
        [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
    );
    assert_eq!(
        ScramServer::new(rfc_secret(), ServerBinding::NotOffered).mechanisms(),
        [SCRAM_SHA_256]
    );
}

#[test]
fn the_client_names_the_mechanism_its_binding_needs() {
    let client = |binding| ScramClient::with_nonce(password("x"), binding, "N".into());
    let plus = client(ChannelBinding::TlsServerEndPoint(vec![1]));
    assert_eq!(plus.mechanism(), SCRAM_SHA_256_PLUS);
    assert_eq!(
        plus.client_first_message(),
        b"p=tls-server-end-point,,n=,r=N"
    );
    let y = client(ChannelBinding::SupportedButNotUsed);
    assert_eq!(y.mechanism(), SCRAM_SHA_256);
    assert_eq!(y.client_first_message(), b"y,,n=,r=N");
    let named = client(ChannelBinding::NotSupported).with_username("a=b,c");
    assert_eq!(named.client_first_message(), b"n,,n=a=3Db=2Cc,r=N");
}

#[test]
fn a_server_error_reaches_the_client_as_a_typed_error() {
    let client = ScramClient::with_nonce(password("x"), ChannelBinding::NotSupported, "a".into());
    let (client, _) = client.handle_server_first(b"r=ab,s=c2FsdA==,i=1").unwrap();
    assert_eq!(
        client.verify_server_final(b"e=invalid-proof").unwrap_err(),
        ScramError::ServerError("invalid-proof".into())
    );
}

#[test]
fn the_client_refuses_server_first_messages_out_of_grammar() {
    let client =
        || ScramClient::with_nonce(password("x"), ChannelBinding::NotSupported, "a".into());
    for bad in [
        &b"m=x,r=ab,s=c2FsdA==,i=1"[..],
        b"r=ab,s=c2FsdA==",
        b"r=ab,s=***,i=1",
        b"r=ab,s=c2FsdA==,i=0",
        b"r=ab,s=c2FsdA==,i=99999999999",
        b"r=ab,s=c2FsdA==,i=1,",
        b"s=c2FsdA==,r=ab,i=1",
    ] {
        assert!(
            matches!(
                client().handle_server_first(bad),
                Err(ScramError::Malformed(_))
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    for mismatch in [
        &b"r=a,s=c2FsdA==,i=1"[..],
        b"r=ba,s=c2FsdA==,i=1",
        b"r=a\x01,s=,i=1",
    ] {
        assert_eq!(
            client().handle_server_first(mismatch).unwrap_err(),
            ScramError::NonceMismatch
        );
    }
    client()
        .handle_server_first(b"r=ab,s=c2FsdA==,i=1,x=ext")
        .unwrap();
}

#[test]
fn a_client_built_from_a_client_key_alone_logs_in_without_checking_the_server() {
    let secret = ScramSecret::generate(b"pw", 4096);
    let (success, _) = exchange(
        secret.clone(),
        ServerBinding::NotOffered,
        password("pw"),
        ChannelBinding::NotSupported,
    )
    .unwrap();
    let keys = || ClientCredential::Keys {
        client_key: success.client_key,
        server_key: None,
    };
    let (_, verified) = exchange(
        secret,
        ServerBinding::NotOffered,
        keys(),
        ChannelBinding::NotSupported,
    )
    .unwrap();
    verified.unwrap();
    // Without the ServerKey any well-formed signature passes; errors still surface.
    let client = ScramClient::with_nonce(keys(), ChannelBinding::NotSupported, "a".into());
    let (client, _) = client.handle_server_first(b"r=ab,s=c2FsdA==,i=1").unwrap();
    assert_eq!(
        client.verify_server_final(b"e=other-error").unwrap_err(),
        ScramError::ServerError("other-error".into())
    );
}

#[test]
fn a_recovered_client_key_also_logs_in_with_channel_binding() {
    let secret = ScramSecret::generate(b"pw", 4096);
    let (success, _) = exchange(
        secret.clone(),
        ServerBinding::NotOffered,
        password("pw"),
        ChannelBinding::NotSupported,
    )
    .unwrap();
    let keys = ClientCredential::Keys {
        client_key: success.client_key,
        server_key: Some(secret.server_key),
    };
    let (_, verified) = exchange(
        secret,
        ServerBinding::Offered(vec![5; 48]),
        keys,
        ChannelBinding::TlsServerEndPoint(vec![5; 48]),
    )
    .unwrap();
    verified.unwrap();
}

#[test]
fn mock_secrets_are_stable_per_user_and_accept_no_password() {
    let nonce = b"server lifetime nonce";
    let alice = ScramSecret::mock("alice", nonce, 4096);
    assert_eq!(alice, ScramSecret::mock("alice", nonce, 4096));
    assert_ne!(alice.salt, ScramSecret::mock("bob", nonce, 4096).salt);
    assert_ne!(alice.salt, ScramSecret::mock("alice", b"other", 4096).salt);
    assert_eq!(alice.salt.len(), SALT_LEN);
    let result = exchange(
        alice,
        ServerBinding::NotOffered,
        password("alice"),
        ChannelBinding::NotSupported,
    );
    assert_eq!(result.unwrap_err(), ScramError::InvalidProof);
}

#[test]
fn error_messages_never_contain_secrets() {
    let secret = ScramSecret::generate(b"hunter2", 1);
    let text = secret.to_string();
    let corrupted = text.replace("$1:", "$x:");
    let error = corrupted.parse::<ScramSecret>().unwrap_err().to_string();
    assert!(!error.contains(&B64.encode(secret.stored_key)), "{error}");
    assert!(!error.contains(&B64.encode(&secret.salt)), "{error}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    /// Messages made of SCRAM-ish pieces reach deeper than uniformly random bytes.
    fn scramish(max: usize) -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"n,,".to_vec()),
            Just(b"p=tls-server-end-point,,".to_vec()),
            Just(b"c=biws".to_vec()),
            Just(b"r=abc".to_vec()),
            Just(b"p=".to_vec()),
            Just(b"m=".to_vec()),
            Just(b",".to_vec()),
            Just(b"=".to_vec()),
            bytes(8),
        ];
        proptest::collection::vec(piece, 0..max).prop_map(|pieces| pieces.concat())
    }

    fn server_after_first(binding: ServerBinding) -> ScramServerFirstSent {
        ScramServer::with_nonce(rfc_secret(), binding, "S".into())
            .handle_client_first(SCRAM_SHA_256, b"n,,n=,r=abc")
            .unwrap()
            .0
    }

    proptest! {
        #[test]
        fn the_server_never_panics_on_arbitrary_client_messages(
            first in prop_oneof![bytes(120), scramish(12)],
            last in prop_oneof![bytes(160), scramish(12)],
        ) {
            for mechanism in [SCRAM_SHA_256, SCRAM_SHA_256_PLUS, "x"] {
                for binding in [ServerBinding::NotOffered, ServerBinding::Offered(vec![1; 32])] {
                    let _ = ScramServer::new(rfc_secret(), binding).handle_client_first(mechanism, &first);
                }
            }
            let _ = server_after_first(ServerBinding::NotOffered).handle_client_final(&last);
            let _ = server_after_first(ServerBinding::Offered(vec![1; 32])).handle_client_final(&last);
        }

        #[test]
        fn the_client_never_panics_on_arbitrary_server_messages(
            first in prop_oneof![bytes(120), scramish(12)],
            last in prop_oneof![bytes(120), scramish(12)],
        ) {
            let client = || ScramClient::with_nonce(password("x"), ChannelBinding::NotSupported, "abc".into());
            let _ = client().handle_server_first(&first);
            let (state, _) = client().handle_server_first(b"r=abcdef,s=c2FsdA==,i=1").unwrap();
            let _ = state.verify_server_final(&last);
        }

        #[test]
        fn any_password_and_binding_data_complete_an_exchange(
            password in bytes(40),
            salt in bytes(24),
            data in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let secret = ScramSecret::from_password(&password, &salt, 2);
            let (success, verified) = exchange(
                secret.clone(),
                ServerBinding::Offered(data.clone()),
                ClientCredential::Password(password),
                ChannelBinding::TlsServerEndPoint(data),
            ).unwrap();
            prop_assert_eq!(verified, Ok(()));
            prop_assert_eq!(keys::sha256(&success.client_key), secret.stored_key);
        }
    }
}

#[test]
fn cached_password_reproduces_the_rfc_exchange_and_reuses_its_keys() {
    let cache = std::sync::Arc::new(SaltedKeyCache::default());
    for _ in 0..2 {
        let client = ScramClient::with_nonce(
            ClientCredential::CachedPassword {
                password: b"pencil".to_vec(),
                cache: cache.clone(),
            },
            ChannelBinding::NotSupported,
            RFC_CLIENT_NONCE.into(),
        )
        .with_username("user");
        let (client, client_final) = client.handle_server_first(RFC_SERVER_FIRST).unwrap();
        assert_eq!(client_final, RFC_CLIENT_FINAL);
        client.verify_server_final(RFC_SERVER_FINAL).unwrap();
    }
    assert_eq!(cache.len(), 1, "the second login reused the derived keys");
}

#[test]
fn the_two_step_client_reproduces_the_rfc_exchange_and_shows_the_iterations_first() {
    let client = ScramClient::with_nonce(
        password("pencil"),
        ChannelBinding::NotSupported,
        RFC_CLIENT_NONCE.into(),
    )
    .with_username("user");
    let pending = client.read_server_first(RFC_SERVER_FIRST).unwrap();
    assert_eq!(pending.iterations(), 4096);
    let derivation = pending.key_derivation();
    assert!(
        derivation.without_pbkdf2().is_none(),
        "a password needs PBKDF2"
    );
    let (client, client_final) = pending.answer(derivation.derive());
    assert_eq!(client_final, RFC_CLIENT_FINAL);
    client.verify_server_final(RFC_SERVER_FINAL).unwrap();
}

#[test]
fn keys_come_without_pbkdf2_from_a_key_credential_or_a_warm_cache() {
    let cache = std::sync::Arc::new(SaltedKeyCache::default());
    let cached = || ClientCredential::CachedPassword {
        password: b"pencil".to_vec(),
        cache: cache.clone(),
    };
    let derivation = |credential| {
        ScramClient::with_nonce(
            credential,
            ChannelBinding::NotSupported,
            RFC_CLIENT_NONCE.into(),
        )
        .read_server_first(RFC_SERVER_FIRST)
        .unwrap()
        .key_derivation()
    };
    let cold = derivation(cached());
    assert!(cold.without_pbkdf2().is_none());
    let _ = cold.derive();
    assert!(derivation(cached()).without_pbkdf2().is_some());
    let keys = ClientCredential::Keys {
        client_key: [1; KEY_LEN],
        server_key: None,
    };
    assert!(derivation(keys).without_pbkdf2().is_some());
}
