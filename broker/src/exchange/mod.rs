//! `POST /token`: RFC 8693 token exchange, one pipeline, cheapest checks first:
//! form → DPoP proof → peek → issuer → keys → verify → rules → replay marks (the proof's
//! `jti`, then the home token) → mint → audit.
//! The replay mark is taken only once the rules allow, and before signing: a refused
//! request stores nothing, and a token is still issued for at most once.
//!
//! Every refusal is a [`TokenError`] variant: a fixed description goes to the client
//! (mapped in [`crate::error`], the one place errors become RFC answers), the full
//! reason to the audit log. Tokens never appear in either.
//!
//! - `form`: the body and the form, parsed into a [`TokenRequest`](form::TokenRequest);
//!   the grant ([`GrantType`]): the RFC 8693 exchange, or RFC 7523's `client_credentials`
//!   with a client assertion and `jwt-bearer`, which take their home token from another
//!   parameter and answer its refusal with another code, and share everything else.
//! - `dpop`: the `DPoP` header's proof (RFC 9449), verified and its `jti` marked once.
//! - `nonce`: DPoP server nonces (RFC 9449 §8), made and checked without state; with
//!   `server.dpop.nonce`, every answer to a request with a `DPoP` header carries a fresh
//!   one (`DPoP-Nonce`), and a proof without a good one is answered `use_dpop_nonce`.
//! - `verify`: a presented token verified by its issuer.
//! - `decide`: the rules' input ([`RulesInput`], shared with `explain`) and decision.
//! - `mint`: the issued token's claims, signed.
//! - `error`: why a request is refused.

mod aws_iam;
mod decide;
mod dpop;
mod error;
mod form;
mod mint;
mod nonce;
mod verify;

use std::sync::Arc;

use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{MethodRouter, post};
use federation_rules::{Credentials, Grant};
use serde_json::{Map, Value, json};
use tracing::Instrument;
use tracing::field::Empty;

pub use aws_iam::AwsIamError;
pub use decide::RulesInput;
pub use dpop::{DPOP_HEADER, DpopRefusal};
pub use error::{TokenError, TokenRole};
pub(crate) use form::split_scopes;
pub use form::{GrantType, SubjectTokenType, Targets, TokenRequest, TokenType, check_token_form, parse_form};
pub use mint::{SOURCE_ISSUER_CLAIM, issued_claims};
pub use nonce::{DpopNonces, NONCE_HEADER, NonceRefusal};
pub use verify::Verified;
pub(crate) use verify::{verify_subject, verify_token};

use crate::audit::{AuditLog, AuditRecord, rfc3339};
use crate::client_cert::ClientCert;
use crate::clock::SharedClock;
use crate::config::{OnUnavailable, ReplayMode, ServerConfig};
use crate::credentials::{CloudToken, Clouds};
use crate::limits::Limit;
use crate::metrics::Metrics;
use crate::policy::LivePolicy;
use crate::replay::{ReplayStore, effective_jti, mark_expiry, replay_key, signing_input, token_digest};
use crate::signing::Signer;
use crate::telemetry::TARGET as TRACE;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 6749 §4.4, with the client authenticated by an RFC 7523 assertion.
pub const GRANT_TYPE_CLIENT_CREDENTIALS: &str = "client_credentials";
/// RFC 7523 §2.1.
pub const GRANT_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 7523 §2.2: the only `client_assertion_type` accepted.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const TT_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TT_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TT_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TT_AWS_CREDENTIALS: &str = "urn:fedbroker:token-type:aws-credentials";
pub const TT_GCP_ACCESS_TOKEN: &str = "urn:fedbroker:token-type:gcp-access-token";
pub const TT_AZURE_ACCESS_TOKEN: &str = "urn:fedbroker:token-type:azure-access-token";
/// Every `requested_token_type` the broker answers (the metadata's
/// `fedbroker_token_types_supported` lists them).
pub const REQUESTED_TOKEN_TYPES: [&str; 5] = [
    TT_JWT,
    TT_ACCESS_TOKEN,
    TT_AWS_CREDENTIALS,
    TT_GCP_ACCESS_TOKEN,
    TT_AZURE_ACCESS_TOKEN,
];

