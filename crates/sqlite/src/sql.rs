//! Just enough SQL lexing to serve PostgreSQL clients from SQLite: split a query string into
//! statements, rewrite PostgreSQL's `$n` placeholders to SQLite's `?n`, drop `::type` casts
//! (remembering the types they name), and note what the statement touches.
//!
//! This is not a parser. It knows quotes, comments and parentheses, which is what it takes
//! to find statement boundaries and the positions that give placeholders and result columns
//! a type.

use std::collections::HashMap;

use crate::types::oid_for_cast;

/// One statement of a query string, rewritten for SQLite.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Statement {
    /// The SQL to give SQLite: `$n` → `?n`, casts removed, no trailing `;`.
    pub sql: String,
    /// The first keyword, lowercase (`""` for an empty statement).
    pub first: String,
    /// The second keyword, lowercase.
    pub second: String,
    /// The third keyword, lowercase.
    pub third: String,
    /// Tables named after FROM, INTO, UPDATE, JOIN or TABLE (unquoted, as written).
    pub tables: Vec<String>,
    /// The statement names a PostgreSQL system catalog (`pg_catalog`, `information_schema`,
    /// a `pg_*` relation), which the embedded backend does not have.
    pub catalog: Option<String>,
    /// Placeholder number → type OID from a `$n::type` cast.
    pub param_casts: HashMap<usize, u32>,
    /// Placeholder number → the column it is compared with or inserted into.
    pub param_columns: HashMap<usize, String>,
    /// Result column index → type OID from a cast on a top-level select-list item.
    pub column_casts: HashMap<usize, u32>,
    /// The top-level select-list items as given to SQLite (casts removed), trimmed.
    pub select_items: Vec<String>,
}

impl Statement {
    /// Whether the statement is only whitespace and comments.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// The name PostgreSQL gives result column `index`, which SQLite calls `sqlite_name`.
    /// SQLite names an unaliased expression by its text, so a name that is the text of its
    /// select-list item is renamed after PostgreSQL's rules ([`column_name`]); aliases and
    /// columns keep theirs. When a `*` makes positions unknown, any item's text counts.
    pub fn column_name(&self, index: usize, sqlite_name: &str) -> String {
        let has_star = self
            .select_items
            .iter()
            .any(|item| item == "*" || item.ends_with(".*"));
        let unaliased = if has_star {
            self.select_items.iter().any(|item| item == sqlite_name)
        } else {
            self.select_items
                .get(index)
                .is_some_and(|item| item == sqlite_name)
        };
        if unaliased {
            column_name(sqlite_name)
        } else {
            sqlite_name.to_owned()
        }
    }
}

/// The name PostgreSQL gives an unaliased select-list item `expr` (its `FigureColname`): a
/// column reference is named by the column, a function call by the function (`count(*)` →
/// `count`), `CASE` is `case`, a cast by its operand; anything else is `?column?`.
pub fn column_name(expr: &str) -> String {
    let tokens: Vec<_> = Lexer { src: expr, pos: 0 }
        .filter_map(|(token, text)| token.map(|token| (token, text)))
        .collect();
    name_of(&tokens).unwrap_or_else(|| "?column?".to_owned())
}

fn name_of(tokens: &[(Token, &str)]) -> Option<String> {
    if let Some(inner) = enclosed(tokens) {
        return match inner.first() {
            Some((Token::Word(w), _)) if w == "select" => None,
            _ => name_of(inner),
        };
    }
    let name_len = qualified_name_len(tokens);
    let name = match name_len.checked_sub(1).and_then(|last| tokens.get(last)) {
        Some((Token::Word(word), _)) => word.as_str(),
        _ => return None,
    };
    match (&tokens[name_len..], name) {
        ([], "true" | "false") => Some("bool".to_owned()),
        ([], "null") => None,
        ([], _) => Some(name.to_owned()),
        (args, "cast") => enclosed(args).and_then(|inner| {
            let mut parts = inner.split(|(token, _)| matches!(token, Token::Word(w) if w == "as"));
            name_of(parts.next().unwrap_or_default())
        }),
        (args, _) if enclosed(args).is_some() => Some(name.to_owned()),
        (rest, "case") if matches!(rest.last(), Some((Token::Word(w), _)) if w == "end") => {
            Some("case".to_owned())
        }
        _ => None,
    }
}

