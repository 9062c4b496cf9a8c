#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Reload on SIGHUP, against a real cluster, the real binary and real clients (pgbench, psql,
//! tokio-postgres): new connections get the new configuration, sessions in progress keep
//! theirs, a bad file changes nothing, and nobody is dropped.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgbastion_testkit::{Cluster, TestCa};
use tokio_postgres::NoTls;

#[path = "common/binary.rs"]
mod binary;

use binary::{free_ports, Bastion};

/// How long a condition polled on a loaded machine may take to hold.
const DEADLINE: Duration = Duration::from_secs(60);

/// A cluster that trusts local TCP clients.
fn cluster() -> Cluster {
    Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap()
}

/// A `trust` route for `database`, to the cluster's `postgres` database as its superuser.
fn route(cluster: &Cluster, database: &str, extra: &str) -> String {
    format!(
        "[[route]]\nmatch = {{ database = \"{database}\" }}\nauth = \"trust\"\n\
         backend = \"postgres://{}@127.0.0.1:{}/postgres?sslmode=disable\"\n{extra}\n",
        cluster.superuser(),
        cluster.port()
    )
}

fn listener(port: u16, extra: &str) -> String {
    format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n{extra}\n")
}

/// Rewrites the configuration, sends SIGHUP and waits for the reload's log line (the
/// `n`th `needle` line since start).
fn reload(bastion: &Bastion, config: &str, needle: &str, n: usize) {
    std::fs::write(bastion.config_path(), config).unwrap();
    bastion.signal(Signal::SIGHUP);
    wait_for(
        || bastion.log().iter().filter(|l| l.contains(needle)).count() >= n,
        || format!("no reload line {needle:?}:\n{}", bastion.log().join("\n")),
    );
}

fn wait_for(mut condition: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "{}", what());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `psql -c sql` through pgbastion on `port` (extra connection words in `conninfo`).
fn psql(port: u16, conninfo: &str, sql: &str) -> Output {
    Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 hostaddr=127.0.0.1 port={port} connect_timeout=20 {conninfo}"
        ))
        .args(["-X", "-A", "-t", "-c", sql])
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

#[test]
fn pgbench_sees_no_failed_transaction_across_a_new_route_a_certificate_rotation_and_a_refused_file()
{
    let cluster = cluster();
    cluster.execute_sql("CREATE DATABASE reports").unwrap();
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1"])
        .args(["-p", &cluster.port().to_string(), "-U", cluster.superuser()])
        .arg("postgres")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init));
    let old_ca = TestCa::new("old CA").unwrap();
    let new_ca = TestCa::new("new CA").unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = old_ca
        .server_cert(&["localhost"])
        .unwrap()
        .write_files(certs.path(), "server")
        .unwrap();
    let old_ca_file = old_ca.write_cert(certs.path(), "old-ca").unwrap();
    let new_ca_file = new_ca.write_cert(certs.path(), "new-ca").unwrap();
    let ports = free_ports(2);
    let (plain, tls) = (ports[0], ports[1]);
    let listeners = format!(
        "{}{}",
        listener(plain, ""),
        listener(
            tls,
            &format!(
                "tls = {{ cert = \"{}\", key = \"{}\" }}",
                cert.display(),
                key.display()
            )
        )
    );
    let first = format!("{listeners}{}", route(&cluster, "postgres", ""));
    let bastion = Bastion::start(&first, &[], &[], &[plain, tls]);

    let pgbench = Command::new("pgbench")
        .args(["-n", "-C", "-c", "4", "-j", "2", "-T", "20", "-M", "simple"])
        .args(["-h", "127.0.0.1", "-p", &plain.to_string()])
        .args(["-U", cluster.superuser(), "postgres"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let user = format!("user={}", cluster.superuser());

    // 1. A new route: refused before, served after.
    let before = psql(plain, &format!("{user} dbname=reports"), "SELECT 1");
    assert!(!before.status.success(), "{}", text(&before));
    assert!(text(&before).contains("reports"), "{}", text(&before));
    let second = format!("{first}{}", route(&cluster, "reports", ""));
    reload(&bastion, &second, "configuration reloaded", 1);
    let after = psql(
        plain,
        &format!("{user} dbname=reports"),
        "SELECT current_user",
    );
    assert!(after.status.success(), "{}", text(&after));
    assert_eq!(text(&after), cluster.superuser());

    // 2. A certificate rotation on the TLS listener: new handshakes see the new one.
    let verify = |ca: &std::path::Path| {
        psql(
            tls,
            &format!(
                "{user} dbname=postgres host=localhost sslmode=verify-full sslrootcert={}",
                ca.display()
            ),
            "SELECT 1",
        )
    };
    let served = verify(&old_ca_file);
    assert!(served.status.success(), "{}", text(&served));
    assert!(!verify(&new_ca_file).status.success());
    new_ca
        .server_cert(&["localhost"])
        .unwrap()
        .write_files(certs.path(), "server")
        .unwrap();
    reload(&bastion, &second, "configuration reloaded", 2);
    let rotated = verify(&new_ca_file);
    assert!(rotated.status.success(), "{}", text(&rotated));
    assert!(!verify(&old_ca_file).status.success());

    // 3. A file with a syntax error on its last line: refused with file and line, and the
    // configuration in force (with the reports route) stays.
    let broken = format!("{second}this line is not TOML\n");
    let bad_line = broken.lines().count();
    reload(&bastion, &broken, "configuration refused", 1);
    let refusal = bastion
        .log()
        .into_iter()
        .find(|l| l.contains("configuration refused"))
        .unwrap();
    let place = format!("pgbastion.toml:{bad_line}");
    assert!(refusal.contains(&place), "{place} not in {refusal}");
    assert!(refusal.contains("ERROR"), "{refusal}");
    let still = psql(plain, &format!("{user} dbname=reports"), "SELECT 1");
    assert!(still.status.success(), "{}", text(&still));

    let output = pgbench.wait_with_output().unwrap();
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains("number of failed transactions: 0 "),
        "{report}"
    );
    let processed: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(processed > 0, "{report}");
    assert!(bastion.log().iter().any(|l| l.contains("session ended")));
    bastion.finish(&[]);
}

