#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Running out of file descriptors must not end a listener: the binary runs under a tiny
//! RLIMIT_NOFILE (set with util-linux `prlimit`, since the workspace forbids `unsafe` and so
//! `pre_exec`), is flooded with idle connections until `accept()` fails, and must keep its
//! established session, log the burst once with a count, and serve new clients once the
//! flood is gone.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgbastion_testkit::RawClient;
use pgbastion_wire::BackendMessage;

/// The descriptor limit the binary runs under: a dozen for the runtime, the rest for clients.
const FD_LIMIT: u32 = 64;
/// More idle connections than the limit leaves room for.
const FLOOD: usize = 120;

/// A running `pgbastion` killed when dropped, with its log lines (stderr) collected.
struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`; returns it.
    fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.assert_alive();
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_alive(&mut self) {
        let status = self.child.try_wait().unwrap();
        assert!(
            status.is_none(),
            "pgbastion exited ({status:?}):\n{}",
            self.log().join("\n")
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the embedded default under `prlimit --nofile=FD_LIMIT` and waits for its banner.
fn start_with_fd_limit(addr: SocketAddr) -> Running {
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={FD_LIMIT}:{FD_LIMIT}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_pgbastion"))
        .args(["--listen", &addr.to_string()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run prlimit (util-linux)");
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("--help") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no banner:\n{banner}"
        );
        banner.push_str(&line);
    }
    Running { child, log }
}

async fn query_answers(client: &mut RawClient) -> bool {
    let messages = client.simple_query("SELECT 1").await.unwrap();
    messages
        .iter()
        .any(|m| matches!(m, BackendMessage::DataRow(_)))
}

#[tokio::test]
async fn running_out_of_file_descriptors_does_not_end_the_listener() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut server = start_with_fd_limit(addr);
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut session = RawClient::startup(addr, "alice", "main", None)
            .await
            .unwrap();

        // Idle connections until accept() fails: the kernel completes them into the
        // backlog, the server cannot take them all.
        let flood: Vec<TcpStream> = (0..FLOOD)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        server.wait_for_log("accept failed");
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.assert_alive();
        assert!(
            query_answers(&mut session).await,
            "the established session stopped"
        );

        drop(flood);
        let recovered = server.wait_for_log("accept recovered");
        let mut fresh = RawClient::startup(addr, "bob", "main", None).await.unwrap();
        assert!(
            query_answers(&mut fresh).await,
            "a new client is not served"
        );
        server.assert_alive();

        let limit_line = server.wait_for_log("open files limit");
        assert!(limit_line.contains(&FD_LIMIT.to_string()), "{limit_line}");
        let log = server.log();
        let failures = log.iter().filter(|l| l.contains("accept failed")).count();
        assert_eq!(
            failures,
            1,
            "one line per burst, not per failure:\n{}",
            log.join("\n")
        );
        let count: u64 = recovered
            .split("after ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {recovered:?}"));
        assert!(count >= 1, "{recovered}");
    })
    .await
    .expect("timed out");
}
