//! [`CancelKeys`]: the cancel keys of a server's live sessions, and what a CancelRequest
//! carrying one should reach.
//!
//! A server mints a key when a session starts (its BackendKeyData), keeps the
//! [`Registration`] for as long as the session lives, and looks up each
//! [`Outcome::Cancel`](crate::Outcome::Cancel) request by the whole key: the process ID
//! chooses the candidates, every candidate's secret is compared in constant time. The process
//! ID may be chosen by the caller (a proxy shows its clients the backend's real PID, and two
//! backends on different servers can share one), or minted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use pgbastion_wire::{CancelKey, ProtocolVersion};
use rand::{Rng, RngCore};

/// Live sessions' cancel keys, each with the `T` its cancel requests reach.
#[derive(Debug)]
pub struct CancelKeys<T> {
    entries: Mutex<HashMap<u32, Vec<(Bytes, T)>>>,
}

impl<T> Default for CancelKeys<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

/// Keeps one session's key registered; dropping it forgets the key.
#[derive(Debug)]
pub struct Registration<T> {
    keys: Arc<CancelKeys<T>>,
    key: CancelKey,
}

impl<T> Registration<T> {
    /// The key to send the client in BackendKeyData.
    pub fn key(&self) -> &CancelKey {
        &self.key
    }
}

impl<T> Drop for Registration<T> {
    fn drop(&mut self) {
        let mut entries = self.keys.lock();
        if let Some(list) = entries.get_mut(&self.key.process_id) {
            list.retain(|(secret, _)| *secret != self.key.secret_key);
            if list.is_empty() {
                entries.remove(&self.key.process_id);
            }
        }
    }
}

/// The secret length for a client speaking `version`: 4 bytes fit protocol 3.0; from 3.2 on,
/// 32, as PostgreSQL 18 sends.
pub fn secret_len(version: ProtocolVersion) -> usize {
    if version >= ProtocolVersion::V3_2 {
        32
    } else {
        4
    }
}

impl<T> CancelKeys<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Vec<(Bytes, T)>>> {
        // Every update is one map operation: a holder that panicked cannot leave it torn.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Clone> CancelKeys<T> {
    /// Mints a key for a client speaking `version` whose cancel requests reach `target`: the
    /// process ID given, or a fresh positive one, and a fresh random secret.
    pub fn register(
        self: &Arc<Self>,
        process_id: Option<u32>,
        version: ProtocolVersion,
        target: T,
    ) -> Registration<T> {
        let mut rng = rand::thread_rng();
        let mut entries = self.lock();
        // Process IDs are positive in PostgreSQL; drivers may read them as signed.
        let process_id = process_id.unwrap_or_else(|| loop {
            let candidate = rng.gen_range(1..=i32::MAX.unsigned_abs());
            if !entries.contains_key(&candidate) {
                break candidate;
            }
        });
        let list = entries.entry(process_id).or_default();
        let mut secret = vec![0u8; secret_len(version)];
        loop {
            rng.fill_bytes(&mut secret);
            if !list.iter().any(|(taken, _)| *taken == secret) {
                break;
            }
        }
        let secret = Bytes::from(secret);
        list.push((secret.clone(), target));
        Registration {
            keys: Arc::clone(self),
            key: CancelKey::new(process_id, secret),
        }
    }

    /// What the whole `key` reaches, if it is one of ours (secrets compared in constant
    /// time, every candidate's).
    pub fn lookup(&self, key: &CancelKey) -> Option<T> {
        let entries = self.lock();
        let mut found = None;
        for (secret, target) in entries.get(&key.process_id)? {
            if pgbastion_auth::ct::eq(secret, &key.secret_key) {
                found = Some(target.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_minted_key_reaches_its_target_until_the_session_ends() {
        let keys = Arc::new(CancelKeys::default());
        let registration = keys.register(None, ProtocolVersion::V3_0, "a");
        let key = registration.key().clone();
        assert!(key.process_id > 0 && key.process_id <= i32::MAX.unsigned_abs());
        assert_eq!(key.secret_key.len(), 4);
        assert_eq!(keys.lookup(&key), Some("a"));
        let mut forged = key.secret_key.to_vec();
        forged[3] ^= 1;
        assert_eq!(keys.lookup(&CancelKey::new(key.process_id, forged)), None);
        assert_eq!(
            keys.lookup(&CancelKey::new(key.process_id, key.secret_key.slice(..2))),
            None
        );
        drop(registration);
        assert_eq!(keys.lookup(&key), None);
        let long = keys.register(None, ProtocolVersion::V3_2, "b");
        assert_eq!(long.key().secret_key.len(), 32);
    }

    #[test]
    fn two_sessions_with_the_same_process_id_are_told_apart_by_the_secret() {
        let keys = Arc::new(CancelKeys::default());
        let first = keys.register(Some(42), ProtocolVersion::V3_0, "first");
        let second = keys.register(Some(42), ProtocolVersion::V3_0, "second");
        assert_eq!(first.key().process_id, 42);
        assert_eq!(keys.lookup(first.key()), Some("first"));
        assert_eq!(keys.lookup(second.key()), Some("second"));
        let gone = second.key().clone();
        drop(second);
        assert_eq!(keys.lookup(&gone), None);
        assert_eq!(keys.lookup(first.key()), Some("first"));
    }
}
