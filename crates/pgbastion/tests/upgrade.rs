#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Zero-downtime upgrade of the real binary (docs/operations.md, "Upgrading without
//! downtime"): SIGUSR2 to a running pgbastion starts the binary at its path, which takes over
//! the listening sockets (and the pid file) while the old process drains, against a real
//! PostgreSQL cluster.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pgbastion_testkit::Cluster;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

#[path = "common/binary.rs"]
mod binary;

use binary::{cluster_and_two_listeners, local, Bastion};

/// How long any one wait of these tests may take.
const LIMIT: Duration = Duration::from_secs(60);

/// A cluster with a table `t`, and a pgbastion configuration in front of it with a pid file
/// in `dir` and `upgrade_settle = settle`: a transparent listener, a pooled one (transaction
/// mode) and the metrics endpoint, on the three `ports`.
fn setup(dir: &Path, settle: &str) -> (Cluster, String, Vec<u16>) {
    let pid_file = dir.join("pgbastion.pid");
    cluster_and_two_listeners(&format!(
        "grace_period = \"30s\"\nupgrade_settle = \"{settle}\"\npid_file = \"{}\"",
        pid_file.display()
    ))
}

/// The PID in the pid file in `dir`, once it is there.
fn pid_in(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("pgbastion.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Waits until `condition` holds; panics with `what` (and the log) after [`LIMIT`].
fn wait_for(what: &str, bastion: &Bastion, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {LIMIT:?}\n{}",
            bastion.log().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a line of the log holds `needle`.
fn wait_for_line(what: &str, bastion: &Bastion, needle: &str) {
    wait_for(what, bastion, || {
        bastion.log().iter().any(|l| l.contains(needle))
    });
}

/// Waits until the pid file in `dir` names a process other than `old` (0: any), and returns
/// it.
fn new_process(dir: &Path, old: i32, bastion: &Bastion) -> i32 {
    wait_for("the new process writes the pid file", bastion, || {
        pid_in(dir).is_some_and(|pid| pid != old)
    });
    pid_in(dir).unwrap()
}

/// Kills, when dropped, the processes an upgrade of `old` may have started: its children
/// and the process in the pid file. They are not the test's children, so nothing else would
/// end them when an assertion fails. Declared after the [`Bastion`], it is dropped before it
/// (while `old` still runs and its children are known).
struct Successors {
    dir: PathBuf,
    old: i32,
}

impl Successors {
    /// Those of `old`, with its pid file in `dir`.
    fn of(dir: &Path, old: i32) -> Self {
        Self {
            dir: dir.to_owned(),
            old,
        }
    }
}

impl Drop for Successors {
    fn drop(&mut self) {
        let mut pids = children_of(self.old);
        pids.extend(pid_in(&self.dir).filter(|pid| *pid != self.old));
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The processes whose parent is `parent` (from /proc).
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // The parent is the second field after the name, which is in parentheses.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
                    == Some(parent)
            })
        })
        .collect()
}

fn is_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

async fn connect(addr: SocketAddr) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    open(addr).await.map(|(client, _)| client)
}

/// What the client loops saw.
#[derive(Default)]
struct Tally {
    /// Labels of the rows whose transaction committed.
    committed: Mutex<Vec<String>>,
    /// Connections that failed, with why.
    refused: Mutex<Vec<String>>,
    /// Transactions that failed, with why.
    failed: Mutex<Vec<String>>,
    done: AtomicUsize,
    stop: AtomicBool,
}

/// Connects to `addr`, inserts one row in a transaction and disconnects, over and over until
/// told to stop.
async fn client_loop(addr: SocketAddr, name: String, tally: Arc<Tally>) {
    let mut n = 0;
    while !tally.stop.load(Ordering::Relaxed) {
        n += 1;
        let label = format!("{name}-{n}");
        let client = match connect(addr).await {
            Ok(client) => client,
            Err(error) => {
                tally
                    .refused
                    .lock()
                    .unwrap()
                    .push(format!("{label}: {error}"));
                continue;
            }
        };
        let outcome = tokio::time::timeout(Duration::from_secs(20), insert(client, &label)).await;
        match outcome {
            Ok(Ok(())) => {
                tally.committed.lock().unwrap().push(label);
                tally.done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(error)) => tally
                .failed
                .lock()
                .unwrap()
                .push(format!("{label}: {error:?}")),
            Err(_) => tally
                .failed
                .lock()
                .unwrap()
                .push(format!("{label}: timed out")),
        }
    }
}

