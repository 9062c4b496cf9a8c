//! Service manager notifications (systemd's `sd_notify` protocol): when `NOTIFY_SOCKET` is
//! set, pgbastion tells the manager it is ready (every listener bound), reloading (a SIGHUP
//! or an upgrade started) and ready again (after an upgrade: from the new main process),
//! and stopping, so that a `Type=notify` unit starts dependents and
//! reports reloads at the right moments.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the socket named by the variable (a
//! path, or an abstract name written with a leading `@`). It is written here over
//! `std::os::unix::net::UnixDatagram` rather than with a crate: it is a few lines, and so
//! pgbastion does not link libsystemd. A notification that cannot be sent is logged and
//! otherwise ignored: the manager's bookkeeping is never a reason to stop serving.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable naming the manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends notifications to the service manager, or does nothing when none asked for them.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// A notifier for the socket named in `NOTIFY_SOCKET`; a silent one when it is unset. A
    /// value that names no usable socket is logged and gives a silent notifier.
    pub fn from_env() -> Self {
        let Some(name) = std::env::var_os(NOTIFY_SOCKET) else {
            return Self { target: None };
        };
        match open(&name) {
            Ok(target) => Self {
                target: Some(target),
            },
            Err(error) => {
                tracing::warn!(socket = ?name, %error, "cannot use NOTIFY_SOCKET; the service manager will not be notified");
                Self { target: None }
            }
        }
    }

    /// `READY=1`: every listener is bound (after start, or when a reload is done).
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    /// `MAINPID=` this process and `READY=1`: a new process that took over from the old one
    /// in an upgrade serves; the manager follows it as the service's main process (the unit
    /// needs `NotifyAccess=all` to take this from a process it did not start).
    pub fn ready_as_main(&self, status: &str) {
        let pid = std::process::id();
        self.send(&format!("MAINPID={pid}\nREADY=1\nSTATUS={status}\n"));
    }

    /// `RELOADING=1` with the monotonic time, as `Type=notify-reload` units need: a reload
    /// starts; [`ready`](Self::ready) says when it is done.
    pub fn reloading(&self) {
        let usec = monotonic_usec();
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading\n"
        ));
    }

    /// `MAINPID=` this process and `STOPPING=1`: the process that took over in an upgrade
    /// died while this one drains; the manager follows this one again, to its end.
    pub fn stopping_as_main(&self, status: &str) {
        let pid = std::process::id();
        self.send(&format!("MAINPID={pid}\nSTOPPING=1\nSTATUS={status}\n"));
    }

    /// `STOPPING=1`: shutdown has started.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}\n"));
    }

    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(error) = socket.send_to_addr(message.as_bytes(), addr) {
            tracing::warn!(%error, "cannot notify the service manager");
        }
    }
}

/// An unbound datagram socket and the manager's address.
fn open(name: &OsString) -> io::Result<(UnixDatagram, SocketAddr)> {
    let bytes = name.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(name)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract name starting with @",
            ))
        }
    };
    Ok((UnixDatagram::unbound()?, addr))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares reload times with.
fn monotonic_usec() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        let seconds = u64::try_from(t.tv_sec()).unwrap_or(0);
        let micros = u64::try_from(t.tv_nsec() / 1_000).unwrap_or(0);
        seconds.saturating_mul(1_000_000).saturating_add(micros)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifications_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let by_path = UnixDatagram::bind(&path).unwrap();
        let abstract_name = format!("pgbastion-notify-test-{}", std::process::id());
        let by_name =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&abstract_name).unwrap())
                .unwrap();
        for socket in [&by_path, &by_name] {
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
        }
        let notifier = Notifier {
            target: Some(open(&path.clone().into_os_string()).unwrap()),
        };
        notifier.ready("serving");
        assert_eq!(receive(&by_path), "READY=1\nSTATUS=serving\n");
        let notifier = Notifier {
            target: Some(open(&OsString::from(format!("@{abstract_name}"))).unwrap()),
        };
        notifier.stopping("draining");
        assert_eq!(receive(&by_name), "STOPPING=1\nSTATUS=draining\n");
        notifier.ready_as_main("serving");
        assert_eq!(
            receive(&by_name),
            format!("MAINPID={}\nREADY=1\nSTATUS=serving\n", std::process::id())
        );
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let notifier = Notifier {
            target: Some(open(&path.into_os_string()).unwrap()),
        };
        let before = monotonic_usec();
        notifier.reloading();
        let message = receive(&socket);
        let usec: u64 = message
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(message.starts_with("RELOADING=1\n"), "{message}");
        assert!(usec >= before && usec <= monotonic_usec(), "{message}");
    }

    #[test]
    fn a_relative_socket_name_is_refused() {
        assert!(open(&OsString::from("notify.sock")).is_err());
    }
}
