//! Everything before authentication: the PROXY header, the TLS upgrade (SSLRequest or
//! direct TLS), GSSENCRequest, CancelKey and the StartupMessage with protocol version
//! negotiation.

use pgbastion_wire::startup::{GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};
use pgbastion_wire::{BackendMessage, CancelKey, ProtocolVersion, StartupMessage, StartupPacket};
use tokio_rustls::TlsAcceptor;

use crate::config::GatewayConfig;
use crate::conn::{bounded, ClientConn, ClientIo};
use crate::error::GatewayError;
use crate::hooks::{Flow, Hooks};
use crate::proxy_protocol::{self, Detection, MAX_PROXY_HEADER_LEN};
use crate::state::{ClientInfo, Phase};
use crate::stream::{ClientStream, Rewind};
use crate::tls::{TlsConfig, TlsInfo, ALPN_POSTGRESQL};

/// The first byte of a TLS record carrying a handshake message (a direct-TLS ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The newest protocol version the gateway speaks.
pub const NEWEST_PROTOCOL: ProtocolVersion = ProtocolVersion::V3_2;

/// What the startup phase produced.
#[derive(Debug)]
pub(crate) enum Startup {
    /// A StartupMessage; `state.client` is filled in.
    Started,
    /// A CancelKey: the connection carries nothing else.
    Cancel(CancelKey),
    /// The client went away before sending a startup packet (e.g. a port probe).
    Closed,
    /// `after_tls` asked to detach.
    Detach,
}

/// Reads and admits the PROXY header according to the listener's policy.
pub(crate) async fn read_proxy_header<S: ClientIo>(
    conn: &mut ClientConn<S>,
    config: &GatewayConfig,
) -> Result<(), GatewayError> {
    if config.proxy_protocol == proxy_protocol::ProxyProtocolMode::Off {
        return Ok(());
    }
    let detection = loop {
        match proxy_protocol::detect(conn.buffered())? {
            Detection::NeedMore if conn.buffered().len() < MAX_PROXY_HEADER_LEN => {
                if conn.fill().await? == 0 {
                    return Err(GatewayError::UnexpectedEof);
                }
            }
            Detection::NeedMore => return Err(proxy_protocol::ProxyHeaderError::TooLong.into()),
            other => break other,
        }
    };
    let peer = conn.state().peer_addr.ip();
    let present = matches!(detection, Detection::Header { .. });
    proxy_protocol::admit(
        config.proxy_protocol,
        &config.trusted_proxies,
        peer,
        present,
    )?;
    if let Detection::Header { info, len } = detection {
        let _ = conn.read_buf_mut().split_to(len);
        let state = conn.state_mut();
        if let Some(source) = info.source {
            state.client_addr = source;
        }
        state.proxy = Some(info);
    }
    Ok(())
}

/// Which encryption requests were answered. PostgreSQL's ProcessStartupPacket answers one
/// SSLRequest and one GSSENCRequest at most (`ssl_done`, `gss_done`; a TLS upgrade ends both):
/// a repeated request is read as a startup packet of protocol 1234.5679 or 1234.5680 and
/// refused as unsupported, so a client cannot keep a connection in the startup phase forever
/// by asking again and again.
#[derive(Debug, Default)]
struct Negotiation {
    ssl_done: bool,
    gss_done: bool,
}

impl Negotiation {
    /// After TLS (negotiated or direct) neither request may follow.
    fn encrypted() -> Self {
        Self {
            ssl_done: true,
            gss_done: true,
        }
    }
}

/// The error PostgreSQL gives a request it no longer accepts (`unsupported frontend protocol
/// 1234.5679`, 0A000).
fn repeated_request(code: u32) -> GatewayError {
    GatewayError::UnsupportedProtocol(ProtocolVersion::from_code(code))
}

/// Runs the startup loop until a StartupMessage or CancelKey arrives, upgrading to TLS
/// on the way when asked. `after_tls` runs right after a successful upgrade.
pub(crate) async fn read_startup<S: ClientIo, H: Hooks>(
    conn: &mut ClientConn<S>,
    config: &GatewayConfig,
    hooks: &H,
    data: &mut H::Data,
) -> Result<Startup, GatewayError> {
    let mut negotiation = Negotiation::default();
    if starts_with_tls_record(conn).await? {
        let tls = config
            .tls
            .as_ref()
            .ok_or(GatewayError::DirectTlsNotConfigured)?;
        upgrade(conn, tls, true).await?;
        negotiation = Negotiation::encrypted();
        if hooks.after_tls(conn, data).await? == Flow::Detach {
            return Ok(Startup::Detach);
        }
    }
    loop {
        let Some(packet) = conn.read_startup_packet().await? else {
            return Ok(Startup::Closed);
        };
        match packet {
            StartupPacket::SslRequest if negotiation.ssl_done => {
                return Err(repeated_request(SSL_REQUEST_CODE))
            }
            StartupPacket::SslRequest => {
                if ssl_request(conn, config, &mut negotiation).await?
                    && hooks.after_tls(conn, data).await? == Flow::Detach
                {
                    return Ok(Startup::Detach);
                }
            }
            StartupPacket::GssEncRequest if negotiation.gss_done => {
                return Err(repeated_request(GSSENC_REQUEST_CODE))
            }
            StartupPacket::GssEncRequest => {
                negotiation.gss_done = true;
                answer_single_byte(conn, b'N').await?;
            }
            StartupPacket::CancelRequest(cancel) => return Ok(Startup::Cancel(cancel)),
            StartupPacket::Startup(startup) => {
                accept_startup_message(conn, config, startup).await?;
                return Ok(Startup::Started);
            }
        }
    }
}

