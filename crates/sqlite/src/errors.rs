//! SQLite errors as PostgreSQL ErrorResponses with the SQLSTATE a PostgreSQL client expects.

use pgbastion_wire::{DecodeError, ErrorResponse, Severity, SqlState};
use rusqlite::ffi;

/// An ERROR-severity response.
pub fn error(code: SqlState, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(Severity::Error, code, message)
}

/// The ERROR for a well-framed message whose contents could not be decoded (`body` is the
/// message body), as PostgreSQL reports it: `22021` for a string that is not UTF-8 (naming the
/// offending bytes), `08P01` for anything else.
pub fn malformed(body: &[u8], err: &DecodeError) -> ErrorResponse {
    match (err, std::str::from_utf8(body)) {
        (DecodeError::InvalidUtf8, Err(utf8)) => error(
            character_not_in_repertoire(),
            format!(
                "invalid byte sequence for encoding \"UTF8\": {}",
                invalid_sequence(&body[utf8.valid_up_to()..])
            ),
        ),
        _ => error(
            SqlState::PROTOCOL_VIOLATION,
            format!("invalid message format: {err}"),
        ),
    }
}

/// SQLSTATE 22021, which pgbastion_wire has no constant for.
fn character_not_in_repertoire() -> SqlState {
    SqlState::from_bytes(b"22021").unwrap_or(SqlState::DATA_EXCEPTION)
}

/// The bytes of the invalid sequence at the start of `bytes` as PostgreSQL prints them
/// (`0xc3 0x28`): as many as the first byte announces, up to the string's end.
fn invalid_sequence(bytes: &[u8]) -> String {
    let announced = match bytes.first() {
        Some(b) if b & 0xe0 == 0xc0 => 2,
        Some(b) if b & 0xf0 == 0xe0 => 3,
        Some(b) if b & 0xf8 == 0xf0 => 4,
        _ => 1,
    };
    bytes
        .iter()
        .take(announced)
        .take_while(|b| **b != 0)
        .map(|b| format!("0x{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ErrorResponse for an error SQLite reported.
pub fn from_sqlite(err: &rusqlite::Error) -> ErrorResponse {
    let (failure, message) = match err {
        rusqlite::Error::SqliteFailure(failure, Some(message)) => (Some(failure), message.clone()),
        rusqlite::Error::SqlInputError { error, msg, .. } => (Some(error), msg.clone()),
        rusqlite::Error::SqliteFailure(failure, None) => (Some(failure), failure.to_string()),
        other => (None, other.to_string()),
    };
    error(sqlstate(failure, &message), message)
}

fn sqlstate(failure: Option<&ffi::Error>, message: &str) -> SqlState {
    if let Some(failure) = failure {
        match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                return SqlState::UNIQUE_VIOLATION
            }
            ffi::SQLITE_CONSTRAINT_NOTNULL => return SqlState::NOT_NULL_VIOLATION,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => return SqlState::FOREIGN_KEY_VIOLATION,
            ffi::SQLITE_CONSTRAINT_CHECK => return SqlState::CHECK_VIOLATION,
            _ => {}
        }
        match failure.code {
            ffi::ErrorCode::ConstraintViolation => return SqlState::INTEGRITY_CONSTRAINT_VIOLATION,
            ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked => {
                return SqlState::LOCK_NOT_AVAILABLE
            }
            ffi::ErrorCode::ReadOnly => return SqlState::READ_ONLY_SQL_TRANSACTION,
            ffi::ErrorCode::TooBig => return SqlState::PROGRAM_LIMIT_EXCEEDED,
            ffi::ErrorCode::OutOfMemory => return SqlState::OUT_OF_MEMORY,
            ffi::ErrorCode::DiskFull | ffi::ErrorCode::SystemIoFailure => {
                return SqlState::SYSTEM_ERROR
            }
            ffi::ErrorCode::OperationInterrupted => return SqlState::QUERY_CANCELED,
            _ => {}
        }
    }
    let by_message: &[(&str, SqlState)] = &[
        ("no such table", SqlState::UNDEFINED_TABLE),
        ("no such column", SqlState::UNDEFINED_COLUMN),
        ("no such function", SqlState::UNDEFINED_FUNCTION),
        ("no such index", SqlState::UNDEFINED_OBJECT),
        (
            "no such savepoint",
            SqlState::INVALID_SAVEPOINT_SPECIFICATION,
        ),
        ("already exists", SqlState::DUPLICATE_TABLE),
        ("syntax error", SqlState::SYNTAX_ERROR),
        ("incomplete input", SqlState::SYNTAX_ERROR),
        ("unrecognized token", SqlState::SYNTAX_ERROR),
        ("wrong number of arguments", SqlState::UNDEFINED_FUNCTION),
        ("datatype mismatch", SqlState::DATATYPE_MISMATCH),
        ("within a transaction", SqlState::ACTIVE_SQL_TRANSACTION),
        (
            "no transaction is active",
            SqlState::NO_ACTIVE_SQL_TRANSACTION,
        ),
    ];
    by_message
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map_or(SqlState::INTERNAL_ERROR, |(_, code)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn code_of(setup: &str, sql: &str) -> String {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(setup).unwrap();
        let err = conn.execute_batch(sql).unwrap_err();
        from_sqlite(&err).sqlstate().unwrap().to_string()
    }

    #[test]
    fn invalid_utf8_names_the_bytes_like_postgres() {
        let cases: [(&[u8], &str); 3] = [
            (b"SELECT '\xff'\0", "0xff"),
            (b"SELECT '\xc3\x28'\0", "0xc3 0x28"),
            (b"\xe2\x82\0", "0xe2 0x82"),
        ];
        for (body, bytes) in cases {
            let response = malformed(body, &DecodeError::InvalidUtf8);
            assert_eq!(response.sqlstate().unwrap().to_string(), "22021");
            assert_eq!(
                response.message(),
                format!("invalid byte sequence for encoding \"UTF8\": {bytes}")
            );
        }
        let response = malformed(b"", &DecodeError::InvalidCount { what: "x" });
        assert_eq!(response.sqlstate().unwrap().to_string(), "08P01");
    }

    #[test]
    fn sqlite_errors_get_postgres_sqlstates() {
        let setup = "PRAGMA foreign_keys = ON;
            CREATE TABLE p (id INTEGER PRIMARY KEY);
            CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                            n INTEGER CHECK (n > 0), p INTEGER REFERENCES p(id));
            INSERT INTO t VALUES (1, 'a', 1, NULL);";
        let cases = [
            ("SELEC 1", "42601"),
            ("SELECT 1 +", "42601"),
            ("SELECT * FROM missing", "42P01"),
            ("SELECT nope FROM t", "42703"),
            ("SELECT nope(1)", "42883"),
            ("CREATE TABLE t (x)", "42P07"),
            ("INSERT INTO t VALUES (1, 'b', 1, NULL)", "23505"),
            ("INSERT INTO t VALUES (2, 'a', 1, NULL)", "23505"),
            ("INSERT INTO t VALUES (2, NULL, 1, NULL)", "23502"),
            ("INSERT INTO t VALUES (2, 'b', 0, NULL)", "23514"),
            ("INSERT INTO t VALUES (2, 'b', 1, 99)", "23503"),
            ("COMMIT", "25P01"),
        ];
        for (sql, expected) in cases {
            assert_eq!(code_of(setup, sql), expected, "{sql}");
        }
    }
}
