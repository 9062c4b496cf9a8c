//! Operating the real binary: the log file and its reopening on SIGUSR1, JSON lines, a log
//! file that cannot be written, the pid file, systemd notifications over a real datagram
//! socket, the systemd unit, and `--help`.
//!
//! No PostgreSQL is needed: the routes point at a closed port, so a client's login ends in
//! a `backend login failed` line, which is all these tests need pgbastion to log.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long anything may take on a loaded machine before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// A port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration with one listener on `port` and two trust routes (databases `one` and
/// `two`) to a closed port, plus `extra` (top-level keys and sections).
fn config(port: u16, extra: &str) -> String {
    let backend = closed_port();
    format!(
        "{extra}\n\
         [[listener]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [[route]]\nmatch = {{ database = \"one\" }}\nauth = \"trust\"\n\
         backend = \"postgres://127.0.0.1:{backend}/one\"\n\n\
         [[route]]\nmatch = {{ database = \"two\" }}\nauth = \"trust\"\n\
         backend = \"postgres://127.0.0.1:{backend}/two\"\n"
    )
}

/// Polls `condition` until it holds, failing with `what` (and `context()`) at the deadline.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what}: timed out\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `pgbastion --config` process with its configuration in a temporary directory.
struct Process {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Process {
    /// Starts pgbastion with the configuration `config(port)` written into a fresh directory
    /// (given to `config` so that it can name files there), and `env`.
    fn spawn(config: impl FnOnce(&Path, u16) -> String, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = closed_port();
        let path = dir.path().join("pgbastion.toml");
        std::fs::write(&path, config(dir.path(), port)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pgbastion"))
            .arg("--config")
            .arg(&path)
            .args(["--workers", "1"])
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child, dir, port }
    }

