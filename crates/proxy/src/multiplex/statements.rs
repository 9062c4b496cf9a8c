//! Prepared statements under transaction pooling: each client's names, the names pgbastion
//! gives them on the backends, and which backend holds which.
//!
//! A client's `Parse("s1", text, types)` becomes a [`Prepared`] whose server-side name is
//! derived from what the statement means (its text, its parameter types and the client's
//! settings that PostgreSQL parses a text under), so two clients preparing the same statement share one on each backend,
//! and a client never reaches a statement prepared for a different meaning.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

/// Whether `query` is a `SET` or `RESET` (which the settings it is read under leave as it
/// is), by its first word.
fn sets_parameters(query: &str) -> bool {
    let word = first_word(query);
    word.eq_ignore_ascii_case("set") || word.eq_ignore_ascii_case("reset")
}

/// The first word of `query`, past spaces and comments.
fn first_word(query: &str) -> &str {
    let mut text = query.trim_start();
    loop {
        if let Some(rest) = text.strip_prefix("--") {
            text = rest
                .find('\n')
                .map_or("", |at| &rest[at + 1..])
                .trim_start();
        } else if let Some(rest) = text.strip_prefix("/*") {
            text = rest
                .find("*/")
                .map_or("", |at| &rest[at + 2..])
                .trim_start();
        } else {
            break;
        }
    }
    leading_word(text)
}

/// The letters `text` begins with, past spaces (none before a comment or a parenthesis).
pub fn leading_word(text: &str) -> &str {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    &text[..end]
}

