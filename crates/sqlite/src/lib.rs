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

mod engine;
mod errors;
pub mod sql;
pub mod types;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgbastion_gateway::{
    ClientConn, ClientIo, ConnectionState, Flow, GatewayConfig, HookError, HookResult, Hooks,
    Session,
};
use pgbastion_wire::{Frame, FrontendMessage, SqlState};
use rand::RngCore;
use rusqlite::{Connection, OpenFlags};

use crate::engine::Engine;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("SQLite: {0}")]
pub struct SqliteError(#[from] rusqlite::Error);

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
            .map_err(|_| SqliteError(rusqlite::Error::InvalidQuery))?
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

    /// Opens a session for one client.
    pub fn session(&self, state: &ConnectionState) -> Result<SqliteSession, SqliteError> {
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
        Ok(SqliteSession {
            engine: Some(Box::new(Engine::new(conn, self.parameters.clone()))),
        })
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

/// One client's session: its SQLite connection, prepared statements and portals.
pub struct SqliteSession {
    /// Moved to the blocking pool while a statement runs.
    engine: Option<Box<Engine>>,
}

impl<S: ClientIo> Session<S> for SqliteSession {
    async fn on_message(&mut self, conn: &mut ClientConn<S>, frame: Frame) -> HookResult<Flow> {
        let message = FrontendMessage::decode(&frame).map_err(|e| {
            HookError::new(
                SqlState::PROTOCOL_VIOLATION,
                format!("invalid message: {e}"),
            )
        })?;
        let mut engine = self.engine.take().ok_or_else(lost)?;
        let (engine, output) = tokio::task::spawn_blocking(move || {
            let output = engine.handle(message);
            (engine, output)
        })
        .await
        .map_err(|_| lost())?;
        self.engine = Some(engine);
        let bytes = output.map_err(|fatal| {
            HookError::new(
                fatal.sqlstate().unwrap_or(SqlState::INTERNAL_ERROR),
                fatal.message(),
            )
        })?;
        conn.send_raw(&bytes);
        Ok(Flow::Handled)
    }
}

fn lost() -> HookError {
    HookError::new(SqlState::INTERNAL_ERROR, "the SQLite session failed")
}

/// The embedded backend's client policy: trust, for loopback clients only.
#[derive(Debug, Default)]
pub struct LocalTrust;

impl Hooks for LocalTrust {
    fn on_startup<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        let local = conn.state().client_addr.ip().is_loopback();
        async move {
            if local {
                Ok(Flow::Continue)
            } else {
                Err(HookError::new(
                    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                    "the embedded database trusts local clients only (127.0.0.1 or ::1); \
                     configure the proxy (--config) to serve other hosts",
                ))
            }
        }
    }
}

/// Serves `backend` to clients of `listener`: [`LocalTrust`] authentication, one
/// [`SqliteSession`] per client. Returns when the listener fails.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    backend: Arc<SqliteBackend>,
    config: Arc<GatewayConfig>,
) {
    let config = Arc::new(GatewayConfig {
        server_version: server_version(),
        ..(*config).clone()
    });
    pgbastion_gateway::serve_listener_with(listener, config, Arc::new(LocalTrust), move |state| {
        backend.session(state).map_err(|e| {
            HookError::new(
                SqlState::CANNOT_CONNECT_NOW,
                format!("cannot open the database: {e}"),
            )
        })
    })
    .await;
}
