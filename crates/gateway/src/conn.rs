//! [`ClientConn`]: a client connection's stream, buffers and state, with the helpers hooks
//! use to talk to the client.

use bytes::{Bytes, BytesMut};
use pgbastion_wire::{
    BackendMessage, CancelKey, DataRow, ErrorResponse, FieldDescription, Frame, FrameDecoder,
    StartupPacket, TransactionStatus,
};
use std::future::Future;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use crate::error::GatewayError;
use crate::state::ConnectionState;
use crate::stream::{ClientStream, Rewind};

/// The streams a gateway can serve: TCP, Unix sockets, in-memory duplexes.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for T {}

/// The OID of PostgreSQL's `text` type.
const TEXT_OID: u32 = 25;

/// How much we ask the socket for at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A client connection: its stream (plain or TLS), read and write buffers, and state.
#[derive(Debug)]
pub struct ClientConn<S> {
    /// `None` only while a TLS upgrade holds the stream (and after a failed one).
    stream: Option<ClientStream<S>>,
    /// Every wait on the client ends at this instant (set while authenticating).
    deadline: Option<Instant>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    state: ConnectionState,
}

/// A connection handed back raw: the stream and any bytes already read from it but not
/// processed, which the new owner must treat as the start of the stream.
#[derive(Debug)]
pub struct Detached<S> {
    /// The stream (plain or TLS).
    pub stream: ClientStream<S>,
    /// Bytes read from the client and not processed.
    pub buffered: Bytes,
    /// What was learned before detaching.
    pub state: ConnectionState,
}

impl<S: ClientIo> ClientConn<S> {
    /// Wraps a freshly accepted stream.
    pub fn new(io: S, state: ConnectionState) -> Self {
        Self {
            stream: Some(ClientStream::Plain(Rewind::new(io))),
            deadline: None,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(READ_CHUNK),
            state,
        }
    }

    /// What is known about the connection.
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// Mutable access to the state (e.g. to record the authenticated user).
    pub fn state_mut(&mut self) -> &mut ConnectionState {
        &mut self.state
    }

