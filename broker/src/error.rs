//! The one place broker errors become HTTP answers: status, RFC 6749 §5.2 / RFC 8693
//! §2.2.2 `error` code, a fixed `error_description` for the client (the full reason
//! goes to the audit log and the broker's log, never here), and the headers each route
//! group answers errors with.

use axum::http::header::{self, HeaderName};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use federation_rules::{Cloud, DenialKind};
use issuers::VerifyError;
use serde_json::{Map, Value};

use crate::admin::AdminError;
use crate::admin_store::StoreError;
use crate::credentials::CloudError;
use crate::dev::MintError;
use crate::exchange::{DpopRefusal, TokenError, TokenRole};

/// An error answer: `{"error": .., "error_description": .., ..extra}` with its status
/// and headers.
#[derive(Debug)]
pub struct ErrorAnswer {
    status: StatusCode,
    code: &'static str,
    description: String,
    /// Further members of the body, after the two above.
    extra: Vec<(&'static str, Value)>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ErrorAnswer {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> ErrorAnswer {
        ErrorAnswer {
            status,
            code,
            description: description.into(),
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn with(mut self, member: &'static str, value: Value) -> ErrorAnswer {
        self.extra.push((member, value));
        self
    }

    fn header(mut self, name: HeaderName, value: HeaderValue) -> ErrorAnswer {
        self.headers.push((name, value));
        self
    }
}

impl ErrorAnswer {
    /// The JSON body.
    fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.code.into()));
        body.insert(
            "error_description".into(),
            Value::String(self.description.clone()),
        );
        for (member, value) in &self.extra {
            body.insert((*member).into(), value.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for ErrorAnswer {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

/// `e` and its sources, `: ` between them (`error sending request: connection refused`).
pub fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How a rules denial is answered (used by `/token` and `explain` alike).
pub fn denial(kind: DenialKind) -> (StatusCode, &'static str, &'static str) {
    match kind {
        DenialKind::NoRuleForTarget => (
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "no rule grants the requested target",
        ),
        DenialKind::DeniedByPolicy => (StatusCode::BAD_REQUEST, "invalid_request", "denied by policy"),
        DenialKind::ScopeNotAllowed => (
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the requested scope is not allowed",
        ),
    }
}

/// The client's words for a token that did not verify.
fn rejected(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::Expired => "is expired",
        VerifyError::NotYetValid | VerifyError::IssuedInFuture => "is not yet valid",
        VerifyError::AudienceMismatch => "has an audience this broker does not accept",
        VerifyError::BadSignature
        | VerifyError::UnknownKey { .. }
        | VerifyError::KeyAlgorithmMismatch { .. } => "has an invalid signature",
        VerifyError::AlgorithmNotAllowed { .. } => "uses an algorithm this issuer is not allowed",
        _ => "is invalid",
    }
}

/// A cloud as the client is told of it.
fn cloud_name(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => "AWS STS",
        Cloud::Gcp => "Google Cloud",
        Cloud::Azure => "Microsoft Entra",
    }
}

const UNAVAILABLE: &str = "the service is temporarily unavailable; retry later";

impl TokenError {
    /// Status, RFC error code and the client's description.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use TokenError as E;
        let bad = |description: String| (StatusCode::BAD_REQUEST, "invalid_request", description);
        // A presented token refused: by the parameter that carried it (RFC 8693 for
        // the exchange's tokens, RFC 7521 §4.1.1 and §4.2.1 for the assertions).
        let refused = |role: TokenRole, description: String| match role {
            TokenRole::Subject | TokenRole::Actor => {
                (StatusCode::BAD_REQUEST, "invalid_request", description)
            }
            TokenRole::Assertion => (StatusCode::BAD_REQUEST, "invalid_grant", description),
            TokenRole::ClientAssertion => (StatusCode::UNAUTHORIZED, "invalid_client", description),
        };
        let unavailable = (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            UNAVAILABLE.to_string(),
        );
        match self {
            E::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                self.to_string(),
            ),
            E::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", self.to_string()),
            E::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "invalid_request", self.to_string()),
            E::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                self.to_string(),
            ),
            E::ClientAuthentication(_) | E::ClientIdMismatch => {
                (StatusCode::UNAUTHORIZED, "invalid_client", self.to_string())
            }
            // RFC 6749's code for an overloaded server, with HTTP's status for "slow down".
            E::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                self.to_string(),
            ),
            // RFC 9449 §8: the fresh nonce goes in the `DPoP-Nonce` header (added by
            // the route, which holds the secret).
            E::InvalidDpopProof(DpopRefusal::Nonce(_)) => (
                StatusCode::BAD_REQUEST,
                "use_dpop_nonce",
                "the DPoP proof must carry the nonce of the DPoP-Nonce response header".to_string(),
            ),
            E::InvalidDpopProof(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                "the DPoP proof is invalid".to_string(),
            ),
            E::NoIssuer(role) | E::UnknownIssuer(role) | E::Replayed(role) => {
                refused(*role, self.to_string())
            }
            E::Malformed(role, _) => refused(*role, format!("{role} is malformed")),
            E::Rejected(role, e) => refused(*role, format!("{role} {}", rejected(e))),
            E::WrongKind { role, kind, .. } => refused(*role, format!("{role} is not a {kind} token")),
            E::ExpiredWhileDeciding(role) => refused(*role, format!("{role} is expired")),
            E::NotForm
            | E::Repeated(_)
            | E::Missing(_)
            | E::UnsupportedTokenType(_)
            | E::TooManyTargetValues(_)
            | E::EmptyTarget(_)
            | E::TargetTooLong(_)
            | E::NoTarget
            | E::ActorTokenWithoutType
            | E::ActorTypeWithoutToken
            | E::NotForGrant(_) => bad(self.to_string()),
            E::Denied { kind, .. } => {
                let (status, code, description) = denial(*kind);
                (status, code, description.into())
            }
            E::NoCredentials { cloud, .. } => bad(format!("the matching rule issues no {cloud} credentials")),
            E::Cloud(CloudError::Refused { cloud, .. }) => (
                StatusCode::BAD_REQUEST,
                "invalid_target",
                format!("{} refused the credentials request", cloud_name(*cloud)),
            ),
            E::AwsIam(e) if e.is_unavailable() => unavailable,
            E::AwsIam(_) => {
                bad("subject_token is not an accepted signed AWS GetCallerIdentity request".into())
            }
            E::NoKeys(_) | E::ReplayStore(_) | E::Signing(_) | E::Cloud(CloudError::Unavailable { .. }) => {
                unavailable
            }
        }
    }

    /// The RFC error code (`invalid_request`, ...).
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// What the client is told.
    pub fn description(&self) -> String {
        self.parts().2
    }

    /// Whether the server would answer 503 (a transient failure, not a decision).
    pub fn is_unavailable(&self) -> bool {
        self.parts().0 == StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `/token` answers errors uncacheable (RFC 6749 §5.1), a 503 with `Retry-After: 5`,
/// a 405 with `Allow: POST`.
impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let (status, code, description) = self.parts();
        let mut answer = ErrorAnswer::new(status, code, description)
            .header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
            .header(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            answer = answer.header(header::RETRY_AFTER, HeaderValue::from(5));
        }
        if let TokenError::RateLimited(exceeded) = &self {
            answer = answer.header(
                header::RETRY_AFTER,
                HeaderValue::from(exceeded.retry_after_secs()),
            );
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            answer = answer.header(header::ALLOW, HeaderValue::from_static("POST"));
        }
        answer.into_response()
    }
}

