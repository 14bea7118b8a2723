//! `tls_ca_file`: an issuer served over HTTPS with a certificate from a private CA.
//! With the CA in `tls_ca_file` the broker fetches discovery and JWKS from it; without,
//! the certificate is refused (`danger_allow_insecure` allows the loopback address, not
//! an unverified certificate); `check` refuses a `tls_ca_file` without a certificate.

use std::time::{Duration, Instant};

use integration_tests::fake_issuer::{DEFAULT_SUBJECT, KeyKind, SigningKey};
use integration_tests::tls_issuer::{TlsIssuer, make_ca};
use integration_tests::{Broker, BrokerConfig, run_cli};

use crate::support::TARGET;

/// An allow rule for `issuer`'s default subject to get [`TARGET`].
fn rule_for(issuer: &str) -> String {
    format!(
        r#"
        - name: deploy-from-{issuer}
          match:
            issuer: {issuer}
            subject: "{DEFAULT_SUBJECT}"
            audiences: [{TARGET}]
        "#
    )
}

/// `issuer` as `private`, with its CA in `tls_ca_file` when `trust`, and [`rule_for`] it.
fn private_issuer_config(issuer: &TlsIssuer, trust: bool) -> BrokerConfig {
    let ca = issuer.ca_pem();
    BrokerConfig::new()
        .issuer(issuer.issuer_yaml("private", trust.then_some(ca.as_path())))
        .rules(rule_for("private"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ca_file_trusts_a_private_ca() {
    let issuer = TlsIssuer::start();
    let broker = Broker::start(&private_issuer_config(&issuer, true).render()).await;

    let reply = broker.exchange(&issuer.mint(), TARGET).await;

    assert_eq!(
        reply.status,
        200,
        "{}\n--- broker ---\n{}\n--- issuer ---\n{}",
        reply.text,
        broker.stderr(),
        issuer.log()
    );
    let ready = broker.get("/readyz").await;
    let status = &ready.json["issuers"]["private"];
    assert_eq!(status["source"], "remote", "{}", ready.text);
    assert_eq!(
        status["keys"], 1,
        "the key came from the HTTPS JWKS: {}",
        ready.text
    );
    assert!(status["last_error"].is_null(), "{}", ready.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_ca_file_a_private_ca_is_not_trusted() {
    // Two issuers whose certificates come from one private CA: only the one configured
    // with `tls_ca_file` trusts it (the extra root is per issuer, not global).
    let trusted = TlsIssuer::start();
    let untrusted = TlsIssuer::start_with_ca_of(&trusted);
    let config = BrokerConfig::new()
        .issuer(trusted.issuer_yaml("trusted", Some(&trusted.ca_pem())))
        .issuer(untrusted.issuer_yaml("private", None))
        .rules(format!("{}{}", rule_for("trusted"), rule_for("private")));
    let broker = Broker::start(&config.render()).await;

    let token = untrusted.mint();
    broker
        .exchange_refused(&token, TARGET, 503, "temporarily_unavailable")
        .await;

    let ready = broker.get("/readyz").await;
    let status = &ready.json["issuers"]["private"];
    assert_eq!(status["keys"], 0, "{}", ready.text);
    let error = status["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no fetch error in /readyz: {}", ready.text));
    assert!(error.starts_with("discovery:"), "{error}");
    // The refusal is the certificate check (the TLS client's alert), not a dead server.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !untrusted.log().contains("unknown ca") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        untrusted.log().contains("unknown ca"),
        "the issuer saw no certificate refusal:\n{}",
        untrusted.log()
    );

    let reply = broker.exchange(&trusted.mint(), TARGET).await;
    assert_eq!(
        reply.status,
        200,
        "the issuer with tls_ca_file still works: {}\n{}",
        reply.text,
        broker.stderr()
    );
}

#[test]
fn tls_ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_ca(dir.path());
    std::fs::write(
        dir.path().join("public-key.pem"),
        SigningKey::generate(KeyKind::Ec).public_pem(),
    )
    .expect("write PEM");
    std::fs::write(dir.path().join("empty.pem"), "").expect("write empty file");
    let config_path = dir.path().join("fedbroker.yaml");
    let check = |tls_ca_file: &str| {
        let issuer = format!(
            "- name: private\n  issuer: https://127.0.0.1:8443\n  audiences: [fedbroker]\n  \
             danger_allow_insecure: true\n  tls_ca_file: {tls_ca_file}\n"
        );
        let config = BrokerConfig::new()
            .issuer(issuer)
            .rules(rule_for("private"))
            .render()
            .replace("@PORT@", "18080")
            .replace("@DIR@", dir.path().to_str().expect("UTF-8 tempdir"));
        std::fs::write(&config_path, config).expect("write config");
        run_cli(&["check", "--config", config_path.to_str().expect("UTF-8 path")])
    };

    // A real CA certificate passes (a relative path is resolved against the config's
    // directory, not the working directory); the config is otherwise valid.
    let out = check("ca.pem");
    assert_eq!(out.code, Some(0), "{}", out.all());

    for (file, what) in [
        ("missing-ca.pem", "a missing file"),
        ("public-key.pem", "a PEM public key"),
        ("empty.pem", "an empty file"),
        ("ca.key", "the CA's private key"),
    ] {
        let out = check(file);
        assert_eq!(out.code, Some(1), "{what} was accepted:\n{}", out.all());
        assert!(
            out.all().contains("tls_ca_file") && out.all().contains(file),
            "{what}: tls_ca_file and {file} not named:\n{}",
            out.all()
        );
    }
}

/// Withdrawing trust takes effect on reload: a reload that removes `tls_ca_file` must
/// not keep the old client (and its extra root) for the issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_without_tls_ca_file_withdraws_the_trust() {
    let issuer = TlsIssuer::start();
    let broker = Broker::start(&private_issuer_config(&issuer, true).render()).await;
    assert_eq!(broker.exchange(&issuer.mint(), TARGET).await.status, 200);
    let generation = |r: &integration_tests::Reply| r.json["rules"]["generation"].as_u64().unwrap_or(0);
    let before = generation(&broker.get("/readyz").await);

    let without = private_issuer_config(&issuer, false)
        .render()
        .replace("@PORT@", &broker.port().to_string())
        .replace("@DIR@", broker.dir().to_str().expect("utf-8 dir"));
    let path = broker.dir().join("fedbroker.yaml");
    std::fs::write(path.with_extension("tmp"), without).expect("write config");
    std::fs::rename(path.with_extension("tmp"), &path).expect("rename config");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = broker.get("/readyz").await;
        if generation(&r) > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reload: {}\n{}",
            r.text,
            broker.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let reply = broker.exchange(&issuer.mint(), TARGET).await;
    assert_eq!(
        reply.status,
        503,
        "the private CA must no longer be trusted: {}\n{}",
        reply.text,
        broker.stderr()
    );
}
