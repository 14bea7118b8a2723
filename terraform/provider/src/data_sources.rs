//! `fedbroker_openid_configuration` and `fedbroker_jwks`: the broker's public documents
//! (`/.well-known/openid-configuration`, `/jwks.json`), fetched without the admin token.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
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

/// A public document of the broker, and the state of the data source that reads it.
pub trait Document: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Where it is served, under the broker's URL.
    const PATH: &'static [&'static str];
    /// What it is, in errors: "the broker's jwks.json".
    const WHAT: &'static str;
    /// The data source's schema.
    const SCHEMA: fn() -> Schema;

    /// The `url` attribute: the broker's URL, if the configuration sets one.
    fn url(&self) -> &Str;
    /// The state for the document `doc` read under `url`.
    fn from_document(url: String, doc: &Json) -> Self;
}

/// The data source that reads the document `T`.
pub struct DocumentDataSource<T> {
    shared: Arc<Shared>,
    document: PhantomData<fn() -> T>,
}

impl<T> DocumentDataSource<T> {
    pub fn new(shared: Arc<Shared>) -> Self {
        DocumentDataSource {
            shared,
            document: PhantomData,
        }
    }
}

#[async_trait]
impl<T: Document> DataSource for DocumentDataSource<T> {
    type State<'a> = T;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some((T::SCHEMA)())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let client = self.shared.client(diags)?;
        let (base, url) = base(diags, &client, config.url())?;
        match client.get_public(&base, T::PATH).await {
            Ok((_, doc)) => Some(T::from_document(url, &doc)),
            Err(ApiError::Transport(t)) => {
                diags.root_error(format!("fetching {}", T::WHAT), t);
                None
            }
            Err(ApiError::Status {
                status, description, ..
            }) => {
                diags.root_error(
                    format!("fetching {}: the broker answered {status}", T::WHAT),
                    description,
                );
                None
            }
        }
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

pub type OpenIdConfigurationDataSource = DocumentDataSource<OpenIdConfigurationState>;

impl Document for OpenIdConfigurationState {
    const PATH: &'static [&'static str] = &[".well-known", "openid-configuration"];
    const WHAT: &'static str = "the broker's openid-configuration";
    const SCHEMA: fn() -> Schema = openid_configuration_schema;

    fn url(&self) -> &Str {
        &self.url
    }

    fn from_document(url: String, doc: &Json) -> Self {
        OpenIdConfigurationState {
            url: Value::Value(url),
            issuer: text(doc, "issuer"),
            jwks_uri: text(doc, "jwks_uri"),
            token_endpoint: text(doc, "token_endpoint"),
            grant_types_supported: strings(doc, "grant_types_supported"),
            response_types_supported: strings(doc, "response_types_supported"),
            subject_types_supported: strings(doc, "subject_types_supported"),
            id_token_signing_alg_values_supported: strings(doc, "id_token_signing_alg_values_supported"),
            token_endpoint_auth_methods_supported: strings(doc, "token_endpoint_auth_methods_supported"),
            claims_supported: strings(doc, "claims_supported"),
            json: Value::Value(jsonencode(doc)),
        }
    }
}

fn openid_configuration_schema() -> Schema {
    use AttributeConstraint::Computed;
    let s = AttributeType::String;
    let string_attributes = [
        ("issuer", "`iss` of issued tokens: the URL a cloud trusts."),
        ("jwks_uri", "Where the signing keys are published."),
        ("token_endpoint", "The RFC 8693 token endpoint."),
        ("json", "The whole document, as JSON text."),
    ];
    let list_attributes = [
        ("grant_types_supported", ""),
        ("response_types_supported", ""),
        ("subject_types_supported", ""),
        (
            "id_token_signing_alg_values_supported",
            "The algorithms issued tokens are signed with.",
        ),
        ("token_endpoint_auth_methods_supported", ""),
        ("claims_supported", ""),
    ];
    Schema {
        version: 1,
        block: Block {
            version: 1,
            description: Description::markdown(
                "The broker's OpenID Provider metadata (`GET {url}/.well-known/openid-configuration`): what a cloud's OIDC trust is set up from.",
            ),
            attributes: [url_attribute("the discovery document")]
                .into_iter()
                .chain(string_attributes.map(|(name, doc)| (name, attribute(s.clone(), Computed, doc))))
                .chain(
                    list_attributes.map(|(name, doc)| (name, attribute(string_list_type(), Computed, doc))),
                )
                .map(|(name, attribute)| (name.to_owned(), attribute))
                .collect(),
            ..Default::default()
        },
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

pub type JwksDataSource = DocumentDataSource<JwksState>;

impl Document for JwksState {
    const PATH: &'static [&'static str] = &["jwks.json"];
    const WHAT: &'static str = "the broker's jwks.json";
    const SCHEMA: fn() -> Schema = jwks_schema;

    fn url(&self) -> &Str {
        &self.url
    }

    fn from_document(url: String, doc: &Json) -> Self {
        let keys: Vec<Json> = doc
            .get("keys")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        let key_ids = keys
            .iter()
            .filter_map(|k| k.get("kid").and_then(Json::as_str).map(str::to_owned))
            .collect::<Vec<_>>();
        JwksState {
            url: Value::Value(url),
            json: Value::Value(jsonencode(doc)),
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
        }
    }
}

fn jwks_schema() -> Schema {
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
    Schema {
        version: 1,
        block: Block {
            version: 1,
            description: Description::markdown("The broker's public signing keys (`GET {url}/jwks.json`)."),
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
    }
}