/// At most this many `audience` values, and as many `resource` values, per request
/// (counted as sent, before deduplication): beyond it, `invalid_request`.
pub const MAX_TARGET_VALUES: usize = 32;
/// The longest `audience` or `resource` value accepted, in bytes.
pub const MAX_TARGET_BYTES: usize = 1024;

/// What `POST /token` works with: its share of the broker's state.
#[derive(Clone)]
pub struct TokenState {
    pub server: Arc<ServerConfig>,
    pub live: Arc<LivePolicy>,
    pub signer: Arc<Signer>,
    pub replay: Arc<dyn ReplayStore>,
    pub on_unavailable: OnUnavailable,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
    pub clouds: Arc<Clouds>,
    pub clock: SharedClock,
    /// `limits:`: per client address, issuer and subject.
    pub limiter: Arc<crate::limits::Limiter>,
    /// `server.dpop.nonce`: `None` asks proofs for no nonce.
    pub dpop_nonces: Option<Arc<DpopNonces>>,
    /// How often each rule decided (the console's rules page).
    pub hits: Arc<crate::hits::RuleHits>,
}

pub fn routes<S>() -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    TokenState: FromRef<S>,
{
    post(token).fallback(method_not_allowed)
}

async fn method_not_allowed() -> TokenError {
    TokenError::MethodNotAllowed
}

async fn token(State(st): State<TokenState>, req: Request) -> Response {
    // RFC 9449 §8.2: a server that wants nonces may hand a new one with any answer; this
    // one does with every answer to a request that came with a DPoP header.
    let with_proof = req.headers().contains_key(DPOP_HEADER);
    let mut resp = answer_token_request(&st, req).await;
    if with_proof
        && let Some(nonces) = &st.dpop_nonces
        && let Ok(value) = HeaderValue::from_str(&nonces.make(st.clock.unix()))
    {
        resp.headers_mut().insert(NONCE_HEADER, value);
    }
    resp
}

async fn answer_token_request(st: &TokenState, req: Request) -> Response {
    // Per client address first, before the body is read: an unauthenticated flood costs
    // a table lookup (and writes no audit line).
    if let Err(exceeded) = st
        .limiter
        .check_client(req.extensions().get::<crate::listener::PeerAddr>())
        .await
    {
        st.metrics.exchange("deny", "temporarily_unavailable");
        let span = tracing::Span::current();
        span.record("fedbroker.outcome", "deny");
        span.record("fedbroker.error", "temporarily_unavailable");
        return TokenError::RateLimited(exceeded).into_response();
    }
    let started = std::time::Instant::now();
    let mut trail = Trail {
        request_id: req
            .extensions()
            .get::<crate::request_id::RequestId>()
            .map(|id| id.0.clone()),
        ..Trail::default()
    };
    let result = exchange(st, req, &mut trail).await;
    let error = result.as_ref().err();
    st.metrics
        .token_request_duration(if error.is_some() { "deny" } else { "allow" }, started.elapsed());
    st.metrics.exchange(
        if error.is_some() { "deny" } else { "allow" },
        error.map(TokenError::code).unwrap_or_default(),
    );
    // The request's span (`crate::telemetry`): names and codes only.
    let span = tracing::Span::current();
    span.record(
        "fedbroker.outcome",
        if error.is_some() { "deny" } else { "allow" },
    );
    if let Some(e) = error {
        span.record("fedbroker.error", e.code());
    }
    if let Some(issuer) = &trail.issuer {
        span.record("fedbroker.issuer", issuer.as_str());
    }
    if let Some(rule) = &trail.rule {
        span.record("fedbroker.rule", rule.as_str());
    }
    let reason = error.map(ToString::to_string);
    let expected = trail.expected.take();
    st.audit
        .record_expected(expected, &trail.record(st.clock.now(), error, reason.as_deref()))
        .await;
    match result {
        Ok(resp) => resp,
        Err(e) => {
            tracing::info!(error = e.code(), reason = %e, issuer = trail.issuer.as_deref().unwrap_or(""), subject = trail.subject.as_deref().unwrap_or(""), "token exchange denied");
            e.into_response()
        }
    }
}

