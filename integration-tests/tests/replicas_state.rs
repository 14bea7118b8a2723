//! Replicas sharing the admin state in Redis (issue 10, items 2 and 5), end to end: two
//! `serve` processes and a real `redis-server` spawned here.
//!
//! - The state's identity is `(epoch, version)`: after Redis lost the state and a replica
//!   wrote it back (version 1 again, a new epoch), a replica that was away (SIGSTOP)
//!   while the versions climbed back to the number it knew still installs the new
//!   content, and both `/readyz` show the same identity.
//! - A write whose reply timed out (Redis holding writes, `CLIENT PAUSE ... WRITE`,
//!   longer than `command_timeout`) is read
//!   back by its change id: applied answers 201, unknown answers 503; every attempt is
//!   audited with its outcome, an unknown one is settled later, and a client's retry of
//!   the same PUT (`If-None-Match: *`, as Terraform creates) answers 200, not 412.
//!
//! Without `redis-server` these tests fail naming it, unless
//! `FEDBROKER_SKIP_REDIS_TESTS=1` (see `integration_tests::redis_server`).

use std::time::Duration;

use integration_tests::eventually;
use integration_tests::{Broker, BrokerConfig, FakeIssuer};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    STATE_KEY, TARGET, admin_names as names, admin_put_expect, admin_send as send, assert_read_back_logged,
    change_lines, create_rule, exchange_status, hget, issuer_body, one_create_audited,
    ready_replica as replica, redis_admin_sections, redis_or_skip, replicas_on_redis, rule_body,
};

/// How long a change may take to reach another replica here (the broker promises a
/// second; the rest is slack for a busy machine).
const PROPAGATION: Duration = Duration::from_secs(5);

/// A broker with no issuer or rule of its own, the admin API on its main listener, the
/// replay marks and the admin state in the Redis at `url`, commands bounded by 250 ms.
fn config(url: &str) -> String {
    let redis = format!("redis_url: {url}\ncommand_timeout: 250ms\nreplicas: 2");
    BrokerConfig::new()
        .top_level(redis_admin_sections(&redis))
        .render()
}

async fn put_expect(broker: &Broker, path: &str, body: &Value, status: u16) {
    admin_put_expect(broker, path, body, status).await;
}

async fn delete_expect(broker: &Broker, path: &str, status: u16) {
    let reply = send(broker, Method::DELETE, path, &[], None).await;
    assert_eq!(
        reply.status,
        status,
        "DELETE {path}: {reply:?}\n{}",
        broker.stderr()
    );
}

/// The decisions `broker` takes for each target, in order.
async fn decisions(broker: &Broker, fake: &FakeIssuer, targets: &[&str]) -> Vec<u16> {
    let mut out = Vec::new();
    for target in targets {
        out.push(exchange_status(broker, fake, target).await);
    }
    out
}

