//! The admin API (contract §8): bearer tokens, issuers and rules created, replaced and
//! deleted over HTTP, ETag preconditions, 422 with every problem, 409 for an issuer in
//! use, audit (against the broker's router in this process), and, through the real
//! binary, a tokens file, persistence across a restart and a listener of its own.

use std::time::{Duration, Instant};

use integration_tests::fake_issuer::{DEFAULT_AUDIENCE, DEFAULT_SUBJECT};
use integration_tests::tokens::decode_unverified;
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Http, InProcess, Reply, dedent};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::rule_body;
use crate::support::{ISSUER_NAME, TARGET, default_app, default_rule, exchange_status, tokens_file_broker};

/// The admin token configured inline (`admin.tokens`).
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef-one";

/// The name the fake issuer is created under through the API.
const API_ISSUER: &str = "fake";

/// A target no rule grants unless a test makes one.
const TARGET_B: &str = "target-b";

/// `admin:` with [`ADMIN_TOKEN`] inline, plus `extra` keys (column 0 under `admin:`).
fn admin_block(extra: &str) -> String {
    // The fake issuer is http://127.0.0.1: API-made issuers need the opt-in for that.
    let mut out = format!("admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n  allow_insecure_issuers: true\n");
    for line in dedent(extra).lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// A broker with no issuer and no rule of its own, the admin API on its main listener:
/// its router in this process.
async fn admin_broker() -> InProcess {
    InProcess::start(&BrokerConfig::new().top_level(admin_block("")).render()).await
}

/// The fake issuer in the YAML schema, as the API takes it.
fn issuer_body(fake: &FakeIssuer) -> Value {
    json!({
        "issuer": fake.issuer(),
        "audiences": [DEFAULT_AUDIENCE],
        "algorithms": ["RS256"],
        "danger_allow_insecure": true,
    })
}

/// `body` with `name` set, as the API hands it back.
fn named(body: &Value, name: &str) -> Value {
    let mut body = body.clone();
    body["name"] = json!(name);
    body
}

/// The admin API of a broker (its main listener, or `admin.listen`), with an optional
/// `Authorization` header value.
struct Api {
    http: Http,
    authorization: Option<String>,
}

impl Api {
    /// The admin API on the broker's main listener, with [`ADMIN_TOKEN`].
    fn new(broker: &Http) -> Self {
        Self::at(broker.clone(), ADMIN_TOKEN)
    }

    /// The admin API at `http`, with bearer `token`.
    fn at(http: Http, token: &str) -> Self {
        Api {
            http,
            authorization: Some(format!("Bearer {token}")),
        }
    }

    /// The same API with another `Authorization` value (`None`: no header at all).
    fn with_authorization(&self, authorization: Option<&str>) -> Api {
        Api {
            http: self.http.clone(),
            authorization: authorization.map(str::to_owned),
        }
    }

    /// `method path` with this client's `Authorization` header, if any.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        self.http
            .send_authorized(self.authorization.as_deref(), method, path, headers, body)
            .await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], None).await
    }

    async fn put(&self, path: &str, body: &Value) -> Reply {
        self.put_with(path, body, &[]).await
    }

    async fn put_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let bytes = serde_json::to_vec(body).expect("JSON");
        self.send(Method::PUT, path, headers, Some(bytes)).await
    }

    async fn put_raw(&self, path: &str, body: &[u8]) -> Reply {
        self.send(Method::PUT, path, &[], Some(body.to_vec())).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, &[], None).await
    }

    async fn delete_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::DELETE, path, headers, None).await
    }

    /// PUT that must answer `status`; returns the ETag.
    async fn put_expect(&self, path: &str, body: &Value, status: u16) -> String {
        let reply = self.put(path, body).await;
        assert_eq!(
            reply.status,
            status,
            "PUT {path}: {reply:?}\n--- broker stderr ---\n{}",
            self.http.stderr()
        );
        etag_of(&reply)
    }

    /// Create the fake as [`API_ISSUER`] and rule `r1` granting [`TARGET`].
    async fn create_issuer_and_rule(&self, fake: &FakeIssuer) {
        self.put_expect(&issuer_path(API_ISSUER), &issuer_body(fake), 201)
            .await;
        self.put_expect(&rule_path("r1"), &rule_body(API_ISSUER, TARGET), 201)
            .await;
    }
}

