//! The relay: client and backend bytes copied both ways as they arrive (whole reads, no
//! per-message copies), with both streams scanned for message boundaries
//! ([`FrameScanner`]) so the proxy knows the transaction status, knows when the client has
//! said Terminate, and can end the client's stream with a proper ErrorResponse when the
//! backend dies, or at a message boundary when pgbastion shuts down ([`stop`]).

mod stop;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pgbastion_wire::{
    BackendMessage, Direction, ErrorResponse, FrameScanner, Severity, SqlState, TransactionStatus,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::drain::stopper::Stopper;
pub use stop::Stop;
use stop::{progress, Asked};

/// Read buffer size per direction.
const CHUNK: usize = 64 * 1024;

/// How long the backend may take to finish what the client asked for before its Terminate
/// (and to close) once the client has said Terminate.
const AFTER_TERMINATE: Duration = Duration::from_secs(5);

/// How a relayed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent Terminate (the backend closing afterwards is expected).
    Terminate,
    /// The client closed without Terminate, or could no longer be written to.
    Client,
    /// The backend closed or failed while the client still wanted it.
    Backend,
    /// The client sent a message with a length PostgreSQL refuses (it closes the connection
    /// on one too); what came before it was forwarded.
    BadLength,
    /// pgbastion shut down: the client was told 57P01 (at a message boundary).
    Shutdown,
}

impl End {
    /// A short word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Terminate => "terminate",
            End::Client => "client",
            End::Backend => "backend",
            End::BadLength => "invalid message length",
            End::Shutdown => "shutdown",
        }
    }
}

/// Totals of a relayed session.
#[derive(Debug, Clone, Copy)]
pub struct Relayed {
    /// Bytes from the client to the backend.
    pub client_bytes: u64,
    /// Bytes from the backend to the client.
    pub backend_bytes: u64,
    /// Who ended it.
    pub end: End,
    /// The last transaction status the backend reported.
    pub status: Option<TransactionStatus>,
}

