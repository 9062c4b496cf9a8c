//! The old process's side of a zero-downtime upgrade (SIGUSR2; the new one's side is
//! [`crate::inherit`]): it starts the binary now at its own path with its own arguments,
//! passing its listening sockets and a channel, and waits until the new process says it
//! serves (`READY`, once its accept loops run) or fails (then this one logs why and goes on
//! serving: a failed deploy never takes the service down).
//!
//! On `READY` this process answers `GO` (only then does the new one take the pid file and
//! tell systemd it is the main process), stops accepting, and drains after the settle time.
//! It keeps duplicates of its listening sockets and watches the new process until the drain
//! starts: should the new process exit before, this one accepts again on them, takes the pid
//! file and `MAINPID=` back and serves on. Once the drain has started there is no way back:
//! a death of the new process is logged as the outage it is, and this one exits with status 1
//! at the end of its drain. An upgrade called off before `GO` (SIGTERM, SIGINT, a console
//! SHUTDOWN) is answered `ABORT`, and the new process exits without touching the pid file or
//! systemd's main PID.
//!
//! The sockets are duplicated into a block of consecutive descriptors without close-on-exec
//! right before the new process is started, and closed right after (`LISTEN_FDS`,
//! `LISTEN_FDS_FIRST_FD`, as systemd's socket activation has them, without `LISTEN_PID`,
//! which `std::process::Command` cannot know before the exec). The block goes above the
//! highest descriptor open, so that a descriptor table left with gaps by closed clients does
//! not matter. Placing descriptors in the child only (between fork and exec) would need
//! `pre_exec`, which is unsafe code. The cost of doing it in the parent is a window of a few
//! microseconds in which a process another thread starts (an external authenticator) inherits
//! the duplicates too, and holds them until it exits: the listening sockets (a long-lived
//! helper would keep the ports bound after pgbastion exits, without accepting on them) and
//! the new process's end of the channel (so that this process would see no end of file when
//! the new one dies; it therefore also watches the new process's exit). The window is not
//! closed, only narrow: keep external authenticators short-lived.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use nix::fcntl::{fcntl, FcntlArg};
use pgbastion_proxy::Proxy;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::inherit::UPGRADE_FROM;
use crate::metrics_http::Endpoint;
use crate::notify::Notifier;
use crate::pid_file::PidFile;

/// How long the new process may take to load its configuration and serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the new process may take to exit once it said it failed (or closed the channel,
/// or was told `ABORT`), and then once killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long writing `GO` or `ABORT` may take (the new process waits for it).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest line the new process may report.
const MAX_REPORT: u64 = 4096;

/// How many times to place the block of descriptors when another thread opens descriptors
/// at the same time.
const PLACEMENT_ATTEMPTS: usize = 3;

/// What an upgrade in progress has come to.
#[derive(Debug)]
pub enum Event {
    /// The new process serves and was told `GO`: stop accepting.
    Serving(Child),
    /// The new process could not take over; this one goes on serving.
    Failed(anyhow::Error),
    /// The settle time is over: drain.
    Settled,
    /// The new process (this PID) exited after `GO`: how, and, when the drain had not started
    /// yet, the duplicates of the listening sockets to accept on again.
    Died {
        /// Its PID.
        pid: u32,
        /// How it ended.
        status: String,
        /// The listening sockets, when this process can take the service back.
        sockets: Option<Vec<(SocketAddr, OwnedFd)>>,
    },
}

/// The new process being started and waited for.
type Waiting = Pin<Box<dyn Future<Output = anyhow::Result<Child>> + Send>>;

/// Where the upgrade stands.
#[derive(Default)]
enum Stage {
    /// None asked for, or the last one failed.
    #[default]
    Idle,
    /// Waiting for the new process; `abort` calls it off.
    Starting {
        waiting: Waiting,
        abort: oneshot::Sender<()>,
    },
    /// The new process serves; the drain starts at `until`. `sockets` are duplicates of the
    /// listening sockets, to accept on again should it die before.
    Settling {
        until: Instant,
        successor: Child,
        pid: u32,
        sockets: Vec<(SocketAddr, OwnedFd)>,
    },
    /// The drain has started; the new process is watched while it lives.
    Done { successor: Option<(Child, u32)> },
}

