//! DPoP at `POST /token` (RFC 9449): the `DPoP` header read under its limits, the proof
//! verified ([`issuers::dpop::verify_proof`]: every stateless check), and its `jti`
//! recorded once in the replay store.
//!
//! Choices (docs/security.md): `iat` within ±[`issuers::dpop::IAT_WINDOW_SECS`] (60 s) of the broker's
//! clock; `htu` compared with the token endpoint (`server.public_url` + `/token`) after
//! both are parsed as URLs (so scheme and host case, a default port and an empty path
//! do not matter) and the proof's query and fragment are dropped (§4.3); the replay key
//! is a SHA-256 of (thumbprint, `jti`), both fixed by the signature, never of the
//! signature itself. Server nonces (§8), when `server.dpop.nonce` asks for them, are
//! checked last, once everything else about the proof holds ([`super::nonce`]).

use axum::http::HeaderMap;
use issuers::dpop::{DpopError, DpopProof, MAX_PROOF_BYTES, ProofContext, verify_proof};

use super::nonce::{DpopNonces, NonceRefusal};

/// The request header that carries the proof.
pub const DPOP_HEADER: &str = "dpop";

/// Why a `DPoP` header was refused (the audit log's reason; the client is told
/// `invalid_dpop_proof` only).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DpopRefusal {
    #[error("more than one DPoP header")]
    Repeated,
    #[error("the DPoP header is longer than {MAX_PROOF_BYTES} bytes")]
    TooLarge,
    #[error("the DPoP header is not visible ASCII")]
    NotText,
    #[error("{0}")]
    Proof(DpopError),
    #[error("DPoP proof: jti has already been used")]
    Replayed,
    /// The proof holds, but not its server nonce: answered `use_dpop_nonce`.
    #[error("{0}")]
    Nonce(NonceRefusal),
}

/// The `DPoP` header's value: `None` when absent; refused when repeated, too long or not
/// text. Nothing is decoded here.
pub(super) fn proof_header(headers: &HeaderMap) -> Result<Option<String>, DpopRefusal> {
    let mut values = headers.get_all(DPOP_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(DpopRefusal::Repeated);
    }
    if value.len() > MAX_PROOF_BYTES {
        return Err(DpopRefusal::TooLarge);
    }
    let text = value.to_str().map_err(|_| DpopRefusal::NotText)?;
    Ok(Some(text.to_owned()))
}

/// Verifies `proof` for a `POST` to `public_url` + `/token` at `now`, and its nonce
/// when `nonces` requires one. The nonce is judged after every other check, so that a
/// proof refused for another reason is answered `invalid_dpop_proof`, not with a nonce
/// it could not use.
pub(super) fn verify(
    proof: &str,
    public_url: &str,
    now: u64,
    nonces: Option<&DpopNonces>,
) -> Result<DpopProof, DpopRefusal> {
    let endpoint = token_endpoint(public_url);
    let htu_matches = |htu: &str| endpoint.as_ref().is_some_and(|e| same_endpoint(e, htu));
    let ctx = ProofContext {
        method: "POST",
        htu_matches: &htu_matches,
        now,
    };
    let proof = verify_proof(proof, &ctx).map_err(DpopRefusal::Proof)?;
    if let Some(nonces) = nonces {
        nonces
            .check(proof.nonce.as_deref(), now)
            .map_err(DpopRefusal::Nonce)?;
    }
    Ok(proof)
}

/// The token endpoint's URL.
fn token_endpoint(public_url: &str) -> Option<url::Url> {
    url::Url::parse(&format!("{}/token", public_url.trim_end_matches('/'))).ok()
}

/// Whether `htu` names `endpoint`, ignoring its query and fragment (RFC 9449 §4.3).
fn same_endpoint(endpoint: &url::Url, htu: &str) -> bool {
    let Ok(mut htu) = url::Url::parse(htu) else {
        return false;
    };
    htu.set_query(None);
    htu.set_fragment(None);
    htu == *endpoint
}

/// The replay-store key of a proof: SHA-256 over its key's thumbprint and its `jti`,
/// hex. Both are covered by the signature, so a captured proof cannot be re-encoded
/// into another key (an ECDSA signature can be, which is why it is not used).
pub(super) fn replay_key(proof: &DpopProof) -> String {
    use aws_lc_rs::digest::{Context, SHA256};
    let mut ctx = Context::new(&SHA256);
    ctx.update(b"dpop\0");
    ctx.update(proof.jkt.as_bytes());
    ctx.update(b"\0");
    ctx.update(proof.jti.as_bytes());
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// When the mark of a proof's `jti` may expire: after the last second the proof is
/// accepted, plus [`crate::replay::MARK_MARGIN_SECS`].
pub(super) fn mark_expiry(proof: &DpopProof) -> u64 {
    proof.expires_at().saturating_add(crate::replay::MARK_MARGIN_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn htu_compares_as_a_url_without_query_and_fragment() {
        let endpoint = token_endpoint("https://Broker.example:443/").expect("url");
        for htu in [
            "https://broker.example/token",
            "https://BROKER.example:443/token",
            "https://broker.example/token?x=1",
            "https://broker.example/token#f",
        ] {
            assert!(same_endpoint(&endpoint, htu), "{htu}");
        }
        for htu in [
            "http://broker.example/token",
            "https://broker.example/token/",
            "https://broker.example:8443/token",
            "https://broker.example/other",
            "https://evil.example/token",
            "not a url",
        ] {
            assert!(!same_endpoint(&endpoint, htu), "{htu}");
        }
        let with_path = token_endpoint("https://b.example/fed").expect("url");
        assert!(same_endpoint(&with_path, "https://b.example/fed/token"));
    }

    #[test]
    fn the_header_is_read_once_and_bounded() {
        let mut h = HeaderMap::new();
        assert!(matches!(proof_header(&h), Ok(None)));
        h.insert(DPOP_HEADER, HeaderValue::from_static("a.b.c"));
        assert_eq!(proof_header(&h).ok().flatten().as_deref(), Some("a.b.c"));
        h.append(DPOP_HEADER, HeaderValue::from_static("d.e.f"));
        assert!(matches!(proof_header(&h), Err(DpopRefusal::Repeated)));
        let mut h = HeaderMap::new();
        let long = "a".repeat(MAX_PROOF_BYTES + 1);
        h.insert(DPOP_HEADER, HeaderValue::from_str(&long).expect("value"));
        assert!(matches!(proof_header(&h), Err(DpopRefusal::TooLarge)));
    }

    #[test]
    fn the_replay_key_depends_on_thumbprint_and_jti_only() {
        let proof = |jkt: &str, jti: &str, iat: u64| DpopProof {
            jkt: jkt.into(),
            jti: jti.into(),
            iat,
            alg: issuers::Algorithm::ES256,
            nonce: None,
        };
        assert_eq!(replay_key(&proof("k", "j", 1)), replay_key(&proof("k", "j", 2)));
        assert_ne!(replay_key(&proof("k", "j", 1)), replay_key(&proof("k2", "j", 1)));
        assert_ne!(replay_key(&proof("k", "j", 1)), replay_key(&proof("k", "j2", 1)));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(replay_key(&proof("ab", "c", 1)), replay_key(&proof("a", "bc", 1)));
        assert_eq!(replay_key(&proof("k", "j", 1)).len(), 64);
        assert_eq!(
            mark_expiry(&proof("k", "j", 100)),
            100 + issuers::dpop::IAT_WINDOW_SECS + crate::replay::MARK_MARGIN_SECS
        );
    }
}
