//! Observability through the real binary: `X-Request-Id` on every answer (the caller's
//! when sane), the same id and the replica in the audit line, and the latency histograms
//! of `/token`, its stages and the issuer key fetches in `/metrics`.

use integration_tests::{Broker, FakeIssuer};
use serde_json::json;

use crate::support::{TARGET, config_with_rules, default_rule};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_a_request_id_that_the_audit_line_repeats() {
    let fake = FakeIssuer::start();
    let broker = Broker::builder()
        .env("FEDBROKER_REPLICA", "replica-a")
        .start(&config_with_rules(&fake, &default_rule()).render())
        .await;

    // Made here when the caller sends none: 32 hex characters, different each time.
    let a = broker.get("/healthz").await;
    let b = broker.get("/jwks.json").await;
    let id_a = a.header("x-request-id").expect("x-request-id").to_owned();
    let id_b = b.header("x-request-id").expect("x-request-id").to_owned();
    assert_eq!(id_a.len(), 32, "{id_a}");
    assert!(id_a.bytes().all(|c| c.is_ascii_hexdigit()), "{id_a}");
    assert_ne!(id_a, id_b);

    // The caller's, when sane; replaced when not.
    let url = format!("{}/token", broker.url());
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", &fake.mint(json!({}))),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("audience", TARGET),
    ];
    let resp = broker
        .client()
        .post(&url)
        .header("X-Request-Id", "trace-42:abc_DEF.1")
        .form(&form)
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "trace-42:abc_DEF.1");
    let long = "x".repeat(200);
    for bad in [long.as_str(), "two words", "semi;colon"] {
        let resp = broker
            .client()
            .get(format!("{}/healthz", broker.url()))
            .header("X-Request-Id", bad)
            .send()
            .await
            .expect("healthz");
        let id = resp.headers()["x-request-id"].to_str().expect("ascii").to_owned();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32, "{bad:?} is replaced by a fresh id");
    }

    // The audit line names the request and the replica; an error answer has an id too.
    let reply = broker.exchange("not-a-token", TARGET).await;
    assert_eq!(reply.status, 400);
    let error_id = reply.header("x-request-id").expect("x-request-id").to_owned();
    let lines = broker.wait_for_audit_lines(2).await;
    assert_eq!(lines[0]["request_id"], "trace-42:abc_DEF.1", "{}", lines[0]);
    assert_eq!(lines[0]["replica"], "replica-a");
    assert_eq!(lines[1]["request_id"], error_id.as_str(), "{}", lines[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_latency_histograms_for_token_its_stages_and_key_fetches() {
    let fake = FakeIssuer::start();
    let broker = Broker::start(&config_with_rules(&fake, &default_rule()).render()).await;
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = broker.exchange("not-a-token", TARGET).await;
    assert_eq!(reply.status, 400);
    let metrics = broker.get("/metrics").await.text;
    for line in [
        "fedbroker_token_request_duration_seconds_count{outcome=\"allow\"} 1",
        "fedbroker_token_request_duration_seconds_count{outcome=\"deny\"} 1",
        "fedbroker_token_stage_duration_seconds_count{stage=\"verify\"} 1",
        "fedbroker_token_stage_duration_seconds_count{stage=\"replay\"} 1",
        "fedbroker_token_stage_duration_seconds_count{stage=\"sign\"} 1",
        "fedbroker_jwks_fetch_duration_seconds_count{issuer=\"k8s\"}",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
}
