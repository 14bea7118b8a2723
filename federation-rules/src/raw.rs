//! The rule format as written by people: serde structs, independent of YAML or JSON.
//!
//! Every struct denies unknown fields. Every scalar field accepts a string, a number or a
//! boolean (numbers and booleans become their JSON text), because the broker's YAML
//! loader delivers all scalars as strings while JSON callers send real numbers. Values
//! are checked by [`crate::RuleSet::compile`], not here: this layer only gives shape.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// One rule, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(deserialize_with = "scalar_string")]
    pub name: String,
    #[serde(default)]
    pub effect: Effect,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<String>,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    /// Boxed: most rules have none, and a raw rule set of a hundred thousand is held
    /// whole while it compiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<Box<RawIssue>>,
}

/// Whether a matching rule grants or refuses the exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    #[default]
    Allow,
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

/// The `match` block: conditions on the subject token, the targets and the actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(deserialize_with = "scalar_string")]
    pub issuer: String,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, ClaimValues>,
    #[serde(
        default,
        deserialize_with = "scalar_string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub claim_patterns: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub condition: Option<String>,
    #[serde(
        default,
        deserialize_with = "scalar_string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub audiences: Vec<String>,
    #[serde(
        default,
        deserialize_with = "scalar_string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<RawActor>,
    /// Acknowledges that an allow rule without any condition on the subject token
    /// (`subject`, a `subject_pattern` with more than wildcards, `claims`,
    /// `claim_patterns`, `condition`) admits every token of its issuer. Without it such a
    /// rule does not compile.
    #[serde(
        default,
        deserialize_with = "scalar_bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub allow_any_subject: bool,
    /// The request must carry a valid DPoP proof (RFC 9449), so the issued token is
    /// bound to the caller's key (`cnf.jkt`). Allow rules only.
    #[serde(
        default,
        deserialize_with = "scalar_bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub require_dpop: bool,
    /// The request must come over a mutual-TLS connection with a verified client
    /// certificate (`request.client_cert`), so the issued token is bound to it
    /// (`cnf["x5t#S256"]`). Allow rules only.
    #[serde(
        default,
        deserialize_with = "scalar_bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub require_client_cert: bool,
}

/// `match.actor`: conditions on the actor token of a delegated exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActor {
    #[serde(deserialize_with = "scalar_string")]
    pub issuer: String,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, ClaimValues>,
    #[serde(
        default,
        deserialize_with = "scalar_string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub claim_patterns: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub condition: Option<String>,
}

/// The accepted values of one `match.claims` entry: a scalar, or a list meaning "any one
/// of". Numbers and booleans are kept as their JSON text (`42`, `true`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClaimValues(pub Vec<String>);

/// The `issue` block: what the issued token carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssue {
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub audience: Option<String>,
    /// A template string (`"gha:{claims.repository}"`; numbers and booleans become
    /// their text) or a CEL expression `{"expr": "<CEL>"}`. Kept as JSON so that
    /// [`crate::RuleSet::compile`] can report a malformed object with its field.
    #[serde(
        default,
        deserialize_with = "opt_issue_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject: Option<serde_json::Value>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifetime: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Native cloud credentials to trade the issued token for (contract §9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<RawCredentials>,
}

/// `issue.credentials`: at most one cloud (checked when compiling). Strings marked
/// "template" take placeholders as `issue.claims` does; endpoints, regions and CA files
/// are fixed text, so that no claim can choose where the broker sends a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<RawAwsCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<RawGcpCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<RawAzureCredentials>,
}

impl RawCredentials {
    /// The endpoint overrides the block sets: (field under `issue.credentials`, URL).
    pub fn endpoints(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(aws) = &self.aws {
            out.extend(aws.endpoint.as_deref().map(|e| ("aws.endpoint", e)));
        }
        if let Some(gcp) = &self.gcp {
            out.extend(gcp.sts_endpoint.as_deref().map(|e| ("gcp.sts_endpoint", e)));
            out.extend(
                gcp.iamcredentials_endpoint
                    .as_deref()
                    .map(|e| ("gcp.iamcredentials_endpoint", e)),
            );
        }
        if let Some(azure) = &self.azure {
            out.extend(
                azure
                    .authority_host
                    .as_deref()
                    .map(|e| ("azure.authority_host", e)),
            );
        }
        out
    }

