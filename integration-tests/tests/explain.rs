//! `fedbroker explain` (a dry run of one exchange) and `fedbroker check --format json`.

use std::path::Path;

use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::{CliOutput, FakeIssuer};
use serde_json::{Value, json};

use crate::support::{
    ISSUER_NAME, TARGET, check_in, config_with_rules, default_broker, default_config_file, default_rule,
    explain, rule_file_with_unknown_issuer,
};

/// `server.public_url` of the configs written here (nothing listens on it).
const PUBLIC_URL: &str = "http://127.0.0.1:18080";

/// [`explain`] with `--json`: the output and its parsed stdout.
fn explain_json(dir: &Path, config: &Path, args: &[&str]) -> (CliOutput, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = explain(dir, config, &all);
    let doc = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("--json stdout is not JSON ({e}):\n{}", out.all()));
    (out, doc)
}

/// The text form of an explain run (`json_out` was its `--json` form): exit `code`,
/// stdout with every one of `needles`, and neither output holding `token`.
fn assert_text_form(
    dir: &Path,
    config: &Path,
    args: &[&str],
    code: Option<i32>,
    needles: &[&str],
    json_out: &CliOutput,
    token: &str,
) {
    let text = explain(dir, config, args);
    assert_eq!(text.code, code, "{}", text.all());
    for needle in needles {
        assert!(
            text.stdout.contains(needle),
            "text output lacks {needle}:\n{}",
            text.all()
        );
    }
    assert!(
        !json_out.all().contains(token) && !text.all().contains(token),
        "explain printed the token"
    );
}

/// The `rules` entry of an explain document for `name`.
fn rule_entry<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("rules is not a list: {doc}"))
        .iter()
        .find(|r| r["rule"] == name)
        .unwrap_or_else(|| panic!("rule {name} not in the explanation: {doc}"))
}

fn reason_of(entry: &Value) -> &str {
    entry["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason: {entry}"))
}

/// Two allow rules for target-a: one wants `environment` prod or staging, the other
/// maps claims into the issued token.
fn mapping_rules() -> String {
    format!(
        r#"
        - name: prod-only
          match:
            issuer: {ISSUER_NAME}
            subject: "{DEFAULT_SUBJECT}"
            claims:
              environment: [prod, staging]
            audiences: [{TARGET}]
        - name: payments-deployer
          match:
            issuer: {ISSUER_NAME}
            subject_pattern: "system:serviceaccount:*:deployer"
            audiences: [{TARGET}]
          issue:
            audience: sts.amazonaws.com
            subject: "k8s:{{claims.namespace}}"
            lifetime: 5m
            claims:
              team: "{{claims.team}}"
              source: fedbroker-test
              tags:
                ns: ["{{claims.namespace}}"]
        "#
    )
}

