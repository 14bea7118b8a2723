//! AWS workloads as callers (contract §10, issue 12 §2): a SigV4-signed
//! `sts:GetCallerIdentity` request as the subject token
//! (`urn:ietf:params:aws:token-type:aws4_request`), checked by a `kind: aws-iam` issuer
//! and forwarded to the real `moto_server` enforcing SigV4, which names the caller.
//! Every refusal of the contract, and STS outages, against the same moto.

use std::time::{Duration, SystemTime};

use integration_tests::moto::{self, Moto, enforcing_moto_or_skip, xml_text};
use integration_tests::sigv4::{Credentials, Request, url_encode};
use integration_tests::tokens::verify_issued;
use integration_tests::{BrokerConfig, InProcess, Reply, run_cli};
use reqwest::Method;
use serde_json::{Value, json};

const TT_AWS4: &str = "urn:ietf:params:aws:token-type:aws4_request";
const SERVER_ID: &str = "fedbroker.test";
const TARGET: &str = "target-a";
const DESCRIPTION: &str = "subject_token is not an accepted signed AWS GetCallerIdentity request";
const REPLAYED: &str = "subject_token has already been used";

/// A broker with one aws-iam issuer `aws` for moto (`accounts`), and two rules: IAM
/// users of the account, and the role `fedbroker-reader`.
async fn broker(moto: &Moto, accounts: &str) -> InProcess {
    InProcess::start(&config(moto, accounts).render()).await
}

/// [`broker`]'s configuration.
fn config(moto: &Moto, accounts: &str) -> BrokerConfig {
    let issuer = format!(
        "- name: aws\n  kind: aws-iam\n  issuer: aws-iam:test\n  accounts: {accounts}\n  server_id: {SERVER_ID}\n  sts_endpoints: [{}]\n  danger_allow_insecure: true\n",
        moto.url()
    );
    let rules = format!(
        r#"
        - name: aws-users
          match:
            issuer: aws
            subject_pattern: "arn:aws:iam::{acct}:user/*"
            claims:
              account: "{acct}"
            audiences: [{TARGET}]
          issue:
            lifetime: 5m
            claims:
              caller: "{{claims.arn}}"
        - name: aws-reader-role
          match:
            issuer: aws
            claims:
              role_name: fedbroker-reader
            audiences: [{TARGET}]
          issue:
            lifetime: 5m
            claims:
              session: "{{claims.session_name}}"
              role: "{{claims.role_name}}"
        "#,
        acct = moto::ACCOUNT_ID
    );
    BrokerConfig::new()
        .issuer(issuer)
        .server("cloud_timeout: 2s")
        .rules(rules)
}

async fn exchange(broker: &InProcess, subject_token: &str) -> Reply {
    broker
        .token_request(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", subject_token),
            ("subject_token_type", TT_AWS4),
            ("audience", TARGET),
        ])
        .await
}

/// A GetCallerIdentity to moto carrying the server ID, signed now by `creds`.
fn signed(moto: &Moto, creds: &Credentials) -> Request {
    Request::get_caller_identity(&moto.url(), SERVER_ID).sign(creds, SystemTime::now())
}

/// The last audit line.
fn last_audit(broker: &InProcess) -> Value {
    broker.audit_lines().pop().expect("an audit line")
}

/// Refused with 400 invalid_request and the fixed description (a replay: the replay
/// cache's, as for tokens); the audit line's reason contains `reason`.
fn assert_refused(broker: &InProcess, reply: &Reply, reason: &str) {
    reply.assert_error(400, "invalid_request", "");
    let description = if reason == REPLAYED { REPLAYED } else { DESCRIPTION };
    assert_eq!(reply.json["error_description"], description, "{}", reply.text);
    let line = last_audit(broker);
    assert_eq!(line["outcome"], "deny");
    let got = line["reason"].as_str().unwrap_or_default();
    assert!(got.contains(reason), "audit reason {got:?} lacks {reason:?}");
}

/// Let IAM user `user` call sts:AssumeRole (moto enforcing auth also checks IAM
/// policies): `PutUserPolicy` through moto's unchecked setup allowance, as the harness
/// makes its own setup calls.
async fn allow_assume_role(moto: &Moto, user: &str) {
    let client = reqwest::Client::new();
    let allowance = |count: &'static str| {
        client
            .post(format!("{}/moto-api/reset-auth", moto.url()))
            .body(count)
            .send()
    };
    assert!(allowance("inf").await.expect("reset-auth").status().is_success());
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#;
    let answer = client
        .post(moto.url())
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(&[
            ("Action", "PutUserPolicy"),
            ("Version", "2010-05-08"),
            ("UserName", user),
            ("PolicyName", "assume"),
            ("PolicyDocument", policy),
        ])
        .send()
        .await
        .expect("PutUserPolicy");
    let status = answer.status();
    assert!(allowance("0").await.expect("reset-auth").status().is_success());
    assert!(status.is_success(), "PutUserPolicy: {status}");
}

