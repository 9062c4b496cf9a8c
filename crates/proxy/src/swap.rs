//! [`Swap`]: a value that a reload replaces as a whole, read once per use.

use std::sync::{Arc, PoisonError, RwLock};

/// A shared value replaced as a whole. Readers take an `Arc` of the value in force and keep
/// it as long as they need it (a connection: to its end), so a replacement never changes
/// anything under them.
///
/// A `std` read-write lock is enough here: it is read once per accepted connection, not per
/// message, and written only by a reload.
#[derive(Debug)]
pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    /// Holds `value`.
    pub fn new(value: Arc<T>) -> Self {
        Self(RwLock::new(value))
    }

    /// The value in force.
    pub fn load(&self) -> Arc<T> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `value` in force for every later [`Swap::load`].
    pub fn store(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }
}
