//! Authentication requests and results: the server's `R` messages.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::reader::BytesReader;
use crate::writer::put_name;

/// An `R` message: what the server asks for next, or that authentication succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authentication {
    /// 0: AuthenticationOk.
    Ok,
    /// 2: AuthenticationKerberosV5 (unsupported since PostgreSQL 9.4; recognised only).
    KerberosV5,
    /// 3: AuthenticationCleartextPassword.
    CleartextPassword,
    /// 5: AuthenticationMD5Password.
    Md5Password {
        /// The salt to hash with.
        salt: [u8; 4],
    },
    /// 7: AuthenticationGSS.
    Gss,
    /// 8: AuthenticationGSSContinue: GSSAPI or SSPI data.
    GssContinue(Bytes),
    /// 9: AuthenticationSSPI.
    Sspi,
    /// 10: AuthenticationSASL: the mechanisms the server offers, in its preference order.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256-PLUS`, `SCRAM-SHA-256`.
        mechanisms: Vec<String>,
    },
    /// 11: AuthenticationSASLContinue: a challenge.
    SaslContinue(Bytes),
    /// 12: AuthenticationSASLFinal: outcome data (the server signature for SCRAM).
    SaslFinal(Bytes),
}

impl Authentication {
    /// The request code on the wire.
    pub fn code(&self) -> i32 {
        match self {
            Self::Ok => 0,
            Self::KerberosV5 => 2,
            Self::CleartextPassword => 3,
            Self::Md5Password { .. } => 5,
            Self::Gss => 7,
            Self::GssContinue(_) => 8,
            Self::Sspi => 9,
            Self::Sasl { .. } => 10,
            Self::SaslContinue(_) => 11,
            Self::SaslFinal(_) => 12,
        }
    }

    pub(crate) fn decode(r: &mut BytesReader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.i32()? {
            0 => Self::Ok,
            2 => Self::KerberosV5,
            3 => Self::CleartextPassword,
            5 => Self::Md5Password { salt: r.array()? },
            7 => Self::Gss,
            8 => Self::GssContinue(r.rest_shared()),
            9 => Self::Sspi,
            10 => Self::Sasl {
                mechanisms: decode_mechanisms(r)?,
            },
            11 => Self::SaslContinue(r.rest_shared()),
            12 => Self::SaslFinal(r.rest_shared()),
            _ => {
                return Err(DecodeError::InvalidValue {
                    what: "authentication request code",
                })
            }
        })
    }

    pub(crate) fn encode_body(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.put_i32(self.code());
        match self {
            Self::Md5Password { salt } => buf.put_slice(salt),
            Self::GssContinue(data) | Self::SaslContinue(data) | Self::SaslFinal(data) => {
                buf.put_slice(data)
            }
            Self::Sasl { mechanisms } => {
                for mechanism in mechanisms {
                    put_name(buf, mechanism, "SASL mechanism")?;
                }
                buf.put_u8(0);
            }
            Self::Ok | Self::KerberosV5 | Self::CleartextPassword | Self::Gss | Self::Sspi => {}
        }
        Ok(())
    }
}

/// `(name NUL)* NUL`.
fn decode_mechanisms(r: &mut BytesReader<'_>) -> Result<Vec<String>, DecodeError> {
    let mut mechanisms = Vec::new();
    loop {
        match r.cstr()? {
            "" => return Ok(mechanisms),
            name => mechanisms.push(name.to_owned()),
        }
    }
}
