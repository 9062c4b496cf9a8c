//! [`Extensions`]: values a server attaches to one connection, by type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A type map carried in [`ConnectionState`](crate::ConnectionState): hooks that learn
/// something about a connection (the route it matched, a token's claims, a backend connection
/// opened while checking a password) store it here for later hooks and for whoever drives the
/// session. Values are shared (`Arc`), so the state stays cheap to clone.
#[derive(Clone, Default)]
pub struct Extensions(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl Extensions {
    /// Stores `value`, replacing a value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// Removes the value of type `T`; returns whether there was one.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> bool {
        self.0.remove(&TypeId::of::<T>()).is_some()
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Extensions({} values)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_one_value_per_type() {
        let mut ext = Extensions::default();
        ext.insert(5u32);
        ext.insert(String::from("route"));
        ext.insert(7u32);
        assert_eq!(ext.get::<u32>(), Some(&7));
        assert_eq!(ext.get::<String>().map(String::as_str), Some("route"));
        let copy = ext.clone();
        assert!(ext.remove::<u32>());
        assert_eq!(ext.get::<u32>(), None);
        assert_eq!(copy.get::<u32>(), Some(&7));
        assert_eq!(ext.get::<i64>(), None);
    }
}
