//! The console's commands, parsed from a Simple Query's text: case-insensitive, one per
//! query, an optional trailing `;`.

use std::fmt;

use crate::clients::ClientId;

/// What a SHOW shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Pools: PgBouncer's SHOW POOLS columns.
    Pools,
    /// Client sessions: PgBouncer's SHOW CLIENTS columns.
    Clients,
    /// Pooled backend connections: PgBouncer's SHOW SERVERS columns.
    Servers,
    /// Traffic by database: PgBouncer's SHOW STATS columns.
    Stats,
    /// The routes in force.
    Routes,
    /// The listeners in force.
    Listeners,
    /// The settings in force, secrets left out.
    Config,
    /// pgbastion's version.
    Version,
    /// Pools as databases: PgBouncer's SHOW DATABASES columns.
    Databases,
    /// How many of each thing: PgBouncer's SHOW LISTS columns.
    Lists,
}

/// One console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// SHOW something.
    Show(Show),
    /// RELOAD: read the configuration file again.
    Reload,
    /// PAUSE [db]: hold new checkouts from the pools (of backend database `db`).
    Pause(Option<String>),
    /// RESUME [db]: end a PAUSE.
    Resume(Option<String>),
    /// KILL [db]: end the sessions (of database `db`) and close the pools' backends.
    Kill(Option<String>),
    /// KILL_CLIENT id: end one session.
    KillClient(ClientId),
    /// SHUTDOWN [WAIT]: stop pgbastion (WAIT: clients get the grace period).
    Shutdown {
        /// SHUTDOWN WAIT.
        wait: bool,
    },
}

/// The command as it is written in its plain form (`SHOW POOLS`, `KILL_CLIENT 7`): what the
/// query audit records.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, database) = match self {
            Self::Show(what) => return write!(f, "SHOW {}", format!("{what:?}").to_uppercase()),
            Self::Reload => return f.write_str("RELOAD"),
            Self::KillClient(id) => return write!(f, "KILL_CLIENT {id}"),
            Self::Shutdown { wait } => {
                return f.write_str(if *wait { "SHUTDOWN WAIT" } else { "SHUTDOWN" })
            }
            Self::Pause(database) => ("PAUSE", database),
            Self::Resume(database) => ("RESUME", database),
            Self::Kill(database) => ("KILL", database),
        };
        match database {
            Some(database) => write!(f, "{verb} {database}"),
            None => f.write_str(verb),
        }
    }
}

/// Why a query is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Nothing but white space and `;`.
    #[error("empty query")]
    Empty,
    /// No such command.
    #[error("unknown admin console command \"{0}\" (try SHOW POOLS, SHOW CLIENTS, RELOAD, …)")]
    Unknown(String),
    /// A known command written wrongly.
    #[error("syntax: {0}")]
    Usage(&'static str),
}

/// Parses one command.
pub fn parse(query: &str) -> Result<Command, CommandError> {
    let query = query.trim().trim_end_matches(';').trim_end();
    let words: Vec<&str> = query.split_whitespace().collect();
    let Some((first, rest)) = words.split_first() else {
        return Err(CommandError::Empty);
    };
    let verb = first.to_ascii_uppercase();
    match verb.as_str() {
        "SHOW" => show(rest).map(Command::Show),
        "RELOAD" => no_arguments(rest, "RELOAD").map(|()| Command::Reload),
        "PAUSE" => database(rest, "PAUSE [database]").map(Command::Pause),
        "RESUME" => database(rest, "RESUME [database]").map(Command::Resume),
        "KILL" => database(rest, "KILL [database]").map(Command::Kill),
        "KILL_CLIENT" => kill_client(rest),
        "SHUTDOWN" => shutdown(rest),
        _ => Err(CommandError::Unknown(clip(query))),
    }
}

