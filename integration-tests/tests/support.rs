//! Helpers shared by the test modules.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::fake_issuer::{DEFAULT_AUDIENCE, DEFAULT_SUBJECT};
use integration_tests::redis_server::{RedisServer, redis_available};
use integration_tests::{
    Broker, BrokerConfig, CliOutput, FakeIssuer, Http, InProcess, Reply, dedent, eventually, run_cli_in,
};
use reqwest::Method;
use serde_json::{Value, json};

/// The audience the default rule grants.
pub const TARGET: &str = "target-a";

/// The name the fake issuer is registered under in [`default_config`].
pub const ISSUER_NAME: &str = "k8s";

/// One allow rule: the fake's default subject may get `target-a`, 10 minutes.
pub fn default_rule() -> String {
    format!(
        r#"
        - name: ci-deployer
          match:
            issuer: {ISSUER_NAME}
            subject: "{DEFAULT_SUBJECT}"
            audiences: [{TARGET}]
          issue:
            lifetime: 10m
        "#
    )
}

/// A rule for the fake's default subject through `k8s`, named `name`: `match` gets
/// `match_extra` (YAML at column 0, e.g. `audiences: [target-a]`) and, when `issue`
/// is not empty, an `issue` block with it (YAML at column 0).
pub fn subject_rule(name: &str, match_extra: &str, issue: &str) -> String {
    issuer_subject_rule(name, ISSUER_NAME, match_extra, issue)
}

/// [`subject_rule`] through the issuer named `issuer`.
pub fn issuer_subject_rule(name: &str, issuer: &str, match_extra: &str, issue: &str) -> String {
    let mut out = format!(
        "- name: {name}\n  match:\n    issuer: {issuer}\n    subject: \"{DEFAULT_SUBJECT}\"\n{}",
        indented(match_extra, 4)
    );
    if !issue.trim().is_empty() {
        out.push_str("  issue:\n");
        out.push_str(&indented(issue, 4));
    }
    out
}

/// A rule (column 0, a rule-file list item) that lets the fake's default subject get
/// `target`.
pub fn allow_rule(name: &str, target: &str) -> String {
    subject_rule(name, &format!("audiences: [{target}]"), "")
}

/// `yaml` dedented, then every line indented by `by` spaces.
fn indented(yaml: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    dedent(yaml)
        .lines()
        .map(|line| format!("{pad}{line}\n"))
        .collect()
}

/// The fake registered as `k8s`, plus `rules`.
pub fn config_with_rules(fake: &FakeIssuer, rules: &str) -> BrokerConfig {
    BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(rules)
}

/// The fake registered as `k8s` with `extra` issuer settings (e.g. `replay: reusable`),
/// plus [`default_rule`].
pub fn config_with_issuer_extra(fake: &FakeIssuer, extra: &str) -> BrokerConfig {
    BrokerConfig::new()
        .issuer(fake.issuer_yaml_with(ISSUER_NAME, extra))
        .rules(default_rule())
}

/// The broker's router in this process, trusting `fake` as `k8s` with `extra` issuer
/// settings, with [`default_rule`].
pub async fn app_with_issuer_extra(fake: &FakeIssuer, extra: &str) -> InProcess {
    InProcess::start(&config_with_issuer_extra(fake, extra).render()).await
}

/// A broker trusting `fake` as `k8s`, with `rules`.
pub async fn broker_with_rules(fake: &FakeIssuer, rules: &str) -> Broker {
    Broker::start(&config_with_rules(fake, rules).render()).await
}

/// A broker trusting `fake` as `k8s`, with [`default_rule`].
pub async fn default_broker(fake: &FakeIssuer) -> Broker {
    broker_with_rules(fake, &default_rule()).await
}

/// The broker's router in this process, trusting `fake` as `k8s`, with `rules`.
pub async fn app_with_rules(fake: &FakeIssuer, rules: &str) -> InProcess {
    InProcess::start(&config_with_rules(fake, rules).render()).await
}

/// The broker's router in this process, trusting `fake` as `k8s`, with [`default_rule`].
pub async fn default_app(fake: &FakeIssuer) -> InProcess {
    app_with_rules(fake, &default_rule()).await
}

/// `fedbroker check --config <config>` in `dir`, with `--format json` when `json`.
pub fn check_in(dir: &Path, config: &Path, json: bool) -> CliOutput {
    let mut args = vec!["check", "--config", config.to_str().expect("UTF-8 path")];
    if json {
        args.extend(["--format", "json"]);
    }
    run_cli_in(dir, &args, &[])
}

