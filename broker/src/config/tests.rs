//! Unit tests of the configuration: parse (pure) and load (files).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ::issuers::Algorithm;

use super::replay::parse_millis;
use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let file = Path::new("/etc/fedbroker/config.yaml");
    let draft = parse_config(file, text, &|n| (n == "SECRET").then(|| "s3cret".to_string()))?;
    assemble(draft, Vec::new(), &|_| {
        Err(std::io::Error::other("no files in tests"))
    })
}

/// Fails unless `text` says each of `has` and none of `lacks`.
#[track_caller]
fn assert_says(text: &str, has: &[&str], lacks: &[&str]) {
    let missing: Vec<&&str> = has.iter().filter(|w| !text.contains(**w)).collect();
    let present: Vec<&&str> = lacks.iter().filter(|w| text.contains(**w)).collect();
    assert!(
        missing.is_empty() && present.is_empty(),
        "missing {missing:?}, present {present:?} in:\n{text}"
    );
}

/// The lines of the errors that name `field` and say `words`.
fn reported_at(errors: &[ConfigError], field: &str, words: &str) -> Vec<Option<usize>> {
    errors
        .iter()
        .filter(|x| x.field == field && x.message.contains(words))
        .map(|x| x.line)
        .collect()
}

/// Fails unless each of `fields` has an error.
#[track_caller]
fn assert_fields(e: &ConfigErrors, fields: &[&str]) {
    let reported: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
    for f in fields {
        assert!(reported.contains(f), "missing {f} in {reported:?}");
    }
}

const MINIMAL: &str = "version: 1\nserver:\n  public_url: https://broker.example.com\nissuers:\n  - name: gha\n    issuer: https://token.actions.githubusercontent.com\n    audiences: [https://broker.example.com]\n";

#[test]
fn with_redis_the_admin_state_file_is_not_read() {
    let (dir, state) = crate::files::temp_file("admin-state.json", "not JSON");
    let cfg = dir.path().join("config.yaml");
    let admin = format!(
        "admin:\n  tokens: [\"0123456789abcdef-token\"]\n  state_file: {}\n",
        state.display()
    );
    std::fs::write(&cfg, format!("version: 1\n{admin}")).expect("write");
    let e = load(&cfg).expect_err("the file store reads the state file");
    assert_eq!(e.0[0].field, "admin.state_file", "{e}");
    let redis = "replay:\n  backend: redis\n  redis_url: redis://127.0.0.1:1\n";
    let key = "  state_hmac_key: 0123456789abcdef0123456789abcdef\n";
    std::fs::write(&cfg, format!("version: 1\n{admin}{key}{redis}")).expect("write");
    let c = load(&cfg).expect("with Redis the state is not in the file");
    assert_eq!(c.admin_state, AdminState::default());
}

#[test]
fn with_redis_the_admin_state_needs_an_hmac_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("config.yaml");
    let admin = "admin:\n  tokens: [\"0123456789abcdef-token\"]\n";
    let redis = "replay:\n  backend: redis\n  redis_url: redis://127.0.0.1:1\n";
    std::fs::write(&cfg, format!("version: 1\n{admin}{redis}")).expect("write");
    let e = load(&cfg).expect_err("no key");
    assert!(
        !reported_at(&e.0, "admin.state_hmac_key", "required").is_empty(),
        "{e}"
    );
    std::fs::write(
        &cfg,
        format!("version: 1\n{admin}  state_hmac_key: short\n{redis}"),
    )
    .expect("write");
    let e = load(&cfg).expect_err("short key");
    assert!(
        !reported_at(&e.0, "admin.state_hmac_key", "at least 32").is_empty(),
        "{e}"
    );
    // Without Redis the key is optional (the state file is the broker's own).
    std::fs::write(&cfg, format!("version: 1\n{admin}")).expect("write");
    assert!(load(&cfg).expect("file store").admin.is_some());
}

#[test]
fn admin_issuers_may_not_reach_the_host_without_an_opt_in() {
    let (dir, jwks) = crate::files::temp_file("jwks.json", r#"{"keys": []}"#);
    let cfg = dir.path().join("config.yaml");
    let state = AdminState {
        issuers: [(
            "dev".to_string(),
            serde_json::json!({
                "name": "dev", "issuer": "http://127.0.0.1:9/", "audiences": ["a"],
                "danger_allow_insecure": true, "jwks_file": jwks.display().to_string(),
                "tls_ca_file": "/dev/zero",
            }),
        )]
        .into(),
        rules: Default::default(),
    };
    let admin = "admin:\n  tokens: [\"0123456789abcdef-token\"]\n";
    std::fs::write(&cfg, format!("version: 1\n{admin}")).expect("write");
    let e = load_with_admin(&cfg, Some(&state)).expect_err("refused");
    for field in ["danger_allow_insecure", "jwks_file", "tls_ca_file"] {
        let found =
            e.0.iter()
                .find(|e| e.field == format!("issuer `dev`.{field}"))
                .unwrap_or_else(|| panic!("{field}: {e}"));
        assert_eq!(found.file, PathBuf::from("admin:issuers/dev"));
    }
    assert_says(
        &e.to_string(),
        &[
            "admin.allow_insecure_issuers: true",
            "admin.allow_file_paths: true",
        ],
        &[],
    );
    // Opted in: the fields are taken, and the files read only if regular.
    let opt_in = "  allow_insecure_issuers: true\n  allow_file_paths: true\n";
    std::fs::write(&cfg, format!("version: 1\n{admin}{opt_in}")).expect("write");
    let e = load_with_admin(&cfg, Some(&state)).expect_err("/dev/zero is no CA file");
    assert_says(
        &e.to_string(),
        &["a device: only regular files are read"],
        &["refused in an issuer made through the admin API"],
    );
}

#[test]
fn a_rules_file_that_is_a_fifo_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    crate::files::mkfifo(&dir.path().join("rules/pipe.yaml"));
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "version: 1\nrules_files: [rules/*.yaml]\n").expect("write");
    let e = load(&cfg).expect_err("a FIFO is not a rules file");
    assert_says(&e.to_string(), &["a FIFO: only regular files are read"], &[]);
}

