//! Signature and claims verification of a peeked token against one issuer's policy
//! and key set.

use serde_json::{Map, Value};

use crate::alg::Algorithm;
use crate::jose::{Header, Peeked};
use crate::keys::{KeySet, VerifyingKey};

/// What one issuer's tokens must satisfy.
#[derive(Debug, Clone)]
pub struct IssuerPolicy {
    /// Compared byte-for-byte with `iss`.
    pub issuer: String,
    /// `aud` must contain at least one of these. Empty accepts nothing.
    pub audiences: Vec<String>,
    /// The only algorithms accepted, whatever the token says.
    pub algorithms: Vec<Algorithm>,
    /// Longest accepted `exp - iat` in seconds (falling back to `nbf`, then now).
    pub max_token_lifetime: Option<u64>,
    /// Leeway in seconds for `exp`, `nbf` and `iat`.
    pub clock_skew: u64,
}

/// A token whose signature and registered claims have been checked.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    pub expires_at: u64,
    pub issued_at: Option<u64>,
    pub not_before: Option<u64>,
    pub jti: Option<String>,
    pub header: Header,
    pub claims: Map<String, Value>,
}

/// Why a token was refused. Messages carry no token contents other than claim and
/// header parameter names and the kid (escaped), so they are safe to log.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// `alg` is not a supported algorithm or not in the issuer's list. The value
    /// is in the field, not the message.
    #[error("token algorithm is not allowed for this issuer")]
    AlgorithmNotAllowed { alg: String },
    #[error("no key for kid {}", shown_kid(kid))]
    UnknownKey { kid: Option<String> },
    #[error("key {} cannot verify the token's algorithm", shown_kid(kid))]
    KeyAlgorithmMismatch { kid: Option<String> },
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token header marks {name:?} critical, which is not understood")]
    UnknownCritical { name: String },
    #[error("token `iss` does not match the issuer")]
    IssuerMismatch,
    #[error("token has no `{claim}` claim")]
    MissingClaim { claim: &'static str },
    #[error("token `{claim}` claim has the wrong type or value")]
    InvalidClaim { claim: &'static str },
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token lifetime exceeds the issuer's maximum")]
    LifetimeTooLong,
    #[error("token `aud` does not name an accepted audience")]
    AudienceMismatch,
}

/// A kid as logs show it: escaped, and cut to 64 characters (a kid comes from the
/// unverified token, so it can be anything, of any length).
fn shown_kid(kid: &Option<String>) -> String {
    match kid {
        None => "(none)".into(),
        Some(k) if k.chars().count() > 64 => {
            let head: String = k.chars().take(64).collect();
            format!("{head:?}… ({} bytes)", k.len())
        }
        Some(k) => format!("{k:?}"),
    }
}

impl VerifyError {
    /// True only when fetching the issuer's keys again might help: the token names
    /// (or needs) a key the current set does not have.
    pub fn needs_key_refresh(&self) -> bool {
        matches!(self, VerifyError::UnknownKey { .. })
    }
}

/// Verifies `token` as a token of `policy.issuer` signed by one of `keys`, at unix
/// time `now`. Headers that point at keys (`jku`, `x5u`, `jwk`, `x5c`) are ignored.
pub fn verify(
    token: &Peeked,
    policy: &IssuerPolicy,
    keys: &KeySet,
    now: u64,
) -> Result<VerifiedToken, VerifyError> {
    let header = token.header();
    let alg = allowed_algorithm(header, policy)?;
    // We implement no JWS extensions, so any critical one is unknown (RFC 7515 §4.1.11).
    if let Some(name) = header.crit.as_ref().and_then(|crit| crit.first()) {
        return Err(VerifyError::UnknownCritical { name: name.clone() });
    }
    let key = select_key(header.kid.as_deref(), alg, keys)?;
    if !key.verify_signature(alg, token.signing_input(), token.signature()) {
        return Err(VerifyError::BadSignature);
    }
    check_claims(token, policy, now)
}

fn allowed_algorithm(header: &Header, policy: &IssuerPolicy) -> Result<Algorithm, VerifyError> {
    header
        .alg
        .parse::<Algorithm>()
        .ok()
        .filter(|alg| policy.algorithms.contains(alg))
        .ok_or_else(|| VerifyError::AlgorithmNotAllowed {
            alg: header.alg.clone(),
        })
}

fn select_key<'k>(
    kid: Option<&str>,
    alg: Algorithm,
    keys: &'k KeySet,
) -> Result<&'k VerifyingKey, VerifyError> {
    let key = match kid {
        Some(kid) => keys.get(kid).ok_or_else(|| VerifyError::UnknownKey {
            kid: Some(kid.to_owned()),
        })?,
        None => {
            // Without a kid, guessing among several keys would let any of them
            // vouch for the token; accept only an unambiguous set.
            let mut usable = keys.iter().filter(|key| key.supports(alg));
            match (usable.next(), usable.next()) {
                (Some(only), None) => only,
                _ => return Err(VerifyError::UnknownKey { kid: None }),
            }
        }
    };
    if !key.supports(alg) {
        return Err(VerifyError::KeyAlgorithmMismatch {
            kid: key.kid().map(str::to_owned),
        });
    }
    Ok(key)
}

