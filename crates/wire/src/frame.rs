//! Framing for proxies: split tagged messages (`tag`, `i32` length, body) off a byte stream
//! without decoding their bodies.
//!
//! Two shapes:
//! - [`FrameDecoder::decode`] splits owned [`Frame`]s off a `BytesMut` (zero-copy: the body
//!   is a slice of the read buffer);
//! - [`RawFrames`] walks a borrowed `&[u8]` and yields [`RawFrame`] views, for relays that
//!   peek at a few tags and then forward whole runs of bytes untouched
//!   (`buf.split_to(frames.consumed())`).
//!
//! Both check the declared length against the limit, in `u32`, before anything is reserved
//! or allocated for it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::limits::frontend_message_limit;

/// Tag byte plus the 4-byte length.
pub const HEADER_LEN: usize = 5;

/// One tagged message with its body undecoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The message type byte.
    pub tag: u8,
    /// The body (after the length field).
    pub body: Bytes,
}

impl Frame {
    /// A frame from parts.
    pub fn new(tag: u8, body: impl Into<Bytes>) -> Self {
        Self {
            tag,
            body: body.into(),
        }
    }

    /// Length on the wire, header included.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Appends the exact wire bytes of this frame: forwarding a decoded frame reproduces
    /// the original bytes. Fails only for a hand-built body too long for the length field.
    pub fn encode_into(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let len = i32::try_from(self.body.len() + 4).map_err(|_| EncodeError::TooLong)?;
        buf.reserve(self.wire_len());
        buf.put_u8(self.tag);
        buf.put_i32(len);
        buf.put_slice(&self.body);
        Ok(())
    }
}

/// Which limit applies to a frame's declared length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    /// The same for every tag.
    Uniform,
    /// PostgreSQL's per-tag frontend limits, capped by `max_len`.
    Frontend,
}

/// Splits frames off a read buffer, refusing declared lengths below 4 or above the limit.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    max_len: usize,
    limit: Limit,
}

impl FrameDecoder {
    /// A decoder refusing frames whose declared length (which counts the length word but not
    /// the tag) exceeds `max_len`.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            limit: Limit::Uniform,
        }
    }

    /// A decoder for messages from a client: each tag gets the limit PostgreSQL applies to it
    /// ([`frontend_message_limit`]), never more than `max_len`.
    pub fn frontend(max_len: usize) -> Self {
        Self {
            max_len,
            limit: Limit::Frontend,
        }
    }

    /// The largest declared length accepted for `tag`.
    #[inline]
    pub fn limit_for(&self, tag: u8) -> usize {
        match self.limit {
            Limit::Uniform => self.max_len,
            Limit::Frontend => self.max_len.min(frontend_message_limit(tag)),
        }
    }

    /// Reads the header at the start of `buf`: `Ok(None)` if fewer than 5 bytes are there,
    /// else the tag and the frame's total length on the wire, once `4 <= length <= limit`.
    #[inline]
    pub fn peek_header(&self, buf: &[u8]) -> Result<Option<(u8, usize)>, DecodeError> {
        let Some(&[tag, a, b, c, d]) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]);
        if len < 4 {
            return Err(DecodeError::LengthTooSmall { len });
        }
        let max = self.limit_for(tag);
        // Compare in u64 so that neither a 32-bit usize nor a huge limit can wrap.
        if u64::from(len) > max as u64 {
            return Err(DecodeError::TooLong { len, max });
        }
        Ok(Some((tag, (len as usize).saturating_add(1))))
    }

    /// The next complete frame, or `None` when more bytes are needed. Nothing is reserved for
    /// a declared length: the caller's reads grow the buffer as bytes actually arrive, so a
    /// peer cannot make us allocate by merely announcing a large message. Use
    /// [`bytes_needed`](Self::bytes_needed) to size the next read.
    #[inline]
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some((tag, total)) = self.peek_header(buf)? else {
            return Ok(None);
        };
        if buf.len() < total {
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(HEADER_LEN);
        Ok(Some(Frame {
            tag,
            body: frame.freeze(),
        }))
    }

    /// How many more bytes `buf` needs before [`decode`](Self::decode) can return a frame:
    /// 0 if one is complete. The declared length is checked first, so the answer is bounded
    /// by the limit and safe to `reserve`.
    pub fn bytes_needed(&self, buf: &[u8]) -> Result<usize, DecodeError> {
        Ok(match self.peek_header(buf)? {
            None => HEADER_LEN - buf.len(),
            Some((_, total)) => total.saturating_sub(buf.len()),
        })
    }

    /// The complete frames at the start of `buf`, borrowed, with this decoder's limits.
    pub fn raw_frames<'a>(&self, buf: &'a [u8]) -> RawFrames<'a> {
        RawFrames {
            buf,
            pos: 0,
            decoder: *self,
            failed: false,
        }
    }
}

/// A borrowed view of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The message type byte.
    pub tag: u8,
    /// The body.
    pub body: &'a [u8],
}

/// Iterates over the complete frames at the start of a buffer; stops at the first incomplete
/// one, and after yielding an error. [`consumed`](Self::consumed) tells how many bytes the
/// yielded frames cover, so a relay can forward exactly those.
#[derive(Clone, Debug)]
pub struct RawFrames<'a> {
    buf: &'a [u8],
    pos: usize,
    decoder: FrameDecoder,
    failed: bool,
}

