//! Encoding helpers. Lengths and counts are back-patched, never computed by hand, and a
//! failed encode leaves the output buffer exactly as it was.

use bytes::{BufMut, BytesMut};

use crate::error::EncodeError;

/// Writes one tagged message: `tag`, a length placeholder, the body written by `body`, then
/// the real length (which counts itself but not the tag).
#[inline]
pub fn write_message(
    buf: &mut BytesMut,
    tag: u8,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    // Tag and length placeholder in one write: one capacity check instead of two.
    buf.extend_from_slice(&[tag, 0, 0, 0, 0]);
    finish_framed(buf, start, start + 1, body)
}

/// Writes one untagged (startup-phase) packet: a length placeholder, the body, the length.
pub fn write_untagged(
    buf: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_u32(0);
    finish_framed(buf, start, start, body)
}

/// Runs `body` after a length placeholder at `len_at`, then patches the length, or
/// truncates back to `start` on error.
#[inline]
fn finish_framed(
    buf: &mut BytesMut,
    start: usize,
    len_at: usize,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let result = body(buf)
        .and_then(|()| i32::try_from(buf.len() - len_at).map_err(|_| EncodeError::TooLong));
    match result {
        Ok(len) => {
            buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

/// Writes a NUL-terminated string, refusing interior NULs.
#[inline]
pub fn put_cstr(buf: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    put_cstr_bytes(buf, s.as_bytes())
}

/// Writes NUL-terminated bytes, refusing interior NULs.
#[inline]
pub fn put_cstr_bytes(buf: &mut BytesMut, s: &[u8]) -> Result<(), EncodeError> {
    // `contains` uses core's inlined SWAR search: cheaper than a dispatched memchr call for
    // the short names most messages carry.
    if s.contains(&0) {
        return Err(EncodeError::InteriorNul);
    }
    buf.put_slice(s);
    buf.put_u8(0);
    Ok(())
}

/// Writes a NUL-terminated string that must not be empty (an empty one would read back as
/// the end of its list: startup parameter names, SASL mechanism names).
pub fn put_name(buf: &mut BytesMut, s: &str, what: &'static str) -> Result<(), EncodeError> {
    if s.is_empty() {
        return Err(EncodeError::InvalidValue { what });
    }
    put_cstr(buf, s)
}

/// Writes an `i16` item count.
#[inline]
pub fn put_count16(buf: &mut BytesMut, n: usize, what: &'static str) -> Result<(), EncodeError> {
    let n = i16::try_from(n).map_err(|_| EncodeError::TooMany { what })?;
    buf.put_i16(n);
    Ok(())
}

/// Writes an `i16`-counted list of `i16`s (format codes).
#[inline]
pub fn put_i16_list(
    buf: &mut BytesMut,
    items: &[i16],
    what: &'static str,
) -> Result<(), EncodeError> {
    put_count16(buf, items.len(), what)?;
    items.iter().for_each(|&item| buf.put_i16(item));
    Ok(())
}

/// Writes an `i16` count followed by the items `put` writes, back-patching the count, for
/// lists that arrive as iterators.
#[inline]
pub fn put_counted16<T>(
    buf: &mut BytesMut,
    items: impl IntoIterator<Item = T>,
    what: &'static str,
    mut put: impl FnMut(&mut BytesMut, T) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let count_at = buf.len();
    buf.put_i16(0);
    let mut n: i16 = 0;
    for item in items {
        n = n.checked_add(1).ok_or(EncodeError::TooMany { what })?;
        put(buf, item)?;
    }
    buf[count_at..count_at + 2].copy_from_slice(&n.to_be_bytes());
    Ok(())
}

/// Writes a length-prefixed value (`-1` for NULL).
#[inline]
pub fn put_nullable(buf: &mut BytesMut, value: Option<&[u8]>) -> Result<(), EncodeError> {
    match value {
        None => buf.put_i32(-1),
        Some(v) => {
            buf.put_i32(i32::try_from(v.len()).map_err(|_| EncodeError::TooLong)?);
            buf.put_slice(v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_body_leaves_the_buffer_untouched() {
        let mut buf = BytesMut::from(&b"keep"[..]);
        let result = write_message(&mut buf, b'Q', |b| put_cstr(b, "a\0b"));
        assert_eq!(result, Err(EncodeError::InteriorNul));
        assert_eq!(&buf[..], b"keep");
    }

    #[test]
    fn the_length_counts_itself_but_not_the_tag() {
        let mut buf = BytesMut::new();
        write_message(&mut buf, b'Q', |b| put_cstr(b, "x")).unwrap();
        assert_eq!(&buf[..], b"Q\0\0\0\x06x\0");
        let mut buf = BytesMut::new();
        write_untagged(&mut buf, |b| {
            b.put_u32(80_877_103);
            Ok(())
        })
        .unwrap();
        assert_eq!(&buf[..], b"\0\0\0\x08\x04\xd2\x16\x2f");
    }

    #[test]
    fn counted_lists_back_patch_their_count() {
        let mut buf = BytesMut::new();
        put_counted16(&mut buf, [Some(&b"a"[..]), None], "values", put_nullable).unwrap();
        assert_eq!(&buf[..], b"\0\x02\0\0\0\x01a\xff\xff\xff\xff");
    }

    #[test]
    fn lists_longer_than_an_i16_count_are_refused() {
        let mut buf = BytesMut::new();
        let result = write_message(&mut buf, b'B', |b| {
            put_counted16(b, 0..40_000, "values", |_, _| Ok(()))
        });
        assert_eq!(result, Err(EncodeError::TooMany { what: "values" }));
        assert!(buf.is_empty());
        assert_eq!(
            put_i16_list(&mut buf, &[0; 40_000], "formats"),
            Err(EncodeError::TooMany { what: "formats" })
        );
    }

    #[test]
    fn empty_names_are_refused() {
        let mut buf = BytesMut::new();
        assert_eq!(
            put_name(&mut buf, "", "parameter name"),
            Err(EncodeError::InvalidValue {
                what: "parameter name"
            })
        );
    }
}
