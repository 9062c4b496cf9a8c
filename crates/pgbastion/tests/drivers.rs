#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Drivers that do not use libpq (asyncpg, psycopg, node-postgres), each running the same
//! script (tests/drivers/) straight at PostgreSQL and through the pgbastion binary: connect
//! (plain and TLS), an error then a good query, cancel then a new statement at once,
//! disconnect, prepared statements, NOTIFY from one's own session, COPY. Any difference from
//! the direct run fails the test. `tests/drivers/install.sh` installs the drivers.

#[path = "common/binary.rs"]
mod binary;
mod common;

use common::drivers::run_script;

use binary::{free_ports, Bastion};

use pgbastion_testkit::{Cluster, PasswordEncryption, TestCa};

const USER: &str = "app";
const PASSWORD: &str = "driver-check-pw";

#[test]
fn asyncpg_psycopg_and_node_postgres_see_pgbastion_as_they_see_postgresql() {
    let ca = TestCa::new("driver checks CA").unwrap();
    let cluster = Cluster::builder()
        .tls(&ca)
        .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
        .user(USER, PASSWORD, PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_cert(dir.path(), "ca").unwrap();
    let server = ca.server_cert(&["localhost"]).unwrap();
    let port = free_ports(1)[0];
    let config = format!(
        r#"
[[listener]]
address = "127.0.0.1:{port}"
tls = {{ cert = "server.crt", key = "server.key" }}

[[user]]
name = "{USER}"
password = "{PASSWORD}"

[[route]]
auth = "scram"
backend = "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable"
"#,
        cluster.port()
    );
    let files = [
        ("server.crt", server.cert_pem.as_str()),
        ("server.key", server.key_pem.as_str()),
    ];
    let proxy = Bastion::start(&config, &files, &[], &[port]);
    let mut differences = Vec::new();
    for (program, script) in [
        ("python3", "asyncpg_check.py"),
        ("python3", "psycopg_check.py"),
        ("node", "pg_check.js"),
    ] {
        let direct = run_script(
            program,
            script,
            cluster.port(),
            (USER, PASSWORD),
            Some(&ca_file),
        );
        let through = run_script(program, script, port, (USER, PASSWORD), Some(&ca_file));
        let checks = direct.as_object().unwrap();
        assert_eq!(checks.len(), 8, "{script}: {direct:#}");
        for (check, value) in checks {
            // The scripts report an exception as a string starting with "raised": directly
            // at PostgreSQL, none may happen, or the comparison would prove nothing.
            assert!(
                !value.as_str().is_some_and(|s| s.starts_with("raised")),
                "{script} {check} failed straight at PostgreSQL: {value}"
            );
            if through.get(check) != Some(value) {
                differences.push(format!(
                    "{script} {check}: direct {value}, through pgbastion {}",
                    through.get(check).unwrap_or(&serde_json::Value::Null)
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    proxy.finish(&[PASSWORD]);
}
