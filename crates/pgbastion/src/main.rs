//! `pgbastion`: a PostgreSQL wire-protocol gateway and proxy.
//!
//! This is the binary's edge: command-line parsing, logging, signals and the listeners live
//! here; the protocol, authentication, routing and relaying live in the library crates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod logging;
mod metrics_http;

use anyhow::Context;
use clap::Parser;
use pgbastion_gateway::GatewayConfig;
use pgbastion_proxy::config::LogFormat;
use pgbastion_proxy::{Proxy, Settings, Workers};
use pgbastion_sqlite::SqliteBackend;

/// A PostgreSQL wire-protocol gateway.
///
/// With no arguments, pgbastion serves an embedded SQLite database over the PostgreSQL
/// protocol on 127.0.0.1:6432 (trust authentication, local clients only), so that
/// `psql -h 127.0.0.1 -p 6432` works on a fresh machine.
///
/// With --config FILE it is a proxy in front of PostgreSQL servers: it authenticates clients
/// its own way (SCRAM, md5, client certificates, JWT/OIDC, an external command, or the backend
/// itself), routes each connection by server name, user, database or token claim, logs into
/// the backend with mapped credentials, and relays the protocol. See docs/configuration.md.
#[derive(Debug, Parser)]
#[command(name = "pgbastion", version, about, long_about)]
struct Cli {
    /// Run the proxy with this configuration file (TOML).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "data"])]
    config: Option<PathBuf>,

    /// Check a configuration file and exit: status 0 when it is valid, else 1 with the key
    /// and line at fault.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "listen", "data"])]
    check_config: Option<PathBuf>,

    /// Embedded database only: where it listens. It trusts every local client and refuses
    /// all others, so keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:6432", value_name = "ADDR")]
    listen: SocketAddr,

    /// Embedded database only: keep it in FILE (created when missing) instead of in memory.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,

    /// Proxy only: threads that run client sessions, each with its own event loop; a
    /// session stays on one thread from accept to close. Default: one per CPU.
    #[arg(long, value_name = "N", requires = "config", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.check_config {
        return check_config(path);
    }
    let result = match &cli.config {
        Some(path) => run_proxy(path, cli.workers),
        None => tokio::runtime::Runtime::new()
            .context("cannot start the runtime")
            .and_then(|runtime| runtime.block_on(run_embedded(&cli))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgbastion: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> std::process::ExitCode {
    match Settings::load(path) {
        Ok(settings) => {
            println!(
                "{}: valid ({} listener(s), {} route(s), {} user(s))",
                path.display(),
                settings.listeners.len(),
                settings.routes.0.len(),
                settings.users.len()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The proxy: accept loops, signals and key refreshes on this thread's runtime; sessions on
/// the worker threads.
fn run_proxy(path: &Path, workers: Option<u16>) -> anyhow::Result<()> {
    let settings = Settings::load(path)?;
    logging::init(settings.log.format, settings.log.level.as_deref());
    raise_fd_limit();
    let workers = match workers {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let workers = Workers::start(workers).context("cannot start the worker threads")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve_proxy(settings, workers))
}

async fn serve_proxy(settings: Settings, workers: Workers) -> anyhow::Result<()> {
    let metrics_address = settings.metrics_address;
    let proxy = Proxy::new(settings).await?.with_workers(workers);
    let bound = proxy.bind().await?;
    for (socket, _) in &bound {
        if let Ok(addr) = socket.local_addr() {
            tracing::info!(%addr, "listening");
        }
    }
    if let Some(address) = metrics_address {
        let endpoint = metrics_http::bind(address).await?;
        tracing::info!(%address, "metrics endpoint listening (/metrics, /vars, /health, /ready)");
        tokio::spawn(metrics_http::serve(endpoint, proxy.metrics()));
    }
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let shutdown = async {
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: refreshing token keys");
                    proxy.refresh_keys().await;
                }
                _ = terminate.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        tracing::info!("shutting down");
    };
    proxy.serve(bound, shutdown).await;
    Ok(())
}

async fn run_embedded(cli: &Cli) -> anyhow::Result<()> {
    logging::init(LogFormat::Text, None);
    raise_fd_limit();
    let backend = match &cli.data {
        Some(path) => SqliteBackend::open(path)
            .with_context(|| format!("cannot open the SQLite database {}", path.display()))?,
        None => SqliteBackend::open_in_memory().context("cannot create the in-memory database")?,
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| bind_error(cli.listen, &e))?;
    print_banner(cli, &backend);
    tokio::select! {
        () = pgbastion_sqlite::serve_listener(listener, Arc::new(backend), Arc::new(GatewayConfig::default())) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("pgbastion: shutting down"),
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: every client holds a descriptor (a
/// proxied one two), and the usual soft limit of 1024 is reached by a modest crowd of idle
/// clients. Says in the log what the limit is, since it caps how many clients fit.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open files limit (RLIMIT_NOFILE)");
            return;
        }
    };
    if soft < hard {
        if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::warn!(%error, soft, hard, "cannot raise the open files limit; it stays at {soft}");
            return;
        }
    }
    tracing::info!(
        previous_soft_limit = soft,
        "open files limit (RLIMIT_NOFILE): {hard}, each client needs one (two when proxied)"
    );
}

fn bind_error(addr: SocketAddr, error: &std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "port {port} on {ip} is already in use (another pgbastion or a PostgreSQL?); \
             choose another port with --listen {ip}:PORT",
            port = addr.port(),
            ip = addr.ip(),
        )
    } else {
        anyhow::anyhow!("cannot listen on {addr}: {error}")
    }
}

/// The host a local client connects to: the listen address, or loopback when pgbastion
/// listens on every address (`0.0.0.0`, `[::]`) of its family.
fn connect_host(listen: std::net::IpAddr) -> std::net::IpAddr {
    match listen {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    }
}

fn print_banner(cli: &Cli, backend: &SqliteBackend) {
    let storage = match &cli.data {
        Some(path) => format!("the SQLite database in {}", path.display()),
        None => {
            "an in-memory SQLite database (gone when pgbastion stops; keep it with --data FILE)"
                .to_owned()
        }
    };
    println!(
        "pgbastion {version} is serving {storage}\n\
         \x20 listening on  {addr} (trust authentication for local clients: no password)\n\
         \x20 connect with  psql -h {host} -p {port}\n\
         \x20 engine        {engine}\n\
         \x20 stop with     Ctrl-C\n\
         To put pgbastion in front of a real PostgreSQL, run it with --config FILE\n\
         (docs/configuration.md). pgbastion --help lists the options.",
        version = env!("CARGO_PKG_VERSION"),
        addr = cli.listen,
        host = connect_host(cli.listen.ip()),
        port = cli.listen.port(),
        engine = backend.version(),
    );
}
