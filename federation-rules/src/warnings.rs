//! Warnings about rule sets that compile but probably do not do what was meant
//! ([`RuleSet::warnings`]). A warning never stops a load: `fedbroker check` prints them
//! (`--strict` makes them errors), a reload logs them and the admin API returns them
//! with a successful change. Warnings about claims an issuer's tokens never carry need
//! the issuers' kinds, which this crate does not know: see [`crate::claim_refs`].
//!
//! **Indistinguishable subjects** (`kind: indistinguishable_subjects`). An allow rule
//! without `issue.subject` (or with `issue.subject: "{sub}"`) issues the incoming `sub`
//! unchanged. When allow rules of two different issuers can both issue a token for the
//! same audience that way, a consumer of that audience cannot tell
//! `system:serviceaccount:prod:deployer` from the dev cluster from the one from prod by
//! `sub` alone (only by the `source_issuer` claim every issued token carries).
//!
//! What "can issue a token for the same audience" means: the audience of a rule's issued
//! tokens is its `issue.audience` when set, else each requested target, which must be one
//! of its `match.audiences`. So a rule *reaches* either the exact values of its
//! `match.audiences`, or, with `issue.audience`, the values that template can render (a
//! template without placeholders is one exact value; a placeholder renders one or more
//! characters of anything). Two rules collide when some value is reached by both:
//! - exact and exact: the same value;
//! - template and exact: the template can render the value (literal parts in order,
//!   at least one character per placeholder);
//! - template and template: their literal prefixes (before the first placeholder) agree,
//!   one being a prefix of the other, and so do their literal suffixes. That is exact
//!   when placeholders may render any text; it may report a pair whose placeholders
//!   would need an empty value, which errs on the side of warning.
//!
//! Rules of one issuer never collide with each other, deny rules are not considered
//! (they issue nothing), and a rule with its own `issue.subject` is left alone: a
//! subject template or expression is the author's decision about what `sub` means.
//! There is one warning per exact audience (naming every rule that reaches it, in input
//! order) and one per colliding pair of templated audiences. At most
//! `MAX_TEMPLATE_COMPARISONS` template comparisons are made per call (a million: far
//! beyond any real rule set), so a huge number of templated audiences cannot slow a
//! load down; past that, collisions involving templates go unreported.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::compile::{IssueValue, Rule, RuleSet};
use crate::credentials::{CredentialsSpec, GCP_SUBJECT_BYTES};
use crate::raw::Effect;

/// One warning about a rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyWarning {
    /// What kind of warning: `indistinguishable_subjects`.
    pub kind: &'static str,
    /// The audience the rules can all issue tokens for: an exact value, or the
    /// `issue.audience` templates that overlap (`{claims.aud}` / `sts.{claims.region}`).
    pub target: String,
    /// The rules concerned, in input order, with their issuers' names.
    pub rules: Vec<WarnedRule>,
    /// The whole warning as one line, with what to do about it.
    pub message: String,
}

/// A rule named in a [`PolicyWarning`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WarnedRule {
    pub rule: String,
    pub issuer: String,
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The kind of [`PolicyWarning`] about issuers sharing a subject space.
pub const INDISTINGUISHABLE_SUBJECTS: &str = "indistinguishable_subjects";

/// Rules named in a warning's message; the `rules` list has them all.
const MAX_NAMED_RULES: usize = 10;

/// Most template comparisons (a templated audience against a value or another
/// template) one call makes, so that a rule set with very many templated audiences
/// cannot make a load slow; comparisons past it are skipped (fewer warnings, never an
/// error).
const MAX_TEMPLATE_COMPARISONS: usize = 1_000_000;

impl RuleSet {
    /// Warnings about the rule set (see the module docs of [`crate::warnings`]), in a
    /// deterministic order: exact audiences sorted, then pairs of templates in input
    /// order.
    pub fn warnings(&self) -> Vec<PolicyWarning> {
        let mut all = indistinguishable_subjects(&self.rules);
        all.extend(self.rules.iter().filter_map(cloud_limit));
        all
    }
}

/// The kind of [`PolicyWarning`] about a credentials block whose rendered values can
/// exceed what its cloud accepts.
pub const CLOUD_LIMIT: &str = "cloud_limit";

