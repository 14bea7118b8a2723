//! The HTTP surface: state, router, and `serve(listener, state, shutdown)`.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use federation_rules::RuleSet;
use issuers::IssuerRegistry;
use serde_json::json;
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::config::{Config, IssuerConfig, OnUnavailable, ReplayBackend, ServerConfig};
use crate::dev::DevIssuer;
use crate::exchange;
use crate::issuer_keys::{FetchClients, IssuerKeys};
use crate::metrics::Metrics;
use crate::replay::{MemoryReplayStore, RedisReplayStore, ReplayStore};
use crate::signing::Signer;

/// A registered issuer at run time: its config and its keys.
pub struct Issuer {
    pub config: IssuerConfig,
    pub keys: Arc<IssuerKeys>,
}

/// The part of the state that a reload replaces whole: issuers and rules. A request
/// takes one `Arc<Policy>` at its start, so it never sees half a reload.
pub struct Policy {
    pub generation: u64,
    pub issuers: IssuerRegistry<Arc<Issuer>>,
    pub rules: Arc<RuleSet>,
    /// The admin API's issuers and rules included in this policy.
    pub admin_state: crate::config::AdminState,
    /// The configuration file's issuers and rules (the admin API lists them read-only).
    pub file_items: Arc<crate::config::FileItems>,
}

impl Policy {
    /// Issuers from config, reusing the key caches of `previous` issuers whose key
    /// source did not change (so a reload does not refetch every JWKS).
    pub fn build(
        generation: u64,
        config: &Config,
        previous: Option<&Policy>,
        clients: &FetchClients,
        metrics: &Arc<Metrics>,
        background: bool,
    ) -> Result<Policy, StartError> {
        let mut registry = IssuerRegistry::new();
        for ic in &config.issuers {
            let reused = previous
                .and_then(|p| p.issuers.get(&ic.policy.issuer))
                .filter(|old| old.keys.same_source(ic))
                .map(|old| old.keys.clone());
            let keys = match reused {
                Some(k) => k,
                None => {
                    let k = Arc::new(IssuerKeys::new(ic, clients, metrics.clone()));
                    if background {
                        k.spawn_background();
                    }
                    k
                }
            };
            let issuer = Arc::new(Issuer {
                config: ic.clone(),
                keys,
            });
            registry
                .insert(ic.policy.issuer.clone(), issuer)
                .map_err(|_| StartError::DuplicateIssuer(ic.name.clone()))?;
        }
        Ok(Policy {
            generation,
            issuers: registry,
            rules: config.rules.clone(),
            admin_state: config.admin_state.clone(),
            file_items: config.file_items.clone(),
        })
    }
}

/// The outcome of the last reload, for `/readyz` and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub generation: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A name both the configuration file and the admin API's state define, found by
    /// the last load; kept until a load succeeds. `/readyz` answers 503 meanwhile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_clash: Option<String>,
}

