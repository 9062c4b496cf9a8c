//! The relay: client and backend bytes copied both ways as they arrive (whole reads, no
//! per-message copies), with the backend's stream scanned for message boundaries so the
//! proxy knows the transaction status and can end the client's stream with a proper
//! ErrorResponse when the backend dies.

use bytes::{Bytes, BytesMut};
use pgbastion_wire::{BackendMessage, ErrorResponse, Severity, SqlState, TransactionStatus};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read buffer size per direction.
const CHUNK: usize = 64 * 1024;

/// Tracks message boundaries in a byte stream without buffering it.
#[derive(Debug, Clone, Default)]
pub struct FrameScanner {
    header: [u8; 5],
    have: usize,
    remaining: usize,
    tag: u8,
    last_complete: u8,
    status: Option<TransactionStatus>,
}

impl FrameScanner {
    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(data.len());
                if self.tag == b'Z' && self.remaining == 1 {
                    self.status = TransactionStatus::from_byte(data[0]).ok();
                }
                self.remaining -= take;
                data = &data[take..];
                if self.remaining == 0 {
                    self.last_complete = self.tag;
                }
                continue;
            }
            let take = (5 - self.have).min(data.len());
            self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have == 5 {
                self.have = 0;
                self.tag = self.header[0];
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.remaining = (len as usize).saturating_sub(4);
                if self.remaining == 0 {
                    self.last_complete = self.tag;
                }
            }
        }
    }

    /// Whether the stream is between two messages.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// The status of the last ReadyForQuery seen.
    pub fn status(&self) -> Option<TransactionStatus> {
        self.status
    }

    /// The tag of the last complete message.
    pub fn last_tag(&self) -> u8 {
        self.last_complete
    }
}

/// How a relayed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed or sent Terminate.
    Client,
    /// The backend closed or failed.
    Backend,
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

/// Relays until either side ends. `client_pending` and `backend_pending` are bytes already
/// read from each side and not yet forwarded.
pub async fn relay<C, B>(
    client: C,
    client_pending: Bytes,
    backend: B,
    backend_pending: Bytes,
) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut backend_read, mut backend_write) = tokio::io::split(backend);
    let mut up_bytes = 0u64;
    let mut down_bytes = 0u64;
    let mut scanner = FrameScanner::default();

    // Each direction returns the side that ended it.
    let up = async {
        if !client_pending.is_empty() {
            if backend_write.write_all(&client_pending).await.is_err() {
                return End::Backend;
            }
            up_bytes += client_pending.len() as u64;
        }
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.clear();
            match client_read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return End::Client,
                Ok(_) => {}
            }
            if backend_write.write_all(&buf).await.is_err() {
                return End::Backend;
            }
            up_bytes += buf.len() as u64;
        }
    };
    let down = async {
        if !backend_pending.is_empty() {
            scanner.feed(&backend_pending);
            if client_write.write_all(&backend_pending).await.is_err() {
                return End::Client;
            }
            down_bytes += backend_pending.len() as u64;
        }
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.clear();
            match backend_read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return End::Backend,
                Ok(_) => {}
            }
            scanner.feed(&buf);
            if client_write.write_all(&buf).await.is_err() {
                return End::Client;
            }
            down_bytes += buf.len() as u64;
        }
    };
    let end = tokio::select! {
        end = up => end,
        end = down => end,
    };
    if end == End::Backend {
        // Tell the client why, unless the backend did (its FATAL is the last message) or a
        // message is cut in half (then closing is all that is left).
        if scanner.at_boundary() && scanner.last_tag() != b'E' {
            let mut out = BytesMut::new();
            let error = ErrorResponse::new(
                Severity::Fatal,
                SqlState::CONNECTION_FAILURE,
                "the connection to the backend was lost",
            );
            if BackendMessage::ErrorResponse(error)
                .encode(&mut out)
                .is_ok()
            {
                let _ = client_write.write_all(&out).await;
            }
        }
        let _ = client_write.shutdown().await;
    } else {
        let _ = backend_write.shutdown().await;
    }
    Relayed {
        client_bytes: up_bytes,
        backend_bytes: down_bytes,
        end,
        status: scanner.status(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_follows_messages_across_chunk_boundaries() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"C\0\0\0\x0dSELECT 1\0");
        stream.extend_from_slice(b"Z\0\0\0\x05T");
        stream.extend_from_slice(b"D\0\0\0\x06\0\0");
        for split in 0..stream.len() {
            let mut scanner = FrameScanner::default();
            scanner.feed(&stream[..split]);
            scanner.feed(&stream[split..]);
            assert_eq!(scanner.status(), Some(TransactionStatus::InTransaction));
            assert_eq!(scanner.last_tag(), b'D');
            assert!(scanner.at_boundary());
        }
        let mut scanner = FrameScanner::default();
        scanner.feed(&stream[..stream.len() - 1]);
        assert!(!scanner.at_boundary());
        assert_eq!(scanner.last_tag(), b'Z');
    }
}