/// Relays until either side ends, or `stop` says the session is drained. `client_pending`
/// and `backend_pending` are bytes already read from each side and not yet forwarded.
pub async fn relay<C, B>(
    client: C,
    client_pending: Bytes,
    backend: B,
    backend_pending: Bytes,
    stop: Option<Stop>,
) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut backend_read, mut backend_write) = tokio::io::split(backend);
    let mut up_bytes = 0u64;
    let mut down_bytes = 0u64;
    let mut up_scanner = FrameScanner::new(Direction::Frontend);
    let mut down_scanner = FrameScanner::new(Direction::Backend);
    let asked = Asked::default();
    let (watch, cancel) = stop.map_or((None, None), |stop| (Some(stop.watch), stop.cancel));
    let mut stopper = Stopper::new(watch);
    // Copied, so that the buffers the pending bytes are views of (the handshake's) are freed
    // now rather than held for the whole session.
    let (up_buf, down_buf) = (
        starting_buffer(client_pending),
        starting_buffer(backend_pending),
    );

    // Each direction returns the side that ended it.
    let up = async {
        let mut buf = up_buf;
        loop {
            if !buf.is_empty() {
                let (good, end) = match up_scanner.feed(&buf) {
                    Ok(()) => (&buf[..], None),
                    Err(bad) => (&buf[..bad.start], Some(End::BadLength)),
                };
                asked.writing(&up_scanner);
                if backend_write.write_all(good).await.is_err() {
                    return End::Backend;
                }
                asked.written(&up_scanner);
                up_bytes += good.len() as u64;
                if let Some(end) = end {
                    return end;
                }
                if up_scanner.terminated() {
                    // Nothing the client sends after Terminate means anything.
                    return End::Terminate;
                }
            }
            buf.clear();
            match client_read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return End::Client,
                Ok(_) => {}
            }
        }
    };
    let down = async {
        let mut buf = down_buf;
        loop {
            if !buf.is_empty() {
                // Backend lengths are not limited; the scanner only follows them.
                let _ = down_scanner.feed(&buf);
                if client_write.write_all(&buf).await.is_err() {
                    return End::Client;
                }
                down_bytes += buf.len() as u64;
            }
            buf.clear();
            let at = progress(&down_scanner, &asked);
            if stopper.should_end(at, cancel.as_ref()).await {
                return End::Shutdown;
            }
            tokio::select! {
                read = backend_read.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return End::Backend,
                    Ok(_) => {}
                },
                () = stopper.wake(Some(&asked.moved)) => {}
            }
        }
    };
    let mut end = {
        tokio::pin!(up, down);
        let end = tokio::select! {
            end = &mut up => end,
            end = &mut down => end,
        };
        if end == End::Terminate {
            // The client may have pipelined queries before its Terminate and read their
            // answers until EOF: keep relaying what the backend still sends until it closes,
            // as PostgreSQL itself would, and never add an error of ours.
            let _ = tokio::time::timeout(AFTER_TERMINATE, &mut down).await;
        }
        end
    };
    if end == End::Backend && up_scanner.terminated() {
        end = End::Terminate;
    }
    match end {
        End::Backend => {
            if down_scanner.at_boundary() && down_scanner.last_tag() != Some(b'E') {
                // Tell the client why, unless the backend did (its FATAL is the last
                // message) or a message is cut in half (then closing is all that is left).
                let lost = fatal(
                    SqlState::CONNECTION_FAILURE,
                    "the connection to the backend was lost",
                );
                let _ = client_write.write_all(&lost).await;
            }
            let _ = client_write.shutdown().await;
        }
        End::Terminate => {
            let _ = client_write.shutdown().await;
        }
        End::Client => {
            let _ = backend_write.shutdown().await;
        }
        End::Shutdown => {
            let goodbye = async {
                if down_scanner.at_boundary() {
                    let _ = client_write.write_all(&shutdown_notice()).await;
                }
                let _ = client_write.shutdown().await;
                if asked.at_rest(&up_scanner) {
                    let _ = backend_write.write_all(TERMINATE).await;
                }
                let _ = backend_write.shutdown().await;
            };
            // A client that does not read is not waited for.
            let _ = tokio::time::timeout(AFTER_TERMINATE, goodbye).await;
        }
        End::BadLength => {
            let _ = backend_write.shutdown().await;
            let _ = client_write
                .write_all(&fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    "invalid message length",
                ))
                .await;
            let _ = client_write.shutdown().await;
        }
    }
    Relayed {
        client_bytes: up_bytes,
        backend_bytes: down_bytes,
        end,
        status: down_scanner.status(),
    }
}

/// A Terminate message, for the backend of a session pgbastion ends.
const TERMINATE: &[u8] = b"X\0\0\0\x04";

/// What a client is told when pgbastion shuts down, in PostgreSQL's own words.
pub fn shutdown_error() -> ErrorResponse {
    ErrorResponse::new(
        Severity::Fatal,
        SqlState::ADMIN_SHUTDOWN,
        "terminating connection due to administrator command",
    )
}

/// [`shutdown_error`], encoded.
pub fn shutdown_notice() -> BytesMut {
    let mut out = BytesMut::new();
    // A fixed message always encodes; an empty buffer (nothing sent) is the fallback.
    let _ = BackendMessage::ErrorResponse(shutdown_error()).encode(&mut out);
    out
}

/// A direction's buffer, holding the bytes read before the relay began.
fn starting_buffer(pending: Bytes) -> BytesMut {
    let mut buf = BytesMut::with_capacity(CHUNK.max(pending.len()));
    buf.extend_from_slice(&pending);
    buf
}

