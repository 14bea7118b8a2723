//! The cost of each stage of `POST /token`, apart from HTTP, and of the whole exchange
//! through the router in this process (no socket).
//!
//! Stages: form parse, peek, verify (RS256, ES256, EdDSA), issued claims, sign (RS256,
//! ES256, EdDSA), replay mark (memory), audit record (queued to the writer thread,
//! written to /dev/null), and the exchange end to end with an ES256 subject token and
//! each issued algorithm. Rule evaluation has its own benchmark in federation-rules
//! (`evaluate`), at 10 to 100,000 rules.
//!
//! Run: `cargo bench -p broker --bench stages -- --warm-up-time 1 --measurement-time 3`
//! (docs/performance.md has the figures).

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use broker::audit::{AuditLog, AuditRecord, rfc3339};
use broker::exchange::{GRANT_TYPE, TT_JWT, issued_claims, parse_form};
use broker::metrics::Metrics;
use broker::replay::{MemoryReplayStore, ReplayStore};
use broker::signing::Signer;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use federation_rules::Grant;
use issuers::{Algorithm, IssuerPolicy, KeySet};
use serde_json::{Map, Value, json};

const ISSUER: &str = "https://issuer.bench.example";
const AUDIENCE: &str = "fedbroker";
const ALGS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims of a Kubernetes-like subject token.
fn subject_claims(i: usize) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:ns{i}:sa{i}"),
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": format!("jti-{i}"),
        "kubernetes.io": {"namespace": format!("ns{i}"), "serviceaccount": {"name": format!("sa{i}")}},
    })
}

/// A subject-token issuer: its signer (the broker's own signing code, as any JWS
/// signer) and its public key set.
fn issuer(alg: Algorithm) -> (Signer, KeySet) {
    let signer = Signer::ephemeral(alg).expect("key");
    let keys = KeySet::from_jwks_value(&signer.jwks()).expect("jwks");
    (signer, keys)
}

fn policy(alg: Algorithm) -> IssuerPolicy {
    IssuerPolicy {
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
        algorithms: vec![alg],
        max_token_lifetime: Some(86_400),
        clock_skew: 60,
    }
}

fn form(token: &str) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", GRANT_TYPE)
        .append_pair("subject_token", token)
        .append_pair("subject_token_type", TT_JWT)
        .append_pair("audience", "sts.amazonaws.com")
        .finish()
        .into_bytes()
}

fn grant() -> Grant {
    Grant {
        rule: "r1".into(),
        subject: "system:serviceaccount:ns1:sa1".into(),
        audience: vec!["sts.amazonaws.com".into()],
        lifetime: 900,
        scopes: Vec::new(),
        claims: Map::new(),
        credentials: None,
    }
}

