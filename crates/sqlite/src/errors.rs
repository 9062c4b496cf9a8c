//! SQLite errors as PostgreSQL ErrorResponses with the SQLSTATE a PostgreSQL client expects.

use pgbastion_wire::{ErrorResponse, Severity, SqlState};
use rusqlite::ffi;

/// An ERROR-severity response.
pub fn error(code: SqlState, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(Severity::Error, code, message)
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
