//! Backend URLs (`postgres://user:password@host:port/database?sslmode=…`), as libpq reads
//! them: a route's URL is a [`TargetTemplate`], taken apart once at load, which gives each
//! connection its [`Target`] by filling the placeholders in.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::template::{Placeholder, Text, Token, Values};

/// Where and how to reach a backend.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// TCP host and port, or a Unix socket.
    pub address: Address,
    /// Backend user; `None`: the client's.
    pub user: Option<String>,
    /// Backend password; `None`: none (or the client's, on passthrough routes).
    pub password: Option<String>,
    /// Backend database; `None`: the client's.
    pub database: Option<String>,
    /// TLS policy and files.
    pub tls: TlsSettings,
    /// Connect timeout from the URL (the route's when absent).
    pub connect_timeout: Option<Duration>,
    /// Other query parameters, passed as startup parameters (`application_name`, `options`…).
    pub parameters: Vec<(String, String)>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.address)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("sslmode", &self.tls.sslmode)
            .finish_non_exhaustive()
    }
}

/// How to set up TLS to a backend: libpq's `sslmode`, `sslrootcert`, `sslcert`, `sslkey`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// TLS policy.
    pub sslmode: SslMode,
    /// CA certificates for verify-ca / verify-full.
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate and key for certificate authentication to the backend.
    pub sslcert: Option<PathBuf>,
    /// The client certificate's key.
    pub sslkey: Option<PathBuf>,
}

impl TlsSettings {
    /// The certificate files, by their URL key.
    pub fn files(&self) -> [(&'static str, Option<&Path>); 3] {
        [
            ("sslrootcert", self.sslrootcert.as_deref()),
            ("sslcert", self.sslcert.as_deref()),
            ("sslkey", self.sslkey.as_deref()),
        ]
    }
}

/// A backend address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// Host name or IP, and port.
    Tcp(String, u16),
    /// The socket file (`<dir>/.s.PGSQL.<port>`).
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(host, port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp(host, port) => write!(f, "{host}:{port}"),
            Self::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Address {
    /// The host name for TLS verification (SNI and verify-full).
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Tcp(host, _) => Some(host),
            Self::Unix(_) => None,
        }
    }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// libpq tries plaintext first; pgbastion treats it as `disable`.
    Allow,
    /// TLS when the server offers it, no verification.
    #[default]
    Prefer,
    /// TLS, no verification (verify-ca when `sslrootcert` is given, as libpq).
    Require,
    /// TLS, the chain verified against `sslrootcert`.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

/// Why a backend URL is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backend URL: {0}")]
pub struct TargetError(String);

/// A backend URL taken apart and percent-decoded, before its parts are interpreted: `T` is
/// `String` for a URL, [`Text`] for a template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts<T> {
    host: T,
    port: Option<u16>,
    user: T,
    password: Option<T>,
    database: T,
    query: Vec<(String, T)>,
}

impl<T> Parts<T> {
    fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Parts<U> {
        Parts {
            host: f(&self.host),
            port: self.port,
            user: f(&self.user),
            password: self.password.as_ref().map(&mut f),
            database: f(&self.database),
            query: self.query.iter().map(|(k, v)| (k.clone(), f(v))).collect(),
        }
    }
}

