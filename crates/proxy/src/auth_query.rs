//! `auth_query` (as PgBouncer has it, for SCRAM): fetch the user's SCRAM verifier from the
//! backend with a configured query, so the proxy can authenticate the client without storing
//! any password; the client's proof then yields the keys the proxy logs into the backend with.
//!
//! Lookups run before the client has proved anything, so each one must not cost a backend
//! login: [`Lookups`] keeps one lookup connection open per route and backend, remembers
//! answers for [`VERIFIER_TTL`], and after a failed lookup login waits [`FAILURE_PAUSE`]
//! before trying another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgbastion_auth::scram::ScramSecret;
use pgbastion_wire::frontend::{write_bind, write_execute, write_parse, write_sync};
use pgbastion_wire::{BackendMessage, FrameDecoder, TransactionStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::{BackendConn, BackendError, BackendSecret, Connector};
use crate::login_plan::LoginPlan;
use crate::route::AuthQuery;
use crate::target::Target;

/// The largest answer accepted.
const MAX_MESSAGE: usize = 1 << 20;

/// How long a fetched verifier (or "no such user") is reused. A changed or dropped password
/// is seen at the proxy this much later; the backend login that follows checks it anyway.
pub const VERIFIER_TTL: Duration = Duration::from_secs(5);

/// How long after a failed lookup login (wrong auth_query password, backend down) no new one
/// is tried: unauthenticated clients must not be able to make the proxy hammer the backend.
pub const FAILURE_PAUSE: Duration = Duration::from_secs(2);

/// A kept lookup connection idle longer than this is closed and replaced, rather than trusted
/// to have outlived the backend's idle timeouts.
const IDLE_LIFETIME: Duration = Duration::from_secs(30);

/// Most verifiers remembered at once: unauthenticated clients choose the user names.
const MAX_REMEMBERED: usize = 1024;

/// Most kept connections and failed-login marks: a backend URL without a database makes the
/// client's database part of the key, so clients choose these too.
const MAX_LOGIN_KEYS: usize = 64;

/// Why no verifier could be fetched. The details are for the log only: the client is told
/// that its password failed, as PostgreSQL does when its own password lookup fails.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The lookup login or the query failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A lookup login failed less than [`FAILURE_PAUSE`] ago.
    #[error("auth_query lookups pause for {FAILURE_PAUSE:?} after a failed lookup login")]
    Paused,
}

/// One verifier lookup: the route's query, run on `target`/`database` for `user`.
pub struct Lookup<'a> {
    /// The route's `auth_query`.
    pub query: &'a AuthQuery,
    /// The route's number: answers and connections are never shared between routes.
    pub route: usize,
    /// Where to run it.
    pub target: &'a Target,
    /// The database to log into.
    pub database: &'a str,
    /// The client's user, the query's `$1`.
    pub user: &'a str,
    /// For the login, and separately for the query.
    pub timeout: Duration,
}

impl Lookup<'_> {
    /// What a lookup connection serves: the route, the backend (its `Debug` form leaves out
    /// the password) and the database.
    fn login_key(&self) -> String {
        format!("{}|{:?}|{}", self.route, self.target, self.database)
    }
}

/// A remembered answer.
struct Remembered {
    at: Instant,
    secret: Option<ScramSecret>,
}

/// The proxy's lookup state: kept connections, remembered answers, failed logins.
#[derive(Default)]
pub struct Lookups {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    answers: HashMap<(String, String), Remembered>,
    idle: HashMap<String, (Instant, BackendConn)>,
    failed: HashMap<String, Instant>,
    turns: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups").finish_non_exhaustive()
    }
}

impl Lookups {
    /// The user's verifier. `Ok(None)`: no such user, or the stored password is not a SCRAM
    /// verifier.
    pub async fn fetch(
        &self,
        lookup: &Lookup<'_>,
        connector: &Connector,
    ) -> Result<Option<ScramSecret>, LookupError> {
        let key = lookup.login_key();
        let answer_key = (key.clone(), lookup.user.to_owned());
        if let Some(secret) = self.remembered(&answer_key) {
            return Ok(secret);
        }
        // One lookup at a time per backend login: concurrent clients (whatever user names
        // they send) queue for the kept connection instead of each opening one.
        let turn = self.turn(&key);
        let _turn = turn.lock().await;
        if let Some(secret) = self.remembered(&answer_key) {
            return Ok(secret);
        }
        if self.paused(&key) {
            return Err(LookupError::Paused);
        }
        match self.query(&key, lookup, connector).await {
            Ok((secret, conn)) => {
                self.keep(key, conn);
                self.remember(answer_key, secret.clone());
                Ok(secret)
            }
            Err(error) => {
                self.mark_failed(key);
                Err(error.into())
            }
        }
    }

