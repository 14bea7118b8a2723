//! Replicas that agree on one policy (issue 10, items 1, 3 and 6): two `serve` processes
//! sharing a real Redis for the replay marks and the admin state, each with its own
//! config file and rule files (as an operator runs them), checked through what every
//! replica then serves (`/token`) and says (`/readyz`).
//!
//! - An admin change racing a file reload that removes a rule: the change is validated
//!   and installed under one lock, against the files as they are then, so the removed
//!   rule never comes back.
//! - A replica that cannot install the admin state in Redis keeps serving the last one
//!   that installed, keeps applying file reloads against it, does not record the new
//!   version as synced, answers `/readyz` 503 with the reason, and recovers when a later
//!   state installs.
//! - `/readyz` answers while a reload of many rules runs: it takes no lock the reload
//!   holds.
//!
//! Without `redis-server` these tests fail naming it, unless
//! `FEDBROKER_SKIP_REDIS_TESTS=1` (see `integration_tests::redis_server`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{
    ADMIN_TOKEN, HMAC_KEY, admin_send, exchange_status, issuer_subject_rule, redis_or_skip, rule_body,
};
use integration_tests::eventually;
use integration_tests::redis_server::{RedisServer, redis_available};
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Reply};
use reqwest::Method;
use serde_json::{Value, json};

/// The fake issuer's name in every replica's config file.
const ISSUER: &str = "home";

/// Generous bound for a reload, a change reaching the other replica, or a start with
/// thousands of rules on a busy machine (polled, never slept).
const SETTLE: Duration = Duration::from_secs(60);

/// A replica's config: `issuers` (YAML list items), rules from `rules/*.yaml`, replay
/// marks and the admin state in the Redis at `redis_url`.
fn config(redis_url: &str, issuers: &[String]) -> String {
    let mut config = BrokerConfig::new();
    for issuer in issuers {
        config = config.issuer(issuer);
    }
    config
        .top_level(format!(
            "rules_files: [rules/*.yaml]\nreplay:\n  backend: redis\n  redis_url: {redis_url}\n  replicas: 2\n\
             admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n  state_hmac_key: {HMAC_KEY}\n"
        ))
        .render()
}

/// One allow rule (a rule-file list item): the fake's default subject, through
/// `issuer`, may get `target`.
fn allow_rule(name: &str, issuer: &str, target: &str) -> String {
    issuer_subject_rule(name, issuer, &format!("audiences: [{target}]"), "")
}

/// `n` rules that never match (another subject), each with a CEL condition to
/// compile: they make a load take long enough to race.
fn filler_rules(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "- name: filler-{i}\n  match:\n    issuer: {ISSUER}\n    subject: \"nobody-{i}\"\n    \
                 condition: 'claims.repository == \"acme/r{i}\"'\n    audiences: [filler-{i}]\n"
            )
        })
        .collect()
}

/// An admin API request without extra headers.
async fn admin(broker: &Broker, method: Method, path: &str, body: Option<&Value>) -> Reply {
    admin_send(broker, method, path, &[], body).await
}

async fn put_rule(broker: &Broker, name: &str, body: &Value) -> Reply {
    admin(
        broker,
        Method::PUT,
        &format!("/admin/v1/rules/{name}"),
        Some(body),
    )
    .await
}

/// `/readyz` as status and JSON.
async fn readyz(broker: &Broker) -> (u16, Value) {
    let reply = broker.get("/readyz").await;
    (reply.status, reply.json)
}

fn generation(readyz: &Value) -> u64 {
    readyz["rules"]["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rules.generation in {readyz}"))
}

/// Start a replica with `files` (relative path, contents) and wait until it is ready.
async fn replica(yaml: &str, files: &[(&str, String)]) -> Broker {
    let mut builder = Broker::builder();
    for (path, contents) in files {
        builder = builder.file(path, contents);
    }
    let broker = builder.start(yaml).await;
    eventually(SETTLE, "/readyz 200 at start", || async {
        (readyz(&broker).await.0 == 200).then_some(())
    })
    .await;
    broker
}

