//! A relayed session's part in the drain ([`crate::drain`]): what the client side has sent
//! ([`Asked`]), told to the backend side, which decides at its message boundaries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pgbastion_wire::{FrameScanner, TransactionStatus};
use tokio::sync::Notify;

use crate::cancel::BackendKey;
use crate::drain::stopper::Progress;
use crate::drain::DrainWatch;

/// What a relay needs to take part in a drain.
#[derive(Debug)]
pub struct Stop {
    /// The process's drain signal.
    pub watch: DrainWatch,
    /// The backend's own cancel key, to cancel a statement still running at the deadline.
    pub cancel: Option<BackendKey>,
}

/// What the client side of the relay has sent, as the backend side needs to know it.
#[derive(Debug, Default)]
pub(super) struct Asked {
    /// ReadyForQuery messages the client has asked for ([`FrameScanner::ready_points`]).
    ready_points: AtomicU64,
    /// Whether the client side is mid-message, mid-write or inside an unsynced
    /// extended-query group.
    open: AtomicBool,
    /// Whether the client side is writing to the backend.
    writing: AtomicBool,
    /// Whether extended-query messages have gone to the backend since the last Sync (an
    /// Execute may be running with no ReadyForQuery owed yet).
    unsynced: AtomicBool,
    /// Woken when the client side moves.
    pub(super) moved: Notify,
}

impl Asked {
    /// The client side fed `up` and is about to write it to the backend.
    pub(super) fn writing(&self, up: &FrameScanner) {
        self.ready_points
            .store(up.ready_points(), Ordering::Release);
        self.open.store(true, Ordering::Release);
        self.writing.store(true, Ordering::Release);
    }

    /// The client side has written everything it read.
    pub(super) fn written(&self, up: &FrameScanner) {
        let open = up.unsynced() || !up.at_boundary();
        self.open.store(open, Ordering::Release);
        self.unsynced.store(up.unsynced(), Ordering::Release);
        self.writing.store(false, Ordering::Release);
        self.moved.notify_one();
    }

    /// Whether the client side is between messages with nothing being written: a
    /// Terminate may follow.
    pub(super) fn at_rest(&self, up: &FrameScanner) -> bool {
        up.at_boundary() && !self.writing.load(Ordering::Acquire)
    }
}

/// Where the session stands: the backend side's scanner with what the client asked.
pub(super) fn progress(down: &FrameScanner, asked: &Asked) -> Progress {
    Progress {
        running: asked.ready_points.load(Ordering::Acquire) > down.ready_points()
            || asked.unsynced.load(Ordering::Acquire),
        idle: !matches!(
            down.status(),
            Some(TransactionStatus::InTransaction | TransactionStatus::Failed)
        ),
        client_open: asked.open.load(Ordering::Acquire),
        at_boundary: down.at_boundary(),
    }
}
