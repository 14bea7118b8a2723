//! The web console (contract §13): server-rendered pages for the people who read
//! decisions. Served with the admin API (on `admin.listen` when set, else on the main
//! listener under `public_url`'s path), only with `console.enabled` and `admin:`.
//!
//! Every page is drawn from the admin API's own views ([`crate::admin::inspect`]) and
//! the explain page runs the code `fedbroker explain` runs, so the console, the API and
//! the CLI cannot disagree. Login takes an admin token and sets a signed session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS; [`session`]); every form carries a
//! CSRF token; pages are sent with a strict Content-Security-Policy (scripts and styles
//! from the console itself only) and `Cache-Control: no-store`. The explain page never
//! stores, logs or echoes the token pasted into it.

mod pages;
pub mod session;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};

use crate::admin::inspect;
use crate::audit::AuditRecord;
use crate::config::{AdminConfig, ConsoleConfig};
use crate::explain::ExplainInput;
use crate::state::AppState;
use session::{LOGIN_COOKIE, LOGIN_FORM_LIFETIME, SESSION_COOKIE, Session, SessionKey};

/// The most a console form's body may be (the explain form carries a token and claims);
/// read only once the session is checked.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// The most the login form's body may be: it is read before anyone is authenticated.
const MAX_LOGIN_BYTES: usize = 8 * 1024;

/// The console's run-time part: its settings and session key.
pub struct Console {
    lifetime: u64,
    key: SessionKey,
    /// Set when the server stops: live tails end, so draining does not wait for them.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Console {
    pub fn new(
        config: &ConsoleConfig,
        admin: &AdminConfig,
    ) -> Result<Console, aws_lc_rs::error::Unspecified> {
        Ok(Console {
            lifetime: config.session_lifetime,
            key: SessionKey::new(admin.state_hmac_key.as_deref())?,
            closing: tokio::sync::watch::channel(false).0,
        })
    }

    /// End every live tail (the server is stopping).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }
}

/// What every handler gets: the state, the console, where it is mounted, and whether
/// its listener speaks TLS (for the cookie's `Secure`).
#[derive(Clone)]
struct Ctx {
    st: Arc<AppState>,
    console: Arc<Console>,
    /// The console's path as the browser sees it, e.g. `/console` or `/fedbroker/console`.
    base: Arc<str>,
    secure: bool,
}

/// The console's routes (with their state), when it is enabled: `prefix` is the path
/// the listener serves the broker under (`public_url`'s path on the main listener, none
/// on `admin.listen`), `secure` whether that listener speaks TLS.
pub fn routes(st: &Arc<AppState>, prefix: &str, secure: bool) -> Option<Router> {
    let console = st.console.clone()?;
    let ctx = Ctx {
        st: st.clone(),
        console,
        base: Arc::from(format!("{prefix}/console")),
        secure,
    };
    Some(
        Router::new()
            .route("/console", get(to_root))
            .route("/console/", get(overview))
            .route("/console/login", get(login_form).post(login))
            .route("/console/logout", post(logout))
            .route("/console/explain", get(explain_form).post(explain))
            .route("/console/issuers", get(issuers))
            .route("/console/issuers/{name}/refetch", post(refetch))
            .route("/console/rules", get(rules))
            .route("/console/decisions", get(decisions))
            .route("/console/decisions/stream", get(decisions_stream))
            .route("/console/keys", get(keys))
            .route("/console/assets/console.css", get(css))
            .route("/console/assets/console.js", get(js))
            .with_state(ctx),
    )
}

// ----- responses -----

/// The headers every console answer carries.
fn harden(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

fn html(status: StatusCode, markup: maud::Markup) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    harden(&mut resp);
    resp
}

fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    harden(&mut resp);
    resp
}

