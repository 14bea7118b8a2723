//! Helpers shared by the test modules.

use integration_tests::fake_issuer::{DEFAULT_AUDIENCE, DEFAULT_SUBJECT};
use integration_tests::{Broker, BrokerConfig, FakeIssuer};
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
