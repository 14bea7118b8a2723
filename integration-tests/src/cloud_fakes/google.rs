//! A fake of Google's Security Token Service and IAM Credentials API, on one base URL.
//!
//! # `POST /v1/token` (STS token exchange)
//!
//! Follows <https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token>
//! (the `GoogleIdentityStsV1ExchangeTokenRequest` fields) and the workload identity
//! pool provider's OIDC settings,
//! <https://cloud.google.com/iam/docs/reference/rest/v1/projects.locations.workloadIdentityPools.providers#oidc>:
//!
//! - form-encoded (or JSON) `grant_type` = token exchange, `requested_token_type` =
//!   access token, `subject_token_type` = `jwt` or `id_token`, `subject_token`, `scope`
//!   (optional) and `audience` = `//iam.googleapis.com/projects/NUM/locations/global/
//!   workloadIdentityPools/POOL/providers/PROV`. An `audience` not of that form:
//!   400 `invalid_request` ("Invalid value for \"audience\"..."), one of that form
//!   naming another provider: 400 `invalid_target` (both texts as Google sends them,
//!   quoted in google-github-actions/auth issues #60 and #17);
//! - the subject token's header has a `kid` and `alg` RS256 or ES256 (the STS
//!   reference: "Must be RS256 or ES256");
//! - `iss` equals the provider's issuer URI exactly, and the keys come from
//!   `{issuer}/.well-known/openid-configuration` → `jwks_uri`; a key with members
//!   other than kty/alg/use/kid/n/e/x/y/crv is refused (the provider reference on
//!   `jwksJson`, and "x5c and x5t fields aren't supported" in
//!   <https://cloud.google.com/iam/docs/troubleshooting-workload-identity-federation>);
//! - `aud` is one of the provider's allowed audiences; when none are configured, the
//!   provider's full canonical resource name "with or without the HTTPS prefix"
//!   (`//iam.googleapis.com/...` or `https://iam.googleapis.com/...`);
//! - `iat` in the past, `exp` in the future and "less than 48 hours after iat";
//! - `google.subject` (mapped from `assertion.sub`) at most 127 bytes.
//!
//! Token refusals are 400 `invalid_grant` with an `error_description` (OAuth error
//! shape, RFC 6749 §5.2, which STS uses); but for the two `audience` texts above, the
//! descriptions are close to Google's, not copies, so match on `error`, not on them.
//! An oversized `google.subject` is 400 `invalid_request`. Success: `access_token` (opaque),
//! `issued_token_type` (access token URN), `token_type` `Bearer`, `expires_in` 3600.
//!
//! # `POST /v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken`
//!
//! Follows <https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken>:
//! `Authorization: Bearer` a federated token this fake's STS issued and still valid
//! (else 401 `UNAUTHENTICATED`, the text of the troubleshooting page above); the `-`
//! wildcard is required in place of the project; JSON `{"scope": [...] (at least one),
//! "lifetime": "3600s"}`, lifetime at most 1 hour ("By default, the maximum allowed
//! value is 1 hour"), default 1 hour; a service account not in the setup's list: 403
//! `PERMISSION_DENIED` ("Permission 'iam.serviceAccounts.getAccessToken' denied on
//! resource (or it may not exist)."). Errors use Google's API error shape
//! `{"error": {"code", "message", "status"}}` (<https://cloud.google.com/apis/design/errors>).
//! Success: `{"accessToken", "expireTime"}` (RFC 3339).
//!
//! # Faults
//!
//! [`Fault::Status`] answers with Google's API error shape and the canonical status
//! for the code (429 `RESOURCE_EXHAUSTED`, 500 `INTERNAL`, 503 `UNAVAILABLE`, ...).
//! [`Fault::Refuse`]: STS 400 `invalid_grant`, IAM Credentials 403 `PERMISSION_DENIED`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::Response;
use axum::routing::post;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

use super::verify::{self, KeyPolicy, VerifyError};
use super::{Common, Fault, RecordedRequest, Served, body_fields, json_response, lock, opaque_token, stall};
use crate::tokens::{
    GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT, now,
};

/// Lifetime of the federated tokens STS issues, and the default and cap of
/// `generateAccessToken`'s lifetime.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;
/// "exp ... Must be less than 48 hours after iat."
pub const MAX_SUBJECT_TOKEN_LIFETIME_SECS: i64 = 48 * 3600;
/// The limit on `google.subject`, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 127;

const IAM_HOST: &str = "iam.googleapis.com";

