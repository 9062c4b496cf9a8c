#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! The query audit (`[audit]`) of the real binary in front of a real cluster: psql sessions
//! authenticated with a SCRAM, MD5, cleartext or passed-through password, an external
//! authenticator, a client certificate, a JWT and OAUTHBEARER, on a transparent
//! and a pooled listener, each leave their events in order (start with the identity, the
//! Query, the Parse, the error with its SQLSTATE, the end); `redact_literals` hides the
//! values; a destination nobody reads drops events (counted) without slowing the sessions;
//! SIGUSR1 reopens the file. No password or token reaches an audit or a log line.

#[path = "common/binary.rs"]
mod binary;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use binary::{free_ports, Bastion};
use pgbastion_testkit::{Cluster, PasswordEncryption, TestCa, TestIssuer};
use serde_json::Value;

const BACKEND_PW: &str = "audit-backend-pw-71";
const SCRAM_PW: &str = "audit-scram-pw-c3";
const MD5_PW: &str = "audit-md5-pw-5e";
const CLEAR_PW: &str = "audit-clear-pw-8b";
/// The password the external authenticator accepts for `euser`.
const EXT_PW: &str = "audit-ext-pw-2d";
/// Secrets written into statements, which the audit must hide whatever its settings.
const ROLE_PW: &str = "role-secret-9q";
const MAPPING_PW: &str = "mapping-secret-4z";
const AUDIENCE: &str = "pgbastion";
/// The `sub` of the token `juser` logs in with (its user name is another claim).
const SUBJECT: &str = "subject-7f3a";

/// What each audited session runs: a Query, a Parse (psql's `\gdesc` prepares the
/// statement), an error.
const SCRIPT: &str = "SELECT 1 AS one;\nSELECT 'lit-value', 42 \\gdesc\nSELECT 1/0;\n";

/// The external authenticator: accepts `euser` with [`EXT_PW`] (both from its environment,
/// which pgbastion passes on) and maps it to the backend's `app`.
const AUTHENTICATOR: &str = "while IFS='=' read -r k v; do\n\
     case \"$k\" in user) u=$v;; _SOURCE_CRED) c=$v;; esac\ndone\n\
     [ \"$u\" = euser ] && [ \"$c\" = \"$EXT_PW\" ] || exit 1\n\
     echo user=app\necho \"_META_TARGET_CRED=$BACKEND_PW\"\n";

