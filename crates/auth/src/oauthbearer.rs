//! The server side of the SASL `OAUTHBEARER` mechanism (RFC 7628), as PostgreSQL 18 speaks it.
//!
//! The exchange is at most two client messages long:
//!
//! 1. The client's initial response `n,,\x01auth=Bearer <token>\x01\x01`. The server hands the
//!    token to a validator. An *empty* `auth=` value is a discovery request: libpq 18 sends it
//!    to learn the issuer before running its OAuth flow.
//! 2. When validation fails (or on discovery), the server answers with a JSON error
//!    ([`OAuthErrorResponse`]) in an `AuthenticationSASLContinue`, the client acknowledges
//!    with a single `\x01`, and the server then fails the authentication.
//!
//! This module only parses and builds those messages; validating the token is the caller's
//! business.

use std::fmt;

/// The SASL mechanism name.
pub const OAUTHBEARER: &str = "OAUTHBEARER";

const KVSEP: u8 = 0x01;

/// Why an `OAUTHBEARER` message was refused (a protocol violation, SQLSTATE 08P01).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthBearerError {
    /// The message does not follow RFC 7628's grammar.
    #[error("malformed OAUTHBEARER message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which OAUTHBEARER does not define.
    #[error("malformed OAUTHBEARER message: the client requested channel binding, which OAUTHBEARER does not support")]
    ChannelBindingRequested,
    /// The client sent an authorization identity, which is not supported.
    #[error("client uses authorization identity, but it is not supported")]
    AuthzidNotSupported,
}

/// A bearer token from a client. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The token text (for the validator only: never log it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// What the client's initial response asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientInitialResponse {
    /// `auth=` was empty: the client wants the discovery document, and expects to fail.
    Discovery,
    /// A bearer token to validate.
    Token(BearerToken),
}

/// Parses the client's initial response (RFC 7628 section 3.1).
pub fn parse_initial_response(input: &[u8]) -> Result<ClientInitialResponse, OAuthBearerError> {
    let rest = match input {
        [] => return Err(OAuthBearerError::Malformed("the message is empty")),
        [b'p', ..] => return Err(OAuthBearerError::ChannelBindingRequested),
        [b'n' | b'y', b',', rest @ ..] => rest,
        _ => {
            return Err(OAuthBearerError::Malformed(
                "unexpected channel-binding flag",
            ))
        }
    };
    let rest = match rest {
        [b'a', ..] => return Err(OAuthBearerError::AuthzidNotSupported),
        [b',', KVSEP, rest @ ..] => rest,
        _ => {
            return Err(OAuthBearerError::Malformed(
                "expected \",\" and a key-value separator",
            ))
        }
    };
    let auth = parse_kvpairs(rest)?;
    if auth.is_empty() {
        return Ok(ClientInitialResponse::Discovery);
    }
    parse_bearer(auth).map(ClientInitialResponse::Token)
}

/// Walks `key=value\x01` pairs up to the terminating empty pair; returns the `auth` value.
fn parse_kvpairs(mut input: &[u8]) -> Result<&[u8], OAuthBearerError> {
    let mut auth = None;
    loop {
        let end = input
            .iter()
            .position(|&b| b == KVSEP)
            .ok_or(OAuthBearerError::Malformed("unterminated key/value pair"))?;
        let (pair, after) = (&input[..end], &input[end + 1..]);
        if pair.is_empty() {
            if !after.is_empty() {
                return Err(OAuthBearerError::Malformed(
                    "data after the final terminator",
                ));
            }
            return auth.ok_or(OAuthBearerError::Malformed("no auth value"));
        }
        let eq = pair
            .iter()
            .position(|&b| b == b'=')
            .ok_or(OAuthBearerError::Malformed("a key without a value"))?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        validate_kvpair(key, value)?;
        if key == b"auth" && auth.replace(value).is_some() {
            return Err(OAuthBearerError::Malformed("multiple auth values"));
        }
        input = after;
    }
}

fn validate_kvpair(key: &[u8], value: &[u8]) -> Result<(), OAuthBearerError> {
    if key.is_empty() || !key.iter().all(u8::is_ascii_alphabetic) {
        return Err(OAuthBearerError::Malformed("invalid key name"));
    }
    let value_ok = value
        .iter()
        .all(|&b| (0x21..=0x7e).contains(&b) || matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    if !value_ok {
        return Err(OAuthBearerError::Malformed("invalid value"));
    }
    Ok(())
}

/// `Bearer <b64token>` (RFC 6750 section 2.1; the scheme is case-insensitive).
fn parse_bearer(auth: &[u8]) -> Result<BearerToken, OAuthBearerError> {
    const SCHEME: &[u8] = b"bearer ";
    let malformed = OAuthBearerError::Malformed("the auth value is not a Bearer token");
    if auth.len() <= SCHEME.len() || !auth[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Err(malformed);
    }
    let token = auth[SCHEME.len()..].trim_ascii_start();
    let body_len = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let body_ok = body_len > 0
        && token[..body_len]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    match std::str::from_utf8(token) {
        Ok(text) if body_ok => Ok(BearerToken(text.to_owned())),
        _ => Err(malformed),
    }
}

/// Checks the client's acknowledgement of an error response: a single `\x01`.
pub fn parse_error_acknowledgement(input: &[u8]) -> Result<(), OAuthBearerError> {
    if input == [KVSEP] {
        Ok(())
    } else {
        Err(OAuthBearerError::Malformed(
            "the client did not send a kvsep response",
        ))
    }
}

/// The JSON a failed exchange answers with (RFC 7628 section 3.2.2), which lets libpq 18 find
/// the issuer and run its OAuth flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthErrorResponse {
    /// The issuer URL, or the full discovery URL (anything containing `/.well-known/`).
    pub issuer: String,
    /// Space-separated scopes the client must request.
    pub scope: String,
}

