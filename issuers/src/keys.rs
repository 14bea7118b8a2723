//! Public verification keys, parsed from a JWKS document (RFC 7517).
//!
//! A key set is built once per fetch and then only read. Keys this crate cannot or
//! must not use are left out and listed in [`KeySet::skipped`] with a reason, so one
//! odd key (an encryption key, a P-521 key) does not make an issuer unusable.

use std::collections::HashSet;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::alg::Algorithm;
use crate::jose::{BASE64URL, StrictJsonError, parse_json_strict};

/// Most keys accepted in one JWKS document; more is refused outright.
pub const MAX_KEYS: usize = 100;

const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;
/// AWS-LC refuses public exponents wider than this when verifying, so such a key
/// would fail every signature; refuse it at load where the reason can be logged.
const RSA_MAX_EXPONENT_BITS: usize = 33;

/// JWK members that only a private (or symmetric) key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    fn verification_algorithm(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Curve::P256 => Algorithm::ES256,
            Curve::P384 => Algorithm::ES384,
        }
    }
}

#[derive(Debug, Clone)]
enum KeyMaterial {
    /// Big-endian, without leading zero bytes (as AWS-LC requires).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        bits: usize,
    },
    /// SEC 1 uncompressed point `0x04 || x || y`, checked to be on the curve.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

/// One public key usable for signature verification.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    material: KeyMaterial,
}

impl VerifyingKey {
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The JWK's `alg` member, if it named one.
    pub fn alg(&self) -> Option<Algorithm> {
        self.alg
    }

    /// The modulus size of an RSA key, `None` for other key types.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self.material {
            KeyMaterial::Rsa { bits, .. } => Some(bits),
            KeyMaterial::Ec { .. } | KeyMaterial::Ed25519(_) => None,
        }
    }

    /// Whether this key may verify `alg`: its type and curve can, and its own `alg`
    /// member, if set, names exactly `alg`.
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|own| own == alg) && self.material_supports(alg)
    }

    fn material_supports(&self, alg: Algorithm) -> bool {
        match (&self.material, alg) {
            (
                KeyMaterial::Rsa { .. },
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
            ) => true,
            (KeyMaterial::Ec { curve, .. }, alg) => curve.algorithm() == alg,
            (KeyMaterial::Ed25519(_), Algorithm::EdDSA) => true,
            _ => false,
        }
    }

    /// Checks `signature` over `message` with `alg`. False for a key that does not
    /// [`support`](Self::supports) `alg`, whatever the signature.
    ///
    /// This is the exact check [`verify()`](crate::verify()) makes on a token's signing
    /// input. It is public only so that the Wycheproof tests (which sign arbitrary
    /// messages, not JWS signing inputs) can drive the same code; it skips every
    /// policy check, so call [`verify()`](crate::verify()) instead.
    #[doc(hidden)]
    pub fn verify_signature(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        if !self.supports(alg) {
            return false;
        }
        match &self.material {
            KeyMaterial::Rsa { n, e, .. } => {
                let params: &'static RsaParameters = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                    Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, signature)
                    .is_ok()
            }
            KeyMaterial::Ec { curve, point } => UnparsedPublicKey::new(curve.verification_algorithm(), point)
                .verify(message, signature)
                .is_ok(),
            KeyMaterial::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

impl VerifyingKey {
    /// Parses one public JWK (as a DPoP proof's `jwk` header carries it): the same
    /// checks as a key of a JWKS, so private members, unsupported types and curves,
    /// small RSA moduli and points off the curve are refused. The error is the reason.
    pub fn from_public_jwk(jwk: &Map<String, Value>) -> Result<VerifyingKey, String> {
        parse_jwk_members(jwk, None).map_err(|problem| problem.to_string())
    }

    /// Whether the JWK holds members only a private or symmetric key has (`d`, `k`, ...).
    pub fn has_private_members(jwk: &Map<String, Value>) -> bool {
        PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m))
    }

    /// The RFC 7638 JWK thumbprint: base64url (no padding) of the SHA-256 of the
    /// required members in lexicographic order, without whitespace. Computed from the
    /// parsed key (RSA integers without leading zero bytes), so two encodings of one
    /// key have one thumbprint.
    pub fn thumbprint_sha256(&self) -> String {
        let b64 = |bytes: &[u8]| BASE64URL.encode(bytes);
        let canonical = match &self.material {
            KeyMaterial::Rsa { n, e, .. } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n))
            }
            KeyMaterial::Ec { curve, point } => {
                let crv = match curve {
                    Curve::P256 => "P-256",
                    Curve::P384 => "P-384",
                };
                // `0x04 || x || y`, both coordinates of the curve's length.
                let coordinates = point.get(1..).unwrap_or_default();
                let (x, y) = coordinates.split_at(coordinates.len() / 2);
                format!(
                    r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                    b64(x),
                    b64(y)
                )
            }
            KeyMaterial::Ed25519(x) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        b64(digest.as_ref())
    }
}

