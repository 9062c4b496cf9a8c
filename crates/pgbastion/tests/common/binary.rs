//! Shared helpers of the tests that run the real `pgbastion` binary (the hostile-input suite,
//! `tests/hostile_*.rs`, the drivers and the log checks): the binary with its stderr captured, a reader that turns whatever the server does into one
//! comparable [`Answer`], and the bytes real drivers never send.

#![allow(dead_code)] // each hostile_*.rs file uses a different part
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbastion_testkit::{Cluster, RawClient, RawClientError};
use pgbastion_wire::{BackendMessage, ErrorResponse};

/// How long one hostile case may take before the test fails with its name.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a server may stay silent before the answer counts as [`Answer::Silent`].
pub const SILENCE: Duration = Duration::from_secs(3);

/// Runs `future` under an outer timeout so a hang fails with `what` instead of stalling.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(90), future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: timed out"),
    }
}

/// `n` free ports on 127.0.0.1 (bound, then released for pgbastion to take).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A cluster (trust from 127.0.0.1) with a table `t (label text PRIMARY KEY)`, and a
/// configuration for pgbastion in front of it, with the `top_level` keys: a transparent
/// listener, a pooled one (transaction mode) and the metrics endpoint, on the three ports
/// returned.
pub fn cluster_and_two_listeners(top_level: &str) -> (Cluster, String, Vec<u16>) {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    cluster
        .execute_sql("CREATE TABLE t (label text PRIMARY KEY)")
        .unwrap();
    let ports = free_ports(3);
    let config = format!(
        r#"
{top_level}

[metrics]
address = "127.0.0.1:{metrics}"

[[listener]]
address = "127.0.0.1:{transparent}"

[[listener]]
address = "127.0.0.1:{pooled}"
mode = "pooled"

[[route]]
auth = "trust"
backend = "postgres://postgres@127.0.0.1:{backend}/postgres?sslmode=disable"
pool = {{ mode = "transaction", size = 4 }}
"#,
        transparent = ports[0],
        pooled = ports[1],
        metrics = ports[2],
        backend = cluster.port(),
    );
    (cluster, config, ports)
}

/// The address of `port` on 127.0.0.1.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A running `pgbastion --config` whose stderr lines are kept for the secrets scan.
pub struct Bastion {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Bastion {
    /// Writes `config` to a temporary directory (with `files`, name and contents, beside it),
    /// starts the binary with `env` and waits until every port in `ports` is listening.
    pub fn start(
        config: &str,
        files: &[(&str, &str)],
        env: &[(&str, &str)],
        ports: &[u16],
    ) -> Self {
        Self::start_wrapped(&[], config, files, env, ports)
    }

    /// As [`start`](Self::start), run under `wrapper` (e.g. `prlimit --nofile=…`).
    pub fn start_wrapped(
        wrapper: &[&str],
        config: &str,
        files: &[(&str, &str)],
        env: &[(&str, &str)],
        ports: &[u16],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbastion.toml");
        std::fs::write(&path, config).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let binary = env!("CARGO_BIN_EXE_pgbastion");
        let command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        Self::launch(command, dir, env, ports)
    }

    /// As [`start`](Self::start), with the binary at `binary` (a copy, to replace it).
    pub fn start_binary(binary: &std::path::Path, config: &str, ports: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pgbastion.toml"), config).unwrap();
        Self::launch(Command::new(binary), dir, &[], ports)
    }

    fn launch(
        mut command: Command,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        ports: &[u16],
    ) -> Self {
        let path = dir.path().join("pgbastion.toml");
        command
            .arg("--config")
            .arg(&path)
            .args(["--workers", "1"])
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let bastion = Self { child, log, dir };
        bastion.wait_listening(ports);
        bastion
    }

