//! How one session ends when pgbastion shuts down: an idle client is ended at once; one
//! inside a transaction or with a statement running goes on until it is idle or the grace
//! period is over; then what runs is cancelled on the backend and the client is ended once
//! the answer has come (or [`CLOSING_LIMIT`] later). The decision is [`decide`], a pure
//! function; [`Stopper`] feeds it the phase and sends the cancel. Transparent and pooled
//! sessions both use it, each describing where it stands as a [`Progress`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{DrainWatch, Phase};
use crate::cancel::BackendKey;
use crate::dormant::Dormant;

/// How long a forwarded cancel may take to reach the backend.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long, once the grace period is over, the backend may take to answer a cancelled
/// statement; then the session is closed whatever it is doing.
pub const CLOSING_LIMIT: Duration = Duration::from_secs(5);

/// Where the session stands, as [`decide`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Something the client asked for is not answered to its ReadyForQuery yet.
    pub running: bool,
    /// The last ReadyForQuery said idle (not in a transaction).
    pub idle: bool,
    /// The client side is mid-message or mid-write.
    pub client_open: bool,
    /// The client stream is between two backend messages.
    pub at_boundary: bool,
}

/// What the relay does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Go on relaying.
    Relay,
    /// Cancel the running statement on the backend, then go on relaying.
    Cancel,
    /// End the session now.
    End,
}

/// The drain's decision for a session in `phase`. `overdue`: [`CLOSING_LIMIT`] has passed
/// since the grace period ended.
pub fn decide(phase: Phase, at: Progress, cancelled: bool, overdue: bool) -> Step {
    match phase {
        Phase::Serving => Step::Relay,
        _ if overdue => Step::End,
        _ if !at.at_boundary => Step::Relay,
        Phase::Draining if at.idle && !at.running && !at.client_open => Step::End,
        Phase::Draining => Step::Relay,
        Phase::Closing if at.running && !cancelled => Step::Cancel,
        Phase::Closing if at.running => Step::Relay,
        Phase::Closing => Step::End,
    }
}

/// Follows the drain for one session.
#[derive(Debug)]
pub struct Stopper {
    watch: Option<DrainWatch>,
    /// While serving: the wait for the drain to start, kept across [`wake`](Self::wake)s
    /// (registered once, not once per message relayed).
    serving: Option<Dormant<WatchChange>>,
    draining: bool,
    cancelled: bool,
    overdue_at: Option<Instant>,
}

impl Stopper {
    /// A stopper following `watch` (`None`: the session ignores drains).
    pub fn new(watch: Option<DrainWatch>) -> Self {
        Self {
            watch,
            serving: None,
            draining: false,
            cancelled: false,
            overdue_at: None,
        }
    }

    /// Whether the session, standing `at`, ends now; sends a cancel to `backend` when its
    /// time has come. Called only while nothing is half-written to the client.
    pub async fn should_end(&mut self, at: Progress, backend: Option<&BackendKey>) -> bool {
        let Some(watch) = self.watch.as_mut() else {
            return false;
        };
        if self.serving.as_ref().is_some_and(Dormant::is_quiet) {
            // Serving, and the drain has not moved since its wait was registered.
            return false;
        }
        let phase = watch.phase();
        self.draining = phase != Phase::Serving;
        if phase == Phase::Closing && self.overdue_at.is_none() {
            self.overdue_at = Some(Instant::now() + CLOSING_LIMIT);
        }
        let overdue = self.overdue_at.is_some_and(|at| Instant::now() >= at);
        match decide(phase, at, self.cancelled, overdue) {
            Step::Relay => false,
            Step::End => true,
            Step::Cancel => {
                self.cancelled = true;
                if let Some(key) = backend {
                    let sent = crate::backend::send_cancel(&key.address, &key.key, CANCEL_TIMEOUT);
                    match sent.await {
                        Ok(()) => tracing::info!("shutting down: running statement cancelled"),
                        Err(error) => tracing::warn!(%error, "shutting down: cannot cancel"),
                    }
                }
                false
            }
        }
    }

