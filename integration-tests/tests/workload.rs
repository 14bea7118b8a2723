//! `fedbroker credentials` (contract §11, issue 13) fed to the real cloud SDKs, as a
//! workload would use it: boto3 with `credential_process` against moto, google-auth
//! with an executable-sourced `external_account` configuration against the Google STS
//! fake; and the command's own errors, sources and cache.

use std::path::Path;

use integration_tests::broker::{fedbroker_bin, free_port, run_cli_in};
use integration_tests::cloud_fakes::{FakeGoogle, GoogleSetup};
use integration_tests::fake_issuer::DEFAULT_SUBJECT;
use integration_tests::moto::moto_or_skip;
use integration_tests::python::{python_with, run_python};
use integration_tests::{Broker, BrokerConfig, CliOutput, FakeIssuer};
use serde_json::{Value, json};

use crate::support::{AWS_ISOLATED, ISSUER_NAME, TARGET, subject_rule};

/// A broker (at `port`) trusting `fake` as `k8s` (one-time tokens, the default), one
/// rule for `target-a` with `issue` (YAML at column 0).
async fn broker(fake: &FakeIssuer, port: u16, issue: &str) -> Broker {
    let yaml = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(subject_rule("workload", &format!("audiences: [{TARGET}]"), issue))
        .render()
        .replace("@PORT@", &port.to_string());
    Broker::start(&yaml).await
}

/// A home token file holding `token`.
fn token_file(dir: &Path, token: &str) -> String {
    let path = dir.join("home-token");
    std::fs::write(&path, token).expect("token file");
    path.to_str().expect("UTF-8 path").to_owned()
}

