//! The pure side: the configuration file's text into a [`Draft`], and a draft plus its
//! rule files into a [`Config`] (issuers validated, rules compiled). No file is read
//! here; whatever must be read comes in as text or through a `read_file` function.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use federation_rules::{CompileContext, RawRule, RuleSet};
use issuers::Algorithm;
use marked_yaml::Node;

use super::admin::{AdminConfig, AdminState, build_admin};
use super::env::substitute_env;
use super::error::{ConfigError, ConfigErrors, Errors};
use super::issuers::{ReadFile, build_issuers};
use super::model::*;
use super::raw::*;
use super::replay::{build_replay, check_replicas};
use super::rules::parse_rule_list;
use super::server::{build_server, check_nonce_replicas};
use super::signing::build_signing;
use super::yaml::{
    Streamed, child, from_node, is_null, join_path, line_of, load_streaming, node_at, parse_yaml_all,
};

/// A rule as parsed, with where it came from (to turn field paths into lines).
pub struct SourcedRule {
    pub file: Arc<Path>,
    pub(super) at: RuleAt,
    /// The rule's own line (where its entry starts), for listings.
    pub(super) line: Option<u32>,
    pub rule: RawRule,
}

impl SourcedRule {
    /// The rule's line and its place in its file's list (for the fuzz target).
    #[doc(hidden)]
    pub fn position(&self) -> (Option<u32>, Option<usize>) {
        (self.line, self.at.item)
    }
}

/// Where a loaded rule came from: its file and line (the console's rules page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOrigin {
    pub file: Arc<Path>,
    pub line: Option<u32>,
}

impl SourcedRule {
    /// A rule parsed from its own node.
    pub fn new(file: Arc<Path>, node: Node, rule: RawRule) -> SourcedRule {
        SourcedRule {
            file,
            line: line_of(&node).and_then(|l| u32::try_from(l).ok()),
            at: RuleAt {
                source: RuleSource::Node(Arc::new(node)),
                item: None,
            },
            rule,
        }
    }
}

/// Where in its file a rule is: the rule's node (`item: None`), or the `item`th entry of
/// a list of rules.
pub(super) struct RuleAt {
    pub(super) source: RuleSource,
    pub(super) item: Option<usize>,
}

/// What a rule's line is found in. The rules of one file share it: none holds a copy.
#[derive(Clone)]
pub(super) enum RuleSource {
    /// The YAML node (kept for the few rules of the configuration file and the admin API).
    Node(Arc<Node>),
    /// A rule file's text: its YAML tree, several times the text's size, is dropped once
    /// the rules are read, and parsed again only when an error needs a line.
    Text(Arc<str>),
}

/// Where an item (an issuer) and each of its keys are written: the lines of its errors,
/// without its YAML tree (ten thousand issuers with inline keys make a large tree).
pub struct ItemLines {
    line: Option<usize>,
    keys: Box<[(Box<str>, Option<usize>)]>,
    /// Its position in the configuration file's list (`None` for the admin API's).
    index: Option<usize>,
}

impl ItemLines {
    pub(super) fn of(node: &Node) -> ItemLines {
        let keys = node.as_mapping().map(|m| {
            m.iter()
                .map(|(k, v)| (Box::from(k.as_str()), line_of(v)))
                .collect()
        });
        ItemLines {
            line: line_of(node),
            keys: keys.unwrap_or_default(),
            index: None,
        }
    }

    /// The `index`th item of the configuration file's list.
    fn item(node: &Node, index: usize) -> ItemLines {
        ItemLines {
            index: Some(index),
            ..ItemLines::of(node)
        }
    }

    pub(super) fn index(&self) -> Option<usize> {
        self.index
    }

    pub(super) fn line(&self) -> Option<usize> {
        self.line
    }

    /// The line of `key`'s value, or the item's own when the key is not written.
    pub(super) fn key_line(&self, key: &str) -> Option<usize> {
        let written = self.keys.iter().find(|(k, _)| &**k == key);
        written.map_or(self.line, |(_, line)| *line)
    }
}

/// Rule files parsed again for the lines of their errors, each once.
#[derive(Default)]
pub(super) struct Reparsed(std::collections::HashMap<usize, Option<Node>>);

