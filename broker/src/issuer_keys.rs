//! Verification keys per issuer: static sets, or discovery + JWKS fetched over HTTP and
//! cached. An unknown `kid` triggers at most one coalesced refetch per cooldown; a failed
//! or malformed fetch never replaces good keys; cached keys are served for up to 24 h.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use issuers::KeySet;
use reqwest::Url;
use serde::Serialize;
use tokio::sync::Mutex;

use issuers::{IssuerKind, KindParams};

use crate::config::{IssuerConfig, KeySource, check_fetch_url};
use crate::metrics::Metrics;
use crate::netguard::PublicOnlyResolver;

pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
pub const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);
pub const MAX_STALENESS: Duration = Duration::from_secs(24 * 3600);
/// How often keys are refreshed in the background while fetches succeed.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// Why one GET of a discovery document or key set failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// The connection or the transfer failed (described without secrets).
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
}

/// Why fetching an issuer's keys failed (`at`: the URL, without secrets).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("static key set")]
    Static,
    #[error("no key source")]
    NoSource,
    #[error("discovery: GET {at}: {source}")]
    Discovery { at: String, source: GetError },
    #[error("discovery: {0}: not a JSON document")]
    DiscoveryNotJson(String),
    #[error(
        "discovery: {at}: the document's `issuer` {found:?} differs from the configured issuer {configured:?}"
    )]
    IssuerMismatch {
        at: String,
        found: String,
        configured: String,
    },
    #[error("discovery: {0}: no `issuer` in the document")]
    NoIssuer(String),
    #[error("discovery: {0}: no `jwks_uri` in the document")]
    NoJwksUri(String),
    #[error("discovery: {at}: jwks_uri {reason}")]
    BadJwksUri { at: String, reason: String },
    #[error("jwks: GET {at}: {source}")]
    Jwks { at: String, source: GetError },
    #[error("jwks: {at}: {source}")]
    BadJwks { at: String, source: issuers::JwksError },
    #[error("jwks: {0}: no usable key")]
    NoUsableKey(String),
}

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

fn client_builder(insecure: bool) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .no_proxy()
        .redirect(same_origin_redirects())
        .user_agent(concat!("fedbroker/", env!("CARGO_PKG_VERSION")));
    if insecure {
        b
    } else {
        b.https_only(true).dns_resolver(PublicOnlyResolver)
    }
}