/// A cluster, a CA with the server's and a client's certificates, and an issuer of tokens.
struct Setup {
    cluster: Cluster,
    ca: TestCa,
    issuer: TestIssuer,
    /// Holds the issuer's server (pgbastion reads its key from a file), and runs the raw
    /// client.
    runtime: tokio::runtime::Runtime,
    /// The client certificate and key files for psql.
    client_files: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let issuer = runtime.block_on(TestIssuer::start());
        let cluster = Cluster::builder()
            .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
            .user("app", BACKEND_PW, PasswordEncryption::ScramSha256)
            .start()
            .unwrap();
        let ca = TestCa::new("audit test CA").unwrap();
        let client_files = tempfile::tempdir().unwrap();
        let client = ca.client_cert("certuser").unwrap();
        std::fs::write(client_files.path().join("client.crt"), &client.cert_pem).unwrap();
        let key = client_files.path().join("client.key");
        std::fs::write(&key, &client.key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            cluster,
            ca,
            issuer,
            runtime,
            client_files,
        }
    }

    /// pgbastion with a transparent and a pooled listener (both TLS), a metrics endpoint,
    /// routes for `suser` (scram), `certuser` (cert) and `juser` (jwt), and `audit`.
    fn start(&self, ports: &[u16], audit: &str) -> Bastion {
        let backend = format!(
            "postgres://app:${{BACKEND_PW}}@127.0.0.1:{}/postgres?sslmode=disable",
            self.cluster.port()
        );
        let route = |user: &str, auth: &str| {
            format!(
                "[[route]]\nmatch = {{ user = \"{user}\" }}\nauth = \"{auth}\"\n\
                 backend = \"{backend}\"\npool = {{ mode = \"transaction\", size = 2 }}\n"
            )
        };
        // Not pooled: pgbastion cannot pool a password it does not check.
        let passthrough = format!(
            "[[route]]\nmatch = {{ user = \"app\" }}\nauth = \"passthrough\"\n\
             backend = \"{backend}\"\n"
        );
        // OAUTHBEARER from the test's raw client, which speaks no TLS.
        let oauth = format!(
            "[[route]]\nmatch = {{ user = \"ouser\" }}\nauth = \"oauth\"\ninsecure = true\n\
             backend = \"{backend}\"\n"
        );
        // The authenticator vouches for euser and maps it to app (password from its env).
        let external = format!(
            "[[route]]\nmatch = {{ user = \"euser\" }}\nauth = \"external\"\n\
             backend = \"{backend}\"\nexternal = {{ command = [\"/bin/sh\", \"authenticator.sh\"] }}\n"
        );
        let tls = r#"tls = { cert = "server.crt", key = "server.key", client_ca = "ca.crt" }"#;
        let config = format!(
            "[[listener]]\naddress = \"127.0.0.1:{}\"\n{tls}\n\n\
             [[listener]]\naddress = \"127.0.0.1:{}\"\nmode = \"pooled\"\n{tls}\n\n\
             [metrics]\naddress = \"127.0.0.1:{}\"\n\n\
             [[user]]\nname = \"suser\"\npassword = \"${{SCRAM_PW}}\"\n\n\
             [[user]]\nname = \"muser\"\npassword = \"${{MD5_PW}}\"\n\n\
             [[user]]\nname = \"cuser\"\npassword = \"${{CLEAR_PW}}\"\n\n\
             [jwt]\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nkeys = [\"rsa.pem\"]\n\
             claim = \"preferred_username\"\n\n\
             {}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n[log]\nlevel = \"debug\"\n\n{audit}\n",
            ports[0],
            ports[1],
            ports[2],
            self.issuer.issuer(),
            route("suser", "scram"),
            route("certuser", "cert"),
            route("juser", "jwt"),
            route("muser", "md5"),
            route("cuser", "cleartext"),
            passthrough,
            external,
            oauth,
        );
        let server = self.ca.server_cert(&["localhost"]).unwrap();
        let pem = self.issuer.public_key_pem("RS256");
        let files = [
            ("server.crt", server.cert_pem.as_str()),
            ("server.key", server.key_pem.as_str()),
            ("ca.crt", &self.ca.cert_pem()),
            ("rsa.pem", pem.as_str()),
            ("authenticator.sh", AUTHENTICATOR),
        ];
        let env = [
            ("BACKEND_PW", BACKEND_PW),
            ("SCRAM_PW", SCRAM_PW),
            ("MD5_PW", MD5_PW),
            ("CLEAR_PW", CLEAR_PW),
            ("EXT_PW", EXT_PW),
        ];
        Bastion::start(&config, &files, &env, &ports[..2])
    }

    /// A token for `juser` (its `preferred_username`) whose subject is [`SUBJECT`].
    fn token(&self) -> String {
        self.token_for("juser")
    }

    /// A token for `user` (its `preferred_username`) whose subject is [`SUBJECT`].
    fn token_for(&self, user: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.issuer.sign(
            "RS256",
            serde_json::json!({
                "iss": self.issuer.issuer(), "aud": AUDIENCE, "sub": SUBJECT,
                "preferred_username": user, "iat": now, "exp": now + 600,
            }),
        )
    }

    /// Runs `script` through psql as `user` on `port` (TLS, SNI `localhost`): with its
    /// password, or with the client certificate when there is none.
    fn psql(&self, port: u16, user: &str, password: Option<&str>, script: &str) {
        self.psql_to(port, user, password, "postgres", script);
    }

    /// [`psql`](Self::psql) to database `dbname`.
    fn psql_to(&self, port: u16, user: &str, password: Option<&str>, dbname: &str, script: &str) {
        let mut conninfo = format!(
            "host=localhost hostaddr=127.0.0.1 port={port} user={user} dbname={dbname} \
             sslmode=require connect_timeout=10"
        );
        if password.is_none() {
            let dir = self.client_files.path();
            conninfo += &format!(
                " sslcert={} sslkey={}",
                dir.join("client.crt").display(),
                dir.join("client.key").display()
            );
        }
        // Under an outer timeout: a session stuck behind the audit fails instead of hanging.
        let mut child = Command::new("timeout")
            .args(["60", "psql", "-X", "-q", "-f", "-", &conninfo])
            .env("PGPASSWORD", password.unwrap_or(""))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{user} on {port}: {stderr}");
        assert!(
            stderr.contains("division by zero") || !script.contains("1/0"),
            "{user} on {port}: {stderr}"
        );
    }
}

