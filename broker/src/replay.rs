//! The replay cache: a subject token from a `replay: one_time` issuer is accepted once.
//!
//! [`ReplayStore::mark`] is the only operation: it records a key until it expires and
//! answers whether this call was the first. Check and record are one atomic step, so
//! parallel copies of one token cannot both pass: in memory under one lock, in Redis as
//! one `SET key 1 NX PXAT <ms>` ([`RedisReplayStore`]), so replicas sharing a Redis
//! refuse a token any one of them accepted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use crate::config::{RedisConfig, RedisTarget};
use crate::metrics::Metrics;

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

/// A connection to the configured Redis (one server or a cluster), made lazily and
/// remade in the background, every command bounded by `command_timeout`. Shared by the
/// replay store and the admin state store ([`crate::admin_store`]).
pub(crate) struct RedisConn {
    conn: Conn,
    timeout: Duration,
}

enum Conn {
    /// One server: `ConnectionManager` reconnects with exponential backoff by itself.
    Standalone(ConnectionManager),
    /// A Redis Cluster: the cluster connection follows MOVED/ASK and failovers itself;
    /// [`LazyCluster`] only makes the first connection, which may have to wait for Redis.
    Cluster(Arc<LazyCluster>),
}

/// How long one attempt to connect may take: longer than a command (a TLS handshake and
/// AUTH are several round trips), and done in the background, never on a request's clock.
fn connect_timeout(command_timeout: Duration) -> Duration {
    command_timeout.max(Duration::from_secs(2))
}

const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);
/// How often the background monitor pings Redis (metric, logs, and reconnection
/// while no request arrives).
const MONITOR_INTERVAL: Duration = Duration::from_secs(2);

impl RedisConn {
    /// Prepare the client; connects nothing (the first command does). Must be called
    /// inside a Tokio runtime. With `push`, the connection speaks RESP3 and hands every
    /// pub/sub message (and disconnection) to it; subscriptions are renewed after a
    /// reconnection.
    pub(crate) fn new(
        config: &RedisConfig,
        push: Option<Arc<dyn Fn(redis::PushInfo) + Send + Sync>>,
    ) -> Result<Self, ReplayError> {
        Self::build(config, push, true)
    }

    /// A connection for replay marks: the client library never resends a command by
    /// itself. Its Redis Cluster client would resend a command whose connection dropped
    /// before the reply came (up to 16 times, by default), and a `SET NX` that was
    /// applied just before the drop then answers "already set" to the very request that
    /// set it. Marks go through [`RedisConn::query_mark`] instead, which resends only
    /// what Redis refused without running it. (The standalone `ConnectionManager` never
    /// resends: a dropped connection fails the command.)
    pub(crate) fn for_marks(config: &RedisConfig) -> Result<Self, ReplayError> {
        Self::build(config, None, false)
    }

    fn build(
        config: &RedisConfig,
        push: Option<Arc<dyn Fn(redis::PushInfo) + Send + Sync>>,
        library_resends: bool,
    ) -> Result<Self, ReplayError> {
        let bad =
            |e: redis::RedisError| ReplayError::Unavailable(format!("invalid Redis configuration: {e}"));
        let timeout = config.command_timeout;
        let conn = match &config.target {
            RedisTarget::Standalone(url) => {
                let mut client = redis::Client::open(url.as_str()).map_err(bad)?;
                let mut manager_config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(connect_timeout(timeout)))
                    .set_min_delay(RECONNECT_MIN_DELAY)
                    .set_max_delay(RECONNECT_MAX_DELAY)
                    .set_exponent_base(2.0)
                    .set_number_of_retries(4);
                if let Some(push) = push {
                    let info = client.get_connection_info().clone();
                    let settings = info
                        .redis_settings()
                        .clone()
                        .set_protocol(redis::ProtocolVersion::RESP3);
                    client = redis::Client::open(info.set_redis_settings(settings)).map_err(bad)?;
                    manager_config = manager_config
                        .set_push_sender(move |info: redis::PushInfo| {
                            push(info);
                            Ok::<(), ()>(())
                        })
                        .set_automatic_resubscription();
                }
                Conn::Standalone(
                    ConnectionManager::new_lazy_with_config(client, manager_config).map_err(bad)?,
                )
            }
            RedisTarget::Cluster(urls) => {
                let mut builder = ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(connect_timeout(timeout))
                    .response_timeout(timeout);
                if !library_resends {
                    // MOVED, ASK, TRYAGAIN, CLUSTERDOWN and dropped connections alike
                    // come back to the caller; topology refreshes still happen.
                    builder = builder.retries(0);
                }
                if let Some(push) = push {
                    builder = builder.use_protocol(redis::ProtocolVersion::RESP3).push_sender(
                        move |info: redis::PushInfo| {
                            push(info);
                            Ok::<(), ()>(())
                        },
                    );
                }
                let client = builder.build().map_err(bad)?;
                Conn::Cluster(Arc::new(LazyCluster::new(client, connect_timeout(timeout))))
            }
        };
        Ok(RedisConn { conn, timeout })
    }

    /// Send one command on this connection, unbounded (callers bound it).
    async fn send(&self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match &self.conn {
            Conn::Standalone(manager) => {
                let mut c = manager.clone();
                cmd.query_async::<redis::Value>(&mut c).await
            }
            Conn::Cluster(lazy) => {
                let mut c = lazy.connection().await?;
                cmd.query_async::<redis::Value>(&mut c).await
            }
        }
    }

    /// Run one command, bounded by the command timeout.
    pub(crate) async fn query(&self, cmd: &redis::Cmd) -> Result<redis::Value, ReplayError> {
        match tokio::time::timeout(self.timeout, self.send(cmd)).await {
            Err(_) => Err(ReplayError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(ReplayError::Unavailable(e.to_string())),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Run a replay mark: like [`RedisConn::query`], but on a connection made with
    /// [`RedisConn::for_marks`] and resent only after an error reply by which Redis
    /// says it did not run the command ([`not_run`]: `MOVED`, `TRYAGAIN`,
    /// `CLUSTERDOWN`, `READONLY`, `LOADING`, no connection to send it on), after a short
    /// pause (10 ms, doubling), within the one command timeout. Any other failure (a
    /// connection that dropped after the command was sent, a reply that did not come in
    /// time) leaves the outcome unknown: it is an error, and the exchange answers 503,
    /// never "already used" for a mark this very request may have made.
    pub(crate) async fn query_mark(&self, cmd: &redis::Cmd) -> Result<redis::Value, ReplayError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            match tokio::time::timeout_at(deadline, self.send(cmd)).await {
                Err(_) => return Err(ReplayError::Timeout(self.timeout)),
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if not_run(&e) && tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(error = %e, "Redis did not run the replay mark: sending it again");
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                }
                Ok(Err(e)) if not_run(&e) => return Err(ReplayError::Unavailable(e.to_string())),
                Ok(Err(e)) => {
                    return Err(ReplayError::Unavailable(format!(
                        "{e} (a mark is not sent again after such an error: it may have been applied)"
                    )));
                }
            }
        }
    }

    /// `SUBSCRIBE channel` on a connection made with a push handler (RESP3), bounded by
    /// the connection timeout: messages go to the handler.
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<(), ReplayError> {
        let limit = connect_timeout(self.timeout);
        let run = async {
            match &self.conn {
                Conn::Standalone(manager) => manager.clone().subscribe(channel).await,
                Conn::Cluster(lazy) => lazy.connection().await?.subscribe(channel).await,
            }
        };
        match tokio::time::timeout(limit, run).await {
            Err(_) => Err(ReplayError::Timeout(limit)),
            Ok(Err(e)) => Err(ReplayError::Unavailable(e.to_string())),
            Ok(Ok(())) => Ok(()),
        }
    }
}

