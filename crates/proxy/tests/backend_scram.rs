//! Backends that make SCRAM expensive: the iteration count they ask for is capped
//! (`max_scram_iterations`), and the PBKDF2 they cost runs off the session threads.
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{code, connect, start_proxy_with, within, RunningProxy};
use pgbastion_proxy::config::SourceFile;
use pgbastion_proxy::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A fake backend. With `Some(iterations)` it asks for SCRAM with that many iterations and
/// leaves the login waiting, reporting each such request on the returned channel; with
/// `None` it lets everyone in and answers every query with `SELECT 0`.
async fn fake_backend(iterations: Option<u32>) -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (asked, asked_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, iterations, asked.clone()));
        }
    });
    (addr, asked_rx)
}

async fn serve(mut stream: TcpStream, iterations: Option<u32>, asked: mpsc::UnboundedSender<()>) {
    let len = stream.read_u32().await.unwrap() as usize;
    stream.read_exact(&mut vec![0; len - 4]).await.unwrap();
    if let Some(iterations) = iterations {
        ask_for_scram(&mut stream, iterations).await;
        let _ = asked.send(());
        // Hold the connection: the proxy is now deriving keys (or has given up).
        let _ = stream.read(&mut [0; 1024]).await;
        return;
    }
    send(&mut stream, b'R', &0u32.to_be_bytes()).await;
    send(&mut stream, b'Z', b"I").await;
    while let Ok(tag) = stream.read_u8().await {
        let len = stream.read_u32().await.unwrap() as usize;
        stream.read_exact(&mut vec![0; len - 4]).await.unwrap();
        if tag != b'Q' {
            return;
        }
        send(&mut stream, b'C', b"SELECT 0\0").await;
        send(&mut stream, b'Z', b"I").await;
    }
}

/// AuthenticationSASL, the client-first message, then a server-first one with `iterations`.
async fn ask_for_scram(stream: &mut TcpStream, iterations: u32) {
    send(
        stream,
        b'R',
        &[&10u32.to_be_bytes()[..], b"SCRAM-SHA-256\0\0"].concat(),
    )
    .await;
    assert_eq!(stream.read_u8().await.unwrap(), b'p');
    let len = stream.read_u32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).await.unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    let client_nonce = text.rsplit("r=").next().unwrap().to_owned();
    let server_first = format!("r={client_nonce}server,s=c2FsdHNhbHRzYWx0,i={iterations}");
    send(
        stream,
        b'R',
        &[&11u32.to_be_bytes()[..], server_first.as_bytes()].concat(),
    )
    .await;
}

async fn send(stream: &mut TcpStream, tag: u8, body: &[u8]) {
    let len = u32::try_from(body.len() + 4).unwrap();
    let message = [&[tag][..], &len.to_be_bytes(), body].concat();
    stream.write_all(&message).await.unwrap();
}

/// A proxy whose sessions all run on one worker thread, with trust routes: user `slow` to
/// `slow_backend`, everyone else to `fast_backend`.
async fn start_proxy(
    slow_backend: SocketAddr,
    fast_backend: SocketAddr,
    max_scram_iterations: u32,
) -> (tempfile::TempDir, RunningProxy) {
    let text = format!(
        r#"max_scram_iterations = {max_scram_iterations}

[[listener]]
address = "127.0.0.1:0"

[[route]]
match = {{ user = "slow" }}
auth = "trust"
connect_timeout = "30s"
backend = "postgres://app:secret@{slow_backend}/app?sslmode=disable"

[[route]]
auth = "trust"
backend = "postgres://app@{fast_backend}/app?sslmode=disable"
"#
    );
    let dir = tempfile::tempdir().unwrap();
    // One session worker: a PBKDF2 run on it would stall every other session there.
    let proxy = start_proxy_with(dir.path(), &text, Some(1)).await;
    (dir, proxy)
}

async fn select_through(proxy: SocketAddr) {
    let client = connect(proxy, "fast", None, "app")
        .await
        .unwrap_or_else(|e| panic!("fast session refused: {e}"));
    client.simple_query("SELECT 0").await.unwrap();
}

#[tokio::test]
async fn a_backend_asking_for_ten_million_scram_iterations_is_refused_at_once() {
    within("refusal", async {
        let (slow_backend, _asked) = fake_backend(Some(10_000_000)).await;
        let (fast_backend, _) = fake_backend(None).await;
        let (_dir, proxy) = start_proxy(slow_backend, fast_backend, 100_000).await;
        let proxy = proxy.addr;
        let started = Instant::now();
        let error = connect(proxy, "slow", None, "app").await.err().unwrap();
        let message = error.as_db_error().map(|e| e.message().to_owned());
        assert_eq!(code(&error), "08001", "{error}");
        assert_eq!(
            message.as_deref(),
            Some(
                "backend authentication: backend asked for 10000000 SCRAM iterations, \
                 more than max_scram_iterations (100000)"
            )
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // The proxy kept serving.
        select_through(proxy).await;
    })
    .await;
}

#[tokio::test]
async fn a_slow_pbkdf2_does_not_stall_another_session_on_the_same_worker() {
    within("concurrent session", async {
        // Allowed, and far more than a query's worth of time at any hashing speed.
        let (slow_backend, mut asked) = fake_backend(Some(9_000_000)).await;
        let (fast_backend, _) = fake_backend(None).await;
        let (_dir, proxy) = start_proxy(slow_backend, fast_backend, 10_000_000).await;
        let proxy = proxy.addr;
        let slow = tokio::spawn(async move { connect(proxy, "slow", None, "app").await.err() });
        asked.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        select_through(proxy).await;
        let took = started.elapsed();
        assert!(!slow.is_finished(), "the slow login is still deriving keys");
        assert!(
            took < Duration::from_secs(1),
            "the other session took {took:?}"
        );
        slow.abort();
    })
    .await;
}

#[test]
fn max_scram_iterations_of_zero_is_refused_naming_its_line() {
    let file = SourceFile {
        path: "pgbastion.toml".into(),
        text: "max_scram_iterations = 0\n\n[[route]]\nauth = \"trust\"\nbackend = \"postgres://a@127.0.0.1/a\"\n"
            .to_owned(),
    };
    let error = Settings::from_source(&file).err().unwrap().to_string();
    assert_eq!(
        error,
        "pgbastion.toml:1: max_scram_iterations must be at least 1"
    );
}
