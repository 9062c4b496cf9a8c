//! The `startup_proxy` fuzz target on the stable toolchain: its seed corpus
//! (fuzz/corpus/startup_proxy/seed-*) is kept equal to what is built here, and every file of
//! the corpus is replayed through the target's body (fuzz/harness/startup_proxy.rs).
//! Regenerate the seeds after a deliberate change with
//! `PGBASTION_WRITE_FUZZ_SEEDS=1 cargo test -p pgbastion-gateway --test fuzz_corpus`.

#[path = "../../../fuzz/harness/replay.rs"]
mod replay;
#[path = "../../../fuzz/harness/startup_proxy.rs"]
mod startup_proxy;

use bytes::BytesMut;
use pgbastion_gateway::proxy_protocol::encode_v2;
use pgbastion_wire::{CancelKey, ProtocolVersion, StartupMessage, StartupPacket};

const TARGET: &str = "startup_proxy";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn packet(packet: StartupPacket) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).expect("a seed packet encodes");
    buf.to_vec()
}

fn startup() -> Vec<u8> {
    packet(StartupPacket::Startup(
        StartupMessage::new(ProtocolVersion::V3_0)
            .with_param("user", "alice")
            .with_param("database", "app"),
    ))
}

fn startup_v3_2() -> Vec<u8> {
    packet(StartupPacket::Startup(
        StartupMessage::new(ProtocolVersion::V3_2)
            .with_param("user", "bob")
            .with_param("options", "-c search_path=app")
            .with_param("_pq_.test_option", "on"),
    ))
}

fn v2(addresses: &str, tlvs: &[u8]) -> Vec<u8> {
    let (source, destination) = addresses.split_once(' ').expect("two addresses");
    let mut header = encode_v2(
        source.parse().expect("source"),
        destination.parse().expect("destination"),
    )
    .expect("encodes");
    let len = u16::from_be_bytes([header[14], header[15]]) + tlvs.len() as u16;
    header[14..16].copy_from_slice(&len.to_be_bytes());
    header.extend_from_slice(tlvs);
    header
}

/// `PP2_TYPE_SSL` with `PP2_CLIENT_SSL`, a verified certificate, version and CN.
fn ssl_tlv() -> Vec<u8> {
    let mut value = vec![0x01, 0, 0, 0, 0, 0x21, 0, 7];
    value.extend_from_slice(b"TLSv1.3");
    value.extend_from_slice(&[0x22, 0, 5]);
    value.extend_from_slice(b"alice");
    let mut tlv = vec![0x20];
    tlv.extend_from_slice(&(value.len() as u16).to_be_bytes());
    tlv.extend_from_slice(&value);
    tlv
}

fn v2_local() -> Vec<u8> {
    [V2_SIGNATURE, &[0x20, 0x00, 0, 0]].concat()
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let v1 = |line: &str| line.as_bytes().to_vec();
    let ssl = packet(StartupPacket::SslRequest);
    let cancel = packet(StartupPacket::CancelRequest(CancelKey::new(7, vec![9; 32])));
    vec![
        ("seed-no-header-startup-v3-2", startup_v3_2()),
        (
            "seed-v1-tcp4-startup",
            [
                v1("PROXY TCP4 192.0.2.7 127.0.0.1 51000 6432\r\n"),
                startup(),
            ]
            .concat(),
        ),
        (
            "seed-v1-tcp6-sslrequest-startup",
            [
                v1("PROXY TCP6 2001:db8::7 ::1 51000 6432\r\n"),
                ssl,
                startup(),
            ]
            .concat(),
        ),
        (
            "seed-v1-unknown-gssenc-startup",
            [
                v1("PROXY UNKNOWN\r\n"),
                packet(StartupPacket::GssEncRequest),
                startup(),
            ]
            .concat(),
        ),
        (
            "seed-v2-tcp4-startup",
            [v2("198.51.100.9:40000 127.0.0.1:5432", &[]), startup()].concat(),
        ),
        (
            "seed-v2-tcp6-ssl-tlv-startup-v3-2",
            [
                v2("[2001:db8::9]:40000 [::1]:5432", &ssl_tlv()),
                startup_v3_2(),
            ]
            .concat(),
        ),
        ("seed-v2-local-cancel", [v2_local(), cancel].concat()),
        (
            "seed-v1-port-out-of-range",
            v1("PROXY TCP4 192.0.2.7 127.0.0.1 99999 6432\r\n"),
        ),
        (
            "seed-v1-truncated",
            v1("PROXY TCP4 192.0.2.7 127.0.0.1 51000"),
        ),
        (
            "seed-v2-declares-more-than-sent",
            [V2_SIGNATURE, &[0x21, 0x11, 0x0f, 0xff], &[0; 12]].concat(),
        ),
    ]
}

#[test]
fn the_committed_startup_proxy_seeds_match_what_is_built_here() {
    replay::check_seeds(TARGET, &seeds());
}

#[test]
fn every_startup_proxy_corpus_file_runs_without_panicking() {
    assert!(replay::replay(TARGET, startup_proxy::fuzz_startup_proxy) >= seeds().len());
}

#[test]
fn the_header_seeds_reach_the_startup_packets() {
    use pgbastion_gateway::proxy_protocol::{detect, Detection};
    for (name, seed) in seeds() {
        let header = matches!(detect(&seed), Ok(Detection::Header { .. }));
        let expected = name.starts_with("seed-v")
            && !name.contains("truncated")
            && !name.contains("out-of-range")
            && !name.contains("declares");
        assert_eq!(header, expected, "{name}: {:?}", detect(&seed));
    }
}

/// Found by the `startup_proxy` target (input, base64:
/// `UFJPWFkgVU5LTk9XTiAKDQoAn5VlAGEAJw==`). The gateway reads a PROXY header incrementally;
/// with `PROXY UNKNOWN \n\r\n` in the buffer `detect` reports a 17-byte header, but when the
/// first read ended after the `\n` it has already reported a 15-byte one and left `\r\n` to be
/// read as the startup packet. A v1 header ends at its first CRLF (the PROXY protocol
/// specification, section 2.1); a bare LF before it is malformed whatever follows.
#[test]
fn a_v1_header_reads_the_same_however_the_bytes_arrive() {
    use pgbastion_gateway::proxy_protocol::{detect, Detection, ProxyHeaderError};
    let bytes = b"PROXY UNKNOWN \n\r\n";
    let whole = detect(bytes);
    let first_read = detect(&bytes[..15]);
    assert!(
        !matches!(first_read, Ok(Detection::Header { len: 15, .. }))
            || !matches!(whole, Ok(Detection::Header { len: 17, .. })),
        "15 bytes read as {first_read:?}, 17 bytes as {whole:?}"
    );
    assert!(
        matches!(first_read, Err(ProxyHeaderError::Malformed(_)))
            && matches!(whole, Err(ProxyHeaderError::Malformed(_))),
        "a bare LF is malformed: {first_read:?}, {whole:?}"
    );
}