fn check_claims(token: &Peeked, policy: &IssuerPolicy, now: u64) -> Result<VerifiedToken, VerifyError> {
    let claims = token.unverified_claims();
    let skew = policy.clock_skew;

    let issuer = required_string(claims, "iss")?;
    if issuer != policy.issuer {
        return Err(VerifyError::IssuerMismatch);
    }
    let subject = required_string(claims, "sub")?;
    if subject.is_empty() {
        return Err(VerifyError::InvalidClaim { claim: "sub" });
    }

    let expires_at = match claims.get("exp") {
        None => return Err(VerifyError::MissingClaim { claim: "exp" }),
        Some(v) => numeric_date(v, Rounding::Down).ok_or(VerifyError::InvalidClaim { claim: "exp" })?,
    };
    if now > expires_at.saturating_add(skew) {
        return Err(VerifyError::Expired);
    }
    let not_before = optional_date(claims, "nbf")?;
    if not_before.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
        return Err(VerifyError::NotYetValid);
    }
    let issued_at = optional_date(claims, "iat")?;
    if issued_at.is_some_and(|iat| iat > now.saturating_add(skew)) {
        return Err(VerifyError::IssuedInFuture);
    }
    if let Some(max) = policy.max_token_lifetime {
        let start = issued_at.or(not_before).unwrap_or(now);
        if expires_at.saturating_sub(start) > max {
            return Err(VerifyError::LifetimeTooLong);
        }
    }

    let audiences = match claims.get("aud") {
        None => return Err(VerifyError::MissingClaim { claim: "aud" }),
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(VerifyError::InvalidClaim { claim: "aud" })?,
        Some(_) => return Err(VerifyError::InvalidClaim { claim: "aud" }),
    };
    if !audiences.iter().any(|aud| policy.audiences.contains(aud)) {
        return Err(VerifyError::AudienceMismatch);
    }

    let jti = match claims.get("jti") {
        None => None,
        Some(Value::String(jti)) => Some(jti.clone()),
        Some(_) => return Err(VerifyError::InvalidClaim { claim: "jti" }),
    };

    Ok(VerifiedToken {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        audiences,
        expires_at,
        issued_at,
        not_before,
        jti,
        header: token.header().clone(),
        claims: claims.clone(),
    })
}

fn required_string<'c>(claims: &'c Map<String, Value>, claim: &'static str) -> Result<&'c str, VerifyError> {
    match claims.get(claim) {
        None => Err(VerifyError::MissingClaim { claim }),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(VerifyError::InvalidClaim { claim }),
    }
}

fn optional_date(claims: &Map<String, Value>, claim: &'static str) -> Result<Option<u64>, VerifyError> {
    // Rounding up makes a fractional `nbf`/`iat` no more permissive than its exact value.
    claims
        .get(claim)
        .map(|v| numeric_date(v, Rounding::Up).ok_or(VerifyError::InvalidClaim { claim }))
        .transpose()
}

#[derive(Clone, Copy)]
enum Rounding {
    Down,
    Up,
}

