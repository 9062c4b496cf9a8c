//! One `initdb` per test process, copied for every cluster; leftovers of killed runs reaped.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::os::{self, find_bindir, run_checked, server_command};
use crate::TestkitError;

/// The per-process base directory and the template data directory inside it.
pub struct Template {
    /// `/tmp/pgbtk-<pid>`: every cluster of this process lives below it.
    pub base: PathBuf,
    /// The initdb'd data directory to copy.
    pub data: PathBuf,
    /// Where the binaries are.
    pub bindir: PathBuf,
}

static TEMPLATE: OnceLock<Result<Template, String>> = OnceLock::new();

/// The template, created on first use.
pub fn template() -> Result<&'static Template, TestkitError> {
    TEMPLATE
        .get_or_init(|| create().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| TestkitError::Template(e.clone()))
}

fn create() -> Result<Template, TestkitError> {
    let bindir = find_bindir()?;
    if os::is_root() {
        os::ensure_server_user()?;
    }
    reap_leftovers();
    let base = PathBuf::from(format!("/tmp/pgbtk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    std::fs::write(base.join("owner.pid"), std::process::id().to_string())?;
    let data = base.join("template");
    std::fs::create_dir(&data)?;
    os::give_to_server_user(&data)?;
    run_checked(
        server_command(&bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]),
    )?;
    Ok(Template { base, data, bindir })
}

/// Removes the directories of test processes that died without cleaning up, stopping any
/// server they left running.
fn reap_leftovers() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("pgbtk-"));
        if is_ours && owner_is_dead(&path) {
            kill_postmasters(&path);
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn owner_is_dead(base: &Path) -> bool {
    let pid = std::fs::read_to_string(base.join("owner.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    match pid {
        Some(pid) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        None => false,
    }
}

fn kill_postmasters(base: &Path) {
    let clusters = std::fs::read_dir(base).into_iter().flatten().flatten();
    for cluster in clusters {
        let pid = std::fs::read_to_string(cluster.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
