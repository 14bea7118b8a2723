//! The Terraform provider end to end: the real `terraform` binary, the provider built
//! from this workspace (installed from a filesystem mirror, offline) and a real broker
//! with the admin API. Skipped with `FEDBROKER_SKIP_TERRAFORM_TESTS=1`; otherwise a
//! missing `terraform` or `protoc` fails them with the tool's name.

use integration_tests::fake_issuer::{DEFAULT_AUDIENCE, DEFAULT_SUBJECT};
use integration_tests::terraform_support::{self, Terraform, require_tools, terraform_root};
use integration_tests::tokens::decode_unverified;
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Reply};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "terraform-test-admin-token-0123456789";

/// A broker with the admin API on its main listener and no issuers or rules of its own.
async fn admin_broker() -> Broker {
    let config = BrokerConfig::new()
        .top_level(format!(
            "admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n  state_file: @DIR@/admin-state.json\n  allow_insecure_issuers: true\n"
        ))
        .render();
    Broker::start(&config).await
}

async fn admin(broker: &Broker, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
    let path = format!("/admin/v1/{path}");
    broker
        .admin_request(ADMIN_TOKEN, method, &path, &[], body.as_ref())
        .await
}

/// `terraform apply`, whose summary must read `summary` (`"1 added, 0 changed, 0 destroyed"`).
fn apply_expecting(tf: &Terraform, summary: &str) -> terraform_support::TfOutput {
    let out = tf.apply();
    assert!(out.stdout.contains(summary), "{}", out.all());
    out
}

fn provider_block(broker: &Broker) -> String {
    terraform_support::provider_block(broker.url())
}

/// The lifecycle configuration: an issuer for the fake, one rule, both data sources.
fn lifecycle_config(
    broker: &Broker,
    fake: &FakeIssuer,
    rule_name: &str,
    audiences: &[&str],
    lifetime: &str,
) -> String {
    let audiences = serde_json::to_string(audiences).expect("JSON");
    format!(
        r#"{provider}
resource "fedbroker_issuer" "k8s" {{
  name                  = "k8s"
  issuer                = "{issuer}"
  audiences             = ["{DEFAULT_AUDIENCE}"]
  algorithms            = ["RS256"]
  danger_allow_insecure = true
}}

resource "fedbroker_rule" "deployer" {{
  name        = "{rule_name}"
  description = "the CI deployer"

  match {{
    issuer    = fedbroker_issuer.k8s.name
    subject   = "{DEFAULT_SUBJECT}"
    audiences = {audiences}
  }}

  issue {{
    lifetime    = "{lifetime}"
    claims_json = jsonencode({{ team = "payments", who = "{{sub}}" }})
  }}
}}
{data_sources}"#,
        provider = provider_block(broker),
        issuer = fake.issuer(),
        data_sources = data_sources("token_endpoint"),
    )
}

/// Both data sources, and outputs `issuer`, `attribute` (of the OpenID configuration)
/// and `key_ids`.
fn data_sources(attribute: &str) -> String {
    format!(
        r#"
data "fedbroker_openid_configuration" "broker" {{}}

data "fedbroker_jwks" "broker" {{}}

output "issuer" {{
  value = data.fedbroker_openid_configuration.broker.issuer
}}

output "{attribute}" {{
  value = data.fedbroker_openid_configuration.broker.{attribute}
}}

output "key_ids" {{
  value = data.fedbroker_jwks.broker.key_ids
}}
"#
    )
}

fn imported_config(fake: &FakeIssuer) -> String {
    format!(
        r#"
resource "fedbroker_issuer" "imported" {{
  name                  = "imported-issuer"
  issuer                = "{issuer}/other"
  audiences             = ["other"]
  jwks_uri              = "{jwks_uri}"
  danger_allow_insecure = true
}}
{IMPORTED_RULE}"#,
        issuer = fake.issuer(),
        jwks_uri = fake.jwks_uri(),
    )
}

const IMPORTED_RULE: &str = r#"
resource "fedbroker_rule" "imported" {
  name = "imported-rule"

  match {
    issuer    = fedbroker_issuer.k8s.name
    claims    = { team = ["payments", "billing"] }
    audiences = ["target-c"]
  }
}
"#;

