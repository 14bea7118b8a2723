//! Signing keys: loaded from `signing.key_dir` (PKCS#8 PEM) or generated there on first
//! start (mode 0600), kept parsed in memory, published as a JWKS, used to mint tokens.
//!
//! Like `ssh`, the broker refuses keys that others could read: a missing `key_dir` is
//! created with mode 0700, and it refuses to start when a private key file is readable
//! or writable by group or others. A `key_dir` writable by group or others is only
//! warned about (a Kubernetes secret volume shows mode 1777 while mounted read-only).
//!
//! The `kid` is the key's RFC 7638 thumbprint, so replicas sharing a key directory
//! publish identical key sets: a key found in several files (a copy) is published once.
//! Which key signs is computed the same way by every replica that sees the same files:
//! `signing.active_kid` when set (a missing or unfitting kid is a start error), else the
//! fitting key whose file (symbolic links followed) was modified last, in whole seconds,
//! ties going to the smallest kid. Every key in the directory stays published (newest
//! first, then by kid), so a rotation keeps the previous key verifiable until it is removed.
//!
//! A key is generated only when no key fits and no `active_kid` is set, under an
//! exclusive lock on `key_dir/.fedbroker-keygen.lock` (`flock`), after reading the
//! directory again: replicas started together on an empty shared directory generate one
//! key between them. `keys generate` takes the same lock. The lock file is removed once
//! the key is written (see [`key_dir::KeyDirLock::release_after_writing`]).
//!
//! With `signing.rotation` the above is replaced by a schedule ([`schedule`]): keys are
//! made, published, activated and removed on their own, and [`Signer::spawn_rotation`]
//! swaps the key set in while the broker runs.
//!
//! With `signing.kms` the keys are in a key management service instead ([`external`],
//! [`aws_kms`]): the first of `signing.kms.keys` signs, all are published, and each token
//! is signed by the service ([`Signer::sign`]).
//!
//! Here: the [`Signer`] and its errors; in `key`, one key's material, JWK and kid; in
//! `key_dir`, the key directory (permissions, reading, choosing, the generation lock).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use issuers::Algorithm;
use serde_json::{Value, json};

pub mod aws_kms;
pub mod external;
mod key;
mod key_dir;
pub mod schedule;

use external::ExternalSigner as _;
pub use key::SigningKey;
pub use key_dir::write_new_key;
use key_dir::{choose, ensure_key_dir, generate_under_lock, read_keys, rotate_under_lock};
use schedule::{KeyState, Rotation};

pub const MAX_PUBLISHED_KEYS: usize = 100;

/// The lock file in `key_dir` held (exclusively, `flock`) while a key is generated.
pub const LOCK_FILE: &str = ".fedbroker-keygen.lock";

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("key directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PKCS#8 private key (RSA, EC P-256 or Ed25519)")]
    BadKey { path: PathBuf },
    #[error(
        "{path}: permissions {mode:04o} are too open: a private key must not be accessible by group or others (chmod 600 {path})"
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("could not generate a {0} key")]
    Generate(&'static str),
    #[error(
        "signing.active_kid {kid} is not in {dir} (keys there: {available}); add its key file or change signing.active_kid"
    )]
    ActiveKidMissing {
        kid: String,
        dir: PathBuf,
        available: String,
    },
    #[error(
        "signing.active_kid {kid} ({path}) is an {key_type} key: it cannot sign {algorithm} (signing.algorithm)"
    )]
    ActiveKidUnfit {
        kid: String,
        path: PathBuf,
        key_type: &'static str,
        algorithm: Algorithm,
    },
    #[error("signing failed")]
    Sign,
    /// A key management service's key that cannot be used (at start).
    #[error("signing.kms key {key}: {reason}")]
    External { key: String, reason: String },
    /// The key management service did not sign (a request is then a 503).
    #[error("signing.kms key {key} did not sign: {reason}")]
    Unavailable { key: String, reason: String },
}

/// The keys the broker signs with and publishes. Without `signing.rotation` they are
/// read once, at start; with it, [`Signer::refresh`] follows the schedule
/// ([`schedule`]) and swaps in a new key set, which the next token is signed with.
pub struct Signer {
    algorithm: Algorithm,
    current: RwLock<Arc<KeySet>>,
    /// `key_dir` and the schedule, when keys rotate on their own.
    rotation: Option<(PathBuf, Rotation)>,
}