impl Parts<String> {
    /// Parses a `postgres://` or `postgresql://` URL.
    fn split(text: &str) -> Result<Self, TargetError> {
        let url = url::Url::parse(text).map_err(|e| TargetError(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(TargetError(format!(
                "scheme must be postgres:// or postgresql://, not {}://",
                url.scheme()
            )));
        }
        // The message never repeats the text: it may be a password.
        let decode = |s: &str| {
            percent_decode(s).map_err(|()| {
                TargetError(
                    "invalid percent-encoding (not UTF-8) in the host, user, password or database"
                        .to_owned(),
                )
            })
        };
        Ok(Self {
            host: decode(url.host_str().unwrap_or_default())?,
            port: url.port(),
            user: decode(url.username())?,
            password: url.password().map(decode).transpose()?,
            database: decode(url.path().trim_start_matches('/'))?,
            query: url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        })
    }
}

impl Target {
    /// Interprets the parts of a URL as libpq does: the query's `host`, `port`, `user`,
    /// `password` and `dbname` override the URL's, the TLS keys are checked together.
    fn from_parts(parts: Parts<String>) -> Result<Self, TargetError> {
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let mut host = parts.host;
        let mut port = parts.port.unwrap_or(5432);
        let mut target = Self {
            address: Address::Tcp(String::new(), 0),
            user: non_empty(parts.user),
            password: parts.password,
            database: non_empty(parts.database),
            tls: TlsSettings::default(),
            connect_timeout: None,
            parameters: Vec::new(),
        };
        for (key, value) in parts.query {
            match key.as_str() {
                "host" => host = value,
                "port" => {
                    port = value
                        .parse()
                        .map_err(|_| TargetError(format!("port={value} is not a port number")))?;
                }
                _ => target.set(key, value)?,
            }
        }
        target.address = address(host, port)?;
        target.check_tls()?;
        Ok(target)
    }

    /// Applies one query parameter other than `host` and `port`.
    fn set(&mut self, key: String, value: String) -> Result<(), TargetError> {
        match key.as_str() {
            "sslmode" => {
                self.tls.sslmode = SslMode::parse(&value).ok_or_else(|| {
                    TargetError(format!(
                        "sslmode={value} is not one of disable, allow, prefer, require, \
                         verify-ca, verify-full"
                    ))
                })?;
            }
            "sslrootcert" => self.tls.sslrootcert = Some(value.into()),
            "sslcert" => self.tls.sslcert = Some(value.into()),
            "sslkey" => self.tls.sslkey = Some(value.into()),
            "user" => self.user = Some(value),
            "password" => self.password = Some(value),
            "dbname" => self.database = Some(value),
            "connect_timeout" => {
                let secs: u64 = value.parse().map_err(|_| {
                    TargetError(format!(
                        "connect_timeout={value} is not a number of seconds"
                    ))
                })?;
                self.connect_timeout = Some(Duration::from_secs(secs));
            }
            "channel_binding" | "target_session_attrs" | "gssencmode" => {}
            _ => self.parameters.push((key, value)),
        }
        Ok(())
    }

    fn check_tls(&self) -> Result<(), TargetError> {
        let tls = &self.tls;
        if matches!(tls.sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
            && tls.sslrootcert.is_none()
        {
            return Err(TargetError(
                "sslmode=verify-ca and verify-full need sslrootcert=FILE (the CA to trust)"
                    .to_owned(),
            ));
        }
        if tls.sslcert.is_some() != tls.sslkey.is_some() {
            return Err(TargetError("sslcert and sslkey go together".to_owned()));
        }
        Ok(())
    }
}

/// A host starting with `/` is a Unix socket directory.
fn address(host: String, port: u16) -> Result<Address, TargetError> {
    if host.is_empty() {
        return Err(TargetError(
            "no host (add host:port, or ?host=/socket/dir)".to_owned(),
        ));
    }
    Ok(if host.starts_with('/') {
        Address::Unix(PathBuf::from(host).join(format!(".s.PGSQL.{port}")))
    } else {
        Address::Tcp(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        )
    })
}

fn percent_decode(text: &str) -> Result<String, ()> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| ())
}

/// The backend URL keys that name files.
const FILE_KEYS: [&str; 3] = ["sslrootcert", "sslcert", "sslkey"];

/// A route's backend URL, taken apart once at load: each part (host, user, password,
/// database, query values) is a [`Text`] whose placeholders a connection fills in. A value
/// goes into its part as it is, after the URL was parsed, so it can never change the URL's
/// structure, and reaches the backend exactly as captured (`@`, `/`, `%`, spaces, …).
#[derive(Clone, PartialEq, Eq)]
pub struct TargetTemplate(Parts<Text>);

impl fmt::Debug for TargetTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetTemplate")
            .field("host", &self.0.host)
            .field("port", &self.0.port)
            .field("user", &self.0.user)
            .field("database", &self.0.database)
            .finish_non_exhaustive()
    }
}

