//! The admin API with `replay.backend: redis`: the admin state lives in Redis (one hash
//! `<prefix>admin:state` with `version` and `state`, changes published on
//! `<prefix>admin:changed`), so every replica sharing the Redis serves the same
//! API-made issuers and rules. Covers a change on one replica reaching the other within
//! a second or two, a replica started later, concurrent changes with the same ETag
//! (one wins, one 412) and without (none lost), a Redis outage during a change (503,
//! nothing changes, the state written back after Redis restarts empty), and a broker
//! started while Redis is down.
//!
//! Without `redis-server` these tests fail naming it, unless
//! `FEDBROKER_SKIP_REDIS_TESTS=1` (see `integration_tests::redis_server`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::eventually_timed;
use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::redis_server::{RedisCluster, RedisServer, redis_available};
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Reply};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    HMAC_KEY, STATE_KEY, TARGET, admin_names as names, admin_put_expect, admin_send as send, exchange_status,
    hget, issuer_body, ready_replica as replica, redis_admin_sections, redis_or_skip, replicas_on_redis,
    rule_body, state_mac, wait_ready,
};

const CHANNEL: &str = "fedbroker:replay:admin:changed";

/// How long a change may take to reach another replica here: the broker promises a
/// second (pub/sub, or the once-a-second version check); the rest is slack for a busy
/// machine.
const PROPAGATION: Duration = Duration::from_secs(3);

/// A broker with no issuer and no rule of its own, the admin API on its main listener,
/// the replay marks (and so the admin state) in the Redis at `url`.
fn config(url: &str) -> String {
    config_with(&format!("redis_url: {url}\ncommand_timeout: 250ms"))
}

/// The same with `redis` (the Redis lines under `replay:`, after `backend: redis`, at
/// column 0).
fn config_with(redis: &str) -> String {
    BrokerConfig::new()
        .top_level(redis_admin_sections(&format!("{redis}\nreplicas: 3")))
        .render()
}

async fn put(broker: &Broker, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    send(broker, Method::PUT, path, headers, Some(body)).await
}

/// A PUT that must answer `status`; returns the ETag.
async fn put_expect(broker: &Broker, path: &str, body: &Value, status: u16) -> String {
    let reply = admin_put_expect(broker, path, body, status).await;
    reply.header("etag").expect("ETag").to_owned()
}

/// Create the fake (issuer `fake`) and rule `r1` for [`TARGET`] on `a`, and wait until
/// `b` allows the exchange; returns r1's ETag. `label` prefixes the timing printed.
async fn create_on_a_until_b_allows(a: &Broker, b: &Broker, fake: &FakeIssuer, label: &str) -> String {
    put_expect(a, "/admin/v1/issuers/fake", &issuer_body(fake), 201).await;
    let etag = put_expect(a, "/admin/v1/rules/r1", &rule_body("fake", TARGET), 201).await;
    let (_, took) = eventually_timed(
        PROPAGATION,
        "an exchange through B allowed by A's rule",
        || async { (exchange_status(b, fake, TARGET).await == 200).then_some(()) },
    )
    .await;
    eprintln!("{label}A's change allowed an exchange through B after {took:?}");
    etag
}

/// `body_a` through `a` and `body_b` through `b` to `path` at once, both with
/// `If-Match: etag`: one wins (200), the other is refused (412). Returns both answers.
async fn race_if_match(
    (a, b): (&Broker, &Broker),
    path: &str,
    etag: &str,
    (body_a, body_b): (&Value, &Value),
    label: &str,
) -> (Reply, Reply) {
    let if_match = [("if-match", etag)];
    let (ra, rb) = tokio::join!(put(a, path, body_a, &if_match), put(b, path, body_b, &if_match));
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert_eq!(statuses, [200, 412], "{label}A {ra:?}\nB {rb:?}");
    (ra, rb)
}

/// `DELETE /admin/v1/rules/r1` with `If-Match: etag`.
async fn delete_r1(broker: &Broker, etag: &str) -> Reply {
    send(
        broker,
        Method::DELETE,
        "/admin/v1/rules/r1",
        &[("if-match", etag)],
        None,
    )
    .await
}

