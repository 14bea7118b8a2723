//! The raw form of an issuer: what the YAML, the admin API's JSON and the Terraform
//! resource hold before any check.

use serde::{Deserialize, Serialize};

/// One `issuers:` entry as written (contract §2). Unknown fields are refused. The field
/// order is the order the admin API lists a file's issuers in.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub name: String,
    /// Optional when the kind has a default (github-actions, gitlab, google, azure-entra).
    /// For `aws-iam`, a name such as `aws-iam:prod` (not a URL).
    #[serde(default)]
    pub issuer: String,
    pub kind: Option<String>,
    pub tenant: Option<String>,
    pub entra_version: Option<String>,
    pub trust_domain: Option<String>,
    /// `aws-iam`: the accepted AWS account IDs (12 digits each).
    pub accounts: Option<Vec<String>>,
    /// `aws-iam`: what the signed request's `x-fedbroker-server-id` header must say.
    pub server_id: Option<String>,
    /// `aws-iam`: the STS endpoints a signed request may be forwarded to.
    pub sts_endpoints: Option<Vec<String>>,
    #[serde(default)]
    pub allow_access_tokens: bool,
    pub tls_ca_file: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<serde_json::Value>,
    pub jwks_file: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub replay: Option<String>,
    pub max_token_lifetime: Option<String>,
    #[serde(default)]
    pub danger_allow_insecure: bool,
    /// Top-level claim names this issuer's tokens carry beyond its kind's documented list
    /// (an Entra claims-mapping policy, a SPIRE credential composer): the claim-name
    /// checks do not warn about them.
    pub extra_claims: Option<Vec<String>>,
}
