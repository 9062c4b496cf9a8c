#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Graceful drain of the real binary (docs/operations.md, Graceful drain): SIGTERM and SIGINT
//! sent to a running pgbastion with clients on a transparent and on a pooled
//! (transaction-mode) listener, against a real PostgreSQL cluster.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgbastion_testkit::{Cluster, RawClient, RawClientError};
use pgbastion_wire::{BackendMessage, ErrorResponse};

#[path = "common/binary.rs"]
mod binary;

use binary::{cluster_and_two_listeners, local, within, Bastion};

/// A cluster with a table `t`, and pgbastion in front of it with `grace_period`: a
/// transparent listener and a pooled one (transaction mode), and its metrics endpoint (whose
/// port is the third).
fn start(grace_period: &str) -> (Cluster, Bastion, [SocketAddr; 2]) {
    let (cluster, bastion, addrs, _) = start_with_metrics(grace_period);
    (cluster, bastion, addrs)
}

fn start_with_metrics(grace_period: &str) -> (Cluster, Bastion, [SocketAddr; 2], u16) {
    let (cluster, config, ports) =
        cluster_and_two_listeners(&format!("grace_period = \"{grace_period}\""));
    let bastion = Bastion::start(&config, &[], &[], &ports);
    (
        cluster,
        bastion,
        [local(ports[0]), local(ports[1])],
        ports[2],
    )
}

