//! The synchronous core of one client session: PostgreSQL messages in, PostgreSQL messages
//! out, SQLite underneath. It owns the connection, the prepared statements and the portals,
//! and emulates PostgreSQL's transaction-block rules (an error inside BEGIN … COMMIT aborts
//! the block until ROLLBACK) so that ReadyForQuery reports what a PostgreSQL client expects.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgbastion_wire::{
    BackendMessage, DataRow, ErrorResponse, FieldDescription, FrontendMessage, FrontendTag,
    Severity, SqlState, Target, TransactionStatus,
};
use rusqlite::types::Value;
use rusqlite::Connection;

use crate::cancel::Interrupter;
use crate::command::Command;
use crate::errors::{error, from_sqlite};
use crate::settings::{self, STATEMENT_TIMEOUT};
use crate::sql::{self, Statement};
use crate::types::{self, TEXT};

/// A result column.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    oid: u32,
}

/// A parsed statement (named, or the unnamed one).
#[derive(Debug, Clone)]
struct Prepared {
    statement: Statement,
    command: Command,
    param_types: Vec<u32>,
    /// `None`: the statement returns no rows.
    columns: Option<Vec<Column>>,
}

/// A bound statement, and its rows once executed (Execute with a row limit resumes here).
#[derive(Debug)]
struct Portal {
    prepared: Prepared,
    params: Vec<Value>,
    result_formats: Vec<i16>,
    result: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    rows: VecDeque<Vec<Value>>,
    tag: String,
}

/// The outcome of running one statement.
struct Output {
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
    tag: String,
}

/// One client's session.
pub struct Engine {
    conn: Connection,
    parameters: Vec<(String, String)>,
    /// `statement_timeout` now, and what RESET returns to (the startup value).
    statement_timeout: Option<Duration>,
    default_timeout: Option<Duration>,
    interrupter: Arc<Interrupter>,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    /// An error happened inside a transaction block: PostgreSQL's "aborted" state.
    failed: bool,
    /// An extended-protocol message failed: skip everything until Sync.
    skipping: bool,
    out: BytesMut,
}

/// An error that ends the connection (the message is unusable or output cannot be encoded).
pub type Fatal = ErrorResponse;

impl Engine {
    /// A session on `conn`; `parameters` answer SHOW; `statement_timeout` is the client's
    /// startup value.
    pub fn new(
        conn: Connection,
        parameters: Vec<(String, String)>,
        statement_timeout: Option<Duration>,
    ) -> Self {
        let interrupter = Arc::new(Interrupter::new(conn.get_interrupt_handle()));
        Self {
            conn,
            parameters,
            statement_timeout,
            default_timeout: statement_timeout,
            interrupter,
            statements: HashMap::new(),
            portals: HashMap::new(),
            failed: false,
            skipping: false,
            out: BytesMut::new(),
        }
    }

    /// What stops this session's running statement from another thread.
    pub fn interrupter(&self) -> Arc<Interrupter> {
        Arc::clone(&self.interrupter)
    }

