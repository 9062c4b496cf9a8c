//! [`Lease`]: one checked-out connection, whose end decides its fate.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::slots::SlotPermit;
use super::{Manager, Pooled, Shared};

/// A checked-out connection. It derefs to the connection. End it with [`Lease::release`]
/// (clean), [`Lease::reset_and_release`] (reset first) or [`Lease::discard_after_error`];
/// dropping it closes the connection and frees its slot for the next waiter.
pub struct Lease<M: Manager> {
    shared: Arc<Shared<M>>,
    // Declared before the permit: dropping a lease closes the connection before its slot is
    // free for a waiter.
    pooled: Box<Pooled<M>>,
    permit: SlotPermit,
}

impl<M: Manager> Lease<M> {
    pub(super) fn new(shared: Arc<Shared<M>>, pooled: Box<Pooled<M>>, permit: SlotPermit) -> Self {
        Self {
            shared,
            pooled,
            permit,
        }
    }

    /// Returns a clean connection as it is (transaction mode: after ReadyForQuery `I` with
    /// nothing unread).
    pub fn release(self) {
        let Self {
            shared,
            pooled,
            permit,
        } = self;
        shared.return_idle(pooled);
        drop(permit);
    }

    /// Resets the connection with the manager's reset (session mode), then returns it; a
    /// failed reset closes it and gives the reset's error. The connection cannot be handed
    /// out before the reset has finished: the lease's slot is held until then (also when this
    /// future is dropped midway, which closes the connection).
    pub async fn reset_and_release(self) -> Result<(), M::Error> {
        let Self {
            shared,
            mut pooled,
            permit,
        } = self;
        let reset = shared.manager.reset(&mut pooled.conn).await;
        match reset {
            Ok(()) => shared.return_idle(pooled),
            Err(_) => drop(pooled),
        }
        drop(permit);
        reset
    }

    /// Closes the connection after it failed in use, and has idle connections checked before
    /// they are handed out again (the backend may have restarted).
    pub fn discard_after_error(self) {
        self.shared.note_error();
    }
}

impl<M: Manager> Deref for Lease<M> {
    type Target = M::Conn;

    fn deref(&self) -> &M::Conn {
        &self.pooled.conn
    }
}

impl<M: Manager> DerefMut for Lease<M> {
    fn deref_mut(&mut self) -> &mut M::Conn {
        &mut self.pooled.conn
    }
}

impl<M: Manager> std::fmt::Debug for Lease<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("retire_at", &self.pooled.retire_at)
            .finish_non_exhaustive()
    }
}
