//! [`Dormant`]: a future that is polled again only after it has woken its task.
//!
//! A session's relay loop `select!`s over its sockets and a few rare events (the drain, a
//! cancel). `select!` polls every branch each time the loop turns, and polling a waiting
//! `tokio::sync::Notify` (under a `watch`) takes the lock of its waiter list, shared by
//! every session on every thread: for an event that happens once in a process's life, a
//! shared lock or two per message relayed. Wrapped in a `Dormant` that lives across the
//! loop's turns, the inner future is registered once and polled again only when its own
//! wake-up came; in between, a poll is one atomic load.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Wraps `inner`; see the module documentation.
pub struct Dormant<F> {
    inner: Pin<Box<F>>,
    alarm: Arc<Alarm>,
    /// Whether `inner` has been polled (and so registered its wake-up) once.
    armed: bool,
}

/// The waker `inner` is polled with: notes that it went off, then wakes the task.
#[derive(Default)]
struct Alarm {
    rang: AtomicBool,
    /// The task to wake: the session's own lock, never contended but by the wake-up itself.
    task: Mutex<Option<Waker>>,
}

impl Alarm {
    fn task(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.rang.store(true, Ordering::Release);
        if let Some(task) = self.task().take() {
            task.wake();
        }
    }
}

impl<F: Future> Dormant<F> {
    /// `inner`, not polled yet.
    pub fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            alarm: Arc::default(),
            armed: false,
        }
    }
}

impl<F> Dormant<F> {
    /// Whether the inner future has been polled and has not woken its task since: nothing it
    /// waits for has happened.
    pub fn is_quiet(&self) -> bool {
        self.armed && !self.alarm.rang.load(Ordering::Acquire)
    }
}

impl<F: Future> Future for Dormant<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        {
            let mut task = this.alarm.task();
            if !task.as_ref().is_some_and(|task| task.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if this.armed && !this.alarm.rang.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.armed = true;
        let waker = Waker::from(this.alarm.clone());
        this.inner.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

impl<F> std::fmt::Debug for Dormant<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dormant")
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once notified.
    struct Gate {
        polls: Arc<AtomicUsize>,
        notified: Pin<Box<tokio::sync::futures::OwnedNotified>>,
    }

    impl Future for Gate {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            self.notified.as_mut().poll(cx)
        }
    }

    #[test]
    fn the_inner_future_is_polled_once_until_it_wakes_and_then_completes() {
        let polls = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(tokio::sync::Notify::new());
        let gate = Gate {
            polls: polls.clone(),
            notified: Box::pin(open.clone().notified_owned()),
        };
        let mut dormant = std::pin::pin!(Dormant::new(gate));
        let mut cx = Context::from_waker(Waker::noop());
        // Many turns of a loop: the inner future is polled at the first only.
        assert!(!dormant.is_quiet(), "not polled yet");
        for _ in 0..100 {
            assert!(dormant.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        assert!(dormant.is_quiet());
        open.notify_waiters();
        assert!(!dormant.is_quiet(), "woken");
        assert!(dormant.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