async fn insert(
    mut client: tokio_postgres::Client,
    label: &str,
) -> Result<(), tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    transaction
        .execute("INSERT INTO t (label) VALUES ($1)", &[&label])
        .await?;
    transaction.commit().await
}

/// A copy of the binary in a directory of its own, on the file system of the build (so that a
/// new binary can be renamed over it).
fn copied_binary() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("pgbastion");
    std::fs::copy(env!("CARGO_BIN_EXE_pgbastion"), &path).unwrap();
    (dir, path)
}

/// Replaces the binary at `path` the way a package manager does: a new file renamed over it
/// (the running process's binary is then deleted, and named `PATH (deleted)`).
fn replace_binary(path: &Path) {
    let next = path.with_extension("new");
    std::fs::hard_link(env!("CARGO_BIN_EXE_pgbastion"), &next)
        .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_pgbastion"), &next).map(|_| ()))
        .unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Replaces the binary at `path` with a shell script running `body`.
fn replace_with_script(path: &Path, body: &str) {
    let script = path.with_extension("new");
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&script, path).unwrap();
}

/// pgbastion started from a copy of the binary (which a test may replace), in front of a
/// cluster ([`setup`]).
struct FromCopy {
    binary: PathBuf,
    dir: tempfile::TempDir,
    cluster: Cluster,
    ports: Vec<u16>,
    bastion: Bastion,
    old: i32,
    _binary_dir: tempfile::TempDir,
}

fn start_from_copy(settle: &str, console: bool) -> FromCopy {
    let (binary_dir, binary) = copied_binary();
    let dir = tempfile::tempdir().unwrap();
    let (cluster, mut config, ports) = setup(dir.path(), settle);
    if console {
        config = with_console(&config);
    }
    let bastion = Bastion::start_binary(&binary, &config, &ports);
    let old = new_process(dir.path(), 0, &bastion);
    FromCopy {
        binary,
        dir,
        cluster,
        ports,
        bastion,
        old,
        _binary_dir: binary_dir,
    }
}

/// Asserts that a new session on each of `ports` runs a statement.
fn serves(ports: &[u16]) {
    let runtime = runtime();
    runtime.block_on(async {
        for port in ports {
            let client = connect(local(*port)).await.unwrap();
            client.batch_execute("SELECT 1").await.unwrap();
        }
    });
}

#[test]
fn clients_connecting_without_pause_across_an_upgrade_see_no_refusal_and_no_failed_transaction() {
    let FromCopy {
        binary,
        dir,
        cluster,
        ports,
        mut bastion,
        old,
        _binary_dir,
        // What the design guarantees: a session the old process accepted gets the settle
        // time to log in and run its transaction (each loop's connection runs one and
        // closes). Longer than the default 2s, so that a loaded machine does not make a
        // login plus a transaction outlast it.
    } = start_from_copy("10s", false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Tally::default());
    let loops: Vec<_> = (0..6)
        .map(|i| {
            let addr = local(ports[i % 2]);
            runtime.spawn(client_loop(addr, format!("c{i}"), tally.clone()))
        })
        .collect();
    let done = || tally.done.load(Ordering::Relaxed);
    wait_for("transactions before the upgrade", &bastion, || done() >= 30);

    replace_binary(&binary);
    let _successors = Successors::of(dir.path(), old);
    let signalled = (Instant::now(), done());
    bastion.signal(Signal::SIGUSR2);
    let new = new_process(dir.path(), old, &bastion);
    let at_takeover = done();
    let taken_over = signalled.0.elapsed();
    let status = bastion.wait_exit(LIMIT);
    assert!(status.success(), "the old process exited with {status}");
    assert_eq!(
        pid_in(dir.path()),
        Some(new),
        "the old process left the new pid file"
    );
    let at_exit = done();
    println!(
        "SIGUSR2 to the new pid file: {taken_over:?}, to the old process's exit: {:?}; \
         transactions meanwhile: {} until the takeover, {} more until the exit",
        signalled.0.elapsed(),
        at_takeover - signalled.1,
        at_exit - at_takeover
    );
    wait_for(
        "transactions after the old process exited",
        &bastion,
        || done() >= at_exit + 30,
    );
    tally.stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for task in loops {
            tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
        }
    });

    let log = bastion.log().join("\n");
    let refused = tally.refused.lock().unwrap();
    let failed = tally.failed.lock().unwrap();
    assert!(
        refused.is_empty(),
        "refused connections: {refused:#?}\n{log}"
    );
    assert!(failed.is_empty(), "failed transactions: {failed:#?}\n{log}");
    assert!(
        at_takeover < at_exit,
        "nothing ran between the takeover and the old exit"
    );
    assert!(is_alive(new), "the new process serves on");
    assert!(
        log.contains("upgrade: the new process serves"),
        "no takeover in the log:\n{log}"
    );
    assert_eq!(
        log.matches("serving a listening socket handed over")
            .count(),
        2,
        "both listeners were handed over, not bound anew:\n{log}"
    );
    let committed = tally.committed.lock().unwrap();
    let rows = cluster.query("SELECT count(*) FROM t").unwrap();
    assert_eq!(rows.trim(), committed.len().to_string());
    for label in committed.iter().step_by(7) {
        let found = cluster
            .query(&format!("SELECT count(*) FROM t WHERE label = '{label}'"))
            .unwrap();
        assert_eq!(found.trim(), "1", "row {label}");
    }
}

