//! Fixtures and checks shared by the fuzz targets in `fuzz_targets/`.
//!
//! Each target is a one-line call into a `check_*` function here, so the same
//! checks can be replayed on stable: `cargo test` in this directory runs every
//! file under `seeds/<target>/` (and `regressions/<target>/`, for inputs that once
//! crashed) through its target's check.
//!
//! A `check_*` function returns normally for any input the code under test
//! handles correctly, and panics (which libFuzzer reports as a crash) when an
//! invariant is broken.

use std::collections::HashSet;
use std::sync::LazyLock;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use issuers::{
    Algorithm, DEFAULT_MAX_TOKEN_BYTES, IssuerPolicy, KeySet, MAX_KEYS, PeekError, VerifiedToken,
    VerifyError, peek, peek_with_limit, verify,
};
use serde_json::{Value, json};

/// The clock every verification runs at (unix seconds).
pub const NOW: u64 = 1_700_000_000;
pub const ISSUER: &str = "https://issuer.example";
pub const AUDIENCE: &str = "https://broker.example";
pub const CLOCK_SKEW: u64 = 60;
pub const MAX_LIFETIME: u64 = 3600;

// Published example keys: ES256 from RFC 7515 appendix A.3, Ed25519 from RFC 8037
// appendix A. They are public, which is fine: the fuzzer never sees them, only
// `check_verify`'s signing mode uses them.
const EC_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
const EC_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const ED_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
/// A 2048-bit RSA public key whose private half was thrown away: RS256/PS256
/// tokens reach the RSA verifier but can never verify.
const RSA_N: &str = "5PANZ0tE95hG-rodxjopOwXT6ijRPYGnGX6ncCX4kZNXWXv_s5l8AnHuOvMVtHucHZq25GO9H1zF3mDSrvxI1wZmGolumo13dGfpr-OxMKsGb3ATSHJqhS1J0OeQBqs17rEO9XGDcjM7Pr-hWs0H8CoicTy-63V7FsgGM5W63ZFrJtgGs_jNTqbBJPbEVLGtzbMrSnjN51jvQrBaCBZ3yVpqqETOuwVoub5Lgh4CdQQDxhwteGqj2rOwzYAqNXNluoBYAX6-9Ko2UrMa4oCfm4xPyUIgJIRlmkkDKZIx6QH9Z7nsuVrgOIAd2AHq9hKbSfoxetzxjW97yXo51lKuaw";

fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("fixture base64")
}

/// The issuer's keys: kids `ec`, `ed` and `rsa`.
pub static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    let jwks = json!({ "keys": [
        { "kty": "EC", "crv": "P-256", "kid": "ec", "x": EC_X, "y": EC_Y },
        { "kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": ED_X },
        { "kty": "RSA", "kid": "rsa", "n": RSA_N, "e": "AQAB" },
    ]});
    let set = KeySet::from_jwks_value(&jwks).expect("fixture JWKS");
    assert_eq!(set.len(), 3, "fixture keys skipped: {:?}", set.skipped());
    set
});

pub static POLICY: LazyLock<IssuerPolicy> = LazyLock::new(|| IssuerPolicy {
    issuer: ISSUER.into(),
    audiences: vec![AUDIENCE.into()],
    algorithms: vec![
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::PS256,
    ],
    max_token_lifetime: Some(MAX_LIFETIME),
    clock_skew: CLOCK_SKEW,
});

static EC_SIGNER: LazyLock<EcdsaKeyPair> = LazyLock::new(|| {
    let public = [&[4u8][..], &b64d(EC_X), &b64d(EC_Y)].concat();
    EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &b64d(EC_D), &public)
        .expect("fixture EC key")
});

static ED_SIGNER: LazyLock<Ed25519KeyPair> = LazyLock::new(|| {
    Ed25519KeyPair::from_seed_and_public_key(&b64d(ED_D), &b64d(ED_X)).expect("fixture Ed25519 key")
});

