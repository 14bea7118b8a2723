//! Where the home token comes from (`--subject-token-source`), and the detection order
//! without it.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use base64::Engine as _;
use serde_json::json;

use super::WorkloadError;
use crate::exchange::TT_JWT;

/// A home token, its `subject_token_type`, and what the cache keys it by: `[iss, sub]`
/// of a JWT (read without verification: the broker verifies), the access key of a
/// signed request; `None` when neither can be read (the token itself is then the key).
pub struct Home {
    pub token: String,
    pub token_type: &'static str,
    pub subject: Option<Value>,
}

fn subject_of(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    Some(json!([claims["iss"], claims["sub"]]))
}

/// Where Kubernetes mounts a pod's service-account token.
pub const KUBERNETES_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The largest home token read, in bytes.
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Metadata endpoints answer at once or not at all.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `file:PATH`: a token file (EKS, AKS, projected tokens, SPIFFE JWT-SVIDs).
    File(String),
    /// `env:NAME`: an environment variable holding the token.
    Env(String),
    /// `kubernetes`: the pod's service-account token file.
    Kubernetes,
    /// `github-actions`: GitHub's OIDC token endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`,
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`), for `--source-audience`.
    GithubActions,
    /// `gitlab:VARIABLE`: a GitLab CI `id_tokens` variable.
    Gitlab(String),
    /// `gcp-metadata`: the GCP metadata server's identity endpoint
    /// (`GCE_METADATA_HOST` overrides `metadata.google.internal`), for `--source-audience`.
    GcpMetadata,
    /// `aws-iam`: a `GetCallerIdentity` request signed with the default AWS credential
    /// chain, naming the broker's server ID (`--source-audience`), for `aws-iam` issuers.
    AwsIam,
    /// `azure-imds`: Azure's instance metadata service (`AZURE_POD_IDENTITY_AUTHORITY_HOST`
    /// overrides `http://169.254.169.254`), a managed-identity token for the resource
    /// `--source-audience`.
    AzureImds,
}

impl FromStr for Source {
    type Err = String;

    fn from_str(text: &str) -> Result<Source, String> {
        let nonempty = |s: &str, what: &str| {
            if s.is_empty() {
                Err(format!("`{what}` needs a value"))
            } else {
                Ok(s.to_owned())
            }
        };
        match text.split_once(':') {
            Some(("file", path)) => nonempty(path, "file:").map(Source::File),
            Some(("env", name)) => nonempty(name, "env:").map(Source::Env),
            Some(("gitlab", name)) => nonempty(name, "gitlab:").map(Source::Gitlab),
            _ => match text {
                "kubernetes" => Ok(Source::Kubernetes),
                "github-actions" => Ok(Source::GithubActions),
                "gcp-metadata" => Ok(Source::GcpMetadata),
                "azure-imds" => Ok(Source::AzureImds),
                "aws-iam" => Ok(Source::AwsIam),
                other => Err(format!(
                    "unknown source `{other}`: file:PATH, env:NAME, kubernetes, github-actions, gitlab:VARIABLE, gcp-metadata, azure-imds or aws-iam"
                )),
            },
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Source {
    /// The first source present: `AWS_WEB_IDENTITY_TOKEN_FILE`, `AZURE_FEDERATED_TOKEN_FILE`,
    /// GitHub Actions' token endpoint, the Kubernetes service-account token file.
    pub fn detect() -> Result<Source, WorkloadError> {
        for var in ["AWS_WEB_IDENTITY_TOKEN_FILE", "AZURE_FEDERATED_TOKEN_FILE"] {
            if let Some(path) = env(var) {
                return Ok(Source::File(path));
            }
        }
        if env("ACTIONS_ID_TOKEN_REQUEST_URL").is_some() {
            return Ok(Source::GithubActions);
        }
        if std::path::Path::new(KUBERNETES_TOKEN).is_file() {
            return Ok(Source::Kubernetes);
        }
        Err(WorkloadError::Source(
            "no home token found (AWS_WEB_IDENTITY_TOKEN_FILE, AZURE_FEDERATED_TOKEN_FILE, GitHub Actions, the Kubernetes service-account token): name one with --subject-token-source".into(),
        ))
    }

    /// The home token.
    pub async fn read(
        &self,
        client: &reqwest::Client,
        audience: Option<&str>,
    ) -> Result<Home, WorkloadError> {
        if *self == Source::AwsIam {
            let (token, access_key) = super::aws_iam::signed_request(needs(audience, "aws-iam")?).await?;
            return Ok(Home {
                token,
                token_type: issuers::aws_iam::TOKEN_TYPE,
                subject: Some(serde_json::json!(["aws-iam", access_key])),
            });
        }
        let token = match self {
            Source::File(path) => read_file(path)?,
            Source::Kubernetes => read_file(KUBERNETES_TOKEN)?,
            Source::Env(name) | Source::Gitlab(name) => {
                env(name).ok_or_else(|| WorkloadError::Source(format!("${name} is not set")))?
            }
            Source::GithubActions => github_actions(client, needs(audience, "github-actions")?).await?,
            Source::GcpMetadata => gcp_metadata(client, needs(audience, "gcp-metadata")?).await?,
            Source::AzureImds => azure_imds(client, needs(audience, "azure-imds")?).await?,
            Source::AwsIam => String::new(),
        };
        let token = token.trim().to_owned();
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(WorkloadError::Source(format!(
                "the home token from {} is empty or longer than {MAX_TOKEN_BYTES} bytes",
                self
            )));
        }
        Ok(Home {
            subject: subject_of(&token),
            token,
            token_type: TT_JWT,
        })
    }
}

fn needs<'a>(audience: Option<&'a str>, source: &str) -> Result<&'a str, WorkloadError> {
    audience.ok_or_else(|| {
        WorkloadError::Usage(format!("--subject-token-source {source} needs --source-audience"))
    })
}

