//! The backend connector: reach a PostgreSQL server (TCP or Unix socket, optional PROXY v2
//! header, TLS per `sslmode`), send the mapped startup message and log in with cleartext, md5
//! or SCRAM-SHA-256(-PLUS), up to the first ReadyForQuery.

use crate::metrics::{Metrics, Outcome};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pgbastion_auth::md5::{is_md5_hash, md5_client_response, md5_salted_response};
use pgbastion_auth::scram::{
    signature_hash, tls_server_end_point, ChannelBinding, ClientCredential, ClientKeys, Key,
    SaltedKeyCache, ScramClient, ScramClientKeysNeeded,
};
use pgbastion_wire::{
    Authentication, BackendMessage, CancelKey, ErrorResponse, FrameDecoder, PasswordMessage,
    ProtocolVersion, SaslInitialResponse, SaslResponse, Severity, SqlState, StartupMessage,
    StartupPacket, TransactionStatus,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::backend_socket::BackendSocket;
use crate::kdf::Kdf;
use crate::login_plan::LoginPlan;
use crate::target::{Address, SslMode};
use crate::tls_client::TlsClients;

/// A byte stream to a backend.
pub trait BackendIo: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Registers the stream's socket with the calling thread's runtime (see
    /// [`BackendSocket::rehome`]); a stream that is no runtime's socket has nothing to move.
    fn rehome(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BackendIo for BackendSocket {
    fn rehome(&mut self) -> std::io::Result<()> {
        BackendSocket::rehome(self)
    }
}

impl BackendIo for tokio_rustls::client::TlsStream<BackendSocket> {
    fn rehome(&mut self) -> std::io::Result<()> {
        self.get_mut().0.rehome()
    }
}

/// In-memory streams, for tests of what is said to a backend.
#[cfg(test)]
impl BackendIo for tokio::io::DuplexStream {}

/// The largest message accepted from a backend during login.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// How the proxy proves itself to the backend. `Debug` shows which kind, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum BackendSecret {
    /// A password (from the URL, the client on passthrough routes, or an authenticator).
    Password(String),
    /// SCRAM keys recovered from the client's proof (auth_query pass-through).
    ScramKeys {
        /// The client's `ClientKey`.
        client_key: Key,
        /// The `ServerKey` of the verifier the client proved itself against.
        server_key: Key,
    },
}

impl std::fmt::Debug for BackendSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password(_) => f.write_str("Password(<redacted>)"),
            Self::ScramKeys { .. } => f.write_str("ScramKeys(<redacted>)"),
        }
    }
}

/// A logged-in backend connection, at its first ReadyForQuery.
pub struct BackendConn {
    /// The stream.
    pub stream: Box<dyn BackendIo>,
    /// Bytes read past ReadyForQuery (normally none).
    pub buffered: BytesMut,
    /// The backend's ParameterStatus values, in order.
    pub parameters: Vec<(String, String)>,
    /// The backend's cancel key.
    pub key: Option<CancelKey>,
    /// Transaction status at ReadyForQuery.
    pub status: TransactionStatus,
    /// The address connected to (where cancel requests go).
    pub address: Address,
    /// NoticeResponses sent during login (relayed to the client).
    pub notices: Vec<ErrorResponse>,
}

impl BackendConn {
    /// Where a cancel request for this backend goes, with its own key.
    pub fn cancel_key(&self) -> Option<crate::cancel::BackendKey> {
        Some(crate::cancel::BackendKey {
            address: self.address.clone(),
            key: self.key.clone()?,
        })
    }

    /// Whether the backend has closed the connection, or sent something unasked, while it
    /// sat idle: a look at the socket that never waits (a connection with nothing to read
    /// is taken to be alive).
    pub fn looks_closed(&mut self) -> bool {
        if !self.buffered.is_empty() {
            return true;
        }
        let mut byte = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut byte);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        !std::pin::Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }
}

/// Why the backend could not be used. [`BackendError::to_client`] is what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// TCP/Unix connect failed.
    #[error("could not connect to the backend {address}: {source}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The whole connect + login took too long.
    #[error("the backend {0} did not complete login in time")]
    Timeout(String),
    /// TLS could not be set up as `sslmode` demands.
    #[error("TLS to the backend {address}: {message}")]
    Tls {
        /// Where.
        address: String,
        /// Why.
        message: String,
    },
    /// The backend refused (its own ErrorResponse).
    #[error("backend: {}", .0.message())]
    Refused(ErrorResponse),
    /// The backend asked for a secret the route does not have, or a method we do not do.
    #[error("backend authentication: {0}")]
    Auth(String),
    /// The backend broke the protocol or the connection.
    #[error("backend protocol: {0}")]
    Protocol(String),
}

