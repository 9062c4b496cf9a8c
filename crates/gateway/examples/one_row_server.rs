//! A server where every query answers one row, `test-field = test-value`: the functional-test
//! server Teleport ships, in a few lines on the gateway library.
//!
//! ```sh
//! cargo run -p pgbastion-gateway --example one_row_server -- 127.0.0.1:6433
//! psql "host=127.0.0.1 port=6433 user=anyone" -c 'select whatever'
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use pgbastion_gateway::{
    serve_listener, ClientConn, ClientIo, Flow, GatewayConfig, HookResult, Hooks,
};
use pgbastion_wire::{Frame, FrontendTag, TransactionStatus};
use tokio::net::TcpListener;

/// Trusts everyone and answers every Query with one row.
pub struct OneRow;

impl Hooks for OneRow {
    type Data = ();

    async fn on_message<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        _data: &mut (),
        frame: Frame,
    ) -> HookResult<Flow> {
        if FrontendTag::from_byte(frame.tag) != Some(FrontendTag::Query) {
            return Ok(Flow::Continue);
        }
        conn.send_text_rows(&["test-field"], [&[Some("test-value")][..]])?;
        conn.send_ready_for_query(TransactionStatus::Idle)?;
        Ok(Flow::Handled)
    }
}

/// Serves clients from `listener` until the task is dropped.
pub async fn run(listener: TcpListener, config: GatewayConfig) {
    serve_listener(listener, Arc::new(config), Arc::new(OneRow)).await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6433".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(addr).await?;
    println!("one-row server on {addr}");
    run(listener, GatewayConfig::default()).await;
    Ok(())
}
