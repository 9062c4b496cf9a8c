//! SQLSTATE codes (PostgreSQL's src/backend/utils/errcodes.txt), as a typed value.

use std::fmt;

/// A five-character SQLSTATE code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

macro_rules! sqlstates {
    ($($(#[$doc:meta])* $name:ident = $code:literal;)*) => {
        impl SqlState {
            $($(#[$doc])* pub const $name: SqlState = SqlState(*$code);)*
        }

        #[cfg(test)]
        pub(crate) const ALL: &[(SqlState, &str)] = &[$((SqlState::$name, stringify!($name)),)*];
    };
}

sqlstates! {
    /// 00000
    SUCCESSFUL_COMPLETION = b"00000";
    /// 01000
    WARNING = b"01000";
    /// 08000
    CONNECTION_EXCEPTION = b"08000";
    /// 08003
    CONNECTION_DOES_NOT_EXIST = b"08003";
    /// 08006
    CONNECTION_FAILURE = b"08006";
    /// 08001
    SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION = b"08001";
    /// 08004
    SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION = b"08004";
    /// 08P01
    PROTOCOL_VIOLATION = b"08P01";
    /// 0A000
    FEATURE_NOT_SUPPORTED = b"0A000";
    /// 22000
    DATA_EXCEPTION = b"22000";
    /// 22023
    INVALID_PARAMETER_VALUE = b"22023";
    /// 22P02
    INVALID_TEXT_REPRESENTATION = b"22P02";
    /// 22012
    DIVISION_BY_ZERO = b"22012";
    /// 23000
    INTEGRITY_CONSTRAINT_VIOLATION = b"23000";
    /// 23502
    NOT_NULL_VIOLATION = b"23502";
    /// 23503
    FOREIGN_KEY_VIOLATION = b"23503";
    /// 23505
    UNIQUE_VIOLATION = b"23505";
    /// 23514
    CHECK_VIOLATION = b"23514";
    /// 25001
    ACTIVE_SQL_TRANSACTION = b"25001";
    /// 25P01
    NO_ACTIVE_SQL_TRANSACTION = b"25P01";
    /// 25006
    READ_ONLY_SQL_TRANSACTION = b"25006";
    /// 25P02
    IN_FAILED_SQL_TRANSACTION = b"25P02";
    /// 26000
    INVALID_SQL_STATEMENT_NAME = b"26000";
    /// 28000
    INVALID_AUTHORIZATION_SPECIFICATION = b"28000";
    /// 28P01
    INVALID_PASSWORD = b"28P01";
    /// 34000
    INVALID_CURSOR_NAME = b"34000";
    /// 3D000
    INVALID_CATALOG_NAME = b"3D000";
    /// 3B001
    INVALID_SAVEPOINT_SPECIFICATION = b"3B001";
    /// 40001
    SERIALIZATION_FAILURE = b"40001";
    /// 42000
    SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION = b"42000";
    /// 42501
    INSUFFICIENT_PRIVILEGE = b"42501";
    /// 42601
    SYNTAX_ERROR = b"42601";
    /// 42703
    UNDEFINED_COLUMN = b"42703";
    /// 42704
    UNDEFINED_OBJECT = b"42704";
    /// 42804
    DATATYPE_MISMATCH = b"42804";
    /// 42883
    UNDEFINED_FUNCTION = b"42883";
    /// 42P01
    UNDEFINED_TABLE = b"42P01";
    /// 42P05
    DUPLICATE_PREPARED_STATEMENT = b"42P05";
    /// 42P07
    DUPLICATE_TABLE = b"42P07";
    /// 53000
    INSUFFICIENT_RESOURCES = b"53000";
    /// 53200
    OUT_OF_MEMORY = b"53200";
    /// 53300
    TOO_MANY_CONNECTIONS = b"53300";
    /// 54000
    PROGRAM_LIMIT_EXCEEDED = b"54000";
    /// 55000
    OBJECT_NOT_IN_PREREQUISITE_STATE = b"55000";
    /// 55P03
    LOCK_NOT_AVAILABLE = b"55P03";
    /// 57000
    OPERATOR_INTERVENTION = b"57000";
    /// 57014
    QUERY_CANCELED = b"57014";
    /// 57P01
    ADMIN_SHUTDOWN = b"57P01";
    /// 57P02
    CRASH_SHUTDOWN = b"57P02";
    /// 57P03
    CANNOT_CONNECT_NOW = b"57P03";
    /// 57P05
    IDLE_SESSION_TIMEOUT = b"57P05";
    /// 58000
    SYSTEM_ERROR = b"58000";
    /// F0000
    CONFIG_FILE_ERROR = b"F0000";
    /// XX000
    INTERNAL_ERROR = b"XX000";
}

impl SqlState {
    /// Parses a code: exactly five ASCII digits or upper-case letters (the only characters
    /// PostgreSQL's `MAKE_SQLSTATE` can encode).
    pub fn from_code(code: &str) -> Option<Self> {
        let bytes: [u8; 5] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            .then_some(Self(bytes))
    }

    /// Parses a code from its five wire bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok().and_then(Self::from_code)
    }

    /// The five code bytes.
    pub fn as_bytes(&self) -> &[u8; 5] {
        &self.0
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII (the constants and `from_code`).
        std::str::from_utf8(&self.0).unwrap_or("XX000")
    }

    /// The two-character class (`08`, `28`, ...).
    pub fn class(&self) -> &str {
        &self.as_str()[..2]
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constant_is_a_valid_distinct_code() {
        let mut seen = std::collections::HashSet::new();
        for (state, name) in ALL {
            assert_eq!(SqlState::from_code(state.as_str()), Some(*state), "{name}");
            assert!(seen.insert(*state), "{name} duplicates another code");
        }
    }

    #[test]
    fn codes_parse_and_report_their_class() {
        assert_eq!(
            SqlState::from_code("08P01"),
            Some(SqlState::PROTOCOL_VIOLATION)
        );
        assert_eq!(SqlState::PROTOCOL_VIOLATION.class(), "08");
        assert_eq!(SqlState::from_code("08p01"), None);
        assert_eq!(SqlState::from_code("0800"), None);
        assert_eq!(SqlState::from_code("08P01x"), None);
        assert_eq!(
            SqlState::from_bytes(b"57P01"),
            Some(SqlState::ADMIN_SHUTDOWN)
        );
        assert_eq!(SqlState::INVALID_PASSWORD.to_string(), "28P01");
    }
}
