//! What a statement is, by its first keywords: something the engine answers itself
//! (transaction control, SET/SHOW, DEALLOCATE), something it refuses, or SQL for SQLite.

use crate::settings::STATEMENT_TIMEOUT;
use crate::sql::{self, Statement};

/// What the first keywords of a statement make it.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Empty,
    Begin,
    Commit,
    Rollback,
    /// SET, RESET, DISCARD: accepted and ignored, answered with this tag.
    Ignored(&'static str),
    /// SET or RESET of `statement_timeout`: the new value (`None`: the session's default),
    /// answered with the tag.
    SetTimeout {
        value: Option<String>,
        tag: &'static str,
    },
    /// DEALLOCATE of a named statement (`None`: ALL).
    Deallocate(Option<String>),
    Show(String),
    /// Something the embedded backend cannot do; the message says what.
    Unsupported(String),
    /// Given to SQLite.
    Sql,
}

impl Command {
    /// Classifies `statement` by its first keywords (and a catalog reference).
    pub fn of(statement: &Statement) -> Self {
        if let Some(catalog) = &statement.catalog {
            return Self::Unsupported(format!(
                "\"{catalog}\": PostgreSQL system catalogs and functions are not supported by \
                 the embedded SQLite backend (list tables with: SELECT name FROM sqlite_schema)"
            ));
        }
        match (statement.first.as_str(), statement.second.as_str()) {
            ("", _) => Self::Empty,
            ("begin" | "start", _) => Self::Begin,
            ("commit" | "end", _) => Self::Commit,
            ("rollback" | "abort", second) if second != "to" => Self::Rollback,
            ("set" | "reset", _) => Self::setting(statement),
            ("discard", "all") => Self::SetTimeout {
                value: None,
                tag: "DISCARD ALL",
            },
            ("discard", _) => Self::Ignored("DISCARD ALL"),
            ("deallocate", "prepare") => Self::deallocate(&statement.third),
            ("deallocate", name) => Self::deallocate(name),
            ("show", name) => Self::Show(name.to_owned()),
            (
                first @ ("copy" | "listen" | "notify" | "unlisten" | "lock" | "grant" | "revoke"
                | "prepare" | "execute" | "declare" | "fetch" | "move" | "truncate"
                | "comment" | "do" | "call"),
                _,
            ) => Self::Unsupported(format!(
                "{} is not supported by the embedded SQLite backend",
                first.to_ascii_uppercase()
            )),
            _ => Self::Sql,
        }
    }

    /// SET / RESET: only `statement_timeout` has an effect; the rest are accepted and ignored
    /// (drivers send them at connect time).
    fn setting(statement: &Statement) -> Self {
        let tag = if statement.first == "set" {
            "SET"
        } else {
            "RESET"
        };
        match sql::setting(&statement.sql) {
            Some((name, value))
                if name == STATEMENT_TIMEOUT || (tag == "RESET" && name == "all") =>
            {
                Self::SetTimeout { value, tag }
            }
            _ => Self::Ignored(tag),
        }
    }

    fn deallocate(name: &str) -> Self {
        match name {
            "all" => Self::Deallocate(None),
            name => Self::Deallocate(Some(name.to_owned())),
        }
    }

    /// Whether the command may run in an aborted transaction block.
    pub fn ends_failed_block(&self, statement: &Statement) -> bool {
        matches!(self, Self::Commit | Self::Rollback)
            || (statement.first == "rollback" && statement.second == "to")
    }

    /// The tag of COMMIT, and of ROLLBACK (which a failed block's COMMIT becomes).
    pub fn tag(&self) -> &'static str {
        match self {
            Command::Commit => "COMMIT",
            _ => "ROLLBACK",
        }
    }

    /// Whether a statement that produced no rows still has a result set (a SELECT matching
    /// nothing): those get a RowDescription too.
    pub fn returns_rows(&self, statement: &Statement) -> bool {
        *self == Command::Sql && matches!(statement.first.as_str(), "select" | "values" | "with")
    }
}