/// The upgrade of this process: at most one at a time.
pub struct Upgrade {
    stage: Stage,
    /// How long the sessions accepted just before the new process took over get before the
    /// drain starts (`upgrade_settle`).
    settle: Duration,
    /// The new process died once this one drained: the service went down.
    successor_lost: bool,
}

impl Upgrade {
    /// No upgrade yet; one will give `settle` to the sessions accepted just before the new
    /// process took over (a connection still in its handshake, or authenticated and about
    /// to send its first query, would otherwise be ended by the drain).
    pub fn new(settle: Duration) -> Self {
        Self {
            stage: Stage::Idle,
            settle,
            successor_lost: false,
        }
    }

    /// Whether an upgrade is under way or done (then SIGHUP, SIGUSR2 and the console's
    /// RELOAD are not for this process any more).
    pub fn in_progress(&self) -> bool {
        !matches!(self.stage, Stage::Idle)
    }

    /// Whether the new process died after this one started to drain (the process must then
    /// exit with a failure status).
    pub fn successor_lost(&self) -> bool {
        self.successor_lost
    }

    /// SIGUSR2: starts an upgrade, unless one is under way or the proxy drains.
    pub fn requested(&mut self, proxy: &Proxy, metrics: Option<&Endpoint>, notifier: &Notifier) {
        if proxy.is_draining() || self.in_progress() {
            tracing::info!("SIGUSR2 while draining or upgrading: ignored");
            return;
        }
        notifier.reloading();
        if !self.start(proxy, metrics.map(|endpoint| &endpoint.socket)) {
            notifier.ready("serving");
        }
    }

    /// Starts the new process with `proxy`'s listening sockets and `metrics` (the metrics
    /// endpoint's); [`next`](Self::next) tells what becomes of it. Logs what it did; false
    /// when the new process could not even be started.
    fn start(&mut self, proxy: &Proxy, metrics: Option<&OwnedFd>) -> bool {
        let started = proxy
            .listening_sockets()
            .context("cannot take the listening sockets")
            .and_then(|sockets| {
                let mut passed: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
                passed.extend(metrics.map(AsFd::as_fd));
                spawn(&passed)
            });
        match started {
            Ok((child, channel)) => {
                let pid = child.0.as_ref().and_then(Child::id).unwrap_or_default();
                tracing::info!(
                    pid,
                    "upgrade: new process started; this one serves until it is ready"
                );
                let (abort, aborted) = oneshot::channel();
                self.stage = Stage::Starting {
                    waiting: Box::pin(wait_ready(child, channel, aborted)),
                    abort,
                };
                true
            }
            Err(error) => {
                tracing::error!("upgrade failed, this process goes on serving: {error:#}");
                false
            }
        }
    }

    /// Whether the new process serves (then this process no longer speaks for the service).
    pub fn handed_over(&self) -> bool {
        matches!(self.stage, Stage::Settling { .. } | Stage::Done { .. })
    }

    /// Calls off an upgrade still waiting for its new process (told `ABORT`, then killed if
    /// it does not exit); one whose new process serves goes on.
    pub fn abandon(&mut self) {
        if !matches!(self.stage, Stage::Starting { .. }) {
            return;
        }
        let Stage::Starting { waiting, abort } = std::mem::take(&mut self.stage) else {
            return;
        };
        let _ = abort.send(());
        tracing::info!("upgrade called off: the new process is told to exit");
        tokio::spawn(async move {
            match waiting.await {
                Ok(child) => tracing::warn!(
                    pid = child.id(),
                    "upgrade: the new process took over as the upgrade was called off"
                ),
                Err(error) => tracing::info!("upgrade called off: {error:#}"),
            }
        });
    }

