//! Body of the `decode` fuzz target: splits frames off arbitrary bytes and decodes each one
//! as a frontend and a backend message (and through every phase-dependent parser); decodes
//! the bytes as a startup packet too. Nothing may panic, and whatever decodes must re-encode
//! to the exact bytes it came from and decode again to the same value.

use bytes::{Bytes, BytesMut};
use pgbastion_wire::limits::MAX_STARTUP_PACKET_LEN;
use pgbastion_wire::*;

/// Small, so that length checks are exercised without huge inputs.
const MAX_LEN: usize = 4096;

/// Decodes `data` every way the codec can, checking the round trips.
pub fn fuzz_decode(data: &[u8]) {
    split_and_decode(data, FrameDecoder::new(MAX_LEN));
    split_and_decode(data, FrameDecoder::frontend(MAX_LEN));
    decode_startup(data);
}

fn split_and_decode(data: &[u8], decoder: FrameDecoder) {
    let mut buf = BytesMut::from(data);
    let mut split = 0;
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        split += 1;
        check_backend(&frame);
        check_frontend(&frame);
        check_phase_dependent(&frame.body);
    }
    // The borrowed walker must see exactly the frames the owned decoder split.
    let walked = decoder.raw_frames(data).take_while(Result::is_ok).count();
    assert_eq!(walked, split);
}

fn wire(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    frame
        .encode_into(&mut buf)
        .expect("a decoded frame re-encodes");
    buf
}

fn check_backend(frame: &Frame) {
    let Ok(message) = BackendMessage::decode(frame) else {
        return;
    };
    assert_eq!(
        BackendMessage::try_from(frame.clone()).as_ref(),
        Ok(&message)
    );
    let mut buf = BytesMut::new();
    message
        .encode(&mut buf)
        .expect("a decoded message re-encodes");
    assert_eq!(buf, wire(frame), "{message:?} is not canonical");
    let again = FrameDecoder::new(MAX_LEN)
        .decode(&mut buf)
        .expect("frame")
        .expect("whole");
    assert_eq!(BackendMessage::decode(&again), Ok(message));
}

fn check_frontend(frame: &Frame) {
    let Ok(message) = FrontendMessage::decode(frame) else {
        return;
    };
    let mut buf = BytesMut::new();
    message
        .encode(&mut buf)
        .expect("a decoded message re-encodes");
    assert_eq!(buf, wire(frame), "{message:?} is not canonical");
    let again = FrameDecoder::new(MAX_LEN)
        .decode(&mut buf)
        .expect("frame")
        .expect("whole");
    assert_eq!(FrontendMessage::decode(&again), Ok(message));
}

fn check_phase_dependent(body: &Bytes) {
    let raw = AuthenticationResponse(body.clone());
    if let Ok(password) = raw.password() {
        let mut buf = BytesMut::new();
        password.encode(&mut buf).expect("re-encodes");
        assert_eq!(&buf[5..], &body[..]);
    }
    if let Ok(initial) = raw.sasl_initial() {
        let mut buf = BytesMut::new();
        // An empty mechanism name decodes but is refused on encode.
        if initial.encode(&mut buf).is_ok() {
            assert_eq!(&buf[5..], &body[..]);
        }
    }
    let _ = raw.sasl();
    if let Ok(error) = ErrorResponse::decode(body) {
        let mut buf = BytesMut::new();
        error.encode(&mut buf).expect("re-encodes");
        assert_eq!(&buf[5..], &body[..]);
    }
    if let Ok(row) = DataRow::decode(body) {
        assert_eq!(row.values().count(), row.len());
    }
}

fn decode_startup(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let Ok(Some(packet)) = StartupPacket::split(&mut buf, MAX_STARTUP_PACKET_LEN) else {
        return;
    };
    let consumed = data.len() - buf.len();
    let mut out = BytesMut::new();
    // An empty parameter name cannot be decoded (it ends the list), so every decoded
    // packet encodes.
    packet
        .encode(&mut out)
        .expect("a decoded packet re-encodes");
    assert_eq!(&out[..], &data[..consumed], "{packet:?} is not canonical");
    let again = StartupPacket::split(&mut out, MAX_STARTUP_PACKET_LEN);
    assert_eq!(again, Ok(Some(packet)));
}
