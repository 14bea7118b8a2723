//! The broker's one clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch: the broker's one clock.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
