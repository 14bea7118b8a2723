//! A DPoP client (RFC 9449) for the tests: a real P-256 key made with aws-lc-rs, its
//! public JWK, its RFC 7638 thumbprint computed here (not by the broker's code), and
//! proofs signed with it, correct or broken on purpose.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// A client's DPoP key.
pub struct DpopKey {
    pair: EcdsaKeyPair,
    x: String,
    y: String,
}

impl DpopKey {
    pub fn generate() -> DpopKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("P-256 key");
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key pair");
        // SEC 1 uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65);
        let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..]));
        DpopKey { pair, x, y }
    }

    /// The public JWK, as a proof's header carries it.
    pub fn jwk(&self) -> Value {
        json!({"kty": "EC", "crv": "P-256", "x": self.x, "y": self.y})
    }

    /// RFC 7638: SHA-256 of `{"crv","kty","x","y"}` in that order, no whitespace,
    /// base64url.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            self.x, self.y
        );
        B64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// A proof for `POST htu` issued now, with a fresh `jti`.
    pub fn proof(&self, htu: &str) -> String {
        self.proof_with(json!({}), json!({"htu": htu}))
    }

    /// A proof whose header is `{typ: dpop+jwt, alg: ES256, jwk}` and claims `{htm:
    /// POST, iat: now, jti: fresh}`, each patched (a null value removes the member),
    /// signed with this key.
    pub fn proof_with(&self, header: Value, claims: Value) -> String {
        let mut h = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()});
        patch(&mut h, header);
        let mut c = json!({"htm": "POST", "iat": now(), "jti": fresh_jti()});
        patch(&mut c, claims);
        let input = format!("{}.{}", encode(&h), encode(&c));
        let signature = self.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(signature))
    }

    /// An ES256 signature (r || s) over `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .expect("sign")
            .as_ref()
            .to_vec()
    }
}

fn encode(value: &Value) -> String {
    B64.encode(serde_json::to_vec(value).expect("JSON"))
}

fn patch(base: &mut Value, with: Value) {
    for (k, v) in with.as_object().expect("a JSON object").clone() {
        if v.is_null() {
            base.as_object_mut().expect("object").remove(&k);
        } else {
            base[k] = v;
        }
    }
}

/// Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn fresh_jti() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    B64.encode(bytes)
}