/// A 400 `invalid_request` "denied by policy" that does not echo `secret`.
pub fn assert_denied_by_policy(reply: &Reply, secret: &str) {
    reply.assert_error(400, "invalid_request", secret);
    assert_eq!(
        reply.json["error_description"], "denied by policy",
        "{}",
        reply.text
    );
}

/// `fedbroker explain --config <config> ARGS` in `dir`.
pub fn explain(dir: &Path, config: &Path, args: &[&str]) -> CliOutput {
    let mut all = vec!["explain", "--config", config.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    run_cli_in(dir, &all, &[])
}

/// A fake issuer and, in a tempdir, a config file that trusts it as `k8s` with
/// [`default_rule`] (for the CLI: nothing listens on its port).
pub fn default_config_file() -> (FakeIssuer, tempfile::TempDir, PathBuf) {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_with_rules(&fake, &default_rule()).write_to(dir.path());
    (fake, dir, path)
}

/// Write `rules/deploy.yaml` in `dir`: `good-rule`, then `bad-rule` whose
/// `issuer: nobody` (line 8) no issuer defines. Returns the config that trusts `fake`
/// as `k8s` and reads `./rules/*.yaml`, and the rule file's text.
pub fn rule_file_with_unknown_issuer(dir: &Path, fake: &FakeIssuer) -> (BrokerConfig, String) {
    let rules_text = dedent(
        r#"
        - name: good-rule
          match:
            issuer: k8s
            subject: a
            audiences: [t]
        - name: bad-rule
          match:
            issuer: nobody
            subject: b
            audiences: [t]
        "#,
    );
    std::fs::create_dir_all(dir.join("rules")).expect("rules dir");
    std::fs::write(dir.join("rules/deploy.yaml"), &rules_text).expect("rule file");
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml("k8s"))
        .top_level("rules_files: [./rules/*.yaml]");
    (config, rules_text)
}

/// Two fakes, `k8s` (subjects) and `agents`, and the broker's router in this process with
/// one rule `name` on [`TARGET`] for the default subject: with `actor_clause`, for any
/// `agent:*` actor from `agents`; without, with no actor clause at all.
pub async fn delegation_app(name: &str, actor_clause: bool) -> (FakeIssuer, FakeIssuer, InProcess) {
    let subjects = FakeIssuer::start();
    let agents = FakeIssuer::start();
    let actor = if actor_clause {
        "actor:\n  issuer: agents\n  subject_pattern: \"agent:*\""
    } else {
        ""
    };
    let matching = format!("audiences: [{TARGET}]\n{actor}");
    let config =
        config_with_rules(&subjects, &subject_rule(name, &matching, "")).issuer(agents.issuer_yaml("agents"));
    let broker = InProcess::start(&config.render()).await;
    (subjects, agents, broker)
}

/// [`default_app`] on a fresh fake, and a fresh default token from the fake.
pub async fn default_app_and_token() -> (FakeIssuer, InProcess, String) {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let token = fake.mint(serde_json::json!({}));
    (fake, broker, token)
}

/// A string claim of a JSON object, or a panic naming it.
pub fn str_claim<'a>(claims: &'a serde_json::Value, name: &str) -> &'a str {
    claims[name]
        .as_str()
        .unwrap_or_else(|| panic!("claim {name} is not a string in {claims}"))
}

/// An issuer as the admin API takes it: the fake issuer, `reusable` (exchanges need no
/// replay mark), reachable over plain HTTP on loopback.
pub fn issuer_body(fake: &FakeIssuer) -> Value {
    json!({
        "issuer": fake.issuer(),
        "audiences": [DEFAULT_AUDIENCE],
        "algorithms": ["RS256"],
        "replay": "reusable",
        "danger_allow_insecure": true,
    })
}

/// An allow rule as the admin API takes it: the fake's default subject, through
/// `issuer`, may get `target`.
pub fn rule_body(issuer: &str, target: &str) -> Value {
    json!({
        "match": {"issuer": issuer, "subject": DEFAULT_SUBJECT, "audiences": [target]},
        "issue": {"lifetime": "5m"},
    })
}

