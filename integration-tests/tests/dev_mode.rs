//! `fedbroker serve --dev`: the quick start, end to end, with no config file.

use std::time::Duration;

use integration_tests::tokens::{TOKEN_TYPE_JWT, decode_unverified, now, verify_issued};
use integration_tests::{Broker, run_cli_with_timeout};
use serde_json::{Value, json};

use crate::support::assert_exchanges_once;

async fn dev_token(broker: &Broker, claims: Value) -> String {
    let response = broker
        .client()
        .post(broker.endpoint("/dev/issuer/token"))
        .json(&claims)
        .send()
        .await
        .expect("POST /dev/issuer/token");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON answer");
    body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_mints_exchanges_and_verifies_end_to_end() {
    let broker = Broker::start_dev().await;
    let subject_token = dev_token(&broker, json!({"sub": "me"})).await;

    let reply = broker.exchange(&subject_token, "example-target").await;

    let (_, claims) = verify_issued(&broker, reply.access_token(), &["example-target"]).await;
    assert_eq!(claims["iss"], broker.url());
    assert_eq!(claims["aud"], "example-target");
    assert_eq!(reply.json["issued_token_type"], TOKEN_TYPE_JWT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_issuer_fills_registered_claims() {
    let broker = Broker::start_dev().await;
    assert_eq!(broker.url(), format!("http://127.0.0.1:{}", broker.port()));

    let token = dev_token(&broker, json!({"sub": "me", "team": "payments"})).await;

    let (header, claims) = decode_unverified(&token);
    assert!(header["kid"].is_string(), "{header}");
    assert_eq!(claims["iss"], format!("{}/dev/issuer", broker.url()));
    assert_eq!(claims["sub"], "me");
    assert_eq!(claims["team"], "payments");
    assert!(claims["aud"].is_string() || claims["aud"].is_array(), "{claims}");
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert!((iat - now()).abs() < 120 && exp > iat, "{claims}");
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()), "{claims}");
    // The dev issuer's tokens are one-time like any other issuer's.
    assert_exchanges_once(&broker, &token, "example-target").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_denies_other_targets() {
    let broker = Broker::start_dev().await;
    let token = dev_token(&broker, json!({"sub": "me"})).await;
    broker
        .exchange_refused(&token, "production-database", 400, "invalid_target")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_serves_discovery_under_its_listen_address() {
    let broker = Broker::start_dev().await;
    let discovery = broker.get("/.well-known/openid-configuration").await;
    assert_eq!(discovery.status, 200, "{}", discovery.text);
    assert_eq!(discovery.json["issuer"], broker.url());
    assert_eq!(
        discovery.json["token_endpoint"],
        format!("{}/token", broker.url())
    );
}

#[test]
fn dev_mode_refuses_a_non_loopback_listen_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = integration_tests::broker::free_port();
    for listen in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
        let out = run_cli_with_timeout(
            dir.path(),
            &["serve", "--dev", "--listen", &listen],
            &[],
            Duration::from_secs(20),
        );
        assert!(
            matches!(out.code, Some(code) if code != 0),
            "serve --dev --listen {listen} must exit non-zero (None: still running after 20 s): {out:?}"
        );
    }
}
