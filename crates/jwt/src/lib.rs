//! JWT verification for pgbastion: RS256, ES256 and EdDSA (Ed25519) tokens checked against
//! keys from PEM files, a JWKS URL or an OpenID Connect discovery document.
//!
//! Token parsing (bounded by [`MAX_TOKEN_LEN`]), key selection and claim checks are plain
//! synchronous code; only loading keys ([`JwtVerifier::new`], [`JwtVerifier::refresh`]) does
//! I/O. [`JwtVerifier::verify`] reads the current key set without blocking on a refresh.
//!
//! What is refused, and why:
//! - `alg: none` and every HS* algorithm: with public keys configured, accepting HMAC would
//!   let anyone holding the public key mint tokens.
//! - A key whose type (or JWK `alg`) does not fit the header's `alg`.
//! - Tokens without `exp`, expired or not yet valid (`nbf`), both with the configured leeway;
//!   an `iss` other than the configured issuer; an `aud` without the configured audience.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pgbastion_jwt::JwtError> {
//! use pgbastion_jwt::{JwtSettings, JwtVerifier, KeySource};
//!
//! let discovery = "https://idp.example.com/.well-known/openid-configuration".to_owned();
//! let settings = JwtSettings::new("https://idp.example.com", KeySource::OidcDiscovery(discovery))
//!     .with_audience("pgbastion");
//! let verifier = JwtVerifier::new(settings).await?;
//! let claims = verifier.verify("eyJ...")?;
//! println!("user {:?}", claims.subject());
//! # Ok(())
//! # }
//! ```

mod claims;
mod error;
mod fetch;
mod jwks;
mod keys;
mod pem;
mod settings;
mod token;
mod verifier;

pub use claims::Claims;
pub use error::{JwtError, MAX_ECHO};
pub use fetch::MAX_DOCUMENT_LEN;
pub use settings::{JwtSettings, KeySource};
pub use token::MAX_TOKEN_LEN;
pub use verifier::JwtVerifier;
