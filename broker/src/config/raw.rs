//! The configuration file's sections as serde reads them, before any check. An issuer's
//! raw form is shared with the admin API and the Terraform provider
//! ([`issuer_schema::RawIssuer`]).

use serde::Deserialize;

pub use issuer_schema::RawIssuer;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) public_url: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) clock_skew: Option<String>,
    pub(super) max_issued_lifetime: Option<String>,
    pub(super) cloud_timeout: Option<String>,
    pub(super) header_timeout: Option<String>,
    pub(super) body_timeout: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) tls: Option<RawTls>,
    pub(super) dpop: Option<RawServerDpop>,
}

/// `server.dpop`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerDpop {
    pub(super) nonce: Option<RawDpopNonce>,
}

/// `server.dpop.nonce`: present (even `{}`), server nonces are required.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDpopNonce {
    pub(super) lifetime: Option<String>,
    pub(super) secret_file: Option<String>,
}

/// `server.tls` and `admin.tls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) client_auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    pub(super) algorithm: Option<String>,
    pub(super) key_dir: Option<String>,
    pub(super) active_kid: Option<String>,
    pub(super) rotation: Option<RawRotation>,
    pub(super) kms: Option<RawKms>,
}

/// `signing.kms`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKms {
    pub(super) provider: Option<String>,
    #[serde(default)]
    pub(super) keys: Vec<String>,
    pub(super) region: Option<String>,
    pub(super) endpoint: Option<String>,
    #[serde(default)]
    pub(super) danger_allow_insecure_endpoint: bool,
    pub(super) timeout: Option<String>,
}

/// `signing.rotation`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRotation {
    pub(super) every: Option<String>,
    pub(super) prepublish: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplay {
    pub(super) backend: Option<String>,
    pub(super) redis_url: Option<String>,
    pub(super) redis_cluster_urls: Option<Vec<String>>,
    pub(super) key_prefix: Option<String>,
    pub(super) command_timeout: Option<String>,
    pub(super) on_unavailable: Option<String>,
    pub(super) replicas: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
    pub(super) tokens_file: Option<String>,
    pub(super) tokens: Option<Vec<String>>,
    pub(super) state_file: Option<String>,
    pub(super) allow_insecure_issuers: Option<bool>,
    pub(super) allow_file_paths: Option<bool>,
    pub(super) state_hmac_key: Option<String>,
    pub(super) tls: Option<RawTls>,
}

/// `limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) per_issuer: Option<String>,
    pub(super) per_subject: Option<String>,
    pub(super) per_client_address: Option<String>,
}

/// `telemetry:`. No `Debug`: header values are often keys.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) traces: Option<RawTraces>,
}

/// `telemetry.traces`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraces {
    pub(super) endpoint: Option<String>,
    pub(super) sample_ratio: Option<f64>,
    pub(super) service_name: Option<String>,
    pub(super) headers: Option<std::collections::BTreeMap<String, String>>,
    pub(super) timeout: Option<String>,
}

pub(super) const TOP_LEVEL_KEYS: &[&str] = &[
    "version",
    "server",
    "signing",
    "replay",
    "issuers",
    "rules_files",
    "rules",
    "audit",
    "admin",
    "limits",
    "telemetry",
    "console",
];
