//! Local stand-ins for the clouds' token services that cannot run here, for the
//! tests of native credentials out (issue 12 §1):
//!
//! - [`google::FakeGoogle`]: the Security Token Service (`POST /v1/token`) and IAM
//!   Credentials (`POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken`) on
//!   one base URL.
//! - [`aws_sts_errors::StsErrors`]: an AWS STS that refuses every request with one
//!   documented error (moto plays the AWS STS that answers).
//! - [`entra::FakeEntra`]: the Microsoft Entra token endpoint
//!   (`POST /{tenant}/oauth2/v2.0/token`, client credentials with a federated client
//!   assertion).
//!
//! Each verifies the presented JWT the way its cloud documents it (module docs name
//! the pages): discovery and JWKS of the configured issuer fetched over HTTP at every
//! exchange, `kid` and `alg`, signature, then the claims; and refuses with its
//! cloud's status and error body. Like [`crate::fake_issuer`], each runs on its own
//! thread with its own runtime, so it answers while a test blocks. `start` serves
//! plain HTTP; `start_https` puts a TLS terminator in front (a certificate for
//! `127.0.0.1` from a fresh private CA, `ca_pem()`), for clients that insist on TLS.
//! A setup's `issuer_ca_file` lets a fake fetch the keys of an HTTPS issuer with a
//! test CA.
//!
//! Shared by both: [`Fault`] injection, and [`RecordedRequest`]s in which a presented
//! JWT is replaced by its decoded header and claims and a bearer token by whether
//! the fake knows it: a record never holds a usable credential.

pub mod aws_sts_errors;
pub mod entra;
pub mod google;
pub mod metadata;
mod tls;
pub(crate) mod verify;

use std::sync::{Mutex, MutexGuard};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

pub use entra::{EntraSetup, FakeEntra, FederatedCredential, IssuedEntraToken};
pub use google::{FakeGoogle, GoogleEndpoint, GoogleSetup, IssuedGoogleToken};

/// What a fake does with the next requests, instead of or besides its normal work.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    /// Normal behaviour.
    #[default]
    None,
    /// Answer every request with this HTTP status and the cloud's error body for it
    /// (e.g. 429 `RESOURCE_EXHAUSTED` at Google, 503 `temporarily_unavailable` at Entra).
    Status(u16),
    /// Accept the connection and read the request, never answer.
    Stall,
    /// Refuse like a policy decision of the cloud: Google STS 400 `invalid_grant`,
    /// IAM Credentials 403 `PERMISSION_DENIED`, Entra 400 `AADSTS70021`.
    Refuse,
}

/// One request a fake received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The form or JSON fields. `subject_token` and `client_assertion` hold
    /// `{"header": {...}, "claims": {...}}` (the decoded, unverified parts) instead of
    /// the token; `authorization` (IAM Credentials) holds `"Bearer <known>"` or
    /// `"Bearer <unknown>"` or the scheme alone.
    pub fields: Value,
}

/// The state both fakes share: the fault and what they received.
#[derive(Default)]
pub(crate) struct Common {
    fault: Mutex<Fault>,
    requests: Mutex<Vec<RecordedRequest>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Common {
    pub(crate) fn fault(&self) -> Fault {
        lock(&self.fault).clone()
    }

    pub(crate) fn set_fault(&self, fault: Fault) {
        *lock(&self.fault) = fault;
    }

    pub(crate) fn record(&self, method: &str, path: &str, fields: Value) {
        lock(&self.requests).push(RecordedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            fields,
        });
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }
}

/// Never answer: the connection stays open until the client gives up or the fake stops.
pub(crate) async fn stall() -> Response {
    std::future::pending::<()>().await;
    unreachable!("pending never completes")
}

/// A request body as string fields: form-encoded, or a JSON object (string values as
/// is, other values as their JSON text). `None` when it is neither.
pub(crate) fn body_fields(headers: &HeaderMap, body: &[u8]) -> Option<Map<String, Value>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        Some(
            map.into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k, Value::String(s)),
                    other => (k, Value::String(other.to_string())),
                })
                .collect(),
        )
    } else {
        let mut out = Map::new();
        for (k, v) in form_urlencoded::parse(body) {
            out.insert(k.into_owned(), Value::String(v.into_owned()));
        }
        Some(out)
    }
}

/// A JSON response with `status`, and `Retry-After` when given.
pub(crate) fn json_response(status: u16, body: Value, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&seconds.to_string()).expect("digits"),
        );
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An opaque random token with a recognisable prefix.
pub(crate) fn opaque_token(prefix: &str) -> String {
    format!("{prefix}{}", crate::tokens::random_hex(32))
}

/// `unix` seconds as RFC 3339 UTC (`2026-12-07T02:00:00Z`), as Google writes `expireTime`.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Where a fake serves: a loopback port, with a TLS front (`start_https`) or not.
pub(crate) struct Served {
    addr: std::net::SocketAddr,
    tls: Option<tls::TlsFront>,
    running: Running,
}

impl Served {
    /// Serve `app` on a fresh loopback port; with `https`, behind a TLS front.
    pub(crate) fn start(name: &str, app: axum::Router, https: bool) -> Served {
        let (listener, addr) = crate::fake_issuer::bind_loopback(name);
        let running = Running::serve(name, listener, app);
        let tls = https.then(|| tls::TlsFront::start(addr));
        Served { addr, tls, running }
    }

    /// `http://127.0.0.1:PORT`, or the TLS front's `https://` URL; no trailing slash.
    pub(crate) fn url(&self) -> String {
        match &self.tls {
            Some(tls) => tls.url().to_owned(),
            None => format!("http://{}", self.addr),
        }
    }

    /// The CA certificate (PEM file) of the TLS front, if any.
    pub(crate) fn ca_pem(&self) -> Option<std::path::PathBuf> {
        self.tls.as_ref().map(tls::TlsFront::ca_pem)
    }

    pub(crate) fn stop(&self) {
        self.running.stop();
    }
}

/// The shared state of a running fake and its stop handle; dropping stops it.
pub(crate) struct Running {
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Running {
    pub(crate) fn serve(name: &str, listener: std::net::TcpListener, app: axum::Router) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = crate::fake_issuer::serve_on_thread(name, listener, app, rx);
        Self {
            shutdown: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    pub(crate) fn stop(&self) {
        if let Some(tx) = lock(&self.shutdown).take() {
            let _ = tx.send(());
        }
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Seconds a fault-injected 429/503 asks the client to wait.
pub(crate) const FAULT_RETRY_AFTER: u64 = 1;
