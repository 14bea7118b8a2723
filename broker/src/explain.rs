//! `fedbroker explain`: a dry run of one exchange. It verifies the token as the server
//! would (fetching keys over the network if need be), evaluates every rule of the
//! token's issuer for the requested targets, and prints the decision, the deciding rule,
//! why every other rule did not match, and the claims the issued token would carry.
//! It issues nothing and records no replay. With `--claims FILE` it explains a claims
//! document without any token (for reviewing rule changes before a token exists): no
//! signature, time or audience checks, but the issuer kind's claim checks run through
//! `IssuerKind::check_claims`, the function `/token` applies to a verified token, so the
//! two decide the same claims alike. With `--subject-token-type` aws4_request the subject
//! is a signed AWS GetCallerIdentity request, verified by sending it to its aws-iam
//! issuer's STS endpoint (as `/token` does); it is not marked used.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use federation_rules::{Claims, Decision, Explanation, RuleOutcome};
use serde_json::{Map, Value, json};

use crate::client_cert::ClientCert;
use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::exchange::{
    RulesInput, SubjectTokenType, Targets, TokenError, TokenRole, TokenType, Verified, issued_claims,
    split_scopes, verify_subject, verify_token,
};
use crate::issuer_keys::FetchClients;
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError};

/// What to explain.
#[derive(Debug, Clone, Default)]
pub struct ExplainArgs {
    pub config: PathBuf,
    /// A token, or `@PATH` to read it from a file.
    pub subject_token: Option<String>,
    /// `subject_token_type`'s URN; a JWT when `None`. A signed AWS request
    /// (`aws4_request`) is verified by sending it to STS, as `/token` does.
    pub subject_token_type: Option<String>,
    /// A JSON claims document instead of a token.
    pub claims: Option<PathBuf>,
    /// With `--claims`: the issuer name, when the document has no `iss`.
    pub issuer: Option<String>,
    pub actor_token: Option<String>,
    pub audiences: Vec<String>,
    pub resources: Vec<String>,
    pub scope: Option<String>,
    pub access_token: bool,
    /// As if the request carried a valid DPoP proof.
    pub dpop: bool,
    /// As if the request came with this client certificate.
    pub client_cert: Option<Arc<ClientCert>>,
    pub json: bool,
}

