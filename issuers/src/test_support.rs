//! Keys and token minting for this crate's unit tests. Keys are generated once per
//! test binary (RSA generation is slow) and shared.

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::alg::Algorithm;
use crate::jose::BASE64URL;

pub(crate) fn b64(bytes: &[u8]) -> String {
    BASE64URL.encode(bytes)
}

pub(crate) enum Signer {
    Rsa(RsaKeyPair),
    Ec { pair: EcdsaKeyPair, pkcs8: Vec<u8> },
    Ed { pair: Ed25519KeyPair, pkcs8: Vec<u8> },
}

pub(crate) struct TestKey {
    pub kid: String,
    /// The public JWK, with `kid` and without `alg`.
    pub jwk: Value,
    pub signer: Signer,
}

impl TestKey {
    pub fn sign(&self, alg: Algorithm, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(pair) => {
                let encoding: &'static dyn signature::RsaEncoding = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                    Algorithm::PS512 => &signature::RSA_PSS_SHA512,
                    other => panic!("RSA key cannot sign {other}"),
                };
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(encoding, &rng, message, &mut sig).expect("rsa sign");
                sig
            }
            Signer::Ec { pair, .. } => pair.sign(&rng, message).expect("ec sign").as_ref().to_vec(),
            Signer::Ed { pair, .. } => pair.sign(message).as_ref().to_vec(),
        }
    }

    /// PKCS#8 DER of the private key (EC and Ed25519 only).
    pub fn pkcs8(&self) -> &[u8] {
        match &self.signer {
            Signer::Ec { pkcs8, .. } | Signer::Ed { pkcs8, .. } => pkcs8,
            Signer::Rsa(_) => panic!("not kept for RSA"),
        }
    }

    pub fn rsa_n(&self) -> Vec<u8> {
        match &self.signer {
            Signer::Rsa(pair) => pair
                .public_key()
                .modulus()
                .big_endian_without_leading_zero()
                .to_vec(),
            _ => panic!("not an RSA key"),
        }
    }
}

fn new_rsa(kid: &str) -> TestKey {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa keygen");
    // Round-trip through PKCS#8 to make sure the key is an ordinary one.
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("der");
    let pair = RsaKeyPair::from_pkcs8(der.as_ref()).expect("pkcs8");
    let public = pair.public_key();
    let jwk = json!({
        "kty": "RSA",
        "kid": kid,
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()),
    });
    TestKey {
        kid: kid.into(),
        jwk,
        signer: Signer::Rsa(pair),
    }
}

fn new_ec(kid: &str, p384: bool) -> TestKey {
    let (alg, crv, len) = if p384 {
        (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48)
    } else {
        (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32)
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)
        .expect("ec keygen")
        .as_ref()
        .to_vec();
    let pair = EcdsaKeyPair::from_pkcs8(alg, &pkcs8).expect("pkcs8");
    let point = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC",
        "kid": kid,
        "crv": crv,
        "x": b64(&point[1..=len]),
        "y": b64(&point[1 + len..]),
    });
    TestKey {
        kid: kid.into(),
        jwk,
        signer: Signer::Ec { pair, pkcs8 },
    }
}

fn new_ed(kid: &str) -> TestKey {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .expect("ed keygen")
        .as_ref()
        .to_vec();
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).expect("pkcs8");
    let jwk = json!({
        "kty": "OKP",
        "kid": kid,
        "crv": "Ed25519",
        "x": b64(pair.public_key().as_ref()),
    });
    TestKey {
        kid: kid.into(),
        jwk,
        signer: Signer::Ed { pair, pkcs8 },
    }
}

macro_rules! shared_key {
    ($name:ident, $make:expr) => {
        pub(crate) fn $name() -> &'static TestKey {
            static KEY: OnceLock<TestKey> = OnceLock::new();
            KEY.get_or_init(|| $make)
        }
    };
}

shared_key!(rsa_2048, new_rsa("rsa-2048"));
shared_key!(rsa_2048_other, new_rsa("rsa-2048-other"));
shared_key!(ec_p256, new_ec("ec-p256", false));
shared_key!(ec_p256_other, new_ec("ec-p256-other", false));
shared_key!(ec_p384, new_ec("ec-p384", true));
shared_key!(ed25519, new_ed("ed25519"));

pub(crate) fn all_keys() -> Vec<&'static TestKey> {
    vec![rsa_2048(), ec_p256(), ec_p384(), ed25519()]
}

/// The key that signs `alg` among [`all_keys`].
pub(crate) fn key_for(alg: Algorithm) -> &'static TestKey {
    match alg {
        Algorithm::ES256 => ec_p256(),
        Algorithm::ES384 => ec_p384(),
        Algorithm::EdDSA => ed25519(),
        _ => rsa_2048(),
    }
}

/// A 1024-bit RSA public JWK. Only its size matters (it must be refused before
/// any use), so the modulus is a fixed odd 1024-bit number.
pub(crate) fn rsa_1024_jwk() -> Value {
    let mut n = vec![0xc5u8; 128];
    n[127] = 0x01;
    json!({ "kty": "RSA", "kid": "rsa-1024", "n": b64(&n), "e": "AQAB" })
}

/// Encodes `header` and `claims` and signs them with `key` as `alg`.
pub(crate) fn mint(header: &Value, claims: &Value, key: &TestKey, alg: Algorithm) -> String {
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).expect("header")),
        b64(&serde_json::to_vec(claims).expect("claims"))
    );
    let sig = key.sign(alg, input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// Joins already-encoded parts with a raw signature.
pub(crate) fn assemble(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(&serde_json::to_vec(header).expect("header")),
        b64(&serde_json::to_vec(claims).expect("claims")),
        b64(signature)
    )
}
