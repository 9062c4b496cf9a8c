//! Hostile input at the listener of the real binary: malformed and untrusted PROXY headers,
//! floods beyond the per-address limits, cancel-request floods and file-descriptor
//! exhaustion. The cases are listed in docs/hostile.md.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

#[path = "common/binary.rs"]
mod binary;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use binary::*;
use pgbastion_testkit::{Cluster, PasswordEncryption, RawClient};
use pgbastion_wire::{BackendMessage, FrontendMessage};

const BACKEND_PW: &str = "hostile-listeners-backend-pw-c4";

fn cluster() -> Cluster {
    Cluster::builder()
        .hba(&["host all all 127.0.0.1/32 scram-sha-256"])
        .user("app", BACKEND_PW, PasswordEncryption::ScramSha256)
        .start()
        .unwrap()
}

/// A pgbastion with one `[[listener]]` per entry of `listeners` (extra keys for each, in
/// TOML) and a `trust` route for every user to `app` on `cluster`; returns the addresses.
fn bastion(cluster: &Cluster, listeners: &[&str], wrapper: &[&str]) -> (Bastion, Vec<SocketAddr>) {
    let ports = free_ports(listeners.len());
    let mut config = String::new();
    for (port, extra) in ports.iter().zip(listeners) {
        config.push_str(&format!(
            "[[listener]]\naddress = \"127.0.0.1:{port}\"\nauth_timeout = \"2s\"\n{extra}\n\n"
        ));
    }
    config.push_str(&format!(
        "[[route]]\nauth = \"trust\"\nbackend = \"postgres://app:${{BACKEND_PW}}@127.0.0.1:{}/postgres?sslmode=disable\"\n\n[log]\nlevel = \"debug\"\n",
        cluster.port()
    ));
    let bastion =
        Bastion::start_wrapped(wrapper, &config, &[], &[("BACKEND_PW", BACKEND_PW)], &ports);
    (bastion, ports.into_iter().map(local).collect())
}

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY v2 header: version/command byte, family byte, then the address block as given.
fn v2(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[version_command, family]);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(block);
    out
}

/// A TCP4 address block: 203.0.113.9:40000 → 127.0.0.1:6432, then `tlvs`.
fn tcp4_block(tlvs: &[u8]) -> Vec<u8> {
    let mut block = vec![203, 0, 113, 9, 127, 0, 0, 1];
    block.extend_from_slice(&40_000u16.to_be_bytes());
    block.extend_from_slice(&6432u16.to_be_bytes());
    block.extend_from_slice(tlvs);
    block
}

