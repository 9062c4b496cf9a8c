//! [`Readiness`]: whether the proxy should get clients (`/ready`): it listens, its
//! configuration is loaded, it is not draining, and a backend answers.
//!
//! "A backend answers" is checked cheaply: a TCP (or Unix socket) connect, with a timeout,
//! to the backends whose address no placeholder fills in, at most once per
//! [`PROBE_EVERY`]; the answer is kept in between. With no such backend (every route's host
//! comes from the client) there is nothing to probe and the check passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::route::Routes;
use crate::target::Address;

/// How long a probe's answer is kept.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// How long one probe connect may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the proxy is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The listeners are not open yet.
    #[error("not listening yet")]
    NotListening,
    /// A shutdown is draining the sessions.
    #[error("draining")]
    Draining,
    /// No backend accepted a connection.
    #[error("no backend is reachable")]
    NoBackend,
}

/// The readiness state.
#[derive(Debug, Default)]
pub struct Readiness {
    listening: AtomicBool,
    draining: AtomicBool,
    backends: Mutex<Vec<Address>>,
    probe: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    /// The listeners are open (the configuration was loaded).
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Relaxed);
    }

    /// A shutdown began: not ready from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The backends to probe (from the routes in force).
    pub fn set_backends(&self, backends: Vec<Address>) {
        *self.backends.lock().unwrap_or_else(PoisonError::into_inner) = backends;
    }

    /// Probes the backends of `routes` whose address has no placeholder (at start and after
    /// each reload).
    pub fn set_backends_of(&self, routes: &Routes) {
        self.set_backends(
            routes
                .0
                .iter()
                .filter_map(|route| route.backend.fixed_address())
                .collect(),
        );
    }

    /// Ready, or why not.
    pub async fn check(&self) -> Result<(), NotReady> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(NotReady::Draining);
        }
        if !self.listening.load(Ordering::Relaxed) {
            return Err(NotReady::NotListening);
        }
        if self.backend_reachable().await {
            Ok(())
        } else {
            Err(NotReady::NoBackend)
        }
    }

    async fn backend_reachable(&self) -> bool {
        // Held across the probe: concurrent checks share one probe.
        let mut last = self.probe.lock().await;
        if let Some((at, reachable)) = *last {
            if at.elapsed() < PROBE_EVERY {
                return reachable;
            }
        }
        let backends = self
            .backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut reachable = backends.is_empty();
        for backend in &backends {
            if probe(backend).await {
                reachable = true;
                break;
            }
        }
        *last = Some((Instant::now(), reachable));
        reachable
    }
}

async fn probe(backend: &Address) -> bool {
    let connect = async {
        match backend {
            Address::Tcp(host, port) => tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .is_ok(),
            Address::Unix(path) => tokio::net::UnixStream::connect(path).await.is_ok(),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, connect)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unused_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn ready_once_listening_with_a_backend_that_answers_and_never_while_draining() {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = backend.local_addr().unwrap().port();
        let readiness = Readiness::default();
        readiness.set_backends(vec![
            Address::Tcp("127.0.0.1".into(), unused_port()),
            Address::Tcp("127.0.0.1".into(), port),
        ]);
        assert_eq!(readiness.check().await, Err(NotReady::NotListening));
        readiness.set_listening();
        assert_eq!(readiness.check().await, Ok(()));
        readiness.set_draining();
        assert_eq!(readiness.check().await, Err(NotReady::Draining));
    }

    #[tokio::test]
    async fn no_backend_answering_is_not_ready_and_the_answer_is_kept_for_a_while() {
        let readiness = Readiness::default();
        readiness.set_listening();
        let port = unused_port();
        readiness.set_backends(vec![Address::Tcp("127.0.0.1".into(), port)]);
        assert_eq!(readiness.check().await, Err(NotReady::NoBackend));
        // Within PROBE_EVERY the last probe's answer stands, even with a backend now up.
        let _backend = tokio::net::TcpListener::bind(("127.0.0.1", port)).await;
        assert_eq!(readiness.check().await, Err(NotReady::NoBackend));
    }

    #[tokio::test]
    async fn with_nothing_to_probe_a_listening_proxy_is_ready() {
        let readiness = Readiness::default();
        readiness.set_listening();
        assert_eq!(readiness.check().await, Ok(()));
    }
}
