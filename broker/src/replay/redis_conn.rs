//! The connection to the configured Redis (one server or a cluster), shared by the
//! replay store and the admin state store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use super::ReplayError;
use crate::config::{RedisConfig, RedisTarget};

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
pub(super) fn not_run(e: &redis::RedisError) -> bool {
    use redis::RetryMethod;
    matches!(
        e.retry_method(),
        RetryMethod::MovedRedirect
            | RetryMethod::WaitAndRetry
            | RetryMethod::RefreshSlotsAndRetry
            | RetryMethod::ReconnectFromInitialConnections
    )
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
