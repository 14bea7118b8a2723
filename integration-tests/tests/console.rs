//! The web console (contract §13) and the admin API views it is drawn from, through the
//! real binary: the login redirect, the session cookie's attributes, CSRF and session
//! checks on every form, the explain page deciding as `fedbroker explain` does without
//! echoing the token, hit counts and rule origins, and the admin API's
//! `/admin/v1/status/*` and `/admin/v1/explain`. The browser tests are in
//! `console_browser.rs`.

use integration_tests::broker::client_builder;
use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::{Broker, BrokerConfig, FakeIssuer};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ISSUER_NAME, TARGET, check_in, explain};

/// The admin token of the console's brokers.
pub const ADMIN_TOKEN: &str = "console-admin-token-0123456789abcdef";

/// The rule that allows the fake's default subject `target-a`.
pub const ALLOW_RULE: &str = "deploy-default";

/// A deny rule for a subject of its own (`banned`), to see a rule's deny count.
pub const DENY_RULE: &str = "ban-banned";

/// The fake as `k8s`, an allow rule and a deny rule, the admin API and the console.
pub fn console_config(fake: &FakeIssuer) -> BrokerConfig {
    BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(format!(
            r#"
            - name: {ALLOW_RULE}
              match:
                issuer: {ISSUER_NAME}
                subject: "{DEFAULT_SUBJECT}"
                audiences: [{TARGET}]
            - name: {DENY_RULE}
              effect: deny
              match:
                issuer: {ISSUER_NAME}
                subject: banned
                audiences: [{TARGET}]
            "#
        ))
        .top_level(format!(
            "admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\nconsole:\n  enabled: true\n"
        ))
}

/// A cookie-less client that follows no redirect.
fn client() -> reqwest::Client {
    client_builder().build().expect("client")
}

/// `name=value` of a `Set-Cookie` header of `resp` for `name`, and the whole header.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<(String, String)> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap_or("").to_owned(), v.to_owned()))
}

/// The value of the hidden `csrf` field in a page.
fn csrf_in(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap_or("").to_owned()
}

/// A logged-in session: its cookie (`name=value`) and the CSRF token of its pages.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// Log in to the console of `broker` with `token`.
async fn log_in(broker: &Broker, token: &str) -> reqwest::Response {
    let http = client();
    let form = http
        .get(broker.endpoint("/console/login"))
        .send()
        .await
        .expect("login page");
    assert_eq!(form.status(), StatusCode::OK);
    let (nonce, _) = set_cookie(&form, "fedbroker_console_login").expect("the login form's cookie");
    let csrf = csrf_in(&form.text().await.expect("page"));
    http.post(broker.endpoint("/console/login"))
        .header("cookie", nonce)
        .form(&[("csrf", csrf.as_str()), ("token", token)])
        .send()
        .await
        .expect("login")
}

async fn session(broker: &Broker) -> Session {
    let resp = log_in(broker, ADMIN_TOKEN).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (cookie, _) = set_cookie(&resp, "fedbroker_console").expect("a session cookie");
    let page = get_page(broker, "/console/explain", Some(&cookie)).await;
    Session {
        csrf: csrf_in(&page.1),
        cookie,
    }
}

