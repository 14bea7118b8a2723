//! The Redis replay store and replicas: real `redis-server` processes (one per test,
//! on free ports) and several `fedbroker serve` processes sharing a config, a key
//! directory and one Redis. Covers one-time use across replicas, Redis outages, a
//! paused Redis, fail_open, a Redis Cluster failover, a replica killed under load, and
//! the config check that refuses replicas on the memory backend.
//!
//! Without `redis-server` these tests fail naming it, unless
//! `FEDBROKER_SKIP_REDIS_TESTS=1` (see `integration_tests::redis_server`).

use integration_tests::broker::signal;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::eventually;
use integration_tests::redis_server::{RedisCluster, RedisServer, redis_available};
use integration_tests::tokens::{decode_unverified, sha256_hex};
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Reply, dedent, exchange_form, run_cli_in};
use serde_json::json;

use crate::support::{
    ISSUER_NAME, TARGET, assert_exchanges_once, assert_one_of_concurrent_copies, assert_spent_at,
    default_rule, redis_or_skip, str_claim,
};

/// The public URL every replica shares (a load balancer's name); the harness talks to
/// each replica on its own port.
const SHARED_URL: &str = "http://fedbroker.test";

/// A broker config with `replay` (YAML at column 0) for `fake`. With `key_dir`, the
/// server section names [`SHARED_URL`] in flow style and keys come from `key_dir`: what
/// replicas behind one name share. (The harness reads only a block-style
/// `public_url:` line; without one it talks to `http://127.0.0.1:PORT`.)
fn config(fake: &FakeIssuer, replay: &str, key_dir: Option<&Path>) -> String {
    let mut yaml = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(default_rule())
        .top_level(replay)
        .render();
    if let Some(dir) = key_dir {
        let server = "server:\n  listen: 127.0.0.1:@PORT@\n  public_url: http://127.0.0.1:@PORT@\n";
        assert!(yaml.contains(server), "unexpected config shape:\n{yaml}");
        yaml = yaml.replace(
            server,
            &format!("server: {{listen: \"127.0.0.1:@PORT@\", public_url: \"{SHARED_URL}\"}}\n"),
        );
        yaml = yaml.replace("key_dir: @DIR@/keys", &format!("key_dir: {}", dir.display()));
    }
    yaml
}

/// A Redis, a fake issuer, a key directory and the config of two replicas sharing
/// them behind [`SHARED_URL`].
fn shared_replicas() -> (RedisServer, FakeIssuer, tempfile::TempDir, String) {
    let redis = RedisServer::start();
    let fake = FakeIssuer::start();
    let keys = tempfile::tempdir().expect("key dir");
    let yaml = config(
        &fake,
        &redis_replay(&redis.url(), "  replicas: 2\n"),
        Some(keys.path()),
    );
    (redis, fake, keys, yaml)
}

fn redis_replay(url: &str, extra: &str) -> String {
    format!("replay:\n  backend: redis\n  redis_url: {url}\n  command_timeout: 250ms\n{extra}")
}

fn assert_unavailable(reply: &Reply, token: &str) {
    reply.assert_error(503, "temporarily_unavailable", token);
    assert!(
        reply.header("retry-after").is_some(),
        "503 without Retry-After: {reply:?}"
    );
}