/// One set of keys: which signs, which are published.
struct KeySet {
    active: usize,
    keys: Vec<SigningKey>,
    jwks: Arc<Value>,
    /// The active key's JWS headers, base64url, for `typ` `JWT` and `at+jwt`: the same
    /// for every token, so encoded once.
    headers: [String; 2],
}

/// The `typ` values the broker issues, in the order of [`KeySet::headers`].
const TYPS: [&str; 2] = ["JWT", "at+jwt"];

impl KeySet {
    fn new(algorithm: Algorithm, keys: Vec<SigningKey>, active: usize) -> KeySet {
        let jwks_keys: Vec<Value> = keys
            .iter()
            .map(|k| {
                let alg = if k.fits(algorithm) {
                    algorithm
                } else {
                    k.default_alg()
                };
                k.public_jwk(alg)
            })
            .collect();
        let headers = TYPS.map(|typ| {
            let kid = keys.get(active).map(SigningKey::kid).unwrap_or_default();
            let header = json!({"alg": algorithm.as_str(), "kid": kid, "typ": typ});
            B64.encode(header.to_string())
        });
        KeySet {
            active,
            keys,
            jwks: Arc::new(json!({ "keys": jwks_keys })),
            headers,
        }
    }

    fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(SigningKey::kid).collect()
    }
}

impl Signer {
    /// A signer with one key generated in memory (development mode).
    pub fn ephemeral(algorithm: Algorithm) -> Result<Signer, SigningError> {
        let der = SigningKey::generate_pkcs8(algorithm)?;
        let key = SigningKey::from_pkcs8(&der).ok_or(SigningError::Generate("in-memory"))?;
        Ok(Signer::from_keys(algorithm, vec![key], 0, None))
    }

    fn from_keys(
        algorithm: Algorithm,
        keys: Vec<SigningKey>,
        active: usize,
        rotation: Option<(PathBuf, Rotation)>,
    ) -> Signer {
        Signer {
            algorithm,
            current: RwLock::new(Arc::new(KeySet::new(algorithm, keys, active))),
            rotation,
        }
    }

    /// The signer `signing:` configures: the keys of `key_dir` (on a schedule with
    /// `signing.rotation`), or one in memory (development mode, no `key_dir`).
    pub fn from_config(signing: &crate::config::SigningConfig) -> Result<Signer, SigningError> {
        match (&signing.key_dir, signing.rotation) {
            (Some(dir), Some(rotation)) => Signer::scheduled(dir, signing.algorithm, rotation, unix_now()),
            (Some(dir), None) => Signer::load(dir, signing.algorithm, signing.active_kid.as_deref()),
            (None, _) => Signer::ephemeral(signing.algorithm),
        }
    }

    /// The signer `signing:` configures, as [`Signer::from_config`], or with
    /// `signing.kms` the service's keys (each read once, now).
    pub async fn open(signing: &crate::config::SigningConfig) -> Result<Signer, SigningError> {
        let Some(kms) = &signing.kms else {
            return Signer::from_config(signing);
        };
        let client = aws_kms::client(kms).await;
        let mut keys = Vec::with_capacity(kms.keys.len());
        for key_id in &kms.keys {
            let (key, public) = aws_kms::KmsKey::open(&client, key_id, signing.algorithm).await?;
            tracing::info!(key = key.key_name(), "signing.kms key read");
            let key = SigningKey::external(public, std::sync::Arc::new(key));
            if keys.iter().any(|k: &SigningKey| k.kid() == key.kid()) {
                return Err(SigningError::External {
                    key: key_id.clone(),
                    reason: "the same key as another of signing.kms.keys".into(),
                });
            }
            keys.push(key);
        }
        Ok(Signer::from_keys(signing.algorithm, keys, 0, None))
    }

    /// [`Signer::load`] without an `active_kid`.
    pub fn load_or_generate(dir: &Path, algorithm: Algorithm) -> Result<Signer, SigningError> {
        Signer::load(dir, algorithm, None)
    }

    /// Load every `*.pem` in `dir` (created with mode 0700 if missing) and choose the
    /// signing key (module docs). Without `active_kid`, a key is generated under the
    /// directory's lock when none fits `algorithm`. Refuses keys readable by group or
    /// others; warns about keys that do not fit `algorithm` (published, never signing).
    pub fn load(dir: &Path, algorithm: Algorithm, active_kid: Option<&str>) -> Result<Signer, SigningError> {
        ensure_key_dir(dir)?;
        let mut found = read_keys(dir)?;
        if active_kid.is_none() && !found.iter().any(|f| f.key.fits(algorithm)) {
            found = generate_under_lock(dir, algorithm)?;
        }
        warn_unfit(&found, algorithm);
        let (keys, active) = choose(dir, found, algorithm, active_kid)?;
        Ok(Signer::from_keys(algorithm, keys, active, None))
    }

