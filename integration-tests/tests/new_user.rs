//! What a new user meets following the README (the real binary, but for `/token` next
//! to `explain`, which runs against the broker's router in this process): rule files
//! watched with the README's own patterns (`./rules/*.yaml`, `**`), `explain --claims`
//! deciding as `/token` does for every issuer kind, `check` reporting every error
//! (duplicate keys included) on stdout, and `/readyz` naming the URL a fetch failed at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::tokens::random_hex;
use integration_tests::{
    Broker, BrokerConfig, FakeIssuer, InProcess, KeyKind, SigningKey, eventually, eventually_explained,
    run_cli_in,
};
use serde_json::{Value, json};

use crate::support::{ISSUER_NAME, TARGET, allow_rule, exchange_status, explain};

/// How long a file change may take to show in `/readyz` (the debounce is 300 ms).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

async fn generation(broker: &Broker) -> u64 {
    let reply = broker.get("/readyz").await;
    reply.json["rules"]["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("/readyz has no rules.generation: {}", reply.text))
}

/// Poll `/readyz` until `rules.generation` exceeds `previous`; returns the new one.
async fn wait_for_reload(broker: &Broker, previous: u64, what: &str) -> u64 {
    let what = format!("{what}: a reload (generation above {previous})");
    eventually_explained(
        RELOAD_TIMEOUT,
        &what,
        || async {
            let now = generation(broker).await;
            (now > previous).then_some(now)
        },
        || format!("--- stderr ---\n{}", broker.stderr()),
    )
    .await
}

/// Write to a temporary name in the same directory, then rename over `path` (as
/// editors do); creates the directories.
fn write_file(path: &Path, text: &str) {
    let dir = path.parent().expect("parent");
    std::fs::create_dir_all(dir).expect("mkdir");
    let tmp = dir.join(format!(".{}.tmp", random_hex(4)));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The README's `rules_files: [./rules/*.yaml]` (and a `**` pattern written with `./`,
/// and one with `..`): editing a rule file, adding one, and adding one in a new nested
/// directory each reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_files_are_watched_with_the_readmes_own_patterns() {
    let fake = FakeIssuer::start();
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .top_level("rules_files: [./rules/*.yaml, ./teams/**/*.yaml, ./rules/../shared/*.yaml]");
    let broker = Broker::builder()
        .file("rules/a.yaml", &allow_rule("a", TARGET))
        .file("teams/payments/b.yaml", &allow_rule("b", "target-b"))
        .file("shared/s.yaml", &allow_rule("s", "target-g"))
        .start(&config.render())
        .await;
    let dir = broker.dir().to_path_buf();
    assert_eq!(
        exchange_status(&broker, &fake, TARGET).await,
        200,
        "{}",
        broker.stderr()
    );
    assert_eq!(exchange_status(&broker, &fake, "target-b").await, 200);
    assert_eq!(exchange_status(&broker, &fake, "target-g").await, 200);

    // 1. Edit a file matched by `./rules/*.yaml`.
    let g = generation(&broker).await;
    write_file(&dir.join("rules/a.yaml"), &allow_rule("a", "target-c"));
    let g = wait_for_reload(&broker, g, "editing rules/a.yaml").await;
    assert_eq!(exchange_status(&broker, &fake, "target-c").await, 200);
    assert_eq!(exchange_status(&broker, &fake, TARGET).await, 400);

    // 2. Add a new file there.
    write_file(&dir.join("rules/new.yaml"), &allow_rule("new", "target-d"));
    let g = wait_for_reload(&broker, g, "adding rules/new.yaml").await;
    assert_eq!(exchange_status(&broker, &fake, "target-d").await, 200);

    // 3. Edit a file matched by `./teams/**/*.yaml`.
    write_file(&dir.join("teams/payments/b.yaml"), &allow_rule("b", "target-e"));
    let g = wait_for_reload(&broker, g, "editing teams/payments/b.yaml").await;
    assert_eq!(exchange_status(&broker, &fake, "target-e").await, 200);

    // 4. Add a file in a new nested directory under the `**`.
    write_file(&dir.join("teams/infra/prod/c.yaml"), &allow_rule("c", "target-f"));
    let g = wait_for_reload(&broker, g, "adding teams/infra/prod/c.yaml").await;
    assert_eq!(exchange_status(&broker, &fake, "target-f").await, 200);

    // 5. Edit a file matched by a pattern with `..` (`./rules/../shared/*.yaml`).
    write_file(&dir.join("shared/s.yaml"), &allow_rule("s", "target-h"));
    wait_for_reload(&broker, g, "editing shared/s.yaml").await;
    assert_eq!(exchange_status(&broker, &fake, "target-h").await, 200);
}

/// The fixture claims of a kind (as each platform documents its tokens), and the
/// issuer entry parameters that kind needs.
fn fixture(kind: &str) -> Value {
    if kind == "generic" {
        return json!({"iss": "https://idp.example.com", "aud": "x", "sub": "s"});
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../issuers/tests/fixtures/kinds")
        .join(format!("{kind}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Claims of `kind` that break the kind's claim checks (each one a token `/token`
/// refuses after the signature verified), or that a kind without checks accepts.
fn mutations(kind: &str) -> Vec<Value> {
    match kind {
        // The issue's own case: an `acme` subject with another repository.
        "github-actions" => vec![
            json!({"sub": "repo:acme/api:ref:refs/heads/main", "repository": "evil/x"}),
            json!({"repository_owner": null}),
        ],
        "gitlab" => vec![json!({"sub": "project_path:other/project:ref_type:branch:ref:main"})],
        "kubernetes" | "eks" | "gke" | "aks" => vec![
            json!({"sub": "system:serviceaccount:kube-system:admin"}),
            json!({"kubernetes.io": null}),
        ],
        "azure-entra" => vec![
            json!({"tid": "00000000-0000-0000-0000-000000000000"}),
            json!({"ver": "1.0"}),
        ],
        "google" => vec![json!({"email_verified": false})],
        "aws-outbound" => vec![json!({"sub": "arn:aws:iam::999999999999:role/Other"})],
        "spiffe" => vec![json!({"sub": "spiffe://other.org/ns/payments/sa/api"})],
        _ => vec![json!({"sub": "someone-else"})],
    }
}

/// Whether `/token` (and so explain) must allow `kind`'s fixture with mutation `index`
/// applied (`None`: the fixture itself). A token without `sub` (the last mutation) is
/// refused whatever the kind; a kind without claim checks accepts any other change.
fn expected_allow(kind: &str, index: Option<usize>) -> bool {
    match index {
        None => true,
        Some(i) if i >= mutations(kind).len() => false,
        Some(_) => kind == "generic",
    }
}

const KINDS: [&str; 11] = [
    "generic",
    "github-actions",
    "gitlab",
    "kubernetes",
    "eks",
    "gke",
    "aks",
    "azure-entra",
    "google",
    "aws-outbound",
    "spiffe",
];

fn apply(base: &Value, overrides: &Value) -> Value {
    let mut out = base.clone();
    let obj = out.as_object_mut().expect("object");
    for (k, v) in overrides.as_object().expect("object") {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    out
}

/// `explain --claims` and `/token` decide every claims set identically, for every
/// issuer kind: the kind's claim checks run in both (one function), so claims the
/// kind refuses are DENY in explain (exit 2) and 400 at `/token`, and the platform's
/// documented claims are ALLOW (exit 0) and 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_claims_and_token_decide_alike_for_every_issuer_kind() {
    let key = SigningKey::generate(KeyKind::Rsa);
    let jwks = json!({"keys": [key.jwk()]}).to_string();
    let mut config = BrokerConfig::new();
    let mut rules = String::new();
    for kind in KINDS {
        let claims = fixture(kind);
        let aud = match &claims["aud"] {
            Value::Array(a) => a[0].clone(),
            v => v.clone(),
        };
        let mut extra = String::new();
        if kind != "generic" {
            extra.push_str(&format!("  kind: {kind}\n"));
        }
        if kind == "azure-entra" {
            extra.push_str(&format!(
                "  tenant: \"{}\"\n",
                claims["tid"].as_str().expect("tid")
            ));
        }
        if kind == "spiffe" {
            extra.push_str("  trust_domain: example.org\n");
        }
        config = config.issuer(format!(
            "- name: {kind}\n  issuer: {}\n  audiences: [{aud}]\n  algorithms: [RS256]\n  replay: reusable\n  jwks: {jwks}\n{extra}",
            claims["iss"]
        ));
        rules.push_str(&format!(
            "- name: any-{kind}\n  match:\n    issuer: {kind}\n    allow_any_subject: true\n    audiences: [{TARGET}]\n"
        ));
    }
    let broker = InProcess::start(&config.rules(rules).render()).await;
    let config_path = broker.dir().join("fedbroker.yaml");
    let work = tempfile::tempdir().expect("tempdir");

    let mut checked = 0;
    for kind in KINDS {
        let base = fixture(kind);
        let mut cases = vec![("fixture".to_string(), None, base.clone())];
        let mut changes = mutations(kind);
        changes.push(json!({"sub": null}));
        for (i, m) in changes.iter().enumerate() {
            cases.push((format!("mutation {i} {m}"), Some(i), apply(&base, m)));
        }
        for (label, index, claims) in cases {
            let now = integration_tests::tokens::now();
            let claims = apply(
                &claims,
                &json!({"iat": now, "exp": now + 300, "jti": random_hex(8)}),
            );
            let token = key.sign(&json!({"alg": "RS256", "typ": "JWT", "kid": key.kid}), &claims);
            let reply = broker.exchange(&token, TARGET).await;
            let claims_file = work.path().join("claims.json");
            std::fs::write(&claims_file, claims.to_string()).expect("write claims");
            let claims_path = claims_file.to_str().expect("UTF-8");
            let out = explain(
                work.path(),
                &config_path,
                &["--claims", claims_path, "--audience", TARGET],
            );
            let token_allows = match reply.status {
                200 => true,
                400 => false,
                other => panic!("{kind} {label}: /token answered {other}: {}", reply.text),
            };
            let explain_allows = match out.code {
                Some(0) => true,
                Some(2) => false,
                other => panic!("{kind} {label}: explain exited {other:?}:\n{}", out.all()),
            };
            assert_eq!(
                explain_allows,
                token_allows,
                "{kind} {label}: explain --claims and /token disagree\n/token: {}\nexplain:\n{}",
                reply.text,
                out.all()
            );
            // The fixtures are what the platforms send: both allow them; every
            // mutation of a kind with claim checks is refused by both.
            let expect_allow = expected_allow(kind, index);
            assert_eq!(token_allows, expect_allow, "{kind} {label}: {}", reply.text);
            if !expect_allow {
                assert!(
                    out.stdout.contains("DENY (invalid_request)"),
                    "{kind} {label}:\n{}",
                    out.all()
                );
                if index.is_some_and(|i| i < mutations(kind).len()) {
                    assert!(
                        out.stdout.contains(kind),
                        "the reason names the kind:\n{}",
                        out.all()
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 2 * KINDS.len(), "{checked} cases");
}

/// Write `files` into a fresh directory and run `fedbroker check --config config.yaml`.
fn check_files(files: &[(&str, &str)]) -> (tempfile::TempDir, integration_tests::CliOutput) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        write_file(&dir.path().join(name), text);
    }
    let out = run_cli_in(dir.path(), &["check", "--config", "config.yaml"], &[]);
    (dir, out)
}

/// "Every error is reported" goes on past a duplicate key: in the config file, in a rule
/// file, each with its file, line and field, and with the files' other errors. The
/// report is on stdout.
#[test]
fn check_reports_duplicate_keys_and_goes_on_to_every_other_error() {
    let config = "version: 1\n\
                  server:\n  listen: 127.0.0.1:18080\n  listen: 127.0.0.1:18081\n  bogus_setting: 1\n\
                  issuers: []\n\
                  rules_files: [./rules/*.yaml]\n";
    let rules = "- name: r1\n  match:\n    issuer: nowhere\n    issuer: nowhere-else\n    subject: s\n    audiences: [t]\n\
                 - name: r2\n  nonsense: true\n";
    let (_dir, out) = check_files(&[("config.yaml", config), ("rules/a.yaml", rules)]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let report = &out.stdout;
    for expected in [
        "config.yaml:4: server.listen: duplicate key `listen` (first defined on line 3)",
        "server.bogus_setting",
        "a.yaml:4: [0].match.issuer: duplicate key `issuer` (first defined on line 3)",
        "nonsense",
    ] {
        assert!(
            report.contains(expected),
            "missing `{expected}` in the report:\n{}",
            out.all()
        );
    }
    // The rule that survived its duplicate is checked too: its issuer is unknown.
    assert!(report.contains("nowhere-else"), "{}", out.all());
    assert!(
        out.stderr.trim().is_empty(),
        "the report belongs on stdout:\n{}",
        out.all()
    );
}

/// `check`'s text report is on stdout (valid or not); an error of running check itself
/// (no such config file) is on stderr; exit codes 0 / 1.
#[test]
fn check_prints_its_report_on_stdout() {
    let (_dir, ok) = check_files(&[("config.yaml", "version: 1\n")]);
    assert_eq!(ok.code, Some(0), "{}", ok.all());
    assert!(ok.stdout.contains("config.yaml: ok"), "{}", ok.all());

    let (_dir, bad) = check_files(&[("config.yaml", "version: 1\nsurprise: 1\n")]);
    assert_eq!(bad.code, Some(1), "{}", bad.all());
    assert!(
        bad.stdout.contains("config.yaml:2: surprise: unknown field"),
        "{}",
        bad.all()
    );
    assert!(bad.stdout.contains("1 error(s)"), "{}", bad.all());
    assert!(bad.stderr.trim().is_empty(), "{}", bad.all());

    let dir = tempfile::tempdir().expect("tempdir");
    let missing = run_cli_in(dir.path(), &["check", "--config", "absent.yaml"], &[]);
    assert_eq!(missing.code, Some(1), "{}", missing.all());
    assert!(missing.stdout.is_empty(), "{}", missing.all());
    assert!(
        missing.stderr.contains("cannot read absent.yaml"),
        "{}",
        missing.all()
    );
}

/// `/readyz` says which URL an issuer's key fetch failed at, so the operator knows
/// what to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_url_an_issuer_fetch_failed_at() {
    let fake = FakeIssuer::start();
    fake.set_outage(true);
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml("down"))
        .issuer(fake.issuer_yaml_with(
            "down-jwks",
            &format!("issuer: {}/other\njwks_uri: {}", fake.issuer(), fake.jwks_uri()),
        ));
    let broker = Broker::start(&config.render()).await;
    let discovery = format!("{}/.well-known/openid-configuration", fake.issuer());
    let jwks_uri = fake.jwks_uri();
    for (name, url) in [("down", discovery.as_str()), ("down-jwks", jwks_uri.as_str())] {
        let what = format!("a fetch error for {name} in /readyz");
        let error = eventually(Duration::from_secs(15), &what, || async {
            let ready = broker.get("/readyz").await;
            ready.json["issuers"][name]["last_error"]
                .as_str()
                .map(str::to_owned)
        })
        .await;
        assert!(
            error.contains(url),
            "{name}: the error does not name {url}: {error}"
        );
    }
}
