//! `fedbroker explain`: a dry run of one exchange. It verifies the token as the server
//! would (fetching keys over the network if need be), evaluates every rule of the
//! token's issuer for the requested targets, and prints the decision, the deciding rule,
//! why every other rule did not match, and the claims the issued token would carry.
//! It issues nothing and records no replay. With `--claims FILE` it explains a claims
//! document without any token (for reviewing rule changes before a token exists): no
//! signature, time or audience checks, but the issuer kind's claim checks run through
//! `IssuerKind::check_claims`, the function `/token` applies to a verified token, so the
//! two decide the same claims alike.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use federation_rules::{Actor, Claims, Decision, Explanation, RuleOutcome};
use serde_json::{Map, Value, json};

use crate::app::{Policy, now};
use crate::config::{self, Config};
use crate::exchange::{TT_ACCESS_TOKEN, TT_JWT, issued_claims, split_scopes, union, verify_token};
use crate::issuer_keys::FetchClients;
use crate::metrics::Metrics;

/// What to explain.
#[derive(Debug, Clone, Default)]
pub struct ExplainArgs {
    pub config: PathBuf,
    /// A token, or `@PATH` to read it from a file.
    pub subject_token: Option<String>,
    /// A JSON claims document instead of a token.
    pub claims: Option<PathBuf>,
    /// With `--claims`: the issuer name, when the document has no `iss`.
    pub issuer: Option<String>,
    pub actor_token: Option<String>,
    pub audiences: Vec<String>,
    pub resources: Vec<String>,
    pub scope: Option<String>,
    pub access_token: bool,
    pub json: bool,
}

/// The subject as explain sees it: verified from a token, or taken from a document.
struct Subject {
    issuer_name: String,
    /// The issuer's kind and the claims it calls out.
    kind: issuers::IssuerKind,
    claims: Map<String, Value>,
    verified: bool,
    /// The verified actor's (sub, iss), for delegation.
    actor: Option<(String, String)>,
}

enum Outcome {
    /// The token (or a step before the rules) was refused, as the server would refuse it.
    Rejected {
        code: &'static str,
        reason: String,
    },
    Evaluated(Box<Explanation>),
}

pub const EXIT_ALLOW: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_DENY: u8 = 2;

fn read_token(value: &str) -> Result<String, String> {
    match value.strip_prefix('@') {
        Some(path) => crate::files::read_regular_text(Path::new(path), crate::files::MAX_SMALL_BYTES)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(value.trim().to_string()),
    }
}

fn read_claims(path: &Path) -> Result<Map<String, Value>, String> {
    let text = crate::files::read_regular_text(path, crate::files::MAX_CONFIG_BYTES)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!(
            "{}: a claims document must be a JSON object",
            path.display()
        )),
        Err(e) => Err(format!("{}: not JSON: {e}", path.display())),
    }
}