/// A warning when a rule's credentials block can render a value its cloud refuses: an
/// AWS session name with placeholders (a claim can make it longer than 64 characters or
/// bring characters AWS refuses), a GCP `sub` with placeholders or an expression (Google
/// maps `sub` to `google.subject`, at most 127 bytes). Such requests are denied (AWS) or
/// refused by the cloud (GCP), not issued wrong.
fn cloud_limit(rule: &Rule) -> Option<PolicyWarning> {
    let issue = rule.issue.as_ref()?;
    let (target, message) = match issue.credentials.as_ref()? {
        CredentialsSpec::Aws { session_name, .. } if session_name.parts().contains(&None) => (
            "issue.credentials.aws.session_name",
            format!(
                "rule `{}`: issue.credentials.aws.session_name `{}` has placeholders, so a token's claims can make it longer than 64 characters or bring characters AWS refuses; such requests are denied (keep placeholders to short, bounded claims such as run IDs)",
                rule.name,
                session_name.source()
            ),
        ),
        CredentialsSpec::Gcp { .. } => {
            let unbounded = match &issue.subject {
                IssueValue::Template { template, .. } => {
                    let parts = template.parts();
                    parts.contains(&None)
                        || parts.iter().flatten().map(|p| p.len()).sum::<usize>() > GCP_SUBJECT_BYTES
                }
                _ => true,
            };
            if !unbounded {
                return None;
            }
            (
                "issue.subject",
                format!(
                    "rule `{}`: its issued `sub` can be longer than {GCP_SUBJECT_BYTES} bytes, which Google refuses as google.subject; set issue.subject to a template of bounded claims",
                    rule.name
                ),
            )
        }
        _ => return None,
    };
    Some(PolicyWarning {
        kind: CLOUD_LIMIT,
        target: target.to_owned(),
        rules: vec![WarnedRule {
            rule: rule.name.to_string(),
            issuer: rule.issuer.to_string(),
        }],
        message,
    })
}

/// What audiences a rule's issued tokens can carry.
enum Reach<'r> {
    Exact(String),
    Template {
        source: String,
        parts: Vec<Option<&'r str>>,
    },
}

/// The audiences an allow rule with the default subject can issue tokens for; nothing
/// for deny rules and rules with their own subject.
fn reach(rule: &Rule) -> Vec<Reach<'_>> {
    let Some(issue) = &rule.issue else {
        return Vec::new();
    };
    let default_subject = issue.subject_is_default
        || matches!(&issue.subject, IssueValue::Template { template, .. } if template.is_claim("sub"));
    if rule.effect != Effect::Allow || !default_subject {
        return Vec::new();
    }
    match &issue.audience {
        None => rule
            .audiences
            .iter()
            .map(|a| Reach::Exact(a.to_string()))
            .collect(),
        Some(template) => {
            let parts = template.parts();
            if parts.iter().all(Option::is_some) {
                vec![Reach::Exact(parts.into_iter().flatten().collect())]
            } else {
                vec![Reach::Template {
                    source: template.source(),
                    parts,
                }]
            }
        }
    }
}

fn indistinguishable_subjects(rules: &[Rule]) -> Vec<PolicyWarning> {
    let mut exact: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut templates: Vec<(usize, String, Vec<Option<&str>>)> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        for r in reach(rule) {
            match r {
                Reach::Exact(target) => exact.entry(target).or_default().push(i),
                Reach::Template { source, parts } => templates.push((i, source, parts)),
            }
        }
    }
    let mut comparisons = 0usize;
    for (target, reached_by) in &mut exact {
        for (i, _, parts) in &templates {
            comparisons += 1;
            if comparisons > MAX_TEMPLATE_COMPARISONS {
                break;
            }
            if can_render(parts, target) {
                reached_by.push(*i);
            }
        }
    }

    let mut warnings = Vec::new();
    for (target, mut reached_by) in exact {
        reached_by.sort_unstable();
        reached_by.dedup();
        if let Some(warning) = warning(rules, target, &reached_by) {
            warnings.push(warning);
        }
    }
    for (n, (a, source_a, parts_a)) in templates.iter().enumerate() {
        for (b, source_b, parts_b) in &templates[n + 1..] {
            comparisons += 1;
            if comparisons > MAX_TEMPLATE_COMPARISONS {
                break;
            }
            if rules.get(*a).map(|r| &r.issuer) != rules.get(*b).map(|r| &r.issuer)
                && overlap(parts_a, parts_b)
            {
                let target = if source_a == source_b {
                    source_a.clone()
                } else {
                    format!("{source_a} / {source_b}")
                };
                if let Some(warning) = warning(rules, target, &[*a, *b]) {
                    warnings.push(warning);
                }
            }
        }
    }
    warnings
}

