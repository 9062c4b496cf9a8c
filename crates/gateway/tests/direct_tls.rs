//! PostgreSQL 17 direct TLS: the ClientHello comes first, with ALPN `postgresql`. libpq 15
//! cannot do this, so a rustls client does.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::sync::Arc;

use bytes::BytesMut;
use common::*;
use pgbastion_wire::{
    Authentication, BackendMessage, FrameDecoder, ProtocolVersion, SqlState, StartupMessage,
    StartupPacket,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn connector(pki: &Pki, alpn: Option<&[u8]>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca.cert_der())).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
    TlsConnector::from(Arc::new(config))
}

/// Direct TLS, then `packet`; returns the first message the server sends.
async fn first_message_after(
    pki: &Pki,
    addr: std::net::SocketAddr,
    alpn: Option<&[u8]>,
    packet: StartupPacket,
) -> BackendMessage {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector(pki, alpn).connect(name, tcp).await.unwrap();
    let mut out = BytesMut::new();
    packet.encode(&mut out).unwrap();
    tls.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(frame) = FrameDecoder::new(1 << 16).decode(&mut buf).unwrap() {
            return BackendMessage::decode(&frame).unwrap();
        }
        assert!(tls.read_buf(&mut buf).await.unwrap() > 0, "server closed");
    }
}

/// Direct TLS, then a StartupMessage.
async fn first_message(
    pki: &Pki,
    addr: std::net::SocketAddr,
    alpn: Option<&[u8]>,
) -> BackendMessage {
    let startup = StartupMessage::new(ProtocolVersion::V3_0).with_param("user", "trust_d");
    first_message_after(pki, addr, alpn, StartupPacket::Startup(startup)).await
}

#[tokio::test]
async fn an_ssl_request_inside_tls_is_refused_as_an_unsupported_protocol() {
    let pki = Pki::new();
    let addr = start_tls_server(&pki, false).await;
    let message = within(
        "SSLRequest over TLS",
        first_message_after(&pki, addr, Some(b"postgresql"), StartupPacket::SslRequest),
    )
    .await;
    let BackendMessage::ErrorResponse(error) = message else {
        panic!("expected an error, got {message:?}");
    };
    // As PostgreSQL: after encryption an SSLRequest is a startup packet of protocol 1234.5679.
    assert_eq!(error.sqlstate(), Some(SqlState::FEATURE_NOT_SUPPORTED));
    assert!(
        error
            .message()
            .contains("unsupported frontend protocol 1234.5679"),
        "{error}"
    );
}

#[tokio::test]
async fn direct_tls_with_alpn_postgresql_is_accepted() {
    let pki = Pki::new();
    let addr = start_tls_server(&pki, true).await;
    let message = within("direct TLS", first_message(&pki, addr, Some(b"postgresql"))).await;
    assert_eq!(message, BackendMessage::Authentication(Authentication::Ok));
}

#[tokio::test]
async fn direct_tls_without_alpn_is_refused_with_08p01() {
    let pki = Pki::new();
    let addr = start_tls_server(&pki, false).await;
    let message = within("no ALPN", first_message(&pki, addr, None)).await;
    let BackendMessage::ErrorResponse(error) = message else {
        panic!("expected an error, got {message:?}");
    };
    assert_eq!(error.sqlstate(), Some(SqlState::PROTOCOL_VIOLATION));
    assert!(error.message().contains("ALPN"), "{error}");
}
