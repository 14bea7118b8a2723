//! The provider: its configuration (`endpoint`, `token`, or the environment) and the
//! client it hands to its resources and data sources.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint, AttributeType, Block, Description, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, DynamicDataSource, DynamicResource, Provider};

use crate::client::Client;
use crate::data_sources::{JwksDataSource, OpenIdConfigurationDataSource};
use crate::issuer::IssuerResource;
use crate::rule::RuleResource;
use crate::values::{Str, attribute, attributes};

pub const ENDPOINT_ENV: &str = "FEDBROKER_ENDPOINT";
pub const TOKEN_ENV: &str = "FEDBROKER_ADMIN_TOKEN";

/// What the provider, its resources and its data sources share: the client, once
/// Terraform has configured the provider.
#[derive(Default)]
pub struct Shared {
    client: RwLock<Option<Arc<Client>>>,
}

impl Shared {
    pub fn client(&self, diags: &mut Diagnostics) -> Option<Arc<Client>> {
        let client = self.client.read().ok().and_then(|c| c.clone());
        if client.is_none() {
            diags.root_error(
                "The fedbroker provider is not configured",
                format!("Set `endpoint` in the provider block or {ENDPOINT_ENV} in the environment."),
            );
        }
        client
    }

    /// The client if the provider is configured, without reporting anything.
    pub fn configured(&self) -> Option<Arc<Client>> {
        self.client.read().ok().and_then(|c| c.clone())
    }

    fn set(&self, client: Client) {
        if let Ok(mut slot) = self.client.write() {
            *slot = Some(Arc::new(client));
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProviderConfig {
    pub endpoint: Str,
    pub token: Str,
}

#[derive(Default)]
pub struct FedbrokerProvider {
    shared: Arc<Shared>,
}

/// The configured value, else the environment's; `Err` while unknown.
fn setting(value: &Str, env: &str) -> Result<Option<String>, ()> {
    match value {
        Value::Value(v) => Ok(Some(v.clone())),
        Value::Null => Ok(std::env::var(env).ok().filter(|v| !v.is_empty())),
        Value::Unknown => Err(()),
    }
}

#[async_trait]
impl Provider for FedbrokerProvider {
    type Config<'a> = ProviderConfig;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::*;
        let mut token = attribute(
            AttributeType::String,
            Optional,
            "A bearer token from the broker's `admin.tokens` / `admin.tokens_file`. Default: the environment variable `FEDBROKER_ADMIN_TOKEN`.",
        );
        token.sensitive = true;
        Some(Schema {
            version: 1,
            block: Block {
                version: 1,
                description: Description::markdown(
                    "fedbroker: issuers and trust rules through the broker's admin API, and its public discovery and JWKS documents.",
                ),
                attributes: attributes([
                    (
                        "endpoint",
                        attribute(
                            AttributeType::String,
                            Optional,
                            "Base URL of the broker's admin API: its `server.public_url`, or `http://ADDRESS` of `admin.listen` when that is set. Default: the environment variable `FEDBROKER_ENDPOINT`.",
                        ),
                    ),
                    ("token", token),
                ]),
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::Config<'a>) -> Option<()> {
        if let Value::Value(endpoint) = &config.endpoint
            && let Err(e) = Client::new(endpoint, None)
        {
            diags.error("Invalid endpoint", e.to_string(), AttributePath::new("endpoint"));
        }
        Some(())
    }

    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        _terraform_version: String,
        config: Self::Config<'a>,
    ) -> Option<()> {
        let Ok(endpoint) = setting(&config.endpoint, ENDPOINT_ENV) else {
            diags.error(
                "The broker's endpoint is not known yet",
                "The fedbroker provider needs `endpoint` when Terraform plans; it cannot come from a resource created in the same run.",
                AttributePath::new("endpoint"),
            );
            return Some(());
        };
        let Ok(token) = setting(&config.token, TOKEN_ENV) else {
            diags.error(
                "The admin token is not known yet",
                "The fedbroker provider needs `token` when Terraform plans.",
                AttributePath::new("token"),
            );
            return Some(());
        };
        let Some(endpoint) = endpoint else {
            diags.error(
                "The fedbroker provider needs the broker's endpoint",
                format!("Set `endpoint` in the provider block or {ENDPOINT_ENV} in the environment."),
                AttributePath::new("endpoint"),
            );
            return Some(());
        };
        match Client::new(&endpoint, token) {
            Ok(client) => self.shared.set(client),
            Err(e) => diags.error("Invalid endpoint", e.to_string(), AttributePath::new("endpoint")),
        }
        Some(())
    }

    fn get_resources(&self, _diags: &mut Diagnostics) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        Some(HashMap::from([
            (
                "issuer".to_owned(),
                IssuerResource::new(self.shared.clone()).into(),
            ),
            ("rule".to_owned(), RuleResource::new(self.shared.clone()).into()),
        ]))
    }

    fn get_data_sources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        Some(HashMap::from([
            (
                "openid_configuration".to_owned(),
                OpenIdConfigurationDataSource::new(self.shared.clone()).into(),
            ),
            ("jwks".to_owned(), JwksDataSource::new(self.shared.clone()).into()),
        ]))
    }
}
