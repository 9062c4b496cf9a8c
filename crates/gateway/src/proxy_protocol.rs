//! PROXY protocol (v1 text and v2 binary) on the client side of a listener.
//!
//! Parsing is delegated to the `ppp` crate; this module owns the policy around it: how many
//! bytes a header may take before we give up, who may send one ([`TrustedProxies`]), and what
//! a listener in [`ProxyProtocolMode::Off`], `Optional` or `Required` mode does with it.
//!
//! Detection is unambiguous: a PostgreSQL startup packet starts with a big-endian length of at
//! most 10 000, so its first byte is always 0, while a v1 header starts with `PROXY ` and a v2
//! header with `\r\n\r\n\0\r\nQUIT\n`.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use ipnet::IpNet;
use ppp::{v1, v2, HeaderResult, PartialResult};

/// The v2 signature, the first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Longest header we buffer. v1 headers are at most 107 bytes by the specification; v2 may
/// declare up to 65 535 bytes of addresses and TLVs, but load balancers send a few hundred.
pub const MAX_PROXY_HEADER_LEN: usize = 4096;

/// What a listener does with PROXY headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyProtocolMode {
    /// Never expect a header; one would be read as a malformed startup packet.
    #[default]
    Off,
    /// Accept a header from a trusted peer; connections without one are served as they are.
    Optional,
    /// Every connection must start with a header from a trusted peer.
    Required,
}

/// The peers (usually load balancers) allowed to send a PROXY header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trust the given networks, e.g. `"10.0.0.0/8".parse()?`.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self { networks }
    }

    /// Whether `peer` lies inside one of the trusted networks. IPv4-mapped IPv6 peers match
    /// IPv4 networks.
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = canonical_ip(peer);
        self.networks.iter().any(|net| net.contains(&peer))
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The version of a PROXY header that was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text format.
    V1,
    /// The binary format.
    V2,
}

/// What a PROXY header told us about the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyInfo {
    /// Header version.
    pub version: ProxyVersion,
    /// The original client address, when the header carried one (v1 `UNKNOWN`, v2 `LOCAL`
    /// and unix/unspecified families carry none: the connection's own peer address stands).
    pub source: Option<SocketAddr>,
    /// The address the client originally connected to.
    pub destination: Option<SocketAddr>,
    /// v2 type-length-value extensions, raw, in order.
    pub tlvs: Vec<(u8, Bytes)>,
}

impl ProxyInfo {
    /// The TLS information a v2 header may carry (`PP2_TYPE_SSL`), if present.
    pub fn ssl(&self) -> Option<ProxySsl> {
        self.tlvs
            .iter()
            .find(|(kind, _)| *kind == v2::Type::SSL as u8)
            .and_then(|(_, value)| ProxySsl::parse(value))
    }
}

/// The `PP2_TYPE_SSL` TLV: the load balancer terminated TLS for this client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySsl {
    /// The client connected over TLS (`PP2_CLIENT_SSL`).
    pub client_ssl: bool,
    /// The client presented a certificate and it was verified.
    pub client_cert_verified: bool,
    /// `PP2_SUBTYPE_SSL_VERSION`, e.g. `TLSv1.3`.
    pub version: Option<String>,
    /// `PP2_SUBTYPE_SSL_CN`, the client certificate's common name.
    pub common_name: Option<String>,
}

impl ProxySsl {
    const CLIENT_SSL: u8 = 0x01;