#[test]
fn rules_globs_skip_test_files_and_tests_are_found_beside_the_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
    std::fs::write(
        dir.path().join("rules/x.yaml"),
        "- name: r\n  match: {issuer: gha, subject: s, audiences: [a]}\n",
    )
    .expect("write");
    // Not a rule file: loaded as rules, it would be an error.
    std::fs::write(
        dir.path().join("rules/x.test.yaml"),
        "tests:\n  - {name: t, issuer: gha, claims: {sub: s}, audience: a, expect: allow}\n",
    )
    .expect("write");
    let cfg = dir.path().join("config.yaml");
    let text = format!("{MINIMAL}rules_files: [rules/*.yaml]\n");
    std::fs::write(&cfg, text).expect("write");
    let c = load(&cfg).unwrap_or_else(|e| panic!("the test file is skipped:\n{e}"));
    assert_eq!(c.rules.len(), 1);
    assert_eq!(
        test_files_beside_rules(&cfg, &c.rules_files),
        vec![dir.path().join("rules/x.test.yaml")]
    );
}

#[test]
fn minimal_config_parses_with_defaults() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(c.server.public_url, "https://broker.example.com");
    assert_eq!(c.server.max_body_bytes, 65536);
    assert_eq!(c.server.clock_skew, 60);
    assert_eq!(c.server.max_issued_lifetime, 3600);
    assert_eq!(c.signing.algorithm, Algorithm::RS256);
    assert_eq!(c.issuers.len(), 1);
    assert_eq!(c.issuers[0].replay, ReplayMode::OneTime);
    assert_eq!(c.issuers[0].policy.clock_skew, 60);
    assert!(matches!(c.issuers[0].keys, KeySource::Discovery));
}

#[test]
fn unknown_key_is_reported_with_line_and_field() {
    let text = format!("{MINIMAL}server2: {{}}\n");
    let e = parse(&text).expect_err("unknown key");
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].line, Some(8));
    assert_eq!(e.0[0].field, "server2");
    assert!(e.to_string().contains("/etc/fedbroker/config.yaml:8"), "{e}");
}

#[test]
fn nested_unknown_key_is_reported_with_its_line() {
    let text = "version: 1\nserver:\n  listen: 127.0.0.1:9000\n  lisen: 1\n";
    let e = parse(text).expect_err("unknown key");
    assert_eq!(e.0[0].line, Some(4), "{e}");
    assert!(e.0[0].message.contains("lisen"), "{e}");
    assert!(e.0[0].field.starts_with("server"), "{e}");
}

#[test]
fn server_connection_limits_have_defaults_and_bounds() {
    // (header_timeout, body_timeout, max_connections) with `set` in `server:`.
    let limits = |set: &str| {
        let c = parse(&MINIMAL.replace("server:\n", &format!("server:\n{set}"))).expect("valid");
        let l = c.server.limits;
        (
            l.header_timeout.as_secs(),
            l.body_timeout.as_secs(),
            l.max_connections,
        )
    };
    assert_eq!(
        parse(MINIMAL).expect("valid").server.limits,
        ConnectionLimits::default()
    );
    assert_eq!(limits(""), (10, 10, 1024));
    assert_eq!(
        limits("  header_timeout: 2s\n  body_timeout: 1m\n  max_connections: 8\n"),
        (2, 60, 8)
    );
    let bad = MINIMAL.replace(
        "server:\n",
        "server:\n  header_timeout: 0s\n  body_timeout: 11m\n  max_connections: 0\n",
    );
    let e = parse(&bad).expect_err("invalid");
    assert_fields(
        &e,
        &[
            "server.header_timeout",
            "server.body_timeout",
            "server.max_connections",
        ],
    );
    let unknown = MINIMAL.replace("server:\n", "server:\n  read_timeout: 5s\n");
    let e = parse(&unknown).expect_err("unknown key");
    assert!(e.to_string().contains("read_timeout"), "{e}");
}

