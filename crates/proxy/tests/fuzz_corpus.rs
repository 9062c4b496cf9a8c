//! The `config` fuzz target on the stable toolchain: its seed corpus
//! (fuzz/corpus/config/seed-*) is kept equal to the files listed here, and every file of the
//! corpus is replayed through the target's body (fuzz/harness/config.rs). Regenerate the
//! seeds after a deliberate change with
//! `PGBASTION_WRITE_FUZZ_SEEDS=1 cargo test -p pgbastion-proxy --test fuzz_corpus`.

#[path = "../../../fuzz/harness/config.rs"]
mod config;
#[path = "../../../fuzz/harness/replay.rs"]
mod replay;

/// Valid files first (every section and match kind), then near misses that fail in
/// different checks.
const SEEDS: &[(&str, &str)] = &[
    (
        "seed-minimal",
        "[[route]]\nauth = \"trust\"\nbackend = \"postgres://127.0.0.1:5432/app\"\n",
    ),
    (
        "seed-every-section",
        r#"[[listener]]
address = "0.0.0.0:6432"
proxy_protocol = "optional"
trusted_proxies = ["10.0.0.0/24", "127.0.0.1"]
max_connections_per_ip = 100
connection_rate_per_ip = 20
auth_timeout = "15s"

[[user]]
name = "alice"
password = "SCRAM-SHA-256$4096:lZZxO7CYE653t0o4RY0+Ww==$Xe0vH9Q0glL/t6TR0GMfaLWghJy6NDbIcTe03hPN0JE=:jOG5HIuocUXJwQm2e248PDWnkZIa8hhsovEd/WNJ1oU="

[[user]]
name = "bob"
password = "md5e10adc3949ba59abbe56e057f20f883e"

[jwt]
issuer = "https://issuer.example"
audience = "pgbastion"
jwks_url = "https://issuer.example/jwks.json"
claim = "email"
refresh = "15m"

[[route]]
match = { user = "/(.*)@example\\.com/", database = "app" }
auth = "jwt"
insecure = true
backend = "postgres://${1}@10.0.0.5:5432/${database}?sslmode=require"
client_addr = "options"
connect_timeout = "3s"

[[route]]
auth = "scram"
proxy_protocol = true
backend = "postgres://app@127.0.0.1:5432/app"

[log]
format = "json"
"#,
    ),
    (
        "seed-unknown-key",
        "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\nbogus = 1\n",
    ),
    (
        "seed-bad-duration-and-cidr",
        "[[listener]]\naddress = \"127.0.0.1:6432\"\ntrusted_proxies = [\"10.0.0.0/33\"]\nauth_timeout = \"soon\"\n",
    ),
    (
        "seed-duplicate-user-bad-secret",
        "[[user]]\nname = \"a\"\npassword = \"SCRAM-SHA-256$0:AA==$AA==:AA==\"\n[[user]]\nname = \"a\"\npassword = \"x\"\n[[route]]\nauth = \"md5\"\nbackend = \"postgres://h/db\"\n",
    ),
    (
        "seed-bad-regex-and-placeholder",
        "[[route]]\nmatch = { sni = \"/(?P<t>[a-z/\" }\nauth = \"trust\"\nbackend = \"postgres://${t}.internal:${9}/${\"\n",
    ),
    (
        "seed-secret-in-clear-without-tls",
        "[[route]]\nauth = \"cleartext\"\nbackend = \"postgres://h/db\"\n[[user]]\nname = \"a\"\npassword = \"b\"\n",
    ),
    (
        "seed-external-and-auth-query",
        "[[route]]\nauth = \"external\"\ninsecure = true\nexternal = { command = [\"bin/auth\", \"--user\"], timeout = \"5s\", method = \"md5\" }\nbackend = \"postgres://h/db\"\n[[route]]\nauth = \"scram\"\nauth_query = { query = \"SELECT 1\", user = \"u\", password = \"p\" }\nbackend = \"postgres://h:99999/db?sslmode=verify-full&sslrootcert=ca.pem\"\n",
    ),
    (
        "seed-tls-listener-not-compiled",
        "[[listener]]\naddress = \"127.0.0.1:6432\"\ntls = { cert = \"/dev/zero\", key = \"server.key\" }\n[[route]]\nauth = \"cert\"\nbackend = \"postgres://h/db\"\n",
    ),
];

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    SEEDS
        .iter()
        .map(|(name, text)| (*name, text.as_bytes().to_vec()))
        .collect()
}

#[test]
fn the_committed_config_seeds_match_what_is_listed_here() {
    replay::check_seeds("config", &seeds());
}

#[test]
fn every_config_corpus_file_runs_without_panicking() {
    assert!(replay::replay("config", config::fuzz_config) >= SEEDS.len());
}

#[test]
fn the_valid_config_seeds_load() {
    use pgbastion_proxy::config::SourceFile;
    for name in ["seed-minimal", "seed-every-section"] {
        let (_, text) = SEEDS.iter().find(|(n, _)| *n == name).expect(name);
        let file = SourceFile {
            path: "/nonexistent/pgbastion.toml".into(),
            text: (*text).to_owned(),
        };
        if let Err(e) = pgbastion_proxy::Settings::from_source(&file) {
            panic!("{name}: {e}");
        }
    }
}
