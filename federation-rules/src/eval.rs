//! Evaluating a request against a [`RuleSet`]: the decision, and an explanation of it.

use std::cell::OnceCell;
use std::fmt::Write as _;

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use serde_json::{Map, Value, json};

use crate::compile::{Condition, IssueValue, IssuerRules, Rule, RuleSet, TokenConditions, ValueTest};
use crate::credentials::{Credentials, CredentialsError, check_aws_tags};
use crate::expr::{EvalError, Expression, JsonError, Runtime, Scope, cel_to_json, type_name};
use crate::raw::Effect;
use crate::template::RenderError;

/// All verified claims of one token, including `iss`, `sub` and `aud`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims(pub Map<String, Value>);

impl From<Map<String, Value>> for Claims {
    fn from(map: Map<String, Value>) -> Claims {
        Claims(map)
    }
}

/// One token-exchange request, after the subject (and actor) token verified.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The `name` of the issuer that verified the subject token.
    pub issuer: &'a str,
    pub claims: &'a Claims,
    /// `audience` values, in request order, deduplicated (CEL: `request.audiences`).
    pub audiences: &'a [String],
    /// `resource` values, in request order, deduplicated (CEL: `request.resources`).
    pub resources: &'a [String],
    /// `audience` and `resource` values together, in request order, deduplicated: what
    /// rules are selected by (CEL: `request.targets`).
    pub targets: &'a [String],
    pub scopes: &'a [String],
    pub requested_token_type: &'a str,
    pub actor: Option<Actor<'a>>,
    /// Whether the request carried a valid DPoP proof (`match.require_dpop`).
    pub dpop: bool,
    /// The verified client certificate of a mutual-TLS request (CEL:
    /// `request.client_cert`; `match.require_client_cert`).
    pub client_cert: Option<CallerCert<'a>>,
}

/// The verified client certificate a request came with, as rules see it.
#[derive(Debug, Clone, Copy)]
pub struct CallerCert<'a> {
    /// URI subject alternative names (a SPIFFE ID is one), in certificate order.
    pub uri_sans: &'a [String],
    /// The subject distinguished name, RFC 4514 form (`CN=api,O=Example`).
    pub subject: &'a str,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub sha256: &'a str,
}

/// The verified actor token of a delegated exchange.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The `name` of the issuer that verified the actor token.
    pub issuer: &'a str,
    pub claims: &'a Claims,
}

/// The outcome of evaluating a request. Serializes as the `decision` of `explain --json`
/// (see the crate docs, "explain --json").
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow(Grant),
    Deny(Denial),
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Decision::Allow(grant) => Some(&grant.rule),
            Decision::Deny(denial) => denial.rule.as_deref(),
        }
    }
}

/// What the issued token carries, as decided by an allow rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grant {
    /// Serialized beside the grant, as the decision's `rule`.
    #[serde(skip_serializing)]
    pub rule: String,
    /// Rendered `issue.audience`, or the requested targets.
    pub audience: Vec<String>,
    /// Rendered `issue.subject`, or the incoming `sub`.
    pub subject: String,
    /// Seconds.
    pub lifetime: u64,
    /// The requested scopes (all allowed by the rule).
    pub scopes: Vec<String>,
    /// Rendered `issue.claims`.
    pub claims: Map<String, Value>,
    /// Rendered `issue.credentials`: what the cloud is asked for, when a request wants
    /// native credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Box<Credentials>>,
}

/// Why a request was refused. `reason` is for the audit log and `explain`, never for
/// the HTTP client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Denial {
    pub kind: DenialKind,
    pub rule: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenialKind {
    /// No allow rule of the issuer grants every requested target: `invalid_target`.
    NoRuleForTarget,
    /// A deny rule matched, no allow rule matched, or the deciding rule could not render
    /// the token: `invalid_request`.
    DeniedByPolicy,
    /// A rule matched but does not allow every requested scope: `invalid_scope`.
    ScopeNotAllowed,
}

impl DenialKind {
    /// The OAuth error code this denial is answered with (RFC 6749 §5.2, RFC 8693 §2.2.2).
    pub fn error_code(self) -> &'static str {
        match self {
            DenialKind::NoRuleForTarget => "invalid_target",
            DenialKind::DeniedByPolicy => "invalid_request",
            DenialKind::ScopeNotAllowed => "invalid_scope",
        }
    }
}

/// The decision plus, for every rule that concerns the request's issuer and targets, whether
/// it matched and why not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub decision: Decision,
    /// In input order. Rules of other issuers, and rules for none of the requested
    /// targets, are not listed: they were never consulted.
    pub rules: Vec<RuleOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleOutcome {
    pub rule: String,
    pub effect: Effect,
    /// Whether every condition of the rule held.
    pub matched: bool,
    /// The first condition that did not hold; for a rule that matched but did not decide,
    /// why not.
    pub reason: Option<String>,
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Decision::Allow(grant) => {
                let mut out = serializer.serialize_struct("Decision", 3)?;
                out.serialize_field("outcome", "allow")?;
                out.serialize_field("rule", &grant.rule)?;
                out.serialize_field("grant", grant)?;
                out.end()
            }
            Decision::Deny(denial) => {
                let mut out = serializer.serialize_struct("Decision", 5)?;
                out.serialize_field("outcome", "deny")?;
                out.serialize_field("rule", &denial.rule)?;
                out.serialize_field("kind", &denial.kind)?;
                out.serialize_field("error", denial.kind.error_code())?;
                out.serialize_field("reason", &denial.reason)?;
                out.end()
            }
        }
    }
}

/// Longest claim value quoted in a reason, in characters.
const MAX_SHOWN_CHARS: usize = 200;
/// Rules named in the "no allow rule matched" summary.
const MAX_SUMMARISED_RULES: usize = 5;

#[cfg(test)]
thread_local! {
    /// How many times a rule's conditions were checked on this thread; tests use it to
    /// prove the index keeps unrelated rules out of evaluation.
    pub(crate) static RULES_CHECKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

type Trace = Vec<(usize, RuleOutcome)>;

/// What every rule checked for one request shares: the CEL variables, built the first
/// time an expression needs them.
struct Inputs<'s, 'r> {
    cel: &'s Runtime,
    req: &'r Request<'r>,
    scope: OnceCell<Scope<'s>>,
}

impl<'s> Inputs<'s, '_> {
    fn scope(&self) -> &Scope<'s> {
        self.scope.get_or_init(|| {
            let req = self.req;
            let request = json!({
                "audiences": req.audiences,
                "resources": req.resources,
                "targets": req.targets,
                "scope": req.scopes.join(" "),
                "scopes": req.scopes,
                "requested_token_type": req.requested_token_type,
                "client_cert": req.client_cert.map(|c| json!({
                    "uri_sans": c.uri_sans,
                    "subject": c.subject,
                    "sha256": c.sha256,
                })),
            });
            self.cel
                .scope(&req.claims.0, request, req.actor.as_ref().map(|a| &a.claims.0))
        })
    }

    /// Evaluates an expression; the error names `field`.
    fn evaluate(&self, field: &str, expr: &Expression) -> Result<cel::Value, FieldEvalError> {
        expr.evaluate(self.scope()).map_err(|error| FieldEvalError {
            field: field.to_owned(),
            error,
        })
    }
}