#[test]
fn dpop_nonces_are_off_by_default_and_their_secret_file_is_checked() {
    use std::os::unix::fs::PermissionsExt;
    let with =
        |nonce: &str| parse(&MINIMAL.replace("server:\n", &format!("server:\n  dpop: {{nonce: {nonce}}}\n")));
    assert_eq!(parse(MINIMAL).expect("valid").server.dpop_nonce, None);
    // Present is on, even without a value.
    let bare = parse(&MINIMAL.replace("server:\n", "server:\n  dpop:\n    nonce:\n"));
    assert_eq!(
        bare.expect("valid").server.dpop_nonce.map(|n| n.lifetime),
        Some(300)
    );
    assert_eq!(
        parse(&MINIMAL.replace("server:\n", "server:\n  dpop: {}\n"))
            .expect("valid")
            .server
            .dpop_nonce,
        None
    );
    let on = with("{}").expect("valid").server.dpop_nonce.expect("on");
    assert_eq!((on.lifetime, on.secret_file, on.secret), (300, None, None));
    assert_eq!(
        with("{lifetime: 10s}")
            .expect("valid")
            .server
            .dpop_nonce
            .map(|n| n.lifetime),
        Some(10)
    );

    let (_dir, good) = crate::files::temp_file("nonce.key", [7u8; 32]);
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    let c = with(&format!("{{secret_file: {}, lifetime: 1h}}", good.display())).expect("valid");
    let n = c.server.dpop_nonce.expect("on");
    assert_eq!(n.lifetime, 3600);
    assert_eq!(n.secret.as_ref().map(NonceSecret::bytes), Some(&[7u8; 32][..]));
    // The secret never shows.
    assert_eq!(format!("{:?}", n.secret), "Some(NonceSecret(32 bytes))");

    let (_dir, short) = crate::files::temp_file("short.key", [7u8; 31]);
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (_dir, open) = crate::files::temp_file("open.key", [7u8; 64]);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    for (nonce, field, words) in [
        (
            format!("{{secret_file: {}}}", short.display()),
            "server.dpop.nonce.secret_file",
            "holds 31 bytes; at least 32",
        ),
        (
            format!("{{secret_file: {}}}", open.display()),
            "server.dpop.nonce.secret_file",
            "permissions 0640 are too open",
        ),
        (
            "{secret_file: /nonexistent/nonce.key}".into(),
            "server.dpop.nonce.secret_file",
            "cannot read",
        ),
        (
            "{lifetime: 9s}".into(),
            "server.dpop.nonce.lifetime",
            "must be between 10s and 1h",
        ),
        (
            "{lifetime: 61m}".into(),
            "server.dpop.nonce.lifetime",
            "must be between 10s and 1h",
        ),
        ("{lifetime: later}".into(), "server.dpop.nonce.lifetime", ""),
    ] {
        let e = with(&nonce).expect_err("invalid");
        assert_eq!(reported_at(&e.0, field, words), vec![Some(3)], "{nonce}: {e}");
    }
    // Replicas must share a secret.
    let replicas = |nonce: &str| {
        parse(&format!(
            "{}replay:\n  backend: memory\n  replicas: 2\n",
            MINIMAL.replace("server:\n", &format!("server:\n  dpop: {{nonce: {nonce}}}\n"))
        ))
    };
    let e = replicas("{}").expect_err("no shared secret");
    assert_eq!(
        reported_at(
            &e.0,
            "server.dpop.nonce.secret_file",
            "required with replay.replicas: 2"
        ),
        vec![Some(3)],
        "{e}"
    );
    let e = replicas(&format!("{{secret_file: {}}}", good.display())).expect_err("memory replay");
    assert!(
        reported_at(&e.0, "server.dpop.nonce.secret_file", "").is_empty(),
        "{e}"
    );
    let e = with("{ttl: 5m}").expect_err("unknown key");
    assert!(e.to_string().contains("ttl"), "{e}");
}

#[test]
fn every_error_is_reported() {
    let text = "version: 2\nserver:\n  clock_skew: soon\n  max_issued_lifetime: 48h\nsigning:\n  algorithm: HS256\nissuers:\n  - name: a\n    issuer: http://example.com\n    audiences: []\nbogus: 1\n";
    let e = parse(text).expect_err("invalid");
    assert_fields(
        &e,
        &[
            "version",
            "server.clock_skew",
            "server.max_issued_lifetime",
            "signing.algorithm",
            "issuers[0].issuer",
            "issuers[0].audiences",
            "bogus",
        ],
    );
}

#[test]
fn env_substitution_and_missing_variable() {
    assert_eq!(expand_env("a${SECRET}b", &|_| Some("x".into())), Ok("axb".into()));
    assert_eq!(expand_env("${NOPE}", &no_env), Err(UnsetVariable("NOPE".into())));
    assert_eq!(
        expand_env("$notavar ${ bad}", &no_env),
        Ok("$notavar ${ bad}".into())
    );
    let text = "version: 1\nserver:\n  public_url: https://${SECRET}.example.com\n";
    assert_eq!(
        parse(text).expect("ok").server.public_url,
        "https://s3cret.example.com"
    );
    let text = "version: 1\nserver:\n  public_url: https://${MISSING}.example.com\n";
    let e = parse(text).expect_err("missing env");
    assert_eq!(e.0[0].line, Some(3));
    assert!(e.0[0].message.contains("MISSING"));
}

#[test]
fn issuer_urls_naming_private_addresses_are_refused() {
    for url in [
        "https://localhost/x",
        "https://127.0.0.1",
        "https://10.1.2.3",
        "https://[::1]",
        "https://169.254.169.254",
        "http://example.com",
    ] {
        assert!(check_fetch_url(url, false).is_err(), "{url}");
    }
    assert!(check_fetch_url("https://token.actions.githubusercontent.com", false).is_ok());
    assert!(check_fetch_url("http://127.0.0.1:9000", true).is_ok());
}

