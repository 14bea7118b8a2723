//! Google Cloud: the STS token exchange
//! (<https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token>), then,
//! when the rule names a service account, `generateAccessToken`
//! (<https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken>)
//! with the federated token.

use std::time::Instant;

use federation_rules::Cloud;
use federation_rules::credentials::GcpCredentials;
use reqwest::Url;
use serde_json::json;

use super::http::{self, unexpected};
use super::{CloudError, CloudToken, seconds_until};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

pub(super) async fn exchange(
    client: &reqwest::Client,
    gcp: &GcpCredentials,
    jwt: &str,
    deadline: Instant,
) -> Result<CloudToken, CloudError> {
    let scope = gcp.scopes.join(" ");
    let form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("audience", gcp.audience.as_str()),
        ("scope", scope.as_str()),
        ("requested_token_type", ACCESS_TOKEN),
        ("subject_token_type", JWT),
        ("subject_token", jwt),
    ];
    let url = format!("{}/v1/token", gcp.sts_endpoint);
    let answer = http::send(Cloud::Gcp, "Google STS", deadline, || {
        client.post(&url).form(&form)
    })
    .await?;
    let federated = match (answer.status.is_success(), answer.body["access_token"].as_str()) {
        (true, Some(token)) if !token.is_empty() => token.to_owned(),
        _ => return Err(unexpected(Cloud::Gcp, "Google STS", &answer)),
    };
    let Some(service_account) = &gcp.service_account else {
        let expires_in = answer.body["expires_in"].as_u64().unwrap_or(0);
        return Ok(bearer(federated, expires_in));
    };
    let url = generate_access_token_url(&gcp.iamcredentials_endpoint, service_account)?;
    let body = json!({"scope": gcp.scopes, "lifetime": format!("{}s", gcp.lifetime)});
    let answer = http::send(Cloud::Gcp, "IAM Credentials", deadline, || {
        client.post(url.clone()).bearer_auth(&federated).json(&body)
    })
    .await?;
    match (
        answer.status.is_success(),
        answer.body["accessToken"].as_str(),
        answer.body["expireTime"].as_str().and_then(seconds_until),
    ) {
        (true, Some(token), Some(expires_in)) if !token.is_empty() => {
            Ok(bearer(token.to_owned(), expires_in))
        }
        _ => Err(unexpected(Cloud::Gcp, "IAM Credentials", &answer)),
    }
}

fn bearer(access_token: String, expires_in: u64) -> CloudToken {
    CloudToken {
        access_token,
        token_type: "Bearer",
        expires_in,
        extra: None,
    }
}

/// `{endpoint}/v1/projects/-/serviceAccounts/{email}:generateAccessToken`, the email
/// escaped as one path segment (a claim in it cannot reach another path).
fn generate_access_token_url(endpoint: &str, service_account: &str) -> Result<Url, CloudError> {
    let mut url = Url::parse(endpoint)
        .map_err(|e| CloudError::unavailable(Cloud::Gcp, format!("iamcredentials_endpoint: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| CloudError::unavailable(Cloud::Gcp, "iamcredentials_endpoint cannot take a path"))?
        .pop_if_empty()
        .extend(["v1", "projects", "-", "serviceAccounts"])
        .push(&format!("{service_account}:generateAccessToken"));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_account_is_one_path_segment() {
        let url = generate_access_token_url(
            "https://iamcredentials.googleapis.com",
            "a@p.iam.gserviceaccount.com",
        )
        .map(String::from);
        assert_eq!(
            url.as_deref().ok(),
            Some(
                "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@p.iam.gserviceaccount.com:generateAccessToken"
            )
        );
        let url = generate_access_token_url("http://127.0.0.1:9/base", "../../x?y#z").map(String::from);
        assert_eq!(
            url.as_deref().ok(),
            Some(
                "http://127.0.0.1:9/base/v1/projects/-/serviceAccounts/..%2F..%2Fx%3Fy%23z:generateAccessToken"
            )
        );
    }
}
