//! The replay cache: a subject token from a `replay: one_time` issuer is accepted once.
//!
//! [`ReplayStore::mark`] is the only operation: it records a key until it expires and
//! answers whether this call was the first. Check and record are one atomic step, so
//! parallel copies of one token cannot both pass: in memory under one lock, in Redis as
//! one `SET key 1 NX PXAT <ms>` ([`RedisReplayStore`]), so replicas sharing a Redis
//! refuse a token any one of them accepted.
//!
//! Here: the store's interface and how a token's key and mark expiry are computed; the
//! stores in `memory` and `redis_store`, the Redis connection (shared with the admin
//! state store) in `redis_conn`.

use std::time::Duration;

use async_trait::async_trait;

mod memory;
pub(crate) mod redis_conn;
mod redis_store;

pub use memory::MemoryReplayStore;
pub(crate) use redis_conn::RedisConn;
pub use redis_store::RedisReplayStore;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
    #[error("replay store did not answer within {}ms", .0.as_millis())]
    Timeout(Duration),
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

/// How long a mark outlives the last second in which its token still verifies: one
/// second for the second that verification accepts in full (it compares whole seconds),
/// and one more for clock drift between the broker and Redis (which expires marks by
/// its own clock). The memory store uses the same margin.
pub const MARK_MARGIN_SECS: u64 = 2;

/// When the mark of a token with `exp` = `expires_at` must expire (unix seconds), given
/// the clock skew that verification applied to this very request: past the whole
/// acceptance window (`exp + skew`), plus [`MARK_MARGIN_SECS`].
pub fn mark_expiry(expires_at: u64, clock_skew: u64) -> u64 {
    expires_at
        .saturating_add(clock_skew)
        .saturating_add(MARK_MARGIN_SECS)
}

/// A `jti` that identifies the token: present and not empty. An empty `jti` is
/// treated as absent, so it can never be one mark shared by every such token.
pub fn effective_jti(jti: Option<&str>) -> Option<&str> {
    jti.filter(|j| !j.is_empty())
}

/// The signing input (`header.payload`) of a compact JWS: what the signer signed.
/// The whole string when it has no `.` (never the case for a token that verified).
pub fn signing_input(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(input, _signature)| input)
}

/// The replay key of a token: SHA-256 over (issuer, jti), or, when it has no `jti`
/// (or an empty one), over (issuer, signing input): what the signer signed, never the
/// signature, which is malleable (an ECDSA (r, s) also verifies as (r, n − s)). Hex,
/// so it is safe to log and bounded in size.
pub fn replay_key(issuer: &str, jti: Option<&str>, signing_input: &str) -> String {
    use aws_lc_rs::digest::{Context, SHA256};
    let mut ctx = Context::new(&SHA256);
    match effective_jti(jti) {
        Some(jti) => {
            ctx.update(b"jti\0");
            ctx.update(issuer.as_bytes());
            ctx.update(b"\0");
            ctx.update(jti.as_bytes());
        }
        None => {
            ctx.update(b"signed\0");
            ctx.update(issuer.as_bytes());
            ctx.update(b"\0");
            ctx.update(signing_input.as_bytes());
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
mod tests;
