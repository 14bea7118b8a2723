//! The token request as sent: the body read under its limits, the form parsed into a
//! [`TokenRequest`], every malformed request refused with its own [`TokenError`].

use std::borrow::Cow;
use std::collections::HashSet;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, header};

use super::{TokenError, TokenRole};
use federation_rules::Cloud;

use super::{
    CLIENT_ASSERTION_TYPE, GRANT_TYPE, GRANT_TYPE_CLIENT_CREDENTIALS, GRANT_TYPE_JWT_BEARER,
    MAX_TARGET_BYTES, MAX_TARGET_VALUES, TT_ACCESS_TOKEN, TT_AWS_CREDENTIALS, TT_AZURE_ACCESS_TOKEN,
    TT_GCP_ACCESS_TOKEN, TT_ID_TOKEN, TT_JWT,
};

const SINGLETONS: [&str; 11] = [
    "grant_type",
    "subject_token",
    "subject_token_type",
    "scope",
    "requested_token_type",
    "actor_token",
    "actor_token_type",
    "assertion",
    "client_assertion",
    "client_assertion_type",
    "client_id",
];

/// The grant a token request uses (`grant_type`). All three go through one pipeline;
/// they differ in where the home token is and what a bad one is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GrantType {
    /// RFC 8693: the home token is `subject_token`.
    #[default]
    TokenExchange,
    /// RFC 6749 §4.4 with RFC 7523 §2.2 client authentication: the home token is
    /// `client_assertion`; a bad one is `invalid_client` (401).
    ClientCredentials,
    /// RFC 7523 §2.1: the home token is `assertion`; a bad one is `invalid_grant`.
    JwtBearer,
}

impl GrantType {
    /// Every grant, as the metadata's `grant_types_supported` lists them.
    pub const ALL: [GrantType; 3] = [
        GrantType::TokenExchange,
        GrantType::ClientCredentials,
        GrantType::JwtBearer,
    ];

    /// Its `grant_type` value (what the audit line's `grant` says).
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::TokenExchange => GRANT_TYPE,
            GrantType::ClientCredentials => GRANT_TYPE_CLIENT_CREDENTIALS,
            GrantType::JwtBearer => GRANT_TYPE_JWT_BEARER,
        }
    }

    fn from_str(value: &str) -> Option<GrantType> {
        GrantType::ALL.into_iter().find(|g| g.as_str() == value)
    }

    /// Which parameter carries the home token, for errors about it.
    pub fn role(self) -> TokenRole {
        match self {
            GrantType::TokenExchange => TokenRole::Subject,
            GrantType::ClientCredentials => TokenRole::ClientAssertion,
            GrantType::JwtBearer => TokenRole::Assertion,
        }
    }

    /// What is issued when `requested_token_type` is absent: a JWT for the exchange
    /// (as before), an access token (`at+jwt`, `token_type` Bearer or DPoP) for the
    /// RFC 6749 grants, whose answer is an access token response.
    fn default_token_type(self) -> TokenType {
        match self {
            GrantType::TokenExchange => TokenType::Jwt,
            GrantType::ClientCredentials | GrantType::JwtBearer => TokenType::AccessToken,
        }
    }
}

/// The token type a request asks for (`requested_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenType {
    /// A JWT (`urn:ietf:params:oauth:token-type:jwt`), the default.
    #[default]
    Jwt,
    /// An OAuth access token in JWT form (RFC 9068, `typ: at+jwt`).
    AccessToken,
    /// A cloud's own credentials, for the JWT the broker mints (contract §9).
    Cloud(Cloud),
}

impl TokenType {
    /// Its URN, as `requested_token_type` and `issued_token_type` name it.
    pub fn urn(self) -> &'static str {
        match self {
            TokenType::Jwt => TT_JWT,
            TokenType::AccessToken => TT_ACCESS_TOKEN,
            TokenType::Cloud(cloud) => cloud_urn(cloud),
        }
    }

    /// The issued token's `typ` header.
    pub fn typ(self) -> &'static str {
        match self {
            TokenType::Jwt | TokenType::Cloud(_) => "JWT",
            TokenType::AccessToken => "at+jwt",
        }
    }

    /// The response's `token_type` (RFC 8693 §2.2.1: `N_A` for a token that is not an
    /// access token).
    pub fn token_type(self) -> &'static str {
        match self {
            TokenType::Jwt | TokenType::Cloud(Cloud::Aws) => "N_A",
            TokenType::AccessToken | TokenType::Cloud(_) => "Bearer",
        }
    }

    /// The type a `requested_token_type` URN names.
    pub fn from_urn(urn: &str) -> Option<TokenType> {
        match urn {
            TT_JWT => Some(TokenType::Jwt),
            TT_ACCESS_TOKEN => Some(TokenType::AccessToken),
            _ => CLOUDS
                .into_iter()
                .find(|c| cloud_urn(*c) == urn)
                .map(TokenType::Cloud),
        }
    }
}