    /// Runs the query on the kept connection, or on a new one if there is none or it failed
    /// (the backend may have closed it).
    async fn query(
        &self,
        key: &str,
        lookup: &Lookup<'_>,
        connector: &Connector,
    ) -> Result<(Option<ScramSecret>, Option<BackendConn>), BackendError> {
        if let Some(conn) = self.take_idle(key) {
            match run_query(conn, lookup).await {
                Ok(done) => return Ok(done),
                Err(error) => {
                    tracing::debug!(%error, "the kept auth_query connection failed; opening a new one");
                }
            }
        }
        let conn = connector.connect(&plan(lookup)).await?;
        run_query(conn, lookup).await
    }

    fn with_state<T>(&self, work: impl FnOnce(&mut State) -> T) -> T {
        // Every update is a single map operation, so a panic elsewhere cannot leave the maps
        // half-written: a poisoned lock is safe to keep using.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        work(&mut state)
    }

    fn remembered(&self, key: &(String, String)) -> Option<Option<ScramSecret>> {
        self.with_state(|state| {
            let answer = state.answers.get(key)?;
            (answer.at.elapsed() < VERIFIER_TTL).then(|| answer.secret.clone())
        })
    }

    fn remember(&self, key: (String, String), secret: Option<ScramSecret>) {
        self.with_state(|state| {
            if state.answers.len() >= MAX_REMEMBERED {
                state
                    .answers
                    .retain(|_, answer| answer.at.elapsed() < VERIFIER_TTL);
            }
            if state.answers.len() < MAX_REMEMBERED {
                let at = Instant::now();
                state.answers.insert(key, Remembered { at, secret });
            }
        });
    }

    fn paused(&self, key: &str) -> bool {
        self.with_state(|state| {
            state
                .failed
                .get(key)
                .is_some_and(|at| at.elapsed() < FAILURE_PAUSE)
        })
    }

    fn mark_failed(&self, key: String) {
        self.with_state(|state| {
            if state.failed.len() >= MAX_LOGIN_KEYS {
                state.failed.retain(|_, at| at.elapsed() < FAILURE_PAUSE);
            }
            if state.failed.len() < MAX_LOGIN_KEYS {
                state.failed.insert(key, Instant::now());
            }
        });
    }

    /// The lock that lets one lookup at a time run for `key`. Locks nobody holds or waits
    /// for are dropped when the map reaches [`MAX_LOGIN_KEYS`].
    fn turn(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.with_state(|state| {
            if !state.turns.contains_key(key) && state.turns.len() >= MAX_LOGIN_KEYS {
                state.turns.retain(|_, turn| Arc::strong_count(turn) > 1);
            }
            Arc::clone(state.turns.entry(key.to_owned()).or_default())
        })
    }

    fn take_idle(&self, key: &str) -> Option<BackendConn> {
        let (since, conn) = self.with_state(|state| state.idle.remove(key))?;
        (since.elapsed() < IDLE_LIFETIME).then_some(conn)
    }

    /// Keeps `conn` for the next lookup, unless another lookup already put one back: at most
    /// one idle connection per key, and [`MAX_LOGIN_KEYS`] in all. One not kept is closed.
    fn keep(&self, key: String, conn: Option<BackendConn>) {
        self.with_state(|state| {
            state.failed.remove(&key);
            let Some(conn) = conn else { return };
            if state.idle.len() >= MAX_LOGIN_KEYS {
                state
                    .idle
                    .retain(|_, (since, _)| since.elapsed() < IDLE_LIFETIME);
            }
            if state.idle.len() < MAX_LOGIN_KEYS {
                state.idle.entry(key).or_insert((Instant::now(), conn));
            }
        });
    }
}

/// The lookup login: the lookup role, on the route's backend and the lookup's database.
fn plan(lookup: &Lookup<'_>) -> LoginPlan {
    LoginPlan {
        address: lookup.target.address.clone(),
        tls: lookup.target.tls.clone(),
        user: lookup.query.user.clone(),
        database: lookup.database.to_owned(),
        parameters: vec![(
            "application_name".to_owned(),
            "pgbastion auth_query".to_owned(),
        )],
        client_addr: None,
        secret: lookup
            .query
            .password
            .as_ref()
            .map(|p| BackendSecret::Password(p.expose().to_owned())),
        proxy_from: None,
        timeout: lookup.timeout,
    }
}

