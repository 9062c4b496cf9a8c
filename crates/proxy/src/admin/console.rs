//! One admin console session: greeted like a server, then a loop of Simple Query commands
//! until the client leaves, is killed, or pgbastion shuts down.

use std::time::Duration;

use pgbastion_gateway::{ClientConn, GatewayError};
use pgbastion_wire::{
    BackendMessage, ErrorResponse, Frame, FrontendMessage, Severity, SqlState, TransactionStatus,
};
use tokio::net::TcpStream;

use super::command::{self, Command, CommandError};
use super::verbs::{Answer, Verbs};
use crate::audit::{AdminCommand, AuditLog, Event};
use crate::clients::{ClientId, ClientInfo};
use crate::drain::Phase;
use crate::relay::shutdown_notice;
use crate::session::ListenerContext;

/// How long writing an answer to the console client may take.
const WRITE_LIMIT: Duration = Duration::from_secs(30);

/// Serves the console to an authenticated admin.
pub async fn serve(mut conn: ClientConn<TcpStream>, ctx: &ListenerContext, id: ClientId) {
    let lasting = ctx.hooks.shared.lasting.clone();
    let info = ClientInfo::of(conn.state(), ctx.address, id, None, None);
    let registered = lasting.clients.register(info);
    let mut watch = ctx.drain.watch_with(registered.kill());
    conn.set_deadline(None);
    if greet(&mut conn, ctx).await.is_err() {
        return;
    }
    tracing::info!("admin console session started");
    let verbs = Verbs { lasting: &lasting };
    let mut audit = CommandAudit {
        log: lasting.audit.as_deref(),
        id,
        client_addr: conn.state().client_addr.to_string(),
        user: conn
            .state()
            .client
            .as_ref()
            .map(|client| client.user().to_owned())
            .unwrap_or_default(),
        seq: 0,
    };
    let mut extended = Extended::default();
    loop {
        let frame = tokio::select! {
            frame = conn.read_frame(ctx.gateway.max_message_len) => frame,
            () = watch.changed() => {
                // The console stays through the grace period, to watch the drain.
                if watch.phase() != Phase::Closing {
                    continue;
                }
                conn.send_raw(&shutdown_notice());
                let _ = flush(&mut conn).await;
                conn.close_gracefully().await;
                return;
            }
        };
        let Ok(Some(frame)) = frame else { return };
        let answered = match extended.step(&frame) {
            Step::Query(sql) => answer(&mut conn, &verbs, &sql, &mut audit).await,
            Step::Send(messages) => messages.iter().try_for_each(|m| conn.send(m)),
            Step::Nothing => Ok(()),
            Step::End(last) => {
                if let Some(last) = last {
                    let _ = conn.send(&last);
                    let _ = flush(&mut conn).await;
                    conn.close_gracefully().await;
                }
                return;
            }
        };
        if answered.is_err() || flush(&mut conn).await.is_err() {
            return;
        }
    }
}

/// ParameterStatus as a server sends them (psql reads `server_version`), then
/// ReadyForQuery. No BackendKeyData: there is nothing to cancel.
async fn greet(
    conn: &mut ClientConn<TcpStream>,
    ctx: &ListenerContext,
) -> Result<(), GatewayError> {
    conn.send_parameter_status("server_version", &ctx.gateway.server_version)?;
    conn.send_parameter_status("application_name", "")?;
    for (name, value) in &ctx.gateway.parameter_status {
        conn.send_parameter_status(name, value)?;
    }
    conn.send_ready_for_query(TransactionStatus::Idle)?;
    flush(conn).await
}

async fn flush(conn: &mut ClientConn<TcpStream>) -> Result<(), GatewayError> {
    match tokio::time::timeout(WRITE_LIMIT, conn.flush()).await {
        Ok(flushed) => flushed,
        Err(_) => Err(GatewayError::Closed),
    }
}

/// The query audit's view of one console session: every command, as `admin_command`.
struct CommandAudit<'a> {
    log: Option<&'a AuditLog>,
    id: ClientId,
    client_addr: String,
    user: String,
    /// The next event's number in the session.
    seq: u64,
}

impl CommandAudit<'_> {
    /// Records `command` (`None`: a query that is not one) and the error it was answered
    /// with, if any, when the audit is on.
    fn record(&mut self, command: Option<&Command>, answer: &[BackendMessage]) {
        let Some(log) = self.log else { return };
        let sqlstate = answer.iter().find_map(|message| match message {
            BackendMessage::ErrorResponse(error) => error.sqlstate(),
            _ => None,
        });
        let event = AdminCommand {
            client_addr: self.client_addr.clone(),
            user: self.user.clone(),
            command: command.map(Command::to_string),
            sqlstate: sqlstate.map(|code| code.as_str().to_owned()),
        };
        log.send(self.id, self.seq, Event::AdminCommand(event));
        self.seq += 1;
    }
}

