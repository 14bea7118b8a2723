//! `signing:`: the algorithm and keys the broker signs its tokens with.

use std::path::Path;

use issuers::Algorithm;
use marked_yaml::Node;

use super::error::Errors;
use super::model::SigningConfig;
use super::raw::{RawRotation, RawSigning};
use super::server::duration_field;
use super::yaml::child;
use crate::signing::schedule::Rotation;

/// A signing algorithm fedbroker does not issue with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not supported for signing; use RS256, ES256, PS256 or EdDSA")]
pub struct UnsupportedSigningAlgorithm(pub String);

/// The signing algorithms fedbroker issues with (contract §2).
pub const SIGNING_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::PS256,
    Algorithm::EdDSA,
];

pub fn parse_signing_algorithm(text: &str) -> Result<Algorithm, UnsupportedSigningAlgorithm> {
    match text.parse::<Algorithm>() {
        Ok(a) if SIGNING_ALGORITHMS.contains(&a) => Ok(a),
        _ => Err(UnsupportedSigningAlgorithm(text.to_string())),
    }
}

pub(super) fn build_signing(
    raw: RawSigning,
    node: Option<&Node>,
    base: &Path,
    errors: &mut Errors,
) -> SigningConfig {
    let algorithm = match raw.algorithm.as_deref() {
        None => Algorithm::RS256,
        Some(text) => parse_signing_algorithm(text).unwrap_or_else(|e| {
            errors.at(
                node.and_then(|n| child(n, "algorithm")),
                "signing.algorithm",
                e.to_string(),
            );
            Algorithm::RS256
        }),
    };
    let key_dir = Some(base.join(raw.key_dir.as_deref().unwrap_or("./data/keys")));
    let active_kid = raw.active_kid.filter(|kid| {
        let ok = is_thumbprint_kid(kid);
        if !ok {
            errors.at(
                node.and_then(|n| child(n, "active_kid")),
                "signing.active_kid",
                "must be a kid as `/jwks.json` and `fedbroker keys generate` show it (43 base64url characters)",
            );
        }
        ok
    });
    let rotation = raw.rotation.and_then(|r| {
        let at = |k: &str| {
            node.and_then(|n| child(n, "rotation"))
                .and_then(|n| child(n, k).or(Some(n)))
        };
        build_rotation(r, &at, errors)
    });
    if rotation.is_some() && active_kid.is_some() {
        errors.at(
            node.and_then(|n| child(n, "active_kid")),
            "signing.active_kid",
            "cannot be set with signing.rotation: the schedule chooses the signing key (remove one of the two)",
        );
    }
    SigningConfig {
        algorithm,
        key_dir,
        active_kid,
        rotation,
    }
}

/// The shortest `signing.rotation.every` accepted.
pub const MIN_ROTATION_EVERY: u64 = 10;
/// `signing.rotation.prepublish` when absent.
pub const DEFAULT_PREPUBLISH: u64 = 24 * 3600;

/// `signing.rotation`: `every` required (at least 10s), `prepublish` (default 24h)
/// shorter than `every`. `max_lifetime` is filled in from `server.max_issued_lifetime`.
fn build_rotation<'n>(
    raw: RawRotation,
    at: &dyn Fn(&str) -> Option<&'n Node>,
    errors: &mut Errors,
) -> Option<Rotation> {
    let before = errors.list.len();
    let every = match raw.every.as_deref() {
        None => {
            errors.at(
                at("every"),
                "signing.rotation.every",
                "required: how often a new key signs, e.g. 30d",
            );
            0
        }
        Some(text) => duration_field(Some(text), 0, at("every"), "signing.rotation.every", errors),
    };
    let prepublish = duration_field(
        raw.prepublish.as_deref(),
        DEFAULT_PREPUBLISH,
        at("prepublish"),
        "signing.rotation.prepublish",
        errors,
    );
    if errors.list.len() != before {
        return None;
    }
    if every < MIN_ROTATION_EVERY {
        errors.at(
            at("every"),
            "signing.rotation.every",
            format!("must be at least {MIN_ROTATION_EVERY}s"),
        );
        return None;
    }
    if prepublish >= every {
        errors.at(
            at("prepublish"),
            "signing.rotation.prepublish",
            format!(
                "must be shorter than signing.rotation.every ({prepublish}s is not less than {every}s): a key is \
                 published this long before it signs, within its predecessor's turn"
            ),
        );
        return None;
    }
    Some(Rotation {
        every,
        prepublish,
        max_lifetime: 0,
    })
}

/// A signing key's `kid`: its RFC 7638 SHA-256 thumbprint, base64url without padding.
pub(super) fn is_thumbprint_kid(kid: &str) -> bool {
    kid.len() == 43
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
