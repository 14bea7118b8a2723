//! Hot reload: rule files, the config file and SIGHUP, through the real binary.
//!
//! A reload is observed through `/readyz` (`rules.generation`, `rules.last_reload_error`)
//! and `/metrics`; tests poll for it (debounce is 300 ms) rather than sleep.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::tokens::{decode_unverified, verify_issued};
use integration_tests::{Broker, BrokerConfig, FakeIssuer};
use serde_json::{Value, json};

use crate::support::{ISSUER_NAME, TARGET, allow_rule, default_rule};

/// How long a file change or SIGHUP may take to show in `/readyz`.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

const TARGET_B: &str = "target-b";
const TARGET_C: &str = "target-c";

/// The fake as `k8s`, no inline rules, rules from `rules/*.yaml`.
fn config_with_rule_files(fake: &FakeIssuer) -> BrokerConfig {
    BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .top_level("rules_files: [rules/*.yaml]")
}

/// A fake and a broker reading `rules/*.yaml`, with `rules/a.yaml` granting [`TARGET`].
async fn broker_with_rule_file_a() -> (FakeIssuer, Broker) {
    let fake = FakeIssuer::start();
    let broker = Broker::builder()
        .file("rules/a.yaml", &allow_rule("grant-a", TARGET))
        .start(&config_with_rule_files(&fake).render())
        .await;
    (fake, broker)
}

/// `/readyz`'s `rules` object.
async fn rules_status(broker: &Broker) -> Value {
    let reply = broker.get("/readyz").await;
    assert_eq!(reply.status, 200, "/readyz: {reply:?}\n{}", broker.stderr());
    let rules = reply.json["rules"].clone();
    assert!(
        rules["generation"].is_u64() && rules.get("last_reload_error").is_some(),
        "/readyz lacks rules.generation / rules.last_reload_error: {}",
        reply.text
    );
    rules
}

async fn generation(broker: &Broker) -> u64 {
    rules_status(broker).await["generation"]
        .as_u64()
        .expect("generation is an integer")
}

