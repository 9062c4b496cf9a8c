//! [`Drain`]: the process-lifetime shutdown signal, and the count of connections still open.
//!
//! Started by SIGTERM (with the configured grace period) or SIGINT (with none), it moves
//! every session from [`Phase::Serving`] to [`Phase::Draining`] (idle clients are told
//! 57P01 and closed; a client inside a transaction or with a statement running goes on) and,
//! once the grace period is over, to [`Phase::Closing`] (running statements are cancelled on
//! the backend, and every client is told 57P01 at the next message boundary). It is a
//! `tokio::sync::watch` underneath, so sessions on every worker runtime see it.

pub mod stopper;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Where a session stands in the shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No shutdown: serve as usual.
    Serving,
    /// Shutting down: end the session as soon as it is idle (ReadyForQuery 'I', nothing
    /// asked).
    Draining,
    /// The grace period is over: cancel what runs, end the session at the next boundary.
    Closing,
}

/// The shutdown as it was started: serving, or draining until a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Serving,
    Draining { deadline: Instant },
}

/// The process-wide drain handle. Cheap to clone; clones share the signal and the count.
#[derive(Debug, Clone)]
pub struct Drain {
    state: Arc<watch::Sender<State>>,
    live: Arc<watch::Sender<usize>>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(State::Serving)),
            live: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Drain {
    /// Starts the drain: sessions get `grace` to become idle. A second call can only bring
    /// the deadline closer (SIGINT after SIGTERM stops waiting).
    pub fn start(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.state.send_modify(|state| {
            *state = match *state {
                State::Draining { deadline: earlier } if earlier <= deadline => *state,
                _ => State::Draining { deadline },
            }
        });
    }

    /// Whether the drain has started (from then on `/ready` is false).
    pub fn is_draining(&self) -> bool {
        *self.state.borrow() != State::Serving
    }

    /// When the grace period ends, once the drain has started.
    pub fn deadline(&self) -> Option<Instant> {
        match *self.state.borrow() {
            State::Serving => None,
            State::Draining { deadline } => Some(deadline),
        }
    }

    /// Waits until the drain starts.
    pub async fn started(&self) {
        let mut state = self.state.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = state.wait_for(|state| *state != State::Serving).await;
    }

    /// A session's view of the drain.
    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            state: self.state.subscribe(),
            own: None,
            seen: Phase::Serving,
        }
    }

    /// A session's view of this drain and of `own`, a drain of that session alone (the
    /// admin console's KILL): whichever is further along is the session's phase.
    pub fn watch_with(&self, own: &Drain) -> DrainWatch {
        DrainWatch {
            own: Some(own.state.subscribe()),
            ..self.watch()
        }
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn enter(&self) -> Open {
        self.live.send_modify(|live| *live += 1);
        Open {
            live: self.live.clone(),
        }
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        *self.live.borrow()
    }

    /// Waits until no connection is open.
    pub async fn all_closed(&self) {
        let mut live = self.live.subscribe();
        let _ = live.wait_for(|live| *live == 0).await;
    }
}

/// One open connection, counted by its [`Drain`] until dropped.
#[derive(Debug)]
pub struct Open {
    live: Arc<watch::Sender<usize>>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.live.send_modify(|live| *live = live.saturating_sub(1));
    }
}

/// What a session watches: the [`Phase`] now, and a future for its next change.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    state: watch::Receiver<State>,
    /// The session's own drain, if it has one.
    own: Option<watch::Receiver<State>>,
    /// The phase [`phase`](Self::phase) last returned.
    seen: Phase,
}

impl DrainWatch {
    /// The phase now (and it counts as seen).
    pub fn phase(&mut self) -> Phase {
        let own = self.own.as_mut().map(|own| *own.borrow_and_update());
        self.seen = phase_of(merge(*self.state.borrow_and_update(), own));
        self.seen
    }

    /// Both drains' state as it is now, without marking it seen.
    fn current(&self) -> State {
        merge(
            *self.state.borrow(),
            self.own.as_ref().map(|own| *own.borrow()),
        )
    }

    /// Completes when the phase may differ from the one [`phase`](Self::phase) last
    /// returned: the drain started or its deadline moved, or the deadline passed. Never
    /// completes once closing was seen. Cancel-safe.
    pub async fn changed(&mut self) {
        let state = self.current();
        if phase_of(state) != self.seen {
            return;
        }
        let deadline = match state {
            State::Serving => None,
            State::Draining { deadline } if Instant::now() < deadline => Some(deadline),
            State::Draining { .. } => return std::future::pending().await,
        };
        let until_deadline = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_deadline);
        let (process, own) = (&mut self.state, self.own.as_mut());
        let own = async move {
            let Some(own) = own else {
                return std::future::pending().await;
            };
            if own.changed().await.is_err() {
                // The session's own drain is gone: nothing will come from it.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = own => {}
            changed = process.changed() => {
                if changed.is_err() {
                    // The drain handle is gone: nothing will change but the clock.
                    until_deadline.await;
                }
            }
            () = &mut until_deadline => {}
        }
    }
}

/// The state of two drains together: draining if either is, until the earlier deadline.
fn merge(state: State, own: Option<State>) -> State {
    match (state, own) {
        (State::Draining { deadline: a }, Some(State::Draining { deadline: b })) => {
            State::Draining { deadline: a.min(b) }
        }
        (State::Serving, Some(own)) => own,
        (state, _) => state,
    }
}

/// The phase `state` means now.
fn phase_of(state: State) -> Phase {
    match state {
        State::Serving => Phase::Serving,
        State::Draining { deadline } if Instant::now() < deadline => Phase::Draining,
        State::Draining { .. } => Phase::Closing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sessions_see_draining_then_closing_at_the_deadline() {
        let drain = Drain::default();
        let mut watch = drain.watch();
        assert_eq!(watch.phase(), Phase::Serving);
        assert!(!drain.is_draining());
        drain.start(Duration::from_secs(30));
        watch.changed().await;
        assert_eq!(watch.phase(), Phase::Draining);
        assert!(drain.is_draining());
        let waited = Instant::now();
        watch.changed().await;
        assert_eq!(watch.phase(), Phase::Closing);
        assert_eq!(waited.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_start_only_brings_the_deadline_closer() {
        let drain = Drain::default();
        let mut watch = drain.watch();
        drain.start(Duration::from_secs(30));
        drain.start(Duration::from_secs(60));
        assert_eq!(watch.phase(), Phase::Draining);
        drain.start(Duration::ZERO);
        watch.changed().await;
        assert_eq!(watch.phase(), Phase::Closing);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sessions_own_drain_ends_it_alone() {
        let drain = Drain::default();
        let (own, other) = (Drain::default(), Drain::default());
        let mut killed = drain.watch_with(&own);
        let mut spared = drain.watch_with(&other);
        own.start(Duration::ZERO);
        killed.changed().await;
        assert_eq!(killed.phase(), Phase::Closing);
        assert_eq!(spared.phase(), Phase::Serving);
        drain.start(Duration::from_secs(30));
        spared.changed().await;
        assert_eq!(spared.phase(), Phase::Draining);
    }

    #[tokio::test]
    async fn all_closed_waits_for_the_last_open_connection() {
        let drain = Drain::default();
        let first = drain.enter();
        let second = drain.enter();
        assert_eq!(drain.live(), 2);
        drop(first);
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.all_closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(second);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("all closed in time")
            .unwrap();
    }
}
