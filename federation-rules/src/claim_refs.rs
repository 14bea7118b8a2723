//! The claims rules refer to by name, and warnings about those an issuer's tokens never
//! carry ([`RuleSet::unknown_claims`]).
//!
//! A rule refers to a claim of its issuer's tokens in `match.claims` and
//! `match.claim_patterns` (the first key of each path), in templates (`issue.subject`,
//! `issue.audience`, `issue.claims` at any depth, `issue.credentials`:
//! `{claims.repository}`, `{sub}`), and in CEL expressions (`match.condition`,
//! `{expr: ...}` values: `claims.x`, `has(claims.x)`, `claims["x"]`, `"x" in claims`).
//! `match.actor.claims`, `match.actor.claim_patterns` and `actor.x` in expressions
//! refer to the actor token's claims, whose issuer is `match.actor.issuer` (in a rule
//! without `match.actor`, the actor's issuer is not known and `actor.x` is not checked).
//! Only top-level names are references: `["kubernetes.io"].namespace` refers to
//! `kubernetes.io`.
//!
//! Which claims an issuer's tokens carry is not this crate's knowledge (issuers and
//! their kinds live elsewhere): the caller answers for each (issuer, claim) with a
//! [`ClaimCheck`].

use std::collections::BTreeMap;

use crate::compile::{IssueValue, Rule, RuleSet, TokenConditions, ValueTest};
use crate::credentials::CredentialsSpec;
use crate::expr::{ClaimRoot, Expression};
use crate::path::ClaimPath;
use crate::template::Template;
use crate::warnings::{PolicyWarning, WarnedRule};

/// The kind of [`PolicyWarning`] about a claim the issuer's tokens never carry.
pub const UNKNOWN_CLAIM: &str = "unknown_claim";

/// What the caller knows about a top-level claim of an issuer's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimCheck {
    /// The issuer's tokens may carry it, or nothing is known about them.
    Known,
    /// The issuer's tokens never carry it. `kind` names what the issuer is (for the
    /// message: `github-actions`), `nearest` the closest claim they do carry, written
    /// as a path relative to the claims (`repository`, `["kubernetes.io"].namespace`).
    Never { kind: String, nearest: Option<String> },
}

/// One reference to a top-level claim: whose token, which claim, where, as written.
struct Reference<'r> {
    issuer: &'r str,
    claim: String,
    field: String,
    written: String,
}

impl RuleSet {
    /// Warnings ([`UNKNOWN_CLAIM`]) about claims rules refer to that their issuers'
    /// tokens never carry, as `check` answers for each (issuer name, top-level claim).
    /// One warning per rule, issuer and claim, naming every field it is used in; in
    /// rule order, then in the order of first use.
    pub fn unknown_claims(&self, check: &dyn Fn(&str, &str) -> ClaimCheck) -> Vec<PolicyWarning> {
        let mut warnings = Vec::new();
        for rule in self.rules.iter() {
            let mut verdicts: BTreeMap<(&str, String), ClaimCheck> = BTreeMap::new();
            // In order of first use.
            let mut found: Vec<Unknown<'_>> = Vec::new();
            for r in references(rule) {
                let verdict = verdicts
                    .entry((r.issuer, r.claim.clone()))
                    .or_insert_with(|| check(r.issuer, &r.claim));
                let ClaimCheck::Never { kind, nearest } = verdict else {
                    continue;
                };
                match found
                    .iter_mut()
                    .find(|u| u.issuer == r.issuer && u.claim == r.claim)
                {
                    Some(u) if !u.fields.contains(&r.field) => u.fields.push(r.field),
                    Some(_) => {}
                    None => found.push(Unknown {
                        issuer: r.issuer,
                        kind: kind.clone(),
                        nearest: nearest.clone(),
                        claim: r.claim,
                        written: r.written,
                        fields: vec![r.field],
                    }),
                }
            }
            for u in found {
                let hint = match &u.nearest {
                    Some(name) => format!(": did you mean `{name}`?"),
                    None => ":".to_owned(),
                };
                let message = format!(
                    "rule `{}`, {}: `{}`{hint} tokens of issuer `{}` (kind {}) never carry a claim `{}`",
                    rule.name,
                    u.fields.join(", "),
                    u.written,
                    u.issuer,
                    u.kind,
                    u.claim,
                );
                warnings.push(PolicyWarning {
                    kind: UNKNOWN_CLAIM,
                    target: u.written,
                    rules: vec![WarnedRule {
                        rule: rule.name.to_string(),
                        issuer: u.issuer.to_owned(),
                    }],
                    message,
                });
            }
        }
        warnings
    }
}

