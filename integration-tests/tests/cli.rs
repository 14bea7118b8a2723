//! The command line: `--version`, `check`, `keys generate`, `explain`, and
//! `serve`'s shutdown on signals.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use integration_tests::config::fill_placeholders;
use integration_tests::tokens::verify_with_jwks;
use integration_tests::{Broker, BrokerConfig, FakeIssuer, dedent, run_cli, run_cli_in};
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::Jwk;
use serde_json::json;

use crate::support::{
    TARGET, config_with_rules, default_broker, default_config_file, default_rule, explain,
    rule_file_with_unknown_issuer,
};

/// Write `yaml` (placeholders filled, port 18080) to `dir/fedbroker.yaml`.
fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let text = fill_placeholders(yaml, 18080, dir.to_str().expect("UTF-8 path"));
    let path = dir.join("fedbroker.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// `check` of `config`, written in a tempdir of its own.
fn check_config(config: &BrokerConfig) -> integration_tests::CliOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    check(&config.write_to(dir.path()))
}

fn write_file(dir: &Path, relative: &str, text: &str) -> PathBuf {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
    std::fs::write(&path, dedent(text)).expect("write file");
    path
}

/// `output` has a line naming `file` together with line number `line`
/// (as `file:LINE` or `line LINE`).
fn mentions_file_and_line(output: &str, file: &str, line: usize) -> bool {
    output.lines().filter(|l| l.contains(file)).any(|l| {
        let colon = format!(":{line}");
        let word = format!("line {line}");
        l.match_indices(&colon)
            .any(|(i, m)| !l[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
            || l.match_indices(&word)
                .any(|(i, m)| !l[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// `check` of `path` exits 1 and reports each `(needle, file, line)`: the needle, and
/// the file and line it is on.
fn assert_check_reports(path: &Path, errors: &[(&str, &str, usize)]) {
    let out = check(path);
    let all = out.all();
    assert_eq!(out.code, Some(1), "{all}");
    for (needle, file, line) in errors {
        assert!(all.contains(needle), "{needle} not reported:\n{all}");
        assert!(
            mentions_file_and_line(&all, file, *line),
            "{file}:{line} not reported:\n{all}"
        );
    }
}

fn check(config: &Path) -> integration_tests::CliOutput {
    run_cli(&["check", "--config", config.to_str().expect("UTF-8 path")])
}

const VALID_HEAD: &str = "version: 1
server:
  listen: 127.0.0.1:18080
  public_url: http://127.0.0.1:18080
signing:
  key_dir: @DIR@/keys
";

#[test]
fn version_prints_the_package_version() {
    let out = run_cli(&["--version"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains(env!("CARGO_PKG_VERSION")), "{out:?}");
}

#[test]
fn help_lists_the_subcommands() {
    let out = run_cli(&["--help"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    for command in ["serve", "check", "explain", "keys"] {
        assert!(
            out.stdout.contains(command),
            "--help lacks {command}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn check_accepts_a_valid_config_without_touching_the_network() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_rules(&fake, &default_rule())
        .server("max_body_bytes: 65536")
        .server("clock_skew: 60s")
        .server("max_issued_lifetime: 1h")
        .top_level("replay:\n  backend: memory\n  on_unavailable: fail_closed");
    let path = config.write_to(dir.path());

    let out = check(&path);

    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(fake.key_fetches(), (0, 0), "check used the network");
}

#[test]
fn check_reports_an_unknown_key_with_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "version: 1
server:
  listen: 127.0.0.1:18080
  public_url: http://127.0.0.1:18080
  listen_backlogg: 5
issuers: []
rules: []
";
    let path = write_config(dir.path(), yaml);

    assert_check_reports(&path, &[("listen_backlogg", "fedbroker.yaml", 5)]);
}

#[test]
fn check_reports_a_rule_with_an_unknown_issuer_at_its_file_and_line() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = rule_file_with_unknown_issuer(dir.path(), &fake);
    let path = config.write_to(dir.path());

    // Line 8: the rule's `issuer: nobody`.
    assert_check_reports(&path, &[("nobody", "deploy.yaml", 8)]);
}

#[test]
fn check_reports_every_error_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        dir.path(),
        "rules/a.yaml",
        r#"
        - name: first
          match:
            issuer: k8s
            audiences: [t]
            colour: blue
        "#,
    );
    write_file(
        dir.path(),
        "rules/b.yaml",
        r#"
        - name: second
          match:
            issuer: k8s
            audiences: [t]
          issue:
            flavour: mint
        "#,
    );
    let yaml = format!("{VALID_HEAD}  bogus_signing_key: 1\nissuers: []\nrules_files: [./rules/*.yaml]\n");
    let path = write_config(dir.path(), &yaml);

    assert_check_reports(
        &path,
        &[
            ("bogus_signing_key", "fedbroker.yaml", 7),
            ("colour", "a.yaml", 5),
            ("flavour", "b.yaml", 6),
        ],
    );
}

#[test]
fn check_reports_reference_errors_alongside_syntax_errors() {
    // A rule naming an unknown issuer is reported even when another rule in
    // the same file has an unknown key: "print every error".
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        dir.path(),
        "rules/bad.yaml",
        r#"
        - name: unknown-issuer
          match:
            issuer: nobody
            audiences: [t]
        - name: unknown-key
          match:
            issuer: k8s
            audiences: [t]
            colour: blue
        "#,
    );
    let yaml = format!("{VALID_HEAD}issuers: []\nrules_files: [./rules/*.yaml]\n");
    let path = write_config(dir.path(), &yaml);

    assert_check_reports(&path, &[("nobody", "bad.yaml", 3), ("colour", "bad.yaml", 9)]);
}

#[test]
fn check_rejects_rule_lifetime_above_max_issued_lifetime() {
    let fake = FakeIssuer::start();
    let config = config_with_rules(&fake, &default_rule().replace("lifetime: 10m", "lifetime: 2h"))
        .server("max_issued_lifetime: 1h");
    let out = check_config(&config);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.all().contains("lifetime"), "{}", out.all());
}

#[test]
fn check_rejects_loopback_issuer_urls_without_the_danger_flag() {
    let fake = FakeIssuer::start();
    for url in [
        fake.issuer().to_owned(),
        "http://localhost:9".to_owned(),
        "https://10.0.0.1".to_owned(),
    ] {
        let issuer = fake
            .issuer_yaml_with("k8s", "danger_allow_insecure: false")
            .replace(fake.issuer(), &url);
        let out = check_config(&BrokerConfig::new().issuer(issuer).rules(default_rule()));
        assert_eq!(
            out.code,
            Some(1),
            "{url} must need danger_allow_insecure:\n{}",
            out.all()
        );
    }
}

#[test]
fn check_rejects_none_and_hmac_issuer_algorithms() {
    let fake = FakeIssuer::start();
    for algs in ["[none]", "[HS256]", "[RS256, HS512]"] {
        let issuer = fake.issuer_yaml_with("k8s", &format!("algorithms: {algs}"));
        let out = check_config(&BrokerConfig::new().issuer(issuer).rules(default_rule()));
        assert_eq!(out.code, Some(1), "algorithms {algs} accepted:\n{}", out.all());
    }
}

#[test]
fn check_rejects_duplicate_names_and_empty_audiences() {
    let fake = FakeIssuer::start();
    let cases = [
        (
            "duplicate rule",
            config_with_rules(&fake, &format!("{}{}", default_rule(), default_rule())),
        ),
        (
            "duplicate issuer",
            config_with_rules(&fake, &default_rule()).issuer(fake.issuer_yaml("k8s")),
        ),
        (
            "empty audiences",
            BrokerConfig::new()
                .issuer(fake.issuer_yaml_with("k8s", "audiences: []"))
                .rules(default_rule()),
        ),
    ];
    for (case, config) in cases {
        let out = check_config(&config);
        assert_eq!(out.code, Some(1), "{case} accepted:\n{}", out.all());
    }
}

#[test]
fn serve_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        dir.path(),
        &format!("{VALID_HEAD}  surprise: 1\nissuers: []\nrules: []\n"),
    );
    let out = run_cli_in(
        dir.path(),
        &["serve", "--config", path.to_str().expect("path")],
        &[],
    );
    assert!(matches!(out.code, Some(c) if c != 0), "{out:?}");
    assert!(out.all().contains("surprise"), "{}", out.all());
}

/// The single file in `dir`.
fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "expected one key file: {files:?}");
    files.into_iter().next().expect("one file")
}

#[test]
fn keys_generate_writes_a_private_pkcs8_pem_readable_only_by_its_owner() {
    for algorithm in [None, Some("ES256"), Some("PS256"), Some("EdDSA")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_dir = dir.path().join("keys");
        let mut args = vec!["keys", "generate", "--dir", key_dir.to_str().expect("path")];
        if let Some(alg) = algorithm {
            args.extend(["--algorithm", alg]);
        }

        let out = run_cli(&args);

        assert_eq!(out.code, Some(0), "{algorithm:?}: {}", out.all());
        let file = only_file(&key_dir);
        let pem = std::fs::read_to_string(&file).expect("read key");
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{algorithm:?}: not PKCS#8 PEM:\n{pem}"
        );
        let mode = std::fs::metadata(&file).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{algorithm:?}: mode {mode:o}");
        let parsed = match algorithm {
            None | Some("PS256") => EncodingKey::from_rsa_pem(pem.as_bytes()).map(|_| ()),
            Some("ES256") => EncodingKey::from_ec_pem(pem.as_bytes()).map(|_| ()),
            _ => EncodingKey::from_ed_pem(pem.as_bytes()).map(|_| ()),
        };
        assert!(parsed.is_ok(), "{algorithm:?}: key does not parse: {parsed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_signs_with_the_key_from_keys_generate() {
    for (algorithm, jwt_alg) in [
        ("RS256", jsonwebtoken::Algorithm::RS256),
        ("ES256", jsonwebtoken::Algorithm::ES256),
    ] {
        let fake = FakeIssuer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let key_dir = dir.path().join("keys");
        let out = run_cli(&[
            "keys",
            "generate",
            "--dir",
            key_dir.to_str().expect("path"),
            "--algorithm",
            algorithm,
        ]);
        assert_eq!(out.code, Some(0), "{}", out.all());
        let pem = std::fs::read(only_file(&key_dir)).expect("read key");
        let private = match jwt_alg {
            jsonwebtoken::Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .expect("key parses");
        let mut public = Jwk::from_encoding_key(&private, jwt_alg).expect("public JWK");

        let config = config_with_rules(&fake, &default_rule()).signing_algorithm(algorithm);
        let broker = Broker::builder().dir(dir).start(&config.render()).await;

        let jwks = broker.jwks().await;
        assert_eq!(
            jwks.keys.len(),
            1,
            "{algorithm}: only the generated key: {jwks:?}"
        );
        let published = &jwks.keys[0];
        assert_eq!(
            published.algorithm, public.algorithm,
            "{algorithm}: the published key is not the generated one"
        );
        // The issued token verifies with the key material from the PEM file itself.
        let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
        public.common.key_id = published.common.key_id.clone();
        let own = jsonwebtoken::jwk::JwkSet { keys: vec![public] };
        verify_with_jwks(&own, reply.access_token(), broker.url(), &[TARGET]);
    }
}

#[test]
fn explain_reports_allow_with_exit_0_and_deny_with_exit_2() {
    let (fake, dir, path) = default_config_file();

    let allowed = fake.mint(json!({}));
    let out = explain(
        dir.path(),
        &path,
        &["--subject-token", &allowed, "--audience", TARGET],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("ci-deployer"),
        "the deciding rule is named:\n{}",
        out.all()
    );

    let denied = fake.mint(json!({"sub": "system:serviceaccount:ci:intruder"}));
    std::fs::write(dir.path().join("token.jwt"), &denied).expect("token file");
    let out = explain(
        dir.path(),
        &path,
        &["--subject-token", "@token.jwt", "--audience", TARGET, "--json"],
    );
    assert_eq!(out.code, Some(2), "{}", out.all());
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&out.stdout);
    assert!(parsed.is_ok(), "--json prints JSON:\n{}", out.stdout);
    assert!(!out.all().contains(&denied), "explain printed the token");
}

#[test]
fn explain_records_no_replay() {
    let (fake, dir, path) = default_config_file();
    let token = fake.mint(json!({}));
    for run in 1..=2 {
        let out = explain(
            dir.path(),
            &path,
            &["--subject-token", &token, "--audience", TARGET],
        );
        assert_eq!(out.code, Some(0), "run {run}: {}", out.all());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_with_status_0() {
    let fake = FakeIssuer::start();
    let mut broker = default_broker(&fake).await;
    assert_eq!(broker.exchange(&fake.mint(json!({})), TARGET).await.status, 200);

    let status = broker.signal_and_wait("TERM").await;

    assert_eq!(status.code(), Some(0), "{status}\n{}", broker.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_shuts_down_cleanly_with_status_0() {
    let fake = FakeIssuer::start();
    let mut broker = default_broker(&fake).await;

    let status = broker.signal_and_wait("INT").await;

    assert_eq!(status.code(), Some(0), "{status}\n{}", broker.stderr());
}
