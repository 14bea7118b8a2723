//! `subject_token_type=urn:ietf:params:aws:token-type:aws4_request` (contract §10): the
//! subject token is a SigV4-signed `sts:GetCallerIdentity` request. Its issuer is the
//! `kind: aws-iam` issuer whose `server_id` the request's signed `x-fedbroker-server-id`
//! header names; the request goes to that issuer's STS endpoint (never to the URL the
//! caller wrote, which must merely be one of them), exactly as signed, and STS's answer
//! becomes the claims rules see. Cheapest checks first: parse → issuer → endpoint →
//! date → STS → account → the kind's claim checks.
//!
//! The replay mark is the pipeline's, as for tokens: the verified token's `jti` is
//! `aws4:` and a digest of what identifies the signed request
//! ([`issuers::aws_iam::SignedRequest::replay_id`]), and its `exp` is `X-Amz-Date` plus
//! 15 minutes, the last moment the request would be accepted again.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use issuers::aws_iam::{self, AwsRequestError, IdentityResponseError, MAX_DATE_OFFSET_SECS, SignedRequest};
use issuers::{Header, IssuerKind, KindError, VerifiedToken};
use serde_json::Map;

use super::{TokenError, Verified};
use crate::policy::{Issuer, Policy};

/// Why a signed AWS request was not accepted. The texts go to the audit log; they
/// never quote the request's headers, signature or credentials.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AwsIamError {
    #[error("{0}")]
    Request(AwsRequestError),
    #[error("aws4_request: no aws-iam issuer has this x-fedbroker-server-id")]
    UnknownServerId,
    #[error("aws4_request: the URL is not one of issuer {0}'s sts_endpoints")]
    EndpointNotAllowed(String),
    #[error("aws4_request: X-Amz-Date is {0} s from the broker's clock (at most {MAX_DATE_OFFSET_SECS} s)")]
    Stale(i64),
    #[error("aws4_request: STS refused the request (HTTP {0}, {code})", code = .1.as_deref().unwrap_or("no error code"))]
    Refused(u16, Option<String>),
    #[error("aws4_request: account {0} is not one of issuer {1}'s accounts")]
    AccountNotListed(String, String),
    #[error("aws4_request: {0}")]
    WrongKind(KindError),
    /// STS unreachable, timed out, throttling or failing: transient.
    #[error("aws4_request: STS unavailable: {0}")]
    Unavailable(String),
}

impl AwsIamError {
    /// Whether the request may succeed later unchanged (503), rather than never (400).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AwsIamError::Unavailable(_))
    }
}

impl From<AwsIamError> for TokenError {
    fn from(e: AwsIamError) -> TokenError {
        TokenError::AwsIam(e)
    }
}

/// Verify a signed GetCallerIdentity request against the aws-iam issuers of `policy` at
/// `now`, calling STS with `timeout`.
pub(crate) async fn verify_aws_request(
    policy: &Policy,
    token: &str,
    now: u64,
    timeout: Duration,
) -> Result<Verified, TokenError> {
    let request = aws_iam::parse_signed_request(token).map_err(AwsIamError::Request)?;
    let issuer = issuer_for(policy, &request.server_id).ok_or(AwsIamError::UnknownServerId)?;
    let endpoint = allowed_endpoint(&issuer, &request.url)
        .ok_or_else(|| AwsIamError::EndpointNotAllowed(issuer.config.name.clone()))?;
    if !request.is_fresh(now) {
        let offset =
            i64::try_from(request.signed_at).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(i64::MAX);
        return Err(AwsIamError::Stale(offset).into());
    }
    let xml = call_sts(&endpoint, &request, timeout).await?;
    let identity = aws_iam::parse_caller_identity(&xml).map_err(|IdentityResponseError(why)| {
        AwsIamError::Unavailable(format!("unexpected answer: {why}"))
    })?;
    let c = &issuer.config;
    let listed = c.kind_params.accounts.as_deref().unwrap_or_default();
    if !listed.contains(&identity.account) {
        return Err(AwsIamError::AccountNotListed(identity.account, c.name.clone()).into());
    }
    let claims = identity.claims(&c.policy.issuer);
    c.kind
        .check_claims(&claims, &c.kind_params)
        .map_err(AwsIamError::WrongKind)?;
    let token = verified_token(&c.policy.issuer, &request, claims);
    Ok(Verified { issuer, token })
}

