//! Hostile input against the real binary: broken framing before authentication, protocol
//! violations after it (answered as PostgreSQL itself answers them) and clients too slow to
//! finish logging in. The cases are listed in docs/hostile.md.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

#[path = "common/binary.rs"]
mod binary;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use binary::*;
use pgbastion_testkit::{Cluster, PasswordEncryption, RawClient, RawClientError};
use pgbastion_wire::BackendMessage;

const BACKEND_PW: &str = "hostile-backend-pw-5a1";
const MD5_PW: &str = "hostile-md5-pw-77c";

/// One cluster (SCRAM for `app`) and one pgbastion: a `trust` route for `tclient` and an
/// `md5` route for `mclient`, both to `app`; `auth_timeout` is 1 s so slow clients are quick.
fn setup() -> (Cluster, Bastion, SocketAddr) {
    let cluster = Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
        .user("app", BACKEND_PW, PasswordEncryption::ScramSha256)
        .start()
        .unwrap();
    let ports = free_ports(1);
    let config = format!(
        r#"
[[listener]]
address = "127.0.0.1:{port}"
auth_timeout = "1s"

[[user]]
name = "mclient"
password = "{MD5_PW}"

[[route]]
match = {{ user = "tclient" }}
auth = "trust"
backend = "postgres://app:${{BACKEND_PW}}@127.0.0.1:{backend}/postgres?sslmode=disable"

[[route]]
match = {{ user = "mclient" }}
auth = "md5"
backend = "postgres://app:${{BACKEND_PW}}@127.0.0.1:{backend}/postgres?sslmode=disable"

[log]
level = "debug"
"#,
        port = ports[0],
        backend = cluster.port(),
    );
    let bastion = Bastion::start(&config, &[], &[("BACKEND_PW", BACKEND_PW)], &ports);
    (cluster, bastion, local(ports[0]))
}

/// What a pre-authentication case must get.
enum Expect {
    /// FATAL with this SQLSTATE and a message containing the text.
    Fatal(&'static str, &'static str),
    /// A close without any answer.
    Closed,
}

