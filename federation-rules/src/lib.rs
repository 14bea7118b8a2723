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
//! - [`warnings`]: what a rule set that compiles may still get wrong
//!   ([`RuleSet::warnings`] → [`PolicyWarning`]): issuers whose subjects become
//!   indistinguishable downstream.
//! - [`claim_refs`]: the claims rules refer to by name, and warnings about those an
//!   issuer's tokens never carry ([`RuleSet::unknown_claims`], with a [`ClaimCheck`]
//!   from the caller, who knows the issuers).
//! - `path`, `pattern`, `template`, `expr` (private): claim paths, anchored globs,
//!   issuance templates and CEL expressions, parsed and checked at compile time.
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
//! **Matching** (all listed conditions must hold; they are checked in this order, cheapest
//! first, and the first that fails is the rule's reason):
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
//! - `condition`: a CEL expression (below) that must evaluate to `true`.
//! - `actor`: a rule with `actor` matches only a delegated request whose actor token
//!   came from the named issuer and meets the actor's `subject` / `subject_pattern` /
//!   `claims` / `claim_patterns` / `condition`. An **allow** rule without `actor` never
//!   matches a request that carries an actor token: delegation is granted explicitly. A
//!   **deny** rule without `actor` applies with or without an actor token, so delegation
//!   can never be used to slip past a deny.
//!
//! **Sender constraints.** `require_dpop: true` (the request carried a valid DPoP
//! proof, [`Request::dpop`]) and `require_client_cert: true` (it came with a verified
//! client certificate, [`Request::client_cert`]) are checked first, before `subject`;
//! allow rules only (on a deny rule they are a compile error). Neither counts as a
//! constraint on the subject for `allow_any_subject`.
//!
//! **Rules that admit everyone.** An allow rule with none of `subject`, `subject_pattern`,
//! `claims`, `claim_patterns` and `condition` would exchange every token its issuer
//! signs: it does not compile unless it says `allow_any_subject: true`. A
//! `subject_pattern` made only of wildcards (`*`, `**`, `*?*`) counts as no constraint.
//! `match.actor` does not count either (the rule still admits every subject token).
//! `allow_any_subject: true` beside real constraints is accepted and changes nothing: it
//! only acknowledges; deny rules ignore it.
//!
//! Claim paths: dots separate nested keys and a key containing a dot is written in
//! brackets with double quotes: `repository`, `["kubernetes.io"].namespace`. In
//! templates the root is explicit: `{sub}`, `{iss}`, `{aud}`, `{claims.repository}`,
//! `{claims["kubernetes.io"]["serviceaccount"]["name"]}`; `{{` and `}}` are literal
//! braces. A placeholder that names nothing (`{}`, `{claims}`, `{foo}`) is a compile
//! error.
//!
//! **Deciding.**
//! 1. Any matching deny rule denies ([`DenialKind::DeniedByPolicy`], naming the rule),
//!    even when an allow rule matches: deny wins. Deny rules match on their conditions
//!    and targets; a deny rule's `scopes`, when listed, further restrict it to requests
//!    asking for at least one of them.
//! 2. A delegated request whose subject token refuses the actor (`may_act`, below) is
//!    denied ([`DenialKind::DeniedByPolicy`], no rule).
//! 3. Otherwise the first allow rule in input order that matches and allows every
//!    requested scope (all listed in its `match.scopes`) decides. A request without
//!    scopes needs no scope.
//! 4. If allow rules matched but none allows the requested scopes, the request is
//!    denied with [`DenialKind::ScopeNotAllowed`] (`invalid_scope`), naming the first.
//! 5. If no allow rule matched: [`DenialKind::DeniedByPolicy`] without a rule, the
//!    reason summarising why each candidate did not match.
//!
//! **Delegation and `may_act`** (RFC 8693 §4.1, §4.4). Rules say which actors may act
//! for which subjects (`match.actor`). The subject token has its own say: when its
//! claims hold `may_act` and the request carries an actor token, the actor must be one
//! the subject token names. `may_act` is an object (RFC 8693 §4.4: `sub` and optionally
//! `iss` of the authorized actor) or, as an extension, a list of such objects; an entry
//! authorizes the actor when it has `sub` and every one of its members equals the
//! actor token's claim of the same name (so `iss`, when given, must match too). An
//! entry without `sub`, an empty list, or a `may_act` of another shape authorizes no
//! actor: a claim meant to restrict is never ignored because it is malformed. The
//! reason reads `may_act: actor "agent:7" is not authorized by the subject token`.
//! Without an actor token `may_act` is not consulted. Nesting earlier `act` claims
//! into the issued token is the broker's job.
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
//! **Mapping expressions.** `issue.subject` and any value of `issue.claims`, at any depth,
//! may instead be a CEL expression written as a one-key mapping `{expr: '<CEL>'}`
//! (`repo: {expr: 'claims.repository.lowerAscii()'}`). The result is issued as JSON:
//! string, number, boolean, null, list or map (map keys as text, sorted). Bytes and
//! non-finite numbers deny. For `issue.subject` it must be a non-empty string. An
//! evaluation error denies like a missing template claim, with the reason
//! (`rule `r` matched, but issue.claims.repo: no such key: repository`). A mapping with
//! `expr` and any other key is a compile error, so a literal object can never be taken
//! for an expression; to issue an object whose only key is `expr`, write it as a CEL
//! map literal: `{expr: '{"expr": "x"}'}`.
//!
//! # CEL
//!
//! `match.condition`, `match.actor.condition` and `{expr: ...}` values are
//! [CEL](https://github.com/google/cel-spec) expressions (the `cel` crate), parsed and
//! checked once when the rules compile; a rule whose expression does not pass is a
//! compile error with its field (`match.condition`, `issue.claims.repo.expr`).
//!
//! **Variables** (the same in every expression of a request):
//! - `claims`: the subject token's verified claims, a map (JSON integers are `int`, or
//!   `uint` beyond `int`'s range; other numbers `double`).
//! - `request`: a map: `audiences` (list of the `audience` values), `resources` (list of
//!   the `resource` values), `targets` (both, deduplicated: what rules are selected
//!   by), `scope` (the requested scopes joined by spaces, `""` if none), `scopes`
//!   (list), `requested_token_type` (string), `client_cert` (the verified mutual-TLS
//!   client certificate, `{uri_sans, subject, sha256}`, or `null`).
//! - `actor`: the actor token's verified claims, or `null` without an actor token. In
//!   `match.actor.condition` too, `claims` is the subject token and `actor` the actor.
//!
//! **Functions**: the standard operators and macros (`==`, `in`, `&&`, `? :`, `has()`,
//! `all`, `exists`, `exists_one`, `map`, `filter`), `size`, `contains`, `startsWith`,
//! `endsWith`, `matches` (RE2 syntax, linear time), `int`, `uint`, `double`, `string`,
//! `type`; and fedbroker's own string functions, callable as `s.f(..)` or `f(s, ..)`:
//! `lowerAscii`, `upperAscii`, `lower` / `upper` (Unicode), `trim`, `split(sep)` (an
//! empty separator splits into characters), `join()` / `join(sep)` on a list of strings,
//! `replace(old, new)` (every occurrence), `substring(start[, end])` (in characters),
//! `indexOf(sub)` (in characters, -1 if absent). There are no timestamps or durations:
//! the engine reads no clock.
//!
//! **The static check** (what we have instead of a type-checker: CEL's checker needs
//! declared types, and claims are untyped JSON): the expression parses; it is at most
//! [`MAX_EXPRESSION_CHARS`] (4096) characters, like Google's attribute conditions, nests
//! at most [`MAX_EXPRESSION_DEPTH`] (32) levels and has at most [`MAX_EXPRESSION_NODES`]
//! (512) syntax-tree nodes after macros expand; it refers to no variable but `claims`,
//! `request`, `actor`, type names (`string`, `int`, ...) and the variables its own
//! comprehensions bind, in their scope; it calls no function outside the list above; it
//! builds no messages (`Foo{...}`) and uses no optional syntax; the pattern of every
//! `matches` is a string literal and a valid regular expression whose compiled form is at
//! most [`MAX_REGEX_BYTES`] (1 MiB) (a pattern is never taken from a token; it is
//! compiled once, here, never per call); and no comprehension sits in another's body. Types are checked at run
//! time: `claims.run_attempt > "1"` compiles and denies.
//!
//! **Evaluation.** A condition holds only when it evaluates to `true`. In an **allow**
//! rule, `false`, a value of another type (`match.condition: evaluated to a string, not a
//! bool`) and any error (`match.condition: no such key: environment`, a wrong type, a
//! division by zero, a budget or size limit) fail it: an error never allows. In a
//! **deny** rule only `false` fails it: a value of another type or an error counts as
//! the condition holding (fail closed), so the deny rule matches when its other
//! conditions (`subject`, `claims`, `scopes`, `actor.issuer`, ...) hold, and the
//! denial's reason names the error (`deny rule `no-admins` matched (a condition could
//! not be evaluated, which denies: match.condition: comprehension: may iterate over at
//! most 1024 elements, got 1025)`). Otherwise a token could slip past a deny rule by
//! carrying a claim too large, missing or of the wrong type for its condition. Write
//! `has(claims.groups) && ...` when a missing claim should not deny.
//! CEL's own logic applies inside the expression: `error || true` is `true`, and
//! `has(claims.x)` tests for a key without failing. Use `actor != null &&
//! actor.sub == ...` where the actor may be absent.
//!
//! **Cost.** cel-rust has no cost counter, so fedbroker adds one. When an expression
//! compiles, guards are woven into its syntax tree: every operand a function or
//! operator reads is charged by its size (a string by its bytes, a list or map by its
//! entries; that is the work a scan like `contains`, `==`, `in` or `matches` does),
//! every `matches` call the input's length plus one times the number of states of the
//! pattern's automaton (its Thompson NFA, the regex crate's worst case being O(states ×
//! length); `^[a-z]+$` has about 10 states, `\w` or `\p{L}` about 300, so prefer ASCII
//! classes such as `[a-z0-9_]` or `(?-u:\w)` in conditions that walk a list), every
//! string `+` or a string function builds by its bytes, and every comprehension
//! its iterations times the nodes of its body. One evaluation may spend
//! [`MAX_EVALUATION_COST`] (1,000,000) units; past that it fails (`match.condition:
//! comprehension: the expression exceeds its evaluation budget of 1000000 units`, the
//! first word naming what ran out) and, like any error, denies. Besides the budget: `+` fails past [`MAX_STRING_BYTES`] (64 KiB) or
//! [`MAX_LIST_ITEMS`] (4096 elements); `join` and `replace` check their result size
//! before building it; a comprehension iterates over at most [`MAX_ITERATIONS`] (1024)
//! elements and none may nest. Why that bounds the work: the data is bounded (the broker
//! verifies tokens of at most 16 KiB and request bodies of at most
//! `server.max_body_bytes`), the expression is bounded (4096 characters, 512 nodes,
//! depth 32, literals paid for by that length), each node's work is linear in operands
//! that are metered, and loops are metered per iteration. A typical condition spends a
//! few hundred units; `BENCHMARKS.md` has measured figures, including expressions
//! written to exhaust the budget. The budget is kept per evaluation in a thread-local
//! counter, reset when an evaluation starts (evaluation is synchronous).
//!
//! **Reasons.** [`Denial::reason`] and [`RuleOutcome::reason`] name the first condition
//! that failed and the value found (shortened to 200 characters), for the audit log and
//! `fedbroker explain`. They never contain a token. The phrasing:
//! - `sub: expected "repo:acme/api:ref:refs/heads/main", got "repo:acme/api:ref:refs/heads/dev"`
//! - `sub: does not match "repo:acme/*" (got "repo:other/x")`
//! - `claims.environment: expected one of [prod, staging], got "dev"`
//! - `claims.repository: missing (expected "acme/api")`
//! - `match.condition: evaluated to false`, `match.condition: no such key: environment`
//! - `actor.sub: ...`, `actor.claims.tier: ...`, `match.actor.condition: ...` for the
//!   actor token; `actor: the rule requires an actor token; the request has none`
//! - `scopes: the rule does not allow [admin] (it allows [read])`
//! - `audiences: does not grant the requested target `gcp``
//! - `may_act: actor "agent:7" is not authorized by the subject token`
//! - for a rule that matched but did not decide: `matched, but deny rule `x` takes
//!   precedence`, `matched, but rule `y` comes first`, `matched, but may_act: ...`
//!
//! **`explain --json`.** [`Explanation`] serializes to a stable document:
//!
//! ```json
//! {
//!   "decision": {
//!     "outcome": "allow",
//!     "rule": "gha-main-deploys-to-aws",
//!     "grant": {"audience": ["sts.amazonaws.com"], "subject": "gha:acme/api",
//!               "lifetime": 900, "scopes": [], "claims": {"repo": "acme/api"}}
//!   },
//!   "rules": [
//!     {"rule": "gha-main-deploys-to-aws", "effect": "allow", "matched": true, "reason": null},
//!     {"rule": "no-forks", "effect": "deny", "matched": false,
//!      "reason": "claims.repository_owner: expected \"fork\", got \"acme\""}
//!   ]
//! }
//! ```
//!
//! A denial's decision is `{"outcome": "deny", "rule": "no-forks" | null, "kind":
//! "denied_by_policy" | "no_rule_for_target" | "scope_not_allowed", "error":
//! "invalid_request" | "invalid_target" | "invalid_scope", "reason": "..."}`. `rules`
//! lists, in input order, every rule consulted for the request's issuer and targets
//! (`effect` is `allow` or `deny`; `reason` is null for the deciding rule and for a
//! matching deny rule, except one that matched because its condition could not be
//! evaluated: its reason names the error). Fields may be added; none will be renamed or removed.
//!
//! **Compile errors** (all collected, each with rule index, name and field): empty or
//! duplicate name; unknown issuer (`match.issuer`, `match.actor.issuer`); both
//! `subject` and `subject_pattern`; empty subject; empty pattern or one over 1024
//! characters; claim path syntax; empty `claims` value lists or values; a CEL
//! expression that fails the static check (`match.condition`, `match.actor.condition`,
//! `issue.subject.expr`, `issue.claims.<path>.expr`); an `{expr: ...}` mapping with
//! other keys; an allow rule that admits every token without `allow_any_subject: true`
//! (field `match`); allow rule without `audiences`; empty audience or scope, or a scope
//! containing whitespace; `issue` on a deny rule; `issue.lifetime` unparsable, zero or
//! above the cap; template syntax in `issue.audience`, `issue.subject` and every string
//! in `issue.claims`, including placeholders that name nothing; empty `issue.audience`
//! / `issue.subject`; reserved claims (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`,
//! `act`, `scope`, `may_act`, `cnf`, `source_issuer`) in `issue.claims`, whether the value is a
//! template, a literal or an `{expr: ...}` mapping.

