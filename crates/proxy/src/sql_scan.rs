//! What the SQL text of a Query or Parse does to session state, for transaction pooling.
//!
//! In transaction pooling a client's consecutive transactions run on different backends, so a
//! statement that leaves state behind on its backend (a `LISTEN`, a prepared statement, a
//! temporary table, a session advisory lock, a parameter set for the session) must be seen
//! before it runs: the proxy then pins the client to its backend, tracks the parameter or
//! refuses the statement. [`scan`] is that look: a pure function over the text, linear in its
//! length, allocating only for the [`Effect`]s it returns.
//!
//! It lexes as PostgreSQL does (`--` and nested `/* */` comments, `'…'` strings with `''`,
//! `E'…'` strings with backslash escapes, `"quoted identifiers"`, `$tag$…$tag$` dollar quotes)
//! and splits statements on the `;` outside those, so a keyword inside a string, comment or
//! quoted identifier never counts. `'…'` strings follow `standard_conforming_strings = on`
//! (the default since PostgreSQL 9.1); a client that turned it off must be scanned with
//! [`scan_with`] and [`StringLiterals::BackslashEscapes`], else `\'` could hide a statement.
//!
//! It reports what the text asks for, whether or not the statement then succeeds, or its
//! transaction commits: acting only after success is the caller's part.
//!
//! What it sees: see [`Effect`]. What it cannot see, and so never reports:
//! - the bodies of `DO` blocks, functions and procedures (`CALL`, triggers, rules), and what an
//!   `EXECUTE` of a prepared statement runs (its `PREPARE` was reported already);
//! - other session state kept by functions: `currval`/`lastval` after `nextval`, `setseed`,
//!   extension state such as `dblink_connect`.
//!
//! Where it is unsure it errs towards reporting: a `set_config` whose arguments are not plain
//! literals; `pg_temp.` anywhere in a `CREATE` statement (a view over a temporary table is
//! temporary too); `EXPLAIN` without `ANALYZE` of a `CREATE TEMP TABLE … AS`; a statement
//! PostgreSQL would reject as a syntax error.

use std::ops::Range;

/// What a Query's or Parse's SQL text does to session state: see [`scan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// How many non-empty statements the text holds (`;;` and comments alone do not count).
    /// A simple Query may hold several; a Parse holds at most one.
    pub statements: usize,
    /// The effects in text order; within one statement, the statement's own effect comes
    /// before those of the functions it calls. An effect equal to the one before it is left
    /// out.
    pub effects: Vec<Effect>,
}

/// One thing a statement does to session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Leaves state on the backend that later transactions of the same client may rely on;
    /// `what` names it for logs and error messages: `LISTEN`, `PREPARE`, `LOAD`, `SET ROLE`,
    /// `SET SESSION AUTHORIZATION`, a WITH HOLD cursor, a temporary table (view, sequence,
    /// object), a session advisory lock, a parameter set by a `set_config` whose name is
    /// not a literal, a `SET` or `RESET` of a shape not recognised (unsure, so sticky).
    Sticky {
        /// What stays behind, e.g. `"a session advisory lock"`.
        what: &'static str,
    },
    /// `SET [SESSION] name …`, `RESET name` or `set_config('name', …, false)` of the
    /// parameter `name`, lower-cased (`SET TIME ZONE` is `timezone`, `SET NAMES`
    /// `client_encoding`, `SET SCHEMA` `search_path`, `SET XML OPTION` `xmloption`,
    /// `SET SESSION CHARACTERISTICS AS TRANSACTION …` the `default_transaction_*` it sets).
    /// Whether it can be replayed on another backend is the proxy's call. `SET LOCAL` is
    /// transaction-scoped and no effect; setting `role` or `session_authorization` is
    /// [`Effect::Sticky`].
    SetParameter {
        /// The parameter's name, lower-cased.
        name: String,
    },
    /// `RESET ALL`.
    ResetAll,
    /// `DEALLOCATE [PREPARE] name` (unquoted names lower-cased) or `DEALLOCATE [PREPARE] ALL`
    /// (`None`).
    Deallocate {
        /// The prepared statement, or `None` for all of them.
        name: Option<String>,
    },
    /// `DISCARD ALL | PLANS | TEMP | TEMPORARY | SEQUENCES`.
    Discard(Discard),
}

/// What a `DISCARD` statement drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// `DISCARD ALL`: the whole session state, prepared statements included.
    All,
    /// `DISCARD PLANS`: cached query plans.
    Plans,
    /// `DISCARD TEMP` / `DISCARD TEMPORARY`: temporary tables.
    Temp,
    /// `DISCARD SEQUENCES`: cached sequence values.
    Sequences,
}

/// How `'…'` string literals treat backslashes: the backend's `standard_conforming_strings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StringLiterals {
    /// `standard_conforming_strings = on`: a backslash is an ordinary character.
    #[default]
    Standard,
    /// `standard_conforming_strings = off`: a backslash escapes the next character.
    BackslashEscapes,
}

/// What `sql` does to session state, lexed with `standard_conforming_strings = on`.
pub fn scan(sql: &str) -> Scan {
    scan_with(sql, StringLiterals::Standard)
}

/// What `sql` does to session state, lexing `'…'` strings as `literals` says.
pub fn scan_with(sql: &str, literals: StringLiterals) -> Scan {
    let mut scan = Scan::default();
    let mut lexer = Lexer {
        sql,
        pos: 0,
        literals,
    };
    loop {
        let statement = Statement::new(lexer.clone());
        let mut rest = statement.clone();
        match rest.lexer.next() {
            None => return scan,
            Some(token) if token.kind == Kind::Semicolon => {}
            Some(_) => {
                scan.statements += 1;
                classify(statement, &mut scan);
                for _ in rest.by_ref() {}
            }
        }
        lexer = rest.lexer;
    }
}

impl Scan {
    fn push(&mut self, effect: Effect) {
        if self.effects.last() != Some(&effect) {
            self.effects.push(effect);
        }
    }
}

fn sticky(what: &'static str) -> Effect {
    Effect::Sticky { what }
}

fn parameter(name: &str) -> Effect {
    Effect::SetParameter { name: name.into() }
}

/// Setting `role` or `session_authorization` changes who the session is: no replay.
fn parameter_effect(name: String) -> Effect {
    match name.as_str() {
        "role" => sticky("SET ROLE"),
        "session_authorization" => sticky("SET SESSION AUTHORIZATION"),
        _ => Effect::SetParameter { name },
    }
}

/// `sql` with every literal replaced by `?`: strings of each kind (`'…'`, `E'…'`,
/// `$tag$…$tag$`; the prefix of `B'…'`, `X'…'`, `U&'…'` stays) and numbers (`42`, `1.5e-3`,
/// `0x1F`). Keywords, identifiers (quoted ones too, digits in them included), `$1`
/// parameters, comments and spacing are kept. For the query audit, where the values a
/// statement carries must not be written down; lexed with `standard_conforming_strings = on`.
pub fn redact_literals(sql: &str) -> String {
    redact(sql, true).0
}

/// For the query audit: `sql` with the string literals of its statements that can carry a
/// secret ([`is_sensitive`]: `CREATE`/`ALTER` `ROLE`, `USER` (and `USER MAPPING`), `GROUP`,
/// `SUBSCRIPTION`, `SERVER`) replaced by `?`, and with `all`, every literal of every
/// statement (as [`redact_literals`]); and whether a sensitive statement was seen.
pub fn redact(sql: &str, all: bool) -> (String, bool) {
    let (literals, sensitive) = literals(sql, all);
    (replace(sql, &literals), sensitive)
}

/// Where a lexer is after some bytes of SQL, followed byte by byte: for the end of a text
/// too long to keep whole (the query audit keeps its start and its end), whose middle
/// passes only once. [`LexState::redact_after`] then redacts the end as [`redact`] would the
/// whole. Linear, a few bytes of state (a dollar quote's tag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LexState {
    state: State,
    /// The byte before (in code, or inside a comment).
    prev: u8,
    /// The length of the word the last bytes belong to (0: not in a word).
    word: usize,
    /// That word's first bytes (enough for a keyword).
    current: Vec<u8>,
    /// The statement's first tokens (up to two): a word, or empty for another token.
    leading: Vec<Vec<u8>>,
    /// Whether the byte before was a token of `leading` (undone when it starts a comment).
    pushed: bool,
}

/// The longest word kept for `leading`: longer than any keyword that matters.
const KEYWORD_MAX: usize = 16;

