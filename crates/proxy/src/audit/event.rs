//! The audit events and how one is written: one JSON object per line with `time` (RFC 3339,
//! UTC), `session` (the connection's [`ClientId`]), `event` and the event's own fields.

use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::tap::{Cut, Kept};
use crate::clients::ClientId;
use crate::sql_scan::{redact as redact_sql, LexState};

/// One audit event.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A session began: who, from where, how authenticated, to which backend.
    SessionStart(Box<SessionStart>),
    /// A simple Query message.
    Query(Statement),
    /// A Parse message (extended protocol).
    Parse(Statement),
    /// A FunctionCall message (the fast-path interface).
    FunctionCall(FunctionCall),
    /// An ErrorResponse sent to the client.
    Error(ErrorEvent),
    /// The session ended.
    SessionEnd(SessionEnd),
    /// A command run on the admin console.
    AdminCommand(AdminCommand),
}

/// `session_start`.
#[derive(Debug, Serialize)]
pub struct SessionStart {
    /// The real client address (the PROXY header's source when one was accepted).
    pub client_addr: String,
    /// The TCP peer (a load balancer, behind a PROXY header).
    pub peer_addr: String,
    /// TLS details, when the client used TLS.
    pub tls: Option<TlsFacts>,
    /// The startup message's `user`.
    pub user: String,
    /// The startup message's `database`.
    pub database: String,
    /// The route's number (1-based, file order).
    pub route: usize,
    /// The route's `auth` mode.
    pub auth: &'static str,
    /// Who authentication proved the client to be: a token's `sub`, a certificate's CN, or
    /// the user name a password (or the external authenticator) vouched for.
    pub identity: Option<String>,
    /// The backend address.
    pub backend: Option<String>,
    /// The user logged into the backend.
    pub backend_user: Option<String>,
    /// The backend database.
    pub backend_database: Option<String>,
    /// Whether the session goes through a pool.
    pub pooled: bool,
}

/// The TLS part of `session_start`.
#[derive(Debug, Serialize)]
pub struct TlsFacts {
    /// `TLSv1_3` and the like.
    pub version: Option<String>,
    /// The server name (SNI) the client asked for.
    pub sni: Option<String>,
    /// The verified client certificate's subject (RFC 4514), if one was presented.
    pub client_subject: Option<String>,
}

/// `query` and `parse`: a statement's text, whole up to [`crate::audit::TEXT_LIMIT`] bytes,
/// else its start and its end.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Statement {
    /// The prepared statement's name (`parse` only; empty: the unnamed one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The SQL text (literals replaced by `?` under `redact_literals`; those of sensitive
    /// statements always); a long one's first and last 32 KiB with a marker between.
    pub text: String,
    /// Whether the text was longer than what was kept.
    pub truncated: bool,
    /// The full text's length in bytes.
    pub length: u64,
    /// The SHA-256 of the full text (hex), when it was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why more than `redact_literals` asks was withheld: `secret` (a statement that can
    /// carry a password), `encoding` (bytes that are not UTF-8, withheld from the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted: Option<&'static str>,
}

impl Statement {
    /// A Query message's body.
    pub(super) fn query(kept: &Kept, redact: bool) -> Self {
        Self::of(None, &kept.head, kept.cut.as_ref(), redact)
    }

    /// A Parse message's body: the statement name, then the text.
    pub(super) fn parse(kept: &Kept, redact: bool) -> Self {
        let (name, rest) = c_string(&kept.head);
        let name = Some(String::from_utf8_lossy(name).into_owned());
        Self::of(name, rest, kept.cut.as_ref(), redact)
    }

    /// The statement whose text starts `head` (and ends `cut`'s tail, when it was cut).
    fn of(name: Option<String>, head: &[u8], cut: Option<&Cut>, redact: bool) -> Self {
        let (text, _) = c_string(head);
        let mut out = Text::default();
        let Some(cut) = cut else {
            out.push(text, redact);
            return out.statement(name, false, text.len() as u64, None);
        };
        if !head.contains(&0) {
            // The text goes on past the head: head, marker, the text's end in the tail.
            out.push(until_char_end(text), redact);
            out.text.push_str(&format!(
                " …[{} bytes not kept]… ",
                cut.omitted
                    + (text.len() - until_char_end(text).len()) as u64
                    + (cut.tail.len() - from_char_start(&cut.tail).len()) as u64
            ));
            out.push_tail(c_string(from_char_start(&cut.tail)).0, redact, &cut.lex);
        } else {
            out.push(text, redact);
        }
        let sha256 = cut.sha256.iter().map(|b| format!("{b:02x}")).collect();
        out.statement(name, true, cut.length, Some(sha256))
    }
}

