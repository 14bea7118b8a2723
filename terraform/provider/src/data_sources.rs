//! `fedbroker_openid_configuration` and `fedbroker_jwks`: the broker's public documents
//! (`/.well-known/openid-configuration`, `/jwks.json`), fetched without the admin token.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tf_provider::schema::{AttributeConstraint, AttributeType, Block, Description, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, DataSource, Diagnostics};

use crate::client::{ApiError, Client};
use crate::provider::Shared;
use crate::values::*;

/// The base URL a data source reads under: its `url`, else the provider's endpoint.
fn base(diags: &mut Diagnostics, client: &Client, url: &Str) -> Option<(reqwest::Url, String)> {
    match url {
        Value::Value(u) => match reqwest::Url::parse(u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some((parsed, u.clone())),
            _ => {
                diags.error(
                    "Invalid url",
                    format!("`{u}` is not an http(s) URL"),
                    AttributePath::new("url"),
                );
                None
            }
        },
        _ => Some((
            client.endpoint().clone(),
            client.endpoint().as_str().trim_end_matches('/').to_owned(),
        )),
    }
}

fn fetch_error(diags: &mut Diagnostics, what: &str, e: ApiError) {
    match e {
        ApiError::Transport(t) => diags.root_error(format!("fetching {what}"), t),
        ApiError::Status {
            status, description, ..
        } => diags.root_error(
            format!("fetching {what}: the broker answered {status}"),
            description,
        ),
    }
}

fn strings(doc: &Json, key: &str) -> StrList {
    match doc.get(key).and_then(Json::as_array) {
        Some(items) => Value::Value(
            items
                .iter()
                .map(|v| match v {
                    Json::String(s) => Value::Value(s.clone()),
                    Json::Null => Value::Null,
                    other => Value::Value(other.to_string()),
                })
                .collect(),
        ),
        None => Value::Null,
    }
}

fn text(doc: &Json, key: &str) -> Str {
    str_value(doc.get(key).and_then(Json::as_str).map(str::to_owned))
}

