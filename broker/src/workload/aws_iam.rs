//! `--subject-token-source aws-iam`: a `sts:GetCallerIdentity` request signed (SigV4)
//! with the default AWS credential chain (environment, profile, web identity, ECS,
//! instance metadata), in the shape Google's STS and the broker's `aws-iam` issuers
//! accept (contract §10): the URL-encoded JSON `{"url", "method", "headers", "body"}`.
//! The request names and signs `x-fedbroker-server-id` (`--source-audience`), so that
//! it cannot be replayed at another service. The broker forwards it to STS; it is never
//! sent from here.

use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::json;

use super::WorkloadError;

/// The header the signed request carries the broker's server ID in.
pub const SERVER_ID_HEADER: &str = "x-fedbroker-server-id";
/// The body of every signed request.
const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// The signed request, URL-encoded, and the access key ID that signed it (the cache's
/// subject).
pub(super) async fn signed_request(server_id: &str) -> Result<(String, String), WorkloadError> {
    let err = |what: &str, e: &dyn std::fmt::Display| WorkloadError::Source(format!("aws-iam: {what}: {e}"));
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let provider = config
        .credentials_provider()
        .ok_or_else(|| WorkloadError::Source("aws-iam: no AWS credential provider".into()))?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| err("no AWS credentials", &e))?;
    let region = config
        .region()
        .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    let url = endpoint(&region);
    let parsed = reqwest::Url::parse(&url).map_err(|e| err("STS endpoint", &e))?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => {
            return Err(WorkloadError::Source(format!(
                "aws-iam: STS endpoint {url} has no host"
            )));
        }
    };
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host),
        (
            "content-type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ),
        (SERVER_ID_HEADER.into(), server_id.to_owned()),
    ];
    let access_key = credentials.access_key_id().to_owned();
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("sts")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| err("signing", &e))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url.clone(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(BODY.as_bytes()),
    )
    .map_err(|e| err("signing", &e))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| err("signing", &e))?
        .into_parts();
    headers.extend(instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())));
    let request = json!({
        "url": url,
        "method": "POST",
        "headers": headers.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        "body": BODY,
    });
    let encoded: String = form_urlencoded::byte_serialize(request.to_string().as_bytes()).collect();
    Ok((encoded, access_key))
}

/// STS's URL: `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL` (the SDKs' own
/// overrides), else the region's endpoint; with a path of at least `/`.
fn endpoint(region: &str) -> String {
    let configured = ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    let url = configured.unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
    match reqwest::Url::parse(&url) {
        Ok(parsed) if parsed.path().is_empty() || parsed.path() == "/" => {
            format!("{}/", url.trim_end_matches('/'))
        }
        _ => url,
    }
}