impl OAuthErrorResponse {
    /// The `openid-configuration` URL: the issuer's `/.well-known/openid-configuration`
    /// unless the issuer already names a well-known document.
    pub fn discovery_url(&self) -> String {
        if self.issuer.contains("/.well-known/") {
            self.issuer.clone()
        } else {
            format!(
                "{}/.well-known/openid-configuration",
                self.issuer.trim_end_matches('/')
            )
        }
    }

    /// The JSON body sent in `AuthenticationSASLContinue`.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"status\":\"invalid_token\",\"openid-configuration\":{},\"scope\":{}}}",
            json_string(&self.discovery_url()),
            json_string(&self.scope)
        )
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Builds a client initial response for `token` (what libpq 18 sends); for clients and tests.
pub fn client_initial_response(token: Option<&str>) -> Vec<u8> {
    let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
    format!("n,,\x01auth={auth}\x01\x01").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libpq_style_initial_response_yields_the_token() {
        let msg = client_initial_response(Some("eyJhbGciOi.eyJzdWIi.sig-_"));
        let ClientInitialResponse::Token(token) = parse_initial_response(&msg).unwrap() else {
            panic!("expected a token");
        };
        assert_eq!(token.expose(), "eyJhbGciOi.eyJzdWIi.sig-_");
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
    }

    #[test]
    fn an_empty_auth_value_is_a_discovery_request() {
        let msg = client_initial_response(None);
        assert_eq!(
            parse_initial_response(&msg),
            Ok(ClientInitialResponse::Discovery)
        );
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_extra_keys_are_ignored() {
        let msg = b"y,,\x01host=db\x01auth=BEARER abc==\x01port=5432\x01\x01";
        assert!(matches!(
            parse_initial_response(msg),
            Ok(ClientInitialResponse::Token(t)) if t.expose() == "abc=="
        ));
    }

    #[test]
    fn malformed_messages_are_refused() {
        let cases: &[&[u8]] = &[
            b"",
            b"x,,\x01auth=Bearer a\x01\x01",
            b"n,,\x01auth=Bearer a\x01",
            b"n,,\x01auth=Bearer a\x01\x01trailing",
            b"n,,\x01auth=Basic a\x01\x01",
            b"n,,\x01auth=Bearer a\x01auth=Bearer b\x01\x01",
            b"n,,\x01=x\x01\x01",
            b"n,,\x01k3y=x\x01auth=Bearer a\x01\x01",
            b"n,,\x01auth=Bearer a\x00\x01\x01",
            b"n,,\x01auth=Bearer =\x01\x01",
            b"n,,\x01host=x\x01\x01",
            b"n,\x01auth=Bearer a\x01\x01",
        ];
        for case in cases {
            assert!(
                matches!(
                    parse_initial_response(case),
                    Err(OAuthBearerError::Malformed(_))
                ),
                "accepted {case:?}"
            );
        }
        assert_eq!(
            parse_initial_response(b"p=tls-server-end-point,,\x01auth=Bearer a\x01\x01"),
            Err(OAuthBearerError::ChannelBindingRequested)
        );
        assert_eq!(
            parse_initial_response(b"n,a=alice,\x01auth=Bearer a\x01\x01"),
            Err(OAuthBearerError::AuthzidNotSupported)
        );
    }

    #[test]
    fn error_response_points_at_the_discovery_document() {
        let response = OAuthErrorResponse {
            issuer: "https://issuer.example/".into(),
            scope: "openid pg".into(),
        };
        assert_eq!(
            response.to_json(),
            r#"{"status":"invalid_token","openid-configuration":"https://issuer.example/.well-known/openid-configuration","scope":"openid pg"}"#
        );
        let explicit = OAuthErrorResponse {
            issuer: "https://i.example/.well-known/oauth-authorization-server".into(),
            scope: "a\"b".into(),
        };
        assert!(explicit.to_json().contains(r#""scope":"a\"b""#));
        assert!(explicit
            .to_json()
            .contains("https://i.example/.well-known/oauth-authorization-server\""));
    }

    #[test]
    fn only_a_single_kvsep_acknowledges_an_error() {
        assert_eq!(parse_error_acknowledgement(b"\x01"), Ok(()));
        assert!(parse_error_acknowledgement(b"\x01\x01").is_err());
        assert!(parse_error_acknowledgement(b"").is_err());
    }
}