    /// Each block's name with its `danger_allow_insecure_endpoint` and `ca_file`.
    pub fn trust_mut(&mut self) -> Vec<(&'static str, &mut bool, &mut Option<String>)> {
        let mut out = Vec::new();
        if let Some(b) = &mut self.aws {
            out.push(("aws", &mut b.danger_allow_insecure_endpoint, &mut b.ca_file));
        }
        if let Some(b) = &mut self.gcp {
            out.push(("gcp", &mut b.danger_allow_insecure_endpoint, &mut b.ca_file));
        }
        if let Some(b) = &mut self.azure {
            out.push(("azure", &mut b.danger_allow_insecure_endpoint, &mut b.ca_file));
        }
        out
    }
}

/// `issue.credentials.aws`: `AssumeRoleWithWebIdentity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsCredentials {
    /// Template.
    #[serde(deserialize_with = "scalar_string")]
    pub role_arn: String,
    /// Template; 2–64 characters of `[\w+=,.@-]` once rendered.
    #[serde(deserialize_with = "scalar_string")]
    pub session_name: String,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub region: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint: Option<String>,
    /// Allows `http://` endpoints (tests, local emulators).
    #[serde(
        default,
        deserialize_with = "scalar_bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub danger_allow_insecure_endpoint: bool,
    /// PEM file of the CAs to trust for the endpoints instead of the system's roots.
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_file: Option<String>,
}

/// `issue.credentials.gcp`: Google STS, then optionally `generateAccessToken`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGcpCredentials {
    /// Template: the workload identity provider,
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/R`.
    #[serde(deserialize_with = "scalar_string")]
    pub audience: String,
    /// Template: the service account to impersonate.
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account: Option<String>,
    #[serde(
        default,
        deserialize_with = "scalar_string_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub scopes: Vec<String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifetime: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub sts_endpoint: Option<String>,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub iamcredentials_endpoint: Option<String>,
    /// Allows `http://` endpoints (tests, local emulators).
    #[serde(
        default,
        deserialize_with = "scalar_bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub danger_allow_insecure_endpoint: bool,
    /// PEM file of the CAs to trust for the endpoints instead of the system's roots.
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_file: Option<String>,
}

/// `issue.credentials.azure`: Entra `client_credentials` with the issued token as the
/// client assertion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAzureCredentials {
    /// Template.
    #[serde(deserialize_with = "scalar_string")]
    pub tenant_id: String,
    /// Template.
    #[serde(deserialize_with = "scalar_string")]
    pub client_id: String,
    /// Template ending in `/.default`.
    #[serde(deserialize_with = "scalar_string")]
    pub scope: String,
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub authority_host: Option<String>,
    /// Allows `http://` endpoints (tests, local emulators).
    #[serde(
        default,
        deserialize_with = "scalar_bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub danger_allow_insecure_endpoint: bool,
    /// PEM file of the CAs to trust for the endpoints instead of the system's roots.
    #[serde(
        default,
        deserialize_with = "opt_scalar_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_file: Option<String>,
}

/// A rule file: either a bare list of rules or `{rules: [...]}`. Deserializing this type
/// keeps the format's own error positions (line and column), unlike going through
/// `serde_json::Value` first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawRuleFile {
    pub rules: Vec<RawRule>,
}

/// Parses a JSON rule file: a list of rules or `{"rules": [...]}`. Handy for tests and
/// tools; the broker reads YAML and deserializes [`RawRuleFile`] itself.
pub fn parse_rules_json(s: &str) -> Result<Vec<RawRule>, serde_json::Error> {
    serde_json::from_str::<RawRuleFile>(s).map(|file| file.rules)
}