#[test]
fn rule_errors_point_at_the_rule_file_line() {
    let file = Path::new("/r/rules.yaml");
    let (rules, problems) = parse_rules_file(
        file,
        "- name: r1\n  match:\n    issuer: nope\n    audiences: [x]\n",
    );
    assert!(problems.is_empty());
    let draft = parse_config(Path::new("/c.yaml"), MINIMAL, &no_env).expect("ok");
    let e = assemble(draft, rules, &|_| Err(std::io::Error::other("x"))).expect_err("unknown issuer");
    assert_eq!(e.0[0].file, PathBuf::from("/r/rules.yaml"));
    assert_eq!(e.0[0].line, Some(3), "{e}");
}

/// Rule files keep their text, not their YAML tree: the lines of compile errors come
/// from parsing the text again, once per file, in both of a rule file's shapes.
#[test]
fn rule_errors_in_several_files_point_at_their_lines() {
    let (mut rules, problems) = parse_rules_file(
        Path::new("/r/a.yaml"),
        "rules:\n  - name: r1\n    match: {issuer: nope, audiences: [x]}\n  - name: r2\n    match:\n      issuer: gha\n      allow_any_subject: true\n      audiences: [x]\n    issue:\n      lifetime: 0s\n",
    );
    assert!(problems.is_empty(), "{problems:?}");
    let (more, problems) = parse_rules_file(
        Path::new("/r/b.yaml"),
        "# first\n- name: r3\n  match:\n    issuer: gha\n    allow_any_subject: true\n    audiences: [x]\n- name: r1\n  match: {issuer: gha, allow_any_subject: true, audiences: [x]}\n",
    );
    assert!(problems.is_empty(), "{problems:?}");
    rules.extend(more);
    let draft = parse_config(Path::new("/c.yaml"), MINIMAL, &no_env).expect("ok");
    let e = assemble(draft, rules, &|_| Err(std::io::Error::other("x"))).expect_err("four errors");
    let at: Vec<(String, Option<usize>)> =
        e.0.iter()
            .map(|x| (x.file.display().to_string(), x.line))
            .collect();
    assert_eq!(
        at,
        [
            ("/r/a.yaml".to_string(), Some(3)),
            ("/r/a.yaml".to_string(), Some(3)),
            ("/r/a.yaml".to_string(), Some(10)),
            ("/r/b.yaml".to_string(), Some(7)),
        ],
        "{e}"
    );
}

#[test]
fn rule_file_unknown_field_has_line() {
    let (rules, e) = parse_rules_file(
        Path::new("/r.yaml"),
        "- name: r1\n  match:\n    issuer: gha\n    subjekt: x\n- name: r2\n  match: {issuer: gha, audiences: [x]}\n",
    );
    assert_eq!(rules.len(), 1, "the good rule is kept for checking");
    assert_eq!(e[0].line, Some(4), "{e:?}");
    assert!(e[0].message.contains("subjekt"));
}

fn with_replay(replay: &str) -> String {
    format!("{MINIMAL}replay:\n{replay}")
}

/// The configuration with `replay`, which must choose Redis, its Redis target and the
/// options beside it: (key_prefix, command_timeout, replicas, on_unavailable).
fn redis(replay: &str) -> (Config, RedisTarget, (String, Duration, u32, OnUnavailable)) {
    let c = parse(&with_replay(replay)).expect("valid");
    let (target, options) = match &c.replay.backend {
        ReplayBackend::Redis(r) => (
            r.target.clone(),
            (
                r.key_prefix.clone(),
                r.command_timeout,
                c.replay.replicas,
                c.replay.on_unavailable,
            ),
        ),
        other => panic!("not redis: {other:?}"),
    };
    (c, target, options)
}

#[test]
fn redis_replay_parses_with_defaults() {
    let (c, target, options) =
        redis("  backend: redis\n  redis_url: rediss://fedbroker:${SECRET}@redis.internal:6380/2\n");
    assert_eq!(
        target,
        RedisTarget::Standalone("rediss://fedbroker:s3cret@redis.internal:6380/2".into())
    );
    let defaults = (
        "fedbroker:replay:".to_string(),
        Duration::from_millis(250),
        1,
        OnUnavailable::FailClosed,
    );
    assert_eq!(options, defaults);
    // The password does not leak into Debug.
    assert_says(&format!("{c:?}"), &["fedbroker:***@redis.internal"], &["s3cret"]);
}

#[test]
fn redis_cluster_and_options_parse() {
    let (_, target, options) = redis(
        "  backend: redis\n  redis_cluster_urls: [redis://10.0.0.1:7000, redis://10.0.0.2:7000]\n  \
         key_prefix: \"x:\"\n  command_timeout: 1s\n  on_unavailable: fail_open\n  replicas: 3\n",
    );
    assert!(matches!(&target, RedisTarget::Cluster(urls) if urls.len() == 2));
    let set = (
        "x:".to_string(),
        Duration::from_secs(1),
        3,
        OnUnavailable::FailOpen,
    );
    assert_eq!(options, set);
}

