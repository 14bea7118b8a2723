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
//! the key is written (see [`KeyDirLock::release_after_writing`]).

use std::fs;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use issuers::Algorithm;
use serde_json::{Map, Value, json};

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
}

enum Material {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One parsed private key.
pub struct SigningKey {
    kid: String,
    material: Material,
    jwk_base: Map<String, Value>,
}

impl SigningKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Whether this key can sign with `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        matches!(
            (&self.material, alg),
            (Material::Rsa(_), Algorithm::RS256 | Algorithm::PS256)
                | (Material::P256(_), Algorithm::ES256)
                | (Material::Ed25519(_), Algorithm::EdDSA)
        )
    }

    /// `RSA`, `EC P-256` or `Ed25519`.
    pub fn key_type(&self) -> &'static str {
        match self.material {
            Material::Rsa(_) => "RSA",
            Material::P256(_) => "EC P-256",
            Material::Ed25519(_) => "Ed25519",
        }
    }

    fn default_alg(&self) -> Algorithm {
        match self.material {
            Material::Rsa(_) => Algorithm::RS256,
            Material::P256(_) => Algorithm::ES256,
            Material::Ed25519(_) => Algorithm::EdDSA,
        }
    }

    /// Parse PKCS#8 DER: RSA, then EC P-256, then Ed25519.
    pub fn from_pkcs8(der: &[u8]) -> Option<SigningKey> {
        let material = if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            Material::Rsa(k)
        } else if let Ok(k) = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der) {
            Material::P256(k)
        } else if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            Material::Ed25519(k)
        } else {
            return None;
        };
        let jwk_base = public_jwk(&material);
        let kid = thumbprint(&jwk_base);
        Some(SigningKey {
            kid,
            material,
            jwk_base,
        })
    }

    /// A fresh key for `alg`, as PKCS#8 DER.
    pub fn generate_pkcs8(alg: Algorithm) -> Result<Vec<u8>, SigningError> {
        let rng = SystemRandom::new();
        match alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                let k = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| SigningError::Generate("RSA"))?;
                let der = k.as_der().map_err(|_| SigningError::Generate("RSA"))?;
                Ok(der.as_ref().to_vec())
            }
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map(|d| d.as_ref().to_vec())
                    .map_err(|_| SigningError::Generate("EC P-256"))
            }
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| SigningError::Generate("Ed25519")),
            _ => Err(SigningError::Generate("unsupported")),
        }
    }

    /// The public JWK, with `alg` and `use: sig`.
    pub fn public_jwk(&self, alg: Algorithm) -> Value {
        let mut jwk = self.jwk_base.clone();
        jwk.insert("kid".into(), Value::String(self.kid.clone()));
        jwk.insert("alg".into(), Value::String(alg.as_str().into()));
        jwk.insert("use".into(), Value::String("sig".into()));
        Value::Object(jwk)
    }

    fn sign(&self, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let rng = SystemRandom::new();
        match (&self.material, alg) {
            (Material::Rsa(k), Algorithm::RS256 | Algorithm::PS256) => {
                let padding: &'static dyn signature::RsaEncoding = if alg == Algorithm::PS256 {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(padding, &rng, message, &mut sig)
                    .map_err(|_| SigningError::Sign)?;
                Ok(sig)
            }
            (Material::P256(k), Algorithm::ES256) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SigningError::Sign),
            (Material::Ed25519(k), Algorithm::EdDSA) => Ok(k.sign(message).as_ref().to_vec()),
            _ => Err(SigningError::Sign),
        }
    }
}

fn public_jwk(material: &Material) -> Map<String, Value> {
    let mut m = Map::new();
    match material {
        Material::Rsa(k) => {
            let c = PublicKeyComponents::<Vec<u8>>::from(k.public_key());
            // RFC 7638 member order is lexicographic: e, kty, n.
            m.insert("e".into(), Value::String(B64.encode(strip_zeros(&c.e))));
            m.insert("kty".into(), Value::String("RSA".into()));
            m.insert("n".into(), Value::String(B64.encode(strip_zeros(&c.n))));
        }
        Material::P256(k) => {
            let point = k.public_key().as_ref();
            let (x, y) = point
                .get(1..)
                .unwrap_or_default()
                .split_at(32.min(point.len().saturating_sub(1)));
            m.insert("crv".into(), Value::String("P-256".into()));
            m.insert("kty".into(), Value::String("EC".into()));
            m.insert("x".into(), Value::String(B64.encode(x)));
            m.insert("y".into(), Value::String(B64.encode(y)));
        }
        Material::Ed25519(k) => {
            m.insert("crv".into(), Value::String("Ed25519".into()));
            m.insert("kty".into(), Value::String("OKP".into()));
            m.insert("x".into(), Value::String(B64.encode(k.public_key().as_ref())));
        }
    }
    m
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[first..]
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) over the required members in order.
fn thumbprint(required: &Map<String, Value>) -> String {
    // serde_json with preserve_order keeps insertion order, which public_jwk made lexicographic.
    let canonical = serde_json::to_string(required).unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    B64.encode(digest.as_ref())
}

/// The keys the broker signs with and publishes.
pub struct Signer {
    algorithm: Algorithm,
    active: usize,
    keys: Vec<SigningKey>,
    jwks: Value,
}

impl Signer {
    /// A signer with one key generated in memory (development mode).
    pub fn ephemeral(algorithm: Algorithm) -> Result<Signer, SigningError> {
        let der = SigningKey::generate_pkcs8(algorithm)?;
        let key = SigningKey::from_pkcs8(&der).ok_or(SigningError::Generate("in-memory"))?;
        Ok(Signer::from_keys(algorithm, vec![key], 0))
    }

    fn from_keys(algorithm: Algorithm, keys: Vec<SigningKey>, active: usize) -> Signer {
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
        Signer {
            algorithm,
            active,
            keys,
            jwks: json!({ "keys": jwks_keys }),
        }
    }

    /// The signer `signing:` configures: the keys of `key_dir`, or one in memory
    /// (development mode, no `key_dir`).
    pub fn from_config(signing: &crate::config::SigningConfig) -> Result<Signer, SigningError> {
        match &signing.key_dir {
            Some(dir) => Signer::load(dir, signing.algorithm, signing.active_kid.as_deref()),
            None => Signer::ephemeral(signing.algorithm),
        }
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
        let (keys, active) = choose(dir, found, algorithm, active_kid)?;
        Ok(Signer::from_keys(algorithm, keys, active))
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn kid(&self) -> &str {
        self.keys[self.active].kid()
    }

    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// Sign a JWT: `typ` is `JWT` or `at+jwt`.
    pub fn sign_jwt(&self, typ: &str, claims: &Value) -> Result<String, SigningError> {
        let key = &self.keys[self.active];
        let header = json!({"alg": self.algorithm.as_str(), "kid": key.kid(), "typ": typ});
        let mut out = String::with_capacity(1024);
        B64.encode_string(
            serde_json::to_vec(&header).map_err(|_| SigningError::Sign)?,
            &mut out,
        );
        out.push('.');
        B64.encode_string(
            serde_json::to_vec(claims).map_err(|_| SigningError::Sign)?,
            &mut out,
        );
        let sig = key.sign(self.algorithm, out.as_bytes())?;
        out.push('.');
        B64.encode_string(sig, &mut out);
        Ok(out)
    }
}

/// Create `dir` (and missing parents) with mode 0700; warn when an existing one is
/// writable by group or others (whoever can add a file there can add a signing key).
fn ensure_key_dir(dir: &Path) -> Result<(), SigningError> {
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
struct KeyFile {
    path: PathBuf,
    /// The file's modification time (symbolic links followed), in whole seconds since
    /// the epoch: copies made by tools that keep only seconds (tar, some `cp`s) agree.
    modified: u64,
    key: SigningKey,
}

/// De-duplicate by kid (the newest file of a key stands for it), order newest first
/// then by kid, and pick the signing key: `active_kid`, or the first that fits.
fn choose(
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
fn generate_under_lock(dir: &Path, algorithm: Algorithm) -> Result<Vec<KeyFile>, SigningError> {
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

fn read_keys(dir: &Path) -> Result<Vec<KeyFile>, SigningError> {
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
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests;
