//! Where the admin API's issuers and rules are kept: the state file (one broker, the
//! default) or Redis (`replay.backend: redis`: every replica shares them).
//!
//! The Redis layout, under `replay.key_prefix` (default `fedbroker:replay:`):
//!
//! - `<prefix>admin:state`: one hash, so one hash slot in a Redis Cluster, with
//!   `version` (an integer: 1 after the first change, one more after each), `epoch`
//!   (32 random hex digits chosen by the write that starts from an empty Redis, kept by
//!   every later write), `state` (the [`AdminState`] as JSON: `{"issuers": {NAME: {...}},
//!   "rules": {NAME: {...}}}`), `changes` (the random ids of the last [`MAX_CHANGE_IDS`]
//!   writes, newest first, space-separated), `mac`: HMAC-SHA256 with
//!   `admin.state_hmac_key` over the key's name, the epoch, the version, the change ids
//!   and the state ([`mac_input`]), in hex; and `cancelled`: change ids whose outcome a
//!   broker settled as "not applied" after a timeout ([`RESOLVE_SCRIPT`]; not covered by
//!   the MAC, it only ever stops a write). A missing key is version 0, the empty state.
//!   A state whose `mac` does not verify is refused: whoever can write to Redis but does
//!   not hold the key cannot install an issuer or a rule. A state without `epoch` was
//!   written by an earlier release: its `mac` is checked with the earlier input
//!   ([`legacy_mac_input`]), and the next write gives it an epoch.
//! - `<prefix>admin:changed`: a pub/sub channel; every change publishes its new version.
//!
//! **Identity.** A state is identified by `(epoch, version)` ([`StateId`]). Versions alone
//! repeat when Redis loses the hash (a restart without persistence, a failover that drops
//! writes) and a replica writes it back from version 1 again; the epoch of that write-back
//! is new, so a replica that was away still sees a different identity and installs it.
//!
//! A change is one Lua script ([`WRITE_SCRIPT`]): it compares the epoch and version with
//! the ones the change was computed from, and only if they are equal writes the new state
//! with the next version and publishes it. Two replicas changing the state at once: one
//! writes, the other is told it lost and computes its change again from the new state.
//! Every replica subscribes to the channel and also reads `(epoch, version)` every
//! second (the fallback when a message is lost), and installs a state whose identity
//! differs from the one it runs (see `crate::admin`).
//!
//! **A write whose reply is lost** (a timeout, a dropped connection) may or may not have
//! been applied. The broker then runs [`RESOLVE_SCRIPT`] with the write's change id:
//! found in `changes`, the write applied; not found, the id is put in `cancelled` in the
//! same atomic step, so the write, should it still reach Redis later, does nothing. Either
//! answer is final; no answer (Redis still silent) leaves the outcome unknown.

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

/// How many change ids `changes` (and `cancelled`) keep.
pub const MAX_CHANGE_IDS: usize = 64;

/// What identifies a state in Redis: the epoch of the write-back it descends from (empty
/// for no state, or a state written by an earlier release) and its version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateId {
    pub epoch: String,
    pub version: u64,
}

/// A state read from Redis, verified.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub id: StateId,
    /// The ids of the last writes, newest first.
    pub changes: Vec<String>,
    pub state: AdminState,
}

/// What the `mac` field authenticates: the hash's key (so a state cannot be copied to
/// another prefix), the epoch and version (so it cannot be paired with another
/// identity), the change ids and the state's JSON exactly as stored.
pub fn mac_input(key: &str, epoch: &str, version: u64, changes: &str, state_json: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(key.len() + epoch.len() + changes.len() + state_json.len() + 48);
    m.extend_from_slice(b"fedbroker-admin-state-v2\0");
    for part in [key, epoch, &version.to_string(), changes] {
        m.extend_from_slice(part.as_bytes());
        m.push(0);
    }
    m.extend_from_slice(state_json.as_bytes());
    m
}

/// The MAC input of a state written by an earlier release (no `epoch` field).
pub fn legacy_mac_input(key: &str, version: u64, state_json: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(key.len() + state_json.len() + 48);
    m.extend_from_slice(b"fedbroker-admin-state-v1\0");
    m.extend_from_slice(key.as_bytes());
    m.push(0);
    m.extend_from_slice(version.to_string().as_bytes());
    m.push(0);
    m.extend_from_slice(state_json.as_bytes());
    m
}

/// A new random id (128 bits, 32 hex digits): an epoch or a change id.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Not expected; the time still makes a collision implausible within one hash.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome of a compare-and-set write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// Written; the new identity.
    Written(StateId),
    /// The epoch or version was no longer the expected one: nothing was written.
    Conflict,
    /// The change id had been cancelled (its writer gave up on it): nothing was written.
    Cancelled,
}

