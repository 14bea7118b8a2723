//! The cloud fakes themselves (`integration_tests::cloud_fakes`): a token that meets
//! the setup is accepted, and each documented refusal happens, with the cloud's
//! status and error body. A `FakeIssuer` stands in for the broker as the JWT issuer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_tests::cloud_fakes::{
    EntraSetup, FakeEntra, FakeGoogle, Fault, FederatedCredential, GoogleEndpoint, GoogleSetup, rfc3339,
};
use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::tokens::{
    GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT, hs256, now,
};
use integration_tests::{FakeIssuer, KeyKind, SigningKey};
use serde_json::{Value, json};

const SA: &str = "deployer@proj.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const AZURE_SCOPE: &str = "https://management.azure.com/.default";

/// Form fields to set (an empty value removes the field).
type Changes<'a> = &'a [(&'a str, &'a str)];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Status and JSON body of a reply (panics when the body is not JSON).
async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("HTTP {status} body is not JSON ({e}): {text}"));
    (status, body)
}

// ---------------------------------------------------------------- Google

fn google_for(issuer: &FakeIssuer) -> FakeGoogle {
    FakeGoogle::start(GoogleSetup::new(issuer.issuer()))
}

/// A subject token from `issuer` that meets `google`'s setup, with `overrides`.
fn google_token(issuer: &FakeIssuer, google: &FakeGoogle, overrides: Value) -> String {
    mint_over(
        issuer,
        json!({"aud": google.setup().default_token_audience()}),
        overrides,
    )
}

