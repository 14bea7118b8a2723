//! The admin API (contract §8): issuers and rules created, replaced and deleted over
//! HTTP, in the same schema as the YAML, validated by the same compile function as
//! `check`, kept in a state file (written atomically) or, with `replay.backend: redis`,
//! in Redis for every replica ([`crate::admin_store`]), applied to the next request.
//!
//! Authentication: bearer tokens from `admin.tokens_file` / `admin.tokens`, compared in
//! constant time (as SHA-256 digests), checked from the headers before any body is
//! read. The token file is watched: every reload takes its tokens again, and a reload
//! that fails for any reason still drops the tokens no longer in the file. Optimistic concurrency: every item has an `ETag`;
//! `If-Match` (and `If-None-Match: *`) are honoured with 412, except that a PUT of
//! exactly the item already there answers 200 (RFC 9110 §13.1: the change already
//! succeeded, e.g. a retry after a lost reply).
//!
//! With Redis, every change reads the state from Redis (never a local copy), checks the
//! preconditions against it, validates the result and writes it with a compare-and-set
//! on the state's identity, `(epoch, version)`; a replica that loses the race computes
//! its change again from the new state. Every replica installs a state whose identity
//! differs from its own within a second ([`Admin::spawn_sync`]). A write whose reply is
//! lost is read back by its change id before answering ([`Admin::commit`]), and every
//! write attempt is audited with its outcome.

mod change;
mod error;
mod etag;
pub mod inspect;
mod openapi;
mod routes;
mod sync;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::admin_store::{AdminStore, RedisAdminStore, StoreError};
use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::config::{AdminConfig, AdminState, Config, ConfigError, ReplayBackend};
use crate::policy::{LivePolicy, LoadError};

pub use error::AdminError;
pub use openapi::openapi_document;
pub use routes::routes;
use sync::Synced;
use tokens::AdminTokens;
pub use tokens::caller_name;

/// How often every replica reads the version in Redis (besides pub/sub messages).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How often the subscriber connection is checked (and remade when broken).
const SUBSCRIBER_CHECK: Duration = Duration::from_secs(2);

/// How many times a change is computed again after losing a race to another replica.
/// A replica whose write lost waits a random pause first ([`conflict_pause`]), so that
/// replicas writing at once take turns instead of one always winning.
const MAX_ATTEMPTS: u32 = 16;

/// How long a write whose reply was lost is read back (every [`RESOLVE_PAUSE`]) before
/// its outcome is answered as unknown.
const RESOLVE_WINDOW: Duration = Duration::from_secs(2);

const RESOLVE_PAUSE: Duration = Duration::from_millis(100);

/// After an unknown outcome, how long the replica keeps settling it in the background
/// (once a second), to audit what became of the write.
const LATE_RESOLVE_LIMIT: Duration = Duration::from_secs(600);

/// The admin API's settings at run time.
pub struct Admin {
    pub listen: Option<SocketAddr>,
    tokens: AdminTokens,
    store: AdminStore,
    /// Serialises changes and Redis syncs: read state, validate, write, install.
    write: tokio::sync::Mutex<()>,
    /// The install lock: held from the moment a configuration with admin items is
    /// loaded (the rule files read, the whole validated) until it is installed, by an
    /// admin change, a state read from Redis and a file reload alike. So what is
    /// installed was validated against the files as they are then: no reload slips in
    /// between, and an older state never replaces a newer one. Taken with
    /// `blocking_lock` off the async workers (reloads, Redis installs) and awaited by
    /// admin changes.
    installing: tokio::sync::Mutex<()>,
    /// With Redis: the version and state installed last, and what stands in the way.
    /// Held only to read or set these fields, never across a load, so `/readyz` never
    /// waits for one.
    synced: std::sync::Mutex<Synced>,
    /// The policy in force, which every change installs into.
    live: Arc<LivePolicy>,
    audit: Arc<AuditLog>,
    /// The configuration file, which every change is validated with.
    config_path: Option<PathBuf>,
    /// `server.max_body_bytes`: the largest body a change may send.
    max_body_bytes: usize,
    /// Audit timestamps.
    clock: SharedClock,
}

impl Admin {
    /// The console's login: the id of the admin token `presented`, if it is one.
    pub fn token_id(&self, presented: &str) -> Option<String> {
        self.tokens.token_id(presented)
    }

    /// Whether the admin token with this id still opens the admin API.
    pub fn holds_token_id(&self, id: &str) -> bool {
        self.tokens.holds_id(id)
    }

