//! Successful exchanges: the response, the issued token, rule matching and
//! mapping, delegation, discovery and the other read-only endpoints.
//!
//! Protocol-level cases run against the broker's router in this process
//! (`InProcess`); a process (`Broker`) serves what needs one: a restart, the
//! environment, rule files beside the config, a listener's root path.

use integration_tests::fake_issuer::{DEFAULT_AUDIENCE, DEFAULT_SUBJECT};
use integration_tests::tokens::{
    GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT,
    decode_unverified, verify_issued, verify_with_jwks,
};
use integration_tests::{Broker, BrokerConfig, FakeIssuer, InProcess, KeyKind, exchange_form};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::support::{
    ISSUER_NAME, TARGET, app_with_rules, assert_denied_by_policy, config_with_rules, default_app,
    delegation_app, str_claim, subject_rule,
};

/// The `match` line of a rule granting [`TARGET`] (`target-a`).
const AUDIENCES_TARGET: &str = "audiences: [target-a]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_issues_verifiable_jwt_with_no_store_headers() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let subject_token = fake.mint(json!({}));

    let reply = broker.exchange(&subject_token, TARGET).await;

    let issued = reply.access_token().to_owned();
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{reply:?}"
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    assert_eq!(reply.json["issued_token_type"], TOKEN_TYPE_JWT);
    assert_eq!(reply.json["token_type"], "N_A");
    let expires_in = reply.json["expires_in"]
        .as_i64()
        .expect("expires_in is an integer");
    assert!(
        (595..=600).contains(&expires_in),
        "expires_in {expires_in} for a 10m rule"
    );

    let (header, claims) = verify_issued(&broker, &issued, &[TARGET]).await;
    assert_eq!(header.alg, Algorithm::RS256, "default signing algorithm");
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert!(header.kid.as_deref().is_some_and(|k| !k.is_empty()));
    assert_eq!(claims["iss"], broker.url());
    assert_eq!(claims["sub"], DEFAULT_SUBJECT);
    assert_eq!(claims["aud"], json!(TARGET), "one target: aud is a string");
    for name in ["iat", "nbf", "exp"] {
        assert!(claims[name].is_i64(), "{name} must be whole seconds: {claims}");
    }
    let iat = claims["iat"].as_i64().expect("iat");
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - iat,
        600,
        "rule lifetime 10m"
    );
    assert!(claims["nbf"].as_i64().expect("nbf") <= iat);
    assert!(!str_claim(&claims, "jti").is_empty());
    assert!(claims.get("act").is_none(), "no actor, no act: {claims}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_jti_is_unique_across_exchanges() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let mut jtis = Vec::new();
    for _ in 0..2 {
        let subject_token = fake.mint(json!({}));
        let (_, incoming) = decode_unverified(&subject_token);
        let reply = broker.exchange(&subject_token, TARGET).await;
        let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
        assert_ne!(
            claims["jti"], incoming["jti"],
            "the incoming jti must not be reused"
        );
        jtis.push(claims["jti"].clone());
    }
    assert_ne!(jtis[0], jtis[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_request_yields_bearer_at_jwt() {
    assert_requested_type(TOKEN_TYPE_ACCESS_TOKEN, "Bearer", "at+jwt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_jwt_requested_token_type_is_the_default_shape() {
    assert_requested_type(TOKEN_TYPE_JWT, "N_A", "JWT").await;
}

/// An exchange asking for `requested_token_type`: the answer's `token_type` and
/// `issued_token_type`, and the issued token's `typ` header.
async fn assert_requested_type(requested: &str, token_type: &str, typ: &str) {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let subject_token = fake.mint(json!({}));
    let mut form = exchange_form(&subject_token, TARGET);
    form.push(("requested_token_type", requested));

    let reply = broker.token_request(&form).await;

    let issued = reply.access_token().to_owned();
    assert_eq!(reply.json["token_type"], token_type);
    assert_eq!(reply.json["issued_token_type"], requested);
    let (header, _) = verify_issued(&broker, &issued, &[TARGET]).await;
    assert_eq!(header.typ.as_deref(), Some(typ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_and_access_token_subject_token_types_are_accepted() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    for token_type in [TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_ACCESS_TOKEN] {
        let subject_token = fake.mint(json!({}));
        let reply = broker
            .token_request(&[
                ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
                ("subject_token", &subject_token),
                ("subject_token_type", token_type),
                ("audience", TARGET),
            ])
            .await;
        assert_eq!(reply.status, 200, "{token_type}: {}", reply.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_templates_map_subject_audience_and_nested_claims() {
    let fake = FakeIssuer::start();
    let issue = r#"
        audience: sts.amazonaws.com
        subject: "gha:{claims.repository}"
        lifetime: 5m
        claims:
          repo: "{claims.repository}"
          namespace: '{claims["kubernetes.io"].namespace}'
          service_account: '{claims["kubernetes.io"].serviceaccount.name}'
          origin: "{iss}"
          who: "{sub}"
          literal: fixed-value
          https://aws.amazon.com/tags:
            principal_tags:
              repo: ["{claims.repository}"]
            transitive_tag_keys: [repo]
        "#;
    let broker = app_with_rules(&fake, &subject_rule("map-claims", AUDIENCES_TARGET, issue)).await;
    let subject_token = fake.mint(json!({
        "repository": "acme/api",
        "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "deployer"}},
    }));

    let reply = broker.exchange(&subject_token, TARGET).await;

    let (_, claims) = verify_issued(&broker, reply.access_token(), &["sts.amazonaws.com"]).await;
    assert_eq!(
        claims["aud"], "sts.amazonaws.com",
        "issue.audience overrides the target"
    );
    assert_eq!(claims["sub"], "gha:acme/api");
    assert_eq!(claims["repo"], "acme/api");
    assert_eq!(claims["namespace"], "ci");
    assert_eq!(claims["service_account"], "deployer");
    assert_eq!(claims["origin"], fake.issuer());
    assert_eq!(claims["who"], DEFAULT_SUBJECT);
    assert_eq!(claims["literal"], "fixed-value");
    assert_eq!(
        claims["https://aws.amazon.com/tags"],
        json!({"principal_tags": {"repo": ["acme/api"]}, "transitive_tag_keys": ["repo"]})
    );
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        300
    );
    assert!(
        claims.get("kubernetes.io").is_none(),
        "incoming claims are not copied wholesale"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_with_missing_claim_denies_instead_of_issuing_empty_value() {
    let fake = FakeIssuer::start();
    let issue = r#"subject: "gha:{claims.repository}""#;
    let broker = app_with_rules(&fake, &subject_rule("needs-repository", AUDIENCES_TARGET, issue)).await;
    let subject_token = fake.mint(json!({}));

    let reply = broker.exchange(&subject_token, TARGET).await;

    reply.assert_error(400, "invalid_request", &subject_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_lifetime_is_fifteen_minutes() {
    let fake = FakeIssuer::start();
    let broker = app_with_rules(&fake, &subject_rule("no-lifetime", AUDIENCES_TARGET, "")).await;

    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;

    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        900
    );
    let expires_in = reply.json["expires_in"].as_i64().expect("expires_in");
    assert!((895..=900).contains(&expires_in), "expires_in {expires_in}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_requested_audiences_make_an_array_aud() {
    let fake = FakeIssuer::start();
    let rule = subject_rule("two-targets", "audiences: [target-a, target-b]", "");
    let broker = app_with_rules(&fake, &rule).await;
    let subject_token = fake.mint(json!({}));
    let mut form = exchange_form(&subject_token, "target-a");
    form.push(("audience", "target-b"));

    let reply = broker.token_request(&form).await;

    let (_, claims) = verify_issued(&broker, reply.access_token(), &["target-a", "target-b"]).await;
    let aud = claims["aud"].as_array().expect("two targets: aud is an array");
    assert_eq!(aud.len(), 2, "{aud:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_parameter_names_the_target() {
    let fake = FakeIssuer::start();
    let rule = subject_rule("api-resource", r#"audiences: ["https://api.example.com/"]"#, "");
    let broker = app_with_rules(&fake, &rule).await;
    let subject_token = fake.mint(json!({}));

    let reply = broker
        .token_request(&[
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", &subject_token),
            ("subject_token_type", TOKEN_TYPE_JWT),
            ("resource", "https://api.example.com/"),
        ])
        .await;

    let (_, claims) = verify_issued(&broker, reply.access_token(), &["https://api.example.com/"]).await;
    assert_eq!(claims["aud"], "https://api.example.com/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_matchers_and_anchored_subject_patterns_select_requests() {
    let fake = FakeIssuer::start();
    let rules = r#"
        - name: acme-main
          match:
            issuer: k8s
            subject_pattern: "repo:acme/*:ref:refs/heads/main"
            claims:
              repository_owner: acme
              environment: [prod, staging]
            claim_patterns:
              job_workflow_ref: "acme/workflows/.github/workflows/*@refs/heads/main"
            audiences: [target-a]
        "#;
    let broker = app_with_rules(&fake, rules).await;
    let good = json!({
        "sub": "repo:acme/api:ref:refs/heads/main",
        "repository_owner": "acme",
        "environment": "staging",
        "job_workflow_ref": "acme/workflows/.github/workflows/deploy.yml@refs/heads/main",
    });
    let with = |changes: Value| {
        let mut claims = good.clone();
        for (k, v) in changes.as_object().expect("object") {
            claims[k] = v.clone();
        }
        claims
    };

    let token = fake.mint(good.clone());
    assert_eq!(broker.exchange(&token, TARGET).await.status, 200);

    let denied = [
        ("environment not listed", with(json!({"environment": "dev"}))),
        ("owner differs in case", with(json!({"repository_owner": "Acme"}))),
        ("owner missing", with(json!({"repository_owner": null}))),
        (
            "workflow on another branch",
            with(json!({"job_workflow_ref": "acme/workflows/.github/workflows/deploy.yml@refs/heads/dev"})),
        ),
        (
            "subject pattern is anchored at the start",
            with(json!({"sub": "xrepo:acme/api:ref:refs/heads/main"})),
        ),
        (
            "subject pattern is anchored at the end",
            with(json!({"sub": "repo:acme/api:ref:refs/heads/main2"})),
        ),
    ];
    for (why, claims) in denied {
        let token = fake.mint(claims);
        let reply = broker.exchange(&token, TARGET).await;
        assert_eq!(
            (reply.status, reply.json["error"].as_str()),
            (400, Some("invalid_request")),
            "{why}: {}",
            reply.text
        );
        assert_eq!(reply.json["error_description"], "denied by policy", "{why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_and_boolean_claims_match_their_json_text() {
    let fake = FakeIssuer::start();
    let matching = r#"
        claims:
          run_attempt: "1"
          hosted: "true"
        audiences: [target-a]
        "#;
    let broker = app_with_rules(&fake, &subject_rule("typed-claims", matching, "")).await;

    let token = fake.mint(json!({"run_attempt": 1, "hosted": true}));
    let reply = broker.exchange(&token, TARGET).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let token = fake.mint(json!({"run_attempt": 2, "hosted": true}));
    reply_denied(&broker.exchange(&token, TARGET).await);
    let token = fake.mint(json!({"run_attempt": 1, "hosted": false}));
    reply_denied(&broker.exchange(&token, TARGET).await);
}

fn reply_denied(reply: &integration_tests::Reply) {
    assert_denied_by_policy(reply, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_expression_gates_the_rule() {
    let fake = FakeIssuer::start();
    let matching = r#"
        condition: 'claims.runner_environment == "github-hosted"'
        audiences: [target-a]
        "#;
    let broker = app_with_rules(&fake, &subject_rule("hosted-only", matching, "")).await;

    let token = fake.mint(json!({"runner_environment": "github-hosted"}));
    assert_eq!(broker.exchange(&token, TARGET).await.status, 200);
    let token = fake.mint(json!({"runner_environment": "self-hosted"}));
    reply_denied(&broker.exchange(&token, TARGET).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_granted_by_a_rule_is_accepted() {
    let fake = FakeIssuer::start();
    let matching = "audiences: [target-a]\nscopes: [read, write]";
    let broker = app_with_rules(&fake, &subject_rule("scoped", matching, "")).await;
    let subject_token = fake.mint(json!({}));
    let mut form = exchange_form(&subject_token, TARGET);
    form.push(("scope", "read write"));

    let reply = broker.token_request(&form).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    if let Some(scope) = reply.json.get("scope") {
        // Present only when it differs from the request; never wider than asked.
        let granted: Vec<&str> = scope.as_str().expect("scope string").split(' ').collect();
        assert!(granted.iter().all(|s| ["read", "write"].contains(s)), "{scope}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_subject_tokens_are_accepted() {
    let fake = FakeIssuer::start_with(KeyKind::Ec);
    let broker = default_app(&fake).await;

    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;

    verify_issued(&broker, reply.access_token(), &[TARGET]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expired_within_clock_skew_is_accepted() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let now = integration_tests::tokens::now();

    let token = fake.mint(json!({"iat": now - 600, "exp": now - 20}));
    let reply = broker.exchange(&token, TARGET).await;

    assert_eq!(
        reply.status, 200,
        "20 s past exp with the default 60 s skew: {}",
        reply.text
    );
}

fn delegation_form<'a>(subject_token: &'a str, actor_token: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut form = exchange_form(subject_token, TARGET);
    form.push(("actor_token", actor_token));
    form.push(("actor_token_type", TOKEN_TYPE_JWT));
    form
}

/// A delegated exchange (subject token from `k8s`, actor token from `agents` with
/// subject `actor_sub`) against a rule with or without an actor clause.
struct Delegation {
    subjects: FakeIssuer,
    agents: FakeIssuer,
    broker: InProcess,
    subject_token: String,
    actor_token: String,
    reply: integration_tests::Reply,
}

async fn delegate(with_actor_clause: bool, actor_sub: &str) -> Delegation {
    let (subjects, agents, broker) = delegation_app("delegated-deploy", with_actor_clause).await;
    let subject_token = subjects.mint(json!({}));
    let actor_token = agents.mint(json!({"sub": actor_sub}));
    let reply = broker
        .token_request(&delegation_form(&subject_token, &actor_token))
        .await;
    Delegation {
        subjects,
        agents,
        broker,
        subject_token,
        actor_token,
        reply,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_token_delegation_adds_act_claim() {
    let d = delegate(true, "agent:builder").await;

    let (_, claims) = verify_issued(&d.broker, d.reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["sub"], DEFAULT_SUBJECT, "the subject stays the subject");
    assert_eq!(claims["act"]["sub"], "agent:builder");
    assert_eq!(claims["act"]["iss"], d.agents.issuer());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_not_matching_the_rule_actor_is_denied() {
    let d = delegate(true, "human:mallory").await;

    d.reply.assert_error(400, "invalid_request", &d.subject_token);
    assert_eq!(d.reply.json["error_description"], "denied by policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_token_against_rule_without_actor_is_denied() {
    let d = delegate(false, "agent:builder").await;

    d.reply.assert_error(400, "invalid_request", &d.actor_token);
    assert_eq!(d.reply.json["error_description"], "denied by policy");
    // The same subject without an actor is fine: the actor alone made the difference.
    let reply = d.broker.exchange(&d.subjects.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_describe_the_broker() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let url = broker.url();

    let openid = broker.get("/.well-known/openid-configuration").await;
    let oauth = broker.get("/.well-known/oauth-authorization-server").await;

    for doc in [&openid, &oauth] {
        assert_eq!(doc.status, 200, "{}", doc.text);
        let doc = &doc.json;
        assert_eq!(doc["issuer"], url);
        assert_eq!(doc["jwks_uri"], format!("{url}/jwks.json"));
        assert_eq!(doc["token_endpoint"], format!("{url}/token"));
        let grants = doc["grant_types_supported"]
            .as_array()
            .expect("grant_types_supported");
        assert!(grants.contains(&json!(GRANT_TYPE_TOKEN_EXCHANGE)), "{grants:?}");
        assert_eq!(doc["response_types_supported"], json!(["id_token"]));
        assert_eq!(doc["subject_types_supported"], json!(["public"]));
        let algs = doc["id_token_signing_alg_values_supported"]
            .as_array()
            .expect("algs");
        assert!(algs.contains(&json!("RS256")), "{algs:?}");
        assert!(doc["token_endpoint_auth_methods_supported"].is_array(), "{doc}");
        assert!(doc["claims_supported"].is_array(), "{doc}");
    }
    assert_eq!(openid.json, oauth.json, "the same metadata at both addresses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_publishes_usable_signing_keys() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;

    let reply = broker.get("/jwks.json").await;

    assert_eq!(reply.status, 200);
    let keys = reply.json["keys"].as_array().expect("keys array");
    assert!(!keys.is_empty() && keys.len() <= 100, "{} keys", keys.len());
    for key in keys {
        for field in ["kid", "kty", "alg"] {
            assert!(key[field].is_string(), "{field} missing in {key}");
        }
        assert_eq!(key["use"], "sig", "{key}");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                key.get(private).is_none(),
                "private parameter {private} published: {key}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_endpoints_answer() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;

    assert_eq!(broker.get("/healthz").await.status, 200);
    let ready = broker.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert!(ready.json.is_object(), "readyz body is JSON: {}", ready.text);
    let metrics = broker.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains("# TYPE"),
        "Prometheus text format: {}",
        metrics.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_is_served_under_the_public_url_path() {
    let fake = FakeIssuer::start();
    let config = config_with_rules(&fake, &crate::support::default_rule()).public_path("/sts");
    let broker = Broker::start(&config.render()).await;
    assert!(broker.url().ends_with("/sts"), "{}", broker.url());

    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["iss"], broker.url());

    let discovery = broker.get("/.well-known/openid-configuration").await;
    assert_eq!(discovery.json["issuer"], broker.url());
    assert_eq!(
        discovery.json["token_endpoint"],
        format!("{}/token", broker.url())
    );
    assert_eq!(discovery.json["jwks_uri"], format!("{}/jwks.json", broker.url()));
    assert_eq!(broker.get("/readyz").await.status, 200);

    let root = broker
        .client()
        .post(format!("{}/token", broker.origin()))
        .form(&exchange_form(&fake.mint(json!({})), TARGET))
        .send()
        .await
        .expect("POST /token at the root");
    assert_ne!(
        root.status(),
        200,
        "/token outside the public path must not exchange"
    );
}

async fn issued_header_for(signing_algorithm: &str) -> jsonwebtoken::Header {
    let fake = FakeIssuer::start();
    let config =
        config_with_rules(&fake, &crate::support::default_rule()).signing_algorithm(signing_algorithm);
    let broker = InProcess::start(&config.render()).await;
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    let (header, _) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    let discovery = broker.get("/.well-known/openid-configuration").await;
    let algs = &discovery.json["id_token_signing_alg_values_supported"];
    assert!(
        algs.as_array()
            .is_some_and(|a| a.contains(&json!(signing_algorithm))),
        "discovery lists {signing_algorithm}: {algs}"
    );
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_with_es256_ps256_and_eddsa_verifiable_by_jsonwebtoken() {
    for (name, alg) in [
        ("ES256", Algorithm::ES256),
        ("PS256", Algorithm::PS256),
        ("EdDSA", Algorithm::EdDSA),
    ] {
        assert_eq!(issued_header_for(name).await.alg, alg, "{name}");
    }
}

/// The `kid`s of a broker's JWKS, in order.
async fn kids(broker: &integration_tests::Http) -> Vec<Option<String>> {
    broker
        .jwks()
        .await
        .keys
        .iter()
        .map(|k| k.common.key_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_is_generated_once_and_kept_across_restarts() {
    let fake = FakeIssuer::start();
    let config = config_with_rules(&fake, &crate::support::default_rule()).render();
    let first = Broker::start(&config).await;
    let kids_before = kids(&first).await;
    let token = first
        .exchange(&fake.mint(json!({})), TARGET)
        .await
        .access_token()
        .to_owned();
    let first_url = first.url().to_owned();
    let dir = first.stop_and_keep_dir();
    let key_files = std::fs::read_dir(dir.path().join("keys"))
        .expect("key dir")
        .count();
    assert!(
        key_files >= 1,
        "an empty key_dir gets a key written on first start"
    );

    let second = Broker::builder().dir(dir).start(&config).await;

    let kids_after = kids(&second).await;
    assert_eq!(kids_before, kids_after);
    // A token from before the restart still verifies against the restarted broker's
    // keys (its `iss` names the first broker's port).
    verify_with_jwks(&second.jwks().await, &token, &first_url, &[TARGET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_references_in_config_are_substituted() {
    let fake = FakeIssuer::start();
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml_with(ISSUER_NAME, r#"audiences: ["${FEDBROKER_IT_AUDIENCE}"]"#))
        .rules(crate::support::default_rule());
    let broker = Broker::builder()
        .env("FEDBROKER_IT_AUDIENCE", "from-the-environment")
        .start(&config.render())
        .await;

    let accepted = broker
        .exchange(&fake.mint(json!({"aud": "from-the-environment"})), TARGET)
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    let token = fake.mint(json!({"aud": DEFAULT_AUDIENCE}));
    broker
        .exchange_refused(&token, TARGET, 400, "invalid_request")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_files_are_globbed_relative_to_the_config_file() {
    let fake = FakeIssuer::start();
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .top_level("rules_files: [./rules/*.yaml]");
    let list_file = r#"
- name: from-list-file
  match:
    issuer: k8s
    subject: "system:serviceaccount:ci:deployer"
    audiences: [target-a]
"#;
    let map_file = r#"
rules:
  - name: from-map-file
    match:
      issuer: k8s
      subject: "system:serviceaccount:ci:deployer"
      audiences: [target-b]
"#;
    let broker = Broker::builder()
        .file("rules/a.yaml", list_file)
        .file("rules/b.yaml", map_file)
        .file("rules/ignored.txt", "not: [yaml")
        .start(&config.render())
        .await;

    for target in ["target-a", "target-b"] {
        let reply = broker.exchange(&fake.mint(json!({})), target).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text);
    }
}
