//! Replay protection that cannot be walked around, and requests that cannot cost much
//! (issue 9, §2 and part of §5):
//! - a token without `jti` is marked by what its signer signed, so a malleated ECDSA
//!   signature (r, n − s) is the same token;
//! - an empty `jti` is no `jti`;
//! - a mark outlives the acceptance window verification applied, even after a reload
//!   that raises `clock_skew`, with a margin for the Redis clock;
//! - only allowed requests are marked;
//! - `audience`/`resource` are capped, and a request refused before its token verified
//!   audits a digest of its targets, not the targets;
//! - every issued token names its source issuer.
//!
//! What needs no process (the memory replay store, audit lines, caps) runs against the
//! broker's router in this process; a reload and Redis need the real binary.

use std::path::Path;
use std::time::Duration;

use integration_tests::redis_server::RedisServer;
use integration_tests::tokens::{es256_with_s_negated, now, sha256_hex, verify_issued};
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Http, KeyKind, Reply, eventually, exchange_form};
use serde_json::{Value, json};

use crate::support::{
    ISSUER_NAME, TARGET, app_with_rules, default_app, default_app_and_token, default_rule, redis_or_skip,
};

const REPLAYED: &str = "subject_token has already been used";

/// The audit line of the last `/token` decision.
fn last_audit(broker: &Http) -> Value {
    broker
        .audit_lines()
        .pop()
        .unwrap_or_else(|| panic!("no audit line\n{}", broker.stderr()))
}

/// A second exchange of `token` for [`TARGET`]: refused as replayed.
async fn assert_replayed(broker: &Http, token: &str) {
    let reply = broker.exchange(token, TARGET).await;
    reply.assert_error(400, "invalid_request", token);
    let audit = last_audit(broker);
    assert_eq!(audit["reason"], REPLAYED, "refused as replayed: {audit}");
}

/// An exchange of `token` for [`TARGET`] that must succeed (`what`, for the message).
async fn exchange_ok(broker: &Http, token: &str, what: &str) -> Reply {
    let reply = broker.exchange(token, TARGET).await;
    assert_ok(broker, &reply, what);
    reply
}

fn assert_ok(broker: &Http, reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        200,
        "{what}: {}\n--- stderr ---\n{}",
        reply.text,
        broker.stderr()
    );
}

