//! Why the provider refuses a setting or a value: one variant per reason.

use reqwest::Url;

/// The provider's own errors (the broker's answers are reported as they come).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("`{0}` is not a URL: {1}")]
    EndpointNotAUrl(String, url::ParseError),
    #[error("`{0}` must be an http:// or https:// URL")]
    EndpointNotHttp(Url),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(reqwest::Error),
    #[error("must be a JSON object (use jsonencode({{...}}))")]
    NotAJsonObject,
    #[error("is not valid JSON: {0}")]
    InvalidJson(serde_json::Error),
    /// A body the broker returned that does not have the expected shape.
    #[error("{0}")]
    UnexpectedBody(serde_json::Error),
}
