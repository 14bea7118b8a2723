//! The validated configuration: the typed values the rest of the broker reads.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use federation_rules::RuleSet;
use issuers::{Algorithm, IssuerKind, IssuerPolicy, KeySet, KindParams};
use reqwest::Url;

pub use issuer_schema::ReplayMode;

use super::admin::{AdminConfig, AdminState, FileItems};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_url: String,
    pub max_body_bytes: usize,
    pub clock_skew: u64,
    pub max_issued_lifetime: u64,
    /// Seconds a cloud may take to answer one request for native credentials, retries
    /// included (`server.cloud_timeout`).
    pub cloud_timeout: u64,
    /// Read timeouts and the connection cap of every listener.
    pub limits: ConnectionLimits,
    /// `server.tls`: `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// `server.dpop.nonce`: `None` (the default) asks no DPoP proof for a server nonce.
    pub dpop_nonce: Option<DpopNonceConfig>,
}

/// `server.dpop.nonce`: DPoP proofs at `/token` must carry a nonce this broker (or a
/// replica sharing its secret) made (RFC 9449 §8; see `crate::exchange`'s `nonce`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopNonceConfig {
    /// Seconds a nonce is accepted after it was made.
    pub lifetime: u64,
    /// `secret_file`, resolved against the config file's directory.
    pub secret_file: Option<PathBuf>,
    /// Its contents, read and checked at load; `None`: a random secret per process.
    pub secret: Option<NonceSecret>,
}

pub const DEFAULT_DPOP_NONCE_LIFETIME: u64 = 300;
/// `server.dpop.nonce.lifetime`'s bounds, in seconds.
pub const DPOP_NONCE_LIFETIMES: std::ops::RangeInclusive<u64> = 10..=3600;
/// The shortest `secret_file` accepted, in bytes.
pub const MIN_DPOP_NONCE_SECRET_BYTES: usize = 32;
/// The longest `secret_file` read, in bytes.
pub const MAX_DPOP_NONCE_SECRET_BYTES: u64 = 4096;

/// The HMAC key DPoP nonces are made with. Never shown: `Debug` says how long it is.
#[derive(Clone)]
pub struct NonceSecret(Arc<[u8]>);

impl NonceSecret {
    pub fn new(bytes: &[u8]) -> NonceSecret {
        NonceSecret(bytes.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for NonceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NonceSecret({} bytes)", self.0.len())
    }
}

/// (Whether a reload changed the secret: compared in constant time all the same.)
impl PartialEq for NonceSecret {
    fn eq(&self, other: &NonceSecret) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl Eq for NonceSecret {}

/// `server.tls` (and `admin.tls`): the listener's certificate and, optionally, the CA
/// its clients' certificates must chain to. Paths are resolved against the config
/// file's directory; the files are read again when they change (see `crate::tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM: the certificate first, then its chain.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: the CA certificates client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// `client_auth`: whether the listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for (the default without `client_ca_file`).
    None,
    /// A client may present one; it must then verify (the default with `client_ca_file`).
    Optional,
    /// Every client must present one that verifies.
    Required,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        }
    }
}

/// `server.header_timeout`, `server.body_timeout`, `server.max_connections`: what one
/// client may hold of a listener (the public one and `admin.listen` each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this, counted from the first poll of an
    /// idle connection: it also closes idle keep-alive connections.
    pub header_timeout: std::time::Duration,
    /// Once the headers are in, the body must arrive within this (408 otherwise).
    pub body_timeout: std::time::Duration,
    /// Open connections per listener; further connections wait in the accept backlog.
    pub max_connections: usize,
}

