//! Issue 10, items 4 and 11: names the configuration file owns, and replay marks whose
//! outcome the Redis client cannot know.
//!
//! - The admin API refuses (409) to create, replace or delete a name the configuration
//!   file (or a rule file) defines, and lists the whole effective set, the file's items
//!   marked `"read_only": true` (one broker: no replica needed).
//! - A clash that arises anyway makes `/readyz` answer 503 with the reason until a load
//!   succeeds: a config file edited to add a name the admin state has (one broker, file
//!   store), and a replica whose config file defines a name the admin state in Redis has
//!   (two replicas, one Redis): never 200 "synced" with fewer rules than its peer.
//! - A `SET NX` mark applied just before its connection dropped is not sent again by the
//!   Redis Cluster client (which would find it set and refuse the request that set it as
//!   a replay): the exchange answers 503 `temporarily_unavailable`. A proxy between the
//!   broker and Redis forwards the mark, waits until Redis holds it, and closes the
//!   broker's connection before the reply reaches it.
//!
//! Without `redis-server` the Redis tests fail naming it, unless
//! `FEDBROKER_SKIP_REDIS_TESTS=1` (see `integration_tests::redis_server`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use integration_tests::eventually;
use integration_tests::fake_issuer::DEFAULT_AUDIENCE;
use integration_tests::redis_proxy::{Trap, TrapProxy};
use integration_tests::redis_server::{RedisServer, redis_available};
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Reply};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, ISSUER_NAME, TARGET, admin_send, assert_spent_at, default_rule, exchange_status,
    issuer_body, issuer_subject_rule, redis_admin_sections, redis_or_skip, rule_body,
};

/// `PUT /admin/v1/rules/{name}`: [`rule_body`] through `issuer` for `target`.
async fn put_rule(broker: &Broker, name: &str, issuer: &str, target: &str) -> Reply {
    let path = format!("/admin/v1/rules/{name}");
    send(broker, Method::PUT, &path, Some(&rule_body(issuer, target))).await
}

/// An admin API request without extra headers.
async fn send(broker: &Broker, method: Method, path: &str, body: Option<&Value>) -> Reply {
    admin_send(broker, method, path, &[], body).await
}

fn assert_status(reply: &Reply, status: u16, what: &str, broker: &Broker) {
    assert_eq!(
        reply.status,
        status,
        "{what}: {reply:?}\n--- broker stderr ---\n{}",
        broker.stderr()
    );
}

/// A 409 that says the configuration file owns the name.
fn assert_owned_by_file(reply: &Reply, what: &str, broker: &Broker) {
    assert_status(reply, 409, what, broker);
    assert_eq!(reply.json["error"], "conflict", "{what}: {reply:?}");
    let text = reply.json["error_description"].as_str().unwrap_or_default();
    assert!(
        text.contains("configuration file"),
        "{what}: the 409 says who owns the name: {text}"
    );
}

/// The same rule as YAML, for a config file (a list item at column 0).
fn rule_yaml(name: &str, issuer: &str, target: &str) -> String {
    issuer_subject_rule(name, issuer, &format!("audiences: [{target}]"), "lifetime: 5m")
}

/// `/readyz`'s body once its status and body satisfy `done` (15 s).
async fn readyz_when(broker: &Broker, what: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    eventually(Duration::from_secs(15), what, || async {
        let reply = broker.get("/readyz").await;
        done(reply.status, &reply.json).then_some(reply.json)
    })
    .await
}

/// `/readyz` once it answers `status`.
async fn readyz_becomes(broker: &Broker, status: u16, what: &str) -> Value {
    readyz_when(broker, what, |s, _| s == status).await
}

/// `/readyz` once it answers 503 naming a clash (a replica is also unready, for
/// another reason, before it has read the admin state from Redis).
async fn readyz_names_a_clash(broker: &Broker, what: &str) -> Value {
    readyz_when(broker, what, |s, body| {
        s == 503 && !clash_reasons(body).is_empty()
    })
    .await
}