/// The client certificate `--client-cert-uri/-subject/-sha256` describe; `None` when no
/// flag is given. `x5t#S256` follows from the SHA-256 when it is hex of 32 bytes.
pub fn client_cert_arg(
    uri_sans: Vec<String>,
    subject: Option<String>,
    sha256: Option<String>,
) -> Option<Arc<ClientCert>> {
    if uri_sans.is_empty() && subject.is_none() && sha256.is_none() {
        return None;
    }
    let sha256 = sha256.unwrap_or_default().to_ascii_lowercase();
    let bytes: Option<Vec<u8>> = (sha256.len() == 64)
        .then(|| {
            (0..32)
                .map(|i| {
                    sha256
                        .get(2 * i..2 * i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect()
        })
        .flatten();
    let x5t_s256 = match bytes {
        Some(bytes) => base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes),
        None => "(the certificate's SHA-256, base64url)".to_owned(),
    };
    Some(Arc::new(ClientCert {
        uri_sans,
        subject: subject.unwrap_or_default(),
        sha256,
        x5t_s256,
    }))
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

/// Why `explain` cannot explain (exit 1); a refusal is not one of these (exit 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: a claims document must be a JSON object", .0.display())]
    NotAnObject(PathBuf),
    #[error("{}: not JSON: {source}", path.display())]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid configuration:\n{0}")]
    InvalidConfig(config::ConfigErrors),
    #[error("give at least one --audience or --resource")]
    NoTarget,
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("give --subject-token or --claims, not both")]
    BothSubjects,
    #[error("give --subject-token TOKEN|@PATH or --claims FILE")]
    NoSubject,
    /// The token could not be verified for now (keys unavailable): not a decision.
    #[error("{0}")]
    Unavailable(TokenError),
    #[error("no issuer named `{0}` in the configuration")]
    NoIssuerNamed(String),
    #[error("no registered issuer has iss `{0}`; use --issuer NAME")]
    NoIssuerWithIss(String),
    #[error("the claims document has no `iss`; use --issuer NAME")]
    NoIss,
    #[error("unsupported --subject-token-type `{0}`")]
    UnsupportedTokenType(String),
}

fn read_token(value: &str) -> Result<String, ExplainError> {
    match value.strip_prefix('@') {
        Some(path) => crate::files::read_regular_text(Path::new(path), crate::files::MAX_SMALL_BYTES)
            .map(|t| t.trim().to_string())
            .map_err(|source| ExplainError::Read {
                path: path.into(),
                source,
            }),
        None => Ok(value.trim().to_string()),
    }
}

fn read_claims(path: &Path) -> Result<Map<String, Value>, ExplainError> {
    let text = crate::files::read_regular_text(path, crate::files::MAX_CONFIG_BYTES).map_err(|source| {
        ExplainError::Read {
            path: path.into(),
            source,
        }
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ExplainError::NotAnObject(path.into())),
        Err(source) => Err(ExplainError::NotJson {
            path: path.into(),
            source,
        }),
    }
}

/// Read `value` (a token or `@PATH`) and verify it as `role`, as `/token` would. A token
/// `/token` would refuse is `Ok(Err(outcome))`, a decision to report; keys that cannot be
/// had for now are an error, not a decision.
async fn verify_arg(
    policy: &Policy,
    value: &str,
    role: TokenRole,
    subject_type: Option<(SubjectTokenType, std::time::Duration)>,
) -> Result<Result<Verified, Outcome>, ExplainError> {
    let token = read_token(value)?;
    let now = SystemClock.unix();
    let verified = match subject_type {
        Some((ty, sts_timeout)) => verify_subject(policy, &token, ty, role, now, sts_timeout).await,
        None => verify_token(policy, &token, role, now).await,
    };
    match verified {
        Ok(verified) => Ok(Ok(verified)),
        Err(e) if e.is_unavailable() => Err(ExplainError::Unavailable(e)),
        Err(e) => Ok(Err(Outcome::Rejected {
            code: e.code(),
            reason: e.to_string(),
        })),
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

async fn explain(args: &ExplainArgs) -> Result<u8, ExplainError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = config::load(&args.config).map_err(ExplainError::InvalidConfig)?;
    let targets = Targets::new(&args.audiences, &args.resources);
    if targets.all.is_empty() {
        return Err(ExplainError::NoTarget);
    }
    let scopes = split_scopes(args.scope.as_deref());
    let clients = FetchClients::new()?;
    let policy = Policy::build(1, &config, None, &clients, &Arc::new(Metrics::new()), false)?;

    let subject = match (&args.subject_token, &args.claims) {
        (Some(_), Some(_)) => return Err(ExplainError::BothSubjects),
        (None, None) => return Err(ExplainError::NoSubject),
        (Some(token), None) => {
            let ty = match args.subject_token_type.as_deref() {
                None => SubjectTokenType::Jwt,
                Some(urn) => SubjectTokenType::from_urn(urn)
                    .ok_or_else(|| ExplainError::UnsupportedTokenType(urn.to_string()))?,
            };
            let sts_timeout = std::time::Duration::from_secs(config.server.cloud_timeout);
            match verify_arg(&policy, token, TokenRole::Subject, Some((ty, sts_timeout))).await? {
                Ok(verified) => Subject {
                    issuer_name: verified.issuer.config.name.clone(),
                    kind: verified.issuer.config.kind,
                    claims: verified.token.claims,
                    verified: true,
                    actor: None,
                },
                Err(refused) => return Ok(report(args, &config, &targets.all, None, refused)),
            }
        }
        (None, Some(path)) => {
            let claims = read_claims(path)?;
            let issuer_name = match (&args.issuer, claims.get("iss").and_then(Value::as_str)) {
                (Some(name), _) => {
                    if !config.issuers.iter().any(|i| &i.name == name) {
                        return Err(ExplainError::NoIssuerNamed(name.clone()));
                    }
                    name.clone()
                }
                (None, Some(iss)) => policy
                    .issuers
                    .get(iss)
                    .map(|i| i.config.name.clone())
                    .ok_or_else(|| ExplainError::NoIssuerWithIss(iss.to_string()))?,
                (None, None) => return Err(ExplainError::NoIss),
            };
            let issuer = config
                .issuers
                .iter()
                .find(|i| i.name == issuer_name)
                .ok_or_else(|| ExplainError::NoIssuerNamed(issuer_name.clone()))?;
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
                return Ok(report(
                    args,
                    &config,
                    &targets.all,
                    Some(&subject),
                    Outcome::Rejected {
                        code: "invalid_request",
                        reason,
                    },
                ));
            }
            subject
        }
    };

    let actor = match &args.actor_token {
        None => None,
        Some(token) => match verify_arg(&policy, token, TokenRole::Actor, None).await? {
            Ok(verified) => Some(verified),
            Err(refused) => return Ok(report(args, &config, &targets.all, Some(&subject), refused)),
        },
    };
    let input = RulesInput {
        issuer: subject.issuer_name.clone(),
        claims: Claims(subject.claims.clone()),
        actor: actor
            .as_ref()
            .map(|a| (a.issuer.config.name.clone(), Claims(a.token.claims.clone()))),
        targets: targets.clone(),
        scopes,
        requested: if args.access_token {
            TokenType::AccessToken
        } else {
            TokenType::Jwt
        },
        dpop: args.dpop,
        client_cert: args.client_cert.clone(),
    };
    let explanation = policy.rules.explain(&input.request());
    let mut out_subject = subject;
    out_subject.actor = actor
        .as_ref()
        .map(|a| (a.token.subject.clone(), a.token.issuer.clone()));
    Ok(report(
        args,
        &config,
        &targets.all,
        Some(&out_subject),
        Outcome::Evaluated(Box::new(explanation)),
    ))
}

/// The `cnf` the issued token would carry for the sender the arguments describe.
fn confirmation(args: &ExplainArgs) -> Option<Value> {
    let mut cnf = Map::new();
    if args.dpop {
        cnf.insert("jkt".into(), json!("(the DPoP proof key's thumbprint)"));
    }
    if let Some(cert) = &args.client_cert {
        cnf.insert("x5t#S256".into(), json!(cert.x5t_s256));
    }
    (!cnf.is_empty()).then_some(Value::Object(cnf))
}

fn report(
    args: &ExplainArgs,
    config: &Config,
    targets: &[String],
    subject: Option<&Subject>,
    outcome: Outcome,
) -> u8 {
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
                        confirmation(args).as_ref(),
                        "(generated when issued)",
                        SystemClock.unix(),
                    );
                    (EXIT_ALLOW, issued)
                }
                Decision::Deny(_) => (EXIT_DENY, Value::Null),
            };
            let mut d = serde_json::to_value(&expl.decision).unwrap_or(Value::Null);
            if let (Decision::Deny(denial), Some(obj)) = (&expl.decision, d.as_object_mut()) {
                obj.insert(
                    "error".into(),
                    Value::String(crate::error::denial(denial.kind).1.into()),
                );
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
    exit
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