/// A claim of one rule that its issuer's tokens never carry, with every field that
/// refers to it.
struct Unknown<'r> {
    issuer: &'r str,
    kind: String,
    nearest: Option<String>,
    claim: String,
    written: String,
    fields: Vec<String>,
}

/// Every claim reference of a rule, in the order of its fields.
fn references(rule: &Rule) -> Vec<Reference<'_>> {
    let mut out = Vec::new();
    let subject: &str = &rule.issuer;
    let actor: Option<&str> = rule.actor.as_ref().map(|a| &*a.issuer);
    token(&rule.token, "match", subject, subject, actor, &mut out);
    if let Some(conditions) = &rule.actor {
        token(
            &conditions.token,
            "match.actor",
            &conditions.issuer,
            subject,
            actor,
            &mut out,
        );
    }
    if let Some(issue) = &rule.issue {
        if let Some(audience) = &issue.audience {
            template(audience, "issue.audience", subject, &mut out);
        }
        issue_value(&issue.subject, subject, actor, &mut out);
        for (_, value) in &issue.claims {
            issue_value(value, subject, actor, &mut out);
        }
        match &issue.credentials {
            Some(CredentialsSpec::Aws {
                role_arn,
                session_name,
                ..
            }) => {
                template(role_arn, "issue.credentials.aws.role_arn", subject, &mut out);
                template(
                    session_name,
                    "issue.credentials.aws.session_name",
                    subject,
                    &mut out,
                );
            }
            Some(CredentialsSpec::Gcp {
                audience,
                service_account,
                ..
            }) => {
                template(audience, "issue.credentials.gcp.audience", subject, &mut out);
                if let Some(account) = service_account {
                    template(
                        account,
                        "issue.credentials.gcp.service_account",
                        subject,
                        &mut out,
                    );
                }
            }
            Some(CredentialsSpec::Azure {
                tenant_id,
                client_id,
                scope,
                ..
            }) => {
                template(tenant_id, "issue.credentials.azure.tenant_id", subject, &mut out);
                template(client_id, "issue.credentials.azure.client_id", subject, &mut out);
                template(scope, "issue.credentials.azure.scope", subject, &mut out);
            }
            None => {}
        }
    }
    out
}

/// `claims` / `claim_patterns` / `condition` of one token (`prefix`: `match` or
/// `match.actor`), whose issuer is `issuer`. In expressions, `claims` is always the
/// subject token (of `subject`) and `actor` the actor token (of `actor`).
fn token<'r>(
    conditions: &'r TokenConditions,
    prefix: &str,
    issuer: &'r str,
    subject: &'r str,
    actor: Option<&'r str>,
    out: &mut Vec<Reference<'r>>,
) {
    for condition in &conditions.claims {
        let list = match condition.test {
            ValueTest::OneOf(_) => "claims",
            ValueTest::Glob(_) => "claim_patterns",
        };
        out.push(Reference {
            issuer,
            claim: condition.path.first().to_owned(),
            field: format!("{prefix}.{list}"),
            written: written(&condition.path, "claims"),
        });
    }
    if let Some(condition) = &conditions.condition {
        expression(&condition.expr, &condition.field, subject, actor, out);
    }
}

fn issue_value<'r>(
    value: &'r IssueValue,
    subject: &'r str,
    actor: Option<&'r str>,
    out: &mut Vec<Reference<'r>>,
) {
    match value {
        IssueValue::Template { field, template: t } => template(t, field, subject, out),
        IssueValue::Expr { field, expr } => expression(expr, field, subject, actor, out),
        IssueValue::Literal(_) => {}
        IssueValue::Array(items) => items.iter().for_each(|v| issue_value(v, subject, actor, out)),
        IssueValue::Object(entries) => entries
            .iter()
            .for_each(|(_, v)| issue_value(v, subject, actor, out)),
    }
}