    /// As [`spawn`](Self::spawn), then waits until the port accepts connections.
    fn start(config: impl FnOnce(&Path, u16) -> String, env: &[(&str, &str)]) -> Self {
        let mut process = Self::spawn(config, env);
        let port = process.port;
        wait_until(
            "pgbastion listening",
            || {
                assert!(
                    process.child.try_wait().unwrap().is_none(),
                    "pgbastion exited"
                );
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            },
            String::new,
        );
        process
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to exit; returns its status and stderr.
    fn wait(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "pgbastion did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    }

    /// Logs in to `database` (a trust route to a closed port) and asserts that pgbastion
    /// answered with FATAL 08001: it is serving.
    fn failed_login(&self, database: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for value in ["user", "alice", "database", database] {
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = (body.len() as u32 + 4).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        stream.write_all(&packet).unwrap();
        let mut answer = Vec::new();
        // pgbastion closes after the FATAL.
        stream.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer).into_owned();
        assert!(text.contains("FATAL\0C08001\0"), "{text:?}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every line of `text` is a JSON object; returns them.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

/// Lines of a JSON log whose message is `message`.
fn with_message<'a>(
    lines: &'a [serde_json::Value],
    message: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    lines
        .iter()
        .filter(move |l| l["fields"]["message"].as_str() == Some(message))
}

#[test]
fn a_moved_log_file_keeps_its_lines_and_sigusr1_starts_a_new_one_in_json() {
    let mut process = Process::start(
        |_, port| {
            config(
                port,
                "[log]\nformat = \"json\"\ndestination = \"pgbastion.log\"\n",
            )
        },
        &[],
    );
    let log = process.path("pgbastion.log");
    let moved = process.path("pgbastion.log.1");
    wait_until(
        "the listening line in the log file",
        || read(&log).contains("listening"),
        || read(&log),
    );
    std::fs::rename(&log, &moved).unwrap();
    process.failed_login("one");
    wait_until(
        "the first failed login in the moved file",
        || read(&moved).contains("backend login failed"),
        || read(&moved),
    );
    assert!(
        !log.exists(),
        "nothing may recreate the file before SIGUSR1"
    );

    process.signal(Signal::SIGUSR1);
    wait_until(
        "a new log file after SIGUSR1",
        || read(&log).contains("log file reopened"),
        || read(&moved),
    );
    process.failed_login("two");
    wait_until(
        "the second failed login in the new file",
        || read(&log).contains("backend login failed"),
        || read(&log),
    );
    process.signal(Signal::SIGTERM);
    let (status, stderr) = process.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "", "nothing on stderr when logs go to a file");

    let old = json_lines(&read(&moved));
    let new = json_lines(&read(&log));
    assert!(with_message(&old, "listening").count() == 1, "{old:?}");
    assert_eq!(with_message(&old, "backend login failed").count(), 1);
    assert_eq!(with_message(&old, "SIGUSR1: log file reopened").count(), 0);
    assert_eq!(with_message(&new, "SIGUSR1: log file reopened").count(), 1);
    let failed: Vec<_> = with_message(&new, "backend login failed").collect();
    assert_eq!(failed.len(), 1, "{new:?}");
    assert_eq!(failed[0]["fields"]["database"], "two");
    assert_eq!(failed[0]["level"], "WARN");
    assert_eq!(with_message(&new, "listening").count(), 0);
    assert_eq!(with_message(&new, "SIGTERM: draining").count(), 1);
}

#[test]
fn a_log_file_that_cannot_be_written_does_not_stop_pgbastion() {
    let mut process = Process::start(
        |_, port| config(port, "[log]\ndestination = \"/dev/full\"\n"),
        &[],
    );
    for _ in 0..3 {
        process.failed_login("one");
    }
    process.signal(Signal::SIGTERM);
    let (status, stderr) = process.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(
        stderr
            .matches("cannot write to the log file /dev/full")
            .count(),
        1,
        "one report per failure streak: {stderr}"
    );
}

#[test]
fn repeated_backend_failures_are_logged_once_per_route() {
    let mut process = Process::start(|_, port| config(port, "[log]\nformat = \"json\"\n"), &[]);
    for _ in 0..5 {
        process.failed_login("one");
    }
    process.failed_login("two");
    process.signal(Signal::SIGTERM);
    let (status, stderr) = process.wait();
    assert!(status.success(), "{status}: {stderr}");
    let lines = json_lines(&stderr);
    let failed: Vec<_> = with_message(&lines, "backend login failed").collect();
    // One line per route within the interval: route 1's four repeats are held back.
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0]["fields"]["database"], "one");
    assert_eq!(failed[0]["fields"]["suppressed"], 0);
    assert_eq!(failed[1]["fields"]["database"], "two");
}

#[test]
fn repeated_handshake_refusals_from_one_address_are_logged_once() {
    let mut process = Process::start(|_, port| config(port, "[log]\nformat = \"json\"\n"), &[]);
    // A StartupMessage for protocol 2.0, which pgbastion refuses with FATAL: the same
    // refusal, from the same address, five times.
    let protocol_2 = [0, 0, 0, 9, 0, 2, 0, 0, 0];
    for _ in 0..5 {
        let mut stream = TcpStream::connect(("127.0.0.1", process.port)).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(&protocol_2).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("unsupported frontend protocol 2.0"),
            "{text:?}"
        );
    }
    process.failed_login("one");
    process.signal(Signal::SIGTERM);
    let (status, stderr) = process.wait();
    assert!(status.success(), "{status}: {stderr}");
    let lines = json_lines(&stderr);
    let refused: Vec<_> = with_message(&lines, "connection refused")
        .filter(|l| {
            l["fields"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("protocol 2.0"))
        })
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["fields"]["suppressed"], 0);
    assert_eq!(with_message(&lines, "backend login failed").count(), 1);
}

#[test]
fn the_pid_file_holds_the_pid_once_listening_and_goes_at_exit() {
    let mut process = Process::start(
        |dir, port| {
            std::fs::create_dir(dir.join("run")).unwrap();
            config(port, "pid_file = \"run/pgbastion.pid\"\n")
        },
        &[],
    );
    let pid_file = process.path("run/pgbastion.pid");
    let expected = format!("{}\n", process.pid());
    wait_until(
        "the pid file",
        || read(&pid_file) == expected,
        || read(&pid_file),
    );
    let run = process.path("run");
    process.signal(Signal::SIGTERM);
    let (status, stderr) = process.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!pid_file.exists(), "the pid file outlived pgbastion");
    assert_eq!(
        std::fs::read_dir(run).unwrap().count(),
        0,
        "a temporary file was left"
    );
}

