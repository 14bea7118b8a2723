//! Signing keys across replicas (issue 10, items 7–10): replicas started together on
//! an empty shared `key_dir` generate one key; the signing key is chosen the same way by
//! every replica (symbolic links followed, ties by kid, copies published once,
//! `signing.active_kid`); a rolling rotation pinned by `active_kid` never signs with a
//! key some replica does not publish; `keys generate --config` takes the configured
//! algorithm and `serve` warns about keys that do not fit it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use integration_tests::tokens::{decode_unverified, verify_with_jwks};
use integration_tests::{Broker, FakeIssuer, KeyKind, run_cli, run_cli_in};
use serde_json::json;

use crate::support::{TARGET, check_in, config_with_rules, default_rule};

/// The default config (fake issuer as `k8s`, one rule), keys in `key_dir`, signing with
/// `algorithm`, `active_kid` when given.
fn config(fake: &FakeIssuer, key_dir: &Path, algorithm: &str, active_kid: Option<&str>) -> String {
    let rendered = config_with_rules(fake, &default_rule())
        .signing_algorithm(algorithm)
        .render();
    let mut signing = format!("  key_dir: {}\n", key_dir.display());
    if let Some(kid) = active_kid {
        signing.push_str(&format!("  active_kid: {kid}\n"));
    }
    assert!(rendered.contains("  key_dir: @DIR@/keys\n"), "{rendered}");
    rendered.replace("  key_dir: @DIR@/keys\n", &signing)
}

/// An empty key directory with mode 0700 in a fresh tempdir.
fn empty_key_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("keys");
    std::fs::create_dir(&dir).expect("key dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    (root, dir)
}

/// `keys generate --dir DIR --algorithm ALG`: the new file and its kid.
fn generate(dir: &Path, algorithm: &str) -> (PathBuf, String) {
    let out = run_cli(&[
        "keys",
        "generate",
        "--dir",
        dir.to_str().expect("path"),
        "--algorithm",
        algorithm,
    ]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let path = PathBuf::from(out.stdout.trim());
    (path.clone(), kid_of(&path))
}

fn kid_of(path: &Path) -> String {
    path.file_stem()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

fn set_mtime(path: &Path, secs: u64) {
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(UNIX_EPOCH + Duration::from_secs(secs)))
        .expect("set mtime");
}

fn pem_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read key dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    files.sort();
    files
}

/// The kids `/jwks.json` publishes, in its order.
async fn published(broker: &Broker) -> Vec<String> {
    broker
        .jwks()
        .await
        .keys
        .iter()
        .map(|k| k.common.key_id.clone().expect("every published key has a kid"))
        .collect()
}

/// A token from `broker` (a fresh subject token each time): its kid.
async fn issued(fake: &FakeIssuer, broker: &Broker) -> (String, String) {
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    let token = reply.access_token().to_owned();
    let (header, _) = decode_unverified(&token);
    let kid = header["kid"].as_str().expect("kid").to_owned();
    (token, kid)
}

/// Every replica's token verifies against every replica's `/jwks.json`. Returns the
/// kid each replica signed with.
async fn assert_cross_verify(fake: &FakeIssuer, replicas: &[&Broker]) -> Vec<String> {
    let mut kids = Vec::new();
    for signer in replicas {
        let (token, kid) = issued(fake, signer).await;
        for verifier in replicas {
            verify_with_jwks(&verifier.jwks().await, &token, signer.url(), &[TARGET]);
        }
        kids.push(kid);
    }
    kids
}