const CLOUDS: [Cloud; 3] = [Cloud::Aws, Cloud::Gcp, Cloud::Azure];

/// The `requested_token_type` URN of a cloud's credentials (contract §9).
pub fn cloud_urn(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => TT_AWS_CREDENTIALS,
        Cloud::Gcp => TT_GCP_ACCESS_TOKEN,
        Cloud::Azure => TT_AZURE_ACCESS_TOKEN,
    }
}

/// The requested targets: `audience` and `resource` values, each deduplicated in
/// order, and both together (`audiences` then `resources`, deduplicated).
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub audiences: Vec<String>,
    pub resources: Vec<String>,
    pub all: Vec<String>,
}

impl Targets {
    /// From the values as sent (deduplicated here).
    fn from_values(audiences: &[Cow<'_, str>], resources: &[Cow<'_, str>]) -> Targets {
        let audiences = dedup(audiences.iter().map(|v| &**v));
        let resources = dedup(resources.iter().map(|v| &**v));
        let all = union(&audiences, &resources);
        Targets {
            audiences,
            resources,
            all,
        }
    }

    pub fn new(audiences: &[String], resources: &[String]) -> Targets {
        let audiences = union(audiences, &[]);
        let resources = union(resources, &[]);
        let all = union(&audiences, &resources);
        Targets {
            audiences,
            resources,
            all,
        }
    }
}

/// What `subject_token_type` says the subject token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectTokenType {
    /// A JWT (`jwt`, `id_token` or `access_token` URNs).
    #[default]
    Jwt,
    /// A signed AWS GetCallerIdentity request
    /// ([`issuers::aws_iam::TOKEN_TYPE`], contract §10).
    Aws4Request,
}

impl SubjectTokenType {
    /// The type a `subject_token_type` URN names (`None`: not supported).
    pub fn from_urn(urn: &str) -> Option<SubjectTokenType> {
        if supported_token_type(urn) {
            Some(SubjectTokenType::Jwt)
        } else if urn == issuers::aws_iam::TOKEN_TYPE {
            Some(SubjectTokenType::Aws4Request)
        } else {
            None
        }
    }
}

/// A parsed, well-formed token request.
pub struct TokenRequest {
    pub grant: GrantType,
    /// The home token: `subject_token`, `assertion` or `client_assertion` by grant.
    pub subject_token: String,
    pub subject_token_type: SubjectTokenType,
    pub targets: Targets,
    pub scope: Option<String>,
    pub scopes: Vec<String>,
    pub requested: TokenType,
    /// The actor token, for delegation.
    pub actor_token: Option<String>,
    /// `client_id` of a `client_credentials` request: when sent, it must equal the
    /// client assertion's `sub` (RFC 7523 §3).
    pub client_id: Option<String>,
}

/// Parameters of the token exchange only.
const EXCHANGE_ONLY: [&str; 4] = [
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
];

/// The values in order, each kept at its first occurrence: linear time (a hash set,
/// randomly keyed, so crafted values cannot make it quadratic).
fn dedup<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .into_iter()
        .filter(|v| seen.insert(*v))
        .map(str::to_owned)
        .collect()
}

/// `a` then the values of `b` not already in it.
pub(crate) fn union(a: &[String], b: &[String]) -> Vec<String> {
    dedup(a.iter().chain(b).map(String::as_str))
}

