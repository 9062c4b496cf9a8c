//! Reading public keys from PEM text.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::DecodingKey;

use crate::error::JwtError;
use crate::keys::{KeyKind, VerifyingKey};

/// DER of the OIDs that tell the key types apart inside a SubjectPublicKeyInfo.
const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// The AlgorithmIdentifier of an SPKI lies within its first bytes; looking no further keeps
/// random key bytes from matching an OID.
const ALGORITHM_WINDOW: usize = 32;

/// Every public key in `text`, which must hold at least one and nothing else of PEM.
pub(crate) fn parse_pem(text: &str) -> Result<Vec<VerifyingKey>, JwtError> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let (block, after) = split_block(&rest[start..])?;
        keys.push(parse_block(block)?);
        rest = after;
    }
    if keys.is_empty() {
        return Err(JwtError::KeyLoad("no PEM block found".into()));
    }
    Ok(keys)
}

/// Splits the first block (from `-----BEGIN` through its `-----END ...-----` line) off `text`.
fn split_block(text: &str) -> Result<(&str, &str), JwtError> {
    let unterminated = || JwtError::KeyLoad("unterminated PEM block".into());
    let end = text.find("-----END ").ok_or_else(unterminated)?;
    let close = text[end + 9..].find("-----").ok_or_else(unterminated)?;
    Ok(text.split_at(end + 9 + close + 5))
}

/// One `PUBLIC KEY` or `RSA PUBLIC KEY` block.
fn parse_block(block: &str) -> Result<VerifyingKey, JwtError> {
    let bad = |why: &str| JwtError::KeyLoad(format!("PEM block: {why}"));
    let kind = if block.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        KeyKind::Rsa
    } else if block.starts_with("-----BEGIN PUBLIC KEY-----") {
        spki_kind(&block_der(block).ok_or_else(|| bad("bad base64"))?)?
    } else {
        return Err(bad(
            "only PUBLIC KEY and RSA PUBLIC KEY blocks are accepted",
        ));
    };
    let key = match kind {
        KeyKind::Rsa => DecodingKey::from_rsa_pem(block.as_bytes()),
        KeyKind::EcP256 => DecodingKey::from_ec_pem(block.as_bytes()),
        KeyKind::Ed25519 => DecodingKey::from_ed_pem(block.as_bytes()),
    }
    .map_err(|e| bad(&e.to_string()))?;
    Ok(VerifyingKey {
        kid: None,
        kind,
        alg: None,
        key,
    })
}

/// The DER inside a block.
fn block_der(block: &str) -> Option<Vec<u8>> {
    let body: String = block
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    STANDARD.decode(body).ok()
}

/// The key type named by a SubjectPublicKeyInfo's AlgorithmIdentifier.
fn spki_kind(der: &[u8]) -> Result<KeyKind, JwtError> {
    let head = &der[..der.len().min(ALGORITHM_WINDOW)];
    let has = |oid: &[u8]| head.windows(oid.len()).any(|w| w == oid);
    if has(OID_RSA_ENCRYPTION) {
        Ok(KeyKind::Rsa)
    } else if has(OID_EC_PUBLIC_KEY) && has(OID_P256) {
        Ok(KeyKind::EcP256)
    } else if has(OID_ED25519) {
        Ok(KeyKind::Ed25519)
    } else {
        Err(JwtError::KeyLoad(
            "PEM block: not an RSA, EC P-256 or Ed25519 public key".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // Generated with `openssl genpkey -algorithm ed25519 | openssl pkey -pubout`.
    const ED_PEM: &str = "-----BEGIN PUBLIC KEY-----\n\
        MCowBQYDK2VwAyEAuWQviMHGwZwmewvillR+Y1olWbyz2pmDfH81rzqZBHQ=\n\
        -----END PUBLIC KEY-----\n";

    // A P-384 key: `openssl ecparam -name secp384r1 -genkey | openssl ec -pubout`.
    const P384_PEM: &str = "-----BEGIN PUBLIC KEY-----\n\
        MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE2B/pxQ+gBuaLTzI89i7IOBDCqtTJL1KU\n\
        4RhVerBdMmeKJLyxhmQvT6acPmzABsvO94fomxjfQdseYb6wHMfalkYt38v7/iIu\n\
        ebfbMqlBuv1hKAQmUoTtCsU0NyUJjaOp\n\
        -----END PUBLIC KEY-----\n";

    #[test]
    fn ed25519_public_key_is_read() {
        let keys = parse_pem(ED_PEM).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kind, KeyKind::Ed25519);
        assert_eq!(keys[0].kid, None);
    }

    #[test]
    fn several_blocks_in_one_file_are_all_read() {
        let text = format!("comment\n{ED_PEM}\n{ED_PEM}");
        assert_eq!(parse_pem(&text).unwrap().len(), 2);
    }

    #[test]
    fn other_curves_are_refused() {
        assert!(matches!(parse_pem(P384_PEM), Err(JwtError::KeyLoad(_))));
    }

    #[test]
    fn private_keys_and_empty_files_are_refused() {
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(parse_pem(private), Err(JwtError::KeyLoad(_))));
        assert!(matches!(parse_pem(""), Err(JwtError::KeyLoad(_))));
        assert!(matches!(
            parse_pem("-----BEGIN PUBLIC KEY-----\nAAAA"),
            Err(JwtError::KeyLoad(_))
        ));
    }
}
