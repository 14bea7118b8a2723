//! Pure verification of incoming workload-identity tokens (JWS/JWT, RFC 7515/7519).
//!
//! - [`alg`]: the signature algorithms an issuer may accept; `none` and HMAC cannot
//!   be expressed.
//! - [`jose`]: [`peek`], an unverified, strict parse of a compact JWS used only to
//!   choose the issuer, plus the duplicate-rejecting JSON and canonical base64url
//!   decoders everything else uses.
//! - [`keys`]: [`KeySet`], the usable public keys of one issuer, parsed from a JWKS.
//! - [`verify`](mod@verify): [`verify()`], the signature and claims checks against an
//!   [`IssuerPolicy`], producing a [`VerifiedToken`].
//! - [`kinds`]: [`IssuerKind`], what `kind:` on an issuer brings: default issuer URL and
//!   algorithms, the platform's claim shape, accepted `typ`, claims worth auditing.
//! - [`claim_names`]: the claim names each kind's tokens can carry
//!   ([`IssuerKind::known_claims`]), for warnings about rules that refer to others.
//! - [`aws_iam`]: the pure half of `kind: aws-iam`: a signed GetCallerIdentity request
//!   as a subject token, and STS's answer as claims.
//! - [`dpop`]: DPoP proofs (RFC 9449): [`dpop::verify_proof`], every check that needs
//!   no store, and the RFC 7638 thumbprint of the proof's key.
//! - [`registry`]: [`IssuerRegistry`], configured issuers indexed by exact `iss`.
//!
//! Nothing here does I/O or reads the clock: fetching keys is the broker's job, and
//! time is passed in as `now` (unix seconds).

// Nothing network input reaches may panic (architecture.md): no `expect`, no `panic!`
// outside tests; `clippy.toml` forbids reading the clock and the environment.
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

pub mod alg;
pub mod aws_iam;
pub mod claim_names;
pub mod dpop;
pub mod jose;
pub mod keys;
pub mod kinds;
pub mod registry;
pub mod verify;

#[cfg(test)]
mod test_support;

pub use alg::{Algorithm, UnsupportedAlgorithm};
pub use claim_names::{KnownClaims, STANDARD_CLAIMS};
pub use jose::{DEFAULT_MAX_TOKEN_BYTES, Header, PeekError, Peeked, peek, peek_with_limit};
pub use keys::{JwksError, KeySet, MAX_KEYS, SkippedKey, VerifyingKey};
pub use kinds::{IssuerKind, KindConfigError, KindError, KindParams};
pub use registry::{DuplicateIssuer, IssuerRegistry};
pub use verify::{IssuerPolicy, VerifiedToken, VerifyError, verify};
