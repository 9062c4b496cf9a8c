//! Hostile and broken clients get the right error, never a panic, and the server keeps
//! serving everyone else.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use pgbastion_gateway::proxy_protocol::{encode_v2, ProxyProtocolMode, TrustedProxies};
use pgbastion_gateway::GatewayConfig;
use pgbastion_testkit::{RawClient, RawClientError};
use pgbastion_wire::{
    Authentication, BackendMessage, ProtocolVersion, SaslInitialResponse, SaslResponse, SqlState,
    StartupMessage, StartupPacket,
};

async fn expect_fatal(client: &mut RawClient, code: SqlState) -> String {
    loop {
        match client.read().await {
            Ok(BackendMessage::ErrorResponse(e)) => {
                assert_eq!(e.sqlstate(), Some(code), "{e}");
                assert_eq!(e.severity(), Some(pgbastion_wire::Severity::Fatal));
                return e.message().to_owned();
            }
            Ok(BackendMessage::NegotiateProtocolVersion { .. }) => {}
            other => panic!("expected FATAL {code}, got {other:?}"),
        }
    }
}

async fn still_serving(addr: std::net::SocketAddr) {
    let answer = tokio_postgres_query(addr, "trust_ok", None).await.unwrap();
    assert!(answer.starts_with("user=trust_ok"), "{answer}");
}

