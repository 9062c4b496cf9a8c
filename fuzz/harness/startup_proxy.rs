//! Body of the `startup_proxy` fuzz target: the first bytes of a client connection, read as
//! the gateway reads them on a listener that accepts PROXY headers: `proxy_protocol::detect`
//! (v1 or v2), then startup-phase packets (SSLRequest, GSSENCRequest, CancelRequest,
//! StartupMessage) from what follows.
//!
//! Besides "never panics", it checks what the gateway's incremental read relies on: a
//! complete header is reported the same way however the bytes after it look, and a strict
//! prefix of it asks for more bytes instead of failing or reporting a shorter header.

use bytes::BytesMut;
use pgbastion_gateway::proxy_protocol::{detect, Detection, MAX_PROXY_HEADER_LEN};
use pgbastion_wire::limits::MAX_STARTUP_PACKET_LEN;
use pgbastion_wire::{StartupMessage, StartupPacket};

/// Feeds `data` to the PROXY header detector and the startup packet parser.
pub fn fuzz_startup_proxy(data: &[u8]) {
    let after_header = match detect(data) {
        Ok(Detection::Header { info, len }) => {
            check_header_len(data, len);
            let _ = info.ssl();
            &data[len..]
        }
        Ok(Detection::Absent) => data,
        Ok(Detection::NeedMore) => {
            assert!(data.len() < MAX_PROXY_HEADER_LEN, "NeedMore past the limit");
            return;
        }
        Err(_) => return,
    };
    read_startup_packets(after_header);
}

/// The header's length fits the buffer and the limit, the header alone parses the same, and
/// its last byte missing means "need more".
fn check_header_len(data: &[u8], len: usize) {
    assert!(len > 0 && len <= data.len() && len <= MAX_PROXY_HEADER_LEN);
    let alone = detect(&data[..len]);
    assert!(
        matches!(alone, Ok(Detection::Header { len: l, .. }) if l == len),
        "the header alone reads as {alone:?}"
    );
    let short = detect(&data[..len - 1]);
    assert_eq!(short, Ok(Detection::NeedMore), "a truncated header");
}

/// Splits startup-phase packets off `data` as the gateway's startup loop does, until one
/// does not parse or the bytes run out.
fn read_startup_packets(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = StartupPacket::split(&mut buf, MAX_STARTUP_PACKET_LEN) {
        if let StartupPacket::Startup(startup) = packet {
            read_parameters(&startup);
        }
    }
}

/// Everything the gateway and the router read from a StartupMessage.
fn read_parameters(startup: &StartupMessage) {
    let _ = (startup.user(), startup.database(), startup.options());
    let options = startup.protocol_options().count();
    let session = startup.session_params().count();
    assert_eq!(options + session, startup.params.len());
}
