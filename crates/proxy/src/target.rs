//! Backend URLs (`postgres://user:password@host:port/database?sslmode=…`), as libpq reads
//! them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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
    /// TLS policy.
    pub sslmode: SslMode,
    /// CA certificates for verify-ca / verify-full.
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate and key for certificate authentication to the backend.
    pub sslcert: Option<PathBuf>,
    /// The client certificate's key.
    pub sslkey: Option<PathBuf>,
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
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

/// A backend address.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// libpq tries plaintext first; pgbastion treats it as `disable`.
    Allow,
    /// TLS when the server offers it, no verification.
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

impl Target {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(text: &str) -> Result<Self, TargetError> {
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
        let mut host = decode(url.host_str().unwrap_or_default())?;
        let mut port = url.port().unwrap_or(5432);
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let mut target = Self {
            address: Address::Tcp(String::new(), 0),
            user: non_empty(decode(url.username())?),
            password: url.password().map(decode).transpose()?,
            database: non_empty(decode(url.path().trim_start_matches('/'))?),
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            connect_timeout: None,
            parameters: Vec::new(),
        };
        for (key, value) in url.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "sslmode" => {
                    target.sslmode = SslMode::parse(&value).ok_or_else(|| {
                        TargetError(format!(
                            "sslmode={value} is not one of disable, allow, prefer, require, \
                             verify-ca, verify-full"
                        ))
                    })?;
                }
                "sslrootcert" => target.sslrootcert = Some(value.into()),
                "sslcert" => target.sslcert = Some(value.into()),
                "sslkey" => target.sslkey = Some(value.into()),
                "host" => host = value,
                "port" => {
                    port = value
                        .parse()
                        .map_err(|_| TargetError(format!("port={value} is not a port number")))?;
                }
                "user" => target.user = Some(value),
                "password" => target.password = Some(value),
                "dbname" => target.database = Some(value),
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        TargetError(format!(
                            "connect_timeout={value} is not a number of seconds"
                        ))
                    })?;
                    target.connect_timeout = Some(Duration::from_secs(secs));
                }
                "channel_binding" | "target_session_attrs" | "gssencmode" => {}
                _ => target.parameters.push((key.into_owned(), value)),
            }
        }
        if host.is_empty() {
            return Err(TargetError(
                "no host (add host:port, or ?host=/socket/dir)".to_owned(),
            ));
        }
        target.address = if host.starts_with('/') {
            Address::Unix(PathBuf::from(host).join(format!(".s.PGSQL.{port}")))
        } else {
            Address::Tcp(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port,
            )
        };
        if matches!(target.sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
            && target.sslrootcert.is_none()
        {
            return Err(TargetError(
                "sslmode=verify-ca and verify-full need sslrootcert=FILE (the CA to trust)"
                    .to_owned(),
            ));
        }
        if target.sslcert.is_some() != target.sslkey.is_some() {
            return Err(TargetError("sslcert and sslkey go together".to_owned()));
        }
        Ok(target)
    }

    /// The host name for TLS verification (SNI and verify-full).
    pub fn host(&self) -> Option<&str> {
        match &self.address {
            Address::Tcp(host, _) => Some(host),
            Address::Unix(_) => None,
        }
    }
}

fn percent_decode(text: &str) -> Result<String, ()> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libpq_urls() {
        let t = Target::parse(
            "postgres://app%40x:p%3Ass@db.example.com:6543/app?sslmode=verify-full&sslrootcert=ca.pem&application_name=web",
        )
        .unwrap();
        assert_eq!(t.address, Address::Tcp("db.example.com".into(), 6543));
        assert_eq!(t.user.as_deref(), Some("app@x"));
        assert_eq!(t.password.as_deref(), Some("p:ss"));
        assert_eq!(t.database.as_deref(), Some("app"));
        assert_eq!(t.sslmode, SslMode::VerifyFull);
        assert_eq!(
            t.parameters,
            [("application_name".to_owned(), "web".to_owned())]
        );
        assert!(!format!("{t:?}").contains("p:ss"));
    }

    #[test]
    fn unix_sockets_and_defaults() {
        let t = Target::parse("postgresql:///db?host=/var/run/postgresql").unwrap();
        assert_eq!(
            t.address,
            Address::Unix("/var/run/postgresql/.s.PGSQL.5432".into())
        );
        assert_eq!(
            (t.user, t.password, t.sslmode),
            (None, None, SslMode::Prefer)
        );
        let t = Target::parse("postgres://%2Ftmp:5433/db").unwrap();
        assert_eq!(t.address, Address::Unix("/tmp/.s.PGSQL.5433".into()));
        let t = Target::parse("postgres://[::1]:5432").unwrap();
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
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
