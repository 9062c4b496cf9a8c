//! [`Pauses`]: the admin console's PAUSE and RESUME. While a database is paused, checkouts
//! from the pools of that backend database wait (at most their `checkout_timeout`, then
//! the client gets the pool's usual 53300); backends already lent out finish what they do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;

/// What is paused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Paused {
    /// Every pool.
    all: bool,
    /// The pools of these backend databases.
    databases: BTreeSet<String>,
}

impl Paused {
    fn holds(&self, database: &str) -> bool {
        self.all || self.databases.contains(database)
    }
}

/// The pause state every pool reads. Cheap to clone; clones share it.
#[derive(Debug, Clone)]
pub struct Pauses {
    state: Arc<watch::Sender<Paused>>,
    /// Checkouts held by a pause now, by backend database (SHOW POOLS `cl_waiting`).
    held: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Default for Pauses {
    fn default() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(Paused::default())),
            held: Arc::default(),
        }
    }
}

/// One checkout held by a pause, counted until dropped.
struct Held<'a> {
    pauses: &'a Pauses,
    database: &'a str,
}

impl<'a> Held<'a> {
    fn new(pauses: &'a Pauses, database: &'a str) -> Self {
        *pauses.held().entry(database.to_owned()).or_default() += 1;
        Self { pauses, database }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut held = self.pauses.held();
        if let Some(count) = held.get_mut(self.database) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(self.database);
            }
        }
    }
}

impl Pauses {
    /// Pauses the pools of `database` (every pool with `None`).
    pub fn pause(&self, database: Option<&str>) {
        self.state.send_modify(|paused| match database {
            Some(database) => {
                paused.databases.insert(database.to_owned());
            }
            None => paused.all = true,
        });
    }

    /// Resumes the pools of `database`; with `None`, ends every pause.
    pub fn resume(&self, database: Option<&str>) {
        self.state.send_modify(|paused| match database {
            Some(database) => {
                paused.databases.remove(database);
            }
            None => *paused = Paused::default(),
        });
    }

    /// Whether the pools of `database` are paused now.
    pub fn is_paused(&self, database: &str) -> bool {
        self.state.borrow().holds(database)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, usize>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checkouts from the pools of `database` that a pause holds now.
    pub fn held_in(&self, database: &str) -> usize {
        self.held().get(database).copied().unwrap_or(0)
    }

    /// Waits until the pools of `database` are not paused, at most until `until`; whether
    /// they are not. Costs no lock when nothing is paused.
    pub async fn wait_resumed(&self, database: &str, until: Instant) -> bool {
        if !self.is_paused(database) {
            return true;
        }
        let _held = Held::new(self, database);
        let mut state = self.state.subscribe();
        let resumed = async {
            // The sender lives as long as `self`: the wait cannot fail.
            state
                .wait_for(|paused| !paused.holds(database))
                .await
                .is_ok()
        };
        tokio::time::timeout_at(until, resumed)
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paused_database_waits_until_resumed_or_the_deadline() {
        let pauses = Pauses::default();
        pauses.pause(Some("app"));
        assert!(pauses.is_paused("app") && !pauses.is_paused("other"));
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(!pauses.wait_resumed("app", soon).await);
        assert!(pauses.wait_resumed("other", soon).await);
        let waiting = tokio::spawn({
            let pauses = pauses.clone();
            async move {
                pauses
                    .wait_resumed("app", Instant::now() + Duration::from_secs(60))
                    .await
            }
        });
        pauses.resume(Some("app"));
        assert!(waiting.await.expect("joined"));
        assert_eq!(pauses.held_in("app"), 0);
    }

    #[test]
    fn pause_without_a_name_holds_every_database_until_resume_without_one() {
        let pauses = Pauses::default();
        pauses.pause(None);
        pauses.resume(Some("app"));
        assert!(pauses.is_paused("app"));
        pauses.resume(None);
        assert!(!pauses.is_paused("app"));
    }
}
