//! Messages a client sends once its startup packet is accepted.
//!
//! [`FrontendMessage`] is the typed view; the `write_*` functions encode the same messages
//! straight from borrowed values, for clients that build many messages (no `String` or
//! `Vec` per message). `FrontendMessage::encode` uses them, so both produce identical bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::auth_response::AuthenticationResponse;
use crate::error::{DecodeError, EncodeError};
use crate::frame::Frame;
use crate::reader::BytesReader;
use crate::writer::{put_counted16, put_cstr, put_i16_list, put_nullable, write_message};

/// Frontend message type bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrontendTag {
    /// `B`
    Bind = b'B',
    /// `C`
    Close = b'C',
    /// `d`
    CopyData = b'd',
    /// `c`
    CopyDone = b'c',
    /// `f`
    CopyFail = b'f',
    /// `D`
    Describe = b'D',
    /// `E`
    Execute = b'E',
    /// `H`
    Flush = b'H',
    /// `F`
    FunctionCall = b'F',
    /// `P`
    Parse = b'P',
    /// `p`: PasswordMessage, SASLInitialResponse, SASLResponse or GSSResponse.
    AuthenticationResponse = b'p',
    /// `Q`
    Query = b'Q',
    /// `S`
    Sync = b'S',
    /// `X`
    Terminate = b'X',
}

impl FrontendTag {
    /// The tag for a byte, if it is a frontend message type.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            b'B' => Self::Bind,
            b'C' => Self::Close,
            b'd' => Self::CopyData,
            b'c' => Self::CopyDone,
            b'f' => Self::CopyFail,
            b'D' => Self::Describe,
            b'E' => Self::Execute,
            b'H' => Self::Flush,
            b'F' => Self::FunctionCall,
            b'P' => Self::Parse,
            b'p' => Self::AuthenticationResponse,
            b'Q' => Self::Query,
            b'S' => Self::Sync,
            b'X' => Self::Terminate,
            _ => return None,
        })
    }

    /// The wire byte.
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// What Describe and Close refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `S`: a prepared statement.
    Statement,
    /// `P`: a portal.
    Portal,
}

impl Target {
    /// Parses the wire byte.
    pub fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            b'S' => Ok(Self::Statement),
            b'P' => Ok(Self::Portal),
            _ => Err(DecodeError::InvalidValue {
                what: "describe/close target",
            }),
        }
    }

    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            Self::Statement => b'S',
            Self::Portal => b'P',
        }
    }
}

/// A frontend message, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendMessage {
    /// Bind a prepared statement to parameters, creating a portal.
    Bind {
        /// Destination portal (empty: unnamed).
        portal: String,
        /// Source statement (empty: unnamed).
        statement: String,
        /// Parameter format codes (0 text, 1 binary): none, one for all, or one each.
        param_formats: Vec<i16>,
        /// Parameter values; `None` is NULL.
        params: Vec<Option<Bytes>>,
        /// Result column format codes, same convention.
        result_formats: Vec<i16>,
    },
    /// Close a statement or portal.
    Close {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: String,
    },
    /// COPY data.
    CopyData(Bytes),
    /// End of COPY data.
    CopyDone,
    /// Abort a COPY FROM STDIN, with a message.
    CopyFail(String),
    /// Describe a statement or portal.
    Describe {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: String,
    },
    /// Run a portal.
    Execute {
        /// Portal name (empty: unnamed).
        portal: String,
        /// Row limit (0: no limit).
        max_rows: i32,
    },
    /// Ask the server to send what it has buffered.
    Flush,
    /// Call a function (the legacy fast-path interface).
    FunctionCall {
        /// Function OID.
        oid: u32,
        /// Argument format codes.
        arg_formats: Vec<i16>,
        /// Arguments; `None` is NULL.
        args: Vec<Option<Bytes>>,
        /// Result format code.
        result_format: i16,
    },
    /// Prepare a statement.
    Parse {
        /// Statement name (empty: unnamed).
        name: String,
        /// The SQL.
        query: String,
        /// Parameter type OIDs (0: unspecified).
        param_types: Vec<u32>,
    },
    /// `p`: meaning depends on the authentication phase; see [`AuthenticationResponse`].
    AuthenticationResponse(AuthenticationResponse),
    /// A simple query.
    Query(String),
    /// End of an extended-query batch.
    Sync,
    /// Close the connection.
    Terminate,
}

