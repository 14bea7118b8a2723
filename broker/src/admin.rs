//! The admin API (contract §8): issuers and rules created, replaced and deleted over
//! HTTP, in the same schema as the YAML, validated by the same compile function as
//! `check`, kept in a state file (written atomically), applied to the next request.
//!
//! Authentication: bearer tokens from `admin.tokens_file` / `admin.tokens`, compared in
//! constant time (as SHA-256 digests). Optimistic concurrency: every item has an `ETag`;
//! `If-Match` (and `If-None-Match: *`) are honoured with 412.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::audit::rfc3339;
use crate::config::{AdminConfig, AdminState, ConfigError};

/// The admin API's settings at run time.
pub struct Admin {
    pub listen: Option<SocketAddr>,
    token_digests: Vec<[u8; 32]>,
    state_file: PathBuf,
    /// Serialises changes: read state, validate, write, install.
    write: tokio::sync::Mutex<()>,
}

impl Admin {
    pub fn new(config: &AdminConfig) -> Admin {
        Admin {
            listen: config.listen,
            token_digests: config.tokens.iter().map(|t| sha256(t.as_bytes())).collect(),
            state_file: config.state_file.clone(),
            write: tokio::sync::Mutex::new(()),
        }
    }

    /// The caller's identity for the audit log (`token:` and 8 hex digits of its
    /// digest), or `None`. Every configured token is compared, in constant time.
    fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest)
            })?
            .trim();
        let digest = sha256(presented.as_bytes());
        let mut found = false;
        for known in &self.token_digests {
            found |= aws_lc_rs::constant_time::verify_slices_are_equal(known, &digest).is_ok();
        }
        found.then(|| format!("token:{}", &hex(&digest)[..8]))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ETag of an item: a digest of its JSON.
fn etag(value: &Value) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    format!("\"{}\"", &hex(&sha256(&bytes))[..32])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Issuers,
    Rules,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Issuers => "issuers",
            Kind::Rules => "rules",
        }
    }
    fn map(self, state: &AdminState) -> &std::collections::BTreeMap<String, Value> {
        match self {
            Kind::Issuers => &state.issuers,
            Kind::Rules => &state.rules,
        }
    }
    fn map_mut(self, state: &mut AdminState) -> &mut std::collections::BTreeMap<String, Value> {
        match self {
            Kind::Issuers => &mut state.issuers,
            Kind::Rules => &mut state.rules,
        }
    }
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/openapi.json", get(openapi))
        .route("/admin/v1/issuers", get(list_issuers))
        .route("/admin/v1/rules", get(list_rules))
        .route(
            "/admin/v1/issuers/{name}",
            get(get_issuer).put(put_issuer).delete(delete_issuer),
        )
        .route(
            "/admin/v1/rules/{name}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
}

/// An early answer (boxed: responses are large).
type Rejection = Box<Response>;

fn error(status: StatusCode, code: &str, description: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "error_description": description.into()})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "a valid admin bearer token is required",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"fedbroker-admin\""),
    );
    resp
}

/// Authenticate, or answer 401. Also 404 when the admin API is not configured.
fn guard(st: &AppState, headers: &HeaderMap) -> Result<(Arc<Admin>, String), Rejection> {
    let Some(admin) = st.admin.clone() else {
        return Err(Box::new(StatusCode::NOT_FOUND.into_response()));
    };
    match admin.authenticate(headers) {
        Some(who) => Ok((admin, who)),
        None => Err(Box::new(unauthorized())),
    }
}

fn with_etag(status: StatusCode, value: &Value) -> Response {
    let mut resp = (status, Json(value.clone())).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(value)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

async fn list(st: Arc<AppState>, headers: HeaderMap, kind: Kind) -> Response {
    if let Err(r) = guard(&st, &headers) {
        return *r;
    }
    let policy = st.policy();
    let items: Vec<Value> = kind.map(&policy.admin_state).values().cloned().collect();
    Json(items).into_response()
}

async fn get_one(st: Arc<AppState>, headers: HeaderMap, kind: Kind, name: String) -> Response {
    if let Err(r) = guard(&st, &headers) {
        return *r;
    }
    match kind.map(&st.policy().admin_state).get(&name) {
        Some(v) => with_etag(StatusCode::OK, v),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no {} `{name}` made through the admin API",
                &kind.as_str()[..kind.as_str().len() - 1]
            ),
        ),
    }
}

