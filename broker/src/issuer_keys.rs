//! Verification keys per issuer: static sets, or discovery + JWKS fetched over HTTP and
//! cached. An unknown `kid` triggers at most one coalesced refetch per cooldown; a failed
//! or malformed fetch never replaces good keys; cached keys are served for up to 24 h.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use issuers::KeySet;
use reqwest::Url;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::config::{IssuerConfig, KeySource, check_fetch_url};
use crate::metrics::Metrics;
use crate::netguard::PublicOnlyResolver;

pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
pub const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
pub const MAX_STALENESS: Duration = Duration::from_secs(24 * 3600);
/// How often keys are refreshed in the background while fetches succeed.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// The two HTTP clients: one that only reaches public addresses over https, and the
/// `danger_allow_insecure` one for development issuers.
#[derive(Clone)]
pub struct FetchClients {
    public: reqwest::Client,
    insecure: reqwest::Client,
}

fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > 3 || !same {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

impl FetchClients {
    pub fn new() -> Result<Self, reqwest::Error> {
        let base = || {
            reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .connect_timeout(FETCH_TIMEOUT)
                .no_proxy()
                .redirect(same_origin_redirects())
                .user_agent(concat!("fedbroker/", env!("CARGO_PKG_VERSION")))
        };
        Ok(FetchClients {
            public: base().https_only(true).dns_resolver(PublicOnlyResolver).build()?,
            insecure: base().build()?,
        })
    }
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    /// The last fetch a request asked for (unknown kid, or no keys): the cooldown counts
    /// from here, not from background refreshes, so a rotation right after a scheduled
    /// fetch is picked up at once.
    last_on_demand: Option<Instant>,
    last_error: Option<String>,
}

enum Source {
    Static(Arc<KeySet>),
    Remote {
        jwks_uri: Option<Url>,
        discovery: Option<Url>,
    },
}

/// Keys of one issuer, shared by every request for it.
pub struct IssuerKeys {
    name: String,
    issuer: String,
    insecure: bool,
    source: Source,
    state: RwLock<State>,
    refresh_lock: Mutex<()>,
    cooldown: Duration,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

/// What `/readyz` and metrics show about an issuer.
#[derive(Debug, Clone, Serialize)]
pub struct IssuerStatus {
    pub keys: usize,
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fetch_age_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl IssuerKeys {
    pub fn new(config: &IssuerConfig, clients: &FetchClients, metrics: Arc<Metrics>) -> Self {
        let source = match &config.keys {
            KeySource::Static(set) | KeySource::File(_, set) => Source::Static(set.clone()),
            KeySource::JwksUri(u) => Source::Remote {
                jwks_uri: Some(u.clone()),
                discovery: None,
            },
            KeySource::Discovery => Source::Remote {
                jwks_uri: None,
                discovery: Url::parse(&format!(
                    "{}/.well-known/openid-configuration",
                    config.policy.issuer.trim_end_matches('/')
                ))
                .ok(),
            },
        };
        let client = if config.danger_allow_insecure {
            clients.insecure.clone()
        } else {
            clients.public.clone()
        };
        IssuerKeys {
            name: config.name.clone(),
            issuer: config.policy.issuer.clone(),
            insecure: config.danger_allow_insecure,
            source,
            state: RwLock::new(State::default()),
            refresh_lock: Mutex::new(()),
            cooldown: REFETCH_COOLDOWN,
            client,
            metrics,
        }
    }

    /// Whether `config` would fetch from the same place as this cache (then a reload
    /// keeps it). Static key sets are never shared: they are rebuilt from the new config.
    pub fn same_source(&self, config: &IssuerConfig) -> bool {
        let Source::Remote { jwks_uri, .. } = &self.source else {
            return false;
        };
        let same_uri = match &config.keys {
            KeySource::Discovery => jwks_uri.is_none(),
            KeySource::JwksUri(u) => jwks_uri.as_ref() == Some(u),
            KeySource::Static(_) | KeySource::File(..) => false,
        };
        same_uri && self.issuer == config.policy.issuer && self.insecure == config.danger_allow_insecure
    }

    pub fn is_remote(&self) -> bool {
        matches!(self.source, Source::Remote { .. })
    }

    /// Cached keys, if any and not older than [`MAX_STALENESS`].
    pub fn current(&self) -> Option<Arc<KeySet>> {
        match &self.source {
            Source::Static(set) => Some(set.clone()),
            Source::Remote { .. } => {
                let state = self.state.read().unwrap_or_else(|e| e.into_inner());
                match (&state.keys, state.fetched_at) {
                    (Some(k), Some(at)) if at.elapsed() <= MAX_STALENESS => Some(k.clone()),
                    _ => None,
                }
            }
        }
    }

    /// Keys for a request: the cache, or (when empty) one coalesced fetch.
    pub async fn for_request(&self) -> Option<Arc<KeySet>> {
        match self.current() {
            Some(k) => Some(k),
            None => self.refresh(false).await,
        }
    }

    /// Refetch. With `force == false` (an unknown kid, or no keys at request time) at most
    /// one fetch runs per cooldown, and concurrent callers share it.
    pub async fn refresh(&self, force: bool) -> Option<Arc<KeySet>> {
        if !self.is_remote() {
            return self.current();
        }
        let asked_at = Instant::now();
        let _guard = self.refresh_lock.lock().await;
        if !force {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            // Someone fetched while we waited for the lock: use what they got.
            if state.last_attempt.is_some_and(|last| last >= asked_at) {
                drop(state);
                return self.current();
            }
            // At most one on-demand fetch per cooldown.
            if state
                .last_on_demand
                .is_some_and(|last| last.elapsed() < self.cooldown)
            {
                drop(state);
                return self.current();
            }
        }
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            state.last_attempt = Some(now);
            if !force {
                state.last_on_demand = Some(now);
            }
        }
        match self.fetch().await {
            Ok(set) => {
                let set = Arc::new(set);
                for skipped in set.skipped() {
                    tracing::warn!(issuer = %self.name, kid = ?skipped.kid, reason = %skipped.reason, "ignoring unusable key");
                }
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                state.keys = Some(set.clone());
                state.fetched_at = Some(Instant::now());
                state.last_error = None;
                drop(state);
                self.metrics.jwks_fetch(&self.name, true);
                tracing::info!(issuer = %self.name, keys = set.len(), "fetched issuer keys");
            }
            Err(e) => {
                self.metrics.jwks_fetch(&self.name, false);
                tracing::warn!(issuer = %self.name, error = %e, "fetching issuer keys failed; keeping the last good keys");
                self.state.write().unwrap_or_else(|e| e.into_inner()).last_error = Some(e);
            }
        }
        self.current()
    }

    pub fn status(&self) -> IssuerStatus {
        match &self.source {
            Source::Static(set) => IssuerStatus {
                keys: set.len(),
                source: "static",
                last_fetch_age_seconds: None,
                last_error: None,
            },
            Source::Remote { .. } => {
                let state = self.state.read().unwrap_or_else(|e| e.into_inner());
                IssuerStatus {
                    keys: self.current().map(|k| k.len()).unwrap_or(0),
                    source: "remote",
                    last_fetch_age_seconds: state.fetched_at.map(|t| t.elapsed().as_secs()),
                    last_error: state.last_error.clone(),
                }
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let Source::Remote { jwks_uri, discovery } = &self.source else {
            return Err("static key set".into());
        };
        let jwks_uri = match (jwks_uri, discovery) {
            (Some(u), _) => u.clone(),
            (None, Some(discovery)) => {
                let body = self.get(discovery).await.map_err(|e| format!("discovery: {e}"))?;
                let doc: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| "discovery: not a JSON document".to_string())?;
                match doc.get("issuer").and_then(|v| v.as_str()) {
                    Some(iss) if iss == self.issuer => {}
                    Some(_) => {
                        return Err(
                            "discovery: the document's `issuer` differs from the configured issuer".into(),
                        );
                    }
                    None => return Err("discovery: no `issuer` in the document".into()),
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| "discovery: no `jwks_uri` in the document".to_string())?;
                check_fetch_url(uri, self.insecure).map_err(|e| format!("discovery: jwks_uri {e}"))?
            }
            (None, None) => return Err("no key source".into()),
        };
        let body = self.get(&jwks_uri).await.map_err(|e| format!("jwks: {e}"))?;
        let set = KeySet::from_jwks_json(&body).map_err(|e| format!("jwks: {e}"))?;
        if set.is_empty() {
            return Err("jwks: no usable key".into());
        }
        Ok(set)
    }

    async fn get(&self, url: &Url) -> Result<Vec<u8>, String> {
        let mut resp = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > MAX_DOCUMENT_BYTES)
        {
            return Err(format!("larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Keep the keys fresh: fetch at start (retrying with backoff), then periodically.
    /// The task holds only a weak reference and ends once a reload dropped this issuer.
    pub fn spawn_background(self: &Arc<Self>) {
        if !self.is_remote() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let Some(me) = weak.upgrade() else { break };
                me.refresh(true).await;
                let ok = me
                    .state
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .last_error
                    .is_none();
                drop(me);
                let wait = if ok {
                    backoff = Duration::from_secs(1);
                    REFRESH_INTERVAL
                } else {
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    w
                };
                tokio::time::sleep(wait).await;
            }
        });
    }
}

/// A fetch error without URLs' query strings or bodies.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else if e.is_redirect() {
        "redirect refused".into()
    } else if e.is_body() || e.is_decode() {
        "could not read the response".into()
    } else {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        msg
    }
}
