//! Startup-phase packets: untagged, a 4-byte length then a 4-byte code that is either a
//! protocol version (StartupMessage) or a request code (SSLRequest, GSSENCRequest,
//! CancelRequest).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::limits::{MAX_CANCEL_KEY_LEN, MIN_CANCEL_KEY_LEN};
use crate::reader::BytesReader;
use crate::writer::{put_cstr, put_name, write_untagged};

/// A protocol version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// Major version (3 for every current server).
    pub major: u16,
    /// Minor version (0 or 2 today).
    pub minor: u16,
}

impl ProtocolVersion {
    /// Protocol 3.0 (PostgreSQL 7.4 onwards).
    pub const V3_0: Self = Self::new(3, 0);
    /// Protocol 3.2 (PostgreSQL 18: variable-length cancel keys).
    pub const V3_2: Self = Self::new(3, 2);

    /// A version from its parts.
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// The 32-bit code on the wire.
    pub const fn code(self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }

    /// The version a wire code stands for.
    pub const fn from_code(code: u32) -> Self {
        Self::new((code >> 16) as u16, code as u16)
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The request code of SSLRequest (1234.5679).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// The request code of GSSENCRequest (1234.5680).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// The request code of CancelRequest (1234.5678).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// The first byte of a TLS ClientHello record: a client using PostgreSQL 17's direct TLS
/// (`sslnegotiation=direct`) sends this instead of a startup packet length.
pub const TLS_HANDSHAKE_FIRST_BYTE: u8 = 0x16;
/// The prefix of protocol option parameter names (`_pq_.name`).
pub const PROTOCOL_OPTION_PREFIX: &str = "_pq_.";

/// A StartupMessage: the protocol version and the parameters, in the client's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupMessage {
    /// The requested protocol version.
    pub version: ProtocolVersion,
    /// Parameters (`user`, `database`, `options`, `_pq_.*`, ...), in order, duplicates kept.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// A message with no parameters yet.
    pub fn new(version: ProtocolVersion) -> Self {
        Self {
            version,
            params: Vec::new(),
        }
    }

    /// Adds a parameter (builder style).
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// A parameter by name. PostgreSQL lets a later duplicate override an earlier one, so
    /// this returns the last occurrence.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `user` parameter (required by PostgreSQL).
    pub fn user(&self) -> Option<&str> {
        self.param("user")
    }

    /// The `database` parameter as sent. When it is absent (or empty) PostgreSQL uses the
    /// user name; this accessor does not apply that default.
    pub fn database(&self) -> Option<&str> {
        self.param("database")
    }

    /// The `options` parameter (command-line style `-c name=value` settings).
    pub fn options(&self) -> Option<&str> {
        self.param("options")
    }

    /// Protocol options (`_pq_.name`), with the prefix stripped.
    pub fn protocol_options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().filter_map(|(k, v)| {
            k.strip_prefix(PROTOCOL_OPTION_PREFIX)
                .map(|name| (name, v.as_str()))
        })
    }

    /// Parameters that are not protocol options, in order.
    pub fn session_params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params
            .iter()
            .filter(|(k, _)| !k.starts_with(PROTOCOL_OPTION_PREFIX))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The key that identifies a session for cancellation: sent by the server in
/// BackendKeyData and by a client in CancelRequest. The secret is 4 bytes in protocol 3.0
/// and 4 to 256 bytes in 3.2. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CancelKey {
    /// The backend process id.
    pub process_id: u32,
    /// The secret key.
    pub secret_key: Bytes,
}

impl CancelKey {
    /// A key from parts.
    pub fn new(process_id: u32, secret_key: impl Into<Bytes>) -> Self {
        Self {
            process_id,
            secret_key: secret_key.into(),
        }
    }

    /// Whether the secret's length is allowed under `version`: exactly 4 bytes before 3.2,
    /// 4 to 256 bytes from 3.2 on.
    pub fn fits(&self, version: ProtocolVersion) -> bool {
        let len = self.secret_key.len();
        if version < ProtocolVersion::V3_2 {
            len == MIN_CANCEL_KEY_LEN
        } else {
            (MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&len)
        }
    }

    /// Reads `process id, key to the end`, checking the key length is 4..=256.
    pub(crate) fn decode(r: &mut BytesReader<'_>) -> Result<Self, DecodeError> {
        let process_id = r.u32()?;
        let secret_key = r.rest_shared();
        if !(MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&secret_key.len()) {
            return Err(DecodeError::InvalidValue {
                what: "cancel key length",
            });
        }
        Ok(Self {
            process_id,
            secret_key,
        })
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !(MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&self.secret_key.len()) {
            return Err(EncodeError::InvalidValue {
                what: "cancel key length",
            });
        }
        buf.put_u32(self.process_id);
        buf.put_slice(&self.secret_key);
        Ok(())
    }
}

impl std::fmt::Debug for CancelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelKey")
            .field("process_id", &self.process_id)
            .field(
                "secret_key",
                &format_args!("<{} bytes>", self.secret_key.len()),
            )
            .finish()
    }
}

