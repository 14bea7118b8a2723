//! Entity tags of admin items, and the `If-Match` / `If-None-Match` preconditions.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::Value;

use super::{AdminError, hex, sha256};

/// The ETag of an item: a digest of its JSON.
pub(super) fn etag(value: &Value) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    format!("\"{}\"", &hex(&sha256(&bytes))[..32])
}

pub(super) fn with_etag(status: StatusCode, value: &Value) -> Response {
    let mut resp = (status, Json(value.clone())).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(value)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// `If-Match` / `If-None-Match` against the current item: `Err(412)` when they fail.
pub(super) fn preconditions(headers: &HeaderMap, current: Option<&Value>) -> Result<(), AdminError> {
    let failed = || AdminError::PreconditionFailed;
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

/// The digest of an item in the audit (`before`, `after`): its ETag's hex.
pub(super) fn digest(value: &Value) -> String {
    etag(value).trim_matches('"').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
