//! Protocol constants, JWT plumbing and verification of tokens the broker issues.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Header, Validation};
use serde_json::Value;

use crate::http::Http;

pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(elapsed.as_secs()).expect("time fits i64")
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    hex(&bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// `header.claims.signature` from JSON values and an already encoded signature.
pub fn compact(header: &Value, claims: &Value, signature_b64: &str) -> String {
    format!("{}.{signature_b64}", signing_input(header, claims))
}

/// `base64url(header).base64url(claims)`: the bytes a JWS signature covers.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    let header = serde_json::to_vec(header).expect("header serialises");
    let claims = serde_json::to_vec(claims).expect("claims serialise");
    format!("{}.{}", b64url(&header), b64url(&claims))
}

/// An `alg: none` token: header and claims, empty signature.
pub fn unsigned(claims: &Value) -> String {
    compact(&serde_json::json!({"alg": "none", "typ": "JWT"}), claims, "")
}

/// A token MACed with HS256 under `secret` (for algorithm-confusion attacks).
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = signing_input(header, claims);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

/// Header and claims of a compact JWT, without verifying anything.
pub fn decode_unverified(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = |what: &str| -> Value {
        let text = parts
            .next()
            .unwrap_or_else(|| panic!("token has no {what} part: {token}"));
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .unwrap_or_else(|e| panic!("{what} is not base64url ({e}): {token}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {token}"))
    };
    let header = part("header");
    let claims = part("claims");
    (header, claims)
}

/// Verify a token the broker issued, with jsonwebtoken, against the broker's
/// `/jwks.json`: signature under the key named by `kid`, `iss` = the broker's
/// public URL, `aud` containing every one of `audiences`, `exp` in the future.
/// Returns the header and the claims; panics with the reason otherwise.
pub async fn verify_issued(broker: &Http, token: &str, audiences: &[&str]) -> (Header, Value) {
    let jwks = broker.jwks().await;
    verify_with_jwks(&jwks, token, broker.url(), audiences)
}

/// [`verify_issued`] against a given key set.
pub fn verify_with_jwks(jwks: &JwkSet, token: &str, issuer: &str, audiences: &[&str]) -> (Header, Value) {
    let header = jsonwebtoken::decode_header(token)
        .unwrap_or_else(|e| panic!("issued token has no valid header ({e}): {token}"));
    let kid = header
        .kid
        .as_deref()
        .unwrap_or_else(|| panic!("issued token has no kid: {header:?}"));
    let jwk = jwks
        .find(kid)
        .unwrap_or_else(|| panic!("kid {kid} is not in the broker's JWKS: {jwks:?}"));
    let key = DecodingKey::from_jwk(jwk).unwrap_or_else(|e| panic!("JWKS entry unusable ({e}): {jwk:?}"));
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
    validation.validate_nbf = true;
    validation.leeway = 5;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).unwrap_or_else(|e| {
        let (h, c) = decode_unverified(token);
        panic!("issued token does not verify ({e}); header {h}, claims {c}")
    });
    for aud in audiences {
        let present = match &data.claims["aud"] {
            Value::String(s) => s == aud,
            Value::Array(items) => items.iter().any(|v| v == aud),
            _ => false,
        };
        assert!(present, "aud {} lacks {aud}", data.claims["aud"]);
    }
    (data.header, data.claims)
}

/// The order n of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc,
    0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// An ES256 token with its signature (r, s) replaced by (r, n − s): the malleated twin
/// that verifies under the same key, with the same header and payload.
pub fn es256_with_s_negated(token: &str) -> String {
    let (input, signature) = token.rsplit_once('.').expect("a compact JWS");
    let mut sig = URL_SAFE_NO_PAD.decode(signature).expect("base64url signature");
    assert_eq!(sig.len(), 64, "an ES256 signature is r || s, 32 bytes each");
    let s: [u8; 32] = sig[32..].try_into().expect("32 bytes");
    // n − s, big-endian, with borrow (0 < s < n, so no underflow).
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_ORDER[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = u8::try_from(d).expect("a byte");
    }
    assert_eq!(borrow, 0, "s must be below the group order");
    sig[32..].copy_from_slice(&out);
    format!("{input}.{}", b64url(&sig))
}
