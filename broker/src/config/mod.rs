//! The configuration file (contract §2): YAML, `version: 1`, unknown keys rejected,
//! `${ENV}` substitution, rule files by glob, every error with file, line and field.
//!
//! [`load`] does the file I/O ([`load`](load.rs)); everything it reads goes through the
//! pure parse ([`parse_config`], [`assemble`]), one file per section:
//!
//! - `model`: the validated values ([`Config`] and its sections);
//! - `raw`: the sections as serde reads them (an issuer's raw form is
//!   [`issuer_schema::RawIssuer`], shared with the admin API and the Terraform provider);
//! - `yaml`: YAML parsing, duplicate keys, lines and field paths; `error`: how problems
//!   are collected and shown; `env`: `${NAME}` substitution;
//! - `server`, `signing`, `replay`, `issuers`, `rules`, `admin`, `telemetry`: one builder
//!   per section;
//! - `parse`: the file's text into a [`Draft`], a draft and its rules into a [`Config`];
//! - `test_cases`: rule test files (`*.test.yaml`), which rule-file globs skip.

mod admin;
mod console;
mod env;
mod error;
mod issuers;
mod load;
mod model;
mod parse;
mod raw;
mod replay;
mod rules;
mod server;
mod signing;
mod telemetry;
mod test_cases;
mod yaml;

#[cfg(test)]
mod tests;

pub use admin::{
    AdminConfig, AdminState, AdminStateError, FileItems, MIN_ADMIN_TOKEN_CHARS, MIN_STATE_HMAC_KEY_CHARS,
    NAME_CLASH, admin_source, is_name_clash,
};
pub use console::ConsoleConfig;
pub use env::{UnsetVariable, expand_env};
pub use error::{ConfigError, ConfigErrors};
pub use issuer_schema::{IssuerError, check_fetch_url};
pub use issuers::{IssuerFileError, ReadFile};
pub use load::{load, load_with_admin, test_files_beside_rules, test_files_in};
pub use model::*;
pub use parse::{Draft, RuleErrors, RuleOrigin, SourcedRule, assemble, from_parts, parse_config};
pub use raw::RawIssuer;
pub use replay::{MillisError, RedisUrlError};
pub use rules::{parse_rules_file, parse_rules_file_whole};
pub use server::PublicUrlError;
pub use signing::{SIGNING_ALGORITHMS, UnsupportedSigningAlgorithm, parse_signing_algorithm};
pub use telemetry::{
    DEFAULT_SERVICE_NAME, DEFAULT_TRACES_TIMEOUT, TRACES_ENDPOINT_ENV, TelemetryConfig, TracesConfig,
    check_endpoint, traces_from_env,
};
pub use test_cases::{Expect, TEST_FILE_SUFFIX, TestActor, TestCase, is_test_file, parse_test_file};
