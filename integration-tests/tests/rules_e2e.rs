//! The rule language end to end (exchanges against the broker's router in this
//! process; `check`, `explain` and the example files through the real binary): `{expr}` mappings, CEL
//! conditions over the request and the actor, delegation (`act` nesting, `may_act`),
//! `allow_any_subject`, CEL load errors, and the example rule files of
//! `federation-rules/examples`.

use std::path::{Path, PathBuf};

use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::tokens::{
    GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_JWT, decode_unverified, verify_issued,
};
use integration_tests::{
    Broker, BrokerConfig, CliOutput, FakeIssuer, Http, InProcess, Reply, dedent, exchange_form, run_cli_in,
};
use serde_json::{Value, json};

use crate::support::{
    ISSUER_NAME, TARGET, app_with_rules, assert_denied_by_policy, check_in, config_with_rules,
    delegation_app, explain, subject_rule,
};

/// A second target, for rules that must not overlap with those on [`TARGET`].
const TARGET_B: &str = "target-b";

/// Write `text` (dedented) to `dir/relative`; returns the text written.
fn write_file(dir: &Path, relative: &str, text: &str) -> String {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
    let text = dedent(text);
    std::fs::write(&path, &text).expect("write file");
    text
}

/// `fedbroker check --config <config>` run in `dir`.
fn check(dir: &Path, config: &Path) -> CliOutput {
    check_in(dir, config, false)
}

/// 1-based line of the first line of `text` at or after line `from` containing `needle`.
fn line_of(text: &str, needle: &str, from: usize) -> usize {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("{needle} not in:\n{text}"))
}

