//! A fake of the Microsoft Entra token endpoint for the client credentials grant with
//! a federated client assertion (workload identity federation).
//!
//! `POST /{tenant}/oauth2/v2.0/token`, form-encoded, follows
//! <https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow#third-case-access-token-request-with-a-federated-credential>:
//! `client_id`, `scope` (one resource's `/.default`), `grant_type=client_credentials`,
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
//! `client_assertion` = the external JWT. The checks follow
//! <https://learn.microsoft.com/entra/workload-id/workload-identity-federation-considerations>
//! and <https://learn.microsoft.com/graph/api/resources/federatedidentitycredential>:
//!
//! - the tenant and the application (`client_id`) are known;
//! - a federated identity credential of the application matches the assertion's
//!   `iss` and `sub` exactly (case-sensitive) and its `aud` (`api://AzureADTokenExchange`
//!   unless configured otherwise); otherwise 400 `invalid_request` AADSTS70021 ("No
//!   matching federated identity record found for presented assertion. Assertion
//!   Issuer: ... Subject: ... Audience: ..."), the body quoted in
//!   Azure/azure-workload-identity issue #616;
//! - the assertion is signed with an RSA algorithm (RS256/384/512, PS256/384/512):
//!   Entra refuses elliptic-curve and other algorithms with 401 `invalid_client`
//!   AADSTS5002738 ("Invalid JWT token. 'ES256' is not a supported signature
//!   algorithm", quoted in AzureAD/microsoft-identity-web issue #3467, which also
//!   lists the RSA algorithms Entra supports for federation). A key whose JWK names
//!   another `alg` than the header's is not used;
//! - the keys come from the credential's issuer: `{issuer}/.well-known/openid-configuration`
//!   → `jwks_uri`, of which only the first 100 keys are read, and a key whose `use` is
//!   present and not `sig` is ignored (the limits issue 12 §3 lists for Entra, from
//!   the considerations page); a missing kid or bad signature: 401
//!   `invalid_client` AADSTS700027; the issuer unreachable: 400 `invalid_request`
//!   AADSTS50166;
//! - `exp` in the future (and `nbf`, when present, in the past): else 401
//!   `invalid_client` AADSTS700024 ("Client assertion is not within its valid time
//!   range").
//!
//! The AADSTS codes are those of
//! <https://learn.microsoft.com/entra/identity-platform/reference-error-codes>; the
//! texts are close to, not copies of, Entra's. Other refusals: unknown tenant 400 `invalid_request` AADSTS90002; unknown
//! application 400 `unauthorized_client` AADSTS700016; scope without `/.default` 400
//! `invalid_scope` AADSTS1002012; another grant type 400 `unsupported_grant_type`
//! AADSTS70003; a missing or unknown assertion type 401 `invalid_client`
//! AADSTS7000218. Error bodies carry `error`, `error_description` (starting
//! `AADSTSnnnn: `), `error_codes`, `timestamp`, `trace_id`, `correlation_id`,
//! `error_uri`, as Entra's do. Success: `token_type` `Bearer`, `expires_in` 3599,
//! `ext_expires_in` 3599, `access_token` (opaque).
//!
//! Faults: [`Fault::Status`] 429 → `AADSTS90055` (TenantThrottlingError) with
//! `Retry-After`; 5xx → `temporarily_unavailable` AADSTS90033 (a transient error), 503
//! with `Retry-After`. [`Fault::Refuse`] → the AADSTS70021 refusal.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::post;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

use super::verify::{self, KeyPolicy, VerifyError};
use super::{
    Common, FAULT_RETRY_AFTER, Fault, RecordedRequest, Served, body_fields, json_response, lock,
    opaque_token, stall,
};
use crate::tokens::{now, random_hex};

/// The audience Entra expects in federated assertions.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// `client_assertion_type` for a JWT assertion (RFC 7523).
pub const CLIENT_ASSERTION_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `expires_in` of issued tokens.
pub const TOKEN_LIFETIME_SECS: i64 = 3599;
/// The signature algorithms Entra accepts in federated assertions (the RSA family).
pub const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
/// Keys read from the issuer's JWKS.
pub const MAX_KEYS_READ: usize = 100;

/// A federated identity credential of the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederatedCredential {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
}

impl FederatedCredential {
    /// Audience `api://AzureADTokenExchange`.
    pub fn new(issuer: &str, subject: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            audiences: vec![TOKEN_EXCHANGE_AUDIENCE.to_owned()],
        }
    }
}

/// The tenant and application the fake plays.
#[derive(Clone, Debug)]
pub struct EntraSetup {
    pub tenant_id: String,
    pub client_id: String,
    pub federated_credentials: Vec<FederatedCredential>,
    /// A CA (PEM file) to trust for the issuers' discovery and JWKS, when they are
    /// HTTPS with a test CA; `None`: plain HTTP or public roots.
    pub issuer_ca_file: Option<PathBuf>,
}

