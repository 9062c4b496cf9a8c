#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Client authentication modes, backend authentication and routing, end to end against
//! real PostgreSQL clusters.

mod common;

use common::*;
use pgbastion_testkit::{Cluster, PasswordEncryption};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_clients_in_front_of_a_scram_backend() {
    let cluster = Cluster::builder()
        .hba(&["host all app 127.0.0.1/32 scram-sha-256"])
        .user("app", "backend secret", PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            r#"
[[user]]
name = "alice"
password = "wonderland"

[[route]]
auth = "scram"
backend = "{}"
"#,
            backend_url(&cluster, "app", Some("backend%20secret"), "postgres")
        ),
    )
    .await;
    within("scram login", async {
        let user = current_user(proxy.addr, "alice", Some("wonderland"), "postgres").await;
        assert_eq!(user, "app", "the backend sees the mapped user");
        let err = connect(proxy.addr, "alice", Some("wrong"), "postgres")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "28P01");
        let err = connect(proxy.addr, "mallory", Some("wonderland"), "postgres")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "28P01");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_cleartext_clients_and_an_md5_backend() {
    let cluster = Cluster::builder()
        .hba(&["host all legacy 127.0.0.1/32 md5"])
        .user("legacy", "old pw", PasswordEncryption::Md5)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backend = backend_url(&cluster, "legacy", Some("old%20pw"), "postgres");
    let proxy = start_proxy(
        dir.path(),
        &format!(
            r#"
[[user]]
name = "bob"
password = "md5{bob_hash}"

[[route]]
match = {{ database = "viaclear" }}
auth = "cleartext"
insecure = true
backend = "{backend}"

[[route]]
auth = "md5"
backend = "{backend}"
"#,
            bob_hash = &pgbastion_auth::md5::md5_hash("bob", "builder")[3..],
        ),
    )
    .await;
    within("md5 and cleartext", async {
        let user = current_user(proxy.addr, "bob", Some("builder"), "postgres").await;
        assert_eq!(user, "legacy");
        connect(proxy.addr, "bob", Some("builder"), "viaclear")
            .await
            .unwrap();
        let err = connect(proxy.addr, "bob", Some("nope"), "viaclear")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "28P01");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_lets_the_backend_check_the_password() {
    let cluster = Cluster::builder()
        .hba(&["host all carol 127.0.0.1/32 scram-sha-256"])
        .user("carol", "singer", PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            "[[route]]\nauth = \"passthrough\"\ninsecure = true\nbackend = \"postgres://127.0.0.1:{}?sslmode=disable\"\n",
            cluster.port()
        ),
    )
    .await;
    within("passthrough", async {
        let user = current_user(proxy.addr, "carol", Some("singer"), "postgres").await;
        assert_eq!(user, "carol");
        let (sqlstate, message) = refusal(proxy.addr, "carol", Some("flat"), "postgres").await;
        assert_eq!(
            sqlstate, "28P01",
            "the backend's own refusal reaches the client"
        );
        assert!(message.contains("carol"), "{message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_in_order_and_captures_map_the_backend_user() {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    cluster.execute_sql("CREATE ROLE app_alice LOGIN").unwrap();
    cluster.execute_sql("CREATE DATABASE tenant_one").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            r#"
[[route]]
match = {{ user = "/^(.*)@example\\.com$/", database = "/tenant_(?P<tenant>.*)/" }}
auth = "trust"
backend = "postgres://app_${{1}}@127.0.0.1:{port}/tenant_${{tenant}}?sslmode=disable"

[[route]]
match = {{ user = "postgres" }}
auth = "trust"
backend = "postgres://127.0.0.1:{port}?sslmode=disable&application_name=from_url"
"#,
            port = cluster.port()
        ),
    )
    .await;
    within("routing", async {
        let client = connect(proxy.addr, "alice@example.com", None, "tenant_one")
            .await
            .unwrap();
        let row = client
            .query_one("SELECT current_user::text, current_database()::text", &[])
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, String>(1)),
            ("app_alice".into(), "tenant_one".into())
        );

        let client = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .unwrap();
        let name: String = client
            .query_one("SHOW application_name", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, "from_url");

        let (sqlstate, message) = refusal(proxy.addr, "eve", None, "postgres").await;
        assert_eq!(sqlstate, "28000");
        assert!(
            message.contains("no route") && message.contains("eve"),
            "{message}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_is_a_clear_08001() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = start_proxy(
        dir.path(),
        &format!("[[route]]\nauth = \"trust\"\nbackend = \"postgres://127.0.0.1:{port}?sslmode=disable\"\n"),
    )
    .await;
    within("unreachable backend", async {
        let (sqlstate, message) = refusal(proxy.addr, "x", None, "y").await;
        assert_eq!(sqlstate, "08001");
        // The reason, but not the backend's address: the network behind the proxy is the
        // operator's business (the log line has it).
        assert_eq!(
            message,
            "could not connect to the backend: connection refused"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_clear_need_tls_unless_the_route_says_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let file = pgbastion_proxy::config::SourceFile {
        path: dir.path().join("p.toml"),
        text: "[[user]]\nname = \"a\"\npassword = \"b\"\n\n[[route]]\nauth = \"cleartext\"\nbackend = \"postgres://h/db\"\n".into(),
    };
    let err = pgbastion_proxy::Settings::from_source(&file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(":6:") && err.contains("insecure = true") && err.contains("TLS"),
        "{err}"
    );
}

/// Writes an executable POSIX sh authenticator into `dir` and returns its path.
fn write_authenticator(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;

    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_routes_take_user_and_database_from_the_authenticator_then_the_url() {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    cluster
        .execute_sql("CREATE ROLE url_user LOGIN; CREATE ROLE mapped LOGIN")
        .unwrap();
    cluster.execute_sql("CREATE DATABASE url_db").unwrap();
    cluster.execute_sql("CREATE DATABASE chosen_db").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // erin is mapped to the user "mapped", frank to the database "chosen_db"; dave gets
    // nothing, so the URL's user and database apply.
    let script = write_authenticator(
        dir.path(),
        "pick.sh",
        "while IFS='=' read -r k v; do\n  case \"$k\" in user) u=$v;; esac\ndone\n\
         [ \"$u\" = erin ] && echo user=mapped\n\
         [ \"$u\" = frank ] && echo database=chosen_db\n\
         exit 0\n",
    );
    let proxy = start_proxy(
        dir.path(),
        &format!(
            "[[route]]\nauth = \"external\"\ninsecure = true\n\
             backend = \"postgres://url_user@127.0.0.1:{}/url_db?sslmode=disable\"\n\
             external = {{ command = [\"{}\"] }}\n",
            cluster.port(),
            script.display()
        ),
    )
    .await;
    within("external user and database", async {
        for (client, expected) in [
            ("dave", ("url_user", "url_db")),
            ("erin", ("mapped", "url_db")),
            ("frank", ("url_user", "chosen_db")),
        ] {
            let conn = connect(proxy.addr, client, Some("pw"), "client_db")
                .await
                .unwrap_or_else(|e| panic!("{client}: {e}"));
            let row = conn
                .query_one("SELECT current_user::text, current_database()::text", &[])
                .await
                .unwrap();
            assert_eq!(
                (row.get::<_, String>(0), row.get::<_, String>(1)),
                (expected.0.to_owned(), expected.1.to_owned()),
                "{client}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_tenant_ca_file_is_chosen_per_connection_and_a_missing_one_is_08001() {
    let ca = pgbastion_testkit::TestCa::new("tenant CA").unwrap();
    let cluster = Cluster::builder()
        .tls(&ca)
        .hba(&["hostssl all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    ca.write_cert(&dir.path().join("certs"), "t1").unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            "[[route]]\nmatch = {{ database = \"/(?P<tenant>.*)/\" }}\nauth = \"trust\"\n\
             backend = \"postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert=certs/${{tenant}}.crt\"\n",
            cluster.port()
        ),
    )
    .await;
    within("per-tenant CA", async {
        let client = connect(proxy.addr, "postgres", None, "t1").await.unwrap();
        assert!(
            backend_uses_tls(&client).await,
            "the backend connection is encrypted"
        );

        let (sqlstate, message) = refusal(proxy.addr, "postgres", None, "t2").await;
        assert_eq!(sqlstate, "08001");
        assert!(message.contains("TLS to the backend"), "{message}");
        assert!(
            !message.contains("certs/"),
            "no file paths to clients: {message}"
        );

        // certs/../certs/t1.crt exists, but a client may not leave the directory.
        let err = connect(proxy.addr, "postgres", None, "../certs/t1")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "08001");

        connect(proxy.addr, "postgres", None, "t1").await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_refusal_names_the_client_user_and_not_the_mapped_role() {
    let cluster = Cluster::builder()
        .hba(&["host all tenant_role 127.0.0.1/32 scram-sha-256"])
        .user("tenant_role", "tenant pw", PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    cluster.execute_sql("CREATE ROLE unlisted LOGIN").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The second route's role has no pg_hba.conf line: PostgreSQL's refusal names the
    // proxy's address, the role and the database.
    let proxy = start_proxy(
        dir.path(),
        &format!(
            r#"
[[route]]
match = {{ database = "nohba" }}
auth = "passthrough"
insecure = true
backend = "postgres://unlisted@127.0.0.1:{port}/postgres?sslmode=disable"

[[route]]
auth = "passthrough"
insecure = true
backend = "postgres://tenant_role@127.0.0.1:{port}/postgres?sslmode=disable"
"#,
            port = cluster.port()
        ),
    )
    .await;
    within("passthrough refusals", async {
        for database in ["postgres", "nohba"] {
            let (sqlstate, message) = refusal(proxy.addr, "alice", Some("flat"), database).await;
            assert_eq!(
                (sqlstate.as_str(), message.as_str()),
                ("28P01", "password authentication failed for user \"alice\""),
                "{database}: what PostgreSQL says for the client's own user"
            );
        }
        let user = current_user(proxy.addr, "alice", Some("tenant pw"), "postgres").await;
        assert_eq!(user, "tenant_role", "still serving");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_parameter_named_like_an_authenticator_input_cannot_feed_it() {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Like many authenticators, this one keeps the first occurrence of each key.
    let script = write_authenticator(
        dir.path(),
        "first.sh",
        "while IFS= read -r line; do\n  k=${line%%=*}; v=${line#*=}\n\
         case \"$k\" in _SOURCE_CRED) [ -z \"${cred+x}\" ] && cred=$v;; esac\ndone\n\
         [ \"$cred\" = 'right pw' ] || exit 1\nexit 0\n",
    );
    let proxy = start_proxy(
        dir.path(),
        &format!(
            "[[route]]\nauth = \"external\"\ninsecure = true\n\
             backend = \"postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable\"\n\
             external = {{ command = [\"{}\"] }}\n",
            cluster.port(),
            script.display()
        ),
    )
    .await;
    within("external authenticator inputs", async {
        let mut raw = pgbastion_testkit::RawClient::connect(proxy.addr)
            .await
            .unwrap();
        raw.send_startup(&[
            ("user", "mallory"),
            ("database", "postgres"),
            ("_SOURCE_CRED", "right pw"),
        ])
        .await
        .unwrap();
        let error = raw
            .authenticate("mallory", Some("wrong"))
            .await
            .unwrap_err();
        let error = error.server_error().unwrap_or_else(|| panic!("{error}"));
        assert_eq!(
            (error.sqlstate().unwrap().as_str(), error.message()),
            (
                "28P01",
                "password authentication failed for user \"mallory\""
            )
        );
        let user = current_user(proxy.addr, "postgres", Some("right pw"), "postgres").await;
        assert_eq!(user, "postgres", "the real credential still works");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_options_routing_token_is_removed_before_the_backend_sees_the_options() {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    cluster.execute_sql("CREATE DATABASE ep1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            r#"
[[route]]
match = {{ options = "/.*endpoint=(\\w+).*/" }}
auth = "trust"
backend = "postgres://postgres@127.0.0.1:{port}/${{1}}?sslmode=disable"
"#,
            port = cluster.port()
        ),
    )
    .await;
    within("options routing", async {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(proxy.addr.port())
            .user("postgres")
            .dbname("postgres")
            .options("endpoint=ep1 -c search_path=routed")
            .connect_timeout(std::time::Duration::from_secs(10));
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("the routing token reached the backend: {e}"));
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT current_database()::text, current_setting('search_path')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, String>(1)),
            ("ep1".into(), "routed".into()),
            "routed by the token, and the other options still reach the backend"
        );
    })
    .await;
}