impl Serialize for RawRuleFile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.rules.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawRuleFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FileVisitor;
        impl<'de> Visitor<'de> for FileVisitor {
            type Value = RawRuleFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of rules or a map with a `rules` list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRuleFile, A::Error> {
                let mut rules = Vec::new();
                while let Some(rule) = seq.next_element::<RawRule>()? {
                    rules.push(rule);
                }
                Ok(RawRuleFile { rules })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRuleFile, A::Error> {
                let mut rules: Option<Vec<RawRule>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "rules" {
                        return Err(de::Error::unknown_field(&key, &["rules"]));
                    }
                    if rules.is_some() {
                        return Err(de::Error::duplicate_field("rules"));
                    }
                    rules = Some(map.next_value()?);
                }
                match rules {
                    Some(rules) => Ok(RawRuleFile { rules }),
                    None => Err(de::Error::missing_field("rules")),
                }
            }
        }
        deserializer.deserialize_any(FileVisitor)
    }
}

impl Serialize for ClaimValues {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ClaimValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(ScalarOrListVisitor(
                "a claim value (string, number or boolean) or a list of them",
            ))
            .map(ClaimValues)
    }
}

/// A string, number or boolean, kept as text.
struct Scalar(String);

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        // Same text serde_json gives the claim, so `1.5` in a rule matches `1.5` in a token.
        serde_json::Number::from_f64(v)
            .map(|n| n.to_string())
            .ok_or_else(|| E::custom("a finite number"))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor).map(Scalar)
    }
}

/// A scalar, or a list of scalars.
struct ScalarOrListVisitor(&'static str);

impl<'de> Visitor<'de> for ScalarOrListVisitor {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
        ScalarVisitor.visit_str(v).map(|s| vec![s])
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Vec<String>, E> {
        Ok(vec![v])
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Vec<String>, E> {
        ScalarVisitor.visit_bool(v).map(|s| vec![s])
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<String>, E> {
        ScalarVisitor.visit_i64(v).map(|s| vec![s])
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<String>, E> {
        ScalarVisitor.visit_u64(v).map(|s| vec![s])
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Vec<String>, E> {
        ScalarVisitor.visit_i128(v).map(|s| vec![s])
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Vec<String>, E> {
        ScalarVisitor.visit_u128(v).map(|s| vec![s])
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Vec<String>, E> {
        ScalarVisitor.visit_f64(v).map(|s| vec![s])
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(Scalar(s)) = seq.next_element::<Scalar>()? {
            out.push(s);
        }
        Ok(out)
    }
}

fn scalar_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    deserializer.deserialize_any(ScalarVisitor)
}

fn opt_scalar_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Option::<Scalar>::deserialize(deserializer).map(|o| o.map(|Scalar(s)| s))
}

/// A boolean, or the strings `true` / `false` (the broker's YAML loader delivers every
/// scalar as a string).
fn scalar_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let Scalar(text) = Scalar::deserialize(deserializer)?;
    match text.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(de::Error::invalid_value(
            de::Unexpected::Str(other),
            &"true or false",
        )),
    }
}

/// `issue.subject`: a scalar (kept as its text) or a mapping (kept as JSON, checked when
/// compiling).
fn opt_issue_value<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    struct IssueValueVisitor;
    impl<'de> Visitor<'de> for IssueValueVisitor {
        type Value = serde_json::Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a template string or `{expr: '<CEL>'}`")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(serde_json::Value::String(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(serde_json::Value::String(v))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            ScalarVisitor.visit_bool(v).map(serde_json::Value::String)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            ScalarVisitor.visit_i64(v).map(serde_json::Value::String)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            ScalarVisitor.visit_u64(v).map(serde_json::Value::String)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            ScalarVisitor.visit_f64(v).map(serde_json::Value::String)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                out.insert(key, value);
            }
            Ok(serde_json::Value::Object(out))
        }
    }
    struct Wrapper(serde_json::Value);
    impl<'de> Deserialize<'de> for Wrapper {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(IssueValueVisitor).map(Wrapper)
        }
    }
    Option::<Wrapper>::deserialize(deserializer).map(|o| o.map(|Wrapper(v)| v))
}

