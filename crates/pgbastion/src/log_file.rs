//! The log file: appended to, reopened on SIGUSR1 so that logrotate (or an operator) can
//! move it away and have pgbastion write a new one, and never a reason to stop serving: a
//! failed write (a full disk, a removed mount) loses that line, says so once on stderr, and
//! the next write tries again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A log file that can be reopened at its path.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    /// Whether the last write failed (so a failure streak is reported once).
    failing: bool,
}

impl LogFile {
    /// Opens (creating with mode 0640, else appending to) the file at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(State {
                file: open_append(path)?,
                failing: false,
            }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path afresh and writes there from now on; the old file (moved away, say)
    /// keeps what it has. On error the old file stays in use.
    pub fn reopen(&self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        let mut state = self.lock();
        state.file = file;
        state.failing = false;
        Ok(())
    }

    /// Appends one formatted line; failures are reported on stderr, once per streak, and
    /// otherwise ignored.
    pub fn append(&self, line: &[u8]) {
        let mut state = self.lock();
        match state.file.write_all(line) {
            Ok(()) => state.failing = false,
            Err(error) if !state.failing => {
                state.failing = true;
                eprintln!(
                    "pgbastion: cannot write to the log file {}: {error}; log lines are lost \
                     until a write succeeds again",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while writing leaves a usable file handle: keep logging.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_after_a_reopen_go_to_a_new_file_and_the_moved_one_keeps_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbastion.log");
        let log = LogFile::open(&path).unwrap();
        log.append(b"first\n");
        let moved = dir.path().join("pgbastion.log.1");
        std::fs::rename(&path, &moved).unwrap();
        log.append(b"second\n");
        log.reopen().unwrap();
        log.append(b"third\n");
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "first\nsecond\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "third\n");
    }

    #[test]
    fn a_failed_reopen_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbastion.log");
        let log = LogFile::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(log.reopen().is_err());
        log.append(b"still written\n");
    }

    #[test]
    fn write_errors_do_not_panic() {
        let log = LogFile {
            path: PathBuf::from("/dev/full"),
            state: Mutex::new(State {
                file: OpenOptions::new().write(true).open("/dev/full").unwrap(),
                failing: false,
            }),
        };
        log.append(b"lost\n");
        log.append(b"lost again\n");
        assert!(log.lock().failing);
    }
}
