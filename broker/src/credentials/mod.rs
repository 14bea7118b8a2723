//! Native cloud credentials (contract §9): the broker's own JWT, just minted, traded at
//! the cloud a rule's `issue.credentials` names, for that cloud's short-lived
//! credentials.
//!
//! - `aws`: `AssumeRoleWithWebIdentity` through `aws-sdk-sts`.
//! - `gcp`: Google's STS token exchange, then `generateAccessToken` when the rule names a
//!   service account: two documented REST calls (`gcp_auth` has no external-account
//!   flow, and `google-cloud-auth`'s reads its subject token from a file or URL source
//!   and caches what it gets, where the broker holds a fresh token per request).
//! - `azure`: Entra's `client_credentials` grant with the JWT as `client_assertion`, one
//!   documented REST call (what `azure_identity`'s `ClientAssertionCredential` sends;
//!   that credential caches tokens per scope, not per assertion, and drags in the Azure
//!   core stack for one form POST).
//!
//! Every call is bounded by `server.cloud_timeout`, retries included (at most
//! [`MAX_ATTEMPTS`], with jittered backoff, for throttling, 5xx and transport errors
//! only). What the cloud refuses is [`CloudError::Refused`] (400 `invalid_target`); its
//! throttling, outages and timeouts are [`CloudError::Unavailable`] (503). The cloud's
//! reason goes to the audit line, shortened; credentials never go anywhere but the
//! answer.

mod aws;
mod azure;
mod gcp;
mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use federation_rules::{Cloud, Credentials};
use serde_json::Value;

use crate::metrics::Metrics;

/// Attempts per cloud call, the first included.
pub const MAX_ATTEMPTS: u32 = 3;
/// The longest cloud reason kept for the audit line, in characters.
const MAX_REASON_CHARS: usize = 300;

/// What a cloud gave for a request.
pub struct CloudToken {
    pub access_token: String,
    /// The response's `token_type`.
    pub token_type: &'static str,
    pub expires_in: u64,
    /// A further member of the answer (`aws_credentials`).
    pub extra: Option<(&'static str, Value)>,
}

impl std::fmt::Debug for CloudToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudToken")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Why a cloud gave nothing. `reason` never holds a token or a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// The cloud refused the request (AccessDenied, `invalid_grant`, another 4xx).
    #[error("{cloud} refused the credentials request: {reason}")]
    Refused { cloud: Cloud, reason: String },
    /// The cloud throttled, failed, or did not answer in time.
    #[error("{cloud} is unavailable: {reason}")]
    Unavailable { cloud: Cloud, reason: String },
}

impl CloudError {
    fn refused(cloud: Cloud, reason: impl Into<String>) -> CloudError {
        CloudError::Refused {
            cloud,
            reason: shorten(reason.into()),
        }
    }

    fn unavailable(cloud: Cloud, reason: impl Into<String>) -> CloudError {
        CloudError::Unavailable {
            cloud,
            reason: shorten(reason.into()),
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            CloudError::Refused { .. } => "refused",
            CloudError::Unavailable { .. } => "unavailable",
        }
    }
}

/// A cloud's message, one line, at most [`MAX_REASON_CHARS`] characters.
fn shorten(reason: String) -> String {
    let line = reason.replace(['\n', '\r'], " ");
    match line.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// The clients the broker talks to clouds with, built on first use and kept.
pub struct Clouds {
    timeout: Duration,
    http: http::Clients,
    aws: aws::Clients,
    metrics: Arc<Metrics>,
}

impl Clouds {
    pub fn new(timeout_secs: u64, metrics: Arc<Metrics>) -> Clouds {
        let timeout = Duration::from_secs(timeout_secs);
        Clouds {
            timeout,
            http: http::Clients::new(timeout),
            aws: aws::Clients::new(timeout),
            metrics,
        }
    }

    /// Trades `jwt` at the cloud `credentials` names.
    pub async fn obtain(&self, credentials: &Credentials, jwt: &str) -> Result<CloudToken, CloudError> {
        let cloud = credentials.cloud();
        let started = Instant::now();
        let deadline = started + self.timeout;
        let call = async {
            match credentials {
                Credentials::Aws(aws) => self.aws.assume_role(aws, jwt).await,
                Credentials::Gcp(gcp) => {
                    let client = self.http.client(cloud, &gcp.trust)?;
                    gcp::exchange(&client, gcp, jwt, deadline).await
                }
                Credentials::Azure(azure) => {
                    let client = self.http.client(cloud, &azure.trust)?;
                    azure::exchange(&client, azure, jwt, deadline).await
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(CloudError::unavailable(
                cloud,
                format!(
                    "no answer within {}s (server.cloud_timeout)",
                    self.timeout.as_secs()
                ),
            )),
        };
        let outcome = result.as_ref().map_or_else(CloudError::outcome, |_| "issued");
        self.metrics
            .cloud_request(cloud.as_str(), outcome, started.elapsed().as_secs_f64());
        result
    }
}

/// Seconds from now until `expires_at` (RFC 3339), at least 0.
fn seconds_until(expires_at: &str) -> Option<u64> {
    let at = humantime::parse_rfc3339_weak(expires_at).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .as_secs(),
    )
}

/// How long to wait before attempt `attempt` (1-based, so the first retry is 2):
/// 200 ms doubled per retry, times a random factor in [0.5, 1.5).
fn backoff(attempt: u32) -> Duration {
    let mut byte = [0u8; 1];
    let jitter = match aws_lc_rs::rand::fill(&mut byte) {
        Ok(()) => 0.5 + f64::from(byte[0]) / 256.0,
        Err(_) => 1.0,
    };
    Duration::from_millis(200u64 << attempt.saturating_sub(2).min(4)).mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_short_line() {
        assert_eq!(shorten("a\nb".into()), "a b");
        let long = shorten("x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_REASON_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn backoff_grows_with_jitter() {
        for _ in 0..50 {
            let first = backoff(2);
            assert!((100..300).contains(&first.as_millis()), "{first:?}");
            let second = backoff(3);
            assert!((200..600).contains(&second.as_millis()), "{second:?}");
        }
    }

    #[test]
    fn seconds_until_an_rfc3339_time() {
        assert_eq!(seconds_until("2000-01-01T00:00:00Z"), Some(0));
        let later =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(3600))
                .to_string();
        let left = seconds_until(&later).unwrap_or_default();
        assert!((3590..=3600).contains(&left), "{left}");
        assert_eq!(seconds_until("tomorrow"), None);
    }
}