#[tokio::test]
async fn garbage_instead_of_a_startup_packet_is_a_protocol_violation() {
    let addr = start_server(GatewayConfig::default()).await;
    within("garbage", async {
        let mut client = RawClient::connect(addr).await.unwrap();
        client
            .send_raw(b"\0\0\0\x02GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        expect_fatal(&mut client, SqlState::PROTOCOL_VIOLATION).await;
        still_serving(addr).await;
    })
    .await;
}

#[tokio::test]
async fn a_startup_packet_over_10000_bytes_is_refused_before_it_is_read() {
    let addr = start_server(GatewayConfig::default()).await;
    within("huge startup", async {
        let mut client = RawClient::connect(addr).await.unwrap();
        // PostgreSQL bounds the packet after its length word: 10 005 - 4 > 10 000.
        client.send_raw(&10_005u32.to_be_bytes()).await.unwrap();
        let message = expect_fatal(&mut client, SqlState::PROTOCOL_VIOLATION).await;
        assert!(message.contains("10005"), "{message}");
        still_serving(addr).await;
    })
    .await;
}

async fn startup_with_version(addr: std::net::SocketAddr, version: ProtocolVersion) -> RawClient {
    let mut client = RawClient::connect(addr).await.unwrap();
    let mut startup = StartupMessage::new(version);
    startup.params.push(("user".into(), "trust_v".into()));
    startup
        .params
        .push(("_pq_.future_option".into(), "1".into()));
    client
        .send_packet(&StartupPacket::Startup(startup))
        .await
        .unwrap();
    client
}

#[tokio::test]
async fn protocol_4_0_is_refused_and_3_9_is_negotiated_down_to_3_2() {
    let addr = start_server(GatewayConfig::default()).await;
    within("versions", async {
        let mut client = startup_with_version(addr, ProtocolVersion::new(4, 0)).await;
        let message = expect_fatal(&mut client, SqlState::FEATURE_NOT_SUPPORTED).await;
        assert!(
            message.contains("unsupported frontend protocol 4.0"),
            "{message}"
        );

        let mut client = startup_with_version(addr, ProtocolVersion::new(3, 9)).await;
        let BackendMessage::NegotiateProtocolVersion {
            newest_minor,
            unrecognized_options,
        } = client.read().await.unwrap()
        else {
            panic!("expected NegotiateProtocolVersion");
        };
        assert_eq!(newest_minor, 2);
        assert_eq!(unrecognized_options, ["_pq_.future_option"]);
        client.authenticate("trust_v", None).await.unwrap();
        let key = client.backend_key.clone().unwrap();
        assert_eq!(
            key.secret_key.len(),
            32,
            "3.2 sessions get long cancel keys"
        );
    })
    .await;
}

#[tokio::test]
async fn a_startup_without_user_is_refused_with_28000() {
    let addr = start_server(GatewayConfig::default()).await;
    within("no user", async {
        let mut client = RawClient::connect(addr).await.unwrap();
        client.send_startup(&[("database", "db")]).await.unwrap();
        let message =
            expect_fatal(&mut client, SqlState::INVALID_AUTHORIZATION_SPECIFICATION).await;
        assert!(message.contains("no PostgreSQL user name"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_auth_timeout() {
    let addr = start_server(GatewayConfig {
        auth_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    })
    .await;
    within("silent client", async {
        let started = Instant::now();
        let mut client = RawClient::connect(addr).await.unwrap();
        let message = expect_fatal(&mut client, SqlState::QUERY_CANCELED).await;
        assert!(message.contains("timeout"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(client.read().await, Err(RawClientError::Closed)));
        still_serving(addr).await;
    })
    .await;
}

#[tokio::test]
async fn a_client_silent_before_its_startup_packet_is_dropped_at_startup_timeout() {
    let addr = start_server(GatewayConfig {
        startup_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    })
    .await;
    within("silent before startup", async {
        let started = Instant::now();
        let mut client = RawClient::connect(addr).await.unwrap();
        let message = expect_fatal(&mut client, SqlState::QUERY_CANCELED).await;
        assert!(message.contains("timeout"), "{message}");
        // Long before the 60 s auth_timeout.
        assert!(started.elapsed() < Duration::from_secs(5));
        still_serving(addr).await;
    })
    .await;
}

fn proxy_config(trusted: &str) -> GatewayConfig {
    GatewayConfig {
        proxy_protocol: ProxyProtocolMode::Optional,
        trusted_proxies: TrustedProxies::new(vec![trusted.parse().unwrap()]),
        ..GatewayConfig::default()
    }
}

async fn startup_after_proxy_header(addr: std::net::SocketAddr, header: &[u8]) -> RawClient {
    let mut client = RawClient::connect(addr).await.unwrap();
    client.send_raw(header).await.unwrap();
    client
        .send_startup(&[("user", "trust_proxied")])
        .await
        .unwrap();
    client
}

#[tokio::test]
async fn a_proxy_header_from_a_trusted_peer_sets_the_client_address() {
    let addr = start_server(proxy_config("127.0.0.0/8")).await;
    within("trusted proxy", async {
        let header = encode_v2("203.0.113.9:4000".parse().unwrap(), addr).unwrap();
        let mut client = startup_after_proxy_header(addr, &header).await;
        client.authenticate("trust_proxied", None).await.unwrap();
        let rows = client.simple_query("SELECT answer").await.unwrap();
        let answer = rows
            .iter()
            .find_map(|m| match m {
                BackendMessage::DataRow(row) => row.values().next().flatten().map(<[u8]>::to_vec),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            String::from_utf8(answer).unwrap(),
            "user=trust_proxied client=203.0.113.9 tls=false"
        );
        // A client without a header is still served in optional mode.
        still_serving(addr).await;
    })
    .await;
}

#[tokio::test]
async fn a_proxy_header_from_an_untrusted_peer_is_refused() {
    let addr = start_server(proxy_config("10.0.0.0/8")).await;
    within("untrusted proxy", async {
        let header = b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 5432\r\n";
        let mut client = startup_after_proxy_header(addr, header).await;
        let message =
            expect_fatal(&mut client, SqlState::INVALID_AUTHORIZATION_SPECIFICATION).await;
        assert!(message.contains("untrusted peer 127.0.0.1"), "{message}");
        still_serving(addr).await;
    })
    .await;
}

#[tokio::test]
async fn a_malformed_proxy_v2_header_is_a_protocol_violation() {
    let addr = start_server(proxy_config("127.0.0.0/8")).await;
    within("malformed proxy", async {
        let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        header.extend_from_slice(&[0x2F, 0x11, 0, 12]);
        header.extend_from_slice(&[0; 12]);
        let mut client = startup_after_proxy_header(addr, &header).await;
        expect_fatal(&mut client, SqlState::PROTOCOL_VIOLATION).await;
        still_serving(addr).await;
    })
    .await;
}

#[tokio::test]
async fn a_required_proxy_header_that_is_missing_is_refused() {
    let mut config = proxy_config("127.0.0.0/8");
    config.proxy_protocol = ProxyProtocolMode::Required;
    let addr = start_server(config).await;
    within("missing proxy", async {
        let mut client = RawClient::connect(addr).await.unwrap();
        client.send_startup(&[("user", "trust_x")]).await.unwrap();
        expect_fatal(&mut client, SqlState::PROTOCOL_VIOLATION).await;
    })
    .await;
}

#[tokio::test]
async fn bytes_smuggled_after_ssl_request_are_refused() {
    let pki = Pki::new();
    let addr = start_tls_server(&pki, false).await;
    within("smuggling", async {
        let mut client = RawClient::connect(addr).await.unwrap();
        let mut bytes = BytesMut::new();
        StartupPacket::SslRequest.encode(&mut bytes).unwrap();
        StartupPacket::Startup(StartupMessage::new(ProtocolVersion::V3_0).with_param("user", "x"))
            .encode(&mut bytes)
            .unwrap();
        client.send_raw(&bytes).await.unwrap();
        let message = expect_fatal(&mut client, SqlState::PROTOCOL_VIOLATION).await;
        assert!(
            message.contains("unencrypted data after SSL request"),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn gssenc_and_ssl_requests_without_tls_are_answered_n() {
    let addr = start_server(GatewayConfig::default()).await;
    within("N answers", async {
        let mut client = RawClient::connect(addr).await.unwrap();
        client
            .send_packet(&StartupPacket::GssEncRequest)
            .await
            .unwrap();
        assert_eq!(client.read_byte().await.unwrap(), b'N');
        client
            .send_packet(&StartupPacket::SslRequest)
            .await
            .unwrap();
        assert_eq!(client.read_byte().await.unwrap(), b'N');
        client.send_startup(&[("user", "trust_n")]).await.unwrap();
        client.authenticate("trust_n", None).await.unwrap();
    })
    .await;
}

/// Sends the negotiation requests in order, expecting `N` for each, then one more that must
/// be refused the way PostgreSQL refuses it: as a startup packet of protocol 1234.x.
async fn repeated_negotiation_is_refused(
    addr: std::net::SocketAddr,
    answered: &[StartupPacket],
    repeated: StartupPacket,
) {
    let mut client = RawClient::connect(addr).await.unwrap();
    for request in answered {
        client.send_packet(request).await.unwrap();
        assert_eq!(client.read_byte().await.unwrap(), b'N', "{request:?}");
    }
    client.send_packet(&repeated).await.unwrap();
    let message = expect_fatal(&mut client, SqlState::FEATURE_NOT_SUPPORTED).await;
    let code = if repeated == StartupPacket::SslRequest {
        "5679"
    } else {
        "5680"
    };
    assert!(
        message.contains(&format!("unsupported frontend protocol 1234.{code}")),
        "{message}"
    );
    assert!(matches!(client.read().await, Err(RawClientError::Closed)));
}

#[tokio::test]
async fn a_second_ssl_or_gssenc_request_is_refused_as_an_unsupported_protocol() {
    use StartupPacket::{GssEncRequest as Gss, SslRequest as Ssl};
    let addr = start_server(GatewayConfig::default()).await;
    within("repeated negotiation", async {
        repeated_negotiation_is_refused(addr, &[Ssl], Ssl).await;
        repeated_negotiation_is_refused(addr, &[Gss], Gss).await;
        repeated_negotiation_is_refused(addr, &[Ssl, Gss], Ssl).await;
        repeated_negotiation_is_refused(addr, &[Gss, Ssl], Gss).await;
        still_serving(addr).await;
    })
    .await;
}

async fn scram_to_client_final(addr: std::net::SocketAddr) -> (RawClient, String) {
    let mut client = RawClient::connect(addr).await.unwrap();
    client.send_startup(&[("user", "scram_ivy")]).await.unwrap();
    assert!(matches!(
        client.read().await.unwrap(),
        BackendMessage::Authentication(Authentication::Sasl { .. })
    ));
    let mut buf = BytesMut::new();
    SaslInitialResponse {
        mechanism: "SCRAM-SHA-256".into(),
        data: Some(bytes::Bytes::from_static(b"n,,n=,r=clientnonce")),
    }
    .encode(&mut buf)
    .unwrap();
    client.send_raw(&buf).await.unwrap();
    let BackendMessage::Authentication(Authentication::SaslContinue(server_first)) =
        client.read().await.unwrap()
    else {
        panic!("expected server-first");
    };
    let server_first = String::from_utf8(server_first.to_vec()).unwrap();
    let nonce = server_first
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .unwrap()
        .to_owned();
    (client, nonce)
}

async fn send_client_final(client: &mut RawClient, message: String) {
    let mut buf = BytesMut::new();
    SaslResponse {
        data: message.into(),
    }
    .encode(&mut buf)
    .unwrap();
    client.send_raw(&buf).await.unwrap();
}

#[tokio::test]
async fn scram_client_finals_with_a_wrong_proof_nonce_or_binding_are_refused() {
    let addr = start_server(GatewayConfig::default()).await;
    within("bad client-final", async {
        let proof = "p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let (mut client, nonce) = scram_to_client_final(addr).await;
        send_client_final(&mut client, format!("c=biws,r={nonce},{proof}")).await;
        expect_fatal(&mut client, SqlState::INVALID_PASSWORD).await;

        let (mut client, nonce) = scram_to_client_final(addr).await;
        send_client_final(&mut client, format!("c=biws,r={nonce}X,{proof}")).await;
        let message = expect_fatal(&mut client, SqlState::PROTOCOL_VIOLATION).await;
        assert!(message.contains("nonce"), "{message}");

        // "eSws" is base64 of "y,,": the client claims binding was not offered.
        let (mut client, nonce) = scram_to_client_final(addr).await;
        send_client_final(&mut client, format!("c=eSws,r={nonce},{proof}")).await;
        let message = expect_fatal(&mut client, SqlState::PROTOCOL_VIOLATION).await;
        assert!(message.contains("channel binding"), "{message}");
        still_serving(addr).await;
    })
    .await;
}

#[tokio::test]
async fn a_client_vanishing_mid_scram_does_not_disturb_others() {
    let addr = start_server(GatewayConfig::default()).await;
    within("vanishing client", async {
        let (client, _) = scram_to_client_final(addr).await;
        drop(client);
        still_serving(addr).await;
        let answer = tokio_postgres_query(addr, "scram_jay", Some(PASSWORD))
            .await
            .unwrap();
        assert!(answer.starts_with("user=scram_jay"));
    })
    .await;
}

async fn sasl_start(addr: std::net::SocketAddr, user: &str) -> RawClient {
    let mut client = RawClient::connect(addr).await.unwrap();
    client.send_startup(&[("user", user)]).await.unwrap();
    assert!(matches!(
        client.read().await.unwrap(),
        BackendMessage::Authentication(Authentication::Sasl { .. })
    ));
    client
}

async fn send_initial(client: &mut RawClient, mechanism: &str, data: Vec<u8>) {
    let mut buf = BytesMut::new();
    SaslInitialResponse {
        mechanism: mechanism.into(),
        data: Some(data.into()),
    }
    .encode(&mut buf)
    .unwrap();
    client.send_raw(&buf).await.unwrap();
}

#[tokio::test]
async fn a_scram_client_first_over_1024_bytes_is_refused_not_echoed() {
    let addr = start_server(GatewayConfig::default()).await;
    within("oversized client-first", async {
        let mut client = sasl_start(addr, "scram_ivy").await;
        let nonce = "n".repeat(60_000);
        send_initial(
            &mut client,
            "SCRAM-SHA-256",
            format!("n,,n=,r={nonce}").into(),
        )
        .await;
        let message = expect_fatal(&mut client, SqlState::PROTOCOL_VIOLATION).await;
        assert!(
            message.contains("invalid message") && message.contains("1024"),
            "{message}"
        );
        still_serving(addr).await;
    })
    .await;
}

#[tokio::test]
async fn a_scram_client_final_over_1024_bytes_is_refused() {
    let addr = start_server(GatewayConfig::default()).await;
    within("oversized client-final", async {
        let (mut client, nonce) = scram_to_client_final(addr).await;
        let padding = "x".repeat(2_000);
        let proof = "p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        send_client_final(&mut client, format!("c=biws,r={nonce},x={padding},{proof}")).await;
        let message = expect_fatal(&mut client, SqlState::PROTOCOL_VIOLATION).await;
        assert!(message.contains("1024"), "{message}");
        still_serving(addr).await;
    })
    .await;
}

#[tokio::test]
async fn a_scram_client_first_of_exactly_the_limit_is_read() {
    let addr = start_server(GatewayConfig::default()).await;
    within("client-first at the limit", async {
        let mut client = sasl_start(addr, "scram_ivy").await;
        // Tag excluded, the length word counts: 4 + "SCRAM-SHA-256\0" + 4 + data = 1024.
        let header = "n,,n=,r=";
        let nonce = "n".repeat(1024 - 4 - 14 - 4 - header.len());
        send_initial(
            &mut client,
            "SCRAM-SHA-256",
            format!("{header}{nonce}").into(),
        )
        .await;
        assert!(matches!(
            client.read().await.unwrap(),
            BackendMessage::Authentication(Authentication::SaslContinue(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn an_oauth_bearer_token_of_several_kilobytes_is_still_read() {
    let addr = start_server(GatewayConfig::default()).await;
    within("large bearer token", async {
        let mut client = sasl_start(addr, "oauth_hank").await;
        // A realistic JWT with many claims: well over SCRAM's 1024 bytes.
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{}.sig", "e".repeat(6_000));
        let data = pgbastion_auth::oauthbearer::client_initial_response(Some(&token));
        send_initial(&mut client, "OAUTHBEARER", data).await;
        // Not this test's token, so refused, but by the mechanism (error JSON), not by length.
        let BackendMessage::Authentication(Authentication::SaslContinue(json)) =
            client.read().await.unwrap()
        else {
            panic!("expected the OAUTHBEARER error JSON");
        };
        assert!(String::from_utf8_lossy(&json).contains("invalid_token"));
        still_serving(addr).await;
    })
    .await;
}
