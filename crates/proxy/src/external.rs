//! The external authenticator contract (pgAuthProxy's): the command gets the client's startup
//! parameters and credential as `key=value` lines on stdin and answers with the backend's
//! startup parameters and `_META_TARGET_HOST` / `_META_TARGET_CRED` on stdout. A non-zero
//! exit, a timeout or malformed output refuses the client. Names starting with `_` belong to
//! pgbastion: client parameters never use them (see [`Input`]).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// What the client presented.
pub struct Input<'a> {
    /// The client's startup parameters. Those whose names start with `_` are not passed on
    /// (they would pose as pgbastion's own values), nor those holding a line break.
    pub parameters: &'a [(String, String)],
    /// `_SOURCE_CRED`: the password, or the md5 response.
    pub credential: &'a str,
    /// `_SOURCE_SALT`: the md5 salt as hex (`00000000` for cleartext).
    pub salt: [u8; 4],
}

/// What the authenticator decided.
#[derive(Clone, PartialEq, Eq)]
pub struct Decision {
    /// Startup parameters for the backend (`user`, `database`, …).
    pub parameters: Vec<(String, String)>,
    /// `_META_TARGET_HOST` (`host:port`), overriding the route's backend host.
    pub host: Option<String>,
    /// `_META_TARGET_CRED`: a password, or an `md5…` hash, for the backend.
    pub credential: Option<String>,
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decision")
            .field("parameters", &self.parameters)
            .field("host", &self.host)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why the authenticator refused or failed. Never contains the credential.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// It could not be started.
    #[error("the authenticator could not be started: {0}")]
    Spawn(std::io::Error),
    /// It ran past the timeout (it is killed).
    #[error("the authenticator did not answer within {0:?}")]
    Timeout(Duration),
    /// It exited non-zero: the client is refused.
    #[error("the authenticator refused (exit status {0})")]
    Refused(String),
    /// Its output is not `key=value` lines.
    #[error("the authenticator's output is not key=value lines: {0}")]
    Output(String),
}

/// Most output read from the authenticator.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Runs `command` (argv, no shell) in the directory `dir` on `input`.
pub async fn run(
    command: &[String],
    dir: &Path,
    timeout: Duration,
    input: &Input<'_>,
) -> Result<Decision, ExternalError> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| ExternalError::Output("empty command".to_owned()))?;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(ExternalError::Spawn)?;
    let text = stdin_text(input);
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| ExternalError::Output("no stdin".to_owned()))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| ExternalError::Output("no stdout".to_owned()))?;
    let work = async {
        // A command that exits without reading its input is not an error by itself.
        let _ = stdin.write_all(text.as_bytes()).await;
        drop(stdin);
        let mut output = String::new();
        (&mut stdout)
            .take(MAX_OUTPUT)
            .read_to_string(&mut output)
            .await
            .map_err(|e| ExternalError::Output(e.to_string()))?;
        let status = child.wait().await.map_err(ExternalError::Spawn)?;
        Ok::<_, ExternalError>((status, output))
    };
    let (status, output) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ExternalError::Timeout(timeout))??;
    if !status.success() {
        return Err(ExternalError::Refused(status.to_string()));
    }
    parse_output(&output)
}

/// The authenticator's input: pgbastion's own `_SOURCE_CRED` and `_SOURCE_SALT` first, then
/// the client's startup parameters. Names starting with `_` are pgbastion's (pgAuthProxy's
/// `_SOURCE_*` and `_META_*`), so a client parameter with such a name is left out; so is one
/// that could start a line of its own in any line reader. Authenticators that keep the first
/// occurrence of a key and those that keep the last both see pgbastion's values.
fn stdin_text(input: &Input<'_>) -> String {
    let credential: String = input
        .credential
        .chars()
        .filter(|&c| !is_line_break(c))
        .collect();
    let mut text = format!(
        "_SOURCE_CRED={credential}\n_SOURCE_SALT={}\n",
        hex(&input.salt)
    );
    for (key, value) in input.parameters {
        if is_client_line(key, value) {
            text.push_str(&format!("{key}={value}\n"));
        }
    }
    text
}

fn is_client_line(key: &str, value: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('_')
        && !key.contains('=')
        && !key.chars().chain(value.chars()).any(is_line_break)
}

/// Every character some line reader ends a line at (Python's `str.splitlines` has the
/// longest list; shell `read` and Go's scanner stop at `\n`).
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{1c}'
            ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

