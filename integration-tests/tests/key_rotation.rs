//! Scheduled signing-key rotation (`signing.rotation`) through the real binary: the next
//! key is published before it signs, then signs, while the previous one stays published;
//! two replicas sharing the key directory agree at every step; `keys rotate` and `keys
//! list` show and force the schedule without a restart.

use std::path::Path;
use std::time::Duration;

use integration_tests::tokens::decode_unverified;
use integration_tests::{Broker, FakeIssuer, eventually_explained, run_cli_in};
use serde_json::{Value, json};

use crate::support::{TARGET, config_with_rules, subject_rule};

/// A broker config with `rotation` under `signing:` and keys in `key_dir`, issuing
/// tokens that live 5 s.
fn rotating_config(fake: &FakeIssuer, key_dir: &Path, rotation: &str) -> String {
    let rule = subject_rule("short", &format!("audiences: [{TARGET}]"), "lifetime: 5s");
    config_with_rules(fake, &rule)
        .server("max_issued_lifetime: 5s")
        .render()
        .replace(
            "signing:\n  key_dir: @DIR@/keys\n",
            &format!(
                "signing:\n  key_dir: {}\n  algorithm: ES256\n  rotation:\n{rotation}",
                key_dir.display()
            ),
        )
}

async fn published_kids(broker: &Broker) -> Vec<String> {
    let jwks = broker.get("/jwks.json").await;
    jwks.json["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

async fn signing_kid(broker: &Broker) -> String {
    let ready = broker.get("/readyz").await;
    ready.json["signing_key"]
        .as_str()
        .expect("signing_key")
        .to_owned()
}

/// The kid of a token issued now.
async fn issued_kid(broker: &Broker, fake: &FakeIssuer) -> String {
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (header, _) = decode_unverified(reply.access_token());
    header["kid"].as_str().expect("kid").to_owned()
}

fn keys_list(dir: &Path) -> Value {
    let config = dir.join("fedbroker.yaml");
    let out = run_cli_in(
        dir,
        &[
            "keys",
            "list",
            "--config",
            config.to_str().expect("UTF-8"),
            "--json",
        ],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    serde_json::from_str(&out.stdout).expect("keys list --json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_key_is_published_before_it_signs_on_every_replica() {
    let fake = FakeIssuer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let key_dir = shared.path().join("keys");
    let config = rotating_config(&fake, &key_dir, "    every: 12s\n    prepublish: 5s\n");
    let a = Broker::start(&config).await;
    let b = Broker::start(&config).await;
    let first = signing_kid(&a).await;
    assert_eq!(signing_kid(&b).await, first, "replicas sign with the same key");

    // The next key appears in /jwks.json of both replicas while the first still signs.
    let next = eventually_explained(
        Duration::from_secs(30),
        "a second key is published",
        || async {
            let kids = published_kids(&a).await;
            (kids.len() == 2).then(|| kids.into_iter().find(|k| *k != first).expect("new kid"))
        },
        || a.stderr(),
    )
    .await;
    let listing = keys_list(a.dir());
    let states: Vec<(String, String)> = listing["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            let text = |name: &str| k[name].as_str().unwrap_or("").to_owned();
            (text("kid"), text("state"))
        })
        .collect();
    // Within the prepublication period (5 s): published, not signing.
    assert_eq!(signing_kid(&a).await, first, "{listing}");
    {
        assert!(states.contains(&(next.clone(), "next".into())), "{listing}");
        assert!(states.contains(&(first.clone(), "active".into())), "{listing}");
        assert_eq!(issued_kid(&a, &fake).await, first);
        let kids_b = eventually_explained(
            Duration::from_secs(10),
            "replica b publishes the next key too",
            || async {
                let kids = published_kids(&b).await;
                kids.contains(&next).then_some(kids)
            },
            || b.stderr(),
        )
        .await;
        assert!(kids_b.contains(&first));
    }

    // Then it signs, on both replicas, and the first key stays published.
    for broker in [&a, &b] {
        eventually_explained(
            Duration::from_secs(30),
            "the next key signs",
            || async { (signing_kid(broker).await == next).then_some(()) },
            || broker.stderr(),
        )
        .await;
        assert_eq!(issued_kid(broker, &fake).await, next);
        let kids = published_kids(broker).await;
        assert!(kids.contains(&first) && kids.contains(&next), "{kids:?}");
    }
    assert!(a.stderr().contains("signing key rotated") || b.stderr().contains("signing key rotated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_makes_a_key_that_running_brokers_publish_then_sign_with() {
    let fake = FakeIssuer::start();
    let shared = tempfile::tempdir().expect("tempdir");
    let key_dir = shared.path().join("keys");
    let config = rotating_config(&fake, &key_dir, "    every: 1h\n    prepublish: 20s\n");
    let broker = Broker::start(&config).await;
    let first = signing_kid(&broker).await;
    let before = keys_list(broker.dir());
    assert_eq!(before["active_kid"], first.as_str(), "{before}");
    assert_eq!(before["rotation"]["every"], 3600);

    let config_path = broker.dir().join("fedbroker.yaml");
    let out = run_cli_in(
        broker.dir(),
        &["keys", "rotate", "--config", config_path.to_str().expect("UTF-8")],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let path = out.stdout.trim().to_owned();
    let new = Path::new(&path)
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("kid file")
        .to_owned();

    let listing = keys_list(broker.dir());
    let entry = listing["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == new.as_str())
        .cloned()
        .expect("the new key is listed");
    assert_eq!(entry["state"], "next", "{listing}");
    assert_eq!(listing["active_kid"], first.as_str());

    // The running broker publishes it (it reads the directory every 30 s at most) and
    // keeps signing with the first key until the prepublication period is over.
    eventually_explained(
        Duration::from_secs(45),
        "the rotated key is published",
        || async { published_kids(&broker).await.contains(&new).then_some(()) },
        || broker.stderr(),
    )
    .await;
    eventually_explained(
        Duration::from_secs(45),
        "the rotated key signs after prepublish",
        || async { (signing_kid(&broker).await == new).then_some(()) },
        || broker.stderr(),
    )
    .await;
    assert_eq!(issued_kid(&broker, &fake).await, new);
}

#[test]
fn rotation_settings_are_checked() {
    let fake = FakeIssuer::start();
    for (rotation, message) in [
        ("    prepublish: 1h\n", "signing.rotation.every"),
        (
            "    every: 1h\n    prepublish: 2h\n",
            "must be shorter than signing.rotation.every",
        ),
        ("    every: 5s\n", "must be at least 10s"),
        ("    every: 30d\n    sometimes: 1h\n", "unknown field `sometimes`"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = rotating_config(&fake, &dir.path().join("keys"), rotation)
            .replace("@DIR@", dir.path().to_str().expect("UTF-8"))
            .replace("@PORT@", "18080");
        let path = dir.path().join("fedbroker.yaml");
        std::fs::write(&path, text).expect("write");
        let out = run_cli_in(
            dir.path(),
            &["check", "--config", path.to_str().expect("UTF-8")],
            &[],
        );
        assert_eq!(out.code, Some(1), "{rotation}: {}", out.all());
        assert!(
            out.all().contains(message),
            "{rotation} / {message}:\n{}",
            out.all()
        );
    }
}
