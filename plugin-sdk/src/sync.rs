//! Locks for instance state, which the `&self` interface traits leave to the plugin.
//!
//! The SDK catches a panic inside a call and reports it as `HSM_ERR_PANIC`; the instance lives
//! on, but a lock held at that moment is poisoned. These take the lock anyway. Keep the state
//! behind them in a shape one panicking call cannot leave half-changed (replace values whole,
//! restore before failing), and a poisoned lock is as good as a clean one.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, poisoned or not.
#[inline]
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Read-locks `l`, poisoned or not.
#[inline]
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-locks `l`, poisoned or not.
#[inline]
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