/// Everything a request needs; shared, immutable apart from caches and the policy.
pub struct AppState {
    pub server: ServerConfig,
    /// The policy in force. Its lock is held only to clone or swap the `Arc`, never
    /// while a policy is built, so requests and `/readyz` never wait for a reload.
    policy: RwLock<Arc<Policy>>,
    /// Serialises [`AppState::install`]: held while a new policy is built and swapped.
    installing: Mutex<()>,
    /// How many configuration loads (file reloads, admin changes, admin states read
    /// from Redis) are running now: `/readyz` shows `rules.reloading`.
    loads: AtomicUsize,
    reload_status: RwLock<ReloadStatus>,
    /// The config file, when there is one: reloads read it again.
    pub config_path: Option<PathBuf>,
    startup: Config,
    /// What the reload watcher watches: from the config last loaded successfully.
    watched: RwLock<crate::reload::Watched>,
    clients: FetchClients,
    pub signer: Arc<Signer>,
    pub replay: Arc<dyn ReplayStore>,
    pub on_unavailable: OnUnavailable,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
    pub dev: Option<Arc<DevIssuer>>,
    pub admin: Option<Arc<crate::admin::Admin>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("signing keys: {0}")]
    Signing(#[from] crate::signing::SigningError),
    #[error("audit log {path}: {source}")]
    Audit {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("issuer {0} is registered twice")]
    DuplicateIssuer(String),
    #[error("replay store: {0}")]
    Replay(#[from] crate::replay::ReplayError),
}

impl AppState {
    /// Build the state from a validated config. Starts background key fetching for
    /// remote issuers (the broker starts even when an issuer is unreachable).
    pub fn build(
        config: Config,
        config_path: Option<PathBuf>,
        signer: Signer,
        dev: Option<Arc<DevIssuer>>,
    ) -> Result<Arc<AppState>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let clients = FetchClients::new()?;
        let policy = Policy::build(1, &config, None, &clients, &metrics, true)?;
        let audit = match &config.audit.path {
            Some(p) => AuditLog::file(p).map_err(|source| StartError::Audit {
                path: p.display().to_string(),
                source,
            })?,
            None => AuditLog::stderr(),
        };
        metrics.set_rules_loaded(config.rules.len());
        metrics.set_generation(1);
        let replay = build_replay_store(&config, &metrics)?;
        let watched = crate::reload::Watched::from_config(config_path.as_deref(), &config);
        let admin = match &config.admin {
            Some(a) => Some(Arc::new(crate::admin::Admin::new(a, &config.replay.backend)?)),
            None => None,
        };
        let state = Arc::new(AppState {
            server: config.server.clone(),
            policy: RwLock::new(Arc::new(policy)),
            installing: Mutex::new(()),
            loads: AtomicUsize::new(0),
            reload_status: RwLock::new(ReloadStatus {
                generation: 1,
                last_error: None,
                name_clash: None,
            }),
            config_path,
            on_unavailable: config.replay.on_unavailable,
            watched: RwLock::new(watched),
            startup: config,
            clients,
            signer: Arc::new(signer),
            replay,
            audit: Arc::new(audit),
            metrics,
            dev,
            admin,
        });
        // With Redis, the admin state comes from there: read now and kept in line.
        if let Some(admin) = &state.admin {
            admin.spawn_sync(&state);
        }
        Ok(state)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.public_url)
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Count a configuration load as running until the guard is dropped (for
    /// `/readyz`'s `rules.reloading`).
    pub fn loading(&self) -> LoadGuard<'_> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        LoadGuard(&self.loads)
    }

    /// Whether a configuration load is running now.
    pub fn is_loading(&self) -> bool {
        self.loads.load(Ordering::SeqCst) > 0
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload_status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Read the config and rule files again and swap in the new issuers and rules whole.
    /// On any error the old policy keeps serving and every error is logged.
    pub fn reload(&self) -> Result<u64, String> {
        let Some(path) = &self.config_path else {
            return Err("no configuration file to reload".into());
        };
        let _loading = self.loading();
        let load = |admin: Option<&crate::config::AdminState>| {
            crate::config::load_with_admin(path, admin)
                .map_err(|e| e.to_string())
                .and_then(|config| {
                    self.warn_on_restart_only_changes(&config);
                    self.install(&config)
                })
        };
        // The admin state: the state file's, or the one last read from Redis.
        let result = match &self.admin {
            Some(admin) => admin.with_reload_state(load),
            None => load(None),
        };
        if let (Err(_), Some(admin)) = (&result, &self.admin) {
            // A token removed from admin.tokens_file stops working even when another
            // file keeps the reload from succeeding.
            admin.revoke_removed_tokens();
        }
        self.record_reload(&result);
        if let Some(admin) = &self.admin {
            admin.reloaded(result.is_ok());
        }
        result
    }

    /// Swap in the issuers and rules of `config` (already validated) as a new policy.
    pub fn install(&self, config: &Config) -> Result<u64, String> {
        // Two installs never interleave; the policy itself stays readable meanwhile
        // (its lock is taken only for the swap).
        let installing = self.installing.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.policy();
        let generation = previous.generation + 1;
        let policy = Policy::build(
            generation,
            config,
            Some(&previous),
            &self.clients,
            &self.metrics,
            true,
        )
        .map_err(|e| e.to_string())?;
        self.metrics.set_rules_loaded(policy.rules.len());
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        drop(previous);
        drop(installing);
        // Installed anyway: a warning is not an error (`fedbroker check` prints the same).
        for warning in config.rules.warnings() {
            tracing::warn!(generation, kind = warning.kind, target = %warning.target, "{warning}");
        }
        // `admin.tokens_file` is read at every load: its tokens now are the valid ones.
        if let (Some(admin), Some(settings)) = (&self.admin, &config.admin) {
            admin.set_tokens(settings);
        }
        if let Some(path) = &self.config_path {
            *self.watched.write().unwrap_or_else(|e| e.into_inner()) =
                crate::reload::Watched::from_config(Some(path), config);
        }
        Ok(generation)
    }

    /// Record the outcome of a reload or an admin change in `/readyz` and metrics.
    pub fn record_reload(&self, result: &Result<u64, String>) {
        let mut status = self.reload_status.write().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(generation) => {
                status.generation = *generation;
                status.last_error = None;
                status.name_clash = None;
                self.metrics.set_generation(*generation);
                self.metrics.reload(true);
                tracing::info!(generation, "configuration reloaded");
            }
            Err(e) => {
                status.last_error = Some(e.clone());
                self.metrics.reload(false);
                let clashes: Vec<&str> = e.lines().filter(|l| crate::config::is_name_clash(l)).collect();
                if !clashes.is_empty() {
                    status.name_clash = Some(clashes.join("\n"));
                }
                // Not "the previous set keeps serving": at a replica's first admin sync
                // there is no previous admin state, only the files' items.
                for line in e.lines() {
                    tracing::error!(
                        error = %line,
                        generation = status.generation,
                        "loading the configuration failed; the issuers and rules in force (generation above) are unchanged"
                    );
                }
                if !clashes.is_empty() {
                    tracing::error!(
                        "a name is defined both in the configuration and through the admin API: /readyz answers 503 until a load succeeds"
                    );
                }
            }
        }
    }

    fn warn_on_restart_only_changes(&self, new: &Config) {
        let old = &self.startup;
        let changed = old.server.listen != new.server.listen
            || old.server.public_url != new.server.public_url
            || old.server.max_body_bytes != new.server.max_body_bytes
            // (`clock_skew` is not among them: issuers take it at every reload, and
            // replay marks follow the skew each request was verified with.)
            || old.server.max_issued_lifetime != new.server.max_issued_lifetime
            || old.server.limits != new.server.limits
            || old.signing.algorithm != new.signing.algorithm
            || old.signing.key_dir != new.signing.key_dir
            || old.signing.active_kid != new.signing.active_kid
            || old.audit.path != new.audit.path
            || old.replay != new.replay;
        if changed {
            tracing::warn!(
                "server, signing, replay or audit settings changed: they take effect only after a restart"
            );
        }
    }

    /// Paths whose change should trigger a reload: the config file, rule-file globs and
    /// `jwks_file`s, resolved against the config file's directory.
    pub fn watched(&self) -> crate::reload::Watched {
        self.watched.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Marks a configuration load as running; see [`AppState::loading`].
pub struct LoadGuard<'a>(&'a AtomicUsize);

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The configured replay store. Redis is not contacted here: the broker starts (and
/// `/readyz` answers 503) while Redis is down, and a background monitor connects.
fn build_replay_store(config: &Config, metrics: &Arc<Metrics>) -> Result<Arc<dyn ReplayStore>, StartError> {
    match &config.replay.backend {
        ReplayBackend::Memory => {
            metrics.set_replay_store_up(true);
            Ok(Arc::new(MemoryReplayStore::new()))
        }
        ReplayBackend::Redis(redis) => {
            let store = Arc::new(RedisReplayStore::new(redis, metrics.clone())?);
            store.spawn_monitor();
            tracing::info!(
                redis = %redis.target.redacted(),
                key_prefix = %redis.key_prefix,
                command_timeout_ms = redis.command_timeout.as_millis() as u64,
                "replay marks are kept in Redis"
            );
            Ok(store)
        }
    }
}

/// Seconds since the epoch: the broker's one clock.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The router, with every path under `public_url`'s path.
pub fn app(state: Arc<AppState>) -> Router {
    let mut inner = Router::new()
        .route("/token", exchange::routes())
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route("/jwks.json", get(jwks))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.dev.is_some() {
        inner = inner.merge(crate::dev::routes());
    }
    if state.admin.as_ref().is_some_and(|a| a.listen.is_none()) {
        inner = inner.merge(crate::admin::routes());
    }
    let inner = inner.with_state(state.clone());
    let prefix = state.server.path_prefix();
    if prefix.is_empty() {
        inner
    } else {
        Router::new().nest(&prefix, inner)
    }
}

/// The router of `admin.listen`, the admin API's own listener: the admin API, plus the
/// public read-only metadata (discovery and JWKS) that the Terraform provider's data
/// sources read from its `endpoint`. Not under `public_url`'s path, like the admin API.
pub fn admin_app(state: Arc<AppState>) -> Router {
    crate::admin::routes()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route("/jwks.json", get(jwks))
        .with_state(state)
}

/// Serve until `shutdown` resolves, then stop accepting and give in-flight requests up
/// to `drain` to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    // Both listeners under the same read timeouts and connection cap (`server:`).
    let limits = state.server.limits;
    // The admin API on a listener of its own, when `admin.listen` says so.
    let admin = match state.admin.as_ref().and_then(|a| a.listen) {
        Some(addr) => {
            let admin_listener = TcpListener::bind(addr).await?;
            tracing::info!(%addr, "admin API listening");
            let router = admin_app(state.clone());
            Some(crate::listener::run(
                admin_listener,
                router,
                limits,
                stopped(rx.clone()),
            ))
        }
        None => None,
    };
    let main = crate::listener::run(listener, app(state), limits, stopped(rx));
    let servers = async move {
        match admin {
            Some(admin) => {
                let (a, b) = tokio::join!(main, admin);
                a.and(b)
            }
            None => main.await,
        }
    };
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = tx.send(true);
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        r = servers => r,
        _ = signal => {
            tracing::warn!(seconds = drain.as_secs(), "drain timeout reached; exiting with requests in flight");
            Ok(())
        }
    }
}

