//! The Python of the test tools' virtual environment (`scripts/test` makes it in
//! `target/python-venv` and names it with `FEDBROKER_PYTHON`), for tests that drive the
//! real cloud SDKs (boto3, google-auth, azure-identity) as a workload would.
//!
//! Without it, or without a module a test needs, the test fails naming what is missing,
//! unless `FEDBROKER_SKIP_SDK_TESTS=1`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::broker::{CliOutput, run_captured};

/// Names the Python with the SDKs.
pub const PYTHON_ENV: &str = "FEDBROKER_PYTHON";
/// Set to `1` to skip the tests that drive the Python cloud SDKs.
pub const SKIP_ENV: &str = "FEDBROKER_SKIP_SDK_TESTS";

/// The Python that can import every module of `modules`; `None` when it is missing and
/// [`SKIP_ENV`]`=1`; a panic naming what is missing otherwise.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let problem = match std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
        None => format!("{PYTHON_ENV} is not set"),
        Some(python) => {
            let python = PathBuf::from(python);
            let import = format!("import {}", modules.join(", "));
            let ok = Command::new(&python)
                .args(["-c", &import])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Some(python);
            }
            format!("{} cannot `{import}`", python.display())
        }
    };
    let why = format!(
        "{problem}: this test drives the Python cloud SDKs (PyPI boto3, google-auth, azure-identity). Run the tests with \
         scripts/test, which installs them into target/python-venv and sets {PYTHON_ENV}, or set {SKIP_ENV}=1 to skip them"
    );
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("skipping an SDK test ({SKIP_ENV}=1): {why}");
        return None;
    }
    panic!("{why}")
}

/// Runs `script` with `python` and `env` (on top of this process's environment), within
/// two minutes.
pub fn run_python(python: &std::path::Path, script: &str, env: &[(&str, &str)]) -> CliOutput {
    let mut command = Command::new(python);
    command.args(["-c", script]);
    for (k, v) in env {
        command.env(k, v);
    }
    run_captured(command, Duration::from_secs(120), "python")
}