/// Runs one query's command and queues its answer and ReadyForQuery.
async fn answer(
    conn: &mut ClientConn<TcpStream>,
    verbs: &Verbs<'_>,
    sql: &str,
    audit: &mut CommandAudit<'_>,
) -> Result<(), GatewayError> {
    let messages = match command::parse(sql) {
        Ok(command) => {
            tracing::info!(?command, "admin console command");
            let answer = run(verbs, command.clone()).await;
            audit.record(Some(&command), &answer);
            answer
        }
        Err(CommandError::Empty) => vec![BackendMessage::EmptyQueryResponse],
        Err(error) => {
            let answer = vec![error_message(SqlState::SYNTAX_ERROR, error.to_string())];
            audit.record(None, &answer);
            answer
        }
    };
    for message in &messages {
        conn.send(message)?;
    }
    conn.send_ready_for_query(TransactionStatus::Idle)
}

async fn run(verbs: &Verbs<'_>, command: Command) -> Vec<BackendMessage> {
    match verbs.run(command).await {
        Ok(Answer::Table(table)) => table.messages().unwrap_or_else(|error| {
            vec![error_message(SqlState::INTERNAL_ERROR, error.to_string())]
        }),
        Ok(Answer::Done { tag, notice }) => {
            let notice = notice.map(|text| {
                BackendMessage::NoticeResponse(ErrorResponse::new(
                    Severity::Notice,
                    SqlState::SUCCESSFUL_COMPLETION,
                    text,
                ))
            });
            let done = BackendMessage::CommandComplete {
                tag: tag.to_owned(),
            };
            notice.into_iter().chain([done]).collect()
        }
        Err(error) => vec![BackendMessage::ErrorResponse(error)],
    }
}

fn error_message(code: SqlState, message: String) -> BackendMessage {
    BackendMessage::ErrorResponse(ErrorResponse::new(Severity::Error, code, message))
}

/// What to do with one client message.
enum Step {
    /// Run a Simple Query.
    Query(String),
    /// Send these (an error for the extended protocol, a ReadyForQuery at its Sync).
    Send(Vec<BackendMessage>),
    /// Nothing (the rest of a refused extended-protocol group).
    Nothing,
    /// End the session after sending this, if anything (Terminate, or a message that is
    /// not valid).
    End(Option<BackendMessage>),
}

fn not_supported() -> BackendMessage {
    error_message(
        SqlState::FEATURE_NOT_SUPPORTED,
        "the admin console answers only the Simple Query protocol (psql, simple_query)".to_owned(),
    )
}

/// The extended protocol is refused once per group, up to its Sync, as PostgreSQL skips
/// the rest of a group after an error.
#[derive(Default)]
struct Extended {
    refused: bool,
}

impl Extended {
    /// What `frame` asks for.
    fn step(&mut self, frame: &Frame) -> Step {
        let message = match FrontendMessage::decode(frame) {
            Ok(message) => message,
            Err(error) => {
                let fatal = ErrorResponse::new(
                    Severity::Fatal,
                    SqlState::PROTOCOL_VIOLATION,
                    format!("invalid message: {error}"),
                );
                return Step::End(Some(BackendMessage::ErrorResponse(fatal)));
            }
        };
        let ready = BackendMessage::ReadyForQuery(TransactionStatus::Idle);
        match message {
            FrontendMessage::Query(sql) => Step::Query(sql),
            FrontendMessage::Terminate => Step::End(None),
            FrontendMessage::Sync => {
                self.refused = false;
                Step::Send(vec![ready])
            }
            // A function call is answered at once, as a query is.
            FrontendMessage::FunctionCall { .. } => Step::Send(vec![not_supported(), ready]),
            _ if self.refused => Step::Nothing,
            _ => {
                self.refused = true;
                Step::Send(vec![not_supported()])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pgbastion_wire::ErrorField;

    use super::*;

    fn step(extended: &mut Extended, tag: u8, body: &'static [u8]) -> Step {
        extended.step(&Frame::new(tag, body))
    }

    fn codes(step: Step) -> Vec<String> {
        let Step::Send(messages) = step else {
            panic!("not a Send")
        };
        messages
            .iter()
            .map(|m| match m {
                BackendMessage::ErrorResponse(e) => {
                    e.get(ErrorField::Code).unwrap_or_default().to_owned()
                }
                BackendMessage::ReadyForQuery(_) => "Z".to_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_extended_protocol_is_refused_once_per_group_and_answered_at_its_sync() {
        let mut extended = Extended::default();
        assert_eq!(
            codes(step(&mut extended, b'P', b"\0SHOW VERSION\0\0\0")),
            ["0A000"]
        );
        assert!(matches!(
            step(&mut extended, b'B', b"\0\0\0\0\0\0\0\0"),
            Step::Nothing
        ));
        assert_eq!(codes(step(&mut extended, b'S', b"")), ["Z"]);
        let query = step(&mut extended, b'Q', b"SHOW VERSION\0");
        assert!(matches!(query, Step::Query(q) if q == "SHOW VERSION"));
        assert!(matches!(step(&mut extended, b'X', b""), Step::End(None)));
    }

    #[test]
    fn a_message_that_is_not_valid_ends_the_session_with_08p01() {
        let mut extended = Extended::default();
        let Step::End(Some(BackendMessage::ErrorResponse(fatal))) =
            step(&mut extended, b'Q', b"no terminator")
        else {
            panic!("not ended")
        };
        assert_eq!(fatal.get(ErrorField::Code), Some("08P01"));
    }
}