impl FetchClients {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(FetchClients {
            public: client_builder(false).build()?,
            insecure: client_builder(true).build()?,
        })
    }

    fn pick(&self, insecure: bool) -> reqwest::Client {
        if insecure {
            self.insecure.clone()
        } else {
            self.public.clone()
        }
    }

    /// A client that also trusts the CA certificates in `pem` (`tls_ca_file`).
    fn with_ca(&self, pem: &[u8], insecure: bool) -> Result<reqwest::Client, reqwest::Error> {
        let mut b = client_builder(insecure);
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            b = b.add_root_certificate(cert);
        }
        b.build()
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
    kind: IssuerKind,
    kind_params: KindParams,
    /// The extra CA certificates this cache's client trusts (`tls_ca_file`).
    tls_ca_pem: Option<Vec<u8>>,
    /// When the next background refresh is due, from the JWKS response's Cache-Control.
    next_refresh: RwLock<Duration>,
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
        let client = match &config.tls_ca_pem {
            Some(pem) => clients.with_ca(pem, config.danger_allow_insecure).unwrap_or_else(|e| {
                tracing::error!(issuer = %config.name, error = %e, "tls_ca_file unusable; using system roots");
                clients.pick(config.danger_allow_insecure)
            }),
            None => clients.pick(config.danger_allow_insecure),
        };
        IssuerKeys {
            name: config.name.clone(),
            issuer: config.policy.issuer.clone(),
            kind: config.kind,
            kind_params: config.kind_params.clone(),
            tls_ca_pem: config.tls_ca_pem.clone(),
            next_refresh: RwLock::new(REFRESH_INTERVAL),
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
        same_uri
            && self.issuer == config.policy.issuer
            && self.insecure == config.danger_allow_insecure
            && self.kind == config.kind
            && self.kind_params == config.kind_params
            && self.tls_ca_pem == config.tls_ca_pem
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
        let started = Instant::now();
        let fetched = self.fetch().await;
        self.metrics.jwks_fetch_duration(&self.name, started.elapsed());
        match fetched {
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
                self.state.write().unwrap_or_else(|e| e.into_inner()).last_error = Some(e.to_string());
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

    /// Everything the console and `GET /admin/v1/status/issuers` show of this cache:
    /// where the keys come from, the cached keys (kid and algorithms, also when stale),
    /// the last fetch and its outcome, and when the next background refresh is due.
    pub fn detail(&self) -> serde_json::Value {
        use serde_json::json;
        let now = std::time::SystemTime::now();
        let ago = |t: Instant| crate::audit::rfc3339(now - t.elapsed());
        let describe_keys = |set: &KeySet| -> Vec<serde_json::Value> {
            set.iter()
                .map(|k| {
                    let algs: Vec<&str> = match k.alg() {
                        Some(a) => vec![a.as_str()],
                        None => issuers::Algorithm::ALL
                            .iter()
                            .filter(|a| k.supports(**a))
                            .map(|a| a.as_str())
                            .collect(),
                    };
                    json!({"kid": k.kid(), "algorithms": algs})
                })
                .collect()
        };
        match &self.source {
            Source::Static(set) => json!({
                "source": "static",
                "keys": describe_keys(set),
            }),
            Source::Remote { jwks_uri, discovery } => {
                let state = self.state.read().unwrap_or_else(|e| e.into_inner());
                let next = *self.next_refresh.read().unwrap_or_else(|e| e.into_inner());
                let (source, url) = match (jwks_uri, discovery) {
                    (Some(u), _) => ("jwks_uri", shown_url(u)),
                    (None, Some(d)) => ("discovery", shown_url(d)),
                    (None, None) => ("discovery", String::new()),
                };
                let next_refresh = match (&state.last_error, state.last_attempt) {
                    // A failing issuer is retried with backoff (1 s doubling to 60 s).
                    (Some(_), _) | (None, None) => None,
                    (None, Some(at)) => Some(crate::audit::rfc3339(now + next.saturating_sub(at.elapsed()))),
                };
                json!({
                    "source": source,
                    "url": url,
                    "keys": state.keys.as_deref().map(describe_keys).unwrap_or_default(),
                    "fresh": self.current().is_some(),
                    "last_fetch": state.fetched_at.map(ago),
                    "last_attempt": state.last_attempt.map(ago),
                    "last_result": match (&state.last_error, state.last_attempt) {
                        (_, None) => "not fetched yet",
                        (Some(_), _) => "error",
                        (None, Some(_)) => "ok",
                    },
                    "last_error": state.last_error,
                    "next_refresh": next_refresh,
                })
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, FetchError> {
        let Source::Remote { jwks_uri, discovery } = &self.source else {
            return Err(FetchError::Static);
        };
        let jwks_uri = match (jwks_uri, discovery) {
            (Some(u), _) => u.clone(),
            (None, Some(discovery)) => {
                let at = shown_url(discovery);
                let body = match self.get(discovery).await {
                    Ok((body, _)) => body,
                    Err(source) => return Err(FetchError::Discovery { at, source }),
                };
                let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    return Err(FetchError::DiscoveryNotJson(at));
                };
                match doc.get("issuer").and_then(|v| v.as_str()) {
                    Some(iss)
                        if self
                            .kind
                            .discovery_issuer_matches(&self.issuer, iss, &self.kind_params) => {}
                    Some(found) => {
                        return Err(FetchError::IssuerMismatch {
                            at,
                            found: found.chars().take(200).collect(),
                            configured: self.issuer.clone(),
                        });
                    }
                    None => return Err(FetchError::NoIssuer(at)),
                }
                let Some(uri) = doc.get("jwks_uri").and_then(|v| v.as_str()) else {
                    return Err(FetchError::NoJwksUri(at));
                };
                match check_fetch_url(uri, self.insecure) {
                    Ok(url) => url,
                    Err(e) => {
                        return Err(FetchError::BadJwksUri {
                            at,
                            reason: e.to_string(),
                        });
                    }
                }
            }
            (None, None) => return Err(FetchError::NoSource),
        };
        let at = shown_url(&jwks_uri);
        let (body, max_age) = match self.get(&jwks_uri).await {
            Ok(got) => got,
            Err(source) => return Err(FetchError::Jwks { at, source }),
        };
        let set = match KeySet::from_jwks_json(&body) {
            Ok(set) => set,
            Err(source) => return Err(FetchError::BadJwks { at, source }),
        };
        *self.next_refresh.write().unwrap_or_else(|e| e.into_inner()) = refresh_after(max_age);
        if set.is_empty() {
            return Err(FetchError::NoUsableKey(at));
        }
        Ok(set)
    }

    /// GET with the size cap; also the response's `Cache-Control: max-age`, if any.
    async fn get(&self, url: &Url) -> Result<(Vec<u8>, Option<u64>), GetError> {
        let mut resp = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| GetError::Transport(describe(&e)))?;
        if !resp.status().is_success() {
            return Err(GetError::Status(resp.status().as_u16()));
        }
        let max_age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_control_max_age);
        if resp
            .content_length()
            .is_some_and(|n| n as usize > MAX_DOCUMENT_BYTES)
        {
            return Err(GetError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| GetError::Transport(describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(GetError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
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
                let next = *me.next_refresh.read().unwrap_or_else(|e| e.into_inner());
                drop(me);
                let wait = if ok {
                    backoff = Duration::from_secs(1);
                    next
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

/// Shortest and longest background refresh interval, whatever `Cache-Control` says.
pub const MIN_REFRESH: Duration = Duration::from_secs(5 * 60);
pub const MAX_REFRESH: Duration = Duration::from_secs(6 * 3600);

/// The background refresh interval for a JWKS response's `max-age`: honoured, but
/// clamped to [`MIN_REFRESH`, `MAX_REFRESH`]; [`REFRESH_INTERVAL`] without one.
pub fn refresh_after(max_age: Option<u64>) -> Duration {
    match max_age {
        Some(secs) => Duration::from_secs(secs).clamp(MIN_REFRESH, MAX_REFRESH),
        None => REFRESH_INTERVAL,
    }
}

/// `max-age` of a Cache-Control header (`no-store`/`no-cache` count as 0).
fn cache_control_max_age(value: &str) -> Option<u64> {
    let mut out = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            out = v.trim_matches('"').parse().ok();
        }
    }
    out
}

/// A URL as fetch errors show it, so an operator knows what failed: scheme, host, port
/// and path; never a user name, password, query string or fragment (they may carry
/// secrets).
fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// A fetch error without URLs' query strings or bodies.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        // Say when it was the certificate, not the network: operators act differently.
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            let text = s.to_string();
            if text.contains("certificate") || text.contains("UnknownIssuer") || text.contains("unknown ca") {
                return format!("TLS: the server's certificate is not trusted ({text})");
            }
            src = s.source();
        }
        // The innermost cause says why (refused, no route, a name that resolves to no
        // public address); it carries no URL.
        let mut cause = None;
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            cause = Some(s.to_string());
            src = s.source();
        }
        match cause {
            Some(c) => format!("could not connect ({c})"),
            None => "could not connect".into(),
        }
    } else if e.is_redirect() {
        "redirect refused".into()
    } else if e.is_body() || e.is_decode() {
        "could not read the response".into()
    } else {
        crate::error::with_sources(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_is_honoured_within_bounds() {
        assert_eq!(cache_control_max_age("public, max-age=3600"), Some(3600));
        assert_eq!(cache_control_max_age("no-store"), Some(0));
        assert_eq!(cache_control_max_age("private"), None);
        assert_eq!(refresh_after(Some(3600)), Duration::from_secs(3600));
        assert_eq!(refresh_after(Some(0)), MIN_REFRESH);
        assert_eq!(refresh_after(Some(10 * 24 * 3600)), MAX_REFRESH);
        assert_eq!(refresh_after(None), REFRESH_INTERVAL);
    }

    #[test]
    fn fetch_errors_show_the_url_without_secrets() {
        let url = Url::parse("https://user:pw@idp.example.com:8443/a/jwks?sig=s3cret#frag").expect("url");
        assert_eq!(shown_url(&url), "https://idp.example.com:8443/a/jwks");
    }

    #[tokio::test]
    async fn the_public_only_resolver_refuses_names_that_resolve_to_loopback() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let result = PublicOnlyResolver.resolve(name).await;
        assert!(result.is_err(), "localhost must not resolve to a usable address");
    }
}
