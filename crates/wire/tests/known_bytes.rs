//! Byte-exact encodings written by hand from the protocol documentation, so that a round
//! trip cannot be symmetrically wrong, and decodes of the same bytes.

// Test code: clippy.toml allows unwrap in #[test] functions; this extends it to helpers.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use pgbastion_wire::*;

fn backend(message: &BackendMessage) -> Vec<u8> {
    let mut buf = BytesMut::new();
    message.encode(&mut buf).unwrap();
    buf.to_vec()
}

fn frontend(message: &FrontendMessage) -> Vec<u8> {
    let mut buf = BytesMut::new();
    message.encode(&mut buf).unwrap();
    buf.to_vec()
}

fn startup(packet: &StartupPacket) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).unwrap();
    buf.to_vec()
}

/// Asserts that `message` encodes to `wire` and that `wire` decodes to `message`.
fn both_ways_backend(message: BackendMessage, wire: &[u8]) {
    assert_eq!(backend(&message), wire, "{message:?}");
    let frame = Frame::new(wire[0], Bytes::copy_from_slice(&wire[5..]));
    assert_eq!(BackendMessage::decode(&frame).unwrap(), message);
}

#[test]
fn ready_for_query_idle_is_z_length_5_i() {
    both_ways_backend(
        BackendMessage::ReadyForQuery(TransactionStatus::Idle),
        &[0x5A, 0, 0, 0, 5, 0x49],
    );
}

#[test]
fn ssl_request_is_length_8_then_1234_5679() {
    assert_eq!(
        startup(&StartupPacket::SslRequest),
        [0x00, 0x00, 0x00, 0x08, 0x04, 0xD2, 0x16, 0x2F]
    );
    assert_eq!(
        startup(&StartupPacket::GssEncRequest),
        [0x00, 0x00, 0x00, 0x08, 0x04, 0xD2, 0x16, 0x30]
    );
}

#[test]
fn cancel_request_is_length_16_then_1234_5678_pid_and_key() {
    let packet = StartupPacket::CancelRequest(CancelKey::new(7, vec![1, 2, 3, 4]));
    let wire = b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x07\x01\x02\x03\x04";
    assert_eq!(startup(&packet), wire);
    assert_eq!(
        StartupPacket::split(&mut BytesMut::from(&wire[..]), 10_000),
        Ok(Some(packet))
    );
}

#[test]
fn startup_message_is_version_then_name_value_pairs_then_nul() {
    let packet =
        StartupPacket::Startup(StartupMessage::new(ProtocolVersion::V3_0).with_param("user", "u"));
    let wire = b"\x00\x00\x00\x10\x00\x03\x00\x00user\x00u\x00\x00";
    assert_eq!(startup(&packet), wire);
    assert_eq!(
        StartupPacket::split(&mut BytesMut::from(&wire[..]), 10_000),
        Ok(Some(packet))
    );
    let v32 = StartupPacket::Startup(StartupMessage::new(ProtocolVersion::V3_2));
    assert_eq!(startup(&v32), b"\x00\x00\x00\x09\x00\x03\x00\x02\x00");
}

#[test]
fn authentication_messages_match_their_documented_layout() {
    both_ways_backend(
        BackendMessage::Authentication(Authentication::Ok),
        b"R\x00\x00\x00\x08\x00\x00\x00\x00",
    );
    both_ways_backend(
        BackendMessage::Authentication(Authentication::CleartextPassword),
        b"R\x00\x00\x00\x08\x00\x00\x00\x03",
    );
    both_ways_backend(
        BackendMessage::Authentication(Authentication::Md5Password { salt: *b"salt" }),
        b"R\x00\x00\x00\x0c\x00\x00\x00\x05salt",
    );
    both_ways_backend(
        BackendMessage::Authentication(Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into()],
        }),
        b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00",
    );
    both_ways_backend(
        BackendMessage::Authentication(Authentication::SaslFinal(Bytes::from_static(b"v=x"))),
        b"R\x00\x00\x00\x0b\x00\x00\x00\x0cv=x",
    );
}

#[test]
fn backend_key_data_carries_pid_then_key_to_the_end() {
    both_ways_backend(
        BackendMessage::BackendKeyData(CancelKey::new(0x0102_0304, vec![0xAA; 32])),
        &[&b"K\x00\x00\x00\x28\x01\x02\x03\x04"[..], &[0xAA; 32][..]].concat(),
    );
}

#[test]
fn data_row_and_row_description_match_their_documented_layout() {
    both_ways_backend(
        BackendMessage::DataRow(DataRow::new([Some(&b"ab"[..]), None]).unwrap()),
        b"D\x00\x00\x00\x10\x00\x02\x00\x00\x00\x02ab\xff\xff\xff\xff",
    );
    both_ways_backend(
        BackendMessage::RowDescription {
            fields: vec![FieldDescription {
                name: "a".into(),
                table_oid: 0,
                column_id: 0,
                type_oid: 23,
                type_size: 4,
                type_modifier: -1,
                format: 0,
            }],
        },
        b"T\x00\x00\x00\x1a\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00",
    );
}