fn read_file(path: &str) -> Result<String, WorkloadError> {
    crate::files::read_regular_text(std::path::Path::new(path), MAX_TOKEN_BYTES as u64)
        .map_err(|e| WorkloadError::Source(format!("{path}: {e}")))
}

/// GET `url` with `headers`; the JSON answer, or the text when `json` is false.
async fn get(
    client: &reqwest::Client,
    what: &str,
    url: reqwest::Url,
    headers: &[(&str, &str)],
) -> Result<String, WorkloadError> {
    let mut request = client.get(url).timeout(METADATA_TIMEOUT);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request
        .send()
        .await
        .map_err(|e| WorkloadError::Source(format!("{what}: {}", e.without_url())))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| WorkloadError::Source(format!("{what}: {}", e.without_url())))?;
    if !status.is_success() {
        return Err(WorkloadError::Source(format!("{what} answered {status}")));
    }
    Ok(text)
}

fn url(text: &str, what: &str) -> Result<reqwest::Url, WorkloadError> {
    reqwest::Url::parse(text).map_err(|e| WorkloadError::Source(format!("{what}: not a URL: {e}")))
}

/// GitHub Actions: `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=...` with the request
/// token as bearer; the answer's `value`.
async fn github_actions(client: &reqwest::Client, audience: &str) -> Result<String, WorkloadError> {
    let (Some(base), Some(bearer)) = (
        env("ACTIONS_ID_TOKEN_REQUEST_URL"),
        env("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        return Err(WorkloadError::Source(
            "github-actions: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set (the job needs `permissions: id-token: write`)".into(),
        ));
    };
    let mut url = url(&base, "ACTIONS_ID_TOKEN_REQUEST_URL")?;
    url.query_pairs_mut().append_pair("audience", audience);
    let auth = format!("Bearer {bearer}");
    let text = get(
        client,
        "GitHub's token endpoint",
        url,
        &[("authorization", &auth)],
    )
    .await?;
    json_member(&text, "value", "GitHub's token endpoint")
}

/// GCP: the metadata server's identity token for `audience` (`format=full`).
async fn gcp_metadata(client: &reqwest::Client, audience: &str) -> Result<String, WorkloadError> {
    let host = env("GCE_METADATA_HOST").unwrap_or_else(|| "metadata.google.internal".into());
    let mut url = url(
        &format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/identity"),
        "GCE_METADATA_HOST",
    )?;
    url.query_pairs_mut()
        .append_pair("audience", audience)
        .append_pair("format", "full");
    get(
        client,
        "the GCP metadata server",
        url,
        &[("metadata-flavor", "Google")],
    )
    .await
}

/// Azure: IMDS's managed-identity token for the resource `resource`.
async fn azure_imds(client: &reqwest::Client, resource: &str) -> Result<String, WorkloadError> {
    let host = env("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_else(|| "http://169.254.169.254".into());
    let mut url = url(
        &format!("{}/metadata/identity/oauth2/token", host.trim_end_matches('/')),
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    )?;
    url.query_pairs_mut()
        .append_pair("api-version", "2018-02-01")
        .append_pair("resource", resource);
    let text = get(client, "Azure IMDS", url, &[("metadata", "true")]).await?;
    json_member(&text, "access_token", "Azure IMDS")
}

fn json_member(text: &str, member: &str, what: &str) -> Result<String, WorkloadError> {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v[member].as_str().map(str::to_owned))
        .ok_or_else(|| WorkloadError::Source(format!("{what} answered without `{member}`")))
}

impl std::fmt::Display for Source {
    /// As `--subject-token-source` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "file:{path}"),
            Source::Env(name) => write!(f, "env:{name}"),
            Source::Gitlab(name) => write!(f, "gitlab:{name}"),
            Source::Kubernetes => f.write_str("kubernetes"),
            Source::GithubActions => f.write_str("github-actions"),
            Source::GcpMetadata => f.write_str("gcp-metadata"),
            Source::AzureImds => f.write_str("azure-imds"),
            Source::AwsIam => f.write_str("aws-iam"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!("file:/t".parse(), Ok(Source::File("/t".into())));
        assert_eq!("env:TOKEN".parse(), Ok(Source::Env("TOKEN".into())));
        assert_eq!("gitlab:ID_TOKEN".parse(), Ok(Source::Gitlab("ID_TOKEN".into())));
        assert_eq!("kubernetes".parse(), Ok(Source::Kubernetes));
        assert_eq!("github-actions".parse(), Ok(Source::GithubActions));
        assert_eq!("gcp-metadata".parse(), Ok(Source::GcpMetadata));
        assert_eq!("azure-imds".parse(), Ok(Source::AzureImds));
        assert!("file:".parse::<Source>().is_err());
        for text in [
            "aws-iam",
            "file:/t",
            "env:T",
            "gitlab:V",
            "kubernetes",
            "github-actions",
            "gcp-metadata",
            "azure-imds",
        ] {
            assert_eq!(text.parse::<Source>().map(|s| s.to_string()).as_deref(), Ok(text));
        }
        assert!(
            "nfs"
                .parse::<Source>()
                .expect_err("unknown")
                .contains("unknown source `nfs`")
        );
    }
}
