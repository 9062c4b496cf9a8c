//! A JWT issuer for tests: signs tokens and serves its keys over HTTP or HTTPS (with a
//! certificate from its own [`TestCa`]) on 127.0.0.1 as a JWKS and an OpenID Connect
//! discovery document.
//!
//! The EC P-256 and Ed25519 keys are generated at start. RSA keys cannot be generated with
//! `ring`, so the RSA key is the committed test-only key `testdata/rsa-2048-test-key.pem`
//! (made with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`); it protects
//! nothing and, unlike a certificate, does not expire.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::TestCa;

const RSA_TEST_KEY: &str = include_str!("../testdata/rsa-2048-test-key.pem");

/// The largest request head the responder reads.
const MAX_REQUEST: usize = 8 * 1024;

/// A test identity provider on `http://127.0.0.1:<port>` ([`TestIssuer::start`]) or
/// `https://127.0.0.1:<port>` ([`TestIssuer::start_https`]).
///
/// Serves `GET /.well-known/openid-configuration` and `GET /jwks`. Starts with the keys
/// `rsa-1` (RS256), `ec-1` (ES256) and `ed-1` (EdDSA). The server stops when this is dropped.
pub struct TestIssuer {
    base: String,
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
    ca_pem: Option<String>,
}

#[derive(Default)]
struct State {
    keys: Vec<IssuerKey>,
    unavailable: bool,
    /// Replaces the discovery document's `jwks_uri` when set.
    jwks_uri: Option<String>,
}

struct IssuerKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    public_pem: String,
}

impl TestIssuer {
    /// Generates the keys, binds 127.0.0.1:0 and starts serving plain HTTP. Panics when it
    /// cannot.
    pub async fn start() -> TestIssuer {
        Self::start_with(None, None).await
    }

    /// Like [`TestIssuer::start`], serving HTTPS with a certificate for `127.0.0.1` issued by
    /// a fresh test CA ([`TestIssuer::ca_cert_pem`]).
    pub async fn start_https() -> TestIssuer {
        let ca = TestCa::new("pgbastion test issuer CA").expect("issuer CA");
        let server = ca.server_cert(&["127.0.0.1"]).expect("issuer certificate");
        Self::start_with(Some(tls_acceptor(&server)), Some(ca.cert_pem())).await
    }

    async fn start_with(tls: Option<TlsAcceptor>, ca_pem: Option<String>) -> TestIssuer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://127.0.0.1:{port}");
        let keys = vec![
            rsa_key("rsa-1"),
            generated_key("ec-1", "ES256"),
            generated_key("ed-1", "EdDSA"),
        ];
        let state = Arc::new(Mutex::new(State {
            keys,
            ..State::default()
        }));
        let server = tokio::spawn(serve(listener, tls, base.clone(), Arc::clone(&state)));
        TestIssuer {
            base,
            state,
            server,
            ca_pem,
        }
    }

    /// The PEM certificate of the CA that issued the HTTPS certificate (`None` over HTTP).
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Makes the discovery document name `url` as its `jwks_uri` instead of this issuer's.
    pub fn set_discovered_jwks_uri(&self, url: &str) {
        self.lock().jwks_uri = Some(url.to_owned());
    }

    /// The issuer (`iss`): the base URL, without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.base
    }

    /// The discovery document's URL.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.base)
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    /// A token over `claims` signed with the first key for `alg` ("RS256", "ES256" or
    /// "EdDSA"), whose `kid` goes in the header.
    pub fn sign(&self, alg: &str, claims: Value) -> String {
        let kid = self.kid_for(alg);
        self.sign_with(&kid, Some(&kid), claims)
    }

    /// A token over `claims` signed with the key `key_kid`, with `header_kid` (possibly
    /// another name, or none) as the header's `kid`.
    pub fn sign_with(&self, key_kid: &str, header_kid: Option<&str>, claims: Value) -> String {
        let state = self.lock();
        let key = state.key(key_kid);
        let mut header = Header::new(key.alg);
        header.kid = header_kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &key.encoding).expect("sign test token")
    }

    /// An RS256 token for `sub` with `aud` = `audience`, `iss` = [`TestIssuer::issuer`] and
    /// `exp` = now + `ttl`.
    pub fn token_for(&self, sub: &str, audience: &str, ttl: Duration) -> String {
        let now = unix_now();
        let claims = json!({
            "iss": self.base, "sub": sub, "aud": audience, "iat": now, "exp": now + ttl.as_secs(),
        });
        self.sign("RS256", claims)
    }

    /// The SPKI `PUBLIC KEY` PEM of the first key for `alg`.
    pub fn public_key_pem(&self, alg: &str) -> String {
        self.public_key_pem_of(&self.kid_for(alg))
    }

    /// The SPKI `PUBLIC KEY` PEM of the key `kid`.
    pub fn public_key_pem_of(&self, kid: &str) -> String {
        self.lock().key(kid).public_pem.clone()
    }

    /// Generates and publishes another key for `alg` ("ES256" or "EdDSA"; RSA keys cannot be
    /// generated here) and returns its `kid`.
    pub fn add_key(&self, alg: &str) -> String {
        let mut state = self.lock();
        let kid = format!("{}-{}", kid_prefix(alg), state.keys.len() + 1);
        state.keys.push(generated_key(&kid, alg));
        kid
    }

    /// Stops publishing the key `kid` (it can still sign).
    pub fn unpublish(&self, kid: &str) {
        let mut state = self.lock();
        let key = state
            .keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .expect("known kid");
        key.jwk = Value::Null;
    }

    /// While `true`, both endpoints answer 503 Service Unavailable.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    fn kid_for(&self, alg: &str) -> String {
        let wanted = algorithm(alg);
        let state = self.lock();
        let key = state
            .keys
            .iter()
            .find(|k| k.alg == wanted)
            .expect("a key for the algorithm");
        key.kid.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl State {
    fn key(&self, kid: &str) -> &IssuerKey {
        self.keys.iter().find(|k| k.kid == kid).expect("known kid")
    }

    fn jwks(&self) -> Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| &k.jwk)
            .filter(|jwk| !jwk.is_null())
            .collect();
        json!({ "keys": keys })
    }
}

