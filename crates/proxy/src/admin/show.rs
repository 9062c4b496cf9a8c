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
use crate::pool::PoolStats;
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
    for pool in clients.iter().filter_map(|c| c.info.pool()) {
        if let Some(row) = rows.get_mut(&pool) {
            row.clients += 1;
        }
    }
    for ((database, user), row) in rows {
        let waiting = row.waiting + pauses.held_in(database, user);
        let route = match row.routes.len() {
            1 => row.routes.first().and_then(|r| r.parse::<u64>().ok()),
            _ => None,
        };
        let modes: BTreeSet<_> = row.routes.iter().map(|r| pool_mode(settings, r)).collect();
        let mode = match modes.len() {
            1 => modes.into_iter().next().flatten(),
            _ => None,
        };
        let backends: Vec<_> = row.backends.into_iter().collect();
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
            mode.into(),
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
        let (addr, port) = match labels.backend.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().ok()),
            None => (labels.backend.as_str(), None),
        };
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
