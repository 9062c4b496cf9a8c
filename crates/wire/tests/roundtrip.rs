//! Every message type: encode, split as a frame, decode, compare. Plus byte-exact encodings
//! checked against the protocol documentation, so a round trip cannot be symmetrically wrong.

use bytes::{Bytes, BytesMut};
use pgbastion_wire::backend::FieldDescription;
use pgbastion_wire::error_response::field;
use pgbastion_wire::*;

fn backend_round_trip(message: BackendMessage) {
    let mut buf = BytesMut::new();
    message.encode(&mut buf).unwrap();
    let frame = FrameDecoder::new(1 << 20).decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "{message:?} left bytes behind");
    assert_eq!(BackendMessage::decode(&frame).unwrap(), message);
}

fn frontend_round_trip(message: FrontendMessage) {
    let mut buf = BytesMut::new();
    message.encode(&mut buf).unwrap();
    let frame = FrameDecoder::new(1 << 20).decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "{message:?} left bytes behind");
    assert_eq!(FrontendMessage::decode(&frame).unwrap(), message);
}

fn startup_round_trip(packet: StartupPacket) {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).unwrap();
    let decoded = StartupPacket::split(&mut buf, 10_000).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(decoded, packet);
}

fn encoded(message: &BackendMessage) -> Vec<u8> {
    let mut buf = BytesMut::new();
    message.encode(&mut buf).unwrap();
    buf.to_vec()
}

fn full_error() -> ErrorResponse {
    let mut e = ErrorResponse::new(Severity::Error, SqlState::UNIQUE_VIOLATION, "duplicate key")
        .detail("Key (id)=(1) already exists.")
        .hint("pick another id");
    for (code, value) in [
        (field::POSITION, "12"),
        (field::INTERNAL_POSITION, "3"),
        (field::INTERNAL_QUERY, "select 1"),
        (field::WHERE, "SQL function"),
        (field::SCHEMA, "public"),
        (field::TABLE, "t"),
        (field::COLUMN, "id"),
        (field::DATA_TYPE, "int4"),
        (field::CONSTRAINT, "t_pkey"),
        (field::FILE, "nbtinsert.c"),
        (field::LINE, "666"),
        (field::ROUTINE, "_bt_check_unique"),
        (b'Z', "a field from the future"),
    ] {
        e = e.with(code, value);
    }
    e
}

#[test]
fn every_authentication_request_round_trips() {
    for auth in [
        Authentication::Ok,
        Authentication::KerberosV5,
        Authentication::CleartextPassword,
        Authentication::Md5Password { salt: [1, 2, 3, 4] },
        Authentication::Gss,
        Authentication::GssContinue(Bytes::from_static(b"gss")),
        Authentication::Sspi,
        Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
        },
        Authentication::SaslContinue(Bytes::from_static(b"r=abc,s=def,i=4096")),
        Authentication::SaslFinal(Bytes::from_static(b"v=xyz")),
        Authentication::SaslFinal(Bytes::new()),
    ] {
        backend_round_trip(BackendMessage::Authentication(auth));
    }
}

