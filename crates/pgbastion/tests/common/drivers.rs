//! Running the driver scripts of tests/drivers/ (installed by tests/drivers/install.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where tests/drivers/install.sh puts the Python packages.
fn python_path() -> PathBuf {
    let deps = super::root().join("tests/drivers/.deps/python");
    assert!(
        deps.join("asyncpg").is_dir() && deps.join("psycopg").is_dir(),
        "the Python drivers are missing: run tests/drivers/install.sh"
    );
    deps
}

/// Runs one driver's `script` with `program` against 127.0.0.1:`port` as `user`/`password`
/// (and `ca` as the CA for its TLS checks, when it has some); returns its JSON report.
pub fn run_script(
    program: &str,
    script: &str,
    port: u16,
    (user, password): (&str, &str),
    ca: Option<&Path>,
) -> serde_json::Value {
    let drivers = super::root().join("tests/drivers");
    if program == "node" {
        assert!(
            drivers.join("node_modules/pg").is_dir(),
            "node-postgres is missing: run tests/drivers/install.sh"
        );
    }
    let mut command = Command::new(program);
    command
        .arg(drivers.join(script))
        .env("PYTHONPATH", python_path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PGB_HOST", "127.0.0.1")
        .env("PGB_PORT", port.to_string())
        .env("PGB_USER", user)
        .env("PGB_PASSWORD", password)
        .env("PGB_DB", "postgres");
    if let Some(ca) = ca {
        command.env("PGB_CA", ca);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{script} printed {stdout}: {e}"))
}
