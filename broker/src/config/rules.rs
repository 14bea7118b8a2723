//! Rules in the configuration file (`rules:`) and in rule files: parsed with their YAML
//! nodes, so that compile errors point at a line.

use std::path::Path;
use std::sync::Arc;

use federation_rules::RawRule;
use marked_yaml::Node;

use super::error::{ConfigError, Errors};
use super::parse::{RuleAt, RuleSource, SourcedRule};
use super::yaml::{child, from_node, is_null, parse_yaml_all, with_sole_key};

/// Parse a YAML list of rules (a rule file's top level, or the config's `rules:`). The
/// rules keep `source` (shared) for the lines of their errors.
pub(super) fn parse_rule_list(
    file: &Path,
    value: &Node,
    source: RuleSource,
    section: &str,
    errors: &mut Errors,
) -> Vec<SourcedRule> {
    let seq = match value {
        Node::Sequence(seq) => seq,
        Node::Scalar(s) if is_null(s) => return Vec::new(),
        value => {
            errors.at(Some(value), section, "expected a list of rules");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let file: Arc<Path> = Arc::from(file);
    for (i, item) in seq.iter().enumerate() {
        let label = match child(item, "name").and_then(Node::as_scalar) {
            Some(name) => format!("rule `{}`", name.as_str()),
            None => format!("{section}[{i}]"),
        };
        if let Some(rule) = from_node::<RawRule>(item, &label, errors) {
            out.push(SourcedRule {
                file: file.clone(),
                line: super::yaml::line_of(item).and_then(|l| u32::try_from(l).ok()),
                at: RuleAt {
                    source: source.clone(),
                    item: Some(i),
                },
                rule,
            });
        }
    }
    out
}

/// Parse a rule file: a list of rules, or `{rules: [...]}`. Returns the rules that
/// parsed and the errors of those that did not, so the good ones are still checked.
pub fn parse_rules_file(file: &Path, text: &str) -> (Vec<SourcedRule>, Vec<ConfigError>) {
    let (root, errors) = load_rules_tree(file, text);
    match root {
        Some(root) => rules_from_tree(file, text, &root, errors),
        None => (Vec::new(), errors),
    }
}

/// The first half of [`parse_rules_file`]: a rule file's YAML tree (`None` for an empty
/// file or YAML that does not load) and the errors found so far.
pub(super) fn load_rules_tree(file: &Path, text: &str) -> (Option<Node>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    if text.trim().is_empty() {
        return (None, errors);
    }
    let root = parse_yaml_all(file, text, &mut errors);
    (root, errors)
}

/// The second half of [`parse_rules_file`]: the rules of a rule file's tree.
pub(super) fn rules_from_tree(
    file: &Path,
    text: &str,
    root: &Node,
    found: Vec<ConfigError>,
) -> (Vec<SourcedRule>, Vec<ConfigError>) {
    let mut errors = Errors::new(file);
    errors.list = found;
    // The rules keep the text, not the tree: see `RuleSource`.
    let source = RuleSource::Text(Arc::from(text));
    let rules = match root {
        Node::Mapping(m) => {
            let mut rules = Vec::new();
            with_sole_key(m, "rules", &mut errors, |v, errors| {
                rules = parse_rule_list(file, v, source.clone(), "rules", errors);
            });
            rules
        }
        other => parse_rule_list(file, other, source, "rules", &mut errors),
    };
    (rules, errors.list)
}
