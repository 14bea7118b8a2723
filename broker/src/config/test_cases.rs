//! Rule test files (`*.test.yaml`, contract §14): a `tests:` list of cases, each a
//! claims document and the decision the rules must reach for it. Parsed with their YAML
//! nodes so that each case keeps its line, and every problem is reported with file, line
//! and field, like the configuration's. `fedbroker test` ([`crate::rule_tests`]) runs
//! them. Rule-file globs never load these files ([`is_test_file`]).

use std::path::{Path, PathBuf};

use marked_yaml::Node;
use marked_yaml::loader::LoaderOptions;
use marked_yaml::types::MarkedScalarNode;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{ConfigError, Errors};
use super::yaml::{
    child, duplicate_keys, empty_file, from_node, is_null, line_of, load_error, with_sole_key,
};

/// The suffix of rule test files' names.
pub const TEST_FILE_SUFFIX: &str = ".test.yaml";

/// Whether `path` names a rule test file (`*.test.yaml`): never loaded as rules, even
/// when a `rules_files` glob matches it, so that tests can sit beside their rules.
pub fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() > TEST_FILE_SUFFIX.len() && n.ends_with(TEST_FILE_SUFFIX))
}

/// What a case expects the rules to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

impl Expect {
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        }
    }
}

/// The actor of a delegated exchange, as a claims document.
#[derive(Debug, Clone, PartialEq)]
pub struct TestActor {
    /// A registered issuer's name; `None`: the one whose `iss` the claims carry.
    pub issuer: Option<String>,
    pub claims: Map<String, Value>,
}

/// One test case, read and checked for shape (issuer names are checked against the
/// configuration by the runner).
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    pub file: PathBuf,
    /// The case's position in the file's `tests` list.
    pub index: usize,
    /// The line of the case's first key.
    pub line: Option<usize>,
    pub name: String,
    /// A registered issuer's name; `None`: the one whose `iss` the claims carry.
    pub issuer: Option<String>,
    pub claims: Map<String, Value>,
    pub audiences: Vec<String>,
    pub resources: Vec<String>,
    /// Space-separated, as `scope` is sent.
    pub scope: Option<String>,
    pub actor: Option<TestActor>,
    pub expect: Expect,
    /// The rule that must decide.
    pub rule: Option<String>,
    /// Claims the issued token must carry (a subset; nested objects compared as subsets).
    pub issued: Option<Map<String, Value>>,
}