/// The aws-iam issuer whose `server_id` is `server_id` (the configuration keeps them
/// unique).
fn issuer_for(policy: &Policy, server_id: &str) -> Option<Arc<Issuer>> {
    policy
        .issuers
        .iter()
        .map(|(_, issuer)| issuer)
        .find(|i| {
            i.config.kind == IssuerKind::AwsIam
                && i.config.kind_params.server_id.as_deref() == Some(server_id)
        })
        .cloned()
}

/// The configured endpoint that `url` names (compared as
/// [`issuer_schema::sts_endpoint_key`]s): what the request is sent to.
fn allowed_endpoint(issuer: &Issuer, url: &str) -> Option<String> {
    let wanted = issuer_schema::sts_endpoint_key(url)?;
    issuer
        .config
        .kind_params
        .sts_endpoints
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| issuer_schema::sts_endpoint_key(e).as_deref() == Some(wanted.as_str()))
        .cloned()
}

/// The claims as a verified token, for the rest of the pipeline.
fn verified_token(
    issuer: &str,
    request: &SignedRequest,
    claims: Map<String, serde_json::Value>,
) -> VerifiedToken {
    let subject = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    VerifiedToken {
        issuer: issuer.to_string(),
        subject,
        audiences: Vec::new(),
        expires_at: request.signed_at.saturating_add(MAX_DATE_OFFSET_SECS),
        issued_at: Some(request.signed_at),
        not_before: None,
        jti: Some(format!("aws4:{}", request.replay_id())),
        header: Header {
            alg: "AWS4-HMAC-SHA256".into(),
            kid: None,
            typ: None,
            crit: None,
            raw: Map::new(),
        },
        claims,
    }
}

/// One client for every STS call: no redirects (a signed request goes where it was
/// allowed to, or nowhere), no proxy.
fn client() -> Result<&'static reqwest::Client, AwsIamError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("fedbroker/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("HTTP client: {e}"))
        })
        .as_ref()
        .map_err(|e| AwsIamError::Unavailable(e.clone()))
}

/// Send the signed request (its method, headers and body, as given) to `endpoint`;
/// STS's answer body, at most [`aws_iam::MAX_RESPONSE_BYTES`]. A 4xx is STS refusing
/// (its error code in the audit line), except 429 and throttling codes (STS throttles
/// with 400 `Throttling`); anything else that is not 2xx, and every transport failure:
/// unavailable.
async fn call_sts(endpoint: &str, request: &SignedRequest, timeout: Duration) -> Result<String, AwsIamError> {
    let mut builder = client()?
        .post(endpoint)
        .timeout(timeout)
        .body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let unavailable = |e: reqwest::Error| {
        let why = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            // reqwest's text names the URL, which is configuration, never the request's
            // headers.
            e.without_url().to_string()
        };
        AwsIamError::Unavailable(why)
    };
    let mut response = builder.send().await.map_err(unavailable)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        if body.len() + chunk.len() > aws_iam::MAX_RESPONSE_BYTES {
            return Err(AwsIamError::Unavailable("answer too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    let body = String::from_utf8(body).map_err(|_| AwsIamError::Unavailable("answer is not UTF-8".into()))?;
    if status.is_success() {
        return Ok(body);
    }
    let code = aws_iam::error_code(&body);
    let throttled = status.as_u16() == 429 || code.as_deref().is_some_and(aws_iam::is_throttling);
    if status.is_client_error() && !throttled {
        return Err(AwsIamError::Refused(status.as_u16(), code));
    }
    let code = code.map(|c| format!(", {c}")).unwrap_or_default();
    Err(AwsIamError::Unavailable(format!(
        "HTTP {}{code}",
        status.as_u16()
    )))
}