/// Stop `broker` and start it again, in its own directory, with `config_yaml`.
async fn restart(broker: Broker, config_yaml: &str) -> Broker {
    let dir = broker.stop_and_keep_dir();
    Broker::builder().dir(dir).start(config_yaml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_on_an_empty_key_dir_generate_one_key() {
    let fake = FakeIssuer::start();
    let (_root, key_dir) = empty_key_dir();
    // RSA: generating takes long enough that, unlocked, every replica would make its own.
    let yaml = config(&fake, &key_dir, "RS256", None);

    let (a, b, c, d) = tokio::join!(
        Broker::start(&yaml),
        Broker::start(&yaml),
        Broker::start(&yaml),
        Broker::start(&yaml)
    );

    let files = pem_files(&key_dir);
    assert_eq!(files.len(), 1, "one key between the replicas: {files:?}");
    let entries = std::fs::read_dir(&key_dir).expect("key dir").count();
    assert_eq!(
        entries, 1,
        "the generation lock is removed once the key is written"
    );
    let replicas = [&a, &b, &c, &d];
    let first = a.get("/jwks.json").await.text;
    for r in replicas {
        assert_eq!(
            r.get("/jwks.json").await.text,
            first,
            "every replica publishes the same set"
        );
    }
    assert_eq!(published(&a).await, vec![kid_of(&files[0])]);
    let kids = assert_cross_verify(&fake, &replicas).await;
    assert!(kids.iter().all(|k| *k == kid_of(&files[0])), "{kids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_secret_mount_chooses_by_the_key_files_time_not_the_symlinks() {
    let fake = FakeIssuer::start();
    let staging = tempfile::tempdir().expect("tempdir");
    let (old_file, old_kid) = generate(staging.path(), "RS256");
    let (new_file, new_kid) = generate(staging.path(), "RS256");
    // A Secret volume: key files are symlinks to `..data/NAME`, `..data` is a symlink to
    // the timestamped directory the kubelet wrote.
    let (_root, mount) = empty_key_dir();
    let stamped = mount.join("..2020_01_01_00_00_00.000000001");
    std::fs::create_dir(&stamped).expect("timestamped dir");
    std::fs::rename(&old_file, stamped.join("old.pem")).expect("move old");
    std::fs::rename(&new_file, stamped.join("new.pem")).expect("move new");
    set_mtime(&stamped.join("old.pem"), 1_577_836_800); // 2020-01-01
    set_mtime(&stamped.join("new.pem"), 1_700_000_000); // 2023-11-14
    std::os::unix::fs::symlink("..2020_01_01_00_00_00.000000001", mount.join("..data")).expect("..data");
    for name in ["old.pem", "new.pem"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), mount.join(name)).expect("symlink");
    }
    // The symlinks' own times say the opposite: old.pem's link is the newer one.
    for (name, date) in [("old.pem", "@1900000000"), ("new.pem", "@1500000000")] {
        let status = std::process::Command::new("touch")
            .args(["-h", "-d", date])
            .arg(mount.join(name))
            .status()
            .expect("run touch");
        assert!(status.success(), "touch -h {name}");
    }

    let broker = Broker::start(&config(&fake, &mount, "RS256", None)).await;

    let (_, kid) = issued(&fake, &broker).await;
    assert_eq!(
        kid, new_kid,
        "the key file modified last signs, whatever its symlink says"
    );
    let mut kids = published(&broker).await;
    kids.sort();
    let mut expected = vec![old_kid, new_kid];
    expected.sort();
    assert_eq!(kids, expected, "both keys published, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_key_is_published_once_and_equal_times_go_to_the_smallest_kid() {
    let fake = FakeIssuer::start();
    let (_root, key_dir) = empty_key_dir();
    let (a_file, a_kid) = generate(&key_dir, "ES256");
    let (b_file, b_kid) = generate(&key_dir, "ES256");
    let copy = key_dir.join("backup-copy.pem");
    std::fs::copy(&b_file, &copy).expect("copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    for f in [&a_file, &b_file, &copy] {
        set_mtime(f, 1_700_000_000);
    }

    let broker = Broker::start(&config(&fake, &key_dir, "ES256", None)).await;

    let reply = broker.get("/jwks.json").await;
    let kids = published(&broker).await;
    let mut expected = vec![a_kid.clone(), b_kid.clone()];
    expected.sort();
    assert_eq!(
        kids, expected,
        "each kid once, equal times in kid order: {}",
        reply.text
    );
    let (token, kid) = issued(&fake, &broker).await;
    assert_eq!(kid, expected[0], "equal times: the smallest kid signs");
    verify_with_jwks(&broker.jwks().await, &token, broker.url(), &[TARGET]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_kid_signs_and_a_missing_one_stops_the_start() {
    let fake = FakeIssuer::start();
    let (_root, key_dir) = empty_key_dir();
    let (old_file, old_kid) = generate(&key_dir, "ES256");
    set_mtime(&old_file, 1_600_000_000);
    let (_, new_kid) = generate(&key_dir, "ES256");

    let pinned = Broker::start(&config(&fake, &key_dir, "ES256", Some(&old_kid))).await;
    let (_, kid) = issued(&fake, &pinned).await;
    assert_eq!(kid, old_kid, "active_kid signs, though {new_kid} is newer");
    assert_eq!(published(&pinned).await.len(), 2);
    drop(pinned);

    let dir = tempfile::tempdir().expect("tempdir");
    let missing = "A".repeat(43);
    let path = dir.path().join("fedbroker.yaml");
    let yaml = config(&fake, &key_dir, "ES256", Some(&missing))
        .replace("@PORT@", &integration_tests::broker::free_port().to_string())
        .replace("@DIR@", dir.path().to_str().expect("path"));
    std::fs::write(&path, yaml).expect("write config");
    let out = run_cli_in(
        dir.path(),
        &["serve", "--config", path.to_str().expect("path")],
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stderr
            .contains(&format!("signing.active_kid {missing} is not in"))
            && out.stderr.contains(&old_kid),
        "the error names the kid and the keys there: {}",
        out.stderr
    );
    assert_eq!(pem_files(&key_dir).len(), 2, "nothing generated for a pinned kid");

    let bad = std::fs::read_to_string(&path)
        .expect("config")
        .replace(&missing, "not-a-kid");
    std::fs::write(&path, bad).expect("write config");
    let out = check_in(dir.path(), &path, false);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.contains("signing.active_kid"), "{}", out.all());
}

/// The README's rotation procedure with two replicas: pin the current kid, add a key,
/// restart every replica (they publish both, sign with the old), move `active_kid` to
/// the new key, restart again. At every step every token verifies on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_rotation_pinned_by_active_kid_never_signs_with_an_unpublished_key() {
    let fake = FakeIssuer::start();
    let (_root, key_dir) = empty_key_dir();
    let unpinned = config(&fake, &key_dir, "RS256", None);
    let (a, b) = tokio::join!(Broker::start(&unpinned), Broker::start(&unpinned));
    let files = pem_files(&key_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let k1 = kid_of(&files[0]);
    assert_eq!(
        assert_cross_verify(&fake, &[&a, &b]).await,
        vec![k1.clone(), k1.clone()]
    );

    // 1. Pin the current key, rolling restart: nothing changes.
    let pin_k1 = config(&fake, &key_dir, "RS256", Some(&k1));
    let a = restart(a, &pin_k1).await;
    let b = restart(b, &pin_k1).await;
    assert_eq!(
        assert_cross_verify(&fake, &[&a, &b]).await,
        vec![k1.clone(), k1.clone()]
    );

    // 2. Add a key with the replicas' own configuration.
    let config_file = a.dir().join("fedbroker.yaml");
    let out = run_cli(&[
        "keys",
        "generate",
        "--config",
        config_file.to_str().expect("path"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let k2 = kid_of(Path::new(out.stdout.trim()));
    assert!(out.stderr.contains("signing.active_kid pins"), "{}", out.all());

    // 3. Rolling restart: the restarted replica publishes both and still signs with K1.
    let a = restart(a, &pin_k1).await;
    assert_eq!(published(&a).await.len(), 2);
    assert_eq!(published(&b).await, vec![k1.clone()], "b has not restarted yet");
    assert_eq!(
        assert_cross_verify(&fake, &[&a, &b]).await,
        vec![k1.clone(), k1.clone()]
    );
    let b = restart(b, &pin_k1).await;
    assert_eq!(a.get("/jwks.json").await.text, b.get("/jwks.json").await.text);
    assert_eq!(
        assert_cross_verify(&fake, &[&a, &b]).await,
        vec![k1.clone(), k1.clone()]
    );

    // 4. Every replica publishes K2: move active_kid to it, rolling restart.
    let pin_k2 = config(&fake, &key_dir, "RS256", Some(&k2));
    let a = restart(a, &pin_k2).await;
    assert_eq!(
        assert_cross_verify(&fake, &[&a, &b]).await,
        vec![k2.clone(), k1.clone()]
    );
    let b = restart(b, &pin_k2).await;
    assert_eq!(
        assert_cross_verify(&fake, &[&a, &b]).await,
        vec![k2.clone(), k2.clone()]
    );
    assert_eq!(a.get("/jwks.json").await.text, b.get("/jwks.json").await.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_generate_with_config_takes_the_configured_algorithm() {
    let fake = FakeIssuer::start_with(KeyKind::Ec);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_root, key_dir) = empty_key_dir();
    let path = dir.path().join("fedbroker.yaml");
    let yaml = config(&fake, &key_dir, "ES256", None)
        .replace("@PORT@", "18080")
        .replace("@DIR@", dir.path().to_str().expect("path"));
    std::fs::write(&path, yaml).expect("write config");
    let path = path.to_str().expect("path");

    let out = run_cli(&["keys", "generate", "--config", path, "--algorithm", "RS256"]);
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stderr.contains("disagrees with signing.algorithm ES256"),
        "{}",
        out.all()
    );
    assert!(
        pem_files(&key_dir).is_empty(),
        "nothing written on a disagreement"
    );

    let out = run_cli(&["keys", "generate", "--config", path]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let written = PathBuf::from(out.stdout.trim());
    assert_eq!(written.parent(), Some(key_dir.as_path()), "into signing.key_dir");
    let pem = std::fs::read(&written).expect("read key");
    assert!(
        jsonwebtoken::EncodingKey::from_ec_pem(&pem).is_ok(),
        "an ES256 (EC P-256) key"
    );

    let broker = Broker::start(&config(&fake, &key_dir, "ES256", None)).await;
    let (_, kid) = issued(&fake, &broker).await;
    assert_eq!(kid, kid_of(&written), "the generated key signs");
    assert_eq!(pem_files(&key_dir).len(), 1, "serve generated no other key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_about_keys_that_do_not_fit_the_algorithm() {
    let fake = FakeIssuer::start();
    let (_root, key_dir) = empty_key_dir();
    let (rsa_file, rsa_kid) = generate(&key_dir, "RS256");

    let broker = Broker::start(&config(&fake, &key_dir, "ES256", None)).await;

    let stderr = broker
        .wait_for_stderr("does not fit signing.algorithm ES256")
        .await;
    let warning = stderr
        .lines()
        .find(|l| l.contains("does not fit signing.algorithm ES256"))
        .unwrap_or_else(|| panic!("no warning about the RSA key:\n{stderr}"));
    assert!(
        warning.contains(&rsa_kid) && warning.contains(rsa_file.to_str().expect("path")),
        "the warning names the key: {warning}"
    );
    let (_, kid) = issued(&fake, &broker).await;
    assert_ne!(kid, rsa_kid, "an RSA key never signs ES256");
    assert!(published(&broker).await.contains(&rsa_kid), "but stays published");
}
