#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! The proxy binary: `--config` end to end with psql, its log lines, signals.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pgbastion_testkit::{Cluster, PasswordEncryption};

#[path = "common/binary.rs"]
mod binary;

#[test]
fn logs_one_json_line_per_session_without_secrets_and_stops_on_sigterm() {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
        .user("app", "backend-secret-pw", PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("pgbastion.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[listener]]
address = "127.0.0.1:{port}"

[[user]]
name = "alice"
password = "client-secret-pw"

[[route]]
match = {{ user = "alice" }}
auth = "scram"
backend = "postgres://app:${{PGB_TEST_BACKEND_PW}}@127.0.0.1:{}/postgres?sslmode=disable"

[log]
format = "json"
level = "debug"
"#,
            cluster.port()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgbastion"))
        .arg("--config")
        .arg(&config)
        .env("PGB_TEST_BACKEND_PW", "backend-secret-pw")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("listening")) {
        log.push(lines.recv_timeout(Duration::from_secs(30)).unwrap());
    }
    let output = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "alice",
            "-d",
            "postgres",
        ])
        .args(["-c", "SELECT current_user"])
        .env("PGPASSWORD", "client-secret-pw")
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "app");
    while !log.iter().any(|l| l.contains("session ended")) {
        log.push(lines.recv_timeout(Duration::from_secs(10)).unwrap());
    }
    // SIGHUP reloads the configuration without stopping; SIGTERM stops.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP stopped pgbastion"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        log.push(line);
    }
    let all = log.join("\n");
    let ended: serde_json::Value =
        serde_json::from_str(log.iter().find(|l| l.contains("session ended")).unwrap()).unwrap();
    let fields = &ended["fields"];
    assert_eq!(fields["user"], "alice", "{ended}");
    assert_eq!(fields["database"], "postgres");
    assert_eq!(fields["route"], 1);
    assert_eq!(fields["auth"], "scram");
    assert!(fields["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(
        fields["backend"].as_str(),
        Some(format!("127.0.0.1:{}", cluster.port()).as_str()),
        "{ended}"
    );
    assert_eq!(fields["tls"], false, "{ended}");
    assert_eq!(fields["ended_by"], "terminate", "{ended}");
    assert!(
        fields["duration_ms"].is_u64() && fields["bytes_to_client"].as_u64().unwrap() > 0,
        "{ended}"
    );
    for secret in ["client-secret-pw", "backend-secret-pw"] {
        assert!(!all.contains(secret), "a secret reached the log:\n{all}");
    }
}

#[test]
fn a_config_error_names_the_line_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\nmatch = { user = \"/(/\" }\n",
    )
    .unwrap();
    for flag in ["--check-config", "--config"] {
        let output = Command::new(env!("CARGO_BIN_EXE_pgbastion"))
            .arg(flag)
            .arg(&config)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("bad.toml:4") && stderr.contains("regex"),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn client_text_cannot_forge_log_lines_or_colour_a_piped_log() {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    let port = binary::free_ports(1)[0];
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [[route]]\nmatch = {{ user = \"app\" }}\nauth = \"trust\"\n\
         backend = \"postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable\"\n\n\
         [log]\nformat = \"text\"\nlevel = \"debug\"\n",
        cluster.port()
    );
    let proxy = binary::Bastion::start(&config, &[], &[], &[port]);
    let forged = "evil\n2026-12-02T00:00:00Z  INFO forged: session started\u{1b}[31m";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let refusal = runtime.block_on(async {
        // No route for this user: refused, and the refusal is logged with the name in it.
        pgbastion_testkit::RawClient::startup(binary::local(port), forged, forged, None)
            .await
            .err()
            .unwrap()
    });
    assert!(refusal.to_string().contains("no route"), "{refusal}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !proxy.log().iter().any(|l| l.contains("connection refused")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", proxy.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = proxy.log();
    let all = log.join("\n");
    assert!(
        !all.contains('\u{1b}'),
        "escape codes in a piped log:\n{all:?}"
    );
    assert!(
        log.iter()
            .all(|l| !l.contains("INFO forged") || l.contains("evil\\n")),
        "a client forged a log line:\n{all}"
    );
    assert!(
        all.contains("evil\\n2026"),
        "the name is logged, escaped:\n{all}"
    );
    proxy.finish(&[]);
}

#[test]
fn a_key_load_error_says_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("garbage.pem"), "not a key").unwrap();
    let config = dir.path().join("jwt.toml");
    std::fs::write(
        &config,
        "[jwt]\nissuer = \"https://idp\"\nkeys = [\"garbage.pem\"]\n\n\
         [[route]]\nauth = \"jwt\"\ninsecure = true\nbackend = \"postgres://h/db\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pgbastion"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let key_file = dir.path().join("garbage.pem");
    // The last line is the error (an info line about the open-files limit may come first).
    assert_eq!(
        stderr.trim_end().lines().last().unwrap_or_default(),
        format!(
            "pgbastion: cannot load the [jwt] keys: could not load keys: {}: no PEM block found",
            key_file.display()
        )
    );
}
