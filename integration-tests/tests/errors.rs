//! Every row of the contract's error table, and the token attacks behind the
//! "subject token malformed, unsigned, badly signed, ..." row. Error answers
//! never carry the token.
//!
//! Protocol-level: each case runs against the broker's router in this process
//! (`InProcess`); the fake issuers still serve their keys over HTTP.

use integration_tests::fake_issuer::DEFAULT_AUDIENCE;
use integration_tests::tokens::{
    GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, hs256, now, unsigned,
};
use integration_tests::{FakeIssuer, Http, InProcess, KeyKind, SigningKey, exchange_form};
use serde_json::{Value, json};

use crate::support::{
    TARGET, app_with_issuer_extra, app_with_rules, config_with_rules, default_app, default_app_and_token,
    default_rule,
};

/// Exchange `token` for the default target and expect a 400 `invalid_request`
/// that does not echo it.
async fn assert_token_rejected(broker: &Http, token: &str) {
    let reply = broker.exchange(token, TARGET).await;
    reply.assert_error(400, "invalid_request", token);
}

/// A fake and a broker with the default rule; `claims` minted by the fake.
async fn rejected_claims(claims: Value) {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    // The setup itself works: a plain token from the same fake is accepted.
    let control = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(control.status, 200, "control exchange: {}", control.text);
    assert_token_rejected(&broker, &fake.mint(claims)).await;
}