/// A warning when the rules (indexes, ascending) belong to at least two issuers.
fn warning(rules: &[Rule], target: String, reached_by: &[usize]) -> Option<PolicyWarning> {
    let named: Vec<WarnedRule> = reached_by
        .iter()
        .filter_map(|&i| rules.get(i))
        .map(|rule| WarnedRule {
            rule: rule.name.to_string(),
            issuer: rule.issuer.to_string(),
        })
        .collect();
    let first = named.first()?;
    if named.iter().all(|r| r.issuer == first.issuer) {
        return None;
    }
    let mut list = String::new();
    for (n, r) in named.iter().enumerate() {
        if n == MAX_NAMED_RULES {
            let _ = write!(list, " and {} more", named.len() - n);
            break;
        }
        let separator = match n {
            0 => "",
            _ if n + 1 == named.len() => " and ",
            _ => ", ",
        };
        let _ = write!(list, "{separator}`{}` (issuer `{}`)", r.rule, r.issuer);
    }
    let message = format!(
        "rules {list} can all issue tokens for `{target}` with the incoming `sub` as their subject: the same subject from different issuers is indistinguishable there unless the consumer checks the `source_issuer` claim; set `issue.subject` in these rules (for example \"{}:{{sub}}\") to keep the issuers apart",
        first.issuer
    );
    Some(PolicyWarning {
        kind: INDISTINGUISHABLE_SUBJECTS,
        target,
        rules: named,
        message,
    })
}

/// Whether a template (literal parts, `None` for a placeholder of one or more
/// characters) can render exactly `text`.
fn can_render(parts: &[Option<&str>], text: &str) -> bool {
    let mut rest = text;
    let mut start = 0;
    // Leading literal parts must be a prefix, trailing ones a suffix.
    while let Some(Some(literal)) = parts.get(start) {
        match rest.strip_prefix(literal) {
            Some(r) => rest = r,
            None => return false,
        }
        start += 1;
    }
    if start == parts.len() {
        return rest.is_empty();
    }
    let mut end = parts.len();
    while end > start {
        let Some(Some(literal)) = parts.get(end - 1) else {
            break;
        };
        match rest.strip_suffix(literal) {
            Some(r) => rest = r,
            None => return false,
        }
        end -= 1;
    }
    // The middle starts and ends with a placeholder: each literal found leftmost after
    // at least one character per placeholder before it.
    let mut pending = 0usize;
    for part in parts.get(start..end).unwrap_or_default() {
        match part {
            None => pending += 1,
            Some(literal) => {
                let Some((skip, _)) = rest.char_indices().nth(pending) else {
                    return false;
                };
                match rest[skip..].find(literal) {
                    Some(at) => rest = &rest[skip + at + literal.len()..],
                    None => return false,
                }
                pending = 0;
            }
        }
    }
    rest.chars().count() >= pending
}