/// `If-Match` / `If-None-Match` against the current item: `Err(412)` when they fail.
fn preconditions(headers: &HeaderMap, current: Option<&Value>) -> Result<(), Rejection> {
    let failed = || {
        Box::new(error(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the item changed (or exists, or does not): fetch it again",
        ))
    };
    if let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        let ok = match current {
            None => false,
            Some(v) => {
                let tag = etag(v);
                wanted
                    .split(',')
                    .map(str::trim)
                    .any(|w| w == "*" || w == tag || w.trim_start_matches("W/") == tag)
            }
        };
        if !ok {
            return Err(failed());
        }
    }
    if let Some(none) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let clash = match current {
            None => false,
            Some(v) => none.split(',').map(str::trim).any(|w| w == "*" || w == etag(v)),
        };
        if clash {
            return Err(failed());
        }
    }
    Ok(())
}

fn invalid(problems: Vec<Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "error": "invalid_body",
            "error_description": format!("{} problem(s)", problems.len()),
            "errors": problems,
        })),
    )
        .into_response()
}

fn problem(e: &ConfigError) -> Value {
    json!({
        "source": e.file.display().to_string(),
        "line": e.line,
        "field": e.field,
        "message": e.message,
    })
}

/// Validate `next` with everything else (the same compile as `check`), write it, and
/// install it. Returns the response to send on failure.
fn apply(st: &AppState, admin: &Admin, next: &AdminState) -> Result<u64, Rejection> {
    let Some(path) = &st.config_path else {
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "no configuration file",
        )));
    };
    let config = crate::config::load_with_admin(path, Some(next))
        .map_err(|errors| Box::new(invalid(errors.0.iter().map(problem).collect())))?;
    next.write(&admin.state_file).map_err(|e| -> Rejection {
        tracing::error!(path = %admin.state_file.display(), error = %e, "writing the admin state failed");
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the change could not be stored",
        ))
    })?;
    let result = st.install(&config);
    st.record_reload(&result);
    result.map_err(|e| {
        Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            e,
        ))
    })
}

fn audit_change(
    st: &AppState,
    who: &str,
    action: &str,
    kind: Kind,
    name: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) {
    st.audit.record_value(&json!({
        "time": rfc3339(std::time::SystemTime::now()),
        "event": "admin_change",
        "who": who,
        "action": action,
        "object": kind.as_str(),
        "name": name,
        "before": before.map(|v| etag(v).trim_matches('"').to_string()),
        "after": after.map(|v| etag(v).trim_matches('"').to_string()),
    }));
}

async fn put(st: Arc<AppState>, headers: HeaderMap, kind: Kind, name: String, body: Bytes) -> Response {
    let (admin, who) = match guard(&st, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut value: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return invalid(vec![
                json!({"field": "", "message": "the body must be a JSON object"}),
            ]);
        }
        Err(e) => return invalid(vec![json!({"field": "", "message": format!("not JSON: {e}")})]),
    };
    match value.get("name") {
        None => value["name"] = Value::String(name.clone()),
        Some(Value::String(n)) if *n == name => {}
        Some(_) => {
            return invalid(vec![
                json!({"field": "name", "message": format!("must be `{name}`, the name in the path")}),
            ]);
        }
    }
    let _write = admin.write.lock().await;
    let current_state = st.policy().admin_state.clone();
    let before = kind.map(&current_state).get(&name).cloned();
    if let Err(r) = preconditions(&headers, before.as_ref()) {
        return *r;
    }
    let mut next = current_state;
    kind.map_mut(&mut next).insert(name.clone(), value.clone());
    let st2 = st.clone();
    let admin2 = admin.clone();
    let result = tokio::task::spawn_blocking(move || apply(&st2, &admin2, &next)).await;
    match result {
        Ok(Ok(_)) => {
            audit_change(
                &st,
                &who,
                if before.is_some() { "replace" } else { "create" },
                kind,
                &name,
                before.as_ref(),
                Some(&value),
            );
            let status = if before.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            with_etag(status, &value)
        }
        Ok(Err(resp)) => *resp,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the change could not be applied",
        ),
    }
}

