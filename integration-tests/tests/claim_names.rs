//! Claim names per issuer kind, through the real binary: `check` warns when a rule of an
//! issuer with a `kind` refers to a claim tokens of that kind never carry, with the
//! nearest known name (contract §14: `claims.repositry`: did you mean `repository`?),
//! exits 0, and exits 1 with `--strict`; a generic issuer gets no warning; the admin API
//! answers such a rule with a `Warning` header, and the reload that installs it logs it.

use std::path::Path;

use integration_tests::{Broker, BrokerConfig, CliOutput, FakeIssuer, run_cli_in};
use serde_json::{Value, json};

use crate::support::TARGET;

/// The issuer's name in these configs.
const ISSUER: &str = "gha";

/// What every warning about the misspelt claim says.
const HINT: &str = "`claims.repositry`: did you mean `repository`?";

const ADMIN_TOKEN: &str = "admin-token-claim-names-0123456789";

/// A rule of `ISSUER` issuing `gha:{claims.repositry}`.
fn misspelt_rule() -> String {
    format!(
        r#"
        - name: deploy
          match:
            issuer: {ISSUER}
            claims:
              repository: acme/api
            audiences: [{TARGET}]
          issue:
            subject: "gha:{{claims.repositry}}"
        "#
    )
}

/// `ISSUER` of `kind` (empty: generic) with `rules`.
fn config(fake: &FakeIssuer, kind: &str, rules: &str) -> BrokerConfig {
    BrokerConfig::new()
        .issuer(fake.issuer_yaml_with(ISSUER, kind))
        .rules(rules)
}

fn check(dir: &Path, config: &Path, extra: &[&str]) -> CliOutput {
    let mut args = vec!["check", "--config", config.to_str().expect("UTF-8 path")];
    args.extend(extra);
    run_cli_in(dir, &args, &[])
}

fn json_of(out: &CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()))
}

