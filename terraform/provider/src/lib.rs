//! The Terraform provider for fedbroker (`fedbroker/fedbroker`).
//!
//! - resources `fedbroker_issuer` ([`issuer`]) and `fedbroker_rule` ([`rule`]), managed
//!   through the broker's admin API (`/admin/v1/...`), checked at plan time with the
//!   broker's own rule compiler;
//! - data sources `fedbroker_openid_configuration` and `fedbroker_jwks`
//!   ([`data_sources`]), the broker's public documents.
//!
//! Built on the `tf-provider` crate (Terraform plugin protocol 6).

pub mod client;
pub mod data_sources;
pub mod error;
pub mod issuer;
pub mod item;
pub mod provider;
pub mod rule;
pub mod values;

pub use error::ProviderError;
pub use provider::FedbrokerProvider;