#[test]
fn redis_replay_errors() {
    for (replay, field, says) in [
        ("  backend: redis\n", "replay.redis_url", "needs `redis_url`"),
        (
            "  backend: redis\n  redis_url: redis://a\n  redis_cluster_urls: [redis://b]\n",
            "replay.redis_cluster_urls",
            "not both",
        ),
        (
            "  backend: redis\n  redis_cluster_urls: []\n",
            "replay.redis_cluster_urls",
            "at least one",
        ),
        (
            "  backend: redis\n  redis_url: http://a\n",
            "replay.redis_url",
            "redis://",
        ),
        (
            "  backend: redis\n  redis_cluster_urls: [redis://a, \"rediss://\"]\n",
            "replay.redis_cluster_urls[1]",
            "Redis URL",
        ),
        (
            "  backend: redis\n  redis_url: redis://a\n  command_timeout: 1ms\n",
            "replay.command_timeout",
            "between",
        ),
        (
            "  backend: redis\n  redis_url: redis://a\n  command_timeout: soon\n",
            "replay.command_timeout",
            "invalid duration",
        ),
        (
            "  backend: redis\n  redis_url: redis://a\n  key_prefix: \"\"\n",
            "replay.key_prefix",
            "empty",
        ),
        ("  redis_url: redis://a\n", "replay.redis_url", "only used with"),
        ("  key_prefix: x\n", "replay.key_prefix", "only used with"),
        ("  backend: etcd\n", "replay.backend", "unknown backend"),
        ("  replicas: 0\n", "replay.replicas", "at least 1"),
    ] {
        let e = parse(&with_replay(replay)).expect_err(replay);
        assert!(
            reported_at(&e.0, field, says).iter().any(Option::is_some),
            "{replay}: expected {field}: ...{says}..., got {e}"
        );
    }
}

#[test]
fn replicas_refuse_the_memory_backend_with_one_time_issuers() {
    let e = parse(&with_replay("  replicas: 2\n")).expect_err("memory + one_time + 2 replicas");
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].field, "replay.replicas");
    assert_eq!(e.0[0].line, Some(9), "{e}");
    assert!(e.0[0].message.contains("gha"), "{e}");

    let reusable = MINIMAL.replace("audiences:", "replay: reusable\n    audiences:");
    parse(&format!("{reusable}replay:\n  replicas: 2\n")).expect("no one_time issuer: fine");
    parse(&with_replay(
        "  backend: redis\n  redis_url: redis://a\n  replicas: 2\n",
    ))
    .expect("redis: fine");
    parse(&with_replay("  replicas: 1\n")).expect("one replica: fine");
}