// Nothing network input reaches may panic (architecture.md): no `expect`, no `panic!`
// outside tests; `clippy.toml` forbids reading the clock and the environment.
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

pub mod claim_refs;
pub mod compile;
pub mod credentials;
pub mod duration;
pub mod eval;
mod expr;
mod path;
mod pattern;
pub mod raw;
mod template;
pub mod warnings;

#[cfg(test)]
mod test_support;

pub use claim_refs::{ClaimCheck, UNKNOWN_CLAIM};
pub use compile::{CompileContext, DEFAULT_LIFETIME, RuleError, RuleSet};
pub use credentials::{Cloud, Credentials};
pub use duration::{DurationError, DurationProblem, format_duration, parse_duration};
pub use eval::{
    Actor, CallerCert, Claims, Decision, Denial, DenialKind, Explanation, Grant, Request, RuleOutcome,
};
pub use expr::{
    MAX_EVALUATION_COST, MAX_EXPRESSION_CHARS, MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_NODES, MAX_ITERATIONS,
    MAX_LIST_ITEMS, MAX_REGEX_BYTES, MAX_STRING_BYTES,
};
pub use pattern::MAX_PATTERN_CHARS;
pub use raw::{
    ClaimValues, Effect, RawActor, RawAwsCredentials, RawAzureCredentials, RawCredentials, RawGcpCredentials,
    RawIssue, RawMatch, RawRule, RawRuleFile, parse_rules_json,
};
pub use warnings::{PolicyWarning, WarnedRule};