impl TestCase {
    /// `file:line` of the case.
    pub fn location(&self) -> String {
        match self.line {
            Some(line) => format!("{}:{line}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

/// One string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A case's shape as serde reads it. The claims documents are read here for their shape
/// only: their values are taken from the nodes ([`json_of`]), typed as YAML types them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    issuer: Option<String>,
    #[allow(dead_code)]
    claims: Map<String, Value>,
    #[serde(default)]
    audience: Option<OneOrMany>,
    #[serde(default)]
    resource: Option<OneOrMany>,
    #[serde(default)]
    scope: Option<OneOrMany>,
    #[serde(default)]
    actor: Option<RawActor>,
    expect: Expect,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    issued: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActor {
    #[serde(default)]
    issuer: Option<String>,
    #[allow(dead_code)]
    claims: Map<String, Value>,
}

/// Parse a test file: `tests:`, a list of cases. Returns the cases that parsed and
/// every problem (with its line), so that the good cases can still be checked.
pub fn parse_test_file(file: &Path, text: &str) -> (Vec<TestCase>, Vec<ConfigError>) {
    let mut errors = Errors::new(file);
    let Some(root) = parse_typed_yaml(file, text, &mut errors.list) else {
        return (Vec::new(), errors.list);
    };
    let mut list = None;
    match &root {
        Node::Mapping(m) => with_sole_key(m, "tests", &mut errors, |v, _| list = Some(v)),
        other => errors.at(
            Some(other),
            "",
            "expected a mapping with `tests:`, a list of test cases",
        ),
    }
    let items = match list {
        Some(Node::Sequence(seq)) => seq.iter().collect::<Vec<_>>(),
        Some(Node::Scalar(s)) if is_null(s) => Vec::new(),
        Some(other) => {
            errors.at(Some(other), "tests", "expected a list of test cases");
            Vec::new()
        }
        None if matches!(root, Node::Mapping(_)) => {
            errors.at(
                Some(&root),
                "tests",
                "missing field `tests` (a list of test cases)",
            );
            Vec::new()
        }
        None => Vec::new(),
    };
    let mut cases: Vec<TestCase> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let label = format!("tests[{i}]");
        let Some(raw) = from_node::<RawCase>(item, &label, &mut errors) else {
            continue;
        };
        if raw.name.trim().is_empty() {
            errors.at(child(item, "name"), format!("{label}.name"), "must not be empty");
        }
        if let Some(first) = cases.iter().find(|c| c.name == raw.name) {
            errors.at(
                child(item, "name"),
                format!("{label}.name"),
                format!(
                    "duplicate test name `{}` (first on line {})",
                    raw.name,
                    first.line.unwrap_or_default()
                ),
            );
        }
        let audiences = raw.audience.map(OneOrMany::into_vec).unwrap_or_default();
        let resources = raw.resource.map(OneOrMany::into_vec).unwrap_or_default();
        if audiences.is_empty() && resources.is_empty() {
            errors.at(
                Some(item),
                label.clone(),
                "give at least one `audience` or `resource`",
            );
        }
        if raw.issued.is_some() && raw.expect == Expect::Deny {
            errors.at(
                child(item, "issued"),
                format!("{label}.issued"),
                "only with `expect: allow`: a denial issues nothing",
            );
        }
        let object_at = |node: Option<&Node>| match node.map(json_of) {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let claims = object_at(child(item, "claims"));
        let issued = raw.issued.is_some().then(|| object_at(child(item, "issued")));
        let actor = raw.actor.map(|a| TestActor {
            issuer: a.issuer,
            claims: object_at(child(item, "actor").and_then(|n| child(n, "claims"))),
        });
        cases.push(TestCase {
            file: file.to_path_buf(),
            index: i,
            line: line_of(item),
            name: raw.name,
            issuer: raw.issuer,
            claims,
            audiences,
            resources,
            scope: raw.scope.map(|s| s.into_vec().join(" ")),
            actor,
            expect: raw.expect,
            rule: raw.rule,
            issued,
        });
    }
    (cases, errors.list)
}

/// The YAML of a test file, every duplicate key reported, with quoted scalars kept apart
/// from plain ones (`"true"` is a string, `true` a boolean: see [`json_of`]).
fn parse_typed_yaml(file: &Path, text: &str, errors: &mut Vec<ConfigError>) -> Option<Node> {
    if text.trim().is_empty() {
        errors.push(empty_file(file));
        return None;
    }
    errors.extend(duplicate_keys(file, text));
    let options = LoaderOptions::default().prevent_coercion(true);
    marked_yaml::parse_yaml_with_options(0, text, options)
        .map_err(|e| errors.push(load_error(file, &e)))
        .ok()
}

/// A YAML node as the JSON a token would carry: plain scalars typed as YAML's core
/// schema types them (`true`, `42`, `1.5`, `null`), quoted scalars strings (`"true"`).
fn json_of(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => scalar_json(s),
        Node::Sequence(seq) => Value::Array(seq.iter().map(json_of).collect()),
        Node::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().to_owned(), json_of(v)))
                .collect(),
        ),
    }
}

