//! Channel binding: what each side says about it, and the `tls-server-end-point` data
//! (RFC 5929 section 4.1) both sides compute from the server's certificate.
//!
//! The certificate's signature algorithm is read with a small DER walk over the three
//! fields of `Certificate` (RFC 5280 section 4.1.1.2) instead of a full X.509 parser: it
//! needs nothing but the algorithm identifier, and a dependency for that would not earn
//! its place.

use std::fmt;

use sha2::Digest;

/// Channel binding from the client's side: the GS2 flag it sends and the data it binds.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// The client does not do channel binding (gs2 `n`): no TLS.
    NotSupported,
    /// The client could, but the server did not offer SCRAM-SHA-256-PLUS (gs2 `y`). A server
    /// that did offer it treats this as a downgrade attack.
    SupportedButNotUsed,
    /// `tls-server-end-point` (gs2 `p=tls-server-end-point`) with the data computed from the
    /// certificate the server presented, see [`tls_server_end_point`].
    TlsServerEndPoint(Vec<u8>),
}

impl fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotSupported => "NotSupported",
            Self::SupportedButNotUsed => "SupportedButNotUsed",
            Self::TlsServerEndPoint(_) => "TlsServerEndPoint",
        })
    }
}

impl ChannelBinding {
    /// The GS2 header (flag and empty authzid) this choice sends.
    pub(crate) fn gs2_header(&self) -> &'static str {
        match self {
            Self::NotSupported => "n,,",
            Self::SupportedButNotUsed => "y,,",
            Self::TlsServerEndPoint(_) => "p=tls-server-end-point,,",
        }
    }

    /// The channel binding data appended to the GS2 header in the client-final `c=`.
    pub(crate) fn data(&self) -> &[u8] {
        match self {
            Self::TlsServerEndPoint(data) => data,
            Self::NotSupported | Self::SupportedButNotUsed => &[],
        }
    }
}

/// What the server offers for channel binding.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerBinding {
    /// No TLS (or no usable certificate): only SCRAM-SHA-256 is offered.
    NotOffered,
    /// SCRAM-SHA-256-PLUS with `tls-server-end-point` is offered too; this is the data
    /// computed from our certificate, see [`tls_server_end_point`].
    Offered(Vec<u8>),
}

impl fmt::Debug for ServerBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOffered => "NotOffered",
            Self::Offered(_) => "Offered(tls-server-end-point)",
        })
    }
}

/// The hash function `tls-server-end-point` uses for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertHash {
    /// SHA-224 (certificates signed with SHA-224).
    Sha224,
    /// SHA-256 (certificates signed with SHA-256, and with MD5 or SHA-1 as RFC 5929 says).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// The `tls-server-end-point` data for a certificate (DER) with a known hash function.
pub fn tls_server_end_point_hash(cert_der: &[u8], hash: CertHash) -> Vec<u8> {
    match hash {
        CertHash::Sha224 => sha2::Sha224::digest(cert_der).to_vec(),
        CertHash::Sha256 => sha2::Sha256::digest(cert_der).to_vec(),
        CertHash::Sha384 => sha2::Sha384::digest(cert_der).to_vec(),
        CertHash::Sha512 => sha2::Sha512::digest(cert_der).to_vec(),
    }
}

/// The `tls-server-end-point` data for a certificate (DER): hashed with its signature's hash
/// function, SHA-256 when that is MD5 or SHA-1 (RFC 5929 section 4.1).
///
/// When [`signature_hash`] cannot tell the hash (Ed25519 and Ed448 certificates have none,
/// or the DER is not a certificate) this falls back to SHA-256, which works between two
/// peers using this function. PostgreSQL and libpq refuse channel binding for such
/// certificates instead, so a server that wants to interoperate with libpq should not offer
/// SCRAM-SHA-256-PLUS then: use [`signature_hash`] and [`tls_server_end_point_hash`].
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    let hash = signature_hash(cert_der).unwrap_or(CertHash::Sha256);
    tls_server_end_point_hash(cert_der, hash)
}

