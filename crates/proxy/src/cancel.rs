//! Cancel forwarding: clients get a BackendKeyData whose process ID is their backend's real
//! one (so `pg_terminate_backend`, NOTIFY sender PIDs and `pg_stat_activity` lookups work) and
//! whose secret is minted by pgbastion; a CancelRequest with that whole key is sent, with the
//! backend's own key, to the backend that serves the session. The keys live in the gateway's
//! [`CancelKeys`] (two backends on different servers can share a process ID: the secret tells
//! them apart).

use pgbastion_gateway::cancel_keys::{CancelKeys, Registration};
use pgbastion_wire::CancelKey;

use crate::target::Address;

/// Where a minted key's cancel requests go.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// The backend.
    pub address: Address,
    /// The backend's key.
    pub key: CancelKey,
}

/// Minted keys of the sessions open now.
pub type CancelRegistry = CancelKeys<CancelTarget>;

/// Keeps a session's key registered until the session ends.
pub type CancelRegistration = Registration<CancelTarget>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pgbastion_wire::ProtocolVersion;

    use super::*;

    #[test]
    fn a_client_key_carries_the_backend_pid_and_never_the_backend_secret() {
        let registry = Arc::new(CancelRegistry::default());
        let target = CancelTarget {
            address: Address::Tcp("a".into(), 5432),
            key: CancelKey::new(77, vec![1, 2, 3, 4]),
        };
        let registration = registry.register(Some(77), ProtocolVersion::V3_0, target);
        let minted = registration.key();
        assert_eq!(minted.process_id, 77);
        assert_ne!(&minted.secret_key[..], &[1, 2, 3, 4]);
        assert_eq!(
            registry.lookup(minted).unwrap().key.secret_key[..],
            [1, 2, 3, 4]
        );
    }
}
