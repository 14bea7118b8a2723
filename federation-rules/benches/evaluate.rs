//! How `RuleSet::evaluate` scales with the number of rules, and what CEL costs.
//!
//! Rule sets of 10, 1,000 and 100,000 rules spread over 1,000 issuers; every rule has a
//! `subject_pattern`, a `claims` entry and one audience among 100. The request matches
//! exactly one rule. The index on (issuer, target) should keep the time per request flat.
//! Run: `cargo bench -p federation-rules --bench evaluate -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use federation_rules::{Actor, Claims, CompileContext, RawRule, Request, RuleSet};
use serde_json::{Value, json};

const ISSUERS: usize = 1_000;
const AUDIENCES: usize = 100;

fn known_issuer(name: &str) -> bool {
    name.starts_with("issuer-")
}

fn ctx() -> CompileContext<'static> {
    CompileContext {
        issuers: &known_issuer,
        max_lifetime: 3600,
    }
}

/// Rule `i` belongs to issuer `i % 1000` and grants audience `(i / 1000) % 100`, so that the
/// rules of one issuer are spread over the audiences. `condition` adds a CEL condition.
fn raw_rules(count: usize, condition: Option<&str>) -> Vec<RawRule> {
    (0..count)
        .map(|i| {
            let mut matcher = json!({
                "issuer": format!("issuer-{}", i % ISSUERS),
                "subject_pattern": format!("repo:org-{i}/*:ref:refs/heads/main"),
                "claims": {"team": format!("team-{i}")},
                "audiences": [format!("aud-{}", (i / ISSUERS) % AUDIENCES)],
            });
            if let Some(condition) = condition {
                matcher["condition"] = json!(condition);
            }
            let rule = json!({
                "name": format!("rule-{i}"),
                "match": matcher,
                "issue": {"subject": "svc:{claims.team}", "claims": {"repo": "{claims.repository}"}},
            });
            serde_json::from_value(rule).expect("valid rule")
        })
        .collect()
}

fn compile(count: usize, condition: Option<&str>) -> RuleSet {
    RuleSet::compile(raw_rules(count, condition), &ctx()).expect("compiles")
}

struct Owned {
    issuer: String,
    claims: Claims,
    targets: Vec<String>,
}

/// A request that matches rule `i` and no other.
fn request_for(i: usize) -> Owned {
    let Value::Object(claims) = json!({
        "iss": "https://token.actions.githubusercontent.com",
        "sub": format!("repo:org-{i}/api:ref:refs/heads/main"),
        "aud": "https://broker.example.com",
        "team": format!("team-{i}"),
        "repository": format!("org-{i}/api"),
        "environment": "prod",
        "ref": "refs/heads/main",
        "groups": ["dev", "ops", "release"],
    }) else {
        unreachable!()
    };
    Owned {
        issuer: format!("issuer-{}", i % ISSUERS),
        claims: Claims(claims),
        targets: vec![format!("aud-{}", (i / ISSUERS) % AUDIENCES)],
    }
}

fn request(owned: &Owned) -> Request<'_> {
    Request {
        issuer: &owned.issuer,
        claims: &owned.claims,
        audiences: &owned.targets,
        resources: &[],
        targets: &owned.targets,
        scopes: &[],
        requested_token_type: "urn:ietf:params:oauth:token-type:jwt",
        actor: None::<Actor<'_>>,
        dpop: false,
        client_cert: None,
    }
}

/// For each count: `count` rules (each with `condition`, if any), and the time to
/// evaluate a request that matches the last of them.
fn evaluate_rule_counts(c: &mut Criterion, name: &str, counts: &[usize], condition: Option<&str>) {
    let mut group = c.benchmark_group(name);
    for &count in counts {
        // A benchmark measures time; the crate itself never reads the clock.
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        let set = compile(count, condition);
        eprintln!("compile {count} rules: {:?}", started.elapsed());
        let owned = request_for(count - 1);
        assert!(set.evaluate(&request(&owned)).is_allow());
        group.bench_with_input(BenchmarkId::from_parameter(count), &owned, |b, owned| {
            b.iter(|| black_box(set.evaluate(black_box(&request(owned)))))
        });
    }
    group.finish();
}

fn evaluate(c: &mut Criterion) {
    evaluate_rule_counts(c, "evaluate", &[10, 1_000, 100_000], None);
}

fn evaluate_with_condition(c: &mut Criterion) {
    let condition = r#"claims.environment == "prod" && "release" in claims.groups && claims.ref.startsWith("refs/heads/")"#;
    evaluate_rule_counts(c, "evaluate_with_condition", &[10, 100_000], Some(condition));
}

/// Expressions written to be as expensive as the limits allow, on claims of about
/// 10 KiB: one concatenates 56 KiB per iteration, the other scans 8 KiB per iteration.
/// Both exhaust the evaluation budget and are refused; the time is what a refusal costs,
/// the most any evaluation can cost.
fn hostile_conditions(c: &mut Criterion) {
    let cases = [
        (
            "concatenation",
            format!("claims.list.exists(x, size({}) == x)", ["claims.big"; 7].join(" + ")),
        ),
        (
            "scan",
            r#"claims.list.exists(x, claims.big.contains("y") || claims.big.endsWith("z") || claims.big.matches("q+$"))"#.to_owned(),
        ),
        (
            // A Unicode class (an automaton of ~400 states) over 1,024 groups: before
            // patterns were compiled once and charged, each call compiled it again.
            "unicode_matches",
            r#"claims.groups.exists(g, g.matches('\\p{L}+\\p{N}*x'))"#.to_owned(),
        ),
    ];
    let groups: Vec<String> = (0..1024).map(|i| format!("g{i}")).collect();
    let Value::Object(claims) = json!({
        "sub": "s",
        "big": "x".repeat(8 * 1024),
        "list": vec![1; 1024],
        "groups": groups,
    }) else {
        unreachable!()
    };
    let owned = Owned {
        issuer: "issuer-0".to_owned(),
        claims: Claims(claims),
        targets: vec!["aud-0".to_owned()],
    };
    let mut group = c.benchmark_group("hostile_condition");
    for (name, condition) in cases {
        let rules: Vec<RawRule> = serde_json::from_value(json!([{
            "name": "hostile",
            "match": {"issuer": "issuer-0", "condition": condition, "audiences": ["aud-0"]},
        }]))
        .expect("valid rule");
        let set = RuleSet::compile(rules, &ctx()).expect("compiles");
        match set.evaluate(&request(&owned)) {
            federation_rules::Decision::Deny(denial) => eprintln!("hostile {name}: {}", denial.reason),
            other => panic!("{other:?}"),
        }
        group.bench_function(name, |b| {
            b.iter(|| black_box(set.evaluate(black_box(&request(&owned)))))
        });
    }
    group.finish();
}

fn compile_rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for count in [1_000, 100_000] {
        group.bench_function(BenchmarkId::from_parameter(count), |b| {
            b.iter_with_setup(
                || raw_rules(count, None),
                |raw| RuleSet::compile(raw, &ctx()).map(|s| s.len()),
            )
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    evaluate,
    evaluate_with_condition,
    hostile_conditions,
    compile_rules
);
criterion_main!(benches);
