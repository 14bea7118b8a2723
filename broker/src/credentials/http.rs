//! The HTTP side of the REST clouds (Google, Entra): clients per trust setting, and one
//! POST with bounded retries and a capped answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use federation_rules::Cloud;
use federation_rules::credentials::EndpointTrust;
use reqwest::StatusCode;
use serde_json::Value;

use super::{CloudError, MAX_ATTEMPTS, backoff};

/// The largest cloud answer read, in bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// reqwest clients, one per (`ca_file`, `danger_allow_insecure_endpoint`), built on
/// first use. The keys come from the rules, so there are as many as rules say.
pub(super) struct Clients {
    timeout: Duration,
    built: Mutex<HashMap<(Option<String>, bool), reqwest::Client>>,
}

impl Clients {
    pub(super) fn new(timeout: Duration) -> Clients {
        Clients {
            timeout,
            built: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn client(&self, cloud: Cloud, trust: &EndpointTrust) -> Result<reqwest::Client, CloudError> {
        let key = (trust.ca_file.clone(), trust.danger_allow_insecure_endpoint);
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = built.get(&key) {
            return Ok(client.clone());
        }
        let client = build(self.timeout, trust).map_err(|e| {
            tracing::error!(cloud = %cloud, error = %e, "cannot set up the HTTP client for a cloud");
            CloudError::unavailable(cloud, e)
        })?;
        built.insert(key, client.clone());
        Ok(client)
    }
}

fn build(timeout: Duration, trust: &EndpointTrust) -> Result<reqwest::Client, String> {
    // No per-request timeout: the whole call, retries included, runs under the one
    // `server.cloud_timeout` of `Clouds::obtain`, which names it when it runs out.
    let mut b = reqwest::Client::builder()
        .connect_timeout(timeout)
        .no_proxy()
        // A token is in every request: never follow a redirect with it.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("fedbroker/", env!("CARGO_PKG_VERSION")));
    if !trust.danger_allow_insecure_endpoint {
        b = b.https_only(true);
    }
    if let Some(path) = &trust.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {path}: {e}"))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("ca_file {path}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("ca_file {path}: no certificate"));
        }
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}

/// A cloud's answer: its status and JSON body (`Value::Null` when the body is not JSON).
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: Value,
}

/// Sends the request `make` builds, again after throttling (429), a 5xx or a transport
/// error, at most [`MAX_ATTEMPTS`] times and never past `deadline`. Any other answer is
/// returned as is. `what` names the endpoint in reasons ("Google STS").
pub(super) async fn send(
    cloud: Cloud,
    what: &str,
    deadline: Instant,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Answer, CloudError> {
    let mut attempt = 1;
    loop {
        let problem = match make().send().await {
            Ok(resp) if retryable(resp.status()) => format!("{what} answered {}", describe(resp).await),
            Ok(resp) => {
                let status = resp.status();
                let body = read_json(resp)
                    .await
                    .map_err(|e| CloudError::unavailable(cloud, format!("{what}: {e}")))?;
                return Ok(Answer { status, body });
            }
            // Transport errors name the URL, never a body: no token in them.
            Err(e) => format!("{what}: {}", transport(&e)),
        };
        attempt += 1;
        let pause = backoff(attempt);
        if attempt > MAX_ATTEMPTS || Instant::now() + pause >= deadline {
            return Err(CloudError::unavailable(cloud, problem));
        }
        tracing::debug!(cloud = %cloud, problem = %problem, "retrying a cloud request");
        tokio::time::sleep(pause).await;
    }
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        crate::error::with_sources(e)
    }
}

/// "503 (error text)" for a failed answer.
async fn describe(resp: reqwest::Response) -> String {
    let status = resp.status();
    match read_json(resp).await {
        Ok(body) => match error_text(&body) {
            Some(text) => format!("{status}: {text}"),
            None => status.to_string(),
        },
        Err(_) => status.to_string(),
    }
}

/// The error of an OAuth-style body (`error`, `error_description`) or a Google API one
/// (`error.status`, `error.message`).
pub(super) fn error_text(body: &Value) -> Option<String> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match &body["error"] {
        Value::String(code) => Some(match body["error_description"].as_str() {
            Some(description) => format!("{code}: {description}"),
            None => code.clone(),
        }),
        Value::Object(e) => {
            let status = e.get("status").and_then(text);
            let message = e.get("message").and_then(text);
            match (status, message) {
                (Some(s), Some(m)) => Some(format!("{s}: {m}")),
                (s, m) => s.or(m),
            }
        }
        _ => None,
    }
}

async fn read_json(mut resp: reqwest::Response) -> Result<Value, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The answer of a refusal or an unusable success, as a [`CloudError`]: 4xx is a
/// refusal, anything else (a 2xx without the expected members, 3xx) unavailability.
pub(super) fn unexpected(cloud: Cloud, what: &str, answer: &Answer) -> CloudError {
    let text = error_text(&answer.body).unwrap_or_else(|| "no error description".into());
    if answer.status.is_client_error() {
        CloudError::refused(cloud, format!("{what} answered {}: {text}", answer.status))
    } else {
        CloudError::unavailable(
            cloud,
            format!("{what} answered {} without the expected members", answer.status),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_texts() {
        assert_eq!(
            error_text(&json!({"error": "invalid_grant", "error_description": "bad aud"})).as_deref(),
            Some("invalid_grant: bad aud")
        );
        assert_eq!(
            error_text(&json!({"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "no"}}))
                .as_deref(),
            Some("PERMISSION_DENIED: no")
        );
        assert_eq!(error_text(&json!({"ok": 1})), None);
    }
}
