//! Loaded public keys and the rule that picks the ones a token may be checked with.

use jsonwebtoken::DecodingKey;

use crate::error::{echo, JwtError};
use crate::token::Alg;

/// The key types this crate verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// RSA, for RS256.
    Rsa,
    /// ECDSA on P-256, for ES256.
    EcP256,
    /// Ed25519, for EdDSA.
    Ed25519,
}

/// One public key.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    /// The JWK `kid`; PEM keys have none.
    pub(crate) kid: Option<String>,
    /// What the key is.
    pub(crate) kind: KeyKind,
    /// The JWK `alg`, when the key set restricts the key to one algorithm.
    pub(crate) alg: Option<String>,
    /// The key in `jsonwebtoken`'s form.
    pub(crate) key: DecodingKey,
}

impl VerifyingKey {
    /// Whether a token signed with `alg` may be checked with this key.
    fn fits(&self, alg: Alg) -> bool {
        self.kind == alg.key_kind() && self.alg.as_deref().is_none_or(|own| own == alg.name())
    }

    /// Whether `signature` over `signing_input` verifies with this key.
    pub(crate) fn verifies(&self, alg: Alg, signing_input: &str, signature: &str) -> bool {
        let alg = alg.to_jsonwebtoken();
        jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &self.key, alg)
            .unwrap_or(false)
    }
}

/// The keys a verifier currently trusts.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// A set of `keys`; refuses an empty one.
    pub(crate) fn new(keys: Vec<VerifyingKey>) -> Result<Self, JwtError> {
        if keys.is_empty() {
            return Err(JwtError::KeyLoad(
                "no usable RS256, ES256 or Ed25519 key".into(),
            ));
        }
        Ok(Self { keys })
    }

    /// How many keys the set holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys a token with `alg` and `kid` may be checked with.
    ///
    /// A `kid` that names keys selects only those, and they must fit `alg`. A `kid` that names
    /// none falls back to the keys without a `kid` (PEM keys). Without a `kid`, every key that
    /// fits `alg` is a candidate.
    pub(crate) fn candidates(
        &self,
        alg: Alg,
        kid: Option<&str>,
    ) -> Result<Vec<&VerifyingKey>, JwtError> {
        if let Some(kid) = kid {
            let named: Vec<_> = self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if !named.is_empty() {
                let fitting: Vec<_> = named.into_iter().filter(|k| k.fits(alg)).collect();
                return match fitting.is_empty() {
                    true => Err(JwtError::KeyMismatch(echo(kid))),
                    false => Ok(fitting),
                };
            }
        }
        let open: Vec<_> = self
            .keys
            .iter()
            .filter(|k| (kid.is_none() || k.kid.is_none()) && k.fits(alg))
            .collect();
        if open.is_empty() {
            return Err(JwtError::UnknownKey(echo(kid.unwrap_or(alg.name()))));
        }
        Ok(open)
    }
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(kid: Option<&str>, kind: KeyKind, alg: Option<&str>) -> VerifyingKey {
        VerifyingKey {
            kid: kid.map(Into::into),
            kind,
            alg: alg.map(Into::into),
            key: DecodingKey::from_ed_der(&[0; 32]),
        }
    }

    fn set() -> KeySet {
        KeySet::new(vec![
            key(Some("rsa-1"), KeyKind::Rsa, None),
            key(Some("rsa-384"), KeyKind::Rsa, Some("RS384")),
            key(Some("ec-1"), KeyKind::EcP256, Some("ES256")),
            key(None, KeyKind::Ed25519, None),
        ])
        .unwrap()
    }

    fn kids(found: Vec<&VerifyingKey>) -> Vec<Option<&str>> {
        found.iter().map(|k| k.kid.as_deref()).collect()
    }

    #[test]
    fn kid_selects_its_key() {
        assert_eq!(
            kids(set().candidates(Alg::Rs256, Some("rsa-1")).unwrap()),
            [Some("rsa-1")]
        );
    }

    #[test]
    fn kid_of_another_key_type_is_a_mismatch() {
        let err = set().candidates(Alg::Es256, Some("rsa-1")).unwrap_err();
        assert_eq!(err, JwtError::KeyMismatch("rsa-1".into()));
    }

    #[test]
    fn key_restricted_to_another_alg_is_a_mismatch() {
        let err = set().candidates(Alg::Rs256, Some("rsa-384")).unwrap_err();
        assert_eq!(err, JwtError::KeyMismatch("rsa-384".into()));
    }

    #[test]
    fn unknown_kid_falls_back_to_keys_without_kid() {
        assert_eq!(
            kids(set().candidates(Alg::EdDsa, Some("x")).unwrap()),
            [None]
        );
        let err = set().candidates(Alg::Rs256, Some("x")).unwrap_err();
        assert_eq!(err, JwtError::UnknownKey("x".into()));
    }

    #[test]
    fn no_kid_tries_every_key_that_fits() {
        assert_eq!(
            kids(set().candidates(Alg::Rs256, None).unwrap()),
            [Some("rsa-1")]
        );
        assert_eq!(
            kids(set().candidates(Alg::Es256, None).unwrap()),
            [Some("ec-1")]
        );
    }

    #[test]
    fn empty_set_is_refused() {
        assert!(matches!(KeySet::new(vec![]), Err(JwtError::KeyLoad(_))));
    }
}