/// Why a write returned no answer, and what reading back its change id then found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The write applied (its id is in `changes`).
    Applied,
    /// The write did not apply, and now never will (its id is in `cancelled`).
    NotApplied,
}

/// Compare-and-set: `KEYS[1]` the hash; `ARGV[1]` the expected version, `ARGV[2]` the
/// expected epoch (empty: none), `ARGV[3]` the epoch to write, `ARGV[4]` the new state,
/// `ARGV[5]` the channel, `ARGV[6]` the MAC, `ARGV[7]` this write's change id, `ARGV[8]`
/// the new `changes`. Answers `{1, new version}`, `{0, current version}` (conflict) or
/// `{2, current version}` (this change id was cancelled).
pub const WRITE_SCRIPT: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'version', 'epoch', 'cancelled')
local current = tonumber(f[1] or '0')
if string.find(' ' .. (f[3] or '') .. ' ', ' ' .. ARGV[7] .. ' ', 1, true) then
  return {2, current}
end
if current ~= tonumber(ARGV[1]) or (f[2] or '') ~= ARGV[2] then
  return {0, current}
end
local next = current + 1
redis.call('HSET', KEYS[1], 'version', next, 'epoch', ARGV[3], 'state', ARGV[4], 'mac', ARGV[6], 'changes', ARGV[8])
redis.call('PUBLISH', ARGV[5], tostring(next))
return {1, next}
"#;

/// Settle a write whose reply was lost: `KEYS[1]` the hash, `ARGV[1]` its change id,
/// `ARGV[2]` how many ids `cancelled` keeps. Answers 1 when the id is in `changes` (the
/// write applied); else puts it in `cancelled` (so the write, should it still arrive,
/// does nothing) and answers 0.
pub const RESOLVE_SCRIPT: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'changes', 'cancelled')
if string.find(' ' .. (f[1] or '') .. ' ', ' ' .. ARGV[1] .. ' ', 1, true) then
  return 1
end
local list = ARGV[1]
local n = 1
for id in string.gmatch(f[2] or '', '%S+') do
  if n >= tonumber(ARGV[2]) then break end
  list = list .. ' ' .. id
  n = n + 1
