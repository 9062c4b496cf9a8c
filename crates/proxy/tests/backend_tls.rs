#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Backend TLS verification as libpq does it: a self-signed server certificate made the way
//! PostgreSQL's documentation makes one (CA:TRUE) is trusted when it is the `sslrootcert`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use pgbastion_testkit::{CertifiedKey, Cluster};

/// `openssl req -new -x509 -days 365 -nodes -text -out NAME.crt -keyout NAME.key
/// -subj "/CN=localhost"`, as in PostgreSQL's "Creating Certificates".
fn openssl_self_signed(dir: &Path, name: &str) -> CertifiedKey {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let status = Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-days", "365", "-nodes", "-text", "-out",
        ])
        .arg(&crt)
        .arg("-keyout")
        .arg(&key)
        .args(["-subj", "/CN=localhost"])
        .output()
        .unwrap();
    assert!(status.status.success(), "openssl: {status:?}");
    let cert_pem = std::fs::read_to_string(&crt).unwrap();
    assert!(
        cert_pem.contains("CA:TRUE"),
        "the docs' recipe makes a CA certificate"
    );
    CertifiedKey {
        cert_pem,
        key_pem: std::fs::read_to_string(&key).unwrap(),
        cert_der: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_server_certificate_is_trusted_as_its_own_sslrootcert() {
    let dir = tempfile::tempdir().unwrap();
    let server = openssl_self_signed(dir.path(), "server");
    openssl_self_signed(dir.path(), "other");
    let cluster = Cluster::builder()
        .tls_certificate(&server)
        .hba(&["hostssl all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    let route = |database: &str, host: &str, mode: &str, root: &str| {
        format!(
            "[[route]]\nmatch = {{ database = \"{database}\" }}\nauth = \"trust\"\n\
             backend = \"postgres://postgres@{host}:{}/postgres?sslmode={mode}&sslrootcert={root}\"\n",
            cluster.port()
        )
    };
    let config = [
        route("full", "localhost", "verify-full", "server.crt"),
        route("ca", "127.0.0.1", "verify-ca", "server.crt"),
        route("wrong_name", "127.0.0.1", "verify-full", "server.crt"),
        route("other_full", "localhost", "verify-full", "other.crt"),
        route("other_ca", "localhost", "verify-ca", "other.crt"),
    ]
    .join("\n");
    let proxy = start_proxy(dir.path(), &config).await;
    within("self-signed backend certificates", async {
        for database in ["full", "ca"] {
            let client = connect(proxy.addr, "postgres", None, database)
                .await
                .unwrap_or_else(|e| panic!("{database}: {:?}", e.as_db_error()));
            assert!(backend_uses_tls(&client).await, "{database}");
        }
        for database in ["wrong_name", "other_full", "other_ca"] {
            let (sqlstate, message) = refusal(proxy.addr, "postgres", None, database).await;
            assert_eq!(sqlstate, "08001", "{database}: {message}");
            assert!(message.contains("TLS"), "{database}: {message}");
        }
        // Still serving after the refusals.
        connect(proxy.addr, "postgres", None, "full").await.unwrap();
    })
    .await;
}
