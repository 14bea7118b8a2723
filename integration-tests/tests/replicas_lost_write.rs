//! Issue 10, item 5: an admin write whose reply was lost, and which never reached Redis,
//! end to end (one `serve` process and a real `redis-server` spawned here).
//!
//! A proxy between the broker and Redis swallows the write (the compare-and-set `EVAL`)
//! and closes that connection, as a connection that breaks before the command gets
//! through does. The broker reads the change id back on its next connection: not in
//! `changes`, so it is cancelled in the same atomic step and the answer is 503 "not
//! applied, try again", audited `rejected`; nothing changed, and the client's retry of
//! the same PUT creates the item (201).
//!
//! Without `redis-server` this test fails naming it, unless
//! `FEDBROKER_SKIP_REDIS_TESTS=1` (see `integration_tests::redis_server`).

use integration_tests::redis_proxy::{Trap, TrapProxy};
use integration_tests::redis_server::RedisServer;
use integration_tests::{Broker, BrokerConfig, FakeIssuer};
use reqwest::Method;
use serde_json::json;

use crate::support::{
    TARGET, admin_names, admin_put_expect, admin_send as send, assert_read_back_logged, change_lines,
    create_rule, hget, issuer_body, one_create_audited, redis_admin_sections, redis_or_skip, wait_ready,
};

/// A proxy in front of `redis` that, once armed, drops the next `EVAL` (or `EVALSHA`)
/// command the broker sends and closes that connection without forwarding anything
/// more in either direction: the command never reaches Redis and no reply comes.
async fn swallow_proxy(redis: &RedisServer) -> TrapProxy {
    let is_eval = |parts: &[Vec<u8>]| {
        parts
            .first()
            .is_some_and(|name| name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVALSHA"))
    };
    TrapProxy::start(redis.port(), is_eval, Trap::Swallow).await
}

/// One broker, the admin API on its main listener, the replay marks and the admin state
/// in the Redis behind `proxy`.
fn config(proxy: &TrapProxy) -> String {
    let redis = format!(
        "redis_url: redis://127.0.0.1:{}\ncommand_timeout: 1s",
        proxy.port()
    );
    BrokerConfig::new()
        .top_level(redis_admin_sections(&redis))
        .render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_lost_before_it_reached_redis_is_read_back_as_not_applied_and_can_be_retried() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let proxy = swallow_proxy(&redis).await;
    let fake = FakeIssuer::start();
    let broker = Broker::start(&config(&proxy)).await;
    wait_ready(&broker).await;
    admin_put_expect(&broker, "/admin/v1/issuers/fake", &issuer_body(&fake), 201).await;
    let version = hget(&redis, "version");
    let changes = hget(&redis, "changes");
    assert_eq!(version, "1");

    // The write of r1 is dropped on its way to Redis and its connection closed: the
    // broker reads its change id back (on the connection it makes next), finds it not
    // applied and cancels it: 503, "not applied, try again".
    proxy.arm();
    let reply = create_rule(&broker, "r1", TARGET).await;
    assert_eq!(proxy.trapped(), 1, "the proxy dropped the write: {reply:?}");
    reply.assert_error(503, "temporarily_unavailable", "");
    let description = reply.json["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains("not applied"),
        "{reply:?}\n{}",
        broker.stderr()
    );
    assert_read_back_logged(&broker).await;

    // One attempt, one audit line: rejected, with the read-back's finding.
    let change_id = one_create_audited(
        &broker,
        "r1",
        "rejected",
        "read back: not applied (and cancelled)",
    );

    // Nothing changed in Redis, except that the change id is cancelled for good.
    assert_eq!(hget(&redis, "version"), version);
    assert_eq!(hget(&redis, "changes"), changes);
    assert!(
        hget(&redis, "cancelled")
            .split_whitespace()
            .any(|id| id == change_id),
        "the lost write's id is cancelled"
    );

    // Nor in the API: r1 does not exist.
    let reply = send(&broker, Method::GET, "/admin/v1/rules/r1", &[], None).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(
        !admin_names(&broker, "rules").await.contains(&"r1".to_owned()),
        "r1 is not listed"
    );

    // The client's retry of the same create goes through: 201, with a new change id.
    let retry = create_rule(&broker, "r1", TARGET).await;
    assert_eq!(retry.status, 201, "{retry:?}\n{}", broker.stderr());
    assert_eq!(proxy.trapped(), 1, "{retry:?}");
    let lines = change_lines(&broker, "admin_change", "r1");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["outcome"], "applied", "{lines:?}");
    assert_ne!(lines[1]["change_id"], change_id.as_str(), "{lines:?}");
    assert_eq!(hget(&redis, "version"), "2");
    let reply = send(&broker, Method::GET, "/admin/v1/rules/r1", &[], None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(admin_names(&broker, "rules").await.contains(&"r1".to_owned()));
    assert_eq!(
        broker.exchange(&fake.mint(json!({})), TARGET).await.status,
        200,
        "r1 issues"
    );
}