/// Poll `/readyz` until its `rules` object satisfies `done`, for [`RELOAD_TIMEOUT`];
/// returns it, or panics with "`failure` within ...".
async fn wait_for_rules(broker: &Broker, failure: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let rules = rules_status(broker).await;
        if done(&rules) {
            return rules;
        }
        if Instant::now() > deadline {
            panic!(
                "{failure} within {RELOAD_TIMEOUT:?}: {rules}\n--- stderr ---\n{}",
                broker.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Poll `/readyz` until `rules.generation` exceeds `previous`; returns the `rules` object.
async fn wait_for_generation_above(broker: &Broker, previous: u64) -> Value {
    let failure = format!("generation did not pass {previous}");
    wait_for_rules(broker, &failure, |rules| {
        rules["generation"].as_u64().is_some_and(|g| g > previous)
    })
    .await
}

/// Poll `/readyz` until `rules.last_reload_error` is a string; returns the `rules` object.
async fn wait_for_reload_error(broker: &Broker) -> Value {
    wait_for_rules(broker, "no last_reload_error", |rules| {
        rules["last_reload_error"].is_string()
    })
    .await
}

/// Poll the broker's stderr until it contains every one of `needles`.
async fn wait_for_stderr(broker: &Broker, needles: &[&str]) {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let stderr = broker.stderr();
        if needles.iter().all(|n| stderr.contains(n)) {
            return;
        }
        if Instant::now() > deadline {
            panic!("stderr does not mention all of {needles:?} within {RELOAD_TIMEOUT:?}:\n{stderr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Write to a temporary name in the same directory, then rename over `path` (as editors do).
fn write_via_rename(path: &Path, text: &str) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

/// Truncate and rewrite `path` in place (same inode).
fn write_in_place(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open for overwrite");
    file.write_all(text.as_bytes()).expect("overwrite");
}

/// The value of the sample `series` (name plus labels, exactly as rendered) in `/metrics`.
async fn metric(broker: &Broker, series: &str) -> Option<f64> {
    let reply = broker.get("/metrics").await;
    assert_eq!(reply.status, 200, "/metrics: {reply:?}");
    reply.text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

async fn exchange_ok(broker: &Broker, fake: &FakeIssuer, target: &str) -> Value {
    let reply = broker.exchange(&fake.mint(json!({})), target).await;
    assert_eq!(
        reply.status,
        200,
        "exchange for {target}: {}\n--- stderr ---\n{}",
        reply.text,
        broker.stderr()
    );
    verify_issued(broker, reply.access_token(), &[target]).await.1
}

async fn assert_invalid_target(broker: &Broker, fake: &FakeIssuer, target: &str) {
    let token = fake.mint(json!({}));
    broker
        .exchange_refused(&token, target, 400, "invalid_target")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_file_change_is_picked_up_without_restart() {
    let (fake, broker) = broker_with_rule_file_a().await;
    let rules_dir = broker.dir().join("rules");
    exchange_ok(&broker, &fake, TARGET).await;
    assert_invalid_target(&broker, &fake, TARGET_B).await;
    let start = rules_status(&broker).await;
    let g0 = start["generation"].as_u64().expect("generation");
    assert_eq!(start["loaded"], 1, "{start}");
    assert!(start["last_reload_error"].is_null(), "{start}");

    // A new rule file, written under a temporary name and renamed into place.
    write_via_rename(&rules_dir.join("b.yaml"), &allow_rule("grant-b", TARGET_B));
    let after_add = wait_for_generation_above(&broker, g0).await;
    let g1 = after_add["generation"].as_u64().expect("generation");
    assert_eq!(after_add["loaded"], 2, "{after_add}");
    assert!(after_add["last_reload_error"].is_null(), "{after_add}");
    exchange_ok(&broker, &fake, TARGET_B).await;
    exchange_ok(&broker, &fake, TARGET).await;

    // The same file overwritten in place: target-b is replaced by target-c.
    write_in_place(&rules_dir.join("b.yaml"), &allow_rule("grant-c", TARGET_C));
    let after_edit = wait_for_generation_above(&broker, g1).await;
    let g2 = after_edit["generation"].as_u64().expect("generation");
    exchange_ok(&broker, &fake, TARGET_C).await;
    assert_invalid_target(&broker, &fake, TARGET_B).await;
    exchange_ok(&broker, &fake, TARGET).await;

    // Removing the file removes its rule.
    std::fs::remove_file(rules_dir.join("b.yaml")).expect("remove b.yaml");
    let after_remove = wait_for_generation_above(&broker, g2).await;
    let g3 = after_remove["generation"].as_u64().expect("generation");
    assert_eq!(after_remove["loaded"], 1, "{after_remove}");
    assert_invalid_target(&broker, &fake, TARGET_C).await;

    assert_eq!(
        metric(&broker, "fedbroker_rules_generation").await,
        Some(g3 as f64),
        "fedbroker_rules_generation follows /readyz"
    );
    let ok = metric(&broker, "fedbroker_reloads_total{result=\"ok\"}")
        .await
        .unwrap_or(0.0);
    assert!(ok >= 3.0, "fedbroker_reloads_total{{result=\"ok\"}} = {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_rule_file_keeps_the_old_rules_serving() {
    let fake = FakeIssuer::start();
    let good = allow_rule("grant-a", TARGET);
    let broker = Broker::builder()
        .file("rules/a.yaml", &good)
        .start(&config_with_rule_files(&fake).render())
        .await;
    let rules_dir = broker.dir().join("rules");
    exchange_ok(&broker, &fake, TARGET).await;
    let g0 = generation(&broker).await;

    // Two problems at once: an unknown key in a.yaml, YAML that does not parse in z.yaml.
    let unknown_key = format!("{good}    colour: blue\n");
    write_via_rename(&rules_dir.join("a.yaml"), &unknown_key);
    write_via_rename(&rules_dir.join("z.yaml"), "- name: [unclosed\n  match: {\n");
    let broken = wait_for_reload_error(&broker).await;
    // Every error is logged, naming the file.
    wait_for_stderr(&broker, &["colour", "a.yaml", "z.yaml"]).await;
    let broken_now = rules_status(&broker).await;
    assert_eq!(
        broken_now["generation"], g0,
        "a failed reload is not a generation: {broken}"
    );
    assert_eq!(broken_now["loaded"], 1, "{broken_now}");
    assert!(
        broken_now["last_reload_error"].is_string(),
        "the error stays reported: {broken_now}"
    );

    // The old rule set keeps serving: target-a still allowed, nothing else.
    for _ in 0..3 {
        exchange_ok(&broker, &fake, TARGET).await;
    }
    let errors = metric(&broker, "fedbroker_reloads_total{result=\"error\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        errors >= 1.0,
        "fedbroker_reloads_total{{result=\"error\"}} = {errors}"
    );
    assert_eq!(
        metric(&broker, "fedbroker_rules_generation").await,
        Some(g0 as f64)
    );

    // Fixed: a.yaml valid again (now granting target-b too), z.yaml gone.
    std::fs::remove_file(rules_dir.join("z.yaml")).expect("remove z.yaml");
    write_via_rename(
        &rules_dir.join("a.yaml"),
        &format!("{good}{}", allow_rule("grant-b", TARGET_B)),
    );
    let fixed = wait_for_generation_above(&broker, g0).await;
    assert!(
        fixed["last_reload_error"].is_null(),
        "a successful reload clears the error: {fixed}"
    );
    assert_eq!(fixed["loaded"], 2, "{fixed}");
    exchange_ok(&broker, &fake, TARGET).await;
    exchange_ok(&broker, &fake, TARGET_B).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let (fake, broker) = broker_with_rule_file_a().await;
    let rules_dir = broker.dir().join("rules");

    // No file changed: SIGHUP alone reloads.
    let g0 = generation(&broker).await;
    broker.signal("HUP");
    let g1 = wait_for_generation_above(&broker, g0).await["generation"]
        .as_u64()
        .expect("generation");
    exchange_ok(&broker, &fake, TARGET).await;

    // A new rule file, then SIGHUP. The watcher may reload first; SIGHUP still
    // makes a reload of its own after it.
    write_via_rename(&rules_dir.join("b.yaml"), &allow_rule("grant-b", TARGET_B));
    let before = generation(&broker).await;
    assert!(before >= g1);
    broker.signal("HUP");
    wait_for_generation_above(&broker, before).await;
    exchange_ok(&broker, &fake, TARGET_B).await;
    wait_for_stderr(&broker, &["SIGHUP"]).await;

    // The process is still the same one, serving.
    assert_eq!(broker.get("/healthz").await.status, 200);
}

/// Rule file content: target-a allowed, the issued token carries `tag` in three places.
fn versioned_rule(tag: &str) -> String {
    format!(
        "- name: versioned\n  match:\n    issuer: {ISSUER_NAME}\n    subject: \"{DEFAULT_SUBJECT}\"\n    audiences: [{TARGET}]\n  issue:\n    subject: \"svc-{tag}\"\n    claims:\n      version: \"{tag}\"\n      stage: \"{tag}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_in_flight_never_see_a_half_loaded_rule_set() {
    const TASKS: usize = 4;
    const MIN_EXCHANGES: usize = 200;
    const MAX_EXCHANGES: usize = 3000;
    const RELOADS: usize = 6;
    let fake = Arc::new(FakeIssuer::start());
    let broker = Arc::new(
        Broker::builder()
            .file("rules/a.yaml", &versioned_rule("v1"))
            .start(&config_with_rule_files(&fake).render())
            .await,
    );
    let rule_file = broker.dir().join("rules/a.yaml");
    let deadline = Instant::now() + Duration::from_secs(60);

    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (fake, broker, done, count) = (fake.clone(), broker.clone(), done.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst)
                && count.fetch_add(1, Ordering::SeqCst) < MAX_EXCHANGES
                && Instant::now() < deadline
            {
                let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
                if reply.status != 200 {
                    seen.push(Err(format!("{} {}", reply.status, reply.text)));
                    continue;
                }
                let (_, claims) = decode_unverified(reply.access_token());
                seen.push(Ok(claims));
                // Pacing, so that the exchanges span the reloads.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        }));
    }

    // Rewrite the rule file between v2 and v1, by rename and in place, waiting for each reload.
    let mut g = generation(&broker).await;
    for i in 0..RELOADS {
        let text = versioned_rule(if i % 2 == 0 { "v2" } else { "v1" });
        if i % 3 == 2 {
            write_in_place(&rule_file, &text);
        } else {
            write_via_rename(&rule_file, &text);
        }
        g = wait_for_generation_above(&broker, g).await["generation"]
            .as_u64()
            .expect("generation");
    }
    while count.load(Ordering::SeqCst) < MIN_EXCHANGES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, Ordering::SeqCst);

    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.expect("exchange task"));
    }
    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} exchanges failed during reloads, e.g. {:?}\n--- stderr ---\n{}",
        failures.len(),
        outcomes.len(),
        failures.first(),
        broker.stderr()
    );
    assert!(
        outcomes.len() >= MIN_EXCHANGES,
        "only {} exchanges in 60 s",
        outcomes.len()
    );
    let mut versions = std::collections::BTreeMap::<String, usize>::new();
    for claims in outcomes.iter().filter_map(|o| o.as_ref().ok()) {
        let version = claims["version"].as_str().unwrap_or("(none)").to_owned();
        assert_eq!(
            (&claims["stage"], &claims["sub"]),
            (&claims["version"], &json!(format!("svc-{version}"))),
            "an issued token mixes two rule versions: {claims}"
        );
        *versions.entry(version).or_default() += 1;
    }
    assert!(
        versions.contains_key("v1") && versions.contains_key("v2"),
        "the exchanges did not span a reload: {versions:?}"
    );
    assert_eq!(
        rules_status(&broker).await["last_reload_error"],
        Value::Null,
        "every rewrite was a valid rule file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_added_by_reload_is_usable() {
    let fake_a = FakeIssuer::start();
    let fake_b = FakeIssuer::start();
    let before = BrokerConfig::new()
        .issuer(fake_a.issuer_yaml(ISSUER_NAME))
        .rules(default_rule());
    let broker = Broker::start(&before.render()).await;
    exchange_ok(&broker, &fake_a, TARGET).await;
    let token_b = fake_b.mint(json!({}));
    broker
        .exchange_refused(&token_b, TARGET, 400, "invalid_request")
        .await;
    let g0 = generation(&broker).await;

    let after = before.issuer(fake_b.issuer_yaml("second")).rules(format!(
        r#"
        - name: second-deployer
          match:
            issuer: second
            subject: "{DEFAULT_SUBJECT}"
            audiences: [{TARGET_B}]
          issue:
            claims:
              via: second
        "#
    ));
    let text = after
        .render()
        .replace("@PORT@", &broker.port().to_string())
        .replace("@DIR@", broker.dir().to_str().expect("UTF-8 dir"));
    write_via_rename(&broker.dir().join("fedbroker.yaml"), &text);
    let rules = wait_for_generation_above(&broker, g0).await;
    assert!(rules["last_reload_error"].is_null(), "{rules}");

    let claims = exchange_ok(&broker, &fake_b, TARGET_B).await;
    assert_eq!(claims["via"], "second");
    assert_eq!(claims["sub"], DEFAULT_SUBJECT);
    // The old issuer is untouched, and rules stay per issuer.
    exchange_ok(&broker, &fake_a, TARGET).await;
    assert_invalid_target(&broker, &fake_a, TARGET_B).await;
    let ready = broker.get("/readyz").await;
    assert!(
        ready.json["issuers"].get("second").is_some(),
        "/readyz lists the new issuer: {}",
        ready.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_files_named_by_a_reloaded_config_are_watched() {
    let fake = FakeIssuer::start();
    let before = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(default_rule());
    let broker = Broker::builder()
        .file("more/b.yaml", &allow_rule("grant-b", TARGET_B))
        .start(&before.render())
        .await;
    assert_invalid_target(&broker, &fake, TARGET_B).await;
    let g0 = generation(&broker).await;

    // The config now names rule files: reloaded, they count.
    let text = before
        .top_level("rules_files: [more/*.yaml]")
        .render()
        .replace("@PORT@", &broker.port().to_string())
        .replace("@DIR@", broker.dir().to_str().expect("UTF-8 dir"));
    write_via_rename(&broker.dir().join("fedbroker.yaml"), &text);
    let g1 = wait_for_generation_above(&broker, g0).await["generation"]
        .as_u64()
        .expect("generation");
    exchange_ok(&broker, &fake, TARGET_B).await;

    // And a change to them is picked up like any rule file's.
    write_via_rename(
        &broker.dir().join("more/c.yaml"),
        &allow_rule("grant-c", TARGET_C),
    );
    wait_for_generation_above(&broker, g1).await;
    exchange_ok(&broker, &fake, TARGET_C).await;
}
