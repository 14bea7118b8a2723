//! `server:`: the public listener, its URL, limits and token lifetimes.

use std::net::SocketAddr;

use federation_rules::duration::parse_duration;
use marked_yaml::Node;
use reqwest::Url;

use super::error::Errors;
use super::model::*;
use super::raw::RawServer;
use super::yaml::child;

/// Why `server.public_url` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicUrlError {
    #[error("not a URL: {0}")]
    NotAUrl(url::ParseError),
    #[error("must be an http:// or https:// URL")]
    NotHttp,
    #[error("must not have a query, fragment or credentials")]
    QueryFragmentOrCredentials,
    #[error("must name a host")]
    NoHost,
}

pub(super) fn duration_field(
    value: Option<&str>,
    default: u64,
    node: Option<&Node>,
    field: &str,
    errors: &mut Errors,
) -> u64 {
    match value {
        None => default,
        Some(text) => match parse_duration(text) {
            Ok(secs) => secs,
            Err(e) => {
                errors.at(node, field, e.to_string());
                default
            }
        },
    }
}

pub(super) fn build_server(raw: RawServer, node: Option<&Node>, errors: &mut Errors) -> ServerConfig {
    let field_node = |k: &str| node.and_then(|n| child(n, k));
    let limits = build_limits(&raw, node, errors);
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            errors.at(
                field_node("listen"),
                "server.listen",
                "expected address:port, e.g. 127.0.0.1:8080",
            );
            DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
        }
    };
    let public_url = match raw.public_url {
        None => format!("http://{listen}"),
        Some(text) => match validate_public_url(&text) {
            Ok(u) => u,
            Err(e) => {
                errors.at(field_node("public_url"), "server.public_url", e.to_string());
                format!("http://{listen}")
            }
        },
    };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes < 1024 {
        errors.at(
            field_node("max_body_bytes"),
            "server.max_body_bytes",
            "must be at least 1024",
        );
    }
    let clock_skew = duration_field(
        raw.clock_skew.as_deref(),
        DEFAULT_CLOCK_SKEW,
        field_node("clock_skew"),
        "server.clock_skew",
        errors,
    );
    if clock_skew > 600 {
        errors.at(
            field_node("clock_skew"),
            "server.clock_skew",
            "must be at most 10m",
        );
    }
    let max_issued_lifetime = duration_field(
        raw.max_issued_lifetime.as_deref(),
        DEFAULT_MAX_ISSUED_LIFETIME,
        field_node("max_issued_lifetime"),
        "server.max_issued_lifetime",
        errors,
    );
    if max_issued_lifetime == 0 || max_issued_lifetime > 12 * 3600 {
        errors.at(
            field_node("max_issued_lifetime"),
            "server.max_issued_lifetime",
            "must be between 1s and 12h",
        );
    }
    ServerConfig {
        listen,
        public_url,
        max_body_bytes,
        clock_skew,
        max_issued_lifetime,
        limits,
    }
}

pub(super) fn build_limits(raw: &RawServer, node: Option<&Node>, errors: &mut Errors) -> ConnectionLimits {
    let field_node = |k: &str| node.and_then(|n| child(n, k));
    let mut timeout = |value: Option<&str>, default: u64, key: &str| {
        let field = format!("server.{key}");
        let secs = duration_field(value, default, field_node(key), &field, errors);
        if !(1..=600).contains(&secs) {
            errors.at(field_node(key), &field, "must be between 1s and 10m");
            return default;
        }
        secs
    };
    let header_timeout = timeout(
        raw.header_timeout.as_deref(),
        DEFAULT_HEADER_TIMEOUT,
        "header_timeout",
    );
    let body_timeout = timeout(raw.body_timeout.as_deref(), DEFAULT_BODY_TIMEOUT, "body_timeout");
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=MAX_MAX_CONNECTIONS).contains(&max_connections) {
        errors.at(
            field_node("max_connections"),
            "server.max_connections",
            format!("must be between 1 and {MAX_MAX_CONNECTIONS}"),
        );
    }
    ConnectionLimits {
        header_timeout: std::time::Duration::from_secs(header_timeout),
        body_timeout: std::time::Duration::from_secs(body_timeout),
        max_connections: max_connections.clamp(1, MAX_MAX_CONNECTIONS),
    }
}

pub(super) fn validate_public_url(text: &str) -> Result<String, PublicUrlError> {
    let url = Url::parse(text).map_err(PublicUrlError::NotAUrl)?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(PublicUrlError::NotHttp);
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(PublicUrlError::QueryFragmentOrCredentials);
    }
    if url.host_str().is_none() {
        return Err(PublicUrlError::NoHost);
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}
