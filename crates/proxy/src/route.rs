//! Routes: which backend a connection goes to, decided by the first route whose match holds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use crate::config::{AuthMode, ClientAddrParam, ExternalMethod, PoolMode, SessionStatePolicy};
use crate::pool::PoolSettings;
use crate::secret::Secret;
use crate::target::{TargetTemplate, TlsSettings};

/// How deeply a matcher's regex may nest (groups, repetitions of repetitions).
const MAX_REGEX_NESTING: u32 = 64;

/// One value test of a route's `match`.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Equal to this.
    Exact(String),
    /// An `sni` wildcard `*.example.com`: the `*` stands for one or more whole labels, the
    /// rule of TLS certificates ([`pgbastion_gateway::tls::sni_matches`]).
    Wildcard(String),
    /// `/regex/`: anchored to the whole value, captures feed the backend URL.
    Regex(Regex),
}

/// Why a `match` value is refused.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    /// `/…/` that is not a valid regex.
    #[error("invalid regex: {0}")]
    Regex(#[from] regex::Error),
    /// A `*` in a value that is not a regex, other than a leading `*.` in `sni`.
    #[error(
        "{0:?}: a \"*\" is a wildcard only as a leading \"*.\" in sni (\"*.db.example.com\": one \
         or more whole labels); elsewhere write a regex between slashes, e.g. \"/app_.*/\""
    )]
    Star(String),
}

impl Matcher {
    /// `/…/` is a regex (anchored), anything else exact; a `*` outside a regex is refused
    /// (it would never match, which a configuration should not do silently).
    pub fn parse(text: &str) -> Result<Self, MatcherError> {
        if let Some(regex) = Self::parse_regex(text)? {
            return Ok(regex);
        }
        if text.contains('*') {
            return Err(MatcherError::Star(text.to_owned()));
        }
        Ok(Self::Exact(text.to_owned()))
    }

    /// Like [`Matcher::parse`], also accepting a `*.suffix` wildcard: for `match.sni`.
    pub fn parse_sni(text: &str) -> Result<Self, MatcherError> {
        if let Some(regex) = Self::parse_regex(text)? {
            return Ok(regex);
        }
        if !text.contains('*') {
            return Ok(Self::Exact(text.to_owned()));
        }
        pgbastion_gateway::tls::check_sni_pattern(text)
            .map_err(|_| MatcherError::Star(text.to_owned()))?;
        Ok(Self::Wildcard(text.to_owned()))
    }

    /// As the configuration writes it (`/…/` around a regex), for the admin console.
    fn written(&self) -> String {
        match self {
            Self::Exact(text) | Self::Wildcard(text) => text.clone(),
            Self::Regex(regex) => format!("/{}/", regex.as_str()),
        }
    }

