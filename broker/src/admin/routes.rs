//! The admin API's routes and handlers.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::change::{Op, change};
use super::etag::with_etag;
use super::openapi::openapi_document;
use super::{Admin, AdminError, Kind};
use crate::config::AdminState;

/// The admin API's routes; their state is the admin API alone.
pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
        .route("/admin/v1/openapi.json", get(openapi))
        .merge(kind_routes(Kind::Issuers))
        .merge(kind_routes(Kind::Rules))
}

/// `/admin/v1/{kind}` (`GET`: the list) and `/admin/v1/{kind}/{name}` (`GET`, `PUT`,
/// `DELETE`): the same handlers for issuers and rules, told which kind they serve.
fn kind_routes(kind: Kind) -> Router<Arc<Admin>> {
    Router::new()
        .route(
            &format!("/admin/v1/{}", kind.as_str()),
            get(move |State(admin): State<Arc<Admin>>, headers| list(admin, headers, kind)),
        )
        .route(
            &format!("/admin/v1/{}/{{name}}", kind.as_str()),
            get(move |State(admin): State<Arc<Admin>>, headers, Path(name)| {
                get_one(admin, headers, kind, name)
            })
            .put(
                move |State(admin): State<Arc<Admin>>, headers, Path(name), body| {
                    put(admin, headers, kind, name, body)
                },
            )
            .delete(move |State(admin): State<Arc<Admin>>, headers, Path(name)| {
                delete(admin, headers, kind, name)
            }),
        )
}

/// Authenticate (the caller's identity for the audit log), or answer 401.
pub(super) fn guard(admin: &Admin, headers: &HeaderMap) -> Result<String, AdminError> {
    admin
        .tokens
        .authenticate(headers)
        .ok_or(AdminError::Unauthenticated)
}

/// The policy's warnings after a change, one `Warning: 299 fedbroker "..."` header each
/// (RFC 7234 §5.5 syntax, as the Kubernetes API server sends them); the body stays the
/// item itself. Characters a header cannot carry are written `\u{..}`.
pub(super) fn with_warnings(mut resp: Response, warnings: &[federation_rules::PolicyWarning]) -> Response {
    for warning in warnings {
        let mut text = String::from("299 fedbroker \"");
        for c in warning.message.chars() {
            match c {
                '"' | '\\' => {
                    text.push('\\');
                    text.push(c);
                }
                ' '..='~' => text.push(c),
                other => text.push_str(&format!("\\u{{{:x}}}", u32::from(other))),
            }
        }
        text.push('"');
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

pub(super) async fn list(admin: Arc<Admin>, headers: HeaderMap, kind: Kind) -> Result<Response, AdminError> {
    guard(&admin, &headers)?;
    let state = admin.items().await?;
    Ok(Json(effective_list(&admin.live.current().file_items, &state, kind)).into_response())
}

/// The whole effective set of `kind`: the configuration file's items first (in file
/// order, each with `"read_only": true`: the admin API may not change them), then the
/// admin API's (by name, as stored, so each can be sent back with `PUT`).
pub(super) fn effective_list(file: &crate::config::FileItems, state: &AdminState, kind: Kind) -> Vec<Value> {
    let mut list: Vec<Value> = file
        .of(kind.as_str())
        .iter()
        .map(|(_, item)| {
            let mut item = item.clone();
            if let Some(map) = item.as_object_mut() {
                map.insert("read_only".into(), Value::Bool(true));
            }
            item
        })
        .collect();
    list.extend(kind.map(state).values().cloned());
    list
}

pub(super) async fn get_one(
    admin: Arc<Admin>,
    headers: HeaderMap,
    kind: Kind,
    name: String,
) -> Result<Response, AdminError> {
    guard(&admin, &headers)?;
    let state = admin.items().await?;
    match kind.map(&state).get(&name) {
        Some(v) => Ok(with_etag(StatusCode::OK, v)),
        None => {
            let in_file = admin.live.current().file_items.owns(kind.as_str(), &name);
            Err(AdminError::NotFound { kind, name, in_file })
        }
    }
}

/// The body of an authenticated request, at most `server.max_body_bytes` (413 beyond,
/// like `/token`). Called only once the bearer token checked out: an anonymous client
/// never makes the broker read (or wait for) a body.
pub(super) async fn read_body(admin: &Admin, headers: &HeaderMap, body: Body) -> Result<Bytes, AdminError> {
    let limit = admin.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(AdminError::BodyTooLarge(limit));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| AdminError::BodyTooLarge(limit))
}

/// A body problem that is not the configuration's: `field` and `message` only.
fn body_problem(field: &str, message: String) -> AdminError {
    AdminError::Invalid(vec![json!({"field": field, "message": message})])
}

pub(super) async fn put(
    admin: Arc<Admin>,
    headers: HeaderMap,
    kind: Kind,
    name: String,
    body: Body,
) -> Result<Response, AdminError> {
    let who = guard(&admin, &headers)?;
    let body = read_body(&admin, &headers, body).await?;
    let mut value: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Err(body_problem("", "the body must be a JSON object".into())),
        Err(e) => return Err(body_problem("", format!("not JSON: {e}"))),
    };
    match value.get("name") {
        None => value["name"] = Value::String(name.clone()),
        Some(Value::String(n)) if *n == name => {}
        Some(_) => {
            return Err(body_problem(
                "name",
                format!("must be `{name}`, the name in the path"),
            ));
        }
    }
    // The configuration file owns its names (as loaded by the policy in force; a file
    // changed since then is checked by the load that validates the change).
    if admin.live.current().file_items.owns(kind.as_str(), &name) {
        return Err(AdminError::OwnedByFile { kind, name });
    }
    change(admin, who, headers, kind, name, Op::Put(value)).await
}

pub(super) async fn delete(
    admin: Arc<Admin>,
    headers: HeaderMap,
    kind: Kind,
    name: String,
) -> Result<Response, AdminError> {
    let who = guard(&admin, &headers)?;
    let owned = admin.live.current().file_items.owns(kind.as_str(), &name);
    match change(admin, who, headers, kind, name.clone(), Op::Delete).await {
        // A name in both (a clash) is deleted from the admin state, which resolves it; a
        // name only the file defines is not the admin API's to delete.
        Err(AdminError::NothingToDelete(_)) if owned => Err(AdminError::OwnedByFile { kind, name }),
        other => other,
    }
}

/// The OpenAPI 3.1 description of this API. Public: it describes, it grants nothing.
pub(super) async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}
