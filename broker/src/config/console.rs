//! `console:` (contract §13): the web console, served with the admin API (on
//! `admin.listen` when set, else on the main listener) and only when `admin:` is
//! configured, since its login takes an admin token.

use marked_yaml::Node;
use serde::Deserialize;

use super::admin::AdminConfig;
use super::error::Errors;
use super::yaml::child;

/// A session lasts this long unless `console.session_lifetime` says otherwise (seconds).
pub const DEFAULT_SESSION_LIFETIME: u64 = 8 * 3600;
pub const MIN_SESSION_LIFETIME: u64 = 60;
pub const MAX_SESSION_LIFETIME: u64 = 24 * 3600;

/// `console:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    pub(super) enabled: Option<bool>,
    pub(super) session_lifetime: Option<u64>,
}

/// The console, when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Seconds a login lasts (the session cookie's `Max-Age` and its signed expiry).
    pub session_lifetime: u64,
}

pub(super) fn build_console(
    raw: Option<RawConsole>,
    node: Option<&Node>,
    admin: Option<&AdminConfig>,
    errors: &mut Errors,
) -> Option<ConsoleConfig> {
    let raw = raw?;
    let at = |k: &str| node.and_then(|n| child(n, k));
    let lifetime = raw.session_lifetime.unwrap_or(DEFAULT_SESSION_LIFETIME);
    if !(MIN_SESSION_LIFETIME..=MAX_SESSION_LIFETIME).contains(&lifetime) {
        errors.at(
            at("session_lifetime"),
            "console.session_lifetime",
            format!("must be {MIN_SESSION_LIFETIME} to {MAX_SESSION_LIFETIME} seconds"),
        );
    }
    if raw.enabled != Some(true) {
        return None;
    }
    if admin.is_none() {
        errors.at(
            at("enabled"),
            "console.enabled",
            "the console needs `admin:` (its login takes an admin token)",
        );
        return None;
    }
    Some(ConsoleConfig {
        session_lifetime: lifetime,
    })
}
