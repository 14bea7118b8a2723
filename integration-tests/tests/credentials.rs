//! Native cloud credentials (contract §9, issue 12 §1): a rule's `issue.credentials`
//! block, asked for with a `requested_token_type` URN, against the real `moto_server`
//! (AWS STS) and the local fakes of Google STS / IAM Credentials and Entra
//! (`integration_tests::cloud_fakes`), which verify the broker's JWT through its
//! discovery and JWKS over real HTTP, as the clouds do.
//!
//! The brokers here are real `fedbroker serve` processes: the fakes fetch their keys.

use integration_tests::broker::free_port;
use integration_tests::cloud_fakes::aws_sts_errors::StsErrors;
use integration_tests::cloud_fakes::{EntraSetup, FakeEntra, FakeGoogle, Fault, GoogleEndpoint, GoogleSetup};
use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::moto::moto_or_skip;
use integration_tests::tokens::verify_issued;
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Reply, exchange_form};
use serde_json::{Value, json};

use crate::support::{ISSUER_NAME, TARGET, check_in, explain, subject_rule};

const AWS: &str = "urn:fedbroker:token-type:aws-credentials";
const GCP: &str = "urn:fedbroker:token-type:gcp-access-token";
const AZURE: &str = "urn:fedbroker:token-type:azure-access-token";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/deployer";

/// A broker trusting `fake` as `k8s`, with one rule for its default subject and
/// `target-a` whose `issue` block is `issue` (YAML at column 0), clouds answering
/// within 3 s. Listens on a port chosen first: the URL is the fakes' issuer.
async fn broker(fake: &FakeIssuer, port: u16, issue: &str) -> Broker {
    broker_logging(fake, port, issue, "info").await
}

/// [`broker`] with `RUST_LOG` set to `log`.
async fn broker_logging(fake: &FakeIssuer, port: u16, issue: &str, log: &str) -> Broker {
    let yaml = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .server("cloud_timeout: 3s")
        .rules(subject_rule("cloud", &format!("audiences: [{TARGET}]"), issue))
        .render()
        .replace("@PORT@", &port.to_string());
    Broker::builder().env("RUST_LOG", log).start(&yaml).await
}

