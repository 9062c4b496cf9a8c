//! The end of a client's startup as the proxy sends it: the greeting once a backend is
//! known (notices, parameters, cancel key, ReadyForQuery), or the FATAL that refuses it.

use std::future::Future;
use std::pin::Pin;

use pgbastion_gateway::{ClientConn, GatewayError};
use pgbastion_wire::{BackendMessage, CancelKey, ErrorResponse, TransactionStatus};
use tokio::net::TcpStream;

/// Sends `notices`, the `parameters` as ParameterStatus, the cancel `key` and ReadyForQuery
/// with `status`.
pub async fn greet(
    conn: &mut ClientConn<TcpStream>,
    notices: &[ErrorResponse],
    parameters: &[(String, String)],
    key: Option<&CancelKey>,
    status: TransactionStatus,
) -> Result<(), GatewayError> {
    for notice in notices {
        conn.send(&BackendMessage::NoticeResponse(notice.clone()))?;
    }
    for (name, value) in parameters {
        conn.send_parameter_status(name, value)?;
    }
    if let Some(key) = key {
        conn.send(&BackendMessage::BackendKeyData(key.clone()))?;
    }
    conn.send_ready_for_query(status)?;
    conn.flush().await
}

/// Sends the client `response` (a FATAL) and closes the connection. Boxed: a session's
/// future is as large as its largest step, and this rare one (a graceful close waits for
/// the client's last bytes) would otherwise make every idle session pay for it.
pub fn refuse(
    mut conn: ClientConn<TcpStream>,
    response: ErrorResponse,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let _ = conn.send(&BackendMessage::ErrorResponse(response));
        let _ = conn.flush().await;
        conn.close_gracefully().await;
    })
}