end
redis.call('HSET', KEYS[1], 'cancelled', list)
return 0
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

    /// The hex MAC of a state as stored ([`mac_input`]).
    fn mac(&self, id: &StateId, changes: &str, state_json: &str) -> String {
        let input = mac_input(&self.key, &id.epoch, id.version, changes, state_json);
        let tag = aws_lc_rs::hmac::sign(&self.mac_key, &input);
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Check a stored MAC in constant time; `epoch: None` is a state written by an
    /// earlier release ([`legacy_mac_input`]).
    fn verify(
        &self,
        epoch: Option<&str>,
        version: u64,
        changes: &str,
        state_json: &str,
        mac_hex: &str,
    ) -> bool {
        let Some(tag) = unhex(mac_hex) else {
            return false;
        };
        let input = match epoch {
            Some(epoch) => mac_input(&self.key, epoch, version, changes, state_json),
            None => legacy_mac_input(&self.key, version, state_json),
        };
        aws_lc_rs::hmac::verify(&self.mac_key, &input, &tag).is_ok()
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

    /// The identity of the state in Redis (version 0: no state yet). Not verified: a
    /// replica that finds an identity it does not run reads (and verifies) the state.
    pub async fn identity(&self) -> Result<StateId, StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.key).arg("version").arg("epoch");
        let value = self.conn.query(&cmd).await.map_err(|e| self.failed(e))?;
        let (version, epoch) = redis::from_redis_value::<(Option<u64>, Option<String>)>(value)
            .map_err(|e| self.unavailable(format!("unexpected version: {e}")))?;
        Ok(StateId {
            epoch: epoch.unwrap_or_default(),
            version: version.unwrap_or_default(),
        })
    }

    /// The identity, change ids and state, read together; a state whose MAC does not
    /// verify is [`StoreError::Unauthenticated`]. No key (or no state and no version) is
    /// version 0, the empty state.
    pub async fn read(&self) -> Result<Stored, StoreError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.key)
            .arg("version")
            .arg("state")
            .arg("mac")
            .arg("epoch")
            .arg("changes");
        let value = self.conn.query(&cmd).await.map_err(|e| self.failed(e))?;
        type Fields = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (version, state, mac, epoch, changes) = redis::from_redis_value::<Fields>(value)
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
            (None, None) => return Ok(Stored::default()),
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
        let changes = changes.unwrap_or_default();
        match mac {
            Some(mac) if self.verify(epoch.as_deref(), version, &changes, &json, &mac) => {}
            Some(_) => return Err(refused("its MAC does not verify")),
            None => return Err(refused("it carries no MAC")),
        }
        let state = serde_json::from_str(&json)
            .map_err(|e| self.unavailable(format!("`{}` holds no valid state: {e}", self.key)))?;
        Ok(Stored {
            id: StateId {
                epoch: epoch.unwrap_or_default(),
                version,
            },
            changes: changes.split_whitespace().map(str::to_owned).collect(),
            state,
        })
    }

    /// The identity a write over `base` gives: the next version, in the same epoch; a
    /// write over no state (or over a state of an earlier release) starts a new epoch.
    pub fn next_id(base: &Stored) -> StateId {
        StateId {
            epoch: if base.id.epoch.is_empty() {
                random_id()
            } else {
                base.id.epoch.clone()
            },
            version: base.id.version + 1,
        }
    }

    /// Write `next` as `id` (from [`Self::next_id`]) and change `change_id` if the state
    /// in Redis is still `base`, and publish the new version. An error means the outcome
    /// is not known: see [`Self::resolve`].
    pub async fn write(
        &self,
        base: &Stored,
        id: &StateId,
        next: &AdminState,
        change_id: &str,
    ) -> Result<Saved, StoreError> {
        let json = serde_json::to_string(next).map_err(|e| self.unavailable(e))?;
        let changes = std::iter::once(change_id)
            .chain(base.changes.iter().map(String::as_str))
            .take(MAX_CHANGE_IDS)
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(WRITE_SCRIPT)
            .arg(1)
            .arg(&self.key)
            .arg(base.id.version)
            .arg(&base.id.epoch)
            .arg(&id.epoch)
            .arg(&json)
            .arg(&self.channel)
            .arg(self.mac(id, &changes, &json))
            .arg(change_id)
            .arg(&changes);
        let value = self.conn.query(&cmd).await.map_err(|e| self.failed(e))?;
        match redis::from_redis_value::<(i64, u64)>(value) {
            Ok((1, version)) if version == id.version => Ok(Saved::Written(id.clone())),
            Ok((1, version)) => Err(self.unavailable(format!(
                "the write answered version {version}, expected {}",
                id.version
            ))),
            Ok((2, _)) => Ok(Saved::Cancelled),
            Ok((_, _)) => Ok(Saved::Conflict),
            Err(e) => Err(self.unavailable(format!("unexpected reply to the write: {e}"))),
        }
    }

    /// Settle the outcome of the write `change_id` whose reply was lost: applied, or not
    /// applied and cancelled for good ([`RESOLVE_SCRIPT`]). An error: still unknown.
    pub async fn resolve(&self, change_id: &str) -> Result<Resolved, StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RESOLVE_SCRIPT)
            .arg(1)
            .arg(&self.key)
            .arg(change_id)
            .arg(MAX_CHANGE_IDS);
        let value = self.conn.query(&cmd).await.map_err(|e| self.failed(e))?;
        match redis::from_redis_value::<i64>(value) {
            Ok(1) => Ok(Resolved::Applied),
            Ok(_) => Ok(Resolved::NotApplied),
            Err(e) => Err(self.unavailable(format!("unexpected reply to the read-back: {e}"))),
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
    fn the_mac_input_binds_key_epoch_version_changes_and_state() {
        let a = mac_input("p:admin:state", "e1", 3, "c1", "{}");
        assert_ne!(a, mac_input("q:admin:state", "e1", 3, "c1", "{}"));
        assert_ne!(a, mac_input("p:admin:state", "e2", 3, "c1", "{}"));
        assert_ne!(a, mac_input("p:admin:state", "e1", 4, "c1", "{}"));
        assert_ne!(a, mac_input("p:admin:state", "e1", 3, "c2", "{}"));
        assert_ne!(a, mac_input("p:admin:state", "e1", 3, "c1", "{ }"));
        // No ambiguity between where one part ends and the next begins.
        assert_ne!(
            mac_input("k", "e", 1, "", "2{}"),
            mac_input("k", "e", 12, "", "{}")
        );
        assert_ne!(
            mac_input("k", "e1", 1, "", "{}"),
            mac_input("k", "e", 11, "", "{}")
        );
        // A state of an earlier release is never mistaken for one with an epoch.
        assert_ne!(legacy_mac_input("k", 1, "{}"), mac_input("k", "", 1, "", "{}"));
        let l = legacy_mac_input("p:admin:state", 3, "{}");
        assert_ne!(l, legacy_mac_input("p:admin:state", 4, "{}"));
        assert_ne!(mac_input("k", "", 1, "", "2{}"), mac_input("k", "", 12, "", "{}"));
    }

    #[test]
    fn random_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (random_id(), random_id());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn unhex_takes_only_hex_pairs() {
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é0"), None);
    }
}