fn url_of(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// An exchange of `token` for `target-a` asking for `requested` (a URN).
async fn request(broker: &Broker, token: &str, requested: &str) -> Reply {
    let mut form = exchange_form(token, TARGET);
    form.push(("requested_token_type", requested));
    broker.token_request(&form).await
}

/// An AWS block for `endpoint` (plain HTTP, as moto serves).
fn aws_issue(endpoint: &str) -> String {
    format!(
        "lifetime: 5m\ncredentials:\n  aws:\n    role_arn: {ROLE_ARN}\n    session_name: \"k8s-{{claims.run}}\"\n    duration: 15m\n    endpoint: {endpoint}\n    danger_allow_insecure_endpoint: true\n"
    )
}

/// The audit lines of `broker` whose `cloud` is set.
fn cloud_audit(broker: &Broker) -> Vec<Value> {
    broker
        .audit_lines()
        .into_iter()
        .filter(|l| l.get("cloud").is_some())
        .collect()
}

/// No credential of `answer` in the broker's audit log or stderr.
fn assert_not_logged(broker: &Broker, secrets: &[&str]) {
    let (audit, stderr) = (broker.audit_text(), broker.stderr());
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!audit.contains(secret), "a credential is in the audit log");
        assert!(!stderr.contains(secret), "a credential is in the broker's log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_credentials_come_from_sts_for_the_minted_token() {
    let Some(moto) = moto_or_skip() else { return };
    moto.start_recording();
    let fake = FakeIssuer::start();
    let port = free_port();
    // Even at trace level, no credential reaches the log.
    let broker = broker_logging(&fake, port, &aws_issue(&moto.url()), "trace").await;
    let token = fake.mint(json!({"run": 42}));

    let reply = request(&broker, &token, AWS).await;

    let session_token = reply.access_token().to_owned();
    assert_eq!(reply.json["issued_token_type"], AWS);
    assert_eq!(reply.json["token_type"], "N_A");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let creds = &reply.json["aws_credentials"];
    assert_eq!(creds["SessionToken"], session_token.as_str(), "{}", reply.text);
    for member in ["AccessKeyId", "SecretAccessKey", "Expiration"] {
        assert!(
            creds[member].as_str().is_some_and(|v| !v.is_empty()),
            "{member}: {}",
            reply.text
        );
    }
    assert!(
        creds["Expiration"]
            .as_str()
            .is_some_and(|e| e.ends_with('Z') && e.contains('T')),
        "RFC 3339: {creds}"
    );
    let expires_in = reply.json["expires_in"].as_u64().expect("expires_in");
    assert!((800..=900).contains(&expires_in), "15m session: {expires_in}");

    // What STS received: the rule's role, rendered session name and duration, and a JWT
    // the broker signed for the rule's audience.
    let calls = moto.recorded();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.action(), Some("AssumeRoleWithWebIdentity"));
    assert_eq!(call.param("RoleArn"), Some(ROLE_ARN));
    assert_eq!(call.param("RoleSessionName"), Some("k8s-42"));
    assert_eq!(call.param("DurationSeconds"), Some("900"));
    let jwt = call.param("WebIdentityToken").expect("WebIdentityToken");
    let (_, claims) = verify_issued(&broker, jwt, &[TARGET]).await;
    assert_eq!(claims["iss"], url_of(port));
    assert_eq!(claims["sub"], DEFAULT_SUBJECT);

    let audit = cloud_audit(&broker);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0]["outcome"].as_str(), audit[0]["cloud"].as_str()),
        (Some("allow"), Some("aws"))
    );
    assert!(
        broker.stderr().contains("TRACE"),
        "the broker logs at trace level"
    );
    assert_not_logged(
        &broker,
        &[
            &session_token,
            creds["SecretAccessKey"].as_str().unwrap_or_default(),
            jwt,
        ],
    );
    let metrics = broker.get("/metrics").await.text;
    assert!(
        metrics.contains(r#"fedbroker_cloud_requests_total{cloud="aws",outcome="issued"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"fedbroker_cloud_request_duration_seconds_count{cloud="aws"} 1"#),
        "{metrics}"
    );

    // Without requested_token_type the same rule issues the broker's JWT, as before.
    let plain = broker.exchange(&fake.mint(json!({"run": 43})), TARGET).await;
    assert_eq!(
        plain.json["issued_token_type"], "urn:ietf:params:oauth:token-type:jwt",
        "{}",
        plain.text
    );
    assert_eq!(moto.recorded().len(), 1, "a JWT request calls no cloud");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clouds_urn_is_invalid_request_and_spends_nothing() {
    let Some(moto) = moto_or_skip() else { return };
    moto.start_recording();
    let fake = FakeIssuer::start();
    let broker = broker(&fake, free_port(), &aws_issue(&moto.url())).await;
    let token = fake.mint(json!({"run": 1}));

    for urn in [GCP, AZURE] {
        let reply = request(&broker, &token, urn).await;
        reply.assert_error(400, "invalid_request", &token);
        assert!(
            reply.json["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("issues no")),
            "{}",
            reply.text
        );
    }
    assert!(moto.recorded().is_empty(), "nothing was sent to STS");
    // The refusals marked nothing: the token is still good once.
    let reply = request(&broker, &token, AWS).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    request(&broker, &token, AWS)
        .await
        .assert_error(400, "invalid_request", &token);
    assert_eq!(moto.recorded().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_name_aws_would_refuse_is_denied_before_sts() {
    let Some(moto) = moto_or_skip() else { return };
    moto.start_recording();
    let fake = FakeIssuer::start();
    let broker = broker(&fake, free_port(), &aws_issue(&moto.url())).await;
    let token = fake.mint(json!({"run": "has space"}));

    let reply = request(&broker, &token, AWS).await;

    reply.assert_error(400, "invalid_request", &token);
    assert!(moto.recorded().is_empty());
    let denied = broker.audit_lines().pop().expect("an audit line");
    assert!(
        denied["reason"]
            .as_str()
            .is_some_and(|r| r.contains("session_name rendered to")),
        "{denied}"
    );
}

/// STS's refusal is the client's `invalid_target`, its reason in the audit line;
/// its trouble reaching the identity provider is a 503 after bounded retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_refusals_and_failures_map_to_invalid_target_and_503() {
    let fake = FakeIssuer::start();
    let cases = [
        (
            403,
            "AccessDenied",
            "Not authorized to perform sts:AssumeRoleWithWebIdentity",
            400,
            "invalid_target",
            1,
        ),
        (
            400,
            "InvalidIdentityToken",
            "Couldn't retrieve verification key from your identity provider",
            400,
            "invalid_target",
            1,
        ),
        (
            400,
            "IDPCommunicationError",
            "The identity provider could not be reached",
            503,
            "temporarily_unavailable",
            3,
        ),
        (
            400,
            "Throttling",
            "Rate exceeded",
            503,
            "temporarily_unavailable",
            3,
        ),
        (
            500,
            "InternalFailure",
            "internal error",
            503,
            "temporarily_unavailable",
            3,
        ),
    ];
    for (status, code, message, expected_status, expected_error, attempts) in cases {
        let sts = StsErrors::start(status, code, message);
        let broker = broker(&fake, free_port(), &aws_issue(sts.url())).await;
        let token = fake.mint(json!({"run": 7}));

        let reply = request(&broker, &token, AWS).await;

        reply.assert_error(expected_status, expected_error, &token);
        if expected_status == 503 {
            assert!(reply.header("retry-after").is_some(), "{code}: {reply:?}");
        }
        let line = cloud_audit(&broker).pop().expect("an audit line");
        assert!(
            line["reason"]
                .as_str()
                .is_some_and(|r| r.contains(code) && r.contains(message)),
            "{code}: {line}"
        );
        // Refusals are not retried; throttling and outages are, a bounded number of times.
        // (The SDK's retry classifier decides which codes are transient.)
        assert!(
            sts.requests() >= 1 && sts.requests() <= attempts,
            "{code}: {} requests",
            sts.requests()
        );
        let outcome = if expected_status == 503 {
            "unavailable"
        } else {
            "refused"
        };
        let metrics = broker.get("/metrics").await.text;
        assert!(
            metrics.contains(&format!(
                r#"fedbroker_cloud_requests_total{{cloud="aws",outcome="{outcome}"}} 1"#
            )),
            "{code}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_stalled_or_down_is_503_with_retry_after() {
    let Some(mut moto) = moto_or_skip() else { return };
    let fake = FakeIssuer::start();
    let broker = broker(&fake, free_port(), &aws_issue(&moto.url())).await;

    moto.pause();
    let token = fake.mint(json!({"run": 1}));
    let reply = request(&broker, &token, AWS).await;
    moto.resume();
    reply.assert_error(503, "temporarily_unavailable", &token);
    assert!(reply.header("retry-after").is_some(), "{reply:?}");

    moto.kill();
    let token = fake.mint(json!({"run": 2}));
    let reply = request(&broker, &token, AWS).await;
    reply.assert_error(503, "temporarily_unavailable", &token);
    let reasons: Vec<String> = cloud_audit(&broker)
        .iter()
        .map(|l| l["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("no answer within 3s"), "{reasons:?}");
    assert!(reasons[1].contains("cannot connect"), "{reasons:?}");
}

/// The Google fake trusting the broker at `port`.
fn google_setup(port: u16) -> GoogleSetup {
    GoogleSetup::new(&url_of(port))
}

fn gcp_issue(google: &FakeGoogle, service_account: Option<&str>) -> String {
    let setup = google.setup();
    let mut out = format!(
        "audience: {}\nlifetime: 5m\ncredentials:\n  gcp:\n    audience: \"{}\"\n    scopes: [https://www.googleapis.com/auth/cloud-platform]\n    sts_endpoint: {}\n    iamcredentials_endpoint: {}\n    danger_allow_insecure_endpoint: true\n",
        setup.default_token_audience(),
        setup.audience(),
        google.url(),
        google.url(),
    );
    if let Some(sa) = service_account {
        out.push_str(&format!("    service_account: {sa}\n    lifetime: 30m\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_access_token_through_sts_and_impersonation() {
    let fake = FakeIssuer::start();
    let port = free_port();
    let google = FakeGoogle::start(google_setup(port));
    let sa = "deployer@proj.iam.gserviceaccount.com";
    let broker = broker_logging(&fake, port, &gcp_issue(&google, Some(sa)), "trace").await;
    let token = fake.mint(json!({}));

    let reply = request(&broker, &token, GCP).await;

    let access_token = reply.access_token().to_owned();
    assert_eq!(
        (
            reply.json["issued_token_type"].as_str(),
            reply.json["token_type"].as_str()
        ),
        (Some(GCP), Some("Bearer"))
    );
    let issued = google.issued(&access_token).expect("a token the fake issued");
    assert_eq!(issued.service_account.as_deref(), Some(sa));
    let expires_in = reply.json["expires_in"].as_u64().expect("expires_in");
    assert!((1700..=1800).contains(&expires_in), "30m lifetime: {expires_in}");
    let requests = google.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let sts = &requests[0].fields;
    assert_eq!(requests[0].path, "/v1/token");
    assert_eq!(sts["audience"], google.setup().audience().as_str());
    assert_eq!(
        sts["requested_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(sts["subject_token_type"], "urn:ietf:params:oauth:token-type:jwt");
    assert_eq!(sts["subject_token"]["claims"]["iss"], url_of(port).as_str());
    assert_eq!(sts["subject_token"]["claims"]["sub"], DEFAULT_SUBJECT);
    assert_eq!(
        requests[1].path,
        format!("/v1/projects/-/serviceAccounts/{sa}:generateAccessToken")
    );
    assert_eq!(requests[1].fields["authorization"], "Bearer <known>");
    assert_eq!(requests[1].fields["lifetime"], "1800s");
    assert_not_logged(&broker, &[&access_token]);

    // Without a service account: the federated token itself.
    drop(broker);
    let port2 = free_port();
    let google2 = FakeGoogle::start(google_setup(port2));
    let broker = self::broker(&fake, port2, &gcp_issue(&google2, None)).await;
    let reply = request(&broker, &fake.mint(json!({})), GCP).await;
    let federated = google2.issued(reply.access_token()).expect("issued by the fake");
    assert_eq!(federated.service_account, None);
    assert_eq!(google2.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_refusals_and_outages_map_to_invalid_target_and_503() {
    let fake = FakeIssuer::start();
    let port = free_port();
    let google = FakeGoogle::start(google_setup(port));
    let broker = broker(
        &fake,
        port,
        &gcp_issue(&google, Some("deployer@proj.iam.gserviceaccount.com")),
    )
    .await;
    let cases = [
        (
            GoogleEndpoint::Sts,
            Fault::Refuse,
            400,
            "invalid_target",
            "invalid_grant",
        ),
        (
            GoogleEndpoint::IamCredentials,
            Fault::Refuse,
            400,
            "invalid_target",
            "PERMISSION_DENIED",
        ),
        (
            GoogleEndpoint::Sts,
            Fault::Status(429),
            503,
            "temporarily_unavailable",
            "429",
        ),
        (
            GoogleEndpoint::IamCredentials,
            Fault::Status(503),
            503,
            "temporarily_unavailable",
            "503",
        ),
        (
            GoogleEndpoint::Sts,
            Fault::Stall,
            503,
            "temporarily_unavailable",
            "no answer within 3s",
        ),
    ];
    for (endpoint, fault, status, error, reason) in cases {
        google.set_fault(Fault::None);
        google.set_fault_on(endpoint, fault.clone());
        let before = google.requests().len();
        let token = fake.mint(json!({}));
        let reply = request(&broker, &token, GCP).await;
        reply.assert_error(status, error, &token);
        let line = cloud_audit(&broker).pop().expect("an audit line");
        assert!(
            line["reason"].as_str().is_some_and(|r| r.contains(reason)),
            "{fault:?}: {line}"
        );
        let sent = google.requests().len() - before;
        if matches!(fault, Fault::Status(_)) {
            // Throttling and 5xx are retried: at most three attempts in all.
            let first = usize::from(endpoint == GoogleEndpoint::IamCredentials);
            assert!(
                (first + 2..=first + 3).contains(&sent),
                "{fault:?}: {sent} requests"
            );
        }
    }
    google.set_fault(Fault::None);
    google.set_fault_on(GoogleEndpoint::Sts, Fault::None);
    google.set_fault_on(GoogleEndpoint::IamCredentials, Fault::None);
    assert_eq!(request(&broker, &fake.mint(json!({})), GCP).await.status, 200);
}

/// Google checks the broker's token itself: a rule issuing an audience the provider
/// does not allow is refused there, with Google's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_verifies_the_brokers_token() {
    let fake = FakeIssuer::start();
    let port = free_port();
    let google = FakeGoogle::start(google_setup(port));
    let issue = gcp_issue(&google, None).replacen(
        &google.setup().default_token_audience(),
        "https://elsewhere.example",
        1,
    );
    let broker = broker(&fake, port, &issue).await;
    let token = fake.mint(json!({}));
    request(&broker, &token, GCP)
        .await
        .assert_error(400, "invalid_target", &token);
    let line = cloud_audit(&broker).pop().expect("an audit line");
    assert!(
        line["reason"]
            .as_str()
            .is_some_and(|r| r.contains("invalid_grant")),
        "{line}"
    );
}

fn azure_issue(entra: &FakeEntra, ca_file: Option<&str>) -> String {
    let setup = entra.setup();
    let mut out = format!(
        "audience: api://AzureADTokenExchange\nlifetime: 5m\ncredentials:\n  azure:\n    tenant_id: {}\n    client_id: {}\n    scope: https://management.azure.com/.default\n    authority_host: {}\n",
        setup.tenant_id,
        setup.client_id,
        entra.url()
    );
    match ca_file {
        Some(ca) => out.push_str(&format!("    ca_file: {ca}\n")),
        None => out.push_str("    danger_allow_insecure_endpoint: true\n"),
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_access_token_from_entra_over_https_with_a_ca_file() {
    let fake = FakeIssuer::start();
    let port = free_port();
    let entra = FakeEntra::start_https(EntraSetup::new(&url_of(port), DEFAULT_SUBJECT));
    let ca = entra.ca_pem().expect("a test CA");
    let broker = broker(&fake, port, &azure_issue(&entra, ca.to_str())).await;
    let token = fake.mint(json!({}));

    let reply = request(&broker, &token, AZURE).await;

    let access_token = reply.access_token().to_owned();
    assert_eq!(
        (
            reply.json["issued_token_type"].as_str(),
            reply.json["token_type"].as_str()
        ),
        (Some(AZURE), Some("Bearer"))
    );
    let issued = entra.issued(&access_token).expect("a token Entra issued");
    assert_eq!(issued.subject, DEFAULT_SUBJECT);
    assert_eq!(issued.scope, "https://management.azure.com/.default");
    assert!(
        reply.json["expires_in"].as_u64().is_some_and(|e| e > 3000),
        "{}",
        reply.text
    );
    let requests = entra.requests();
    assert_eq!(requests.len(), 1);
    let form = &requests[0].fields;
    assert_eq!(
        requests[0].path,
        format!("/{}/oauth2/v2.0/token", entra.setup().tenant_id)
    );
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(
        form["client_assertion"]["claims"]["aud"],
        "api://AzureADTokenExchange"
    );
    assert_eq!(form["client_assertion"]["header"]["alg"], "RS256");
    assert_not_logged(&broker, &[&access_token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_refusals_and_outages_map_to_invalid_target_and_503() {
    let fake = FakeIssuer::start();
    let port = free_port();
    // The federated credential names another subject: Entra finds no match.
    let entra = FakeEntra::start(EntraSetup::new(&url_of(port), "system:serviceaccount:other:sa"));
    let broker = broker(&fake, port, &azure_issue(&entra, None)).await;
    let token = fake.mint(json!({}));
    request(&broker, &token, AZURE)
        .await
        .assert_error(400, "invalid_target", &token);
    let line = cloud_audit(&broker).pop().expect("an audit line");
    assert!(
        line["reason"].as_str().is_some_and(|r| r.contains("AADSTS70021")),
        "{line}"
    );

    for (fault, reason) in [(Fault::Status(503), "503"), (Fault::Stall, "no answer within 3s")] {
        entra.set_fault(fault.clone());
        let token = fake.mint(json!({}));
        let reply = request(&broker, &token, AZURE).await;
        reply.assert_error(503, "temporarily_unavailable", &token);
        let line = cloud_audit(&broker).pop().expect("an audit line");
        assert!(
            line["reason"].as_str().is_some_and(|r| r.contains(reason)),
            "{fault:?}: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lists_the_credential_urns() {
    let fake = FakeIssuer::start();
    let broker = broker(&fake, free_port(), "lifetime: 5m\n").await;
    let discovery = broker.get("/.well-known/openid-configuration").await.json;
    let listed = &discovery["fedbroker_token_types_supported"];
    for urn in [AWS, GCP, AZURE, "urn:ietf:params:oauth:token-type:jwt"] {
        assert!(
            listed.as_array().is_some_and(|l| l.iter().any(|v| v == urn)),
            "{urn}: {discovery}"
        );
    }
    // A rule without a credentials block refuses every cloud URN.
    let token = fake.mint(json!({}));
    request(&broker, &token, AWS)
        .await
        .assert_error(400, "invalid_request", &token);
}

/// The first value under `key` anywhere in `doc`.
fn find<'a>(doc: &'a Value, key: &str) -> Option<&'a Value> {
    match doc {
        Value::Object(map) => map.get(key).or_else(|| map.values().find_map(|v| find(v, key))),
        Value::Array(items) => items.iter().find_map(|v| find(v, key)),
        _ => None,
    }
}

/// `explain` shows what the cloud would be asked, rendered for the claims, and calls no
/// cloud; `check` warns that the session name template can exceed AWS's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_cloud_request_and_check_warns_of_its_limits() {
    let fake = FakeIssuer::start();
    let sts = StsErrors::start(403, "AccessDenied", "explain must not call STS");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(subject_rule(
            "cloud",
            &format!("audiences: [{TARGET}]"),
            &aws_issue(sts.url()),
        ))
        .write_to(dir.path());
    let claims = dir.path().join("claims.json");
    std::fs::write(
        &claims,
        json!({"iss": fake.issuer(), "sub": DEFAULT_SUBJECT, "run": 42}).to_string(),
    )
    .expect("claims");

    let out = explain(
        dir.path(),
        &config,
        &[
            "--claims",
            claims.to_str().expect("path"),
            "--audience",
            TARGET,
            "--json",
        ],
    );

    assert_eq!(out.code, Some(0), "{}", out.all());
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()));
    assert_eq!(
        find(&doc, "credentials"),
        Some(&json!({
            "cloud": "aws",
            "role_arn": ROLE_ARN,
            "session_name": "k8s-42",
            "duration": 900,
            "endpoint": sts.url(),
            "danger_allow_insecure_endpoint": true,
        })),
        "{doc}"
    );
    assert_eq!(sts.requests(), 0, "explain called STS");

    let out = check_in(dir.path(), &config, true);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()));
    let warnings = doc["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w["kind"] == "cloud_limit" && w["target"] == "issue.credentials.aws.session_name"),
        "{doc}"
    );
}

/// A credentials block the cloud could never accept does not load: the field is named.
#[test]
fn a_bad_credentials_block_is_a_load_error_naming_the_field() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let issue = "credentials:\n  aws:\n    role_arn: arn:aws:iam::1:role/r\n    session_name: s-{claims.run}\n    endpoint: http://127.0.0.1:9\n";
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(subject_rule("cloud", &format!("audiences: [{TARGET}]"), issue))
        .write_to(dir.path());
    let out = check_in(dir.path(), &config, false);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.all().contains("issue.credentials.aws.endpoint")
            && out.all().contains("danger_allow_insecure_endpoint"),
        "{}",
        out.all()
    );
}