/// `/readyz`'s `rules.generation`.
async fn generation(broker: &Broker) -> u64 {
    let reply = broker.get("/readyz").await;
    reply.json["rules"]["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("/readyz has no rules.generation: {reply:?}"))
}

/// Rewrite the broker's config file (placeholders filled) and poll until it is loaded.
async fn reload_config(broker: &Broker, config: &BrokerConfig) {
    let before = generation(broker).await;
    let text = config
        .render()
        .replace("@PORT@", &broker.port().to_string())
        .replace("@DIR@", broker.dir().to_str().expect("UTF-8 dir"));
    write_via_rename(&broker.dir().join("fedbroker.yaml"), &text);
    let rules = eventually(Duration::from_secs(10), "the config reloaded", || async {
        let rules = broker.get("/readyz").await.json["rules"].clone();
        rules["generation"]
            .as_u64()
            .is_some_and(|g| g > before)
            .then_some(rules)
    })
    .await;
    assert!(rules["last_reload_error"].is_null(), "reload failed: {rules}");
}

/// The last audit line is under 1,000 bytes (`huge` targets did not go into it);
/// returns it.
fn small_last_audit(broker: &Http) -> Value {
    let text = broker.audit_text();
    let line = text.lines().last().expect("an audit line");
    assert!(
        line.len() < 1_000,
        "audit line of {} bytes: {line:.300}",
        line.len()
    );
    serde_json::from_str(line).expect("JSON")
}

fn write_via_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_token_without_jti_is_refused_with_its_signature_malleated() {
    let fake = FakeIssuer::start_with(KeyKind::Ec);
    let broker = default_app(&fake).await;
    let token = fake.mint(json!({"jti": null}));
    let twin = es256_with_s_negated(&token);
    assert_ne!(token, twin);

    exchange_ok(&broker, &token, "first use").await;
    // The twin verifies (it gets as far as the replay check) and is the same token.
    assert_replayed(&broker, &twin).await;
    assert_replayed(&broker, &token).await;

    // The twin on its own is a valid token: a fresh broker accepts it once.
    let other = default_app(&fake).await;
    exchange_ok(&other, &twin, "twin at a fresh broker").await;
    assert_replayed(&other, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_an_empty_jti_do_not_share_one_mark() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let first = fake.mint(json!({"jti": "", "n": 1}));
    let second = fake.mint(json!({"jti": "", "n": 2}));

    exchange_ok(&broker, &first, "first token").await;
    exchange_ok(&broker, &second, "second token").await;
    // Each is still one-time, and audited by digest (an empty jti names nothing).
    assert_eq!(last_audit(&broker)["jti"], sha256_hex(second.as_bytes()));
    assert_replayed(&broker, &first).await;
    assert_replayed(&broker, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_raises_clock_skew_keeps_the_mark_for_the_whole_window() {
    let fake = FakeIssuer::start();
    let config = |skew: &str| {
        BrokerConfig::new()
            .server(&format!("clock_skew: {skew}"))
            .issuer(fake.issuer_yaml(ISSUER_NAME))
            .rules(default_rule())
    };
    let broker = Broker::start(&config("60s").render()).await;
    // Expired 5 minutes ago: outside a 60 s skew, inside a 600 s one.
    let now = now();
    let token = fake.mint(json!({"iat": now - 400, "exp": now - 300}));
    broker
        .exchange_refused(&token, TARGET, 400, "invalid_request")
        .await;

    reload_config(&broker, &config("600s")).await;
    exchange_ok(&broker, &token, "within the new skew").await;
    assert_replayed(&broker, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_by_the_rules_is_not_marked() {
    let (_fake, broker, token) = default_app_and_token().await;

    broker
        .exchange_refused(&token, "not-granted", 400, "invalid_target")
        .await;
    let denial = last_audit(&broker);
    assert!(
        denial.get("replay").is_none(),
        "a refusal records no mark: {denial}"
    );

    // The same token is still good, once, for a target the rules grant.
    exchange_ok(&broker, &token, "allowed target").await;
    assert_eq!(last_audit(&broker)["replay"], "recorded");
    assert_replayed(&broker, &token).await;
}

/// The Redis key of a token's mark (`jti` present, default prefix).
fn redis_key(iss: &str, jti: &str) -> String {
    let mut input = b"jti\0".to_vec();
    input.extend_from_slice(iss.as_bytes());
    input.push(0);
    input.extend_from_slice(jti.as_bytes());
    format!("fedbroker:replay:{}", sha256_hex(&input))
}

/// A broker on `fake` (rules: [`default_rule`]) whose marks go to `redis`.
fn redis_config(fake: &FakeIssuer, redis: &RedisServer, skew: &str) -> BrokerConfig {
    BrokerConfig::new()
        .server(&format!("clock_skew: {skew}"))
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(default_rule())
        .top_level(format!(
            "replay:\n  backend: redis\n  redis_url: {}\n  command_timeout: 1s\n",
            redis.url()
        ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_marks_expire_two_seconds_after_the_window_the_request_was_verified_with() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let fake = FakeIssuer::start();
    let broker = Broker::start(&redis_config(&fake, &redis, "60s").render()).await;
    let expires_at_ms = |key: &str| -> i64 {
        let out = redis.cli(&["PEXPIRETIME", key]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("PEXPIRETIME {key}: {out}"))
    };

    let exp = now() + 300;
    let token = fake.mint(json!({"jti": "a", "exp": exp}));
    exchange_ok(&broker, &token, "skew 60s").await;
    assert_eq!(
        expires_at_ms(&redis_key(fake.issuer(), "a")),
        (exp + 60 + 2) * 1000,
        "exp + skew + 2 s margin"
    );

    reload_config(&broker, &redis_config(&fake, &redis, "600s")).await;
    let token = fake.mint(json!({"jti": "b", "exp": exp}));
    exchange_ok(&broker, &token, "skew 600s").await;
    assert_eq!(
        expires_at_ms(&redis_key(fake.issuer(), "b")),
        (exp + 600 + 2) * 1000,
        "the reloaded skew, the one verification used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_by_the_rules_writes_nothing_to_redis() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let fake = FakeIssuer::start();
    let broker = Broker::start(&redis_config(&fake, &redis, "60s").render()).await;
    for target in ["not-granted", "also-not-granted"] {
        let token = fake.mint(json!({}));
        broker
            .exchange_refused(&token, target, 400, "invalid_target")
            .await;
    }
    assert_eq!(
        redis.cli(&["DBSIZE"]).trim(),
        "0",
        "a refused request left a mark"
    );
    exchange_ok(&broker, &fake.mint(json!({})), "allowed").await;
    assert_eq!(
        redis.cli(&["DBSIZE"]).trim(),
        "1",
        "the allowed request is marked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_and_resource_values_are_capped_in_number_and_length() {
    let fake = FakeIssuer::start();
    let rules = default_rule().replace(&format!("[{TARGET}]"), &format!("[{TARGET}, r0]"));
    let broker = app_with_rules(&fake, &rules).await;
    let token = fake.mint(json!({}));

    let many: Vec<String> = (0..33).map(|i| format!("a{i}")).collect();
    for name in ["audience", "resource"] {
        let mut form = exchange_form(&token, TARGET);
        form.extend(many.iter().map(|a| (name, a.as_str())));
        broker
            .token_request(&form)
            .await
            .assert_error(400, "invalid_request", &token);
    }
    let long = "x".repeat(1025);
    let mut form = exchange_form(&token, TARGET);
    form.push(("resource", &long));
    broker
        .token_request(&form)
        .await
        .assert_error(400, "invalid_request", &token);

    // At the count cap (32 `audience` values, repeats deduplicated): accepted.
    let mut form = exchange_form(&token, TARGET);
    form.extend(std::iter::repeat_n(("audience", TARGET), 31));
    form.push(("resource", "r0"));
    let reply = broker.token_request(&form).await;
    assert_ok(&broker, &reply, "at the cap");
    verify_issued(&broker, reply.access_token(), &[TARGET, "r0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_before_verification_audits_a_digest_of_its_targets() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let bad = "eyJhbGciOiJub25lIn0.e30.";

    // One 60,000-byte audience: refused, and the audit line stays small.
    let huge = "a".repeat(60_000);
    broker.exchange_refused(bad, &huge, 400, "invalid_request").await;
    small_last_audit(&broker);

    // 32 audiences of 1,000 bytes each (within the caps) with a bad token: a digest.
    let targets: Vec<String> = (0..32).map(|i| format!("{i:02}{}", "t".repeat(998))).collect();
    let mut form = exchange_form(bad, &targets[0]);
    form.extend(targets[1..].iter().map(|t| ("audience", t.as_str())));
    broker
        .token_request(&form)
        .await
        .assert_error(400, "invalid_request", bad);
    let audit = small_last_audit(&broker);
    assert!(audit.get("target").is_none(), "{audit}");
    let array = serde_json::to_string(&targets).expect("JSON");
    assert_eq!(audit["target_digest"], sha256_hex(array.as_bytes()), "{audit}");

    // Once the token verified, the targets themselves.
    let token = fake.mint(json!({}));
    exchange_ok(&broker, &token, "valid").await;
    let audit = last_audit(&broker);
    assert_eq!(audit["target"], TARGET, "{audit}");
    assert!(audit.get("target_digest").is_none(), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_tokens_name_their_source_issuer() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let reply = exchange_ok(&broker, &fake.mint(json!({})), "exchange").await;
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["source_issuer"], ISSUER_NAME, "{claims}");
    let discovery = broker.get("/.well-known/openid-configuration").await;
    let supported = discovery.json["claims_supported"]
        .as_array()
        .expect("claims_supported");
    assert!(supported.contains(&json!("source_issuer")), "{}", discovery.text);
}
