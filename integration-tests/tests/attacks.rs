//! The attack suite: forged, mangled and hostile tokens against the broker's router in
//! this process (`InProcess`), and hostile configurations against the real binary's
//! `check`. Attacks already covered elsewhere (errors.rs: alg none, HS256 with the
//! RSA public key, bad signatures, reused kids, embedded jwk, crit, expiry, audience,
//! issuer case; keys_fetch.rs: unknown kids within the cooldown; replay.rs: replay and
//! forged copies burning a jti) are not repeated here.
//!
//! Each refusal is checked together with a control (the same setup accepting the
//! genuine token), so a test cannot pass because the setup was broken.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use integration_tests::attack_support::{ConnectionCounter, JwksServer, RawSigner};
use integration_tests::fake_issuer::{DEFAULT_AUDIENCE, DEFAULT_SUBJECT};
use integration_tests::tokens::{b64url, compact, now, random_hex};
use integration_tests::{BrokerConfig, CliOutput, FakeIssuer, Http, InProcess, KeyKind, SigningKey, run_cli};
use serde_json::{Value, json};

use crate::support::{ISSUER_NAME, TARGET, default_app, default_app_and_token};

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// At most `n` characters of `text` (error messages stay readable with 16 KiB tokens).
fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(n).collect::<String>())
    }
}

/// The last 4,000 characters of the broker's stderr (none in process).
fn stderr_tail(broker: &Http) -> String {
    let text = broker.stderr();
    let skip = text.chars().count().saturating_sub(4000);
    text.chars().skip(skip).collect()
}

/// [`assert_all_refused`], then a genuine token from `fake` is accepted (`control`).
async fn assert_refused_but_genuine_accepted(
    broker: &Http,
    cases: &[(String, String)],
    fake: &FakeIssuer,
    control: &str,
) {
    assert_all_refused(broker, cases).await;
    assert_accepted(broker, control, &fake.mint(json!({}))).await;
}

