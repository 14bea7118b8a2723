//! DPoP proofs (RFC 9449): a JWT the client signs with a key it holds, carrying the
//! public half in its header, to bind the token it is issued to that key.
//!
//! [`verify_proof`] makes every check of RFC 9449 §4.3 that needs no state: the header
//! (`typ: dpop+jwt`, an asymmetric `alg` among [`PROOF_ALGORITHMS`], a public `jwk`,
//! no `crit`), the signature by that key, `htm`, `htu` (the caller decides how URLs
//! compare), `iat` within [`IAT_WINDOW_SECS`] of `now`, and a `jti` of at most
//! [`MAX_JTI_BYTES`]. That a `jti` is used once is the caller's check (it needs a
//! store); [`DpopProof::jti`] and [`DpopProof::expires_at`] say what to record. A
//! server nonce (§8) is the caller's check too: [`DpopProof::nonce`] is the claim as
//! sent, unchecked.
//! Pure: `now` is a parameter.

use serde_json::{Map, Value};

use crate::alg::Algorithm;
use crate::jose::{PeekError, peek_with_limit};
use crate::keys::VerifyingKey;

/// The longest proof accepted, in bytes (an RSA-4096 proof is about 2 KiB).
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// How far `iat` may lie from the broker's clock, either way, in seconds.
pub const IAT_WINDOW_SECS: u64 = 60;
/// The longest `jti` accepted, in bytes.
pub const MAX_JTI_BYTES: usize = 256;
/// The `alg` values a proof may use (the metadata's `dpop_signing_alg_values_supported`).
pub const PROOF_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::ES256,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::EdDSA,
];

/// What the request the proof came with must match.
pub struct ProofContext<'a> {
    /// The request's HTTP method (`POST`).
    pub method: &'a str,
    /// Whether the proof's `htu` names the endpoint the request reached.
    pub htu_matches: &'a dyn Fn(&str) -> bool,
    /// Unix seconds.
    pub now: u64,
}

/// A proof that passed every stateless check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopProof {
    /// RFC 7638 thumbprint of the proof's key: the issued token's `cnf.jkt`.
    pub jkt: String,
    pub jti: String,
    pub iat: u64,
    pub alg: Algorithm,
    /// The `nonce` claim (RFC 9449 §8) when it is a string; not checked here (it is
    /// within [`MAX_PROOF_BYTES`], as the whole proof is).
    pub nonce: Option<String>,
}

impl DpopProof {
    /// The last second in which this proof is still accepted (`iat` + the window):
    /// its `jti` must be remembered at least until then.
    pub fn expires_at(&self) -> u64 {
        self.iat.saturating_add(IAT_WINDOW_SECS)
    }
}

/// Why a proof was refused. Messages never quote the proof or its claims.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DpopError {
    #[error("DPoP proof: {0}")]
    Malformed(PeekError),
    #[error("DPoP proof: typ must be \"dpop+jwt\"")]
    WrongTyp,
    #[error("DPoP proof: alg must be one of ES256, RS256, PS256, EdDSA")]
    AlgorithmNotAllowed,
    #[error("DPoP proof: crit is not supported")]
    Critical,
    #[error("DPoP proof: the header has no jwk object")]
    NoJwk,
    #[error("DPoP proof: the jwk holds private key material")]
    PrivateKey,
    #[error("DPoP proof: jwk: {0}")]
    BadJwk(String),
    #[error("DPoP proof: the jwk cannot verify {0}")]
    KeyDoesNotFit(Algorithm),
    #[error("DPoP proof: bad signature")]
    BadSignature,
    #[error("DPoP proof: claim `{0}` is missing or of the wrong type")]
    MissingClaim(&'static str),
    #[error("DPoP proof: htm does not match the request method")]
    WrongMethod,
    #[error("DPoP proof: htu does not match the token endpoint")]
    WrongUri,
    #[error("DPoP proof: iat is more than {IAT_WINDOW_SECS}s from the server's clock")]
    Stale,
    #[error("DPoP proof: jti must be 1 to {MAX_JTI_BYTES} bytes")]
    BadJti,
}

