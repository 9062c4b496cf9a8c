#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! The admin console (`dbname=pgbastion`), against a real cluster, the real binary and real
//! clients (tokio-postgres `simple_query`, psql): every SHOW answers rows that match what the
//! test did, KILL_CLIENT ends that client only, KILL a database's, PAUSE holds a pooled
//! client until RESUME, RELOAD reads the changed file (and refuses a bad one), SHUTDOWN
//! ends the process with status 0, non-admins and wrong passwords are refused (the latter
//! the same way whoever the name is). Routes whose client and backend database names differ
//! show that SHOW POOLS counts each pool once, and that KILL and PAUSE take either name; the
//! console goes on answering through a drain; SHOW STATS keeps at most 1,000 names.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use pgbastion_testkit::Cluster;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

#[path = "common/binary.rs"]
mod binary;

use binary::{free_ports, within, Bastion};

/// How long a condition polled on a loaded machine may take to hold.
const DEADLINE: Duration = Duration::from_secs(60);

const ADMIN_PASSWORD: &str = "ops-secret-1";
const APP_PASSWORD: &str = "app-secret-2";
const BACKEND_PASSWORD: &str = "backend-secret-3";

/// A cluster that trusts local TCP clients.
fn cluster() -> Cluster {
    Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap()
}

/// A transparent and a pooled listener, users `ops` (admin) and `app`, and SCRAM routes
/// for `databases`, pooled in transaction mode, to the cluster's `postgres` database.
fn config(cluster: &Cluster, ports: &[u16], databases: &[&str]) -> String {
    let mut config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n\n\
         [[listener]]\naddress = \"127.0.0.1:{}\"\nmode = \"pooled\"\n\n\
         [[user]]\nname = \"ops\"\npassword = \"{ADMIN_PASSWORD}\"\n\n\
         [[user]]\nname = \"app\"\npassword = \"{APP_PASSWORD}\"\n\n\
         [admin]\nusers = [\"ops\"]\n\n",
        ports[0], ports[1]
    );
    for database in databases {
        config.push_str(&format!(
            "[[route]]\nmatch = {{ database = \"{database}\" }}\nauth = \"scram\"\n\
             backend = \"postgres://{}:{BACKEND_PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable\"\n\
             pool = {{ mode = \"transaction\", size = 2 }}\n\n",
            cluster.superuser(),
            cluster.port()
        ));
    }
    config
}

/// pgbastion with [`config`] for `postgres` on two free ports (transparent, pooled).
fn start(cluster: &Cluster) -> (Bastion, Vec<u16>) {
    let ports = free_ports(2);
    let bastion = Bastion::start(&config(cluster, &ports, &["postgres"]), &[], &[], &ports);
    (bastion, ports)
}

/// The task driving a client's connection: its result says how the connection ended.
type Driver = tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>;

/// A client through pgbastion on `port`, its connection driven by a task.
async fn connect_driven(
    port: u16,
    (user, password): (&str, &str),
    database: &str,
    application_name: &str,
) -> Result<(Client, Driver), tokio_postgres::Error> {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user={user} password={password} dbname={database} \
         application_name={application_name} sslmode=disable"
    );
    let (client, connection) = within("connect", tokio_postgres::connect(&conninfo, NoTls)).await?;
    Ok((client, tokio::spawn(connection)))
}

async fn connect(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
    application_name: &str,
) -> Result<Client, tokio_postgres::Error> {
    let credentials = (user, password);
    let driven = connect_driven(port, credentials, database, application_name).await;
    driven.map(|(client, _)| client)
}

async fn app(port: u16, application_name: &str) -> Client {
    connect(port, "app", APP_PASSWORD, "postgres", application_name)
        .await
        .unwrap()
}

/// The SQLSTATE the server ended a connection with.
async fn ended_with(driver: Driver) -> String {
    let ended = within("the connection's end", driver).await.unwrap();
    let error = ended.expect_err("the server ended the connection");
    let db = error.as_db_error().unwrap_or_else(|| panic!("{error}"));
    db.code().code().to_owned()
}

