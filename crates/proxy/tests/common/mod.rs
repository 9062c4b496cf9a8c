//! Shared test harness: a pgbastion proxy started in-process from TOML text.

#![allow(dead_code)] // each test file uses a different part

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use pgbastion_proxy::config::SourceFile;
use pgbastion_proxy::{Proxy, Settings, Workers};

/// A running proxy; stops when dropped.
pub struct RunningProxy {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a proxy from `toml` (listener address `127.0.0.1:0` unless the text has a
/// `[[listener]]`), with `dir` as the configuration directory.
pub async fn start_proxy(dir: &Path, toml: &str) -> RunningProxy {
    start_proxy_with(dir, toml, None).await
}

/// As [`start_proxy`], with sessions on `workers` thread-per-core runtimes when given (as the
/// binary runs them) instead of the test's runtime.
pub async fn start_proxy_with(dir: &Path, toml: &str, workers: Option<usize>) -> RunningProxy {
    let text = if toml.contains("[[listener]]") {
        toml.to_owned()
    } else {
        format!("[[listener]]\naddress = \"127.0.0.1:0\"\n\n{toml}")
    };
    let file = SourceFile {
        path: dir.join("pgbastion.toml"),
        text,
    };
    let settings = Settings::from_source(&file).unwrap_or_else(|e| panic!("{e}"));
    let mut proxy = Proxy::new(settings).await.unwrap();
    if let Some(workers) = workers {
        proxy = proxy.with_workers(Workers::start(workers).unwrap());
    }
    let bound = proxy.bind().await.unwrap();
    let addr = bound[0].0.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        proxy
            .serve(bound, async {
                // Dropped at the end of the test: close every session without waiting.
                let _ = stopped.await;
                Duration::ZERO
            })
            .await;
    });
    RunningProxy {
        addr,
        stop: Some(stop),
    }
}

/// Fails a hung test with context instead of stalling CI.
pub async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A tokio-postgres connection (no TLS) through `addr`.
pub async fn connect(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .dbname(database)
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Connects through `addr` and asks the backend who it thinks the session user is.
pub async fn current_user(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> String {
    let client = connect(addr, user, password, database)
        .await
        .unwrap_or_else(|e| panic!("{user} could not connect: {e}"));
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// The SQLSTATE and message of a connection through `addr` that must be refused.
pub async fn refusal(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> (String, String) {
    let error = connect(addr, user, password, database)
        .await
        .err()
        .unwrap_or_else(|| panic!("{user} was let in to {database}"));
    let message = error
        .as_db_error()
        .map_or_else(|| error.to_string(), |e| e.message().to_owned());
    (code(&error), message)
}

/// Whether the backend session behind `client` is encrypted, as the backend itself reports.
pub async fn backend_uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The SQLSTATE of a failed connection or query.
pub fn code(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|e| e.code().code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {error}"))
}

/// `backend = "postgres://USER[:PASSWORD]@127.0.0.1:PORT/DB?sslmode=disable"` for a cluster.
pub fn backend_url(
    cluster: &pgbastion_testkit::Cluster,
    user: &str,
    password: Option<&str>,
    db: &str,
) -> String {
    let auth = match password {
        Some(password) => format!("{user}:{password}"),
        None => user.to_owned(),
    };
    format!(
        "postgres://{auth}@127.0.0.1:{}/{db}?sslmode=disable",
        cluster.port()
    )
}

/// Runs a PostgreSQL client program (psql, pgbench) against 127.0.0.1:`port` as `user`
/// (with `password` when given), failing the test with its output when it fails; returns
/// its stdout.
pub fn run_client_program(
    port: u16,
    (user, password): (&str, Option<&str>),
    program: &str,
    args: &[&str],
) -> String {
    let mut command = std::process::Command::new(program);
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?}: {stdout}\n{stderr}"
    );
    stdout
}