#[test]
fn explain_allow_shows_the_deciding_rule_and_the_issued_claims() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_rules(&fake, &mapping_rules()).write_to(dir.path());
    let token = fake.mint(json!({"environment": "dev", "namespace": "payments", "team": "blue"}));

    let (out, doc) = explain_json(
        dir.path(),
        &config,
        &["--subject-token", &token, "--audience", TARGET],
    );

    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(doc["decision"]["outcome"], "allow", "{doc}");
    assert_eq!(doc["decision"]["rule"], "payments-deployer", "{doc}");
    assert_eq!(doc["targets"], json!([TARGET]), "{doc}");
    assert_eq!(doc["subject"]["issuer"], ISSUER_NAME, "{doc}");
    assert_eq!(doc["subject"]["iss"], fake.issuer(), "{doc}");
    assert_eq!(doc["subject"]["sub"], DEFAULT_SUBJECT, "{doc}");
    assert_eq!(doc["subject"]["verified"], true, "{doc}");

    let issued = &doc["issued_claims"];
    assert_eq!(issued["iss"], PUBLIC_URL, "{doc}");
    assert_eq!(issued["sub"], "k8s:payments", "{doc}");
    assert_eq!(issued["aud"], "sts.amazonaws.com", "{doc}");
    assert_eq!(issued["team"], "blue", "{doc}");
    assert_eq!(issued["source"], "fedbroker-test", "{doc}");
    assert_eq!(issued["tags"], json!({"ns": ["payments"]}), "{doc}");
    match (issued["iat"].as_i64(), issued["exp"].as_i64()) {
        (Some(iat), Some(exp)) => assert_eq!(exp - iat, 300, "lifetime 5m: {doc}"),
        _ => panic!("issued_claims lacks iat/exp: {doc}"),
    }
    assert!(
        issued.get("environment").is_none(),
        "incoming claims are not copied: {doc}"
    );

    // The rule consulted first says why it did not match; the deciding one matched.
    let prod = rule_entry(&doc, "prod-only");
    assert_eq!(prod["matched"], false, "{prod}");
    assert_eq!(prod["effect"], "allow", "{prod}");
    assert!(reason_of(prod).contains("environment"), "{prod}");
    assert_eq!(rule_entry(&doc, "payments-deployer")["matched"], true, "{doc}");

    // The text form tells the same story.
    let needles = [
        "payments-deployer",
        "prod-only",
        "environment",
        "k8s:payments",
        "blue",
        PUBLIC_URL,
    ];
    let args = ["--subject-token", token.as_str(), "--audience", TARGET];
    assert_text_form(dir.path(), &config, &args, Some(0), &needles, &out, &token);
}

#[test]
fn explain_deny_gives_each_rules_first_failed_condition() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = format!(
        r#"
        - name: prod-or-staging
          match:
            issuer: {ISSUER_NAME}
            subject_pattern: "system:serviceaccount:*"
            claims:
              environment: [prod, staging]
            audiences: [{TARGET}]
        - name: exact-subject
          match:
            issuer: {ISSUER_NAME}
            subject: "system:serviceaccount:ci:release-bot"
            audiences: [{TARGET}]
        "#
    );
    let config = config_with_rules(&fake, &rules).write_to(dir.path());
    let token = fake.mint(json!({"environment": "dev"}));
    std::fs::write(dir.path().join("token.jwt"), format!("{token}\n")).expect("token file");

    let (out, doc) = explain_json(
        dir.path(),
        &config,
        &["--subject-token", "@token.jwt", "--audience", TARGET],
    );

    assert_eq!(out.code, Some(2), "{}", out.all());
    assert_eq!(doc["decision"]["outcome"], "deny", "{doc}");
    assert_eq!(doc["decision"]["error"], "invalid_request", "{doc}");
    assert!(doc["issued_claims"].is_null(), "nothing would be issued: {doc}");
    assert_eq!(doc["subject"]["verified"], true, "{doc}");

    let env = rule_entry(&doc, "prod-or-staging");
    assert_eq!(env["matched"], false, "{env}");
    for needle in ["environment", "prod", "staging", "dev"] {
        assert!(
            reason_of(env).contains(needle),
            "the reason lacks {needle}: {env}"
        );
    }
    let exact = rule_entry(&doc, "exact-subject");
    assert_eq!(exact["matched"], false, "{exact}");
    assert!(
        reason_of(exact).contains("system:serviceaccount:ci:release-bot"),
        "the reason names the expected subject: {exact}"
    );

    let needles = ["prod-or-staging", "exact-subject", "staging", "release-bot"];
    let args = ["--subject-token", "@token.jwt", "--audience", TARGET];
    assert_text_form(dir.path(), &config, &args, Some(2), &needles, &out, &token);
}