impl RuleSet {
    /// Decides a request. Deterministic and free of I/O.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        self.decide(req, None)
    }

    /// Decides a request exactly as [`RuleSet::evaluate`] does, and reports what every
    /// rule for the request's issuer and targets made of it.
    pub fn explain(&self, req: &Request<'_>) -> Explanation {
        let mut trace = Trace::new();
        let decision = self.decide(req, Some(&mut trace));
        trace.sort_by_key(|(i, _)| *i);
        Explanation {
            decision,
            rules: trace.into_iter().map(|(_, outcome)| outcome).collect(),
        }
    }

    /// The one decision procedure. With a trace it evaluates every relevant rule instead
    /// of stopping early, but reaches the same decision.
    fn decide(&self, req: &Request<'_>, mut trace: Option<&mut Trace>) -> Decision {
        let inputs = Inputs {
            cel: &self.cel,
            req,
            scope: OnceCell::new(),
        };
        let Some(issuer_rules) = self.index.get(req.issuer) else {
            return denial(
                DenialKind::NoRuleForTarget,
                None,
                format!("no rule concerns issuer `{}`", req.issuer),
            );
        };
        if req.targets.is_empty() {
            return denial(
                DenialKind::NoRuleForTarget,
                None,
                "the request names no target".to_owned(),
            );
        }

        let allow = self.allow_candidates(issuer_rules, req.targets);
        if allow.is_empty() && trace.is_none() {
            return self.no_rule_for_target(issuer_rules, req);
        }
        if let Some(trace) = trace.as_deref_mut() {
            self.trace_partial_allows(issuer_rules, req.targets, &allow, trace);
        }

        // Deny rules first: any match refuses the request, whatever the allow rules say.
        // A deny rule whose condition cannot be evaluated matches (fail closed).
        let mut denied_by: Option<&Rule> = None;
        let mut deny_error: Option<Miss> = None;
        for (i, rule) in self.deny_candidates(issuer_rules, req.targets) {
            let result = check_deny(rule, &inputs);
            let matched = result.is_ok();
            let error = result.as_ref().ok().cloned().flatten();
            if let Some(trace) = trace.as_deref_mut() {
                let reason = match (result, denied_by) {
                    (Err(reason), _) => Some(reason.to_string()),
                    (Ok(error), Some(first)) => Some(match error {
                        Some(error) => format!(
                            "matched ({}), but deny rule `{}` comes first",
                            evaluation_error_note(&error),
                            first.name
                        ),
                        None => format!("matched, but deny rule `{}` comes first", first.name),
                    }),
                    (Ok(error), None) => error.as_ref().map(evaluation_error_note),
                };
                trace.push((i, outcome(rule, matched, reason)));
            }
            if matched && denied_by.is_none() {
                denied_by = Some(rule);
                deny_error = error;
                if trace.is_none() {
                    break;
                }
            }
        }
        if allow.is_empty() {
            return self.no_rule_for_target(issuer_rules, req);
        }
        if let (Some(rule), None) = (denied_by, trace.as_deref()) {
            return deny_rule_matched(rule, deny_error.as_ref());
        }
        // The subject token's own say on who may act for it, whatever the rules allow.
        let may_act = check_may_act(req).err();
        if let (Some(reason), None) = (&may_act, trace.as_deref()) {
            return denial(DenialKind::DeniedByPolicy, None, reason.to_string());
        }

        // Then the allow rules granting every target, in input order.
        let mut decided: Option<(usize, &Rule)> = None;
        let mut scope_refusal: Option<(&Rule, Miss)> = None;
        let mut misses: Vec<(&Rule, Miss)> = Vec::new();
        for (i, rule) in allow {
            let (matched, reason) = match check_allow(rule, &inputs) {
                Err(reason) => {
                    let text = reason.to_string();
                    misses.push((rule, reason));
                    (false, Some(text))
                }
                Ok(()) => match check_scopes(rule, req.scopes) {
                    Err(reason) => {
                        let text = reason.to_string();
                        if scope_refusal.is_none() {
                            scope_refusal = Some((rule, reason));
                        }
                        (false, Some(text))
                    }
                    Ok(()) => match (denied_by, decided) {
                        (Some(deny), _) => (
                            true,
                            Some(format!("matched, but deny rule `{}` takes precedence", deny.name)),
                        ),
                        (None, _) if may_act.is_some() => (
                            true,
                            may_act.as_ref().map(|reason| format!("matched, but {reason}")),
                        ),
                        (None, Some((_, first))) => (
                            true,
                            Some(format!("matched, but rule `{}` comes first", first.name)),
                        ),
                        (None, None) => {
                            decided = Some((i, rule));
                            (true, None)
                        }
                    },
                },
            };
            match trace.as_deref_mut() {
                Some(trace) => trace.push((i, outcome(rule, matched, reason))),
                None if decided.is_some() => break,
                None => {}
            }
        }

        if let Some(rule) = denied_by {
            return deny_rule_matched(rule, deny_error.as_ref());
        }
        if let Some(reason) = may_act {
            return denial(DenialKind::DeniedByPolicy, None, reason.to_string());
        }
        if let Some((i, rule)) = decided {
            return match grant(rule, &inputs) {
                Ok(grant) => Decision::Allow(grant),
                Err(problem) => {
                    if let Some((_, entry)) = trace
                        .into_iter()
                        .flat_map(|t| t.iter_mut())
                        .find(|(j, _)| *j == i)
                    {
                        entry.reason = Some(problem.to_string());
                    }
                    denial(
                        DenialKind::DeniedByPolicy,
                        Some(&rule.name),
                        format!("rule `{}` matched, but {problem}", rule.name),
                    )
                }
            };
        }
        if let Some((rule, reason)) = scope_refusal {
            return denial(
                DenialKind::ScopeNotAllowed,
                Some(&rule.name),
                format!("rule `{}` matched, but {reason}", rule.name),
            );
        }
        denial(DenialKind::DeniedByPolicy, None, summarise_misses(&misses))
    }

    /// Allow rules of the issuer whose `audiences` hold every requested target, in input
    /// order. Walks only the shortest per-target list.
    fn allow_candidates<'s>(
        &'s self,
        issuer_rules: &'s IssuerRules,
        targets: &[String],
    ) -> Vec<(usize, &'s Rule)> {
        let mut shortest: Option<&[usize]> = None;
        for target in targets {
            match issuer_rules.allow_by_target.get(target.as_str()).map(|l| &**l) {
                None => return Vec::new(),
                Some(list) if shortest.is_none_or(|s| list.len() < s.len()) => shortest = Some(list),
                Some(_) => {}
            }
        }
        shortest
            .into_iter()
            .flatten()
            .filter_map(|&i| self.rules.get(i).map(|rule| (i, rule)))
            .filter(|(_, rule)| targets.iter().all(|t| grants(rule, t)))
            .collect()
    }

    /// Deny rules of the issuer for every target or for any requested one, in input order.
    fn deny_candidates<'s>(
        &'s self,
        issuer_rules: &'s IssuerRules,
        targets: &[String],
    ) -> Vec<(usize, &'s Rule)> {
        let mut indexes: Vec<usize> = issuer_rules.deny_any_target.to_vec();
        for target in targets {
            if let Some(list) = issuer_rules.deny_by_target.get(target.as_str()) {
                indexes.extend_from_slice(list);
            }
        }
        indexes.sort_unstable();
        indexes.dedup();
        indexes
            .into_iter()
            .filter_map(|i| self.rules.get(i).map(|rule| (i, rule)))
            .collect()
    }

    /// For `explain`: allow rules that grant some requested targets but not all of them.
    fn trace_partial_allows(
        &self,
        issuer_rules: &IssuerRules,
        targets: &[String],
        candidates: &[(usize, &Rule)],
        trace: &mut Trace,
    ) {
        let mut indexes: Vec<usize> = targets
            .iter()
            .filter_map(|t| issuer_rules.allow_by_target.get(t.as_str()))
            .flat_map(|l| l.iter())
            .copied()
            .filter(|i| !candidates.iter().any(|(j, _)| j == i))
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        for i in indexes {
            let Some(rule) = self.rules.get(i) else { continue };
            let missing = targets.iter().find(|t| !grants(rule, t));
            let reason = missing.map(|t| format!("audiences: does not grant the requested target `{t}`"));
            trace.push((i, outcome(rule, false, reason)));
        }
    }

    fn no_rule_for_target(&self, issuer_rules: &IssuerRules, req: &Request<'_>) -> Decision {
        let reason = match req.targets {
            [one] => format!(
                "no allow rule for issuer `{}` grants the target `{one}`",
                req.issuer
            ),
            many => {
                let mut reason = format!(
                    "no allow rule for issuer `{}` grants all of the targets [{}]",
                    req.issuer,
                    many.join(", ")
                );
                if let Some(t) = many
                    .iter()
                    .find(|t| !issuer_rules.allow_by_target.contains_key(t.as_str()))
                {
                    let _ = write!(reason, " (none grants `{t}`)");
                }
                reason
            }
        };
        denial(DenialKind::NoRuleForTarget, None, reason)
    }
}

/// Whether a rule's `audiences` hold `target`.
fn grants(rule: &Rule, target: &str) -> bool {
    rule.audiences.iter().any(|a| **a == *target)
}

fn denial(kind: DenialKind, rule: Option<&str>, reason: String) -> Decision {
    Decision::Deny(Denial {
        kind,
        rule: rule.map(str::to_owned),
        reason,
    })
}

fn deny_rule_matched(rule: &Rule, error: Option<&Miss>) -> Decision {
    let error = error
        .map(|e| format!(" ({})", evaluation_error_note(e)))
        .unwrap_or_default();
    let reason = match &rule.description {
        Some(description) => format!("deny rule `{}` matched{error}: {description}", rule.name),
        None => format!("deny rule `{}` matched{error}", rule.name),
    };
    denial(DenialKind::DeniedByPolicy, Some(&rule.name), reason)
}

/// How a deny rule that matched through an evaluation error says so.
fn evaluation_error_note(error: &Miss) -> String {
    format!("a condition could not be evaluated, which denies: {error}")
}

fn outcome(rule: &Rule, matched: bool, reason: Option<String>) -> RuleOutcome {
    RuleOutcome {
        rule: rule.name.to_string(),
        effect: rule.effect,
        matched,
        reason,
    }
}

fn summarise_misses(misses: &[(&Rule, Miss)]) -> String {
    let mut out = String::from("no allow rule matched");
    for (n, (rule, reason)) in misses.iter().enumerate() {
        if n == MAX_SUMMARISED_RULES {
            let _ = write!(out, "; and {} more", misses.len() - n);
            break;
        }
        let _ = write!(
            out,
            "{} rule `{}`: {reason}",
            if n == 0 { ":" } else { ";" },
            rule.name
        );
    }
    out
}

/// An expression that could not be evaluated, with the field that holds it
/// (`match.condition: no such key: environment`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {error}")]
struct FieldEvalError {
    field: String,
    error: EvalError,
}

/// Why a rule does not match a request: the text of [`RuleOutcome::reason`], and of
/// [`Denial::reason`] through the summary (see the crate's "Reasons").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Miss {
    #[error(
        "actor: the request carries an actor token, but the rule has no `match.actor` (delegation must be granted explicitly)"
    )]
    UngrantedActor,
    #[error("actor: the rule requires an actor token; the request has none")]
    NoActorToken,
    #[error("dpop: the rule requires a DPoP proof (match.require_dpop); the request has none")]
    NoDpopProof,
    #[error(
        "client_cert: the rule requires a client certificate (match.require_client_cert); the request has none"
    )]
    NoClientCert,
    #[error("actor.issuer: expected `{expected}`, got `{got}`")]
    ActorIssuer { expected: String, got: String },
    /// A deny rule limited to scopes the request does not ask for.
    #[error("scopes: the request asks for none of [{}]", .scopes.join(", "))]
    NoDeniedScope { scopes: Vec<String> },
    #[error("scopes: the rule does not allow [{}] (it allows [{}])", .refused.join(", "), .allowed.join(", "))]
    ScopesRefused {
        refused: Vec<String>,
        allowed: Vec<String>,
    },
    #[error(
        "may_act: the subject token's `may_act` claim is {shown}, not an object or a list of objects; no actor is authorized"
    )]
    MayActMalformed { shown: String },
    #[error("may_act: actor {who} is not authorized by the subject token")]
    MayActRefused { who: String },
    /// `sub` or a `claims` / `claim_patterns` entry (`field` written with its prefix).
    #[error("{field}: {problem}")]
    Claim { field: String, problem: ValueMiss },
    #[error("{field}: evaluated to false")]
    ConditionFalse { field: String },
    #[error(transparent)]
    Evaluation(FieldEvalError),
    #[error("{field}: evaluated to a {type_name}, not a bool")]
    NotBool { field: String, type_name: String },
}

/// How a claim fails a `claims` or `claim_patterns` test (the values found are shown
/// shortened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ValueMiss {
    #[error("missing ({})", expected(.values))]
    MissingOneOf { values: Vec<String> },
    #[error("missing (expected a match for \"{pattern}\")")]
    MissingMatch { pattern: String },
    #[error("{}, got {got}", expected(.values))]
    NotOneOf { values: Vec<String>, got: String },
    #[error("does not match \"{pattern}\" (got {got})")]
    NoMatch { pattern: String, got: String },
}

/// Why a rule that decided cannot issue: the request is denied with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum GrantError {
    #[error("the rule has no issuance settings")]
    NoIssue,
    #[error("{field} cannot be rendered: {} {}", .error.placeholder, .error.problem)]
    Render { field: String, error: RenderError },
    /// The default subject, `{sub}`, that the token does not provide.
    #[error("the subject cannot be taken from the token: {} {}", .0.placeholder, .0.problem)]
    DefaultSubject(RenderError),
    #[error("{field}: evaluated to an empty string")]
    EmptySubject { field: String },
    #[error("{field}: evaluated to {shown}, not a string")]
    SubjectNotString { field: String, shown: String },
    #[error("issue.subject: not a template or an expression")]
    SubjectNotTemplate,
    #[error(transparent)]
    Evaluation(#[from] FieldEvalError),
    #[error("{field}: {error}")]
    NotJson { field: String, error: JsonError },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

fn count_check() {
    #[cfg(test)]
    RULES_CHECKED.with(|c| c.set(c.get() + 1));
}

/// Conditions of an allow rule, except scopes.
fn check_allow(rule: &Rule, inputs: &Inputs<'_, '_>) -> Result<(), Miss> {
    count_check();
    let req = inputs.req;
    if rule.require_dpop && !req.dpop {
        return Err(Miss::NoDpopProof);
    }
    if rule.require_client_cert && req.client_cert.is_none() {
        return Err(Miss::NoClientCert);
    }
    check_token(&rule.token, &req.claims.0, "", inputs, &mut None)?;
    match (&rule.actor, &req.actor) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Miss::UngrantedActor),
        (Some(_), _) => check_actor(rule, inputs, &mut None),
    }
}

