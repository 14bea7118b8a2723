//! `fedbroker_issuer`: one trusted token issuer, with the YAML's field names. The static
//! key set `jwks` is JSON, so it is the string attribute `jwks_json`.

use issuer_schema::RawIssuer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use tf_provider::schema::{AttributeConstraint, AttributeType, Block, Description, Schema};
use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use crate::ProviderError;
use crate::client::Kind;
use crate::item::{Item, ItemResource, NotReady, report_invalid};
use crate::values::*;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IssuerState {
    pub id: Str,
    pub name: Str,
    pub issuer: Str,
    pub kind: Str,
    pub audiences: StrList,
    pub jwks_uri: Str,
    pub jwks_json: Str,
    pub jwks_file: Str,
    pub algorithms: StrList,
    pub replay: Str,
    pub max_token_lifetime: Str,
    pub danger_allow_insecure: Bool,
    pub tenant: Str,
    pub entra_version: Str,
    pub trust_domain: Str,
    pub allow_access_tokens: Bool,
    pub tls_ca_file: Str,
    pub accounts: StrList,
    pub server_id: Str,
    pub sts_endpoints: StrList,
    pub extra_claims: StrList,
}

/// Plain string fields, in the order they are written.
const STRING_FIELDS: &[&str] = &[
    "issuer",
    "kind",
    "tenant",
    "entra_version",
    "trust_domain",
    "jwks_uri",
    "jwks_file",
    "tls_ca_file",
    "replay",
    "max_token_lifetime",
    "server_id",
];
const LIST_FIELDS: &[&str] = &[
    "audiences",
    "algorithms",
    "accounts",
    "sts_endpoints",
    "extra_claims",
];
const BOOL_FIELDS: &[&str] = &["allow_access_tokens", "danger_allow_insecure"];

pub fn path_of(field: &str) -> AttributePath {
    let field = if field == "jwks" || field.starts_with("jwks.") {
        "jwks_json"
    } else {
        field
    };
    attribute_path(field, &[], &[])
}

impl IssuerState {
    fn string(&self, field: &str) -> &Str {
        match field {
            "issuer" => &self.issuer,
            "kind" => &self.kind,
            "tenant" => &self.tenant,
            "entra_version" => &self.entra_version,
            "trust_domain" => &self.trust_domain,
            "jwks_uri" => &self.jwks_uri,
            "jwks_file" => &self.jwks_file,
            "tls_ca_file" => &self.tls_ca_file,
            "replay" => &self.replay,
            "max_token_lifetime" => &self.max_token_lifetime,
            "server_id" => &self.server_id,
            _ => &self.name,
        }
    }
    fn string_mut(&mut self, field: &str) -> &mut Str {
        match field {
            "issuer" => &mut self.issuer,
            "kind" => &mut self.kind,
            "tenant" => &mut self.tenant,
            "entra_version" => &mut self.entra_version,
            "trust_domain" => &mut self.trust_domain,
            "jwks_uri" => &mut self.jwks_uri,
            "jwks_file" => &mut self.jwks_file,
            "tls_ca_file" => &mut self.tls_ca_file,
            "replay" => &mut self.replay,
            "max_token_lifetime" => &mut self.max_token_lifetime,
            "server_id" => &mut self.server_id,
            _ => &mut self.name,
        }
    }
    fn list(&self, field: &str) -> &StrList {
        match field {
            "algorithms" => &self.algorithms,
            "accounts" => &self.accounts,
            "sts_endpoints" => &self.sts_endpoints,
            "extra_claims" => &self.extra_claims,
            _ => &self.audiences,
        }
    }
    fn boolean(&self, field: &str) -> &Bool {
        if field == "allow_access_tokens" {
            &self.allow_access_tokens
        } else {
            &self.danger_allow_insecure
        }
    }
}

/// The broker's JSON for this state (the YAML schema), or why it cannot be made yet.
/// Fails with the problems found or while a value is not known yet.
pub fn to_json(state: &IssuerState) -> Result<Json, NotReady> {
    let mut problems = Vec::new();
    let mut out = Map::new();
    out.insert(
        "name".into(),
        Json::String(known(&state.name)?.unwrap_or_default()),
    );
    for field in STRING_FIELDS {
        if let Some(v) = known(state.string(field))? {
            out.insert((*field).into(), Json::String(v));
        }
    }
    for field in LIST_FIELDS {
        if let Some(v) = string_list(state.list(field))? {
            out.insert((*field).into(), v.into_iter().map(Json::String).collect());
        }
    }
    for field in BOOL_FIELDS {
        if known(state.boolean(field))? == Some(true) {
            out.insert((*field).into(), Json::Bool(true));
        }
    }
    if let Some(text) = known(&state.jwks_json)? {
        match parse_json_object(&text) {
            Ok(map) => {
                out.insert("jwks".into(), Json::Object(map));
            }
            Err(e) => problems.push((AttributePath::new("jwks_json"), format!("jwks_json {e}"))),
        }
    }
    if problems.is_empty() {
        Ok(Json::Object(out))
    } else {
        Err(NotReady::Invalid(problems))
    }
}

