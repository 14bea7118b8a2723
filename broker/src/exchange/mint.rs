//! Minting: the issued token's claims (contract §4), signed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use federation_rules::Grant;
use serde_json::{Map, Value, json};

use super::TokenError;
use super::form::TokenType;
use crate::signing::Signer;

/// Sign `claims`, on the request's own task: one signature (RS256 about 0.4 ms, ES256
/// and EdDSA far less) is shorter than what a hand-off to the blocking pool costs in
/// wake-ups under load (docs/performance.md). With `signing.kms` the task waits for the
/// key management service instead.
pub(super) async fn sign(
    signer: &Signer,
    requested: TokenType,
    claims: &Value,
) -> Result<String, TokenError> {
    signer
        .sign(requested.typ(), claims)
        .await
        .map_err(TokenError::Signing)
}

/// A random `jti`; `now` (seconds) is its fallback entropy.
pub(super) fn random_jti(now: u64) -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // aws-lc's RNG does not fail in practice; fall back to the clock and a counter.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes[8..].copy_from_slice(&now.to_le_bytes());
    }
    B64.encode(bytes)
}

/// The claim of every issued token that names the issuer (its registered `name`) of the
/// subject token it was exchanged for.
pub const SOURCE_ISSUER_CLAIM: &str = "source_issuer";

/// The issued token's claims (contract §4). Pure: `explain` shows the same claims.
///
/// `cnf` is the sender constraint (RFC 7800: `jkt` for DPoP, `x5t#S256` for mTLS), or
/// `None` for a bearer token.
///
/// `source_issuer` is the registered `name` of the issuer that verified the subject
/// token; it is set before the rule's claims, which can never replace it (nor any other
/// claim set here), so tokens from different issuers stay distinguishable downstream.
#[allow(clippy::too_many_arguments)]
pub fn issued_claims(
    public_url: &str,
    max_lifetime: u64,
    grant: &Grant,
    source_issuer: &str,
    subject: &Map<String, Value>,
    actor: Option<(&str, &str)>,
    cnf: Option<&Value>,
    jti: &str,
    now: u64,
) -> Value {
    let lifetime = grant.lifetime.min(max_lifetime);
    let mut c = Map::new();
    c.insert("iss".into(), Value::String(public_url.to_string()));
    c.insert("sub".into(), Value::String(grant.subject.clone()));
    let aud = match grant.audience.as_slice() {
        [one] => Value::String(one.clone()),
        many => json!(many),
    };
    c.insert("aud".into(), aud);
    c.insert("iat".into(), json!(now));
    c.insert("nbf".into(), json!(now));
    c.insert("exp".into(), json!(now + lifetime));
    c.insert("jti".into(), Value::String(jti.to_string()));
    if !grant.scopes.is_empty() {
        c.insert("scope".into(), Value::String(grant.scopes.join(" ")));
    }
    c.insert(
        SOURCE_ISSUER_CLAIM.into(),
        Value::String(source_issuer.to_string()),
    );
    // RFC 7800 confirmation: set before the rule's claims, which cannot name it.
    if let Some(cnf) = cnf {
        c.insert("cnf".into(), cnf.clone());
    }
    for (k, v) in &grant.claims {
        c.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if let Some((actor_sub, actor_iss)) = actor {
        let mut act = Map::new();
        act.insert("sub".into(), Value::String(actor_sub.to_string()));
        act.insert("iss".into(), Value::String(actor_iss.to_string()));
        // RFC 8693 §4.1: prior actors of the subject token nest inside the current one.
        if let Some(prior) = subject.get("act").filter(|v| v.is_object()) {
            act.insert("act".into(), prior.clone());
        }
        c.insert("act".into(), Value::Object(act));
    }
    Value::Object(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_issuer_is_set_and_rule_claims_cannot_replace_it() {
        let mut claims = Map::new();
        claims.insert("source_issuer".into(), json!("forged"));
        claims.insert("team".into(), json!("x"));
        let grant = Grant {
            rule: "r".into(),
            audience: vec!["t".into()],
            subject: "s".into(),
            lifetime: 60,
            scopes: vec![],
            claims,
            credentials: None,
        };
        let c = issued_claims(
            "https://b",
            3600,
            &grant,
            "prod-cluster",
            &Map::new(),
            None,
            Some(&json!({"jkt": "t"})),
            "j",
            10,
        );
        assert_eq!(c[SOURCE_ISSUER_CLAIM], "prod-cluster");
        assert_eq!(c["team"], "x");
        assert_eq!(c["exp"], 70);
        assert_eq!(c["cnf"], json!({"jkt": "t"}));
    }
}
