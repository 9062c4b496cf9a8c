//! Malformed input yields typed errors, never panics.

use bytes::{Bytes, BytesMut};
use pgbastion_wire::*;

fn backend(tag: u8, body: &'static [u8]) -> Result<BackendMessage, DecodeError> {
    BackendMessage::decode(&Frame::new(tag, Bytes::from_static(body)))
}

fn frontend(tag: u8, body: &'static [u8]) -> Result<FrontendMessage, DecodeError> {
    FrontendMessage::decode(&Frame::new(tag, Bytes::from_static(body)))
}

#[test]
fn truncated_bodies_are_errors() {
    assert!(matches!(backend(b'K', b"\0\0"), Err(DecodeError::Truncated { .. })));
    assert!(matches!(backend(b'R', b"\0\0\0\x05ab"), Err(DecodeError::Truncated { .. })));
    assert!(matches!(frontend(b'E', b"\0\0\0"), Err(DecodeError::Truncated { .. })));
}

#[test]
fn missing_nul_terminators_are_errors() {
    assert_eq!(backend(b'C', b"SELECT 1"), Err(DecodeError::MissingNul));
    assert_eq!(frontend(b'Q', b"SELECT 1"), Err(DecodeError::MissingNul));
    assert_eq!(backend(b'S', b"name\0value"), Err(DecodeError::MissingNul));
}

#[test]
fn invalid_utf8_is_an_error_where_text_is_required() {
    assert_eq!(frontend(b'Q', b"\xc3\x28\0"), Err(DecodeError::InvalidUtf8));
}

#[test]
fn counts_that_exceed_the_body_are_errors() {
    assert!(matches!(backend(b'D', b"\x75\x30\0\0\0\x01a"), Err(DecodeError::InvalidCount { .. })));
    assert!(matches!(backend(b'T', b"\x7f\xff"), Err(DecodeError::InvalidCount { .. })));
    assert!(matches!(backend(b't', b"\0\x05\0\0\0\x17"), Err(DecodeError::InvalidCount { .. })));
    assert!(matches!(frontend(b'P', b"\0q\0\x7f\xff"), Err(DecodeError::InvalidCount { .. })));
    assert!(matches!(backend(b'D', b"\xff\xff"), Err(DecodeError::InvalidCount { .. })));
    assert!(matches!(backend(b'D', b"\0\x01\0\0\0\x09abc"), Err(DecodeError::InvalidCount { .. })));
}

#[test]
fn trailing_bytes_are_errors() {
    assert_eq!(backend(b'Z', b"II"), Err(DecodeError::TrailingBytes { n: 1 }));
    assert_eq!(frontend(b'S', b"x"), Err(DecodeError::TrailingBytes { n: 1 }));
    assert!(matches!(backend(b'D', b"\0\0junk"), Err(DecodeError::TrailingBytes { .. })));
}

#[test]
fn unknown_tags_and_values_are_errors() {
    assert_eq!(backend(b'?', b""), Err(DecodeError::UnknownTag { tag: b'?' }));
    assert_eq!(frontend(b'?', b""), Err(DecodeError::UnknownTag { tag: b'?' }));
    assert!(matches!(backend(b'Z', b"X"), Err(DecodeError::InvalidValue { .. })));
    assert!(matches!(backend(b'R', b"\0\0\0\x63"), Err(DecodeError::InvalidValue { .. })));
    assert!(matches!(frontend(b'D', b"X\0"), Err(DecodeError::InvalidValue { .. })));
}

#[test]
fn cancel_keys_must_be_between_4_and_256_bytes() {
    let mut short = BytesMut::from(&b"\0\0\0\x0e\x04\xd2\x16\x2e\0\0\0\x01ab"[..]);
    assert!(matches!(StartupPacket::split(&mut short, 10_000), Err(DecodeError::InvalidValue { .. })));
    assert!(matches!(backend(b'K', b"\0\0\0\x01ab"), Err(DecodeError::InvalidValue { .. })));
}

#[test]
fn startup_packets_check_their_length_before_buffering() {
    let mut tiny = BytesMut::from(&b"\0\0\0\x04"[..]);
    assert_eq!(StartupPacket::split(&mut tiny, 10_000), Err(DecodeError::LengthTooSmall { len: 4 }));
    let mut huge = BytesMut::from(&b"\0\0\x27\x11"[..]);
    assert!(matches!(StartupPacket::split(&mut huge, 10_000), Err(DecodeError::TooLong { len: 10_001, .. })));
    let mut partial = BytesMut::from(&b"\0\0\0\x08\x04\xd2"[..]);
    assert_eq!(StartupPacket::split(&mut partial, 10_000), Ok(None));
    let mut unterminated = BytesMut::from(&b"\0\0\0\x0d\0\x03\0\0user\0"[..]);
    assert_eq!(StartupPacket::split(&mut unterminated, 10_000), Err(DecodeError::MissingNul));
}

#[test]
fn encoding_refuses_interior_nul_bytes() {
    let mut buf = BytesMut::new();
    assert_eq!(
        FrontendMessage::Query("a\0b".into()).encode(&mut buf),
        Err(EncodeError::InteriorNul)
    );
    assert!(buf.is_empty());
}
