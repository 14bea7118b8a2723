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

use issuers::aws_iam::SERVER_ID_HEADER;

use super::WorkloadError;

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
    let access_key = credentials.access_key_id().to_owned();
    let headers = sign_request(credentials, &region, &url, server_id, SystemTime::now())?;
    let request = json!({
        "url": url,
        "method": "POST",
        "headers": headers.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        "body": BODY,
    });
    // Percent-encoding (a space is %20: `+` would stay a plus, as Google's STS reads it).
    let encoded: String = form_urlencoded::byte_serialize(request.to_string().as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    Ok((encoded, access_key))
}

/// The headers of a GetCallerIdentity POST to `url`, signed at `time`: `host`,
/// `content-type`, the server ID, then what SigV4 adds (`x-amz-date`, the session token
/// when there is one, `authorization`).
fn sign_request(
    credentials: aws_credential_types::Credentials,
    region: &str,
    url: &str,
    server_id: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, WorkloadError> {
    let err = |what: &str, e: &dyn std::fmt::Display| WorkloadError::Source(format!("aws-iam: {what}: {e}"));
    let parsed = reqwest::Url::parse(url).map_err(|e| err("STS endpoint", &e))?;
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
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| err("signing", &e))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(BODY.as_bytes()),
    )
    .map_err(|e| err("signing", &e))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| err("signing", &e))?
        .into_parts();
    headers.extend(instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())));
    Ok(headers)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_signed_over_the_server_id() {
        let credentials = aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000);
        let headers = sign_request(
            credentials,
            "us-east-1",
            "http://127.0.0.1:5000/",
            "broker.example",
            time,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("host"), Some("127.0.0.1:5000"));
        assert_eq!(get("x-amz-date"), Some("20261130T005320Z"));
        let auth = get("authorization").unwrap_or_default();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261130/us-east-1/sts/aws4_request, "),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-fedbroker-server-id,"),
            "{auth}"
        );
        assert!(!auth.contains("secret"));
    }
}