/// Write to a temporary name in the same directory, then rename over `path` (as
/// editors and config-management tools do).
fn write_via_rename(path: &Path, text: &str) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

/// Wait until `broker` has installed at least `after + 2` generations and is idle and
/// without a reload error: the admin change and the file reload of one round.
async fn wait_settled(broker: &Broker, after: u64) -> Value {
    eventually(SETTLE, "the change and the reload installed", || async {
        let (status, body) = readyz(broker).await;
        let done = status == 200
            && generation(&body) >= after + 2
            && body["rules"]["reloading"] == false
            && body["rules"]["last_reload_error"].is_null();
        done.then_some(body)
    })
    .await
}

/// Issue 10, item 1. Each round, an admin change is sent to replica A and, while A is
/// loading it (seen on `/readyz` as `rules.reloading`), a rule is removed from both
/// replicas' rule files. Before the fix A validated the change against the files
/// outside the install lock and installed it after the reload, bringing the removed
/// rule back until the next file change. Now every replica ends with the rule gone and
/// the API-made rule in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_change_racing_a_file_reload_never_brings_back_the_removed_rule() {
    if !redis_available() {
        return;
    }
    const ROUNDS: usize = 3;
    // Enough rules that loading them takes longer than the reload's 300 ms debounce.
    const FILLER: usize = 10_000;
    let redis = RedisServer::start();
    let fake = FakeIssuer::start();
    let yaml = config(&redis.url(), &[fake.issuer_yaml(ISSUER)]);
    // Rules revocable-I for I in `from`..ROUNDS: round I removes revocable-I.
    let revocable = |from: usize| -> String {
        (from..ROUNDS)
            .map(|i| allow_rule(&format!("revocable-{i}"), ISSUER, &format!("revocable-{i}")))
            .collect()
    };
    // Rule files load in name order: the revocable rules first, so a load has read them
    // long before it is done with the filler.
    let files = [
        ("rules/a-revocable.yaml", revocable(0)),
        ("rules/z-filler.yaml", filler_rules(FILLER)),
    ];
    let a = Arc::new(replica(&yaml, &files).await);
    let b = replica(&yaml, &files).await;
    for broker in [&*a, &b] {
        assert_eq!(exchange_status(broker, &fake, "revocable-0").await, 200);
    }

    for round in 0..ROUNDS {
        let before_a = generation(&readyz(&a).await.1);
        let before_b = generation(&readyz(&b).await.1);
        let name = format!("api-{round}");
        let change = {
            let (a, name) = (a.clone(), name.clone());
            tokio::spawn(async move { put_rule(&a, &name, &rule_body(ISSUER, &name)).await })
        };
        // A is loading the change (its validation reads the rule files first).
        eventually(SETTLE, "A loading the admin change", || async {
            assert!(
                !change.is_finished(),
                "round {round}: the change was installed before /readyz showed it loading"
            );
            (readyz(&a).await.1["rules"]["reloading"] == true).then_some(())
        })
        .await;
        // The operator revokes a rule on every replica meanwhile.
        for broker in [&*a, &b] {
            write_via_rename(
                &broker.dir().join("rules/a-revocable.yaml"),
                &revocable(round + 1),
            );
        }
        let reply = change.await.expect("the change task");
        assert_eq!(reply.status, 201, "round {round}: {reply:?}\n{}", a.stderr());

        // Both replicas: the change and the reload installed, nothing pending.
        for (broker, before) in [(&*a, before_a), (&b, before_b)] {
            let body = wait_settled(broker, before).await;
            assert_eq!(
                body["rules"]["loaded"],
                json!(FILLER + ROUNDS),
                "round {round}: every revoked rule gone, every API-made one there: {body}"
            );
        }
        for (replica, broker) in [("A", &*a), ("B", &b)] {
            for revoked in 0..=round {
                assert_eq!(
                    exchange_status(broker, &fake, &format!("revocable-{revoked}")).await,
                    400,
                    "round {round}: replica {replica} issues under revocable-{revoked}, removed from its file\n{}",
                    broker.stderr()
                );
            }
            for kept in round + 1..ROUNDS {
                assert_eq!(
                    exchange_status(broker, &fake, &format!("revocable-{kept}")).await,
                    200
                );
            }
            for made in 0..=round {
                assert_eq!(
                    exchange_status(broker, &fake, &format!("api-{made}")).await,
                    200,
                    "round {round}: replica {replica} lacks api-{made}"
                );
            }
        }
    }
}

