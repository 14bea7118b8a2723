//! `X-Request-Id`: every answer of every listener carries one, taken from the caller's
//! `X-Request-Id` when it is a sane one (1 to 128 characters of `A-Z a-z 0-9 . _ : -`),
//! else made here (32 hex characters of randomness). The id is in the request's
//! extensions ([`RequestId`]) for the audit line, which also names the replica that
//! answered ([`replica`]).

use std::sync::OnceLock;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller-given id kept.
pub const MAX_LEN: usize = 128;

/// The request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

fn sane(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let ok = (1..=MAX_LEN).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then_some(text)
}

fn fresh() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // The system's randomness failed: a time-based id is still unique enough to
        // correlate log lines.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The middleware: find or make the id, hand it to the route, put it on the answer.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = match req.headers().get(&HEADER).and_then(sane) {
        Some(given) => given.to_owned(),
        None => fresh(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER.clone(), value);
    }
    resp
}

/// The replica that answers: `FEDBROKER_REPLICA` when set, else the host name (a pod's
/// name in Kubernetes).
pub fn replica() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("FEDBROKER_REPLICA")
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ids_are_kept_only_when_sane() {
        let ok = HeaderValue::from_static("req-123_abc:4.5");
        assert_eq!(sane(&ok), Some("req-123_abc:4.5"));
        for bad in ["", "has space", "semi;colon", "quote\"", "é"] {
            if let Ok(v) = HeaderValue::from_str(bad) {
                assert_eq!(sane(&v), None, "{bad}");
            }
        }
        let long = HeaderValue::from_str(&"a".repeat(MAX_LEN + 1)).expect("header");
        assert_eq!(sane(&long), None);
        let id = fresh();
        assert_eq!(id.len(), 32);
        assert_ne!(id, fresh());
    }
}
