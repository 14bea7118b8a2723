//! The configuration file (contract §2): YAML, `version: 1`, unknown keys rejected,
//! `${ENV}` substitution, rule files by glob, every error with file, line and field.
//!
//! `parse_*` functions are pure (text in, values or errors out); [`load`] does the file
//! I/O around them. No network is touched while loading.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use federation_rules::{CompileContext, RawRule, RuleSet};
use issuers::{Algorithm, IssuerKind, IssuerPolicy, KeySet, KindParams};
use marked_yaml::loader::LoaderOptions;
use marked_yaml::{LoadError, Node};
use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::netguard;
use federation_rules::duration::parse_duration;

/// One problem in a configuration or rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// Every problem found while loading; never just the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_url: String,
    pub max_body_bytes: usize,
    pub clock_skew: u64,
    pub max_issued_lifetime: u64,
    /// Read timeouts and the connection cap of every listener.
    pub limits: ConnectionLimits,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayMode {
    OneTime,
    Reusable,
}

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
    /// The `rules_files` globs as written (relative to the config file).
    pub rules_files: Vec<String>,
    pub audit: AuditConfig,
    pub admin: Option<AdminConfig>,
    /// The admin API's issuers and rules included in this config.
    pub admin_state: AdminState,
    /// The issuers and rules of the configuration file and its rule files (the names
    /// the admin API may not manage), as JSON in the YAML schema.
    pub file_items: Arc<FileItems>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 65536;
pub const DEFAULT_CLOCK_SKEW: u64 = 60;
pub const DEFAULT_MAX_ISSUED_LIFETIME: u64 = 3600;
pub const DEFAULT_MAX_TOKEN_LIFETIME: u64 = 24 * 3600;

// ---------------------------------------------------------------------------
// Raw (serde) shapes

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    public_url: Option<String>,
    max_body_bytes: Option<usize>,
    clock_skew: Option<String>,
    max_issued_lifetime: Option<String>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    algorithm: Option<String>,
    key_dir: Option<String>,
    active_kid: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplay {
    backend: Option<String>,
    redis_url: Option<String>,
    redis_cluster_urls: Option<Vec<String>>,
    key_prefix: Option<String>,
    command_timeout: Option<String>,
    on_unavailable: Option<String>,
    replicas: Option<u32>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    name: String,
    /// Optional when the kind has a default (github-actions, gitlab, google, azure-entra).
    #[serde(default)]
    issuer: String,
    kind: Option<String>,
    tenant: Option<String>,
    entra_version: Option<String>,
    trust_domain: Option<String>,
    #[serde(default)]
    allow_access_tokens: bool,
    tls_ca_file: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    jwks_uri: Option<String>,
    jwks: Option<serde_json::Value>,
    jwks_file: Option<String>,
    algorithms: Option<Vec<String>>,
    replay: Option<String>,
    max_token_lifetime: Option<String>,
    #[serde(default)]
    danger_allow_insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    tokens_file: Option<String>,
    tokens: Option<Vec<String>>,
    state_file: Option<String>,
    allow_insecure_issuers: Option<bool>,
    allow_file_paths: Option<bool>,
    state_hmac_key: Option<String>,
}

/// The admin API (contract §8): off unless `admin:` is configured.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// A listener of its own; `None`: served on the main listener.
    pub listen: Option<SocketAddr>,
    /// Bearer tokens, read from `tokens_file` and/or `tokens` at load time.
    pub tokens: Vec<String>,
    /// How many of `tokens` (the last ones) came from `tokens_file`.
    pub tokens_from_file: usize,
    pub tokens_file: Option<PathBuf>,
    /// Where API-made issuers and rules are kept (default `./data/admin-state.json`).
    /// Unused with `replay.backend: redis`: the state is kept in Redis then.
    pub state_file: PathBuf,
    /// `admin.allow_insecure_issuers` (default false): whether admin-API issuers may set
    /// `danger_allow_insecure` (http://, loopback and private addresses).
    pub allow_insecure_issuers: bool,
    /// `admin.allow_file_paths` (default false): whether admin-API issuers may name
    /// files on the broker's host (`jwks_file`, `tls_ca_file`).
    pub allow_file_paths: bool,
    /// `admin.state_hmac_key`: authenticates the admin state kept in Redis (HMAC-SHA256);
    /// required with `replay.backend: redis`.
    pub state_hmac_key: Option<String>,
}

/// The shortest `admin.state_hmac_key` accepted.
pub const MIN_STATE_HMAC_KEY_CHARS: usize = 32;

/// The shortest admin token accepted: shorter ones are guessable.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Issuers and rules created through the admin API, in the YAML schema (as JSON).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct AdminState {
    #[serde(default)]
    pub issuers: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub rules: std::collections::BTreeMap<String, serde_json::Value>,
}

impl AdminState {
    /// Read the state file; a missing file is an empty state.
    pub fn read(path: &Path) -> Result<AdminState, String> {
        match crate::files::read_regular_file(path, crate::files::MAX_CONFIG_BYTES) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AdminState::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Write atomically: temp file, fsync, rename, fsync the directory.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("admin-state")
        ));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The pseudo-file admin items are reported under (`admin:rules/NAME`).
pub fn admin_source(kind: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("admin:{kind}/{name}"))
}

/// The issuers and rules that come from the configuration file and its rule files, in
/// input order, each as JSON in the YAML schema (`${NAME}` already replaced, as in
/// force). The admin API lists them read-only and refuses to create, replace or delete
/// them: the configuration file owns these names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileItems {
    pub issuers: Vec<(String, serde_json::Value)>,
    pub rules: Vec<(String, serde_json::Value)>,
}

impl FileItems {
    /// The items of `kind` (`"issuers"` or `"rules"`).
    pub fn of(&self, kind: &str) -> &[(String, serde_json::Value)] {
        match kind {
            "issuers" => &self.issuers,
            _ => &self.rules,
        }
    }

    /// Whether the configuration file (or a rule file) defines `name` of `kind`.
    pub fn owns(&self, kind: &str, name: &str) -> bool {
        self.of(kind).iter().any(|(n, _)| n == name)
    }
}

/// The words every name-clash error carries (see [`is_name_clash`]).
pub const NAME_CLASH: &str = "the configuration file owns this name";

/// Whether an error line (as [`ConfigErrors`] prints them) reports a name that both the
/// configuration file and the admin API's state define.
pub fn is_name_clash(line: &str) -> bool {
    line.contains(NAME_CLASH)
}

/// An item as JSON without `null` members (absent optional fields).
fn without_nulls(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    value
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "version",
    "server",
    "signing",
    "replay",
    "issuers",
    "rules_files",
    "rules",
    "audit",
    "admin",
];

/// A rule as parsed, with the YAML node it came from (to turn field paths into lines).
pub struct SourcedRule {
    pub file: PathBuf,
    pub node: Node,
    pub rule: RawRule,
}

/// The config file parsed, before rule files are read and rules compiled.
pub struct Draft {
    file: PathBuf,
    server: ServerConfig,
    signing: SigningConfig,
    replay: ReplayConfig,
    /// The `replay:` mapping, for the line of errors found once issuers are known.
    replay_node: Option<Node>,
    /// Each with the file it came from (the config file, or the admin API's state).
    issuers: Vec<(PathBuf, Node, RawIssuer)>,
    pub rules_files: Vec<String>,
    admin: Option<AdminConfig>,
    rules: Vec<SourcedRule>,
    audit: AuditConfig,
    base_dir: PathBuf,
    /// Problems found in the config file itself.
    errors: Vec<ConfigError>,
}

/// A collector that turns YAML positions into [`ConfigError`]s.
struct Errors {
    file: PathBuf,
    list: Vec<ConfigError>,
}

impl Errors {
    fn new(file: &Path) -> Self {
        Errors {
            file: file.to_path_buf(),
            list: Vec::new(),
        }
    }
    fn at(&mut self, node: Option<&Node>, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            line: node.and_then(line_of),
            field: field.into(),
            message: message.into(),
        });
    }
}

/// An empty value, `~` or `null`: YAML's ways of writing nothing.
fn is_null(s: &marked_yaml::types::MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

fn line_of(node: &Node) -> Option<usize> {
    node.span().start().map(|m| m.line())
}

fn load_error(file: &Path, e: &LoadError) -> ConfigError {
    use LoadError::*;
    let (marker, message) = match e {
        TopLevelMustBeMapping(m) => (Some(*m), "the top level must be a mapping".to_string()),
        TopLevelMustBeSequence(m) => (Some(*m), "the top level must be a list".to_string()),
        UnexpectedAnchor(m) => (Some(*m), "YAML anchors and aliases are not supported".into()),
        MappingKeyMustBeScalar(m) => (Some(*m), "mapping keys must be plain strings".into()),
        UnexpectedTag(m) => (Some(*m), "YAML tags are not supported".into()),
        ScanError(m, se) => (Some(*m), format!("invalid YAML: {}", se.info())),
        DuplicateKey(inner) => (
            inner.key.span().start().copied(),
            format!(
                "duplicate key `{}` (first defined on line {})",
                inner.key.as_str(),
                inner
                    .prev_key
                    .span()
                    .start()
                    .map(|m| m.line())
                    .unwrap_or_default()
            ),
        ),
    };
    ConfigError {
        file: file.to_path_buf(),
        line: marker.map(|m| m.line()),
        field: String::new(),
        message,
    }
}

/// Parse YAML whose top level is a mapping or (for rule files) a list.
fn parse_yaml(file: &Path, text: &str) -> Result<Node, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError {
            file: file.to_path_buf(),
            line: None,
            field: String::new(),
            message: "the file is empty".into(),
        });
    }
    let options = || LoaderOptions::default().error_on_duplicate_keys(true);
    match marked_yaml::parse_yaml_with_options(0, text, options()) {
        Err(LoadError::TopLevelMustBeMapping(_)) => {
            marked_yaml::parse_yaml_with_options(0, text, options().toplevel_sequence())
                .map_err(|e| load_error(file, &e))
        }
        other => other.map_err(|e| load_error(file, &e)),
    }
}

