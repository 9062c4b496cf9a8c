#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Drivers that do not use libpq (asyncpg, psycopg, node-postgres), each running the same
//! script (tests/drivers/) straight at PostgreSQL and through the pgbastion binary: connect
//! (plain and TLS), an error then a good query, cancel then a new statement at once,
//! disconnect, prepared statements, NOTIFY from one's own session, COPY. Any difference from
//! the direct run fails the test. `tests/drivers/install.sh` installs the drivers.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pgbastion_testkit::{Cluster, PasswordEncryption, TestCa};

const USER: &str = "app";
const PASSWORD: &str = "driver-check-pw";

/// Where tests/drivers/install.sh puts the Python packages.
fn python_path() -> PathBuf {
    let deps = common::root().join("tests/drivers/.deps/python");
    assert!(
        deps.join("asyncpg").is_dir() && deps.join("psycopg").is_dir(),
        "the Python drivers are missing: run tests/drivers/install.sh"
    );
    deps
}

/// Runs one driver's script against `port`; returns its JSON report.
fn run_script(program: &str, script: &str, port: u16, ca: &Path) -> serde_json::Value {
    let drivers = common::root().join("tests/drivers");
    if program == "node" {
        assert!(
            drivers.join("node_modules/pg").is_dir(),
            "node-postgres is missing: run tests/drivers/install.sh"
        );
    }
    let output = Command::new(program)
        .arg(drivers.join(script))
        .env("PYTHONPATH", python_path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PGB_HOST", "127.0.0.1")
        .env("PGB_PORT", port.to_string())
        .env("PGB_USER", USER)
        .env("PGB_PASSWORD", PASSWORD)
        .env("PGB_DB", "postgres")
        .env("PGB_CA", ca)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{script} printed {stdout}: {e}"))
}

/// The pgbastion binary in front of `cluster`, with TLS from `dir/server.*`; stops on drop.
struct Binary {
    child: Child,
    port: u16,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_binary(dir: &Path, cluster: &Cluster) -> Binary {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("pgbastion.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[listener]]
address = "127.0.0.1:{port}"
tls = {{ cert = "server.crt", key = "server.key" }}

[[user]]
name = "{USER}"
password = "{PASSWORD}"

[[route]]
auth = "scram"
backend = "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable"
"#,
            cluster.port()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgbastion"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    loop {
        let line = lines.recv_timeout(Duration::from_secs(30)).unwrap();
        if line.contains("listening") {
            break;
        }
    }
    Binary { child, port }
}

#[test]
fn asyncpg_psycopg_and_node_postgres_see_pgbastion_as_they_see_postgresql() {
    let ca = TestCa::new("driver checks CA").unwrap();
    let cluster = Cluster::builder()
        .tls(&ca)
        .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
        .user(USER, PASSWORD, PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.server_cert(&["localhost"])
        .unwrap()
        .write_files(dir.path(), "server")
        .unwrap();
    let ca_file = ca.write_cert(dir.path(), "ca").unwrap();
    let proxy = start_binary(dir.path(), &cluster);
    let mut differences = Vec::new();
    for (program, script) in [
        ("python3", "asyncpg_check.py"),
        ("python3", "psycopg_check.py"),
        ("node", "pg_check.js"),
    ] {
        let direct = run_script(program, script, cluster.port(), &ca_file);
        let through = run_script(program, script, proxy.port, &ca_file);
        let checks = direct.as_object().unwrap();
        assert_eq!(checks.len(), 8, "{script}: {direct:#}");
        for (check, value) in checks {
            // The scripts report an exception as a string starting with "raised": directly
            // at PostgreSQL, none may happen, or the comparison would prove nothing.
            assert!(
                !value.as_str().is_some_and(|s| s.starts_with("raised")),
                "{script} {check} failed straight at PostgreSQL: {value}"
            );
            if through.get(check) != Some(value) {
                differences.push(format!(
                    "{script} {check}: direct {value}, through pgbastion {}",
                    through.get(check).unwrap_or(&serde_json::Value::Null)
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
