//! Pre-minted subject tokens, each already wrapped in its RFC 8693 form body.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;

use crate::crypto::{Alg, SigningKey};
use crate::setup::{ISSUER_AUDIENCE, TARGET, issuer_url, subject};

pub struct Plan<'a> {
    pub count: usize,
    pub issuers: usize,
    pub rules: usize,
    pub alg: Alg,
    pub keys: &'a [SigningKey],
    pub threads: usize,
    /// Seconds the tokens stay valid.
    pub lifetime: u64,
}

/// Token j matches rule j % rules, of issuer (j % rules) % issuers.
pub fn mint(plan: &Plan<'_>) -> Result<Vec<String>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // Distinct across runs too (a Redis left over from another run still refuses nothing).
    let run = format!("{:x}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos());
    let threads = plan.threads.clamp(1, plan.count.max(1));
    let chunk = plan.count.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let run = &run;
                s.spawn(move || -> Result<Vec<String>> {
                    let range = (t * chunk)..((t + 1) * chunk).min(plan.count);
                    range.map(|j| one(plan, j, now, run)).collect()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(plan.count);
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow!("a minting thread panicked"))??);
        }
        Ok(all)
    })
}

fn one(plan: &Plan<'_>, j: usize, now: u64, run: &str) -> Result<String> {
    let rule = j % plan.rules;
    let issuer = rule % plan.issuers;
    let key = &plan.keys[issuer % plan.keys.len()];
    let header = json!({"alg": plan.alg.as_str(), "typ": "JWT", "kid": format!("k{issuer}")});
    let claims = json!({
        "iss": issuer_url(issuer),
        "sub": subject(rule),
        "aud": ISSUER_AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + plan.lifetime,
        "jti": format!("{run}-{j}"),
    });
    let mut token = B64.encode(header.to_string());
    token.push('.');
    token.push_str(&B64.encode(claims.to_string()));
    let sig = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&B64.encode(sig));
    Ok(form_body(&token))
}

/// The token is base64url and dots, which need no percent-encoding.
pub fn form_body(token: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
         &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt\
         &audience={}&subject_token={token}",
        TARGET
    )
}