#[test]
fn explain_a_claims_document_needs_no_token_and_no_network() {
    let (fake, dir, config) = default_config_file();
    let with_iss = dir.path().join("with-iss.json");
    std::fs::write(
        &with_iss,
        json!({"iss": fake.issuer(), "sub": DEFAULT_SUBJECT}).to_string(),
    )
    .expect("claims file");
    let without_iss = dir.path().join("without-iss.json");
    std::fs::write(&without_iss, json!({"sub": DEFAULT_SUBJECT}).to_string()).expect("claims file");
    let with = with_iss.to_str().expect("path");
    let without = without_iss.to_str().expect("path");

    // `iss` in the document picks the issuer.
    let (out, doc) = explain_json(dir.path(), &config, &["--claims", with, "--audience", TARGET]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(doc["decision"]["outcome"], "allow", "{doc}");
    assert_eq!(doc["decision"]["rule"], "ci-deployer", "{doc}");
    assert_eq!(doc["subject"]["issuer"], ISSUER_NAME, "{doc}");
    assert_eq!(
        doc["subject"]["verified"], false,
        "a document is not verified: {doc}"
    );
    assert_eq!(doc["issued_claims"]["sub"], DEFAULT_SUBJECT, "{doc}");
    assert_eq!(doc["issued_claims"]["iss"], PUBLIC_URL, "{doc}");

    // No `iss`: `--issuer NAME` picks it.
    let (out, doc) = explain_json(
        dir.path(),
        &config,
        &["--claims", without, "--issuer", ISSUER_NAME, "--audience", TARGET],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(doc["decision"]["outcome"], "allow", "{doc}");
    assert_eq!(doc["subject"]["issuer"], ISSUER_NAME, "{doc}");

    // A denial works the same from a document.
    let (out, doc) = explain_json(
        dir.path(),
        &config,
        &["--claims", with, "--audience", "not-granted"],
    );
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert_eq!(doc["decision"]["error"], "invalid_target", "{doc}");

    // Errors: an unknown issuer name, no way to tell the issuer, an unregistered `iss`.
    let unknown_iss = dir.path().join("unknown-iss.json");
    std::fs::write(
        &unknown_iss,
        json!({"iss": "https://nobody.example.com", "sub": "x"}).to_string(),
    )
    .expect("claims file");
    for args in [
        vec!["--claims", without, "--issuer", "nobody", "--audience", TARGET],
        vec!["--claims", with, "--issuer", "nobody", "--audience", TARGET],
        vec!["--claims", without, "--audience", TARGET],
        vec![
            "--claims",
            unknown_iss.to_str().expect("path"),
            "--audience",
            TARGET,
        ],
    ] {
        let out = explain(dir.path(), &config, &args);
        assert_eq!(out.code, Some(1), "{args:?} is an error:\n{}", out.all());
    }

    assert_eq!(
        fake.key_fetches(),
        (0, 0),
        "explaining a claims document fetched issuer keys"
    );
}

#[test]
fn explain_reports_invalid_target_and_invalid_scope() {
    let (fake, dir, config) = default_config_file();

    let token = fake.mint(json!({}));
    let (out, doc) = explain_json(
        dir.path(),
        &config,
        &["--subject-token", &token, "--audience", "nobody-grants-this"],
    );
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert_eq!(doc["decision"]["outcome"], "deny", "{doc}");
    assert_eq!(doc["decision"]["error"], "invalid_target", "{doc}");
    assert_eq!(doc["targets"], json!(["nobody-grants-this"]), "{doc}");
    assert!(doc["issued_claims"].is_null(), "{doc}");

    for (extra, error) in [
        // A target the rule grants plus one it does not: still no rule for the request.
        (["--resource", "https://elsewhere.example.com"], "invalid_target"),
        // A scope the rule does not grant.
        (["--scope", "admin"], "invalid_scope"),
    ] {
        let mut args = vec!["--subject-token", token.as_str(), "--audience", TARGET];
        args.extend(extra);
        let (out, doc) = explain_json(dir.path(), &config, &args);
        assert_eq!(out.code, Some(2), "{extra:?}: {}", out.all());
        assert_eq!(doc["decision"]["error"], error, "{doc}");
    }
}

#[test]
fn explain_denies_tokens_the_server_would_reject_at_the_token_stage() {
    let (fake, dir, config) = default_config_file();
    let now = integration_tests::tokens::now();
    let expired = fake.mint(json!({"iat": now - 7200, "exp": now - 3600}));
    let stranger = integration_tests::SigningKey::generate(integration_tests::KeyKind::Rsa);
    // Signed by another key under the issuer's own kid: a bad signature.
    let forged = fake.mint_with_key(&stranger, json!({"kid": fake.current_key().kid}), json!({}));
    let wrong_aud = fake.mint(json!({"aud": "someone-else"}));

    for (case, token) in [
        ("expired", &expired),
        ("bad signature", &forged),
        ("wrong aud", &wrong_aud),
    ] {
        let (out, doc) = explain_json(
            dir.path(),
            &config,
            &["--subject-token", token, "--audience", TARGET],
        );
        assert_eq!(out.code, Some(2), "{case}: {}", out.all());
        assert_eq!(doc["decision"]["outcome"], "deny", "{case}: {doc}");
        assert_eq!(doc["decision"]["stage"], "token", "{case}: {doc}");
        assert_eq!(doc["decision"]["error"], "invalid_request", "{case}: {doc}");
        assert!(doc["issued_claims"].is_null(), "{case}: {doc}");
        assert!(
            !out.all().contains(token.as_str()),
            "{case}: explain printed the token"
        );

        let text = explain(
            dir.path(),
            &config,
            &["--subject-token", token, "--audience", TARGET],
        );
        assert_eq!(text.code, Some(2), "{case}: {}", text.all());
        assert!(
            !text.all().contains(token.as_str()),
            "{case}: explain printed the token"
        );
    }
}

#[test]
fn explain_with_a_broken_config_is_an_error() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_rules(&fake, &default_rule())
        .top_level("surprise: 1")
        .write_to(dir.path());
    let out = explain(
        dir.path(),
        &config,
        &["--subject-token", &fake.mint(json!({})), "--audience", TARGET],
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.all().contains("surprise"), "{}", out.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_leaves_the_token_usable_by_a_running_broker() {
    let fake = FakeIssuer::start();
    let broker = default_broker(&fake).await;
    let config = broker.dir().join("fedbroker.yaml");
    let token = fake.mint(json!({}));

    for json_flag in [false, true] {
        let mut args = vec!["--subject-token", token.as_str(), "--audience", TARGET];
        if json_flag {
            args.push("--json");
        }
        let out = explain(broker.dir(), &config, &args);
        assert_eq!(out.code, Some(0), "{}", out.all());
        assert!(!out.all().contains(&token), "explain printed the token");
    }

    let reply = broker.exchange(&token, TARGET).await;
    assert_eq!(
        reply.status, 200,
        "the token explain looked at must still be fresh: {}",
        reply.text
    );
    // And the broker's own replay check still works on it.
    broker
        .exchange_refused(&token, TARGET, 400, "invalid_request")
        .await;
}

/// 1-based number of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> u64 {
    let index = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in:\n{text}"));
    u64::try_from(index).expect("small") + 1
}

fn check_json(dir: &Path, config: &Path) -> (CliOutput, Value) {
    let out = check_in(dir, config, true);
    let doc = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("check --format json stdout is not JSON ({e}):\n{}", out.all()));
    (out, doc)
}

#[test]
fn check_format_json_lists_every_error_with_file_line_field_and_message() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, rules_text) = rule_file_with_unknown_issuer(dir.path(), &fake);
    let config = config.top_level("surprise_key: 1").write_to(dir.path());
    let config_text = std::fs::read_to_string(&config).expect("read config");

    let (out, doc) = check_json(dir.path(), &config);

    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_eq!(doc["valid"], false, "{doc}");
    let errors = doc["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors is not a list: {doc}"));
    for error in errors {
        assert!(
            error["file"].is_string() && error["message"].is_string() && error.get("field").is_some(),
            "every error has file, field and message: {error}"
        );
    }
    let find = |needle: &str| {
        errors
            .iter()
            .find(|e| {
                e["field"].as_str().unwrap_or("").contains(needle)
                    || e["message"].as_str().unwrap_or("").contains(needle)
            })
            .unwrap_or_else(|| panic!("no error mentions {needle}: {doc}"))
    };
    let located = |error: &Value, file: &str, text: &str, needle: &str| {
        assert!(
            error["file"].as_str().is_some_and(|f| f.ends_with(file)),
            "{error}"
        );
        assert_eq!(error["line"], line_of(text, needle), "{error}");
    };
    located(
        find("surprise_key"),
        "fedbroker.yaml",
        &config_text,
        "surprise_key",
    );
    let unknown_issuer = find("nobody");
    located(unknown_issuer, "rules/deploy.yaml", &rules_text, "issuer: nobody");
    assert!(
        unknown_issuer["field"]
            .as_str()
            .is_some_and(|f| f.contains("issuer")),
        "{unknown_issuer}"
    );
}