fn url_attribute(what: &str) -> (&'static str, tf_provider::schema::Attribute) {
    (
        "url",
        attribute(
            AttributeType::String,
            AttributeConstraint::OptionalComputed,
            &format!(
                "The broker's public URL (`server.public_url`), under which {what} is served. Default: the provider's `endpoint`."
            ),
        ),
    )
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OpenIdConfigurationState {
    pub url: Str,
    pub issuer: Str,
    pub jwks_uri: Str,
    pub token_endpoint: Str,
    pub grant_types_supported: StrList,
    pub response_types_supported: StrList,
    pub subject_types_supported: StrList,
    pub id_token_signing_alg_values_supported: StrList,
    pub token_endpoint_auth_methods_supported: StrList,
    pub claims_supported: StrList,
    pub json: Str,
}

pub struct OpenIdConfigurationDataSource {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl DataSource for OpenIdConfigurationDataSource {
    type State<'a> = OpenIdConfigurationState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::Computed;
        let s = AttributeType::String;
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                description: Description::markdown(
                    "The broker's OpenID Provider metadata (`GET {url}/.well-known/openid-configuration`): what a cloud's OIDC trust is set up from.",
                ),
                attributes: attributes([
                    url_attribute("the discovery document"),
                    (
                        "issuer",
                        attribute(
                            s.clone(),
                            Computed,
                            "`iss` of issued tokens: the URL a cloud trusts.",
                        ),
                    ),
                    (
                        "jwks_uri",
                        attribute(s.clone(), Computed, "Where the signing keys are published."),
                    ),
                    (
                        "token_endpoint",
                        attribute(s.clone(), Computed, "The RFC 8693 token endpoint."),
                    ),
                    (
                        "grant_types_supported",
                        attribute(string_list_type(), Computed, ""),
                    ),
                    (
                        "response_types_supported",
                        attribute(string_list_type(), Computed, ""),
                    ),
                    (
                        "subject_types_supported",
                        attribute(string_list_type(), Computed, ""),
                    ),
                    (
                        "id_token_signing_alg_values_supported",
                        attribute(
                            string_list_type(),
                            Computed,
                            "The algorithms issued tokens are signed with.",
                        ),
                    ),
                    (
                        "token_endpoint_auth_methods_supported",
                        attribute(string_list_type(), Computed, ""),
                    ),
                    ("claims_supported", attribute(string_list_type(), Computed, "")),
                    (
                        "json",
                        attribute(s, Computed, "The whole document, as JSON text."),
                    ),
                ]),
                ..Default::default()
            },
        })
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let client = self.shared.client(diags)?;
        let (base, url) = base(diags, &client, &config.url)?;
        let doc = match client
            .get_public(&base, &[".well-known", "openid-configuration"])
            .await
        {
            Ok((_, doc)) => doc,
            Err(e) => {
                fetch_error(diags, "the broker's openid-configuration", e);
                return None;
            }
        };
        Some(OpenIdConfigurationState {
            url: Value::Value(url),
            issuer: text(&doc, "issuer"),
            jwks_uri: text(&doc, "jwks_uri"),
            token_endpoint: text(&doc, "token_endpoint"),
            grant_types_supported: strings(&doc, "grant_types_supported"),
            response_types_supported: strings(&doc, "response_types_supported"),
            subject_types_supported: strings(&doc, "subject_types_supported"),
            id_token_signing_alg_values_supported: strings(&doc, "id_token_signing_alg_values_supported"),
            token_endpoint_auth_methods_supported: strings(&doc, "token_endpoint_auth_methods_supported"),
            claims_supported: strings(&doc, "claims_supported"),
            json: Value::Value(jsonencode(&doc)),
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JwkState {
    pub kid: Str,
    pub kty: Str,
    pub alg: Str,
    #[serde(rename = "use")]
    pub use_: Str,
    pub crv: Str,
    pub n: Str,
    pub e: Str,
    pub x: Str,
    pub y: Str,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JwksState {
    pub url: Str,
    pub json: Str,
    pub key_ids: StrList,
    pub keys: Value<Vec<Value<JwkState>>>,
}

pub struct JwksDataSource {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl DataSource for JwksDataSource {
    type State<'a> = JwksState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::Computed;
        let s = AttributeType::String;
        // A list of objects (not nested attributes: tf-provider 0.2 sends those with a
        // `type` as well, which Terraform refuses).
        let key = AttributeType::Object(
            ["kid", "kty", "alg", "use", "crv", "n", "e", "x", "y"]
                .into_iter()
                .map(|k| (k.to_owned(), AttributeType::String))
                .collect(),
        );
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                description: Description::markdown(
                    "The broker's public signing keys (`GET {url}/jwks.json`).",
                ),
                attributes: attributes([
                    url_attribute("the key set"),
                    ("json", attribute(s, Computed, "The JWKS document, as JSON text.")),
                    (
                        "key_ids",
                        attribute(string_list_type(), Computed, "The `kid` of every key."),
                    ),
                    (
                        "keys",
                        attribute(
                            AttributeType::List(Box::new(key)),
                            Computed,
                            "The public keys: `kid`, `kty`, `alg`, `use`, `crv`, `n`, `e`, `x`, `y` (null where a key has none).",
                        ),
                    ),
                ]),
                ..Default::default()
            },
        })
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let client = self.shared.client(diags)?;
        let (base, url) = base(diags, &client, &config.url)?;
        let doc = match client.get_public(&base, &["jwks.json"]).await {
            Ok((_, doc)) => doc,
            Err(e) => {
                fetch_error(diags, "the broker's jwks.json", e);
                return None;
            }
        };
        let keys: Vec<Json> = doc
            .get("keys")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        let key_ids = keys
            .iter()
            .filter_map(|k| k.get("kid").and_then(Json::as_str).map(str::to_owned))
            .collect::<Vec<_>>();
        Some(JwksState {
            url: Value::Value(url),
            json: Value::Value(jsonencode(&doc)),
            key_ids: Value::Value(key_ids.into_iter().map(Value::Value).collect()),
            keys: Value::Value(
                keys.iter()
                    .map(|k| {
                        Value::Value(JwkState {
                            kid: text(k, "kid"),
                            kty: text(k, "kty"),
                            alg: text(k, "alg"),
                            use_: text(k, "use"),
                            crv: text(k, "crv"),
                            n: text(k, "n"),
                            e: text(k, "e"),
                            x: text(k, "x"),
                            y: text(k, "y"),
                        })
                    })
                    .collect(),
            ),
        })
    }
}