/// The pipeline, as named steps; `trail` learns what the audit line says as it goes.
async fn exchange(st: &TokenState, req: Request, trail: &mut Trail) -> Result<Response, TokenError> {
    // Read before the body consumes the request; judged after the form, so a malformed
    // request is answered as such first.
    let proof_header = dpop::proof_header(req.headers());
    let client_cert = req.extensions().get::<Arc<ClientCert>>().cloned();
    let body = form::read_body(req, st.server.max_body_bytes).await?;
    let request = form::parse_form(&body)?;
    trail.requested(&request);
    trail.client_cert = client_cert.as_ref().map(|c| c.sha256.clone());
    let proof = match proof_header.map_err(TokenError::InvalidDpopProof)? {
        Some(proof) => Some(
            dpop::verify(
                &proof,
                &st.server.public_url,
                st.clock.unix(),
                st.dpop_nonces.as_deref(),
            )
            .map_err(TokenError::InvalidDpopProof)?,
        ),
        None => None,
    };
    trail.dpop_jkt = proof.as_ref().map(|p| p.jkt.clone());
    let role = request.grant.role();
    let policy = st.live.current();
    let stage = std::time::Instant::now();
    // The stages' spans (`crate::telemetry`) say which issuer, never what the token holds.
    // Disabled, and nearly free, without `telemetry.traces`.
    let span =
        tracing::info_span!(target: TRACE, "verify", otel.status_code = Empty, fedbroker.issuer = Empty);
    let subject = verify_subject(
        &policy,
        &request.subject_token,
        request.subject_token_type,
        role,
        st.clock.unix(),
        std::time::Duration::from_secs(st.server.cloud_timeout),
    )
    .instrument(span.clone())
    .await
    .inspect_err(|_| crate::telemetry::failed(&span))?;
    span.record("fedbroker.issuer", subject.issuer.config.name.as_str());
    st.metrics.stage_duration("verify", stage.elapsed());
    trail.verified(&request, &subject);
    // Per issuer and per subject: counted once the token verified, so that forged tokens
    // cannot spend another issuer's or subject's budget.
    let issuer_name = &subject.issuer.config.name;
    st.limiter
        .check(Limit::PerIssuer, issuer_name)
        .await
        .map_err(TokenError::RateLimited)?;
    if st.limiter.configured(Limit::PerSubject) {
        let key = format!("{issuer_name}\n{}", subject.token.subject);
        st.limiter
            .check(Limit::PerSubject, &key)
            .await
            .map_err(TokenError::RateLimited)?;
    }
    // RFC 7523 §3: a client assertion's `sub` is the client's id.
    if request
        .client_id
        .as_ref()
        .is_some_and(|id| *id != subject.token.subject)
    {
        return Err(TokenError::ClientIdMismatch);
    }
    let actor = match &request.actor_token {
        Some(token) => Some(verify_token(&policy, token, TokenRole::Actor, st.clock.unix()).await?),
        None => None,
    };
    trail.actor(actor.as_ref());
    let input = RulesInput::verified(
        &subject,
        actor.as_ref(),
        &request.targets,
        &request.scopes,
        request.requested,
    )
    .with_sender(proof.is_some(), client_cert.clone());
    let grant = decide::decide(&policy.rules, &input, &st.hits);
    trail.decided(&grant);
    let grant = grant?;
    let cloud = cloud_credentials(&request, &grant)?;
    trail.cloud = cloud.map(|c| c.cloud().as_str());
    // Replay: only once the rules allow (a refusal stores nothing) and before signing
    // (nothing is issued unmarked, unless fail_open says so). The proof first: a
    // replayed proof must not use up the home token.
    if let Some(proof) = &proof {
        let now = st.clock.unix();
        if now > proof.expires_at() {
            return Err(TokenError::InvalidDpopProof(DpopRefusal::Proof(
                issuers::dpop::DpopError::Stale,
            )));
        }
        trail.dpop_replay = Some(
            mark_once(
                st,
                &dpop::replay_key(proof),
                dpop::mark_expiry(proof),
                TokenError::InvalidDpopProof(DpopRefusal::Replayed),
            )
            .await?,
        );
    }
    if subject.issuer.config.replay == ReplayMode::OneTime {
        let stage = std::time::Instant::now();
        let span = tracing::info_span!(target: TRACE, "replay", otel.status_code = Empty);
        trail.replay = Some(
            mark_used(st, &subject, &request.subject_token, role)
                .instrument(span.clone())
                .await
                .inspect_err(|_| crate::telemetry::failed(&span))?,
        );
        st.metrics.stage_duration("replay", stage.elapsed());
    }
    // From here to its audit line the request works on a core (unless its signer is
    // remote, or it asks a cloud, below): the audit writer may wait for its line.
    trail.expected = Some(st.audit.expect_record());
    let cnf = confirmation(proof.as_ref(), client_cert.as_deref());
    let stage = std::time::Instant::now();
    let span = tracing::info_span!(target: TRACE, "sign", otel.status_code = Empty);
    let (token, jti) = mint(
        st,
        &grant,
        &subject,
        actor.as_ref(),
        request.requested,
        cnf.as_ref(),
    )
    .instrument(span.clone())
    .await
    .inspect_err(|_| crate::telemetry::failed(&span))?;
    st.metrics.stage_duration("sign", stage.elapsed());
    trail.issued_jti = Some(jti);
    let issued = match cloud {
        // The minted token is the broker's half of the trade, not the answer.
        Some(credentials) => {
            // A cloud's answer takes a round trip: no line waits for this one meanwhile.
            trail.expected = None;
            let span = tracing::info_span!(
                target: TRACE,
                "cloud",
                otel.status_code = Empty,
                fedbroker.cloud = credentials.cloud().as_str(),
            );
            st.clouds
                .obtain(credentials, &token)
                .instrument(span.clone())
                .await
                .inspect_err(|_| crate::telemetry::failed(&span))
                .map_err(TokenError::Cloud)?
        }
        None => CloudToken {
            access_token: token,
            // RFC 9449 §5: a token bound to a DPoP key is of type DPoP.
            token_type: if proof.is_some() {
                "DPoP"
            } else {
                request.requested.token_type()
            },
            expires_in: grant.lifetime.min(st.server.max_issued_lifetime),
            extra: None,
        },
    };
    // The rule granted an exchange that was answered (not one refused later on, as a
    // replay or a cloud's refusal).
    st.hits.record(Some(&grant.rule), true);
    Ok(answer(&request, &grant, issued))
}