/// An item as the broker may hold it (strings for booleans, a string for a one-element
/// list, `false` written out), in the form [`to_json`] writes.
pub fn normalize(item: &Json) -> Json {
    let Some(map) = item.as_object() else {
        return item.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let key = key.as_str();
        let normalized = if BOOL_FIELDS.contains(&key) {
            match value {
                Json::Bool(true) => Some(Json::Bool(true)),
                Json::String(s) if s == "true" => Some(Json::Bool(true)),
                _ => None,
            }
        } else if LIST_FIELDS.contains(&key) {
            match value {
                Json::Array(items) => Some(Json::Array(items.iter().map(scalar_text).collect())),
                Json::Null => None,
                other => Some(Json::Array(vec![scalar_text(other)])),
            }
        } else if key == "jwks" {
            (!value.is_null()).then(|| value.clone())
        } else if key == "name" || STRING_FIELDS.contains(&key) {
            (!value.is_null()).then(|| scalar_text(value))
        } else {
            Some(value.clone())
        };
        if let Some(v) = normalized {
            out.insert(key.to_owned(), v);
        }
    }
    Json::Object(out)
}

fn scalar_text(v: &Json) -> Json {
    match v {
        Json::String(_) => v.clone(),
        Json::Null => Json::Null,
        other => Json::String(other.to_string()),
    }
}

/// The state for a (normalized) item read from the broker.
pub fn from_json(item: &Json) -> IssuerState {
    let item = normalize(item);
    let text = |k: &str| item.get(k).and_then(Json::as_str).map(str::to_owned);
    let mut state = IssuerState {
        id: str_value(text("name")),
        name: str_value(text("name")),
        ..Default::default()
    };
    for field in STRING_FIELDS {
        *state.string_mut(field) = str_value(text(field));
    }
    let list = |k: &str| {
        item.get(k)
            .and_then(Json::as_array)
            .map(|a| {
                Value::Value(
                    a.iter()
                        .map(|v| str_value(v.as_str().map(str::to_owned)))
                        .collect::<Vec<_>>(),
                )
            })
            .unwrap_or(Value::Null)
    };
    state.audiences = list("audiences");
    state.algorithms = list("algorithms");
    state.accounts = list("accounts");
    state.sts_endpoints = list("sts_endpoints");
    state.extra_claims = list("extra_claims");
    state.allow_access_tokens = Value::Value(item.get("allow_access_tokens") == Some(&Json::Bool(true)));
    state.danger_allow_insecure = Value::Value(item.get("danger_allow_insecure") == Some(&Json::Bool(true)));
    state.jwks_json = match item.get("jwks") {
        Some(j) if !j.is_null() => Value::Value(jsonencode(j)),
        _ => Value::Null,
    };
    state
}

/// What can be checked without the broker, with the broker's own checks and messages
/// ([`issuer_schema::check`]): kinds and their parameters, audiences, one key source, a
/// usable static key set, algorithms, replay, durations, and fetch URLs (https, no
/// loopback or private address unless `danger_allow_insecure`). What depends on the
/// broker's configuration (`admin.allow_insecure_issuers`, `admin.allow_file_paths`)
/// or on files on its host is left to apply (see the README). Returns `false` when it
/// reported errors.
pub fn check(diags: &mut Diagnostics, state: &IssuerState) -> bool {
    let problems = match plan_problems(state) {
        Ok(problems) => problems,
        Err(Unknown) => return true,
    };
    let valid = problems.is_empty();
    report_invalid::<IssuerState>(diags, problems);
    valid
}

/// Every problem [`check`] reports, with its attribute; `Err(Unknown)` while a value
/// is not known yet.
pub fn plan_problems(state: &IssuerState) -> Result<Vec<(AttributePath, String)>, Unknown> {
    let json = match to_json(state) {
        Ok(json) => json,
        Err(NotReady::Unknown) => return Err(Unknown),
        Err(NotReady::Invalid(problems)) => return Ok(problems),
    };
    let raw: RawIssuer = match serde_json::from_value(json) {
        Ok(raw) => raw,
        Err(e) => return Ok(vec![(AttributePath::new("name"), e.to_string())]),
    };
    Ok(issuer_schema::check(&raw)
        .into_iter()
        .map(|p| {
            (
                path_of(p.field),
                format!("{}: {}", attribute_name(p.field), p.error),
            )
        })
        .collect())
}

