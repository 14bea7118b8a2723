//! `signing.kms` with `provider: aws`: tokens signed by asymmetric AWS KMS keys
//! (`KeyUsage` `SIGN_VERIFY`, `KeySpec` `RSA_2048`/`3072`/`4096` for RS256 and PS256,
//! `ECC_NIST_P256` for ES256) through `aws-sdk-kms`.
//!
//! The broker's own AWS credentials come from the SDK's default chain (environment, web
//! identity as with EKS IRSA or Pod Identity, ECS, instance metadata) and need
//! `kms:GetPublicKey` and `kms:Sign` on the keys. At start, `GetPublicKey` reads each
//! key's public half (published in `/jwks.json`, its RFC 7638 thumbprint the `kid`); each
//! token is then one `Sign` call, `MessageType` `RAW` (KMS hashes the JWS signing input;
//! at most 4,096 bytes) or, for a longer input, `DIGEST` with its SHA-256. Calls retry
//! (the SDK's standard mode, 3 attempts) within `signing.kms.timeout`; a key that does not
//! answer in time makes the request a 503, never a token signed another way.

use std::time::Duration;

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use issuers::Algorithm;

use super::SigningError;
use super::external::{ExternalSigner, PublicJwk, ecdsa_der_to_jose, jwk_from_spki};
use crate::config::KmsConfig;
use crate::error::with_sources;

/// The longest message KMS signs as `RAW`.
const MAX_RAW_MESSAGE: usize = 4096;

/// A KMS client for `signing.kms`: the SDK's default credential chain, the configured
/// region and endpoint, `timeout` over each call with its retries.
pub async fn client(kms: &KmsConfig) -> aws_sdk_kms::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &kms.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let shared = loader.load().await;
    let mut config = aws_sdk_kms::config::Builder::from(&shared)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(50)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(kms.timeout)
                .connect_timeout(kms.timeout)
                .build(),
        );
    if shared.region().is_none() {
        config = config.region(Region::new("us-east-1"));
    }
    if let Some(endpoint) = &kms.endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_kms::Client::from_conf(config.build())
}

/// One KMS key, after `GetPublicKey`.
pub struct KmsKey {
    client: aws_sdk_kms::Client,
    /// The key's ARN, as KMS answered it (an alias in the config resolves to it).
    arn: String,
}

impl KmsKey {
    /// Read `key_id`'s public key and check that it signs `algorithm`.
    pub async fn open(
        client: &aws_sdk_kms::Client,
        key_id: &str,
        algorithm: Algorithm,
    ) -> Result<(KmsKey, PublicJwk), SigningError> {
        let fail = |reason: String| SigningError::External {
            key: key_id.to_owned(),
            reason,
        };
        let answer = client
            .get_public_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| fail(format!("GetPublicKey: {}", describe(&e))))?;
        if answer.key_usage() != Some(&KeyUsageType::SignVerify) {
            return Err(fail("its KeyUsage is not SIGN_VERIFY".into()));
        }
        // `KeySpec`, or the older `CustomerMasterKeySpec` (same values) that some
        // implementations (moto) send alone.
        #[allow(deprecated)]
        let spec = answer
            .key_spec()
            .map(KeySpec::as_str)
            .or_else(|| answer.customer_master_key_spec().map(|s| s.as_str()))
            .unwrap_or("unknown");
        let fits = matches!(
            (spec, algorithm),
            (
                "RSA_2048" | "RSA_3072" | "RSA_4096",
                Algorithm::RS256 | Algorithm::PS256
            ) | ("ECC_NIST_P256", Algorithm::ES256)
        );
        if !fits {
            return Err(fail(format!(
                "its KeySpec {spec} cannot sign {algorithm} (signing.algorithm): RS256 and PS256 need RSA_2048, \
                 RSA_3072 or RSA_4096, ES256 needs ECC_NIST_P256"
            )));
        }
        let spec =
            signing_spec(algorithm).ok_or_else(|| fail(format!("{algorithm} is not signed by KMS")))?;
        if !answer.signing_algorithms().contains(&spec) {
            return Err(fail(format!("the key does not offer {}", spec.as_str())));
        }
        let der = answer
            .public_key()
            .ok_or_else(|| fail("GetPublicKey answered without a public key".into()))?;
        let jwk = jwk_from_spki(der.as_ref()).map_err(|e| fail(format!("its public key: {e}")))?;
        let arn = answer.key_id().unwrap_or(key_id).to_owned();
        Ok((
            KmsKey {
                client: client.clone(),
                arn,
            },
            jwk,
        ))
    }
}

