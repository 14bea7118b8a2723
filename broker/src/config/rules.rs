//! Rules in the configuration file (`rules:`) and in rule files: parsed with their YAML
//! nodes, so that compile errors point at a line.

use std::path::Path;
use std::sync::Arc;

use federation_rules::RawRule;
use marked_yaml::Node;

use super::error::{ConfigError, Errors};
use super::parse::{RuleAt, RuleSource, SourcedRule};
use super::yaml::{
    Streamed, child, from_node, is_null, load_streaming, looks_like_a_list, parse_yaml_all, with_sole_key,
};

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
    let file: Arc<Path> = Arc::from(file);
    let rules = seq.iter().enumerate();
    rules
        .filter_map(|(i, item)| rule_item(&file, i, item, &source, section, errors))
        .collect()
}

/// The `i`th item of a list of rules, parsed (`None` when it does not parse: the error
/// is in `errors`).
fn rule_item(
    file: &Arc<Path>,
    i: usize,
    item: &Node,
    source: &RuleSource,
    section: &str,
    errors: &mut Errors,
) -> Option<SourcedRule> {
    let label = match child(item, "name").and_then(Node::as_scalar) {
        Some(name) => format!("rule `{}`", name.as_str()),
        None => format!("{section}[{i}]"),
    };
    let rule = from_node::<RawRule>(item, &label, errors)?;
    Some(SourcedRule {
        file: file.clone(),
        line: super::yaml::line_of(item).and_then(|l| u32::try_from(l).ok()),
        at: RuleAt {
            source: source.clone(),
            item: Some(i),
        },
        rule,
    })
}

/// Parse a rule file: a list of rules, or `{rules: [...]}`. Returns the rules that
/// parsed and the errors of those that did not, so the good ones are still checked.
/// A list is read one rule at a time ([`load_streaming`]); the rest, and YAML that does
/// not load, through the file's tree.
pub fn parse_rules_file(file: &Path, text: &str) -> (Vec<SourcedRule>, Vec<ConfigError>) {
    read_rules_file(file, text, true)
}

/// [`parse_rules_file`] through the file's whole tree, as for a file that cannot be read
/// one rule at a time. For the fuzz target, which checks that both ways agree.
#[doc(hidden)]
pub fn parse_rules_file_whole(file: &Path, text: &str) -> (Vec<SourcedRule>, Vec<ConfigError>) {
    read_rules_file(file, text, false)
}

fn read_rules_file(file: &Path, text: &str, one_by_one: bool) -> (Vec<SourcedRule>, Vec<ConfigError>) {
    if text.trim().is_empty() {
        return (Vec::new(), Vec::new());
    }
    // The rules keep the text, not the tree: see `RuleSource`.
    let source = RuleSource::Text(Arc::from(text));
    if one_by_one && let Some(read) = rules_one_by_one(file, text, &source) {
        return read;
    }
    let mut found = Vec::new();
    match parse_yaml_all(file, text, &mut found) {
        Some(root) => rules_from_tree(file, source, &root, found),
        None => (Vec::new(), found),
    }
}

/// A rule file whose top level is a list, read one rule at a time; `None` when it is
/// not such a list or does not load (see [`load_streaming`]).
fn rules_one_by_one(
    file: &Path,
    text: &str,
    source: &RuleSource,
) -> Option<(Vec<SourcedRule>, Vec<ConfigError>)> {
    // A mapping at the top (`rules: [...]`) would be scanned to its end before it is
    // refused: the tree reads it.
    if !looks_like_a_list(text) {
        return None;
    }
    let mut errors = Errors::new(file);
    let shared: Arc<Path> = Arc::from(file);
    let mut rules = Vec::new();
    let mut index = 0;
    load_streaming(text, Streamed::TopList, &mut |item| {
        rules.extend(rule_item(&shared, index, &item, source, "rules", &mut errors));
        index += 1;
    })?;
    rules.shrink_to_fit();
    Some((rules, errors.list))
}

/// The rules of a rule file's tree.
fn rules_from_tree(
    file: &Path,
    source: RuleSource,
    root: &Node,
    found: Vec<ConfigError>,
) -> (Vec<SourcedRule>, Vec<ConfigError>) {
    let mut errors = Errors::new(file);
    errors.list = found;
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
