//! Property tests: encode → decode is the identity; decoding arbitrary bytes never panics.

use bytes::{Bytes, BytesMut};
use pgbastion_wire::backend::FieldDescription;
use pgbastion_wire::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_.]{0,10}"
}

fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn values() -> impl Strategy<Value = Vec<Option<Bytes>>> {
    vec(option::of(bytes()), 0..6)
}

fn error_response() -> impl Strategy<Value = ErrorResponse> {
    vec((1u8..=255, text()), 0..6).prop_map(ErrorResponse::from_fields)
}

fn authentication() -> impl Strategy<Value = Authentication> {
    prop_oneof![
        Just(Authentication::Ok),
        Just(Authentication::KerberosV5),
        Just(Authentication::CleartextPassword),
        any::<[u8; 4]>().prop_map(|salt| Authentication::Md5Password { salt }),
        Just(Authentication::Gss),
        bytes().prop_map(Authentication::GssContinue),
        Just(Authentication::Sspi),
        vec(name(), 0..3).prop_map(|mechanisms| Authentication::Sasl { mechanisms }),
        bytes().prop_map(Authentication::SaslContinue),
        bytes().prop_map(Authentication::SaslFinal),
    ]
}

fn copy_response() -> impl Strategy<Value = CopyResponse> {
    (any::<i8>(), vec(any::<i16>(), 0..4)).prop_map(|(format, column_formats)| CopyResponse {
        format,
        column_formats,
    })
}

fn field() -> impl Strategy<Value = FieldDescription> {
    (text(), any::<u32>(), any::<i16>(), any::<u32>(), any::<i16>(), any::<i32>(), any::<i16>())
        .prop_map(|(name, table_oid, column_id, type_oid, type_size, type_modifier, format)| {
            FieldDescription {
                name,
                table_oid,
                column_id,
                type_oid,
                type_size,
                type_modifier,
                format,
            }
        })
}

fn backend_message() -> impl Strategy<Value = BackendMessage> {
    prop_oneof![
        authentication().prop_map(BackendMessage::Authentication),
        (any::<u32>(), vec(any::<u8>(), 4..=256)).prop_map(|(process_id, key)| {
            BackendMessage::BackendKeyData {
                process_id,
                secret_key: key.into(),
            }
        }),
        Just(BackendMessage::BindComplete),
        Just(BackendMessage::CloseComplete),
        text().prop_map(|tag| BackendMessage::CommandComplete { tag }),
        bytes().prop_map(BackendMessage::CopyData),
        Just(BackendMessage::CopyDone),
        copy_response().prop_map(BackendMessage::CopyInResponse),
        copy_response().prop_map(BackendMessage::CopyOutResponse),
        copy_response().prop_map(BackendMessage::CopyBothResponse),
        values().prop_map(|v| BackendMessage::DataRow(
            DataRow::new(v.iter().map(|v| v.as_deref())).unwrap()
        )),
        Just(BackendMessage::EmptyQueryResponse),
        error_response().prop_map(BackendMessage::ErrorResponse),
        option::of(bytes()).prop_map(BackendMessage::FunctionCallResponse),
        (any::<u32>(), vec(name(), 0..3)).prop_map(|(newest_minor, unrecognized_options)| {
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized_options,
            }
        }),
        Just(BackendMessage::NoData),
        error_response().prop_map(BackendMessage::NoticeResponse),
        (any::<u32>(), text(), text()).prop_map(|(process_id, channel, payload)| {
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            }
        }),
        vec(any::<u32>(), 0..5).prop_map(|types| BackendMessage::ParameterDescription { types }),
        (text(), text()).prop_map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
        Just(BackendMessage::ParseComplete),
        Just(BackendMessage::PortalSuspended),
        prop_oneof![
            Just(TransactionStatus::Idle),
            Just(TransactionStatus::InTransaction),
            Just(TransactionStatus::Failed)
        ]
        .prop_map(BackendMessage::ReadyForQuery),
        vec(field(), 0..4).prop_map(|fields| BackendMessage::RowDescription { fields }),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![Just(Target::Statement), Just(Target::Portal)]
}

