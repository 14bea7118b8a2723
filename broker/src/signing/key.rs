//! One signing key: its material (RSA, EC P-256 or Ed25519), parsed from or generated as
//! PKCS#8, or a key in a key management service ([`super::external`]); its public JWK and
//! its RFC 7638 thumbprint (the `kid`).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use issuers::Algorithm;
use serde_json::{Map, Value};

use super::SigningError;
use super::external::{PublicJwk, SharedSigner};

enum Material {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    /// Held by a key management service: `rsa` tells the key type (else EC P-256).
    External {
        rsa: bool,
        signer: SharedSigner,
    },
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
                | (
                    Material::External { rsa: true, .. },
                    Algorithm::RS256 | Algorithm::PS256
                )
                | (Material::External { rsa: false, .. }, Algorithm::ES256)
        )
    }

    /// `RSA`, `EC P-256` or `Ed25519`.
    pub fn key_type(&self) -> &'static str {
        match self.material {
            Material::Rsa(_) | Material::External { rsa: true, .. } => "RSA",
            Material::P256(_) | Material::External { rsa: false, .. } => "EC P-256",
            Material::Ed25519(_) => "Ed25519",
        }
    }

    pub(super) fn default_alg(&self) -> Algorithm {
        match self.material {
            Material::Rsa(_) | Material::External { rsa: true, .. } => Algorithm::RS256,
            Material::P256(_) | Material::External { rsa: false, .. } => Algorithm::ES256,
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

    /// A key a key management service holds, from its public JWK members.
    pub fn external(public: PublicJwk, signer: SharedSigner) -> SigningKey {
        let kid = thumbprint(&public.members);
        SigningKey {
            kid,
            material: Material::External {
                rsa: public.key_type == "RSA",
                signer,
            },
            jwk_base: public.members,
        }
    }

    /// The service that holds this key, when it is not in memory.
    pub(super) fn external_signer(&self) -> Option<&SharedSigner> {
        match &self.material {
            Material::External { signer, .. } => Some(signer),
            _ => None,
        }
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

    pub(super) fn sign(&self, alg: Algorithm, message: &[u8]) -> Result<Vec<u8>, SigningError> {
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
            // Signed by its service, asynchronously (`Signer::sign`).
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
        // Made by `SigningKey::external` from the service's public key.
        Material::External { .. } => {}
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
