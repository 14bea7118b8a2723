//! The HTTP surface: the router, `serve(listener, state, shutdown)`, and the public
//! metadata and health routes (discovery, JWKS, `/healthz`, `/readyz`, `/metrics`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::config::ServerConfig;
use crate::exchange;
use crate::metrics::Metrics;
use crate::policy::LivePolicy;
use crate::replay::ReplayStore;
use crate::signing::Signer;

pub use crate::policy::{Issuer, Policy, ReloadStatus};
pub use crate::state::{AppState, StartError};

/// The metadata routes' share of the state: what the broker publishes about itself.
#[derive(Clone)]
pub struct Metadata {
    server: Arc<ServerConfig>,
    signer: Arc<Signer>,
}

impl FromRef<Arc<AppState>> for Metadata {
    fn from_ref(st: &Arc<AppState>) -> Metadata {
        Metadata {
            server: st.server.clone(),
            signer: st.signer.clone(),
        }
    }
}

/// `/readyz` and `/metrics`' share of the state: what readiness is made of.
#[derive(Clone)]
pub struct Health {
    live: Arc<LivePolicy>,
    replay: Arc<dyn ReplayStore>,
    metrics: Arc<Metrics>,
    signer: Arc<Signer>,
    admin: Option<Arc<Admin>>,
}

impl FromRef<Arc<AppState>> for Health {
    fn from_ref(st: &Arc<AppState>) -> Health {
        Health {
            live: st.live.clone(),
            replay: st.replay.clone(),
            metrics: st.metrics.clone(),
            signer: st.signer.clone(),
            admin: st.admin.clone(),
        }
    }
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
    if let Some(dev) = &state.dev {
        inner = inner.merge(crate::dev::routes().with_state(dev.clone()));
    }
    let admin_here = state.admin.as_ref().filter(|a| a.listen.is_none());
    if let Some(admin) = admin_here {
        inner = inner
            .merge(crate::admin::routes().with_state(admin.clone()))
            .merge(crate::admin::inspect::routes());
    }
    let mut inner = inner.with_state(state.clone());
    let prefix = state.server.path_prefix();
    // The console goes with the admin API (contract §13).
    if admin_here.is_some()
        && let Some(console) = crate::console::routes(
            &state,
            &prefix,
            // TLS here, or in front (an ingress terminating it for an https public_url).
            state.tls.is_some() || state.server.public_url.starts_with("https://"),
        )
    {
        inner = inner.merge(console);
    }
    let router = if prefix.is_empty() {
        inner
    } else {
        Router::new().nest(&prefix, inner)
    };
    with_request_layers(router)
}

/// The middleware of both listeners: the request ID, and with traces on, the request's
/// span (inside it: the span reads the ID).
fn with_request_layers(router: Router) -> Router {
    let router = if crate::telemetry::is_on() {
        router.layer(axum::middleware::from_fn(crate::telemetry::layer))
    } else {
        router
    };
    router.layer(axum::middleware::from_fn(crate::request_id::layer))
}

/// The router of `admin.listen`, the admin API's own listener: the admin API, plus the
/// public read-only metadata (discovery and JWKS) that the Terraform provider's data
/// sources read from its `endpoint`. Not under `public_url`'s path, like the admin API.
pub fn admin_app(state: Arc<AppState>) -> Router {
    let admin = match &state.admin {
        Some(admin) => crate::admin::routes()
            .with_state(admin.clone())
            .merge(crate::admin::inspect::routes()),
        None => Router::new(),
    };
    let mut router = admin
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route("/jwks.json", get(jwks))
        .with_state(state.clone());
    if let Some(console) = crate::console::routes(&state, "", state.admin_tls.is_some()) {
        router = router.merge(console);
    }
    with_request_layers(router)
}

/// Serve until `shutdown` resolves, then stop accepting and give in-flight requests up
/// to `drain` to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let audit = state.audit.clone();
    let console = state.console.clone();
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
                state.admin_tls.clone(),
                stopped(rx.clone()),
            ))
        }
        None => None,
    };
    // TLS files are also compared every few seconds: not every change sends an event.
    for tls in state.tls.iter().chain(state.admin_tls.iter()) {
        tls.spawn_poll();
    }
    // With signing.rotation, keys follow their schedule.
    state.signer.spawn_rotation();
    let tls = state.tls.clone();
    let main = crate::listener::run(listener, app(state), limits, tls, stopped(rx));
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
        // Live tails would hold their connections open through the drain.
        if let Some(console) = &console {
            console.close_streams();
        }
        tokio::time::sleep(drain).await;
    };
    let result = tokio::select! {
        r = servers => r,
        _ = signal => {
            tracing::warn!(seconds = drain.as_secs(), "drain timeout reached; exiting with requests in flight");
            Ok(())
        }
    };
    // Every decision made is in the audit log before the process goes.
    audit.flush().await;
    result
}

fn cacheable_json(value: serde_json::Value, max_age: u32) -> Response {
    let mut resp = Json(value).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        resp.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    resp
}

async fn discovery(State(st): State<Metadata>) -> Response {
    let alg = st.signer.algorithm().as_str();
    let url = |path: &str| format!("{}{path}", st.server.public_url);
    // Certificate-bound tokens (RFC 8705) only where clients can present a certificate.
    let mtls = st
        .server
        .tls
        .as_ref()
        .is_some_and(|t| t.client_auth != crate::config::ClientAuth::None);
    cacheable_json(
        json!({
            "issuer": st.server.public_url,
            "jwks_uri": url("/jwks.json"),
            "token_endpoint": url("/token"),
            "grant_types_supported": exchange::GrantType::ALL.map(exchange::GrantType::as_str),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [alg],
            // `private_key_jwt`: a home token as RFC 7523 client assertion, verified by
            // its registered issuer's keys.
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": issuers::Algorithm::ALL.map(issuers::Algorithm::as_str),
            "dpop_signing_alg_values_supported": issuers::dpop::PROOF_ALGORITHMS.map(issuers::Algorithm::as_str),
            "tls_client_certificate_bound_access_tokens": mtls,
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "act", "scope", "cnf", exchange::SOURCE_ISSUER_CLAIM],
            "fedbroker_token_types_supported": exchange::REQUESTED_TOKEN_TYPES,
        }),
        3600,
    )
}

async fn jwks(State(st): State<Metadata>) -> Response {
    cacheable_json((*st.signer.jwks()).clone(), 300)
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `/readyz`: 200 when this replica can serve as its peers do, else 503 with every
/// reason in `reasons`. Reads snapshots only (the policy's `Arc`, the reload status, the
/// admin sync status), never a lock a reload holds while it loads, so it answers at
/// once while a large reload runs (`rules.reloading` is then true).
async fn readyz(State(st): State<Health>) -> Response {
    let replay = st.replay.ping().await;
    let policy = st.live.current();
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
    if let Some(clash) = st.live.status().name_clash {
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
            "last_reload_error": st.live.status().last_error,
            "reloading": st.live.is_loading(),
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

async fn metrics(State(st): State<Health>) -> Response {
    for (_, issuer) in st.live.current().issuers.iter() {
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
