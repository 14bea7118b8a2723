//! `fedbroker test` (contract §14): run the cases of rule test files (`*.test.yaml`)
//! against the configuration's rules, without network and without replay marks. Each
//! case is a claims document decided by [`crate::explain::explain_input`],
//! the code behind `explain --claims` and the admin API's explain, which evaluates the
//! rules `/token` evaluates: there is no second implementation of a decision here, only
//! the comparison of the explanation with what the case expects.
//!
//! Output: text for a terminal (a line per case, every failure in full, a summary) or
//! JUnit XML for CI systems. Exit 0 when every case passes, 1 when one fails, 2 on a
//! configuration or test-file error (nothing is run then).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use crate::config::{self, Config, ConfigError, Expect, TestCase};
use crate::explain::{ActorClaims, ExplainContext, ExplainInput, explain_input};
use crate::issuer_keys::FetchClients;
use crate::metrics::Metrics;
use crate::policy::Policy;

pub const EXIT_PASS: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// How results are printed.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormat {
    /// For a person at a terminal.
    #[default]
    Text,
    /// JUnit XML on stdout, for CI systems.
    Junit,
}

#[derive(Debug, Clone)]
pub struct TestArgs {
    pub config: PathBuf,
    pub format: TestFormat,
    /// Test files, or directories whose `*.test.yaml` files to run; empty: every
    /// `*.test.yaml` beside the rule files.
    pub paths: Vec<PathBuf>,
}

/// What became of one case.
enum Verdict {
    Pass,
    /// What was expected and what was decided, line by line.
    Fail(Vec<String>),
    /// The case could not be decided at all.
    Error(String),
}

struct CaseResult<'a> {
    case: &'a TestCase,
    verdict: Verdict,
    seconds: f64,
}

/// One test file's cases.
struct TestFile {
    path: PathBuf,
    cases: Vec<TestCase>,
}