/// Inside a quoted string or identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quoted {
    /// `'` or `"`.
    quote: u8,
    /// `E'…'`: a backslash escapes the next byte.
    backslashes: bool,
    /// The byte before was the quote (doubled, or the end).
    quote_seen: bool,
    /// The byte before was an escaping backslash.
    escaped: bool,
}

impl Quoted {
    fn new(quote: u8, backslashes: bool) -> Self {
        Self {
            quote,
            backslashes,
            quote_seen: false,
            escaped: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum State {
    #[default]
    Code,
    /// Inside `'…'`, `E'…'` or `"…"`.
    Quoted(Quoted),
    /// After `$` and these tag bytes, at a token's start.
    DollarTag(Vec<u8>),
    /// Inside `$tag$…`: the delimiter, and how much of it was just seen.
    Dollar {
        delimiter: Vec<u8>,
        matched: usize,
    },
    LineComment,
    BlockComment(usize),
}

impl LexState {
    /// Follows `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        let prev = std::mem::replace(&mut self.prev, b);
        match &mut self.state {
            State::Code => self.code(prev, b),
            State::Quoted(q) => {
                if q.escaped {
                    q.escaped = false;
                } else if q.quote_seen {
                    q.quote_seen = false;
                    if b != q.quote {
                        self.state = State::Code;
                        self.code(0, b);
                    }
                } else if b == q.quote {
                    q.quote_seen = true;
                } else if q.backslashes && b == b'\\' {
                    q.escaped = true;
                }
            }
            State::DollarTag(tag) => {
                if b == b'$' {
                    let delimiter = [&b"$"[..], tag, b"$"].concat();
                    self.state = State::Dollar {
                        delimiter,
                        matched: 0,
                    };
                } else if is_ident_byte(b) && !(tag.is_empty() && b.is_ascii_digit()) {
                    tag.push(b);
                } else {
                    self.state = State::Code;
                    self.code(0, b);
                }
            }
            State::Dollar { delimiter, matched } => {
                if delimiter.get(*matched) == Some(&b) {
                    *matched += 1;
                    if *matched == delimiter.len() {
                        self.state = State::Code;
                        self.prev = 0;
                    }
                } else {
                    *matched = usize::from(b == b'$');
                }
            }
            State::LineComment => {
                if b == b'\n' || b == b'\r' {
                    self.state = State::Code;
                }
            }
            State::BlockComment(depth) => {
                if prev == b'/' && b == b'*' {
                    *depth += 1;
                    self.prev = 0;
                } else if prev == b'*' && b == b'/' {
                    *depth -= 1;
                    self.prev = 0;
                    if *depth == 0 {
                        self.state = State::Code;
                    }
                }
            }
        }
    }

    /// A byte of code, after `prev`.
    fn code(&mut self, prev: u8, b: u8) {
        let word = std::mem::take(&mut self.word);
        let mut current = std::mem::take(&mut self.current);
        let pushed = std::mem::take(&mut self.pushed);
        if is_ident_byte(b) && (word > 0 || b != b'$') {
            self.word = word + 1;
            if current.len() < KEYWORD_MAX {
                current.push(b);
            }
            self.current = current;
            self.state = State::Code;
            return;
        }
        let escape = b == b'\'' && word == 1 && matches!(prev, b'e' | b'E');
        if word > 0 && !escape {
            self.token(current);
        }
        self.state = match b {
            b';' => {
                self.leading.clear();
                State::Code
            }
            b'-' if prev == b'-' => {
                if pushed {
                    self.leading.pop();
                }
                State::LineComment
            }
            b'*' if prev == b'/' => {
                if pushed {
                    self.leading.pop();
                }
                self.prev = 0;
                State::BlockComment(1)
            }
            b if b.is_ascii_whitespace() || b == 0x0b => State::Code,
            _ => {
                self.pushed = self.token(Vec::new());
                match b {
                    b'\'' | b'"' => State::Quoted(Quoted::new(b, escape)),
                    b'$' => State::DollarTag(Vec::new()),
                    _ => State::Code,
                }
            }
        };
    }

    /// A token of the statement: kept when among its first two; whether it was.
    fn token(&mut self, text: Vec<u8>) -> bool {
        let kept = self.leading.len() < 2;
        if kept {
            self.leading.push(text);
        }
        kept
    }

    /// Text that puts a lexer where this one is: what to lex before the rest.
    fn prefix(&self) -> Vec<u8> {
        let mut leading = self.leading.clone();
        let mut prefix = Vec::new();
        let last = match &self.state {
            State::Code if self.word > 0 => self.current.clone(),
            State::Code if matches!(self.prev, b'-' | b'/') => {
                if self.pushed {
                    leading.pop();
                }
                vec![self.prev]
            }
            State::Code => Vec::new(),
            _ => self.state_prefix(),
        };
        for token in leading {
            prefix.extend_from_slice(if token.is_empty() { b"," } else { &token });
            prefix.push(b' ');
        }
        prefix.extend_from_slice(&last);
        prefix
    }

    /// Text that opens the string, quote or comment the lexer is in.
    fn state_prefix(&self) -> Vec<u8> {
        match &self.state {
            State::Code => Vec::new(),
            State::Quoted(q) => {
                let mut prefix = if q.backslashes {
                    b"E".to_vec()
                } else {
                    Vec::new()
                };
                prefix.push(q.quote);
                if q.quote_seen {
                    prefix.push(q.quote);
                }
                if q.escaped {
                    prefix.push(b'\\');
                }
                prefix
            }
            State::DollarTag(tag) => [&b"$"[..], tag].concat(),
            State::Dollar { delimiter, matched } => [
                &delimiter[..],
                delimiter.get(..*matched).unwrap_or_default(),
            ]
            .concat(),
            State::LineComment => b"--".to_vec(),
            State::BlockComment(depth) => {
                let mut prefix = b"/*".repeat(*depth);
                if matches!(self.prev, b'/' | b'*') {
                    prefix.push(self.prev);
                }
                prefix
            }
        }
    }

    /// As [`redact`], for `sql` coming after the bytes followed.
    pub fn redact_after(&self, sql: &str, all: bool) -> (String, bool) {
        let prefix = String::from_utf8_lossy(&self.prefix()).into_owned();
        let (ranges, sensitive) = literals(&format!("{prefix}{sql}"), all);
        let shifted: Vec<Range<usize>> = ranges
            .into_iter()
            .map(|r| r.start.saturating_sub(prefix.len())..r.end.saturating_sub(prefix.len()))
            .filter(|r| r.end > 0)
            .collect();
        (replace(sql, &shifted), sensitive)
    }
}

/// `sql` with each of `ranges` (in order, apart) replaced by `?`.
fn replace(sql: &str, ranges: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for range in ranges {
        out.push_str(sql.get(copied..range.start).unwrap_or_default());
        out.push('?');
        copied = range.end;
    }
    out.push_str(sql.get(copied..).unwrap_or_default());
    out
}

/// Where the literals [`redact`] replaces are, in order; whether a sensitive statement was
/// seen.
fn literals(sql: &str, all: bool) -> (Vec<Range<usize>>, bool) {
    let mut found = Vec::new();
    let mut lexer = Lexer {
        sql,
        pos: 0,
        literals: StringLiterals::Standard,
    };
    // The statement's first words (up to two), and whether it is sensitive.
    let mut leading: Vec<&[u8]> = Vec::with_capacity(2);
    let mut sensitive = false;
    let mut any_sensitive = false;
    loop {
        lexer.skip_blanks();
        let start = lexer.pos;
        let Some(token) = lexer.next() else { break };
        if token.kind == Kind::Semicolon {
            leading.clear();
            sensitive = false;
            continue;
        }
        if leading.len() < 2 {
            leading.push(if token.kind == Kind::Word {
                token.text
            } else {
                b""
            });
            sensitive = is_sensitive(&leading);
            any_sensitive |= sensitive;
        }
        let literal = match token.kind {
            Kind::String | Kind::EscapeString | Kind::DollarString => all || sensitive,
            Kind::Word => all && token.text.first().is_some_and(u8::is_ascii_digit),
            Kind::Other => {
                all && token.text == b"."
                    && lexer.bytes().get(lexer.pos).is_some_and(u8::is_ascii_digit)
            }
            Kind::QuotedIdent | Kind::Semicolon => false,
        };
        if !literal {
            continue;
        }
        if token.kind == Kind::Word || token.kind == Kind::Other {
            lexer.pos = lexer.number_end(start);
        }
        found.push(start..lexer.pos);
    }
    (found, any_sensitive)
}

/// Whether a statement starting with the words `leading` can carry a secret in its string
/// literals: a role's password, a user mapping's or a server's options, a subscription's
/// connection string.
fn is_sensitive(leading: &[&[u8]]) -> bool {
    let [verb, object] = leading else {
        return false;
    };
    let is = |word: &[u8], name: &str| word.eq_ignore_ascii_case(name.as_bytes());
    (is(verb, "create") || is(verb, "alter"))
        && ["role", "user", "group", "subscription", "server"]
            .iter()
            .any(|name| is(object, name))
}

// ---------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A keyword or unquoted identifier (or a number).
    Word,
    /// `"…"`; `text` is the inside, `""` still doubled.
    QuotedIdent,
    /// `'…'` without backslash escapes; `text` is the inside, `''` still doubled.
    String,
    /// `E'…'` (or `'…'` with backslash escapes); `text` is the inside, undecoded.
    EscapeString,
    /// `$tag$…$tag$`; `text` is the inside.
    DollarString,
    /// `;`
    Semicolon,
    /// Any other single byte (punctuation, operator characters), or a `$1` parameter.
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    text: &'a [u8],
}

/// Yields the tokens of SQL text, comments and blanks skipped. Never panics: every index
/// goes through `get`.
#[derive(Debug, Clone)]
struct Lexer<'a> {
    sql: &'a str,
    pos: usize,
    literals: StringLiterals,
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_blanks();
        let bytes = self.sql.as_bytes();
        let start = self.pos;
        let first = *bytes.get(start)?;
        let second = bytes.get(start + 1).copied();
        Some(match first {
            b';' => self.single(Kind::Semicolon),
            b'\'' if self.literals == StringLiterals::Standard => {
                self.quoted(start + 1, Kind::String)
            }
            b'\'' => self.quoted(start + 1, Kind::EscapeString),
            b'e' | b'E' if second == Some(b'\'') => self.quoted(start + 2, Kind::EscapeString),
            b'"' => self.quoted(start + 1, Kind::QuotedIdent),
            b'$' => self.dollar(),
            b'0'..=b'9' => self.word(|b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80),
            b if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => self.word(is_ident_byte),
            _ => self.single(Kind::Other),
        })
    }
}

