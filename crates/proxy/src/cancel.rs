//! Cancel forwarding: clients get a BackendKeyData whose process ID is their backend's real
//! one (so `pg_terminate_backend`, NOTIFY sender PIDs and `pg_stat_activity` lookups work) and
//! whose secret is minted by pgbastion; a CancelRequest with that whole key is sent, with the
//! backend's own key, to the backend that serves the session.
//!
//! Two backends on different servers can share a process ID, so a process ID may map to
//! several sessions: a request is matched by its whole key, every candidate's secret
//! compared in constant time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use pgbastion_auth::ct::eq as constant_time_eq;
use pgbastion_wire::{CancelKey, ProtocolVersion};
use rand::RngCore;

use crate::target::Address;

/// Where a minted key's cancel requests go.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// The backend.
    pub address: Address,
    /// The backend's key.
    pub key: CancelKey,
}

#[derive(Debug)]
struct Entry {
    secret: Bytes,
    target: CancelTarget,
}

/// Minted keys of the sessions open now, by process ID.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<u32, Vec<Entry>>>,
}

/// Removes its key from the registry when the session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    key: CancelKey,
}

impl Registration {
    /// The key the client was given.
    pub fn key(&self) -> &CancelKey {
        &self.key
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut entries = self.registry.lock();
        if let Some(list) = entries.get_mut(&self.key.process_id) {
            list.retain(|entry| entry.secret != self.key.secret_key);
            if list.is_empty() {
                entries.remove(&self.key.process_id);
            }
        }
    }
}

/// Secret length for a client speaking `version`: PostgreSQL 18 uses 32 bytes with 3.2, and
/// 3.0 has room for 4.
fn secret_len(version: ProtocolVersion) -> usize {
    if version >= ProtocolVersion::V3_2 {
        32
    } else {
        4
    }
}

impl CancelRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Vec<Entry>>> {
        // A panic elsewhere cannot leave a map half-updated; keep serving.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Mints a key for a client speaking `version` (the backend's process ID, a fresh
    /// secret) and registers where its cancel requests go.
    pub fn register(
        self: &Arc<Self>,
        version: ProtocolVersion,
        target: CancelTarget,
    ) -> Registration {
        let process_id = target.key.process_id;
        let mut rng = rand::thread_rng();
        let mut secret = vec![0u8; secret_len(version)];
        let mut entries = self.lock();
        let list = entries.entry(process_id).or_default();
        loop {
            rng.fill_bytes(&mut secret);
            if !list.iter().any(|entry| entry.secret == secret) {
                break;
            }
        }
        let secret = Bytes::from(secret);
        list.push(Entry {
            secret: secret.clone(),
            target,
        });
        Registration {
            registry: self.clone(),
            key: CancelKey::new(process_id, secret),
        }
    }

    /// The backend for a client's cancel request, if the whole key is one we minted (every
    /// candidate's secret is compared in constant time).
    pub fn lookup(&self, key: &CancelKey) -> Option<CancelTarget> {
        let entries = self.lock();
        let mut found = None;
        for entry in entries.get(&key.process_id)? {
            if constant_time_eq(&entry.secret, &key.secret_key) {
                found = Some(entry.target.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, process_id: u32) -> CancelTarget {
        CancelTarget {
            address: Address::Tcp(host.into(), 5432),
            key: CancelKey::new(process_id, vec![1, 2, 3, 4]),
        }
    }

    #[test]
    fn minted_keys_carry_the_backend_pid_and_map_to_it_until_the_session_ends() {
        let registry = Arc::new(CancelRegistry::default());
        let registration = registry.register(ProtocolVersion::V3_0, target("a", 77));
        let minted = registration.key().clone();
        assert_eq!(minted.process_id, 77);
        assert_eq!(minted.secret_key.len(), 4);
        assert_ne!(
            &minted.secret_key[..],
            &[1, 2, 3, 4],
            "the backend's secret is never shown"
        );
        assert_eq!(registry.lookup(&minted).unwrap().key.process_id, 77);
        let wrong = CancelKey::new(77, vec![0, 0, 0, 0]);
        assert!(registry.lookup(&wrong).is_none());
        drop(registration);
        assert!(registry.lookup(&minted).is_none());
        let long = registry.register(ProtocolVersion::V3_2, target("h", 1));
        assert_eq!(long.key().secret_key.len(), 32);
    }

    #[test]
    fn two_backends_with_the_same_pid_are_told_apart_by_the_secret() {
        let registry = Arc::new(CancelRegistry::default());
        let first = registry.register(ProtocolVersion::V3_0, target("first", 42));
        let second = registry.register(ProtocolVersion::V3_0, target("second", 42));
        let host = |key: &CancelKey| match registry.lookup(key).unwrap().address {
            Address::Tcp(host, _) => host,
            Address::Unix(_) => unreachable!(),
        };
        assert_eq!(host(first.key()), "first");
        assert_eq!(host(second.key()), "second");
        let second_key = second.key().clone();
        drop(second);
        assert!(registry.lookup(&second_key).is_none());
        assert_eq!(host(first.key()), "first");
    }
}