/// The output line reporting `file:line` (not followed by another digit), if any.
fn report_line<'a>(output: &'a str, file: &str, line: usize) -> Option<&'a str> {
    let needle = format!("{file}:{line}");
    output.lines().find(|l| {
        l.match_indices(&needle)
            .any(|(i, m)| !l[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// The audit lines so far that record a denial, waiting (10 s) until there are `n` lines.
async fn audit_denials(broker: &Http, n: usize) -> Vec<Value> {
    broker
        .wait_for_audit_lines(n)
        .await
        .into_iter()
        .filter(|l| l["outcome"] == "deny")
        .collect()
}

fn reason(line: &Value) -> &str {
    line["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("audit line without a reason: {line}"))
}

fn delegation_form<'a>(
    subject_token: &'a str,
    actor_token: &'a str,
    audience: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut form = exchange_form(subject_token, audience);
    form.push(("actor_token", actor_token));
    form.push(("actor_token_type", TOKEN_TYPE_JWT));
    form
}

/// POST /token with a subject token of `token` and the `extra` parameters.
async fn send_with(broker: &Http, token: &str, extra: &[(&str, &str)]) -> Reply {
    let mut form = vec![
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", token),
        ("subject_token_type", TOKEN_TYPE_JWT),
    ];
    form.extend_from_slice(extra);
    broker.token_request(&form).await
}

// ---------------------------------------------------------------------------------------
// 1. Mapping expressions
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_expressions_shape_issued_claims() {
    let fake = FakeIssuer::start();
    let rules = format!(
        r#"
        - name: mapped
          match:
            issuer: {ISSUER_NAME}
            subject: "{DEFAULT_SUBJECT}"
            audiences: [{TARGET}]
          issue:
            subject: {{expr: '"gh:" + claims.repository.lowerAscii()'}}
            claims:
              repo: {{expr: 'claims.repository.lowerAscii()'}}
              owner: {{expr: 'claims.repository.split("/")[0]'}}
              nested:
                team: {{expr: 'claims.team.upperAscii()'}}
                literal: fixed
                parts: [{{expr: 'claims.repository.split("/")[1]'}}, static]
              prod_envs: {{expr: 'claims.environments.filter(e, e.startsWith("prod"))'}}
              env_count: {{expr: 'size(claims.environments)'}}
              joined: {{expr: 'claims.environments.join(",")'}}
              meta: {{expr: '{{"team": claims.team, "n": 1, "hosted": claims.repository.indexOf("/") > 0}}'}}
        "#
    );
    let broker = app_with_rules(&fake, &rules).await;

    let token = fake.mint(json!({
        "repository": "Acme/API",
        "team": "blue",
        "environments": ["prod-eu", "dev", "prod-us"],
    }));
    let reply = broker.exchange(&token, TARGET).await;
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;

    assert_eq!(claims["sub"], "gh:acme/api", "{claims}");
    assert_eq!(claims["repo"], "acme/api", "{claims}");
    assert_eq!(claims["owner"], "Acme", "{claims}");
    assert_eq!(
        claims["nested"],
        json!({"team": "BLUE", "literal": "fixed", "parts": ["API", "static"]}),
        "{claims}"
    );
    assert_eq!(claims["prod_envs"], json!(["prod-eu", "prod-us"]), "{claims}");
    assert_eq!(claims["env_count"], json!(3), "{claims}");
    assert_eq!(claims["joined"], "prod-eu,dev,prod-us", "{claims}");
    assert_eq!(
        claims["meta"],
        json!({"team": "blue", "n": 1, "hosted": true}),
        "{claims}"
    );
    let mut names: Vec<&str> = claims
        .as_object()
        .expect("claims object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "aud",
            "env_count",
            "exp",
            "iat",
            "iss",
            "joined",
            "jti",
            "meta",
            "nbf",
            "nested",
            "owner",
            "prod_envs",
            "repo",
            "source_issuer",
            "sub"
        ],
        "exactly the mapped claims and the registered ones: {claims}"
    );

    // `team` missing: `issue.claims.nested.team` fails at run time, and nothing is issued.
    let without_team = fake.mint(json!({
        "repository": "Acme/API",
        "environments": ["prod-eu"],
    }));
    let reply = broker.exchange(&without_team, TARGET).await;
    assert_denied_by_policy(&reply, &without_team);
    let denials = audit_denials(&broker, 2).await;
    assert_eq!(denials.len(), 1, "{denials:#?}");
    let why = reason(&denials[0]);
    assert!(
        why.contains("issue.claims.nested.team") && why.contains("team"),
        "the reason names the failing field: {why}"
    );
    assert_eq!(denials[0]["rule"], "mapped", "{}", denials[0]);
}

// ---------------------------------------------------------------------------------------
// 2. Conditions over the request and the actor
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_over_request_and_actor() {
    let subjects = FakeIssuer::start();
    let agents = FakeIssuer::start();
    let rules = format!(
        r#"
        - name: read-for-target-a-only
          match:
            issuer: {ISSUER_NAME}
            subject: "{DEFAULT_SUBJECT}"
            condition: 'request.audiences == ["{TARGET}"] && "read" in request.scopes'
            audiences: [{TARGET}, {TARGET_B}]
            scopes: [read, write]
          issue:
            claims:
              asked: {{expr: 'request.scope'}}
        - name: trusted-agents-of-the-tenant
          match:
            issuer: {ISSUER_NAME}
            subject: "{DEFAULT_SUBJECT}"
            audiences: [agent-api]
            actor:
              issuer: agents
              condition: 'actor.tier == "trusted" && actor.tenant == claims.namespace'
          issue:
            claims:
              agent_tier: {{expr: 'actor.tier'}}
        "#
    );
    let config = config_with_rules(&subjects, &rules).issuer(agents.issuer_yaml("agents"));
    let broker = InProcess::start(&config.render()).await;

    // request.audiences and request.scopes.
    let token = subjects.mint(json!({}));
    let reply = send_with(&broker, &token, &[("audience", TARGET), ("scope", "read")]).await;
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["asked"], "read", "{claims}");
    assert_eq!(claims["scope"], "read", "{claims}");

    let token = subjects.mint(json!({}));
    let reply = send_with(&broker, &token, &[("audience", TARGET), ("scope", "read write")]).await;
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["asked"], "read write", "{claims}");

    let denied_cases: [(&str, &[(&str, &str)]); 4] = [
        ("no read scope", &[("audience", TARGET), ("scope", "write")]),
        ("no scope at all", &[("audience", TARGET)]),
        (
            "a second audience",
            &[("audience", TARGET), ("audience", TARGET_B), ("scope", "read")],
        ),
        (
            "the target as a resource, not an audience",
            &[("resource", TARGET), ("scope", "read")],
        ),
    ];
    for (case, extra) in denied_cases {
        let token = subjects.mint(json!({}));
        let reply = send_with(&broker, &token, extra).await;
        assert_eq!(
            (reply.status, reply.json["error_description"].as_str()),
            (400, Some("denied by policy")),
            "{case}: {}",
            reply.text
        );
    }
    let denials = audit_denials(&broker, 6).await;
    assert_eq!(denials.len(), 4, "{denials:#?}");
    for line in &denials {
        assert!(
            reason(line).contains("match.condition: evaluated to false"),
            "{line}"
        );
    }

    // actor.<claim> in match.actor.condition, next to the subject's claims.
    let actor_cases = [
        (json!({"tier": "trusted", "tenant": "payments"}), true),
        (json!({"tier": "untrusted", "tenant": "payments"}), false),
        (json!({"tier": "trusted", "tenant": "marketing"}), false),
        (json!({"tenant": "payments"}), false),
    ];
    for (actor_claims, allowed) in actor_cases {
        let subject_token = subjects.mint(json!({"namespace": "payments"}));
        let mut claims = actor_claims.clone();
        claims["sub"] = json!("agent:helper");
        let actor_token = agents.mint(claims);
        let reply = broker
            .token_request(&delegation_form(&subject_token, &actor_token, "agent-api"))
            .await;
        if allowed {
            let (_, issued) = verify_issued(&broker, reply.access_token(), &["agent-api"]).await;
            assert_eq!(issued["agent_tier"], "trusted", "{issued}");
            assert_eq!(issued["act"]["sub"], "agent:helper", "{issued}");
        } else {
            assert_denied_by_policy(&reply, &actor_token);
            assert!(!reply.text.contains(&subject_token));
        }
    }
    let denials = audit_denials(&broker, 10).await;
    assert_eq!(denials.len(), 7, "{denials:#?}");
    for line in &denials[4..] {
        assert!(
            reason(line).contains("match.actor.condition"),
            "the actor condition is named: {line}"
        );
        assert_eq!(line["actor"], "agent:helper", "{line}");
    }
}

// ---------------------------------------------------------------------------------------
// 3. Delegation
// ---------------------------------------------------------------------------------------

/// `k8s` (subjects) and `agents`; one rule on [`TARGET`] for any `agent:*` actor.
async fn delegation_broker() -> (FakeIssuer, FakeIssuer, InProcess) {
    delegation_app("agents-deploy", true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_nests_prior_act_claims() {
    let (subjects, agents, broker) = delegation_broker().await;
    let prior = json!({
        "sub": "agent:first",
        "iss": "https://first-agents.example.com",
        "act": {"sub": "agent:zeroth"},
    });
    let subject_token = subjects.mint(json!({"act": prior}));
    let actor_token = agents.mint(json!({"sub": "agent:second"}));

    let reply = broker
        .token_request(&delegation_form(&subject_token, &actor_token, TARGET))
        .await;

    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["sub"], DEFAULT_SUBJECT, "{claims}");
    assert_eq!(
        claims["act"],
        json!({"sub": "agent:second", "iss": agents.issuer(), "act": prior}),
        "the current actor outside, the subject token's act chain inside: {claims}"
    );

    // Without a prior act, act is just the current actor.
    let subject_token = subjects.mint(json!({}));
    let actor_token = agents.mint(json!({"sub": "agent:second"}));
    let reply = broker
        .token_request(&delegation_form(&subject_token, &actor_token, TARGET))
        .await;
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(
        claims["act"],
        json!({"sub": "agent:second", "iss": agents.issuer()}),
        "{claims}"
    );

    // A prior act with no actor token now: no act is issued at all (no delegation here),
    // and the rule, which requires an actor, does not match.
    let subject_token = subjects.mint(json!({"act": prior}));
    let reply = broker.exchange(&subject_token, TARGET).await;
    assert_denied_by_policy(&reply, &subject_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn may_act_restricts_who_may_act() {
    let (subjects, agents, broker) = delegation_broker().await;

    // (may_act, actor sub, allowed)
    let cases = [
        (json!({"sub": "agent:allowed"}), "agent:allowed", true),
        (json!({"sub": "agent:allowed"}), "agent:other", false),
        (
            json!({"sub": "agent:allowed", "iss": agents.issuer()}),
            "agent:allowed",
            true,
        ),
        (
            json!({"sub": "agent:allowed", "iss": "https://elsewhere.example.com"}),
            "agent:allowed",
            false,
        ),
        (
            json!([{"sub": "agent:a"}, {"sub": "agent:allowed"}]),
            "agent:allowed",
            true,
        ),
        (json!([{"sub": "agent:a"}]), "agent:other", false),
        // Malformed restrictions authorize nobody.
        (json!({"iss": agents.issuer()}), "agent:allowed", false),
        (json!([]), "agent:allowed", false),
        (json!("agent:allowed"), "agent:allowed", false),
    ];
    let mut expected_denials = Vec::new();
    for (i, (may_act, actor_sub, allowed)) in cases.iter().enumerate() {
        let subject_token = subjects.mint(json!({"may_act": may_act}));
        let actor_token = agents.mint(json!({"sub": actor_sub}));
        let reply = broker
            .token_request(&delegation_form(&subject_token, &actor_token, TARGET))
            .await;
        if *allowed {
            assert_eq!(
                reply.status, 200,
                "case {i} ({may_act}, {actor_sub}): {}",
                reply.text
            );
            let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
            assert_eq!(claims["act"]["sub"], *actor_sub, "{claims}");
            assert!(claims.get("may_act").is_none(), "may_act is not copied: {claims}");
        } else {
            assert_eq!(
                (
                    reply.status,
                    reply.json["error"].as_str(),
                    reply.json["error_description"].as_str()
                ),
                (400, Some("invalid_request"), Some("denied by policy")),
                "case {i} ({may_act}, {actor_sub}): {}",
                reply.text
            );
            expected_denials.push(*actor_sub);
        }
    }

    // The same actors are fine for a subject token that does not restrict them.
    let reply = broker
        .token_request(&delegation_form(
            &subjects.mint(json!({})),
            &agents.mint(json!({"sub": "agent:other"})),
            TARGET,
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let denials = audit_denials(&broker, cases.len() + 1).await;
    assert_eq!(denials.len(), expected_denials.len(), "{denials:#?}");
    for (line, actor_sub) in denials.iter().zip(&expected_denials) {
        let why = reason(line);
        assert!(
            why.contains("may_act") && why.contains(&format!("\"{actor_sub}\"")),
            "the reason names may_act and the actor: {line}"
        );
        assert_eq!(line["actor"], *actor_sub, "{line}");
        assert_eq!(line["actor_issuer"], "agents", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_token_from_unknown_issuer_is_refused() {
    let (subjects, agents, broker) = delegation_broker().await;
    let stranger = FakeIssuer::start();

    // An actor token with a claim set the rule would accept, from an issuer the broker
    // does not know.
    let subject_token = subjects.mint(json!({}));
    let actor_token = stranger.mint(json!({"sub": "agent:builder"}));
    let reply = broker
        .token_request(&delegation_form(&subject_token, &actor_token, TARGET))
        .await;
    reply.assert_error(400, "invalid_request", &actor_token);
    assert!(!reply.text.contains(&subject_token), "{}", reply.text);
    let description = reply.json["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains("actor_token"),
        "the answer says which token was refused: {description}"
    );

    // The stranger's token claiming to come from `agents` but signed by another key.
    let forged = stranger.mint(json!({"sub": "agent:builder", "iss": agents.issuer()}));
    let reply = broker
        .token_request(&delegation_form(&subjects.mint(json!({})), &forged, TARGET))
        .await;
    reply.assert_error(400, "invalid_request", &forged);
    assert!(
        reply.json["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("actor_token")),
        "{}",
        reply.text
    );

    // A registered issuer's token from the same sub goes through: only the issuer mattered.
    let reply = broker
        .token_request(&delegation_form(
            &subjects.mint(json!({})),
            &agents.mint(json!({"sub": "agent:builder"})),
            TARGET,
        ))
        .await;
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["act"]["iss"], agents.issuer(), "{claims}");
    assert_eq!(
        (stranger.discovery_requests(), stranger.jwks_requests()),
        (0, 0),
        "the broker contacted an issuer nobody registered"
    );
}

// ---------------------------------------------------------------------------------------
// 4. allow_any_subject
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_subject_is_required_for_catch_all_rules() {
    let fake = FakeIssuer::start();
    let agents = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let catch_all = |acknowledged: bool| {
        let ack = if acknowledged {
            "\n                allow_any_subject: true"
        } else {
            ""
        };
        format!(
            r#"
            - name: everyone
              match:
                issuer: {ISSUER_NAME}
                audiences: [{TARGET}]{ack}
            - name: only-wildcards
              match:
                issuer: {ISSUER_NAME}
                subject_pattern: "*?*"
                audiences: [{TARGET_B}]{ack}
            - name: only-an-actor
              match:
                issuer: {ISSUER_NAME}
                audiences: [agent-api]{ack}
                actor:
                  issuer: agents
                  subject: agent:one
            "#
        )
    };
    let config_obj = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .issuer(agents.issuer_yaml("agents"))
        .top_level("rules_files: [./rules/*.yaml]");
    let config = config_obj.write_to(dir.path());

    let text = write_file(dir.path(), "rules/catch-all.yaml", &catch_all(false));
    let out = check(dir.path(), &config);
    let all = out.all();
    assert_eq!(out.code, Some(1), "{all}");
    for rule in ["everyone", "only-wildcards", "only-an-actor"] {
        let rule_line = line_of(&text, &format!("name: {rule}"), 1);
        let match_line = line_of(&text, "match:", rule_line);
        // The error is about the rule's `match` block: its key's line, or the block's
        // first line (where the mapping node starts).
        let line = report_line(&all, "rules/catch-all.yaml", match_line)
            .or_else(|| report_line(&all, "rules/catch-all.yaml", match_line + 1))
            .unwrap_or_else(|| panic!("no error at rules/catch-all.yaml:{match_line} for {rule}:\n{all}"));
        assert!(
            line.contains("allow_any_subject") && line.contains(rule),
            "{rule}: {line}"
        );
    }

    // Acknowledged: valid, and the broker serves it to any subject of the issuer.
    write_file(dir.path(), "rules/catch-all.yaml", &catch_all(true));
    let out = check(dir.path(), &config);
    assert_eq!(out.code, Some(0), "{}", out.all());

    let broker = Broker::builder()
        .file("rules/catch-all.yaml", &dedent(&catch_all(true)))
        .start(&config_obj.render())
        .await;
    for sub in ["system:serviceaccount:a:b", "anyone-at-all"] {
        let token = fake.mint(json!({"sub": sub}));
        let reply = broker.exchange(&token, TARGET).await;
        let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
        assert_eq!(claims["sub"], sub, "{claims}");
        let token = fake.mint(json!({"sub": sub}));
        let reply = broker.exchange(&token, TARGET_B).await;
        assert_eq!(reply.status, 200, "{sub} for {TARGET_B}: {}", reply.text);
    }
    // The actor rule still needs its actor, even with allow_any_subject.
    let token = fake.mint(json!({}));
    assert_denied_by_policy(&broker.exchange(&token, "agent-api").await, &token);
    let reply = broker
        .token_request(&delegation_form(
            &fake.mint(json!({})),
            &agents.mint(json!({"sub": "agent:one"})),
            "agent-api",
        ))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

// ---------------------------------------------------------------------------------------
// 5. CEL load errors
// ---------------------------------------------------------------------------------------

#[test]
fn bad_cel_is_a_load_error_with_line() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config_obj = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .top_level("rules_files: [./rules/*.yaml]");
    let config = config_obj.write_to(dir.path());
    let targets = format!("audiences: [{TARGET}]");
    let rules = [
        dedent(&format!(
            r#"
            - name: fine
              match:
                issuer: {ISSUER_NAME}
                condition: 'claims.team == "blue"'
                audiences: [{TARGET}]
            - name: syntax-error
              match:
                issuer: {ISSUER_NAME}
                condition: 'claims.team == ('
                audiences: [{TARGET}]
            "#
        )),
        subject_rule(
            "unknown-variable",
            &format!("{targets}\ncondition: 'environment.name == \"prod\"'"),
            "",
        ),
        subject_rule(
            "bad-mapping",
            &targets,
            "claims:\n  repo: {expr: 'claims.repository.noSuchFunction()'}",
        ),
    ];
    let text = write_file(dir.path(), "rules/bad-cel.yaml", &rules.concat());

    let out = check(dir.path(), &config);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let all = out.all();
    for (rule, needle, field) in [
        ("syntax-error", "condition:", "match.condition"),
        ("unknown-variable", "condition:", "match.condition"),
        ("bad-mapping", "repo:", "issue.claims.repo"),
    ] {
        let at = line_of(&text, &format!("name: {rule}"), 1);
        let line_no = line_of(&text, needle, at);
        let line = report_line(&all, "rules/bad-cel.yaml", line_no)
            .unwrap_or_else(|| panic!("no error at rules/bad-cel.yaml:{line_no} for {rule}:\n{all}"));
        assert!(line.contains(rule) && line.contains(field), "{rule}: {line}");
    }
    let unknown = report_line(&all, "rules/bad-cel.yaml", line_of(&text, "environment.name", 1))
        .expect("reported above");
    assert!(unknown.contains("environment"), "names the variable: {unknown}");
    assert!(
        !all.contains("rule `fine`"),
        "the valid rule is not reported:\n{all}"
    );

    // The JSON form agrees: the same three errors, each with the rule file and line.
    let out = check_in(dir.path(), &config, true);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()));
    let errors = doc["errors"].as_array().expect("errors list");
    assert_eq!(errors.len(), 3, "{doc}");
    for error in errors {
        assert!(
            error["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("rules/bad-cel.yaml")),
            "{error}"
        );
        assert!(error["line"].as_u64().is_some_and(|l| l > 1), "{error}");
    }

    // And `serve` refuses to start with it.
    let out = run_cli_in(
        dir.path(),
        &["serve", "--config", config.to_str().expect("UTF-8 path")],
        &[],
    );
    assert!(
        matches!(out.code, Some(c) if c != 0),
        "serve must refuse:\n{}",
        out.all()
    );
    assert!(out.all().contains("syntax-error"), "{}", out.all());
}

// ---------------------------------------------------------------------------------------
// 6. The example rule files
// ---------------------------------------------------------------------------------------

const GCP_AUDIENCE: &str = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/POOL/providers/PROVIDER";
const EKS_ISSUER: &str = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";
const GKE_ISSUER: &str =
    "https://container.googleapis.com/v1/projects/acme-prod/locations/europe-west1/clusters/prod";

fn examples_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../federation-rules/examples");
    std::fs::canonicalize(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// GitHub's claims for a production deploy of acme/API (the examples' fixture), without
/// the registered claims the fake fills in (iss, aud, iat, exp, jti).
fn github_claims() -> Value {
    let path = examples_dir().join("claims/github-actions-production.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn patched(base: &Value, patch: Value) -> Value {
    let mut out = base.clone();
    if let (Value::Object(out), Value::Object(patch)) = (&mut out, patch) {
        out.extend(patch);
    }
    out
}

fn kubernetes_claims(iss: &str, namespace: &str, service_account: &str) -> Value {
    json!({
        "iss": iss,
        "aud": ["https://broker.example.com"],
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        "exp": 1_700_003_600,
        "iat": 1_700_000_000,
        "nbf": 1_700_000_000,
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": format!("{service_account}-7d9c8b6f5-x2x4q"), "uid": "8a7b6c5d-4e3f-2a1b-0c9d-8e7f6a5b4c3d"},
            "serviceaccount": {"name": service_account, "uid": "2b3c4d5e-6f7a-8b9c-0d1e-2f3a4b5c6d7e"},
        },
    })
}

/// `fedbroker explain --config <config> --claims <doc> --audience <audience> --json`.
fn explain_claims(dir: &Path, config: &Path, name: &str, doc: &Value, audience: &str) -> (CliOutput, Value) {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, doc.to_string()).expect("claims file");
    let claims = path.to_str().expect("UTF-8 path");
    let out = explain(
        dir,
        config,
        &["--claims", claims, "--audience", audience, "--json"],
    );
    let doc = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: explain --json stdout is not JSON ({e}):\n{}", out.all()));
    (out, doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_rule_files_load_in_the_real_binary() {
    // GitHub Actions is a live fake (its URL is the registered `github-actions` issuer);
    // the others get static keys and the realistic URLs of their platforms.
    let github = FakeIssuer::start();
    let jwks = github.jwks().to_string();
    let static_issuer = |name: &str, url: &str| {
        github.issuer_yaml_with(
            name,
            &format!("issuer: {url}\njwks: {jwks}\ndanger_allow_insecure: false"),
        )
    };
    let examples = examples_dir();
    let glob = format!("{}/*.yaml", examples.display());
    let config_obj = BrokerConfig::new()
        .issuer(github.issuer_yaml("github-actions"))
        .issuer(static_issuer("eks", EKS_ISSUER))
        .issuer(static_issuer("gke", GKE_ISSUER))
        .issuer(static_issuer("gitlab", "https://gitlab.com"))
        .issuer(static_issuer("agents", "https://agents.example.com"))
        .top_level(format!("rules_files: [\"{glob}\"]"));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_obj.write_to(dir.path());

    let out = check(dir.path(), &config);
    assert_eq!(out.code, Some(0), "the examples must load:\n{}", out.all());

    // GitHub Actions → AWS: the production rule, with its session tags.
    let gha_claims = github_claims();
    let gha_doc = patched(&gha_claims, json!({"iss": github.issuer()}));
    let (out, doc) = explain_claims(dir.path(), &config, "gha", &gha_doc, "sts.amazonaws.com");
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(doc["decision"]["outcome"], "allow", "{doc}");
    assert_eq!(doc["decision"]["rule"], "gha-production-deploys-to-aws", "{doc}");
    let issued = &doc["issued_claims"];
    assert_eq!(issued["sub"], "gha:acme/API:production", "{doc}");
    assert_eq!(issued["aud"], "sts.amazonaws.com", "{doc}");
    assert_eq!(
        issued["https://aws.amazon.com/tags"],
        json!({
            "principal_tags": {"repo": ["acme/api"], "environment": ["production"]},
            "transitive_tag_keys": ["repo", "environment"],
        }),
        "{doc}"
    );
    match (issued["iat"].as_i64(), issued["exp"].as_i64()) {
        (Some(iat), Some(exp)) => assert_eq!(exp - iat, 900, "lifetime 15m: {doc}"),
        _ => panic!("issued_claims lacks iat/exp: {doc}"),
    }
    // The guard rails of the other file were consulted (and did not match).
    let consulted: Vec<&str> = doc["rules"]
        .as_array()
        .expect("rules list")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    for deny in [
        "deny-pull-request-events",
        "deny-pull-request-head-refs",
        "deny-forks",
    ] {
        assert!(consulted.contains(&deny), "{deny} not consulted: {doc}");
    }

    // Forks and pull requests: denied by the deny example rules.
    let deny_cases = [
        (
            "fork",
            json!({"repository": "mallory/API", "repository_owner": "mallory"}),
            "deny-forks",
        ),
        (
            "pull-request",
            json!({"event_name": "pull_request"}),
            "deny-pull-request-events",
        ),
        (
            "pr-head-ref",
            json!({"event_name": "workflow_dispatch", "head_ref": "feature/x"}),
            "deny-pull-request-head-refs",
        ),
    ];
    for (name, patch, rule) in &deny_cases {
        let claims = patched(&gha_doc, patch.clone());
        let (out, doc) = explain_claims(dir.path(), &config, name, &claims, "sts.amazonaws.com");
        assert_eq!(out.code, Some(2), "{name}: {}", out.all());
        assert_eq!(doc["decision"]["outcome"], "deny", "{name}: {doc}");
        assert_eq!(doc["decision"]["rule"], *rule, "{name}: {doc}");
        assert_eq!(doc["decision"]["error"], "invalid_request", "{name}: {doc}");
        assert!(doc["issued_claims"].is_null(), "{name}: {doc}");
    }

    // EKS → GCP WIF: Google's subject, under its 127 bytes.
    let eks_doc = kubernetes_claims(EKS_ISSUER, "payments-prod", "ledger-writer");
    let (out, doc) = explain_claims(dir.path(), &config, "eks", &eks_doc, GCP_AUDIENCE);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(doc["decision"]["rule"], "eks-payments-to-gcp", "{doc}");
    let issued = &doc["issued_claims"];
    let subject = issued["sub"].as_str().unwrap_or_else(|| panic!("no sub: {doc}"));
    assert_eq!(subject, "eks:payments-prod:ledger-writer", "{doc}");
    assert!(subject.len() < 127, "{subject}");
    assert_eq!(issued["aud"], GCP_AUDIENCE, "{doc}");
    assert_eq!(issued["namespace"], "payments-prod", "{doc}");
    assert_eq!(issued["cluster"], EKS_ISSUER, "{doc}");
    match (issued["iat"].as_i64(), issued["exp"].as_i64()) {
        (Some(iat), Some(exp)) => assert_eq!(exp - iat, 600, "lifetime 10m: {doc}"),
        _ => panic!("issued_claims lacks iat/exp: {doc}"),
    }
    // Names that would make Google's subject too long are refused.
    let long = kubernetes_claims(
        EKS_ISSUER,
        &format!("payments-{}", "a".repeat(54)),
        &"b".repeat(63),
    );
    let (out, doc) = explain_claims(dir.path(), &config, "eks-long", &long, GCP_AUDIENCE);
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert_eq!(doc["decision"]["outcome"], "deny", "{doc}");

    // GKE → Azure: a fixed subject per federated credential.
    let gke_doc = kubernetes_claims(GKE_ISSUER, "orders", "api");
    let (out, doc) = explain_claims(dir.path(), &config, "gke", &gke_doc, "api://AzureADTokenExchange");
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(doc["issued_claims"]["sub"], "gke-prod/orders/api", "{doc}");

    // A real exchange through `serve`, with a token the fake GitHub issuer signed.
    let broker = Broker::start(&config_obj.render()).await;
    let ready = broker.get("/readyz").await;
    let example_rules: usize = std::fs::read_dir(&examples)
        .expect("examples dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        // Rule tests (`*.test.yaml`) sit beside the rules; the glob does not load them.
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".test.yaml"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .expect("example file")
                .lines()
                .filter(|l| l.starts_with("- name:"))
                .count()
        })
        .sum();
    assert_eq!(
        ready.json["rules"]["loaded"],
        json!(example_rules),
        "every example rule is loaded: {}",
        ready.text
    );

    let token = github.mint(gha_claims.clone());
    let reply = broker.exchange(&token, "sts.amazonaws.com").await;
    let (_, claims) = verify_issued(&broker, reply.access_token(), &["sts.amazonaws.com"]).await;
    assert_eq!(claims["sub"], "gha:acme/API:production", "{claims}");
    assert_eq!(
        claims["https://aws.amazon.com/tags"],
        json!({
            "principal_tags": {"repo": ["acme/api"], "environment": ["production"]},
            "transitive_tag_keys": ["repo", "environment"],
        }),
        "{claims}"
    );
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        900,
        "{claims}"
    );
    for name in ["repository", "environment", "runner_environment"] {
        assert!(claims.get(name).is_none(), "{name} is not copied: {claims}");
    }

    // And a fork's token is refused by the deny example, with the rule in the audit log.
    let fork = github.mint(patched(
        &gha_claims,
        json!({"repository": "mallory/API", "repository_owner": "mallory"}),
    ));
    let reply = broker.exchange(&fork, "sts.amazonaws.com").await;
    assert_denied_by_policy(&reply, &fork);
    let lines = broker.wait_for_audit_lines(2).await;
    let (_, fork_claims) = decode_unverified(&fork);
    let line = lines
        .iter()
        .find(|l| l["jti"] == fork_claims["jti"])
        .unwrap_or_else(|| panic!("no audit line for the fork: {lines:#?}"));
    assert_eq!(line["outcome"], "deny", "{line}");
    assert_eq!(line["rule"], "deny-forks", "{line}");
}
