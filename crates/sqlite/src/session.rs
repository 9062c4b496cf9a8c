//! [`SqliteSession`]: the async shell around one client's [`Engine`]. Statements run on
//! tokio's blocking pool; while one runs, the session watches the clock
//! (`statement_timeout`) and the client's socket (a disconnect), and interrupts SQLite when
//! either says the answer is no longer wanted. CancelRequests interrupt it through the same
//! [`Interrupter`].

use std::sync::Arc;
use std::time::Duration;

use pgbastion_gateway::{ClientConn, ClientIo, Flow, HookError, HookResult, Session};
use pgbastion_wire::{Frame, FrontendMessage, FrontendTag, SqlState};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use crate::cancel::{Interrupter, Reason};
use crate::engine::{Engine, Fatal};
use crate::errors::malformed;

/// How much a client may pipeline while a statement runs before the session stops reading
/// ahead (and so stops noticing a disconnect until the statement ends).
const READ_AHEAD_LIMIT: usize = 1024 * 1024;

/// One client's session: its SQLite connection, prepared statements and portals.
pub struct SqliteSession {
    /// Moved to the blocking pool while a statement runs.
    engine: Option<Box<Engine>>,
    interrupter: Arc<Interrupter>,
}

/// What the engine is asked to do with one frame.
enum Work {
    Message(FrontendMessage),
    /// A well-framed message whose contents are invalid, and the error to answer.
    Malformed(FrontendTag, pgbastion_wire::ErrorResponse),
}

impl Work {
    fn apply(self, engine: &mut Engine) -> Result<bytes::BytesMut, Fatal> {
        match self {
            Self::Message(message) => engine.handle(message),
            Self::Malformed(tag, response) => engine.reject(tag, response),
        }
    }
}

impl SqliteSession {
    pub(crate) fn new(engine: Engine) -> Self {
        let interrupter = engine.interrupter();
        Self {
            engine: Some(Box::new(engine)),
            interrupter,
        }
    }

    /// What stops this session's running statement (for the cancel registry).
    pub(crate) fn interrupter(&self) -> Arc<Interrupter> {
        Arc::clone(&self.interrupter)
    }

    async fn run<S: ClientIo>(
        &mut self,
        conn: &mut ClientConn<S>,
        work: Work,
    ) -> HookResult<bytes::BytesMut> {
        let mut engine = self.engine.take().ok_or_else(lost)?;
        let timeout = engine.statement_timeout();
        // A cancel that arrived while the session was idle must not hit this message.
        self.interrupter.clear();
        let mut task = tokio::task::spawn_blocking(move || {
            let output = work.apply(&mut engine);
            (engine, output)
        });
        let (engine, output) = supervise(conn, &mut task, timeout, &self.interrupter)
            .await
            .map_err(|_| lost())?;
        self.engine = Some(engine);
        output.map_err(|fatal| {
            HookError::new(
                fatal.sqlstate().unwrap_or(SqlState::INTERNAL_ERROR),
                fatal.message(),
            )
        })
    }
}

impl<S: ClientIo> Session<S> for SqliteSession {
    async fn on_message(&mut self, conn: &mut ClientConn<S>, frame: Frame) -> HookResult<Flow> {
        let work = match (
            FrontendMessage::decode(&frame),
            FrontendTag::from_byte(frame.tag),
        ) {
            (Ok(message), _) => Work::Message(message),
            (Err(error), Some(tag)) => Work::Malformed(tag, malformed(&frame.body, &error)),
            // An unknown message type ends the session, as in PostgreSQL.
            (Err(_), None) => {
                return Err(HookError::new(
                    SqlState::PROTOCOL_VIOLATION,
                    format!("invalid frontend message type {}", frame.tag),
                ))
            }
        };
        let bytes = self.run(conn, work).await?;
        conn.send_raw(&bytes);
        Ok(Flow::Handled)
    }
}

/// Waits for `task`, interrupting its statement when `timeout` elapses or the client goes
/// away.
async fn supervise<S: ClientIo, T>(
    conn: &mut ClientConn<S>,
    task: &mut JoinHandle<T>,
    timeout: Option<Duration>,
    interrupter: &Interrupter,
) -> Result<T, JoinError> {
    let mut deadline = timeout.map(|timeout| Instant::now() + timeout);
    let mut watching = true;
    loop {
        tokio::select! {
            joined = &mut *task => return joined,
            () = sleep_until(deadline), if deadline.is_some() => {
                interrupter.interrupt(Reason::StatementTimeout);
                deadline = None;
            }
            gone = client_gone(conn), if watching => {
                if gone {
                    interrupter.interrupt(Reason::ClientGone);
                }
                watching = !gone && conn.buffered().len() < READ_AHEAD_LIMIT;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads what the client sends meanwhile (kept for the next messages); true when the client
/// closed the connection or it failed.
async fn client_gone<S: ClientIo>(conn: &mut ClientConn<S>) -> bool {
    matches!(conn.fill().await, Ok(0) | Err(_))
}

fn lost() -> HookError {
    HookError::new(SqlState::INTERNAL_ERROR, "the SQLite session failed")
}
