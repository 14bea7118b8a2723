//! `admin:` and the admin API's issuers and rules: its settings, the state it keeps
//! (a file, or Redis), and how its items join the configuration file's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use federation_rules::RawRule;
use issuer_schema::HostAccess;
use marked_yaml::Node;
use serde::Deserialize;

use super::error::{ConfigError, Errors};
use super::model::{ReplayBackend, ReplayConfig, TlsConfig};
use super::parse::{Draft, ItemLines, Reparsed, SourcedRule};
use super::raw::{RawAdmin, RawIssuer};
use super::yaml::{child, from_node, node_at, parse_yaml};

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
    /// `admin.tls`: the admin listener's own TLS settings; `None`: those of
    /// `server.tls` (see [`AdminConfig::listener_tls`]).
    pub tls: Option<TlsConfig>,
}

/// The shortest `admin.state_hmac_key` accepted.
pub const MIN_STATE_HMAC_KEY_CHARS: usize = 32;

/// The shortest admin token accepted: shorter ones are guessable.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Why the admin state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminStateError {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Json(PathBuf, serde_json::Error),
}

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
    pub fn read(path: &Path) -> Result<AdminState, AdminStateError> {
        match crate::files::read_regular_file(path, crate::files::MAX_CONFIG_BYTES) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| AdminStateError::Json(path.to_path_buf(), e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AdminState::default()),
            Err(e) => Err(AdminStateError::Read(path.to_path_buf(), e)),
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
pub(super) fn without_nulls(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    value
}

/// The `admin:` section's settings (`node`: its mapping, for lines).
pub(super) fn build_admin(
    raw_admin: Option<RawAdmin>,
    node: Option<&Node>,
    base_dir: &Path,
    replay: &ReplayConfig,
    errors: &mut Errors,
) -> Option<AdminConfig> {
    let admin = raw_admin.map(|a| {
        let at = |k: &str| node.and_then(|n| child(n, k));
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
            tls: a
                .tls
                .and_then(|t| super::server::build_tls(t, at("tls"), "admin.tls", base_dir, errors)),
        }
    });
    if let Some(a) = &admin {
        let at = |k: &str| node.and_then(|n| child(n, k).or(Some(n)));
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
    admin
}

/// Remove from the admin API's items every one whose name the configuration file (or
/// one of its rule files) also defines, with one error each naming where the file
/// defines it and how to resolve the clash.
pub(super) fn refuse_name_clashes(
    draft: &Draft,
    rule_files: &[SourcedRule],
    admin_issuers: &mut Vec<(PathBuf, ItemLines, RawIssuer)>,
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
                errors.push(clash("issuers", &raw.name, file, node.line()));
                false
            }
            None => true,
        },
    );
    let mut reparsed = Reparsed::default();
    let owned: std::collections::HashMap<&str, &SourcedRule> = draft
        .rules
        .iter()
        .chain(rule_files)
        .rev()
        .map(|own| (own.rule.name.as_str(), own))
        .collect();
    admin_rules.retain(|admin| match owned.get(admin.rule.name.as_str()) {
        Some(own) => {
            let line = own.at.line(&own.file, "", &mut reparsed);
            errors.push(clash("rules", &admin.rule.name, &own.file, line));
            false
        }
        None => true,
    });
}

/// The admin API's items as parsed config items: through the same YAML parser and
/// serde structs as files (JSON is YAML), reported under `admin:issuers/NAME`.
#[allow(clippy::type_complexity)]
pub(super) fn parse_admin_items(
    state: &AdminState,
    settings: &AdminConfig,
) -> (
    Vec<(PathBuf, ItemLines, RawIssuer)>,
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
                let access = HostAccess {
                    allow_insecure_issuers: settings.allow_insecure_issuers,
                    allow_file_paths: settings.allow_file_paths,
                };
                // A refused field is removed before the issuer is built: its file is never opened.
                for problem in issuer_schema::refuse_host_access(&mut raw, access) {
                    let field = format!("issuer `{}`.{}", raw.name, problem.field);
                    errors.at(child(&node, problem.field), field, problem.error.to_string());
                }
                issuers.push((file, ItemLines::of(&node), raw));
            }
            problems.extend(errors.list);
        }
    }
    for (name, value) in &state.rules {
        if let Some((file, node)) = parse("rules", name, value, &mut problems) {
            let mut errors = Errors::new(&file);
            if let Some(mut rule) = from_node::<RawRule>(&node, "", &mut errors) {
                for (field, message) in refuse_rule_host_access(&mut rule, settings) {
                    errors.at(
                        Some(node_at(&node, &field)),
                        format!("rule `{}`.{field}", rule.name),
                        message,
                    );
                }
                rules.push(SourcedRule::new(file.into(), node, rule));
            }
            problems.extend(errors.list);
        }
    }
    (issuers, rules, problems)
}

/// What an admin-API rule's `issue.credentials` may not do without the config file's
/// opt-ins, as for issuers: `danger_allow_insecure_endpoint`, or an endpoint on a
/// loopback, private or link-local address, needs `admin.allow_insecure_issuers`;
/// `ca_file` (a file on the broker's host) needs `admin.allow_file_paths`. A refused
/// field is cleared, so its file is never opened. Answers (field, message) pairs.
fn refuse_rule_host_access(rule: &mut RawRule, settings: &AdminConfig) -> Vec<(String, String)> {
    let Some(credentials) = rule.issue.as_mut().and_then(|i| i.credentials.as_mut()) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if !settings.allow_insecure_issuers {
        for (field, url) in credentials.endpoints() {
            if let Err(e) = issuer_schema::check_fetch_url(url, false) {
                problems.push((
                    format!("issue.credentials.{field}"),
                    format!("{e} (an admin-API rule needs admin.allow_insecure_issuers: true for that)"),
                ));
            }
        }
    }
    for (cloud, insecure, ca_file) in credentials.trust_mut() {
        if *insecure && !settings.allow_insecure_issuers {
            *insecure = false;
            problems.push((
                format!("issue.credentials.{cloud}.danger_allow_insecure_endpoint"),
                "an admin-API rule may set it only with admin.allow_insecure_issuers: true".to_owned(),
            ));
        }
        if ca_file.is_some() && !settings.allow_file_paths {
            *ca_file = None;
            problems.push((
                format!("issue.credentials.{cloud}.ca_file"),
                "an admin-API rule may name a file on the broker's host only with admin.allow_file_paths: true".to_owned(),
            ));
        }
    }
    problems
}