/// Only the two data sources, against `endpoint`.
fn data_sources_config(endpoint: &str) -> String {
    let provider = terraform_support::provider_block(endpoint);
    format!("{provider}{}", data_sources("jwks_uri"))
}

/// The data sources read the broker's metadata and keys whether the provider's
/// `endpoint` is the main listener (admin API on it) or `admin.listen`, the admin API's
/// own listener (which serves the public metadata and JWKS too).
#[tokio::test]
async fn data_sources_work_with_the_admin_api_on_the_main_or_its_own_listener() {
    if !require_tools() {
        return;
    }
    let admin_port = integration_tests::broker::free_port();
    let on_main = admin_broker().await;
    let separate = Broker::start(
        &BrokerConfig::new()
            .top_level(format!(
                "admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n  state_file: @DIR@/admin-state.json\n  \
                 listen: 127.0.0.1:{admin_port}\n"
            ))
            .render(),
    )
    .await;
    let admin_endpoint = format!("http://127.0.0.1:{admin_port}");
    // The key ids, read before terraform runs (its runs are long; idle connections close).
    let mut layouts = Vec::new();
    for (broker, endpoint) in [(&on_main, on_main.url().to_owned()), (&separate, admin_endpoint)] {
        let kids: Vec<Value> = broker
            .jwks()
            .await
            .keys
            .iter()
            .map(|k| json!(k.common.key_id))
            .collect();
        assert!(!kids.is_empty());
        layouts.push((broker, endpoint, kids));
    }
    for (broker, endpoint, kids) in layouts {
        let tf = Terraform::new().env("FEDBROKER_ADMIN_TOKEN", ADMIN_TOKEN);
        tf.write("main.tf", &data_sources_config(&endpoint));
        tf.init();
        tf.apply();
        let outputs = tf.outputs();
        assert_eq!(outputs["issuer"], broker.url(), "endpoint {endpoint}: {outputs}");
        assert_eq!(outputs["jwks_uri"], broker.endpoint("/jwks.json"), "{outputs}");
        assert_eq!(outputs["key_ids"], json!(kids), "endpoint {endpoint}: {outputs}");
    }
}

fn token_for(fake: &FakeIssuer) -> String {
    fake.mint(fake.claims(json!({})))
}