/// A FATAL ErrorResponse, encoded.
fn fatal(code: SqlState, message: &str) -> BytesMut {
    let mut out = BytesMut::new();
    // A fixed message always encodes; an empty buffer (nothing sent) is the fallback.
    let _ = BackendMessage::ErrorResponse(ErrorResponse::new(Severity::Fatal, code, message))
        .encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    /// Runs the relay over in-memory pipes; returns the client's and backend's far ends.
    fn start() -> (
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<Relayed>,
    ) {
        let (client, client_far) = duplex(1 << 16);
        let (backend, backend_far) = duplex(1 << 16);
        let task = tokio::spawn(relay(client, Bytes::new(), backend, Bytes::new(), None));
        (client_far, backend_far, task)
    }

    async fn read_to_end(stream: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out));
        read.await.expect("EOF in time").expect("read");
        out
    }

    #[tokio::test]
    async fn nothing_is_sent_to_the_client_after_its_terminate() {
        let (mut client, mut backend, task) = start();
        client.write_all(b"X\0\0\0\x04").await.unwrap();
        let mut got = [0u8; 5];
        backend.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"X\0\0\0\x04");
        drop(backend);
        assert_eq!(read_to_end(&mut client).await, b"");
        assert_eq!(task.await.unwrap().end, End::Terminate);
    }

    #[tokio::test]
    async fn answers_to_queries_pipelined_before_terminate_still_reach_the_client() {
        let (mut client, mut backend, task) = start();
        client
            .write_all(b"Q\0\0\0\x0dSELECT 1\0X\0\0\0\x04")
            .await
            .unwrap();
        let mut got = vec![0u8; 19];
        backend.read_exact(&mut got).await.unwrap();
        backend.write_all(b"Z\0\0\0\x05I").await.unwrap();
        drop(backend);
        assert_eq!(read_to_end(&mut client).await, b"Z\0\0\0\x05I");
        assert_eq!(task.await.unwrap().end, End::Terminate);
    }

    #[tokio::test]
    async fn a_backend_that_dies_under_a_client_is_reported_with_a_fatal() {
        let (mut client, mut backend, task) = start();
        backend.write_all(b"Z\0\0\0\x05I").await.unwrap();
        drop(backend);
        let got = read_to_end(&mut client).await;
        assert!(got.starts_with(b"Z\0\0\0\x05IE"), "{got:?}");
        assert!(got.windows(5).any(|w| w == b"08006"));
        let relayed = task.await.unwrap();
        assert_eq!(relayed.end, End::Backend);
        assert_eq!(relayed.status, Some(TransactionStatus::Idle));
    }

    #[tokio::test]
    async fn a_drain_waits_for_the_transaction_then_says_57p01_and_terminates_the_backend() {
        let (client, mut client_far) = duplex(1 << 16);
        let (backend, mut backend_far) = duplex(1 << 16);
        let drain = crate::drain::Drain::default();
        let stop = Stop {
            watch: drain.watch(),
            cancel: None,
        };
        let task = tokio::spawn(relay(
            client,
            Bytes::new(),
            backend,
            Bytes::new(),
            Some(stop),
        ));
        // Inside a transaction: the drain lets the COMMIT through.
        client_far.write_all(b"Q\0\0\0\x0aBEGIN\0").await.unwrap();
        let mut got = vec![0u8; 11];
        backend_far.read_exact(&mut got).await.unwrap();
        backend_far.write_all(b"Z\0\0\0\x05T").await.unwrap();
        let mut ready = [0u8; 6];
        client_far.read_exact(&mut ready).await.unwrap();
        drain.start(Duration::from_secs(60));
        client_far.write_all(b"Q\0\0\0\x0bCOMMIT\0").await.unwrap();
        let mut got = vec![0u8; 12];
        backend_far.read_exact(&mut got).await.unwrap();
        assert!(!task.is_finished(), "ended inside the transaction");
        backend_far.write_all(b"Z\0\0\0\x05I").await.unwrap();
        let told = read_to_end(&mut client_far).await;
        assert!(told.starts_with(b"Z\0\0\0\x05IE"), "{told:?}");
        assert!(told.windows(5).any(|w| w == b"57P01"), "{told:?}");
        assert_eq!(read_to_end(&mut backend_far).await, b"X\0\0\0\x04");
        assert_eq!(task.await.unwrap().end, End::Shutdown);
    }

    #[tokio::test]
    async fn a_client_message_with_a_length_postgresql_refuses_ends_the_session_with_08p01() {
        let (mut client, mut backend, task) = start();
        client
            .write_all(b"S\0\0\0\x04Q\x7f\xff\xff\xffSELECT")
            .await
            .unwrap();
        let got = read_to_end(&mut client).await;
        assert!(got.starts_with(b"E"), "{got:?}");
        assert!(got.windows(5).any(|w| w == b"08P01"), "{got:?}");
        let mut forwarded = Vec::new();
        backend.read_to_end(&mut forwarded).await.unwrap();
        assert_eq!(forwarded, b"S\0\0\0\x04", "only what came before it");
        assert_eq!(task.await.unwrap().end, End::BadLength);
    }
}
