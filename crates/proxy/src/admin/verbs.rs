//! What each console command does, given the process's lasting state: the SHOW snapshots,
//! and the control commands (PAUSE, RESUME, KILL, KILL_CLIENT; RELOAD and SHUTDOWN through
//! the [`Control`](super::control::Control) channel).

use std::collections::BTreeSet;
use std::time::Duration;

use pgbastion_wire::{ErrorResponse, Severity, SqlState};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::command::{Command, Show};
use super::control::{NoAnswer, Request};
use super::table::Table;
use super::{config_view, show};
use crate::clients::ClientId;
use crate::shared::Lasting;

/// How long the proxy may take to answer a request (a reload reads files, may fetch keys).
const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// How long PAUSE waits for the paused pools' backends to come back.
const PAUSE_LIMIT: Duration = Duration::from_secs(60);

/// How often PAUSE looks at the pools while it waits.
const PAUSE_POLL: Duration = Duration::from_millis(20);

/// A command's answer.
#[derive(Debug)]
pub enum Answer {
    /// Rows.
    Table(Table),
    /// Done: the CommandComplete tag, and a NOTICE that says what was done.
    Done {
        /// The tag.
        tag: &'static str,
        /// The notice, if any.
        notice: Option<String>,
    },
}

fn done(tag: &'static str, notice: impl Into<Option<String>>) -> Answer {
    Answer::Done {
        tag,
        notice: notice.into(),
    }
}

fn error(code: SqlState, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(Severity::Error, code, message)
}

impl From<NoAnswer> for ErrorResponse {
    fn from(no: NoAnswer) -> Self {
        error(SqlState::OPERATOR_INTERVENTION, no.to_string())
    }
}

/// The commands, run against the process's lasting state.
pub struct Verbs<'a> {
    /// The process-lifetime state.
    pub lasting: &'a Lasting,
}

impl Verbs<'_> {
    /// Runs `command`.
    pub async fn run(&self, command: Command) -> Result<Answer, ErrorResponse> {
        match command {
            Command::Show(what) => Ok(Answer::Table(self.show(what))),
            Command::Reload => self.reload().await,
            Command::Pause(database) => self.pause(database.as_deref()).await,
            Command::Resume(database) => {
                let pauses = self.lasting.pools.pauses();
                pauses.resume(database.as_deref()).map_err(|refused| {
                    error(
                        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        refused.to_string(),
                    )
                })?;
                Ok(done("RESUME", None))
            }
            Command::Kill(database) => Ok(self.kill(database.as_deref()).await),
            Command::KillClient(id) => self.kill_client(id),
            Command::Shutdown { wait } => {
                self.lasting
                    .control
                    .tell(Request::Shutdown { wait }, ANSWER_LIMIT)
                    .await?;
                Ok(done("SHUTDOWN", None))
            }
        }
    }

    fn show(&self, what: Show) -> Table {
        let lasting = self.lasting;
        let settings = || lasting.settings.load();
        match what {
            Show::Version => show::version(),
            Show::Clients => show::clients(&lasting.clients.list()),
            Show::Stats => show::stats(&lasting.clients.totals_by_database()),
            Show::Servers => show::servers(&lasting.metrics.pools()),
            Show::Pools => {
                let clients = lasting.clients.list();
                let pauses = lasting.pools.pauses();
                show::pools(&lasting.metrics.pools(), &clients, pauses, &settings())
            }
            Show::Databases => show::databases(
                &lasting.metrics.pools(),
                lasting.pools.pauses(),
                &settings(),
            ),
            Show::Lists => show::lists(
                &lasting.metrics.pools(),
                &lasting.clients.list(),
                &settings(),
            ),
            Show::Routes => show::routes(&settings()),
            Show::Listeners => show::listeners(&settings(), &lasting.clients.list()),
            Show::Config => config_view::config(&settings()),
        }
    }

    async fn reload(&self) -> Result<Answer, ErrorResponse> {
        let (answer, answered) = oneshot::channel();
        let control = &self.lasting.control;
        match control
            .ask(Request::Reload(answer), answered, ANSWER_LIMIT)
            .await?
        {
            Ok(summary) => Ok(done("RELOAD", format!("configuration reloaded: {summary}"))),
            Err(refused) => Err(error(SqlState::CONFIG_FILE_ERROR, refused)),
        }
    }

    /// The backend databases `database` stands for: itself, and those of the sessions open
    /// now whose client database it is (`None`: every one).
    fn backend_databases(&self, database: Option<&str>) -> Option<BTreeSet<String>> {
        database.map(|db| self.lasting.clients.backend_databases(db))
    }

    /// Holds new checkouts, then waits until the paused pools have no backend lent out.
    async fn pause(&self, database: Option<&str>) -> Result<Answer, ErrorResponse> {
        self.lasting.pools.pauses().pause(database);
        let until = Instant::now() + PAUSE_LIMIT;
        loop {
            let names = self.backend_databases(database);
            let lent: usize = self
                .lasting
                .metrics
                .pools()
                .iter()
                .filter(|(labels, _)| names.as_ref().is_none_or(|n| n.contains(&labels.database)))
                .map(|(_, stats)| stats.in_use)
                .sum();
            if lent == 0 {
                return Ok(done("PAUSE", None));
            }
            if Instant::now() >= until {
                return Err(error(
                    SqlState::QUERY_CANCELED,
                    format!(
                        "PAUSE: {lent} backend connection(s) still lent out after {PAUSE_LIMIT:?}; \
                         the pause stays in force (RESUME ends it)"
                    ),
                ));
            }
            tokio::time::sleep(PAUSE_POLL).await;
        }
    }

    /// Ends the sessions of `database`, client or backend (every one but the consoles'),
    /// and retires the pools of that backend database and of those the sessions used.
    async fn kill(&self, database: Option<&str>) -> Answer {
        let names = self.backend_databases(database);
        let killed = self.lasting.clients.kill_database(database);
        let pools = self.lasting.pools.forget_databases(names.as_ref());
        let closed = pools.len();
        for pool in pools {
            pool.pool().retire().await;
        }
        done(
            "KILL",
            format!("{killed} session(s) ended, {closed} pool(s) closed"),
        )
    }

    fn kill_client(&self, id: ClientId) -> Result<Answer, ErrorResponse> {
        if self.lasting.clients.kill(id) {
            Ok(done("KILL_CLIENT", None))
        } else {
            Err(error(
                SqlState::UNDEFINED_OBJECT,
                format!("no client with id {id} (see SHOW CLIENTS)"),
            ))
        }
    }
}
