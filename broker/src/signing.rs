//! Signing keys: loaded from `signing.key_dir` (PKCS#8 PEM) or generated there on first
//! start (mode 0600), kept parsed in memory, published as a JWKS, used to mint tokens.
//!
//! Like `ssh`, the broker refuses keys that others could read: a missing `key_dir` is
//! created with mode 0700, and it refuses to start when a private key file is readable
//! or writable by group or others. A `key_dir` writable by group or others is only
//! warned about (a Kubernetes secret volume shows mode 1777 while mounted read-only).
//!
//! The `kid` is the key's RFC 7638 thumbprint, so replicas sharing a key directory
//! publish identical key sets. The newest key (by file modification time) that fits the
//! configured algorithm signs; every key in the directory stays published, so a
//! rotation (adding a key) keeps the previous one verifiable until it is removed.

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

    /// Load every `*.pem` in `dir` (created with mode 0700 if missing); generate a key
    /// there when none fits `algorithm`. Refuses keys readable by group or others.
    pub fn load_or_generate(dir: &Path, algorithm: Algorithm) -> Result<Signer, SigningError> {
        ensure_key_dir(dir)?;
        let mut found = read_keys(dir)?;
        if !found.iter().any(|(_, k)| k.fits(algorithm)) {
            let path = write_new_key(dir, algorithm)?;
            tracing::info!(path = %path.display(), algorithm = %algorithm, "generated a signing key");
            found = read_keys(dir)?;
        }
        // Newest first: the newest fitting key signs.
        found.sort_by_key(|k| std::cmp::Reverse(k.0));
        found.truncate(MAX_PUBLISHED_KEYS);
        let keys: Vec<SigningKey> = found.into_iter().map(|(_, k)| k).collect();
        let active = keys
            .iter()
            .position(|k| k.fits(algorithm))
            .ok_or(SigningError::Generate("fitting"))?;
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

fn read_keys(dir: &Path) -> Result<Vec<(std::time::SystemTime, SigningKey)>, SigningError> {
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
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        out.push((modified, key));
    }
    Ok(out)
}

/// Generate a key for `alg` and write it to `dir/<kid>.pem` with mode 0600 (`dir` is
/// created with mode 0700 when missing).
pub fn write_new_key(dir: &Path, alg: Algorithm) -> Result<PathBuf, SigningError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    ensure_key_dir(dir)?;
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
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_once_then_reloads_the_same_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("generate");
        let b = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("reload");
        assert_eq!(a.kid(), b.kid());
        let files: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(files.len(), 1);
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

    #[test]
    fn rotation_keeps_the_old_key_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("generate");
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_new_key(dir.path(), Algorithm::ES256).expect("rotate");
        let second = Signer::load_or_generate(dir.path(), Algorithm::ES256).expect("reload");
        assert_ne!(first.kid(), second.kid());
        let kids: Vec<&str> = second.jwks()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
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
}
