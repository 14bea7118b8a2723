//! External signers: keys held by a key management service, which signs for the broker.
//! The private key never reaches the broker's memory; the broker reads the public key once
//! (at start) to publish it and to compute its `kid`, and asks the service for each
//! signature.
//!
//! [`ExternalSigner`] is the trait a service implements; [`super::aws_kms`] is the one
//! built in. Another service fits the same shape (docs/operations.md, "External signers"):
//!
//! - **Google Cloud KMS**: `projects/../cryptoKeyVersions/N` names one key version;
//!   `getPublicKey` gives a PEM SubjectPublicKeyInfo, `asymmetricSign` takes a SHA-256
//!   digest and returns PKCS#1 v1.5 / PSS bytes, or a DER ECDSA signature (convert with
//!   [`ecdsa_der_to_jose`]).
//! - **Azure Key Vault**: `keys/{name}/{version}`; `GET` gives a JWK, `sign` takes
//!   `alg` (`RS256`, `PS256`, `ES256`) and a base64url SHA-256 digest and returns the JOSE
//!   signature as it is (ECDSA already `r || s`).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use issuers::Algorithm;
use serde_json::{Map, Value};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::SigningError;

/// A key in a key management service, which signs on the broker's behalf.
#[async_trait::async_trait]
pub trait ExternalSigner: Send + Sync {
    /// The key as the service names it (an ARN, a resource name), for logs and errors.
    fn key_name(&self) -> &str;

    /// Sign `input` (a JWS signing input) with `alg`: the JWS signature bytes (for ES256,
    /// `r || s`, 64 bytes). A service that does not answer is
    /// [`SigningError::Unavailable`], the request then a 503.
    async fn sign(&self, alg: Algorithm, input: &[u8]) -> Result<Vec<u8>, SigningError>;
}

/// The shared handle a [`super::SigningKey`] keeps.
pub type SharedSigner = Arc<dyn ExternalSigner>;

/// An external key's public half as the JWK members RFC 7638 hashes, and its type.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicJwk {
    pub members: Map<String, Value>,
    /// `RSA` or `EC P-256`.
    pub key_type: &'static str,
}

/// A DER `SubjectPublicKeyInfo` (what AWS KMS's `GetPublicKey` returns, and Google KMS's
/// PEM holds): an RSA key or an EC P-256 key, as JWK members in RFC 7638 order.
pub fn jwk_from_spki(der: &[u8]) -> Result<PublicJwk, String> {
    let (rest, spki) =
        SubjectPublicKeyInfo::from_der(der).map_err(|_| "not a DER SubjectPublicKeyInfo".to_owned())?;
    if !rest.is_empty() {
        return Err("trailing bytes after the SubjectPublicKeyInfo".into());
    }
    let mut m = Map::new();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let n = strip_zeros(rsa.modulus);
            if n.len() < 256 {
                return Err(format!(
                    "an RSA key of {} bits: at least 2048 are needed",
                    n.len() * 8
                ));
            }
            m.insert("e".into(), Value::String(B64.encode(strip_zeros(rsa.exponent))));
            m.insert("kty".into(), Value::String("RSA".into()));
            m.insert("n".into(), Value::String(B64.encode(n)));
            Ok(PublicJwk {
                members: m,
                key_type: "RSA",
            })
        }
        Ok(PublicKey::EC(point)) => {
            let p256 = x509_parser::oid_registry::OID_EC_P256;
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
            if curve.as_ref() != Some(&p256) {
                return Err("an EC key on another curve than P-256".into());
            }
            let data = point.data();
            if data.len() != 65 || data[0] != 4 {
                return Err("an EC P-256 point that is not uncompressed".into());
            }
            m.insert("crv".into(), Value::String("P-256".into()));
            m.insert("kty".into(), Value::String("EC".into()));
            m.insert("x".into(), Value::String(B64.encode(&data[1..33])));
            m.insert("y".into(), Value::String(B64.encode(&data[33..])));
            Ok(PublicJwk {
                members: m,
                key_type: "EC P-256",
            })
        }
        Ok(_) => Err("neither an RSA nor an EC P-256 key".into()),
        Err(_) => Err("a public key that does not parse".into()),
    }
}