/// The resource's name for a field of the YAML schema (the key set `jwks` is the JSON
/// string `jwks_json`).
fn attribute_name(field: &str) -> &str {
    if field == "jwks" { "jwks_json" } else { field }
}

pub type IssuerResource = ItemResource<IssuerState>;

impl Item for IssuerState {
    const KIND: Kind = Kind::Issuers;
    const IMPORT_DETAIL: &'static str = "Only issuers made through the admin API can be imported; issuers from the broker's configuration file are not managed by Terraform.";

    const SCHEMA: fn() -> Schema = issuer_schema;
    const PATH_OF: fn(&str) -> AttributePath = path_of;
    const CHECK: fn(&mut Diagnostics, &Self) -> bool = check;

    fn name(&self) -> &Str {
        &self.name
    }
    fn id_mut(&mut self) -> &mut Str {
        &mut self.id
    }
    fn fill_defaults(&mut self) {
        for b in [&mut self.allow_access_tokens, &mut self.danger_allow_insecure] {
            if b.is_null() {
                *b = Value::Value(false);
            }
        }
    }
    fn body(&self) -> Result<Json, NotReady> {
        to_json(self)
    }
    fn from_item(item: &Json) -> Result<Self, ProviderError> {
        Ok(from_json(item))
    }
    fn refresh(prior: &Self, item: &Json) -> Result<Option<Self>, ProviderError> {
        if to_json(prior).is_ok_and(|prior| normalize(&prior) == normalize(item)) {
            return Ok(None);
        }
        let mut fresh = from_json(item);
        // Keep jwks_json as written when it still means the same key set.
        if let (Value::Value(p), Value::Value(f)) = (&prior.jwks_json, &fresh.jwks_json)
            && serde_json::from_str::<Json>(p).ok() == serde_json::from_str::<Json>(f).ok()
        {
            fresh.jwks_json = prior.jwks_json.clone();
        }
        Ok(Some(fresh))
    }
}

