//! Taking a `std::sync::Mutex` whose last holder panicked. Every critical section here is a
//! plain read or write that leaves the data whole, so the data is used as is rather than the
//! panic spreading to every later caller.

use std::sync::{Mutex, MutexGuard};

/// [`Mutex::lock`], poisoned or not.
pub(crate) trait Locked<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