/// A DER ECDSA signature (`SEQUENCE { INTEGER r, INTEGER s }`, as AWS and Google KMS
/// return them) as JOSE wants it: `r || s`, each left-padded to `size` bytes (32 for
/// P-256). Strict DER: definite short lengths, no trailing bytes, no values wider than
/// `size`.
pub fn ecdsa_der_to_jose(der: &[u8], size: usize) -> Option<Vec<u8>> {
    fn take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        let (&len, rest) = rest.split_first()?;
        if t != tag || len >= 0x80 {
            return None;
        }
        let len = usize::from(len);
        (rest.len() >= len).then(|| rest.split_at(len))
    }
    let (body, rest) = take(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (r, body) = take(body, 0x02)?;
    let (s, body) = take(body, 0x02)?;
    if !body.is_empty() {
        return None;
    }
    let mut out = vec![0u8; 2 * size];
    for (i, int) in [r, s].into_iter().enumerate() {
        let int = strip_zeros(int);
        if int.len() > size || int.is_empty() {
            return None;
        }
        let end = (i + 1) * size;
        out[end - int.len()..end].copy_from_slice(int);
    }
    Some(out)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};

    use super::*;
    use crate::signing::SigningKey;

    fn spki_of(key: &SigningKey) -> Map<String, Value> {
        let Value::Object(mut jwk) = key.public_jwk(Algorithm::RS256) else {
            unreachable!()
        };
        for k in ["kid", "alg", "use"] {
            jwk.remove(k);
        }
        jwk
    }

    #[test]
    fn rsa_spki_gives_the_same_jwk_and_kid_as_the_private_key() {
        let der = SigningKey::generate_pkcs8(Algorithm::RS256).expect("test key");
        let pair = RsaKeyPair::from_pkcs8(&der).expect("test key");
        let spki = pair.public_key().as_der().expect("test key");
        let jwk = jwk_from_spki(spki.as_ref()).expect("test key");
        let local = SigningKey::from_pkcs8(&der).expect("test key");
        assert_eq!(jwk.members, spki_of(&local));
        assert_eq!(jwk.key_type, "RSA");
    }

    #[test]
    fn p256_spki_gives_the_same_jwk_as_the_private_key() {
        let der = SigningKey::generate_pkcs8(Algorithm::ES256).expect("test key");
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der).expect("test key");
        let spki = pair.public_key().as_der().expect("test key");
        let jwk = jwk_from_spki(spki.as_ref()).expect("test key");
        let local = SigningKey::from_pkcs8(&der).expect("test key");
        assert_eq!(jwk.members, spki_of(&local));
        assert_eq!(jwk.key_type, "EC P-256");
    }

    #[test]
    fn garbage_and_other_keys_are_refused() {
        assert!(jwk_from_spki(b"").is_err());
        assert!(jwk_from_spki(b"\x30\x03\x02\x01\x01").is_err());
        let der = SigningKey::generate_pkcs8(Algorithm::EdDSA).expect("test key");
        let pair = signature::Ed25519KeyPair::from_pkcs8(&der).expect("test key");
        let spki = pair.public_key().as_der().expect("test key");
        assert!(jwk_from_spki(spki.as_ref()).is_err());
        // A trailing byte.
        let der = SigningKey::generate_pkcs8(Algorithm::ES256).expect("test key");
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der).expect("test key");
        let mut spki = pair.public_key().as_der().expect("test key").as_ref().to_vec();
        spki.push(0);
        assert!(jwk_from_spki(&spki).is_err());
    }

    #[test]
    fn der_ecdsa_signatures_become_jose_signatures_that_verify() {
        let der = SigningKey::generate_pkcs8(Algorithm::ES256).expect("test key");
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &der).expect("test key");
        let public = UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            pair.public_key().as_ref().to_vec(),
        );
        let rng = SystemRandom::new();
        // Enough signatures that some have r or s with a leading zero byte (stripped in
        // DER) or a high bit (a 0x00 added in DER).
        for i in 0..300u32 {
            let msg = i.to_be_bytes();
            let sig = pair.sign(&rng, &msg).expect("test key");
            let jose = ecdsa_der_to_jose(sig.as_ref(), 32).expect("DER signature");
            assert_eq!(jose.len(), 64);
            public.verify(&msg, &jose).expect("verifies");
        }
    }

    #[test]
    fn malformed_der_signatures_are_refused() {
        let int = |b: &[u8]| [&[0x02, b.len() as u8][..], b].concat();
        let seq = |body: &[u8]| [&[0x30, body.len() as u8][..], body].concat();
        let ok = seq(&[int(&[1]), int(&[2])].concat());
        assert!(ecdsa_der_to_jose(&ok, 32).is_some());
        for bad in [
            vec![],
            seq(&int(&[1])),
            [ok.clone(), vec![0]].concat(),
            seq(&[int(&[1]), int(&[2]), int(&[3])].concat()),
            seq(&[int(&[1]), int(&[7; 33])].concat()),
            seq(&[int(&[1]), int(&[])].concat()),
            vec![0x30, 0x81, 0x01, 0x00],
            seq(&[int(&[1]), vec![0x04, 1, 2]].concat()),
        ] {
            assert!(ecdsa_der_to_jose(&bad, 32).is_none(), "{bad:?}");
        }
    }
}
