//! Azure: the Microsoft identity platform's client-credentials grant with a federated
//! credential: the broker's JWT as `client_assertion`
//! (<https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#third-case-access-token-request-with-a-federated-credential>).

use std::time::Instant;

use federation_rules::Cloud;
use federation_rules::credentials::AzureCredentials;
use reqwest::Url;

use super::http::{self, unexpected};
use super::{CloudError, CloudToken};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub(super) async fn exchange(
    client: &reqwest::Client,
    azure: &AzureCredentials,
    jwt: &str,
    deadline: Instant,
) -> Result<CloudToken, CloudError> {
    let url = token_url(&azure.authority_host, &azure.tenant_id)?;
    let form = [
        ("client_id", azure.client_id.as_str()),
        ("scope", azure.scope.as_str()),
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", jwt),
    ];
    let answer = http::send(Cloud::Azure, "Entra", deadline, || {
        client.post(url.clone()).form(&form)
    })
    .await?;
    match (answer.status.is_success(), answer.body["access_token"].as_str()) {
        (true, Some(token)) if !token.is_empty() => Ok(CloudToken {
            access_token: token.to_owned(),
            token_type: "Bearer",
            expires_in: answer.body["expires_in"].as_u64().unwrap_or(0),
            extra: None,
        }),
        _ => Err(unexpected(Cloud::Azure, "Entra", &answer)),
    }
}

/// `{authority_host}/{tenant}/oauth2/v2.0/token`, the tenant escaped as one path segment.
fn token_url(authority_host: &str, tenant: &str) -> Result<Url, CloudError> {
    let mut url = Url::parse(authority_host)
        .map_err(|e| CloudError::unavailable(Cloud::Azure, format!("authority_host: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| CloudError::unavailable(Cloud::Azure, "authority_host cannot take a path"))?
        .pop_if_empty()
        .extend([tenant, "oauth2", "v2.0", "token"]);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_one_path_segment() {
        let url = token_url("https://login.microsoftonline.com", "t-1").map(String::from);
        assert_eq!(
            url.as_deref().ok(),
            Some("https://login.microsoftonline.com/t-1/oauth2/v2.0/token")
        );
        let url = token_url("https://login.microsoftonline.com", "../common").map(String::from);
        assert_eq!(
            url.as_deref().ok(),
            Some("https://login.microsoftonline.com/..%2Fcommon/oauth2/v2.0/token")
        );
    }
}
