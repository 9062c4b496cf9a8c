//! Log lines to the local syslog socket (`/dev/log`; on a systemd machine that socket is the
//! journal's), one datagram per line in the form local daemons take:
//! `<PRIORITY>pgbastion[PID]: line`, facility `daemon`, severity from the line's level.
//! A line that cannot be sent is dropped, never a reason to stop serving.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::Level;

/// Where local syslog daemons (and journald) listen.
pub const DEV_LOG: &str = "/dev/log";

/// The facility `daemon` (3), shifted as RFC 3164 wants.
const FACILITY_DAEMON: u8 = 3 << 3;

/// Longer lines are cut: datagram sockets refuse very large messages.
const MAX_DATAGRAM: usize = 8192;

/// A sender of log lines to a syslog socket.
#[derive(Debug)]
pub struct Syslog {
    socket: UnixDatagram,
    path: PathBuf,
    pid: u32,
}

impl Syslog {
    /// A sender to the socket at `path`; fails when there is no socket there.
    pub fn connect(path: &Path) -> io::Result<Self> {
        if !std::fs::metadata(path)?.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a socket", path.display()),
            ));
        }
        // Sending each line to the path (not connecting once) survives a restart of the
        // syslog daemon, which makes a new socket at the same path.
        let socket = UnixDatagram::unbound()?;
        // A stalled syslog daemon must not stall the sessions that log: a line that does not
        // fit in the socket's queue is dropped.
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            path: path.to_owned(),
            pid: std::process::id(),
        })
    }

    /// Sends one formatted line (its trailing newline dropped) at `level`.
    pub fn send(&self, level: Level, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut datagram = format!("<{}>pgbastion[{}]: ", priority(level), self.pid).into_bytes();
        let room = MAX_DATAGRAM.saturating_sub(datagram.len());
        let mut cut = line.len().min(room);
        // Never half a UTF-8 character.
        while cut < line.len() && cut > 0 && (line[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        datagram.extend_from_slice(&line[..cut]);
        // Nowhere to report a failure: the log is what failed.
        let _ = self.socket.send_to(&datagram, &self.path);
    }
}

/// The syslog priority of a line: facility `daemon` and the level's severity.
fn priority(level: Level) -> u8 {
    let severity = match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    };
    FACILITY_DAEMON | severity
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket standing in for the syslog daemon, and a sender to it.
    fn daemon() -> (tempfile::TempDir, UnixDatagram, Syslog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let syslog = Syslog::connect(&path).unwrap();
        (dir, server, syslog)
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = vec![0; 65536];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn lines_arrive_as_daemon_facility_datagrams_with_the_level_as_severity() {
        let (_dir, server, syslog) = daemon();
        syslog.send(Level::WARN, b"backend unreachable\n");
        syslog.send(Level::INFO, b"listening");
        let pid = std::process::id();
        assert_eq!(
            receive(&server),
            format!("<28>pgbastion[{pid}]: backend unreachable")
        );
        assert_eq!(receive(&server), format!("<30>pgbastion[{pid}]: listening"));
    }

    #[test]
    fn long_lines_are_cut_to_one_datagram() {
        let (_dir, server, syslog) = daemon();
        syslog.send(Level::ERROR, &vec![b'x'; 100_000]);
        let line = receive(&server);
        assert_eq!(line.len(), MAX_DATAGRAM);
        assert!(line.starts_with("<27>pgbastion["));
    }

    #[test]
    fn no_socket_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Syslog::connect(&dir.path().join("missing")).is_err());
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(Syslog::connect(&file).is_err());
    }
}