    /// The next event; pending while there is none to come. Cancel-safe.
    pub async fn next(&mut self) -> Event {
        match &mut self.stage {
            Stage::Idle | Stage::Done { successor: None } => std::future::pending().await,
            Stage::Starting { waiting, .. } => {
                let outcome = waiting.as_mut().await;
                self.stage = Stage::Idle;
                match outcome {
                    Ok(child) => Event::Serving(child),
                    Err(error) => Event::Failed(error),
                }
            }
            Stage::Settling {
                until, successor, ..
            } => {
                let exited = tokio::select! {
                    () = tokio::time::sleep_until(*until) => None,
                    status = successor.wait() => Some(exit_status(status)),
                };
                let Stage::Settling {
                    successor,
                    pid,
                    sockets,
                    ..
                } = std::mem::take(&mut self.stage)
                else {
                    unreachable!("the stage was Settling a moment ago")
                };
                match exited {
                    None => {
                        self.stage = Stage::Done {
                            successor: Some((successor, pid)),
                        };
                        Event::Settled
                    }
                    Some(status) => Event::Died {
                        pid,
                        status,
                        sockets: Some(sockets),
                    },
                }
            }
            Stage::Done {
                successor: Some((successor, pid)),
            } => {
                let status = exit_status(successor.wait().await);
                let pid = *pid;
                self.stage = Stage::Done { successor: None };
                Event::Died {
                    pid,
                    status,
                    sockets: None,
                }
            }
        }
    }

    /// Does what `event` calls for: once the new process serves, this one stops accepting
    /// (keeping duplicates of its listening sockets), and drains after the settle time (its
    /// metrics endpoint then stops answering, so that `/ready` probes reach the new one); a
    /// failure is logged and this process serves on; a death of the new process is answered
    /// as the module documentation says (`pid_file` is this process's pid file).
    pub async fn act(
        &mut self,
        event: Event,
        proxy: &Proxy,
        metrics: Option<&Endpoint>,
        notifier: &Notifier,
        pid_file: Option<&PidFile>,
    ) {
        match event {
            Event::Serving(successor) => {
                let pid = successor.id().unwrap_or_default();
                let sockets = proxy.listening_sockets().unwrap_or_else(|error| {
                    tracing::warn!(%error, "cannot keep the listening sockets: should the new process die before the drain, this one could not accept again");
                    Vec::new()
                });
                proxy.stop_accepting().await;
                self.stage = Stage::Settling {
                    until: Instant::now() + self.settle,
                    successor,
                    pid,
                    sockets,
                };
                tracing::info!(
                    pid,
                    settle = ?self.settle,
                    "upgrade: the new process serves; this one stopped accepting and drains after the settle time"
                );
            }
            Event::Failed(error) => {
                tracing::error!("upgrade failed, this process goes on serving: {error:#}");
                notifier.ready("serving");
            }
            Event::Settled => {
                if let Some(endpoint) = metrics {
                    endpoint.stop();
                }
                let grace = proxy.grace_period();
                tracing::info!(grace_period = ?grace, "upgrade: draining");
                proxy.drain(grace);
            }
            Event::Died {
                pid,
                status,
                sockets: Some(sockets),
            } if !proxy.is_draining() => {
                tracing::error!(
                    pid,
                    "upgrade failed: the new process exited ({status}) before this one drained; this one accepts again and serves on"
                );
                proxy.resume_accepting(sockets);
                take_back(pid_file);
                notifier.ready_as_main("serving again: the new process died");
            }
            Event::Died { pid, status, .. } => {
                tracing::error!(
                    pid,
                    "upgrade failed: the new process exited ({status}) after this one started to drain: no process accepts connections, THE SERVICE IS DOWN; this one exits with status 1 once drained"
                );
                self.successor_lost = true;
                self.stage = Stage::Done { successor: None };
                take_back(pid_file);
                notifier.stopping_as_main("the new process died while this one drains");
            }
        }
    }
}

/// Writes this process's ID to its pid file again (the new process's, if it wrote it, names
/// a dead process).
fn take_back(pid_file: Option<&PidFile>) {
    if let Some(pid_file) = pid_file {
        if let Err(error) = pid_file.rewrite() {
            tracing::error!("{error:#}");
        }
    }
}

/// How a process ended, in words.
fn exit_status(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("cannot wait for it: {error}"),
    }
}

