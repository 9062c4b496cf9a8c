//! The codec against a real PostgreSQL: a client built only on `pgbastion-wire` (and the
//! SCRAM client of `pgbastion-auth`) over a plain TCP stream.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgbastion_testkit::{Cluster, PasswordEncryption, RawClient};
use pgbastion_wire::{BackendMessage, FrontendMessage, SqlState, Target, TransactionStatus};

/// A cluster of the test's own, stopped when the test ends (a `static` one would never be
/// dropped, and its server would outlive the test process).
fn cluster() -> Cluster {
    Cluster::builder()
        .hba(&[
            "host all trusted 127.0.0.1/32 trust",
            "host all md5_user 127.0.0.1/32 md5",
            "host all scram_user 127.0.0.1/32 scram-sha-256",
            "host all postgres 127.0.0.1/32 trust",
        ])
        .user("trusted", "unused", PasswordEncryption::Md5)
        .user("md5_user", "md5-secret", PasswordEncryption::Md5)
        .user(
            "scram_user",
            "scram secret ü",
            PasswordEncryption::ScramSha256,
        )
        .start()
        .expect("start the test cluster")
}

async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(90), work)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn superuser(cluster: &Cluster) -> RawClient {
    RawClient::startup(cluster.addr(), "postgres", "postgres", None)
        .await
        .expect("superuser login")
}

