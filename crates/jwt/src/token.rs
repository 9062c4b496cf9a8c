//! Splitting a compact JWS into its parts and reading its header. No keys, no I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::error::{echo, JwtError};
use crate::keys::KeyKind;

/// The longest token accepted, in bytes. Identity providers' tokens are a few KiB; the bound
/// keeps a hostile client from making us decode megabytes before the signature check.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The signature algorithms this crate accepts. Everything else, `none` and HS* among them,
/// is refused before any key is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    /// The algorithm named by a header's `alg`.
    pub(crate) fn from_name(name: &str) -> Result<Self, JwtError> {
        match name {
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            "EdDSA" => Ok(Self::EdDsa),
            other => Err(JwtError::UnsupportedAlgorithm(echo(other))),
        }
    }

    /// The header name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The only key type that may verify this algorithm.
    pub(crate) fn key_kind(self) -> KeyKind {
        match self {
            Self::Rs256 => KeyKind::Rsa,
            Self::Es256 => KeyKind::EcP256,
            Self::EdDsa => KeyKind::Ed25519,
        }
    }

    /// The `jsonwebtoken` counterpart.
    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// A token split into its parts, header read, payload and signature not yet trusted.
#[derive(Debug)]
pub(crate) struct Token<'a> {
    /// The header's algorithm.
    pub(crate) alg: Alg,
    /// The header's key id.
    pub(crate) kid: Option<String>,
    /// `header "." payload`, the bytes the signature covers.
    pub(crate) signing_input: &'a str,
    /// The payload, base64url.
    pub(crate) payload: &'a str,
    /// The signature, base64url.
    pub(crate) signature: &'a str,
}

impl<'a> Token<'a> {
    /// Splits `token` and reads its header.
    pub(crate) fn parse(token: &'a str) -> Result<Self, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed("token too long"));
        }
        let (signing_input, signature) = token
            .rsplit_once('.')
            .ok_or(JwtError::Malformed("expected three dot-separated parts"))?;
        let (header, payload) = signing_input
            .split_once('.')
            .filter(|(_, payload)| !payload.contains('.'))
            .ok_or(JwtError::Malformed("expected three dot-separated parts"))?;
        let header = decode_object(header, "header is not a base64url JSON object")?;
        let (alg, kid) = read_header(&header)?;
        Ok(Self {
            alg,
            kid,
            signing_input,
            payload,
            signature,
        })
    }

    /// The payload as a JSON object; call only after the signature verified.
    pub(crate) fn payload_object(&self) -> Result<Map<String, Value>, JwtError> {
        decode_object(self.payload, "payload is not a base64url JSON object")
    }
}

/// Reads `alg` and `kid`, refusing headers that demand extensions we do not implement.
fn read_header(header: &Map<String, Value>) -> Result<(Alg, Option<String>), JwtError> {
    // RFC 7515 §4.1.11: a recipient that does not understand a `crit` extension must refuse.
    if header.contains_key("crit") {
        return Err(JwtError::Malformed(
            "critical header extensions are not supported",
        ));
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Alg::from_name(name)?,
        _ => return Err(JwtError::Malformed("header has no alg")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtError::Malformed("header kid is not a string")),
    };
    Ok((alg, kid))
}

/// Decodes one base64url part holding a JSON object.
fn decode_object(part: &str, why: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(why))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed(why)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn part(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str) -> String {
        format!("{}.{}.c2ln", part(header), part(r#"{"sub":"a"}"#))
    }

    #[test]
    fn header_with_rs256_and_kid_is_read() {
        let text = token(r#"{"alg":"RS256","kid":"k1"}"#);
        let parsed = Token::parse(&text).unwrap();
        assert_eq!(parsed.alg, Alg::Rs256);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.signature, "c2ln");
        assert_eq!(parsed.payload_object().unwrap()["sub"], "a");
    }

    #[test]
    fn alg_none_and_hmac_are_unsupported() {
        for alg in ["none", "HS256", "HS384", "HS512", "PS256", "RS384"] {
            let text = token(&format!(r#"{{"alg":"{alg}"}}"#));
            assert_eq!(
                Token::parse(&text).unwrap_err(),
                JwtError::UnsupportedAlgorithm(alg.into())
            );
        }
    }

    #[test]
    fn wrong_part_counts_are_malformed() {
        let h = part(r#"{"alg":"RS256"}"#);
        for text in [
            String::new(),
            h.clone(),
            format!("{h}.x"),
            format!("{h}.x.y.z"),
        ] {
            assert!(
                matches!(Token::parse(&text), Err(JwtError::Malformed(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn header_that_is_not_an_object_is_malformed() {
        for header in ["[]", "\"RS256\"", "{", r#"{"kid":"k"}"#, r#"{"alg":1}"#] {
            let text = token(header);
            assert!(
                matches!(Token::parse(&text), Err(JwtError::Malformed(_))),
                "{header}"
            );
        }
    }

    #[test]
    fn crit_header_is_refused() {
        let text = token(r#"{"alg":"ES256","crit":["b64"],"b64":false}"#);
        assert!(matches!(Token::parse(&text), Err(JwtError::Malformed(_))));
    }

    #[test]
    fn token_over_the_limit_is_refused_before_decoding() {
        let text = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            Token::parse(&text).unwrap_err(),
            JwtError::Malformed("token too long")
        );
    }

    #[test]
    fn long_alg_is_cut_in_the_error() {
        let alg = "X".repeat(500);
        let text = token(&format!(r#"{{"alg":"{alg}"}}"#));
        let JwtError::UnsupportedAlgorithm(shown) = Token::parse(&text).unwrap_err() else {
            panic!("wrong variant");
        };
        assert_eq!(shown.len(), crate::error::MAX_ECHO);
    }
}