    /// The admin API with its store: Redis when the replay marks are there, else the
    /// state file. Connects nothing.
    /// `live` is the policy its changes install into, `config_path` the configuration
    /// file they are validated with.
    pub fn new(
        config: &AdminConfig,
        replay: &ReplayBackend,
        live: Arc<LivePolicy>,
        audit: Arc<AuditLog>,
        config_path: Option<PathBuf>,
        max_body_bytes: usize,
        clock: SharedClock,
    ) -> Result<Admin, crate::replay::ReplayError> {
        let store = match replay {
            ReplayBackend::Redis(redis) => {
                let key = config.state_hmac_key.as_deref().ok_or_else(|| {
                    crate::replay::ReplayError::Unavailable(
                        "admin.state_hmac_key is required with replay.backend: redis".into(),
                    )
                })?;
                let store = RedisAdminStore::new(redis, key)?;
                tracing::info!(
                    redis = %store.target,
                    key = %store.key,
                    channel = %store.channel,
                    "admin changes are kept in Redis"
                );
                AdminStore::Redis(Arc::new(store))
            }
            ReplayBackend::Memory => AdminStore::File(config.state_file.clone()),
        };
        Ok(Admin {
            listen: config.listen,
            tokens: AdminTokens::new(config),
            store,
            write: tokio::sync::Mutex::new(()),
            installing: tokio::sync::Mutex::new(()),
            synced: std::sync::Mutex::new(Synced::default()),
            live,
            audit,
            config_path,
            max_body_bytes,
            clock,
        })
    }

    /// Install `config` (validated, with this admin state) as the policy in force, and
    /// take its admin tokens: file reloads, admin changes and states read from Redis
    /// all install through here.
    pub fn install(&self, config: &Config) -> Result<u64, LoadError> {
        let generation = self.live.install(config)?;
        // `admin.tokens_file` is read at every load: its tokens now are the valid ones.
        if let Some(settings) = &config.admin {
            self.tokens.set(settings);
        }
        Ok(generation)
    }

    /// After a reload that failed: a token removed from `admin.tokens_file` stops
    /// working even while another file has an error (see [`AdminTokens::revoke_removed`]).
    pub fn revoke_removed_tokens(&self) {
        self.tokens.revoke_removed();
    }

    /// Run `f` with the admin state a reload combines with the files (`None`: the state
    /// file's; with Redis, the last state that installed here, never one that failed),
    /// holding the install lock so nothing else is installed meanwhile. Blocks: call it
    /// off the async workers (the reload runs on the blocking pool).
    pub fn with_reload_state<R>(&self, f: impl FnOnce(Option<&AdminState>) -> R) -> R {
        let _installing = self.installing.blocking_lock();
        match &self.store {
            AdminStore::File(_) => f(None),
            AdminStore::Redis(_) => {
                let state = self.synced().state.clone().unwrap_or_default();
                f(Some(&state))
            }
        }
    }

    /// After a file reload (under no lock): one that succeeded lets the sync try again
    /// a state from Redis that did not install here, at once, since the files may have
    /// been what kept it out.
    pub fn reloaded(&self, ok: bool) {
        let AdminStore::Redis(store) = &self.store else {
            return;
        };
        if !ok {
            return;
        }
        let retry = match self.synced().rejected.as_mut() {
            Some(rejected) => {
                rejected.retry = true;
                true
            }
            None => false,
        };
        if retry {
            store.changed.notify_one();
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which items a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Issuers,
    Rules,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Issuers => "issuers",
            Kind::Rules => "rules",
        }
    }

    /// One of them: `issuer`, `rule`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Issuers => "issuer",
            Kind::Rules => "rule",
        }
    }

    fn map(self, state: &AdminState) -> &std::collections::BTreeMap<String, Value> {
        match self {
            Kind::Issuers => &state.issuers,
            Kind::Rules => &state.rules,
        }
    }

    fn map_mut(self, state: &mut AdminState) -> &mut std::collections::BTreeMap<String, Value> {
        match self {
            Kind::Issuers => &mut state.issuers,
            Kind::Rules => &mut state.rules,
        }
    }
}

fn problem(e: &ConfigError) -> Value {
    json!({
        "source": e.file.display().to_string(),
        "line": e.line,
        "field": e.field,
        "message": e.message,
    })
}

/// A change refused because of the admin state store, logged with its reason.
fn store_failed(e: StoreError) -> AdminError {
    match &e {
        StoreError::Unauthenticated(_) => {
            tracing::error!(error = %e, "the admin state in Redis fails authentication: the request is refused");
        }
        StoreError::Unavailable(_) => {
            tracing::error!(error = %e, "the admin state store is unavailable: the change is refused");
        }
    }
    AdminError::Store(e)
}
