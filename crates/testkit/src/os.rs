//! Finding the PostgreSQL binaries and running them as an unprivileged user when we are root
//! (PostgreSQL refuses to run as root, and CI runs as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::TestkitError;

/// The OS user servers run as when the tests run as root.
pub const SERVER_OS_USER: &str = "postgres";

/// Where `initdb`, `pg_ctl` and `postgres` live.
pub fn find_bindir() -> Result<PathBuf, TestkitError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PGBASTION_PG_BINDIR").map(PathBuf::from) {
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(TestkitError::BinariesNotFound)
        };
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    versioned.sort_by_key(|p| {
        let version = p
            .parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str());
        version.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    from_pg_config
        .into_iter()
        .chain(versioned.into_iter().rev())
        .chain(on_path)
        .find(|dir| has_server(dir))
        .ok_or(TestkitError::BinariesNotFound)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Makes sure the unprivileged server user exists (root only).
pub fn ensure_server_user() -> Result<(), TestkitError> {
    if nix::unistd::User::from_name(SERVER_OS_USER)?.is_some() {
        return Ok(());
    }
    let output = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SERVER_OS_USER,
        ])
        .output()?;
    // Another test process may have created it meanwhile.
    if output.status.success() || nix::unistd::User::from_name(SERVER_OS_USER)?.is_some() {
        Ok(())
    } else {
        Err(TestkitError::Command {
            command: "useradd postgres".into(),
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Gives `path` (recursively) to the server user when running as root.
pub fn give_to_server_user(path: &Path) -> Result<(), TestkitError> {
    if !is_root() {
        return Ok(());
    }
    let user =
        nix::unistd::User::from_name(SERVER_OS_USER)?.ok_or(TestkitError::BinariesNotFound)?;
    run_checked(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(path),
    )
    .map(drop)
}

/// A command for a server binary, run as the server user when we are root.
pub fn server_command(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", SERVER_OS_USER, "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Runs `command`, failing with its stderr when it exits non-zero.
pub fn run_checked(command: &mut Command) -> Result<Output, TestkitError> {
    let output = command.output()?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(TestkitError::Command {
            command: format!("{command:?}"),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}
