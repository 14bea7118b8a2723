//! `signing:`: the algorithm and keys the broker signs its tokens with.

use std::path::Path;

use issuers::Algorithm;
use marked_yaml::Node;

use super::error::Errors;
use super::model::SigningConfig;
use super::raw::RawSigning;
use super::yaml::child;

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
    SigningConfig {
        algorithm,
        key_dir,
        active_kid,
    }
}

/// A signing key's `kid`: its RFC 7638 SHA-256 thumbprint, base64url without padding.
pub(super) fn is_thumbprint_kid(kid: &str) -> bool {
    kid.len() == 43
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
