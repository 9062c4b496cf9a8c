//! ErrorResponse and NoticeResponse bodies: every field of the protocol's "Error and Notice
//! Message Fields", unknown ones preserved, a builder, and typed severity and SQLSTATE.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::reader::Reader;
use crate::sqlstate::SqlState;
use crate::writer::{put_cstr, write_message};

/// Message severity, as in the `S` (possibly localized) and `V` (never localized) fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// `ERROR`: the command failed.
    Error,
    /// `FATAL`: the session ends.
    Fatal,
    /// `PANIC`: every session ends.
    Panic,
    /// `WARNING`
    Warning,
    /// `NOTICE`
    Notice,
    /// `DEBUG`
    Debug,
    /// `INFO`
    Info,
    /// `LOG`
    Log,
}

impl Severity {
    /// The non-localized name, as sent in `V` (and in `S` by an English server).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
            Self::Panic => "PANIC",
            Self::Warning => "WARNING",
            Self::Notice => "NOTICE",
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Log => "LOG",
        }
    }

    /// Parses a non-localized severity name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ERROR" => Self::Error,
            "FATAL" => Self::Fatal,
            "PANIC" => Self::Panic,
            "WARNING" => Self::Warning,
            "NOTICE" => Self::Notice,
            "DEBUG" => Self::Debug,
            "INFO" => Self::Info,
            "LOG" => Self::Log,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! error_fields {
    ($($(#[$doc:meta])* $name:ident = $code:literal,)*) => {
        /// A field type of an ErrorResponse or NoticeResponse.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorField {
            $($(#[$doc])* $name,)*
            /// A field type this crate does not know; kept so that it survives a round trip.
            /// Never holds a code listed above (decoding maps those to their variant).
            Other(u8),
        }

        impl ErrorField {
            /// The field type byte.
            pub fn code(self) -> u8 {
                match self {
                    $(Self::$name => $code,)*
                    Self::Other(code) => code,
                }
            }

            /// The field for a type byte.
            pub fn from_code(code: u8) -> Self {
                match code {
                    $($code => Self::$name,)*
                    other => Self::Other(other),
                }
            }
        }
    };
}

error_fields! {
    /// `S`: severity, possibly localized.
    Severity = b'S',
    /// `V`: severity, never localized (PostgreSQL 9.6+).
    SeverityNonLocalized = b'V',
    /// `C`: the SQLSTATE code.
    Code = b'C',
    /// `M`: the primary message.
    Message = b'M',
    /// `D`: detail.
    Detail = b'D',
    /// `H`: hint.
    Hint = b'H',
    /// `P`: cursor position in the query (1-based, in characters).
    Position = b'P',
    /// `p`: position in an internally generated query.
    InternalPosition = b'p',
    /// `q`: the internally generated query.
    InternalQuery = b'q',
    /// `W`: context (a call stack traceback).
    Where = b'W',
    /// `s`: schema name.
    Schema = b's',
    /// `t`: table name.
    Table = b't',
    /// `c`: column name.
    Column = b'c',
    /// `d`: data type name.
    DataType = b'd',
    /// `n`: constraint name.
    Constraint = b'n',
    /// `F`: source file.
    File = b'F',
    /// `L`: source line.
    Line = b'L',
    /// `R`: source routine.
    Routine = b'R',
}

/// The fields of an ErrorResponse or NoticeResponse, in wire order, unknown ones kept.
///
/// ```
/// use pgbastion_wire::{ErrorResponse, Severity, SqlState};
/// let e = ErrorResponse::new(Severity::Fatal, SqlState::INVALID_PASSWORD, "password authentication failed for user \"x\"")
///     .hint("check the password");
/// assert_eq!(e.sqlstate(), Some(SqlState::INVALID_PASSWORD));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ErrorResponse {
    fields: Vec<(ErrorField, String)>,
}

impl ErrorResponse {
    /// An error or notice with severity (`S` and `V`), SQLSTATE (`C`) and message (`M`).
    pub fn new(severity: Severity, code: SqlState, message: impl Into<String>) -> Self {
        Self {
            fields: vec![
                (ErrorField::Severity, severity.as_str().to_owned()),
                (
                    ErrorField::SeverityNonLocalized,
                    severity.as_str().to_owned(),
                ),
                (ErrorField::Code, code.as_str().to_owned()),
                (ErrorField::Message, message.into()),
            ],
        }
    }

    /// Builds from fields, in order.
    pub fn from_fields(fields: Vec<(ErrorField, String)>) -> Self {
        Self { fields }
    }

    /// Sets field `field`, replacing an earlier value or appending.
    pub fn with(mut self, field: ErrorField, value: impl Into<String>) -> Self {
        self.set(field, value);
        self
    }

    /// The same response with severity FATAL (both `S` and `V`), every other field kept:
    /// how an error that ends the connection is passed on whole.
    pub fn into_fatal(self) -> Self {
        self.with_severity(Severity::Fatal)
    }

    /// The same response with `severity` (both `S` and `V`), every other field kept.
    pub fn with_severity(self, severity: Severity) -> Self {
        let text = severity.as_str();
        self.with(ErrorField::Severity, text)
            .with(ErrorField::SeverityNonLocalized, text)
    }

    /// Sets field `field` in place, replacing an earlier value or appending.
    pub fn set(&mut self, field: ErrorField, value: impl Into<String>) {
        let value = value.into();
        match self.fields.iter_mut().find(|(f, _)| *f == field) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((field, value)),
        }
    }

    /// A field's value (the first, if the peer sent it twice).
    pub fn get(&self, field: ErrorField) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.as_str())
    }

    /// All fields in wire order.
    pub fn fields(&self) -> &[(ErrorField, String)] {
        &self.fields
    }

    /// The severity, from `V`, else `S` (which may be localized and then unparseable).
    pub fn severity(&self) -> Option<Severity> {
        self.get(ErrorField::SeverityNonLocalized)
            .or_else(|| self.get(ErrorField::Severity))
            .and_then(Severity::parse)
    }

    /// The SQLSTATE (`C`), if present and well formed.
    pub fn sqlstate(&self) -> Option<SqlState> {
        self.get(ErrorField::Code).and_then(SqlState::from_code)
    }

    /// The primary message (`M`), or `""`.
    pub fn message(&self) -> &str {
        self.get(ErrorField::Message).unwrap_or_default()
    }

    /// Decodes a body: `(type byte, string)*` then a terminating NUL, nothing after it.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let mut fields = Vec::new();
        loop {
            match r.u8()? {
                0 => break,
                code => fields.push((ErrorField::from_code(code), r.string()?)),
            }
        }
        r.finish()?;
        Ok(Self { fields })
    }

    /// Appends the body (without tag and length).
    pub fn encode_body(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        for (field, value) in &self.fields {
            match field.code() {
                0 => {
                    return Err(EncodeError::InvalidValue {
                        what: "error field type",
                    })
                }
                code => buf.put_u8(code),
            }
            put_cstr(buf, value)?;
        }
        buf.put_u8(0);
        Ok(())
    }

    /// Appends this as an ErrorResponse (`E`) message.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        write_message(buf, b'E', |buf| self.encode_body(buf))
    }

    /// Appends this as a NoticeResponse (`N`) message.
    pub fn encode_notice(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        write_message(buf, b'N', |buf| self.encode_body(buf))
    }
}

