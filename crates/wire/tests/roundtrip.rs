//! Every message type: encode, split as a frame, decode, compare.

// Test code: clippy.toml allows unwrap in #[test] functions; this extends it to helpers.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use pgbastion_wire::*;

fn split_one(buf: &mut BytesMut) -> Frame {
    let frame = FrameDecoder::new(1 << 20).decode(buf).unwrap().unwrap();
    assert!(buf.is_empty(), "the frame left bytes behind");
    frame
}

fn backend_round_trip(message: BackendMessage) {
    let mut buf = BytesMut::new();
    message.encode(&mut buf).unwrap();
    let wire = buf.clone().freeze();
    let frame = split_one(&mut buf);
    assert_eq!(frame.tag, message.tag().byte());
    assert_eq!(BackendMessage::decode(&frame).unwrap(), message);
    let mut forwarded = BytesMut::new();
    frame.encode_into(&mut forwarded).unwrap();
    assert_eq!(
        forwarded, wire,
        "forwarding changed the bytes of {message:?}"
    );
}

fn frontend_round_trip(message: FrontendMessage) {
    let mut buf = BytesMut::new();
    message.encode(&mut buf).unwrap();
    let frame = split_one(&mut buf);
    assert_eq!(frame.tag, message.tag().byte());
    assert_eq!(FrontendMessage::decode(&frame).unwrap(), message);
}

fn startup_round_trip(packet: StartupPacket) {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).unwrap();
    let decoded = StartupPacket::split(&mut buf, limits::MAX_STARTUP_PACKET_LEN)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    assert_eq!(decoded, packet);
}

fn full_error() -> ErrorResponse {
    ErrorResponse::new(Severity::Error, SqlState::UNIQUE_VIOLATION, "duplicate key")
        .detail("Key (id)=(1) already exists.")
        .hint("pick another id")
        .position("12")
        .internal_position("3")
        .internal_query("select 1")
        .context("SQL function")
        .schema("public")
        .table("t")
        .column("id")
        .data_type("int4")
        .constraint("t_pkey")
        .file("nbtinsert.c")
        .line("666")
        .routine("_bt_check_unique")
        .with(ErrorField::Other(b'Z'), "a field from the future")
}

fn field(name: &str, type_oid: u32, type_size: i16, format: i16) -> FieldDescription {
    FieldDescription {
        name: name.into(),
        table_oid: 16384,
        column_id: 1,
        type_oid,
        type_size,
        type_modifier: -1,
        format,
    }
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
        Authentication::Sasl { mechanisms: vec![] },
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
        BackendMessage::BackendKeyData(CancelKey::new(4242, vec![9, 8, 7, 6])),
        BackendMessage::BackendKeyData(CancelKey::new(1, vec![0xAB; 256])),
        BackendMessage::BindComplete,
        BackendMessage::CloseComplete,
        BackendMessage::CommandComplete {
            tag: "INSERT 0 1".into(),
        },
        BackendMessage::CommandComplete { tag: "".into() },
        BackendMessage::CopyData(Bytes::from_static(b"1\tone\n")),
        BackendMessage::CopyData(Bytes::new()),
        BackendMessage::CopyDone,
        BackendMessage::CopyInResponse(copy.clone()),
        BackendMessage::CopyOutResponse(copy),
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
        BackendMessage::ErrorResponse(ErrorResponse::default()),
        BackendMessage::FunctionCallResponse(Some(Bytes::from_static(b"42"))),
        BackendMessage::FunctionCallResponse(Some(Bytes::new())),
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
        BackendMessage::ParameterDescription { types: vec![] },
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
            fields: vec![field("id", 23, 4, 0), field("", 25, -1, 1)],
        },
        BackendMessage::RowDescription { fields: vec![] },
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
        FrontendMessage::Bind {
            portal: "p".into(),
            statement: "".into(),
            param_formats: vec![],
            params: vec![None],
            result_formats: vec![],
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
        FrontendMessage::CopyData(Bytes::new()),
        FrontendMessage::CopyDone,
        FrontendMessage::CopyFail("client gave up".into()),
        FrontendMessage::Describe {
            target: Target::Portal,
            name: "p".into(),
        },
        FrontendMessage::Describe {
            target: Target::Statement,
            name: "".into(),
        },
        FrontendMessage::Execute {
            portal: "".into(),
            max_rows: 0,
        },
        FrontendMessage::Execute {
            portal: "p".into(),
            max_rows: 100,
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
        FrontendMessage::Parse {
            name: "".into(),
            query: "".into(),
            param_types: vec![],
        },
        FrontendMessage::AuthenticationResponse(AuthenticationResponse(Bytes::from_static(
            b"secret\0",
        ))),
        FrontendMessage::Query("SELECT 1; SELECT 2".into()),
        FrontendMessage::Query("".into()),
        FrontendMessage::Sync,
        FrontendMessage::Terminate,
    ];
    for message in messages {
        frontend_round_trip(message);
    }
}