/// The KMS signing algorithm for a JWS `alg`.
fn signing_spec(alg: Algorithm) -> Option<SigningAlgorithmSpec> {
    match alg {
        Algorithm::RS256 => Some(SigningAlgorithmSpec::RsassaPkcs1V15Sha256),
        Algorithm::PS256 => Some(SigningAlgorithmSpec::RsassaPssSha256),
        Algorithm::ES256 => Some(SigningAlgorithmSpec::EcdsaSha256),
        _ => None,
    }
}

/// The message KMS is given: the input itself up to 4,096 bytes, else its SHA-256.
fn message(input: &[u8]) -> (MessageType, Vec<u8>) {
    if input.len() <= MAX_RAW_MESSAGE {
        (MessageType::Raw, input.to_vec())
    } else {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input);
        (MessageType::Digest, digest.as_ref().to_vec())
    }
}

#[async_trait::async_trait]
impl ExternalSigner for KmsKey {
    fn key_name(&self) -> &str {
        &self.arn
    }

    async fn sign(&self, alg: Algorithm, input: &[u8]) -> Result<Vec<u8>, SigningError> {
        let spec = signing_spec(alg).ok_or(SigningError::Sign)?;
        let (message_type, message) = message(input);
        let answer = self
            .client
            .sign()
            .key_id(&self.arn)
            .message(Blob::new(message))
            .message_type(message_type)
            .signing_algorithm(spec)
            .send()
            .await
            .map_err(|e| SigningError::Unavailable {
                key: self.arn.clone(),
                reason: format!("Sign: {}", describe(&e)),
            })?;
        let signature = answer.signature().ok_or_else(|| SigningError::Unavailable {
            key: self.arn.clone(),
            reason: "Sign answered without a signature".into(),
        })?;
        match alg {
            Algorithm::ES256 => {
                ecdsa_der_to_jose(signature.as_ref(), 32).ok_or_else(|| SigningError::Unavailable {
                    key: self.arn.clone(),
                    reason: "Sign answered with a malformed ECDSA signature".into(),
                })
            }
            _ => Ok(signature.as_ref().to_vec()),
        }
    }
}

/// An SDK error in one line: the service's code and message, or the transport's trouble.
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("UnknownError"),
                err.message().unwrap_or("")
            )
        }
        SdkError::TimeoutError(_) => "timed out (signing.kms.timeout)".into(),
        SdkError::DispatchFailure(d) if d.is_timeout() => "timed out (signing.kms.timeout)".into(),
        SdkError::DispatchFailure(d) if d.is_io() => "cannot connect".into(),
        _ => with_sources(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_inputs_go_raw_and_long_ones_as_their_digest() {
        let (t, m) = message(&[7u8; MAX_RAW_MESSAGE]);
        assert_eq!((t, m.len()), (MessageType::Raw, MAX_RAW_MESSAGE));
        let long = [7u8; MAX_RAW_MESSAGE + 1];
        let (t, m) = message(&long);
        assert_eq!(t, MessageType::Digest);
        assert_eq!(
            m,
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &long).as_ref()
        );
    }

    #[test]
    fn each_issued_algorithm_has_its_kms_spec_and_eddsa_none() {
        assert_eq!(
            signing_spec(Algorithm::RS256),
            Some(SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
        );
        assert_eq!(
            signing_spec(Algorithm::PS256),
            Some(SigningAlgorithmSpec::RsassaPssSha256)
        );
        assert_eq!(
            signing_spec(Algorithm::ES256),
            Some(SigningAlgorithmSpec::EcdsaSha256)
        );
        assert_eq!(signing_spec(Algorithm::EdDSA), None);
    }
}