/// Whether `query` holds `needle` (ASCII, in any case).
pub fn mentions(query: &str, needle: &[u8]) -> bool {
    query
        .as_bytes()
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

/// Whether running `query` may change a setting statements' texts are read under (but
/// `search_path`, followed otherwise), however briefly: a `RESET` or `DISCARD`, or a `SET`,
/// a `DO` block or a `set_config` call that names one of them (`SET LOCAL`, `SET TIME ZONE`,
/// `SET NAMES` included). By its text, erring towards yes.
pub fn may_change_reading(query: &str) -> bool {
    let word = first_word(query);
    if word.eq_ignore_ascii_case("reset") || word.eq_ignore_ascii_case("discard") {
        return true;
    }
    let sets = word.eq_ignore_ascii_case("set")
        || word.eq_ignore_ascii_case("do")
        || mentions(query, b"set_config");
    sets && [
        &b"zone"[..],
        b"datestyle",
        b"intervalstyle",
        b"standard_conforming_strings",
        b"client_encoding",
        b"names",
    ]
    .iter()
    .any(|needle| mentions(query, needle))
}

/// How the names of pgbastion's statements on backends begin.
pub const SERVER_PREFIX: &str = "pgbastion_";

/// A statement as pgbastion prepares it on backends.
#[derive(Debug)]
pub struct Prepared {
    /// The name on every backend: `pgbastion_` and 32 hex digits.
    server_name: Arc<str>,
    /// The encoded Parse message under `server_name`, ready to send to any backend.
    parse: Bytes,
    /// The client settings it means what it means under.
    namespace: Arc<str>,
    /// Whether those settings may change what it means (not for a `SET` or `RESET`).
    read_under_settings: bool,
    /// Whether running it may change them ([`may_change_reading`]).
    changes_reading: bool,
}

impl Prepared {
    /// The statement `query` with `param_types` (encoded big-endian, as in the client's
    /// Parse), as read under `namespace` (the client's settings that PostgreSQL parses a
    /// text under).
    pub fn new(query: &str, param_types: &[u8], namespace: &Arc<str>) -> Self {
        let mut hash = Sha256::new();
        for part in [namespace.as_bytes(), param_types, query.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        let digest = hash.finalize();
        let mut server_name = String::with_capacity(42);
        server_name.push_str(SERVER_PREFIX);
        for byte in &digest[..16] {
            let _ = write!(server_name, "{byte:02x}");
        }
        let parse = encode_parse(&server_name, query, param_types);
        Self {
            server_name: server_name.into(),
            parse,
            namespace: namespace.clone(),
            read_under_settings: !sets_parameters(query),
            changes_reading: may_change_reading(query),
        }
    }

    /// Whether running it may change the settings texts are read under.
    pub fn changes_reading(&self) -> bool {
        self.changes_reading
    }

    /// Whether the client settings it is read under may change what it means.
    pub fn read_under_settings(&self) -> bool {
        self.read_under_settings
    }

    /// The client settings it is read under.
    pub fn namespace(&self) -> &Arc<str> {
        &self.namespace
    }

    /// The backend-side name.
    pub fn server_name(&self) -> &Arc<str> {
        &self.server_name
    }

    /// The Parse message that creates it on a backend.
    pub fn parse(&self) -> &Bytes {
        &self.parse
    }
}

/// A Parse message: `name`, `query`, and the parameter-type block as the client sent it (a
/// 16-bit count and that many OIDs).
pub fn encode_parse(name: &str, query: &str, param_types: &[u8]) -> Bytes {
    let body_len = name.len() + 1 + query.len() + 1 + param_types.len();
    let mut out = BytesMut::with_capacity(5 + body_len);
    out.extend_from_slice(b"P");
    // Lengths were bounded by the client's message, which fitted in an i32.
    out.extend_from_slice(&((body_len + 4) as u32).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(query.as_bytes());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(param_types);
    out.freeze()
}

/// One client's prepared statements, by the names it gave them.
#[derive(Debug, Default)]
pub struct ClientStatements {
    named: HashMap<String, Arc<Prepared>>,
    limit: usize,
}

impl ClientStatements {
    /// A client allowed at most `limit` named statements at once.
    pub fn new(limit: usize) -> Self {
        Self {
            named: HashMap::new(),
            limit,
        }
    }

    /// The statement the client calls `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Prepared>> {
        self.named.get(name)
    }

    /// Whether the client has as many statements as it may.
    pub fn is_full(&self) -> bool {
        self.named.len() >= self.limit
    }

    /// Names `prepared` `name`; returns what had that name.
    pub fn insert(&mut self, name: String, prepared: Arc<Prepared>) -> Option<Arc<Prepared>> {
        self.named.insert(name, prepared)
    }

    /// Forgets `name`; returns what it named.
    pub fn remove(&mut self, name: &str) -> Option<Arc<Prepared>> {
        self.named.remove(name)
    }

    /// Keeps only the names `keep` says (`DEALLOCATE ALL`, `DISCARD ALL`).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.named.retain(|name, _| keep(name));
    }

    /// How many statements the client has.
    pub fn len(&self) -> usize {
        self.named.len()
    }

    /// Whether the client has none.
    pub fn is_empty(&self) -> bool {
        self.named.is_empty()
    }
}

/// The statements one backend connection holds, least recently used first out.
#[derive(Debug)]
pub struct BackendStatements {
    used: HashMap<Arc<str>, u64>,
    clock: u64,
    capacity: usize,
}

impl BackendStatements {
    /// A cache that keeps about `capacity` statements (it may hold more during one
    /// exchange; [`evict`](Self::evict) trims it between exchanges).
    pub fn new(capacity: usize) -> Self {
        Self {
            used: HashMap::new(),
            clock: 0,
            capacity,
        }
    }

    /// How many statements it keeps between exchanges.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the backend holds `name`; marks it used.
    pub fn touch(&mut self, name: &Arc<str>) -> bool {
        self.clock += 1;
        match self.used.get_mut(name) {
            Some(stamp) => {
                *stamp = self.clock;
                true
            }
            None => false,
        }
    }

    /// Whether the backend holds `name` (not marked used).
    pub fn contains(&self, name: &str) -> bool {
        self.used.contains_key(name)
    }

    /// Records that `name` is (being) prepared on the backend.
    pub fn insert(&mut self, name: Arc<str>) {
        self.clock += 1;
        self.used.insert(name, self.clock);
    }

    /// Records that `name` is not on the backend (its Parse failed or was skipped).
    pub fn remove(&mut self, name: &str) {
        self.used.remove(name);
    }

    /// Keeps only the statements `keep` says (the backend ran `DISCARD ALL` or
    /// `DEALLOCATE ALL`).
    pub fn retain(&mut self, keep: impl Fn(&Arc<str>) -> bool) {
        self.used.retain(|name, _| keep(name));
    }

    /// How many statements the backend holds.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// Removes the least recently used statements beyond the capacity and returns their
    /// names, for the caller to Close on the backend.
    pub fn evict(&mut self) -> Vec<Arc<str>> {
        let excess = self.used.len().saturating_sub(self.capacity);
        if excess == 0 {
            return Vec::new();
        }
        let mut by_age: Vec<(u64, Arc<str>)> = self
            .used
            .iter()
            .map(|(name, stamp)| (*stamp, name.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(stamp, _)| *stamp);
        by_age.truncate(excess);
        by_age
            .into_iter()
            .map(|(_, name)| {
                self.used.remove(&name);
                name
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_that_may_change_the_settings_statements_are_read_under() {
        for (sql, changes) in [
            ("SET TimeZone = 'UTC'", true),
            ("SET LOCAL TIME  ZONE 'UTC'", true),
            ("set\tlocal datestyle to sql", true),
            ("/* app */ SET LOCAL NAMES 'LATIN1'", true),
            ("-- app\nSET LOCAL IntervalStyle = iso_8601", true),
            ("SELECT set_config('DateStyle', 'SQL', true)", true),
            ("DO $$ BEGIN SET LOCAL TimeZone = 'UTC'; END $$", true),
            ("RESET ALL", true),
            ("DISCARD ALL", true),
            ("SELECT now() AT TIME ZONE 'UTC'", false),
            ("SELECT current_setting('TimeZone')", false),
            ("SET work_mem = '64MB'", false),
            ("SELECT 1", false),
        ] {
            assert_eq!(may_change_reading(sql), changes, "{sql}");
        }
        assert!(
            !Prepared::new("/* x */ SET TimeZone = 'UTC'", &[0, 0], &"".into())
                .read_under_settings()
        );
    }

    #[test]
    fn the_server_name_follows_meaning_not_the_client_name() {
        let a = Prepared::new("SELECT $1", &[0, 1, 0, 0, 0, 23], &"public".into());
        let b = Prepared::new("SELECT $1", &[0, 1, 0, 0, 0, 23], &"public".into());
        let other_types = Prepared::new("SELECT $1", &[0, 1, 0, 0, 0, 25], &"public".into());
        let other_path = Prepared::new("SELECT $1", &[0, 1, 0, 0, 0, 23], &"tenant".into());
        assert_eq!(a.server_name(), b.server_name());
        assert_ne!(a.server_name(), other_types.server_name());
        assert_ne!(a.server_name(), other_path.server_name());
        assert!(a.server_name().len() < 64, "fits NAMEDATALEN");
    }

    #[test]
    fn the_parse_message_decodes_as_the_client_statement_under_the_server_name() {
        let prepared = Prepared::new("SELECT $1::int", &[0, 1, 0, 0, 0, 23], &"".into());
        let mut buf = BytesMut::from(&prepared.parse()[..]);
        let frame = pgbastion_wire::FrameDecoder::new(1 << 20)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        match pgbastion_wire::FrontendMessage::decode(&frame).unwrap() {
            pgbastion_wire::FrontendMessage::Parse {
                name,
                query,
                param_types,
            } => {
                assert_eq!(name, &**prepared.server_name());
                assert_eq!(query, "SELECT $1::int");
                assert_eq!(param_types, vec![23]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backend_statements_evict_the_least_recently_used_beyond_capacity() {
        let mut cache = BackendStatements::new(2);
        let names: Vec<Arc<str>> = ["a", "b", "c"].iter().map(|n| Arc::from(*n)).collect();
        for name in &names {
            cache.insert(name.clone());
        }
        assert!(cache.touch(&names[0]));
        assert_eq!(cache.evict(), vec![names[1].clone()]);
        assert!(!cache.touch(&names[1]));
        assert!(cache.evict().is_empty());
        assert_eq!(cache.len(), 2);
    }
}
