//! The broker's HTTP API as the provider uses it: the admin API (`/admin/v1/...`, bearer
//! token) and the public discovery and JWKS documents.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{StatusCode, Url};
use serde_json::Value as Json;
use tf_provider::{AttributePath, Diagnostics};

use crate::ProviderError;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Discovery and JWKS documents larger than this are refused.
const MAX_PUBLIC_BYTES: usize = 1 << 20;

/// Which collection of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Issuers,
    Rules,
}

impl Kind {
    pub fn segment(self) -> &'static str {
        match self {
            Kind::Issuers => "issuers",
            Kind::Rules => "rules",
        }
    }
    pub(crate) fn singular(self) -> &'static str {
        match self {
            Kind::Issuers => "issuer",
            Kind::Rules => "rule",
        }
    }
}

/// One item of the admin API with its `ETag`.
#[derive(Debug, Clone)]
pub struct Item {
    pub value: Json,
    pub etag: Option<String>,
    /// The texts of the answer's `Warning: 299 fedbroker "..."` headers (the broker's
    /// warnings about the policy after a change).
    pub warnings: Vec<String>,
}

/// A precondition for a write (RFC 9110 §13).
#[derive(Debug, Clone)]
pub enum Precondition {
    None,
    /// `If-None-Match: *`: only create, never overwrite an item Terraform does not manage.
    Absent,
    /// `If-Match: <etag>`: only replace the version Terraform last read.
    Matches(String),
}

/// One problem of a 422 answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub source: String,
    pub line: Option<u64>,
    pub field: String,
    pub message: String,
}

#[derive(Debug)]
pub enum ApiError {
    /// No HTTP answer (connection refused, timeout, TLS).
    Transport(String),
    /// An answer with an unexpected status.
    Status {
        status: StatusCode,
        description: String,
        problems: Vec<Problem>,
    },
}

pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    token: Option<String>,
}