/// Starts the binary at this process's path with its arguments, `sockets` and a channel.
fn spawn(sockets: &[BorrowedFd<'_>]) -> anyhow::Result<(Killed, tokio::net::UnixStream)> {
    let (ours, theirs) = UnixStream::pair().context("cannot make the upgrade channel")?;
    let mut passed = sockets.to_vec();
    passed.push(theirs.as_fd());
    let block = Block::place(&passed).context("cannot pass the listening sockets")?;
    let binary = own_binary()?;
    let child = tokio::process::Command::new(&binary)
        .args(std::env::args_os().skip(1))
        .env(UPGRADE_FROM, std::process::id().to_string())
        .env("LISTEN_FDS", passed.len().to_string())
        .env("LISTEN_FDS_FIRST_FD", block.first.to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    drop(block);
    drop(theirs);
    ours.set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(ours))
        .map(|channel| (Killed(Some(child)), channel))
        .context("cannot watch the upgrade channel")
}

/// The path of this binary, which by now may hold a new one. Linux names a binary replaced
/// since it was started `PATH (deleted)`: the new one is at `PATH`.
fn own_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe().context("cannot find this binary's path")?;
    Ok(
        match path.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
            Some(path) => PathBuf::from(path),
            None => path,
        },
    )
}

/// Waits for the new process's report, and answers `GO` to its `READY`: the new process,
/// which then takes over; or why it failed (then it has exited or been killed). `aborted`
/// calls the upgrade off: the new process is told `ABORT` and given time to exit. Besides
/// the channel, the new process's exit is watched: a process started meanwhile by another
/// thread may hold the new one's end of the channel, which would then never report an end
/// of file.
async fn wait_ready(
    mut child: Killed,
    mut channel: tokio::net::UnixStream,
    mut aborted: oneshot::Receiver<()>,
) -> anyhow::Result<Child> {
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new((&mut channel).take(MAX_REPORT));
    let waited = tokio::select! {
        biased;
        _ = &mut aborted => None,
        read = tokio::time::timeout(READY_TIMEOUT, reader.read_until(b'\n', &mut line)) => Some(Ok(read)),
        status = child.wait() => Some(Err(status)),
    };
    drop(reader);
    let report = String::from_utf8_lossy(&line);
    let report = report.trim_end();
    let (failure, patience) = match waited {
        None => {
            let _ = tokio::time::timeout(ANSWER_TIMEOUT, channel.write_all(b"ABORT\n")).await;
            ("the upgrade was called off".to_owned(), EXIT_TIMEOUT)
        }
        Some(Err(status)) => {
            anyhow::bail!("the new process exited before it was ready ({status})")
        }
        Some(Ok(read)) => match (read, report.split_once(' ').unwrap_or((report, ""))) {
            (Ok(Ok(_)), ("READY", _)) => {
                match tokio::time::timeout(ANSWER_TIMEOUT, channel.write_all(b"GO\n")).await {
                    Ok(Ok(())) => return child.keep(),
                    Ok(Err(error)) => (
                        format!("cannot tell the new process to take over: {error}"),
                        EXIT_TIMEOUT,
                    ),
                    Err(_) => (
                        "cannot tell the new process to take over: timed out".to_owned(),
                        Duration::ZERO,
                    ),
                }
            }
            (Ok(Ok(_)), ("FAILED", reason)) => (
                format!("the new process could not start: {reason}"),
                EXIT_TIMEOUT,
            ),
            (Ok(Ok(_)), _) => (
                "the new process ended before it was ready".to_owned(),
                EXIT_TIMEOUT,
            ),
            (Ok(Err(error)), _) => (
                format!("cannot read the new process's report: {error}"),
                EXIT_TIMEOUT,
            ),
            (Err(_), _) => (
                format!("the new process was not ready within {READY_TIMEOUT:?}"),
                Duration::ZERO,
            ),
        },
    };
    let status = child.end(patience).await;
    anyhow::bail!("{failure} ({status})")
}

/// The new process, killed when dropped unless [`keep`](Self::keep) was called.
struct Killed(Option<Child>);

impl Killed {
    /// Lets the process run on, and returns it.
    fn keep(&mut self) -> anyhow::Result<Child> {
        self.0.take().context("the new process is gone")
    }

