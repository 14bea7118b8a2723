//! AWS: `AssumeRoleWithWebIdentity` through `aws-sdk-sts`, unsigned (the web identity
//! token is the credential), one client per (endpoint, region, CA file).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sts::config::retry::RetryConfig;
use aws_sdk_sts::config::timeout::TimeoutConfig;
use aws_sdk_sts::config::{BehaviorVersion, Region};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
use aws_sdk_sts::primitives::DateTimeFormat;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use federation_rules::Cloud;
use federation_rules::credentials::AwsCredentials;
use serde_json::json;

use super::{CloudError, CloudToken, MAX_ATTEMPTS};
use crate::error::with_sources;

/// The region when a rule names none: STS's home region.
const DEFAULT_REGION: &str = "us-east-1";

type Key = (Option<String>, String, Option<String>);

pub(super) struct Clients {
    timeout: Duration,
    built: Mutex<HashMap<Key, aws_sdk_sts::Client>>,
}

impl Clients {
    pub(super) fn new(timeout: Duration) -> Clients {
        Clients {
            timeout,
            built: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, aws: &AwsCredentials) -> Result<aws_sdk_sts::Client, CloudError> {
        let region = aws.region.clone().unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let key = (aws.endpoint.clone(), region.clone(), aws.trust.ca_file.clone());
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = built.get(&key) {
            return Ok(client.clone());
        }
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            // The SDK's standard mode: exponential backoff with full jitter, for
            // throttling, 5xx and transport errors; from 200 ms, as for the REST clouds,
            // so that the retries fit well inside server.cloud_timeout.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(std::time::Duration::from_millis(200)),
            )
            // The whole call runs under `Clouds::obtain`'s `server.cloud_timeout`.
            .timeout_config(TimeoutConfig::builder().connect_timeout(self.timeout).build());
        if let Some(endpoint) = &aws.endpoint {
            config = config.endpoint_url(endpoint);
        }
        if let Some(path) = &aws.trust.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                tracing::error!(error = %e, ca_file = %path, "cannot read the CA file of an AWS endpoint");
                CloudError::unavailable(Cloud::Aws, format!("ca_file {path}: {e}"))
            })?;
            let context = TlsContext::builder()
                .with_trust_store(
                    TrustStore::empty()
                        .with_native_roots(false)
                        .with_pem_certificate(pem),
                )
                .build()
                .map_err(|e| CloudError::unavailable(Cloud::Aws, format!("ca_file {path}: {e}")))?;
            config = config.http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                    .tls_context(context)
                    .build_https(),
            );
        }
        let client = aws_sdk_sts::Client::from_conf(config.build());
        built.insert(key, client.clone());
        Ok(client)
    }

    pub(super) async fn assume_role(
        &self,
        aws: &AwsCredentials,
        jwt: &str,
    ) -> Result<CloudToken, CloudError> {
        let client = self.client(aws)?;
        let duration = i32::try_from(aws.duration).unwrap_or(i32::MAX);
        let answer = client
            .assume_role_with_web_identity()
            .role_arn(&aws.role_arn)
            .role_session_name(&aws.session_name)
            .duration_seconds(duration)
            .web_identity_token(jwt)
            .send()
            .await
            .map_err(classify)?;
        let credentials = answer
            .credentials()
            .ok_or_else(|| CloudError::unavailable(Cloud::Aws, "AWS STS answered without credentials"))?;
        let expiration = credentials.expiration();
        let expires_in = u64::try_from(expiration.secs() - now_secs()).unwrap_or(0);
        let expiration = expiration
            .fmt(DateTimeFormat::DateTime)
            .map_err(|e| CloudError::unavailable(Cloud::Aws, format!("AWS STS expiration: {e}")))?;
        Ok(CloudToken {
            access_token: credentials.session_token().to_owned(),
            token_type: "N_A",
            expires_in,
            extra: Some((
                "aws_credentials",
                json!({
                    "AccessKeyId": credentials.access_key_id(),
                    "SecretAccessKey": credentials.secret_access_key(),
                    "SessionToken": credentials.session_token(),
                    "Expiration": expiration,
                }),
            )),
        })
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// AWS error codes that mean "later", not "no": STS's own trouble reaching the
/// identity provider, and throttling.
const TRANSIENT_CODES: [&str; 4] = [
    "IDPCommunicationError",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
];

fn classify(e: SdkError<AssumeRoleWithWebIdentityError>) -> CloudError {
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("UnknownError");
            let message = err.message().unwrap_or("");
            let reason = format!("AWS STS: {code}: {message}");
            let status = service_status(&e);
            if TRANSIENT_CODES.contains(&code) || status.is_none_or(|s| s >= 500 || s == 429) {
                CloudError::unavailable(Cloud::Aws, reason)
            } else {
                CloudError::refused(Cloud::Aws, reason)
            }
        }
        SdkError::TimeoutError(_) => CloudError::unavailable(Cloud::Aws, "AWS STS: timed out"),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                "timed out"
            } else if d.is_io() {
                "cannot connect"
            } else {
                "cannot send the request"
            };
            CloudError::unavailable(Cloud::Aws, format!("AWS STS: {kind}"))
        }
        SdkError::ResponseError(_) => CloudError::unavailable(Cloud::Aws, "AWS STS: unreadable answer"),
        // Building the request failed: the rule's values (a role ARN AWS's model refuses).
        SdkError::ConstructionFailure(_) => CloudError::refused(
            Cloud::Aws,
            format!("AWS STS: the request could not be built: {}", with_sources(&e)),
        ),
        _ => CloudError::unavailable(Cloud::Aws, format!("AWS STS: {}", with_sources(&e))),
    }
}

fn service_status(e: &SdkError<AssumeRoleWithWebIdentityError>) -> Option<u16> {
    e.raw_response().map(|raw| raw.status().as_u16())
}
