//! The SHOW answers, built from snapshots (the client registry, the pools' counters, the
//! settings in force). Where a concept is PgBouncer's, so are the column names and their
//! order; what pgbastion does not track is 0 (NULL where 0 would be a lie about a thing,
//! e.g. an address). docs/operations.md, "Admin console", lists which.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::pause::Pauses;
use super::table::{Kind, Table, Value};
use crate::clients::{ClientView, Totals};
use crate::config::{ListenerMode, PoolMode};
use crate::metrics::PoolLabels;
use crate::pool::{PoolSettings, PoolStats};
use crate::settings::Settings;

use Kind::{Int, Text};

/// pgbastion's version, as PgBouncer's `SHOW VERSION` has it.
pub fn version() -> Table {
    Table::single(
        "version",
        format!("pgbastion {}", env!("CARGO_PKG_VERSION")),
    )
}

/// A time as PgBouncer shows it (UTC, to the second).
fn time(at: SystemTime) -> Value {
    humantime::format_rfc3339_seconds(at).to_string().into()
}

/// PgBouncer's columns of a connection, client or server (SHOW CLIENTS, SHOW SERVERS).
const CONNECTION_COLUMNS: [(&str, Kind); 20] = [
    ("type", Text),
    ("user", Text),
    ("database", Text),
    ("replication", Text),
    ("state", Text),
    ("addr", Text),
    ("port", Int),
    ("local_addr", Text),
    ("local_port", Int),
    ("connect_time", Text),
    ("request_time", Text),
    ("wait", Int),
    ("wait_us", Int),
    ("close_needed", Int),
    ("ptr", Text),
    ("link", Text),
    ("remote_pid", Int),
    ("tls", Text),
    ("application_name", Text),
    ("prepared_statements", Int),
];

/// PgBouncer's SHOW CLIENTS, with our `route` last (NULL on the console).
pub fn clients(clients: &[ClientView]) -> Table {
    let columns = [
        CONNECTION_COLUMNS.as_slice(),
        &[("id", Int), ("route", Int)],
    ]
    .concat();
    let mut table = Table::new(&columns);
    for ClientView { info, .. } in clients {
        table.push(vec![
            "C".into(),
            info.user.as_str().into(),
            info.database.as_str().into(),
            "none".into(),
            "active".into(),
            info.address.ip().to_string().into(),
            info.address.port().into(),
            info.listener.ip().to_string().into(),
            info.listener.port().into(),
            time(info.connected),
            time(info.connected),
            0u64.into(),
            0u64.into(),
            0u64.into(),
            format!("{:x}", info.id.0).into(),
            Value::Null,
            0u64.into(),
            (if info.tls { "TLS" } else { "" }).into(),
            info.application_name.as_str().into(),
            0u64.into(),
            info.id.0.into(),
            info.route.into(),
        ]);
    }
    table
}

/// The pool mode of route `number` in `settings`, as PgBouncer names it.
fn pool_mode(settings: &Settings, number: &str) -> Option<&'static str> {
    let route = settings
        .routes
        .0
        .iter()
        .find(|r| r.number.to_string() == number);
    let mode = route
        .and_then(|r| r.pool.as_ref())
        .map(|pool| match pool.mode {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        });
    mode
}

/// One SHOW POOLS row: the pools of one (backend database, backend user), summed.
#[derive(Default)]
struct PoolRow {
    clients: usize,
    waiting: usize,
    in_use: usize,
    idle: usize,
    routes: BTreeSet<String>,
    backends: BTreeSet<String>,
}

impl PoolRow {
    /// The pool mode of its routes, NULL if they differ.
    fn pool_mode(&self, settings: &Settings) -> Option<&'static str> {
        let modes: BTreeSet<_> = self.routes.iter().map(|r| pool_mode(settings, r)).collect();
        match modes.len() {
            1 => modes.into_iter().next().flatten(),
            _ => None,
        }
    }

    /// The pool settings of its routes in `settings` (a route a reload removed has none).
    fn settings<'a>(&self, settings: &'a Settings) -> Vec<&'a PoolSettings> {
        let routes = settings.routes.0.iter();
        routes
            .filter(|r| self.routes.contains(&r.number.to_string()))
            .filter_map(|r| r.pool.as_ref().map(|pool| &pool.settings))
            .collect()
    }
}

/// The pools of `pools` by (backend database, backend user), with the pooled sessions of
/// `clients` that use each.
fn pool_rows<'a>(
    pools: &'a BTreeMap<PoolLabels, PoolStats>,
    clients: &[ClientView],
) -> BTreeMap<(&'a str, &'a str), PoolRow> {
    let mut rows: BTreeMap<(&str, &str), PoolRow> = BTreeMap::new();
    for (labels, stats) in pools {
        let row = rows
            .entry((labels.database.as_str(), labels.user.as_str()))
            .or_default();
        row.waiting += stats.waiting;
        row.in_use += stats.in_use;
        row.idle += stats.idle;
        row.routes.insert(labels.route.clone());
        row.backends.insert(labels.backend.clone());
    }
    let mut using: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for pool in clients.iter().filter_map(|c| c.info.pool()) {
        *using.entry(pool).or_default() += 1;
    }
    for (pool, row) in &mut rows {
        row.clients = using.get(pool).copied().unwrap_or(0);
    }
    rows
}