    fn parse(value: &[u8]) -> Option<Self> {
        let (&client, rest) = value.split_first()?;
        let verify = rest.get(..4)?;
        let mut ssl = Self {
            client_ssl: client & Self::CLIENT_SSL != 0,
            client_cert_verified: verify == [0, 0, 0, 0],
            version: None,
            common_name: None,
        };
        let mut sub = rest.get(4..)?;
        while let [kind, hi, lo, tail @ ..] = sub {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            let text = String::from_utf8(tail.get(..len)?.to_vec()).ok();
            match *kind {
                k if k == v2::Type::SSLVersion as u8 => ssl.version = text,
                k if k == v2::Type::SSLCommonName as u8 => ssl.common_name = text,
                _ => {}
            }
            sub = &tail[len..];
        }
        Some(ssl)
    }
}

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// The bytes start like a PROXY header but do not parse.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// The header is longer than [`MAX_PROXY_HEADER_LEN`].
    #[error("PROXY protocol header longer than {MAX_PROXY_HEADER_LEN} bytes")]
    TooLong,
    /// A header arrived from a peer outside the trusted networks.
    #[error("PROXY protocol header from untrusted peer {0}")]
    Untrusted(IpAddr),
    /// The listener requires a header and none arrived.
    #[error("connection without the required PROXY protocol header")]
    Missing,
    /// The listener does not accept PROXY headers.
    #[error("PROXY protocol header on a listener that does not accept one")]
    NotAccepted,
}

/// The outcome of looking at the first bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Detection {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// The stream does not start with a PROXY header.
    Absent,
    /// A complete header of `len` bytes.
    Header {
        /// What it said.
        info: ProxyInfo,
        /// How many bytes of the buffer it took.
        len: usize,
    },
}

/// Looks for a PROXY header at the start of `buf`. Never reads past `buf`, never panics.
pub fn detect(buf: &[u8]) -> Result<Detection, ProxyHeaderError> {
    let prefix_len = buf.len().min(V2_SIGNATURE.len());
    let maybe_v2 = V2_SIGNATURE.starts_with(&buf[..prefix_len]);
    let maybe_v1 = V1_PREFIX.starts_with(&buf[..buf.len().min(V1_PREFIX.len())]);
    if buf.is_empty() || (maybe_v2 && prefix_len < V2_SIGNATURE.len()) {
        return Ok(Detection::NeedMore);
    }
    if !maybe_v2 && !maybe_v1 {
        return Ok(Detection::Absent);
    }
    if maybe_v1 {
        return detect_v1(buf);
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return if buf.len() >= MAX_PROXY_HEADER_LEN {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(Detection::NeedMore)
        };
    }
    let (info, len) = match result {
        HeaderResult::V2(Ok(header)) => (from_v2(&header)?, header.len()),
        HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Malformed(e.to_string())),
        HeaderResult::V1(_) => {
            return Err(ProxyHeaderError::Malformed(
                "not a PROXY v2 header".to_owned(),
            ))
        }
    };
    if len > MAX_PROXY_HEADER_LEN {
        return Err(ProxyHeaderError::TooLong);
    }
    Ok(Detection::Header { info, len })
}

/// The longest v1 line, CRLF included (the PROXY protocol specification, section 2.1).
const V1_MAX_LEN: usize = 107;

/// A v1 header is one line that ends at its first CRLF. Only that line is parsed, so the
/// answer never depends on how TCP split the bytes: a line feed without its carriage return,
/// no CRLF within 107 bytes, or a complete line missing fields is malformed at once.
fn detect_v1(buf: &[u8]) -> Result<Detection, ProxyHeaderError> {
    let malformed = |why: &str| Err(ProxyHeaderError::Malformed(why.to_owned()));
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(end) = memchr::memchr(b'\n', window) else {
        return if buf.len() >= V1_MAX_LEN {
            malformed("the PROXY v1 line has no CRLF within 107 bytes")
        } else {
            Ok(Detection::NeedMore)
        };
    };
    if end == 0 || window[end - 1] != b'\r' {
        return malformed("the PROXY v1 line ends with a line feed but no carriage return");
    }
    let line = &buf[..=end];
    match HeaderResult::parse(line) {
        HeaderResult::V1(Ok(header)) => Ok(Detection::Header {
            info: from_v1(&header),
            len: line.len(),
        }),
        HeaderResult::V1(Err(e)) if !e.is_incomplete() => malformed(&e.to_string()),
        _ => malformed("the PROXY v1 line ends before its fields do"),
    }
}