#[test]
fn a_session_in_a_transaction_goes_on_through_the_takeover_and_then_drains_by_the_drain_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, config, ports) = setup(dir.path(), "2s");
    let (mut bastion, notify, old) = start_notified(dir.path(), &config, &ports);
    let runtime = runtime();
    let (busy, busy_conn) = in_transaction(&runtime, ports[0], "before");
    let (idle, idle_conn) = runtime.block_on(open(local(ports[1]))).unwrap();
    runtime.block_on(async {
        idle.batch_execute("SELECT 1").await.unwrap();
    });

    let _successors = Successors::of(dir.path(), old);
    bastion.signal(Signal::SIGUSR2);
    let new = new_process(dir.path(), old, &bastion);
    assert!(notification(&notify).starts_with("RELOADING=1\n"));
    // systemd follows the new process as the main one.
    let ready = notification(&notify);
    assert!(
        ready.starts_with(&format!("MAINPID={new}\nREADY=1\n")),
        "{ready}"
    );
    let drained = |bastion: &Bastion| {
        bastion
            .log()
            .iter()
            .any(|l| l.contains("upgrade: draining"))
    };
    wait_for("the old process drains", &bastion, || drained(&bastion));
    runtime.block_on(async {
        // Inside its transaction the session is not ended by the drain.
        busy.batch_execute("INSERT INTO t VALUES ('after'); COMMIT")
            .await
            .unwrap();
        // Idle, both are: FATAL 57P01, and the connection closes.
        for (who, connection) in [("busy", busy_conn), ("idle", idle_conn)] {
            let ended = tokio::time::timeout(LIMIT, connection)
                .await
                .unwrap()
                .unwrap();
            let error = ended.expect_err(who);
            assert_eq!(
                error.code(),
                Some(&SqlState::ADMIN_SHUTDOWN),
                "{who}: {error:?}"
            );
        }
    });
    let status = bastion.wait_exit(LIMIT);
    assert!(status.success(), "the old process exited with {status}");
    // The old process, no longer the main one, does not tell systemd the service stops.
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0; 4096];
    if let Ok(n) = notify.recv(&mut buf) {
        panic!("after the handover: {}", String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(
        cluster
            .query("SELECT string_agg(label, ',' ORDER BY label) FROM t")
            .unwrap()
            .trim(),
        "after,before"
    );
    // The new process serves both listeners.
    serves(&ports[..2]);
}

/// The next message to the service manager's socket.
fn notification(socket: &UnixDatagram) -> String {
    let mut buf = [0; 4096];
    let n = socket.recv(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// A current-thread runtime for the test's clients.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// pgbastion with `config` (a pid file in `dir`) and `NOTIFY_SOCKET` naming a socket in
/// `dir`, once it said READY=1: the process, the socket and its PID.
fn start_notified(dir: &Path, config: &str, ports: &[u16]) -> (Bastion, UnixDatagram, i32) {
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let notify_env = notify_path.to_str().unwrap();
    let bastion = Bastion::start(config, &[], &[("NOTIFY_SOCKET", notify_env)], ports);
    let pid = new_process(dir, 0, &bastion);
    assert!(notification(&notify).starts_with("READY=1\n"));
    (bastion, notify, pid)
}

/// A session on `port` inside a transaction that inserted `label`, and its connection.
fn in_transaction(
    runtime: &tokio::runtime::Runtime,
    port: u16,
    label: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (busy, connection) = runtime.block_on(open(local(port))).unwrap();
    runtime
        .block_on(busy.batch_execute(&format!("BEGIN; INSERT INTO t VALUES ('{label}')")))
        .unwrap();
    (busy, connection)
}

/// Commits the transaction `busy` is in, and asserts that the drain then ends the session
/// with 57P01.
fn commit_then_drained(
    runtime: &tokio::runtime::Runtime,
    busy: &tokio_postgres::Client,
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    runtime.block_on(async {
        busy.batch_execute("COMMIT").await.unwrap();
        let ended = tokio::time::timeout(LIMIT, connection)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            ended.expect_err("busy").code(),
            Some(&SqlState::ADMIN_SHUTDOWN)
        );
    });
}

/// A session at `addr` and the task that drives its connection (it ends with the error that
/// closed it).
async fn open(
    addr: SocketAddr,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    tokio_postgres::Error,
> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(addr.port())
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10))
        .connect(NoTls)
        .await?;
    Ok((client, tokio::spawn(connection)))
}