/// How many leading tokens form a (possibly qualified) name: `word`, `schema.word`.
fn qualified_name_len(tokens: &[(Token, &str)]) -> usize {
    let mut len = 0;
    while matches!(tokens.get(len), Some((Token::Word(_), _))) {
        len += 1;
        match tokens.get(len) {
            Some((Token::Other, "."))
                if matches!(tokens.get(len + 1), Some((Token::Word(_), _))) =>
            {
                len += 1;
            }
            _ => break,
        }
    }
    len
}

/// The tokens inside `tokens` when it is one parenthesised group: `( ... )`.
fn enclosed<'t, 'a>(tokens: &'t [(Token, &'a str)]) -> Option<&'t [(Token, &'a str)]> {
    let (first, rest) = tokens.split_first()?;
    if first.0 != Token::Open {
        return None;
    }
    let mut depth = 1usize;
    for (i, (token, _)) in rest.iter().enumerate() {
        match token {
            Token::Open => depth += 1,
            Token::Close => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return (i + 1 == rest.len()).then(|| &rest[..i]);
        }
    }
    None
}

/// What a `SET`/`RESET` statement changes: the parameter (lowercase) and the value's text
/// (unquoted), `None` for `DEFAULT` and for `RESET`.
pub fn setting(sql: &str) -> Option<(String, Option<String>)> {
    let mut lexer = Lexer { src: sql, pos: 0 };
    let command = word(next_token(&mut lexer)?)?;
    let mut name = word(next_token(&mut lexer)?)?;
    match command.as_str() {
        "reset" => return Some((name, None)),
        "set" => {}
        _ => return None,
    }
    if matches!(name.as_str(), "session" | "local") {
        name = word(next_token(&mut lexer)?)?;
    }
    match next_token(&mut lexer)? {
        Token::Comparison => {}
        Token::Word(to) if to == "to" => {}
        _ => return None,
    }
    let value = sql[lexer.pos..].trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .map_or_else(|| value.to_owned(), |v| v.replace("''", "'"));
    let is_default = value.eq_ignore_ascii_case("default");
    Some((name, (!is_default).then_some(value)))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A keyword or identifier (quoted identifiers are unquoted).
    Word(String),
    Placeholder(usize),
    /// A dollar-quoted string's contents (rewritten as a standard SQL string).
    Literal(String),
    Cast,
    Comparison,
    Open,
    Close,
    Comma,
    Other,
}

