//! What the rules are asked: one [`RulesInput`] built the same way for `/token` and
//! `fedbroker explain`, so the two cannot ask differently.

use federation_rules::{Actor, Claims, Decision, Grant, RuleSet};

use super::TokenError;
use super::form::{Targets, TokenType};
use super::verify::Verified;

/// Everything a rule evaluation reads, owned.
pub struct RulesInput {
    /// The registered name of the subject token's issuer.
    pub issuer: String,
    pub claims: Claims,
    /// The actor's issuer name and claims, for delegation.
    pub actor: Option<(String, Claims)>,
    pub targets: Targets,
    pub scopes: Vec<String>,
    pub requested: TokenType,
}

impl RulesInput {
    /// The input for a verified subject (and actor) token.
    pub fn verified(
        subject: &Verified,
        actor: Option<&Verified>,
        targets: &Targets,
        scopes: &[String],
        requested: TokenType,
    ) -> RulesInput {
        RulesInput {
            issuer: subject.issuer.config.name.clone(),
            claims: Claims(subject.token.claims.clone()),
            actor: actor.map(|a| (a.issuer.config.name.clone(), Claims(a.token.claims.clone()))),
            targets: targets.clone(),
            scopes: scopes.to_vec(),
            requested,
        }
    }

    /// The request the rule engine evaluates.
    pub fn request(&self) -> federation_rules::Request<'_> {
        federation_rules::Request {
            issuer: &self.issuer,
            claims: &self.claims,
            audiences: &self.targets.audiences,
            resources: &self.targets.resources,
            targets: &self.targets.all,
            scopes: &self.scopes,
            requested_token_type: self.requested.urn(),
            actor: self
                .actor
                .as_ref()
                .map(|(issuer, claims)| Actor { issuer, claims }),
        }
    }
}

/// Evaluate the rules, on the request's own task. Evaluation is bounded: rules are
/// indexed by issuer, and every CEL condition and mapping runs under a cost budget and
/// size limits (rules.md), so a request's share of a worker is short. Measured
/// (docs/performance.md): handing it to the blocking pool cost more, in thread
/// hand-offs and wake-ups, than the evaluation itself.
pub(super) fn decide(rules: &RuleSet, input: &RulesInput) -> Result<Grant, TokenError> {
    let decision = rules.evaluate(&input.request());
    match decision {
        Decision::Allow(grant) => Ok(grant),
        Decision::Deny(denial) => Err(denial.into()),
    }
}