/// PgBouncer's SHOW DATABASES, one row per (backend database, backend user) as in SHOW
/// POOLS: `name` and `database` the backend database, `force_user` the backend user,
/// `host` and `port` of its (first) backend, the sizes summed over its routes' pools,
/// `current_connections` its backends open now, `paused` 1 while PAUSE holds it.
pub fn databases(
    pools: &BTreeMap<PoolLabels, PoolStats>,
    pauses: &Pauses,
    settings: &Settings,
) -> Table {
    let mut table = Table::new(&[
        ("name", Text),
        ("host", Text),
        ("port", Int),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int),
        ("min_pool_size", Int),
        ("reserve_pool", Int),
        ("server_lifetime", Int),
        ("pool_mode", Text),
        ("max_connections", Int),
        ("current_connections", Int),
        ("paused", Int),
        ("disabled", Int),
    ]);
    for ((database, user), row) in pool_rows(pools, &[]) {
        let (host, port) = host_port(row.backends.first().map_or("", String::as_str));
        let of_routes = row.settings(settings);
        let size: usize = of_routes.iter().map(|s| s.size).sum();
        let min_idle: usize = of_routes.iter().map(|s| s.min_idle).sum();
        let lifetime = of_routes.iter().filter_map(|s| s.max_lifetime).max();
        table.push(vec![
            database.into(),
            host.into(),
            port.into(),
            database.into(),
            user.into(),
            size.into(),
            min_idle.into(),
            0u64.into(),
            lifetime.map_or(0, |l| l.as_secs()).into(),
            row.pool_mode(settings).into(),
            0u64.into(),
            (row.in_use + row.idle).into(),
            u64::from(pauses.is_paused(database)).into(),
            0u64.into(),
        ]);
    }
    table
}

/// PgBouncer's SHOW LISTS: `databases` and `pools` (rows of SHOW DATABASES and SHOW
/// POOLS), `users` (`[[user]]` entries), `used_clients` (sessions open), `used_servers`
/// (pooled backends open); the free lists and DNS entries pgbastion does not have are 0.
pub fn lists(
    pools: &BTreeMap<PoolLabels, PoolStats>,
    clients: &[ClientView],
    settings: &Settings,
) -> Table {
    let mut table = Table::new(&[("list", Text), ("items", Int)]);
    let rows = pool_rows(pools, clients).len();
    let servers: usize = pools.values().map(|s| s.in_use + s.idle).sum();
    let items = [
        ("databases", rows),
        ("users", settings.users.len()),
        ("pools", rows),
        ("free_clients", 0),
        ("used_clients", clients.len()),
        ("login_clients", 0),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ];
    for (list, count) in items {
        table.push(vec![list.into(), count.into()]);
    }
    table
}

/// The host and port of a backend address as the metrics label it (`host:port`).
fn host_port(backend: &str) -> (&str, Option<u16>) {
    match backend.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok()),
        None => (backend, None),
    }
}

/// PgBouncer's SHOW POOLS, one row per (backend database, backend user), the pools of
/// every route and backend with that pair summed (PgBouncer exporters label by the pair
/// and fail on a duplicate), with our `route` and `backend` last: NULL and a comma-separated
/// list when several.
pub fn pools(
    pools: &BTreeMap<PoolLabels, PoolStats>,
    clients: &[ClientView],
    pauses: &Pauses,
    settings: &Settings,
) -> Table {
    let mut table = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("cl_active", Int),
        ("cl_waiting", Int),
        ("cl_active_cancel_req", Int),
        ("cl_waiting_cancel_req", Int),
        ("sv_active", Int),
        ("sv_active_cancel", Int),
        ("sv_being_canceled", Int),
        ("sv_idle", Int),
        ("sv_used", Int),
        ("sv_tested", Int),
        ("sv_login", Int),
        ("maxwait", Int),
        ("maxwait_us", Int),
        ("pool_mode", Text),
        ("route", Int),
        ("backend", Text),
    ]);
    for ((database, user), row) in pool_rows(pools, clients) {
        let waiting = row.waiting + pauses.held_in(database, user);
        let route = match row.routes.len() {
            1 => row.routes.first().and_then(|r| r.parse::<u64>().ok()),
            _ => None,
        };
        let backends: Vec<_> = row.backends.iter().map(String::as_str).collect();
        table.push(vec![
            database.into(),
            user.into(),
            row.clients.saturating_sub(waiting).into(),
            waiting.into(),
            0u64.into(),
            0u64.into(),
            row.in_use.into(),
            0u64.into(),
            0u64.into(),
            row.idle.into(),
            0u64.into(),
            0u64.into(),
            0u64.into(),
            0u64.into(),
            0u64.into(),
            row.pool_mode(settings).into(),
            route.into(),
            backends.join(",").into(),
        ]);
    }
    table
}

