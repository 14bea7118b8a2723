//! `POST /token`: RFC 8693 token exchange, one pipeline, cheapest checks first:
//! form → peek → issuer → keys → verify → rules → replay mark → mint → audit.
//! The replay mark is taken only once the rules allow, and before signing: a refused
//! request stores nothing, and a token is still issued for at most once.
//!
//! Errors are mapped to RFC 6749/8693 codes here and only here ([`Failure`]): a fixed
//! description goes to the client, the full reason to the audit log. Tokens never
//! appear in either.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{MethodRouter, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use federation_rules::{Actor, Claims, Decision, DenialKind, Grant};
use issuers::{VerifiedToken, VerifyError};
use serde_json::{Map, Value, json};

use crate::app::{AppState, Issuer, Policy, now};
use crate::audit::{AuditRecord, rfc3339};
use crate::config::{OnUnavailable, ReplayMode};
use crate::replay::{effective_jti, mark_expiry, replay_key, signing_input, token_digest};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TT_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TT_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TT_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

const SINGLETONS: [&str; 7] = [
    "grant_type",
    "subject_token",
    "subject_token_type",
    "scope",
    "requested_token_type",
    "actor_token",
    "actor_token_type",
];

/// At most this many `audience` values, and as many `resource` values, per request
/// (counted as sent, before deduplication): beyond it, `invalid_request`.
pub const MAX_TARGET_VALUES: usize = 32;
/// The longest `audience` or `resource` value accepted, in bytes.
pub const MAX_TARGET_BYTES: usize = 1024;

pub fn routes() -> MethodRouter<Arc<AppState>> {
    post(token).fallback(method_not_allowed)
}

async fn method_not_allowed() -> Response {
    let mut resp =
        Failure::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "use POST").into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

/// An error answer: status, RFC error code, a fixed description for the client, and the
/// full reason for the audit log.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    code: &'static str,
    description: String,
    reason: String,
    retry_after: Option<u64>,
}