/// A tokio-postgres client through pgbastion on `port`, its connection driven by a task.
async fn connect(port: u16, user: &str, database: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user={user} dbname={database} sslmode=disable"),
            NoTls,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    tokio::spawn(connection);
    client
}

async fn one(client: &tokio_postgres::Client) -> i32 {
    tokio::time::timeout(Duration::from_secs(30), client.query_one("SELECT 1", &[]))
        .await
        .unwrap()
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_cancel_keys_from_before_a_reload_outlive_their_route_and_listener() {
    let cluster = cluster();
    let user = cluster.superuser();
    let ports = free_ports(3);
    let (kept, removed, added) = (ports[0], ports[1], ports[2]);
    let first = format!(
        "{}{}{}{}",
        listener(kept, ""),
        listener(removed, ""),
        route(&cluster, "postgres", ""),
        route(&cluster, "olddb", "")
    );
    let bastion = Bastion::start(&first, &[], &[], &[kept, removed]);
    let on_old_route = connect(kept, user, "olddb").await;
    let on_old_listener = connect(removed, user, "postgres").await;
    let second = format!(
        "{}{}{}",
        listener(kept, ""),
        listener(added, ""),
        route(&cluster, "postgres", "")
    );
    reload(&bastion, &second, "configuration reloaded", 1);

    // The route is gone for new connections, not for the session that has it.
    let refused = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={kept} user={user} dbname=olddb sslmode=disable"),
        NoTls,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{refused}"
    );
    assert_eq!(one(&on_old_route).await, 1);

    // Its cancel key, minted before the reload, still cancels.
    let cancel = on_old_route.cancel_token();
    let sleeping = tokio::spawn(async move {
        let result = on_old_route.simple_query("SELECT pg_sleep(120)").await;
        (on_old_route, result)
    });
    wait_for(
        || {
            cluster
                .query("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'")
                .unwrap()
                .trim()
                == "1"
        },
        || "the query did not start".to_owned(),
    );
    cancel.cancel_query(NoTls).await.unwrap();
    let (on_old_route, result) = tokio::time::timeout(Duration::from_secs(30), sleeping)
        .await
        .unwrap()
        .unwrap();
    let error = result.err().unwrap();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{error}"
    );
    assert_eq!(one(&on_old_route).await, 1);

    // The added listener serves; the removed one refuses new connections while its session
    // goes on.
    assert_eq!(one(&connect(added, user, "postgres").await).await, 1);
    wait_for(
        || std::net::TcpStream::connect(("127.0.0.1", removed)).is_err(),
        || format!("port {removed} still accepts"),
    );
    assert_eq!(one(&on_old_listener).await, 1);
    drop((on_old_route, on_old_listener));
    bastion.finish(&[]);
}