    /// The session's `statement_timeout` (`None`: no limit).
    pub fn statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout
    }

    /// Handles one client message and returns the bytes to send back.
    pub fn handle(&mut self, message: FrontendMessage) -> Result<BytesMut, Fatal> {
        let result = match message {
            FrontendMessage::Query(sql) => {
                self.skipping = false;
                self.simple_query(&sql)
            }
            // Like a simple query, the function-call protocol ends with ReadyForQuery.
            FrontendMessage::FunctionCall { .. } => {
                self.skipping = false;
                self.refuse(error(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "the function-call protocol is not supported by the embedded SQLite backend",
                ))
            }
            FrontendMessage::Sync => {
                self.skipping = false;
                if self.conn.is_autocommit() {
                    self.portals.clear();
                }
                self.ready_for_query()
            }
            FrontendMessage::Flush
            | FrontendMessage::CopyData(_)
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail(_) => Ok(()),
            _ if self.skipping => Ok(()),
            message => match self.extended(message) {
                Ok(()) => Ok(()),
                Err(Failure::Error(response)) => {
                    self.skipping = true;
                    self.fail(response)
                }
                Err(Failure::Fatal(fatal)) => Err(Failure::Fatal(fatal)),
            },
        };
        self.output(result)
    }

    /// Answers a message that could not be decoded (`tag` is its type) with `response`, as
    /// PostgreSQL does for a well-framed but malformed message: an ERROR, then ReadyForQuery
    /// for Query, FunctionCall and Sync, else skipping to the next Sync.
    pub fn reject(&mut self, tag: FrontendTag, response: ErrorResponse) -> Result<BytesMut, Fatal> {
        let result = match tag {
            FrontendTag::Query | FrontendTag::FunctionCall | FrontendTag::Sync => {
                self.skipping = false;
                self.refuse(response)
            }
            _ if self.skipping => Ok(()),
            _ => {
                self.skipping = true;
                self.fail(response)
            }
        };
        self.output(result)
    }

    fn output(&mut self, result: Result<(), Failure>) -> Result<BytesMut, Fatal> {
        match result {
            Ok(()) => Ok(self.out.split()),
            Err(Failure::Fatal(fatal) | Failure::Error(fatal)) => Err(fatal),
        }
    }

    /// Sends `response` and ReadyForQuery.
    fn refuse(&mut self, response: ErrorResponse) -> Result<(), Failure> {
        self.fail(response)?;
        self.ready_for_query()
    }

    fn simple_query(&mut self, sql: &str) -> Result<(), Failure> {
        for statement in sql::split(sql) {
            let command = Command::of(&statement);
            if command == Command::Empty {
                self.send(&BackendMessage::EmptyQueryResponse)?;
                continue;
            }
            match self.run(&statement, &command, &[]) {
                Ok(output) => {
                    if !output.columns.is_empty() || command.returns_rows(&statement) {
                        let columns = infer_columns(output.columns, &output.rows);
                        self.send_row_description(&columns, &[])?;
                        self.send_rows(&columns, output.rows, &[])?;
                    }
                    self.send(&BackendMessage::CommandComplete { tag: output.tag })?;
                }
                Err(Failure::Error(response)) => {
                    self.fail(response)?;
                    break;
                }
                Err(fatal) => return Err(fatal),
            }
        }
        self.ready_for_query()
    }

    /// Sends `response` and, inside a transaction block, aborts the block.
    fn fail(&mut self, response: ErrorResponse) -> Result<(), Failure> {
        if !self.conn.is_autocommit() {
            self.failed = true;
        }
        let response = match (response.sqlstate(), self.interrupter.reason()) {
            // SQLite says "interrupted"; PostgreSQL says why.
            (Some(SqlState::QUERY_CANCELED), Some(reason)) => {
                error(SqlState::QUERY_CANCELED, reason.message())
            }
            _ => response,
        };
        self.send(&BackendMessage::ErrorResponse(response))
    }

    fn extended(&mut self, message: FrontendMessage) -> Result<(), Failure> {
        match message {
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            } => {
                if !name.is_empty() && self.statements.contains_key(&name) {
                    return Err(error(
                        SqlState::DUPLICATE_PREPARED_STATEMENT,
                        format!("prepared statement \"{name}\" already exists"),
                    )
                    .into());
                }
                let prepared = self.prepare(&query, &param_types)?;
                self.statements.insert(name, prepared);
                self.send(&BackendMessage::ParseComplete)
            }
            FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            } => {
                let prepared = self.statement(&statement)?.clone();
                let params = decode_params(&prepared.param_types, &param_formats, &params)?;
                self.portals.insert(
                    portal,
                    Portal {
                        prepared,
                        params,
                        result_formats,
                        result: None,
                    },
                );
                self.send(&BackendMessage::BindComplete)
            }
            FrontendMessage::Describe { target, name } => self.describe(target, &name),
            FrontendMessage::Execute { portal, max_rows } => self.execute(&portal, max_rows),
            FrontendMessage::Close { target, name } => {
                match target {
                    Target::Statement => self.statements.remove(&name).map(drop),
                    Target::Portal => self.portals.remove(&name).map(drop),
                };
                self.send(&BackendMessage::CloseComplete)
            }
            other => Err(Failure::Fatal(error(
                SqlState::PROTOCOL_VIOLATION,
                format!("unexpected {:?} message", other.tag()),
            ))),
        }
    }

    fn statement(&self, name: &str) -> Result<&Prepared, Failure> {
        self.statements.get(name).ok_or_else(|| {
            error(
                SqlState::INVALID_SQL_STATEMENT_NAME,
                format!("prepared statement \"{name}\" does not exist"),
            )
            .into()
        })
    }

    /// Parses `query` (one statement) and works out its parameter and result types.
    fn prepare(&self, query: &str, given_types: &[u32]) -> Result<Prepared, Failure> {
        let mut statements = sql::split(query);
        if statements.len() > 1 {
            return Err(error(
                SqlState::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            )
            .into());
        }
        let statement = statements.pop().unwrap_or_default();
        let command = Command::of(&statement);
        let (param_count, columns) = match &command {
            Command::Sql => {
                let stmt = self.conn.prepare(&statement.sql).map_err(sqlite)?;
                let columns = columns_of(&stmt, &statement, TEXT);
                (
                    stmt.parameter_count(),
                    (!columns.is_empty()).then_some(columns),
                )
            }
            Command::Show(name) => (0, Some(vec![show_column(name)])),
            _ => (0, None),
        };
        let param_types = (1..=param_count.max(given_types.len()))
            .map(|n| {
                given_types
                    .get(n - 1)
                    .copied()
                    .filter(|oid| *oid != 0)
                    .or_else(|| statement.param_casts.get(&n).copied())
                    .or_else(|| self.column_type(&statement, n))
                    .unwrap_or(TEXT)
            })
            .collect();
        Ok(Prepared {
            statement,
            command,
            param_types,
            columns,
        })
    }

    /// The declared type of the column placeholder `n` is compared with or inserted into.
    fn column_type(&self, statement: &Statement, n: usize) -> Option<u32> {
        let column = statement.param_columns.get(&n)?;
        statement.tables.iter().find_map(|table| {
            self.conn
                .query_row(
                    "SELECT type FROM pragma_table_info(?1) WHERE lower(name) = lower(?2)",
                    [table, column],
                    |row| row.get::<_, String>(0),
                )
                .ok()
                .map(|decl| types::oid_for_declared(&decl))
        })
    }

    fn describe(&mut self, target: Target, name: &str) -> Result<(), Failure> {
        match target {
            Target::Statement => {
                let prepared = self.statement(name)?.clone();
                self.send(&BackendMessage::ParameterDescription {
                    types: prepared.param_types.clone(),
                })?;
                match &prepared.columns {
                    Some(columns) => self.send_row_description(columns, &[]),
                    None => self.send(&BackendMessage::NoData),
                }
            }
            Target::Portal => {
                let portal = self.portal(name)?;
                let (columns, formats) = (
                    portal.prepared.columns.clone(),
                    portal.result_formats.clone(),
                );
                match columns {
                    Some(columns) => self.send_row_description(&columns, &formats),
                    None => self.send(&BackendMessage::NoData),
                }
            }
        }
    }

    fn portal(&mut self, name: &str) -> Result<&mut Portal, Failure> {
        self.portals.get_mut(name).ok_or_else(|| {
            error(
                SqlState::INVALID_CURSOR_NAME,
                format!("portal \"{name}\" does not exist"),
            )
            .into()
        })
    }

    fn execute(&mut self, name: &str, max_rows: i32) -> Result<(), Failure> {
        let portal = self.portal(name)?;
        if portal.prepared.command == Command::Empty {
            return self.send(&BackendMessage::EmptyQueryResponse);
        }
        if portal.result.is_none() {
            let (prepared, params) = (portal.prepared.clone(), portal.params.clone());
            let output = self.run(&prepared.statement, &prepared.command, &params)?;
            self.portal(name)?.result = Some(Pending {
                rows: output.rows.into(),
                tag: output.tag,
            });
        }
        let portal = self.portal(name)?;
        let columns = portal.prepared.columns.clone().unwrap_or_default();
        let formats = portal.result_formats.clone();
        let Some(pending) = portal.result.as_mut() else {
            return Ok(());
        };
        let take = match usize::try_from(max_rows) {
            Ok(limit) if limit > 0 => limit.min(pending.rows.len()),
            _ => pending.rows.len(),
        };
        let rows: Vec<_> = pending.rows.drain(..take).collect();
        let done = pending.rows.is_empty();
        let tag = pending.tag.clone();
        self.send_rows(&columns, rows, &formats)?;
        if done {
            self.send(&BackendMessage::CommandComplete { tag })
        } else {
            self.send(&BackendMessage::PortalSuspended)
        }
    }

    /// Runs one statement with PostgreSQL's transaction-block rules.
    fn run(
        &mut self,
        statement: &Statement,
        command: &Command,
        params: &[Value],
    ) -> Result<Output, Failure> {
        if self.failed && !command.ends_failed_block(statement) {
            return Err(error(
                SqlState::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            )
            .into());
        }
        let in_block = !self.conn.is_autocommit();
        let tag = match command {
            Command::Empty => String::new(),
            Command::Begin if in_block => {
                self.warn(
                    SqlState::ACTIVE_SQL_TRANSACTION,
                    "there is already a transaction in progress",
                )?;
                "BEGIN".to_owned()
            }
            Command::Begin => self.batch("BEGIN", "BEGIN")?,
            Command::Commit | Command::Rollback if !in_block => {
                self.warn(
                    SqlState::NO_ACTIVE_SQL_TRANSACTION,
                    "there is no transaction in progress",
                )?;
                command.tag().to_owned()
            }
            Command::Commit if self.failed => {
                self.failed = false;
                self.batch("ROLLBACK", "ROLLBACK")?
            }
            Command::Commit | Command::Rollback => {
                let tag = command.tag();
                self.failed = false;
                self.batch(tag, tag)?
            }
            Command::Ignored(tag) => (*tag).to_owned(),
            Command::SetTimeout { value, tag } => self.set_timeout(value.as_deref(), tag)?,
            Command::Deallocate(name) => self.deallocate(name.as_deref())?,
            Command::Show(name) => {
                let value = self.show(name)?;
                return Ok(Output {
                    columns: vec![show_column(name)],
                    rows: vec![vec![Value::Text(value)]],
                    tag: "SHOW".to_owned(),
                });
            }
            Command::Unsupported(message) => {
                return Err(error(SqlState::FEATURE_NOT_SUPPORTED, message.clone()).into())
            }
            Command::Sql => return self.run_sql(statement, params),
        };
        Ok(Output {
            columns: Vec::new(),
            rows: Vec::new(),
            tag,
        })
    }

    fn batch(&mut self, sql: &str, tag: &str) -> Result<String, Failure> {
        self.conn.execute_batch(sql).map_err(sqlite)?;
        Ok(tag.to_owned())
    }

    fn run_sql(&mut self, statement: &Statement, params: &[Value]) -> Result<Output, Failure> {
        let mut stmt = self.conn.prepare_cached(&statement.sql).map_err(sqlite)?;
        let expected = stmt.parameter_count();
        if params.len() != expected {
            return Err(error(
                SqlState::PROTOCOL_VIOLATION,
                format!(
                    "bind message supplies {} parameters, but prepared statement requires {expected}",
                    params.len()
                ),
            )
            .into());
        }
        for (i, value) in params.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, value).map_err(sqlite)?;
        }
        let columns = columns_of(&stmt, statement, 0);
        let width = columns.len();
        let mut rows = Vec::new();
        let mut cursor = stmt.raw_query();
        while let Some(row) = cursor.next().map_err(sqlite)? {
            let values = (0..width)
                .map(|i| row.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(sqlite)?;
            rows.push(values);
        }
        drop(cursor);
        drop(stmt);
        let changes = self.conn.changes();
        let affected = if width > 0 {
            rows.len() as u64
        } else {
            changes
        };
        let tag = command_tag(statement, affected, width > 0);
        Ok(Output { columns, rows, tag })
    }

    fn set_timeout(&mut self, value: Option<&str>, tag: &str) -> Result<String, Failure> {
        self.statement_timeout = match value {
            Some(value) => settings::parse_timeout(value)
                .map_err(|e| error(SqlState::INVALID_PARAMETER_VALUE, e.to_string()))?,
            None => self.default_timeout,
        };
        Ok(tag.to_owned())
    }

    /// DEALLOCATE: statements prepared with Parse and with PREPARE share one namespace in
    /// PostgreSQL, and drivers (psycopg) deallocate their protocol-level statements by SQL.
    fn deallocate(&mut self, name: Option<&str>) -> Result<String, Failure> {
        let Some(name) = name else {
            // The unnamed statement is not a prepared statement DEALLOCATE ALL removes.
            self.statements.retain(|name, _| name.is_empty());
            return Ok("DEALLOCATE ALL".to_owned());
        };
        if name.is_empty() || self.statements.remove(name).is_none() {
            return Err(error(
                SqlState::INVALID_SQL_STATEMENT_NAME,
                format!("prepared statement \"{name}\" does not exist"),
            )
            .into());
        }
        Ok("DEALLOCATE".to_owned())
    }

    fn show(&self, name: &str) -> Result<String, Failure> {
        if name == "transaction_isolation" {
            return Ok("serializable".to_owned());
        }
        if name == STATEMENT_TIMEOUT {
            return Ok(settings::format_timeout(self.statement_timeout));
        }
        self.parameters
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
            .ok_or_else(|| {
                error(
                    SqlState::UNDEFINED_OBJECT,
                    format!("unrecognized configuration parameter \"{name}\""),
                )
                .into()
            })
    }

    fn warn(&mut self, code: SqlState, message: &str) -> Result<(), Failure> {
        self.send(&BackendMessage::NoticeResponse(ErrorResponse::new(
            Severity::Warning,
            code,
            message,
        )))
    }

    fn ready_for_query(&mut self) -> Result<(), Failure> {
        let status = if self.conn.is_autocommit() {
            self.failed = false;
            TransactionStatus::Idle
        } else if self.failed {
            TransactionStatus::Failed
        } else {
            TransactionStatus::InTransaction
        };
        self.send(&BackendMessage::ReadyForQuery(status))
    }

    fn send_row_description(&mut self, columns: &[Column], formats: &[i16]) -> Result<(), Failure> {
        let fields = columns
            .iter()
            .enumerate()
            .map(|(i, column)| FieldDescription {
                name: column.name.clone(),
                table_oid: 0,
                column_id: 0,
                type_oid: column.oid,
                type_size: types::type_size(column.oid),
                type_modifier: -1,
                format: format_of(formats, i),
            })
            .collect();
        self.send(&BackendMessage::RowDescription { fields })
    }

    fn send_rows(
        &mut self,
        columns: &[Column],
        rows: Vec<Vec<Value>>,
        formats: &[i16],
    ) -> Result<(), Failure> {
        for row in rows {
            let encoded = row
                .iter()
                .enumerate()
                .map(|(i, value)| {
                    let oid = columns.get(i).map_or(TEXT, |c| c.oid);
                    types::encode(value, oid, format_of(formats, i) == 1).map_err(|e| {
                        Failure::Error(error(SqlState::INVALID_TEXT_REPRESENTATION, e.to_string()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let row = DataRow::new(encoded.iter().map(Option::as_deref)).map_err(encode_failure)?;
            self.send(&BackendMessage::DataRow(row))?;
        }
        Ok(())
    }

    fn send(&mut self, message: &BackendMessage) -> Result<(), Failure> {
        message.encode(&mut self.out).map_err(encode_failure)
    }
}

/// Why a message could not be handled.
#[derive(Debug)]
enum Failure {
    /// Reported to the client; the session goes on.
    Error(ErrorResponse),
    /// Ends the connection.
    Fatal(ErrorResponse),
}

impl From<ErrorResponse> for Failure {
    fn from(response: ErrorResponse) -> Self {
        Self::Error(response)
    }
}

fn sqlite(err: rusqlite::Error) -> Failure {
    Failure::Error(from_sqlite(&err))
}

fn encode_failure(err: pgbastion_wire::EncodeError) -> Failure {
    Failure::Fatal(error(SqlState::PROGRAM_LIMIT_EXCEEDED, err.to_string()))
}

/// Result columns: a cast in the select list, else the declared type, else `unknown`.
fn columns_of(stmt: &rusqlite::Statement<'_>, statement: &Statement, unknown: u32) -> Vec<Column> {
    stmt.columns()
        .iter()
        .enumerate()
        .map(|(i, column)| Column {
            name: statement.column_name(i, column.name()),
            oid: statement
                .column_casts
                .get(&i)
                .copied()
                .or_else(|| column.decl_type().map(types::oid_for_declared))
                .unwrap_or(unknown),
        })
        .collect()
}

fn show_column(name: &str) -> Column {
    Column {
        name: name.to_owned(),
        oid: TEXT,
    }
}

/// Result column types for the simple protocol, where rows are known before the
/// description: the declared type or cast, else the type of the first non-NULL value.
fn infer_columns(columns: Vec<Column>, rows: &[Vec<Value>]) -> Vec<Column> {
    columns
        .into_iter()
        .enumerate()
        .map(|(i, column)| {
            if column.oid != 0 {
                return column;
            }
            let oid = rows
                .iter()
                .filter_map(|row| row.get(i))
                .find(|value| **value != Value::Null)
                .map_or(TEXT, types::oid_for_value);
            Column { oid, ..column }
        })
        .collect()
}

/// PostgreSQL's CommandComplete tag for a statement that affected or returned `count` rows.
fn command_tag(statement: &Statement, count: u64, returned_rows: bool) -> String {
    match statement.first.as_str() {
        "insert" | "replace" => format!("INSERT 0 {count}"),
        "update" => format!("UPDATE {count}"),
        "delete" => format!("DELETE {count}"),
        _ if returned_rows => format!("SELECT {count}"),
        "select" | "values" | "with" => format!("SELECT {count}"),
        first @ ("create" | "drop" | "alter") => {
            let object = statement
                .sql
                .split_whitespace()
                .skip(1)
                .map(str::to_ascii_uppercase)
                .find(|word| {
                    matches!(
                        word.as_str(),
                        "TABLE" | "INDEX" | "VIEW" | "TRIGGER" | "SCHEMA"
                    )
                })
                .unwrap_or_default();
            format!("{} {object}", first.to_ascii_uppercase())
                .trim_end()
                .to_owned()
        }
        first => first.to_ascii_uppercase(),
    }
}

fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats {
        [] => 0,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(0),
    }
}

fn decode_params(
    types: &[u32],
    formats: &[i16],
    params: &[Option<bytes::Bytes>],
) -> Result<Vec<Value>, Failure> {
    if params.len() != types.len() {
        return Err(error(
            SqlState::PROTOCOL_VIOLATION,
            format!(
                "bind message supplies {} parameters, but prepared statement requires {}",
                params.len(),
                types.len()
            ),
        )
        .into());
    }
    params
        .iter()
        .enumerate()
        .map(|(i, param)| {
            types::decode_param(param.as_deref(), types[i], format_of(formats, i) == 1)
                .map_err(|e| error(SqlState::INVALID_TEXT_REPRESENTATION, e.to_string()).into())
        })
        .collect()
}