/// Decodes base64url accepting padding and non-zero trailing bits, to compare
/// with what the strict decoder accepted.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// `peek` on arbitrary bytes taken as a string.
///
/// Invariants: a peeked token has three parts, fits the default size limit, and
/// is accepted by `peek_with_limit` at exactly its own length but not one byte
/// less; every part is canonical base64url (re-encoding what a lenient decoder
/// reads gives back the same text); `unverified_issuer` agrees with the claims;
/// an error message never contains the input.
pub fn check_peek(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    match peek(token) {
        Ok(peeked) => {
            assert!(token.len() <= DEFAULT_MAX_TOKEN_BYTES);
            let parts: Vec<&str> = token.split('.').collect();
            assert_eq!(parts.len(), 3);
            for part in parts {
                let bytes = LENIENT.decode(part).expect("strictly valid is leniently valid");
                assert_eq!(URL_SAFE_NO_PAD.encode(bytes), part, "non-canonical part accepted");
            }
            assert!(peek_with_limit(token, token.len()).is_ok());
            assert_eq!(
                peek_with_limit(token, token.len() - 1).expect_err("one byte over the limit"),
                PeekError::TooLarge { max: token.len() - 1 }
            );
            assert_eq!(
                peeked.unverified_issuer(),
                peeked.unverified_claims().get("iss").and_then(Value::as_str)
            );
        }
        Err(err) => {
            // No message contains a '.', so an input with one is never echoed
            // verbatim unless a message leaks token text.
            let msg = err.to_string();
            if token.contains('.') {
                assert!(!msg.contains(token), "error message echoes the token: {msg}");
            }
        }
    }
}

/// `KeySet::from_jwks_json` on arbitrary bytes.
///
/// Invariants: at most `MAX_KEYS` keys plus skipped keys; usable kids are unique;
/// the same document parsed leniently by serde_json gives the same set through
/// `from_jwks_value`; no key verifies an algorithm it does not support; no key
/// panics verifying arbitrary bytes with any algorithm.
pub fn check_jwks(data: &[u8]) {
    let Ok(set) = KeySet::from_jwks_json(data) else {
        return;
    };
    assert!(set.len() + set.skipped().len() <= MAX_KEYS);
    let mut kids = HashSet::new();
    for kid in set.kids().flatten() {
        assert!(kids.insert(kid), "duplicate usable kid");
    }
    let value: Value = serde_json::from_slice(data).expect("strict JSON is JSON");
    let again = KeySet::from_jwks_value(&value).expect("same document");
    assert_eq!(again.len(), set.len());
    assert_eq!(again.skipped(), set.skipped());
    for key in set.iter() {
        for alg in Algorithm::ALL {
            let verified = key.verify_signature(alg, data, data);
            assert!(
                !verified || key.supports(alg),
                "{alg} verified by a key that does not support it"
            );
        }
    }
}

