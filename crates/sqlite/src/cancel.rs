//! Stopping a running statement: a CancelRequest with the session's key, the client going
//! away, or `statement_timeout`. Each interrupts SQLite through the session's
//! [`Interrupter`], which remembers why so that the error names the cause as PostgreSQL's does.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use pgbastion_gateway::CancelKeys;
use pgbastion_wire::CancelKey;
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

/// The cancel keys of live sessions, each reaching its session's [`Interrupter`].
pub type CancelRegistry = CancelKeys<Arc<Interrupter>>;

/// Interrupts the session `request` names when the whole key matches; anything else does
/// nothing, as in PostgreSQL. Returns whether it matched.
pub fn cancel(registry: &CancelRegistry, request: &CancelKey) -> bool {
    match registry.lookup(request) {
        Some(interrupter) => {
            interrupter.interrupt(Reason::UserRequest);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use pgbastion_wire::ProtocolVersion;

    use super::*;

    fn interrupter() -> Arc<Interrupter> {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        Arc::new(Interrupter::new(conn.get_interrupt_handle()))
    }

    #[test]
    fn only_the_whole_key_cancels_and_dropping_unregisters() {
        let registry = Arc::new(CancelRegistry::default());
        let target = interrupter();
        let registration = registry.register(None, ProtocolVersion::V3_2, target.clone());
        let key = registration.key().clone();
        assert_eq!(key.secret_key.len(), 32);

        let mut forged = key.secret_key.to_vec();
        forged[31] ^= 0x80;
        assert!(!cancel(&registry, &CancelKey::new(key.process_id, forged)));
        assert_eq!(target.reason(), None);

        assert!(cancel(&registry, &key));
        assert_eq!(target.reason(), Some(Reason::UserRequest));

        drop(registration);
        assert!(
            !cancel(&registry, &key),
            "a finished session's key is forgotten"
        );
    }
}