#[test]
fn command_timeout_takes_milliseconds_or_durations() {
    assert_eq!(parse_millis("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_millis("2s"), Ok(Duration::from_secs(2)));
    assert!(parse_millis("ms").is_err());
    assert!(parse_millis("1.5s").is_err());
}

#[test]
fn duplicate_keys_are_errors() {
    let e = parse("version: 1\nversion: 1\n").expect_err("dup");
    assert_eq!(e.0[0].line, Some(2));
}

#[test]
fn every_duplicate_key_is_reported_and_the_other_errors_too() {
    let text = "version: 1\nserver:\n  listen: 127.0.0.1:1\n  listen: 127.0.0.1:2\n  bogus: 1\n\
                    issuers:\n  - name: a\n    name: b\nrules: []\nrules: []\n";
    let e = parse(text).expect_err("invalid");
    let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    let has = |line: usize, field: &str, words: &str| reported_at(&e.0, field, words).contains(&Some(line));
    assert!(
        has(
            4,
            "server.listen",
            "duplicate key `listen` (first defined on line 3)"
        ),
        "{shown:#?}"
    );
    assert!(has(8, "issuers[0].name", "duplicate key `name`"), "{shown:#?}");
    assert!(has(10, "rules", "duplicate key `rules`"), "{shown:#?}");
    // ...and loading went on: the unknown field is reported as well.
    assert!(e.0.iter().any(|x| x.field == "server.bogus"), "{shown:#?}");
}

#[test]
fn rule_file_duplicates_are_reported_with_the_other_errors() {
    let text = "- name: r\n  match:\n    issuer: i\n    issuer: j\n    audiences: [x]\n  nope: 1\n";
    let (_, errors) = parse_rules_file(Path::new("r.yaml"), text);
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        reported_at(&errors, "[0].match.issuer", "duplicate").contains(&Some(4)),
        "{shown:#?}"
    );
    assert!(shown.iter().any(|x| x.contains("nope")), "{shown:#?}");
}

#[test]
fn a_name_the_file_and_the_admin_state_both_define_is_one_clash_error_each() {
    let (dir, _rules) = crate::files::temp_file(
        "rules.yaml",
        "- name: deploy\n  match:\n    issuer: gha\n    subject: s\n    audiences: [t]\n",
    );
    let cfg = dir.path().join("config.yaml");
    let admin = "admin:\n  tokens: [\"0123456789abcdef-token\"]\n";
    std::fs::write(&cfg, format!("{MINIMAL}rules_files: [rules.yaml]\n{admin}")).expect("write");
    let issuer = |name: &str| serde_json::json!({"name": name, "issuer": format!("https://{name}.example.com"), "audiences": ["a"]});
    let rule =
        serde_json::json!({"name": "deploy", "match": {"issuer": "gha", "subject": "x", "audiences": ["t"]}});
    let mut state = AdminState::default();
    state.issuers.insert("gha".into(), issuer("gha"));
    state.issuers.insert("other".into(), issuer("other"));
    state.rules.insert("deploy".into(), rule);
    let e = load_with_admin(&cfg, Some(&state)).expect_err("clash");
    let clashes: Vec<&ConfigError> = e.0.iter().filter(|x| is_name_clash(&x.to_string())).collect();
    assert_eq!(clashes.len(), 2, "{e}");
    assert_eq!(clashes[0].file, PathBuf::from("admin:issuers/gha"));
    assert!(clashes[0].message.contains("config.yaml, line 5"), "{e}");
    assert_eq!(clashes[1].file, PathBuf::from("admin:rules/deploy"));
    assert!(clashes[1].message.contains("rules.yaml, line 1"), "{e}");
    assert!(!e.to_string().contains("duplicate"), "one error per clash: {e}");

    // Without the clashing items: the file's items are known, the admin API's not among them.
    state.issuers.remove("gha");
    state.rules.clear();
    let config = load_with_admin(&cfg, Some(&state)).expect("loads");
    assert!(config.file_items.owns("issuers", "gha"));
    assert!(config.file_items.owns("rules", "deploy"));
    assert!(!config.file_items.owns("issuers", "other"));
    assert_eq!(
        config.file_items.issuers[0].1["audiences"],
        serde_json::json!(["https://broker.example.com"])
    );
    assert!(
        config.file_items.issuers[0].1.get("jwks_uri").is_none(),
        "no null members"
    );
    assert_eq!(config.file_items.rules[0].1["match"]["subject"], "s");
}

const AWS_IAM: &str = "  - name: aws-prod\n    kind: aws-iam\n    issuer: aws-iam:prod\n    accounts: [\"111122223333\"]\n    server_id: fedbroker.example.com\n    sts_endpoints: [https://sts.amazonaws.com, https://sts.us-east-1.amazonaws.com]\n";

#[test]
fn an_aws_iam_issuer_has_no_keys_and_keeps_its_parameters() {
    let text = format!("{MINIMAL}{AWS_IAM}");
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let aws = config
        .issuers
        .iter()
        .find(|i| i.name == "aws-prod")
        .expect("aws-prod");
    assert_eq!(aws.kind, ::issuers::IssuerKind::AwsIam);
    assert_eq!(aws.policy.issuer, "aws-iam:prod");
    assert_eq!(
        aws.kind_params.accounts.as_deref(),
        Some(&["111122223333".to_string()][..])
    );
    assert_eq!(
        aws.kind_params.server_id.as_deref(),
        Some("fedbroker.example.com")
    );
    assert_eq!(aws.kind_params.sts_endpoints.as_ref().map(Vec::len), Some(2));
    assert_eq!(aws.replay, ReplayMode::OneTime);
    assert!(matches!(&aws.keys, KeySource::Static(set) if set.is_empty()));
}

#[test]
fn aws_iam_problems_name_their_field_and_server_ids_are_unique() {
    let second = AWS_IAM
        .replace("aws-prod", "aws-dev")
        .replace("aws-iam:prod", "aws-iam:dev")
        .replace("[\"111122223333\"]", "[\"1111\"]")
        .replace("https://sts.us-east-1.amazonaws.com", "http://sts.example.com");
    let text = format!("{MINIMAL}{AWS_IAM}{second}    audiences: [x]\n    tls_ca_file: ca.pem\n");
    let e = parse(&text).expect_err("refused");
    let errors = &e.0;
    assert_eq!(
        reported_at(
            errors,
            "issuers[2].accounts",
            "`1111` is not a 12-digit AWS account ID"
        )
        .len(),
        1,
        "{e}"
    );
    assert_eq!(
        reported_at(
            errors,
            "issuers[2].server_id",
            "another aws-iam issuer has the same `server_id`"
        )
        .len(),
        1,
        "{e}"
    );
    assert_eq!(
        reported_at(errors, "issuers[2].sts_endpoints", "must be https://").len(),
        1,
        "{e}"
    );
    assert_eq!(
        reported_at(errors, "issuers[2].audiences", "not used by kind aws-iam").len(),
        1,
        "{e}"
    );
    // Refused, and not read (no "cannot read" error for it).
    assert_eq!(
        reported_at(errors, "issuers[2].tls_ca_file", "not used by kind aws-iam").len(),
        1,
        "{e}"
    );
    assert_eq!(errors.len(), 5, "{e}");
}

#[test]
fn telemetry_traces_are_off_without_an_endpoint_and_checked_field_by_field() {
    assert_eq!(parse(MINIMAL).expect("valid").telemetry.traces, None);
    let with = |block: &str| MINIMAL.to_string() + "telemetry:\n  traces:\n" + block;
    // A block without an endpoint is off too.
    let c = parse(&with("    sample_ratio: 0.25\n")).expect("valid");
    assert_eq!(c.telemetry.traces, None);

    let c = parse(&with(
        "    endpoint: https://otel.example.com:4318/v1/traces\n    sample_ratio: 0.25\n    service_name: sts-eu\n    headers:\n      x-api-key: ${SECRET}\n    timeout: 750ms\n",
    ))
    .expect("valid");
    let t = c.telemetry.traces.expect("traces on");
    assert_eq!(t.endpoint.as_str(), "https://otel.example.com:4318/v1/traces");
    assert!(!t.endpoint_from_env);
    assert_eq!(t.sample_ratio, 0.25);
    assert_eq!(t.service_name.as_deref(), Some("sts-eu"));
    assert_eq!(t.headers.get("x-api-key").map(String::as_str), Some("s3cret"));
    assert_eq!(t.timeout, Duration::from_millis(750));
    // Header values (often keys) are not shown.
    let debug = format!("{t:?}");
    assert_says(&debug, &["x-api-key", "otel.example.com"], &["s3cret"]);

    let c = parse(&with("    endpoint: http://collector:4318/v1/traces\n")).expect("valid");
    let t = c.telemetry.traces.expect("traces on");
    assert_eq!(
        (t.sample_ratio, t.timeout, t.service_name),
        (1.0, DEFAULT_TRACES_TIMEOUT, None)
    );

    let text = with(
        "    endpoint: grpc://collector:4317\n    sample_ratio: 1.5\n    service_name: \"\"\n    headers:\n      \"bad header\": x\n    timeout: 2m\n",
    );
    let e = parse(&text).expect_err("invalid");
    let errors = &e.0;
    assert_eq!(
        reported_at(errors, "telemetry.traces.endpoint", "http:// or https://"),
        vec![Some(10)],
        "{e}"
    );
    assert_eq!(
        reported_at(errors, "telemetry.traces.sample_ratio", "from 0 to 1"),
        vec![Some(11)],
        "{e}"
    );
    assert_fields(
        &e,
        &[
            "telemetry.traces.service_name",
            "telemetry.traces.headers.bad header",
            "telemetry.traces.timeout",
        ],
    );
    for (endpoint, words) in [
        ("not a url", "not a URL"),
        ("http://user:pw@collector:4318/v1/traces", "credentials"),
        ("http://collector:4318/v1/traces#x", "fragment"),
    ] {
        let e = parse(&with(&format!("    endpoint: \"{endpoint}\"\n"))).expect_err(endpoint);
        assert_eq!(
            reported_at(&e.0, "telemetry.traces.endpoint", words).len(),
            1,
            "{e}"
        );
        assert_says(&e.to_string(), &[], &["pw@"]);
    }
    let e = parse(&with("    endpoint: http://c:4318\n    protocol: grpc\n")).expect_err("unknown key");
    assert!(e.to_string().contains("protocol"), "{e}");
}

#[test]
fn the_standard_variable_gives_the_endpoint_the_file_does_not() {
    let file = Path::new("/etc/fedbroker/config.yaml");
    let env = |value: &'static str| move |n: &str| (n == TRACES_ENDPOINT_ENV).then(|| value.to_string());
    let build = |text: &str, value: &'static str| {
        let draft = parse_config(file, text, &env(value))?;
        assemble(draft, Vec::new(), &|_| Err(std::io::Error::other("no files")))
    };
    let c = build(MINIMAL, "http://collector:4318/v1/traces").expect("valid");
    let t = c.telemetry.traces.expect("on from the variable");
    assert!(t.endpoint_from_env);
    assert_eq!(t.endpoint.as_str(), "http://collector:4318/v1/traces");
    // The file wins; an empty variable is unset; a bad one is an error that names it.
    let text = MINIMAL.to_string() + "telemetry:\n  traces:\n    endpoint: http://file:4318/v1/traces\n";
    let t = build(&text, "http://env:4318/v1/traces")
        .expect("valid")
        .telemetry
        .traces
        .expect("on");
    assert_eq!(
        (t.endpoint.host_str(), t.endpoint_from_env),
        (Some("file"), false)
    );
    assert_eq!(build(MINIMAL, "").expect("valid").telemetry.traces, None);
    let e = build(MINIMAL, "collector:4317").expect_err("invalid");
    assert!(e.to_string().contains(TRACES_ENDPOINT_ENV), "{e}");
    assert_eq!(
        traces_from_env(&env("ftp://x")).expect_err("invalid"),
        format!(
            "{TRACES_ENDPOINT_ENV}: must be an http:// or https:// URL (OTLP over HTTP; gRPC is not supported)"
        )
    );
}

