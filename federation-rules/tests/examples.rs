//! The rule files in `examples/`, loaded as the broker loads them (YAML through
//! marked_yaml, every scalar a string) and exercised with realistic claims.

use federation_rules::{
    Actor, Claims, CompileContext, Decision, Denial, DenialKind, Grant, RawRule, Request, RuleSet,
};
use marked_yaml::LoaderOptions;
use serde_json::{Map, Value, json};

fn load(file: &str, issuers: &'static [&'static str]) -> RuleSet {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let node = marked_yaml::parse_yaml_with_options(0, &text, LoaderOptions::default().toplevel_sequence())
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let raw: Vec<RawRule> = marked_yaml::from_node(&node).unwrap_or_else(|e| panic!("{file}: {e}"));
    let known = move |name: &str| issuers.contains(&name);
    let ctx = CompileContext {
        issuers: &known,
        max_lifetime: 3600,
    };
    RuleSet::compile(raw, &ctx).unwrap_or_else(|errors| panic!("{file}: {errors:#?}"))
}

fn claims(value: Value) -> Claims {
    match value {
        Value::Object(map) => Claims(map),
        other => panic!("not an object: {other}"),
    }
}

fn with(base: &Value, patch: Value) -> Value {
    let mut out = base.clone();
    if let (Value::Object(out), Value::Object(patch)) = (&mut out, patch) {
        out.extend(patch);
    }
    out
}

/// One request, owned.
struct Req {
    issuer: &'static str,
    claims: Claims,
    audiences: Vec<String>,
    scopes: Vec<String>,
    actor: Option<(&'static str, Claims)>,
}

impl Req {
    fn new(issuer: &'static str, claims_json: Value, audience: &str) -> Req {
        Req {
            issuer,
            claims: claims(claims_json),
            audiences: vec![audience.to_owned()],
            scopes: Vec::new(),
            actor: None,
        }
    }

