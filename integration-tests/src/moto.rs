//! A real `moto_server` (PyPI `moto[server]`, the AWS emulator) as the STS and IAM
//! endpoint of the AWS tests: one process per test on a free loopback port, in its own
//! tempdir, killed with its handle.
//!
//! Where the binary comes from: `FEDBROKER_MOTO_SERVER` when set (`scripts/test`
//! installs moto into `target/python-venv` and sets it), else a `moto_server` on
//! `PATH`. Without either, a test that needs it fails naming it, unless
//! `FEDBROKER_SKIP_AWS_TESTS=1` (then [`moto_available`] is false and the tests return
//! early).
//!
//! Two kinds of server:
//! - [`Moto::start`]: no SigV4 checks. Serves `AssumeRoleWithWebIdentity`, which real
//!   STS takes unsigned (moto with checks on answers an unsigned call with a 500).
//! - [`Moto::start_enforcing_auth`]: every STS/IAM call must be SigV4-signed by a key of
//!   one of its IAM users (`INITIAL_NO_AUTH_ACTION_COUNT=0`): a signed
//!   `GetCallerIdentity` answers with the signer's ARN, a wrong secret gets 403
//!   `SignatureDoesNotMatch`. The setup calls ([`Moto::iam_user_with_key`],
//!   [`Moto::iam_role`]) lift the checks around themselves through moto's
//!   `/moto-api/reset-auth` (allowance unlimited, then 0 again), so any number of them
//!   fit; make them before the traffic under test, not during it.
//!
//! [`Moto::start_recording`] and [`Moto::recorded`] use moto's request recorder (one
//! JSON line per request, in this server's tempdir) so a test can assert the
//! parameters a client sent.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::broker::free_port;

/// Names the `moto_server` to run (`scripts/test` sets it to its virtual environment's).
pub const BIN_ENV: &str = "FEDBROKER_MOTO_SERVER";
/// Set to `1` to skip the AWS tests where `moto_server` is missing.
pub const SKIP_ENV: &str = "FEDBROKER_SKIP_AWS_TESTS";
/// The account of moto's IAM users and roles.
pub const ACCOUNT_ID: &str = "123456789012";

/// Python's imports make a cold start take seconds on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The `moto_server` that `bin_var` (the value of [`BIN_ENV`]) names, else the first
/// on `path_var` (a `PATH` value). The error names what is missing and how to get it.
pub fn find_moto_server(bin_var: Option<&OsStr>, path_var: Option<&OsStr>) -> Result<PathBuf, String> {
    if let Some(bin) = bin_var.filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "{BIN_ENV}={} is not a file: it must name moto's `moto_server` (PyPI `moto[server]`). \
                 Run the tests with scripts/test, which installs it into target/python-venv and sets \
                 {BIN_ENV}, or set {SKIP_ENV}=1 to skip the AWS tests",
                bin.display()
            ))
        };
    }
    let found = path_var.and_then(|path| {
        std::env::split_paths(path)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.is_file())
    });
    found.ok_or_else(|| {
        format!(
            "moto_server not found: {BIN_ENV} is not set and no moto_server is on PATH. The AWS tests \
             run moto (PyPI `moto[server]`, an AWS STS/IAM emulator). Run the tests with scripts/test, \
             which installs it into target/python-venv and sets {BIN_ENV}; or `pip install \
             'moto[server]>=5.1,<6'` and set {BIN_ENV} to its moto_server; or set {SKIP_ENV}=1 to skip \
             the AWS tests"
        )
    })
}