/// Whether Redis (or the cluster client, before sending) refused a command without
/// running it, so that sending it again cannot apply it twice: a redirection
/// (`MOVED`), a cluster or node not ready (`TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`,
/// `LOADING`), a write to a replica (`READONLY`), or no connection to send it on.
/// Not `ASK` (resending it without `ASKING` would meet `ASK` again) and no I/O error.
fn not_run(e: &redis::RedisError) -> bool {
    use redis::RetryMethod;
    matches!(
        e.retry_method(),
        RetryMethod::MovedRedirect
            | RetryMethod::WaitAndRetry
            | RetryMethod::RefreshSlotsAndRetry
            | RetryMethod::ReconnectFromInitialConnections
    )
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
fn eviction_policies(value: &redis::Value) -> Vec<String> {
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

/// The first connection to a cluster, made in the background on demand, retried with
/// backoff while it fails. Requests wait for an attempt in progress (bounded by their own
/// timeout) and fail at once during a backoff.
struct LazyCluster {
    client: ClusterClient,
    connect_timeout: Duration,
    state: Mutex<LazyState>,
    changed: tokio::sync::watch::Sender<()>,
}

enum LazyState {
    Idle {
        retry_at: Instant,
        failures: u32,
        last_error: Option<String>,
    },
    Connecting {
        failures: u32,
    },
    Ready(ClusterConnection),
}

impl LazyCluster {
    fn new(client: ClusterClient, connect_timeout: Duration) -> Self {
        LazyCluster {
            client,
            connect_timeout,
            state: Mutex::new(LazyState::Idle {
                retry_at: Instant::now(),
                failures: 0,
                last_error: None,
            }),
            changed: tokio::sync::watch::channel(()).0,
        }
    }

    async fn connection(self: &Arc<Self>) -> redis::RedisResult<ClusterConnection> {
        loop {
            let mut changed = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                match &*state {
                    LazyState::Ready(c) => return Ok(c.clone()),
                    LazyState::Connecting { .. } => {}
                    LazyState::Idle {
                        retry_at, last_error, ..
                    } if Instant::now() < *retry_at => {
                        let why = last_error.clone().unwrap_or_default();
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::NotConnected,
                            format!("not connected to the cluster yet (last attempt: {why})"),
                        )
                        .into());
                    }
                    LazyState::Idle { failures, .. } => {
                        let failures = *failures;
                        *state = LazyState::Connecting { failures };
                        let this = self.clone();
                        tokio::spawn(async move { this.attempt().await });
                    }
                }
                self.changed.subscribe()
            };
            // Woken when the attempt in progress ends, either way.
            let _ = changed.changed().await;
        }
    }

    async fn attempt(&self) {
        let result = tokio::time::timeout(self.connect_timeout, self.client.get_async_connection()).await;
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let failures = match &*state {
                LazyState::Connecting { failures } => *failures,
                _ => 0,
            };
            *state = match result {
                Ok(Ok(c)) => LazyState::Ready(c),
                Ok(Err(e)) => backoff(failures, e.to_string()),
                Err(_) => backoff(
                    failures,
                    format!("no answer within {}ms", self.connect_timeout.as_millis()),
                ),
            };
        }
        self.changed.send_replace(());
    }
}

fn backoff(failures: u32, error: String) -> LazyState {
    let delay = RECONNECT_MIN_DELAY
        .saturating_mul(2u32.saturating_pow(failures))
        .min(RECONNECT_MAX_DELAY);
    LazyState::Idle {
        retry_at: Instant::now() + delay,
        failures: failures.saturating_add(1),
        last_error: Some(error),
    }
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
