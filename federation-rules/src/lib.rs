//! The trust-rule engine of fedbroker: which subject tokens may be exchanged for which
//! targets, and what the issued token carries. Pure: no I/O, no clock, no environment.
//!
//! - [`raw`]: the rule format as serde structs, independent of YAML or JSON
//!   ([`RawRule`], [`RawRuleFile`], [`parse_rules_json`]).
//! - [`compile`]: checks raw rules and builds an immutable [`RuleSet`], indexed by
//!   (issuer, target); reports every error at once as [`RuleError`]s.
//! - [`eval`]: decides a [`Request`] ([`RuleSet::evaluate`] → [`Decision`]) and explains
//!   the decision rule by rule ([`RuleSet::explain`] → [`Explanation`]).
//! - [`duration`]: `90s` / `15m` / `1h30m` durations, shared with the broker's config.
//! - `path`, `pattern`, `template` (private): claim paths, anchored globs and issuance
//!   templates, parsed at compile time.
//!
//! # Semantics
//!
//! **Selecting rules.** Rules are indexed by issuer name and target. A request is only
//! ever checked against rules of its own issuer: allow rules whose `audiences` contain
//! every requested target (audience and resource values, compared exactly), and deny
//! rules that either have no `audiences` (they concern every target) or list at least
//! one requested target. Rules that cannot apply are never looked at, so evaluation
//! cost does not grow with them. If no allow rule of the issuer grants all requested
//! targets, the request is denied with [`DenialKind::NoRuleForTarget`]
//! (`invalid_target`), whatever the deny rules say.
//!
//! **Matching** (all listed conditions must hold):
//! - `subject`: the `sub` claim equals it exactly (code points; no case folding, no
//!   Unicode normalisation). `subject_pattern`: `sub` matches the anchored glob
//!   (`*` any run of characters including none, `?` exactly one; no escapes).
//!   Setting both is a compile error.
//! - `claims`: for every entry, the claim at the path equals one of the listed values.
//!   A string claim compares exactly; a number or boolean claim compares by its JSON
//!   text (`42`, `1.5`, `true`); an array claim matches when any scalar element
//!   matches; a null, object or missing claim never matches.
//! - `claim_patterns`: for every entry, the claim (a string, a number's or boolean's
//!   JSON text, or any scalar element of an array) matches the glob.
//! - `actor`: a rule with `actor` matches only a delegated request whose actor token
//!   came from the named issuer and meets the actor's `subject` / `subject_pattern` /
//!   `claims` / `claim_patterns`. An **allow** rule without `actor` never matches a
//!   request that carries an actor token: delegation is granted explicitly. A **deny**
//!   rule without `actor` applies with or without an actor token, so delegation can
//!   never be used to slip past a deny.
//! - `condition` (CEL) is not supported yet; a rule that sets it does not compile.
//!
//! Claim paths: dots separate nested keys and a key containing a dot is written in
//! brackets with double quotes: `repository`, `["kubernetes.io"].namespace`. In
//! templates the root is explicit: `{sub}`, `{iss}`, `{aud}`, `{claims.repository}`,
//! `{claims["kubernetes.io"]["serviceaccount"]["name"]}`; `{{` and `}}` are literal
//! braces.
//!
//! **Deciding.**
//! 1. Any matching deny rule denies ([`DenialKind::DeniedByPolicy`], naming the rule),
//!    even when an allow rule matches: deny wins. Deny rules match on their conditions
//!    and targets; a deny rule's `scopes`, when listed, further restrict it to requests
//!    asking for at least one of them.
//! 2. Otherwise the first allow rule in input order that matches and allows every
//!    requested scope (all listed in its `match.scopes`) decides. A request without
//!    scopes needs no scope.
//! 3. If allow rules matched but none allows the requested scopes, the request is
//!    denied with [`DenialKind::ScopeNotAllowed`] (`invalid_scope`), naming the first.
//! 4. If no allow rule matched: [`DenialKind::DeniedByPolicy`] without a rule, the
//!    reason summarising why each candidate did not match.
//!
//! **Issuing** ([`Grant`]): `audience` is the rendered `issue.audience` (one value) or
//! else the requested targets; `subject` the rendered `issue.subject` or else the
//! incoming `sub`; `lifetime` `issue.lifetime` or else [`DEFAULT_LIFETIME`] (15 minutes,
//! lowered to `server.max_issued_lifetime` when that is shorter); `scopes` the requested
//! scopes; `claims` is `issue.claims` with every string value, at any depth, rendered as
//! a template (keys are not templated; numbers, booleans and null are copied). A
//! placeholder renders a string, or a number's or boolean's JSON text, or the single
//! element of a one-element array. A missing claim, null, empty string, object, empty
//! or multi-valued array denies the request ([`DenialKind::DeniedByPolicy`], naming the
//! rule and the claim): the broker never issues an empty or guessed value. The deciding
//! rule's render failure is final; later rules are not tried.
//!
//! **Reasons.** [`Denial::reason`] and [`RuleOutcome::reason`] name the first condition
//! that failed and the claim value found (shortened to 200 characters), for the audit
//! log and `fedbroker explain`. They never contain a token.
//!
//! **Compile errors** (all collected, each with rule index, name and field): empty or
//! duplicate name; unknown issuer (`match.issuer`, `match.actor.issuer`); both
//! `subject` and `subject_pattern`; empty subject; empty pattern or one over 1024
//! characters; claim path syntax; empty `claims` value lists or values; `condition`;
//! allow rule without `audiences`; empty audience or scope, or a scope containing
//! whitespace; `issue` on a deny rule; `issue.lifetime` unparsable, zero or above the
//! cap; template syntax in `issue.audience`, `issue.subject` and every string in
//! `issue.claims`; empty `issue.audience` / `issue.subject`; reserved claims (`iss`,
//! `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`, `act`, `scope`, `may_act`) in
//! `issue.claims`.

pub mod compile;
pub mod duration;
pub mod eval;
mod path;
mod pattern;
pub mod raw;
mod template;

#[cfg(test)]
mod test_support;

pub use compile::{CompileContext, DEFAULT_LIFETIME, RuleError, RuleSet};
pub use duration::{format_duration, parse_duration};
pub use eval::{Actor, Claims, Decision, Denial, DenialKind, Explanation, Grant, Request, RuleOutcome};
pub use pattern::MAX_PATTERN_CHARS;
pub use raw::{ClaimValues, Effect, RawActor, RawIssue, RawMatch, RawRule, RawRuleFile, parse_rules_json};
