//! The maintenance task of a pool: retires idle connections past their lifetime, closes
//! those idle too long, and keeps `min_idle` open.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Manager, Pooled, Shared};

/// The running task; dropping it (with the last pool handle) stops the task and closes the
/// idle connections.
pub(super) struct Handle<M: Manager> {
    shared: Arc<Shared<M>>,
    task: JoinHandle<()>,
}

impl<M: Manager> Handle<M> {
    pub(super) fn start(shared: Arc<Shared<M>>) -> Self {
        let task = tokio::spawn(run(shared.clone()));
        Self { shared, task }
    }
}

impl<M: Manager> Drop for Handle<M> {
    fn drop(&mut self) {
        self.task.abort();
        let idle = self.shared.close_pool();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let shared = self.shared.clone();
                runtime.spawn(async move {
                    for pooled in idle {
                        shared.close(pooled).await;
                    }
                });
            }
            // No runtime (the process is ending): the sockets close as they are dropped.
            Err(_) => drop(idle),
        }
    }
}

async fn run<M: Manager>(shared: Arc<Shared<M>>) {
    let mut tick = tokio::time::interval(shared.settings.maintenance_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for pooled in shared.sweep(Instant::now()) {
            shared.close(pooled).await;
        }
        shared.top_up().await;
    }
}

impl<M: Manager> Shared<M> {
    /// Takes out the idle connections due to retire, and those idle longer than
    /// `idle_timeout` beyond the `min_idle` kept.
    fn sweep(&self, now: Instant) -> Vec<Box<Pooled<M>>> {
        let mut state = self.state();
        let (retired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.idle)
            .into_iter()
            .partition(|idle| idle.pooled.retire_at.is_some_and(|at| at <= now));
        state.idle = kept;
        let mut closing: Vec<Box<Pooled<M>>> =
            retired.into_iter().map(|idle| idle.pooled).collect();
        if let Some(limit) = self.settings.idle_timeout {
            let surplus = state.idle.len().saturating_sub(self.settings.min_idle);
            let stale = state
                .idle
                .iter()
                .take(surplus)
                .take_while(|idle| now.duration_since(idle.since) >= limit)
                .count();
            closing.extend(state.idle.drain(..stale).map(|idle| idle.pooled));
        }
        closing
    }

    /// Opens connections until `min_idle` are idle, while a slot and the caps are free with
    /// nobody waiting for them (a waiting checkout goes first); stops at the first failure
    /// until the next round.
    async fn top_up(&self) {
        loop {
            {
                let state = self.state();
                if state.closed || state.retired || state.idle.len() >= self.settings.min_idle {
                    return;
                }
            }
            let Some(permit) = self.slots.try_acquire() else {
                return;
            };
            let Some(caps) = self.caps.try_acquire() else {
                return;
            };
            match self.connect(caps).await {
                Ok(pooled) => self.return_idle(pooled),
                Err(error) => {
                    tracing::warn!(%error, "pool: could not open a min_idle connection");
                    return;
                }
            }
            drop(permit);
        }
    }
}