pub fn issuer_schema() -> Schema {
    use AttributeConstraint::*;
    let s = AttributeType::String;
    Schema {
        version: 1,
        block: Block {
            version: 1,
            description: Description::markdown(
                "A token issuer the broker trusts, created through its admin API. The fields are the configuration reference's `issuers` entries (README).",
            ),
            attributes: attributes([
                ("id", attribute(s.clone(), Computed, "The issuer's name.")),
                (
                    "name",
                    attribute(
                        s.clone(),
                        Required,
                        "Unique name; rules refer to it. Changing it replaces the issuer.",
                    ),
                ),
                (
                    "issuer",
                    attribute(
                        s.clone(),
                        Optional,
                        "The exact `iss` of its tokens. Optional for kinds with a default (github-actions, gitlab, google, azure-entra).",
                    ),
                ),
                (
                    "kind",
                    attribute(
                        s.clone(),
                        Optional,
                        "generic (default), github-actions, gitlab, kubernetes, eks, gke, aks, azure-entra, google, aws-outbound, spiffe, aws-iam.",
                    ),
                ),
                (
                    "audiences",
                    attribute(
                        string_list_type(),
                        Optional,
                        "Accepted `aud` values (non-empty); required for every kind but aws-iam.",
                    ),
                ),
                (
                    "jwks_uri",
                    attribute(s.clone(), Optional, "Fetch keys here instead of discovery."),
                ),
                (
                    "jwks_json",
                    attribute(
                        s.clone(),
                        Optional,
                        "Static keys, a JWKS document as JSON (`jsonencode({keys = [...]})`): the YAML's `jwks`. No network at all.",
                    ),
                ),
                (
                    "jwks_file",
                    attribute(
                        s.clone(),
                        Optional,
                        "Static keys from a file on the broker's host (relative to its config file).",
                    ),
                ),
                (
                    "algorithms",
                    attribute(
                        string_list_type(),
                        Optional,
                        "Accepted `alg`s; default: the kind's. `none` and HS* are refused.",
                    ),
                ),
                (
                    "replay",
                    attribute(s.clone(), Optional, "`one_time` (default) or `reusable`."),
                ),
                (
                    "max_token_lifetime",
                    attribute(
                        s.clone(),
                        Optional,
                        "Reject tokens whose exp - iat exceeds this (default 24h).",
                    ),
                ),
                (
                    "danger_allow_insecure",
                    attribute(
                        AttributeType::Bool,
                        OptionalComputed,
                        "Allow http:// and loopback/private addresses (development only). Default false.",
                    ),
                ),
                (
                    "tenant",
                    attribute(s.clone(), Optional, "azure-entra: the tenant ID (a GUID)."),
                ),
                (
                    "accounts",
                    attribute(
                        string_list_type(),
                        Optional,
                        "aws-iam: the accepted AWS account IDs (12 digits each).",
                    ),
                ),
                (
                    "server_id",
                    attribute(
                        s.clone(),
                        Optional,
                        "aws-iam: the value the signed request's `x-fedbroker-server-id` header must carry, signed.",
                    ),
                ),
                (
                    "sts_endpoints",
                    attribute(
                        string_list_type(),
                        Optional,
                        "aws-iam: the STS endpoints signed GetCallerIdentity requests are forwarded to (https).",
                    ),
                ),
                (
                    "extra_claims",
                    attribute(
                        string_list_type(),
                        Optional,
                        "Top-level claim names this issuer's tokens carry beyond its kind's documented list (a claims-mapping policy, a credential composer): rules may refer to them without a claim-name warning.",
                    ),
                ),
                (
                    "entra_version",
                    attribute(s.clone(), Optional, "azure-entra: `v2` (default) or `v1`."),
                ),
                (
                    "trust_domain",
                    attribute(s.clone(), Optional, "spiffe: the trust domain."),
                ),
                (
                    "allow_access_tokens",
                    attribute(
                        AttributeType::Bool,
                        OptionalComputed,
                        "Accept `typ: at+jwt` access tokens. Default false.",
                    ),
                ),
                (
                    "tls_ca_file",
                    attribute(
                        s,
                        Optional,
                        "Extra CA certificates (PEM file on the broker's host) for this issuer's fetches.",
                    ),
                ),
            ]),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &str) -> Str {
        Value::Value(v.to_owned())
    }

    fn sample() -> IssuerState {
        IssuerState {
            name: s("gha"),
            kind: s("github-actions"),
            audiences: Value::Value(vec![s("https://broker.example.com")]),
            danger_allow_insecure: Value::Value(false),
            ..Default::default()
        }
    }

    #[test]
    fn round_trips_and_normalizes_the_brokers_spellings() {
        let json = to_json(&sample()).expect("known");
        assert_eq!(
            json,
            json!({"name": "gha", "kind": "github-actions", "audiences": ["https://broker.example.com"]})
        );
        let stored = json!({"name": "gha", "kind": "github-actions", "audiences": "https://broker.example.com",
                            "danger_allow_insecure": "false"});
        assert_eq!(normalize(&stored), json);
        let back = from_json(&stored);
        assert_eq!(normalize(&to_json(&back).expect("known")), json);
        assert_eq!(back.danger_allow_insecure, Value::Value(false));
    }

    #[test]
    fn checks_what_can_be_checked_without_the_broker() {
        let mut diags = Diagnostics::default();
        assert!(check(&mut diags, &sample()), "{:?}", diags.errors);
        let mut bad = sample();
        bad.kind = s("githab");
        bad.audiences = Value::Value(vec![]);
        bad.replay = s("twice");
        bad.max_token_lifetime = s("forever");
        bad.jwks_uri = s("http://keys.example.com/jwks");
        bad.algorithms = Value::Value(vec![s("HS256")]);
        let mut diags = Diagnostics::default();
        assert!(!check(&mut diags, &bad));
        let text = format!("{:?}", diags.errors);
        for field in [
            "kind",
            "audiences",
            "replay",
            "max_token_lifetime",
            "jwks_uri",
            "algorithms",
        ] {
            assert!(text.contains(field), "{field} not reported: {text}");
        }
        // A static key set is checked when it is the key source.
        let mut keys = sample();
        keys.jwks_json = s("{\"keys\": []}");
        let mut diags = Diagnostics::default();
        assert!(!check(&mut diags, &keys));
        let text = format!("{:?}", diags.errors);
        assert!(text.contains("jwks_json: no usable key"), "{text}");
    }

    #[test]
    fn refuses_at_plan_what_the_broker_always_refuses() {
        let mut private = sample();
        private.kind = Value::Null;
        private.issuer = s("https://10.0.0.7/realms/ci");
        let mut diags = Diagnostics::default();
        assert!(!check(&mut diags, &private));
        let text = format!("{:?}", diags.errors);
        assert!(
            text.contains("issuer: names a loopback, private or link-local address"),
            "{text}"
        );
        // Allowed for development: the broker decides at apply (`admin.allow_insecure_issuers`).
        private.danger_allow_insecure = Value::Value(true);
        let mut diags = Diagnostics::default();
        assert!(check(&mut diags, &private), "{:?}", diags.errors);
    }
}
