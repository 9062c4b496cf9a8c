//! TLS termination for client connections: server certificates chosen per SNI, ALPN
//! `postgresql` (required for PostgreSQL 17 direct TLS), optional client-certificate
//! verification, and what the handshake taught us ([`TlsInfo`]).

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// The ALPN protocol name PostgreSQL 17 registered and requires for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM file held no certificate.
    #[error("no certificate found in the PEM data")]
    NoCertificate,
    /// The PEM data could not be read.
    #[error("invalid PEM data: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls refused the key, certificate or CA.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not be turned into a verifier.
    #[error("client CA refused: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// Chooses the server certificate for a connection from the SNI name the client sent.
///
/// It is called during the handshake and once more after it (with the same name) to learn
/// which certificate was served, for SCRAM channel binding; it must answer consistently.
pub trait CertResolver: fmt::Debug + Send + Sync {
    /// The certificate for `server_name` (`None` when the client sent no SNI); `None` aborts
    /// the handshake.
    fn resolve(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>>;
}

/// Loads a certificate chain and private key from PEM bytes.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<CertifiedKey>, TlsConfigError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(TlsConfigError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

/// Certificates by SNI name: exact names and `*.suffix` wildcards (one or more whole labels,
/// see [`sni_matches`]), plus a default for clients that send no or an unknown name.
#[derive(Debug, Default, Clone)]
pub struct SniCertificates {
    default: Option<Arc<CertifiedKey>>,
    named: Vec<(String, Arc<CertifiedKey>)>,
}

impl SniCertificates {
    /// A table with `default` for every name.
    pub fn new(default: Option<Arc<CertifiedKey>>) -> Self {
        Self {
            default,
            named: Vec::new(),
        }
    }

    /// Serves `cert` for `pattern` (`db.example.com` or `*.example.com`; check it first with
    /// [`check_sni_pattern`]); earlier entries win.
    pub fn add(&mut self, pattern: &str, cert: Arc<CertifiedKey>) {
        self.named.push((pattern.to_owned(), cert));
    }
}

/// Whether an SNI name matches `pattern`, ignoring ASCII case: exactly, or for `*.suffix`,
/// when the name is one or more whole non-empty labels followed by `.suffix`
/// (`*.example.com` matches `a.example.com` and `a.b.example.com`, never `example.com` or
/// `evilexample.com`). Route `sni` matchers use the same rule.
pub fn sni_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return pattern.eq_ignore_ascii_case(name);
    };
    let Some(split) = name.len().checked_sub(suffix.len() + 1) else {
        return false;
    };
    let (Some(labels), Some(tail)) = (name.get(..split), name.get(split..)) else {
        return false;
    };
    tail.strip_prefix('.')
        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        && labels.split('.').all(|label| !label.is_empty())
}

/// A server-name pattern with a `*` somewhere other than one leading `*.` before a non-empty
/// suffix (such a `*` would otherwise silently match nothing, or too much).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?}: a \"*\" is allowed only as a leading \"*.\" before a name (\"*.example.com\": one \
     or more whole labels)"
)]
pub struct SniPatternError(pub String);

/// Checks that `pattern` is a name or a `*.suffix` wildcard (see [`sni_matches`]).
pub fn check_sni_pattern(pattern: &str) -> Result<(), SniPatternError> {
    let rest = pattern.strip_prefix("*.").unwrap_or(pattern);
    if rest.is_empty() || rest.contains('*') {
        return Err(SniPatternError(pattern.to_owned()));
    }
    Ok(())
}

impl CertResolver for SniCertificates {
    fn resolve(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        server_name
            .and_then(|name| {
                self.named
                    .iter()
                    .find(|(pattern, _)| sni_matches(pattern, name))
                    .map(|(_, cert)| cert.clone())
            })
            .or_else(|| self.default.clone())
    }
}

#[derive(Debug)]
struct RustlsResolver(Arc<dyn CertResolver>);

impl ResolvesServerCert for RustlsResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.resolve(client_hello.server_name())
    }
}