fn scalar_json(s: &MarkedScalarNode) -> Value {
    let text = s.as_str();
    if !s.may_coerce() {
        return Value::String(text.to_owned());
    }
    if is_null(s) {
        return Value::Null;
    }
    match text {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(u) = text.parse::<u64>() {
        return Value::from(u);
    }
    let numeric = text.bytes().any(|b| b.is_ascii_digit())
        && text.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    if numeric && let Some(n) = text.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<TestCase>, Vec<ConfigError>> {
        match parse_test_file(Path::new("x.test.yaml"), text) {
            (cases, errors) if errors.is_empty() => Ok(cases),
            (_, errors) => Err(errors),
        }
    }

    #[test]
    fn reads_the_contract_example_with_lines_and_typed_claims() {
        let cases = parse(
            "tests:\n  - name: main branch of acme/api may deploy\n    issuer: gha\n    claims: {sub: \"repo:acme/api:ref:refs/heads/main\", repository: acme/api, n: 3, ok: true, s: \"true\", f: 1.5, z: ~}\n    audience: [sts.amazonaws.com]\n    expect: allow\n    rule: deploy-main\n    issued: {sub: \"gha:acme/api\"}\n  - name: second\n    claims: {sub: x}\n    resource: https://r\n    scope: [a, b]\n    actor: {issuer: agents, claims: {sub: agent:1, tier: 2}}\n    expect: deny\n",
        )
        .expect("parses");
        assert_eq!(cases.len(), 2);
        let c = &cases[0];
        assert_eq!(c.line, Some(2));
        assert_eq!(c.location(), "x.test.yaml:2");
        assert_eq!(c.issuer.as_deref(), Some("gha"));
        assert_eq!(
            Value::Object(c.claims.clone()),
            serde_json::json!({"sub": "repo:acme/api:ref:refs/heads/main", "repository": "acme/api", "n": 3, "ok": true, "s": "true", "f": 1.5, "z": null})
        );
        assert_eq!(c.audiences, ["sts.amazonaws.com"]);
        assert_eq!(c.expect, Expect::Allow);
        assert_eq!(c.rule.as_deref(), Some("deploy-main"));
        assert_eq!(
            c.issued.clone().map(Value::Object),
            Some(serde_json::json!({"sub": "gha:acme/api"}))
        );
        let c = &cases[1];
        assert_eq!(c.line, Some(9));
        assert_eq!(c.resources, ["https://r"]);
        assert_eq!(c.scope.as_deref(), Some("a b"));
        let actor = c.actor.as_ref().expect("actor");
        assert_eq!(actor.issuer.as_deref(), Some("agents"));
        assert_eq!(
            Value::Object(actor.claims.clone()),
            serde_json::json!({"sub": "agent:1", "tier": 2})
        );
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let errors = parse(
            "tests:\n  - name: a\n    claims: {sub: x}\n    audience: [a]\n    expect: maybe\n  - name: b\n    claims: {sub: x}\n    audiences: [a]\n    expect: allow\n  - name: c\n    claims: {sub: x}\n    expect: deny\nextra: 1\n",
        )
        .expect_err("invalid");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("x.test.yaml:13: extra: unknown field")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("x.test.yaml:5: tests[0].expect:")),
            "{shown:#?}"
        );
        assert!(
            shown.iter().any(|e| e.contains("unknown field `audiences`")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("x.test.yaml:10: tests[2]: give at least one")),
            "{shown:#?}"
        );
    }

    #[test]
    fn refuses_duplicate_names_and_a_missing_list() {
        let errors = parse(
            "tests:\n  - {name: a, claims: {sub: x}, audience: a, expect: allow}\n  - {name: a, claims: {sub: x}, audience: a, expect: allow}\n",
        )
        .expect_err("duplicate");
        assert!(
            errors[0]
                .message
                .contains("duplicate test name `a` (first on line 2)"),
            "{errors:?}"
        );
        assert!(parse("cases: []\n").is_err());
        assert!(parse("- name: a\n").is_err());
        assert!(parse("").is_err());
        let errors = parse("tests: []\ntests: []\n").expect_err("duplicate key");
        assert!(
            errors[0]
                .to_string()
                .starts_with("x.test.yaml:2: tests: duplicate key"),
            "{errors:?}"
        );
        assert_eq!(parse("tests: []\n"), Ok(Vec::new()));
    }

    #[test]
    fn test_files_are_named_by_their_suffix() {
        assert!(is_test_file(Path::new("rules/deploy.test.yaml")));
        assert!(!is_test_file(Path::new("rules/deploy.yaml")));
        assert!(!is_test_file(Path::new("rules/.test.yaml")));
        assert!(!is_test_file(Path::new("rules/test.yaml")));
    }
}