/// How many rule names a 409 for an issuer in use lists.
pub const MAX_NAMED_RULES: usize = 20;

impl AdminError {
    /// Status, code, the client's description, and further members of the body.
    fn answer(&self) -> ErrorAnswer {
        use AdminError as E;
        let unavailable = |description: String| {
            ErrorAnswer::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                description,
            )
            .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        };
        match self {
            E::Unauthenticated => ErrorAnswer::new(StatusCode::UNAUTHORIZED, "invalid_token", self.to_string()).header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fedbroker-admin\""),
            ),
            E::NotFound { in_file, .. } => {
                let why = if *in_file {
                    " (it is defined in the configuration file: GET the list to see it)"
                } else {
                    ""
                };
                ErrorAnswer::new(StatusCode::NOT_FOUND, "not_found", format!("{self}{why}"))
            }
            E::NothingToDelete(_) | E::NoIssuer(_) => {
                ErrorAnswer::new(StatusCode::NOT_FOUND, "not_found", self.to_string())
            }
            E::Unavailable(_) => unavailable(self.to_string()),
            E::OwnedByFile { .. } => ErrorAnswer::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "{self}, which owns this name: change it there (the admin API lists it with \"read_only\": true)"
                ),
            ),
            E::InUse { rules, .. } => {
                let shown = &rules[..rules.len().min(MAX_NAMED_RULES)];
                let list = shown
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let more = match rules.len() - shown.len() {
                    0 => String::new(),
                    more => format!(" and {more} more"),
                };
                ErrorAnswer::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("{self}: {list}{more}; delete or change them first"),
                )
                .with("rules", shown.into())
                .with("rule_count", rules.len().into())
            }
            E::PreconditionFailed => {
                ErrorAnswer::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", self.to_string())
            }
            E::BodyTooLarge(_) => ErrorAnswer::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", self.to_string()),
            E::Invalid(problems) => {
                ErrorAnswer::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", self.to_string())
                    .with("errors", Value::Array(problems.clone()))
            }
            E::NoConfigFile | E::NotApplied | E::NotStored | E::Install(_) => unavailable(self.to_string()),
            E::Store(StoreError::Unauthenticated(_)) => unavailable(
                "the admin state in the store fails authentication (see the broker's log and /readyz): nothing changed"
                    .into(),
            ),
            E::Store(StoreError::Unavailable(_)) => {
                unavailable("the admin state store is unavailable: nothing changed, try again".into())
            }
            E::StoreTimedOut => unavailable(format!("{self}, try again")),
            E::OutcomeUnknown => unavailable(format!("{self}; read the item again before retrying")),
            E::KeptChanging => unavailable(format!("{self}: try again")),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        self.answer().into_response()
    }
}

