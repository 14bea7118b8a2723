//! Sender-constrained tokens (issue 15 part 3): DPoP proofs (RFC 9449) at `/token`
//! through the real binary, with a client key made in the test; mTLS-bound tokens
//! (RFC 8705) and the rules' view of the client certificate in process, with the
//! certificate handed to the request the way the TLS listener hands it.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use broker::client_cert::ClientCert;
use integration_tests::dpop::{DpopKey, now};
use integration_tests::tokens::verify_issued;
use integration_tests::{Broker, FakeIssuer, Http, Reply, exchange_form};
use serde_json::{Value, json};

use crate::support::{
    TARGET, app_with_rules, assert_denied_by_policy, broker_with_rules, default_broker, subject_rule,
};

/// An exchange of a fresh token from `fake` for [`TARGET`], with `headers`.
async fn exchange_with(http: &Http, fake: &FakeIssuer, headers: &[(&str, &str)]) -> (Reply, String) {
    let subject_token = fake.mint(json!({}));
    let reply = http
        .token_request_with(&exchange_form(&subject_token, TARGET), headers, None)
        .await;
    (reply, subject_token)
}

fn assert_invalid_proof(reply: &Reply, secret: &str, what: &str) {
    assert_eq!(reply.status, 400, "{what}: {}", reply.text);
    assert_eq!(
        reply.json["error"], "invalid_dpop_proof",
        "{what}: {}",
        reply.text
    );
    assert_eq!(
        reply.json["error_description"], "the DPoP proof is invalid",
        "{what}: a fixed description"
    );
    assert!(!reply.text.contains(secret), "{what}: the answer echoes a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_proof_binds_the_issued_token_to_the_clients_key() {
    let fake = FakeIssuer::start();
    let broker = default_broker(&fake).await;
    let key = DpopKey::generate();
    let proof = key.proof(&broker.endpoint("/token"));

    let (reply, _) = exchange_with(&broker, &fake, &[("DPoP", &proof)]).await;

    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["token_type"], "DPoP");
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["cnf"], json!({"jkt": key.thumbprint()}), "{claims}");
    let lines = broker.wait_for_audit_lines(1).await;
    assert_eq!(lines[0]["outcome"], "allow");
    assert_eq!(lines[0]["dpop_jkt"], key.thumbprint());
    assert_eq!(lines[0]["dpop_replay"], "recorded");

    // Without a proof: a bearer token, no cnf.
    let (reply, _) = exchange_with(&broker, &fake, &[]).await;
    assert_eq!(reply.json["token_type"], "N_A");
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert!(claims.get("cnf").is_none(), "{claims}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_dpop_proofs_are_refused() {
    let fake = FakeIssuer::start();
    let broker = default_broker(&fake).await;
    let key = DpopKey::generate();
    let htu = broker.endpoint("/token");
    let mut private_jwk = key.jwk();
    private_jwk["d"] = json!(B64.encode([7u8; 32]));
    let good = key.proof(&htu);
    let (input, signature) = good.rsplit_once('.').expect("compact JWS");
    let mut bad_signature = B64.decode(signature).expect("base64url");
    bad_signature[5] ^= 0x40;
    let unsigned_input = |header: Value| {
        let (_, payload) = input.split_once('.').expect("compact JWS");
        format!(
            "{}.{payload}",
            B64.encode(serde_json::to_vec(&header).expect("JSON"))
        )
    };
    let none = format!(
        "{}.",
        unsigned_input(json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk()}))
    );
    let hs256_input = unsigned_input(json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.jwk()}));
    let hs256 = {
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.jwk().to_string().as_bytes()),
            hs256_input.as_bytes(),
        );
        format!("{hs256_input}.{}", B64.encode(mac.as_ref()))
    };
    let other_key = DpopKey::generate();
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong htm",
            key.proof_with(json!({}), json!({"htu": htu, "htm": "GET"})),
        ),
        (
            "wrong htu",
            key.proof_with(json!({}), json!({"htu": "https://elsewhere.example/token"})),
        ),
        (
            "htu of another path",
            key.proof_with(json!({}), json!({"htu": broker.endpoint("/jwks.json")})),
        ),
        (
            "stale iat",
            key.proof_with(json!({}), json!({"htu": htu, "iat": now() - 300})),
        ),
        (
            "iat in the future",
            key.proof_with(json!({}), json!({"htu": htu, "iat": now() + 300})),
        ),
        (
            "no jti",
            key.proof_with(json!({}), json!({"htu": htu, "jti": null})),
        ),
        (
            "private key in jwk",
            key.proof_with(json!({"jwk": private_jwk}), json!({"htu": htu})),
        ),
        (
            "wrong typ",
            key.proof_with(json!({"typ": "JWT"}), json!({"htu": htu})),
        ),
        (
            "no jwk",
            key.proof_with(json!({"jwk": null}), json!({"htu": htu})),
        ),
        (
            "jwk of another key",
            key.proof_with(json!({"jwk": other_key.jwk()}), json!({"htu": htu})),
        ),
        ("alg none", none),
        ("alg HS256", hs256),
        ("bad signature", format!("{input}.{}", B64.encode(&bad_signature))),
        ("not a JWS", "not-a-proof".to_owned()),
    ];
    for (what, proof) in &cases {
        let (reply, subject_token) = exchange_with(&broker, &fake, &[("DPoP", proof)]).await;
        assert_invalid_proof(&reply, &subject_token, what);
        // Refused before the home token was marked: it is still good.
        if *what == "wrong htm" {
            let reply = broker.exchange(&subject_token, TARGET).await;
            assert_eq!(reply.status, 200, "the home token was used up: {}", reply.text);
        }
    }
    // Two DPoP headers, even both valid.
    let (reply, token) = exchange_with(
        &broker,
        &fake,
        &[("DPoP", &key.proof(&htu)), ("DPoP", &key.proof(&htu))],
    )
    .await;
    assert_invalid_proof(&reply, &token, "two DPoP headers");

    // A header longer than the cap.
    let long = format!("{}.{}.{}", "a".repeat(6000), "b".repeat(3000), "c");
    let (reply, token) = exchange_with(&broker, &fake, &[("DPoP", &long)]).await;
    assert_invalid_proof(&reply, &token, "an oversized header");

    // A reused proof: its jti is used once, whatever the home token. The second home
    // token is not used up by the refusal.
    let (reply, _) = exchange_with(&broker, &fake, &[("DPoP", &good)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (reply, subject_token) = exchange_with(&broker, &fake, &[("DPoP", &good)]).await;
    assert_invalid_proof(&reply, &subject_token, "reused jti");
    let reply = broker.exchange(&subject_token, TARGET).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Every refusal is audited with its full reason; no proof or token in the log.
    let lines = broker.wait_for_audit_lines(cases.len() + 6).await;
    let reasons: Vec<&str> = lines
        .iter()
        .filter(|l| l["error"] == "invalid_dpop_proof")
        .map(|l| l["reason"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(reasons.len(), cases.len() + 3, "{reasons:#?}");
    for needle in [
        "htm does not match",
        "htu does not match",
        "iat is more than 60s",
        "private key material",
        "alg must be one of",
        "bad signature",
        "more than one DPoP header",
        "jti has already been used",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "{needle}: {reasons:#?}"
        );
    }
    let text = broker.audit_text();
    assert!(
        !text.contains(&good) && !text.contains(input),
        "a proof in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_can_require_dpop() {
    let fake = FakeIssuer::start();
    let rules = subject_rule("bound-only", "audiences: [target-a]\nrequire_dpop: true", "");
    let broker: Broker = broker_with_rules(&fake, &rules).await;

    let (reply, token) = exchange_with(&broker, &fake, &[]).await;
    assert_denied_by_policy(&reply, &token);
    let lines = broker.wait_for_audit_lines(1).await;
    let reason = lines[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("dpop: the rule requires a DPoP proof"),
        "{reason}"
    );

    let key = DpopKey::generate();
    let (reply, _) = exchange_with(
        &broker,
        &fake,
        &[("DPoP", &key.proof(&broker.endpoint("/token")))],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["token_type"], "DPoP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_sender_constraints_and_grants() {
    let fake = FakeIssuer::start();
    let app = app_with_rules(&fake, &crate::support::default_rule()).await;
    let reply = app.get("/.well-known/openid-configuration").await;
    let doc = &reply.json;
    assert_eq!(
        doc["dpop_signing_alg_values_supported"],
        json!(["ES256", "RS256", "PS256", "EdDSA"])
    );
    // No client certificates without server.tls.client_ca_file (see tls_serving).
    assert_eq!(doc["tls_client_certificate_bound_access_tokens"], false);
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["none", "private_key_jwt"])
    );
    assert_eq!(
        doc["grant_types_supported"],
        json!([
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        ])
    );
}

/// A client certificate as the listener would describe it.
fn cert(uri: &str) -> Arc<ClientCert> {
    let der = format!("not really DER, but bytes of a certificate for {uri}");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_bytes());
    Arc::new(ClientCert {
        uri_sans: vec![uri.to_owned()],
        subject: "CN=api,O=Acme".to_owned(),
        sha256: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        x5t_s256: B64.encode(digest.as_ref()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_binds_the_token_and_rules_see_it() {
    let fake = FakeIssuer::start();
    let rules = format!(
        "{}{}",
        subject_rule("open", "audiences: [target-a]", ""),
        subject_rule(
            "mtls-only",
            "audiences: [target-b]\nrequire_client_cert: true\ncondition: \"request.client_cert.uri_sans.exists(u, u == 'spiffe://acme/ns/' + claims.namespace)\"",
            ""
        )
    );
    let app = app_with_rules(&fake, &rules).await;
    let spiffe = cert("spiffe://acme/ns/payments");

    // Any exchange with a certificate is bound to it.
    let token = fake.mint(json!({"namespace": "payments"}));
    let reply = app
        .token_request_with(&exchange_form(&token, TARGET), &[], Some(spiffe.clone()))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["token_type"], "N_A");
    let (_, claims) = verify_issued(&app, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["cnf"], json!({"x5t#S256": spiffe.x5t_s256}));
    let line = app.wait_for_audit_lines(1).await[0].clone();
    assert_eq!(line["client_cert_sha256"], spiffe.sha256);

    // With DPoP too: both members in one cnf.
    let key = DpopKey::generate();
    let token = fake.mint(json!({"namespace": "payments"}));
    let proof = key.proof(&app.endpoint("/token"));
    let reply = app
        .token_request_with(
            &exchange_form(&token, TARGET),
            &[("DPoP", &proof)],
            Some(spiffe.clone()),
        )
        .await;
    assert_eq!(reply.json["token_type"], "DPoP", "{}", reply.text);
    let (_, claims) = verify_issued(&app, reply.access_token(), &[TARGET]).await;
    assert_eq!(
        claims["cnf"],
        json!({"jkt": key.thumbprint(), "x5t#S256": spiffe.x5t_s256})
    );

    // The mTLS-only rule: no certificate, the wrong workload's, the right one.
    let token = fake.mint(json!({"namespace": "payments"}));
    let reply = app.exchange(&token, "target-b").await;
    assert_denied_by_policy(&reply, &token);
    let token = fake.mint(json!({"namespace": "payments"}));
    let reply = app
        .token_request_with(
            &exchange_form(&token, "target-b"),
            &[],
            Some(cert("spiffe://acme/ns/billing")),
        )
        .await;
    assert_denied_by_policy(&reply, &token);
    let token = fake.mint(json!({"namespace": "payments"}));
    let reply = app
        .token_request_with(&exchange_form(&token, "target-b"), &[], Some(spiffe.clone()))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reasons: Vec<String> = app
        .wait_for_audit_lines(5)
        .await
        .iter()
        .filter_map(|l| l["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        reasons[0].contains("client_cert: the rule requires a client certificate"),
        "{reasons:#?}"
    );
    assert!(
        reasons[1].contains("match.condition: evaluated to false"),
        "{reasons:#?}"
    );
}

/// One proof sent in parallel with ten home tokens: its `jti` is marked in one atomic
/// step, so exactly one request is answered with a token, and the other nine home
/// tokens are not used up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_sent_in_parallel_is_accepted_once() {
    let fake = FakeIssuer::start();
    let broker = default_broker(&fake).await;
    let key = DpopKey::generate();
    let proof = key.proof(&broker.endpoint("/token"));
    let tokens: Vec<String> = (0..10).map(|_| fake.mint(json!({}))).collect();
    let replies = futures_join_all(&broker, &tokens, &proof).await;
    let ok: Vec<usize> = (0..replies.len()).filter(|i| replies[*i].status == 200).collect();
    assert_eq!(ok.len(), 1, "{replies:#?}");
    for (i, reply) in replies.iter().enumerate() {
        if i != ok[0] {
            assert_invalid_proof(reply, &tokens[i], "a parallel copy");
            assert_eq!(
                broker.exchange(&tokens[i], TARGET).await.status,
                200,
                "home token {i} used up"
            );
        }
    }
}

async fn futures_join_all(broker: &Broker, tokens: &[String], proof: &str) -> Vec<Reply> {
    let mut tasks = Vec::new();
    for token in tokens {
        let (http, token, proof) = ((**broker).clone(), token.clone(), proof.to_owned());
        tasks.push(tokio::spawn(async move {
            http.token_request_with(&exchange_form(&token, TARGET), &[("DPoP", &proof)], None)
                .await
        }));
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    replies
}
