#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Sessions through the proxy: backend TLS, cancel, client addresses, backend failure,
//! limits, and real clients (psql, pgbench).

mod common;

use std::time::{Duration, Instant};

use common::*;
use pgbastion_testkit::{Cluster, RawClient, TestCa};

fn trust_cluster() -> Cluster {
    Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap()
}

fn trust_route(cluster: &Cluster, extra: &str) -> String {
    format!(
        "[[route]]\nauth = \"trust\"\nbackend = \"{}\"\n{extra}\n",
        backend_url(cluster, "postgres", None, "postgres")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_verify_full_and_a_wrong_ca_is_refused() {
    let ca = TestCa::new("backend CA").unwrap();
    let other = TestCa::new("some other CA").unwrap();
    // SCRAM over TLS: the connector picks SCRAM-SHA-256-PLUS, which the server offers.
    let cluster = Cluster::builder()
        .tls(&ca)
        .hba(&["hostssl all all 127.0.0.1/32 scram-sha-256"])
        .user(
            "secure",
            "tls pw",
            pgbastion_testkit::PasswordEncryption::ScramSha256,
        )
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.write_cert(dir.path(), "ca").unwrap();
    other.write_cert(dir.path(), "other").unwrap();
    let route = |name: &str, ca: &str| {
        format!(
            "[[route]]\nmatch = {{ database = \"{name}\" }}\nauth = \"trust\"\n\
             backend = \"postgres://secure:tls%20pw@localhost:{}/postgres?sslmode=verify-full&sslrootcert={ca}\"\n",
            cluster.port()
        )
    };
    let proxy = start_proxy(
        dir.path(),
        &format!("{}\n{}", route("good", "ca.crt"), route("bad", "other.crt")),
    )
    .await;
    within("backend TLS", async {
        let client = connect(proxy.addr, "postgres", None, "good").await.unwrap();
        assert!(
            backend_uses_tls(&client).await,
            "the backend connection is encrypted"
        );
        let (sqlstate, message) = refusal(proxy.addr, "postgres", None, "bad").await;
        assert_eq!(sqlstate, "08001");
        assert!(message.contains("TLS"), "{message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_backend_through_the_minted_key() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(dir.path(), &trust_route(&cluster, "")).await;
    within("cancel", async {
        let client = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .unwrap();
        let token = client.cancel_token();
        let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
        // Cancel only once the query runs (a cancel that arrives first does nothing).
        let watcher = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .unwrap();
        let running = "SELECT count(*) FROM pg_stat_activity \
                       WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'";
        while watcher
            .query_one(running, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The bound: the error arrives within a second of the cancel request.
        let cancelled = Instant::now();
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let err = sleeper.await.unwrap().err().unwrap();
        assert_eq!(code(&err), "57014");
        assert!(
            cancelled.elapsed() < Duration::from_secs(1),
            "{:?}",
            cancelled.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cancel_keys_do_nothing() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(dir.path(), &trust_route(&cluster, "")).await;
    within("unknown cancel key", async {
        let mut raw = RawClient::startup(proxy.addr, "postgres", "postgres", None)
            .await
            .unwrap();
        let minted = raw.backend_key.clone().unwrap();
        raw.send(&pgbastion_wire::FrontendMessage::Query(
            "SELECT pg_sleep(1)".into(),
        ))
        .await
        .unwrap();
        let mut wrong = RawClient::connect(proxy.addr).await.unwrap();
        wrong
            .send_packet(&pgbastion_wire::StartupPacket::CancelRequest(
                pgbastion_wire::CancelKey::new(minted.process_id, vec![0, 0, 0, 0]),
            ))
            .await
            .unwrap();
        let messages = raw.read_until_ready().await.unwrap();
        assert!(
            !messages
                .iter()
                .any(|m| matches!(m, pgbastion_wire::BackendMessage::ErrorResponse(_))),
            "a wrong secret cancelled the query: {messages:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_terminates_gets_nothing_but_the_end_of_the_connection() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(dir.path(), &trust_route(&cluster, "")).await;
    within("terminate", async {
        for pipelined in [false, true] {
            let mut raw = RawClient::startup(proxy.addr, "postgres", "postgres", None)
                .await
                .unwrap();
            if pipelined {
                // A query sent just before Terminate is still answered, as PostgreSQL does.
                raw.queue(&pgbastion_wire::FrontendMessage::Query("SELECT 1".into()))
                    .unwrap();
            }
            raw.send(&pgbastion_wire::FrontendMessage::Terminate)
                .await
                .unwrap();
            let mut after = Vec::new();
            loop {
                match raw.read().await {
                    Ok(message) => after.push(message),
                    Err(pgbastion_testkit::RawClientError::Closed) => break,
                    Err(other) => panic!("after Terminate: {other}"),
                }
            }
            assert!(
                !after
                    .iter()
                    .any(|m| matches!(m, pgbastion_wire::BackendMessage::ErrorResponse(_))),
                "an error after the client's own Terminate: {after:?}"
            );
            assert_eq!(after.len(), if pipelined { 4 } else { 0 }, "{after:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_run_right_after_a_cancel_returns_is_not_cancelled() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(dir.path(), &trust_route(&cluster, "")).await;
    within("late cancel", async {
        let mut raw = RawClient::startup(proxy.addr, "postgres", "postgres", None)
            .await
            .unwrap();
        for round in 0..5 {
            // The session is idle: the cancel must land (and do nothing) before the cancel
            // connection closes, not during the next statement.
            raw.cancel(proxy.addr).await.unwrap();
            let messages = raw.simple_query("SELECT pg_sleep(0.2)").await.unwrap();
            assert!(
                !messages
                    .iter()
                    .any(|m| matches!(m, pgbastion_wire::BackendMessage::ErrorResponse(_))),
                "round {round}: a late cancel hit the next statement: {messages:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_sessions_see_their_backends_real_pid() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(dir.path(), &trust_route(&cluster, "")).await;
    within("real pid", async {
        let mut raw = RawClient::startup(proxy.addr, "postgres", "postgres", None)
            .await
            .unwrap();
        let minted = raw.backend_key.clone().unwrap();
        let rows = raw.simple_query("SELECT pg_backend_pid()").await.unwrap();
        assert_eq!(minted.process_id.to_string(), data_value(&rows));
        // A NOTIFY from one's own session names one's own backend PID.
        raw.simple_query("LISTEN here").await.unwrap();
        let messages = raw.simple_query("NOTIFY here, 'hi'").await.unwrap();
        let sender = messages.iter().find_map(|m| match m {
            pgbastion_wire::BackendMessage::NotificationResponse { process_id, .. } => {
                Some(*process_id)
            }
            _ => None,
        });
        assert_eq!(sender, Some(minted.process_id), "{messages:?}");
        // And another session can end this one by that PID.
        let other = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .unwrap();
        let pid = i32::try_from(minted.process_id).unwrap();
        let ended: bool = other
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap()
            .get(0);
        assert!(ended);
    })
    .await;
}

fn data_value(messages: &[pgbastion_wire::BackendMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            pgbastion_wire::BackendMessage::DataRow(row) => row
                .get(0)
                .flatten()
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_from_a_trusted_proxy_header_reaches_the_backend() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let config = |trusted: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = \"required\"\ntrusted_proxies = [\"{trusted}\"]\n\n{}",
            trust_route(&cluster, "client_addr = \"options\"")
        )
    };
    let trusting = start_proxy(dir.path(), &config("127.0.0.1/32")).await;
    let distrusting = start_proxy(dir.path(), &config("10.9.9.9/32")).await;
    let header = pgbastion_gateway::proxy_protocol::encode_v2(
        "203.0.113.7:40000".parse().unwrap(),
        trusting.addr,
    )
    .unwrap();
    within("PROXY header in, client address out", async {
        let mut raw = RawClient::connect(trusting.addr).await.unwrap();
        raw.send_raw(&header).await.unwrap();
        raw.send_startup(&[("user", "postgres"), ("database", "postgres")])
            .await
            .unwrap();
        raw.read_until_ready().await.unwrap();
        let rows = raw
            .simple_query("SELECT current_setting('pgbastion.client_addr')")
            .await
            .unwrap();
        assert_eq!(data_value(&rows), "203.0.113.7");

        let mut raw = RawClient::connect(distrusting.addr).await.unwrap();
        raw.send_raw(&header).await.unwrap();
        raw.send_startup(&[("user", "postgres"), ("database", "postgres")])
            .await
            .unwrap();
        // An untrusted peer's header is refused: the connection never gets to ReadyForQuery.
        match raw.read_until_ready().await {
            Err(_) => {}
            Ok(messages) => assert!(
                messages
                    .iter()
                    .any(|m| matches!(m, pgbastion_wire::BackendMessage::ErrorResponse(_))),
                "an untrusted PROXY header was accepted: {messages:?}"
            ),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_gives_the_client_an_error_and_others_carry_on() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(dir.path(), &trust_route(&cluster, "")).await;
    within("backend killed", async {
        let victim = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .unwrap();
        victim
            .batch_execute("BEGIN; CREATE TEMP TABLE t (x int)")
            .await
            .unwrap();
        let pid: i32 = victim
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let killer = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .unwrap();
        killer
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        let err = victim.query_one("SELECT 1", &[]).await.err().unwrap();
        let text = format!("{err}");
        assert!(
            victim.is_closed() || code(&err) == "57P01" || code(&err) == "08006",
            "{text}"
        );
        let survivor: i32 = killer.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
        assert_eq!(survivor, 42);
        let fresh = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .unwrap();
        fresh.query_one("SELECT 1", &[]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_connection_limit_refuses_with_53300() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nmax_connections_per_ip = 2\n\n{}",
            trust_route(&cluster, "")
        ),
    )
    .await;
    within("limits", async {
        let a = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .unwrap();
        let _b = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .unwrap();
        let err = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "53300");
        drop(a);
        // The slot frees when the session ends.
        let mut ok = false;
        for _ in 0..50 {
            if connect(proxy.addr, "postgres", None, "postgres")
                .await
                .is_ok()
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "the slot was not released");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_authenticator_maps_user_and_credential() {
    let cluster = Cluster::builder()
        .hba(&["host all mapped 127.0.0.1/32 md5"])
        .user(
            "mapped",
            "target pw",
            pgbastion_testkit::PasswordEncryption::Md5,
        )
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("auth.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nwhile IFS='=' read -r k v; do\n  case \"$k\" in user) u=$v;; _SOURCE_CRED) c=$v;; esac\ndone\n\
             [ \"$u\" = dave ] && [ \"$c\" = letmein ] || exit 1\n\
             echo user=mapped\necho database=postgres\necho _META_TARGET_HOST=127.0.0.1:{}\n\
             echo _META_TARGET_CRED={}\n",
            cluster.port(),
            pgbastion_auth::md5::md5_hash("mapped", "target pw")
        ),
    )
    .unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            "[[route]]\nauth = \"external\"\ninsecure = true\nbackend = \"postgres://unused:1/x?sslmode=disable\"\n\
             external = {{ command = [\"/bin/sh\", \"{}\"], timeout = \"5s\" }}\n",
            script.display()
        ),
    )
    .await;
    within("external authenticator", async {
        let user = current_user(proxy.addr, "dave", Some("letmein"), "whatever").await;
        assert_eq!(user, "mapped");
        let err = connect(proxy.addr, "dave", Some("wrong"), "whatever")
            .await
            .err()
            .unwrap();
        assert_eq!(code(&err), "28P01");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pgbench_through_the_proxy() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            "[[user]]\nname = \"bench\"\npassword = \"pw\"\n\n[[route]]\nauth = \"scram\"\nbackend = \"{}\"\n",
            backend_url(&cluster, "postgres", None, "postgres")
        ),
    )
    .await;
    let port = proxy.addr.port();
    let run = move |program: &str, args: &[&str]| {
        run_client_program(port, ("bench", Some("pw")), program, args)
    };
    let out = tokio::task::spawn_blocking(move || {
        let psql = run(
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-d",
                "postgres",
                "-c",
                "SELECT 'via psql'",
            ],
        );
        run("pgbench", &["-i", "-s", "1", "-q", "postgres"]);
        let bench = run(
            "pgbench",
            &[
                "-c", "4", "-j", "2", "-T", "2", "-M", "extended", "postgres",
            ],
        );
        (psql, bench)
    });
    let (psql, bench) = within("psql and pgbench", out).await.unwrap();
    assert_eq!(psql.trim(), "via psql");
    assert!(
        bench.contains("number of failed transactions: 0"),
        "{bench}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_notifications_are_relayed() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(dir.path(), &trust_route(&cluster, "")).await;
    within("copy and notify", async {
        let client = connect(proxy.addr, "postgres", None, "postgres")
            .await
            .unwrap();
        client
            .batch_execute("CREATE TEMP TABLE c (n int, s text)")
            .await
            .unwrap();
        let sink = client.copy_in("COPY c FROM STDIN").await.unwrap();
        futures_send(sink, b"1\tone\n2\ttwo\n").await;
        let n: i64 = client
            .query_one("SELECT count(*) FROM c", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 2);

        let mut raw = RawClient::startup(proxy.addr, "postgres", "postgres", None)
            .await
            .unwrap();
        raw.simple_query("LISTEN news").await.unwrap();
        client.batch_execute("NOTIFY news, 'hello'").await.unwrap();
        let messages = raw.simple_query("SELECT 1").await.unwrap();
        assert!(
            messages.iter().any(|m| matches!(
                m,
                pgbastion_wire::BackendMessage::NotificationResponse { .. }
            )),
            "{messages:?}"
        );
    })
    .await;
}

async fn futures_send(sink: tokio_postgres::CopyInSink<bytes::Bytes>, data: &'static [u8]) {
    use futures_util::SinkExt;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from_static(data)).await.unwrap();
    sink.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_can_send_a_proxy_v2_header_to_the_backend() {
    use tokio::io::AsyncReadExt;
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            "[[route]]\nauth = \"trust\"\nproxy_protocol = true\n\
             backend = \"postgres://app@127.0.0.1:{backend_port}/db?sslmode=disable\"\n"
        ),
    )
    .await;
    within("PROXY out", async {
        let client = tokio::spawn(connect(proxy.addr, "someone", None, "db"));
        let (mut stream, _) = backend.accept().await.unwrap();
        let mut buf = Vec::new();
        let info = loop {
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the proxy closed before sending a header");
            buf.extend_from_slice(&chunk[..n]);
            match pgbastion_gateway::proxy_protocol::detect(&buf).unwrap() {
                pgbastion_gateway::proxy_protocol::Detection::Header { info, len } => {
                    break (info, buf.split_off(len));
                }
                pgbastion_gateway::proxy_protocol::Detection::NeedMore => continue,
                other => panic!("no PROXY header: {other:?}"),
            }
        };
        let (info, mut rest) = info;
        while !String::from_utf8_lossy(&rest).contains("user\0app\0") && rest.len() < 4096 {
            let mut chunk = [0u8; 512];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the proxy closed before sending the startup message");
            rest.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(
            info.source.map(|s| s.ip().to_string()).as_deref(),
            Some("127.0.0.1")
        );
        // The startup message follows the header, with the mapped user.
        let text = String::from_utf8_lossy(&rest).into_owned();
        assert!(text.contains("user\0app\0"), "{text:?}");
        drop(stream);
        let err = client.await.unwrap().err().unwrap();
        assert!(code(&err) == "08006" || code(&err) == "08001", "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_backends_and_startup_parameters() {
    let cluster = trust_cluster();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(
        dir.path(),
        &format!(
            "[[route]]\nauth = \"trust\"\nbackend = \"postgresql:///postgres?host={}&port={}&user=postgres\"\n",
            cluster.socket_dir().display(),
            cluster.port()
        ),
    )
    .await;
    within("unix socket backend", async {
        let mut config = tokio_postgres::Config::new();
        config
            .host(proxy.addr.ip().to_string())
            .port(proxy.addr.port())
            .user("client")
            .dbname("ignored")
            .application_name("my-app")
            .options("-c search_path=custom");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT inet_server_addr() IS NULL, current_setting('application_name'), current_setting('search_path')",
                &[],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0), "connected over the Unix socket");
        assert_eq!(row.get::<_, String>(1), "my-app", "application_name is kept");
        assert_eq!(row.get::<_, String>(2), "custom", "client options are passed on");
    })
    .await;
}