/// Exchange each `(case, token)` for [`TARGET`]; every one must be a 400
/// `invalid_request` with a string description that does not echo the token.
async fn assert_all_refused(broker: &Http, cases: &[(String, String)]) {
    let mut failures = Vec::new();
    for (case, token) in cases {
        let reply = broker.exchange(token, TARGET).await;
        let refused = reply.status == 400
            && reply.json["error"] == "invalid_request"
            && reply.json["error_description"].is_string();
        let echoes = token.len() > 16 && reply.text.contains(token.as_str());
        if !refused || echoes {
            failures.push(format!(
                "{case}: {} {}{}",
                reply.status,
                clip(&reply.text, 300),
                if echoes { " (echoes the token)" } else { "" }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not refused with 400 invalid_request:\n{}\n--- broker stderr (tail) ---\n{}",
        failures.join("\n"),
        stderr_tail(broker)
    );
}

/// Exchange `token` for [`TARGET`] and expect a 200.
/// Exchange each `(case, token)` for [`TARGET`]: every one must be a 400
/// `invalid_request` refused by the issuer's `kind` checks, not by policy.
async fn assert_refused_by_kind(broker: &Http, cases: &[(&str, String)], kind: &str) {
    let mut failures = Vec::new();
    for (case, token) in cases {
        let reply = broker.exchange(token, TARGET).await;
        let ok = reply.status == 400
            && reply.json["error"] == "invalid_request"
            && reply.json["error_description"] != "denied by policy";
        if !ok {
            failures.push(format!("{case}: {} {}", reply.status, reply.text));
        }
    }
    assert!(
        failures.is_empty(),
        "not refused by the {kind} kind:\n{}\n{}",
        failures.join("\n"),
        stderr_tail(broker)
    );
}

async fn assert_accepted(broker: &Http, case: &str, token: &str) {
    let reply = broker.exchange(token, TARGET).await;
    assert_eq!(
        reply.status,
        200,
        "{case}: expected the token to be accepted, got {} {}\n--- broker stderr (tail) ---\n{}",
        reply.status,
        clip(&reply.text, 300),
        stderr_tail(broker)
    );
}

/// An allow rule: `issuer`'s `subject` may get [`TARGET`].
fn allow_rule(name: &str, issuer: &str, subject: &str) -> String {
    format!(
        r#"
        - name: {name}
          match:
            issuer: {issuer}
            subject: "{subject}"
            audiences: [{TARGET}]
        "#
    )
}

/// An allow rule: any subject matching `pattern` of `issuer` may get [`TARGET`].
fn pattern_rule(name: &str, issuer: &str, pattern: &str) -> String {
    format!(
        r#"
        - name: {name}
          match:
            issuer: {issuer}
            subject_pattern: "{pattern}"
            audiences: [{TARGET}]
        "#
    )
}

/// The `iss` of tokens from a [`RawSigner`] issuer. Its keys are inline, so nothing
/// is ever fetched from this address.
const RAW_ISS: &str = "http://127.0.0.1:9/raw-issuer";
const RAW_NAME: &str = "raw";

/// An issuer entry whose keys are `signer`'s, inline (no network).
fn raw_issuer_yaml(name: &str, iss: &str, signer: &RawSigner) -> String {
    format!(
        "- name: {name}\n  issuer: {iss}\n  audiences: [{DEFAULT_AUDIENCE}]\n  algorithms: [ES256]\n  jwks: {}\n  danger_allow_insecure: true\n",
        signer.jwks()
    )
}

/// A broker trusting only `signer` as [`RAW_NAME`] (`iss` [`RAW_ISS`]); the default
/// subject may get [`TARGET`].
async fn raw_broker(signer: &RawSigner) -> InProcess {
    let config = BrokerConfig::new()
        .issuer(raw_issuer_yaml(RAW_NAME, RAW_ISS, signer))
        .rules(allow_rule("raw-deployer", RAW_NAME, DEFAULT_SUBJECT));
    InProcess::start(&config.render()).await
}

/// Valid claims from [`RAW_ISS`] for the default subject, plus `extra`.
fn raw_claims(extra: Value) -> Value {
    let now = now();
    let mut claims = json!({
        "iss": RAW_ISS,
        "aud": DEFAULT_AUDIENCE,
        "sub": DEFAULT_SUBJECT,
        "iat": now,
        "exp": now + 600,
        "jti": random_hex(16),
    });
    if let (Some(base), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        base.extend(extra);
    }
    claims
}

/// The three parts of a compact token.
fn parts(token: &str) -> [String; 3] {
    let p: Vec<&str> = token.split('.').collect();
    assert_eq!(p.len(), 3, "not a compact JWS: {}", clip(token, 80));
    [p[0].to_owned(), p[1].to_owned(), p[2].to_owned()]
}

fn decode_b64url(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {}", clip(text, 80)))
}

/// Write `yaml` (placeholders filled) to `dir/fedbroker.yaml` and run `fedbroker check`.
fn check_config(dir: &Path, yaml: &str) -> CliOutput {
    let text = yaml
        .replace("@PORT@", "18080")
        .replace("@DIR@", dir.to_str().expect("UTF-8 path"));
    let path = dir.join("fedbroker.yaml");
    std::fs::write(&path, &text).expect("write config");
    run_cli(&["check", "--config", path.to_str().expect("UTF-8 path")])
}

// ---------------------------------------------------------------------------------
// Algorithm and signature attacks
// ---------------------------------------------------------------------------------

/// The audit line of an allow through issuer `issuer` (waiting for a line).
async fn allow_line(broker: &Http, issuer: &str) -> Value {
    let lines = broker.wait_for_audit_lines(1).await;
    lines
        .iter()
        .find(|l| l["outcome"] == "allow" && l["issuer"] == issuer)
        .cloned()
        .unwrap_or_else(|| panic!("no allow line for {issuer}: {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_alg_none_in_every_spelling() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let key = fake.current_key();

    let mut cases = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        for with_kid in [false, true] {
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if with_kid {
                header["kid"] = json!(key.kid);
            }
            let label = format!("alg {alg:?}, kid {with_kid}");
            cases.push((
                format!("{label}, empty signature"),
                compact(&header, &fake.claims(json!({})), ""),
            ));
            cases.push((
                format!("{label}, junk signature"),
                compact(&header, &fake.claims(json!({})), "AAAA"),
            ));
            // A genuine RS256 signature by the issuer's key over this very header
            // and payload: only the header's alg is a lie.
            cases.push((
                format!("{label}, real RS256 signature"),
                key.sign(&header, &fake.claims(json!({}))),
            ));
        }
    }
    assert_refused_but_genuine_accepted(&broker, &cases, &fake, "control: a genuine token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jku_and_x5u_headers_are_never_fetched() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let trap = ConnectionCounter::start();
    let attacker = SigningKey::generate(KeyKind::Rsa);
    let real = fake.current_key();
    let garbage_x5c = json!(["garbage", "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"]);

    let mut attacker_tokens = Vec::new();
    let mut real_tokens = Vec::new();
    for url in [
        format!("http://{}/jwks.json", trap.addr()),
        format!("https://{}/jwks.json", trap.addr()),
        format!("http://{}", trap.addr()),
    ] {
        for (label, header) in [
            ("jku", json!({"jku": url})),
            ("x5u", json!({"x5u": url})),
            ("jku+x5u+x5c", json!({"jku": url, "x5u": url, "x5c": garbage_x5c})),
        ] {
            attacker_tokens.push((
                format!("attacker key, unknown kid, {label} {url}"),
                fake.mint_with_key(&attacker, header.clone(), json!({})),
            ));
            let mut with_real_kid = header.clone();
            with_real_kid["kid"] = json!(real.kid);
            attacker_tokens.push((
                format!("attacker key, the real kid, {label} {url}"),
                fake.mint_with_key(&attacker, with_real_kid, json!({})),
            ));
            real_tokens.push((
                format!("real key, {label} {url}"),
                fake.mint_with_key(&real, header, json!({})),
            ));
        }
    }
    attacker_tokens.push((
        "attacker key, garbage x5c only".to_owned(),
        fake.mint_with_key(&attacker, json!({"x5c": garbage_x5c}), json!({})),
    ));

    assert_all_refused(&broker, &attacker_tokens).await;
    // Tokens signed by the real key: the headers are ignored, so 200 (or a refusal),
    // never a server error.
    for (case, token) in &real_tokens {
        let reply = broker.exchange(token, TARGET).await;
        assert!(
            reply.status == 200 || (reply.status == 400 && reply.json["error"] == "invalid_request"),
            "{case}: {} {}",
            reply.status,
            reply.text
        );
    }
    // Every answer is in; give a stray background fetch a moment to show up.
    let deadline = Instant::now() + Duration::from_millis(500);
    while trap.accepted() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        trap.accepted(),
        0,
        "the broker connected to an address named by a jku/x5u header\n{}",
        stderr_tail(&broker)
    );
}

/// The order of the P-256 group.
const P256_ORDER: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

fn from_hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_psychic_ecdsa_signature() {
    // CVE-2022-21449: an ECDSA verifier that does not check 0 < r, s < n accepts
    // r = s = 0 for any message and key.
    let fake = FakeIssuer::start_with(KeyKind::Ec);
    let broker = default_app(&fake).await;
    let n = from_hex(P256_ORDER);
    let mut one = vec![0u8; 32];
    one[31] = 1;
    let signatures: Vec<(&str, Vec<u8>)> = vec![
        ("r = s = 0", vec![0u8; 64]),
        ("r = s = n", [n.clone(), n.clone()].concat()),
        ("r = 0, s = n", [vec![0u8; 32], n.clone()].concat()),
        ("r = n, s = 1", [n.clone(), one.clone()].concat()),
        ("r = 1, s = 0", [one, vec![0u8; 32]].concat()),
    ];
    let mut cases = Vec::new();
    for (label, signature) in signatures {
        let [h, p, _] = parts(&fake.mint(json!({})));
        cases.push((label.to_owned(), format!("{h}.{p}.{}", b64url(&signature))));
    }
    // A DER-encoded zero signature (what some libraries expect instead of r || s).
    let [h, p, _] = parts(&fake.mint(json!({})));
    cases.push((
        "DER r = s = 0".to_owned(),
        format!(
            "{h}.{p}.{}",
            b64url(&[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00])
        ),
    ));
    assert_refused_but_genuine_accepted(&broker, &cases, &fake, "control: a genuine ES256 token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_stripped_and_truncated_signatures() {
    let (fake, broker, token) = default_app_and_token().await;
    let [h, p, s] = parts(&token);
    let signature = decode_b64url(&s);
    let [_, _, other_signature] = parts(&fake.mint(json!({})));

    let truncated = b64url(&signature[..signature.len() - 1]);
    let extended = b64url(&[signature.clone(), vec![0]].concat());
    let extended_ff = b64url(&[signature.clone(), vec![0xff]].concat());
    let cases = vec![
        ("signature removed (two dots)".to_owned(), format!("{h}.{p}.")),
        (
            "signature truncated by one byte".to_owned(),
            format!("{h}.{p}.{truncated}"),
        ),
        (
            "signature extended by a zero byte".to_owned(),
            format!("{h}.{p}.{extended}"),
        ),
        (
            "signature extended by 0xff".to_owned(),
            format!("{h}.{p}.{extended_ff}"),
        ),
        (
            "signature of a different token".to_owned(),
            format!("{h}.{p}.{other_signature}"),
        ),
        ("header and payload swapped".to_owned(), format!("{p}.{h}.{s}")),
        ("signature doubled".to_owned(), format!("{h}.{p}.{s}{s}")),
    ];
    assert_all_refused(&broker, &cases).await;
    // The genuine token, same jti: none of the above burned it.
    assert_accepted(&broker, "control: the genuine token", &token).await;
}

// ---------------------------------------------------------------------------------
// Key selection
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_kid_injection() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let real_kid = fake.current_key().kid.clone();
    let kids = [
        ("path traversal", json!("../../etc/passwd")),
        ("path traversal to the JWKS", json!("../jwks.json")),
        ("SQL injection", json!("' OR 1=1 --")),
        (
            "SQL injection with the real kid",
            json!(format!("{real_kid}' OR '1'='1")),
        ),
        ("10 KiB kid", json!("k".repeat(10 * 1024))),
        ("NUL and newlines", json!(format!("{real_kid}\u{0}\n\r\nx"))),
        ("real kid plus NUL", json!(format!("{real_kid}\u{0}"))),
        ("empty kid", json!("")),
        ("kid as a number", json!(42)),
        ("kid as an array", json!([real_kid])),
        ("kid as an object", json!({"kid": real_kid})),
        ("kid as null", json!(null)),
        ("kid as true", json!(true)),
    ];
    let mut cases = Vec::new();
    for (label, kid) in kids {
        // `null` in an override removes the member; spell it out in the header instead.
        let token = if kid.is_null() {
            let header = json!({"alg": "RS256", "typ": "JWT", "kid": null});
            fake.current_key().sign(&header, &fake.claims(json!({})))
        } else {
            fake.mint_with_header(json!({ "kid": kid }), json!({}))
        };
        cases.push((label.to_owned(), token));
    }
    assert_all_refused(&broker, &cases).await;

    let health = broker.get("/healthz").await;
    assert_eq!(
        health.status, 200,
        "/healthz after kid injection: {}",
        health.text
    );
    assert_accepted(&broker, "control: a genuine token", &fake.mint(json!({}))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_key_from_another_issuer_with_the_same_kid() {
    // A publishes its key under kid K; B publishes its own key under the same K.
    let a = FakeIssuer::start_with(KeyKind::Ec);
    let kid = a.current_key().kid.clone();
    let b_key = RawSigner::generate(&kid);
    let b = JwksServer::start(b_key.jwks());
    let b_issuer = format!(
        "- name: issuer-b\n  issuer: {}\n  audiences: [{DEFAULT_AUDIENCE}]\n  algorithms: [ES256]\n  jwks_uri: {}\n  danger_allow_insecure: true\n",
        b.url(),
        b.jwks_uri()
    );
    let config = BrokerConfig::new()
        .issuer(a.issuer_yaml("issuer-a"))
        .issuer(b_issuer)
        .rules(allow_rule("a-deployer", "issuer-a", DEFAULT_SUBJECT))
        .rules(allow_rule("b-deployer", "issuer-b", DEFAULT_SUBJECT));
    let broker = InProcess::start(&config.render()).await;

    // Both issuers work on their own, so both key sets are cached under kid K.
    assert_accepted(&broker, "control: A's own token", &a.mint(json!({}))).await;
    let b_claims = |extra: Value| {
        let mut claims = a.claims(json!({"iss": b.url()}));
        if let (Some(base), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            base.extend(extra);
        }
        claims
    };
    assert_accepted(
        &broker,
        "control: B's own token",
        &b_key.sign_claims(&b_claims(json!({}))),
    )
    .await;
    assert!(b.requests() >= 1, "B's keys were never fetched");

    let cases = vec![
        (
            "iss A, kid K, signed with B's key".to_owned(),
            b_key.sign_claims(&a.claims(json!({}))),
        ),
        (
            "iss B, kid K, signed with A's key".to_owned(),
            a.mint(json!({"iss": b.url()})),
        ),
    ];
    assert_all_refused(&broker, &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_random_kids_cause_at_most_one_jwks_fetch() {
    const TOKENS: usize = 1000;
    const CLIENTS: usize = 16;
    // The broker's refetch cooldown is 30 s; the burst must end well inside it.
    const BUDGET: Duration = Duration::from_secs(25);

    let fake = FakeIssuer::start_with(KeyKind::Ec);
    let broker = Arc::new(default_app(&fake).await);
    assert_accepted(&broker, "warm-up", &fake.mint(json!({}))).await;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..TOKENS)
            .map(|_| fake.mint_with_header(json!({"kid": random_hex(8)}), json!({})))
            .collect(),
    );
    let fetches_before = fake.jwks_requests();

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (broker, tokens, next) = (broker.clone(), tokens.clone(), next.clone());
        clients.spawn(async move {
            let mut wrong = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(token) = tokens.get(i) else { break };
                let reply = broker.exchange(token, TARGET).await;
                if !(reply.status == 400 && reply.json["error"] == "invalid_request") {
                    wrong.push(format!("token {i}: {} {}", reply.status, clip(&reply.text, 200)));
                }
            }
            wrong
        });
    }
    let wrong: Vec<String> = match tokio::time::timeout(BUDGET, clients.join_all()).await {
        Ok(lists) => lists.into_iter().flatten().collect(),
        Err(_) => panic!(
            "{TOKENS} requests did not finish within {BUDGET:?} ({} sent)\n{}",
            next.load(Ordering::SeqCst).min(TOKENS),
            stderr_tail(&broker)
        ),
    };
    let elapsed = started.elapsed();
    let fetched = fake.jwks_requests() - fetches_before;

    assert!(
        wrong.is_empty(),
        "{} of {TOKENS} unknown-kid tokens not refused with 400 invalid_request:\n{}",
        wrong.len(),
        wrong.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(
        elapsed < BUDGET,
        "the burst took {elapsed:?}, too close to the cooldown for the fetch count to mean anything"
    );
    assert!(
        fetched <= 1,
        "{fetched} JWKS fetches for {TOKENS} unknown kids in {elapsed:?} (cooldown 30 s)"
    );
    // The broker still serves genuine tokens from its cache.
    assert_accepted(&broker, "control after the burst", &fake.mint(json!({}))).await;
}

// ---------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_issuer_string_variants() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let iss = fake.issuer().to_owned();
    let port = fake.addr().port();
    let other_port = if port == u16::MAX { port - 1 } else { port + 1 };
    let variants = vec![
        ("different port", json!(format!("http://127.0.0.1:{other_port}"))),
        (
            "port with a leading zero",
            json!(format!("http://127.0.0.1:0{port}")),
        ),
        (
            "localhost for 127.0.0.1",
            json!(format!("http://localhost:{port}")),
        ),
        ("array [iss]", json!([iss])),
        ("array [iss, iss]", json!([iss, iss])),
        ("object", json!({"iss": iss})),
        ("trailing space", json!(format!("{iss} "))),
        ("trailing newline", json!(format!("{iss}\n"))),
        ("trailing NUL", json!(format!("{iss}\u{0}"))),
        ("leading space", json!(format!(" {iss}"))),
        ("https instead of http", json!(iss.replace("http://", "https://"))),
        ("path suffix", json!(format!("{iss}/x"))),
        (
            "path suffix of discovery",
            json!(format!("{iss}/.well-known/openid-configuration")),
        ),
        ("query suffix", json!(format!("{iss}?x=1"))),
        ("userinfo prefix", json!(iss.replace("http://", "http://user@"))),
    ];
    let cases: Vec<(String, String)> = variants
        .into_iter()
        .map(|(label, value)| (label.to_owned(), fake.mint(json!({ "iss": value }))))
        .collect();
    assert_refused_but_genuine_accepted(&broker, &cases, &fake, "control: the exact issuer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_variants() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    assert_accepted(
        &broker,
        "aud array containing the configured audience",
        &fake.mint(json!({"aud": ["someone-else", DEFAULT_AUDIENCE]})),
    )
    .await;
    let variants = vec![
        ("array without it", json!(["someone-else", "another"])),
        ("a number", json!(42)),
        ("an empty string", json!("")),
        ("an empty array", json!([])),
        ("trailing slash", json!(format!("{DEFAULT_AUDIENCE}/"))),
        ("different case", json!(DEFAULT_AUDIENCE.to_uppercase())),
        ("trailing space", json!(format!("{DEFAULT_AUDIENCE} "))),
        ("nested array", json!([[DEFAULT_AUDIENCE]])),
        ("an object", json!({"aud": DEFAULT_AUDIENCE})),
        ("true", json!(true)),
    ];
    let cases: Vec<(String, String)> = variants
        .into_iter()
        .map(|(label, value)| (format!("aud {label}"), fake.mint(json!({ "aud": value }))))
        .collect();
    assert_all_refused(&broker, &cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_edges_at_the_skew_boundary() {
    // With 60 s of skew, a value 50 s past a limit is inside it and 70 s past is
    // outside; the 10 s margins keep the outcome independent of request latency.
    let fake = FakeIssuer::start();
    let config =
        crate::support::config_with_rules(&fake, &crate::support::default_rule()).server("clock_skew: 60s");
    let broker = InProcess::start(&config.render()).await;

    let accepted = [
        ("exp = now - 50", json!({"iat": now() - 300, "exp": now() - 50})),
        ("nbf = now + 50", json!({"nbf": now() + 50})),
        ("iat = now + 50", json!({"iat": now() + 50})),
    ];
    for (case, claims) in accepted {
        assert_accepted(&broker, case, &fake.mint(claims)).await;
    }

    let refused = vec![
        ("exp = now - 70", json!({"iat": now() - 300, "exp": now() - 70})),
        ("nbf = now + 70", json!({"nbf": now() + 70})),
        ("iat = now + 70", json!({"iat": now() + 70})),
        ("exp as a string", json!({"exp": (now() + 600).to_string()})),
        ("nbf as a string", json!({"nbf": (now() - 10).to_string()})),
        ("iat as a string", json!({"iat": now().to_string()})),
        ("exp negative", json!({"exp": -1})),
        ("exp as an array", json!({"exp": [now() + 600]})),
        ("exp as a boolean", json!({"exp": false})),
    ];
    let cases: Vec<(String, String)> = refused
        .into_iter()
        .map(|(label, claims)| (label.to_owned(), fake.mint(claims)))
        .collect();
    assert_all_refused(&broker, &cases).await;
}

// ---------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------

/// `depth` nested JSON arrays and objects around a string.
fn nested(depth: usize) -> Value {
    let mut value = json!("core");
    for level in 0..depth {
        value = if level % 2 == 0 {
            json!([value])
        } else {
            json!({ "n": value })
        };
    }
    value
}

/// The JSON text of `claims` with one more `"name": value` member written after the
/// others (serde_json values cannot hold a repeated name).
fn with_repeated_member(claims: &Value, name: &str, value: &Value) -> Vec<u8> {
    let text = serde_json::to_string(claims).expect("JSON");
    let body = text.strip_suffix('}').expect("an object");
    format!("{body},{}:{value}}}", json!(name)).into_bytes()
}

/// The JSON text of `claims` with `"name": value` written before the others.
fn with_leading_member(claims: &Value, name: &str, value: &Value) -> Vec<u8> {
    let text = serde_json::to_string(claims).expect("JSON");
    let body = text.strip_prefix('{').expect("an object");
    format!("{{{}:{value},{body}", json!(name)).into_bytes()
}

/// Standard-alphabet spelling of a base64url text.
fn to_standard_alphabet(text: &str) -> String {
    text.replace('-', "+").replace('_', "/")
}

/// `text` padded with `=` to a multiple of four.
fn padded(text: &str) -> String {
    format!("{text}{}", "=".repeat((4 - text.len() % 4) % 4))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_oversized_and_deeply_nested_tokens() {
    let signer = RawSigner::generate(&random_hex(8));
    let broker = raw_broker(&signer).await;
    let header_json = json!({"alg": "ES256", "typ": "JWT", "kid": signer.kid});
    let header_text = serde_json::to_vec(&header_json).expect("JSON");

    // Control: a large token under 16 KiB goes through.
    let large = signer.sign_claims(&raw_claims(json!({"pad": "x".repeat(10_000)})));
    assert!(large.len() < 16 * 1024, "control token is {} bytes", large.len());
    assert_accepted(&broker, "control: a 13 KiB token", &large).await;

    // Over 16 KiB: refused, and fast.
    for pad in [13_000, 45_000] {
        let token = signer.sign_claims(&raw_claims(json!({"pad": "x".repeat(pad)})));
        assert!(token.len() > 16 * 1024);
        let started = Instant::now();
        let reply = broker.exchange(&token, TARGET).await;
        let elapsed = started.elapsed();
        assert_eq!(
            (reply.status, reply.json["error"].as_str()),
            (400, Some("invalid_request")),
            "{}-byte token: {}",
            token.len(),
            clip(&reply.text, 300)
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "{}-byte token took {elapsed:?} to refuse",
            token.len()
        );
        assert!(!reply.text.contains(&token));
    }

    let claims = raw_claims(json!({}));
    let mut cases = vec![
        (
            "payload nested 100 levels".to_owned(),
            signer.sign_claims(&raw_claims(json!({"deep": nested(100)}))),
        ),
        (
            "header nested 100 levels".to_owned(),
            signer.sign_raw(
                &serde_json::to_vec(&json!({"alg": "ES256", "kid": signer.kid, "x": nested(100)}))
                    .expect("JSON"),
                &serde_json::to_vec(&raw_claims(json!({}))).expect("JSON"),
            ),
        ),
    ];
    for (label, header) in [
        ("duplicate alg (ES256 then none)", {
            let mut h = serde_json::to_string(&header_json).expect("JSON");
            h.insert_str(h.len() - 1, r#","alg":"none""#);
            h
        }),
        ("duplicate alg (none then ES256)", {
            let h = serde_json::to_string(&header_json).expect("JSON");
            format!(r#"{{"alg":"none",{}"#, &h[1..])
        }),
        ("duplicate kid", {
            let mut h = serde_json::to_string(&header_json).expect("JSON");
            h.insert_str(h.len() - 1, r#","kid":"other""#);
            h
        }),
    ] {
        cases.push((
            label.to_owned(),
            signer.sign_raw(
                header.as_bytes(),
                &serde_json::to_vec(&raw_claims(json!({}))).expect("JSON"),
            ),
        ));
    }
    let admin = json!("system:serviceaccount:kube-system:admin");
    let allowed = json!(DEFAULT_SUBJECT);
    for (label, payload) in [
        (
            "duplicate sub (allowed then admin)",
            with_repeated_member(&raw_claims(json!({})), "sub", &admin),
        ),
        (
            "duplicate sub (admin then allowed)",
            with_leading_member(&raw_claims(json!({})), "sub", &admin),
        ),
        (
            "duplicate sub (same value twice)",
            with_repeated_member(&raw_claims(json!({})), "sub", &allowed),
        ),
        (
            "duplicate iss",
            with_leading_member(&raw_claims(json!({})), "iss", &json!("https://evil.example.com")),
        ),
        (
            "duplicate exp",
            with_repeated_member(&raw_claims(json!({})), "exp", &json!(now() + 86_400 * 365)),
        ),
        ("invalid UTF-8 in a claim", {
            let mut text = with_repeated_member(&raw_claims(json!({})), "x", &json!("AB"));
            let at = text.len() - 3;
            text[at] = 0xff;
            text
        }),
        ("invalid UTF-8 in sub", {
            let text = serde_json::to_string(&raw_claims(json!({}))).expect("JSON");
            let mut bytes = text.into_bytes();
            let needle = DEFAULT_SUBJECT.as_bytes();
            let at = bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .expect("sub in the payload");
            bytes[at + needle.len() - 1] = 0xc3; // a lone UTF-8 lead byte
            bytes
        }),
        ("overlong UTF-8 encoding of '/'", {
            let mut text = with_repeated_member(&raw_claims(json!({})), "x", &json!("AB"));
            let at = text.len() - 4;
            text.splice(at..at + 2, [0xc0, 0xaf]);
            text
        }),
    ] {
        cases.push((label.to_owned(), signer.sign_raw(&header_text, &payload)));
    }
    // Invalid UTF-8 in the header.
    let mut bad_header = serde_json::to_string(&header_json).expect("JSON").into_bytes();
    bad_header.splice(bad_header.len() - 1..bad_header.len() - 1, *b",\"x\":\"\xff\"");
    let bad_header_token = signer.sign_raw(
        &bad_header,
        &serde_json::to_vec(&raw_claims(json!({}))).expect("JSON"),
    );
    cases.push(("invalid UTF-8 in the header".to_owned(), bad_header_token));

    // Non-canonical base64 of the very claims the control below presents, each
    // correctly signed over the text as sent.
    let header_b64 = b64url(&header_text);
    let payload_b64 = (0..64)
        .map(|i| {
            let mut c = claims.clone();
            c["pad"] = json!("~?>".repeat(i % 8 + 1) + &"a".repeat(i / 8));
            b64url(&serde_json::to_vec(&c).expect("JSON"))
        })
        .find(|encoded| encoded.contains(['-', '_']) && !encoded.len().is_multiple_of(4))
        .expect("some padding yields '-' or '_' and a length needing '='");
    cases.push((
        "payload with '=' padding".to_owned(),
        signer.sign_encoded(&header_b64, &padded(&payload_b64)),
    ));
    cases.push((
        "payload in the standard alphabet (+ and /)".to_owned(),
        signer.sign_encoded(&header_b64, &to_standard_alphabet(&payload_b64)),
    ));
    if !header_b64.len().is_multiple_of(4) {
        cases.push((
            "header with '=' padding".to_owned(),
            signer.sign_encoded(&padded(&header_b64), &payload_b64),
        ));
    }
    let input = format!("{header_b64}.{payload_b64}");
    let signature_b64 = (0..50)
        .map(|_| b64url(&signer.sign_bytes(input.as_bytes())))
        .find(|s| s.contains(['-', '_']))
        .expect("some ECDSA signature has '-' or '_' in base64url");
    cases.push((
        "signature with '=' padding".to_owned(),
        format!("{input}.{}", padded(&signature_b64)),
    ));
    cases.push((
        "signature in the standard alphabet".to_owned(),
        format!("{input}.{}", to_standard_alphabet(&signature_b64)),
    ));
    cases.push((
        "whitespace inside the payload part".to_owned(),
        signer.sign_encoded(
            &header_b64,
            &format!("{} {}", &payload_b64[..8], &payload_b64[8..]),
        ),
    ));

    assert_all_refused(&broker, &cases).await;

    // The canonical token with the same claims (same jti) is accepted: nothing above
    // was refused for a reason other than its encoding, and nothing burned the jti.
    assert_accepted(
        &broker,
        "control: canonical encoding of the same claims",
        &format!("{input}.{signature_b64}"),
    )
    .await;
    let health = broker.get("/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text);
}

// ---------------------------------------------------------------------------------
// Issuer kinds
// ---------------------------------------------------------------------------------

fn kube_claims(namespace: &str, serviceaccount: &str, sub: &str) -> Value {
    json!({
        "sub": sub,
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": serviceaccount, "uid": "0f3c7d5e-1111-2222-3333-444455556666"},
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_kubernetes_tokens_whose_sub_or_typ_do_not_fit_the_kind() {
    let kube = FakeIssuer::start();
    let kube_at = FakeIssuer::start();
    let config = BrokerConfig::new()
        .issuer(kube.issuer_yaml_with("kube", "kind: kubernetes"))
        .issuer(kube_at.issuer_yaml_with("kube-at", "kind: kubernetes\nallow_access_tokens: true"))
        // The rules admit every service account, so only the kind's checks can refuse.
        .rules(pattern_rule("kube-any-sa", "kube", "system:serviceaccount:*"))
        .rules(pattern_rule(
            "kube-at-any-sa",
            "kube-at",
            "system:serviceaccount:*",
        ));
    let broker = InProcess::start(&config.render()).await;

    let good = kube_claims("ci", "deployer", DEFAULT_SUBJECT);
    assert_accepted(
        &broker,
        "kubernetes token whose sub fits",
        &kube.mint(good.clone()),
    )
    .await;
    let allow = allow_line(&broker, "kube").await;
    assert_eq!(allow["kind"], "kubernetes", "{allow}");
    assert_eq!(
        allow["claims"],
        json!({"namespace": "ci", "serviceaccount": "deployer"}),
        "{allow}"
    );

    let cases = vec![
        (
            "sub names another service account than kubernetes.io",
            kube.mint(kube_claims(
                "ci",
                "deployer",
                "system:serviceaccount:kube-system:admin",
            )),
        ),
        (
            "kubernetes.io names another namespace than sub",
            kube.mint(kube_claims("kube-system", "deployer", DEFAULT_SUBJECT)),
        ),
        (
            "no kubernetes.io claim",
            kube.mint(json!({"sub": DEFAULT_SUBJECT})),
        ),
        (
            "typ at+jwt",
            kube.mint_with_header(json!({"typ": "at+jwt"}), good.clone()),
        ),
        (
            "typ application/at+jwt",
            kube.mint_with_header(json!({"typ": "application/at+jwt"}), good.clone()),
        ),
    ];
    assert_refused_by_kind(&broker, &cases, "kubernetes").await;

    // The same access token from an issuer that allows access tokens.
    assert_accepted(
        &broker,
        "typ at+jwt with allow_access_tokens",
        &kube_at.mint_with_header(json!({"typ": "at+jwt"}), good),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_github_actions_token_whose_sub_is_not_its_repository() {
    let fake = FakeIssuer::start();
    let config = BrokerConfig::new()
        .issuer(fake.issuer_yaml_with("gha", "kind: github-actions"))
        .rules(pattern_rule("gha-any-repo", "gha", "repo:*"));
    let broker = InProcess::start(&config.render()).await;
    let github = |sub: &str, repository: &str| {
        json!({
            "sub": sub,
            "repository": repository,
            "repository_owner": repository.split('/').next().unwrap_or_default(),
            "repository_id": "123456",
            "ref": "refs/heads/main",
            "workflow": "deploy",
            "event_name": "push",
            "actor": "octocat",
            "run_id": "42",
        })
    };

    assert_accepted(
        &broker,
        "a GitHub-shaped token",
        &fake.mint(github("repo:octo-org/app:ref:refs/heads/main", "octo-org/app")),
    )
    .await;
    let allow = allow_line(&broker, "gha").await;
    assert_eq!(allow["kind"], "github-actions", "{allow}");
    assert_eq!(allow["claims"]["repository"], "octo-org/app", "{allow}");

    let mut no_owner = github("repo:octo-org/app:ref:refs/heads/main", "octo-org/app");
    if let Some(members) = no_owner.as_object_mut() {
        members.remove("repository_owner");
    }
    let cases = vec![
        (
            "sub of another repository",
            fake.mint(github("repo:evil-org/app:ref:refs/heads/main", "octo-org/app")),
        ),
        (
            "sub of a repository whose name extends it",
            fake.mint(github(
                "repo:octo-org/app-evil:ref:refs/heads/main",
                "octo-org/app",
            )),
        ),
        (
            "sub of exactly repo:<repository>, no trailing colon",
            fake.mint(github("repo:octo-org/app", "octo-org/app")),
        ),
        ("no repository_owner", fake.mint(no_owner)),
    ];
    assert_refused_by_kind(&broker, &cases, "github-actions").await;
}

#[test]
fn check_rejects_unsafe_issuer_kinds() {
    let guid = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let entra = |tenant: &str| {
        format!("- name: entra\n  kind: azure-entra\n  tenant: {tenant}\n  audiences: [api://fedbroker]\n")
    };
    let with_issuer = |kind: &str, issuer: &str| {
        format!("- name: idp\n  kind: {kind}\n  issuer: {issuer}\n  audiences: [fedbroker]\n")
    };
    let bad = [
        ("azure-entra tenant common", entra("common")),
        ("azure-entra tenant organizations", entra("organizations")),
        ("azure-entra tenant consumers", entra("consumers")),
        (
            "eks with a non-EKS issuer",
            with_issuer("eks", "https://example.com/id/ABCDEF"),
        ),
        ("kind bogus", with_issuer("bogus", "https://idp.example.com")),
        (
            "kind with different case",
            with_issuer("Kubernetes", "https://idp.example.com"),
        ),
    ];
    let good = [
        ("azure-entra with a tenant ID", entra(guid)),
        (
            "eks with an EKS issuer",
            with_issuer(
                "eks",
                "https://oidc.eks.eu-west-1.amazonaws.com/id/ABCDEF0123456789",
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (case, issuer) in bad {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = check_config(dir.path(), &BrokerConfig::new().issuer(&issuer).render());
        if out.code != Some(1) || !out.all().contains("issuers[0]") {
            failures.push(format!("{case}: exit {:?}\n{}", out.code, out.all()));
        }
    }
    for (case, issuer) in good {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = check_config(dir.path(), &BrokerConfig::new().issuer(&issuer).render());
        if out.code != Some(0) {
            failures.push(format!("control {case}: exit {:?}\n{}", out.code, out.all()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

// ---------------------------------------------------------------------------------
// SSRF through configuration
// ---------------------------------------------------------------------------------

#[test]
fn check_rejects_issuer_urls_that_reach_internal_addresses() {
    let urls = [
        "https://localhost",
        "https://LOCALHOST.",
        "https://metadata.localhost",
        "https://127.0.0.1",
        "https://127.1",
        "https://10.0.0.1",
        "https://172.16.0.1",
        "https://192.168.1.1",
        "https://169.254.169.254",
        "https://100.64.0.1",
        "https://0.0.0.0",
        "https://[::1]",
        "https://[::ffff:127.0.0.1]",
        "https://[::ffff:169.254.169.254]",
        "https://[fe80::1]",
        "https://[fd00::1]",
        "https://2130706433",
        "https://0x7f000001",
        "https://017700000001",
        "https://0177.0.0.1",
        "http://example.com",
        "ftp://example.com",
        "file:///etc/passwd",
    ];
    let issuer = |url: &str| {
        format!(
            "- name: {ISSUER_NAME}\n  issuer: \"{url}\"\n  audiences: [fedbroker]\n  algorithms: [RS256]\n"
        )
    };
    let mut failures = Vec::new();
    for url in urls {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = check_config(dir.path(), &BrokerConfig::new().issuer(issuer(url)).render());
        if out.code != Some(1) || !out.all().contains("issuers[0].issuer") {
            failures.push(format!("{url}: exit {:?}\n{}", out.code, out.all()));
        }
    }
    // Control: a public https issuer passes, so the refusals are about the address.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check_config(
        dir.path(),
        &BrokerConfig::new()
            .issuer(issuer("https://issuer.example.com"))
            .render(),
    );
    if out.code != Some(0) {
        failures.push(format!(
            "control https://issuer.example.com: exit {:?}\n{}",
            out.code,
            out.all()
        ));
    }
    assert!(
        failures.is_empty(),
        "issuer URLs not refused (exit 1 naming issuers[0].issuer):\n{}",
        failures.join("\n---\n")
    );
}

// ---------------------------------------------------------------------------------
// The broker's own tokens
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_tokens_fed_back_in_are_refused() {
    let fake = FakeIssuer::start();
    let broker = default_app(&fake).await;
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    let issued = reply.access_token().to_owned();

    let mut form = integration_tests::exchange_form(&issued, TARGET);
    let cases = [
        integration_tests::tokens::TOKEN_TYPE_JWT,
        integration_tests::tokens::TOKEN_TYPE_ACCESS_TOKEN,
    ];
    for token_type in cases {
        form[2] = ("subject_token_type", token_type);
        broker
            .token_request(&form)
            .await
            .assert_error(400, "invalid_request", &issued);
    }
}
