#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! The client matrix: tokio-postgres, psql and pgbench through pgbastion, for every client
//! auth mode (`oauth` aside: it needs a PostgreSQL 18 libpq built with OAuth, and
//! tokens_and_auth_query.rs drives it with the raw client). Each mode also shows one refusal,
//! as tokio-postgres and psql see it, before the good logins prove the proxy kept serving.

mod common;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use pgbastion_testkit::{CertifiedKey, Cluster, PasswordEncryption, TestCa, TestIssuer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

/// Transactions pgbench runs: two clients, ten each.
const PGBENCH_TRANSACTIONS: &str = "number of transactions actually processed: 20/20";
const WRONG_PASSWORD: &str = "not the password";
const PASSWORD_REFUSED: &str = "password authentication failed";

/// A client certificate for the `cert` mode: files for libpq, the same in memory for rustls.
#[derive(Clone)]
struct ClientCert {
    ca_der: Vec<u8>,
    key: CertifiedKey,
    conninfo: String,
}

/// One login to try with every client, and the session user the backend should report.
#[derive(Clone)]
struct Login {
    addr: SocketAddr,
    dir: PathBuf,
    user: String,
    password: Option<String>,
    cert: Option<ClientCert>,
    backend_user: String,
}

impl Login {
    fn new(proxy: &RunningProxy, dir: &Path, user: &str, backend_user: &str) -> Self {
        Self {
            addr: proxy.addr,
            dir: dir.to_owned(),
            user: user.to_owned(),
            password: None,
            cert: None,
            backend_user: backend_user.to_owned(),
        }
    }

    fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    fn user(mut self, user: &str) -> Self {
        self.user = user.to_owned();
        self
    }

    /// A libpq connection string: plaintext, or verify-full TLS with the client certificate.
    fn conninfo(&self) -> String {
        let tls = match &self.cert {
            Some(cert) => cert.conninfo.as_str(),
            None => "host=127.0.0.1 sslmode=disable",
        };
        format!(
            "{tls} port={} user={} dbname=postgres",
            self.addr.port(),
            self.user
        )
    }
}

// --- tokio-postgres ---------------------------------------------------------------------

/// tokio-postgres over rustls with a client certificate. tokio-postgres-rustls is not a
/// dependency, and the cert mode needs only this much of it: no SCRAM, so no channel binding.
struct RustlsConnect(Arc<rustls::ClientConfig>);

struct RustlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl TlsConnect<TcpStream> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: TcpStream) -> Self::Future {
        let server = ServerName::try_from("localhost").unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.0);
        Box::pin(async move { Ok(RustlsStream(connector.connect(server, stream).await?)) })
    }
}

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn rustls_config(cert: &ClientCert) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.ca_der.clone()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(cert.key.cert_der.clone())],
            PrivateKeyDer::from_pem_slice(cert.key.key_pem.as_bytes()).unwrap(),
        )
        .unwrap()
}

