#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! The zero-config binary: `pgbastion` with no configuration serves the embedded database.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// A running `pgbastion` that is killed when dropped.
struct Running {
    child: Child,
    banner: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary with `args` and reads its banner (up to the "--help" line).
fn start(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgbastion"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    while !banner.contains("--help") {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("pgbastion exited before printing its banner:\n{banner}");
        }
        banner.push_str(&line);
    }
    Running { child, banner }
}

fn psql(port: u16, sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn serves_psql_and_says_how_to_connect() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let running = start(&["--listen", &listen]);
    assert!(
        running
            .banner
            .contains(&format!("psql -h 127.0.0.1 -p {port}")),
        "{}",
        running.banner
    );
    assert!(running.banner.contains("--data FILE"), "{}", running.banner);
    assert_eq!(psql(port, "SELECT 1"), "1");
    psql(port, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)");
    psql(port, "INSERT INTO t (name) VALUES ('one'), ('two')");
    assert_eq!(psql(port, "SELECT count(*) FROM t"), "2");
    assert!(psql(port, "SELECT version()").contains("SQLite"));
}

#[test]
fn a_dual_stack_listener_serves_local_ipv4_clients() {
    // Local IPv4 clients of [::] arrive as ::ffff:127.0.0.1, which is loopback too.
    let port = free_port();
    let listen = format!("[::]:{port}");
    let running = start(&["--listen", &listen]);
    assert!(
        running.banner.contains(&format!("psql -h ::1 -p {port}")),
        "{}",
        running.banner
    );
    assert_eq!(psql(port, "SELECT 1"), "1");
}

#[test]
fn data_file_keeps_tables_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keep.db");
    let data = file.to_str().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    {
        let running = start(&["--listen", &listen, "--data", data]);
        assert!(running.banner.contains(data), "{}", running.banner);
        psql(
            port,
            "CREATE TABLE kept (v TEXT); INSERT INTO kept VALUES ('still here')",
        );
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _running = start(&["--listen", &listen, "--data", data]);
    assert_eq!(psql(port, "SELECT v FROM kept"), "still here");
}

#[test]
fn a_port_in_use_is_a_clear_error_naming_port_and_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = Command::new(env!("CARGO_BIN_EXE_pgbastion"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("port {port}")), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn help_explains_the_default_and_the_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_pgbastion"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in ["127.0.0.1:6432", "--listen", "--data", "SQLite"] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}