/// The audit file of `bastion`.
fn audit_path(bastion: &Bastion) -> PathBuf {
    bastion.config_path().with_file_name("audit.jsonl")
}

/// The events of the audit file at `path`, once it holds `sessions` session ends (waits at
/// most 30 s).
fn audited(path: &Path, sessions: usize) -> Vec<Value> {
    audited_until(path, "session_end", sessions)
}

/// The events of the audit file at `path`, once it holds `count` events of kind `event`
/// (waits at most 30 s).
fn audited_until(path: &Path, event: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let events: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect();
        if events.iter().filter(|e| e["event"] == event).count() >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{count} {event} events never came:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The events of the session whose start has `user` and `pooled`, in order.
fn session_of(events: &[Value], user: &str, pooled: bool) -> Vec<Value> {
    let start = events
        .iter()
        .find(|e| e["event"] == "session_start" && e["user"] == user && e["pooled"] == pooled)
        .unwrap_or_else(|| panic!("no session of {user} (pooled: {pooled}): {events:#?}"));
    events
        .iter()
        .filter(|e| e["session"] == start["session"])
        .cloned()
        .collect()
}

/// The texts [`SCRIPT`]'s Query and Parse are audited with.
const TEXTS: (&str, &str) = ("SELECT 1 AS one;", "SELECT 'lit-value', 42 ");
/// The same with `redact_literals`.
const REDACTED: (&str, &str) = ("SELECT ? AS one;", "SELECT ?, ? ");

/// Asserts that `session` starts, runs [`SCRIPT`] in order (its Query and Parse audited
/// with `texts`), and ends; returns its start.
fn assert_in_order(session: &[Value], (query_text, parse_text): (&str, &str)) -> Value {
    let kinds: Vec<&str> = session
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"session_start"), "{session:#?}");
    assert_eq!(kinds.last(), Some(&"session_end"), "{session:#?}");
    let position = |what: &dyn Fn(&Value) -> bool| {
        session
            .iter()
            .position(what)
            .unwrap_or_else(|| panic!("missing from {session:#?}"))
    };
    let query = position(&|e| e["event"] == "query" && e["text"] == query_text);
    let parse = position(&|e| e["event"] == "parse" && e["text"] == parse_text);
    let error = position(&|e| e["event"] == "error" && e["sqlstate"] == "22012");
    assert!(query < parse && parse < error, "{session:#?}");
    let end = session.last().unwrap();
    assert_eq!(end["ended_by"], "terminate", "{end}");
    assert!(end["transactions"].as_u64().unwrap() >= 3, "{end}");
    assert!(end["bytes_from_client"].as_u64().unwrap() > 0, "{end}");
    assert!(end["bytes_to_client"].as_u64().unwrap() > 0, "{end}");
    assert_eq!(end["dropped"], 0, "{end}");
    for (seq, event) in session.iter().enumerate() {
        assert_eq!(event["seq"], seq, "{event}");
        assert!(event["time"].as_str().unwrap().ends_with('Z'), "{event}");
        assert_eq!(event["pid"], session[0]["pid"], "{event}");
    }
    session[0].clone()
}

/// Asserts that no secret is in the audit text.
fn assert_no_secrets(audit: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !audit.contains(secret),
            "the secret {secret:?} reached the audit log:\n{audit}"
        );
    }
}