impl<'a> RawFrames<'a> {
    /// Frames in `buf`, each with a declared length of at most `max_len`.
    pub fn new(buf: &'a [u8], max_len: usize) -> Self {
        FrameDecoder::new(max_len).raw_frames(buf)
    }

    /// Bytes covered by the frames yielded so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// The bytes after the last yielded frame.
    pub fn remainder(&self) -> &'a [u8] {
        let buf: &'a [u8] = self.buf;
        &buf[self.pos..]
    }
}

impl<'a> Iterator for RawFrames<'a> {
    type Item = Result<RawFrame<'a>, DecodeError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.remainder();
        let (tag, total) = match self.decoder.peek_header(rest) {
            Ok(Some(header)) => header,
            Ok(None) => return None,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let body = rest.get(HEADER_LEN..total)?;
        self.pos += total;
        Some(Ok(RawFrame { tag, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_without_copying_and_incomplete_ones_wait() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IC\0\0\0\x0dSELECT"[..]);
        let start = buf.as_ptr();
        let decoder = FrameDecoder::new(100);
        let frame = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame, Frame::new(b'Z', &b"I"[..]));
        assert_eq!(
            frame.body.as_ptr(),
            start.wrapping_add(5),
            "body was copied"
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert_eq!(decoder.bytes_needed(&buf), Ok(3));
        buf.extend_from_slice(b" 1\0");
        let frame = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&frame.body[..], b"SELECT 1\0");
        assert!(buf.is_empty());
        assert_eq!(decoder.bytes_needed(&buf), Ok(5));
    }

    #[test]
    fn lengths_below_four_are_refused() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x03"[..]);
        assert_eq!(
            FrameDecoder::new(100).decode(&mut buf),
            Err(DecodeError::LengthTooSmall { len: 3 })
        );
    }

    #[test]
    fn lengths_over_the_limit_are_refused_without_growing_the_buffer() {
        let mut buf = BytesMut::with_capacity(8);
        buf.extend_from_slice(b"D\xff\xff\xff\xff");
        let capacity = buf.capacity();
        assert_eq!(
            FrameDecoder::new(1 << 20).decode(&mut buf),
            Err(DecodeError::TooLong {
                len: u32::MAX,
                max: 1 << 20
            })
        );
        assert_eq!(buf.capacity(), capacity);
        assert_eq!(buf.len(), 5, "nothing was consumed");
    }

    #[test]
    fn a_length_exactly_at_the_limit_is_accepted() {
        let mut buf = BytesMut::from(&b"d\0\0\0\x08abcd"[..]);
        let frame = FrameDecoder::new(8).decode(&mut buf).unwrap().unwrap();
        assert_eq!(&frame.body[..], b"abcd");
        let mut buf = BytesMut::from(&b"d\0\0\0\x09abcde"[..]);
        assert!(FrameDecoder::new(8).decode(&mut buf).is_err());
    }

    #[test]
    fn frontend_limits_depend_on_the_message_type() {
        let decoder = FrameDecoder::frontend(usize::MAX);
        // A 20000-byte Sync is refused at once; a 20000-byte Query waits for its body.
        assert!(matches!(
            decoder.peek_header(b"S\0\0\x4e\x20"),
            Err(DecodeError::TooLong { max: 10_000, .. })
        ));
        assert_eq!(
            decoder.peek_header(b"Q\0\0\x4e\x20"),
            Ok(Some((b'Q', 20_001)))
        );
        assert_eq!(FrameDecoder::frontend(5_000).limit_for(b'Q'), 5_000);
    }

    #[test]
    fn raw_frames_stop_at_the_first_incomplete_frame() {
        let buf = b"1\0\0\0\x042\0\0\0\x04C\0\0\0\x0bSEL";
        let mut frames = RawFrames::new(buf, 100);
        assert_eq!(frames.next().unwrap().unwrap().tag, b'1');
        assert_eq!(frames.next().unwrap().unwrap().tag, b'2');
        assert!(frames.next().is_none());
        assert_eq!(frames.consumed(), 10);
        assert_eq!(frames.remainder(), b"C\0\0\0\x0bSEL");
    }

    #[test]
    fn raw_frames_end_after_an_error() {
        let buf = b"1\0\0\0\x04Z\0\0\0\x02";
        let frames: Vec<_> = RawFrames::new(buf, 100).collect();
        assert_eq!(
            frames,
            vec![
                Ok(RawFrame {
                    tag: b'1',
                    body: b""
                }),
                Err(DecodeError::LengthTooSmall { len: 2 })
            ]
        );
        assert_eq!(RawFrames::new(buf, 100).flatten().count(), 1);
    }

    #[test]
    fn encode_into_reproduces_the_original_bytes() {
        let original = b"C\0\0\0\x0dSELECT 1\0";
        let mut buf = BytesMut::from(&original[..]);
        let frame = FrameDecoder::new(100).decode(&mut buf).unwrap().unwrap();
        let mut out = BytesMut::new();
        frame.encode_into(&mut out).unwrap();
        assert_eq!(&out[..], original);
        assert_eq!(frame.wire_len(), original.len());
    }
}