impl BackendError {
    /// The ErrorResponse for the client: the backend's own error when it sent one (with its
    /// SQLSTATE), else 08001 (could not connect) or 08006 (connection failure). Our own
    /// messages leave out the backend's address and file paths (the client need not learn
    /// the network behind the proxy); the log line of the failure has them.
    pub fn to_client(&self) -> ErrorResponse {
        let unable = SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION;
        let (state, message) = match self {
            Self::Refused(response) => return response.clone().into_fatal(),
            Self::Connect { source, .. } => (
                unable,
                format!("could not connect to the backend: {}", source.kind()),
            ),
            Self::Timeout(_) => (
                unable,
                "the backend did not complete login in time".to_owned(),
            ),
            Self::Tls { .. } => (
                unable,
                "could not set up TLS to the backend as the route's sslmode requires \
                 (pgbastion's log has the details)"
                    .to_owned(),
            ),
            Self::Auth(_) => (unable, self.to_string()),
            Self::Protocol(_) => (SqlState::CONNECTION_FAILURE, self.to_string()),
        };
        ErrorResponse::new(Severity::Fatal, state, message)
    }
}

impl From<std::io::Error> for BackendError {
    fn from(error: std::io::Error) -> Self {
        Self::Protocol(error.to_string())
    }
}

/// What backend logins share: TLS client configurations, derived SCRAM keys, and the
/// threads and limit for deriving new ones.
#[derive(Debug)]
pub struct Connector {
    tls: TlsClients,
    scram_keys: Arc<SaltedKeyCache>,
    kdf: Kdf,
    max_scram_iterations: u32,
    metrics: Arc<Metrics>,
}

impl Connector {
    /// A connector whose relative certificate paths start at `base_dir`, deriving SCRAM keys
    /// on `kdf` for backends that ask for at most `max_scram_iterations`, counting its logins
    /// in `metrics`.
    pub fn new(
        base_dir: std::path::PathBuf,
        kdf: Kdf,
        max_scram_iterations: u32,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            tls: TlsClients::new(base_dir),
            scram_keys: Arc::new(SaltedKeyCache::default()),
            kdf,
            max_scram_iterations,
            metrics,
        }
    }

    /// Makes the next backend logins read their TLS certificate and key files again.
    pub fn reread_tls_files(&self) {
        self.tls.forget();
    }

    /// Carries out `plan`: connects and logs in.
    pub async fn connect(&self, plan: &LoginPlan) -> Result<BackendConn, BackendError> {
        let address = plan.address.to_string();
        let work = connect_inner(plan, self);
        let result = tokio::time::timeout(plan.timeout, work)
            .await
            .map_err(|_| BackendError::Timeout(address))
            .and_then(|connected| connected);
        self.metrics.backend_connect(Outcome::of(result.is_ok()));
        result
    }

    /// The keys for a SCRAM login: refused when the backend asks for more iterations than
    /// allowed (before any run: a hostile or misconfigured backend cannot make us spend
    /// minutes of CPU), from the cache when there, else derived on the PBKDF2 threads so
    /// that this session's thread keeps serving the others (and the login timeout runs).
    async fn scram_keys(
        &self,
        pending: &ScramClientKeysNeeded,
    ) -> Result<ClientKeys, BackendError> {
        let asked = pending.iterations();
        if asked > self.max_scram_iterations {
            return Err(BackendError::Auth(format!(
                "backend asked for {asked} SCRAM iterations, more than max_scram_iterations ({})",
                self.max_scram_iterations
            )));
        }
        let derivation = pending.key_derivation();
        if let Some(keys) = derivation.without_pbkdf2() {
            return Ok(keys);
        }
        self.kdf
            .run(move || derivation.derive())
            .await
            .map_err(|e| BackendError::Auth(e.to_string()))
    }
}

async fn connect_inner(
    plan: &LoginPlan,
    connector: &Connector,
) -> Result<BackendConn, BackendError> {
    let address = plan.address.to_string();
    let connect_error = |source| BackendError::Connect {
        address: address.clone(),
        source,
    };
    let (stream, binding): (Box<dyn BackendIo>, _) = match &plan.address {
        Address::Tcp(host, port) => {
            let tcp = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(connect_error)?;
            tcp.set_nodelay(true).map_err(connect_error)?;
            let mut tcp = tcp;
            if let Some(client) = plan.proxy_from {
                let destination = tcp.peer_addr().map_err(connect_error)?;
                let header = pgbastion_gateway::proxy_protocol::encode_v2(client, destination)
                    .map_err(|e| BackendError::Protocol(e.to_string()))?;
                tcp.write_all(&header).await?;
            }
            negotiate_tls(tcp, plan, &connector.tls, &address).await?
        }
        Address::Unix(path) => {
            let unix = UnixStream::connect(path).await.map_err(connect_error)?;
            (Box::new(BackendSocket::Unix(unix)), None)
        }
    };
    let mut stream = stream;
    let mut startup = StartupMessage::new(ProtocolVersion::V3_0)
        .with_param("user", plan.user.as_str())
        .with_param("database", plan.database.as_str());
    for (name, value) in plan.startup_parameters() {
        startup = startup.with_param(name, value);
    }
    let mut out = BytesMut::new();
    StartupPacket::Startup(startup)
        .encode(&mut out)
        .map_err(|e| BackendError::Protocol(e.to_string()))?;
    stream.write_all(&out).await?;
    let mut session = LoginSession {
        stream,
        buf: BytesMut::with_capacity(4096),
        decoder: FrameDecoder::new(MAX_LOGIN_MESSAGE),
    };
    session.authenticate(plan, binding, connector).await?;
    session.finish(plan.address.clone()).await
}

