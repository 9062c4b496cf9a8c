//! `pgbastion`: a PostgreSQL wire-protocol gateway and proxy.
//!
//! This is the binary's edge: command-line parsing lives here; the protocol,
//! authentication and proxying live in the library crates.

use clap::Parser;

/// A PostgreSQL wire-protocol gateway: terminates client connections (TLS, SCRAM,
/// JWT, client certificates, ...), routes each one to a backend and relays the
/// protocol with full awareness of its state.
#[derive(Debug, Parser)]
#[command(name = "pgbastion", version, about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "pgbastion {}: the proxy itself is not built yet; see README.md for what works today",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
