//! Decode and encode errors.

/// Why bytes from a peer are not a valid message. Decoding never panics; every malformed
/// input ends here. A gateway answers all of them with SQLSTATE 08P01 (protocol violation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field it declares.
    #[error("message truncated: needed {needed} more bytes")]
    Truncated {
        /// Bytes missing.
        needed: usize,
    },
    /// A length field below its minimum (4 for tagged messages, 8 for startup packets).
    #[error("invalid message length {len}")]
    LengthTooSmall {
        /// The declared length.
        len: u32,
    },
    /// A declared length above the limit in force.
    #[error("message length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// The declared length.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// A string without its NUL terminator.
    #[error("string is missing its NUL terminator")]
    MissingNul,
    /// A string that is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// Bytes left over after the last field.
    #[error("{n} unexpected bytes after the end of the message")]
    TrailingBytes {
        /// How many.
        n: usize,
    },
    /// A message type this side of the protocol does not know.
    #[error("unknown message type {tag:#04x}")]
    UnknownTag {
        /// The tag byte.
        tag: u8,
    },
    /// A count or length field that is negative or larger than the message can hold.
    #[error("invalid count or length in {what}")]
    InvalidCount {
        /// Which field.
        what: &'static str,
    },
    /// A field with a value outside its domain.
    #[error("invalid value for {what}")]
    InvalidValue {
        /// Which field.
        what: &'static str,
    },
}

/// Why a message could not be encoded. The output buffer is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string field holds a NUL byte, which would end it early and corrupt the frame.
    #[error("string field contains a NUL byte")]
    InteriorNul,
    /// More items than the field's count can express (`i16` for most lists).
    #[error("too many items for {what}")]
    TooMany {
        /// Which field.
        what: &'static str,
    },
    /// A field whose value the protocol cannot carry (an empty startup parameter name, an
    /// error field code of 0, a cancel key outside 4..=256 bytes, ...).
    #[error("invalid value for {what}")]
    InvalidValue {
        /// Which field.
        what: &'static str,
    },
    /// The encoded message would not fit the protocol's 32-bit signed length.
    #[error("message too long to encode")]
    TooLong,
}
