//! Replay marks in Redis ([`RedisReplayStore`]), and the monitor that watches it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::{RedisConn, ReplayError, ReplayStore};
use crate::config::RedisConfig;
use crate::metrics::Metrics;

/// How often the background monitor pings Redis (metric, logs, and reconnection
/// while no request arrives).
const MONITOR_INTERVAL: Duration = Duration::from_secs(2);

/// Replay marks in Redis, shared by every replica that points at it.
///
/// Each accepted token costs one `SET <prefix><key> 1 NX PXAT <ms>`: Redis answers `OK`
/// to exactly one caller, and expires the mark itself. Every command (connection waits
/// included) is bounded by `command_timeout`, so a slow, paused or failing-over Redis
/// turns into a prompt [`ReplayError`] rather than a hung request. Connections are made
/// lazily and remade in the background with backoff: the broker starts while Redis is
/// down and recovers without a restart.
pub struct RedisReplayStore {
    conn: RedisConn,
    prefix: String,
    target: String,
    metrics: Arc<Metrics>,
}

impl RedisReplayStore {
    /// Prepare the client; connects nothing (the first command, or the monitor, does).
    /// Must be called inside a Tokio runtime.
    pub fn new(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<Self, ReplayError> {
        Ok(RedisReplayStore {
            conn: RedisConn::for_marks(config)?,
            prefix: config.key_prefix.clone(),
            target: config.target.redacted(),
            metrics,
        })
    }

    /// The Redis key of a replay key.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Run one command, bounded by the command timeout; records the outcome in the
    /// `replay_store_up` gauge.
    async fn query(&self, cmd: &redis::Cmd) -> Result<redis::Value, ReplayError> {
        let result = self.conn.query(cmd).await;
        self.metrics.set_replay_store_up(result.is_ok());
        result
    }

    /// Watch Redis in the background for as long as the store lives: ping it every
    /// few seconds (keeping the metric current and reconnecting while no request
    /// comes), log when it becomes unreachable and reachable again, and once reachable,
    /// warn when its eviction policy could silently drop marks.
    pub fn spawn_monitor(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut was_up: Option<bool> = None;
            let mut policy_checked = false;
            loop {
                let Some(store) = weak.upgrade() else { return };
                let result = store.ping().await;
                match (&result, was_up) {
                    (Ok(()), Some(true)) | (Err(_), Some(false)) => {}
                    (Ok(()), _) => tracing::info!(redis = %store.target, "replay store reachable"),
                    (Err(e), _) => tracing::error!(
                        redis = %store.target,
                        error = %e,
                        "replay store unreachable: /readyz answers 503 and one-time tokens are refused (fail_closed) or issued unrecorded (fail_open) until it answers"
                    ),
                }
                was_up = Some(result.is_ok());
                if result.is_ok() && !policy_checked {
                    policy_checked = true;
                    store.check_eviction_policy().await;
                }
                drop(store);
                tokio::time::sleep(MONITOR_INTERVAL).await;
            }
        });
    }

    /// `CONFIG GET maxmemory-policy` (every node of a cluster answers): anything but
    /// `noeviction` lets Redis drop marks under memory pressure, a silent replay window.
    async fn check_eviction_policy(&self) {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        match self.query(&cmd).await {
            Ok(value) => {
                let policies = eviction_policies(&value);
                let risky: Vec<&String> = policies.iter().filter(|p| p.as_str() != "noeviction").collect();
                if policies.is_empty() {
                    tracing::warn!(redis = %self.target, "could not read maxmemory-policy; make sure it is `noeviction`: an evicted replay mark lets its token be used again");
                } else if risky.is_empty() {
                    tracing::info!(redis = %self.target, "Redis maxmemory-policy is noeviction");
                } else {
                    tracing::warn!(
                        redis = %self.target,
                        policy = %risky.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
                        "Redis maxmemory-policy is not `noeviction`: under memory pressure Redis may evict replay marks, and an evicted mark lets its token be used again. Set `maxmemory-policy noeviction`"
                    );
                }
            }
            // Managed services often disable CONFIG; that is no reason to stop.
            Err(e) => tracing::warn!(
                redis = %self.target,
                error = %e,
                "could not read maxmemory-policy (CONFIG may be disabled); make sure it is `noeviction`: an evicted replay mark lets its token be used again"
            ),
        }
    }
}

/// The values paired with `maxmemory-policy` anywhere in a `CONFIG GET` reply (one per
/// node when a cluster answers for every node).
pub(super) fn eviction_policies(value: &redis::Value) -> Vec<String> {
    fn strings(value: &redis::Value, out: &mut Vec<String>) {
        match value {
            redis::Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => out.push(s.clone()),
            redis::Value::Array(items) | redis::Value::Set(items) => {
                items.iter().for_each(|v| strings(v, out))
            }
            redis::Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
                strings(k, out);
                strings(v, out);
            }),
            _ => {}
        }
    }
    let mut flat = Vec::new();
    strings(value, &mut flat);
    flat.windows(2)
        .filter(|w| w[0] == "maxmemory-policy")
        .map(|w| w[1].clone())
        .collect()
}

#[async_trait]
impl ReplayStore for RedisReplayStore {
    async fn mark(&self, key: &str, expires_at: u64, _now: u64) -> Result<bool, ReplayError> {
        // Redis expires the mark itself, on its own clock: `expires_at` already carries
        // the clock skew verification applied and the margin ([`mark_expiry`]).
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.redis_key(key))
            .arg(1)
            .arg("NX")
            .arg("PXAT")
            .arg(expires_at.saturating_mul(1000));
        let result = self.conn.query_mark(&cmd).await;
        self.metrics.set_replay_store_up(result.is_ok());
        match result? {
            redis::Value::Okay => Ok(true),
            redis::Value::Nil => Ok(false),
            other => Err(ReplayError::Unavailable(format!(
                "unexpected reply to SET NX: {other:?}"
            ))),
        }
    }

    async fn ping(&self) -> Result<(), ReplayError> {
        self.query(&redis::cmd("PING")).await.map(|_| ())
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
