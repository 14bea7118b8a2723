//! Rules that must not fail open, through the real binary: a deny rule whose condition
//! cannot be evaluated denies (audit and `explain` say why), a CEL `matches` is charged
//! to the evaluation budget, and `check`, a reload and the admin API warn when rules of
//! two issuers issue the incoming `sub` unchanged for one audience.

use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::{Broker, BrokerConfig, FakeIssuer};
use serde_json::{Value, json};

use crate::support::{
    ISSUER_NAME, TARGET, assert_denied_by_policy, broker_with_rules, check_in, config_with_rules, explain,
    subject_rule,
};

/// A second target.
const TARGET_B: &str = "target-b";

/// The second issuer's name in the two-issuer configs.
const DEV_ISSUER: &str = "dev";

/// A deny rule on `groups` and an allow rule for the fake's default subject.
fn deny_on_groups_rules() -> String {
    format!(
        r#"
        - name: no-admins
          effect: deny
          description: admins use the break-glass path
          match:
            issuer: {ISSUER_NAME}
            condition: 'claims.groups.exists(g, g == "admins")'
        - name: deployer
          match:
            issuer: {ISSUER_NAME}
            subject: "{DEFAULT_SUBJECT}"
            audiences: [{TARGET}]
        "#
    )
}

/// `n` short distinct group names.
fn groups(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("g{i}")).collect()
}

/// The audit line of the `n`th decision (1-based), waiting for it.
async fn nth_decision(broker: &Broker, n: usize) -> Value {
    let lines = broker.wait_for_audit_lines(n).await;
    let decisions: Vec<&Value> = lines.iter().filter(|l| l.get("outcome").is_some()).collect();
    decisions
        .get(n - 1)
        .map(|l| (*l).clone())
        .unwrap_or_else(|| panic!("no decision {n} in the audit: {lines:#?}"))
}