fn with_cookie(mut resp: Response, cookie: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn now(&self) -> u64 {
        self.st.clock.unix()
    }

    fn cookie(&self, name: &str, value: &str, max_age: u64) -> String {
        format!(
            "{name}={value}; Path={}/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
            self.base,
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The request's session: its cookie verified, unexpired, and its admin token still
    /// valid.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let value = cookie(headers, SESSION_COOKIE)?;
        let session = self.console.key.open(&value, self.now())?;
        let admin = self.st.admin.as_ref()?;
        admin.holds_token_id(&session.token_id).then_some(session)
    }

    /// A page of a session: `body` is drawn with the session's CSRF token (for its forms;
    /// the logout form in the frame carries it too).
    fn page(
        &self,
        session: &Session,
        current: &str,
        title: &str,
        body: impl FnOnce(&str) -> maud::Markup,
    ) -> Response {
        let csrf = self.console.key.csrf(session);
        let body = body(&csrf);
        let chrome = pages::Chrome {
            base: &self.base,
            current,
            csrf: Some(csrf),
            who: Some(session.who()),
        };
        html(StatusCode::OK, pages::layout(&chrome, title, body))
    }

    /// A form sent without a valid session or CSRF token: refused, nothing done.
    fn refused(&self, status: StatusCode, message: &str) -> Response {
        let chrome = pages::Chrome {
            base: &self.base,
            current: "",
            csrf: None,
            who: None,
        };
        html(
            status,
            pages::layout(&chrome, "Refused", pages::refused(&self.base, message)),
        )
    }

    /// A form's fields, and its session when the session and the CSRF token hold.
    async fn form(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(Session, HashMap<String, String>), Response> {
        let Some(session) = self.session(headers) else {
            return Err(self.refused(
                StatusCode::UNAUTHORIZED,
                "You are not logged in, or your session has ended. Log in again.",
            ));
        };
        let fields = read_form(body, MAX_FORM_BYTES).await.map_err(|status| {
            self.refused(status, "The form could not be read (too large or not a form).")
        })?;
        let given = fields.get("csrf").map(String::as_str).unwrap_or("");
        if !self.console.key.csrf_ok(&session, given) {
            return Err(self.refused(
                StatusCode::FORBIDDEN,
                "The form's CSRF token is missing or wrong. Reload the page and send it again.",
            ));
        }
        Ok((session, fields))
    }

    async fn audit_login(&self, outcome: &'static str, who: Option<&str>, reason: Option<&str>) {
        let record = AuditRecord {
            time: crate::audit::rfc3339(std::time::SystemTime::now()),
            event: "console_login",
            outcome,
            subject: who,
            reason,
            ..Default::default()
        };
        self.st.audit.record(&record).await;
    }
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

async fn read_form(body: Body, limit: usize) -> Result<HashMap<String, String>, StatusCode> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

// ----- handlers -----

async fn to_root(State(ctx): State<Ctx>) -> Response {
    see_other(&ctx.url("/"))
}

async fn overview(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let Some(session) = ctx.session(&headers) else {
        return see_other(&ctx.url("/login"));
    };
    let policy = ctx.st.policy();
    let status = ctx.st.reload_status();
    let summary = pages::Summary {
        issuers: policy.issuers.len(),
        failing_issuers: policy
            .issuers
            .iter()
            .filter(|(_, i)| i.keys.status().last_error.is_some())
            .count(),
        rules: policy.rules.len(),
        generation: status.generation,
        last_reload_error: status.last_error,
        active_kid: ctx.st.signer.kid(),
    };
    ctx.page(&session, "/", "Overview", |_| {
        pages::overview(&ctx.base, &summary)
    })
}

async fn login_form(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if ctx.session(&headers).is_some() {
        return see_other(&ctx.url("/"));
    }
    login_page(&ctx, StatusCode::OK, None)
}

fn login_page(ctx: &Ctx, status: StatusCode, error: Option<&str>) -> Response {
    let Ok(nonce) = SessionKey::login_nonce(ctx.now()) else {
        return ctx.refused(StatusCode::SERVICE_UNAVAILABLE, "No random number could be had.");
    };
    let csrf = ctx.console.key.login_csrf(&nonce);
    let chrome = pages::Chrome {
        base: &ctx.base,
        current: "/login",
        csrf: None,
        who: None,
    };
    let resp = html(
        status,
        pages::layout(&chrome, "Log in", pages::login(&ctx.base, &csrf, error)),
    );
    with_cookie(resp, ctx.cookie(LOGIN_COOKIE, &nonce, LOGIN_FORM_LIFETIME))
}

async fn login(
    State(ctx): State<Ctx>,
    peer: Option<axum::Extension<crate::listener::PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // `limits.per_client_address`, as at /token: before the body is read.
    if let Err(exceeded) = ctx.st.limiter.check_client(peer.as_ref().map(|p| &p.0)).await {
        let mut resp = ctx.refused(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts from this address: wait a moment.",
        );
        if let Ok(v) = HeaderValue::from_str(&exceeded.retry_after_secs().to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let Ok(fields) = read_form(body, MAX_LOGIN_BYTES).await else {
        return ctx.refused(StatusCode::PAYLOAD_TOO_LARGE, "The form could not be read.");
    };
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let given = fields.get("csrf").map(String::as_str).unwrap_or("");
    if !ctx.console.key.login_csrf_ok(&nonce, given, ctx.now()) {
        return ctx.refused(
            StatusCode::FORBIDDEN,
            "The login form's CSRF token is missing or wrong (or the form is too old). Load the login page again.",
        );
    }
    let token = fields.get("token").map(String::as_str).unwrap_or("");
    let Some(admin) = ctx.st.admin.as_ref() else {
        return ctx.refused(StatusCode::NOT_FOUND, "The admin API is not configured.");
    };
    let Some(token_id) = admin.token_id(token) else {
        ctx.audit_login("deny", None, Some("not an admin token")).await;
        return login_page(
            &ctx,
            StatusCode::UNAUTHORIZED,
            Some("That is not an admin token."),
        );
    };
    let expires = ctx.now() + ctx.console.lifetime;
    let Ok(value) = ctx.console.key.issue(&token_id, expires) else {
        return ctx.refused(StatusCode::SERVICE_UNAVAILABLE, "No random number could be had.");
    };
    let who = crate::admin::caller_name(&token_id);
    ctx.audit_login("allow", Some(&who), None).await;
    let resp = see_other(&ctx.url("/"));
    let resp = with_cookie(resp, ctx.cookie(SESSION_COOKIE, &value, ctx.console.lifetime));
    with_cookie(resp, ctx.cookie(LOGIN_COOKIE, "", 0))
}

/// Log out: the cookie is cleared (sessions are kept nowhere else; a copy of the cookie
/// stays valid until it expires or its admin token goes). With a valid session the form
/// needs its CSRF token; without one there is nothing to protect, and the cookie is
/// cleared all the same.
async fn logout(State(ctx): State<Ctx>, headers: HeaderMap, body: Body) -> Response {
    if ctx.session(&headers).is_some()
        && let Err(resp) = ctx.form(&headers, body).await
    {
        return resp;
    }
    with_cookie(see_other(&ctx.url("/login")), ctx.cookie(SESSION_COOKIE, "", 0))
}

async fn explain_form(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let Some(session) = ctx.session(&headers) else {
        return see_other(&ctx.url("/login"));
    };
    explain_page(&ctx, &session, &pages::ExplainForm::default(), None)
}

/// The explain page: its form (as last sent, without the token) and the outcome.
fn explain_page(
    ctx: &Ctx,
    session: &Session,
    form: &pages::ExplainForm,
    outcome: Option<&pages::ExplainOutcome>,
) -> Response {
    let mut issuers: Vec<String> = ctx
        .st
        .policy()
        .issuers
        .iter()
        .map(|(_, i)| i.config.name.clone())
        .collect();
    issuers.sort();
    ctx.page(session, "/explain", "Explain", |csrf| {
        pages::explain(&ctx.base, csrf, &issuers, form, outcome)
    })
}

/// Targets typed into a field: separated by spaces, commas or new lines.
fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn explain(State(ctx): State<Ctx>, headers: HeaderMap, body: Body) -> Response {
    let (session, fields) = match ctx.form(&headers, body).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let field = |k: &str| fields.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    // The form is shown again with what was typed, except the token.
    let form = pages::ExplainForm {
        claims: field("claims"),
        issuer: field("issuer"),
        audience: field("audience"),
        resource: field("resource"),
        scope: field("scope"),
        access_token: fields.contains_key("access_token"),
        dpop: fields.contains_key("dpop"),
    };
    let token = field("subject_token");
    let outcome = match build_input(&form, token) {
        Err(message) => pages::ExplainOutcome::Error(message),
        Ok(input) => match inspect::explain(&ctx.st, &input).await {
            Ok(explained) => pages::ExplainOutcome::Done(explained.doc),
            Err(e) => pages::ExplainOutcome::Error(explain_message(e)),
        },
    };
    explain_page(&ctx, &session, &form, Some(&outcome))
}

/// The form as explain's input; a problem with the form itself as a sentence.
fn build_input(form: &pages::ExplainForm, token: String) -> Result<ExplainInput, String> {
    let claims = if form.claims.is_empty() {
        None
    } else {
        match serde_json::from_str::<Value>(&form.claims) {
            Ok(Value::Object(map)) => Some(map),
            Ok(_) => return Err("The claims must be a JSON object.".into()),
            Err(e) => return Err(format!("The claims are not JSON: {e}.")),
        }
    };
    Ok(ExplainInput {
        subject_token: (!token.is_empty()).then_some(token),
        claims,
        issuer: (!form.issuer.is_empty()).then(|| form.issuer.clone()),
        audiences: split_list(&form.audience),
        resources: split_list(&form.resource),
        scope: (!form.scope.is_empty()).then(|| form.scope.clone()),
        access_token: form.access_token,
        dpop: form.dpop,
        ..Default::default()
    })
}

/// Why no explanation could be made, in the API's words.
fn explain_message(e: crate::explain::ExplainError) -> String {
    match inspect::explain_error(e) {
        crate::admin::AdminError::Invalid(problems) => problems
            .iter()
            .filter_map(|p| p.get("message").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

async fn issuers(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let Some(session) = ctx.session(&headers) else {
        return see_other(&ctx.url("/login"));
    };
    issuers_page(&ctx, &session, None)
}

fn issuers_page(ctx: &Ctx, session: &Session, note: Option<&str>) -> Response {
    let list = inspect::issuers_view(&ctx.st);
    ctx.page(session, "/issuers", "Issuers", |csrf| {
        pages::issuers(&ctx.base, &list, csrf, note)
    })
}

async fn refetch(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let session = match ctx.form(&headers, body).await {
        Ok((session, _)) => session,
        Err(resp) => return resp,
    };
    let note = match inspect::refetch(&ctx.st, &name).await {
        Ok(item) => match item.get("last_result").and_then(Value::as_str) {
            Some("error") => format!(
                "Fetched the keys of `{name}` again: the fetch failed ({}).",
                item.get("last_error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
            ),
            _ => format!("Fetched the keys of `{name}` again."),
        },
        Err(e) => e.to_string(),
    };
    issuers_page(&ctx, &session, Some(&note))
}

/// How often a live tail checks that its session's admin token still opens the API.
const SESSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// The most rules one rules page lists (a large rule set is searched, not scrolled).
pub const MAX_RULES_SHOWN: usize = 500;

/// The rules page's search: text found in a rule's name, issuer, targets or file.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct RuleSearch {
    #[serde(default)]
    pub q: String,
}

/// Text searched for, case-insensitively: lowercased once per request, not per item.
struct Needle(String);

impl Needle {
    fn new(q: &str) -> Needle {
        Needle(q.trim().to_lowercase())
    }

    /// Whether one of `texts` contains it (an empty needle is in everything).
    fn in_any<'t>(&self, mut texts: impl Iterator<Item = &'t str>) -> bool {
        self.0.is_empty() || texts.any(|text| text.to_lowercase().contains(&self.0))
    }
}

/// Whether `rule` (an entry of the rules view) holds the search's text.
fn rule_matches(rule: &Value, needle: &Needle) -> bool {
    needle.in_any(
        ["name", "issuer", "file", "description"]
            .iter()
            .filter_map(|k| rule.get(*k).and_then(Value::as_str))
            .chain(
                rule["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str),
            ),
    )
}

async fn rules(State(ctx): State<Ctx>, headers: HeaderMap, Query(search): Query<RuleSearch>) -> Response {
    let Some(session) = ctx.session(&headers) else {
        return see_other(&ctx.url("/login"));
    };
    let mut view = inspect::rules_view(&ctx.st);
    let total = view["rules"].as_array().map_or(0, Vec::len);
    let mut matched = 0;
    if let Some(list) = view["rules"].as_array_mut() {
        let needle = Needle::new(&search.q);
        list.retain(|r| rule_matches(r, &needle));
        matched = list.len();
        list.truncate(MAX_RULES_SHOWN);
    }
    let counts = pages::RuleCounts { total, matched };
    ctx.page(&session, "/rules", "Rules", |_| {
        pages::rules(&ctx.base, &view, &search, counts)
    })
}

async fn keys(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let Some(session) = ctx.session(&headers) else {
        return see_other(&ctx.url("/login"));
    };
    let body = match inspect::keys_view(&ctx.st).await {
        Ok(view) => pages::keys(&view),
        Err(e) => pages::problem(&e.to_string()),
    };
    ctx.page(&session, "/keys", "Signing keys", |_| body)
}

/// The decisions page's filter: an outcome and text every shown field is searched for.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub q: String,
}

impl Filter {
    /// Whether decision `d` passes: its outcome, and `needle` (of `self.q`) in a field.
    fn matches(&self, d: &Map<String, Value>, needle: &Needle) -> bool {
        let outcome_ok = match self.outcome.as_str() {
            "allow" | "deny" => d.get("outcome").and_then(Value::as_str) == Some(self.outcome.as_str()),
            _ => true,
        };
        outcome_ok
            && (needle.0.is_empty()
                || d.values().any(|v| match v {
                    Value::String(s) => needle.in_any(std::iter::once(s.as_str())),
                    other => needle.in_any(std::iter::once(other.to_string().as_str())),
                }))
    }
}

/// The fields of a decision the console shows (an audit line of `/token`; other audit
/// events are not decisions). Audit lines carry no token.
pub fn decision_fields(line: &str) -> Option<Map<String, Value>> {
    let Ok(Value::Object(record)) = serde_json::from_str::<Value>(line) else {
        return None;
    };
    if record.get("event").and_then(Value::as_str) != Some("token_exchange") {
        return None;
    }
    let mut out = Map::new();
    for key in [
        "time",
        "outcome",
        "rule",
        "issuer",
        "subject",
        "target",
        "error",
        "reason",
        "kind",
        "request_id",
    ] {
        if let Some(v) = record.get(key) {
            let shown = match v {
                Value::Array(list) => Value::String(
                    list.iter()
                        .map(|t| t.as_str().map(str::to_owned).unwrap_or_else(|| t.to_string()))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                other => other.clone(),
            };
            out.insert(key.to_owned(), shown);
        }
    }
    Some(out)
}

async fn decisions(State(ctx): State<Ctx>, headers: HeaderMap, Query(filter): Query<Filter>) -> Response {
    let Some(session) = ctx.session(&headers) else {
        return see_other(&ctx.url("/login"));
    };
    let needle = Needle::new(&filter.q);
    let recent: Vec<Map<String, Value>> = match ctx.st.audit.tap() {
        Some(tap) => tap
            .recent()
            .iter()
            .rev()
            .filter_map(|line| decision_fields(line))
            .filter(|d| filter.matches(d, &needle))
            .collect(),
        None => Vec::new(),
    };
    ctx.page(&session, "/decisions", "Decisions", |_| {
        pages::decisions(&ctx.base, &filter, &recent)
    })
}

/// The live tail: server-sent events, one `decision` event (a JSON object of
/// [`decision_fields`]) per decision that passes the filter, `lagged` when this
/// listener fell behind. Ends when the session expires or the server stops.
async fn decisions_stream(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let Some(session) = ctx.session(&headers) else {
        let mut resp = (StatusCode::UNAUTHORIZED, "log in first").into_response();
        harden(&mut resp);
        return resp;
    };
    let Some(tap) = ctx.st.audit.tap() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let rx = tap.subscribe();
    let remaining = session.expires.saturating_sub(ctx.now());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(remaining);
    let closing = ctx.console.closing.subscribe();
    // The session's admin token is checked again every few seconds: a tail ends soon
    // after its token is revoked.
    let recheck = tokio::time::interval(SESSION_RECHECK);
    let st = ctx.st.clone();
    let token_id = session.token_id.clone();
    let needle = Arc::new(Needle::new(&filter.q));
    let stream = futures_util::stream::unfold(
        (rx, filter, closing, recheck),
        move |(mut rx, filter, mut closing, mut recheck)| {
            let st = st.clone();
            let token_id = token_id.clone();
            let needle = needle.clone();
            async move {
                loop {
                    if *closing.borrow() {
                        return None;
                    }
                    let next = tokio::select! {
                        r = rx.recv() => r,
                        _ = tokio::time::sleep_until(deadline) => return None,
                        _ = closing.changed() => return None,
                        _ = recheck.tick() => {
                            if st.admin.as_ref().is_some_and(|a| a.holds_token_id(&token_id)) {
                                continue;
                            }
                            return None;
                        }
                    };
                    let event = match next {
                        Ok(line) => match decision_fields(&line).filter(|d| filter.matches(d, &needle)) {
                            Some(d) => Event::default()
                                .event("decision")
                                .data(Value::Object(d).to_string()),
                            None => continue,
                        },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            Event::default().event("lagged").data(n.to_string())
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    };
                    return Some((Ok::<_, Infallible>(event), (rx, filter, closing, recheck)));
                }
            }
        },
    );
    let mut resp = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    harden(&mut resp);
    resp
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/console.css"))
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], text).into_response();
    harden(&mut resp);
    resp
}

/// An explanation's verification steps (issuer, key, algorithm, times, skew) as rows.
pub fn verification_rows(doc: &Value) -> Vec<(String, String)> {
    let v = &doc["subject"]["verification"];
    let Some(obj) = v.as_object() else {
        return Vec::new();
    };
    // RFC 3339 up to the end of year 9999; a time beyond (a token may say anything) as
    // its number.
    let time = |k: &str| {
        obj.get(k).and_then(Value::as_u64).map(|t| {
            if t <= 253_402_300_799 {
                crate::audit::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
            } else {
                format!("{t} (seconds since 1970)")
            }
        })
    };
    let mut rows = vec![
        (
            "Issuer".to_owned(),
            format!(
                "{} ({})",
                obj.get("issuer").and_then(Value::as_str).unwrap_or("?"),
                obj.get("iss").and_then(Value::as_str).unwrap_or("?")
            ),
        ),
        (
            "Key".to_owned(),
            obj.get("kid")
                .and_then(Value::as_str)
                .map(|k| format!("kid {k}"))
                .unwrap_or_else(|| "no kid".into()),
        ),
        (
            "Algorithm".to_owned(),
            obj.get("alg").and_then(Value::as_str).unwrap_or("?").to_owned(),
        ),
    ];
    if let Some(t) = time("issued_at") {
        rows.push(("Issued at".into(), t));
    }
    if let Some(t) = time("not_before") {
        rows.push(("Not before".into(), t));
    }
    if let Some(t) = time("expires_at") {
        rows.push(("Expires at".into(), t));
    }
    rows.push((
        "Clock skew allowed".into(),
        format!("{} s", obj.get("clock_skew").and_then(Value::as_u64).unwrap_or(0)),
    ));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: &str = r#"{"time":"t1","event":"token_exchange","outcome":"allow","rule":"deploy","issuer":"gha","subject":"repo:acme/api","target":["a","b"],"jti":"j1","replica":"r"}"#;
    const DENY: &str = r#"{"time":"t2","event":"token_exchange","outcome":"deny","issuer":"gha","subject":"repo:evil/fork","target":"a","error":"invalid_request","reason":"no allow rule matched"}"#;

    #[test]
    fn only_decisions_are_shown_with_the_fields_the_console_shows() {
        let d = decision_fields(ALLOW).expect("a decision");
        assert_eq!(d["target"], "a b", "lists joined");
        assert!(!d.contains_key("jti") && !d.contains_key("replica"));
        assert!(decision_fields(r#"{"event":"admin_change","outcome":"applied"}"#).is_none());
        assert!(decision_fields(r#"{"event":"console_login","outcome":"allow"}"#).is_none());
        assert!(decision_fields("not json").is_none());
    }

    #[test]
    fn the_filter_takes_an_outcome_and_text_found_in_any_field() {
        let allow = decision_fields(ALLOW).expect("decision");
        let deny = decision_fields(DENY).expect("decision");
        // The filter of the query `outcome` and `q`, as a request applies it.
        let f = |outcome: &str, q: &str| {
            let filter = Filter {
                outcome: outcome.into(),
                q: q.into(),
            };
            let needle = Needle::new(&filter.q);
            move |d: &Map<String, Value>| filter.matches(d, &needle)
        };
        assert!(f("", "")(&allow) && f("", "")(&deny));
        assert!(f("deny", "")(&deny) && !f("deny", "")(&allow));
        assert!(f("", "FORK")(&deny) && !f("", "fork")(&allow));
        assert!(f("allow", "acme")(&allow) && !f("deny", "acme")(&deny));
        assert!(
            f("anything-else", "")(&allow),
            "an unknown outcome filters nothing"
        );
    }

    #[test]
    fn times_beyond_year_9999_are_shown_as_numbers() {
        let doc = serde_json::json!({"subject": {"verification": {
            "issuer": "k8s", "iss": "https://k8s", "kid": "k1", "alg": "RS256",
            "issued_at": 0u64, "expires_at": u64::MAX, "clock_skew": 60,
        }}});
        let rows = verification_rows(&doc);
        let get = |k: &str| rows.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("Issued at").as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            get("Expires at"),
            Some(format!("{} (seconds since 1970)", u64::MAX))
        );
    }

    #[test]
    fn targets_are_split_on_spaces_commas_and_lines() {
        assert_eq!(split_list(" a, b\nc ,,d "), ["a", "b", "c", "d"]);
        assert!(split_list("  ").is_empty());
    }
}
