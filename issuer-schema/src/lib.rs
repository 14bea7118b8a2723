//! One definition of a token issuer as people write it — the configuration file's
//! `issuers:` entries, the admin API's `/admin/v1/issuers/NAME` bodies and the Terraform
//! resource `fedbroker_issuer` — and of the checks its text alone decides.
//!
//! - [`raw`]: [`RawIssuer`], the serde form (field names as the contract gives them);
//! - [`checks`]: each check as a named step ([`check_fetch_url`], [`issuer_url`],
//!   [`algorithms`], …) and [`check`], all of them in the broker's order; the broker's
//!   config adds its file reads between these steps, the provider runs [`check`] at plan
//!   time;
//! - [`claims`]: rules against their issuers' kinds: warnings about claims a kind's
//!   tokens never carry ([`unknown_claims`]), for `check`, reloads and the admin API;
//! - [`host_access`]: what an issuer made through the admin API may not do without the
//!   configuration file's opt-ins;
//! - [`address`]: which IP addresses are public (fetches to others are refused);
//! - [`schema`]: the issuer's JSON Schema, for the admin API's OpenAPI document.
//!
//! Pure: no I/O, no clock, no environment (see `clippy.toml`).

#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic, clippy::unwrap_used))]

pub mod address;
pub mod checks;
pub mod claims;
pub mod host_access;
pub mod raw;
pub mod schema;

pub use address::is_public;
pub use checks::{
    IssuerError, Problem, ReplayMode, algorithms, audiences, aws_iam, check, check_fetch_url, extra_claims,
    issuer_url, kind, kind_config, kind_params, max_token_lifetime, name, one_key_source, replay,
    static_jwks, sts_endpoint_key,
};
pub use claims::{IssuerClaims, claim_check, claim_check_with, unknown_claims, unknown_claims_with};
pub use host_access::{HostAccess, refuse_host_access};
pub use raw::RawIssuer;
pub use schema::{FIELDS, FieldType, IssuerField, json_schema};

/// `max_token_lifetime` when an issuer does not set it: one day.
pub const DEFAULT_MAX_TOKEN_LIFETIME: u64 = 24 * 3600;