    /// Keys on `rotation`'s schedule at `now`: a key is made when one is due.
    pub fn scheduled(
        dir: &Path,
        algorithm: Algorithm,
        rotation: Rotation,
        now: u64,
    ) -> Result<Signer, SigningError> {
        ensure_key_dir(dir)?;
        let found = read_keys(dir)?;
        warn_unfit(&found, algorithm);
        let (set, _) = scheduled_set(dir, found, algorithm, rotation, now)?;
        Ok(Signer {
            algorithm,
            current: RwLock::new(Arc::new(set)),
            rotation: Some((dir.to_path_buf(), rotation)),
        })
    }

    /// With `signing.rotation`: read `key_dir` again and follow the schedule at `now`
    /// (make the key that is due, remove expired ones, sign with the one whose turn it
    /// is). Returns when the schedule next changes; `None` without rotation.
    pub fn refresh(&self, now: u64) -> Result<Option<u64>, SigningError> {
        let Some((dir, rotation)) = &self.rotation else {
            return Ok(None);
        };
        let found = read_keys(dir)?;
        let (set, next) = scheduled_set(dir, found, self.algorithm, *rotation, now)?;
        let old = self.current();
        if old.kids() != set.kids() || old.active != set.active {
            let new_kid = set.keys[set.active].kid().to_owned();
            if old.keys[old.active].kid() != new_kid {
                tracing::info!(kid = %new_kid, previous = old.keys[old.active].kid(), "signing key rotated: the new key signs from now on");
            }
            tracing::info!(published = set.keys.len(), "published signing keys changed");
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        }
        Ok(next)
    }

    /// With `signing.rotation`, follow the schedule until the process ends: at each
    /// change it announces, and every 30 s (to see keys other replicas or `keys rotate`
    /// made). Errors are logged and tried again.
    pub fn spawn_rotation(self: &Arc<Self>) {
        if self.rotation.is_none() {
            return;
        }
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(signer) = this.upgrade() else { return };
                let now = unix_now();
                let next = tokio::task::spawn_blocking(move || signer.refresh(now))
                    .await
                    .unwrap_or(Ok(None));
                let wait = match next {
                    Ok(Some(at)) => at.saturating_sub(unix_now()).clamp(1, RESCAN_SECS),
                    Ok(None) => RESCAN_SECS,
                    Err(e) => {
                        tracing::error!(error = %e, "signing keys not refreshed; the current keys keep signing");
                        RESCAN_SECS
                    }
                };
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            }
        });
    }

    fn current(&self) -> Arc<KeySet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The kid that signs now.
    pub fn kid(&self) -> String {
        let set = self.current();
        set.keys[set.active].kid().to_owned()
    }

    /// The published keys (`/jwks.json`).
    pub fn jwks(&self) -> Arc<Value> {
        self.current().jwks.clone()
    }

    /// Sign a JWT with a key in memory or in a key management service: `typ` is `JWT`
    /// or `at+jwt`.
    pub async fn sign(&self, typ: &str, claims: &Value) -> Result<String, SigningError> {
        let set = self.current();
        let key = &set.keys[set.active];
        let Some(external) = key.external_signer() else {
            return self.sign_with(&set, typ, claims);
        };
        let mut out = self.signing_input(&set, typ, claims)?;
        let sig = external.sign(self.algorithm, out.as_bytes()).await?;
        out.push('.');
        B64.encode_string(sig, &mut out);
        Ok(out)
    }

    /// Sign a JWT with a key in memory (`signing.kms` keys: [`Signer::sign`]): `typ` is
    /// `JWT` or `at+jwt`.
    pub fn sign_jwt(&self, typ: &str, claims: &Value) -> Result<String, SigningError> {
        self.sign_with(&self.current(), typ, claims)
    }

    fn sign_with(&self, set: &KeySet, typ: &str, claims: &Value) -> Result<String, SigningError> {
        let key = &set.keys[set.active];
        let mut out = self.signing_input(set, typ, claims)?;
        let sig = key.sign(self.algorithm, out.as_bytes())?;
        out.push('.');
        B64.encode_string(sig, &mut out);
        Ok(out)
    }

    /// `header.payload`, base64url.
    fn signing_input(&self, set: &KeySet, typ: &str, claims: &Value) -> Result<String, SigningError> {
        let key = &set.keys[set.active];
        let mut out = String::with_capacity(1024);
        match TYPS.iter().position(|t| *t == typ) {
            Some(i) => out.push_str(&set.headers[i]),
            None => {
                let header = json!({"alg": self.algorithm.as_str(), "kid": key.kid(), "typ": typ});
                B64.encode_string(header.to_string(), &mut out);
            }
        }
        out.push('.');
        B64.encode_string(
            serde_json::to_vec(claims).map_err(|_| SigningError::Sign)?,
            &mut out,
        );
        Ok(out)
    }
}

