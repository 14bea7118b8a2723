//! `signing.key_dir`: its permissions, reading its key files, choosing the signing key
//! among them, and generating a key under the directory's lock (see the module docs of
//! [`crate::signing`]).

use std::fs;
use std::path::{Path, PathBuf};

use issuers::Algorithm;

use super::schedule::{self, KeyTimes, Plan, Rotation};
use super::{LOCK_FILE, MAX_PUBLISHED_KEYS, SigningError, SigningKey};

/// Create `dir` (and missing parents) with mode 0700; warn when an existing one is
/// writable by group or others (whoever can add a file there can add a signing key).
pub(super) fn ensure_key_dir(dir: &Path) -> Result<(), SigningError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| SigningError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let mode = fs::metadata(dir).map_err(io)?.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        tracing::warn!(
            path = %dir.display(),
            mode = %format!("{mode:04o}"),
            "the signing key directory is writable by group or others: anyone who can add a file there can add a signing key"
        );
    }
    Ok(())
}

/// A private key file must be neither readable nor writable by group or others.
fn check_key_permissions(path: &Path, meta: &fs::Metadata) -> Result<(), SigningError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o066 != 0 {
        return Err(SigningError::KeyTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// One key file of `key_dir`.
pub(super) struct KeyFile {
    pub(super) path: PathBuf,
    /// The file's modification time (symbolic links followed), in whole seconds since
    /// the epoch: copies made by tools that keep only seconds (tar, some `cp`s) agree.
    pub(super) modified: u64,
    pub(super) key: SigningKey,
}

/// De-duplicate by kid (the newest file of a key stands for it), order newest first
/// then by kid, and pick the signing key: `active_kid`, or the first that fits.
pub(super) fn choose(
    dir: &Path,
    mut found: Vec<KeyFile>,
    algorithm: Algorithm,
    active_kid: Option<&str>,
) -> Result<(Vec<SigningKey>, usize), SigningError> {
    found.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| a.key.kid().cmp(b.key.kid()))
            .then_with(|| a.path.cmp(&b.path))
    });
    let mut seen = std::collections::BTreeSet::new();
    found.retain(|f| {
        let first = seen.insert(f.key.kid().to_owned());
        if !first {
            tracing::info!(
                path = %f.path.display(),
                kid = f.key.kid(),
                "this key is also in another file of the key directory: it is published once"
            );
        }
        first
    });
    let active = match active_kid {
        Some(kid) => {
            let at = found.iter().position(|f| f.key.kid() == kid).ok_or_else(|| {
                SigningError::ActiveKidMissing {
                    kid: kid.to_owned(),
                    dir: dir.to_path_buf(),
                    available: if found.is_empty() {
                        "none".to_owned()
                    } else {
                        found.iter().map(|f| f.key.kid()).collect::<Vec<_>>().join(", ")
                    },
                }
            })?;
            let f = &found[at];
            if !f.key.fits(algorithm) {
                return Err(SigningError::ActiveKidUnfit {
                    kid: kid.to_owned(),
                    path: f.path.clone(),
                    key_type: f.key.key_type(),
                    algorithm,
                });
            }
            at
        }
        None => found
            .iter()
            .position(|f| f.key.fits(algorithm))
            .ok_or(SigningError::Generate("fitting"))?,
    };
    let mut keys: Vec<SigningKey> = found.into_iter().map(|f| f.key).collect();
    if keys.len() <= MAX_PUBLISHED_KEYS {
        return Ok((keys, active));
    }
    tracing::warn!(
        keys = keys.len(),
        "the key directory holds more than {MAX_PUBLISHED_KEYS} keys: only the signing key and the newest others are published"
    );
    if active < MAX_PUBLISHED_KEYS {
        keys.truncate(MAX_PUBLISHED_KEYS);
        return Ok((keys, active));
    }
    let signing = keys.swap_remove(active);
    keys.truncate(MAX_PUBLISHED_KEYS - 1);
    keys.push(signing);
    Ok((keys, MAX_PUBLISHED_KEYS - 1))
}

/// `key_dir`'s generation lock, held while the file is open.
struct KeyDirLock {
    _file: fs::File,
    path: PathBuf,
}

impl KeyDirLock {
    /// After writing a key: remove the lock file (so `key_dir` holds keys only), then
    /// unlock. Safe although a waiter may hold the removed file and a later process lock
    /// a new one: the key is in place before the removal, and everyone reads the
    /// directory again under the lock before generating.
    fn release_after_writing(self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), "could not remove the key generation lock: {e}");
        }
    }
}

/// Take `dir`'s generation lock, blocking while another process holds it.
fn lock_key_dir(dir: &Path) -> Result<KeyDirLock, SigningError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(LOCK_FILE);
    let io = |source| SigningError::Io {
        path: path.clone(),
        source,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            tracing::info!(path = %path.display(), "waiting for another process to finish generating a key");
            file.lock().map_err(io)?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    Ok(KeyDirLock { _file: file, path })
}

