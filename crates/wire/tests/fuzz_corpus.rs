//! The `decode` fuzz target on the stable toolchain. Its seed corpus
//! (fuzz/corpus/decode/seed-*) holds real message streams made by this crate's encoders; a
//! test keeps the committed files equal to what the encoders produce, and another replays
//! every file of the corpus through the target's body (fuzz/harness/decode.rs). Regenerate
//! the seeds after a deliberate wire change with
//! `PGBASTION_WRITE_FUZZ_SEEDS=1 cargo test -p pgbastion-wire --test fuzz_corpus`.

// Test code: clippy.toml allows unwrap in #[test] functions; this extends it to helpers.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use pgbastion_wire::*;

#[path = "../../../fuzz/harness/decode.rs"]
mod decode;
#[path = "../../../fuzz/harness/replay.rs"]
mod replay;

fn backend(messages: &[BackendMessage]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    messages.iter().for_each(|m| m.encode(&mut buf).unwrap());
    buf.to_vec()
}

fn frontend(messages: &[FrontendMessage]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    messages.iter().for_each(|m| m.encode(&mut buf).unwrap());
    buf.to_vec()
}

fn startup(packet: StartupPacket) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).unwrap();
    buf.to_vec()
}

fn column(name: &str, type_oid: u32) -> FieldDescription {
    FieldDescription {
        name: name.into(),
        table_oid: 16384,
        column_id: 1,
        type_oid,
        type_size: -1,
        type_modifier: -1,
        format: 0,
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let error = ErrorResponse::new(Severity::Error, SqlState::UNIQUE_VIOLATION, "duplicate key")
        .detail("Key (id)=(1) already exists.")
        .schema("public")
        .table("t")
        .constraint("t_pkey")
        .file("nbtinsert.c")
        .line("666")
        .routine("_bt_check_unique");
    vec![
        (
            "seed-backend-simple-query-result",
            backend(&[
                BackendMessage::RowDescription {
                    fields: vec![column("id", 23), column("note", 25)],
                },
                BackendMessage::DataRow(DataRow::new([Some(&b"1"[..]), Some(b"one")]).unwrap()),
                BackendMessage::DataRow(DataRow::new([Some(&b"2"[..]), None]).unwrap()),
                BackendMessage::CommandComplete {
                    tag: "SELECT 2".into(),
                },
                BackendMessage::ReadyForQuery(TransactionStatus::Idle),
            ]),
        ),
        (
            "seed-backend-scram-login",
            backend(&[
                BackendMessage::Authentication(Authentication::Sasl {
                    mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
                }),
                BackendMessage::Authentication(Authentication::SaslContinue(Bytes::from_static(
                    b"r=abc,s=c2FsdA==,i=4096",
                ))),
                BackendMessage::Authentication(Authentication::SaslFinal(Bytes::from_static(
                    b"v=c2lnbmF0dXJl",
                ))),
                BackendMessage::Authentication(Authentication::Ok),
                BackendMessage::ParameterStatus {
                    name: "server_version".into(),
                    value: "18.0".into(),
                },
                BackendMessage::BackendKeyData(CancelKey::new(4242, vec![0x5a; 32])),
                BackendMessage::ReadyForQuery(TransactionStatus::Idle),
            ]),
        ),
        (
            "seed-backend-md5-login-v3-0",
            backend(&[
                BackendMessage::Authentication(Authentication::Md5Password { salt: *b"salt" }),
                BackendMessage::Authentication(Authentication::Ok),
                BackendMessage::BackendKeyData(CancelKey::new(7, vec![1, 2, 3, 4])),
                BackendMessage::NegotiateProtocolVersion {
                    newest_minor: 0,
                    unrecognized_options: vec!["_pq_.compression".into()],
                },
                BackendMessage::ReadyForQuery(TransactionStatus::Idle),
            ]),
        ),
        (
            "seed-backend-errors-and-notices",
            backend(&[
                BackendMessage::NoticeResponse(ErrorResponse::new(
                    Severity::Notice,
                    SqlState::SUCCESSFUL_COMPLETION,
                    "relation already exists, skipping",
                )),
                BackendMessage::ErrorResponse(error),
                BackendMessage::ReadyForQuery(TransactionStatus::Failed),
            ]),
        ),
        (
            "seed-backend-extended-query-and-copy",
            backend(&[
                BackendMessage::ParseComplete,
                BackendMessage::ParameterDescription {
                    types: vec![23, 25],
                },
                BackendMessage::NoData,
                BackendMessage::BindComplete,
                BackendMessage::PortalSuspended,
                BackendMessage::CloseComplete,
                BackendMessage::EmptyQueryResponse,
                BackendMessage::CopyOutResponse(CopyResponse {
                    format: 0,
                    column_formats: vec![0, 0],
                }),
                BackendMessage::CopyData(Bytes::from_static(b"1\tone\n")),
                BackendMessage::CopyDone,
                BackendMessage::NotificationResponse {
                    process_id: 77,
                    channel: "jobs".into(),
                    payload: "42".into(),
                },
                BackendMessage::FunctionCallResponse(None),
                BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
            ]),
        ),
        (
            "seed-frontend-extended-query-pipeline",
            frontend(&[
                FrontendMessage::Parse {
                    name: "s1".into(),
                    query: "SELECT $1::int, $2".into(),
                    param_types: vec![23, 0],
                },
                FrontendMessage::Bind {
                    portal: "".into(),
                    statement: "s1".into(),
                    param_formats: vec![0],
                    params: vec![Some(Bytes::from_static(b"42")), None],
                    result_formats: vec![1],
                },
                FrontendMessage::Describe {
                    target: Target::Portal,
                    name: "".into(),
                },
                FrontendMessage::Execute {
                    portal: "".into(),
                    max_rows: 100,
                },
                FrontendMessage::Close {
                    target: Target::Statement,
                    name: "s1".into(),
                },
                FrontendMessage::Flush,
                FrontendMessage::Sync,
            ]),
        ),
        (
            "seed-frontend-query-copy-terminate",
            frontend(&[
                FrontendMessage::Query("COPY t FROM STDIN".into()),
                FrontendMessage::CopyData(Bytes::from_static(b"1\tone\n")),
                FrontendMessage::CopyDone,
                FrontendMessage::CopyFail("gave up".into()),
                FrontendMessage::FunctionCall {
                    oid: 1598,
                    arg_formats: vec![1],
                    args: vec![Some(Bytes::from_static(&[0, 0, 0, 1]))],
                    result_format: 1,
                },
                FrontendMessage::Terminate,
            ]),
        ),
        ("seed-frontend-scram-responses", {
            let mut buf = BytesMut::new();
            SaslInitialResponse {
                mechanism: "SCRAM-SHA-256".into(),
                data: Some(Bytes::from_static(b"n,,n=,r=abc")),
            }
            .encode(&mut buf)
            .unwrap();
            SaslResponse {
                data: Bytes::from_static(b"c=biws,r=abcdef,p=cHJvb2Y="),
            }
            .encode(&mut buf)
            .unwrap();
            PasswordMessage {
                password: "md5e10adc3949ba59abbe56e057f20f883e".into(),
            }
            .encode(&mut buf)
            .unwrap();
            buf.to_vec()
        }),
        (
            "seed-startup-v3-0",
            startup(StartupPacket::Startup(
                StartupMessage::new(ProtocolVersion::V3_0)
                    .with_param("user", "alice")
                    .with_param("database", "app")
                    .with_param("application_name", "psql"),
            )),
        ),
        (
            "seed-startup-v3-2-protocol-option",
            startup(StartupPacket::Startup(
                StartupMessage::new(ProtocolVersion::V3_2)
                    .with_param("user", "bob")
                    .with_param("options", "-c search_path=app")
                    .with_param("_pq_.test_option", "on"),
            )),
        ),
        ("seed-ssl-request", startup(StartupPacket::SslRequest)),
        ("seed-gssenc-request", startup(StartupPacket::GssEncRequest)),
        (
            "seed-cancel-request-v3-0",
            startup(StartupPacket::CancelRequest(CancelKey::new(
                4242,
                vec![1, 2, 3, 4],
            ))),
        ),
        (
            "seed-cancel-request-v3-2-long-key",
            startup(StartupPacket::CancelRequest(CancelKey::new(
                4242,
                vec![0xa5; 256],
            ))),
        ),
    ]
}

#[test]
fn the_committed_seed_corpus_matches_what_the_encoders_produce() {
    replay::check_seeds("decode", &seeds());
}

#[test]
fn every_decode_corpus_file_runs_without_panicking() {
    assert!(replay::replay("decode", decode::fuzz_decode) >= seeds().len());
}