fn startup_cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let tclient = |version: u32| {
        let mut body = version.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0tclient\0\0");
        packet(&body)
    };
    let mut truncated = startup_bytes(&[("user", "tclient")]);
    truncated.truncate(12);
    vec![
        (
            "length below 4",
            vec![0, 0, 0, 2, 0, 3],
            Expect::Fatal("08P01", "invalid message length 2"),
        ),
        (
            "length 6: no room for a version",
            vec![0, 0, 0, 6, 0, 3],
            Expect::Fatal("08P01", "invalid message length 6"),
        ),
        (
            "startup packet over 10000 bytes",
            10_005u32.to_be_bytes().to_vec(),
            Expect::Fatal("08P01", "exceeds the limit of 10000 bytes"),
        ),
        (
            "declared length 2^31-1",
            0x7fff_ffffu32.to_be_bytes().to_vec(),
            Expect::Fatal("08P01", "exceeds the limit of 10000 bytes"),
        ),
        (
            "declared length -1",
            vec![0xff; 4],
            Expect::Fatal("08P01", "exceeds the limit of 10000 bytes"),
        ),
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Expect::Fatal("08P01", ""),
        ),
        (
            "parameters without the final NUL",
            packet(b"\0\x03\0\0user\0tclient\0"),
            Expect::Fatal("08P01", ""),
        ),
        (
            "a parameter name without a value",
            packet(b"\0\x03\0\0user\0tclient\0database\0\0"),
            Expect::Fatal("08P01", ""),
        ),
        (
            "protocol 4.0",
            tclient(0x0004_0000),
            Expect::Fatal("0A000", "unsupported frontend protocol 4.0"),
        ),
        (
            "protocol 2.0",
            tclient(0x0002_0000),
            Expect::Fatal("0A000", "unsupported frontend protocol 2.0"),
        ),
        // PostgreSQL checks the version first (0A000 "unsupported frontend protocol
        // 1234.9999"); pgbastion parses the (missing) parameters first. Both refuse it.
        (
            "an unknown request code 1234/9999",
            packet(&[0x04, 0xd2, 0x27, 0x0f]),
            Expect::Fatal("08P01", "missing its NUL terminator"),
        ),
        (
            "a startup without user",
            startup_bytes(&[("database", "postgres")]),
            Expect::Fatal("28000", "no PostgreSQL user name specified"),
        ),
        (
            "a user no route takes",
            startup_bytes(&[("user", "nobody")]),
            Expect::Fatal("28000", "no route for user \"nobody\""),
        ),
        (
            "a CancelRequest with an unknown key",
            packet(&[0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2]),
            Expect::Closed,
        ),
        (
            "half a startup packet, then the client's close",
            truncated,
            Expect::Closed,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_startup_framing_gets_a_fatal_or_a_close_and_others_keep_working() {
    let (_cluster, bastion, addr) = setup();
    within("startup framing", async {
        let mut witness = Witness::new(addr, "tclient", None).await;
        let mut failures = Vec::new();
        for (case, bytes, expect) in startup_cases() {
            let half_close = matches!(expect, Expect::Closed);
            let got = tokio::time::timeout(CASE_TIMEOUT, send_case(addr, &bytes, half_close))
                .await
                .unwrap_or_else(|_| panic!("{case}: timed out"));
            eprintln!("{case}: {got:?}");
            let ok = match expect {
                Expect::Fatal(code, needle) => got.is_fatal(code) && got.message().contains(needle),
                Expect::Closed => got == Answer::Closed,
            };
            if !ok {
                failures.push(format!("{case}: got {got:?}"));
            }
            witness.still_serving(case).await;
        }
        assert!(failures.is_empty(), "{failures:#?}");
    })
    .await;
    bastion.finish(&[BACKEND_PW, MD5_PW]);
}

/// Sends `bytes`; with `half_close` also shuts the write side, as a client that gave up.
async fn send_case(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Answer {
    use tokio::io::AsyncWriteExt;
    if !half_close {
        return raw_answer(addr, bytes).await;
    }
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    use tokio::io::AsyncReadExt;
    match tokio::time::timeout(SILENCE, stream.read_to_end(&mut rest)).await {
        Ok(Ok(_)) if rest.is_empty() => Answer::Closed,
        Ok(Err(_)) => Answer::Closed,
        Ok(Ok(_)) => Answer::Other(format!("{rest:?}")),
        Err(_) => Answer::Silent,
    }
}

/// Where pgbastion's answer differs from PostgreSQL's on purpose (D1 in docs/hostile.md): a
/// frame whose declared length PostgreSQL refuses (below 4, or over its type's limit) is
/// refused by pgbastion's client-side frame scanner before it reaches the backend.
/// PostgreSQL closes without a word ("invalid message length" is only in its log);
/// pgbastion tells the client why, with FATAL 08P01, then closes.
const D1_TODAY: &[&str] = &["E FATAL 08P01", "closed"];

/// Cases whose proxied answer differs from PostgreSQL's, with that answer.
fn known_divergence(case: &str) -> Option<&'static [&'static str]> {
    let d1 = [
        "a message length below 4",
        "a Query declaring 2^31-1 bytes",
        "a Query declaring 1 GiB + 1 bytes",
    ];
    d1.contains(&case).then_some(D1_TODAY)
}

/// Post-authentication cases: bytes sent after ReadyForQuery, followed by `SELECT 1`.
fn after_auth_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut parse_short = b"\0SELECT $1\0".to_vec();
    parse_short.extend_from_slice(&5u16.to_be_bytes()); // five parameter types, none sent
    vec![
        ("an unknown message type", message(b'z', b"hello")),
        (
            "a StartupMessage after authentication",
            startup_bytes(&[("user", "app")]),
        ),
        (
            "an SSLRequest after authentication",
            packet(&[0x04, 0xd2, 0x16, 0x2f]),
        ),
        (
            "a SASLResponse after authentication",
            message(b'p', b"c=biws,r=abc,p=AAAA"),
        ),
        ("CopyData outside COPY", message(b'd', b"1\t2\n")),
        ("CopyDone outside COPY", message(b'c', b"")),
        ("CopyFail outside COPY", message(b'f', b"never mind\0")),
        ("a Query without its NUL", message(b'Q', b"SELECT 1")),
        (
            "a Parse declaring more parameter types than it holds",
            message(b'P', &parse_short),
        ),
        ("a Sync with a body", message(b'S', b"xyz")),
        ("a message length below 4", vec![b'Q', 0, 0, 0, 3]),
        (
            "a Query declaring 2^31-1 bytes",
            vec![b'Q', 0x7f, 0xff, 0xff, 0xff, b'S'],
        ),
        (
            "a Query declaring 1 GiB + 1 bytes",
            vec![b'Q', 0x40, 0, 0, 1, b'S'],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_after_authentication_are_answered_as_postgresql_answers_them() {
    let (cluster, bastion, addr) = setup();
    within("after authentication", async {
        let mut witness = Witness::new(addr, "tclient", None).await;
        let mut failures = Vec::new();
        for (case, bytes) in after_auth_cases() {
            let direct = RawClient::startup(cluster.addr(), "app", "postgres", Some(BACKEND_PW));
            let direct = transcript(direct.await.unwrap(), &bytes).await;
            let proxied = transcript(login(addr, "tclient", None).await, &bytes).await;
            eprintln!("{case}: {proxied:?}; PostgreSQL: {direct:?}");
            let expected = match known_divergence(case) {
                Some(today) => today.iter().map(|s| (*s).to_owned()).collect(),
                None => direct.0.clone(),
            };
            if proxied.0 != expected {
                failures.push(format!(
                    "{case}: {proxied:?}, expected {expected:?}; PostgreSQL: {direct:?}"
                ));
            }
            witness.still_serving(case).await;
        }
        assert!(failures.is_empty(), "{failures:#?}");
    })
    .await;
    bastion.finish(&[BACKEND_PW, MD5_PW]);
}

/// Sends `bytes` then `SELECT 1`; returns the shape of what came back (tags, severities and
/// SQLSTATEs, then how it ended) and, apart, the error messages to show on a mismatch.
async fn transcript(mut client: RawClient, bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut bytes = bytes.to_vec();
    bytes.extend_from_slice(&message(b'Q', b"SELECT 1\0"));
    let _ = client.send_raw(&bytes).await;
    let (mut shape, mut messages) = (Vec::new(), Vec::new());
    loop {
        let read = tokio::time::timeout(SILENCE, client.read()).await;
        let step = match read {
            Err(_) | Ok(Err(RawClientError::Timeout)) => "silent".to_owned(),
            Ok(Err(RawClientError::Closed | RawClientError::Io(_))) => "closed".to_owned(),
            Ok(Err(e)) => format!("client error {e}"),
            Ok(Ok(BackendMessage::ErrorResponse(e))) => {
                messages.push(e.message().to_owned());
                let severity = e.severity().map(|s| s.as_str()).unwrap_or("?");
                format!(
                    "E {severity} {}",
                    e.sqlstate()
                        .map(|c| c.as_str().to_owned())
                        .unwrap_or_default()
                )
            }
            Ok(Ok(other)) => format!("{:?}", other.tag()),
        };
        let end = !step.starts_with(|c: char| c.is_ascii_uppercase()) || step == "ReadyForQuery";
        shape.push(step);
        if end {
            return (shape, messages);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_too_slow_to_log_in_are_closed_by_auth_timeout() {
    let (_cluster, bastion, addr) = setup();
    within("slow clients", async {
        let mut witness = Witness::new(addr, "tclient", None).await;
        let started = Instant::now();
        let (half, md5_stall, trickle, silent) = tokio::join!(
            half_startup_then_stall(addr),
            md5_startup_then_stall(addr),
            startup_one_byte_at_a_time(addr),
            connect_and_say_nothing(addr),
        );
        let elapsed = started.elapsed();
        let timeout = "canceling authentication due to timeout";
        assert_fatal(
            "half a startup packet, then nothing",
            &half,
            "57014",
            timeout,
        );
        assert_fatal(
            "md5 startup, then no password",
            &md5_stall,
            "57014",
            timeout,
        );
        assert_fatal(
            "a startup packet one byte every 200 ms",
            &trickle,
            "57014",
            timeout,
        );
        assert!(
            silent.is_fatal("57014") || silent == Answer::Closed,
            "a silent connection: {silent:?}"
        );
        assert!(
            elapsed < Duration::from_secs(4),
            "auth_timeout 1s took {elapsed:?}"
        );
        witness.still_serving("slow clients").await;
    })
    .await;
    bastion.finish(&[BACKEND_PW, MD5_PW]);
}

async fn half_startup_then_stall(addr: SocketAddr) -> Answer {
    let bytes = startup_bytes(&[("user", "tclient")]);
    let mut client = RawClient::connect(addr).await.unwrap();
    client.send_raw(&bytes[..bytes.len() / 2]).await.unwrap();
    answer(&mut client).await
}

async fn md5_startup_then_stall(addr: SocketAddr) -> Answer {
    let mut client = RawClient::connect(addr).await.unwrap();
    client.send_startup(&[("user", "mclient")]).await.unwrap();
    let first = client.read().await.unwrap();
    assert!(
        matches!(first, BackendMessage::Authentication(_)),
        "{first:?}"
    );
    answer(&mut client).await
}

/// Six bytes 150 ms apart: the trickle must not restart the clock, so the FATAL comes about
/// 1 s after connect, not 1 s after the last byte.
async fn startup_one_byte_at_a_time(addr: SocketAddr) -> Answer {
    let bytes = startup_bytes(&[("user", "tclient"), ("application_name", "slowloris")]);
    let mut client = RawClient::connect(addr).await.unwrap();
    let connected = Instant::now();
    for byte in &bytes[..6] {
        client.send_raw(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let got = answer(&mut client).await;
    let took = connected.elapsed();
    assert!(
        took < Duration::from_millis(1800),
        "the trickle kept the connection for {took:?}"
    );
    got
}

async fn connect_and_say_nothing(addr: SocketAddr) -> Answer {
    let mut client = RawClient::connect(addr).await.unwrap();
    answer(&mut client).await
}

/// PostgreSQL answers each negotiation request once; a repeat is an unsupported protocol
/// (0A000), as `ProcessStartupPacket` answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ssl_or_gssenc_request_is_refused_as_postgresql_refuses_it() {
    let (_cluster, bastion, addr) = setup();
    within("second negotiation request", async {
        let mut witness = Witness::new(addr, "tclient", None).await;
        let requests = [
            ("SSLRequest", [0x04, 0xd2, 0x16, 0x2f]),
            ("GSSENCRequest", [0x04, 0xd2, 0x16, 0x30]),
        ];
        for (case, code) in requests {
            let mut client = RawClient::connect(addr).await.unwrap();
            client.send_raw(&packet(&code)).await.unwrap();
            assert_eq!(client.read_byte().await.unwrap(), b'N', "{case}");
            client.send_raw(&packet(&code)).await.unwrap();
            let got = answer(&mut client).await;
            assert_fatal(case, &got, "0A000", "unsupported frontend protocol");
            witness.still_serving(case).await;
        }
    })
    .await;
    bastion.finish(&[BACKEND_PW, MD5_PW]);
}
