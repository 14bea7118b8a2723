//! What the rules are asked: one [`RulesInput`] built the same way for `/token` and
//! `fedbroker explain`, so the two cannot ask differently.

use federation_rules::{Actor, Claims, Decision, Grant, RuleSet};

use super::TokenError;
use super::form::{Targets, TokenType};
use super::verify::Verified;

/// Everything a rule evaluation reads, owned (so it can move to a blocking thread).
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

/// Evaluate the rules on a blocking-pool thread: CEL conditions and mappings are CPU
/// work of unbounded length as far as the async runtime is concerned, and on an async
/// worker they would stall every other connection (`/healthz` included). Everything the
/// evaluation reads is moved in owned (the rule set is shared by `Arc`).
/// `spawn_blocking` rather than `block_in_place`: it works on any runtime flavour (the
/// latter panics on a current-thread runtime) and never takes a worker out of the
/// pool; the cost is one hand-off per request, a few microseconds.
pub(super) async fn decide(rules: std::sync::Arc<RuleSet>, input: RulesInput) -> Result<Grant, TokenError> {
    let decision = tokio::task::spawn_blocking(move || rules.evaluate(&input.request()))
        .await
        .map_err(TokenError::Evaluation)?;
    match decision {
        Decision::Allow(grant) => Ok(grant),
        Decision::Deny(denial) => Err(denial.into()),
    }
}
