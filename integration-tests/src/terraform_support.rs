//! The real `terraform` binary driving the provider built from this workspace.
//!
//! [`require_tools`] decides whether the Terraform tests run: they need `terraform` on
//! `PATH` (the provider itself builds with Rust alone: its `.proto` files are compiled by
//! the pure-Rust `protox`, so no `protoc`). A missing `terraform` fails the test naming
//! it, unless `FEDBROKER_SKIP_TERRAFORM_TESTS=1`.
//!
//! The provider is built once per test process (`$CARGO build -p
//! terraform-provider-fedbroker`, or `TERRAFORM_PROVIDER_FEDBROKER_BIN` names a
//! prebuilt binary) and laid out as a filesystem mirror
//! (`registry.terraform.io/fedbroker/fedbroker/0.1.0/OS_ARCH/`), so `terraform init`
//! installs it without any network. Each [`Terraform`] is a working directory with
//! its own CLI configuration naming that mirror.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Set to `1` to skip the Terraform tests where `terraform` is missing.
pub const SKIP_ENV: &str = "FEDBROKER_SKIP_TERRAFORM_TESTS";

/// The provider's version in the mirror (any version satisfies the configurations).
pub const PROVIDER_VERSION: &str = "0.1.0";

const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `true` when the Terraform tests should run; `false` (with a note on stderr) when
/// they are skipped by [`SKIP_ENV`]. Panics, naming the tool, when one is missing.
pub fn require_tools() -> bool {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP_ENV}=1: skipping a Terraform test");
        return false;
    }
    let mut missing = Vec::new();
    if !runs("terraform", "version") {
        missing.push("`terraform` (1.6 or later) is not on PATH");
    }
    if !missing.is_empty() {
        panic!(
            "the Terraform tests need tools this machine lacks: {}. Install them, or set {SKIP_ENV}=1 to skip these tests.",
            missing.join("; ")
        );
    }
    true
}

/// Path of `terraform-provider-fedbroker`, built once per test process.
///
/// `TERRAFORM_PROVIDER_FEDBROKER_BIN` names a prebuilt one; otherwise it is built in the
/// workspace, in the profile of this test binary (as [`crate::broker::fedbroker_bin`]
/// does for the broker).
pub fn provider_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    crate::broker::prebuilt_or_built(
        &BIN,
        "TERRAFORM_PROVIDER_FEDBROKER_BIN",
        "terraform-provider-fedbroker",
    )
}

/// Terraform's name for this platform (`linux_amd64`).
fn platform() -> String {
    let os = std::env::consts::OS;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{os}_{arch}")
}

/// A filesystem mirror holding the provider, made once per test process.
pub fn mirror_dir() -> &'static Path {
    static MIRROR: OnceLock<PathBuf> = OnceLock::new();
    MIRROR.get_or_init(|| {
        let root = tempfile::Builder::new()
            .prefix("fedbroker-tf-mirror")
            .tempdir()
            .expect("mirror tempdir")
            .keep();
        let dir = root
            .join("registry.terraform.io/fedbroker/fedbroker")
            .join(PROVIDER_VERSION)
            .join(platform());
        fs::create_dir_all(&dir).expect("mirror dirs");
        let target = dir.join(format!("terraform-provider-fedbroker_v{PROVIDER_VERSION}"));
        fs::copy(provider_bin(), &target).expect("copy the provider into the mirror");
        root
    })
}

/// What a Terraform command did (`code` is `None` when killed by the timeout).
pub use crate::broker::CliOutput as TfOutput;

/// The `terraform` and `provider` blocks of a configuration using this provider with
/// `endpoint` (the admin token comes from `FEDBROKER_ADMIN_TOKEN`).
pub fn provider_block(endpoint: &str) -> String {
    format!(
        r#"
terraform {{
  required_providers {{
    fedbroker = {{
      source = "fedbroker/fedbroker"
    }}
  }}
}}

provider "fedbroker" {{
  endpoint = "{endpoint}"
}}
"#
    )
}

/// A `fedbroker_issuer` resource `bad` whose `kind` is misspelled (`githab-actions`),
/// for `issuer`, with `extra` attribute lines (e.g. `  replay    = "twice"\n`).
pub fn misspelled_kind_issuer(issuer: &str, extra: &str) -> String {
    format!(
        r#"
resource "fedbroker_issuer" "bad" {{
  name      = "bad"
  kind      = "githab-actions"
  issuer    = "{issuer}"
  audiences = ["x"]
{extra}}}
"#
    )
}

