//! What the broker is doing, for people: the admin API's read-only views (issuers with
//! their key caches, rules with their hit counts and origins, signing keys), a forced
//! refetch of an issuer's keys, and `POST /admin/v1/explain`. The console's pages are
//! drawn from the same functions ([`issuers_view`], [`rules_view`], [`keys_view`],
//! [`explain`]), so the console, the API and the CLI cannot disagree.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::AdminError;
use crate::explain::{ExplainContext, ExplainError, ExplainInput, Explained};
use crate::policy::{Issuer, Policy};
use crate::state::AppState;

/// The routes, on the application's state (they read more than the admin API holds).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/status/issuers", get(get_issuers))
        .route("/admin/v1/status/issuers/{name}/refetch", post(post_refetch))
        .route("/admin/v1/status/rules", get(get_rules))
        .route("/admin/v1/status/keys", get(get_keys))
        .route("/admin/v1/explain", post(post_explain))
}

fn guard(st: &AppState, headers: &HeaderMap) -> Result<String, AdminError> {
    match &st.admin {
        Some(admin) => super::routes::guard(admin, headers),
        None => Err(AdminError::Unauthenticated),
    }
}

/// Every issuer in force, by name: kind, `iss`, and its key cache
/// ([`crate::issuer_keys::IssuerKeys::detail`]).
pub fn issuers_view(st: &AppState) -> Vec<Value> {
    let policy = st.policy();
    let mut list: Vec<Value> = policy
        .issuers
        .iter()
        .map(|(_, issuer)| issuer_view(&policy, issuer))
        .collect();
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    list
}

/// One issuer of [`issuers_view`].
fn issuer_view(policy: &Policy, issuer: &Issuer) -> Value {
    let mut item = json!({
        "name": issuer.config.name,
        "kind": issuer.config.kind.as_str(),
        "iss": issuer.config.policy.issuer,
        "read_only": policy.file_items.owns("issuers", &issuer.config.name),
    });
    if let (Some(obj), Value::Object(detail)) = (item.as_object_mut(), issuer.keys.detail()) {
        obj.extend(detail);
    }
    item
}

/// The rules in force, in order, with where each came from and how often it decided;
/// the reload generation and the last reload's error.
pub fn rules_view(st: &AppState) -> Value {
    let policy = st.policy();
    let status = st.reload_status();
    let rules: Vec<Value> = policy
        .rules
        .summaries()
        .enumerate()
        .map(|(i, r)| {
            let origin = policy.rule_origins.get(i);
            let (allow, deny) = st.hits.of(r.name);
            json!({
                "name": r.name,
                "effect": r.effect,
                "issuer": r.issuer,
                "targets": r.audiences.iter().map(|a| &**a).collect::<Vec<_>>(),
                "description": r.description,
                "file": origin.map(|o| o.file.display().to_string()),
                "line": origin.and_then(|o| o.line),
                "hits": {"allow": allow, "deny": deny},
            })
        })
        .collect();
    json!({
        "generation": status.generation,
        "last_reload_error": status.last_error,
        "name_clash": status.name_clash,
        "denied_without_rule": st.hits.unmatched(),
        "rules": rules,
    })
}

/// The signing keys and their state: from `key_dir` with its rotation schedule, or the
/// keys the running signer holds (KMS keys, `serve --dev`'s key).
pub async fn keys_view(st: &Arc<AppState>) -> Result<Value, AdminError> {
    let signing = st.signing();
    let listing = match (&signing.key_dir, &signing.kms) {
        // Reading the key directory is file I/O: off the request's worker.
        (Some(_), None) => {
            let st = st.clone();
            tokio::task::spawn_blocking(move || {
                crate::signing::list_keys(st.signing(), crate::signing::unix_now())
            })
            .await
            .map_err(|e| AdminError::Unavailable(format!("signing keys: {e}")))?
            .map_err(|e| AdminError::Unavailable(format!("signing keys: {e}")))?
        }
        _ => st.signer.listing(),
    };
    serde_json::to_value(&listing).map_err(|e| AdminError::Unavailable(e.to_string()))
}

/// Fetch an issuer's keys now (whatever the cooldown) and answer its state after.
pub async fn refetch(st: &AppState, name: &str) -> Result<Value, AdminError> {
    let policy = st.policy();
    let issuer = policy
        .issuer_named(name)
        .ok_or_else(|| AdminError::NoIssuer(name.to_owned()))?;
    issuer.keys.refresh(true).await;
    Ok(issuer_view(&policy, issuer))
}

/// Explain one exchange against the policy in force, with its key caches: nothing is
/// issued, no replay is recorded, the token is neither kept nor logged.
pub async fn explain(st: &AppState, input: &ExplainInput) -> Result<Explained, ExplainError> {
    let policy = st.policy();
    let ctx = ExplainContext {
        policy: &policy,
        public_url: &st.server.public_url,
        max_issued_lifetime: st.server.max_issued_lifetime,
        cloud_timeout: std::time::Duration::from_secs(st.server.cloud_timeout),
        now: st.clock.unix(),
    };
    crate::explain::explain_input(&ctx, input).await
}