/// A byte that continues an unquoted identifier (`$` included, as in PostgreSQL).
fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl<'a> Lexer<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.sql.as_bytes()
    }

    fn token(&self, kind: Kind, from: usize, to: usize) -> Token<'a> {
        let text = self.bytes().get(from..to).unwrap_or_default();
        Token { kind, text }
    }

    fn starts_with(&self, prefix: &[u8]) -> bool {
        self.bytes()
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(prefix))
    }

    /// Skips whitespace, `--` comments and nested `/* */` comments.
    fn skip_blanks(&mut self) {
        loop {
            match self.bytes().get(self.pos) {
                Some(b) if b.is_ascii_whitespace() || *b == 0x0b => self.pos += 1,
                Some(b'-') if self.starts_with(b"--") => self.skip_line(),
                Some(b'/') if self.starts_with(b"/*") => self.skip_block_comment(),
                _ => return,
            }
        }
    }

    fn skip_line(&mut self) {
        let rest = self.bytes().get(self.pos..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        self.pos += len.unwrap_or(rest.len());
    }

    /// PostgreSQL's block comments nest; an unclosed one runs to the end of the text.
    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while self.pos < self.bytes().len() {
            if self.starts_with(b"/*") {
                depth += 1;
                self.pos += 2;
            } else if self.starts_with(b"*/") {
                depth -= 1;
                self.pos += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
    }

    fn single(&mut self, kind: Kind) -> Token<'a> {
        self.pos += 1;
        self.token(kind, self.pos - 1, self.pos)
    }

    fn word(&mut self, continues: impl Fn(u8) -> bool) -> Token<'a> {
        let start = self.pos;
        let rest = self.bytes().get(start + 1..).unwrap_or_default();
        self.pos = start + 1 + rest.iter().take_while(|&&b| continues(b)).count();
        self.token(Kind::Word, start, self.pos)
    }

    /// A quoted string or identifier whose inside starts at `from`; the quote doubled stands
    /// for itself, and in escape strings a backslash escapes the next byte. An unclosed one
    /// runs to the end of the text.
    fn quoted(&mut self, from: usize, kind: Kind) -> Token<'a> {
        let quote = if kind == Kind::QuotedIdent {
            b'"'
        } else {
            b'\''
        };
        let backslashes = kind == Kind::EscapeString;
        let bytes = self.bytes();
        let mut i = from;
        while let Some(&b) = bytes.get(i) {
            if backslashes && b == b'\\' || b == quote && bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else if b == quote {
                self.pos = i + 1;
                return self.token(kind, from, i);
            } else {
                i += 1;
            }
        }
        self.pos = bytes.len();
        self.token(kind, from, bytes.len())
    }

    /// Where the number starting at `start` ends: digits, letters (`0x1F`, `1e5`), `_`, a
    /// decimal point, and the sign of an exponent.
    fn number_end(&self, start: usize) -> usize {
        let bytes = self.bytes();
        let mut i = start;
        while let Some(&b) = bytes.get(i) {
            let exponent_sign = matches!(b, b'+' | b'-')
                && matches!(bytes.get(i.wrapping_sub(1)), Some(b'e' | b'E'))
                && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || exponent_sign) {
                break;
            }
            i += 1;
        }
        i
    }

    /// `$1` (a parameter), `$tag$…$tag$` (a dollar-quoted string) or a lone `$`.
    fn dollar(&mut self) -> Token<'a> {
        let start = self.pos;
        let rest = self.bytes().get(start + 1..).unwrap_or_default();
        if rest.first().is_some_and(u8::is_ascii_digit) {
            self.pos = start + 1 + rest.iter().take_while(|b| b.is_ascii_digit()).count();
            return self.token(Kind::Other, start, self.pos);
        }
        let tag = rest
            .iter()
            .take_while(|&&b| b != b'$' && is_ident_byte(b))
            .count();
        if rest.get(tag) != Some(&b'$') {
            return self.single(Kind::Other);
        }
        let body = start + tag + 2;
        let delimiter = self.sql.get(start..body).unwrap_or_default();
        // str::find is linear (two-way search), whatever the tag.
        let end = self.sql.get(body..).and_then(|rest| rest.find(delimiter));
        let end = end.map_or(self.sql.len(), |offset| body + offset);
        self.pos = (end + delimiter.len()).min(self.sql.len());
        self.token(Kind::DollarString, body, end)
    }
}

impl Token<'_> {
    /// Whether this is the keyword `keyword` (lower case), unquoted, in any case.
    fn is(&self, keyword: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(keyword.as_bytes())
    }

    fn is_any(&self, keywords: &[&str]) -> bool {
        keywords.iter().any(|keyword| self.is(keyword))
    }

    /// The parenthesis depth after this token, given the depth before it.
    fn nesting(&self, depth: usize) -> usize {
        if self.is_punct(b'(') {
            depth + 1
        } else if self.is_punct(b')') {
            depth.saturating_sub(1)
        } else {
            depth
        }
    }

    fn is_punct(&self, c: u8) -> bool {
        self.kind == Kind::Other && self.text == [c]
    }

    /// Whether this identifier names `name` (lower case): unquoted in any case, or quoted.
    fn names(&self, name: &str) -> bool {
        self.is(name) || self.kind == Kind::QuotedIdent && self.text == name.as_bytes()
    }

    /// `pg_temp`, or a backend's own `pg_temp_N`: the session's temporary schema.
    fn is_pg_temp(&self) -> bool {
        let (head, tail) = self.text.split_at(self.text.len().min(7));
        let head = match self.kind {
            Kind::Word => head.eq_ignore_ascii_case(b"pg_temp"),
            Kind::QuotedIdent => head == b"pg_temp",
            _ => false,
        };
        let backend = |digits: &[u8]| !digits.is_empty() && digits.iter().all(u8::is_ascii_digit);
        head && (tail.is_empty()
            || matches!(tail.split_first(), Some((b'_', digits)) if backend(digits)))
    }

    /// The identifier's name as PostgreSQL resolves it: unquoted ones folded to lower case.
    fn name(&self) -> Option<String> {
        let text = String::from_utf8_lossy(self.text);
        match self.kind {
            Kind::Word => Some(text.to_ascii_lowercase()),
            Kind::QuotedIdent => Some(text.replace("\"\"", "\"")),
            _ => None,
        }
    }

    /// The value of a string literal, if it needs no backslash decoding.
    fn string_value(&self) -> Option<String> {
        let text = String::from_utf8_lossy(self.text);
        match self.kind {
            Kind::String => Some(text.replace("''", "'")),
            Kind::EscapeString if !self.text.contains(&b'\\') => Some(text.replace("''", "'")),
            Kind::DollarString => Some(text.into_owned()),
            _ => None,
        }
    }

    /// `true`, or a string literal that PostgreSQL's `boolin` reads as true.
    fn is_true(&self) -> bool {
        if self.is("true") {
            return true;
        }
        let Some(value) = self.string_value() else {
            return false;
        };
        let value = value.trim().to_ascii_lowercase();
        let prefix_of = |word: &str| !value.is_empty() && word.starts_with(value.as_str());
        prefix_of("true") || prefix_of("yes") || value == "on" || value == "1"
    }
}

