//! Stopping a running statement: a CancelRequest with the session's key, the client going
//! away, or `statement_timeout`. Each interrupts SQLite through the session's
//! [`Interrupter`], which remembers why so that the error names the cause as PostgreSQL's does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use pgbastion_wire::CancelKey;
use rand::{Rng, RngCore};
use rusqlite::InterruptHandle;

/// Why a statement was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// A CancelRequest carried the session's key.
    UserRequest = 1,
    /// `statement_timeout` elapsed.
    StatementTimeout = 2,
    /// The client disconnected; nobody reads the answer.
    ClientGone = 3,
}

impl Reason {
    /// PostgreSQL's message for a statement stopped for this reason (SQLSTATE 57014).
    pub fn message(self) -> &'static str {
        match self {
            Self::UserRequest | Self::ClientGone => "canceling statement due to user request",
            Self::StatementTimeout => "canceling statement due to statement timeout",
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        [Self::UserRequest, Self::StatementTimeout, Self::ClientGone]
            .into_iter()
            .find(|reason| *reason as u8 == value)
    }
}

/// Interrupts one session's SQLite connection from any thread.
pub struct Interrupter {
    handle: InterruptHandle,
    /// The last [`Reason`] given, 0 for none.
    reason: AtomicU8,
}

impl std::fmt::Debug for Interrupter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupter")
            .field("reason", &self.reason())
            .finish_non_exhaustive()
    }
}

impl Interrupter {
    /// An interrupter for the connection `handle` belongs to.
    pub fn new(handle: InterruptHandle) -> Self {
        Self {
            handle,
            reason: AtomicU8::new(0),
        }
    }

    /// Stops the statement running now, if any (SQLite ignores an interrupt when idle: the
    /// next statement clears it before it starts).
    pub fn interrupt(&self, reason: Reason) {
        self.reason.store(reason as u8, Ordering::SeqCst);
        self.handle.interrupt();
    }

    /// Why the last interrupt happened.
    pub fn reason(&self) -> Option<Reason> {
        Reason::from_u8(self.reason.load(Ordering::SeqCst))
    }

    /// Forgets the reason of an earlier interrupt (a new message starts).
    pub fn clear(&self) {
        self.reason.store(0, Ordering::SeqCst);
    }
}

/// The cancel keys of live sessions. A key is minted when a session starts and removed when
/// its [`Registration`] drops; a CancelRequest interrupts the session whose whole key matches.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<u32, Entry>>,
}

#[derive(Debug)]
struct Entry {
    secret: Bytes,
    interrupter: Arc<Interrupter>,
}

/// Keeps a session's key registered; dropping it unregisters the key.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    process_id: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.process_id);
    }
}

impl CancelRegistry {
    /// Mints a key with a `secret_len`-byte secret for the session `interrupter` stops.
    pub fn register(
        self: &Arc<Self>,
        interrupter: Arc<Interrupter>,
        secret_len: usize,
    ) -> (CancelKey, Registration) {
        let mut rng = rand::thread_rng();
        let mut secret = vec![0u8; secret_len];
        rng.fill_bytes(&mut secret);
        let secret = Bytes::from(secret);
        let mut sessions = self.lock();
        // Process ids are positive in PostgreSQL; drivers may treat them as signed.
        let process_id = loop {
            let candidate = rng.gen_range(1..=i32::MAX.unsigned_abs());
            if !sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        sessions.insert(
            process_id,
            Entry {
                secret: secret.clone(),
                interrupter,
            },
        );
        let registration = Registration {
            registry: Arc::clone(self),
            process_id,
        };
        (CancelKey::new(process_id, secret), registration)
    }

    /// Interrupts the session `request` names when its secret matches (compared in constant
    /// time); anything else does nothing, as in PostgreSQL. Returns whether it matched.
    pub fn cancel(&self, request: &CancelKey) -> bool {
        let sessions = self.lock();
        let Some(entry) = sessions.get(&request.process_id) else {
            return false;
        };
        let matches = pgbastion_auth::ct::eq(&entry.secret, &request.secret_key);
        if matches {
            entry.interrupter.interrupt(Reason::UserRequest);
        }
        matches
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        // The map stays consistent even if a holder panicked: every update is one call.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn interrupter() -> Arc<Interrupter> {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        Arc::new(Interrupter::new(conn.get_interrupt_handle()))
    }

    #[test]
    fn only_the_whole_key_cancels_and_dropping_unregisters() {
        let registry = Arc::new(CancelRegistry::default());
        let target = interrupter();
        let (key, registration) = registry.register(target.clone(), 32);
        assert_eq!(key.secret_key.len(), 32);

        let mut forged = key.secret_key.to_vec();
        forged[31] ^= 0x80;
        assert!(!registry.cancel(&CancelKey::new(key.process_id, forged)));
        assert!(!registry.cancel(&CancelKey::new(key.process_id, key.secret_key.slice(..4))));
        assert_eq!(target.reason(), None);

        assert!(registry.cancel(&key));
        assert_eq!(target.reason(), Some(Reason::UserRequest));

        drop(registration);
        assert!(
            !registry.cancel(&key),
            "a finished session's key is forgotten"
        );
    }
}
