//! The audit events and how one is written: one JSON object per line with `time` (RFC 3339,
//! UTC), `session` (the connection's [`ClientId`]), `event` and the event's own fields.

use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::clients::ClientId;
use crate::sql_scan::redact_literals;

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
    /// An ErrorResponse sent to the client.
    Error(ErrorEvent),
    /// The session ended.
    SessionEnd(SessionEnd),
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

/// `query` and `parse`: a statement's text, at most [`crate::audit::TEXT_LIMIT`] bytes of it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Statement {
    /// The prepared statement's name (`parse` only; empty: the unnamed one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The SQL text (literals replaced by `?` under `redact_literals`).
    pub text: String,
    /// Whether the message was longer than what was kept.
    pub truncated: bool,
}

impl Statement {
    /// A Query message's body.
    pub fn query(body: &[u8], truncated: bool, redact: bool) -> Self {
        let (text, _) = c_string(body);
        Self {
            name: None,
            text: sql_text(text, redact),
            truncated,
        }
    }

    /// A Parse message's body: the statement name, then the text.
    pub fn parse(body: &[u8], truncated: bool, redact: bool) -> Self {
        let (name, rest) = c_string(body);
        let (text, _) = c_string(rest);
        Self {
            name: Some(String::from_utf8_lossy(name).into_owned()),
            text: sql_text(text, redact),
            truncated,
        }
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
}

/// An event with its time and session, as one line is written.
#[derive(Debug, Serialize)]
pub struct Record {
    /// When it happened; written in RFC 3339, UTC, with milliseconds (by the writer thread).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The connection's number.
    pub session: u64,
    /// The process's ID: with `session`, names a session across an upgrade (whose new
    /// process numbers its connections from 1 again).
    pub pid: u32,
    /// The event and its fields.
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    /// `event` of connection `id` of process `pid`, now.
    pub fn now(pid: u32, id: ClientId, event: Event) -> Self {
        Self {
            time: SystemTime::now(),
            session: id.0,
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

fn sql_text(bytes: &[u8], redact: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    if redact {
        redact_literals(&text)
    } else {
        text.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_body_gives_its_name_and_text_and_a_cut_one_what_is_there() {
        let parse = Statement::parse(b"s1\0SELECT $1, 'x'\0\0\x01\0\0\0\x17", false, true);
        assert_eq!(parse.name.as_deref(), Some("s1"));
        assert_eq!(parse.text, "SELECT $1, ?");
        let cut = Statement::query(b"SELECT 'abc", true, false);
        assert_eq!((cut.text.as_str(), cut.truncated), ("SELECT 'abc", true));
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
        let record = Record::now(
            42,
            ClientId(7),
            Event::Query(Statement::query(b"SELECT 1\0", false, false)),
        );
        let json: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(json["event"], "query");
        assert_eq!(json["session"], 7);
        assert_eq!(json["pid"], 42);
        assert_eq!(json["text"], "SELECT 1");
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
    }
}
