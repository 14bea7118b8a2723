//! Where the admin API's issuers and rules are kept: the state file (one broker, the
//! default) or Redis (`replay.backend: redis`: every replica shares them).
//!
//! The Redis layout, under `replay.key_prefix` (default `fedbroker:replay:`):
//!
//! - `<prefix>admin:state`: one hash, so one hash slot in a Redis Cluster, with
//!   `version` (an integer: 1 after the first change, one more after each) and `state`
//!   (the [`AdminState`] as JSON: `{"issuers": {NAME: {...}}, "rules": {NAME: {...}}}`).
//!   A missing key is version 0, the empty state.
//! - `<prefix>admin:changed`: a pub/sub channel; every change publishes its new version.
//!
//! A change is one Lua script ([`WRITE_SCRIPT`]): it compares the version with the one
//! the change was computed from, and only if they are equal writes the new state with
//! the next version and publishes it. Two replicas changing the state at once: one
//! writes, the other is told it lost and computes its change again from the new state.
//! Every replica subscribes to the channel and also reads `version` every second (the
//! fallback when a message is lost), and installs a state whose version differs from
//! the one it runs (see `crate::admin`).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::{AdminState, RedisConfig};
use crate::replay::{RedisConn, ReplayError};

/// The admin state's store.
pub enum AdminStore {
    /// `admin.state_file`, written atomically; the state in force is the copy in memory.
    File(PathBuf),
    /// Redis, shared by the replicas.
    Redis(Arc<RedisAdminStore>),
}

impl AdminStore {
    pub fn kind(&self) -> &'static str {
        match self {
            AdminStore::File(_) => "file",
            AdminStore::Redis(_) => "redis",
        }
    }
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The outcome of a compare-and-set write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Written; the new version.
    Written(u64),
    /// The version was no longer the expected one: nothing was written.
    Conflict,
}

/// Compare-and-set: `KEYS[1]` the hash, `ARGV[1]` the expected version, `ARGV[2]` the new
/// state, `ARGV[3]` the channel. Answers `{1, new version}` or `{0, current version}`.
pub const WRITE_SCRIPT: &str = r#"
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
local next = current + 1
redis.call('HSET', KEYS[1], 'version', next, 'state', ARGV[2])
redis.call('PUBLISH', ARGV[3], tostring(next))
return {1, next}
"#;

/// The admin state in Redis (see the module documentation for the layout).
pub struct RedisAdminStore {
    conn: RedisConn,
    /// A connection of its own, subscribed to the channel (RESP3 push messages).
    subscriber: RedisConn,
    pub key: String,
    pub channel: String,
    /// Woken by a message on the channel (or a renewed subscription).
    pub changed: Arc<Notify>,
    pub target: String,
}

impl RedisAdminStore {
    /// Prepare the clients; connects nothing. Must be called inside a Tokio runtime.
    pub fn new(config: &RedisConfig) -> Result<Self, ReplayError> {
        let changed = Arc::new(Notify::new());
        let notify = changed.clone();
        let push = Arc::new(move |info: redis::PushInfo| {
            if matches!(info.kind, redis::PushKind::Message | redis::PushKind::Subscribe) {
                notify.notify_one();
            }
        });
        Ok(RedisAdminStore {
            conn: RedisConn::new(config, None)?,
            subscriber: RedisConn::new(config, Some(push))?,
            key: format!("{}admin:state", config.key_prefix),
            channel: format!("{}admin:changed", config.key_prefix),
            changed,
            target: config.target.redacted(),
        })
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError(format!("the admin state store (Redis {}): {e}", self.target))
    }

    /// A failed command, named without the replay store's wording.
    fn failed(&self, e: ReplayError) -> StoreError {
        match e {
            ReplayError::Unavailable(why) => self.unavailable(why),
            ReplayError::Timeout(limit) => {
                self.unavailable(format!("no answer within {}ms", limit.as_millis()))
            }
        }
    }

    /// The version in Redis (0: no state yet).
    pub async fn version(&self) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&self.key).arg("version");
        let value = self.conn.query(&cmd).await.map_err(|e| self.failed(e))?;
        redis::from_redis_value::<Option<u64>>(value)
            .map(Option::unwrap_or_default)
            .map_err(|e| self.unavailable(format!("unexpected version: {e}")))
    }

    /// The version and the state, read together.
    pub async fn read(&self) -> Result<(u64, AdminState), StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.key).arg("version").arg("state");
        let value = self.conn.query(&cmd).await.map_err(|e| self.failed(e))?;
        let (version, state) = redis::from_redis_value::<(Option<u64>, Option<String>)>(value)
            .map_err(|e| self.unavailable(format!("unexpected reply: {e}")))?;
        let state = match state {
            None => AdminState::default(),
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| self.unavailable(format!("`{}` holds no valid state: {e}", self.key)))?,
        };
        Ok((version.unwrap_or_default(), state))
    }

    /// Write `next` if the version is still `expected`, and publish the new version.
    pub async fn write(&self, expected: u64, next: &AdminState) -> Result<Saved, StoreError> {
        let json = serde_json::to_string(next).map_err(|e| self.unavailable(e))?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(WRITE_SCRIPT)
            .arg(1)
            .arg(&self.key)
            .arg(expected)
            .arg(json)
            .arg(&self.channel);
        let value = self.conn.query(&cmd).await.map_err(|e| self.failed(e))?;
        match redis::from_redis_value::<(i64, u64)>(value) {
            Ok((1, version)) => Ok(Saved::Written(version)),
            Ok((_, _)) => Ok(Saved::Conflict),
            Err(e) => Err(self.unavailable(format!("unexpected reply to the write: {e}"))),
        }
    }

    /// Subscribe the subscriber connection to the channel (renewed by the client after a
    /// reconnection).
    pub async fn subscribe(&self) -> Result<(), StoreError> {
        self.subscriber
            .subscribe(&self.channel)
            .await
            .map_err(|e| self.failed(e))
    }

    /// PING on the subscriber connection: a broken connection is remade (and its
    /// subscription renewed) even while nothing is published.
    pub async fn ping_subscriber(&self) -> Result<(), StoreError> {
        self.subscriber
            .query(&redis::cmd("PING"))
            .await
            .map(|_| ())
            .map_err(|e| self.failed(e))
    }
}
