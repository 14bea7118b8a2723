//! `fedbroker_issuer`: one trusted token issuer, with the YAML's field names. The static
//! key set `jwks` is JSON, so it is the string attribute `jwks_json`.

use std::sync::Arc;

use async_trait::async_trait;
use issuers::{Algorithm, IssuerKind, KeySet, KindParams};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use tf_provider::schema::{AttributeConstraint, AttributeType, Block, Description, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::client::{Kind, Precondition, report};
use crate::provider::Shared;
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
];
const LIST_FIELDS: &[&str] = &["audiences", "algorithms"];
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
            _ => &mut self.name,
        }
    }
    fn list(&self, field: &str) -> &StrList {
        if field == "algorithms" {
            &self.algorithms
        } else {
            &self.audiences
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
/// `Err(Ok(problems))`: invalid; `Err(Err(Unknown))`: not known yet.
pub fn to_json(state: &IssuerState) -> Result<Json, Result<Vec<(AttributePath, String)>, Unknown>> {
    let mut problems = Vec::new();
    let mut out = Map::new();
    out.insert(
        "name".into(),
        Json::String(known(&state.name).map_err(Err)?.unwrap_or_default()),
    );
    for field in STRING_FIELDS {
        if let Some(v) = known(state.string(field)).map_err(Err)? {
            out.insert((*field).into(), Json::String(v));
        }
    }
    for field in LIST_FIELDS {
        if let Some(v) = string_list(state.list(field)).map_err(Err)? {
            out.insert((*field).into(), v.into_iter().map(Json::String).collect());
        }
    }
    for field in BOOL_FIELDS {
        if known(state.boolean(field)).map_err(Err)? == Some(true) {
            out.insert((*field).into(), Json::Bool(true));
        }
    }
    if let Some(text) = known(&state.jwks_json).map_err(Err)? {
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
        Err(Ok(problems))
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
    state.allow_access_tokens = Value::Value(item.get("allow_access_tokens") == Some(&Json::Bool(true)));
    state.danger_allow_insecure = Value::Value(item.get("danger_allow_insecure") == Some(&Json::Bool(true)));
    state.jwks_json = match item.get("jwks") {
        Some(j) if !j.is_null() => Value::Value(jsonencode(j)),
        _ => Value::Null,
    };
    state
}

/// What can be checked without the broker: kinds and their parameters, audiences, one key
/// source, a usable static key set, algorithms, replay, durations, https. Returns
/// `false` when it reported errors.
pub fn check(diags: &mut Diagnostics, state: &IssuerState) -> bool {
    let json = match to_json(state) {
        Ok(json) => json,
        Err(Err(Unknown)) => return true,
        Err(Ok(problems)) => {
            for (path, message) in problems {
                diags.error("Invalid fedbroker issuer", message, path);
            }
            return false;
        }
    };
    let mut problems: Vec<(&str, String)> = Vec::new();
    let text = |k: &str| json.get(k).and_then(Json::as_str).map(str::to_owned);
    if text("name").unwrap_or_default().is_empty() {
        problems.push(("name", "must not be empty".into()));
    }
    let kind = match text("kind").map(|k| k.parse::<IssuerKind>()) {
        None => Some(IssuerKind::Generic),
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            problems.push(("kind", e.to_string()));
            None
        }
    };
    let params = KindParams {
        tenant: text("tenant"),
        entra_version: text("entra_version"),
        trust_domain: text("trust_domain"),
    };
    let insecure = json.get("danger_allow_insecure") == Some(&Json::Bool(true));
    let issuer = match (text("issuer"), kind) {
        (Some(issuer), _) => Some(issuer),
        (None, None) => None,
        (None, Some(kind)) => match kind.default_issuer(&params) {
            Ok(Some(default)) => Some(default),
            Ok(None) => {
                problems.push(("issuer", format!("required for kind {kind}")));
                None
            }
            Err(e) => {
                problems.push(("issuer", e.to_string()));
                None
            }
        },
    };
    if let Some(issuer) = &issuer {
        if let Some(kind) = kind
            && let Err(e) = kind.check_config(issuer, &params)
        {
            problems.push(("kind", e.to_string()));
        }
        if let Some(why) = url_problem(issuer, insecure) {
            problems.push(("issuer", why));
        }
    }
    let audiences = json
        .get("audiences")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    if audiences.is_empty() || audiences.iter().any(|a| a.as_str().is_none_or(str::is_empty)) {
        problems.push((
            "audiences",
            "required: a non-empty list of accepted `aud` values".into(),
        ));
    }
    let sources: Vec<&str> = ["jwks_uri", "jwks", "jwks_file"]
        .into_iter()
        .filter(|k| json.get(*k).is_some())
        .collect();
    if sources.len() > 1 {
        problems.push((
            sources[1],
            "give at most one of jwks_uri, jwks_json and jwks_file".into(),
        ));
    }
    if let Some(uri) = text("jwks_uri")
        && let Some(why) = url_problem(&uri, insecure)
    {
        problems.push(("jwks_uri", why));
    }
    if let Some(jwks) = json.get("jwks") {
        match KeySet::from_jwks_value(jwks) {
            Ok(set) if set.is_empty() => problems.push(("jwks", "no usable key in this key set".into())),
            Ok(_) => {}
            Err(e) => problems.push(("jwks", format!("invalid key set: {e}"))),
        }
    }
    if let Some(algs) = json.get("algorithms").and_then(Json::as_array) {
        if algs.is_empty() {
            problems.push(("algorithms", "must list at least one algorithm".into()));
        }
        for a in algs.iter().filter_map(Json::as_str) {
            if let Err(e) = a.parse::<Algorithm>() {
                problems.push(("algorithms", e.to_string()));
            }
        }
    }
    if let Some(replay) = text("replay")
        && replay != "one_time"
        && replay != "reusable"
    {
        problems.push((
            "replay",
            format!("unknown value `{replay}`; expected one_time or reusable"),
        ));
    }
    if let Some(d) = text("max_token_lifetime")
        && let Err(e) = federation_rules::parse_duration(&d)
    {
        problems.push(("max_token_lifetime", e.to_string()));
    }
    for (field, message) in &problems {
        diags.error(
            "Invalid fedbroker issuer",
            format!("{field}: {message}"),
            path_of(field),
        );
    }
    problems.is_empty()
}

/// The broker fetches keys over https only, unless `danger_allow_insecure`.
fn url_problem(url: &str, insecure: bool) -> Option<String> {
    match reqwest::Url::parse(url) {
        Err(e) => Some(format!("`{url}` is not a URL: {e}")),
        Ok(u) if u.scheme() == "https" => None,
        Ok(u) if u.scheme() == "http" && insecure => None,
        Ok(u) if u.scheme() == "http" => Some(format!(
            "`{url}` is not https (set danger_allow_insecure = true for development only)"
        )),
        Ok(u) => Some(format!("`{url}`: scheme {} is not https", u.scheme())),
    }
}

fn fill_computed(state: &mut IssuerState) {
    state.id = match &state.name {
        Value::Value(n) => Value::Value(n.clone()),
        _ => Value::Unknown,
    };
    for b in [&mut state.allow_access_tokens, &mut state.danger_allow_insecure] {
        if b.is_null() {
            *b = Value::Value(false);
        }
    }
}

pub struct IssuerResource {
    pub shared: Arc<Shared>,
}

fn name_of(diags: &mut Diagnostics, state: &IssuerState) -> Option<String> {
    match &state.name {
        Value::Value(n) => Some(n.clone()),
        _ => {
            diags.error_short("the issuer's name is not known", AttributePath::new("name"));
            None
        }
    }
}

fn body_of(diags: &mut Diagnostics, state: &IssuerState) -> Option<Json> {
    match to_json(state) {
        Ok(json) => Some(json),
        Err(Err(Unknown)) => {
            diags.root_error_short("the issuer still has unknown values at apply time");
            None
        }
        Err(Ok(problems)) => {
            for (path, message) in problems {
                diags.error("Invalid fedbroker issuer", message, path);
            }
            None
        }
    }
}

#[async_trait]
impl Resource for IssuerResource {
    type State<'a> = IssuerState;
    type PrivateState<'a> = PrivateState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(issuer_schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        check(diags, &config);
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // `None` would tell Terraform the item is gone: never say so without asking.
        let Some(client) = self.shared.client(diags) else {
            return Some((state, private_state));
        };
        let Some(name) = name_of(diags, &state) else {
            return Some((state, private_state));
        };
        let item = match client.get(Kind::Issuers, &name).await {
            Ok(Some(item)) => item,
            Ok(None) => return None,
            Err(e) => {
                report(diags, &client, Kind::Issuers, &name, "reading", e, &path_of);
                return Some((state, private_state));
            }
        };
        let private = private_with(item.etag);
        if to_json(&state).is_ok_and(|prior| normalize(&prior) == normalize(&item.value)) {
            return Some((state, private));
        }
        let mut fresh = from_json(&item.value);
        // Keep jwks_json as written when it still means the same key set.
        if let (Value::Value(p), Value::Value(f)) = (&state.jwks_json, &fresh.jwks_json)
            && serde_json::from_str::<Json>(p).ok() == serde_json::from_str::<Json>(f).ok()
        {
            fresh.jwks_json = state.jwks_json.clone();
        }
        Some((fresh, private))
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut planned = proposed_state;
        fill_computed(&mut planned);
        check(diags, &planned);
        Some((planned, Value::Null))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        proposed_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let mut planned = proposed_state;
        let mut replace = Vec::new();
        if planned.name != prior_state.name {
            replace.push(AttributePath::new("name"));
        }
        fill_computed(&mut planned);
        check(diags, &planned);
        Some((planned, prior_private_state, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(prior_private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.shared.client(diags)?;
        let name = name_of(diags, &planned_state)?;
        let body = body_of(diags, &planned_state)?;
        match client
            .put(Kind::Issuers, &name, &body, &Precondition::Absent)
            .await
        {
            Ok(item) => Some((planned_state, private_with(item.etag))),
            Err(e) => {
                report(diags, &client, Kind::Issuers, &name, "creating", e, &path_of);
                None
            }
        }
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        _prior_state: Self::State<'a>,
        planned_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.shared.client(diags)?;
        let name = name_of(diags, &planned_state)?;
        let body = body_of(diags, &planned_state)?;
        let precondition = etag_of(&planned_private_state).map_or(Precondition::None, Precondition::Matches);
        match client.put(Kind::Issuers, &name, &body, &precondition).await {
            Ok(item) => Some((planned_state, private_with(item.etag))),
            Err(e) => {
                report(diags, &client, Kind::Issuers, &name, "updating", e, &path_of);
                None
            }
        }
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        _planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let client = self.shared.client(diags)?;
        let name = name_of(diags, &prior_state)?;
        match client.delete(Kind::Issuers, &name).await {
            Ok(_) => Some(()),
            Err(e) => {
                report(diags, &client, Kind::Issuers, &name, "deleting", e, &path_of);
                None
            }
        }
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let client = self.shared.client(diags)?;
        match client.get(Kind::Issuers, &id).await {
            Ok(Some(item)) => Some((from_json(&item.value), private_with(item.etag))),
            Ok(None) => {
                diags.root_error(
                    format!("importing issuer `{id}`: the broker has no such issuer"),
                    "Only issuers made through the admin API can be imported; issuers from the broker's configuration file are not managed by Terraform.",
                );
                None
            }
            Err(e) => {
                report(diags, &client, Kind::Issuers, &id, "importing", e, &path_of);
                None
            }
        }
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
                        "generic (default), github-actions, gitlab, kubernetes, eks, gke, aks, azure-entra, google, aws-outbound, spiffe.",
                    ),
                ),
                (
                    "audiences",
                    attribute(string_list_type(), Required, "Accepted `aud` values (non-empty)."),
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
        bad.jwks_json = s("{\"keys\": []}");
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
            "jwks_json",
            "algorithms",
        ] {
            assert!(text.contains(field), "{field} not reported: {text}");
        }
    }
}
