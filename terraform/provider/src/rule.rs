//! `fedbroker_rule`: one trust rule, in the rule schema of the README (`match`, `issue`).
//!
//! HCL shape: `match` is a required block and `issue` and `match.actor` optional blocks,
//! as in the YAML. `match.claims` is a map of lists (`{environment = ["prod", "staging"]}`,
//! a one-element list for a single value). `issue.claims` is arbitrary JSON, so it is the
//! string attribute `issue.claims_json` (write `jsonencode({...})`); `issue.subject`'s
//! `{expr: ...}` form is `issue.subject_expr`.
//!
//! The rule is compiled by `federation-rules` (the broker's own compiler) when Terraform
//! validates and plans, with every issuer name accepted (the provider cannot see the
//! broker's issuers) and no lifetime cap; the broker checks those on apply.

use std::collections::BTreeMap;

use federation_rules::{ClaimValues, CompileContext, Effect, RawActor, RawIssue, RawMatch, RawRule, RuleSet};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tf_provider::schema::{AttributeConstraint, AttributeType, Block, NestedBlock, Schema};
use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use crate::ProviderError;
use crate::client::Kind;
use crate::item::{Item, ItemResource, NotReady, report_invalid};
use crate::values::*;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    pub id: Str,
    pub name: Str,
    pub effect: Str,
    pub description: Str,
    #[serde(rename = "match")]
    pub matcher: Value<MatchBlock>,
    #[serde(with = "optional_block")]
    pub issue: Value<IssueBlock>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchBlock {
    pub issuer: Str,
    pub subject: Str,
    pub subject_pattern: Str,
    pub claims: StrListMap,
    pub claim_patterns: StrMap,
    pub condition: Str,
    pub audiences: StrList,
    pub scopes: StrList,
    pub allow_any_subject: Bool,
    #[serde(with = "optional_block")]
    pub actor: Value<ActorBlock>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActorBlock {
    pub issuer: Str,
    pub subject: Str,
    pub subject_pattern: Str,
    pub claims: StrListMap,
    pub claim_patterns: StrMap,
    pub condition: Str,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IssueBlock {
    pub audience: Str,
    pub subject: Str,
    pub subject_expr: Str,
    pub lifetime: Str,
    pub claims_json: Str,
}

/// Blocks that are lists of one on the wire, and JSON attributes that hold a subtree.
const BLOCKS: &[(&str, bool)] = &[("match", false), ("issue", true), ("match.actor", true)];
const JSON_ATTRIBUTES: &[(&str, &str)] = &[
    ("issue.claims", "issue.claims_json"),
    ("issue.subject.expr", "issue.subject_expr"),
];

pub fn path_of(field: &str) -> AttributePath {
    attribute_path(field, BLOCKS, JSON_ATTRIBUTES)
}

/// A rule, with the problems found while converting it (a malformed `claims_json`, both
/// `subject` and `subject_expr`): the rule is still compiled so that every problem is
/// reported at once.
#[derive(Debug)]
pub struct Converted {
    pub raw: RawRule,
    pub problems: Vec<(AttributePath, String)>,
}

fn claim_values(map: Option<BTreeMap<String, Vec<String>>>) -> BTreeMap<String, ClaimValues> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, ClaimValues(v)))
        .collect()
}

/// The rule a (config, plan or state) value describes, if it has no problem.
pub fn to_raw(state: &RuleState) -> Result<RawRule, NotReady> {
    let converted = convert(state)?;
    if converted.problems.is_empty() {
        Ok(converted.raw)
    } else {
        Err(NotReady::Invalid(converted.problems))
    }
}