/// Conditions of a deny rule. A deny rule without `actor` applies whether or not the
/// request is delegated, so that an actor token can never be used to slip past it.
///
/// Fails closed: a condition that cannot be evaluated (a budget or size limit, a missing
/// key, a wrong type) counts as holding, so the rule matches when its other conditions
/// hold. `Ok(Some(error))` is such a match, with the first evaluation error.
fn check_deny(rule: &Rule, inputs: &Inputs<'_, '_>) -> Result<Option<Miss>, Miss> {
    count_check();
    let req = inputs.req;
    let mut error = Some(None);
    check_token(&rule.token, &req.claims.0, "", inputs, &mut error)?;
    if rule.actor.is_some() {
        check_actor(rule, inputs, &mut error)?;
    }
    if !rule.scopes.is_empty() && !req.scopes.iter().any(|s| rule.scopes.contains(s)) {
        return Err(Miss::NoDeniedScope {
            scopes: rule.scopes.to_vec(),
        });
    }
    Ok(error.flatten())
}

/// Where a deny rule keeps the first condition that could not be evaluated: `None` for
/// an allow rule (an error is a miss), `Some(first error)` for a deny rule (an error
/// counts as a match).
type EvaluationErrors = Option<Option<Miss>>;

fn check_actor(rule: &Rule, inputs: &Inputs<'_, '_>, errors: &mut EvaluationErrors) -> Result<(), Miss> {
    let req = inputs.req;
    let Some(conditions) = &rule.actor else {
        return Ok(());
    };
    let Some(actor) = &req.actor else {
        return Err(Miss::NoActorToken);
    };
    if *conditions.issuer != *actor.issuer {
        return Err(Miss::ActorIssuer {
            expected: conditions.issuer.to_string(),
            got: actor.issuer.to_owned(),
        });
    }
    check_token(&conditions.token, &actor.claims.0, "actor.", inputs, errors)
}

/// RFC 8693 §4.4: a subject token with `may_act` names who may act for it. It is an
/// object (`sub`, optionally `iss` and other claims), or, as an extension, a list of
/// them; the actor token must carry every member of one entry with an equal value, and
/// an entry without `sub` authorizes nobody. Anything else in `may_act` refuses every
/// actor: a claim meant to restrict must not be ignored because it is malformed.
fn check_may_act(req: &Request<'_>) -> Result<(), Miss> {
    let (Some(actor), Some(may_act)) = (&req.actor, req.claims.0.get("may_act")) else {
        return Ok(());
    };
    let entries: Option<Vec<&Map<String, Value>>> = match may_act {
        Value::Object(entry) => Some(vec![entry]),
        Value::Array(items) => items.iter().map(Value::as_object).collect(),
        _ => None,
    };
    let Some(entries) = entries else {
        return Err(Miss::MayActMalformed { shown: show(may_act) });
    };
    let authorized = entries.iter().any(|entry| {
        entry.contains_key("sub")
            && entry
                .iter()
                .all(|(key, value)| actor.claims.0.get(key) == Some(value))
    });
    if authorized {
        return Ok(());
    }
    let who = match actor.claims.0.get("sub") {
        Some(sub) => show(sub),
        None => "without `sub`".to_owned(),
    };
    Err(Miss::MayActRefused { who })
}

fn check_scopes(rule: &Rule, scopes: &[String]) -> Result<(), Miss> {
    let refused: Vec<String> = scopes
        .iter()
        .filter(|s| !rule.scopes.contains(s))
        .cloned()
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Miss::ScopesRefused {
            refused,
            allowed: rule.scopes.to_vec(),
        })
    }
}

fn check_token(
    conditions: &TokenConditions,
    claims: &Map<String, Value>,
    prefix: &str,
    inputs: &Inputs<'_, '_>,
    errors: &mut EvaluationErrors,
) -> Result<(), Miss> {
    if let Some(test) = &conditions.subject {
        // `sub` is a single value: an array never matches a subject condition.
        check_value(test, claims.get("sub"), false).map_err(|problem| Miss::Claim {
            field: format!("{prefix}sub"),
            problem,
        })?;
    }
    for condition in &conditions.claims {
        check_value(&condition.test, condition.path.lookup(claims), true).map_err(|problem| Miss::Claim {
            field: format!("{prefix}{}", condition.display),
            problem,
        })?;
    }
    if let Some(condition) = &conditions.condition {
        match check_condition(condition, inputs) {
            Ok(()) => {}
            Err(ConditionFailure::False(reason)) => return Err(reason),
            Err(ConditionFailure::Error(reason)) => match errors {
                // A deny rule: the error counts as a match (fail closed).
                Some(first) => {
                    first.get_or_insert(reason);
                }
                // An allow rule: the error is a miss.
                None => return Err(reason),
            },
        }
    }
    Ok(())
}

/// Why a condition did not hold.
enum ConditionFailure {
    /// It evaluated to `false`.
    False(Miss),
    /// It could not be evaluated (a budget or size limit, a missing key, a wrong type),
    /// or evaluated to something other than a bool.
    Error(Miss),
}

/// A condition holds only when it evaluates to `true`. In an allow rule, `false`, any
/// other value and any error fail it; in a deny rule only `false` does (see
/// [`check_deny`]).
fn check_condition(condition: &Condition, inputs: &Inputs<'_, '_>) -> Result<(), ConditionFailure> {
    match inputs
        .evaluate(&condition.field, &condition.expr)
        .map_err(|e| ConditionFailure::Error(Miss::Evaluation(e)))?
    {
        cel::Value::Bool(true) => Ok(()),
        cel::Value::Bool(false) => Err(ConditionFailure::False(Miss::ConditionFalse {
            field: condition.field.clone(),
        })),
        other => Err(ConditionFailure::Error(Miss::NotBool {
            field: condition.field.clone(),
            type_name: type_name(&other),
        })),
    }
}

/// Whether a claim satisfies a test; on failure, what was expected and what was found.
fn check_value(test: &ValueTest, value: Option<&Value>, any_element: bool) -> Result<(), ValueMiss> {
    let Some(value) = value else {
        return Err(match test {
            ValueTest::OneOf(values) => ValueMiss::MissingOneOf {
                values: values.clone(),
            },
            ValueTest::Glob(p) => ValueMiss::MissingMatch {
                pattern: p.source().to_owned(),
            },
        });
    };
    let matched = match value {
        Value::Array(items) if any_element => items.iter().any(|item| scalar_passes(test, item)),
        other => scalar_passes(test, other),
    };
    if matched {
        return Ok(());
    }
    Err(match test {
        ValueTest::OneOf(values) => ValueMiss::NotOneOf {
            values: values.clone(),
            got: show(value),
        },
        ValueTest::Glob(p) => ValueMiss::NoMatch {
            pattern: p.source().to_owned(),
            got: show(value),
        },
    })
}

fn scalar_passes(test: &ValueTest, value: &Value) -> bool {
    let number_text;
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        Value::Number(n) => {
            number_text = n.to_string();
            number_text.as_str()
        }
        Value::Null | Value::Array(_) | Value::Object(_) => return false,
    };
    match test {
        ValueTest::OneOf(values) => values.iter().any(|v| v == text),
        ValueTest::Glob(pattern) => pattern.matches(text),
    }
}

fn expected(values: &[String]) -> String {
    match values {
        [one] => format!("expected \"{one}\""),
        many => format!("expected one of [{}]", many.join(", ")),
    }
}

