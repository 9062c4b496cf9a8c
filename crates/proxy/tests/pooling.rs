#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Pooled listeners against a real PostgreSQL: transaction and session pools, prepared
//! statements across backends, session state pinned or refused, the checkout timeout,
//! failures that stay with their client, cancel, and the session switch.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgbastion_testkit::{Cluster, RawClient};
use pgbastion_wire::BackendMessage;

fn trust_cluster() -> Cluster {
    Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .config("max_connections", "40")
        .start()
        .unwrap()
}

/// A pooled listener with one trust route whose pool is `pool` (TOML inline-table body).
fn pooled(cluster: &Cluster, pool: &str, listener_extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"pooled\"\n{listener_extra}\n\n\
         [[route]]\nauth = \"trust\"\nbackend = \"{}\"\npool = {{ {pool} }}\n",
        backend_url(cluster, "postgres", None, "postgres")
    )
}

/// pgbastion in front of `cluster` with a pooled listener (`listener_extra` added to it) and
/// a route whose pool is `pool`; the directory holds its configuration.
async fn pooled_proxy(
    cluster: &Cluster,
    pool: &str,
    listener_extra: &str,
) -> (tempfile::TempDir, RunningProxy) {
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(dir.path(), &pooled(cluster, pool, listener_extra)).await;
    (dir, proxy)
}

/// Waits for every task, failing with the first that failed.
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        task.await.unwrap();
    }
}

async fn client(proxy: &RunningProxy) -> tokio_postgres::Client {
    connect(proxy.addr, "postgres", None, "postgres")
        .await
        .unwrap()
}