/// A JSON number as whole unix seconds (RFC 7519 NumericDate). Negative values and
/// non-numbers are refused. Fractions are rounded in the direction that keeps the
/// comparison with an integer `now` exact; values beyond `u64` saturate.
fn numeric_date(v: &Value, rounding: Rounding) -> Option<u64> {
    let n = v.as_number()?;
    if let Some(whole) = n.as_u64() {
        return Some(whole);
    }
    let f = n.as_f64()?;
    if !f.is_finite() || f < 0.0 {
        return None;
    }
    let rounded = match rounding {
        Rounding::Down => f.floor(),
        Rounding::Up => f.ceil(),
    };
    // `as` saturates at u64::MAX for larger floats, which is what we want.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(rounded as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::peek;
    use crate::test_support::{self, TestKey, assemble, b64, key_for, mint};
    use serde_json::json;

    const ISS: &str = "https://token.actions.githubusercontent.com";
    const AUD: &str = "https://broker.example.com";
    const NOW: u64 = 1_700_000_000;
    const SKEW: u64 = 60;
    const MAX_LIFETIME: u64 = 3600;

    fn policy() -> IssuerPolicy {
        IssuerPolicy {
            issuer: ISS.into(),
            audiences: vec![AUD.into(), "https://other.example".into()],
            algorithms: Algorithm::ALL.to_vec(),
            max_token_lifetime: Some(MAX_LIFETIME),
            clock_skew: SKEW,
        }
    }

    fn claims() -> Value {
        json!({
            "iss": ISS,
            "sub": "repo:octo/app:ref:refs/heads/main",
            "aud": AUD,
            "iat": NOW - 10,
            "nbf": NOW - 10,
            "exp": NOW + 600,
            "jti": "jti-1",
            "repository": "octo/app",
        })
    }

    fn header(alg: Algorithm, key: &TestKey) -> Value {
        json!({ "alg": alg.as_str(), "kid": key.kid, "typ": "JWT" })
    }

    fn all_keys() -> KeySet {
        let jwks = json!({
            "keys": test_support::all_keys().iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()
        });
        KeySet::from_jwks_value(&jwks).expect("jwks")
    }

    fn keys_of(jwks: &[&Value]) -> KeySet {
        KeySet::from_jwks_value(&json!({ "keys": jwks })).expect("jwks")
    }

    fn check_with(token: &str, policy: &IssuerPolicy, keys: &KeySet) -> Result<VerifiedToken, VerifyError> {
        verify(&peek(token).expect("peek"), policy, keys, NOW)
    }

    fn check(token: &str) -> Result<VerifiedToken, VerifyError> {
        check_with(token, &policy(), &all_keys())
    }

    /// An RS256 token over `claims` from the shared RSA key.
    fn rs256(claims: &Value) -> String {
        let key = test_support::rsa_2048();
        mint(&header(Algorithm::RS256, key), claims, key, Algorithm::RS256)
    }

    fn with_claim(name: &str, value: Value) -> Value {
        let mut c = claims();
        c[name] = value;
        c
    }

    fn without_claim(name: &str) -> Value {
        let mut c = claims();
        c.as_object_mut().expect("object").remove(name);
        c
    }

    #[test]
    fn verifies_every_algorithm() {
        for alg in Algorithm::ALL {
            let key = key_for(alg);
            let token = mint(&header(alg, key), &claims(), key, alg);
            let v = check(&token).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(v.issuer, ISS);
            assert_eq!(v.subject, "repo:octo/app:ref:refs/heads/main");
            assert_eq!(v.audiences, vec![AUD.to_owned()]);
            assert_eq!(v.expires_at, NOW + 600);
            assert_eq!(v.issued_at, Some(NOW - 10));
            assert_eq!(v.not_before, Some(NOW - 10));
            assert_eq!(v.jti.as_deref(), Some("jti-1"));
            assert_eq!(v.header.alg, alg.as_str());
            assert_eq!(v.claims["repository"], "octo/app");
        }
    }

    #[test]
    fn accepts_tokens_from_jsonwebtoken() {
        use jsonwebtoken::{EncodingKey, Header as JwtHeader, encode};
        let cases = [
            (jsonwebtoken::Algorithm::ES256, test_support::ec_p256()),
            (jsonwebtoken::Algorithm::ES384, test_support::ec_p384()),
            (jsonwebtoken::Algorithm::EdDSA, test_support::ed25519()),
        ];
        for (alg, key) in cases {
            let mut h = JwtHeader::new(alg);
            h.kid = Some(key.kid.clone());
            let encoding = match alg {
                jsonwebtoken::Algorithm::EdDSA => EncodingKey::from_ed_der(key.pkcs8()),
                _ => EncodingKey::from_ec_der(key.pkcs8()),
            };
            let token = encode(&h, &claims(), &encoding).expect("encode");
            let v = check(&token).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(v.subject, "repo:octo/app:ref:refs/heads/main");
        }
    }

    #[test]
    fn jsonwebtoken_accepts_our_tokens() {
        use jsonwebtoken::{DecodingKey, Validation, decode};
        let key = test_support::rsa_2048();
        for (ours, theirs) in [
            (Algorithm::RS256, jsonwebtoken::Algorithm::RS256),
            (Algorithm::PS512, jsonwebtoken::Algorithm::PS512),
        ] {
            let token = mint(&header(ours, key), &claims(), key, ours);
            let decoding = DecodingKey::from_rsa_raw_components(&key.rsa_n(), &[1, 0, 1]);
            let mut validation = Validation::new(theirs);
            validation.set_audience(&[AUD]);
            validation.set_issuer(&[ISS]);
            validation.validate_exp = false; // NOW is a fixed past instant
            let data = decode::<Value>(&token, &decoding, &validation).expect("decode");
            assert_eq!(data.claims["sub"], "repo:octo/app:ref:refs/heads/main");
        }
    }

    #[test]
    fn rejects_alg_none() {
        let signed = rs256(&claims());
        let real_sig = signed.rsplit('.').next().expect("sig").to_owned();
        for spelling in ["none", "None", "NONE", "nOnE"] {
            let h = json!({ "alg": spelling, "kid": "rsa-2048" });
            for sig in [String::new(), real_sig.clone()] {
                let token = format!(
                    "{}.{}.{sig}",
                    b64(&serde_json::to_vec(&h).expect("json")),
                    b64(&serde_json::to_vec(&claims()).expect("json")),
                );
                assert_eq!(
                    check(&token).expect_err(spelling),
                    VerifyError::AlgorithmNotAllowed { alg: spelling.into() }
                );
            }
            // Nor without a kid against a single-key set.
            let token = assemble(&json!({ "alg": spelling }), &claims(), b"");
            let one = keys_of(&[&test_support::rsa_2048().jwk]);
            assert!(matches!(
                check_with(&token, &policy(), &one),
                Err(VerifyError::AlgorithmNotAllowed { .. })
            ));
        }
    }

    #[test]
    fn rejects_hs256_signed_with_rsa_public_key() {
        use aws_lc_rs::hmac;
        let key = test_support::rsa_2048();
        // Every form an attacker might guess the verifier feeds to HMAC.
        let secrets = [
            serde_json::to_vec(&key.jwk).expect("json"),
            key.rsa_n(),
            key.jwk["n"].as_str().expect("n").as_bytes().to_vec(),
        ];
        for secret in secrets {
            for alg in ["HS256", "HS384", "HS512"] {
                let h = json!({ "alg": alg, "kid": key.kid });
                let input = format!(
                    "{}.{}",
                    b64(&serde_json::to_vec(&h).expect("json")),
                    b64(&serde_json::to_vec(&claims()).expect("json"))
                );
                let mac_alg = match alg {
                    "HS256" => hmac::HMAC_SHA256,
                    "HS384" => hmac::HMAC_SHA384,
                    _ => hmac::HMAC_SHA512,
                };
                let tag = hmac::sign(&hmac::Key::new(mac_alg, &secret), input.as_bytes());
                let token = format!("{input}.{}", b64(tag.as_ref()));
                assert_eq!(
                    check(&token).expect_err(alg),
                    VerifyError::AlgorithmNotAllowed { alg: alg.into() }
                );
            }
        }
    }

    #[test]
    fn algorithm_comes_from_the_policy() {
        let key = test_support::rsa_2048();
        let token = mint(&header(Algorithm::RS256, key), &claims(), key, Algorithm::RS256);
        let mut only_es256 = policy();
        only_es256.algorithms = vec![Algorithm::ES256];
        assert_eq!(
            check_with(&token, &only_es256, &all_keys()).expect_err("policy"),
            VerifyError::AlgorithmNotAllowed { alg: "RS256".into() }
        );
        let mut nothing = policy();
        nothing.algorithms.clear();
        assert!(matches!(
            check_with(&token, &nothing, &all_keys()),
            Err(VerifyError::AlgorithmNotAllowed { .. })
        ));
        for alg in ["rs256", "RS1", "ES512", ""] {
            let token = assemble(&json!({ "alg": alg, "kid": key.kid }), &claims(), b"x");
            assert_eq!(
                check(&token).expect_err(alg),
                VerifyError::AlgorithmNotAllowed { alg: alg.into() }
            );
        }
    }

    #[test]
    fn rejects_psychic_signature() {
        for (alg, len) in [(Algorithm::ES256, 64), (Algorithm::ES384, 96)] {
            let key = key_for(alg);
            let token = assemble(&header(alg, key), &claims(), &vec![0u8; len]);
            assert_eq!(check(&token).expect_err("psychic"), VerifyError::BadSignature);
        }
    }

    #[test]
    fn rejects_bad_signatures() {
        for alg in Algorithm::ALL {
            let key = key_for(alg);
            let token = mint(&header(alg, key), &claims(), key, alg);
            let (input, sig) = token.rsplit_once('.').expect("dot");
            // Payload swapped after signing.
            let (h, _) = input.split_once('.').expect("dot");
            let forged_claims = b64(&serde_json::to_vec(&with_claim("sub", json!("root"))).expect("json"));
            let forged = format!("{h}.{forged_claims}.{sig}");
            assert_eq!(
                check(&forged).expect_err("forged"),
                VerifyError::BadSignature,
                "{alg}"
            );
            // Missing, truncated and extended signatures.
            let mut raw = base64::Engine::decode(&crate::jose::BASE64URL, sig).expect("b64");
            let empty = format!("{input}.");
            raw.pop();
            let short = format!("{input}.{}", b64(&raw));
            raw.extend_from_slice(&[0, 0]);
            let long = format!("{input}.{}", b64(&raw));
            for t in [empty, short, long] {
                assert_eq!(check(&t).expect_err("sig"), VerifyError::BadSignature, "{alg}");
            }
        }
    }

    #[test]
    fn ignores_embedded_key_headers() {
        // The attacker's own key, advertised in every header that can carry one.
        let attacker = test_support::rsa_2048_other();
        let pointers = |kid: Option<&str>| {
            let mut h = json!({
                "alg": "RS256",
                "jwk": attacker.jwk,
                "jku": "https://attacker.example/jwks.json",
                "x5u": "https://attacker.example/cert.pem",
                "x5c": ["MIIB"],
            });
            if let Some(kid) = kid {
                h["kid"] = json!(kid);
            }
            h
        };
        let sign = |h: &Value| mint(h, &claims(), attacker, Algorithm::RS256);
        // Its own kid: not in the issuer's set.
        assert_eq!(
            check(&sign(&pointers(Some(&attacker.kid)))).expect_err("attacker kid"),
            VerifyError::UnknownKey {
                kid: Some(attacker.kid.clone())
            }
        );
        // The real kid: the real key does not verify the attacker's signature.
        assert_eq!(
            check(&sign(&pointers(Some("rsa-2048")))).expect_err("real kid"),
            VerifyError::BadSignature
        );
        // No kid and a single-key set: same.
        let one = keys_of(&[&test_support::rsa_2048().jwk]);
        assert_eq!(
            check_with(&sign(&pointers(None)), &policy(), &one).expect_err("no kid"),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn rejects_key_from_another_key_set() {
        let other = test_support::rsa_2048_other();
        let token = mint(
            &header(Algorithm::RS256, other),
            &claims(),
            other,
            Algorithm::RS256,
        );
        let err = check(&token).expect_err("other set");
        assert_eq!(
            err,
            VerifyError::UnknownKey {
                kid: Some(other.kid.clone())
            }
        );
        assert!(err.needs_key_refresh());
        // The same token verifies against the set it belongs to.
        let own = keys_of(&[&other.jwk]);
        assert!(check_with(&token, &policy(), &own).is_ok());
    }

    #[test]
    fn rejects_unknown_critical_headers() {
        let key = test_support::rsa_2048();
        for crit in [json!(["b64"]), json!(["exp", "iss"]), json!(["kid"])] {
            let mut h = header(Algorithm::RS256, key);
            h["crit"] = crit.clone();
            h["b64"] = json!(false);
            let token = mint(&h, &claims(), key, Algorithm::RS256);
            let first = crit[0].as_str().expect("str").to_owned();
            assert_eq!(
                check(&token).expect_err("crit"),
                VerifyError::UnknownCritical { name: first }
            );
        }
    }

    #[test]
    fn rejects_key_that_cannot_do_the_algorithm() {
        // An ES256 token pointing at the RSA key.
        let ec = test_support::ec_p256();
        let mut h = header(Algorithm::ES256, ec);
        h["kid"] = json!("rsa-2048");
        let token = mint(&h, &claims(), ec, Algorithm::ES256);
        assert_eq!(
            check(&token).expect_err("mismatch"),
            VerifyError::KeyAlgorithmMismatch {
                kid: Some("rsa-2048".into())
            }
        );
        // An ES384 token pointing at the P-256 key.
        let p384 = test_support::ec_p384();
        let mut h = header(Algorithm::ES384, p384);
        h["kid"] = json!("ec-p256");
        let token = mint(&h, &claims(), p384, Algorithm::ES384);
        assert!(matches!(
            check(&token),
            Err(VerifyError::KeyAlgorithmMismatch { .. })
        ));
        // A key pinned to RS256 by its JWK `alg` refuses PS256.
        let rsa = test_support::rsa_2048();
        let mut pinned = rsa.jwk.clone();
        pinned["alg"] = json!("RS256");
        let keys = keys_of(&[&pinned]);
        let token = mint(&header(Algorithm::PS256, rsa), &claims(), rsa, Algorithm::PS256);
        assert_eq!(
            check_with(&token, &policy(), &keys).expect_err("pinned"),
            VerifyError::KeyAlgorithmMismatch {
                kid: Some("rsa-2048".into())
            }
        );
        let token = mint(&header(Algorithm::RS256, rsa), &claims(), rsa, Algorithm::RS256);
        assert!(check_with(&token, &policy(), &keys).is_ok());
    }

    #[test]
    fn token_without_kid_needs_an_unambiguous_key() {
        let rsa = test_support::rsa_2048();
        let other = test_support::rsa_2048_other();
        let token = mint(&json!({"alg": "RS256"}), &claims(), rsa, Algorithm::RS256);
        let one = keys_of(&[&rsa.jwk]);
        assert!(check_with(&token, &policy(), &one).is_ok());
        // One RSA key among keys of other types is still unambiguous for RS256.
        assert!(check(&token).is_ok());
        let two = keys_of(&[&rsa.jwk, &other.jwk]);
        let err = check_with(&token, &policy(), &two).expect_err("two keys");
        assert_eq!(err, VerifyError::UnknownKey { kid: None });
        assert!(err.needs_key_refresh());
        // No key for the algorithm at all.
        let ec_only = keys_of(&[&test_support::ec_p256().jwk]);
        assert_eq!(
            check_with(&token, &policy(), &ec_only).expect_err("none"),
            VerifyError::UnknownKey { kid: None }
        );
        assert_eq!(
            check_with(&token, &policy(), &KeySet::default()).expect_err("empty"),
            VerifyError::UnknownKey { kid: None }
        );
    }

    #[test]
    fn rejects_bad_claims() {
        let cases: Vec<(&str, Value, VerifyError)> = vec![
            (
                "iss missing",
                without_claim("iss"),
                VerifyError::MissingClaim { claim: "iss" },
            ),
            (
                "iss number",
                with_claim("iss", json!(1)),
                VerifyError::InvalidClaim { claim: "iss" },
            ),
            (
                "iss array",
                with_claim("iss", json!([ISS])),
                VerifyError::InvalidClaim { claim: "iss" },
            ),
            (
                "iss trailing slash",
                with_claim("iss", json!(format!("{ISS}/"))),
                VerifyError::IssuerMismatch,
            ),
            (
                "iss case",
                with_claim("iss", json!(ISS.to_uppercase())),
                VerifyError::IssuerMismatch,
            ),
            (
                "iss other",
                with_claim("iss", json!("https://evil.example")),
                VerifyError::IssuerMismatch,
            ),
            (
                "sub missing",
                without_claim("sub"),
                VerifyError::MissingClaim { claim: "sub" },
            ),
            (
                "sub number",
                with_claim("sub", json!(42)),
                VerifyError::InvalidClaim { claim: "sub" },
            ),
            (
                "sub empty",
                with_claim("sub", json!("")),
                VerifyError::InvalidClaim { claim: "sub" },
            ),
            (
                "exp missing",
                without_claim("exp"),
                VerifyError::MissingClaim { claim: "exp" },
            ),
            (
                "exp string",
                with_claim("exp", json!((NOW + 600).to_string())),
                VerifyError::InvalidClaim { claim: "exp" },
            ),
            (
                "exp negative",
                with_claim("exp", json!(-1)),
                VerifyError::InvalidClaim { claim: "exp" },
            ),
            (
                "exp null",
                with_claim("exp", Value::Null),
                VerifyError::InvalidClaim { claim: "exp" },
            ),
            (
                "expired",
                with_claim("exp", json!(NOW - 3600)),
                VerifyError::Expired,
            ),
            (
                "nbf string",
                with_claim("nbf", json!("0")),
                VerifyError::InvalidClaim { claim: "nbf" },
            ),
            (
                "not yet valid",
                with_claim("nbf", json!(NOW + 300)),
                VerifyError::NotYetValid,
            ),
            (
                "iat string",
                with_claim("iat", json!("0")),
                VerifyError::InvalidClaim { claim: "iat" },
            ),
            (
                "iat negative float",
                with_claim("iat", json!(-0.5)),
                VerifyError::InvalidClaim { claim: "iat" },
            ),
            (
                "issued in future",
                with_claim("iat", json!(NOW + 300)),
                VerifyError::IssuedInFuture,
            ),
            (
                "lifetime too long",
                with_claim("exp", json!(NOW + 2 * MAX_LIFETIME)),
                VerifyError::LifetimeTooLong,
            ),
            (
                "aud missing",
                without_claim("aud"),
                VerifyError::MissingClaim { claim: "aud" },
            ),
            (
                "aud number",
                with_claim("aud", json!(1)),
                VerifyError::InvalidClaim { claim: "aud" },
            ),
            (
                "aud object",
                with_claim("aud", json!({"aud": AUD})),
                VerifyError::InvalidClaim { claim: "aud" },
            ),
            (
                "aud array with number",
                with_claim("aud", json!([AUD, 1])),
                VerifyError::InvalidClaim { claim: "aud" },
            ),
            (
                "aud other",
                with_claim("aud", json!("https://evil.example")),
                VerifyError::AudienceMismatch,
            ),
            (
                "aud other array",
                with_claim("aud", json!(["a", "b"])),
                VerifyError::AudienceMismatch,
            ),
            (
                "aud empty array",
                with_claim("aud", json!([])),
                VerifyError::AudienceMismatch,
            ),
            (
                "aud trailing slash",
                with_claim("aud", json!(format!("{AUD}/"))),
                VerifyError::AudienceMismatch,
            ),
            (
                "jti number",
                with_claim("jti", json!(7)),
                VerifyError::InvalidClaim { claim: "jti" },
            ),
        ];
        for (name, c, want) in cases {
            assert_eq!(check(&rs256(&c)).expect_err(name), want, "{name}");
        }
    }

    #[test]
    fn accepts_optional_and_alternative_claim_forms() {
        let mut c = claims();
        for name in ["iat", "nbf", "jti"] {
            c.as_object_mut().expect("object").remove(name);
        }
        c["aud"] = json!(["https://unrelated.example", AUD]);
        c["exp"] = json!((NOW + 100) as f64 + 0.75);
        let v = check(&rs256(&c)).expect("valid");
        assert_eq!(v.expires_at, NOW + 100);
        assert_eq!(v.issued_at, None);
        assert_eq!(v.not_before, None);
        assert_eq!(v.jti, None);
        assert_eq!(v.audiences.len(), 2);
        // The policy's second audience is accepted too.
        let v = check(&rs256(&with_claim("aud", json!("https://other.example")))).expect("valid");
        assert_eq!(v.audiences, vec!["https://other.example".to_owned()]);
        // No lifetime cap: any exp is fine.
        let mut uncapped = policy();
        uncapped.max_token_lifetime = None;
        let far = rs256(&with_claim("exp", json!(u64::MAX)));
        assert!(check_with(&far, &uncapped, &all_keys()).is_ok());
        assert_eq!(check(&far).expect_err("capped"), VerifyError::LifetimeTooLong);
    }

    #[test]
    fn time_checks_are_exact_at_the_skew_boundary() {
        // (claim, value, accepted?)
        let cases: Vec<(&str, Value, Result<(), VerifyError>)> = vec![
            ("exp", json!(NOW - SKEW), Ok(())),
            ("exp", json!(NOW - SKEW - 1), Err(VerifyError::Expired)),
            ("exp", json!((NOW - SKEW) as f64 + 0.5), Ok(())),
            ("exp", json!((NOW - SKEW) as f64 - 0.5), Err(VerifyError::Expired)),
            ("nbf", json!(NOW + SKEW), Ok(())),
            ("nbf", json!(NOW + SKEW + 1), Err(VerifyError::NotYetValid)),
            (
                "nbf",
                json!((NOW + SKEW) as f64 + 0.5),
                Err(VerifyError::NotYetValid),
            ),
            ("iat", json!(NOW + SKEW), Ok(())),
            ("iat", json!(NOW + SKEW + 1), Err(VerifyError::IssuedInFuture)),
            (
                "iat",
                json!((NOW + SKEW) as f64 + 0.5),
                Err(VerifyError::IssuedInFuture),
            ),
        ];
        for (claim, value, want) in cases {
            let mut c = claims();
            c[claim] = value.clone();
            if claim != "exp" {
                // Keep exp after the moved nbf/iat so only the tested check fires.
                c["exp"] = json!(NOW + SKEW + 600);
            }
            let got = check(&rs256(&c)).map(|_| ());
            assert_eq!(got, want, "{claim} = {value}");
        }
    }

    #[test]
    fn lifetime_is_measured_from_iat_then_nbf_then_now() {
        let at = |iat: Option<u64>, nbf: Option<u64>, exp: u64| {
            let mut c = claims();
            let obj = c.as_object_mut().expect("object");
            obj.remove("iat");
            obj.remove("nbf");
            if let Some(iat) = iat {
                obj.insert("iat".into(), json!(iat));
            }
            if let Some(nbf) = nbf {
                obj.insert("nbf".into(), json!(nbf));
            }
            obj.insert("exp".into(), json!(exp));
            check(&rs256(&c)).map(|_| ())
        };
        let start = NOW - 100;
        let too_long = Err(VerifyError::LifetimeTooLong);
        assert_eq!(at(Some(start), None, start + MAX_LIFETIME), Ok(()));
        assert_eq!(at(Some(start), None, start + MAX_LIFETIME + 1), too_long);
        // iat wins over a later nbf.
        assert_eq!(at(Some(start), Some(NOW), start + MAX_LIFETIME + 1), too_long);
        assert_eq!(at(None, Some(start), start + MAX_LIFETIME), Ok(()));
        assert_eq!(at(None, Some(start), start + MAX_LIFETIME + 1), too_long);
        assert_eq!(at(None, None, NOW + MAX_LIFETIME), Ok(()));
        assert_eq!(at(None, None, NOW + MAX_LIFETIME + 1), too_long);
    }

    #[test]
    fn only_unknown_key_asks_for_a_refresh() {
        let all = [
            VerifyError::AlgorithmNotAllowed { alg: "x".into() },
            VerifyError::UnknownKey { kid: None },
            VerifyError::KeyAlgorithmMismatch { kid: None },
            VerifyError::BadSignature,
            VerifyError::UnknownCritical { name: "x".into() },
            VerifyError::IssuerMismatch,
            VerifyError::MissingClaim { claim: "exp" },
            VerifyError::InvalidClaim { claim: "exp" },
            VerifyError::Expired,
            VerifyError::NotYetValid,
            VerifyError::IssuedInFuture,
            VerifyError::LifetimeTooLong,
            VerifyError::AudienceMismatch,
        ];
        for err in all {
            assert_eq!(
                err.needs_key_refresh(),
                matches!(err, VerifyError::UnknownKey { .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn error_messages_do_not_echo_token_contents() {
        let marker = "m4rk3r";
        let key = test_support::rsa_2048();
        let tokens = [
            assemble(&json!({"alg": format!("{marker}none")}), &claims(), b""),
            rs256(&with_claim("iss", json!(marker))),
            rs256(&with_claim("aud", json!(marker))),
            rs256(&with_claim("exp", json!(marker))),
            rs256(&with_claim("sub", json!([marker]))),
            rs256(&with_claim("jti", json!({ marker: 1 }))),
            mint(
                &header(Algorithm::RS256, key),
                &with_claim("sub", json!(marker)),
                test_support::rsa_2048_other(),
                Algorithm::RS256,
            ),
        ];
        for token in tokens {
            let msg = check(&token).expect_err("must fail").to_string();
            assert!(!msg.contains(marker), "{msg}");
        }
        // The kid is named, escaped so it cannot forge log lines.
        let msg = VerifyError::UnknownKey {
            kid: Some("a\nb".into()),
        }
        .to_string();
        assert!(msg.contains(r#""a\nb""#), "{msg}");
    }
}