/// apply, in-place update, replacement, drift, import, destroy: each checked through the
/// broker's admin API and a real token exchange.
#[tokio::test]
async fn terraform_manages_issuers_and_rules_through_the_admin_api() {
    if !require_tools() {
        return;
    }
    let fake = FakeIssuer::start();
    let broker = admin_broker().await;
    let tf = Terraform::new().env("FEDBROKER_ADMIN_TOKEN", ADMIN_TOKEN);

    // 1. apply: issuer and rule created, the exchange they allow succeeds.
    tf.write(
        "main.tf",
        &lifecycle_config(&broker, &fake, "ci-deployer", &["target-a"], "10m"),
    );
    tf.init();
    apply_expecting(&tf, "2 added, 0 changed, 0 destroyed");
    let rule = admin(&broker, reqwest::Method::GET, "rules/ci-deployer", None).await;
    assert_eq!(rule.status, 200, "{}", rule.text);
    assert_eq!(rule.json["match"]["issuer"], "k8s");
    assert!(rule.header("etag").is_some());
    let reply = broker.exchange(&token_for(&fake), "target-a").await;
    assert_eq!(
        reply.status, 200,
        "the exchange the rule allows failed: {}",
        reply.text
    );
    assert_eq!(reply.json["expires_in"], 600);
    let (_, claims) = decode_unverified(reply.access_token());
    assert_eq!(claims["team"], "payments");
    assert_eq!(claims["who"], DEFAULT_SUBJECT);
    let outputs = tf.outputs();
    assert_eq!(outputs["issuer"], broker.url());
    assert_eq!(outputs["token_endpoint"], broker.endpoint("/token"));
    assert!(
        outputs["key_ids"].as_array().is_some_and(|k| !k.is_empty()),
        "{outputs}"
    );

    // Nothing to do right after apply: what Read brings back equals what was written.
    let (code, out) = tf.plan_exit_code();
    assert_eq!(
        code,
        Some(0),
        "a plan right after apply is not empty\n{}",
        out.all()
    );

    // 2. In-place update: other audience, shorter lifetime.
    tf.write(
        "main.tf",
        &lifecycle_config(&broker, &fake, "ci-deployer", &["target-b"], "5m"),
    );
    apply_expecting(&tf, "0 added, 1 changed, 0 destroyed");
    let reply = broker.exchange(&token_for(&fake), "target-b").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["expires_in"], 300);
    broker
        .exchange(&token_for(&fake), "target-a")
        .await
        .assert_error(400, "invalid_target", "");

    // 3. Replacement: a new name destroys the old rule and creates the new one.
    tf.write(
        "main.tf",
        &lifecycle_config(&broker, &fake, "ci-deployer-v2", &["target-b"], "5m"),
    );
    let out = apply_expecting(&tf, "1 added, 0 changed, 1 destroyed");
    assert!(out.stdout.contains("must be replaced"), "{}", out.all());
    let old = admin(&broker, reqwest::Method::GET, "rules/ci-deployer", None).await;
    assert_eq!(old.status, 404, "{}", old.text);
    let new = admin(&broker, reqwest::Method::GET, "rules/ci-deployer-v2", None).await;
    assert_eq!(new.status, 200, "{}", new.text);

    // 4. Drift: a change behind Terraform's back through the admin API shows in plan,
    //    and apply puts Terraform's version back.
    let mut changed = new.json.clone();
    changed["issue"]["lifetime"] = json!("1m");
    changed["match"]["audiences"] = json!(["target-b", "target-x"]);
    let put = admin(
        &broker,
        reqwest::Method::PUT,
        "rules/ci-deployer-v2",
        Some(changed),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text);
    let (code, out) = tf.plan_exit_code();
    assert_eq!(code, Some(2), "the drift was not detected\n{}", out.all());
    assert!(
        out.stdout.contains(r#""1m" -> "5m""#) && out.stdout.contains("target-x"),
        "the plan does not show the drift\n{}",
        out.all()
    );
    apply_expecting(&tf, "0 added, 1 changed, 0 destroyed");
    let restored = admin(&broker, reqwest::Method::GET, "rules/ci-deployer-v2", None).await;
    assert_eq!(restored.json["issue"]["lifetime"], "5m", "{}", restored.text);
    assert_eq!(restored.json["match"]["audiences"], json!(["target-b"]));

    // 5. Import: an issuer and a rule made through the API come under Terraform without
    //    a change.
    let made = admin(
        &broker,
        reqwest::Method::PUT,
        "issuers/imported-issuer",
        Some(
            json!({"issuer": format!("{}/other", fake.issuer()), "audiences": ["other"],
                    "jwks_uri": fake.jwks_uri(), "danger_allow_insecure": true}),
        ),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let made = admin(
        &broker,
        reqwest::Method::PUT,
        "rules/imported-rule",
        Some(
            json!({"match": {"issuer": "k8s", "claims": {"team": ["payments", "billing"]},
                              "audiences": "target-c"}}),
        ),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text);
    tf.write("imported.tf", &imported_config(&fake));
    tf.ok(&[
        "import",
        "-no-color",
        "-input=false",
        "fedbroker_issuer.imported",
        "imported-issuer",
    ]);
    tf.ok(&[
        "import",
        "-no-color",
        "-input=false",
        "fedbroker_rule.imported",
        "imported-rule",
    ]);
    let (code, out) = tf.plan_exit_code();
    assert_eq!(
        code,
        Some(0),
        "the imported items differ from their configuration\n{}",
        out.all()
    );

    // 6. destroy: everything made with Terraform is gone, the exchange is refused.
    let out = tf.ok(&["destroy", "-no-color", "-input=false", "-auto-approve"]);
    assert!(out.stdout.contains("4 destroyed"), "{}", out.all());
    let rules = admin(&broker, reqwest::Method::GET, "rules", None).await;
    assert_eq!(rules.json, json!([]), "{}", rules.text);
    let issuers = admin(&broker, reqwest::Method::GET, "issuers", None).await;
    assert_eq!(issuers.json, json!([]), "{}", issuers.text);
    let reply = broker.exchange(&token_for(&fake), "target-b").await;
    assert_eq!(
        reply.status, 400,
        "the exchange still works after destroy: {}",
        reply.text
    );
}

/// Mistakes show at `terraform validate` / `plan`, before any API call, with their
/// attribute; what only the broker knows shows at apply, from its 422; a wrong token
/// is named as such.
#[tokio::test]
async fn mistakes_are_reported_at_plan_time_and_by_the_broker() {
    if !require_tools() {
        return;
    }
    let broker = admin_broker().await;
    let tf = Terraform::new().env("FEDBROKER_ADMIN_TOKEN", ADMIN_TOKEN);
    let bad = format!(
        r#"{provider}{bad_issuer}
resource "fedbroker_issuer" "private" {{
  name      = "private"
  issuer    = "https://10.0.0.7/realms/ci"
  audiences = ["x"]
}}

resource "fedbroker_rule" "bad" {{
  name = "bad"

  match {{
    issuer          = "anything"
    subject         = "a"
    subject_pattern = "b*"
    condition       = "claims.environment =="
    audiences       = ["t"]
  }}

  issue {{
    lifetime    = "soon"
    subject     = "x-{{claims.}}"
    claims_json = "[1, 2]"
  }}
}}
"#,
        provider = provider_block(&broker),
        bad_issuer = terraform_support::misspelled_kind_issuer(
            "http://issuer.example.com",
            "  replay    = \"twice\"\n"
        ),
    );
    tf.write("main.tf", &bad);
    tf.init();
    let out = tf.run(&["validate", "-no-color"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    for expected in [
        "match.condition",
        "subject_pattern",
        "issue.lifetime",
        "claims_json",
        "unknown kind `githab-actions`",
        "replay",
        "must be https://",
        "names a loopback, private or link-local address",
    ] {
        assert!(
            out.stderr.contains(expected),
            "`{expected}` not reported\n{}",
            out.all()
        );
    }
    let out = tf.run(&["plan", "-no-color", "-input=false"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("match.condition"), "{}", out.all());
    let issuers = admin(&broker, reqwest::Method::GET, "issuers", None).await;
    assert_eq!(issuers.json, json!([]), "plan must not call the admin API");

    // Valid to the provider, refused by the broker: the rule's issuer does not exist.
    let unknown_issuer = format!(
        r#"{provider}
resource "fedbroker_rule" "orphan" {{
  name = "orphan"

  match {{
    issuer    = "no-such-issuer"
    subject   = "a"
    audiences = ["t"]
  }}
}}
"#,
        provider = provider_block(&broker)
    );
    tf.write("main.tf", &unknown_issuer);
    let out = tf.run(&["apply", "-no-color", "-input=false", "-auto-approve"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("the broker rejected it") && out.stderr.contains("no-such-issuer"),
        "the broker's 422 is not passed on\n{}",
        out.all()
    );

    // A wrong admin token: 401, named.
    let wrong = Terraform::new().env("FEDBROKER_ADMIN_TOKEN", "not-the-admin-token-at-all");
    wrong.write("main.tf", &unknown_issuer);
    wrong.init();
    let out = wrong.run(&["apply", "-no-color", "-input=false", "-auto-approve"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr.contains("refused the admin token (401)"),
        "{}",
        out.all()
    );
}

/// A rule naming a claim its issuer's kind never carries: `terraform plan` warns (the
/// issuer is on the broker already), and `terraform apply` passes the broker's own
/// warning on; both succeed, since a warning is not an error.
#[tokio::test]
async fn plan_and_apply_warn_about_a_claim_the_issuers_kind_never_carries() {
    if !require_tools() {
        return;
    }
    let fake = FakeIssuer::start();
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml_with("gha", "kind: github-actions"))
        .top_level(format!(
            "admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n  state_file: @DIR@/admin-state.json\n"
        ))
        .render();
    let broker = Broker::start(&config).await;
    let tf = Terraform::new().env("FEDBROKER_ADMIN_TOKEN", ADMIN_TOKEN);
    tf.write(
        "main.tf",
        &format!(
            r#"{provider}
resource "fedbroker_rule" "deploy" {{
  name = "deploy"

  match {{
    issuer    = "gha"
    subject   = "repo:acme/api:ref:refs/heads/main"
    audiences = ["sts.amazonaws.com"]
  }}

  issue {{
    subject = "gha:{{claims.repositry}}"
  }}
}}
"#,
            provider = provider_block(&broker)
        ),
    );
    tf.init();
    let expected = "`claims.repositry`: did you mean `repository`?";
    let plan = tf.run(&["plan", "-no-color", "-input=false"]);
    assert_eq!(plan.code, Some(0), "{}", plan.all());
    assert!(
        plan.all().contains("Warning") && plan.all().contains(expected),
        "plan does not warn:\n{}\nissuers: {}",
        plan.all(),
        admin(&broker, reqwest::Method::GET, "issuers", None).await.json
    );
    let apply = apply_expecting(&tf, "1 added, 0 changed, 0 destroyed");
    assert!(
        apply.all().contains(expected),
        "apply does not pass the broker's warning on:\n{}",
        apply.all()
    );
    // Spelt right: no warning.
    tf.write(
        "main.tf",
        &std::fs::read_to_string(tf.dir().join("main.tf"))
            .expect("main.tf")
            .replace("repositry", "repository"),
    );
    let plan = tf.run(&["plan", "-no-color", "-input=false"]);
    assert_eq!(plan.code, Some(0), "{}", plan.all());
    assert!(!plan.all().contains("did you mean"), "{}", plan.all());
}

/// `terraform test` of the fedbroker-only module `fedbroker-github-actions` against a
/// real broker, then the module applied for real: a GitHub-shaped token is exchanged
/// for an AWS-STS token with session tags.
#[tokio::test]
async fn the_github_actions_module_passes_its_terraform_test_and_grants_the_exchange() {
    if !require_tools() {
        return;
    }
    let fake = FakeIssuer::start();
    let broker = admin_broker().await;
    let tf = Terraform::new()
        .env("FEDBROKER_ENDPOINT", broker.url())
        .env("FEDBROKER_ADMIN_TOKEN", ADMIN_TOKEN);
    tf.copy_dir(
        &terraform_root().join("modules/fedbroker-github-actions"),
        "module",
    );
    tf.init_in("module");
    let issuer_var = format!("issuer_url={}", fake.issuer());
    let jwks_var = format!("jwks_json={}", fake.jwks());
    let out = tf.run_in(
        "module",
        &["test", "-no-color", "-var", &issuer_var, "-var", &jwks_var],
    );
    assert_eq!(out.code, Some(0), "terraform test failed\n{}", out.all());
    assert!(out.stdout.contains("3 passed, 0 failed"), "{}", out.all());
    let rules = admin(&broker, reqwest::Method::GET, "rules", None).await;
    assert_eq!(
        rules.json,
        json!([]),
        "terraform test left rules behind: {}",
        rules.text
    );

    // The module applied for real, with the same variables as its test's first run.
    tf.write(
        "module/terraform.tfvars",
        r#"
broker_audiences      = ["fedbroker-test"]
danger_allow_insecure = true
rules = {
  "gha-acme-api-deploys" = {
    repository     = "acme/api"
    audiences      = ["sts.amazonaws.com"]
    issue_audience = "sts.amazonaws.com"
    claims_json    = "{\"https://aws.amazon.com/tags\":{\"principal_tags\":{\"repo\":[\"{claims.repository}\"]},\"transitive_tag_keys\":[\"repo\"]}}"
  }
}
"#,
    );
    let apply_args = [
        "apply",
        "-no-color",
        "-input=false",
        "-auto-approve",
        "-var",
        &issuer_var,
        "-var",
        &jwks_var,
    ];
    tf.ok_in("module", &apply_args);
    let github_token = |repository: &str, git_ref: &str| {
        fake.mint(fake.claims(json!({
            "aud": "fedbroker-test",
            "sub": format!("repo:{repository}:ref:{git_ref}"),
            "repository": repository,
            "repository_owner": repository.split('/').next(),
            "ref": git_ref,
        })))
    };
    let reply = broker
        .exchange(&github_token("acme/api", "refs/heads/main"), "sts.amazonaws.com")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (_, claims) = decode_unverified(reply.access_token());
    assert_eq!(claims["aud"], "sts.amazonaws.com");
    assert_eq!(claims["sub"], "gha:acme/api");
    assert_eq!(
        claims["https://aws.amazon.com/tags"]["principal_tags"]["repo"],
        json!(["acme/api"])
    );
    // Another branch, another repository: refused.
    let reply = broker
        .exchange(&github_token("acme/api", "refs/heads/dev"), "sts.amazonaws.com")
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let reply = broker
        .exchange(&github_token("evil/api", "refs/heads/main"), "sts.amazonaws.com")
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let mut destroy_args = apply_args.to_vec();
    destroy_args[0] = "destroy";
    tf.ok_in("module", &destroy_args);
}

/// A rule with `issue.credentials_json` (contract §9) whose AWS block has the role
/// ARN, session name, duration and region.
fn credentials_config(broker: &Broker, fake: &FakeIssuer, credentials: &str) -> String {
    format!(
        r#"{provider}
resource "fedbroker_issuer" "k8s" {{
  name                  = "k8s"
  issuer                = "{issuer}"
  audiences             = ["{DEFAULT_AUDIENCE}"]
  algorithms            = ["RS256"]
  danger_allow_insecure = true
}}

resource "fedbroker_rule" "aws" {{
  name = "to-aws"

  match {{
    issuer    = fedbroker_issuer.k8s.name
    subject   = "{DEFAULT_SUBJECT}"
    audiences = ["sts.amazonaws.com"]
  }}

  issue {{
    lifetime         = "10m"
    credentials_json = {credentials}
  }}
}}
"#,
        provider = provider_block(broker),
        issuer = fake.issuer(),
    )
}

/// `issue.credentials_json` end to end: a block of the wrong shape, or with a value
/// the broker's compiler refuses, fails `plan` at that attribute; a good one is created
/// through `apply` as the broker's `issue.credentials`, reads back with no diff, keeps
/// its text through drift elsewhere in the rule, is put back after drift in it, and
/// imports with no diff.
#[tokio::test]
async fn terraform_carries_a_rules_credentials_block() {
    if !require_tools() {
        return;
    }
    let fake = FakeIssuer::start();
    let broker = admin_broker().await;
    let tf = Terraform::new().env("FEDBROKER_ADMIN_TOKEN", ADMIN_TOKEN);

    // The shape is checked by the provider, the values by the broker's compiler: both
    // at plan (`validate` skips a rule whose issuer is a reference, still unknown there),
    // before any API call, at the attribute.
    tf.write(
        "main.tf",
        &credentials_config(
            &broker,
            &fake,
            r#"jsonencode({ aws = { role_arn = "arn:aws:iam::111122223333:role/deployer" } })"#,
        ),
    );
    tf.init();
    let out = tf.run(&["plan", "-no-color", "-input=false"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains("credentials_json is not a credentials block (aws): missing field")
            && out.stderr.contains("`session_name`")
            && out.stderr.contains("credentials_json = jsonencode"),
        "{}",
        out.all()
    );
    tf.write(
        "main.tf",
        &credentials_config(
            &broker,
            &fake,
            r#"jsonencode({ aws = { role_arn = "r", session_name = "s", duration = "13h" } })"#,
        ),
    );
    let out = tf.run(&["plan", "-no-color", "-input=false"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains("issue.credentials.aws.duration: must be between")
            && out.stderr.contains("credentials_json = jsonencode"),
        "{}",
        out.all()
    );

    // Not the text the broker's item reads back as: a null member it drops. The state
    // keeps the configuration's text while it means the same block.
    let with_null = r#"jsonencode({
      aws = {
        session_name = "gha-{claims.run_id}"
        role_arn     = "arn:aws:iam::111122223333:role/deployer"
        region       = "us-east-1"
        duration     = "1h"
        endpoint     = null
      }
    })"#;
    tf.write("main.tf", &credentials_config(&broker, &fake, with_null));
    apply_expecting(&tf, "2 added, 0 changed, 0 destroyed");
    let rule = admin(&broker, reqwest::Method::GET, "rules/to-aws", None).await;
    assert_eq!(rule.status, 200, "{}", rule.text);
    assert_eq!(
        rule.json["issue"]["credentials"],
        json!({"aws": {
            "role_arn": "arn:aws:iam::111122223333:role/deployer",
            "session_name": "gha-{claims.run_id}",
            "duration": "1h",
            "region": "us-east-1",
        }}),
        "{}",
        rule.text
    );
    let (code, out) = tf.plan_exit_code();
    assert_eq!(
        code,
        Some(0),
        "a plan right after apply is not empty\n{}",
        out.all()
    );

    // Drift elsewhere in the rule: the plan shows it, not the credentials.
    let mut changed = rule.json.clone();
    changed["issue"]["lifetime"] = json!("1m");
    let put = admin(&broker, reqwest::Method::PUT, "rules/to-aws", Some(changed)).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let (code, out) = tf.plan_exit_code();
    assert_eq!(code, Some(2), "the drift was not detected\n{}", out.all());
    assert!(out.stdout.contains(r#""1m" -> "10m""#), "{}", out.all());
    assert!(
        !out.stdout.contains("credentials_json"),
        "the unchanged credentials show as a change\n{}",
        out.all()
    );
    // Drift in the block: the plan puts Terraform's version back.
    let mut changed = rule.json.clone();
    changed["issue"]["credentials"]["aws"]["duration"] = json!("2h");
    let put = admin(&broker, reqwest::Method::PUT, "rules/to-aws", Some(changed)).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let (code, out) = tf.plan_exit_code();
    assert_eq!(code, Some(2), "the drift was not detected\n{}", out.all());
    assert!(
        out.stdout.contains("credentials_json") && out.stdout.contains("2h"),
        "{}",
        out.all()
    );
    apply_expecting(&tf, "0 added, 1 changed, 0 destroyed");
    let restored = admin(&broker, reqwest::Method::GET, "rules/to-aws", None).await;
    assert_eq!(restored.json["issue"]["credentials"]["aws"]["duration"], "1h");
    assert_eq!(restored.json["issue"]["lifetime"], "10m");

    // Imported, the broker's block reads as jsonencode writes it: no diff with a
    // configuration without the null member (whose order of keys does not matter).
    tf.write(
        "main.tf",
        &credentials_config(&broker, &fake, &with_null.replace("endpoint     = null", "")),
    );
    tf.ok(&["state", "rm", "fedbroker_rule.aws"]);
    tf.ok(&[
        "import",
        "-no-color",
        "-input=false",
        "fedbroker_rule.aws",
        "to-aws",
    ]);
    let (code, out) = tf.plan_exit_code();
    assert_eq!(
        code,
        Some(0),
        "the imported rule differs from its configuration\n{}",
        out.all()
    );

    let out = tf.ok(&["destroy", "-no-color", "-input=false", "-auto-approve"]);
    assert!(out.stdout.contains("2 destroyed"), "{}", out.all());
}

/// Every Terraform file in the repository is formatted (the cloud modules cannot be
/// initialised here, without a registry, but `fmt` needs no provider).
#[test]
fn terraform_files_are_formatted() {
    if !require_tools() {
        return;
    }
    let root = terraform_root();
    let out = std::process::Command::new("terraform")
        .args(["fmt", "-check", "-recursive", "-diff", "-no-color"])
        .arg(&root)
        .env("CHECKPOINT_DISABLE", "1")
        .env_remove("TF_CLI_CONFIG_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run terraform fmt");
    assert!(
        out.status.success(),
        "terraform fmt -check found unformatted files under {}\n{}{}",
        root.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
