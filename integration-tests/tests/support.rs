//! Helpers shared by the test modules.

use std::sync::Arc;
use std::time::Duration;

use integration_tests::fake_issuer::{DEFAULT_AUDIENCE, DEFAULT_SUBJECT};
use integration_tests::redis_server::RedisServer;
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Http, InProcess, Reply, eventually};
use reqwest::Method;
use serde_json::{Value, json};

/// The audience the default rule grants.
pub const TARGET: &str = "target-a";

/// The name the fake issuer is registered under in [`default_config`].
pub const ISSUER_NAME: &str = "k8s";

/// One allow rule: the fake's default subject may get `target-a`, 10 minutes.
pub fn default_rule() -> String {
    format!(
        r#"
        - name: ci-deployer
          match:
            issuer: {ISSUER_NAME}
            subject: "{DEFAULT_SUBJECT}"
            audiences: [{TARGET}]
          issue:
            lifetime: 10m
        "#
    )
}

/// The fake registered as `k8s`, plus `rules`.
pub fn config_with_rules(fake: &FakeIssuer, rules: &str) -> BrokerConfig {
    BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(rules)
}

/// A broker trusting `fake` as `k8s`, with `rules`.
pub async fn broker_with_rules(fake: &FakeIssuer, rules: &str) -> Broker {
    Broker::start(&config_with_rules(fake, rules).render()).await
}

/// A broker trusting `fake` as `k8s`, with [`default_rule`].
pub async fn default_broker(fake: &FakeIssuer) -> Broker {
    broker_with_rules(fake, &default_rule()).await
}

/// The broker's router in this process, trusting `fake` as `k8s`, with `rules`.
pub async fn app_with_rules(fake: &FakeIssuer, rules: &str) -> InProcess {
    InProcess::start(&config_with_rules(fake, rules).render()).await
}

/// The broker's router in this process, trusting `fake` as `k8s`, with [`default_rule`].
pub async fn default_app(fake: &FakeIssuer) -> InProcess {
    app_with_rules(fake, &default_rule()).await
}

/// A string claim of a JSON object, or a panic naming it.
pub fn str_claim<'a>(claims: &'a serde_json::Value, name: &str) -> &'a str {
    claims[name]
        .as_str()
        .unwrap_or_else(|| panic!("claim {name} is not a string in {claims}"))
}

/// An issuer as the admin API takes it: the fake issuer, `reusable` (exchanges need no
/// replay mark), reachable over plain HTTP on loopback.
pub fn issuer_body(fake: &FakeIssuer) -> Value {
    json!({
        "issuer": fake.issuer(),
        "audiences": [DEFAULT_AUDIENCE],
        "algorithms": ["RS256"],
        "replay": "reusable",
        "danger_allow_insecure": true,
    })
}

/// An allow rule as the admin API takes it: the fake's default subject, through
/// `issuer`, may get `target`.
pub fn rule_body(issuer: &str, target: &str) -> Value {
    json!({
        "match": {"issuer": issuer, "subject": DEFAULT_SUBJECT, "audiences": [target]},
        "issue": {"lifetime": "5m"},
    })
}

/// Exchange `copies` copies of `token` for [`TARGET`] at once, in turn through each of
/// `brokers`: exactly one may succeed; every other answer is a 400 `invalid_request`
/// that does not echo the token.
pub async fn assert_one_of_concurrent_copies(brokers: &[Arc<Broker>], token: &str, copies: usize) {
    let token: Arc<str> = Arc::from(token);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..copies {
        let broker = brokers[i % brokers.len()].clone();
        let token = token.clone();
        tasks.spawn(async move { broker.exchange(&token, TARGET).await });
    }
    let replies = tasks.join_all().await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        1,
        "exactly one of {copies} concurrent copies through {} broker(s) may exchange: {replies:#?}",
        brokers.len()
    );
    for reply in replies.iter().filter(|r| r.status != 200) {
        reply.assert_error(400, "invalid_request", &token);
    }
}

/// The status of an exchange of a fresh default token from `fake` for `target`.
pub async fn exchange_status(broker: &Http, fake: &FakeIssuer, target: &str) -> u16 {
    broker.exchange(&fake.mint(json!({})), target).await.status
}

// The admin API, and its state in Redis (the admin and replica tests).

/// `admin.tokens` of the brokers that [`admin_send`] talks to.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef-shared";

/// `admin.state_hmac_key`, the same on every replica.
pub const HMAC_KEY: &str = "hmac-key-0123456789abcdef0123456789abcdef";

/// Where the admin state is in Redis, under the default key prefix.
pub const STATE_KEY: &str = "fedbroker:replay:admin:state";

/// An admin API request with [`ADMIN_TOKEN`].
pub async fn admin_send(
    broker: &Http,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    broker
        .admin_request(ADMIN_TOKEN, method, path, headers, body)
        .await
}

/// The sorted names of `/admin/v1/{kind}`.
pub async fn admin_names(broker: &Http, kind: &str) -> Vec<String> {
    let reply = admin_send(broker, Method::GET, &format!("/admin/v1/{kind}"), &[], None).await;
    assert_eq!(reply.status, 200, "GET {kind}: {reply:?}");
    let mut names: Vec<String> = reply
        .json
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|item| item["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

/// Start a replica and wait (15 s) until `/readyz` answers 200 (it has read the admin
/// state from Redis).
pub async fn ready_replica(yaml: &str) -> Broker {
    let broker = Broker::start(yaml).await;
    wait_ready(&broker).await;
    broker
}

/// Wait (15 s) until `/readyz` answers 200.
pub async fn wait_ready(broker: &Http) {
    eventually(Duration::from_secs(15), "/readyz 200", || async {
        (broker.get("/readyz").await.status == 200).then_some(())
    })
    .await;
}

/// `HGET STATE_KEY field` through redis-cli.
pub fn hget(redis: &RedisServer, field: &str) -> String {
    redis.cli(&["HGET", STATE_KEY, field]).trim().to_owned()
}

/// The MAC a broker holding `key` writes for `state_json` as `version` (without an
/// `epoch`; README "Running replicas").
pub fn state_mac(key: &str, version: u64, state_json: &str) -> String {
    let mut input = b"fedbroker-admin-state-v1\0".to_vec();
    input.extend_from_slice(STATE_KEY.as_bytes());
    input.push(0);
    input.extend_from_slice(version.to_string().as_bytes());
    input.push(0);
    input.extend_from_slice(state_json.as_bytes());
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes());
    integration_tests::tokens::hex(aws_lc_rs::hmac::sign(&key, &input).as_ref())
}

/// The audit lines of `broker` with `event` about `name`.
pub fn change_lines(broker: &Broker, event: &str, name: &str) -> Vec<Value> {
    broker
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == event && l["name"] == name)
        .collect()
}