/// Space-separated scopes, deduplicated, in order.
pub(crate) fn split_scopes(scope: Option<&str>) -> Vec<String> {
    dedup(
        scope
            .into_iter()
            .flat_map(|s| s.split(' '))
            .filter(|s| !s.is_empty()),
    )
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

fn supported_token_type(t: &str) -> bool {
    matches!(t, TT_JWT | TT_ID_TOKEN | TT_ACCESS_TOKEN)
}

/// The token-request form parser's verdict, for the fuzz target: `Ok(number of
/// targets)` or the RFC error code. Never panics, whatever the bytes.
#[doc(hidden)]
pub fn check_token_form(body: &[u8]) -> Result<usize, &'static str> {
    parse_form(body)
        .map(|r| r.targets.all.len())
        .map_err(|e| e.code())
}

/// The body of a form POST, at most `limit` bytes.
pub(super) async fn read_body(req: Request, limit: usize) -> Result<Bytes, TokenError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(TokenError::BodyTooLarge(limit));
    }
    if !is_form(&parts.headers) {
        return Err(TokenError::NotForm);
    }
    axum::body::to_bytes(Body::new(body), limit).await.map_err(
        |e| match crate::listener::body_timeout_message(&e) {
            Some(message) => TokenError::BodyTimeout(message),
            None => TokenError::BodyTooLarge(limit),
        },
    )
}

