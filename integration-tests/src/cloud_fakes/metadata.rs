//! Where platforms hand a workload its home token, for `fedbroker credentials`'
//! sources: one server playing
//! - GitHub Actions' OIDC token endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`): `GET
//!   /token?audience=A` with `Authorization: Bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`,
//!   answering `{"value": TOKEN}`
//!   (<https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect>);
//! - the GCP metadata server: `GET /computeMetadata/v1/instance/service-accounts/default/identity?audience=A&format=full`
//!   with `Metadata-Flavor: Google`, answering the token as text
//!   (<https://cloud.google.com/compute/docs/instances/verifying-instance-identity>);
//! - Azure IMDS: `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R`
//!   with `Metadata: true`, answering `{"access_token": TOKEN, ...}`
//!   (<https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>).
//!
//! Each refuses a request without its header (GitHub: the bearer it was given) with 403 (400 for IMDS's
//! missing `Metadata`), as the real ones do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{Served, lock};

/// The bearer the GitHub endpoint expects.
pub const GITHUB_REQUEST_TOKEN: &str = "github-request-token-for-tests";

struct Shared {
    token: String,
    /// (path, audience or resource) of each answered request.
    seen: Mutex<Vec<(String, String)>>,
}

pub struct FakeMetadata {
    shared: Arc<Shared>,
    served: Served,
}

impl FakeMetadata {
    /// Every endpoint hands out `token`.
    pub fn start(token: String) -> FakeMetadata {
        let shared = Arc::new(Shared {
            token,
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/token", get(github))
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/identity",
                get(gcp),
            )
            .route("/metadata/identity/oauth2/token", get(imds))
            .with_state(shared.clone());
        FakeMetadata {
            shared,
            served: Served::start("fake-metadata", app, false),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.served.url()
    }

    /// `127.0.0.1:PORT`, as `GCE_METADATA_HOST` names a host.
    pub fn host(&self) -> String {
        self.url().trim_start_matches("http://").to_owned()
    }

    /// (path, audience or resource) of each request answered with the token.
    pub fn seen(&self) -> Vec<(String, String)> {
        lock(&self.shared.seen).clone()
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn answer(st: &Shared, path: &str, target: Option<&String>, body: Response) -> Response {
    let Some(target) = target else {
        return (StatusCode::BAD_REQUEST, "missing audience or resource").into_response();
    };
    lock(&st.seen).push((path.to_owned(), target.clone()));
    body
}

async fn github(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if header(&headers, "authorization") != Some(&format!("Bearer {GITHUB_REQUEST_TOKEN}")) {
        return (StatusCode::FORBIDDEN, "bad request token").into_response();
    }
    let body = axum::Json(json!({"count": 1, "value": st.token})).into_response();
    answer(&st, "github", q.get("audience"), body)
}

async fn gcp(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if header(&headers, "metadata-flavor") != Some("Google")
        || q.get("format").map(String::as_str) != Some("full")
    {
        return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.").into_response();
    }
    answer(&st, "gcp", q.get("audience"), st.token.clone().into_response())
}

async fn imds(
    State(st): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if header(&headers, "metadata") != Some("true") || !q.contains_key("api-version") {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}))).into_response();
    }
    let body = axum::Json(json!({"access_token": st.token, "expires_in": "3599", "token_type": "Bearer"}))
        .into_response();
    answer(&st, "imds", q.get("resource"), body)
}