/// The tokens of one statement: a lexer that stops at the next `;`.
#[derive(Debug, Clone)]
struct Statement<'a> {
    lexer: Lexer<'a>,
    done: bool,
}

impl<'a> Statement<'a> {
    fn new(lexer: Lexer<'a>) -> Self {
        Self { lexer, done: false }
    }

    /// The next token, without consuming it.
    fn peek(&self) -> Option<Token<'a>> {
        self.clone().next()
    }

    fn next_is(&self, keyword: &str) -> bool {
        self.peek().is_some_and(|token| token.is(keyword))
    }
}

impl<'a> Iterator for Statement<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if self.done {
            return None;
        }
        let token = self
            .lexer
            .next()
            .filter(|token| token.kind != Kind::Semicolon);
        self.done = token.is_none();
        token
    }
}

// ---------------------------------------------------------------------------------------
// Statements
// ---------------------------------------------------------------------------------------

fn classify(tokens: Statement<'_>, scan: &mut Scan) {
    let body = Body::of(tokens.clone());
    head(tokens, &body, scan);
    if body.into_temp {
        scan.push(sticky("a temporary table"));
    }
    for effect in body.calls {
        scan.push(effect);
    }
}

/// The statement's own effect, decided by its leading keywords.
fn head(mut t: Statement<'_>, body: &Body, scan: &mut Scan) {
    let Some(first) = t.next() else {
        return;
    };
    let word = |keyword| first.is(keyword);
    if (word("listen") || word("load")) && t.peek().is_some() {
        scan.push(sticky(if word("listen") { "LISTEN" } else { "LOAD" }));
    } else if word("prepare") {
        prepare(t, scan);
    } else if word("declare") {
        declare(t, scan);
    } else if word("set") {
        set(t, scan);
    } else if word("reset") {
        reset(t, scan);
    } else if word("deallocate") {
        deallocate(t, scan);
    } else if word("discard") {
        discard(t, scan);
    } else if word("create") {
        create(t, body, scan);
    } else if word("explain") {
        explain(t, body, scan);
    }
}

/// `PREPARE name …`, but not `PREPARE TRANSACTION 'gid'` (two-phase commit).
fn prepare(mut t: Statement<'_>, scan: &mut Scan) {
    let Some(name) = t.next() else {
        return;
    };
    let literal = |token: Token<'_>| {
        matches!(
            token.kind,
            Kind::String | Kind::EscapeString | Kind::DollarString
        )
    };
    if !(name.is("transaction") && t.peek().is_some_and(literal)) {
        scan.push(sticky("PREPARE"));
    }
}

/// `DECLARE name … CURSOR WITH HOLD FOR …`; without `WITH HOLD` a cursor ends with its
/// transaction.
fn declare(mut t: Statement<'_>, scan: &mut Scan) {
    let Some(mut prev) = t.next() else {
        return;
    };
    for token in t {
        if token.is("for") {
            return;
        }
        if prev.is("with") && token.is("hold") {
            return scan.push(sticky("a WITH HOLD cursor"));
        }
        prev = token;
    }
}

/// `SET [SESSION | LOCAL] …`.
fn set(mut t: Statement<'_>, scan: &mut Scan) {
    let Some(mut first) = t.next() else {
        return;
    };
    if first.is("local") {
        return;
    }
    if first.is("session") {
        let keeps = |n: Token<'_>| {
            n.is("authorization") || n.is("characteristics") || n.is("to") || n.is_punct(b'=')
        };
        match t.peek() {
            Some(next) if keeps(next) => {}
            Some(next) => {
                first = next;
                t.next();
            }
            None => return,
        }
    }
    set_rest(first, t, scan);
}

/// A `SET` after its scope: `name TO|=|FROM …`, or one of the special forms.
fn set_rest<'a>(first: Token<'a>, mut t: Statement<'a>, scan: &mut Scan) {
    let mut after = t.clone();
    let name = parameter_name(first, &mut after);
    let assigns = |n: Token<'_>| n.is("to") || n.is("from") || n.is_punct(b'=');
    if let Some(name) = name.filter(|_| after.next().is_some_and(assigns)) {
        return scan.push(parameter_effect(name));
    }
    let effect = if let Some(name) = keyword_form(first, &t, &SET_FORMS) {
        parameter(name)
    } else if first.is("role") {
        sticky("SET ROLE")
    } else if first.is("session") && t.next_is("authorization") {
        sticky("SET SESSION AUTHORIZATION")
    } else if first.is("session") && t.next_is("characteristics") {
        t.next();
        return characteristics(t, scan);
    } else if first.is_any(&["transaction", "constraints"]) {
        return; // this transaction only
    } else {
        // A shape not known here (`U&"…"` names, syntax errors): unsure, so sticky.
        sticky("an unrecognized SET")
    };
    scan.push(effect);
}

/// `SET` forms that name a parameter with keywords: first word, second word (or none), the
/// parameter (gram.y's `set_rest_more`).
const SET_FORMS: [(&str, &str, &str); 4] = [
    ("time", "zone", "timezone"),
    ("schema", "", "search_path"),
    ("names", "", "client_encoding"),
    ("xml", "option", "xmloption"),
];

/// `RESET` forms that name a parameter with keywords (gram.y's `reset_rest`).
const RESET_FORMS: [(&str, &str, &str); 3] = [
    ("time", "zone", "timezone"),
    ("session", "authorization", "session_authorization"),
    ("transaction", "isolation", "transaction_isolation"),
];

/// The parameter of the form in `forms` that `first` and the token after it spell.
fn keyword_form(
    first: Token<'_>,
    t: &Statement<'_>,
    forms: &[(&str, &str, &'static str)],
) -> Option<&'static str> {
    let second = t.peek();
    let spells = |(one, two, _): &&(&str, &str, &str)| {
        first.is(one) && (two.is_empty() || second.is_some_and(|second| second.is(two)))
    };
    forms.iter().find(spells).map(|&(_, _, name)| name)
}

/// `SET SESSION CHARACTERISTICS AS TRANSACTION mode, …`: the session's defaults.
fn characteristics(t: Statement<'_>, scan: &mut Scan) {
    let mut prev: Option<Token<'_>> = None;
    for token in t {
        let in_level = prev.is_some_and(|p| p.is("level") || p.is("repeatable"));
        let name = if token.is("isolation") {
            "default_transaction_isolation"
        } else if token.is("read") && !in_level {
            "default_transaction_read_only"
        } else if token.is("deferrable") {
            "default_transaction_deferrable"
        } else {
            ""
        };
        if !name.is_empty() {
            scan.push(parameter(name));
        }
        prev = Some(token);
    }
}

/// A dotted parameter name (`work_mem`, `app.user_id`, `"App".id`), lower-cased like
/// PostgreSQL's parameter lookup; `t` is left after it.
fn parameter_name<'a>(first: Token<'a>, t: &mut Statement<'a>) -> Option<String> {
    let mut name = first.name()?.to_ascii_lowercase();
    loop {
        let mut peek = t.clone();
        if !peek.next().is_some_and(|dot| dot.is_punct(b'.')) {
            return Some(name);
        }
        let part = peek.next().and_then(|part| part.name())?;
        name.push('.');
        name.push_str(&part.to_ascii_lowercase());
        *t = peek;
    }
}

/// `RESET name | ALL | TIME ZONE | SESSION AUTHORIZATION | TRANSACTION ISOLATION LEVEL`.
fn reset(mut t: Statement<'_>, scan: &mut Scan) {
    let Some(first) = t.next() else {
        return;
    };
    let effect = if first.is("all") {
        Effect::ResetAll
    } else if let Some(name) = keyword_form(first, &t, &RESET_FORMS) {
        parameter(name)
    } else {
        match parameter_name(first, &mut t).filter(|_| t.peek().is_none()) {
            Some(name) => Effect::SetParameter { name },
            None => sticky("an unrecognized RESET"),
        }
    };
    scan.push(effect);
}

