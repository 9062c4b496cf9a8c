//! A small server on the gateway library for the tests: every auth mode, selected by the
//! startup user's name, and a query handler that answers one row.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pgbastion_auth::scram::ScramSecret;
use pgbastion_gateway::{
    serve_listener, AuthMethod, ClientConn, ClientIo, ConnectionState, Credential, Flow,
    GatewayConfig, HookError, HookResult, Hooks, TlsConfig,
};
use pgbastion_testkit::TestCa;
use pgbastion_wire::{Frame, FrontendMessage, SqlState, TransactionStatus};
use tokio::net::TcpListener;

pub const PASSWORD: &str = "correct horse";
pub const JWT: &str = "header.payload.signature";
pub const BEARER: &str = "good-bearer-token";
/// A bearer token the hooks refuse with an error (not `Ok(false)`), as the proxy refuses an
/// expired token.
pub const EXPIRED_BEARER: &str = "expired-bearer-token";
pub const EXPIRED_REASON: &str = "token refused: the token has expired";
pub const ISSUER: &str = "https://issuer.example";

/// Picks the auth mode from the user name: `trust_*`, `clear_*`, `md5_*`, `scram_*`,
/// `cert_*`, `oauth_*`, `jwt_*`.
pub struct TestHooks;

impl Hooks for TestHooks {
    type Data = ();

    fn auth_method(
        &self,
        state: &ConnectionState,
        _data: &mut (),
    ) -> impl Future<Output = HookResult<AuthMethod>> + Send {
        let user = state
            .client
            .as_ref()
            .map(|c| c.user().to_owned())
            .unwrap_or_default();
        let method = match user.split('_').next().unwrap_or_default() {
            "clear" => AuthMethod::Cleartext,
            "md5" => AuthMethod::Md5,
            "scram" => AuthMethod::ScramSha256,
            "cert" => AuthMethod::Certificate,
            "oauth" => AuthMethod::OAuthBearer {
                issuer: ISSUER.into(),
                scope: "openid postgres".into(),
            },
            "jwt" => AuthMethod::JwtPassword,
            _ => AuthMethod::Trust,
        };
        async move { Ok(method) }
    }

    fn validate_credentials(
        &self,
        _state: &ConnectionState,
        _data: &mut (),
        credential: &Credential,
    ) -> impl Future<Output = HookResult<bool>> + Send {
        let valid = match credential {
            Credential::Password { .. } | Credential::Md5 { .. } => {
                credential.matches_password(PASSWORD)
            }
            Credential::Jwt { token, .. } => token == JWT,
            Credential::BearerToken { token, .. } if token == EXPIRED_BEARER => {
                // As the proxy does: a refusal that says why.
                let refusal = HookError::new(SqlState::INVALID_PASSWORD, EXPIRED_REASON);
                return std::future::ready(Err(refusal));
            }
            Credential::BearerToken { token, .. } => token == BEARER,
            Credential::Certificate { user, common_name } => {
                common_name.as_deref() == Some(user.as_str())
            }
        };
        std::future::ready(Ok(valid))
    }

    fn scram_secret(
        &self,
        state: &ConnectionState,
        _data: &mut (),
    ) -> impl Future<Output = HookResult<Option<ScramSecret>>> + Send {
        let known = state
            .client
            .as_ref()
            .is_some_and(|c| c.user() != "scram_unknown");
        async move { Ok(known.then(|| ScramSecret::generate(PASSWORD.as_bytes(), 4096))) }
    }

    async fn on_message<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        _data: &mut (),
        frame: Frame,
    ) -> HookResult<Flow> {
        let Ok(FrontendMessage::Query(_)) = FrontendMessage::decode(&frame) else {
            return Ok(Flow::Continue);
        };
        let state = conn.state();
        let answer = format!(
            "user={} client={} tls={}",
            state.authenticated_user.as_deref().unwrap_or("-"),
            state.client_addr.ip(),
            state.tls.is_some()
        );
        one_row(conn, &answer)?;
        Ok(Flow::Handled)
    }
}

fn one_row<S: ClientIo>(
    conn: &mut ClientConn<S>,
    value: &str,
) -> Result<(), pgbastion_gateway::GatewayError> {
    conn.send_text_rows(&["answer"], [&[Some(value)][..]])?;
    conn.send_ready_for_query(TransactionStatus::Idle)
}

/// Certificates for a TLS-enabled server.
pub struct Pki {
    pub ca: TestCa,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let ca = TestCa::new("gateway test CA").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = ca.write_cert(dir.path(), "ca").unwrap();
        Self { ca, dir, ca_file }
    }

    pub fn tls_config(&self) -> TlsConfig {
        let server = self.ca.server_cert(&["localhost", "127.0.0.1"]).unwrap();
        TlsConfig::new(
            Arc::new(pgbastion_gateway::tls::SniCertificates::new(Some(
                pgbastion_gateway::tls::certified_key_from_pem(
                    server.cert_pem.as_bytes(),
                    server.key_pem.as_bytes(),
                )
                .unwrap(),
            ))),
            Some(self.ca.cert_pem().as_bytes()),
        )
        .unwrap()
    }

    /// Writes a client certificate for `cn`; returns (cert, key) paths.
    pub fn client_cert(&self, cn: &str) -> (PathBuf, PathBuf) {
        self.ca
            .client_cert(cn)
            .unwrap()
            .write_files(self.dir.path(), cn)
            .unwrap()
    }
}

/// Starts a server with TLS from `pki`.
pub async fn start_tls_server(pki: &Pki, require_tls: bool) -> SocketAddr {
    start_server(GatewayConfig {
        tls: Some(pki.tls_config()),
        require_tls,
        ..GatewayConfig::default()
    })
    .await
}

/// Starts a server with `config`; returns its address. It runs until the test ends.
pub async fn start_server(config: GatewayConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_listener(
        listener,
        Arc::new(config),
        Arc::new(TestHooks),
    ));
    addr
}

pub async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Connects with tokio-postgres (no TLS) and runs a query; returns the answer row.
pub async fn tokio_postgres_query(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
) -> Result<String, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(addr.port())
        .user(user)
        .dbname("db");
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let rows = client.simple_query("SELECT answer").await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default())
}

/// Runs psql with a conninfo; returns (success, stdout, stderr).
pub fn psql(conninfo: &str, password: Option<&str>) -> (bool, String, String) {
    let mut command = std::process::Command::new(psql_binary());
    command.args(["-X", "-A", "-t", "-c", "SELECT answer", conninfo]);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command.output().expect("run psql");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    )
}

fn psql_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("psql"))
        .find(|p| p.is_file())
        .expect("psql not found: apt-get install -y postgresql-client")
}

pub fn key_bytes(n: usize) -> Bytes {
    Bytes::from(vec![7u8; n])
}
