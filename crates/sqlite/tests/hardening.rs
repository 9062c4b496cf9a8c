#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Issue 10 (hardening) for the embedded SQLite backend: DEALLOCATE, the function-call
//! protocol, malformed messages, cancel / disconnect / statement_timeout, IPv4-mapped loopback
//! clients and PostgreSQL's result column names. Each test asserts what the client sees and
//! that the session (or the server) goes on serving.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgbastion_sqlite::SqliteBackend;
use pgbastion_testkit::RawClient;
use pgbastion_wire::{BackendMessage, ErrorResponse, FrontendMessage, Severity};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Every test ends within this, so a hang fails with a message instead of stalling CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("the test timed out")
}

async fn serve_on(listen: &str, backend: SqliteBackend) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(pgbastion_sqlite::serve_listener(
        listener,
        Arc::new(backend),
        Default::default(),
    ));
    addr
}

async fn serve() -> SocketAddr {
    serve_on("127.0.0.1:0", SqliteBackend::open_in_memory().unwrap()).await
}

async fn connect_with(addr: SocketAddr, extra: &str) -> Client {
    let conninfo = format!(
        "host=127.0.0.1 port={} user=tester dbname=app {extra}",
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conninfo, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn raw(addr: SocketAddr) -> RawClient {
    RawClient::startup(addr, "tester", "app", None)
        .await
        .unwrap()
}

/// The first ErrorResponse among `messages`.
fn error_in(messages: &[BackendMessage]) -> &ErrorResponse {
    messages
        .iter()
        .find_map(|m| match m {
            BackendMessage::ErrorResponse(e) => Some(e),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no ErrorResponse in {messages:?}"))
}

fn code_and_message(error: &ErrorResponse) -> (String, String) {
    (
        error.sqlstate().unwrap().to_string(),
        error.message().to_owned(),
    )
}

fn db_error(error: &tokio_postgres::Error) -> (String, String) {
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {error:?}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// Asserts that the session still answers a query.
async fn assert_serving(client: &mut RawClient) {
    let messages = client.simple_query("SELECT 1").await.unwrap();
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, BackendMessage::DataRow(_))),
        "the session answers after the error: {messages:?}"
    );
}

fn parse(name: &str, query: &str) -> FrontendMessage {
    FrontendMessage::Parse {
        name: name.to_owned(),
        query: query.to_owned(),
        param_types: Vec::new(),
    }
}

fn bind(statement: &str) -> FrontendMessage {
    FrontendMessage::Bind {
        portal: String::new(),
        statement: statement.to_owned(),
        param_formats: Vec::new(),
        params: Vec::new(),
        result_formats: Vec::new(),
    }
}

fn execute() -> FrontendMessage {
    FrontendMessage::Execute {
        portal: String::new(),
        max_rows: 0,
    }
}

/// Runs Bind/Execute/Sync of statement `name` and returns everything up to ReadyForQuery.
async fn run_prepared(client: &mut RawClient, name: &str) -> Vec<BackendMessage> {
    for message in [bind(name), execute(), FrontendMessage::Sync] {
        client.queue(&message).unwrap();
    }
    client.flush().await.unwrap();
    client.read_until_ready().await.unwrap()
}

// Defect 22: DEALLOCATE acts on protocol-level named statements, as psycopg expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_removes_protocol_level_statements_like_postgres() {
    bounded(async {
        let addr = serve().await;
        let mut client = raw(addr).await;
        for name in ["_pg3_0", "_pg3_1", "_pg3_2"] {
            client.queue(&parse(name, "SELECT 1")).unwrap();
        }
        client.queue(&FrontendMessage::Sync).unwrap();
        client.flush().await.unwrap();
        client.read_until_ready().await.unwrap();

        let messages = client.simple_query("DEALLOCATE _pg3_0").await.unwrap();
        assert!(
            messages.iter().any(
                |m| matches!(m, BackendMessage::CommandComplete { tag } if tag == "DEALLOCATE")
            ),
            "{messages:?}"
        );
        let gone = run_prepared(&mut client, "_pg3_0").await;
        assert_eq!(
            code_and_message(error_in(&gone)),
            (
                "26000".to_owned(),
                "prepared statement \"_pg3_0\" does not exist".to_owned()
            )
        );
        let kept = run_prepared(&mut client, "_pg3_1").await;
        assert!(
            kept.iter().any(|m| matches!(m, BackendMessage::DataRow(_))),
            "{kept:?}"
        );

        client
            .simple_query("DEALLOCATE PREPARE _pg3_1")
            .await
            .unwrap();
        let messages = client.simple_query("DEALLOCATE ALL").await.unwrap();
        assert!(
            messages.iter().any(
                |m| matches!(m, BackendMessage::CommandComplete { tag } if tag == "DEALLOCATE ALL")
            ),
            "{messages:?}"
        );
        let gone = run_prepared(&mut client, "_pg3_2").await;
        assert_eq!(code_and_message(error_in(&gone)).0, "26000");

        let unknown = client.simple_query("DEALLOCATE nope").await.unwrap();
        assert_eq!(
            code_and_message(error_in(&unknown)),
            (
                "26000".to_owned(),
                "prepared statement \"nope\" does not exist".to_owned()
            )
        );
        assert_serving(&mut client).await;
    })
    .await;
}

// Defect 22, through the extended protocol as psycopg sends it after five executions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_works_in_the_extended_protocol_and_inside_a_transaction() {
    bounded(async {
        let addr = serve().await;
        let client = connect_with(addr, "").await;
        client
            .batch_execute("BEGIN; CREATE TABLE t (x INTEGER)")
            .await
            .unwrap();
        let statement = client.prepare("INSERT INTO t VALUES (1)").await.unwrap();
        client.execute(&statement, &[]).await.unwrap();
        client.execute("DEALLOCATE ALL", &[]).await.unwrap();
        let err = client.execute(&statement, &[]).await.unwrap_err();
        assert_eq!(db_error(&err).0, "26000");
        client.batch_execute("ROLLBACK").await.unwrap();
        let err = client.execute("DEALLOCATE missing", &[]).await.unwrap_err();
        assert_eq!(
            db_error(&err),
            (
                "26000".to_owned(),
                "prepared statement \"missing\" does not exist".to_owned()
            )
        );
        client.simple_query("SELECT 1").await.unwrap();
    })
    .await;
}