/// `DEALLOCATE [PREPARE] name | ALL`; a statement may be named `prepare`.
fn deallocate(mut t: Statement<'_>, scan: &mut Scan) {
    let Some(mut target) = t.next() else {
        return;
    };
    if target.is("prepare") {
        if let Some(next) = t.next() {
            target = next;
        }
    }
    if t.next().is_some() {
        // Not a name PostgreSQL would accept here (`U&"…"`, a syntax error): no answer.
    } else if target.is("all") {
        scan.push(Effect::Deallocate { name: None });
    } else if let Some(name) = target.name() {
        scan.push(Effect::Deallocate { name: Some(name) });
    }
}

/// `DISCARD ALL | PLANS | TEMP | TEMPORARY | SEQUENCES`.
fn discard(mut t: Statement<'_>, scan: &mut Scan) {
    let Some(what) = t.next() else {
        return;
    };
    let forms = [
        ("all", Discard::All),
        ("plans", Discard::Plans),
        ("temp", Discard::Temp),
        ("temporary", Discard::Temp),
        ("sequences", Discard::Sequences),
    ];
    if let Some(&(_, discard)) = forms.iter().find(|(word, _)| what.is(word)) {
        scan.push(Effect::Discard(discard));
    }
}

/// `CREATE [OR REPLACE] [GLOBAL | LOCAL] TEMP | TEMPORARY …`, or a `CREATE` that names
/// `pg_temp.`; not a table dropped `ON COMMIT DROP`, which ends with its transaction.
fn create(mut t: Statement<'_>, body: &Body, scan: &mut Scan) {
    if body.on_commit_drop {
        return;
    }
    if t.next_is("or") {
        t.nth(1); // OR REPLACE
    }
    if t.next_is("global") || t.next_is("local") {
        t.next();
    }
    let temp = t
        .next()
        .is_some_and(|token| token.is("temp") || token.is("temporary"));
    let what = match t.next() {
        Some(kind) if temp && kind.is("table") => "a temporary table",
        Some(kind) if temp && (kind.is("view") || kind.is("recursive")) => "a temporary view",
        Some(kind) if temp && kind.is("sequence") => "a temporary sequence",
        _ if temp || body.pg_temp => "a temporary object",
        _ => return,
    };
    scan.push(sticky(what));
}

/// `EXPLAIN ANALYZE CREATE TABLE … AS` creates the table; other forms only need the
/// function calls and `SELECT … INTO` that [`Body`] finds anywhere.
fn explain(mut t: Statement<'_>, body: &Body, scan: &mut Scan) {
    if t.peek().is_some_and(|token| token.is_punct(b'(')) {
        let mut depth = 0usize;
        for token in t.by_ref() {
            depth = token.nesting(depth);
            if depth == 0 {
                break;
            }
        }
    }
    while t
        .peek()
        .is_some_and(|t| t.is_any(&["analyze", "analyse", "verbose"]))
    {
        t.next();
    }
    if t.next_is("create") {
        t.next();
        create(t, body, scan);
    }
}

// ---------------------------------------------------------------------------------------
// What a statement does anywhere in its text
// ---------------------------------------------------------------------------------------

const ADVISORY_LOCKS: [&str; 4] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// What one pass over all of a statement's tokens finds.
#[derive(Debug, Default)]
struct Body {
    /// Effects of the functions called (session advisory locks, `set_config`), in order.
    calls: Vec<Effect>,
    /// `… INTO [GLOBAL | LOCAL] TEMP …` or `INTO pg_temp.…`, not after `INSERT` or `MERGE`:
    /// `SELECT … INTO` creating a temporary table (at any depth: `(SELECT … INTO …)` is
    /// one, and PostgreSQL rejects it in a subquery anyway).
    into_temp: bool,
    /// `pg_temp.` anywhere.
    pg_temp: bool,
    /// `ON COMMIT DROP` outside parentheses.
    on_commit_drop: bool,
}

/// Where `SELECT … INTO` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntoTarget {
    Outside,
    /// After `INTO` and perhaps `GLOBAL`, `LOCAL`, `UNLOGGED`, `TABLE`.
    Target,
    /// After `INTO pg_temp`.
    PgTemp,
}

impl Body {
    fn of(tokens: Statement<'_>) -> Self {
        let mut body = Body::default();
        let mut calls: Vec<SetConfig<'_>> = Vec::new();
        let mut into = IntoTarget::Outside;
        let (mut depth, mut prev, mut prev2): (usize, Option<Token<'_>>, _) = (0, None, None);
        for token in tokens {
            if let Some(call) = calls.last_mut() {
                if call.feed(token, depth) {
                    body.call(calls.pop().and_then(|call| call.effect()));
                }
            }
            if token.is_punct(b'(') {
                match prev {
                    Some(f) if ADVISORY_LOCKS.iter().any(|lock| f.names(lock)) => {
                        body.call(Some(sticky("a session advisory lock")))
                    }
                    Some(f) if f.names("set_config") => calls.push(SetConfig {
                        depth: depth + 1,
                        ..SetConfig::default()
                    }),
                    _ => {}
                }
            }
            into = body.note(token, prev, prev2, depth, into);
            depth = token.nesting(depth);
            (prev2, prev) = (prev, Some(token));
        }
        // Unclosed calls: a syntax error, but report them rather than guess.
        while let Some(call) = calls.pop() {
            body.call(call.effect());
        }
        body
    }

    /// Notes a call's effect, unless it repeats the one before (a thousand locks are one pin).
    fn call(&mut self, effect: Option<Effect>) {
        if let Some(effect) = effect.filter(|effect| self.calls.last() != Some(effect)) {
            self.calls.push(effect);
        }
    }

    fn note(
        &mut self,
        token: Token<'_>,
        prev: Option<Token<'_>>,
        prev2: Option<Token<'_>>,
        depth: usize,
        into: IntoTarget,
    ) -> IntoTarget {
        let prev_is = |keyword| prev.is_some_and(|p| p.is(keyword));
        if token.is_punct(b'.') && prev.is_some_and(|p| p.is_pg_temp()) {
            self.pg_temp = true;
            self.into_temp |= into == IntoTarget::PgTemp;
        }
        let on_commit = prev_is("commit") && prev2.is_some_and(|p| p.is("on"));
        self.on_commit_drop |= depth == 0 && on_commit && token.is("drop");
        match into {
            IntoTarget::Target if token.is_any(&["temp", "temporary"]) => self.into_temp = true,
            IntoTarget::Target if token.is_any(&["global", "local", "unlogged", "table"]) => {
                return IntoTarget::Target
            }
            IntoTarget::Target if token.is_pg_temp() => return IntoTarget::PgTemp,
            _ if token.is("into") && !prev_is("insert") && !prev_is("merge") => {
                return IntoTarget::Target
            }
            _ => {}
        }
        IntoTarget::Outside
    }
}

/// A `set_config(name, value, is_local)` call being read, one token at a time.
#[derive(Debug, Default)]
struct SetConfig<'a> {
    /// The parenthesis depth inside the call.
    depth: usize,
    /// Which argument the tokens belong to.
    arg: usize,
    /// How many tokens the current argument has so far, and the last of them.
    tokens: usize,
    last: Option<Token<'a>>,
    /// The first and third arguments, when each is a single token.
    name: Option<Token<'a>>,
    is_local: Option<Token<'a>>,
}

impl<'a> SetConfig<'a> {
    /// Takes the next token, at parenthesis depth `depth`; true when it closed the call.
    fn feed(&mut self, token: Token<'a>, depth: usize) -> bool {
        let closes = token.is_punct(b')');
        if depth > self.depth || !(closes || token.is_punct(b',')) {
            self.tokens += 1;
            self.last = Some(token);
            return false;
        }
        let single = self.last.filter(|_| self.tokens == 1);
        match self.arg {
            0 => self.name = single,
            2 => self.is_local = single,
            _ => {}
        }
        (self.arg, self.tokens, self.last) = (self.arg + 1, 0, None);
        closes
    }

