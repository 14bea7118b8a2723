//! One-time use of subject tokens: the replay store under concurrency, and its
//! place in the pipeline (after verification, so forgeries cannot burn a jti).
//! Against the broker's router in this process (the memory replay store).

use std::sync::Arc;

use integration_tests::tokens::{decode_unverified, unsigned};
use integration_tests::{FakeIssuer, SigningKey};
use serde_json::json;

use crate::support::{
    TARGET, app_with_issuer_extra, app_with_rules, assert_exchanges_once, assert_one_of_concurrent_copies,
    default_app, default_app_and_token, default_rule,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejects_replayed_token_under_concurrency() {
    let fake = FakeIssuer::start();
    let broker = Arc::new(default_app(&fake).await);
    let token = fake.mint(json!({}));

    assert_one_of_concurrent_copies(&[broker], &token, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_token_replayed_for_another_audience() {
    let fake = FakeIssuer::start();
    let rules = default_rule().replace("[target-a]", "[target-a, target-b]");
    let broker = app_with_rules(&fake, &rules).await;
    let token = fake.mint(json!({}));

    assert_eq!(broker.exchange(&token, "target-a").await.status, 200);
    broker
        .exchange_refused(&token, "target-b", 400, "invalid_request")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusable_issuer_accepts_the_same_token_twice() {
    let fake = FakeIssuer::start();
    let broker = app_with_issuer_extra(&fake, "replay: reusable").await;
    let token = fake.mint(json!({}));

    for attempt in 1..=2 {
        let reply = broker.exchange(&token, TARGET).await;
        assert_eq!(reply.status, 200, "attempt {attempt}: {}", reply.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_is_the_default_and_explicit_one_time_behaves_the_same() {
    let fake = FakeIssuer::start();
    let broker = app_with_issuer_extra(&fake, "replay: one_time").await;
    let token = fake.mint(json!({}));

    assert_exchanges_once(&broker, &token, TARGET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_cannot_burn_a_jti() {
    let (fake, broker, token) = default_app_and_token().await;
    let (_, claims) = decode_unverified(&token);

    // Same claims (same jti), no valid signature: rejected before the replay mark.
    let forged_none = unsigned(&claims);
    broker
        .exchange_refused(&forged_none, TARGET, 400, "invalid_request")
        .await;
    let other_key = SigningKey::generate_with_kid(fake.key_kind(), &fake.current_key().kid);
    let forged_key = fake.mint_with_key(&other_key, json!({}), claims.clone());
    broker
        .exchange_refused(&forged_key, TARGET, 400, "invalid_request")
        .await;

    let reply = broker.exchange(&token, TARGET).await;
    assert_eq!(
        reply.status, 200,
        "the genuine token still exchanges once: {}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_does_not_consume_the_token() {
    let (_fake, broker, token) = default_app_and_token().await;

    // A malformed request carrying the token (no audience) does not consume it.
    let reply = broker
        .token_request(&integration_tests::exchange_form(&token, TARGET)[..3])
        .await;
    reply.assert_error(400, "invalid_request", &token);

    assert_eq!(broker.exchange(&token, TARGET).await.status, 200);
}
