//! `signing:`: the algorithm and keys the broker signs its tokens with.

use std::path::Path;

use issuers::Algorithm;
use marked_yaml::Node;

use super::error::Errors;
use super::model::{KmsConfig, KmsProvider, SigningConfig};
use super::raw::{RawKms, RawRotation, RawSigning};
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
    let kms_present = raw.kms.is_some();
    let kms = raw.kms.and_then(|k| {
        let kms_node = node.and_then(|n| child(n, "kms"));
        let at = |key: &str| kms_node.and_then(|n| child(n, key).or(Some(n)));
        build_kms(k, algorithm, &at, errors)
    });
    if kms_present {
        for (set, field) in [
            (raw.key_dir.is_some(), "key_dir"),
            (active_kid.is_some(), "active_kid"),
            (rotation.is_some(), "rotation"),
        ] {
            if set {
                errors.at(
                    node.and_then(|n| child(n, field)),
                    format!("signing.{field}"),
                    "cannot be set with signing.kms: the keys are in the key management service (remove one of the two)",
                );
            }
        }
    }
    SigningConfig {
        algorithm,
        // With signing.kms no key is read from or written to a directory.
        key_dir: if kms.is_some() { None } else { key_dir },
        active_kid,
        rotation,
        kms,
    }
}

/// `signing.kms.timeout` when absent, and its bounds (seconds).
pub const DEFAULT_KMS_TIMEOUT: u64 = 2;
const KMS_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=30;
/// At most this many keys in `signing.kms.keys` (each is read at start).
pub const MAX_KMS_KEYS: usize = 10;

/// `signing.kms`: `provider: aws`, one to ten `keys` (the first signs), optional
/// `region` and `endpoint` (https://, or http:// with `danger_allow_insecure_endpoint`),
/// `timeout` 1s to 30s. RS256, PS256 or ES256 only: AWS KMS has no Ed25519 JWS keys here.
fn build_kms<'n>(
    raw: RawKms,
    algorithm: Algorithm,
    at: &dyn Fn(&str) -> Option<&'n Node>,
    errors: &mut Errors,
) -> Option<KmsConfig> {
    let before = errors.list.len();
    let provider = match raw.provider.as_deref() {
        Some("aws") => KmsProvider::Aws,
        Some(other) => {
            errors.at(
                at("provider"),
                "signing.kms.provider",
                format!(
                    "`{other}` is not supported: use aws (docs/operations.md shows the shape for others)"
                ),
            );
            KmsProvider::Aws
        }
        None => {
            errors.at(at("provider"), "signing.kms.provider", "required: aws");
            KmsProvider::Aws
        }
    };
    if raw.keys.is_empty() || raw.keys.len() > MAX_KMS_KEYS {
        errors.at(
            at("keys"),
            "signing.kms.keys",
            format!(
                "one to {MAX_KMS_KEYS} keys are needed (key IDs, ARNs or alias names): the first signs, all are published"
            ),
        );
    }
    for key in &raw.keys {
        let ok = !key.is_empty()
            && key.len() <= 2048
            && key.bytes().all(|b| b.is_ascii_graphic())
            && raw.keys.iter().filter(|k| *k == key).count() == 1;
        if !ok {
            errors.at(
                at("keys"),
                "signing.kms.keys",
                format!("`{key}` is not a key ID, ARN or alias name, or is listed twice"),
            );
        }
    }
    if let Some(region) = &raw.region {
        let ok = !region.is_empty()
            && region.len() <= 64
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            errors.at(
                at("region"),
                "signing.kms.region",
                format!("`{region}` is not an AWS region name"),
            );
        }
    }
    if let Some(endpoint) = &raw.endpoint {
        match url::Url::parse(endpoint) {
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && raw.danger_allow_insecure_endpoint) => {}
            _ => errors.at(
                at("endpoint"),
                "signing.kms.endpoint",
                format!(
                    "`{endpoint}` must be an https:// URL (http:// only with danger_allow_insecure_endpoint: true)"
                ),
            ),
        }
    }
    let timeout = duration_field(
        raw.timeout.as_deref(),
        DEFAULT_KMS_TIMEOUT,
        at("timeout"),
        "signing.kms.timeout",
        errors,
    );
    if !KMS_TIMEOUT_RANGE.contains(&timeout) {
        errors.at(at("timeout"), "signing.kms.timeout", "must be from 1s to 30s");
    }
    if !matches!(algorithm, Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256) {
        errors.at(
            at("provider"),
            "signing.kms",
            format!(
                "signs RS256, PS256 or ES256, not {} (signing.algorithm)",
                algorithm.as_str()
            ),
        );
    }
    if errors.list.len() != before {
        return None;
    }
    Some(KmsConfig {
        provider,
        keys: raw.keys,
        region: raw.region,
        endpoint: raw.endpoint,
        timeout: std::time::Duration::from_secs(timeout),
    })
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