/// Splits `sql` into statements, rewritten for SQLite. Empty statements are kept only when
/// the whole string is empty (so that an empty query gets EmptyQueryResponse).
pub fn split(sql: &str) -> Vec<Statement> {
    let lexer = Lexer { src: sql, pos: 0 };
    let mut statements = Vec::new();
    let mut current = Builder::default();
    for (token, text) in lexer {
        match token {
            Some(Token::Other) if text == ";" => {
                statements.push(std::mem::take(&mut current).finish());
            }
            Some(token) => current.push(token, text),
            None => current.sql.push_str(text),
        }
    }
    statements.push(current.finish());
    let all_empty = statements.iter().all(Statement::is_empty);
    statements.retain(|s| !s.is_empty());
    if all_empty {
        statements.push(Statement::default());
    }
    statements
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Iterator for Lexer<'a> {
    /// A token and its source text; `None` as the token for whitespace and comments.
    type Item = (Option<Token>, &'a str);

    fn next(&mut self) -> Option<(Option<Token>, &'a str)> {
        let rest = &self.src[self.pos..];
        let first = rest.chars().next()?;
        let (token, len) = match first {
            c if c.is_whitespace() => (None, span(rest, |c| c.is_whitespace())),
            '-' if rest.starts_with("--") => (None, rest.find('\n').unwrap_or(rest.len())),
            '/' if rest.starts_with("/*") => (None, rest.find("*/").map_or(rest.len(), |i| i + 2)),
            '\'' => (Some(Token::Other), quoted(rest, '\'')),
            '"' | '`' => {
                let len = quoted(rest, first);
                let inner = rest[1..len]
                    .trim_end_matches(first)
                    .replace(&format!("{first}{first}"), &first.to_string());
                (Some(Token::Word(inner)), len)
            }
            '[' => {
                let len = rest.find(']').map_or(rest.len(), |i| i + 1);
                (
                    Some(Token::Word(rest[1..len].trim_end_matches(']').to_owned())),
                    len,
                )
            }
            '$' if dollar_tag(rest).is_some() => {
                let tag = dollar_tag(rest).unwrap_or_default();
                let body_len = rest[tag.len()..]
                    .find(tag)
                    .unwrap_or(rest.len() - tag.len());
                let body = &rest[tag.len()..tag.len() + body_len];
                let len = (tag.len() * 2 + body_len).min(rest.len());
                (Some(Token::Literal(body.to_owned())), len)
            }
            '$' if rest[1..].starts_with(|c: char| c.is_ascii_digit()) => {
                let digits = span(&rest[1..], |c| c.is_ascii_digit());
                let n = rest[1..=digits].parse().unwrap_or(usize::MAX);
                (Some(Token::Placeholder(n)), 1 + digits)
            }
            ':' if rest.starts_with("::") => (Some(Token::Cast), 2),
            '(' => (Some(Token::Open), 1),
            ')' => (Some(Token::Close), 1),
            ',' => (Some(Token::Comma), 1),
            '<' | '>' | '!' | '=' => {
                let len = span(rest, |c| matches!(c, '<' | '>' | '!' | '='));
                (Some(Token::Comparison), len)
            }
            c if c.is_alphabetic() || c == '_' => {
                let len = span(rest, |c| c.is_alphanumeric() || c == '_' || c == '$');
                (Some(Token::Word(rest[..len].to_ascii_lowercase())), len)
            }
            c if c.is_ascii_digit() => (
                Some(Token::Other),
                span(rest, |c| c.is_ascii_alphanumeric() || c == '.'),
            ),
            c => (Some(Token::Other), c.len_utf8()),
        };
        let len = len.max(1).min(rest.len());
        self.pos += len;
        Some((token, &rest[..len]))
    }
}

/// The next token that is not whitespace or a comment.
fn next_token(lexer: &mut Lexer<'_>) -> Option<Token> {
    lexer.find_map(|(token, _)| token)
}

fn word(token: Token) -> Option<String> {
    match token {
        Token::Word(word) => Some(word),
        _ => None,
    }
}

/// The opening `$tag$` of a dollar-quoted string at the start of `s`.
fn dollar_tag(s: &str) -> Option<&str> {
    let inner = span(&s[1..], |c| c.is_alphanumeric() || c == '_');
    let candidate = s.get(..inner + 2)?;
    let starts_like_placeholder = s[1..].starts_with(|c: char| c.is_ascii_digit());
    (candidate.ends_with('$') && !starts_like_placeholder).then_some(candidate)
}

/// Bytes at the start of `s` whose chars satisfy `f`.
fn span(s: &str, f: impl Fn(char) -> bool) -> usize {
    s.find(|c| !f(c)).unwrap_or(s.len())
}

/// Length of a quoted token starting at `s[0] == quote`, doubled quotes escaping.
fn quoted(s: &str, quote: char) -> usize {
    let bytes = s.as_bytes();
    let q = quote as u8;
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i] == q {
            if bytes.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// Accumulates one statement's tokens and rewritten text.
#[derive(Default)]
struct Builder {
    sql: String,
    statement: Statement,
    tokens: Vec<Token>,
    depth: usize,
    /// Words since `::`: the cast's type name is being skipped.
    in_cast: Option<String>,
    /// The select list is open (`SELECT` seen, top-level `FROM` not yet).
    select_item: Option<usize>,
    /// Where the current select-list item starts in `sql`.
    item_start: usize,
    /// INSERT column list and the position in the current VALUES row.
    insert_columns: Vec<String>,
    insert_state: InsertState,
    /// A placeholder followed by a comparison: the next word is its column.
    pending_reverse: Option<usize>,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum InsertState {
    #[default]
    None,
    /// `INSERT INTO t` seen; a `(` opens the column list.
    Table,
    Columns,
    /// After the column list, before VALUES.
    AfterColumns,
    /// Inside `VALUES (...)`: the element index.
    Row(usize),
    BetweenRows,
}

impl Builder {
    fn push(&mut self, token: Token, text: &str) {
        if let Some(cast) = self.in_cast.take() {
            match self.continue_cast(cast, &token) {
                Some(done) => self.end_cast(&done),
                None => return,
            }
        }
        self.end_select_item(&token);
        match &token {
            Token::Placeholder(n) => {
                self.sql.push('?');
                self.sql.push_str(&n.to_string());
            }
            Token::Cast => {
                self.in_cast = Some(String::new());
                return;
            }
            Token::Literal(body) => {
                self.sql.push('\'');
                self.sql.push_str(&body.replace('\'', "''"));
                self.sql.push('\'');
            }
            _ => self.sql.push_str(text),
        }
        self.track(&token);
        self.start_select_item(&token);
        self.tokens.push(token);
    }

    /// Records the select-list item that `token` (not yet in `sql`) ends: a top-level comma
    /// or a keyword that closes the select list.
    fn end_select_item(&mut self, token: &Token) {
        if self.select_item.is_none() || self.depth > 0 {
            return;
        }
        match token {
            Token::Comma => self.push_select_item(),
            Token::Word(word)
                if matches!(
                    word.as_str(),
                    "from"
                        | "where"
                        | "group"
                        | "having"
                        | "window"
                        | "order"
                        | "limit"
                        | "offset"
                        | "union"
                        | "intersect"
                        | "except"
                        | "into"
                ) =>
            {
                self.push_select_item();
                self.select_item = None;
            }
            _ => {}
        }
    }

    fn push_select_item(&mut self) {
        let item = self.sql.get(self.item_start..).unwrap_or_default().trim();
        self.statement.select_items.push(item.to_owned());
    }

    /// Notes where the next select-list item starts: after `SELECT`, `DISTINCT`, `ALL` or a
    /// top-level comma.
    fn start_select_item(&mut self, token: &Token) {
        let starts = match token {
            Token::Comma => self.depth == 0,
            Token::Word(word) => {
                word == "select" && self.statement.first == "select" && self.tokens.is_empty()
                    || matches!(word.as_str(), "distinct" | "all")
                        && self
                            .sql
                            .get(self.item_start..)
                            .is_some_and(|item| item.trim().eq_ignore_ascii_case(word))
            }
            _ => false,
        };
        if starts && self.select_item.is_some() {
            self.item_start = self.sql.len();
        }
    }

    /// Extends the cast type name being skipped with `token`; returns the finished name when
    /// `token` is not part of it.
    fn continue_cast(&mut self, mut name: String, token: &Token) -> Option<String> {
        match token {
            Token::Word(w) if name.is_empty() || matches!(w.as_str(), "precision" | "varying") => {
                if !name.is_empty() {
                    name.push(' ');
                }
                name.push_str(w);
                self.in_cast = Some(name);
                None
            }
            Token::Open if !name.is_empty() && !name.contains('(') => {
                name.push('(');
                self.in_cast = Some(name);
                None
            }
            Token::Other | Token::Comma if name.contains('(') && !name.ends_with(')') => {
                self.in_cast = Some(name);
                None
            }
            Token::Close if name.contains('(') && !name.ends_with(')') => {
                name.push(')');
                self.in_cast = Some(name);
                None
            }
            _ => Some(name),
        }
    }

    /// Records what a finished cast `::name` applies to.
    fn end_cast(&mut self, name: &str) {
        let base = name.split('(').next().unwrap_or_default();
        let base = if base == "double precision" {
            "double"
        } else {
            base
        };
        let Some(oid) = oid_for_cast(base) else {
            return;
        };
        if let Some(Token::Placeholder(n)) = self.tokens.last() {
            self.statement.param_casts.insert(*n, oid);
        }
        if self.depth == 0 {
            if let Some(item) = self.select_item {
                self.statement.column_casts.insert(item, oid);
            }
        }
    }

    fn track(&mut self, token: &Token) {
        let previous = self.tokens.iter().rev().find(|t| **t != Token::Other);
        match token {
            Token::Word(word) => {
                if self.statement.first.is_empty() {
                    self.statement.first = word.clone();
                    if word == "select" {
                        self.select_item = Some(0);
                    }
                    if word == "insert" || word == "replace" {
                        self.insert_state = InsertState::Table;
                    }
                } else if self.statement.second.is_empty() {
                    self.statement.second = word.clone();
                } else if self.statement.third.is_empty() {
                    self.statement.third = word.clone();
                }
                if self.depth == 0 && word == "from" {
                    self.select_item = None;
                }
                if let Some(Token::Word(prev)) = previous {
                    if matches!(prev.as_str(), "from" | "into" | "update" | "join" | "table") {
                        self.statement.tables.push(word.clone());
                    }
                }
                if word == "values" && self.insert_state == InsertState::AfterColumns {
                    self.insert_state = InsertState::BetweenRows;
                }
                let is_catalog = word == "information_schema" || word.starts_with("pg_");
                if is_catalog && self.statement.catalog.is_none() {
                    self.statement.catalog = Some(word.clone());
                }
                if self.insert_state == InsertState::Columns {
                    self.insert_columns.push(word.clone());
                }
            }
            Token::Placeholder(n) => {
                if let (Some(Token::Comparison), Some(Token::Word(column))) = (
                    previous,
                    self.tokens
                        .iter()
                        .rev()
                        .filter(|t| **t != Token::Other)
                        .nth(1),
                ) {
                    self.statement
                        .param_columns
                        .entry(*n)
                        .or_insert_with(|| column.clone());
                }
                if let InsertState::Row(i) = self.insert_state {
                    if self.depth == 1 && matches!(previous, Some(Token::Open | Token::Comma)) {
                        if let Some(column) = self.insert_columns.get(i) {
                            self.statement
                                .param_columns
                                .entry(*n)
                                .or_insert_with(|| column.clone());
                        }
                    }
                }
            }
            Token::Open => {
                self.depth += 1;
                self.insert_state = match self.insert_state {
                    InsertState::Table if self.depth == 1 => InsertState::Columns,
                    InsertState::BetweenRows if self.depth == 1 => InsertState::Row(0),
                    other => other,
                };
            }
            Token::Close => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 {
                    self.insert_state = match self.insert_state {
                        InsertState::Columns => InsertState::AfterColumns,
                        InsertState::Row(_) => InsertState::BetweenRows,
                        other => other,
                    };
                }
            }
            Token::Comma => {
                if self.depth == 0 {
                    if let Some(item) = self.select_item.as_mut() {
                        *item += 1;
                    }
                }
                if let InsertState::Row(i) = self.insert_state {
                    if self.depth == 1 {
                        self.insert_state = InsertState::Row(i + 1);
                    }
                }
            }
            Token::Comparison => {
                // `$n = column`: the placeholder before the operator.
                if let Some(Token::Placeholder(n)) = previous {
                    self.pending_reverse = Some(*n);
                }
            }
            Token::Cast | Token::Other | Token::Literal(_) => {}
        }
        if let (Some(n), Token::Word(column)) = (self.pending_reverse, token) {
            if !matches!(previous, Some(Token::Placeholder(_))) {
                self.statement
                    .param_columns
                    .entry(n)
                    .or_insert_with(|| column.clone());
                self.pending_reverse = None;
            }
        }
    }

    fn finish(mut self) -> Statement {
        if let Some(cast) = self.in_cast.take() {
            self.end_cast(&cast);
        }
        if self.select_item.is_some() {
            self.push_select_item();
        }
        self.statement.sql = self.sql.trim().to_owned();
        self.statement
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{FLOAT8, INT4, INT8, TEXT};

    fn one(sql: &str) -> Statement {
        let mut statements = split(sql);
        assert_eq!(statements.len(), 1, "{statements:?}");
        statements.remove(0)
    }

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let statements = split("select ';' -- a;b\n; select \"x;y\" /* ; */ from t;; ");
        let sql: Vec<_> = statements.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(sql, ["select ';' -- a;b", "select \"x;y\" /* ; */ from t"]);
        assert_eq!(statements[1].tables, ["t"]);
    }

    #[test]
    fn an_empty_query_is_one_empty_statement() {
        for sql in ["", "  ", ";", "-- nothing\n;;"] {
            let statements = split(sql);
            assert_eq!(statements.len(), 1, "{sql:?}");
            assert!(statements[0].is_empty());
        }
    }

    #[test]
    fn placeholders_become_numbered_and_casts_are_recorded() {
        let s = one("SELECT $1::int8 + $2::double precision, name::text, $3::varchar(20) FROM t WHERE id = $4");
        assert_eq!(s.sql, "SELECT ?1 + ?2 , name, ?3 FROM t WHERE id = ?4");
        assert_eq!(s.param_casts[&1], INT8);
        assert_eq!(s.param_casts[&2], FLOAT8);
        assert_eq!(s.param_casts.get(&3), Some(&crate::types::VARCHAR));
        assert_eq!(s.column_casts[&1], TEXT);
        assert_eq!(
            s.column_casts[&0], FLOAT8,
            "the last top-level cast of an item wins"
        );
        assert_eq!(s.param_columns[&4], "id");
    }

    #[test]
    fn casts_inside_expressions_do_not_type_the_column() {
        let s = one("SELECT sum(x::int4), (count(*))::int4 AS n FROM t");
        assert_eq!(s.column_casts.get(&0), None);
        assert_eq!(s.column_casts[&1], INT4);
        assert_eq!(s.sql, "SELECT sum(x), (count(*)) AS n FROM t");
    }

    #[test]
    fn insert_placeholders_map_to_their_columns() {
        let s =
            one("INSERT INTO items (name, qty, ok) VALUES ($1, $2, $3), ($4, 5, $5) RETURNING id");
        let columns: Vec<_> = (1..=5).map(|n| s.param_columns.get(&n).cloned()).collect();
        let expected = ["name", "qty", "ok", "name", "ok"].map(|c| Some(c.to_owned()));
        assert_eq!(columns, expected);
        assert_eq!(s.tables, ["items"]);
        assert_eq!((s.first.as_str(), s.second.as_str()), ("insert", "into"));
    }

    #[test]
    fn comparisons_map_placeholders_either_way_round() {
        let s = one("UPDATE t SET name = $1 WHERE t.id = $2 AND $3 < score");
        assert_eq!(s.param_columns[&1], "name");
        assert_eq!(s.param_columns[&2], "id");
        assert_eq!(s.param_columns[&3], "score");
    }

    #[test]
    fn dollar_quoted_strings_become_standard_strings() {
        let s = one("SELECT $$it's$$, $tag$a;b$tag$");
        assert_eq!(s.sql, "SELECT 'it''s', 'a;b'");
    }

    #[test]
    fn catalog_references_are_noticed() {
        assert_eq!(
            one("SELECT c.relname FROM pg_catalog.pg_class c")
                .catalog
                .as_deref(),
            Some("pg_catalog")
        );
        assert_eq!(
            one("select * from information_schema.tables")
                .catalog
                .as_deref(),
            Some("information_schema")
        );
        assert_eq!(one("select 'pg_class'").catalog, None);
    }

    #[test]
    fn select_items_are_recorded_as_sqlite_names_them() {
        let s = one("SELECT DISTINCT count(*), t.a AS n, sum(x::int4)::int8, (SELECT 1, 2) FROM t WHERE a, b");
        assert_eq!(
            s.select_items,
            ["count(*)", "t.a AS n", "sum(x)", "(SELECT 1, 2)"]
        );
        assert_eq!(one("SELECT 1 UNION SELECT 2").select_items, ["1"]);
        assert_eq!(one("SELECT $1").select_items, ["?1"]);
        assert!(one("INSERT INTO t VALUES (1)").select_items.is_empty());
    }

    #[test]
    fn unaliased_columns_get_postgres_names() {
        let cases = [
            ("count(*)", "count"),
            ("COUNT( * )", "count"),
            ("pg_catalog.lower(name)", "lower"),
            ("coalesce(a, b)", "coalesce"),
            ("((max(a)))", "max"),
            ("t.a", "a"),
            ("\"Mixed\"", "Mixed"),
            ("CAST(x AS integer)", "x"),
            ("CASE WHEN a THEN 1 END", "case"),
            ("current_date", "current_date"),
            ("true", "bool"),
            ("null", "?column?"),
            ("a + b", "?column?"),
            ("count(*) + 1", "?column?"),
            ("f(a) || g(b)", "?column?"),
            ("'text'", "?column?"),
            ("(SELECT 1)", "?column?"),
            ("?1", "?column?"),
        ];
        for (expr, name) in cases {
            assert_eq!(column_name(expr), name, "{expr}");
        }
    }

    #[test]
    fn set_and_reset_name_their_parameter_and_value() {
        let cases = [
            (
                "SET statement_timeout = 200",
                Some(("statement_timeout", Some("200"))),
            ),
            (
                "set session statement_timeout to '1s'",
                Some(("statement_timeout", Some("1s"))),
            ),
            (
                "SET LOCAL statement_timeout TO DEFAULT",
                Some(("statement_timeout", None)),
            ),
            (
                "SET statement_timeout=5",
                Some(("statement_timeout", Some("5"))),
            ),
            ("RESET statement_timeout", Some(("statement_timeout", None))),
            ("RESET ALL", Some(("all", None))),
            ("SET TIME ZONE 'UTC'", None),
            ("SELECT 1", None),
        ];
        for (sql, expected) in cases {
            let found = setting(sql);
            let found = found
                .as_ref()
                .map(|(name, value)| (name.as_str(), value.as_deref()));
            assert_eq!(found, expected, "{sql}");
        }
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        for sql in [
            "'abc",
            "\"abc",
            "/* abc",
            "$1::",
            "$$abc",
            "[abc",
            "x::varchar(",
            "$",
            "::",
        ] {
            let _ = split(sql);
        }
    }
}
