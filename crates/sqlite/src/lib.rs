//! An embedded SQLite database served over the PostgreSQL protocol with
//! [`pgbastion_gateway`]: pgbastion's zero-config default, and the worked example of serving
//! your own backend with the library (see `docs/library.md`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let backend = Arc::new(pgbastion_sqlite::SqliteBackend::open_in_memory()?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6432").await?;
//! pgbastion_sqlite::serve_listener(listener, backend, Default::default()).await;
//! # Ok(()) }
//! ```
//!
//! Each client gets its own SQLite connection to one shared database, so transactions are
//! per client as in PostgreSQL. Statements run on tokio's blocking pool, never on the
//! threads that drive sockets.

mod cancel;
mod command;
mod engine;
mod errors;
mod server;
mod session;
pub mod settings;
pub mod sql;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use pgbastion_gateway::ConnectionState;
use rand::RngCore;
use rusqlite::{Connection, OpenFlags};

use crate::engine::Engine;

pub use crate::server::{serve_listener, LocalTrust};
pub use crate::session::SqliteSession;

/// Why the database or a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// SQLite refused.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The client's startup packet set a parameter to a value PostgreSQL would refuse.
    #[error(transparent)]
    InvalidSetting(#[from] settings::InvalidValue),
}

/// Where the database lives.
#[derive(Debug, Clone)]
enum Location {
    /// A shared-cache in-memory database, alive while the backend holds a connection to it.
    Memory(String),
    File(PathBuf),
}

/// One SQLite database that many clients share.
#[derive(Debug)]
pub struct SqliteBackend {
    location: Location,
    /// Keeps an in-memory database alive between clients.
    _keeper: Mutex<Connection>,
    parameters: Vec<(String, String)>,
}

/// How long a statement waits for another client's write lock before failing with 55P03.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl SqliteBackend {
    /// A fresh in-memory database (gone when the backend is dropped).
    pub fn open_in_memory() -> Result<Self, SqliteError> {
        let name = format!("pgbastion-{:016x}", rand::thread_rng().next_u64());
        Self::with_location(Location::Memory(format!(
            "file:{name}?mode=memory&cache=shared"
        )))
    }

    /// The database in `path`, created when missing (WAL journal, so readers do not block
    /// the writer).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SqliteError> {
        let backend = Self::with_location(Location::File(path.as_ref().to_owned()))?;
        backend
            ._keeper
            .lock()
            .map_err(|_| SqliteError::Sqlite(rusqlite::Error::InvalidQuery))?
            .pragma_update(None, "journal_mode", "WAL")?;
        Ok(backend)
    }

    fn with_location(location: Location) -> Result<Self, SqliteError> {
        let keeper = connect(&location)?;
        let mut parameters = pgbastion_gateway::config::default_parameter_status();
        parameters.push(("server_version".to_owned(), server_version()));
        Ok(Self {
            location,
            _keeper: Mutex::new(keeper),
            parameters,
        })
    }

    /// The version string clients see: PostgreSQL-compatible, naming SQLite.
    pub fn version(&self) -> String {
        format!(
            "PostgreSQL {} on pgbastion, embedded SQLite {}",
            server_version(),
            rusqlite::version()
        )
    }

    /// Opens a session for one client, with the settings of its startup packet
    /// (`-c statement_timeout=...` in `options`).
    pub fn session(&self, state: &ConnectionState) -> Result<SqliteSession, SqliteError> {
        let statement_timeout = settings::startup_timeout(state.client.as_ref())?;
        let conn = connect(&self.location)?;
        let version = self.version();
        let database = state
            .client
            .as_ref()
            .map(|client| client.database().to_owned())
            .unwrap_or_default();
        let flags = rusqlite::functions::FunctionFlags::SQLITE_UTF8
            | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC;
        conn.create_scalar_function("version", 0, flags, move |_| Ok(version.clone()))?;
        conn.create_scalar_function("current_database", 0, flags, move |_| Ok(database.clone()))?;
        Ok(SqliteSession::new(Engine::new(
            conn,
            self.parameters.clone(),
            statement_timeout,
        )))
    }
}

fn server_version() -> String {
    "16.0".to_owned()
}

fn connect(location: &Location) -> Result<Connection, rusqlite::Error> {
    let conn = match location {
        Location::Memory(uri) => Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?,
        Location::File(path) => Connection::open(path)?,
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}
