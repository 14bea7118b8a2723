//! How the broker obtains issuer keys: discovery, caching, coalesced refetch on
//! an unknown kid with a cooldown, surviving outages, static key sources.

use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::tokens::random_hex;
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Reply};
use serde_json::json;

use crate::support::{ISSUER_NAME, TARGET, default_broker, default_rule};

/// Exchange fresh tokens from `fake` until one succeeds (`timeout`), or panic with the last answer.
async fn exchange_until_ok(broker: &Broker, fake: &FakeIssuer, timeout: Duration) -> Reply {
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
    let broker = default_broker(&fake).await;

    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(fake.discovery_requests() >= 1, "discovery was not used");
    assert!(fake.jwks_requests() >= 1, "the JWKS was not fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_uri_skips_discovery() {
    let fake = FakeIssuer::start();
    let issuer = fake.issuer_yaml_with(ISSUER_NAME, &format!("jwks_uri: {}", fake.jwks_uri()));
    let broker = Broker::start(&BrokerConfig::new().issuer(issuer).rules(default_rule()).render()).await;

    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(fake.discovery_requests(), 0);
    assert!(fake.jwks_requests() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kid_triggers_one_coalesced_refetch() {
    let fake = Arc::new(FakeIssuer::start());
    let broker = Arc::new(default_broker(&fake).await);
    let warm = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(warm.status, 200, "{}", warm.text);
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
    for _ in 0..5 {
        let token = fake.mint_with_header(json!({"kid": random_hex(8)}), json!({}));
        broker
            .exchange(&token, TARGET)
            .await
            .assert_error(400, "invalid_request", &token);
    }
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
    let warm = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(warm.status, 200, "{}", warm.text);
    let fetches_before = fake.jwks_requests();

    for _ in 0..5 {
        let token = fake.mint_with_header(json!({"kid": random_hex(8)}), json!({}));
        let reply = broker.exchange(&token, TARGET).await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert!(!reply.text.contains(&token));
    }

    let fetched = fake.jwks_requests() - fetches_before;
    assert!(
        fetched <= 1,
        "{fetched} JWKS fetches for 5 unknown kids within the cooldown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_keep_working_through_an_issuer_outage() {
    let fake = FakeIssuer::start();
    let broker = default_broker(&fake).await;
    let warm = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(warm.status, 200, "{}", warm.text);

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
    let issuer = fake.issuer_yaml_with(ISSUER_NAME, &format!("jwks: {jwks}"));
    let broker = Broker::start(&BrokerConfig::new().issuer(issuer).rules(default_rule()).render()).await;

    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!((fake.discovery_requests(), fake.jwks_requests()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_issuer_needs_no_network() {
    let fake = FakeIssuer::start();
    let jwks = serde_json::to_string_pretty(&fake.jwks()).expect("JWKS JSON");
    let issuer = fake.issuer_yaml_with(ISSUER_NAME, "jwks_file: @DIR@/issuer-keys.json");
    let broker = Broker::builder()
        .file("issuer-keys.json", &jwks)
        .start(&BrokerConfig::new().issuer(issuer).rules(default_rule()).render())
        .await;

    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!((fake.discovery_requests(), fake.jwks_requests()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_is_reloaded_when_it_changes() {
    let fake = FakeIssuer::start();
    let jwks = serde_json::to_string(&fake.jwks()).expect("JWKS JSON");
    let issuer = fake.issuer_yaml_with(ISSUER_NAME, "jwks_file: @DIR@/issuer-keys.json");
    let broker = Broker::builder()
        .file("issuer-keys.json", &jwks)
        .start(&BrokerConfig::new().issuer(issuer).rules(default_rule()).render())
        .await;
    assert_eq!(broker.exchange(&fake.mint(json!({})), TARGET).await.status, 200);

    fake.rotate(true);
    let path = broker.dir().join("issuer-keys.json");
    let new_jwks = serde_json::to_string(&fake.jwks()).expect("JWKS JSON");
    // Replace atomically, as deployment tools do.
    let tmp = broker.dir().join("issuer-keys.json.tmp");
    std::fs::write(&tmp, new_jwks).expect("write JWKS");
    std::fs::rename(&tmp, &path).expect("replace JWKS");

    exchange_until_ok(&broker, &fake, Duration::from_secs(60)).await;
    assert_eq!((fake.discovery_requests(), fake.jwks_requests()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_naming_another_issuer_is_not_trusted() {
    let fake = FakeIssuer::start();
    fake.set_discovery_issuer(Some("https://evil.example.com"));
    let broker = default_broker(&fake).await;
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
    let broker = Broker::start(&config.render()).await;

    let ready = broker.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert!(ready.json.is_object(), "readyz body is JSON: {}", ready.text);
    let token = down.mint(json!({}));
    broker
        .exchange(&token, TARGET)
        .await
        .assert_error(503, "temporarily_unavailable", &token);
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
    let broker = default_broker(&fake).await;
    let token = fake.mint(json!({}));
    broker
        .exchange(&token, TARGET)
        .await
        .assert_error(503, "temporarily_unavailable", &token);

    fake.set_outage(false);

    exchange_until_ok(&broker, &fake, Duration::from_secs(90)).await;
}
