//! Sharing backend connections between clients, message by message: the protocol state of a
//! pooled client ([`Multiplexer`]), the replies each backend owes, and prepared statements
//! that survive a change of backend. Sans IO: the pooled session feeds it bytes.

mod backend_state;
mod engine;
mod expect;
mod statements;
mod wire;

pub use backend_state::BackendState;
pub use engine::{ClientFlow, Multiplexer, MuxError, Policy};
pub use statements::{BackendStatements, ClientStatements, Prepared};
pub use wire::extended_group;