/// Verifies `proof` against the request it came with; see the module docs.
pub fn verify_proof(proof: &str, ctx: &ProofContext<'_>) -> Result<DpopProof, DpopError> {
    let peeked = peek_with_limit(proof, MAX_PROOF_BYTES).map_err(DpopError::Malformed)?;
    let header = peeked.header();
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err(DpopError::WrongTyp);
    }
    let alg = header
        .alg
        .parse::<Algorithm>()
        .ok()
        .filter(|a| PROOF_ALGORITHMS.contains(a))
        .ok_or(DpopError::AlgorithmNotAllowed)?;
    if header.crit.is_some() {
        return Err(DpopError::Critical);
    }
    let jwk = header
        .raw
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or(DpopError::NoJwk)?;
    if VerifyingKey::has_private_members(jwk) {
        return Err(DpopError::PrivateKey);
    }
    let key = VerifyingKey::from_public_jwk(jwk).map_err(DpopError::BadJwk)?;
    if !key.supports(alg) {
        return Err(DpopError::KeyDoesNotFit(alg));
    }
    if !key.verify_signature(alg, peeked.signing_input(), peeked.signature()) {
        return Err(DpopError::BadSignature);
    }
    let claims = peeked.unverified_claims();
    let text = |name: &'static str| string_claim(claims, name).ok_or(DpopError::MissingClaim(name));
    if text("htm")? != ctx.method {
        return Err(DpopError::WrongMethod);
    }
    if !(ctx.htu_matches)(text("htu")?) {
        return Err(DpopError::WrongUri);
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(DpopError::MissingClaim("iat"))?;
    if iat.abs_diff(ctx.now) > IAT_WINDOW_SECS {
        return Err(DpopError::Stale);
    }
    let jti = text("jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(DpopError::BadJti);
    }
    Ok(DpopProof {
        jkt: key.thumbprint_sha256(),
        jti: jti.to_owned(),
        iat,
        alg,
        nonce: string_claim(claims, "nonce").map(str::to_owned),
    })
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{self, b64};
    use serde_json::json;

    const HTU: &str = "https://broker.example/token";
    const NOW: u64 = 1_800_000_000;

    fn htu_is_endpoint(htu: &str) -> bool {
        htu == HTU
    }

    fn ctx() -> ProofContext<'static> {
        ProofContext {
            method: "POST",
            htu_matches: &htu_is_endpoint,
            now: NOW,
        }
    }

    /// A proof signed by `key` with `alg`, its header and claims patched.
    fn proof(key: &test_support::TestKey, alg: Algorithm, header: Value, claims: Value) -> String {
        let mut h = json!({"typ": "dpop+jwt", "alg": alg.as_str(), "jwk": key.jwk.clone()});
        h["jwk"].as_object_mut().expect("jwk").remove("kid");
        merge(&mut h, header);
        let mut c = json!({"htm": "POST", "htu": HTU, "iat": NOW, "jti": "j-1"});
        merge(&mut c, claims);
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&h).expect("json")),
            b64(&serde_json::to_vec(&c).expect("json"))
        );
        let signature = key.sign(alg, input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }

    fn merge(base: &mut Value, patch: Value) {
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                base.as_object_mut().expect("object").remove(k);
            } else {
                base[k] = v.clone();
            }
        }
    }

    #[test]
    fn accepts_a_proof_of_each_algorithm_and_binds_its_thumbprint() {
        for (key, alg) in [
            (test_support::ec_p256(), Algorithm::ES256),
            (test_support::rsa_2048(), Algorithm::RS256),
            (test_support::rsa_2048(), Algorithm::PS256),
            (test_support::ed25519(), Algorithm::EdDSA),
        ] {
            let p = verify_proof(&proof(key, alg, json!({}), json!({})), &ctx())
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            let jwk = key.jwk.as_object().expect("jwk");
            let expected = VerifyingKey::from_public_jwk(jwk)
                .expect("key")
                .thumbprint_sha256();
            assert_eq!(p.jkt, expected, "{alg}");
            assert_eq!((p.jti.as_str(), p.iat, p.alg), ("j-1", NOW, alg));
            assert_eq!(p.expires_at(), NOW + IAT_WINDOW_SECS);
            assert_eq!(p.nonce, None);
        }
    }

    /// The `nonce` claim is handed over as sent, when a string; judging it is the
    /// caller's business.
    #[test]
    fn the_nonce_claim_is_passed_on_unchecked() {
        let key = test_support::ec_p256();
        let nonce_of = |claims: Value| {
            verify_proof(&proof(key, Algorithm::ES256, json!({}), claims), &ctx())
                .expect("valid")
                .nonce
        };
        assert_eq!(nonce_of(json!({"nonce": "n-1"})).as_deref(), Some("n-1"));
        assert_eq!(nonce_of(json!({"nonce": ""})).as_deref(), Some(""));
        assert_eq!(nonce_of(json!({"nonce": 7})), None);
    }

    #[test]
    fn refuses_each_defect() {
        let key = test_support::ec_p256();
        let es = Algorithm::ES256;
        let mut private_jwk = key.jwk.clone();
        private_jwk["d"] = json!("AAAA");
        let cases: Vec<(String, DpopError)> = vec![
            (
                proof(key, es, json!({"typ": "JWT"}), json!({})),
                DpopError::WrongTyp,
            ),
            (
                proof(key, es, json!({"typ": null}), json!({})),
                DpopError::WrongTyp,
            ),
            (proof(key, es, json!({"jwk": null}), json!({})), DpopError::NoJwk),
            (
                proof(key, es, json!({"jwk": private_jwk}), json!({})),
                DpopError::PrivateKey,
            ),
            (
                proof(key, es, json!({"crit": ["exp"]}), json!({})),
                DpopError::Critical,
            ),
            (
                proof(key, es, json!({}), json!({"htm": "GET"})),
                DpopError::WrongMethod,
            ),
            (
                proof(key, es, json!({}), json!({"htu": "https://elsewhere/token"})),
                DpopError::WrongUri,
            ),
            (
                proof(key, es, json!({}), json!({"iat": NOW - 61})),
                DpopError::Stale,
            ),
            (
                proof(key, es, json!({}), json!({"iat": NOW + 61})),
                DpopError::Stale,
            ),
            (
                proof(key, es, json!({}), json!({"iat": "now"})),
                DpopError::MissingClaim("iat"),
            ),
            (
                proof(key, es, json!({}), json!({"jti": null})),
                DpopError::MissingClaim("jti"),
            ),
            (
                proof(key, es, json!({}), json!({"htu": null})),
                DpopError::MissingClaim("htu"),
            ),
            (proof(key, es, json!({}), json!({"jti": ""})), DpopError::BadJti),
            (
                proof(key, es, json!({}), json!({"jti": "x".repeat(MAX_JTI_BYTES + 1)})),
                DpopError::BadJti,
            ),
        ];
        for (p, expected) in cases {
            assert_eq!(verify_proof(&p, &ctx()), Err(expected));
        }
        // Within the window, either way: accepted.
        for iat in [NOW - 60, NOW + 60] {
            assert!(verify_proof(&proof(key, es, json!({}), json!({"iat": iat})), &ctx()).is_ok());
        }
    }

    #[test]
    fn refuses_symmetric_none_and_mismatched_algorithms() {
        let key = test_support::ec_p256();
        let good = proof(key, Algorithm::ES256, json!({}), json!({}));
        let (input, _) = good.rsplit_once('.').expect("jws");
        let (_, payload) = input.split_once('.').expect("jws");
        for alg in ["none", "HS256", "ES384", "RS512"] {
            let header = json!({"typ": "dpop+jwt", "alg": alg, "jwk": key.jwk.clone()});
            let forged = format!(
                "{}.{payload}.{}",
                b64(&serde_json::to_vec(&header).expect("json")),
                b64(b"sig")
            );
            assert_eq!(
                verify_proof(&forged, &ctx()),
                Err(DpopError::AlgorithmNotAllowed),
                "{alg}"
            );
        }
        // An RSA key cannot verify ES256.
        let rsa = test_support::rsa_2048();
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": rsa.jwk.clone()});
        let forged = format!(
            "{}.{payload}.{}",
            b64(&serde_json::to_vec(&header).expect("json")),
            b64(&key.sign(Algorithm::ES256, b"x"))
        );
        assert_eq!(
            verify_proof(&forged, &ctx()),
            Err(DpopError::KeyDoesNotFit(Algorithm::ES256))
        );
    }

    #[test]
    fn refuses_a_bad_signature_and_another_key() {
        let key = test_support::ec_p256();
        let other = test_support::ec_p256_other();
        let good = proof(key, Algorithm::ES256, json!({}), json!({}));
        let (input, signature) = good.rsplit_once('.').expect("jws");
        let mut bytes = base64::Engine::decode(&crate::jose::BASE64URL, signature).expect("b64");
        bytes[0] ^= 1;
        let tampered = format!("{input}.{}", b64(&bytes));
        assert_eq!(verify_proof(&tampered, &ctx()), Err(DpopError::BadSignature));
        // Signed by another key than the one in the header.
        let resigned = format!("{input}.{}", b64(&other.sign(Algorithm::ES256, input.as_bytes())));
        assert_eq!(verify_proof(&resigned, &ctx()), Err(DpopError::BadSignature));
        assert!(matches!(
            verify_proof(&"a".repeat(MAX_PROOF_BYTES + 1), &ctx()),
            Err(DpopError::Malformed(PeekError::TooLarge { .. }))
        ));
    }
}
