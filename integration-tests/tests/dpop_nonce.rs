//! DPoP server nonces (RFC 9449 §8) at `/token` through the real binary, with
//! `server.dpop.nonce`: a proof without a good nonce is answered `use_dpop_nonce` with
//! one in `DPoP-Nonce`, before the home token is spent; nonces made by a replica that
//! shares the secret file are accepted; nonces are crafted here (HMAC-SHA256 with
//! aws-lc-rs, not the broker's code) to test forgery and expiry without waiting.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use integration_tests::dpop::{DpopKey, now};
use integration_tests::tokens::verify_issued;
use integration_tests::{Broker, FakeIssuer, Http, Reply, exchange_form, run_cli};
use serde_json::json;

use crate::support::{TARGET, config_with_rules, default_rule};

/// A broker trusting `fake` with [`default_rule`] and `server.dpop.nonce: <nonce>` (YAML
/// flow style, e.g. `{}` or `{lifetime: 10s}`).
async fn broker_with_nonces(fake: &FakeIssuer, nonce: &str) -> Broker {
    let config = config_with_rules(fake, &default_rule()).server(&format!("dpop: {{nonce: {nonce}}}"));
    Broker::start(&config.render()).await
}

/// `bytes` written to `dir/name` with mode 0600.
fn secret_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn random_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 48];
    aws_lc_rs::rand::fill(&mut secret).expect("random");
    secret
}

/// A nonce as the broker documents it: base64url(made (8 bytes BE) || the first 16
/// bytes of HMAC-SHA256(secret, those 8 bytes)).
fn craft_nonce(secret: &[u8], made: u64) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, &made.to_be_bytes());
    let mut bytes = made.to_be_bytes().to_vec();
    bytes.extend_from_slice(&tag.as_ref()[..16]);
    B64.encode(bytes)
}

/// An exchange of `subject_token` for [`TARGET`] with a proof by `key`, carrying `nonce`
/// when given.
async fn exchange_with_nonce(http: &Http, key: &DpopKey, subject_token: &str, nonce: Option<&str>) -> Reply {
    let htu = http.endpoint("/token");
    let claims = match nonce {
        Some(n) => json!({"htu": htu, "nonce": n}),
        None => json!({"htu": htu}),
    };
    let proof = key.proof_with(json!({}), claims);
    http.token_request_with(&exchange_form(subject_token, TARGET), &[("DPoP", &proof)], None)
        .await
}

/// The reply's `DPoP-Nonce`: present, 32 base64url characters.
fn nonce_of(reply: &Reply) -> String {
    let value = reply
        .headers
        .get("dpop-nonce")
        .unwrap_or_else(|| panic!("no DPoP-Nonce header: {:?}", reply.headers))
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(value.len(), 32, "{value}");
    assert_eq!(B64.decode(&value).expect("base64url").len(), 24, "{value}");
    value
}