pub const DEFAULT_HEADER_TIMEOUT: u64 = 10;
pub const DEFAULT_CLOUD_TIMEOUT: u64 = 10;
pub const DEFAULT_BODY_TIMEOUT: u64 = 10;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: std::time::Duration::from_secs(DEFAULT_HEADER_TIMEOUT),
            body_timeout: std::time::Duration::from_secs(DEFAULT_BODY_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ServerConfig {
    /// The path part of `public_url` ("" or "/sts"): every route is served under it.
    pub fn path_prefix(&self) -> String {
        Url::parse(&self.public_url)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct SigningConfig {
    pub algorithm: Algorithm,
    /// `None`: an in-memory key (development mode only).
    pub key_dir: Option<PathBuf>,
    /// The `kid` that signs; `None`: the newest fitting key (see `signing.rs`).
    pub active_kid: Option<String>,
    /// `signing.rotation`: keys made, activated and retired on a schedule
    /// ([`crate::signing::schedule`]); `None`: keys change only by hand.
    pub rotation: Option<crate::signing::schedule::Rotation>,
    /// `signing.kms`: keys held by a key management service; `key_dir`, `active_kid`
    /// and `rotation` are then unused.
    pub kms: Option<KmsConfig>,
}

/// `signing.kms`: tokens signed by keys a key management service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsConfig {
    pub provider: KmsProvider,
    /// The keys, as the service names them (AWS: key ID, key ARN, alias name or alias
    /// ARN). The first signs; all are published.
    pub keys: Vec<String>,
    /// AWS: the region (default: the SDK's, from the environment; else us-east-1).
    pub region: Option<String>,
    /// The service's endpoint (a VPC endpoint, a FIPS endpoint, a test server).
    pub endpoint: Option<String>,
    /// Bound on one signature, retries included (`signing.kms.timeout`, default 2s).
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsProvider {
    Aws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    FailClosed,
    FailOpen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayBackend {
    /// One process's memory: a restart forgets every mark, replicas do not share them.
    Memory,
    Redis(RedisConfig),
}

/// Where the shared replay marks live (`replay.backend: redis`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub target: RedisTarget,
    /// Prepended to every replay key (`replay.key_prefix`).
    pub key_prefix: String,
    /// Bound on one Redis round trip, connection waits included (`replay.command_timeout`).
    pub command_timeout: std::time::Duration,
}

/// One Redis server (`redis_url`) or a Redis Cluster (`redis_cluster_urls`). The URLs may
/// carry a password, so `Debug` shows them redacted.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Standalone(String),
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// The URL(s) with any password replaced by `***`: safe for logs.
    pub fn redacted(&self) -> String {
        match self {
            RedisTarget::Standalone(u) => redact_url(u),
            RedisTarget::Cluster(us) => us.iter().map(|u| redact_url(u)).collect::<Vec<_>>().join(", "),
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Standalone(_) => write!(f, "Standalone({})", self.redacted()),
            RedisTarget::Cluster(_) => write!(f, "Cluster([{}])", self.redacted()),
        }
    }
}

fn redact_url(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<invalid URL>".into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayConfig {
    pub backend: ReplayBackend,
    pub on_unavailable: OnUnavailable,
    /// How many `fedbroker serve` processes share this configuration (`replay.replicas`).
    /// Only checked: with more than one, one-time tokens need a shared (redis) backend.
    pub replicas: u32,
}

pub const DEFAULT_REDIS_KEY_PREFIX: &str = "fedbroker:replay:";
pub const DEFAULT_REDIS_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);
/// Where an issuer's verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `{issuer}/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery,
    JwksUri(Url),
    Static(Arc<KeySet>),
    /// Static keys read from a file at load time.
    File(PathBuf, Arc<KeySet>),
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub name: String,
    pub kind: IssuerKind,
    pub kind_params: KindParams,
    /// Accept `typ: at+jwt` access tokens (refused by default where ID tokens are expected).
    pub allow_access_tokens: bool,
    /// `extra_claims`: claim names beyond the kind's list (not warned about).
    pub extra_claims: Vec<String>,
    pub policy: IssuerPolicy,
    pub keys: KeySource,
    pub replay: ReplayMode,
    pub danger_allow_insecure: bool,
    /// PEM CA certificates trusted (besides the system roots) for this issuer's fetches.
    pub tls_ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    pub path: Option<PathBuf>,
}

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub signing: SigningConfig,
    pub replay: ReplayConfig,
    pub issuers: Vec<IssuerConfig>,
    pub rules: Arc<RuleSet>,
    /// Each rule's file and line, in the rules' order (empty when not known).
    pub rule_origins: Arc<[super::parse::RuleOrigin]>,
    /// The `rules_files` globs as written (relative to the config file).
    pub rules_files: Vec<String>,
    pub audit: AuditConfig,
    /// `limits:`: rate limits at `/token`.
    pub limits: crate::limits::LimitsConfig,
    /// `telemetry:`: OpenTelemetry traces, off without an endpoint.
    pub telemetry: super::telemetry::TelemetryConfig,
    /// `console:`: the web console, when enabled (contract §13).
    pub console: Option<super::console::ConsoleConfig>,
    pub admin: Option<AdminConfig>,
    /// The admin API's issuers and rules included in this config.
    pub admin_state: AdminState,
    /// The issuers and rules of the configuration file and its rule files (the names
    /// the admin API may not manage), as JSON in the YAML schema.
    pub file_items: Arc<FileItems>,
}

impl Config {
    /// Every warning about this configuration's policy, as `check` prints them, a reload
    /// logs them and the admin API answers them: the rule set's own
    /// ([`RuleSet::warnings`]), then claims rules refer to that their issuers' kinds
    /// never carry ([`issuer_schema::unknown_claims`]; none for generic issuers).
    pub fn warnings(&self) -> Vec<federation_rules::PolicyWarning> {
        let issuers: std::collections::HashMap<&str, (IssuerKind, &[String])> = self
            .issuers
            .iter()
            .map(|i| (i.name.as_str(), (i.kind, i.extra_claims.as_slice())))
            .collect();
        let mut all = self.rules.warnings();
        all.extend(issuer_schema::unknown_claims_with(&self.rules, &|name| {
            issuers.get(name).copied()
        }));
        all
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 65536;
pub const DEFAULT_CLOCK_SKEW: u64 = 60;
pub const DEFAULT_MAX_ISSUED_LIFETIME: u64 = 3600;
pub const DEFAULT_MAX_TOKEN_LIFETIME: u64 = issuer_schema::DEFAULT_MAX_TOKEN_LIFETIME;