/// Builds a token from `header` and `payload` (split at the first NUL of `rest`)
/// and signs it with one of the fixture keys, so claims checks can be fuzzed.
fn signed_token(rest: &[u8], sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let (header, payload) = match rest.iter().position(|&b| b == 0) {
        Some(nul) => (&rest[..nul], &rest[nul + 1..]),
        None => (rest, &[][..]),
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// `peek` then `verify` against [`KEYS`] and [`POLICY`] at [`NOW`].
///
/// Input format: a first byte `e` or `c` means "sign the rest with the fixture's
/// Ed25519 (`e`) or P-256 (`c`) private key": the rest is `header JSON, NUL,
/// payload JSON`. Any other input is taken as the token text itself.
///
/// Invariants: a token not signed here never verifies (that would be a forgery);
/// a verified token satisfies every policy check (issuer, audience, expiry with
/// skew, `nbf`, `iat`, lifetime, allowed algorithm, no `crit`, non-empty `sub`);
/// flipping one bit of a verified token's signature makes it fail with
/// `BadSignature`. Returns what `verify` said, or `None` if `peek` refused.
pub fn check_verify(data: &[u8]) -> Option<Result<VerifiedToken, VerifyError>> {
    let (token, signed_here) = match data.split_first() {
        Some((b'e', rest)) => (signed_token(rest, |m| ED_SIGNER.sign(m).as_ref().to_vec()), true),
        Some((b'c', rest)) => (
            signed_token(rest, |m| {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                EC_SIGNER.sign(&rng, m).expect("ES256 sign").as_ref().to_vec()
            }),
            true,
        ),
        _ => (std::str::from_utf8(data).ok()?.to_owned(), false),
    };
    let peeked = peek(&token).ok()?;
    let result = verify(&peeked, &POLICY, &KEYS, NOW);
    match &result {
        Ok(v) => {
            assert!(signed_here, "a token verified without the fixture private keys");
            assert_eq!(v.issuer, ISSUER);
            assert!(!v.subject.is_empty());
            assert!(v.audiences.iter().any(|aud| aud == AUDIENCE));
            assert!(NOW <= v.expires_at.saturating_add(CLOCK_SKEW));
            assert!(v.not_before.is_none_or(|nbf| nbf <= NOW + CLOCK_SKEW));
            assert!(v.issued_at.is_none_or(|iat| iat <= NOW + CLOCK_SKEW));
            let start = v.issued_at.or(v.not_before).unwrap_or(NOW);
            assert!(v.expires_at.saturating_sub(start) <= MAX_LIFETIME);
            let alg: Algorithm = v.header.alg.parse().expect("verified alg is supported");
            assert!(POLICY.algorithms.contains(&alg));
            assert!(v.header.crit.is_none());

            let (signing_input, sig) = token.rsplit_once('.').expect("three parts");
            let mut sig = URL_SAFE_NO_PAD.decode(sig).expect("signature base64");
            sig[0] ^= 1;
            let tampered = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&sig));
            let tampered = peek(&tampered).expect("only the signature changed");
            assert_eq!(
                verify(&tampered, &POLICY, &KEYS, NOW).expect_err("tampered signature"),
                VerifyError::BadSignature
            );
        }
        Err(err) => {
            let _ = (err.to_string(), err.needs_key_refresh());
        }
    }
    Some(result)
}

/// The broker's token-request form parser on arbitrary bytes: never panics; a
/// request it accepts names at least one target; an error is one of the RFC codes.
pub fn check_token_form(data: &[u8]) {
    match broker::exchange::check_token_form(data) {
        Ok(targets) => assert!(targets >= 1, "an accepted request has a target"),
        Err(code) => assert!(
            matches!(code, "invalid_request" | "unsupported_grant_type"),
            "unexpected error code {code}"
        ),
    }
}

/// Rule loading on arbitrary text: the YAML rule-file parser, then the compiler,
/// as `fedbroker check` runs them. Never panics; every error carries a message; a file
/// read one rule at a time gives what its whole tree gives (rules, lines, errors).
pub fn check_rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("fuzz.yaml");
    let (rules, errors) = broker::config::parse_rules_file(path, text);
    for e in &errors {
        assert!(!e.message.is_empty(), "an error without a message: {e:?}");
    }
    // Read one rule at a time or through the file's tree: the same rules, at the same
    // lines, with the same errors.
    let summary =
        |rules: &[broker::config::SourcedRule]| -> Vec<(serde_json::Value, (Option<u32>, Option<usize>))> {
            rules
                .iter()
                .map(|r| (serde_json::to_value(&r.rule).unwrap_or_default(), r.position()))
                .collect()
        };
    let (whole, whole_errors) = broker::config::parse_rules_file_whole(path, text);
    assert_eq!(summary(&rules), summary(&whole), "rules read two ways differ");
    assert_eq!(errors, whole_errors, "errors read two ways differ");
    let raws: Vec<_> = rules.into_iter().map(|r| r.rule).collect();
    let known = |name: &str| matches!(name, "gha" | "k8s" | "agents");
    let ctx = federation_rules::CompileContext {
        issuers: &known,
        max_lifetime: 3600,
    };
    if let Err(errors) = federation_rules::RuleSet::compile(raws, &ctx) {
        for e in &errors {
            assert!(!e.message.is_empty(), "a rule error without a message: {e:?}");
        }
    }
}

