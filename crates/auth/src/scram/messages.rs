//! Parsing of SCRAM messages (RFC 5802 section 7): a GS2 header, then comma-separated
//! `a=value` attributes in a fixed order, with optional extensions in set places.

use super::ScramError;

/// A cursor over the attributes of one message. It never panics and never reads past the
/// message: each step splits at the next comma.
pub struct Attributes<'a> {
    message: &'a [u8],
    /// Where the next attribute starts; `None` once the last one was read.
    next: Option<usize>,
    /// Where the attribute read last starts.
    last: usize,
}

impl<'a> Attributes<'a> {
    /// A cursor at the start of `message`.
    pub fn new(message: &'a [u8]) -> Self {
        Self {
            message,
            next: Some(0),
            last: 0,
        }
    }

    /// The part of the message before the attribute read last and its comma: the
    /// client-final message without its proof, once the proof was read.
    pub fn before_last(&self) -> &'a [u8] {
        let end = self.last.saturating_sub(1);
        self.message.get(..end).unwrap_or_default()
    }

    /// Reads the next attribute, which must be `name`.
    pub fn expect(&mut self, name: u8) -> Result<&'a [u8], ScramError> {
        match self.next_any()? {
            (found, value) if found == name => Ok(value),
            _ => Err(ScramError::Malformed(expected(name))),
        }
    }

    /// Reads the next attribute, which must be `name`, after optional extensions (skipped).
    /// A mandatory extension `m=` is refused: we know none.
    pub fn expect_after_extensions(&mut self, name: u8) -> Result<&'a [u8], ScramError> {
        loop {
            match self.next_any()? {
                (found, value) if found == name => return Ok(value),
                (b'm', _) => return Err(mandatory_extension()),
                _ => {}
            }
        }
    }

    /// Refuses a mandatory extension `m=` where RFC 5802 allows one (first in client-first
    /// bare and server-first messages).
    pub fn refuse_mandatory_extension(&self) -> Result<(), ScramError> {
        match self.rest() {
            Some([b'm', b'=', ..]) => Err(mandatory_extension()),
            _ => Ok(()),
        }
    }

    /// Skips the optional extensions at the end of a message.
    pub fn skip_extensions(&mut self) -> Result<(), ScramError> {
        while self.next.is_some() {
            self.next_any()?;
        }
        Ok(())
    }

    /// Requires the end of the message.
    pub fn finish(&self) -> Result<(), ScramError> {
        match self.next {
            None => Ok(()),
            Some(_) => Err(ScramError::Malformed("garbage at end of message")),
        }
    }

    fn rest(&self) -> Option<&'a [u8]> {
        self.message.get(self.next?..)
    }

    /// Reads any attribute: a letter, `=`, a value up to the next comma or the end.
    fn next_any(&mut self) -> Result<(u8, &'a [u8]), ScramError> {
        let start = self
            .next
            .ok_or(ScramError::Malformed("message ends too early"))?;
        let Some([name, b'=', value @ ..]) = self.message.get(start..) else {
            return Err(ScramError::Malformed("expected an attribute"));
        };
        if !name.is_ascii_alphabetic() {
            return Err(ScramError::Malformed("attribute name is not a letter"));
        }
        let (value, next) = match value.iter().position(|&b| b == b',') {
            Some(comma) => (&value[..comma], Some(start + 2 + comma + 1)),
            None => (value, None),
        };
        self.next = next;
        self.last = start;
        Ok((*name, value))
    }
}

fn mandatory_extension() -> ScramError {
    ScramError::Malformed("unsupported mandatory extension")
}

fn expected(name: u8) -> &'static str {
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

/// A nonce must be printable ASCII other than `,` (RFC 5802 `printable`).
pub fn valid_nonce(nonce: &[u8]) -> bool {
    !nonce.is_empty()
        && nonce
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// The GS2 channel binding flag of a client-first message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gs2Flag<'a> {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports it but thinks the server does not.
    SupportedNotUsed,
    /// `p=<type>`: the client uses channel binding of this type.
    Used(&'a [u8]),
}

/// A client-first message split into its parts.
pub struct ClientFirst<'a> {
    /// The channel binding flag.
    pub flag: Gs2Flag<'a>,
    /// The whole GS2 header, `flag "," [authzid] ","`: part of the client-final `c=` data.
    pub gs2_header: &'a [u8],
    /// `client-first-message-bare`: part of the AuthMessage.
    pub bare: &'a [u8],
}

/// Splits a client-first message into GS2 header and bare part. An authorization identity
/// is refused, as PostgreSQL does.
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst<'_>, ScramError> {
    let mut parts = message.splitn(3, |&b| b == b',');
    let flag = match parts.next() {
        Some(b"n") => Gs2Flag::NotSupported,
        Some(b"y") => Gs2Flag::SupportedNotUsed,
        Some([b'p', b'=', kind @ ..]) => Gs2Flag::Used(kind),
        _ => return Err(ScramError::Malformed("invalid channel binding flag")),
    };
    match parts.next() {
        Some([]) => {}
        Some(_) => return Err(ScramError::AuthzidNotSupported),
        None => {
            return Err(ScramError::Malformed(
                "missing authorization identity field",
            ))
        }
    }
    let bare = parts
        .next()
        .ok_or(ScramError::Malformed("missing client-first-message-bare"))?;
    let gs2_header = &message[..message.len() - bare.len()];
    Ok(ClientFirst {
        flag,
        gs2_header,
        bare,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_in_order_and_trailing_commas_are_garbage() {
        let mut attrs = Attributes::new(b"r=abc,s=c2FsdA==,i=4096");
        assert_eq!(attrs.expect(b'r').unwrap(), b"abc");
        assert_eq!(attrs.expect(b's').unwrap(), b"c2FsdA==");
        assert_eq!(attrs.before_last(), b"r=abc");
        assert_eq!(attrs.expect(b'i').unwrap(), b"4096");
        attrs.finish().unwrap();
        assert!(attrs.expect(b'x').is_err());

        let mut attrs = Attributes::new(b"v=abc,");
        attrs.expect(b'v').unwrap();
        assert!(attrs.finish().is_err());
        assert!(attrs.skip_extensions().is_err());
    }

    #[test]
    fn extensions_are_skipped_but_mandatory_ones_are_refused() {
        let mut attrs = Attributes::new(b"x=1,y=2,p=proof");
        assert_eq!(attrs.expect_after_extensions(b'p').unwrap(), b"proof");
        let mut attrs = Attributes::new(b"m=1,p=proof");
        assert!(attrs.expect_after_extensions(b'p').is_err());
        assert!(Attributes::new(b"m=x,r=1")
            .refuse_mandatory_extension()
            .is_err());
    }

    #[test]
    fn the_gs2_header_is_split_from_the_bare_message() {
        let first = parse_client_first(b"p=tls-server-end-point,,n=,r=abc").unwrap();
        assert_eq!(first.flag, Gs2Flag::Used(b"tls-server-end-point"));
        assert_eq!(first.gs2_header, b"p=tls-server-end-point,,");
        assert_eq!(first.bare, b"n=,r=abc");
        assert_eq!(
            parse_client_first(b"n,a=bob,n=,r=abc").err(),
            Some(ScramError::AuthzidNotSupported)
        );
        for bad in [&b""[..], b"n", b"n,", b"x,,n=,r=a", b"nn,,n=,r=a"] {
            assert!(parse_client_first(bad).is_err());
        }
    }
}
