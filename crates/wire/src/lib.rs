//! The PostgreSQL frontend/backend protocol, versions 3.0 and 3.2, both directions, with no
//! I/O.
//!
//! # Layers
//!
//! - **Frames** ([`frame`]): a tagged message is a type byte, a 4-byte length and a body.
//!   [`FrameDecoder`] splits owned [`Frame`]s off a `BytesMut` without copying;
//!   [`RawFrames`] walks a borrowed buffer for relays that only peek at tags and forward
//!   whole runs of bytes. Both check the declared length against a limit ([`limits`])
//!   before anything is buffered for it; [`FrameDecoder::frontend`] applies PostgreSQL's
//!   per-message-type limits. [`Frame::encode_into`] reproduces the original bytes.
//! - **Typed messages**, decoded on demand from a frame: [`FrontendMessage`] (what clients
//!   send) and [`BackendMessage`] (what servers send). Byte-string fields (DataRow columns,
//!   CopyData, Bind parameters) stay zero-copy slices of the frame; [`DataRow`] is read
//!   lazily, without a per-row allocation. A client's `p` message is kept raw
//!   ([`AuthenticationResponse`]) because only the authentication phase says whether it is
//!   a [`PasswordMessage`], [`SaslInitialResponse`], [`SaslResponse`] or GSSResponse.
//! - **Startup packets** ([`StartupPacket`]): the untagged StartupMessage, SSLRequest,
//!   GSSENCRequest and CancelRequest (with protocol 3.2's variable-length [`CancelKey`]s),
//!   framed by [`StartupPacket::split`] with PostgreSQL's 10000-byte limit.
//! - **Relays** ([`scanner`]): [`FrameScanner`] follows message boundaries in a forwarded
//!   stream, either direction, without buffering it.
//! - **Errors to clients**: [`ErrorResponse`] with every field, [`Severity`] and [`SqlState`].
//!
//! Decoding never panics: malformed input yields a [`DecodeError`]. Encoding back-patches
//! lengths, refuses strings with NUL bytes and other unencodable values ([`EncodeError`]),
//! and leaves the buffer untouched when it fails. The `write_*` functions
//! ([`frontend::write_bind`], [`data_row::write_data_row`], ...) encode hot-path messages
//! from borrowed values.
//!
//! ```
//! use bytes::BytesMut;
//! use pgbastion_wire::{BackendMessage, FrameDecoder, TransactionStatus};
//!
//! let mut buf = BytesMut::new();
//! BackendMessage::ReadyForQuery(TransactionStatus::Idle).encode(&mut buf).unwrap();
//! assert_eq!(&buf[..], b"Z\0\0\0\x05I");
//! let frame = FrameDecoder::new(1024).decode(&mut buf).unwrap().unwrap();
//! assert_eq!(
//!     BackendMessage::decode(&frame).unwrap(),
//!     BackendMessage::ReadyForQuery(TransactionStatus::Idle)
//! );
//! ```

pub mod auth_response;
pub mod authentication;
pub mod backend;
pub mod data_row;
pub mod error;
pub mod error_response;
pub mod frame;
pub mod frontend;
pub mod limits;
pub mod reader;
pub mod scanner;
pub mod sqlstate;
pub mod startup;
pub mod writer;

pub use auth_response::{
    AuthenticationResponse, PasswordMessage, SaslInitialResponse, SaslResponse,
};
pub use authentication::Authentication;
pub use backend::{BackendMessage, BackendTag, CopyResponse, FieldDescription, TransactionStatus};
pub use data_row::{DataRow, DataRowValues};
pub use error::{DecodeError, EncodeError};
pub use error_response::{ErrorField, ErrorResponse, Severity};
pub use frame::{Frame, FrameDecoder, RawFrame, RawFrames};
pub use frontend::{FrontendMessage, FrontendTag, Target};
pub use scanner::{BadLength, BodyPiece, Direction, FrameScanner};
pub use sqlstate::SqlState;
pub use startup::{CancelKey, ProtocolVersion, StartupMessage, StartupPacket};