    /// Completes when [`should_end`](Self::should_end) may answer differently: the drain
    /// moved, `moved` was notified (while draining: the client side moved), or the closing
    /// limit passed. Cancel-safe.
    pub async fn wake(&mut self, moved: Option<&Notify>) {
        let Some(watch) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        if self.serving.is_none() {
            // The watch takes note of the drain as it stands, so that the wait below (on a
            // copy) is for what comes next: a copy that lags would end at once, and at every
            // turn of a caller that does not read the phase in between (a client leaving).
            let draining = watch.phase() != Phase::Serving;
            if draining != self.draining {
                self.draining = draining;
                return;
            }
        }
        if !self.draining {
            // Serving (no overdue time then, and `moved` is not watched): the one change to
            // wait for is the drain starting.
            let wait = self
                .serving
                .get_or_insert_with(|| Dormant::new(Box::pin(watch_change(watch.clone()))));
            wait.await;
            self.serving = None;
            return;
        }
        let overdue = async {
            match self.overdue_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let moved = async {
            match moved.filter(|_| self.draining) {
                Some(moved) => moved.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = watch.changed() => {}
            () = moved => {}
            () = overdue => {}
        }
    }
}

/// A wait for a [`DrainWatch`]'s next change, owning its watch.
type WatchChange = Pin<Box<dyn Future<Output = ()> + Send>>;

async fn watch_change(mut watch: DrainWatch) {
    watch.changed().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller that turns without reading the phase (a pooled client that sent Terminate)
    /// must not find `wake` ready at every turn.
    #[tokio::test]
    async fn wake_ends_for_a_change_a_bounded_number_of_times_without_the_phase_being_read() {
        let drain = super::super::Drain::default();
        let mut stopper = Stopper::new(Some(drain.watch()));
        let brief = Duration::from_millis(50);
        assert!(
            tokio::time::timeout(brief, stopper.wake(None))
                .await
                .is_err(),
            "serving: nothing to wake for"
        );
        drain.start(Duration::from_secs(60));
        let mut woken = 0;
        for _ in 0..6 {
            if tokio::time::timeout(brief, stopper.wake(None))
                .await
                .is_ok()
            {
                woken += 1;
            }
        }
        assert!(
            (1..=2).contains(&woken),
            "woken {woken} times for one change"
        );
    }

    const QUIET_IDLE: Progress = Progress {
        running: false,
        idle: true,
        client_open: false,
        at_boundary: true,
    };

    #[test]
    fn the_drain_decides_per_phase_and_progress() {
        let in_transaction = Progress {
            idle: false,
            ..QUIET_IDLE
        };
        let running = Progress {
            running: true,
            ..in_transaction
        };
        let mid_message = Progress {
            at_boundary: false,
            ..running
        };
        let client_writing = Progress {
            client_open: true,
            ..QUIET_IDLE
        };
        use Phase::*;
        use Step::*;
        for (phase, at, cancelled, overdue, step) in [
            (Serving, QUIET_IDLE, false, false, Relay),
            (Draining, QUIET_IDLE, false, false, End),
            (Draining, client_writing, false, false, Relay),
            (Draining, in_transaction, false, false, Relay),
            (Draining, running, false, false, Relay),
            (Draining, mid_message, false, true, End),
            (Closing, running, false, false, Cancel),
            (Closing, running, true, false, Relay),
            (Closing, mid_message, false, false, Relay),
            (Closing, in_transaction, false, false, End),
            (Closing, QUIET_IDLE, false, false, End),
            (Closing, running, true, true, End),
        ] {
            assert_eq!(
                decide(phase, at, cancelled, overdue),
                step,
                "{phase:?} {at:?} cancelled={cancelled} overdue={overdue}"
            );
        }
    }
}