/// Why an explanation could not be made, as the admin API answers it: an input problem
/// is 422, keys or a service that cannot be reached for now 503.
pub fn explain_error(e: ExplainError) -> AdminError {
    match e {
        ExplainError::Unavailable(_) | ExplainError::Http(_) => AdminError::Unavailable(e.to_string()),
        other => {
            let field = match &other {
                ExplainError::NoTarget => "audience",
                ExplainError::NoIssuerNamed(_) | ExplainError::NoIssuerWithIss(_) | ExplainError::NoIss => {
                    "issuer"
                }
                ExplainError::UnsupportedTokenType(_) => "subject_token_type",
                _ => "",
            };
            let message = match &other {
                ExplainError::NoTarget => "give at least one audience or resource".to_owned(),
                ExplainError::BothSubjects => "give subject_token or claims, not both".to_owned(),
                ExplainError::NoSubject => "give subject_token or claims".to_owned(),
                ExplainError::NoIss => "the claims have no `iss`; give issuer".to_owned(),
                e => e.to_string(),
            };
            AdminError::Invalid(vec![json!({"field": field, "message": message})])
        }
    }
}

async fn get_issuers(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, AdminError> {
    guard(&st, &headers)?;
    Ok(Json(json!({"issuers": issuers_view(&st)})).into_response())
}

async fn post_refetch(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    guard(&st, &headers)?;
    Ok(Json(refetch(&st, &name).await?).into_response())
}

async fn get_rules(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, AdminError> {
    guard(&st, &headers)?;
    Ok(Json(rules_view(&st)).into_response())
}

async fn get_keys(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, AdminError> {
    guard(&st, &headers)?;
    Ok(Json(keys_view(&st).await?).into_response())
}

/// A string member, or a list of strings (`audience` and `resource` take either).
fn strings(body: &Map<String, Value>, key: &str) -> Result<Vec<String>, AdminError> {
    let bad = || {
        AdminError::Invalid(vec![
            json!({"field": key, "message": "must be a string or a list of strings"}),
        ])
    };
    match body.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// `POST /admin/v1/explain`: a JSON object with `subject_token` (and optionally
/// `subject_token_type`, `actor_token`) or `claims` (and optionally `issuer`), plus
/// `audience` and/or `resource`, `scope`, `requested_token_type`, `dpop`. Answers the
/// document `fedbroker explain --json` prints.
async fn post_explain(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AdminError> {
    guard(&st, &headers)?;
    let admin = st.admin.as_ref().ok_or(AdminError::Unauthenticated)?;
    let body = super::routes::read_body(admin, &headers, body).await?;
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(AdminError::Invalid(vec![
                json!({"field": "", "message": "the body must be a JSON object"}),
            ]));
        }
    };
    let input = explain_input(&body)?;
    let explained = explain(&st, &input).await.map_err(explain_error)?;
    Ok(Json(explained.doc).into_response())
}

/// The body of `POST /admin/v1/explain` as explain's input.
pub fn explain_input(body: &Map<String, Value>) -> Result<ExplainInput, AdminError> {
    let string = |key: &str| -> Result<Option<String>, AdminError> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(_) => Err(AdminError::Invalid(vec![
                json!({"field": key, "message": "must be a string"}),
            ])),
        }
    };
    let flag = |key: &str| body.get(key).and_then(Value::as_bool).unwrap_or(false);
    let claims = match body.get("claims") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(c.clone()),
        Some(_) => {
            return Err(AdminError::Invalid(vec![
                json!({"field": "claims", "message": "must be a JSON object"}),
            ]));
        }
    };
    let requested = string("requested_token_type")?;
    let actor_claims = match body.get("actor") {
        None | Some(Value::Null) => None,
        Some(Value::Object(actor)) => match actor.get("claims") {
            Some(Value::Object(claims)) => Some(crate::explain::ActorClaims {
                issuer: actor.get("issuer").and_then(Value::as_str).map(str::to_owned),
                claims: claims.clone(),
            }),
            _ => {
                return Err(AdminError::Invalid(vec![
                    json!({"field": "actor.claims", "message": "must be a JSON object"}),
                ]));
            }
        },
        Some(_) => {
            return Err(AdminError::Invalid(vec![
                json!({"field": "actor", "message": "must be an object {issuer, claims}"}),
            ]));
        }
    };
    Ok(ExplainInput {
        subject_token: string("subject_token")?,
        subject_token_type: string("subject_token_type")?,
        claims,
        issuer: string("issuer")?,
        actor_token: string("actor_token")?,
        actor_claims,
        audiences: strings(body, "audience")?,
        resources: strings(body, "resource")?,
        scope: string("scope")?,
        access_token: requested.as_deref() == Some(crate::exchange::TokenType::AccessToken.urn()),
        dpop: flag("dpop"),
        client_cert: None,
    })
}
