//! `signing.kms` through the real binary and a real `moto_server` KMS: tokens signed by
//! RSA and EC P-256 keys that live in KMS (the broker writes no key file), the KMS public
//! keys published with their thumbprints as kids, the first key signing and the others
//! published, a KMS that does not answer making `/token` a 503 (never a token signed
//! another way), unusable keys refused at start, and `keys list`/`keys rotate` with KMS.

use std::path::Path;
use std::time::Duration;

use integration_tests::moto::{Moto, moto_or_skip};
use integration_tests::tokens::{decode_unverified, verify_issued};
use integration_tests::{Broker, FakeIssuer, run_cli_in, run_cli_with_timeout};
use serde_json::{Value, json};

use crate::support::{TARGET, config_with_rules, subject_rule};

/// The AWS credentials moto accepts (it checks none), for the broker's default chain.
const AWS_ENV: [(&str, &str); 5] = [
    ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
    (
        "AWS_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent/fedbroker-test-aws-config"),
];

/// A config trusting `fake`, letting its subject get `target-a`, signing with `algorithm`
/// through `keys` in `moto`'s KMS.
fn kms_config(fake: &FakeIssuer, moto: &Moto, algorithm: &str, keys: &[&str], timeout: &str) -> String {
    let rule = subject_rule("kms", &format!("audiences: [{TARGET}]"), "");
    let keys = keys.iter().map(|k| format!("      - {k}\n")).collect::<String>();
    config_with_rules(fake, &rule).render().replace(
        "signing:\n  key_dir: @DIR@/keys\n",
        &format!(
            "signing:\n  algorithm: {algorithm}\n  kms:\n    provider: aws\n    region: us-east-1\n    \
             endpoint: {}\n    danger_allow_insecure_endpoint: true\n    timeout: {timeout}\n    keys:\n{keys}",
            moto.url()
        ),
    )
}

async fn start(config: &str) -> Broker {
    let mut builder = Broker::builder();
    for (k, v) in AWS_ENV {
        builder = builder.env(k, v);
    }
    builder.start(config).await
}

/// The JWK members RFC 7638 hashes, from a DER SubjectPublicKeyInfo, with the kid.
fn thumbprint_of_spki(der: &[u8]) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der).expect("SPKI");
    let canonical = match spki.parsed().expect("public key") {
        PublicKey::RSA(rsa) => {
            let strip = |b: &[u8]| b.iter().skip_while(|&&x| x == 0).copied().collect::<Vec<u8>>();
            format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                B64.encode(strip(rsa.exponent)),
                B64.encode(strip(rsa.modulus))
            )
        }
        PublicKey::EC(point) => {
            let d = point.data();
            format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                B64.encode(&d[1..33]),
                B64.encode(&d[33..65])
            )
        }
        other => panic!("unexpected key {other:?}"),
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    B64.encode(digest.as_ref())
}

fn published(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

fn key_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        let name = entry.to_string_lossy().into_owned();
        if name.ends_with(".pem") || name.ends_with(".key") {
            found.push(name);
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn tokens_are_signed_by_kms_keys_and_verify_against_the_published_kms_public_keys() {
    let Some(moto) = moto_or_skip() else { return };
    for (algorithm, spec) in [("RS256", "RSA_2048"), ("ES256", "ECC_NIST_P256")] {
        let signing = moto.kms_create_key(spec, "SIGN_VERIFY").await;
        let next = moto.kms_create_key(spec, "SIGN_VERIFY").await;
        let alias = format!("alias/fedbroker-{}", algorithm.to_lowercase());
        moto.kms_create_alias(&alias, &signing).await;
        let fake = FakeIssuer::start();
        // The signing key by its alias, the next one by its ARN: published, not signing.
        let broker = start(&kms_config(&fake, &moto, algorithm, &[&alias, &next], "5s")).await;

        let signing_kid = thumbprint_of_spki(&moto.kms_public_key(&signing).await);
        let next_kid = thumbprint_of_spki(&moto.kms_public_key(&next).await);
        let jwks = broker.get("/jwks.json").await.json;
        assert_eq!(
            published(&jwks),
            vec![signing_kid.clone(), next_kid.clone()],
            "{jwks}"
        );
        for key in jwks["keys"].as_array().expect("keys") {
            assert_eq!(key["alg"], algorithm, "{jwks}");
            assert!(
                key.get("d").is_none() && key.get("p").is_none(),
                "a private member: {jwks}"
            );
        }
        assert_eq!(
            broker.get("/readyz").await.json["signing_key"],
            signing_kid.as_str()
        );

        for _ in 0..3 {
            let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let token = reply.access_token();
            let (header, claims) = verify_issued(&broker, token, &[TARGET]).await;
            assert_eq!(header.kid.as_deref(), Some(signing_kid.as_str()));
            assert_eq!(format!("{:?}", header.alg), algorithm);
            assert_eq!(claims["aud"], TARGET);
        }
        // No key material anywhere in the broker's directory.
        assert_eq!(key_files(broker.dir()), Vec::<String>::new());
    }
}

#[tokio::test]
async fn a_kms_that_does_not_answer_makes_token_a_503_and_no_token_is_signed_otherwise() {
    let Some(moto) = moto_or_skip() else { return };
    let key = moto.kms_create_key("ECC_NIST_P256", "SIGN_VERIFY").await;
    let fake = FakeIssuer::start();
    let broker = start(&kms_config(&fake, &moto, "ES256", &[&key], "1s")).await;
    let ok = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(ok.status, 200, "{ok:?}");

    moto.pause();
    let subject = fake.mint(json!({}));
    let reply = broker.exchange(&subject, TARGET).await;
    moto.resume();
    reply.assert_error(503, "temporarily_unavailable", &subject);
    assert_eq!(reply.header("retry-after"), Some("5"), "{reply:?}");
    let audit = broker.stderr();
    assert!(
        audit.contains("did not sign") && audit.contains("timed out"),
        "the audit line names the KMS failure:\n{audit}"
    );

    // Answering again, KMS signs again.
    let again = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(again.status, 200, "{again:?}");
    let (header, _) = decode_unverified(again.access_token());
    assert_eq!(header["alg"], "ES256");
}

#[tokio::test]
async fn unusable_kms_keys_stop_the_start_with_a_reason() {
    let Some(moto) = moto_or_skip() else { return };
    let encrypt = moto.kms_create_key("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT").await;
    let ec = moto.kms_create_key("ECC_NIST_P256", "SIGN_VERIFY").await;
    let fake = FakeIssuer::start();
    let cases: [(&str, &str, &str); 3] = [
        ("RS256", &encrypt, "KeyUsage is not SIGN_VERIFY"),
        ("RS256", &ec, "cannot sign RS256"),
        ("ES256", "alias/no-such-key", "NotFoundException"),
    ];
    for (algorithm, key, expected) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = kms_config(&fake, &moto, algorithm, &[key], "5s")
            .replace("@DIR@", dir.path().to_str().expect("UTF-8"))
            .replace("@PORT@", "0");
        let path = dir.path().join("fedbroker.yaml");
        std::fs::write(&path, config).expect("config");
        let out = run_cli_with_timeout(
            dir.path(),
            &["serve", "--config", path.to_str().expect("UTF-8")],
            &AWS_ENV,
            Duration::from_secs(60),
        );
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr.contains(key) && out.stderr.contains(expected),
            "{out:?}"
        );
    }
}

