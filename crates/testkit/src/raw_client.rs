//! A PostgreSQL client built only on `pgbastion-wire` and `pgbastion-auth`, over a plain
//! tokio TCP stream: it proves the codec against real servers and sends the hostile input
//! that real drivers never would.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pgbastion_auth::md5::md5_client_response;
use pgbastion_auth::scram::{ChannelBinding, ClientCredential, ScramClient};
use pgbastion_wire::{
    Authentication, BackendMessage, CancelKey, ErrorResponse, FrameDecoder, FrontendMessage,
    PasswordMessage, ProtocolVersion, SaslInitialResponse, SaslResponse, StartupMessage,
    StartupPacket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single read waits before the test fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum RawClientError {
    /// Socket I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that do not decode.
    #[error("decode: {0}")]
    Decode(#[from] pgbastion_wire::DecodeError),
    /// A message could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] pgbastion_wire::EncodeError),
    /// The SCRAM exchange failed on our side.
    #[error("SCRAM: {0}")]
    Scram(#[from] pgbastion_auth::scram::ScramError),
    /// The server answered with an ErrorResponse.
    #[error("server error: {0}")]
    Server(ErrorResponse),
    /// Nothing arrived within [`READ_TIMEOUT`].
    #[error("timed out waiting for the server")]
    Timeout,
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
    /// Something arrived that this client did not expect.
    #[error("unexpected: {0}")]
    Unexpected(String),
}

impl RawClientError {
    /// The server's error, if that is what this is.
    pub fn server_error(&self) -> Option<&ErrorResponse> {
        match self {
            Self::Server(e) => Some(e),
            _ => None,
        }
    }
}

/// A connection speaking the protocol message by message.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    decoder: FrameDecoder,
    /// The BackendKeyData the server sent.
    pub backend_key: Option<CancelKey>,
    /// ParameterStatus values received during startup.
    pub parameters: Vec<(String, String)>,
}

impl RawClient {
    /// Opens a TCP connection.
    pub async fn connect(addr: SocketAddr) -> Result<Self, RawClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::new(pgbastion_wire::limits::PQ_LARGE_MESSAGE_LIMIT),
            backend_key: None,
            parameters: Vec::new(),
        })
    }

    /// Connects, sends a protocol 3.0 StartupMessage and authenticates with `password`
    /// (cleartext, md5 or SCRAM-SHA-256, whatever the server asks), then waits for
    /// ReadyForQuery.
    pub async fn startup(
        addr: SocketAddr,
        user: &str,
        database: &str,
        password: Option<&str>,
    ) -> Result<Self, RawClientError> {
        let mut client = Self::connect(addr).await?;
        client
            .send_startup(&[("user", user), ("database", database)])
            .await?;
        client.authenticate(user, password).await?;
        Ok(client)
    }

    /// Sends a protocol 3.0 StartupMessage with `params`.
    pub async fn send_startup(&mut self, params: &[(&str, &str)]) -> Result<(), RawClientError> {
        let startup = StartupMessage {
            version: ProtocolVersion::V3_0,
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        self.send_packet(&StartupPacket::Startup(startup)).await
    }

    /// Sends any startup-phase packet.
    pub async fn send_packet(&mut self, packet: &StartupPacket) -> Result<(), RawClientError> {
        packet.encode(&mut self.out)?;
        self.flush().await
    }

    /// Queues a message (sent by [`flush`](Self::flush)), so tests can pipeline.
    pub fn queue(&mut self, message: &FrontendMessage) -> Result<(), RawClientError> {
        message.encode(&mut self.out)?;
        Ok(())
    }

    /// Sends one message now.
    pub async fn send(&mut self, message: &FrontendMessage) -> Result<(), RawClientError> {
        self.queue(message)?;
        self.flush().await
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), RawClientError> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Writes raw bytes (for hostile-input tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), RawClientError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Reads one byte (the answer to SSLRequest or GSSENCRequest).
    pub async fn read_byte(&mut self) -> Result<u8, RawClientError> {
        if !self.buf.is_empty() {
            return Ok(self.buf.split_to(1)[0]);
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut byte)).await {
            Err(_) => Err(RawClientError::Timeout),
            Ok(Ok(0)) => Err(RawClientError::Closed),
            Ok(Ok(_)) => Ok(byte[0]),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Reads and decodes the next message.
    pub async fn read(&mut self) -> Result<BackendMessage, RawClientError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(BackendMessage::decode(&frame)?);
            }
            self.buf.reserve(64 * 1024);
            let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf));
            match read.await {
                Err(_) => return Err(RawClientError::Timeout),
                Ok(Ok(0)) => return Err(RawClientError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Reads messages up to and including ReadyForQuery.
    pub async fn read_until_ready(&mut self) -> Result<Vec<BackendMessage>, RawClientError> {
        let mut messages = Vec::new();
        loop {
            let message = self.read().await?;
            let done = matches!(message, BackendMessage::ReadyForQuery(_));
            messages.push(message);
            if done {
                return Ok(messages);
            }
        }
    }

    /// Sends a simple Query and returns everything up to ReadyForQuery.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<BackendMessage>, RawClientError> {
        self.send(&FrontendMessage::Query(sql.to_owned())).await?;
        self.read_until_ready().await
    }

    /// Answers the server's authentication requests until AuthenticationOk, then collects
    /// ParameterStatus and BackendKeyData up to ReadyForQuery. An ErrorResponse ends it.
    pub async fn authenticate(
        &mut self,
        user: &str,
        password: Option<&str>,
    ) -> Result<(), RawClientError> {
        let need_password = || {
            password.ok_or_else(|| RawClientError::Unexpected("server asked for a password".into()))
        };
        loop {
            match self.read().await? {
                BackendMessage::Authentication(Authentication::Ok) => break,
                BackendMessage::Authentication(Authentication::CleartextPassword) => {
                    self.send_password(need_password()?.to_owned()).await?;
                }
                BackendMessage::Authentication(Authentication::Md5Password { salt }) => {
                    let response = md5_client_response(user, need_password()?, salt);
                    self.send_password(response).await?;
                }
                BackendMessage::Authentication(Authentication::Sasl { mechanisms }) => {
                    self.scram(need_password()?, &mechanisms).await?;
                }
                BackendMessage::ErrorResponse(e) => return Err(RawClientError::Server(e)),
                BackendMessage::NegotiateProtocolVersion { .. } => {}
                other => return Err(RawClientError::Unexpected(format!("{other:?}"))),
            }
        }
        self.finish_startup().await
    }

    async fn send_password(&mut self, password: String) -> Result<(), RawClientError> {
        PasswordMessage { password }.encode(&mut self.out)?;
        self.flush().await
    }

    async fn scram(&mut self, password: &str, mechanisms: &[String]) -> Result<(), RawClientError> {
        if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
            return Err(RawClientError::Unexpected(format!(
                "mechanisms {mechanisms:?}"
            )));
        }
        let client = ScramClient::new(
            ClientCredential::Password(password.as_bytes().to_vec()),
            ChannelBinding::NotSupported,
        );
        SaslInitialResponse {
            mechanism: client.mechanism().to_owned(),
            data: Some(client.client_first_message().into()),
        }
        .encode(&mut self.out)?;
        self.flush().await?;
        let server_first = self.sasl_data().await?;
        let (client, client_final) = client.handle_server_first(&server_first)?;
        SaslResponse {
            data: client_final.into(),
        }
        .encode(&mut self.out)?;
        self.flush().await?;
        let server_final = self.sasl_data().await?;
        Ok(client.verify_server_final(&server_final)?)
    }

    async fn sasl_data(&mut self) -> Result<Bytes, RawClientError> {
        match self.read().await? {
            BackendMessage::Authentication(Authentication::SaslContinue(data))
            | BackendMessage::Authentication(Authentication::SaslFinal(data)) => Ok(data),
            BackendMessage::ErrorResponse(e) => Err(RawClientError::Server(e)),
            other => Err(RawClientError::Unexpected(format!("{other:?}"))),
        }
    }

    async fn finish_startup(&mut self) -> Result<(), RawClientError> {
        loop {
            match self.read().await? {
                BackendMessage::ParameterStatus { name, value } => {
                    self.parameters.push((name, value))
                }
                BackendMessage::BackendKeyData(key) => self.backend_key = Some(key),
                BackendMessage::ReadyForQuery(_) => return Ok(()),
                BackendMessage::NoticeResponse(_) => {}
                BackendMessage::ErrorResponse(e) => return Err(RawClientError::Server(e)),
                other => return Err(RawClientError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// Sends a CancelRequest for this connection's backend key over a new connection to
    /// `addr`, then waits (as libpq and asyncpg do) until the server closes that connection:
    /// PostgreSQL closes it only after it has signalled the backend.
    pub async fn cancel(&self, addr: SocketAddr) -> Result<(), RawClientError> {
        let key = self
            .backend_key
            .clone()
            .ok_or_else(|| RawClientError::Unexpected("no BackendKeyData".into()))?;
        let mut canceller = Self::connect(addr).await?;
        canceller
            .send_packet(&StartupPacket::CancelRequest(key))
            .await?;
        let mut rest = Vec::new();
        canceller.stream.read_to_end(&mut rest).await?;
        Ok(())
    }
}
