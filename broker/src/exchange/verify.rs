//! Verifying a presented token: peek → issuer → keys (cache, one coalesced refetch on
//! an unknown kid) → verify → the issuer kind's checks.

use std::sync::Arc;

use issuers::VerifiedToken;

use super::{SubjectTokenType, TokenError, TokenRole};
use crate::policy::{Issuer, Policy};

/// A token that verified, and the registered issuer that verified it.
pub struct Verified {
    pub issuer: Arc<Issuer>,
    pub token: VerifiedToken,
}

/// Verify the home token (`role`: which parameter carried it) by its type: a JWT through [`verify_token`], a signed AWS
/// request through [`super::aws_iam::verify_aws_request`] (which calls STS, waiting at
/// most `sts_timeout`).
pub(crate) async fn verify_subject(
    policy: &Policy,
    token: &str,
    token_type: SubjectTokenType,
    role: TokenRole,
    now: u64,
    sts_timeout: std::time::Duration,
) -> Result<Verified, TokenError> {
    match token_type {
        SubjectTokenType::Jwt => verify_token(policy, token, role, now).await,
        SubjectTokenType::Aws4Request => {
            super::aws_iam::verify_aws_request(policy, token, now, sts_timeout).await
        }
    }
}

/// Verify `token` (the request's `role` token) against the issuers of `policy` at `now`.
pub(crate) async fn verify_token(
    policy: &Policy,
    token: &str,
    role: TokenRole,
    now: u64,
) -> Result<Verified, TokenError> {
    let peeked = issuers::peek(token).map_err(|e| TokenError::Malformed(role, e))?;
    let iss = peeked.unverified_issuer().ok_or(TokenError::NoIssuer(role))?;
    // An aws-iam issuer's name is no token issuer: it takes signed AWS requests only.
    let issuer = policy
        .issuers
        .get(iss)
        .filter(|i| i.config.kind != issuers::IssuerKind::AwsIam)
        .cloned()
        .ok_or(TokenError::UnknownIssuer(role))?;
    let keys = issuer
        .keys
        .for_request()
        .await
        .ok_or_else(|| TokenError::NoKeys(issuer.config.name.clone()))?;
    let verified = match issuers::verify(&peeked, &issuer.config.policy, &keys, now) {
        Err(e) if e.needs_key_refresh() => {
            let fresh = issuer.keys.refresh(false).await.unwrap_or(keys);
            issuers::verify(&peeked, &issuer.config.policy, &fresh, now)
        }
        other => other,
    };
    let verified = verified.map_err(|e| TokenError::Rejected(role, e))?;
    let c = &issuer.config;
    c.kind
        .check(&verified, &c.kind_params, c.allow_access_tokens)
        .map_err(|source| TokenError::WrongKind {
            role,
            kind: c.kind,
            source,
        })?;
    Ok(Verified {
        issuer,
        token: verified,
    })
}