async fn console(port: u16) -> Client {
    connect(port, "ops", ADMIN_PASSWORD, "pgbastion", "console")
        .await
        .unwrap()
}

/// The rows of a console command, as column → text (NULL left out).
async fn show(console: &Client, command: &str) -> Vec<HashMap<String, String>> {
    let messages = within(command, console.simple_query(command))
        .await
        .unwrap();
    messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| Some((c.name().to_owned(), row.get(i)?.to_owned())))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE of a command that must fail.
async fn refused(console: &Client, command: &str) -> (String, String) {
    let error = within(command, console.simple_query(command))
        .await
        .expect_err(command);
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("{command}: {error}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

async fn one(client: &Client) -> i64 {
    let rows = within("SELECT 1", client.simple_query("SELECT 1"))
        .await
        .unwrap();
    let row = rows.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    row.unwrap_or_else(|| panic!("{rows:?}"))
        .get(0)
        .unwrap()
        .parse()
        .unwrap()
}

fn number(row: &HashMap<String, String>, column: &str) -> u64 {
    row[column]
        .parse()
        .unwrap_or_else(|_| panic!("{column}: {row:?}"))
}

/// Polls `condition` (async) until it holds, or fails with `what`.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_answers_rows_that_match_what_the_clients_did() {
    let cluster = cluster();
    let (bastion, ports) = start(&cluster);
    let (plain, pooled) = (ports[0], ports[1]);
    let alpha = app(plain, "alpha").await;
    let beta = app(pooled, "beta").await;
    for _ in 0..3 {
        assert_eq!(one(&alpha).await, 1);
        assert_eq!(one(&beta).await, 1);
    }
    let admin = console(plain).await;

    let clients = show(&admin, "SHOW CLIENTS").await;
    assert_eq!(clients.len(), 3, "{clients:?}");
    let by_name = |name: &str| {
        clients
            .iter()
            .find(|c| c["application_name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {clients:?}"))
            .clone()
    };
    for (name, port) in [("alpha", plain), ("beta", pooled)] {
        let client = by_name(name);
        assert_eq!(
            (
                client["type"].as_str(),
                client["user"].as_str(),
                client["database"].as_str()
            ),
            ("C", "app", "postgres")
        );
        assert_eq!(client["addr"], "127.0.0.1");
        assert!(number(&client, "port") > 0);
        assert_eq!(number(&client, "local_port"), u64::from(port));
        assert_eq!(client["route"], "1");
    }
    let me = by_name("console");
    assert_eq!(
        (me["user"].as_str(), me["database"].as_str()),
        ("ops", "pgbastion")
    );
    assert!(
        !me.contains_key("route"),
        "the console has no route: {me:?}"
    );

    let pools = show(&admin, "SHOW POOLS").await;
    assert_eq!(
        pools.len(),
        1,
        "only the pooled listener's client made a pool: {pools:?}"
    );
    let pool = &pools[0];
    assert_eq!(pool["database"], "postgres");
    assert_eq!(pool["user"], cluster.superuser());
    assert_eq!(pool["pool_mode"], "transaction");
    assert_eq!(number(pool, "cl_waiting"), 0);
    assert_eq!(
        number(pool, "sv_active"),
        0,
        "beta is idle between transactions"
    );
    let open = number(pool, "sv_idle");
    assert!((1..=2).contains(&open), "{pool:?}");

    let servers = show(&admin, "SHOW SERVERS").await;
    assert_eq!(servers.len() as u64, open, "{servers:?}");
    assert!(servers
        .iter()
        .all(|s| s["type"] == "S" && s["state"] == "idle"));
    assert_eq!(servers[0]["port"], cluster.port().to_string());

    let stats = show(&admin, "SHOW STATS").await;
    let postgres = stats.iter().find(|s| s["database"] == "postgres").unwrap();
    assert_eq!(number(postgres, "total_query_count"), 6, "{postgres:?}");
    assert_eq!(number(postgres, "total_xact_count"), 6, "{postgres:?}");
    assert!(number(postgres, "total_received") >= 6 * "SELECT 1".len() as u64);
    assert!(number(postgres, "total_sent") > 0);

    let version = show(&admin, "show version;").await;
    assert_eq!(version.len(), 1);
    assert_eq!(
        version[0]["version"],
        format!("pgbastion {}", env!("CARGO_PKG_VERSION"))
    );

    let routes = show(&admin, "SHOW ROUTES").await;
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0]["match"], "database=postgres");
    assert_eq!(routes[0]["auth"], "scram");
    assert_eq!(
        routes[0]["backend"],
        format!(
            "postgres://{}@127.0.0.1:{}/postgres",
            cluster.superuser(),
            cluster.port()
        )
    );

    let listeners = show(&admin, "SHOW LISTENERS").await;
    let sessions: Vec<(&str, &str, u64)> = listeners
        .iter()
        .map(|l| {
            (
                l["address"].as_str(),
                l["mode"].as_str(),
                number(l, "sessions"),
            )
        })
        .collect();
    let (plain_address, pooled_address) =
        (format!("127.0.0.1:{plain}"), format!("127.0.0.1:{pooled}"));
    assert_eq!(
        sessions,
        [
            (plain_address.as_str(), "transparent", 2),
            (pooled_address.as_str(), "pooled", 1)
        ]
    );

    let config = show(&admin, "SHOW CONFIG").await;
    let text = format!("{config:?}");
    for secret in [ADMIN_PASSWORD, APP_PASSWORD, BACKEND_PASSWORD] {
        assert!(!text.contains(secret), "SHOW CONFIG shows {secret}: {text}");
    }
    let value = |key: &str| {
        let row = config.iter().find(|r| r["key"] == key);
        row.unwrap_or_else(|| panic!("no {key}: {text}"))["value"].clone()
    };
    assert_eq!(value("admin.users"), "ops");
    assert_eq!(value("users"), "app,ops");

    // psql reads the answers too (it greets, describes and prints them).
    let psql = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={plain} user=ops dbname=pgbastion connect_timeout=20"
        ))
        .env("PGPASSWORD", ADMIN_PASSWORD)
        .args(["-X", "-A", "-c", "SHOW POOLS"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&psql.stdout);
    assert!(
        psql.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    assert!(
        out.starts_with("database|user|cl_active|cl_waiting|"),
        "{out}"
    );
    assert!(out.contains("(1 row)"), "{out}");

    drop((alpha, beta, admin));
    bastion.finish(&[ADMIN_PASSWORD, APP_PASSWORD, BACKEND_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_and_the_extended_protocol_get_an_error_and_the_session_goes_on() {
    let cluster = cluster();
    let (bastion, ports) = start(&cluster);
    let admin = console(ports[0]).await;
    let (code, message) = refused(&admin, "SHOW NONSENSE").await;
    assert_eq!(code, "42601");
    assert!(message.contains("SHOW NONSENSE"), "{message}");
    let (code, _) = refused(&admin, "SELECT 1").await;
    assert_eq!(code, "42601");
    let (code, _) = refused(&admin, "KILL_CLIENT twelve").await;
    assert_eq!(code, "42601");
    let prepared = within("prepare", admin.query("SHOW VERSION", &[])).await;
    let error = prepared.expect_err("the extended protocol is refused");
    assert_eq!(error.as_db_error().unwrap().code().code(), "0A000");
    assert_eq!(show(&admin, "SHOW VERSION").await.len(), 1);
    bastion.finish(&[ADMIN_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admin_is_refused_only_once_authenticated_and_the_proxy_goes_on() {
    let cluster = cluster();
    let (bastion, ports) = start(&cluster);
    let code_and_message = |error: tokio_postgres::Error| {
        let db = error.as_db_error().unwrap_or_else(|| panic!("{error}"));
        (db.code().code().to_owned(), db.message().to_owned())
    };
    for port in ports.iter().copied() {
        // The right password of a user who is not an admin: authenticated, then 42501.
        let Err(error) = connect(port, "app", APP_PASSWORD, "pgbastion", "x").await else {
            panic!("a non-admin is refused")
        };
        let (code, message) = code_and_message(error);
        assert_eq!(code, "42501", "{message}");
        assert!(message.contains("\"app\""), "{message}");
        // A wrong password of a non-admin, an admin, and a name without [[user]] all get
        // the same answer: nobody learns which names are admins.
        let mut answers = Vec::new();
        for (user, password) in [("app", "wrong"), ("ops", "wrong"), ("nobody", "guess")] {
            let Err(error) = connect(port, user, password, "pgbastion", "x").await else {
                panic!("{user} with a wrong password is refused")
            };
            let (code, message) = code_and_message(error);
            assert_eq!(code, "28P01", "{user}: {message}");
            answers.push(message.replace(user, "USER"));
        }
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
        assert_eq!(one(&app(port, "after").await).await, 1);
    }
    let admin = console(ports[0]).await;
    assert_eq!(show(&admin, "SHOW VERSION").await.len(), 1);
    let clients = show(&admin, "SHOW CLIENTS").await;
    assert_eq!(clients.len(), 1, "the refused are not listed: {clients:?}");
    bastion.finish(&[ADMIN_PASSWORD, APP_PASSWORD]);
}

/// Routes where the client's database names differ from the backend's: `app` and `app2`
/// both to backend database `app_prod` (two routes, one pool key), and `d1`/`d2` to
/// `${database}` — all pooled in transaction mode, size 2.
fn mapped_config(cluster: &Cluster, ports: &[u16]) -> String {
    let head = config(cluster, ports, &[]);
    let route = |matching: &str, database: &str| {
        format!(
            "[[route]]\nmatch = {{ database = \"{matching}\" }}\nauth = \"scram\"\n\
             backend = \"postgres://{}:{BACKEND_PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable\"\n\
             pool = {{ mode = \"transaction\", size = 2 }}\n\n",
            cluster.superuser(),
            cluster.port()
        )
    };
    format!(
        "{head}{}{}{}",
        route("app", "app_prod"),
        route("app2", "app_prod"),
        route("/^d[12]$/", "${database}")
    )
}

async fn pooled_client(port: u16, database: &str) -> (Client, Driver) {
    let credentials = ("app", APP_PASSWORD);
    let client = connect_driven(port, credentials, database, database).await;
    let (client, driver) = client.unwrap();
    assert_eq!(one(&client).await, 1);
    (client, driver)
}

/// The SHOW POOLS row of backend database `database`, the only one.
fn pool_of<'a>(
    pools: &'a [HashMap<String, String>],
    database: &str,
) -> &'a HashMap<String, String> {
    let mut rows = pools.iter().filter(|p| p["database"] == database);
    let row = rows
        .next()
        .unwrap_or_else(|| panic!("no {database}: {pools:?}"));
    assert!(rows.next().is_none(), "{database} twice: {pools:?}");
    row
}

/// Runs `pause`, then a query of `client` (of a route to `app_prod`) that it holds: the
/// task answers once resumed.
async fn held_by(
    admin: &Client,
    pause: &str,
    client: Client,
) -> tokio::task::JoinHandle<(i64, Client)> {
    assert!(show(admin, pause).await.is_empty());
    let held = tokio::spawn(async move { (one(&client).await, client) });
    wait_until("the client waits", || async {
        let pools = show(admin, "SHOW POOLS").await;
        number(pool_of(&pools, "app_prod"), "cl_waiting") == 1
    })
    .await;
    assert!(!held.is_finished(), "the query ran while paused");
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_shown_once_per_database_and_user_and_kill_and_pause_take_either_name() {
    let cluster = cluster();
    for database in ["app_prod", "d1", "d2"] {
        cluster
            .psql(&["-c", &format!("CREATE DATABASE {database}")])
            .unwrap();
    }
    let ports = free_ports(2);
    let bastion = Bastion::start(&mapped_config(&cluster, &ports), &[], &[], &ports);
    let (plain, pooled) = (ports[0], ports[1]);
    let (app, app_end) = pooled_client(pooled, "app").await;
    let (app2, app2_end) = pooled_client(pooled, "app2").await;
    let (d1, _d1_end) = pooled_client(pooled, "d1").await;
    let (_d2, d2_end) = pooled_client(pooled, "d2").await;
    // A transparent session of `app`: no pool's client.
    let (plain_app, plain_end) = pooled_client(plain, "app").await;
    let admin = console(plain).await;

    let pools = show(&admin, "SHOW POOLS").await;
    assert_eq!(pools.len(), 3, "one row per (database, user): {pools:?}");
    for (database, clients) in [("app_prod", 2), ("d1", 1), ("d2", 1)] {
        let row = pool_of(&pools, database);
        assert_eq!(row["user"], cluster.superuser());
        assert_eq!(number(row, "cl_active"), clients, "{row:?}");
        assert_eq!(number(row, "cl_waiting"), 0, "{row:?}");
    }
    assert!(
        !pool_of(&pools, "app_prod").contains_key("route"),
        "two routes: {pools:?}"
    );
    assert_eq!(pool_of(&pools, "d1")["route"], "3");
    let databases = show(&admin, "SHOW DATABASES").await;
    assert_eq!(databases.len(), 3, "{databases:?}");
    let prod = databases.iter().find(|d| d["name"] == "app_prod").unwrap();
    assert_eq!((number(prod, "pool_size"), number(prod, "paused")), (4, 0));
    assert_eq!(prod["port"], cluster.port().to_string());
    let lists = show(&admin, "SHOW LISTS").await;
    let items = |list: &str| number(lists.iter().find(|l| l["list"] == list).unwrap(), "items");
    assert_eq!((items("pools"), items("used_clients")), (3, 6), "{lists:?}");

    // PAUSE by the client's name holds that client; RESUME by it lets it go.
    let held = held_by(&admin, "PAUSE app", app).await;
    assert_eq!(one(&d1).await, 1, "d1 is not paused");
    let (code, message) = refused(&admin, "RESUME d1").await;
    assert_eq!(code, "55000", "{message}");
    assert!(show(&admin, "RESUME app").await.is_empty());
    let (answer, _app) = within("the held query", held).await.unwrap();
    assert_eq!(answer, 1);
    // PAUSE by the backend's name holds the clients of both routes to it.
    let held = held_by(&admin, "PAUSE app_prod", app2).await;
    assert!(show(&admin, "RESUME").await.is_empty());
    let (answer, _app2) = within("the held query", held).await.unwrap();
    assert_eq!(answer, 1);

    // KILL by the client's name: its sessions, transparent and pooled, and their pool.
    assert!(show(&admin, "KILL app").await.is_empty());
    assert_eq!(ended_with(app_end).await, "57P01");
    assert_eq!(ended_with(plain_end).await, "57P01");
    drop(plain_app);
    // KILL by the backend's name: the session of `app2`, whose backend database it is.
    assert!(show(&admin, "KILL app_prod").await.is_empty());
    assert_eq!(ended_with(app2_end).await, "57P01");
    wait_until("app_prod's pools are gone", || async {
        !show(&admin, "SHOW POOLS")
            .await
            .iter()
            .any(|p| p["database"] == "app_prod")
    })
    .await;
    assert!(show(&admin, "KILL d2").await.is_empty());
    assert_eq!(ended_with(d2_end).await, "57P01");
    assert_eq!(one(&d1).await, 1, "d1 goes on");
    bastion.finish(&[ADMIN_PASSWORD, APP_PASSWORD, BACKEND_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_keeps_ended_sessions_under_at_most_a_thousand_names_then_others() {
    let cluster = cluster();
    let ports = free_ports(2);
    let catch_all = format!(
        "{}[[route]]\nauth = \"trust\"\n\
         backend = \"postgres://{}@127.0.0.1:{}/postgres?sslmode=disable\"\n",
        config(&cluster, &ports, &[]),
        cluster.superuser(),
        cluster.port()
    );
    let bastion = Bastion::start(&catch_all, &[], &[], &ports);
    // 1,040 sessions, each with a database name of its own, 8 at a time.
    let names: Vec<String> = (0..1_040).map(|n| format!("db{n}")).collect();
    for batch in names.chunks(8) {
        let port = ports[0];
        let sessions: Vec<_> = batch
            .iter()
            .cloned()
            .map(|db| tokio::spawn(async move { connect(port, "app", "unused", &db, "x").await }))
            .collect();
        for session in sessions {
            drop(session.await.unwrap().unwrap());
        }
    }
    let admin = console(ports[0]).await;
    // 1,000 names, `(others)` and the console's `pgbastion`, once every session has ended
    // (a session still open would add its own name).
    wait_until("every session ended, in 1,002 rows", || async {
        let stats = show(&admin, "SHOW STATS").await;
        stats.len() == 1_002 && stats.iter().any(|s| s["database"] == "(others)")
    })
    .await;
    assert_eq!(show(&admin, "SHOW CLIENTS").await.len(), 1);
    bastion.finish(&[ADMIN_PASSWORD, APP_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_stays_and_answers_through_a_drain_and_refuses_reload() {
    let cluster = cluster();
    let (mut bastion, ports) = start(&cluster);
    let busy = app(ports[0], "busy").await;
    within("BEGIN", busy.simple_query("BEGIN")).await.unwrap();
    let credentials = ("ops", ADMIN_PASSWORD);
    let (admin, admin_end) = connect_driven(ports[1], credentials, "pgbastion", "console")
        .await
        .unwrap();
    assert!(show(&admin, "SHUTDOWN WAIT").await.is_empty());
    // The grace period (30 s by default) lets the transaction go on: the console too.
    for command in [
        "SHOW POOLS",
        "SHOW ROUTES",
        "SHOW LISTENERS",
        "SHOW CONFIG",
        "SHOW CLIENTS",
    ] {
        let rows = show(&admin, command).await;
        assert!(!rows.is_empty() || command == "SHOW POOLS", "{command}");
    }
    let (code, message) = refused(&admin, "RELOAD").await;
    assert_eq!(code, "F0000", "{message}");
    assert!(message.contains("shutting down"), "{message}");
    assert_eq!(one(&busy).await, 1, "the transaction goes on");
    within("COMMIT", busy.simple_query("COMMIT")).await.unwrap();
    // SHUTDOWN (no wait) ends the drain's grace period, and the console with it.
    assert!(show(&admin, "SHUTDOWN").await.is_empty());
    assert_eq!(ended_with(admin_end).await, "57P01");
    let status = bastion.wait_exit(DEADLINE);
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_ends_that_client_only_and_kill_a_database_spares_the_console() {
    let cluster = cluster();
    let (bastion, ports) = start(&cluster);
    let (plain, pooled) = (ports[0], ports[1]);
    let credentials = ("app", APP_PASSWORD);
    let (doomed, doomed_end) = connect_driven(plain, credentials, "postgres", "doomed")
        .await
        .unwrap();
    let spared = app(plain, "spared").await;
    let pooled_client = app(pooled, "pooled").await;
    assert_eq!(one(&pooled_client).await, 1);
    let admin = console(plain).await;
    let clients = show(&admin, "SHOW CLIENTS").await;
    let id = &clients
        .iter()
        .find(|c| c["application_name"] == "doomed")
        .unwrap()["id"];
    assert!(show(&admin, &format!("KILL_CLIENT {id}")).await.is_empty());
    assert_eq!(ended_with(doomed_end).await, "57P01");
    assert!(doomed.is_closed());
    assert_eq!(one(&spared).await, 1);
    assert_eq!(one(&pooled_client).await, 1);
    let (code, message) = refused(&admin, &format!("KILL_CLIENT {id}")).await;
    assert_eq!(code, "42704", "{message}");

    assert!(show(&admin, "KILL postgres").await.is_empty());
    wait_until("KILL ended the database's clients", || async {
        spared.is_closed() && pooled_client.is_closed()
    })
    .await;
    wait_until("only the console is left", || async {
        let left = show(&admin, "SHOW CLIENTS").await;
        left.len() == 1 && left[0]["database"] == "pgbastion"
    })
    .await;
    wait_until("the database's pools are closed", || async {
        show(&admin, "SHOW POOLS").await.is_empty()
    })
    .await;
    assert_eq!(one(&app(pooled, "later").await).await, 1);
    bastion.finish(&[ADMIN_PASSWORD, APP_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_a_pooled_client_until_resume() {
    let cluster = cluster();
    let (bastion, ports) = start(&cluster);
    let client = app(ports[1], "held").await;
    assert_eq!(one(&client).await, 1);
    let admin = console(ports[0]).await;
    assert!(show(&admin, "PAUSE postgres").await.is_empty());
    let query = tokio::spawn(async move { one(&client).await });
    wait_until("the paused client waits", || async {
        let pools = show(&admin, "SHOW POOLS").await;
        pools.first().is_some_and(|p| number(p, "cl_waiting") == 1)
    })
    .await;
    assert!(!query.is_finished(), "the query ran while paused");
    assert!(show(&admin, "RESUME postgres").await.is_empty());
    assert_eq!(within("the held query", query).await.unwrap(), 1);
    bastion.finish(&[ADMIN_PASSWORD, APP_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reads_the_changed_file_and_refuses_a_bad_one() {
    let cluster = cluster();
    let (bastion, ports) = start(&cluster);
    let admin = console(ports[0]).await;
    assert_eq!(show(&admin, "SHOW ROUTES").await.len(), 1);
    let two = config(&cluster, &ports, &["postgres", "reports"]);
    std::fs::write(bastion.config_path(), &two).unwrap();
    assert!(show(&admin, "RELOAD").await.is_empty());
    let routes = show(&admin, "SHOW ROUTES").await;
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert_eq!(routes[1]["match"], "database=reports");
    let reports = connect(ports[0], "app", APP_PASSWORD, "reports", "r")
        .await
        .unwrap();
    assert_eq!(one(&reports).await, 1);

    std::fs::write(
        bastion.config_path(),
        format!("{two}\n[admin]\nusers = []\n"),
    )
    .unwrap();
    let (code, message) = refused(&admin, "reload;").await;
    assert_eq!(code, "F0000", "{message}");
    assert!(message.contains("pgbastion.toml"), "{message}");
    assert_eq!(
        show(&admin, "SHOW ROUTES").await.len(),
        2,
        "the old file stays"
    );
    bastion.finish(&[ADMIN_PASSWORD, APP_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_session_and_the_process_with_status_zero() {
    let cluster = cluster();
    let (mut bastion, ports) = start(&cluster);
    let (client, client_end) = connect_driven(ports[0], ("app", APP_PASSWORD), "postgres", "app")
        .await
        .unwrap();
    assert_eq!(one(&client).await, 1);
    let credentials = ("ops", ADMIN_PASSWORD);
    let (admin, admin_end) = connect_driven(ports[1], credentials, "pgbastion", "console")
        .await
        .unwrap();
    assert!(show(&admin, "SHUTDOWN").await.is_empty());
    let status = bastion.wait_exit(DEADLINE);
    assert!(status.success(), "{status:?}");
    assert_eq!(ended_with(client_end).await, "57P01");
    assert_eq!(ended_with(admin_end).await, "57P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_held_by_pause_past_checkout_timeout_is_told_the_pool_is_paused() {
    let cluster = cluster();
    let ports = free_ports(2);
    let config = config(&cluster, &ports, &["postgres"])
        .replace("size = 2 }", "size = 2, checkout_timeout = \"1s\" }");
    let bastion = Bastion::start(&config, &[], &[], &ports);
    let client = app(ports[1], "held").await;
    let admin = console(ports[0]).await;
    assert!(show(&admin, "PAUSE").await.is_empty());
    let error = within("the held query", client.simple_query("SELECT 1"))
        .await
        .expect_err("held past checkout_timeout");
    let db = error.as_db_error().unwrap();
    assert_eq!(db.code().code(), "53300", "{db:?}");
    assert!(db.message().contains("paused"), "{db:?}");
    assert!(show(&admin, "RESUME").await.is_empty());
    assert_eq!(one(&client).await, 1, "the client goes on after RESUME");
    bastion.finish(&[ADMIN_PASSWORD, APP_PASSWORD]);
}

#[test]
fn an_admin_with_a_client_certificate_gets_the_console_and_another_common_name_does_not() {
    let cluster = cluster();
    let ca = pgbastion_testkit::TestCa::new("admin CA").unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = ca
        .server_cert(&["localhost"])
        .unwrap()
        .write_files(certs.path(), "server")
        .unwrap();
    let ca_file = ca.write_cert(certs.path(), "ca").unwrap();
    let (ops_cert, ops_key) = ca
        .client_cert("ops")
        .unwrap()
        .write_files(certs.path(), "ops")
        .unwrap();
    let ports = free_ports(2);
    let route_and_users = config(&cluster, &ports, &["postgres"]);
    let (_, routes) = route_and_users.split_once("[[route]]").unwrap();
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n\
         tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\" }}\n\n\
         [admin]\nusers = [\"ops\", \"root\"]\nauth = \"cert\"\n\n\
         [[user]]\nname = \"app\"\npassword = \"{APP_PASSWORD}\"\n\n[[route]]{routes}",
        ports[0],
        cert.display(),
        key.display(),
        ca_file.display()
    );
    let bastion = Bastion::start(&config, &[], &[], &ports[..1]);
    let psql = |user: &str| {
        Command::new("psql")
            .arg(format!(
                "host=localhost hostaddr=127.0.0.1 port={} user={user} dbname=pgbastion \
                 sslmode=verify-full sslrootcert={} sslcert={} sslkey={} connect_timeout=20",
                ports[0],
                ca_file.display(),
                ops_cert.display(),
                ops_key.display()
            ))
            .args(["-X", "-A", "-t", "-c", "SHOW VERSION"])
            .env("PGPASSWORD", "")
            .output()
            .unwrap()
    };
    let ops = psql("ops");
    let out = String::from_utf8_lossy(&ops.stdout);
    assert!(
        ops.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ops.stderr)
    );
    assert!(out.starts_with("pgbastion "), "{out}");
    // An admin name, but the certificate's CN is another's.
    let root = psql("root");
    let err = String::from_utf8_lossy(&root.stderr);
    assert!(!root.status.success(), "{err}");
    assert!(err.contains("root"), "{err}");
    bastion.finish(&[APP_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_with_a_token_gets_the_console_only_over_tls_or_where_insecure_is_allowed() {
    let cluster = cluster();
    let issuer = pgbastion_testkit::TestIssuer::start().await;
    let pem = issuer.public_key_pem("RS256");
    let file = |ports: &[u16], insecure: bool| {
        let with_routes = config(&cluster, ports, &["postgres"]);
        let admin = format!(
            "[jwt]\nissuer = \"{}\"\naudience = \"pgbastion\"\nkeys = [\"rsa.pem\"]\n\n\
             [admin]\nusers = [\"ops\"]\nauth = \"jwt\"\ninsecure = {insecure}\n",
            issuer.issuer()
        );
        with_routes.replace("[admin]\nusers = [\"ops\"]\n", &admin)
    };
    let token = issuer.token_for("ops", "pgbastion", Duration::from_secs(600));
    let ports = free_ports(2);
    let bastion = Bastion::start(&file(&ports, true), &[("rsa.pem", &pem)], &[], &ports);
    let admin = connect(ports[0], "ops", &token, "pgbastion", "jwt")
        .await
        .unwrap();
    assert_eq!(show(&admin, "SHOW VERSION").await.len(), 1);
    let other = issuer.token_for("app", "pgbastion", Duration::from_secs(600));
    let Err(error) = connect(ports[0], "ops", &other, "pgbastion", "jwt").await else {
        panic!("a token for another user is refused")
    };
    assert_eq!(error.as_db_error().unwrap().code().code(), "28P01");
    bastion.finish(&[&token]);

    let ports = free_ports(2);
    let bastion = Bastion::start(&file(&ports, false), &[("rsa.pem", &pem)], &[], &ports);
    let Err(error) = connect(ports[0], "ops", &token, "pgbastion", "jwt").await else {
        panic!("a token in clear is refused without TLS")
    };
    let db = error.as_db_error().unwrap();
    assert_eq!(db.code().code(), "28000", "{db:?}");
    assert!(db.message().contains("[admin]"), "{db:?}");
    bastion.finish(&[&token]);
}
