//! The real `fedbroker` binary, spawned as a child process.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::fill_placeholders;
use crate::http::Http;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of the `fedbroker` executable, built once per test process.
///
/// `FEDBROKER_BIN` names a prebuilt binary. Otherwise it is built with
/// [`build_workspace_bin`] (same profile as this test binary). Cargo
/// releases its build-directory lock before it runs test binaries, so the
/// nested build does not deadlock under `cargo test`; it may wait for another
/// build's lock ("Blocking waiting for file lock"), which is only slow.
pub fn fedbroker_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    prebuilt_or_built(&BIN, "FEDBROKER_BIN", "fedbroker")
}

/// The executable the environment variable `env` names, or else `bin` built with
/// [`build_workspace_bin`]; found once, in `cell`.
pub fn prebuilt_or_built(cell: &'static OnceLock<PathBuf>, env: &str, bin: &str) -> &'static Path {
    cell.get_or_init(|| {
        std::env::var_os(env)
            .map(PathBuf::from)
            .unwrap_or_else(|| build_workspace_bin(bin))
    })
}

/// `$CARGO build --workspace --tests --bin BIN` in the workspace, in the profile of this
/// test binary, and the executable's path from cargo's artifact message. Panics with
/// cargo's output when the build fails.
///
/// `--workspace --tests` makes cargo resolve features as the test command
/// (`cargo test --workspace`) did, so the binary links the dependencies that command
/// already built; `-p PACKAGE --bin BIN` resolved them for one package and rebuilt much
/// of the dependency graph a second time inside the test run. The test targets it names
/// are already built, so they cost a freshness check.
pub fn build_workspace_bin(bin: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests sits in the workspace");
    let mut command = Command::new(&cargo);
    command.current_dir(workspace).args([
        "build",
        "--workspace",
        "--tests",
        "--bin",
        bin,
        "--message-format=json-render-diagnostics",
    ]);
    // Same profile as this test binary: target/<profile>/deps/main-HASH.
    let profile = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()?
                .parent()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    match profile.as_str() {
        "release" => {
            command.arg("--release");
        }
        "debug" | "" => {}
        other => {
            command.args(["--profile", other]);
        }
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} build: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let executable = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back();
    match executable {
        Some(path) if output.status.success() => path,
        _ => panic!(
            "building {bin} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// How the tests' HTTP clients are set up: a 30 s timeout, short-lived idle
/// connections, no redirects. Add roots or an identity for a broker serving TLS.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        // The broker closes keep-alive connections idle for `server.header_timeout`
        // (10 s): never reuse one idle that long, or a request races the close.
        .pool_idle_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
}

/// Bind port 0 on loopback, read the port, let it go.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Files, environment and arguments for a broker to start with.
#[derive(Default)]
pub struct BrokerBuilder {
    files: Vec<(String, String)>,
    env: Vec<(String, String)>,
    dir: Option<tempfile::TempDir>,
    client: Option<reqwest::Client>,
}

impl BrokerBuilder {
    /// Write `contents` (placeholders substituted) to `relative_path` in the tempdir.
    pub fn file(mut self, relative_path: &str, contents: &str) -> Self {
        self.files.push((relative_path.to_owned(), contents.to_owned()));
        self
    }

    /// Set an environment variable for the broker process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Talk to the broker with this client (e.g. one that trusts a test CA, for a broker
    /// serving TLS) instead of a plain one.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Use this directory (e.g. one holding keys from `keys generate`) instead of a fresh one.
    pub fn dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Start `fedbroker serve --config <dir>/fedbroker.yaml` with `config_yaml`
    /// after replacing `@PORT@` and `@DIR@`, and wait for `/healthz` (under
    /// the config's `public_url` path).
    pub async fn start(self, config_yaml: &str) -> Broker {
        let dir = match self.dir {
            Some(dir) => dir,
            None => tempfile::tempdir().expect("tempdir"),
        };
        fs::create_dir_all(dir.path().join("keys")).expect("key dir");
        let config_path = dir.path().join("fedbroker.yaml");
        let dir_text = dir.path().to_str().expect("UTF-8 tempdir").to_owned();
        let config_arg = config_path.to_str().expect("UTF-8 path").to_owned();
        let prepare = |port: u16| {
            let fill = |text: &str| fill_placeholders(text, port, &dir_text);
            let config = fill(config_yaml);
            fs::write(&config_path, &config).expect("write config");
            for (path, contents) in &self.files {
                let path = Path::new(&dir_text).join(path);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).expect("create dirs");
                }
                fs::write(path, fill(contents)).expect("write file");
            }
            Attempt {
                public_url: public_url_of(&config).unwrap_or_else(|| format!("http://127.0.0.1:{port}")),
                args: vec!["serve".into(), "--config".into(), config_arg.clone()],
                context: format!("--- config ---\n{config}\n"),
            }
        };
        Broker::spawn_on_a_free_port(dir, &self.env, self.client, "fedbroker", prepare).await
    }
}

/// One attempt to start a broker on a port: its public URL, its arguments, and what to
/// show (before its stderr) when it does not start.
struct Attempt {
    public_url: String,
    args: Vec<String>,
    context: String,
}

/// The `public_url:` value in a config text, if written plainly.
fn public_url_of(config: &str) -> Option<String> {
    config.lines().find_map(|line| {
        let value = line.trim().strip_prefix("public_url:")?.trim();
        Some(
            value
                .trim_matches(|c| c == '"' || c == '\'')
                .trim_end_matches('/')
                .to_owned(),
        )
    })
}

/// A running `fedbroker serve`. Dropping it kills the process.
pub struct Broker {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    client: reqwest::Client,
    /// HTTP to the process: `url()`, `exchange()`, `get()`, ... (through `Deref`).
    http: Http,
}

impl std::ops::Deref for Broker {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Broker {
    /// `BrokerBuilder::default().start(config_yaml)`.
    pub async fn start(config_yaml: &str) -> Broker {
        BrokerBuilder::default().start(config_yaml).await
    }

    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// `fedbroker serve --dev --listen 127.0.0.1:PORT`.
    pub async fn start_dev() -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let prepare = |port: u16| {
            let listen = format!("127.0.0.1:{port}");
            Attempt {
                public_url: format!("http://{listen}"),
                args: vec!["serve".into(), "--dev".into(), "--listen".into(), listen],
                context: String::new(),
            }
        };
        Broker::spawn_on_a_free_port(dir, &[], None, "fedbroker serve --dev", prepare).await
    }

    /// [`Self::spawn`] on a free port, what `prepare` sets up for it: up to three
    /// attempts, as a port picked free can be taken before the broker binds it. Panics
    /// naming `what` (and the attempt's context) when it does not start.
    async fn spawn_on_a_free_port(
        mut dir: tempfile::TempDir,
        env: &[(String, String)],
        client: Option<reqwest::Client>,
        what: &str,
        mut prepare: impl FnMut(u16) -> Attempt,
    ) -> Broker {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let Attempt {
                public_url,
                args,
                context,
            } = prepare(port);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match Broker::spawn(dir, port, public_url, &args, env, client.clone()).await {
                Ok(broker) => return broker,
                Err((returned, stderr)) => {
                    if attempt < 3 && stderr.to_lowercase().contains("in use") {
                        dir = returned;
                        continue;
                    }
                    panic!("{what} did not start\n{context}--- stderr ---\n{stderr}");
                }
            }
        }
    }

    /// Spawn with stdout/stderr to files in `dir`, then poll `/healthz`.
    /// On failure the process is gone and `dir` comes back with the stderr text.
    async fn spawn(
        dir: tempfile::TempDir,
        port: u16,
        public_url: String,
        args: &[&str],
        env: &[(String, String)],
        client: Option<reqwest::Client>,
    ) -> Result<Broker, (tempfile::TempDir, String)> {
        let stdout = fs::File::create(dir.path().join("stdout.log")).expect("stdout file");
        let stderr = fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
        let child = Command::new(fedbroker_bin())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", fedbroker_bin().display()));
        let client = client.unwrap_or_else(|| client_builder().build().expect("HTTP client"));
        let http = Http::network(public_url, client.clone(), dir.path().to_path_buf());
        let mut broker = Broker {
            child,
            dir,
            port,
            client,
            http,
        };
        let health = broker.endpoint("/healthz");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                let stderr = format!("(exited: {status})\n{}", broker.stderr());
                return Err((broker.into_dir(), stderr));
            }
            let ok = broker
                .client
                .get(&health)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                // The 200 must come from our child, not from whoever holds the port.
                if let Ok(Some(status)) = broker.child.try_wait() {
                    let stderr = format!("(exited: {status})\n{}", broker.stderr());
                    return Err((broker.into_dir(), stderr));
                }
                return Ok(broker);
            }
            if Instant::now() > deadline {
                let _ = broker.child.kill();
                let _ = broker.child.wait();
                let stderr = format!(
                    "(no 200 from {health} in {STARTUP_TIMEOUT:?})\n{}",
                    broker.stderr()
                );
                return Err((broker.into_dir(), stderr));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kill the process and keep its directory (keys, audit) for another start.
    pub fn stop_and_keep_dir(self) -> tempfile::TempDir {
        self.into_dir()
    }

    fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    /// `http://127.0.0.1:PORT`, without the public URL's path.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// HTTP to the same process at another origin: `admin.listen`'s, for instance.
    pub fn http_at(&self, origin: String) -> Http {
        Http::network(origin, self.client.clone(), self.dir.path().to_path_buf())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Send signal `name` (`"HUP"`, `"STOP"`, `"CONT"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Send `signal` (`"TERM"`, `"INT"`) and wait (30 s) for the process to exit.
    pub async fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for broker") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "fedbroker did not exit within 30 s of SIG{signal}\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outcome of a command (`fedbroker`, `terraform`).
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when killed by a signal or by the timeout.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The `warning: ...` lines `check` printed on stdout.
    pub fn warnings(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("warning: "))
            .collect()
    }

    /// stdout and stderr together, each under a heading.
    pub fn all(&self) -> String {
        format!("--- stdout ---\n{}\n--- stderr ---\n{}", self.stdout, self.stderr)
    }
}

/// Run `fedbroker ARGS` (60 s timeout) in a fresh tempdir.
pub fn run_cli(args: &[&str]) -> CliOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    run_cli_in(dir.path(), args, &[])
}

/// Run `fedbroker ARGS` in `dir` with extra environment; killed after 60 s.
pub fn run_cli_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    run_cli_with_timeout(dir, args, env, CLI_TIMEOUT)
}

/// Run `fedbroker ARGS` in `dir`; killed after `timeout` (then `code` is `None`).
pub fn run_cli_with_timeout(dir: &Path, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> CliOutput {
    let mut command = Command::new(fedbroker_bin());
    command.args(args).envs(env.iter().copied()).current_dir(dir);
    run_captured(command, timeout, &fedbroker_bin().display().to_string())
}

/// Run `command` with stdin closed and stdout and stderr captured (in files, so a
/// chatty child never blocks on a pipe); killed after `timeout` (then `code` is `None`).
/// Panics naming `what` when it cannot be spawned.
pub fn run_captured(mut command: Command, timeout: Duration, what: &str) -> CliOutput {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child
            .try_wait()
            .unwrap_or_else(|e| panic!("wait for {what}: {e}"))
        {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliOutput {
        code,
        stdout: fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}

/// Send signal `name` (`"STOP"`, `"CONT"`, ...) to process `pid` with `kill`.
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid} failed");
}
