#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! JWT/OIDC client authentication (as a password and through OAUTHBEARER), claim routing,
//! and auth_query SCRAM pass-through, end to end.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use pgbastion_testkit::{Cluster, PasswordEncryption, RawClient, TestIssuer};
use pgbastion_wire::{Authentication, BackendMessage, SaslInitialResponse};
use serde_json::json;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A proxy whose `[jwt]` reads `issuer`'s discovery document over https, trusting the
/// issuer's private CA through `ca_file` (relative to the configuration file).
async fn jwt_proxy(issuer: &TestIssuer, cluster: &Cluster, dir: &std::path::Path) -> RunningProxy {
    std::fs::write(dir.join("idp-ca.pem"), issuer.ca_cert_pem().unwrap()).unwrap();
    cluster
        .execute_sql("CREATE ROLE reader LOGIN; CREATE ROLE admin_role LOGIN")
        .unwrap();
    start_proxy(
        dir,
        &format!(
            r#"
[jwt]
issuer = "{issuer}"
audience = "pgbastion"
oidc_discovery = "{discovery}"
ca_file = "idp-ca.pem"

[[route]]
match = {{ database = "oauth" }}
auth = "oauth"
insecure = true
backend = "postgres://reader@127.0.0.1:{port}/postgres?sslmode=disable"

[[route]]
match = {{ claim = {{ role = "admin" }} }}
auth = "jwt"
insecure = true
backend = "postgres://admin_role@127.0.0.1:{port}/postgres?sslmode=disable"

[[route]]
auth = "jwt"
insecure = true
backend = "postgres://reader@127.0.0.1:{port}/postgres?sslmode=disable"

"#,
            issuer = issuer.issuer(),
            discovery = issuer.discovery_url(),
            port = cluster.port()
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_as_password_with_claim_routing() {
    let issuer = TestIssuer::start_https().await;
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = jwt_proxy(&issuer, &cluster, dir.path()).await;
    let claims = |sub: &str, role: &str, exp: u64| json!({"iss": issuer.issuer(), "aud": "pgbastion", "sub": sub, "role": role, "exp": exp});
    within("jwt", async {
        for (alg, role, expected) in [
            ("RS256", "admin", "admin_role"),
            ("ES256", "user", "reader"),
            ("EdDSA", "user", "reader"),
        ] {
            let token = issuer.sign(alg, claims("alice", role, now() + 300));
            let user = current_user(proxy.addr, "alice", Some(&token), "postgres").await;
            assert_eq!(user, expected, "{alg} {role}");
        }
        let expired = issuer.sign("RS256", claims("alice", "user", now() - 3600));
        let err = connect(proxy.addr, "alice", Some(&expired), "postgres")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "28P01");
        assert!(
            err.as_db_error().unwrap().message().contains("expired"),
            "{err}"
        );
        let someone_else = issuer.sign("RS256", claims("bob", "user", now() + 300));
        let err = connect(proxy.addr, "alice", Some(&someone_else), "postgres")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "28P01");
        let err = connect(proxy.addr, "alice", Some("not.a.token"), "postgres")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "28P01");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_carries_the_token() {
    let issuer = TestIssuer::start_https().await;
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = jwt_proxy(&issuer, &cluster, dir.path()).await;
    let token = issuer.token_for("carol", "pgbastion", Duration::from_secs(300));
    within("oauthbearer", async {
        let mut raw = RawClient::connect(proxy.addr).await.unwrap();
        raw.send_startup(&[("user", "carol"), ("database", "oauth")])
            .await
            .unwrap();
        match raw.read().await.unwrap() {
            BackendMessage::Authentication(Authentication::Sasl { mechanisms }) => {
                assert_eq!(mechanisms, ["OAUTHBEARER"]);
            }
            other => panic!("expected SASL, got {other:?}"),
        }
        let initial = SaslInitialResponse {
            mechanism: "OAUTHBEARER".into(),
            data: Some(Bytes::from(
                pgbastion_auth::oauthbearer::client_initial_response(Some(&token)),
            )),
        };
        let mut out = bytes::BytesMut::new();
        initial.encode(&mut out).unwrap();
        raw.send_raw(&out).await.unwrap();
        let messages = raw.read_until_ready().await.unwrap();
        assert!(
            matches!(
                messages[0],
                BackendMessage::Authentication(Authentication::Ok)
            ),
            "{messages:?}"
        );
        let rows = raw.simple_query("SELECT current_user").await.unwrap();
        assert!(format!("{rows:?}").contains("reader"), "{rows:?}");
    })
    .await;
}

/// A SCRAM cluster with the role `lookup` (password "lookup pw"), allowed to read verifiers
/// through `public.get_secret`, and the role `erin` (password "erin's pw"). Connections are
/// logged, so tests can count the lookup logins.
fn auth_query_cluster() -> Cluster {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
        .config("log_connections", "on")
        .user("lookup", "lookup pw", PasswordEncryption::ScramSha256)
        .user("erin", "erin's pw", PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    cluster
        .execute_sql(
            "CREATE FUNCTION public.get_secret(name) RETURNS TABLE(usename name, passwd text) \
             LANGUAGE sql SECURITY DEFINER AS \
             'SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1'; \
             GRANT EXECUTE ON FUNCTION public.get_secret(name) TO lookup",
        )
        .unwrap();
    cluster
}

/// A scram route on `cluster` whose auth_query logs in as `lookup` with `password`.
fn auth_query_config(cluster: &Cluster, password: &str) -> String {
    format!(
        r#"
[[route]]
auth = "scram"
backend = "postgres://127.0.0.1:{}/postgres?sslmode=disable"
auth_query = {{ query = "SELECT * FROM public.get_secret($1)", user = "lookup", password = "{password}" }}
"#,
        cluster.port()
    )
}

/// How many times the cluster's log shows the auth_query role logging in.
fn lookup_logins(cluster: &Cluster) -> usize {
    cluster
        .log_tail(100_000)
        .lines()
        .filter(|line| line.contains("connection authorized: user=lookup"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_scram_pass_through_without_a_stored_password() {
    let cluster = auth_query_cluster();
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("PGB_TEST_LOOKUP_PW", "lookup pw");
    let config = auth_query_config(&cluster, "${PGB_TEST_LOOKUP_PW}");
    assert!(
        !config.contains("erin's pw"),
        "no client password in the config"
    );
    let proxy = start_proxy(dir.path(), &config).await;
    within("auth_query", async {
        let user = current_user(proxy.addr, "erin", Some("erin's pw"), "postgres").await;
        assert_eq!(
            user, "erin",
            "logged into the backend as the client, with keys from its proof"
        );
        let err = connect(proxy.addr, "erin", Some("guess"), "postgres")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "28P01");
        let err = connect(proxy.addr, "nobody", Some("guess"), "postgres")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "28P01");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_auth_query_login_tells_the_client_only_the_generic_28p01() {
    let cluster = auth_query_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        dir.path(),
        &auth_query_config(&cluster, "not the lookup pw"),
    )
    .await;
    within("auth_query with a wrong lookup password", async {
        // Twice: the second answer shows the proxy kept serving after the first.
        for _ in 0..2 {
            let (sqlstate, message) =
                refusal(proxy.addr, "erin", Some("erin's pw"), "postgres").await;
            assert_eq!(
                (sqlstate.as_str(), message.as_str()),
                ("28P01", "password authentication failed for user \"erin\""),
                "PostgreSQL's own words for the client's user, nothing about the lookup role"
            );
        }
    })
    .await;
    let refused = cluster
        .log_tail(100_000)
        .matches("password authentication failed for user \"lookup\"")
        .count();
    assert_eq!(
        refused, 1,
        "the second client came within the pause after a failed lookup login"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_logins_in_a_row_reuse_one_lookup_connection() {
    let cluster = auth_query_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(dir.path(), &auth_query_config(&cluster, "lookup pw")).await;
    within("auth_query lookups", async {
        for _ in 0..5 {
            let user = current_user(proxy.addr, "erin", Some("erin's pw"), "postgres").await;
            assert_eq!(user, "erin");
        }
        for user in ["nobody", "somebody", "erin"] {
            let (sqlstate, _) = refusal(proxy.addr, user, Some("guess"), "postgres").await;
            assert_eq!(sqlstate, "28P01", "{user}");
        }
        let user = current_user(proxy.addr, "erin", Some("erin's pw"), "postgres").await;
        assert_eq!(user, "erin", "still serving");
    })
    .await;
    let logins = lookup_logins(&cluster);
    eprintln!("9 client logins, {logins} auth_query logins");
    assert!(
        (1..=2).contains(&logins),
        "9 client logins made {logins} auth_query logins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_auth_query_lookups_queue_for_one_lookup_connection() {
    let cluster = auth_query_cluster();
    let dir = tempfile::tempdir().unwrap();
    // Each lookup takes 200 ms, so eight clients at once overlap for sure.
    let config = auth_query_config(&cluster, "lookup pw").replace(
        "SELECT * FROM public.get_secret($1)",
        "SELECT s.* FROM pg_sleep(0.2), public.get_secret($1) s",
    );
    let proxy = start_proxy(dir.path(), &config).await;
    within("concurrent auth_query lookups", async {
        // Unauthenticated clients, each with a user name of its own (no answer to share).
        let guesses: Vec<_> = (0..8)
            .map(|n| {
                let addr = proxy.addr;
                tokio::spawn(async move {
                    refusal(addr, &format!("guesser{n}"), Some("guess"), "postgres").await
                })
            })
            .collect();
        for guess in guesses {
            assert_eq!(guess.await.unwrap().0, "28P01");
        }
        let user = current_user(proxy.addr, "erin", Some("erin's pw"), "postgres").await;
        assert_eq!(user, "erin", "still serving");
    })
    .await;
    let logins = lookup_logins(&cluster);
    assert!(
        (1..=2).contains(&logins),
        "9 client logins, 8 of them at once, made {logins} auth_query logins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_claims_move_a_plaintext_client_to_a_tls_only_route_is_refused() {
    let issuer = TestIssuer::start().await;
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    cluster
        .execute_sql("CREATE ROLE reader LOGIN; CREATE ROLE admin_role LOGIN")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    pgbastion_testkit::TestCa::new("front CA")
        .unwrap()
        .server_cert(&["localhost"])
        .unwrap()
        .write_files(dir.path(), "server")
        .unwrap();
    // Before the token is read both routes match (claims are not known yet), so the first,
    // which accepts plaintext, is chosen; an "admin" token then moves the client to the
    // second, which does not.
    let proxy = start_proxy(
        dir.path(),
        &format!(
            r#"
[[listener]]
address = "127.0.0.1:0"
tls = {{ cert = "server.crt", key = "server.key" }}

[jwt]
issuer = "{issuer}"
audience = "pgbastion"
oidc_discovery = "{discovery}"
insecure = true # the test issuer serves plain http

[[route]]
match = {{ claim = {{ role = "user" }} }}
auth = "jwt"
insecure = true
backend = "postgres://reader@127.0.0.1:{port}/postgres?sslmode=disable"

[[route]]
match = {{ claim = {{ role = "admin" }} }}
auth = "jwt"
backend = "postgres://admin_role@127.0.0.1:{port}/postgres?sslmode=disable"
"#,
            issuer = issuer.issuer(),
            discovery = issuer.discovery_url(),
            port = cluster.port()
        ),
    )
    .await;
    let token = |role: &str| {
        issuer.sign(
            "RS256",
            json!({"iss": issuer.issuer(), "aud": "pgbastion", "sub": "alice", "role": role, "exp": now() + 300}),
        )
    };
    within("claim routing and TLS", async {
        let (sqlstate, message) =
            refusal(proxy.addr, "alice", Some(&token("admin")), "postgres").await;
        assert_eq!(sqlstate, "28000", "{message}");
        assert!(message.contains("only TLS"), "{message}");
        let user = current_user(proxy.addr, "alice", Some(&token("user")), "postgres").await;
        assert_eq!(user, "reader", "the plaintext route still serves");
    })
    .await;
}