impl Reparsed {
    /// The list of rules in a rule file's text, as `parse_rules_file` read it.
    fn rule_list(&mut self, file: &Path, text: &Arc<str>) -> Option<&Node> {
        let key = Arc::as_ptr(text).cast::<u8>() as usize;
        self.0
            .entry(key)
            .or_insert_with(|| {
                let root = parse_yaml_all(file, text, &mut Vec::new())?;
                match root {
                    Node::Mapping(_) => child(&root, "rules").cloned(),
                    other => Some(other),
                }
            })
            .as_ref()
    }
}

impl RuleAt {
    /// The line of `field` (a dotted path from the rule's root; `""` for the rule itself).
    pub(super) fn line(&self, file: &Path, field: &str, reparsed: &mut Reparsed) -> Option<usize> {
        let list: &Node = match &self.source {
            RuleSource::Node(node) => node,
            RuleSource::Text(text) => reparsed.rule_list(file, text)?,
        };
        let node = match self.item {
            Some(i) => list.as_sequence()?.get(i)?,
            None => list,
        };
        line_of(node_at(node, field))
    }
}

/// The config file parsed, before rule files are read and rules compiled.
pub struct Draft {
    pub(super) file: PathBuf,
    pub(super) server: ServerConfig,
    pub(super) signing: SigningConfig,
    pub(super) replay: ReplayConfig,
    /// The `replay:` mapping, for the line of errors found once issuers are known.
    pub(super) replay_node: Option<Node>,
    /// Each with the file it came from (the config file, or the admin API's state).
    pub(super) issuers: Vec<(PathBuf, ItemLines, RawIssuer)>,
    pub rules_files: Vec<String>,
    pub(super) admin: Option<AdminConfig>,
    pub(super) rules: Vec<SourcedRule>,
    pub(super) audit: AuditConfig,
    pub(super) limits: crate::limits::LimitsConfig,
    pub(super) telemetry: super::telemetry::TelemetryConfig,
    pub(super) console: Option<super::console::ConsoleConfig>,
    pub(super) base_dir: PathBuf,
    /// Problems found in the config file itself.
    pub(super) errors: Vec<ConfigError>,
}

/// Parse the config file's text. Pure: `env` supplies `${NAME}` values.
pub fn parse_config(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Draft, ConfigErrors> {
    let mut errors = Errors::new(file);
    // The issuers are read one at a time when the file loads that way; otherwise (and
    // for its errors) from the whole tree.
    let (mut root, mut streamed) = match issuers_one_by_one(file, text, env) {
        Some((root, streamed)) => (root, Some(streamed)),
        None => match parse_yaml_all(file, text, &mut errors.list) {
            Some(root) => (root, None),
            None => return Err(ConfigErrors(errors.list)),
        },
    };
    match (root.as_mapping_mut(), streamed.as_mut()) {
        (Some(map), Some(streamed)) => {
            for (key, value) in map.iter_mut() {
                // The streamed issuers' list is empty in the tree: their `${NAME}`
                // errors in its place among the others'.
                substitute_env(value, &join_path("", key.as_str()), &mut errors, env);
                if key.as_str() == "issuers" {
                    errors.list.append(&mut streamed.env_errors);
                }
            }
        }
        _ => substitute_env(&mut root, "", &mut errors, env),
    }
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
    let mut raw_limits = super::raw::RawLimits::default();
    let mut raw_telemetry = super::raw::RawTelemetry::default();
    let mut raw_console: Option<super::console::RawConsole> = None;

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
            "limits" => raw_limits = from_node(value, "limits", &mut errors).unwrap_or_default(),
            "console" => raw_console = from_node(value, "console", &mut errors),
            "telemetry" => raw_telemetry = from_node(value, "telemetry", &mut errors).unwrap_or_default(),
            "rules_files" => rules_files = from_node(value, "rules_files", &mut errors).unwrap_or_default(),
            // A list was read item by item (it is empty in the tree); anything else, not.
            "issuers" => match (streamed.take(), value.as_sequence()) {
                (Some(streamed), Some(_)) => {
                    raw_issuers = streamed.issuers;
                    errors.list.extend(streamed.errors);
                }
                (_, Some(seq)) => {
                    for (i, item) in seq.iter().enumerate() {
                        if let Some(raw) = from_node::<RawIssuer>(item, &format!("issuers[{i}]"), &mut errors)
                        {
                            raw_issuers.push((file.to_path_buf(), ItemLines::item(item, i), raw));
                        }
                    }
                }
                (_, None) if value.as_scalar().is_some_and(is_null) => {}
                (_, None) => errors.at(Some(value), "issuers", "expected a list of issuers"),
            },
            "rules" => {
                let source = RuleSource::Node(Arc::new(value.clone()));
                rules.extend(parse_rule_list(file, value, source, "rules", &mut errors));
            }
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
    let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let server = build_server(server, server_node, &base_dir, &mut errors);
    let mut signing = build_signing(signing, child(&root, "signing"), &base_dir, &mut errors);
    // A retired key stays published until every token it signed has expired.
    if let Some(rotation) = signing.rotation.as_mut() {
        rotation.max_lifetime = server.max_issued_lifetime;
    }
    let replay = build_replay(replay, child(&root, "replay"), &mut errors);
    check_nonce_replicas(&server, replay.replicas, server_node, &mut errors);
    let audit = AuditConfig {
        path: audit.path.map(|p| base_dir.join(p)),
    };
    let admin = build_admin(raw_admin, child(&root, "admin"), &base_dir, &replay, &mut errors);
    let limits_node = child(&root, "limits");
    let mut rate = |value: Option<String>, key: &str| {
        let text = value?;
        match crate::limits::Rate::parse(&text) {
            Ok(rate) => Some(rate),
            Err(e) => {
                errors.at(
                    limits_node.and_then(|n| child(n, key)),
                    format!("limits.{key}"),
                    e,
                );
                None
            }
        }
    };
    let limits = crate::limits::LimitsConfig {
        per_issuer: rate(raw_limits.per_issuer, "per_issuer"),
        per_subject: rate(raw_limits.per_subject, "per_subject"),
        per_client_address: rate(raw_limits.per_client_address, "per_client_address"),
    };
    let telemetry =
        super::telemetry::build_telemetry(raw_telemetry, child(&root, "telemetry"), env, &mut errors);
    let console =
        super::console::build_console(raw_console, child(&root, "console"), admin.as_ref(), &mut errors);

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
        limits,
        telemetry,
        console,
        base_dir,
        admin,
        errors: errors.list,
    })
}

