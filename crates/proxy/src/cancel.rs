//! Cancel forwarding: clients get a BackendKeyData whose process ID is their backend's real
//! one (so `pg_terminate_backend`, NOTIFY sender PIDs and `pg_stat_activity` lookups work) and
//! whose secret is minted by pgbastion; a CancelRequest with that whole key is sent, with the
//! backend's own key, to the backend that serves the session. The keys live in the gateway's
//! [`CancelKeys`] (two backends on different servers can share a process ID: the secret tells
//! them apart).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pgbastion_gateway::cancel_keys::{CancelKeys, Registration};
use pgbastion_wire::CancelKey;
use tokio::sync::{Notify, RwLock};

use crate::target::Address;

/// A backend and its own cancel key.
#[derive(Debug, Clone)]
pub struct BackendKey {
    /// The backend.
    pub address: Address,
    /// The backend's key.
    pub key: CancelKey,
}

/// Where a minted key's cancel requests go.
#[derive(Debug, Clone)]
pub enum CancelTarget {
    /// The one backend of a transparent session.
    Fixed(BackendKey),
    /// A pooled client: the backend serving it at the moment of the request, if any.
    Pooled(Arc<CancelSlot>),
}

impl CancelTarget {
    /// Forwards a cancel request and waits until the backend closed the cancel connection
    /// (it has then signalled its process). Returns whether anything was sent.
    pub async fn forward(&self, timeout: Duration) -> std::io::Result<bool> {
        match self {
            Self::Fixed(backend) => {
                crate::backend::send_cancel(&backend.address, &backend.key, timeout).await?;
                Ok(true)
            }
            Self::Pooled(slot) => slot.forward(timeout).await,
        }
    }
}

/// A pooled client's cancel target. The pooled session attaches the backend it checked out,
/// says when that backend is working for the client, and detaches it before giving it back;
/// detaching waits for cancel requests being forwarded to it, so that none can land on the
/// backend's next client (PgDog #1505). A cancel while the client waits for a backend wakes
/// the wait instead.
#[derive(Debug, Default)]
pub struct CancelSlot {
    serving: Mutex<Option<BackendKey>>,
    busy: AtomicBool,
    waiting: AtomicBool,
    /// Cancels that arrived while the client waited for a backend.
    cancels: AtomicU64,
    wake: Notify,
    gate: RwLock<()>,
}

impl CancelSlot {
    /// The client's backend is now `backend`.
    pub fn attach(&self, backend: BackendKey) {
        *self.serving.lock().unwrap_or_else(PoisonError::into_inner) = Some(backend);
    }

    /// Whether the backend is running something for the client.
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Release);
    }

    /// The client gives its backend back: waits for cancels being forwarded to it.
    pub async fn detach(&self) {
        let _no_cancel_in_flight = self.gate.write().await;
        self.busy.store(false, Ordering::Release);
        *self.serving.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The client starts waiting for a backend; the mark tells
    /// [`cancelled_since`](Self::cancelled_since) which cancels are for this wait.
    pub fn start_waiting(&self) -> u64 {
        let seen = self.cancels.load(Ordering::Acquire);
        self.waiting.store(true, Ordering::Release);
        seen
    }

    /// The client has a backend, or gave up waiting.
    pub fn stop_waiting(&self) {
        self.waiting.store(false, Ordering::Release);
    }

    /// Resolves when a cancel request arrived after the wait that returned `seen` began
    /// (an earlier one was for something else).
    pub async fn cancelled_since(&self, seen: u64) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            // Registered before the check, so that a cancel in between is not missed.
            notified.as_mut().enable();
            if self.cancels.load(Ordering::Acquire) != seen {
                return;
            }
            notified.await;
        }
    }

    async fn forward(&self, timeout: Duration) -> std::io::Result<bool> {
        let _in_flight = self.gate.read().await;
        if self.waiting.load(Ordering::Acquire) {
            self.cancels.fetch_add(1, Ordering::AcqRel);
            self.wake.notify_waiters();
            return Ok(true);
        }
        if !self.busy.load(Ordering::Acquire) {
            // The query finished: cancelling now could only hit a later one.
            return Ok(false);
        }
        let backend = self
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match backend {
            Some(backend) => {
                crate::backend::send_cancel(&backend.address, &backend.key, timeout).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Minted keys of the sessions open now.
pub type CancelRegistry = CancelKeys<CancelTarget>;

/// Keeps a session's key registered until the session ends.
pub type CancelRegistration = Registration<CancelTarget>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pgbastion_wire::ProtocolVersion;

    use super::*;

    #[test]
    fn a_client_key_carries_the_backend_pid_and_never_the_backend_secret() {
        let registry = Arc::new(CancelRegistry::default());
        let target = CancelTarget::Fixed(BackendKey {
            address: Address::Tcp("a".into(), 5432),
            key: CancelKey::new(77, vec![1, 2, 3, 4]),
        });
        let registration = registry.register(Some(77), ProtocolVersion::V3_0, target);
        let minted = registration.key();
        assert_eq!(minted.process_id, 77);
        assert_ne!(&minted.secret_key[..], &[1, 2, 3, 4]);
        let Some(CancelTarget::Fixed(found)) = registry.lookup(minted) else {
            panic!("registered");
        };
        assert_eq!(found.key.secret_key[..], [1, 2, 3, 4]);
    }
}