fn stages(c: &mut Criterion) {
    let (es_signer, _) = issuer(Algorithm::ES256);
    let token = es_signer.sign_jwt("JWT", &subject_claims(1)).expect("sign");
    let body = form(&token);
    c.bench_function("form_parse", |b| {
        b.iter(|| parse_form(black_box(&body)).map(|r| r.subject_token.len()).ok())
    });
    c.bench_function("peek", |b| b.iter(|| issuers::peek(black_box(&token)).is_ok()));

    let mut verify = c.benchmark_group("verify");
    for alg in ALGS {
        let (signer, keys) = issuer(alg);
        let token = signer.sign_jwt("JWT", &subject_claims(1)).expect("sign");
        let (policy, now) = (policy(alg), now());
        verify.bench_function(BenchmarkId::from_parameter(alg.as_str()), |b| {
            b.iter(|| {
                let peeked = issuers::peek(black_box(&token)).expect("peek");
                issuers::verify(&peeked, &policy, &keys, now).expect("verifies")
            })
        });
    }
    verify.finish();

    let (grant, claims) = (grant(), subject_claims(1));
    let Value::Object(claims) = claims else {
        unreachable!()
    };
    c.bench_function("issued_claims", |b| {
        b.iter(|| {
            issued_claims(
                "https://broker.example.com",
                3600,
                black_box(&grant),
                "k8s",
                &claims,
                None,
                None,
                "jti",
                1_800_000_000,
            )
        })
    });
    let issued = issued_claims(
        "https://broker.example.com",
        3600,
        &grant,
        "k8s",
        &claims,
        None,
        None,
        "jti",
        1_800_000_000,
    );
    let mut sign = c.benchmark_group("sign");
    for alg in ALGS {
        let signer = Signer::ephemeral(alg).expect("key");
        sign.bench_function(BenchmarkId::from_parameter(alg.as_str()), |b| {
            b.iter(|| signer.sign_jwt("JWT", black_box(&issued)).expect("sign"))
        });
    }
    sign.finish();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = MemoryReplayStore::new();
    let mut n = 0u64;
    c.bench_function("replay_mark_memory", |b| {
        b.iter(|| {
            n += 1;
            let key = broker::replay::token_digest(&n.to_string());
            runtime.block_on(store.mark(&key, 4_000_000_000, 1_800_000_000))
        })
    });

    let metrics = Metrics::new();
    let audit = AuditLog::file(std::path::Path::new("/dev/null"), &metrics).expect("audit sink");
    c.bench_function("audit_record", |b| {
        b.iter(|| {
            runtime.block_on(audit.record(&AuditRecord {
                time: rfc3339(SystemTime::now()),
                event: "token_exchange",
                outcome: "allow",
                rule: Some("r1"),
                issuer: Some("k8s"),
                iss: Some(ISSUER),
                subject: Some("system:serviceaccount:ns1:sa1"),
                target: Value::String("sts.amazonaws.com".into()),
                jti: Some("jti-1"),
                issued_jti: Some("0123456789abcdef0123456789abcdef"),
                replay: Some("recorded"),
                kind: Some("generic"),
                ..Default::default()
            }))
        })
    });
    runtime.block_on(audit.flush());
}

/// The whole exchange through the router: one ES256 issuer with its key inline, one
/// rule, memory replay, the audit log to /dev/null; every request a fresh token.
fn exchange(c: &mut Criterion) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (subject_signer, _) = issuer(Algorithm::ES256);
    let mut group = c.benchmark_group("exchange_in_process");
    for alg in ALGS {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = json!({
            "version": 1,
            "server": {"listen": "127.0.0.1:1", "public_url": "https://broker.example.com"},
            "signing": {"algorithm": alg.as_str(), "key_dir": dir.path().join("keys")},
            "audit": {"path": "/dev/null"},
            "issuers": [{
                "name": "k8s",
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "jwks": *subject_signer.jwks(),
                "algorithms": ["ES256"],
            }],
            "rules": [{
                "name": "r1",
                "match": {"issuer": "k8s", "subject_pattern": "system:serviceaccount:*", "audiences": ["sts.amazonaws.com"]},
            }],
        });
        let path = dir.path().join("fedbroker.yaml");
        std::fs::write(&path, serde_json::to_string(&config).expect("json")).expect("write config");
        let config = broker::config::load(&path).expect("config loads");
        let signer = Signer::from_config(&config.signing).expect("signer");
        let state = runtime
            .block_on(async { broker::app::AppState::build(config, Some(path), signer, None) })
            .expect("state");
        let router = broker::app::app(state);
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("issued", alg.as_str()), |b| {
            b.iter_batched(
                || {
                    i += 1;
                    form(&subject_signer.sign_jwt("JWT", &subject_claims(i)).expect("sign"))
                },
                |body| {
                    let request = Request::post("/token")
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(Body::from(body))
                        .expect("request");
                    let mut router = router.clone();
                    let response = runtime
                        .block_on(tower_service::Service::call(&mut router, request))
                        .expect("infallible");
                    assert_eq!(response.status(), StatusCode::OK);
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, stages, exchange);
criterion_main!(benches);