#[test]
fn every_other_backend_message_round_trips() {
    let copy = CopyResponse {
        format: 0,
        column_formats: vec![0, 0, 1],
    };
    let messages = vec![
        BackendMessage::BackendKeyData {
            process_id: 4242,
            secret_key: Bytes::from_static(&[9, 8, 7, 6]),
        },
        BackendMessage::BackendKeyData {
            process_id: 1,
            secret_key: Bytes::from(vec![0xAB; 256]),
        },
        BackendMessage::BindComplete,
        BackendMessage::CloseComplete,
        BackendMessage::CommandComplete {
            tag: "INSERT 0 1".into(),
        },
        BackendMessage::CopyData(Bytes::from_static(b"1\tone\n")),
        BackendMessage::CopyData(Bytes::new()),
        BackendMessage::CopyDone,
        BackendMessage::CopyInResponse(copy.clone()),
        BackendMessage::CopyOutResponse(copy.clone()),
        BackendMessage::CopyBothResponse(CopyResponse {
            format: 1,
            column_formats: vec![],
        }),
        BackendMessage::DataRow(
            DataRow::new([Some(&b"1"[..]), None, Some(&b""[..]), Some(&b"text"[..])]).unwrap(),
        ),
        BackendMessage::DataRow(DataRow::new([]).unwrap()),
        BackendMessage::EmptyQueryResponse,
        BackendMessage::ErrorResponse(full_error()),
        BackendMessage::FunctionCallResponse(Some(Bytes::from_static(b"42"))),
        BackendMessage::FunctionCallResponse(None),
        BackendMessage::NegotiateProtocolVersion {
            newest_minor: 2,
            unrecognized_options: vec!["_pq_.compression".into()],
        },
        BackendMessage::NegotiateProtocolVersion {
            newest_minor: 0,
            unrecognized_options: vec![],
        },
        BackendMessage::NoData,
        BackendMessage::NoticeResponse(ErrorResponse::new(
            Severity::Notice,
            SqlState::SUCCESSFUL_COMPLETION,
            "relation already exists, skipping",
        )),
        BackendMessage::NotificationResponse {
            process_id: 77,
            channel: "jobs".into(),
            payload: "".into(),
        },
        BackendMessage::ParameterDescription {
            types: vec![23, 25, 1184],
        },
        BackendMessage::ParameterStatus {
            name: "server_version".into(),
            value: "16.0".into(),
        },
        BackendMessage::ParseComplete,
        BackendMessage::PortalSuspended,
        BackendMessage::ReadyForQuery(TransactionStatus::Idle),
        BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
        BackendMessage::ReadyForQuery(TransactionStatus::Failed),
        BackendMessage::RowDescription {
            fields: vec![
                FieldDescription {
                    name: "id".into(),
                    table_oid: 16384,
                    column_id: 1,
                    type_oid: 23,
                    type_size: 4,
                    type_modifier: -1,
                    format: 0,
                },
                FieldDescription {
                    name: "".into(),
                    table_oid: 0,
                    column_id: 0,
                    type_oid: 25,
                    type_size: -1,
                    type_modifier: -1,
                    format: 1,
                },
            ],
        },
    ];
    for message in messages {
        backend_round_trip(message);
    }
}

#[test]
fn every_frontend_message_round_trips() {
    let messages = vec![
        FrontendMessage::Bind {
            portal: "".into(),
            statement: "s1".into(),
            param_formats: vec![0, 1],
            params: vec![Some(Bytes::from_static(b"42")), None, Some(Bytes::new())],
            result_formats: vec![1],
        },
        FrontendMessage::Close {
            target: Target::Statement,
            name: "s1".into(),
        },
        FrontendMessage::Close {
            target: Target::Portal,
            name: "".into(),
        },
        FrontendMessage::CopyData(Bytes::from_static(b"a\tb\n")),
        FrontendMessage::CopyDone,
        FrontendMessage::CopyFail("client gave up".into()),
        FrontendMessage::Describe {
            target: Target::Portal,
            name: "p".into(),
        },
        FrontendMessage::Execute {
            portal: "".into(),
            max_rows: 0,
        },
        FrontendMessage::Flush,
        FrontendMessage::FunctionCall {
            oid: 1598,
            arg_formats: vec![1],
            args: vec![None, Some(Bytes::from_static(&[0, 0, 0, 1]))],
            result_format: 1,
        },
        FrontendMessage::Parse {
            name: "s1".into(),
            query: "SELECT $1::int".into(),
            param_types: vec![23],
        },
        FrontendMessage::AuthenticationResponse(Bytes::from_static(b"secret\0")),
        FrontendMessage::Query("SELECT 1; SELECT 2".into()),
        FrontendMessage::Sync,
        FrontendMessage::Terminate,
    ];
    for message in messages {
        frontend_round_trip(message);
    }
}

#[test]
fn authentication_responses_round_trip_through_their_typed_parsers() {
    let frame_of = |encode: &dyn Fn(&mut BytesMut)| {
        let mut buf = BytesMut::new();
        encode(&mut buf);
        FrameDecoder::new(1 << 16).decode(&mut buf).unwrap().unwrap()
    };
    let password = PasswordMessage {
        password: "md5abcdef".into(),
    };
    let frame = frame_of(&|b| password.encode(b).unwrap());
    assert_eq!(PasswordMessage::decode(&frame.body).unwrap(), password);

    for data in [None, Some(Bytes::from_static(b"n,,n=,r=abc"))] {
        let initial = SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data,
        };
        let frame = frame_of(&|b| initial.encode(b).unwrap());
        assert_eq!(SaslInitialResponse::decode(&frame.body).unwrap(), initial);
    }
    let response = SaslResponse {
        data: Bytes::from_static(b"c=biws,r=abc,p=xyz"),
    };
    let frame = frame_of(&|b| response.encode(b).unwrap());
    assert_eq!(SaslResponse::decode(&frame.body).unwrap(), response);
}

