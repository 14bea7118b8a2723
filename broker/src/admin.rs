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

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::admin_store::{AdminStore, RedisAdminStore, Resolved, Saved, StateId, StoreError, Stored};
use crate::app::AppState;
use crate::audit::rfc3339;
use crate::config::{AdminConfig, AdminState, Config, ConfigError, ReplayBackend};

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
    tokens: std::sync::RwLock<Tokens>,
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
}

#[derive(Default)]
struct Synced {
    /// The version installed: the last state read from Redis that validated here.
    version: Option<u64>,
    /// Its epoch: with `version`, the state's identity (versions alone repeat once Redis
    /// lost the state and a replica wrote it back; the write-back starts a new epoch).
    epoch: String,
    /// That state: file reloads combine the files with it.
    state: Option<AdminState>,
    /// Why the last sync from Redis failed (shown on `/readyz`).
    error: Option<String>,
    /// A state read from Redis that does not install here (this replica is out of
    /// step: `/readyz` answers 503 until a state installs).
    rejected: Option<Rejected>,
}

/// A state in Redis that failed to install on this replica.
struct Rejected {
    version: u64,
    epoch: String,
    /// The load errors, as `fedbroker check` prints them.
    reason: String,
    /// Whether to try it again at the next sync: set by a file reload that succeeded
    /// (the files may have been what kept it out). Otherwise the same version is not
    /// loaded again every second.
    retry: bool,
}

/// The accepted bearer tokens, as SHA-256 digests.
struct Tokens {
    /// From `admin.tokens`.
    inline: Vec<[u8; 32]>,
    /// `admin.tokens_file`, and the tokens read from it.
    file: Option<std::path::PathBuf>,
    from_file: Vec<[u8; 32]>,
}

impl Tokens {
    fn from_config(config: &AdminConfig) -> Tokens {
        let split = config.tokens.len().saturating_sub(config.tokens_from_file);
        let (inline, from_file) = config.tokens.split_at(split);
        Tokens {
            inline: inline.iter().map(|t| sha256(t.as_bytes())).collect(),
            file: config.tokens_file.clone(),
            from_file: from_file.iter().map(|t| sha256(t.as_bytes())).collect(),
        }
    }
}