    /// Whether two matchers test the same thing (regexes by their pattern).
    fn same_as(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) | (Self::Wildcard(a), Self::Wildcard(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }

    fn parse_regex(text: &str) -> Result<Option<Self>, regex::Error> {
        text.strip_prefix('/')
            .and_then(|t| t.strip_suffix('/'))
            .map(|pattern| {
                regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    // Matchers come from a file an operator writes; a nesting this deep is
                    // a mistake, and deeper ones cost the loader's stack.
                    .nest_limit(MAX_REGEX_NESTING)
                    .build()
                    .map(Self::Regex)
            })
            .transpose()
    }

    /// Whether `value` matches; regex captures are appended to `captures`.
    fn matches(&self, value: &str, captures: &mut Captures) -> bool {
        match self {
            Self::Exact(expected) => expected == value,
            Self::Wildcard(pattern) => pgbastion_gateway::tls::sni_matches(pattern, value),
            Self::Regex(regex) => {
                let Some(found) = regex.captures(value) else {
                    return false;
                };
                for (i, name) in regex.capture_names().enumerate().skip(1) {
                    let text = found.get(i).map_or("", |m| m.as_str()).to_owned();
                    if let Some(name) = name {
                        captures.named.insert(name.to_owned(), text.clone());
                    }
                    captures.numbered.push(text);
                }
                true
            }
        }
    }

    /// How many capture groups it contributes, and their names.
    pub fn capture_names(&self) -> Vec<Option<String>> {
        match self {
            Self::Regex(regex) => regex
                .capture_names()
                .skip(1)
                .map(|name| name.map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// What a route can be matched against.
#[derive(Debug, Default, Clone)]
pub struct MatchInput<'a> {
    /// TLS SNI name.
    pub sni: Option<&'a str>,
    /// Startup parameters.
    pub parameters: &'a [(String, String)],
    /// Verified JWT claims (string values), once known.
    pub claims: Option<&'a BTreeMap<String, String>>,
}

impl MatchInput<'_> {
    fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Regex captures of a match: numbered `${1}…` in route order and named `${name}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captures {
    /// `${1}`, `${2}`, … across the route's regexes in the order sni, user, database,
    /// options, parameters (by name), claims (by name).
    pub numbered: Vec<String>,
    /// Named groups.
    pub named: BTreeMap<String, String>,
}

/// The authenticator of an `external` route.
#[derive(Debug, Clone, PartialEq)]
pub struct External {
    /// argv.
    pub command: Vec<String>,
    /// Time limit.
    pub timeout: Duration,
    /// Password exchange.
    pub method: ExternalMethod,
    /// Where the command runs (the configuration file's directory).
    pub dir: PathBuf,
}

/// A compiled `auth_query`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthQuery {
    /// The query (`$1` = user name).
    pub query: String,
    /// Who runs it.
    pub user: String,
    /// Their password.
    pub password: Option<Secret>,
}

/// A compiled `pool = { … }` of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePool {
    /// When a backend connection goes back to the pool.
    pub mode: PoolMode,
    /// What transaction mode does with session state.
    pub session_state: SessionStatePolicy,
    /// The SQL that makes a backend connection fit for the next client in session mode
    /// (default [`crate::backend_reset::DEFAULT_RESET`]); `None`: none.
    pub reset: Option<String>,
    /// Size and lifecycle of each pool of the route.
    pub settings: PoolSettings,
    /// Prepared statements each backend keeps (transaction mode).
    pub statements_per_backend: usize,
    /// Prepared statements one client may hold at once (transaction mode).
    pub statements_per_client: usize,
    /// Transaction mode: unnamed statements are cached on backends as named ones.
    pub cache_unnamed: bool,
}

/// A compiled `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// 1-based position in the file (for logs and errors).
    pub number: usize,
    /// `match.sni`.
    pub sni: Option<Matcher>,
    /// `match.user`, `match.database`, `match.options`, `match.parameters.*`.
    pub parameters: Vec<(String, Matcher)>,
    /// `match.claim.*`.
    pub claims: Vec<(String, Matcher)>,
    /// Client authentication.
    pub auth: AuthMode,
    /// The backend URL, compiled: its placeholders are filled in per connection (its `Debug`
    /// leaves out the password).
    pub backend: TargetTemplate,
    /// Secrets in clear over plaintext allowed.
    pub insecure: bool,
    /// Remove the words of the client's `options` that `match.options` matches
    /// ([`Route::backend_options`]).
    pub strip_options: bool,
    /// Emit a PROXY v2 header to the backend.
    pub proxy_protocol: bool,
    /// Client address as a startup parameter.
    pub client_addr: ClientAddrParam,
    /// Backend connect timeout.
    pub connect_timeout: Duration,
    /// The external authenticator.
    pub external: Option<External>,
    /// SCRAM verifiers from the backend.
    pub auth_query: Option<AuthQuery>,
    /// Where relative certificate paths start (the configuration file's directory).
    pub files_dir: PathBuf,
    /// Pooling for clients of pooled listeners; `None`: every client gets its own backend.
    pub pool: Option<RoutePool>,
}

impl Route {
    /// Whether `other` is the same route, wherever it stands in its file: everything but the
    /// position is equal (secrets included). A reload keeps the pools of such a route.
    pub fn same_as(&self, other: &Self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            number: _,
            sni,
            parameters,
            claims,
            auth,
            backend,
            insecure,
            strip_options,
            proxy_protocol,
            client_addr,
            connect_timeout,
            external,
            auth_query,
            files_dir,
            pool,
        } = self;
        let same_matchers = |a: &[(String, Matcher)], b: &[(String, Matcher)]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((n, m), (o, p))| n == o && m.same_as(p))
        };
        let same_sni = match (sni, &other.sni) {
            (Some(a), Some(b)) => a.same_as(b),
            (a, b) => a.is_none() && b.is_none(),
        };
        same_sni
            && same_matchers(parameters, &other.parameters)
            && same_matchers(claims, &other.claims)
            && *auth == other.auth
            && *backend == other.backend
            && *insecure == other.insecure
            && *strip_options == other.strip_options
            && *proxy_protocol == other.proxy_protocol
            && *client_addr == other.client_addr
            && *connect_timeout == other.connect_timeout
            && *external == other.external
            && *auth_query == other.auth_query
            && *files_dir == other.files_dir
            && *pool == other.pool
    }

