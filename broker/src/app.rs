//! The HTTP surface: state, router, and `serve(listener, state, shutdown)`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
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
use crate::config::{Config, IssuerConfig, OnUnavailable, ServerConfig};
use crate::dev::DevIssuer;
use crate::exchange;
use crate::issuer_keys::{FetchClients, IssuerKeys};
use crate::metrics::Metrics;
use crate::replay::{MemoryReplayStore, ReplayStore};
use crate::signing::Signer;

/// A registered issuer at run time: its config and its keys.
pub struct Issuer {
    pub config: IssuerConfig,
    pub keys: Arc<IssuerKeys>,
}

/// Everything a request needs; shared, immutable apart from caches.
pub struct AppState {
    pub server: ServerConfig,
    pub issuers: IssuerRegistry<Arc<Issuer>>,
    pub rules: Arc<RuleSet>,
    pub signer: Arc<Signer>,
    pub replay: Arc<dyn ReplayStore>,
    pub on_unavailable: OnUnavailable,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
    pub dev: Option<Arc<DevIssuer>>,
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
}

impl AppState {
    /// Build the state from a validated config. Starts background key fetching for
    /// remote issuers (the broker starts even when an issuer is unreachable).
    pub fn build(
        config: Config,
        signer: Signer,
        dev: Option<Arc<DevIssuer>>,
    ) -> Result<Arc<AppState>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let clients = FetchClients::new()?;
        let mut registry = IssuerRegistry::new();
        for ic in &config.issuers {
            let keys = Arc::new(IssuerKeys::new(ic, &clients, metrics.clone()));
            keys.spawn_background();
            let issuer = Arc::new(Issuer {
                config: ic.clone(),
                keys,
            });
            registry
                .insert(ic.policy.issuer.clone(), issuer)
                .map_err(|_| StartError::DuplicateIssuer(ic.name.clone()))?;
        }
        let audit = match &config.audit.path {
            Some(p) => AuditLog::file(p).map_err(|source| StartError::Audit {
                path: p.display().to_string(),
                source,
            })?,
            None => AuditLog::stderr(),
        };
        metrics.set_rules_loaded(config.rules.len());
        Ok(Arc::new(AppState {
            server: config.server,
            issuers: registry,
            rules: config.rules,
            signer: Arc::new(signer),
            replay: Arc::new(MemoryReplayStore::new()),
            on_unavailable: config.replay.on_unavailable,
            audit: Arc::new(audit),
            metrics,
            dev,
        }))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.public_url)
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
    let inner = inner.with_state(state.clone());
    let prefix = state.server.path_prefix();
    if prefix.is_empty() {
        inner
    } else {
        Router::new().nest(&prefix, inner)
    }
}

/// Serve until `shutdown` resolves, then stop accepting and give in-flight requests up
/// to `drain` to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        let _ = rx.changed().await;
    });
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = tx.send(true);
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        r = server => r,
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
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "act", "scope"],
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

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let replay = st.replay.ping().await;
    let mut issuers = HashMap::new();
    for (_, issuer) in st.issuers.iter() {
        let status = issuer.keys.status();
        st.metrics.set_issuer_keys(&issuer.config.name, status.keys);
        issuers.insert(issuer.config.name.clone(), status);
    }
    let ready = replay.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "signing_key": st.signer.kid(),
        "replay": {
            "backend": st.replay.backend(),
            "ok": replay.is_ok(),
            "error": replay.err().map(|e| e.to_string()),
        },
        "rules": st.rules.len(),
        "issuers": issuers,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    for (_, issuer) in st.issuers.iter() {
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