/// Whether two templates, each with a placeholder, can render a common value: their
/// literal prefixes agree and so do their literal suffixes.
fn overlap(a: &[Option<&str>], b: &[Option<&str>]) -> bool {
    let prefix = |parts: &[Option<&str>]| -> String { parts.iter().map_while(|p| *p).collect() };
    let suffix = |parts: &[Option<&str>]| -> String {
        let mut tail: Vec<&str> = parts.iter().rev().map_while(|p| *p).collect();
        tail.reverse();
        tail.concat()
    };
    let (pa, pb) = (prefix(a), prefix(b));
    let (sa, sb) = (suffix(a), suffix(b));
    (pa.starts_with(&pb) || pb.starts_with(&pa)) && (sa.ends_with(&sb) || sb.ends_with(&sa))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::compile;
    use serde_json::{Value, json};

    fn allow(name: &str, issuer: &str, audiences: &[&str], issue: Value) -> Value {
        json!({"name": name, "match": {"issuer": issuer, "allow_any_subject": true, "audiences": audiences}, "issue": issue})
    }

    fn summary(rules: Value) -> Vec<(String, Vec<(String, String)>)> {
        compile(rules)
            .warnings()
            .into_iter()
            .map(|w| {
                assert_eq!(w.kind, INDISTINGUISHABLE_SUBJECTS);
                assert_eq!(w.to_string(), w.message);
                (
                    w.target,
                    w.rules.into_iter().map(|r| (r.rule, r.issuer)).collect(),
                )
            })
            .collect()
    }

    fn pair(a: (&str, &str), b: (&str, &str)) -> Vec<(String, String)> {
        vec![(a.0.to_owned(), a.1.to_owned()), (b.0.to_owned(), b.1.to_owned())]
    }

    #[test]
    fn two_issuers_with_the_default_subject_on_one_target() {
        let rules = json!([
            allow("dev-deploy", "k8s", &["sts.amazonaws.com", "dev-only"], json!({})),
            allow(
                "prod-deploy",
                "github-actions",
                &["sts.amazonaws.com"],
                json!({"lifetime": "5m"})
            ),
            allow("gitlab-other", "gitlab", &["other"], json!({})),
        ]);
        let warnings = compile(rules.clone()).warnings();
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        let w = &warnings[0];
        assert_eq!(w.target, "sts.amazonaws.com");
        assert_eq!(
            w.message,
            "rules `dev-deploy` (issuer `k8s`) and `prod-deploy` (issuer `github-actions`) can all issue tokens for `sts.amazonaws.com` with the incoming `sub` as their subject: the same subject from different issuers is indistinguishable there unless the consumer checks the `source_issuer` claim; set `issue.subject` in these rules (for example \"k8s:{sub}\") to keep the issuers apart"
        );
        assert_eq!(
            serde_json::to_value(w).ok(),
            Some(json!({
                "kind": "indistinguishable_subjects",
                "target": "sts.amazonaws.com",
                "rules": [{"rule": "dev-deploy", "issuer": "k8s"}, {"rule": "prod-deploy", "issuer": "github-actions"}],
                "message": w.message,
            }))
        );
    }

    #[test]
    fn what_does_not_warn() {
        let cases: Vec<(&str, Value)> = vec![
            (
                "one issuer",
                json!([
                    allow("a", "k8s", &["t"], json!({})),
                    allow("b", "k8s", &["t"], json!({})),
                ]),
            ),
            (
                "one issuer's templates",
                json!([
                    allow("a", "k8s", &["t"], json!({"audience": "{claims.x}"})),
                    allow("b", "k8s", &["u"], json!({"audience": "{claims.y}"})),
                ]),
            ),
            (
                "a subject of its own",
                json!([
                    allow("a", "k8s", &["t"], json!({"subject": "k8s:{sub}"})),
                    allow("b", "gitlab", &["t"], json!({})),
                ]),
            ),
            (
                "a subject expression",
                json!([
                    allow(
                        "a",
                        "k8s",
                        &["t"],
                        json!({"subject": {"expr": r#""k8s:" + claims.sub"#}})
                    ),
                    allow("b", "gitlab", &["t"], json!({})),
                ]),
            ),
            (
                "different targets",
                json!([
                    allow("a", "k8s", &["t"], json!({})),
                    allow("b", "gitlab", &["u"], json!({})),
                ]),
            ),
            (
                "an issued audience away from the other's target",
                json!([
                    allow("a", "k8s", &["t"], json!({"audience": "k8s-t"})),
                    allow("b", "gitlab", &["t"], json!({})),
                ]),
            ),
            (
                "a deny rule",
                json!([
                    allow("a", "k8s", &["t"], json!({})),
                    {"name": "d", "effect": "deny", "match": {"issuer": "gitlab", "audiences": ["t"]}},
                ]),
            ),
            (
                "templates that cannot meet",
                json!([
                    allow("a", "k8s", &["t"], json!({"audience": "dev-{claims.x}"})),
                    allow("b", "gitlab", &["t"], json!({"audience": "prod-{claims.x}"})),
                ]),
            ),
            (
                "a template that cannot render the target",
                json!([
                    allow("a", "k8s", &["t"], json!({"audience": "{claims.x}.example.com"})),
                    allow("b", "gitlab", &["example.com"], json!({})),
                ]),
            ),
        ];
        for (what, rules) in cases {
            assert_eq!(summary(rules), vec![], "{what}");
        }
    }

    #[test]
    fn what_can_reach_a_target() {
        type Case = (&'static str, Value, Vec<(String, Vec<(String, String)>)>);
        let cases: Vec<Case> = vec![
            (
                "an explicit {sub} is the default",
                json!([
                    allow("a", "k8s", &["t"], json!({"subject": "{sub}"})),
                    allow("b", "gitlab", &["t"], json!({})),
                ]),
                vec![("t".to_owned(), pair(("a", "k8s"), ("b", "gitlab")))],
            ),
            (
                "a literal issued audience",
                json!([
                    allow("a", "k8s", &["x"], json!({"audience": "sts.amazonaws.com"})),
                    allow("b", "gitlab", &["sts.amazonaws.com"], json!({})),
                ]),
                vec![(
                    "sts.amazonaws.com".to_owned(),
                    pair(("a", "k8s"), ("b", "gitlab")),
                )],
            ),
            (
                "a templated audience that can render the target",
                json!([
                    allow(
                        "a",
                        "k8s",
                        &["x"],
                        json!({"audience": "sts.{claims.region}.amazonaws.com"})
                    ),
                    allow("b", "gitlab", &["sts.us-east-1.amazonaws.com"], json!({})),
                ]),
                vec![(
                    "sts.us-east-1.amazonaws.com".to_owned(),
                    pair(("a", "k8s"), ("b", "gitlab")),
                )],
            ),
            (
                "two templates that can meet",
                json!([
                    allow("a", "k8s", &["x"], json!({"audience": "sts.{claims.region}"})),
                    allow(
                        "b",
                        "gitlab",
                        &["y"],
                        json!({"audience": "{claims.host}.amazonaws.com"})
                    ),
                ]),
                vec![(
                    "sts.{claims.region} / {claims.host}.amazonaws.com".to_owned(),
                    pair(("a", "k8s"), ("b", "gitlab")),
                )],
            ),
            (
                "three issuers on one target, one warning",
                json!([
                    allow("a", "k8s", &["t"], json!({})),
                    allow("b", "gitlab", &["t"], json!({})),
                    allow("c", "github-actions", &["t"], json!({})),
                ]),
                vec![(
                    "t".to_owned(),
                    vec![
                        ("a".to_owned(), "k8s".to_owned()),
                        ("b".to_owned(), "gitlab".to_owned()),
                        ("c".to_owned(), "github-actions".to_owned()),
                    ],
                )],
            ),
        ];
        for (what, rules, expected) in cases {
            assert_eq!(summary(rules), expected, "{what}");
        }
    }

    #[test]
    fn templates_render_what_they_can() {
        let t = |parts: &[Option<&str>], text: &str| can_render(parts, text);
        let ph = None;
        assert!(t(&[Some("sts."), ph, Some(".aws")], "sts.x.aws"));
        assert!(
            !t(&[Some("sts."), ph, Some(".aws")], "sts..aws"),
            "a placeholder is never empty"
        );
        assert!(!t(&[Some("ab"), ph, Some("ba")], "aba"));
        assert!(t(&[ph], "x"));
        assert!(!t(&[ph], ""));
        assert!(t(&[ph, ph], "xy"));
        assert!(!t(&[ph, ph], "x"));
        assert!(t(&[ph, Some("-"), ph], "a-b-c"));
        assert!(!t(&[ph, Some("-"), ph], "-ab"));
        assert!(t(&[Some("a"), ph, Some("b"), ph, Some("c")], "a1b2c"));
        assert!(!t(&[Some("a"), ph, Some("b"), ph, Some("c")], "abc"));
        assert!(t(&[Some("é"), ph], "éü"));
        assert!(overlap(&[Some("a"), ph], &[Some("ab"), ph, Some("c")]));
        assert!(!overlap(&[Some("a"), ph], &[Some("b"), ph]));
        assert!(!overlap(&[ph, Some("x")], &[ph, Some("y")]));
    }
}