/// Parse YAML like [`parse_yaml`], but report every duplicate key (at any depth) and go
/// on: the document is loaded with the last occurrence of each repeated key, so the
/// file's other errors are reported too. Errors go to `errors`; `None` when the YAML
/// cannot be loaded at all.
fn parse_yaml_all(file: &Path, text: &str, errors: &mut Vec<ConfigError>) -> Option<Node> {
    if text.trim().is_empty() {
        return parse_yaml(file, text).map_err(|e| errors.push(e)).ok();
    }
    let duplicates = duplicate_keys(file, text);
    if duplicates.is_empty() {
        return parse_yaml(file, text).map_err(|e| errors.push(e)).ok();
    }
    errors.extend(duplicates);
    // Duplicates are reported above; the loader keeps the last occurrence of each.
    let options = LoaderOptions::default;
    let parsed = match marked_yaml::parse_yaml_with_options(0, text, options()) {
        Err(LoadError::TopLevelMustBeMapping(_)) => {
            marked_yaml::parse_yaml_with_options(0, text, options().toplevel_sequence())
        }
        other => other,
    };
    parsed.map_err(|e| errors.push(load_error(file, &e))).ok()
}

/// Every repeated key of every mapping in `text`, with the line of the repetition, the
/// line of the first occurrence and the field path. A pass over the parser's events
/// (marked-yaml stops at the first duplicate). Nothing for YAML that does not scan: the
/// loader reports that.
fn duplicate_keys(file: &Path, text: &str) -> Vec<ConfigError> {
    use std::collections::HashMap;
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::Marker;

    struct Frame {
        /// `Some` for a mapping: its keys so far, with their lines.
        keys: Option<HashMap<String, usize>>,
        /// The field path of this mapping or list.
        path: String,
        /// Mapping: the next scalar is a key. List: the index of the next item.
        want_key: bool,
        key: String,
        index: usize,
        /// A mapping or list used as a key (not supported; marked-yaml refuses it).
        is_key: bool,
    }
    #[derive(Default)]
    struct Finder {
        stack: Vec<Frame>,
        found: Vec<(usize, String, String, usize)>,
    }
    impl Finder {
        /// The path of the value about to start, and whether it is a key.
        fn next_child(&self) -> (String, bool) {
            match self.stack.last() {
                Some(f) if f.keys.is_some() && f.want_key => (f.path.clone(), true),
                Some(f) if f.keys.is_some() => (join_path(&f.path, &f.key), false),
                Some(f) => (format!("{}[{}]", f.path, f.index), false),
                None => (String::new(), false),
            }
        }
        /// A value (scalar, alias or container) of the current frame is complete.
        fn value_done(&mut self) {
            if let Some(f) = self.stack.last_mut() {
                if f.keys.is_some() {
                    f.want_key = true;
                } else {
                    f.index += 1;
                }
            }
        }
    }
    impl MarkedEventReceiver for Finder {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            match ev {
                Event::Scalar(value, ..) => {
                    let Some(f) = self.stack.last_mut() else { return };
                    if let (Some(keys), true) = (f.keys.as_mut(), f.want_key) {
                        match keys.get(&value) {
                            Some(first) => {
                                self.found
                                    .push((mark.line(), value.clone(), f.path.clone(), *first))
                            }
                            None => {
                                keys.insert(value.clone(), mark.line());
                            }
                        }
                        f.key = value;
                        f.want_key = false;
                    } else {
                        self.value_done();
                    }
                }
                Event::Alias(_) => self.value_done(),
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let (path, is_key) = self.next_child();
                    if let (true, Some(parent)) = (is_key, self.stack.last_mut()) {
                        parent.want_key = false;
                    }
                    self.stack.push(Frame {
                        keys: matches!(ev, Event::MappingStart(..)).then(HashMap::new),
                        path,
                        want_key: true,
                        key: String::new(),
                        index: 0,
                        is_key,
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(done) = self.stack.pop()
                        && !done.is_key
                    {
                        self.value_done();
                    }
                }
                _ => {}
            }
        }
    }

    let mut finder = Finder::default();
    let mut parser = Parser::new(text.chars());
    // On a scan error, report what was found before it; the loader reports the error.
    let _ = parser.load(&mut finder, false);
    finder
        .found
        .into_iter()
        .map(|(line, key, path, first)| ConfigError {
            file: file.to_path_buf(),
            line: Some(line),
            field: join_path(&path, &key),
            message: format!("duplicate key `{key}` (first defined on line {first})"),
        })
        .collect()
}

/// Deserialize one node, reporting a failure with its line and field path.
fn from_node<T: DeserializeOwned>(node: &Node, section: &str, errors: &mut Errors) -> Option<T> {
    match marked_yaml::from_node::<T>(node) {
        Ok(v) => Some(v),
        Err(e) => {
            let line = e.start_mark().map(|m| m.line()).or_else(|| line_of(node));
            let path = e.path().unwrap_or("").trim_matches('.');
            let field = match (section.is_empty(), path.is_empty()) {
                (_, true) => section.to_string(),
                (true, false) => path.to_string(),
                (false, false) => format!("{section}.{path}"),
            };
            let message = inner_message(&e);
            errors.list.push(ConfigError {
                file: errors.file.clone(),
                line,
                field,
                message,
            });
            None
        }
    }
}

fn inner_message(e: &marked_yaml::FromNodeError) -> String {
    use marked_yaml::Error;
    match &**e {
        Error::UnknownFieldError(field, expected, _) => {
            format!(
                "unknown field `{field}`, expected one of: {}",
                expected.join(", ")
            )
        }
        Error::NotBoolean(_) => "expected true or false".into(),
        Error::IntegerParseFailure(err, _) => format!("expected a whole number ({err})"),
        Error::FloatParseFailure(err, _) => format!("expected a number ({err})"),
        Error::Other(msg, _) => msg.clone(),
    }
}

/// Replace `${NAME}` in every scalar from the environment. A missing variable is an error.
fn substitute_env(node: &mut Node, path: &str, errors: &mut Errors, env: &dyn Fn(&str) -> Option<String>) {
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if !text.contains("${") {
                return;
            }
            match expand_env(text, env) {
                Ok(expanded) => {
                    let coerce = s.may_coerce();
                    let mut replaced = marked_yaml::types::MarkedScalarNode::new(*s.span(), expanded);
                    replaced.set_coerce(coerce);
                    *s = replaced;
                }
                Err(name) => {
                    let line = s.span().start().map(|m| m.line());
                    errors.list.push(ConfigError {
                        file: errors.file.clone(),
                        line,
                        field: path.to_string(),
                        message: format!("environment variable `{name}` is not set"),
                    });
                }
            }
        }
        Node::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let child = join_path(path, k.as_str());
                substitute_env(v, &child, errors, env);
            }
        }
        Node::Sequence(seq) => {
            for (i, v) in seq.iter_mut().enumerate() {
                substitute_env(v, &format!("{path}[{i}]"), errors, env);
            }
        }
    }
}

fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `${NAME}` → value; `NAME` is `[A-Za-z_][A-Za-z0-9_]*`. Err(name) when unset.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let valid = !name.is_empty()
            && name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if valid {
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(name.to_string()),
            }
        } else {
            out.push_str(&rest[start..start + 2 + end + 1]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn duration_field(
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

fn child<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    node.as_mapping().and_then(|m| m.get_node(key))
}

/// Parse the config file's text. Pure: `env` supplies `${NAME}` values.
pub fn parse_config(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Draft, ConfigErrors> {
    let mut errors = Errors::new(file);
    let Some(mut root) = parse_yaml_all(file, text, &mut errors.list) else {
        return Err(ConfigErrors(errors.list));
    };
    substitute_env(&mut root, "", &mut errors, env);
    let Some(map) = root.as_mapping() else {
        errors.at(Some(&root), "", "the configuration must be a mapping");
        return Err(ConfigErrors(errors.list));
    };

    let mut version_seen = false;
    let mut server = RawServer::default();
    let mut signing = RawSigning::default();
    let mut replay = RawReplay::default();
    let mut raw_issuers = Vec::new();
    let mut rules_files = Vec::new();
    let mut rules = Vec::new();
    let mut audit = RawAudit::default();
    let mut raw_admin: Option<RawAdmin> = None;

    for (key, value) in map.iter() {
        match key.as_str() {
            "version" => {
                version_seen = true;
                if value.as_scalar().map(|s| s.as_str()) != Some("1") {
                    errors.at(Some(value), "version", "only `version: 1` is supported");
                }
            }
            "server" => server = from_node(value, "server", &mut errors).unwrap_or_default(),
            "signing" => signing = from_node(value, "signing", &mut errors).unwrap_or_default(),
            "replay" => replay = from_node(value, "replay", &mut errors).unwrap_or_default(),
            "audit" => audit = from_node(value, "audit", &mut errors).unwrap_or_default(),
            "admin" => raw_admin = from_node(value, "admin", &mut errors),
            "rules_files" => rules_files = from_node(value, "rules_files", &mut errors).unwrap_or_default(),
            "issuers" => match value.as_sequence() {
                Some(seq) => {
                    for (i, item) in seq.iter().enumerate() {
                        if let Some(raw) = from_node::<RawIssuer>(item, &format!("issuers[{i}]"), &mut errors)
                        {
                            raw_issuers.push((file.to_path_buf(), item.clone(), raw));
                        }
                    }
                }
                None if value.as_scalar().is_some_and(is_null) => {}
                None => errors.at(Some(value), "issuers", "expected a list of issuers"),
            },
            "rules" => rules.extend(parse_rule_list(file, value, "rules", &mut errors)),
            other => {
                let k = Node::Scalar(key.clone());
                let message = format!(
                    "unknown field `{other}`, expected one of: {}",
                    TOP_LEVEL_KEYS.join(", ")
                );
                errors.at(Some(&k), other, message);
            }
        }
    }
    if !version_seen {
        errors.at(Some(&root), "version", "missing `version: 1`");
    }

    let server_node = child(&root, "server");
    let server = build_server(server, server_node, &mut errors);
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let signing = build_signing(signing, child(&root, "signing"), &base_dir, &mut errors);
    let replay = build_replay(replay, child(&root, "replay"), &mut errors);
    let audit = AuditConfig {
        path: audit.path.map(|p| base_dir.join(p)),
    };
    let admin = raw_admin.map(|a| {
        let at = |k: &str| child(&root, "admin").and_then(|n| child(n, k));
        let listen = a.listen.as_deref().and_then(|l| match l.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                errors.at(
                    at("listen"),
                    "admin.listen",
                    "expected address:port, e.g. 127.0.0.1:8081",
                );
                None
            }
        });
        let tokens = a.tokens.unwrap_or_default();
        if a.tokens_file.is_none() && tokens.is_empty() {
            errors.at(
                at("tokens"),
                "admin",
                "give `tokens_file` or `tokens`: the admin API is never open",
            );
        }
        for t in &tokens {
            if t.chars().count() < MIN_ADMIN_TOKEN_CHARS {
                errors.at(
                    at("tokens"),
                    "admin.tokens",
                    format!("every token needs at least {MIN_ADMIN_TOKEN_CHARS} characters"),
                );
            }
        }
        AdminConfig {
            listen,
            tokens,
            tokens_from_file: 0,
            tokens_file: a.tokens_file.map(|p| base_dir.join(p)),
            state_file: base_dir.join(a.state_file.as_deref().unwrap_or("./data/admin-state.json")),
            allow_insecure_issuers: a.allow_insecure_issuers.unwrap_or(false),
            allow_file_paths: a.allow_file_paths.unwrap_or(false),
            state_hmac_key: a.state_hmac_key,
        }
    });
    if let Some(a) = &admin {
        let at = |k: &str| child(&root, "admin").and_then(|n| child(n, k).or(Some(n)));
        match (&a.state_hmac_key, &replay.backend) {
            (Some(key), _) if key.chars().count() < MIN_STATE_HMAC_KEY_CHARS => errors.at(
                at("state_hmac_key"),
                "admin.state_hmac_key",
                format!("needs at least {MIN_STATE_HMAC_KEY_CHARS} characters (e.g. `openssl rand -hex 32`)"),
            ),
            (None, ReplayBackend::Redis(_)) => errors.at(
                at("state_hmac_key"),
                "admin.state_hmac_key",
                "required with replay.backend: redis: the admin state kept in Redis is authenticated with it \
                 (e.g. `state_hmac_key: ${FEDBROKER_ADMIN_HMAC_KEY}`, the same on every replica)",
            ),
            _ => {}
        }
    }

    // Errors so far are kept in the draft, so that rule files and issuers are still
    // checked and `check` reports every problem at once.
    Ok(Draft {
        file: file.to_path_buf(),
        server,
        signing,
        replay,
        replay_node: child(&root, "replay").cloned(),
        issuers: raw_issuers,
        rules_files,
        rules,
        audit,
        base_dir,
        admin,
        errors: errors.list,
    })
}

impl Draft {
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }
}