/// Issue 10, item 3. Replica A's config has an issuer `extra` that B's lacks (a config
/// rollout half done); a rule made through A that uses it cannot install on B. B keeps
/// serving the last state that installed, keeps applying file reloads against it, does
/// not record the new version, and answers 503 with the reason until a later state
/// installs. Before the fix B recorded the version, answered 200, and every later file
/// reload failed, so a rule removed from its file kept issuing on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_cannot_install_the_admin_state_keeps_the_last_one_and_is_unready() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let fake = FakeIssuer::start();
    let extra = FakeIssuer::start();
    let yaml_a = config(
        &redis.url(),
        &[fake.issuer_yaml(ISSUER), extra.issuer_yaml("extra")],
    );
    let yaml_b = config(&redis.url(), &[fake.issuer_yaml(ISSUER)]);
    let file_rules = |with_second: bool| -> String {
        let mut rules = allow_rule("file-1", ISSUER, "file-1");
        if with_second {
            rules.push_str(&allow_rule("file-2", ISSUER, "file-2"));
        }
        rules
    };
    let a = replica(&yaml_a, &[("rules/file.yaml", file_rules(true))]).await;
    let b = replica(&yaml_b, &[("rules/file.yaml", file_rules(true))]).await;

    // Version 1 installs everywhere.
    let reply = put_rule(&a, "api-1", &rule_body(ISSUER, "api-1")).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    eventually(SETTLE, "B serving api-1", || async {
        (exchange_status(&b, &fake, "api-1").await == 200).then_some(())
    })
    .await;
    let (_, synced) = readyz(&b).await;
    let version_1 = synced["admin"]["version"].clone();
    assert_eq!(synced["admin"]["synced"], true, "{synced}");

    // Version 2 uses `extra`: fine on A, impossible on B.
    let reply = put_rule(&a, "api-extra", &rule_body("extra", "api-extra")).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    // Wait for the out-of-step 503 itself: on a loaded machine a probe may also be 503
    // for a moment for another reason (a slow Redis PING), which is not what is tested.
    let unready = eventually(SETTLE, "B unready: out of step", || async {
        let (status, body) = readyz(&b).await;
        (status == 503 && body["admin"]["synced"] == false).then_some(body)
    })
    .await;
    assert_eq!(unready["status"], "unavailable", "{unready}");
    assert_eq!(unready["admin"]["synced"], false, "{unready}");
    assert_eq!(
        unready["admin"]["version"], version_1,
        "the version that failed is not recorded as synced: {unready}"
    );
    assert_ne!(
        unready["admin"]["not_installed"]["version"], version_1,
        "{unready}"
    );
    assert!(
        unready["admin"]["not_installed"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("extra")),
        "the reason names the problem: {unready}"
    );
    let reasons = unready["reasons"].as_array().expect("reasons").clone();
    assert!(
        reasons.iter().any(|r| r
            .as_str()
            .is_some_and(|r| r.contains("out of step") && r.contains("extra"))),
        "{unready}"
    );
    let (status, body) = readyz(&a).await;
    assert_eq!(status, 200, "A installed it: {body}");
    assert_eq!(body["reasons"], json!([]), "{body}");

    // B keeps serving the last state that installed (and its files).
    assert_eq!(exchange_status(&b, &fake, "api-1").await, 200);
    assert_eq!(exchange_status(&b, &fake, "file-2").await, 200);
    assert_eq!(exchange_status(&a, &extra, "api-extra").await, 200);
    assert_eq!(exchange_status(&b, &extra, "api-extra").await, 400);

    // A file reload on B applies against that state: file-2 stops issuing on B.
    let before = generation(&readyz(&b).await.1);
    for broker in [&a, &b] {
        write_via_rename(&broker.dir().join("rules/file.yaml"), &file_rules(false));
    }
    // (Before the fix every reload failed with the state B could not install, so the
    // generation never moved.)
    eventually(SETTLE, "B reloading its files", || async {
        let (_, body) = readyz(&b).await;
        (generation(&body) > before).then_some(())
    })
    .await;
    assert_eq!(exchange_status(&b, &fake, "file-2").await, 400, "{}", b.stderr());
    assert_eq!(exchange_status(&b, &fake, "file-1").await, 200);
    assert_eq!(exchange_status(&b, &fake, "api-1").await, 200);
    // Still out of step, and saying so.
    let (status, body) = readyz(&b).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["admin"]["version"], version_1, "{body}");

    // A later state that installs: B is in step and ready again.
    let reply = admin(&a, Method::DELETE, "/admin/v1/rules/api-extra", None).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let ready = eventually(SETTLE, "B ready again", || async {
        let (status, body) = readyz(&b).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(ready["admin"]["synced"], true, "{ready}");
    assert!(ready["admin"].get("not_installed").is_none(), "{ready}");
    assert_eq!(ready["reasons"], json!([]), "{ready}");
    let (_, on_a) = readyz(&a).await;
    assert_eq!(
        ready["admin"]["version"], on_a["admin"]["version"],
        "same state as A"
    );
    assert_eq!(exchange_status(&b, &fake, "api-1").await, 200);
    assert_eq!(exchange_status(&b, &fake, "file-2").await, 400);
}

/// Issue 10, item 6. `/readyz` on a replica reloading many rules answers at once,
/// every time: probes sent while the reload runs see `rules.reloading` true and 200.
/// Before the fix `/readyz` took the lock the reload holds for the whole load (each
/// probe waited for the reload and held a worker meanwhile), so no probe could answer
/// during it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_answers_while_a_reload_of_many_rules_runs() {
    if !redis_available() {
        return;
    }
    const FILLER: usize = 10_000;
    let redis = RedisServer::start();
    let fake = FakeIssuer::start();
    let yaml = config(&redis.url(), &[fake.issuer_yaml(ISSUER)]);
    let files = [("rules/filler.yaml", filler_rules(FILLER))];
    let a = replica(&yaml, &files).await;
    let b = replica(&yaml, &files).await;
    // An admin state in Redis, so the reload combines the files with it.
    let reply = put_rule(&b, "api-1", &rule_body(ISSUER, "api-1")).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    eventually(SETTLE, "A serving api-1", || async {
        (exchange_status(&a, &fake, "api-1").await == 200).then_some(())
    })
    .await;

    let before = generation(&readyz(&a).await.1);
    write_via_rename(&a.dir().join("rules/filler.yaml"), &filler_rules(FILLER + 1));
    // Probe back to back until the reload's generation shows; every probe must answer
    // 200, and some must come while the reload runs.
    let start = Instant::now();
    let mut probes = 0;
    let mut during_reload = 0;
    loop {
        let (status, body) = readyz(&a).await;
        probes += 1;
        assert_eq!(status, 200, "probe {probes}: {body}");
        if generation(&body) > before {
            assert_eq!(body["rules"]["loaded"], json!(FILLER + 2), "{body}");
            break;
        }
        if body["rules"]["reloading"] == true {
            during_reload += 1;
        }
        assert!(start.elapsed() < SETTLE, "the reload did not finish: {body}");
        // Pacing only: the loop ends on what /readyz says.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        during_reload >= 3,
        "only {during_reload} of {probes} probes answered while the reload ran"
    );
}
