//! The session switch: on a pooled listener, each backend checked out for a client is first
//! told who the client is, by a configured statement pipelined in front of the client's own
//! messages (no extra round trip), e.g.
//!
//! ```sql
//! SELECT set_config('pgbastion.client_addr', $1, false),
//!        set_config('pgbastion.switch', $6 || ':' || $7, false)
//! ```
//!
//! The values come from pgbastion, never from the client: `$1` the client's address (the
//! PROXY header's source when one was accepted), `$2` its port, `$3` its user, `$4` its
//! database, `$5` its application_name, `$6` the checkout counter and `$7` the signature:
//! HMAC-SHA-256 under the configured key, in hex, of `$1` to `$6` and the backend's process
//! ID joined by newlines. A client sharing the backend could call `set_config` itself; it
//! cannot sign, so audit tooling tells a forged value from a real one (see
//! docs/pooling.md for the check in SQL with pgcrypto).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// How many values a switch statement can use (`$1` … `$7`).
pub const SWITCH_VALUES: usize = 7;

/// A configured session switch.
#[derive(Debug)]
pub struct SessionSwitch {
    statement: String,
    /// How many of the values the statement uses (its highest `$n`).
    used: usize,
    key: Secret,
    /// Shared with the switch of the same listener before a reload, so that no value repeats.
    counter: Arc<AtomicU64>,
}

/// The statement's placeholders are not `$1` … `$7`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the session switch statement must use placeholders $1 to ${SWITCH_VALUES} (it uses ${0})")]
pub struct PlaceholderError(pub usize);

/// Who the client is, as pgbastion knows it.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The real client address.
    pub address: SocketAddr,
    /// The startup user.
    pub user: String,
    /// The startup database.
    pub database: String,
    /// The client's application_name.
    pub application_name: String,
}

impl SessionSwitch {
    /// A switch running `statement`, signing with `key`.
    pub fn new(statement: String, key: Secret) -> Result<Self, PlaceholderError> {
        let used = highest_placeholder(&statement);
        if used == 0 || used > SWITCH_VALUES {
            return Err(PlaceholderError(used));
        }
        Ok(Self {
            statement,
            used,
            key,
            counter: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The Sync group telling backend `pid` that `client` holds it now.
    pub fn group(&self, client: &ClientIdentity, pid: u32) -> Bytes {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let values = self.values(client, counter, pid);
        let mut out = BytesMut::new();
        crate::multiplex::extended_group(
            &self.statement,
            self.used,
            values[..self.used].iter().map(|v| Some(v.as_bytes())),
            &mut out,
        );
        out.freeze()
    }

    /// This switch (a reload's) counting on from `previous` (the listener's before the
    /// reload, still used by the sessions accepted under it): the two share one checkout
    /// counter, so a reload never makes a signed value repeat.
    pub fn counting_on_from(&self, previous: &Self) -> Self {
        Self {
            statement: self.statement.clone(),
            used: self.used,
            key: self.key.clone(),
            counter: previous.counter.clone(),
        }
    }

    /// `$1` … `$7` for one checkout.
    fn values(&self, client: &ClientIdentity, counter: u64, pid: u32) -> [String; SWITCH_VALUES] {
        let mut values = [
            client.address.ip().to_string(),
            client.address.port().to_string(),
            client.user.clone(),
            client.database.clone(),
            client.application_name.clone(),
            counter.to_string(),
            String::new(),
        ];
        values[6] = sign(self.key.expose().as_bytes(), &values[..6], pid);
        values
    }
}

/// Hex HMAC-SHA-256 of the values and the process ID, joined by newlines.
pub fn sign(key: &[u8], values: &[String], pid: u32) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for value in values {
        mac.update(value.as_bytes());
        mac.update(b"\n");
    }
    mac.update(pid.to_string().as_bytes());
    let digest = mac.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The highest `$n` in `sql` outside quotes (0 when there is none).
fn highest_placeholder(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut highest = 0;
    let mut quote = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'$' => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|d| d.is_ascii_digit())
                    .count();
                if let Ok(n) = sql[i + 1..i + 1 + digits].parse::<usize>() {
                    highest = highest.max(n);
                }
                i += digits;
            }
            None => {}
        }
        i += 1;
    }
    highest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ClientIdentity {
        ClientIdentity {
            address: "203.0.113.7:50123".parse().unwrap(),
            user: "alice".into(),
            database: "app".into(),
            application_name: "psql".into(),
        }
    }

    #[test]
    fn the_statement_must_use_the_known_placeholders() {
        let key = || Secret::new("k".to_owned());
        assert_eq!(
            SessionSwitch::new("SELECT 1".into(), key()).unwrap_err(),
            PlaceholderError(0)
        );
        assert_eq!(
            SessionSwitch::new("SELECT $8".into(), key()).unwrap_err(),
            PlaceholderError(8)
        );
        let switch = SessionSwitch::new("SELECT '$9', $2".into(), key()).unwrap();
        assert_eq!(switch.used, 2, "quoted text is not a placeholder");
    }

    #[test]
    fn each_checkout_signs_a_new_counter_with_the_backend_pid() {
        let switch =
            SessionSwitch::new("SELECT $1, $7".into(), Secret::new("key".to_owned())).unwrap();
        let first = switch.values(&identity(), 1, 100);
        let second = switch.values(&identity(), 2, 100);
        let other_pid = switch.values(&identity(), 1, 101);
        assert_eq!(first[0], "203.0.113.7");
        assert_eq!(first[6], sign(b"key", &first[..6], 100));
        assert_ne!(first[6], second[6]);
        assert_ne!(first[6], other_pid[6]);
        assert_ne!(first[6], sign(b"other key", &first[..6], 100));
        let group = switch.group(&identity(), 100);
        assert_eq!(group[0], b'P', "a Parse starts the group");
    }

    #[test]
    fn a_reloaded_switch_counts_on_from_the_one_before() {
        let before = SessionSwitch::new("SELECT $6".into(), Secret::new("k".to_owned())).unwrap();
        before.group(&identity(), 100);
        before.group(&identity(), 100);
        let reloaded = SessionSwitch::new("SELECT $6, $7".into(), Secret::new("k".to_owned()))
            .unwrap()
            .counting_on_from(&before);
        assert_eq!(reloaded.used, 7);
        reloaded.group(&identity(), 100);
        before.group(&identity(), 100);
        assert_eq!(reloaded.counter.load(Ordering::Relaxed), 4);
    }
}