pub fn run(args: TestArgs) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => ExitCode::from(rt.block_on(run_tests(&args))),
        Err(e) => {
            eprintln!("fedbroker test: cannot start the runtime: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run_tests(args: &TestArgs) -> u8 {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fedbroker test: invalid configuration:\n{e}");
            return EXIT_ERROR;
        }
    };
    let files = match read_test_files(args, &config) {
        Ok(files) => files,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "fedbroker test: {} error(s) in the test files; nothing was run",
                errors.len()
            );
            return EXIT_ERROR;
        }
    };
    let policy = match FetchClients::new()
        .map_err(|e| e.to_string())
        .and_then(|clients| {
            Policy::build(1, &config, None, &clients, &Arc::new(Metrics::new()), false)
                .map_err(|e| e.to_string())
        }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fedbroker test: {e}");
            return EXIT_ERROR;
        }
    };
    let ctx = ExplainContext::of_config(&policy, &config);
    let mut results: Vec<Vec<CaseResult<'_>>> = Vec::new();
    for file in &files {
        let mut out = Vec::new();
        for case in &file.cases {
            let started = Instant::now();
            let verdict = run_case(&ctx, case).await;
            out.push(CaseResult {
                case,
                verdict,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        results.push(out);
    }
    let all = || results.iter().flatten();
    let failed = all().filter(|r| matches!(r.verdict, Verdict::Fail(_))).count();
    let errors = all().filter(|r| matches!(r.verdict, Verdict::Error(_))).count();
    match args.format {
        TestFormat::Text => print!("{}", text_report(&files, &results)),
        TestFormat::Junit => print!("{}", junit_report(&files, &results)),
    }
    if errors > 0 {
        EXIT_ERROR
    } else if failed > 0 {
        EXIT_FAIL
    } else {
        EXIT_PASS
    }
}

/// The test files to run, parsed, every case's issuers checked against the
/// configuration. Every problem of every file, or the files.
fn read_test_files(args: &TestArgs, config: &Config) -> Result<Vec<TestFile>, Vec<ConfigError>> {
    let problem = |file: &Path, line: Option<usize>, field: &str, message: String| ConfigError {
        file: file.to_path_buf(),
        line,
        field: field.to_owned(),
        message,
    };
    let mut errors = Vec::new();
    let mut paths = Vec::new();
    if args.paths.is_empty() {
        paths = config::test_files_beside_rules(&args.config, &config.rules_files);
        if paths.is_empty() {
            errors.push(problem(
                &args.config,
                None,
                "",
                format!(
                    "no test files: no *{} beside the rule files (give the files to run)",
                    config::TEST_FILE_SUFFIX
                ),
            ));
        }
    }
    for path in &args.paths {
        if path.is_dir() {
            let found = config::test_files_in(path);
            if found.is_empty() {
                errors.push(problem(
                    path,
                    None,
                    "",
                    format!("no *{} in this directory", config::TEST_FILE_SUFFIX),
                ));
            }
            paths.extend(found);
        } else {
            paths.push(path.clone());
        }
    }
    let issuer_names: Vec<&str> = config.issuers.iter().map(|i| i.name.as_str()).collect();
    let has_iss = |iss: &str| config.issuers.iter().any(|i| i.policy.issuer == iss);
    let mut files = Vec::new();
    for path in paths {
        let text = match crate::files::read_regular_text(&path, crate::files::MAX_CONFIG_BYTES) {
            Ok(t) => t,
            Err(e) => {
                errors.push(problem(&path, None, "", format!("cannot read: {e}")));
                continue;
            }
        };
        let (cases, problems) = config::parse_test_file(&path, &text);
        errors.extend(problems);
        for case in &cases {
            // The case's index in the file, for the field path.
            let i = case.index;
            let mut check = |field: &str, name: Option<&str>, claims: &Map<String, Value>| {
                let field = format!("tests[{i}].{field}");
                let message = match (name, claims.get("iss").and_then(Value::as_str)) {
                    (Some(name), _) if !issuer_names.contains(&name) => format!(
                        "no issuer named `{name}` in the configuration (registered: {})",
                        issuer_names.join(", ")
                    ),
                    (Some(_), _) => return,
                    (None, Some(iss)) if !has_iss(iss) => {
                        format!("no `issuer`, and no registered issuer has the claims' iss `{iss}`")
                    }
                    (None, Some(_)) => return,
                    (None, None) => "give the issuer's name (or an `iss` claim)".to_owned(),
                };
                errors.push(problem(&path, case.line, &field, message));
            };
            check("issuer", case.issuer.as_deref(), &case.claims);
            if let Some(actor) = &case.actor {
                check("actor.issuer", actor.issuer.as_deref(), &actor.claims);
            }
            if let Some(rule) = &case.rule
                && !config.rules.rule_names().any(|name| name == rule)
            {
                let message = format!("no rule named `{rule}` in the configuration");
                errors.push(problem(&path, case.line, &format!("tests[{i}].rule"), message));
            }
        }
        files.push(TestFile { path, cases });
    }
    if errors.is_empty() { Ok(files) } else { Err(errors) }
}

/// Decide one case as `explain --claims` would, and compare.
async fn run_case(ctx: &ExplainContext<'_>, case: &TestCase) -> Verdict {
    let input = ExplainInput {
        claims: Some(case.claims.clone()),
        issuer: case.issuer.clone(),
        audiences: case.audiences.clone(),
        resources: case.resources.clone(),
        scope: case.scope.clone(),
        actor_claims: case.actor.as_ref().map(|a| ActorClaims {
            issuer: a.issuer.clone(),
            claims: a.claims.clone(),
        }),
        ..Default::default()
    };
    let doc = match explain_input(ctx, &input).await {
        Ok(explained) => explained.doc,
        Err(e) => return Verdict::Error(e.to_string()),
    };
    compare(ctx.policy, case, &doc)
}

/// The case's expectations against the explanation `doc` (`explain --json`'s document).
fn compare(policy: &Policy, case: &TestCase, doc: &Value) -> Verdict {
    let decision = &doc["decision"];
    let outcome = decision["outcome"].as_str().unwrap_or_default();
    let decided_rule = decision["rule"].as_str();
    let mut wrong = Vec::new();
    if outcome != case.expect.as_str() {
        wrong.push("decision");
    }
    if let Some(rule) = &case.rule
        && decided_rule != Some(rule.as_str())
    {
        wrong.push("rule");
    }
    let mut issued_mismatches = Vec::new();
    if let (Some(want), "allow") = (&case.issued, outcome) {
        subset_mismatches(
            "",
            &Value::Object(want.clone()),
            &doc["issued_claims"],
            &mut issued_mismatches,
        );
        if !issued_mismatches.is_empty() {
            wrong.push("issued");
        }
    }
    if wrong.is_empty() {
        return Verdict::Pass;
    }
    let origin = |rule: &str| {
        rule_origin(policy, rule)
            .map(|o| format!(" ({o})"))
            .unwrap_or_default()
    };
    let mut lines = Vec::new();
    let expected_rule = case
        .rule
        .as_deref()
        .map(|r| format!(" by rule `{r}`"))
        .unwrap_or_default();
    let expected_issued = if case.issued.is_some() {
        " issuing the claims given"
    } else {
        ""
    };
    lines.push(format!(
        "expected: {}{expected_rule}{expected_issued}",
        case.expect.as_str()
    ));
    // With no rule deciding an allow expected, each allow rule's first failed condition
    // is listed below, one a line, rather than in the denial's reason.
    let list_allow_rules = case.rule.is_none()
        && case.expect == Expect::Allow
        && outcome != "allow"
        && decided_rule.is_none()
        && decision["stage"] != "token";
    let by = decided_rule
        .map(|r| format!(" by rule `{r}`{}", origin(r)))
        .unwrap_or_default();
    let decided = match outcome {
        "allow" => format!("decided:  allow{by}"),
        _ => {
            let error = decision["error"].as_str().unwrap_or("denied");
            let reason = decision["reason"].as_str().unwrap_or_default();
            let reason = match reason.split_once(": rule `") {
                Some((head, _)) if list_allow_rules => head,
                _ => reason,
            };
            let stage = if decision["stage"] == "token" {
                " before any rule ran"
            } else {
                ""
            };
            format!("decided:  deny ({error}){by}{stage}: {reason}")
        }
    };
    lines.push(decided);
    for m in &issued_mismatches {
        lines.push(format!("issued:   {m}"));
    }
    // Why the rule the case names did not decide, or (for an allow expected and not
    // had) the first condition that failed in each allow rule consulted.
    let consulted: Vec<&Value> = doc["rules"]
        .as_array()
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    let why = |r: &Value| {
        let name = r["rule"].as_str().unwrap_or_default();
        let status = match (r["matched"].as_bool(), r["reason"].as_str()) {
            (Some(true), Some(reason)) => format!("matched ({reason})"),
            (Some(true), None) => "matched".to_owned(),
            (_, reason) => format!("did not match: {}", reason.unwrap_or("?")),
        };
        format!(
            "{} rule `{name}`{}: {status}",
            r["effect"].as_str().unwrap_or_default(),
            origin(name),
        )
    };
    match &case.rule {
        Some(rule) if decided_rule != Some(rule.as_str()) => {
            match consulted.iter().find(|r| r["rule"] == rule.as_str()) {
                Some(r) => lines.push(why(r)),
                None if decision["stage"] == "token" => {}
                None => lines.push(format!(
                    "rule `{rule}`{}: not consulted (it is for another issuer or other targets)",
                    origin(rule)
                )),
            }
        }
        _ if list_allow_rules => {
            for r in consulted.iter().filter(|r| r["effect"] == "allow") {
                lines.push(why(r));
            }
        }
        _ => {}
    }
    Verdict::Fail(lines)
}

/// `file:line` of a rule of the policy.
fn rule_origin(policy: &Policy, rule: &str) -> Option<String> {
    let index = policy.rules.rule_names().position(|name| name == rule)?;
    let origin = policy.rule_origins.get(index)?;
    Some(match origin.line {
        Some(line) => format!("{}:{line}", origin.file.display()),
        None => origin.file.display().to_string(),
    })
}

/// Where `got` lacks or differs from what `want` holds: objects are compared as
/// subsets (recursively), everything else as equal JSON.
fn subset_mismatches(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, w) in want {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match got.get(key) {
                    Some(g) => subset_mismatches(&p, w, g, out),
                    None => out.push(format!("`{p}` is missing (expected {w})")),
                }
            }
        }
        _ if want == got => {}
        _ => out.push(format!("`{path}` is {got}, expected {want}")),
    }
}

