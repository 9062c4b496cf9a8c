//! Messages a server sends.

use bytes::{BufMut, Bytes, BytesMut};

use crate::authentication::Authentication;
use crate::data_row::DataRow;
use crate::error::{DecodeError, EncodeError};
use crate::error_response::ErrorResponse;
use crate::frame::Frame;
use crate::reader::BytesReader;
use crate::startup::CancelKey;
use crate::writer::{put_counted16, put_cstr, put_i16_list, put_nullable, write_message};

/// Backend message type bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BackendTag {
    /// `R`
    Authentication = b'R',
    /// `K`
    BackendKeyData = b'K',
    /// `2`
    BindComplete = b'2',
    /// `3`
    CloseComplete = b'3',
    /// `C`
    CommandComplete = b'C',
    /// `d`
    CopyData = b'd',
    /// `c`
    CopyDone = b'c',
    /// `G`
    CopyInResponse = b'G',
    /// `H`
    CopyOutResponse = b'H',
    /// `W`
    CopyBothResponse = b'W',
    /// `D`
    DataRow = b'D',
    /// `I`
    EmptyQueryResponse = b'I',
    /// `E`
    ErrorResponse = b'E',
    /// `V`
    FunctionCallResponse = b'V',
    /// `v`
    NegotiateProtocolVersion = b'v',
    /// `n`
    NoData = b'n',
    /// `N`
    NoticeResponse = b'N',
    /// `A`
    NotificationResponse = b'A',
    /// `t`
    ParameterDescription = b't',
    /// `S`
    ParameterStatus = b'S',
    /// `1`
    ParseComplete = b'1',
    /// `s`
    PortalSuspended = b's',
    /// `Z`
    ReadyForQuery = b'Z',
    /// `T`
    RowDescription = b'T',
}

impl BackendTag {
    /// The tag for a byte, if it is a backend message type.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            b'R' => Self::Authentication,
            b'K' => Self::BackendKeyData,
            b'2' => Self::BindComplete,
            b'3' => Self::CloseComplete,
            b'C' => Self::CommandComplete,
            b'd' => Self::CopyData,
            b'c' => Self::CopyDone,
            b'G' => Self::CopyInResponse,
            b'H' => Self::CopyOutResponse,
            b'W' => Self::CopyBothResponse,
            b'D' => Self::DataRow,
            b'I' => Self::EmptyQueryResponse,
            b'E' => Self::ErrorResponse,
            b'V' => Self::FunctionCallResponse,
            b'v' => Self::NegotiateProtocolVersion,
            b'n' => Self::NoData,
            b'N' => Self::NoticeResponse,
            b'A' => Self::NotificationResponse,
            b't' => Self::ParameterDescription,
            b'S' => Self::ParameterStatus,
            b'1' => Self::ParseComplete,
            b's' => Self::PortalSuspended,
            b'Z' => Self::ReadyForQuery,
            b'T' => Self::RowDescription,
            _ => return None,
        })
    }

    /// The wire byte.
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// The transaction status in ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (queries are refused until it ends).
    Failed,
}

impl TransactionStatus {
    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            Self::Idle => b'I',
            Self::InTransaction => b'T',
            Self::Failed => b'E',
        }
    }

    /// Parses the wire byte.
    pub fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            b'I' => Ok(Self::Idle),
            b'T' => Ok(Self::InTransaction),
            b'E' => Ok(Self::Failed),
            _ => Err(DecodeError::InvalidValue {
                what: "transaction status",
            }),
        }
    }
}

/// One column of a RowDescription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDescription {
    /// Column name.
    pub name: String,
    /// Source table OID, or 0.
    pub table_oid: u32,
    /// Source column number, or 0.
    pub column_id: i16,
    /// Data type OID.
    pub type_oid: u32,
    /// Type size (negative: variable width).
    pub type_size: i16,
    /// Type modifier.
    pub type_modifier: i32,
    /// Format code: 0 text, 1 binary.
    pub format: i16,
}

/// The fixed-width part of a field description, after its name.
const FIELD_FIXED_LEN: usize = 18;

/// The body of CopyInResponse, CopyOutResponse and CopyBothResponse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyResponse {
    /// Overall format: 0 text, 1 binary.
    pub format: i8,
    /// Per-column format codes.
    pub column_formats: Vec<i16>,
}