impl TargetTemplate {
    /// The URL without its password and query (`postgres://user@host:port/database`), for
    /// the admin console: a password, written there or expanded from the environment, is
    /// never shown.
    pub fn redacted(&self) -> String {
        let Parts {
            host,
            port,
            user,
            database,
            ..
        } = &self.0;
        let port = port.map(|port| format!(":{port}")).unwrap_or_default();
        format!("postgres://{user}@{host}{port}/{database}")
    }
}

/// Why a route's URL gives no usable target for one client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    /// The filled-in URL is not usable (e.g. `sslmode=${1}` with a value that is no mode).
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A value for a placeholder in `sslrootcert`, `sslcert` or `sslkey` is not a plain file
    /// name.
    #[error(
        "the value this client gives the {0} placeholder is not a plain file name (it contains \
         / or \\, or starts with .)"
    )]
    FileName(&'static str),
}

impl TargetTemplate {
    /// Takes a backend URL (compiled by [`Text::compile`]) apart. A placeholder may stand in
    /// the user, password, host, database and query values, not in the scheme, the port
    /// after `host:` (write `?port=${…}`) or a query key.
    pub fn compile(url: &Text) -> Result<Self, TargetError> {
        let markers = Markers::for_url(url);
        let (marked, placeholders) = markers.mark(url);
        let Ok(parts) = Parts::split(&marked) else {
            // What is wrong with the URL itself, if anything; else where a placeholder is.
            Parts::split(&url.render(|_| ""))?;
            return Err(TargetError(
                "a placeholder can stand in the user, password, host, database and query \
                 values, not in the scheme or the port (write ?port=${…})"
                    .to_owned(),
            ));
        };
        if parts.query.iter().any(|(key, _)| markers.found_in(key)) {
            return Err(TargetError(
                "a placeholder cannot name a query parameter, only give its value".to_owned(),
            ));
        }
        Ok(Self(parts.map(|part| markers.unmark(part, &placeholders))))
    }

    /// The target for one connection. Values for placeholders in certificate paths must be
    /// plain file names, so that a client cannot point pgbastion at a file in another
    /// directory.
    pub fn fill(&self, values: &Values<'_>) -> Result<Target, FillError> {
        for (key, value) in &self.0.query {
            if let Some(file_key) = FILE_KEYS.into_iter().find(|k| k == key) {
                if !value.placeholder_values(values).all(is_file_name_part) {
                    return Err(FillError::FileName(file_key));
                }
            }
        }
        Ok(Target::from_parts(self.0.map(|part| part.fill(values)))?)
    }

    /// The certificate files of `tls` (filled from this template) whose paths hold
    /// placeholders (`templated`: known only per connection), or those whose paths do not
    /// (known at load).
    pub fn files<'t>(
        &self,
        tls: &'t TlsSettings,
        templated: bool,
    ) -> Vec<(&'static str, &'t Path)> {
        tls.files()
            .into_iter()
            .filter(|(key, _)| self.is_templated(key) == templated)
            .filter_map(|(key, path)| Some((key, path?)))
            .collect()
    }

    /// The backend's address when no placeholder stands in it (nor in a `host` or `port`
    /// query value): one that can be probed before any client connects.
    pub fn fixed_address(&self) -> Option<Address> {
        let templated_query = self
            .0
            .query
            .iter()
            .any(|(key, value)| (key == "host" || key == "port") && value.has_placeholders());
        if self.0.host.has_placeholders() || templated_query {
            return None;
        }
        let captures = crate::route::Captures::default();
        let values = Values {
            captures: &captures,
            user: "",
            database: "",
        };
        self.fill(&values).ok().map(|target| target.address)
    }

    fn is_templated(&self, key: &str) -> bool {
        self.0
            .query
            .iter()
            .any(|(k, value)| k == key && value.has_placeholders())
    }
}

/// Whether a value may fill a placeholder in a certificate path: one plain file-name part (no
/// `/` or `\`, not `.`, `..` or a hidden name).
fn is_file_name_part(value: &str) -> bool {
    !value.contains(['/', '\\', '\0']) && !value.starts_with('.')
}

