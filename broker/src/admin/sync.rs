//! With Redis: keeping this replica's admin state in line with the one in Redis, and
//! what `/readyz` says of it.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Admin, SUBSCRIBER_CHECK, SYNC_INTERVAL};
use crate::admin_store::{AdminStore, RedisAdminStore, Saved, StateId, StoreError, Stored};
use crate::config::AdminState;
use crate::policy::LoadError;

#[derive(Default)]
pub(super) struct Synced {
    /// The version installed: the last state read from Redis that validated here.
    pub(super) version: Option<u64>,
    /// Its epoch: with `version`, the state's identity (versions alone repeat once Redis
    /// lost the state and a replica wrote it back; the write-back starts a new epoch).
    pub(super) epoch: String,
    /// That state: file reloads combine the files with it.
    pub(super) state: Option<AdminState>,
    /// Why the last sync from Redis failed (shown on `/readyz`).
    pub(super) error: Option<String>,
    /// A state read from Redis that does not install here (this replica is out of
    /// step: `/readyz` answers 503 until a state installs).
    pub(super) rejected: Option<Rejected>,
}

/// A state in Redis that failed to install on this replica.
pub(super) struct Rejected {
    pub(super) version: u64,
    pub(super) epoch: String,
    /// The load errors, as `fedbroker check` prints them.
    pub(super) reason: String,
    /// Whether to try it again at the next sync: set by a file reload that succeeded
    /// (the files may have been what kept it out). Otherwise the same version is not
    /// loaded again every second.
    pub(super) retry: bool,
}

impl Admin {
    pub(super) fn synced(&self) -> std::sync::MutexGuard<'_, Synced> {
        self.synced.lock().unwrap_or_else(|e| e.into_inner())
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
    pub fn spawn_sync(self: &Arc<Self>) {
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
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut was_ok: Option<bool> = None;
            loop {
                let Some(admin) = weak.upgrade() else { return };
                let result = admin.sync().await;
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
                tokio::select! {
                    _ = tokio::time::sleep(SYNC_INTERVAL) => {}
                    _ = changed.notified() => {}
                }
            }
        });
    }

    /// One sync: read the version in Redis and, when it differs from the one this
    /// replica runs, read the state and install it.
    pub(super) async fn sync(self: &Arc<Self>) -> Result<(), StoreError> {
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
        let admin = self.clone();
        tokio::task::spawn_blocking(move || admin.install_synced(id, state))
            .await
            .map_err(|e| StoreError::Unavailable(format!("installing the admin state failed: {e}")))
    }

    /// Install a state read from Redis, validated with the files as they are now (under
    /// the install lock, like a reload). On error this replica is out of step: the last
    /// state that installed keeps serving (and file reloads keep applying against it),
    /// the new version is NOT recorded as synced, and `/readyz` answers 503 with the
    /// reason until a state installs.
    pub(super) fn install_synced(&self, id: StateId, state: AdminState) {
        let version = id.version;
        let _installing = self.installing.blocking_lock();
        // A replica whose last load found a name clash loads again even when the state
        // is the one in force: the clash may be gone (and /readyz then says so).
        if self.live.current().admin_state != state || self.live.status().name_clash.is_some() {
            let _loading = self.live.loading();
            let result = match &self.config_path {
                None => Err(LoadError::NoConfigFile),
                Some(path) => crate::config::load_with_admin(path, Some(&state))
                    .map_err(LoadError::from)
                    .and_then(|config| self.install(&config)),
            };
            self.live.record(&result);
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
                    reason: reason.to_string(),
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
    pub(super) async fn fetch(&self, store: &RedisAdminStore) -> Result<Stored, StoreError> {
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
}