macro_rules! builders {
    ($($(#[$doc:meta])* $method:ident => $field:ident,)*) => {
        impl ErrorResponse {
            $($(#[$doc])* pub fn $method(self, value: impl Into<String>) -> Self {
                self.with(ErrorField::$field, value)
            })*
        }
    };
}

builders! {
    /// Sets the detail (`D`).
    detail => Detail,
    /// Sets the hint (`H`).
    hint => Hint,
    /// Sets the cursor position (`P`), 1-based, in characters.
    position => Position,
    /// Sets the internal position (`p`).
    internal_position => InternalPosition,
    /// Sets the internal query (`q`).
    internal_query => InternalQuery,
    /// Sets the context (`W`).
    context => Where,
    /// Sets the schema name (`s`).
    schema => Schema,
    /// Sets the table name (`t`).
    table => Table,
    /// Sets the column name (`c`).
    column => Column,
    /// Sets the data type name (`d`).
    data_type => DataType,
    /// Sets the constraint name (`n`).
    constraint => Constraint,
    /// Sets the source file (`F`).
    file => File,
    /// Sets the source line (`L`).
    line => Line,
    /// Sets the source routine (`R`).
    routine => Routine,
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = self
            .get(ErrorField::SeverityNonLocalized)
            .or_else(|| self.get(ErrorField::Severity))
            .unwrap_or("ERROR");
        let code = self.get(ErrorField::Code).unwrap_or("?????");
        write!(f, "{severity} {code}: {}", self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_fatal_changes_only_the_severity() {
        let error = ErrorResponse::new(Severity::Error, SqlState::INVALID_CATALOG_NAME, "no db")
            .with(ErrorField::Hint, "create it");
        let fatal = error.clone().into_fatal();
        assert_eq!(fatal.severity(), Some(Severity::Fatal));
        assert_eq!(fatal.get(ErrorField::SeverityNonLocalized), Some("FATAL"));
        assert_eq!(fatal.get(ErrorField::Hint), Some("create it"));
        assert_eq!(fatal.fields().len(), error.fields().len());
    }

    #[test]
    fn field_codes_map_both_ways_and_unknown_codes_are_kept() {
        for code in 0..=u8::MAX {
            assert_eq!(ErrorField::from_code(code).code(), code);
        }
        assert_eq!(ErrorField::from_code(b'C'), ErrorField::Code);
        assert_eq!(ErrorField::from_code(b'Z'), ErrorField::Other(b'Z'));
    }

    #[test]
    fn the_builder_sets_severity_code_message_and_replaces_repeated_fields() {
        let e = ErrorResponse::new(Severity::Fatal, SqlState::INVALID_PASSWORD, "no")
            .hint("one")
            .hint("two");
        assert_eq!(e.severity(), Some(Severity::Fatal));
        assert_eq!(e.get(ErrorField::Severity), Some("FATAL"));
        assert_eq!(e.get(ErrorField::Hint), Some("two"));
        assert_eq!(e.fields().len(), 5);
        assert_eq!(e.to_string(), "FATAL 28P01: no");
    }

    #[test]
    fn a_localized_severity_without_v_is_not_guessed() {
        let e = ErrorResponse::from_fields(vec![(ErrorField::Severity, "FEHLER".into())]);
        assert_eq!(e.severity(), None);
        assert_eq!(e.message(), "");
    }

    #[test]
    fn decoding_requires_the_terminator_and_nothing_after_it() {
        assert_eq!(
            ErrorResponse::decode(b"Mx\0"),
            Err(DecodeError::Truncated { needed: 1 })
        );
        assert_eq!(ErrorResponse::decode(b"Mx"), Err(DecodeError::MissingNul));
        assert_eq!(
            ErrorResponse::decode(b"\0\0"),
            Err(DecodeError::TrailingBytes { n: 1 })
        );
        assert_eq!(ErrorResponse::decode(b"\0"), Ok(ErrorResponse::default()));
    }

    #[test]
    fn encoding_as_error_or_notice_differs_only_in_the_tag() {
        let e = ErrorResponse::new(Severity::Notice, SqlState::SUCCESSFUL_COMPLETION, "hi");
        let (mut error, mut notice) = (BytesMut::new(), BytesMut::new());
        e.encode(&mut error).unwrap();
        e.encode_notice(&mut notice).unwrap();
        assert_eq!((error[0], notice[0]), (b'E', b'N'));
        assert_eq!(error[1..], notice[1..]);
    }
}