#[test]
fn many_rule_files_load_in_order_with_every_error_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("mkdir");
    // More files than cores, so each worker thread takes several, out of step.
    for f in 0..9 {
        let text: String = (0..3)
            .map(|r| format!("- name: f{f}r{r}\n  match: {{issuer: gha, subject: s{f}, audiences: [a]}}\n"))
            .collect();
        std::fs::write(rules.join(format!("{f}.yaml")), text).expect("write");
    }
    std::fs::write(rules.join("3.yaml"), "- name: dup\n  name: again\n").expect("write");
    std::fs::write(rules.join("5.yaml"), "").expect("write");
    std::fs::write(rules.join("7.yaml"), "- [unclosed\n").expect("write");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, format!("{MINIMAL}rules_files: [rules/*.yaml]\n")).expect("write");
    let errors = load(&cfg).expect_err("two bad files").0;
    let mut files: Vec<_> = errors
        .iter()
        .map(|e| e.file.strip_prefix(&rules).expect("a rule file"))
        .collect();
    files.dedup();
    assert_eq!(files, [Path::new("3.yaml"), Path::new("7.yaml")], "{errors:#?}");
    assert!(errors[0].message.contains("duplicate key `name`"), "{errors:#?}");

    std::fs::write(
        rules.join("3.yaml"),
        "- {name: three, match: {issuer: gha, subject: s, audiences: [a]}}\n",
    )
    .expect("write");
    std::fs::remove_file(rules.join("7.yaml")).expect("rm");
    let c = load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = c.rules.rule_names().collect();
    let expected: Vec<String> = [0, 1, 2, 3, 4, 6, 8]
        .iter()
        .flat_map(|f| match f {
            3 => vec!["three".to_string()],
            f => (0..3).map(|r| format!("f{f}r{r}")).collect(),
        })
        .collect();
    assert_eq!(names, expected);
    let origins: Vec<(String, Option<u32>)> = c
        .rule_origins
        .iter()
        .map(|o| {
            (
                o.file.file_name().expect("a name").to_string_lossy().into_owned(),
                o.line,
            )
        })
        .collect();
    assert_eq!(origins[4], ("1.yaml".to_string(), Some(3)));
    assert_eq!(origins[9], ("3.yaml".to_string(), Some(1)));
    assert_eq!(origins.len(), names.len());
}