/// The `moto_server` of this environment ([`find_moto_server`] on [`BIN_ENV`] and
/// `PATH`); `None` when it is missing and [`SKIP_ENV`]`=1`. Panics with
/// [`find_moto_server`]'s message when it is missing otherwise.
pub fn moto_server_bin() -> Option<PathBuf> {
    match find_moto_server(
        std::env::var_os(BIN_ENV).as_deref(),
        std::env::var_os("PATH").as_deref(),
    ) {
        Ok(bin) => Some(bin),
        Err(why) if std::env::var(SKIP_ENV).as_deref() == Ok("1") => {
            eprintln!("skipping an AWS test ({SKIP_ENV}=1): {why}");
            None
        }
        Err(why) => panic!("{why}"),
    }
}

/// Whether the AWS tests should run (see [`moto_server_bin`]).
pub fn moto_available() -> bool {
    moto_server_bin().is_some()
}

/// A [`Moto::start`] server; `None` when the AWS tests are skipped.
pub fn moto_or_skip() -> Option<Moto> {
    moto_server_bin().map(|bin| Moto::spawn(bin, false))
}

/// A [`Moto::start_enforcing_auth`] server; `None` when the AWS tests are skipped.
pub fn enforcing_moto_or_skip() -> Option<Moto> {
    moto_server_bin().map(|bin| Moto::spawn(bin, true))
}

/// One request moto received while recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// The path without the query, `/` for the Query API.
    pub path: String,
    /// The query's parameters, then the form body's, in order, decoded.
    pub params: Vec<(String, String)>,
    /// The request headers as moto saw them (`Authorization`, `X-Amz-Date`, ...).
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// The first parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Action` parameter (`AssumeRoleWithWebIdentity`).
    pub fn action(&self) -> Option<&str> {
        self.param("Action")
    }

    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One `moto_server` on `127.0.0.1`. Dropping it kills the process.
pub struct Moto {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    enforcing: bool,
}

impl Moto {
    /// A server without SigV4 checks. Panics when `moto_server` is missing (see
    /// [`moto_or_skip`] for the tests that honour [`SKIP_ENV`]).
    pub fn start() -> Moto {
        Self::spawn(Self::bin(), false)
    }

    /// A server that checks every STS/IAM call's SigV4 signature against its IAM users'
    /// keys (see the module documentation).
    pub fn start_enforcing_auth() -> Moto {
        Self::spawn(Self::bin(), true)
    }

    fn bin() -> PathBuf {
        find_moto_server(
            std::env::var_os(BIN_ENV).as_deref(),
            std::env::var_os("PATH").as_deref(),
        )
        .unwrap_or_else(|why| panic!("{why}"))
    }

    fn spawn(bin: PathBuf, enforcing: bool) -> Moto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("log file");
        let mut command = Command::new(&bin);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .env("MOTO_RECORDER_FILEPATH", dir.path().join("recording.jsonl"))
            .env_remove("MOTO_ENABLE_RECORDING")
            .env_remove("TEST_SERVER_MODE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        if enforcing {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        } else {
            command.env_remove("INITIAL_NO_AUTH_ACTION_COUNT");
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        let mut moto = Moto {
            child: Some(child),
            port,
            dir,
            enforcing,
        };
        moto.wait_ready();
        moto
    }

