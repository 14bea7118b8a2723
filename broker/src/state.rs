//! The broker's shared state ([`AppState`]), how it is built from a configuration, and
//! the share of it each route group takes (axum `FromRef` substates): a route group
//! names only what it needs, never the whole state.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::FromRef;

use crate::admin::Admin;
use crate::audit::AuditLog;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{AdminState, Config, OnUnavailable, ReplayBackend, ServerConfig};
use crate::credentials::Clouds;
use crate::dev::DevIssuer;
use crate::exchange::{DpopNonces, TokenState};
use crate::issuer_keys::FetchClients;
use crate::metrics::Metrics;
use crate::policy::{LivePolicy, LoadError, Policy, PolicyError, ReloadStatus};
use crate::replay::{MemoryReplayStore, RedisReplayStore, ReplayStore};
use crate::signing::Signer;
use crate::tls::TlsServer;
use crate::watched::Watched;

/// Everything a request needs; shared, immutable apart from caches and the policy.
pub struct AppState {
    pub server: Arc<ServerConfig>,
    /// The issuers and rules in force, and the one way to replace them.
    pub live: Arc<LivePolicy>,
    /// The config file, when there is one: reloads read it again.
    pub config_path: Option<PathBuf>,
    /// The settings the broker started with that change only by a restart (not the
    /// whole configuration: its issuers and rules would outlive every reload).
    startup: RestartOnly,
    pub signer: Arc<Signer>,
    pub replay: Arc<dyn ReplayStore>,
    pub on_unavailable: OnUnavailable,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
    /// The clients of the clouds that native credentials come from.
    pub clouds: Arc<Clouds>,
    pub dev: Option<Arc<DevIssuer>>,
    pub admin: Option<Arc<Admin>>,
    /// The broker's one clock.
    pub clock: SharedClock,
    /// `server.tls`: the public listener's TLS; `None`: plain HTTP.
    pub tls: Option<Arc<TlsServer>>,
    /// The admin listener's TLS (`admin.tls`, else `server.tls`), when it has a
    /// listener of its own.
    pub admin_tls: Option<Arc<TlsServer>>,
    /// `limits:`, counted in Redis with `replay.backend: redis`.
    pub limiter: Arc<crate::limits::Limiter>,
    /// `server.dpop.nonce`: the secret DPoP nonces are made with.
    pub dpop_nonces: Option<Arc<DpopNonces>>,
    /// How often each rule decided since start.
    pub hits: Arc<crate::hits::RuleHits>,
    /// `console:`, when enabled: its sessions' key and settings.
    pub console: Option<Arc<crate::console::Console>>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("replay store: {0}")]
    Replay(#[from] crate::replay::ReplayError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("no random secret could be made (DPoP nonces, console sessions)")]
    NonceSecret,
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
        AppState::build_with_clock(config, config_path, signer, dev, SystemClock::shared())
    }

    /// [`AppState::build`] with the clock every part of the broker reads the time from.
    pub fn build_with_clock(
        config: Config,
        config_path: Option<PathBuf>,
        signer: Signer,
        dev: Option<Arc<DevIssuer>>,
        clock: SharedClock,
    ) -> Result<Arc<AppState>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let tls = match &config.server.tls {
            Some(t) => Some(Arc::new(TlsServer::load(t, "public")?)),
            None => None,
        };
        let admin_tls = match config.admin.as_ref().filter(|a| a.listen.is_some()) {
            Some(a) => match a.tls.as_ref().or(config.server.tls.as_ref()) {
                Some(t) => Some(Arc::new(TlsServer::load(t, "admin")?)),
                None => None,
            },
            None => None,
        };
        let clients = FetchClients::new()?;
        let policy = Policy::build(1, &config, None, &clients, &metrics, true)?;
        let audit = match &config.audit.path {
            Some(p) => AuditLog::file(p, &metrics).map_err(|source| StartError::Audit {
                path: p.display().to_string(),
                source,
            })?,
            None => AuditLog::stderr(&metrics).map_err(|source| StartError::Audit {
                path: "stderr".into(),
                source,
            })?,
        };
        let audit = Arc::new(audit);
        let live = Arc::new(LivePolicy::new(
            policy,
            &config,
            config_path.clone(),
            clients,
            metrics.clone(),
        ));
        let replay = build_replay_store(&config, &metrics)?;
        let admin = match &config.admin {
            Some(a) => Some(Arc::new(Admin::new(
                a,
                &config.replay.backend,
                live.clone(),
                audit.clone(),
                config_path.clone(),
                config.server.max_body_bytes,
                clock.clone(),
            )?)),
            None => None,
        };
        // With Redis, the admin state comes from there: read now and kept in line.
        if let Some(admin) = &admin {
            admin.spawn_sync();
        }
        let limiter = Arc::new(match &config.replay.backend {
            ReplayBackend::Redis(redis) if config.limits != Default::default() => {
                crate::limits::Limiter::shared(
                    config.limits,
                    crate::replay::redis_conn::RedisConn::new(redis, None)?,
                    redis.key_prefix.clone(),
                    metrics.clone(),
                )
            }
            _ => crate::limits::Limiter::local(config.limits, metrics.clone()),
        });
        let dpop_nonces = match &config.server.dpop_nonce {
            Some(n) => {
                tracing::info!(
                    lifetime_secs = n.lifetime,
                    secret = if n.secret.is_some() {
                        "server.dpop.nonce.secret_file"
                    } else {
                        "random, this process only"
                    },
                    "DPoP proofs at /token must carry a server nonce"
                );
                Some(Arc::new(DpopNonces::of(n).map_err(|_| StartError::NonceSecret)?))
            }
            None => None,
        };
        let console = match (&config.console, &config.admin) {
            (Some(c), Some(a)) => {
                audit.enable_tap();
                Some(Arc::new(
                    crate::console::Console::new(c, a).map_err(|_| StartError::NonceSecret)?,
                ))
            }
            _ => None,
        };
        let config_cloud_timeout = config.server.cloud_timeout;
        Ok(Arc::new(AppState {
            server: Arc::new(config.server.clone()),
            live,
            config_path,
            on_unavailable: config.replay.on_unavailable,
            startup: RestartOnly::of(&config),
            signer: Arc::new(signer),
            replay,
            audit,
            clouds: Arc::new(Clouds::new(config_cloud_timeout, metrics.clone())),
            metrics,
            dev,
            admin,
            clock,
            tls,
            admin_tls,
            limiter,
            dpop_nonces,
            hits: Arc::default(),
            console,
        }))
    }

    /// `signing:` as the broker started with it (the keys page lists its key directory).
    pub fn signing(&self) -> &crate::config::SigningConfig {
        &self.startup.signing
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.public_url)
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.live.current()
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.live.status()
    }

    /// Paths whose change should trigger a reload (see [`LivePolicy::watched`]).
    pub fn watched(&self) -> Watched {
        let mut watched = self.live.watched();
        for tls in self.tls.iter().chain(self.admin_tls.iter()) {
            for file in tls.files() {
                watched.add_file(file);
            }
        }
        watched
    }

    /// Read the listeners' TLS files again (see [`crate::tls`]).
    pub fn reload_tls(&self) {
        for tls in self.tls.iter().chain(self.admin_tls.iter()) {
            tls.reload();
        }
    }

    /// Read the config and rule files again and swap in the new issuers and rules whole.
    /// On any error the old policy keeps serving and every error is logged.
    pub fn reload(&self) -> Result<u64, LoadError> {
        let Some(path) = &self.config_path else {
            return Err(LoadError::NoConfigFile);
        };
        let _loading = self.live.loading();
        let load = |admin_state: Option<&AdminState>| {
            let config = crate::config::load_with_admin(path, admin_state)?;
            self.warn_on_restart_only_changes(&config);
            match &self.admin {
                Some(admin) => admin.install(&config),
                None => self.live.install(&config),
            }
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
        self.live.record(&result);
        if let Some(admin) = &self.admin {
            admin.reloaded(result.is_ok());
        }
        result
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
            || old.server.tls != new.server.tls
            || old.server.dpop_nonce != new.server.dpop_nonce
            || old.signing.algorithm != new.signing.algorithm
            || old.signing.key_dir != new.signing.key_dir
            || old.signing.active_kid != new.signing.active_kid
            || old.signing.kms != new.signing.kms
            || old.audit.path != new.audit.path
            || old.limits != new.limits
            || old.telemetry != new.telemetry
            || old.console != new.console
            || old.replay != new.replay;
        if changed {
            tracing::warn!(
                "server, signing, replay, audit, limits, telemetry or console settings changed: they take effect only after a restart"
            );
        }
    }
}