/// The broker's exchanges so far (its audit lines for /token).
fn exchanges(broker: &Broker) -> usize {
    broker
        .audit_lines()
        .iter()
        .filter(|l| l["event"] == "token_exchange")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_gets_credentials_through_credential_process() {
    let Some(python) = python_with(&["boto3"]) else {
        return;
    };
    let Some(moto) = moto_or_skip() else { return };
    let fake = FakeIssuer::start();
    let issue = format!(
        "credentials:\n  aws:\n    role_arn: arn:aws:iam::123456789012:role/deployer\n    session_name: workload-1\n    endpoint: {}\n    danger_allow_insecure_endpoint: true\n",
        moto.url()
    );
    let broker = broker(&fake, free_port(), &issue).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = token_file(dir.path(), &fake.mint(json!({})));
    let aws_config = dir.path().join("aws-config");
    std::fs::write(
        &aws_config,
        format!(
            "[default]\nregion = us-east-1\ncredential_process = {} credentials aws --broker {} --audience {TARGET} --subject-token-source file:{home} --cache-dir {}\n",
            fedbroker_bin().display(),
            broker.url(),
            dir.path().join("cache").display()
        ),
    )
    .expect("aws config");
    let script = format!(
        "import boto3\nprint(boto3.Session().client('sts', endpoint_url='{}').get_caller_identity()['Arn'])",
        moto.url()
    );
    let mut env = AWS_ISOLATED.to_vec();
    env[0].1 = aws_config.to_str().expect("path");

    let first = run_python(&python, &script, &env);

    assert_eq!(first.code, Some(0), "{}", first.all());
    assert_eq!(
        first.stdout.trim(),
        "arn:aws:sts::123456789012:assumed-role/deployer/workload-1",
        "{}",
        first.all()
    );
    // A second process reuses the cached credentials: the one-time home token is not
    // presented again (it would be refused as replayed).
    let second = run_python(&python, &script, &env);
    assert_eq!(second.code, Some(0), "{}", second.all());
    assert_eq!(exchanges(&broker), 1, "one exchange for two SDK runs");
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .expect("cache dir")
        .collect();
    assert_eq!(cached.len(), 1);
    let entry = cached[0].as_ref().expect("entry").path();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&entry).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "cache file mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_auth_refreshes_with_the_executable_source() {
    let Some(python) = python_with(&["google.auth", "requests"]) else {
        return;
    };
    let fake = FakeIssuer::start();
    let port = free_port();
    let google = FakeGoogle::start(GoogleSetup::new(&format!("http://127.0.0.1:{port}")));
    let setup = google.setup().clone();
    let broker = broker(
        &fake,
        port,
        &format!("audience: {}\n", setup.default_token_audience()),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = token_file(dir.path(), &fake.mint(json!({})));
    let sa = "deployer@proj.iam.gserviceaccount.com";
    // The configuration file comes from the command itself.
    let generated = run_cli_in(
        dir.path(),
        &[
            "credentials",
            "gcp",
            "--output",
            "gcp-config",
            "--broker",
            broker.url(),
            "--audience",
            TARGET,
            "--subject-token-source",
            &format!("file:{home}"),
            "--cache-dir",
            "none",
            "--gcp-audience",
            &setup.audience(),
            "--gcp-service-account",
            sa,
            "--gcp-sts-endpoint",
            &google.url(),
            "--gcp-iamcredentials-endpoint",
            &google.url(),
        ],
        &[],
    );
    assert_eq!(generated.code, Some(0), "{}", generated.all());
    let config: Value =
        serde_json::from_str(&generated.stdout).unwrap_or_else(|e| panic!("{e}: {}", generated.all()));
    assert_eq!(config["token_url"], google.token_url());
    assert_eq!(
        config["service_account_impersonation_url"],
        google.generate_access_token_url(sa)
    );
    let script = format!(
        "import json, google.auth.pluggable as p, google.auth.transport.requests as r\n\
         creds = p.Credentials.from_info(json.loads('''{config}'''), scopes=['https://www.googleapis.com/auth/cloud-platform'])\n\
         creds.refresh(r.Request())\n\
         print(creds.token)"
    );

    let out = run_python(
        &python,
        &script,
        &[("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")],
    );

    assert_eq!(out.code, Some(0), "{}", out.all());
    let issued = google
        .issued(out.stdout.trim())
        .expect("a token the Google fake issued");
    assert_eq!(issued.service_account.as_deref(), Some(sa));
    // Google's STS saw the broker's JWT, for the subject the rule issues.
    let sts = &google.requests()[0].fields;
    assert_eq!(sts["subject_token"]["claims"]["iss"], broker.url());
    assert_eq!(sts["subject_token"]["claims"]["sub"], DEFAULT_SUBJECT);
}

/// `fedbroker credentials azure --audience target-a --watch PATH --once` with the home
/// token from `source` (and `env`).
fn write_token_file_once(
    broker: &Broker,
    dir: &Path,
    source: &str,
    path: &Path,
    env: &[(&str, &str)],
) -> CliOutput {
    let args = [
        "credentials",
        "azure",
        "--broker",
        broker.url(),
        "--audience",
        TARGET,
        "--subject-token-source",
        source,
        "--watch",
        path.to_str().expect("UTF-8 path"),
        "--once",
    ];
    run_cli_in(dir, &args, env)
}

/// `--watch PATH --once`: the broker's JWT in a 0600 file, as AZURE_FEDERATED_TOKEN_FILE
/// and AWS_WEB_IDENTITY_TOKEN_FILE want it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_once_writes_the_token_file() {
    let fake = FakeIssuer::start();
    let broker = broker(&fake, free_port(), "audience: api://AzureADTokenExchange\n").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env_token = fake.mint(json!({}));
    let out_path = dir.path().join("federated-token");
    let out = write_token_file_once(
        &broker,
        dir.path(),
        "env:HOME_TOKEN",
        &out_path,
        &[("HOME_TOKEN", &env_token)],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let written = std::fs::read_to_string(&out_path).expect("token file");
    let (_, claims) =
        integration_tests::tokens::verify_issued(&broker, &written, &["api://AzureADTokenExchange"]).await;
    assert_eq!(claims["sub"], DEFAULT_SUBJECT);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&out_path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !out.all().contains(&written) && !out.all().contains(&env_token),
        "no token in the output"
    );
}

/// Errors: exit 1 with a message on stderr; for gcp, Google's error object on stdout;
/// the refused home token never echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_1_with_the_formats_error_object() {
    let fake = FakeIssuer::start();
    let broker = broker(&fake, free_port(), "lifetime: 5m\n").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = fake.mint(json!({"sub": "someone-else"}));
    let home = token_file(dir.path(), &token);
    let source = format!("file:{home}");
    let args = |kind: &'static str| -> Vec<String> {
        [
            "credentials",
            kind,
            "--broker",
            broker.url(),
            "--audience",
            TARGET,
            "--subject-token-source",
            &source,
            "--cache-dir",
            "none",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli_in(dir.path(), &refs, &[])
    };

    let out = run(args("gcp"));
    assert_eq!(out.code, Some(1), "{}", out.all());
    let doc: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.all()));
    assert_eq!(
        (doc["version"].as_i64(), doc["success"].as_bool()),
        (Some(1), Some(false)),
        "{doc}"
    );
    assert_eq!(doc["code"], "BROKER_REFUSED");
    assert!(out.stderr.contains("invalid_request"), "{}", out.all());
    assert!(!out.all().contains(&token));

    // Refused for aws: nothing on stdout (credential_process has no error object).
    let out = run(args("aws"));
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stdout.is_empty(), "{}", out.all());

    // Usage errors name the flag.
    let mut bad = args("aws");
    bad.extend(["--output".into(), "gcp-executable".into()]);
    let out = run(bad);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("--output gcp-executable does not apply to `aws`"),
        "{}",
        out.all()
    );
    let mut missing = args("token");
    missing[7] = "file:/nonexistent/token".into();
    let out = run(missing);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("/nonexistent/token"), "{}", out.all());
}