#[test]
fn command_complete_error_and_parameter_status_match_their_documented_layout() {
    both_ways_backend(
        BackendMessage::CommandComplete {
            tag: "SELECT 1".into(),
        },
        b"C\x00\x00\x00\x0dSELECT 1\x00",
    );
    both_ways_backend(
        BackendMessage::ErrorResponse(ErrorResponse::new(
            Severity::Fatal,
            SqlState::INVALID_PASSWORD,
            "no",
        )),
        b"E\x00\x00\x00\x1eSFATAL\x00VFATAL\x00C28P01\x00Mno\x00\x00",
    );
    both_ways_backend(
        BackendMessage::ParameterStatus {
            name: "a".into(),
            value: "b".into(),
        },
        b"S\x00\x00\x00\x08a\x00b\x00",
    );
    both_ways_backend(
        BackendMessage::NegotiateProtocolVersion {
            newest_minor: 0,
            unrecognized_options: vec!["_pq_.x".into()],
        },
        b"v\x00\x00\x00\x13\x00\x00\x00\x00\x00\x00\x00\x01_pq_.x\x00",
    );
}

#[test]
fn frontend_messages_match_their_documented_layout() {
    assert_eq!(
        frontend(&FrontendMessage::Query("SELECT 1".into())),
        b"Q\x00\x00\x00\x0dSELECT 1\x00"
    );
    assert_eq!(frontend(&FrontendMessage::Sync), b"S\x00\x00\x00\x04");
    assert_eq!(frontend(&FrontendMessage::Terminate), b"X\x00\x00\x00\x04");
    assert_eq!(
        frontend(&FrontendMessage::Execute {
            portal: "".into(),
            max_rows: 0
        }),
        b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"
    );
    assert_eq!(
        frontend(&FrontendMessage::Parse {
            name: "".into(),
            query: "x".into(),
            param_types: vec![25]
        }),
        b"P\x00\x00\x00\x0d\x00x\x00\x00\x01\x00\x00\x00\x19"
    );
    let mut buf = BytesMut::new();
    SaslInitialResponse {
        mechanism: "M".into(),
        data: None,
    }
    .encode(&mut buf)
    .unwrap();
    assert_eq!(&buf[..], b"p\x00\x00\x00\x0aM\x00\xff\xff\xff\xff");
}

#[test]
fn our_encodings_match_postgres_protocol_for_the_messages_it_can_write() {
    use postgres_protocol::message::frontend as pp;
    let mut ours = BytesMut::new();
    let mut theirs = BytesMut::new();
    frontend::write_parse(&mut ours, "s", "SELECT $1", &[23]).unwrap();
    pp::parse("s", "SELECT $1", [23], &mut theirs).unwrap();
    frontend::write_describe(&mut ours, Target::Statement, "s").unwrap();
    pp::describe(b'S', "s", &mut theirs).unwrap();
    frontend::write_execute(&mut ours, "p", 5).unwrap();
    pp::execute("p", 5, &mut theirs).unwrap();
    frontend::write_close(&mut ours, Target::Portal, "p").unwrap();
    pp::close(b'P', "p", &mut theirs).unwrap();
    frontend::write_copy_data(&mut ours, b"abc").unwrap();
    pp::CopyData::new(&b"abc"[..]).unwrap().write(&mut theirs);
    frontend::write_query(&mut ours, "SELECT 1").unwrap();
    pp::query("SELECT 1", &mut theirs).unwrap();
    frontend::write_sync(&mut ours).unwrap();
    pp::sync(&mut theirs);
    FrontendMessage::Terminate.encode(&mut ours).unwrap();
    pp::terminate(&mut theirs);
    StartupPacket::Startup(StartupMessage::new(ProtocolVersion::V3_0).with_param("user", "u"))
        .encode(&mut ours)
        .unwrap();
    pp::startup_message([("user", "u")], &mut theirs).unwrap();
    StartupPacket::SslRequest.encode(&mut ours).unwrap();
    pp::ssl_request(&mut theirs);
    StartupPacket::CancelRequest(CancelKey::new(9, 77i32.to_be_bytes().to_vec()))
        .encode(&mut ours)
        .unwrap();
    pp::cancel_request(9, 77, &mut theirs);
    PasswordMessage {
        password: "pw".into(),
    }
    .encode(&mut ours)
    .unwrap();
    pp::password_message(b"pw", &mut theirs).unwrap();
    SaslInitialResponse {
        mechanism: "SCRAM-SHA-256".into(),
        data: Some(Bytes::from_static(b"n,,n=,r=x")),
    }
    .encode(&mut ours)
    .unwrap();
    pp::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=x", &mut theirs).unwrap();
    SaslResponse {
        data: Bytes::from_static(b"c=biws"),
    }
    .encode(&mut ours)
    .unwrap();
    pp::sasl_response(b"c=biws", &mut theirs).unwrap();
    assert_eq!(ours, theirs);
}
