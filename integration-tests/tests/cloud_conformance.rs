//! Conformance with each cloud's documented demands on an OIDC issuer it trusts (issue 12
//! §3): the broker's discovery document, JWKS and issued tokens, checked against each
//! list, for both signing algorithms the clouds take.
//!
//! - AWS IAM OIDC providers: <https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_providers_create_oidc.html>
//!   (an https issuer equal to `iss`, discovery and JWKS under it, at most 100 keys, RSA
//!   or EC) and session tags (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_session-tags.html>:
//!   at most 50, keys ≤ 128 and values ≤ 256 characters).
//! - Google workload identity federation: <https://cloud.google.com/iam/docs/workload-identity-federation-with-other-providers>
//!   (`google.subject` ≤ 127 bytes, `iat` in the past, `exp` within 48 hours of `iat`
//!   (we hold it to 24), keys with only kty/alg/use/kid/n/e/x/y/crv).
//! - Entra federated identity credentials: <https://learn.microsoft.com/entra/workload-id/workload-identity-federation>
//!   (`iss` and `sub` matched exactly, audience `api://AzureADTokenExchange`, RS256,
//!   only the first 100 keys read, `use: sig`).
//!
//! That the broker's public URL is served over a publicly trusted certificate is the
//! operator's part (TLS is terminated in front of it, docs/operations.md).

use integration_tests::tokens::{decode_unverified, verify_issued};
use integration_tests::{BrokerConfig, FakeIssuer, InProcess};
use serde_json::{Value, json};

use crate::support::{ISSUER_NAME, TARGET, subject_rule};

const PUBLIC_URL: &str = "https://broker.example.com";
const JWK_MEMBERS: [&str; 9] = ["kty", "alg", "use", "kid", "n", "e", "x", "y", "crv"];

/// A broker in process at [`PUBLIC_URL`], signing with `alg`, with one rule whose
/// `issue` block is `issue`.
async fn broker(fake: &FakeIssuer, alg: &str, issue: &str) -> InProcess {
    let yaml = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .signing_algorithm(alg)
        .server("max_issued_lifetime: 12h")
        .rules(subject_rule("cloud", &format!("audiences: [{TARGET}]"), issue))
        .render()
        .replace(
            "public_url: http://127.0.0.1:@PORT@",
            &format!("public_url: {PUBLIC_URL}"),
        );
    InProcess::start(&yaml).await
}

/// The discovery document, the JWKS, and an issued token's header and claims.
async fn published(broker: &InProcess, fake: &FakeIssuer) -> (Value, Value, Value, Value) {
    let discovery = broker.get("/.well-known/openid-configuration").await.json;
    let jwks = broker.get("/jwks.json").await.json;
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    let token = reply.access_token().to_owned();
    let (header, claims) = decode_unverified(&token);
    let audience = claims["aud"].as_str().unwrap_or(TARGET).to_owned();
    verify_issued(broker, &token, &[&audience]).await;
    (discovery, jwks, header, claims)
}

fn keys(jwks: &Value) -> &Vec<Value> {
    jwks["keys"].as_array().expect("a keys array")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_iam_oidc_provider_requirements() {
    let fake = FakeIssuer::start();
    let tags = "claims:\n  https://aws.amazon.com/tags:\n    principal_tags:\n      subject: [\"{sub}\"]\n    transitive_tag_keys: [subject]\n";
    for alg in ["RS256", "ES256"] {
        let broker = broker(&fake, alg, tags).await;
        let (discovery, jwks, header, claims) = published(&broker, &fake).await;
        assert_eq!(discovery["issuer"], PUBLIC_URL, "https issuer");
        assert_eq!(claims["iss"], discovery["issuer"], "iss equals the issuer");
        assert!(
            discovery["jwks_uri"]
                .as_str()
                .is_some_and(|u| u.starts_with(&format!("{PUBLIC_URL}/"))),
            "{discovery}"
        );
        let keys = keys(&jwks);
        assert!(!keys.is_empty() && keys.len() <= 100, "{} keys", keys.len());
        assert!(
            keys.iter().all(|k| k["kty"] == "RSA" || k["kty"] == "EC"),
            "{jwks}"
        );
        assert!(
            keys.iter().any(|k| k["kid"] == header["kid"]),
            "the signing key is published"
        );
        for name in ["sub", "aud", "exp", "iat"] {
            assert!(claims.get(name).is_some(), "{name}: {claims}");
        }
        let principal = claims["https://aws.amazon.com/tags"]["principal_tags"]
            .as_object()
            .expect("principal_tags");
        assert!(principal.len() <= 50);
        for (key, value) in principal {
            assert!(key.chars().count() <= 128);
            let value = value[0].as_str().expect("one string per tag");
            assert!(value.chars().count() <= 256);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_workload_identity_federation_requirements() {
    let fake = FakeIssuer::start();
    for alg in ["RS256", "ES256"] {
        let broker = broker(&fake, alg, "lifetime: 12h\n").await;
        let (discovery, jwks, _, claims) = published(&broker, &fake).await;
        assert_eq!(claims["iss"], discovery["issuer"]);
        for key in keys(&jwks) {
            let members: Vec<&String> = key.as_object().expect("a JWK object").keys().collect();
            assert!(members.iter().all(|m| JWK_MEMBERS.contains(&m.as_str())), "{key}");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let (iat, exp) = (
            claims["iat"].as_i64().expect("iat"),
            claims["exp"].as_i64().expect("exp"),
        );
        assert!(iat <= now, "iat in the past");
        assert!(
            exp > iat && exp - iat <= 24 * 3600,
            "exp within 24 h of iat: {claims}"
        );
        assert!(claims["sub"].as_str().is_some_and(|s| s.len() <= 127), "{claims}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_federated_credential_requirements() {
    let fake = FakeIssuer::start();
    let broker = broker(&fake, "RS256", "audience: api://AzureADTokenExchange\n").await;
    let (discovery, jwks, header, claims) = published(&broker, &fake).await;
    // Exact strings: no trailing slash on one side only.
    assert_eq!(claims["iss"].as_str(), discovery["issuer"].as_str());
    assert_eq!(claims["iss"], PUBLIC_URL);
    assert!(claims["sub"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(claims["aud"], "api://AzureADTokenExchange");
    assert_eq!(header["alg"], "RS256");
    let keys = keys(&jwks);
    let position = keys
        .iter()
        .position(|k| k["kid"] == header["kid"])
        .expect("signing key");
    assert!(position < 100, "the signing key is among the first 100");
    assert!(keys.iter().all(|k| k["use"] == "sig"), "{jwks}");
}

/// An `azure` block under a signing algorithm Entra refuses does not load.
#[test]
fn an_azure_block_needs_rs256() {
    let fake = FakeIssuer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let issue = "credentials:\n  azure:\n    tenant_id: t\n    client_id: c\n    scope: https://management.azure.com/.default\n";
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .signing_algorithm("ES256")
        .rules(subject_rule("cloud", &format!("audiences: [{TARGET}]"), issue))
        .write_to(dir.path());
    let out = crate::support::check_in(dir.path(), &config, false);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.all().contains("Entra accepts only RS256"), "{}", out.all());
}