/// The deciding rule's credentials block for the cloud the request asks credentials of;
/// `None` when it asks for a JWT. Checked before anything is marked or minted.
fn cloud_credentials<'g>(
    request: &TokenRequest,
    grant: &'g Grant,
) -> Result<Option<&'g Credentials>, TokenError> {
    let TokenType::Cloud(cloud) = request.requested else {
        return Ok(None);
    };
    match &grant.credentials {
        Some(credentials) if credentials.cloud() == cloud => Ok(Some(&**credentials)),
        _ => Err(TokenError::NoCredentials {
            rule: grant.rule.clone(),
            cloud,
        }),
    }
}

/// Record the subject token as used, or refuse it as replayed; answers what the audit
/// line says of it. The mark lives past the whole window in which verification would
/// accept the token again: `exp` plus the clock skew this request was verified with
/// (the issuer's, from the policy this request took, whatever reloads happen) plus
/// [`crate::replay::MARK_MARGIN_SECS`]. A token whose window closed while the request
/// was being decided is refused here: a mark made after it would be no mark at all.
async fn mark_used(
    st: &TokenState,
    subject: &Verified,
    token: &str,
    role: TokenRole,
) -> Result<&'static str, TokenError> {
    let skew = subject.issuer.config.policy.clock_skew;
    let (verified, now) = (&subject.token, st.clock.unix());
    if now > verified.expires_at.saturating_add(skew) {
        return Err(TokenError::ExpiredWhileDeciding(role));
    }
    let key = replay_key(&verified.issuer, verified.jti.as_deref(), signing_input(token));
    mark_once(
        st,
        &key,
        mark_expiry(verified.expires_at, skew),
        TokenError::Replayed(role),
    )
    .await
}

