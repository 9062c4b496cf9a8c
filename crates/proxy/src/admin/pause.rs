//! [`Pauses`]: the admin console's PAUSE and RESUME. While a database is paused, checkouts
//! of clients whose client or backend database has that name wait (at most their
//! `checkout_timeout`, then the client gets the pool's usual 53300); backends already lent
//! out finish what they do. RESUME without a name ends every pause; RESUME with one ends
//! that name's pause only, and is refused while a PAUSE of everything is in force.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;

/// What is paused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Paused {
    /// Every pool.
    all: bool,
    /// The checkouts of these databases (client or backend).
    databases: BTreeSet<String>,
}

impl Paused {
    fn holds(&self, names: &[&str]) -> bool {
        self.all || names.iter().any(|name| self.databases.contains(*name))
    }
}

/// A pool as SHOW POOLS names it: (backend database, backend user).
type PoolName = (String, String);

/// Why a RESUME was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    /// RESUME of one database while everything is paused.
    #[error("everything is paused (PAUSE without a database): RESUME without a database ends it")]
    AllPaused,
    /// RESUME of a database that is not paused.
    #[error("database \"{0}\" is not paused")]
    NotPaused(String),
}

/// The pause state every pool reads. Cheap to clone; clones share it.
#[derive(Debug, Clone)]
pub struct Pauses {
    state: Arc<watch::Sender<Paused>>,
    /// Checkouts held by a pause now, by pool (SHOW POOLS `cl_waiting`).
    held: Arc<Mutex<BTreeMap<PoolName, usize>>>,
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
    pool: PoolName,
}

impl<'a> Held<'a> {
    fn new(pauses: &'a Pauses, (database, user): (&str, &str)) -> Self {
        let pool = (database.to_owned(), user.to_owned());
        *pauses.held().entry(pool.clone()).or_default() += 1;
        Self { pauses, pool }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut held = self.pauses.held();
        if let Some(count) = held.get_mut(&self.pool) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.pool);
            }
        }
    }
}

impl Pauses {
    /// Pauses the checkouts of `database`, client or backend (every checkout with `None`).
    pub fn pause(&self, database: Option<&str>) {
        self.state.send_modify(|paused| match database {
            Some(database) => {
                paused.databases.insert(database.to_owned());
            }
            None => paused.all = true,
        });
    }

    /// Ends the pause of `database`; with `None`, ends every pause. A database can be
    /// resumed alone only if it was paused by name and everything is not.
    pub fn resume(&self, database: Option<&str>) -> Result<(), ResumeError> {
        let mut outcome = Ok(());
        self.state.send_if_modified(|paused| match database {
            Some(_) if paused.all => {
                outcome = Err(ResumeError::AllPaused);
                false
            }
            Some(database) => {
                let removed = paused.databases.remove(database);
                if !removed {
                    outcome = Err(ResumeError::NotPaused(database.to_owned()));
                }
                removed
            }
            None => {
                *paused = Paused::default();
                true
            }
        });
        outcome
    }

    /// Whether the checkouts of a client of database `database` (client or backend) are
    /// paused now.
    pub fn is_paused(&self, database: &str) -> bool {
        self.state.borrow().holds(&[database])
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<PoolName, usize>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checkouts from the pool of backend `database` and `user` that a pause holds now.
    pub fn held_in(&self, database: &str, user: &str) -> usize {
        let held = self.held();
        let pool = (database.to_owned(), user.to_owned());
        held.get(&pool).copied().unwrap_or(0)
    }

    /// Waits until the checkouts of a client of database `client` from `pool` (backend
    /// database, user) are not paused, at most until `until`; whether they are not. Costs
    /// no lock when nothing is paused.
    pub async fn wait_resumed(&self, pool: (&str, &str), client: &str, until: Instant) -> bool {
        let names = [pool.0, client];
        if !self.state.borrow().holds(&names) {
            return true;
        }
        let _held = Held::new(self, pool);
        let mut state = self.state.subscribe();
        let resumed = async {
            // The sender lives as long as `self`: the wait cannot fail.
            state.wait_for(|paused| !paused.holds(&names)).await.is_ok()
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
        assert!(!pauses.wait_resumed(("app", "u"), "x", soon).await);
        assert!(!pauses.wait_resumed(("app_prod", "u"), "app", soon).await);
        assert!(pauses.wait_resumed(("other", "u"), "x", soon).await);
        let waiting = tokio::spawn({
            let pauses = pauses.clone();
            async move {
                let until = Instant::now() + Duration::from_secs(60);
                pauses.wait_resumed(("app_prod", "u"), "app", until).await
            }
        });
        while pauses.held_in("app_prod", "u") == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pauses.resume(Some("app")), Ok(()));
        assert!(waiting.await.expect("joined"));
        assert_eq!(pauses.held_in("app_prod", "u"), 0);
    }

    #[test]
    fn pause_without_a_name_holds_every_database_until_resume_without_one() {
        let pauses = Pauses::default();
        pauses.pause(None);
        assert_eq!(pauses.resume(Some("app")), Err(ResumeError::AllPaused));
        assert!(pauses.is_paused("app"));
        assert_eq!(pauses.resume(None), Ok(()));
        assert!(!pauses.is_paused("app"));
        let not = ResumeError::NotPaused("app".into());
        assert_eq!(pauses.resume(Some("app")), Err(not));
    }
}
