//! Bounded readers over one message body. They cannot read past the body and never panic.
//!
//! [`Reader`] works on any borrowed `&[u8]`. [`BytesReader`] wraps a `Bytes` body and adds
//! readers that return zero-copy `Bytes` slices of it (DataRow values, CopyData payloads,
//! Bind parameters); it dereferences to [`Reader`] for everything else.

use std::ops::{Deref, DerefMut};

use bytes::Bytes;

use crate::error::DecodeError;

/// Reads fields from a borrowed body, front to back.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let buf: &'a [u8] = self.buf;
        let rest = &buf[self.pos..];
        let out = rest.get(..n).ok_or_else(|| DecodeError::Truncated {
            needed: n - rest.len(),
        })?;
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let buf: &'a [u8] = self.buf;
        let out = &buf[self.pos..];
        self.pos = buf.len();
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// One signed byte.
    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    /// A big-endian `i16`.
    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian `i32`.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A NUL-terminated string's bytes (without the NUL).
    pub fn cstr_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let buf: &'a [u8] = self.buf;
        let rest = &buf[self.pos..];
        let nul = memchr::memchr(0, rest).ok_or(DecodeError::MissingNul)?;
        self.pos += nul + 1;
        Ok(&rest[..nul])
    }

    /// A NUL-terminated UTF-8 string, borrowed.
    pub fn cstr(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.cstr_bytes()?).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// A NUL-terminated UTF-8 string, owned.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        self.cstr().map(str::to_owned)
    }

    /// A 16-bit count of items that each take at least `min_item_len` bytes, checked against
    /// what is left, so that no caller pre-allocates for a count the body cannot hold. Read
    /// unsigned, as PostgreSQL's `pq_getmsgint(msg, 2)` does: a Bind may carry up to 65,535
    /// parameters.
    pub fn count16(
        &mut self,
        min_item_len: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let count = self.u16()?;
        self.checked_count(i64::from(count), min_item_len, what)
    }

    /// Like [`count16`](Self::count16) for an `i32` count.
    pub fn count32(
        &mut self,
        min_item_len: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let count = self.i32()?;
        self.checked_count(i64::from(count), min_item_len, what)
    }

    fn checked_count(
        &self,
        count: i64,
        min_item_len: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let count = usize::try_from(count).map_err(|_| DecodeError::InvalidCount { what })?;
        if count.saturating_mul(min_item_len) > self.remaining() {
            return Err(DecodeError::InvalidCount { what });
        }
        Ok(count)
    }

    /// The `i32` length of a value: `None` for -1 (NULL); other negatives are errors.
    pub fn value_len(&mut self, what: &'static str) -> Result<Option<usize>, DecodeError> {
        match self.i32()? {
            -1 => Ok(None),
            len => usize::try_from(len)
                .map(Some)
                .map_err(|_| DecodeError::InvalidCount { what }),
        }
    }

    /// A length-prefixed value, borrowed: `None` is NULL.
    pub fn nullable(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, DecodeError> {
        self.value_len(what)?.map(|len| self.bytes(len)).transpose()
    }

    /// Fails if anything is left.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes { n }),
        }
    }
}

/// A [`Reader`] over a `Bytes` body that can also hand out zero-copy `Bytes` slices.
#[derive(Clone, Debug)]
pub struct BytesReader<'a> {
    body: &'a Bytes,
    reader: Reader<'a>,
}

impl<'a> BytesReader<'a> {
    /// A reader at the start of `body`.
    pub fn new(body: &'a Bytes) -> Self {
        Self {
            body,
            reader: Reader::new(body),
        }
    }

    /// The next `n` bytes as a slice of the body.
    pub fn bytes_shared(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.reader.position();
        self.reader.bytes(n)?;
        Ok(self.body.slice(start..start + n))
    }

    /// Everything left, as a slice of the body.
    pub fn rest_shared(&mut self) -> Bytes {
        let start = self.reader.position();
        self.reader.rest();
        self.body.slice(start..)
    }

    /// A length-prefixed value as a slice of the body: `None` is NULL.
    pub fn nullable_shared(&mut self, what: &'static str) -> Result<Option<Bytes>, DecodeError> {
        let len = self.reader.value_len(what)?;
        len.map(|len| self.bytes_shared(len)).transpose()
    }
}

impl<'a> Deref for BytesReader<'a> {
    type Target = Reader<'a>;

    fn deref(&self) -> &Reader<'a> {
        &self.reader
    }
}

impl DerefMut for BytesReader<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.reader
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_past_the_end_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[0, 1, 2]);
        assert_eq!(r.i32(), Err(DecodeError::Truncated { needed: 1 }));
        assert_eq!(
            r.bytes(usize::MAX),
            Err(DecodeError::Truncated {
                needed: usize::MAX - 3
            })
        );
        assert_eq!(r.remaining(), 3, "a failed read consumes nothing");
    }

    #[test]
    fn counts_larger_than_the_body_are_refused_before_allocation() {
        let mut r = Reader::new(&[0x75, 0x30, 0, 0]);
        assert_eq!(
            r.count16(2, "columns"),
            Err(DecodeError::InvalidCount { what: "columns" })
        );
        // 16-bit counts are unsigned, as in PostgreSQL: 65,535 zero-length items fit.
        let mut r = Reader::new(&[0xff, 0xff]);
        assert_eq!(r.count16(0, "parameters"), Ok(65_535));
        let mut r = Reader::new(&[0xff, 0xff, 0, 0]);
        assert_eq!(
            r.count16(1, "parameters"),
            Err(DecodeError::InvalidCount { what: "parameters" })
        );
    }

    #[test]
    fn negative_lengths_other_than_minus_one_are_refused() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xfe]);
        assert!(matches!(
            r.nullable("value"),
            Err(DecodeError::InvalidCount { .. })
        ));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.nullable("value"), Ok(None));
    }

    #[test]
    fn strings_need_a_terminator_and_valid_utf8() {
        assert_eq!(Reader::new(b"abc").cstr(), Err(DecodeError::MissingNul));
        assert_eq!(Reader::new(b"\xff\0").cstr(), Err(DecodeError::InvalidUtf8));
        let mut r = Reader::new(b"ab\0\0");
        assert_eq!(r.cstr(), Ok("ab"));
        assert_eq!(r.cstr(), Ok(""));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn finish_reports_how_many_bytes_are_left() {
        let mut r = Reader::new(b"abc");
        r.u8().unwrap();
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes { n: 2 }));
    }

    #[test]
    fn shared_slices_point_into_the_body() {
        let body = Bytes::from_static(b"\0\0\0\x02hirest");
        let mut r = BytesReader::new(&body);
        let value = r.nullable_shared("value").unwrap().unwrap();
        assert_eq!(&value[..], b"hi");
        assert!(body.as_ptr_range().contains(&value.as_ptr()));
        assert_eq!(&r.rest_shared()[..], b"rest");
        assert_eq!(r.finish(), Ok(()));
    }
}