/// The settings of a configuration that a reload does not change.
struct RestartOnly {
    server: ServerConfig,
    signing: crate::config::SigningConfig,
    audit: crate::config::AuditConfig,
    replay: crate::config::ReplayConfig,
    limits: crate::limits::LimitsConfig,
    telemetry: crate::config::TelemetryConfig,
    console: Option<crate::config::ConsoleConfig>,
}

impl RestartOnly {
    fn of(config: &Config) -> RestartOnly {
        RestartOnly {
            server: config.server.clone(),
            signing: config.signing.clone(),
            audit: config.audit.clone(),
            replay: config.replay.clone(),
            limits: config.limits,
            telemetry: config.telemetry.clone(),
            console: config.console.clone(),
        }
    }
}

/// `POST /token`'s share.
impl FromRef<Arc<AppState>> for TokenState {
    fn from_ref(st: &Arc<AppState>) -> TokenState {
        TokenState {
            server: st.server.clone(),
            live: st.live.clone(),
            signer: st.signer.clone(),
            replay: st.replay.clone(),
            on_unavailable: st.on_unavailable,
            audit: st.audit.clone(),
            metrics: st.metrics.clone(),
            clouds: st.clouds.clone(),
            clock: st.clock.clone(),
            limiter: st.limiter.clone(),
            dpop_nonces: st.dpop_nonces.clone(),
            hits: st.hits.clone(),
        }
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
