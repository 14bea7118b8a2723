//! One admin change: read the state, check the preconditions, validate, store (with a
//! compare-and-set on Redis), install, audit every write attempt.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::etag::{digest, preconditions, with_etag};
use super::routes::with_warnings;
use super::sync::Rejected;
use super::{
    Admin, AdminError, Kind, LATE_RESOLVE_LIMIT, MAX_ATTEMPTS, RESOLVE_PAUSE, RESOLVE_WINDOW, SYNC_INTERVAL,
    problem, store_failed,
};

use crate::admin_store::{AdminStore, RedisAdminStore, Resolved, Saved, StateId, StoreError, Stored};
use crate::audit::rfc3339;
use crate::config::{AdminState, Config};

impl Admin {
    /// The state a change starts from: with Redis, read from Redis (with its identity);
    /// with a file, the state in force.
    pub(super) async fn current(&self) -> Result<(Option<Stored>, AdminState), AdminError> {
        match &self.store {
            AdminStore::File(_) => Ok((None, self.live.current().admin_state.clone())),
            AdminStore::Redis(store) => match self.fetch(store).await {
                Ok(stored) => {
                    let state = stored.state.clone();
                    Ok((Some(stored), state))
                }
                Err(e) => Err(store_failed(e)),
            },
        }
    }

    /// After a write whose reply was lost (`error`): read its change id back until Redis
    /// answers, for [`RESOLVE_WINDOW`] at most. `None`: still unknown.
    pub(super) async fn settle(
        store: &RedisAdminStore,
        change_id: &str,
        error: &StoreError,
    ) -> Option<Resolved> {
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
    pub(super) fn settle_later(self: &Arc<Self>, change_id: String, audit: ChangeAudit) {
        let AdminStore::Redis(store) = &self.store else {
            return;
        };
        let (store, weak) = (Arc::downgrade(store), Arc::downgrade(self));
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + LATE_RESOLVE_LIMIT;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(SYNC_INTERVAL).await;
                let Some(store) = store.upgrade() else { return };
                let Ok(resolved) = store.resolve(&change_id).await else {
                    continue;
                };
                let Some(admin) = weak.upgrade() else { return };
                let outcome = match resolved {
                    Resolved::Applied => "applied",
                    Resolved::NotApplied => "rejected",
                };
                tracing::info!(
                    change_id,
                    outcome,
                    "the outcome of an earlier admin write is now known"
                );
                audit.record_resolved(&admin, &change_id, outcome);
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
    pub(super) async fn commit(
        self: &Arc<Self>,
        base: Option<Stored>,
        next: AdminState,
        audit: &ChangeAudit,
        validate: impl FnOnce() -> Result<Config, AdminError> + Send + 'static,
    ) -> Result<Option<Vec<federation_rules::PolicyWarning>>, AdminError> {
        let _installing = self.installing.lock().await;
        let _loading = self.live.loading();
        let config = match tokio::task::spawn_blocking(validate).await {
            Ok(Ok(config)) => config,
            Ok(Err(r)) => return Err(r),
            Err(_) => return Err(AdminError::NotApplied),
        };
        let warnings = config.warnings();
        let written = match &self.store {
            AdminStore::File(_) => None,
            AdminStore::Redis(store) => {
                let base = base.unwrap_or_default();
                let id = RedisAdminStore::next_id(&base);
                let change_id = crate::admin_store::random_id();
                match store.write(&base, &id, &next, &change_id).await {
                    Ok(Saved::Written(id)) => {
                        audit.record(self, "applied", Some(&change_id), Some(&id), None);
                        Some(id)
                    }
                    Ok(Saved::Conflict | Saved::Cancelled) => {
                        audit.record(
                            self,
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
                                self,
                                "applied",
                                Some(&change_id),
                                Some(&id),
                                Some("the store's reply was lost; read back: applied"),
                            );
                            Some(id)
                        }
                        Some(Resolved::NotApplied) => {
                            audit.record(
                                self,
                                "rejected",
                                Some(&change_id),
                                None,
                                Some("the store's reply was lost; read back: not applied (and cancelled)"),
                            );
                            return Err(AdminError::StoreTimedOut);
                        }
                        None => {
                            audit.record(
                                self,
                                "unknown",
                                Some(&change_id),
                                None,
                                Some("the store did not answer, nor the read-back of the change"),
                            );
                            self.settle_later(change_id, audit.clone());
                            return Err(AdminError::OutcomeUnknown);
                        }
                    },
                }
            }
        };
        let (admin, audit) = (self.clone(), audit.clone());
        let installed = tokio::task::spawn_blocking(move || {
            if let AdminStore::File(path) = &admin.store {
                if let Err(e) = next.write(path) {
                    tracing::error!(path = %path.display(), error = %e, "writing the admin state failed");
                    audit.record(
                        &admin,
                        "rejected",
                        None,
                        None,
                        Some("the state file could not be written"),
                    );
                    return Err(AdminError::NotStored);
                }
                audit.record(&admin, "applied", None, None, None);
            }
            let result = admin.install(&config);
            admin.live.record(&result);
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
                            reason: reason.to_string(),
                            retry: false,
                        })
                    }
                }
            }
            result.map_err(AdminError::Install)
        })
        .await;
        match installed {
            Ok(Ok(_)) => Ok(Some(warnings)),
            Ok(Err(r)) => Err(r),
            Err(_) => Err(AdminError::NotApplied),
        }
    }

    /// The items of `kind` to list or show: with Redis, as Redis has them now.
    pub(super) async fn items(&self) -> Result<AdminState, AdminError> {
        match &self.store {
            AdminStore::File(_) => Ok(self.live.current().admin_state.clone()),
            AdminStore::Redis(store) => {
                let _write = self.write.lock().await;
                self.fetch(store)
                    .await
                    .map(|stored| stored.state)
                    .map_err(store_failed)
            }
        }
    }
}

