//! The pid file (`pid_file`): checked before binding, so a second pgbastion started by
//! mistake refuses to start instead of running beside the first; written once every listener
//! is bound (atomically: a temporary file renamed over the path, so a reader never sees half
//! a number); removed when pgbastion exits.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// What the process name of a pgbastion is (`/proc/PID/comm`).
const PROCESS_NAME: &str = "pgbastion";

/// Refuses when `path` names a live pgbastion other than this process and `predecessor`
/// (the process this one replaces in an upgrade, whose file it takes over); a file left by a
/// process that is gone (or that names another program, the PID having been reused) is
/// noted in the log and will be replaced.
pub fn check(path: &Path, predecessor: Option<i32>) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read the pid file {}", path.display()))
        }
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        tracing::warn!(path = %path.display(), "the pid file holds no process ID; replacing it");
        return Ok(());
    };
    if predecessor == Some(pid) {
        tracing::info!(path = %path.display(), old_pid = pid, "taking over the pid file of the process this one replaces");
        return Ok(());
    }
    if pid > 0 && pid != own_pid() && is_live_pgbastion(pid) {
        anyhow::bail!(
            "the pid file {} names pgbastion process {pid}, which is running: stop it first \
             (kill -TERM {pid}), or give this one another pid_file",
            path.display()
        );
    }
    tracing::info!(path = %path.display(), stale_pid = pid, "replacing a stale pid file (its process is gone)");
    Ok(())
}

/// The pid file of this process; removed when dropped (at exit), unless another process has
/// written its own number there since.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's ID to `path`, atomically.
    pub fn write(path: &Path) -> anyhow::Result<Self> {
        let file = Self {
            path: path.to_owned(),
        };
        file.rewrite()?;
        Ok(file)
    }

    /// Writes this process's ID to the file again, atomically (after an upgrade whose new
    /// process wrote its own and then died).
    pub fn rewrite(&self) -> anyhow::Result<()> {
        let path = &self.path;
        let name = path
            .file_name()
            .with_context(|| format!("pid_file {} names no file", path.display()))?;
        let mut temporary = path.to_owned();
        temporary.set_file_name(format!(
            ".{}.{}.{:016x}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_nanos() as u64)
        ));
        write_new(&temporary)
            .and_then(|()| std::fs::rename(&temporary, path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&temporary);
            })
            .with_context(|| format!("cannot write the pid file {}", path.display()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            if let Err(error) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), %error, "cannot remove the pid file");
            }
        }
    }
}

/// Writes a file that must not exist yet (and is never a symbolic link planted there), so
/// that nobody can make pgbastion overwrite another file through the temporary name.
fn write_new(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()
}

fn own_pid() -> i32 {
    Pid::this().as_raw()
}

/// Whether process `pid` exists and is a pgbastion.
fn is_live_pgbastion(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(name) => name.trim_end() == PROCESS_NAME,
        // Without /proc the name cannot be checked: a live process counts.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_this_process_id_and_goes_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbastion.pid");
        let file = PidFile::write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn a_file_rewritten_by_another_process_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbastion.pid");
        let file = PidFile::write(&path).unwrap();
        std::fs::write(&path, "1\n").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
    }

    #[test]
    fn a_file_taken_back_holds_this_process_id_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbastion.pid");
        let file = PidFile::write(&path).unwrap();
        std::fs::write(&path, "1\n").unwrap();
        file.rewrite().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn stale_garbage_and_foreign_files_do_not_block_a_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbastion.pid");
        check(&path, None).unwrap();
        std::fs::write(&path, "not a number").unwrap();
        check(&path, None).unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        std::fs::write(&path, format!("{}\n", gone.id())).unwrap();
        check(&path, None).unwrap();
        // The process that started this test is alive, and not a pgbastion.
        let parent = std::os::unix::process::parent_id();
        std::fs::write(&path, format!("{parent}\n")).unwrap();
        check(&path, None).unwrap();
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        check(&path, None).unwrap();
    }
}
