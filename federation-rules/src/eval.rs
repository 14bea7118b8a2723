//! Evaluating a request against a [`RuleSet`]: the decision, and an explanation of it.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::compile::{IssueValue, IssuerRules, Rule, RuleSet, TokenConditions, ValueTest};
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
    /// `audience` and `resource` values, in request order, deduplicated.
    pub targets: &'a [String],
    pub scopes: &'a [String],
    pub requested_token_type: &'a str,
    pub actor: Option<Actor<'a>>,
}

/// The verified actor token of a delegated exchange.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The `name` of the issuer that verified the actor token.
    pub issuer: &'a str,
    pub claims: &'a Claims,
}

/// The outcome of evaluating a request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
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
        let Some(issuer_rules) = self.index.get(req.issuer) else {
            return denial(
                DenialKind::NoRuleForTarget,
                None,
                format!("no rule concerns issuer `{}`", req.issuer),
            );
        };
        if req.targets.is_empty() {
            return denial(DenialKind::NoRuleForTarget, None, "the request names no target".to_owned());
        }

        let allow = self.allow_candidates(issuer_rules, req.targets);
        if allow.is_empty() && trace.is_none() {
            return self.no_rule_for_target(issuer_rules, req);
        }
        if let Some(trace) = trace.as_deref_mut() {
            self.trace_partial_allows(issuer_rules, req.targets, &allow, trace);
        }

        // Deny rules first: any match refuses the request, whatever the allow rules say.
        let mut denied_by: Option<&Rule> = None;
        for (i, rule) in self.deny_candidates(issuer_rules, req.targets) {
            let result = check_deny(rule, req);
            let matched = result.is_ok();
            if let Some(trace) = trace.as_deref_mut() {
                let reason = match (result, denied_by) {
                    (Err(reason), _) => Some(reason),
                    (Ok(()), Some(first)) => Some(format!("matched, but deny rule `{}` comes first", first.name)),
                    (Ok(()), None) => None,
                };
                trace.push((i, outcome(rule, matched, reason)));
            }
            if matched && denied_by.is_none() {
                denied_by = Some(rule);
                if trace.is_none() {
                    break;
                }
            }
        }
        if allow.is_empty() {
            return self.no_rule_for_target(issuer_rules, req);
        }
        if let (Some(rule), None) = (denied_by, trace.as_deref()) {
            return deny_rule_matched(rule);
        }

        // Then the allow rules granting every target, in input order.
        let mut decided: Option<(usize, &Rule)> = None;
        let mut scope_refusal: Option<(&Rule, String)> = None;
        let mut misses: Vec<(&Rule, String)> = Vec::new();
        for (i, rule) in allow {
            let (matched, reason) = match check_allow(rule, req) {
                Err(reason) => {
                    misses.push((rule, reason.clone()));
                    (false, Some(reason))
                }
                Ok(()) => match check_scopes(rule, req.scopes) {
                    Err(reason) => {
                        if scope_refusal.is_none() {
                            scope_refusal = Some((rule, reason.clone()));
                        }
                        (false, Some(reason))
                    }
                    Ok(()) => match (denied_by, decided) {
                        (Some(deny), _) => (
                            true,
                            Some(format!("matched, but deny rule `{}` takes precedence", deny.name)),
                        ),
                        (None, Some((_, first))) => {
                            (true, Some(format!("matched, but rule `{}` comes first", first.name)))
                        }
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
            return deny_rule_matched(rule);
        }
        if let Some((i, rule)) = decided {
            return match grant(rule, req) {
                Ok(grant) => Decision::Allow(grant),
                Err(problem) => {
                    if let Some(trace) = trace {
                        if let Some((_, entry)) = trace.iter_mut().find(|(j, _)| *j == i) {
                            entry.reason = Some(problem.clone());
                        }
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
    fn allow_candidates<'s>(&'s self, issuer_rules: &'s IssuerRules, targets: &[String]) -> Vec<(usize, &'s Rule)> {
        let mut shortest: Option<&Vec<usize>> = None;
        for target in targets {
            match issuer_rules.allow_by_target.get(target) {
                None => return Vec::new(),
                Some(list) if shortest.is_none_or(|s| list.len() < s.len()) => shortest = Some(list),
                Some(_) => {}
            }
        }
        shortest
            .into_iter()
            .flatten()
            .filter_map(|&i| self.rules.get(i).map(|rule| (i, rule)))
            .filter(|(_, rule)| targets.iter().all(|t| rule.audiences.contains(t)))
            .collect()
    }

    /// Deny rules of the issuer for every target or for any requested one, in input order.
    fn deny_candidates<'s>(&'s self, issuer_rules: &'s IssuerRules, targets: &[String]) -> Vec<(usize, &'s Rule)> {
        let mut indexes: Vec<usize> = issuer_rules.deny_any_target.clone();
        for target in targets {
            if let Some(list) = issuer_rules.deny_by_target.get(target) {
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
            .filter_map(|t| issuer_rules.allow_by_target.get(t))
            .flatten()
            .copied()
            .filter(|i| !candidates.iter().any(|(j, _)| j == i))
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        for i in indexes {
            let Some(rule) = self.rules.get(i) else { continue };
            let missing = targets.iter().find(|t| !rule.audiences.contains(t));
            let reason = missing.map(|t| format!("audiences: does not grant the requested target `{t}`"));
            trace.push((i, outcome(rule, false, reason)));
        }
    }

    fn no_rule_for_target(&self, issuer_rules: &IssuerRules, req: &Request<'_>) -> Decision {
        let reason = match req.targets {
            [one] => format!("no allow rule for issuer `{}` grants the target `{one}`", req.issuer),
            many => {
                let mut reason = format!(
                    "no allow rule for issuer `{}` grants all of the targets [{}]",
                    req.issuer,
                    many.join(", ")
                );
                if let Some(t) = many.iter().find(|t| !issuer_rules.allow_by_target.contains_key(*t)) {
                    let _ = write!(reason, " (none grants `{t}`)");
                }
                reason
            }
        };
        denial(DenialKind::NoRuleForTarget, None, reason)
    }
}

fn denial(kind: DenialKind, rule: Option<&str>, reason: String) -> Decision {
    Decision::Deny(Denial {
        kind,
        rule: rule.map(str::to_owned),
        reason,
    })
}

fn deny_rule_matched(rule: &Rule) -> Decision {
    let reason = match &rule.description {
        Some(description) => format!("deny rule `{}` matched: {description}", rule.name),
        None => format!("deny rule `{}` matched", rule.name),
    };
    denial(DenialKind::DeniedByPolicy, Some(&rule.name), reason)
}

fn outcome(rule: &Rule, matched: bool, reason: Option<String>) -> RuleOutcome {
    RuleOutcome {
        rule: rule.name.clone(),
        effect: rule.effect,
        matched,
        reason,
    }
}

fn summarise_misses(misses: &[(&Rule, String)]) -> String {
    let mut out = String::from("no allow rule matched");
    for (n, (rule, reason)) in misses.iter().enumerate() {
        if n == MAX_SUMMARISED_RULES {
            let _ = write!(out, "; and {} more", misses.len() - n);
            break;
        }
        let _ = write!(out, "{} rule `{}`: {reason}", if n == 0 { ":" } else { ";" }, rule.name);
    }
    out
}

fn count_check() {
    #[cfg(test)]
    RULES_CHECKED.with(|c| c.set(c.get() + 1));
}

/// Conditions of an allow rule, except scopes.
fn check_allow(rule: &Rule, req: &Request<'_>) -> Result<(), String> {
    count_check();
    check_token(&rule.token, &req.claims.0, "")?;
    match (&rule.actor, &req.actor) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(
            "actor: the request carries an actor token, but the rule has no `match.actor` (delegation must be granted explicitly)"
                .to_owned(),
        ),
        (Some(_), _) => check_actor(rule, req),
    }
}

/// Conditions of a deny rule. A deny rule without `actor` applies whether or not the
/// request is delegated, so that an actor token can never be used to slip past it.
fn check_deny(rule: &Rule, req: &Request<'_>) -> Result<(), String> {
    count_check();
    check_token(&rule.token, &req.claims.0, "")?;
    if rule.actor.is_some() {
        check_actor(rule, req)?;
    }
    if !rule.scopes.is_empty() && !req.scopes.iter().any(|s| rule.scopes.contains(s)) {
        return Err(format!(
            "scopes: the request asks for none of [{}]",
            rule.scopes.join(", ")
        ));
    }
    Ok(())
}

fn check_actor(rule: &Rule, req: &Request<'_>) -> Result<(), String> {
    let Some(conditions) = &rule.actor else {
        return Ok(());
    };
    let Some(actor) = &req.actor else {
        return Err("actor: the rule requires an actor token; the request has none".to_owned());
    };
    if conditions.issuer != actor.issuer {
        return Err(format!(
            "actor.issuer: expected `{}`, got `{}`",
            conditions.issuer, actor.issuer
        ));
    }
    check_token(&conditions.token, &actor.claims.0, "actor.")
}

fn check_scopes(rule: &Rule, scopes: &[String]) -> Result<(), String> {
    let refused: Vec<&str> = scopes
        .iter()
        .filter(|s| !rule.scopes.contains(s))
        .map(String::as_str)
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "scopes: the rule does not allow [{}] (it allows [{}])",
            refused.join(", "),
            rule.scopes.join(", ")
        ))
    }
}

fn check_token(conditions: &TokenConditions, claims: &Map<String, Value>, prefix: &str) -> Result<(), String> {
    if let Some(test) = &conditions.subject {
        // `sub` is a single value: an array never matches a subject condition.
        check_value(test, claims.get("sub"), false)
            .map_err(|problem| format!("{prefix}sub: {problem}"))?;
    }
    for condition in &conditions.claims {
        check_value(&condition.test, condition.path.lookup(claims), true)
            .map_err(|problem| format!("{prefix}{}: {problem}", condition.display))?;
    }
    Ok(())
}

/// Whether a claim satisfies a test; on failure, what was expected and what was found.
fn check_value(test: &ValueTest, value: Option<&Value>, any_element: bool) -> Result<(), String> {
    let Some(value) = value else {
        return Err(match test {
            ValueTest::OneOf(values) => format!("{}, but the claim is missing", expected(values)),
            ValueTest::Glob(p) => format!("the claim is missing (pattern \"{}\")", p.source()),
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
        ValueTest::OneOf(values) => format!("{}, got {}", expected(values), show(value)),
        ValueTest::Glob(p) => format!("{} does not match pattern \"{}\"", show(value), p.source()),
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

fn grant(rule: &Rule, req: &Request<'_>) -> Result<Grant, String> {
    let Some(issue) = &rule.issue else {
        return Err("the rule has no issuance settings".to_owned());
    };
    let claims = &req.claims.0;
    let audience = match &issue.audience {
        Some(template) => vec![
            template
                .render(claims)
                .map_err(|e| cannot_render("issue.audience", &e))?,
        ],
        None => req.targets.to_vec(),
    };
    let subject = issue.subject.render(claims).map_err(|e| {
        if issue.subject_is_default {
            format!("the subject cannot be taken from the token: {} {}", e.placeholder, e.problem)
        } else {
            cannot_render("issue.subject", &e)
        }
    })?;
    let mut issued = Map::new();
    for (key, value) in &issue.claims {
        issued.insert(key.clone(), render_value(value, claims)?);
    }
    Ok(Grant {
        rule: rule.name.clone(),
        audience,
        subject,
        lifetime: issue.lifetime,
        scopes: req.scopes.to_vec(),
        claims: issued,
    })
}

fn cannot_render(field: &str, e: &RenderError) -> String {
    format!("{field} cannot be rendered: {} {}", e.placeholder, e.problem)
}

fn render_value(value: &IssueValue, claims: &Map<String, Value>) -> Result<Value, String> {
    Ok(match value {
        IssueValue::Template { field, template } => {
            Value::String(template.render(claims).map_err(|e| cannot_render(field, &e))?)
        }
        IssueValue::Literal(v) => v.clone(),
        IssueValue::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_value(item, claims))
                .collect::<Result<_, _>>()?,
        ),
        IssueValue::Object(entries) => {
            let mut map = Map::new();
            for (key, item) in entries {
                map.insert(key.clone(), render_value(item, claims)?);
            }
            Value::Object(map)
        }
    })
}