/// Answers an SSLRequest: `N` without TLS, else `S` and the handshake. Returns whether the
/// connection is now encrypted.
async fn ssl_request<S: ClientIo>(
    conn: &mut ClientConn<S>,
    config: &GatewayConfig,
    negotiation: &mut Negotiation,
) -> Result<bool, GatewayError> {
    negotiation.ssl_done = true;
    let Some(tls) = config.tls.as_ref() else {
        answer_single_byte(conn, b'N').await?;
        return Ok(false);
    };
    if !conn.buffered().is_empty() {
        return Err(GatewayError::DataAfterSslRequest);
    }
    answer_single_byte(conn, b'S').await?;
    upgrade(conn, tls, false).await?;
    *negotiation = Negotiation::encrypted();
    Ok(true)
}

async fn starts_with_tls_record<S: ClientIo>(
    conn: &mut ClientConn<S>,
) -> Result<bool, GatewayError> {
    while conn.buffered().is_empty() {
        if conn.fill().await? == 0 {
            return Ok(false);
        }
    }
    Ok(conn.buffered()[0] == TLS_HANDSHAKE_RECORD)
}

async fn answer_single_byte<S: ClientIo>(
    conn: &mut ClientConn<S>,
    byte: u8,
) -> Result<(), GatewayError> {
    conn.send_raw(&[byte]);
    conn.flush().await
}

/// Replaces the plain stream by a TLS one, replaying bytes already read (the start of a
/// direct-TLS ClientHello) into the handshake.
async fn upgrade<S: ClientIo>(
    conn: &mut ClientConn<S>,
    tls: &TlsConfig,
    direct: bool,
) -> Result<(), GatewayError> {
    let (stream, buffered) = conn.take_stream()?;
    let ClientStream::Plain(rewind) = stream else {
        return Err(GatewayError::SslRequestOverTls);
    };
    let (io, prefix) = rewind.into_parts();
    let replay = [prefix, buffered].concat();
    let acceptor = TlsAcceptor::from(tls.server_config());
    let accepted = bounded(
        conn.deadline(),
        acceptor.accept(Rewind::with_prefix(replay.into(), io)),
    )
    .await?
    .map_err(GatewayError::TlsHandshake)?;
    let info = tls_info(&accepted, tls, direct);
    conn.put_stream(ClientStream::Tls(Box::new(accepted)));
    if direct && info.alpn.as_deref() != Some(ALPN_POSTGRESQL) {
        return Err(GatewayError::DirectTlsWithoutAlpn);
    }
    conn.state_mut().tls = Some(info);
    Ok(())
}

fn tls_info<S>(
    stream: &tokio_rustls::server::TlsStream<Rewind<S>>,
    tls: &TlsConfig,
    direct: bool,
) -> TlsInfo {
    let (_, session) = stream.get_ref();
    let server_name = session.server_name().map(str::to_owned);
    let server_certificate = tls
        .certificate_for(server_name.as_deref())
        .and_then(|key| key.cert.first().cloned());
    TlsInfo {
        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
        protocol_version: session.protocol_version().map(|v| format!("{v:?}")),
        cipher_suite: session
            .negotiated_cipher_suite()
            .map(|suite| format!("{:?}", suite.suite())),
        direct,
        peer_certificates: session
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
        server_certificate,
        server_name,
    }
}

/// Checks the StartupMessage, negotiates the protocol version and records the client.
async fn accept_startup_message<S: ClientIo>(
    conn: &mut ClientConn<S>,
    config: &GatewayConfig,
    startup: StartupMessage,
) -> Result<(), GatewayError> {
    let requested = startup.version;
    if requested.major != 3 || requested < ProtocolVersion::V3_0 {
        return Err(GatewayError::UnsupportedProtocol(requested));
    }
    let protocol_options: Vec<String> = startup
        .params
        .iter()
        .filter(|(key, _)| key.starts_with("_pq_."))
        .map(|(key, _)| key.clone())
        .collect();
    let version = requested.min(NEWEST_PROTOCOL);
    if version != requested || !protocol_options.is_empty() {
        conn.send(&BackendMessage::NegotiateProtocolVersion {
            newest_minor: u32::from(version.minor),
            unrecognized_options: protocol_options,
        })?;
    }
    let client = ClientInfo {
        requested_version: requested,
        version,
        parameters: startup
            .params
            .into_iter()
            .filter(|(key, _)| !key.starts_with("_pq_."))
            .collect(),
    };
    if client.parameter("user").is_none_or(str::is_empty) {
        return Err(GatewayError::MissingUser);
    }
    if config.require_tls && conn.state().tls.is_none() {
        conn.state_mut().client = Some(client);
        return Err(GatewayError::TlsRequired);
    }
    let state = conn.state_mut();
    state.client = Some(client);
    state.phase = Phase::Started;
    Ok(())
}
