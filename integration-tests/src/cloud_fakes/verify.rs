//! How the cloud fakes verify a presented JWT: the configured issuer's OIDC discovery
//! document fetched over HTTP, its `jwks_uri` fetched over HTTP (on every exchange:
//! no cache, so a rotation or an outage of the issuer shows at once), the key named
//! by the header's `kid`, and the signature checked with jsonwebtoken's verifier.
//!
//! Only the signature and the key lookup live here; each fake checks the claims
//! itself, in its cloud's order and with its cloud's error texts.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Value, json};

/// What a cloud demands of the issuer's keys.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyPolicy {
    /// Signature algorithms accepted in the header.
    pub algorithms: &'static [Algorithm],
    /// Read only the first this many keys of the JWKS (Entra: 100).
    pub max_keys: Option<usize>,
    /// Skip keys whose `use` is present and not `sig` (Entra).
    pub skip_non_sig_use: bool,
    /// When set, a key with a member outside this list is refused (Google:
    /// kty/alg/use/kid/n/e/x/y/crv).
    pub allowed_members: Option<&'static [&'static str]>,
}

/// Why a token did not verify. The texts never contain the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VerifyError {
    /// Not three base64url parts with a JSON header and claims.
    Malformed(String),
    /// The header has no `kid`.
    NoKid,
    /// The header's `alg` is not accepted.
    Algorithm(String),
    /// Discovery or JWKS could not be fetched or read.
    KeysUnavailable(String),
    /// No usable key with this kid (among those read).
    KidNotFound(String),
    /// The key exists but has members the cloud refuses.
    KeyMembers(String),
    /// The signature does not verify under the key.
    Signature,
}

/// Header and claims of a compact JWT without verifying anything; `None` when it is
/// not one.
pub(crate) fn decode_parts(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (h, c, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = |part: &str| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
        let value: Value = serde_json::from_slice(&bytes).ok()?;
        value.is_object().then_some(value)
    };
    Some((json(h)?, json(c)?))
}

/// What a fake records in place of a raw token: its decoded header and claims (never
/// the signature, so the record cannot be replayed).
pub(crate) fn redacted(token: &str) -> Value {
    match decode_parts(token) {
        Some((header, claims)) => json!({"header": header, "claims": claims}),
        None => json!({"undecodable_token_bytes": token.len()}),
    }
}

/// An HTTP client for key fetches: no proxy, no redirects, short timeouts; trusting
/// only the CA in `ca_file` when one is given (an issuer over HTTPS with a test CA).
pub(crate) fn key_client(ca_file: Option<&Path>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .unwrap_or_else(|e| panic!("{} is not PEM certificates: {e}", path.display()));
        builder = builder.tls_certs_only(certs);
    }
    builder.build().expect("HTTP client for key fetches")
}

/// Verify `token`'s signature with the keys of `issuer` (the configured issuer, not
/// the token's own `iss`), fetched through `{issuer}/.well-known/openid-configuration`.
/// Returns the header and claims.
pub(crate) async fn verify_signature(
    client: &reqwest::Client,
    token: &str,
    issuer: &str,
    policy: KeyPolicy,
) -> Result<(Value, Value), VerifyError> {
    let (header, claims) = decode_parts(token)
        .ok_or_else(|| VerifyError::Malformed("not a compact JWS with JSON parts".into()))?;
    let alg_name = header["alg"].as_str().unwrap_or_default().to_owned();
    let alg = policy
        .algorithms
        .iter()
        .copied()
        .find(|a| format!("{a:?}") == alg_name)
        .ok_or_else(|| VerifyError::Algorithm(alg_name.clone()))?;
    let kid = header["kid"]
        .as_str()
        .filter(|k| !k.is_empty())
        .ok_or(VerifyError::NoKid)?
        .to_owned();

    let mut keys = fetch_keys(client, issuer).await?;
    if let Some(max) = policy.max_keys {
        keys.truncate(max);
    }
    let key = keys
        .into_iter()
        .filter(|k| k["kid"].as_str() == Some(kid.as_str()))
        .filter(|k| !policy.skip_non_sig_use || k.get("use").is_none_or(|u| u == "sig"))
        .find(|k| key_fits(k, alg))
        .ok_or_else(|| VerifyError::KidNotFound(kid.clone()))?;
    if let Some(allowed) = policy.allowed_members
        && let Some(extra) = key
            .as_object()
            .and_then(|o| o.keys().find(|m| !allowed.contains(&m.as_str())))
    {
        return Err(VerifyError::KeyMembers(format!("key {kid} has member {extra:?}")));
    }
    let jwk: Jwk = serde_json::from_value(key)
        .map_err(|e| VerifyError::KeysUnavailable(format!("key {kid} is not a JWK: {e}")))?;
    let decoding = DecodingKey::from_jwk(&jwk)
        .map_err(|e| VerifyError::KeysUnavailable(format!("key {kid} unusable: {e}")))?;
    let (input, signature) = token.rsplit_once('.').expect("three parts checked");
    match jsonwebtoken::crypto::verify(signature, input.as_bytes(), &decoding, alg) {
        Ok(true) => Ok((header, claims)),
        _ => Err(VerifyError::Signature),
    }
}

/// A key can verify `alg` when its `kty` (and curve) fit and its own `alg`, if any, is `alg`.
fn key_fits(key: &Value, alg: Algorithm) -> bool {
    let name = format!("{alg:?}");
    if key.get("alg").is_some_and(|a| a != name.as_str()) {
        return false;
    }
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => key["kty"] == "RSA",
        Algorithm::ES256 => key["kty"] == "EC" && key["crv"] == "P-256",
        Algorithm::ES384 => key["kty"] == "EC" && key["crv"] == "P-384",
        _ => false,
    }
}

/// The `keys` array of `issuer`'s JWKS, through its discovery document.
async fn fetch_keys(client: &reqwest::Client, issuer: &str) -> Result<Vec<Value>, VerifyError> {
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let discovery = get_json(client, &discovery_url).await?;
    if discovery["issuer"].as_str() != Some(issuer) {
        return Err(VerifyError::KeysUnavailable(format!(
            "discovery names issuer {} instead of {issuer}",
            discovery["issuer"]
        )));
    }
    let jwks_uri = discovery["jwks_uri"]
        .as_str()
        .ok_or_else(|| VerifyError::KeysUnavailable("discovery has no jwks_uri".into()))?
        .to_owned();
    let jwks = get_json(client, &jwks_uri).await?;
    match jwks.get("keys") {
        Some(Value::Array(keys)) => Ok(keys.clone()),
        _ => Err(VerifyError::KeysUnavailable(format!(
            "{jwks_uri} has no keys array"
        ))),
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, VerifyError> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| VerifyError::KeysUnavailable(format!("GET {url}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(VerifyError::KeysUnavailable(format!("GET {url}: HTTP {status}")));
    }
    response
        .json()
        .await
        .map_err(|e| VerifyError::KeysUnavailable(format!("GET {url}: not JSON: {e}")))
}