impl Failure {
    /// The RFC error code (`invalid_request`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The full reason, as the audit log has it.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the server would answer 503 (a transient failure, not a decision).
    pub fn is_unavailable(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
    }

    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        let description = description.into();
        Failure {
            status,
            code,
            reason: description.clone(),
            description,
            retry_after: None,
        }
    }
    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
    fn unavailable(reason: impl Into<String>) -> Self {
        let mut f = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the service is temporarily unavailable; retry later",
        );
        f.reason = reason.into();
        f.retry_after = Some(5);
        f
    }
    fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code, "error_description": self.description});
        let mut resp = (self.status, Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A parsed, well-formed token request.
struct TokenRequest {
    subject_token: String,
    audiences: Vec<String>,
    resources: Vec<String>,
    /// `audiences` then `resources`, deduplicated.
    targets: Vec<String>,
    scope: Option<String>,
    scopes: Vec<String>,
    access_token: bool,
    actor: Option<(String, String)>,
}

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

/// How the audit log names the targets of a request refused before its subject token
/// verified: SHA-256 (hex) of their JSON array, e.g. of `["a","b"]`.
fn target_digest(targets: &[String]) -> String {
    token_digest(&serde_json::to_string(targets).unwrap_or_default())
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
    parse_form(body).map(|r| r.targets.len()).map_err(|f| f.code)
}

fn parse_form(body: &[u8]) -> Result<TokenRequest, Failure> {
    let mut params: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        params.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    for name in SINGLETONS {
        if params.get(name).is_some_and(|v| v.len() > 1) {
            return Err(Failure::invalid_request(format!(
                "parameter `{name}` must not be repeated"
            )));
        }
    }
    let one = |name: &str| -> Option<String> {
        params
            .get(name)
            .and_then(|v| v.first())
            .filter(|s| !s.is_empty())
            .cloned()
    };
    match one("grant_type") {
        None => return Err(Failure::invalid_request("missing parameter `grant_type`")),
        Some(g) if g != GRANT_TYPE => {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("only {GRANT_TYPE} is supported"),
            ));
        }
        Some(_) => {}
    }
    let subject_token =
        one("subject_token").ok_or_else(|| Failure::invalid_request("missing parameter `subject_token`"))?;
    let subject_token_type = one("subject_token_type")
        .ok_or_else(|| Failure::invalid_request("missing parameter `subject_token_type`"))?;
    if !supported_token_type(&subject_token_type) {
        return Err(Failure::invalid_request("unsupported `subject_token_type`"));
    }
    let mut lists: [Vec<String>; 2] = Default::default();
    for (name, list) in ["audience", "resource"].into_iter().zip(lists.iter_mut()) {
        let values = params.get(name).map(Vec::as_slice).unwrap_or_default();
        if values.len() > MAX_TARGET_VALUES {
            return Err(Failure::invalid_request(format!(
                "at most {MAX_TARGET_VALUES} `{name}` values are accepted"
            )));
        }
        for v in values {
            if v.is_empty() {
                return Err(Failure::invalid_request(format!(
                    "parameter `{name}` must not be empty"
                )));
            }
            if v.len() > MAX_TARGET_BYTES {
                return Err(Failure::invalid_request(format!(
                    "a value of `{name}` is longer than {MAX_TARGET_BYTES} bytes"
                )));
            }
        }
        *list = dedup(values.iter().map(String::as_str));
    }
    let [audiences, resources] = lists;
    let targets = union(&audiences, &resources);
    if targets.is_empty() {
        return Err(Failure::invalid_request("`audience` or `resource` is required"));
    }
    let access_token = match one("requested_token_type").as_deref() {
        None | Some(TT_JWT) => false,
        Some(TT_ACCESS_TOKEN) => true,
        Some(_) => return Err(Failure::invalid_request("unsupported `requested_token_type`")),
    };
    let actor = match (one("actor_token"), one("actor_token_type")) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(Failure::invalid_request(
                "`actor_token` requires `actor_token_type`",
            ));
        }
        (None, Some(_)) => {
            return Err(Failure::invalid_request(
                "`actor_token_type` requires `actor_token`",
            ));
        }
        (Some(t), Some(ty)) => {
            if !supported_token_type(&ty) {
                return Err(Failure::invalid_request("unsupported `actor_token_type`"));
            }
            Some((t, ty))
        }
    };
    let scope = one("scope");
    let scopes = split_scopes(scope.as_deref());
    Ok(TokenRequest {
        subject_token,
        audiences,
        resources,
        targets,
        scope,
        scopes,
        access_token,
        actor,
    })
}

/// What the audit line says, filled in as the pipeline learns it.
#[derive(Default)]
struct Trail {
    issuer: Option<String>,
    iss: Option<String>,
    subject: Option<String>,
    /// The requested targets, once the subject token verified.
    targets: Vec<String>,
    /// Before that: their digest only ([`target_digest`]).
    target_digest: Option<String>,
    jti: Option<String>,
    rule: Option<String>,
    issued_jti: Option<String>,
    actor: Option<String>,
    actor_issuer: Option<String>,
    replay: Option<&'static str>,
    kind: Option<&'static str>,
    claims: Option<Map<String, Value>>,
}

async fn token(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let mut trail = Trail::default();
    let result = exchange(&st, req, &mut trail).await;
    let target = match trail.targets.len() {
        0 => Value::Null,
        1 => Value::String(trail.targets[0].clone()),
        _ => json!(trail.targets),
    };
    let (outcome, code, reason) = match &result {
        Ok(_) => ("allow", "", None),
        Err(f) => ("deny", f.code, Some(f.reason.as_str())),
    };
    st.metrics.exchange(outcome, code);
    st.audit.record(&AuditRecord {
        time: rfc3339(std::time::SystemTime::now()),
        event: "token_exchange",
        outcome,
        rule: trail.rule.as_deref(),
        issuer: trail.issuer.as_deref(),
        iss: trail.iss.as_deref(),
        subject: trail.subject.as_deref(),
        target,
        target_digest: trail.target_digest.as_deref(),
        error: (!code.is_empty()).then_some(code),
        reason,
        jti: trail.jti.as_deref(),
        issued_jti: trail.issued_jti.as_deref(),
        actor: trail.actor.as_deref(),
        actor_issuer: trail.actor_issuer.as_deref(),
        replay: trail.replay,
        kind: trail.kind,
        claims: trail.claims.as_ref(),
    });
    match result {
        Ok(resp) => resp,
        Err(f) => {
            tracing::info!(error = f.code, reason = %f.reason, issuer = trail.issuer.as_deref().unwrap_or(""), subject = trail.subject.as_deref().unwrap_or(""), "token exchange denied");
            f.into_response()
        }
    }
}