/// PgBouncer's SHOW SERVERS: a row per pooled backend connection, active ones first. The
/// pools count their connections but do not keep per-connection details: those columns
/// are NULL or 0.
pub fn servers(pools: &BTreeMap<PoolLabels, PoolStats>) -> Table {
    let columns = [CONNECTION_COLUMNS.as_slice(), &[("route", Int)]].concat();
    let mut table = Table::new(&columns);
    for (labels, stats) in pools {
        let (addr, port) = host_port(&labels.backend);
        let states = std::iter::repeat_n("active", stats.in_use)
            .chain(std::iter::repeat_n("idle", stats.idle));
        for state in states {
            table.push(vec![
                "S".into(),
                labels.user.as_str().into(),
                labels.database.as_str().into(),
                "none".into(),
                state.into(),
                addr.into(),
                port.into(),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                0u64.into(),
                0u64.into(),
                0u64.into(),
                Value::Null,
                Value::Null,
                0u64.into(),
                Value::Null,
                Value::Null,
                0u64.into(),
                labels.route.parse::<u64>().ok().into(),
            ]);
        }
    }
    table
}

/// PgBouncer's SHOW STATS, by client database (sessions open and ended). Times are in
/// microseconds; the `avg_*_time` columns are means per query and per transaction; the
/// per-second rates (`avg_xact_count`, `avg_query_count`, `avg_recv`, `avg_sent`) and the
/// wait times are not computed: 0.
pub fn stats(totals: &BTreeMap<String, Totals>) -> Table {
    let mut table = Table::new(&[
        ("database", Text),
        ("total_xact_count", Int),
        ("total_query_count", Int),
        ("total_received", Int),
        ("total_sent", Int),
        ("total_xact_time", Int),
        ("total_query_time", Int),
        ("total_wait_time", Int),
        ("avg_xact_count", Int),
        ("avg_query_count", Int),
        ("avg_recv", Int),
        ("avg_sent", Int),
        ("avg_xact_time", Int),
        ("avg_query_time", Int),
        ("avg_wait_time", Int),
    ]);
    let mean = |sum: u64, count: u64| sum.checked_div(count).unwrap_or(0);
    for (database, t) in totals {
        table.push(vec![
            database.as_str().into(),
            t.transactions.into(),
            t.queries.into(),
            t.received.into(),
            t.sent.into(),
            t.transaction_micros.into(),
            t.query_micros.into(),
            0u64.into(),
            0u64.into(),
            0u64.into(),
            0u64.into(),
            0u64.into(),
            mean(t.transaction_micros, t.transactions).into(),
            mean(t.query_micros, t.queries).into(),
            0u64.into(),
        ]);
    }
    table
}

/// The routes in force: number, what they match, how clients authenticate, where they go
/// (the URL without password or query) and how they pool.
pub fn routes(settings: &Settings) -> Table {
    let mut table = Table::new(&[
        ("route", Int),
        ("match", Text),
        ("auth", Text),
        ("backend", Text),
        ("pool_mode", Text),
        ("pool_size", Int),
        ("insecure", Text),
    ]);
    for route in &settings.routes.0 {
        table.push(vec![
            route.number.into(),
            route.describe_match().into(),
            route.auth.name().into(),
            route.backend.redacted().into(),
            pool_mode(settings, &route.number.to_string()).into(),
            route.pool.as_ref().map(|pool| pool.settings.size).into(),
            yes_no(route.insecure),
        ]);
    }
    table
}

fn yes_no(value: bool) -> Value {
    (if value { "yes" } else { "no" }).into()
}

/// The listeners in force, with the sessions open on each now.
pub fn listeners(settings: &Settings, clients: &[ClientView]) -> Table {
    let mut table = Table::new(&[
        ("address", Text),
        ("mode", Text),
        ("tls", Text),
        ("require_tls", Text),
        ("proxy_protocol", Text),
        ("max_connections", Int),
        ("sessions", Int),
    ]);
    for listener in &settings.listeners {
        let sessions = clients
            .iter()
            .filter(|c| c.info.listener == listener.address)
            .count();
        let mode = match listener.mode {
            ListenerMode::Transparent => "transparent",
            ListenerMode::Pooled => "pooled",
        };
        table.push(vec![
            listener.address.to_string().into(),
            mode.into(),
            yes_no(listener.gateway.tls.is_some()),
            yes_no(listener.gateway.require_tls),
            format!("{:?}", listener.gateway.proxy_protocol)
                .to_lowercase()
                .into(),
            listener.limits.max_connections.into(),
            sessions.into(),
        ]);
    }
    table
}