/// Logs in as `user` with OAUTHBEARER carrying `token` (plaintext, a raw client), runs one
/// Query and one failing Query, and terminates.
async fn oauthbearer_session(port: u16, user: &str, token: &str) {
    use pgbastion_wire::{Authentication, BackendMessage, FrontendMessage};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut raw = pgbastion_testkit::RawClient::connect(addr).await.unwrap();
    raw.send_startup(&[("user", user), ("database", "postgres")])
        .await
        .unwrap();
    let offered = raw.read().await.unwrap();
    assert!(
        matches!(&offered, BackendMessage::Authentication(Authentication::Sasl { mechanisms }) if mechanisms == &["OAUTHBEARER"]),
        "{offered:?}"
    );
    // RFC 7628: the GS2 header, then `auth=Bearer <token>` between ^A separators.
    let data = format!("n,,\x01auth=Bearer {token}\x01\x01");
    let mechanism = b"OAUTHBEARER\0";
    let length = 4 + mechanism.len() + 4 + data.len();
    let mut message = vec![b'p'];
    message.extend_from_slice(&u32::try_from(length).unwrap().to_be_bytes());
    message.extend_from_slice(mechanism);
    message.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    message.extend_from_slice(data.as_bytes());
    raw.send_raw(&message).await.unwrap();
    let greeting = raw.read_until_ready().await.unwrap();
    assert!(
        matches!(
            greeting[0],
            BackendMessage::Authentication(Authentication::Ok)
        ),
        "{greeting:?}"
    );
    raw.simple_query(TEXTS.0).await.unwrap();
    raw.simple_query("SELECT 1/0;").await.unwrap();
    raw.send(&FrontendMessage::Terminate).await.unwrap();
}

#[test]
fn an_oauthbearer_session_is_audited_with_the_tokens_subject_and_no_token() {
    let setup = Setup::new();
    let ports = free_ports(3);
    let bastion = setup.start(&ports, "[audit]\ndestination = \"audit.jsonl\"\n");
    let token = setup.token_for("ouser");
    setup
        .runtime
        .block_on(oauthbearer_session(ports[0], "ouser", &token));
    let events = audited(&audit_path(&bastion), 1);
    let session = session_of(&events, "ouser", false);
    let kinds: Vec<&str> = session
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["session_start", "query", "query", "error", "session_end"],
        "{session:#?}"
    );
    let start = &session[0];
    assert_eq!(start["auth"], "oauth", "{start}");
    assert_eq!(start["identity"], SUBJECT, "{start}");
    assert_eq!(start["route"], 8, "{start}");
    assert_eq!(start["tls"], Value::Null, "{start}");
    assert_eq!(session[1]["text"], TEXTS.0, "{session:#?}");
    assert_eq!(session[3]["sqlstate"], "22012", "{session:#?}");
    assert_eq!(session[4]["ended_by"], "terminate", "{session:#?}");
    let audit = std::fs::read_to_string(audit_path(&bastion)).unwrap();
    assert_no_secrets(&audit, &[token.as_str()]);
    bastion.finish(&[token.as_str()]);
}

#[test]
fn admin_console_commands_are_audited_with_their_outcome_and_no_text_of_a_non_command() {
    let setup = Setup::new();
    let ports = free_ports(3);
    let bastion = setup.start(
        &ports,
        "[audit]\ndestination = \"audit.jsonl\"\n\n[admin]\nusers = [\"suser\"]\n",
    );
    let script = "SHOW VERSION;\nkill_client 999999;\nnot a command 'typed-secret-3k';\n";
    setup.psql_to(ports[0], "suser", Some(SCRAM_PW), "pgbastion", script);
    let events = audited_until(&audit_path(&bastion), "admin_command", 3);
    let commands: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "admin_command")
        .collect();
    let seen: Vec<(&Value, &Value)> = commands
        .iter()
        .map(|e| (&e["command"], &e["sqlstate"]))
        .collect();
    assert_eq!(
        seen,
        [
            (&Value::from("SHOW VERSION"), &Value::Null),
            (&Value::from("KILL_CLIENT 999999"), &Value::from("42704")),
            (&Value::Null, &Value::from("42601")),
        ],
        "{commands:#?}"
    );
    for (seq, event) in commands.iter().enumerate() {
        assert_eq!(event["user"], "suser", "{event}");
        assert_eq!(event["seq"], seq, "{event}");
        assert_eq!(event["session"], commands[0]["session"], "{event}");
        assert!(
            event["client_addr"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{event}"
        );
    }
    let audit = std::fs::read_to_string(audit_path(&bastion)).unwrap();
    assert_no_secrets(&audit, &["typed-secret-3k", SCRAM_PW]);
}