    /// `is_local` true: this transaction only. Otherwise the parameter, if its name is a
    /// literal.
    fn effect(&self) -> Option<Effect> {
        if self.is_local.is_some_and(|token| token.is_true()) {
            return None;
        }
        Some(match self.name.and_then(|token| token.string_value()) {
            Some(name) => parameter_effect(name.to_ascii_lowercase()),
            None => sticky("a parameter set by set_config"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuck(what: &'static str) -> Effect {
        sticky(what)
    }

    fn set(name: &str) -> Effect {
        parameter(name)
    }

    fn deallocate(name: Option<&str>) -> Effect {
        Effect::Deallocate {
            name: name.map(String::from),
        }
    }

    const TEMP_TABLE: &str = "a temporary table";
    const ADVISORY: &str = "a session advisory lock";
    const SET_CONFIG: &str = "a parameter set by set_config";

    /// (SQL, non-empty statements, effects).
    fn table() -> Vec<(&'static str, usize, Vec<Effect>)> {
        vec![
            // Sticky statements.
            ("LISTEN chan", 1, vec![stuck("LISTEN")]),
            ("lIsTeN \"Chan\"", 1, vec![stuck("LISTEN")]),
            ("UNLISTEN chan", 1, vec![]),
            ("UNLISTEN *", 1, vec![]),
            ("NOTIFY chan, 'x'", 1, vec![]),
            ("PREPARE q AS SELECT 1", 1, vec![stuck("PREPARE")]),
            ("prepare q(int, text) as select $1, $2", 1, vec![stuck("PREPARE")]),
            ("PREPARE TRANSACTION 'gid'", 1, vec![]),
            ("PREPARE transaction AS SELECT 1", 1, vec![stuck("PREPARE")]),
            ("COMMIT PREPARED 'gid'", 1, vec![]),
            ("EXECUTE q(1)", 1, vec![]),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", 1, vec![stuck("a WITH HOLD cursor")]),
            ("declare c binary no scroll cursor with hold for select 1", 1, vec![stuck("a WITH HOLD cursor")]),
            ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", 1, vec![]),
            ("DECLARE c CURSOR FOR SELECT 1", 1, vec![]),
            ("DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold", 1, vec![]),
            ("LOAD 'auto_explain'", 1, vec![stuck("LOAD")]),
            ("SET ROLE admin", 1, vec![stuck("SET ROLE")]),
            ("SET SESSION ROLE admin", 1, vec![stuck("SET ROLE")]),
            ("SET role = 'admin'", 1, vec![stuck("SET ROLE")]),
            ("SET LOCAL ROLE admin", 1, vec![]),
            ("SET SESSION AUTHORIZATION bob", 1, vec![stuck("SET SESSION AUTHORIZATION")]),
            ("set session session authorization default", 1, vec![stuck("SET SESSION AUTHORIZATION")]),
            ("SET LOCAL SESSION AUTHORIZATION bob", 1, vec![]),
            // Temporary objects.
            ("CREATE TEMP TABLE t (a int)", 1, vec![stuck(TEMP_TABLE)]),
            ("CREATE TEMPORARY TABLE t AS SELECT 1", 1, vec![stuck(TEMP_TABLE)]),
            ("create global temporary table t (a int)", 1, vec![stuck(TEMP_TABLE)]),
            ("CREATE LOCAL TEMP SEQUENCE s", 1, vec![stuck("a temporary sequence")]),
            ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", 1, vec![stuck("a temporary view")]),
            ("CREATE TEMP RECURSIVE VIEW v (n) AS SELECT 1", 1, vec![stuck("a temporary view")]),
            ("CREATE TEMP TABLE t (a int) ON COMMIT DROP", 1, vec![]),
            ("CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1", 1, vec![]),
            ("CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS", 1, vec![stuck(TEMP_TABLE)]),
            ("CREATE UNLOGGED TABLE t (a int)", 1, vec![]),
            ("CREATE TABLE tempo (temp int)", 1, vec![]),
            ("CREATE TABLE pg_temp.t (a int)", 1, vec![stuck("a temporary object")]),
            ("CREATE FUNCTION \"pg_temp\".f() RETURNS int AS 'SELECT 1' LANGUAGE sql", 1, vec![stuck("a temporary object")]),
            ("CREATE TABLE \"PG_TEMP\".t (a int)", 1, vec![]),
            ("CREATE VIEW v AS SELECT * FROM pg_temp_3.t", 1, vec![stuck("a temporary object")]),
            ("CREATE VIEW v AS SELECT * FROM pg_temporary.t", 1, vec![]),
            ("SELECT 1 INTO TEMP t", 1, vec![stuck(TEMP_TABLE)]),
            ("SELECT * INTO TEMPORARY TABLE t FROM x", 1, vec![stuck(TEMP_TABLE)]),
            ("select * into local temp t from x", 1, vec![stuck(TEMP_TABLE)]),
            ("SELECT INTO TEMP t FROM x", 1, vec![stuck(TEMP_TABLE)]),
            ("SELECT 1 INTO pg_temp.t", 1, vec![stuck(TEMP_TABLE)]),
            ("SELECT 1 INTO t", 1, vec![]),
            ("SELECT 1 INTO UNLOGGED t", 1, vec![]),
            ("INSERT INTO temp VALUES (1)", 1, vec![]),
            ("insert /* c */ into temporary select 1", 1, vec![]),
            ("MERGE INTO temp USING s ON true WHEN MATCHED THEN DO NOTHING", 1, vec![]),
            ("WITH x AS (SELECT 1) SELECT * INTO TEMP t FROM x", 1, vec![stuck(TEMP_TABLE)]),
            ("WITH update AS (SELECT 1) SELECT * INTO TEMP t FROM update", 1, vec![stuck(TEMP_TABLE)]),
            ("WITH x AS (SELECT 1) INSERT INTO temp SELECT * FROM x", 1, vec![]),
            ("(SELECT 1 INTO TEMP t)", 1, vec![stuck(TEMP_TABLE)]),
            ("EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", 1, vec![stuck(TEMP_TABLE)]),
            ("EXPLAIN (ANALYZE, BUFFERS) CREATE TEMP TABLE t AS SELECT 1", 1, vec![stuck(TEMP_TABLE)]),
            ("EXPLAIN (ANALYZE, BUFFERS) SELECT 1 INTO TEMP t", 1, vec![stuck(TEMP_TABLE)]),
            ("EXPLAIN SELECT 1", 1, vec![]),
            ("EXPLAIN (", 1, vec![]),
            // Session advisory locks.
            ("SELECT pg_advisory_lock(1)", 1, vec![stuck(ADVISORY)]),
            ("SELECT PG_TRY_ADVISORY_LOCK_SHARED (1, 2)", 1, vec![stuck(ADVISORY)]),
            ("SELECT pg_try_advisory_lock(1)", 1, vec![stuck(ADVISORY)]),
            ("SELECT pg_catalog.pg_advisory_lock_shared(1)", 1, vec![stuck(ADVISORY)]),
            ("SELECT \"pg_advisory_lock\"(1)", 1, vec![stuck(ADVISORY)]),
            ("SELECT pg_advisory_lock -- why\n (1)", 1, vec![stuck(ADVISORY)]),
            ("UPDATE t SET a = 1 WHERE pg_advisory_lock(id) IS NOT NULL", 1, vec![stuck(ADVISORY)]),
            ("SELECT pg_advisory_lock(1), pg_advisory_lock(2)", 1, vec![stuck(ADVISORY)]),
            ("SELECT \"PG_ADVISORY_LOCK\"(1)", 1, vec![]),
            ("SELECT pg_advisory_xact_lock(1), pg_try_advisory_xact_lock_shared(2)", 1, vec![]),
            ("SELECT pg_advisory_unlock(1), pg_advisory_unlock_shared(1), pg_advisory_unlock_all()", 1, vec![]),
            ("SELECT pg_advisory_lock FROM t", 1, vec![]),
            ("SELECT my_pg_advisory_lock(1)", 1, vec![]),
            // set_config.
            ("SELECT set_config('search_path', 'x', false)", 1, vec![set("search_path")]),
            ("SELECT pg_catalog.set_config('Search_Path', '', false)", 1, vec![set("search_path")]),
            ("SELECT set_config('work_mem', '1MB', true)", 1, vec![]),
            ("SELECT set_config('work_mem', '1MB', TRUE)", 1, vec![]),
            ("SELECT set_config('work_mem', '1MB', 't')", 1, vec![]),
            ("SELECT set_config('work_mem', '1MB', ' On ')", 1, vec![]),
            ("SELECT set_config('work_mem', '1MB', 'off')", 1, vec![set("work_mem")]),
            ("SELECT set_config('work_mem', '1MB', $1)", 1, vec![set("work_mem")]),
            ("SELECT set_config('work_mem', '1MB', NOT false)", 1, vec![set("work_mem")]),
            ("SELECT set_config('work_mem', '1MB', (true))", 1, vec![set("work_mem")]),
            ("SELECT set_config($1, '1MB', false)", 1, vec![stuck(SET_CONFIG)]),
            ("SELECT set_config('a' || 'b', 'x', false)", 1, vec![stuck(SET_CONFIG)]),
            ("SELECT set_config('role', 'bob', false)", 1, vec![stuck("SET ROLE")]),
            ("SELECT set_config('a.b', lower('X'), false)", 1, vec![set("a.b")]),
            ("SELECT set_config('a.b', set_config('c.d', 'x', true), false)", 1, vec![set("a.b")]),
            ("SELECT set_config('a.b', set_config('c.d', 'x', false), true)", 1, vec![set("c.d")]),
            ("SELECT set_config($$work_mem$$, '1MB', false)", 1, vec![set("work_mem")]),
            ("SELECT set_config(E'work_mem', '1MB', false)", 1, vec![set("work_mem")]),
            ("SELECT set_config(E'work\\_mem', '1MB', false)", 1, vec![stuck(SET_CONFIG)]),
            ("SELECT \"set_config\"('it''s', 'b', false)", 1, vec![set("it's")]),
            ("SELECT set_config('x', 'y'", 1, vec![set("x")]),
            ("SELECT set_config", 1, vec![]),
            ("SELECT current_setting('work_mem')", 1, vec![]),
            // SET and RESET.
            ("SET work_mem = '64MB'", 1, vec![set("work_mem")]),
            ("set Work_Mem to 64000", 1, vec![set("work_mem")]),
            ("SET SESSION statement_timeout TO '1ms'", 1, vec![set("statement_timeout")]),
            ("SET \"DateStyle\" TO ISO", 1, vec![set("datestyle")]),
            ("SET myapp.User_Id = 42", 1, vec![set("myapp.user_id")]),
            ("SET search_path TO a, b", 1, vec![set("search_path")]),
            ("SET search_path = DEFAULT", 1, vec![set("search_path")]),
            ("SET work_mem FROM CURRENT", 1, vec![set("work_mem")]),
            ("SET application_name='x'", 1, vec![set("application_name")]),
            ("SET LOCAL work_mem = '64MB'", 1, vec![]),
            ("set local search_path to a", 1, vec![]),
            ("SET LOCAL TIME ZONE 'UTC'", 1, vec![]),
            ("SET TIME ZONE 'UTC'", 1, vec![set("timezone")]),
            ("SET TIME ZONE LOCAL", 1, vec![set("timezone")]),
            ("SET SESSION TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE", 1, vec![set("timezone")]),
            ("SET TimeZone = 'UTC'", 1, vec![set("timezone")]),
            ("SET NAMES 'UTF8'", 1, vec![set("client_encoding")]),
            ("SET SCHEMA 'app'", 1, vec![set("search_path")]),
            ("SET XML OPTION DOCUMENT", 1, vec![set("xmloption")]),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", 1, vec![]),
            ("SET TRANSACTION SNAPSHOT '000003A1-1'", 1, vec![]),
            ("SET CONSTRAINTS ALL DEFERRED", 1, vec![]),
            ("SET", 1, vec![]),
            ("SET SESSION", 1, vec![]),
            ("SET U&\"d\\0061testyle\" TO ISO", 1, vec![stuck("an unrecognized SET")]),
            ("SET work_mem 64", 1, vec![stuck("an unrecognized SET")]),
            ("RESET U&\"work_mem\"", 1, vec![stuck("an unrecognized RESET")]),
            ("DEALLOCATE U&\"s1\"", 1, vec![]),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
                1,
                vec![set("default_transaction_isolation")],
            ),
            (
                "set session characteristics as transaction read only, isolation level repeatable read, not deferrable",
                1,
                vec![
                    set("default_transaction_read_only"),
                    set("default_transaction_isolation"),
                    set("default_transaction_deferrable"),
                ],
            ),
            ("RESET work_mem", 1, vec![set("work_mem")]),
            ("RESET myapp.user_id", 1, vec![set("myapp.user_id")]),
            ("RESET ALL", 1, vec![Effect::ResetAll]),
            ("reset all", 1, vec![Effect::ResetAll]),
            ("RESET TIME ZONE", 1, vec![set("timezone")]),
            ("RESET SESSION AUTHORIZATION", 1, vec![set("session_authorization")]),
            ("RESET TRANSACTION ISOLATION LEVEL", 1, vec![set("transaction_isolation")]),
            ("RESET ROLE", 1, vec![set("role")]),
            // DEALLOCATE and DISCARD.
            ("DEALLOCATE s1", 1, vec![deallocate(Some("s1"))]),
            ("DEALLOCATE PREPARE S1", 1, vec![deallocate(Some("s1"))]),
            ("DEALLOCATE \"S1\"", 1, vec![deallocate(Some("S1"))]),
            ("DEALLOCATE \"all\"", 1, vec![deallocate(Some("all"))]),
            ("DEALLOCATE prepare", 1, vec![deallocate(Some("prepare"))]),
            ("DEALLOCATE ALL", 1, vec![deallocate(None)]),
            ("deallocate prepare all", 1, vec![deallocate(None)]),
            ("DEALLOCATE", 1, vec![]),
            ("DISCARD ALL", 1, vec![Effect::Discard(Discard::All)]),
            ("Discard All", 1, vec![Effect::Discard(Discard::All)]),
            ("DISCARD PLANS", 1, vec![Effect::Discard(Discard::Plans)]),
            ("DISCARD TEMP", 1, vec![Effect::Discard(Discard::Temp)]),
            ("DISCARD TEMPORARY", 1, vec![Effect::Discard(Discard::Temp)]),
            ("DISCARD SEQUENCES", 1, vec![Effect::Discard(Discard::Sequences)]),
            ("DISCARD", 1, vec![]),
            // Keywords inside strings, comments, dollar quotes and quoted identifiers.
            ("SELECT 'LISTEN x'", 1, vec![]),
            ("SELECT 'it''s; LISTEN x'", 1, vec![]),
            ("SELECT 1 -- LISTEN x", 1, vec![]),
            ("SELECT 1 -- ; LISTEN x\n", 1, vec![]),
            ("SELECT 1 --\n; LISTEN y", 2, vec![stuck("LISTEN")]),
            ("SELECT 1 /* LISTEN x; */", 1, vec![]),
            ("SELECT 1 /* outer /* inner */ ; LISTEN x; */", 1, vec![]),
            ("SELECT 1 /* unclosed ; LISTEN x", 1, vec![]),
            ("SELECT 2 */* c */ 3; LISTEN x", 2, vec![stuck("LISTEN")]),
            ("SELECT $q$ PREPARE $q$", 1, vec![]),
            ("SELECT $$; LISTEN x; $$", 1, vec![]),
            ("SELECT $a$ $b$ ; LISTEN x $a$", 1, vec![]),
            ("SELECT $a$ unclosed; LISTEN x", 1, vec![]),
            ("SELECT a$b$ FROM t; LISTEN x", 2, vec![stuck("LISTEN")]),
            ("SELECT $1; LISTEN x", 2, vec![stuck("LISTEN")]),
            ("SELECT \"listen\"", 1, vec![]),
            ("SELECT \"a\"\"; LISTEN x\"", 1, vec![]),
            ("\"LISTEN\" x", 1, vec![]),
            ("SELECT E'\\'; LISTEN x; --'", 1, vec![]),
            ("SELECT e'\\\\'; LISTEN x", 2, vec![stuck("LISTEN")]),
            ("SELECT '\\'; LISTEN x", 2, vec![stuck("LISTEN")]),
            ("SELECT 'pg_advisory_lock(1)', $$set_config('a', 'b', false)$$", 1, vec![]),
            ("SELECT 1 AS \"pg_advisory_lock(\"", 1, vec![]),
            ("DO $$ BEGIN PERFORM pg_advisory_lock(1); LISTEN x; END $$", 1, vec![]),
            ("SELECT 'é'; LISTEN \"ü\"", 2, vec![stuck("LISTEN")]),
            // Statement counting and multi-statement text.
            ("", 0, vec![]),
            (" ; -- c\n ;", 0, vec![]),
            ("/* only */", 0, vec![]),
            ("SELECT 1;;  ; LISTEN x;", 2, vec![stuck("LISTEN")]),
            ("BEGIN; SET LOCAL work_mem = '1MB'; COMMIT", 3, vec![]),
            ("SET a.b = 1; RESET ALL; SET a.b = 2", 3, vec![set("a.b"), Effect::ResetAll, set("a.b")]),
            ("DEALLOCATE s1; SELECT 1", 2, vec![deallocate(Some("s1"))]),
            ("LISTEN a; LISTEN b", 2, vec![stuck("LISTEN")]),
            ("SELECT 1; PREPARE p AS SELECT pg_advisory_lock(1)", 2, vec![stuck("PREPARE"), stuck(ADVISORY)]),
            (
                "SELECT pg_advisory_lock(1) INTO TEMP t",
                1,
                vec![stuck(TEMP_TABLE), stuck(ADVISORY)],
            ),
            (
                "SET search_path = a; DISCARD ALL; LISTEN c; DEALLOCATE ALL",
                4,
                vec![
                    set("search_path"),
                    Effect::Discard(Discard::All),
                    stuck("LISTEN"),
                    deallocate(None),
                ],
            ),
        ]
    }

    #[test]
    fn the_end_of_a_text_is_redacted_as_the_whole_would_be() {
        let whole = "SELECT 'a''b', E'c\\'d', $q$ e $ f $q$, \"i\"\"d\", 1 -- c\n/* x /* y */ z */ 'g'; ALTER ROLE r PASSWORD 'pw'";
        for all in [true, false] {
            let (whole_literals, _) = literals(whole, all);
            for cut in 0..=whole.len() {
                let mut state = LexState::default();
                state.feed(&whole.as_bytes()[..cut]);
                let (tail, _) = state.redact_after(&whole[cut..], all);
                // The whole's literals, as far as they are in the tail.
                let in_tail: Vec<Range<usize>> = whole_literals
                    .iter()
                    .filter(|r| r.end > cut)
                    .map(|r| r.start.max(cut) - cut..r.end - cut)
                    .collect();
                let expected = replace(&whole[cut..], &in_tail);
                assert_eq!(tail, expected, "cut at {cut}, all: {all}");
            }
        }
    }

    #[test]
    fn secrets_of_sensitive_statements_are_redacted_whatever_the_setting() {
        let cases = [
            (
                "ALTER ROLE x PASSWORD 'pw1'",
                "ALTER ROLE x PASSWORD ?",
                true,
            ),
            (
                "create user u with encrypted password $$pw2$$ valid until '2030-01-01'",
                "create user u with encrypted password ? valid until ?",
                true,
            ),
            (
                "SELECT 'a'; alter user mapping for u server s options (password 'pw3')",
                "SELECT 'a'; alter user mapping for u server s options (password ?)",
                true,
            ),
            (
                "CREATE SUBSCRIPTION s CONNECTION E'password=pw4' PUBLICATION p",
                "CREATE SUBSCRIPTION s CONNECTION ? PUBLICATION p",
                true,
            ),
            (
                "ALTER SERVER s OPTIONS (SET password 'pw5'); SELECT 'kept', 1",
                "ALTER SERVER s OPTIONS (SET password ?); SELECT 'kept', 1",
                true,
            ),
            (
                "/* c */ CREATE GROUP g; SELECT 'kept'",
                "/* c */ CREATE GROUP g; SELECT 'kept'",
                true,
            ),
            (
                "SELECT 'alter role x password', 2",
                "SELECT 'alter role x password', 2",
                false,
            ),
        ];
        for (sql, redacted, sensitive) in cases {
            assert_eq!(
                redact(sql, false),
                (redacted.to_owned(), sensitive),
                "{sql}"
            );
        }
    }

    #[test]
    fn literals_are_redacted_and_everything_else_kept() {
        let cases = [
            (
                "SELECT * FROM t1 WHERE a = 'x''y' AND b = 42",
                "SELECT * FROM t1 WHERE a = ? AND b = ?",
            ),
            ("select e'it\\'s', 1.5e-3, .5, 0x1F", "select ?, ?, ?, ?"),
            ("SELECT $f$ 'a' ; $f$, $1, $$x$$", "SELECT ?, $1, ?"),
            (
                "SELECT \"col'1\" FROM \"t 2\" -- don't\nWHERE x = '1'",
                "SELECT \"col'1\" FROM \"t 2\" -- don't\nWHERE x = ?",
            ),
            (
                "/* 'a' /* 42 */ */ SELECT a2b, 3",
                "/* 'a' /* 42 */ */ SELECT a2b, ?",
            ),
            (
                "SELECT B'101', X'1F', U&'d\\0061', -7",
                "SELECT B?, X?, U&?, -?",
            ),
            ("SELECT 'unclosed", "SELECT ?"),
            ("SELECT 1e+5+2", "SELECT ?+?"),
            ("SELECT 'é', ünï2", "SELECT ?, ünï2"),
        ];
        for (sql, redacted) in cases {
            assert_eq!(redact_literals(sql), redacted, "{sql}");
        }
    }

    #[test]
    fn every_statement_form_yields_its_effects() {
        for (sql, statements, effects) in table() {
            let expected = Scan {
                statements,
                effects,
            };
            assert_eq!(scan(sql), expected, "{sql}");
        }
    }

    #[test]
    fn every_prefix_and_suffix_of_the_table_scans_without_panic() {
        for (sql, _, _) in table() {
            for (i, _) in sql.char_indices() {
                scan(&sql[..i]);
                scan(&sql[i..]);
                scan_with(&sql[..i], StringLiterals::BackslashEscapes);
            }
        }
    }

    #[test]
    fn backslash_escapes_in_plain_strings_follow_standard_conforming_strings() {
        let hidden = "SELECT 'a\\''; LISTEN x; -- '";
        assert_eq!(scan(hidden).effects, vec![]);
        let off = scan_with(hidden, StringLiterals::BackslashEscapes);
        assert_eq!((off.statements, off.effects), (2, vec![stuck("LISTEN")]));

        let quoted = "SELECT 'a\\'; LISTEN x; --'";
        assert_eq!(scan(quoted).effects, vec![stuck("LISTEN")]);
        assert_eq!(
            scan_with(quoted, StringLiterals::BackslashEscapes).effects,
            vec![]
        );
    }

    /// xorshift64: deterministic, so a failure replays.
    fn random(state: &mut u64) -> usize {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        usize::try_from(*state % 1_000_003).unwrap()
    }

    #[test]
    fn random_text_scans_without_panic() {
        const PIECES: &[&str] = &[
            "'",
            "''",
            "\"",
            "E'",
            "e'\\",
            "\\",
            "$",
            "$$",
            "$a$",
            "$1",
            "--",
            "\n",
            "/*",
            "*/",
            ";",
            "(",
            ")",
            ",",
            ".",
            "=",
            " ",
            "é",
            "ü€",
            "LISTEN ",
            "set ",
            "SESSION ",
            "local ",
            "RESET ",
            "ALL ",
            "prepare ",
            "DEALLOCATE ",
            "discard ",
            "create ",
            "temp ",
            "into ",
            "select ",
            "declare ",
            "with ",
            "hold ",
            "explain ",
            "analyze ",
            "on commit drop ",
            "pg_temp",
            "set_config",
            "pg_advisory_lock",
            "true",
            "time zone ",
            "characteristics ",
            "read ",
            "x",
            "0",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut text = String::new();
        for _ in 0..20_000 {
            text.clear();
            for _ in 0..random(&mut state) % 40 {
                text.push_str(PIECES[random(&mut state) % PIECES.len()]);
            }
            let found = scan(&text);
            assert!(
                found.statements <= text.matches(';').count() + 1,
                "{text:?}"
            );
            scan_with(&text, StringLiterals::BackslashEscapes);
        }
    }

    #[test]
    fn large_and_deeply_nested_text_scans_in_linear_time() {
        let many = "SELECT pg_advisory_lock(1);".repeat(20_000);
        assert_eq!(
            scan(&many),
            Scan {
                statements: 20_000,
                effects: vec![stuck(ADVISORY)]
            }
        );
        let nested = format!(
            "SELECT {}'a', 'b', false{}",
            "set_config(".repeat(20_000),
            ")".repeat(20_000)
        );
        assert_eq!(scan(&nested).effects, vec![set("a"), stuck(SET_CONFIG)]);
        let long_name = format!("SET {}x = 1", "a.".repeat(50_000));
        assert_eq!(scan(&long_name).effects.len(), 1);
        for (text, statements) in [
            ("(".repeat(200_000), 1),
            ("/*".repeat(100_000), 0),
            ("EXPLAIN ".repeat(50_000), 1),
            (format!("$a$ {}", "$a".repeat(100_000)), 1),
            (
                format!("${}$ {}", "t".repeat(10_000), "$t".repeat(50_000)),
                1,
            ),
        ] {
            assert_eq!(scan(&text).statements, statements);
        }
    }
}
