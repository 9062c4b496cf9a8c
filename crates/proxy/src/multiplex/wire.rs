//! The few message layouts the multiplexer reads or rewrites, on raw frames (tag, length,
//! body), without decoding what it only passes on.

use bytes::{BufMut, Bytes, BytesMut};
use pgbastion_wire::{BackendMessage, ErrorResponse, Severity, SqlState};

use super::engine::MuxError;

/// ParseComplete.
pub const PARSE_COMPLETE: Bytes = Bytes::from_static(b"1\0\0\0\x04");
/// CloseComplete.
pub const CLOSE_COMPLETE: Bytes = Bytes::from_static(b"3\0\0\0\x04");
/// Flush, from pgbastion to the backend: what it holds for the client is sent now.
pub const FLUSH: &[u8] = b"H\0\0\0\x04";

/// A client message that is not a frontend message.
pub fn unknown_message(tag: u8) -> MuxError {
    MuxError::Client(ErrorResponse::new(
        Severity::Fatal,
        SqlState::PROTOCOL_VIOLATION,
        format!("invalid frontend message type {tag}"),
    ))
}

/// A client message whose body does not parse.
pub fn malformed(what: &str) -> MuxError {
    MuxError::Client(ErrorResponse::new(
        Severity::Fatal,
        SqlState::PROTOCOL_VIOLATION,
        format!("invalid {what} message format"),
    ))
}

/// Splits a NUL-terminated string off the front of `body`.
fn cstr<'a>(body: &'a [u8], what: &str) -> Result<(&'a [u8], &'a [u8]), MuxError> {
    let end = body
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| malformed(what))?;
    Ok((&body[..end], &body[end + 1..]))
}

/// A Parse, borrowed from its frame.
#[derive(Debug)]
pub struct Parse<'a> {
    /// Statement name.
    pub name: &'a [u8],
    /// The SQL.
    pub query: &'a str,
    /// The parameter-type block as sent (16-bit count, OIDs).
    pub types: &'a [u8],
}

impl<'a> Parse<'a> {
    /// Reads a whole Parse frame.
    pub fn split(frame: &'a [u8]) -> Result<Self, MuxError> {
        let (name, rest) = cstr(&frame[5..], "Parse")?;
        let (query, types) = cstr(rest, "Parse")?;
        let count = match types {
            [a, b, ..] => u16::from_be_bytes([*a, *b]) as usize,
            _ => return Err(malformed("Parse")),
        };
        if types.len() != 2 + 4 * count {
            return Err(malformed("Parse"));
        }
        let query = std::str::from_utf8(query).map_err(|_| malformed("Parse"))?;
        Ok(Self { name, query, types })
    }
}

/// A Bind, borrowed from its frame.
#[derive(Debug)]
pub struct Bind<'a> {
    /// Destination portal.
    pub portal: &'a [u8],
    /// Source statement.
    pub statement: &'a [u8],
    /// Formats, values and result formats, as sent.
    pub rest: &'a [u8],
}

impl<'a> Bind<'a> {
    /// Reads the names at the start of a whole Bind frame.
    pub fn split(frame: &'a [u8]) -> Result<Self, MuxError> {
        let (portal, rest) = cstr(&frame[5..], "Bind")?;
        let (statement, rest) = cstr(rest, "Bind")?;
        Ok(Self {
            portal,
            statement,
            rest,
        })
    }

    /// The same Bind naming statement `server`.
    pub fn renamed(&self, server: &str) -> Bytes {
        let body_len = self.portal.len() + 1 + server.len() + 1 + self.rest.len();
        let mut out = BytesMut::with_capacity(5 + body_len);
        out.put_u8(b'B');
        put_length(&mut out, body_len);
        out.put_slice(self.portal);
        out.put_u8(0);
        out.put_slice(server.as_bytes());
        out.put_u8(0);
        out.put_slice(self.rest);
        out.freeze()
    }
}

/// The text of a whole Query frame (empty when it is not UTF-8: PostgreSQL refuses it).
pub fn query_text(frame: &[u8]) -> &str {
    frame
        .get(5..frame.len().saturating_sub(1))
        .and_then(|body| std::str::from_utf8(body).ok())
        .unwrap_or_default()
}

/// The portal a whole Execute frame names.
pub fn execute_portal(frame: &[u8]) -> Result<&[u8], MuxError> {
    Ok(cstr(&frame[5..], "Execute")?.0)
}

/// The target byte (`S` or `P`) and name of a whole Describe or Close frame.
pub fn split_target(frame: &[u8]) -> Result<(u8, &[u8]), MuxError> {
    let (&target, rest) = frame[5..]
        .split_first()
        .ok_or_else(|| malformed("Describe"))?;
    let (name, rest) = cstr(rest, "Describe")?;
    if !rest.is_empty() || !matches!(target, b'S' | b'P') {
        return Err(malformed("Describe"));
    }
    Ok((target, name))
}

