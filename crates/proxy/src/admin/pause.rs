//! [`Pauses`]: the admin console's PAUSE and RESUME. While a database is paused, checkouts
//! from the pools of that backend database wait (at most their `checkout_timeout`, then
//! the client gets the pool's usual 53300); backends already lent out finish what they do.

use std::collections::BTreeSet;
use std::sync::Arc;

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
}

impl Default for Pauses {
    fn default() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(Paused::default())),
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

    /// Waits until the pools of `database` are not paused, at most until `until`; whether
    /// they are not.
    pub async fn wait_resumed(&self, database: &str, until: Instant) -> bool {
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