#[test]
fn a_new_process_that_cannot_start_leaves_the_old_one_serving_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, config, ports) = setup(dir.path(), "2s");
    let mut bastion = Bastion::start(&config, &[], &[], &ports);
    let old = new_process(dir.path(), 0, &bastion);
    std::fs::write(bastion.config_path(), "grace_period = [").unwrap();
    let _successors = Successors::of(dir.path(), old);
    bastion.signal(Signal::SIGUSR2);
    let failed = |bastion: &Bastion| {
        bastion
            .log()
            .into_iter()
            .find(|l| l.contains("upgrade failed, this process goes on serving"))
    };
    wait_for("the upgrade fails", &bastion, || failed(&bastion).is_some());
    let line = failed(&bastion).unwrap();
    assert!(line.contains("could not start"), "{line}");
    assert!(
        line.contains("pgbastion.toml"),
        "the reason names the file: {line}"
    );
    let started = bastion
        .log()
        .into_iter()
        .find(|l| l.contains("upgrade: new process started"))
        .unwrap();
    let child: i32 = started
        .split("pid=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {started:?}"));
    assert!(!is_alive(child), "the failed new process is gone");
    assert!(bastion.alive());
    assert_eq!(pid_in(dir.path()), Some(old));
    serves(&ports[..2]);

    // Fixed, the next upgrade goes through.
    std::fs::write(bastion.config_path(), &config).unwrap();
    bastion.signal(Signal::SIGUSR2);
    new_process(dir.path(), old, &bastion);
    assert!(bastion.wait_exit(LIMIT).success());
}

#[test]
fn a_new_binary_that_never_gets_ready_is_killed_and_the_old_process_serves_on() {
    let FromCopy {
        binary,
        dir,
        ports,
        mut bastion,
        old,
        cluster: _cluster,
        _binary_dir,
    } = start_from_copy("2s", false);
    replace_with_script(&binary, "exec sleep 600");
    let _successors = Successors::of(dir.path(), old);
    bastion.signal(Signal::SIGUSR2);
    wait_for_line(
        "the upgrade gives up",
        &bastion,
        "the new process was not ready within 30s (killed)",
    );
    assert!(children_of(old).is_empty(), "the new process is gone");
    assert!(bastion.alive());
    assert_eq!(pid_in(dir.path()), Some(old));
    serves(&ports[..2]);
}

