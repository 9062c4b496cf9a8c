//! Every client authentication mode, with real clients: tokio-postgres, psql (libpq) and,
//! for OAUTHBEARER (libpq 15 cannot), a client on pgbastion-wire.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use bytes::Bytes;
use common::*;
use pgbastion_gateway::GatewayConfig;
use pgbastion_testkit::RawClient;
use pgbastion_wire::{Authentication, BackendMessage, SaslInitialResponse, SaslResponse, SqlState};

fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.as_db_error().map(|e| e.code().code().to_owned())
}

#[tokio::test]
async fn tokio_postgres_logs_in_with_every_password_mode() {
    let addr = start_server(GatewayConfig::default()).await;
    within("password modes", async {
        for (user, password) in [
            ("trust_alice", None),
            ("clear_alice", Some(PASSWORD)),
            ("md5_alice", Some(PASSWORD)),
            ("scram_alice", Some(PASSWORD)),
            ("jwt_alice", Some(JWT)),
        ] {
            let answer = tokio_postgres_query(addr, user, password)
                .await
                .unwrap_or_else(|e| panic!("{user}: {e}"));
            assert_eq!(answer, format!("user={user} client=127.0.0.1 tls=false"));
        }
    })
    .await;
}

#[tokio::test]
async fn wrong_credentials_get_28p01_naming_the_user() {
    let addr = start_server(GatewayConfig::default()).await;
    within("wrong passwords", async {
        for user in [
            "clear_bob",
            "md5_bob",
            "scram_bob",
            "scram_unknown",
            "jwt_bob",
        ] {
            let error = tokio_postgres_query(addr, user, Some("wrong"))
                .await
                .unwrap_err();
            assert_eq!(
                sqlstate(&error).as_deref(),
                Some("28P01"),
                "{user}: {error}"
            );
            let message = error.as_db_error().unwrap().message().to_owned();
            assert_eq!(
                message,
                format!("password authentication failed for user \"{user}\"")
            );
        }
        // The server kept serving.
        assert!(tokio_postgres_query(addr, "trust_x", None).await.is_ok());
    })
    .await;
}

fn tls_conninfo(addr: std::net::SocketAddr, pki: &Pki, user: &str, extra: &str) -> String {
    format!(
        "host=localhost port={} user={user} dbname=db sslrootcert={} {extra}",
        addr.port(),
        pki.ca_file.display()
    )
}

#[tokio::test]
async fn psql_connects_over_tls_with_scram_plus_and_channel_binding_required() {
    let pki = Pki::new();
    let addr = start_tls_server(&pki, false).await;
    let conninfo = tls_conninfo(
        addr,
        &pki,
        "scram_carol",
        "sslmode=verify-full channel_binding=require",
    );
    let (ok, out, err) = tokio::task::spawn_blocking(move || psql(&conninfo, Some(PASSWORD)))
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out, "user=scram_carol client=127.0.0.1 tls=true");

    let conninfo = tls_conninfo(
        addr,
        &pki,
        "scram_carol",
        "sslmode=require channel_binding=require",
    );
    let (ok, _, err) = tokio::task::spawn_blocking(move || psql(&conninfo, Some("wrong")))
        .await
        .unwrap();
    assert!(!ok);
    assert!(err.contains("password authentication failed"), "{err}");
}