#[tokio::test]
async fn keys_list_shows_kms_keys_and_keys_rotate_explains_how_they_turn_over() {
    let Some(moto) = moto_or_skip() else { return };
    let first = moto.kms_create_key("RSA_2048", "SIGN_VERIFY").await;
    let second = moto.kms_create_key("RSA_3072", "SIGN_VERIFY").await;
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kms_config(&fake, &moto, "RS256", &[&first, &second], "5s")
        .replace("@DIR@", dir.path().to_str().expect("UTF-8"))
        .replace("@PORT@", "0");
    let path = dir.path().join("fedbroker.yaml");
    std::fs::write(&path, config).expect("config");
    let path = path.to_str().expect("UTF-8");

    let out = run_cli_in(
        dir.path(),
        &["keys", "list", "--config", path, "--json"],
        &AWS_ENV,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let listing: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let first_kid = thumbprint_of_spki(&moto.kms_public_key(&first).await);
    let second_kid = thumbprint_of_spki(&moto.kms_public_key(&second).await);
    assert_eq!(listing["active_kid"], first_kid.as_str(), "{listing}");
    let keys = listing["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2, "{listing}");
    // `kms_key` is the key as KMS names it: its ARN (moto answers with the bare key ID).
    for (key, kid, state, arn) in [
        (&keys[0], &first_kid, "active", &first),
        (&keys[1], &second_kid, "published", &second),
    ] {
        assert_eq!(
            (key["kid"].as_str(), key["state"].as_str()),
            (Some(kid.as_str()), Some(state)),
            "{listing}"
        );
        let name = key["kms_key"].as_str().expect("kms_key");
        assert!(arn.ends_with(name), "{name} names {arn}: {listing}");
    }

    let text = run_cli_in(dir.path(), &["keys", "list", "--config", path], &AWS_ENV);
    assert_eq!(text.code, Some(0), "{text:?}");
    assert!(
        text.stdout.contains("kms: aws, 2 key(s)") && text.stdout.contains(&first_kid),
        "{text:?}"
    );

    let rotate = run_cli_in(dir.path(), &["keys", "rotate", "--config", path], &AWS_ENV);
    assert_eq!(rotate.code, Some(1), "{rotate:?}");
    assert!(rotate.stderr.contains("signing.kms.keys"), "{rotate:?}");
    assert_eq!(key_files(dir.path()), Vec::<String>::new());
}

#[test]
fn check_refuses_kms_with_a_key_directory_and_unknown_providers() {
    let fake_url = "https://issuer.example";
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "server:\n  listen: 127.0.0.1:0\n  public_url: https://broker.example\nsigning:\n  algorithm: EdDSA\n  \
         key_dir: ./keys\n  kms:\n    provider: gcp\n    keys: []\n    endpoint: http://127.0.0.1:1\n    \
         timeout: 90s\nissuers:\n  - name: x\n    issuer: {fake_url}\n    audiences: [a]\n    jwks: {{keys: []}}\n\
         rules: []\n"
    );
    let path = dir.path().join("fedbroker.yaml");
    std::fs::write(&path, config).expect("config");
    let out = run_cli_in(
        dir.path(),
        &["check", "--config", path.to_str().expect("UTF-8")],
        &[],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    for expected in [
        "signing.kms.provider",
        "signing.kms.keys",
        "signing.kms.endpoint",
        "signing.kms.timeout",
        "signs RS256, PS256 or ES256",
        "signing.key_dir",
    ] {
        assert!(
            out.stderr.contains(expected) || out.stdout.contains(expected),
            "{expected}: {out:?}"
        );
    }
}
