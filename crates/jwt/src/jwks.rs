//! Reading a JSON Web Key Set (RFC 7517) into verifying keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use crate::error::JwtError;
use crate::keys::{KeyKind, VerifyingKey};

/// The usable keys of a JWKS document.
///
/// Keys this crate cannot use (other types or curves, `"use": "enc"`, bad encodings) are
/// skipped rather than failing the set: identity providers publish encryption keys and
/// other algorithms beside the signing keys we need.
pub(crate) fn parse_jwks(document: &Value) -> Result<Vec<VerifyingKey>, JwtError> {
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| JwtError::Fetch("key set has no \"keys\" array".into()))?;
    Ok(keys
        .iter()
        .filter_map(Value::as_object)
        .filter_map(parse_jwk)
        .collect())
}

/// One JWK, or `None` when it is not a signing key of a supported type.
fn parse_jwk(jwk: &Map<String, Value>) -> Option<VerifyingKey> {
    if text(jwk, "use").is_some_and(|usage| usage != "sig") {
        return None;
    }
    let (kind, key) = match (text(jwk, "kty")?, text(jwk, "crv")) {
        ("RSA", _) => (KeyKind::Rsa, rsa_key(jwk)?),
        ("EC", Some("P-256")) => (KeyKind::EcP256, ec_key(jwk)?),
        ("OKP", Some("Ed25519")) => (KeyKind::Ed25519, ed_key(jwk)?),
        _ => return None,
    };
    let kid = text(jwk, "kid").map(str::to_owned);
    let alg = text(jwk, "alg").map(str::to_owned);
    Some(VerifyingKey {
        kid,
        kind,
        alg,
        key,
    })
}

fn rsa_key(jwk: &Map<String, Value>) -> Option<DecodingKey> {
    DecodingKey::from_rsa_components(text(jwk, "n")?, text(jwk, "e")?).ok()
}

fn ec_key(jwk: &Map<String, Value>) -> Option<DecodingKey> {
    let (x, y) = (text(jwk, "x")?, text(jwk, "y")?);
    // `from_ec_components` does not check lengths; a short coordinate would only fail later.
    if coordinate_len(x)? != 32 || coordinate_len(y)? != 32 {
        return None;
    }
    DecodingKey::from_ec_components(x, y).ok()
}

fn ed_key(jwk: &Map<String, Value>) -> Option<DecodingKey> {
    let x = text(jwk, "x")?;
    if coordinate_len(x)? != 32 {
        return None;
    }
    DecodingKey::from_ed_components(x).ok()
}

fn coordinate_len(b64: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(b64).ok().map(|bytes| bytes.len())
}

fn text<'a>(jwk: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    jwk.get(name)?.as_str()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn b64(len: usize) -> String {
        URL_SAFE_NO_PAD.encode(vec![7u8; len])
    }

    #[test]
    fn supported_keys_are_read_and_others_skipped() {
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "r", "n": b64(256), "e": "AQAB", "alg": "RS256"},
            {"kty": "EC", "kid": "e", "crv": "P-256", "x": b64(32), "y": b64(32)},
            {"kty": "OKP", "kid": "d", "crv": "Ed25519", "x": b64(32)},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": b64(48), "y": b64(48)},
            {"kty": "EC", "kid": "short", "crv": "P-256", "x": b64(31), "y": b64(32)},
            {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": b64(32)},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(256), "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": b64(32)},
            {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
            "not an object"
        ]});
        let keys = parse_jwks(&doc).unwrap();
        let found: Vec<_> = keys.iter().map(|k| (k.kid.as_deref(), k.kind)).collect();
        assert_eq!(
            found,
            [
                (Some("r"), KeyKind::Rsa),
                (Some("e"), KeyKind::EcP256),
                (Some("d"), KeyKind::Ed25519)
            ]
        );
        assert_eq!(keys[0].alg.as_deref(), Some("RS256"));
    }

    #[test]
    fn document_without_keys_array_is_refused() {
        assert!(matches!(
            parse_jwks(&json!({"keys": {}})),
            Err(JwtError::Fetch(_))
        ));
    }
}