/// A claim value as JSON, shortened so that one huge claim cannot flood the audit log.
fn show(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn grant(rule: &Rule, inputs: &Inputs<'_, '_>) -> Result<Grant, GrantError> {
    let req = inputs.req;
    let Some(issue) = &rule.issue else {
        return Err(GrantError::NoIssue);
    };
    let claims = &req.claims.0;
    let audience = match &issue.audience {
        Some(template) => vec![
            template
                .render(claims)
                .map_err(|e| cannot_render("issue.audience", e))?,
        ],
        None => req.targets.to_vec(),
    };
    let subject = match &issue.subject {
        IssueValue::Template { template, .. } => template.render(claims).map_err(|e| {
            if issue.subject_is_default {
                GrantError::DefaultSubject(e)
            } else {
                cannot_render("issue.subject", e)
            }
        })?,
        IssueValue::Expr { field, expr } => match evaluate_value(field, expr, inputs)? {
            Value::String(s) if !s.is_empty() => s,
            Value::String(_) => return Err(GrantError::EmptySubject { field: field.clone() }),
            other => {
                return Err(GrantError::SubjectNotString {
                    field: field.clone(),
                    shown: show(&other),
                });
            }
        },
        IssueValue::Literal(_) | IssueValue::Array(_) | IssueValue::Object(_) => {
            return Err(GrantError::SubjectNotTemplate);
        }
    };
    let mut issued = Map::new();
    for (key, value) in &issue.claims {
        issued.insert(key.clone(), render_value(value, claims, inputs)?);
    }
    check_aws_tags(&issued)?;
    let credentials = match &issue.credentials {
        Some(spec) => {
            spec.check_subject(&subject)?;
            Some(Box::new(spec.render(claims)?))
        }
        None => None,
    };
    Ok(Grant {
        rule: rule.name.to_string(),
        audience,
        subject,
        lifetime: issue.lifetime,
        scopes: req.scopes.to_vec(),
        claims: issued,
        credentials,
    })
}

fn cannot_render(field: &str, error: RenderError) -> GrantError {
    GrantError::Render {
        field: field.to_owned(),
        error,
    }
}

/// Evaluates an `{expr: ...}` value and converts the result to JSON.
fn evaluate_value(field: &str, expr: &Expression, inputs: &Inputs<'_, '_>) -> Result<Value, GrantError> {
    let value = inputs.evaluate(field, expr)?;
    cel_to_json(&value).map_err(|error| GrantError::NotJson {
        field: field.to_owned(),
        error,
    })
}

fn render_value(
    value: &IssueValue,
    claims: &Map<String, Value>,
    inputs: &Inputs<'_, '_>,
) -> Result<Value, GrantError> {
    Ok(match value {
        IssueValue::Template { field, template } => {
            Value::String(template.render(claims).map_err(|e| cannot_render(field, e))?)
        }
        IssueValue::Expr { field, expr } => evaluate_value(field, expr, inputs)?,
        IssueValue::Literal(v) => v.clone(),
        IssueValue::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_value(item, claims, inputs))
                .collect::<Result<_, _>>()?,
        ),
        IssueValue::Object(entries) => {
            let mut map = Map::new();
            for (key, item) in entries {
                map.insert(key.clone(), render_value(item, claims, inputs)?);
            }
            Value::Object(map)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{Req, compile};
    use proptest::prelude::*;
    use serde_json::json;

    const TARGET: &str = "sts.amazonaws.com";

    fn gha_claims() -> Value {
        json!({
            "iss": "https://token.actions.githubusercontent.com",
            "sub": "repo:acme/api:ref:refs/heads/main",
            "aud": "https://broker.example.com",
            "repository": "acme/api",
            "repository_owner": "acme",
            "environment": "prod",
            "run_attempt": 1,
            "run_id": 1.0,
            "ref_protected": true,
            "groups": ["dev", "ops", 7, true, ["nested"]],
            "nothing": null,
            "object": {"a": "b"},
            "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "deployer"}},
            "kubernetes": {"io": "dotted"},
            "job_workflow_ref": "acme/workflows/.github/workflows/deploy.yml@refs/heads/main",
        })
    }

    fn deny_of(decision: &Decision) -> &Denial {
        match decision {
            Decision::Deny(denial) => denial,
            Decision::Allow(grant) => panic!("expected a denial, got {grant:#?}"),
        }
    }

    fn grant_of(decision: &Decision) -> &Grant {
        match decision {
            Decision::Allow(grant) => grant,
            Decision::Deny(denial) => panic!("expected a grant, got {denial:#?}"),
        }
    }

    /// One allow rule for github-actions → TARGET with the given `match` additions.
    fn allow_with(matcher: Value) -> RuleSet {
        let mut m = json!({"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET]});
        if let (Value::Object(m), Value::Object(extra)) = (&mut m, matcher) {
            m.extend(extra);
        }
        compile(json!([{"name": "r", "match": m}]))
    }

    #[test]
    fn matchers() {
        // (what, match additions, expected: None = allowed, Some(reason fragment) = denied)
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            (
                "subject exact",
                json!({"subject": "repo:acme/api:ref:refs/heads/main"}),
                None,
            ),
            (
                "subject differs in case",
                json!({"subject": "repo:acme/API:ref:refs/heads/main"}),
                Some(
                    r#"sub: expected "repo:acme/API:ref:refs/heads/main", got "repo:acme/api:ref:refs/heads/main""#,
                ),
            ),
            (
                "subject prefix only",
                json!({"subject": "repo:acme/api"}),
                Some("sub: expected"),
            ),
            (
                "subject pattern",
                json!({"subject_pattern": "repo:acme/*:ref:refs/heads/main"}),
                None,
            ),
            (
                "subject pattern ?",
                json!({"subject_pattern": "repo:acme/ap?:ref:refs/heads/main"}),
                None,
            ),
            (
                "subject pattern anchored",
                json!({"subject_pattern": "repo:acme/*:ref:refs/heads/mai"}),
                Some(
                    r#"sub: does not match "repo:acme/*:ref:refs/heads/mai" (got "repo:acme/api:ref:refs/heads/main")"#,
                ),
            ),
            (
                "claim string",
                json!({"claims": {"repository_owner": "acme"}}),
                None,
            ),
            (
                "claim one of",
                json!({"claims": {"environment": ["staging", "prod"]}}),
                None,
            ),
            (
                "claim none of",
                json!({"claims": {"environment": ["dev", "staging"]}}),
                Some(r#"claims.environment: expected one of [dev, staging], got "prod""#),
            ),
            (
                "claim case",
                json!({"claims": {"repository_owner": "Acme"}}),
                Some(r#"expected "Acme", got "acme""#),
            ),
            ("number claim", json!({"claims": {"run_attempt": 1}}), None),
            (
                "number claim as string",
                json!({"claims": {"run_attempt": "1"}}),
                None,
            ),
            (
                "number claim mismatch",
                json!({"claims": {"run_attempt": "01"}}),
                Some(r#"expected "01", got 1"#),
            ),
            ("float claim text", json!({"claims": {"run_id": "1.0"}}), None),
            (
                "float claim is not integer text",
                json!({"claims": {"run_id": "1"}}),
                Some("got 1.0"),
            ),
            ("bool claim", json!({"claims": {"ref_protected": true}}), None),
            (
                "bool claim as string",
                json!({"claims": {"ref_protected": "true"}}),
                None,
            ),
            (
                "bool claim case",
                json!({"claims": {"ref_protected": "True"}}),
                Some("got true"),
            ),
            (
                "array claim any element",
                json!({"claims": {"groups": "ops"}}),
                None,
            ),
            (
                "array claim number element",
                json!({"claims": {"groups": "7"}}),
                None,
            ),
            (
                "array claim bool element",
                json!({"claims": {"groups": "true"}}),
                None,
            ),
            (
                "array claim nested arrays ignored",
                json!({"claims": {"groups": "nested"}}),
                Some("claims.groups: expected \"nested\", got ["),
            ),
            (
                "array claim no element",
                json!({"claims": {"groups": "admin"}}),
                Some("claims.groups"),
            ),
            (
                "null claim",
                json!({"claims": {"nothing": "null"}}),
                Some("claims.nothing: expected \"null\", got null"),
            ),
            (
                "object claim",
                json!({"claims": {"object": "{\"a\":\"b\"}"}}),
                Some("claims.object: expected"),
            ),
            (
                "missing claim",
                json!({"claims": {"team": "x"}}),
                Some("claims.team: missing (expected \"x\")"),
            ),
            (
                "bracket path",
                json!({"claims": {"[\"kubernetes.io\"].namespace": "prod"}}),
                None,
            ),
            (
                "bracket path all brackets",
                json!({"claims": {"[\"kubernetes.io\"][\"serviceaccount\"][\"name\"]": "deployer"}}),
                None,
            ),
            (
                "dotted path nests",
                json!({"claims": {"kubernetes.io": "dotted"}}),
                None,
            ),
            (
                "bracket path mismatch",
                json!({"claims": {"[\"kubernetes.io\"].namespace": "dev"}}),
                Some(r#"claims["kubernetes.io"].namespace: expected "dev", got "prod""#),
            ),
            (
                "claim pattern",
                json!({"claim_patterns": {"job_workflow_ref": "acme/workflows/.github/workflows/*@refs/heads/main"}}),
                None,
            ),
            (
                "claim pattern anchored",
                json!({"claim_patterns": {"job_workflow_ref": "acme/workflows/*@refs/heads/ma"}}),
                Some(
                    "claims.job_workflow_ref: does not match \"acme/workflows/*@refs/heads/ma\" (got \"acme/workflows/.github/workflows/deploy.yml@refs/heads/main\")",
                ),
            ),
            (
                "claim pattern number",
                json!({"claim_patterns": {"run_attempt": "?"}}),
                None,
            ),
            (
                "claim pattern bool",
                json!({"claim_patterns": {"ref_protected": "t*"}}),
                None,
            ),
            (
                "claim pattern array",
                json!({"claim_patterns": {"groups": "o*"}}),
                None,
            ),
            (
                "claim pattern null",
                json!({"claim_patterns": {"nothing": "*"}}),
                Some("claims.nothing: does not match \"*\" (got null)"),
            ),
            (
                "claim pattern object",
                json!({"claim_patterns": {"object": "*"}}),
                Some("claims.object"),
            ),
            (
                "claim pattern missing",
                json!({"claim_patterns": {"team": "*"}}),
                Some("claims.team: missing (expected a match for \"*\")"),
            ),
            (
                "all conditions, first failure reported",
                json!({"subject_pattern": "repo:acme/*", "claims": {"environment": "dev", "repository_owner": "evil"}}),
                Some("claims.environment"),
            ),
        ];
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);
        for (what, matcher, expected) in cases {
            let set = allow_with(matcher);
            let decision = set.evaluate(&req.request());
            match expected {
                None => assert!(decision.is_allow(), "{what}: {decision:#?}"),
                Some(fragment) => {
                    let denial = deny_of(&decision);
                    assert_eq!(denial.kind, DenialKind::DeniedByPolicy, "{what}");
                    assert_eq!(denial.rule, None, "{what}");
                    assert!(denial.reason.contains(fragment), "{what}: {}", denial.reason);
                    let explained = set.explain(&req.request());
                    assert_eq!(explained.decision, decision, "{what}");
                    let reason = explained.rules[0].reason.as_deref().unwrap_or_default();
                    assert!(reason.contains(fragment), "{what}: {reason}");
                }
            }
        }
    }

    #[test]
    fn sub_must_be_a_single_value() {
        let set = allow_with(json!({"subject": "a"}));
        let req = Req::new("github-actions", json!({"sub": ["a"]}), &[TARGET]);
        assert!(!set.evaluate(&req.request()).is_allow());
        let req = Req::new("github-actions", json!({}), &[TARGET]);
        let reason = deny_of(&set.evaluate(&req.request())).reason.clone();
        assert!(reason.contains("sub: missing (expected \"a\")"), "{reason}");
    }

    #[test]
    fn grant_defaults() {
        let set = allow_with(json!({}));
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);
        let decision = set.evaluate(&req.request());
        assert_eq!(
            grant_of(&decision),
            &Grant {
                rule: "r".into(),
                audience: vec![TARGET.into()],
                subject: "repo:acme/api:ref:refs/heads/main".into(),
                lifetime: crate::DEFAULT_LIFETIME,
                scopes: vec![],
                claims: Map::new(),
                credentials: None,
            }
        );
    }

    #[test]
    fn grant_renders_templates() {
        let set = compile(json!([{
            "name": "tmpl",
            "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET, "other"]},
            "issue": {
                "audience": "aws:{claims.repository_owner}",
                "subject": "gha:{claims.repository}:{{literal}}",
                "lifetime": "30m",
                "claims": {
                    "https://aws.amazon.com/tags": {
                        "principal_tags": {
                            "repo": ["{claims.repository}"],
                            "ns": [r#"{claims["kubernetes.io"].namespace}"#],
                            "sa": r#"{claims["kubernetes.io"]["serviceaccount"]["name"]}"#,
                        },
                        "transitive_tag_keys": ["repo"],
                    },
                    "attempt": "{claims.run_attempt}",
                    "protected": "{claims.ref_protected}",
                    "from": "{iss} {aud}",
                    "{sub}": "keys are not templated",
                    "count": 3,
                    "flag": false,
                    "none": null,
                },
            },
        }]));
        let req = Req::new("github-actions", gha_claims(), &["other", TARGET]);
        let decision = set.evaluate(&req.request());
        let grant = grant_of(&decision);
        assert_eq!(grant.audience, ["aws:acme"]);
        assert_eq!(grant.subject, "gha:acme/api:{literal}");
        assert_eq!(grant.lifetime, 1800);
        assert_eq!(
            Value::Object(grant.claims.clone()),
            json!({
                "https://aws.amazon.com/tags": {
                    "principal_tags": {"repo": ["acme/api"], "ns": ["prod"], "sa": "deployer"},
                    "transitive_tag_keys": ["repo"],
                },
                "attempt": "1",
                "protected": "true",
                "from": "https://token.actions.githubusercontent.com https://broker.example.com",
                "{sub}": "keys are not templated",
                "count": 3,
                "flag": false,
                "none": null,
            })
        );
        // Key order is kept as written.
        let keys: Vec<&str> = grant.claims.keys().map(String::as_str).collect();
        assert_eq!(keys[0], "https://aws.amazon.com/tags");
        assert_eq!(keys[7], "none");
    }

    #[test]
    fn grant_defaults_to_requested_targets_in_order() {
        let set = compile(
            json!([{"name": "r", "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": ["a", "b", "c"]}}]),
        );
        let req = Req::new("github-actions", gha_claims(), &["c", "a"]);
        assert_eq!(grant_of(&set.evaluate(&req.request())).audience, ["c", "a"]);
    }

    #[test]
    fn unrenderable_templates_deny() {
        let cases: &[(&str, Value, &str)] = &[
            (
                "missing claim in subject",
                json!({"subject": "gha:{claims.team}"}),
                "issue.subject cannot be rendered: claims.team is missing",
            ),
            (
                "missing nested",
                json!({"subject": r#"{claims["kubernetes.io"].pod}"#}),
                r#"claims["kubernetes.io"].pod is missing"#,
            ),
            (
                "null",
                json!({"audience": "{claims.nothing}"}),
                "issue.audience cannot be rendered: claims.nothing is null",
            ),
            (
                "object",
                json!({"subject": "{claims.object}"}),
                "claims.object is an object",
            ),
            (
                "multi-valued array",
                json!({"subject": "{claims.groups}"}),
                "claims.groups has 5 values",
            ),
            (
                "deep claim",
                json!({"claims": {"tags": {"repo": ["{claims.team}"]}}}),
                "issue.claims.tags.repo[0] cannot be rendered: claims.team is missing",
            ),
        ];
        for (what, issue, fragment) in cases {
            let set = compile(json!([{
                "name": "r",
                "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET]},
                "issue": issue,
            }]));
            let req = Req::new("github-actions", gha_claims(), &[TARGET]);
            let decision = set.evaluate(&req.request());
            let denial = deny_of(&decision);
            assert_eq!(denial.kind, DenialKind::DeniedByPolicy, "{what}");
            assert_eq!(denial.rule.as_deref(), Some("r"), "{what}");
            assert!(denial.reason.contains(fragment), "{what}: {}", denial.reason);
            assert!(
                denial.reason.starts_with("rule `r` matched, but"),
                "{what}: {}",
                denial.reason
            );
            let explained = set.explain(&req.request());
            assert_eq!(explained.decision, decision);
            assert!(explained.rules[0].matched);
            assert!(
                explained.rules[0]
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains(fragment))
            );
        }
    }

    #[test]
    fn aud_renders_when_single() {
        let set = compile(json!([{
            "name": "r",
            "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET]},
            "issue": {"subject": "{aud}"},
        }]));
        for (aud, want) in [
            (json!("x"), Some("x")),
            (json!(["y"]), Some("y")),
            (json!(["a", "b"]), None),
            (json!([]), None),
        ] {
            let req = Req::new("github-actions", json!({"sub": "s", "aud": aud}), &[TARGET]);
            let decision = set.evaluate(&req.request());
            match want {
                Some(want) => assert_eq!(grant_of(&decision).subject, want),
                None => assert!(deny_of(&decision).reason.contains("aud")),
            }
        }
    }

    #[test]
    fn missing_sub_without_subject_template_denies() {
        let set = allow_with(json!({}));
        let req = Req::new("github-actions", json!({"iss": "x"}), &[TARGET]);
        let denial = deny_of(&set.evaluate(&req.request())).clone();
        assert_eq!(denial.kind, DenialKind::DeniedByPolicy);
        assert!(denial.reason.contains("sub is missing"), "{}", denial.reason);
    }

    fn policy() -> RuleSet {
        compile(json!([
            {"name": "main-deploys", "match": {
                "issuer": "github-actions", "subject": "repo:acme/api:ref:refs/heads/main",
                "audiences": [TARGET, "gcp"], "scopes": ["deploy"]}},
            {"name": "acme-reads", "match": {
                "issuer": "github-actions", "claims": {"repository_owner": "acme"},
                "audiences": [TARGET], "scopes": ["read", "deploy"]}},
            {"name": "no-forks", "effect": "deny", "description": "forks never get credentials",
                "match": {"issuer": "github-actions", "claims": {"repository_owner": "fork"}}},
            {"name": "no-dev-to-gcp", "effect": "deny",
                "match": {"issuer": "github-actions", "claims": {"environment": "dev"}, "audiences": ["gcp"]}},
            {"name": "no-admin-scope", "effect": "deny",
                "match": {"issuer": "github-actions", "scopes": ["admin"]}},
            {"name": "gitlab-any", "match": {"issuer": "gitlab", "allow_any_subject": true, "audiences": [TARGET]}},
        ]))
    }

    fn claims_with(patch: Value) -> Value {
        let mut base = gha_claims();
        if let (Value::Object(base), Value::Object(patch)) = (&mut base, patch) {
            base.extend(patch);
        }
        base
    }

    #[test]
    fn decisions() {
        // (what, issuer, claims patch, targets, scopes, expected: Ok(rule) or Err((kind, rule, fragment)))
        type Expected = Result<&'static str, (DenialKind, Option<&'static str>, &'static str)>;
        type Case = (
            &'static str,
            &'static str,
            Value,
            Vec<&'static str>,
            Vec<&'static str>,
            Expected,
        );
        let cases: Vec<Case> = vec![
            (
                "first matching allow decides",
                "github-actions",
                json!({}),
                vec![TARGET],
                vec![],
                Ok("main-deploys"),
            ),
            (
                "second rule when first misses",
                "github-actions",
                json!({"sub": "repo:acme/web:ref:refs/heads/dev"}),
                vec![TARGET],
                vec![],
                Ok("acme-reads"),
            ),
            (
                "multi-target needs one rule granting all",
                "github-actions",
                json!({}),
                vec![TARGET, "gcp"],
                vec![],
                Ok("main-deploys"),
            ),
            (
                "no rule for target",
                "github-actions",
                json!({}),
                vec!["azure"],
                vec![],
                Err((
                    DenialKind::NoRuleForTarget,
                    None,
                    "no allow rule for issuer `github-actions` grants the target `azure`",
                )),
            ),
            (
                "targets split across rules",
                "github-actions",
                json!({}),
                vec![TARGET, "gcp", "azure"],
                vec![],
                Err((DenialKind::NoRuleForTarget, None, "(none grants `azure`)")),
            ),
            (
                "unknown issuer",
                "k8s",
                json!({}),
                vec![TARGET],
                vec![],
                Err((DenialKind::NoRuleForTarget, None, "no rule concerns issuer `k8s`")),
            ),
            (
                "no target",
                "github-actions",
                json!({}),
                vec![],
                vec![],
                Err((DenialKind::NoRuleForTarget, None, "names no target")),
            ),
            (
                "target covered but nothing matches",
                "github-actions",
                json!({"sub": "repo:other/x", "repository_owner": "other"}),
                vec![TARGET],
                vec![],
                Err((
                    DenialKind::DeniedByPolicy,
                    None,
                    "no allow rule matched: rule `main-deploys`: sub: expected",
                )),
            ),
            (
                "deny wins over a matching allow",
                "github-actions",
                json!({"repository_owner": "fork"}),
                vec![TARGET],
                vec![],
                Err((
                    DenialKind::DeniedByPolicy,
                    Some("no-forks"),
                    "deny rule `no-forks` matched: forks never get credentials",
                )),
            ),
            (
                "deny for a target applies when that target is requested",
                "github-actions",
                json!({"environment": "dev"}),
                vec![TARGET, "gcp"],
                vec![],
                Err((
                    DenialKind::DeniedByPolicy,
                    Some("no-dev-to-gcp"),
                    "deny rule `no-dev-to-gcp` matched",
                )),
            ),
            (
                "deny for another target does not apply",
                "github-actions",
                json!({"environment": "dev"}),
                vec![TARGET],
                vec![],
                Ok("main-deploys"),
            ),
            (
                "allowed scope",
                "github-actions",
                json!({}),
                vec![TARGET],
                vec!["deploy"],
                Ok("main-deploys"),
            ),
            (
                "scope only a later rule allows",
                "github-actions",
                json!({}),
                vec![TARGET],
                vec!["read"],
                Ok("acme-reads"),
            ),
            (
                "scope no matching rule allows",
                "github-actions",
                json!({}),
                vec![TARGET],
                vec!["write"],
                Err((
                    DenialKind::ScopeNotAllowed,
                    Some("main-deploys"),
                    "rule `main-deploys` matched, but scopes: the rule does not allow [write]",
                )),
            ),
            (
                "scope refusal only for otherwise matching rules",
                "github-actions",
                json!({"sub": "x", "repository_owner": "other"}),
                vec![TARGET],
                vec!["write"],
                Err((DenialKind::DeniedByPolicy, None, "no allow rule matched")),
            ),
            (
                "deny rule with scopes",
                "github-actions",
                json!({}),
                vec![TARGET],
                vec!["deploy", "admin"],
                Err((
                    DenialKind::DeniedByPolicy,
                    Some("no-admin-scope"),
                    "no-admin-scope",
                )),
            ),
            (
                "other issuer's rules",
                "gitlab",
                json!({"repository_owner": "fork"}),
                vec![TARGET],
                vec![],
                Ok("gitlab-any"),
            ),
        ];
        let set = policy();
        for (what, issuer, patch, targets, scopes, expected) in cases {
            let req = Req::new(issuer, claims_with(patch), &targets).scopes(&scopes);
            let decision = set.evaluate(&req.request());
            assert_eq!(
                set.explain(&req.request()).decision,
                decision,
                "{what}: explain must agree"
            );
            match expected {
                Ok(rule) => {
                    let grant = grant_of(&decision);
                    assert_eq!(grant.rule, rule, "{what}");
                    assert_eq!(grant.scopes, scopes, "{what}");
                }
                Err((kind, rule, fragment)) => {
                    let denial = deny_of(&decision);
                    assert_eq!(denial.kind, kind, "{what}: {denial:#?}");
                    assert_eq!(denial.rule.as_deref(), rule, "{what}: {denial:#?}");
                    assert!(denial.reason.contains(fragment), "{what}: {}", denial.reason);
                }
            }
        }
    }

    #[test]
    fn denial_kinds_map_to_oauth_errors() {
        assert_eq!(DenialKind::NoRuleForTarget.error_code(), "invalid_target");
        assert_eq!(DenialKind::DeniedByPolicy.error_code(), "invalid_request");
        assert_eq!(DenialKind::ScopeNotAllowed.error_code(), "invalid_scope");
    }

    #[test]
    fn empty_rule_set_denies_everything() {
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);
        let denial = deny_of(&RuleSet::empty().evaluate(&req.request())).clone();
        assert_eq!(denial.kind, DenialKind::NoRuleForTarget);
    }

    #[test]
    fn summary_is_bounded() {
        let rules: Vec<Value> = (0..8)
            .map(|i| json!({"name": format!("r{i}"), "match": {"issuer": "github-actions", "subject": "nobody", "audiences": [TARGET]}}))
            .collect();
        let set = compile(Value::Array(rules));
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);
        let reason = deny_of(&set.evaluate(&req.request())).reason.clone();
        assert!(reason.contains("rule `r4`"), "{reason}");
        assert!(!reason.contains("rule `r5`"), "{reason}");
        assert!(reason.ends_with("; and 3 more"), "{reason}");
    }

    fn delegation_policy() -> RuleSet {
        compile(json!([
            {"name": "no-actor", "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET]}},
            {"name": "agents-may-act", "match": {
                "issuer": "github-actions", "allow_any_subject": true, "audiences": ["delegated"],
                "actor": {"issuer": "agents", "subject_pattern": "agent:*", "claims": {"tier": "trusted"}}}},
            {"name": "no-evil", "effect": "deny", "match": {"issuer": "github-actions", "subject": "evil"}},
        ]))
    }

    #[test]
    fn sender_constraints_require_a_proof_or_a_certificate() {
        let req = || Req::new("github-actions", gha_claims(), &[TARGET]);
        let set = allow_with(json!({"require_dpop": true}));
        assert_eq!(
            deny_of(&set.evaluate(&req().request())).reason,
            "no allow rule matched: rule `r`: dpop: the rule requires a DPoP proof (match.require_dpop); the request has none"
        );
        assert!(set.evaluate(&req().dpop().request()).is_allow());

        let set = allow_with(json!({"require_client_cert": true}));
        let reason = deny_of(&set.evaluate(&req().dpop().request())).reason.clone();
        assert!(
            reason.contains("client_cert: the rule requires a client certificate"),
            "{reason}"
        );
        assert!(
            set.evaluate(&req().client_cert(&[], "CN=a", "00").request())
                .is_allow()
        );

        // A certificate that must match the home token: the SPIFFE ID in both.
        let set = allow_with(json!({
            "require_client_cert": true,
            "condition": "request.client_cert.uri_sans.exists(u, u == 'spiffe://acme/' + claims.repository)",
        }));
        let with = |uri: &str| req().client_cert(&[uri], "CN=api,O=Acme", "ab12");
        assert!(set.evaluate(&with("spiffe://acme/acme/api").request()).is_allow());
        assert!(!set.evaluate(&with("spiffe://acme/other").request()).is_allow());
        let set = allow_with(json!({
            "condition": "request.client_cert == null || request.client_cert.subject == 'CN=api,O=Acme' && request.client_cert.sha256 == 'ab12'",
        }));
        assert!(set.evaluate(&req().request()).is_allow());
        assert!(set.evaluate(&with("spiffe://x").request()).is_allow());
        assert!(
            !set.evaluate(&req().client_cert(&[], "CN=other", "ab12").request())
                .is_allow()
        );
    }

    #[test]
    fn delegation() {
        let set = delegation_policy();
        let agent = json!({"sub": "agent:7", "tier": "trusted"});
        type Case = (
            &'static str,
            Vec<&'static str>,
            Option<(&'static str, Value)>,
            Result<&'static str, &'static str>,
        );
        let cases: Vec<Case> = vec![
            ("no actor, rule without actor", vec![TARGET], None, Ok("no-actor")),
            (
                "actor, rule without actor",
                vec![TARGET],
                Some(("agents", agent.clone())),
                Err("actor: the request carries an actor token, but the rule has no `match.actor`"),
            ),
            (
                "actor, rule with actor",
                vec!["delegated"],
                Some(("agents", agent.clone())),
                Ok("agents-may-act"),
            ),
            (
                "no actor, rule with actor",
                vec!["delegated"],
                None,
                Err("actor: the rule requires an actor token"),
            ),
            (
                "actor from another issuer",
                vec!["delegated"],
                Some(("gitlab", agent.clone())),
                Err("actor.issuer: expected `agents`, got `gitlab`"),
            ),
            (
                "actor subject mismatch",
                vec!["delegated"],
                Some(("agents", json!({"sub": "human:1", "tier": "trusted"}))),
                Err(r#"actor.sub: does not match "agent:*" (got "human:1")"#),
            ),
            (
                "actor claim mismatch",
                vec!["delegated"],
                Some(("agents", json!({"sub": "agent:1", "tier": "new"}))),
                Err(r#"actor.claims.tier: expected "trusted", got "new""#),
            ),
        ];
        for (what, targets, actor, expected) in cases {
            let mut req = Req::new("github-actions", gha_claims(), &targets);
            if let Some((issuer, claims)) = actor {
                req = req.actor(issuer, claims);
            }
            let decision = set.evaluate(&req.request());
            match expected {
                Ok(rule) => assert_eq!(grant_of(&decision).rule, rule, "{what}"),
                Err(fragment) => {
                    let denial = deny_of(&decision);
                    assert_eq!(denial.kind, DenialKind::DeniedByPolicy, "{what}");
                    assert!(denial.reason.contains(fragment), "{what}: {}", denial.reason);
                }
            }
        }
    }

    #[test]
    fn deny_without_actor_applies_to_delegated_requests() {
        let set = delegation_policy();
        let req = Req::new("github-actions", json!({"sub": "evil"}), &["delegated"])
            .actor("agents", json!({"sub": "agent:1", "tier": "trusted"}));
        let decision = set.evaluate(&req.request());
        assert_eq!(decision.rule(), Some("no-evil"));
        assert_eq!(deny_of(&decision).kind, DenialKind::DeniedByPolicy);
    }

    #[test]
    fn explain_lists_only_rules_for_the_issuer_and_targets() {
        let set = policy();
        let req = Req::new(
            "github-actions",
            claims_with(json!({"repository_owner": "fork"})),
            &[TARGET],
        );
        let explanation = set.explain(&req.request());
        let listed: Vec<(&str, Effect, bool, Option<&str>)> = explanation
            .rules
            .iter()
            .map(|o| (o.rule.as_str(), o.effect, o.matched, o.reason.as_deref()))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "main-deploys",
                    Effect::Allow,
                    true,
                    Some("matched, but deny rule `no-forks` takes precedence")
                ),
                (
                    "acme-reads",
                    Effect::Allow,
                    false,
                    Some(r#"claims.repository_owner: expected "acme", got "fork""#)
                ),
                ("no-forks", Effect::Deny, true, None),
                (
                    "no-admin-scope",
                    Effect::Deny,
                    false,
                    Some("scopes: the request asks for none of [admin]")
                ),
            ]
        );
        // `no-dev-to-gcp` (another target) and `gitlab-any` (another issuer) were never consulted.
        assert_eq!(explanation.decision.rule(), Some("no-forks"));
    }

    #[test]
    fn explain_notes_later_matches_and_partial_targets() {
        let set = policy();
        let req = Req::new("github-actions", gha_claims(), &[TARGET, "gcp"]);
        let explanation = set.explain(&req.request());
        let reasons: Vec<(&str, Option<&str>)> = explanation
            .rules
            .iter()
            .map(|o| (o.rule.as_str(), o.reason.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("main-deploys", None),
                (
                    "acme-reads",
                    Some("audiences: does not grant the requested target `gcp`")
                ),
                (
                    "no-forks",
                    Some(r#"claims.repository_owner: expected "fork", got "acme""#)
                ),
                (
                    "no-dev-to-gcp",
                    Some(r#"claims.environment: expected "dev", got "prod""#)
                ),
                (
                    "no-admin-scope",
                    Some("scopes: the request asks for none of [admin]")
                ),
            ]
        );
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);
        let explanation = set.explain(&req.request());
        assert_eq!(
            explanation.rules[1].reason.as_deref(),
            Some("matched, but rule `main-deploys` comes first")
        );
        assert!(explanation.rules[1].matched);
    }

    #[test]
    fn explain_on_no_rule_for_target_still_shows_deny_rules() {
        let set = policy();
        let req = Req::new(
            "github-actions",
            claims_with(json!({"repository_owner": "fork"})),
            &["gcp", "azure"],
        );
        let explanation = set.explain(&req.request());
        assert_eq!(set.evaluate(&req.request()), explanation.decision);
        // A matching deny rule does not turn "no rule grants the target" into a policy denial.
        assert_eq!(deny_of(&explanation.decision).kind, DenialKind::NoRuleForTarget);
        let names: Vec<(&str, bool)> = explanation
            .rules
            .iter()
            .map(|o| (o.rule.as_str(), o.matched))
            .collect();
        assert_eq!(
            names,
            [
                ("main-deploys", false),
                ("no-forks", true),
                ("no-dev-to-gcp", false),
                ("no-admin-scope", false)
            ]
        );
    }

    #[test]
    fn index_keeps_unrelated_rules_out_of_evaluation() {
        let mut rules = Vec::new();
        for i in 0..500 {
            rules.push(
                json!({"name": format!("gitlab-{i}"), "match": {"issuer": "gitlab", "allow_any_subject": true, "audiences": [TARGET]}}),
            );
            rules.push(json!({"name": format!("other-target-{i}"), "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [format!("t{i}")]}}));
            rules.push(json!({"name": format!("deny-other-target-{i}"), "effect": "deny",
                "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [format!("t{i}")]}}));
            rules.push(
                json!({"name": format!("deny-gitlab-{i}"), "effect": "deny", "match": {"issuer": "gitlab"}}),
            );
        }
        rules.push(json!({"name": "the-one", "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET]}}));
        let set = compile(Value::Array(rules));
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);

        RULES_CHECKED.with(|c| c.set(0));
        let decision = set.evaluate(&req.request());
        assert_eq!(decision.rule(), Some("the-one"));
        assert_eq!(RULES_CHECKED.with(|c| c.get()), 1);

        let explanation = set.explain(&req.request());
        assert_eq!(explanation.rules.len(), 1);
        assert_eq!(explanation.rules[0].rule, "the-one");
    }

    #[test]
    fn evaluation_stops_at_the_deciding_rule() {
        let rules: Vec<Value> = (0..50)
            .map(|i| json!({"name": format!("r{i}"), "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET]}}))
            .collect();
        let set = compile(Value::Array(rules));
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);
        RULES_CHECKED.with(|c| c.set(0));
        assert_eq!(set.evaluate(&req.request()).rule(), Some("r0"));
        assert_eq!(RULES_CHECKED.with(|c| c.get()), 1);
    }

    #[test]
    fn decisions_serialize_for_explain_json() {
        let set = policy();
        let req = Req::new("github-actions", gha_claims(), &["azure"]);
        let value = serde_json::to_value(set.explain(&req.request())).expect("serializes");
        assert_eq!(
            value["decision"],
            json!({
                "outcome": "deny",
                "rule": null,
                "kind": "no_rule_for_target",
                "error": "invalid_target",
                "reason": "no allow rule for issuer `github-actions` grants the target `azure`",
            })
        );
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);
        let value = serde_json::to_value(set.explain(&req.request())).expect("serializes");
        assert_eq!(
            value["decision"],
            json!({
                "outcome": "allow",
                "rule": "main-deploys",
                "grant": {
                    "audience": [TARGET],
                    "subject": "repo:acme/api:ref:refs/heads/main",
                    "lifetime": 900,
                    "scopes": [],
                    "claims": {},
                },
            })
        );
        assert_eq!(
            value["rules"][1],
            json!({"rule": "acme-reads", "effect": "allow", "matched": true, "reason": "matched, but rule `main-deploys` comes first"})
        );
    }

    #[test]
    fn conditions() {
        // (what, condition, expected: None = allowed, Some(reason fragment) = denied)
        let cases: Vec<(&str, &str, Option<&str>)> = vec![
            ("true", r#"claims.repository_owner == "acme""#, None),
            (
                "false",
                r#"claims.repository_owner == "evil""#,
                Some("match.condition: evaluated to false"),
            ),
            (
                "missing key denies",
                r#"claims.environment_name == "prod""#,
                Some("match.condition: no such key: environment_name"),
            ),
            (
                "missing key negated still denies",
                r#"claims.environment_name != "prod""#,
                Some("match.condition: no such key: environment_name"),
            ),
            ("has() tests presence", "!has(claims.environment_name)", None),
            (
                "wrong type denies",
                r#"claims.run_attempt > "1""#,
                Some("match.condition: found no matching overload"),
            ),
            (
                "non-bool denies",
                "claims.repository",
                Some("match.condition: evaluated to a string, not a bool"),
            ),
            ("numbers are ints", "claims.run_attempt == 1", None),
            ("bools", "claims.ref_protected", None),
            (
                "nested with brackets",
                r#"claims["kubernetes.io"].namespace == "prod""#,
                None,
            ),
            ("in list", r#""ops" in claims.groups"#, None),
            ("exists", r#"claims.groups.exists(g, g == "dev")"#, None),
            ("regex", r#"claims.repository.matches("^acme/[a-z]+$")"#, None),
            (
                "lowerAscii",
                r#"claims.repository_owner.lowerAscii() == "acme""#,
                None,
            ),
            ("upper", r#"upper(claims.repository_owner) == "ACME""#, None),
            ("split", r#"claims.repository.split("/")[1] == "api""#, None),
            (
                "request audiences",
                r#"request.audiences == ["sts.amazonaws.com"]"#,
                None,
            ),
            ("request resources", "size(request.resources) == 0", None),
            (
                "request targets",
                r#"request.targets[0] == "sts.amazonaws.com""#,
                None,
            ),
            (
                "request scope",
                r#"request.scope == "" && request.scopes == []"#,
                None,
            ),
            (
                "request token type",
                r#"request.requested_token_type == "urn:ietf:params:oauth:token-type:jwt""#,
                None,
            ),
            ("no actor is null", "actor == null", None),
            (
                "actor field without actor",
                r#"actor.sub == "x""#,
                Some("match.condition: field selection on null"),
            ),
            (
                "an error absorbed by || is CEL semantics",
                r#"claims.nope == "x" || true"#,
                None,
            ),
            (
                "division by zero",
                "1 / (claims.run_attempt - 1) == 1",
                Some("match.condition: Division by zero"),
            ),
        ];
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);
        for (what, condition, expected) in cases {
            let set = allow_with(json!({"condition": condition}));
            let decision = set.evaluate(&req.request());
            match expected {
                None => assert!(decision.is_allow(), "{what}: {decision:#?}"),
                Some(fragment) => {
                    let denial = deny_of(&decision);
                    assert_eq!(denial.kind, DenialKind::DeniedByPolicy, "{what}");
                    assert!(denial.reason.contains(fragment), "{what}: {}", denial.reason);
                    let explained = set.explain(&req.request());
                    assert_eq!(explained.decision, decision, "{what}");
                }
            }
        }
    }

    #[test]
    fn conditions_are_checked_after_cheaper_matchers() {
        let set = allow_with(json!({"subject": "nobody", "condition": "claims.missing"}));
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);
        let reason = deny_of(&set.evaluate(&req.request())).reason.clone();
        assert!(reason.contains("sub: expected \"nobody\""), "{reason}");
    }

    #[test]
    fn request_separates_audiences_and_resources() {
        let set = compile(json!([{"name": "r", "match": {
            "issuer": "github-actions", "audiences": ["aud-1", "https://api.example.com"],
            "condition": r#"request.audiences == ["aud-1"] && request.resources == ["https://api.example.com"] && request.scope == "read write""#,
            "scopes": ["read", "write"],
        }}]));
        let req = Req::new("github-actions", gha_claims(), &["aud-1"])
            .resources(&["https://api.example.com"])
            .scopes(&["read", "write"]);
        assert!(set.evaluate(&req.request()).is_allow());
    }

    #[test]
    fn actor_conditions_see_both_tokens() {
        let set = compile(json!([{"name": "r", "match": {
            "issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET],
            "actor": {"issuer": "agents", "condition": r#"actor.tenant == claims.repository_owner"#},
        }}]));
        let ok = Req::new("github-actions", gha_claims(), &[TARGET])
            .actor("agents", json!({"sub": "agent:1", "tenant": "acme"}));
        assert!(set.evaluate(&ok.request()).is_allow());
        let other = Req::new("github-actions", gha_claims(), &[TARGET])
            .actor("agents", json!({"sub": "agent:1", "tenant": "evil"}));
        let reason = deny_of(&set.evaluate(&other.request())).reason.clone();
        assert!(
            reason.contains("match.actor.condition: evaluated to false"),
            "{reason}"
        );
    }

    #[test]
    fn comprehensions_are_bounded_at_run_time() {
        let set = allow_with(json!({"condition": "claims.list.exists(x, x == -1)"}));
        let small = Req::new(
            "github-actions",
            json!({"sub": "s", "list": (0..1024).collect::<Vec<_>>()}),
            &[TARGET],
        );
        let reason = deny_of(&set.evaluate(&small.request())).reason.clone();
        assert!(reason.contains("evaluated to false"), "{reason}");
        let big = Req::new(
            "github-actions",
            json!({"sub": "s", "list": (0..1025).collect::<Vec<_>>()}),
            &[TARGET],
        );
        let reason = deny_of(&set.evaluate(&big.request())).reason.clone();
        assert!(
            reason.contains("may iterate over at most 1024 elements, got 1025"),
            "{reason}"
        );
    }

    #[test]
    fn strings_cannot_grow_without_bound() {
        let big = "x".repeat(40_000);
        let cases: &[(&str, &str)] = &[
            (
                "claims.big + claims.big != \"\"",
                "+: result of 80000 bytes exceeds the limit of 65536",
            ),
            (
                "claims.big.replace(\"x\", \"yy\") != \"\"",
                "replace: result of 80000 bytes exceeds the limit of 65536",
            ),
            (
                "[claims.big, claims.big].join() != \"\"",
                "join: result of 80000 bytes exceeds the limit of 65536",
            ),
            (
                "claims.list.map(x, claims.big).join(\",\") != \"\"",
                "join: result of",
            ),
        ];
        for (condition, fragment) in cases {
            let set = allow_with(json!({"condition": condition}));
            let req = Req::new(
                "github-actions",
                json!({"sub": "s", "big": big, "list": [1, 2, 3]}),
                &[TARGET],
            );
            let reason = deny_of(&set.evaluate(&req.request())).reason.clone();
            assert!(reason.contains(fragment), "{condition}: {reason}");
        }
    }

    #[test]
    fn evaluation_has_a_budget() {
        let cases: &[(&str, Option<&str>)] = &[
            // 300 iterations scanning 1,000 bytes each: within the budget.
            (
                r#"claims.list.exists(x, claims.big.contains("y"))"#,
                Some("evaluated to false"),
            ),
            // 1,024 iterations scanning 1,000 bytes each: over it.
            (
                r#"claims.long.exists(x, claims.big.contains("y"))"#,
                Some("the expression exceeds its evaluation budget of 1000000 units"),
            ),
            (
                "claims.long.exists(x, size(claims.big + claims.big) == 0)",
                Some("the expression exceeds its evaluation budget"),
            ),
            (r#"claims.long.exists(x, x == 1023)"#, None),
        ];
        for (condition, expected) in cases {
            let set = allow_with(json!({"condition": condition}));
            let req = Req::new(
                "github-actions",
                json!({"sub": "s", "big": "x".repeat(1000), "list": vec![0; 300], "long": (0..1024).collect::<Vec<_>>()}),
                &[TARGET],
            );
            let decision = set.evaluate(&req.request());
            match expected {
                None => assert!(decision.is_allow(), "{condition}: {decision:#?}"),
                Some(fragment) => {
                    let reason = deny_of(&decision).reason.clone();
                    assert!(reason.contains(fragment), "{condition}: {reason}");
                }
            }
        }
    }

    #[test]
    fn a_deny_rule_whose_condition_errors_denies() {
        let set = compile(json!([
            {"name": "no-admins", "effect": "deny", "description": "admins use the break-glass path",
             "match": {"issuer": "github-actions", "condition": r#"claims.groups.exists(g, g == "admins")"#}},
            {"name": "everyone", "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET]}},
        ]));
        let groups = |n: usize| (0..n).map(|i| format!("g{i}")).collect::<Vec<_>>();
        // (what, claims, expected: None = allowed, Some(the evaluation error in the reason))
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            ("no admins", json!({"sub": "s", "groups": groups(3)}), None),
            (
                "1,024 groups: within the limit",
                json!({"sub": "s", "groups": groups(1024)}),
                None,
            ),
            (
                "1,025 groups: over the iteration limit",
                json!({"sub": "s", "groups": groups(1025)}),
                Some("match.condition: comprehension: may iterate over at most 1024 elements, got 1025"),
            ),
            (
                "no groups claim",
                json!({"sub": "s"}),
                Some("match.condition: no such key: groups"),
            ),
            (
                "groups of the wrong type",
                json!({"sub": "s", "groups": 7}),
                Some("match.condition: "),
            ),
        ];
        for (what, claims, expected) in cases {
            let req = Req::new("github-actions", claims, &[TARGET]);
            let decision = set.evaluate(&req.request());
            let explained = set.explain(&req.request());
            assert_eq!(explained.decision, decision, "{what}");
            match expected {
                None => assert!(decision.is_allow(), "{what}: {decision:#?}"),
                Some(error) => {
                    let denial = deny_of(&decision);
                    assert_eq!(denial.rule.as_deref(), Some("no-admins"), "{what}");
                    assert_eq!(denial.kind, DenialKind::DeniedByPolicy, "{what}");
                    assert!(
                        denial.reason.starts_with(
                            "deny rule `no-admins` matched (a condition could not be evaluated, which denies: "
                        ) && denial.reason.contains(error)
                            && denial.reason.ends_with("): admins use the break-glass path"),
                        "{what}: {}",
                        denial.reason
                    );
                    let deny = &explained.rules[0];
                    assert!(deny.matched, "{what}: {deny:?}");
                    assert!(
                        deny.reason.as_deref().is_some_and(|r| r.contains(error)),
                        "{what}: {deny:?}"
                    );
                    assert_eq!(
                        explained.rules[1].reason.as_deref(),
                        Some("matched, but deny rule `no-admins` takes precedence"),
                        "{what}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_deny_rule_fails_closed_only_on_its_condition() {
        let set = compile(json!([
            // A condition that evaluates to a string is an error too.
            {"name": "not-a-bool", "effect": "deny",
             "match": {"issuer": "github-actions", "subject": "typed", "condition": "claims.sub"}},
            // The other conditions still decide whether the rule applies.
            {"name": "only-bob", "effect": "deny",
             "match": {"issuer": "github-actions", "subject": "bob", "condition": "claims.missing == 1"}},
            {"name": "only-admin-scope", "effect": "deny",
             "match": {"issuer": "github-actions", "scopes": ["admin"], "condition": "claims.missing == 1"}},
            {"name": "agents", "effect": "deny",
             "match": {"issuer": "github-actions", "actor": {"issuer": "agents", "condition": "actor.missing == 1"}}},
            {"name": "everyone", "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET],
             "scopes": ["read", "admin"]}},
            {"name": "delegated", "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET],
             "actor": {"issuer": "agents", "subject_pattern": "*"}}},
        ]));
        let cases: Vec<(&str, Req, Option<&str>)> = vec![
            (
                "typed",
                Req::new("github-actions", json!({"sub": "typed"}), &[TARGET]),
                Some("not-a-bool"),
            ),
            (
                "bob",
                Req::new("github-actions", json!({"sub": "bob"}), &[TARGET]),
                Some("only-bob"),
            ),
            (
                "alice",
                Req::new("github-actions", json!({"sub": "alice"}), &[TARGET]),
                None,
            ),
            (
                "alice with the admin scope",
                Req::new("github-actions", json!({"sub": "alice"}), &[TARGET]).scopes(&["admin"]),
                Some("only-admin-scope"),
            ),
            (
                "alice with the read scope",
                Req::new("github-actions", json!({"sub": "alice"}), &[TARGET]).scopes(&["read"]),
                None,
            ),
            (
                "alice through an agent",
                Req::new("github-actions", json!({"sub": "alice"}), &[TARGET])
                    .actor("agents", json!({"sub": "a"})),
                Some("agents"),
            ),
        ];
        for (what, req, expected) in cases {
            let decision = set.evaluate(&req.request());
            assert_eq!(set.explain(&req.request()).decision, decision, "{what}");
            match expected {
                None => assert!(decision.is_allow(), "{what}: {decision:#?}"),
                Some(rule) => {
                    let denial = deny_of(&decision);
                    assert_eq!(denial.rule.as_deref(), Some(rule), "{what}: {denial:?}");
                    assert!(
                        denial
                            .reason
                            .contains("a condition could not be evaluated, which denies"),
                        "{what}: {}",
                        denial.reason
                    );
                }
            }
        }
    }

    #[test]
    fn an_allow_rule_whose_condition_errors_does_not_match() {
        let set = allow_with(json!({"condition": r#"claims.groups.exists(g, g == "dev")"#}));
        let req = Req::new("github-actions", json!({"sub": "s"}), &[TARGET]);
        let denial = deny_of(&set.evaluate(&req.request())).clone();
        assert_eq!(denial.rule, None);
        assert!(
            denial
                .reason
                .contains("rule `r`: match.condition: no such key: groups"),
            "{}",
            denial.reason
        );
    }

    #[test]
    fn expressions_in_issue() {
        let set = compile(json!([{
            "name": "r",
            "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET]},
            "issue": {
                "subject": {"expr": r#""gha:" + claims.repository.lowerAscii()"#},
                "claims": {
                    "repo": {"expr": "claims.repository.upperAscii()"},
                    "tags": {
                        "owner_and_env": [{"expr": r#"claims.repository_owner + "/" + claims.environment"#}],
                        "count": {"expr": "size(claims.groups)"},
                        "groups": {"expr": r#"claims.groups.filter(g, type(g) == string).map(g, "team-" + g)"#},
                        "object": {"expr": r#"{"b": 1, "a": [true, 1.5, null]}"#},
                    },
                    "literal": "{claims.repository}",
                },
            },
        }]));
        let req = Req::new("github-actions", gha_claims(), &[TARGET]);
        let decision = set.evaluate(&req.request());
        let grant = grant_of(&decision);
        assert_eq!(grant.subject, "gha:acme/api");
        assert_eq!(
            Value::Object(grant.claims.clone()),
            json!({
                "repo": "ACME/API",
                "tags": {
                    "owner_and_env": ["acme/prod"],
                    "count": 5,
                    "groups": ["team-dev", "team-ops"],
                    "object": {"a": [true, 1.5, null], "b": 1},
                },
                "literal": "acme/api",
            })
        );
        // Map keys are issued in sorted order, whatever CEL's hashing did.
        let object = &grant.claims["tags"]["object"];
        assert_eq!(
            object.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn failing_expressions_in_issue_deny() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"subject": {"expr": "claims.team"}}),
                "issue.subject: no such key: team",
            ),
            (
                json!({"subject": {"expr": "claims.run_attempt"}}),
                "issue.subject: evaluated to 1, not a string",
            ),
            (
                json!({"subject": {"expr": r#""""#}}),
                "issue.subject: evaluated to an empty string",
            ),
            (
                json!({"claims": {"tags": {"repo": [{"expr": "claims.team.lowerAscii()"}]}}}),
                "issue.claims.tags.repo[0]: no such key: team",
            ),
            (
                json!({"claims": {"bytes": {"expr": r#"b"abc""#}}}),
                "issue.claims.bytes: evaluated to a bytes, which JSON cannot hold",
            ),
            (
                json!({"claims": {"nan": {"expr": "0.0 / 0.0"}}}),
                "issue.claims.nan: evaluated to NaN, which JSON cannot hold",
            ),
        ];
        for (issue, fragment) in cases {
            let set = compile(json!([{
                "name": "r",
                "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET]},
                "issue": issue,
            }]));
            let req = Req::new("github-actions", gha_claims(), &[TARGET]);
            let denial = deny_of(&set.evaluate(&req.request())).clone();
            assert_eq!(denial.rule.as_deref(), Some("r"));
            assert!(
                denial.reason.starts_with("rule `r` matched, but ") && denial.reason.contains(fragment),
                "{fragment}: {}",
                denial.reason
            );
        }
    }

    #[test]
    fn may_act_restricts_actors() {
        let set = compile(json!([{"name": "delegation", "match": {
            "issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET],
            "actor": {"issuer": "agents", "subject_pattern": "agent:*"}}}]));
        let agent = json!({"iss": "https://agents.example.com", "sub": "agent:7"});
        type Case = (&'static str, Option<Value>, Result<(), &'static str>);
        let cases: Vec<Case> = vec![
            ("no may_act", None, Ok(())),
            ("object naming the actor", Some(json!({"sub": "agent:7"})), Ok(())),
            (
                "object naming the actor and its issuer",
                Some(json!({"sub": "agent:7", "iss": "https://agents.example.com"})),
                Ok(()),
            ),
            (
                "another issuer",
                Some(json!({"sub": "agent:7", "iss": "https://elsewhere.example.com"})),
                Err(r#"may_act: actor "agent:7" is not authorized by the subject token"#),
            ),
            (
                "another subject",
                Some(json!({"sub": "agent:8"})),
                Err(r#"may_act: actor "agent:7" is not authorized by the subject token"#),
            ),
            (
                "list with the actor",
                Some(json!([{"sub": "agent:1"}, {"sub": "agent:7"}])),
                Ok(()),
            ),
            (
                "list without the actor",
                Some(json!([{"sub": "agent:1"}])),
                Err("may_act: actor \"agent:7\" is not authorized"),
            ),
            ("empty list", Some(json!([])), Err("is not authorized")),
            (
                "entry without sub",
                Some(json!({"iss": "https://agents.example.com"})),
                Err("is not authorized"),
            ),
            (
                "malformed",
                Some(json!("agent:7")),
                Err("may_act: the subject token's `may_act` claim is \"agent:7\", not an object"),
            ),
        ];
        for (what, may_act, expected) in cases {
            let mut claims = gha_claims();
            if let (Some(may_act), Value::Object(map)) = (may_act, &mut claims) {
                map.insert("may_act".to_owned(), may_act);
            }
            let req = Req::new("github-actions", claims.clone(), &[TARGET]).actor("agents", agent.clone());
            let decision = set.evaluate(&req.request());
            match expected {
                Ok(()) => assert!(decision.is_allow(), "{what}: {decision:#?}"),
                Err(fragment) => {
                    let denial = deny_of(&decision);
                    assert_eq!(denial.kind, DenialKind::DeniedByPolicy, "{what}");
                    assert_eq!(denial.rule, None, "{what}");
                    assert!(denial.reason.contains(fragment), "{what}: {}", denial.reason);
                    let explained = set.explain(&req.request());
                    assert_eq!(explained.decision, decision, "{what}");
                    assert_eq!(
                        explained.rules[0]
                            .reason
                            .as_deref()
                            .map(|r| r.starts_with("matched, but may_act")),
                        Some(true),
                        "{what}: {:?}",
                        explained.rules
                    );
                }
            }
        }
        // may_act only restricts delegation: without an actor it is not consulted.
        let set = allow_with(json!({}));
        let alone = Req::new(
            "github-actions",
            json!({"sub": "s", "may_act": {"sub": "nobody"}}),
            &[TARGET],
        );
        assert!(set.evaluate(&alone.request()).is_allow());
    }

    proptest! {
        /// An exact `subject` matches that string and nothing else.
        #[test]
        fn exact_subject_never_matches_a_different_string(s in "\\PC{1,30}", t in "\\PC{0,30}") {
            let set = allow_with(json!({"subject": s}));
            let same = Req::new("github-actions", json!({"sub": s}), &[TARGET]);
            prop_assert!(set.evaluate(&same.request()).is_allow());
            let other = Req::new("github-actions", json!({"sub": t}), &[TARGET]);
            prop_assert_eq!(set.evaluate(&other.request()).is_allow(), s == t);
        }

        /// Whatever allow rules exist, in whatever order, a matching deny rule decides.
        #[test]
        fn deny_always_wins(
            allows in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..8),
            deny_position in 0usize..9,
            deny_scoped_to_target in any::<bool>(),
        ) {
            let mut rules: Vec<Value> = allows
                .iter()
                .enumerate()
                .map(|(i, (matches, with_scope_list))| {
                    let subject = if *matches { "me" } else { "someone-else" };
                    let mut m = json!({"issuer": "github-actions", "subject": subject, "audiences": [TARGET]});
                    if *with_scope_list {
                        m["scopes"] = json!(["read"]);
                    }
                    json!({"name": format!("allow-{i}"), "match": m})
                })
                .collect();
            let mut deny_match = json!({"issuer": "github-actions", "subject_pattern": "m?"});
            if deny_scoped_to_target {
                deny_match["audiences"] = json!([TARGET]);
            }
            let deny = json!({"name": "the-deny", "effect": "deny", "match": deny_match});
            rules.insert(deny_position.min(rules.len()), deny);
            // A target-wide allow so the target is always granted by some rule.
            rules.push(json!({"name": "catch-all", "match": {"issuer": "github-actions", "allow_any_subject": true, "audiences": [TARGET]}}));
            let set = compile(Value::Array(rules));
            let req = Req::new("github-actions", json!({"sub": "me"}), &[TARGET]);
            let decision = set.evaluate(&req.request());
            prop_assert_eq!(decision.rule(), Some("the-deny"));
            prop_assert_eq!(deny_of(&decision).kind, DenialKind::DeniedByPolicy);
            prop_assert_eq!(set.explain(&req.request()).decision, decision);
        }
    }
}
