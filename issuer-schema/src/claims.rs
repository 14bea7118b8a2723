//! Rules against their issuers' kinds: the warnings about claims a rule refers to that
//! tokens of its issuer's kind never carry (`claims.repositry`: did you mean
//! `repository`?). The claim lists are the `issuers` crate's
//! ([`issuers::IssuerKind::known_claims`]), the references the `federation-rules`
//! crate's ([`RuleSet::unknown_claims`]); the broker (`check`, reloads, the admin API)
//! joins them here, where the Terraform provider (which has both crates) can too, so
//! they cannot disagree.

use federation_rules::{ClaimCheck, PolicyWarning, RuleSet};
use issuers::IssuerKind;

/// What tokens of `kind` say about the top-level claim `claim`: unknown kinds and
/// `generic` issuers know nothing, so every claim is [`ClaimCheck::Known`] for them.
pub fn claim_check(kind: Option<IssuerKind>, claim: &str) -> ClaimCheck {
    claim_check_with(kind, &[], claim)
}

/// [`claim_check`] for an issuer that also names `extra` claims its tokens carry
/// (`extra_claims`): those are known too.
pub fn claim_check_with(kind: Option<IssuerKind>, extra: &[String], claim: &str) -> ClaimCheck {
    match kind.and_then(|k| k.known_claims().map(|known| (k, known))) {
        Some((kind, known)) if !known.contains(claim) && !extra.iter().any(|e| e == claim) => {
            ClaimCheck::Never {
                kind: kind.to_string(),
                nearest: known.nearest(claim),
            }
        }
        _ => ClaimCheck::Known,
    }
}

/// The warnings ([`federation_rules::UNKNOWN_CLAIM`]) about claims the rules refer to
/// that their issuers' tokens never carry; `kind_of` gives an issuer's kind by name
/// (`None`: not known, nothing is checked for it).
pub fn unknown_claims(rules: &RuleSet, kind_of: &dyn Fn(&str) -> Option<IssuerKind>) -> Vec<PolicyWarning> {
    rules.unknown_claims(&|issuer, claim| claim_check(kind_of(issuer), claim))
}

/// An issuer's kind and its `extra_claims`, as [`unknown_claims_with`] asks for them
/// (`None`: the issuer is not known, nothing is checked for it).
pub type IssuerClaims<'a> = Option<(IssuerKind, &'a [String])>;

/// [`unknown_claims`] where each issuer may name extra claims (`extra_claims`):
/// `issuer_of` gives an issuer's kind and its extra claim names by issuer name.
pub fn unknown_claims_with<'a>(
    rules: &RuleSet,
    issuer_of: &dyn Fn(&str) -> IssuerClaims<'a>,
) -> Vec<PolicyWarning> {
    rules.unknown_claims(&|issuer, claim| match issuer_of(issuer) {
        Some((kind, extra)) => claim_check_with(Some(kind), extra, claim),
        None => ClaimCheck::Known,
    })
}

#[cfg(test)]
mod tests {
    use federation_rules::{CompileContext, parse_rules_json};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_kind_with_a_list_warns_generic_and_unknown_issuers_do_not() {
        let rules = json!([
            {"name": "gha", "match": {"issuer": "gha", "audiences": ["t"], "claims": {"repository": "a/b"}},
             "issue": {"subject": "gha:{claims.repositry}"}},
            {"name": "generic", "match": {"issuer": "idp", "audiences": ["t"], "claims": {"repositry": "a/b"}}},
            {"name": "unknown", "match": {"issuer": "other", "audiences": ["t"], "claims": {"repositry": "a/b"}}},
        ]);
        let raw = parse_rules_json(&rules.to_string()).expect("rules parse");
        let ctx = CompileContext {
            issuers: &|_| true,
            max_lifetime: 3600,
        };
        let set = RuleSet::compile(raw, &ctx).expect("rules compile");
        let kind_of = |name: &str| match name {
            "gha" => Some(IssuerKind::GithubActions),
            "idp" => Some(IssuerKind::Generic),
            _ => None,
        };
        let warnings = unknown_claims(&set, &kind_of);
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert_eq!(warnings[0].target, "claims.repositry");
        assert_eq!(
            warnings[0].message,
            "rule `gha`, issue.subject: `claims.repositry`: did you mean `repository`? tokens of issuer `gha` (kind github-actions) never carry a claim `repositry`"
        );
    }

    #[test]
    fn an_issuers_extra_claims_are_known() {
        let extra = vec!["department".to_owned()];
        assert_eq!(
            claim_check_with(Some(IssuerKind::AzureEntra), &extra, "department"),
            ClaimCheck::Known
        );
        assert!(matches!(
            claim_check_with(Some(IssuerKind::AzureEntra), &extra, "departmnt"),
            ClaimCheck::Never { .. }
        ));
        assert_eq!(claim_check_with(None, &[], "anything"), ClaimCheck::Known);
    }
}
