//! How the broker obtains issuer keys: discovery, caching, coalesced refetch on
//! an unknown kid with a cooldown, surviving outages, static key sources.
//!
//! Against the broker's router in this process (the fake issuers still serve their
//! keys over HTTP), but for a key file that changes under a running broker, the
//! refetch cooldown and an issuer down at start, which need `serve` (its background
//! fetch at start).

use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::tokens::random_hex;
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Http, Reply};
use serde_json::json;

use crate::support::{
    ISSUER_NAME, TARGET, app_with_issuer_extra, config_with_issuer_extra, default_app, default_broker,
    default_rule,
};

/// A fresh token from `fake` exchanges at `broker`.
async fn assert_exchanges(broker: &Http, fake: &FakeIssuer) {
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// Five tokens from `fake` under kids it never published: each a 400
/// `invalid_request` that does not echo the token.
async fn refuse_unknown_kids(broker: &Http, fake: &FakeIssuer) {
    for _ in 0..5 {
        let token = fake.mint_with_header(json!({"kid": random_hex(8)}), json!({}));
        broker
            .exchange_refused(&token, TARGET, 400, "invalid_request")
            .await;
    }
}

/// Exchange fresh tokens from `fake` until one succeeds (`timeout`), or panic with the last answer.
async fn exchange_until_ok(broker: &Http, fake: &FakeIssuer, timeout: Duration) -> Reply {
    let deadline = Instant::now() + timeout;
    loop {
        let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
        if reply.status == 200 {
            return reply;
        }
        if Instant::now() > deadline {
            panic!(
                "no successful exchange within {timeout:?}; last: {} {}\n{}",
                reply.status,
                reply.text,
                broker.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_locates_the_issuer_jwks() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;

    assert_exchanges(&broker, &fake).await;

    assert!(fake.discovery_requests() >= 1, "discovery was not used");
    assert!(fake.jwks_requests() >= 1, "the JWKS was not fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_uri_skips_discovery() {
    let fake = FakeIssuer::start();
    let extra = format!("jwks_uri: {}", fake.jwks_uri());
    let broker = app_with_issuer_extra(&fake, &extra).await;

    assert_exchanges(&broker, &fake).await;

    assert_eq!(fake.discovery_requests(), 0);
    assert!(fake.jwks_requests() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kid_triggers_one_coalesced_refetch() {
    let fake = Arc::new(FakeIssuer::start());
    // A process: `serve` fetches the keys in the background at start, so the warm-up
    // exchange below is no on-demand fetch and the cooldown is still unspent.
    let broker = Arc::new(default_broker(&fake).await);
    assert_exchanges(&broker, &fake).await;
    let fetches_before = fake.jwks_requests();

    // The issuer rotates after the broker cached its old key set; ten requests
    // with the new kid arrive at once.
    fake.rotate(false);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (broker, token) = (broker.clone(), fake.mint(json!({})));
        tasks.spawn(async move { broker.exchange(&token, TARGET).await });
    }
    let replies = tasks.join_all().await;

    let failed: Vec<String> = replies
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| format!("{} {}", r.status, r.text))
        .collect();
    assert!(
        failed.is_empty(),
        "tokens with the new kid refused: {failed:#?}\n--- broker stderr ---\n{}",
        broker.stderr()
    );
    assert_eq!(
        fake.jwks_requests(),
        fetches_before + 1,
        "one coalesced refetch for ten requests"
    );

    // Within the cooldown, more unknown kids fetch nothing.
    refuse_unknown_kids(&broker, &fake).await;
    assert_eq!(
        fake.jwks_requests(),
        fetches_before + 1,
        "no refetch within the cooldown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_within_cooldown_cause_at_most_one_fetch() {
    let fake = FakeIssuer::start();
    let broker = default_broker(&fake).await;
    assert_exchanges(&broker, &fake).await;
    let fetches_before = fake.jwks_requests();

    refuse_unknown_kids(&broker, &fake).await;

    let fetched = fake.jwks_requests() - fetches_before;
    assert!(
        fetched <= 1,
        "{fetched} JWKS fetches for 5 unknown kids within the cooldown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_keep_working_through_an_issuer_outage() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    assert_exchanges(&broker, &fake).await;

    fake.set_outage(true);

    for _ in 0..3 {
        let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
        assert_eq!(reply.status, 200, "cached key during outage: {}", reply.text);
    }
    assert_eq!(broker.get("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_jwks_issuer_needs_no_network() {
    let fake = FakeIssuer::start();
    let jwks = serde_json::to_string(&fake.jwks()).expect("JWKS JSON");
    let broker = app_with_issuer_extra(&fake, &format!("jwks: {jwks}")).await;

    assert_exchanges(&broker, &fake).await;
    assert_eq!(fake.key_fetches(), (0, 0));
}

/// A broker process whose `k8s` issuer's keys are `jwks` in `issuer-keys.json` beside
/// its config.
async fn jwks_file_broker(fake: &FakeIssuer, jwks: &str) -> Broker {
    Broker::builder()
        .file("issuer-keys.json", jwks)
        .start(&config_with_issuer_extra(fake, "jwks_file: @DIR@/issuer-keys.json").render())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_issuer_needs_no_network() {
    let fake = FakeIssuer::start();
    let broker = jwks_file_broker(
        &fake,
        &serde_json::to_string_pretty(&fake.jwks()).expect("JWKS JSON"),
    )
    .await;

    assert_exchanges(&broker, &fake).await;
    assert_eq!(fake.key_fetches(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_is_reloaded_when_it_changes() {
    let fake = FakeIssuer::start();
    let broker = jwks_file_broker(&fake, &serde_json::to_string(&fake.jwks()).expect("JWKS JSON")).await;
    assert_exchanges(&broker, &fake).await;

    fake.rotate(true);
    let path = broker.dir().join("issuer-keys.json");
    let new_jwks = serde_json::to_string(&fake.jwks()).expect("JWKS JSON");
    // Replace atomically, as deployment tools do.
    let tmp = broker.dir().join("issuer-keys.json.tmp");
    std::fs::write(&tmp, new_jwks).expect("write JWKS");
    std::fs::rename(&tmp, &path).expect("replace JWKS");

    exchange_until_ok(&broker, &fake, Duration::from_secs(60)).await;
    assert_eq!(fake.key_fetches(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_naming_another_issuer_is_not_trusted() {
    let fake = FakeIssuer::start();
    fake.set_discovery_issuer(Some("https://evil.example.com"));
    let broker = default_app(&fake).await;
    let token = fake.mint(json!({}));

    let reply = broker.exchange(&token, TARGET).await;

    assert_ne!(
        reply.status, 200,
        "keys from a discovery document for another issuer were used"
    );
    assert!(
        [(400, "invalid_request"), (503, "temporarily_unavailable")]
            .contains(&(reply.status, reply.json["error"].as_str().unwrap_or(""))),
        "{} {}",
        reply.status,
        reply.text
    );
    assert!(!reply.text.contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_issuer_outage_does_not_take_the_broker_or_other_issuers_down() {
    let down = FakeIssuer::start();
    down.set_outage(true);
    let up = FakeIssuer::start();
    let rules = format!(
        "{}{}",
        default_rule(),
        r#"
        - name: other-issuer
          match:
            issuer: up
            subject: "system:serviceaccount:ci:deployer"
            audiences: [target-a]
        "#
    );
    let config = BrokerConfig::new()
        .issuer(down.issuer_yaml(ISSUER_NAME))
        .issuer(up.issuer_yaml("up"))
        .rules(rules);
    // A real `serve`, started while one issuer is down.
    let broker = Broker::start(&config.render()).await;

    let ready = broker.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert!(ready.json.is_object(), "readyz body is JSON: {}", ready.text);
    let token = down.mint(json!({}));
    broker
        .exchange_refused(&token, TARGET, 503, "temporarily_unavailable")
        .await;
    let reply = broker.exchange(&up.mint(json!({})), TARGET).await;
    assert_eq!(
        reply.status, 200,
        "the healthy issuer still works: {}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_an_unreachable_issuer_comes_back() {
    let fake = FakeIssuer::start();
    fake.set_outage(true);
    let broker = default_app(&fake).await;
    let token = fake.mint(json!({}));
    broker
        .exchange_refused(&token, TARGET, 503, "temporarily_unavailable")
        .await;

    fake.set_outage(false);

    exchange_until_ok(&broker, &fake, Duration::from_secs(90)).await;
}
