//! Why a token request is refused: one variant per reason. The `Display` text is the
//! full reason, for the audit log; what the client is told (status, RFC error code, a
//! fixed description) is mapped in one place, [`crate::error`].

use federation_rules::{Cloud, DenialKind};
use issuers::{IssuerKind, KindError, PeekError, VerifyError};

use super::{
    GRANT_TYPE, GRANT_TYPE_CLIENT_CREDENTIALS, GRANT_TYPE_JWT_BEARER, MAX_TARGET_BYTES, MAX_TARGET_VALUES,
};
use crate::credentials::CloudError;
use crate::replay::ReplayError;
use crate::signing::SigningError;

/// Which token of the request a verification error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRole {
    Subject,
    Actor,
    /// The home token of the RFC 7523 `jwt-bearer` grant: refused as `invalid_grant`.
    Assertion,
    /// The home token as RFC 7523 client authentication: refused as `invalid_client`.
    ClientAssertion,
}

impl TokenRole {
    /// The form parameter that carried the token.
    pub fn parameter(self) -> &'static str {
        match self {
            TokenRole::Subject => "subject_token",
            TokenRole::Actor => "actor_token",
            TokenRole::Assertion => "assertion",
            TokenRole::ClientAssertion => "client_assertion",
        }
    }
}

impl std::fmt::Display for TokenRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.parameter())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("use POST")]
    MethodNotAllowed,
    #[error("the request body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// The listener's read timeout ran out while the body was read.
    #[error("{0}")]
    BodyTimeout(String),
    #[error("Content-Type must be application/x-www-form-urlencoded")]
    NotForm,
    #[error("parameter `{0}` must not be repeated")]
    Repeated(&'static str),
    #[error("missing parameter `{0}`")]
    Missing(&'static str),
    #[error("grant_type must be {GRANT_TYPE}, {GRANT_TYPE_CLIENT_CREDENTIALS} or {GRANT_TYPE_JWT_BEARER}")]
    UnsupportedGrantType,
    /// A parameter of another grant than the request's.
    #[error("parameter `{0}` is not accepted with this grant_type")]
    NotForGrant(&'static str),
    /// `client_credentials` without a usable RFC 7523 client assertion.
    #[error("client authentication failed: {0}")]
    ClientAuthentication(&'static str),
    /// `client_id` differs from the client assertion's `sub` (RFC 7523 §3).
    #[error("client_id does not match the client assertion's sub")]
    ClientIdMismatch,
    /// Over a rate limit (`limits:`): 429 with `Retry-After`.
    #[error("rate limit {} reached; retry after {}s", .0.limit.as_str(), .0.retry_after_secs())]
    RateLimited(crate::limits::Exceeded),
    /// The `DPoP` header was refused; the reason is for the audit log only.
    #[error("{0}")]
    InvalidDpopProof(super::dpop::DpopRefusal),
    /// `subject_token_type`, `actor_token_type` or `requested_token_type`.
    #[error("unsupported `{0}`")]
    UnsupportedTokenType(&'static str),
    #[error("at most {MAX_TARGET_VALUES} `{0}` values are accepted")]
    TooManyTargetValues(&'static str),
    #[error("parameter `{0}` must not be empty")]
    EmptyTarget(&'static str),
    #[error("a value of `{0}` is longer than {MAX_TARGET_BYTES} bytes")]
    TargetTooLong(&'static str),
    #[error("`audience` or `resource` is required")]
    NoTarget,
    #[error("`actor_token` requires `actor_token_type`")]
    ActorTokenWithoutType,
    #[error("`actor_token_type` requires `actor_token`")]
    ActorTypeWithoutToken,
    #[error("{0}: {1}")]
    Malformed(TokenRole, PeekError),
    #[error("{0} has no issuer")]
    NoIssuer(TokenRole),
    #[error("{0} is from an unknown issuer")]
    UnknownIssuer(TokenRole),
    /// The issuer's keys could not be fetched (yet): transient.
    #[error("no keys available for issuer {0}")]
    NoKeys(String),
    #[error("{0}: {1}")]
    Rejected(TokenRole, VerifyError),
    #[error("{role}: {source}")]
    WrongKind {
        role: TokenRole,
        kind: IssuerKind,
        source: KindError,
    },
    /// The rules refused; `rule` is the deciding rule, when one decided.
    #[error("{reason}")]
    Denied {
        kind: DenialKind,
        rule: Option<String>,
        reason: String,
    },
    /// The home token's acceptance window closed while the request was decided.
    #[error("{0}: token expired while the request was being decided")]
    ExpiredWhileDeciding(TokenRole),
    #[error("{0} has already been used")]
    Replayed(TokenRole),
    #[error("replay store: {0}")]
    ReplayStore(ReplayError),
    #[error("signing: {0}")]
    Signing(SigningError),
    /// Native credentials were requested, and the deciding rule has no block for them.
    #[error("rule `{rule}` has no issue.credentials.{cloud} block")]
    NoCredentials { rule: String, cloud: Cloud },
    #[error("{0}")]
    Cloud(CloudError),
    /// A signed AWS request (`aws4_request`) refused, or STS unavailable.
    #[error("{0}")]
    AwsIam(super::aws_iam::AwsIamError),
}

impl From<federation_rules::Denial> for TokenError {
    fn from(denial: federation_rules::Denial) -> TokenError {
        TokenError::Denied {
            kind: denial.kind,
            rule: denial.rule,
            reason: denial.reason,
        }
    }
}