/// A Terraform working directory with its own CLI configuration.
pub struct Terraform {
    dir: tempfile::TempDir,
    cli_config: PathBuf,
    env: Vec<(String, String)>,
}

impl Default for Terraform {
    fn default() -> Self {
        Self::new()
    }
}

impl Terraform {
    pub fn new() -> Terraform {
        let dir = tempfile::tempdir().expect("terraform tempdir");
        let cli_config = dir.path().join(".terraformrc");
        let mirror = mirror_dir().to_str().expect("UTF-8 mirror path").to_owned();
        fs::write(
            &cli_config,
            format!(
                "disable_checkpoint = true\n\
                 provider_installation {{\n  filesystem_mirror {{\n    path    = \"{mirror}\"\n    include = [\"registry.terraform.io/fedbroker/fedbroker\"]\n  }}\n}}\n"
            ),
        )
        .expect("write the CLI configuration");
        Terraform {
            dir,
            cli_config,
            env: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Set an environment variable for every command.
    pub fn env(mut self, key: &str, value: &str) -> Terraform {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Write a file (relative to the working directory).
    pub fn write(&self, relative: &str, contents: &str) {
        let path = self.dir.path().join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create dirs");
        }
        fs::write(path, contents).expect("write a Terraform file");
    }

    /// Copy a directory tree (a module) into the working directory.
    pub fn copy_dir(&self, from: &Path, to_relative: &str) {
        copy_tree(from, &self.dir.path().join(to_relative));
    }

    /// Run `terraform ARGS` in `subdir` of the working directory ("" for itself).
    pub fn run_in(&self, subdir: &str, args: &[&str]) -> TfOutput {
        let mut command = Command::new("terraform");
        command
            .args(args)
            .current_dir(self.dir.path().join(subdir))
            .env_remove("TF_CLI_CONFIG_FILE")
            .env_remove("FEDBROKER_ENDPOINT")
            .env_remove("FEDBROKER_ADMIN_TOKEN")
            .env_remove("TF_LOG")
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .env("RUST_BACKTRACE", "0")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        crate::broker::run_captured(command, COMMAND_TIMEOUT, "terraform")
    }

    pub fn run(&self, args: &[&str]) -> TfOutput {
        self.run_in("", args)
    }

    /// Run and require exit code 0.
    pub fn ok(&self, args: &[&str]) -> TfOutput {
        self.ok_in("", args)
    }

    pub fn ok_in(&self, subdir: &str, args: &[&str]) -> TfOutput {
        let out = self.run_in(subdir, args);
        assert_eq!(
            out.code,
            Some(0),
            "terraform {} failed\n{}",
            args.join(" "),
            out.all()
        );
        out
    }

    /// `terraform init` (offline: the provider comes from the mirror).
    pub fn init_in(&self, subdir: &str) -> TfOutput {
        self.ok_in(subdir, &["init", "-no-color", "-input=false"])
    }

    pub fn init(&self) -> TfOutput {
        self.init_in("")
    }

    /// `terraform apply -auto-approve`.
    pub fn apply(&self) -> TfOutput {
        self.ok(&["apply", "-no-color", "-input=false", "-auto-approve"])
    }

    /// `terraform plan -detailed-exitcode`: 0 no changes, 2 changes, 1 error.
    pub fn plan_exit_code(&self) -> (Option<i32>, TfOutput) {
        let out = self.run(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
        (out.code, out)
    }

    /// `terraform output -json`, parsed: name → value.
    pub fn outputs(&self) -> serde_json::Value {
        let out = self.ok(&["output", "-no-color", "-json"]);
        let all: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("terraform output -json is not JSON ({e}): {}", out.stdout));
        let mut values = serde_json::Map::new();
        if let Some(map) = all.as_object() {
            for (k, v) in map {
                values.insert(k.clone(), v["value"].clone());
            }
        }
        serde_json::Value::Object(values)
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let name = entry.file_name();
        // Never carry a developer's local Terraform state or plugins along.
        if name == ".terraform"
            || name == ".terraform.lock.hcl"
            || name.to_string_lossy().ends_with(".tfstate")
        {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            fs::copy(&path, to.join(&name)).expect("copy file");
        }
    }
}

/// The workspace's `terraform/` directory.
pub fn terraform_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests sits in the workspace")
        .join("terraform")
}
