//! The replay cache in one process's memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{ReplayError, ReplayStore};

/// One process's replay cache. A restart forgets every mark.
#[derive(Default)]
pub struct MemoryReplayStore {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, u64>,
    next_sweep: u64,
}

impl MemoryReplayStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ReplayStore for MemoryReplayStore {
    async fn mark(&self, key: &str, expires_at: u64, now: u64) -> Result<bool, ReplayError> {
        let mut entries = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Sweep expired marks at most once a second: amortised O(1) per call.
        if now >= entries.next_sweep {
            entries.map.retain(|_, exp| *exp >= now);
            entries.next_sweep = now + 1;
        }
        match entries.map.get(key) {
            Some(exp) if *exp >= now => Ok(false),
            _ => {
                entries.map.insert(key.to_string(), expires_at);
                Ok(true)
            }
        }
    }

    async fn ping(&self) -> Result<(), ReplayError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