fn reason(line: &Value) -> &str {
    line["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("audit line without a reason: {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_rule_whose_condition_errors_denies() {
    let fake = FakeIssuer::start();
    let broker = broker_with_rules(&fake, &deny_on_groups_rules()).await;

    // Within the limits the deny rule does not match: the allow rule decides.
    let ordinary = fake.mint(json!({"groups": groups(3)}));
    let reply = broker.exchange(&ordinary, TARGET).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // 1,025 groups: one more than a comprehension may walk. This used to count as "the
    // deny rule does not match", and the allow rule issued a token.
    let oversized = fake.mint(json!({"groups": groups(1025)}));
    let reply = broker.exchange(&oversized, TARGET).await;
    assert_denied_by_policy(&reply, &oversized);

    // A token without the claim: `no such key` is an evaluation error too.
    let without = fake.mint(json!({}));
    let reply = broker.exchange(&without, TARGET).await;
    assert_denied_by_policy(&reply, &without);

    let line = nth_decision(&broker, 2).await;
    assert_eq!(line["outcome"], "deny", "{line}");
    assert_eq!(line["rule"], "no-admins", "{line}");
    assert_eq!(
        reason(&line),
        "deny rule `no-admins` matched (a condition could not be evaluated, which denies: match.condition: comprehension: may iterate over at most 1024 elements, got 1025): admins use the break-glass path",
        "{line}"
    );
    let line = nth_decision(&broker, 3).await;
    assert_eq!(line["rule"], "no-admins", "{line}");
    assert!(
        reason(&line).contains("which denies: match.condition: no such key: groups"),
        "{line}"
    );
    assert!(
        !broker.audit_text().contains(&oversized),
        "the audit holds a token"
    );
}

#[test]
fn explain_shows_the_evaluation_error_of_a_deny_rule() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_rules(&fake, &deny_on_groups_rules()).write_to(dir.path());
    let claims = dir.path().join("claims.json");
    std::fs::write(
        &claims,
        json!({"iss": fake.issuer(), "sub": DEFAULT_SUBJECT, "groups": groups(1025)}).to_string(),
    )
    .expect("claims file");
    let run = |json: bool| {
        let claims = claims.to_str().expect("UTF-8 path");
        let mut args = vec!["--claims", claims, "--audience", TARGET];
        if json {
            args.push("--json");
        }
        explain(dir.path(), &config, &args)
    };
    let error = "match.condition: comprehension: may iterate over at most 1024 elements, got 1025";

    let out = run(true);
    assert_eq!(out.code, Some(2), "deny exits 2: {}", out.all());
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()));
    assert_eq!(doc["decision"]["outcome"], "deny", "{doc}");
    assert_eq!(doc["decision"]["rule"], "no-admins", "{doc}");
    assert!(
        doc["decision"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(error)),
        "{doc}"
    );
    let rules = doc["rules"].as_array().expect("rules");
    let deny = rules
        .iter()
        .find(|r| r["rule"] == "no-admins")
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(deny["matched"], true, "{doc}");
    assert!(
        deny["reason"].as_str().is_some_and(|r| r.contains(error)),
        "{doc}"
    );

    let out = run(false);
    assert_eq!(out.code, Some(2), "{}", out.all());
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("no-admins") && l.contains("matched"))
        .unwrap_or_else(|| panic!("no line for the deny rule:\n{}", out.all()));
    assert!(line.contains(error), "{line}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("reason:") && l.contains(error)),
        "{}",
        out.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matches_call_is_charged_to_the_budget() {
    let fake = FakeIssuer::start();
    // The issue's rule: a Unicode class over every group. Each call used to compile the
    // pattern again, uncharged (seconds per request); now the pattern is compiled once
    // and each call costs its input's length times the pattern's automaton.
    let rules = format!(
        r#"
        - name: unicode-groups
          match:
            issuer: {ISSUER_NAME}
            condition: 'claims.groups.exists(g, g.matches("\\p{{L}}+\\p{{N}}*x"))'
            audiences: [{TARGET}]
        - name: ascii-groups
          match:
            issuer: {ISSUER_NAME}
            condition: 'claims.groups.all(g, g.matches("^g[0-9]+$"))'
            audiences: [{TARGET_B}]
        "#
    );
    let broker = broker_with_rules(&fake, &rules).await;

    let token = fake.mint(json!({"groups": groups(1024)}));
    let reply = broker.exchange(&token, TARGET).await;
    assert_denied_by_policy(&reply, &token);
    let line = nth_decision(&broker, 1).await;
    assert!(
        reason(&line).contains("rule `unicode-groups`: match.condition: ")
            && reason(&line).contains("the expression exceeds its evaluation budget of 1000000 units"),
        "{line}"
    );

    // A small automaton walks all 1,024 groups within the budget.
    let token = fake.mint(json!({"groups": groups(1024)}));
    let reply = broker.exchange(&token, TARGET_B).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(broker.get("/healthz").await.status, 200);
}

// ---------------------------------------------------------------------------------------
// Warnings: two issuers, one target, the incoming `sub`
// ---------------------------------------------------------------------------------------

/// Allow rules `k8s-deploy` (issuer `k8s`) and `dev-deploy` (issuer `dev`), both for
/// `target`; `dev_issue` is the second rule's `issue:` block (YAML, may be empty).
fn two_issuer_rules(target: &str, dev_issue: &str) -> String {
    format!(
        r#"
        - name: k8s-deploy
          match:
            issuer: {ISSUER_NAME}
            subject: "{DEFAULT_SUBJECT}"
            audiences: [{target}]
        - name: dev-deploy
          match:
            issuer: {DEV_ISSUER}
            subject: "{DEFAULT_SUBJECT}"
            audiences: [{target}]
          issue:
            lifetime: 5m
            {dev_issue}
        "#
    )
}

fn two_issuer_config(prod: &FakeIssuer, dev: &FakeIssuer, rules: &str) -> BrokerConfig {
    BrokerConfig::new()
        .issuer(prod.issuer_yaml(ISSUER_NAME))
        .issuer(dev.issuer_yaml(DEV_ISSUER))
        .rules(rules)
}

const WARNING: &str = "rules `k8s-deploy` (issuer `k8s`) and `dev-deploy` (issuer `dev`) can all issue tokens for `target-a` with the incoming `sub` as their subject";

#[test]
fn check_warns_when_two_issuers_share_a_target_with_the_default_subject() {
    let (prod, dev) = (FakeIssuer::start(), FakeIssuer::start());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = two_issuer_config(&prod, &dev, &two_issuer_rules(TARGET, "")).write_to(dir.path());

    let out = check_in(dir.path(), &config, false);
    assert_eq!(out.code, Some(0), "a warning is not an error: {}", out.all());
    let warnings = out.warnings();
    assert_eq!(warnings.len(), 1, "{}", out.all());
    assert!(
        warnings[0].starts_with(&format!("warning: {WARNING}")),
        "{}",
        out.all()
    );
    assert!(
        warnings[0].contains("`source_issuer`") && warnings[0].contains("issue.subject"),
        "the warning says what to do: {}",
        warnings[0]
    );

    let out = check_in(dir.path(), &config, true);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()));
    assert_eq!(doc["valid"], true, "{doc}");
    let warnings = doc["warnings"].as_array().unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(warnings.len(), 1, "{doc}");
    assert_eq!(warnings[0]["kind"], "indistinguishable_subjects", "{doc}");
    assert_eq!(warnings[0]["target"], TARGET, "{doc}");
    assert_eq!(
        warnings[0]["rules"],
        json!([{"rule": "k8s-deploy", "issuer": "k8s"}, {"rule": "dev-deploy", "issuer": "dev"}]),
        "{doc}"
    );

    // A subject of its own for one issuer's rule, or another target: no warning.
    for rules in [
        two_issuer_rules(TARGET, "subject: \"dev:{sub}\""),
        two_issuer_rules(TARGET, "audience: other-target"),
    ] {
        let config = two_issuer_config(&prod, &dev, &rules).write_to(dir.path());
        let out = check_in(dir.path(), &config, false);
        assert_eq!(out.code, Some(0), "{}", out.all());
        assert!(!out.stdout.contains("warning:"), "{rules}\n{}", out.all());
        let out = check_in(dir.path(), &config, true);
        let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()));
        assert_eq!(doc["warnings"], json!([]), "{doc}");
    }
}