/// Write `state` as `version` the way a replica holding [`HMAC_KEY`] does: with its
/// `mac` (README, "Running replicas").
fn hset_state(redis: &RedisServer, version: u64, state: &str) {
    let mac = state_mac(HMAC_KEY, version, state);
    let version = version.to_string();
    redis.cli(&[
        "HSET", STATE_KEY, "version", &version, "state", state, "mac", &mac,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_on_one_replica_reaches_the_others_within_a_second_and_a_later_replica_at_start() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let fake = FakeIssuer::start();
    let yaml = config(&redis.url());
    let a = replica(&yaml).await;
    let b = replica(&yaml).await;
    assert_eq!(
        exchange_status(&b, &fake, TARGET).await,
        400,
        "nothing allows it yet"
    );

    // An issuer and a rule made on A: B serves them within a second or two.
    create_on_a_until_b_allows(&a, &b, &fake, "").await;
    assert_eq!(names(&b, "issuers").await, ["fake"]);
    assert_eq!(names(&b, "rules").await, ["r1"]);

    // The documented layout: one hash, version and state.
    assert_eq!(hget(&redis, "version"), "2");
    let state: Value = serde_json::from_str(&hget(&redis, "state")).expect("state is JSON");
    assert_eq!(state["issuers"]["fake"]["issuer"], fake.issuer());
    assert_eq!(state["rules"]["r1"]["match"]["audiences"], json!([TARGET]));
    let readyz = b.get("/readyz").await.json;
    // The identity: the version and the epoch (random, chosen by the first write).
    assert_eq!(
        readyz["admin"],
        json!({"store": "redis", "synced": true, "version": 2, "epoch": hget(&redis, "epoch")})
    );
    assert_eq!(hget(&redis, "epoch").len(), 32);

    // Deleted on B: A stops allowing within a second or two.
    let reply = send(&b, Method::DELETE, "/admin/v1/rules/r1", &[], None).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let (_, took) = eventually_timed(PROPAGATION, "A refuses once B deleted the rule", || async {
        (exchange_status(&a, &fake, TARGET).await == 400).then_some(())
    })
    .await;
    eprintln!("B's delete reached A after {took:?}");
    assert_eq!(names(&a, "rules").await, Vec::<String>::new());

    // Each replica audited the change it made.
    let audited = |broker: &Broker| -> Vec<(String, String)> {
        broker
            .audit_lines()
            .into_iter()
            .filter(|l| l["event"] == "admin_change")
            .map(|l| {
                (
                    l["action"].as_str().unwrap_or_default().to_owned(),
                    l["name"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        audited(&a),
        [
            ("create".to_owned(), "fake".to_owned()),
            ("create".to_owned(), "r1".to_owned())
        ]
    );
    assert_eq!(audited(&b), [("delete".to_owned(), "r1".to_owned())]);

    // A replica started after the changes serves them as soon as it is ready.
    put_expect(&a, "/admin/v1/rules/r2", &rule_body("fake", "target-late"), 201).await;
    let c = replica(&yaml).await;
    assert_eq!(names(&c, "issuers").await, ["fake"]);
    assert_eq!(names(&c, "rules").await, ["r2"]);
    assert_eq!(exchange_status(&c, &fake, "target-late").await, 200);
    assert_eq!(exchange_status(&c, &fake, TARGET).await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_on_two_replicas_lose_nothing_and_one_if_match_wins() {
    let Some((redis, fake, a, b)) = replicas_on_redis(config).await else {
        return;
    };

    // Different rules created at once on both replicas: every one is kept.
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        for (replica, broker) in [("a", a.clone()), ("b", b.clone())] {
            let body = rule_body("fake", &format!("target-{i}"));
            tasks.spawn(async move {
                put(&broker, &format!("/admin/v1/rules/{replica}{i}"), &body, &[])
                    .await
                    .status
            });
        }
    }
    assert_eq!(tasks.join_all().await, [201; 20]);
    let mut expected: Vec<String> = (0..10).flat_map(|i| [format!("a{i}"), format!("b{i}")]).collect();
    expected.sort();
    assert_eq!(names(&a, "rules").await, expected);
    assert_eq!(names(&b, "rules").await, expected);
    assert_eq!(hget(&redis, "version"), "21", "one version per change");

    // The same item replaced at once on A and B with the same If-Match: one wins.
    for round in 0..10 {
        let current = send(&b, Method::GET, "/admin/v1/rules/a0", &[], None).await;
        let etag = current.header("etag").expect("ETag").to_owned();
        let body_a = rule_body("fake", &format!("from-a-{round}"));
        let body_b = rule_body("fake", &format!("from-b-{round}"));
        let (ra, rb) = race_if_match(
            (&*a, &*b),
            "/admin/v1/rules/a0",
            &etag,
            (&body_a, &body_b),
            &format!("round {round}: "),
        )
        .await;
        let winner = if ra.status == 200 { &body_a } else { &body_b };
        for broker in [&*a, &*b] {
            let now = send(broker, Method::GET, "/admin/v1/rules/a0", &[], None).await;
            assert_eq!(now.json["match"], winner["match"], "round {round}");
        }
        let loser = if ra.status == 412 { &ra } else { &rb };
        assert_eq!(loser.json["error"], "precondition_failed", "{loser:?}");
    }
    // Both replicas end up enforcing the winner of the last round.
    let last: Value = serde_json::from_str(&hget(&redis, "state")).expect("state is JSON");
    let target = last["rules"]["a0"]["match"]["audiences"][0]
        .as_str()
        .expect("target")
        .to_owned();
    for broker in [&*a, &*b] {
        eventually_timed(PROPAGATION, "both replicas enforce the winner", || async {
            (exchange_status(broker, &fake, &target).await == 200).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_during_a_change_answers_503_and_nothing_changes() {
    let Some((mut redis, fake, a, b)) = replicas_on_redis(config).await else {
        return;
    };
    let etag = put_expect(&a, "/admin/v1/rules/r1", &rule_body("fake", TARGET), 201).await;
    for broker in [&a, &b] {
        eventually_timed(PROPAGATION, "both replicas allow r1", || async {
            (exchange_status(broker, &fake, TARGET).await == 200).then_some(())
        })
        .await;
    }

    // A Redis that does not answer (SIGSTOP): the change times out into a 503.
    redis.pause();
    let started = Instant::now();
    let reply = put(&a, "/admin/v1/rules/r2", &rule_body("fake", "target-r2"), &[]).await;
    reply.assert_error(503, "temporarily_unavailable", "");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    redis.resume();
    assert_eq!(hget(&redis, "version"), "2", "nothing was written");
    assert_eq!(names(&b, "rules").await, ["r1"]);

    // A Redis that is gone: refused at once.
    redis.kill();
    let reply = put(&a, "/admin/v1/rules/r2", &rule_body("fake", "target-r2"), &[]).await;
    reply.assert_error(503, "temporarily_unavailable", "");
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    let reply = delete_r1(&b, &etag).await;
    reply.assert_error(503, "temporarily_unavailable", "");
    let reply = send(&b, Method::GET, "/admin/v1/rules", &[], None).await;
    reply.assert_error(503, "temporarily_unavailable", "");
    // The state read last keeps serving (the issuer is `reusable`: no replay mark).
    for broker in [&a, &b] {
        assert_eq!(exchange_status(broker, &fake, TARGET).await, 200);
        assert_eq!(exchange_status(broker, &fake, "target-r2").await, 400);
    }

    // Redis comes back empty (no persistence here): a replica writes its copy back.
    redis.restart();
    for broker in [&a, &b] {
        wait_ready(broker).await;
    }
    let (_, took) = eventually_timed(PROPAGATION, "the state written back to Redis", || async {
        (!hget(&redis, "state").is_empty()).then_some(())
    })
    .await;
    eprintln!("the admin state was back in Redis {took:?} after it answered");
    let state: Value = serde_json::from_str(&hget(&redis, "state")).expect("state is JSON");
    assert_eq!(state["rules"].as_object().map(|r| r.len()), Some(1), "{state}");
    assert!(state["rules"]["r1"].is_object(), "{state}");
    for broker in [&a, &b] {
        assert_eq!(names(broker, "rules").await, ["r1"]);
        assert_eq!(exchange_status(broker, &fake, TARGET).await, 200);
        assert_eq!(exchange_status(broker, &fake, "target-r2").await, 400);
    }
    let logs = format!("{}{}", a.stderr(), b.stderr());
    assert!(
        logs.contains("vanished from Redis"),
        "the write-back is logged:\n{logs}"
    );
    // And changes work again, with the ETag from before the outage.
    let reply = delete_r1(&b, &etag).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let (_, took) = eventually_timed(PROPAGATION, "A refuses once B deleted the rule", || async {
        (exchange_status(&a, &fake, TARGET).await == 400).then_some(())
    })
    .await;
    eprintln!("after the Redis restart, B's delete reached A after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_started_while_redis_is_down_picks_up_the_state_when_it_answers() {
    if !redis_available() {
        return;
    }
    let mut redis = RedisServer::not_started();
    let fake = FakeIssuer::start();
    let broker = Broker::start(&config(&redis.url())).await;
    let readyz = broker.get("/readyz").await;
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert_eq!(readyz.json["admin"]["synced"], false, "{readyz:?}");
    let reply = put(&broker, "/admin/v1/issuers/fake", &issuer_body(&fake), &[]).await;
    reply.assert_error(503, "temporarily_unavailable", "");

    // Redis answers, with a state written by another replica (the documented layout).
    redis.restart();
    let mut state =
        json!({"issuers": {"fake": issuer_body(&fake)}, "rules": {"r1": rule_body("fake", TARGET)}});
    state["issuers"]["fake"]["name"] = json!("fake");
    state["rules"]["r1"]["name"] = json!("r1");
    let state_text = state.to_string();
    hset_state(&redis, 7, &state_text);
    redis.cli(&["PUBLISH", CHANNEL, "7"]);
    wait_ready(&broker).await;
    eventually_timed(PROPAGATION, "the state from Redis is served", || async {
        (exchange_status(&broker, &fake, TARGET).await == 200).then_some(())
    })
    .await;
    assert_eq!(names(&broker, "rules").await, ["r1"]);
    assert_eq!(broker.get("/readyz").await.json["admin"]["version"], 7);

    // Without a message on the channel, the once-a-second version check finds a change.
    let mut more = state.clone();
    more["rules"]["r3"] = json!({"name": "r3", "match": {"issuer": "fake", "subject": DEFAULT_SUBJECT, "audiences": ["target-r3"]}});
    hset_state(&redis, 8, &more.to_string());
    let (_, took) = eventually_timed(PROPAGATION, "a change without a message is found", || async {
        (exchange_status(&broker, &fake, "target-r3").await == 200).then_some(())
    })
    .await;
    eprintln!("a change made without PUBLISH was served after {took:?}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");

    // A state that does not validate here is not installed: the previous one serves,
    // and /readyz names the error.
    let mut bad = state.clone();
    bad["rules"]["r2"] =
        json!({"name": "r2", "match": {"issuer": "nobody", "subject": "x", "audiences": ["y"]}});
    hset_state(&redis, 9, &bad.to_string());
    let (error, _) = eventually_timed(PROPAGATION, "the invalid state is reported", || async {
        let readyz = broker.get("/readyz").await.json;
        readyz["rules"]["last_reload_error"].as_str().map(str::to_owned)
    })
    .await;
    assert!(error.contains("r2") || error.contains("nobody"), "{error}");
    assert_eq!(exchange_status(&broker, &fake, TARGET).await, 200);
    assert_eq!(exchange_status(&broker, &fake, "target-r3").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_a_redis_cluster_share_the_admin_state() {
    if !redis_available() {
        return;
    }
    let cluster = RedisCluster::start(3, 0);
    let fake = FakeIssuer::start();
    let urls = cluster.urls().join(", ");
    let yaml = config_with(&format!("redis_cluster_urls: [{urls}]\ncommand_timeout: 1s"));
    let a = replica(&yaml).await;
    let b = replica(&yaml).await;

    let etag = create_on_a_until_b_allows(&a, &b, &fake, "on a cluster, ").await;
    let master = cluster.urls()[cluster.master_for(STATE_KEY)].clone();
    let port: u16 = master
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert_eq!(
        integration_tests::redis_server::cli(port, &["HGET", STATE_KEY, "version"]).trim(),
        "2"
    );

    let (body_a, body_b) = (rule_body("fake", "from-a"), rule_body("fake", "from-b"));
    let (ra, _) = race_if_match((&a, &b), "/admin/v1/rules/r1", &etag, (&body_a, &body_b), "").await;
    let winner = if ra.status == 200 { "from-a" } else { "from-b" };
    for broker in [&a, &b] {
        eventually_timed(PROPAGATION, "both replicas enforce the winner", || async {
            (exchange_status(broker, &fake, winner).await == 200).then_some(())
        })
        .await;
    }
}