fn build_server(raw: RawServer, node: Option<&Node>, errors: &mut Errors) -> ServerConfig {
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
                errors.at(field_node("public_url"), "server.public_url", e);
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

fn build_limits(raw: &RawServer, node: Option<&Node>, errors: &mut Errors) -> ConnectionLimits {
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

fn validate_public_url(text: &str) -> Result<String, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must not have a query, fragment or credentials".into());
    }
    if url.host_str().is_none() {
        return Err("must name a host".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The signing algorithms fedbroker issues with (contract §2).
pub const SIGNING_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::PS256,
    Algorithm::EdDSA,
];

pub fn parse_signing_algorithm(text: &str) -> Result<Algorithm, String> {
    match text.parse::<Algorithm>() {
        Ok(a) if SIGNING_ALGORITHMS.contains(&a) => Ok(a),
        _ => Err(format!(
            "`{text}` is not supported for signing; use RS256, ES256, PS256 or EdDSA"
        )),
    }
}

fn build_signing(raw: RawSigning, node: Option<&Node>, base: &Path, errors: &mut Errors) -> SigningConfig {
    let algorithm = match raw.algorithm.as_deref() {
        None => Algorithm::RS256,
        Some(text) => parse_signing_algorithm(text).unwrap_or_else(|e| {
            errors.at(node.and_then(|n| child(n, "algorithm")), "signing.algorithm", e);
            Algorithm::RS256
        }),
    };
    let key_dir = Some(base.join(raw.key_dir.as_deref().unwrap_or("./data/keys")));
    let active_kid = raw.active_kid.filter(|kid| {
        let ok = is_thumbprint_kid(kid);
        if !ok {
            errors.at(
                node.and_then(|n| child(n, "active_kid")),
                "signing.active_kid",
                "must be a kid as `/jwks.json` and `fedbroker keys generate` show it (43 base64url characters)",
            );
        }
        ok
    });
    SigningConfig {
        algorithm,
        key_dir,
        active_kid,
    }
}

/// A signing key's `kid`: its RFC 7638 SHA-256 thumbprint, base64url without padding.
fn is_thumbprint_kid(kid: &str) -> bool {
    kid.len() == 43
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn build_replay(raw: RawReplay, node: Option<&Node>, errors: &mut Errors) -> ReplayConfig {
    let at = |k: &str| node.and_then(|n| child(n, k));
    let on_unavailable = match raw.on_unavailable.as_deref() {
        None | Some("fail_closed") => OnUnavailable::FailClosed,
        Some("fail_open") => OnUnavailable::FailOpen,
        Some(other) => {
            errors.at(
                at("on_unavailable"),
                "replay.on_unavailable",
                format!("unknown value `{other}`; expected fail_closed or fail_open"),
            );
            OnUnavailable::FailClosed
        }
    };
    let replicas = raw.replicas.unwrap_or(1);
    if replicas == 0 {
        errors.at(at("replicas"), "replay.replicas", "must be at least 1");
    }
    let backend = match raw.backend.as_deref() {
        None | Some("memory") => {
            for (key, given) in [
                ("redis_url", raw.redis_url.is_some()),
                ("redis_cluster_urls", raw.redis_cluster_urls.is_some()),
                ("key_prefix", raw.key_prefix.is_some()),
                ("command_timeout", raw.command_timeout.is_some()),
            ] {
                if given {
                    errors.at(
                        at(key),
                        format!("replay.{key}"),
                        "only used with `backend: redis`",
                    );
                }
            }
            ReplayBackend::Memory
        }
        Some("redis") => match build_redis(&raw, node, errors) {
            Some(redis) => ReplayBackend::Redis(redis),
            None => ReplayBackend::Memory,
        },
        Some(other) => {
            errors.at(
                at("backend"),
                "replay.backend",
                format!("unknown backend `{other}`; expected memory or redis"),
            );
            ReplayBackend::Memory
        }
    };
    ReplayConfig {
        backend,
        on_unavailable,
        replicas: replicas.max(1),
    }
}

/// `backend: redis`: exactly one of `redis_url` / `redis_cluster_urls`, URLs that the
/// client accepts (parsed only: no connection is made while loading).
fn build_redis(raw: &RawReplay, node: Option<&Node>, errors: &mut Errors) -> Option<RedisConfig> {
    let at = |k: &str| node.and_then(|n| child(n, k));
    let before = errors.list.len();
    let mut check_url = |url: &str, key: &str, field: String| {
        if let Err(e) = redis_url_problem(url) {
            errors.at(at(key), field, e);
        }
    };
    let target = match (&raw.redis_url, &raw.redis_cluster_urls) {
        (Some(url), None) => {
            check_url(url, "redis_url", "replay.redis_url".into());
            Some(RedisTarget::Standalone(url.clone()))
        }
        (None, Some(urls)) if !urls.is_empty() => {
            for (i, url) in urls.iter().enumerate() {
                check_url(
                    url,
                    "redis_cluster_urls",
                    format!("replay.redis_cluster_urls[{i}]"),
                );
            }
            Some(RedisTarget::Cluster(urls.clone()))
        }
        (None, Some(_)) => {
            errors.at(
                at("redis_cluster_urls"),
                "replay.redis_cluster_urls",
                "must list at least one node",
            );
            None
        }
        (None, None) => {
            errors.at(
                node,
                "replay.redis_url",
                "`backend: redis` needs `redis_url` (one server) or `redis_cluster_urls` (a Redis Cluster)",
            );
            None
        }
        (Some(_), Some(_)) => {
            errors.at(
                at("redis_cluster_urls"),
                "replay.redis_cluster_urls",
                "give either `redis_url` or `redis_cluster_urls`, not both",
            );
            None
        }
    };
    let key_prefix = raw
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string());
    if key_prefix.is_empty() {
        errors.at(at("key_prefix"), "replay.key_prefix", "must not be empty");
    }
    let command_timeout = match raw.command_timeout.as_deref() {
        None => DEFAULT_REDIS_COMMAND_TIMEOUT,
        Some(text) => match parse_millis(text) {
            Ok(d) if (10..=30_000).contains(&d.as_millis()) => d,
            Ok(_) => {
                errors.at(
                    at("command_timeout"),
                    "replay.command_timeout",
                    "must be between 10ms and 30s",
                );
                DEFAULT_REDIS_COMMAND_TIMEOUT
            }
            Err(e) => {
                errors.at(at("command_timeout"), "replay.command_timeout", e);
                DEFAULT_REDIS_COMMAND_TIMEOUT
            }
        },
    };
    let target = target?;
    (errors.list.len() == before).then_some(RedisConfig {
        target,
        key_prefix,
        command_timeout,
    })
}

/// Why the redis client would refuse `url`, if it would. The message never repeats the
/// URL (it may hold a password).
fn redis_url_problem(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    if !matches!(scheme, "redis" | "rediss") {
        return Err("must be a redis:// or rediss:// (TLS) URL".into());
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("not a usable Redis URL: {e}"))
}

/// A duration with millisecond precision: `250ms`, or any duration `90s`, `1m` takes.
fn parse_millis(text: &str) -> Result<std::time::Duration, String> {
    if let Some(ms) = text.trim().strip_suffix("ms") {
        return ms
            .trim()
            .parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("invalid duration `{text}`: write e.g. `250ms` or `2s`"));
    }
    parse_duration(text)
        .map(std::time::Duration::from_secs)
        .map_err(|e| e.to_string())
}

/// With more than one replica, a `one_time` issuer needs marks that every replica sees.
fn check_replicas(replay: &ReplayConfig, issuers: &[IssuerConfig], node: Option<&Node>, errors: &mut Errors) {
    if replay.replicas <= 1 || replay.backend != ReplayBackend::Memory {
        return;
    }
    let one_time: Vec<&str> = issuers
        .iter()
        .filter(|i| i.replay == ReplayMode::OneTime)
        .map(|i| i.name.as_str())
        .collect();
    if !one_time.is_empty() {
        errors.at(
            node.and_then(|n| child(n, "replicas")).or(node),
            "replay.replicas",
            format!(
                "{} replicas cannot share the memory backend: a token accepted by one would be accepted again by another. \
                 Use `backend: redis`, or `replay: reusable` on issuer(s) {}",
                replay.replicas,
                one_time.join(", ")
            ),
        );
    }
}

/// Validate raw issuers into [`IssuerConfig`]s. `read_file` reads `jwks_file`s (relative to `base`).
fn build_issuers(
    raw: &[(PathBuf, Node, RawIssuer)],
    base: &Path,
    errors: &mut Errors,
    read_file: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
) -> Vec<IssuerConfig> {
    let mut names = HashSet::new();
    let mut urls = HashSet::new();
    let mut out = Vec::new();
    let outer_file = errors.file.clone();
    for (i, (file, node, r)) in raw.iter().enumerate() {
        errors.file = file.clone();
        let from_config = *file == outer_file;
        let field = |k: &str| {
            if from_config {
                format!("issuers[{i}].{k}")
            } else {
                format!("issuer `{}`.{k}", r.name)
            }
        };
        let at = |k: &str| child(node, k).or(Some(node));
        let before = errors.list.len();
        let kind = match r.kind.as_deref().map(str::parse::<IssuerKind>) {
            None => IssuerKind::Generic,
            Some(Ok(k)) => k,
            Some(Err(e)) => {
                errors.at(at("kind"), field("kind"), e.to_string());
                IssuerKind::Generic
            }
        };
        let kind_params = KindParams {
            tenant: r.tenant.clone(),
            entra_version: r.entra_version.clone(),
            trust_domain: r.trust_domain.clone(),
        };
        let issuer_text = if r.issuer.is_empty() {
            match kind.default_issuer(&kind_params) {
                Ok(Some(default)) => default,
                Ok(None) => {
                    errors.at(Some(node), field("issuer"), format!("required for kind {kind}"));
                    String::new()
                }
                Err(e) => {
                    errors.at(Some(node), field("issuer"), e.to_string());
                    String::new()
                }
            }
        } else {
            r.issuer.clone()
        };
        if let Err(e) = kind.check_config(&issuer_text, &kind_params)
            && !issuer_text.is_empty()
        {
            errors.at(at("kind"), field("kind"), e.to_string());
        }
        let tls_ca_pem = match &r.tls_ca_file {
            None => None,
            Some(p) => {
                let path = base.join(p);
                match read_file(&path) {
                    Ok(pem) if pem_has_certificate(&pem) => Some(pem),
                    Ok(_) => {
                        errors.at(
                            at("tls_ca_file"),
                            field("tls_ca_file"),
                            format!("{}: no usable PEM CA certificate", path.display()),
                        );
                        None
                    }
                    Err(e) => {
                        errors.at(
                            at("tls_ca_file"),
                            field("tls_ca_file"),
                            format!("{}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
        };
        if r.name.is_empty() {
            errors.at(at("name"), field("name"), "must not be empty");
        } else if !names.insert(r.name.clone()) {
            errors.at(
                at("name"),
                field("name"),
                format!("duplicate issuer name `{}`", r.name),
            );
        }
        if !issuer_text.is_empty() && !urls.insert(issuer_text.clone()) {
            errors.at(
                at("issuer"),
                field("issuer"),
                "another issuer has the same `issuer` URL",
            );
        }
        let issuer_url = match check_fetch_url(&issuer_text, r.danger_allow_insecure) {
            Ok(u) => Some(u),
            Err(e) => {
                errors.at(at("issuer"), field("issuer"), e);
                None
            }
        };
        if r.audiences.is_empty() || r.audiences.iter().any(String::is_empty) {
            errors.at(
                at("audiences"),
                field("audiences"),
                "required: a non-empty list of accepted `aud` values",
            );
        }
        let sources = [r.jwks_uri.is_some(), r.jwks.is_some(), r.jwks_file.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if sources > 1 {
            errors.at(
                Some(node),
                field("jwks_uri"),
                "give at most one of jwks_uri, jwks and jwks_file",
            );
        }
        let keys = if let Some(uri) = &r.jwks_uri {
            match check_fetch_url(uri, r.danger_allow_insecure) {
                Ok(u) => KeySource::JwksUri(u),
                Err(e) => {
                    errors.at(at("jwks_uri"), field("jwks_uri"), e);
                    KeySource::Discovery
                }
            }
        } else if let Some(jwks) = &r.jwks {
            match KeySet::from_jwks_value(jwks) {
                Ok(set) if !set.is_empty() => KeySource::Static(Arc::new(set)),
                Ok(_) => {
                    errors.at(at("jwks"), field("jwks"), "no usable key in this key set");
                    KeySource::Discovery
                }
                Err(e) => {
                    errors.at(at("jwks"), field("jwks"), format!("invalid key set: {e}"));
                    KeySource::Discovery
                }
            }
        } else if let Some(path) = &r.jwks_file {
            let path = base.join(path);
            match read_file(&path) {
                Ok(bytes) => match KeySet::from_jwks_json(&bytes) {
                    Ok(set) if !set.is_empty() => KeySource::File(path, Arc::new(set)),
                    Ok(_) => {
                        errors.at(
                            at("jwks_file"),
                            field("jwks_file"),
                            format!("{}: no usable key", path.display()),
                        );
                        KeySource::Discovery
                    }
                    Err(e) => {
                        errors.at(
                            at("jwks_file"),
                            field("jwks_file"),
                            format!("{}: invalid key set: {e}", path.display()),
                        );
                        KeySource::Discovery
                    }
                },
                Err(e) => {
                    errors.at(
                        at("jwks_file"),
                        field("jwks_file"),
                        format!("{}: {e}", path.display()),
                    );
                    KeySource::Discovery
                }
            }
        } else {
            KeySource::Discovery
        };
        let algorithms = match &r.algorithms {
            None => kind.default_algorithms(),
            Some(list) => {
                let mut algs = Vec::new();
                for a in list {
                    match a.parse::<Algorithm>() {
                        Ok(alg) => algs.push(alg),
                        Err(e) => errors.at(at("algorithms"), field("algorithms"), e.to_string()),
                    }
                }
                if list.is_empty() {
                    errors.at(
                        at("algorithms"),
                        field("algorithms"),
                        "must list at least one algorithm",
                    );
                }
                algs
            }
        };
        let replay = match r.replay.as_deref() {
            None | Some("one_time") => ReplayMode::OneTime,
            Some("reusable") => ReplayMode::Reusable,
            Some(other) => {
                errors.at(
                    at("replay"),
                    field("replay"),
                    format!("unknown value `{other}`; expected one_time or reusable"),
                );
                ReplayMode::OneTime
            }
        };
        let max_token_lifetime = duration_field(
            r.max_token_lifetime.as_deref(),
            DEFAULT_MAX_TOKEN_LIFETIME,
            at("max_token_lifetime"),
            &field("max_token_lifetime"),
            errors,
        );
        if errors.list.len() == before && issuer_url.is_some() {
            out.push(IssuerConfig {
                name: r.name.clone(),
                kind,
                kind_params,
                allow_access_tokens: r.allow_access_tokens,
                tls_ca_pem,
                policy: IssuerPolicy {
                    issuer: issuer_text,
                    audiences: r.audiences.clone(),
                    algorithms,
                    max_token_lifetime: Some(max_token_lifetime),
                    clock_skew: 0,
                },
                keys,
                replay,
                danger_allow_insecure: r.danger_allow_insecure,
            });
        }
    }
    errors.file = outer_file;
    out
}

/// Whether `pem` holds at least one certificate and every certificate in it is one the
/// TLS stack accepts as a root (so `check` catches what `serve` would refuse).
fn pem_has_certificate(pem: &[u8]) -> bool {
    let has_cert = pem::parse_many(pem).is_ok_and(|all| all.iter().any(|p| p.tag() == "CERTIFICATE"));
    has_cert
        && reqwest::Certificate::from_pem_bundle(pem).is_ok_and(|certs| {
            !certs.is_empty() && reqwest::Client::builder().tls_certs_merge(certs).build().is_ok()
        })
}

/// An issuer or JWKS URL must be https and must not name a loopback, private or
/// link-local address (or `localhost`) unless `danger_allow_insecure`.
pub fn check_fetch_url(text: &str, danger_allow_insecure: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if danger_allow_insecure => {}
        "http" => return Err("must be https:// (set danger_allow_insecure: true for development)".into()),
        other => return Err(format!("unsupported scheme `{other}`")),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must not have a query, fragment or credentials".into());
    }
    let Some(host) = url.host() else {
        return Err("must name a host".into());
    };
    if !danger_allow_insecure {
        let blocked = match host {
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                d == "localhost" || d.ends_with(".localhost")
            }
            url::Host::Ipv4(ip) => !netguard::is_public(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => !netguard::is_public(IpAddr::V6(ip)),
        };
        if blocked {
            return Err("names a loopback, private or link-local address (set danger_allow_insecure: true for development)".into());
        }
    }
    Ok(url)
}

/// Parse a YAML list of rules (a rule file's top level, or the config's `rules:`).
fn parse_rule_list(file: &Path, value: &Node, section: &str, errors: &mut Errors) -> Vec<SourcedRule> {
    let seq = match value {
        Node::Sequence(seq) => seq,
        Node::Scalar(s) if is_null(s) => return Vec::new(),
        _ => {
            errors.at(Some(value), section, "expected a list of rules");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in seq.iter().enumerate() {
        let label = match child(item, "name").and_then(Node::as_scalar) {
            Some(name) => format!("rule `{}`", name.as_str()),
            None => format!("{section}[{i}]"),
        };
        if let Some(rule) = from_node::<RawRule>(item, &label, errors) {
            out.push(SourcedRule {
                file: file.to_path_buf(),
                node: item.clone(),
                rule,
            });
        }
    }
    out
}

/// Parse a rule file: a list of rules, or `{rules: [...]}`. Returns the rules that
/// parsed and the errors of those that did not, so the good ones are still checked.
pub fn parse_rules_file(file: &Path, text: &str) -> (Vec<SourcedRule>, Vec<ConfigError>) {
    let mut errors = Errors::new(file);
    if text.trim().is_empty() {
        return (Vec::new(), Vec::new());
    }
    let Some(root) = parse_yaml_all(file, text, &mut errors.list) else {
        return (Vec::new(), errors.list);
    };
    let rules = match &root {
        Node::Mapping(m) => {
            let mut rules = Vec::new();
            for (k, v) in m.iter() {
                if k.as_str() == "rules" {
                    rules = parse_rule_list(file, v, "rules", &mut errors);
                } else {
                    let key = Node::Scalar(k.clone());
                    errors.at(
                        Some(&key),
                        k.as_str(),
                        format!("unknown field `{}`, expected `rules`", k.as_str()),
                    );
                }
            }
            rules
        }
        other => parse_rule_list(file, other, "rules", &mut errors),
    };
    (rules, errors.list)
}

/// Follow a rule-relative field path ("match.claims.environment") to its YAML node.
/// Keys may themselves contain dots, so at each level the longest matching key wins.
fn node_at<'n>(node: &'n Node, path: &str) -> &'n Node {
    let mut current = node;
    let mut rest = path;
    'outer: while !rest.is_empty() {
        let Some(map) = current.as_mapping() else { break };
        let mut best: Option<(&Node, usize)> = None;
        for (k, v) in map.iter() {
            let key = k.as_str();
            let prefix = rest == key || (rest.starts_with(key) && rest[key.len()..].starts_with('.'));
            if prefix && best.is_none_or(|(_, len)| key.len() > len) {
                best = Some((v, key.len()));
            }
        }
        match best {
            Some((v, len)) => {
                current = v;
                rest = rest[len..].trim_start_matches('.');
                continue 'outer;
            }
            None => break,
        }
    }
    current
}

/// Put a config file and its rule files together: issuers validated, rules compiled.
pub fn assemble(
    draft: Draft,
    rule_files: Vec<SourcedRule>,
    read_file: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
) -> Result<Config, ConfigErrors> {
    let mut errors = Errors::new(&draft.file);
    errors.list.extend(draft.errors.iter().cloned());
    let mut issuers = build_issuers(&draft.issuers, &draft.base_dir, &mut errors, read_file);
    check_replicas(&draft.replay, &issuers, draft.replay_node.as_ref(), &mut errors);
    for i in &mut issuers {
        i.policy.clock_skew = draft.server.clock_skew;
    }
    let known: BTreeSet<String> = draft.issuers.iter().map(|(_, _, r)| r.name.clone()).collect();
    let mut sourced = draft.rules;
    sourced.extend(rule_files);
    let raws: Vec<RawRule> = sourced.iter().map(|s| s.rule.clone()).collect();
    let is_known = |name: &str| known.contains(name);
    let ctx = CompileContext {
        issuers: &is_known,
        max_lifetime: draft.server.max_issued_lifetime,
    };
    let mut list = errors.list;
    let rules = match RuleSet::compile(raws, &ctx) {
        Ok(set) => Some(set),
        Err(rule_errors) => {
            for e in rule_errors {
                let (file, line) = match sourced.get(e.index) {
                    Some(s) => (s.file.clone(), line_of(node_at(&s.node, &e.field))),
                    None => (draft.file.clone(), None),
                };
                let who = e
                    .rule
                    .clone()
                    .map(|n| format!("rule `{n}`"))
                    .unwrap_or_else(|| format!("rule #{}", e.index + 1));
                list.push(ConfigError {
                    file,
                    line,
                    field: format!("{who}: {}", e.field),
                    message: e.message.clone(),
                });
            }
            None
        }
    };
    match rules {
        Some(rules) if list.is_empty() => Ok(Config {
            server: draft.server,
            signing: draft.signing,
            replay: draft.replay,
            issuers,
            rules: Arc::new(rules),
            rules_files: draft.rules_files,
            audit: draft.audit,
            admin: draft.admin,
            admin_state: AdminState::default(),
            file_items: Arc::default(),
        }),
        _ => Err(ConfigErrors(list)),
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    crate::files::read_regular_text(path, crate::files::MAX_CONFIG_BYTES).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })
}

/// Load a config file and every rule file it names. File I/O only; no network.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_admin(path, None)
}

/// Load a config file, its rule files and the admin API's issuers and rules: `admin`
/// replaces what the state file holds (to validate a change before it is written).
/// With `replay.backend: redis` and no `admin`, the admin state is empty: it lives in
/// Redis, and the caller supplies it.
pub fn load_with_admin(path: &Path, admin: Option<&AdminState>) -> Result<Config, ConfigErrors> {
    let text = read_text(path).map_err(|e| ConfigErrors(vec![e]))?;
    let env = |name: &str| std::env::var(name).ok();
    let read_file = |p: &Path| {
        crate::files::read_regular_file(p, crate::files::MAX_CA_BYTES)
            .map_err(|e| format!("cannot read: {e}"))
    };
    let mut draft = parse_config(path, &text, &env)?;
    let mut errors = Vec::new();
    let mut rules = Vec::new();
    let mut admin_state = AdminState::default();
    let (mut admin_issuers, mut admin_rules) = (Vec::new(), Vec::new());
    if let Some(settings) = draft.admin.as_mut() {
        if let Some(tokens_file) = &settings.tokens_file {
            match crate::files::read_regular_text(tokens_file, crate::files::MAX_SMALL_BYTES) {
                Ok(text) => {
                    for t in text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    {
                        if t.chars().count() < MIN_ADMIN_TOKEN_CHARS {
                            errors.push(ConfigError {
                                file: tokens_file.clone(),
                                line: None,
                                field: "admin.tokens_file".into(),
                                message: format!(
                                    "every token needs at least {MIN_ADMIN_TOKEN_CHARS} characters"
                                ),
                            });
                        }
                        settings.tokens.push(t.to_string());
                        settings.tokens_from_file += 1;
                    }
                }
                Err(e) => errors.push(ConfigError {
                    file: tokens_file.clone(),
                    line: None,
                    field: "admin.tokens_file".into(),
                    message: format!("cannot read: {e}"),
                }),
            }
            if settings.tokens.is_empty() && errors.is_empty() {
                errors.push(ConfigError {
                    file: tokens_file.clone(),
                    line: None,
                    field: "admin.tokens_file".into(),
                    message: "holds no token".into(),
                });
            }
        }
        admin_state = match admin {
            Some(state) => state.clone(),
            // With Redis the state lives there (`crate::admin_store`), not in a file:
            // empty until the broker reads it from Redis.
            None if matches!(draft.replay.backend, ReplayBackend::Redis(_)) => AdminState::default(),
            None => AdminState::read(&settings.state_file).unwrap_or_else(|e| {
                errors.push(ConfigError {
                    file: settings.state_file.clone(),
                    line: None,
                    field: "admin.state_file".into(),
                    message: e,
                });
                AdminState::default()
            }),
        };
        let (issuers, rules_made, problems) = parse_admin_items(&admin_state, settings);
        admin_issuers = issuers;
        admin_rules = rules_made;
        errors.extend(problems);
    }
    let globs = draft.rules_files.clone();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for pattern in &globs {
        // The same normalisation as the watcher's (reload.rs): `./` dropped, `..` resolved.
        let full = crate::reload::normalize_lexically(&base.join(pattern));
        let full_text = full.to_string_lossy().to_string();
        match glob::glob(&full_text) {
            Ok(paths) => {
                let mut matched: Vec<PathBuf> =
                    paths.filter_map(Result::ok).filter(|p| !p.is_dir()).collect();
                matched.sort();
                for p in matched {
                    match read_text(&p) {
                        Ok(t) => {
                            let (parsed, problems) = parse_rules_file(&p, &t);
                            rules.extend(parsed);
                            errors.extend(problems);
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(e) => errors.push(ConfigError {
                file: path.to_path_buf(),
                line: None,
                field: "rules_files".into(),
                message: format!("invalid glob `{pattern}`: {e}"),
            }),
        }
    }
    // The configuration file's own items, before the admin API's join them.
    let file_items = FileItems {
        issuers: draft
            .issuers
            .iter()
            .map(|(_, _, raw)| {
                let json = serde_json::to_value(raw).unwrap_or_default();
                (raw.name.clone(), without_nulls(json))
            })
            .collect(),
        rules: draft
            .rules
            .iter()
            .chain(&rules)
            .map(|s| {
                let json = serde_json::to_value(&s.rule).unwrap_or_default();
                (s.rule.name.clone(), without_nulls(json))
            })
            .collect(),
    };
    // A name both define is one error, under the admin item: the file's item wins
    // nothing either, the load fails and the previous set keeps serving.
    refuse_name_clashes(&draft, &rules, &mut admin_issuers, &mut admin_rules, &mut errors);
    draft.issuers.extend(admin_issuers);
    admin_rules.extend(rules);
    let rules = admin_rules;
    match assemble(draft, rules, &read_file) {
        Ok(mut config) if errors.is_empty() => {
            config.admin_state = admin_state;
            config.file_items = Arc::new(file_items);
            Ok(config)
        }
        Ok(_) => Err(ConfigErrors(errors)),
        Err(e) => {
            errors.extend(e.0);
            Err(ConfigErrors(errors))
        }
    }
}

/// Remove from the admin API's items every one whose name the configuration file (or
/// one of its rule files) also defines, with one error each naming where the file
/// defines it and how to resolve the clash.
fn refuse_name_clashes(
    draft: &Draft,
    rule_files: &[SourcedRule],
    admin_issuers: &mut Vec<(PathBuf, Node, RawIssuer)>,
    admin_rules: &mut Vec<SourcedRule>,
    errors: &mut Vec<ConfigError>,
) {
    let clash = |kind: &str, name: &str, file: &Path, line: Option<usize>| {
        let at = match line {
            Some(line) => format!("{}, line {line}", file.display()),
            None => file.display().to_string(),
        };
        let singular = &kind[..kind.len() - 1];
        ConfigError {
            file: admin_source(kind, name),
            line: None,
            field: "name".into(),
            message: format!(
                "{singular} `{name}` is defined both in the configuration ({at}) and through the admin API: \
                 {NAME_CLASH}; remove the admin API's copy (DELETE /admin/v1/{kind}/{name}) or the file's"
            ),
        }
    };
    admin_issuers.retain(
        |(_, _, raw)| match draft.issuers.iter().find(|(_, _, own)| own.name == raw.name) {
            Some((file, node, _)) => {
                errors.push(clash("issuers", &raw.name, file, line_of(node)));
                false
            }
            None => true,
        },
    );
    let owned: std::collections::HashMap<&str, &SourcedRule> = draft
        .rules
        .iter()
        .chain(rule_files)
        .rev()
        .map(|own| (own.rule.name.as_str(), own))
        .collect();
    admin_rules.retain(|admin| match owned.get(admin.rule.name.as_str()) {
        Some(own) => {
            errors.push(clash("rules", &admin.rule.name, &own.file, line_of(&own.node)));
            false
        }
        None => true,
    });
}

/// The admin API's items as parsed config items: through the same YAML parser and
/// serde structs as files (JSON is YAML), reported under `admin:issuers/NAME`.
#[allow(clippy::type_complexity)]
fn parse_admin_items(
    state: &AdminState,
    settings: &AdminConfig,
) -> (
    Vec<(PathBuf, Node, RawIssuer)>,
    Vec<SourcedRule>,
    Vec<ConfigError>,
) {
    let mut issuers = Vec::new();
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    let parse = |kind: &str, name: &str, value: &serde_json::Value, problems: &mut Vec<ConfigError>| {
        let file = admin_source(kind, name);
        let mut errors = Errors::new(&file);
        if value.get("name").and_then(|v| v.as_str()) != Some(name) {
            errors.at(None, "name", format!("must be `{name}`, the name in the path"));
        }
        let text = serde_json::to_string(value).unwrap_or_default();
        let node = match parse_yaml(&file, &text) {
            Ok(node) if node.as_mapping().is_some() => Some(node),
            Ok(_) => {
                errors.at(None, "", "must be a JSON object");
                None
            }
            Err(e) => {
                errors.list.push(e);
                None
            }
        };
        problems.extend(errors.list);
        node.map(|n| (file, n))
    };
    for (name, value) in &state.issuers {
        if let Some((file, node)) = parse("issuers", name, value, &mut problems) {
            let mut errors = Errors::new(&file);
            if let Some(mut raw) = from_node::<RawIssuer>(&node, "", &mut errors) {
                refuse_host_access(&mut raw, settings, &node, &mut errors);
                issuers.push((file, node, raw));
            }
            problems.extend(errors.list);
        }
    }
    for (name, value) in &state.rules {
        if let Some((file, node)) = parse("rules", name, value, &mut problems) {
            let mut errors = Errors::new(&file);
            if let Some(rule) = from_node::<RawRule>(&node, "", &mut errors) {
                rules.push(SourcedRule { file, node, rule });
            }
            problems.extend(errors.list);
        }
    }
    (issuers, rules, problems)
}

/// An admin-API issuer may not reach into the broker's host or network unless the
/// config file opts in: `danger_allow_insecure` (http://, loopback and private
/// addresses) needs `admin.allow_insecure_issuers: true`; `jwks_file` and `tls_ca_file`
/// need `admin.allow_file_paths: true`. A refused field is removed before the issuer is
/// built, so its file is never opened.
fn refuse_host_access(raw: &mut RawIssuer, settings: &AdminConfig, node: &Node, errors: &mut Errors) {
    let named = |k: &str| format!("issuer `{}`.{k}", raw.name);
    if raw.danger_allow_insecure && !settings.allow_insecure_issuers {
        errors.at(
            child(node, "danger_allow_insecure"),
            named("danger_allow_insecure"),
            "refused in an issuer made through the admin API (it allows http:// and loopback or private \
             addresses); to allow it, set `admin.allow_insecure_issuers: true` in the configuration file",
        );
        raw.danger_allow_insecure = false;
    }
    if settings.allow_file_paths {
        return;
    }
    for (field, present) in [
        ("jwks_file", raw.jwks_file.take().is_some()),
        ("tls_ca_file", raw.tls_ca_file.take().is_some()),
    ] {
        if present {
            errors.at(
                child(node, field),
                named(field),
                "refused in an issuer made through the admin API (it names a file on the broker's host); \
                 give the keys inline with `jwks` or fetch them with `jwks_uri`, or set \
                 `admin.allow_file_paths: true` in the configuration file",
            );
        }
    }
}

/// Used by `serve --dev` and tests: a config assembled in code.
pub fn from_parts(
    server: ServerConfig,
    signing: SigningConfig,
    issuers: Vec<IssuerConfig>,
    rules: Vec<RawRule>,
) -> Result<Config, String> {
    let names: BTreeSet<String> = issuers.iter().map(|i| i.name.clone()).collect();
    let is_known = |n: &str| names.contains(n);
    let ctx = CompileContext {
        issuers: &is_known,
        max_lifetime: server.max_issued_lifetime,
    };
    let rules = RuleSet::compile(rules, &ctx).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(Config {
        server,
        signing,
        replay: ReplayConfig {
            backend: ReplayBackend::Memory,
            on_unavailable: OnUnavailable::FailClosed,
            replicas: 1,
        },
        issuers,
        rules: Arc::new(rules),
        rules_files: Vec::new(),
        audit: AuditConfig::default(),
        admin: None,
        admin_state: AdminState::default(),
        file_items: Arc::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let file = Path::new("/etc/fedbroker/config.yaml");
        let draft = parse_config(file, text, &|n| (n == "SECRET").then(|| "s3cret".to_string()))?;
        assemble(draft, Vec::new(), &|_| Err("no files in tests".into()))
    }

    const MINIMAL: &str = "version: 1\nserver:\n  public_url: https://broker.example.com\nissuers:\n  - name: gha\n    issuer: https://token.actions.githubusercontent.com\n    audiences: [https://broker.example.com]\n";

    #[test]
    fn with_redis_the_admin_state_file_is_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("admin-state.json");
        std::fs::write(&state, "not JSON").expect("write");
        let cfg = dir.path().join("config.yaml");
        let admin = format!(
            "admin:\n  tokens: [\"0123456789abcdef-token\"]\n  state_file: {}\n",
            state.display()
        );
        std::fs::write(&cfg, format!("version: 1\n{admin}")).expect("write");
        let e = load(&cfg).expect_err("the file store reads the state file");
        assert_eq!(e.0[0].field, "admin.state_file", "{e}");
        let redis = "replay:\n  backend: redis\n  redis_url: redis://127.0.0.1:1\n";
        let key = "  state_hmac_key: 0123456789abcdef0123456789abcdef\n";
        std::fs::write(&cfg, format!("version: 1\n{admin}{key}{redis}")).expect("write");
        let c = load(&cfg).expect("with Redis the state is not in the file");
        assert_eq!(c.admin_state, AdminState::default());
    }

    #[test]
    fn with_redis_the_admin_state_needs_an_hmac_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.yaml");
        let admin = "admin:\n  tokens: [\"0123456789abcdef-token\"]\n";
        let redis = "replay:\n  backend: redis\n  redis_url: redis://127.0.0.1:1\n";
        std::fs::write(&cfg, format!("version: 1\n{admin}{redis}")).expect("write");
        let e = load(&cfg).expect_err("no key");
        assert!(
            e.0.iter()
                .any(|e| e.field == "admin.state_hmac_key" && e.message.contains("required")),
            "{e}"
        );
        std::fs::write(
            &cfg,
            format!("version: 1\n{admin}  state_hmac_key: short\n{redis}"),
        )
        .expect("write");
        let e = load(&cfg).expect_err("short key");
        assert!(
            e.0.iter()
                .any(|e| e.field == "admin.state_hmac_key" && e.message.contains("at least 32")),
            "{e}"
        );
        // Without Redis the key is optional (the state file is the broker's own).
        std::fs::write(&cfg, format!("version: 1\n{admin}")).expect("write");
        assert!(load(&cfg).expect("file store").admin.is_some());
    }

    #[test]
    fn admin_issuers_may_not_reach_the_host_without_an_opt_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.yaml");
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, r#"{"keys": []}"#).expect("write");
        let state = AdminState {
            issuers: [(
                "dev".to_string(),
                serde_json::json!({
                    "name": "dev", "issuer": "http://127.0.0.1:9/", "audiences": ["a"],
                    "danger_allow_insecure": true, "jwks_file": jwks.display().to_string(),
                    "tls_ca_file": "/dev/zero",
                }),
            )]
            .into(),
            rules: Default::default(),
        };
        let admin = "admin:\n  tokens: [\"0123456789abcdef-token\"]\n";
        std::fs::write(&cfg, format!("version: 1\n{admin}")).expect("write");
        let e = load_with_admin(&cfg, Some(&state)).expect_err("refused");
        for field in ["danger_allow_insecure", "jwks_file", "tls_ca_file"] {
            let found =
                e.0.iter()
                    .find(|e| e.field == format!("issuer `dev`.{field}"))
                    .unwrap_or_else(|| panic!("{field}: {e}"));
            assert_eq!(found.file, PathBuf::from("admin:issuers/dev"));
        }
        assert!(
            e.to_string().contains("admin.allow_insecure_issuers: true"),
            "{e}"
        );
        assert!(e.to_string().contains("admin.allow_file_paths: true"), "{e}");
        // Opted in: the fields are taken, and the files read only if regular.
        let opt_in = "  allow_insecure_issuers: true\n  allow_file_paths: true\n";
        std::fs::write(&cfg, format!("version: 1\n{admin}{opt_in}")).expect("write");
        let e = load_with_admin(&cfg, Some(&state)).expect_err("/dev/zero is no CA file");
        let e = e.to_string();
        assert!(
            !e.contains("refused in an issuer made through the admin API"),
            "{e}"
        );
        assert!(e.contains("a device: only regular files are read"), "{e}");
    }

    #[test]
    fn a_rules_file_that_is_a_fifo_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
        let fifo = dir.path().join("rules/pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, "version: 1\nrules_files: [rules/*.yaml]\n").expect("write");
        let e = load(&cfg).expect_err("a FIFO is not a rules file");
        assert!(
            e.to_string().contains("a FIFO: only regular files are read"),
            "{e}"
        );
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.server.public_url, "https://broker.example.com");
        assert_eq!(c.server.max_body_bytes, 65536);
        assert_eq!(c.server.clock_skew, 60);
        assert_eq!(c.server.max_issued_lifetime, 3600);
        assert_eq!(c.signing.algorithm, Algorithm::RS256);
        assert_eq!(c.issuers.len(), 1);
        assert_eq!(c.issuers[0].replay, ReplayMode::OneTime);
        assert_eq!(c.issuers[0].policy.clock_skew, 60);
        assert!(matches!(c.issuers[0].keys, KeySource::Discovery));
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_field() {
        let text = format!("{MINIMAL}server2: {{}}\n");
        let e = parse(&text).expect_err("unknown key");
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].line, Some(8));
        assert_eq!(e.0[0].field, "server2");
        assert!(e.to_string().contains("/etc/fedbroker/config.yaml:8"), "{e}");
    }

    #[test]
    fn nested_unknown_key_is_reported_with_its_line() {
        let text = "version: 1\nserver:\n  listen: 127.0.0.1:9000\n  lisen: 1\n";
        let e = parse(text).expect_err("unknown key");
        assert_eq!(e.0[0].line, Some(4), "{e}");
        assert!(e.0[0].message.contains("lisen"), "{e}");
        assert!(e.0[0].field.starts_with("server"), "{e}");
    }

    #[test]
    fn server_connection_limits_have_defaults_and_bounds() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.server.limits, ConnectionLimits::default());
        assert_eq!(c.server.limits.header_timeout.as_secs(), 10);
        assert_eq!(c.server.limits.body_timeout.as_secs(), 10);
        assert_eq!(c.server.limits.max_connections, 1024);
        let set = MINIMAL.replace(
            "server:\n",
            "server:\n  header_timeout: 2s\n  body_timeout: 1m\n  max_connections: 8\n",
        );
        let c = parse(&set).expect("valid");
        assert_eq!(c.server.limits.header_timeout.as_secs(), 2);
        assert_eq!(c.server.limits.body_timeout.as_secs(), 60);
        assert_eq!(c.server.limits.max_connections, 8);
        let bad = MINIMAL.replace(
            "server:\n",
            "server:\n  header_timeout: 0s\n  body_timeout: 11m\n  max_connections: 0\n",
        );
        let e = parse(&bad).expect_err("invalid");
        let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "server.header_timeout",
            "server.body_timeout",
            "server.max_connections",
        ] {
            assert!(fields.contains(&f), "missing {f} in {fields:?}");
        }
        let unknown = MINIMAL.replace("server:\n", "server:\n  read_timeout: 5s\n");
        let e = parse(&unknown).expect_err("unknown key");
        assert!(e.to_string().contains("read_timeout"), "{e}");
    }

    #[test]
    fn every_error_is_reported() {
        let text = "version: 2\nserver:\n  clock_skew: soon\n  max_issued_lifetime: 48h\nsigning:\n  algorithm: HS256\nissuers:\n  - name: a\n    issuer: http://example.com\n    audiences: []\nbogus: 1\n";
        let e = parse(text).expect_err("invalid");
        let fields: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "version",
            "server.clock_skew",
            "server.max_issued_lifetime",
            "signing.algorithm",
            "issuers[0].issuer",
            "issuers[0].audiences",
            "bogus",
        ] {
            assert!(fields.contains(&f), "missing {f} in {fields:?}");
        }
    }

    #[test]
    fn env_substitution_and_missing_variable() {
        assert_eq!(expand_env("a${SECRET}b", &|_| Some("x".into())), Ok("axb".into()));
        assert_eq!(expand_env("${NOPE}", &no_env), Err("NOPE".into()));
        assert_eq!(
            expand_env("$notavar ${ bad}", &no_env),
            Ok("$notavar ${ bad}".into())
        );
        let text = "version: 1\nserver:\n  public_url: https://${SECRET}.example.com\n";
        assert_eq!(
            parse(text).expect("ok").server.public_url,
            "https://s3cret.example.com"
        );
        let text = "version: 1\nserver:\n  public_url: https://${MISSING}.example.com\n";
        let e = parse(text).expect_err("missing env");
        assert_eq!(e.0[0].line, Some(3));
        assert!(e.0[0].message.contains("MISSING"));
    }

    #[test]
    fn issuer_urls_naming_private_addresses_are_refused() {
        for url in [
            "https://localhost/x",
            "https://127.0.0.1",
            "https://10.1.2.3",
            "https://[::1]",
            "https://169.254.169.254",
            "http://example.com",
        ] {
            assert!(check_fetch_url(url, false).is_err(), "{url}");
        }
        assert!(check_fetch_url("https://token.actions.githubusercontent.com", false).is_ok());
        assert!(check_fetch_url("http://127.0.0.1:9000", true).is_ok());
    }

    #[test]
    fn rule_errors_point_at_the_rule_file_line() {
        let file = Path::new("/r/rules.yaml");
        let (rules, problems) = parse_rules_file(
            file,
            "- name: r1\n  match:\n    issuer: nope\n    audiences: [x]\n",
        );
        assert!(problems.is_empty());
        let draft = parse_config(Path::new("/c.yaml"), MINIMAL, &no_env).expect("ok");
        let e = assemble(draft, rules, &|_| Err("x".into())).expect_err("unknown issuer");
        assert_eq!(e.0[0].file, PathBuf::from("/r/rules.yaml"));
        assert_eq!(e.0[0].line, Some(3), "{e}");
    }

    #[test]
    fn rule_file_unknown_field_has_line() {
        let (rules, e) = parse_rules_file(
            Path::new("/r.yaml"),
            "- name: r1\n  match:\n    issuer: gha\n    subjekt: x\n- name: r2\n  match: {issuer: gha, audiences: [x]}\n",
        );
        assert_eq!(rules.len(), 1, "the good rule is kept for checking");
        assert_eq!(e[0].line, Some(4), "{e:?}");
        assert!(e[0].message.contains("subjekt"));
    }

    fn with_replay(replay: &str) -> String {
        format!("{MINIMAL}replay:\n{replay}")
    }

    #[test]
    fn redis_replay_parses_with_defaults() {
        let c = parse(&with_replay(
            "  backend: redis\n  redis_url: rediss://fedbroker:${SECRET}@redis.internal:6380/2\n",
        ))
        .expect("valid");
        let ReplayBackend::Redis(r) = &c.replay.backend else {
            panic!("not redis: {:?}", c.replay.backend)
        };
        assert_eq!(
            r.target,
            RedisTarget::Standalone("rediss://fedbroker:s3cret@redis.internal:6380/2".into())
        );
        assert_eq!(r.key_prefix, "fedbroker:replay:");
        assert_eq!(r.command_timeout, std::time::Duration::from_millis(250));
        assert_eq!(c.replay.replicas, 1);
        assert_eq!(c.replay.on_unavailable, OnUnavailable::FailClosed);
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret"),
            "the password leaks into Debug: {debug}"
        );
        assert!(debug.contains("fedbroker:***@redis.internal"), "{debug}");
    }

    #[test]
    fn redis_cluster_and_options_parse() {
        let c = parse(&with_replay(
            "  backend: redis\n  redis_cluster_urls: [redis://10.0.0.1:7000, redis://10.0.0.2:7000]\n  key_prefix: \"x:\"\n  command_timeout: 1s\n  on_unavailable: fail_open\n  replicas: 3\n",
        ))
        .expect("valid");
        let ReplayBackend::Redis(r) = &c.replay.backend else {
            panic!("not redis")
        };
        assert!(matches!(&r.target, RedisTarget::Cluster(urls) if urls.len() == 2));
        assert_eq!(r.key_prefix, "x:");
        assert_eq!(r.command_timeout, std::time::Duration::from_secs(1));
        assert_eq!(c.replay.on_unavailable, OnUnavailable::FailOpen);
        assert_eq!(c.replay.replicas, 3);
    }

    #[test]
    fn redis_replay_errors() {
        for (replay, field, says) in [
            ("  backend: redis\n", "replay.redis_url", "needs `redis_url`"),
            (
                "  backend: redis\n  redis_url: redis://a\n  redis_cluster_urls: [redis://b]\n",
                "replay.redis_cluster_urls",
                "not both",
            ),
            (
                "  backend: redis\n  redis_cluster_urls: []\n",
                "replay.redis_cluster_urls",
                "at least one",
            ),
            (
                "  backend: redis\n  redis_url: http://a\n",
                "replay.redis_url",
                "redis://",
            ),
            (
                "  backend: redis\n  redis_cluster_urls: [redis://a, \"rediss://\"]\n",
                "replay.redis_cluster_urls[1]",
                "Redis URL",
            ),
            (
                "  backend: redis\n  redis_url: redis://a\n  command_timeout: 1ms\n",
                "replay.command_timeout",
                "between",
            ),
            (
                "  backend: redis\n  redis_url: redis://a\n  command_timeout: soon\n",
                "replay.command_timeout",
                "invalid duration",
            ),
            (
                "  backend: redis\n  redis_url: redis://a\n  key_prefix: \"\"\n",
                "replay.key_prefix",
                "empty",
            ),
            ("  redis_url: redis://a\n", "replay.redis_url", "only used with"),
            ("  key_prefix: x\n", "replay.key_prefix", "only used with"),
            ("  backend: etcd\n", "replay.backend", "unknown backend"),
            ("  replicas: 0\n", "replay.replicas", "at least 1"),
        ] {
            let e = parse(&with_replay(replay)).expect_err(replay);
            assert!(
                e.0.iter()
                    .any(|e| e.field == field && e.message.contains(says) && e.line.is_some()),
                "{replay}: expected {field}: ...{says}..., got {e}"
            );
        }
    }

    #[test]
    fn replicas_refuse_the_memory_backend_with_one_time_issuers() {
        let e = parse(&with_replay("  replicas: 2\n")).expect_err("memory + one_time + 2 replicas");
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].field, "replay.replicas");
        assert_eq!(e.0[0].line, Some(9), "{e}");
        assert!(e.0[0].message.contains("gha"), "{e}");

        let reusable = MINIMAL.replace("audiences:", "replay: reusable\n    audiences:");
        parse(&format!("{reusable}replay:\n  replicas: 2\n")).expect("no one_time issuer: fine");
        parse(&with_replay(
            "  backend: redis\n  redis_url: redis://a\n  replicas: 2\n",
        ))
        .expect("redis: fine");
        parse(&with_replay("  replicas: 1\n")).expect("one replica: fine");
    }

    #[test]
    fn command_timeout_takes_milliseconds_or_durations() {
        assert_eq!(parse_millis("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(parse_millis("2s"), Ok(std::time::Duration::from_secs(2)));
        assert!(parse_millis("ms").is_err());
        assert!(parse_millis("1.5s").is_err());
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse("version: 1\nversion: 1\n").expect_err("dup");
        assert_eq!(e.0[0].line, Some(2));
    }

    #[test]
    fn every_duplicate_key_is_reported_and_the_other_errors_too() {
        let text = "version: 1\nserver:\n  listen: 127.0.0.1:1\n  listen: 127.0.0.1:2\n  bogus: 1\n\
                    issuers:\n  - name: a\n    name: b\nrules: []\nrules: []\n";
        let e = parse(text).expect_err("invalid");
        let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        let has = |line: usize, field: &str, words: &str| {
            e.0.iter()
                .any(|x| x.line == Some(line) && x.field == field && x.message.contains(words))
        };
        assert!(
            has(
                4,
                "server.listen",
                "duplicate key `listen` (first defined on line 3)"
            ),
            "{shown:#?}"
        );
        assert!(has(8, "issuers[0].name", "duplicate key `name`"), "{shown:#?}");
        assert!(has(10, "rules", "duplicate key `rules`"), "{shown:#?}");
        // ...and loading went on: the unknown field is reported as well.
        assert!(e.0.iter().any(|x| x.field == "server.bogus"), "{shown:#?}");
    }

    #[test]
    fn rule_file_duplicates_are_reported_with_the_other_errors() {
        let text = "- name: r\n  match:\n    issuer: i\n    issuer: j\n    audiences: [x]\n  nope: 1\n";
        let (_, errors) = parse_rules_file(Path::new("r.yaml"), text);
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            errors.iter().any(|x| x.line == Some(4)
                && x.field == "[0].match.issuer"
                && x.message.contains("duplicate")),
            "{shown:#?}"
        );
        assert!(shown.iter().any(|x| x.contains("nope")), "{shown:#?}");
    }

    #[test]
    fn a_name_the_file_and_the_admin_state_both_define_is_one_clash_error_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.yaml");
        let rules = dir.path().join("rules.yaml");
        std::fs::write(
            &rules,
            "- name: deploy\n  match:\n    issuer: gha\n    subject: s\n    audiences: [t]\n",
        )
        .expect("write");
        let admin = "admin:\n  tokens: [\"0123456789abcdef-token\"]\n";
        std::fs::write(&cfg, format!("{MINIMAL}rules_files: [rules.yaml]\n{admin}")).expect("write");
        let issuer = |name: &str| serde_json::json!({"name": name, "issuer": format!("https://{name}.example.com"), "audiences": ["a"]});
        let rule = serde_json::json!({"name": "deploy", "match": {"issuer": "gha", "subject": "x", "audiences": ["t"]}});
        let mut state = AdminState::default();
        state.issuers.insert("gha".into(), issuer("gha"));
        state.issuers.insert("other".into(), issuer("other"));
        state.rules.insert("deploy".into(), rule);
        let e = load_with_admin(&cfg, Some(&state)).expect_err("clash");
        let clashes: Vec<&ConfigError> = e.0.iter().filter(|x| is_name_clash(&x.to_string())).collect();
        assert_eq!(clashes.len(), 2, "{e}");
        assert_eq!(clashes[0].file, PathBuf::from("admin:issuers/gha"));
        assert!(clashes[0].message.contains("config.yaml, line 5"), "{e}");
        assert_eq!(clashes[1].file, PathBuf::from("admin:rules/deploy"));
        assert!(clashes[1].message.contains("rules.yaml, line 1"), "{e}");
        assert!(!e.to_string().contains("duplicate"), "one error per clash: {e}");

        // Without the clashing items: the file's items are known, the admin API's not among them.
        state.issuers.remove("gha");
        state.rules.clear();
        let config = load_with_admin(&cfg, Some(&state)).expect("loads");
        assert!(config.file_items.owns("issuers", "gha"));
        assert!(config.file_items.owns("rules", "deploy"));
        assert!(!config.file_items.owns("issuers", "other"));
        assert_eq!(
            config.file_items.issuers[0].1["audiences"],
            serde_json::json!(["https://broker.example.com"])
        );
        assert!(
            config.file_items.issuers[0].1.get("jwks_uri").is_none(),
            "no null members"
        );
        assert_eq!(config.file_items.rules[0].1["match"]["subject"], "s");
    }
}
