//! Where the admin API's issuers and rules are kept: the state file (one broker, the
//! default) or Redis (`replay.backend: redis`: every replica shares them).
//!
//! The Redis layout, under `replay.key_prefix` (default `fedbroker:replay:`):
//!
//! - `<prefix>admin:state`: one hash, so one hash slot in a Redis Cluster, with
//!   `version` (an integer: 1 after the first change, one more after each), `state`
//!   (the [`AdminState`] as JSON: `{"issuers": {NAME: {...}}, "rules": {NAME: {...}}}`)
//!   and `mac`: HMAC-SHA256 with `admin.state_hmac_key` over the key's name, the
//!   version and the state ([`mac_input`]), in hex. A missing key is version 0, the
//!   empty state. A state whose `mac` does not verify is refused: whoever can write to
//!   Redis but does not hold the key cannot install an issuer or a rule.
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
pub enum StoreError {
    /// Redis did not answer, or answered something unexpected.
    #[error("{0}")]
    Unavailable(String),
    /// The state in Redis is not authenticated by `admin.state_hmac_key`.
    #[error("{0}")]
    Unauthenticated(String),
}

/// What the `mac` field authenticates: the hash's key (so a state cannot be copied to
/// another prefix), the version (so it cannot be paired with another version) and the
/// state's JSON exactly as stored.
pub fn mac_input(key: &str, version: u64, state_json: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(key.len() + state_json.len() + 48);
    m.extend_from_slice(b"fedbroker-admin-state-v1\0");
    m.extend_from_slice(key.as_bytes());
    m.push(0);
    m.extend_from_slice(version.to_string().as_bytes());
    m.push(0);
    m.extend_from_slice(state_json.as_bytes());
    m
}

/// The outcome of a compare-and-set write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Written; the new version.
    Written(u64),
    /// The version was no longer the expected one: nothing was written.
    Conflict,
}

/// Compare-and-set: `KEYS[1]` the hash, `ARGV[1]` the expected version, `ARGV[2]` the new
/// state, `ARGV[3]` the channel, `ARGV[4]` the state's MAC for the version after the
/// expected one. Answers `{1, new version}` or `{0, current version}`.
pub const WRITE_SCRIPT: &str = r#"
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
local next = current + 1
redis.call('HSET', KEYS[1], 'version', next, 'state', ARGV[2], 'mac', ARGV[4])
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
    /// `admin.state_hmac_key`.
    mac_key: aws_lc_rs::hmac::Key,
}

impl RedisAdminStore {
    /// Prepare the clients; connects nothing. Must be called inside a Tokio runtime.
    pub fn new(config: &RedisConfig, hmac_key: &str) -> Result<Self, ReplayError> {
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
            mac_key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, hmac_key.as_bytes()),
        })
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!("the admin state store (Redis {}): {e}", self.target))
    }

    /// The hex MAC of `state_json` as version `version`.
    fn mac(&self, version: u64, state_json: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.mac_key, &mac_input(&self.key, version, state_json));
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Check a stored MAC in constant time.
    fn verify(&self, version: u64, state_json: &str, mac_hex: &str) -> bool {
        let Some(tag) = unhex(mac_hex) else {
            return false;
        };
        aws_lc_rs::hmac::verify(&self.mac_key, &mac_input(&self.key, version, state_json), &tag).is_ok()
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

    /// The version and the state, read together; a state whose MAC does not verify is
    /// [`StoreError::Unauthenticated`]. No key (or no state and no version) is version 0,
    /// the empty state.
    pub async fn read(&self) -> Result<(u64, AdminState), StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.key).arg("version").arg("state").arg("mac");
        let value = self.conn.query(&cmd).await.map_err(|e| self.failed(e))?;
        let (version, state, mac) =
            redis::from_redis_value::<(Option<String>, Option<String>, Option<String>)>(value)
                .map_err(|e| self.unavailable(format!("unexpected reply: {e}")))?;
        let shown = version.clone().unwrap_or_else(|| "none".into());
        let refused = |why: &str| {
            StoreError::Unauthenticated(format!(
                "the admin state in Redis (`{}`, version {shown}) is refused: {why}; it was not written by \
                 a broker holding admin.state_hmac_key (see the README, \"Running replicas\")",
                self.key
            ))
        };
        let (version, json) = match (version, state) {
            (None, None) => return Ok((0, AdminState::default())),
            (Some(v), Some(json)) => match v.parse::<u64>() {
                Ok(v) if v > 0 => (v, json),
                _ => return Err(refused("its version is not a positive integer")),
            },
            _ => {
                return Err(refused(
                    "it has a version without a state, or a state without a version",
                ));
            }
        };
        match mac {
            Some(mac) if self.verify(version, &json, &mac) => {}
            Some(_) => return Err(refused("its MAC does not verify")),
            None => return Err(refused("it carries no MAC")),
        }
        let state = serde_json::from_str(&json)
            .map_err(|e| self.unavailable(format!("`{}` holds no valid state: {e}", self.key)))?;
        Ok((version, state))
    }

    /// Write `next` if the version is still `expected`, and publish the new version.
    pub async fn write(&self, expected: u64, next: &AdminState) -> Result<Saved, StoreError> {
        let json = serde_json::to_string(next).map_err(|e| self.unavailable(e))?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(WRITE_SCRIPT)
            .arg(1)
            .arg(&self.key)
            .arg(expected)
            .arg(&json)
            .arg(&self.channel)
            .arg(self.mac(expected + 1, &json));
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

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_input_binds_key_version_and_state() {
        let a = mac_input("p:admin:state", 3, "{}");
        assert_ne!(a, mac_input("q:admin:state", 3, "{}"));
        assert_ne!(a, mac_input("p:admin:state", 4, "{}"));
        assert_ne!(a, mac_input("p:admin:state", 3, "{ }"));
        // No ambiguity between where the version ends and the state begins.
        assert_ne!(mac_input("k", 1, "2{}"), mac_input("k", 12, "{}"));
    }

    #[test]
    fn unhex_takes_only_hex_pairs() {
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é0"), None);
    }
}