async fn read_body(st: &AppState, req: Request) -> Result<axum::body::Bytes, Failure> {
    let (parts, body) = req.into_parts();
    if parts.method != Method::POST {
        return Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "use POST",
        ));
    }
    let limit = st.server.max_body_bytes;
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the request body exceeds {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    if !is_form(&parts.headers) {
        return Err(Failure::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    let bytes = axum::body::to_bytes(Body::new(body), limit).await.map_err(|e| {
        match crate::listener::body_timeout_message(&e) {
            Some(message) => Failure::new(StatusCode::REQUEST_TIMEOUT, "invalid_request", message),
            None => too_large(),
        }
    })?;
    Ok(bytes)
}

async fn exchange(st: &AppState, req: Request, trail: &mut Trail) -> Result<Response, Failure> {
    let body = read_body(st, req).await?;
    let request = parse_form(&body)?;
    let policy = st.policy();
    // Until the subject token verifies, the caller is anonymous: the audit line names
    // the targets by digest only.
    trail.target_digest = Some(target_digest(&request.targets));

    let (issuer, subject) = verify_token(&policy, &request.subject_token, "subject_token").await?;
    trail.targets = request.targets.clone();
    trail.target_digest = None;
    trail.issuer = Some(issuer.config.name.clone());
    trail.kind = Some(issuer.config.kind.as_str());
    let fields = issuer.config.kind.audit_fields(&subject.claims);
    trail.claims = (!fields.is_empty()).then_some(fields);
    trail.iss = Some(subject.issuer.clone());
    trail.subject = Some(subject.subject.clone());
    trail.jti = Some(match effective_jti(subject.jti.as_deref()) {
        Some(jti) => jti.to_owned(),
        None => token_digest(&request.subject_token),
    });

    let actor = match &request.actor {
        Some((token, _ty)) => {
            let (actor_issuer, verified) = verify_token(&policy, token, "actor_token").await?;
            trail.actor = Some(verified.subject.clone());
            trail.actor_issuer = Some(actor_issuer.config.name.clone());
            Some((actor_issuer, verified))
        }
        None => None,
    };

    let grant = match evaluate_rules(&policy, &issuer, &subject, actor.as_ref(), &request).await? {
        Decision::Allow(grant) => grant,
        Decision::Deny(denial) => {
            trail.rule = denial.rule.clone();
            let f = match denial.kind {
                DenialKind::NoRuleForTarget => Failure::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_target",
                    "no rule grants the requested target",
                ),
                DenialKind::DeniedByPolicy => Failure::invalid_request("denied by policy"),
                DenialKind::ScopeNotAllowed => Failure::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "the requested scope is not allowed",
                ),
            };
            return Err(f.with_reason(denial.reason));
        }
    };
    trail.rule = Some(grant.rule.clone());

    // Replay: only once the rules allow (a refusal stores nothing) and before signing
    // (nothing is issued unmarked, unless fail_open says so).
    if issuer.config.replay == ReplayMode::OneTime {
        mark_used(st, &issuer, &subject, &request.subject_token, trail).await?;
    }

    let jti = random_jti();
    let claims = issued_claims(
        &st.server.public_url,
        st.server.max_issued_lifetime,
        &grant,
        &issuer.config.name,
        &subject.claims,
        actor
            .as_ref()
            .map(|(_, v)| (v.subject.as_str(), v.issuer.as_str())),
        &jti,
        now(),
    );
    let typ = if request.access_token { "at+jwt" } else { "JWT" };
    // Signing (an RSA private-key operation) is CPU work: off the async workers too.
    let signer = st.signer.clone();
    let token = tokio::task::spawn_blocking(move || signer.sign_jwt(typ, &claims))
        .await
        .map_err(|e| Failure::unavailable(format!("signing task failed: {e}")))?
        .map_err(|e| Failure::unavailable(format!("signing: {e}")))?;
    trail.issued_jti = Some(jti);

    let mut body = json!({
        "access_token": token,
        "issued_token_type": if request.access_token { TT_ACCESS_TOKEN } else { TT_JWT },
        "token_type": if request.access_token { "Bearer" } else { "N_A" },
        "expires_in": grant.lifetime.min(st.server.max_issued_lifetime),
    });
    let granted_scope = grant.scopes.join(" ");
    if request.scope.as_deref().is_some_and(|s| s != granted_scope) && !granted_scope.is_empty() {
        body["scope"] = Value::String(granted_scope);
    }
    let mut resp = (StatusCode::OK, Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Evaluate the rules on a blocking-pool thread: CEL conditions and mappings are CPU
/// work of unbounded length as far as the async runtime is concerned, and on an async
/// worker they would stall every other connection (`/healthz` included). Everything the
/// evaluation reads is moved in owned (the rule set is shared by `Arc`).
/// `spawn_blocking` rather than `block_in_place`: it works on any runtime flavour (the
/// latter panics on a current-thread runtime) and never takes a worker out of the
/// pool; the cost is one hand-off per request, a few microseconds.
async fn evaluate_rules(
    policy: &Policy,
    issuer: &Issuer,
    subject: &VerifiedToken,
    actor: Option<&(Arc<Issuer>, VerifiedToken)>,
    request: &TokenRequest,
) -> Result<Decision, Failure> {
    let rules = policy.rules.clone();
    let issuer_name = issuer.config.name.clone();
    let claims = Claims(subject.claims.clone());
    let actor = actor.map(|(ai, v)| (ai.config.name.clone(), Claims(v.claims.clone())));
    let audiences = request.audiences.clone();
    let resources = request.resources.clone();
    let targets = request.targets.clone();
    let scopes = request.scopes.clone();
    let requested_token_type = if request.access_token {
        TT_ACCESS_TOKEN
    } else {
        TT_JWT
    };
    tokio::task::spawn_blocking(move || {
        rules.evaluate(&federation_rules::Request {
            issuer: &issuer_name,
            claims: &claims,
            audiences: &audiences,
            resources: &resources,
            targets: &targets,
            scopes: &scopes,
            requested_token_type,
            actor: actor.as_ref().map(|(issuer, claims)| Actor { issuer, claims }),
        })
    })
    .await
    .map_err(|e| Failure::unavailable(format!("rule evaluation failed: {e}")))
}

/// Record the subject token as used, or refuse it as replayed. The mark lives past the
/// whole window in which verification would accept the token again: `exp` plus the
/// clock skew this request was verified with (the issuer's, from the policy this request
/// took, whatever reloads happen) plus [`crate::replay::MARK_MARGIN_SECS`]. A token
/// whose window closed while the request was being decided is refused here: a mark made
/// after it would be no mark at all.
async fn mark_used(
    st: &AppState,
    issuer: &Issuer,
    subject: &VerifiedToken,
    token: &str,
    trail: &mut Trail,
) -> Result<(), Failure> {
    let skew = issuer.config.policy.clock_skew;
    let now = now();
    if now > subject.expires_at.saturating_add(skew) {
        return Err(Failure::invalid_request("subject_token is expired")
            .with_reason("subject_token: token expired while the request was being decided"));
    }
    let key = replay_key(&subject.issuer, subject.jti.as_deref(), signing_input(token));
    match st
        .replay
        .mark(&key, mark_expiry(subject.expires_at, skew), now)
        .await
    {
        Ok(true) => trail.replay = Some("recorded"),
        Ok(false) => {
            return Err(Failure::invalid_request("subject_token has already been used"));
        }
        Err(e) => {
            st.metrics.replay_error();
            match st.on_unavailable {
                OnUnavailable::FailClosed => {
                    return Err(Failure::unavailable(format!("replay store: {e}")));
                }
                OnUnavailable::FailOpen => {
                    tracing::error!(error = %e, "replay store unavailable; issuing WITHOUT replay protection (fail_open)");
                    trail.replay = Some("unrecorded_fail_open");
                }
            }
        }
    }
    Ok(())
}

/// peek → issuer → keys (cache, one coalesced refetch on an unknown kid) → verify.
pub(crate) async fn verify_token(
    policy: &Policy,
    token: &str,
    which: &str,
) -> Result<(Arc<Issuer>, VerifiedToken), Failure> {
    let peeked = issuers::peek(token).map_err(|e| {
        Failure::invalid_request(format!("{which} is malformed")).with_reason(format!("{which}: {e}"))
    })?;
    let iss = peeked
        .unverified_issuer()
        .ok_or_else(|| Failure::invalid_request(format!("{which} has no issuer")))?;
    let issuer = policy
        .issuers
        .get(iss)
        .cloned()
        .ok_or_else(|| Failure::invalid_request(format!("{which} is from an unknown issuer")))?;
    let keys = issuer.keys.for_request().await.ok_or_else(|| {
        Failure::unavailable(format!("no keys available for issuer {}", issuer.config.name))
    })?;
    let now = now();
    let verified = match issuers::verify(&peeked, &issuer.config.policy, &keys, now) {
        Err(e) if e.needs_key_refresh() => {
            let fresh = issuer.keys.refresh(false).await.unwrap_or(keys);
            issuers::verify(&peeked, &issuer.config.policy, &fresh, now)
        }
        other => other,
    };
    let verified = verified.map_err(|e| rejected(which, &e))?;
    let c = &issuer.config;
    c.kind
        .check(&verified, &c.kind_params, c.allow_access_tokens)
        .map_err(|e| {
            Failure::invalid_request(format!("{which} is not a {} token", c.kind))
                .with_reason(format!("{which}: {e}"))
        })?;
    Ok((issuer, verified))
}

fn rejected(which: &str, e: &VerifyError) -> Failure {
    let what = match e {
        VerifyError::Expired => "is expired",
        VerifyError::NotYetValid | VerifyError::IssuedInFuture => "is not yet valid",
        VerifyError::AudienceMismatch => "has an audience this broker does not accept",
        VerifyError::BadSignature
        | VerifyError::UnknownKey { .. }
        | VerifyError::KeyAlgorithmMismatch { .. } => "has an invalid signature",
        VerifyError::AlgorithmNotAllowed { .. } => "uses an algorithm this issuer is not allowed",
        _ => "is invalid",
    };
    Failure::invalid_request(format!("{which} {what}")).with_reason(format!("{which}: {e}"))
}

fn random_jti() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // aws-lc's RNG does not fail in practice; fall back to the clock and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes[8..].copy_from_slice(&now().to_le_bytes());
    }
    B64.encode(bytes)
}