impl Client {
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Client, ProviderError> {
        let endpoint =
            Url::parse(endpoint).map_err(|e| ProviderError::EndpointNotAUrl(endpoint.to_string(), e))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(ProviderError::EndpointNotHttp(endpoint));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "terraform-provider-fedbroker/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(ProviderError::HttpClient)?;
        Ok(Client {
            http,
            endpoint,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// `{endpoint}/{segments...}`, each segment percent-encoded.
    fn url(base: &Url, segments: &[&str]) -> Url {
        let mut url = base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    fn item_url(&self, kind: Kind, name: &str) -> Url {
        Self::url(&self.endpoint, &["admin", "v1", kind.segment(), name])
    }

    fn admin(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request.header(ACCEPT, "application/json");
        match &self.token {
            Some(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            None => request,
        }
    }

    /// The item, or `None` when the broker has no such item.
    pub async fn get(&self, kind: Kind, name: &str) -> Result<Option<Item>, ApiError> {
        let response = send(self.admin(self.http.get(self.item_url(kind, name)))).await?;
        match response.status() {
            StatusCode::OK => item(response).await.map(Some),
            StatusCode::NOT_FOUND if is_json(&response) => Ok(None),
            _ => Err(failure(response).await),
        }
    }

    /// Create or replace; the item as stored, with its new `ETag`.
    pub async fn put(
        &self,
        kind: Kind,
        name: &str,
        body: &Json,
        precondition: &Precondition,
    ) -> Result<Item, ApiError> {
        let mut request = self.admin(self.http.put(self.item_url(kind, name))).json(body);
        request = match precondition {
            Precondition::None => request,
            Precondition::Absent => request.header(IF_NONE_MATCH, "*"),
            Precondition::Matches(etag) => request.header(IF_MATCH, etag.as_str()),
        };
        let response = send(request).await?;
        match response.status() {
            StatusCode::OK | StatusCode::CREATED => item(response).await,
            _ => Err(failure(response).await),
        }
    }

    /// Every issuer in force (the configuration file's and the admin API's): name,
    /// `kind` and `extra_claims` of each, for the plan-time claim checks.
    pub async fn issuer_kinds(&self) -> Result<Vec<(String, Option<String>, Vec<String>)>, ApiError> {
        let url = Self::url(&self.endpoint, &["admin", "v1", "issuers"]);
        let response = send(self.admin(self.http.get(url))).await?;
        if response.status() != StatusCode::OK {
            return Err(failure(response).await);
        }
        let list = item(response).await?.value;
        Ok(list
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| {
                        let name = i["name"].as_str()?.to_owned();
                        let extra = i["extra_claims"]
                            .as_array()
                            .map(|l| l.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
                            .unwrap_or_default();
                        Some((name, i["kind"].as_str().map(str::to_owned), extra))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Delete; `false` when there was nothing to delete.
    pub async fn delete(&self, kind: Kind, name: &str) -> Result<bool, ApiError> {
        let response = send(self.admin(self.http.delete(self.item_url(kind, name)))).await?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND if is_json(&response) => Ok(false),
            _ => Err(failure(response).await),
        }
    }

    /// GET a public JSON document under `base` (default: the endpoint), without the
    /// admin token: `/.well-known/openid-configuration`, `/jwks.json`.
    pub async fn get_public(&self, base: &Url, path: &[&str]) -> Result<(Url, Json), ApiError> {
        let url = Self::url(base, path);
        let response = send(self.http.get(url.clone()).header(ACCEPT, "application/json")).await?;
        if response.status() != StatusCode::OK {
            return Err(failure(response).await);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transport(format!("reading {url}: {e}")))?;
        if bytes.len() > MAX_PUBLIC_BYTES {
            return Err(ApiError::Transport(format!(
                "{url} answered more than {MAX_PUBLIC_BYTES} bytes"
            )));
        }
        let json = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Transport(format!("{url} did not answer JSON: {e}")))?;
        Ok((url, json))
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
    request.send().await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        ApiError::Transport(text)
    })
}

fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

async fn item(response: reqwest::Response) -> Result<Item, ApiError> {
    let etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let warnings = response
        .headers()
        .get_all(reqwest::header::WARNING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(warning_text)
        .collect();
    let url = response.url().clone();
    let value = response
        .json::<Json>()
        .await
        .map_err(|e| ApiError::Transport(format!("{url} did not answer JSON: {e}")))?;
    Ok(Item {
        value,
        etag,
        warnings,
    })
}

/// The text of a `Warning: 299 fedbroker "<text>"` header (RFC 7234 §5.5), its `\"` and
/// `\\` unescaped (the broker writes other characters as `\u{..}`, kept as they are).
pub fn warning_text(header: &str) -> Option<String> {
    let quoted = header.strip_prefix("299 fedbroker \"")?.strip_suffix('"')?;
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next @ ('"' | '\\')) => out.push(next),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    Some(out)
}

async fn failure(response: reqwest::Response) -> ApiError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let json: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
    let description = match (json["error"].as_str(), json["error_description"].as_str()) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e.to_owned(),
        _ if text.trim().is_empty() => "(empty body)".to_owned(),
        _ => text.chars().take(500).collect(),
    };
    let problems = json["errors"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| Problem {
                    source: p["source"].as_str().unwrap_or_default().to_owned(),
                    line: p["line"].as_u64(),
                    field: p["field"].as_str().unwrap_or_default().to_owned(),
                    message: p["message"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    ApiError::Status {
        status,
        description,
        problems,
    }
}

/// A broker field (`rule `x`: match.issuer`, `issuer `x`.audiences`, `issuers[0].kind`)
/// without the item it names: the field inside the item.
pub fn field_in_item(field: &str) -> &str {
    if field.starts_with("rule `")
        && let Some(i) = field.find("`: ")
    {
        return &field[i + 3..];
    }
    if field.starts_with("issuer `")
        && let Some(i) = field.rfind("`.")
    {
        return &field[i + 2..];
    }
    if field.starts_with("issuers[")
        && let Some(i) = field.find("].")
    {
        return &field[i + 2..];
    }
    field
}

/// Turn an error of the admin API into Terraform diagnostics. `doing` says what was
/// attempted (`creating rule "x"`); `path_of` places a 422 problem's field.
pub fn report(
    diags: &mut Diagnostics,
    client: &Client,
    kind: Kind,
    name: &str,
    doing: &str,
    error: ApiError,
    path_of: &dyn Fn(&str) -> AttributePath,
) {
    let what = format!("{doing} {} `{name}`", kind.singular());
    match error {
        ApiError::Transport(e) => diags.root_error(
            format!("{what}: the broker at {} did not answer", client.endpoint()),
            e,
        ),
        ApiError::Status {
            status, description, ..
        } if status == StatusCode::UNAUTHORIZED => diags.root_error(
            format!("{what}: the broker refused the admin token (401)"),
            format!(
                "Set the provider's `token` argument (or FEDBROKER_ADMIN_TOKEN) to one of the broker's `admin` tokens. The broker said: {description}"
            ),
        ),
        ApiError::Status {
            status, description, ..
        } if status == StatusCode::NOT_FOUND => diags.root_error(
            format!("{what}: no admin API at {}admin/v1 (404)", with_slash(client.endpoint())),
            format!(
                "Is `admin:` configured in the broker's configuration, and does `endpoint` name the listener that serves it (`admin.listen` when set)? The broker said: {description}"
            ),
        ),
        ApiError::Status {
            status, description, ..
        } if status == StatusCode::PRECONDITION_FAILED => diags.root_error(
            format!("{what}: the item changed on the broker (412)"),
            if doing.starts_with("creating") {
                format!(
                    "A {} named `{name}` already exists on the broker. Bring it under Terraform with `terraform import`, or choose another name. ({description})",
                    kind.singular()
                )
            } else {
                format!(
                    "It was changed through the admin API since Terraform last read it. Run `terraform plan` to see the change, then apply again. ({description})"
                )
            },
        ),
        ApiError::Status {
            status, description, ..
        } if status == StatusCode::CONFLICT => diags.root_error(
            format!("{what}: refused (409)"),
            format!(
                "{description}. Delete or change the rules that use it first (with Terraform: let the rules reference `fedbroker_issuer.<name>.name` so that they are destroyed first)."
            ),
        ),
        ApiError::Status { status, problems, .. } if status == StatusCode::UNPROCESSABLE_ENTITY && !problems.is_empty() => {
            let own_source = format!("admin:{}/{name}", kind.segment());
            for p in problems {
                let field = field_in_item(&p.field);
                let place = match p.line {
                    Some(line) => format!("{}:{line}", p.source),
                    None => p.source.clone(),
                };
                if p.source == own_source {
                    diags.error(
                        format!("{what}: the broker rejected it"),
                        format!("{field}: {}", p.message),
                        path_of(field),
                    );
                } else {
                    diags.root_error(
                        format!("{what}: the broker rejected the change"),
                        format!("{place}: {}: {}", p.field, p.message),
                    );
                }
            }
        }
        ApiError::Status {
            status, description, ..
        } => diags.root_error(format!("{what}: the broker answered {status}"), description),
    }
}

fn with_slash(url: &Url) -> String {
    let s = url.as_str();
    if s.ends_with('/') {
        s.to_owned()
    } else {
        format!("{s}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_endpoint_path_and_encode_names() {
        let client = Client::new("https://h.example/sts/", None).expect("client");
        assert_eq!(
            client.item_url(Kind::Rules, "a b/c").as_str(),
            "https://h.example/sts/admin/v1/rules/a%20b%2Fc"
        );
        let client = Client::new("http://127.0.0.1:8081", None).expect("client");
        assert_eq!(
            client.item_url(Kind::Issuers, "gha").as_str(),
            "http://127.0.0.1:8081/admin/v1/issuers/gha"
        );
        assert!(Client::new("ftp://h", None).is_err());
        assert!(Client::new("not a url", None).is_err());
    }

    #[test]
    fn fields_are_taken_out_of_their_item() {
        assert_eq!(field_in_item("rule `x`: match.issuer"), "match.issuer");
        assert_eq!(field_in_item("issuer `gha`.audiences"), "audiences");
        assert_eq!(field_in_item("issuers[0].kind"), "kind");
        assert_eq!(field_in_item("match.subject"), "match.subject");
    }

    #[test]
    fn warning_headers_are_read_back_as_the_broker_wrote_them() {
        assert_eq!(
            warning_text(r#"299 fedbroker "rule `a`: `claims.x`: did you mean \"y\"? C:\\dir""#).as_deref(),
            Some(r#"rule `a`: `claims.x`: did you mean "y"? C:\dir"#)
        );
        assert_eq!(warning_text(r#"299 other "x""#), None);
        assert_eq!(warning_text("299 fedbroker unquoted"), None);
        assert_eq!(
            warning_text(r#"299 fedbroker "\u{e9}""#).as_deref(),
            Some(r"\u{e9}")
        );
    }
}