#[test]
fn sessions_of_every_auth_mode_on_both_listeners_are_audited_in_order_without_secrets() {
    let setup = Setup::new();
    let ports = free_ports(3);
    let bastion = setup.start(&ports, "[audit]\ndestination = \"audit.jsonl\"\n");
    let token = setup.token();
    for port in &ports[..2] {
        setup.psql(*port, "suser", Some(SCRAM_PW), SCRIPT);
        setup.psql(*port, "certuser", None, SCRIPT);
        setup.psql(*port, "juser", Some(&token), SCRIPT);
        setup.psql(*port, "muser", Some(MD5_PW), SCRIPT);
        setup.psql(*port, "cuser", Some(CLEAR_PW), SCRIPT);
    }
    setup.psql(ports[0], "app", Some(BACKEND_PW), SCRIPT);
    setup.psql(ports[0], "euser", Some(EXT_PW), SCRIPT);
    let events = audited(&audit_path(&bastion), 12);
    for pooled in [false, true] {
        let scram = assert_in_order(&session_of(&events, "suser", pooled), TEXTS);
        let cert = assert_in_order(&session_of(&events, "certuser", pooled), TEXTS);
        let jwt = assert_in_order(&session_of(&events, "juser", pooled), TEXTS);
        let md5 = assert_in_order(&session_of(&events, "muser", pooled), TEXTS);
        let clear = assert_in_order(&session_of(&events, "cuser", pooled), TEXTS);
        for (start, auth, route, identity) in [
            (&scram, "scram", 1, "suser"),
            (&cert, "cert", 2, "certuser"),
            (&jwt, "jwt", 3, SUBJECT),
            (&md5, "md5", 4, "muser"),
            (&clear, "cleartext", 5, "cuser"),
        ] {
            assert_eq!(start["auth"], auth, "{start}");
            assert_eq!(start["route"], route, "{start}");
            assert_eq!(start["identity"], identity, "{start}");
            assert_eq!(start["backend_user"], "app", "{start}");
            assert_eq!(start["backend_database"], "postgres", "{start}");
            assert_eq!(start["database"], "postgres", "{start}");
            assert!(
                start["client_addr"]
                    .as_str()
                    .unwrap()
                    .starts_with("127.0.0.1:"),
                "{start}"
            );
            assert_eq!(start["tls"]["sni"], "localhost", "{start}");
            assert!(
                start["tls"]["version"].as_str().unwrap().starts_with("TLS"),
                "{start}"
            );
        }
        assert_eq!(cert["tls"]["client_subject"], "CN=certuser", "{cert}");
        assert_eq!(scram["tls"]["client_subject"], Value::Null, "{scram}");
    }
    let passthrough = assert_in_order(&session_of(&events, "app", false), TEXTS);
    assert_eq!(passthrough["auth"], "passthrough", "{passthrough}");
    assert_eq!(passthrough["identity"], "app", "{passthrough}");
    let external = assert_in_order(&session_of(&events, "euser", false), TEXTS);
    assert_eq!(external["auth"], "external", "{external}");
    assert_eq!(external["identity"], "euser", "{external}");
    assert_eq!(external["backend_user"], "app", "{external}");
    let audit = std::fs::read_to_string(audit_path(&bastion)).unwrap();
    let secrets = [
        SCRAM_PW,
        MD5_PW,
        CLEAR_PW,
        EXT_PW,
        BACKEND_PW,
        token.as_str(),
    ];
    assert_no_secrets(&audit, &secrets);
    bastion.finish(&secrets);
}

