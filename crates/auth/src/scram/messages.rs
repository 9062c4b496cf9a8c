//! Parsing of SCRAM messages (RFC 5802 section 7): comma-separated `a=value` attributes.

use super::ScramError;

/// Splits off the attribute `name` at the front of `input`: returns its value and the rest
/// after the following comma (empty at the end).
pub fn attribute(input: &[u8], name: u8) -> Result<(&[u8], &[u8]), ScramError> {
    match input {
        [n, b'=', rest @ ..] if *n == name => Ok(split_at_comma(rest)),
        _ => Err(ScramError::Malformed(attribute_name(name))),
    }
}

/// Skips optional extension attributes until `name` comes up; returns its value and the rest.
pub fn attribute_after_extensions(
    mut input: &[u8],
    name: u8,
) -> Result<(&[u8], &[u8]), ScramError> {
    loop {
        match input {
            [n, b'=', ..] if *n == name => return attribute(input, name),
            [b'm', b'=', ..] => return Err(ScramError::Malformed("mandatory extension")),
            [n, b'=', rest @ ..] if n.is_ascii_alphabetic() => input = split_at_comma(rest).1,
            _ => return Err(ScramError::Malformed(attribute_name(name))),
        }
    }
}

fn split_at_comma(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&b| b == b',') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[]),
    }
}

/// A nonce must be printable ASCII other than `,` (RFC 5802 `printable`).
pub fn valid_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn attribute_name(name: u8) -> &'static str {
    match name {
        b'n' => "expected username attribute n=",
        b'r' => "expected nonce attribute r=",
        b's' => "expected salt attribute s=",
        b'i' => "expected iteration count attribute i=",
        b'c' => "expected channel binding attribute c=",
        b'p' => "expected proof attribute p=",
        b'v' => "expected verifier attribute v=",
        _ => "unexpected attribute",
    }
}

/// The GS2 header flag of a client-first message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports it but thinks the server does not.
    SupportedNotUsed,
    /// `p=<type>`: the client uses channel binding of this type.
    Used(String),
}

/// Splits a client-first message into its GS2 flag, the full GS2 header and the bare part.
pub fn parse_gs2(message: &[u8]) -> Result<(Gs2Flag, &[u8], &[u8]), ScramError> {
    let (flag, rest) = split_at_comma(message);
    let flag = match flag {
        b"n" => Gs2Flag::NotSupported,
        b"y" => Gs2Flag::SupportedNotUsed,
        [b'p', b'=', kind @ ..] => Gs2Flag::Used(String::from_utf8_lossy(kind).into_owned()),
        _ => return Err(ScramError::Malformed("invalid channel binding flag")),
    };
    let (authzid, bare) = split_at_comma(rest);
    if !authzid.is_empty() {
        return Err(ScramError::AuthzidNotSupported);
    }
    if bare.is_empty() && !message.ends_with(b",") {
        return Err(ScramError::Malformed("missing client-first-message-bare"));
    }
    let header_len = message.len() - bare.len();
    Ok((flag, &message[..header_len], bare))
}
