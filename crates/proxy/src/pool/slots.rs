//! [`Slots`]: the pool's count of connections that may be open, with a waiting line per
//! worker thread.
//!
//! A slot that comes free goes to a waiter at once (never back to the count while anyone
//! waits), so a checkout that arrives later cannot overtake one in line. Which waiter gets it:
//! the one first in line on the worker that frees it, unless a waiter on another worker has
//! been waiting for more than [`LOCAL_SLACK`] longer. Handing a slot to a task of the same
//! worker costs nothing; handing it across threads wakes the other thread (an `eventfd`
//! write and a context switch), and in transaction mode a slot changes hands at every
//! transaction. So each worker's clients mostly take turns among themselves, in their arrival
//! order, while no client is ever overtaken by one that arrived more than [`LOCAL_SLACK`]
//! after it.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::caps::Waiting;

/// How much longer than the first in line on its own worker a waiter on another worker may
/// have waited before a freed slot goes to it instead: the bound on unfairness that keeps
/// hand-overs on one thread.
pub(super) const LOCAL_SLACK: Duration = Duration::from_millis(2);

/// Slots of one pool; see the module documentation.
#[derive(Debug)]
pub(super) struct Slots {
    line: Mutex<Line>,
}

#[derive(Debug)]
struct Line {
    /// Slots neither held nor on their way to a waiter.
    free: usize,
    /// The waiters of each worker (index 0 also for threads that are not workers), first
    /// in line at the front.
    waiting: Vec<VecDeque<Waiter>>,
    /// How many waiters there are in all.
    waiters: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    since: Instant,
    grant: oneshot::Sender<SlotPermit>,
}

/// One slot, held; dropping it gives the slot to the next waiter (or back to the count).
#[derive(Debug)]
pub(super) struct SlotPermit {
    /// `None` once the slot has been passed on.
    slots: Option<Arc<Slots>>,
}

impl Slots {
    /// `size` free slots.
    pub(super) fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            line: Mutex::new(Line {
                free: size,
                waiting: Vec::new(),
                waiters: 0,
                next_id: 0,
            }),
        })
    }

    fn line(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot if one is free and nobody waits.
    pub(super) fn try_acquire(self: &Arc<Self>) -> Option<SlotPermit> {
        let mut line = self.line();
        if line.free == 0 || line.waiters > 0 {
            return None;
        }
        line.free -= 1;
        Some(SlotPermit {
            slots: Some(self.clone()),
        })
    }

    /// A slot: at once if one is free and nobody waits, else in line (see the module
    /// documentation) until `deadline`, counted in `waiting` meanwhile. `None` when the
    /// deadline passed; the place in line is given up then (also when the future is dropped).
    pub(super) async fn acquire_until(
        self: &Arc<Self>,
        deadline: Instant,
        waiting: &AtomicUsize,
    ) -> Option<SlotPermit> {
        let here = crate::workers::index();
        let (id, granted) = {
            let mut line = self.line();
            if line.free > 0 && line.waiters == 0 {
                line.free -= 1;
                return Some(SlotPermit {
                    slots: Some(self.clone()),
                });
            }
            let (grant, granted) = oneshot::channel();
            let id = line.next_id;
            line.next_id += 1;
            if line.waiting.len() <= here {
                line.waiting.resize_with(here + 1, VecDeque::new);
            }
            line.waiting[here].push_back(Waiter {
                id,
                since: Instant::now(),
                grant,
            });
            line.waiters += 1;
            (id, granted)
        };
        let _waiting = Waiting::new(waiting);
        let _place = Place {
            slots: self,
            here,
            id,
        };
        // A slot granted after the deadline (or to a dropped future) stays in the channel and
        // is passed on when the receiver drops it.
        tokio::time::timeout_at(deadline, granted).await.ok()?.ok()
    }

    /// Passes a freed slot on: to the next waiter (see the module documentation), or back to
    /// the count when nobody waits.
    fn pass_on(self: &Arc<Self>) {
        let here = crate::workers::index();
        loop {
            let waiter = {
                let mut line = self.line();
                match line.next_waiter(here) {
                    Some(waiter) => waiter,
                    None => {
                        line.free += 1;
                        return;
                    }
                }
            };
            let permit = SlotPermit {
                slots: Some(self.clone()),
            };
            match waiter.grant.send(permit) {
                Ok(()) => return,
                // It stopped waiting just now: the next one.
                Err(mut permit) => drop(permit.slots.take()),
            }
        }
    }
}