/// A configuration's issuers are read one at a time when the file loads that way, and
/// from the whole tree when it does not (here, for a repeated key elsewhere): the same
/// issuers, the same errors at the same lines, in the same order.
#[test]
fn issuers_read_one_at_a_time_are_those_of_the_tree() {
    let text = "version: 1\nserver:\n  public_url: ${NOPE_A}\nissuers:\n  - name: gha\n    issuer: https://token.actions.githubusercontent.com\n    audiences: [\"${NOPE_B}\"]\n  - {name: other, issuer: https://x.example.com, audiences: [a], algoritms: [RS256]}\n  - name: third\n    issuer: https://y.example.com\n    audiences: [b]\n    kind: nonsense\n  - name: fourth\n    issuer: https://z.example.com\n    audiences: [c]\ntelemetry:\n  traces: ${NOPE_C}\n";
    let file = Path::new("/c.yaml");
    assert!(super::parse::issuers_one_by_one(file, text, &no_env).is_some());
    let errors = |text: &str| {
        let draft = parse_config(file, text, &no_env).expect("a draft");
        let names: Vec<String> = draft.issuers.iter().map(|(_, _, raw)| raw.name.clone()).collect();
        let e = assemble(draft, Vec::new(), &|_| Err(std::io::Error::other("no files"))).expect_err("errors");
        let at: Vec<String> =
            e.0.iter()
                .map(|e| format!("{:?} {}: {}", e.line, e.field, e.message))
                .collect();
        (names, at)
    };
    let (names, streamed) = errors(text);
    assert_eq!(names, ["gha", "third", "fourth"]);
    let lines: Vec<&str> = streamed.iter().map(|e| &e[..e.find(':').unwrap_or(0)]).collect();
    assert_eq!(
        lines,
        [
            "Some(3) server.public_url",
            "Some(7) issuers[0].audiences[0]",
            "Some(17) telemetry.traces",
            "Some(8) issuers[1].algoritms",
            "Some(17) telemetry.traces",
            "Some(3) server.public_url",
            "Some(12) issuers[2].kind",
        ],
        "{streamed:#?}"
    );
    let repeated = format!("{text}rules_files: []\nrules_files: []\n");
    assert!(super::parse::issuers_one_by_one(file, &repeated, &no_env).is_none());
    let (tree_names, from_tree) = errors(&repeated);
    assert_eq!(tree_names, names);
    assert!(
        from_tree[0].contains("duplicate key `rules_files`"),
        "{from_tree:#?}"
    );
    assert_eq!(from_tree[1..], streamed[..]);
}

/// `issuers:` that is not a list is read from the tree as before: a number is an error,
/// nothing is no issuers, and a `${NAME}` is substituted (and reported when unset).
#[test]
fn issuers_that_are_not_a_list_are_reported() {
    let file = Path::new("/c.yaml");
    for (value, error) in [
        ("3", Some("Some(2) issuers: expected a list of issuers")),
        ("", None),
        ("~", None),
        (
            "${NOPE}",
            Some("Some(2) issuers: environment variable `NOPE` is not set"),
        ),
    ] {
        let text = format!("version: 1\nissuers: {value}\n");
        assert!(super::parse::issuers_one_by_one(file, &text, &no_env).is_some());
        let draft = parse_config(file, &text, &no_env).expect("a draft");
        assert!(draft.issuers.is_empty());
        let found: Vec<String> = draft
            .errors
            .iter()
            .map(|e| format!("{:?} {}: {}", e.line, e.field, e.message))
            .collect();
        match error {
            Some(error) => assert_eq!(
                found.first().map(String::as_str),
                Some(error),
                "{value}: {found:?}"
            ),
            None => assert!(found.is_empty(), "{value}: {found:?}"),
        }
    }
}
