//! What a pool's manager of backend connections does to a logged-in [`BackendConn`] between
//! clients: [`reset`] it for the next one (session mode's `DISCARD ALL`), [`check`] that it
//! still answers, and [`terminate`] it politely. Each bounds its whole exchange with a
//! timeout; any failure means the connection must be closed, not reused.

use std::time::Duration;

use bytes::BytesMut;
use pgbastion_wire::frontend::write_query;
use pgbastion_wire::{BackendMessage, ErrorResponse, FrameDecoder, FrontendTag, TransactionStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::BackendConn;

/// The reset of a route's `pool` unless it sets `reset`: drops everything a session can
/// leave behind (settings, prepared statements, temporary tables, LISTEN, advisory locks,
/// cursors, cached plans).
pub const DEFAULT_RESET: &str = "DISCARD ALL";

/// The largest message accepted in reply to a reset or a check (they answer with a few small
/// ones; anything bigger means the connection is not what the pool thinks).
const MAX_REPLY_MESSAGE: usize = 1 << 20;

/// Why a connection failed its reset or check. Every case closes it.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The backend did not answer in time.
    #[error("the backend did not answer the {what} within {timeout:?}")]
    Timeout {
        /// `reset` or `check`.
        what: &'static str,
        /// The time allowed.
        timeout: Duration,
    },
    /// The backend answered the statement with an error (e.g. 25001: `DISCARD ALL` inside a
    /// transaction block).
    #[error("the backend refused the reset: {}", .0.message())]
    Refused(ErrorResponse),
    /// The exchange ended outside a transaction block's `I` status.
    #[error("the backend ended the exchange in transaction status {0:?}, not idle")]
    NotIdle(TransactionStatus),
    /// Bytes from the backend were still unread before the exchange: the connection is out
    /// of step with the pool.
    #[error("{0} unread bytes from the backend before the exchange")]
    Unread(usize),
    /// The backend closed the connection.
    #[error("the backend closed the connection")]
    Closed,
    /// A socket error.
    #[error("backend I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The backend broke the protocol, or sent what a reset cannot answer (COPY).
    #[error("backend protocol: {0}")]
    Protocol(String),
}

/// Runs `sql` (normally [`DEFAULT_RESET`]) as a simple query and reads to its ReadyForQuery,
/// which must say idle. ParameterStatus messages on the way (a reset reverts settings)
/// update [`BackendConn::parameters`]; notices and notifications still queued for the
/// last client are dropped.
pub async fn reset(conn: &mut BackendConn, sql: &str, timeout: Duration) -> Result<(), ResetError> {
    within("reset", timeout, round_trip(conn, sql)).await
}

/// Sends an empty query (answered with EmptyQueryResponse and ReadyForQuery `I` by a live,
/// idle backend).
pub async fn check(conn: &mut BackendConn, timeout: Duration) -> Result<(), ResetError> {
    within("check", timeout, round_trip(conn, "")).await
}

/// Sends Terminate and closes the connection, giving up after `timeout` (it is closed either
/// way). For idle connections only: mid-message, the Terminate would be read as data.
pub async fn terminate(mut conn: BackendConn, timeout: Duration) {
    let bye = async {
        let terminate = [FrontendTag::Terminate.byte(), 0, 0, 0, 4];
        conn.stream.write_all(&terminate).await?;
        conn.stream.shutdown().await
    };
    if let Ok(Err(error)) = tokio::time::timeout(timeout, bye).await {
        tracing::debug!(%error, "backend: Terminate not delivered");
    }
}

async fn within(
    what: &'static str,
    timeout: Duration,
    work: impl std::future::Future<Output = Result<(), ResetError>>,
) -> Result<(), ResetError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ResetError::Timeout { what, timeout })?
}

async fn round_trip(conn: &mut BackendConn, sql: &str) -> Result<(), ResetError> {
    if !conn.buffered.is_empty() {
        return Err(ResetError::Unread(conn.buffered.len()));
    }
    let mut query = BytesMut::new();
    write_query(&mut query, sql).map_err(|e| ResetError::Protocol(e.to_string()))?;
    conn.stream.write_all(&query).await?;
    conn.stream.flush().await?;
    let mut refused = None;
    loop {
        match read(conn).await? {
            BackendMessage::ReadyForQuery(status) => {
                conn.status = status;
                return match (refused, status) {
                    (Some(error), _) => Err(ResetError::Refused(error)),
                    (None, TransactionStatus::Idle) => Ok(()),
                    (None, status) => Err(ResetError::NotIdle(status)),
                };
            }
            BackendMessage::ErrorResponse(error) => {
                refused.get_or_insert(error);
            }
            BackendMessage::ParameterStatus { name, value } => set_parameter(conn, name, value),
            BackendMessage::CommandComplete { .. }
            | BackendMessage::EmptyQueryResponse
            | BackendMessage::RowDescription { .. }
            | BackendMessage::DataRow(_)
            | BackendMessage::NoticeResponse(_)
            | BackendMessage::NotificationResponse { .. } => {}
            other => {
                return Err(ResetError::Protocol(format!(
                    "unexpected {:?} in reply to a reset or check",
                    other.tag()
                )))
            }
        }
    }
}