/// Parse a token request body. One pass over the form: each parameter the broker reads
/// is decoded once (borrowed from the body when it needs no decoding, as tokens never
/// do), and every other parameter is skipped without a copy.
pub fn parse_form(body: &[u8]) -> Result<TokenRequest, TokenError> {
    let mut singles: [Option<Cow<'_, str>>; SINGLETONS.len()] = Default::default();
    let mut repeated: Option<usize> = None;
    let mut lists: [Vec<Cow<'_, str>>; 2] = Default::default();
    for (k, v) in form_urlencoded::parse(body) {
        if let Some(i) = SINGLETONS.iter().position(|name| *name == k) {
            if singles[i].is_some() {
                repeated = Some(repeated.map_or(i, |r| r.min(i)));
            }
            singles[i] = Some(v);
        } else if let Some(i) = ["audience", "resource"].iter().position(|name| *name == k) {
            lists[i].push(v);
        }
    }
    if let Some(i) = repeated {
        return Err(TokenError::Repeated(SINGLETONS[i]));
    }
    let one = |name: &str| -> Option<String> {
        SINGLETONS
            .iter()
            .position(|n| *n == name)
            .and_then(|i| singles[i].as_deref())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let grant = match one("grant_type") {
        None => return Err(TokenError::Missing("grant_type")),
        Some(g) => GrantType::from_str(&g).ok_or(TokenError::UnsupportedGrantType)?,
    };
    let present = |name: &str| one(name).is_some();
    // The home token: one parameter per grant. The others' parameters are refused
    // rather than ignored, so that no one believes a delegation or a second token
    // was checked when it was not.
    let (subject_token, subject_token_type) = match grant {
        GrantType::TokenExchange => {
            let token = one("subject_token").ok_or(TokenError::Missing("subject_token"))?;
            let ty = one("subject_token_type").ok_or(TokenError::Missing("subject_token_type"))?;
            let ty = SubjectTokenType::from_urn(&ty)
                .ok_or(TokenError::UnsupportedTokenType("subject_token_type"))?;
            (token, ty)
        }
        GrantType::JwtBearer => {
            for name in EXCHANGE_ONLY
                .into_iter()
                .chain(["client_assertion", "client_assertion_type"])
            {
                if present(name) {
                    return Err(TokenError::NotForGrant(name));
                }
            }
            let token = one("assertion").ok_or(TokenError::Missing("assertion"))?;
            (token, SubjectTokenType::Jwt)
        }
        GrantType::ClientCredentials => {
            for name in EXCHANGE_ONLY.into_iter().chain(["assertion"]) {
                if present(name) {
                    return Err(TokenError::NotForGrant(name));
                }
            }
            match one("client_assertion_type") {
                None => {
                    return Err(TokenError::ClientAuthentication(
                        "client_assertion_type is missing",
                    ));
                }
                Some(t) if t != CLIENT_ASSERTION_TYPE => {
                    return Err(TokenError::ClientAuthentication(
                        "unsupported client_assertion_type",
                    ));
                }
                Some(_) => {}
            }
            let token = one("client_assertion")
                .ok_or(TokenError::ClientAuthentication("client_assertion is missing"))?;
            (token, SubjectTokenType::Jwt)
        }
    };
    let client_id = match grant {
        GrantType::ClientCredentials => one("client_id"),
        _ => None,
    };
    for (name, values) in ["audience", "resource"].into_iter().zip(&lists) {
        if values.len() > MAX_TARGET_VALUES {
            return Err(TokenError::TooManyTargetValues(name));
        }
        for v in values {
            if v.is_empty() {
                return Err(TokenError::EmptyTarget(name));
            }
            if v.len() > MAX_TARGET_BYTES {
                return Err(TokenError::TargetTooLong(name));
            }
        }
    }
    let targets = Targets::from_values(&lists[0], &lists[1]);
    if targets.all.is_empty() {
        return Err(TokenError::NoTarget);
    }
    let requested = match one("requested_token_type") {
        None => grant.default_token_type(),
        Some(urn) => {
            TokenType::from_urn(&urn).ok_or(TokenError::UnsupportedTokenType("requested_token_type"))?
        }
    };
    let actor_token = match (one("actor_token"), one("actor_token_type")) {
        (None, None) => None,
        (Some(_), None) => return Err(TokenError::ActorTokenWithoutType),
        (None, Some(_)) => return Err(TokenError::ActorTypeWithoutToken),
        (Some(_), Some(ty)) if !supported_token_type(&ty) => {
            return Err(TokenError::UnsupportedTokenType("actor_token_type"));
        }
        (Some(t), Some(_)) => Some(t),
    };
    let scope = one("scope");
    let scopes = split_scopes(scope.as_deref());
    Ok(TokenRequest {
        grant,
        client_id,
        subject_token,
        subject_token_type,
        targets,
        scope,
        scopes,
        requested,
        actor_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        s.finish().into_bytes()
    }

    const BASE: [(&str, &str); 4] = [
        ("grant_type", GRANT_TYPE),
        ("subject_token", "a.b.c"),
        ("subject_token_type", TT_JWT),
        ("audience", "x"),
    ];

    #[test]
    fn parses_a_complete_request() {
        let mut pairs = BASE.to_vec();
        pairs.push(("resource", "y"));
        pairs.push(("audience", "x"));
        pairs.push(("scope", "a b a"));
        let r = parse_form(&form(&pairs)).expect("valid");
        assert_eq!(r.targets.all, vec!["x", "y"]);
        assert_eq!(r.scopes, vec!["a", "b"]);
        assert_eq!(r.requested, TokenType::Jwt);
    }

    #[test]
    fn maps_request_errors_to_rfc_codes() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (BASE[1..].to_vec(), "invalid_request"),
            (vec![("grant_type", "password")], "unsupported_grant_type"),
            (
                [BASE.to_vec(), vec![("grant_type", GRANT_TYPE)]].concat(),
                "invalid_request",
            ),
            (vec![BASE[0], BASE[2], BASE[3]], "invalid_request"),
            (vec![BASE[0], BASE[1], BASE[3]], "invalid_request"),
            (
                vec![BASE[0], BASE[1], ("subject_token_type", "urn:x"), BASE[3]],
                "invalid_request",
            ),
            (BASE[..3].to_vec(), "invalid_request"),
            (
                [BASE.to_vec(), vec![("actor_token", "a.b.c")]].concat(),
                "invalid_request",
            ),
            (
                [BASE.to_vec(), vec![("actor_token_type", TT_JWT)]].concat(),
                "invalid_request",
            ),
            (
                [BASE.to_vec(), vec![("requested_token_type", "urn:x")]].concat(),
                "invalid_request",
            ),
            (
                [BASE.to_vec(), vec![("scope", "a"), ("scope", "b")]].concat(),
                "invalid_request",
            ),
        ];
        for (pairs, code) in cases {
            let err = parse_form(&form(&pairs))
                .err()
                .unwrap_or_else(|| panic!("{pairs:?} must fail"));
            assert_eq!(err.code(), code, "{pairs:?}");
            assert!(!err.description().contains("a.b.c"));
        }
    }

    #[test]
    fn parses_the_rfc_7523_grants() {
        let r = parse_form(&form(&[
            ("grant_type", GRANT_TYPE_JWT_BEARER),
            ("assertion", "a.b.c"),
            ("audience", "x"),
        ]))
        .expect("jwt-bearer");
        assert_eq!(
            (r.grant, r.subject_token.as_str()),
            (GrantType::JwtBearer, "a.b.c")
        );
        assert_eq!(r.requested, TokenType::AccessToken, "an access token by default");
        let r = parse_form(&form(&[
            ("grant_type", GRANT_TYPE_CLIENT_CREDENTIALS),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", "a.b.c"),
            ("client_id", "me"),
            ("resource", "x"),
            ("requested_token_type", TT_JWT),
        ]))
        .expect("client_credentials");
        assert_eq!(r.grant, GrantType::ClientCredentials);
        assert_eq!(
            (r.subject_token.as_str(), r.client_id.as_deref()),
            ("a.b.c", Some("me"))
        );
        assert_eq!(r.requested, TokenType::Jwt);
        assert_eq!(r.grant.role(), TokenRole::ClientAssertion);

        let cc = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("grant_type", GRANT_TYPE_CLIENT_CREDENTIALS), ("audience", "x")];
            pairs.extend_from_slice(extra);
            parse_form(&form(&pairs)).err().map(|e| e.code())
        };
        assert_eq!(cc(&[]), Some("invalid_client"));
        assert_eq!(cc(&[("client_assertion", "a.b.c")]), Some("invalid_client"));
        assert_eq!(
            cc(&[("client_assertion", "a.b.c"), ("client_assertion_type", "urn:x")]),
            Some("invalid_client")
        );
        assert_eq!(
            cc(&[
                ("client_assertion", "a.b.c"),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("actor_token", "t")
            ]),
            Some("invalid_request")
        );
        let jb = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("grant_type", GRANT_TYPE_JWT_BEARER), ("audience", "x")];
            pairs.extend_from_slice(extra);
            parse_form(&form(&pairs)).err().map(|e| e.code())
        };
        assert_eq!(jb(&[]), Some("invalid_request"));
        assert_eq!(
            jb(&[("assertion", "a.b.c"), ("subject_token", "a.b.c")]),
            Some("invalid_request")
        );
        assert_eq!(
            jb(&[("assertion", "a.b.c"), ("client_assertion", "a.b.c")]),
            Some("invalid_request")
        );
        assert_eq!(jb(&[("assertion", "a.b.c")]), None);
    }

    #[test]
    fn caps_the_number_and_length_of_targets() {
        let values: Vec<String> = (0..=MAX_TARGET_VALUES).map(|i| format!("t{i}")).collect();
        for name in ["audience", "resource"] {
            let mut pairs = BASE[..3].to_vec();
            pairs.extend(values[..MAX_TARGET_VALUES].iter().map(|v| (name, v.as_str())));
            let r = parse_form(&form(&pairs)).expect("at the cap");
            assert_eq!(r.targets.all.len(), MAX_TARGET_VALUES);
            pairs.push((name, "one-more"));
            let err = parse_form(&form(&pairs)).err().expect("over the cap");
            assert_eq!(err.code(), "invalid_request");
            // Repeats count as sent: they cost parsing all the same.
            let mut pairs = BASE[..3].to_vec();
            pairs.extend(std::iter::repeat_n((name, "same"), MAX_TARGET_VALUES + 1));
            assert!(parse_form(&form(&pairs)).is_err());
        }
        let longest = "x".repeat(MAX_TARGET_BYTES);
        let too_long = "x".repeat(MAX_TARGET_BYTES + 1);
        let mut pairs = BASE[..3].to_vec();
        pairs.push(("resource", &longest));
        assert!(parse_form(&form(&pairs)).is_ok());
        pairs.push(("audience", &too_long));
        let err = parse_form(&form(&pairs)).err().expect("too long");
        assert_eq!(err.code(), "invalid_request");
        assert!(!err.to_string().contains(&too_long));
    }

    #[test]
    fn deduplicates_in_order() {
        let a: Vec<String> = ["x", "y", "x", "z"].map(String::from).to_vec();
        let b: Vec<String> = ["z", "w", "y"].map(String::from).to_vec();
        assert_eq!(union(&a, &b), ["x", "y", "z", "w"]);
        assert_eq!(split_scopes(Some("b a  b c a")), ["b", "a", "c"]);
        assert!(split_scopes(None).is_empty());
    }

    #[test]
    fn content_type_must_be_form() {
        let mut h = HeaderMap::new();
        assert!(!is_form(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        assert!(is_form(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_form(&h));
    }
}