/// azure-identity's `WorkloadIdentityCredential` reads the token file `--watch` wrote
/// and trades it at Entra (the fake, over HTTPS with a test CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_identity_uses_the_federated_token_file() {
    let Some(python) = python_with(&["azure.identity"]) else {
        return;
    };
    let fake = FakeIssuer::start();
    let port = free_port();
    let entra = integration_tests::cloud_fakes::FakeEntra::start_https(
        integration_tests::cloud_fakes::EntraSetup::new(&format!("http://127.0.0.1:{port}"), DEFAULT_SUBJECT),
    );
    let broker = broker(&fake, port, "audience: api://AzureADTokenExchange\n").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = token_file(dir.path(), &fake.mint(json!({})));
    let token_path = dir.path().join("azure-federated-token");
    let token_file_arg = token_path.to_str().expect("path");
    let out = write_token_file_once(&broker, dir.path(), &format!("file:{home}"), &token_path, &[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let setup = entra.setup();
    let script = format!(
        "from azure.identity import WorkloadIdentityCredential\n\
         c = WorkloadIdentityCredential(tenant_id='{}', client_id='{}', token_file_path='{token_file_arg}', authority='{}', disable_instance_discovery=True)\n\
         print(c.get_token('https://management.azure.com/.default').token)",
        setup.tenant_id,
        setup.client_id,
        entra.url()
    );
    let ca = entra.ca_pem().expect("CA");
    let out = run_python(
        &python,
        &script,
        &[
            ("REQUESTS_CA_BUNDLE", ca.to_str().expect("path")),
            ("SSL_CERT_FILE", ca.to_str().expect("path")),
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let issued = entra.issued(out.stdout.trim()).expect("a token Entra issued");
    assert_eq!(issued.subject, DEFAULT_SUBJECT);
}

type SourceCase = (
    Option<String>,
    Vec<(&'static str, String)>,
    Option<(&'static str, &'static str)>,
);

/// Each source the command reads a home token from: GitHub Actions' endpoint, the GCP
/// metadata server and Azure IMDS (one fake), a file, an environment variable, and the
/// detection order without `--subject-token-source`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_token_sources() {
    use integration_tests::cloud_fakes::metadata::{FakeMetadata, GITHUB_REQUEST_TOKEN};
    let fake = FakeIssuer::start();
    // Reusable tokens: one home token serves every source here.
    let yaml = BrokerConfig::new()
        .issuer(fake.issuer_yaml_with(ISSUER_NAME, "replay: reusable"))
        .rules(subject_rule("workload", &format!("audiences: [{TARGET}]"), ""))
        .render();
    let broker = Broker::start(&yaml).await;
    let home = fake.mint(json!({}));
    let metadata = FakeMetadata::start(home.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = token_file(dir.path(), &home);
    let github_url = format!("{}/token?api-version=2.0", metadata.url());
    // (--subject-token-source, environment, what the metadata fake saw)
    let cases: Vec<SourceCase> = vec![
        (
            Some("github-actions".into()),
            vec![
                ("ACTIONS_ID_TOKEN_REQUEST_URL", github_url.clone()),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", GITHUB_REQUEST_TOKEN.into()),
            ],
            Some(("github", "home-aud")),
        ),
        (
            Some("gcp-metadata".into()),
            vec![("GCE_METADATA_HOST", metadata.host())],
            Some(("gcp", "home-aud")),
        ),
        (
            Some("azure-imds".into()),
            vec![("AZURE_POD_IDENTITY_AUTHORITY_HOST", metadata.url())],
            Some(("imds", "home-aud")),
        ),
        (Some(format!("file:{file}")), vec![], None),
        (
            Some("env:HOME_TOKEN".into()),
            vec![("HOME_TOKEN", home.clone())],
            None,
        ),
        (
            Some("gitlab:ID_TOKEN".into()),
            vec![("ID_TOKEN", home.clone())],
            None,
        ),
        // Detection: AWS_WEB_IDENTITY_TOKEN_FILE first.
        (None, vec![("AWS_WEB_IDENTITY_TOKEN_FILE", file.clone())], None),
        // Then GitHub Actions' endpoint.
        (
            None,
            vec![
                ("ACTIONS_ID_TOKEN_REQUEST_URL", github_url.clone()),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", GITHUB_REQUEST_TOKEN.into()),
            ],
            Some(("github", "home-aud")),
        ),
    ];
    for (source, env, seen) in cases {
        let before = metadata.seen().len();
        let mut args = vec![
            "credentials",
            "token",
            "--broker",
            broker.url(),
            "--audience",
            TARGET,
            "--cache-dir",
            "none",
            "--source-audience",
            "home-aud",
        ];
        if let Some(source) = &source {
            args.extend(["--subject-token-source", source.as_str()]);
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = run_cli_in(dir.path(), &args, &env);
        assert_eq!(out.code, Some(0), "{source:?}: {}", out.all());
        let (_, claims) =
            integration_tests::tokens::verify_issued(&broker, out.stdout.trim(), &[TARGET]).await;
        assert_eq!(claims["sub"], DEFAULT_SUBJECT, "{source:?}");
        let new: Vec<(String, String)> = metadata.seen()[before..].to_vec();
        match seen {
            Some((path, audience)) => assert_eq!(new, [(path.to_owned(), audience.to_owned())], "{source:?}"),
            None => assert!(new.is_empty(), "{source:?}: {new:?}"),
        }
    }
    // Nothing to detect: exit 1, naming the option.
    let out = run_cli_in(
        dir.path(),
        &[
            "credentials",
            "token",
            "--broker",
            broker.url(),
            "--audience",
            TARGET,
        ],
        &[],
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("--subject-token-source"), "{}", out.all());
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--watch` keeps an AWS web-identity token file fresh: boto3's own
/// `AWS_WEB_IDENTITY_TOKEN_FILE` flow assumes the role at STS (moto) with it, and the
/// file is rewritten before the broker's token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_a_web_identity_token_file_fresh_for_boto3() {
    let Some(python) = python_with(&["boto3"]) else {
        return;
    };
    let Some(moto) = moto_or_skip() else { return };
    let fake = FakeIssuer::start();
    // A reusable home token: the sidecar presents the same one at every refresh (with a
    // one-time issuer the platform must rotate it, as Kubernetes does).
    let yaml = BrokerConfig::new()
        .issuer(fake.issuer_yaml_with(ISSUER_NAME, "replay: reusable"))
        .rules(subject_rule(
            "workload",
            &format!("audiences: [{TARGET}]"),
            "audience: sts.amazonaws.com\nlifetime: 10s\n",
        ))
        .render();
    let broker = Broker::start(&yaml).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = token_file(dir.path(), &fake.mint(json!({})));
    let token_path = dir.path().join("aws-web-identity-token");
    let _sidecar = KillOnDrop(
        std::process::Command::new(fedbroker_bin())
            .args([
                "credentials",
                "aws",
                "--broker",
                broker.url(),
                "--audience",
                TARGET,
                "--cache-dir",
                "none",
            ])
            .arg("--subject-token-source")
            .arg(format!("file:{home}"))
            .arg("--watch")
            .arg(&token_path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn the sidecar"),
    );
    let read = || {
        std::fs::read_to_string(&token_path)
            .ok()
            .filter(|t| !t.is_empty())
    };
    let first =
        integration_tests::eventually(std::time::Duration::from_secs(30), "the token file", || async {
            read()
        })
        .await;

    let script = format!(
        "import boto3\nprint(boto3.Session().client('sts', endpoint_url='{}').get_caller_identity()['Arn'])",
        moto.url()
    );
    let moto_url = moto.url();
    let mut env = vec![
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.to_str().expect("path")),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/web-identity"),
        ("AWS_ROLE_SESSION_NAME", "boto3-session"),
        ("AWS_ENDPOINT_URL_STS", moto_url.as_str()),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ];
    env.extend(AWS_ISOLATED);
    let out = run_python(&python, &script, &env);
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(
        out.stdout.trim(),
        "arn:aws:sts::123456789012:assumed-role/web-identity/boto3-session"
    );

    // Rewritten with a new token before this one's 10 s are up.
    let second = integration_tests::eventually(
        std::time::Duration::from_secs(30),
        "a refreshed token file",
        || async { read().filter(|t| *t != first) },
    )
    .await;
    let (_, claims) =
        integration_tests::tokens::verify_issued(&broker, &second, &["sts.amazonaws.com"]).await;
    assert_eq!(claims["sub"], DEFAULT_SUBJECT);
}