/// The workload identity provider and service accounts the fake plays.
#[derive(Clone, Debug)]
pub struct GoogleSetup {
    /// The provider's issuer URI; `iss` must equal it exactly (the broker's public URL).
    pub issuer: String,
    pub project_number: String,
    pub pool: String,
    pub provider: String,
    /// The provider's allowed audiences; empty = Google's default (the provider's
    /// resource name, with `//` or `https://`).
    pub allowed_audiences: Vec<String>,
    /// Service accounts the federated principals may impersonate.
    pub service_accounts: Vec<String>,
    /// A CA (PEM file) to trust for the issuer's discovery and JWKS, when the issuer
    /// is HTTPS with a test CA; `None`: plain HTTP or public roots.
    pub issuer_ca_file: Option<PathBuf>,
}

impl GoogleSetup {
    /// Project `123456789012`, pool `fedbroker-pool`, provider `fedbroker`, default
    /// audiences, service account `deployer@proj.iam.gserviceaccount.com`.
    pub fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            project_number: "123456789012".to_owned(),
            pool: "fedbroker-pool".to_owned(),
            provider: "fedbroker".to_owned(),
            allowed_audiences: Vec::new(),
            service_accounts: vec!["deployer@proj.iam.gserviceaccount.com".to_owned()],
            issuer_ca_file: None,
        }
    }

    /// `projects/NUM/locations/global/workloadIdentityPools/POOL/providers/PROV`.
    fn provider_path(&self) -> String {
        format!(
            "projects/{}/locations/global/workloadIdentityPools/{}/providers/{}",
            self.project_number, self.pool, self.provider
        )
    }

    /// The STS `audience` parameter naming this provider: `//iam.googleapis.com/projects/...`.
    pub fn audience(&self) -> String {
        format!("//{IAM_HOST}/{}", self.provider_path())
    }

    /// The `aud` a subject token carries by default:
    /// `https://iam.googleapis.com/projects/.../providers/PROV`.
    pub fn default_token_audience(&self) -> String {
        format!("https://{IAM_HOST}/{}", self.provider_path())
    }

    /// The audiences a subject token's `aud` may name.
    pub fn effective_allowed_audiences(&self) -> Vec<String> {
        if self.allowed_audiences.is_empty() {
            vec![self.audience(), self.default_token_audience()]
        } else {
            self.allowed_audiences.clone()
        }
    }
}

/// Which of the two APIs a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoogleEndpoint {
    /// `POST /v1/token`.
    Sts,
    /// `POST /v1/projects/-/serviceAccounts/...:generateAccessToken`.
    IamCredentials,
}

/// A token the fake issued (by [`FakeGoogle::issued`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedGoogleToken {
    /// `None` for an STS federated token; the impersonated account for a
    /// `generateAccessToken` one.
    pub service_account: Option<String>,
    /// The subject token's `sub` (google.subject) behind it.
    pub subject: String,
    /// `scope` of the STS request (space-separated), or the requested scopes.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

struct Shared {
    setup: GoogleSetup,
    common: Common,
    iam_fault: Mutex<Option<Fault>>,
    /// Issued token → what it stands for.
    issued: Mutex<HashMap<String, IssuedGoogleToken>>,
    client: reqwest::Client,
}

/// A running fake of sts.googleapis.com and iamcredentials.googleapis.com. Dropping it
/// stops it.
pub struct FakeGoogle {
    shared: Arc<Shared>,
    served: Served,
}

impl FakeGoogle {
    /// Serve plain HTTP on a loopback port.
    pub fn start(setup: GoogleSetup) -> Self {
        Self::start_inner(setup, false)
    }

    /// Serve HTTPS (a certificate for `127.0.0.1` from a fresh private CA, see
    /// [`ca_pem`](Self::ca_pem)), for clients that insist on TLS.
    pub fn start_https(setup: GoogleSetup) -> Self {
        Self::start_inner(setup, true)
    }