#[tokio::test]
async fn psql_connects_with_sslmode_disable_require_and_verify_full() {
    let pki = Pki::new();
    let addr = start_tls_server(&pki, false).await;
    for (mode, tls) in [("disable", false), ("require", true), ("verify-full", true)] {
        let conninfo = tls_conninfo(addr, &pki, "md5_dave", &format!("sslmode={mode}"));
        let (ok, out, err) = tokio::task::spawn_blocking(move || psql(&conninfo, Some(PASSWORD)))
            .await
            .unwrap();
        assert!(ok, "{mode}: {err}");
        assert_eq!(
            out,
            format!("user=md5_dave client=127.0.0.1 tls={tls}"),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn client_certificates_authenticate_when_the_common_name_is_the_user() {
    let pki = Pki::new();
    let addr = start_tls_server(&pki, false).await;
    let (cert, key) = pki.client_cert("cert_erin");
    let files = format!(
        "sslmode=verify-full sslcert={} sslkey={}",
        cert.display(),
        key.display()
    );
    let conninfo = tls_conninfo(addr, &pki, "cert_erin", &files);
    let (ok, out, err) = tokio::task::spawn_blocking(move || psql(&conninfo, None))
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out, "user=cert_erin client=127.0.0.1 tls=true");

    let conninfo = tls_conninfo(addr, &pki, "cert_frank", &files);
    let (ok, _, err) = tokio::task::spawn_blocking(move || psql(&conninfo, None))
        .await
        .unwrap();
    assert!(!ok);
    assert!(
        err.contains("certificate authentication failed for user \"cert_frank\""),
        "{err}"
    );

    let conninfo = tls_conninfo(addr, &pki, "cert_erin", "sslmode=require");
    let (ok, _, err) = tokio::task::spawn_blocking(move || psql(&conninfo, None))
        .await
        .unwrap();
    assert!(!ok);
    assert!(err.contains("no client certificate"), "{err}");
}

#[tokio::test]
async fn require_tls_refuses_plaintext_startups() {
    let pki = Pki::new();
    let addr = start_tls_server(&pki, true).await;
    let error = within("plaintext", tokio_postgres_query(addr, "trust_g", None))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("28000"), "{error}");
    let conninfo = tls_conninfo(addr, &pki, "trust_g", "sslmode=require");
    let (ok, _, err) = tokio::task::spawn_blocking(move || psql(&conninfo, None))
        .await
        .unwrap();
    assert!(ok, "{err}");
}

async fn oauth_start(addr: std::net::SocketAddr) -> RawClient {
    let mut client = RawClient::connect(addr).await.unwrap();
    client
        .send_startup(&[("user", "oauth_hank"), ("database", "db")])
        .await
        .unwrap();
    let BackendMessage::Authentication(Authentication::Sasl { mechanisms }) =
        client.read().await.unwrap()
    else {
        panic!("expected AuthenticationSASL");
    };
    assert_eq!(mechanisms, ["OAUTHBEARER"]);
    client
}

async fn send_initial(client: &mut RawClient, token: Option<&str>) {
    let data = pgbastion_auth::oauthbearer::client_initial_response(token);
    let mut buf = bytes::BytesMut::new();
    SaslInitialResponse {
        mechanism: "OAUTHBEARER".into(),
        data: Some(Bytes::from(data)),
    }
    .encode(&mut buf)
    .unwrap();
    client.send_raw(&buf).await.unwrap();
}

#[tokio::test]
async fn oauthbearer_discovery_then_token_as_libpq_18_does() {
    let addr = start_server(GatewayConfig::default()).await;
    within("oauth", async {
        // Discovery: an empty token gets the issuer's metadata, then a failure.
        let mut client = oauth_start(addr).await;
        send_initial(&mut client, None).await;
        let BackendMessage::Authentication(Authentication::SaslContinue(json)) =
            client.read().await.unwrap()
        else {
            panic!("expected the error JSON");
        };
        let json = String::from_utf8(json.to_vec()).unwrap();
        assert!(json.contains(r#""status":"invalid_token""#), "{json}");
        assert!(
            json.contains(r#""openid-configuration":"https://issuer.example/.well-known/openid-configuration""#),
            "{json}"
        );
        assert!(json.contains(r#""scope":"openid postgres""#), "{json}");
        let mut buf = bytes::BytesMut::new();
        SaslResponse { data: Bytes::from_static(b"\x01") }.encode(&mut buf).unwrap();
        client.send_raw(&buf).await.unwrap();
        let BackendMessage::ErrorResponse(error) = client.read().await.unwrap() else {
            panic!("expected an error");
        };
        assert_eq!(error.sqlstate(), Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION));

        // A good token logs in.
        let mut client = oauth_start(addr).await;
        send_initial(&mut client, Some(BEARER)).await;
        client.authenticate("oauth_hank", None).await.unwrap();
        let rows = client.simple_query("SELECT answer").await.unwrap();
        assert!(rows.iter().any(|m| matches!(m, BackendMessage::DataRow(_))));

        // A bad token gets the JSON too, then 28000.
        let mut client = oauth_start(addr).await;
        send_initial(&mut client, Some("expired")).await;
        assert!(matches!(
            client.read().await.unwrap(),
            BackendMessage::Authentication(Authentication::SaslContinue(_))
        ));
    })
    .await;
}

/// Reads the RFC 7628 error challenge, answers it with the `\x01` acknowledgement and returns
/// the FATAL that follows.
async fn expect_oauth_error_challenge(client: &mut RawClient) -> pgbastion_wire::ErrorResponse {
    let message = client.read().await.unwrap();
    let BackendMessage::Authentication(Authentication::SaslContinue(json)) = message else {
        panic!("expected the RFC 7628 error challenge, got {message:?}");
    };
    let json = String::from_utf8(json.to_vec()).unwrap();
    assert!(json.contains(r#""status":"invalid_token""#), "{json}");
    assert!(json.contains(r#""openid-configuration":"#), "{json}");
    assert!(json.contains(r#""scope":"openid postgres""#), "{json}");
    let mut buf = bytes::BytesMut::new();
    SaslResponse {
        data: Bytes::from_static(b"\x01"),
    }
    .encode(&mut buf)
    .unwrap();
    client.send_raw(&buf).await.unwrap();
    let message = client.read().await.unwrap();
    let BackendMessage::ErrorResponse(error) = message else {
        panic!("expected FATAL after the acknowledgement, got {message:?}");
    };
    error
}

#[tokio::test]
async fn a_bearer_token_the_hook_refuses_with_an_error_gets_the_error_challenge_then_28000() {
    let addr = start_server(GatewayConfig::default()).await;
    within("expired bearer token", async {
        let mut client = oauth_start(addr).await;
        send_initial(&mut client, Some(EXPIRED_BEARER)).await;
        let error = expect_oauth_error_challenge(&mut client).await;
        assert_eq!(error.severity(), Some(pgbastion_wire::Severity::Fatal));
        assert_eq!(
            error.sqlstate(),
            Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
            "{error}"
        );
        assert!(
            error
                .message()
                .starts_with("OAuth bearer authentication failed for user \"oauth_hank\""),
            "{error}"
        );
        assert!(error.message().contains(EXPIRED_REASON), "{error}");

        // The server kept serving: a good token still logs in.
        let mut client = oauth_start(addr).await;
        send_initial(&mut client, Some(BEARER)).await;
        client.authenticate("oauth_hank", None).await.unwrap();
    })
    .await;
}
