//! What a verifier is told: the issuer, the audience and where the keys come from.

use std::path::PathBuf;
use std::time::Duration;

/// Where the verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// PEM files, each holding one or more SPKI `PUBLIC KEY` (or PKCS#1 `RSA PUBLIC KEY`)
    /// blocks. Such keys have no `kid`.
    PemFiles(Vec<PathBuf>),
    /// A JSON Web Key Set fetched from this URL (`https://`; `http://` only with
    /// [`JwtSettings::allow_http`]).
    JwksUrl(String),
    /// An OpenID Connect discovery document (`.../.well-known/openid-configuration`) whose
    /// `jwks_uri` names the key set. Both URLs must be `https://` unless
    /// [`JwtSettings::allow_http`] is set.
    OidcDiscovery(String),
}

/// How tokens are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The required `iss`, compared exactly.
    pub issuer: String,
    /// When set, `aud` (a string or an array of strings) must contain it.
    pub audience: Option<String>,
    /// Where the keys come from.
    pub keys: KeySource,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The limit on each JWKS or discovery fetch.
    pub http_timeout: Duration,
    /// PEM certificates trusted for the JWKS and discovery servers instead of the built-in
    /// public roots (an identity provider behind a private CA).
    pub ca_file: Option<PathBuf>,
    /// Whether `http://` URLs (configured, discovered or redirected to) are fetched. Off by
    /// default: over plain HTTP anyone on the path can substitute the signing keys.
    pub allow_http: bool,
}

impl JwtSettings {
    /// The default [`JwtSettings::leeway`].
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
    /// The default [`JwtSettings::http_timeout`].
    pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

    /// Settings with no audience check and the default leeway and timeout.
    pub fn new(issuer: impl Into<String>, keys: KeySource) -> Self {
        Self {
            issuer: issuer.into(),
            audience: None,
            keys,
            leeway: Self::DEFAULT_LEEWAY,
            http_timeout: Self::DEFAULT_HTTP_TIMEOUT,
            ca_file: None,
            allow_http: false,
        }
    }

    /// The same settings requiring `audience` in `aud`.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// The same settings with another leeway.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The same settings with another HTTP timeout.
    pub fn with_http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// The same settings trusting the PEM certificates in `path` (instead of the public
    /// roots) for the key servers.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// The same settings also fetching keys over plain `http://` (tests, or a key server
    /// reachable only over a trusted network).
    pub fn allowing_http(mut self) -> Self {
        self.allow_http = true;
        self
    }
}
