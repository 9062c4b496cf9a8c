//! [`Session`]: per-connection state for the message loop of [`serve_session`](crate::serve_session).
//!
//! [`Hooks`] are shared by every connection of a server; a session belongs to one. A backend
//! that keeps something per client (an embedded database handle, prepared statements,
//! portals) implements [`Session`] and gets `&mut self` for every message.

use std::future::Future;
use std::ops::Deref;

use pgbastion_wire::Frame;

use crate::conn::{ClientConn, ClientIo};
use crate::hooks::{Flow, HookResult, Hooks};

/// The message handler of one authenticated connection.
pub trait Session<S: ClientIo>: Send {
    /// Handles one client message (never Terminate: the loop ends there). Queue the answer on
    /// `conn`; the loop flushes it. [`Flow::Continue`] means "not handled": Query and Sync then
    /// get a `0A000` error and ReadyForQuery so the client never hangs.
    fn on_message(
        &mut self,
        conn: &mut ClientConn<S>,
        frame: Frame,
    ) -> impl Future<Output = HookResult<Flow>> + Send;
}

/// A [`Session`] that passes every message to [`Hooks::on_message`]; `R` is `&H` or `Arc<H>`,
/// `D` the hooks' [`Data`](Hooks::Data) for the connection.
#[derive(Debug)]
pub struct HookMessages<R, D> {
    /// The hooks.
    pub hooks: R,
    /// What they kept for this connection.
    pub data: D,
}

impl<S, R, D> Session<S> for HookMessages<R, D>
where
    S: ClientIo,
    R: Deref + Send + Sync,
    R::Target: Hooks<Data = D>,
    D: Send,
{
    fn on_message(
        &mut self,
        conn: &mut ClientConn<S>,
        frame: Frame,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        self.hooks.on_message(conn, &mut self.data, frame)
    }
}