    /// Bytes read from the client but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.read_buf
    }

    pub(crate) fn read_buf_mut(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// Takes the stream out for an upgrade, with the unread bytes it must replay.
    pub(crate) fn take_stream(&mut self) -> Result<(ClientStream<S>, Bytes), GatewayError> {
        let stream = self.stream.take().ok_or(GatewayError::Closed)?;
        Ok((stream, self.read_buf.split().freeze()))
    }

    pub(crate) fn put_stream(&mut self, stream: ClientStream<S>) {
        self.stream = Some(stream);
    }

    /// Bounds every later wait on the client by `deadline` (`None`: no bound).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The current deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Reads more bytes into the read buffer; `Ok(0)` at end of stream.
    pub async fn fill(&mut self) -> Result<usize, GatewayError> {
        self.read_buf.reserve(READ_CHUNK);
        let deadline = self.deadline;
        let stream = self.stream.as_mut().ok_or(GatewayError::Closed)?;
        Ok(bounded(deadline, stream.read_buf(&mut self.read_buf)).await??)
    }

    /// Reads one startup-phase packet (StartupMessage, SSLRequest, GSSENCRequest or
    /// CancelRequest), at most 10 000 bytes as PostgreSQL allows. `None` at end of stream.
    pub async fn read_startup_packet(&mut self) -> Result<Option<StartupPacket>, GatewayError> {
        loop {
            if let Some(packet) = StartupPacket::split(
                &mut self.read_buf,
                pgbastion_wire::limits::MAX_STARTUP_PACKET_LEN,
            )? {
                return Ok(Some(packet));
            }
            if self.fill().await? == 0 {
                return end_of_stream(&self.read_buf);
            }
        }
    }

    /// Reads one client message: at most `max_len` bytes and at most what PostgreSQL accepts
    /// for its type (10 000 bytes for Sync, Describe and the like). `None` at end of stream.
    pub async fn read_frame(&mut self, max_len: usize) -> Result<Option<Frame>, GatewayError> {
        let decoder = FrameDecoder::frontend(max_len);
        loop {
            if let Some(frame) = decoder.decode(&mut self.read_buf)? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                return end_of_stream(&self.read_buf);
            }
        }
    }

    /// Queues a message for the client (sent at the next [`flush`](Self::flush)).
    pub fn send(&mut self, message: &BackendMessage) -> Result<(), GatewayError> {
        message.encode(&mut self.write_buf)?;
        Ok(())
    }

    /// Queues raw bytes (already-encoded messages) for the client.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.write_buf.extend_from_slice(bytes);
    }

    /// Queues an ErrorResponse.
    pub fn send_error(&mut self, error: ErrorResponse) -> Result<(), GatewayError> {
        self.send(&BackendMessage::ErrorResponse(error))
    }

    /// Queues a ParameterStatus.
    pub fn send_parameter_status(&mut self, name: &str, value: &str) -> Result<(), GatewayError> {
        self.send(&BackendMessage::ParameterStatus {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }

    /// Queues a BackendKeyData (the key is 4 bytes for protocol 3.0, up to 256 for 3.2).
    pub fn send_backend_key_data(
        &mut self,
        process_id: u32,
        secret_key: Bytes,
    ) -> Result<(), GatewayError> {
        self.send(&BackendMessage::BackendKeyData(CancelKey::new(
            process_id, secret_key,
        )))
    }

    /// Queues a ReadyForQuery.
    pub fn send_ready_for_query(&mut self, status: TransactionStatus) -> Result<(), GatewayError> {
        self.send(&BackendMessage::ReadyForQuery(status))
    }

    /// Queues a whole query result with `text` columns: RowDescription, one DataRow per row
    /// (`None` is NULL) and CommandComplete `SELECT <rows>`.
    pub fn send_text_rows<'r>(
        &mut self,
        columns: &[&str],
        rows: impl IntoIterator<Item = &'r [Option<&'r str>]>,
    ) -> Result<(), GatewayError> {
        let fields = columns
            .iter()
            .map(|name| FieldDescription {
                name: (*name).to_owned(),
                table_oid: 0,
                column_id: 0,
                type_oid: TEXT_OID,
                type_size: -1,
                type_modifier: -1,
                format: 0,
            })
            .collect();
        self.send(&BackendMessage::RowDescription { fields })?;
        let mut count = 0usize;
        for row in rows {
            let values = row.iter().map(|v| v.map(str::as_bytes));
            self.send(&BackendMessage::DataRow(DataRow::new(values)?))?;
            count += 1;
        }
        self.send(&BackendMessage::CommandComplete {
            tag: format!("SELECT {count}"),
        })
    }

    /// Bytes queued for the client and not yet flushed.
    pub fn pending_output(&self) -> usize {
        self.write_buf.len()
    }

    /// Writes everything queued to the client.
    pub async fn flush(&mut self) -> Result<(), GatewayError> {
        let deadline = self.deadline;
        let stream = self.stream.as_mut().ok_or(GatewayError::Closed)?;
        bounded(deadline, async {
            stream.write_all(&self.write_buf).await?;
            stream.flush().await
        })
        .await??;
        self.write_buf.clear();
        Ok(())
    }

    /// Ends the connection politely after a final message: flushes, sends TLS close_notify
    /// and FIN, then reads (and discards) what the client already sent, for at most 250 ms
    /// and 64 KiB. Closing a socket with unread bytes makes the kernel send a reset, which can
    /// destroy the error message in flight before the client reads it.
    pub async fn close_gracefully(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let drain = async {
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 4096];
            let mut left = 64 * 1024usize;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_millis(250), drain).await;
    }

    /// Gives up protocol processing and returns the raw stream with unread bytes.
    pub fn detach(self) -> Result<Detached<S>, GatewayError> {
        Ok(Detached {
            stream: self.stream.ok_or(GatewayError::Closed)?,
            buffered: self.read_buf.freeze(),
            state: self.state,
        })
    }
}

/// Runs `work`, failing with [`GatewayError::Timeout`] at `deadline`.
pub(crate) async fn bounded<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = T>,
) -> Result<T, GatewayError> {
    match deadline {
        Some(at) => timeout_at(at, work)
            .await
            .map_err(|_| GatewayError::Timeout),
        None => Ok(work.await),
    }
}

fn end_of_stream<T>(buffered: &BytesMut) -> Result<Option<T>, GatewayError> {
    if buffered.is_empty() {
        Ok(None)
    } else {
        Err(GatewayError::UnexpectedEof)
    }
}