fn cacheable_json(value: serde_json::Value, max_age: u32) -> Response {
    let mut resp = Json(value).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        resp.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    resp
}

async fn discovery(State(st): State<Arc<AppState>>) -> Response {
    let alg = st.signer.algorithm().as_str();
    cacheable_json(
        json!({
            "issuer": st.server.public_url,
            "jwks_uri": st.url("/jwks.json"),
            "token_endpoint": st.url("/token"),
            "grant_types_supported": [exchange::GRANT_TYPE],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [alg],
            "token_endpoint_auth_methods_supported": ["none"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "act", "scope", exchange::SOURCE_ISSUER_CLAIM],
        }),
        3600,
    )
}

async fn jwks(State(st): State<Arc<AppState>>) -> Response {
    cacheable_json(st.signer.jwks().clone(), 300)
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `/readyz`: 200 when this replica can serve as its peers do, else 503 with every
/// reason in `reasons`. Reads snapshots only (the policy's `Arc`, the reload status, the
/// admin sync status), never a lock a reload holds while it loads, so it answers at
/// once while a large reload runs (`rules.reloading` is then true).
async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let replay = st.replay.ping().await;
    let policy = st.policy();
    let mut issuers = HashMap::new();
    for (_, issuer) in policy.issuers.iter() {
        let status = issuer.keys.status();
        st.metrics.set_issuer_keys(&issuer.config.name, status.keys);
        issuers.insert(issuer.config.name.clone(), status);
    }
    let admin = st.admin.as_ref().map(|a| a.readiness());
    let mut reasons: Vec<String> = Vec::new();
    if let Err(e) = &replay {
        reasons.push(format!("the replay store does not answer: {e}"));
    }
    // With Redis, a replica is ready once it has installed the admin state read from
    // there, and not while the latest one does not install here.
    if let Some((admin_reasons, _)) = &admin {
        reasons.extend(admin_reasons.iter().cloned());
    }
    // A name both the configuration and the admin API define: the set this replica
    // serves is not the one it was given.
    if let Some(clash) = st.reload_status().name_clash {
        reasons.extend(clash.lines().map(|l| format!("name clash: {l}")));
    }
    let ready = reasons.is_empty();
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "signing_key": st.signer.kid(),
        "replay": {
            "backend": st.replay.backend(),
            "ok": replay.is_ok(),
            "error": replay.err().map(|e| e.to_string()),
        },
        "rules": {
            "loaded": policy.rules.len(),
            "generation": policy.generation,
            "last_reload_error": st.reload_status().last_error,
            "reloading": st.is_loading(),
        },
        "issuers": issuers,
        "reasons": reasons,
    });
    if let Some((_, admin)) = admin {
        body["admin"] = admin;
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    for (_, issuer) in st.policy().issuers.iter() {
        st.metrics
            .set_issuer_keys(&issuer.config.name, issuer.keys.status().keys);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
