#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! TLS in front: SNI routing, SCRAM-SHA-256-PLUS through the proxy, client certificates,
//! require_tls, with psql as the client.

mod common;

use std::process::Command;

use common::*;
use pgbastion_testkit::{Cluster, TestCa};

/// Runs psql with a connection string; returns (success, stdout, stderr).
fn psql(conninfo: &str, sql: &str, password: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new("psql");
    command
        .args(["-X", "-A", "-t", "-d", conninfo, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_routes_scram_plus_and_client_certificates() {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    cluster
        .execute_sql("CREATE ROLE tenant_t1 LOGIN; CREATE ROLE alice LOGIN")
        .unwrap();
    let ca = TestCa::new("pgbastion test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.server_cert(&["localhost", "*.db.example.com"])
        .unwrap()
        .write_files(dir.path(), "server")
        .unwrap();
    ca.client_cert("alice")
        .unwrap()
        .write_files(dir.path(), "alice")
        .unwrap();
    ca.write_cert(dir.path(), "ca").unwrap();
    let port = cluster.port();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            r#"
[[listener]]
address = "127.0.0.1:0"
require_tls = true
tls = {{ cert = "server.crt", key = "server.key", client_ca = "ca.crt" }}

[[user]]
name = "bob"
password = "builder"

[[route]]
match = {{ sni = "/(?P<tenant>[a-z0-9]+)\\.db\\.example\\.com/" }}
auth = "scram"
backend = "postgres://tenant_${{tenant}}@127.0.0.1:{port}/postgres?sslmode=disable"

[[route]]
match = {{ sni = "localhost" }}
auth = "cert"
backend = "postgres://127.0.0.1:{port}/postgres?sslmode=disable"
"#
        ),
    )
    .await;
    let addr = proxy.addr;
    let ca_path = dir.path().join("ca.crt");
    let plain_addr = addr;
    let tls = move |host: &str| {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} sslmode=verify-full sslrootcert={}",
            addr.port(),
            ca_path.display()
        )
    };
    let dir_path = dir.path().to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let scram_plus = psql(
            &format!(
                "{} user=bob dbname=postgres channel_binding=require",
                tls("t1.db.example.com")
            ),
            "SELECT current_user",
            Some("builder"),
        );
        let cert = psql(
            &format!(
                "{} user=alice dbname=postgres sslcert={} sslkey={}",
                tls("localhost"),
                dir_path.join("alice.crt").display(),
                dir_path.join("alice.key").display()
            ),
            "SELECT current_user",
            None,
        );
        let wrong_cert_user = psql(
            &format!(
                "{} user=postgres dbname=postgres sslcert={} sslkey={}",
                tls("localhost"),
                dir_path.join("alice.crt").display(),
                dir_path.join("alice.key").display()
            ),
            "SELECT 1",
            None,
        );
        let plaintext = psql(
            &format!(
                "host=127.0.0.1 port={} user=bob dbname=postgres sslmode=disable",
                plain_addr.port()
            ),
            "SELECT 1",
            Some("builder"),
        );
        (scram_plus, cert, wrong_cert_user, plaintext)
    });
    let (scram_plus, cert, wrong_cert_user, plaintext) =
        within("psql over TLS", result).await.unwrap();
    assert!(scram_plus.0, "SCRAM-PLUS through SNI route: {scram_plus:?}");
    assert_eq!(
        scram_plus.1, "tenant_t1",
        "the SNI capture chose the backend user"
    );
    assert!(cert.0, "client certificate: {cert:?}");
    assert_eq!(cert.1, "alice");
    assert!(
        !wrong_cert_user.0,
        "a certificate for alice logged in as postgres"
    );
    assert!(
        !plaintext.0 && plaintext.2.contains("TLS"),
        "plaintext with require_tls: {plaintext:?}"
    );
}

/// libpq 17's `PQcancelBlocking` and psycopg's `cancel_safe()` report "unexpected eof" when a
/// cancel connection over TLS ends without close_notify, although the query was cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_over_tls_is_closed_with_close_notify() {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    let ca = TestCa::new("pgbastion test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.server_cert(&["localhost"])
        .unwrap()
        .write_files(dir.path(), "server")
        .unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n\
             tls = {{ cert = \"server.crt\", key = \"server.key\" }}\n\n\
             [[route]]\nauth = \"trust\"\nbackend = \"{}\"\n",
            backend_url(&cluster, "postgres", None, "postgres")
        ),
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert_der())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    within("cancel over TLS", async {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"S");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let server = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(server, tcp).await.unwrap();
        let mut packet = bytes::BytesMut::new();
        pgbastion_wire::StartupPacket::CancelRequest(pgbastion_wire::CancelKey::new(
            1,
            vec![1, 2, 3, 4],
        ))
        .encode(&mut packet)
        .unwrap();
        tls.write_all(&packet).await.unwrap();
        let mut rest = Vec::new();
        let end = tls.read_to_end(&mut rest).await;
        assert!(
            end.is_ok(),
            "the cancel connection ended without close_notify: {end:?}"
        );
        assert!(rest.is_empty());
    })
    .await;
}