    fn start_inner(setup: GoogleSetup, https: bool) -> Self {
        let setup_ca = setup.issuer_ca_file.clone();
        let shared = Arc::new(Shared {
            setup,
            common: Common::default(),
            iam_fault: Mutex::new(None),
            issued: Mutex::new(HashMap::new()),
            client: verify::key_client(setup_ca.as_deref()),
        });
        let app = Router::new()
            .route("/v1/token", post(sts_token))
            .route(
                "/v1/projects/{project}/serviceAccounts/{action}",
                post(generate_access_token),
            )
            .with_state(shared.clone());
        Self {
            shared,
            served: Served::start("fake-google", app, https),
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` from [`start_https`](Self::start_https)): the base of both APIs (STS at `/v1/token`).
    pub fn url(&self) -> String {
        self.served.url()
    }

    /// The CA certificate (PEM file) to trust for [`url`](Self::url), when started with
    /// [`start_https`](Self::start_https).
    pub fn ca_pem(&self) -> Option<PathBuf> {
        self.served.ca_pem()
    }

    /// `{url}/v1/token`.
    pub fn token_url(&self) -> String {
        format!("{}/v1/token", self.url())
    }

    /// `{url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken`.
    pub fn generate_access_token_url(&self, email: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
            self.url()
        )
    }

    pub fn setup(&self) -> &GoogleSetup {
        &self.shared.setup
    }

    /// Every request received so far, oldest first (tokens replaced, see [`RecordedRequest`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.common.requests()
    }

    /// Apply `fault` to both APIs (and clear an [`set_fault_on`](Self::set_fault_on)
    /// for IAM Credentials).
    pub fn set_fault(&self, fault: Fault) {
        self.shared.common.set_fault(fault);
        *lock(&self.shared.iam_fault) = None;
    }

    /// Apply `fault` to one API only; the other keeps its own.
    pub fn set_fault_on(&self, endpoint: GoogleEndpoint, fault: Fault) {
        match endpoint {
            GoogleEndpoint::Sts => self.shared.common.set_fault(fault),
            GoogleEndpoint::IamCredentials => *lock(&self.shared.iam_fault) = Some(fault),
        }
    }

    /// What `token` is, if this fake issued it (expired ones included).
    pub fn issued(&self, token: &str) -> Option<IssuedGoogleToken> {
        lock(&self.shared.issued).get(token).cloned()
    }

    /// Stop serving: connections are refused from now on.
    pub fn stop(&self) {
        self.served.stop();
    }
}

/// Google's API error body (`google.rpc.Status` over HTTP).
fn api_error(code: u16, message: &str) -> Response {
    let status = match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => {
            if code >= 500 {
                "INTERNAL"
            } else {
                "FAILED_PRECONDITION"
            }
        }
    };
    json_response(
        code,
        json!({"error": {"code": code, "message": message, "status": status}}),
        None,
    )
}

fn fault_status_message(code: u16) -> &'static str {
    match code {
        429 => "Quota exceeded for quota metric 'Token exchange requests' of service 'sts.googleapis.com'.",
        503 => "The service is currently unavailable.",
        500 => "Internal error encountered.",
        504 => "The request timed out.",
        _ => "Injected failure.",
    }
}

/// The OAuth error body STS answers refusals with.
fn oauth_error(error: &str, description: &str) -> Response {
    json_response(
        400,
        json!({"error": error, "error_description": description}),
        None,
    )
}

fn invalid_grant(description: &str) -> Response {
    oauth_error("invalid_grant", description)
}

fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    fields.get(name).and_then(Value::as_str).map(str::to_owned)
}

async fn sts_token(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let fields = body_fields(&headers, &body);
    let mut recorded = fields.clone().unwrap_or_default();
    if let Some(Value::String(token)) = recorded.get("subject_token").cloned() {
        recorded.insert("subject_token".to_owned(), verify::redacted(&token));
    }
    shared
        .common
        .record(Method::POST.as_str(), uri.path(), Value::Object(recorded));

    match shared.common.fault() {
        Fault::None => {}
        Fault::Status(code) => return api_error(code, fault_status_message(code)),
        Fault::Stall => return stall().await,
        Fault::Refuse => {
            return invalid_grant(
                "The caller does not have permission to exchange this token (injected refusal).",
            );
        }
    }
    let Some(fields) = fields else {
        return oauth_error(
            "invalid_request",
            "The request body is neither form-encoded nor a JSON object.",
        );
    };
    match exchange(&shared, &fields).await {
        Ok(response) => response,
        Err(response) => response,
    }
}

async fn exchange(shared: &Shared, fields: &Map<String, Value>) -> Result<Response, Response> {
    let setup = &shared.setup;
    let grant_type = text(fields, "grant_type").unwrap_or_default();
    if grant_type != GRANT_TYPE_TOKEN_EXCHANGE {
        return Err(oauth_error(
            "unsupported_grant_type",
            &format!(
                "Invalid value for \"grant_type\": {grant_type:?}. Expected {GRANT_TYPE_TOKEN_EXCHANGE}."
            ),
        ));
    }
    let requested = text(fields, "requested_token_type").unwrap_or_default();
    if requested != TOKEN_TYPE_ACCESS_TOKEN {
        return Err(oauth_error(
            "invalid_request",
            &format!("Invalid value for \"requested_token_type\": {requested:?}."),
        ));
    }
    let audience = text(fields, "audience").unwrap_or_default();
    if !is_provider_resource_name(&audience) {
        return Err(oauth_error(
            "invalid_request",
            "Invalid value for \"audience\". This value should be the full resource name of the Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the list of possible formats.",
        ));
    }
    if audience != setup.audience() {
        return Err(oauth_error(
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.",
        ));
    }
    let subject_type = text(fields, "subject_token_type").unwrap_or_default();
    if subject_type != TOKEN_TYPE_JWT && subject_type != TOKEN_TYPE_ID_TOKEN {
        return Err(oauth_error(
            "invalid_request",
            &format!(
                "Invalid value for \"subject_token_type\": {subject_type:?}. An OIDC provider accepts {TOKEN_TYPE_JWT} or {TOKEN_TYPE_ID_TOKEN}."
            ),
        ));
    }
    let Some(token) = text(fields, "subject_token").filter(|t| !t.is_empty()) else {
        return Err(oauth_error(
            "invalid_request",
            "Missing required parameter: \"subject_token\".",
        ));
    };

    // `iss` is checked before any fetch: Google fetches the configured issuer's keys,
    // never a URL the token names.
    let Some((_, unverified)) = verify::decode_parts(&token) else {
        return Err(invalid_grant("Unable to parse the ID Token."));
    };
    let iss = unverified["iss"].as_str().unwrap_or_default();
    if iss != setup.issuer {
        return Err(invalid_grant(&format!(
            "The issuer in ID Token {iss} does not match the expected ones."
        )));
    }
    let policy = KeyPolicy {
        algorithms: &[Algorithm::RS256, Algorithm::ES256],
        max_keys: None,
        skip_non_sig_use: false,
        allowed_members: Some(&["kty", "alg", "use", "kid", "n", "e", "x", "y", "crv"]),
    };
    let (_, claims) = verify::verify_signature(&shared.client, &token, &setup.issuer, policy)
        .await
        .map_err(|e| {
            invalid_grant(&match e {
                VerifyError::Malformed(why) => format!("Unable to parse the ID Token: {why}."),
                VerifyError::NoKid => "The ID Token header has no \"kid\".".to_owned(),
                VerifyError::Algorithm(alg) => {
                    format!("The ID Token is signed with {alg:?}; only RS256 and ES256 are supported.")
                }
                VerifyError::KeysUnavailable(why) => format!("Unable to fetch the issuer's keys: {why}."),
                VerifyError::KidNotFound(kid) => {
                    format!("The kid {kid:?} of the ID Token was not found in the issuer's JWKS.")
                }
                VerifyError::KeyMembers(why) => format!("Input JWK is not in a valid json format: {why}."),
                VerifyError::Signature => "Invalid ID Token: the signature does not verify.".to_owned(),
            })
        })?;

    let allowed = setup.effective_allowed_audiences();
    let auds: Vec<&str> = match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !auds.iter().any(|a| allowed.iter().any(|x| x == a)) {
        return Err(invalid_grant(&format!(
            "The audience in ID Token [{}] does not match the expected audience.",
            auds.join(", ")
        )));
    }
    let now = now();
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err(invalid_grant(
            "The ID Token must carry numeric \"iat\" and \"exp\" claims.",
        ));
    };
    if iat > now {
        return Err(invalid_grant(&format!(
            "ID Token issued at {iat} is in the future (now {now})."
        )));
    }
    if exp <= now {
        return Err(invalid_grant(&format!("ID Token expired at {exp} (now {now}).")));
    }
    if exp - iat >= MAX_SUBJECT_TOKEN_LIFETIME_SECS {
        return Err(invalid_grant(
            "The ID Token's exp must be less than 48 hours after its iat.",
        ));
    }
    let Some(subject) = claims["sub"].as_str().filter(|s| !s.is_empty()) else {
        return Err(invalid_grant(
            "The mapped attribute google.subject (assertion.sub) is missing or empty.",
        ));
    };
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(oauth_error(
            "invalid_request",
            &format!(
                "The size of mapped attribute google.subject exceeds the {MAX_SUBJECT_BYTES} bytes limit. Either modify your attribute mapping or the incoming assertion to produce a shorter subject."
            ),
        ));
    }

    let access_token = opaque_token("ya29.fake-sts-");
    let scopes = text(fields, "scope")
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    lock(&shared.issued).insert(
        access_token.clone(),
        IssuedGoogleToken {
            service_account: None,
            subject: subject.to_owned(),
            scopes,
            expires_at: now + TOKEN_LIFETIME_SECS,
        },
    );
    Ok(json_response(
        200,
        json!({
            "access_token": access_token,
            "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
        }),
        None,
    ))
}

/// `//iam.googleapis.com/projects/NUM/locations/global/workloadIdentityPools/POOL/providers/PROV`.
fn is_provider_resource_name(audience: &str) -> bool {
    let Some(path) = audience.strip_prefix("//iam.googleapis.com/") else {
        return false;
    };
    let parts: Vec<&str> = path.split('/').collect();
    matches!(
        parts.as_slice(),
        ["projects", num, "locations", _, "workloadIdentityPools", pool, "providers", prov]
            if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) && !pool.is_empty() && !prov.is_empty()
    )
}

async fn generate_access_token(
    State(shared): State<Arc<Shared>>,
    Path((project, action)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let known = bearer
        .as_deref()
        .and_then(|t| lock(&shared.issued).get(t).cloned());
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut recorded = match &parsed {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    let auth_note = match (&bearer, &known) {
        (Some(_), Some(_)) => "Bearer <known>".to_owned(),
        (Some(_), None) => "Bearer <unknown>".to_owned(),
        (None, _) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("<none>")
            .to_owned(),
    };
    recorded.insert("authorization".to_owned(), Value::String(auth_note));
    shared
        .common
        .record(Method::POST.as_str(), uri.path(), Value::Object(recorded));

    let fault = lock(&shared.iam_fault)
        .clone()
        .unwrap_or_else(|| shared.common.fault());
    let Some(email) = action.strip_suffix(":generateAccessToken") else {
        return api_error(404, &format!("Method not found: {action}."));
    };
    match fault {
        Fault::None => {}
        Fault::Status(code) => return api_error(code, fault_status_message(code)),
        Fault::Stall => return stall().await,
        Fault::Refuse => return permission_denied(),
    }

    let now = now();
    let Some(caller) = known.filter(|t| t.service_account.is_none() && t.expires_at > now) else {
        return api_error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        );
    };
    if project != "-" {
        return api_error(
            400,
            "The project in the resource name must be the wildcard \"-\": projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}.",
        );
    }
    let Some(Value::Object(request)) = parsed else {
        return api_error(400, "Invalid JSON payload received.");
    };
    if !shared.setup.service_accounts.iter().any(|sa| sa == email) {
        return permission_denied();
    }
    let scopes: Vec<String> = match request.get("scope") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    if scopes.is_empty() {
        return api_error(400, "Scope required.");
    }
    let lifetime = match request.get("lifetime") {
        None => TOKEN_LIFETIME_SECS,
        Some(Value::String(s)) => match parse_duration(s) {
            Some(secs) => secs,
            None => {
                return api_error(
                    400,
                    &format!("Invalid value at 'lifetime' ({s:?}): not a duration."),
                );
            }
        },
        Some(other) => {
            return api_error(
                400,
                &format!("Invalid value at 'lifetime' ({other}): not a duration."),
            );
        }
    };
    if lifetime <= 0 || lifetime > TOKEN_LIFETIME_SECS {
        return api_error(
            400,
            &format!(
                "The lifetime of the requested token ({lifetime}s) must be between 1s and {TOKEN_LIFETIME_SECS}s; see https://cloud.google.com/iam/help/credentials/lifetime."
            ),
        );
    }
    let access_token = opaque_token("ya29.fake-sa-");
    let expires_at = now + lifetime;
    lock(&shared.issued).insert(
        access_token.clone(),
        IssuedGoogleToken {
            service_account: Some(email.to_owned()),
            subject: caller.subject,
            scopes,
            expires_at,
        },
    );
    json_response(
        200,
        json!({"accessToken": access_token, "expireTime": super::rfc3339(expires_at)}),
        None,
    )
}

fn permission_denied() -> Response {
    json_response(
        403,
        json!({"error": {
            "code": 403,
            "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": {"permission": "iam.serviceAccounts.getAccessToken"},
            }],
        }}),
        None,
    )
}

/// A protobuf JSON duration, `"3600s"` or `"3600.5s"`, in whole seconds (rounded down).
fn parse_duration(s: &str) -> Option<i64> {
    let number = s.strip_suffix('s')?;
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    whole.parse().ok()
}