/// The `reasons` of a `/readyz` body that mention a name clash.
fn clash_reasons(readyz: &Value) -> Vec<String> {
    readyz["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.contains("name clash") || r.contains("the configuration file owns this name"))
        .collect()
}

// ---------------------------------------------------------------------------------
// Item 4: names the configuration file owns.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_names_the_config_file_owns_and_lists_them_read_only() {
    let fake = FakeIssuer::start();
    let yaml = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(default_rule())
        .top_level(format!(
            "admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n  state_file: @DIR@/admin-state.json\n"
        ))
        .render();
    let broker = Broker::start(&yaml).await;

    // The file's issuer and rule: no PUT, no DELETE through the API (409, saying why).
    let issuer =
        json!({"issuer": fake.issuer(), "audiences": [DEFAULT_AUDIENCE], "danger_allow_insecure": true});
    for (method, path, body) in [
        (Method::PUT, "/admin/v1/issuers/k8s", Some(&issuer)),
        (
            Method::PUT,
            "/admin/v1/rules/ci-deployer",
            Some(&rule_body(ISSUER_NAME, "elsewhere")),
        ),
        (Method::DELETE, "/admin/v1/issuers/k8s", None),
        (Method::DELETE, "/admin/v1/rules/ci-deployer", None),
    ] {
        let what = format!("{method} {path}");
        assert_owned_by_file(&send(&broker, method, path, body).await, &what, &broker);
    }
    // The file's rule is untouched: it still grants its target and nothing else.
    assert_eq!(exchange_status(&broker, &fake, TARGET).await, 200);
    assert_eq!(exchange_status(&broker, &fake, "elsewhere").await, 400);

    // A name of its own is the API's to make.
    let reply = put_rule(&broker, "api-made", ISSUER_NAME, "api-target").await;
    assert_status(&reply, 201, "PUT an API-made rule", &broker);
    assert_eq!(exchange_status(&broker, &fake, "api-target").await, 200);

    // The lists show the whole effective set: the file's items first, read-only.
    let issuers = send(&broker, Method::GET, "/admin/v1/issuers", None).await;
    assert_status(&issuers, 200, "GET issuers", &broker);
    assert_eq!(issuers.json.as_array().map(Vec::len), Some(1), "{issuers:?}");
    let listed = &issuers.json[0];
    assert_eq!(listed["name"], "k8s");
    assert_eq!(listed["read_only"], true);
    assert_eq!(listed["issuer"], fake.issuer(), "the YAML field names: {listed}");
    assert_eq!(listed["audiences"], json!([DEFAULT_AUDIENCE]));
    let rules = send(&broker, Method::GET, "/admin/v1/rules", None).await;
    assert_status(&rules, 200, "GET rules", &broker);
    let rules = rules.json.as_array().expect("a JSON array").clone();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[0]["name"], "ci-deployer");
    assert_eq!(rules[0]["read_only"], true);
    assert_eq!(rules[0]["match"]["audiences"], json!([TARGET]));
    assert_eq!(rules[1]["name"], "api-made");
    assert!(
        rules[1].get("read_only").is_none(),
        "an API-made item is listed as stored, so it can be sent back with PUT: {}",
        rules[1]
    );
    // One item of the file: not the API's (404), and the answer says where it is.
    let one = send(&broker, Method::GET, "/admin/v1/rules/ci-deployer", None).await;
    assert_status(&one, 404, "GET the file's rule", &broker);
    assert!(
        one.json["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("configuration file"),
        "{one:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_edit_that_clashes_with_the_admin_state_makes_readyz_503_until_resolved() {
    let fake = FakeIssuer::start();
    let admin = format!("admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n  state_file: @DIR@/admin-state.json\n");
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .top_level(&admin);
    let broker = Broker::start(&config.render()).await;
    readyz_becomes(&broker, 200, "ready at start").await;
    let reply = put_rule(&broker, "shared", ISSUER_NAME, "api-target").await;
    assert_status(&reply, 201, "PUT rule shared", &broker);
    assert_eq!(exchange_status(&broker, &fake, "api-target").await, 200);

    // The config file gains a rule of the same name: the reload fails, and the broker
    // says it is not ready, naming the clash.
    let edited = config
        .clone()
        .rules(rule_yaml("shared", ISSUER_NAME, "file-target"))
        .render()
        .replace("@PORT@", &broker.port().to_string())
        .replace("@DIR@", broker.dir().to_str().expect("UTF-8 dir"));
    std::fs::write(broker.dir().join("fedbroker.yaml"), edited).expect("edit the config file");
    let readyz = readyz_names_a_clash(&broker, "/readyz 503 once the edited file clashes").await;
    let reasons = clash_reasons(&readyz);
    assert!(
        reasons.iter().any(|r| r.contains("`shared`")),
        "/readyz names the clash: {readyz:#}"
    );
    assert!(
        readyz["rules"]["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("the configuration file owns this name")),
        "{readyz:#}"
    );
    // What was in force stays in force: the API's rule, not the file's.
    assert_eq!(exchange_status(&broker, &fake, "api-target").await, 200);
    assert_eq!(exchange_status(&broker, &fake, "file-target").await, 400);

    // Deleting the API's copy resolves the clash: the file's rule is in force, ready again.
    let reply = send(&broker, Method::DELETE, "/admin/v1/rules/shared", None).await;
    assert_status(&reply, 204, "DELETE the API's copy of a clashing name", &broker);
    let readyz = readyz_becomes(&broker, 200, "/readyz 200 once the clash is gone").await;
    assert!(clash_reasons(&readyz).is_empty(), "{readyz:#}");
    assert_eq!(exchange_status(&broker, &fake, "file-target").await, 200);
    assert_eq!(exchange_status(&broker, &fake, "api-target").await, 400);
    // And now the file owns the name.
    let reply = put_rule(&broker, "shared", ISSUER_NAME, "api-target").await;
    assert_owned_by_file(&reply, "PUT a name the file now owns", &broker);
}

/// A replica's config: its own issuers (YAML list items, may be empty), the admin API
/// and its state in the Redis at `url`.
fn replica_config(url: &str, issuers: &str) -> String {
    let mut config = BrokerConfig::new();
    if !issuers.is_empty() {
        config = config.issuer(issuers);
    }
    let redis = format!("redis_url: {url}\ncommand_timeout: 1s\nreplicas: 2");
    config.top_level(redis_admin_sections(&redis)).render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_config_file_defines_a_name_the_admin_state_has_is_not_ready() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let fake = FakeIssuer::start();
    // Replica A: nothing of its own. An issuer and a rule made through it.
    let a = Broker::start(&replica_config(&redis.url(), "")).await;
    readyz_becomes(&a, 200, "A ready").await;
    let issuer = issuer_body(&fake);
    let reply = send(&a, Method::PUT, "/admin/v1/issuers/fake", Some(&issuer)).await;
    assert_status(&reply, 201, "PUT issuer fake on A", &a);
    let reply = put_rule(&a, "r1", "fake", TARGET).await;
    assert_status(&reply, 201, "PUT rule r1 on A", &a);
    assert_eq!(exchange_status(&a, &fake, TARGET).await, 200);

    // Replica B's config file defines an issuer named `fake` too: it cannot install the
    // admin state, so it serves fewer rules than A and must not be ready.
    let b = Broker::start(&replica_config(
        &redis.url(),
        &fake.issuer_yaml_with("fake", "replay: reusable"),
    ))
    .await;
    let readyz = readyz_names_a_clash(&b, "B unready: its file clashes with the admin state").await;
    let reasons = clash_reasons(&readyz);
    assert!(
        reasons.iter().any(|r| r.contains("`fake`")),
        "/readyz names the clash on B: {readyz:#}"
    );
    assert_ne!(readyz["admin"]["synced"], true, "{readyz:#}");
    assert_eq!(exchange_status(&b, &fake, TARGET).await, 400, "B lacks r1");
    let log = b.stderr();
    assert!(
        !log.contains("previous one keeps serving")
            && !log.contains("the previous rules and issuers keep serving")
            && !log.contains("the last state that installed keeps serving"),
        "no previous admin state ever served on B, and the log must not claim one:\n{log}"
    );
    // B refuses the name its file owns; A still serves, ready.
    let reply = send(&b, Method::PUT, "/admin/v1/issuers/fake", Some(&issuer)).await;
    assert_owned_by_file(&reply, "PUT issuer fake on B", &b);
    assert_eq!(a.get("/readyz").await.status, 200);

    // Removing the API's items (through A) resolves it: B installs the state, ready.
    let reply = send(&a, Method::DELETE, "/admin/v1/rules/r1", None).await;
    assert_status(&reply, 204, "DELETE r1", &a);
    let reply = send(&a, Method::DELETE, "/admin/v1/issuers/fake", None).await;
    assert_status(&reply, 204, "DELETE issuer fake", &a);
    let readyz = readyz_becomes(&b, 200, "B ready once the clash is gone").await;
    assert!(clash_reasons(&readyz).is_empty(), "{readyz:#}");
    assert_eq!(readyz["admin"]["synced"], true, "{readyz:#}");
}

// ---------------------------------------------------------------------------------
// Item 11: a mark whose reply was lost.

/// A proxy that, once armed, cuts the connection carrying the next replay mark
/// (`SET fedbroker:replay:...`) after Redis has applied it and before its reply reaches
/// the broker: exactly what a connection dropped at the wrong moment does.
/// Deterministic: the proxy stops forwarding Redis's replies on that connection
/// *before* it forwards the mark, and closes the connection only once Redis holds the
/// mark (polled on a connection of its own). It forwards to the port in `upstream`
/// (set later: a cluster node must announce the proxy's port before it starts).
async fn cut_proxy(upstream: Arc<AtomicU16>) -> TrapProxy {
    let is_mark = |parts: &[Vec<u8>]| {
        parts.len() > 2 && parts[0].eq_ignore_ascii_case(b"SET") && parts[1].starts_with(b"fedbroker:replay:")
    };
    TrapProxy::listen(upstream, is_mark, Trap::CutAfterApplied).await
}

/// The replay part of a config whose Redis is reached through `proxy`.
fn replay_through(proxy: &TrapProxy, cluster: bool) -> String {
    let target = if cluster {
        format!("redis_cluster_urls: [redis://127.0.0.1:{}]", proxy.port())
    } else {
        format!("redis_url: redis://127.0.0.1:{}", proxy.port())
    };
    format!("replay:\n  backend: redis\n  {target}\n  command_timeout: 1s\n  replicas: 2\n")
}

/// Two replicas on the Redis behind `proxy`; the first exchange of a token whose mark is
/// cut after Redis applied it answers 503 (never "already used"), and the token is
/// spent for both replicas afterwards (fail_closed burns it; nothing issued twice).
async fn a_cut_mark_answers_503(proxy: &TrapProxy, cluster: bool) {
    let fake = FakeIssuer::start();
    let yaml = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(default_rule())
        .top_level(replay_through(proxy, cluster))
        .render();
    let a = Broker::start(&yaml).await;
    let b = Broker::start(&yaml).await;
    for broker in [&a, &b] {
        readyz_becomes(broker, 200, "replica ready on Redis").await;
    }
    // The path works: a first token exchanges once.
    let token = fake.mint(json!({}));
    assert_eq!(a.exchange(&token, TARGET).await.status, 200);

    let token = fake.mint(json!({}));
    proxy.arm();
    let reply = a.exchange(&token, TARGET).await;
    assert_eq!(
        proxy.trapped(),
        1,
        "the proxy cut the mark's connection: {reply:?}"
    );
    reply.assert_error(503, "temporarily_unavailable", &token);
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    // The mark is in Redis: the token is spent on every replica.
    for broker in [&a, &b] {
        assert_spent_at(broker, &token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_a_mark_whose_connection_dropped_after_it_applied_is_503_not_a_replay() {
    if !redis_available() {
        return;
    }
    // A one-node Redis Cluster that announces the proxy's port, so the cluster client
    // reaches the node (and reconnects to it) through the proxy only.
    let upstream = Arc::new(AtomicU16::new(0));
    let proxy = cut_proxy(upstream.clone()).await;
    let bus = integration_tests::broker::free_port().to_string();
    let announce = proxy.port().to_string();
    let node = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-port",
        &bus,
        "--cluster-announce-ip",
        "127.0.0.1",
        "--cluster-announce-port",
        &announce,
    ]);
    upstream.store(node.port(), Ordering::SeqCst);
    assert_eq!(node.cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).trim(), "OK");
    eventually(Duration::from_secs(15), "cluster_state:ok", || async {
        node.cli(&["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
            .then_some(())
    })
    .await;
    a_cut_mark_answers_503(&proxy, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standalone_a_mark_whose_connection_dropped_after_it_applied_is_503_not_a_replay() {
    if !redis_available() {
        return;
    }
    let upstream = Arc::new(AtomicU16::new(0));
    let proxy = cut_proxy(upstream.clone()).await;
    let redis = RedisServer::start();
    upstream.store(redis.port(), Ordering::SeqCst);
    a_cut_mark_answers_503(&proxy, false).await;
}