/// No key fits: under the lock, read `dir` again (a replica started at the same time may
/// have generated one meanwhile) and generate only when still none fits.
pub(super) fn generate_under_lock(dir: &Path, algorithm: Algorithm) -> Result<Vec<KeyFile>, SigningError> {
    let lock = lock_key_dir(dir)?;
    let found = read_keys(dir)?;
    if found.iter().any(|f| f.key.fits(algorithm)) {
        tracing::info!("another process generated a signing key meanwhile: using it");
        return Ok(found);
    }
    let path = write_key_file(dir, algorithm)?;
    tracing::info!(path = %path.display(), algorithm = %algorithm, "generated a signing key");
    lock.release_after_writing();
    read_keys(dir)
}

/// The rotation schedule of the keys found, at `now`; `plan.keys[i]` is `found[i]`'s.
pub(super) fn plan_of(found: &[KeyFile], algorithm: Algorithm, rotation: Rotation, now: u64) -> Plan {
    let times: Vec<KeyTimes> = found
        .iter()
        .map(|f| KeyTimes {
            kid: f.key.kid().to_owned(),
            created: f.modified,
            fits: f.key.fits(algorithm),
        })
        .collect();
    schedule::plan(&times, rotation, now)
}

/// A key is due on the schedule: under the lock, read `dir` again (another replica, or
/// `keys rotate`, may have made it meanwhile) and make one only when `still_due` says
/// so. Returns the directory's keys.
pub(super) fn rotate_under_lock(
    dir: &Path,
    algorithm: Algorithm,
    still_due: impl Fn(&[KeyFile]) -> bool,
) -> Result<Vec<KeyFile>, SigningError> {
    let lock = lock_key_dir(dir)?;
    let found = read_keys(dir)?;
    if !still_due(&found) {
        return Ok(found);
    }
    let path = write_key_file(dir, algorithm)?;
    tracing::info!(path = %path.display(), algorithm = %algorithm, "made the next signing key (signing.rotation): published now, it signs after signing.rotation.prepublish");
    lock.release_after_writing();
    read_keys(dir)
}

pub(super) fn read_keys(dir: &Path) -> Result<Vec<KeyFile>, SigningError> {
    let io = |source| SigningError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        // The file itself (through a symlink): the key's readers are the target's.
        let meta = fs::metadata(&path).map_err(|source| SigningError::Io {
            path: path.clone(),
            source,
        })?;
        check_key_permissions(&path, &meta)?;
        let text =
            crate::files::read_regular_text(&path, crate::files::MAX_SMALL_BYTES).map_err(|source| {
                SigningError::Io {
                    path: path.clone(),
                    source,
                }
            })?;
        let parsed = pem::parse(text.as_bytes()).map_err(|_| SigningError::BadKey { path: path.clone() })?;
        if parsed.tag() != "PRIVATE KEY" {
            return Err(SigningError::BadKey { path });
        }
        let key = SigningKey::from_pkcs8(parsed.contents())
            .ok_or_else(|| SigningError::BadKey { path: path.clone() })?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        out.push(KeyFile { path, modified, key });
    }
    Ok(out)
}

/// Generate a key for `alg` and write it to `dir/<kid>.pem` with mode 0600 (`dir` is
/// created with mode 0700 when missing), under the directory's generation lock.
pub fn write_new_key(dir: &Path, alg: Algorithm) -> Result<PathBuf, SigningError> {
    ensure_key_dir(dir)?;
    let lock = lock_key_dir(dir)?;
    let path = write_key_file(dir, alg)?;
    lock.release_after_writing();
    Ok(path)
}

/// The latest modification time (whole seconds) of the `*.pem` files in `dir`.
fn newest_key_time(dir: &Path) -> Option<u64> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().and_then(|x| x.to_str()) == Some("pem"))
        .filter_map(|e| fs::metadata(e.path()).ok()?.modified().ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .max()
}

/// Write a new key file; the caller holds the lock.
fn write_key_file(dir: &Path, alg: Algorithm) -> Result<PathBuf, SigningError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let der = SigningKey::generate_pkcs8(alg)?;
    let key = SigningKey::from_pkcs8(&der).ok_or(SigningError::Generate("new"))?;
    let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
    let path = dir.join(format!("{}.pem", key.kid()));
    let io = |source| SigningError::Io {
        path: path.clone(),
        source,
    };
    let tmp = dir.join(format!(".{}.pem.tmp", key.kid()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(pem_text.as_bytes()).map_err(io)?;
    // A new key is always the newest in whole seconds, even when another was written in
    // the same second: which key is older decides which signs (see `schedule`).
    if let Some(newest) = newest_key_time(dir)
        && newest >= crate::signing::unix_now()
    {
        let later = std::time::UNIX_EPOCH + std::time::Duration::from_secs(newest + 1);
        f.set_modified(later).map_err(io)?;
    }
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    Ok(path)
}
