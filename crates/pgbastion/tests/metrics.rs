#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! The metrics endpoint of the real binary (`[metrics] address`), scraped while pgbench runs
//! through a transparent and a transaction-pooled listener in front of a real cluster: the
//! connection counters add up, every successful authentication started a session, the query
//! and transaction histograms count at least what pgbench ran, the pool gauges carry their
//! labels, a wrong password counts as a failed attempt, and the health endpoints answer as
//! documented (docs/operations.md, Metrics).

#[path = "common/binary.rs"]
mod binary;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use binary::{free_ports, local, Bastion};
use pgbastion_testkit::{Cluster, PasswordEncryption};

const USER: &str = "app";
const PASSWORD: &str = "metrics-check-pw";
/// pgbench's clients, and how long each run lasts (seconds): long enough to be scraped
/// while it runs on a loaded machine.
const CLIENTS: u64 = 4;
const SECONDS: u64 = 4;
/// Statements in one pgbench transaction of the script below.
const SCRIPT: &str = "BEGIN;\nSELECT 1;\nSELECT 2;\nCOMMIT;\n";
const QUERIES_PER_TRANSACTION: u64 = 4;
const POOL_SIZE: u64 = 2;

/// One sample of the exposition: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition strictly: every line is a comment or `name{labels} value`.
fn parse(text: &str) -> Vec<Sample> {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
                None => (series, BTreeMap::new()),
            };
            assert!(
                name.starts_with("pgbastion_")
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{text}"));
        let (value, after) = after.split_once('"').unwrap_or_else(|| panic!("{text}"));
        labels.insert(name.to_owned(), value.to_owned());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    labels
}

/// The scraped samples, with lookups.
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The sum of the samples named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.0.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }
}

/// One HTTP/1.1 request: the status code and the body.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(local(port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn scrape(port: u16, path: &str) -> Scrape {
    let (status, body) = http(port, "GET", path);
    assert_eq!(status, 200, "{path}: {body}");
    Scrape(parse(&body))
}