/// A plain exchange with `field` set to each of `values` in turn: each is a 400 with
/// `error` that does not echo the token.
async fn assert_each_value_rejected(field: &str, values: &[&str], error: &str) {
    let (_fake, broker, token) = default_app_and_token().await;
    for value in values {
        let mut form = exchange_form(&token, TARGET);
        let slot = form
            .iter_mut()
            .find(|(name, _)| *name == field)
            .expect("the field is in the form");
        slot.1 = value;
        broker.token_request(&form).await.assert_error(400, error, &token);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_missing_or_repeated_parameters_with_invalid_request() {
    let (fake, broker, token) = default_app_and_token().await;
    let other = fake.mint(json!({}));
    let actor = fake.mint(json!({"sub": "agent:x"}));
    let base = exchange_form(&token, TARGET);
    let without =
        |name: &str| -> Vec<(&str, &str)> { base.iter().copied().filter(|(k, _)| *k != name).collect() };
    let plus = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        let mut form = base.clone();
        form.extend_from_slice(extra);
        form
    };
    let mut cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("grant_type missing", without("grant_type")),
        ("subject_token missing", without("subject_token")),
        ("subject_token_type missing", without("subject_token_type")),
        ("neither audience nor resource", without("audience")),
        (
            "grant_type repeated",
            plus(&[("grant_type", GRANT_TYPE_TOKEN_EXCHANGE)]),
        ),
        (
            "subject_token_type repeated",
            plus(&[("subject_token_type", TOKEN_TYPE_JWT)]),
        ),
        ("scope repeated", plus(&[("scope", "read"), ("scope", "write")])),
        (
            "requested_token_type repeated",
            plus(&[
                ("requested_token_type", TOKEN_TYPE_JWT),
                ("requested_token_type", TOKEN_TYPE_JWT),
            ]),
        ),
    ];
    let mut repeated_subject = base.clone();
    repeated_subject.push(("subject_token", &other));
    cases.push(("subject_token repeated", repeated_subject));
    let mut actor_without_type = base.clone();
    actor_without_type.push(("actor_token", &actor));
    cases.push(("actor_token without actor_token_type", actor_without_type));
    let mut repeated_actor = base.clone();
    repeated_actor.extend([("actor_token", actor.as_str()), ("actor_token", actor.as_str())]);
    repeated_actor.push(("actor_token_type", TOKEN_TYPE_JWT));
    cases.push(("actor_token repeated", repeated_actor));
    let mut type_without_actor = base.clone();
    type_without_actor.push(("actor_token_type", TOKEN_TYPE_JWT));
    cases.push(("actor_token_type without actor_token", type_without_actor));

    let mut failures = Vec::new();
    for (case, form) in &cases {
        let reply = broker.token_request(form).await;
        let ok = reply.status == 400
            && reply.json["error"] == "invalid_request"
            && reply.json["error_description"].is_string()
            && !reply.text.contains(&token)
            && !reply.text.contains(&actor);
        if !ok {
            failures.push(format!("{case}: {} {}", reply.status, reply.text));
        }
    }
    assert!(failures.is_empty(), "wrong answers:\n{}", failures.join("\n"));
    // None of the bad requests consumed the token.
    let reply = broker.exchange(&token, TARGET).await;
    assert_eq!(reply.status, 200, "the token still exchanges: {}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_unknown_grant_type_and_unsupported_subject_token_type() {
    // client_credentials and jwt-bearer are RFC 7523's grants (assertion_grants.rs).
    let grants = [
        "password",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:saml2-bearer",
        "urn:ietf:params:oauth:grant-type:token-exchange ",
    ];
    assert_each_value_rejected("grant_type", &grants, "unsupported_grant_type").await;
    let token_types = [
        "urn:ietf:params:oauth:token-type:saml2",
        "urn:ietf:params:oauth:token-type:refresh_token",
        "jwt",
    ];
    assert_each_value_rejected("subject_token_type", &token_types, "invalid_request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_non_form_content_types_with_invalid_request() {
    let (_fake, broker, token) = default_app_and_token().await;
    let as_json = serde_json::to_vec(&json!({
        "grant_type": GRANT_TYPE_TOKEN_EXCHANGE,
        "subject_token": token,
        "subject_token_type": TOKEN_TYPE_JWT,
        "audience": TARGET,
    }))
    .expect("JSON");
    let as_form: String = exchange_form(&token, TARGET)
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace(':', "%3A")))
        .collect::<Vec<_>>()
        .join("&");

    for (content_type, body) in [
        (Some("application/json"), as_json),
        (Some("text/plain"), as_form.clone().into_bytes()),
        (None, as_form.into_bytes()),
    ] {
        let reply = broker.post_raw("/token", content_type, body).await;
        assert_eq!(
            (reply.status, reply.json["error"].as_str()),
            (400, Some("invalid_request")),
            "content type {content_type:?}: {}",
            reply.text
        );
        assert!(!reply.text.contains(&token));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_other_methods_on_token_with_405_allow_post() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let reply = broker.request(method.clone(), "/token").await;
        assert_eq!(reply.status, 405, "{method}: {}", reply.text);
        assert_eq!(reply.header("allow"), Some("POST"), "{method}");
        assert_eq!(reply.json["error"], "invalid_request", "{method}: {}", reply.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_body_over_max_body_bytes_with_413() {
    let fake = FakeIssuer::start();
    let config = config_with_rules(&fake, &default_rule()).server("max_body_bytes: 1024");
    let broker = InProcess::start(&config.render()).await;
    let token = fake.mint(json!({"padding": "x".repeat(2048)}));

    let reply = broker.exchange(&token, TARGET).await;

    reply.assert_error(413, "invalid_request", &token);
    // Under the limit the same broker works.
    let small = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(small.status, 200, "{}", small.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_malformed_subject_tokens() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let valid = fake.mint(json!({}));
    let parts: Vec<&str> = valid.split('.').collect();
    let cases = [
        "not-a-jwt".to_owned(),
        "a.b".to_owned(),
        "a.b.c".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
        format!("{}.!!!.{}", parts[0], parts[2]),
        format!(
            "{}.{}.{}",
            integration_tests::tokens::b64url(b"{not json"),
            parts[1],
            parts[2]
        ),
        String::new(),
    ];
    for token in &cases {
        let reply = broker.exchange(token, TARGET).await;
        assert_eq!(
            (reply.status, reply.json["error"].as_str()),
            (400, Some("invalid_request")),
            "token {token:?}: {}",
            reply.text
        );
        if token.len() > 3 {
            assert!(!reply.text.contains(token.as_str()), "echoed: {}", reply.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_alg_none() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    assert_token_rejected(&broker, &unsigned(&fake.claims(json!({})))).await;
    // Also with the issuer's kid and a dangling signature.
    let kid = fake.current_key().kid.clone();
    let token = fake.mint_with_header(json!({"alg": "none", "kid": kid}), json!({}));
    assert_token_rejected(&broker, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_hs256_signed_with_rsa_public_key() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let key = fake.current_key();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": key.kid});
    let claims = fake.claims(json!({}));
    for secret in [key.public_pem().into_bytes(), key.public_spki_der.clone()] {
        assert_token_rejected(&broker, &hs256(&header, &claims, &secret)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_bad_signature() {
    let (fake, broker, token) = default_app_and_token().await;
    let (input, signature) = token.rsplit_once('.').expect("three parts");
    // Flip bits in the middle of the signature.
    let mut sig: Vec<char> = signature.chars().collect();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == 'A' { 'B' } else { 'A' };
    let tampered_signature = format!("{input}.{}", sig.into_iter().collect::<String>());
    assert_token_rejected(&broker, &tampered_signature).await;
    // Claims changed under the original signature.
    let forged_claims = fake.claims(json!({"sub": "system:serviceaccount:kube-system:admin"}));
    let header = input.split('.').next().expect("header part");
    let forged = format!(
        "{header}.{}.{signature}",
        integration_tests::tokens::b64url(&serde_json::to_vec(&forged_claims).expect("JSON"))
    );
    assert_token_rejected(&broker, &forged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_token_signed_by_unpublished_key_reusing_a_published_kid() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let attacker = SigningKey::generate_with_kid(KeyKind::Rsa, &fake.current_key().kid);
    assert_token_rejected(&broker, &fake.mint_with_key(&attacker, json!({}), json!({}))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_embedded_jwk_and_jku_headers_pointing_at_attacker_keys() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    // The attacker runs its own "issuer" publishing its key.
    let attacker = FakeIssuer::start();
    let attacker_key = attacker.current_key();
    let with_jwk = fake.mint_with_key(&attacker_key, json!({"jwk": attacker_key.jwk()}), json!({}));
    assert_token_rejected(&broker, &with_jwk).await;
    let with_jku = fake.mint_with_key(&attacker_key, json!({"jku": attacker.jwks_uri()}), json!({}));
    assert_token_rejected(&broker, &with_jku).await;
    let with_x5u = fake.mint_with_key(&attacker_key, json!({"x5u": attacker.jwks_uri()}), json!({}));
    assert_token_rejected(&broker, &with_x5u).await;
    assert_eq!(
        attacker.jwks_requests(),
        0,
        "the broker followed a jku/x5u header"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_algorithm_not_listed_for_the_issuer() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    // Correctly signed with the published key, but RS512 while the issuer lists RS256 only.
    assert_token_rejected(
        &broker,
        &fake.mint_with_header(json!({"alg": "RS512"}), json!({})),
    )
    .await;
    assert_token_rejected(
        &broker,
        &fake.mint_with_header(json!({"alg": "PS256"}), json!({})),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_unknown_crit_header() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let token = fake.mint_with_header(
        json!({"crit": ["urn:example:must-understand"], "urn:example:must-understand": true}),
        json!({}),
    );
    assert_token_rejected(&broker, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_expired_token() {
    let now = now();
    rejected_claims(json!({"iat": now - 7200, "exp": now - 3600})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_not_yet_valid_token() {
    let now = now();
    rejected_claims(json!({"nbf": now + 3600, "exp": now + 7200})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_token_without_exp() {
    rejected_claims(json!({"exp": null})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_wrong_audience() {
    rejected_claims(json!({"aud": "someone-else"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_token_without_audience() {
    rejected_claims(json!({"aud": null})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_audience_list_containing_a_configured_audience() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let token = fake.mint(json!({"aud": ["other", DEFAULT_AUDIENCE]}));
    let reply = broker.exchange(&token, TARGET).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_unknown_issuer() {
    rejected_claims(json!({"iss": "https://unknown.example.com"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_issuer_that_differs_only_in_case_or_trailing_slash() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let upper = fake.issuer().replace("http://", "HTTP://");
    assert_token_rejected(&broker, &fake.mint(json!({"iss": upper}))).await;
    let slash = format!("{}/", fake.issuer());
    assert_token_rejected(&broker, &fake.mint(json!({"iss": slash}))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_token_living_longer_than_max_token_lifetime() {
    let fake = FakeIssuer::start();
    let broker = app_with_issuer_extra(&fake, "max_token_lifetime: 1h").await;
    let now = now();
    assert_token_rejected(&broker, &fake.mint(json!({"iat": now, "exp": now + 3 * 3600}))).await;
    let fine = broker
        .exchange(&fake.mint(json!({"iat": now, "exp": now + 1800})), TARGET)
        .await;
    assert_eq!(fine.status, 200, "{}", fine.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rule_for_the_target_is_invalid_target() {
    let (_fake, broker, token) = default_app_and_token().await;
    broker
        .exchange_refused(&token, "target-nobody-grants", 400, "invalid_target")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_for_target_not_matching_is_denied_by_policy() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let token = fake.mint(json!({"sub": "system:serviceaccount:ci:intruder"}));

    let reply = broker.exchange(&token, TARGET).await;

    reply.assert_error(400, "invalid_request", &token);
    assert_eq!(reply.json["error_description"], "denied by policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_rule_overrides_a_matching_allow() {
    let fake = FakeIssuer::start();
    let rules = format!(
        "{}{}",
        default_rule(),
        r#"
        - name: freeze
          effect: deny
          match:
            issuer: k8s
            subject_pattern: "system:serviceaccount:ci:*"
            claims:
              frozen: "yes"
            audiences: [target-a]
        "#
    );
    let broker = app_with_rules(&fake, &rules).await;

    let token = fake.mint(json!({"frozen": "yes"}));
    let reply = broker.exchange(&token, TARGET).await;
    reply.assert_error(400, "invalid_request", &token);
    assert_eq!(reply.json["error_description"], "denied by policy");

    let reply = broker.exchange(&fake.mint(json!({"frozen": "no"})), TARGET).await;
    assert_eq!(reply.status, 200, "the deny rule does not match: {}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_no_rule_grants_is_invalid_scope() {
    let fake = FakeIssuer::start();
    let rules = format!(
        "{}{}",
        default_rule().replace("target-a", "target-unscoped"),
        r#"
        - name: scoped
          match:
            issuer: k8s
            subject: "system:serviceaccount:ci:deployer"
            audiences: [target-a]
            scopes: [read]
        "#
    );
    let broker = app_with_rules(&fake, &rules).await;
    for (target, scope) in [
        (TARGET, "read admin"),
        (TARGET, "admin"),
        ("target-unscoped", "read"),
    ] {
        let token = fake.mint(json!({}));
        let mut form = exchange_form(&token, target);
        form.push(("scope", scope));
        let reply = broker.token_request(&form).await;
        assert_eq!(
            (reply.status, reply.json["error"].as_str()),
            (400, Some("invalid_scope")),
            "{target} scope {scope:?}: {}",
            reply.text
        );
        assert!(!reply.text.contains(&token));
    }
}

/// A fake whose keys `break_keys` makes unobtainable: an exchange of its token is a
/// 503 with Retry-After that does not echo the token.
async fn assert_keys_unobtainable_503(break_keys: fn(&FakeIssuer)) {
    let fake = FakeIssuer::start();
    break_keys(&fake);
    let broker = default_app(&fake).await;
    let token = fake.mint(json!({}));

    let reply = broker.exchange(&token, TARGET).await;

    reply.assert_error(503, "temporarily_unavailable", &token);
    assert!(
        reply.header("retry-after").is_some(),
        "Retry-After missing: {:?}",
        reply.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unobtainable_issuer_keys_are_503_with_retry_after() {
    assert_keys_unobtainable_503(|fake| fake.set_outage(true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_issuer_is_503_with_retry_after() {
    assert_keys_unobtainable_503(FakeIssuer::stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_type_for_actor_is_accepted_only_with_its_pair() {
    // actor_token_type alone (no actor_token) is covered above; here the full pair
    // with an access_token type is a well-formed request that policy then denies.
    let (fake, broker, token) = default_app_and_token().await;
    let actor = fake.mint(json!({"sub": "agent:x"}));
    let mut form = exchange_form(&token, TARGET);
    form.push(("actor_token", &actor));
    form.push(("actor_token_type", TOKEN_TYPE_ACCESS_TOKEN));
    let reply = broker.token_request(&form).await;
    reply.assert_error(400, "invalid_request", &token);
    assert!(!reply.text.contains(&actor));
    assert_eq!(
        reply.json["error_description"], "denied by policy",
        "{}",
        reply.text
    );
}