// Defect 23: FunctionCall gets ERROR and then ReadyForQuery, so the client does not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_is_refused_with_ready_for_query() {
    bounded(async {
        let addr = serve().await;
        let mut client = raw(addr).await;
        client
            .send(&FrontendMessage::FunctionCall {
                oid: 1598, // md5(text)
                arg_formats: Vec::new(),
                args: vec![Some(bytes::Bytes::from_static(b"x"))],
                result_format: 0,
            })
            .await
            .unwrap();
        let messages = client.read_until_ready().await.unwrap();
        let error = error_in(&messages);
        assert_eq!(error.severity(), Some(Severity::Error));
        assert_eq!(
            code_and_message(error),
            (
                "0A000".to_owned(),
                "the function-call protocol is not supported by the embedded SQLite backend"
                    .to_owned()
            )
        );
        assert_serving(&mut client).await;
    })
    .await;
}

/// A frame with `tag` and `body`, as bytes on the wire.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![tag];
    bytes.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

// Defect 24: invalid UTF-8 in a Query is 22021, an ERROR; the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_query_is_an_error_and_the_session_goes_on() {
    bounded(async {
        let addr = serve().await;
        let mut client = raw(addr).await;
        client
            .send_raw(&frame(b'Q', b"SELECT '\xff'\0"))
            .await
            .unwrap();
        let messages = client.read_until_ready().await.unwrap();
        let error = error_in(&messages);
        assert_eq!(error.severity(), Some(Severity::Error));
        assert_eq!(
            code_and_message(error),
            (
                "22021".to_owned(),
                "invalid byte sequence for encoding \"UTF8\": 0xff".to_owned()
            )
        );
        assert_serving(&mut client).await;
    })
    .await;
}