async fn delete(st: Arc<AppState>, headers: HeaderMap, kind: Kind, name: String) -> Response {
    let (admin, who) = match guard(&st, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let _write = admin.write.lock().await;
    let policy = st.policy();
    let Some(before) = kind.map(&policy.admin_state).get(&name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no `{name}` made through the admin API"),
        );
    };
    if let Err(r) = preconditions(&headers, Some(&before)) {
        return *r;
    }
    if kind == Kind::Issuers && policy.rules.uses_issuer(&name) {
        return error(
            StatusCode::CONFLICT,
            "conflict",
            format!("issuer `{name}` is still used by a rule"),
        );
    }
    let mut next = policy.admin_state.clone();
    kind.map_mut(&mut next).remove(&name);
    drop(policy);
    let st2 = st.clone();
    let admin2 = admin.clone();
    match tokio::task::spawn_blocking(move || apply(&st2, &admin2, &next)).await {
        Ok(Ok(_)) => {
            audit_change(&st, &who, "delete", kind, &name, Some(&before), None);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Err(resp)) => *resp,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the change could not be applied",
        ),
    }
}

async fn list_issuers(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    list(st, headers, Kind::Issuers).await
}
async fn list_rules(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    list(st, headers, Kind::Rules).await
}
async fn get_issuer(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    get_one(st, headers, Kind::Issuers, name).await
}
async fn get_rule(State(st): State<Arc<AppState>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    get_one(st, headers, Kind::Rules, name).await
}
async fn put_issuer(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    put(st, headers, Kind::Issuers, name, body).await
}
async fn put_rule(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    put(st, headers, Kind::Rules, name, body).await
}
async fn delete_issuer(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    delete(st, headers, Kind::Issuers, name).await
}
async fn delete_rule(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    delete(st, headers, Kind::Rules, name).await
}

/// The OpenAPI 3.1 description of this API. Public: it describes, it grants nothing.
async fn openapi(State(st): State<Arc<AppState>>) -> Response {
    if st.admin.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(openapi_document()).into_response()
}

