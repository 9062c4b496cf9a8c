//! The library examples, exercised: each example's `run` is included here and driven by
//! real clients (tokio-postgres, psql, and a real PostgreSQL behind the SNI router).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

#[allow(dead_code)]
#[path = "../examples/one_row_server.rs"]
mod one_row_server;

#[allow(dead_code)]
#[path = "../examples/custom_auth.rs"]
mod custom_auth;

#[allow(dead_code)]
#[path = "../examples/sni_router.rs"]
mod sni_router;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use pgbastion_gateway::GatewayConfig;
use pgbastion_testkit::Cluster;
use tokio::net::TcpListener;

async fn listen() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn first_value(
    conninfo: &str,
    password: Option<&str>,
) -> Result<String, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = conninfo.parse().unwrap();
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let messages = client.simple_query("SELECT anything").await?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default())
}

#[tokio::test]
async fn the_one_row_server_answers_every_query_with_one_row() {
    let (listener, addr) = listen().await;
    tokio::spawn(one_row_server::run(listener, GatewayConfig::default()));
    let conninfo = format!("host=127.0.0.1 port={} user=anyone", addr.port());
    let value = within("one row", first_value(&conninfo, None))
        .await
        .unwrap();
    assert_eq!(value, "test-value");
}

#[tokio::test]
async fn the_custom_auth_server_checks_its_user_table_in_each_mode() {
    let (listener, addr) = listen().await;
    let users = Arc::new(custom_auth::UserTable::new(&[
        ("alice", "wonderland"),
        ("bob", "builder"),
        ("carol", "singer"),
    ]));
    tokio::spawn(custom_auth::run(listener, users));
    within("custom auth", async {
        for (user, password) in [
            ("alice", "wonderland"),
            ("bob", "builder"),
            ("carol", "singer"),
        ] {
            let conninfo = format!("host=127.0.0.1 port={} user={user}", addr.port());
            assert_eq!(
                first_value(&conninfo, Some(password)).await.unwrap(),
                format!("hello {user}")
            );
            let error = first_value(&conninfo, Some("wrong")).await.unwrap_err();
            assert_eq!(
                error.as_db_error().unwrap().code().code(),
                "28P01",
                "{user}"
            );
        }
        let conninfo = format!("host=127.0.0.1 port={} user=mallory", addr.port());
        assert!(first_value(&conninfo, Some("x")).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn the_sni_router_pipes_tls_clients_to_the_backend_named_by_sni() {
    let cluster = Cluster::start().unwrap();
    let pki = Pki::new();
    let (listener, addr) = listen().await;
    let routes = HashMap::from([("localhost".to_owned(), cluster.addr())]);
    tokio::spawn(sni_router::run(
        listener,
        pki.tls_config(),
        Arc::new(sni_router::SniRouter::new(routes)),
    ));
    let ca = pki.ca_file.display().to_string();
    let conninfo = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={ca}",
        addr.port()
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT 'through the router', inet_server_port()",
            ])
            .arg(conninfo)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("through the router|{}", cluster.port())
    );

    let unknown = format!(
        "host=127.0.0.1 port={} user=postgres sslmode=require",
        addr.port()
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .args(["-X", "-c", "SELECT 1"])
            .arg(unknown)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no backend for server name (none)"),
        "{stderr}"
    );
}
