//! Rate limits at `/token` (`limits:`) through the real binary: per subject, per issuer
//! and per client address, answered 429 with `Retry-After`, counted in `/metrics`;
//! forged tokens spend no issuer's budget; with Redis, replicas share the counters.

use integration_tests::redis_server::RedisServer;
use integration_tests::{Broker, BrokerConfig, FakeIssuer, KeyKind, Reply, SigningKey};
use serde_json::json;

use crate::support::{ISSUER_NAME, TARGET};

/// The fake as `k8s`, any subject allowed to `target-a`, with `limits` (and `extra`
/// top-level YAML).
fn limited_config(fake: &FakeIssuer, limits: &str, extra: &str) -> String {
    let rule = format!(
        "- name: any\n  match:\n    issuer: {ISSUER_NAME}\n    allow_any_subject: true\n    audiences: [{TARGET}]\n"
    );
    BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(rule)
        .top_level(format!("limits:\n{limits}{extra}"))
        .render()
}

fn assert_limited(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 429, "{what}: {reply:?}");
    assert_eq!(
        reply.json["error"], "temporarily_unavailable",
        "{what}: {reply:?}"
    );
    let retry: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: 429 without a Retry-After in seconds: {reply:?}"));
    assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
}

async fn exchange_as(broker: &Broker, fake: &FakeIssuer, sub: &str) -> Reply {
    broker.exchange(&fake.mint(json!({"sub": sub})), TARGET).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_subject_limits_answer_429_with_retry_after() {
    let fake = FakeIssuer::start();
    let broker = Broker::start(&limited_config(&fake, "  per_subject: 2/m\n", "")).await;
    for i in 0..2 {
        let reply = exchange_as(&broker, &fake, "alice").await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
    }
    let token = fake.mint(json!({"sub": "alice"}));
    let reply = broker.exchange(&token, TARGET).await;
    assert_limited(&reply, "alice's third in a minute");
    assert!(!reply.text.contains(&token));
    // Another subject has its own budget.
    let reply = exchange_as(&broker, &fake, "bob").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // The refusal is audited and counted; the home token was not spent (no replay mark).
    let lines = broker.wait_for_audit_lines(4).await;
    let refused = lines
        .iter()
        .find(|l| l["reason"].as_str().is_some_and(|r| r.contains("per_subject")))
        .unwrap_or_else(|| panic!("no audit line names the limit: {lines:?}"));
    assert_eq!(refused["error"], "temporarily_unavailable");
    assert!(refused.get("replay").is_none_or(|r| r.is_null()), "{refused}");
    let metrics = broker.get("/metrics").await.text;
    assert!(
        metrics.contains("fedbroker_rate_limited_total{limit=\"per_subject\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_issuer_limits_count_verified_tokens_only() {
    let fake = FakeIssuer::start();
    let broker = Broker::start(&limited_config(&fake, "  per_issuer: 2/m\n", "")).await;
    // Forged tokens with the issuer's `iss` are refused and spend nothing.
    let stranger = SigningKey::generate(KeyKind::Rsa);
    for _ in 0..5 {
        let forged = fake.mint_with_key(&stranger, json!({}), json!({"sub": "mallory"}));
        let reply = broker.exchange(&forged, TARGET).await;
        assert_eq!(reply.status, 400, "{reply:?}");
    }
    for sub in ["a", "b"] {
        let reply = exchange_as(&broker, &fake, sub).await;
        assert_eq!(reply.status, 200, "{sub}: {reply:?}");
    }
    let reply = exchange_as(&broker, &fake, "c").await;
    assert_limited(&reply, "the issuer's third in a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_address_limits_refuse_before_the_body_is_read() {
    let fake = FakeIssuer::start();
    let broker = Broker::start(&limited_config(&fake, "  per_client_address: 3/m\n", "")).await;
    for i in 0..3 {
        let reply = broker.post_form("/token", &[("grant_type", "nonsense")]).await;
        assert_eq!(reply.status, 400, "request {i}: {reply:?}");
    }
    let reply = exchange_as(&broker, &fake, "alice").await;
    assert_limited(&reply, "the address's fourth in a minute");
    // Other routes are not limited.
    assert_eq!(broker.get("/jwks.json").await.status, 200);
}

#[test]
fn limits_are_checked() {
    let fake = FakeIssuer::start();
    for (limits, message) in [
        ("  per_subject: 10\n", "limits.per_subject"),
        ("  per_issuer: 0/s\n", "limits.per_issuer"),
        ("  per_client_address: 5/d\n", "unknown unit"),
        ("  per_tenant: 5/s\n", "unknown field `per_tenant`"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = limited_config(&fake, limits, "")
            .replace("@DIR@", dir.path().to_str().expect("UTF-8"))
            .replace("@PORT@", "18080");
        let path = dir.path().join("fedbroker.yaml");
        std::fs::write(&path, text).expect("write");
        let out = integration_tests::run_cli_in(
            dir.path(),
            &["check", "--config", path.to_str().expect("UTF-8")],
            &[],
        );
        assert_eq!(out.code, Some(1), "{limits}: {}", out.all());
        assert!(
            out.all().contains(message),
            "{limits} / {message}:\n{}",
            out.all()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_limits_through_redis() {
    let redis = RedisServer::start();
    let fake = FakeIssuer::start();
    let keys = tempfile::tempdir().expect("key dir");
    let replay = format!(
        "replay:\n  backend: redis\n  redis_url: {}\n  command_timeout: 1s\n  replicas: 2\n",
        redis.url()
    );
    let config = limited_config(&fake, "  per_subject: 2/m\n", &replay).replace(
        "key_dir: @DIR@/keys",
        &format!("key_dir: {}", keys.path().display()),
    );
    let a = Broker::start(&config).await;
    let b = Broker::start(&config).await;
    assert_eq!(exchange_as(&a, &fake, "alice").await.status, 200);
    assert_eq!(exchange_as(&b, &fake, "alice").await.status, 200);
    // Alice's third, on either replica: the count is shared.
    assert_limited(&exchange_as(&a, &fake, "alice").await, "third on replica a");
    assert_limited(&exchange_as(&b, &fake, "alice").await, "fourth on replica b");
    assert_eq!(exchange_as(&b, &fake, "bob").await.status, 200);
}