fn algorithm(alg: &str) -> Algorithm {
    match alg {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        other => panic!("TestIssuer supports RS256, ES256 and EdDSA, not {other}"),
    }
}

fn kid_prefix(alg: &str) -> &'static str {
    match algorithm(alg) {
        Algorithm::RS256 => "rsa",
        Algorithm::ES256 => "ec",
        _ => "ed",
    }
}

/// The committed RSA test key.
fn rsa_key(kid: &str) -> IssuerKey {
    let pair = KeyPair::from_pem(RSA_TEST_KEY).expect("parse the RSA test key");
    let ring_pair = ring::rsa::KeyPair::from_pkcs8(pair.serialized_der()).expect("RSA test key");
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(ring_pair.public());
    let jwk = json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e),
    });
    let encoding = EncodingKey::from_rsa_pem(RSA_TEST_KEY.as_bytes()).expect("RSA encoding key");
    IssuerKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding,
        jwk,
        public_pem: pair.public_key_pem(),
    }
}

/// A fresh EC P-256 or Ed25519 key.
fn generated_key(kid: &str, alg: &str) -> IssuerKey {
    let alg = algorithm(alg);
    let (pair, jwk) = match alg {
        Algorithm::ES256 => {
            let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate P-256 key");
            // The raw public key is the uncompressed point: 0x04, x, y.
            let (x, y) = pair.public_key_raw()[1..].split_at(32);
            let jwk = json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
            });
            (pair, jwk)
        }
        Algorithm::EdDSA => {
            let pair = KeyPair::generate_for(&PKCS_ED25519).expect("generate Ed25519 key");
            let jwk = json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
            });
            (pair, jwk)
        }
        _ => panic!("only ES256 and EdDSA keys are generated"),
    };
    let private_pem = pair.serialize_pem();
    let encoding = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        _ => EncodingKey::from_ed_pem(private_pem.as_bytes()),
    }
    .expect("encoding key");
    IssuerKey {
        kid: kid.into(),
        alg,
        encoding,
        jwk,
        public_pem: pair.public_key_pem(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A TLS acceptor presenting `server`.
fn tls_acceptor(server: &crate::CertifiedKey) -> TlsAcceptor {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let key_der = KeyPair::from_pem(&server.key_pem)
        .expect("issuer key")
        .serialize_der();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(server.cert_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
    )
    .expect("issuer TLS config");
    TlsAcceptor::from(Arc::new(config))
}

/// Accepts connections until the task is aborted, one task per connection.
async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    base: String,
    state: Arc<Mutex<State>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let (base, state) = (base.clone(), Arc::clone(&state));
        match tls.clone() {
            None => tokio::spawn(respond(stream, base, state)),
            Some(acceptor) => tokio::spawn(async move {
                // A client that refuses the certificate is what some tests want.
                if let Ok(stream) = acceptor.accept(stream).await {
                    respond(stream, base, state).await;
                }
            }),
        };
    }
}

/// Answers one HTTP/1.1 request and closes the connection.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    base: String,
    state: Arc<Mutex<State>>,
) {
    let Some(path) = read_request_path(&mut stream).await else {
        return;
    };
    let (status, body) = route(&path, &base, &state);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    // A client that hung up is not the test's concern here.
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn route(path: &str, base: &str, state: &Mutex<State>) -> (&'static str, String) {
    let state = state.lock().unwrap_or_else(PoisonError::into_inner);
    if state.unavailable {
        return (
            "503 Service Unavailable",
            r#"{"error":"unavailable"}"#.into(),
        );
    }
    match path {
        "/.well-known/openid-configuration" => {
            let jwks_uri = state.jwks_uri.clone().unwrap_or(format!("{base}/jwks"));
            let doc = json!({ "issuer": base, "jwks_uri": jwks_uri });
            ("200 OK", doc.to_string())
        }
        "/jwks" => ("200 OK", state.jwks().to_string()),
        _ => ("404 Not Found", r#"{"error":"not found"}"#.into()),
    }
}

/// Reads the request head and returns the path of a GET, or `None` for anything else.
async fn read_request_path<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => Some(path.to_owned()),
        _ => None,
    }
}