// Defect 24: a Bind with 65,535 parameters is an ERROR (08P01), not the end of the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_with_65535_parameters_is_an_error_and_the_session_goes_on() {
    bounded(async {
        let addr = serve().await;
        let mut client = raw(addr).await;
        client.send(&parse("", "SELECT $1")).await.unwrap();
        let mut body = vec![0u8, 0]; // portal "", statement ""
        body.extend_from_slice(&0i16.to_be_bytes()); // no format codes
        body.extend_from_slice(&u16::MAX.to_be_bytes());
        for _ in 0..u16::MAX {
            body.extend_from_slice(&(-1i32).to_be_bytes()); // NULL
        }
        body.extend_from_slice(&0i16.to_be_bytes()); // no result formats
        let mut bytes = frame(b'B', &body);
        bytes.extend_from_slice(&frame(b'S', b""));
        client.send_raw(&bytes).await.unwrap();
        let messages = client.read_until_ready().await.unwrap();
        let error = error_in(&messages);
        assert_eq!(error.severity(), Some(Severity::Error), "{error:?}");
        assert_eq!(code_and_message(error).0, "08P01");
        assert_serving(&mut client).await;
    })
    .await;
}

/// A statement that runs for many seconds in SQLite.
const LONG_STATEMENT: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                              WHERE x < 100000000) SELECT count(*) FROM c";

// Defect 25: CancelRequest interrupts the running statement (57014); a wrong key does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_interrupts_the_running_statement() {
    bounded(async {
        let addr = serve().await;
        let mut client = raw(addr).await;
        let key = client.backend_key.clone().unwrap();
        client
            .send(&FrontendMessage::Query(LONG_STATEMENT.to_owned()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;

        let mut wrong = key.secret_key.to_vec();
        wrong[0] ^= 1;
        let forged = pgbastion_wire::CancelKey::new(key.process_id, wrong);
        let mut canceller = RawClient::connect(addr).await.unwrap();
        canceller
            .send_packet(&pgbastion_wire::StartupPacket::CancelRequest(forged))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;

        let started = Instant::now();
        client.cancel(addr).await.unwrap();
        let messages = client.read_until_ready().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "cancelled after {:?}",
            started.elapsed()
        );
        assert!(
            !messages
                .iter()
                .any(|m| matches!(m, BackendMessage::DataRow(_))),
            "the forged key must not have cancelled, nor the statement finished: {messages:?}"
        );
        assert_eq!(
            code_and_message(error_in(&messages)),
            (
                "57014".to_owned(),
                "canceling statement due to user request".to_owned()
            )
        );
        assert_serving(&mut client).await;
    })
    .await;
}

// Defect 25: a real driver's cancel token works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_cancel_token_cancels_the_query() {
    bounded(async {
        let addr = serve().await;
        let client = connect_with(addr, "").await;
        let token = client.cancel_token();
        let cancel = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            token.cancel_query(NoTls).await.unwrap();
        });
        let err = client.simple_query(LONG_STATEMENT).await.unwrap_err();
        cancel.await.unwrap();
        assert_eq!(
            db_error(&err),
            (
                "57014".to_owned(),
                "canceling statement due to user request".to_owned()
            )
        );
        client.simple_query("SELECT 1").await.unwrap();
    })
    .await;
}