#[test]
fn every_startup_packet_round_trips() {
    startup_round_trip(StartupPacket::SslRequest);
    startup_round_trip(StartupPacket::GssEncRequest);
    for key_len in [4, 32, 256] {
        startup_round_trip(StartupPacket::CancelRequest(CancelRequest {
            process_id: 1234,
            secret_key: Bytes::from(vec![7; key_len]),
        }));
    }
    for version in [ProtocolVersion::V3_0, ProtocolVersion::V3_2] {
        startup_round_trip(StartupPacket::Startup(StartupMessage {
            version,
            params: vec![
                ("user".into(), "alice".into()),
                ("database".into(), "app".into()),
                ("options".into(), "-c search_path=x".into()),
                ("application_name".into(), "".into()),
            ],
        }));
    }
}

#[test]
fn encodings_match_the_protocol_documentation_byte_for_byte() {
    assert_eq!(
        encoded(&BackendMessage::ReadyForQuery(TransactionStatus::Idle)),
        b"Z\x00\x00\x00\x05I"
    );
    assert_eq!(
        encoded(&BackendMessage::Authentication(Authentication::Ok)),
        b"R\x00\x00\x00\x08\x00\x00\x00\x00"
    );
    assert_eq!(
        encoded(&BackendMessage::Authentication(Authentication::Md5Password {
            salt: *b"salt"
        })),
        b"R\x00\x00\x00\x0c\x00\x00\x00\x05salt"
    );
    assert_eq!(
        encoded(&BackendMessage::Authentication(Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into()]
        })),
        b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00"
    );
    assert_eq!(
        encoded(&BackendMessage::DataRow(
            DataRow::new([Some(&b"ab"[..]), None]).unwrap()
        )),
        b"D\x00\x00\x00\x10\x00\x02\x00\x00\x00\x02ab\xff\xff\xff\xff"
    );
    let mut ssl = BytesMut::new();
    StartupPacket::SslRequest.encode(&mut ssl).unwrap();
    assert_eq!(&ssl[..], b"\x00\x00\x00\x08\x04\xd2\x16\x2f");
    let mut startup = BytesMut::new();
    StartupPacket::Startup(StartupMessage {
        version: ProtocolVersion::V3_0,
        params: vec![("user".into(), "u".into())],
    })
    .encode(&mut startup)
    .unwrap();
    assert_eq!(&startup[..], b"\x00\x00\x00\x10\x00\x03\x00\x00user\x00u\x00\x00");
    let mut query = BytesMut::new();
    FrontendMessage::Query("SELECT 1".into())
        .encode(&mut query)
        .unwrap();
    assert_eq!(&query[..], b"Q\x00\x00\x00\x0dSELECT 1\x00");
}

#[test]
fn data_row_values_are_zero_copy_slices_of_the_frame() {
    let mut buf = BytesMut::new();
    BackendMessage::DataRow(DataRow::new([Some(&b"hello"[..]), None]).unwrap())
        .encode(&mut buf)
        .unwrap();
    let frame = FrameDecoder::new(1024).decode(&mut buf).unwrap().unwrap();
    let BackendMessage::DataRow(row) = BackendMessage::decode(&frame).unwrap() else {
        panic!("not a DataRow");
    };
    let values: Vec<_> = row.value_bytes().collect();
    assert_eq!(values, vec![Some(Bytes::from_static(b"hello")), None]);
    let body_range = frame.body.as_ptr_range();
    let value_ptr = values[0].as_ref().unwrap().as_ptr();
    assert!(body_range.contains(&value_ptr), "value was copied");
}

#[test]
fn error_response_exposes_its_fields() {
    let e = full_error();
    assert_eq!(e.sqlstate(), Some(SqlState::UNIQUE_VIOLATION));
    assert_eq!(e.severity(), Some(Severity::Error));
    assert_eq!(e.message(), "duplicate key");
    assert_eq!(e.field(field::CONSTRAINT), Some("t_pkey"));
    assert_eq!(e.to_string(), "ERROR 23505: duplicate key");
}
