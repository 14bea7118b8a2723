//! The replay cache: a subject token from a `replay: one_time` issuer is accepted once.
//!
//! [`ReplayStore::mark`] is the only operation: it records a key until it expires and
//! answers whether this call was the first. Check and record are one atomic step, so
//! parallel copies of one token cannot both pass.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Record `key` until `expires_at` (unix seconds). `Ok(true)`: first use;
    /// `Ok(false)`: already recorded and not yet expired.
    async fn mark(&self, key: &str, expires_at: u64, now: u64) -> Result<bool, ReplayError>;
    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), ReplayError>;
    fn backend(&self) -> &'static str;
}

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

/// The replay key of a token: SHA-256 over (issuer, jti), or over the whole token when
/// it carries no `jti`. Hex, so it is safe to log and bounded in size.
pub fn replay_key(issuer: &str, jti: Option<&str>, token: &str) -> String {
    use aws_lc_rs::digest::{Context, SHA256};
    let mut ctx = Context::new(&SHA256);
    match jti {
        Some(jti) => {
            ctx.update(b"jti\0");
            ctx.update(issuer.as_bytes());
            ctx.update(b"\0");
            ctx.update(jti.as_bytes());
        }
        None => {
            ctx.update(b"token\0");
            ctx.update(token.as_bytes());
        }
    }
    hex(ctx.finish().as_ref())
}

/// SHA-256 of a token, hex: how the audit log names a token without a `jti`.
pub fn token_digest(token: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn marks_once_until_expiry() {
        let store = MemoryReplayStore::new();
        assert!(store.mark("k", 100, 10).await.expect("mark"));
        assert!(!store.mark("k", 100, 50).await.expect("mark"));
        // Expired: usable again (the token itself would be rejected as expired anyway).
        assert!(store.mark("k", 200, 101).await.expect("mark"));
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn sweeps_expired_entries() {
        let store = MemoryReplayStore::new();
        for i in 0..100 {
            store.mark(&format!("k{i}"), 10, 0).await.expect("mark");
        }
        store.mark("fresh", 100, 20).await.expect("mark");
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exactly_one_of_many_parallel_marks_wins() {
        let store = Arc::new(MemoryReplayStore::new());
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.mark("same", 100, 1).await.expect("mark") })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            if t.await.expect("join") {
                wins += 1;
            }
        }
        assert_eq!(wins, 1);
    }

    #[test]
    fn keys_differ_by_issuer_and_fall_back_to_the_token() {
        assert_ne!(replay_key("a", Some("1"), "t"), replay_key("b", Some("1"), "t"));
        assert_ne!(replay_key("a", None, "t1"), replay_key("a", None, "t2"));
        assert_eq!(replay_key("a", Some("1"), "t1"), replay_key("a", Some("1"), "t2"));
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
