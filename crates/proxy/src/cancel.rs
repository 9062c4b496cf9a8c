//! Cancel forwarding: clients get a BackendKeyData minted by pgbastion; a CancelRequest with
//! that key is sent, with the backend's own key, to the backend that serves the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// Minted keys of the sessions open now.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<u32, Entry>>,
}

/// Removes its key from the registry when the session ends.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    process_id: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut entries) = self.registry.entries.lock() {
            entries.remove(&self.process_id);
        }
    }
}

impl CancelRegistry {
    /// Mints a key for a client speaking `version` (4-byte secret for 3.0, 32 bytes for 3.2)
    /// and registers where its cancel requests go.
    pub fn register(
        self: &Arc<Self>,
        version: ProtocolVersion,
        target: CancelTarget,
    ) -> (CancelKey, Registration) {
        let mut rng = rand::thread_rng();
        let mut secret = vec![
            0u8;
            if version >= ProtocolVersion::V3_2 {
                32
            } else {
                4
            }
        ];
        rng.fill_bytes(&mut secret);
        let secret = Bytes::from(secret);
        let mut entries = match self.entries.lock() {
            Ok(entries) => entries,
            Err(poisoned) => poisoned.into_inner(),
        };
        let process_id = loop {
            let candidate = rng.next_u32() & 0x7fff_ffff;
            if candidate != 0 && !entries.contains_key(&candidate) {
                break candidate;
            }
        };
        entries.insert(
            process_id,
            Entry {
                secret: secret.clone(),
                target,
            },
        );
        (
            CancelKey::new(process_id, secret),
            Registration {
                registry: self.clone(),
                process_id,
            },
        )
    }

    /// The backend for a client's cancel request, if the key is one we minted (the secret is
    /// compared in constant time).
    pub fn lookup(&self, key: &CancelKey) -> Option<CancelTarget> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(&key.process_id)?;
        constant_time_eq(&entry.secret, &key.secret_key).then(|| entry.target.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_map_to_backends_until_the_session_ends() {
        let registry = Arc::new(CancelRegistry::default());
        let target = CancelTarget {
            address: Address::Tcp("127.0.0.1".into(), 5432),
            key: CancelKey::new(77, vec![1, 2, 3, 4]),
        };
        let (minted, registration) = registry.register(ProtocolVersion::V3_0, target);
        assert_eq!(minted.secret_key.len(), 4);
        assert_eq!(registry.lookup(&minted).unwrap().key.process_id, 77);
        let wrong = CancelKey::new(minted.process_id, vec![0, 0, 0, 0]);
        assert!(registry.lookup(&wrong).is_none());
        drop(registration);
        assert!(registry.lookup(&minted).is_none());
        let (long, _r) = registry.register(
            ProtocolVersion::V3_2,
            CancelTarget {
                address: Address::Tcp("h".into(), 1),
                key: CancelKey::new(1, vec![0; 4]),
            },
        );
        assert_eq!(long.secret_key.len(), 32);
    }
}