/// `keys list`: the keys of a configuration's `key_dir` and their place in the schedule.
#[derive(Debug, serde::Serialize)]
pub struct KeyListing {
    pub key_dir: PathBuf,
    pub algorithm: String,
    /// `signing.rotation`, in seconds; `None`: keys change by hand.
    pub rotation: Option<RotationListing>,
    /// The kid that signs now.
    pub active_kid: Option<String>,
    pub keys: Vec<ListedKey>,
}

#[derive(Debug, serde::Serialize)]
pub struct RotationListing {
    pub every: u64,
    pub prepublish: u64,
    /// When the next key is made (RFC 3339).
    pub next_key_at: Option<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct ListedKey {
    pub kid: String,
    pub key_type: &'static str,
    /// The key's file in `key_dir`; `None` for a `signing.kms` key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// A `signing.kms` key: its ARN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    /// When its file was written (RFC 3339).
    pub created: String,
    /// `active`, `next`, `previous`, `expired` or `unfit` (and `published` without
    /// rotation: in `/jwks.json`, not signing).
    pub state: &'static str,
    pub signs_from: Option<String>,
    pub signs_until: Option<String>,
    pub published_until: Option<String>,
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// The keys `signing` names and their schedule at `now`, without changing anything.
pub fn list_keys(signing: &crate::config::SigningConfig, now: u64) -> Result<KeyListing, SigningError> {
    let Some(dir) = signing.key_dir.clone() else {
        return Ok(KeyListing {
            key_dir: PathBuf::new(),
            algorithm: signing.algorithm.as_str().to_owned(),
            rotation: None,
            active_kid: None,
            keys: Vec::new(),
        });
    };
    let found = if dir.exists() {
        read_keys(&dir)?
    } else {
        Vec::new()
    };
    let algorithm = signing.algorithm;
    let mut keys: Vec<ListedKey> = found
        .iter()
        .map(|f| ListedKey {
            kid: f.key.kid().to_owned(),
            key_type: f.key.key_type(),
            file: Some(f.path.clone()),
            kms_key: None,
            created: rfc3339(f.modified),
            state: if f.key.fits(algorithm) {
                "published"
            } else {
                "unfit"
            },
            signs_from: None,
            signs_until: None,
            published_until: None,
        })
        .collect();
    let (active_kid, rotation) = match signing.rotation {
        Some(rotation) => {
            let plan = key_dir::plan_of(&found, algorithm, rotation, now);
            for (k, p) in keys.iter_mut().zip(&plan.keys) {
                k.state = match p.state {
                    KeyState::Active => "active",
                    KeyState::Next => "next",
                    KeyState::Previous => "previous",
                    KeyState::Expired => "expired",
                    KeyState::Unfit => "unfit",
                };
                k.signs_from = p.signs_from.map(rfc3339);
                k.signs_until = p.signs_until.map(rfc3339);
                k.published_until = p.published_until.map(rfc3339);
            }
            let listing = RotationListing {
                every: rotation.every,
                prepublish: rotation.prepublish,
                next_key_at: plan.next_key_at.map(|t| rfc3339(t.max(now))),
            };
            (plan.active, Some(listing))
        }
        None => {
            let active = if found.iter().any(|f| f.key.fits(algorithm)) || signing.active_kid.is_some() {
                let (chosen, at) = choose(&dir, read_keys(&dir)?, algorithm, signing.active_kid.as_deref())?;
                Some(chosen[at].kid().to_owned())
            } else {
                None
            };
            for k in keys.iter_mut().filter(|k| Some(&k.kid) == active.as_ref()) {
                k.state = "active";
            }
            (active, None)
        }
    };
    // Newest first, as /jwks.json lists them.
    keys.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.kid.cmp(&b.kid)));
    Ok(KeyListing {
        key_dir: dir,
        algorithm: algorithm.as_str().to_owned(),
        rotation,
        active_kid,
        keys,
    })
}

