//! `fedbroker test` (contract §14) through the real binary: the example rule files'
//! tests pass (and their `../*.yaml` glob, which matches the test file, still loads and
//! checks); a copy of the examples with deliberately wrong cases fails with exit 1 and
//! says which case, what was expected, what was decided and by which rule or condition,
//! at the case's file:line, in text and in well-formed JUnit XML; a bad test file or
//! a bad configuration exits 2.

use std::path::{Path, PathBuf};

use integration_tests::{CliOutput, run_cli_in};

fn examples_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../federation-rules/examples");
    std::fs::canonicalize(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn test_cli(dir: &Path, config: &Path, extra: &[&str]) -> CliOutput {
    let mut args = vec!["test", "--config", config.to_str().expect("UTF-8 path")];
    args.extend_from_slice(extra);
    run_cli_in(dir, &args, &[])
}

/// The names of the cases of a test file, in order.
fn case_names(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("- name: "))
        .map(str::to_owned)
        .collect()
}

/// The examples' rule files, test file and config, copied into `into` (the same layout).
fn copy_examples(into: &Path) -> PathBuf {
    let from = examples_dir();
    std::fs::create_dir_all(into.join("config")).expect("mkdir");
    for entry in std::fs::read_dir(&from)
        .expect("examples dir")
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&path, into.join(entry.file_name())).expect("copy");
        }
    }
    let config = into.join("config/fedbroker.yaml");
    std::fs::copy(from.join("config/fedbroker.yaml"), &config).expect("copy config");
    config
}

/// An element of a JUnit document: name, attributes (unescaped), children.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn attr(&self, name: &str) -> &str {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("<{}> has no {name}: {self:?}", self.name))
    }

    fn all(&self, name: &str) -> Vec<&Element> {
        self.children.iter().filter(|c| c.name == name).collect()
    }
}

