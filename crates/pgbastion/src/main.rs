//! `pgbastion`: a PostgreSQL wire-protocol gateway and proxy.
//!
//! This is the binary's edge: command-line parsing and the listener live here; the protocol,
//! authentication and backends live in the library crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use pgbastion_gateway::GatewayConfig;
use pgbastion_sqlite::SqliteBackend;

/// A PostgreSQL wire-protocol gateway.
///
/// With no arguments, pgbastion serves an embedded SQLite database over the PostgreSQL
/// protocol on 127.0.0.1:6432 (trust authentication, local clients only), so that
/// `psql -h 127.0.0.1 -p 6432` works on a fresh machine.
#[derive(Debug, Parser)]
#[command(name = "pgbastion", version, about, long_about)]
struct Cli {
    /// Address the embedded database listens on. It trusts every local client and refuses
    /// all others, so keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:6432", value_name = "ADDR")]
    listen: SocketAddr,

    /// Keep the embedded SQLite database in FILE (created when missing) instead of in
    /// memory.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let backend = match &cli.data {
        Some(path) => SqliteBackend::open(path)
            .with_context(|| format!("cannot open the SQLite database {}", path.display()))?,
        None => SqliteBackend::open_in_memory().context("cannot create the in-memory database")?,
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| bind_error(cli.listen, &e))?;
    print_banner(&cli, &backend);
    tokio::select! {
        () = pgbastion_sqlite::serve_listener(listener, Arc::new(backend), Arc::new(GatewayConfig::default())) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("pgbastion: shutting down"),
    }
    Ok(())
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

fn print_banner(cli: &Cli, backend: &SqliteBackend) {
    let storage = match &cli.data {
        Some(path) => format!("the SQLite database in {}", path.display()),
        None => "an in-memory SQLite database (gone when pgbastion stops; keep it with --data FILE)"
            .to_owned(),
    };
    println!(
        "pgbastion {version} is serving {storage}\n\
         \x20 listening on  {addr} (trust authentication for local clients: no password)\n\
         \x20 connect with  psql -h {host} -p {port}\n\
         \x20 engine        {engine}\n\
         \x20 stop with     Ctrl-C\n\
         To put pgbastion in front of a real PostgreSQL, see docs/getting-started.md.\n\
         pgbastion --help lists the options.",
        version = env!("CARGO_PKG_VERSION"),
        addr = cli.listen,
        host = cli.listen.ip(),
        port = cli.listen.port(),
        engine = backend.version(),
    );
}