#[test]
fn check_warns_about_a_claim_the_kind_never_carries_and_strict_makes_it_an_error() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(&fake, "kind: github-actions", &misspelt_rule()).write_to(dir.path());

    let out = check(dir.path(), &path, &[]);
    assert_eq!(out.code, Some(0), "a warning is not an error: {}", out.all());
    let warnings = out.warnings();
    assert_eq!(warnings.len(), 1, "{}", out.all());
    assert!(
        warnings[0].contains(HINT) && warnings[0].contains("deploy") && warnings[0].contains("issue.subject"),
        "{}",
        out.all()
    );
    assert!(warnings[0].contains("github-actions"), "{}", warnings[0]);

    let out = check(dir.path(), &path, &["--strict"]);
    assert_eq!(
        out.code,
        Some(1),
        "--strict: a warning is an error: {}",
        out.all()
    );
    let errors: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{}", out.all());
    assert_eq!(
        errors[0].strip_prefix("error: "),
        warnings[0].strip_prefix("warning: "),
        "the same message"
    );
    assert!(!out.stdout.contains("warning: "), "{}", out.all());

    let doc = json_of(&check(dir.path(), &path, &["--format", "json"]));
    assert_eq!(doc["valid"], true, "{doc}");
    let list = doc["warnings"].as_array().unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(list.len(), 1, "{doc}");
    assert_eq!(list[0]["kind"], "unknown_claim", "{doc}");
    assert_eq!(list[0]["target"], "claims.repositry", "{doc}");
    assert_eq!(
        list[0]["rules"],
        json!([{"rule": "deploy", "issuer": ISSUER}]),
        "{doc}"
    );

    let out = check(dir.path(), &path, &["--format", "json", "--strict"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let doc = json_of(&out);
    assert_eq!(doc["valid"], false, "{doc}");
    let errors = doc["errors"].as_array().unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(errors.len(), 1, "{doc}");
    assert!(
        errors[0]["message"].as_str().is_some_and(|m| m.contains(HINT)),
        "{doc}"
    );

    // Spelt right: no warning, and --strict passes.
    let right = misspelt_rule().replace("repositry", "repository");
    let path = config(&fake, "kind: github-actions", &right).write_to(dir.path());
    let out = check(dir.path(), &path, &["--strict"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        !out.stdout.contains("warning:") && !out.stdout.contains("error:"),
        "{}",
        out.all()
    );
}

#[test]
fn claims_in_conditions_and_of_kubernetes_kinds_are_checked_too() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = format!(
        r#"
        - name: ns
          match:
            issuer: {ISSUER}
            condition: 'claims.namespace == "prod"'
            audiences: [{TARGET}]
        "#
    );
    let path = config(&fake, "kind: kubernetes", &rules).write_to(dir.path());
    let out = check(dir.path(), &path, &[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.warnings().iter().any(|l| l.contains("match.condition")
            && l.contains("`claims.namespace`: did you mean `[\"kubernetes.io\"].namespace`?")),
        "{}",
        out.all()
    );
}

#[test]
fn a_generic_issuer_gets_no_claim_warning() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    for kind in ["", "kind: generic"] {
        let path = config(&fake, kind, &misspelt_rule()).write_to(dir.path());
        let out = check(dir.path(), &path, &["--strict"]);
        assert_eq!(out.code, Some(0), "{kind}: {}", out.all());
        assert!(!out.stdout.contains("repositry"), "{kind}: {}", out.all());
        let doc = json_of(&check(dir.path(), &path, &["--format", "json"]));
        assert_eq!(doc["warnings"], json!([]), "{kind}: {doc}");
    }
}

#[test]
fn check_help_documents_strict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_cli_in(dir.path(), &["check", "--help"], &[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("--strict"), "{}", out.stdout);
    assert!(out.stdout.contains("warnings as errors"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_a_rule_with_a_misspelt_claim_with_a_warning() {
    let fake = FakeIssuer::start();
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml_with(ISSUER, "kind: github-actions"))
        .top_level(format!("admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n"));
    let broker = Broker::start(&config.render()).await;
    let put = |name: &'static str, body: Value| {
        let url = broker.endpoint(&format!("/admin/v1/rules/{name}"));
        let request = broker.client().put(url).bearer_auth(ADMIN_TOKEN).json(&body);
        async move { request.send().await.expect("PUT") }
    };
    let rule = |subject: &str| {
        json!({"match": {"issuer": ISSUER, "claims": {"repository": "acme/api"}, "audiences": [TARGET]},
               "issue": {"subject": subject}})
    };

    let response = put("right", rule("gha:{claims.repository}")).await;
    assert_eq!(response.status().as_u16(), 201);
    assert!(response.headers().get("warning").is_none(), "{response:?}");

    let response = put("deploy", rule("gha:{claims.repositry}")).await;
    assert_eq!(
        response.status().as_u16(),
        201,
        "a warning does not refuse the change"
    );
    let warnings: Vec<String> = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().expect("ASCII").to_owned())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("299 fedbroker \"rule `deploy`, issue.subject: ")
            && warnings[0].contains(HINT)
            && warnings[0].ends_with('"'),
        "{warnings:?}"
    );
    // The install logs it too.
    let log = broker.wait_for_stderr(HINT).await;
    assert!(log.contains(HINT), "`{}` not logged within 10 s:\n{log}", HINT);
}

/// An issuer's `extra_claims` names claims its tokens carry beyond the kind's list: no
/// warning for them, even with `--strict`; a name that is not a top-level claim name is
/// an error.
#[test]
fn an_issuers_extra_claims_silence_the_warning_and_are_checked() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(
        &fake,
        "kind: github-actions\nextra_claims: [repositry]",
        &misspelt_rule(),
    )
    .write_to(dir.path());
    let out = check(dir.path(), &path, &["--strict"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.stdout.contains("did you mean"), "{}", out.all());

    let path = config(
        &fake,
        "kind: github-actions\nextra_claims: [\"kubernetes.io.namespace\"]",
        &misspelt_rule(),
    )
    .write_to(dir.path());
    let out = check(dir.path(), &path, &[]);
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        out.all().contains("extra_claims") && out.all().contains("not a top-level claim name"),
        "{}",
        out.all()
    );
}