/// A client with its own application_name and, when given, startup `options`.
async fn client_as(
    proxy: &RunningProxy,
    application_name: &str,
    options: Option<&str>,
) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .user("postgres")
        .dbname("postgres")
        .application_name(application_name);
    if let Some(options) = options {
        config.options(options);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_pool_serves_many_clients_with_few_backends() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 2", "").await;
    within("shared backends", async {
        let mut pids = HashSet::new();
        let mut clients = Vec::new();
        for _ in 0..10 {
            clients.push(client(&proxy).await);
        }
        for client in &clients {
            for _ in 0..3 {
                pids.insert(pid(client).await);
            }
        }
        assert!(
            (1..=2).contains(&pids.len()),
            "10 clients used {} backends: {pids:?}",
            pids.len()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_over_five_backends_see_only_their_own_rows() {
    let cluster = trust_cluster();
    cluster
        .execute_sql("CREATE TABLE ledger (client int, n int, PRIMARY KEY (client, n))")
        .unwrap();
    let (_dir, proxy) = pooled_proxy(
        &cluster,
        "mode = \"transaction\", size = 5, checkout_timeout = \"60s\"",
        "",
    )
    .await;
    let addr = proxy.addr;
    within("200 clients", async move {
        let mut tasks = Vec::new();
        for id in 0..200i32 {
            tasks.push(tokio::spawn(async move {
                let mut client = connect(addr, "postgres", None, "postgres").await.unwrap();
                let insert = client
                    .prepare("INSERT INTO ledger VALUES ($1, $2)")
                    .await
                    .unwrap();
                for n in 0..5i32 {
                    let tx = client.transaction().await.unwrap();
                    tx.execute(&insert, &[&id, &n]).await.unwrap();
                    let mine: i64 = tx
                        .query_one("SELECT count(*) FROM ledger WHERE client = $1", &[&id])
                        .await
                        .unwrap()
                        .get(0);
                    assert_eq!(mine, i64::from(n) + 1, "client {id} sees its own rows only");
                    tx.commit().await.unwrap();
                }
            }));
        }
        join_all(tasks).await;
    })
    .await;
    let counts = cluster
        .query("SELECT count(*), count(DISTINCT client), min(c), max(c) FROM (SELECT client, count(*) c FROM ledger GROUP BY client) s")
        .unwrap();
    assert_eq!(counts.trim(), "200|200|5|5", "no lost or duplicated writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_work_from_twenty_clients_through_a_pool_of_two() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(
        &cluster,
        "mode = \"transaction\", size = 2, statements_per_backend = 4",
        "",
    )
    .await;
    let addr = proxy.addr;
    within("prepared statements", async move {
        let mut tasks = Vec::new();
        for id in 0..20i32 {
            tasks.push(tokio::spawn(async move {
                let client = connect(addr, "postgres", None, "postgres").await.unwrap();
                let shared = client.prepare("SELECT $1::int + 1").await.unwrap();
                // Distinct per client: more statements than a backend keeps, so some are
                // evicted and prepared again.
                let own = client
                    .prepare(&format!("SELECT $1::int * {id}"))
                    .await
                    .unwrap();
                for round in 0..20i32 {
                    let a: i32 = client.query_one(&shared, &[&round]).await.unwrap().get(0);
                    let b: i32 = client.query_one(&own, &[&round]).await.unwrap().get(0);
                    assert_eq!((a, b), (round + 1, round * id), "client {id} round {round}");
                }
            }));
        }
        join_all(tasks).await;
    })
    .await;
    let held: i64 = cluster
        .query("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = 'postgres' AND pid <> pg_backend_pid()")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(held <= 2, "the pool kept {held} backends");
}

/// pgbench through `proxy`: a scale-1 database, then 20 clients of 50 transactions each with
/// `-M protocol`; every one must go through.
async fn pgbench_through(proxy: &RunningProxy, protocol: &'static str) {
    let port = proxy.addr.port();
    let run = move |args: &[&str]| run_client_program(port, ("postgres", None), "pgbench", args);
    let out = tokio::task::spawn_blocking(move || {
        run(&["-i", "-s", "1", "-q", "postgres"]);
        run(&[
            "-c", "20", "-j", "2", "-t", "50", "-M", protocol, "postgres",
        ])
    });
    let bench = within("pgbench", out).await.unwrap();
    assert!(
        bench.contains("number of failed transactions: 0"),
        "{bench}"
    );
    assert!(
        bench.contains("number of transactions actually processed: 1000/1000"),
        "{bench}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_through_a_transaction_pool_of_two() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 2", "").await;
    pgbench_through(&proxy, "prepared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_cached_on_the_backends_when_the_pool_says_so() {
    let cluster = trust_cluster();
    // One backend: every statement below is made on it.
    let pool = "mode = \"transaction\", size = 1, cache_unnamed = true";
    let (_dir, proxy) = pooled_proxy(&cluster, pool, "").await;
    pgbench_through(&proxy, "extended").await;
    within("unnamed statements of a driver", async {
        let client = client(&proxy).await;
        let int4 = tokio_postgres::types::Type::INT4;
        for n in 0..5 {
            // query_typed: an unnamed Parse, Bind and Execute in one Sync group.
            let rows = client
                .query_typed("SELECT $1::int4 + 1", &[(&n, int4.clone())])
                .await
                .unwrap();
            assert_eq!(rows[0].get::<_, i32>(0), n + 1);
        }
        let error = client.query_typed("SELEC 1", &[]).await.unwrap_err();
        assert_eq!(code(&error), "42601");
        let rows = client.query_typed("SELECT 2", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i32>(0), 2);
        // The backend holds pgbastion's statement for the text, made once, where the
        // client's unnamed one would have been parsed at every execution.
        let made: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_prepared_statements \
                 WHERE name LIKE 'pgbastion_%' AND statement = 'SELECT $1::int4 + 1'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(made, 1);
    })
    .await;
}

/// One Sync group (or simple Query) of a pipelined script.
type Group = Vec<pgbastion_wire::FrontendMessage>;

/// The replies to `script` sent by a fresh client at `addr`, group by group: each group
/// written whole (and, when `pipelined`, every group before any reply is read), each reply
/// shown as its tag, an error as its SQLSTATE.
async fn replies_to(addr: std::net::SocketAddr, script: &[Group], pipelined: bool) -> Vec<String> {
    let mut raw = RawClient::startup(addr, "postgres", "postgres", None)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut owed = 0;
    for group in script {
        for message in group {
            raw.queue(message).unwrap();
        }
        raw.flush().await.unwrap();
        owed += 1;
        if !pipelined {
            seen.push(shown(raw.read_until_ready().await.unwrap()));
            owed -= 1;
        }
    }
    for _ in 0..owed {
        seen.push(shown(raw.read_until_ready().await.unwrap()));
    }
    seen
}

fn shown(messages: Vec<BackendMessage>) -> String {
    messages
        .iter()
        .map(|message| match message {
            BackendMessage::ErrorResponse(error) => {
                format!(
                    "E{} ",
                    error.get(pgbastion_wire::ErrorField::Code).unwrap_or("?")
                )
            }
            other => format!("{}", other.tag().byte() as char),
        })
        .collect()
}

/// `sql` parsed unnamed, bound, executed, with its Sync.
fn unnamed_run(sql: &str) -> Group {
    use pgbastion_wire::FrontendMessage as F;
    let mut group = vec![F::Parse {
        name: String::new(),
        query: sql.to_owned(),
        param_types: vec![],
    }];
    group.extend(run_unnamed());
    group
}

/// A Bind of the unnamed statement, its Execute and the Sync.
fn run_unnamed() -> Group {
    use pgbastion_wire::FrontendMessage as F;
    vec![
        F::Bind {
            portal: String::new(),
            statement: String::new(),
            param_formats: vec![],
            params: vec![],
            result_formats: vec![],
        },
        F::Execute {
            portal: String::new(),
            max_rows: 0,
        },
        F::Sync,
    ]
}

/// A Parse of `sql` named `name`.
fn parse_as(name: &str, sql: &str) -> pgbastion_wire::FrontendMessage {
    pgbastion_wire::FrontendMessage::Parse {
        name: name.to_owned(),
        query: sql.to_owned(),
        param_types: vec![],
    }
}

/// A Bind of the statement `name` to the unnamed portal, and its Execute (no Sync).
fn bind_execute(name: &str) -> Group {
    let mut group = run_unnamed();
    group.pop();
    if let pgbastion_wire::FrontendMessage::Bind { statement, .. } = &mut group[0] {
        *statement = name.to_owned();
    }
    group
}

/// `group` with a Sync at its end.
fn with_sync(mut group: Group) -> Group {
    group.push(pgbastion_wire::FrontendMessage::Sync);
    group
}

/// Two unnamed runs in one Sync group.
fn two_in_a_group(first: &str, second: &str) -> Group {
    let mut group = unnamed_run(first);
    group.pop();
    group.extend(unnamed_run(second));
    group
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_groups_answer_as_postgresql_does_whatever_the_cache() {
    use pgbastion_wire::FrontendMessage as F;
    let cluster = trust_cluster();
    let query = |sql: &str| vec![F::Query(sql.to_owned())];
    let scripts: Vec<(&str, Vec<Group>)> = vec![
        (
            "a later group meets a statement an earlier one failed to make",
            vec![
                two_in_a_group("SELEC 1", "SELECT 7"),
                unnamed_run("SELECT 7"),
            ],
        ),
        (
            "a later group meets a statement skipped in a failed transaction",
            vec![
                query("BEGIN; SELECT 1/0"),
                unnamed_run("SELECT 8"),
                query("ROLLBACK"),
                unnamed_run("SELECT 8"),
            ],
        ),
        (
            "the unnamed statement after a group whose second Parse was skipped",
            vec![
                unnamed_run("SELECT 15"),
                two_in_a_group("SELECT 1/0", "SELECT 15"),
                run_unnamed(),
            ],
        ),
        (
            "DEALLOCATE of a named statement as an unnamed statement (psycopg's eviction, libpq < 17)",
            vec![
                vec![
                    F::Parse {
                        name: "s1".into(),
                        query: "SELECT 1".into(),
                        param_types: vec![],
                    },
                    F::Sync,
                ],
                unnamed_run("DEALLOCATE s1"),
                {
                    let mut group = run_unnamed();
                    if let F::Bind { statement, .. } = &mut group[0] {
                        *statement = "s1".into();
                    }
                    group
                },
                unnamed_run("DEALLOCATE s1"),
                run_unnamed(),
            ],
        ),
        (
            "statements made in the group of a DEALLOCATE ALL, after it",
            vec![
                {
                    let mut group = unnamed_run("DEALLOCATE ALL");
                    group.pop();
                    group.push(parse_as("s2", "SELECT 2"));
                    group.extend(bind_execute("s2"));
                    group.push(F::Sync);
                    group
                },
                {
                    let mut group = bind_execute("s2");
                    group.push(F::Sync);
                    group
                },
                {
                    let mut group = vec![parse_as("s3", "SELECT 2")];
                    group.extend(bind_execute("s3"));
                    group.push(F::Sync);
                    group
                },
            ],
        ),
        (
            "a simple query after a group whose undo would put the unnamed statement back",
            vec![
                unnamed_run("SELECT 1"),
                // (A Describe so that the group needs a backend: a group of Parses alone is
                // answered by pgbastion, docs/pooling.md.)
                vec![
                    parse_as("bad", "SELEC"),
                    parse_as("", "SELECT 2"),
                    F::Describe {
                        target: pgbastion_wire::Target::Statement,
                        name: String::new(),
                    },
                    F::Sync,
                ],
                query("SELECT 3"),
                run_unnamed(),
            ],
        ),
        (
            "DEALLOCATE ALL as an unnamed statement",
            vec![
                unnamed_run("SELECT 13"),
                unnamed_run("DEALLOCATE ALL"),
                unnamed_run("SELECT 13"),
                run_unnamed(),
            ],
        ),
        (
            "DEALLOCATE of a named statement as a simple query, then again",
            vec![
                // (Past the first checkout, whose own messages are waited for.)
                query("SELECT 1"),
                vec![parse_as("s1", "SELECT 1"), F::Sync],
                query("DEALLOCATE s1"),
                with_sync(bind_execute("s1")),
                query("DEALLOCATE s1"),
                vec![parse_as("s1", "SELECT 2"), F::Sync],
                with_sync(bind_execute("s1")),
            ],
        ),
        (
            "DEALLOCATE of a named statement in a failed transaction",
            vec![
                vec![parse_as("s1", "SELECT 1"), F::Sync],
                query("BEGIN"),
                query("SELECT 1/0"),
                query("DEALLOCATE s1"),
                query("ROLLBACK"),
                with_sync(bind_execute("s1")),
            ],
        ),
        (
            "DEALLOCATE as an unnamed statement in a failed transaction, alone and after ROLLBACK",
            vec![
                vec![parse_as("s1", "SELECT 1"), F::Sync],
                query("BEGIN"),
                query("SELECT 1/0"),
                unnamed_run("DEALLOCATE s1"),
                {
                    let mut group = unnamed_run("ROLLBACK");
                    group.pop();
                    group.extend(unnamed_run("DEALLOCATE s1"));
                    group
                },
                with_sync(bind_execute("s1")),
            ],
        ),
        (
            "a name used after a DISCARD ALL and a DEALLOCATE ALL",
            vec![
                vec![parse_as("s1", "SELECT 1"), F::Sync],
                query("DISCARD ALL"),
                {
                    let mut group = vec![parse_as("s1", "SELECT 2")];
                    group.extend(with_sync(bind_execute("s1")));
                    group
                },
                query("DEALLOCATE ALL"),
                with_sync(bind_execute("s1")),
            ],
        ),
        (
            "a statement the backend holds, parsed after ROLLBACK TO in a failed transaction",
            vec![
                query("BEGIN; SAVEPOINT a"),
                {
                    let mut group = vec![parse_as("s1", "SELECT 5")];
                    group.extend(with_sync(bind_execute("s1")));
                    group
                },
                query("SELECT 1/0"),
                {
                    let mut group = unnamed_run("ROLLBACK TO SAVEPOINT a");
                    group.pop();
                    group.push(parse_as("s2", "SELECT 5"));
                    group.extend(with_sync(bind_execute("s2")));
                    group
                },
                query("ROLLBACK"),
            ],
        ),
        (
            "a statement bound after a SET TimeZone, behind a group that fails",
            vec![
                vec![parse_as("s1", ZONED), F::Sync],
                query("SET TimeZone TO 'America/New_York'"),
                {
                    let mut group = unnamed_run("SELECT 1/0");
                    group.pop();
                    group.extend(with_sync(bind_execute("s1")));
                    group
                },
                with_sync(bind_execute("s1")),
                query("RESET TimeZone"),
            ],
        ),
        (
            "the unnamed statement after a simple query, and after a failed Parse",
            vec![
                unnamed_run("SELECT 1"),
                query("SELECT 2"),
                run_unnamed(),
                unnamed_run("SELEC 3"),
                run_unnamed(),
            ],
        ),
    ];
    // A cache of one statement per backend: pgbastion's closes of evicted statements are
    // owed when the scripts' messages come; so is the session switch's group at every
    // checkout.
    let switch = "session_switch = { statement = \"SELECT set_config('pgbastion.switch', $1, \
                  false)\", key = \"k\" }";
    for (cache, per_backend, listener) in [
        (true, 256, ""),
        (false, 256, switch),
        (true, 1, switch),
        (false, 1, ""),
    ] {
        let pool = format!(
            "mode = \"transaction\", size = 1, cache_unnamed = {cache}, \
             statements_per_backend = {per_backend}"
        );
        let (_dir, proxy) = pooled_proxy(&cluster, &pool, listener).await;
        within("pipelined scripts, direct and pooled", async {
            for (what, script) in &scripts {
                for pipelined in [false, true] {
                    let direct = replies_to(cluster.addr(), script, pipelined).await;
                    // Twice: the second time the pool's backend holds what the first made.
                    for round in 0..2 {
                        let pooled = replies_to(proxy.addr, script, pipelined).await;
                        assert_eq!(
                            pooled,
                            direct,
                            "{what} (cache_unnamed = {cache}, statements_per_backend = \
                             {per_backend}, switch: {}, pipelined: {pipelined}, round {round})",
                            !listener.is_empty()
                        );
                    }
                }
            }
        })
        .await;
    }
}

/// What a client that sends a run and many Closes without a Sync, and reads nothing, gets
/// before its Sync (at least the run's replies and `closes / 2` CloseCompletes: PostgreSQL
/// sends its output when its buffer fills), and the CloseCompletes in all.
async fn replies_without_sync(addr: std::net::SocketAddr, closes: usize) -> usize {
    use pgbastion_wire::FrontendMessage as F;
    let mut raw = RawClient::startup(addr, "postgres", "postgres", None)
        .await
        .unwrap();
    let mut run = unnamed_run("SELECT 1");
    run.pop();
    for message in &run {
        raw.queue(message).unwrap();
    }
    for _ in 0..closes {
        raw.queue(&F::Close {
            target: pgbastion_wire::Target::Statement,
            name: "nosuch".into(),
        })
        .unwrap();
    }
    raw.flush().await.unwrap();
    let mut seen = String::new();
    let mut closed = 0;
    while closed < closes / 2 {
        let message = raw.read().await.unwrap();
        if matches!(message, BackendMessage::CloseComplete) {
            closed += 1;
        } else {
            seen.push(message.tag().byte() as char);
        }
    }
    assert_eq!(seen, "12DC", "the run's replies come first");
    raw.send(&F::Sync).await.unwrap();
    for message in raw.read_until_ready().await.unwrap() {
        closed += usize::from(matches!(message, BackendMessage::CloseComplete));
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_without_a_sync_gets_its_replies_as_from_postgresql() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 1", "").await;
    // Closes of a name the client never prepared are answered by pgbastion, behind the run's
    // replies that the backend keeps until its buffer fills or a Flush; pgbastion stops
    // reading at 4,096 owed replies and asks the backend for them.
    let closes = 20_000;
    within("closes without a Sync", async {
        assert_eq!(replies_without_sync(cluster.addr(), closes).await, closes);
        assert_eq!(replies_without_sync(proxy.addr, closes).await, closes);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_whose_date_style_differs_do_not_share_a_statement() {
    let cluster = trust_cluster();
    // One backend: the second client's Parse meets the first one's statement.
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 1", "").await;
    within("date literals under two DateStyles", async {
        let sql = "SELECT '01/02/2020'::date::text";
        for (style, date) in [("ISO, DMY", "2020-02-01"), ("ISO, MDY", "2020-01-02")] {
            let client = client(&proxy).await;
            client
                .batch_execute(&format!("SET DateStyle = '{style}'"))
                .await
                .unwrap();
            let statement = client.prepare(sql).await.unwrap();
            let read: String = client.query_one(&statement, &[]).await.unwrap().get(0);
            assert_eq!(read, date, "{sql} under {style}");
        }
    })
    .await;
}

/// A text whose value shows the time zone it was parsed under.
const ZONED: &str = "SELECT '2024-06-01 00:00'::timestamptz::text";

/// Through a transaction pool of one backend: a client set to UTC sends `setup` (each group
/// answered before the next), then `at_once` (sent together; its last group prepares `s1`
/// as [`ZONED`] and runs it), whose rows must read New York's time; then a client in UTC
/// must read the text under UTC, so the first client's statement was not shared under
/// UTC's name.
async fn read_in_new_york_and_not_shared(
    cluster: &Cluster,
    setup: &[Group],
    at_once: &[Group],
    what: &str,
) {
    use pgbastion_wire::FrontendMessage as F;
    let (_dir, proxy) = pooled_proxy(cluster, "mode = \"transaction\", size = 1", "").await;
    within(what, async {
        let mut raw = RawClient::startup(proxy.addr, "postgres", "postgres", None)
            .await
            .unwrap();
        let utc = vec![F::Query("SET TimeZone TO 'UTC'".into())];
        for group in std::iter::once(&utc).chain(setup) {
            for message in group {
                raw.queue(message).unwrap();
            }
            raw.flush().await.unwrap();
            raw.read_until_ready().await.unwrap();
        }
        for message in at_once.iter().flatten() {
            raw.queue(message).unwrap();
        }
        raw.flush().await.unwrap();
        let mut rows = Vec::new();
        for _ in at_once {
            rows = raw.read_until_ready().await.unwrap();
        }
        assert!(
            rows.iter()
                .any(|message| matches!(message, BackendMessage::DataRow(row)
                if format!("{row:?}").contains("-04"))),
            "{what}: read under New York's time: {rows:?}"
        );
        raw.send(&F::Terminate).await.unwrap();
        let utc = client(&proxy).await;
        utc.batch_execute("SET TimeZone TO 'UTC'").await.unwrap();
        let statement = utc.prepare(ZONED).await.unwrap();
        let read: String = utc.query_one(&statement, &[]).await.unwrap().get(0);
        assert_eq!(read, "2024-06-01 00:00:00+00", "{what}");
    })
    .await;
}

/// `first` (messages without their Sync), then `s1` prepared as [`ZONED`] and run, in one
/// Sync group.
fn then_zoned(mut first: Group) -> Group {
    first.push(parse_as("s1", ZONED));
    first.extend(with_sync(bind_execute("s1")));
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_behind_a_set_is_not_shared_under_the_settings_before() {
    use pgbastion_wire::FrontendMessage as F;
    // Sent at once: the Parse is read under New York's time, whatever pgbastion knew of the
    // client's settings when it came.
    read_in_new_york_and_not_shared(
        &trust_cluster(),
        &[],
        &[
            vec![F::Query("SET TimeZone TO 'America/New_York'".into())],
            then_zoned(Vec::new()),
        ],
        "a Parse pipelined behind a SET TimeZone",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_parsed_after_a_prepared_set_in_its_group_is_not_shared() {
    use pgbastion_wire::FrontendMessage as F;
    // The SET is a prepared statement of the client's (pgjdbc's after five runs): no text of
    // it passes when it runs, only the backend's ParameterStatus tells.
    read_in_new_york_and_not_shared(
        &trust_cluster(),
        &[vec![
            parse_as("zone", "SET TimeZone TO 'America/New_York'"),
            F::Sync,
        ]],
        &[then_zoned(bind_execute("zone"))],
        "a Parse behind a SET run from a prepared statement",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_parsed_in_the_group_of_a_set_local_is_not_shared() {
    use pgbastion_wire::FrontendMessage as F;
    let cluster = trust_cluster();
    // The zone is New York's only until the group's Sync: PostgreSQL reports nothing. The
    // SET LOCAL's text in the group, or a statement prepared before and bound there.
    let set_local = "SET LOCAL TimeZone TO 'America/New_York'";
    let mut as_text = unnamed_run(set_local);
    as_text.pop();
    read_in_new_york_and_not_shared(
        &cluster,
        &[],
        &[then_zoned(as_text)],
        "a Parse in the group of a SET LOCAL",
    )
    .await;
    read_in_new_york_and_not_shared(
        &cluster,
        &[vec![parse_as("zone", set_local), F::Sync]],
        &[then_zoned(bind_execute("zone"))],
        "a Parse in the group of a prepared SET LOCAL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_date_style_without_its_order_gets_the_default_order() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 1", "").await;
    within("DateStyle=ISO after a client in DMY", async {
        let dmy = client(&proxy).await;
        dmy.batch_execute("SET DateStyle = 'ISO, DMY'")
            .await
            .unwrap();
        drop(dmy);
        // As a new session at PostgreSQL: the server's default order (MDY), not the last
        // client's.
        let iso = client_as(&proxy, "iso", Some("-c DateStyle=ISO")).await;
        let row = iso
            .query_one(
                "SELECT '01/02/2020'::date::text, current_setting('DateStyle')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(1), "ISO, MDY");
        assert_eq!(row.get::<_, String>(0), "2020-01-02");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_made_again_after_a_set_is_not_shared_under_the_settings_before() {
    let cluster = trust_cluster();
    // One backend that holds one statement: the first client's statement is evicted, then
    // made again there after its SET.
    let pool = "mode = \"transaction\", size = 1, statements_per_backend = 1";
    let (_dir, proxy) = pooled_proxy(&cluster, pool, "").await;
    within("a statement made again under a changed DateStyle", async {
        let sql = "SELECT '01/02/2020'::date::text";
        let first = client(&proxy).await;
        first
            .batch_execute("SET DateStyle = 'ISO, DMY'")
            .await
            .unwrap();
        let dated = first.prepare(sql).await.unwrap();
        assert_eq!(
            first
                .query_one(&dated, &[])
                .await
                .unwrap()
                .get::<_, String>(0),
            "2020-02-01"
        );
        let other = first.prepare("SELECT 2").await.unwrap();
        first.query_one(&other, &[]).await.unwrap();
        first
            .batch_execute("SET DateStyle = 'ISO, MDY'")
            .await
            .unwrap();
        first.query_one(&dated, &[]).await.unwrap();
        // A client under the first settings reads the text under them.
        let second = client(&proxy).await;
        second
            .batch_execute("SET DateStyle = 'ISO, DMY'")
            .await
            .unwrap();
        let dated = second.prepare(sql).await.unwrap();
        let read: String = second.query_one(&dated, &[]).await.unwrap().get(0);
        assert_eq!(read, "2020-02-01");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_whose_table_changed_works_again_once_prepared_again() {
    let cluster = trust_cluster();
    // One backend, so that every statement below meets the backend's earlier copy.
    let pool = "mode = \"transaction\", size = 1, cache_unnamed = true";
    let (_dir, proxy) = pooled_proxy(&cluster, pool, "").await;
    within("statements across a change of their table", async {
        let client = client(&proxy).await;
        client
            .batch_execute("CREATE TABLE shape (a int); INSERT INTO shape VALUES (1)")
            .await
            .unwrap();
        let named = client.prepare("SELECT * FROM shape").await.unwrap();
        assert_eq!(client.query(&named, &[]).await.unwrap()[0].len(), 1);
        let unnamed = client
            .query_typed("SELECT * FROM shape", &[])
            .await
            .unwrap();
        assert_eq!(unnamed[0].len(), 1);
        client
            .batch_execute("ALTER TABLE shape ADD COLUMN b int")
            .await
            .unwrap();
        let before = pid(&client).await;
        // PostgreSQL refuses a prepared statement whose result changed shape...
        let error = client.query(&named, &[]).await.unwrap_err();
        assert_eq!(code(&error), "0A000", "{error}");
        // ...until it is prepared again. The backend's copy is shared by every client that
        // prepared the text (and stands in for unnamed statements of it), so the backend is
        // retired when the client gives it back: preparing the text again, and the unnamed
        // statement that PostgreSQL would parse afresh, meet fresh statements.
        let after = pid(&client).await;
        assert_ne!(after, before, "the backend was retired");
        assert_eq!(pid(&client).await, after, "once: the next backend is kept");
        let again = client.prepare("SELECT * FROM shape").await.unwrap();
        assert_eq!(client.query(&again, &[]).await.unwrap()[0].len(), 2);
        let unnamed = client
            .query_typed("SELECT * FROM shape", &[])
            .await
            .unwrap();
        assert_eq!(unnamed[0].len(), 2);
        // The difference cache_unnamed makes: an unnamed statement whose table changed fails
        // once with 0A000 where PostgreSQL would have parsed it afresh (the backend, which
        // holds the statement from before, is then retired); it never runs with the old
        // shape.
        client
            .batch_execute("ALTER TABLE shape ADD COLUMN c int")
            .await
            .unwrap();
        let error = client
            .query_typed("SELECT * FROM shape", &[])
            .await
            .unwrap_err();
        assert_eq!(code(&error), "0A000", "{error}");
        let rows = client
            .query_typed("SELECT * FROM shape", &[])
            .await
            .unwrap();
        assert_eq!(rows[0].len(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_pins_the_client_or_is_refused() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!(
        "{}\n[[route]]\nmatch = {{ database = \"strict\" }}\nauth = \"trust\"\nbackend = \"{}\"\n\
         pool = {{ mode = \"transaction\", size = 2, session_state = \"refuse\" }}\n",
        pooled(&cluster, "mode = \"transaction\", size = 2", "")
            .replacen("[[route]]\n", "[[route]]\nmatch = { database = \"postgres\" }\n", 1),
        backend_url(&cluster, "postgres", None, "postgres")
    );
    let proxy = start_proxy(dir.path(), &config).await;
    within("pin and refuse", async {
        let a = client(&proxy).await;
        // A value no statement here comes near: the pinned client's own queries must
        // not be cut short by it on a loaded machine (1ms once was, in CI).
        a.batch_execute("SET statement_timeout = '42min'")
            .await
            .unwrap();
        let pinned = pid(&a).await;
        let b = client(&proxy).await;
        for _ in 0..10 {
            b.batch_execute("SELECT pg_sleep(0.01)").await.unwrap();
        }
        assert_eq!(pid(&a).await, pinned, "a pinned client keeps its backend");
        let shown: String = a
            .query_one("SHOW statement_timeout", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(shown, "42min");

        let strict = connect(proxy.addr, "postgres", None, "strict")
            .await
            .unwrap();
        for statement in [
            "LISTEN jobs",
            "PREPARE p AS SELECT 1",
            "SELECT pg_advisory_lock(1)",
            "CREATE TEMP TABLE t (x int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SET work_mem = '64MB'",
        ] {
            let error = strict.batch_execute(statement).await.unwrap_err();
            assert_eq!(code(&error), "0A000", "{statement}");
        }
        strict.batch_execute("SELECT 1").await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_statement_that_leaves_session_state_pins_its_client() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 3", "").await;
    within("pin per case", async {
        let other = client(&proxy).await;
        for statement in [
            "LISTEN jobs",
            "PREPARE p AS SELECT 1",
            "SELECT pg_advisory_lock(1)",
            "CREATE TEMP TABLE t (x int)",
            "BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT",
            "SET work_mem = '64MB'",
        ] {
            let pinned = client(&proxy).await;
            pinned.batch_execute(statement).await.unwrap();
            let first = pid(&pinned).await;
            for _ in 0..5 {
                // Another client's transactions in between: the pinned client stays put.
                other.batch_execute("SELECT 1").await.unwrap();
                assert_eq!(pid(&pinned).await, first, "{statement}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_mode_backend_left_inside_a_transaction_is_closed_not_reused() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"session\", size = 1", "").await;
    within("left in a transaction", async {
        let first = client(&proxy).await;
        first
            .batch_execute("BEGIN; CREATE TABLE uncommitted (x int)")
            .await
            .unwrap();
        let left = pid(&first).await;
        drop(first);
        let second = loop {
            match connect(proxy.addr, "postgres", None, "postgres").await {
                Ok(second) => break second,
                // The pool's one slot frees as the first client's backend closes.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        assert_ne!(
            pid(&second).await,
            left,
            "a backend left mid-transaction is closed"
        );
        let gone: bool = second
            .query_one("SELECT to_regclass('uncommitted') IS NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(gone, "nothing of the abandoned transaction was committed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_resets_a_backend_before_the_next_client() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"session\", size = 1", "").await;
    within("session reset", async {
        let first = client(&proxy).await;
        let used = pid(&first).await;
        first
            .batch_execute(
                "SET work_mem = '77MB'; CREATE TEMP TABLE left_behind (x int); \
                 PREPARE p AS SELECT 1; LISTEN chan; SELECT pg_advisory_lock(42)",
            )
            .await
            .unwrap();
        drop(first);
        let second = loop {
            // The first client's close and the reset take a moment.
            let second = client(&proxy).await;
            if pid(&second).await == used {
                break second;
            }
        };
        let row = second
            .query_one(
                "SELECT current_setting('work_mem'), \
                 (SELECT count(*) FROM pg_prepared_statements WHERE name = 'p'), \
                 (SELECT count(*) FROM pg_listening_channels()), \
                 (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'), \
                 to_regclass('pg_temp.left_behind') IS NULL",
                &[],
            )
            .await
            .unwrap();
        let work_mem: String = row.get(0);
        assert_ne!(work_mem, "77MB");
        assert_eq!(row.get::<_, i64>(1), 0);
        assert_eq!(row.get::<_, i64>(2), 0);
        assert_eq!(row.get::<_, i64>(3), 0);
        assert!(row.get::<_, bool>(4));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_answers_53300_after_the_checkout_timeout_and_then_serves() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(
        &cluster,
        "mode = \"transaction\", size = 1, checkout_timeout = \"500ms\"",
        "",
    )
    .await;
    within("checkout timeout", async {
        let holder = client(&proxy).await;
        holder.batch_execute("BEGIN").await.unwrap();
        let waiter = client(&proxy).await;
        let started = Instant::now();
        let error = waiter.query_one("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(code(&error), "53300");
        assert!(started.elapsed() < Duration::from_secs(3));
        holder.batch_execute("COMMIT").await.unwrap();
        let one: i32 = waiter.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "the same client is served once a backend is free");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_transaction_fails_only_its_client() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 2", "").await;
    within("killed backend", async {
        let victim = client(&proxy).await;
        victim.batch_execute("BEGIN").await.unwrap();
        let doomed = pid(&victim).await;
        let other = client(&proxy).await;
        cluster
            .execute_sql(&format!("SELECT pg_terminate_backend({doomed})"))
            .unwrap();
        assert!(victim.query_one("SELECT 1", &[]).await.is_err());
        for _ in 0..5 {
            let one: i32 = other.query_one("SELECT 1", &[]).await.unwrap().get(0);
            assert_eq!(one, 1);
        }
        let fresh = client(&proxy).await;
        assert_ne!(pid(&fresh).await, doomed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_heals_after_the_server_restarts() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 2", "").await;
    within("restart", async {
        let before = client(&proxy).await;
        pid(&before).await;
        cluster.restart_immediate().unwrap();
        // The idle backend died with the server: the pool checks, replaces, serves.
        let one: i32 = before.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    })
    .await;
}

/// A cancel reaches the client's running query at once; cancels sent right after a query
/// returned hit nothing later, of this client or of `other` (which shares the backend in
/// transaction mode).
async fn cancel_checks(pool: &str) {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, pool, "").await;
    within("cancel", async {
        let a = Arc::new(client(&proxy).await);
        let token = a.cancel_token();
        let running = {
            let a = a.clone();
            tokio::spawn(async move { a.batch_execute("SELECT pg_sleep(30)").await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let error = running.await.unwrap().unwrap_err();
        assert_eq!(code(&error), "57014");
        assert!(started.elapsed() < Duration::from_secs(2));

        // Late cancels, each waited for until pgbastion closes the cancel connection (as
        // libpq and asyncpg do; tokio-postgres returns as soon as it has sent it, so a cancel
        // it sends "after" a query may in fact reach pgbastion during the next one, and
        // cancel it rightly). In session mode, `a` gives its backend to `late`.
        drop(a);
        let other = client(&proxy).await;
        let mut late = RawClient::startup(proxy.addr, "postgres", "postgres", None)
            .await
            .unwrap();
        let clean = |messages: Vec<BackendMessage>, round: usize| {
            let error = messages
                .iter()
                .find(|m| matches!(m, BackendMessage::ErrorResponse(_)));
            assert!(error.is_none(), "{pool}, round {round}: {error:?}");
        };
        for round in 0..30 {
            clean(late.simple_query("SELECT 1").await.unwrap(), round);
            late.cancel(proxy.addr).await.unwrap();
            other
                .batch_execute("SELECT pg_sleep(0.01)")
                .await
                .unwrap_or_else(|e| panic!("{pool}, round {round}: {e}"));
            clean(
                late.simple_query("SELECT pg_sleep(0.01)").await.unwrap(),
                round,
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query_and_a_late_cancel_cancels_nothing() {
    cancel_checks("mode = \"transaction\", size = 1").await;
    cancel_checks("mode = \"session\", size = 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_client_waiting_for_a_backend() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(
        &cluster,
        "mode = \"transaction\", size = 1, checkout_timeout = \"30s\"",
        "",
    )
    .await;
    within("cancel while queued", async {
        let holder = client(&proxy).await;
        holder.batch_execute("BEGIN").await.unwrap();
        let queued = Arc::new(client(&proxy).await);
        let token = queued.cancel_token();
        let waiting = {
            let queued = queued.clone();
            tokio::spawn(async move { queued.batch_execute("SELECT 1").await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let error = waiting.await.unwrap().unwrap_err();
        assert_eq!(code(&error), "57014");
        assert!(started.elapsed() < Duration::from_secs(1));
        holder.batch_execute("COMMIT").await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_parameter_the_server_refuses_fails_the_client_before_anything_runs() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 2", "").await;
    within("refused parameter", async {
        let client = client_as(&proxy, "bogus", Some("-c statement_timeout=bogus")).await;
        let error = client
            .batch_execute("CREATE TABLE should_not_exist (x int)")
            .await
            .unwrap_err();
        assert_eq!(code(&error), "22023", "PostgreSQL's own error: {error}");
        let absent = cluster
            .query("SELECT to_regclass('should_not_exist') IS NULL")
            .unwrap();
        assert_eq!(absent.trim(), "t", "the client's statement never ran");
        let fine: i32 = client_as(&proxy, "fine", None)
            .await
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(fine, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_follow_each_client_across_backends() {
    let cluster = trust_cluster();
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 2", "").await;
    within("parameters", async {
        let mut clients = Vec::new();
        for (zone, app) in [
            ("UTC", "one"),
            ("Asia/Tokyo", "two"),
            ("America/Lima", "three"),
        ] {
            let options = format!("-c TimeZone={zone}");
            clients.push((zone, app, client_as(&proxy, app, Some(&options)).await));
        }
        for _ in 0..5 {
            for (zone, app, client) in &clients {
                let row = client
                    .query_one(
                        "SELECT current_setting('TimeZone'), current_setting('application_name')",
                        &[],
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    (
                        row.get::<_, String>(0).as_str(),
                        row.get::<_, String>(1).as_str()
                    ),
                    (*zone, *app)
                );
            }
        }
    })
    .await;
}

/// Reads the session switch as the backend saw it: its values, and whether the signature
/// verifies with pgcrypto.
const SWITCH_CHECK: &str = "SELECT current_setting('pgbastion.switch'), \
     encode(hmac(current_setting('pgbastion.switch') || E'\\n' || pg_backend_pid()::text, \
     'switch-key', 'sha256'), 'hex') = current_setting('pgbastion.signature')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_switch_tells_each_backend_who_the_client_is_and_signs_it() {
    let cluster = trust_cluster();
    cluster.execute_sql("CREATE EXTENSION pgcrypto").unwrap();
    let listener = "proxy_protocol = \"optional\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
        session_switch = { statement = \"SELECT set_config('pgbastion.switch', \
        concat_ws(E'\\\\n', $1, $2, $3, $4, $5, $6), false), \
        set_config('pgbastion.signature', $7, false)\", key = \"switch-key\" }";
    let (_dir, proxy) = pooled_proxy(&cluster, "mode = \"transaction\", size = 1", listener).await;
    within("session switch", async {
        let mut clients = Vec::new();
        for app in ["one", "two", "three"] {
            clients.push((app, client_as(&proxy, app, None).await));
        }
        let mut counters = Vec::new();
        for _ in 0..3 {
            for (app, client) in &clients {
                let row = client.query_one(SWITCH_CHECK, &[]).await.unwrap();
                let switch: String = row.get(0);
                let values: Vec<&str> = switch.split('\n').collect();
                assert_eq!(values[0], "127.0.0.1");
                assert_eq!(&values[2..5], ["postgres", "postgres", *app]);
                assert!(row.get::<_, bool>(1), "signature verifies: {switch}");
                counters.push(values[5].parse::<u64>().unwrap());
            }
        }
        let mut sorted = counters.clone();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            counters.len(),
            "a new counter at every checkout"
        );

        // A client forging the value is found out.
        let (_, forger) = &clients[0];
        forger
            .batch_execute("BEGIN; SELECT set_config('pgbastion.switch', '10.6.6.6', false)")
            .await
            .unwrap();
        let row = forger.query_one(SWITCH_CHECK, &[]).await.unwrap();
        assert!(!row.get::<_, bool>(1), "a forged value does not verify");
        forger.batch_execute("COMMIT").await.unwrap();
        // Setting a parameter the backend does not report pinned the forger: let it go.
        drop(clients);

        // Behind a load balancer: the PROXY header's source is the client.
        let mut raw = RawClient::connect(proxy.addr).await.unwrap();
        let header = pgbastion_gateway::proxy_protocol::encode_v2(
            "203.0.113.9:40000".parse().unwrap(),
            proxy.addr,
        )
        .unwrap();
        raw.send_raw(&header).await.unwrap();
        raw.send_startup(&[("user", "postgres"), ("database", "postgres")])
            .await
            .unwrap();
        raw.authenticate("postgres", None).await.unwrap();
        let messages = raw.simple_query(SWITCH_CHECK).await.unwrap();
        let text = format!("{messages:?}");
        assert!(
            text.contains("203.0.113.9") && text.contains("40000"),
            "{text}"
        );
    })
    .await;
}