/// The HTTP status of `GET /ready` on `port`.
fn ready_status(port: u16) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(local(port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

async fn login(addr: SocketAddr) -> RawClient {
    RawClient::startup(addr, "postgres", "postgres", None)
        .await
        .unwrap_or_else(|e| panic!("login at {addr}: {e}"))
}

/// Runs `sql` and asserts that it ends in ReadyForQuery without an error.
async fn run(client: &mut RawClient, sql: &str) {
    let messages = client.simple_query(sql).await.unwrap();
    let error = messages.iter().find_map(|m| match m {
        BackendMessage::ErrorResponse(e) => Some(e.message().to_owned()),
        _ => None,
    });
    assert_eq!(error, None, "{sql}");
}

fn code(error: &ErrorResponse) -> String {
    error
        .sqlstate()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_default()
}

/// Reads until an ErrorResponse; asserts it is FATAL 57P01 with PostgreSQL's text and that
/// the connection then closes.
async fn expect_shutdown(client: &mut RawClient, who: &str) {
    let error = next_error(client, who).await;
    assert_eq!(code(&error), "57P01", "{who}: {error:?}");
    assert_eq!(
        error.message(),
        "terminating connection due to administrator command"
    );
    assert_eq!(error.severity().map(|s| s.as_str()), Some("FATAL"), "{who}");
    let after = client.read().await;
    assert!(
        matches!(after, Err(RawClientError::Closed | RawClientError::Io(_))),
        "{who}: not closed after 57P01: {after:?}"
    );
}

/// The next ErrorResponse (other messages, e.g. ReadyForQuery, are skipped).
async fn next_error(client: &mut RawClient, who: &str) -> ErrorResponse {
    loop {
        match client.read().await {
            Ok(BackendMessage::ErrorResponse(error)) => return error,
            Ok(_) => {}
            Err(e) => panic!("{who}: no error before {e}"),
        }
    }
}

/// Polls until a connect to `addr` is refused at the TCP level.
async fn assert_refused_soon(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other => assert!(
                Instant::now() < deadline,
                "{addr} still accepts after SIGTERM: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the cluster until `sql` returns `want` (trimmed).
fn wait_for_cluster(cluster: &Cluster, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = cluster.query(sql).unwrap();
        if got.trim() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {got}, want {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls the log (read by a thread, which may lag the exit) until `count` lines hold both
/// `what` and `why`.
fn wait_for_log(bastion: &Bastion, what: &str, why: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = bastion.log();
        let seen = log
            .iter()
            .filter(|l| l.contains(what) && l.contains(why))
            .count();
        if seen == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{seen} lines with {what:?} and {why:?}, want {count}:\n{}",
            log.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_idle_clients_with_57p01_lets_open_transactions_commit_and_exits_0() {
    within("the drain", async {
        let (cluster, mut bastion, addrs, metrics) = start_with_metrics("30s");
        let mut idle = Vec::new();
        let mut busy = Vec::new();
        for (addr, mode) in addrs.into_iter().zip(["transparent", "pooled"]) {
            let mut client = login(addr).await;
            run(&mut client, "SELECT 1").await;
            idle.push((client, mode));
            let mut client = login(addr).await;
            run(&mut client, "BEGIN").await;
            run(&mut client, &format!("INSERT INTO t VALUES ('{mode}')")).await;
            busy.push((client, mode));
        }
        assert_eq!(ready_status(metrics), 200, "ready before the drain");
        let signalled = Instant::now();
        bastion.signal(Signal::SIGTERM);
        for (client, mode) in &mut idle {
            expect_shutdown(client, &format!("idle {mode} client")).await;
        }
        assert_eq!(ready_status(metrics), 503, "/ready while draining");
        for addr in addrs {
            assert_refused_soon(addr).await;
        }
        assert!(bastion.alive(), "exited with transactions open");
        for (client, mode) in &mut busy {
            run(client, "COMMIT").await;
            expect_shutdown(client, &format!("{mode} client after COMMIT")).await;
        }
        let status = bastion.wait_exit(Duration::from_secs(10));
        let took = signalled.elapsed();
        assert!(status.success(), "{status:?}");
        println!("SIGTERM to exit, every client done before the grace period: {took:?}");
        assert_eq!(
            cluster
                .query("SELECT string_agg(label, ',' ORDER BY label) FROM t")
                .unwrap()
                .trim(),
            "pooled,transparent"
        );
        wait_for_log(&bastion, "session ended", "shutdown", 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_running_past_the_grace_period_is_cancelled_on_the_backend() {
    within("the cancel at the deadline", async {
        let grace = Duration::from_secs(2);
        let (cluster, mut bastion, addrs) = start("2s");
        let mut sleepers = Vec::new();
        for (addr, mode) in addrs.into_iter().zip(["transparent", "pooled"]) {
            let mut client = login(addr).await;
            client
                .send(&pgbastion_wire::FrontendMessage::Query(format!(
                    "SELECT pg_sleep(60) /* {mode} */"
                )))
                .await
                .unwrap();
            sleepers.push((client, mode));
        }
        let running = "SELECT count(*) FROM pg_stat_activity \
                       WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(60)%'";
        wait_for_cluster(&cluster, running, "2");
        let signalled = Instant::now();
        bastion.signal(Signal::SIGTERM);
        for (client, mode) in &mut sleepers {
            let who = format!("{mode} client in pg_sleep");
            let cancelled = next_error(client, &who).await;
            assert_eq!(code(&cancelled), "57014", "{who}: {cancelled:?}");
            assert!(
                signalled.elapsed() >= grace,
                "{who}: cancelled before the grace period was over"
            );
            expect_shutdown(client, &who).await;
        }
        let status = bastion.wait_exit(grace + Duration::from_secs(10));
        let took = signalled.elapsed();
        assert!(status.success(), "{status:?}");
        println!("grace period 2 s, statement running: SIGTERM to exit {took:?}");
        assert!(took < grace + Duration::from_secs(3), "{took:?}");
        assert_eq!(cluster.query(running).unwrap().trim(), "0");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_does_not_wait_and_rolls_back_open_transactions() {
    within("SIGINT", async {
        let (cluster, mut bastion, addrs) = start("30s");
        let mut busy = Vec::new();
        for (addr, mode) in addrs.into_iter().zip(["transparent", "pooled"]) {
            let mut client = login(addr).await;
            run(&mut client, "BEGIN").await;
            run(&mut client, &format!("INSERT INTO t VALUES ('{mode}')")).await;
            busy.push((client, mode));
        }
        let signalled = Instant::now();
        bastion.signal(Signal::SIGINT);
        for (client, mode) in &mut busy {
            expect_shutdown(client, &format!("{mode} client in a transaction")).await;
        }
        let status = bastion.wait_exit(Duration::from_secs(10));
        let took = signalled.elapsed();
        assert!(status.success(), "{status:?}");
        println!("SIGINT with two open transactions: exit after {took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        // The backends went away with their transactions: nothing committed, nothing left
        // idle in transaction.
        let open = "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'";
        wait_for_cluster(&cluster, open, "0");
        assert_eq!(cluster.query("SELECT count(*) FROM t").unwrap().trim(), "0");
        wait_for_log(&bastion, "session ended", "shutdown", 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_client_waiting_for_a_backend_is_ended_by_the_drain_not_by_the_queue() {
    within("the drain of a queued client", async {
        let (cluster, mut bastion, [_, pooled]) = start("30s");
        // Every backend of the pool (4) inside a transaction...
        let mut busy = Vec::new();
        for n in 0..4 {
            let mut client = login(pooled).await;
            run(&mut client, "BEGIN").await;
            run(&mut client, &format!("INSERT INTO t VALUES ('busy {n}')")).await;
            busy.push(client);
        }
        // ...so this one's query waits in the pool's queue.
        let mut queued = login(pooled).await;
        queued
            .send(&pgbastion_wire::FrontendMessage::Query(
                "INSERT INTO t VALUES ('queued')".into(),
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let signalled = Instant::now();
        bastion.signal(Signal::SIGTERM);
        // Told at once, not after checkout_timeout (10 s) with 53300.
        expect_shutdown(&mut queued, "queued client").await;
        assert!(signalled.elapsed() < Duration::from_secs(5));
        for (n, client) in busy.iter_mut().enumerate() {
            run(client, "COMMIT").await;
            expect_shutdown(client, &format!("busy client {n}")).await;
        }
        assert!(bastion.wait_exit(Duration::from_secs(10)).success());
        assert_eq!(
            cluster
                .query("SELECT count(*) FILTER (WHERE label LIKE 'busy%'), count(*) FILTER (WHERE label = 'queued') FROM t")
                .unwrap()
                .trim(),
            "4|0",
            "the busy ones committed, the queued statement never ran"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_pool_client_waiting_at_login_is_ended_by_the_drain() {
    within(
        "the drain of a client waiting for its session's backend",
        async {
            let (_cluster, config, ports) = cluster_and_two_listeners("grace_period = \"30s\"");
            let session = "pool = { mode = \"session\", size = 1, checkout_timeout = \"20s\" }";
            let config = config.replace("pool = { mode = \"transaction\", size = 4 }", session);
            assert!(config.contains(session));
            let mut bastion = Bastion::start(&config, &[], &[], &ports);
            let pooled = local(ports[1]);
            // The pool's one backend is this client's for its session, inside a transaction
            // (which the drain waits for)...
            let mut holder = login(pooled).await;
            run(&mut holder, "BEGIN").await;
            // ...so this one waits for it at login.
            let mut waiting = RawClient::connect(pooled).await.unwrap();
            waiting
                .send_startup(&[("user", "postgres"), ("database", "postgres")])
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let signalled = Instant::now();
            bastion.signal(Signal::SIGTERM);
            // Told at once, not after checkout_timeout (20 s) with 53300.
            expect_shutdown(&mut waiting, "client waiting at login").await;
            assert!(signalled.elapsed() < Duration::from_secs(5));
            run(&mut holder, "COMMIT").await;
            expect_shutdown(&mut holder, "session once idle").await;
            assert!(bastion.wait_exit(Duration::from_secs(10)).success());
        },
    )
    .await;
}