/// A backend message, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendMessage {
    /// `R`: an authentication request or result.
    Authentication(Authentication),
    /// `K`: the key a client needs to cancel (4 bytes in 3.0, 4 to 256 in 3.2).
    BackendKeyData(CancelKey),
    /// `2`
    BindComplete,
    /// `3`
    CloseComplete,
    /// `C`: the command tag, e.g. `SELECT 3`.
    CommandComplete {
        /// The tag.
        tag: String,
    },
    /// `d`
    CopyData(Bytes),
    /// `c`
    CopyDone,
    /// `G`
    CopyInResponse(CopyResponse),
    /// `H`
    CopyOutResponse(CopyResponse),
    /// `W`
    CopyBothResponse(CopyResponse),
    /// `D`: one row, read lazily.
    DataRow(DataRow),
    /// `I`
    EmptyQueryResponse,
    /// `E`
    ErrorResponse(ErrorResponse),
    /// `V`: the result, `None` for NULL.
    FunctionCallResponse(Option<Bytes>),
    /// `v`: the newest minor version the server speaks and the `_pq_` options it did not
    /// recognise.
    NegotiateProtocolVersion {
        /// Newest supported minor version.
        newest_minor: u32,
        /// Unrecognised protocol options, full names (`_pq_.name`).
        unrecognized_options: Vec<String>,
    },
    /// `n`
    NoData,
    /// `N`
    NoticeResponse(ErrorResponse),
    /// `A`: a NOTIFY delivered.
    NotificationResponse {
        /// The notifying backend's process id.
        process_id: u32,
        /// Channel.
        channel: String,
        /// Payload.
        payload: String,
    },
    /// `t`
    ParameterDescription {
        /// Parameter type OIDs.
        types: Vec<u32>,
    },
    /// `S`
    ParameterStatus {
        /// Parameter name.
        name: String,
        /// Value.
        value: String,
    },
    /// `1`
    ParseComplete,
    /// `s`
    PortalSuspended,
    /// `Z`
    ReadyForQuery(TransactionStatus),
    /// `T`
    RowDescription {
        /// The columns.
        fields: Vec<FieldDescription>,
    },
}