/// A key from the document that is not in the set, and why (for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    pub kid: Option<String>,
    pub reason: String,
}

/// The usable keys of one issuer's JWKS.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    skipped: Vec<SkippedKey>,
}

/// Why a JWKS document was refused as a whole.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("JWKS is not valid JSON")]
    InvalidJson,
    /// The repeated name is in the field, not the message.
    #[error("JWKS repeats a JSON member name")]
    DuplicateMember { name: String },
    #[error("JWKS nests JSON too deeply")]
    TooDeep,
    #[error("JWKS is not an object with a `keys` array")]
    NotAJwks,
    #[error("JWKS has {count} keys; at most {max} are accepted")]
    TooManyKeys { count: usize, max: usize },
    #[error("JWKS has more than one usable key with kid {0:?}")]
    DuplicateKid(String),
}

impl KeySet {
    /// Parses a `{"keys": [...]}` document, rejecting repeated JSON member names.
    pub fn from_jwks_json(bytes: &[u8]) -> Result<KeySet, JwksError> {
        let value = parse_json_strict(bytes).map_err(|e| match e {
            StrictJsonError::Syntax => JwksError::InvalidJson,
            StrictJsonError::TooDeep => JwksError::TooDeep,
            StrictJsonError::DuplicateMember(name) => JwksError::DuplicateMember { name },
        })?;
        KeySet::from_jwks_value(&value)
    }

    /// Builds a key set from an already-parsed `{"keys": [...]}` document (for
    /// example keys written inline in configuration).
    pub fn from_jwks_value(v: &Value) -> Result<KeySet, JwksError> {
        let entries = v
            .as_object()
            .and_then(|doc| doc.get("keys"))
            .and_then(Value::as_array)
            .ok_or(JwksError::NotAJwks)?;
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys {
                count: entries.len(),
                max: MAX_KEYS,
            });
        }
        let mut set = KeySet::default();
        let mut seen = HashSet::new();
        for entry in entries {
            match parse_jwk(entry) {
                Ok(key) => {
                    // Only usable keys can make a kid ambiguous; an encryption key
                    // sharing a kid with a signing key is skipped and harmless.
                    if let Some(kid) = key.kid()
                        && !seen.insert(kid.to_owned())
                    {
                        return Err(JwksError::DuplicateKid(kid.to_owned()));
                    }
                    set.keys.push(key);
                }
                Err(skipped) => set.skipped.push(skipped),
            }
        }
        Ok(set)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.get(kid).is_some()
    }

    /// The usable key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|key| key.kid() == Some(kid))
    }

    /// The kid of every usable key (`None` for keys without one).
    pub fn kids(&self) -> impl Iterator<Item = Option<&str>> {
        self.keys.iter().map(VerifyingKey::kid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter()
    }

    /// Keys in the document that were left out, with the reason.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }
}

