use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn generates_once_then_reloads_the_same_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("generate");
    let b = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("reload");
    assert_eq!(a.kid(), b.kid());
    let files: Vec<String> = fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    // The key only: the generation lock is removed once the key is written.
    assert_eq!(files, [format!("{}.pem", a.kid())]);
    let path = dir.path().join(format!("{}.pem", a.kid()));
    let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        fs::read_to_string(&path)
            .expect("read")
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
}

#[test]
fn signs_with_every_algorithm_and_publishes_the_key() {
    for alg in [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let s = Signer::ephemeral(alg).expect("key");
        let jwt = s.sign_jwt("JWT", &json!({"sub": "x"})).expect("sign");
        assert_eq!(jwt.split('.').count(), 3);
        let jwk = &s.jwks()["keys"][0];
        assert_eq!(jwk["kid"], s.kid());
        assert_eq!(jwk["alg"], alg.as_str());
        assert_eq!(jwk["use"], "sig");
    }
}

/// Set a file's modification time to `secs` after the epoch.
fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    fs::File::open(path)
        .and_then(|f| f.set_modified(t))
        .expect("set mtime");
}

fn kids(s: &Signer) -> Vec<String> {
    s.jwks()["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

#[test]
fn rotation_keeps_the_old_key_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("generate");
    set_mtime(&dir.path().join(format!("{}.pem", first.kid())), 1_600_000_000);
    write_new_key(dir.path(), Algorithm::ES256).expect("rotate");
    let second = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("reload");
    assert_ne!(first.kid(), second.kid());
    let kids = kids(&second);
    assert!(kids.contains(&first.kid()) && kids.contains(&second.kid()));
}

#[test]
fn a_non_key_pem_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.pem");
    fs::write(
        &path,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(matches!(
        Signer::load_or_generate(dir.path(), Algorithm::RS256),
        Err(SigningError::BadKey { .. })
    ));
}

#[test]
fn a_missing_key_dir_is_created_0700() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data").join("keys");
    Signer::load_or_generate(&dir, Algorithm::ES256).expect("generate");
    let mode = fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_key_readable_or_writable_by_others_is_refused() {
    for mode in [0o644, 0o640, 0o620, 0o604, 0o602] {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("generate");
        let path = dir.path().join(format!("{}.pem", first.kid()));
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        let err = Signer::load_or_generate(dir.path(), Algorithm::ES256)
            .err()
            .unwrap_or_else(|| panic!("a {mode:o} key was accepted"));
        let text = err.to_string();
        assert!(
            matches!(err, SigningError::KeyTooOpen { .. })
                && text.contains(&path.display().to_string())
                && text.contains(&format!("{mode:04o}")),
            "{text}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
        Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("0400 is fine");
    }
}

#[test]
fn equal_times_go_to_the_smallest_kid_and_a_copy_is_published_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write_new_key(dir.path(), Algorithm::ES256).expect("a");
    let b = write_new_key(dir.path(), Algorithm::ES256).expect("b");
    let copy = dir.path().join("copy.pem");
    fs::copy(&b, &copy).expect("copy");
    for p in [&a, &b, &copy] {
        set_mtime(p, 1_700_000_000);
    }
    let s = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("load");
    let mut expected: Vec<String> = [&a, &b]
        .iter()
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(s.kid(), expected[0]);
    assert_eq!(kids(&s), expected, "each kid once, ties in kid order");
    // A newer time wins over the kid order, whichever file of a key it is.
    set_mtime(&copy, 1_700_000_001);
    let s = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("load");
    assert_eq!(s.kid(), kid_of(&b));
    assert_eq!(kids(&s).len(), 2);
}

fn kid_of(p: &Path) -> String {
    p.file_stem().expect("stem").to_string_lossy().into_owned()
}

#[test]
fn active_kid_signs_and_must_exist_and_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = write_new_key(dir.path(), Algorithm::ES256).expect("old");
    set_mtime(&old, 1_600_000_000);
    let new = write_new_key(dir.path(), Algorithm::ES256).expect("new");
    let rsa = write_new_key(dir.path(), Algorithm::RS256).expect("rsa");
    let (old, new, rsa) = (kid_of(&old), kid_of(&new), kid_of(&rsa));
    let newest = Signer::load(dir.path(), Algorithm::ES256, None).expect("load");
    assert_eq!(newest.kid(), new);
    let pinned = Signer::load(dir.path(), Algorithm::ES256, Some(&old)).expect("pinned");
    assert_eq!(pinned.kid(), old);
    assert_eq!(kids(&pinned), kids(&newest), "the same key set either way");
    let missing = "A".repeat(43);
    let err = Signer::load(dir.path(), Algorithm::ES256, Some(&missing))
        .err()
        .expect("a missing active_kid is an error");
    assert!(
        matches!(err, SigningError::ActiveKidMissing { .. }) && err.to_string().contains(&old),
        "{err}"
    );
    let err = Signer::load(dir.path(), Algorithm::ES256, Some(&rsa))
        .err()
        .expect("an RSA active_kid cannot sign ES256");
    assert!(matches!(err, SigningError::ActiveKidUnfit { .. }), "{err}");
}