/// `/readyz`'s admin identity: (version, epoch).
async fn identity(broker: &Broker) -> (Value, Value) {
    let admin = broker.get("/readyz").await.json["admin"].clone();
    (admin["version"].clone(), admin["epoch"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_away_while_redis_lost_the_state_converges_when_the_versions_repeat() {
    let Some((mut redis, fake, a, b)) = replicas_on_redis(config).await else {
        return;
    };
    put_expect(&a, "/admin/v1/rules/r1", &rule_body("fake", TARGET), 201).await;
    put_expect(&a, "/admin/v1/rules/r2", &rule_body("fake", "target-2"), 201).await;
    let targets = [TARGET, "target-2", "target-3"];
    eventually(PROPAGATION, "B allows r1 and r2", || async {
        (decisions(&b, &fake, &targets).await == [200, 200, 400]).then_some(())
    })
    .await;
    let first_epoch = hget(&redis, "epoch");
    assert_eq!(hget(&redis, "version"), "3");
    assert_eq!(first_epoch.len(), 32, "a random epoch: {first_epoch}");
    assert_eq!(identity(&b).await, (json!(3), json!(first_epoch)));

    // B is away (stopped) while Redis loses the state: A writes its copy back as
    // version 1 of a new epoch, then deletes r1 and creates r3: version 3 again, other
    // content.
    b.signal("STOP");
    redis.restart();
    let second_epoch = eventually(PROPAGATION, "A writes the state back", || async {
        let epoch = hget(&redis, "epoch");
        (!epoch.is_empty()).then_some(epoch)
    })
    .await;
    assert_ne!(second_epoch, first_epoch, "a write-back starts a new epoch");
    assert_eq!(hget(&redis, "version"), "1");
    delete_expect(&a, "/admin/v1/rules/r1", 204).await;
    put_expect(&a, "/admin/v1/rules/r3", &rule_body("fake", "target-3"), 201).await;
    assert_eq!(
        hget(&redis, "version"),
        "3",
        "the version B knows, on other content"
    );
    assert_eq!(decisions(&a, &fake, &targets).await, [400, 200, 200]);

    // B comes back: it installs the new content (r1 no longer issues), as A serves it.
    b.signal("CONT");
    eventually(PROPAGATION, "B converges on A's decisions", || async {
        (decisions(&b, &fake, &targets).await == [400, 200, 200]).then_some(())
    })
    .await;
    assert_eq!(names(&b, "rules").await, ["r2", "r3"]);
    assert_eq!(names(&a, "rules").await, names(&b, "rules").await);
    let expected = (json!(3), json!(second_epoch));
    assert_eq!(identity(&a).await, expected);
    eventually(PROPAGATION, "B's /readyz shows the same identity", || async {
        (identity(&b).await == expected).then_some(())
    })
    .await;
    let readyz = b.get("/readyz").await;
    assert_eq!(readyz.status, 200, "{readyz:?}");
    assert_eq!(readyz.json["admin"]["synced"], true, "{readyz:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_whose_reply_timed_out_is_read_back_answered_and_audited() {
    let Some((redis, fake, a, b)) = replicas_on_redis(config).await else {
        return;
    };

    // 1. Redis holds every write for 1.2 s (`CLIENT PAUSE 1200 WRITE`; reads go on, so
    // the change reads the state and validates): the write's reply times out after
    // 250 ms; the broker reads the change id back until Redis answers, which it does
    // within the read-back window, in order, so the write is known to have applied:
    // 201, audited `applied`.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1200", "WRITE"]).trim(), "OK");
    let reply = create_rule(&a, "r1", TARGET).await;
    assert_eq!(reply.status, 201, "{reply:?}\n{}", a.stderr());
    assert!(reply.header("etag").is_some(), "{reply:?}");
    assert_read_back_logged(&a).await;
    let change_id = one_create_audited(&a, "r1", "applied", "read back");
    assert!(hget(&redis, "changes").starts_with(&change_id));
    eventually(PROPAGATION, "B allows r1", || async {
        (exchange_status(&b, &fake, TARGET).await == 200).then_some(())
    })
    .await;

    // 2. Writes held for 4 s, past the read-back window: the outcome is unknown, 503,
    // audited `unknown`. Once Redis takes writes again, the replica settles it (the write
    // was queued first: applied) and audits the outcome; the client's retry of the same
    // create then answers 200 with the item, never 412.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "4000", "WRITE"]).trim(), "OK");
    let reply = create_rule(&a, "r2", "target-r2").await;
    reply.assert_error(503, "temporarily_unavailable", "");
    let description = reply.json["error_description"].as_str().unwrap_or_default();
    assert!(description.contains("unknown"), "{reply:?}");
    let lines = change_lines(&a, "admin_change", "r2");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "unknown", "{lines:?}");
    let change_id = lines[0]["change_id"].as_str().expect("change_id").to_owned();
    let resolved = eventually(
        PROPAGATION,
        "the unknown outcome is settled and audited",
        || async { change_lines(&a, "admin_change_resolved", "r2").into_iter().next() },
    )
    .await;
    assert_eq!(resolved["change_id"], change_id.as_str(), "{resolved}");
    assert_eq!(resolved["outcome"], "applied", "{resolved}");
    let retry = create_rule(&a, "r2", "target-r2").await;
    assert_eq!(retry.status, 200, "{retry:?}");
    assert!(retry.header("etag").is_some(), "{retry:?}");
    assert_eq!(
        retry.json["match"]["audiences"],
        json!(["target-r2"]),
        "{retry:?}"
    );
    // Through the other replica too, and a different body is still refused.
    let retry = create_rule(&b, "r2", "target-r2").await;
    assert_eq!(retry.status, 200, "{retry:?}");
    let other = create_rule(&b, "r2", "elsewhere").await;
    other.assert_error(412, "precondition_failed", "");
    for broker in [&a, &b] {
        assert_eq!(names(broker, "rules").await, ["r1", "r2"]);
        eventually(PROPAGATION, "both replicas allow r2", || async {
            (exchange_status(broker, &fake, "target-r2").await == 200).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_epoch_and_change_ids_are_authenticated_with_the_state() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let fake = FakeIssuer::start();
    let broker = replica(&config(&redis.url())).await;
    put_expect(&broker, "/admin/v1/issuers/fake", &issuer_body(&fake), 201).await;
    put_expect(&broker, "/admin/v1/rules/r1", &rule_body("fake", TARGET), 201).await;
    let (version, epoch) = identity(&broker).await;
    assert_eq!(version, json!(2));

    // Someone who can write to Redis but lacks the key changes the epoch (to make
    // replicas take the state for another one, or an old one for the current one), or
    // the change ids (to fake a write's outcome): refused, nothing installed.
    for (field, value) in [
        ("epoch", "0123456789abcdef0123456789abcdef"),
        ("changes", "feedfeedfeedfeedfeedfeedfeedfeed"),
    ] {
        let original = hget(&redis, field);
        redis.cli(&["HSET", STATE_KEY, field, value]);
        // Every read verifies: the API refuses to work from it.
        let reply = send(&broker, Method::GET, "/admin/v1/rules", &[], None).await;
        reply.assert_error(503, "temporarily_unavailable", "");
        if field == "epoch" {
            // A new identity: the sync reads the state, refuses it, and says so.
            let error = eventually(PROPAGATION, "/readyz names the refused state", || async {
                broker.get("/readyz").await.json["admin"]["error"]
                    .as_str()
                    .map(str::to_owned)
            })
            .await;
            assert!(error.contains("MAC does not verify"), "{error}");
        }
        assert_eq!(identity(&broker).await, (json!(2), epoch.clone()), "{field}");
        assert_eq!(exchange_status(&broker, &fake, TARGET).await, 200);
        redis.cli(&["HSET", STATE_KEY, field, &original]);
        eventually(PROPAGATION, "the verified state is accepted again", || async {
            broker.get("/readyz").await.json["admin"]
                .get("error")
                .is_none()
                .then_some(())
        })
        .await;
    }
    assert_eq!(exchange_status(&broker, &fake, TARGET).await, 200);
}