/// The rule a (config, plan or state) value describes, and its problems.
pub fn convert(state: &RuleState) -> Result<Converted, NotReady> {
    let mut problems = Vec::new();
    let name = known(&state.name)?.unwrap_or_default();
    let effect = match known(&state.effect)?.as_deref() {
        None | Some("allow") => Effect::Allow,
        Some("deny") => Effect::Deny,
        Some(other) => {
            problems.push((
                AttributePath::new("effect"),
                format!("must be \"allow\" or \"deny\", not {other:?}"),
            ));
            Effect::Allow
        }
    };
    let description = known(&state.description)?;
    let Some(m) = known(&state.matcher)? else {
        return Err(NotReady::Invalid(vec![(
            AttributePath::new("match"),
            "a `match` block is required".into(),
        )]));
    };
    let actor = match known(&m.actor)? {
        None => None,
        Some(a) => Some(RawActor {
            issuer: known(&a.issuer)?.unwrap_or_default(),
            subject: known(&a.subject)?,
            subject_pattern: known(&a.subject_pattern)?,
            claims: claim_values(string_list_map(&a.claims)?),
            claim_patterns: string_map(&a.claim_patterns)?.unwrap_or_default(),
            condition: known(&a.condition)?,
        }),
    };
    let matcher = RawMatch {
        issuer: known(&m.issuer)?.unwrap_or_default(),
        subject: known(&m.subject)?,
        subject_pattern: known(&m.subject_pattern)?,
        claims: claim_values(string_list_map(&m.claims)?),
        claim_patterns: string_map(&m.claim_patterns)?.unwrap_or_default(),
        condition: known(&m.condition)?,
        audiences: string_list(&m.audiences)?.unwrap_or_default(),
        scopes: string_list(&m.scopes)?.unwrap_or_default(),
        actor,
        allow_any_subject: known(&m.allow_any_subject)?.unwrap_or(false),
    };
    let issue = match known(&state.issue)? {
        None => None,
        Some(i) => {
            let subject = match (known(&i.subject)?, known(&i.subject_expr)?) {
                (Some(_), Some(_)) => {
                    problems.push((
                        AttributePath::new("issue").index(0).attribute("subject_expr"),
                        "set `subject` (a template) or `subject_expr` (a CEL expression), not both".into(),
                    ));
                    None
                }
                (Some(s), None) => Some(Json::String(s)),
                (None, Some(e)) => Some(serde_json::json!({ "expr": e })),
                (None, None) => None,
            };
            let claims = match known(&i.claims_json)? {
                None => serde_json::Map::new(),
                Some(text) => parse_json_object(&text).unwrap_or_else(|e| {
                    problems.push((
                        AttributePath::new("issue").index(0).attribute("claims_json"),
                        format!("claims_json {e}"),
                    ));
                    serde_json::Map::new()
                }),
            };
            Some(RawIssue {
                audience: known(&i.audience)?,
                subject,
                lifetime: known(&i.lifetime)?,
                claims,
                credentials: None,
            })
        }
    };
    Ok(Converted {
        raw: RawRule {
            name,
            effect,
            description,
            matcher,
            issue,
        },
        problems,
    })
}

