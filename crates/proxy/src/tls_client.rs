//! TLS to backends, as libpq's `sslmode` asks: `require` encrypts without checking,
//! `verify-ca` checks the chain against `sslrootcert`, `verify-full` also the host name.
//! Client configurations are built once per (mode, files) and cached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_rustls::client::TlsStream;

use crate::backend_socket::BackendSocket;
use tokio_rustls::TlsConnector;

use crate::target::{Address, SslMode, TlsSettings};

type CacheKey = (
    bool,
    bool,
    Option<PathBuf>,
    Option<PathBuf>,
    Option<PathBuf>,
);

/// Cached client configurations; relative paths resolve against `base_dir`.
#[derive(Debug)]
pub struct TlsClients {
    base_dir: PathBuf,
    cache: Mutex<HashMap<CacheKey, Arc<ClientConfig>>>,
}

impl TlsClients {
    /// A cache whose relative certificate paths start at `base_dir` (the configuration
    /// file's directory).
    pub fn new(base_dir: PathBuf) -> Self {
        Self {
            base_dir,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets the cached configurations, so that the next handshakes read the certificate
    /// and key files again (a reload: they may have been replaced in place).
    pub fn forget(&self) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Runs the TLS handshake on `tcp` to `address` with the `tls` settings.
    pub async fn handshake(
        &self,
        socket: BackendSocket,
        address: &Address,
        tls: &TlsSettings,
    ) -> Result<TlsStream<BackendSocket>, String> {
        let config = self.config(tls)?;
        let host = address.host().unwrap_or("localhost");
        let name =
            ServerName::try_from(host.to_owned()).map_err(|e| format!("host name {host}: {e}"))?;
        TlsConnector::from(config)
            .connect(name, socket)
            .await
            .map_err(|e| e.to_string())
    }

    fn config(&self, tls: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
        let resolve = |p: &Option<PathBuf>| p.as_ref().map(|p| self.base_dir.join(p));
        let verify_chain = tls.sslrootcert.is_some()
            && matches!(
                tls.sslmode,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
            );
        let verify_name = tls.sslmode == SslMode::VerifyFull;
        let key: CacheKey = (
            verify_chain,
            verify_name,
            resolve(&tls.sslrootcert),
            resolve(&tls.sslcert),
            resolve(&tls.sslkey),
        );
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| "TLS cache poisoned".to_owned())?;
        if let Some(config) = cache.get(&key) {
            return Ok(config.clone());
        }
        let config = Arc::new(build(&key)?);
        cache.insert(key, config.clone());
        Ok(config)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(key: &CacheKey) -> Result<ClientConfig, String> {
    let (verify_chain, verify_name, rootcert, cert, private_key) = key;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match (verify_chain, rootcert) {
        (true, Some(path)) => {
            let certs = read_certs(path)?;
            let mut roots = RootCertStore::empty();
            for cert in &certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| e.to_string())?;
            Arc::new(LibpqVerifier {
                webpki,
                roots: certs,
                verify_name: *verify_name,
            })
        }
        _ => Arc::new(NoVerification(provider())),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (cert, private_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("sslcert/sslkey: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// `verify-ca` and `verify-full` as libpq (OpenSSL) does them: the chain must lead to a
/// certificate of `sslrootcert`, and for `verify-full` the name must match.
///
/// Unlike webpki, OpenSSL trusts a server certificate that is itself in the root store, even
/// a self-signed CA:TRUE one (PostgreSQL's documentation makes its example certificate that
/// way). Such a certificate, byte-identical to one of `roots`, is accepted after checking its
/// validity dates and, for `verify-full`, its name; the handshake signature is still checked.
/// Everything else goes through webpki.
#[derive(Debug)]
struct LibpqVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    roots: Vec<CertificateDer<'static>>,
    verify_name: bool,
}

impl LibpqVerifier {
    fn verify_pinned(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        check_validity(&cert, now)?;
        if self.verify_name {
            check_name(end_entity, &cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }
}

/// The certificate's notBefore/notAfter against `now`.
fn check_validity(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// The name check of `verify-full`: the subjectAltName entries (webpki's rules); a
/// certificate without any DNS name in subjectAltName is matched on its Common Name, as libpq
/// does (PostgreSQL's example certificate has only `CN=localhost`).
fn check_name(
    der: &CertificateDer<'_>,
    cert: &x509_parser::certificate::X509Certificate<'_>,
    server_name: &ServerName<'_>,
) -> Result<(), rustls::Error> {
    let parsed = rustls::server::ParsedCertificate::try_from(der)?;
    let by_san = rustls::client::verify_server_name(&parsed, server_name);
    let ServerName::DnsName(host) = server_name else {
        return by_san;
    };
    let has_dns_san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|name| matches!(name, x509_parser::extensions::GeneralName::DNSName(_)))
        });
    if by_san.is_ok() || has_dns_san {
        return by_san;
    }
    let cn_matches = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| cn.eq_ignore_ascii_case(host.as_ref()));
    match cn_matches {
        true => Ok(()),
        false => by_san,
    }
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .roots
            .iter()
            .any(|root| root.as_ref() == end_entity.as_ref())
        {
            return self.verify_pinned(end_entity, server_name, now);
        }
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `require` / `prefer` without a root certificate: encryption without authentication, as
/// libpq does. Handshake signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