/// `form` with `changes` applied: each named field replaced, or removed when its new
/// value is empty.
fn with_changes(form: Vec<(&str, String)>, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut form: Vec<(String, String)> = form.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    for (k, v) in changes {
        form.retain(|(name, _)| name != k);
        if !v.is_empty() {
            form.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    form
}

/// `issuer`'s token with `base` claims, `overrides` on top.
fn mint_over(issuer: &FakeIssuer, base: Value, overrides: Value) -> String {
    let mut claims = base;
    for (k, v) in overrides.as_object().expect("object") {
        claims[k] = v.clone();
    }
    issuer.mint(claims)
}

/// The STS form for `token`, with `changes` applied (empty value: field removed).
fn sts_form(google: &FakeGoogle, token: &str, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let form: Vec<(&str, String)> = [
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE.to_owned()),
        ("audience", google.setup().audience()),
        ("scope", SCOPE.to_owned()),
        ("requested_token_type", TOKEN_TYPE_ACCESS_TOKEN.to_owned()),
        ("subject_token_type", TOKEN_TYPE_JWT.to_owned()),
        ("subject_token", token.to_owned()),
    ]
    .into();
    with_changes(form, changes)
}

async fn sts(google: &FakeGoogle, form: &[(String, String)]) -> (u16, Value) {
    read(
        client()
            .post(google.token_url())
            .form(form)
            .send()
            .await
            .expect("STS reachable"),
    )
    .await
}

async fn sts_token(google: &FakeGoogle, token: &str) -> (u16, Value) {
    sts(google, &sts_form(google, token, &[])).await
}

/// Assert a 400 OAuth refusal `error` whose description contains `needle`.
fn assert_oauth_refusal(reply: &(u16, Value), error: &str, needle: &str) {
    let (status, body) = reply;
    assert_eq!(*status, 400, "{body}");
    assert_eq!(body["error"], error, "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(needle), "{needle:?} not in {body}");
}

/// A federated token from the fake's STS for the issuer's default subject.
async fn federated_token(issuer: &FakeIssuer, google: &FakeGoogle) -> String {
    let (status, body) = sts_token(google, &google_token(issuer, google, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("access_token").to_owned()
}

async fn generate(google: &FakeGoogle, email: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = client().post(google.generate_access_token_url(email)).json(&body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    read(request.send().await.expect("IAM Credentials reachable")).await
}

#[tokio::test]
async fn google_sts_accepts_a_token_that_meets_the_provider() {
    let issuer = FakeIssuer::start();
    let google = google_for(&issuer);
    let token = google_token(&issuer, &google, json!({}));
    let fetches_before = issuer.key_fetches();
    let (status, body) = sts_token(&google, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["issued_token_type"], TOKEN_TYPE_ACCESS_TOKEN);
    assert_eq!(body["expires_in"], 3600);
    let access = body["access_token"].as_str().expect("access_token");
    assert_ne!(access, token);
    let issued = google.issued(access).expect("the fake knows what it issued");
    assert_eq!(issued.subject, DEFAULT_SUBJECT);
    assert_eq!(issued.service_account, None);
    assert_eq!(issued.scopes, vec![SCOPE.to_owned()]);
    // The keys were fetched over HTTP for this exchange.
    let fetches_after = issuer.key_fetches();
    assert_eq!(fetches_after.0, fetches_before.0 + 1);
    assert_eq!(fetches_after.1, fetches_before.1 + 1);

    // The record holds the decoded claims, never the token.
    let requests = google.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/v1/token");
    assert_eq!(requests[0].fields["audience"], google.setup().audience());
    assert_eq!(
        requests[0].fields["subject_token"]["claims"]["sub"],
        DEFAULT_SUBJECT
    );
    let printed = format!("{requests:?}");
    let signature = token.rsplit('.').next().expect("signature");
    assert!(
        !printed.contains(&token) && !printed.contains(signature),
        "{printed}"
    );
}

#[tokio::test]
async fn google_sts_accepts_es256_json_bodies_id_token_type_and_the_double_slash_audience() {
    let issuer = FakeIssuer::start_with(KeyKind::Ec);
    let google = google_for(&issuer);
    let token = google_token(&issuer, &google, json!({"aud": google.setup().audience()}));
    let body: serde_json::Map<String, Value> =
        sts_form(&google, &token, &[("subject_token_type", TOKEN_TYPE_ID_TOKEN)])
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
    let (status, reply) = read(
        client()
            .post(google.token_url())
            .json(&body)
            .send()
            .await
            .expect("STS"),
    )
    .await;
    assert_eq!(status, 200, "{reply}");

    // Configured audiences replace the defaults.
    let mut setup = GoogleSetup::new(issuer.issuer());
    setup.allowed_audiences = vec!["fedbroker-gcp".to_owned()];
    let custom = FakeGoogle::start(setup);
    let ok = issuer.mint(json!({"aud": "fedbroker-gcp"}));
    assert_eq!(sts_token(&custom, &ok).await.0, 200);
    let default_aud = google_token(&issuer, &custom, json!({}));
    assert_oauth_refusal(
        &sts_token(&custom, &default_aud).await,
        "invalid_grant",
        "audience",
    );
}

#[tokio::test]
async fn google_sts_refuses_another_issuer_without_fetching_its_keys() {
    let issuer = FakeIssuer::start();
    let other = FakeIssuer::start();
    let google = google_for(&issuer);
    let token = other.mint(json!({"aud": google.setup().default_token_audience()}));
    let reply = sts_token(&google, &token).await;
    assert_oauth_refusal(&reply, "invalid_grant", "issuer");
    assert_eq!(other.key_fetches(), (0, 0));
    // A trailing slash is another issuer.
    let slash = google_token(&issuer, &google, json!({"iss": format!("{}/", issuer.issuer())}));
    assert_oauth_refusal(&sts_token(&google, &slash).await, "invalid_grant", "issuer");
}

#[tokio::test]
async fn google_sts_refuses_a_wrong_audience_claim() {
    let issuer = FakeIssuer::start();
    let google = google_for(&issuer);
    for aud in [
        json!("fedbroker"),
        json!([]),
        json!(format!("{}x", google.setup().default_token_audience())),
    ] {
        let token = google_token(&issuer, &google, json!({"aud": aud}));
        assert_oauth_refusal(&sts_token(&google, &token).await, "invalid_grant", "audience");
    }
    // One matching member of an array is enough.
    let token = google_token(
        &issuer,
        &google,
        json!({"aud": ["x", google.setup().default_token_audience()]}),
    );
    assert_eq!(sts_token(&google, &token).await.0, 200);
}

#[tokio::test]
async fn google_sts_refuses_bad_signatures_unknown_kids_and_other_algorithms() {
    let issuer = FakeIssuer::start();
    let google = google_for(&issuer);
    let aud = google.setup().default_token_audience();
    // Signed by an unpublished key claiming the published kid.
    let impostor = SigningKey::generate(KeyKind::Rsa);
    let forged = issuer.mint_with_key(
        &impostor,
        json!({"kid": issuer.current_key().kid}),
        json!({"aud": aud}),
    );
    assert_oauth_refusal(&sts_token(&google, &forged).await, "invalid_grant", "signature");
    // A kid the issuer never published.
    let unknown = issuer.mint_with_key(&impostor, json!({}), json!({"aud": aud}));
    assert_oauth_refusal(&sts_token(&google, &unknown).await, "invalid_grant", "kid");
    // No kid.
    let no_kid = issuer.mint_with_header(json!({"kid": null}), json!({"aud": aud}));
    assert_oauth_refusal(&sts_token(&google, &no_kid).await, "invalid_grant", "kid");
    // RS512 with the published key, and HS256 with its public key as the secret.
    let rs512 = issuer.mint_with_header(json!({"alg": "RS512"}), json!({"aud": aud}));
    assert_oauth_refusal(&sts_token(&google, &rs512).await, "invalid_grant", "RS512");
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": issuer.current_key().kid});
    let hs = hs256(
        &header,
        &issuer.claims(json!({"aud": aud})),
        issuer.current_key().public_pem().as_bytes(),
    );
    assert_oauth_refusal(&sts_token(&google, &hs).await, "invalid_grant", "HS256");
    // Garbage.
    assert_oauth_refusal(&sts_token(&google, "not-a-jwt").await, "invalid_grant", "parse");
    // A rotated-in key is found (the JWKS is fetched again).
    issuer.rotate(true);
    assert_eq!(
        sts_token(&google, &google_token(&issuer, &google, json!({})))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn google_sts_refuses_expired_future_and_overlong_tokens() {
    let issuer = FakeIssuer::start();
    let google = google_for(&issuer);
    let now = now();
    let cases = [
        (json!({"iat": now - 600, "exp": now - 1}), "expired"),
        (json!({"iat": now + 300, "exp": now + 900}), "future"),
        (json!({"iat": now - 60, "exp": now - 60 + 48 * 3600}), "48 hours"),
        (json!({"iat": null}), "iat"),
        (json!({"exp": null}), "exp"),
    ];
    for (claims, needle) in cases {
        let token = google_token(&issuer, &google, claims.clone());
        let reply = sts_token(&google, &token).await;
        assert_oauth_refusal(&reply, "invalid_grant", needle);
    }
    // Just under 48 hours is fine.
    let token = google_token(
        &issuer,
        &google,
        json!({"iat": now - 60, "exp": now - 61 + 48 * 3600}),
    );
    assert_eq!(sts_token(&google, &token).await.0, 200);
}

#[tokio::test]
async fn google_sts_limits_google_subject_to_127_bytes() {
    let issuer = FakeIssuer::start();
    let google = google_for(&issuer);
    // 127 bytes of which some are multi-byte: accepted.
    let at_limit = format!("é{}", "a".repeat(125));
    assert_eq!(at_limit.len(), 127);
    let token = google_token(&issuer, &google, json!({"sub": at_limit}));
    assert_eq!(sts_token(&google, &token).await.0, 200);
    // 128 bytes (64 characters of two bytes): refused.
    let over = "é".repeat(64);
    let token = google_token(&issuer, &google, json!({"sub": over}));
    assert_oauth_refusal(&sts_token(&google, &token).await, "invalid_request", "127 bytes");
    let token = google_token(&issuer, &google, json!({"sub": null}));
    assert_oauth_refusal(
        &sts_token(&google, &token).await,
        "invalid_grant",
        "google.subject",
    );
}

#[tokio::test]
async fn google_sts_checks_the_request_parameters() {
    let issuer = FakeIssuer::start();
    let google = google_for(&issuer);
    let token = google_token(&issuer, &google, json!({}));
    let other_provider = google
        .setup()
        .audience()
        .replace("/providers/fedbroker", "/providers/other");
    let cases: [(Changes, &str, &str); 6] = [
        (
            &[("audience", other_provider.as_str())],
            "invalid_target",
            "audience",
        ),
        (
            &[(
                "audience",
                "https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
            )],
            "invalid_request",
            "full resource name",
        ),
        (&[("audience", "")], "invalid_request", "audience"),
        (
            &[("grant_type", "client_credentials")],
            "unsupported_grant_type",
            "grant_type",
        ),
        (
            &[("requested_token_type", TOKEN_TYPE_JWT)],
            "invalid_request",
            "requested_token_type",
        ),
        (
            &[("subject_token_type", TOKEN_TYPE_ACCESS_TOKEN)],
            "invalid_request",
            "subject_token_type",
        ),
    ];
    for (changes, error, needle) in cases {
        let reply = sts(&google, &sts_form(&google, &token, changes)).await;
        assert_oauth_refusal(&reply, error, needle);
    }
    let reply = sts(&google, &sts_form(&google, &token, &[("subject_token", "")])).await;
    assert_oauth_refusal(&reply, "invalid_request", "subject_token");
}

#[tokio::test]
async fn google_sts_refuses_while_the_issuer_keys_are_unavailable() {
    let issuer = FakeIssuer::start();
    let google = google_for(&issuer);
    let token = google_token(&issuer, &google, json!({}));
    issuer.set_outage(true);
    assert_oauth_refusal(&sts_token(&google, &token).await, "invalid_grant", "keys");
    issuer.set_outage(false);
    assert_eq!(sts_token(&google, &token).await.0, 200);
}

#[tokio::test]
async fn iam_credentials_impersonates_a_listed_service_account() {
    let issuer = FakeIssuer::start();
    let google = google_for(&issuer);
    let federated = federated_token(&issuer, &google).await;
    let before = now();
    let (status, body) = generate(
        &google,
        SA,
        Some(&federated),
        json!({"scope": [SCOPE], "lifetime": "1800s"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let access = body["accessToken"].as_str().expect("accessToken");
    let issued = google.issued(access).expect("issued by the fake");
    assert_eq!(issued.service_account.as_deref(), Some(SA));
    assert_eq!(issued.subject, DEFAULT_SUBJECT);
    assert_eq!(issued.scopes, vec![SCOPE.to_owned()]);
    assert!((before + 1800..=now() + 1800).contains(&issued.expires_at));
    assert_eq!(body["expireTime"], rfc3339(issued.expires_at));
    // Lifetime defaults to an hour.
    let (status, body) = generate(&google, SA, Some(&federated), json!({"scope": [SCOPE]})).await;
    assert_eq!(status, 200, "{body}");
    let issued = google
        .issued(body["accessToken"].as_str().expect("token"))
        .expect("issued");
    assert!(issued.expires_at >= before + 3600);

    let last = google.requests().pop().expect("recorded");
    assert_eq!(
        last.path,
        format!("/v1/projects/-/serviceAccounts/{SA}:generateAccessToken")
    );
    assert_eq!(last.fields["authorization"], "Bearer <known>");
    assert_eq!(last.fields["scope"], json!([SCOPE]));
    assert!(!format!("{:?}", google.requests()).contains(&federated));
}

#[tokio::test]
async fn iam_credentials_refuses_unknown_accounts_bearers_and_lifetimes() {
    let issuer = FakeIssuer::start();
    let google = google_for(&issuer);
    let federated = federated_token(&issuer, &google).await;
    let body = json!({"scope": [SCOPE], "lifetime": "3600s"});

    let (status, reply) = generate(
        &google,
        "other@proj.iam.gserviceaccount.com",
        Some(&federated),
        body.clone(),
    )
    .await;
    assert_eq!(status, 403, "{reply}");
    assert_eq!(reply["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(reply["error"]["code"], 403);

    for bearer in [Some("ya29.not-issued-here"), None] {
        let (status, reply) = generate(&google, SA, bearer, body.clone()).await;
        assert_eq!(status, 401, "{reply}");
        assert_eq!(reply["error"]["status"], "UNAUTHENTICATED");
    }
    // A service account's token is not a federated token.
    let (_, sa_reply) = generate(&google, SA, Some(&federated), body.clone()).await;
    let sa_token = sa_reply["accessToken"].as_str().expect("token").to_owned();
    let (status, _) = generate(&google, SA, Some(&sa_token), body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(
        google.requests().last().expect("recorded").fields["authorization"],
        "Bearer <known>"
    );

    for bad in [
        json!({"scope": [SCOPE], "lifetime": "3601s"}),
        json!({"scope": []}),
        json!({"scope": [SCOPE], "lifetime": "1h"}),
    ] {
        let (status, reply) = generate(&google, SA, Some(&federated), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {reply}");
        assert_eq!(reply["error"]["status"], "INVALID_ARGUMENT");
    }
    // The project must be the `-` wildcard.
    let url = google
        .generate_access_token_url(SA)
        .replace("/projects/-/", "/projects/my-project/");
    let response = client()
        .post(url)
        .bearer_auth(&federated)
        .json(&body)
        .send()
        .await
        .expect("reachable");
    let (status, reply) = read(response).await;
    assert_eq!(status, 400, "{reply}");
}

#[tokio::test]
async fn google_faults_answer_as_google_does() {
    let issuer = FakeIssuer::start();
    let google = google_for(&issuer);
    let token = google_token(&issuer, &google, json!({}));
    for (code, status) in [
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ] {
        google.set_fault(Fault::Status(code));
        let (got, body) = sts_token(&google, &token).await;
        assert_eq!(got, code, "{body}");
        assert_eq!(body["error"]["status"], status, "{body}");
    }
    google.set_fault(Fault::Refuse);
    assert_oauth_refusal(&sts_token(&google, &token).await, "invalid_grant", "permission");
    google.set_fault(Fault::None);
    let federated = federated_token(&issuer, &google).await;

    // A fault on IAM Credentials only.
    google.set_fault_on(GoogleEndpoint::IamCredentials, Fault::Status(503));
    assert_eq!(sts_token(&google, &token).await.0, 200);
    let body = json!({"scope": [SCOPE]});
    let (status, reply) = generate(&google, SA, Some(&federated), body.clone()).await;
    assert_eq!(status, 503, "{reply}");
    google.set_fault_on(GoogleEndpoint::IamCredentials, Fault::Refuse);
    let (status, reply) = generate(&google, SA, Some(&federated), body.clone()).await;
    assert_eq!(status, 403, "{reply}");
    google.set_fault(Fault::None);
    assert_eq!(generate(&google, SA, Some(&federated), body.clone()).await.0, 200);

    // Stall: the request is received and never answered.
    google.set_fault(Fault::Stall);
    let stalled = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client")
        .post(google.token_url())
        .form(&sts_form(&google, &token, &[]))
        .send()
        .await;
    let error = stalled.expect_err("a stalled fake never answers");
    assert!(error.is_timeout(), "{error}");
    let requests_seen = google.requests().len();
    google.set_fault(Fault::None);
    assert_eq!(sts_token(&google, &token).await.0, 200);
    assert_eq!(google.requests().len(), requests_seen + 1);
}

// ---------------------------------------------------------------- Entra

fn entra_for(issuer: &FakeIssuer) -> FakeEntra {
    FakeEntra::start(EntraSetup::new(issuer.issuer(), DEFAULT_SUBJECT))
}

fn assertion(issuer: &FakeIssuer, overrides: Value) -> String {
    mint_over(issuer, json!({"aud": "api://AzureADTokenExchange"}), overrides)
}

fn entra_form(entra: &FakeEntra, assertion: &str, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let form: Vec<(&str, String)> = [
        ("client_id", entra.setup().client_id.clone()),
        ("scope", AZURE_SCOPE.to_owned()),
        ("grant_type", "client_credentials".to_owned()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
        ),
        ("client_assertion", assertion.to_owned()),
    ]
    .into();
    with_changes(form, changes)
}

async fn entra_post(entra: &FakeEntra, url: &str, form: &[(String, String)]) -> (u16, Value) {
    let _ = entra;
    read(
        client()
            .post(url)
            .form(form)
            .send()
            .await
            .expect("Entra reachable"),
    )
    .await
}

async fn entra_token(entra: &FakeEntra, assertion: &str) -> (u16, Value) {
    entra_post(entra, &entra.token_url(), &entra_form(entra, assertion, &[])).await
}

/// Assert an Entra refusal: `status`, `error`, `error_codes: [code]`, a description
/// starting `AADSTS{code}: `.
fn assert_aadsts(reply: &(u16, Value), status: u16, error: &str, code: u64) {
    let (got, body) = reply;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.starts_with(&format!("AADSTS{code}: ")), "{body}");
    for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[field].is_string(), "{field} missing: {body}");
    }
}

#[tokio::test]
async fn entra_accepts_a_matching_federated_assertion() {
    let issuer = FakeIssuer::start();
    let entra = entra_for(&issuer);
    let token = assertion(&issuer, json!({}));
    let (status, body) = entra_token(&entra, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let access = body["access_token"].as_str().expect("access_token");
    let issued = entra.issued(access).expect("issued by the fake");
    assert_eq!(issued.subject, DEFAULT_SUBJECT);
    assert_eq!(issued.scope, AZURE_SCOPE);
    assert_eq!(issued.client_id, entra.setup().client_id);
    assert_eq!(issuer.key_fetches(), (1, 1));

    let requests = entra.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].path,
        format!("/{}/oauth2/v2.0/token", entra.setup().tenant_id)
    );
    assert_eq!(
        requests[0].fields["client_assertion"]["claims"]["sub"],
        DEFAULT_SUBJECT
    );
    assert_eq!(requests[0].fields["scope"], AZURE_SCOPE);
    assert!(!format!("{requests:?}").contains(&token));
    assert!(entra.url().starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn entra_refuses_assertions_without_a_matching_federated_credential() {
    let issuer = FakeIssuer::start();
    let other = FakeIssuer::start();
    let entra = entra_for(&issuer);
    let cases = [
        assertion(&issuer, json!({"sub": "system:serviceaccount:ci:other"})),
        // Matching is case-sensitive.
        assertion(&issuer, json!({"sub": DEFAULT_SUBJECT.to_uppercase()})),
        assertion(&issuer, json!({"aud": "fedbroker"})),
        assertion(&other, json!({})),
    ];
    for token in &cases {
        let reply = entra_token(&entra, token).await;
        assert_aadsts(&reply, 400, "invalid_request", 70021);
        assert!(
            reply.1["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains("Assertion Subject")
        );
    }
    // No keys were fetched for tokens no credential names.
    assert_eq!(other.key_fetches(), (0, 0));

    // A configured audience replaces the default.
    let mut setup = EntraSetup::new(issuer.issuer(), DEFAULT_SUBJECT);
    setup.federated_credentials = vec![FederatedCredential {
        audiences: vec!["api://custom".to_owned()],
        ..FederatedCredential::new(issuer.issuer(), DEFAULT_SUBJECT)
    }];
    let custom = FakeEntra::start(setup);
    assert_eq!(
        entra_token(&custom, &assertion(&issuer, json!({"aud": "api://custom"})))
            .await
            .0,
        200
    );
    assert_aadsts(
        &entra_token(&custom, &assertion(&issuer, json!({}))).await,
        400,
        "invalid_request",
        70021,
    );
}

#[tokio::test]
async fn entra_accepts_only_rsa_signatures_that_verify_before_expiry() {
    let ec = FakeIssuer::start_with(KeyKind::Ec);
    let entra_ec = entra_for(&ec);
    assert_aadsts(
        &entra_token(&entra_ec, &assertion(&ec, json!({}))).await,
        401,
        "invalid_client",
        5002738,
    );

    let issuer = FakeIssuer::start();
    let entra = entra_for(&issuer);
    let rs512 = issuer.mint_with_header(
        json!({"alg": "RS512"}),
        json!({"aud": "api://AzureADTokenExchange"}),
    );
    // RS512 is an algorithm Entra takes, but the key's JWK says RS256: not used.
    assert_aadsts(&entra_token(&entra, &rs512).await, 401, "invalid_client", 700027);
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": issuer.current_key().kid});
    let claims = issuer.claims(json!({"aud": "api://AzureADTokenExchange"}));
    let hs = hs256(&header, &claims, issuer.current_key().public_pem().as_bytes());
    assert_aadsts(&entra_token(&entra, &hs).await, 401, "invalid_client", 5002738);

    let impostor = SigningKey::generate(KeyKind::Rsa);
    let forged = issuer.mint_with_key(
        &impostor,
        json!({"kid": issuer.current_key().kid}),
        json!({"aud": "api://AzureADTokenExchange"}),
    );
    assert_aadsts(&entra_token(&entra, &forged).await, 401, "invalid_client", 700027);
    let unknown_kid =
        issuer.mint_with_key(&impostor, json!({}), json!({"aud": "api://AzureADTokenExchange"}));
    assert_aadsts(
        &entra_token(&entra, &unknown_kid).await,
        401,
        "invalid_client",
        700027,
    );

    let now = now();
    let expired = assertion(&issuer, json!({"iat": now - 600, "exp": now - 1}));
    assert_aadsts(
        &entra_token(&entra, &expired).await,
        401,
        "invalid_client",
        700024,
    );
    let not_yet = assertion(&issuer, json!({"nbf": now + 300}));
    assert_aadsts(
        &entra_token(&entra, &not_yet).await,
        401,
        "invalid_client",
        700024,
    );

    issuer.set_outage(true);
    assert_aadsts(
        &entra_token(&entra, &assertion(&issuer, json!({}))).await,
        400,
        "invalid_request",
        50166,
    );
    issuer.set_outage(false);
    assert_eq!(entra_token(&entra, &assertion(&issuer, json!({}))).await.0, 200);
}

#[tokio::test]
async fn entra_checks_tenant_client_scope_and_grant() {
    let issuer = FakeIssuer::start();
    let entra = entra_for(&issuer);
    let token = assertion(&issuer, json!({}));
    let other_tenant = format!(
        "{}/22222222-2222-2222-2222-222222222222/oauth2/v2.0/token",
        entra.url()
    );
    let reply = entra_post(&entra, &other_tenant, &entra_form(&entra, &token, &[])).await;
    assert_aadsts(&reply, 400, "invalid_request", 90002);

    let cases: [(Changes, u16, &str, u64); 5] = [
        (
            &[("client_id", "33333333-3333-3333-3333-333333333333")],
            400,
            "unauthorized_client",
            700016,
        ),
        (
            &[("scope", "https://management.azure.com/user_impersonation")],
            400,
            "invalid_scope",
            1002012,
        ),
        (
            &[("grant_type", "password")],
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            &[("client_assertion_type", "urn:other")],
            401,
            "invalid_client",
            7000218,
        ),
        (&[("client_assertion", "")], 401, "invalid_client", 7000218),
    ];
    for (changes, status, error, code) in cases {
        let reply = entra_post(&entra, &entra.token_url(), &entra_form(&entra, &token, changes)).await;
        assert_aadsts(&reply, status, error, code);
    }
}

#[tokio::test]
async fn entra_faults_answer_as_entra_does() {
    let issuer = FakeIssuer::start();
    let entra = entra_for(&issuer);
    let token = assertion(&issuer, json!({}));

    entra.set_fault(Fault::Status(429));
    let response = client()
        .post(entra.token_url())
        .form(&entra_form(&entra, &token, &[]))
        .send()
        .await
        .expect("reachable");
    assert!(response.headers().contains_key("retry-after"));
    assert_aadsts(&read(response).await, 429, "temporarily_unavailable", 90055);
    for code in [500, 503] {
        entra.set_fault(Fault::Status(code));
        assert_aadsts(
            &entra_token(&entra, &token).await,
            code,
            "temporarily_unavailable",
            90033,
        );
    }
    entra.set_fault(Fault::Refuse);
    let reply = entra_token(&entra, &token).await;
    assert_aadsts(&reply, 400, "invalid_request", 70021);
    assert!(
        reply.1["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains(DEFAULT_SUBJECT)
    );

    entra.set_fault(Fault::Stall);
    let stalled = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client")
        .post(entra.token_url())
        .form(&entra_form(&entra, &token, &[]))
        .send()
        .await;
    assert!(stalled.expect_err("never answered").is_timeout());
    entra.set_fault(Fault::None);
    assert_eq!(entra_token(&entra, &token).await.0, 200);
}

// ------------------------------------------- key sets a FakeIssuer cannot publish

/// An issuer whose JWKS a test writes: discovery and `/jwks` on a loopback port,
/// served from the test's runtime (the fakes fetch from their own threads).
struct KeySetIssuer {
    url: String,
    jwks: Arc<Mutex<Value>>,
}

impl KeySetIssuer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let jwks = Arc::new(Mutex::new(json!({"keys": []})));
        let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
        let served = jwks.clone();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let discovery = discovery.clone();
                    async move { axum::Json(discovery) }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let jwks = served.lock().expect("jwks").clone();
                    async move { axum::Json(jwks) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Self { url, jwks }
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.jwks.lock().expect("jwks") = json!({"keys": keys});
    }

    fn sign(&self, key: &SigningKey, claims: Value) -> String {
        self.sign_with_alg(key, &format!("{:?}", key.alg), claims)
    }

    /// Signed under `alg` (of `key`'s family), the issuer's claims with `claims` over them.
    fn sign_with_alg(&self, key: &SigningKey, alg: &str, claims: Value) -> String {
        let now = now();
        let mut full = json!({"iss": self.url, "sub": DEFAULT_SUBJECT, "iat": now, "exp": now + 600});
        for (k, v) in claims.as_object().expect("object") {
            full[k] = v.clone();
        }
        key.sign(&json!({"alg": alg, "typ": "JWT", "kid": key.kid}), &full)
    }
}

/// `key`'s JWK under another kid (the same public key: a filler entry).
fn filler(key: &SigningKey, kid: &str) -> Value {
    let mut jwk = key.jwk();
    jwk["kid"] = json!(kid);
    jwk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_reads_only_the_first_100_keys_and_only_signature_keys() {
    let issuer = KeySetIssuer::start().await;
    let entra = FakeEntra::start(EntraSetup::new(&issuer.url, DEFAULT_SUBJECT));
    let key = SigningKey::generate(KeyKind::Rsa);
    let token = issuer.sign(&key, json!({"aud": "api://AzureADTokenExchange"}));
    let fillers: Vec<Value> = (0..100).map(|i| filler(&key, &format!("filler-{i}"))).collect();

    // The signing key at position 100 (the 100th key): read.
    let mut keys = fillers[..99].to_vec();
    keys.push(key.jwk());
    issuer.publish(keys);
    assert_eq!(entra_token(&entra, &token).await.0, 200);
    // At position 101: not read.
    let mut keys = fillers.clone();
    keys.push(key.jwk());
    issuer.publish(keys);
    assert_aadsts(&entra_token(&entra, &token).await, 401, "invalid_client", 700027);
    // `use: enc` is not a signature key; no `use` at all is.
    let mut enc = key.jwk();
    enc["use"] = json!("enc");
    issuer.publish(vec![enc]);
    assert_aadsts(&entra_token(&entra, &token).await, 401, "invalid_client", 700027);
    let mut no_use = key.jwk();
    no_use.as_object_mut().expect("object").remove("use");
    issuer.publish(vec![no_use]);
    assert_eq!(entra_token(&entra, &token).await.0, 200);

    // Other RSA algorithms verify under a key whose JWK names no `alg`.
    let mut any_alg = key.jwk();
    any_alg.as_object_mut().expect("object").remove("alg");
    issuer.publish(vec![any_alg]);
    for alg in ["RS512", "PS256"] {
        let token = issuer.sign_with_alg(&key, alg, json!({"aud": "api://AzureADTokenExchange"}));
        let reply = entra_token(&entra, &token).await;
        assert_eq!(reply.0, 200, "{alg}: {}", reply.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_refuses_keys_with_members_it_does_not_support() {
    let issuer = KeySetIssuer::start().await;
    let google = FakeGoogle::start(GoogleSetup::new(&issuer.url));
    let key = SigningKey::generate(KeyKind::Rsa);
    let token = issuer.sign(&key, json!({"aud": google.setup().default_token_audience()}));
    issuer.publish(vec![key.jwk()]);
    assert_eq!(sts_token(&google, &token).await.0, 200);
    let mut with_x5c = key.jwk();
    with_x5c["x5c"] = json!(["MIIB"]);
    issuer.publish(vec![with_x5c]);
    assert_oauth_refusal(&sts_token(&google, &token).await, "invalid_grant", "x5c");
}

#[test]
fn rfc3339_formats_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_827_696), "2000-02-29T12:34:56Z");
    assert_eq!(rfc3339(1_796_608_800), "2026-12-07T02:00:00Z");
}

// ---------------------------------------------------------------- TLS

/// A client that trusts only the CA in `ca`.
fn client_trusting(ca: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("CA file");
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("PEM"))
        .build()
        .expect("HTTP client")
}

#[tokio::test]
async fn fakes_serve_https_under_their_own_ca() {
    let issuer = FakeIssuer::start();
    let google = FakeGoogle::start_https(GoogleSetup::new(issuer.issuer()));
    assert!(google.url().starts_with("https://127.0.0.1:"), "{}", google.url());
    let ca = google.ca_pem().expect("an HTTPS fake has a CA");
    let tls = client_trusting(&ca);
    let token = google_token(&issuer, &google, json!({}));
    let form = sts_form(&google, &token, &[]);
    let (status, body) = read(
        tls.post(google.token_url())
            .form(&form)
            .send()
            .await
            .expect("STS over TLS"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let federated = body["access_token"].as_str().expect("token").to_owned();
    let response = tls
        .post(google.generate_access_token_url(SA))
        .bearer_auth(&federated)
        .json(&json!({"scope": [SCOPE]}))
        .send()
        .await
        .expect("IAM Credentials over TLS");
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{body}");
    // Refusals come through the same way.
    let other = FakeIssuer::start().mint(json!({"aud": google.setup().default_token_audience()}));
    let form = sts_form(&google, &other, &[]);
    let reply = read(
        tls.post(google.token_url())
            .form(&form)
            .send()
            .await
            .expect("STS"),
    )
    .await;
    assert_oauth_refusal(&reply, "invalid_grant", "issuer");
    // A client without the CA does not get through.
    let untrusting = reqwest::Client::builder().no_proxy().build().expect("client");
    assert!(
        untrusting
            .post(google.token_url())
            .form(&form)
            .send()
            .await
            .is_err()
    );
    assert!(
        FakeGoogle::start(GoogleSetup::new(issuer.issuer()))
            .ca_pem()
            .is_none()
    );

    let entra = FakeEntra::start_https(EntraSetup::new(issuer.issuer(), DEFAULT_SUBJECT));
    let tls = client_trusting(&entra.ca_pem().expect("CA"));
    let form = entra_form(&entra, &assertion(&issuer, json!({})), &[]);
    let (status, body) = read(
        tls.post(entra.token_url())
            .form(&form)
            .send()
            .await
            .expect("Entra over TLS"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    entra.set_fault(Fault::Stall);
    let stalled = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(entra.ca_pem().expect("CA")).expect("CA"))
                .expect("PEM"),
        )
        .build()
        .expect("client")
        .post(entra.token_url())
        .form(&form)
        .send()
        .await;
    assert!(stalled.expect_err("never answered").is_timeout());
}

#[tokio::test]
async fn fakes_fetch_keys_of_an_https_issuer_with_its_ca() {
    let issuer = integration_tests::tls_issuer::TlsIssuer::start();
    let mut setup = GoogleSetup::new(issuer.issuer());
    setup.allowed_audiences = vec![integration_tests::fake_issuer::DEFAULT_AUDIENCE.to_owned()];
    let untrusting = FakeGoogle::start(setup.clone());
    assert_oauth_refusal(
        &sts_token(&untrusting, &issuer.mint()).await,
        "invalid_grant",
        "keys",
    );
    setup.issuer_ca_file = Some(issuer.ca_pem());
    let google = FakeGoogle::start(setup);
    let (status, body) = sts_token(&google, &issuer.mint()).await;
    assert_eq!(status, 200, "{body}");
}
