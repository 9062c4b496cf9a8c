//! Client connection IDs: one number per accepted connection, unique for the life of the
//! process (across reloads), shown in its log lines and wherever the connection is named.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// One accepted client connection's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Hands out [`ClientId`]s, from 1 on.
#[derive(Debug, Default)]
pub struct ClientIds {
    last: AtomicU64,
}

impl ClientIds {
    /// The next connection's ID.
    pub fn next(&self) -> ClientId {
        ClientId(self.last.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_one_and_never_repeat() {
        let ids = ClientIds::default();
        assert_eq!(ids.next(), ClientId(1));
        assert_eq!(ids.next(), ClientId(2));
        assert_eq!(ids.next().to_string(), "3");
    }
}
