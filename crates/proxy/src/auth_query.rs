//! `auth_query` (as PgBouncer has it, for SCRAM): fetch the user's SCRAM verifier from the
//! backend with a configured query, so the proxy can authenticate the client without storing
//! any password; the client's proof then yields the keys the proxy logs into the backend with.

use bytes::BytesMut;
use pgbastion_auth::scram::ScramSecret;
use pgbastion_wire::frontend::{write_bind, write_execute, write_parse, write_sync};
use pgbastion_wire::{BackendMessage, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::{BackendError, BackendSecret, Connector, Login};
use crate::route::AuthQuery;
use crate::target::Target;

/// The largest answer accepted.
const MAX_MESSAGE: usize = 1 << 20;

/// Runs the query for `user` against `target` as the auth_query user. `Ok(None)`: no such
/// user, or the stored password is not a SCRAM verifier.
pub async fn fetch_secret(
    query: &AuthQuery,
    target: &Target,
    database: &str,
    user: &str,
    timeout: std::time::Duration,
    connector: &Connector,
) -> Result<Option<ScramSecret>, BackendError> {
    let secret = query
        .password
        .as_ref()
        .map(|p| BackendSecret::Password(p.expose().to_owned()));
    let login = Login {
        target,
        user: &query.user,
        database,
        parameters: &[(
            "application_name".to_owned(),
            "pgbastion auth_query".to_owned(),
        )],
        secret: secret.as_ref(),
        proxy_from: None,
        timeout,
    };
    let mut conn = connector.connect(login).await?;
    let mut out = BytesMut::new();
    let encode = |e: pgbastion_wire::EncodeError| BackendError::Protocol(e.to_string());
    write_parse(&mut out, "", &query.query, &[]).map_err(encode)?;
    write_bind(&mut out, "", "", &[], [Some(user.as_bytes())], &[]).map_err(encode)?;
    write_execute(&mut out, "", 0).map_err(encode)?;
    write_sync(&mut out).map_err(encode)?;
    let work = async {
        conn.stream.write_all(&out).await?;
        let decoder = FrameDecoder::new(MAX_MESSAGE);
        let mut buf = std::mem::take(&mut conn.buffered);
        let mut stored: Option<String> = None;
        loop {
            let Some(frame) = decoder
                .decode(&mut buf)
                .map_err(|e| BackendError::Protocol(e.to_string()))?
            else {
                if conn.stream.read_buf(&mut buf).await? == 0 {
                    return Err(BackendError::Protocol(
                        "the backend closed during auth_query".to_owned(),
                    ));
                }
                continue;
            };
            match BackendMessage::decode(&frame)
                .map_err(|e| BackendError::Protocol(e.to_string()))?
            {
                BackendMessage::DataRow(row) if stored.is_none() => {
                    // The password is the last column (`SELECT usename, passwd …` or just `passwd`).
                    let last = row.len().checked_sub(1).and_then(|i| row.get(i)).flatten();
                    stored = last.map(|v| String::from_utf8_lossy(v).into_owned());
                }
                BackendMessage::ErrorResponse(error) => return Err(BackendError::Refused(error)),
                BackendMessage::ReadyForQuery(_) => return Ok(stored),
                _ => {}
            }
        }
    };
    let stored = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| BackendError::Timeout(target.address.to_string()))??;
    let _ = conn.stream.shutdown().await;
    Ok(stored.and_then(|s| s.parse::<ScramSecret>().ok()))
}