/// Polls `scrape` until `done` holds, for at most 60 s.
fn scrape_until(port: u16, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scraped = scrape(port, "/metrics");
        if done(&scraped) {
            return scraped;
        }
        assert!(Instant::now() < deadline, "{what}: never seen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs pgbench on `port` with the script; returns the transactions it reports.
fn pgbench(bindir: &Path, port: u16, script: &Path) -> u64 {
    let output = Command::new(bindir.join("pgbench"))
        .args(["-n", "-h", "127.0.0.1", "-U", USER, "-p", &port.to_string()])
        .args(["-c", &CLIENTS.to_string(), "-j", "2"])
        .args(["-T", &SECONDS.to_string(), "-f"])
        .arg(script)
        .arg("postgres")
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let processed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .unwrap_or_else(|| panic!("pgbench: {stdout}"));
    processed.split('/').next().unwrap().parse().unwrap()
}

/// Runs pgbench while checking, once its clients are all in session, that every connection
/// opened is closed or open now.
fn pgbench_while_scraping(bindir: &Path, port: u16, metrics: u16, script: &Path) -> u64 {
    let listener = format!("127.0.0.1:{port}");
    let l = [("listener", listener.as_str())];
    let in_session = [("listener", listener.as_str()), ("state", "session")];
    std::thread::scope(|scope| {
        let bench = scope.spawn(|| pgbench(bindir, port, script));
        let during = scrape_until(metrics, "pgbench's sessions", |s| {
            s.sum("pgbastion_client_connections", &in_session) >= CLIENTS as f64
        });
        let opened = during.sum("pgbastion_client_connections_opened_total", &l);
        let closed = during.sum("pgbastion_client_connections_closed_total", &l);
        let open = during.sum("pgbastion_client_connections", &l);
        assert_eq!(opened, closed + open, "during pgbench on {listener}");
        let running = during.sum("pgbastion_transaction_duration_seconds_count", &[]);
        let ran = bench.join().unwrap();
        let after = scrape(metrics, "/metrics");
        assert!(
            after.sum("pgbastion_transaction_duration_seconds_count", &[]) > running,
            "the transaction count grew while pgbench ran"
        );
        ran
    })
}

fn config(transparent: u16, pooled: u16, metrics: u16, backend: u16) -> String {
    format!(
        r#"
[[listener]]
address = "127.0.0.1:{transparent}"

[[listener]]
address = "127.0.0.1:{pooled}"
mode = "pooled"

[metrics]
address = "127.0.0.1:{metrics}"

[[user]]
name = "{USER}"
password = "{PASSWORD}"

[[route]]
auth = "scram"
backend = "postgres://{USER}:{PASSWORD}@127.0.0.1:{backend}/postgres?sslmode=disable"
pool = {{ mode = "transaction", size = {POOL_SIZE}, checkout_timeout = "30s" }}
"#
    )
}

#[test]
fn metrics_scraped_during_pgbench_add_up_and_the_health_endpoints_answer() {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
        .user(USER, PASSWORD, PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    let [transparent, pooled, metrics] = free_ports(3)[..] else {
        unreachable!()
    };
    let proxy = Bastion::start(
        &config(transparent, pooled, metrics, cluster.port()),
        &[],
        &[],
        &[transparent, pooled, metrics],
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("transaction.sql");
    std::fs::write(&script, SCRIPT).unwrap();

    assert_eq!(http(metrics, "GET", "/health"), (200, "ok\n".to_owned()));
    assert_eq!(http(metrics, "GET", "/ready"), (200, "ready\n".to_owned()));
    assert_eq!(http(metrics, "GET", "/nothing-here").0, 404);
    assert_eq!(http(metrics, "POST", "/metrics").0, 405);
    let vars = scrape(metrics, "/vars");
    assert!(vars.has("pgbastion_client_connections_opened_total", &[]));

    // A wrong password: one failed attempt, and no session.
    let refused = Command::new(cluster.bindir().join("psql"))
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            USER,
            "-p",
            &transparent.to_string(),
        ])
        .args(["-d", "postgres", "-c", "SELECT 1"])
        .env("PGPASSWORD", "not-the-password")
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "psql got in with a wrong password"
    );
    let failures = [("mode", "scram"), ("result", "failure")];
    let after_refusal = scrape_until(metrics, "the failed attempt", |s| {
        s.sum("pgbastion_auth_attempts_total", &failures) >= 1.0
    });
    assert_eq!(
        after_refusal.sum("pgbastion_sessions_started_total", &[]),
        0.0
    );

    let bindir = cluster.bindir().to_owned();
    let first = pgbench_while_scraping(&bindir, transparent, metrics, &script);
    let second = pgbench_while_scraping(&bindir, pooled, metrics, &script);
    assert!(
        first > 0 && second > 0,
        "pgbench ran {first} and {second} transactions"
    );

    // Every client has gone: the gauges are back to zero.
    let settled = scrape_until(metrics, "every connection closed", |s| {
        s.sum("pgbastion_client_connections", &[]) == 0.0
    });
    let opened = settled.sum("pgbastion_client_connections_opened_total", &[]);
    let closed = settled.sum("pgbastion_client_connections_closed_total", &[]);
    assert_eq!(opened, closed);
    let successes = [("mode", "scram"), ("result", "success")];
    let started = settled.sum("pgbastion_sessions_started_total", &[]);
    assert_eq!(
        settled.sum("pgbastion_auth_attempts_total", &successes),
        started
    );
    assert_eq!(settled.sum("pgbastion_auth_attempts_total", &failures), 1.0);
    // pgbench's clients, and its own first connection per run.
    assert!(
        started >= (2 * CLIENTS) as f64,
        "{started} sessions started"
    );
    assert_eq!(
        opened,
        started + 1.0,
        "every connection but psql's started a session"
    );
    assert_eq!(
        settled.sum("pgbastion_route_hits_total", &[("route", "1")]),
        opened
    );

    let route = [("route", "1")];
    let transactions = settled.sum("pgbastion_transaction_duration_seconds_count", &route);
    let queries = settled.sum("pgbastion_query_duration_seconds_count", &route);
    let ran = (first + second) as f64;
    assert!(
        transactions >= ran,
        "{transactions} transactions counted, pgbench ran {ran}"
    );
    assert!(
        queries >= ran * QUERIES_PER_TRANSACTION as f64,
        "{queries} queries counted, pgbench ran {ran} transactions"
    );
    assert!(settled.sum("pgbastion_transaction_duration_seconds_sum", &route) > 0.0);
    let buckets = settled.matching("pgbastion_query_duration_seconds_bucket", &route);
    let inf = buckets
        .filter(|s| s.labels.get("le").map(String::as_str) == Some("+Inf"))
        .map(|s| s.value)
        .sum::<f64>();
    assert_eq!(inf, queries, "the +Inf bucket holds every query");

    for listener in [transparent, pooled] {
        let l = format!("127.0.0.1:{listener}");
        let l = [("listener", l.as_str())];
        assert!(settled.sum("pgbastion_client_received_bytes_total", &l) > 0.0);
        assert!(settled.sum("pgbastion_client_sent_bytes_total", &l) > 0.0);
    }

    let pool = [("route", "1"), ("database", "postgres"), ("user", USER)];
    assert_eq!(settled.sum("pgbastion_pool_size", &pool), POOL_SIZE as f64);
    let open = settled.sum("pgbastion_pool_connections", &pool);
    assert!(
        (1.0..=POOL_SIZE as f64).contains(&open),
        "{open} pooled backends open"
    );
    assert_eq!(settled.sum("pgbastion_pool_idle_connections", &pool), open);
    assert_eq!(settled.sum("pgbastion_pool_waiting_clients", &pool), 0.0);
    let checkouts = settled.sum("pgbastion_pool_checkout_wait_seconds_count", &pool);
    assert!(
        checkouts >= second as f64,
        "{checkouts} checkouts for {second} transactions"
    );
    assert!(
        settled.sum("pgbastion_backend_connects_total", &[("result", "success")])
            >= CLIENTS as f64 + 1.0,
        "a backend per transparent client and at least one pooled"
    );
    assert_eq!(
        settled.sum("pgbastion_backend_connects_total", &[("result", "failure")]),
        0.0
    );

    proxy.finish(&[PASSWORD]);
}

/// Sends `request` raw and returns what the server answered before closing (at most 20 s).
fn raw_exchange(port: u16, request: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(local(port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    // A reset after the answer (the server closes with unread bytes) ends the read too.
    let _ = stream.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn the_endpoint_bounds_what_one_peer_can_send_and_keeps_serving() {
    let [listener, metrics, backend] = free_ports(3)[..] else {
        unreachable!()
    };
    let config = format!(
        r#"
[[listener]]
address = "127.0.0.1:{listener}"

[metrics]
address = "127.0.0.1:{metrics}"

[[route]]
auth = "trust"
backend = "postgres://app@127.0.0.1:{backend}/app"
"#
    );
    let proxy = Bastion::start(&config, &[], &[], &[listener, metrics]);

    // Nothing answers on the backend's port: alive, but not ready.
    assert_eq!(http(metrics, "GET", "/health").0, 200);
    let (status, body) = http(metrics, "GET", "/ready");
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: no backend is reachable\n")
    );
    assert_eq!(http(metrics, "DELETE", "/health").0, 405);
    assert_eq!(http(metrics, "GET", "/metrics/../vars").0, 404);

    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    // 431, unless the close (with the rest of the head unread) resets the connection
    // before the answer is read.
    let (answer, _) = raw_exchange(metrics, huge.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "a 64 KiB head: {answer:?}"
    );
    let (answer, _) = raw_exchange(metrics, b"NOT HTTP AT ALL\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "garbage: {answer:?}");
    // A peer that never finishes its request head is closed after the head timeout.
    let (answer, took) = raw_exchange(metrics, b"GET /metrics HTTP/1.1\r\n");
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(
        took < Duration::from_secs(15),
        "a silent peer was kept {took:?}"
    );

    let scraped = scrape(metrics, "/metrics");
    assert!(scraped.has("pgbastion_client_connections_opened_total", &[]));
    proxy.finish(&[]);
}