/// The Redis key of a token's replay mark (the broker's `replay_key` under the default prefix).
fn redis_key(token: &str) -> String {
    let (_, claims) = decode_unverified(token);
    let mut input = b"jti\0".to_vec();
    input.extend_from_slice(str_claim(&claims, "iss").as_bytes());
    input.push(0);
    input.extend_from_slice(str_claim(&claims, "jti").as_bytes());
    format!("fedbroker:replay:{}", sha256_hex(&input))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_sharing_redis_accept_a_token_once_and_publish_the_same_keys() {
    if !redis_available() {
        return;
    }
    let (redis, fake, _keys, yaml) = shared_replicas();
    let a = Arc::new(Broker::start(&yaml).await);
    let b = Arc::new(Broker::start(&yaml).await);

    let token = fake.mint(json!({}));
    assert_one_of_concurrent_copies(&[a.clone(), b.clone()], &token, 50).await;
    let mark = redis.cli(&["PTTL", &redis_key(&token)]);
    let ttl_ms: i64 = mark.trim().parse().unwrap_or(-2);
    assert!(ttl_ms > 0, "the mark carries an expiry (exp + skew): PTTL {mark}");

    for path in ["/jwks.json", "/.well-known/openid-configuration"] {
        let (from_a, from_b) = (a.get(path).await, b.get(path).await);
        assert_eq!(from_a.status, 200, "{path}: {from_a:?}");
        assert_eq!(from_a.json, from_b.json, "{path} differs between replicas");
    }
    assert_eq!(
        a.get("/.well-known/openid-configuration").await.json["issuer"],
        SHARED_URL
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_answers_503_and_recovers_without_a_restart() {
    if !redis_available() {
        return;
    }
    // The broker starts while Redis is down, unready until Redis answers.
    let mut redis = RedisServer::not_started();
    let fake = FakeIssuer::start();
    let broker = Broker::start(&config(&fake, &redis_replay(&redis.url(), ""), None)).await;
    let readyz = broker.get("/readyz").await;
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert_eq!(readyz.json["replay"]["backend"], "redis");
    let token = fake.mint(json!({}));
    assert_unavailable(&broker.exchange(&token, TARGET).await, &token);

    redis.restart();
    eventually(
        Duration::from_secs(10),
        "/readyz 200 once Redis is up",
        || async { (broker.get("/readyz").await.status == 200).then_some(()) },
    )
    .await;
    // The 503 above did not record the token: it exchanges once now.
    assert_exchanges_once(&broker, &token, TARGET).await;

    redis.kill();
    let fresh = fake.mint(json!({}));
    assert_unavailable(&broker.exchange(&fresh, TARGET).await, &fresh);
    eventually(
        Duration::from_secs(5),
        "/readyz 503 while Redis is down",
        || async { (broker.get("/readyz").await.status == 503).then_some(()) },
    )
    .await;

    redis.restart();
    eventually(
        Duration::from_secs(15),
        "exchanges succeed after Redis restarts",
        || async {
            let token = fake.mint(json!({}));
            (broker.exchange(&token, TARGET).await.status == 200).then_some(())
        },
    )
    .await;
    assert_eq!(broker.get("/readyz").await.status, 200);
    let metrics = broker.get("/metrics").await.text;
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fedbroker_replay_store_errors_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(errors >= 2.0, "replay-store errors are counted:\n{metrics}");
    assert!(metrics.contains("fedbroker_replay_store_up 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_fails_requests_promptly_instead_of_hanging() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let fake = FakeIssuer::start();
    let broker = Broker::start(&config(&fake, &redis_replay(&redis.url(), ""), None)).await;
    assert_eq!(broker.exchange(&fake.mint(json!({})), TARGET).await.status, 200);

    redis.pause();
    let token = fake.mint(json!({}));
    let started = Instant::now();
    let reply = broker.exchange(&token, TARGET).await;
    let took = started.elapsed();
    redis.resume();
    assert_unavailable(&reply, &token);
    assert!(
        took < Duration::from_secs(5),
        "a paused Redis held the request for {took:?}"
    );

    eventually(
        Duration::from_secs(10),
        "exchanges succeed after SIGCONT",
        || async { (broker.exchange(&fake.mint(json!({})), TARGET).await.status == 200).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_issues_unrecorded_and_says_so_in_the_audit() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::not_started();
    let fake = FakeIssuer::start();
    let replay = redis_replay(&redis.url(), "  on_unavailable: fail_open\n");
    let broker = Broker::start(&config(&fake, &replay, None)).await;
    assert_eq!(broker.get("/readyz").await.status, 503);

    let token = fake.mint(json!({}));
    let reply = broker.exchange(&token, TARGET).await;
    assert_eq!(
        reply.status, 200,
        "fail_open issues while Redis is down: {}",
        reply.text
    );
    let lines = broker.wait_for_audit_lines(1).await;
    let line = lines.last().expect("an audit line");
    assert_eq!(line["outcome"], "allow", "{line}");
    assert_eq!(line["replay"], "unrecorded_fail_open", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warns_when_redis_may_evict_marks() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let fake = FakeIssuer::start();
    let broker = Broker::start(&config(&fake, &redis_replay(&redis.url(), ""), None)).await;
    eventually(Duration::from_secs(10), "a maxmemory-policy warning", || async {
        let log = broker.stderr();
        log.lines()
            .any(|l| l.contains("maxmemory-policy") && l.contains("WARN") && l.contains("allkeys-lru"))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_replica_serves_again_and_still_refuses_used_tokens() {
    if !redis_available() {
        return;
    }
    let (_redis, fake, _keys, yaml) = shared_replicas();
    let mut broker = Broker::start(&yaml).await;
    let token = fake.mint(json!({}));
    assert_eq!(broker.exchange(&token, TARGET).await.status, 200);
    let jwks = broker.get("/jwks.json").await.json;

    let status = broker.signal_and_wait("TERM").await;
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0\n{}", broker.stderr());
    let broker = Broker::builder()
        .dir(broker.stop_and_keep_dir())
        .start(&yaml)
        .await;
    assert_eq!(
        broker.get("/jwks.json").await.json,
        jwks,
        "same keys after a restart"
    );
    broker
        .exchange_refused(&token, TARGET, 400, "invalid_request")
        .await;
    assert_eq!(broker.exchange(&fake.mint(json!({})), TARGET).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_redis_with_a_password_from_the_environment() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start_tls("tls-s3cret");
    let fake = FakeIssuer::start();
    let url = format!(
        "rediss://:${{FEDBROKER_TEST_REDIS_PASSWORD}}@127.0.0.1:{}/0",
        redis.port()
    );
    let broker = Broker::builder()
        .env("FEDBROKER_TEST_REDIS_PASSWORD", "tls-s3cret")
        // rustls-native-certs reads the trusted roots from here.
        .env("SSL_CERT_FILE", redis.ca_pem().to_str().expect("UTF-8 path"))
        .start(&config(&fake, &redis_replay(&url, ""), None))
        .await;
    eventually(Duration::from_secs(10), "/readyz 200 over TLS", || async {
        (broker.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    let token = fake.mint(json!({}));
    assert_exchanges_once(&broker, &token, TARGET).await;
    assert_eq!(redis.cli(&["EXISTS", &redis_key(&token)]).trim(), "1");
    assert!(!broker.stderr().contains("tls-s3cret"), "the password is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_a_request_in_flight_then_exits_0() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let fake = FakeIssuer::start();
    let replay = format!(
        "replay:\n  backend: redis\n  redis_url: {}\n  command_timeout: 10s\n",
        redis.url()
    );
    let mut broker = Broker::start(&config(&fake, &replay, None)).await;
    assert_eq!(broker.exchange(&fake.mint(json!({})), TARGET).await.status, 200);

    // A request waits on a paused Redis while SIGTERM arrives; Redis resumes later.
    redis.pause();
    let token = fake.mint(json!({}));
    let pid = broker.pid();
    let (reply, ()) = tokio::join!(broker.exchange(&token, TARGET), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        signal(pid, "TERM");
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.resume();
    });
    assert_eq!(
        reply.status, 200,
        "the request in flight is finished: {}",
        reply.text
    );
    // The process is gone or going: signal_and_wait's own SIGTERM is harmless.
    let status = broker.signal_and_wait("TERM").await;
    assert_eq!(status.code(), Some(0), "{}", broker.stderr());
}

/// One exchange without panicking on a dead broker: `None` for a transport error.
async fn try_exchange(client: &reqwest::Client, url: &str, token: &str) -> Option<u16> {
    let response = client
        .post(url)
        .form(&exchange_form(token, TARGET))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_replica_under_load_leaves_the_other_serving_and_no_token_issued_twice() {
    if !redis_available() {
        return;
    }
    let (_redis, fake, _keys, yaml) = shared_replicas();
    let a = Broker::start(&yaml).await;
    let b = Broker::start(&yaml).await;
    let (url_a, url_b) = (format!("{}/token", a.origin()), format!("{}/token", b.origin()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // 120 tokens, each sent to both replicas at once, 8 tokens in flight; A is
    // killed (SIGKILL) a third of the way in.
    let tokens: Vec<String> = (0..120).map(|_| fake.mint(json!({}))).collect();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.iter().enumerate() {
        if i == 40 {
            a.signal("KILL");
            let dead_by = Instant::now() + Duration::from_secs(5);
            while std::net::TcpStream::connect(("127.0.0.1", a.port())).is_ok() {
                assert!(Instant::now() < dead_by, "replica A still accepts connections");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let permit = semaphore.clone().acquire_owned().await.expect("semaphore");
        let (client, token, url_a, url_b) = (client.clone(), token.clone(), url_a.clone(), url_b.clone());
        tasks.spawn(async move {
            let (from_a, from_b) = tokio::join!(
                try_exchange(&client, &url_a, &token),
                try_exchange(&client, &url_b, &token)
            );
            drop(permit);
            (i, from_a, from_b)
        });
    }
    let results = tasks.join_all().await;

    let mut issued: HashMap<usize, usize> = HashMap::new();
    for (i, from_a, from_b) in &results {
        let count = [from_a, from_b].iter().filter(|s| ***s == Some(200)).count();
        issued.insert(*i, count);
        assert!(
            matches!(from_b, Some(200) | Some(400)),
            "replica B must keep answering (token {i}): {from_b:?}"
        );
    }
    let twice: Vec<_> = issued.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tokens issued twice: {twice:?}");
    // Every token sent after A died went through B alone.
    for (i, from_a, from_b) in &results {
        if *i >= 40 {
            assert_eq!(*from_a, None, "A is dead (token {i})");
            assert_eq!(*from_b, Some(200), "B issues what A could not (token {i})");
        }
    }
    let total: usize = issued.values().sum();
    // A token whose mark A made just before dying is refused by B and never issued:
    // at most the 8 in flight at the kill.
    assert!(
        total >= 120 - 8,
        "only tokens in flight at the kill may be lost: {total}"
    );
    assert_eq!(b.get("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_refuses_replays_across_replicas_and_after_a_failover() {
    if !redis_available() {
        return;
    }
    let cluster = RedisCluster::start(3, 1);
    let fake = FakeIssuer::start();
    let keys = tempfile::tempdir().expect("key dir");
    let urls = cluster.urls()[..3].join(", ");
    let replay = format!(
        "replay:\n  backend: redis\n  redis_cluster_urls: [{urls}]\n  command_timeout: 1s\n  replicas: 2\n"
    );
    let yaml = config(&fake, &replay, Some(keys.path()));
    let a = Broker::start(&yaml).await;
    let b = Broker::start(&yaml).await;
    for broker in [&a, &b] {
        eventually(Duration::from_secs(10), "/readyz 200 on the cluster", || async {
            (broker.get("/readyz").await.status == 200).then_some(())
        })
        .await;
    }

    let token = fake.mint(json!({}));
    assert_eq!(a.exchange(&token, TARGET).await.status, 200);
    b.exchange(&token, TARGET)
        .await
        .assert_error(400, "invalid_request", &token);

    // Fail the key's master over to its replica (CLUSTER FAILOVER: the replica first
    // catches up with the master's replication stream), then ask both replicas again.
    let key = redis_key(&token);
    let master = cluster.master_for(&key);
    let replica = cluster.replica_of(master);
    cluster.failover(replica);
    assert_eq!(
        cluster.master_for(&key),
        replica,
        "the replica serves the key's slot now"
    );
    assert_eq!(
        cluster.nodes[replica].cli(&["EXISTS", &key]).trim(),
        "1",
        "the mark survived"
    );
    for broker in [&a, &b] {
        assert_spent_at(broker, &token).await;
    }
    let fresh = fake.mint(json!({}));
    assert_eq!(b.exchange(&fresh, TARGET).await.status, 200);
    a.exchange(&fresh, TARGET)
        .await
        .assert_error(400, "invalid_request", &fresh);

    // An unplanned failover: the key's master dies (SIGKILL). Until its replica (the old
    // master) is promoted, marks in its slots answer 503; after, the marks it had
    // replicated are still refused.
    let mut cluster = cluster;
    cluster.nodes[replica].kill();
    let unavailable = std::sync::atomic::AtomicUsize::new(0);
    for (token, broker) in [(&token, &a), (&fresh, &b)] {
        let reply = eventually(
            Duration::from_secs(30),
            "the cluster promotes the replica",
            || async {
                let reply = broker.exchange(token, TARGET).await;
                if reply.status == 503 {
                    unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                (reply.status != 503).then_some(reply)
            },
        )
        .await;
        reply.assert_error(400, "invalid_request", token);
    }
    let unavailable = unavailable.into_inner();
    eprintln!("cluster: {unavailable} answers of 503 while the killed master's replica took over");
    assert_eq!(
        cluster.master_for(&key),
        master,
        "the old master serves the slot again"
    );
}

#[test]
fn memory_backend_with_replicas_and_a_one_time_issuer_is_a_config_error() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config(&fake, "replay:\n  backend: memory\n  replicas: 2\n", None)
        .replace("@PORT@", "18080")
        .replace("@DIR@", dir.path().to_str().expect("UTF-8"));
    std::fs::write(dir.path().join("fedbroker.yaml"), &yaml).expect("write config");
    let out = run_cli_in(dir.path(), &["check", "--config", "fedbroker.yaml"], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    // check's report is on stdout.
    assert!(out.stdout.contains("replay.replicas"), "{}", out.all());
    assert!(
        out.stdout.contains(ISSUER_NAME),
        "names the one_time issuer: {}",
        out.all()
    );

    let reusable = yaml.replace(
        &dedent(&fake.issuer_yaml(ISSUER_NAME)),
        &dedent(&fake.issuer_yaml_with(ISSUER_NAME, "replay: reusable")),
    );
    assert_ne!(reusable, yaml, "the issuer entry was rewritten");
    std::fs::write(dir.path().join("fedbroker.yaml"), &reusable).expect("write config");
    let out = run_cli_in(dir.path(), &["check", "--config", "fedbroker.yaml"], &[]);
    assert_eq!(out.code, Some(0), "reusable tokens need no shared store: {out:?}");
}