#[test]
fn a_pid_file_naming_a_running_pgbastion_refuses_a_second_start() {
    let first = Process::start(
        |_, port| config(port, "pid_file = \"pgbastion.pid\"\n"),
        &[],
    );
    let pid_file = first.path("pgbastion.pid");
    let expected = format!("{}\n", first.pid());
    wait_until("the pid file", || read(&pid_file) == expected, String::new);

    let shared = pid_file.display().to_string();
    let mut second = Process::spawn(
        |_, port| config(port, &format!("pid_file = \"{shared}\"\n")),
        &[],
    );
    let second_port = second.port;
    let (status, stderr) = second.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "names pgbastion process {}, which is running",
            first.pid()
        )),
        "{stderr}"
    );
    assert!(TcpStream::connect(("127.0.0.1", second_port)).is_err());
    assert_eq!(
        read(&pid_file),
        expected,
        "the first one's pid file was touched"
    );
    first.failed_login("one");
}

#[test]
fn a_stale_pid_file_is_replaced_with_a_log_line() {
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let stale = gone.id();
    let mut process = Process::start(
        |dir, port| {
            std::fs::write(dir.join("pgbastion.pid"), format!("{stale}\n")).unwrap();
            config(port, "pid_file = \"pgbastion.pid\"\n")
        },
        &[],
    );
    let pid_file = process.path("pgbastion.pid");
    let expected = format!("{}\n", process.pid());
    wait_until(
        "the pid file",
        || read(&pid_file) == expected,
        || read(&pid_file),
    );
    process.signal(Signal::SIGTERM);
    let (status, stderr) = process.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("replacing a stale pid file") && stderr.contains(&stale.to_string()),
        "{stderr}"
    );
}

/// Receives the next notification, failing at the deadline.
fn notification(socket: &UnixDatagram) -> String {
    let mut buf = [0; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification: {e}"));
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn systemd_hears_ready_once_listening_then_reloading_and_ready_on_sighup_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut process = Process::spawn(
        |_, port| config(port, ""),
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );

    let ready = notification(&socket);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains("STATUS="), "{ready}");
    TcpStream::connect(("127.0.0.1", process.port)).expect("READY=1 before the port accepts");

    let before = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    process.signal(Signal::SIGHUP);
    let reloading = notification(&socket);
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
    let usec: i64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {reloading}"))
        .parse()
        .unwrap();
    let before_usec = before.tv_sec() * 1_000_000 + before.tv_nsec() / 1_000;
    assert!(usec >= before_usec, "{usec} < {before_usec}");
    let ready_again = notification(&socket);
    assert!(ready_again.starts_with("READY=1\n"), "{ready_again}");

    process.signal(Signal::SIGTERM);
    let stopping = notification(&socket);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping}");
    let (status, stderr) = process.wait();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("packaging/pgbastion.service")).unwrap();
    for needed in [
        "Type=notify",
        "NotifyAccess=all",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitNOFILE=",
        "TimeoutStopSec=",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("note: systemd-analyze is not installed; the unit was not verified");
        return;
    }
    // verify checks that the programs exist: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgbastion.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/pgbastion", env!("CARGO_BIN_EXE_pgbastion")),
    )
    .unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr, "", "systemd-analyze warned");
}

#[test]
fn help_describes_the_options_signals_exit_statuses_files_and_environment() {
    let output = Command::new(env!("CARGO_BIN_EXE_pgbastion"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needed in [
        "--config",
        "--check-config",
        "--listen",
        "--data",
        "--workers",
        "SIGHUP",
        "SIGTERM",
        "SIGINT",
        "SIGUSR1",
        "SIGUSR2",
        "EXIT STATUS",
        "FILES",
        "pid_file",
        "NOTIFY_SOCKET",
        "RUST_LOG",
    ] {
        assert!(help.contains(needed), "--help lacks {needed}:\n{help}");
    }
}
