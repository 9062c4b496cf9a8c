//! Connection limits count from accept on: sockets that never send a startup packet cannot
//! hold more than their share of slots and descriptors, are refused at once beyond the limit
//! and closed at `startup_timeout` within it, and other clients keep connecting promptly.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use pgbastion_testkit::Cluster;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const PER_IP: usize = 5;
const SILENT_BEYOND_THE_LIMIT: usize = 200;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(4);

fn trust_cluster() -> Cluster {
    Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap()
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads what the server sends until it closes; returns it and when the close came.
async fn until_closed(mut socket: TcpStream) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    let _ = socket.read_to_end(&mut received).await;
    (received, Instant::now())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Logs in from `from` (a socket bound to that address) and runs a query.
async fn log_in_from(from: &str, addr: SocketAddr) -> i32 {
    let stream = connect_from(from, addr).await;
    let mut config = tokio_postgres::Config::new();
    config.user("postgres").dbname("postgres");
    let (client, connection) = config
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_count_from_accept_and_cannot_crowd_out_other_clients() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmax_connections = 100\n\
         max_connections_per_ip = {PER_IP}\nstartup_timeout = \"{}s\"\n\n\
         [[route]]\nauth = \"trust\"\nbackend = \"{}\"\n",
        STARTUP_TIMEOUT.as_secs(),
        backend_url(&cluster, "postgres", None, "postgres")
    );
    let proxy = start_proxy(dir.path(), &toml).await;
    within("silent sockets", async {
        let opened = Instant::now();
        let mut within_limit = Vec::new();
        for _ in 0..PER_IP {
            let socket = connect_from("127.0.0.1", proxy.addr).await;
            within_limit.push(tokio::spawn(until_closed(socket)));
        }
        // Let the proxy admit those before the flood, so the flood is what gets refused.
        tokio::time::sleep(Duration::from_millis(300)).await;

        let flooded = Instant::now();
        let mut beyond = Vec::new();
        for _ in 0..SILENT_BEYOND_THE_LIMIT {
            let socket = connect_from("127.0.0.1", proxy.addr).await;
            beyond.push(tokio::spawn(until_closed(socket)));
        }

        // A well-behaved client from another address is not held up by any of it.
        let login = Instant::now();
        assert_eq!(log_in_from("127.0.0.2", proxy.addr).await, 42);
        let login = login.elapsed();
        assert!(login < Duration::from_secs(2), "login took {login:?}");

        // Beyond the limit: refused with 53300 and closed after the short grace, not held
        // for startup_timeout or auth_timeout.
        for socket in beyond {
            let (received, closed) = socket.await.unwrap();
            let after = closed.duration_since(flooded);
            assert!(after < Duration::from_secs(3), "held {after:?}");
            assert!(contains(&received, "53300"), "{received:?}");
            assert!(
                contains(&received, "too many connections from your address"),
                "{received:?}"
            );
        }

        // Within the limit: closed at startup_timeout (57014), not at auth_timeout.
        for socket in within_limit {
            let (received, closed) = socket.await.unwrap();
            let after = closed.duration_since(opened);
            assert!(
                after >= STARTUP_TIMEOUT - Duration::from_millis(500)
                    && after < STARTUP_TIMEOUT + Duration::from_secs(5),
                "closed after {after:?}"
            );
            assert!(contains(&received, "57014"), "{received:?}");
        }

        // Their slots are free again.
        assert_eq!(log_in_from("127.0.0.1", proxy.addr).await, 42);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_that_sends_its_startup_packet_gets_53300_at_once() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmax_connections_per_ip = 1\n\n\
         [[route]]\nauth = \"trust\"\nbackend = \"{}\"\n",
        backend_url(&cluster, "postgres", None, "postgres")
    );
    let proxy = start_proxy(dir.path(), &toml).await;
    within("refusal", async {
        let _silent = connect_from("127.0.0.1", proxy.addr).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let (code, message) = refusal(proxy.addr, "postgres", None, "postgres").await;
        assert_eq!(code, "53300", "{message}");
        assert!(
            message.contains("too many connections from your address (at most 1 at once)"),
            "{message}"
        );
        assert!(started.elapsed() < Duration::from_millis(900));
        assert_eq!(log_in_from("127.0.0.2", proxy.addr).await, 42);
    })
    .await;
}