    /// Whether every matcher except the claim ones holds; returns the captures.
    pub fn matches(&self, input: &MatchInput<'_>) -> Option<Captures> {
        let mut captures = Captures::default();
        if let Some(sni) = &self.sni {
            if !sni.matches(input.sni?, &mut captures) {
                return None;
            }
        }
        for (name, matcher) in &self.parameters {
            let value = match name.as_str() {
                "database" => input
                    .parameter("database")
                    .filter(|db| !db.is_empty())
                    .or_else(|| input.parameter("user")),
                other => input.parameter(other),
            };
            if !matcher.matches(value.unwrap_or_default(), &mut captures) {
                return None;
            }
        }
        if let Some(claims) = input.claims {
            for (name, matcher) in &self.claims {
                if !matcher.matches(claims.get(name)?, &mut captures) {
                    return None;
                }
            }
        }
        Some(captures)
    }

    /// The `options` startup parameter to send the backend for a client that sent
    /// `client_options`; `None`: send none.
    ///
    /// With [`Route::strip_options`], every word of the options (split on unescaped
    /// whitespace, as PostgreSQL splits them) that the route's `match.options` matches on its
    /// own is removed: such a word is a routing token (`endpoint=ep-1`), which PostgreSQL would
    /// refuse as "invalid command-line argument for server process". Other words are kept
    /// as the client wrote them, escapes included.
    pub fn backend_options(&self, client_options: &str) -> Option<String> {
        let matcher = self
            .parameters
            .iter()
            .find(|(name, _)| name == "options")
            .map(|(_, matcher)| matcher)
            .filter(|_| self.strip_options);
        let Some(matcher) = matcher else {
            return Some(client_options.to_owned()).filter(|o| !o.is_empty());
        };
        let kept: Vec<&str> = option_words(client_options)
            .into_iter()
            .filter(|word| !matcher.matches(word, &mut Captures::default()))
            .collect();
        Some(kept.join(" ")).filter(|o| !o.is_empty())
    }

    /// Whether the route matches on claims (decided only after the token is verified).
    pub fn has_claims(&self) -> bool {
        !self.claims.is_empty()
    }

    /// Certificate files named through placeholders, known only per connection, must exist:
    /// the error names the path as the URL gives it.
    pub fn check_templated_files(&self, tls: &TlsSettings) -> Result<(), String> {
        for (key, path) in self.backend.files(tls, true) {
            if !self.files_dir.join(path).is_file() {
                return Err(format!(
                    "{key} file {} does not exist ({})",
                    path.display(),
                    self.describe()
                ));
            }
        }
        Ok(())
    }