/// The development issuer's token route answers errors like `/token`'s body, without
/// its headers.
impl IntoResponse for MintError {
    fn into_response(self) -> Response {
        match self {
            MintError::NotClaims => {
                ErrorAnswer::new(StatusCode::BAD_REQUEST, "invalid_request", self.to_string())
            }
            MintError::Signing(_) => ErrorAnswer::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "could not sign",
            ),
        }
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules crate names each denial's code too (in `explain --json`'s decision):
    /// both say the same.
    #[test]
    fn denials_map_to_the_codes_the_rules_crate_names() {
        for kind in [
            DenialKind::NoRuleForTarget,
            DenialKind::DeniedByPolicy,
            DenialKind::ScopeNotAllowed,
        ] {
            assert_eq!(denial(kind).1, kind.error_code());
        }
    }

    fn in_use_body(issuer: &str, users: &[&str]) -> Value {
        AdminError::InUse {
            issuer: issuer.into(),
            rules: users.iter().map(|r| r.to_string()).collect(),
        }
        .answer()
        .body()
    }

    #[test]
    fn the_409_names_the_first_rules_and_counts_them_all() {
        let names: Vec<String> = (0..25).map(|i| format!("rule-{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let body = in_use_body("gha", &refs);
        assert_eq!(body["rule_count"], 25);
        assert_eq!(body["rules"].as_array().expect("list").len(), MAX_NAMED_RULES);
        let text = body["error_description"].as_str().expect("text");
        assert!(text.contains("25 rule(s): `rule-00`, `rule-01`"), "{text}");
        assert!(text.contains("`rule-19` and 5 more"), "{text}");
        assert!(!text.contains("rule-20"), "{text}");
        let body = in_use_body("gha", &refs[..2]);
        assert_eq!(
            body["error_description"],
            "issuer `gha` is still used by 2 rule(s): `rule-00`, `rule-01`; delete or change them first"
        );
        assert_eq!(
            body.as_object().expect("object").keys().collect::<Vec<_>>(),
            ["error", "error_description", "rules", "rule_count"]
        );
    }
}