pub fn openapi_document() -> Value {
    let item_ops = |what: &str, schema: &str| {
        json!({
            "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": {
                "summary": format!("One {what}"),
                "responses": {
                    "200": {"description": "The item", "headers": {"ETag": {"schema": {"type": "string"}}},
                            "content": {"application/json": {"schema": {"$ref": schema}}}},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": {"$ref": "#/components/responses/Error"}
                }
            },
            "put": {
                "summary": format!("Create or replace a {what}"),
                "parameters": [
                    {"name": "If-Match", "in": "header", "schema": {"type": "string"}},
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": schema}}}},
                "responses": {
                    "200": {"description": "Replaced", "headers": {"ETag": {"schema": {"type": "string"}}}},
                    "201": {"description": "Created", "headers": {"ETag": {"schema": {"type": "string"}}}},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "412": {"$ref": "#/components/responses/Error"},
                    "422": {"$ref": "#/components/responses/Invalid"}
                }
            },
            "delete": {
                "summary": format!("Delete a {what}"),
                "parameters": [{"name": "If-Match", "in": "header", "schema": {"type": "string"}}],
                "responses": {
                    "204": {"description": "Deleted"},
                    "401": {"$ref": "#/components/responses/Unauthorized"},
                    "404": {"$ref": "#/components/responses/Error"},
                    "409": {"$ref": "#/components/responses/Error"},
                    "412": {"$ref": "#/components/responses/Error"}
                }
            }
        })
    };
    let list_op = |what: &str, schema: &str| {
        json!({"get": {
            "summary": format!("Every {what} made through the admin API"),
            "responses": {
                "200": {"description": "The list", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": schema}}}}},
                "401": {"$ref": "#/components/responses/Unauthorized"}
            }
        }})
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fedbroker admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Issuers and rules in the same schema as the YAML configuration (see the README). Changes are validated like `fedbroker check`, take effect for the next request and survive a restart."
        },
        "security": [{"bearer": []}],
        "paths": {
            "/admin/v1/issuers": list_op("issuer", "#/components/schemas/Issuer"),
            "/admin/v1/issuers/{name}": item_ops("issuer", "#/components/schemas/Issuer"),
            "/admin/v1/rules": list_op("rule", "#/components/schemas/Rule"),
            "/admin/v1/rules/{name}": item_ops("rule", "#/components/schemas/Rule"),
            "/admin/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI"}}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Issuer": {
                    "type": "object",
                    "required": ["name", "audiences"],
                    "properties": {
                        "name": {"type": "string"}, "issuer": {"type": "string"}, "kind": {"type": "string"},
                        "audiences": {"type": "array", "items": {"type": "string"}},
                        "jwks_uri": {"type": "string"}, "jwks": {"type": "object"}, "jwks_file": {"type": "string"},
                        "algorithms": {"type": "array", "items": {"type": "string"}},
                        "replay": {"enum": ["one_time", "reusable"]}, "max_token_lifetime": {"type": "string"},
                        "danger_allow_insecure": {"type": "boolean"}, "tenant": {"type": "string"},
                        "entra_version": {"enum": ["v1", "v2"]}, "trust_domain": {"type": "string"},
                        "allow_access_tokens": {"type": "boolean"}, "tls_ca_file": {"type": "string"}
                    },
                    "additionalProperties": false
                },
                "Rule": {
                    "type": "object",
                    "required": ["name", "match"],
                    "properties": {
                        "name": {"type": "string"}, "effect": {"enum": ["allow", "deny"]}, "description": {"type": "string"},
                        "match": {"type": "object"}, "issue": {"type": "object"}
                    },
                    "additionalProperties": false
                },
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}},
                "Problem": {"type": "object", "properties": {"source": {"type": "string"}, "line": {"type": ["integer", "null"]}, "field": {"type": "string"}, "message": {"type": "string"}}}
            },
            "responses": {
                "Unauthorized": {"description": "No or wrong bearer token", "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Invalid": {"description": "Every problem with the body", "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}, "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}}}}}}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Admin {
        Admin::new(&AdminConfig {
            listen: None,
            tokens: vec!["0123456789abcdef-first".into(), "0123456789abcdef-second".into()],
            tokens_file: None,
            state_file: PathBuf::from("/nonexistent/admin-state.json"),
        })
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn authenticates_any_configured_token_only() {
        let a = admin();
        assert!(a.authenticate(&bearer("Bearer 0123456789abcdef-first")).is_some());
        assert!(
            a.authenticate(&bearer("Bearer 0123456789abcdef-second"))
                .is_some()
        );
        assert!(a.authenticate(&bearer("Bearer 0123456789abcdef-third")).is_none());
        assert!(a.authenticate(&bearer("Basic 0123456789abcdef-first")).is_none());
        assert!(a.authenticate(&HeaderMap::new()).is_none());
        let who = a
            .authenticate(&bearer("Bearer 0123456789abcdef-first"))
            .expect("ok");
        assert!(
            !who.contains("0123456789abcdef"),
            "the token itself is never the identity"
        );
    }

    #[test]
    fn preconditions_follow_rfc_9110() {
        let v = json!({"name": "x"});
        let mut h = HeaderMap::new();
        assert!(preconditions(&h, None).is_ok());
        h.insert(header::IF_MATCH, HeaderValue::from_str(&etag(&v)).expect("etag"));
        assert!(preconditions(&h, Some(&v)).is_ok());
        assert!(preconditions(&h, Some(&json!({"name": "y"}))).is_err());
        assert!(preconditions(&h, None).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(preconditions(&h, None).is_ok());
        assert!(preconditions(&h, Some(&v)).is_err());
    }

    #[test]
    fn the_openapi_document_names_every_path() {
        let doc = openapi_document();
        for p in [
            "/admin/v1/issuers",
            "/admin/v1/issuers/{name}",
            "/admin/v1/rules",
            "/admin/v1/rules/{name}",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p}");
        }
    }
}