/// The hash `tls-server-end-point` uses for this certificate (DER), read from its
/// `signatureAlgorithm`: RSA PKCS#1 v1.5, RSASSA-PSS, ECDSA and DSA with MD5, SHA-1 or
/// SHA-2. `None` for other algorithms (Ed25519, Ed448, SHA-3) and for bytes that are not a
/// certificate.
pub fn signature_hash(cert_der: &[u8]) -> Option<CertHash> {
    let (algorithm, parameters) = signature_algorithm(cert_der)?;
    if algorithm == RSASSA_PSS {
        return pss_hash(parameters);
    }
    SIGNATURE_ALGORITHMS
        .iter()
        .find(|(oid, _)| *oid == algorithm)
        .map(|&(_, hash)| hash)
}

/// DER contents of the OIDs we recognise (RFC 3279, RFC 4055, RFC 5758).
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const SIGNATURE_ALGORITHMS: &[(&[u8], CertHash)] = &[
    // md5WithRSAEncryption, sha1WithRSAEncryption: SHA-256 per RFC 5929
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 0x04],
        CertHash::Sha256,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 0x05],
        CertHash::Sha256,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 0x0e],
        CertHash::Sha224,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 0x0b],
        CertHash::Sha256,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 0x0c],
        CertHash::Sha384,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 1, 0x0d],
        CertHash::Sha512,
    ),
    // ecdsa-with-SHA1, ecdsa-with-SHA224 .. SHA512
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 1], CertHash::Sha256),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 1], CertHash::Sha224),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 2], CertHash::Sha256),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 3], CertHash::Sha384),
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 4], CertHash::Sha512),
    // id-dsa-with-sha1, id-dsa-with-sha224 .. sha512
    (&[0x2a, 0x86, 0x48, 0xce, 0x38, 4, 3], CertHash::Sha256),
    (&[0x60, 0x86, 0x48, 1, 0x65, 3, 4, 3, 1], CertHash::Sha224),
    (&[0x60, 0x86, 0x48, 1, 0x65, 3, 4, 3, 2], CertHash::Sha256),
    (&[0x60, 0x86, 0x48, 1, 0x65, 3, 4, 3, 3], CertHash::Sha384),
    (&[0x60, 0x86, 0x48, 1, 0x65, 3, 4, 3, 4], CertHash::Sha512),
];
/// Hash algorithms that can appear in RSASSA-PSS parameters.
const HASH_ALGORITHMS: &[(&[u8], CertHash)] = &[
    (&[0x2b, 0x0e, 3, 2, 0x1a], CertHash::Sha256), // SHA-1
    (&[0x60, 0x86, 0x48, 1, 0x65, 3, 4, 2, 4], CertHash::Sha224),
    (&[0x60, 0x86, 0x48, 1, 0x65, 3, 4, 2, 1], CertHash::Sha256),
    (&[0x60, 0x86, 0x48, 1, 0x65, 3, 4, 2, 2], CertHash::Sha384),
    (&[0x60, 0x86, 0x48, 1, 0x65, 3, 4, 2, 3], CertHash::Sha512),
];