impl EntraSetup {
    /// Tenant `00000000-0000-0000-0000-000000000000`, client
    /// `11111111-1111-1111-1111-111111111111` (contract §9's example), one federated
    /// credential for `issuer` and `subject`.
    pub fn new(issuer: &str, subject: &str) -> Self {
        Self {
            tenant_id: "00000000-0000-0000-0000-000000000000".to_owned(),
            client_id: "11111111-1111-1111-1111-111111111111".to_owned(),
            federated_credentials: vec![FederatedCredential::new(issuer, subject)],
            issuer_ca_file: None,
        }
    }
}

/// A token the fake issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedEntraToken {
    pub client_id: String,
    /// The assertion's `sub`.
    pub subject: String,
    pub scope: String,
    /// Unix seconds.
    pub expires_at: i64,
}

struct Shared {
    setup: EntraSetup,
    common: Common,
    issued: Mutex<HashMap<String, IssuedEntraToken>>,
    client: reqwest::Client,
}

/// A running fake of login.microsoftonline.com's token endpoint. Dropping it stops it.
pub struct FakeEntra {
    shared: Arc<Shared>,
    served: Served,
}

impl FakeEntra {
    /// Serve plain HTTP on a loopback port.
    pub fn start(setup: EntraSetup) -> Self {
        Self::start_inner(setup, false)
    }

    /// Serve HTTPS (a certificate for `127.0.0.1` from a fresh private CA, see
    /// [`ca_pem`](Self::ca_pem)), for clients that insist on TLS.
    pub fn start_https(setup: EntraSetup) -> Self {
        Self::start_inner(setup, true)
    }

    fn start_inner(setup: EntraSetup, https: bool) -> Self {
        let setup_ca = setup.issuer_ca_file.clone();
        let shared = Arc::new(Shared {
            setup,
            common: Common::default(),
            issued: Mutex::new(HashMap::new()),
            client: verify::key_client(setup_ca.as_deref()),
        });
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .with_state(shared.clone());
        Self {
            shared,
            served: Served::start("fake-entra", app, https),
        }
    }

    /// The authority host, `http://127.0.0.1:PORT` (`https://` from
    /// [`start_https`](Self::start_https)), no trailing slash.
    pub fn url(&self) -> String {
        self.served.url()
    }

    /// The CA certificate (PEM file) to trust for [`url`](Self::url), when started with
    /// [`start_https`](Self::start_https).
    pub fn ca_pem(&self) -> Option<PathBuf> {
        self.served.ca_pem()
    }

    /// `{url}/{tenant}/oauth2/v2.0/token` for the configured tenant.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.url(), self.shared.setup.tenant_id)
    }

    pub fn setup(&self) -> &EntraSetup {
        &self.shared.setup
    }

    /// Every request received so far, oldest first (`client_assertion` decoded, see
    /// [`RecordedRequest`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.common.requests()
    }

    pub fn set_fault(&self, fault: Fault) {
        self.shared.common.set_fault(fault);
    }

    /// What `token` is, if this fake issued it.
    pub fn issued(&self, token: &str) -> Option<IssuedEntraToken> {
        lock(&self.shared.issued).get(token).cloned()
    }

    /// Stop serving: connections are refused from now on.
    pub fn stop(&self) {
        self.served.stop();
    }
}