/// A PROXY header case: name, header bytes, and the expected answer (`None`: the client is
/// served).
type HeaderCase = (&'static str, Vec<u8>, Option<(&'static str, &'static str)>);

fn trusted_header_cases() -> Vec<HeaderCase> {
    let violation = Some(("08P01", ""));
    // A TLV claiming 100 bytes with 3 present, inside a block whose length is honest.
    let truncated_tlv = tcp4_block(&[0x01, 0, 100, b'p', b'g', b'x']);
    let authority = tcp4_block(&[
        0x02, 0, 9, b'd', b'b', b'.', b'l', b'o', b'c', b'a', b'l', b'x',
    ]);
    vec![
        ("no header where one is required", Vec::new(), violation),
        // D2 (fixed): a complete v1 line (CRLF present) with missing fields can never
        // become valid; it used to wait for auth_timeout.
        (
            "v1 with missing fields",
            b"PROXY TCP4 203.0.113.9\r\n".to_vec(),
            violation,
        ),
        (
            "v1 without CRLF in 107 bytes",
            [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat(),
            violation,
        ),
        (
            "v1 with an address that is not one",
            b"PROXY TCP4 999.0.113.9 127.0.0.1 40000 6432\r\n".to_vec(),
            violation,
        ),
        (
            "v1 with port 70000",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 70000 6432\r\n".to_vec(),
            violation,
        ),
        (
            "v1 mixing families",
            b"PROXY TCP4 ::1 127.0.0.1 40000 6432\r\n".to_vec(),
            violation,
        ),
        (
            "v2 with version 3",
            v2(0x31, 0x11, &tcp4_block(&[])),
            violation,
        ),
        (
            "v2 with an unknown command",
            v2(0x2f, 0x11, &tcp4_block(&[])),
            violation,
        ),
        (
            "v2 TCP4 with a 4-byte address block",
            v2(0x21, 0x11, &[203, 0, 113, 9]),
            violation,
        ),
        // D3 (fixed): a TLV running past the header makes the header malformed; it used to
        // be dropped and the client served.
        (
            "v2 with a truncated TLV",
            v2(0x21, 0x11, &truncated_tlv),
            violation,
        ),
        (
            "v1 well formed",
            b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 6432\r\n".to_vec(),
            None,
        ),
        (
            "v2 well formed with an authority TLV",
            v2(0x21, 0x11, &authority),
            None,
        ),
        ("v2 LOCAL (a health check)", v2(0x20, 0x00, &[]), None),
    ]
}

/// Sends `header`, then a startup for `tclient`; returns `None` when the login succeeded.
async fn header_then_login(addr: SocketAddr, header: &[u8]) -> Option<Answer> {
    let mut client = RawClient::connect(addr).await.unwrap();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&startup_bytes(&[
        ("user", "tclient"),
        ("database", "postgres"),
    ]));
    let _ = client.send_raw(&bytes).await;
    match client.authenticate("tclient", None).await {
        Ok(()) => {
            assert_query_works("after a PROXY header", &mut client).await;
            None
        }
        Err(e) => Some(match e.server_error() {
            Some(error) => Answer::from_error(error),
            None => Answer::Other(e.to_string()),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_untrusted_proxy_headers_are_refused_and_well_formed_ones_served() {
    let cluster = cluster();
    let (bastion, addrs) = bastion(
        &cluster,
        &[
            "",
            "proxy_protocol = \"required\"\ntrusted_proxies = [\"127.0.0.1\"]",
            "proxy_protocol = \"optional\"\ntrusted_proxies = [\"192.0.2.7\"]",
        ],
        &[],
    );
    within("PROXY headers", async {
        let mut witness = Witness::new(addrs[0], "tclient", None).await;
        let mut failures = Vec::new();
        let untrusted = "28000";
        let untrusted_cases: Vec<HeaderCase> = vec![
            (
                "v1 from an untrusted peer",
                b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 6432\r\n".to_vec(),
                Some((untrusted, "")),
            ),
            (
                "v2 from an untrusted peer",
                v2(0x21, 0x11, &tcp4_block(&[])),
                Some((untrusted, "")),
            ),
            ("no header where it is optional", Vec::new(), None),
        ];
        let cases = trusted_header_cases().into_iter().map(|c| (addrs[1], c));
        let cases = cases.chain(untrusted_cases.into_iter().map(|c| (addrs[2], c)));
        for (addr, (case, header, expect)) in cases {
            let got = tokio::time::timeout(CASE_TIMEOUT, header_then_login(addr, &header))
                .await
                .unwrap_or_else(|_| panic!("{case}: timed out"));
            eprintln!("{case}: {got:?}");
            let ok = match (&expect, &got) {
                (None, None) => true,
                (Some((code, needle)), Some(answer)) => {
                    answer.is_fatal(code) && answer.message().contains(needle)
                }
                _ => false,
            };
            if !ok {
                failures.push(format!("{case}: expected {expect:?}, got {got:?}"));
            }
            witness.still_serving(case).await;
        }
        assert!(failures.is_empty(), "{failures:#?}");
    })
    .await;
    bastion.finish(&[BACKEND_PW]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_limits_get_53300_and_others_keep_working() {
    let cluster = cluster();
    let (bastion, addrs) = bastion(
        &cluster,
        &[
            "",
            "max_connections_per_ip = 3",
            "connection_rate_per_ip = 3",
            "max_connections = 4",
        ],
        &[],
    );
    within("limits", async {
        let mut witness = Witness::new(addrs[0], "tclient", None).await;
        let cases = [
            (
                addrs[1],
                3,
                "too many connections from your address (at most 3 at once)",
            ),
            (
                addrs[3],
                4,
                "sorry, too many clients already (pgbastion allows 4)",
            ),
        ];
        for (addr, allowed, refusal) in cases {
            let mut held = Vec::new();
            for _ in 0..allowed {
                held.push(login(addr, "tclient", None).await);
            }
            let got = raw_answer(addr, &startup_bytes(&[("user", "tclient")])).await;
            assert_fatal(refusal, &got, "53300", refusal);
            witness.still_serving(refusal).await;
            held.pop();
            // The freed slot is usable again once the server has seen the close.
            let retry = async {
                loop {
                    match RawClient::startup(addr, "tclient", "postgres", None).await {
                        Ok(client) => break client,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            };
            let mut again = tokio::time::timeout(Duration::from_secs(5), retry)
                .await
                .unwrap();
            assert_query_works(refusal, &mut again).await;
        }
        rate_limit(addrs[2]).await;
        witness.still_serving("connection rate").await;
    })
    .await;
    bastion.finish(&[BACKEND_PW]);
}

/// Four logins at once against `connection_rate_per_ip = 3`: three are served, one is
/// refused (at once, so the bucket cannot refill in between); a second later the address
/// may connect again.
async fn rate_limit(addr: SocketAddr) {
    let case = "a fourth connection within one second";
    let attempts =
        (0..4).map(|_| tokio::spawn(RawClient::startup(addr, "tclient", "postgres", None)));
    let mut refused = Vec::new();
    let mut served = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(client) => served.push(client),
            Err(e) => refused.push(Answer::from_error(
                e.server_error().unwrap_or_else(|| panic!("{case}: {e}")),
            )),
        }
    }
    assert_eq!((served.len(), refused.len()), (3, 1), "{case}: {refused:?}");
    assert_fatal(
        case,
        &refused[0],
        "53300",
        "too many new connections from your address (at most 3 per second)",
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut later = login(addr, "tclient", None).await;
    assert_query_works(case, &mut later).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_cancel_requests_with_wrong_keys_does_nothing_and_real_cancels_still_work() {
    let cluster = cluster();
    let (bastion, addrs) = bastion(&cluster, &["", "cancel_rate_per_ip = 5"], &[]);
    within("cancel flood", async {
        let mut witness = Witness::new(addrs[0], "tclient", None).await;
        let mut victim = login(addrs[1], "tclient", None).await;
        let key = victim.backend_key.clone().unwrap();
        let started = Instant::now();
        for guess in 0..40u32 {
            let mut bogus = vec![0x04, 0xd2, 0x16, 0x2e];
            bogus.extend_from_slice(&key.process_id.to_be_bytes());
            bogus.extend_from_slice(&guess.to_be_bytes());
            let got = raw_answer(addrs[1], &packet(&bogus)).await;
            assert_eq!(got, Answer::Closed, "cancel guess {guess}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the flood took {:?}",
            started.elapsed()
        );
        // None of the guesses hit: the victim's session is untouched.
        assert_query_works("a cancel flood", &mut victim).await;
        witness.still_serving("a cancel flood").await;
        // Past the one-second rate window the real key works again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        victim
            .send(&FrontendMessage::Query("SELECT pg_sleep(20)".into()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        victim.cancel(addrs[1]).await.unwrap();
        let messages = victim.read_until_ready().await.unwrap();
        let cancelled = messages.iter().any(|m| {
            matches!(m, BackendMessage::ErrorResponse(e)
            if e.sqlstate().map(|c| c.as_str() == "57014").unwrap_or(false)
                && e.message() == "canceling statement due to user request")
        });
        assert!(cancelled, "{messages:?}");
    })
    .await;
    bastion.finish(&[BACKEND_PW]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_stop_pgbastion() {
    let cluster = cluster();
    // 64 descriptors: a few for the runtime, logs and the witness; the flood takes the rest.
    let (mut bastion, addrs) = bastion(&cluster, &[""], &["prlimit", "--nofile=64:64"]);
    within("fd exhaustion", async {
        let mut witness = Witness::new(addrs[0], "tclient", None).await;
        let mut flood = Vec::new();
        for _ in 0..150 {
            // The kernel's backlog accepts connections pgbastion cannot take yet.
            if let Ok(Ok(stream)) = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(addrs[0]),
            )
            .await
            {
                flood.push(stream);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(bastion.alive(), "pgbastion died at EMFILE");
        assert_query_works("descriptor exhaustion", witness.session()).await;
        drop(flood);
        // auth_timeout (2 s) also frees the ones pgbastion accepted; a new login must then work.
        let retry = async {
            loop {
                match RawClient::startup(addrs[0], "tclient", "postgres", None).await {
                    Ok(client) => break client,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        let mut fresh = tokio::time::timeout(Duration::from_secs(10), retry)
            .await
            .expect("no login after EMFILE");
        assert_query_works("after descriptor exhaustion", &mut fresh).await;
        witness.still_serving("after descriptor exhaustion").await;
    })
    .await;
    bastion.finish(&[BACKEND_PW]);
}

/// Sockets that never send a byte hold their place in `max_connections_per_ip`, and
/// connections refused during startup still count against `connection_rate_per_ip`, so
/// neither can be used to flood the server without being counted (both used to be counted
/// only once a startup packet had been accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_count_against_the_limits_from_accept() {
    let cluster = cluster();
    let (bastion, addrs) = bastion(
        &cluster,
        &[
            "",
            "max_connections_per_ip = 3",
            "connection_rate_per_ip = 3",
        ],
        &[],
    );
    within("silent sockets", async {
        let mut witness = Witness::new(addrs[0], "tclient", None).await;
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(tokio::net::TcpStream::connect(addrs[1]).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = raw_answer(addrs[1], &startup_bytes(&[("user", "tclient")])).await;
        assert_fatal(
            "a fourth connection behind three silent ones",
            &got,
            "53300",
            "at most 3 at once",
        );
        witness.still_serving("silent sockets").await;
    })
    .await;
    bastion.finish(&[BACKEND_PW]);
}