/// The state that describes `raw` (an item read from the broker).
pub fn from_raw(raw: &RawRule) -> RuleState {
    let m = &raw.matcher;
    let claims = |c: &BTreeMap<String, ClaimValues>| {
        list_map_value(&c.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
    };
    let actor = match &m.actor {
        None => Value::Null,
        Some(a) => Value::Value(ActorBlock {
            issuer: Value::Value(a.issuer.clone()),
            subject: str_value(a.subject.clone()),
            subject_pattern: str_value(a.subject_pattern.clone()),
            claims: claims(&a.claims),
            claim_patterns: map_value(&a.claim_patterns),
            condition: str_value(a.condition.clone()),
        }),
    };
    let issue = match &raw.issue {
        None => Value::Null,
        Some(i) => {
            let (subject, subject_expr) = match &i.subject {
                None => (None, None),
                Some(Json::String(s)) => (Some(s.clone()), None),
                Some(Json::Object(o)) if o.len() == 1 && o.get("expr").is_some_and(Json::is_string) => {
                    (None, o["expr"].as_str().map(str::to_owned))
                }
                Some(other) => (Some(other.to_string()), None),
            };
            Value::Value(IssueBlock {
                audience: str_value(i.audience.clone()),
                subject: str_value(subject),
                subject_expr: str_value(subject_expr),
                lifetime: str_value(i.lifetime.clone()),
                claims_json: if i.claims.is_empty() {
                    Value::Null
                } else {
                    Value::Value(jsonencode(&Json::Object(i.claims.clone())))
                },
            })
        }
    };
    RuleState {
        id: Value::Value(raw.name.clone()),
        name: Value::Value(raw.name.clone()),
        effect: Value::Value(raw.effect.to_string()),
        description: str_value(raw.description.clone()),
        matcher: Value::Value(MatchBlock {
            issuer: Value::Value(m.issuer.clone()),
            subject: str_value(m.subject.clone()),
            subject_pattern: str_value(m.subject_pattern.clone()),
            claims: claims(&m.claims),
            claim_patterns: map_value(&m.claim_patterns),
            condition: str_value(m.condition.clone()),
            audiences: list_value(&m.audiences),
            scopes: list_value(&m.scopes),
            allow_any_subject: Value::Value(m.allow_any_subject),
            actor,
        }),
        issue,
    }
}

/// The JSON a rule is compared by: the broker's own serialization of the parsed rule.
pub fn canonical(raw: &RawRule) -> Json {
    serde_json::to_value(raw).unwrap_or(Json::Null)
}

/// Check a rule the way the broker will, except for what only the broker knows (its
/// issuers and `server.max_issued_lifetime`). Returns `false` when it reported errors.
pub fn check(diags: &mut Diagnostics, state: &RuleState) -> bool {
    let Converted { raw, problems } = match convert(state) {
        Ok(converted) => converted,
        Err(NotReady::Unknown) => return true,
        Err(NotReady::Invalid(problems)) => {
            report_invalid::<RuleState>(diags, problems);
            return false;
        }
    };
    let mut ok = problems.is_empty();
    report_invalid::<RuleState>(diags, problems);
    let accept_any = |_: &str| true;
    let ctx = CompileContext {
        issuers: &accept_any,
        max_lifetime: u64::MAX,
    };
    if let Err(errors) = RuleSet::compile(vec![raw], &ctx) {
        ok = false;
        let problems = errors
            .into_iter()
            .map(|e| (path_of(&e.field), format!("{}: {}", e.field, e.message)))
            .collect();
        report_invalid::<RuleState>(diags, problems);
    }
    ok
}

pub type RuleResource = ItemResource<RuleState>;

impl Item for RuleState {
    const KIND: Kind = Kind::Rules;
    const IMPORT_DETAIL: &'static str = "Only rules made through the admin API can be imported; rules from the broker's configuration files are not managed by Terraform.";

    const SCHEMA: fn() -> Schema = rule_schema;
    const PATH_OF: fn(&str) -> AttributePath = path_of;
    const CHECK: fn(&mut Diagnostics, &Self) -> bool = check;

    fn name(&self) -> &Str {
        &self.name
    }
    /// The defaults of `effect` and `match.allow_any_subject`.
    fn id_mut(&mut self) -> &mut Str {
        &mut self.id
    }
    fn fill_defaults(&mut self) {
        if self.effect.is_null() {
            self.effect = Value::Value("allow".into());
        }
        if let Value::Value(m) = &mut self.matcher
            && m.allow_any_subject.is_null()
        {
            m.allow_any_subject = Value::Value(false);
        }
    }
    fn body(&self) -> Result<Json, NotReady> {
        to_raw(self).map(|raw| canonical(&raw))
    }
    fn from_item(item: &Json) -> Result<Self, ProviderError> {
        let raw: RawRule = from_json(item)?;
        Ok(from_raw(&raw))
    }
    fn refresh(prior: &Self, item: &Json) -> Result<Option<Self>, ProviderError> {
        let raw: RawRule = from_json(item)?;
        if to_raw(prior).is_ok_and(|prior| canonical(&prior) == canonical(&raw)) {
            return Ok(None);
        }
        let mut fresh = from_raw(&raw);
        keep_equal_json(prior, &mut fresh);
        Ok(Some(fresh))
    }
}

/// After drift, keep `claims_json` as written when it still means the same JSON.
fn keep_equal_json(prior: &RuleState, fresh: &mut RuleState) {
    if let (Value::Value(p), Value::Value(f)) = (&prior.issue, &mut fresh.issue)
        && let (Value::Value(pt), Value::Value(ft)) = (&p.claims_json, &f.claims_json)
        && serde_json::from_str::<Json>(pt).ok() == serde_json::from_str::<Json>(ft).ok()
    {
        f.claims_json = Value::Value(pt.clone());
    }
}

fn token_attributes(who: &str) -> Vec<(&'static str, tf_provider::schema::Attribute)> {
    use AttributeConstraint::*;
    vec![
        (
            "subject",
            attribute(
                AttributeType::String,
                Optional,
                &format!("The {who}'s `sub` must equal this exactly. Conflicts with `subject_pattern`."),
            ),
        ),
        (
            "subject_pattern",
            attribute(
                AttributeType::String,
                Optional,
                &format!(
                    "The {who}'s `sub` must match this anchored glob (`*` any run of characters, `?` one)."
                ),
            ),
        ),
        (
            "claims",
            attribute(
                AttributeType::Map(Box::new(string_list_type())),
                Optional,
                "Claim path → accepted values: the claim must equal one of them (`{environment = [\"prod\", \"staging\"]}`; a single value is a one-element list). Numbers and booleans match their JSON text.",
            ),
        ),
        (
            "claim_patterns",
            attribute(
                AttributeType::Map(Box::new(AttributeType::String)),
                Optional,
                "Claim path → glob the claim must match.",
            ),
        ),
        (
            "condition",
            attribute(
                AttributeType::String,
                Optional,
                "A CEL expression over `claims`, `request` and `actor` that must be `true`.",
            ),
        ),
    ]
}

/// A nested block with these attributes.
fn block(description: &str, attributes: Vec<(&str, tf_provider::schema::Attribute)>) -> Block {
    Block {
        description: tf_provider::schema::Description::markdown(description),
        attributes: attributes.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ..Default::default()
    }
}

pub fn rule_schema() -> Schema {
    use AttributeConstraint::*;
    let mut actor_attributes = vec![(
        "issuer",
        attribute(
            AttributeType::String,
            Required,
            "The actor token's issuer (an issuer's `name`).",
        ),
    )];
    actor_attributes.extend(token_attributes("actor token"));
    let actor = block(
        "Delegation: the actor token this rule requires. Without it, a request with an actor token is not allowed by this rule.",
        actor_attributes,
    );
    let mut match_attributes = vec![
        (
            "issuer",
            attribute(
                AttributeType::String,
                Required,
                "The subject token's issuer: a registered issuer's `name` (e.g. `fedbroker_issuer.gha.name`).",
            ),
        ),
        (
            "audiences",
            attribute(
                string_list_type(),
                Optional,
                "The targets (requested `audience`/`resource` values) this rule grants. Required on allow rules.",
            ),
        ),
        (
            "scopes",
            attribute(
                string_list_type(),
                Optional,
                "Scopes this rule allows (none: requests without a scope).",
            ),
        ),
        (
            "allow_any_subject",
            attribute(
                AttributeType::Bool,
                OptionalComputed,
                "Acknowledge that an allow rule without any condition on the subject token admits every token of its issuer. Default `false`.",
            ),
        ),
    ];
    match_attributes.extend(token_attributes("subject token"));
    let matcher = Block {
        blocks: [("actor".to_owned(), NestedBlock::Optional(actor))]
            .into_iter()
            .collect(),
        ..block("What the request must be (the YAML `match`).", match_attributes)
    };
    let issue = block(
        "What the issued token carries (the YAML `issue`).",
        vec![
            (
                "audience",
                attribute(
                    AttributeType::String,
                    Optional,
                    "`aud` of the issued token (a template); default: the requested target.",
                ),
            ),
            (
                "subject",
                attribute(
                    AttributeType::String,
                    Optional,
                    "`sub` of the issued token, a template such as `gha:{claims.repository}`; default: the incoming `sub`.",
                ),
            ),
            (
                "subject_expr",
                attribute(
                    AttributeType::String,
                    Optional,
                    "`sub` as a CEL expression (the YAML's `subject: {expr: ...}`). Conflicts with `subject`.",
                ),
            ),
            (
                "lifetime",
                attribute(
                    AttributeType::String,
                    Optional,
                    "Lifetime of the issued token (`15m`, `1h`); default 15m, at most the broker's `server.max_issued_lifetime`.",
                ),
            ),
            (
                "claims_json",
                attribute(
                    AttributeType::String,
                    Optional,
                    "Extra claims as a JSON object (`jsonencode({...})`): the YAML's `issue.claims`. String values are templates; `{expr = \"...\"}` objects CEL expressions.",
                ),
            ),
        ],
    );
    Schema {
        version: 1,
        block: Block {
            version: 1,
            description: tf_provider::schema::Description::markdown(
                "A fedbroker trust rule, created through the broker's admin API. The fields are the rules reference's (README).",
            ),
            attributes: attributes([
                (
                    "id",
                    attribute(AttributeType::String, Computed, "The rule's name."),
                ),
                (
                    "name",
                    attribute(
                        AttributeType::String,
                        Required,
                        "Unique rule name. Changing it replaces the rule.",
                    ),
                ),
                (
                    "effect",
                    attribute(
                        AttributeType::String,
                        OptionalComputed,
                        "`allow` (default) or `deny`.",
                    ),
                ),
                (
                    "description",
                    attribute(AttributeType::String, Optional, "Free text, for people."),
                ),
            ]),
            blocks: [
                ("match".to_owned(), NestedBlock::Single(matcher)),
                ("issue".to_owned(), NestedBlock::Optional(issue)),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Str {
        Value::Value(v.to_owned())
    }

    fn sample() -> RuleState {
        RuleState {
            id: Value::Null,
            name: s("gha-main"),
            effect: Value::Null,
            description: Value::Null,
            matcher: Value::Value(MatchBlock {
                issuer: s("github-actions"),
                subject: s("repo:acme/api:ref:refs/heads/main"),
                claims: Value::Value(
                    [(
                        "environment".to_owned(),
                        Value::Value(vec![s("prod"), s("staging")]),
                    )]
                    .into_iter()
                    .collect(),
                ),
                audiences: Value::Value(vec![s("sts.amazonaws.com")]),
                ..Default::default()
            }),
            issue: Value::Value(IssueBlock {
                subject: s("gha:{claims.repository}"),
                lifetime: s("15m"),
                claims_json: s(
                    r#"{"https://aws.amazon.com/tags":{"principal_tags":{"repo":["{claims.repository}"]}}}"#,
                ),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_rule_round_trips_through_the_broker_schema() {
        let raw = to_raw(&sample()).expect("a rule");
        let json = canonical(&raw);
        assert_eq!(
            json["match"]["claims"]["environment"],
            serde_json::json!(["prod", "staging"])
        );
        assert_eq!(json["effect"], "allow");
        let back = from_raw(&from_json::<RawRule>(&json).expect("parses"));
        assert_eq!(canonical(&to_raw(&back).expect("a rule")), json);
        let Value::Value(issue) = &back.issue else {
            panic!("issue block lost")
        };
        assert_eq!(
            issue.claims_json,
            s(r#"{"https://aws.amazon.com/tags":{"principal_tags":{"repo":["{claims.repository}"]}}}"#)
        );
    }

    #[test]
    fn plan_time_check_finds_compile_errors_with_their_attribute() {
        let mut bad = sample();
        if let Value::Value(m) = &mut bad.matcher {
            m.condition = s("claims.x ==");
            m.subject_pattern = s("repo:*");
        }
        let mut diags = Diagnostics::default();
        assert!(!check(&mut diags, &bad));
        let paths: Vec<_> = diags.errors.iter().map(|d| format!("{:?}", d)).collect();
        let text = paths.join("\n");
        assert!(text.contains("condition"), "{text}");
        assert!(text.contains("subject_pattern"), "{text}");
        let mut diags = Diagnostics::default();
        assert!(check(&mut diags, &sample()), "{:?}", diags.errors);
    }

    #[test]
    fn unknown_values_skip_the_check() {
        let mut st = sample();
        if let Value::Value(m) = &mut st.matcher {
            m.issuer = Value::Unknown;
            m.condition = s("claims.x ==");
        }
        let mut diags = Diagnostics::default();
        assert!(check(&mut diags, &st));
        assert!(diags.errors.is_empty());
    }

    #[test]
    fn subject_expr_is_the_expr_mapping() {
        let mut st = sample();
        if let Value::Value(i) = &mut st.issue {
            i.subject = Value::Null;
            i.subject_expr = s("claims.repository.lowerAscii()");
        }
        let json = canonical(&to_raw(&st).expect("a rule"));
        assert_eq!(
            json["issue"]["subject"],
            serde_json::json!({"expr": "claims.repository.lowerAscii()"})
        );
        let back = from_raw(&from_json::<RawRule>(&json).expect("parses"));
        let Value::Value(issue) = back.issue else {
            panic!("issue block lost")
        };
        assert_eq!(issue.subject, Value::Null);
        assert_eq!(issue.subject_expr, s("claims.repository.lowerAscii()"));
    }

    #[test]
    fn provider_problems_and_compile_errors_are_reported_together() {
        let mut st = sample();
        if let Value::Value(i) = &mut st.issue {
            i.claims_json = s("[1, 2]");
            i.subject_expr = s("claims.x");
        }
        if let Value::Value(m) = &mut st.matcher {
            m.condition = s("claims.x ==");
        }
        let mut diags = Diagnostics::default();
        assert!(!check(&mut diags, &st));
        let text = format!("{:?}", diags.errors);
        for expected in ["claims_json", "not both", "match.condition"] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }
}