/// Exchange `copies` copies of `token` for [`TARGET`] at once, in turn through each of
/// `brokers`: exactly one may succeed; every other answer is a 400 `invalid_request`
/// that does not echo the token.
pub async fn assert_one_of_concurrent_copies<B>(brokers: &[Arc<B>], token: &str, copies: usize)
where
    B: std::ops::Deref<Target = Http> + Send + Sync + 'static,
{
    let token: Arc<str> = Arc::from(token);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..copies {
        let broker = brokers[i % brokers.len()].clone();
        let token = token.clone();
        tasks.spawn(async move { broker.exchange(&token, TARGET).await });
    }
    let replies = tasks.join_all().await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        1,
        "exactly one of {copies} concurrent copies through {} broker(s) may exchange: {replies:#?}",
        brokers.len()
    );
    for reply in replies.iter().filter(|r| r.status != 200) {
        reply.assert_error(400, "invalid_request", &token);
    }
}

/// `token` exchanges for `target` once at `broker`; the second time is a 400
/// `invalid_request` (a replay) that does not echo it.
pub async fn assert_exchanges_once(broker: &Http, token: &str, target: &str) {
    let first = broker.exchange(token, target).await;
    assert_eq!(first.status, 200, "first exchange: {}", first.text);
    broker
        .exchange_refused(token, target, 400, "invalid_request")
        .await;
}

/// Once `broker` answers an exchange of `token` for [`TARGET`] with something other
/// than 503 (10 s), it is a 400 `invalid_request`: the token is spent there.
pub async fn assert_spent_at(broker: &Http, token: &str) {
    let reply = eventually(Duration::from_secs(10), "an answer other than 503", || async {
        let reply = broker.exchange(token, TARGET).await;
        (reply.status != 503).then_some(reply)
    })
    .await;
    reply.assert_error(400, "invalid_request", token);
}

/// The status of an exchange of a fresh default token from `fake` for `target`.
pub async fn exchange_status(broker: &Http, fake: &FakeIssuer, target: &str) -> u16 {
    broker.exchange(&fake.mint(json!({})), target).await.status
}

// The admin API, and its state in Redis (the admin and replica tests).

/// A broker whose admin tokens are in `./admin-tokens` beside its config, holding
/// `tokens_file`.
pub async fn tokens_file_broker(tokens_file: &str) -> Broker {
    let config = BrokerConfig::new()
        .top_level("admin:\n  tokens_file: ./admin-tokens\n")
        .render();
    Broker::builder()
        .file("admin-tokens", tokens_file)
        .start(&config)
        .await
}

/// `admin.tokens` of the brokers that [`admin_send`] talks to.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef-shared";

/// `admin.state_hmac_key`, the same on every replica.
pub const HMAC_KEY: &str = "hmac-key-0123456789abcdef0123456789abcdef";

/// Where the admin state is in Redis, under the default key prefix.
pub const STATE_KEY: &str = "fedbroker:replay:admin:state";

/// An admin API request with [`ADMIN_TOKEN`].
pub async fn admin_send(
    broker: &Http,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    broker
        .admin_request(ADMIN_TOKEN, method, path, headers, body)
        .await
}

/// The `replay:` and `admin:` sections of a replica's config: the replay marks and the
/// admin state in Redis (`redis`: the lines under `replay:` after `backend: redis`, at
/// column 0), the admin API on the main listener with [`ADMIN_TOKEN`], insecure issuers
/// allowed, the state authenticated with [`HMAC_KEY`].
pub fn redis_admin_sections(redis: &str) -> String {
    format!(
        "replay:\n  backend: redis\n{}admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n  \
         allow_insecure_issuers: true\n  state_hmac_key: {HMAC_KEY}\n",
        indented(redis, 2)
    )
}

/// A PUT of `body` (with [`ADMIN_TOKEN`]) that must answer `status`.
pub async fn admin_put_expect(broker: &Http, path: &str, body: &Value, status: u16) -> Reply {
    let reply = admin_send(broker, Method::PUT, path, &[], Some(body)).await;
    assert_eq!(
        reply.status,
        status,
        "PUT {path}: {reply:?}\n--- broker stderr ---\n{}",
        broker.stderr()
    );
    reply
}

/// Create rule `name` granting `target` through issuer `fake` as Terraform creates:
/// `PUT` with `If-None-Match: *`.
pub async fn create_rule(broker: &Http, name: &str, target: &str) -> Reply {
    let path = format!("/admin/v1/rules/{name}");
    let body = rule_body("fake", target);
    admin_send(broker, Method::PUT, &path, &[("if-none-match", "*")], Some(&body)).await
}