/// An Entra error body with status `status`.
fn aadsts(status: u16, error: &str, code: u32, message: &str) -> Response {
    let trace_id = uuid_like();
    let correlation_id = uuid_like();
    let timestamp = super::rfc3339(now()).replace('T', " ");
    let description = format!(
        "AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
    );
    let retry_after = matches!(status, 429 | 503).then_some(FAULT_RETRY_AFTER);
    json_response(
        status,
        json!({
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
        retry_after,
    )
}

fn uuid_like() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn no_match(iss: &str, sub: &str, aud: &str) -> Response {
    aadsts(
        400,
        "invalid_request",
        70021,
        &format!(
            "No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{aud}'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
        ),
    )
}

fn text(fields: &Map<String, Value>, name: &str) -> String {
    fields
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let fields = body_fields(&headers, &body).unwrap_or_default();
    let mut recorded = fields.clone();
    if let Some(Value::String(assertion)) = recorded.get("client_assertion").cloned() {
        recorded.insert("client_assertion".to_owned(), verify::redacted(&assertion));
    }
    if recorded.contains_key("client_secret") {
        recorded.insert("client_secret".to_owned(), Value::String("<redacted>".to_owned()));
    }
    shared
        .common
        .record(Method::POST.as_str(), uri.path(), Value::Object(recorded));

    match shared.common.fault() {
        Fault::None => {}
        Fault::Status(429) => {
            return aadsts(
                429,
                "temporarily_unavailable",
                90055,
                "There are too many incoming requests. Please try again later.",
            );
        }
        Fault::Status(code) if code >= 500 => {
            return aadsts(
                code,
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
            );
        }
        Fault::Status(code) => return aadsts(code, "invalid_request", 90000, "Injected failure."),
        Fault::Stall => return stall().await,
        Fault::Refuse => {
            let (iss, sub, aud) = verify::decode_parts(&text(&fields, "client_assertion"))
                .map(|(_, c)| {
                    let field = |name: &str| {
                        c[name]
                            .as_str()
                            .map_or_else(|| c[name].to_string(), str::to_owned)
                    };
                    (field("iss"), field("sub"), field("aud"))
                })
                .unwrap_or_default();
            return no_match(&iss, &sub, &aud);
        }
    }
    let setup = &shared.setup;
    if tenant != setup.tenant_id {
        return aadsts(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let grant_type = text(&fields, "grant_type");
    if grant_type != "client_credentials" {
        return aadsts(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let client_id = text(&fields, "client_id");
    if client_id != setup.client_id {
        return aadsts(
            400,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    }
    let scope = text(&fields, "scope");
    if scope.split_whitespace().count() != 1 || !scope.ends_with("/.default") {
        return aadsts(
            400,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }
    let assertion = text(&fields, "client_assertion");
    if text(&fields, "client_assertion_type") != CLIENT_ASSERTION_TYPE_JWT_BEARER || assertion.is_empty() {
        return aadsts(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    }
    let Some((header, claims)) = verify::decode_parts(&assertion) else {
        return aadsts(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        );
    };
    let alg = header["alg"].as_str().unwrap_or_default();
    if !ALGORITHMS.iter().any(|a| format!("{a:?}") == alg) {
        return aadsts(
            401,
            "invalid_client",
            5002738,
            &format!(
                "Invalid JWT token. '{alg}' is not a supported signature algorithm. Supported signing algorithms are: 'RS256, RS384, RS512, PS256, PS384, PS512'."
            ),
        );
    }
    let iss = claims["iss"].as_str().unwrap_or_default();
    let sub = claims["sub"].as_str().unwrap_or_default();
    let auds: Vec<&str> = match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let Some(credential) = setup.federated_credentials.iter().find(|c| {
        c.issuer == iss && c.subject == sub && auds.iter().any(|a| c.audiences.iter().any(|x| x == a))
    }) else {
        return no_match(iss, sub, &auds.join(","));
    };
    let policy = KeyPolicy {
        algorithms: ALGORITHMS,
        max_keys: Some(MAX_KEYS_READ),
        skip_non_sig_use: true,
        allowed_members: None,
    };
    if let Err(e) = verify::verify_signature(&shared.client, &assertion, &credential.issuer, policy).await {
        return match e {
            VerifyError::KeysUnavailable(why) => aadsts(
                400,
                "invalid_request",
                50166,
                &format!("Request to External OIDC endpoint failed: {why}."),
            ),
            VerifyError::Malformed(_) => aadsts(
                400,
                "invalid_request",
                50027,
                "JWT token is invalid or malformed.",
            ),
            VerifyError::Algorithm(alg) => aadsts(
                401,
                "invalid_client",
                5002738,
                &format!("Invalid JWT token. '{alg}' is not a supported signature algorithm."),
            ),
            VerifyError::NoKid | VerifyError::KidNotFound(_) | VerifyError::KeyMembers(_) => aadsts(
                401,
                "invalid_client",
                700027,
                "Client assertion contains an invalid signature. [Reason - The key was not found.]",
            ),
            VerifyError::Signature => aadsts(
                401,
                "invalid_client",
                700027,
                "Client assertion contains an invalid signature. [Reason - The signature does not verify.]",
            ),
        };
    }
    let now = now();
    let exp = claims["exp"].as_i64();
    let nbf = claims["nbf"].as_i64();
    if exp.is_none_or(|e| e <= now) || nbf.is_some_and(|n| n > now) {
        return aadsts(
            401,
            "invalid_client",
            700024,
            &format!(
                "Client assertion is not within its valid time range. Current time: {}, expiry time of assertion {}.",
                super::rfc3339(now),
                exp.map(super::rfc3339).unwrap_or_else(|| "<none>".to_owned())
            ),
        );
    }

    let access_token = opaque_token("fake-entra-");
    lock(&shared.issued).insert(
        access_token.clone(),
        IssuedEntraToken {
            client_id,
            subject: sub.to_owned(),
            scope,
            expires_at: now + TOKEN_LIFETIME_SECS,
        },
    );
    json_response(
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
            "ext_expires_in": TOKEN_LIFETIME_SECS,
            "access_token": access_token,
        }),
        None,
    )
}
