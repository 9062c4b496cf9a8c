//! The testkit's clusters are real, isolated and cleaned up.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use pgbastion_testkit::{Cluster, PasswordEncryption, TestCa};

/// Fails a hung test with context instead of stalling CI.
async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn a_cluster_answers_queries_over_tcp() {
    let cluster = Cluster::start().unwrap();
    within("select 1", async {
        let client = connect(&cluster.conninfo("postgres", None, "postgres"))
            .await
            .unwrap();
        let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 2);
    })
    .await;
}

#[tokio::test]
async fn md5_and_scram_users_need_their_passwords() {
    let cluster = Cluster::builder()
        .hba(&[
            "host all md5_user 127.0.0.1/32 md5",
            "host all scram_user 127.0.0.1/32 scram-sha-256",
        ])
        .user("md5_user", "md5 pass", PasswordEncryption::Md5)
        .user("scram_user", "scram'pass", PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    within("password logins", async {
        for (user, password) in [("md5_user", "md5 pass"), ("scram_user", "scram'pass")] {
            let ok = connect(&cluster.conninfo(user, Some(password), "postgres")).await;
            assert!(ok.is_ok(), "{user}: {:?}", ok.err());
            let wrong = connect(&cluster.conninfo(user, Some("wrong"), "postgres"))
                .await
                .err()
                .unwrap();
            let code = wrong.as_db_error().map(|e| e.code().code().to_owned());
            assert_eq!(code.as_deref(), Some("28P01"), "{user}: {wrong}");
        }
    })
    .await;
    let stored = cluster
        .query("SELECT rolname, left(rolpassword, 6) FROM pg_authid WHERE rolname LIKE '%_user' ORDER BY 1")
        .unwrap();
    let prefixes: Vec<&str> = stored
        .lines()
        .map(|l| &l[l.find('|').unwrap() + 1..][..3])
        .collect();
    assert_eq!(prefixes, ["md5", "SCR"], "{stored}");
}

fn psql_over_tls(cluster: &Cluster, dir: &std::path::Path, extra: &str) -> std::process::Output {
    let conninfo = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={} {extra}",
        cluster.port(),
        dir.join("ca.crt").display()
    );
    Command::new(cluster.bindir().join("psql"))
        .args(["-X", "-A", "-t", "-c"])
        .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .arg(conninfo)
        .output()
        .unwrap()
}

#[test]
fn tls_clusters_serve_verified_tls_and_client_certificates() {
    let ca = TestCa::new("testkit CA").unwrap();
    let cluster = Cluster::builder()
        .tls(&ca)
        .hba(&["hostssl all all 127.0.0.1/32 cert"])
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write_cert(dir.path(), "ca").unwrap();
    let (cert, key) = ca
        .client_cert("postgres")
        .unwrap()
        .write_files(dir.path(), "client")
        .unwrap();
    let with_cert = format!("sslcert={} sslkey={}", cert.display(), key.display());
    let output = psql_over_tls(&cluster, dir.path(), &with_cert);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "t");

    let without_cert = psql_over_tls(&cluster, dir.path(), "");
    assert!(
        !without_cert.status.success(),
        "connected without a client certificate"
    );

    let other_ca = TestCa::new("someone else").unwrap();
    other_ca.write_cert(dir.path(), "ca").unwrap();
    let untrusted = psql_over_tls(&cluster, dir.path(), &with_cert);
    assert!(
        !untrusted.status.success(),
        "verify-full accepted an unknown CA"
    );
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("certificate verify failed"));
}

#[test]
fn clusters_are_independent_and_removed_on_drop() {
    let a = Cluster::start().unwrap();
    let b = Cluster::start().unwrap();
    assert_ne!(a.port(), b.port());
    a.execute_sql("CREATE TABLE only_in_a (x int)").unwrap();
    assert_eq!(
        b.query("SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'")
            .unwrap(),
        "0"
    );
    let dir = a.data_dir();
    let port = a.port();
    drop(a);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_eq!(b.query("SELECT 1").unwrap(), "1");
}

#[test]
fn settings_reach_postgresql_conf() {
    let cluster = Cluster::builder()
        .config("max_connections", "37")
        .start()
        .unwrap();
    assert_eq!(cluster.query("SHOW max_connections").unwrap(), "37");
    assert_eq!(cluster.query("SHOW listen_addresses").unwrap(), "127.0.0.1");
}
