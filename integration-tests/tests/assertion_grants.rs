//! RFC 7523 (issue 15 part 4) through the real binary: a home token as a client
//! assertion (`client_credentials`) and as a `jwt-bearer` grant, through the same
//! issuers, rules, replay store and audit as the token exchange.

use integration_tests::dpop::DpopKey;
use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::tokens::{TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, verify_issued};
use integration_tests::{Broker, FakeIssuer, Reply};
use serde_json::json;

use crate::support::{TARGET, default_broker};

const CLIENT_CREDENTIALS: &str = "client_credentials";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn jwt_bearer(broker: &Broker, assertion: &str, extra: &[(&str, &str)]) -> Reply {
    let mut form = vec![
        ("grant_type", JWT_BEARER),
        ("assertion", assertion),
        ("audience", TARGET),
    ];
    form.extend_from_slice(extra);
    broker.token_request(&form).await
}

async fn client_credentials(broker: &Broker, assertion: &str, extra: &[(&str, &str)]) -> Reply {
    let mut form = vec![
        ("grant_type", CLIENT_CREDENTIALS),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
        ("resource", TARGET),
    ];
    form.extend_from_slice(extra);
    broker.token_request(&form).await
}

/// An RFC 6749 access token answer for [`TARGET`], its token verified.
async fn assert_access_token(broker: &Broker, reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["token_type"], "Bearer");
    assert_eq!(reply.json["issued_token_type"], TOKEN_TYPE_ACCESS_TOKEN);
    assert!(
        reply.json["expires_in"].as_u64().is_some_and(|s| s > 0),
        "{}",
        reply.text
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let (header, claims) = verify_issued(broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(claims["sub"], DEFAULT_SUBJECT);
    assert_eq!(claims["source_issuer"], "k8s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_bearer_grant_trades_an_assertion() {
    let fake = FakeIssuer::start();
    let broker = default_broker(&fake).await;
    let assertion = fake.mint(json!({}));

    let reply = jwt_bearer(&broker, &assertion, &[]).await;
    assert_access_token(&broker, &reply).await;

    // Replay: the same store as the exchange's, whatever the grant.
    let reply = jwt_bearer(&broker, &assertion, &[]).await;
    reply.assert_error(400, "invalid_grant", &assertion);
    assert_eq!(reply.json["error_description"], "assertion has already been used");
    let reply = broker.exchange(&assertion, TARGET).await;
    reply.assert_error(400, "invalid_request", &assertion);

    // A token the exchange accepted is refused here too.
    let exchanged = fake.mint(json!({}));
    assert_eq!(broker.exchange(&exchanged, TARGET).await.status, 200);
    jwt_bearer(&broker, &exchanged, &[])
        .await
        .assert_error(400, "invalid_grant", &exchanged);

    // Unknown issuer, bad signature, expired: invalid_grant.
    let unknown = fake.mint(json!({"iss": "https://unknown.example"}));
    let reply = jwt_bearer(&broker, &unknown, &[]).await;
    reply.assert_error(400, "invalid_grant", &unknown);
    assert_eq!(
        reply.json["error_description"],
        "assertion is from an unknown issuer"
    );
    let mut forged = fake.mint(json!({}));
    forged.push('A');
    jwt_bearer(&broker, &forged, &[])
        .await
        .assert_error(400, "invalid_grant", &forged);
    let expired = fake.mint(json!({"exp": 1_000_000_000, "iat": 999_999_000}));
    jwt_bearer(&broker, &expired, &[])
        .await
        .assert_error(400, "invalid_grant", &expired);

    // requested_token_type still chooses: a JWT (token_type N_A).
    let assertion = fake.mint(json!({}));
    let reply = jwt_bearer(&broker, &assertion, &[("requested_token_type", TOKEN_TYPE_JWT)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["token_type"], "N_A");

    // Parameters of the exchange are refused, not ignored.
    let assertion = fake.mint(json!({}));
    jwt_bearer(&broker, &assertion, &[("actor_token", &assertion)])
        .await
        .assert_error(400, "invalid_request", &assertion);

    // The audit line names the grant.
    let lines = broker.wait_for_audit_lines(9).await;
    assert_eq!(lines[0]["grant"], JWT_BEARER, "{:#?}", lines[0]);
    assert_eq!(lines[0]["outcome"], "allow");
    assert_eq!(lines[1]["grant"], JWT_BEARER);
    assert_eq!(lines[1]["error"], "invalid_grant");
    assert_eq!(
        lines[2]["grant"],
        "urn:ietf:params:oauth:grant-type:token-exchange"
    );
    assert!(!broker.audit_text().contains(&assertion));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_with_a_client_assertion() {
    let fake = FakeIssuer::start();
    let broker = default_broker(&fake).await;
    let assertion = fake.mint(json!({}));

    let reply = client_credentials(&broker, &assertion, &[("client_id", DEFAULT_SUBJECT)]).await;
    assert_access_token(&broker, &reply).await;

    // Replay, unknown issuer, bad signature: the client did not authenticate.
    let reply = client_credentials(&broker, &assertion, &[]).await;
    reply.assert_error(401, "invalid_client", &assertion);
    assert_eq!(
        reply.json["error_description"],
        "client_assertion has already been used"
    );
    let unknown = fake.mint(json!({"iss": "https://unknown.example"}));
    client_credentials(&broker, &unknown, &[])
        .await
        .assert_error(401, "invalid_client", &unknown);
    let mut forged = fake.mint(json!({}));
    forged.push('A');
    client_credentials(&broker, &forged, &[])
        .await
        .assert_error(401, "invalid_client", &forged);

    // client_id, when sent, is the assertion's sub (RFC 7523 §3); the token is not used.
    let fresh = fake.mint(json!({}));
    client_credentials(&broker, &fresh, &[("client_id", "someone-else")])
        .await
        .assert_error(401, "invalid_client", &fresh);
    assert_eq!(client_credentials(&broker, &fresh, &[]).await.status, 200);

    // Without a usable client assertion type or assertion.
    let token = fake.mint(json!({}));
    let reply = broker
        .token_request(&[
            ("grant_type", CLIENT_CREDENTIALS),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", &token),
            ("audience", TARGET),
        ])
        .await;
    reply.assert_error(401, "invalid_client", &token);
    let reply = broker
        .token_request(&[("grant_type", CLIENT_CREDENTIALS), ("audience", TARGET)])
        .await;
    reply.assert_error(401, "invalid_client", "");

    // An unknown grant.
    let reply = broker
        .token_request(&[("grant_type", "password"), ("audience", TARGET)])
        .await;
    reply.assert_error(400, "unsupported_grant_type", "");

    // With a DPoP proof: the same binding as the exchange's.
    let key = DpopKey::generate();
    let proof = key.proof(&broker.endpoint("/token"));
    let token = fake.mint(json!({}));
    let reply = broker
        .token_request_with(
            &[
                ("grant_type", CLIENT_CREDENTIALS),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &token),
                ("audience", TARGET),
            ],
            &[("DPoP", &proof)],
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["token_type"], "DPoP");
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint());

    let lines = broker.wait_for_audit_lines(2).await;
    assert_eq!(lines[0]["grant"], CLIENT_CREDENTIALS, "{:#?}", lines[0]);
    assert_eq!(lines[0]["outcome"], "allow");
    assert_eq!(
        (&lines[1]["error"], &lines[1]["grant"]),
        (&json!("invalid_client"), &json!(CLIENT_CREDENTIALS))
    );
}