/// Everything needed to terminate TLS for clients.
#[derive(Clone)]
pub struct TlsConfig {
    server_config: Arc<ServerConfig>,
    resolver: Arc<dyn CertResolver>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("resolver", &self.resolver)
            .field("alpn", &"postgresql")
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// One certificate for every client, no client certificates.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsConfigError> {
        let cert = certified_key_from_pem(cert_pem, key_pem)?;
        Self::new(Arc::new(SniCertificates::new(Some(cert))), None)
    }

    /// Certificates from `resolver`; when `client_ca_pem` is given, client certificates are
    /// requested and verified against it (clients without one are still let in: whether a
    /// certificate is required is the authentication mode's decision, as in `pg_hba.conf`).
    pub fn new(
        resolver: Arc<dyn CertResolver>,
        client_ca_pem: Option<&[u8]>,
    ) -> Result<Self, TlsConfigError> {
        let builder =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?;
        let builder = match client_ca_pem {
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    roots.add(cert?)?;
                }
                if roots.is_empty() {
                    return Err(TlsConfigError::NoCertificate);
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(rustls::crypto::ring::default_provider()),
                )
                .allow_unauthenticated()
                .build()?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut server_config =
            builder.with_cert_resolver(Arc::new(RustlsResolver(resolver.clone())));
        server_config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Self {
            server_config: Arc::new(server_config),
            resolver,
        })
    }

    /// The rustls configuration (ALPN `postgresql`).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }

    /// The certificate this configuration serves for `server_name`.
    pub fn certificate_for(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.resolver.resolve(server_name)
    }
}

/// What the TLS handshake established.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The SNI name the client sent.
    pub server_name: Option<String>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// `TLSv1_3` and the like.
    pub protocol_version: Option<String>,
    /// The negotiated cipher suite.
    pub cipher_suite: Option<String>,
    /// Whether the client used PostgreSQL 17 direct TLS (no SSLRequest).
    pub direct: bool,
    /// The client's verified certificate chain, end entity first (empty without one).
    pub peer_certificates: Vec<CertificateDer<'static>>,
    /// The end-entity certificate this server presented (for `tls-server-end-point`).
    pub server_certificate: Option<CertificateDer<'static>>,
}

impl TlsInfo {
    /// The client certificate's subject common name, if a certificate was verified.
    pub fn client_common_name(&self) -> Option<String> {
        let der = self.peer_certificates.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let cn = cert.subject().iter_common_name().next()?;
        cn.as_str().ok().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_star_dot_stands_for_one_or_more_whole_labels() {
        let table = [
            ("*.db.example.com", "tenant1.db.example.com", true),
            ("*.db.example.com", "TENANT1.db.example.com", true),
            ("*.DB.example.com", "tenant1.db.example.com", true),
            ("*.db.example.com", "a.b.db.example.com", true),
            ("*.db.example.com", "db.example.com", false),
            ("*.db.example.com", ".db.example.com", false),
            ("*.db.example.com", "a..db.example.com", false),
            ("*.db.example.com", "evildb.example.com", false),
            ("*.db.example.com", "a.db.example.com.evil", false),
            ("db.example.com", "db.example.com", true),
            ("db.example.com", "DB.example.com", true),
            ("db.example.com", "a.db.example.com", false),
        ];
        for (pattern, name, expected) in table {
            assert_eq!(sni_matches(pattern, name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn a_star_anywhere_but_a_leading_star_dot_is_refused() {
        for bad in [
            "*example.com",
            "*",
            "*.",
            "db.*.com",
            "*.*.com",
            "a*.com",
            "*.a*",
        ] {
            assert!(check_sni_pattern(bad).is_err(), "{bad}");
        }
        for good in ["*.example.com", "db.example.com", "*.a"] {
            assert!(check_sni_pattern(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn garbage_pem_is_a_typed_error() {
        assert!(matches!(
            certified_key_from_pem(b"not pem", b"not pem"),
            Err(TlsConfigError::NoCertificate)
        ));
    }
}