impl Admin {
    /// The admin API with its store: Redis when the replay marks are there, else the
    /// state file. Connects nothing.
    pub fn new(config: &AdminConfig, replay: &ReplayBackend) -> Result<Admin, crate::replay::ReplayError> {
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
            tokens: std::sync::RwLock::new(Tokens::from_config(config)),
            store,
            write: tokio::sync::Mutex::new(()),
            installing: tokio::sync::Mutex::new(()),
            synced: std::sync::Mutex::new(Synced::default()),
        })
    }

    /// The caller's identity for the audit log (`token:` and 8 hex digits of its
    /// digest), or `None`. Every configured token is compared, in constant time.
    fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest)
            })?
            .trim();
        let digest = sha256(presented.as_bytes());
        let mut found = false;
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        for known in tokens.inline.iter().chain(&tokens.from_file) {
            found |= aws_lc_rs::constant_time::verify_slices_are_equal(known, &digest).is_ok();
        }
        found.then(|| format!("token:{}", &hex(&digest)[..8]))
    }

    /// Take the tokens of a configuration just installed (a reload or an admin change).
    pub fn set_tokens(&self, config: &AdminConfig) {
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = Tokens::from_config(config);
    }

    /// After a reload that failed: read `admin.tokens_file` again on its own, so a token
    /// removed from it stops working even while another file has an error. Only
    /// removes: a token added to the file waits for a reload that succeeds. A file that
    /// cannot be read revokes every token that came from it.
    pub fn revoke_removed_tokens(&self) {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let Some(path) = tokens.file.clone() else {
            return;
        };
        let now: Vec<[u8; 32]> = match crate::files::read_regular_text(&path, crate::files::MAX_SMALL_BYTES) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|t| sha256(t.as_bytes()))
                .collect(),
            Err(e) => {
                tracing::error!(
                    path = %path.display(),
                    error = %e,
                    "cannot read admin.tokens_file: its tokens no longer open the admin API"
                );
                Vec::new()
            }
        };
        let before = tokens.from_file.len();
        tokens.from_file.retain(|d| now.contains(d));
        if tokens.from_file.len() < before {
            tracing::warn!(
                revoked = before - tokens.from_file.len(),
                "admin tokens removed from admin.tokens_file no longer open the admin API"
            );
        }
    }

    fn synced(&self) -> std::sync::MutexGuard<'_, Synced> {
        self.synced.lock().unwrap_or_else(|e| e.into_inner())
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

    /// For `/readyz`: why the admin state keeps this replica from being ready (nothing
    /// when it is in step), and what to show. With Redis, a replica is in step when it
    /// has installed the state read from Redis: it is not before the first read since
    /// its start, nor while the latest state read does not install here (the last one
    /// that did keeps serving). Takes no lock a load holds.
    pub fn readiness(&self) -> (Vec<String>, Value) {
        match &self.store {
            AdminStore::File(_) => (Vec::new(), json!({"store": "file"})),
            AdminStore::Redis(_) => {
                let synced = self.synced();
                let version = synced.version;
                let mut reasons = Vec::new();
                let mut shown = json!({
                    "store": "redis",
                    "synced": version.is_some() && synced.rejected.is_none(),
                    "version": version,
                    "epoch": version.map(|_| synced.epoch.clone()),
                });
                if let Some(e) = &synced.error {
                    shown["error"] = json!(e);
                }
                match &synced.rejected {
                    Some(rejected) => {
                        shown["not_installed"] =
                            json!({"version": rejected.version, "error": rejected.reason});
                        reasons.push(format!(
                            "out of step: the admin state version {} in Redis does not install on this replica ({}); {}",
                            rejected.version,
                            rejected.reason.lines().next().unwrap_or_default(),
                            match version {
                                Some(v) => format!("version {v}, the last one that installed, keeps serving"),
                                None => "no admin state installed yet".to_string(),
                            }
                        ));
                    }
                    None if version.is_none() => {
                        reasons.push("the admin state has not been read from Redis yet".to_string());
                    }
                    None => {}
                }
                (reasons, shown)
            }
        }
    }

    /// With Redis: keep this replica's admin state in line with Redis, for as long as
    /// `state` lives. A subscriber connection wakes the sync on every published change;
    /// the version is also read every [`SYNC_INTERVAL`], so a lost message (or a broken
    /// subscription) delays a change by a second at most. The first sync runs at once:
    /// `/readyz` answers 503 until it succeeds. While Redis is down the last state read
    /// keeps serving (the empty state when Redis was down at start).
    pub fn spawn_sync(&self, state: &Arc<AppState>) {
        let AdminStore::Redis(store) = &self.store else {
            return;
        };
        let weak_store = Arc::downgrade(store);
        tokio::spawn(async move {
            let mut subscribed = false;
            loop {
                let Some(store) = weak_store.upgrade() else { return };
                if subscribed {
                    // A broken connection is remade, its subscription renewed.
                    let _ = store.ping_subscriber().await;
                } else {
                    match store.subscribe().await {
                        Ok(()) => {
                            subscribed = true;
                            tracing::debug!(channel = %store.channel, "subscribed to admin changes");
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot subscribe to admin changes yet"),
                    }
                }
                drop(store);
                tokio::time::sleep(SUBSCRIBER_CHECK).await;
            }
        });
        let changed = store.changed.clone();
        let weak: Weak<AppState> = Arc::downgrade(state);
        tokio::spawn(async move {
            let mut was_ok: Option<bool> = None;
            loop {
                let Some(st) = weak.upgrade() else { return };
                let Some(admin) = st.admin.clone() else { return };
                let result = admin.sync(&st).await;
                match (&result, was_ok) {
                    (Ok(()), Some(true)) | (Err(_), Some(false)) => {}
                    (Ok(()), _) => tracing::info!("admin state read from Redis"),
                    (Err(e @ StoreError::Unauthenticated(_)), _) => tracing::error!(
                        error = %e,
                        "the admin state in Redis fails authentication and is NOT installed: the last verified one keeps serving; admin changes answer 503"
                    ),
                    (Err(e), _) => tracing::error!(
                        error = %e,
                        "cannot read the admin state from Redis: the last one read keeps serving; admin changes answer 503"
                    ),
                }
                admin.synced().error = result.as_ref().err().map(ToString::to_string);
                was_ok = Some(result.is_ok());
                drop(admin);
                drop(st);
                tokio::select! {
                    _ = tokio::time::sleep(SYNC_INTERVAL) => {}
                    _ = changed.notified() => {}
                }
            }
        });
    }

    /// One sync: read the version in Redis and, when it differs from the one this
    /// replica runs, read the state and install it.
    async fn sync(self: &Arc<Self>, st: &Arc<AppState>) -> Result<(), StoreError> {
        let AdminStore::Redis(store) = &self.store else {
            return Ok(());
        };
        let _write = self.write.lock().await;
        let (known, rejected) = {
            let synced = self.synced();
            let rejected = synced.rejected.as_ref().filter(|r| !r.retry).map(|r| StateId {
                epoch: r.epoch.clone(),
                version: r.version,
            });
            let known = synced.version.map(|version| StateId {
                epoch: synced.epoch.clone(),
                version,
            });
            (known, rejected)
        };
        // The identity (epoch, version), not the version alone: see `Synced::epoch`.
        let current = store.identity().await?;
        if Some(&current) == known.as_ref() {
            // In step with Redis again (nothing newer stands rejected).
            self.synced().rejected = None;
            return Ok(());
        }
        // A state that failed to install here is not loaded again every second: only
        // once it changes, or after a file reload (see `reloaded`).
        if Some(&current) == rejected.as_ref() {
            return Ok(());
        }
        let Stored { id, state, .. } = self.fetch(store).await?;
        if Some(&id) == known.as_ref() || Some(&id) == rejected.as_ref() {
            return Ok(());
        }
        let (st, admin) = (st.clone(), self.clone());
        tokio::task::spawn_blocking(move || admin.install_synced(&st, id, state))
            .await
            .map_err(|e| StoreError::Unavailable(format!("installing the admin state failed: {e}")))
    }

    /// Install a state read from Redis, validated with the files as they are now (under
    /// the install lock, like a reload). On error this replica is out of step: the last
    /// state that installed keeps serving (and file reloads keep applying against it),
    /// the new version is NOT recorded as synced, and `/readyz` answers 503 with the
    /// reason until a state installs.
    fn install_synced(&self, st: &AppState, id: StateId, state: AdminState) {
        let version = id.version;
        let _installing = self.installing.blocking_lock();
        // A replica whose last load found a name clash loads again even when the state
        // is the one in force: the clash may be gone (and /readyz then says so).
        if st.policy().admin_state != state || st.reload_status().name_clash.is_some() {
            let _loading = st.loading();
            let result = match &st.config_path {
                None => Err("no configuration file".to_string()),
                Some(path) => crate::config::load_with_admin(path, Some(&state))
                    .map_err(|e| e.to_string())
                    .and_then(|config| st.install(&config)),
            };
            st.record_reload(&result);
            if let Err(reason) = result {
                // Say what serves: there may be no earlier admin state at all.
                let serving = match self.synced().version {
                    Some(_) => {
                        "the last state that installed keeps serving and file reloads apply against it"
                    }
                    None => {
                        "no admin state has installed here yet: only the configuration file's items serve"
                    }
                };
                tracing::error!(
                    version,
                    "the admin state in Redis does not validate on this replica: it is out of step (/readyz answers 503) until a state installs; {serving}"
                );
                self.synced().rejected = Some(Rejected {
                    version,
                    epoch: id.epoch,
                    reason,
                    retry: false,
                });
                return;
            }
            tracing::info!(version, "admin state from Redis installed");
        }
        let mut synced = self.synced();
        synced.version = Some(version);
        synced.epoch = id.epoch;
        synced.state = Some(state);
        synced.rejected = None;
    }

    /// The state in Redis, with its identity. A missing key while this replica knows a
    /// non-empty state means Redis lost it (restarted without persistence, flushed):
    /// the state is written back (version 1 of a new epoch), so API-made items survive
    /// as long as one replica runs.
    async fn fetch(&self, store: &RedisAdminStore) -> Result<Stored, StoreError> {
        let stored = store.read().await?;
        if stored.id.version != 0 {
            return Ok(stored);
        }
        let known = {
            let synced = self.synced();
            synced
                .state
                .clone()
                .filter(|s| synced.version.is_some_and(|v| v > 0) && *s != AdminState::default())
        };
        let Some(known) = known else {
            return Ok(stored);
        };
        let change_id = crate::admin_store::random_id();
        let id = RedisAdminStore::next_id(&stored);
        match store.write(&stored, &id, &known, &change_id).await? {
            Saved::Written(id) => {
                tracing::warn!(
                    key = %store.key,
                    epoch = %id.epoch,
                    "the admin state vanished from Redis (restarted without persistence, or flushed): wrote back this replica's copy"
                );
                Ok(Stored {
                    id,
                    changes: vec![change_id],
                    state: known,
                })
            }
            Saved::Conflict | Saved::Cancelled => store.read().await,
        }
    }

    /// The state a change starts from: with Redis, read from Redis (with its identity);
    /// with a file, the state in force.
    async fn current(&self, st: &AppState) -> Result<(Option<Stored>, AdminState), Rejection> {
        match &self.store {
            AdminStore::File(_) => Ok((None, st.policy().admin_state.clone())),
            AdminStore::Redis(store) => match self.fetch(store).await {
                Ok(stored) => {
                    let state = stored.state.clone();
                    Ok((Some(stored), state))
                }
                Err(e) => Err(Box::new(store_unavailable(&e))),
            },
        }
    }

    /// After a write whose reply was lost (`error`): read its change id back until Redis
    /// answers, for [`RESOLVE_WINDOW`] at most. `None`: still unknown.
    async fn settle(store: &RedisAdminStore, change_id: &str, error: &StoreError) -> Option<Resolved> {
        tracing::warn!(
            change_id,
            error = %error,
            "an admin write got no answer from Redis: reading back whether it applied"
        );
        let deadline = tokio::time::Instant::now() + RESOLVE_WINDOW;
        loop {
            match store.resolve(change_id).await {
                Ok(resolved) => {
                    tracing::info!(
                        change_id,
                        applied = resolved == Resolved::Applied,
                        "admin write outcome read back"
                    );
                    return Some(resolved);
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::error!(
                        change_id,
                        error = %e,
                        "the outcome of an admin write is unknown: Redis does not answer; settling it in the background"
                    );
                    return None;
                }
                Err(_) => tokio::time::sleep(RESOLVE_PAUSE).await,
            }
        }
    }

    /// Keep settling a write whose outcome was answered as unknown, once a second for
    /// [`LATE_RESOLVE_LIMIT`], and audit what became of it (`admin_change_resolved`).
    fn settle_later(&self, st: &Arc<AppState>, change_id: String, audit: ChangeAudit) {
        let AdminStore::Redis(store) = &self.store else {
            return;
        };
        let (store, weak) = (Arc::downgrade(store), Arc::downgrade(st));
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + LATE_RESOLVE_LIMIT;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(SYNC_INTERVAL).await;
                let Some(store) = store.upgrade() else { return };
                let Ok(resolved) = store.resolve(&change_id).await else {
                    continue;
                };
                let Some(st) = weak.upgrade() else { return };
                let outcome = match resolved {
                    Resolved::Applied => "applied",
                    Resolved::NotApplied => "rejected",
                };
                tracing::info!(
                    change_id,
                    outcome,
                    "the outcome of an earlier admin write is now known"
                );
                audit.record_resolved(&st, &change_id, outcome);
                return;
            }
        });
    }

    /// Validate `next` (with `validate`, which reads the files), store it and install
    /// it, all under the install lock: no file reload, nor a state from Redis, is
    /// installed between the validation and the install, so what is installed is the
    /// admin state with the rule files as they are then (a rule removed from its file
    /// by a reload racing this change stays removed). Returns the policy's warnings;
    /// `Ok(None)`: another replica changed the state first, nothing was written.
    ///
    /// Every write attempt is audited with its outcome (`audit`): `applied`, `rejected`
    /// (nothing written: the state changed first, the store failed, or a write whose
    /// reply was lost was read back as not applied) or `unknown` (no reply and no
    /// read-back: 503, and settled in the background, see [`Self::settle_later`]).
    async fn commit(
        self: &Arc<Self>,
        st: &Arc<AppState>,
        base: Option<Stored>,
        next: AdminState,
        audit: &ChangeAudit,
        validate: impl FnOnce() -> Result<Config, Rejection> + Send + 'static,
    ) -> Result<Option<Vec<federation_rules::PolicyWarning>>, Rejection> {
        let _installing = self.installing.lock().await;
        let _loading = st.loading();
        let config = match tokio::task::spawn_blocking(validate).await {
            Ok(Ok(config)) => config,
            Ok(Err(r)) => return Err(r),
            Err(_) => return Err(Box::new(unavailable("the change could not be applied"))),
        };
        let warnings = config.rules.warnings();
        let written = match &self.store {
            AdminStore::File(_) => None,
            AdminStore::Redis(store) => {
                let base = base.unwrap_or_default();
                let id = RedisAdminStore::next_id(&base);
                let change_id = crate::admin_store::random_id();
                match store.write(&base, &id, &next, &change_id).await {
                    Ok(Saved::Written(id)) => {
                        audit.record(st, "applied", Some(&change_id), Some(&id), None);
                        Some(id)
                    }
                    Ok(Saved::Conflict | Saved::Cancelled) => {
                        audit.record(
                            st,
                            "rejected",
                            Some(&change_id),
                            None,
                            Some("the admin state changed first (compare-and-set): computed again from the new state"),
                        );
                        return Ok(None);
                    }
                    Err(e) => match Self::settle(store, &change_id, &e).await {
                        Some(Resolved::Applied) => {
                            audit.record(
                                st,
                                "applied",
                                Some(&change_id),
                                Some(&id),
                                Some("the store's reply was lost; read back: applied"),
                            );
                            Some(id)
                        }
                        Some(Resolved::NotApplied) => {
                            audit.record(
                                st,
                                "rejected",
                                Some(&change_id),
                                None,
                                Some("the store's reply was lost; read back: not applied (and cancelled)"),
                            );
                            return Err(Box::new(unavailable(
                                "the admin state store did not answer in time: the change was not applied, try again",
                            )));
                        }
                        None => {
                            audit.record(
                                st,
                                "unknown",
                                Some(&change_id),
                                None,
                                Some("the store did not answer, nor the read-back of the change"),
                            );
                            self.settle_later(st, change_id, audit.clone());
                            return Err(Box::new(unavailable(
                                "the admin state store did not answer: whether the change applied is unknown; \
                                 read the item again before retrying",
                            )));
                        }
                    },
                }
            }
        };
        let (st, admin, audit) = (st.clone(), self.clone(), audit.clone());
        let installed = tokio::task::spawn_blocking(move || {
            if let AdminStore::File(path) = &admin.store {
                if let Err(e) = next.write(path) {
                    tracing::error!(path = %path.display(), error = %e, "writing the admin state failed");
                    audit.record(
                        &st,
                        "rejected",
                        None,
                        None,
                        Some("the state file could not be written"),
                    );
                    return Err(Box::new(unavailable("the change could not be stored")));
                }
                audit.record(&st, "applied", None, None, None);
            }
            let result = st.install(&config);
            st.record_reload(&result);
            if let Some(v) = written {
                let mut synced = admin.synced();
                match &result {
                    Ok(_) => {
                        synced.version = Some(v.version);
                        synced.epoch = v.epoch;
                        synced.state = Some(next);
                        synced.rejected = None;
                    }
                    // Stored for the other replicas but not in force here: out of step.
                    Err(reason) => {
                        synced.rejected = Some(Rejected {
                            version: v.version,
                            epoch: v.epoch,
                            reason: reason.clone(),
                            retry: false,
                        })
                    }
                }
            }
            result.map_err(|e| Box::new(unavailable(e)))
        })
        .await;
        match installed {
            Ok(Ok(_)) => Ok(Some(warnings)),
            Ok(Err(r)) => Err(r),
            Err(_) => Err(Box::new(unavailable("the change could not be applied"))),
        }
    }

    /// The items of `kind` to list or show: with Redis, as Redis has them now.
    async fn items(&self, st: &AppState) -> Result<AdminState, Rejection> {
        match &self.store {
            AdminStore::File(_) => Ok(st.policy().admin_state.clone()),
            AdminStore::Redis(store) => {
                let _write = self.write.lock().await;
                self.fetch(store)
                    .await
                    .map(|stored| stored.state)
                    .map_err(|e| Box::new(store_unavailable(&e)))
            }
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

/// The ETag of an item: a digest of its JSON.
fn etag(value: &Value) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    format!("\"{}\"", &hex(&sha256(&bytes))[..32])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Issuers,
    Rules,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Issuers => "issuers",
            Kind::Rules => "rules",
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

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/openapi.json", get(openapi))
        .route("/admin/v1/issuers", get(list_issuers))
        .route("/admin/v1/rules", get(list_rules))
        .route(
            "/admin/v1/issuers/{name}",
            get(get_issuer).put(put_issuer).delete(delete_issuer),
        )
        .route(
            "/admin/v1/rules/{name}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
}

/// An early answer (boxed: responses are large).
type Rejection = Box<Response>;

fn error(status: StatusCode, code: &str, description: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "error_description": description.into()})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "a valid admin bearer token is required",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"fedbroker-admin\""),
    );
    resp
}