/// Validate `next` with everything else (the same compile as `check`). Deleting issuer
/// `in_use` is refused (409) while a rule of `current` still uses it.
pub(super) fn validate(
    admin: &Admin,
    current: &AdminState,
    next: &AdminState,
    in_use: Option<&str>,
) -> Result<Config, AdminError> {
    let Some(path) = &admin.config_path else {
        return Err(AdminError::NoConfigFile);
    };
    if let Some(name) = in_use {
        let rules = match crate::config::load_with_admin(path, Some(current)) {
            Ok(config) => config.rules,
            Err(_) => admin.live.current().rules.clone(),
        };
        let users = rules.rules_using_issuer(name);
        if !users.is_empty() {
            return Err(AdminError::InUse {
                issuer: name.to_string(),
                rules: users.iter().map(|r| r.to_string()).collect(),
            });
        }
    }
    crate::config::load_with_admin(path, Some(next))
        .map_err(|errors| AdminError::Invalid(errors.0.iter().map(problem).collect()))
}

/// What a request does to one item.
pub(super) enum Op {
    Put(Value),
    Delete,
}

/// Read the current state (from Redis when it is there), check the preconditions,
/// validate, store and install; again from the new state when another replica changed
/// it in the meantime.
pub(super) async fn change(
    admin: Arc<Admin>,
    who: String,
    headers: HeaderMap,
    kind: Kind,
    name: String,
    op: Op,
) -> Result<Response, AdminError> {
    let _write = admin.write.lock().await;
    for attempt in 0..MAX_ATTEMPTS {
        let (base, current) = admin.current().await?;
        let before = kind.map(&current).get(&name).cloned();
        if matches!(op, Op::Delete) && before.is_none() {
            return Err(AdminError::NothingToDelete(name));
        }
        if let Err(r) = preconditions(&headers, before.as_ref()) {
            // RFC 9110 §13.1.1/§13.1.2: a change that has already succeeded (the item is
            // exactly what is asked for) may answer 2xx. A client retrying after a lost
            // reply or a 503 "outcome unknown" so learns that its write applied.
            if let (Op::Put(value), Some(now)) = (&op, &before)
                && value == now
            {
                return Ok(with_etag(StatusCode::OK, now));
            }
            return Err(r);
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
        let (admin2, next2) = (admin.clone(), next.clone());
        // Validated inside `commit`, under the install lock, against the files as they
        // are when the change is installed.
        let validation = move || validate(&admin2, &current, &next2, in_use.as_deref());
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
        let Some(warnings) = admin.commit(base, next, &audit, validation).await? else {
            tokio::time::sleep(conflict_pause(attempt)).await;
            continue;
        };
        return Ok(match op {
            Op::Put(value) => {
                let status = if before.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                with_warnings(with_etag(status, &value), &warnings)
            }
            Op::Delete => StatusCode::NO_CONTENT.into_response(),
        });
    }
    Err(AdminError::KeptChanging)
}

/// The pause before computing a change again after losing the compare-and-set: random
/// ("full jitter") up to 5 ms doubled per lost attempt, at most 320 ms.
pub(super) fn conflict_pause(attempt: u32) -> Duration {
    let ceiling_ms = 5u64 << attempt.min(6);
    let mut byte = [0u8; 2];
    let random = match aws_lc_rs::rand::fill(&mut byte) {
        Ok(()) => u64::from(u16::from_le_bytes(byte)),
        Err(_) => 0x7fff,
    };
    Duration::from_micros(random * ceiling_ms * 1000 / 0x1_0000)
}

/// What the audit says of a change; one line per write attempt ([`Admin::commit`]).
#[derive(Clone)]
pub(super) struct ChangeAudit {
    pub(super) who: String,
    pub(super) action: &'static str,
    pub(super) kind: Kind,
    pub(super) name: String,
    pub(super) before: Option<String>,
    pub(super) after: Option<String>,
}

impl ChangeAudit {
    /// One `admin_change` line: `outcome` is `applied`, `rejected` or `unknown`; with
    /// Redis, `change_id` is the write's random id, and an applied write names the
    /// state's new `version` and `epoch`.
    pub(super) fn record(
        &self,
        admin: &Admin,
        outcome: &str,
        change_id: Option<&str>,
        id: Option<&StateId>,
        reason: Option<&str>,
    ) {
        let mut line = json!({
            "time": rfc3339(admin.clock.now()),
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
        admin.audit.record_value(&line);
    }

    /// The outcome of a write answered as `unknown`, once it is known.
    pub(super) fn record_resolved(&self, admin: &Admin, change_id: &str, outcome: &str) {
        admin.audit.record_value(&json!({
            "time": rfc3339(admin.clock.now()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_pauses_are_bounded_and_grow() {
        for attempt in 0..MAX_ATTEMPTS {
            let ceiling = Duration::from_millis(5 << attempt.min(6));
            assert!(conflict_pause(attempt) < ceiling, "{attempt}");
        }
        assert!(Duration::from_millis(5 << (MAX_ATTEMPTS - 1).min(6)) <= Duration::from_millis(320));
    }
}