/// A text being put together from its parts.
#[derive(Debug, Default)]
struct Text {
    text: String,
    redacted: Option<&'static str>,
}

impl Text {
    /// Adds `bytes` of SQL: redacted with `redact` (and its sensitive statements' strings
    /// always); bytes that are not UTF-8 are written as U+FFFD, or, when redacting or in a
    /// sensitive statement, withheld from the first (in another encoding a byte such as
    /// 0x5C inside a character could end a literal early for the lexer).
    fn push(&mut self, bytes: &[u8], redact: bool) {
        self.push_with(bytes, redact, &redact_sql);
    }

    /// As [`Text::push`] for the end of a long text, lexed from where `lex` says its
    /// start is (inside a string, a comment, …).
    fn push_tail(&mut self, bytes: &[u8], redact: bool, lex: &LexState) {
        self.push_with(bytes, redact, &|sql, all| lex.redact_after(sql, all));
    }

    fn push_with(
        &mut self,
        bytes: &[u8],
        redact: bool,
        redact_sql: &dyn Fn(&str, bool) -> (String, bool),
    ) {
        let (valid, invalid) = match std::str::from_utf8(bytes) {
            Ok(text) => (text, false),
            Err(error) => (
                std::str::from_utf8(bytes.get(..error.valid_up_to()).unwrap_or_default())
                    .unwrap_or_default(),
                true,
            ),
        };
        let (redacted, sensitive) = redact_sql(valid, redact);
        if sensitive {
            self.redacted = Some("secret");
        }
        if !invalid {
            self.text.push_str(&redacted);
        } else if redact || sensitive || may_be_sensitive(bytes) {
            self.text.push_str(&redacted);
            self.text.push_str("…[not UTF-8: the rest withheld]");
            self.redacted.get_or_insert("encoding");
        } else {
            self.text.push_str(&String::from_utf8_lossy(bytes));
        }
    }

    fn statement(
        self,
        name: Option<String>,
        truncated: bool,
        length: u64,
        sha256: Option<String>,
    ) -> Statement {
        Statement {
            name,
            text: self.text,
            truncated,
            length,
            sha256,
            redacted: self.redacted,
        }
    }
}

/// Whether a text that is not UTF-8 may hold a statement that can carry a secret: decoded
/// as UTF-8 its quotes may be misread (a byte of a character taken for `\`), so any
/// `CREATE` or `ALTER` counts.
fn may_be_sensitive(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| {
        w.eq_ignore_ascii_case(b"create")
            || w.get(..5).is_some_and(|w| w.eq_ignore_ascii_case(b"alter"))
    })
}

/// `bytes` without an incomplete UTF-8 character at its end (a head cut inside one).
fn until_char_end(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Err(error) if error.error_len().is_none() => {
            bytes.get(..error.valid_up_to()).unwrap_or_default()
        }
        _ => bytes,
    }
}

/// `bytes` without the continuation bytes at its start (a tail cut inside a character).
fn from_char_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .take(3)
        .take_while(|&&b| (0x80..0xC0).contains(&b))
        .count();
    bytes.get(skip..).unwrap_or_default()
}

/// `function_call`: a FunctionCall message (the fast-path interface).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FunctionCall {
    /// The function's OID.
    pub oid: u32,
    /// How many arguments it was given.
    pub args: u16,
    /// The arguments (left out under `redact_literals`): text when UTF-8, else `\x` and hex;
    /// `null` for a NULL; each at most [`ARG_LIMIT`] bytes (then cut, ending in `…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Option<String>>>,
}

/// The most of a `function_call` argument written.
pub const ARG_LIMIT: usize = 256;