/// `api` has no admin API: GET on the lists, on issuer `issuer`, on rule `rule` and on
/// the OpenAPI document are 404 (`where_`: where that is, for the message).
async fn assert_no_admin_api(api: &Api, issuer: &str, rule: &str, where_: &str) {
    for path in [
        "/admin/v1/issuers".to_owned(),
        "/admin/v1/rules".to_owned(),
        issuer_path(issuer),
        rule_path(rule),
        "/admin/v1/openapi.json".to_owned(),
    ] {
        let reply = api.get(&path).await;
        assert_eq!(reply.status, 404, "GET {path} {where_}: {reply:?}");
    }
}

/// A fake issuer, and a broker with the admin API (see [`admin_broker`]) with its
/// [`Api`].
async fn admin_setup() -> (FakeIssuer, InProcess, Api) {
    let fake = FakeIssuer::start();
    let broker = admin_broker().await;
    let api = Api::new(&broker);
    (fake, broker, api)
}

fn issuer_path(name: &str) -> String {
    format!("/admin/v1/issuers/{name}")
}

fn rule_path(name: &str) -> String {
    format!("/admin/v1/rules/{name}")
}

fn etag_of(reply: &Reply) -> String {
    let etag = reply
        .header("etag")
        .unwrap_or_else(|| panic!("no ETag: {reply:?}"))
        .to_owned();
    assert!(!etag.is_empty(), "empty ETag: {reply:?}");
    etag
}

/// An exchange for `target` that must succeed; returns the issued claims.
async fn exchange_ok(broker: &Http, fake: &FakeIssuer, target: &str) -> Value {
    let reply = broker.exchange(&fake.mint(json!({})), target).await;
    assert_eq!(
        reply.status,
        200,
        "exchange for {target}: {reply:?}\n--- broker stderr ---\n{}",
        broker.stderr()
    );
    decode_unverified(reply.access_token()).1
}

/// The `name`s of a list answer, in order.
fn names(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "list: {reply:?}");
    reply
        .json
        .as_array()
        .unwrap_or_else(|| panic!("a list is a JSON array: {}", reply.text))
        .iter()
        .map(|item| item["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A 401 per RFC 6750: `WWW-Authenticate: Bearer ...` and a JSON error.
fn assert_unauthorized(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {reply:?}");
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate: {reply:?}"));
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: WWW-Authenticate is `{challenge}`"
    );
    assert!(
        reply.json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: not a JSON error: {}",
        reply.text
    );
}

/// A 422 whose `errors` each carry a string `field` and a non-empty `message`;
/// returns them.
fn assert_invalid(reply: &Reply, what: &str) -> Vec<Value> {
    assert_eq!(reply.status, 422, "{what}: {reply:?}");
    let errors = reply.json["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no `errors` array: {}", reply.text))
        .clone();
    assert!(!errors.is_empty(), "{what}: empty `errors`: {}", reply.text);
    for e in &errors {
        assert!(e["field"].is_string(), "{what}: problem without a field: {e}");
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: problem without a message: {e}"
        );
    }
    errors
}

/// Some problem's field contains `field` (and its message `message`, case-insensitive).
fn has_problem(errors: &[Value], field: &str, message: &str) -> bool {
    errors.iter().any(|e| {
        e["field"].as_str().unwrap_or_default().contains(field)
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase()
                .contains(&message.to_lowercase())
    })
}