/// The one `admin_change` audit line of a create of `name`: its `outcome` and a
/// `reason` that contains `reason`. Returns its change id (32 characters).
pub fn one_create_audited(broker: &Broker, name: &str, outcome: &str, reason: &str) -> String {
    let lines = change_lines(broker, "admin_change", name);
    assert_eq!(lines.len(), 1, "one attempt, one line: {lines:?}");
    assert_eq!(lines[0]["outcome"], outcome, "{lines:?}");
    assert_eq!(lines[0]["action"], "create", "{lines:?}");
    assert!(
        lines[0]["reason"].as_str().unwrap_or_default().contains(reason),
        "{lines:?}"
    );
    let change_id = lines[0]["change_id"].as_str().expect("change_id").to_owned();
    assert_eq!(change_id.len(), 32, "{lines:?}");
    change_id
}

/// `broker` logged that it reads a write back by its change id (the write's reply was
/// lost or timed out).
pub async fn assert_read_back_logged(broker: &Broker) {
    let needle = "reading back whether it applied";
    let stderr = broker.wait_for_stderr(needle).await;
    assert!(
        stderr.contains(needle),
        "the write's reply was lost or timed out:\n{stderr}"
    );
}

/// The sorted names of `/admin/v1/{kind}`.
pub async fn admin_names(broker: &Http, kind: &str) -> Vec<String> {
    let reply = admin_send(broker, Method::GET, &format!("/admin/v1/{kind}"), &[], None).await;
    assert_eq!(reply.status, 200, "GET {kind}: {reply:?}");
    let mut names: Vec<String> = reply
        .json
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|item| item["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

/// Start a replica and wait (15 s) until `/readyz` answers 200 (it has read the admin
/// state from Redis).
pub async fn ready_replica(yaml: &str) -> Broker {
    let broker = Broker::start(yaml).await;
    wait_ready(&broker).await;
    broker
}

/// A `redis-server` on a free port; `None` when the Redis tests are skipped (see
/// `redis_server::redis_available`).
pub fn redis_or_skip() -> Option<RedisServer> {
    redis_available().then(RedisServer::start)
}

/// A `redis-server`, a fake issuer and two replicas of `config(redis_url)` on it (see
/// [`ready_replica`]), the fake created through the first as issuer `fake` (201).
/// `None` when the Redis tests are skipped (see `redis_server::redis_available`).
pub async fn replicas_on_redis(
    config: fn(&str) -> String,
) -> Option<(RedisServer, FakeIssuer, Broker, Broker)> {
    let redis = redis_or_skip()?;
    let fake = FakeIssuer::start();
    let yaml = config(&redis.url());
    let a = ready_replica(&yaml).await;
    let b = ready_replica(&yaml).await;
    admin_put_expect(&a, "/admin/v1/issuers/fake", &issuer_body(&fake), 201).await;
    Some((redis, fake, a, b))
}

/// Wait (15 s) until `/readyz` answers 200.
pub async fn wait_ready(broker: &Http) {
    eventually(Duration::from_secs(15), "/readyz 200", || async {
        (broker.get("/readyz").await.status == 200).then_some(())
    })
    .await;
}

/// `HGET STATE_KEY field` through redis-cli.
pub fn hget(redis: &RedisServer, field: &str) -> String {
    redis.cli(&["HGET", STATE_KEY, field]).trim().to_owned()
}

/// The MAC a broker holding `key` writes for `state_json` as `version` (without an
/// `epoch`; README "Running replicas").
pub fn state_mac(key: &str, version: u64, state_json: &str) -> String {
    let mut input = b"fedbroker-admin-state-v1\0".to_vec();
    input.extend_from_slice(STATE_KEY.as_bytes());
    input.push(0);
    input.extend_from_slice(version.to_string().as_bytes());
    input.push(0);
    input.extend_from_slice(state_json.as_bytes());
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes());
    integration_tests::tokens::hex(aws_lc_rs::hmac::sign(&key, &input).as_ref())
}

/// The audit lines of `broker` with `event` about `name`.
pub fn change_lines(broker: &Broker, event: &str, name: &str) -> Vec<Value> {
    broker
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == event && l["name"] == name)
        .collect()
}

/// The environment that keeps an AWS SDK or `fedbroker credentials` to the keys a test
/// gives it: no shared config or credentials file, no instance metadata.
pub const AWS_ISOLATED: [(&str, &str); 3] = [
    ("AWS_CONFIG_FILE", "/nonexistent"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];