fn from_v1(header: &v1::Header<'_>) -> ProxyInfo {
    let (source, destination) = match header.addresses {
        v1::Addresses::Tcp4(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        v1::Addresses::Tcp6(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        v1::Addresses::Unknown => (None, None),
    };
    ProxyInfo {
        version: ProxyVersion::V1,
        source,
        destination,
        tlvs: Vec::new(),
    }
}

fn from_v2(header: &v2::Header<'_>) -> Result<ProxyInfo, ProxyHeaderError> {
    let (source, destination) = match (header.command, header.addresses) {
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        _ => (None, None),
    };
    // A TLV that runs past the header makes the whole header malformed: dropping it and
    // serving the connection would act on a header the sender did not write.
    let tlvs = header
        .tlvs()
        .map(|tlv| tlv.map(|tlv| (tlv.kind, Bytes::copy_from_slice(&tlv.value))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ProxyHeaderError::Malformed(format!("a PROXY v2 TLV is malformed: {e}")))?;
    Ok(ProxyInfo {
        version: ProxyVersion::V2,
        source,
        destination,
        tlvs,
    })
}

/// Decides whether a detected header (or its absence) is acceptable from `peer` under `mode`.
pub fn admit(
    mode: ProxyProtocolMode,
    trusted: &TrustedProxies,
    peer: IpAddr,
    header_present: bool,
) -> Result<(), ProxyHeaderError> {
    match (mode, header_present) {
        (ProxyProtocolMode::Off, true) => Err(ProxyHeaderError::NotAccepted),
        (ProxyProtocolMode::Off, false) | (ProxyProtocolMode::Optional, false) => Ok(()),
        (ProxyProtocolMode::Required, false) => Err(ProxyHeaderError::Missing),
        (_, true) if trusted.contains(peer) => Ok(()),
        (_, true) => Err(ProxyHeaderError::Untrusted(peer)),
    }
}

/// Encodes a v2 `PROXY` header for `source → destination` (both must be the same family),
/// for emitting towards a backend.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Result<Vec<u8>, ProxyHeaderError> {
    let addresses: v2::Addresses = if source.is_ipv4() == destination.is_ipv4() {
        (source, destination).into()
    } else {
        (as_v6(source), as_v6(destination)).into()
    };
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        addresses,
    )
    .build()
    .map_err(|e| ProxyHeaderError::Malformed(e.to_string()))
}

fn as_v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        SocketAddr::V6(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[test]
    fn a_postgres_startup_packet_is_not_a_proxy_header() {
        let startup = [0u8, 0, 0, 8, 4, 210, 22, 47];
        assert_eq!(detect(&startup), Ok(Detection::Absent));
    }

    #[test]
    fn v1_header_is_parsed_and_its_length_reported() {
        let mut buf = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 6432\r\n".to_vec();
        let header_len = buf.len();
        buf.extend_from_slice(&[0, 0, 0, 8]);
        let Ok(Detection::Header { info, len }) = detect(&buf) else {
            panic!("expected a header");
        };
        assert_eq!(len, header_len);
        assert_eq!(info.source, Some("192.0.2.7:51000".parse().unwrap()));
        assert_eq!(info.version, ProxyVersion::V1);
    }

    #[test]
    fn partial_headers_ask_for_more_bytes() {
        assert_eq!(detect(b"PROX"), Ok(Detection::NeedMore));
        assert_eq!(detect(b"\r\n\r\n\0"), Ok(Detection::NeedMore));
        assert_eq!(detect(b"PROXY TCP4 1.2.3.4"), Ok(Detection::NeedMore));
    }

    #[test]
    fn v2_header_round_trips_through_encode_and_detect() {
        let source: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let destination: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let mut bytes = encode_v2(source, destination).unwrap();
        let header_len = bytes.len();
        bytes.extend_from_slice(b"\0\0\0\x08");
        let Ok(Detection::Header { info, len }) = detect(&bytes) else {
            panic!("expected a header");
        };
        assert_eq!(
            (info.source, info.destination),
            (Some(source), Some(destination))
        );
        assert_eq!(len, header_len);
    }

    #[test]
    fn malformed_v2_header_is_an_error() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x2F, 0x11, 0, 12]);
        bytes.extend_from_slice(&[0; 12]);
        assert!(matches!(
            detect(&bytes),
            Err(ProxyHeaderError::Malformed(_))
        ));
    }

    #[test]
    fn a_complete_v1_line_missing_fields_is_malformed_not_incomplete() {
        for line in [
            &b"PROXY TCP4 1.2.3.4\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n\0\0",
        ] {
            assert!(
                matches!(detect(line), Err(ProxyHeaderError::Malformed(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(line),
                detect(line)
            );
        }
    }

    #[test]
    fn a_v2_tlv_running_past_the_header_makes_it_malformed() {
        let source: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let destination: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let mut bytes = encode_v2(source, destination).unwrap();
        // One more TLV: type 0x05, declaring 16 bytes of value, carrying 2.
        bytes.extend_from_slice(&[0x05, 0, 16, 0xAA, 0xBB]);
        let total = u16::from_be_bytes([bytes[14], bytes[15]]) + 5;
        bytes[14..16].copy_from_slice(&total.to_be_bytes());
        bytes.extend_from_slice(b"\0\0\0\x08");
        assert!(
            matches!(detect(&bytes), Err(ProxyHeaderError::Malformed(_))),
            "{:?}",
            detect(&bytes)
        );
    }

    #[test]
    fn v2_header_declaring_more_than_the_limit_is_refused_once_the_limit_is_buffered() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        bytes.resize(MAX_PROXY_HEADER_LEN, 0);
        assert_eq!(detect(&bytes), Err(ProxyHeaderError::TooLong));
    }

    #[test]
    fn only_trusted_peers_may_send_a_header() {
        let nets = trusted(&["10.0.0.0/8", "127.0.0.1/32"]);
        let lb: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(admit(ProxyProtocolMode::Optional, &nets, lb, true), Ok(()));
        assert_eq!(
            admit(ProxyProtocolMode::Optional, &nets, stranger, true),
            Err(ProxyHeaderError::Untrusted(stranger))
        );
        assert_eq!(
            admit(ProxyProtocolMode::Optional, &nets, stranger, false),
            Ok(())
        );
        assert_eq!(
            admit(ProxyProtocolMode::Required, &nets, lb, false),
            Err(ProxyHeaderError::Missing)
        );
        assert_eq!(
            admit(ProxyProtocolMode::Off, &nets, lb, true),
            Err(ProxyHeaderError::NotAccepted)
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_match_ipv4_networks() {
        let nets = trusted(&["127.0.0.1/32"]);
        assert!(nets.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!nets.contains("::1".parse().unwrap()));
    }

    #[test]
    fn ssl_tlv_reports_version_and_common_name() {
        let mut value = vec![0x01, 0, 0, 0, 0];
        value.extend_from_slice(&[0x21, 0, 7]);
        value.extend_from_slice(b"TLSv1.3");
        value.extend_from_slice(&[0x22, 0, 5]);
        value.extend_from_slice(b"alice");
        let info = ProxyInfo {
            version: ProxyVersion::V2,
            source: None,
            destination: None,
            tlvs: vec![(0x20, Bytes::from(value))],
        };
        let ssl = info.ssl().unwrap();
        assert!(ssl.client_ssl && ssl.client_cert_verified);
        assert_eq!(ssl.version.as_deref(), Some("TLSv1.3"));
        assert_eq!(ssl.common_name.as_deref(), Some("alice"));
    }

    #[test]
    fn truncated_ssl_tlv_yields_nothing_instead_of_reading_past_it() {
        assert_eq!(ProxySsl::parse(&[0x01, 0, 0]), None);
        let truncated_sub = [0x01, 0, 0, 0, 0, 0x21, 0, 9, b'T'];
        assert_eq!(ProxySsl::parse(&truncated_sub), None);
    }
}