impl BackendMessage {
    /// Decodes a frame; the whole body must be consumed. Byte fields are zero-copy slices
    /// of the frame's body. `BackendMessage::try_from(frame)` does the same, taking the
    /// frame by value (a DataRow then keeps the body without touching its reference count).
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        match known_tag(frame.tag)? {
            BackendTag::DataRow => DataRow::decode(&frame.body).map(Self::DataRow),
            tag => decode_body(tag, &frame.body),
        }
    }

    /// The message's tag.
    pub fn tag(&self) -> BackendTag {
        match self {
            Self::Authentication(_) => BackendTag::Authentication,
            Self::BackendKeyData(_) => BackendTag::BackendKeyData,
            Self::BindComplete => BackendTag::BindComplete,
            Self::CloseComplete => BackendTag::CloseComplete,
            Self::CommandComplete { .. } => BackendTag::CommandComplete,
            Self::CopyData(_) => BackendTag::CopyData,
            Self::CopyDone => BackendTag::CopyDone,
            Self::CopyInResponse(_) => BackendTag::CopyInResponse,
            Self::CopyOutResponse(_) => BackendTag::CopyOutResponse,
            Self::CopyBothResponse(_) => BackendTag::CopyBothResponse,
            Self::DataRow(_) => BackendTag::DataRow,
            Self::EmptyQueryResponse => BackendTag::EmptyQueryResponse,
            Self::ErrorResponse(_) => BackendTag::ErrorResponse,
            Self::FunctionCallResponse(_) => BackendTag::FunctionCallResponse,
            Self::NegotiateProtocolVersion { .. } => BackendTag::NegotiateProtocolVersion,
            Self::NoData => BackendTag::NoData,
            Self::NoticeResponse(_) => BackendTag::NoticeResponse,
            Self::NotificationResponse { .. } => BackendTag::NotificationResponse,
            Self::ParameterDescription { .. } => BackendTag::ParameterDescription,
            Self::ParameterStatus { .. } => BackendTag::ParameterStatus,
            Self::ParseComplete => BackendTag::ParseComplete,
            Self::PortalSuspended => BackendTag::PortalSuspended,
            Self::ReadyForQuery(_) => BackendTag::ReadyForQuery,
            Self::RowDescription { .. } => BackendTag::RowDescription,
        }
    }

    /// Appends the message to `buf`. On error `buf` is unchanged.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        write_message(buf, self.tag().byte(), |buf| self.encode_body(buf))
    }

    fn encode_body(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Self::Authentication(auth) => auth.encode_body(buf)?,
            Self::BackendKeyData(key) => key.encode(buf)?,
            Self::CommandComplete { tag } => put_cstr(buf, tag)?,
            Self::CopyData(data) => buf.put_slice(data),
            Self::CopyInResponse(c) | Self::CopyOutResponse(c) | Self::CopyBothResponse(c) => {
                buf.put_i8(c.format);
                put_i16_list(buf, &c.column_formats, "column formats")?;
            }
            Self::DataRow(row) => row.encode_body(buf),
            Self::ErrorResponse(e) | Self::NoticeResponse(e) => e.encode_body(buf)?,
            Self::FunctionCallResponse(value) => put_nullable(buf, value.as_deref())?,
            Self::NegotiateProtocolVersion {
                newest_minor,
                unrecognized_options,
            } => encode_negotiate(buf, *newest_minor, unrecognized_options)?,
            Self::NotificationResponse {
                process_id,
                channel,
                payload,
            } => {
                buf.put_u32(*process_id);
                put_cstr(buf, channel)?;
                put_cstr(buf, payload)?;
            }
            Self::ParameterDescription { types } => {
                put_counted16(buf, types, "parameter types", |buf, oid| {
                    buf.put_u32(*oid);
                    Ok(())
                })?;
            }
            Self::ParameterStatus { name, value } => {
                put_cstr(buf, name)?;
                put_cstr(buf, value)?;
            }
            Self::ReadyForQuery(status) => buf.put_u8(status.byte()),
            Self::RowDescription { fields } => {
                put_counted16(buf, fields, "row description fields", encode_field)?;
            }
            Self::BindComplete
            | Self::CloseComplete
            | Self::CopyDone
            | Self::EmptyQueryResponse
            | Self::NoData
            | Self::ParseComplete
            | Self::PortalSuspended => {}
        }
        Ok(())
    }
}

impl TryFrom<Frame> for BackendMessage {
    type Error = DecodeError;

    fn try_from(frame: Frame) -> Result<Self, DecodeError> {
        match known_tag(frame.tag)? {
            BackendTag::DataRow => DataRow::from_body(frame.body).map(Self::DataRow),
            tag => decode_body(tag, &frame.body),
        }
    }
}

fn known_tag(byte: u8) -> Result<BackendTag, DecodeError> {
    BackendTag::from_byte(byte).ok_or(DecodeError::UnknownTag { tag: byte })
}

/// Decodes a body, checking that nothing is left after the last field.
fn decode_body(tag: BackendTag, body: &Bytes) -> Result<BackendMessage, DecodeError> {
    let mut r = BytesReader::new(body);
    let message = decode_by_tag(tag, &mut r)?;
    r.finish()?;
    Ok(message)
}