/// How many descriptors process `pid` has open.
fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn an_upgrade_goes_through_when_closed_clients_left_gaps_all_over_the_descriptor_table() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, config, ports) = setup(dir.path(), "2s");
    let mut bastion = Bastion::start(&config, &[], &[], &ports);
    let old = new_process(dir.path(), 0, &bastion);
    let runtime = runtime();
    // 300 idle sessions on the pooled listener (they hold no backend), then every other one
    // closed: no two free descriptors in a row below the highest one open.
    let before = open_descriptors(old);
    let mut sessions = runtime.block_on(async {
        let mut sessions = Vec::new();
        for _ in 0..300 {
            sessions.push(open(local(ports[1])).await.unwrap());
        }
        sessions
    });
    let opened = open_descriptors(old);
    assert!(opened >= before + 300, "{before} then {opened} descriptors");
    let mut i = 0;
    sessions.retain(|_| {
        i += 1;
        i % 2 == 0
    });
    // The sessions' connection tasks run (and close) only while the runtime is driven.
    runtime.block_on(async {
        tokio::time::timeout(LIMIT, async {
            while open_descriptors(old) > opened - 150 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the closed sessions' descriptors are closed");
    });

    let _successors = Successors::of(dir.path(), old);
    bastion.signal(Signal::SIGUSR2);
    let new = new_process(dir.path(), old, &bastion);
    let status = bastion.wait_exit(LIMIT);
    assert!(status.success(), "the old process exited with {status}");
    let log = bastion.log().join("\n");
    assert!(!log.contains("upgrade failed"), "{log}");
    assert!(is_alive(new));
    serves(&ports[..2]);
    drop(sessions);
}

#[test]
fn a_new_process_that_dies_before_the_old_one_drains_leaves_the_old_one_serving_again() {
    let dir = tempfile::tempdir().unwrap();
    // A settle time long enough for the new process to be killed inside it.
    let (_cluster, config, ports) = setup(dir.path(), "60s");
    let (mut bastion, notify, old) = start_notified(dir.path(), &config, &ports);
    let runtime = runtime();
    let (idle, _idle_conn) = runtime.block_on(open(local(ports[0]))).unwrap();

    let _successors = Successors::of(dir.path(), old);
    bastion.signal(Signal::SIGUSR2);
    let new = new_process(dir.path(), old, &bastion);
    // The new process writes its pid file before it tells systemd: killed in between, it
    // would never send MAINPID. Killed once it has, it has taken over in every way.
    assert!(notification(&notify).starts_with("RELOADING=1\n"));
    assert!(notification(&notify).starts_with(&format!("MAINPID={new}\nREADY=1\n")));
    kill(Pid::from_raw(new), Signal::SIGKILL).unwrap();
    wait_for_line(
        "the old process accepts again",
        &bastion,
        "this one accepts again and serves on",
    );
    wait_for("the old process takes its pid file back", &bastion, || {
        pid_in(dir.path()) == Some(old)
    });
    let back = notification(&notify);
    assert!(
        back.starts_with(&format!("MAINPID={old}\nREADY=1\n")),
        "{back}"
    );
    assert!(bastion.alive());
    // New sessions on both listeners, and the session from before the upgrade, go on.
    serves(&ports[..2]);
    runtime.block_on(idle.batch_execute("SELECT 1")).unwrap();

    // And a later upgrade goes through.
    bastion.signal(Signal::SIGUSR2);
    let newer = new_process(dir.path(), old, &bastion);
    assert_ne!(newer, new);
    serves(&ports[..2]);
}

#[test]
fn a_new_process_that_dies_once_the_old_one_drains_is_reported_as_an_outage_and_fails_the_old_one()
{
    let dir = tempfile::tempdir().unwrap();
    // No settle time: the old process drains as soon as the new one serves.
    let (cluster, config, ports) = setup(dir.path(), "0s");
    let mut bastion = Bastion::start(&config, &[], &[], &ports);
    let old = new_process(dir.path(), 0, &bastion);
    let runtime = runtime();
    let (busy, busy_conn) = in_transaction(&runtime, ports[0], "during");

    let _successors = Successors::of(dir.path(), old);
    bastion.signal(Signal::SIGUSR2);
    let new = new_process(dir.path(), old, &bastion);
    wait_for_line("the old process drains", &bastion, "upgrade: draining");
    kill(Pid::from_raw(new), Signal::SIGKILL).unwrap();
    wait_for("the outage is logged", &bastion, || {
        bastion.log().iter().any(|l| {
            l.contains("ERROR") && l.contains("THE SERVICE IS DOWN") && l.contains("status 1")
        })
    });
    // The pid file names the live (draining) process, not the dead one.
    wait_for("the old process takes its pid file back", &bastion, || {
        pid_in(dir.path()) == Some(old)
    });
    // The session inside its transaction still finishes it, then the drain ends it.
    commit_then_drained(&runtime, &busy, busy_conn);
    let status = bastion.wait_exit(LIMIT);
    assert_eq!(
        status.code(),
        Some(1),
        "the old process exited with {status}"
    );
    assert_eq!(pid_in(dir.path()), None, "the pid file is removed at exit");
    assert_eq!(
        cluster
            .query("SELECT count(*) FROM t WHERE label = 'during'")
            .unwrap()
            .trim(),
        "1"
    );
}

/// The admin console's password (user `ops`).
const OPS_PASSWORD: &str = "ops-secret-1";

/// `config` with the admin console for user `ops`.
fn with_console(config: &str) -> String {
    format!(
        "{config}\n[[user]]\nname = \"ops\"\npassword = \"{OPS_PASSWORD}\"\n\n\
         [admin]\nusers = [\"ops\"]\n"
    )
}

/// A console session on `port`, and the task that drives it.
async fn console(port: u16) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("ops")
        .password(OPS_PASSWORD)
        .dbname("pgbastion")
        .connect_timeout(Duration::from_secs(10))
        .connect(NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[test]
fn a_console_shutdown_tells_systemd_that_the_service_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, config, ports) = setup(dir.path(), "2s");
    let (mut bastion, notify, _) = start_notified(dir.path(), &with_console(&config), &ports);
    let runtime = runtime();
    runtime.block_on(async {
        let admin = console(ports[0]).await;
        admin.simple_query("SHUTDOWN").await.unwrap();
    });
    let stopping = notification(&notify);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping}");
    assert!(bastion.wait_exit(LIMIT).success());
}

