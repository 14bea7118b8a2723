//! `fedbroker_rule`: one trust rule, in the rule schema of the README (`match`, `issue`).
//!
//! HCL shape: `match` is a required block and `issue` and `match.actor` optional blocks,
//! as in the YAML. `match.claims` is a map of lists (`{environment = ["prod", "staging"]}`,
//! a one-element list for a single value). `issue.claims` is arbitrary JSON, so it is the
//! string attribute `issue.claims_json` (write `jsonencode({...})`), and so is the cloud
//! credentials block `issue.credentials` (contract §9): `issue.credentials_json`
//! (`jsonencode({aws = {role_arn = "...", session_name = "..."}})`), parsed into the
//! broker's `RawCredentials`; `issue.subject`'s `{expr: ...}` form is
//! `issue.subject_expr`.
//!
//! The rule is compiled by `federation-rules` (the broker's own compiler) when Terraform
//! validates and plans, with every issuer name accepted (the provider cannot see the
//! broker's issuers) and no lifetime cap; the broker checks those on apply.

use std::collections::BTreeMap;

use federation_rules::{
    ClaimValues, CompileContext, Effect, RawActor, RawCredentials, RawIssue, RawMatch, RawRule, RuleSet,
};
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
    pub require_dpop: Bool,
    pub require_client_cert: Bool,
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
    pub credentials_json: Str,
}

/// Blocks that are lists of one on the wire, and JSON attributes that hold a subtree.
const BLOCKS: &[(&str, bool)] = &[("match", false), ("issue", true), ("match.actor", true)];
const JSON_ATTRIBUTES: &[(&str, &str)] = &[
    ("issue.claims", "issue.claims_json"),
    ("issue.credentials", "issue.credentials_json"),
    ("issue.subject.expr", "issue.subject_expr"),
];

pub fn path_of(field: &str) -> AttributePath {
    attribute_path(field, BLOCKS, JSON_ATTRIBUTES)
}

/// The credentials block `credentials_json` holds, or why it holds none (a phrase that
/// follows the attribute's name): not JSON, not an object, or not the shape of
/// `issue.credentials` (serde's message, naming the cloud whose block is wrong). The
/// values are checked when the rule is compiled.
pub fn parse_credentials(text: &str) -> Result<RawCredentials, String> {
    let map = parse_json_object(text).map_err(|e| e.to_string())?;
    serde_json::from_value(Json::Object(map.clone())).map_err(|e| {
        let wrong = ["aws", "gcp", "azure"].into_iter().find(|cloud| {
            map.get(*cloud).is_some_and(|block| {
                serde_json::from_value::<RawCredentials>(serde_json::json!({ *cloud: block })).is_err()
            })
        });
        match wrong {
            Some(cloud) => format!("is not a credentials block ({cloud}): {e}"),
            None => format!("is not a credentials block: {e}"),
        }
    })
}

