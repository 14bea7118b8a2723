//! `server:`: the public listener, its URL, limits and token lifetimes.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;

use federation_rules::duration::parse_duration;
use marked_yaml::Node;
use reqwest::Url;

use super::error::Errors;
use super::model::*;
use super::raw::{RawDpopNonce, RawServer, RawTls};
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

/// `server.<key>` (`node` is the `server:` mapping): a duration, `default` when absent,
/// that must lie in `range`. One that does not parse is reported and gives `default`;
/// one outside `range` is reported with `message` and comes back as `Err(secs)`, for
/// the caller to keep or replace.
fn bounded_duration(
    value: Option<&str>,
    default: u64,
    range: RangeInclusive<u64>,
    message: &str,
    key: &str,
    node: Option<&Node>,
    errors: &mut Errors,
) -> Result<u64, u64> {
    let field_node = node.and_then(|n| child(n, key));
    let field = format!("server.{key}");
    let secs = duration_field(value, default, field_node, &field, errors);
    if range.contains(&secs) {
        Ok(secs)
    } else {
        errors.at(field_node, field, message);
        Err(secs)
    }
}

pub(super) fn build_server(
    raw: RawServer,
    node: Option<&Node>,
    base_dir: &Path,
    errors: &mut Errors,
) -> ServerConfig {
    let field_node = |k: &str| node.and_then(|n| child(n, k));
    let limits = build_limits(&raw, node, errors);
    let tls = raw
        .tls
        .and_then(|t| build_tls(t, field_node("tls"), "server.tls", base_dir, errors));
    let dpop_nonce = raw.dpop.and_then(|d| d.nonce).map(|n| {
        let nonce_node = field_node("dpop").and_then(|d| child(d, "nonce"));
        build_dpop_nonce(n, nonce_node, base_dir, errors)
    });
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
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = match raw.public_url {
        None => format!("{scheme}://{listen}"),
        Some(text) => match validate_public_url(&text) {
            Ok(u) => u,
            Err(e) => {
                errors.at(field_node("public_url"), "server.public_url", e.to_string());
                format!("{scheme}://{listen}")
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
    // Out of range, these two are reported and kept: the rules are compiled against the
    // lifetime as written.
    let clock_skew = bounded_duration(
        raw.clock_skew.as_deref(),
        DEFAULT_CLOCK_SKEW,
        0..=600,
        "must be at most 10m",
        "clock_skew",
        node,
        errors,
    )
    .unwrap_or_else(|secs| secs);
    let max_issued_lifetime = bounded_duration(
        raw.max_issued_lifetime.as_deref(),
        DEFAULT_MAX_ISSUED_LIFETIME,
        1..=12 * 3600,
        "must be between 1s and 12h",
        "max_issued_lifetime",
        node,
        errors,
    )
    .unwrap_or_else(|secs| secs);
    let cloud_timeout = bounded_duration(
        raw.cloud_timeout.as_deref(),
        DEFAULT_CLOUD_TIMEOUT,
        1..=60,
        "must be between 1s and 1m",
        "cloud_timeout",
        node,
        errors,
    )
    .unwrap_or(DEFAULT_CLOUD_TIMEOUT);
    ServerConfig {
        listen,
        public_url,
        max_body_bytes,
        clock_skew,
        max_issued_lifetime,
        cloud_timeout,
        limits,
        tls,
        dpop_nonce,
    }
}

/// `server.dpop.nonce` (`node` is its mapping): the lifetime within
/// [`DPOP_NONCE_LIFETIMES`], and the secret file read now, so that `check` reports a
/// missing, short or too open file and `serve` never starts with one.
fn build_dpop_nonce(
    raw: RawDpopNonce,
    node: Option<&Node>,
    base_dir: &Path,
    errors: &mut Errors,
) -> DpopNonceConfig {
    let at = |k: &str| node.and_then(|n| child(n, k).or(Some(n)));
    let field = "server.dpop.nonce.lifetime";
    let lifetime = duration_field(
        raw.lifetime.as_deref(),
        DEFAULT_DPOP_NONCE_LIFETIME,
        at("lifetime"),
        field,
        errors,
    );
    if !DPOP_NONCE_LIFETIMES.contains(&lifetime) {
        errors.at(at("lifetime"), field, "must be between 10s and 1h");
    }
    let secret_file = raw.secret_file.map(|p| base_dir.join(p));
    let secret = secret_file.as_deref().and_then(|path| {
        read_nonce_secret(path)
            .map_err(|message| errors.at(at("secret_file"), "server.dpop.nonce.secret_file", message))
            .ok()
    });
    DpopNonceConfig {
        lifetime,
        secret_file,
        secret,
    }
}

/// With more than one replica, DPoP nonces need a secret every replica has: with a
/// random one each, a client sent to another replica than the one that handed out its
/// nonce is refused again, possibly over and over.
pub(super) fn check_nonce_replicas(
    server: &ServerConfig,
    replicas: u32,
    node: Option<&Node>,
    errors: &mut Errors,
) {
    if replicas > 1
        && let Some(nonce) = &server.dpop_nonce
        && nonce.secret_file.is_none()
    {
        errors.at(
            node.and_then(|n| child(n, "dpop")).and_then(|d| child(d, "nonce")),
            "server.dpop.nonce.secret_file",
            format!(
                "required with replay.replicas: {replicas}: without a shared secret each replica refuses the others' nonces"
            ),
        );
    }
}

/// A nonce secret file: a regular file of [`MIN_DPOP_NONCE_SECRET_BYTES`] to
/// [`MAX_DPOP_NONCE_SECRET_BYTES`] bytes, taken as they are (a trailing newline
/// included), neither readable nor writable by group or others (as a signing key).
fn read_nonce_secret(path: &Path) -> Result<NonceSecret, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_file() && mode & 0o066 != 0 {
        return Err(format!(
            "{shown}: permissions {mode:04o} are too open: the secret must not be accessible by group or others (chmod 600 {shown})"
        ));
    }
    let bytes = crate::files::read_regular_file(path, MAX_DPOP_NONCE_SECRET_BYTES)
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if bytes.len() < MIN_DPOP_NONCE_SECRET_BYTES {
        return Err(format!(
            "{shown}: holds {} bytes; at least {MIN_DPOP_NONCE_SECRET_BYTES} are needed (e.g. head -c 32 /dev/urandom > FILE)",
            bytes.len()
        ));
    }
    Ok(NonceSecret::new(&bytes))
}

/// `server.tls` or `admin.tls` (`field`): the paths resolved against `base_dir`, the
/// files read and checked now, so that `check` reports a missing file, a key that does
/// not match its certificate or an empty CA file, and `serve` never starts without them.
pub(super) fn build_tls(
    raw: RawTls,
    node: Option<&Node>,
    field: &str,
    base_dir: &Path,
    errors: &mut Errors,
) -> Option<TlsConfig> {
    let at = |k: &str| node.and_then(|n| child(n, k).or(Some(n)));
    let before = errors.list.len();
    let mut file = |value: Option<String>, key: &str| match value {
        Some(p) if !p.is_empty() => Some(base_dir.join(p)),
        _ => {
            errors.at(at(key), format!("{field}.{key}"), "required: a PEM file's path");
            None
        }
    };
    let cert_file = file(raw.cert_file, "cert_file");
    let key_file = file(raw.key_file, "key_file");
    let client_ca_file = raw.client_ca_file.map(|p| base_dir.join(p));
    let client_auth = match (raw.client_auth.as_deref(), &client_ca_file) {
        (None, None) => ClientAuth::None,
        (None, Some(_)) => ClientAuth::Optional,
        (Some("none"), _) => ClientAuth::None,
        (Some("optional"), _) => ClientAuth::Optional,
        (Some("required"), _) => ClientAuth::Required,
        (Some(other), _) => {
            errors.at(
                at("client_auth"),
                format!("{field}.client_auth"),
                format!("unknown value `{other}`, expected one of: none, optional, required"),
            );
            ClientAuth::None
        }
    };
    if client_auth != ClientAuth::None && client_ca_file.is_none() {
        errors.at(
            at("client_auth"),
            format!("{field}.client_auth"),
            format!(
                "`{}` needs `client_ca_file`: the CA client certificates must chain to",
                client_auth.as_str()
            ),
        );
    }
    if client_auth == ClientAuth::None && client_ca_file.is_some() {
        errors.at(
            at("client_ca_file"),
            format!("{field}.client_ca_file"),
            "is set but `client_auth` is `none`: no client certificate would be asked for; \
             remove one of the two",
        );
    }
    if errors.list.len() != before {
        return None;
    }
    let tls = TlsConfig {
        cert_file: cert_file?,
        key_file: key_file?,
        client_ca_file,
        client_auth,
    };
    if let Err(e) = crate::tls::check(&tls) {
        errors.at(at(e.field()), format!("{field}.{}", e.field()), e.to_string());
        return None;
    }
    Some(tls)
}

pub(super) fn build_limits(raw: &RawServer, node: Option<&Node>, errors: &mut Errors) -> ConnectionLimits {
    let field_node = |k: &str| node.and_then(|n| child(n, k));
    // Out of range, a timeout is reported and replaced by its default.
    let mut timeout = |value: Option<&str>, default: u64, key: &str| {
        bounded_duration(
            value,
            default,
            1..=600,
            "must be between 1s and 10m",
            key,
            node,
            errors,
        )
        .unwrap_or(default)
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
