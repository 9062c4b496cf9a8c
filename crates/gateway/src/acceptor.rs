//! [`Acceptor`]: a listener whose `accept` never gives up.
//!
//! `accept()` fails for reasons that have nothing to do with the listener: the process is out
//! of file descriptors (EMFILE), the system is (ENFILE), a client reset its connection before
//! we took it (ECONNABORTED), the kernel is short of memory (ENOBUFS). A server that stops
//! accepting on the first such error goes deaf for good while its established sessions carry
//! on; one that retries at once spins, because the pending connection stays in the backlog and
//! the socket stays readable. So: back off, keep the sessions we have, recover when resources
//! free up, and write one log line when a burst of failures starts and one with its count when
//! it ends, instead of one per failure.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The first pause after a failed accept; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// The longest pause between attempts: how late we may notice that descriptors came back.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// A burst ends after this long without a failure. Freeing a few descriptors lets a few
/// accepts through before the next failure; that is still the same burst.
const QUIET: Duration = Duration::from_secs(2);
/// A burst that lasts this long is reported again, so a long outage stays visible.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// A TCP listener that survives accept errors: [`Acceptor::accept`] waits for the next
/// connection however many attempts fail on the way.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    burst: Option<Burst>,
}

/// Failures close enough together to be one event.
#[derive(Debug)]
struct Burst {
    started: Instant,
    last_failure: Instant,
    reported: Instant,
    failures: u64,
    reported_failures: u64,
    backoff: Duration,
}

impl Burst {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            last_failure: now,
            reported: now,
            failures: 0,
            reported_failures: 0,
            backoff: MIN_BACKOFF,
        }
    }

    /// When the burst is over if nothing else fails.
    fn ends_at(&self) -> Instant {
        self.last_failure + QUIET
    }
}

impl Acceptor {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener) -> Self {
        Self {
            listener,
            burst: None,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Never fails: after an error it logs (once per burst), waits a
    /// little when the error is about resources (descriptors, memory) and tries again.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let result = match self.burst.as_ref().map(Burst::ends_at) {
                // While a burst is open, its end is noticed even if no client comes.
                Some(ends_at) => tokio::select! {
                    result = self.listener.accept() => result,
                    () = tokio::time::sleep_until(ends_at) => {
                        self.end_burst();
                        continue;
                    }
                },
                None => self.listener.accept().await,
            };
            match result {
                Ok(accepted) => return accepted,
                Err(error) => {
                    let pause = self.record_failure(&error);
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }

    /// Counts a failure, logging the first of a burst; returns how long to wait.
    fn record_failure(&mut self, error: &io::Error) -> Duration {
        let now = Instant::now();
        if self.burst.as_ref().is_some_and(|b| now >= b.ends_at()) {
            self.end_burst();
        }
        let listener = self.local_addr().ok();
        let burst = self.burst.get_or_insert_with(|| {
            tracing::warn!(
                ?listener, %error,
                "accept failed; retrying with a backoff, established sessions carry on \
                 (the failures of this burst are counted and reported when it ends)"
            );
            Burst::new(now)
        });
        burst.failures += 1;
        burst.last_failure = now;
        if now.duration_since(burst.reported) >= REPORT_EVERY {
            let failures = burst.failures - burst.reported_failures;
            tracing::warn!(
                ?listener, %error, failures,
                "accept still failing: {failures} failed attempts in the last {} s",
                now.duration_since(burst.reported).as_secs()
            );
            burst.reported = now;
            burst.reported_failures = burst.failures;
        }
        if is_per_connection(error) {
            // The failure was that one client's (it reset before we took it): the next
            // connection may be fine, so there is nothing to wait for.
            return Duration::ZERO;
        }
        let pause = burst.backoff;
        burst.backoff = (burst.backoff * 2).min(MAX_BACKOFF);
        pause
    }

    /// Reports the burst that just ended, if any.
    fn end_burst(&mut self) {
        let Some(burst) = self.burst.take() else {
            return;
        };
        tracing::warn!(
            listener = ?self.local_addr().ok(), failures = burst.failures,
            "accept recovered after {} failed attempts in {} ms",
            burst.failures,
            burst.last_failure.duration_since(burst.started).as_millis()
        );
    }
}

/// Errors about one incoming connection rather than about the listener or the process.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    async fn acceptor() -> Acceptor {
        Acceptor::new(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    #[tokio::test]
    async fn resource_errors_back_off_exponentially_up_to_the_cap() {
        let mut acceptor = acceptor().await;
        let pauses: Vec<Duration> = (0..10)
            .map(|_| acceptor.record_failure(&emfile()))
            .collect();
        assert_eq!(pauses[0], MIN_BACKOFF);
        assert_eq!(pauses[1], MIN_BACKOFF * 2);
        assert_eq!(pauses[9], MAX_BACKOFF);
        assert_eq!(acceptor.burst.as_ref().map(|b| b.failures), Some(10));
    }

    #[tokio::test]
    async fn an_aborted_connection_is_retried_at_once() {
        let mut acceptor = acceptor().await;
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(acceptor.record_failure(&aborted), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_survives_a_few_accepts_and_ends_after_a_quiet_spell() {
        let mut acceptor = acceptor().await;
        acceptor.record_failure(&emfile());
        let addr = acceptor.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        acceptor.accept().await;
        assert_eq!(acceptor.burst.as_ref().map(|b| b.failures), Some(1));
        assert_eq!(acceptor.record_failure(&emfile()), MIN_BACKOFF * 2);
        let waiting = tokio::time::timeout(QUIET * 2, acceptor.accept()).await;
        assert!(waiting.is_err(), "no client came");
        assert!(acceptor.burst.is_none(), "the quiet spell ended the burst");
        assert_eq!(acceptor.record_failure(&emfile()), MIN_BACKOFF);
    }
}
