//! Hostile input against every authentication mode of the real binary: malformed password
//! messages, md5 responses and SCRAM exchanges, OAUTHBEARER garbage and refused JWTs. Each
//! case asserts the SQLSTATE and message, a witness session keeps working, and no secret
//! reaches the log. The cases are listed in docs/hostile.md.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

#[path = "common/binary.rs"]
mod binary;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use binary::*;
use pgbastion_testkit::{Cluster, PasswordEncryption, RawClient, TestIssuer};
use pgbastion_wire::{Authentication, BackendMessage};
use serde_json::json;

const BACKEND_PW: &str = "hostile-auth-backend-pw-31";
const CLEAR_PW: &str = "hostile-cleartext-pw-8d";
const MD5_PW: &str = "hostile-md5-pw-e2";
const SCRAM_PW: &str = "hostile-scram-pw-4b";
const AUDIENCE: &str = "pgbastion";

/// The cluster, pgbastion and the issuer whose RS256 key pgbastion trusts.
struct Setup {
    _cluster: Cluster,
    bastion: Bastion,
    addr: SocketAddr,
    issuer: TestIssuer,
}

async fn setup() -> Setup {
    let issuer = TestIssuer::start().await;
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
        .user("app", BACKEND_PW, PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    let ports = free_ports(1);
    let backend = format!(
        "postgres://app:${{BACKEND_PW}}@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port()
    );
    let route = |user: &str, auth: &str| {
        format!("[[route]]\nmatch = {{ user = \"{user}\" }}\nauth = \"{auth}\"\ninsecure = true\nbackend = \"{backend}\"\n")
    };
    let config = format!(
        r#"
[[listener]]
address = "127.0.0.1:{port}"
auth_timeout = "5s"

[[user]]
name = "cuser"
password = "${{CLEAR_PW}}"

[[user]]
name = "muser"
password = "${{MD5_PW}}"

[[user]]
name = "suser"
password = "${{SCRAM_PW}}"

[jwt]
issuer = "{iss}"
audience = "{AUDIENCE}"
keys = ["rsa.pem"]

{cleartext}
{md5}
{scram}
{jwt}
{oauth}
[log]
level = "debug"
"#,
        port = ports[0],
        iss = issuer.issuer(),
        cleartext = route("cuser", "cleartext"),
        md5 = route("muser", "md5"),
        scram = route("suser", "scram"),
        jwt = route("juser", "jwt"),
        oauth = route("ouser", "oauth"),
    );
    let env = [
        ("BACKEND_PW", BACKEND_PW),
        ("CLEAR_PW", CLEAR_PW),
        ("MD5_PW", MD5_PW),
        ("SCRAM_PW", SCRAM_PW),
    ];
    let pem = issuer.public_key_pem("RS256");
    let bastion = Bastion::start(&config, &[("rsa.pem", &pem)], &env, &ports);
    Setup {
        _cluster: cluster,
        bastion,
        addr: local(ports[0]),
        issuer,
    }
}

const SECRETS: &[&str] = &[BACKEND_PW, CLEAR_PW, MD5_PW, SCRAM_PW];

/// What a case sends once the server asked for authentication.
enum Send {
    /// These bytes.
    Bytes(Vec<u8>),
    /// A valid SCRAM client-first, then what this makes of the server-first message.
    ScramFinal(fn(&str) -> Vec<u8>),
}

/// One case: name, startup user, what to send, expected SQLSTATE and message fragment.
type Case = (&'static str, &'static str, Send, &'static str, &'static str);

const CLIENT_FIRST_BARE: &str = "n=,r=hostileclientnonce0123456789";

fn password(text: &str) -> Vec<u8> {
    message(b'p', format!("{text}\0").as_bytes())
}

fn password_cases() -> Vec<Case> {
    let failed = |user| match user {
        "cuser" => "password authentication failed for user \"cuser\"",
        _ => "password authentication failed for user \"muser\"",
    };
    vec![
        (
            "cleartext: a password without its NUL",
            "cuser",
            Send::Bytes(message(b'p', CLEAR_PW.as_bytes())),
            "08P01",
            "",
        ),
        (
            "cleartext: a Query instead of the password",
            "cuser",
            Send::Bytes(message(b'Q', b"SELECT 1\0")),
            "08P01",
            "",
        ),
        (
            "cleartext: a wrong password",
            "cuser",
            Send::Bytes(password("not-it")),
            "28P01",
            failed("cuser"),
        ),
        (
            "cleartext: an empty password",
            "cuser",
            Send::Bytes(password("")),
            "28P01",
            failed("cuser"),
        ),
        (
            "cleartext: a length below 4",
            "cuser",
            Send::Bytes(vec![b'p', 0, 0, 0, 1]),
            "08P01",
            "",
        ),
        (
            "cleartext: a 70000-byte password",
            "cuser",
            Send::Bytes(password(&"x".repeat(70_000))),
            "08P01",
            "",
        ),
        (
            "md5: a plain password instead of a hash",
            "muser",
            Send::Bytes(password(MD5_PW)),
            "28P01",
            failed("muser"),
        ),
        (
            "md5: md5 and 32 characters that are not hex",
            "muser",
            Send::Bytes(password(&format!("md5{}", "z".repeat(32)))),
            "28P01",
            failed("muser"),
        ),
        (
            "md5: a well-formed wrong hash",
            "muser",
            Send::Bytes(password(&format!("md5{}", "0".repeat(32)))),
            "28P01",
            failed("muser"),
        ),
        (
            "md5: a SASLInitialResponse instead",
            "muser",
            Send::Bytes(sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abc")),
            "08P01",
            "",
        ),
    ]
}

fn scram_cases() -> Vec<Case> {
    let first = |data: &str| Send::Bytes(sasl_initial("SCRAM-SHA-256", data.as_bytes()));
    let mut overlong = b"SCRAM-SHA-256\0".to_vec();
    overlong.extend_from_slice(&500u32.to_be_bytes());
    overlong.extend_from_slice(b"n,,n=,r=abc");
    vec![
        (
            "scram: an unknown mechanism",
            "suser",
            Send::Bytes(sasl_initial("SCRAM-SHA-1", b"n,,n=,r=abc")),
            "08P01",
            "invalid SASL authentication mechanism",
        ),
        (
            "scram: SCRAM-SHA-256-PLUS without TLS",
            "suser",
            Send::Bytes(sasl_initial(
                "SCRAM-SHA-256-PLUS",
                b"p=tls-server-end-point,,n=,r=abc",
            )),
            "08P01",
            "channel binding was not offered",
        ),
        (
            "scram: a garbage client-first",
            "suser",
            first("garbage"),
            "08P01",
            "malformed SCRAM message",
        ),
        (
            "scram: an empty client-first",
            "suser",
            first(""),
            "08P01",
            "malformed SCRAM message",
        ),
        (
            "scram: a client-first without a nonce",
            "suser",
            first("n,,n="),
            "08P01",
            "malformed SCRAM message",
        ),
        (
            "scram: channel binding data with plain SCRAM-SHA-256",
            "suser",
            first("p=tls-server-end-point,,n=,r=abc"),
            "08P01",
            "malformed SCRAM message",
        ),
        (
            "scram: an unknown channel-binding flag",
            "suser",
            first("q,,n=,r=abc"),
            "08P01",
            "malformed SCRAM message",
        ),
        (
            "scram: a SASL data length past the message",
            "suser",
            Send::Bytes(message(b'p', &overlong)),
            "08P01",
            "",
        ),
        (
            "scram: a cleartext password instead",
            "suser",
            Send::Bytes(password(SCRAM_PW)),
            "08P01",
            "",
        ),
        (
            "scram: a wrong nonce in client-final",
            "suser",
            Send::ScramFinal(|_| final_with("biws", "wrongnonce", PROOF_OF_ZEROS)),
            "08P01",
            "SCRAM nonce mismatch",
        ),
        (
            "scram: a proof that is not base64",
            "suser",
            Send::ScramFinal(|s| final_with("biws", nonce(s), "!!!not*base64!!!")),
            "08P01",
            "malformed SCRAM message",
        ),
        (
            "scram: a proof of the wrong length",
            "suser",
            Send::ScramFinal(|s| final_with("biws", nonce(s), "AAAA")),
            "08P01",
            "malformed SCRAM message",
        ),
        (
            "scram: a wrong proof",
            "suser",
            Send::ScramFinal(|s| final_with("biws", nonce(s), PROOF_OF_ZEROS)),
            "28P01",
            "password authentication failed for user \"suser\"",
        ),
        (
            "scram: client-final claims channel binding client-first did not",
            "suser",
            Send::ScramFinal(|s| final_with("eSws", nonce(s), PROOF_OF_ZEROS)),
            "08P01",
            "channel binding",
        ),
        (
            "scram: a second SASLInitialResponse instead of client-final",
            "suser",
            Send::ScramFinal(|_| sasl_initial("SCRAM-SHA-256", b"n,,n=,r=again")),
            "08P01",
            "malformed SCRAM message",
        ),
        (
            "scram: a client-final without the proof",
            "suser",
            Send::ScramFinal(|s| message(b'p', format!("c=biws,r={}", nonce(s)).as_bytes())),
            "08P01",
            "malformed SCRAM message",
        ),
    ]
}

/// Base64 of 32 zero bytes: a well-formed proof that is never right.
const PROOF_OF_ZEROS: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn nonce(server_first: &str) -> &str {
    server_first
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .unwrap_or("")
}

fn final_with(channel_binding: &str, nonce: &str, proof: &str) -> Vec<u8> {
    message(
        b'p',
        format!("c={channel_binding},r={nonce},p={proof}").as_bytes(),
    )
}

fn oauth_cases() -> Vec<Case> {
    let initial = |data: &[u8]| Send::Bytes(sasl_initial("OAUTHBEARER", data));
    vec![
        (
            "oauth: garbage",
            "ouser",
            initial(b"\xff\xfegarbage"),
            "08P01",
            "malformed OAUTHBEARER message",
        ),
        (
            "oauth: channel binding requested",
            "ouser",
            initial(b"p=tls-server-end-point,,\x01auth=Bearer x\x01\x01"),
            "08P01",
            "malformed OAUTHBEARER message",
        ),
        (
            "oauth: a Basic credential",
            "ouser",
            initial(b"n,,\x01auth=Basic dXNlcjpwdw==\x01\x01"),
            "08P01",
            "malformed OAUTHBEARER message",
        ),
        (
            "oauth: no terminating separators",
            "ouser",
            initial(b"n,,\x01auth=Bearer abc"),
            "08P01",
            "malformed OAUTHBEARER message",
        ),
        (
            "oauth: SCRAM asked of an OAUTHBEARER route",
            "ouser",
            Send::Bytes(sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abc")),
            "08P01",
            "invalid SASL authentication mechanism",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_password_scram_and_oauthbearer_exchanges_are_refused_with_the_right_sqlstate() {
    let setup = setup().await;
    within("auth exchanges", async {
        let mut witness = Witness::new(setup.addr, "suser", Some(SCRAM_PW)).await;
        let mut failures = Vec::new();
        let cases = password_cases()
            .into_iter()
            .chain(scram_cases())
            .chain(oauth_cases());
        for (case, user, send, code, needle) in cases {
            let got = tokio::time::timeout(CASE_TIMEOUT, run_case(setup.addr, user, send))
                .await
                .unwrap_or_else(|_| panic!("{case}: timed out"));
            eprintln!("{case}: {got:?}");
            if !(got.is_fatal(code) && got.message().contains(needle)) {
                failures.push(format!("{case}: expected {code} {needle:?}, got {got:?}"));
            }
            witness.still_serving(case).await;
        }
        assert!(failures.is_empty(), "{failures:#?}");
    })
    .await;
    setup.bastion.finish(SECRETS);
}

async fn run_case(addr: SocketAddr, user: &str, send: Send) -> Answer {
    let mut client = RawClient::connect(addr).await.unwrap();
    client
        .send_startup(&[("user", user), ("database", "postgres")])
        .await
        .unwrap();
    let request = client.read().await.unwrap();
    assert!(
        matches!(request, BackendMessage::Authentication(_)),
        "{user}: {request:?}"
    );
    let bytes = match send {
        Send::Bytes(bytes) => bytes,
        Send::ScramFinal(make) => {
            let first = format!("n,,{CLIENT_FIRST_BARE}");
            client
                .send_raw(&sasl_initial("SCRAM-SHA-256", first.as_bytes()))
                .await
                .unwrap();
            let server_first = match client.read().await.unwrap() {
                BackendMessage::Authentication(Authentication::SaslContinue(data)) => data,
                other => panic!("expected SASLContinue, got {other:?}"),
            };
            make(std::str::from_utf8(&server_first).unwrap())
        }
    };
    // The server may refuse before it has read everything (that is its answer).
    let _ = client.send_raw(&bytes).await;
    answer(&mut client).await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token with `header` and `claims`, signed with nothing (or with garbage).
fn forged(header: serde_json::Value, claims: &serde_json::Value, signature: &str) -> String {
    let part = |v: &serde_json::Value| base64(v.to_string().as_bytes(), true);
    format!("{}.{}.{signature}", part(&header), part(claims))
}

/// Every token case: name, the token, the message fragment of the 28P01 refusal.
fn token_cases(issuer: &TestIssuer) -> Vec<(&'static str, String, &'static str)> {
    let claims = |sub: &str, iss: &str, aud: &str, exp: u64| json!({ "iss": iss, "sub": sub, "aud": aud, "iat": now(), "exp": exp });
    let good = claims("juser", issuer.issuer(), AUDIENCE, now() + 600);
    let valid = issuer.sign("RS256", good.clone());
    let (head, signature) = valid.rsplit_once('.').unwrap();
    let flipped: String = signature
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 10 {
                if c == 'A' {
                    'B'
                } else {
                    'A'
                }
            } else {
                c
            }
        })
        .collect();
    vec![
        (
            "jwt: alg none",
            forged(json!({"alg": "none", "typ": "JWT"}), &good, ""),
            "token refused",
        ),
        (
            "jwt: HS256 (an HMAC algorithm)",
            forged(json!({"alg": "HS256", "typ": "JWT"}), &good, "c2lnbmF0dXJl"),
            "token refused",
        ),
        (
            "jwt: expired an hour ago",
            issuer.sign(
                "RS256",
                claims("juser", issuer.issuer(), AUDIENCE, now() - 3600),
            ),
            "token has expired",
        ),
        (
            "jwt: another issuer",
            issuer.sign(
                "RS256",
                claims("juser", "https://evil.example", AUDIENCE, now() + 600),
            ),
            "token refused",
        ),
        (
            "jwt: another audience",
            issuer.sign(
                "RS256",
                claims("juser", issuer.issuer(), "other", now() + 600),
            ),
            "token refused",
        ),
        (
            "jwt: a bad signature",
            format!("{head}.{flipped}"),
            "token refused",
        ),
        (
            "jwt: signed by a key pgbastion does not trust",
            issuer.sign("ES256", good.clone()),
            "token refused",
        ),
        (
            "jwt: for another user",
            issuer.sign(
                "RS256",
                claims("mallory", issuer.issuer(), AUDIENCE, now() + 600),
            ),
            "does not name user \"juser\"",
        ),
        (
            "jwt: without exp",
            issuer.sign(
                "RS256",
                json!({ "iss": issuer.issuer(), "sub": "juser", "aud": AUDIENCE }),
            ),
            "token refused",
        ),
        (
            "jwt: not a token",
            "not-a-token".to_owned(),
            "token refused",
        ),
        (
            "jwt: three dots of garbage",
            "a.b.c".to_owned(),
            "token refused",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_jwts_get_28p01_with_the_reason_and_never_reach_the_log() {
    let setup = setup().await;
    let tokens = token_cases(&setup.issuer);
    let good = setup
        .issuer
        .token_for("juser", AUDIENCE, Duration::from_secs(600));
    within("jwt", async {
        let mut witness = Witness::new(setup.addr, "juser", Some(&good)).await;
        let mut failures = Vec::new();
        for (case, token, needle) in &tokens {
            let got = run_case(setup.addr, "juser", Send::Bytes(password(token))).await;
            eprintln!("{case}: {got:?}");
            if !(got.is_fatal("28P01")
                && got.message().contains(needle)
                && !got.message().contains(token.as_str()))
            {
                failures.push(format!("{case}: expected 28P01 {needle:?}, got {got:?}"));
            }
            witness.still_serving(case).await;
        }
        assert!(failures.is_empty(), "{failures:#?}");
    })
    .await;
    let mut secrets: Vec<&str> = SECRETS.to_vec();
    secrets.push(&good);
    // Signatures only: a header or claims segment is not secret, and "a.b.c" is not either.
    let signatures: Vec<&str> = tokens
        .iter()
        .filter_map(|(_, t, _)| t.rsplit_once('.').map(|(_, s)| s))
        .filter(|s| s.len() > 20)
        .collect();
    secrets.extend(signatures);
    setup.bastion.finish(&secrets);
}

/// PostgreSQL bounds SCRAM messages at 1024 bytes (PG_MAX_SASL_MESSAGE_LENGTH;
/// PG_MAX_AUTH_TOKEN_LENGTH is for passwords and OAuth tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_messages_over_1024_bytes_are_refused_with_08p01() {
    let setup = setup().await;
    within("long SASL", async {
        let mut witness = Witness::new(setup.addr, "suser", Some(SCRAM_PW)).await;
        let long_first = format!("n,,n=,r={}", "a".repeat(2000));
        let long_final: fn(&str) -> Vec<u8> = |s| {
            final_with(
                "biws",
                &format!("{}{}", nonce(s), "b".repeat(2000)),
                PROOF_OF_ZEROS,
            )
        };
        let cases = [
            (
                "a 2000-byte client-first",
                Send::Bytes(sasl_initial("SCRAM-SHA-256", long_first.as_bytes())),
            ),
            ("a 2000-byte client-final", Send::ScramFinal(long_final)),
        ];
        for (case, send) in cases {
            let got = run_case(setup.addr, "suser", send).await;
            assert_fatal(case, &got, "08P01", "");
            witness.still_serving(case).await;
        }
    })
    .await;
    setup.bastion.finish(SECRETS);
}

/// As PostgreSQL 18 does, a refused token is answered with a JSON error challenge
/// (`"status":"invalid_token"`), the client acknowledges with a lone 0x01, then FATAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_oauthbearer_token_gets_the_rfc7628_error_challenge_before_fatal() {
    let setup = setup().await;
    within("OAUTHBEARER challenge", async {
        let mut witness = Witness::new(setup.addr, "suser", Some(SCRAM_PW)).await;
        let mut client = RawClient::connect(setup.addr).await.unwrap();
        client
            .send_startup(&[("user", "ouser"), ("database", "postgres")])
            .await
            .unwrap();
        let request = client.read().await.unwrap();
        assert!(
            matches!(
                request,
                BackendMessage::Authentication(Authentication::Sasl { .. })
            ),
            "{request:?}"
        );
        let initial = sasl_initial("OAUTHBEARER", b"n,,\x01auth=Bearer not-a-token\x01\x01");
        client.send_raw(&initial).await.unwrap();
        let challenge = match client.read().await.unwrap() {
            BackendMessage::Authentication(Authentication::SaslContinue(data)) => data,
            other => panic!("expected the error challenge, got {other:?}"),
        };
        let challenge: serde_json::Value = serde_json::from_slice(&challenge).unwrap();
        assert_eq!(challenge["status"], "invalid_token", "{challenge}");
        client.send_raw(&message(b'p', b"\x01")).await.unwrap();
        let got = answer(&mut client).await;
        assert!(
            matches!(got.code(), Some(code) if code.starts_with("28"))
                && got.is_fatal(got.code().unwrap_or("")),
            "{got:?}"
        );
        witness.still_serving("an invalid OAUTHBEARER token").await;
    })
    .await;
    setup.bastion.finish(SECRETS);
}