fn template<'r>(template: &Template, field: &str, issuer: &'r str, out: &mut Vec<Reference<'r>>) {
    for (display, path) in template.claim_paths() {
        out.push(Reference {
            issuer,
            claim: path.first().to_owned(),
            field: field.to_owned(),
            written: display.to_owned(),
        });
    }
}

/// An expression's references: `claims.x` of `subject` (unless empty: not known here),
/// `actor.x` of `actor`.
fn expression<'r>(
    expr: &Expression,
    field: &str,
    subject: &'r str,
    actor: Option<&'r str>,
    out: &mut Vec<Reference<'r>>,
) {
    for (root, claim) in expr.claim_references() {
        let (issuer, variable) = match root {
            ClaimRoot::Claims => (subject, "claims"),
            ClaimRoot::Actor => (actor.unwrap_or_default(), "actor"),
        };
        if issuer.is_empty() {
            continue;
        }
        out.push(Reference {
            issuer,
            written: written(&ClaimPath::single(&claim), variable),
            claim,
            field: field.to_owned(),
        });
    }
}

/// The top-level claim of `path` as a rule writes it after `variable`
/// (`claims.repositry`, `claims["kubernetes.io"]`): the part the warning is about.
fn written(path: &ClaimPath, variable: &str) -> String {
    ClaimPath::single(path.first()).display_with(variable)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::test_support::compile;

    /// `github-actions` tokens carry `repository`, `ref`, `environment` and the standard
    /// claims; `agents` tokens carry `sub` and `tier`; `gitlab` is generic (no list).
    fn check(issuer: &str, claim: &str) -> ClaimCheck {
        let known: &[&str] = match issuer {
            "github-actions" => &["repository", "ref", "environment"],
            "agents" => &["tier"],
            _ => return ClaimCheck::Known,
        };
        if known.contains(&claim) || ["sub", "iss", "aud"].contains(&claim) {
            return ClaimCheck::Known;
        }
        ClaimCheck::Never {
            kind: format!("{issuer}-kind"),
            nearest: (claim == "repositry").then(|| "repository".to_owned()),
        }
    }

    fn warned(rules: Value) -> Vec<(String, String)> {
        compile(rules)
            .unknown_claims(&check)
            .into_iter()
            .map(|w| {
                assert_eq!(w.kind, UNKNOWN_CLAIM);
                (w.target, w.message)
            })
            .collect()
    }

    fn rule(issuer: &str, matcher: Value, issue: Value) -> Value {
        let mut m = json!({"issuer": issuer, "audiences": ["t"]});
        for (k, v) in matcher.as_object().expect("object") {
            m[k] = v.clone();
        }
        json!([{"name": "r", "match": m, "issue": issue}])
    }

    #[test]
    fn a_misspelt_claim_in_a_template_warns_with_the_nearest_name() {
        let w = warned(rule(
            "github-actions",
            json!({"claims": {"ref": "refs/heads/main"}}),
            json!({"subject": "gha:{claims.repositry}"}),
        ));
        assert_eq!(
            w,
            vec![(
                "claims.repositry".to_owned(),
                "rule `r`, issue.subject: `claims.repositry`: did you mean `repository`? tokens of issuer `github-actions` (kind github-actions-kind) never carry a claim `repositry`".to_owned()
            )]
        );
    }

    #[test]
    fn every_place_a_rule_names_a_claim_is_checked() {
        let cases: Vec<(&str, Value, Value)> = vec![
            ("match.claims", json!({"claims": {"team": "a"}}), json!({})),
            (
                "match.claim_patterns",
                json!({"claim_patterns": {"team.name": "a*"}}),
                json!({}),
            ),
            (
                "match.condition",
                json!({"condition": "claims.team == 'a'"}),
                json!({}),
            ),
            (
                "match.condition",
                json!({"condition": "has(claims.team)"}),
                json!({}),
            ),
            (
                "match.condition",
                json!({"condition": "claims['team'] == 'a'"}),
                json!({}),
            ),
            (
                "match.condition",
                json!({"condition": "'team' in claims"}),
                json!({}),
            ),
            (
                "match.condition",
                json!({"condition": "claims.team.exists(t, t == 'a') && claims.ref.size() > claims.team.size()"}),
                json!({}),
            ),
            (
                "issue.audience",
                json!({"allow_any_subject": true}),
                json!({"audience": "x-{claims.team}"}),
            ),
            (
                "issue.claims.t",
                json!({"allow_any_subject": true}),
                json!({"claims": {"t": "{claims.team}"}}),
            ),
            (
                "issue.claims.tags.a[0]",
                json!({"allow_any_subject": true}),
                json!({"claims": {"tags": {"a": ["{claims.team}"]}}}),
            ),
            (
                "issue.claims.t",
                json!({"allow_any_subject": true}),
                json!({"claims": {"t": {"expr": "claims.team + 'x'"}}}),
            ),
            (
                "issue.credentials.aws.session_name",
                json!({"allow_any_subject": true}),
                json!({"credentials": {"aws": {"role_arn": "arn:aws:iam::123456789012:role/r", "session_name": "s-{claims.team}"}}}),
            ),
        ];
        for (field, matcher, issue) in cases {
            let w = warned(rule("github-actions", matcher.clone(), issue.clone()));
            assert_eq!(w.len(), 1, "{field}: {matcher} {issue}: {w:?}");
            assert_eq!(w[0].0, "claims.team", "{field}");
            assert!(
                w[0].1.starts_with(&format!(
                    "rule `r`, {field}: `claims.team`: tokens of issuer `github-actions`"
                )),
                "{field}: {}",
                w[0].1
            );
        }
    }

    #[test]
    fn known_claims_generic_issuers_and_shadowed_variables_do_not_warn() {
        let quiet = [
            rule(
                "github-actions",
                json!({"claims": {"repository": "a/b"}, "condition": "claims.environment == 'prod' && has(claims.ref)"}),
                json!({"subject": "{sub}:{iss}", "claims": {"r": "{claims.repository}"}}),
            ),
            rule(
                "github-actions",
                json!({"claims": {"repository": "a/b"}}),
                json!({"claims": {"r": {"expr": "[1].map(claims, claims + 1)"}}}),
            ),
            rule(
                "github-actions",
                json!({"claims": {"repository": "a/b"}}),
                json!({"claims": {"k": {"expr": "claims[claims.ref]"}}}),
            ),
            rule(
                "gitlab",
                json!({"claims": {"whatever": "x"}}),
                json!({"subject": "{claims.anything}"}),
            ),
        ];
        for rules in quiet {
            assert_eq!(warned(rules.clone()), vec![], "{rules}");
        }
    }

    #[test]
    fn one_warning_per_claim_naming_every_field() {
        let w = warned(rule(
            "github-actions",
            json!({"claims": {"team": "a"}, "condition": "claims.team != 'b'"}),
            json!({"subject": "{claims.team}", "claims": {"x": "{claims.other}"}}),
        ));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].1
                .starts_with("rule `r`, match.claims, match.condition, issue.subject: `claims.team`: "),
            "{}",
            w[0].1
        );
        assert_eq!(w[1].0, "claims.other");
    }

    #[test]
    fn actor_claims_are_checked_against_the_actor_issuer() {
        let rules = json!([{
            "name": "r",
            "match": {
                "issuer": "github-actions",
                "audiences": ["t"],
                "claims": {"repository": "a/b"},
                "condition": "actor.teir == 'gold' && claims.ref == 'main'",
                "actor": {"issuer": "agents", "claims": {"tier": "gold", "levle": "1"}, "condition": "claims.repository != '' && actor.tier != ''"}
            },
        }]);
        let w = warned(rules);
        let targets: Vec<&str> = w.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(targets, vec!["actor.teir", "claims.levle"], "{w:?}");
        assert!(w[0].1.contains("issuer `agents`"), "{}", w[0].1);
        assert!(w[1].1.contains("match.actor.claims"), "{}", w[1].1);
        // Without `match.actor`, the actor's issuer is not known: not checked.
        let unknown_actor = rule(
            "github-actions",
            json!({"claims": {"repository": "a/b"}}),
            json!({"claims": {"a": {"expr": "actor.anything"}}}),
        );
        assert_eq!(warned(unknown_actor), vec![]);
    }

    #[test]
    fn only_the_top_level_name_is_checked() {
        let w = warned(rule(
            "github-actions",
            json!({"claims": {"environment.name": "x", "[\"kubernetes.io\"].namespace": "y"}}),
            json!({}),
        ));
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].0, "claims[\"kubernetes.io\"]");
    }
}
