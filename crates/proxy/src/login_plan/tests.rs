//! [`LoginPlan::build`] row by row against the precedence rules of `docs/configuration.md`
//! ("Backend URLs", "Startup parameters", `strip_options`, `client_addr`, `proxy_protocol`,
//! `connect_timeout`, `auth_query`) and `docs/auth.md` ("The backend login"), then its
//! errors, then [`LoginPlan::pool_identity`].

use std::path::PathBuf;

use pgbastion_wire::ProtocolVersion;

use super::*;
use crate::config::AuthMode;
use crate::route::{AuthQuery, Matcher};
use crate::target::{SslMode, TargetTemplate};
use crate::template::Text;

/// The route of a row: everything but the URL.
#[derive(Clone, Copy)]
struct Setup {
    /// `auth = "scram"` with `auth_query`.
    auth_query: bool,
    /// `match.options` (with `strip_options` on, its default then).
    options_matcher: Option<&'static str>,
    client_addr: ClientAddrParam,
    proxy_protocol: bool,
    /// The regex captures of the match (`${1}`, …).
    captures: &'static [&'static str],
}

/// What authentication proved, as the row gives it.
#[derive(Clone, Copy)]
enum Proof {
    None,
    Password(&'static str),
    External {
        lines: &'static [(&'static str, &'static str)],
        host: Option<&'static str>,
        credential: Option<&'static str>,
    },
    Keys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretIs {
    None,
    Password(&'static str),
    Keys,
}

/// The plan a row expects.
#[derive(Debug, Clone, Copy)]
struct Expected {
    address: &'static str,
    sslmode: SslMode,
    user: &'static str,
    database: &'static str,
    /// [`LoginPlan::startup_parameters`], in order.
    parameters: &'static [(&'static str, &'static str)],
    secret: SecretIs,
    proxy_from: bool,
    timeout_secs: u64,
}

struct Row {
    rule: &'static str,
    url: &'static str,
    setup: Setup,
    /// The client's startup parameters.
    client: &'static [(&'static str, &'static str)],
    proof: Proof,
    expected: Expected,
}

const CLIENT: &[(&str, &str)] = &[
    ("user", "alice"),
    ("database", "app"),
    ("application_name", "psql"),
];

const SETUP: Setup = Setup {
    auth_query: false,
    options_matcher: None,
    client_addr: ClientAddrParam::None,
    proxy_protocol: false,
    captures: &[],
};

const EXPECTED: Expected = Expected {
    address: "h:5432",
    sslmode: SslMode::Prefer,
    user: "alice",
    database: "app",
    parameters: &[("application_name", "psql")],
    secret: SecretIs::None,
    proxy_from: false,
    timeout_secs: 10,
};

const ROW: Row = Row {
    rule: "",
    url: "postgres://h",
    setup: SETUP,
    client: CLIENT,
    proof: Proof::None,
    expected: EXPECTED,
};

const CLIENT_ADDR: &str = "192.0.2.7:50123";

const KEYS: ScramKeys = ScramKeys {
    client_key: [1; 32],
    server_key: [2; 32],
};

const ROWS: &[Row] = &[
    // Backend user and database: the authenticator's lines, the URL's, the client's.
    Row {
        rule: "without a user and database in the URL, the client's",
        ..ROW
    },
    Row {
        rule: "the client's database defaults to its user",
        client: &[("user", "alice")],
        expected: Expected {
            database: "alice",
            parameters: &[],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "the URL's user and database beat the client's",
        url: "postgres://app@h/appdb",
        expected: Expected {
            user: "app",
            database: "appdb",
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "?user= and ?dbname= beat the URL's user and database",
        url: "postgres://app@h/appdb?user=q&dbname=qdb",
        expected: Expected {
            user: "q",
            database: "qdb",
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "the authenticator's user= and database= lines beat the URL's (the last line wins)",
        url: "postgres://app@h/appdb",
        proof: Proof::External {
            lines: &[("user", "first"), ("user", "ext"), ("database", "extdb")],
            host: None,
            credential: None,
        },
        expected: Expected {
            user: "ext",
            database: "extdb",
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "an authenticator without user= and database= lines leaves the URL's",
        url: "postgres://app@h/appdb",
        proof: Proof::External {
            lines: &[],
            host: None,
            credential: None,
        },
        expected: Expected {
            user: "app",
            database: "appdb",
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "${1}, ${user} and ${database} are filled in per client",
        url: "postgres://app_${1}@h/${database}_of_${user}",
        setup: Setup {
            captures: &["t1"],
            ..SETUP
        },
        expected: Expected {
            user: "app_t1",
            database: "app_of_alice",
            ..EXPECTED
        },
        ..ROW
    },
    // auth_query.
    Row {
        rule: "auth_query: the client's user with its SCRAM keys, over the URL's user and password",
        url: "postgres://app:pw@h/appdb",
        setup: Setup {
            auth_query: true,
            ..SETUP
        },
        proof: Proof::Keys,
        expected: Expected {
            user: "alice",
            database: "appdb",
            secret: SecretIs::Keys,
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "SCRAM keys on a route without auth_query are not used",
        url: "postgres://app:pw@h/appdb",
        proof: Proof::Keys,
        expected: Expected {
            user: "app",
            database: "appdb",
            secret: SecretIs::Password("pw"),
            ..EXPECTED
        },
        ..ROW
    },
    // The secret.
    Row {
        rule: "the URL's password",
        url: "postgres://app:pw@h",
        expected: Expected {
            user: "app",
            secret: SecretIs::Password("pw"),
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "?password= beats the URL's password",
        url: "postgres://app:pw@h?password=qpw",
        expected: Expected {
            user: "app",
            secret: SecretIs::Password("qpw"),
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "passthrough: the client's password beats the URL's",
        url: "postgres://app:pw@h",
        proof: Proof::Password("client pw"),
        expected: Expected {
            user: "app",
            secret: SecretIs::Password("client pw"),
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "external: _META_TARGET_CRED beats the URL's password",
        url: "postgres://app:pw@h",
        proof: Proof::External {
            lines: &[],
            host: None,
            credential: Some("md5aaaabbbbccccddddeeeeffff00001111"),
        },
        expected: Expected {
            user: "app",
            secret: SecretIs::Password("md5aaaabbbbccccddddeeeeffff00001111"),
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "external without _META_TARGET_CRED: the URL's password",
        url: "postgres://app:pw@h",
        proof: Proof::External {
            lines: &[],
            host: None,
            credential: None,
        },
        expected: Expected {
            user: "app",
            secret: SecretIs::Password("pw"),
            ..EXPECTED
        },
        ..ROW
    },
    // Where.
    Row {
        rule: "_META_TARGET_HOST replaces the URL's host and port; the URL still gives sslmode",
        url: "postgres://h:6543/db?sslmode=require",
        proof: Proof::External {
            lines: &[],
            host: Some("[::1]:6000"),
            credential: None,
        },
        expected: Expected {
            address: "[::1]:6000",
            sslmode: SslMode::Require,
            database: "db",
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "proxy_protocol: a PROXY header with the client's address",
        setup: Setup {
            proxy_protocol: true,
            ..SETUP
        },
        expected: Expected {
            proxy_from: true,
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "connect_timeout in the URL beats the route's",
        url: "postgres://h?connect_timeout=3",
        expected: Expected {
            timeout_secs: 3,
            ..EXPECTED
        },
        ..ROW
    },
    // Startup parameters: the client's, the URL's, the authenticator's, client_addr.
    Row {
        rule: "the client's parameters go on in its order, less _pq_.* protocol options",
        client: &[
            ("user", "alice"),
            ("_pq_.command_compression", "on"),
            ("TimeZone", "UTC"),
            ("database", "app"),
            ("search_path", "a"),
        ],
        expected: Expected {
            parameters: &[("TimeZone", "UTC"), ("search_path", "a")],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "the URL's query parameters beat the client's, new ones come after",
        url: "postgres://h?search_path=b&statement_timeout=5s",
        client: &[("user", "alice"), ("search_path", "a"), ("TimeZone", "UTC")],
        expected: Expected {
            database: "alice",
            parameters: &[
                ("search_path", "b"),
                ("TimeZone", "UTC"),
                ("statement_timeout", "5s"),
            ],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "the client's application_name beats the URL's",
        url: "postgres://h?application_name=web",
        ..ROW
    },
    Row {
        rule: "the URL's application_name when the client sends none",
        url: "postgres://h?application_name=web",
        client: &[("user", "alice"), ("database", "app")],
        expected: Expected {
            parameters: &[("application_name", "web")],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "?database= is not a backend parameter (the database is chosen apart)",
        url: "postgres://h/db?database=other",
        expected: Expected {
            database: "db",
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "the authenticator's lines beat the URL's and the client's parameters",
        url: "postgres://h?search_path=b",
        client: &[
            ("user", "alice"),
            ("application_name", "psql"),
            ("search_path", "a"),
        ],
        proof: Proof::External {
            lines: &[
                ("application_name", "ext"),
                ("search_path", "x"),
                ("work_mem", "64kB"),
            ],
            host: None,
            credential: None,
        },
        expected: Expected {
            database: "alice",
            parameters: &[
                ("application_name", "ext"),
                ("search_path", "x"),
                ("work_mem", "64kB"),
            ],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "strip_options: the words match.options matched are removed",
        setup: Setup {
            options_matcher: Some("/.*endpoint=(\\w[\\w-]*).*/"),
            captures: &["ep-1"],
            ..SETUP
        },
        url: "postgres://h/${1}",
        client: &[
            ("user", "alice"),
            ("options", "endpoint=ep-1 -c search_path=a"),
        ],
        expected: Expected {
            database: "ep-1",
            parameters: &[("options", "-c search_path=a")],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "strip_options leaving no word: no options at all",
        setup: Setup {
            options_matcher: Some("/.*endpoint=(\\w[\\w-]*).*/"),
            captures: &["ep-1"],
            ..SETUP
        },
        client: &[("user", "alice"), ("options", "endpoint=ep-1")],
        expected: Expected {
            database: "alice",
            parameters: &[],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "without match.options the client's options go on whole",
        client: &[("user", "alice"), ("options", "endpoint=ep-1 -c a=b")],
        expected: Expected {
            database: "alice",
            parameters: &[("options", "endpoint=ep-1 -c a=b")],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "client_addr = options appends -c pgbastion.client_addr=IP to the options",
        setup: Setup {
            client_addr: ClientAddrParam::Options,
            ..SETUP
        },
        client: &[
            ("user", "alice"),
            ("options", "-c a=b"),
            ("TimeZone", "UTC"),
        ],
        expected: Expected {
            database: "alice",
            parameters: &[
                ("options", "-c a=b -c pgbastion.client_addr=192.0.2.7"),
                ("TimeZone", "UTC"),
            ],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "client_addr = options without options: the word is the options",
        setup: Setup {
            client_addr: ClientAddrParam::Options,
            ..SETUP
        },
        expected: Expected {
            parameters: &[
                ("application_name", "psql"),
                ("options", "-c pgbastion.client_addr=192.0.2.7"),
            ],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "client_addr comes after the authenticator's options",
        setup: Setup {
            client_addr: ClientAddrParam::Options,
            ..SETUP
        },
        client: &[("user", "alice"), ("options", "-c a=b")],
        proof: Proof::External {
            lines: &[("options", "-c c=d")],
            host: None,
            credential: None,
        },
        expected: Expected {
            database: "alice",
            parameters: &[("options", "-c c=d -c pgbastion.client_addr=192.0.2.7")],
            ..EXPECTED
        },
        ..ROW
    },
    Row {
        rule: "client_addr = crdb sets crdb:remote_addr=IP:PORT, over the client's own",
        setup: Setup {
            client_addr: ClientAddrParam::Crdb,
            ..SETUP
        },
        client: &[
            ("user", "alice"),
            ("crdb:remote_addr", "10.9.9.9:1"),
            ("TimeZone", "UTC"),
        ],
        expected: Expected {
            database: "alice",
            parameters: &[("TimeZone", "UTC"), ("crdb:remote_addr", "192.0.2.7:50123")],
            ..EXPECTED
        },
        ..ROW
    },
];

fn route(url: &str, setup: Setup) -> Route {
    let groups = vec![None; setup.captures.len()];
    let backend = TargetTemplate::compile(&Text::compile(url, &groups).unwrap()).unwrap();
    let options = setup
        .options_matcher
        .map(|m| ("options".to_owned(), Matcher::parse(m).unwrap()));
    Route {
        number: 1,
        sni: None,
        parameters: options.into_iter().collect(),
        claims: Vec::new(),
        auth: if setup.auth_query {
            AuthMode::Scram
        } else {
            AuthMode::Trust
        },
        backend,
        insecure: false,
        strip_options: setup.options_matcher.is_some(),
        proxy_protocol: setup.proxy_protocol,
        client_addr: setup.client_addr,
        connect_timeout: Duration::from_secs(10),
        external: None,
        auth_query: setup.auth_query.then(|| AuthQuery {
            query: "SELECT 1".to_owned(),
            user: "lookup".to_owned(),
            password: None,
        }),
        files_dir: PathBuf::from("."),
        pool: None,
    }
}

fn client(parameters: &[(&str, &str)]) -> ClientInfo {
    ClientInfo {
        requested_version: ProtocolVersion::V3_0,
        version: ProtocolVersion::V3_0,
        parameters: owned(parameters),
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn captures(values: &[&str]) -> Captures {
    Captures {
        numbered: values.iter().map(|v| (*v).to_owned()).collect(),
        named: Default::default(),
    }
}

fn decision(proof: Proof) -> Option<Decision> {
    match proof {
        Proof::External {
            lines,
            host,
            credential,
        } => Some(Decision {
            parameters: owned(lines),
            host: host.map(str::to_owned),
            credential: credential.map(str::to_owned),
        }),
        _ => None,
    }
}

/// Builds the plan a row describes.
fn plan(
    url: &str,
    setup: Setup,
    client_parameters: &[(&str, &str)],
    proof: Proof,
) -> Result<LoginPlan, BackendError> {
    let route = route(url, setup);
    let decision = decision(proof);
    let proof = match (proof, &decision) {
        (Proof::None, _) => BackendProof::None,
        (Proof::Password(password), _) => BackendProof::Password(password),
        (Proof::Keys, _) => BackendProof::ScramKeys(&KEYS),
        (Proof::External { .. }, decision) => BackendProof::External(decision.as_ref().unwrap()),
    };
    let client_addr = CLIENT_ADDR.parse().unwrap();
    let client = client(client_parameters);
    LoginPlan::build(
        &route,
        &captures(setup.captures),
        &client,
        client_addr,
        proof,
    )
}

/// The plan in the row's terms.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    address: String,
    sslmode: SslMode,
    user: String,
    database: String,
    parameters: Vec<(String, String)>,
    secret: Option<BackendSecret>,
    proxy_from: Option<SocketAddr>,
    timeout: Duration,
}

impl Seen {
    fn of(plan: &LoginPlan) -> Self {
        Self {
            address: plan.address.to_string(),
            sslmode: plan.tls.sslmode,
            user: plan.user.clone(),
            database: plan.database.clone(),
            parameters: plan.startup_parameters(),
            secret: plan.secret.clone(),
            proxy_from: plan.proxy_from,
            timeout: plan.timeout,
        }
    }

    fn expected(e: &Expected) -> Self {
        Self {
            address: e.address.to_owned(),
            sslmode: e.sslmode,
            user: e.user.to_owned(),
            database: e.database.to_owned(),
            parameters: owned(e.parameters),
            secret: match e.secret {
                SecretIs::None => None,
                SecretIs::Password(password) => Some(BackendSecret::Password(password.to_owned())),
                SecretIs::Keys => Some(BackendSecret::ScramKeys {
                    client_key: KEYS.client_key,
                    server_key: KEYS.server_key,
                }),
            },
            proxy_from: e.proxy_from.then(|| CLIENT_ADDR.parse().unwrap()),
            timeout: Duration::from_secs(e.timeout_secs),
        }
    }
}

#[test]
fn each_precedence_rule_of_the_configuration_reference_holds() {
    for row in ROWS {
        let plan = plan(row.url, row.setup, row.client, row.proof)
            .unwrap_or_else(|e| panic!("{}: {e}", row.rule));
        assert_eq!(
            Seen::of(&plan),
            Seen::expected(&row.expected),
            "{}",
            row.rule
        );
    }
}

#[test]
fn a_client_gets_the_reason_its_login_cannot_be_planned() {
    let rows: [(&str, &str, Setup, Proof, &str); 4] = [
        (
            "_META_TARGET_HOST without a port",
            "postgres://h",
            SETUP,
            Proof::External {
                lines: &[],
                host: Some("db.internal"),
                credential: None,
            },
            "the authenticator's _META_TARGET_HOST \"db.internal\" is not host:port",
        ),
        (
            "a certificate path placeholder given a path",
            "postgres://h/db?sslmode=verify-ca&sslrootcert=certs/${1}.pem",
            Setup {
                captures: &["../../etc/ssl/x"],
                ..SETUP
            },
            Proof::None,
            "route 1 (auth = trust): the value this client gives the sslrootcert placeholder is \
             not a plain file name",
        ),
        (
            "a filled-in URL that is unusable",
            "postgres://h/db?sslmode=${1}",
            Setup {
                captures: &["maybe"],
                ..SETUP
            },
            Proof::None,
            "route 1 (auth = trust) has an unusable backend URL for this client: backend URL: \
             sslmode=maybe is not one of",
        ),
        (
            "a filled-in host that is empty",
            "postgres://${1}/db",
            Setup {
                captures: &[""],
                ..SETUP
            },
            Proof::None,
            "backend URL: no host",
        ),
    ];
    for (rule, url, setup, proof, message) in rows {
        let error = match plan(url, setup, CLIENT, proof) {
            Err(BackendError::Auth(message)) => message,
            other => panic!("{rule}: {other:?}"),
        };
        assert!(error.contains(message), "{rule}: {error}");
    }
}

fn plan_for(url: &str, setup: Setup, client_parameters: &[(&str, &str)]) -> LoginPlan {
    plan(url, setup, client_parameters, Proof::None).unwrap()
}

#[test]
fn clients_differing_only_in_session_parameters_or_address_share_a_pool_key() {
    let setup = Setup {
        client_addr: ClientAddrParam::Options,
        proxy_protocol: true,
        ..SETUP
    };
    let url = "postgres://app@h/db?sslmode=require";
    let psql = plan_for(
        url,
        setup,
        &[
            ("user", "alice"),
            ("application_name", "psql"),
            ("options", "-c work_mem=64kB -e"),
        ],
    );
    let mut other = plan_for(
        url,
        setup,
        &[
            ("user", "alice"),
            ("application_name", "web"),
            ("TimeZone", "UTC"),
            ("options", "-e --work-mem=1MB"),
        ],
    );
    other.client_addr = Some(ClientAddr::Options("198.51.100.1".parse().unwrap()));
    other.proxy_from = Some("198.51.100.1:4000".parse().unwrap());
    let (key, session) = psql.pool_identity();
    let (other_key, other_session) = other.pool_identity();
    assert_eq!(key, other_key);
    assert_eq!(
        key.options.as_deref(),
        Some("-e"),
        "without the client's address, and without the settings (set per client)"
    );
    assert_eq!(
        session,
        owned(&[("application_name", "psql"), ("work_mem", "64kB")])
    );
    assert_eq!(
        other_session,
        owned(&[
            ("application_name", "web"),
            ("TimeZone", "UTC"),
            ("work_mem", "1MB")
        ])
    );
    let pooled = psql.for_pool();
    assert_eq!(pooled.startup_parameters(), owned(&[("options", "-e")]));
    assert_eq!((pooled.proxy_from, pooled.client_addr), (None, None));
    let crdb = Setup {
        client_addr: ClientAddrParam::Crdb,
        ..SETUP
    };
    let (crdb_key, crdb_session) = plan_for(url, crdb, &[("user", "alice")]).pool_identity();
    assert_eq!(crdb_session, [], "crdb:remote_addr is the client's own");
    assert_eq!(crdb_key.options, None);
}

#[test]
fn what_a_login_alone_can_set_keeps_pool_keys_apart() {
    let url = "postgres://h/db?sslmode=require";
    let base = plan_for(url, SETUP, &[("user", "alice")]);
    let (key, _) = base.pool_identity();
    let differing = [
        ("user", plan_for(url, SETUP, &[("user", "bob")])),
        (
            "database",
            plan_for(
                "postgres://h/other?sslmode=require",
                SETUP,
                &[("user", "alice")],
            ),
        ),
        (
            "options",
            plan_for(url, SETUP, &[("user", "alice"), ("options", "-e")]),
        ),
        (
            "replication",
            plan_for(
                url,
                SETUP,
                &[("user", "alice"), ("replication", "database")],
            ),
        ),
        (
            "sslmode",
            plan_for(
                "postgres://h/db?sslmode=disable",
                SETUP,
                &[("user", "alice")],
            ),
        ),
        (
            "port",
            plan_for(
                "postgres://h:6543/db?sslmode=require",
                SETUP,
                &[("user", "alice")],
            ),
        ),
    ];
    for (what, plan) in differing {
        assert_ne!(plan.pool_identity().0, key, "{what}");
    }
    let (replication, session) = plan_for(
        url,
        SETUP,
        &[("user", "alice"), ("replication", "database")],
    )
    .pool_identity();
    assert_eq!(replication.replication.as_deref(), Some("database"));
    assert_eq!(session, []);
}

#[test]
fn the_pool_key_holds_no_secret_and_the_plan_shows_none() {
    let plan = plan(
        "postgres://app:hunter2@h/db",
        SETUP,
        CLIENT,
        Proof::Password("client-pw"),
    )
    .unwrap();
    assert_eq!(
        plan.secret,
        Some(BackendSecret::Password("client-pw".to_owned()))
    );
    let debug = format!("{plan:?} {:?}", plan.pool_identity());
    assert!(
        !debug.contains("client-pw") && !debug.contains("hunter2"),
        "{debug}"
    );
}

#[test]
fn options_settings_are_split_off_and_unescaped_the_rest_kept_as_written() {
    let (settings, rest) =
        super::split_options(r"-c search_path=a\ b -e --work-mem=1MB -cstatement_timeout=5s -c");
    assert_eq!(
        settings,
        owned(&[
            ("search_path", "a b"),
            ("work_mem", "1MB"),
            ("statement_timeout", "5s")
        ])
    );
    assert_eq!(rest, "-e -c", "a trailing -c without a setting stays");
}