/// The issuers of a configuration file read one at a time ([`load_streaming`]).
pub(super) struct StreamedIssuers {
    issuers: Vec<(PathBuf, ItemLines, RawIssuer)>,
    /// Their `${NAME}` substitutions' errors, then their other errors.
    env_errors: Vec<ConfigError>,
    errors: Vec<ConfigError>,
}

/// The configuration file's tree without its issuers (an empty list in their place),
/// and the issuers read one at a time: each item's `${NAME}`s substituted, parsed and
/// its tree dropped before the next. `None` when the file does not load that way (see
/// [`load_streaming`]).
pub(super) fn issuers_one_by_one(
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(Node, StreamedIssuers)> {
    let mut env_errors = Errors::new(file);
    let mut errors = Errors::new(file);
    let mut issuers = Vec::new();
    let mut index = 0;
    let root = load_streaming(text, Streamed::Under("issuers"), &mut |mut item| {
        let at = format!("issuers[{index}]");
        substitute_env(&mut item, &at, &mut env_errors, env);
        if let Some(raw) = from_node::<RawIssuer>(&item, &at, &mut errors) {
            issuers.push((file.to_path_buf(), ItemLines::item(&item, index), raw));
        }
        index += 1;
    })?;
    Some((
        root,
        StreamedIssuers {
            issuers,
            env_errors: env_errors.list,
            errors: errors.list,
        },
    ))
}

impl Draft {
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }
}