async fn read(conn: &mut BackendConn) -> Result<BackendMessage, ResetError> {
    let decoder = FrameDecoder::new(MAX_REPLY_MESSAGE);
    loop {
        let frame = decoder
            .decode(&mut conn.buffered)
            .map_err(|e| ResetError::Protocol(e.to_string()))?;
        if let Some(frame) = frame {
            return BackendMessage::decode(&frame).map_err(|e| ResetError::Protocol(e.to_string()));
        }
        if conn.stream.read_buf(&mut conn.buffered).await? == 0 {
            return Err(ResetError::Closed);
        }
    }
}

fn set_parameter(conn: &mut BackendConn, name: String, value: String) {
    match conn.parameters.iter_mut().find(|(known, _)| *known == name) {
        Some((_, old)) => *old = value,
        None => conn.parameters.push((name, value)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use pgbastion_testkit::Cluster;
    use pgbastion_wire::{BackendMessage, ErrorResponse, Severity, SqlState};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::backend::{BackendError, Connector};
    use crate::kdf::Kdf;
    use crate::login_plan::LoginPlan;
    use crate::target::{Address, SslMode, TlsSettings};

    async fn login(cluster: &Cluster) -> Result<BackendConn, BackendError> {
        let connector = Connector::new(
            PathBuf::from("."),
            Kdf::with_threads(1).unwrap(),
            4096,
            Default::default(),
        );
        let plan = LoginPlan {
            address: Address::Tcp("127.0.0.1".into(), cluster.port()),
            tls: TlsSettings {
                sslmode: SslMode::Disable,
                ..TlsSettings::default()
            },
            user: "postgres".into(),
            database: "postgres".into(),
            parameters: Vec::new(),
            client_addr: None,
            secret: None,
            proxy_from: None,
            timeout: Duration::from_secs(10),
        };
        connector.connect(&plan).await
    }

    /// The first column of every row of a simple query, as text (panics on an error), with
    /// the parameters the backend reports kept as a relay keeps them.
    async fn query(conn: &mut BackendConn, sql: &str) -> Vec<Option<String>> {
        let mut out = BytesMut::new();
        write_query(&mut out, sql).unwrap();
        conn.stream.write_all(&out).await.unwrap();
        let mut rows = Vec::new();
        loop {
            match read(conn).await.unwrap() {
                BackendMessage::DataRow(row) => rows.push(
                    row.get(0)
                        .unwrap()
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                ),
                BackendMessage::ParameterStatus { name, value } => set_parameter(conn, name, value),
                BackendMessage::ErrorResponse(e) => panic!("{sql}: {}", e.message()),
                BackendMessage::ReadyForQuery(_) => return rows,
                _ => {}
            }
        }
    }

    async fn one(conn: &mut BackendConn, sql: &str) -> String {
        query(conn, sql).await.remove(0).unwrap_or_default()
    }

    const SECOND: Duration = Duration::from_secs(1);

    async fn within_a_minute<T>(work: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .expect("the test hung")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reset_leaves_nothing_of_the_last_session_behind() {
        let cluster = Cluster::start().unwrap();
        within_a_minute(async {
            let mut conn = login(&cluster).await.unwrap();
            let default_work_mem = one(&mut conn, "SHOW work_mem").await;
            for sql in [
                "SET work_mem = '77MB'",
                "SET application_name = 'last client'",
                "CREATE TEMP TABLE leftover (x int)",
                "PREPARE leftover_statement AS SELECT 1",
                "LISTEN leftover_channel",
                "SELECT pg_advisory_lock(42)",
            ] {
                query(&mut conn, sql).await;
            }
            let application_name = |conn: &BackendConn| {
                conn.parameters
                    .iter()
                    .find(|(name, _)| name == "application_name")
                    .map(|(_, value)| value.clone())
            };
            assert_eq!(application_name(&conn).as_deref(), Some("last client"));
            reset(&mut conn, DEFAULT_RESET, 5 * SECOND).await.unwrap();
            assert_eq!(one(&mut conn, "SHOW work_mem").await, default_work_mem);
            assert_eq!(application_name(&conn).as_deref(), Some(""));
            let leftovers = "SELECT (SELECT count(*) FROM pg_prepared_statements) \
                 + (SELECT count(*) FROM pg_listening_channels()) \
                 + (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                    AND pid = pg_backend_pid()) \
                 + (SELECT count(*) FROM pg_class WHERE relname = 'leftover' \
                    AND relpersistence = 't')";
            assert_eq!(one(&mut conn, leftovers).await, "0");
            check(&mut conn, SECOND).await.unwrap();
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_inside_a_transaction_block_fails() {
        let cluster = Cluster::start().unwrap();
        within_a_minute(async {
            let mut conn = login(&cluster).await.unwrap();
            query(&mut conn, "BEGIN").await;
            match reset(&mut conn, DEFAULT_RESET, 5 * SECOND).await {
                Err(ResetError::Refused(error)) => {
                    assert_eq!(error.sqlstate(), Some(SqlState::ACTIVE_SQL_TRANSACTION))
                }
                other => panic!("expected 25001, got {other:?}"),
            }
            assert_eq!(conn.status, TransactionStatus::Failed);
            // A reset that leaves a transaction open is refused too.
            let mut conn = login(&cluster).await.unwrap();
            assert!(matches!(
                reset(&mut conn, "BEGIN", 5 * SECOND).await,
                Err(ResetError::NotIdle(TransactionStatus::InTransaction))
            ));
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_fails_on_a_terminated_backend() {
        let cluster = Cluster::start().unwrap();
        within_a_minute(async {
            let mut conn = login(&cluster).await.unwrap();
            check(&mut conn, SECOND).await.unwrap();
            let pid = one(&mut conn, "SELECT pg_backend_pid()").await;
            let mut killer = login(&cluster).await.unwrap();
            query(&mut killer, &format!("SELECT pg_terminate_backend({pid})")).await;
            let error = check(&mut conn, SECOND).await.unwrap_err();
            // PostgreSQL says FATAL 57P01 before it closes, or the write already fails.
            assert!(
                matches!(
                    error,
                    ResetError::Refused(_) | ResetError::Closed | ResetError::Io(_)
                ),
                "{error:?}"
            );
            terminate(killer, SECOND).await;
        })
        .await;
    }

    /// A connection to a scripted backend: the test reads what is sent and writes replies.
    fn scripted() -> (BackendConn, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let conn = BackendConn {
            stream: Box::new(ours),
            buffered: BytesMut::new(),
            parameters: Vec::new(),
            key: None,
            status: TransactionStatus::Idle,
            address: Address::Tcp("scripted".to_owned(), 5432),
            notices: Vec::new(),
        };
        (conn, theirs)
    }

    fn encode(messages: &[BackendMessage]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for message in messages {
            message.encode(&mut out).unwrap();
        }
        out.to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_backend_fails_the_check_at_its_timeout() {
        let (mut conn, mut backend) = scripted();
        let started = tokio::time::Instant::now();
        let error = check(&mut conn, SECOND).await.unwrap_err();
        assert!(
            matches!(error, ResetError::Timeout { what: "check", .. }),
            "{error:?}"
        );
        assert_eq!(started.elapsed(), SECOND);
        // It was asked an empty query.
        let mut sent = [0u8; 6];
        backend.read_exact(&mut sent).await.unwrap();
        assert_eq!(&sent, b"Q\0\0\0\x05\0");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_fails_on_copy_or_unread_bytes_and_passes_notices_by() {
        let (mut conn, mut backend) = scripted();
        let notice = ErrorResponse::new(Severity::Notice, SqlState::WARNING, "hello");
        backend
            .write_all(&encode(&[
                BackendMessage::NoticeResponse(notice),
                BackendMessage::CommandComplete {
                    tag: "DISCARD ALL".to_owned(),
                },
                BackendMessage::ReadyForQuery(TransactionStatus::Idle),
            ]))
            .await
            .unwrap();
        reset(&mut conn, DEFAULT_RESET, SECOND).await.unwrap();
        backend
            .write_all(&encode(&[BackendMessage::EmptyQueryResponse]))
            .await
            .unwrap();
        // The check is answered without its ReadyForQuery yet: bytes are left unread.
        let error = check(&mut conn, SECOND).await.unwrap_err();
        assert!(matches!(error, ResetError::Timeout { .. }), "{error:?}");
        conn.buffered.extend_from_slice(b"Z\0\0\0\x05I");
        assert!(matches!(
            reset(&mut conn, DEFAULT_RESET, SECOND).await,
            Err(ResetError::Unread(6))
        ));
        let (mut conn, mut backend) = scripted();
        backend.write_all(b"G\0\0\0\x07\0\0\0").await.unwrap();
        let error = reset(&mut conn, "COPY t FROM STDIN", SECOND)
            .await
            .unwrap_err();
        assert!(matches!(error, ResetError::Protocol(_)), "{error:?}");
    }
}