/// The claim of every issued token that names the issuer (its registered `name`) of the
/// subject token it was exchanged for.
pub const SOURCE_ISSUER_CLAIM: &str = "source_issuer";

/// The issued token's claims (contract §4). Pure: `explain` shows the same claims.
///
/// `source_issuer` is the registered `name` of the issuer that verified the subject
/// token; it is set before the rule's claims, which can never replace it (nor any other
/// claim set here), so tokens from different issuers stay distinguishable downstream.
#[allow(clippy::too_many_arguments)]
pub fn issued_claims(
    public_url: &str,
    max_lifetime: u64,
    grant: &Grant,
    source_issuer: &str,
    subject: &Map<String, Value>,
    actor: Option<(&str, &str)>,
    jti: &str,
    now: u64,
) -> Value {
    let lifetime = grant.lifetime.min(max_lifetime);
    let mut c = Map::new();
    c.insert("iss".into(), Value::String(public_url.to_string()));
    c.insert("sub".into(), Value::String(grant.subject.clone()));
    let aud = match grant.audience.as_slice() {
        [one] => Value::String(one.clone()),
        many => json!(many),
    };
    c.insert("aud".into(), aud);
    c.insert("iat".into(), json!(now));
    c.insert("nbf".into(), json!(now));
    c.insert("exp".into(), json!(now + lifetime));
    c.insert("jti".into(), Value::String(jti.to_string()));
    if !grant.scopes.is_empty() {
        c.insert("scope".into(), Value::String(grant.scopes.join(" ")));
    }
    c.insert(
        SOURCE_ISSUER_CLAIM.into(),
        Value::String(source_issuer.to_string()),
    );
    for (k, v) in &grant.claims {
        c.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if let Some((actor_sub, actor_iss)) = actor {
        let mut act = Map::new();
        act.insert("sub".into(), Value::String(actor_sub.to_string()));
        act.insert("iss".into(), Value::String(actor_iss.to_string()));
        // RFC 8693 §4.1: prior actors of the subject token nest inside the current one.
        if let Some(prior) = subject.get("act").filter(|v| v.is_object()) {
            act.insert("act".into(), prior.clone());
        }
        c.insert("act".into(), Value::Object(act));
    }
    Value::Object(c)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(r.targets, vec!["x", "y"]);
        assert_eq!(r.scopes, vec!["a", "b"]);
        assert!(!r.access_token);
    }

    #[test]
    fn maps_request_errors_to_rfc_codes() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (BASE[1..].to_vec(), "invalid_request"),
            (
                vec![("grant_type", "client_credentials")],
                "unsupported_grant_type",
            ),
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
            assert_eq!(err.code, code, "{pairs:?}");
            assert!(!err.description.contains("a.b.c"));
        }
    }

    #[test]
    fn caps_the_number_and_length_of_targets() {
        let values: Vec<String> = (0..=MAX_TARGET_VALUES).map(|i| format!("t{i}")).collect();
        for name in ["audience", "resource"] {
            let mut pairs = BASE[..3].to_vec();
            pairs.extend(values[..MAX_TARGET_VALUES].iter().map(|v| (name, v.as_str())));
            let r = parse_form(&form(&pairs)).expect("at the cap");
            assert_eq!(r.targets.len(), MAX_TARGET_VALUES);
            pairs.push((name, "one-more"));
            let err = parse_form(&form(&pairs)).err().expect("over the cap");
            assert_eq!(err.code, "invalid_request");
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
        assert_eq!(err.code, "invalid_request");
        assert!(!err.reason.contains(&too_long));
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
    fn target_digest_is_the_sha256_of_the_json_array() {
        let targets = vec!["a".to_string(), "b".to_string()];
        assert_eq!(target_digest(&targets), token_digest(r#"["a","b"]"#));
    }

    #[test]
    fn source_issuer_is_set_and_rule_claims_cannot_replace_it() {
        let mut claims = Map::new();
        claims.insert("source_issuer".into(), json!("forged"));
        claims.insert("team".into(), json!("x"));
        let grant = Grant {
            rule: "r".into(),
            audience: vec!["t".into()],
            subject: "s".into(),
            lifetime: 60,
            scopes: vec![],
            claims,
        };
        let c = issued_claims(
            "https://b",
            3600,
            &grant,
            "prod-cluster",
            &Map::new(),
            None,
            "j",
            10,
        );
        assert_eq!(c[SOURCE_ISSUER_CLAIM], "prod-cluster");
        assert_eq!(c["team"], "x");
        assert_eq!(c["exp"], 70);
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