async fn negotiate_tls(
    mut tcp: TcpStream,
    plan: &LoginPlan,
    tls: &TlsClients,
    address: &str,
) -> Result<(Box<dyn BackendIo>, Option<Vec<u8>>), BackendError> {
    let sslmode = plan.tls.sslmode;
    if matches!(sslmode, SslMode::Disable | SslMode::Allow) {
        return Ok((Box::new(BackendSocket::Tcp(tcp)), None));
    }
    let mut request = BytesMut::new();
    StartupPacket::SslRequest
        .encode(&mut request)
        .map_err(|e| BackendError::Protocol(e.to_string()))?;
    tcp.write_all(&request).await?;
    let answer = tcp.read_u8().await?;
    let tls_error = |message: String| BackendError::Tls {
        address: address.to_owned(),
        message,
    };
    match answer {
        b'S' => {}
        b'N' if sslmode == SslMode::Prefer => return Ok((Box::new(BackendSocket::Tcp(tcp)), None)),
        b'N' => {
            return Err(tls_error(format!(
                "the server does not support TLS, and sslmode={sslmode:?} requires it"
            )))
        }
        other => {
            return Err(BackendError::Protocol(format!(
                "unexpected answer {other:#x} to SSLRequest"
            )))
        }
    }
    let stream = tls
        .handshake(BackendSocket::Tcp(tcp), &plan.address, &plan.tls)
        .await
        .map_err(tls_error)?;
    let binding = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| channel_binding_for(cert));
    Ok((Box::new(stream), binding))
}

