//! `telemetry:`: OpenTelemetry traces exported over OTLP/HTTP (`telemetry.traces`), off
//! unless an endpoint is given, in the file or in the standard environment variable
//! [`TRACES_ENDPOINT_ENV`] (the file wins). Restart-only, like `server:`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use marked_yaml::Node;
use reqwest::Url;

use super::error::Errors;
use super::raw::{RawTelemetry, RawTraces};
use super::replay::parse_millis;
use super::yaml::child;

/// The OpenTelemetry SDKs' variable for the traces endpoint, honoured when the file
/// names none.
pub const TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const DEFAULT_SERVICE_NAME: &str = "fedbroker";
pub const DEFAULT_TRACES_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_TRACES_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest `service_name` accepted.
pub const MAX_SERVICE_NAME: usize = 255;

/// `telemetry:`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    /// `None`: no traces (nothing is exported, no span is made).
    pub traces: Option<TracesConfig>,
}

/// `telemetry.traces` with an endpoint. `Debug` shows the headers' names only: their
/// values are often API keys.
#[derive(Clone, PartialEq)]
pub struct TracesConfig {
    /// Where spans are POSTed (OTLP/HTTP, protobuf), e.g. `http://collector:4318/v1/traces`:
    /// the full URL, nothing is appended.
    pub endpoint: Url,
    /// Whether the endpoint came from [`TRACES_ENDPOINT_ENV`] rather than the file.
    pub endpoint_from_env: bool,
    /// The share of traces started here that are sampled (0 to 1); a caller's sampled
    /// flag decides for traces it started (parent-based).
    pub sample_ratio: f64,
    /// `service.name`; `None`: `OTEL_SERVICE_NAME` when set, else [`DEFAULT_SERVICE_NAME`].
    pub service_name: Option<String>,
    /// Sent with every export (e.g. an API key).
    pub headers: BTreeMap<String, String>,
    /// Bound on one export, retries included.
    pub timeout: Duration,
}

impl fmt::Debug for TracesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracesConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("endpoint_from_env", &self.endpoint_from_env)
            .field("sample_ratio", &self.sample_ratio)
            .field("service_name", &self.service_name)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why an OTLP endpoint is refused (the URL itself is not repeated: it may carry a key).
pub fn check_endpoint(text: &str) -> Result<Url, &'static str> {
    let url = Url::parse(text.trim())
        .map_err(|_| "not a URL; expected e.g. http://otel-collector:4318/v1/traces")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL (OTLP over HTTP; gRPC is not supported)");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; put an API key in telemetry.traces.headers");
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment");
    }
    Ok(url)
}

/// The traces endpoint from the environment alone (`serve --dev`, which has no file):
/// `Ok(None)` when [`TRACES_ENDPOINT_ENV`] is unset or empty.
pub fn traces_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<TracesConfig>, String> {
    match env(TRACES_ENDPOINT_ENV).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(text) => check_endpoint(&text)
            .map(|endpoint| Some(traces_at(endpoint, true)))
            .map_err(|e| format!("{TRACES_ENDPOINT_ENV}: {e}")),
    }
}

/// The defaults, sending to `endpoint`.
fn traces_at(endpoint: Url, endpoint_from_env: bool) -> TracesConfig {
    TracesConfig {
        endpoint,
        endpoint_from_env,
        sample_ratio: 1.0,
        service_name: None,
        headers: BTreeMap::new(),
        timeout: DEFAULT_TRACES_TIMEOUT,
    }
}

pub(super) fn build_telemetry(
    raw: RawTelemetry,
    node: Option<&Node>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> TelemetryConfig {
    let traces_node = node.and_then(|n| child(n, "traces"));
    let raw = raw.traces.unwrap_or_default();
    let traces = build_traces(raw, traces_node, env, errors);
    TelemetryConfig { traces }
}

fn build_traces(
    raw: RawTraces,
    node: Option<&Node>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) -> Option<TracesConfig> {
    let at = |k: &str| node.and_then(|n| child(n, k));
    // Every field is checked, with or without an endpoint: `check` reports them all.
    let sample_ratio = match raw.sample_ratio {
        None => 1.0,
        Some(r) if r.is_finite() && (0.0..=1.0).contains(&r) => r,
        Some(_) => {
            errors.at(
                at("sample_ratio"),
                "telemetry.traces.sample_ratio",
                "must be a number from 0 to 1 (1: every trace started here)",
            );
            1.0
        }
    };
    let service_name = raw.service_name.and_then(|name| {
        let trimmed = name.trim();
        if trimmed.is_empty() || trimmed.len() > MAX_SERVICE_NAME || trimmed.chars().any(char::is_control) {
            errors.at(
                at("service_name"),
                "telemetry.traces.service_name",
                format!("must be 1 to {MAX_SERVICE_NAME} characters, no control characters"),
            );
            None
        } else {
            Some(trimmed.to_owned())
        }
    });
    let mut headers = BTreeMap::new();
    for (name, value) in raw.headers.unwrap_or_default() {
        let header_node = at("headers").and_then(|h| child(h, &name));
        let field = format!("telemetry.traces.headers.{name}");
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.at(header_node, field, "not a valid HTTP header name");
        } else if reqwest::header::HeaderValue::from_str(&value).is_err() {
            // The value is not repeated: it is often a key.
            errors.at(
                header_node,
                field,
                "not a valid HTTP header value (visible ASCII, spaces and tabs)",
            );
        } else {
            headers.insert(name, value);
        }
    }
    let timeout = match raw.timeout.as_deref().map(parse_millis) {
        None => DEFAULT_TRACES_TIMEOUT,
        Some(Ok(t)) if !t.is_zero() && t <= MAX_TRACES_TIMEOUT => t,
        Some(Ok(_)) => {
            errors.at(
                at("timeout"),
                "telemetry.traces.timeout",
                "must be more than 0 and at most 60s",
            );
            DEFAULT_TRACES_TIMEOUT
        }
        Some(Err(e)) => {
            errors.at(at("timeout"), "telemetry.traces.timeout", e.to_string());
            DEFAULT_TRACES_TIMEOUT
        }
    };
    let endpoint = match raw.endpoint {
        Some(text) => match check_endpoint(&text) {
            Ok(url) => Some((url, false)),
            Err(e) => {
                errors.at(at("endpoint"), "telemetry.traces.endpoint", e);
                None
            }
        },
        None => match traces_from_env(env) {
            Ok(from_env) => from_env.map(|t| (t.endpoint, true)),
            Err(e) => {
                errors.at(None, "telemetry.traces.endpoint", e);
                None
            }
        },
    };
    let (endpoint, endpoint_from_env) = endpoint?;
    Some(TracesConfig {
        sample_ratio,
        service_name,
        headers,
        timeout,
        ..traces_at(endpoint, endpoint_from_env)
    })
}