    /// What the route matches, as the configuration writes it (`user=alice sni=*.example.com`;
    /// empty: everything), for the admin console.
    pub fn describe_match(&self) -> String {
        let sni = self.sni.iter().map(|m| ("sni".to_owned(), m));
        let parameters = self.parameters.iter().map(|(n, m)| (n.clone(), m));
        let claims = self.claims.iter().map(|(n, m)| (format!("claim.{n}"), m));
        let keys: Vec<String> = sni
            .chain(parameters)
            .chain(claims)
            .map(|(name, matcher)| format!("{name}={}", matcher.written()))
            .collect();
        keys.join(" ")
    }

    /// A short description for logs and errors.
    pub fn describe(&self) -> String {
        format!("route {} (auth = {})", self.number, self.auth.name())
    }
}

/// The ordered route table.
#[derive(Debug, Clone, Default)]
pub struct Routes(pub Vec<Route>);

impl Routes {
    /// The first route that matches before authentication (claims unknown: routes with claim
    /// matchers match on their other keys), with its captures.
    pub fn select(&self, input: &MatchInput<'_>) -> Option<(&Route, Captures)> {
        self.0
            .iter()
            .find_map(|route| route.matches(input).map(|captures| (route, captures)))
    }

    /// After the token is verified: the first route with `auth` that matches including its
    /// claims.
    pub fn select_with_claims(
        &self,
        input: &MatchInput<'_>,
        auth: AuthMode,
    ) -> Option<(&Route, Captures)> {
        self.0
            .iter()
            .filter(|route| route.auth == auth)
            .find_map(|route| route.matches(input).map(|captures| (route, captures)))
    }
}