fn assert_use_nonce(reply: &Reply, subject_token: &str, what: &str) -> String {
    assert_eq!(reply.status, 400, "{what}: {}", reply.text);
    assert_eq!(reply.json["error"], "use_dpop_nonce", "{what}: {}", reply.text);
    assert_eq!(
        reply.json["error_description"],
        "the DPoP proof must carry the nonce of the DPoP-Nonce response header",
        "{what}: a fixed description"
    );
    assert_eq!(
        reply
            .headers
            .get("cache-control")
            .map(|v| v.to_str().unwrap_or("")),
        Some("no-store"),
        "{what}"
    );
    assert!(
        !reply.text.contains(subject_token),
        "{what}: the answer echoes a token"
    );
    nonce_of(reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_without_a_nonce_gets_one_and_the_same_home_token_then_succeeds() {
    let fake = FakeIssuer::start();
    let broker = broker_with_nonces(&fake, "{}").await;
    let key = DpopKey::generate();
    let subject_token = fake.mint(json!({}));

    let reply = exchange_with_nonce(&broker, &key, &subject_token, None).await;
    let nonce = assert_use_nonce(&reply, &subject_token, "no nonce");

    // Nothing was spent: the same home token, a new proof carrying the nonce.
    let reply = exchange_with_nonce(&broker, &key, &subject_token, Some(&nonce)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["token_type"], "DPoP");
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["cnf"], json!({"jkt": key.thumbprint()}), "{claims}");
    // A success hands a fresh nonce too (§8.2); the nonce stays good for the next proof.
    nonce_of(&reply);
    let reply = exchange_with_nonce(&broker, &key, &fake.mint(json!({})), Some(&nonce)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Another refusal of a request with a proof carries one as well.
    let wrong_htm = key.proof_with(
        json!({}),
        json!({"htu": broker.endpoint("/token"), "htm": "GET", "nonce": nonce}),
    );
    let token = fake.mint(json!({}));
    let reply = broker
        .token_request_with(&exchange_form(&token, TARGET), &[("DPoP", &wrong_htm)], None)
        .await;
    assert_eq!(reply.json["error"], "invalid_dpop_proof", "{}", reply.text);
    nonce_of(&reply);

    // Without a DPoP header nonces play no part: a bearer token, no DPoP-Nonce.
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["token_type"], "N_A");
    assert!(reply.headers.get("dpop-nonce").is_none(), "{:?}", reply.headers);

    let lines = broker.wait_for_audit_lines(5).await;
    assert_eq!(lines[0]["error"], "use_dpop_nonce");
    let reason = lines[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("no nonce, and this broker requires one"),
        "{reason}"
    );
    assert_eq!(lines[1]["outcome"], "allow");
    assert_eq!(lines[1]["dpop_jkt"], key.thumbprint());
    assert!(!broker.audit_text().contains(&nonce), "a nonce in the audit log");

    let metrics = broker.get("/metrics").await.text;
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("fedbroker_token_exchanges_total") && l.contains("\"use_dpop_nonce\""))
        .unwrap_or_else(|| panic!("use_dpop_nonce not counted:\n{metrics}"));
    assert!(counted.ends_with(" 1"), "{counted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_garbled_and_foreign_nonces_are_refused() {
    let fake = FakeIssuer::start();
    let broker = broker_with_nonces(&fake, "{lifetime: 5m}").await;
    let key = DpopKey::generate();
    let first = exchange_with_nonce(&broker, &key, &fake.mint(json!({})), None).await;
    let good = nonce_of(&first);
    let mut flipped = B64.decode(&good).expect("base64url");
    flipped[20] ^= 1;
    let mut retimed = B64.decode(&good).expect("base64url");
    retimed[7] ^= 1;
    let cases: Vec<(&str, String, &str)> = vec![
        ("a tag bit flipped", B64.encode(&flipped), "not made with"),
        (
            "another second under the tag",
            B64.encode(&retimed),
            "not made with",
        ),
        (
            "another secret's",
            craft_nonce(b"not this broker's secret, 32 bytes!", now()),
            "not made with",
        ),
        ("garbage", "n".repeat(32), "not made with"),
        ("too short", good[..20].to_owned(), "malformed"),
        ("not base64url", "*".repeat(32), "malformed"),
        ("very long", "A".repeat(4000), "malformed"),
        ("empty", String::new(), "malformed"),
    ];
    for (what, nonce, _) in &cases {
        let token = fake.mint(json!({}));
        let reply = exchange_with_nonce(&broker, &key, &token, Some(nonce)).await;
        assert_use_nonce(&reply, &token, what);
        // Nothing spent.
        let reply = exchange_with_nonce(&broker, &key, &token, Some(&good)).await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.text);
    }
    let lines = broker.wait_for_audit_lines(1 + 2 * cases.len()).await;
    let reasons: Vec<&str> = lines
        .iter()
        .filter(|l| l["error"] == "use_dpop_nonce")
        .map(|l| l["reason"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(reasons.len(), 1 + cases.len(), "{reasons:#?}");
    for ((what, _, needle), reason) in cases.iter().zip(&reasons[1..]) {
        assert!(reason.contains(needle), "{what}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_is_accepted_for_its_lifetime_only() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = random_secret();
    let path = secret_file(dir.path(), "nonce.key", &secret);
    let broker = broker_with_nonces(
        &fake,
        &format!("{{lifetime: 10s, secret_file: {}}}", path.display()),
    )
    .await;
    let key = DpopKey::generate();
    // Made by the test with the shared secret: accepted, which checks the format too.
    let token = fake.mint(json!({}));
    let reply = exchange_with_nonce(&broker, &key, &token, Some(&craft_nonce(&secret, now()))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let cases = [
        ("a minute old", now() - 60, "s old; accepted for 10s)"),
        ("15 s old", now() - 15, "the nonce expired"),
        ("ten minutes ahead", now() + 600, "in the future"),
    ];
    for (what, made, _) in &cases {
        let token = fake.mint(json!({}));
        let reply = exchange_with_nonce(&broker, &key, &token, Some(&craft_nonce(&secret, *made))).await;
        assert_use_nonce(&reply, &token, what);
    }
    let lines = broker.wait_for_audit_lines(1 + cases.len()).await;
    for ((what, _, needle), line) in cases.iter().zip(&lines[1..]) {
        let reason = line["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(needle), "{what}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_secret_file_accept_each_others_nonces() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = secret_file(dir.path(), "shared.key", &random_secret());
    let nonce_config = format!("{{secret_file: {}}}", path.display());
    let a = broker_with_nonces(&fake, &nonce_config).await;
    let b = broker_with_nonces(&fake, &nonce_config).await;
    // A third with its own random secret accepts neither's.
    let c = broker_with_nonces(&fake, "{}").await;
    let key = DpopKey::generate();

    let from_a = nonce_of(&exchange_with_nonce(&a, &key, &fake.mint(json!({})), None).await);
    let from_b = nonce_of(&exchange_with_nonce(&b, &key, &fake.mint(json!({})), None).await);
    for (what, broker, nonce) in [("A's at B", &b, &from_a), ("B's at A", &a, &from_b)] {
        let reply = exchange_with_nonce(broker, &key, &fake.mint(json!({})), Some(nonce)).await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.text);
        assert_eq!(reply.json["token_type"], "DPoP", "{what}");
    }
    let token = fake.mint(json!({}));
    let reply = exchange_with_nonce(&c, &key, &token, Some(&from_a)).await;
    assert_use_nonce(&reply, &token, "A's at a broker with its own secret");
}

#[test]
fn check_reports_nonce_configuration_errors() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    secret_file(dir.path(), "short.key", b"only 16 bytes...");
    let open = secret_file(dir.path(), "open.key", &random_secret());
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    secret_file(dir.path(), "good.key", &random_secret());
    let check = |nonce: &str| {
        let config = config_with_rules(&fake, &default_rule()).server(&format!("dpop: {{nonce: {nonce}}}"));
        let path = config.write_to(dir.path());
        run_cli(&["check", "--config", path.to_str().expect("UTF-8 path")])
    };
    for (nonce, needles) in [
        (
            "{secret_file: short.key}",
            &["server.dpop.nonce.secret_file", "holds 16 bytes; at least 32"][..],
        ),
        (
            "{secret_file: open.key}",
            &["server.dpop.nonce.secret_file", "permissions 0644 are too open"][..],
        ),
        (
            "{secret_file: missing.key}",
            &["server.dpop.nonce.secret_file", "missing.key: cannot read"][..],
        ),
        (
            "{lifetime: 5s}",
            &["server.dpop.nonce.lifetime", "must be between 10s and 1h"][..],
        ),
        ("{lifetime: 2h}", &["server.dpop.nonce.lifetime"][..]),
        ("{lifetime: soon}", &["server.dpop.nonce.lifetime"][..]),
        ("{lifetimes: 5m}", &["lifetimes"][..]),
    ] {
        let out = check(nonce);
        assert_ne!(out.code, Some(0), "{nonce}: {}", out.all());
        for needle in needles {
            assert!(
                out.all().contains(needle),
                "{nonce}: `{needle}` not in:\n{}",
                out.all()
            );
        }
    }
    // Both problems at once, each reported.
    let out = check("{lifetime: 5s, secret_file: short.key}");
    assert!(
        out.all().contains("server.dpop.nonce.lifetime")
            && out.all().contains("server.dpop.nonce.secret_file"),
        "{}",
        out.all()
    );
    for good in ["{}", "{secret_file: good.key, lifetime: 10s}", "{lifetime: 1h}"] {
        let out = check(good);
        assert_eq!(out.code, Some(0), "{good}: {}", out.all());
    }
}