/// XML's predefined entities and the character references the JUnit writer uses.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(';')
            .map(|e| at + e)
            .expect("an entity ends with ;");
        let entity = &rest[at + 1..end];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => entity
                .strip_prefix('#')
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(char::from_u32)
                .unwrap_or_else(|| panic!("unknown entity &{entity};")),
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Parse `xml` (panicking unless well-formed: one root, every tag closed by its own
/// name, tokens as xmlparser accepts them) into its root element.
fn parse_xml(xml: &str) -> Element {
    use xmlparser::{ElementEnd, Token, Tokenizer};
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    for token in Tokenizer::from(xml) {
        let token = token.unwrap_or_else(|e| panic!("not well-formed XML ({e}):\n{xml}"));
        match token {
            Token::Declaration { .. } | Token::Comment { .. } => {}
            Token::ElementStart { local, .. } => {
                assert!(root.is_none(), "a second root element:\n{xml}");
                stack.push(Element {
                    name: local.as_str().to_owned(),
                    ..Element::default()
                });
            }
            Token::Attribute { local, value, .. } => {
                let top = stack.last_mut().expect("attribute in an element");
                top.attrs
                    .push((local.as_str().to_owned(), unescape(value.as_str())));
            }
            Token::ElementEnd { end, .. } => {
                let done = match end {
                    ElementEnd::Open => continue,
                    ElementEnd::Empty => stack.pop(),
                    ElementEnd::Close(_, local) => {
                        let open = stack.pop().expect("a close tag without an open one");
                        assert_eq!(open.name, local.as_str(), "mismatched close tag:\n{xml}");
                        Some(open)
                    }
                };
                let done = done.expect("an element");
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Token::Text { text } => match stack.last_mut() {
                Some(top) => top.text.push_str(&unescape(text.as_str())),
                None => assert!(text.trim().is_empty(), "text outside the root:\n{xml}"),
            },
            other => panic!("unexpected XML token {other:?}:\n{xml}"),
        }
    }
    assert!(stack.is_empty(), "unclosed elements:\n{xml}");
    root.unwrap_or_else(|| panic!("no root element:\n{xml}"))
}

#[test]
fn the_example_rules_pass_their_tests_and_still_check() {
    let examples = examples_dir();
    let config = examples.join("config/fedbroker.yaml");
    let test_file = examples.join("examples.test.yaml");
    let cwd = tempfile::tempdir().expect("tempdir");

    // The `../*.yaml` glob matches examples.test.yaml: it is not loaded as rules.
    let out = run_cli_in(
        cwd.path(),
        &["check", "--config", config.to_str().expect("UTF-8")],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());

    let names = case_names(&test_file);
    assert!(names.len() >= 10, "{names:?}");
    let out = test_cli(cwd.path(), &config, &[]);
    assert_eq!(out.code, Some(0), "every example test passes:\n{}", out.all());
    for name in &names {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok    {}:", test_file.display()))
                    && l.ends_with(name.as_str())),
            "{name}:\n{}",
            out.all()
        );
    }
    assert!(
        out.stdout.contains(&format!(
            "{n} case(s) in 1 file(s): {n} passed, 0 failed",
            n = names.len()
        )),
        "{}",
        out.all()
    );

    // The same as JUnit XML, naming the file explicitly.
    let out = test_cli(
        cwd.path(),
        &config,
        &["--format", "junit", test_file.to_str().expect("UTF-8")],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let root = parse_xml(&out.stdout);
    assert_eq!(root.name, "testsuites");
    assert_eq!(root.attr("tests"), names.len().to_string());
    assert_eq!(root.attr("failures"), "0");
    let suites = root.all("testsuite");
    assert_eq!(suites.len(), 1);
    let cases = suites[0].all("testcase");
    let junit_names: Vec<&str> = cases.iter().map(|c| c.attr("name")).collect();
    assert_eq!(junit_names, names, "{}", out.stdout);
    assert!(cases.iter().all(|c| c.children.is_empty()), "{}", out.stdout);
}

/// Deliberately wrong cases beside a copy of the examples.
const WRONG: &str = r#"tests:
  - name: forks <&> "may" deploy
    issuer: github-actions
    claims: {sub: "repo:mallory/api:ref:refs/heads/main", repository: mallory/api, repository_owner: mallory}
    audience: sts.amazonaws.com
    expect: allow
    rule: gha-main-to-aws
  - name: a feature branch may deploy
    issuer: github-actions
    claims: {sub: "repo:acme/api:ref:refs/heads/feature", repository: acme/api, repository_owner: acme}
    audience: sts.amazonaws.com
    expect: allow
  - name: main gets another subject
    issuer: github-actions
    claims: {sub: "repo:acme/api:ref:refs/heads/main", repository: acme/api, repository_owner: acme}
    audience: sts.amazonaws.com
    expect: allow
    issued: {sub: "gha:acme/other"}
"#;

#[test]
fn a_wrong_case_fails_and_says_why_in_text_and_junit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let config = copy_examples(&root);
    let wrong = root.join("wrong.test.yaml");
    std::fs::write(&wrong, WRONG).expect("write");
    let deny_file = root.join("deny-forks-and-pull-requests.yaml");
    let (fork, branch, subject) = (
        "forks <&> \"may\" deploy",
        "a feature branch may deploy",
        "main gets another subject",
    );

    // Every *.test.yaml beside the rules: the examples' pass, the wrong ones fail.
    let out = test_cli(&root, &config, &[]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let text = &out.stdout;
    let expected_lines = [
        format!("FAIL  {}:2: {fork}", wrong.display()),
        "      expected: allow by rule `gha-main-to-aws`".to_owned(),
        format!(
            "      decided:  deny (invalid_request) by rule `deny-forks` ({}:26): deny rule `deny-forks` matched",
            deny_file.display()
        ),
        format!("FAIL  {}:8: {branch}", wrong.display()),
        "      expected: allow".to_owned(),
        "      decided:  deny (invalid_request): no allow rule matched".to_owned(),
        format!(
            "      allow rule `gha-main-to-aws` ({}:33): did not match: sub: does not match \"repo:acme/*:ref:refs/heads/main\" (got \"repo:acme/api:ref:refs/heads/feature\")",
            deny_file.display()
        ),
        format!("FAIL  {}:13: {subject}", wrong.display()),
        "      expected: allow issuing the claims given".to_owned(),
        format!(
            "      decided:  allow by rule `gha-main-to-aws` ({}:33)",
            deny_file.display()
        ),
        "      issued:   `sub` is \"gha:acme/api\", expected \"gha:acme/other\"".to_owned(),
    ];
    for line in &expected_lines {
        assert!(
            text.lines().any(|l| l.starts_with(line.as_str())),
            "missing line {line:?} in:\n{}",
            out.all()
        );
    }
    let passing = case_names(&root.join("examples.test.yaml")).len();
    assert!(
        text.contains(&format!(
            "{} case(s) in 2 file(s): {passing} passed, 3 failed",
            passing + 3
        )),
        "{}",
        out.all()
    );

    // JUnit: well-formed, one suite per file, the failures with their messages.
    let out = test_cli(&root, &config, &["--format", "junit"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    let doc = parse_xml(&out.stdout);
    assert_eq!(doc.attr("tests"), (passing + 3).to_string());
    assert_eq!(doc.attr("failures"), "3");
    let suites = doc.all("testsuite");
    assert_eq!(suites.len(), 2, "{}", out.stdout);
    let suite = suites
        .iter()
        .find(|s| s.attr("name") == wrong.display().to_string())
        .unwrap_or_else(|| panic!("no suite for wrong.test.yaml:\n{}", out.stdout));
    assert_eq!(suite.attr("failures"), "3");
    let cases = suite.all("testcase");
    assert_eq!(
        cases[0].attr("name"),
        fork,
        "names are escaped and read back whole"
    );
    assert_eq!(cases[0].attr("line"), "2");
    let failure = cases[0].all("failure");
    assert_eq!(failure.len(), 1, "{}", out.stdout);
    let message = failure[0].attr("message");
    assert!(
        message.starts_with(
            "expected: allow by rule `gha-main-to-aws`; decided: deny (invalid_request) by rule `deny-forks`"
        ),
        "{message}"
    );
    assert!(
        failure[0]
            .text
            .starts_with(&format!("{}:2: {fork}\n", wrong.display())),
        "{}",
        failure[0].text
    );
    let other_suite = suites
        .iter()
        .find(|s| s.attr("name") != wrong.display().to_string())
        .expect("the examples' suite");
    assert_eq!(other_suite.attr("failures"), "0");

    // Only the named file: its cases alone.
    let out = test_cli(&root, &config, &[wrong.to_str().expect("UTF-8")]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stdout.contains("3 case(s) in 1 file(s): 0 passed, 3 failed"),
        "{}",
        out.all()
    );
}

#[test]
fn bad_test_files_and_bad_configs_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    let config = copy_examples(&root);
    let run = |file: &str, text: &str| {
        let path = root.join(file);
        std::fs::write(&path, text).expect("write");
        let out = test_cli(&root, &config, &[path.to_str().expect("UTF-8")]);
        assert_eq!(out.code, Some(2), "{file}:\n{}", out.all());
        assert!(out.stdout.is_empty(), "nothing is run: {}", out.all());
        (path, out.stderr)
    };

    let (path, stderr) = run(
        "unknown-issuer.test.yaml",
        "tests:\n  - name: a\n    issuer: nope\n    claims: {sub: x}\n    audience: a\n    expect: allow\n",
    );
    assert!(
        stderr.contains(&format!(
            "{}:2: tests[0].issuer: no issuer named `nope` in the configuration",
            path.display()
        )),
        "{stderr}"
    );
    let (path, stderr) = run(
        "unknown-field.test.yaml",
        "tests:\n  - name: a\n    issuer: gitlab\n    claims: {sub: x}\n    audience: a\n    expect: allow\n    expected_rule: r\n",
    );
    assert!(
        stderr.contains(&format!(
            "{}:7: tests[0].expected_rule: unknown field `expected_rule`",
            path.display()
        )),
        "{stderr}"
    );
    let (path, stderr) = run("invalid.test.yaml", "tests: [\n");
    assert!(
        stderr.contains(&format!("{}:2: invalid YAML", path.display())),
        "{stderr}"
    );
    let (_, stderr) = run(
        "bad-expect.test.yaml",
        "tests:\n  - {name: a, issuer: gitlab, claims: {sub: x}, audience: a, expect: allowed}\n",
    );
    assert!(stderr.contains("unknown variant `allowed`"), "{stderr}");

    // A file that cannot be read.
    let out = test_cli(&root, &config, &["missing.test.yaml"]);
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stderr.contains("missing.test.yaml: cannot read"),
        "{}",
        out.all()
    );

    // An invalid configuration.
    let bad = root.join("bad-config.yaml");
    std::fs::write(&bad, "version: 1\nissuers: 3\n").expect("write");
    let out = test_cli(&root, &bad, &[]);
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stderr.contains("fedbroker test: invalid configuration"),
        "{}",
        out.all()
    );
}