async fn connect_with_cert(
    login: &Login,
    cert: &ClientCert,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(&login.user)
        .dbname("postgres")
        .ssl_mode(SslMode::Require);
    let tcp = TcpStream::connect(login.addr).await.unwrap();
    let tls = RustlsConnect(Arc::new(rustls_config(cert)));
    let (client, connection) = config.connect_raw(tcp, tls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn tokio_postgres_user(login: &Login) -> Result<String, tokio_postgres::Error> {
    let client = match &login.cert {
        Some(cert) => connect_with_cert(login, cert).await?,
        None => {
            connect(
                login.addr,
                &login.user,
                login.password.as_deref(),
                "postgres",
            )
            .await?
        }
    };
    let row = client.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

// --- psql and pgbench -------------------------------------------------------------------

/// Runs a libpq program with the login's password; its stdout, or its exit status and stderr.
fn run_libpq(login: &Login, program: &str, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new(program);
    command.args(args).env("PGCONNECT_TIMEOUT", "10");
    match &login.password {
        Some(password) => command.env("PGPASSWORD", password),
        None => command.env_remove("PGPASSWORD"),
    };
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{program} {}: {stdout}\n{stderr}", output.status))
    }
}

fn psql_user(login: &Login) -> Result<String, String> {
    let conninfo = login.conninfo();
    let args = ["-X", "-tA", "-d", &conninfo, "-c", "SELECT current_user"];
    run_libpq(login, "psql", &args)
}

/// Each pgbench client logs in on its own, so two clients are two more logins.
fn pgbench(login: &Login) -> Result<String, String> {
    let script = login.dir.join("select_one.sql");
    std::fs::write(&script, "SELECT 1;\n").unwrap();
    let script = script.display().to_string();
    let conninfo = login.conninfo();
    let args = [
        "-n", "-c", "2", "-j", "2", "-t", "10", "-f", &script, &conninfo,
    ];
    run_libpq(login, "pgbench", &args)
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

// --- the checks -------------------------------------------------------------------------

/// tokio-postgres, psql and pgbench all log in, and the backend reports the mapped user.
async fn every_client_logs_in(login: &Login) {
    let user = tokio_postgres_user(login).await;
    let user = user.unwrap_or_else(|e| panic!("tokio-postgres as {}: {e:?}", login.user));
    assert_eq!(user, login.backend_user, "tokio-postgres");
    let both = login.clone();
    let (psql, bench) = blocking(move || (psql_user(&both), pgbench(&both))).await;
    assert_eq!(psql, Ok(login.backend_user.clone()), "psql");
    let bench = bench.unwrap_or_else(|e| panic!("{e}"));
    assert!(bench.contains(PGBENCH_TRANSACTIONS), "pgbench: {bench}");
}

/// tokio-postgres gets `sqlstate` and psql fails, both with a message containing `message`.
async fn both_clients_are_refused(login: &Login, sqlstate: &str, message: &str) {
    let err = tokio_postgres_user(login).await.err();
    let err = err.unwrap_or_else(|| panic!("tokio-postgres as {} got in", login.user));
    assert_eq!(code(&err), sqlstate, "tokio-postgres: {err:?}");
    let seen = err.as_db_error().unwrap().message();
    assert!(seen.contains(message), "tokio-postgres: {seen}");
    let refused = login.clone();
    let psql = blocking(move || psql_user(&refused)).await;
    let stderr = psql
        .err()
        .unwrap_or_else(|| panic!("psql as {} got in", login.user));
    assert!(stderr.contains(message), "psql: {stderr}");
}

/// A wrong password is refused (28P01) by both clients; then every client logs in.
async fn password_mode(login: Login, refusal: &str) {
    within("refusal, then every client", async {
        let wrong = login.clone().password(WRONG_PASSWORD);
        both_clients_are_refused(&wrong, "28P01", refusal).await;
        every_client_logs_in(&login).await;
    })
    .await;
}

// --- fixtures ---------------------------------------------------------------------------

/// A cluster that trusts 127.0.0.1, with these login roles.
fn trust_cluster(roles: &[&str]) -> Cluster {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 trust"])
        .start()
        .unwrap();
    for role in roles {
        cluster
            .execute_sql(&format!("CREATE ROLE {role} LOGIN"))
            .unwrap();
    }
    cluster
}

/// A cluster that wants SCRAM from everyone on 127.0.0.1, with this user.
fn scram_cluster(user: &str, password: &str) -> Cluster {
    Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
        .user(user, password, PasswordEncryption::ScramSha256)
        .start()
        .unwrap()
}

fn route(auth: &str, backend: &str, extra: &str) -> String {
    format!("[[route]]\nauth = \"{auth}\"\nbackend = \"{backend}\"\n{extra}\n")
}

/// `[[user]]` alice / wonderland, and a route of `auth` that logs in as `app_<auth>`.
async fn stored_password_mode(auth: &str, extra: &str) {
    let backend_user = format!("app_{auth}");
    let cluster = trust_cluster(&[&backend_user]);
    let dir = tempfile::tempdir().unwrap();
    let backend = backend_url(&cluster, &backend_user, None, "postgres");
    let config = format!(
        "[[user]]\nname = \"alice\"\npassword = \"wonderland\"\n\n{}",
        route(auth, &backend, extra)
    );
    let proxy = start_proxy(dir.path(), &config).await;
    let login = Login::new(&proxy, dir.path(), "alice", &backend_user).password("wonderland");
    password_mode(login, PASSWORD_REFUSED).await;
}

// --- one test per mode ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_with_every_client() {
    let cluster = trust_cluster(&["app_trust"]);
    let dir = tempfile::tempdir().unwrap();
    let backend = backend_url(&cluster, "app_trust", None, "postgres");
    let proxy = start_proxy(dir.path(), &route("trust", &backend, "")).await;
    // trust has no password to get wrong: only the logins.
    let login = Login::new(&proxy, dir.path(), "anyone", "app_trust");
    within("trust", every_client_logs_in(&login)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_with_every_client() {
    stored_password_mode("cleartext", "insecure = true").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_with_every_client() {
    stored_password_mode("md5", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_with_every_client() {
    stored_password_mode("scram", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_with_every_client() {
    let cluster = scram_cluster("carol", "singer");
    let dir = tempfile::tempdir().unwrap();
    // No user in the URL: the backend sees the client's user and checks its password.
    let backend = format!("postgres://127.0.0.1:{}?sslmode=disable", cluster.port());
    let config = route("passthrough", &backend, "insecure = true");
    let proxy = start_proxy(dir.path(), &config).await;
    let login = Login::new(&proxy, dir.path(), "carol", "carol").password("singer");
    password_mode(login, "password authentication failed for user \"carol\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_as_password_with_every_client() {
    let issuer = TestIssuer::start().await;
    let cluster = trust_cluster(&["app_jwt"]);
    let dir = tempfile::tempdir().unwrap();
    let backend = backend_url(&cluster, "app_jwt", None, "postgres");
    let config = format!(
        "[jwt]\nissuer = \"{}\"\naudience = \"pgbastion\"\njwks_url = \"{}\"\ninsecure = true\n\n{}",
        issuer.issuer(),
        issuer.jwks_url(),
        route("jwt", &backend, "insecure = true")
    );
    let proxy = start_proxy(dir.path(), &config).await;
    let token = issuer.token_for("jwt_user", "pgbastion", Duration::from_secs(300));
    let login = Login::new(&proxy, dir.path(), "jwt_user", "app_jwt").password(&token);
    password_mode(login, "token refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_authenticator_with_every_client() {
    let cluster = scram_cluster("ext_target", "target-pw");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("authenticator.sh");
    // Accepts dave/letmein only; maps him to ext_target with that role's backend password.
    std::fs::write(
        &script,
        "#!/bin/sh\nwhile IFS='=' read -r k v; do\n  case \"$k\" in user) u=$v;; _SOURCE_CRED) c=$v;; esac\n\
         done\n[ \"$u\" = dave ] && [ \"$c\" = letmein ] || exit 1\n\
         echo user=ext_target\necho _META_TARGET_CRED=target-pw\n",
    )
    .unwrap();
    // The URL gives host and port; the authenticator's `user=` line overrides its user.
    let backend = backend_url(&cluster, "ignored", None, "postgres");
    let external = format!(
        "insecure = true\nexternal = {{ command = [\"/bin/sh\", \"{}\"] }}",
        script.display()
    );
    let proxy = start_proxy(dir.path(), &route("external", &backend, &external)).await;
    let login = Login::new(&proxy, dir.path(), "dave", "ext_target").password("letmein");
    password_mode(login, PASSWORD_REFUSED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_with_every_client() {
    let cluster = scram_cluster("erin", "erin's pw");
    cluster
        .execute_sql(
            "CREATE ROLE lookup LOGIN PASSWORD 'lookup pw'; \
             CREATE FUNCTION public.get_secret(name) RETURNS TABLE(usename name, passwd text) \
             LANGUAGE sql SECURITY DEFINER AS \
             'SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1'; \
             GRANT EXECUTE ON FUNCTION public.get_secret(name) TO lookup",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backend = format!(
        "postgres://127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port()
    );
    let lookup = "auth_query = { query = \"SELECT * FROM public.get_secret($1)\", \
                  user = \"lookup\", password = \"lookup pw\" }";
    let proxy = start_proxy(dir.path(), &route("scram", &backend, lookup)).await;
    // The backend sees erin herself, logged in with keys recovered from her SCRAM proof.
    let login = Login::new(&proxy, dir.path(), "erin", "erin").password("erin's pw");
    password_mode(login, PASSWORD_REFUSED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_with_every_client() {
    let cluster = trust_cluster(&["app_cert"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("clients_per_mode CA").unwrap();
    let ca_file = ca.write_cert(dir.path(), "ca").unwrap();
    ca.server_cert(&["localhost"])
        .unwrap()
        .write_files(dir.path(), "server")
        .unwrap();
    let key = ca.client_cert("certuser").unwrap();
    let (cert_file, key_file) = key.write_files(dir.path(), "certuser").unwrap();
    let backend = backend_url(&cluster, "app_cert", None, "postgres");
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"server.crt\", key = \"server.key\", client_ca = \"ca.crt\" }}\n\n{}",
        route("cert", &backend, "")
    );
    let proxy = start_proxy(dir.path(), &config).await;
    let conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        ca_file.display(),
        cert_file.display(),
        key_file.display()
    );
    let mut login = Login::new(&proxy, dir.path(), "certuser", "app_cert");
    login.cert = Some(ClientCert {
        ca_der: ca.cert_der(),
        key,
        conninfo,
    });
    within("cert", async {
        // The certificate names certuser, not postgres: 28000, for both clients.
        let impostor = login.clone().user("postgres");
        let mismatch = "common name does not match the user";
        both_clients_are_refused(&impostor, "28000", mismatch).await;
        every_client_logs_in(&login).await;
    })
    .await;
}
