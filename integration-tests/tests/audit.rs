//! The audit stream: one JSON line per decision, with who, what, which rule and
//! why, and never a token. The audit file is read from the broker's router in this
//! process; what needs the process's stderr (logs, audit without a path) spawns one.

use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::tokens::{decode_unverified, sha256_hex};
use std::time::Duration;

use integration_tests::{Broker, FakeIssuer, eventually_explained};
use serde_json::{Value, json};

use crate::support::{
    ISSUER_NAME, TARGET, app_with_issuer_extra, config_with_rules, default_app, default_app_and_token,
    default_broker, default_rule, str_claim,
};

/// `target` names `expected` (as a string or inside a list).
fn names_target(line: &Value, expected: &str) -> bool {
    match &line["target"] {
        Value::String(s) => s == expected,
        Value::Array(items) => items.iter().any(|v| v == expected),
        _ => false,
    }
}

/// `issuer` names the fake (by its configured name or its URL).
fn names_issuer(line: &Value, fake: &FakeIssuer) -> bool {
    line["issuer"] == ISSUER_NAME || line["issuer"] == fake.issuer()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_an_allow_with_rule_subject_target_and_both_jtis() {
    let (fake, broker, token) = default_app_and_token().await;
    let (_, incoming) = decode_unverified(&token);

    let reply = broker.exchange(&token, TARGET).await;
    let (_, issued) = decode_unverified(reply.access_token());

    let lines = broker.wait_for_audit_lines(1).await;
    assert_eq!(lines.len(), 1, "one line per decision: {lines:#?}");
    let line = &lines[0];
    assert!(
        line["time"].is_string() || line["time"].is_number(),
        "time: {line}"
    );
    assert_eq!(line["outcome"], "allow", "{line}");
    assert_eq!(line["rule"], "ci-deployer", "{line}");
    assert!(names_issuer(line, &fake), "issuer: {line}");
    assert_eq!(line["subject"], DEFAULT_SUBJECT, "{line}");
    assert!(names_target(line, TARGET), "target: {line}");
    assert_eq!(line["jti"], incoming["jti"], "{line}");
    assert_eq!(line["issued_jti"], issued["jti"], "{line}");
    assert!(!broker.audit_text().contains(&token));
    assert!(!broker.audit_text().contains(reply.access_token()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_a_denial_with_its_reason() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let token = fake.mint(json!({"sub": "system:serviceaccount:ci:intruder"}));
    let (_, incoming) = decode_unverified(&token);

    let reply = broker.exchange(&token, TARGET).await;
    assert_eq!(reply.status, 400);

    let lines = broker.wait_for_audit_lines(1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert_eq!(line["outcome"], "deny", "{line}");
    assert!(
        line["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "reason: {line}"
    );
    assert!(names_issuer(line, &fake), "issuer: {line}");
    assert_eq!(line["subject"], "system:serviceaccount:ci:intruder", "{line}");
    assert!(names_target(line, TARGET), "target: {line}");
    assert_eq!(line["jti"], incoming["jti"], "{line}");
    assert!(line.get("issued_jti").is_none_or(Value::is_null), "{line}");
    assert!(!broker.audit_text().contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_identifies_a_token_without_jti_by_its_sha256() {
    let fake = FakeIssuer::start();
    let broker = app_with_issuer_extra(&fake, "replay: reusable").await;
    let token = fake.mint(json!({"jti": null}));

    let reply = broker.exchange(&token, TARGET).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let lines = broker.wait_for_audit_lines(1).await;
    let jti = lines
        .first()
        .and_then(|l| l["jti"].as_str())
        .unwrap_or_else(|| panic!("no jti in {lines:#?}"));
    assert_eq!(jti.to_lowercase(), sha256_hex(token.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_audit_log_or_the_logs() {
    let fake = FakeIssuer::start();
    let broker = default_broker(&fake).await;
    let allowed = fake.mint(json!({}));
    let denied = fake.mint(json!({"sub": "nobody"}));
    let expired = fake.mint(json!({"exp": 1_000_000_000, "iat": 999_999_000}));
    let untargeted = fake.mint(json!({}));

    let issued = broker.exchange(&allowed, TARGET).await.access_token().to_owned();
    let replayed = broker.exchange(&allowed, TARGET).await;
    assert_eq!(replayed.status, 400);
    for (token, target) in [(&denied, TARGET), (&expired, TARGET), (&untargeted, "elsewhere")] {
        assert_eq!(broker.exchange(token, target).await.status, 400);
    }

    let lines = broker.wait_for_audit_lines(4).await;
    assert!(lines.len() >= 3, "decisions are audited: {lines:#?}");
    let audit = broker.audit_text();
    let logs = broker.stderr();
    for token in [&allowed, &denied, &expired, &untargeted, &issued] {
        let signature = token.rsplit('.').next().expect("signature");
        assert!(
            !audit.contains(signature),
            "a token is in the audit log:\n{audit}"
        );
        assert!(!logs.contains(signature), "a token is in the logs:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_goes_to_stderr_without_an_audit_path() {
    let fake = FakeIssuer::start();
    let config = config_with_rules(&fake, &default_rule()).audit_to_stderr();
    let broker = Broker::start(&config.render()).await;
    let token = fake.mint(json!({}));
    let (_, incoming) = decode_unverified(&token);
    let jti = str_claim(&incoming, "jti").to_owned();

    assert_eq!(broker.exchange(&token, TARGET).await.status, 200);

    eventually_explained(
        Duration::from_secs(10),
        "an audit line on stderr",
        || async {
            broker
                .stderr()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|l| l.to_string().contains(&jti) && l.to_string().contains("allow"))
                .then_some(())
        },
        || format!("--- stderr ---\n{}", broker.stderr()),
    )
    .await;
}