/// A rule, with the problems found while converting it (a malformed `claims_json` or
/// `credentials_json`, both `subject` and `subject_expr`): the rule is still compiled so
/// that every problem is reported at once.
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
        require_dpop: known(&m.require_dpop)?.unwrap_or(false),
        require_client_cert: known(&m.require_client_cert)?.unwrap_or(false),
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
            let credentials = match known(&i.credentials_json)? {
                None => None,
                Some(text) => parse_credentials(&text)
                    .map_err(|e| {
                        problems.push((
                            AttributePath::new("issue").index(0).attribute("credentials_json"),
                            format!("credentials_json {e}"),
                        ));
                    })
                    .ok(),
            };
            Some(RawIssue {
                audience: known(&i.audience)?,
                subject,
                lifetime: known(&i.lifetime)?,
                claims,
                credentials,
            })
        }
    };
    Ok(Converted {
        raw: RawRule {
            name,
            effect,
            description,
            matcher,
            issue: issue.map(Box::new),
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
                credentials_json: match &i.credentials {
                    None => Value::Null,
                    Some(c) => Value::Value(jsonencode(&serde_json::to_value(c).unwrap_or(Json::Null))),
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
            require_dpop: Value::Value(m.require_dpop),
            require_client_cert: Value::Value(m.require_client_cert),
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
    const REFERS_TO_CLAIMS: bool = true;

    fn claim_warnings<'k>(&self, issuer_of: &dyn Fn(&str) -> issuer_schema::IssuerClaims<'k>) -> Vec<String> {
        let Ok(Converted { raw, .. }) = convert(self) else {
            return Vec::new();
        };
        let accept_any = |_: &str| true;
        let ctx = CompileContext {
            issuers: &accept_any,
            max_lifetime: u64::MAX,
        };
        match RuleSet::compile(vec![raw], &ctx) {
            Ok(rules) => issuer_schema::unknown_claims_with(&rules, issuer_of)
                .into_iter()
                .map(|w| w.message)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn name(&self) -> &Str {
        &self.name
    }
    /// The defaults of `effect`, `match.allow_any_subject`, `match.require_dpop` and
    /// `match.require_client_cert`.
    fn id_mut(&mut self) -> &mut Str {
        &mut self.id
    }
    fn fill_defaults(&mut self) {
        if self.effect.is_null() {
            self.effect = Value::Value("allow".into());
        }
        if let Value::Value(m) = &mut self.matcher {
            for flag in [
                &mut m.allow_any_subject,
                &mut m.require_dpop,
                &mut m.require_client_cert,
            ] {
                if flag.is_null() {
                    *flag = Value::Value(false);
                }
            }
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

/// After drift, keep `claims_json` as written when it still means the same JSON, and
/// `credentials_json` when it still means the same credentials block (the broker's
/// parse: `"scopes": "x"` is `["x"]`, a `null` member an absent one).
fn keep_equal_json(prior: &RuleState, fresh: &mut RuleState) {
    let (Value::Value(p), Value::Value(f)) = (&prior.issue, &mut fresh.issue) else {
        return;
    };
    if let (Value::Value(pt), Value::Value(ft)) = (&p.claims_json, &f.claims_json)
        && serde_json::from_str::<Json>(pt).ok() == serde_json::from_str::<Json>(ft).ok()
    {
        f.claims_json = Value::Value(pt.clone());
    }
    if let (Value::Value(pt), Value::Value(ft)) = (&p.credentials_json, &f.credentials_json)
        && let (Ok(prior_block), Ok(fresh_block)) = (parse_credentials(pt), parse_credentials(ft))
        && prior_block == fresh_block
    {
        f.credentials_json = Value::Value(pt.clone());
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
        (
            "require_dpop",
            attribute(
                AttributeType::Bool,
                OptionalComputed,
                "Allow rules only: the request must carry a valid DPoP proof (RFC 9449), so the issued token is bound to the caller's key. Default `false`.",
            ),
        ),
        (
            "require_client_cert",
            attribute(
                AttributeType::Bool,
                OptionalComputed,
                "Allow rules only: the request must come with a verified mutual-TLS client certificate, so the issued token is bound to it. Default `false`.",
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
            (
                "credentials_json",
                attribute(
                    AttributeType::String,
                    Optional,
                    "Native cloud credentials the issued token is traded for, as a JSON object (`jsonencode({aws = {role_arn = \"...\", session_name = \"gha-{claims.run_id}\", duration = \"1h\"}})`): the YAML's `issue.credentials`, with exactly one of `aws`, `gcp` or `azure`. The names (`role_arn`, `session_name`, `audience`, `service_account`, `tenant_id`, `client_id`, `scope`) are templates; endpoints, regions and `ca_file` (a path on the broker's host) are fixed text. Checked at plan time by the broker's own compiler.",
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

    /// The text `jsonencode` writes for the contract's AWS example.
    const AWS: &str = r#"{"aws":{"duration":"1h","role_arn":"arn:aws:iam::111122223333:role/deployer","session_name":"gha-{claims.run_id}"}}"#;

    fn with_credentials(text: &str) -> RuleState {
        let mut st = sample();
        if let Value::Value(i) = &mut st.issue {
            i.credentials_json = s(text);
        }
        st
    }

    fn credentials_json_of(st: &RuleState) -> Str {
        match &st.issue {
            Value::Value(i) => i.credentials_json.clone(),
            other => panic!("issue block lost: {other:?}"),
        }
    }

    fn credentials_path() -> AttributePath {
        AttributePath::new("issue").index(0).attribute("credentials_json")
    }

    /// The errors `check` reports at `credentials_json`, by detail.
    fn errors_at_credentials(st: &RuleState) -> Vec<String> {
        let mut diags = Diagnostics::default();
        check(&mut diags, st);
        diags
            .errors
            .iter()
            .filter(|d| d.attribute == credentials_path())
            .map(|d| d.detail.to_string())
            .collect()
    }

    #[test]
    fn a_credentials_block_round_trips_through_the_broker_schema() {
        let st = with_credentials(AWS);
        let mut diags = Diagnostics::default();
        assert!(check(&mut diags, &st), "{:?}", diags.errors);
        let json = canonical(&to_raw(&st).expect("a rule"));
        assert_eq!(
            json["issue"]["credentials"],
            serde_json::json!({"aws": {
                "role_arn": "arn:aws:iam::111122223333:role/deployer",
                "session_name": "gha-{claims.run_id}",
                "duration": "1h",
            }})
        );
        let back = from_raw(&from_json::<RawRule>(&json).expect("parses"));
        assert_eq!(credentials_json_of(&back), s(AWS));
        assert_eq!(canonical(&to_raw(&back).expect("a rule")), json);

        // Every cloud, with its optional fields, survives the trip.
        for text in [
            r#"{"aws":{"ca_file":"/etc/ca.pem","danger_allow_insecure_endpoint":true,"duration":"15m","endpoint":"http://127.0.0.1:5000","region":"eu-west-1","role_arn":"arn:aws:iam::1:role/r","session_name":"s-{claims.sub}"}}"#,
            r#"{"gcp":{"audience":"//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p/providers/fedbroker","iamcredentials_endpoint":"https://iam.example.com","lifetime":"30m","scopes":["https://www.googleapis.com/auth/cloud-platform"],"service_account":"deployer@proj.iam.gserviceaccount.com","sts_endpoint":"https://sts.example.com"}}"#,
            r#"{"azure":{"authority_host":"https://login.example.com","client_id":"11111111-1111-1111-1111-111111111111","scope":"https://management.azure.com/.default","tenant_id":"00000000-0000-0000-0000-000000000000"}}"#,
        ] {
            let st = with_credentials(text);
            let mut diags = Diagnostics::default();
            assert!(check(&mut diags, &st), "{text}: {:?}", diags.errors);
            let json = canonical(&to_raw(&st).expect("a rule"));
            let back = from_raw(&from_json::<RawRule>(&json).expect("parses"));
            assert_eq!(credentials_json_of(&back), s(text));
        }

        // No block: none sent, none read back.
        let json = canonical(&to_raw(&sample()).expect("a rule"));
        assert!(json["issue"].get("credentials").is_none(), "{json}");
        let back = from_raw(&from_json::<RawRule>(&json).expect("parses"));
        assert_eq!(credentials_json_of(&back), Value::Null);
    }

    #[test]
    fn malformed_credentials_json_is_a_problem_at_its_attribute() {
        for (text, expected) in [
            ("{aws", "is not valid JSON"),
            ("[1, 2]", "must be a JSON object"),
            (
                r#"{"aws":{"role_arn":"arn:aws:iam::1:role/r"}}"#,
                "(aws): missing field `session_name`",
            ),
            (
                r#"{"gcp":{"audience":"a","lifetime":"1h","scope":"x"}}"#,
                "(gcp): unknown field `scope`",
            ),
            (r#"{"amazon":{"role_arn":"r"}}"#, "unknown field `amazon`"),
        ] {
            let st = with_credentials(text);
            let Err(NotReady::Invalid(problems)) = to_raw(&st) else {
                panic!("{text} accepted");
            };
            assert_eq!(problems.len(), 1, "{text}: {problems:?}");
            assert_eq!(problems[0].0, credentials_path(), "{text}");
            let message = &problems[0].1;
            assert!(
                message.starts_with("credentials_json ") && message.contains(expected),
                "{text}: {message}"
            );
            let errors = errors_at_credentials(&st);
            assert!(errors.iter().any(|e| e.contains(expected)), "{text}: {errors:?}");
        }
    }

    #[test]
    fn the_compilers_credentials_errors_point_at_credentials_json() {
        assert_eq!(path_of("issue.credentials.aws.duration"), credentials_path());
        assert_eq!(path_of("issue.credentials"), credentials_path());
        for (text, expected) in [
            (
                r#"{"aws":{"duration":"13h","role_arn":"r","session_name":"s"}}"#,
                "issue.credentials.aws.duration",
            ),
            (
                r#"{"aws":{"role_arn":"r","session_name":"bad name"}}"#,
                "issue.credentials.aws.session_name",
            ),
            (
                r#"{"azure":{"client_id":"c","scope":"s","tenant_id":"t"},"gcp":{"audience":"a"}}"#,
                "exactly one cloud",
            ),
            ("{}", "exactly one cloud"),
        ] {
            let st = with_credentials(text);
            assert!(to_raw(&st).is_ok(), "{text}: the JSON has the right shape");
            let errors = errors_at_credentials(&st);
            assert!(errors.iter().any(|e| e.contains(expected)), "{text}: {errors:?}");
        }
    }

    #[test]
    fn refresh_keeps_credentials_json_as_written_when_it_means_the_same() {
        // Written by hand: other key order, spacing, a null member, a scope as a string.
        let written = r#"{ "gcp": { "scopes": "https://www.googleapis.com/auth/cloud-platform",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/f",
            "lifetime": null } }"#;
        let prior = with_credentials(written);
        let item = canonical(&to_raw(&prior).expect("a rule"));

        // Unchanged on the broker: the state is kept as it is.
        assert_eq!(RuleState::refresh(&prior, &item).expect("a rule"), None);

        // Drift elsewhere: the drifted field is the broker's, the credentials text the
        // configuration's.
        let mut drifted = item.clone();
        drifted["issue"]["lifetime"] = serde_json::json!("1m");
        let fresh = RuleState::refresh(&prior, &drifted)
            .expect("a rule")
            .expect("drift");
        let Value::Value(issue) = &fresh.issue else {
            panic!("issue block lost")
        };
        assert_eq!(issue.lifetime, s("1m"));
        assert_eq!(issue.credentials_json, s(written));

        // Drift in the block itself: the broker's version, as jsonencode writes it.
        let mut drifted = item.clone();
        drifted["issue"]["credentials"]["gcp"]["lifetime"] = serde_json::json!("2h");
        let fresh = RuleState::refresh(&prior, &drifted)
            .expect("a rule")
            .expect("drift");
        assert_eq!(
            credentials_json_of(&fresh),
            s(
                r#"{"gcp":{"audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/f","lifetime":"2h","scopes":["https://www.googleapis.com/auth/cloud-platform"]}}"#
            )
        );

        // The block removed behind Terraform's back: null, so the plan puts it back.
        let mut drifted = item;
        drifted["issue"]
            .as_object_mut()
            .expect("issue")
            .remove("credentials");
        let fresh = RuleState::refresh(&prior, &drifted)
            .expect("a rule")
            .expect("drift");
        assert_eq!(credentials_json_of(&fresh), Value::Null);
    }
}