pub async fn run(args: ExplainArgs) -> ExitCode {
    match explain(&args).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("fedbroker explain: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn explain(args: &ExplainArgs) -> Result<u8, String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = config::load(&args.config).map_err(|e| format!("invalid configuration:\n{e}"))?;
    let audiences = union(&args.audiences, &[]);
    let resources = union(&args.resources, &[]);
    let targets = union(&audiences, &resources);
    if targets.is_empty() {
        return Err("give at least one --audience or --resource".into());
    }
    let scopes = split_scopes(args.scope.as_deref());
    let clients = FetchClients::new().map_err(|e| e.to_string())?;
    let policy = Policy::build(1, &config, None, &clients, &Arc::new(Metrics::new()), false)
        .map_err(|e| e.to_string())?;

    let subject = match (&args.subject_token, &args.claims) {
        (Some(_), Some(_)) => return Err("give --subject-token or --claims, not both".into()),
        (None, None) => return Err("give --subject-token TOKEN|@PATH or --claims FILE".into()),
        (Some(token), None) => {
            let token = read_token(token)?;
            match verify_token(&policy, &token, "subject_token").await {
                Ok((issuer, verified)) => Subject {
                    issuer_name: issuer.config.name.clone(),
                    kind: issuer.config.kind,
                    claims: verified.claims,
                    verified: true,
                    actor: None,
                },
                Err(f) if f.is_unavailable() => return Err(f.reason().to_string()),
                Err(f) => {
                    return report(
                        args,
                        &config,
                        &targets,
                        None,
                        Outcome::Rejected {
                            code: f.code(),
                            reason: f.reason().to_string(),
                        },
                    );
                }
            }
        }
        (None, Some(path)) => {
            let claims = read_claims(path)?;
            let issuer_name = match (&args.issuer, claims.get("iss").and_then(Value::as_str)) {
                (Some(name), _) => {
                    if !config.issuers.iter().any(|i| &i.name == name) {
                        return Err(format!("no issuer named `{name}` in the configuration"));
                    }
                    name.clone()
                }
                (None, Some(iss)) => policy
                    .issuers
                    .get(iss)
                    .map(|i| i.config.name.clone())
                    .ok_or_else(|| format!("no registered issuer has iss `{iss}`; use --issuer NAME"))?,
                (None, None) => return Err("the claims document has no `iss`; use --issuer NAME".into()),
            };
            let issuer = config
                .issuers
                .iter()
                .find(|i| i.name == issuer_name)
                .ok_or_else(|| format!("no issuer named `{issuer_name}` in the configuration"))?;
            let subject = Subject {
                issuer_name: issuer_name.clone(),
                kind: issuer.kind,
                claims,
                verified: false,
                actor: None,
            };
            // `/token` refuses a token without a usable `sub` before any rule runs, and
            // applies the issuer kind's claim checks after the signature verified (the
            // same function): a document `/token` would refuse is refused here too.
            let refusal = if !matches!(subject.claims.get("sub"), Some(Value::String(s)) if !s.is_empty()) {
                Some("subject_token: claim `sub` is missing, empty or not a string".to_string())
            } else {
                issuer
                    .kind
                    .check_claims(&subject.claims, &issuer.kind_params)
                    .err()
                    .map(|e| format!("subject_token: {e}"))
            };
            if let Some(reason) = refusal {
                return report(
                    args,
                    &config,
                    &targets,
                    Some(&subject),
                    Outcome::Rejected {
                        code: "invalid_request",
                        reason,
                    },
                );
            }
            subject
        }
    };

    let actor = match &args.actor_token {
        None => None,
        Some(token) => {
            let token = read_token(token)?;
            match verify_token(&policy, &token, "actor_token").await {
                Ok((issuer, verified)) => Some((issuer.config.name.clone(), verified)),
                Err(f) if f.is_unavailable() => return Err(f.reason().to_string()),
                Err(f) => {
                    return report(
                        args,
                        &config,
                        &targets,
                        Some(&subject),
                        Outcome::Rejected {
                            code: f.code(),
                            reason: f.reason().to_string(),
                        },
                    );
                }
            }
        }
    };
    let claims = Claims(subject.claims.clone());
    let actor_claims = actor.as_ref().map(|(_, v)| Claims(v.claims.clone()));
    let request = federation_rules::Request {
        issuer: &subject.issuer_name,
        claims: &claims,
        audiences: &audiences,
        resources: &resources,
        targets: &targets,
        scopes: &scopes,
        requested_token_type: if args.access_token {
            TT_ACCESS_TOKEN
        } else {
            TT_JWT
        },
        actor: match (&actor, &actor_claims) {
            (Some((name, _)), Some(c)) => Some(Actor {
                issuer: name,
                claims: c,
            }),
            _ => None,
        },
    };
    let explanation = policy.rules.explain(&request);
    let mut out_subject = subject;
    out_subject.actor = actor.as_ref().map(|(_, v)| (v.subject.clone(), v.issuer.clone()));
    report(
        args,
        &config,
        &targets,
        Some(&out_subject),
        Outcome::Evaluated(Box::new(explanation)),
    )
}

fn report(
    args: &ExplainArgs,
    config: &Config,
    targets: &[String],
    subject: Option<&Subject>,
    outcome: Outcome,
) -> Result<u8, String> {
    let (exit, decision_json, rules, issued) = match &outcome {
        Outcome::Rejected { code, reason } => (
            EXIT_DENY,
            json!({"outcome": "deny", "error": code, "reason": reason, "stage": "token"}),
            Vec::new(),
            Value::Null,
        ),
        Outcome::Evaluated(expl) => {
            let (exit, issued) = match &expl.decision {
                Decision::Allow(grant) => {
                    let empty = Map::new();
                    let subject_claims = subject.map(|s| &s.claims).unwrap_or(&empty);
                    let actor = subject.and_then(|s| s.actor.as_ref());
                    let issued = issued_claims(
                        &config.server.public_url,
                        config.server.max_issued_lifetime,
                        grant,
                        subject.map(|s| s.issuer_name.as_str()).unwrap_or_default(),
                        subject_claims,
                        actor.map(|(s, i)| (s.as_str(), i.as_str())),
                        "(generated when issued)",
                        now(),
                    );
                    (EXIT_ALLOW, issued)
                }
                Decision::Deny(_) => (EXIT_DENY, Value::Null),
            };
            let mut d = serde_json::to_value(&expl.decision).unwrap_or(Value::Null);
            if let (Decision::Deny(denial), Some(obj)) = (&expl.decision, d.as_object_mut()) {
                obj.insert("error".into(), Value::String(denial.kind.error_code().into()));
            }
            (exit, d, expl.rules.clone(), issued)
        }
    };
    if args.json {
        let doc = json!({
            "decision": decision_json,
            "subject": subject.map(|s| json!({
                "issuer": s.issuer_name,
                "kind": s.kind.as_str(),
                "kind_claims": s.kind.audit_fields(&s.claims),
                "iss": s.claims.get("iss"),
                "sub": s.claims.get("sub"),
                "verified": s.verified,
            })),
            "targets": targets,
            "rules": rules,
            "issued_claims": issued,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_text(targets, subject, &decision_json, &rules, &issued);
    }
    Ok(exit)
}

fn print_text(
    targets: &[String],
    subject: Option<&Subject>,
    decision: &Value,
    rules: &[RuleOutcome],
    issued: &Value,
) {
    if let Some(s) = subject {
        let str_of = |k: &str| s.claims.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        println!(
            "subject:   {} (issuer `{}`, iss {}){}",
            str_of("sub"),
            s.issuer_name,
            str_of("iss"),
            if s.verified {
                ", token verified"
            } else {
                ", from a claims document (not verified)"
            }
        );
    }
    if let Some(s) = subject {
        let fields = s.kind.audit_fields(&s.claims);
        if !fields.is_empty() {
            let shown: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<10} {}", format!("{}:", s.kind), shown.join(" "));
        }
    }
    println!("targets:   {}", targets.join(", "));
    let field = |k: &str| decision.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    match field("outcome").as_str() {
        "allow" => println!("decision:  ALLOW by rule `{}`", field("rule")),
        _ => {
            let rule = decision.get("rule").and_then(Value::as_str);
            println!(
                "decision:  DENY ({}){}",
                field("error"),
                rule.map(|r| format!(" by rule `{r}`")).unwrap_or_default()
            );
            println!("reason:    {}", field("reason"));
        }
    }
    if !rules.is_empty() {
        println!("rules:");
        for r in rules {
            let status = if r.matched {
                "matched".to_string()
            } else {
                r.reason.clone().unwrap_or_default()
            };
            let note = match (&r.reason, r.matched) {
                (Some(n), true) => format!(" ({n})"),
                _ => String::new(),
            };
            println!("  {:<5} {:<32} {status}{note}", r.effect.to_string(), r.rule);
        }
    }
    if !issued.is_null() {
        println!("issued token claims:");
        println!("{}", serde_json::to_string_pretty(issued).unwrap_or_default());
    }
}
