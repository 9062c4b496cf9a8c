//! Malformed input yields typed errors, never panics, and never allocates for a length the
//! peer merely declared.

// Test code: clippy.toml allows unwrap in #[test] functions; this extends it to helpers.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use pgbastion_wire::*;

fn backend(tag: u8, body: &'static [u8]) -> Result<BackendMessage, DecodeError> {
    BackendMessage::decode(&Frame::new(tag, Bytes::from_static(body)))
}

fn frontend(tag: u8, body: &'static [u8]) -> Result<FrontendMessage, DecodeError> {
    FrontendMessage::decode(&Frame::new(tag, Bytes::from_static(body)))
}

fn split_startup(bytes: &[u8]) -> Result<Option<StartupPacket>, DecodeError> {
    StartupPacket::split(&mut BytesMut::from(bytes), limits::MAX_STARTUP_PACKET_LEN)
}

#[test]
fn truncated_bodies_are_errors() {
    assert!(matches!(
        backend(b'K', b"\0\0"),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        backend(b'R', b"\0\0\0\x05ab"),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        backend(b'R', b"\0\0"),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        backend(b'Z', b""),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        backend(b'D', b"\0"),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        backend(b'A', b"\0\0\0\x01ch\0"),
        Err(DecodeError::MissingNul)
    ));
    assert!(matches!(
        frontend(b'E', b"\0\0\0"),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        frontend(b'B', b"\0\0\0"),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        frontend(b'D', b""),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn a_truncated_frame_waits_for_more_bytes_instead_of_failing() {
    let decoder = FrameDecoder::new(1 << 20);
    for wire in [
        &b""[..],
        b"Z",
        b"Z\0\0\0",
        b"Z\0\0\0\x05",
        b"C\0\0\0\x0dSELECT",
    ] {
        let mut buf = BytesMut::from(wire);
        assert_eq!(decoder.decode(&mut buf), Ok(None), "{wire:?}");
        assert_eq!(&buf[..], wire, "an incomplete frame consumed bytes");
    }
}

#[test]
fn frame_lengths_below_four_are_errors() {
    for len in 0..4u8 {
        let mut buf = BytesMut::from(&[b'Z', 0, 0, 0, len][..]);
        assert_eq!(
            FrameDecoder::new(100).decode(&mut buf),
            Err(DecodeError::LengthTooSmall {
                len: u32::from(len)
            })
        );
    }
}

#[test]
fn frame_lengths_over_the_limit_are_refused_before_any_allocation() {
    for header in [&b"D\x7f\xff\xff\xff"[..], b"D\x80\0\0\0", b"Q\0\x01\0\x01"] {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(header);
        let capacity = buf.capacity();
        assert!(matches!(
            FrameDecoder::new(65_536).decode(&mut buf),
            Err(DecodeError::TooLong { max: 65_536, .. })
        ));
        assert_eq!(buf.capacity(), capacity, "the buffer grew for {header:?}");
        assert!(FrameDecoder::new(65_536).bytes_needed(&buf).is_err());
    }
}

#[test]
fn missing_nul_terminators_are_errors() {
    assert_eq!(backend(b'C', b"SELECT 1"), Err(DecodeError::MissingNul));
    assert_eq!(frontend(b'Q', b"SELECT 1"), Err(DecodeError::MissingNul));
    assert_eq!(backend(b'S', b"name\0value"), Err(DecodeError::MissingNul));
    assert_eq!(backend(b'E', b"SERROR"), Err(DecodeError::MissingNul));
    assert_eq!(
        backend(b'R', b"\0\0\0\x0aSCRAM"),
        Err(DecodeError::MissingNul)
    );
    assert_eq!(frontend(b'P', b"s\0SELECT"), Err(DecodeError::MissingNul));
}

#[test]
fn invalid_utf8_is_an_error_where_text_is_required() {
    assert_eq!(frontend(b'Q', b"\xc3\x28\0"), Err(DecodeError::InvalidUtf8));
    assert_eq!(backend(b'C', b"\xff\0"), Err(DecodeError::InvalidUtf8));
    assert_eq!(
        split_startup(b"\0\0\0\x0d\0\x03\0\0\xff\0x\0\0"),
        Err(DecodeError::InvalidUtf8)
    );
}

fn invalid_count<T>(result: Result<T, DecodeError>) -> bool {
    matches!(result, Err(DecodeError::InvalidCount { .. }))
}

#[test]
fn counts_that_exceed_the_body_are_errors() {
    assert!(invalid_count(backend(b'D', b"\x75\x30\0\0\0\x01a")));
    assert!(invalid_count(backend(b'D', b"\xff\xff")));
    assert!(invalid_count(backend(b'D', b"\0\x01\0\0\0\x09abc")));
    assert!(invalid_count(backend(b'T', b"\x7f\xff")));
    assert!(invalid_count(backend(b't', b"\0\x05\0\0\0\x17")));
    assert!(invalid_count(backend(b'G', b"\0\x7f\xff")));
    assert!(invalid_count(backend(b'v', b"\0\0\0\0\x7f\xff\xff\xff")));
    assert!(invalid_count(backend(b'V', b"\xff\xff\xff\xfe")));
    assert!(invalid_count(frontend(b'P', b"\0q\0\x7f\xff")));
    assert!(invalid_count(frontend(b'B', b"\0\0\0\0\x7f\xff")));
    assert!(invalid_count(frontend(
        b'B',
        b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0"
    )));
    assert!(invalid_count(frontend(b'F', b"\0\0\0\x01\xff\xff")));
}

#[test]
fn trailing_bytes_are_errors() {
    assert_eq!(
        backend(b'Z', b"II"),
        Err(DecodeError::TrailingBytes { n: 1 })
    );
    assert_eq!(
        backend(b'1', b"x"),
        Err(DecodeError::TrailingBytes { n: 1 })
    );
    assert_eq!(
        backend(b'R', b"\0\0\0\0x"),
        Err(DecodeError::TrailingBytes { n: 1 })
    );
    assert_eq!(
        backend(b'E', b"Mx\0\0y"),
        Err(DecodeError::TrailingBytes { n: 1 })
    );
    assert_eq!(
        frontend(b'S', b"x"),
        Err(DecodeError::TrailingBytes { n: 1 })
    );
    assert_eq!(
        frontend(b'Q', b"a\0b\0"),
        Err(DecodeError::TrailingBytes { n: 2 })
    );
    assert!(matches!(
        backend(b'D', b"\0\0junk"),
        Err(DecodeError::TrailingBytes { n: 4 })
    ));
    assert_eq!(
        split_startup(b"\0\0\0\x09\x04\xd2\x16\x2fx"),
        Err(DecodeError::TrailingBytes { n: 1 })
    );
    assert_eq!(
        split_startup(b"\0\0\0\x0a\0\x03\0\0\0x"),
        Err(DecodeError::TrailingBytes { n: 1 })
    );
}

#[test]
fn unknown_tags_and_values_are_errors() {
    assert_eq!(
        backend(b'?', b""),
        Err(DecodeError::UnknownTag { tag: b'?' })
    );
    assert_eq!(
        frontend(b'?', b""),
        Err(DecodeError::UnknownTag { tag: b'?' })
    );
    // Tags of the other direction are unknown here.
    assert_eq!(
        backend(b'Q', b"x\0"),
        Err(DecodeError::UnknownTag { tag: b'Q' })
    );
    assert_eq!(
        frontend(b'Z', b"I"),
        Err(DecodeError::UnknownTag { tag: b'Z' })
    );
    assert!(matches!(
        backend(b'Z', b"X"),
        Err(DecodeError::InvalidValue { .. })
    ));
    assert!(matches!(
        backend(b'R', b"\0\0\0\x63"),
        Err(DecodeError::InvalidValue { .. })
    ));
    assert!(matches!(
        backend(b'R', b"\0\0\0\x06"),
        Err(DecodeError::InvalidValue { .. })
    ));
    assert!(matches!(
        frontend(b'D', b"X\0"),
        Err(DecodeError::InvalidValue { .. })
    ));
    assert!(matches!(
        frontend(b'C', b"s\0"),
        Err(DecodeError::InvalidValue { .. })
    ));
}

#[test]
fn cancel_keys_must_be_between_4_and_256_bytes() {
    assert!(matches!(
        split_startup(b"\0\0\0\x0e\x04\xd2\x16\x2e\0\0\0\x01ab"),
        Err(DecodeError::InvalidValue { .. })
    ));
    assert!(matches!(
        backend(b'K', b"\0\0\0\x01ab"),
        Err(DecodeError::InvalidValue { .. })
    ));
    let mut long = vec![0, 0, 0, 1];
    long.extend_from_slice(&[7; 257]);
    assert!(matches!(
        BackendMessage::decode(&Frame::new(b'K', long)),
        Err(DecodeError::InvalidValue { .. })
    ));
}

#[test]
fn startup_packets_check_their_length_before_buffering() {
    assert_eq!(
        split_startup(b"\0\0\0\x04"),
        Err(DecodeError::LengthTooSmall { len: 4 })
    );
    assert_eq!(
        split_startup(b"\0\0\0\x07\0\0\0"),
        Err(DecodeError::LengthTooSmall { len: 7 })
    );
    assert_eq!(split_startup(b"\0\0\0\x08\x04\xd2"), Ok(None));
    assert_eq!(split_startup(b"\0\0\0"), Ok(None));
    assert_eq!(
        split_startup(b"\0\0\0\x0d\0\x03\0\0user\0"),
        Err(DecodeError::MissingNul)
    );
    let mut huge = BytesMut::with_capacity(8);
    huge.extend_from_slice(b"\x7f\xff\xff\xff");
    let capacity = huge.capacity();
    assert!(matches!(
        StartupPacket::split(&mut huge, 10_000),
        Err(DecodeError::TooLong { .. })
    ));
    assert_eq!(huge.capacity(), capacity);
}

#[test]
fn the_startup_limit_counts_the_packet_after_its_length_word_like_postgresql() {
    // 10004 bytes in all is the largest packet ProcessStartupPacket() accepts.
    assert_eq!(
        StartupPacket::peek_len(b"\0\0\x27\x14", 10_000),
        Ok(Some(10_004))
    );
    assert!(matches!(
        StartupPacket::peek_len(b"\0\0\x27\x15", 10_000),
        Err(DecodeError::TooLong {
            len: 10_005,
            max: 10_000
        })
    ));
}

#[test]
fn encoding_refuses_what_would_corrupt_the_frame() {
    let mut buf = BytesMut::from(&b"kept"[..]);
    assert_eq!(
        FrontendMessage::Query("a\0b".into()).encode(&mut buf),
        Err(EncodeError::InteriorNul)
    );
    let bad_startup =
        StartupPacket::Startup(StartupMessage::new(ProtocolVersion::V3_0).with_param("", "x"));
    assert!(matches!(
        bad_startup.encode(&mut buf),
        Err(EncodeError::InvalidValue { .. })
    ));
    let bad_key = StartupPacket::CancelRequest(CancelKey::new(1, vec![0; 3]));
    assert!(matches!(
        bad_key.encode(&mut buf),
        Err(EncodeError::InvalidValue { .. })
    ));
    let bad_sasl = BackendMessage::Authentication(Authentication::Sasl {
        mechanisms: vec!["".into()],
    });
    assert!(matches!(
        bad_sasl.encode(&mut buf),
        Err(EncodeError::InvalidValue { .. })
    ));
    let bad_field = ErrorResponse::from_fields(vec![(ErrorField::Other(0), "x".into())]);
    assert!(matches!(
        bad_field.encode(&mut buf),
        Err(EncodeError::InvalidValue { .. })
    ));
    let too_many = FrontendMessage::Parse {
        name: "".into(),
        query: "".into(),
        param_types: vec![0; 40_000],
    };
    assert!(matches!(
        too_many.encode(&mut buf),
        Err(EncodeError::TooMany { .. })
    ));
    assert_eq!(&buf[..], b"kept", "a failed encode left bytes behind");
}
