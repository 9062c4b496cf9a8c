//! Property tests: encode then decode is the identity; decoding arbitrary bytes never panics.

// Test code: clippy.toml allows unwrap in #[test] functions; this extends it to helpers.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
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

fn cancel_key() -> impl Strategy<Value = CancelKey> {
    (any::<u32>(), vec(any::<u8>(), 4..=256)).prop_map(|(pid, key)| CancelKey::new(pid, key))
}

fn error_response() -> impl Strategy<Value = ErrorResponse> {
    vec((1u8..=255, text()), 0..6).prop_map(|fields| {
        ErrorResponse::from_fields(
            fields
                .into_iter()
                .map(|(code, value)| (ErrorField::from_code(code), value))
                .collect(),
        )
    })
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

fn field_description() -> impl Strategy<Value = FieldDescription> {
    (
        text(),
        any::<u32>(),
        any::<i16>(),
        any::<u32>(),
        any::<i16>(),
        any::<i32>(),
        any::<i16>(),
    )
        .prop_map(
            |(name, table_oid, column_id, type_oid, type_size, type_modifier, format)| {
                FieldDescription {
                    name,
                    table_oid,
                    column_id,
                    type_oid,
                    type_size,
                    type_modifier,
                    format,
                }
            },
        )
}

fn transaction_status() -> impl Strategy<Value = TransactionStatus> {
    prop_oneof![
        Just(TransactionStatus::Idle),
        Just(TransactionStatus::InTransaction),
        Just(TransactionStatus::Failed)
    ]
}

fn backend_message() -> impl Strategy<Value = BackendMessage> {
    prop_oneof![
        authentication().prop_map(BackendMessage::Authentication),
        cancel_key().prop_map(BackendMessage::BackendKeyData),
        Just(BackendMessage::BindComplete),
        Just(BackendMessage::CloseComplete),
        text().prop_map(|tag| BackendMessage::CommandComplete { tag }),
        bytes().prop_map(BackendMessage::CopyData),
        Just(BackendMessage::CopyDone),
        copy_response().prop_map(BackendMessage::CopyInResponse),
        copy_response().prop_map(BackendMessage::CopyOutResponse),
        copy_response().prop_map(BackendMessage::CopyBothResponse),
        values().prop_map(|v| BackendMessage::DataRow(
            DataRow::new(v.iter().map(Option::as_deref)).unwrap()
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
        transaction_status().prop_map(BackendMessage::ReadyForQuery),
        vec(field_description(), 0..4).prop_map(|fields| BackendMessage::RowDescription { fields }),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![Just(Target::Statement), Just(Target::Portal)]
}

fn frontend_message() -> impl Strategy<Value = FrontendMessage> {
    prop_oneof![
        (
            text(),
            text(),
            vec(any::<i16>(), 0..3),
            values(),
            vec(any::<i16>(), 0..3)
        )
            .prop_map(
                |(portal, statement, param_formats, params, result_formats)| {
                    FrontendMessage::Bind {
                        portal,
                        statement,
                        param_formats,
                        params,
                        result_formats,
                    }
                }
            ),
        (target(), text()).prop_map(|(target, name)| FrontendMessage::Close { target, name }),
        bytes().prop_map(FrontendMessage::CopyData),
        Just(FrontendMessage::CopyDone),
        text().prop_map(FrontendMessage::CopyFail),
        (target(), text()).prop_map(|(target, name)| FrontendMessage::Describe { target, name }),
        (text(), any::<i32>())
            .prop_map(|(portal, max_rows)| FrontendMessage::Execute { portal, max_rows }),
        Just(FrontendMessage::Flush),
        (
            any::<u32>(),
            vec(any::<i16>(), 0..3),
            values(),
            any::<i16>()
        )
            .prop_map(|(oid, arg_formats, args, result_format)| {
                FrontendMessage::FunctionCall {
                    oid,
                    arg_formats,
                    args,
                    result_format,
                }
            }),
        (text(), text(), vec(any::<u32>(), 0..4)).prop_map(|(name, query, param_types)| {
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            }
        }),
        bytes().prop_map(|b| FrontendMessage::AuthenticationResponse(AuthenticationResponse(b))),
        text().prop_map(FrontendMessage::Query),
        Just(FrontendMessage::Sync),
        Just(FrontendMessage::Terminate),
    ]
}

fn startup_packet() -> impl Strategy<Value = StartupPacket> {
    prop_oneof![
        Just(StartupPacket::SslRequest),
        Just(StartupPacket::GssEncRequest),
        cancel_key().prop_map(StartupPacket::CancelRequest),
        // Majors stay below 1234, whose codes mean SSLRequest, CancelRequest and friends.
        (0u16..1234, any::<u16>(), vec((name(), text()), 0..5)).prop_map(
            |(major, minor, params)| {
                StartupPacket::Startup(StartupMessage {
                    version: ProtocolVersion::new(major, minor),
                    params,
                })
            }
        ),
    ]
}

fn split_one(buf: &mut BytesMut) -> Frame {
    let frame = FrameDecoder::new(1 << 20).decode(buf).unwrap().unwrap();
    assert!(buf.is_empty());
    frame
}

/// Decodes `frame` through every typed decoder; none may panic.
fn decode_every_way(frame: &Frame) {
    let _ = BackendMessage::decode(frame);
    let _ = FrontendMessage::decode(frame);
    let _ = DataRow::decode(&frame.body);
    let _ = ErrorResponse::decode(&frame.body);
    let _ = StartupPacket::decode(&frame.body);
    let raw = AuthenticationResponse(frame.body.clone());
    let _ = raw.password();
    let _ = raw.sasl_initial();
    let _ = raw.sasl();
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
        let decoded = StartupPacket::split(&mut buf, limits::MAX_STARTUP_PACKET_LEN).unwrap().unwrap();
        prop_assert_eq!(decoded, packet);
    }

    #[test]
    fn sasl_initial_responses_survive_encode_then_decode(
        mechanism in name(),
        data in option::of(bytes()),
    ) {
        let initial = SaslInitialResponse { mechanism, data };
        let mut buf = BytesMut::new();
        initial.encode(&mut buf).unwrap();
        let frame = split_one(&mut buf);
        prop_assert_eq!(SaslInitialResponse::decode(&frame.body).unwrap(), initial);
    }

    #[test]
    fn a_stream_of_messages_splits_back_into_the_same_messages(
        messages in vec(backend_message(), 0..12),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = BytesMut::new();
        for message in &messages {
            message.encode(&mut wire).unwrap();
        }
        // Deliver the stream in two reads split at an arbitrary point.
        let cut = cut.index(wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..cut]);
        let decoder = FrameDecoder::new(1 << 20);
        let mut decoded = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            decoded.push(BackendMessage::decode(&frame).unwrap());
        }
        buf.extend_from_slice(&wire[cut..]);
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            decoded.push(BackendMessage::decode(&frame).unwrap());
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&decoded, &messages);
        let raw: Vec<_> = RawFrames::new(&wire, 1 << 20).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(raw.len(), messages.len());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(data in vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&data[..]);
        let decoder = FrameDecoder::new(256);
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            decode_every_way(&frame);
        }
        let mut frames = RawFrames::new(&data, 256);
        let total: usize = frames.by_ref().flatten().map(|f| f.body.len() + 5).sum();
        prop_assert_eq!(total, frames.consumed());
        let mut startup = BytesMut::from(&data[..]);
        let _ = StartupPacket::split(&mut startup, limits::MAX_STARTUP_PACKET_LEN);
    }

    #[test]
    fn arbitrary_bodies_under_every_tag_never_panic(tag in any::<u8>(), body in vec(any::<u8>(), 0..64)) {
        decode_every_way(&Frame::new(tag, body));
    }

    #[test]
    fn decoded_messages_re_encode_to_the_bytes_they_came_from(tag in any::<u8>(), body in vec(any::<u8>(), 0..64)) {
        // Whatever decodes must be canonical: encoding it gives back the exact frame.
        let frame = Frame::new(tag, body);
        let mut original = BytesMut::new();
        frame.encode_into(&mut original).unwrap();
        if let Ok(message) = BackendMessage::decode(&frame) {
            let mut buf = BytesMut::new();
            message.encode(&mut buf).unwrap();
            prop_assert_eq!(&buf, &original);
        }
        if let Ok(message) = FrontendMessage::decode(&frame) {
            let mut buf = BytesMut::new();
            message.encode(&mut buf).unwrap();
            prop_assert_eq!(&buf, &original);
        }
    }

    #[test]
    fn decoded_startup_packets_re_encode_to_the_bytes_they_came_from(body in vec(any::<u8>(), 0..64)) {
        let body = Bytes::from(body);
        if let Ok(packet) = StartupPacket::decode(&body) {
            let mut buf = BytesMut::new();
            packet.encode(&mut buf).unwrap();
            prop_assert_eq!(&buf[4..], &body[..]);
        }
    }
}