/// Record `key` until `expires_at`, or refuse with `replayed` when it was recorded
/// before; a store that does not answer refuses (fail_closed) or lets the request
/// through unrecorded (fail_open). Answers what the audit line says.
async fn mark_once(
    st: &TokenState,
    key: &str,
    expires_at: u64,
    replayed: TokenError,
) -> Result<&'static str, TokenError> {
    match st.replay.mark(key, expires_at, st.clock.unix()).await {
        Ok(true) => Ok("recorded"),
        Ok(false) => Err(replayed),
        Err(e) => {
            st.metrics.replay_error();
            match st.on_unavailable {
                OnUnavailable::FailClosed => Err(TokenError::ReplayStore(e)),
                OnUnavailable::FailOpen => {
                    tracing::error!(error = %e, "replay store unavailable; issuing WITHOUT replay protection (fail_open)");
                    Ok("unrecorded_fail_open")
                }
            }
        }
    }
}

/// The issued token's `cnf` (RFC 7800): the DPoP key's thumbprint (RFC 9449 §6.1) and
/// the client certificate's (RFC 8705 §3.1), in one object; `None` for a bearer token.
fn confirmation(proof: Option<&issuers::dpop::DpopProof>, cert: Option<&ClientCert>) -> Option<Value> {
    let mut cnf = Map::new();
    if let Some(proof) = proof {
        cnf.insert("jkt".into(), Value::String(proof.jkt.clone()));
    }
    if let Some(cert) = cert.filter(|c| !c.x5t_s256.is_empty()) {
        cnf.insert("x5t#S256".into(), Value::String(cert.x5t_s256.clone()));
    }
    (!cnf.is_empty()).then_some(Value::Object(cnf))
}

/// The issued token, signed, and its `jti`.
async fn mint(
    st: &TokenState,
    grant: &Grant,
    subject: &Verified,
    actor: Option<&Verified>,
    requested: TokenType,
    cnf: Option<&Value>,
) -> Result<(String, String), TokenError> {
    let now = st.clock.unix();
    let jti = mint::random_jti(now);
    let claims = issued_claims(
        &st.server.public_url,
        st.server.max_issued_lifetime,
        grant,
        &subject.issuer.config.name,
        &subject.token.claims,
        actor.map(|a| (a.token.subject.as_str(), a.token.issuer.as_str())),
        cnf,
        &jti,
        now,
    );
    let token = mint::sign(&st.signer, requested, &claims).await?;
    Ok((token, jti))
}