#[test]
fn redacted_literals_leave_no_value_in_the_audit_and_sigusr1_reopens_the_file() {
    let setup = Setup::new();
    let ports = free_ports(3);
    let bastion = setup.start(
        &ports,
        "[audit]\ndestination = \"audit.jsonl\"\nredact_literals = true\n",
    );
    setup.psql(ports[1], "suser", Some(SCRAM_PW), SCRIPT);
    let path = audit_path(&bastion);
    let events = audited(&path, 1);
    let session = session_of(&events, "suser", true);
    assert_in_order(&session, REDACTED);
    let error = session.iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(error["message"], Value::Null, "{error}");
    let audit = std::fs::read_to_string(&path).unwrap();
    assert!(!audit.contains("lit-value"), "{audit}");
    assert!(!audit.contains("division"), "{audit}");

    // Moved away and reopened: the next session goes to a new file at the path.
    let moved = path.with_file_name("audit.jsonl.1");
    std::fs::rename(&path, &moved).unwrap();
    bastion.signal(nix::sys::signal::Signal::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bastion
        .log()
        .iter()
        .any(|line| line.contains("audit log reopened"))
    {
        assert!(Instant::now() < deadline, "no reopen:\n{:?}", bastion.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    setup.psql(ports[0], "suser", Some(SCRAM_PW), SCRIPT);
    let events = audited(&path, 1);
    assert_in_order(&session_of(&events, "suser", false), REDACTED);
    assert_eq!(
        std::fs::read_to_string(&moved).unwrap(),
        audit,
        "the moved file got nothing more"
    );
    bastion.finish(&[SCRAM_PW, BACKEND_PW]);
}

/// The value of the counter `name` at the metrics endpoint on `port`.
fn counter(port: u16, name: &str) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn a_destination_nobody_reads_drops_events_and_counts_them_without_slowing_sessions() {
    let setup = Setup::new();
    let ports = free_ports(3);
    // A FIFO held open for reading and never read: once its buffer (64 KiB) is full the
    // writer is stuck, as on a hung disk or a stopped reader of stdout.
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("audit.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let bastion = setup.start(
        &ports,
        &format!("[audit]\ndestination = \"{}\"\nqueue = 2\n", fifo.display()),
    );
    // Twenty queries of 30 KiB each: more than the FIFO and the queue hold.
    let big = format!("SELECT length('{}');\n", "x".repeat(30 * 1024));
    let started = Instant::now();
    for port in &ports[..2] {
        setup.psql(*port, "suser", Some(SCRAM_PW), &big.repeat(10));
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the sessions waited for the audit"
    );
    // 2 sessions: 2 starts, 20 queries, 2 ends; each written, dropped, or among the five
    // the writer holds (one in its hands, two in the queue, two more starts or ends, which
    // may pass the count bound). The last end may come a moment after psql exits.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (dropped, written) = loop {
        let dropped = counter(ports[2], "pgbastion_audit_events_dropped_total");
        let written = counter(ports[2], "pgbastion_audit_events_written_total");
        if dropped + written + 5 >= 24 || Instant::now() > deadline {
            break (dropped, written);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Whatever the pipe's size, most of the 600 KiB of queries could not be written.
    assert!(dropped >= 10, "dropped {dropped}, written {written}");
    assert!(
        dropped + written + 5 >= 24,
        "dropped {dropped}, written {written}"
    );
    bastion.finish(&[SCRAM_PW, BACKEND_PW]);
}

/// A FIFO at `dir`/audit.fifo, read slowly (1 KiB a millisecond) by a thread that starts
/// when told through the sender (once pgbastion has the FIFO open) and returns what it read
/// once every writer has closed it.
fn slow_fifo(
    dir: &Path,
) -> (
    PathBuf,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Vec<u8>>,
) {
    let fifo = dir.join("audit.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let (opened, writer_opened) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // Until pgbastion has it open, a read says EOF: wait for the test's word.
        writer_opened.recv().unwrap();
        let mut read = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return read,
                Ok(n) => read.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    (fifo, opened, thread)
}

#[test]
fn function_calls_long_texts_and_secret_statements_are_audited_and_sigterm_writes_every_event() {
    let setup = Setup::new();
    let ports = free_ports(3);
    let dir = tempfile::tempdir().unwrap();
    let (fifo, start_reading, reader) = slow_fifo(dir.path());
    let bastion = setup.start(
        &ports,
        &format!("[audit]\ndestination = \"{}\"\n", fifo.display()),
    );
    start_reading.send(()).unwrap();
    // psql's \lo_unlink calls lo_unlink through the fast path (a FunctionCall message).
    let padding = "x".repeat(70_000);
    // One Query (psql sends `\\;` as `;` without splitting there): a statement hidden
    // behind 70000 bytes of padding.
    let long = format!("SELECT 1 /* {padding} */ ; SELECT 'tail-visible' AS t;");
    let script = format!(
        "\\lo_unlink 4242424\n\
         CREATE ROLE audit_tmp LOGIN PASSWORD '{ROLE_PW}';\n\
         CREATE USER MAPPING FOR app SERVER nosuch OPTIONS (user 'u', password '{MAPPING_PW}');\n\
         {}\n{}",
        long.replace(" ; ", " \\; "),
        format!("SELECT length('{}');\n", "y".repeat(30 * 1024)).repeat(20)
    );
    for port in &ports[..2] {
        setup.psql(*port, "suser", Some(SCRAM_PW), &script);
    }
    // SIGTERM at once: what the slow reader has not taken yet is still written.
    bastion.finish(&[SCRAM_PW, BACKEND_PW, ROLE_PW, MAPPING_PW]);
    let text = String::from_utf8(reader.join().unwrap()).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(text.ends_with('\n'));
    assert_no_secrets(&text, &[ROLE_PW, MAPPING_PW, SCRAM_PW, BACKEND_PW]);
    for pooled in [false, true] {
        let session = session_of(&events, "suser", pooled);
        let end = session.last().unwrap();
        assert_eq!(end["event"], "session_end", "{end}");
        assert_eq!(end["dropped"], 0, "{end}");
        for (seq, event) in session.iter().enumerate() {
            assert_eq!(event["seq"], seq, "{event}");
        }
        let lengths = session
            .iter()
            .filter(|e| e["event"] == "query" && e["text"].as_str().unwrap().contains("length"))
            .count();
        assert_eq!(lengths, 20, "every event arrived");
        let call = session
            .iter()
            .find(|e| e["event"] == "function_call")
            .unwrap_or_else(|| panic!("no function_call: {session:#?}"));
        assert!(call["oid"].as_u64().unwrap() > 0, "{call}");
        assert_eq!(call["args"], 1, "{call}");
        assert_eq!(call["values"].as_array().unwrap().len(), 1, "{call}");
        for secret in ["CREATE ROLE", "CREATE USER MAPPING"] {
            let statement = session
                .iter()
                .find(|e| e["text"].as_str().is_some_and(|t| t.starts_with(secret)))
                .unwrap_or_else(|| panic!("no {secret}: {session:#?}"));
            assert_eq!(statement["redacted"], "secret", "{statement}");
        }
        let cut = session
            .iter()
            .find(|e| e["truncated"] == true)
            .unwrap_or_else(|| panic!("no cut text: {session:#?}"));
        let cut_text = cut["text"].as_str().unwrap();
        assert!(cut_text.starts_with("SELECT 1 /* xxx"), "{cut_text}");
        assert!(
            cut_text.ends_with("*/ ; SELECT 'tail-visible' AS t;"),
            "{cut_text}"
        );
        assert_eq!(cut["length"], long.len(), "{cut}");
        let digest: String = <sha2::Sha256 as sha2::Digest>::digest(long.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(cut["sha256"], digest.as_str(), "{cut}");
    }
}

#[test]
fn a_destination_that_fails_counts_the_lost_events_as_dropped_and_warns_once() {
    let setup = Setup::new();
    let ports = free_ports(3);
    let bastion = setup.start(&ports, "[audit]\ndestination = \"/dev/full\"\n");
    setup.psql(ports[0], "suser", Some(SCRAM_PW), SCRIPT);
    let deadline = Instant::now() + Duration::from_secs(30);
    // start, Query, Parse (and psql's own), error, end: at least 5.
    while counter(ports[2], "pgbastion_audit_events_dropped_total") < 5 {
        assert!(Instant::now() < deadline, "{:?}", bastion.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(counter(ports[2], "pgbastion_audit_events_written_total"), 0);
    let warnings = bastion
        .log()
        .iter()
        .filter(|line| line.contains("cannot write to the audit log"))
        .count();
    assert_eq!(warnings, 1, "{:?}", bastion.log());
    bastion.finish(&[SCRAM_PW, BACKEND_PW]);
}

#[test]
fn a_fifo_nobody_reads_is_refused_at_start_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let ports = free_ports(1);
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{}\"\n\n[[route]]\nauth = \"passthrough\"\ninsecure = true\n\
         backend = \"postgres://a@127.0.0.1:1/a\"\n\n\
         [audit]\ndestination = \"{}\"\n",
        ports[0],
        fifo.display()
    );
    let config_path = dir.path().join("pgbastion.toml");
    std::fs::write(&config_path, config).unwrap();
    let output = Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_pgbastion"), "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the audit log") && stderr.contains("open for reading"),
        "{stderr}"
    );
}