struct LoginSession {
    stream: Box<dyn BackendIo>,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl LoginSession {
    async fn read(&mut self) -> Result<BackendMessage, BackendError> {
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| BackendError::Protocol(e.to_string()))?
            {
                return BackendMessage::decode(&frame)
                    .map_err(|e| BackendError::Protocol(e.to_string()));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(BackendError::Protocol(
                    "the backend closed the connection during login".to_owned(),
                ));
            }
        }
    }

    async fn send(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), pgbastion_wire::EncodeError>,
    ) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        encode(&mut out).map_err(|e| BackendError::Protocol(e.to_string()))?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn authenticate(
        &mut self,
        plan: &LoginPlan,
        binding: Option<Vec<u8>>,
        connector: &Connector,
    ) -> Result<(), BackendError> {
        let password = || match &plan.secret {
            Some(BackendSecret::Password(password)) => Ok(password.clone()),
            _ => Err(BackendError::Auth(
                "the backend asks for a password and the route has none (put one in the backend \
                 URL, or use auth = \"passthrough\")"
                    .to_owned(),
            )),
        };
        loop {
            let request = match self.read().await? {
                BackendMessage::Authentication(request) => request,
                BackendMessage::ErrorResponse(error) => return Err(BackendError::Refused(error)),
                BackendMessage::NegotiateProtocolVersion { .. } => continue,
                other => {
                    return Err(BackendError::Protocol(format!(
                        "expected authentication, got {:?}",
                        other.tag()
                    )))
                }
            };
            match request {
                Authentication::Ok => return Ok(()),
                Authentication::CleartextPassword => {
                    let password = password()?;
                    self.send(|out| PasswordMessage { password }.encode(out))
                        .await?;
                }
                Authentication::Md5Password { salt } => {
                    let password = password()?;
                    // An authenticator may hand over a stored md5 hash instead of a password.
                    let response = if is_md5_hash(&password) {
                        md5_salted_response(&password, salt)
                    } else {
                        md5_client_response(&plan.user, &password, salt)
                    };
                    self.send(|out| PasswordMessage { password: response }.encode(out))
                        .await?;
                }
                Authentication::Sasl { mechanisms } => {
                    self.scram(plan, &mechanisms, binding.clone(), connector)
                        .await?;
                }
                other => {
                    return Err(BackendError::Auth(format!(
                        "the backend asks for {other:?}, which pgbastion does not do"
                    )))
                }
            }
        }
    }

    async fn scram(
        &mut self,
        plan: &LoginPlan,
        mechanisms: &[String],
        binding: Option<Vec<u8>>,
        connector: &Connector,
    ) -> Result<(), BackendError> {
        let credential = match &plan.secret {
            Some(BackendSecret::Password(password)) => ClientCredential::CachedPassword {
                password: password.clone().into_bytes(),
                cache: connector.scram_keys.clone(),
            },
            Some(BackendSecret::ScramKeys {
                client_key,
                server_key,
            }) => ClientCredential::Keys {
                client_key: *client_key,
                server_key: Some(*server_key),
            },
            None => {
                return Err(BackendError::Auth(
                    "the backend asks for SCRAM and the route has no password".to_owned(),
                ))
            }
        };
        let plus_offered = mechanisms.iter().any(|m| m == "SCRAM-SHA-256-PLUS");
        let channel = match binding {
            Some(data) if plus_offered => ChannelBinding::TlsServerEndPoint(data),
            Some(_) => ChannelBinding::SupportedButNotUsed,
            None => ChannelBinding::NotSupported,
        };
        if !plus_offered && !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
            return Err(BackendError::Auth(format!(
                "the backend offers SASL mechanisms {mechanisms:?}, none of which pgbastion does"
            )));
        }
        let client = ScramClient::new(credential, channel);
        let initial = SaslInitialResponse {
            mechanism: client.mechanism().to_owned(),
            data: Some(Bytes::from(client.client_first_message())),
        };
        self.send(|out| initial.encode(out)).await?;
        let server_first = match self.read().await? {
            BackendMessage::Authentication(Authentication::SaslContinue(data)) => data,
            BackendMessage::ErrorResponse(error) => return Err(BackendError::Refused(error)),
            _ => return Err(BackendError::Protocol("expected SASLContinue".to_owned())),
        };
        let pending = client
            .read_server_first(&server_first)
            .map_err(|e| BackendError::Auth(format!("SCRAM: {e}")))?;
        let keys = connector.scram_keys(&pending).await?;
        let (state, client_final) = pending.answer(keys);
        self.send(|out| {
            SaslResponse {
                data: Bytes::from(client_final),
            }
            .encode(out)
        })
        .await?;
        let server_final = match self.read().await? {
            BackendMessage::Authentication(Authentication::SaslFinal(data)) => data,
            BackendMessage::ErrorResponse(error) => return Err(BackendError::Refused(error)),
            _ => return Err(BackendError::Protocol("expected SASLFinal".to_owned())),
        };
        state.verify_server_final(&server_final).map_err(|e| {
            BackendError::Auth(format!("SCRAM: the backend failed to prove itself: {e}"))
        })
    }

    async fn finish(mut self, address: Address) -> Result<BackendConn, BackendError> {
        let mut parameters = Vec::new();
        let mut key = None;
        let mut notices = Vec::new();
        loop {
            match self.read().await? {
                BackendMessage::ParameterStatus { name, value } => parameters.push((name, value)),
                BackendMessage::BackendKeyData(k) => key = Some(k),
                BackendMessage::NoticeResponse(notice) => notices.push(notice),
                BackendMessage::ErrorResponse(error) => return Err(BackendError::Refused(error)),
                BackendMessage::ReadyForQuery(status) => {
                    return Ok(BackendConn {
                        stream: self.stream,
                        buffered: self.buf,
                        parameters,
                        key,
                        status,
                        address,
                        notices,
                    })
                }
                other => {
                    return Err(BackendError::Protocol(format!(
                        "unexpected {:?} during login",
                        other.tag()
                    )))
                }
            }
        }
    }
}

/// Sends a CancelRequest for `key` to the backend at `address` (fire and forget, bounded by
/// `timeout`).
pub async fn send_cancel(
    address: &Address,
    key: &CancelKey,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut packet = BytesMut::new();
    StartupPacket::CancelRequest(key.clone())
        .encode(&mut packet)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let work = async {
        match address {
            Address::Tcp(host, port) => {
                let mut tcp = TcpStream::connect((host.as_str(), *port)).await?;
                tcp.write_all(&packet).await?;
                let _ = tcp.read(&mut [0u8; 1]).await;
            }
            Address::Unix(path) => {
                let mut unix = UnixStream::connect(path).await?;
                unix.write_all(&packet).await?;
                let _ = unix.read(&mut [0u8; 1]).await;
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel timed out"))?
}

/// `tls-server-end-point` data for a certificate, when its signature algorithm allows it.
pub fn channel_binding_for(cert_der: &[u8]) -> Option<Vec<u8>> {
    signature_hash(cert_der).map(|_| tls_server_end_point(cert_der))
}