/// Any packet a client may send before its StartupMessage is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// The StartupMessage.
    Startup(StartupMessage),
    /// SSLRequest: the server answers `S` or `N`.
    SslRequest,
    /// GSSENCRequest: the server answers `G` or `N`.
    GssEncRequest,
    /// CancelRequest, carrying the key from BackendKeyData.
    CancelRequest(CancelKey),
}

impl StartupPacket {
    /// Splits one complete packet off `buf` and decodes it; `None` if more bytes are needed.
    ///
    /// Like PostgreSQL's `ProcessStartupPacket()`, `max_len` bounds the packet after its
    /// length word (pass [`MAX_STARTUP_PACKET_LEN`](crate::limits::MAX_STARTUP_PACKET_LEN)),
    /// and the declared length must be at least 8. Both are checked before anything is
    /// consumed or allocated.
    pub fn split(buf: &mut BytesMut, max_len: usize) -> Result<Option<Self>, DecodeError> {
        let Some(len) = Self::peek_len(buf, max_len)? else {
            return Ok(None);
        };
        if buf.len() < len {
            return Ok(None);
        }
        let mut packet = buf.split_to(len);
        packet.advance(4);
        Self::decode(&packet.freeze()).map(Some)
    }

    /// The declared total length of the packet at the start of `buf` once checked, or `None`
    /// if fewer than 4 bytes are there. See [`split`](Self::split).
    pub fn peek_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, DecodeError> {
        let Some(&[a, b, c, d]) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]);
        if len < 8 {
            return Err(DecodeError::LengthTooSmall { len });
        }
        if u64::from(len - 4) > max_len as u64 {
            return Err(DecodeError::TooLong { len, max: max_len });
        }
        Ok(Some(len as usize))
    }

    /// Decodes a packet body: everything after the length word.
    pub fn decode(body: &Bytes) -> Result<Self, DecodeError> {
        let mut r = BytesReader::new(body);
        let packet = match r.u32()? {
            SSL_REQUEST_CODE => Self::SslRequest,
            GSSENC_REQUEST_CODE => Self::GssEncRequest,
            CANCEL_REQUEST_CODE => Self::CancelRequest(CancelKey::decode(&mut r)?),
            code => Self::Startup(StartupMessage {
                version: ProtocolVersion::from_code(code),
                params: decode_params(&mut r)?,
            }),
        };
        r.finish()?;
        Ok(packet)
    }

    /// Appends the packet, length included.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        write_untagged(buf, |buf| {
            match self {
                Self::SslRequest => buf.put_u32(SSL_REQUEST_CODE),
                Self::GssEncRequest => buf.put_u32(GSSENC_REQUEST_CODE),
                Self::CancelRequest(key) => {
                    buf.put_u32(CANCEL_REQUEST_CODE);
                    key.encode(buf)?;
                }
                Self::Startup(startup) => {
                    buf.put_u32(startup.version.code());
                    for (name, value) in &startup.params {
                        put_name(buf, name, "startup parameter name")?;
                        put_cstr(buf, value)?;
                    }
                    buf.put_u8(0);
                }
            }
            Ok(())
        })
    }
}

/// `(name NUL value NUL)* NUL`.
fn decode_params(r: &mut BytesReader<'_>) -> Result<Vec<(String, String)>, DecodeError> {
    let mut params = Vec::new();
    loop {
        let name = r.cstr()?;
        if name.is_empty() {
            return Ok(params);
        }
        params.push((name.to_owned(), r.string()?));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_duplicate_parameter_wins_as_in_postgresql() {
        let startup = StartupMessage::new(ProtocolVersion::V3_0)
            .with_param("user", "a")
            .with_param("user", "b");
        assert_eq!(startup.user(), Some("b"));
        assert_eq!(startup.database(), None);
    }

    #[test]
    fn protocol_options_are_listed_apart_from_session_parameters() {
        let startup = StartupMessage::new(ProtocolVersion::V3_2)
            .with_param("user", "u")
            .with_param("_pq_.compression", "on");
        assert_eq!(
            startup.protocol_options().collect::<Vec<_>>(),
            vec![("compression", "on")]
        );
        assert_eq!(
            startup.session_params().collect::<Vec<_>>(),
            vec![("user", "u")]
        );
    }

    #[test]
    fn cancel_keys_fit_the_protocol_version() {
        let short = CancelKey::new(1, vec![0; 4]);
        let long = CancelKey::new(1, vec![0; 32]);
        assert!(short.fits(ProtocolVersion::V3_0) && short.fits(ProtocolVersion::V3_2));
        assert!(!long.fits(ProtocolVersion::V3_0) && long.fits(ProtocolVersion::V3_2));
        assert!(
            !format!("{long:?}").contains("0, 0"),
            "Debug shows the secret"
        );
    }

    #[test]
    fn versions_display_as_major_dot_minor() {
        assert_eq!(ProtocolVersion::V3_2.to_string(), "3.2");
        assert_eq!(
            ProtocolVersion::from_code(SSL_REQUEST_CODE).to_string(),
            "1234.5679"
        );
    }
}