fn text_report(files: &[TestFile], results: &[Vec<CaseResult<'_>>]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (mut passed, mut failed, mut errors) = (0, 0, 0);
    for file in results {
        for r in file {
            let at = r.case.location();
            let name = &r.case.name;
            match &r.verdict {
                Verdict::Pass => {
                    passed += 1;
                    let _ = writeln!(out, "ok    {at}: {name}");
                }
                Verdict::Fail(lines) => {
                    failed += 1;
                    let _ = writeln!(out, "FAIL  {at}: {name}");
                    for line in lines {
                        let _ = writeln!(out, "      {line}");
                    }
                }
                Verdict::Error(e) => {
                    errors += 1;
                    let _ = writeln!(out, "ERROR {at}: {name}: {e}");
                }
            }
        }
    }
    let cases = passed + failed + errors;
    let _ = write!(
        out,
        "{} case(s) in {} file(s): {passed} passed, {failed} failed",
        cases,
        files.len()
    );
    if errors > 0 {
        let _ = write!(out, ", {errors} could not be decided");
    }
    out.push('\n');
    out
}

fn junit_report(files: &[TestFile], results: &[Vec<CaseResult<'_>>]) -> String {
    use std::fmt::Write as _;
    let count = |rs: &[CaseResult<'_>], f: fn(&Verdict) -> bool| rs.iter().filter(|r| f(&r.verdict)).count();
    let is_fail = |v: &Verdict| matches!(v, Verdict::Fail(_));
    let is_error = |v: &Verdict| matches!(v, Verdict::Error(_));
    let all: Vec<&CaseResult<'_>> = results.iter().flatten().collect();
    let total_time: f64 = all.iter().map(|r| r.seconds).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"fedbroker test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{total_time:.3}\">",
        all.len(),
        all.iter().filter(|r| is_fail(&r.verdict)).count(),
        all.iter().filter(|r| is_error(&r.verdict)).count(),
    );
    for (file, rs) in files.iter().zip(results) {
        let path = xml_escape(&file.path.display().to_string());
        let time: f64 = rs.iter().map(|r| r.seconds).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{path}\" file=\"{path}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{time:.3}\">",
            rs.len(),
            count(rs, is_fail),
            count(rs, is_error),
        );
        for r in rs {
            let line = r.case.line.map(|l| format!(" line=\"{l}\"")).unwrap_or_default();
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{path}\" file=\"{path}\"{line} time=\"{:.3}\"",
                xml_escape(&r.case.name),
                r.seconds
            );
            match &r.verdict {
                Verdict::Pass => out.push_str("/>\n"),
                Verdict::Fail(lines) => {
                    let message = lines
                        .iter()
                        .take(2)
                        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let body = format!("{}: {}\n{}", r.case.location(), r.case.name, lines.join("\n"));
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\" type=\"decision\">{}</failure>\n    </testcase>",
                        xml_escape(&message),
                        xml_escape(&body)
                    );
                }
                Verdict::Error(e) => {
                    let _ = writeln!(
                        out,
                        ">\n      <error message=\"{}\" type=\"undecidable\"/>\n    </testcase>",
                        xml_escape(e)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// `s` as XML 1.0 text or attribute value. No crate in the tree writes XML (maud
/// escapes for HTML and keeps the control characters XML forbids), and this is all
/// that is needed: the five markup characters as entities, line breaks and tabs as
/// character references (kept in attributes, harmless in text), and the characters
/// XML 1.0 cannot carry at all (other C0 controls, U+FFFE, U+FFFF) as U+FFFD.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_escape_leaves_nothing_that_breaks_a_document() {
        assert_eq!(
            xml_escape("a<b>&\"c'\n\t\u{1}\u{FFFF}é"),
            "a&lt;b&gt;&amp;&quot;c&apos;&#10;&#9;\u{FFFD}\u{FFFD}é"
        );
    }

    #[test]
    fn issued_claims_compare_as_subsets() {
        let got = json!({"sub": "a", "tags": {"x": ["1"], "y": ["2"]}, "n": 5});
        let mut out = Vec::new();
        subset_mismatches(
            "",
            &json!({"sub": "a", "tags": {"x": ["1"]}, "n": 5}),
            &got,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        subset_mismatches("", &json!({"sub": "b", "tags": {"z": 1}}), &got, &mut out);
        assert_eq!(
            out,
            [
                "`sub` is \"a\", expected \"b\"",
                "`tags.z` is missing (expected 1)"
            ]
        );
    }
}
