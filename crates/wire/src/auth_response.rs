//! The bodies of a client's `p` messages. PasswordMessage, SASLInitialResponse, SASLResponse
//! and GSSResponse share the tag; only the authentication phase tells them apart, so
//! [`FrontendMessage::decode`](crate::FrontendMessage::decode) keeps the body raw in an
//! [`AuthenticationResponse`] and the caller, who knows the phase, parses it. None of these
//! types show their contents in `Debug`: they carry passwords, tokens and proofs.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::reader::BytesReader;
use crate::writer::{put_cstr, put_name, put_nullable, write_message};

/// The `p` message type byte.
pub const AUTHENTICATION_RESPONSE_TAG: u8 = b'p';

/// The raw body of a `p` message, not yet interpreted.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthenticationResponse(pub Bytes);

impl AuthenticationResponse {
    /// Parses the body as a PasswordMessage (cleartext or md5 phase).
    pub fn password(&self) -> Result<PasswordMessage, DecodeError> {
        PasswordMessage::decode(&self.0)
    }

    /// Parses the body as a SASLInitialResponse (first message of the SASL phase).
    pub fn sasl_initial(&self) -> Result<SaslInitialResponse, DecodeError> {
        SaslInitialResponse::decode(&self.0)
    }

    /// Parses the body as a SASLResponse (later messages of the SASL phase).
    pub fn sasl(&self) -> SaslResponse {
        SaslResponse::decode(&self.0)
    }

    /// The body as GSSResponse data (GSSAPI/SSPI phase): all of it, uninterpreted.
    pub fn gss(&self) -> Bytes {
        self.0.clone()
    }
}

impl std::fmt::Debug for AuthenticationResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthenticationResponse(<{} bytes>)", self.0.len())
    }
}

/// A PasswordMessage: a cleartext password, an md5 response, or a token sent as a password.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordMessage {
    /// The password or response.
    pub password: String,
}

impl PasswordMessage {
    /// Decodes the body of a `p` message.
    pub fn decode(body: &Bytes) -> Result<Self, DecodeError> {
        let mut r = BytesReader::new(body);
        let password = r.string()?;
        r.finish()?;
        Ok(Self { password })
    }

    /// Appends a complete `p` message.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        write_message(buf, AUTHENTICATION_RESPONSE_TAG, |buf| {
            put_cstr(buf, &self.password)
        })
    }
}

impl std::fmt::Debug for PasswordMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordMessage(<redacted>)")
    }
}

/// SASLInitialResponse: the chosen mechanism and an optional initial response.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslInitialResponse {
    /// Mechanism name, e.g. `SCRAM-SHA-256`.
    pub mechanism: String,
    /// The initial response; `None` when the client sent length -1.
    pub data: Option<Bytes>,
}

impl SaslInitialResponse {
    /// Decodes the body of a `p` message.
    pub fn decode(body: &Bytes) -> Result<Self, DecodeError> {
        let mut r = BytesReader::new(body);
        let mechanism = r.string()?;
        let data = r.nullable_shared("SASL initial response")?;
        r.finish()?;
        Ok(Self { mechanism, data })
    }

    /// Appends a complete `p` message.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        write_message(buf, AUTHENTICATION_RESPONSE_TAG, |buf| {
            put_name(buf, &self.mechanism, "SASL mechanism")?;
            put_nullable(buf, self.data.as_deref())
        })
    }
}

impl std::fmt::Debug for SaslInitialResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslInitialResponse")
            .field("mechanism", &self.mechanism)
            .field("data", &self.data.as_ref().map(|d| d.len()))
            .finish()
    }
}

/// SASLResponse: mechanism data, the whole body.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslResponse {
    /// The data.
    pub data: Bytes,
}

impl SaslResponse {
    /// Decodes the body of a `p` message (any body is valid data).
    pub fn decode(body: &Bytes) -> Self {
        Self { data: body.clone() }
    }

    /// Appends a complete `p` message.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        write_message(buf, AUTHENTICATION_RESPONSE_TAG, |buf| {
            buf.put_slice(&self.data);
            Ok(())
        })
    }
}

impl std::fmt::Debug for SaslResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SaslResponse(<{} bytes>)", self.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let password = PasswordMessage {
            password: "hunter2".into(),
        };
        let initial = SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data: Some(Bytes::from_static(b"n,,n=,r=hunter2")),
        };
        let response = SaslResponse {
            data: Bytes::from_static(b"p=hunter2"),
        };
        let raw = AuthenticationResponse(Bytes::from_static(b"hunter2\0"));
        for shown in [
            format!("{password:?}"),
            format!("{initial:?}"),
            format!("{response:?}"),
            format!("{raw:?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn a_sasl_initial_response_of_length_minus_one_has_no_data() {
        let body = Bytes::from_static(b"SCRAM-SHA-256\0\xff\xff\xff\xff");
        let initial = AuthenticationResponse(body).sasl_initial().unwrap();
        assert_eq!(initial.data, None);
    }

    #[test]
    fn a_password_must_be_one_terminated_string() {
        let raw = AuthenticationResponse(Bytes::from_static(b"pw\0x"));
        assert_eq!(raw.password(), Err(DecodeError::TrailingBytes { n: 1 }));
        let raw = AuthenticationResponse(Bytes::from_static(b"pw"));
        assert_eq!(raw.password(), Err(DecodeError::MissingNul));
    }
}
