//! Verifying a presented token: peek → issuer → keys (cache, one coalesced refetch on
//! an unknown kid) → verify → the issuer kind's checks.

use std::sync::Arc;

use issuers::VerifiedToken;

use super::{TokenError, TokenRole};
use crate::policy::{Issuer, Policy};

/// A token that verified, and the registered issuer that verified it.
pub struct Verified {
    pub issuer: Arc<Issuer>,
    pub token: VerifiedToken,
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
    let issuer = policy
        .issuers
        .get(iss)
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
