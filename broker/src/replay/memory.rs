//! The replay cache in one process's memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{ReplayError, ReplayStore};

/// Marks are spread over this many independently locked shards, by key, so parallel
/// requests rarely wait for one another.
const SHARDS: usize = 64;

/// A mark's key: the 32 bytes of the SHA-256 digest that [`super::replay_key`] writes
/// in hex (any other key string is digested first).
type Key = [u8; 32];

/// One process's replay cache. A restart forgets every mark.
///
/// Each mark costs its 32-byte key twice (in its shard's map and in the list of marks
/// expiring in the same second) and its expiry: about 90 bytes with the maps' overhead.
/// Expired marks are dropped at most once a second, a whole second's worth at a time:
/// the work is proportional to the marks that expired, never to the marks held.
pub struct MemoryReplayStore {
    shards: Box<[Mutex<Shard>]>,
    next_sweep: AtomicU64,
}

#[derive(Default)]
struct Shard {
    marks: HashMap<Key, u64>,
    /// The keys of the marks expiring at each second (a key re-marked after its mark
    /// expired is in two lists; the older entry is skipped when its second comes).
    expiring: BTreeMap<u64, Vec<Key>>,
}

impl Shard {
    /// Drop every mark that expired before `now`.
    fn sweep(&mut self, now: u64) {
        while let Some(entry) = self.expiring.first_entry() {
            if *entry.key() >= now {
                break;
            }
            let (second, keys) = entry.remove_entry();
            for key in keys {
                if self.marks.get(&key) == Some(&second) {
                    self.marks.remove(&key);
                }
            }
        }
        if self.marks.capacity() > 1024 && self.marks.len() < self.marks.capacity() / 4 {
            self.marks.shrink_to(self.marks.len() * 2);
        }
    }
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        MemoryReplayStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            next_sweep: AtomicU64::new(0),
        }
    }
}

impl MemoryReplayStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many marks are held (expired ones included until their sweep).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).marks.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sweep every shard, once a second at most (one caller does it; the others go on).
    fn sweep(&self, now: u64) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due
            || self
                .next_sweep
                .compare_exchange(due, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for shard in self.shards.iter() {
            lock(shard).sweep(now);
        }
    }
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key's 32 bytes: decoded from 64 hex digits, else its SHA-256.
fn key_bytes(key: &str) -> Key {
    let mut out = [0u8; 32];
    let hex = key.as_bytes();
    let decoded = hex.len() == 64
        && out
            .iter_mut()
            .enumerate()
            .all(|(i, byte)| match (nibble(hex[2 * i]), nibble(hex[2 * i + 1])) {
                (Some(hi), Some(lo)) => {
                    *byte = hi << 4 | lo;
                    true
                }
                _ => false,
            });
    if !decoded {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, hex);
        out.copy_from_slice(digest.as_ref());
    }
    out
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[async_trait]
impl ReplayStore for MemoryReplayStore {
    async fn mark(&self, key: &str, expires_at: u64, now: u64) -> Result<bool, ReplayError> {
        self.sweep(now);
        let key = key_bytes(key);
        // The key is a digest: its first byte spreads marks evenly over the shards.
        let mut shard = lock(&self.shards[usize::from(key[0]) % SHARDS]);
        match shard.marks.get(&key) {
            Some(exp) if *exp >= now => Ok(false),
            _ => {
                shard.marks.insert(key, expires_at);
                shard.expiring.entry(expires_at).or_default().push(key);
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
