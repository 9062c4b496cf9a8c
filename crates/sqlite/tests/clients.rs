#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Real PostgreSQL clients (tokio-postgres, psql) against the embedded SQLite backend.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use pgbastion_sqlite::SqliteBackend;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Serves `backend` on a random loopback port.
async fn serve(backend: SqliteBackend) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(pgbastion_sqlite::serve_listener(
        listener,
        Arc::new(backend),
        Default::default(),
    ));
    addr
}

async fn connect(addr: SocketAddr) -> Client {
    let conninfo = format!(
        "host={} port={} user=tester dbname=app",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conninfo, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn fresh() -> Client {
    connect(serve(SqliteBackend::open_in_memory().unwrap()).await).await
}

const SCHEMA: &str = "CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    qty INTEGER,
    price REAL,
    ok BOOLEAN,
    data BLOB
)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_crud_with_parameters() {
    let client = fresh().await;
    client.execute(SCHEMA, &[]).await.unwrap();
    let inserted = client
        .execute(
            "INSERT INTO items (name, qty, price, ok, data) VALUES ($1, $2, $3, $4, $5)",
            &[&"apple", &3i64, &1.25f64, &true, &vec![0u8, 159, 146, 150]],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    client
        .execute(
            "INSERT INTO items (name, qty, price, ok, data) VALUES ($1, $2, $3, $4, $5)",
            &[&"pear", &None::<i64>, &2.5f64, &false, &None::<Vec<u8>>],
        )
        .await
        .unwrap();

    let rows = client
        .query(
            "SELECT id, name, qty, price, ok, data FROM items WHERE qty = $1",
            &[&3i64],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<_, i64>("id"), 1);
    assert_eq!(row.get::<_, &str>("name"), "apple");
    assert_eq!(row.get::<_, Option<i64>>("qty"), Some(3));
    assert_eq!(row.get::<_, f64>("price"), 1.25);
    assert!(row.get::<_, bool>("ok"));
    assert_eq!(row.get::<_, Vec<u8>>("data"), vec![0u8, 159, 146, 150]);

    let pear = client
        .query_one(
            "SELECT qty, data, ok FROM items WHERE name = $1",
            &[&"pear"],
        )
        .await
        .unwrap();
    assert_eq!(pear.get::<_, Option<i64>>(0), None);
    assert_eq!(pear.get::<_, Option<Vec<u8>>>(1), None);
    assert!(!pear.get::<_, bool>(2));

    let updated = client
        .execute(
            "UPDATE items SET qty = $1 WHERE price > $2",
            &[&7i64, &1.0f64],
        )
        .await
        .unwrap();
    assert_eq!(updated, 2);
    let deleted = client
        .execute("DELETE FROM items WHERE name = $1", &[&"apple"])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let count: i64 = client
        .query_one("SELECT count(*)::int8 FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_type_parameters_and_results() {
    let client = fresh().await;
    let row = client
        .query_one(
            "SELECT $1::int8 * 2 AS doubled, $2::text || '!' AS shout, $3::float8 AS f",
            &[&21i64, &"hi", &0.5f64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>("shout"), "hi!");
    assert_eq!(row.get::<_, f64>("f"), 0.5);
    // An undeclared expression without a cast is text in the extended protocol.
    let row = client.query_one("SELECT 6 * 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_abort_like_postgres() {
    let client = fresh().await;
    let mut client = client;
    client.execute(SCHEMA, &[]).await.unwrap();

    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO items (name) VALUES ($1)", &[&"kept"])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO items (name) VALUES ($1)", &[&"undone"])
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // An error inside a block aborts it until ROLLBACK, as in PostgreSQL.
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO items (name) VALUES ($1)", &[&"lost"])
        .await
        .unwrap();
    let err = tx.execute("SELECT * FROM nowhere", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    let err = tx.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "25P02");
    drop(tx); // rolls back

    let names: Vec<String> = client
        .query("SELECT name FROM items ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(names, ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstates_and_the_session_goes_on() {
    let client = fresh().await;
    client.execute(SCHEMA, &[]).await.unwrap();
    client
        .execute("INSERT INTO items (name) VALUES ('a')", &[])
        .await
        .unwrap();
    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT * FROM missing", "42P01"),
        ("SELECT nope FROM items", "42703"),
        ("INSERT INTO items (name) VALUES ('a')", "23505"),
        ("INSERT INTO items (qty) VALUES (1)", "23502"),
        ("SELECT relname FROM pg_catalog.pg_class", "0A000"),
        ("SHOW no_such_setting", "42704"),
    ];
    for (sql, code) in cases {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(err.code().unwrap().code(), code, "{sql}: {err}");
        let err = client.query(sql, &[]).await.unwrap_err();
        assert_eq!(err.code().unwrap().code(), code, "{sql} (extended): {err}");
        let one: i64 = client
            .query_one("SELECT 1::int8", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(one, 1, "the session works after {sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_protocol_tags_and_multiple_statements() {
    let client = fresh().await;
    let messages = client
        .simple_query(&format!(
            "{SCHEMA}; INSERT INTO items (name, qty) VALUES ('a', 1), ('b', 2), ('c', 3);
             UPDATE items SET qty = qty + 1 WHERE qty > 1; DELETE FROM items WHERE name = 'a';
             SELECT name, qty FROM items ORDER BY name; SET application_name = 'x'; SHOW server_version"
        ))
        .await
        .unwrap();
    let tags: Vec<u64> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    // CREATE TABLE, INSERT 0 3, UPDATE 2, DELETE 1, SELECT 2, SET, SHOW (no count)
    assert_eq!(tags, [0, 3, 2, 1, 2, 0, 0]);
    let rows: Vec<(String, String)> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) if row.len() == 2 => {
                Some((row.get(0)?.to_owned(), row.get(1)?.to_owned()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(rows, [("b".into(), "3".into()), ("c".into(), "4".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_queries_answer_in_order() {
    let client = fresh().await;
    client.execute(SCHEMA, &[]).await.unwrap();
    let statement = client
        .prepare("INSERT INTO items (name, qty) VALUES ($1, $2) RETURNING id")
        .await
        .unwrap();
    let names: Vec<String> = (0..50).map(|i| format!("item-{i}")).collect();
    // tokio-postgres pipelines queries issued concurrently on one connection.
    let inserts = names.iter().enumerate().map(|(i, name)| {
        let (client, statement) = (&client, &statement);
        async move {
            let qty = i as i64;
            client
                .query_one(statement, &[name, &qty])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    });
    let ids = futures_join_all(inserts).await;
    assert_eq!(ids, (1..=50).collect::<Vec<i64>>());
    let total: i64 = client
        .query_one("SELECT sum(qty)::int8 FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, (0..50).sum::<i64>());
}

/// Polls the futures together (so their requests are pipelined) and returns their outputs.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_share_one_database_and_a_file_outlives_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let addr = serve(SqliteBackend::open(&path).unwrap()).await;
        let (a, b) = (connect(addr).await, connect(addr).await);
        a.execute(SCHEMA, &[]).await.unwrap();
        b.execute("INSERT INTO items (name) VALUES ($1)", &[&"from b"])
            .await
            .unwrap();
        let name: String = a
            .query_one("SELECT name FROM items", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, "from b");
    }
    let addr = serve(SqliteBackend::open(&path).unwrap()).await;
    let client = connect(addr).await;
    let name: String = client
        .query_one("SELECT name FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "from b");
}

fn psql(addr: SocketAddr, args: &[&str]) -> (String, String) {
    let output = Command::new("psql")
        .args([
            "-X",
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-U",
            "me",
        ])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_session_against_the_embedded_backend() {
    let addr = serve(SqliteBackend::open_in_memory().unwrap()).await;
    let script = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
INSERT INTO notes (body) VALUES ('first'), ('second');
UPDATE notes SET body = 'changed' WHERE id = 2;
BEGIN;
DELETE FROM notes;
ROLLBACK;
SELECT * FROM nowhere;
SELECT id, body FROM notes ORDER BY id;
\\d
SELECT 1;
";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.sql");
    std::fs::write(&file, script).unwrap();
    let (stdout, stderr) = psql(addr, &["-A", "-f", Path::new(&file).to_str().unwrap()]);
    let expected_out = "CREATE TABLE\nINSERT 0 2\nUPDATE 1\nBEGIN\nDELETE 2\nROLLBACK\n\
                        id|body\n1|first\n2|changed\n(2 rows)\n";
    assert!(
        stdout.starts_with(expected_out),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.ends_with("?column?\n1\n(1 row)\n"),
        "stdout:\n{stdout}"
    );
    assert!(stderr.contains("no such table: nowhere"), "{stderr}");
    assert!(
        stderr.contains("not supported by the embedded SQLite backend"),
        "{stderr}"
    );
}