fn show(rest: &[&str]) -> Result<Show, CommandError> {
    let [what] = rest else {
        return Err(CommandError::Usage(
            "SHOW POOLS | CLIENTS | SERVERS | STATS | DATABASES | LISTS | ROUTES | LISTENERS | \
             CONFIG | VERSION",
        ));
    };
    match what.to_ascii_uppercase().as_str() {
        "POOLS" => Ok(Show::Pools),
        "CLIENTS" => Ok(Show::Clients),
        "SERVERS" => Ok(Show::Servers),
        "STATS" => Ok(Show::Stats),
        "ROUTES" => Ok(Show::Routes),
        "LISTENERS" => Ok(Show::Listeners),
        "CONFIG" => Ok(Show::Config),
        "VERSION" => Ok(Show::Version),
        "DATABASES" => Ok(Show::Databases),
        "LISTS" => Ok(Show::Lists),
        _ => Err(CommandError::Unknown(clip(&format!("SHOW {what}")))),
    }
}

fn no_arguments(rest: &[&str], usage: &'static str) -> Result<(), CommandError> {
    rest.is_empty()
        .then_some(())
        .ok_or(CommandError::Usage(usage))
}

/// An optional database name (double quotes around it are dropped).
fn database(rest: &[&str], usage: &'static str) -> Result<Option<String>, CommandError> {
    match rest {
        [] => Ok(None),
        [name] => Ok(Some(name.trim_matches('"').to_owned())),
        _ => Err(CommandError::Usage(usage)),
    }
}

fn kill_client(rest: &[&str]) -> Result<Command, CommandError> {
    match rest {
        [id] => id
            .parse()
            .map(|id| Command::KillClient(ClientId(id)))
            .map_err(|_| CommandError::Usage("KILL_CLIENT id (a number from SHOW CLIENTS)")),
        _ => Err(CommandError::Usage(
            "KILL_CLIENT id (a number from SHOW CLIENTS)",
        )),
    }
}

fn shutdown(rest: &[&str]) -> Result<Command, CommandError> {
    match rest {
        [] => Ok(Command::Shutdown { wait: false }),
        [wait] if wait.eq_ignore_ascii_case("WAIT") => Ok(Command::Shutdown { wait: true }),
        _ => Err(CommandError::Usage("SHUTDOWN [WAIT]")),
    }
}

/// At most 64 characters of client text, for an error message.
fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_written_in_its_plain_form() {
        for (query, plain) in [
            ("show pools;", "SHOW POOLS"),
            ("Kill_Client 7", "KILL_CLIENT 7"),
            ("pause app", "PAUSE app"),
            ("RESUME", "RESUME"),
            ("shutdown wait", "SHUTDOWN WAIT"),
            ("reload", "RELOAD"),
        ] {
            assert_eq!(parse(query).unwrap().to_string(), plain, "{query}");
        }
    }

    #[test]
    fn commands_are_case_insensitive_with_an_optional_semicolon() {
        let cases = [
            ("show pools;", Command::Show(Show::Pools)),
            ("  SHOW Clients ", Command::Show(Show::Clients)),
            ("show databases", Command::Show(Show::Databases)),
            ("SHOW LISTS;", Command::Show(Show::Lists)),
            ("reload", Command::Reload),
            ("PAUSE", Command::Pause(None)),
            ("pause app;", Command::Pause(Some("app".into()))),
            ("RESUME \"app\"", Command::Resume(Some("app".into()))),
            ("kill", Command::Kill(None)),
            ("KILL_CLIENT 42", Command::KillClient(ClientId(42))),
            ("shutdown wait;", Command::Shutdown { wait: true }),
            ("SHUTDOWN", Command::Shutdown { wait: false }),
        ];
        for (query, command) in cases {
            assert_eq!(parse(query), Ok(command), "{query}");
        }
    }

    #[test]
    fn unknown_and_malformed_commands_say_what_is_wrong() {
        assert_eq!(parse(" ; "), Err(CommandError::Empty));
        assert_eq!(
            parse("select 1"),
            Err(CommandError::Unknown("select 1".into()))
        );
        assert_eq!(
            parse("SHOW users"),
            Err(CommandError::Unknown("SHOW users".into()))
        );
        assert!(matches!(
            parse("KILL_CLIENT x"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(parse("SHUTDOWN NOW"), Err(CommandError::Usage(_))));
        assert!(matches!(parse("RELOAD all"), Err(CommandError::Usage(_))));
        assert_eq!(
            parse(&"x".repeat(100)).map_err(|e| e.to_string().len() < 200),
            Err(true)
        );
    }
}