#[test]
fn an_unchanged_pool_keeps_its_backend_connection_across_a_reload_and_a_changed_one_is_replaced() {
    let cluster = cluster();
    let port = free_ports(1)[0];
    let pooled = listener(port, "mode = \"pooled\"");
    let pool = |size: usize| format!("pool = {{ mode = \"session\", size = {size} }}");
    let first = format!("{pooled}{}", route(&cluster, "postgres", &pool(1)));
    let bastion = Bastion::start(&first, &[], &[], &[port]);
    let user = format!("user={} dbname=postgres", cluster.superuser());
    let backend_pid = || {
        let output = psql(port, &user, "SELECT pg_backend_pid()");
        assert!(output.status.success(), "{}", text(&output));
        text(&output)
    };
    let before = backend_pid();
    assert_eq!(backend_pid(), before, "a pool of one reuses its connection");

    // Another route added, this one unchanged (and moved to second place): same backend.
    let second = format!(
        "{pooled}{}{}",
        route(&cluster, "other", ""),
        route(&cluster, "postgres", &pool(1))
    );
    reload(&bastion, &second, "configuration reloaded", 1);
    assert_eq!(backend_pid(), before, "the unchanged pool was not kept");

    // Its pool settings changed: a new pool for new clients, the old one's idle connection
    // closed.
    let third = format!("{pooled}{}", route(&cluster, "postgres", &pool(2)));
    reload(&bastion, &third, "configuration reloaded", 2);
    assert_ne!(backend_pid(), before, "the changed pool was kept");
    wait_for(
        || {
            cluster
                .query(&format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = {before}"
                ))
                .unwrap()
                .trim()
                == "0"
        },
        || format!("backend {before} of the replaced pool is still open"),
    );
    bastion.finish(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_jwt_settings_rebuild_the_token_keys_and_no_token_reaches_the_log() {
    let cluster = cluster();
    let issuer = pgbastion_testkit::TestIssuer::start().await;
    let port = free_ports(1)[0];
    let config = |key_file: &str| {
        format!(
            "{}[jwt]\nissuer = \"{}\"\naudience = \"pgbastion\"\nkeys = [\"{key_file}\"]\n\n{}",
            listener(port, ""),
            issuer.issuer(),
            route(&cluster, "postgres", "insecure = true")
                .replace("auth = \"trust\"", "auth = \"jwt\"")
        )
    };
    let rsa = issuer.public_key_pem("RS256");
    let ec = issuer.public_key_pem("ES256");
    let bastion = Bastion::start(
        &config("rsa.pem"),
        &[("rsa.pem", &rsa), ("ec.pem", &ec)],
        &[],
        &[port],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |alg: &str| {
        issuer.sign(
            alg,
            serde_json::json!({
                "iss": issuer.issuer(), "sub": "juser", "aud": "pgbastion",
                "iat": now, "exp": now + 600,
            }),
        )
    };
    let (rs_token, es_token) = (token("RS256"), token("ES256"));
    let login = |token: &str| {
        Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={port} user=juser dbname=postgres connect_timeout=20"
            ))
            .args(["-X", "-A", "-t", "-c", "SELECT 1"])
            .env("PGPASSWORD", token)
            .output()
            .unwrap()
    };
    assert!(
        login(&rs_token).status.success(),
        "{}",
        text(&login(&rs_token))
    );
    assert!(!login(&es_token).status.success());
    reload(&bastion, &config("ec.pem"), "token keys rebuilt", 1);
    let accepted = login(&es_token);
    assert!(accepted.status.success(), "{}", text(&accepted));
    assert!(!login(&rs_token).status.success());
    // Unchanged settings: the same keys, refreshed.
    reload(
        &bastion,
        &config("ec.pem"),
        "token keys refreshed, pools released",
        1,
    );
    assert!(login(&es_token).status.success());
    bastion.finish(&[&rs_token, &es_token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_still_count_against_unchanged_limits_and_new_limits_apply_at_once() {
    let cluster = cluster();
    let user = cluster.superuser();
    let port = free_ports(1)[0];
    let config = |max: usize, database: &str| {
        format!(
            "{}{}",
            listener(port, &format!("max_connections = {max}")),
            route(&cluster, database, "")
        )
    };
    let bastion = Bastion::start(&config(2, "postgres"), &[], &[], &[port]);
    let open = [
        connect(port, user, "postgres").await,
        connect(port, user, "postgres").await,
    ];
    let conninfo =
        format!("host=127.0.0.1 port={port} user={user} dbname=postgres sslmode=disable");
    let third = || tokio_postgres::connect(&conninfo, NoTls);
    let too_many = Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS);
    assert_eq!(third().await.err().unwrap().code(), too_many);

    // Same limits (another route): the two open sessions still count.
    let routes = format!("{}{}", config(2, "postgres"), route(&cluster, "other", ""));
    reload(&bastion, &routes, "configuration reloaded", 1);
    assert_eq!(third().await.err().unwrap().code(), too_many);

    // A higher limit: the third is served at once.
    reload(
        &bastion,
        &config(3, "postgres"),
        "configuration reloaded",
        2,
    );
    let (client, connection) = third().await.unwrap();
    tokio::spawn(connection);
    assert_eq!(one(&client).await, 1);
    for session in &open {
        assert_eq!(one(session).await, 1);
    }
    drop((client, open));
    bastion.finish(&[]);
}