    /// Wait until the recorder answers (its reset also creates the recording file).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("moto_server exited ({status}):\n{}", self.log());
            }
            if matches!(
                self.try_api("/moto-api/recorder/reset-recording", ""),
                Some((200, _))
            ) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server on port {} did not answer within {START_TIMEOUT:?}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`: the endpoint for every service (moto routes by the
    /// SigV4 credential scope, or by `Action` for the unsigned STS calls).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether this server checks signatures ([`Self::start_enforcing_auth`]).
    pub fn enforces_auth(&self) -> bool {
        self.enforcing
    }

    /// SIGSTOP: the socket stays open (connections are accepted by the kernel) but
    /// nothing answers, as with a stalled STS.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        crate::broker::signal(self.child.as_ref().expect("moto_server running").id(), name);
    }

    /// Kill the server (SIGKILL): connections to [`Self::url`] are refused from now on.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// moto's output so far (one line per request, tracebacks of its errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// Start recording from an empty recording: [`Self::recorded`] then lists the
    /// requests received after this call.
    pub fn start_recording(&self) {
        self.api("/moto-api/recorder/reset-recording", "");
        let answer = self.api("/moto-api/recorder/start-recording", "");
        assert!(answer.contains("True"), "start-recording answered {answer}");
    }

    /// The requests received since [`Self::start_recording`], oldest first, without
    /// calls of moto's own API (`/moto-api/...`). Read from the recorder's file, which
    /// moto writes before it handles each request, so this works on a paused server too.
    pub fn recorded(&self) -> Vec<Recorded> {
        let text =
            std::fs::read_to_string(self.dir.path().join("recording.jsonl")).expect("moto's recording");
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| parse_recorded(line).unwrap_or_else(|| panic!("unexpected recorder line: {line}")))
            .filter(|r| !r.path.starts_with("/moto-api/"))
            .collect()
    }

    /// An IAM user `name` with an access key: `(access_key_id, secret_access_key,
    /// user_arn)`. The key signs requests to an enforcing server.
    pub async fn iam_user_with_key(&self, name: &str) -> (String, String, String) {
        let user = self
            .setup_call(
                "iam",
                &[
                    ("Action", "CreateUser"),
                    ("Version", "2010-05-08"),
                    ("UserName", name),
                ],
            )
            .await;
        let arn = xml_text(&user, "Arn").expect("CreateUser's Arn").to_owned();
        let key = self
            .setup_call(
                "iam",
                &[
                    ("Action", "CreateAccessKey"),
                    ("Version", "2010-05-08"),
                    ("UserName", name),
                ],
            )
            .await;
        let id = xml_text(&key, "AccessKeyId").expect("CreateAccessKey's AccessKeyId");
        let secret = xml_text(&key, "SecretAccessKey").expect("CreateAccessKey's SecretAccessKey");
        (id.to_owned(), secret.to_owned(), arn)
    }

    /// An IAM role `name` whose trust policy is `trust_policy` (JSON): its ARN.
    pub async fn iam_role(&self, name: &str, trust_policy: &str) -> String {
        let role = self
            .setup_call(
                "iam",
                &[
                    ("Action", "CreateRole"),
                    ("Version", "2010-05-08"),
                    ("RoleName", name),
                    ("AssumeRolePolicyDocument", trust_policy),
                ],
            )
            .await;
        xml_text(&role, "Arn").expect("CreateRole's Arn").to_owned()
    }

    /// A KMS key (`KeySpec` `spec`, e.g. `RSA_2048` or `ECC_NIST_P256`; `KeyUsage`
    /// `usage`, e.g. `SIGN_VERIFY`): its ARN.
    pub async fn kms_create_key(&self, spec: &str, usage: &str) -> String {
        let answer = self
            .kms_call(
                "CreateKey",
                serde_json::json!({"KeySpec": spec, "KeyUsage": usage, "Description": "fedbroker test"}),
            )
            .await;
        answer["KeyMetadata"]["Arn"]
            .as_str()
            .expect("CreateKey's Arn")
            .to_owned()
    }

    /// A KMS alias (`alias/NAME`) for `key`.
    pub async fn kms_create_alias(&self, alias: &str, key: &str) {
        self.kms_call(
            "CreateAlias",
            serde_json::json!({"AliasName": alias, "TargetKeyId": key}),
        )
        .await;
    }

    /// A KMS key's public key: DER SubjectPublicKeyInfo.
    pub async fn kms_public_key(&self, key: &str) -> Vec<u8> {
        let answer = self
            .kms_call("GetPublicKey", serde_json::json!({"KeyId": key}))
            .await;
        let b64 = answer["PublicKey"].as_str().expect("GetPublicKey's PublicKey");
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64 public key")
    }

    /// One KMS call (JSON protocol, `TrentService.ACTION`) for setup: the answer's JSON.
    async fn kms_call(&self, action: &str, body: serde_json::Value) -> serde_json::Value {
        let text = self
            .unchecked_call("kms", action, |request| {
                request
                    .header("X-Amz-Target", format!("TrentService.{action}"))
                    .header("Content-Type", "application/x-amz-json-1.1")
                    .body(body.to_string())
            })
            .await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("moto kms {action}: {e}: {text}"))
    }

    /// One Query API call for setup, to `service`.
    async fn setup_call(&self, service: &str, form: &[(&str, &str)]) -> String {
        let action = form.iter().find(|(k, _)| *k == "Action").map_or("?", |(_, v)| v);
        self.unchecked_call(service, action, |request| request.form(form))
            .await
    }

    /// One call for setup (`fill` adds its body), routed to `service` by the credential
    /// scope of a placeholder `Authorization` header, with the signature checks lifted
    /// around it on an enforcing server. Returns the body of a 200 answer; panics
    /// otherwise.
    async fn unchecked_call(
        &self,
        service: &str,
        action: &str,
        fill: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> String {
        if self.enforcing {
            self.set_no_auth_allowance("inf");
        }
        let request = reqwest::Client::new().post(self.url()).header(
            "Authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/{service}/aws4_request, \
                 SignedHeaders=host, Signature=0"
            ),
        );
        let result = fill(request).timeout(CALL_TIMEOUT).send().await;
        if self.enforcing {
            self.set_no_auth_allowance("0");
        }
        let response = result.unwrap_or_else(|e| panic!("moto {action}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        // Failure bodies are moto's error XML or JSON (no key material); success bodies
        // are not printed.
        assert!(status.is_success(), "moto {action} answered {status}: {body}");
        body
    }

    /// `/moto-api/reset-auth`: this many more calls go unchecked (`inf`, or `0`).
    fn set_no_auth_allowance(&self, count: &str) {
        let answer = self.api("/moto-api/reset-auth", count);
        assert!(answer.contains("\"ok\""), "reset-auth answered {answer}");
    }

    /// POST to moto's own API; the answer's body. Panics unless 200.
    fn api(&self, path: &str, body: &str) -> String {
        match self.try_api(path, body) {
            Some((200, answer)) => answer,
            other => panic!("moto {path}: {other:?}\n{}", self.log()),
        }
    }

    /// A plain HTTP/1.1 POST (std only, so it works in and out of a runtime).
    fn try_api(&self, path: &str, body: &str) -> Option<(u16, String)> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(CALL_TIMEOUT)).ok()?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok()?;
        let answer = String::from_utf8_lossy(&answer);
        let status = answer.split(' ').nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Some((status, body.to_owned()))
    }

    /// The tempdir moto runs in (its log and recording).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process dies of SIGKILL too; CONT first so it leaves no zombie state.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.kill();
    }
}

/// The text of the first `<tag>...</tag>` in `xml` (AWS Query API answers).
pub fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// One line of moto's recording: `{"headers": {..}, "method", "url", "body", "body_encoded"}`.
fn parse_recorded(line: &str) -> Option<Recorded> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    let method = entry["method"].as_str()?.to_owned();
    let url = entry["url"].as_str()?;
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_query = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let headers: Vec<(String, String)> = entry["headers"]
        .as_object()?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let body = match (&entry["body"], entry["body_encoded"].as_bool()) {
        (serde_json::Value::String(b), Some(true)) => {
            base64::engine::general_purpose::STANDARD.decode(b).ok()?
        }
        (serde_json::Value::String(b), _) => b.clone().into_bytes(),
        _ => Vec::new(),
    };
    let form = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("content-type") && v.starts_with("application/x-www-form-urlencoded")
    });
    let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    if form {
        params.extend(form_urlencoded::parse(&body).into_owned());
    }
    Some(Recorded {
        method,
        path: path.to_owned(),
        params,
        headers,
    })
}