#[test]
fn check_format_json_on_a_valid_config() {
    let (fake, dir, config) = default_config_file();

    let (out, doc) = check_json(dir.path(), &config);

    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(doc["valid"], true, "{doc}");
    assert!(doc["errors"].as_array().is_none_or(Vec::is_empty), "{doc}");
    assert_eq!(fake.key_fetches(), (0, 0), "check used the network");
}

/// `--dpop` and `--client-cert-*` explain a sender-constrained request: rules that
/// require a proof or a certificate, `request.client_cert` in conditions, and the `cnf`
/// the issued token would carry.
#[test]
fn explain_takes_a_dpop_proof_and_a_client_certificate() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = format!(
        "{}{}",
        crate::support::subject_rule("dpop-only", "audiences: [target-a]\nrequire_dpop: true", ""),
        crate::support::subject_rule(
            "svid-only",
            "audiences: [target-b]\nrequire_client_cert: true\ncondition: \"'spiffe://acme/api' in request.client_cert.uri_sans\"",
            ""
        )
    );
    let config = config_with_rules(&fake, &rules).write_to(dir.path());
    let token = fake.mint(json!({}));
    let sha = "ab".repeat(32);

    let (out, doc) = explain_json(
        dir.path(),
        &config,
        &["--subject-token", &token, "--audience", TARGET],
    );
    assert_eq!(out.code, Some(2), "{}", out.all());
    let reason = rule_entry(&doc, "dpop-only")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("dpop: the rule requires a DPoP proof"),
        "{reason}"
    );

    let (out, doc) = explain_json(
        dir.path(),
        &config,
        &["--subject-token", &token, "--audience", TARGET, "--dpop"],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(doc["issued_claims"]["cnf"]["jkt"].is_string(), "{doc}");

    let cert_args = |uri: &'static str| -> Vec<&str> {
        vec![
            "--client-cert-uri",
            uri,
            "--client-cert-subject",
            "CN=api",
            "--client-cert-sha256",
        ]
    };
    let mut args = vec!["--subject-token", token.as_str(), "--audience", "target-b"];
    args.extend(cert_args("spiffe://acme/other"));
    args.push(&sha);
    let (out, _) = explain_json(dir.path(), &config, &args);
    assert_eq!(out.code, Some(2), "the wrong SPIFFE ID: {}", out.all());
    let mut args = vec!["--subject-token", token.as_str(), "--audience", "target-b"];
    args.extend(cert_args("spiffe://acme/api"));
    args.push(&sha);
    let (out, doc) = explain_json(dir.path(), &config, &args);
    assert_eq!(out.code, Some(0), "{}", out.all());
    // x5t#S256 is the base64url of the SHA-256's bytes.
    assert_eq!(
        doc["issued_claims"]["cnf"],
        json!({"x5t#S256": "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s"}),
        "{doc}"
    );
}