impl FrontendMessage {
    /// Decodes a frame; the whole body must be consumed.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let tag =
            FrontendTag::from_byte(frame.tag).ok_or(DecodeError::UnknownTag { tag: frame.tag })?;
        let mut r = BytesReader::new(&frame.body);
        let message = match tag {
            FrontendTag::Bind => decode_bind(&mut r)?,
            FrontendTag::Close => Self::Close {
                target: Target::from_byte(r.u8()?)?,
                name: r.string()?,
            },
            FrontendTag::CopyData => Self::CopyData(r.rest_shared()),
            FrontendTag::CopyDone => Self::CopyDone,
            FrontendTag::CopyFail => Self::CopyFail(r.string()?),
            FrontendTag::Describe => Self::Describe {
                target: Target::from_byte(r.u8()?)?,
                name: r.string()?,
            },
            FrontendTag::Execute => Self::Execute {
                portal: r.string()?,
                max_rows: r.i32()?,
            },
            FrontendTag::Flush => Self::Flush,
            FrontendTag::FunctionCall => decode_function_call(&mut r)?,
            FrontendTag::Parse => decode_parse(&mut r)?,
            FrontendTag::AuthenticationResponse => {
                Self::AuthenticationResponse(AuthenticationResponse(r.rest_shared()))
            }
            FrontendTag::Query => Self::Query(r.string()?),
            FrontendTag::Sync => Self::Sync,
            FrontendTag::Terminate => Self::Terminate,
        };
        r.finish()?;
        Ok(message)
    }

    /// The message's tag.
    pub fn tag(&self) -> FrontendTag {
        match self {
            Self::Bind { .. } => FrontendTag::Bind,
            Self::Close { .. } => FrontendTag::Close,
            Self::CopyData(_) => FrontendTag::CopyData,
            Self::CopyDone => FrontendTag::CopyDone,
            Self::CopyFail(_) => FrontendTag::CopyFail,
            Self::Describe { .. } => FrontendTag::Describe,
            Self::Execute { .. } => FrontendTag::Execute,
            Self::Flush => FrontendTag::Flush,
            Self::FunctionCall { .. } => FrontendTag::FunctionCall,
            Self::Parse { .. } => FrontendTag::Parse,
            Self::AuthenticationResponse(_) => FrontendTag::AuthenticationResponse,
            Self::Query(_) => FrontendTag::Query,
            Self::Sync => FrontendTag::Sync,
            Self::Terminate => FrontendTag::Terminate,
        }
    }

    /// Appends the message to `buf`. On error `buf` is unchanged.
    #[inline]
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Self::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            } => write_bind(
                buf,
                portal,
                statement,
                param_formats,
                params.iter().map(Option::as_deref),
                result_formats,
            ),
            Self::Close { target, name } => write_close(buf, *target, name),
            Self::CopyData(data) => write_copy_data(buf, data),
            Self::CopyDone => write_empty(buf, FrontendTag::CopyDone),
            Self::CopyFail(message) => write_string(buf, FrontendTag::CopyFail, message),
            Self::Describe { target, name } => write_describe(buf, *target, name),
            Self::Execute { portal, max_rows } => write_execute(buf, portal, *max_rows),
            Self::Flush => write_empty(buf, FrontendTag::Flush),
            Self::FunctionCall {
                oid,
                arg_formats,
                args,
                result_format,
            } => write_function_call(buf, *oid, arg_formats, args, *result_format),
            Self::Parse {
                name,
                query,
                param_types,
            } => write_parse(buf, name, query, param_types),
            Self::AuthenticationResponse(AuthenticationResponse(body)) => {
                write_message(buf, FrontendTag::AuthenticationResponse.byte(), |buf| {
                    buf.put_slice(body);
                    Ok(())
                })
            }
            Self::Query(sql) => write_query(buf, sql),
            Self::Sync => write_sync(buf),
            Self::Terminate => write_empty(buf, FrontendTag::Terminate),
        }
    }
}

impl TryFrom<Frame> for FrontendMessage {
    type Error = DecodeError;

    fn try_from(frame: Frame) -> Result<Self, DecodeError> {
        Self::decode(&frame)
    }
}

fn decode_formats(r: &mut BytesReader<'_>) -> Result<Vec<i16>, DecodeError> {
    let n = r.count16(2, "format codes")?;
    (0..n).map(|_| r.i16()).collect()
}

fn decode_values(
    r: &mut BytesReader<'_>,
    what: &'static str,
) -> Result<Vec<Option<Bytes>>, DecodeError> {
    let n = r.count16(4, what)?;
    (0..n).map(|_| r.nullable_shared(what)).collect()
}

fn decode_bind(r: &mut BytesReader<'_>) -> Result<FrontendMessage, DecodeError> {
    Ok(FrontendMessage::Bind {
        portal: r.string()?,
        statement: r.string()?,
        param_formats: decode_formats(r)?,
        params: decode_values(r, "parameter values")?,
        result_formats: decode_formats(r)?,
    })
}

fn decode_function_call(r: &mut BytesReader<'_>) -> Result<FrontendMessage, DecodeError> {
    Ok(FrontendMessage::FunctionCall {
        oid: r.u32()?,
        arg_formats: decode_formats(r)?,
        args: decode_values(r, "function arguments")?,
        result_format: r.i16()?,
    })
}