    /// Waits for the process to exit (pending once it is gone), and says how it ended.
    async fn wait(&mut self) -> String {
        match self.0.as_mut() {
            Some(child) => {
                let status = exit_status(child.wait().await);
                self.0 = None;
                status
            }
            None => std::future::pending().await,
        }
    }

    /// Gives the process `patience` to exit, then kills it, and says how it ended.
    async fn end(&mut self, patience: Duration) -> String {
        let Some(child) = self.0.as_mut() else {
            return "gone".to_owned();
        };
        let exited = tokio::time::timeout(patience, child.wait()).await;
        let status = match exited {
            Ok(status) => exit_status(status),
            Err(_) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
                "killed".to_owned()
            }
        };
        self.0 = None;
        status
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            if let Err(error) = child.start_kill() {
                tracing::warn!(%error, "cannot kill the new process");
            }
        }
    }
}

/// Duplicates of some descriptors at consecutive numbers, inherited by processes started
/// while it lives (no close-on-exec); closed when dropped.
struct Block {
    first: RawFd,
    descriptors: Vec<RawFd>,
}

impl Block {
    /// Duplicates `fds`, in order, to consecutive numbers right above the highest descriptor
    /// open (so that gaps left lower by closed connections do not matter). Tried again when
    /// another thread took one of the numbers meanwhile.
    fn place(fds: &[BorrowedFd<'_>]) -> std::io::Result<Self> {
        for _ in 0..PLACEMENT_ATTEMPTS {
            let first = highest_open()?.max(2) + 1;
            let mut block = Self {
                first,
                descriptors: Vec::with_capacity(fds.len()),
            };
            for fd in fds {
                let wanted = first + block.descriptors.len() as RawFd;
                let placed = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD(wanted))?;
                block.descriptors.push(placed);
                if placed != wanted {
                    break;
                }
            }
            if block.descriptors.len() == fds.len() && block.is_consecutive() {
                return Ok(block);
            }
            // Dropped: closed, and placed again above what was taken.
        }
        Err(std::io::Error::other(
            "no block of consecutive free descriptors: other threads kept opening descriptors",
        ))
    }

    fn is_consecutive(&self) -> bool {
        self.descriptors
            .iter()
            .enumerate()
            .all(|(i, fd)| *fd == self.first + i as RawFd)
    }
}

/// The highest descriptor open in this process (from `/proc/self/fd`).
fn highest_open() -> std::io::Result<RawFd> {
    let mut highest = -1;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            highest = highest.max(fd);
        }
    }
    Ok(highest)
}

impl Drop for Block {
    fn drop(&mut self) {
        for fd in self.descriptors.drain(..) {
            let _ = nix::unistd::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_placed_consecutively_inheritable_and_closed_with_the_block() {
        let sockets: Vec<_> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let fds: Vec<_> = sockets.iter().map(AsFd::as_fd).collect();
        let block = Block::place(&fds).unwrap();
        let placed = block.descriptors.clone();
        assert_eq!(placed.len(), 3);
        for (i, fd) in placed.iter().enumerate() {
            assert_eq!(*fd, block.first + i as RawFd);
            let flags = fcntl(*fd, FcntlArg::F_GETFD).unwrap();
            assert_eq!(flags & nix::libc::FD_CLOEXEC, 0, "fd {fd} is close-on-exec");
        }
        drop(block);
        for fd in placed {
            assert!(
                fcntl(fd, FcntlArg::F_GETFD).is_err(),
                "fd {fd} is still open"
            );
        }
    }

    #[test]
    fn a_descriptor_table_full_of_gaps_still_gets_a_block_above_them() {
        let sockets: Vec<_> = (0..4)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        // 200 descriptors with every other one closed: no two free numbers in a row below
        // the highest.
        let mut open: Vec<_> = (0..200)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let highest = open.iter().map(AsRawFd::as_raw_fd).max().unwrap();
        let mut i = 0;
        open.retain(|_| {
            i += 1;
            i % 2 == 0
        });
        let fds: Vec<_> = sockets.iter().map(AsFd::as_fd).collect();
        let block = Block::place(&fds).unwrap();
        assert!(block.first > highest, "{} under {highest}", block.first);
        assert!(block.is_consecutive());
        assert_eq!(block.descriptors.len(), 4);
        drop(open);
    }
}