#[test]
fn a_console_shutdown_while_the_new_process_starts_calls_the_upgrade_off_and_reload_is_refused_meanwhile(
) {
    let copy = start_from_copy("2s", true);
    let (dir, ports, old) = (copy.dir.path(), &copy.ports, copy.old);
    let mut bastion = copy.bastion;
    let runtime = runtime();
    let (busy, busy_conn) = in_transaction(&runtime, ports[0], "during");
    let admin = runtime.block_on(console(ports[0]));
    // A new binary that takes a second to start: the upgrade is called off meanwhile.
    replace_with_script(
        &copy.binary,
        &format!("sleep 1\nexec '{}' \"$@\"", env!("CARGO_BIN_EXE_pgbastion")),
    );
    let _successors = Successors::of(dir, old);
    bastion.signal(Signal::SIGUSR2);
    wait_for_line(
        "the new process starts",
        &bastion,
        "upgrade: new process started",
    );
    runtime.block_on(async {
        let error = admin.simple_query("RELOAD").await.expect_err("RELOAD");
        let message = error.as_db_error().map(|e| e.message().to_owned());
        assert!(
            message.as_deref().is_some_and(|m| m.contains("upgrade")),
            "{error:?}"
        );
        admin.simple_query("SHUTDOWN WAIT").await.unwrap();
    });
    wait_for_line("the upgrade is called off", &bastion, "upgrade called off");
    // The new process hears ABORT once it serves, and exits without taking the pid file.
    wait_for("the new process exits", &bastion, || {
        children_of(old).is_empty()
    });
    assert_eq!(pid_in(dir), Some(old));
    let log = bastion.log().join("\n");
    assert!(
        log.contains("the old process called the upgrade off")
            || log.contains("upgrade called off: the upgrade was called off (killed)"),
        "{log}"
    );
    // The old process drains as on SIGTERM.
    commit_then_drained(&runtime, &busy, busy_conn);
    let status = bastion.wait_exit(LIMIT);
    assert!(status.success(), "the old process exited with {status}");
    assert_eq!(pid_in(dir), None);
    assert_eq!(
        copy.cluster
            .query("SELECT count(*) FROM t WHERE label = 'during'")
            .unwrap()
            .trim(),
        "1"
    );
}