fn put_length(out: &mut BytesMut, body_len: usize) {
    // Bodies here are bounded by the client message they come from, itself under 1 GiB.
    out.put_u32((body_len + 4) as u32);
}

fn target_message(tag: u8, target: u8, name: &str, out: &mut BytesMut) {
    out.put_u8(tag);
    put_length(out, 1 + name.len() + 1);
    out.put_u8(target);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
}

/// Describe of statement `name`.
pub fn describe_statement(name: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(7 + name.len());
    target_message(b'D', b'S', name, &mut out);
    out.freeze()
}

/// Appends Close of statement `name`.
pub fn close_statement(name: &str, out: &mut BytesMut) {
    target_message(b'C', b'S', name, out);
}

/// Appends an unnamed Parse, Bind, Execute and Sync of
/// `SELECT set_config($1, $2, false), …` making each change (`None`: back to the default),
/// the values passed as parameters so that nothing needs quoting.
pub fn set_config(changes: &[(String, Option<String>)], out: &mut BytesMut) {
    let mut sql = String::from("SELECT ");
    for i in 0..changes.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "set_config(${}, ${}, false)",
            2 * i + 1,
            2 * i + 2
        ));
    }
    let values = changes
        .iter()
        .flat_map(|(name, value)| [Some(name.as_bytes()), value.as_deref().map(str::as_bytes)]);
    extended_group(&sql, 2 * changes.len(), values, out);
}

/// The OID of type `text`.
const TEXT: u32 = 25;

/// Appends an unnamed Parse of `sql` (its `count` parameters typed `text`, so that any use
/// of them resolves), a Bind of `values` (text), an Execute and a Sync.
pub fn extended_group<'v>(
    sql: &str,
    count: usize,
    values: impl IntoIterator<Item = Option<&'v [u8]>> + Clone,
    out: &mut BytesMut,
) {
    // Every piece is bounded by what pgbastion generates; encoding cannot fail.
    let _ = pgbastion_wire::frontend::write_parse(out, "", sql, &vec![TEXT; count]);
    let _ = pgbastion_wire::frontend::write_bind(out, "", "", &[], values, &[]);
    let _ = pgbastion_wire::frontend::write_execute(out, "", 0);
    let _ = pgbastion_wire::frontend::write_sync(out);
}

/// The SQLSTATE field of an ErrorResponse body.
pub fn error_code(body: &[u8]) -> Option<[u8; 5]> {
    let mut rest = body;
    while let Some((&field, after)) = rest.split_first() {
        if field == 0 {
            return None;
        }
        let (value, next) = cstr(after, "ErrorResponse").ok()?;
        if field == b'C' {
            return value.try_into().ok();
        }
        rest = next;
    }
    None
}

/// The name and value of a ParameterStatus body.
pub fn parameter_status(body: &[u8]) -> Option<(String, String)> {
    let (name, rest) = cstr(body, "ParameterStatus").ok()?;
    let (value, _) = cstr(rest, "ParameterStatus").ok()?;
    Some((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// An ErrorResponse.
pub fn error(error: ErrorResponse) -> Bytes {
    encode(&BackendMessage::ErrorResponse(error))
}

/// ReadyForQuery with `status`.
pub fn ready(status: pgbastion_wire::TransactionStatus) -> Bytes {
    encode(&BackendMessage::ReadyForQuery(status))
}

/// A backend message, encoded.
pub fn encode(message: &BackendMessage) -> Bytes {
    let mut out = BytesMut::new();
    // Messages made here (errors with short texts, fixed replies) always encode.
    let _ = message.encode(&mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_bind_keeps_everything_but_the_statement_name() {
        let mut out = BytesMut::new();
        pgbastion_wire::frontend::write_bind(
            &mut out,
            "p",
            "s1",
            &[1],
            [Some(&b"\0\0\0\x07"[..]), None],
            &[1],
        )
        .unwrap();
        let bind = Bind::split(&out).unwrap();
        assert_eq!(bind.statement, b"s1");
        let renamed = bind.renamed("pgbastion_x");
        let mut expected = BytesMut::new();
        pgbastion_wire::frontend::write_bind(
            &mut expected,
            "p",
            "pgbastion_x",
            &[1],
            [Some(&b"\0\0\0\x07"[..]), None],
            &[1],
        )
        .unwrap();
        assert_eq!(renamed, expected.freeze());
    }

    #[test]
    fn truncated_bodies_are_malformed_not_panics() {
        let mut out = BytesMut::new();
        pgbastion_wire::frontend::write_parse(&mut out, "s", "SELECT $1", &[23]).unwrap();
        for end in 5..out.len() {
            let mut cut = BytesMut::from(&out[..end]);
            let len = (end - 1) as u32;
            cut[1..5].copy_from_slice(&len.to_be_bytes());
            assert!(Parse::split(&cut).is_err(), "cut at {end}");
        }
        assert!(Parse::split(&out).is_ok());
        assert!(split_target(b"D\0\0\0\x04").is_err());
        assert!(split_target(b"D\0\0\0\x06X\0").is_err());
    }
}
