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
//! Here: the [`Signer`] and its errors; in `key`, one key's material, JWK and kid; in
//! `key_dir`, the key directory (permissions, reading, choosing, the generation lock).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use issuers::Algorithm;
use serde_json::{Value, json};

mod key;
mod key_dir;

pub use key::SigningKey;
pub use key_dir::write_new_key;
use key_dir::{choose, ensure_key_dir, generate_under_lock, read_keys};

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

/// The keys the broker signs with and publishes.
pub struct Signer {
    algorithm: Algorithm,
    active: usize,
    keys: Vec<SigningKey>,
    jwks: Value,
    /// The active key's JWS headers, base64url, for `typ` `JWT` and `at+jwt`: the same
    /// for every token, so encoded once.
    headers: [String; 2],
}

/// The `typ` values the broker issues, in the order of [`Signer::headers`].
const TYPS: [&str; 2] = ["JWT", "at+jwt"];

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
        let headers = TYPS.map(|typ| {
            let kid = keys.get(active).map(SigningKey::kid).unwrap_or_default();
            let header = json!({"alg": algorithm.as_str(), "kid": kid, "typ": typ});
            B64.encode(header.to_string())
        });
        Signer {
            algorithm,
            active,
            keys,
            jwks: json!({ "keys": jwks_keys }),
            headers,
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
        let mut out = String::with_capacity(1024);
        match TYPS.iter().position(|t| *t == typ) {
            Some(i) => out.push_str(&self.headers[i]),
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
        let sig = key.sign(self.algorithm, out.as_bytes())?;
        out.push('.');
        B64.encode_string(sig, &mut out);
        Ok(out)
    }
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