/// Stand-ins for placeholders while a template is parsed as a URL: `<prefix><index>x`, ASCII
/// letters and digits that the URL parser keeps as they are in every part, with a prefix that
/// the URL's own text (percent-decoded, any case) does not contain, so every occurrence after
/// parsing is one of ours. (The prefix has no proper prefix that is also its suffix, so an
/// occurrence cannot straddle literal text and a marker either.)
struct Markers {
    prefix: String,
}

impl Markers {
    fn for_url(url: &Text) -> Self {
        let literal = url.render(|_| " ");
        let decoded = percent_encoding::percent_decode_str(&literal)
            .decode_utf8_lossy()
            .to_ascii_lowercase();
        let mut prefix = "pgbastionph".to_owned();
        while decoded.contains(&prefix) {
            prefix.push('q');
        }
        Self { prefix }
    }

    /// The URL with each placeholder replaced by its marker, and the placeholders by index.
    fn mark(&self, url: &Text) -> (String, Vec<Placeholder>) {
        let mut placeholders = Vec::new();
        let mut marked = String::new();
        for token in url.tokens() {
            match token {
                Token::Literal(literal) => marked.push_str(literal),
                Token::Placeholder(placeholder) => {
                    marked.push_str(&format!("{}{}x", self.prefix, placeholders.len()));
                    placeholders.push(placeholder.clone());
                }
            }
        }
        (marked, placeholders)
    }

    fn found_in(&self, part: &str) -> bool {
        part.contains(&self.prefix)
    }