/// Put a config file and its rule files together: issuers validated, rules compiled.
pub fn assemble(
    draft: Draft,
    rule_files: impl IntoIterator<Item = SourcedRule>,
    read_file: ReadFile<'_>,
) -> Result<Config, ConfigErrors> {
    let mut errors = Errors::new(&draft.file);
    errors.list.extend(draft.errors.iter().cloned());
    let mut issuers = build_issuers(&draft.issuers, &draft.base_dir, &mut errors, read_file);
    check_replicas(&draft.replay, &issuers, draft.replay_node.as_ref(), &mut errors);
    for i in &mut issuers {
        i.policy.clock_skew = draft.server.clock_skew;
    }
    let known: BTreeSet<String> = draft.issuers.iter().map(|(_, _, r)| r.name.clone()).collect();
    // The raw issuers are done with: gone before the rule files are read (ten thousand
    // issuers with inline key sets are tens of megabytes).
    drop(draft.issuers);
    // The config file's rules, then the rule files': chained, not copied into one vector.
    // The rule files' may be read as they are compiled (`load::with_rule_files`).
    let sourced = draft.rules.into_iter().chain(rule_files);
    let count = sourced.size_hint().0;
    let mut reparsed = Reparsed::default();
    let is_known = |name: &str| known.contains(name);
    let ctx = CompileContext {
        issuers: &is_known,
        max_lifetime: draft.server.max_issued_lifetime,
    };
    let mut list = errors.list;
    // The raw rules move into compilation one by one (no second copy of them); their
    // sources stay for the lines of errors.
    let mut sources: Vec<(Arc<Path>, RuleAt)> = Vec::with_capacity(count);
    let mut origins: Vec<RuleOrigin> = Vec::with_capacity(count);
    let raws = sourced.map(|s| {
        origins.push(RuleOrigin {
            file: s.file.clone(),
            line: s.line,
        });
        sources.push((s.file, s.at));
        s.rule
    });
    let compiled = RuleSet::compile_each(raws, &ctx);
    let sourced = sources;
    let rules = match compiled {
        Ok(set) => Some(set),
        Err(rule_errors) => {
            for e in rule_errors {
                let (file, line) = match sourced.get(e.index) {
                    Some((file, at)) => (file.to_path_buf(), at.line(file, &e.field, &mut reparsed)),
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
    if let Some(rules) = &rules {
        entra_needs_rs256(rules, &draft.signing, &draft.file, &mut list);
    }
    match rules {
        Some(rules) if list.is_empty() => Ok(Config {
            server: draft.server,
            signing: draft.signing,
            replay: draft.replay,
            issuers,
            rules: Arc::new(rules),
            rule_origins: origins.into(),
            rules_files: draft.rules_files,
            audit: draft.audit,
            limits: draft.limits,
            telemetry: draft.telemetry,
            console: draft.console,
            admin: draft.admin,
            admin_state: AdminState::default(),
            file_items: Arc::default(),
        }),
        _ => Err(ConfigErrors(list)),
    }
}

/// Entra accepts only RS256 client assertions: a rule with an `azure` credentials block
/// under another signing algorithm could never succeed, so it does not load.
fn entra_needs_rs256(rules: &RuleSet, signing: &SigningConfig, file: &Path, list: &mut Vec<ConfigError>) {
    if signing.algorithm == Algorithm::RS256 {
        return;
    }
    for (rule, cloud) in rules.credential_clouds() {
        if cloud == federation_rules::Cloud::Azure {
            list.push(ConfigError {
                file: file.to_path_buf(),
                line: None,
                field: format!("rule `{rule}`: issue.credentials.azure"),
                message: format!(
                    "Entra accepts only RS256 client assertions, and signing.algorithm is {}",
                    signing.algorithm.as_str()
                ),
            });
        }
    }
}

/// The rules of a configuration assembled in code do not compile: every error, `; `
/// between them.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct RuleErrors(pub Vec<federation_rules::RuleError>);

/// `serve --dev` returns its errors as text.
impl From<RuleErrors> for String {
    fn from(e: RuleErrors) -> String {
        e.to_string()
    }
}

/// Used by `serve --dev` and tests: a config assembled in code.
pub fn from_parts(
    server: ServerConfig,
    signing: SigningConfig,
    issuers: Vec<IssuerConfig>,
    rules: Vec<RawRule>,
) -> Result<Config, RuleErrors> {
    let names: BTreeSet<String> = issuers.iter().map(|i| i.name.clone()).collect();
    let is_known = |n: &str| names.contains(n);
    let ctx = CompileContext {
        issuers: &is_known,
        max_lifetime: server.max_issued_lifetime,
    };
    let rules = RuleSet::compile(rules, &ctx).map_err(RuleErrors)?;
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
        rule_origins: Arc::from([]),
        rules_files: Vec::new(),
        audit: AuditConfig::default(),
        limits: Default::default(),
        telemetry: Default::default(),
        console: None,
        admin: None,
        admin_state: AdminState::default(),
        file_items: Arc::default(),
    })
}