fn decode_parse(r: &mut BytesReader<'_>) -> Result<FrontendMessage, DecodeError> {
    let name = r.string()?;
    let query = r.string()?;
    let n = r.count16(4, "parameter types")?;
    let param_types = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
    Ok(FrontendMessage::Parse {
        name,
        query,
        param_types,
    })
}

fn write_empty(buf: &mut BytesMut, tag: FrontendTag) -> Result<(), EncodeError> {
    write_message(buf, tag.byte(), |_| Ok(()))
}

fn write_string(buf: &mut BytesMut, tag: FrontendTag, s: &str) -> Result<(), EncodeError> {
    write_message(buf, tag.byte(), |buf| put_cstr(buf, s))
}

/// Appends a Bind. `params` yields each value, `None` for NULL.
#[inline]
pub fn write_bind<'v>(
    buf: &mut BytesMut,
    portal: &str,
    statement: &str,
    param_formats: &[i16],
    params: impl IntoIterator<Item = Option<&'v [u8]>>,
    result_formats: &[i16],
) -> Result<(), EncodeError> {
    write_message(buf, FrontendTag::Bind.byte(), |buf| {
        put_cstr(buf, portal)?;
        put_cstr(buf, statement)?;
        put_i16_list(buf, param_formats, "parameter formats")?;
        put_counted16(buf, params, "parameter values", put_nullable)?;
        put_i16_list(buf, result_formats, "result formats")
    })
}

/// Appends an Execute.
#[inline]
pub fn write_execute(buf: &mut BytesMut, portal: &str, max_rows: i32) -> Result<(), EncodeError> {
    write_message(buf, FrontendTag::Execute.byte(), |buf| {
        put_cstr(buf, portal)?;
        buf.put_i32(max_rows);
        Ok(())
    })
}

/// Appends a Sync.
#[inline]
pub fn write_sync(buf: &mut BytesMut) -> Result<(), EncodeError> {
    write_empty(buf, FrontendTag::Sync)
}

/// Appends a Parse.
pub fn write_parse(
    buf: &mut BytesMut,
    name: &str,
    query: &str,
    param_types: &[u32],
) -> Result<(), EncodeError> {
    write_message(buf, FrontendTag::Parse.byte(), |buf| {
        put_cstr(buf, name)?;
        put_cstr(buf, query)?;
        put_counted16(buf, param_types, "parameter types", |buf, oid| {
            buf.put_u32(*oid);
            Ok(())
        })
    })
}

/// Appends a Describe.
pub fn write_describe(buf: &mut BytesMut, target: Target, name: &str) -> Result<(), EncodeError> {
    write_message(buf, FrontendTag::Describe.byte(), |buf| {
        buf.put_u8(target.byte());
        put_cstr(buf, name)
    })
}

/// Appends a Close.
pub fn write_close(buf: &mut BytesMut, target: Target, name: &str) -> Result<(), EncodeError> {
    write_message(buf, FrontendTag::Close.byte(), |buf| {
        buf.put_u8(target.byte());
        put_cstr(buf, name)
    })
}

/// Appends a simple Query.
pub fn write_query(buf: &mut BytesMut, sql: &str) -> Result<(), EncodeError> {
    write_string(buf, FrontendTag::Query, sql)
}

/// Appends a CopyData.
pub fn write_copy_data(buf: &mut BytesMut, data: &[u8]) -> Result<(), EncodeError> {
    write_message(buf, FrontendTag::CopyData.byte(), |buf| {
        buf.put_slice(data);
        Ok(())
    })
}

/// Appends a FunctionCall.
pub fn write_function_call(
    buf: &mut BytesMut,
    oid: u32,
    arg_formats: &[i16],
    args: &[Option<Bytes>],
    result_format: i16,
) -> Result<(), EncodeError> {
    write_message(buf, FrontendTag::FunctionCall.byte(), |buf| {
        buf.put_u32(oid);
        put_i16_list(buf, arg_formats, "argument formats")?;
        put_counted16(
            buf,
            args.iter().map(Option::as_deref),
            "arguments",
            put_nullable,
        )?;
        buf.put_i16(result_format);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frontend_tag_maps_back_from_its_byte() {
        for byte in 0..=u8::MAX {
            if let Some(tag) = FrontendTag::from_byte(byte) {
                assert_eq!(tag.byte(), byte);
            }
        }
    }

    #[test]
    fn write_bind_matches_the_documented_layout() {
        let mut buf = BytesMut::new();
        write_bind(
            &mut buf,
            "",
            "s",
            &[1],
            [Some(&b"\0\0\0\x2a"[..]), None],
            &[],
        )
        .unwrap();
        assert_eq!(
            &buf[..],
            b"B\0\0\0\x1b\0s\0\0\x01\0\x01\0\x02\0\0\0\x04\0\0\0\x2a\xff\xff\xff\xff\0\0"
        );
    }
}
