//! The old process's side of a zero-downtime upgrade (SIGUSR2; the new one's side is
//! [`crate::inherit`]): it starts the binary now at its own path with its own arguments,
//! passing its listening sockets and a channel, and waits until the new process says it
//! serves (then this one stops accepting and drains) or fails (then this one logs why and
//! goes on serving: a failed deploy never takes the service down).
//!
//! The sockets are duplicated into a block of consecutive descriptors without close-on-exec
//! right before the new process is started, and closed right after (`LISTEN_FDS`,
//! `LISTEN_FDS_FIRST_FD`, as systemd's socket activation has them, without `LISTEN_PID`,
//! which `std::process::Command` cannot know before the exec). Placing descriptors in the
//! child only (between fork and exec) would need `pre_exec`, which is unsafe code; the cost
//! of doing it in the parent is that a process another thread starts in those few
//! microseconds (an external authenticator) inherits the duplicates too, and holds them
//! until it exits: harmless, as it never accepts on them.

use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use nix::fcntl::{fcntl, FcntlArg};
use pgbastion_proxy::Proxy;
use tokio::io::AsyncBufReadExt;
use tokio::process::Child;
use tokio::time::Instant;

use crate::inherit::UPGRADE_FROM;
use crate::metrics_http::Endpoint;
use crate::notify::Notifier;

/// How long the new process may take to load its configuration and serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long, once the new process serves and this one stopped accepting, the sessions
/// accepted just before get before the drain starts: a connection still in its handshake,
/// or authenticated and about to send its first query, would otherwise be ended by the drain,
/// which is exactly the failure an upgrade must not cause.
const SETTLE: Duration = Duration::from_secs(2);

/// How long the new process may take to exit once it said it failed (or closed the channel),
/// and then once killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest line the new process may report.
const MAX_REPORT: u64 = 4096;

/// How many times to look for a free block of consecutive descriptors.
const PLACEMENT_ATTEMPTS: usize = 16;

/// What an upgrade in progress has come to.
#[derive(Debug)]
pub enum Event {
    /// The new process (this PID) serves: stop accepting.
    Serving(u32),
    /// The new process could not take over; this one goes on serving.
    Failed(anyhow::Error),
    /// The settle time is over: drain.
    Settled,
}

/// The new process being started and waited for.
type Waiting = Pin<Box<dyn Future<Output = anyhow::Result<u32>>>>;

/// Where the upgrade stands.
#[derive(Default)]
enum Stage {
    /// None asked for, or the last one failed.
    #[default]
    Idle,
    /// Waiting for the new process.
    Starting(Waiting),
    /// The new process serves; the drain starts at this instant.
    Settling(Instant),
    /// The drain has started.
    Done,
}

/// The upgrade of this process: at most one at a time.
#[derive(Default)]
pub struct Upgrade {
    stage: Stage,
}

impl Upgrade {
    /// Whether an upgrade is under way or done (then SIGHUP and SIGUSR2 are not for this
    /// process any more).
    pub fn in_progress(&self) -> bool {
        !matches!(self.stage, Stage::Idle)
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
                self.stage = Stage::Starting(Box::pin(wait_ready(child, channel)));
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
        matches!(self.stage, Stage::Settling(_) | Stage::Done)
    }

    /// Abandons an upgrade still waiting for its new process (which is killed); one whose
    /// new process serves goes on.
    pub fn abandon(&mut self) {
        if matches!(self.stage, Stage::Starting(_)) {
            self.stage = Stage::Idle;
        }
    }

    /// The next event; pending while there is none to come. Cancel-safe.
    pub async fn next(&mut self) -> Event {
        match &mut self.stage {
            Stage::Idle | Stage::Done => std::future::pending().await,
            Stage::Starting(waiting) => {
                let outcome = waiting.as_mut().await;
                match outcome {
                    Ok(pid) => {
                        self.stage = Stage::Settling(Instant::now() + SETTLE);
                        Event::Serving(pid)
                    }
                    Err(error) => {
                        self.stage = Stage::Idle;
                        Event::Failed(error)
                    }
                }
            }
            Stage::Settling(at) => {
                tokio::time::sleep_until(*at).await;
                self.stage = Stage::Done;
                Event::Settled
            }
        }
    }
}

/// Does what `event` calls for: once the new process serves, this one stops accepting (and
/// its metrics endpoint stops answering, so that `/ready` probes reach the new one), and
/// drains after the settle time; a failure is logged and this process serves on.
pub async fn act(event: Event, proxy: &Proxy, metrics: Option<&Endpoint>, notifier: &Notifier) {
    match event {
        Event::Serving(pid) => {
            if let Some(endpoint) = metrics {
                endpoint.stop();
            }
            proxy.stop_accepting().await;
            tracing::info!(
                pid,
                "upgrade: the new process serves; this one stopped accepting and drains soon"
            );
        }
        Event::Failed(error) => {
            tracing::error!("upgrade failed, this process goes on serving: {error:#}");
            notifier.ready("serving");
        }
        Event::Settled => {
            let grace = proxy.grace_period();
            tracing::info!(grace_period = ?grace, "upgrade: draining");
            proxy.drain(grace);
        }
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

/// Waits for the new process's report: its PID once it serves, or why it failed (then it
/// has exited or been killed).
async fn wait_ready(mut child: Killed, channel: tokio::net::UnixStream) -> anyhow::Result<u32> {
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(channel, MAX_REPORT));
    let read = tokio::time::timeout(READY_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let report = String::from_utf8_lossy(&line);
    let report = report.trim_end();
    let (failure, patience) = match (read, report.split_once(' ').unwrap_or((report, ""))) {
        (Ok(Ok(_)), ("READY", _)) => return child.keep(),
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
    };
    let status = child.end(patience).await;
    anyhow::bail!("{failure} ({status})")
}

/// The new process, killed when dropped unless [`keep`](Self::keep) was called.
struct Killed(Option<Child>);

impl Killed {
    /// Lets the process run on, and returns its PID.
    fn keep(&mut self) -> anyhow::Result<u32> {
        let child = self.0.take().context("the new process is gone")?;
        child.id().context("the new process has exited")
    }

    /// Gives the process `patience` to exit, then kills it, and says how it ended.
    async fn end(&mut self, patience: Duration) -> String {
        let Some(child) = self.0.as_mut() else {
            return "gone".to_owned();
        };
        let exited = tokio::time::timeout(patience, child.wait()).await;
        let status = match exited {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(error)) => format!("cannot wait for it: {error}"),
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
    /// Duplicates `fds`, in order, to the lowest free block of consecutive numbers above 2.
    fn place(fds: &[BorrowedFd<'_>]) -> std::io::Result<Self> {
        let mut floor = 3;
        for _ in 0..PLACEMENT_ATTEMPTS {
            let mut block = Self {
                first: floor,
                descriptors: Vec::with_capacity(fds.len()),
            };
            for fd in fds {
                let wanted = block.first + block.descriptors.len() as RawFd;
                let placed = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD(wanted))?;
                block.descriptors.push(placed);
                if block.descriptors.len() == 1 {
                    block.first = placed;
                } else if placed != wanted {
                    // Taken by something else: start again above it.
                    floor = placed + 1;
                    break;
                }
            }
            if block.descriptors.len() == fds.len() && block.is_consecutive() {
                return Ok(block);
            }
        }
        Err(std::io::Error::other(
            "no block of consecutive free descriptors",
        ))
    }

    fn is_consecutive(&self) -> bool {
        self.descriptors
            .iter()
            .enumerate()
            .all(|(i, fd)| *fd == self.first + i as RawFd)
    }
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
}