fn data_rows(messages: &[BackendMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            BackendMessage::DataRow(row) => Some(
                row.values()
                    .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn command_tags(messages: &[BackendMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            BackendMessage::CommandComplete { tag } => Some(tag.clone()),
            _ => None,
        })
        .collect()
}

fn ready_status(messages: &[BackendMessage]) -> Option<TransactionStatus> {
    match messages.last() {
        Some(BackendMessage::ReadyForQuery(status)) => Some(*status),
        _ => None,
    }
}

#[tokio::test]
async fn startup_works_with_trust_md5_and_scram() {
    let cluster = cluster();
    within("logins", async {
        for (user, password) in [
            ("trusted", None),
            ("md5_user", Some("md5-secret")),
            ("scram_user", Some("scram secret ü")),
        ] {
            let mut client = RawClient::startup(cluster.addr(), user, "postgres", password)
                .await
                .unwrap_or_else(|e| panic!("{user}: {e}"));
            assert!(client.backend_key.is_some(), "{user}: no BackendKeyData");
            assert!(client.parameters.iter().any(|(k, _)| k == "server_version"));
            let rows = data_rows(&client.simple_query("SELECT current_user").await.unwrap());
            assert_eq!(rows, vec![vec![Some(user.to_owned())]]);
        }
    })
    .await;
}

#[tokio::test]
async fn wrong_passwords_get_28p01_for_md5_and_scram() {
    let cluster = cluster();
    within("wrong passwords", async {
        for user in ["md5_user", "scram_user"] {
            let err = RawClient::startup(cluster.addr(), user, "postgres", Some("nope"))
                .await
                .unwrap_err();
            let error = err
                .server_error()
                .unwrap_or_else(|| panic!("{user}: {err}"));
            assert_eq!(error.sqlstate(), Some(SqlState::INVALID_PASSWORD), "{user}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_simple_query_with_several_statements_answers_each() {
    let cluster = cluster();
    within("multi-statement query", async {
        let mut client = superuser(&cluster).await;
        let messages = client
            .simple_query("SELECT 1 AS one; SELECT 'two', NULL; CREATE TEMP TABLE t(x int)")
            .await
            .unwrap();
        let descriptions = messages
            .iter()
            .filter(|m| matches!(m, BackendMessage::RowDescription { .. }))
            .count();
        assert_eq!(descriptions, 2);
        assert_eq!(
            data_rows(&messages),
            vec![
                vec![Some("1".to_owned())],
                vec![Some("two".to_owned()), None]
            ]
        );
        assert_eq!(
            command_tags(&messages),
            ["SELECT 1", "SELECT 1", "CREATE TABLE"]
        );
        assert_eq!(ready_status(&messages), Some(TransactionStatus::Idle));
    })
    .await;
}

fn bind_execute(client: &mut RawClient, statement: &str, param: &str) {
    client
        .queue(&FrontendMessage::Bind {
            portal: String::new(),
            statement: statement.to_owned(),
            param_formats: vec![],
            params: vec![Some(Bytes::copy_from_slice(param.as_bytes()))],
            result_formats: vec![],
        })
        .unwrap();
    client
        .queue(&FrontendMessage::Execute {
            portal: String::new(),
            max_rows: 0,
        })
        .unwrap();
}

#[tokio::test]
async fn pipelined_extended_queries_answer_in_order_after_one_sync() {
    let cluster = cluster();
    within("pipeline", async {
        let mut client = superuser(&cluster).await;
        client
            .queue(&FrontendMessage::Parse {
                name: "double".into(),
                query: "SELECT $1::int * 2".into(),
                param_types: vec![],
            })
            .unwrap();
        client
            .queue(&FrontendMessage::Describe {
                target: Target::Statement,
                name: "double".into(),
            })
            .unwrap();
        for n in ["1", "2", "3"] {
            bind_execute(&mut client, "double", n);
        }
        client.queue(&FrontendMessage::Sync).unwrap();
        client.flush().await.unwrap();
        let messages = client.read_until_ready().await.unwrap();
        assert!(matches!(messages[0], BackendMessage::ParseComplete));
        assert!(matches!(
            &messages[1],
            BackendMessage::ParameterDescription { types } if types == &[23]
        ));
        let rows = data_rows(&messages);
        assert_eq!(
            rows,
            ["2", "4", "6"].map(|v| vec![Some(v.to_owned())]).to_vec()
        );
        let binds = messages
            .iter()
            .filter(|m| matches!(m, BackendMessage::BindComplete))
            .count();
        assert_eq!(binds, 3);
        assert_eq!(ready_status(&messages), Some(TransactionStatus::Idle));
    })
    .await;
}

#[tokio::test]
async fn an_error_in_a_pipeline_skips_to_sync_and_the_session_recovers() {
    let cluster = cluster();
    within("pipeline error", async {
        let mut client = superuser(&cluster).await;
        client
            .queue(&FrontendMessage::Parse {
                name: "inverse".into(),
                query: "SELECT 10 / $1::int".into(),
                param_types: vec![],
            })
            .unwrap();
        for n in ["5", "0", "2"] {
            bind_execute(&mut client, "inverse", n);
        }
        client.queue(&FrontendMessage::Sync).unwrap();
        client.flush().await.unwrap();
        let messages = client.read_until_ready().await.unwrap();
        assert_eq!(data_rows(&messages), vec![vec![Some("2".to_owned())]]);
        let errors: Vec<_> = messages
            .iter()
            .filter_map(|m| match m {
                BackendMessage::ErrorResponse(e) => e.sqlstate(),
                _ => None,
            })
            .collect();
        assert_eq!(errors, vec![SqlState::from_code("22012").unwrap()]);
        assert_eq!(ready_status(&messages), Some(TransactionStatus::Idle));
        let after = client.simple_query("SELECT 'still here'").await.unwrap();
        assert_eq!(data_rows(&after), vec![vec![Some("still here".to_owned())]]);
    })
    .await;
}

const COPY_ROWS: usize = 100_000;

#[tokio::test]
async fn copy_in_and_copy_out_move_100k_rows() {
    let cluster = cluster();
    within("COPY", async {
        let mut client = superuser(&cluster).await;
        client
            .simple_query("CREATE TABLE copy_rows (id int, note text)")
            .await
            .unwrap();
        client
            .send(&FrontendMessage::Query("COPY copy_rows FROM STDIN".into()))
            .await
            .unwrap();
        assert!(matches!(
            client.read().await.unwrap(),
            BackendMessage::CopyInResponse(_)
        ));
        let mut chunk = String::new();
        for i in 0..COPY_ROWS {
            chunk.push_str(&format!("{i}\tnote {i}\n"));
            if chunk.len() > 60_000 {
                client
                    .queue(&FrontendMessage::CopyData(Bytes::from(std::mem::take(
                        &mut chunk,
                    ))))
                    .unwrap();
            }
        }
        client
            .queue(&FrontendMessage::CopyData(Bytes::from(chunk)))
            .unwrap();
        client.queue(&FrontendMessage::CopyDone).unwrap();
        client.flush().await.unwrap();
        let done = client.read_until_ready().await.unwrap();
        assert_eq!(command_tags(&done), [format!("COPY {COPY_ROWS}")]);

        client
            .send(&FrontendMessage::Query(
                "COPY (SELECT * FROM copy_rows ORDER BY id) TO STDOUT".into(),
            ))
            .await
            .unwrap();
        assert!(matches!(
            client.read().await.unwrap(),
            BackendMessage::CopyOutResponse(_)
        ));
        let mut lines = 0usize;
        let mut last = Bytes::new();
        loop {
            match client.read().await.unwrap() {
                BackendMessage::CopyData(data) => {
                    lines += data.iter().filter(|&&b| b == b'\n').count();
                    last = data;
                }
                BackendMessage::CopyDone => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(lines, COPY_ROWS);
        assert_eq!(
            &last[..],
            format!("{}\tnote {}\n", COPY_ROWS - 1, COPY_ROWS - 1).as_bytes()
        );
        let done = client.read_until_ready().await.unwrap();
        assert_eq!(command_tags(&done), [format!("COPY {COPY_ROWS}")]);
    })
    .await;
}

#[tokio::test]
async fn notifications_reach_a_listening_session() {
    let cluster = cluster();
    within("LISTEN/NOTIFY", async {
        let mut listener = superuser(&cluster).await;
        listener.simple_query("LISTEN jobs").await.unwrap();
        let mut notifier = superuser(&cluster).await;
        notifier
            .simple_query("NOTIFY jobs, 'payload 1'")
            .await
            .unwrap();
        let BackendMessage::NotificationResponse {
            channel, payload, ..
        } = listener.read().await.unwrap()
        else {
            panic!("expected a notification");
        };
        assert_eq!((channel.as_str(), payload.as_str()), ("jobs", "payload 1"));
    })
    .await;
}

#[tokio::test]
async fn a_cancel_request_stops_pg_sleep() {
    let cluster = cluster();
    within("cancel", async {
        let mut client = superuser(&cluster).await;
        client
            .send(&FrontendMessage::Query("SELECT pg_sleep(10)".into()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        client.cancel(cluster.addr()).await.unwrap();
        let messages = client.read_until_ready().await.unwrap();
        let error = messages
            .iter()
            .find_map(|m| match m {
                BackendMessage::ErrorResponse(e) => Some(e),
                _ => None,
            })
            .expect("an ErrorResponse");
        assert_eq!(error.sqlstate(), Some(SqlState::QUERY_CANCELED));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}
