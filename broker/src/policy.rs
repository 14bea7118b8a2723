//! The policy in force: the compiled issuers and rules a request is decided by, and the
//! one way to replace it ([`LivePolicy::install`]), used by file reloads and by the admin
//! API alike. A request takes one `Arc<Policy>` at its start, so it never sees half a
//! reload.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use federation_rules::RuleSet;
use issuers::IssuerRegistry;

use crate::config::{Config, IssuerConfig};
use crate::issuer_keys::{FetchClients, IssuerKeys};
use crate::metrics::Metrics;
use crate::watched::Watched;

/// A registered issuer at run time: its config and its keys.
pub struct Issuer {
    pub config: IssuerConfig,
    pub keys: Arc<IssuerKeys>,
}

/// The part of the state that a reload replaces whole: issuers and rules.
pub struct Policy {
    pub generation: u64,
    pub issuers: IssuerRegistry<Arc<Issuer>>,
    pub rules: Arc<RuleSet>,
    /// Each rule's file and line, in the rules' order.
    pub rule_origins: Arc<[crate::config::RuleOrigin]>,
    /// The admin API's issuers and rules included in this policy.
    pub admin_state: crate::config::AdminState,
    /// The configuration file's issuers and rules (the admin API lists them read-only).
    pub file_items: Arc<crate::config::FileItems>,
}

/// Why a policy cannot be built from a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("issuer {0} is registered twice")]
    DuplicateIssuer(String),
}

/// Why a configuration load (a reload, an admin change, a state read from Redis) did
/// not install.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("no configuration file to reload")]
    NoConfigFile,
    /// Every error of the files, as `fedbroker check` prints them.
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl Policy {
    /// The issuer registered under `name` (issuers are keyed by `iss`; names are unique
    /// too, a configuration that repeats one does not load).
    pub fn issuer_named(&self, name: &str) -> Option<&Arc<Issuer>> {
        self.issuers
            .iter()
            .map(|(_, i)| i)
            .find(|i| i.config.name == name)
    }

    /// Issuers from config, reusing the key caches of `previous` issuers whose key
    /// source did not change (so a reload does not refetch every JWKS).
    pub fn build(
        generation: u64,
        config: &Config,
        previous: Option<&Policy>,
        clients: &FetchClients,
        metrics: &Arc<Metrics>,
        background: bool,
    ) -> Result<Policy, PolicyError> {
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
                .map_err(|_| PolicyError::DuplicateIssuer(ic.name.clone()))?;
        }
        Ok(Policy {
            generation,
            issuers: registry,
            rules: config.rules.clone(),
            rule_origins: config.rule_origins.clone(),
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

/// The policy in force, and the one way to swap in a new one.
pub struct LivePolicy {
    /// Its lock is held only to clone or swap the `Arc`, never while a policy is built,
    /// so requests and `/readyz` never wait for a reload.
    policy: RwLock<Arc<Policy>>,
    /// Serialises [`LivePolicy::install`]: held while a new policy is built and swapped.
    installing: Mutex<()>,
    /// How many configuration loads (file reloads, admin changes, admin states read
    /// from Redis) are running now: `/readyz` shows `rules.reloading`.
    loads: AtomicUsize,
    status: RwLock<ReloadStatus>,
    clients: FetchClients,
    metrics: Arc<Metrics>,
    /// The config file, when there is one: what the reload watcher watches follows it.
    config_path: Option<PathBuf>,
    /// What the reload watcher watches: from the config installed last.
    watched: RwLock<Watched>,
}

impl LivePolicy {
    /// `policy` (generation 1) in force, loaded from `config` at `config_path`.
    pub fn new(
        policy: Policy,
        config: &Config,
        config_path: Option<PathBuf>,
        clients: FetchClients,
        metrics: Arc<Metrics>,
    ) -> LivePolicy {
        metrics.set_rules_loaded(config.rules.len());
        metrics.set_generation(policy.generation);
        let watched = Watched::from_config(config_path.as_deref(), config);
        LivePolicy {
            status: RwLock::new(ReloadStatus {
                generation: policy.generation,
                last_error: None,
                name_clash: None,
            }),
            policy: RwLock::new(Arc::new(policy)),
            installing: Mutex::new(()),
            loads: AtomicUsize::new(0),
            clients,
            metrics,
            config_path,
            watched: RwLock::new(watched),
        }
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
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

    pub fn status(&self) -> ReloadStatus {
        self.status.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Paths whose change should trigger a reload: the config file, rule-file globs and
    /// `jwks_file`s, resolved against the config file's directory.
    pub fn watched(&self) -> Watched {
        self.watched.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swap in the issuers and rules of `config` (already validated) as a new policy.
    pub fn install(&self, config: &Config) -> Result<u64, LoadError> {
        // Two installs never interleave; the policy itself stays readable meanwhile
        // (its lock is taken only for the swap).
        let installing = self.installing.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.current();
        let generation = previous.generation + 1;
        let policy = Policy::build(
            generation,
            config,
            Some(&previous),
            &self.clients,
            &self.metrics,
            true,
        )?;
        self.metrics.set_rules_loaded(policy.rules.len());
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        drop(previous);
        drop(installing);
        // Installed anyway: a warning is not an error (`fedbroker check` prints the same).
        for warning in config.warnings() {
            tracing::warn!(generation, kind = warning.kind, target = %warning.target, "{warning}");
        }
        if let Some(path) = &self.config_path {
            *self.watched.write().unwrap_or_else(|e| e.into_inner()) =
                Watched::from_config(Some(path), config);
        }
        Ok(generation)
    }

    /// Record the outcome of a reload or an admin change in `/readyz` and metrics.
    pub fn record(&self, result: &Result<u64, LoadError>) {
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
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
                let e = e.to_string();
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
                status.last_error = Some(e);
            }
        }
    }
}

/// Marks a configuration load as running; see [`LivePolicy::loading`].
pub struct LoadGuard<'a>(&'a AtomicUsize);

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
