//! Test-only helpers for pgbastion: throwaway PostgreSQL clusters ([`Cluster`]), a
//! certificate authority made at run time ([`TestCa`]) and a protocol client built only on
//! `pgbastion-wire` ([`RawClient`]).
//!
//! Clusters never depend on a server someone else started: each is copied from a template
//! made by one `initdb` per test process, listens on a random port on 127.0.0.1 and goes away
//! when dropped. When the tests run as root (as CI does), servers run as the unprivileged
//! `postgres` OS user, created if missing.

mod ca;
mod cluster;
mod issuer;
mod os;
mod raw_client;
mod template;

pub use ca::{CertifiedKey, TestCa};
pub use cluster::{quote_ident, quote_literal, Cluster, ClusterBuilder, PasswordEncryption};
pub use issuer::TestIssuer;
pub use raw_client::{RawClient, RawClientError};

/// Why the testkit could not provide what a test asked for.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// No server binaries.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install them with \
         `apt-get install -y postgresql` or set PGBASTION_PG_BINDIR"
    )]
    BinariesNotFound,
    /// A command failed.
    #[error("{command} failed:\n{output}")]
    Command {
        /// The command.
        command: String,
        /// What it printed.
        output: String,
    },
    /// The server did not start.
    #[error("PostgreSQL did not start: {error}\nserver log:\n{log}")]
    Start {
        /// The pg_ctl failure.
        error: String,
        /// The server log's tail.
        log: String,
    },
    /// The per-process template could not be made.
    #[error("could not create the cluster template: {0}")]
    Template(String),
    /// File or process I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A system call (user lookup, signals).
    #[error("system call: {0}")]
    Sys(#[from] nix::Error),
    /// Certificate generation.
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
}
