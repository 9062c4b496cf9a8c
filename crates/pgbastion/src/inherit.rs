//! The new process's side of a zero-downtime upgrade (the old one's is [`crate::upgrade`]):
//! the listening sockets it inherits, and the channel on which it tells the old process that
//! it serves (`READY`, once its accept loops run) or why it could not start (`FAILED …`).
//! After `READY` the old process answers `GO` (it hands over: this process takes the pid file
//! and tells the service manager it is the main process) or `ABORT` (it called the upgrade
//! off: this process exits without touching either).
//!
//! The descriptors come as systemd's socket activation passes them (`LISTEN_FDS` descriptors
//! from `LISTEN_FDS_FIRST_FD` on, read by the `listenfd` crate, which also checks that each
//! is a socket of the expected kind), the last one being the channel; [`UPGRADE_FROM`] says
//! that they come from an old pgbastion, and which.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

/// The environment variable that marks a process started by an upgrade: the old process's
/// PID.
pub const UPGRADE_FROM: &str = "PGBASTION_UPGRADE_FROM";

/// How long writing to the channel may take (the old process reads it at once).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the old process may take to answer READY (it does at once).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest answer read from the old process.
const MAX_ANSWER: u64 = 16;

/// What this process inherited from the pgbastion it replaces.
#[derive(Debug)]
pub struct Inherited {
    /// The old process.
    parent: i32,
    /// Its listening sockets, each with its local address, until taken.
    sockets: Vec<(SocketAddr, std::net::TcpListener)>,
    /// Where to report ready or failed.
    channel: UnixStream,
}

impl Inherited {
    /// Takes the sockets and the channel the environment describes, and removes their
    /// variables (so that nothing this process starts inherits them); `None` when this
    /// process was not started by an upgrade. Call it before any other thread runs: it
    /// edits the environment.
    pub fn take() -> anyhow::Result<Option<Self>> {
        let Some(parent) = std::env::var_os(UPGRADE_FROM) else {
            return Ok(None);
        };
        std::env::remove_var(UPGRADE_FROM);
        let parent: i32 = parent
            .to_str()
            .and_then(|pid| pid.parse().ok())
            .with_context(|| format!("{UPGRADE_FROM} holds no process ID: {parent:?}"))?;
        anyhow::ensure!(
            parent == nix::unistd::getppid().as_raw(),
            "{UPGRADE_FROM}={parent} is not the process that started this one"
        );
        // Removes LISTEN_FDS and LISTEN_PID from the environment; the rest goes after it.
        let mut passed = listenfd::ListenFd::from_env();
        for name in ["LISTEN_FDS_FIRST_FD", "LISTEN_FDNAMES"] {
            std::env::remove_var(name);
        }
        let last = passed
            .len()
            .checked_sub(1)
            .context("started by an upgrade, but LISTEN_FDS passes no descriptor")?;
        let channel = passed
            .take_custom(
                last,
                nix::libc::AF_UNIX,
                nix::libc::SOCK_STREAM,
                "Unix stream socket",
            )
            .context("the upgrade channel (the last descriptor)")?
            .context("the upgrade channel is missing")?;
        let sockets = (0..last)
            .map(|index| listening_socket(&mut passed, index))
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(Self {
            parent,
            sockets,
            channel,
        }))
    }

    /// The old process's PID (its pid file is ours to take over).
    pub fn parent(&self) -> i32 {
        self.parent
    }

    /// The inherited socket bound to `address`, if any.
    pub fn socket_for(&mut self, address: SocketAddr) -> Option<std::net::TcpListener> {
        let index = self.sockets.iter().position(|(a, _)| *a == address)?;
        Some(self.sockets.swap_remove(index).1)
    }

    /// Tells the old process that this one serves (call it once the accept loops run), closes
    /// the sockets no listener took, and waits for the old process's answer: true when it
    /// hands over (`GO`: this process then takes the pid file and tells the service manager
    /// it is the main process), false when it calls the upgrade off (`ABORT`), closes the
    /// channel or does not answer in time (then this process must exit without touching
    /// either: the old one serves on).
    pub async fn ready(mut self) -> bool {
        for (address, _) in self.sockets.drain(..) {
            tracing::info!(%address, "an inherited socket no listener is configured for is closed");
        }
        let answered = tokio::time::timeout(ANSWER_TIMEOUT, async {
            self.channel.set_nonblocking(true)?;
            let mut channel = tokio::net::UnixStream::from_std(self.channel)?;
            channel.write_all(b"READY\n").await?;
            let mut answer = Vec::new();
            tokio::io::BufReader::new((&mut channel).take(MAX_ANSWER))
                .read_until(b'\n', &mut answer)
                .await?;
            Ok::<_, std::io::Error>(answer)
        })
        .await;
        match answered {
            Ok(Ok(answer)) if answer == b"GO\n" => true,
            Ok(Ok(answer)) if answer == b"ABORT\n" => {
                tracing::warn!("upgrade: the old process called the upgrade off");
                false
            }
            Ok(Ok(answer)) => {
                let answer = String::from_utf8_lossy(&answer);
                tracing::warn!(answer = %answer.trim_end(), "upgrade: no GO from the old process");
                false
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "upgrade: cannot hear from the old process");
                false
            }
            Err(_) => {
                tracing::warn!("upgrade: the old process did not answer within {ANSWER_TIMEOUT:?}");
                false
            }
        }
    }

    /// Tells the old process why this one could not start.
    pub fn failed(mut self, error: &anyhow::Error) {
        let reason = format!("{error:#}").replace('\n', " ");
        self.report(&format!("FAILED {reason}"));
    }

    fn report(&mut self, line: &str) {
        let sent = self
            .channel
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .and_then(|()| writeln!(self.channel, "{line}"));
        if let Err(error) = sent {
            tracing::warn!(%error, "cannot report to the old process");
        }
    }
}

/// The TCP listening socket at `index`, with its address.
fn listening_socket(
    passed: &mut listenfd::ListenFd,
    index: usize,
) -> anyhow::Result<(SocketAddr, std::net::TcpListener)> {
    let socket = passed
        .take_tcp_listener(index)
        .with_context(|| format!("inherited descriptor {index}"))?
        .with_context(|| format!("inherited descriptor {index} is missing"))?;
    let address = socket
        .local_addr()
        .with_context(|| format!("inherited descriptor {index}"))?;
    Ok((address, socket))
}