/// Why one key of a JWKS is skipped: the [`SkippedKey::reason`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum KeyProblem {
    #[error("key is not a JSON object")]
    NotAnObject,
    #[error("kid is not a string")]
    KidNotAString,
    #[error("contains private key material")]
    PrivateMaterial,
    #[error("use is not \"sig\"")]
    UseNotSig,
    #[error("use is not a string")]
    UseNotAString,
    #[error("key_ops is not an array of strings")]
    KeyOpsNotStrings,
    #[error("key_ops does not include \"verify\"")]
    KeyOpsWithoutVerify,
    #[error("key_ops is not an array")]
    KeyOpsNotAnArray,
    #[error("alg {0:?} is not a supported signature algorithm")]
    UnsupportedAlg(String),
    #[error("alg is not a string")]
    AlgNotAString,
    #[error("kty {0:?} is not supported")]
    UnsupportedKty(String),
    #[error("kty is missing or not a string")]
    MissingKty,
    #[error("alg {0} does not fit the key type")]
    AlgDoesNotFit(Algorithm),
    /// A member that must be a string (`n`, `e`, `x`, `y`, `crv`).
    #[error("{0} is missing or not a string")]
    MissingMember(&'static str),
    #[error("{0} is not unpadded canonical base64url")]
    NotBase64url(&'static str),
    #[error("RSA modulus is {0} bits; {RSA_MIN_BITS} to {RSA_MAX_BITS} required", RSA_MIN_BITS = RSA_MIN_BITS, RSA_MAX_BITS = RSA_MAX_BITS)]
    RsaModulusSize(usize),
    #[error("RSA modulus is even")]
    RsaModulusEven,
    #[error("RSA exponent must be odd and greater than 1")]
    RsaExponentValue,
    #[error("RSA exponent is wider than {RSA_MAX_EXPONENT_BITS} bits", RSA_MAX_EXPONENT_BITS = RSA_MAX_EXPONENT_BITS)]
    RsaExponentWidth,
    #[error("RSA key rejected by the crypto library")]
    RsaRejected,
    #[error("EC curve {0:?} is not supported")]
    UnsupportedEcCurve(String),
    #[error("EC coordinates must be exactly {0} bytes")]
    EcCoordinateLength(usize),
    #[error("EC point is not on the curve")]
    EcNotOnCurve,
    #[error("OKP curve {0:?} is not supported")]
    UnsupportedOkpCurve(String),
    #[error("Ed25519 x must be exactly {len} bytes", len = signature::ED25519_PUBLIC_KEY_LEN)]
    Ed25519Length,
    #[error("Ed25519 key rejected by the crypto library")]
    Ed25519Rejected,
}

fn parse_jwk(entry: &Value) -> Result<VerifyingKey, SkippedKey> {
    let skipped = |kid, problem: KeyProblem| SkippedKey {
        kid,
        reason: problem.to_string(),
    };
    let Some(jwk) = entry.as_object() else {
        return Err(skipped(None, KeyProblem::NotAnObject));
    };
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(skipped(None, KeyProblem::KidNotAString)),
    };
    parse_jwk_members(jwk, kid.clone()).map_err(|problem| skipped(kid, problem))
}

fn parse_jwk_members(jwk: &Map<String, Value>, kid: Option<String>) -> Result<VerifyingKey, KeyProblem> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(KeyProblem::PrivateMaterial);
    }
    match jwk.get("use") {
        None => {}
        // `jwt-svid`: SPIFFE bundles mark JWT signing keys so.
        Some(Value::String(u)) if u == "sig" || u == "jwt-svid" => {}
        Some(Value::String(_)) => return Err(KeyProblem::UseNotSig),
        Some(_) => return Err(KeyProblem::UseNotAString),
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) => {
            if ops.iter().any(|op| !op.is_string()) {
                return Err(KeyProblem::KeyOpsNotStrings);
            }
            if !ops.iter().any(|op| op.as_str() == Some("verify")) {
                return Err(KeyProblem::KeyOpsWithoutVerify);
            }
        }
        Some(_) => return Err(KeyProblem::KeyOpsNotAnArray),
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(
            name.parse::<Algorithm>()
                .map_err(|_| KeyProblem::UnsupportedAlg(name.clone()))?,
        ),
        Some(_) => return Err(KeyProblem::AlgNotAString),
    };
    let material = match jwk.get("kty").and_then(Value::as_str) {
        Some("RSA") => rsa_material(jwk)?,
        Some("EC") => ec_material(jwk)?,
        Some("OKP") => okp_material(jwk)?,
        Some(other) => return Err(KeyProblem::UnsupportedKty(other.to_owned())),
        None => return Err(KeyProblem::MissingKty),
    };
    let key = VerifyingKey { kid, alg, material };
    if let Some(alg) = alg
        && !key.material_supports(alg)
    {
        return Err(KeyProblem::AlgDoesNotFit(alg));
    }
    Ok(key)
}

/// The string member `name` (`crv`).
fn str_member<'a>(jwk: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, KeyProblem> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or(KeyProblem::MissingMember(name))
}

