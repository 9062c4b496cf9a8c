//! SHOW CONFIG: the settings in force as key/value rows. Secrets are never among them: no
//! password (of `[[user]]` or in a backend URL), no key, no session-switch HMAC key; users
//! are listed by name only.

use super::table::{Kind, Table};
use crate::settings::Settings;

/// The settings in force, secrets left out.
pub fn config(settings: &Settings) -> Table {
    let mut rows: Vec<(String, String)> = vec![
        (
            "grace_period".into(),
            humantime::format_duration(settings.grace_period).to_string(),
        ),
        (
            "max_scram_iterations".into(),
            settings.max_scram_iterations.to_string(),
        ),
        (
            "pools.max_db_connections".into(),
            settings.pools.max_db_connections.to_string(),
        ),
        (
            "pools.max_user_connections".into(),
            settings.pools.max_user_connections.to_string(),
        ),
        (
            "pid_file".into(),
            optional(settings.pid_file.as_ref().map(|p| p.display())),
        ),
        (
            "metrics.address".into(),
            optional(settings.metrics_address.as_ref()),
        ),
        ("users".into(), names(settings.users.keys())),
    ];
    if let Some(admin) = &settings.admin {
        rows.push(("admin.users".into(), names(admin.users.iter())));
        rows.push(("admin.auth".into(), admin.auth.name().into()));
    }
    if let Some(jwt) = &settings.jwt {
        rows.push(("jwt.issuer".into(), jwt.issuer.clone()));
        rows.push(("jwt.claim".into(), jwt.claim.clone()));
    }
    for (i, listener) in settings.listeners.iter().enumerate() {
        let key = |name: &str| format!("listener.{}.{name}", i + 1);
        rows.push((key("address"), listener.address.to_string()));
        rows.push((
            key("max_connections"),
            listener.limits.max_connections.to_string(),
        ));
    }
    for route in &settings.routes.0 {
        let key = |name: &str| format!("route.{}.{name}", route.number);
        rows.push((key("match"), route.describe_match()));
        rows.push((key("auth"), route.auth.name().into()));
        rows.push((key("backend"), route.backend.redacted()));
    }
    let mut table = Table::new(&[("key", Kind::Text), ("value", Kind::Text)]);
    for (key, value) in rows {
        table.push(vec![key.into(), value.into()]);
    }
    table
}

fn optional(value: Option<impl std::fmt::Display>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// Names, sorted, comma-separated.
fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut names: Vec<&str> = names.map(String::as_str).collect();
    names.sort_unstable();
    names.join(",")
}
