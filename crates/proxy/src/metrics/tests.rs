use std::sync::Arc;

use super::*;

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[test]
fn a_connection_moves_through_the_gauges_and_is_counted_once_closed() {
    let metrics = Arc::new(Metrics::new());
    let listener = metrics.listener("127.0.0.1:6432");
    let mut client = listener.accepted();
    let text = metrics.encode().unwrap();
    let handshake = r#"pgbastion_client_connections{listener="127.0.0.1:6432",state="handshake"}"#;
    let session = r#"pgbastion_client_connections{listener="127.0.0.1:6432",state="session"}"#;
    assert_eq!(sample(&text, handshake), Some(1.0), "{text}");
    client.session_started();
    client.session_started();
    let text = metrics.encode().unwrap();
    assert_eq!(sample(&text, handshake), Some(0.0));
    assert_eq!(sample(&text, session), Some(1.0));
    drop(client);
    let text = metrics.encode().unwrap();
    assert_eq!(sample(&text, session), Some(0.0));
    let closed = r#"pgbastion_client_connections_closed_total{listener="127.0.0.1:6432"}"#;
    assert_eq!(sample(&text, closed), Some(1.0));
    let started = r#"pgbastion_sessions_started_total{listener="127.0.0.1:6432"}"#;
    assert_eq!(sample(&text, started), Some(1.0));
}

#[test]
fn an_attempt_dropped_without_success_is_a_failure() {
    let metrics = Metrics::new();
    drop(metrics.auth_attempt("scram"));
    metrics.auth_attempt("scram").succeeded();
    metrics.auth_attempt("md5").succeeded();
    let text = metrics.encode().unwrap();
    let count = |mode: &str, result: &str| {
        sample(
            &text,
            &format!(r#"pgbastion_auth_attempts_total{{mode="{mode}",result="{result}"}}"#),
        )
    };
    assert_eq!(count("scram", "failure"), Some(1.0), "{text}");
    assert_eq!(count("scram", "success"), Some(1.0));
    assert_eq!(count("md5", "success"), Some(1.0));
    assert_eq!(
        count("md5", "failure"),
        Some(0.0),
        "both results exist from the first attempt"
    );
}

#[test]
fn labels_and_units_follow_prometheus_conventions() {
    let metrics = Metrics::new();
    metrics.refused(RefusalReason::ProxyHeader);
    metrics.cancel(CancelResult::Forwarded);
    metrics.reloaded(Outcome::Failure);
    metrics.route_hit(2);
    let text = metrics.encode().unwrap();
    for line in [
        r#"pgbastion_refusals_total{reason="proxy_header"} 1"#,
        r#"pgbastion_cancel_requests_total{result="forwarded"} 1"#,
        r#"pgbastion_reloads_total{result="failure"} 1"#,
        r#"pgbastion_route_hits_total{route="2"} 1"#,
        "# TYPE pgbastion_query_duration_seconds histogram",
        "# TYPE pgbastion_client_received_bytes counter",
        "# TYPE pgbastion_pool_waiting_clients gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
}

#[test]
fn pools_alike_in_their_labels_are_reported_as_one_and_dropped_pools_are_forgotten() {
    use crate::pool::PoolStats;
    let metrics = Metrics::new();
    let labels = PoolLabels {
        route: "1".into(),
        backend: "127.0.0.1:5432".into(),
        database: "app".into(),
        user: "app".into(),
    };
    let stats = |size| PoolStats {
        size,
        open: 1,
        idle: 1,
        ..PoolStats::default()
    };
    metrics.track_pool(labels.clone(), Box::new(move || Some(stats(2))));
    metrics.track_pool(labels, Box::new(move || Some(stats(3))));
    metrics.track_pool(
        PoolLabels {
            route: "2".into(),
            backend: "127.0.0.1:5432".into(),
            database: "app".into(),
            user: "app".into(),
        },
        Box::new(|| None),
    );
    let text = metrics.encode().unwrap();
    let series = r#"{route="1",backend="127.0.0.1:5432",database="app",user="app"}"#;
    assert_eq!(
        sample(&text, &format!("pgbastion_pool_size{series}")),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("pgbastion_pool_idle_connections{series}")),
        Some(2.0)
    );
    assert!(
        !text.contains(r#"pgbastion_pool_size{route="2""#),
        "a pool gone is not reported:\n{text}"
    );
}