const SEQUENCE: u8 = 0x30;
const OBJECT_IDENTIFIER: u8 = 0x06;
/// `[0]`, constructed: RSASSA-PSS-params' `hashAlgorithm`.
const CONTEXT_0: u8 = 0xa0;

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }`:
/// returns the algorithm OID and the rest of the AlgorithmIdentifier (its parameters).
fn signature_algorithm(cert_der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (certificate, _) = expect_tlv(cert_der, SEQUENCE)?;
    let (_tbs_certificate, rest) = expect_tlv(certificate, SEQUENCE)?;
    let (algorithm_identifier, _) = expect_tlv(rest, SEQUENCE)?;
    expect_tlv(algorithm_identifier, OBJECT_IDENTIFIER)
}

/// RSASSA-PSS-params (RFC 4055 section 3.1): `hashAlgorithm [0]` first, SHA-1 when absent.
fn pss_hash(parameters: &[u8]) -> Option<CertHash> {
    let (params, _) = expect_tlv(parameters, SEQUENCE)?;
    let Some((hash_algorithm, _)) = expect_tlv(params, CONTEXT_0) else {
        return Some(CertHash::Sha256);
    };
    let (algorithm_identifier, _) = expect_tlv(hash_algorithm, SEQUENCE)?;
    let (oid, _) = expect_tlv(algorithm_identifier, OBJECT_IDENTIFIER)?;
    HASH_ALGORITHMS
        .iter()
        .find(|(known, _)| *known == oid)
        .map(|&(_, hash)| hash)
}

/// Splits one DER TLV with tag `tag` off the front of `input`: its contents and the rest.
fn expect_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (len, rest) = der_length(rest)?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// A DER length: short form, or long form in up to 4 bytes.
fn der_length(input: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first < 0x80 {
        return Some((usize::from(first), rest));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 || count > rest.len() {
        return None;
    }
    let (bytes, rest) = rest.split_at(count);
    let len = bytes
        .iter()
        .fold(0usize, |len, &b| len << 8 | usize::from(b));
    Some((len, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;

    fn der(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/certs/{name}.pem", env!("CARGO_MANIFEST_DIR"));
        let pem = std::fs::read_to_string(&path).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        B64.decode(body).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Certificates made with `openssl req -x509`; the expected values are the first bytes
    /// of `openssl dgst -<hash>` of their DER, so this checks our DER walk against OpenSSL.
    #[test]
    fn end_point_data_uses_the_certificate_signature_hash_like_openssl() {
        let cases = [
            ("ecdsa-sha256", Some(CertHash::Sha256), "3dc578d72a1aec3d"),
            ("ecdsa-sha384", Some(CertHash::Sha384), "9cc6f4a5b3f549c1"),
            ("ecdsa-sha512", Some(CertHash::Sha512), "da4ec36ee1bade05"),
            ("rsa-md5", Some(CertHash::Sha256), "ec7df1132746d81e"),
            ("rsa-sha1", Some(CertHash::Sha256), "466bf82d981dc47b"),
            ("rsa-sha224", Some(CertHash::Sha224), "2a03d933ed55a899"),
            ("rsa-sha384", Some(CertHash::Sha384), "a3b9bf8e648fa52c"),
            ("rsa-sha512", Some(CertHash::Sha512), "e46784c12e2b334f"),
            ("rsa-pss-sha1", Some(CertHash::Sha256), "4e8550f000105d35"),
            ("rsa-pss-sha384", Some(CertHash::Sha384), "ef25efd2c20db5c1"),
            ("ed25519", None, "c7b47b6581af8a38"),
        ];
        for (name, hash, prefix) in cases {
            let cert = der(name);
            assert_eq!(signature_hash(&cert), hash, "{name}");
            assert!(
                hex(&tls_server_end_point(&cert)).starts_with(prefix),
                "{name}"
            );
        }
    }

    #[test]
    fn bytes_that_are_not_a_certificate_have_no_signature_hash() {
        let cert = der("rsa-sha384");
        for len in 0..cert.len() {
            assert_eq!(signature_hash(&cert[..len]), None, "truncated to {len}");
        }
        assert_eq!(signature_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(signature_hash(&[0x30, 0x80, 0, 0]), None);
        assert_eq!(tls_server_end_point(b"junk").len(), 32);
    }

    #[test]
    fn debug_output_hides_binding_data() {
        let data = vec![0xab; 32];
        let client = format!("{:?}", ChannelBinding::TlsServerEndPoint(data.clone()));
        let server = format!("{:?}", ServerBinding::Offered(data));
        assert!(!client.contains("171") && !server.contains("171"));
    }

    proptest::proptest! {
        #[test]
        fn the_der_walk_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = signature_hash(&bytes);
        }
    }
}