/// The `aws4_request` subject-token parser (a signed GetCallerIdentity request as
/// URL-encoded JSON) and the STS answer parser on arbitrary text: never panic; an
/// accepted request carries the server ID header, at most `MAX_HEADERS` headers and a
/// 64-hex-digit replay ID, and parses the same, to the same replay ID, once
/// URL-encoded; an accepted STS answer's claims name its ARN as `sub`.
pub fn check_aws4_request(data: &[u8]) {
    use issuers::aws_iam::{self, MAX_HEADERS, SERVER_ID_HEADER};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = aws_iam::parse_signed_request(text) {
        assert_eq!(request.header(SERVER_ID_HEADER), Some(request.server_id.as_str()));
        assert!(request.headers.len() <= MAX_HEADERS);
        let id = request.replay_id();
        assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        let _ = request.is_fresh(NOW);
        if text.starts_with('{') {
            let encoded: String = text
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let again = aws_iam::parse_signed_request(&encoded).expect("the URL-encoded form parses too");
            assert_eq!(again.replay_id(), id);
        }
    }
    if let Ok(identity) = aws_iam::parse_caller_identity(text) {
        let claims = identity.claims("aws-iam:fuzz");
        assert_eq!(claims.get("sub"), claims.get("arn"));
        assert_eq!(identity.account.len(), 12);
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;

    /// Every file under `seeds/<target>/` and `regressions/<target>/`.
    fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("dir entry").path();
                out.push((path.display().to_string(), fs::read(&path).expect("read input")));
            }
        }
        out.sort();
        out
    }

    /// Runs `check` (which panics on a broken invariant) on every input of `target`,
    /// of which there must be some.
    fn check_all(target: &str, check: fn(&[u8])) {
        let all = inputs(target);
        assert!(!all.is_empty(), "no inputs for {target}");
        for (_, data) in all {
            check(&data);
        }
    }

    #[test]
    fn peek_inputs() {
        check_all("peek", check_peek);
    }

    #[test]
    fn jwks_inputs() {
        check_all("jwks", check_jwks);
    }

    /// Seeds named `ok-*` must verify, so the signing mode and the fixtures
    /// really reach the claims checks; every other input must not.
    #[test]
    fn verify_inputs() {
        let all = inputs("verify");
        assert!(all.iter().any(|(name, _)| name.contains("/ok-")));
        for (name, data) in all {
            let result = check_verify(&data);
            let ok = matches!(result, Some(Ok(_)));
            assert_eq!(ok, name.contains("/ok-"), "{name}: {result:?}");
        }
    }

    #[test]
    fn token_form_inputs() {
        check_all("token_form", check_token_form);
    }

    #[test]
    fn aws4_request_inputs() {
        check_all("aws4_request", check_aws4_request);
    }

    /// The seeds named `ok-*` are accepted requests or STS answers, so the fuzzer
    /// starts past the parsers' first checks.
    #[test]
    fn aws4_request_ok_seeds_are_accepted() {
        for (name, data) in inputs("aws4_request") {
            let text = String::from_utf8(data).expect("UTF-8 seed");
            let accepted = issuers::aws_iam::parse_signed_request(&text).is_ok()
                || issuers::aws_iam::parse_caller_identity(&text).is_ok();
            assert_eq!(accepted, name.contains("/ok-"), "{name}");
        }
    }

    #[test]
    fn rules_inputs() {
        check_all("rules", check_rules);
    }

    #[test]
    fn fixture_jwks_loads() {
        assert_eq!(KEYS.len(), 3);
        let _ = (&*EC_SIGNER, &*ED_SIGNER);
    }
}