fn b64_member(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, KeyProblem> {
    BASE64URL
        .decode(str_member(jwk, name)?)
        .map_err(|_| KeyProblem::NotBase64url(name))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Bit length of a big-endian integer without leading zero bytes.
fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        None => 0,
        Some(&top) => (be.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

fn rsa_material(jwk: &Map<String, Value>) -> Result<KeyMaterial, KeyProblem> {
    let n_raw = b64_member(jwk, "n")?;
    let e_raw = b64_member(jwk, "e")?;
    let n = strip_leading_zeros(&n_raw);
    let e = strip_leading_zeros(&e_raw);
    let bits = bit_len(n);
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(KeyProblem::RsaModulusSize(bits));
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err(KeyProblem::RsaModulusEven);
    }
    let e_odd = e.last().is_some_and(|b| b & 1 == 1);
    if !e_odd || e == [1] {
        return Err(KeyProblem::RsaExponentValue);
    }
    if bit_len(e) > RSA_MAX_EXPONENT_BITS {
        return Err(KeyProblem::RsaExponentWidth);
    }
    RsaPublicKeyComponents { n, e }
        .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
        .map_err(|_| KeyProblem::RsaRejected)?;
    Ok(KeyMaterial::Rsa {
        n: n.to_vec(),
        e: e.to_vec(),
        bits,
    })
}

fn ec_material(jwk: &Map<String, Value>) -> Result<KeyMaterial, KeyProblem> {
    let curve = match str_member(jwk, "crv")? {
        "P-256" => Curve::P256,
        "P-384" => Curve::P384,
        other => return Err(KeyProblem::UnsupportedEcCurve(other.to_owned())),
    };
    let x = b64_member(jwk, "x")?;
    let y = b64_member(jwk, "y")?;
    let len = curve.coordinate_len();
    if x.len() != len || y.len() != len {
        return Err(KeyProblem::EcCoordinateLength(len));
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    ParsedPublicKey::new(curve.verification_algorithm(), &point).map_err(|_| KeyProblem::EcNotOnCurve)?;
    Ok(KeyMaterial::Ec { curve, point })
}

fn okp_material(jwk: &Map<String, Value>) -> Result<KeyMaterial, KeyProblem> {
    match str_member(jwk, "crv")? {
        "Ed25519" => {}
        other => return Err(KeyProblem::UnsupportedOkpCurve(other.to_owned())),
    }
    let x = b64_member(jwk, "x")?;
    if x.len() != signature::ED25519_PUBLIC_KEY_LEN {
        return Err(KeyProblem::Ed25519Length);
    }
    ParsedPublicKey::new(&signature::ED25519, &x).map_err(|_| KeyProblem::Ed25519Rejected)?;
    Ok(KeyMaterial::Ed25519(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{self, b64};
    use serde_json::json;

    fn one(jwk: Value) -> Result<KeySet, JwksError> {
        KeySet::from_jwks_value(&json!({ "keys": [jwk] }))
    }

    fn skip_reason(jwk: Value) -> String {
        let set = one(jwk).expect("document is valid");
        assert!(set.is_empty(), "key should have been skipped");
        assert_eq!(set.skipped().len(), 1);
        set.skipped()[0].reason.clone()
    }

    /// RFC 7638 §3.1's example key and thumbprint.
    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let key = VerifyingKey::from_public_jwk(jwk.as_object().expect("object")).expect("key");
        assert_eq!(
            key.thumbprint_sha256(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let mut private = jwk.as_object().expect("object").clone();
        private.insert("d".into(), json!("AQAB"));
        assert!(VerifyingKey::has_private_members(&private));
        assert!(VerifyingKey::from_public_jwk(&private).is_err());
    }

    #[test]
    fn loads_every_supported_key_type() {
        let keys = test_support::all_keys();
        let jwks = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
        let bytes = serde_json::to_vec(&jwks).expect("json");
        let set = KeySet::from_jwks_json(&bytes).expect("jwks");
        assert_eq!(set.len(), keys.len());
        assert!(set.skipped().is_empty(), "{:?}", set.skipped());
        for key in &keys {
            assert!(set.contains_kid(&key.kid));
        }
        assert!(!set.contains_kid("nope"));
        let kids: Vec<_> = set.kids().collect();
        assert_eq!(kids.len(), keys.len());
        assert!(kids.iter().all(Option::is_some));
    }

    #[test]
    fn supports_matches_key_type_and_alg_member() {
        let rsa = one(test_support::rsa_2048().jwk.clone()).expect("jwks");
        let rsa = rsa.get("rsa-2048").expect("key");
        for alg in Algorithm::ALL {
            let want = matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            );
            assert_eq!(rsa.supports(alg), want, "{alg}");
        }
        let mut pinned = test_support::rsa_2048().jwk.clone();
        pinned["alg"] = json!("PS256");
        let set = one(pinned).expect("jwks");
        let key = set.get("rsa-2048").expect("key");
        assert_eq!(key.alg(), Some(Algorithm::PS256));
        assert!(key.supports(Algorithm::PS256));
        assert!(!key.supports(Algorithm::RS256));

        let cases = [
            (test_support::ec_p256(), Algorithm::ES256),
            (test_support::ec_p384(), Algorithm::ES384),
            (test_support::ed25519(), Algorithm::EdDSA),
        ];
        for (tk, only) in cases {
            let set = one(tk.jwk.clone()).expect("jwks");
            let key = set.get(&tk.kid).expect("key");
            for alg in Algorithm::ALL {
                assert_eq!(key.supports(alg), alg == only, "{} {alg}", tk.kid);
            }
        }
    }

    #[test]
    fn strips_leading_zeros_from_rsa_members() {
        let tk = test_support::rsa_2048();
        let mut jwk = tk.jwk.clone();
        jwk["n"] = json!(b64(&[&[0u8, 0][..], &tk.rsa_n()].concat()));
        jwk["e"] = json!(b64(&[0, 1, 0, 1]));
        let set = one(jwk).expect("jwks");
        assert_eq!(set.get("rsa-2048").and_then(VerifyingKey::rsa_bits), Some(2048));
        assert_eq!(set.len(), 1);
    }

    /// The reasons are logged by the broker: their texts are part of its output.
    #[test]
    fn key_problems_read_as_before() {
        use KeyProblem::*;
        let cases = [
            (NotAnObject, "key is not a JSON object"),
            (KidNotAString, "kid is not a string"),
            (PrivateMaterial, "contains private key material"),
            (UseNotSig, "use is not \"sig\""),
            (UseNotAString, "use is not a string"),
            (KeyOpsNotStrings, "key_ops is not an array of strings"),
            (KeyOpsWithoutVerify, "key_ops does not include \"verify\""),
            (KeyOpsNotAnArray, "key_ops is not an array"),
            (
                UnsupportedAlg("HS256".into()),
                "alg \"HS256\" is not a supported signature algorithm",
            ),
            (AlgNotAString, "alg is not a string"),
            (UnsupportedKty("oct".into()), "kty \"oct\" is not supported"),
            (MissingKty, "kty is missing or not a string"),
            (
                AlgDoesNotFit(Algorithm::ES256),
                "alg ES256 does not fit the key type",
            ),
            (MissingMember("crv"), "crv is missing or not a string"),
            (NotBase64url("n"), "n is not unpadded canonical base64url"),
            (
                RsaModulusSize(1024),
                "RSA modulus is 1024 bits; 2048 to 8192 required",
            ),
            (RsaModulusEven, "RSA modulus is even"),
            (RsaExponentValue, "RSA exponent must be odd and greater than 1"),
            (RsaExponentWidth, "RSA exponent is wider than 33 bits"),
            (RsaRejected, "RSA key rejected by the crypto library"),
            (
                UnsupportedEcCurve("P-521".into()),
                "EC curve \"P-521\" is not supported",
            ),
            (EcCoordinateLength(32), "EC coordinates must be exactly 32 bytes"),
            (EcNotOnCurve, "EC point is not on the curve"),
            (
                UnsupportedOkpCurve("X25519".into()),
                "OKP curve \"X25519\" is not supported",
            ),
            (Ed25519Length, "Ed25519 x must be exactly 32 bytes"),
            (Ed25519Rejected, "Ed25519 key rejected by the crypto library"),
        ];
        for (problem, text) in cases {
            assert_eq!(problem.to_string(), text);
        }
    }

    #[test]
    fn skips_unusable_keys_with_a_reason() {
        let rsa = test_support::rsa_2048().jwk.clone();
        let ec = test_support::ec_p256().jwk.clone();
        let ed = test_support::ed25519().jwk.clone();
        let with = |base: &Value, name: &str, v: Value| {
            let mut jwk = base.clone();
            jwk[name] = v;
            jwk
        };
        let without = |base: &Value, name: &str| {
            let mut jwk = base.clone();
            jwk.as_object_mut().expect("object").remove(name);
            jwk
        };
        // An off-curve point: the real x with y + 1 in its last byte.
        let mut bad_y = BASE64URL.decode(ec["y"].as_str().expect("y")).expect("b64");
        if let Some(last) = bad_y.last_mut() {
            *last ^= 1;
        }
        let cases: Vec<(&str, Value, &str)> = vec![
            ("rsa 1024", test_support::rsa_1024_jwk(), "1024 bits"),
            (
                "rsa 8200 bits",
                with(&rsa, "n", json!(b64(&[0xffu8; 1025]))),
                "8200 bits",
            ),
            (
                "rsa even modulus",
                with(&rsa, "n", json!(b64(&[0xf0u8; 256]))),
                "even",
            ),
            ("rsa e = 1", with(&rsa, "e", json!("AQ")), "odd"),
            ("rsa e even", with(&rsa, "e", json!("AQAA")), "odd"),
            ("rsa e empty", with(&rsa, "e", json!("AA")), "odd"),
            (
                "rsa e too wide",
                with(&rsa, "e", json!(b64(&[1, 0, 0, 0, 0, 1]))),
                "wider",
            ),
            ("rsa n missing", without(&rsa, "n"), "n is missing"),
            ("rsa n number", with(&rsa, "n", json!(5)), "n is missing"),
            (
                "rsa n padded",
                with(&rsa, "e", json!("AQAB=".to_owned())),
                "base64url",
            ),
            (
                "rsa n standard alphabet",
                with(&rsa, "n", json!(rsa["n"].as_str().expect("n").replace('_', "/"))),
                "base64url",
            ),
            (
                "private rsa",
                with(&rsa, "d", json!("AQAB")),
                "private key material",
            ),
            (
                "private ec",
                with(&ec, "d", json!("AQAB")),
                "private key material",
            ),
            (
                "symmetric",
                json!({"kty":"oct","k":"c2VjcmV0"}),
                "private key material",
            ),
            ("oct without k", json!({"kty":"oct"}), "kty \"oct\""),
            ("no kty", without(&rsa, "kty"), "kty is missing"),
            ("use enc", with(&rsa, "use", json!("enc")), "use is not"),
            (
                "use not string",
                with(&rsa, "use", json!(1)),
                "use is not a string",
            ),
            (
                "key_ops without verify",
                with(&rsa, "key_ops", json!(["encrypt"])),
                "verify",
            ),
            (
                "key_ops not array",
                with(&rsa, "key_ops", json!("verify")),
                "not an array",
            ),
            ("alg none", with(&rsa, "alg", json!("none")), "not a supported"),
            ("alg HS256", with(&rsa, "alg", json!("HS256")), "not a supported"),
            (
                "alg RSA-OAEP",
                with(&rsa, "alg", json!("RSA-OAEP")),
                "not a supported",
            ),
            (
                "alg not string",
                with(&rsa, "alg", json!(256)),
                "alg is not a string",
            ),
            (
                "alg wrong type",
                with(&rsa, "alg", json!("ES256")),
                "does not fit",
            ),
            (
                "ec alg wrong curve",
                with(&ec, "alg", json!("ES384")),
                "does not fit",
            ),
            ("ec P-521", with(&ec, "crv", json!("P-521")), "\"P-521\""),
            (
                "ec secp256k1",
                with(&ec, "crv", json!("secp256k1")),
                "not supported",
            ),
            ("ec crv missing", without(&ec, "crv"), "crv is missing"),
            ("ec short x", with(&ec, "x", json!(b64(&[7u8; 31]))), "exactly 32"),
            ("ec y missing", without(&ec, "y"), "y is missing"),
            (
                "ec off curve",
                with(&ec, "y", json!(b64(&bad_y))),
                "not on the curve",
            ),
            (
                "ec p-256 point labelled p-384",
                with(&ec, "crv", json!("P-384")),
                "exactly 48",
            ),
            ("ed X25519", with(&ed, "crv", json!("X25519")), "not supported"),
            ("ed short", with(&ed, "x", json!(b64(&[1u8; 31]))), "exactly 32"),
            ("not an object", json!("RSA"), "not a JSON object"),
            (
                "kid not a string",
                with(&rsa, "kid", json!(1)),
                "kid is not a string",
            ),
        ];
        for (name, jwk, want) in cases {
            let reason = skip_reason(jwk);
            assert!(reason.contains(want), "{name}: {reason:?}");
        }
    }

    #[test]
    fn skipped_key_keeps_its_kid() {
        let set = one(test_support::rsa_1024_jwk()).expect("jwks");
        assert_eq!(set.skipped()[0].kid.as_deref(), Some("rsa-1024"));
        assert!(!set.contains_kid("rsa-1024"));
    }

    #[test]
    fn use_sig_and_key_ops_verify_are_accepted() {
        let mut jwk = test_support::rsa_2048().jwk.clone();
        jwk["use"] = json!("sig");
        jwk["key_ops"] = json!(["verify"]);
        jwk["x5c"] = json!(["ignored"]);
        assert_eq!(one(jwk).expect("jwks").len(), 1);
    }

    #[test]
    fn rejects_bad_documents() {
        let rsa = test_support::rsa_2048().jwk.clone();
        let mut other = test_support::ec_p256().jwk.clone();
        other["kid"] = rsa["kid"].clone();
        let many: Vec<Value> = (0..=MAX_KEYS)
            .map(|i| {
                let mut k = rsa.clone();
                k["kid"] = json!(format!("k{i}"));
                k
            })
            .collect();
        let cases: Vec<(&str, Value, JwksError)> = vec![
            ("array", json!([rsa]), JwksError::NotAJwks),
            ("no keys", json!({"key": [rsa]}), JwksError::NotAJwks),
            ("keys object", json!({"keys": rsa}), JwksError::NotAJwks),
            (
                "duplicate kid",
                json!({"keys": [rsa, other]}),
                JwksError::DuplicateKid("rsa-2048".into()),
            ),
            (
                "too many keys",
                json!({ "keys": many }),
                JwksError::TooManyKeys {
                    count: MAX_KEYS + 1,
                    max: MAX_KEYS,
                },
            ),
        ];
        for (name, doc, want) in cases {
            assert_eq!(KeySet::from_jwks_value(&doc).expect_err(name), want, "{name}");
        }
        // Exactly MAX_KEYS is fine.
        let ok = json!({ "keys": many[..MAX_KEYS] });
        assert_eq!(KeySet::from_jwks_value(&ok).expect("jwks").len(), MAX_KEYS);
        // Empty is a valid (if useless) set.
        assert!(
            KeySet::from_jwks_value(&json!({"keys": []}))
                .expect("jwks")
                .is_empty()
        );
    }

    #[test]
    fn kid_shared_with_a_skipped_key_is_not_a_duplicate() {
        let rsa = test_support::rsa_2048().jwk.clone();
        let mut enc = rsa.clone();
        enc["use"] = json!("enc");
        let set = KeySet::from_jwks_value(&json!({"keys": [rsa, enc]})).expect("jwks");
        assert_eq!(set.len(), 1);
        assert_eq!(set.skipped().len(), 1);
    }

    #[test]
    fn from_json_is_strict() {
        let cases: Vec<(&[u8], JwksError)> = vec![
            (b"{", JwksError::InvalidJson),
            (b"{\"keys\":[]} x", JwksError::InvalidJson),
            (b"\xff", JwksError::InvalidJson),
            (
                br#"{"keys":[],"keys":[]}"#,
                JwksError::DuplicateMember { name: "keys".into() },
            ),
            (
                br#"{"keys":[{"kty":"RSA","n":"AQAB","n":"AQAB","e":"AQAB"}]}"#,
                JwksError::DuplicateMember { name: "n".into() },
            ),
            (b"[]", JwksError::NotAJwks),
        ];
        for (doc, want) in cases {
            assert_eq!(KeySet::from_jwks_json(doc).expect_err("bad"), want);
        }
        let deep = format!(r#"{{"keys":[],"x":{}{}}}"#, "[".repeat(40), "]".repeat(40));
        assert_eq!(
            KeySet::from_jwks_json(deep.as_bytes()).expect_err("deep"),
            JwksError::TooDeep
        );
    }
}
