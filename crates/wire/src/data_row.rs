//! DataRow, decoded lazily: the body is validated once, then columns are read as slices of
//! it without allocating per row.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::writer::{put_counted16, put_nullable, write_message};

/// The DataRow message type byte.
const DATA_ROW_TAG: u8 = b'D';

/// A DataRow: column values, each NULL or bytes. It holds the encoded body (the frame's own
/// body when decoded) and reads the columns on demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRow {
    count: u16,
    /// The whole body: `i16 count, (i32 length, bytes)*`, validated.
    body: Bytes,
}

/// Where the columns start in a body, after the count.
const COLUMNS_START: usize = 2;

impl DataRow {
    /// Builds a row from values (`None` is NULL).
    pub fn new<'a>(
        values: impl IntoIterator<Item = Option<&'a [u8]>>,
    ) -> Result<Self, EncodeError> {
        let mut buf = BytesMut::new();
        put_counted16(&mut buf, values, "columns", put_nullable)?;
        Ok(Self {
            count: u16::from_be_bytes([buf[0], buf[1]]),
            body: buf.freeze(),
        })
    }

    /// Validates a DataRow body (count, then each length and value, nothing after) and keeps
    /// a reference to it. A count the body cannot hold fails before anything is allocated.
    pub fn decode(body: &Bytes) -> Result<Self, DecodeError> {
        Self::from_body(body.clone())
    }

    /// Like [`decode`](Self::decode), taking the body by value.
    pub fn from_body(body: Bytes) -> Result<Self, DecodeError> {
        let Some(&[hi, lo]) = body.get(..COLUMNS_START) else {
            return Err(DecodeError::Truncated {
                needed: COLUMNS_START - body.len(),
            });
        };
        let count = u16::try_from(i16::from_be_bytes([hi, lo]))
            .map_err(|_| DecodeError::InvalidCount { what: "columns" })?;
        let end = validate_columns(&body, count)?;
        if end != body.len() {
            return Err(DecodeError::TrailingBytes {
                n: body.len() - end,
            });
        }
        Ok(Self { count, body })
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The column values, borrowed, in order.
    pub fn values(&self) -> DataRowValues<'_> {
        DataRowValues {
            ranges: self.ranges(),
            body: &self.body,
        }
    }

    /// The column values as zero-copy `Bytes` slices of the row.
    pub fn value_bytes(&self) -> impl Iterator<Item = Option<Bytes>> + '_ {
        self.ranges().map(|range| range.map(|r| self.body.slice(r)))
    }

    /// The column values collected into a `Vec` (zero-copy slices).
    pub fn to_vec(&self) -> Vec<Option<Bytes>> {
        self.value_bytes().collect()
    }

    /// Column `index`: `None` if out of range, `Some(None)` for NULL. Walks the row.
    pub fn get(&self, index: usize) -> Option<Option<&[u8]>> {
        self.values().nth(index)
    }

    /// The encoded body (count and columns), as on the wire.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Appends the row as a complete `D` message.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        write_message(buf, DATA_ROW_TAG, |buf| {
            self.encode_body(buf);
            Ok(())
        })
    }

    pub(crate) fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_slice(&self.body);
    }

    fn ranges(&self) -> Ranges<'_> {
        Ranges {
            body: &self.body,
            pos: COLUMNS_START,
            left: self.count,
        }
    }
}

/// Appends a DataRow message straight from values, without building a [`DataRow`].
#[inline]
pub fn write_data_row<'a>(
    buf: &mut BytesMut,
    values: impl IntoIterator<Item = Option<&'a [u8]>>,
) -> Result<(), EncodeError> {
    write_message(buf, DATA_ROW_TAG, |buf| {
        put_counted16(buf, values, "columns", put_nullable)
    })
}

/// Checks `count` columns of `(i32 length, bytes)` after the count; returns where they end.
fn validate_columns(body: &[u8], count: u16) -> Result<usize, DecodeError> {
    let mut pos = COLUMNS_START;
    for _ in 0..count {
        let len = read_len(body, pos).ok_or(DecodeError::InvalidCount { what: "columns" })?;
        pos += 4;
        if len == -1 {
            continue;
        }
        match usize::try_from(len) {
            Ok(len) if len <= body.len() - pos => pos += len,
            _ => {
                return Err(DecodeError::InvalidCount {
                    what: "column value",
                })
            }
        }
    }
    Ok(pos)
}

#[inline]
fn read_len(body: &[u8], pos: usize) -> Option<i32> {
    match body.get(pos..pos.checked_add(4)?)? {
        &[a, b, c, d] => Some(i32::from_be_bytes([a, b, c, d])),
        _ => None,
    }
}

/// Walks validated columns, yielding each value's byte range (`None` for NULL).
#[derive(Clone, Debug)]
struct Ranges<'a> {
    body: &'a [u8],
    pos: usize,
    left: u16,
}

impl Iterator for Ranges<'_> {
    type Item = Option<Range<usize>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let len = read_len(self.body, self.pos)?;
        self.pos += 4;
        let Ok(len) = usize::try_from(len) else {
            return Some(None);
        };
        let start = self.pos;
        self.pos += len;
        Some(Some(start..self.pos))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.left)))
    }
}

/// Iterator over a [`DataRow`]'s values. The row was validated when decoded, so it cannot
/// fail.
#[derive(Clone, Debug)]
pub struct DataRowValues<'a> {
    ranges: Ranges<'a>,
    body: &'a [u8],
}

impl<'a> Iterator for DataRowValues<'a> {
    type Item = Option<&'a [u8]>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let range = self.ranges.next()?;
        let body: &'a [u8] = self.body;
        Some(match range {
            None => None,
            Some(range) => Some(body.get(range)?),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.ranges.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reads_back_its_values_in_order() {
        let row = DataRow::new([Some(&b"a"[..]), None, Some(&b""[..])]).unwrap();
        assert_eq!(row.len(), 3);
        assert_eq!(
            row.values().collect::<Vec<_>>(),
            vec![Some(&b"a"[..]), None, Some(&b""[..])]
        );
        assert_eq!(row.get(1), Some(None));
        assert_eq!(row.get(3), None);
    }

    #[test]
    fn a_huge_column_count_in_a_tiny_body_is_refused() {
        let body = Bytes::from_static(b"\x75\x30\0\0\0\x01a");
        assert_eq!(
            DataRow::decode(&body),
            Err(DecodeError::InvalidCount { what: "columns" })
        );
    }

    #[test]
    fn negative_value_lengths_other_than_null_are_refused() {
        let body = Bytes::from_static(b"\0\x01\xff\xff\xff\xfe");
        assert_eq!(
            DataRow::decode(&body),
            Err(DecodeError::InvalidCount {
                what: "column value"
            })
        );
    }

    #[test]
    fn write_data_row_and_encode_agree() {
        let values = [Some(&b"x"[..]), None];
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        write_data_row(&mut a, values).unwrap();
        DataRow::new(values).unwrap().encode(&mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..], b"D\0\0\0\x0f\0\x02\0\0\0\x01x\xff\xff\xff\xff");
    }
}
