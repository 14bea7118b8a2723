//! `fedbroker explain`: a dry run of one exchange. It verifies the token as the server
//! would (fetching keys over the network if need be), evaluates every rule of the
//! token's issuer for the requested targets, and prints the decision, the deciding rule,
//! why every other rule did not match, and the claims the issued token would carry.
//! It issues nothing and records no replay. With `--claims FILE` it explains a claims
//! document without any token (for reviewing rule changes before a token exists): no
//! signature, time or audience checks, but the issuer kind's claim checks run through
//! `IssuerKind::check_claims`, the function `/token` applies to a verified token, so the
//! two decide the same claims alike. A document without `iss` gets its issuer's (every
//! token of the issuer carries it). An actor may come as a claims document too
//! ([`ActorClaims`], `fedbroker test`'s `actor:`), checked the same way. With `--subject-token-type` aws4_request the subject
//! is a signed AWS GetCallerIdentity request, verified by sending it to its aws-iam
//! issuer's STS endpoint (as `/token` does); it is not marked used.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use federation_rules::{Claims, Decision, Explanation};
use serde_json::{Map, Value, json};

use crate::client_cert::ClientCert;
use crate::clock::{Clock, SystemClock};
use crate::config;
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
    /// How the token verified: `None` for a claims document.
    verification: Option<Value>,
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
    #[error("give an actor token or an actor claims document, not both")]
    BothActors,
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

/// One exchange to explain, read and ready: what the CLI's arguments, the admin API's
/// `POST /admin/v1/explain` and the console's form all come down to. Tokens are held
/// here only for the call: never stored, logged or echoed.
#[derive(Default)]
pub struct ExplainInput {
    /// The subject token (a JWT, or a signed AWS request with `subject_token_type`).
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    /// A claims document instead of a token.
    pub claims: Option<Map<String, Value>>,
    /// With `claims`: the issuer name, when the document has no `iss`.
    pub issuer: Option<String>,
    pub actor_token: Option<String>,
    /// An actor as a claims document instead of a token ([`ActorClaims`]).
    pub actor_claims: Option<ActorClaims>,
    pub audiences: Vec<String>,
    pub resources: Vec<String>,
    pub scope: Option<String>,
    pub access_token: bool,
    pub dpop: bool,
    pub client_cert: Option<Arc<ClientCert>>,
}

/// What the explanation needs of the server's settings.
pub struct ExplainContext<'a> {
    pub policy: &'a Policy,
    pub public_url: &'a str,
    pub max_issued_lifetime: u64,
    pub cloud_timeout: std::time::Duration,
    pub now: u64,
}

impl<'a> ExplainContext<'a> {
    /// For the CLI (`explain`, `test`): `policy` built from `config`, the time now.
    pub fn of_config(policy: &'a Policy, config: &'a config::Config) -> ExplainContext<'a> {
        ExplainContext {
            policy,
            public_url: &config.server.public_url,
            max_issued_lifetime: config.server.max_issued_lifetime,
            cloud_timeout: std::time::Duration::from_secs(config.server.cloud_timeout),
            now: SystemClock.unix(),
        }
    }
}

/// An explanation: the document `explain --json` prints, and the exit code it means.
pub struct Explained {
    pub exit: u8,
    pub doc: Value,
}