impl Line {
    /// Takes the waiter a slot freed on worker `here` goes to.
    fn next_waiter(&mut self, here: usize) -> Option<Waiter> {
        let (oldest, since) = self
            .waiting
            .iter()
            .enumerate()
            .filter_map(|(index, line)| line.front().map(|waiter| (index, waiter.since)))
            .min_by_key(|&(_, since)| since)?;
        let local = self
            .waiting
            .get(here)
            .and_then(VecDeque::front)
            .is_some_and(|waiter| waiter.since <= since + LOCAL_SLACK);
        let from = if local { here } else { oldest };
        let waiter = self.waiting[from].pop_front()?;
        self.waiters -= 1;
        Some(waiter)
    }

    /// Takes waiter `id` of worker `here` out of line, if it is still in it.
    fn leave(&mut self, here: usize, id: u64) {
        if let Some(line) = self.waiting.get_mut(here) {
            if let Some(at) = line.iter().position(|waiter| waiter.id == id) {
                line.remove(at);
                self.waiters -= 1;
            }
        }
    }
}

/// A place in line, given up when the wait ends however it ends.
struct Place<'a> {
    slots: &'a Slots,
    here: usize,
    id: u64,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.slots.line().leave(self.here, self.id);
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.pass_on();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(waiters: &[(usize, u64)]) -> Line {
        let start = Instant::now();
        let mut line = Line {
            free: 0,
            waiting: Vec::new(),
            waiters: 0,
            next_id: 0,
        };
        for (id, &(worker, after_ms)) in waiters.iter().enumerate() {
            if line.waiting.len() <= worker {
                line.waiting.resize_with(worker + 1, VecDeque::new);
            }
            line.waiting[worker].push_back(Waiter {
                id: id as u64,
                since: start + Duration::from_millis(after_ms),
                grant: oneshot::channel().0,
            });
            line.waiters += 1;
        }
        line
    }

    fn order(mut line: Line, freed_on: usize) -> Vec<u64> {
        std::iter::from_fn(|| line.next_waiter(freed_on).map(|waiter| waiter.id)).collect()
    }

    #[test]
    fn a_freed_slot_goes_to_its_own_workers_first_waiter_within_the_slack() {
        // Waiters 0 and 2 on worker 1, 1 and 3 on worker 0, all within the slack.
        let line = line_of(&[(1, 0), (0, 1), (1, 1), (0, 1)]);
        assert_eq!(order(line, 0), vec![1, 3, 0, 2]);
    }

    #[test]
    fn a_waiter_past_the_slack_on_another_worker_goes_first() {
        let slack = LOCAL_SLACK.as_millis() as u64;
        // Worker 1's first has waited longer than worker 0's by more than the slack.
        let line = line_of(&[(1, 0), (0, slack + 1), (0, slack + 2)]);
        assert_eq!(order(line, 0), vec![0, 1, 2]);
    }

    #[test]
    fn off_the_workers_everyone_is_in_one_line_in_arrival_order() {
        let line = line_of(&[(0, 0), (0, 3), (0, 1)]);
        assert_eq!(order(line, 0), vec![0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_is_never_lost_to_a_waiter_that_gave_up() {
        let slots = Slots::new(1);
        let waiting = AtomicUsize::new(0);
        let held = slots.try_acquire().expect("a free slot");
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(slots.acquire_until(soon, &waiting).await.is_none());
        // A waiter whose future is dropped while it waits.
        let later = Instant::now() + Duration::from_secs(60);
        let abandoned = tokio::time::timeout(
            Duration::from_millis(5),
            slots.acquire_until(later, &waiting),
        );
        assert!(abandoned.await.is_err());
        drop(held);
        let again = slots.try_acquire();
        assert!(again.is_some(), "the freed slot went back to the count");
        assert_eq!(waiting.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