fn frontend_message() -> impl Strategy<Value = FrontendMessage> {
    prop_oneof![
        (text(), text(), vec(any::<i16>(), 0..3), values(), vec(any::<i16>(), 0..3)).prop_map(
            |(portal, statement, param_formats, params, result_formats)| FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            }
        ),
        (target(), text()).prop_map(|(target, name)| FrontendMessage::Close { target, name }),
        bytes().prop_map(FrontendMessage::CopyData),
        Just(FrontendMessage::CopyDone),
        text().prop_map(FrontendMessage::CopyFail),
        (target(), text()).prop_map(|(target, name)| FrontendMessage::Describe { target, name }),
        (text(), any::<i32>()).prop_map(|(portal, max_rows)| FrontendMessage::Execute {
            portal,
            max_rows
        }),
        Just(FrontendMessage::Flush),
        (any::<u32>(), vec(any::<i16>(), 0..3), values(), any::<i16>()).prop_map(
            |(oid, arg_formats, args, result_format)| FrontendMessage::FunctionCall {
                oid,
                arg_formats,
                args,
                result_format,
            }
        ),
        (text(), text(), vec(any::<u32>(), 0..4)).prop_map(|(name, query, param_types)| {
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            }
        }),
        bytes().prop_map(FrontendMessage::AuthenticationResponse),
        text().prop_map(FrontendMessage::Query),
        Just(FrontendMessage::Sync),
        Just(FrontendMessage::Terminate),
    ]
}

fn startup_packet() -> impl Strategy<Value = StartupPacket> {
    prop_oneof![
        Just(StartupPacket::SslRequest),
        Just(StartupPacket::GssEncRequest),
        (any::<u32>(), vec(any::<u8>(), 4..=256)).prop_map(|(process_id, key)| {
            StartupPacket::CancelRequest(CancelRequest {
                process_id,
                secret_key: key.into(),
            })
        }),
        (0u16..8, any::<u16>(), vec((name(), text()), 0..5)).prop_map(|(major, minor, params)| {
            StartupPacket::Startup(StartupMessage {
                version: ProtocolVersion::new(major, minor),
                params,
            })
        }),
    ]
}

fn split_one(buf: &mut BytesMut) -> Frame {
    let frame = FrameDecoder::new(1 << 20).decode(buf).unwrap().unwrap();
    assert!(buf.is_empty());
    frame
}

proptest! {
    #[test]
    fn backend_messages_survive_encode_then_decode(message in backend_message()) {
        let mut buf = BytesMut::new();
        message.encode(&mut buf).unwrap();
        prop_assert_eq!(BackendMessage::decode(&split_one(&mut buf)).unwrap(), message);
    }

    #[test]
    fn frontend_messages_survive_encode_then_decode(message in frontend_message()) {
        let mut buf = BytesMut::new();
        message.encode(&mut buf).unwrap();
        prop_assert_eq!(FrontendMessage::decode(&split_one(&mut buf)).unwrap(), message);
    }

    #[test]
    fn startup_packets_survive_encode_then_decode(packet in startup_packet()) {
        let mut buf = BytesMut::new();
        packet.encode(&mut buf).unwrap();
        // Majors stay below 1234, whose codes mean SSLRequest, CancelRequest and friends.
        let decoded = StartupPacket::split(&mut buf, 10_000).unwrap().unwrap();
        prop_assert_eq!(decoded, packet);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(data in vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&data[..]);
        let decoder = FrameDecoder::new(256);
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            let _ = BackendMessage::decode(&frame);
            let _ = FrontendMessage::decode(&frame);
            let _ = PasswordMessage::decode(&frame.body);
            let _ = SaslInitialResponse::decode(&frame.body);
        }
        for frame in RawFrames::new(&data, 256).flatten() {
            let _ = frame.body.len();
        }
        let mut startup = BytesMut::from(&data[..]);
        let _ = StartupPacket::split(&mut startup, 10_000);
    }

    #[test]
    fn arbitrary_bodies_under_every_tag_never_panic(tag in any::<u8>(), body in vec(any::<u8>(), 0..64)) {
        let frame = Frame::new(tag, body);
        let _ = BackendMessage::decode(&frame);
        let _ = FrontendMessage::decode(&frame);
    }
}