/// The `.pem` files in `dir`.
fn count_pems(dir: &Path) -> usize {
    fs::read_dir(dir)
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "pem"))
        })
        .count()
}

#[test]
fn active_kid_never_generates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kid = "A".repeat(43);
    assert!(matches!(
        Signer::load(dir.path(), Algorithm::ES256, Some(&kid)),
        Err(SigningError::ActiveKidMissing { .. })
    ));
    let pems = count_pems(dir.path());
    assert_eq!(pems, 0);
}

#[test]
fn concurrent_loads_on_an_empty_dir_generate_one_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                Signer::load_or_generate(&dir, Algorithm::RS256)
                    .expect("load")
                    .kid()
                    .to_owned()
            })
        })
        .collect();
    let kids: std::collections::BTreeSet<String> =
        threads.into_iter().map(|t| t.join().expect("thread")).collect();
    assert_eq!(kids.len(), 1, "{kids:?}");
    let pems = count_pems(dir.path());
    assert_eq!(pems, 1);
}

#[test]
fn a_rotating_signer_makes_the_due_key_and_removes_expired_ones() {
    use schedule::Rotation;
    let rotation = Rotation {
        every: 1000,
        prepublish: 100,
        max_lifetime: 50,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let now = 1_700_000_000;
    // An old key, whose successor took over long ago, and that successor.
    let old = write_new_key(dir.path(), Algorithm::ES256).expect("old");
    set_mtime(&old, now - 5000);
    let current = write_new_key(dir.path(), Algorithm::ES256).expect("current");
    set_mtime(&current, now - 500);
    let kid = |p: &Path| p.file_stem().and_then(|s| s.to_str()).expect("kid").to_owned();

    let signer = Signer::scheduled(dir.path(), Algorithm::ES256, rotation, now).expect("scheduled");
    // The current key signs; the old one signed until now - 400, plus 50 s of tokens
    // and the margin: expired, so removed from the directory and from /jwks.json.
    assert_eq!(signer.kid(), kid(&current));
    assert!(!old.exists(), "the expired key file is removed");
    assert_eq!(kids(&signer), [kid(&current)]);

    // The current key activated at now - 400 and signs for 1000: its successor is due at
    // now + 500 (prepublish before its turn).
    assert_eq!(signer.refresh(now + 499).expect("refresh"), Some(now + 500));
    assert_eq!(kids(&signer).len(), 1);
    signer.refresh(now + 500).expect("refresh");
    let published = kids(&signer);
    assert_eq!(published.len(), 2, "the next key is published: {published:?}");
    assert_eq!(signer.kid(), kid(&current), "and does not sign yet");
}