    /// A parsed part with its markers turned back into placeholders.
    fn unmark(&self, part: &str, placeholders: &[Placeholder]) -> Text {
        let mut text = Text::default();
        let mut rest = part;
        while let Some(start) = rest.find(&self.prefix) {
            let after = &rest[start + self.prefix.len()..];
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let placeholder = after[digits..]
                .starts_with('x')
                .then(|| after[..digits].parse::<usize>().ok())
                .flatten()
                .and_then(|i| placeholders.get(i));
            let Some(placeholder) = placeholder else {
                // Not one of ours after all (it cannot happen); keep it as text.
                text.push(Token::Literal(rest[..start + self.prefix.len()].to_owned()));
                rest = after;
                continue;
            };
            text.push(Token::Literal(rest[..start].to_owned()));
            text.push(Token::Placeholder(placeholder.clone()));
            rest = &after[digits + 1..];
        }
        text.push(Token::Literal(rest.to_owned()));
        text
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::route::Captures;

    /// The target of a URL without placeholders.
    fn parse(url: &str) -> Result<Target, String> {
        let text = Text::compile(url, &[]).map_err(|e| e.to_string())?;
        let template = TargetTemplate::compile(&text).map_err(|e| e.to_string())?;
        fill(&template, &Captures::default(), "u", "d").map_err(|e| e.to_string())
    }

    fn template(url: &str, groups: &[Option<String>]) -> TargetTemplate {
        TargetTemplate::compile(&Text::compile(url, groups).unwrap()).unwrap()
    }

    fn captures(numbered: &[&str], named: &[(&str, &str)]) -> Captures {
        Captures {
            numbered: numbered.iter().map(|v| (*v).to_owned()).collect(),
            named: named
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn fill(
        template: &TargetTemplate,
        captures: &Captures,
        user: &str,
        database: &str,
    ) -> Result<Target, FillError> {
        template.fill(&Values {
            captures,
            user,
            database,
        })
    }

    #[test]
    fn only_an_address_without_placeholders_is_fixed() {
        let groups = [None, Some("tenant".to_owned())];
        let fixed = template("postgres://${1}@db.internal:5433/${database}", &groups);
        assert_eq!(
            fixed.fixed_address(),
            Some(Address::Tcp("db.internal".into(), 5433))
        );
        let socket = template("postgres:///app?host=/run/pg", &[]);
        assert_eq!(
            socket.fixed_address(),
            Some(Address::Unix("/run/pg/.s.PGSQL.5432".into()))
        );
        for url in [
            "postgres://${tenant}.db.internal/app",
            "postgres://db.internal/app?port=${1}",
            "postgres:///app?host=${1}",
        ] {
            assert_eq!(template(url, &groups).fixed_address(), None, "{url}");
        }
    }

    #[test]
    fn parses_libpq_urls() {
        let t = parse(
            "postgres://app%40x:p%3Ass@db.example.com:6543/app?sslmode=verify-full&sslrootcert=ca.pem&application_name=web",
        )
        .unwrap();
        assert_eq!(t.address, Address::Tcp("db.example.com".into(), 6543));
        assert_eq!(t.user.as_deref(), Some("app@x"));
        assert_eq!(t.password.as_deref(), Some("p:ss"));
        assert_eq!(t.database.as_deref(), Some("app"));
        assert_eq!(t.tls.sslmode, SslMode::VerifyFull);
        assert_eq!(
            t.parameters,
            [("application_name".to_owned(), "web".to_owned())]
        );
        assert!(!format!("{t:?}").contains("p:ss"));
    }

    #[test]
    fn unix_sockets_and_defaults() {
        let t = parse("postgresql:///db?host=/var/run/postgresql").unwrap();
        assert_eq!(
            t.address,
            Address::Unix("/var/run/postgresql/.s.PGSQL.5432".into())
        );
        assert_eq!(
            (t.user, t.password, t.tls.sslmode),
            (None, None, SslMode::Prefer)
        );
        let t = parse("postgres://%2Ftmp:5433/db").unwrap();
        assert_eq!(t.address, Address::Unix("/tmp/.s.PGSQL.5433".into()));
        let t = parse("postgres://[::1]:5432").unwrap();
        assert_eq!(t.address, Address::Tcp("::1".into(), 5432));
        assert_eq!(t.address.to_string(), "[::1]:5432");
    }

    #[test]
    fn refuses_what_libpq_would_not_do_safely() {
        for bad in [
            "mysql://h/db",
            "postgres://h/db?sslmode=verify-full",
            "postgres://h/db?sslmode=maybe",
            "postgres://h/db?sslcert=a.pem",
            "postgres:///db",
            "postgres://h/db?port=x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_fill_the_parts_they_stand_in() {
        let groups = [None, Some("tenant".to_owned()), None];
        let t = template(
            "postgres://app_${1}:${3}@${tenant}.internal/${tenant}_${database}?\
             application_name=${user}&options=-c%20x%3D${3}",
            &groups,
        );
        let c = captures(&["a/b@c", "t1"], &[("tenant", "t1")]);
        let filled = fill(&t, &c, "u", "d").unwrap();
        assert_eq!(filled.user.as_deref(), Some("app_a/b@c"));
        // A group that did not take part is empty.
        assert_eq!(filled.password.as_deref(), Some(""));
        assert_eq!(filled.address, Address::Tcp("t1.internal".into(), 5432));
        assert_eq!(filled.database.as_deref(), Some("t1_d"));
        assert_eq!(
            filled.parameters,
            [
                ("application_name".to_owned(), "u".to_owned()),
                ("options".to_owned(), "-c x=".to_owned())
            ]
        );
        let socket = template("postgres://h/db?host=${1}", &[None]);
        let filled = fill(&socket, &captures(&["/run/pg"], &[]), "u", "d").unwrap();
        // ?host= overrides the URL's host, and a host starting with / is a socket directory.
        assert_eq!(
            filled.address,
            Address::Unix("/run/pg/.s.PGSQL.5432".into())
        );
    }

    #[test]
    fn filled_values_reach_every_part_exactly_and_cannot_change_the_structure() {
        let t = template("postgres://${1}:${1}@h/${1}?application_name=${1}", &[None]);
        for value in [
            "a b",
            "a+b",
            "a@b",
            "a/b",
            "50%",
            "a:b",
            "a?b",
            "a#b",
            "ünï ©ode",
            "&x=y",
            "%20",
            "pgbastionph0x",
        ] {
            let c = captures(&[value], &[]);
            let target = fill(&t, &c, "u", "d").unwrap();
            assert_eq!(target.user.as_deref(), Some(value), "user");
            assert_eq!(target.password.as_deref(), Some(value), "password");
            assert_eq!(target.database.as_deref(), Some(value), "database");
            assert_eq!(
                target.parameters,
                [("application_name".to_owned(), value.to_owned())],
                "parameter"
            );
            assert_eq!(target.address, Address::Tcp("h".into(), 5432));
        }
    }

    #[test]
    fn literal_text_that_looks_like_a_marker_stays_literal() {
        let t = template(
            "postgres://pgbastionph0x:PGBASTIONPH1x@h/%70gbastionph0x_${1}",
            &[None],
        );
        let c = captures(&["v"], &[]);
        let target = fill(&t, &c, "u", "d").unwrap();
        assert_eq!(target.user.as_deref(), Some("pgbastionph0x"));
        assert_eq!(target.password.as_deref(), Some("PGBASTIONPH1x"));
        assert_eq!(target.database.as_deref(), Some("pgbastionph0x_v"));
    }

    #[test]
    fn certificate_path_placeholders_take_only_plain_file_names() {
        let t = template(
            "postgres://h/db?sslmode=verify-ca&sslrootcert=certs/${tenant}.pem\
             &application_name=${user}",
            &[Some("tenant".to_owned())],
        );
        let tenant = |value: &str| captures(&[value], &[("tenant", value)]);
        let target = fill(&t, &tenant("t1"), "u", "d").unwrap();
        assert_eq!(target.tls.sslrootcert, Some(PathBuf::from("certs/t1.pem")));
        assert_eq!(
            t.files(&target.tls, true),
            [("sslrootcert", Path::new("certs/t1.pem"))]
        );
        assert_eq!(t.files(&target.tls, false), []);
        // Elsewhere in the URL any value is fine.
        fill(&t, &tenant("t1"), "a/b", "d").unwrap();
        for bad in ["..", "../../etc/ssl/x", "a/b", "a\\b", ".hidden"] {
            let err = fill(&t, &tenant(bad), "u", "d").unwrap_err();
            assert_eq!(err, FillError::FileName("sslrootcert"), "{bad}");
        }
        let t = template(
            "postgres://h/db?sslcert=c/${user}.crt&sslkey=c/${user}.key",
            &[],
        );
        assert!(fill(&t, &Captures::default(), "../x", "d").is_err());
        let target = fill(&t, &Captures::default(), "alice", "d").unwrap();
        assert_eq!(
            t.files(&target.tls, true),
            [
                ("sslcert", Path::new("c/alice.crt")),
                ("sslkey", Path::new("c/alice.key"))
            ]
        );
    }

    #[test]
    fn a_filled_url_is_checked_as_a_fixed_one_is() {
        let t = template("postgres://h/db?sslmode=${1}", &[None]);
        fill(&t, &captures(&["require"], &[]), "u", "d").unwrap();
        let err = fill(&t, &captures(&["maybe"], &[]), "u", "d").unwrap_err();
        assert!(err.to_string().contains("sslmode=maybe"), "{err}");
    }

    #[test]
    fn placeholders_where_they_cannot_stand_are_refused_at_load() {
        let table = [
            ("postgres://h:${1}/db", "not in the scheme or the port"),
            // The URL is wrong with the placeholder empty too: that error is the one told.
            ("${1}://h/db", "relative URL without a base"),
            ("postgres${1}://h/db", "not in the scheme or the port"),
            ("postgres://h/db?${1}=x", "cannot name a query parameter"),
            ("mysql://h/${1}", "scheme must be postgres://"),
        ];
        for (url, message) in table {
            let err = TargetTemplate::compile(&Text::compile(url, &[None]).unwrap()).unwrap_err();
            assert!(err.to_string().contains(message), "{url}: {err}");
        }
    }

    #[test]
    fn debug_output_of_a_template_holds_no_password() {
        let t = template("postgres://u:hunter2@h/db?password=hunter3", &[]);
        let debug = format!("{t:?}");
        assert!(!debug.contains("hunter"), "{debug}");
    }
}