/// `keys list` with `signing.kms`: the service's keys, read now (the first signs, the
/// others are published).
pub async fn list_kms_keys(signing: &crate::config::SigningConfig) -> Result<KeyListing, SigningError> {
    Ok(Signer::open(signing).await?.listing())
}

impl Signer {
    /// The keys this signer holds now: the one that signs (`active`) and the others it
    /// publishes. For keys without files (`signing.kms`, `serve --dev`).
    pub fn listing(&self) -> KeyListing {
        let set = self.current();
        let keys = set
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| ListedKey {
                kid: k.kid().to_owned(),
                key_type: k.key_type(),
                file: None,
                kms_key: k.external_signer().map(|e| e.key_name().to_owned()),
                created: "-".into(),
                state: if i == set.active { "active" } else { "published" },
                signs_from: None,
                signs_until: None,
                published_until: None,
            })
            .collect();
        KeyListing {
            key_dir: PathBuf::new(),
            algorithm: self.algorithm.as_str().to_owned(),
            rotation: None,
            active_kid: Some(set.keys[set.active].kid().to_owned()),
            keys,
        }
    }
}

/// How often a rotating signer reads `key_dir` again when no change is due sooner.
const RESCAN_SECS: u64 = 30;

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn warn_unfit(found: &[key_dir::KeyFile], algorithm: Algorithm) {
    for f in found.iter().filter(|f| !f.key.fits(algorithm)) {
        tracing::warn!(
            path = %f.path.display(),
            kid = f.key.kid(),
            key_type = f.key.key_type(),
            algorithm = %algorithm,
            "this {} key does not fit signing.algorithm {algorithm}: it is published (as {}) but never signs; \
             remove it, or create a fitting key with `fedbroker keys generate --config FILE`",
            f.key.key_type(),
            f.key.default_alg(),
        );
    }
}

/// The key set `rotation` calls for at `now`, after making the key that is due (under
/// the directory's lock) and removing expired key files; and when the schedule next
/// changes.
fn scheduled_set(
    dir: &Path,
    mut found: Vec<key_dir::KeyFile>,
    algorithm: Algorithm,
    rotation: Rotation,
    now: u64,
) -> Result<(KeySet, Option<u64>), SigningError> {
    let mut plan = key_dir::plan_of(&found, algorithm, rotation, now);
    if plan.key_due(now) {
        found = rotate_under_lock(dir, algorithm, |found| {
            key_dir::plan_of(found, algorithm, rotation, now).key_due(now)
        })?;
        plan = key_dir::plan_of(&found, algorithm, rotation, now);
    }
    let mut keys = Vec::new();
    let mut active = 0;
    // Newest first, as without rotation.
    let mut order: Vec<usize> = (0..found.len()).collect();
    order.sort_by(|&a, &b| {
        found[b]
            .modified
            .cmp(&found[a].modified)
            .then_with(|| found[a].key.kid().cmp(found[b].key.kid()))
    });
    let mut seen = std::collections::BTreeSet::new();
    let mut found: Vec<Option<key_dir::KeyFile>> = found.into_iter().map(Some).collect();
    for i in order {
        let (Some(f), p) = (found[i].take(), &plan.keys[i]) else {
            continue;
        };
        if !seen.insert(f.key.kid().to_owned()) {
            continue;
        }
        match p.state {
            KeyState::Expired => {
                match std::fs::remove_file(&f.path) {
                    Ok(()) => {
                        tracing::info!(path = %f.path.display(), kid = f.key.kid(), "removed a retired signing key: every token it signed has expired")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %f.path.display(), error = %e, "could not remove a retired signing key; it is no longer published")
                    }
                }
                continue;
            }
            KeyState::Active => active = keys.len(),
            _ => {}
        }
        keys.push(f.key);
    }
    if keys.len() > MAX_PUBLISHED_KEYS {
        let signing = keys.remove(active);
        keys.truncate(MAX_PUBLISHED_KEYS - 1);
        keys.insert(0, signing);
        active = 0;
    }
    if plan.active.is_none() {
        return Err(SigningError::Generate("fitting"));
    }
    Ok((KeySet::new(algorithm, keys, active), plan.next_change))
}
/// Whether a key made for `a` can sign `b` (RS256 and PS256 share RSA keys).
pub fn same_key_type(a: Algorithm, b: Algorithm) -> bool {
    let family = |alg| match alg {
        Algorithm::RS256 | Algorithm::PS256 => 0,
        Algorithm::ES256 => 1,
        Algorithm::EdDSA => 2,
        _ => 3,
    };
    family(a) == family(b)
}

#[cfg(test)]
mod tests;