async fn user(moto: &Moto, name: &str) -> (Credentials, String) {
    let (key_id, secret, arn) = moto.iam_user_with_key(name).await;
    (Credentials::new(&key_id, &secret), arn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iam_users_signed_request_is_exchanged_once() {
    let Some(moto) = enforcing_moto_or_skip() else {
        return;
    };
    let broker = broker(&moto, "[\"123456789012\"]").await;
    let (creds, arn) = user(&moto, "ci").await;
    moto.start_recording();
    let request = signed(&moto, &creds);
    let token = request.subject_token();

    let reply = exchange(&broker, &token).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["sub"], arn.as_str());
    assert_eq!(claims["caller"], arn.as_str());
    let line = last_audit(&broker);
    assert_eq!(
        (
            &line["outcome"],
            &line["rule"],
            &line["kind"],
            &line["issuer"],
            &line["iss"]
        ),
        (
            &Value::from("allow"),
            &Value::from("aws-users"),
            &Value::from("aws-iam"),
            &Value::from("aws"),
            &Value::from("aws-iam:test")
        ),
        "{line}"
    );
    assert_eq!(line["claims"]["account"], moto::ACCOUNT_ID, "{line}");
    assert_eq!(line["claims"]["arn"], arn.as_str(), "{line}");
    let audit = broker.audit_text();
    assert!(!audit.contains(&creds.secret) && !audit.contains(&creds.key_id));
    let signature = request
        .headers
        .last()
        .expect("Authorization")
        .1
        .rsplit('=')
        .next()
        .expect("sig");
    assert!(!audit.contains(signature), "the signature is in the audit log");

    // What moto received: the signed request, as signed.
    let calls = moto.recorded();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].action(), Some("GetCallerIdentity"));
    assert_eq!(calls[0].header("x-fedbroker-server-id"), Some(SERVER_ID));

    // Once: the same signed request again, and again dressed differently (an unsigned
    // header more, the JSON not URL-encoded), is refused.
    let again = exchange(&broker, &token).await;
    assert_refused(&broker, &again, REPLAYED);
    let dressed = request.clone().header("User-Agent", "other");
    let again = exchange(&broker, &dressed.to_json().to_string()).await;
    assert_refused(&broker, &again, REPLAYED);
    // A new signature of the same identity is a new request.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = exchange(&broker, &signed(&moto, &creds).subject_token()).await;
    assert_eq!(fresh.status, 200, "{}", fresh.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assumed_roles_session_brings_role_and_session_names() {
    let Some(moto) = enforcing_moto_or_skip() else {
        return;
    };
    let broker = broker(&moto, "[\"123456789012\"]").await;
    let (creds, user_arn) = user(&moto, "deployer").await;
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{user_arn}"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let role_arn = moto.iam_role("fedbroker-reader", &trust).await;
    allow_assume_role(&moto, "deployer").await;
    let body = format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=build-42",
        url_encode(&role_arn)
    );
    let (status, answer) = Request::post(&moto.url(), &body)
        .sign(&creds, SystemTime::now())
        .send()
        .await;
    assert_eq!(status, 200, "{answer}");
    let session = Credentials {
        key_id: xml_text(&answer, "AccessKeyId").expect("AccessKeyId").to_owned(),
        secret: xml_text(&answer, "SecretAccessKey")
            .expect("SecretAccessKey")
            .to_owned(),
        session_token: Some(
            xml_text(&answer, "SessionToken")
                .expect("SessionToken")
                .to_owned(),
        ),
    };

    let request = signed(&moto, &session);
    assert!(request.headers.iter().any(|(k, _)| k == "X-Amz-Security-Token"));
    let reply = exchange(&broker, &request.subject_token()).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    let assumed = format!(
        "arn:aws:sts::{}:assumed-role/fedbroker-reader/build-42",
        moto::ACCOUNT_ID
    );
    assert_eq!(claims["sub"], assumed.as_str());
    assert_eq!(
        (&claims["role"], &claims["session"]),
        (&Value::from("fedbroker-reader"), &Value::from("build-42"))
    );
    let line = last_audit(&broker);
    assert_eq!(line["rule"], "aws-reader-role");
    assert_eq!(line["claims"]["session_name"], "build-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_invalid_request_and_reach_sts_only_when_checked() {
    let Some(moto) = enforcing_moto_or_skip() else {
        return;
    };
    let broker = broker(&moto, "[\"123456789012\"]").await;
    let (creds, _) = user(&moto, "ci").await;
    moto.start_recording();
    let now = SystemTime::now();
    let gci = |url: &str| Request::get_caller_identity(url, SERVER_ID);

    // Refused before STS: nothing reaches moto.
    let other_path = format!("{}/other", moto.url());
    let cases: Vec<(&str, Request, &str)> = vec![
        (
            "a URL not allowed",
            gci(&other_path).sign(&creds, now),
            "not one of issuer aws's sts_endpoints",
        ),
        (
            "another host",
            gci("http://127.0.0.2:9/").sign(&creds, now),
            "not one of issuer aws's sts_endpoints",
        ),
        (
            "no server id",
            Request::post(&moto.url(), integration_tests::sigv4::GET_CALLER_IDENTITY).sign(&creds, now),
            "header `x-fedbroker-server-id` is missing",
        ),
        (
            "an unsigned server id",
            gci(&moto.url()).sign_except(&creds, now, &["x-fedbroker-server-id"]),
            "`x-fedbroker-server-id` is not among the signed headers",
        ),
        (
            "another server id",
            Request::get_caller_identity(&moto.url(), "other.example").sign(&creds, now),
            "no aws-iam issuer has this x-fedbroker-server-id",
        ),
        (
            "a stale date",
            gci(&moto.url()).sign(&creds, now - Duration::from_secs(16 * 60)),
            "X-Amz-Date is -9",
        ),
        (
            "a future date",
            gci(&moto.url()).sign(&creds, now + Duration::from_secs(16 * 60)),
            "X-Amz-Date is 9",
        ),
        (
            "another action",
            Request::post(&moto.url(), "Action=GetSessionToken&Version=2011-06-15")
                .header("X-Fedbroker-Server-Id", SERVER_ID)
                .sign(&creds, now),
            "body must be exactly",
        ),
    ];
    for (what, request, reason) in cases {
        let reply = exchange(&broker, &request.subject_token()).await;
        assert_refused(&broker, &reply, reason);
        assert!(moto.recorded().is_empty(), "{what}: STS was called");
    }
    let mut get = gci(&moto.url()).sign(&creds, now);
    get.method = "GET".into();
    assert_refused(
        &broker,
        &exchange(&broker, &get.subject_token()).await,
        "method must be POST",
    );
    assert_refused(
        &broker,
        &exchange(&broker, "%7Bnot json").await,
        "not a valid URL-encoded JSON",
    );
    assert!(moto.recorded().is_empty());

    // Refused by STS: a wrong secret.
    let wrong = Credentials::new(&creds.key_id, "not-the-secret");
    let reply = exchange(&broker, &signed(&moto, &wrong).subject_token()).await;
    assert_refused(
        &broker,
        &reply,
        "STS refused the request (HTTP 403, SignatureDoesNotMatch)",
    );
    assert_eq!(moto.recorded().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_not_listed_is_refused_after_sts_names_it() {
    let Some(moto) = enforcing_moto_or_skip() else {
        return;
    };
    let broker = broker(&moto, "[\"210987654321\"]").await;
    let (creds, _) = user(&moto, "ci").await;
    let reply = exchange(&broker, &signed(&moto, &creds).subject_token()).await;
    assert_refused(
        &broker,
        &reply,
        "account 123456789012 is not one of issuer aws's accounts",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_stalled_or_down_is_503_with_retry_after() {
    let Some(mut moto) = enforcing_moto_or_skip() else {
        return;
    };
    let broker = broker(&moto, "[\"123456789012\"]").await;
    let (creds, _) = user(&moto, "ci").await;

    let request = signed(&moto, &creds);
    moto.pause();
    let reply = exchange(&broker, &request.subject_token()).await;
    reply.assert_error(503, "temporarily_unavailable", "");
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert!(
        last_audit(&broker)["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out")
    );

    // Not marked as used: the same request succeeds once STS answers again.
    moto.resume();
    let reply = exchange(&broker, &request.subject_token()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    moto.kill();
    let reply = exchange(&broker, &signed(&moto, &creds).subject_token()).await;
    reply.assert_error(503, "temporarily_unavailable", "");
    assert!(
        last_audit(&broker)["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot connect")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_iam_issuer_and_rule_made_through_the_admin_api() {
    let Some(moto) = enforcing_moto_or_skip() else {
        return;
    };
    const ADMIN: &str = "admin-token-0123456789abcdef-aws";
    let config = BrokerConfig::new().top_level(format!(
        "admin:\n  tokens: [\"{ADMIN}\"]\n  allow_insecure_issuers: true\n"
    ));
    let broker = InProcess::start(&config.render()).await;
    let issuer = json!({
        "kind": "aws-iam", "issuer": "aws-iam:api", "accounts": [moto::ACCOUNT_ID],
        "server_id": SERVER_ID, "sts_endpoints": [moto.url()], "danger_allow_insecure": true,
    });
    let rule = json!({
        "match": {"issuer": "aws", "claims": {"account": moto::ACCOUNT_ID}, "audiences": [TARGET]},
        "issue": {"lifetime": "5m"},
    });
    for (path, body) in [
        ("/admin/v1/issuers/aws", &issuer),
        ("/admin/v1/rules/aws-all", &rule),
    ] {
        let reply = broker
            .admin_request(ADMIN, Method::PUT, path, &[], Some(body))
            .await;
        assert_eq!(reply.status, 201, "PUT {path}: {}", reply.text);
    }
    let listed = broker
        .admin_request(ADMIN, Method::GET, "/admin/v1/issuers/aws", &[], None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.json["server_id"], SERVER_ID, "{}", listed.text);
    assert_eq!(
        listed.json["accounts"],
        json!([moto::ACCOUNT_ID]),
        "{}",
        listed.text
    );

    let (creds, arn) = user(&moto, "ci").await;
    let reply = exchange(&broker, &signed(&moto, &creds).subject_token()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["sub"], arn.as_str());

    // Refused like any issuer's field: a server ID another aws-iam issuer has.
    let mut twin = issuer.clone();
    twin["issuer"] = json!("aws-iam:twin");
    let reply = broker
        .admin_request(ADMIN, Method::PUT, "/admin/v1/issuers/twin", &[], Some(&twin))
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(
        reply.json["errors"][0]["message"], "another aws-iam issuer has the same `server_id`",
        "{}",
        reply.text
    );
}

/// A JWT naming an aws-iam issuer's `issuer` is from no token issuer; an aws4_request
/// is no actor token.
#[tokio::test]
async fn an_aws_iam_issuer_verifies_no_token() {
    let issuer = "- name: aws\n  kind: aws-iam\n  issuer: aws-iam:test\n  accounts: [\"123456789012\"]\n  server_id: s\n  sts_endpoints: [https://sts.amazonaws.com]\n";
    let rules = format!(
        "- name: any\n  match:\n    issuer: aws\n    allow_any_subject: true\n    audiences: [{TARGET}]\n"
    );
    let broker = InProcess::start(&BrokerConfig::new().issuer(issuer).rules(rules).render()).await;
    let jwt = integration_tests::tokens::unsigned(&json!({
        "iss": "aws-iam:test", "sub": "arn:aws:iam::123456789012:user/ci", "aud": TARGET,
        "exp": integration_tests::tokens::now() + 300,
    }));
    let reply = broker.exchange(&jwt, TARGET).await;
    reply.assert_error(400, "invalid_request", &jwt);
    assert_eq!(
        reply.json["error_description"],
        "subject_token is from an unknown issuer"
    );

    let reply = broker
        .token_request(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", &jwt),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("actor_token", "{}"),
            ("actor_token_type", TT_AWS4),
            ("audience", TARGET),
        ])
        .await;
    reply.assert_error(400, "invalid_request", "");
    assert_eq!(reply.json["error_description"], "unsupported `actor_token_type`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_verifies_a_signed_request_at_sts_and_marks_nothing() {
    let Some(moto) = enforcing_moto_or_skip() else {
        return;
    };
    let (creds, arn) = user(&moto, "ci").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("keys")).expect("keys");
    let config = config(&moto, "[\"123456789012\"]").write_to(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, signed(&moto, &creds).subject_token()).expect("token");
    let explain = |token: &str| {
        run_cli(&[
            "explain",
            "--config",
            config.to_str().expect("path"),
            "--subject-token",
            token,
            "--subject-token-type",
            TT_AWS4,
            "--audience",
            TARGET,
            "--json",
        ])
    };
    let at_path = format!("@{}", token_file.display());
    moto.start_recording();
    for _ in 0..2 {
        let out = explain(&at_path);
        assert_eq!(out.code, Some(0), "{}", out.all());
        let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
        assert_eq!(doc["decision"]["outcome"], "allow", "{doc}");
        assert_eq!(doc["decision"]["rule"], "aws-users", "{doc}");
        assert_eq!(doc["subject"]["kind"], "aws-iam", "{doc}");
        assert_eq!(doc["subject"]["sub"], arn.as_str(), "{doc}");
        assert_eq!(doc["subject"]["verified"], true, "{doc}");
        assert_eq!(
            doc["subject"]["kind_claims"]["account"],
            moto::ACCOUNT_ID,
            "{doc}"
        );
        assert_eq!(doc["issued_claims"]["caller"], arn.as_str(), "{doc}");
    }
    assert_eq!(moto.recorded().len(), 2, "explain asks STS each time");

    let wrong = Credentials::new(&creds.key_id, "not-the-secret");
    let out = explain(&signed(&moto, &wrong).subject_token());
    assert_eq!(out.code, Some(2), "{}", out.all());
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["decision"]["error"], "invalid_request", "{doc}");
    assert!(
        doc["decision"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("STS refused"),
        "{doc}"
    );
    assert!(!out.all().contains(&creds.secret));

    // A claims document (no STS): the kind's claim checks, then the rules.
    let claims_file = dir.path().join("claims.json");
    let claims_of = |account: &str| {
        json!({"iss": "aws-iam:test", "sub": format!("arn:aws:iam::{account}:user/ci"),
               "arn": format!("arn:aws:iam::{account}:user/ci"), "account": account, "user_id": "AIDA"})
    };
    let explain_claims = |claims: Value| {
        std::fs::write(&claims_file, claims.to_string()).expect("claims");
        run_cli(&[
            "explain",
            "--config",
            config.to_str().expect("path"),
            "--claims",
            claims_file.to_str().expect("path"),
            "--audience",
            TARGET,
            "--json",
        ])
    };
    let out = explain_claims(claims_of(moto::ACCOUNT_ID));
    assert_eq!(out.code, Some(0), "{}", out.all());
    let out = explain_claims(claims_of("210987654321"));
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stdout.contains("account is not one of the issuer's accounts"),
        "{}",
        out.all()
    );
}

/// The Terraform resource `fedbroker_issuer` takes an aws-iam issuer: checked at plan
/// time with the broker's words, applied through the admin API, stable on the next plan.
#[tokio::test]
async fn terraform_manages_an_aws_iam_issuer() {
    use integration_tests::terraform_support::{Terraform, provider_block, require_tools};
    if !require_tools() {
        return;
    }
    const ADMIN: &str = "terraform-aws-iam-admin-token-0123456789";
    let config = BrokerConfig::new().top_level(format!(
        "admin:\n  tokens: [\"{ADMIN}\"]\n  state_file: @DIR@/admin-state.json\n"
    ));
    let broker = integration_tests::Broker::start(&config.render()).await;
    let tf = Terraform::new().env("FEDBROKER_ADMIN_TOKEN", ADMIN);
    let main_tf = |accounts: &str| {
        format!(
            r#"{provider}
resource "fedbroker_issuer" "aws" {{
  name          = "aws"
  kind          = "aws-iam"
  issuer        = "aws-iam:prod"
  accounts      = {accounts}
  server_id     = "{SERVER_ID}"
  sts_endpoints = ["https://sts.amazonaws.com", "https://sts.us-east-1.amazonaws.com"]
}}
"#,
            provider = provider_block(broker.url())
        )
    };
    tf.write("main.tf", &main_tf(r#"["1111"]"#));
    tf.init();
    let out = tf.run(&["validate", "-no-color"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains("accounts: `1111` is not a 12-digit AWS account ID"),
        "{}",
        out.all()
    );

    tf.write("main.tf", &main_tf(r#"["111122223333"]"#));
    let out = tf.apply();
    assert!(
        out.stdout.contains("1 added, 0 changed, 0 destroyed"),
        "{}",
        out.all()
    );
    let issuer = broker
        .admin_request(ADMIN, Method::GET, "/admin/v1/issuers/aws", &[], None)
        .await;
    assert_eq!(issuer.status, 200, "{}", issuer.text);
    assert_eq!(issuer.json["kind"], "aws-iam");
    assert_eq!(issuer.json["accounts"], json!(["111122223333"]));
    assert_eq!(issuer.json["server_id"], SERVER_ID);
    assert_eq!(
        issuer.json["sts_endpoints"][1],
        "https://sts.us-east-1.amazonaws.com"
    );
    let (code, out) = tf.plan_exit_code();
    assert_eq!(code, Some(0), "no change expected\n{}", out.all());
}

/// STS's own answers, from an STS that only refuses (moto cannot be made to throttle
/// or fail): a refusal is 400 with STS's error code in the audit line; throttling (400
/// `Throttling`, 429) and STS failures (5xx) are 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_error_answers_map_to_400_or_503() {
    use integration_tests::cloud_fakes::aws_sts_errors::StsErrors;
    let cases = [
        (
            403,
            "AccessDenied",
            400,
            "STS refused the request (HTTP 403, AccessDenied)",
        ),
        (
            403,
            "ExpiredToken",
            400,
            "STS refused the request (HTTP 403, ExpiredToken)",
        ),
        (400, "Throttling", 503, "STS unavailable: HTTP 400, Throttling"),
        (429, "TooManyRequestsException", 503, "STS unavailable: HTTP 429"),
        (
            500,
            "InternalFailure",
            503,
            "STS unavailable: HTTP 500, InternalFailure",
        ),
    ];
    for (status, code, want, reason) in cases {
        let sts = StsErrors::start(status, code, "refused");
        let issuer = format!(
            "- name: aws\n  kind: aws-iam\n  issuer: aws-iam:test\n  accounts: [\"123456789012\"]\n  server_id: {SERVER_ID}\n  sts_endpoints: [{}]\n  danger_allow_insecure: true\n",
            sts.url()
        );
        let rules = format!(
            "- name: any\n  match:\n    issuer: aws\n    allow_any_subject: true\n    audiences: [{TARGET}]\n"
        );
        let broker = InProcess::start(&BrokerConfig::new().issuer(issuer).rules(rules).render()).await;
        let request = Request::get_caller_identity(sts.url(), SERVER_ID)
            .sign(&Credentials::new("AKIDEXAMPLE", "secret"), SystemTime::now());
        let reply = exchange(&broker, &request.subject_token()).await;
        if want == 400 {
            assert_refused(&broker, &reply, reason);
        } else {
            reply.assert_error(503, "temporarily_unavailable", "");
            let got = last_audit(&broker)["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(got.contains(reason), "{status} {code}: {got}");
        }
        assert_eq!(sts.requests(), 1, "{status} {code}");
    }
}

/// `fedbroker credentials --subject-token-source aws-iam`: the workload's side of this
/// kind. The command signs GetCallerIdentity with the default AWS credential chain (here
/// the environment's keys of a moto IAM user), the broker forwards it to the enforcing
/// moto, and the JWT it prints carries the user's ARN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_command_signs_with_the_default_chain() {
    let Some(moto) = enforcing_moto_or_skip() else {
        return;
    };
    let (key_id, secret, user_arn) = moto.iam_user_with_key("workload").await;
    let broker =
        integration_tests::Broker::start(&config(&moto, &format!("[\"{}\"]", moto::ACCOUNT_ID)).render())
            .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let moto_url = moto.url();
    let mut env = vec![
        ("AWS_ACCESS_KEY_ID", key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_STS", moto_url.as_str()),
    ];
    env.extend(crate::support::AWS_ISOLATED);
    let args = [
        "credentials",
        "token",
        "--broker",
        broker.url(),
        "--audience",
        TARGET,
        "--subject-token-source",
        "aws-iam",
        "--source-audience",
        SERVER_ID,
        "--cache-dir",
        "none",
    ];
    let out = integration_tests::run_cli_in(dir.path(), &args, &env);
    assert_eq!(
        out.code,
        Some(0),
        "{}\n--- audit ---\n{}",
        out.all(),
        broker.audit_text()
    );
    let (_, claims) = verify_issued(&broker, out.stdout.trim(), &[TARGET]).await;
    assert_eq!(claims["sub"], user_arn.as_str());
    assert!(!out.all().contains(&secret), "the secret key is not printed");

    // Another server ID: the broker finds no issuer for it (the header is signed, so
    // the request cannot be re-labelled).
    let mut wrong = args;
    wrong[9] = "other.example";
    let out = integration_tests::run_cli_in(dir.path(), &wrong, &env);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("invalid_request"), "{}", out.all());
}