/// Verify `token` as `role`, as `/token` would. A token `/token` would refuse is
/// `Ok(Err(outcome))`, a decision to report; keys that cannot be had for now are an
/// error, not a decision.
async fn verify_arg(
    ctx: &ExplainContext<'_>,
    token: &str,
    role: TokenRole,
    subject_type: Option<SubjectTokenType>,
) -> Result<Result<Verified, Outcome>, ExplainError> {
    let verified = match subject_type {
        Some(ty) => verify_subject(ctx.policy, token, ty, role, ctx.now, ctx.cloud_timeout).await,
        None => verify_token(ctx.policy, token, role, ctx.now).await,
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

/// How a verified token verified: the issuer, the key and algorithm, the times and the
/// clock skew allowed (the console's verification steps).
fn verification(verified: &Verified, policy_skew: u64) -> Value {
    let t = &verified.token;
    json!({
        "issuer": verified.issuer.config.name,
        "iss": t.issuer,
        "kid": t.header.kid,
        "alg": t.header.alg,
        "audiences": t.audiences,
        "issued_at": t.issued_at,
        "not_before": t.not_before,
        "expires_at": t.expires_at,
        "clock_skew": policy_skew,
        "jti": t.jti.is_some(),
    })
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

/// The CLI: read the configuration and the arguments, explain, print.
async fn explain(args: &ExplainArgs) -> Result<u8, ExplainError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = config::load(&args.config).map_err(ExplainError::InvalidConfig)?;
    let input = ExplainInput {
        subject_token: args.subject_token.as_deref().map(read_token).transpose()?,
        subject_token_type: args.subject_token_type.clone(),
        claims: args.claims.as_deref().map(read_claims).transpose()?,
        issuer: args.issuer.clone(),
        actor_token: args.actor_token.as_deref().map(read_token).transpose()?,
        actor_claims: None,
        audiences: args.audiences.clone(),
        resources: args.resources.clone(),
        scope: args.scope.clone(),
        access_token: args.access_token,
        dpop: args.dpop,
        client_cert: args.client_cert.clone(),
    };
    let clients = FetchClients::new()?;
    let policy = Policy::build(1, &config, None, &clients, &Arc::new(Metrics::new()), false)?;
    let ctx = ExplainContext::of_config(&policy, &config);
    let explained = explain_input(&ctx, &input).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&explained.doc).unwrap_or_default()
        );
    } else {
        print_text(&explained.doc);
    }
    Ok(explained.exit)
}

/// Explain `input` against `ctx.policy`: verify the token (or take the claims
/// document), evaluate every rule of its issuer for the targets, and describe the
/// decision. Issues nothing, records no replay.
/// An actor given as a claims document instead of a token (`fedbroker test`'s
/// `actor: {issuer, claims}`): not verified, but refused as `/token` would refuse an
/// actor token carrying these claims (no usable `sub`, the issuer kind's claim checks).
#[derive(Debug, Clone, Default)]
pub struct ActorClaims {
    /// The issuer name; `None`: the registered issuer whose `iss` the document carries.
    pub issuer: Option<String>,
    pub claims: Map<String, Value>,
}