/// Authenticate, or answer 401. Also 404 when the admin API is not configured.
fn guard(st: &AppState, headers: &HeaderMap) -> Result<(Arc<Admin>, String), Rejection> {
    let Some(admin) = st.admin.clone() else {
        return Err(Box::new(StatusCode::NOT_FOUND.into_response()));
    };
    match admin.authenticate(headers) {
        Some(who) => Ok((admin, who)),
        None => Err(Box::new(unauthorized())),
    }
}

fn with_etag(status: StatusCode, value: &Value) -> Response {
    let mut resp = (status, Json(value.clone())).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(value)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// The policy's warnings after a change, one `Warning: 299 fedbroker "..."` header each
/// (RFC 7234 §5.5 syntax, as the Kubernetes API server sends them); the body stays the
/// item itself. Characters a header cannot carry are written `\u{..}`.
fn with_warnings(mut resp: Response, warnings: &[federation_rules::PolicyWarning]) -> Response {
    for warning in warnings {
        let mut text = String::from("299 fedbroker \"");
        for c in warning.message.chars() {
            match c {
                '"' | '\\' => {
                    text.push('\\');
                    text.push(c);
                }
                ' '..='~' => text.push(c),
                other => text.push_str(&format!("\\u{{{:x}}}", u32::from(other))),
            }
        }
        text.push('"');
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

async fn list(st: Arc<AppState>, headers: HeaderMap, kind: Kind) -> Response {
    let (admin, _) = match guard(&st, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match admin.items(&st).await {
        Ok(state) => Json(effective_list(&st.policy().file_items, &state, kind)).into_response(),
        Err(r) => *r,
    }
}

/// The whole effective set of `kind`: the configuration file's items first (in file
/// order, each with `"read_only": true`: the admin API may not change them), then the
/// admin API's (by name, as stored, so each can be sent back with `PUT`).
fn effective_list(file: &crate::config::FileItems, state: &AdminState, kind: Kind) -> Vec<Value> {
    let mut list: Vec<Value> = file
        .of(kind.as_str())
        .iter()
        .map(|(_, item)| {
            let mut item = item.clone();
            if let Some(map) = item.as_object_mut() {
                map.insert("read_only".into(), Value::Bool(true));
            }
            item
        })
        .collect();
    list.extend(kind.map(state).values().cloned());
    list
}

/// 409 for a change to a name the configuration file owns.
fn owned_by_file(kind: Kind, name: &str) -> Response {
    let singular = &kind.as_str()[..kind.as_str().len() - 1];
    error(
        StatusCode::CONFLICT,
        "conflict",
        format!(
            "{singular} `{name}` is defined in the configuration file, which owns this name: \
             change it there (the admin API lists it with \"read_only\": true)"
        ),
    )
}

async fn get_one(st: Arc<AppState>, headers: HeaderMap, kind: Kind, name: String) -> Response {
    let (admin, _) = match guard(&st, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let state = match admin.items(&st).await {
        Ok(state) => state,
        Err(r) => return *r,
    };
    match kind.map(&state).get(&name) {
        Some(v) => with_etag(StatusCode::OK, v),
        None => {
            let singular = &kind.as_str()[..kind.as_str().len() - 1];
            let why = if st.policy().file_items.owns(kind.as_str(), &name) {
                " (it is defined in the configuration file: GET the list to see it)"
            } else {
                ""
            };
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no {singular} `{name}` made through the admin API{why}"),
            )
        }
    }
}

/// `If-Match` / `If-None-Match` against the current item: `Err(412)` when they fail.
fn preconditions(headers: &HeaderMap, current: Option<&Value>) -> Result<(), Rejection> {
    let failed = || {
        Box::new(error(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the item changed (or exists, or does not): fetch it again",
        ))
    };
    if let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        let ok = match current {
            None => false,
            Some(v) => {
                let tag = etag(v);
                wanted
                    .split(',')
                    .map(str::trim)
                    .any(|w| w == "*" || w == tag || w.trim_start_matches("W/") == tag)
            }
        };
        if !ok {
            return Err(failed());
        }
    }
    if let Some(none) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let clash = match current {
            None => false,
            Some(v) => none.split(',').map(str::trim).any(|w| w == "*" || w == etag(v)),
        };
        if clash {
            return Err(failed());
        }
    }
    Ok(())
}

fn invalid(problems: Vec<Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "error": "invalid_body",
            "error_description": format!("{} problem(s)", problems.len()),
            "errors": problems,
        })),
    )
        .into_response()
}