fn decode_by_tag(tag: BackendTag, r: &mut BytesReader<'_>) -> Result<BackendMessage, DecodeError> {
    use BackendMessage as M;
    Ok(match tag {
        BackendTag::Authentication => M::Authentication(Authentication::decode(r)?),
        BackendTag::BackendKeyData => M::BackendKeyData(CancelKey::decode(r)?),
        BackendTag::BindComplete => M::BindComplete,
        BackendTag::CloseComplete => M::CloseComplete,
        BackendTag::CommandComplete => M::CommandComplete { tag: r.string()? },
        BackendTag::CopyData => M::CopyData(r.rest_shared()),
        BackendTag::CopyDone => M::CopyDone,
        BackendTag::CopyInResponse => M::CopyInResponse(decode_copy_response(r)?),
        BackendTag::CopyOutResponse => M::CopyOutResponse(decode_copy_response(r)?),
        BackendTag::CopyBothResponse => M::CopyBothResponse(decode_copy_response(r)?),
        BackendTag::DataRow => M::DataRow(DataRow::from_body(r.rest_shared())?),
        BackendTag::EmptyQueryResponse => M::EmptyQueryResponse,
        BackendTag::ErrorResponse => M::ErrorResponse(ErrorResponse::decode(r.rest())?),
        BackendTag::FunctionCallResponse => {
            M::FunctionCallResponse(r.nullable_shared("function result")?)
        }
        BackendTag::NegotiateProtocolVersion => decode_negotiate(r)?,
        BackendTag::NoData => M::NoData,
        BackendTag::NoticeResponse => M::NoticeResponse(ErrorResponse::decode(r.rest())?),
        BackendTag::NotificationResponse => M::NotificationResponse {
            process_id: r.u32()?,
            channel: r.string()?,
            payload: r.string()?,
        },
        BackendTag::ParameterDescription => {
            let n = r.count16(4, "parameter types")?;
            let types = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            M::ParameterDescription { types }
        }
        BackendTag::ParameterStatus => M::ParameterStatus {
            name: r.string()?,
            value: r.string()?,
        },
        BackendTag::ParseComplete => M::ParseComplete,
        BackendTag::PortalSuspended => M::PortalSuspended,
        BackendTag::ReadyForQuery => M::ReadyForQuery(TransactionStatus::from_byte(r.u8()?)?),
        BackendTag::RowDescription => M::RowDescription {
            fields: decode_fields(r)?,
        },
    })
}

fn decode_copy_response(r: &mut BytesReader<'_>) -> Result<CopyResponse, DecodeError> {
    let format = r.i8()?;
    let n = r.count16(2, "column formats")?;
    let column_formats = (0..n).map(|_| r.i16()).collect::<Result<_, _>>()?;
    Ok(CopyResponse {
        format,
        column_formats,
    })
}

fn decode_negotiate(r: &mut BytesReader<'_>) -> Result<BackendMessage, DecodeError> {
    let newest_minor = r.u32()?;
    let n = r.count32(1, "protocol options")?;
    let unrecognized_options = (0..n).map(|_| r.string()).collect::<Result<_, _>>()?;
    Ok(BackendMessage::NegotiateProtocolVersion {
        newest_minor,
        unrecognized_options,
    })
}

fn encode_negotiate(
    buf: &mut BytesMut,
    newest_minor: u32,
    options: &[String],
) -> Result<(), EncodeError> {
    buf.put_u32(newest_minor);
    let n = i32::try_from(options.len()).map_err(|_| EncodeError::TooMany {
        what: "protocol options",
    })?;
    buf.put_i32(n);
    options.iter().try_for_each(|o| put_cstr(buf, o))
}

fn decode_fields(r: &mut BytesReader<'_>) -> Result<Vec<FieldDescription>, DecodeError> {
    let n = r.count16(FIELD_FIXED_LEN + 1, "row description fields")?;
    (0..n)
        .map(|_| {
            Ok(FieldDescription {
                name: r.string()?,
                table_oid: r.u32()?,
                column_id: r.i16()?,
                type_oid: r.u32()?,
                type_size: r.i16()?,
                type_modifier: r.i32()?,
                format: r.i16()?,
            })
        })
        .collect()
}

fn encode_field(buf: &mut BytesMut, f: &FieldDescription) -> Result<(), EncodeError> {
    put_cstr(buf, &f.name)?;
    buf.put_u32(f.table_oid);
    buf.put_i16(f.column_id);
    buf.put_u32(f.type_oid);
    buf.put_i16(f.type_size);
    buf.put_i32(f.type_modifier);
    buf.put_i16(f.format);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_tag_maps_back_from_its_byte() {
        let mut known = 0;
        for byte in 0..=u8::MAX {
            if let Some(tag) = BackendTag::from_byte(byte) {
                assert_eq!(tag.byte(), byte);
                known += 1;
            }
        }
        assert_eq!(known, 24);
    }

    #[test]
    fn ready_for_query_exposes_the_transaction_status() {
        let frame = Frame::new(b'Z', Bytes::from_static(b"E"));
        assert_eq!(
            BackendMessage::decode(&frame),
            Ok(BackendMessage::ReadyForQuery(TransactionStatus::Failed))
        );
    }
}