impl FunctionCall {
    /// A FunctionCall body (possibly cut short: what is there is read).
    pub fn from_body(body: &[u8], redact: bool) -> Self {
        let mut reader = Reader(body);
        let oid = reader.u32().unwrap_or_default();
        let formats = reader.u16().unwrap_or_default();
        for _ in 0..formats {
            reader.u16();
        }
        let args = reader.u16().unwrap_or_default();
        let values = (!redact).then(|| {
            (0..args)
                .map_while(|_| {
                    let len = reader.u32()?;
                    if len == u32::MAX {
                        return Some(None);
                    }
                    let value = reader.take(len as usize);
                    Some(Some(argument(value)))
                })
                .collect()
        });
        Self { oid, args, values }
    }
}

/// A function argument as written: text when UTF-8, else hex; at most [`ARG_LIMIT`] bytes.
fn argument(value: &[u8]) -> String {
    let kept = value.get(..ARG_LIMIT).unwrap_or(value);
    let mut out = match std::str::from_utf8(kept) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            let hex: String = kept.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\x{hex}")
        }
    };
    if kept.len() < value.len() {
        out.push('…');
    }
    out
}

/// Reads big-endian integers and byte strings off a body; short reads give what is there.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2).try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4).try_into().ok()?))
    }
}

/// `error`: an ErrorResponse the client received.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ErrorEvent {
    /// `ERROR`, `FATAL` or `PANIC` (the non-localized one when the server sent it).
    pub severity: String,
    /// The SQLSTATE.
    pub sqlstate: String,
    /// The primary message; left out under `redact_literals` (it may quote values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ErrorEvent {
    /// An ErrorResponse body (possibly cut short: what is there is read).
    pub fn from_body(body: &[u8], redact: bool) -> Self {
        let mut event = Self {
            severity: String::new(),
            sqlstate: String::new(),
            message: None,
        };
        for field in body.split(|&b| b == 0) {
            let Some((&code, value)) = field.split_first() else {
                break;
            };
            let value = || String::from_utf8_lossy(value).into_owned();
            match code {
                b'V' => event.severity = value(),
                b'S' if event.severity.is_empty() => event.severity = value(),
                b'C' => event.sqlstate = value(),
                b'M' if !redact => event.message = Some(value()),
                _ => {}
            }
        }
        event
    }
}

/// `session_end`.
#[derive(Debug, Serialize)]
pub struct SessionEnd {
    /// From the session's start (after authentication and the backend login).
    pub duration_ms: u64,
    /// Bytes the client sent in the session.
    pub bytes_from_client: u64,
    /// Bytes the client received in the session.
    pub bytes_to_client: u64,
    /// Transactions ended (each ReadyForQuery `I` the client received).
    pub transactions: u64,
    /// Who ended it: `terminate`, `client`, `backend`, `shutdown`, …
    pub ended_by: &'static str,
    /// The session's events that were dropped (the queue was full, or a write failed).
    pub dropped: u64,
}

/// `admin_command`: what an admin ran on the console (`SHOW …`, `KILL_CLIENT 7`, `RELOAD`,
/// `SHUTDOWN`, …), and how it came out.
#[derive(Debug, Serialize)]
pub struct AdminCommand {
    /// The real client address.
    pub client_addr: String,
    /// The admin's user name.
    pub user: String,
    /// The command as pgbastion understood it; `None` for a query that is not one (whose text
    /// is not written: it could be anything, a password typed at the wrong prompt included).
    pub command: Option<String>,
    /// The SQLSTATE of the error it was answered with; `None` when it succeeded.
    pub sqlstate: Option<String>,
}

/// An event with its time and session, as one line is written.
#[derive(Debug, Serialize)]
pub struct Record {
    /// When it happened; written in RFC 3339, UTC, with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The connection's number.
    pub session: u64,
    /// The event's number in its session, from 0 (a gap: events dropped).
    pub seq: u64,
    /// The process's ID: with `session`, names a session across an upgrade (whose new
    /// process numbers its connections from 1 again).
    pub pid: u32,
    /// The event and its fields.
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    /// Event `seq` of connection `id` of process `pid`, now.
    pub fn now(pid: u32, id: ClientId, seq: u64, event: Event) -> Self {
        Self {
            time: SystemTime::now(),
            session: id.0,
            seq,
            pid,
            event,
        }
    }
}

fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// The bytes up to the first NUL, and those after it (all of them when there is none: a
/// text cut short).
fn c_string(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => (&bytes[..end], &bytes[end + 1..]),
        None => (bytes, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_body_gives_its_name_and_text_and_a_cut_one_what_is_there() {
        let kept = |head: &[u8]| Kept {
            tag: b'P',
            head: head.to_vec(),
            cut: None,
        };
        let parse = Statement::parse(&kept(b"s1\0SELECT $1, 'x'\0\0\x01\0\0\0\x17"), true);
        assert_eq!(parse.name.as_deref(), Some("s1"));
        assert_eq!(parse.text, "SELECT $1, ?");
        let secret = Statement::query(&kept(b"ALTER ROLE x PASSWORD 'pw'\0"), false);
        assert_eq!(secret.text, "ALTER ROLE x PASSWORD ?");
        assert_eq!(secret.redacted, Some("secret"));
        // Shift-JIS 表 is 0x95 0x5C: read as UTF-8 the 0x5C would end E'…' early.
        let sjis = Statement::query(&kept(b"SELECT E'\x95\x5C', 'pw'\0"), true);
        assert_eq!(sjis.text, "SELECT ?…[not UTF-8: the rest withheld]");
        assert_eq!(sjis.redacted, Some("encoding"));
        let hidden = b"SELECT E'\x95\x5C'; ALTER ROLE x PASSWORD 'pw'\0";
        let hidden = Statement::query(&kept(hidden), false);
        assert_eq!(hidden.text, "SELECT E'…[not UTF-8: the rest withheld]");
        let plain = Statement::query(&kept(b"SELECT '\xff'\0"), false);
        assert_eq!(
            (plain.text.as_str(), plain.redacted),
            ("SELECT '\u{fffd}'", None)
        );
    }

    #[test]
    fn a_cut_text_keeps_its_head_and_its_end_and_says_how_long_it_was() {
        let tail = b"x */; SELECT pg_read_file('/etc/passwd')\0".to_vec();
        let mut lex = LexState::default();
        lex.feed(b"SELECT 1 /* xxxx");
        lex.feed(&[b'x'; 70_000]);
        let kept = Kept {
            tag: b'Q',
            head: b"SELECT 1 /* xxxx".to_vec(),
            cut: Some(Cut {
                tail,
                omitted: 70_000,
                length: 70_100,
                sha256: [0xab; 32],
                lex,
            }),
        };
        let statement = Statement::query(&kept, true);
        assert_eq!(
            statement.text,
            "SELECT ? /* xxxx …[70000 bytes not kept]… x */; SELECT pg_read_file(?)"
        );
        assert!(statement.truncated);
        assert_eq!(statement.length, 70_100);
        assert_eq!(statement.sha256, Some("ab".repeat(32)));
    }

    #[test]
    fn a_function_call_gives_its_oid_and_arguments_unless_redacted() {
        let body = b"\0\0\x0b\x40\0\x01\0\0\0\x02\0\0\0\x0b/etc/passwd\xff\xff\xff\xff\0\0";
        let call = FunctionCall::from_body(body, false);
        assert_eq!((call.oid, call.args), (2880, 2));
        assert_eq!(
            call.values,
            Some(vec![Some("/etc/passwd".to_owned()), None])
        );
        assert_eq!(FunctionCall::from_body(body, true).values, None);
        assert_eq!(argument(&[0xff, 0x00]), "\\xff00");
        assert_eq!(FunctionCall::from_body(&body[..3], false).args, 0);
    }

    #[test]
    fn an_error_body_gives_severity_sqlstate_and_the_message_unless_redacted() {
        let body = b"SERREUR\0VERROR\0C22P02\0Minvalid input syntax: \"abc\"\0\0";
        let error = ErrorEvent::from_body(body, false);
        assert_eq!(error.severity, "ERROR");
        assert_eq!(error.sqlstate, "22P02");
        assert_eq!(
            error.message.as_deref(),
            Some("invalid input syntax: \"abc\"")
        );
        assert_eq!(ErrorEvent::from_body(body, true).message, None);
    }

    #[test]
    fn a_record_is_one_flat_json_object() {
        let kept = Kept {
            tag: b'Q',
            head: b"SELECT 1\0".to_vec(),
            cut: None,
        };
        let record = Record::now(
            42,
            ClientId(7),
            3,
            Event::Query(Statement::query(&kept, false)),
        );
        let json: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(json["event"], "query");
        assert_eq!(json["session"], 7);
        assert_eq!(json["pid"], 42);
        assert_eq!(json["text"], "SELECT 1");
        assert_eq!(json["seq"], 3);
        assert_eq!(json["length"], 8);
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
    }
}
