//! The support library checks itself: a broken fake issuer would make every
//! other failure meaningless.

use integration_tests::fake_issuer::{DEFAULT_AUDIENCE, DEFAULT_SUBJECT};
use integration_tests::tokens::decode_unverified;
use integration_tests::{FakeIssuer, KeyKind, dedent};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Value, json};

async fn fetch(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn verify_against(jwks: &Value, token: &str, issuer: &str) -> Value {
    let set: JwkSet = serde_json::from_value(jwks.clone()).expect("JWKS parses");
    let header = jsonwebtoken::decode_header(token).expect("header");
    let jwk = set
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid published");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[DEFAULT_AUDIENCE]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).expect("key"), &validation)
        .expect("fake token verifies")
        .claims
}

#[tokio::test]
async fn fake_issuer_tokens_verify_against_its_published_jwks() {
    for kind in [KeyKind::Rsa, KeyKind::Ec] {
        let fake = FakeIssuer::start_with(kind);
        let (status, discovery) = fetch(&format!("{}/.well-known/openid-configuration", fake.issuer())).await;
        assert_eq!(status, 200);
        let discovery: Value = serde_json::from_str(&discovery).expect("discovery JSON");
        assert_eq!(discovery["issuer"], fake.issuer());
        assert!(discovery.get("authorization_endpoint").is_none());
        let (status, jwks) = fetch(discovery["jwks_uri"].as_str().expect("jwks_uri")).await;
        assert_eq!(status, 200);
        let jwks: Value = serde_json::from_str(&jwks).expect("JWKS JSON");
        let claims = verify_against(
            &jwks,
            &fake.mint(json!({"repository": "acme/api"})),
            fake.issuer(),
        );
        assert_eq!(claims["sub"], DEFAULT_SUBJECT);
        assert_eq!(claims["repository"], "acme/api");
        assert!(claims["jti"].is_string() && claims["iat"].is_i64());
        assert_eq!(fake.key_fetches(), (1, 1));
    }
}

#[tokio::test]
async fn fake_issuer_rotates_fails_and_stops_on_demand() {
    let fake = FakeIssuer::start();
    let old = fake.current_key().kid.clone();
    let new = fake.rotate(false);
    assert_ne!(old, new);
    let kids: Vec<Value> = fake.jwks()["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(kids, vec![json!(old), json!(new)]);
    let (header, _) = decode_unverified(&fake.mint(json!({})));
    assert_eq!(header["kid"], new);
    fake.rotate(true);
    assert_eq!(fake.jwks()["keys"].as_array().map(Vec::len), Some(1));

    let (header, claims) = decode_unverified(&fake.mint_with_header(
        json!({"kid": "other", "typ": null}),
        json!({"jti": null, "aud": ["a", "b"]}),
    ));
    assert_eq!(header["kid"], "other");
    assert!(header.get("typ").is_none() && claims.get("jti").is_none());
    assert_eq!(claims["aud"], json!(["a", "b"]));

    fake.set_outage(true);
    assert_eq!(fetch(&fake.jwks_uri()).await.0, 503);
    assert_eq!(fake.jwks_requests(), 1, "outage requests are counted too");
    fake.set_outage(false);
    assert_eq!(fetch(&fake.jwks_uri()).await.0, 200);
    fake.stop();
    assert!(
        reqwest::get(fake.jwks_uri()).await.is_err(),
        "a stopped issuer refuses connections"
    );
}

#[test]
fn dedent_strips_common_indentation() {
    let text = "\n    - a: 1\n      b: 2\n\n    - c: 3\n";
    assert_eq!(dedent(text), "- a: 1\n  b: 2\n\n- c: 3\n");
}

#[test]
fn issuer_yaml_lets_extra_keys_replace_defaults() {
    let fake = FakeIssuer::start();
    let yaml = fake.issuer_yaml_with("x", "algorithms: [RS512]\nreplay: reusable");
    assert!(
        yaml.contains("  algorithms: [RS512]\n") && !yaml.contains("RS256"),
        "{yaml}"
    );
    assert!(yaml.contains("  replay: reusable\n") && yaml.contains("danger_allow_insecure: true"));
}
