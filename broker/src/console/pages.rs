//! The console's HTML (maud: escaped by default). Every page is the same frame: a skip
//! link, a header with the navigation (the current page marked `aria-current`) and the
//! logout form, and one `main` with one `h1`. Tables sit in scrolling wrappers so that
//! pages work on a phone; forms label every field.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, html};
use serde_json::{Map, Value};

use super::Filter;

/// The navigation: path under the console, label.
const NAV: [(&str, &str); 6] = [
    ("/", "Overview"),
    ("/explain", "Explain"),
    ("/issuers", "Issuers"),
    ("/rules", "Rules"),
    ("/decisions", "Decisions"),
    ("/keys", "Keys"),
];

pub struct Chrome<'a> {
    pub base: &'a str,
    /// The current page's path under the console (for `aria-current`).
    pub current: &'a str,
    /// With a session: its CSRF token (for the logout form) and who is logged in.
    pub csrf: Option<String>,
    pub who: Option<String>,
}

pub fn layout(chrome: &Chrome<'_>, title: &str, body: Markup) -> Markup {
    let base = chrome.base;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fedbroker console" }
                link rel="stylesheet" href={ (base) "/assets/console.css" };
                script src={ (base) "/assets/console.js" } defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href={ (base) "/" } { "fedbroker" span.sub { " console" } }
                    @if let Some(csrf) = &chrome.csrf {
                        nav aria-label="Console pages" {
                            ul {
                                @for (path, label) in NAV {
                                    li {
                                        a href={ (base) (path) }
                                          aria-current=[(chrome.current == path).then_some("page")] { (label) }
                                    }
                                }
                            }
                        }
                        form.logout method="post" action={ (base) "/logout" } {
                            input type="hidden" name="csrf" value=(csrf);
                            @if let Some(who) = &chrome.who { span.who { (who) } }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub fn refused(base: &str, message: &str) -> Markup {
    html! {
        (problem(message))
        p { a href={ (base) "/login" } { "Log in" } }
    }
}

pub fn problem(message: &str) -> Markup {
    html! { p.alert role="alert" { (message) } }
}

pub fn login(base: &str, csrf: &str, error: Option<&str>) -> Markup {
    html! {
        p { "Log in with an admin API token (" code { "admin.tokens" } " or " code { "admin.tokens_file" } "). The token is checked and not kept: the session cookie refers to it by a digest." }
        @if let Some(e) = error { p.alert role="alert" #login-error { (e) } }
        form.stack method="post" action={ (base) "/login" } {
            input type="hidden" name="csrf" value=(csrf);
            label for="token" { "Admin token" }
            input #token type="password" name="token" autocomplete="off" required
                aria-describedby=[error.map(|_| "login-error")];
            button type="submit" { "Log in" }
        }
    }
}

fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn shown(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What the overview counts (cheap to have: no rule or key file is listed for it).
pub struct Summary {
    pub issuers: usize,
    pub failing_issuers: usize,
    pub rules: usize,
    pub generation: u64,
    pub last_reload_error: Option<String>,
    pub active_kid: String,
}

pub fn overview(base: &str, s: &Summary) -> Markup {
    html! {
        ul.cards {
            li { a href={ (base) "/issuers" } { strong { (s.issuers) } " issuers" }
                 @if s.failing_issuers > 0 { " · " span.bad { (s.failing_issuers) " failing" } } }
            li { a href={ (base) "/rules" } { strong { (s.rules) } " rules" }
                 " · generation " (s.generation) }
            li { a href={ (base) "/keys" } { "signing with " strong { (s.active_kid) } } }
            li { a href={ (base) "/decisions" } { "live decisions" } }
        }
        @if let Some(e) = &s.last_reload_error {
            p.alert role="alert" { "The last reload failed: " (e) }
        }
        p { "Start at " a href={ (base) "/explain" } { "Explain" } " to see why a token would be accepted or refused." }
    }
}

/// What the explain form shows again after a submit (never the token).
#[derive(Debug, Default)]
pub struct ExplainForm {
    pub claims: String,
    pub issuer: String,
    pub audience: String,
    pub resource: String,
    pub scope: String,
    pub access_token: bool,
    pub dpop: bool,
}

pub enum ExplainOutcome {
    Done(Value),
    Error(String),
}

pub fn explain(
    base: &str,
    csrf: &str,
    issuers: &[String],
    form: &ExplainForm,
    outcome: Option<&ExplainOutcome>,
) -> Markup {
    html! {
        p { "A dry run of one exchange, decided by the code " code { "/token" } " and " code { "fedbroker explain" } " run: nothing is issued, no replay is recorded, the token is not kept." }
        form.stack method="post" action={ (base) "/explain" } {
            input type="hidden" name="csrf" value=(csrf);
            fieldset {
                legend { "Subject: a token, or a claims document" }
                label for="subject_token" { "Token" }
                textarea #subject_token name="subject_token" rows="4" autocomplete="off" spellcheck="false"
                    aria-describedby="subject_token-help" {}
                p.help #subject_token-help { "A JWT, verified with the issuer's keys as " code { "/token" } " would." }
                label for="claims" { "Or a claims document (JSON)" }
                textarea #claims name="claims" rows="4" spellcheck="false" { (form.claims) }
                label for="issuer" { "Issuer of the claims document" }
                select #issuer name="issuer" {
                    option value="" selected[form.issuer.is_empty()] { "(from its iss)" }
                    @for name in issuers {
                        option value=(name) selected[&form.issuer == name] { (name) }
                    }
                }
            }
            fieldset {
                legend { "Request" }
                label for="audience" { "Audiences" }
                input #audience type="text" name="audience" value=(form.audience) aria-describedby="audience-help";
                p.help #audience-help { "Separated by spaces or commas." }
                label for="resource" { "Resources" }
                input #resource type="text" name="resource" value=(form.resource);
                label for="scope" { "Scope" }
                input #scope type="text" name="scope" value=(form.scope);
                div.check {
                    input #access_token type="checkbox" name="access_token" value="1" checked[form.access_token];
                    label for="access_token" { "Ask for an access token" }
                }
                div.check {
                    input #dpop type="checkbox" name="dpop" value="1" checked[form.dpop];
                    label for="dpop" { "As if with a valid DPoP proof" }
                }
            }
            button type="submit" { "Explain" }
        }
        @if let Some(outcome) = outcome {
            section #result aria-labelledby="result-title" {
                h2 #result-title { "Result" }
                @match outcome {
                    ExplainOutcome::Error(message) => p.alert role="alert" { (message) },
                    ExplainOutcome::Done(doc) => (explanation(doc)),
                }
            }
        }
    }
}

fn explanation(doc: &Value) -> Markup {
    let decision = &doc["decision"];
    let allow = str_of(decision, "outcome") == "allow";
    let rule = decision.get("rule").and_then(Value::as_str);
    let rows = super::verification_rows(doc);
    let subject = &doc["subject"];
    html! {
        div.decision.(if allow { "allow" } else { "deny" }) role="status" #decision {
            p.outcome { (if allow { "ALLOW" } else { "DENY" }) }
            @if let Some(r) = rule { p { "Deciding rule: " strong #deciding-rule { (r) } } }
            @if !allow {
                p { "Error: " code { (str_of(decision, "error")) } }
                p #reason { "Reason: " (str_of(decision, "reason")) }
            }
        }
        @if subject.is_object() {
            h3 { "Subject" }
            dl.kv {
                dt { "Subject" } dd { (shown(&subject["sub"])) }
                dt { "Issuer" } dd { (str_of(subject, "issuer")) " (" (str_of(subject, "kind")) ")" }
            }
        }
        h3 { "Verification" }
        @if rows.is_empty() {
            @if str_of(&doc["decision"], "stage") == "token" {
                p { "The token was refused before any rule ran (see the reason)." }
            } @else {
                p { "From a claims document: no signature, time or audience check." }
            }
        } @else {
            dl.kv #verification {
                @for (k, v) in &rows { dt { (k) } dd { (v) } }
            }
        }
        @if let Some(list) = doc["rules"].as_array().filter(|l| !l.is_empty()) {
            h3 { "Rules of this issuer for these targets" }
            div.scroll {
                table #rules {
                    caption.visually-hidden { "Each rule, whether it matched, and the first condition that failed" }
                    (head(&["Rule", "Effect", "Outcome"]))
                    tbody {
                        @for r in list {
                            @let matched = r["matched"] == Value::Bool(true);
                            tr {
                                th scope="row" { (str_of(r, "rule")) }
                                td { (str_of(r, "effect")) }
                                td {
                                    @if matched { "matched" @if let Some(n) = r["reason"].as_str() { " (" (n) ")" } }
                                    @else { (str_of(r, "reason")) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !doc["issued_claims"].is_null() {
            h3 { "Claims the issued token would carry" }
            pre #issued-claims { (serde_json::to_string_pretty(&doc["issued_claims"]).unwrap_or_default()) }
        }
    }
}

pub fn issuers(base: &str, list: &[Value], csrf: &str, note: Option<&str>) -> Markup {
    html! {
        @if let Some(n) = note { p.note role="status" { (n) } }
        @if list.is_empty() { p { "No issuer is registered." } }
        @for i in list {
            @let name = str_of(i, "name");
            section.card aria-labelledby={ "issuer-" (name) } {
                h2 #{ "issuer-" (name) } { (name) }
                dl.kv {
                    dt { "Kind" } dd { (str_of(i, "kind")) }
                    dt { "iss" } dd { code { (str_of(i, "iss")) } }
                    dt { "Key source" } dd { (str_of(i, "source")) @if !str_of(i, "url").is_empty() { " " code { (str_of(i, "url")) } } }
                    @if i.get("last_result").is_some() {
                        dt { "Last fetch" } dd { (shown(&i["last_fetch"])) }
                        dt { "Last result" } dd.(if str_of(i, "last_result") == "error" { "bad" } else { "" }) { (str_of(i, "last_result")) }
                        @if let Some(e) = i["last_error"].as_str() { dt { "Error" } dd.bad { (e) } }
                        dt { "Next refresh" } dd { (shown(&i["next_refresh"])) }
                    }
                    dt { "Defined in" } dd { (if i["read_only"] == Value::Bool(true) { "the configuration file" } else { "the admin API" }) }
                }
                @let keys = i["keys"].as_array().cloned().unwrap_or_default();
                @if keys.is_empty() { p { "No keys cached." } } @else {
                    div.scroll {
                        table {
                            caption { "Cached keys" }
                            (head(&["kid", "Algorithms"]))
                            tbody {
                                @for k in &keys {
                                    tr {
                                        td { code { (shown(&k["kid"])) } }
                                        td { (k["algorithms"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if str_of(i, "source") != "static" {
                    form method="post" action={ (base) "/issuers/" (percent(name)) "/refetch" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Refetch keys of " (name) " now" }
                    }
                }
            }
        }
    }
}

/// A table's header row: one column header cell per name.
fn head(columns: &[&str]) -> Markup {
    html! { thead { tr { @for c in columns { th scope="col" { (c) } } } } }
}

/// A path segment, percent-encoded.
fn percent(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How many rules are loaded, and how many the search matched (at most
/// [`super::MAX_RULES_SHOWN`] of them are listed).
#[derive(Debug, Clone, Copy)]
pub struct RuleCounts {
    pub total: usize,
    pub matched: usize,
}

pub fn rules(base: &str, view: &Value, search: &super::RuleSearch, counts: RuleCounts) -> Markup {
    // Grouped by issuer, then by target: a rule for several targets is under each.
    let mut groups: BTreeMap<&str, BTreeMap<&str, Vec<&Value>>> = BTreeMap::new();
    let empty = Vec::new();
    for r in view["rules"].as_array().unwrap_or(&empty) {
        let targets: Vec<&str> = r["targets"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let by_target = groups.entry(str_of(r, "issuer")).or_default();
        if targets.is_empty() {
            by_target.entry("(any)").or_default().push(r);
        }
        for t in targets {
            by_target.entry(t).or_default().push(r);
        }
    }
    html! {
        dl.kv {
            dt { "Reload generation" } dd #generation { (shown(&view["generation"])) }
            dt { "Last reload error" } dd { (shown(&view["last_reload_error"])) }
            dt { "Refused without a deciding rule" } dd { (shown(&view["denied_without_rule"])) }
        }
        p.help { "Hit counts are since this broker started: an allow when the rule granted an exchange, a deny when it refused one." }
        form.filters method="get" action={ (base) "/rules" } role="search" {
            label for="rule-q" { "Find rules" }
            input #rule-q type="search" name="q" value=(search.q) aria-describedby="rule-count";
            button type="submit" { "Find" }
        }
        p #rule-count role="status" {
            @if counts.matched > super::MAX_RULES_SHOWN {
                "Showing " (super::MAX_RULES_SHOWN) " of " (counts.matched) " matching rules (" (counts.total) " loaded): narrow the search."
            } @else if counts.matched < counts.total {
                (counts.matched) " of " (counts.total) " rules match."
            } @else {
                (counts.total) " rules."
            }
        }
        @for (issuer, by_target) in &groups {
            section aria-labelledby={ "rules-" (issuer) } {
                h2 #{ "rules-" (issuer) } { "Issuer " (issuer) }
                @for (target, rules) in by_target {
                    h3 { "Target " code { (target) } }
                    div.scroll {
                        table.rules {
                            caption.visually-hidden { "Rules of issuer " (issuer) " for target " (target) }
                            (head(&["Rule", "Effect", "Allowed", "Denied", "From"]))
                            tbody {
                                @for r in rules {
                                    tr data-rule=(str_of(r, "name")) {
                                        th scope="row" { (str_of(r, "name"))
                                            @if let Some(d) = r["description"].as_str() { br; span.help { (d) } } }
                                        td { (str_of(r, "effect")) }
                                        td.num { (shown(&r["hits"]["allow"])) }
                                        td.num { (shown(&r["hits"]["deny"])) }
                                        td { code { (str_of(r, "file")) @if let Some(l) = r["line"].as_u64() { ":" (l) } } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn decisions(base: &str, filter: &Filter, recent: &[Map<String, Value>]) -> Markup {
    html! {
        form.filters method="get" action={ (base) "/decisions" } role="search" {
            label for="outcome" { "Outcome" }
            select #outcome name="outcome" {
                option value="" selected[filter.outcome.is_empty()] { "any" }
                option value="allow" selected[filter.outcome == "allow"] { "allow" }
                option value="deny" selected[filter.outcome == "deny"] { "deny" }
            }
            label for="q" { "Containing" }
            input #q type="search" name="q" value=(filter.q);
            button type="submit" { "Filter" }
        }
        p #live-status role="status" aria-live="polite" { "Recent decisions; new ones appear at the top while this page is open." }
        div.scroll {
            table #decisions data-stream={ (base) "/decisions/stream" } {
                caption.visually-hidden { "Decisions, newest first" }
                (head(&["Time", "Outcome", "Rule", "Issuer", "Subject", "Target", "Reason"]))
                tbody {
                    @for d in recent { (decision_row(d)) }
                }
            }
        }
    }
}

fn decision_row(d: &Map<String, Value>) -> Markup {
    let get = |k: &str| d.get(k).map(shown).unwrap_or_default();
    let outcome = get("outcome");
    let reason = match (d.get("error"), d.get("reason")) {
        (Some(e), Some(r)) => format!("{}: {}", shown(e), shown(r)),
        (Some(e), None) => shown(e),
        (None, Some(r)) => shown(r),
        (None, None) => String::new(),
    };
    html! {
        tr.(outcome) {
            td { (get("time")) }
            td { (outcome) }
            td { (get("rule")) }
            td { (get("issuer")) }
            td { (get("subject")) }
            td { (get("target")) }
            td { (reason) }
        }
    }
}

pub fn keys(view: &Value) -> Markup {
    let empty = Vec::new();
    let keys = view["keys"].as_array().unwrap_or(&empty);
    html! {
        dl.kv {
            dt { "Algorithm" } dd { (shown(&view["algorithm"])) }
            dt { "Signing now" } dd { code #active-kid { (shown(&view["active_kid"])) } }
            @if let Some(r) = view["rotation"].as_object() {
                dt { "Rotation" } dd { "every " (shown(&r["every"])) " s, published " (shown(&r["prepublish"])) " s before it signs" }
                dt { "Next key" } dd { (shown(&r["next_key_at"])) }
            }
        }
        div.scroll {
            table #keys {
                caption.visually-hidden { "Signing keys" }
                (head(&["kid", "Type", "State", "Signs from", "Signs until", "Published until", "Where"]))
                tbody {
                    @for k in keys {
                        tr {
                            td { code { (str_of(k, "kid")) } }
                            td { (str_of(k, "key_type")) }
                            td { (str_of(k, "state")) }
                            td { (shown(&k["signs_from"])) }
                            td { (shown(&k["signs_until"])) }
                            td { (shown(&k["published_until"])) }
                            td { (k.get("file").or_else(|| k.get("kms_key")).map(shown).unwrap_or_else(|| "in memory".into())) }
                        }
                    }
                }
            }
        }
    }
}