#[test]
fn authentication_responses_round_trip_through_their_typed_parsers() {
    let raw = |encode: &dyn Fn(&mut BytesMut)| {
        let mut buf = BytesMut::new();
        encode(&mut buf);
        let frame = split_one(&mut buf);
        assert_eq!(frame.tag, b'p');
        match FrontendMessage::decode(&frame).unwrap() {
            FrontendMessage::AuthenticationResponse(raw) => raw,
            other => panic!("decoded as {other:?}"),
        }
    };
    let password = PasswordMessage {
        password: "md5abcdef".into(),
    };
    assert_eq!(
        raw(&|b| password.encode(b).unwrap()).password().unwrap(),
        password
    );
    let empty = PasswordMessage {
        password: "".into(),
    };
    assert_eq!(
        raw(&|b| empty.encode(b).unwrap()).password().unwrap(),
        empty
    );

    for data in [
        None,
        Some(Bytes::new()),
        Some(Bytes::from_static(b"n,,n=,r=abc")),
    ] {
        let initial = SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data,
        };
        let decoded = raw(&|b| initial.encode(b).unwrap()).sasl_initial().unwrap();
        assert_eq!(decoded, initial);
    }
    for data in [Bytes::new(), Bytes::from_static(b"c=biws,r=abc,p=xyz")] {
        let response = SaslResponse { data };
        assert_eq!(raw(&|b| response.encode(b).unwrap()).sasl(), response);
    }
}

#[test]
fn every_startup_packet_round_trips() {
    startup_round_trip(StartupPacket::SslRequest);
    startup_round_trip(StartupPacket::GssEncRequest);
    for key_len in [4, 32, 256] {
        startup_round_trip(StartupPacket::CancelRequest(CancelKey::new(
            1234,
            vec![7; key_len],
        )));
    }
    for version in [ProtocolVersion::V3_0, ProtocolVersion::V3_2] {
        startup_round_trip(StartupPacket::Startup(
            StartupMessage::new(version)
                .with_param("user", "alice")
                .with_param("database", "app")
                .with_param("options", "-c search_path=x")
                .with_param("application_name", "")
                .with_param("_pq_.test_option", "1"),
        ));
    }
    startup_round_trip(StartupPacket::Startup(StartupMessage::new(
        ProtocolVersion::V3_0,
    )));
}

#[test]
fn data_row_values_are_zero_copy_slices_of_the_frame() {
    let mut buf = BytesMut::new();
    BackendMessage::DataRow(DataRow::new([Some(&b"hello"[..]), None]).unwrap())
        .encode(&mut buf)
        .unwrap();
    let frame = split_one(&mut buf);
    let BackendMessage::DataRow(row) = BackendMessage::decode(&frame).unwrap() else {
        panic!("not a DataRow");
    };
    let values = row.to_vec();
    assert_eq!(values, vec![Some(Bytes::from_static(b"hello")), None]);
    let body = frame.body.as_ptr_range();
    assert!(
        body.contains(&values[0].as_ref().unwrap().as_ptr()),
        "value was copied"
    );
    let borrowed = row.values().next().unwrap().unwrap();
    assert!(body.contains(&borrowed.as_ptr()), "value was copied");
}

#[test]
fn copy_data_and_bind_parameters_are_zero_copy_slices_of_the_frame() {
    let mut buf = BytesMut::new();
    frontend::write_copy_data(&mut buf, b"row\n").unwrap();
    frontend::write_bind(&mut buf, "", "", &[], [Some(&b"v"[..])], &[]).unwrap();
    let decoder = FrameDecoder::new(1024);
    let copy = decoder.decode(&mut buf).unwrap().unwrap();
    let FrontendMessage::CopyData(data) = FrontendMessage::decode(&copy).unwrap() else {
        panic!("not CopyData");
    };
    assert_eq!(data.as_ptr(), copy.body.as_ptr());
    let bind = decoder.decode(&mut buf).unwrap().unwrap();
    let FrontendMessage::Bind { params, .. } = FrontendMessage::decode(&bind).unwrap() else {
        panic!("not Bind");
    };
    let value = params[0].as_ref().unwrap();
    assert!(bind.body.as_ptr_range().contains(&value.as_ptr()));
}

#[test]
fn error_response_exposes_its_fields() {
    let e = full_error();
    assert_eq!(e.sqlstate(), Some(SqlState::UNIQUE_VIOLATION));
    assert_eq!(e.severity(), Some(Severity::Error));
    assert_eq!(e.message(), "duplicate key");
    assert_eq!(e.get(ErrorField::Constraint), Some("t_pkey"));
    assert_eq!(
        e.get(ErrorField::Other(b'Z')),
        Some("a field from the future")
    );
    assert_eq!(e.fields().len(), 19);
    assert_eq!(e.to_string(), "ERROR 23505: duplicate key");
}

#[test]
fn a_pipelined_batch_splits_into_its_messages_in_order() {
    let mut buf = BytesMut::new();
    frontend::write_parse(&mut buf, "s", "SELECT $1", &[23]).unwrap();
    frontend::write_bind(&mut buf, "", "s", &[], [Some(&b"1"[..])], &[]).unwrap();
    frontend::write_describe(&mut buf, Target::Portal, "").unwrap();
    frontend::write_execute(&mut buf, "", 0).unwrap();
    frontend::write_close(&mut buf, Target::Statement, "s").unwrap();
    frontend::write_sync(&mut buf).unwrap();
    frontend::write_query(&mut buf, "SELECT 1").unwrap();
    buf.extend_from_slice(b"X\0\0");
    let tags: Vec<u8> = FrameDecoder::frontend(usize::MAX)
        .raw_frames(&buf)
        .map(|f| f.unwrap().tag)
        .collect();
    assert_eq!(tags, b"PBDECSQ");
    let decoder = FrameDecoder::frontend(usize::MAX);
    let mut decoded = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        decoded.push(FrontendMessage::decode(&frame).unwrap().tag());
    }
    assert_eq!(decoded.len(), 7);
    assert_eq!(
        &buf[..],
        b"X\0\0",
        "the partial Terminate waits for more bytes"
    );
}