    fn wait_listening(&self, ports: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            let ready = ports.iter().all(|port| {
                let needle = format!(":{port}");
                log.iter()
                    .any(|l| l.contains("listening") && l.contains(&needle))
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pgbastion did not listen on {ports:?}:\n{}",
                log.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every stderr line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The configuration file (rewrite it and send SIGHUP to test a reload).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("pgbastion.toml")
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits at most `limit` for the process to exit; returns its status (panics, with the
    /// log, when it is still running).
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pgbastion still running after {limit:?}:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the process (SIGTERM) and asserts that no line it logged holds any of `secrets`.
    pub fn finish(mut self, secrets: &[&str]) {
        assert!(self.alive(), "pgbastion died:\n{}", self.log().join("\n"));
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let _ = self.child.wait();
        // The reader thread ends at EOF; give it a moment to push the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let all = self.log().join("\n");
        assert!(!all.is_empty(), "pgbastion logged nothing");
        for secret in secrets {
            assert!(
                !all.contains(secret),
                "the secret {secret:?} reached the log:\n{all}"
            );
        }
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a server did with a hostile input, in a form that compares across servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An ErrorResponse: severity, SQLSTATE and message; for FATAL, the close that followed
    /// was checked.
    Error {
        /// `FATAL`, `ERROR`, …
        severity: String,
        /// The SQLSTATE.
        code: String,
        /// The primary message.
        message: String,
    },
    /// The server closed the connection without an answer.
    Closed,
    /// Nothing within [`SILENCE`].
    Silent,
    /// Something else: the message, debug-printed.
    Other(String),
}

impl Answer {
    /// The answer an ErrorResponse gives.
    pub fn from_error(e: &ErrorResponse) -> Self {
        Self::Error {
            severity: e.severity().map(|s| s.as_str()).unwrap_or("").to_owned(),
            code: e
                .sqlstate()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            message: e.message().to_owned(),
        }
    }

    /// A FATAL with `code`, whatever the message.
    pub fn is_fatal(&self, code: &str) -> bool {
        matches!(self, Self::Error { severity, code: c, .. } if severity == "FATAL" && c == code)
    }

    /// The SQLSTATE, if this is an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Error { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The message, or "" when this is not an error.
    pub fn message(&self) -> &str {
        match self {
            Self::Error { message, .. } => message,
            _ => "",
        }
    }
}

/// Reads the next meaningful message: skips NegotiateProtocolVersion, notices and
/// ParameterStatus; after a FATAL, checks that the server then closes.
pub async fn answer(client: &mut RawClient) -> Answer {
    loop {
        let read = tokio::time::timeout(SILENCE, client.read()).await;
        let message = match read {
            Err(_) | Ok(Err(RawClientError::Timeout)) => return Answer::Silent,
            Ok(Err(RawClientError::Closed)) | Ok(Err(RawClientError::Io(_))) => {
                return Answer::Closed
            }
            Ok(Err(e)) => return Answer::Other(e.to_string()),
            Ok(Ok(message)) => message,
        };
        match message {
            BackendMessage::NegotiateProtocolVersion { .. }
            | BackendMessage::NoticeResponse(_)
            | BackendMessage::ParameterStatus { .. } => {}
            BackendMessage::ErrorResponse(e) => {
                let answer = Answer::from_error(&e);
                if answer.code().is_some()
                    && matches!(&answer, Answer::Error { severity, .. } if severity == "FATAL")
                {
                    let after = tokio::time::timeout(SILENCE, client.read()).await;
                    assert!(
                        matches!(
                            after,
                            Ok(Err(RawClientError::Closed | RawClientError::Io(_)))
                        ),
                        "FATAL {answer:?} was not followed by a close: {after:?}"
                    );
                }
                return answer;
            }
            other => return Answer::Other(format!("{other:?}")),
        }
    }
}

/// Connects to `addr`, writes `bytes` and returns what the server did.
pub async fn raw_answer(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut client = RawClient::connect(addr).await.unwrap();
    // The server may close while we still write (that is an answer too).
    let _ = client.send_raw(bytes).await;
    answer(&mut client).await
}

/// Asserts that `answer` is a FATAL with `code` whose message contains `needle`.
pub fn assert_fatal(case: &str, answer: &Answer, code: &str, needle: &str) {
    assert!(
        answer.is_fatal(code) && answer.message().contains(needle),
        "{case}: expected FATAL {code} containing {needle:?}, got {answer:?}"
    );
}

/// A well-behaved session kept open across the cases of one test: every check runs a real
/// query on it and logs in afresh, so a case that broke the server for others fails.
pub struct Witness {
    addr: SocketAddr,
    user: String,
    password: Option<String>,
    session: RawClient,
}

impl Witness {
    /// Logs in at `addr` as `user`.
    pub async fn new(addr: SocketAddr, user: &str, password: Option<&str>) -> Self {
        let session = login(addr, user, password).await;
        Self {
            addr,
            user: user.to_owned(),
            password: password.map(str::to_owned),
            session,
        }
    }

    /// The open session.
    pub fn session(&mut self) -> &mut RawClient {
        &mut self.session
    }

    /// Asserts that the open session and a new one both answer a query.
    pub async fn still_serving(&mut self, case: &str) {
        assert_query_works(case, &mut self.session).await;
        let mut fresh = login(self.addr, &self.user, self.password.as_deref()).await;
        assert_query_works(case, &mut fresh).await;
    }
}

/// Logs in, panicking with the server's answer when that fails.
pub async fn login(addr: SocketAddr, user: &str, password: Option<&str>) -> RawClient {
    match RawClient::startup(addr, user, "postgres", password).await {
        Ok(client) => client,
        Err(e) => panic!("login as {user} at {addr} failed: {e}"),
    }
}

/// Asserts that `SELECT 1` returns one row on `client`.
pub async fn assert_query_works(case: &str, client: &mut RawClient) {
    let messages = client
        .simple_query("SELECT 1")
        .await
        .unwrap_or_else(|e| panic!("after {case}: the well-behaved client failed: {e}"));
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, BackendMessage::DataRow(_))),
        "after {case}: no row: {messages:?}"
    );
}

/// A frontend message: type byte, length (counting itself) and body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A startup-phase packet: length (counting itself) then body.
pub fn packet(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A protocol 3.0 StartupMessage with `params`, built by hand.
pub fn startup_bytes(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (key, value) in params {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    packet(&body)
}

/// A SASLInitialResponse body: mechanism, then data with its length.
pub fn sasl_initial(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(data.len() as u32).to_be_bytes());
    body.extend_from_slice(data);
    message(b'p', &body)
}

/// Base64 (standard or URL-safe without padding), enough for hand-made tokens.
pub fn base64(data: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url_safe {
            out.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}
