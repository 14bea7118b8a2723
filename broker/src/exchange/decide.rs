//! What the rules are asked: one [`RulesInput`] built the same way for `/token` and
//! `fedbroker explain`, so the two cannot ask differently.

use std::sync::Arc;

use federation_rules::{Actor, CallerCert, Claims, Decision, Grant, RuleSet};

use super::TokenError;
use super::form::{Targets, TokenType};
use super::verify::Verified;
use crate::client_cert::ClientCert;

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
    /// Whether the request carried a valid DPoP proof.
    pub dpop: bool,
    /// The request's verified mutual-TLS client certificate.
    pub client_cert: Option<Arc<ClientCert>>,
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
            dpop: false,
            client_cert: None,
        }
    }

    /// What the request proves of its sender: a valid DPoP proof, a client certificate.
    pub fn with_sender(mut self, dpop: bool, client_cert: Option<Arc<ClientCert>>) -> RulesInput {
        self.dpop = dpop;
        self.client_cert = client_cert;
        self
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
            dpop: self.dpop,
            client_cert: self.client_cert.as_deref().map(|c| CallerCert {
                uri_sans: &c.uri_sans,
                subject: &c.subject,
                sha256: &c.sha256,
            }),
        }
    }
}

/// Evaluate the rules, on the request's own task. Evaluation is bounded: rules are
/// indexed by issuer, and every CEL condition and mapping runs under a cost budget and
/// size limits (rules.md), so a request's share of a worker is short. Measured
/// (docs/performance.md): handing it to the blocking pool cost more, in thread
/// hand-offs and wake-ups, than the evaluation itself.
pub(super) fn decide(
    rules: &RuleSet,
    input: &RulesInput,
    hits: &crate::hits::RuleHits,
) -> Result<Grant, TokenError> {
    let decision = rules.evaluate(&input.request());
    // Refusals count here; an allow once its token is issued (`exchange::exchange`).
    if !decision.is_allow() {
        hits.record(decision.rule(), false);
    }
    match decision {
        Decision::Allow(grant) => Ok(grant),
        Decision::Deny(denial) => Err(denial.into()),
    }
}