/// The words of an `options` string, split on whitespace not escaped by a backslash (as
/// PostgreSQL's `pg_split_opts` does), each as written (escapes kept).
pub(crate) fn option_words(options: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    let mut escaped = false;
    for (i, c) in options.char_indices() {
        if c.is_ascii_whitespace() && !escaped {
            if let Some(s) = start.take() {
                words.push(&options[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
        escaped = c == '\\' && !escaped;
    }
    if let Some(s) = start {
        words.push(&options[s..]);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn route(number: usize, user: &str, sni: Option<&str>) -> Route {
        Route {
            number,
            sni: sni.map(|s| Matcher::parse_sni(s).unwrap()),
            parameters: vec![("user".to_owned(), Matcher::parse(user).unwrap())],
            claims: Vec::new(),
            auth: AuthMode::Trust,
            backend: TargetTemplate::compile(
                &crate::template::Text::compile("postgres://h/db", &[]).unwrap(),
            )
            .unwrap(),
            insecure: false,
            strip_options: false,
            proxy_protocol: false,
            client_addr: ClientAddrParam::None,
            connect_timeout: Duration::from_secs(1),
            external: None,
            auth_query: None,
            files_dir: PathBuf::from("."),
            pool: None,
        }
    }

    #[test]
    fn first_matching_route_wins_and_captures_number_in_order() {
        let routes = Routes(vec![
            route(1, "admin", None),
            route(2, "/^(?P<name>.*)@(.*)$/", Some("*.db.example.com")),
            route(3, "/.*/", None),
        ]);
        let p = params(&[("user", "alice@example.com")]);
        let input = MatchInput {
            sni: Some("t1.db.example.com"),
            parameters: &p,
            claims: None,
        };
        let (chosen, captures) = routes.select(&input).unwrap();
        assert_eq!(chosen.number, 2);
        assert_eq!(captures.numbered, ["alice", "example.com"]);
        assert_eq!(captures.named["name"], "alice");

        let no_sni = MatchInput {
            sni: None,
            ..input.clone()
        };
        assert_eq!(routes.select(&no_sni).unwrap().0.number, 3);
        let other_sni = MatchInput {
            sni: Some("db.example.com"),
            ..input
        };
        assert_eq!(routes.select(&other_sni).unwrap().0.number, 3);
        let p = params(&[("user", "admin")]);
        let admin = MatchInput {
            sni: None,
            parameters: &p,
            claims: None,
        };
        assert_eq!(routes.select(&admin).unwrap().0.number, 1);
    }

    #[test]
    fn matchers_follow_one_wildcard_rule_and_refuse_other_stars() {
        type Parse = fn(&str) -> Result<Matcher, MatcherError>;
        let table: [(&str, Parse, &str, bool); 10] = [
            ("*.example.com", Matcher::parse_sni, "a.example.com", true),
            ("*.example.com", Matcher::parse_sni, "a.b.EXAMPLE.com", true),
            ("*.example.com", Matcher::parse_sni, "example.com", false),
            (
                "*.example.com",
                Matcher::parse_sni,
                "evilexample.com",
                false,
            ),
            (
                "*.example.com",
                Matcher::parse_sni,
                "a.example.com.evil",
                false,
            ),
            ("db.example.com", Matcher::parse_sni, "db.example.com", true),
            ("app", Matcher::parse, "app", true),
            ("app", Matcher::parse, "App", false),
            ("/app_.*/", Matcher::parse, "app_1", true),
            ("/app_.*/", Matcher::parse, "my_app_1", false),
        ];
        for (pattern, parse, value, expected) in table {
            let matcher = parse(pattern).unwrap();
            let found = matcher.matches(value, &mut Captures::default());
            assert_eq!(found, expected, "{pattern} ~ {value}");
        }
        for refused in ["app_*", "*", "*.example.com", "a*b"] {
            assert!(
                matches!(Matcher::parse(refused), Err(MatcherError::Star(_))),
                "{refused}"
            );
        }
        for refused in ["*example.com", "db.*.com", "*.*.com", "*."] {
            assert!(
                matches!(Matcher::parse_sni(refused), Err(MatcherError::Star(_))),
                "{refused}"
            );
        }
    }

    #[test]
    fn backend_options_drop_the_words_the_options_matcher_consumed() {
        let with_options = |matcher: &str, strip: bool| {
            let mut r = route(1, "/.*/", None);
            r.parameters
                .push(("options".to_owned(), Matcher::parse(matcher).unwrap()));
            r.strip_options = strip;
            r
        };
        let neon = with_options("/.*endpoint=(\\w[\\w-]*).*/", true);
        let table = [
            ("endpoint=ep-1", None),
            ("endpoint=ep-1 -c search_path=a", Some("-c search_path=a")),
            ("-c search_path=a endpoint=ep-1", Some("-c search_path=a")),
            (
                "-c  work_mem=64kB\tendpoint=ep-1  ",
                Some("-c work_mem=64kB"),
            ),
            (
                "-c application_name=a\\ b endpoint=ep-1",
                Some("-c application_name=a\\ b"),
            ),
            ("", None),
        ];
        for (client, expected) in table {
            assert_eq!(
                neon.backend_options(client).as_deref(),
                expected,
                "{client:?}"
            );
        }
        let exact = with_options("endpoint=ep-1", true);
        assert_eq!(exact.backend_options("endpoint=ep-1"), None);
        let kept = with_options("/.*endpoint=(\\w+).*/", false);
        assert_eq!(
            kept.backend_options("endpoint=ep1 -c a=b").as_deref(),
            Some("endpoint=ep1 -c a=b")
        );
        let no_options_matcher = route(1, "/.*/", None);
        assert_eq!(
            no_options_matcher.backend_options("-c a=b").as_deref(),
            Some("-c a=b")
        );
        assert_eq!(no_options_matcher.backend_options(""), None);
    }

    #[test]
    fn regexes_are_anchored_and_database_defaults_to_user() {
        let matcher = Matcher::parse("/app/").unwrap();
        assert!(!matcher.matches("myapp", &mut Captures::default()));
        let mut r = route(1, "/.*/", None);
        r.parameters
            .push(("database".to_owned(), Matcher::parse("bob").unwrap()));
        let p = params(&[("user", "bob")]);
        assert!(r
            .matches(&MatchInput {
                sni: None,
                parameters: &p,
                claims: None
            })
            .is_some());
    }
}
