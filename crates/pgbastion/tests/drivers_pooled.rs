#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Drivers that do not use libpq (asyncpg, psycopg, node-postgres) through a transaction pool
//! of 2 backends with 20 concurrent clients: each runs its script (tests/drivers/pool_*)
//! straight at PostgreSQL, then through a pooled listener of the pgbastion binary, and the
//! two JSON reports must be equal. The scripts check prepared statements (named, unnamed,
//! the drivers' caches, more than a backend's cache holds), DEALLOCATE and DISCARD ALL,
//! session parameters, a failing pipeline, COPY, LISTEN and cancel: docs/pooling.md.
//! While the pooled run goes on, the cluster's connections of the user are sampled: the pool
//! must hold it to its size. `tests/drivers/install.sh` installs the drivers.

#[path = "common/binary.rs"]
mod binary;
mod common;

use common::drivers::run_script;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use binary::{free_ports, Bastion};

use pgbastion_testkit::{Cluster, PasswordEncryption};

const USER: &str = "app";
const PASSWORD: &str = "pooled-driver-check-pw";
const POOL_SIZE: usize = 2;

/// The most connections of [`USER`] the cluster had at any sample while `work` ran.
fn most_connections<T>(cluster: &Cluster, work: impl FnOnce() -> T) -> (T, usize) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut most = 0;
            while !done.load(Ordering::Relaxed) {
                let count = cluster
                    .query(&format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{USER}'"
                    ))
                    .unwrap();
                most = most.max(count.trim().parse().unwrap());
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        (result, sampler.join().unwrap())
    })
}

/// Runs `script` straight at PostgreSQL and through a pool of [`POOL_SIZE`] (twice: as
/// configured by default, and with unnamed statements cached), and compares.
/// Every script's clients share one pool: startup parameters, `-c` settings in `options`
/// included, are set per client (docs/pooling.md, Pools).
fn same_through_the_pool(program: &str, script: &str) {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
        .user(USER, PASSWORD, PasswordEncryption::ScramSha256)
        // The direct run opens up to 22 connections at once.
        .config("max_connections", "100")
        .start()
        .unwrap();
    // The scripts create their tables (PostgreSQL 15 no longer lets anyone create in public).
    cluster
        .execute_sql(&format!("GRANT CREATE ON SCHEMA public TO {USER}"))
        .unwrap();
    let direct = run_script(program, script, cluster.port(), (USER, PASSWORD), None);
    for (check, value) in direct.as_object().unwrap() {
        // An exception is reported as a string starting with "raised": straight at
        // PostgreSQL none may happen, or the comparison would prove nothing.
        assert!(
            !value.as_str().is_some_and(|s| s.starts_with("raised")),
            "{script} {check} failed straight at PostgreSQL: {value}"
        );
    }

    // Then with the pool's unnamed statements cached (docs/pooling.md): the drivers that
    // send unnamed statements (node-postgres, psycopg) must not see a difference either.
    for pool_extra in ["", ", cache_unnamed = true"] {
        through_the_pool(program, script, &cluster, &direct, pool_extra);
    }
}

/// Runs `script` through a pool of [`POOL_SIZE`] (`pool_extra` added to its settings) in
/// front of `cluster`, and compares with what it saw straight at PostgreSQL (`direct`).
fn through_the_pool(
    program: &str,
    script: &str,
    cluster: &Cluster,
    direct: &serde_json::Value,
    pool_extra: &str,
) {
    let pools = 1;
    let port = free_ports(1)[0];
    let config = format!(
        r#"
[[listener]]
address = "127.0.0.1:{port}"
mode = "pooled"

[[user]]
name = "{USER}"
password = "{PASSWORD}"

[[route]]
auth = "scram"
backend = "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable"
pool = {{ mode = "transaction", size = {POOL_SIZE}, checkout_timeout = "30s"{pool_extra} }}
"#,
        cluster.port()
    );
    let proxy = Bastion::start(&config, &[], &[], &[port]);
    let (through, most) = most_connections(cluster, || {
        run_script(program, script, port, (USER, PASSWORD), None)
    });

    let mut differences = Vec::new();
    let checks = direct.as_object().unwrap();
    for (check, value) in checks {
        if through.get(check) != Some(value) {
            differences.push(format!(
                "{script} {check} (pool{pool_extra}): direct {value}, through the pool {}",
                through.get(check).unwrap_or(&serde_json::Value::Null)
            ));
        }
    }
    assert_eq!(
        through.as_object().unwrap().len(),
        checks.len(),
        "{script}: {through:#}"
    );
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    // One more than the pools hold: a backend being closed (after a failed COPY, say) may
    // still be listed while its replacement logs in.
    assert!(
        most <= POOL_SIZE * pools + 1,
        "{script}: the cluster saw {most} connections of {USER} through {pools} pool(s) of {POOL_SIZE}"
    );
    proxy.finish(&[PASSWORD]);
}

#[test]
fn asyncpg_through_a_transaction_pool_of_two_sees_what_it_sees_at_postgresql() {
    same_through_the_pool("python3", "pool_asyncpg.py");
}

#[test]
fn psycopg_through_a_transaction_pool_of_two_sees_what_it_sees_at_postgresql() {
    same_through_the_pool("python3", "pool_psycopg.py");
}

#[test]
fn node_postgres_through_a_transaction_pool_of_two_sees_what_it_sees_at_postgresql() {
    same_through_the_pool("node", "pool_pg.js");
}
