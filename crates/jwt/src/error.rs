//! The one error type of this crate.

/// Why a token was refused or keys could not be loaded.
///
/// Every `Display` message is safe to show a client: it never contains the token, and the
/// few pieces taken from the token header (`kid`, `alg`) are cut to [`MAX_ECHO`] characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token is not three base64url parts with a JSON header and a JSON object payload,
    /// or is longer than [`crate::MAX_TOKEN_LEN`].
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than RS256, ES256 or EdDSA (including `none` and HS*).
    #[error("unsupported token algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// No loaded key has the token's `kid`, or none fits the token's algorithm.
    #[error("no key {0:?} known for this token")]
    UnknownKey(String),
    /// The key named by `kid` is of another type than the header's algorithm.
    #[error("token algorithm does not match the key {0:?}")]
    KeyMismatch(String),
    /// The signature does not verify with any candidate key.
    #[error("token signature is invalid")]
    BadSignature,
    /// A required claim (`exp`, `iss`) is absent or has the wrong JSON type.
    #[error("token claim {0:?} is missing or not valid")]
    MissingClaim(&'static str),
    /// `exp` (plus leeway) is in the past.
    #[error("token has expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `iss` differs from the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A key file could not be read or parsed, or a key set held no usable key.
    #[error("could not load keys: {0}")]
    KeyLoad(String),
    /// A JWKS or discovery document could not be fetched or parsed.
    #[error("could not fetch keys: {0}")]
    Fetch(String),
    /// A JWKS or discovery URL (configured or discovered) is plain `http://` and
    /// [`crate::JwtSettings::allow_http`] is off.
    #[error(
        "refusing to fetch keys from {0}: not https (over plain http anyone on the path can \
         substitute the signing keys)"
    )]
    InsecureUrl(String),
}

/// The most characters of token-supplied text (`kid`, `alg`) an error message repeats.
pub const MAX_ECHO: usize = 64;

/// Cuts token-supplied text so an error message stays short.
pub(crate) fn echo(text: &str) -> String {
    text.chars().take(MAX_ECHO).collect()
}