async fn get_page(broker: &Broker, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
    let mut req = client().get(broker.endpoint(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.expect("page");
    (resp.status(), resp.text().await.expect("body"))
}

async fn post_form(
    broker: &Broker,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = client().post(broker.endpoint(path)).form(form);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.expect("post");
    (resp.status(), resp.text().await.expect("body"))
}

async fn admin_get(broker: &Broker, path: &str) -> Value {
    let resp = client()
        .get(broker.endpoint(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin GET");
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.json().await.expect("JSON")
}

#[tokio::test]
async fn the_console_needs_the_admin_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeIssuer::start();
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .top_level("console:\n  enabled: true\n")
        .write_to(dir.path());
    let out = check_in(dir.path(), &config, false);
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        out.all().contains("console.enabled") && out.all().contains("admin"),
        "{}",
        out.all()
    );
}

#[tokio::test]
async fn without_a_session_pages_redirect_to_login_and_forms_are_refused() {
    let fake = FakeIssuer::start();
    let broker = Broker::start(&console_config(&fake).render()).await;
    for path in [
        "/console/",
        "/console/explain",
        "/console/issuers",
        "/console/rules",
        "/console/decisions",
        "/console/keys",
    ] {
        let resp = client().get(broker.endpoint(path)).send().await.expect("get");
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok());
        assert_eq!(location, Some("/console/login"), "{path}");
    }
    // A wrong token does not log in; a forged session cookie opens nothing.
    let wrong = log_in(&broker, "not-the-admin-token-0123456789").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&wrong, "fedbroker_console").is_none());
    let forged = "fedbroker_console=v1.99999999999.0123456789abcdef.AAAA.AAAA";
    let (status, _) = get_page(&broker, "/console/rules", Some(forged)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // A form without a session, and one without the login form's nonce.
    let token = fake.mint(json!({}));
    let (status, body) = post_form(
        &broker,
        "/console/explain",
        None,
        &[("csrf", "x"), ("subject_token", &token), ("audience", TARGET)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains(&token));
    let (status, _) = post_form(
        &broker,
        "/console/login",
        None,
        &[("csrf", "x"), ("token", ADMIN_TOKEN)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_forms_need_the_csrf_token() {
    let fake = FakeIssuer::start();
    let broker = Broker::start(&console_config(&fake).render()).await;
    let resp = log_in(&broker, ADMIN_TOKEN).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (cookie, header) = set_cookie(&resp, "fedbroker_console").expect("session cookie");
    assert!(header.contains("HttpOnly"), "{header}");
    assert!(header.contains("SameSite=Strict"), "{header}");
    assert!(header.contains("Path=/console/"), "{header}");
    assert!(!header.contains("Secure"), "plain HTTP: no Secure ({header})");
    assert!(!cookie.contains(ADMIN_TOKEN), "the cookie never holds the token");
    let (status, page) = get_page(&broker, "/console/", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Overview"), "{page}");

    let csrf = csrf_in(&get_page(&broker, "/console/explain", Some(&cookie)).await.1);
    let token = fake.mint(json!({}));
    let form = |csrf: &'static str| [("csrf", csrf), ("audience", TARGET)];
    let (status, _) = post_form(&broker, "/console/explain", Some(&cookie), &form("wrong")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a bad CSRF token is refused");
    let (status, _) = post_form(
        &broker,
        "/console/explain",
        Some(&cookie),
        &[("audience", TARGET)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a missing CSRF token is refused");
    let (status, page) = post_form(
        &broker,
        "/console/explain",
        Some(&cookie),
        &[("csrf", &csrf), ("subject_token", &token), ("audience", TARGET)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("ALLOW"), "{page}");
    assert!(page.contains(ALLOW_RULE), "{page}");
    assert!(!page.contains(&token), "the page never shows the token");
    assert!(
        !broker.audit_text().contains(&token) && !broker.stderr().contains(&token),
        "the token is never logged"
    );

    // Logging out needs the CSRF token too, and clears the cookie.
    let (status, _) = post_form(&broker, "/console/logout", Some(&cookie), &[("csrf", "wrong")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let resp = client()
        .post(broker.endpoint("/console/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (_, cleared) = set_cookie(&resp, "fedbroker_console").expect("cleared cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[tokio::test]
async fn the_console_and_the_admin_api_explain_as_the_cli_does() {
    let fake = FakeIssuer::start();
    let config = console_config(&fake);
    let broker = Broker::start(&config.render()).await;
    let s = session(&broker).await;
    let refused = fake.mint(json!({"sub": "someone-else"}));

    // The admin API's explain, the console's and the CLI's: the same decision.
    let api = client()
        .post(broker.endpoint("/admin/v1/explain"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"subject_token": refused, "audience": [TARGET]}))
        .send()
        .await
        .expect("explain");
    assert_eq!(api.status(), StatusCode::OK);
    let api: Value = api.json().await.expect("JSON");
    assert_eq!(api["decision"]["outcome"], "deny", "{api}");
    let reason = api["decision"]["reason"].as_str().expect("a reason").to_owned();
    assert_eq!(api["subject"]["verification"]["alg"], "RS256", "{api}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = config.write_to(dir.path());
    let cli = explain(
        dir.path(),
        &file,
        &["--subject-token", &refused, "--audience", TARGET, "--json"],
    );
    let cli: Value = serde_json::from_str(&cli.stdout).expect("explain --json");
    assert_eq!(cli["decision"], api["decision"]);
    assert_eq!(cli["rules"], api["rules"]);

    let (status, page) = post_form(
        &broker,
        "/console/explain",
        Some(&s.cookie),
        &[
            ("csrf", &s.csrf),
            ("subject_token", &refused),
            ("audience", TARGET),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("DENY"), "{page}");
    let escaped = reason
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    assert!(
        page.contains(&escaped),
        "the page gives the reason `{reason}`:\n{page}"
    );
    assert!(!page.contains(&refused));

    // A claims document, no token.
    let (status, page) = post_form(
        &broker,
        "/console/explain",
        Some(&s.cookie),
        &[
            ("csrf", &s.csrf),
            ("claims", &json!({"sub": DEFAULT_SUBJECT}).to_string()),
            ("issuer", ISSUER_NAME),
            ("audience", TARGET),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("ALLOW") && page.contains("From a claims document"),
        "{page}"
    );

    // The admin API refuses what is not an explanation request.
    let bad = client()
        .post(broker.endpoint("/admin/v1/explain"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"subject_token": refused}))
        .send()
        .await
        .expect("explain");
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = client()
        .post(broker.endpoint("/admin/v1/explain"))
        .json(&json!({"subject_token": refused, "audience": TARGET}))
        .send()
        .await
        .expect("explain");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Explaining recorded no replay: the token still exchanges.
    let token = fake.mint(json!({}));
    let (status, _) = post_form(
        &broker,
        "/console/explain",
        Some(&s.cookie),
        &[("csrf", &s.csrf), ("subject_token", &token), ("audience", TARGET)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(broker.exchange(&token, TARGET).await.status, 200);
}

#[tokio::test]
async fn status_views_count_hits_and_name_each_rules_file_and_line() {
    let fake = FakeIssuer::start();
    let broker = Broker::start(&console_config(&fake).render()).await;
    for _ in 0..2 {
        assert_eq!(broker.exchange(&fake.mint(json!({})), TARGET).await.status, 200);
    }
    // A replay is refused after the rules allowed it: no allow is counted for it.
    let once = fake.mint(json!({}));
    assert_eq!(broker.exchange(&once, TARGET).await.status, 200);
    assert_eq!(broker.exchange(&once, TARGET).await.status, 400);
    let banned = fake.mint(json!({"sub": "banned"}));
    assert_eq!(broker.exchange(&banned, TARGET).await.status, 400);
    let other = fake.mint(json!({"sub": "nobody"}));
    assert_eq!(broker.exchange(&other, TARGET).await.status, 400);

    let rules = admin_get(&broker, "/admin/v1/status/rules").await;
    let rule = |name: &str| -> Value {
        rules["rules"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {rules}"))
    };
    assert_eq!(rule(ALLOW_RULE)["hits"], json!({"allow": 3, "deny": 0}));
    assert_eq!(rule(DENY_RULE)["hits"], json!({"allow": 0, "deny": 1}));
    assert_eq!(rules["denied_without_rule"], 1);
    assert_eq!(rules["generation"], 1);
    let config_text = std::fs::read_to_string(broker.dir().join("fedbroker.yaml")).expect("config");
    let line = rule(DENY_RULE)["line"].as_u64().expect("a line") as usize;
    assert!(
        config_text
            .lines()
            .nth(line - 1)
            .is_some_and(|l| l.contains(DENY_RULE)),
        "line {line} of the config is the rule's:\n{config_text}"
    );
    assert!(
        rule(DENY_RULE)["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("fedbroker.yaml"))
    );

    let issuers = admin_get(&broker, "/admin/v1/status/issuers").await;
    let issuer = &issuers["issuers"][0];
    assert_eq!(issuer["name"], ISSUER_NAME);
    assert_eq!(issuer["last_result"], "ok", "{issuer}");
    let kid = fake.current_key().kid.clone();
    assert!(
        issuer["keys"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k["kid"] == kid)),
        "{issuer}"
    );
    let before = fake.jwks_requests();
    let resp = client()
        .post(broker.endpoint(&format!("/admin/v1/status/issuers/{ISSUER_NAME}/refetch")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("refetch");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fake.jwks_requests(), before + 1, "a refetch fetches now");
    let missing = client()
        .post(broker.endpoint("/admin/v1/status/issuers/nope/refetch"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("refetch");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let keys = admin_get(&broker, "/admin/v1/status/keys").await;
    let active = keys["active_kid"].as_str().expect("active kid");
    let jwks: Value = client()
        .get(broker.endpoint("/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("JSON");
    assert!(
        jwks["keys"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k["kid"] == active))
    );

    // The console's rules page shows the same counts and origins.
    let s = session(&broker).await;
    let (status, page) = get_page(&broker, "/console/rules", Some(&s.cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&format!("fedbroker.yaml:{line}")), "{page}");
    assert!(page.contains("2 rules."), "{page}");
    // A search narrows the list.
    let (status, page) = get_page(&broker, "/console/rules?q=BAN", Some(&s.cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("1 of 2 rules match."), "{page}");
    assert!(
        page.contains(DENY_RULE) && !page.contains(&format!("data-rule=\"{ALLOW_RULE}\"")),
        "{page}"
    );
    for path in [
        "/admin/v1/status/rules",
        "/admin/v1/status/issuers",
        "/admin/v1/status/keys",
    ] {
        let anonymous = client().get(broker.endpoint(path)).send().await.expect("get");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

/// A session ends with its admin token: pages go back to the login, and a live tail
/// that is open ends within seconds, once the token is gone from `admin.tokens_file`.
#[tokio::test]
async fn a_session_and_its_live_tail_end_when_the_admin_token_is_revoked() {
    let fake = FakeIssuer::start();
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(crate::support::default_rule())
        .top_level("admin:\n  tokens_file: ./admin-tokens\nconsole:\n  enabled: true\n")
        .render();
    let broker = Broker::builder()
        .file("admin-tokens", &format!("{ADMIN_TOKEN}\n"))
        .start(&config)
        .await;
    let s = session(&broker).await;
    let mut tail = client()
        .get(broker.endpoint("/console/decisions/stream"))
        .header("cookie", &s.cookie)
        .send()
        .await
        .expect("tail");
    assert_eq!(tail.status(), StatusCode::OK);
    assert!(
        tail.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"))
    );
    // A decision reaches the tail.
    assert_eq!(broker.exchange(&fake.mint(json!({})), TARGET).await.status, 200);
    let mut seen = String::new();
    while !seen.contains("event: decision") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), tail.chunk())
            .await
            .expect("a decision within 10 s")
            .expect("stream")
            .expect("open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(TARGET), "{seen}");

    std::fs::write(
        broker.dir().join("admin-tokens"),
        "another-admin-token-0123456789abcdef\n",
    )
    .expect("rewrite tokens");
    broker.signal("HUP");
    // The tail ends (checked every 5 s), and pages go back to the login.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(_)) = tail.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the live tail outlived its admin token");
    let (status, _) = get_page(&broker, "/console/rules", Some(&s.cookie)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

/// `limits.per_client_address` holds for logins as for `/token`.
#[tokio::test]
async fn logins_count_against_the_per_client_address_limit() {
    let fake = FakeIssuer::start();
    let config = console_config(&fake).top_level("limits:\n  per_client_address: 2/m\n");
    let broker = Broker::start(&config.render()).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(log_in(&broker, "not-the-admin-token-0123456789").await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}