#[test]
fn check_refuses_rules_that_set_source_issuer() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = subject_rule(
        "spoofer",
        &format!("audiences: [{TARGET}]"),
        "claims:\n  source_issuer: prod",
    );
    let config = config_with_rules(&fake, &rules).write_to(dir.path());
    let out = check_in(dir.path(), &config, false);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.all().lines().any(|l| l.contains("spoofer")
            && l.contains("issue.claims.source_issuer")
            && l.contains("cannot be set")),
        "{}",
        out.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_makes_subjects_indistinguishable_warns() {
    let (prod, dev) = (FakeIssuer::start(), FakeIssuer::start());
    // First only the k8s rule for target-a, and the dev rule for target-b.
    let config = |target: &str| {
        two_issuer_config(&prod, &dev, &two_issuer_rules("placeholder", ""))
            .render()
            .replacen("audiences: [placeholder]", &format!("audiences: [{TARGET}]"), 1)
            .replacen("audiences: [placeholder]", &format!("audiences: [{target}]"), 1)
    };
    let broker = Broker::start(&config(TARGET_B)).await;
    assert!(
        !broker.stderr().contains("can all issue tokens"),
        "{}",
        broker.stderr()
    );

    // The dev rule now grants target-a too: the reload installs it, and warns.
    let path = broker.dir().join("fedbroker.yaml");
    let text = std::fs::read_to_string(&path).expect("config");
    let changed = text.replacen(
        &format!("audiences: [{TARGET_B}]"),
        &format!("audiences: [{TARGET}]"),
        1,
    );
    assert_ne!(text, changed);
    let tmp = broker.dir().join("fedbroker.yaml.tmp");
    std::fs::write(&tmp, changed).expect("write config");
    std::fs::rename(&tmp, &path).expect("rename config");
    broker.signal("HUP");
    let log = broker.wait_for_stderr(WARNING).await;
    assert!(
        log.contains(WARNING),
        "`{}` not logged within 10 s:\n{log}",
        WARNING
    );
    // Installed anyway: both issuers' tokens are exchanged.
    let reply = broker.exchange(&dev.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

const ADMIN_TOKEN: &str = "admin-token-rules-fail-closed-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_change_that_makes_subjects_indistinguishable_answers_with_a_warning() {
    let (prod, dev) = (FakeIssuer::start(), FakeIssuer::start());
    let rules = format!(
        r#"
        - name: k8s-deploy
          match:
            issuer: {ISSUER_NAME}
            subject: "{DEFAULT_SUBJECT}"
            audiences: [{TARGET}]
        "#
    );
    let config =
        two_issuer_config(&prod, &dev, &rules).top_level(format!("admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n"));
    let broker = Broker::start(&config.render()).await;
    let put = |name: &'static str, body: Value| {
        let url = broker.endpoint(&format!("/admin/v1/rules/{name}"));
        let request = broker.client().put(url).bearer_auth(ADMIN_TOKEN).json(&body);
        async move { request.send().await.expect("PUT") }
    };

    // A rule of its own subject: no warning.
    let response = put(
        "dev-named",
        json!({"match": {"issuer": DEV_ISSUER, "subject": DEFAULT_SUBJECT, "audiences": [TARGET]},
               "issue": {"subject": "dev:{sub}"}}),
    )
    .await;
    assert_eq!(response.status().as_u16(), 201);
    assert!(response.headers().get("warning").is_none(), "{response:?}");

    // The incoming `sub` of a second issuer for target-a: created, with a warning.
    let response = put(
        "dev-deploy",
        json!({"match": {"issuer": DEV_ISSUER, "subject": DEFAULT_SUBJECT, "audiences": [TARGET]}}),
    )
    .await;
    assert_eq!(response.status().as_u16(), 201);
    let warnings: Vec<String> = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().expect("ASCII").to_owned())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!("299 fedbroker \"{WARNING}")) && warnings[0].ends_with('"'),
        "{warnings:?}"
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["name"], "dev-deploy", "the body is the rule: {body}");
    // The reload path logs it too.
    let log = broker.wait_for_stderr(WARNING).await;
    assert!(
        log.contains(WARNING),
        "`{}` not logged within 10 s:\n{log}",
        WARNING
    );
}