fn problem(e: &ConfigError) -> Value {
    json!({
        "source": e.file.display().to_string(),
        "line": e.line,
        "field": e.field,
        "message": e.message,
    })
}

/// A 503 with `Retry-After: 1`.
fn unavailable(description: impl Into<String>) -> Response {
    let mut resp = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        description,
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

fn store_unavailable(e: &StoreError) -> Response {
    match e {
        StoreError::Unauthenticated(_) => {
            tracing::error!(error = %e, "the admin state in Redis fails authentication: the request is refused");
            unavailable(
                "the admin state in the store fails authentication (see the broker's log and /readyz): nothing changed",
            )
        }
        StoreError::Unavailable(_) => {
            tracing::error!(error = %e, "the admin state store is unavailable: the change is refused");
            unavailable("the admin state store is unavailable: nothing changed, try again")
        }
    }
}

/// Validate `next` with everything else (the same compile as `check`). Deleting issuer
/// `in_use` is refused (409) while a rule of `current` still uses it.
fn validate(
    st: &AppState,
    current: &AdminState,
    next: &AdminState,
    in_use: Option<&str>,
) -> Result<Config, Rejection> {
    let Some(path) = &st.config_path else {
        return Err(Box::new(unavailable("no configuration file")));
    };
    if let Some(name) = in_use {
        let rules = match crate::config::load_with_admin(path, Some(current)) {
            Ok(config) => config.rules,
            Err(_) => st.policy().rules.clone(),
        };
        let users = rules.rules_using_issuer(name);
        if !users.is_empty() {
            return Err(Box::new(in_use_conflict(name, &users)));
        }
    }
    crate::config::load_with_admin(path, Some(next))
        .map_err(|errors| Box::new(invalid(errors.0.iter().map(problem).collect())))
}

/// How many rule names a 409 lists.
const MAX_NAMED_RULES: usize = 20;

/// 409 for deleting an issuer that rules still use: names the first
/// [`MAX_NAMED_RULES`] of them (in the description and as `rules`), with the count.
fn in_use_conflict(issuer: &str, users: &[&str]) -> Response {
    (StatusCode::CONFLICT, Json(in_use_body(issuer, users))).into_response()
}

fn in_use_body(issuer: &str, users: &[&str]) -> Value {
    let shown = &users[..users.len().min(MAX_NAMED_RULES)];
    let list = shown
        .iter()
        .map(|r| format!("`{r}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let more = users.len() - shown.len();
    let description = format!(
        "issuer `{issuer}` is still used by {} rule(s): {list}{}; delete or change them first",
        users.len(),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    );
    json!({
        "error": "conflict",
        "error_description": description,
        "rules": shown,
        "rule_count": users.len(),
    })
}

/// What a request does to one item.
enum Op {
    Put(Value),
    Delete,
}

/// Read the current state (from Redis when it is there), check the preconditions,
/// validate, store and install; again from the new state when another replica changed
/// it in the meantime.
async fn change(
    st: Arc<AppState>,
    admin: Arc<Admin>,
    who: String,
    headers: HeaderMap,
    kind: Kind,
    name: String,
    op: Op,
) -> Response {
    let _write = admin.write.lock().await;
    for attempt in 0..MAX_ATTEMPTS {
        let (base, current) = match admin.current(&st).await {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let before = kind.map(&current).get(&name).cloned();
        if matches!(op, Op::Delete) && before.is_none() {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no `{name}` made through the admin API"),
            );
        }
        if let Err(r) = preconditions(&headers, before.as_ref()) {
            // RFC 9110 §13.1.1/§13.1.2: a change that has already succeeded (the item is
            // exactly what is asked for) may answer 2xx. A client retrying after a lost
            // reply or a 503 "outcome unknown" so learns that its write applied.
            if let (Op::Put(value), Some(now)) = (&op, &before)
                && value == now
            {
                return with_etag(StatusCode::OK, now);
            }
            return *r;
        }
        let mut next = current.clone();
        match &op {
            Op::Put(value) => {
                kind.map_mut(&mut next).insert(name.clone(), value.clone());
            }
            Op::Delete => {
                kind.map_mut(&mut next).remove(&name);
            }
        }
        let in_use = (matches!(op, Op::Delete) && kind == Kind::Issuers).then(|| name.clone());
        let (st2, next2) = (st.clone(), next.clone());
        // Validated inside `commit`, under the install lock, against the files as they
        // are when the change is installed.
        let validation = move || validate(&st2, &current, &next2, in_use.as_deref());
        let audit = ChangeAudit {
            who: who.clone(),
            action: match (&op, &before) {
                (Op::Delete, _) => "delete",
                (Op::Put(_), Some(_)) => "replace",
                (Op::Put(_), None) => "create",
            },
            kind,
            name: name.clone(),
            before: before.as_ref().map(digest),
            after: match &op {
                Op::Put(value) => Some(digest(value)),
                Op::Delete => None,
            },
        };
        let warnings = match admin.commit(&st, base, next, &audit, validation).await {
            Ok(Some(warnings)) => warnings,
            Ok(None) => {
                tokio::time::sleep(conflict_pause(attempt)).await;
                continue;
            }
            Err(r) => return *r,
        };
        return match op {
            Op::Put(value) => {
                let status = if before.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                with_warnings(with_etag(status, &value), &warnings)
            }
            Op::Delete => StatusCode::NO_CONTENT.into_response(),
        };
    }
    unavailable("the admin state kept changing under this request: try again")
}

/// The pause before computing a change again after losing the compare-and-set: random
/// ("full jitter") up to 5 ms doubled per lost attempt, at most 320 ms.
fn conflict_pause(attempt: u32) -> Duration {
    let ceiling_ms = 5u64 << attempt.min(6);
    let mut byte = [0u8; 2];
    let random = match aws_lc_rs::rand::fill(&mut byte) {
        Ok(()) => u64::from(u16::from_le_bytes(byte)),
        Err(_) => 0x7fff,
    };
    Duration::from_micros(random * ceiling_ms * 1000 / 0x1_0000)
}

/// The digest of an item in the audit (`before`, `after`): its ETag's hex.
fn digest(value: &Value) -> String {
    etag(value).trim_matches('"').to_string()
}

/// What the audit says of a change; one line per write attempt ([`Admin::commit`]).
#[derive(Clone)]
struct ChangeAudit {
    who: String,
    action: &'static str,
    kind: Kind,
    name: String,
    before: Option<String>,
    after: Option<String>,
}

impl ChangeAudit {
    /// One `admin_change` line: `outcome` is `applied`, `rejected` or `unknown`; with
    /// Redis, `change_id` is the write's random id, and an applied write names the
    /// state's new `version` and `epoch`.
    fn record(
        &self,
        st: &AppState,
        outcome: &str,
        change_id: Option<&str>,
        id: Option<&StateId>,
        reason: Option<&str>,
    ) {
        let mut line = json!({
            "time": rfc3339(std::time::SystemTime::now()),
            "event": "admin_change",
            "who": self.who,
            "action": self.action,
            "object": self.kind.as_str(),
            "name": self.name,
            "before": self.before,
            "after": self.after,
            "outcome": outcome,
        });
        if let Some(change_id) = change_id {
            line["change_id"] = json!(change_id);
        }
        if let Some(id) = id {
            line["version"] = json!(id.version);
            line["epoch"] = json!(id.epoch);
        }
        if let Some(reason) = reason {
            line["reason"] = json!(reason);
        }
        st.audit.record_value(&line);
    }

    /// The outcome of a write answered as `unknown`, once it is known.
    fn record_resolved(&self, st: &AppState, change_id: &str, outcome: &str) {
        st.audit.record_value(&json!({
            "time": rfc3339(std::time::SystemTime::now()),
            "event": "admin_change_resolved",
            "who": self.who,
            "action": self.action,
            "object": self.kind.as_str(),
            "name": self.name,
            "change_id": change_id,
            "outcome": outcome,
        }));
    }
}

/// The body of an authenticated request, at most `server.max_body_bytes` (413 beyond,
/// like `/token`). Called only once the bearer token checked out: an anonymous client
/// never makes the broker read (or wait for) a body.
async fn read_body(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, Rejection> {
    let limit = st.server.max_body_bytes;
    let too_large = || {
        Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the request body exceeds {limit} bytes (server.max_body_bytes)"),
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large())
}

async fn put(st: Arc<AppState>, headers: HeaderMap, kind: Kind, name: String, body: Body) -> Response {
    let (admin, who) = match guard(&st, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let body = match read_body(&st, &headers, body).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let mut value: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return invalid(vec![
                json!({"field": "", "message": "the body must be a JSON object"}),
            ]);
        }
        Err(e) => return invalid(vec![json!({"field": "", "message": format!("not JSON: {e}")})]),
    };
    match value.get("name") {
        None => value["name"] = Value::String(name.clone()),
        Some(Value::String(n)) if *n == name => {}
        Some(_) => {
            return invalid(vec![
                json!({"field": "name", "message": format!("must be `{name}`, the name in the path")}),
            ]);
        }
    }
    // The configuration file owns its names (as loaded by the policy in force; a file
    // changed since then is checked by the load that validates the change).
    if st.policy().file_items.owns(kind.as_str(), &name) {
        return owned_by_file(kind, &name);
    }
    change(st, admin, who, headers, kind, name, Op::Put(value)).await
}

async fn delete(st: Arc<AppState>, headers: HeaderMap, kind: Kind, name: String) -> Response {
    let (admin, who) = match guard(&st, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let owned = st.policy().file_items.owns(kind.as_str(), &name);
    let resp = change(st, admin, who, headers, kind, name.clone(), Op::Delete).await;
    // A name in both (a clash) is deleted from the admin state, which resolves it; a
    // name only the file defines is not the admin API's to delete.
    if owned && resp.status() == StatusCode::NOT_FOUND {
        return owned_by_file(kind, &name);
    }
    resp
}

async fn list_issuers(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    list(st, headers, Kind::Issuers).await
}
async fn list_rules(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    list(st, headers, Kind::Rules).await
}
async fn get_issuer(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    get_one(st, headers, Kind::Issuers, name).await
}
async fn get_rule(State(st): State<Arc<AppState>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    get_one(st, headers, Kind::Rules, name).await
}
async fn put_issuer(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    put(st, headers, Kind::Issuers, name, body).await
}
async fn put_rule(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    put(st, headers, Kind::Rules, name, body).await
}
async fn delete_issuer(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    delete(st, headers, Kind::Issuers, name).await
}
async fn delete_rule(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    delete(st, headers, Kind::Rules, name).await
}

/// The OpenAPI 3.1 description of this API. Public: it describes, it grants nothing.
async fn openapi(State(st): State<Arc<AppState>>) -> Response {
    if st.admin.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(openapi_document()).into_response()
}

pub fn openapi_document() -> Value {
    let item_ops = |what: &str, schema: &str| {
        json!({
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": {
                "summary": format!("One {what}"),
                "responses": {
                    "200": {"description": "The item", "headers": {"ETag": {"schema": {"type": "string"}}},
                            "content": {"application/json": {"schema": {"$ref": schema}}}},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": {"$ref": "#/components/responses/Error"}
                }
            },
            "put": {
                "summary": format!("Create or replace a {what}"),
                "parameters": [
                    {"name": "If-Match", "in": "header", "schema": {"type": "string"}},
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": schema}}}},
                "responses": {
                    "200": {"description": "Replaced", "headers": {"ETag": {"schema": {"type": "string"}}}},
                    "201": {"description": "Created", "headers": {"ETag": {"schema": {"type": "string"}}}},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "409": {"$ref": "#/components/responses/Error"},
                    "412": {"$ref": "#/components/responses/Error"},
                    "413": {"$ref": "#/components/responses/Error"},
                    "422": {"$ref": "#/components/responses/Invalid"},
                    "503": {"$ref": "#/components/responses/Error"}
                }
            },
            "delete": {
                "summary": format!("Delete a {what}"),
                "parameters": [{"name": "If-Match", "in": "header", "schema": {"type": "string"}}],
                "responses": {
                    "204": {"description": "Deleted"},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": {"$ref": "#/components/responses/Error"},
                    "409": {"$ref": "#/components/responses/Error"},
                    "412": {"$ref": "#/components/responses/Error"},
                    "503": {"$ref": "#/components/responses/Error"}
                }
            }
        })
    };
    let list_op = |what: &str, schema: &str| {
        json!({"get": {
            "summary": format!("Every {what} in force: the configuration file's (marked \"read_only\": true), then those made through the admin API"),
            "responses": {
                "200": {"description": "The list", "content": {"application/json": {"schema": {"type": "array", "items": {"anyOf": [
                    {"$ref": schema},
                    {"type": "object", "description": "An item of the configuration file: the same fields, plus read_only", "required": ["name", "read_only"], "properties": {"read_only": {"const": true}}}
                ]}}}}},
                "401": {"$ref": "#/components/responses/Unauthorized"}
            }
        }})
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fedbroker admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Issuers and rules in the same schema as the YAML configuration (see the README). Changes are validated like `fedbroker check`, take effect for the next request and survive a restart."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/admin/v1/issuers": list_op("issuer", "#/components/schemas/Issuer"),
            "/admin/v1/issuers/{name}": item_ops("issuer", "#/components/schemas/Issuer"),
            "/admin/v1/rules": list_op("rule", "#/components/schemas/Rule"),
            "/admin/v1/rules/{name}": item_ops("rule", "#/components/schemas/Rule"),
            "/admin/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI"}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Issuer": {
                    "type": "object",
                    "required": ["name", "audiences"],
                    "properties": {
                        "name": {"type": "string"}, "issuer": {"type": "string"}, "kind": {"type": "string"},
                        "audiences": {"type": "array", "items": {"type": "string"}},
                        "jwks_uri": {"type": "string"}, "jwks": {"type": "object"}, "jwks_file": {"type": "string"},
                        "algorithms": {"type": "array", "items": {"type": "string"}},
                        "replay": {"enum": ["one_time", "reusable"]}, "max_token_lifetime": {"type": "string"},
                        "danger_allow_insecure": {"type": "boolean"}, "tenant": {"type": "string"},
                        "entra_version": {"enum": ["v1", "v2"]}, "trust_domain": {"type": "string"},
                        "allow_access_tokens": {"type": "boolean"}, "tls_ca_file": {"type": "string"}
                    },
                    "additionalProperties": false
                },
                "Rule": {
                    "type": "object",
                    "required": ["name", "match"],
                    "properties": {
                        "name": {"type": "string"}, "effect": {"enum": ["allow", "deny"]}, "description": {"type": "string"},
                        "match": {"type": "object"}, "issue": {"type": "object"}
                    },
                    "additionalProperties": false
                },
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}},
                "Problem": {"type": "object", "properties": {"source": {"type": "string"}, "line": {"type": ["integer", "null"]}, "field": {"type": "string"}, "message": {"type": "string"}}}
            },
            "responses": {
                "Unauthorized": {"description": "No or wrong bearer token", "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Invalid": {"description": "Every problem with the body", "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}, "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}}}}}}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn admin() -> Admin {
        Admin::new(
            &AdminConfig {
                listen: None,
                tokens: vec!["0123456789abcdef-first".into(), "0123456789abcdef-second".into()],
                tokens_from_file: 0,
                tokens_file: None,
                state_file: PathBuf::from("/nonexistent/admin-state.json"),
                allow_insecure_issuers: false,
                allow_file_paths: false,
                state_hmac_key: None,
            },
            &ReplayBackend::Memory,
        )
        .expect("admin")
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn conflict_pauses_are_bounded_and_grow() {
        for attempt in 0..MAX_ATTEMPTS {
            let ceiling = Duration::from_millis(5 << attempt.min(6));
            assert!(conflict_pause(attempt) < ceiling, "{attempt}");
        }
        assert!(Duration::from_millis(5 << (MAX_ATTEMPTS - 1).min(6)) <= Duration::from_millis(320));
    }

    #[test]
    fn authenticates_any_configured_token_only() {
        let a = admin();
        assert!(a.authenticate(&bearer("Bearer 0123456789abcdef-first")).is_some());
        assert!(
            a.authenticate(&bearer("Bearer 0123456789abcdef-second"))
                .is_some()
        );
        assert!(a.authenticate(&bearer("Bearer 0123456789abcdef-third")).is_none());
        assert!(a.authenticate(&bearer("Basic 0123456789abcdef-first")).is_none());
        assert!(a.authenticate(&HeaderMap::new()).is_none());
        let who = a
            .authenticate(&bearer("Bearer 0123456789abcdef-first"))
            .expect("ok");
        assert!(
            !who.contains("0123456789abcdef"),
            "the token itself is never the identity"
        );
    }

    #[test]
    fn a_reload_that_fails_still_revokes_tokens_removed_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens");
        std::fs::write(&file, "0123456789abcdef-file-a\n0123456789abcdef-file-b\n").expect("write");
        let a = Admin::new(
            &AdminConfig {
                listen: None,
                tokens: vec![
                    "0123456789abcdef-inline".into(),
                    "0123456789abcdef-file-a".into(),
                    "0123456789abcdef-file-b".into(),
                ],
                tokens_from_file: 2,
                tokens_file: Some(file.clone()),
                state_file: PathBuf::from("/nonexistent/admin-state.json"),
                allow_insecure_issuers: false,
                allow_file_paths: false,
                state_hmac_key: None,
            },
            &ReplayBackend::Memory,
        )
        .expect("admin");
        // A token added to the file waits for a reload that succeeds; a removed one goes.
        std::fs::write(&file, "0123456789abcdef-file-b\n0123456789abcdef-file-c\n").expect("write");
        a.revoke_removed_tokens();
        assert!(
            a.authenticate(&bearer("Bearer 0123456789abcdef-inline"))
                .is_some()
        );
        assert!(
            a.authenticate(&bearer("Bearer 0123456789abcdef-file-a"))
                .is_none()
        );
        assert!(
            a.authenticate(&bearer("Bearer 0123456789abcdef-file-b"))
                .is_some()
        );
        assert!(
            a.authenticate(&bearer("Bearer 0123456789abcdef-file-c"))
                .is_none()
        );
        // An unreadable file revokes every token from it, never the inline ones.
        std::fs::remove_file(&file).expect("rm");
        a.revoke_removed_tokens();
        assert!(
            a.authenticate(&bearer("Bearer 0123456789abcdef-file-b"))
                .is_none()
        );
        assert!(
            a.authenticate(&bearer("Bearer 0123456789abcdef-inline"))
                .is_some()
        );
    }

    #[test]
    fn the_409_names_the_first_rules_and_counts_them_all() {
        let names: Vec<String> = (0..25).map(|i| format!("rule-{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let body = in_use_body("gha", &refs);
        assert_eq!(body["rule_count"], 25);
        assert_eq!(body["rules"].as_array().expect("list").len(), MAX_NAMED_RULES);
        let text = body["error_description"].as_str().expect("text");
        assert!(text.contains("25 rule(s): `rule-00`, `rule-01`"), "{text}");
        assert!(text.contains("`rule-19` and 5 more"), "{text}");
        assert!(!text.contains("rule-20"), "{text}");
        let body = in_use_body("gha", &refs[..2]);
        assert_eq!(
            body["error_description"],
            "issuer `gha` is still used by 2 rule(s): `rule-00`, `rule-01`; delete or change them first"
        );
    }

    #[test]
    fn preconditions_follow_rfc_9110() {
        let v = json!({"name": "x"});
        let mut h = HeaderMap::new();
        assert!(preconditions(&h, None).is_ok());
        h.insert(header::IF_MATCH, HeaderValue::from_str(&etag(&v)).expect("etag"));
        assert!(preconditions(&h, Some(&v)).is_ok());
        assert!(preconditions(&h, Some(&json!({"name": "y"}))).is_err());
        assert!(preconditions(&h, None).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(preconditions(&h, None).is_ok());
        assert!(preconditions(&h, Some(&v)).is_err());
    }

    #[test]
    fn the_openapi_document_names_every_path() {
        let doc = openapi_document();
        for p in [
            "/admin/v1/issuers",
            "/admin/v1/issuers/{name}",
            "/admin/v1/rules",
            "/admin/v1/rules/{name}",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p}");
        }
    }
}