    fn scopes(mut self, scopes: &[&str]) -> Req {
        self.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    fn actor(mut self, issuer: &'static str, claims_json: Value) -> Req {
        self.actor = Some((issuer, claims(claims_json)));
        self
    }

    fn decide(&self, set: &RuleSet) -> Decision {
        let request = Request {
            issuer: self.issuer,
            claims: &self.claims,
            audiences: &self.audiences,
            resources: &[],
            targets: &self.audiences,
            scopes: &self.scopes,
            requested_token_type: "urn:ietf:params:oauth:token-type:jwt",
            actor: self
                .actor
                .as_ref()
                .map(|(issuer, claims)| Actor { issuer, claims }),
            dpop: false,
            client_cert: None,
        };
        let decision = set.evaluate(&request);
        assert_eq!(set.explain(&request).decision, decision, "explain must agree");
        decision
    }
}

fn granted(decision: Decision) -> Grant {
    match decision {
        Decision::Allow(grant) => grant,
        Decision::Deny(denial) => panic!("expected a grant, got {denial:#?}"),
    }
}

fn denied(decision: Decision) -> Denial {
    match decision {
        Decision::Deny(denial) => denial,
        Decision::Allow(grant) => panic!("expected a denial, got {grant:#?}"),
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// GitHub's claims for a production deploy of acme/API (`examples/claims/`, shared with
/// the broker's end-to-end test of these examples), with the registered claims.
fn github_claims() -> Value {
    let path = format!(
        "{}/examples/claims/github-actions-production.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let claims: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    with(
        &claims,
        json!({
            "iss": "https://token.actions.githubusercontent.com",
            "aud": "https://broker.example.com",
            "jti": "a5c47ac4-3a1e-4fd8-9e25-d0b6f0a7a0a9",
            "iat": 1700000000,
            "exp": 1700000300,
        }),
    )
}

#[test]
fn github_actions_to_aws() {
    let set = load("github-actions-to-aws.yaml", &["github-actions"]);
    let grant = granted(Req::new("github-actions", github_claims(), "sts.amazonaws.com").decide(&set));
    assert_eq!(grant.rule, "gha-production-deploys-to-aws");
    assert_eq!(grant.audience, ["sts.amazonaws.com"]);
    assert_eq!(grant.subject, "gha:acme/API:production");
    assert_eq!(grant.lifetime, 900);
    assert_eq!(
        grant.claims,
        object(json!({
            "https://aws.amazon.com/tags": {
                "principal_tags": {"repo": ["acme/api"], "environment": ["production"]},
                "transitive_tag_keys": ["repo", "environment"],
            }
        }))
    );

    let staging = with(
        &github_claims(),
        json!({"sub": "repo:acme/API:environment:staging", "environment": "staging"}),
    );
    let denial = denied(Req::new("github-actions", staging, "sts.amazonaws.com").decide(&set));
    assert_eq!(denial.kind, DenialKind::DeniedByPolicy);
    assert_eq!(
        denial.reason,
        r#"no allow rule matched: rule `gha-production-deploys-to-aws`: sub: does not match "repo:acme/*:environment:production" (got "repo:acme/API:environment:staging")"#
    );

    let self_hosted = with(&github_claims(), json!({"runner_environment": "self-hosted"}));
    let denial = denied(Req::new("github-actions", self_hosted, "sts.amazonaws.com").decide(&set));
    assert!(
        denial.reason.ends_with("match.condition: evaluated to false"),
        "{}",
        denial.reason
    );
}

fn eks_claims(namespace: &str, service_account: &str) -> Value {
    json!({
        "iss": "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
        "aud": ["https://broker.example.com"],
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        "exp": 1700003600,
        "iat": 1700000000,
        "nbf": 1700000000,
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "ip-10-0-12-34.eu-west-1.compute.internal", "uid": "1f3e5b6a-0c1d-4e2f-9a8b-7c6d5e4f3a2b"},
            "pod": {"name": format!("{service_account}-7d9c8b6f5-x2x4q"), "uid": "8a7b6c5d-4e3f-2a1b-0c9d-8e7f6a5b4c3d"},
            "serviceaccount": {"name": service_account, "uid": "2b3c4d5e-6f7a-8b9c-0d1e-2f3a4b5c6d7e"},
        },
    })
}

const GCP_AUDIENCE: &str = "//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/POOL/providers/PROVIDER";

#[test]
fn eks_to_gcp_wif() {
    let set = load("eks-to-gcp-wif.yaml", &["eks"]);
    let grant =
        granted(Req::new("eks", eks_claims("payments-prod", "ledger-writer"), GCP_AUDIENCE).decide(&set));
    assert_eq!(grant.audience, [GCP_AUDIENCE]);
    assert_eq!(grant.subject, "eks:payments-prod:ledger-writer");
    assert!(grant.subject.len() < 127);
    assert_eq!(grant.lifetime, 600);
    assert_eq!(
        grant.claims,
        object(json!({
            "namespace": "payments-prod",
            "cluster": "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
        }))
    );

    let denial = denied(Req::new("eks", eks_claims("kube-system", "aws-node"), GCP_AUDIENCE).decide(&set));
    assert_eq!(
        denial.reason,
        r#"no allow rule matched: rule `eks-payments-to-gcp`: claims["kubernetes.io"].namespace: does not match "payments-*" (got "kube-system")"#
    );

    // Names that would make Google's `sub` too long are refused before issuing.
    let namespace = format!("payments-{}", "a".repeat(54));
    let service_account = "b".repeat(63);
    let denial = denied(Req::new("eks", eks_claims(&namespace, &service_account), GCP_AUDIENCE).decide(&set));
    assert!(
        denial.reason.ends_with("match.condition: evaluated to false"),
        "{}",
        denial.reason
    );
}

#[test]
fn gke_to_azure() {
    let set = load("gke-to-azure.yaml", &["gke"]);
    let gke = |namespace: &str, sa: &str| {
        let mut claims = eks_claims(namespace, sa);
        claims["iss"] = json!(
            "https://container.googleapis.com/v1/projects/acme-prod/locations/europe-west1/clusters/prod"
        );
        claims
    };
    let azure = "api://AzureADTokenExchange";
    let grant = granted(Req::new("gke", gke("orders", "api"), azure).decide(&set));
    assert_eq!(
        (grant.rule.as_str(), grant.subject.as_str()),
        ("gke-orders-api-to-azure", "gke-prod/orders/api")
    );
    assert_eq!(grant.audience, [azure]);
    assert!(grant.claims.is_empty());
    let grant = granted(Req::new("gke", gke("reporting", "exporter"), azure).decide(&set));
    assert_eq!(grant.subject, "gke-prod/reporting/exporter");

    let denial = denied(Req::new("gke", gke("orders", "worker"), azure).decide(&set));
    assert_eq!(
        denial.reason,
        concat!(
            "no allow rule matched: ",
            r#"rule `gke-orders-api-to-azure`: sub: expected "system:serviceaccount:orders:api", got "system:serviceaccount:orders:worker"; "#,
            r#"rule `gke-reports-exporter-to-azure`: sub: expected "system:serviceaccount:reporting:exporter", got "system:serviceaccount:orders:worker""#
        )
    );
}

fn gitlab_claims() -> Value {
    json!({
        "iss": "https://gitlab.com",
        "aud": "https://broker.example.com",
        "sub": "project_path:acme/payments:ref_type:branch:ref:main",
        "namespace_id": "72",
        "namespace_path": "acme",
        "project_id": "20",
        "project_path": "acme/payments",
        "user_id": "5",
        "user_login": "jdoe",
        "user_email": "jdoe@example.com",
        "pipeline_id": "1212",
        "pipeline_source": "push",
        "job_id": "3456",
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "environment": "production",
        "environment_protected": "true",
        "runner_id": 1,
        "runner_environment": "gitlab-hosted",
        "jti": "235b3a54-b797-45c7-ae9a-f72d7bc6ef5b",
        "iat": 1700000000,
        "exp": 1700003600,
    })
}

#[test]
fn gitlab_ci_to_aws() {
    let set = load("gitlab-ci-to-aws.yaml", &["gitlab"]);
    let grant = granted(Req::new("gitlab", gitlab_claims(), "sts.amazonaws.com").decide(&set));
    assert_eq!(grant.subject, "gitlab:acme/payments");
    assert_eq!(
        grant.claims,
        object(json!({
            "https://aws.amazon.com/tags": {
                "principal_tags": {"project": ["acme/payments"], "ref": ["main"]},
                "transitive_tag_keys": ["project"],
            }
        }))
    );

    let unprotected = with(&gitlab_claims(), json!({"ref_protected": "false"}));
    let denial = denied(Req::new("gitlab", unprotected, "sts.amazonaws.com").decide(&set));
    assert_eq!(
        denial.reason,
        r#"no allow rule matched: rule `gitlab-protected-main-to-aws`: claims.ref_protected: expected "true", got "false""#
    );
    let merge_request = with(
        &gitlab_claims(),
        json!({"pipeline_source": "merge_request_event"}),
    );
    let denial = denied(Req::new("gitlab", merge_request, "sts.amazonaws.com").decide(&set));
    assert!(
        denial.reason.ends_with(
            r#"claims.pipeline_source: expected one of [push, schedule, web], got "merge_request_event""#
        ),
        "{}",
        denial.reason
    );
}

#[test]
fn deny_forks_and_pull_requests() {
    let set = load("deny-forks-and-pull-requests.yaml", &["github-actions"]);
    let push = with(
        &github_claims(),
        json!({"sub": "repo:acme/API:ref:refs/heads/main", "environment": null}),
    );
    let grant = granted(Req::new("github-actions", push.clone(), "sts.amazonaws.com").decide(&set));
    assert_eq!(
        (grant.rule.as_str(), grant.subject.as_str()),
        ("gha-main-to-aws", "gha:acme/API")
    );

    let cases: &[(Value, &str, &str)] = &[
        (
            json!({"event_name": "pull_request_target"}),
            "deny-pull-request-events",
            "deny rule `deny-pull-request-events` matched: tokens minted for pull_request and pull_request_target runs",
        ),
        (
            json!({"event_name": "workflow_dispatch", "head_ref": "feature/x"}),
            "deny-pull-request-head-refs",
            "deny rule `deny-pull-request-head-refs` matched: any run building a pull request's head branch",
        ),
        (
            json!({"repository": "mallory/API", "repository_owner": "mallory", "sub": "repo:acme/API:ref:refs/heads/main"}),
            "deny-forks",
            "deny rule `deny-forks` matched: repositories not owned by acme, including forks of acme's repositories",
        ),
    ];
    for (patch, rule, reason) in cases {
        let denial =
            denied(Req::new("github-actions", with(&push, patch.clone()), "sts.amazonaws.com").decide(&set));
        assert_eq!(denial.kind, DenialKind::DeniedByPolicy);
        assert_eq!(denial.rule.as_deref(), Some(*rule));
        assert_eq!(denial.reason, *reason);
    }
    // An empty head_ref (push events) is not a pull request.
    let empty_head = with(&push, json!({"head_ref": ""}));
    assert!(
        Req::new("github-actions", empty_head, "sts.amazonaws.com")
            .decide(&set)
            .is_allow()
    );
}

#[test]
fn agent_acting_for_workload() {
    let set = load("agent-acting-for-workload.yaml", &["eks", "agents"]);
    let api = "https://api.payments.example.com";
    let agent = json!({
        "iss": "https://agents.example.com",
        "sub": "agent:release-assistant",
        "tenant": "payments",
        "tier": "trusted",
    });
    let workload = eks_claims("payments", "ledger-writer");
    let grant = granted(
        Req::new("eks", workload.clone(), api)
            .scopes(&["payments.read"])
            .actor("agents", agent.clone())
            .decide(&set),
    );
    assert_eq!(grant.rule, "agents-act-for-payments-workloads");
    assert_eq!(grant.subject, "system:serviceaccount:payments:ledger-writer");
    assert_eq!(grant.scopes, ["payments.read"]);
    assert_eq!(grant.lifetime, 300);
    assert_eq!(
        grant.claims,
        object(json!({"tenant": "payments", "agent_tier": "trusted"}))
    );

    // Without an actor token the rule does not apply: delegation only.
    let denial = denied(Req::new("eks", workload.clone(), api).decide(&set));
    assert!(
        denial.reason.contains("actor: the rule requires an actor token"),
        "{}",
        denial.reason
    );

    // An agent of another tenant.
    let foreign = with(&agent, json!({"tenant": "marketing"}));
    let denial = denied(
        Req::new("eks", workload.clone(), api)
            .actor("agents", foreign)
            .decide(&set),
    );
    assert!(
        denial
            .reason
            .ends_with("match.actor.condition: evaluated to false"),
        "{}",
        denial.reason
    );

    // Refunds need an agent approved for them.
    let denial = denied(
        Req::new("eks", workload.clone(), api)
            .scopes(&["payments.refund"])
            .actor("agents", agent.clone())
            .decide(&set),
    );
    assert_eq!(denial.rule.as_deref(), Some("no-refunds-by-unapproved-agents"));
    let approved = with(&agent, json!({"tier": "trusted-refunds"}));
    assert!(
        Req::new("eks", workload.clone(), api)
            .scopes(&["payments.refund"])
            .actor("agents", approved)
            .decide(&set)
            .is_allow()
    );

    // The workload token names the only agent that may act for it.
    let restricted = with(
        &workload,
        json!({"may_act": {"sub": "agent:on-call-bot", "iss": "https://agents.example.com"}}),
    );
    let denial = denied(
        Req::new("eks", restricted, api)
            .actor("agents", agent)
            .decide(&set),
    );
    assert_eq!(
        denial.reason,
        r#"may_act: actor "agent:release-assistant" is not authorized by the subject token"#
    );
}