/// The actor may come as a token (`input.actor_token`) or as a claims document
/// (`input.actor_claims`); giving both is an error. One evaluation for both: the rules
/// see an actor's claims the same way whichever way they came.
pub async fn explain_input(
    ctx: &ExplainContext<'_>,
    input: &ExplainInput,
) -> Result<Explained, ExplainError> {
    let targets = Targets::new(&input.audiences, &input.resources);
    if targets.all.is_empty() {
        return Err(ExplainError::NoTarget);
    }
    let scopes = split_scopes(input.scope.as_deref());
    let policy = ctx.policy;

    let subject = match (&input.subject_token, &input.claims) {
        (Some(_), Some(_)) => return Err(ExplainError::BothSubjects),
        (None, None) => return Err(ExplainError::NoSubject),
        (Some(token), None) => {
            let ty = match input.subject_token_type.as_deref() {
                None => SubjectTokenType::Jwt,
                Some(urn) => SubjectTokenType::from_urn(urn)
                    .ok_or_else(|| ExplainError::UnsupportedTokenType(urn.to_string()))?,
            };
            match verify_arg(ctx, token, TokenRole::Subject, Some(ty)).await? {
                Ok(verified) => Subject {
                    issuer_name: verified.issuer.config.name.clone(),
                    kind: verified.issuer.config.kind,
                    verification: Some(verification(&verified, verified.issuer.config.policy.clock_skew)),
                    claims: verified.token.claims,
                    actor: None,
                },
                Err(refused) => return Ok(report(ctx, input, &targets.all, None, refused)),
            }
        }
        (None, Some(claims)) => {
            let issuer = document_issuer(policy, input.issuer.as_deref(), claims)?;
            let issuer = &issuer.config;
            let subject = Subject {
                issuer_name: issuer.name.clone(),
                kind: issuer.kind,
                claims: with_iss(claims, issuer),
                verification: None,
                actor: None,
            };
            // `/token` refuses a token without a usable `sub` before any rule runs, and
            // applies the issuer kind's claim checks after the signature verified (the
            // same function): a document `/token` would refuse is refused here too.
            if let Some(reason) = document_refusal(TokenRole::Subject, issuer, &subject.claims) {
                return Ok(report(
                    ctx,
                    input,
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

    // The actor: (issuer name, claims, sub, iss).
    let actor: Option<(String, Map<String, Value>, String, String)> =
        match (&input.actor_token, &input.actor_claims) {
            (Some(_), Some(_)) => return Err(ExplainError::BothActors),
            (None, None) => None,
            (Some(token), None) => match verify_arg(ctx, token, TokenRole::Actor, None).await? {
                Ok(verified) => Some((
                    verified.issuer.config.name.clone(),
                    verified.token.claims,
                    verified.token.subject,
                    verified.token.issuer,
                )),
                Err(refused) => return Ok(report(ctx, input, &targets.all, Some(&subject), refused)),
            },
            (None, Some(doc)) => {
                let issuer = document_issuer(policy, doc.issuer.as_deref(), &doc.claims)?;
                let issuer = &issuer.config;
                // An aws-iam issuer takes signed AWS requests only: never an actor token.
                let refusal = if issuer.kind == issuers::IssuerKind::AwsIam {
                    let e = TokenError::UnknownIssuer(TokenRole::Actor);
                    Some((e.code(), e.to_string()))
                } else {
                    document_refusal(TokenRole::Actor, issuer, &doc.claims).map(|r| ("invalid_request", r))
                };
                if let Some((code, reason)) = refusal {
                    let refused = Outcome::Rejected { code, reason };
                    return Ok(report(ctx, input, &targets.all, Some(&subject), refused));
                }
                let claims = with_iss(&doc.claims, issuer);
                let sub = claims
                    .get("sub")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let iss = claims
                    .get("iss")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                Some((issuer.name.clone(), claims, sub, iss))
            }
        };
    let request = RulesInput {
        issuer: subject.issuer_name.clone(),
        claims: Claims(subject.claims.clone()),
        actor: actor
            .as_ref()
            .map(|(name, claims, _, _)| (name.clone(), Claims(claims.clone()))),
        targets: targets.clone(),
        scopes,
        requested: if input.access_token {
            TokenType::AccessToken
        } else {
            TokenType::Jwt
        },
        dpop: input.dpop,
        client_cert: input.client_cert.clone(),
    };
    let explanation = policy.rules.explain(&request.request());
    let mut out_subject = subject;
    out_subject.actor = actor.map(|(_, _, sub, iss)| (sub, iss));
    Ok(report(
        ctx,
        input,
        &targets.all,
        Some(&out_subject),
        Outcome::Evaluated(Box::new(explanation)),
    ))
}

/// The registered issuer of a claims document: the one named `name`, else the one whose
/// `iss` the document carries.
fn document_issuer(
    policy: &Policy,
    name: Option<&str>,
    claims: &Map<String, Value>,
) -> Result<Arc<crate::policy::Issuer>, ExplainError> {
    match (name, claims.get("iss").and_then(Value::as_str)) {
        (Some(name), _) => policy
            .issuer_named(name)
            .cloned()
            .ok_or_else(|| ExplainError::NoIssuerNamed(name.to_owned())),
        (None, Some(iss)) => policy
            .issuers
            .get(iss)
            .cloned()
            .ok_or_else(|| ExplainError::NoIssuerWithIss(iss.to_string())),
        (None, None) => Err(ExplainError::NoIss),
    }
}

/// A claims document of `issuer` as its tokens carry it: with the issuer's `iss` when
/// the document has none (every token of the issuer carries it, and rules may use it).
fn with_iss(claims: &Map<String, Value>, issuer: &crate::config::IssuerConfig) -> Map<String, Value> {
    let mut claims = claims.clone();
    if !claims.contains_key("iss") {
        claims.insert("iss".into(), Value::String(issuer.policy.issuer.clone()));
    }
    claims
}

/// Why `/token` would refuse a token of `issuer` carrying `claims` as its `role` token
/// before any rule runs: no usable `sub`, or the issuer kind's claim checks (the same
/// function `/token` applies after the signature verified). `None`: it would not.
fn document_refusal(
    role: TokenRole,
    issuer: &crate::config::IssuerConfig,
    claims: &Map<String, Value>,
) -> Option<String> {
    let param = role.parameter();
    if !matches!(claims.get("sub"), Some(Value::String(s)) if !s.is_empty()) {
        return Some(format!("{param}: claim `sub` is missing, empty or not a string"));
    }
    issuer
        .kind
        .check_claims(claims, &issuer.kind_params)
        .err()
        .map(|e| format!("{param}: {e}"))
}

/// The `cnf` the issued token would carry for the sender the arguments describe.
fn confirmation(args: &ExplainInput) -> Option<Value> {
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
    ctx: &ExplainContext<'_>,
    input: &ExplainInput,
    targets: &[String],
    subject: Option<&Subject>,
    outcome: Outcome,
) -> Explained {
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
                        ctx.public_url,
                        ctx.max_issued_lifetime,
                        grant,
                        subject.map(|s| s.issuer_name.as_str()).unwrap_or_default(),
                        subject_claims,
                        actor.map(|(s, i)| (s.as_str(), i.as_str())),
                        confirmation(input).as_ref(),
                        "(generated when issued)",
                        ctx.now,
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
    let mut subject_json = subject.map(|s| {
        json!({
            "issuer": s.issuer_name,
            "kind": s.kind.as_str(),
            "kind_claims": s.kind.audit_fields(&s.claims),
            "iss": s.claims.get("iss"),
            "sub": s.claims.get("sub"),
            "verified": s.verification.is_some(),
        })
    });
    if let (Some(obj), Some(v)) = (
        subject_json.as_mut().and_then(Value::as_object_mut),
        subject.and_then(|s| s.verification.clone()),
    ) {
        obj.insert("verification".into(), v);
    }
    let doc = json!({
        "decision": decision_json,
        "subject": subject_json,
        "targets": targets,
        "rules": rules,
        "issued_claims": issued,
    });
    Explained { exit, doc }
}

fn print_text(doc: &Value) {
    let str_at = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let subject = doc.get("subject").filter(|s| !s.is_null());
    if let Some(s) = subject {
        let or_q = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        println!(
            "subject:   {} (issuer `{}`, iss {}){}",
            or_q("sub"),
            str_at(s, "issuer"),
            or_q("iss"),
            if s.get("verified") == Some(&Value::Bool(true)) {
                ", token verified"
            } else {
                ", from a claims document (not verified)"
            }
        );
        if let Some(fields) = s
            .get("kind_claims")
            .and_then(Value::as_object)
            .filter(|f| !f.is_empty())
        {
            let shown: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{:<10} {}", format!("{}:", str_at(s, "kind")), shown.join(" "));
        }
    }
    let targets: Vec<&str> = doc
        .get("targets")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!("targets:   {}", targets.join(", "));
    let decision = &doc["decision"];
    match str_at(decision, "outcome").as_str() {
        "allow" => println!("decision:  ALLOW by rule `{}`", str_at(decision, "rule")),
        _ => {
            let rule = decision.get("rule").and_then(Value::as_str);
            println!(
                "decision:  DENY ({}){}",
                str_at(decision, "error"),
                rule.map(|r| format!(" by rule `{r}`")).unwrap_or_default()
            );
            println!("reason:    {}", str_at(decision, "reason"));
        }
    }
    let rules = doc
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !rules.is_empty() {
        println!("rules:");
        for r in &rules {
            let matched = r.get("matched") == Some(&Value::Bool(true));
            let reason = r.get("reason").and_then(Value::as_str);
            let status = if matched {
                "matched".to_string()
            } else {
                reason.unwrap_or_default().to_string()
            };
            let note = match (reason, matched) {
                (Some(n), true) => format!(" ({n})"),
                _ => String::new(),
            };
            println!(
                "  {:<5} {:<32} {status}{note}",
                str_at(r, "effect"),
                str_at(r, "rule")
            );
        }
    }
    let issued = &doc["issued_claims"];
    if !issued.is_null() {
        println!("issued token claims:");
        println!("{}", serde_json::to_string_pretty(issued).unwrap_or_default());
    }
}