/// Every `admin_change` line of the audit file, polled until there are `n` (10 s).
async fn admin_changes(broker: &Http, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let changes: Vec<Value> = broker
            .audit_lines()
            .into_iter()
            .filter(|l| l["event"] == "admin_change")
            .collect();
        if changes.len() >= n || Instant::now() > deadline {
            return changes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_a_bearer_token() {
    let (fake, broker, api) = admin_setup().await;
    let wrong = format!("Bearer {ADMIN_TOKEN}-not");
    let basic = format!("Basic {ADMIN_TOKEN}");
    let without: [(&str, Option<&str>); 4] = [
        ("no Authorization", None),
        ("a wrong token", Some(wrong.as_str())),
        ("the right token with Basic", Some(basic.as_str())),
        ("an empty bearer", Some("Bearer ")),
    ];
    for (what, authorization) in without {
        let api = api.with_authorization(authorization);
        for path in ["/admin/v1/issuers", "/admin/v1/rules"] {
            assert_unauthorized(&api.get(path).await, &format!("GET {path}, {what}"));
        }
        for path in [issuer_path(API_ISSUER), rule_path("r1")] {
            assert_unauthorized(&api.get(&path).await, &format!("GET {path}, {what}"));
            assert_unauthorized(&api.delete(&path).await, &format!("DELETE {path}, {what}"));
        }
        let reply = api.put(&issuer_path(API_ISSUER), &issuer_body(&fake)).await;
        assert_unauthorized(&reply, &format!("PUT issuer, {what}"));
        let reply = api.put(&rule_path("r1"), &rule_body(API_ISSUER, TARGET)).await;
        assert_unauthorized(&reply, &format!("PUT rule, {what}"));
        assert!(
            !reply.text.contains(ADMIN_TOKEN),
            "the 401 echoes the token: {}",
            reply.text
        );
    }
    // Nothing was made by the refused PUTs; the right token works.
    assert_eq!(names(&api.get("/admin/v1/issuers").await), Vec::<String>::new());
    assert_eq!(names(&api.get("/admin/v1/rules").await), Vec::<String>::new());
    assert_eq!(api.get(&issuer_path(API_ISSUER)).await.status, 404);

    // The OpenAPI document.
    let doc = broker.get("/admin/v1/openapi.json").await;
    assert_eq!(doc.status, 200, "{doc:?}");
    let version = doc.json["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "openapi is `{version}`: {}", doc.text);
    for path in [
        "/admin/v1/issuers",
        "/admin/v1/issuers/{name}",
        "/admin/v1/rules",
        "/admin/v1/rules/{name}",
    ] {
        assert!(doc.json["paths"].get(path).is_some(), "openapi lacks {path}");
    }

    // Without `admin:`, there is no admin API at all.
    let plain = default_app(&fake).await;
    let plain_api = Api::new(&plain);
    assert_no_admin_api(&plain_api, ISSUER_NAME, "ci-deployer", "without admin").await;
    let reply = plain_api.put(&issuer_path(API_ISSUER), &issuer_body(&fake)).await;
    assert_eq!(reply.status, 404, "PUT without admin: {reply:?}");
    let reply = plain_api.delete(&rule_path("ci-deployer")).await;
    assert_eq!(reply.status, 404, "DELETE without admin: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_file_tokens_are_accepted() {
    let first = "file-token-0123456789abcdef-first";
    let second = "file-token-0123456789abcdef-second";
    let comment = "# a comment, long enough to be a token";
    let broker = tokens_file_broker(&format!("{comment}\n{first}\n\n{second}\n")).await;
    for token in [first, second] {
        let reply = Api::at(Http::clone(&broker), token).get("/admin/v1/rules").await;
        assert_eq!(reply.status, 200, "token from the file: {reply:?}");
    }
    for token in [comment, "a comment, long enough to be a token", ADMIN_TOKEN] {
        let reply = Api::at(Http::clone(&broker), token).get("/admin/v1/rules").await;
        assert_unauthorized(&reply, &format!("`{token}` is no token"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_issuer_and_rule_allow_an_exchange() {
    let (fake, broker, api) = admin_setup().await;
    assert_eq!(
        exchange_status(&broker, &fake, TARGET).await,
        400,
        "nothing is trusted before the API says so"
    );

    let issuer = issuer_body(&fake);
    let reply = api.put(&issuer_path(API_ISSUER), &issuer).await;
    assert_eq!(reply.status, 201, "{reply:?}\n{}", broker.stderr());
    let issuer_etag = etag_of(&reply);
    let rule = rule_body(API_ISSUER, TARGET);
    let reply = api.put(&rule_path("r1"), &rule).await;
    assert_eq!(reply.status, 201, "{reply:?}\n{}", broker.stderr());
    let rule_etag = etag_of(&reply);

    let claims = exchange_ok(&broker, &fake, TARGET).await;
    assert_eq!(claims["aud"], TARGET, "{claims}");
    assert_eq!(claims["sub"], DEFAULT_SUBJECT, "{claims}");
    assert_eq!(
        exchange_status(&broker, &fake, TARGET_B).await,
        400,
        "r1 grants target-a only"
    );

    assert_eq!(names(&api.get("/admin/v1/issuers").await), [API_ISSUER]);
    assert_eq!(names(&api.get("/admin/v1/rules").await), ["r1"]);
    let listed = api.get("/admin/v1/rules").await;
    assert_eq!(listed.json[0], named(&rule, "r1"), "{}", listed.text);

    let one = api.get(&issuer_path(API_ISSUER)).await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.json, named(&issuer, API_ISSUER));
    assert_eq!(etag_of(&one), issuer_etag);
    let one = api.get(&rule_path("r1")).await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.json, named(&rule, "r1"));
    assert_eq!(etag_of(&one), rule_etag);

    // Replace: the rule now grants target-b as well (the body may name itself).
    let mut replaced = named(&rule, "r1");
    replaced["match"]["audiences"] = json!([TARGET, TARGET_B]);
    let reply = api.put(&rule_path("r1"), &replaced).await;
    assert_eq!(reply.status, 200, "replace: {reply:?}\n{}", broker.stderr());
    let new_etag = etag_of(&reply);
    assert_ne!(new_etag, rule_etag, "a replaced rule has a new ETag");
    let one = api.get(&rule_path("r1")).await;
    assert_eq!(one.json, replaced);
    assert_eq!(etag_of(&one), new_etag);
    exchange_ok(&broker, &fake, TARGET_B).await;
    exchange_ok(&broker, &fake, TARGET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bodies_get_422_with_every_problem() {
    let (fake, broker, api) = admin_setup().await;
    api.create_issuer_and_rule(&fake).await;
    let state_file = broker.dir().join("data/admin-state.json");
    let state_before = std::fs::read(&state_file).expect("the state file exists after a change");
    let rule_before = api.get(&rule_path("r1")).await;
    let issuer_before = api.get(&issuer_path(API_ISSUER)).await;

    // Bodies that are no object at all.
    let errors = assert_invalid(&api.put_raw(&rule_path("r1"), b"match: {").await, "not JSON");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let errors = assert_invalid(&api.put_raw(&rule_path("r1"), b"[1, 2]").await, "a JSON array");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let errors = assert_invalid(
        &api.put_raw(&issuer_path("other"), b"\"x\"").await,
        "a JSON string",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");

    // A rule with an unknown field (that would also grant target-b).
    let mut body = rule_body(API_ISSUER, TARGET_B);
    body["frobnicate"] = json!(true);
    let errors = assert_invalid(&api.put(&rule_path("r1"), &body).await, "unknown field");
    assert!(has_problem(&errors, "frobnicate", "unknown field"), "{errors:?}");
    let mut body = rule_body(API_ISSUER, TARGET_B);
    body["match"]["subjekt"] = json!("x");
    let errors = assert_invalid(&api.put(&rule_path("r2"), &body).await, "unknown match field");
    assert!(
        has_problem(&errors, "match.subjekt", "unknown field"),
        "{errors:?}"
    );

    // A rule naming an unknown issuer.
    let errors = assert_invalid(
        &api.put(&rule_path("r2"), &rule_body("nope", TARGET_B)).await,
        "unknown issuer",
    );
    assert!(has_problem(&errors, "match.issuer", "nope"), "{errors:?}");

    // Several problems in one rule: every one is listed.
    let body = json!({
        "match": {
            "issuer": "nope",
            "subject_pattern": "",
            "condition": "claims.x == ",
            "audiences": [TARGET_B],
        },
    });
    let errors = assert_invalid(&api.put(&rule_path("r2"), &body).await, "three problems");
    assert!(
        has_problem(&errors, "match.subject_pattern", "empty"),
        "{errors:?}"
    );
    assert!(has_problem(&errors, "match.condition", "CEL"), "{errors:?}");
    assert!(has_problem(&errors, "match.issuer", "nope"), "{errors:?}");

    // An invalid issuer: no audiences, and an unknown algorithm.
    let mut body = issuer_body(&fake);
    body["audiences"] = json!([]);
    body["algorithms"] = json!(["HS256"]);
    let errors = assert_invalid(&api.put(&issuer_path("other"), &body).await, "bad issuer");
    assert!(has_problem(&errors, "audiences", "non-empty"), "{errors:?}");
    assert!(has_problem(&errors, "algorithms", "HS256"), "{errors:?}");

    // A body whose name is not the one in the path.
    let errors = assert_invalid(
        &api.put(&rule_path("r1"), &named(&rule_body(API_ISSUER, TARGET_B), "r9"))
            .await,
        "name differs",
    );
    assert!(has_problem(&errors, "name", "r1"), "{errors:?}");

    // Nothing changed.
    let rule_after = api.get(&rule_path("r1")).await;
    assert_eq!(rule_after.json, rule_before.json);
    assert_eq!(etag_of(&rule_after), etag_of(&rule_before));
    let issuer_after = api.get(&issuer_path(API_ISSUER)).await;
    assert_eq!(issuer_after.json, issuer_before.json);
    assert_eq!(etag_of(&issuer_after), etag_of(&issuer_before));
    assert_eq!(names(&api.get("/admin/v1/rules").await), ["r1"]);
    assert_eq!(names(&api.get("/admin/v1/issuers").await), [API_ISSUER]);
    assert_eq!(api.get(&rule_path("r9")).await.status, 404);
    assert_eq!(
        std::fs::read(&state_file).expect("state file"),
        state_before,
        "a refused change leaves the state file alone"
    );
    exchange_ok(&broker, &fake, TARGET).await;
    assert_eq!(exchange_status(&broker, &fake, TARGET_B).await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_preconditions() {
    let (fake, broker, api) = admin_setup().await;
    api.put_expect(&issuer_path(API_ISSUER), &issuer_body(&fake), 201)
        .await;
    let path = rule_path("r1");
    let first = api.put_expect(&path, &rule_body(API_ISSUER, TARGET), 201).await;

    // The current ETag: replaced.
    let second_body = rule_body(API_ISSUER, TARGET_B);
    let reply = api.put_with(&path, &second_body, &[("if-match", &first)]).await;
    assert_eq!(reply.status, 200, "If-Match current: {reply:?}");
    let second = etag_of(&reply);
    assert_ne!(first, second);

    // A stale ETag: 412, nothing changes.
    let reply = api
        .put_with(&path, &rule_body(API_ISSUER, TARGET), &[("if-match", &first)])
        .await;
    assert_eq!(reply.status, 412, "If-Match stale: {reply:?}");
    let now = api.get(&path).await;
    assert_eq!(etag_of(&now), second);
    assert_eq!(now.json, named(&second_body, "r1"));
    exchange_ok(&broker, &fake, TARGET_B).await;
    assert_eq!(exchange_status(&broker, &fake, TARGET).await, 400);

    // If-Match on something that does not exist: 412, not created.
    let reply = api
        .put_with(
            &rule_path("r2"),
            &rule_body(API_ISSUER, TARGET),
            &[("if-match", &second)],
        )
        .await;
    assert_eq!(reply.status, 412, "If-Match on a missing item: {reply:?}");
    assert_eq!(api.get(&rule_path("r2")).await.status, 404);

    // If-None-Match: * — create only.
    let reply = api
        .put_with(&path, &rule_body(API_ISSUER, TARGET), &[("if-none-match", "*")])
        .await;
    assert_eq!(
        reply.status, 412,
        "If-None-Match: * on an existing item: {reply:?}"
    );
    assert_eq!(etag_of(&api.get(&path).await), second);
    let reply = api
        .put_with(
            &rule_path("r2"),
            &rule_body(API_ISSUER, TARGET),
            &[("if-none-match", "*")],
        )
        .await;
    assert_eq!(reply.status, 201, "If-None-Match: * on a new item: {reply:?}");

    // DELETE with a stale ETag: 412, still there; with the current one: gone.
    let reply = api.delete_with(&path, &[("if-match", &first)]).await;
    assert_eq!(reply.status, 412, "DELETE If-Match stale: {reply:?}");
    assert_eq!(api.get(&path).await.status, 200);
    exchange_ok(&broker, &fake, TARGET_B).await;
    let reply = api.delete_with(&path, &[("if-match", &second)]).await;
    assert_eq!(reply.status, 204, "DELETE If-Match current: {reply:?}");
    assert_eq!(api.get(&path).await.status, 404);
    assert_eq!(exchange_status(&broker, &fake, TARGET_B).await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_issuer_in_use_is_409() {
    let (fake, broker, api) = admin_setup().await;
    api.create_issuer_and_rule(&fake).await;

    let reply = api.delete(&issuer_path(API_ISSUER)).await;
    assert_eq!(reply.status, 409, "{reply:?}");
    assert!(reply.json["error"].is_string(), "{}", reply.text);
    assert_eq!(api.get(&issuer_path(API_ISSUER)).await.status, 200);
    exchange_ok(&broker, &fake, TARGET).await;

    let reply = api.delete(&rule_path("r1")).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_eq!(exchange_status(&broker, &fake, TARGET).await, 400);
    let reply = api.delete(&issuer_path(API_ISSUER)).await;
    assert_eq!(reply.status, 204, "{reply:?}");

    assert_eq!(api.get(&issuer_path(API_ISSUER)).await.status, 404);
    assert_eq!(api.get(&rule_path("r1")).await.status, 404);
    assert_eq!(names(&api.get("/admin/v1/issuers").await), Vec::<String>::new());
    assert_eq!(names(&api.get("/admin/v1/rules").await), Vec::<String>::new());
    assert_eq!(api.delete(&rule_path("r1")).await.status, 404);
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    reply.assert_error(400, "invalid_request", "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_survive_a_restart() {
    let fake = FakeIssuer::start();
    let config = BrokerConfig::new().top_level(admin_block("")).render();
    let mut first = Broker::start(&config).await;
    let api = Api::new(&first);
    api.create_issuer_and_rule(&fake).await;
    let etag = etag_of(&api.get(&rule_path("r1")).await);
    exchange_ok(&first, &fake, TARGET).await;

    let status = first.signal_and_wait("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", first.stderr());
    let dir = first.stop_and_keep_dir();
    let state_text = std::fs::read_to_string(dir.path().join("data/admin-state.json"))
        .expect("the state file is at ./data/admin-state.json next to the config");
    let state: Value = serde_json::from_str(&state_text)
        .unwrap_or_else(|e| panic!("the state file is not JSON ({e}): {state_text}"));
    assert!(
        state_text.contains(API_ISSUER) && state_text.contains("r1"),
        "{state}"
    );

    let second = Broker::builder().dir(dir).start(&config).await;
    let api = Api::new(&second);
    assert_eq!(names(&api.get("/admin/v1/issuers").await), [API_ISSUER]);
    assert_eq!(names(&api.get("/admin/v1/rules").await), ["r1"]);
    let rule = api.get(&rule_path("r1")).await;
    assert_eq!(rule.json, named(&rule_body(API_ISSUER, TARGET), "r1"));
    assert_eq!(etag_of(&rule), etag, "the ETag is stable across a restart");
    exchange_ok(&second, &fake, TARGET).await;
    assert_eq!(exchange_status(&second, &fake, TARGET_B).await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_are_audited() {
    let (fake, broker, api) = admin_setup().await;

    // Refused attempts are no changes.
    let wrong = format!("Bearer {ADMIN_TOKEN}-not");
    let reply = api
        .with_authorization(Some(&wrong))
        .put(&issuer_path(API_ISSUER), &issuer_body(&fake))
        .await;
    assert_eq!(reply.status, 401);
    let reply = api.put(&rule_path("r1"), &rule_body("nope", TARGET)).await;
    assert_eq!(reply.status, 422);

    api.create_issuer_and_rule(&fake).await;
    api.put_expect(&rule_path("r1"), &rule_body(API_ISSUER, TARGET_B), 200)
        .await;
    assert_eq!(api.delete(&rule_path("r1")).await.status, 204);
    assert_eq!(api.delete(&issuer_path(API_ISSUER)).await.status, 204);

    let expected = [
        ("create", "issuers", API_ISSUER),
        ("create", "rules", "r1"),
        ("replace", "rules", "r1"),
        ("delete", "rules", "r1"),
        ("delete", "issuers", API_ISSUER),
    ];
    let changes = admin_changes(&broker, expected.len()).await;
    let seen: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap_or_default(),
                l["object"].as_str().unwrap_or_default(),
                l["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(seen, expected, "{changes:#?}");
    for line in &changes {
        let who = line["who"].as_str().unwrap_or_default();
        assert!(!who.is_empty(), "no `who`: {line}");
        assert!(!who.contains(&ADMIN_TOKEN[..12]), "`who` shows the token: {line}");
        assert!(line["time"].is_string() || line["time"].is_number(), "{line}");
    }
    let who: Vec<&Value> = changes.iter().map(|l| &l["who"]).collect();
    assert!(
        who.windows(2).all(|w| w[0] == w[1]),
        "one caller, one identity: {who:?}"
    );
    let text = broker.audit_text();
    assert!(
        !text.contains(ADMIN_TOKEN),
        "the audit log holds the admin token:\n{text}"
    );
    assert!(
        !broker.stderr().contains(ADMIN_TOKEN),
        "the log holds the admin token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_on_its_own_listener() {
    let fake = FakeIssuer::start();
    let admin_port = integration_tests::broker::free_port();
    let config = BrokerConfig::new()
        .top_level(admin_block(&format!("listen: 127.0.0.1:{admin_port}")))
        .render();
    let broker = Broker::start(&config).await;
    let admin = Api::at(
        broker.http_at(format!("http://127.0.0.1:{admin_port}")),
        ADMIN_TOKEN,
    );
    let main = Api::new(&broker);

    assert_eq!(names(&admin.get("/admin/v1/issuers").await), Vec::<String>::new());
    assert_unauthorized(
        &admin.with_authorization(None).get("/admin/v1/rules").await,
        "own listener, no token",
    );
    let doc = admin.with_authorization(None).get("/admin/v1/openapi.json").await;
    assert_eq!(doc.status, 200, "{doc:?}");
    admin.create_issuer_and_rule(&fake).await;
    exchange_ok(&broker, &fake, TARGET).await;

    assert_no_admin_api(&main, API_ISSUER, "r1", "on the main listener").await;
    let reply = main.delete(&rule_path("r1")).await;
    assert_eq!(reply.status, 404, "DELETE on the main listener: {reply:?}");
    let reply = main.put(&rule_path("r2"), &rule_body(API_ISSUER, TARGET_B)).await;
    assert_eq!(reply.status, 404, "PUT on the main listener: {reply:?}");
    assert_eq!(names(&admin.get("/admin/v1/rules").await), ["r1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_rule_and_api_rule_with_the_same_name_collide() {
    let fake = FakeIssuer::start();
    let file_rule = default_rule().replace("ci-deployer", "dup");
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(&file_rule)
        .top_level(admin_block(""))
        .render();
    let broker = InProcess::start(&config).await;
    let api = Api::new(&broker);
    exchange_ok(&broker, &fake, TARGET).await;

    // The configuration file owns its names: 409, saying so (issue 10, item 4).
    let reply = api
        .put(&rule_path("dup"), &rule_body(ISSUER_NAME, TARGET_B))
        .await;
    assert_eq!(reply.status, 409, "a rule named like a file rule: {reply:?}");
    assert!(
        reply.json["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("configuration file")),
        "{reply:?}"
    );
    assert_eq!(api.get(&rule_path("dup")).await.status, 404);
    // Listed, as part of the effective set, read-only.
    let listed = api.get("/admin/v1/rules").await;
    assert_eq!(names(&listed), ["dup"]);
    assert_eq!(listed.json[0]["read_only"], true, "{listed:?}");
    assert_eq!(exchange_status(&broker, &fake, TARGET_B).await, 400);
    exchange_ok(&broker, &fake, TARGET).await;

    // The same for an issuer named like a file issuer.
    let reply = api.put(&issuer_path(ISSUER_NAME), &issuer_body(&fake)).await;
    assert_eq!(reply.status, 409, "an issuer named like a file issuer: {reply:?}");
    assert_eq!(api.get(&issuer_path(ISSUER_NAME)).await.status, 404);

    // A file rule is not the API's to delete.
    assert_eq!(api.delete(&rule_path("dup")).await.status, 409);
    exchange_ok(&broker, &fake, TARGET).await;
}