// Defect 25: statement_timeout, by SET and by the startup option -c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_cancels_long_statements() {
    bounded(async {
        let addr = serve().await;
        let timeout_error = (
            "57014".to_owned(),
            "canceling statement due to statement timeout".to_owned(),
        );

        let client = connect_with(addr, "").await;
        client
            .batch_execute("SET statement_timeout = 200")
            .await
            .unwrap();
        let shown = client.simple_query("SHOW statement_timeout").await.unwrap();
        assert!(
            matches!(&shown[1], SimpleQueryMessage::Row(row) if row.get(0) == Some("200ms")),
            "{shown:?}"
        );
        let started = Instant::now();
        let err = client.query(LONG_STATEMENT, &[]).await.unwrap_err();
        assert_eq!(db_error(&err), timeout_error);
        assert!(started.elapsed() < Duration::from_secs(2));
        client
            .batch_execute("SET statement_timeout TO '0'")
            .await
            .unwrap();
        client.simple_query("SELECT 1").await.unwrap();
        let err = client
            .batch_execute("SET statement_timeout = 'soon'")
            .await
            .unwrap_err();
        assert_eq!(db_error(&err).0, "22023");

        let client = connect_with(addr, "options='-c statement_timeout=1s'").await;
        let started = Instant::now();
        let err = client.simple_query(LONG_STATEMENT).await.unwrap_err();
        assert_eq!(db_error(&err), timeout_error);
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert!(started.elapsed() < Duration::from_secs(3));
        client.simple_query("SELECT 1").await.unwrap();
    })
    .await;
}

// Defect 25: a client that disconnects mid-statement stops the statement (its write lock is
// released at once, not when the statement would have ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_interrupts_the_running_statement() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let addr = serve_on(
            "127.0.0.1:0",
            SqliteBackend::open(dir.path().join("db")).unwrap(),
        )
        .await;
        let other = connect_with(addr, "").await;
        other
            .batch_execute("CREATE TABLE t (x INTEGER)")
            .await
            .unwrap();

        let mut leaver = raw(addr).await;
        leaver
            .simple_query("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        leaver
            .send(&FrontendMessage::Query(LONG_STATEMENT.to_owned()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(leaver);

        let started = Instant::now();
        other
            .batch_execute("INSERT INTO t VALUES (2)")
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the write lock was held for {:?}",
            started.elapsed()
        );
        let rows = other.simple_query("SELECT x FROM t").await.unwrap();
        assert_eq!(rows.len(), 3, "only the second insert is kept: {rows:?}");
    })
    .await;
}

// Defect 26: on a dual-stack listener, local IPv4 clients arrive as ::ffff:127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_loopback_clients_are_local() {
    bounded(async {
        let addr = serve_on("[::]:0", SqliteBackend::open_in_memory().unwrap()).await;
        let client = connect_with(addr, "").await;
        client.simple_query("SELECT 1").await.unwrap();
    })
    .await;
}

// Defect 27: unaliased columns are named as PostgreSQL names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_columns_are_named_like_postgres() {
    bounded(async {
        let addr = serve().await;
        let client = connect_with(addr, "").await;
        client
            .batch_execute(
                "CREATE TABLE t (id INTEGER, name TEXT, x INTEGER, a INTEGER, b INTEGER);
                 INSERT INTO t VALUES (1, 'A', 2, 3, 4)",
            )
            .await
            .unwrap();
        let sql = "SELECT count(*), sum(x), max(a), lower(name), coalesce(a, b), a + b, 1, \
                   name, t.id, count(*) AS n, sum(x)::int8, (max(a)), x AS \"sum(x)\", \
                   COUNT(*), CASE WHEN a > 0 THEN 1 END, 'lit' FROM t";
        let expected = [
            "count", "sum", "max", "lower", "coalesce", "?column?", "?column?", "name", "id", "n",
            "sum", "max", "sum(x)", "count", "case", "?column?",
        ];
        let statement = client.prepare(sql).await.unwrap();
        let names: Vec<_> = statement.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, expected, "extended protocol");
        let messages = client.simple_query(sql).await.unwrap();
        let SimpleQueryMessage::RowDescription(columns) = &messages[0] else {
            panic!("{messages:?}")
        };
        let names: Vec<_> = columns.iter().map(|c| c.name()).collect();
        assert_eq!(names, expected, "simple protocol");
    })
    .await;
}