fn scalar_string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    deserializer.deserialize_any(ScalarOrListVisitor("a string or a list of strings"))
}

fn scalar_string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    BTreeMap::<String, Scalar>::deserialize(deserializer)
        .map(|m| m.into_iter().map(|(k, Scalar(v))| (k, v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FULL: &str = r#"[{
        "name": "gha-main-deploys-to-aws",
        "effect": "allow",
        "description": "main branch deploys",
        "match": {
            "issuer": "github-actions",
            "subject": "repo:acme/api:ref:refs/heads/main",
            "claims": {"repository_owner": "acme", "environment": ["prod", "staging"], "run_attempt": 1, "ref_protected": true},
            "claim_patterns": {"job_workflow_ref": "acme/workflows/*@refs/heads/main", "run_number": 7},
            "audiences": ["sts.amazonaws.com"],
            "scopes": ["read"],
            "actor": {"issuer": "agents", "subject_pattern": "agent:*"}
        },
        "issue": {
            "audience": "sts.amazonaws.com",
            "subject": "gha:{claims.repository}",
            "lifetime": "15m",
            "claims": {"https://aws.amazon.com/tags": {"principal_tags": {"repo": ["{claims.repository}"]}}}
        }
    }]"#;

    #[test]
    fn parses_a_full_rule() {
        let rules = parse_rules_json(FULL).expect("valid");
        assert_eq!(rules.len(), 1);
        let rule = &rules[0];
        assert_eq!(rule.effect, Effect::Allow);
        assert_eq!(
            rule.matcher.claims["environment"],
            ClaimValues(vec!["prod".into(), "staging".into()])
        );
        assert_eq!(rule.matcher.claims["run_attempt"], ClaimValues(vec!["1".into()]));
        assert_eq!(
            rule.matcher.claims["ref_protected"],
            ClaimValues(vec!["true".into()])
        );
        assert_eq!(rule.matcher.claim_patterns["run_number"], "7");
        assert_eq!(
            rule.matcher.actor.as_ref().map(|a| a.issuer.as_str()),
            Some("agents")
        );
        assert_eq!(
            rule.issue.as_ref().and_then(|i| i.lifetime.as_deref()),
            Some("15m")
        );
    }

    #[test]
    fn round_trips_through_serialize() {
        let rules = parse_rules_json(FULL).expect("valid");
        let text = serde_json::to_string(&rules).expect("serializes");
        assert_eq!(parse_rules_json(&text).expect("reparses"), rules);
        let value = serde_json::to_value(&rules[0]).expect("serializes");
        assert_eq!(value["match"]["claims"]["repository_owner"], json!("acme"));
        assert_eq!(
            value["match"]["claims"]["environment"],
            json!(["prod", "staging"])
        );
        // Absent optional fields are left out rather than written as null.
        assert!(value["match"].get("condition").is_none());
    }

    #[test]
    fn accepts_both_file_shapes_and_scalar_forms() {
        let wrapped =
            r#"{"rules": [{"name": 7, "match": {"issuer": "x", "audiences": "one", "subject": 12345}}]}"#;
        let rules = parse_rules_json(wrapped).expect("valid");
        assert_eq!(rules[0].name, "7");
        assert_eq!(rules[0].effect, Effect::Allow);
        assert_eq!(rules[0].matcher.audiences, ["one"]);
        assert_eq!(rules[0].matcher.subject.as_deref(), Some("12345"));
        let lifetime =
            r#"[{"name": "a", "match": {"issuer": "x", "subject": null}, "issue": {"lifetime": 900}}]"#;
        let rules = parse_rules_json(lifetime).expect("valid");
        assert_eq!(rules[0].matcher.subject, None);
        assert_eq!(
            rules[0].issue.as_ref().and_then(|i| i.lifetime.as_deref()),
            Some("900")
        );
        assert_eq!(parse_rules_json("[]").expect("valid"), vec![]);
        assert_eq!(parse_rules_json(r#"{"rules": []}"#).expect("valid"), vec![]);
    }

    #[test]
    fn rejects_malformed_input() {
        let cases: &[(&str, &str)] = &[
            (
                r#"[{"name": "a", "match": {"issuer": "x"}, "extra": 1}]"#,
                "unknown field `extra`",
            ),
            (
                r#"[{"name": "a", "match": {"issuer": "x", "subjct": "s"}}]"#,
                "unknown field `subjct`",
            ),
            (
                r#"[{"name": "a", "match": {"issuer": "x", "actor": {"issuer": "y", "aud": 1}}}]"#,
                "unknown field `aud`",
            ),
            (
                r#"[{"name": "a", "match": {"issuer": "x"}, "issue": {"ttl": "1m"}}]"#,
                "unknown field `ttl`",
            ),
            (
                r#"[{"name": "a", "effect": "permit", "match": {"issuer": "x"}}]"#,
                "unknown variant `permit`",
            ),
            (r#"[{"name": "a"}]"#, "missing field `match`"),
            (r#"[{"match": {"issuer": "x"}}]"#, "missing field `name`"),
            (r#"[{"name": "a", "match": {}}]"#, "missing field `issuer`"),
            (
                r#"[{"name": "a", "match": {"issuer": "x", "claims": {"e": {"a": 1}}}}]"#,
                "a claim value",
            ),
            (
                r#"[{"name": "a", "match": {"issuer": "x", "claims": {"e": [["a"]]}}}]"#,
                "a string, number or boolean",
            ),
            (
                r#"[{"name": "a", "match": {"issuer": "x", "claims": {"e": null}}}]"#,
                "a claim value",
            ),
            (
                r#"[{"name": ["a"], "match": {"issuer": "x"}}]"#,
                "a string, number or boolean",
            ),
            (r#"{"rule": []}"#, "unknown field `rule`"),
            (r#"{}"#, "missing field `rules`"),
            (r#""rules""#, "a list of rules"),
        ];
        for (input, want) in cases {
            let err = parse_rules_json(input).expect_err(input).to_string();
            assert!(err.contains(want), "input {input}: {err}");
        }
    }

    #[test]
    fn accepts_allow_any_subject_and_expressions_as_strings_or_typed() {
        let rules = parse_rules_json(
            r#"[{"name": "a", "match": {"issuer": "x", "allow_any_subject": "true"},
                 "issue": {"subject": {"expr": "claims.sub"}}},
                {"name": "b", "match": {"issuer": "x", "allow_any_subject": false},
                 "issue": {"subject": 42}}]"#,
        )
        .expect("valid");
        assert!(rules[0].matcher.allow_any_subject);
        assert!(!rules[1].matcher.allow_any_subject);
        assert_eq!(
            rules[0].issue.as_ref().and_then(|i| i.subject.clone()),
            Some(json!({"expr": "claims.sub"}))
        );
        assert_eq!(
            rules[1].issue.as_ref().and_then(|i| i.subject.clone()),
            Some(json!("42"))
        );
        // `false` is not written back.
        let value = serde_json::to_value(&rules[1]).expect("serializes");
        assert!(value["match"].get("allow_any_subject").is_none());
        let err =
            parse_rules_json(r#"[{"name": "a", "match": {"issuer": "x", "allow_any_subject": "yes"}}]"#)
                .expect_err("not a boolean")
                .to_string();
        assert!(err.contains("expected true or false"), "{err}");
        let err =
            parse_rules_json(r#"[{"name": "a", "match": {"issuer": "x"}, "issue": {"subject": ["s"]}}]"#)
                .expect_err("not a subject")
                .to_string();
        assert!(err.contains("a template string or `{expr: '<CEL>'}`"), "{err}");
    }

    #[test]
    fn errors_keep_line_numbers() {
        let err = parse_rules_json("[\n{\"name\": \"a\",\n \"match\": {\"issuer\": \"x\", \"bogus\": 1}}]")
            .expect_err("unknown field");
        assert_eq!(err.line(), 3);
    }
}