/// Runs the query for the lookup's user on `conn`. The connection comes back when the
/// backend is idle again and can serve the next lookup.
async fn run_query(
    mut conn: BackendConn,
    lookup: &Lookup<'_>,
) -> Result<(Option<ScramSecret>, Option<BackendConn>), BackendError> {
    let request = encode_query(&lookup.query.query, lookup.user)?;
    let work = async {
        conn.stream.write_all(&request).await?;
        read_answer(&mut conn).await
    };
    let (stored, status) = tokio::time::timeout(lookup.timeout, work)
        .await
        .map_err(|_| BackendError::Timeout(lookup.target.address.to_string()))??;
    let secret = stored.and_then(|s| s.parse::<ScramSecret>().ok());
    let reusable = status == TransactionStatus::Idle;
    Ok((secret, reusable.then_some(conn)))
}

fn encode_query(query: &str, user: &str) -> Result<BytesMut, BackendError> {
    let encode = |e: pgbastion_wire::EncodeError| BackendError::Protocol(e.to_string());
    let mut out = BytesMut::new();
    write_parse(&mut out, "", query, &[]).map_err(encode)?;
    write_bind(&mut out, "", "", &[], [Some(user.as_bytes())], &[]).map_err(encode)?;
    write_execute(&mut out, "", 0).map_err(encode)?;
    write_sync(&mut out).map_err(encode)?;
    Ok(out)
}

/// Reads up to ReadyForQuery: the last column of the first row, and the transaction status.
async fn read_answer(
    conn: &mut BackendConn,
) -> Result<(Option<String>, TransactionStatus), BackendError> {
    let decoder = FrameDecoder::new(MAX_MESSAGE);
    let protocol = |e: &dyn std::fmt::Display| BackendError::Protocol(e.to_string());
    // Only the first row counts, even when its password is NULL: a query that matches
    // several rows must never let a later row's verifier stand in.
    let mut first_row: Option<Option<String>> = None;
    loop {
        let Some(frame) = decoder
            .decode(&mut conn.buffered)
            .map_err(|e| protocol(&e))?
        else {
            if conn.stream.read_buf(&mut conn.buffered).await? == 0 {
                return Err(BackendError::Protocol(
                    "the backend closed during auth_query".to_owned(),
                ));
            }
            continue;
        };
        match BackendMessage::decode(&frame).map_err(|e| protocol(&e))? {
            BackendMessage::DataRow(row) if first_row.is_none() => {
                // The password is the last column (`SELECT usename, passwd …` or just `passwd`).
                let last = row.len().checked_sub(1).and_then(|i| row.get(i)).flatten();
                first_row = Some(last.map(|v| String::from_utf8_lossy(v).into_owned()));
            }
            BackendMessage::ErrorResponse(error) => return Err(BackendError::Refused(error)),
            BackendMessage::ReadyForQuery(status) => return Ok((first_row.flatten(), status)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_key(user: &str) -> (String, String) {
        ("1|target|db".to_owned(), user.to_owned())
    }

    #[test]
    fn answers_are_remembered_and_bounded() {
        let lookups = Lookups::default();
        assert!(lookups.remembered(&answer_key("erin")).is_none());
        lookups.remember(answer_key("erin"), None);
        assert_eq!(
            lookups.remembered(&answer_key("erin")).map(|s| s.is_none()),
            Some(true),
            "\"no such user\" is remembered too"
        );
        for n in 0..2 * MAX_REMEMBERED {
            lookups.remember(answer_key(&format!("user{n}")), None);
        }
        assert_eq!(
            lookups.with_state(|state| state.answers.len()),
            MAX_REMEMBERED
        );
    }

    #[test]
    fn a_failed_login_pauses_lookups_on_that_key_only() {
        let lookups = Lookups::default();
        lookups.mark_failed("a".to_owned());
        assert!(lookups.paused("a"));
        assert!(!lookups.paused("b"));
        lookups.keep("a".to_owned(), None);
        assert!(!lookups.paused("a"), "a successful lookup ends the pause");
        for n in 0..2 * MAX_LOGIN_KEYS {
            lookups.mark_failed(format!("key{n}"));
        }
        assert_eq!(
            lookups.with_state(|state| state.failed.len()),
            MAX_LOGIN_KEYS
        );
    }
}