fn parse_output(output: &str) -> Result<Decision, ExternalError> {
    let mut decision = Decision {
        parameters: Vec::new(),
        host: None,
        credential: None,
    };
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.split_once('=').ok_or_else(|| {
            ExternalError::Output(format!("line without '=': {:?}", truncate(line)))
        })?;
        match key {
            "_META_TARGET_HOST" => decision.host = Some(value.to_owned()),
            "_META_TARGET_CRED" => decision.credential = Some(value.to_owned()),
            key if key.starts_with("_META_") => {}
            key => decision.parameters.push((key.to_owned(), value.to_owned())),
        }
    }
    Ok(decision)
}

fn truncate(line: &str) -> &str {
    line.get(..40).unwrap_or(line)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    static PARAMETERS: std::sync::LazyLock<Vec<(String, String)>> =
        std::sync::LazyLock::new(|| {
            vec![
                ("user".into(), "alice".into()),
                ("database".into(), "app".into()),
            ]
        });

    /// alice's login to `app` with the password `secret`, and `salt`.
    fn input(salt: [u8; 4]) -> Input<'static> {
        Input {
            parameters: &PARAMETERS,
            credential: "secret",
            salt,
        }
    }

    fn here() -> &'static Path {
        Path::new(".")
    }

    #[tokio::test]
    async fn the_command_runs_in_the_given_directory() {
        let input = input([0; 4]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target-user"), "from_the_config_dir\n").unwrap();
        let decision = run(
            &sh("cat >/dev/null; echo \"user=$(cat target-user)\""),
            dir.path(),
            Duration::from_secs(5),
            &input,
        )
        .await
        .unwrap();
        assert_eq!(
            decision.parameters,
            [("user".to_owned(), "from_the_config_dir".to_owned())]
        );
    }

    #[tokio::test]
    async fn passes_parameters_in_and_reads_the_decision_out() {
        let input = input([0xde, 0xad, 0xbe, 0xef]);
        let script = r#"
            while IFS='=' read -r k v; do eval "in_$k=\"\$v\"" 2>/dev/null || true; done
            [ "$in_user" = alice ] && [ "$in__SOURCE_CRED" = secret ] && [ "$in__SOURCE_SALT" = deadbeef ] || exit 3
            echo "user=app_$in_user"; echo "database=$in_database"
            echo "_META_TARGET_HOST=db.internal:6000"; echo "_META_TARGET_CRED=md5abc"
        "#;
        let decision = run(&sh(script), here(), Duration::from_secs(5), &input)
            .await
            .unwrap();
        assert_eq!(
            decision.parameters,
            [
                ("user".to_owned(), "app_alice".to_owned()),
                ("database".to_owned(), "app".to_owned())
            ]
        );
        assert_eq!(decision.host.as_deref(), Some("db.internal:6000"));
        assert_eq!(decision.credential.as_deref(), Some("md5abc"));
        assert!(!format!("{decision:?}").contains("md5abc"));
    }

    #[test]
    fn client_parameters_never_share_pgbastions_names_or_lines() {
        let parameters: Vec<(String, String)> = [
            ("_SOURCE_CRED", "forged"),
            ("_META_TARGET_HOST", "evil:5432"),
            ("application_name", "x\r_SOURCE_CRED=forged"),
            ("options", "a\u{2028}_SOURCE_SALT=00000000"),
            ("user", "alice"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        let input = Input {
            parameters: &parameters,
            credential: "pw\ruser=admin",
            salt: [1, 2, 3, 4],
        };
        assert_eq!(
            stdin_text(&input),
            "_SOURCE_CRED=pwuser=admin\n_SOURCE_SALT=01020304\nuser=alice\n"
        );
    }

    #[tokio::test]
    async fn non_zero_exit_timeout_and_garbage_refuse() {
        let input = input([0; 4]);
        let refused = run(
            &sh("cat >/dev/null; exit 1"),
            here(),
            Duration::from_secs(5),
            &input,
        )
        .await;
        assert!(
            matches!(refused, Err(ExternalError::Refused(_))),
            "{refused:?}"
        );
        let slow = run(&sh("sleep 5"), here(), Duration::from_millis(200), &input).await;
        assert!(matches!(slow, Err(ExternalError::Timeout(_))), "{slow:?}");
        let garbage = run(&sh("echo nonsense"), here(), Duration::from_secs(5), &input).await;
        assert!(
            matches!(garbage, Err(ExternalError::Output(_))),
            "{garbage:?}"
        );
        let missing = run(
            &["/nonexistent/authenticator".to_owned()],
            here(),
            Duration::from_secs(5),
            &input,
        )
        .await;
        assert!(
            matches!(missing, Err(ExternalError::Spawn(_))),
            "{missing:?}"
        );
    }
}