/// The successful answer (RFC 8693 §2.2.1); `scope` only when it differs from the
/// requested one.
fn answer(request: &TokenRequest, grant: &Grant, issued: CloudToken) -> Response {
    let mut body = json!({
        "access_token": issued.access_token,
        "issued_token_type": request.requested.urn(),
        "token_type": issued.token_type,
        "expires_in": issued.expires_in,
    });
    if let Some((member, value)) = issued.extra {
        body[member] = value;
    }
    let granted_scope = grant.scopes.join(" ");
    if request.scope.as_deref().is_some_and(|s| s != granted_scope) && !granted_scope.is_empty() {
        body["scope"] = Value::String(granted_scope);
    }
    let mut resp = (StatusCode::OK, Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// How the audit log names the targets of a request refused before its subject token
/// verified: SHA-256 (hex) of their JSON array, e.g. of `["a","b"]`.
fn target_digest(targets: &[String]) -> String {
    token_digest(&serde_json::to_string(targets).unwrap_or_default())
}

/// What the audit line says, learnt step by step; [`Trail::record`] builds the line.
#[derive(Default)]
struct Trail {
    request_id: Option<String>,
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
    cloud: Option<&'static str>,
    /// The request's `grant_type`, once the form parsed.
    grant: Option<&'static str>,
    /// The DPoP proof key's thumbprint, once the proof verified.
    dpop_jkt: Option<String>,
    /// What became of the proof's `jti` in the replay store.
    dpop_replay: Option<&'static str>,
    /// The client certificate's SHA-256 (hex), when the request came with one.
    client_cert: Option<String>,
    /// From minting on: the audit writer expects this request's line.
    expected: Option<crate::audit::Expected>,
}

impl Trail {
    /// Until the subject token verifies, the caller is anonymous: the audit line names
    /// the targets by digest only.
    fn requested(&mut self, request: &TokenRequest) {
        self.grant = Some(request.grant.as_str());
        self.target_digest = Some(target_digest(&request.targets.all));
    }

    fn verified(&mut self, request: &TokenRequest, subject: &Verified) {
        let (issuer, token) = (&subject.issuer.config, &subject.token);
        self.targets = request.targets.all.clone();
        self.target_digest = None;
        self.issuer = Some(issuer.name.clone());
        self.kind = Some(issuer.kind.as_str());
        let fields = issuer.kind.audit_fields(&token.claims);
        self.claims = (!fields.is_empty()).then_some(fields);
        self.iss = Some(token.issuer.clone());
        self.subject = Some(token.subject.clone());
        self.jti = Some(match effective_jti(token.jti.as_deref()) {
            Some(jti) => jti.to_owned(),
            None => token_digest(&request.subject_token),
        });
    }

    fn actor(&mut self, actor: Option<&Verified>) {
        if let Some(actor) = actor {
            self.actor = Some(actor.token.subject.clone());
            self.actor_issuer = Some(actor.issuer.config.name.clone());
        }
    }

    fn decided(&mut self, decision: &Result<Grant, TokenError>) {
        self.rule = match decision {
            Ok(grant) => Some(grant.rule.clone()),
            Err(TokenError::Denied { rule, .. }) => rule.clone(),
            Err(_) => None,
        };
    }

    /// The audit line of the request, refused with `error` (whose full text is
    /// `reason`) or not.
    fn record<'a>(
        &'a self,
        time: std::time::SystemTime,
        error: Option<&TokenError>,
        reason: Option<&'a str>,
    ) -> AuditRecord<'a> {
        let target = match self.targets.as_slice() {
            [] => Value::Null,
            [one] => Value::String(one.clone()),
            many => json!(many),
        };
        AuditRecord {
            time: rfc3339(time),
            event: "token_exchange",
            outcome: if error.is_some() { "deny" } else { "allow" },
            rule: self.rule.as_deref(),
            issuer: self.issuer.as_deref(),
            iss: self.iss.as_deref(),
            subject: self.subject.as_deref(),
            target,
            target_digest: self.target_digest.as_deref(),
            error: error.map(TokenError::code),
            reason,
            jti: self.jti.as_deref(),
            issued_jti: self.issued_jti.as_deref(),
            actor: self.actor.as_deref(),
            actor_issuer: self.actor_issuer.as_deref(),
            replay: self.replay,
            kind: self.kind,
            claims: self.claims.as_ref(),
            cloud: self.cloud,
            grant: self.grant,
            dpop_jkt: self.dpop_jkt.as_deref(),
            dpop_replay: self.dpop_replay,
            client_cert_sha256: self.client_cert.as_deref(),
            request_id: self.request_id.as_deref(),
            replica: Some(crate::request_id::replica()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_digest_is_the_sha256_of_the_json_array() {
        let targets = vec!["a".to_string(), "b".to_string()];
        assert_eq!(target_digest(&targets), token_digest(r#"["a","b"]"#));
    }

    /// The audit line's time is the broker clock's, wherever a test moved it.
    #[test]
    fn the_audit_time_is_the_clocks() {
        use crate::clock::{Clock, ManualClock};
        use std::time::{Duration, UNIX_EPOCH};
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_millis(1_795_900_000_123));
        let trail = Trail::default();
        assert_eq!(
            trail.record(clock.now(), None, None).time,
            "2026-11-28T21:06:40.123Z"
        );
        clock.advance(Duration::from_secs(60));
        let record = trail.record(
            clock.now(),
            Some(&TokenError::Replayed(TokenRole::Subject)),
            Some("r"),
        );
        assert_eq!(record.time, "2026-11-28T21:07:40.123Z");
        assert_eq!((record.outcome, record.error), ("deny", Some("invalid_request")));
    }
}
