//! `fedbroker credentials` (contract §11): the workload's side. Reads the home token
//! where the platform puts it ([`source`]), trades it at the broker (RFC 8693), and
//! prints what a cloud SDK's external-credential hook consumes ([`output`]), or keeps a
//! token file fresh (`--watch`). A credential still valid is reused from a cache file
//! ([`cache`]), so that an SDK calling the command at every refresh does not spend a
//! one-time home token twice.

mod aws_iam;
mod cache;
mod output;
mod source;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use serde_json::Value;

pub use output::Output;
pub use source::Source;

use crate::exchange::{GRANT_TYPE, TT_JWT};

/// Which SDK the credentials are for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// AWS: the `credential_process` JSON (native credentials from the broker).
    Aws,
    /// Google Cloud: the executable-sourced credential response (the broker's JWT, which
    /// the Google SDK trades at Google's STS itself).
    Gcp,
    /// Azure: a federated token file for `AZURE_FEDERATED_TOKEN_FILE` (with --watch), or
    /// an access token (--output access-token).
    Azure,
    /// The broker's JWT alone.
    Token,
}

#[derive(clap::Args, Debug)]
pub struct CredentialsArgs {
    /// aws, gcp, azure or token.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The broker's base URL (its `server.public_url`).
    #[arg(long, value_name = "URL")]
    pub broker: String,
    /// A target audience to request; may repeat.
    #[arg(long)]
    pub audience: Vec<String>,
    /// A target resource to request; may repeat.
    #[arg(long)]
    pub resource: Vec<String>,
    /// Where the home token comes from: file:PATH, env:NAME, kubernetes, github-actions,
    /// gitlab:VARIABLE, gcp-metadata, azure-imds or aws-iam (a GetCallerIdentity signed
    /// with the default AWS credential chain). Without it: AWS_WEB_IDENTITY_TOKEN_FILE,
    /// AZURE_FEDERATED_TOKEN_FILE, GitHub Actions' token endpoint, then the Kubernetes
    /// service-account token file, the first present.
    #[arg(long, value_name = "SOURCE")]
    pub subject_token_source: Option<Source>,
    /// The audience of the home token: for github-actions and gcp-metadata; the Azure
    /// resource for azure-imds; the broker's server ID (the aws-iam issuer's
    /// `server_id`) for aws-iam.
    #[arg(long, value_name = "AUDIENCE")]
    pub source_audience: Option<String>,
    /// credential-process (aws), gcp-executable (gcp), gcp-config (gcp: the Google SDK's
    /// external_account configuration that runs this command), access-token (gcp, azure:
    /// the cloud's access token as JSON) or jwt (token); default: the kind's.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub output: Option<Output>,
    /// Write the broker's JWT to PATH (atomically, mode 0600) and keep it fresh: the
    /// token file of AWS_WEB_IDENTITY_TOKEN_FILE, AZURE_FEDERATED_TOKEN_FILE or a Google
    /// file-sourced credential.
    #[arg(long, value_name = "PATH")]
    pub watch: Option<PathBuf>,
    /// With --watch: write the file once and exit (an init container), instead of
    /// refreshing it until stopped (a sidecar).
    #[arg(long, requires = "watch")]
    pub once: bool,
    /// With --output gcp-config: the workload identity provider
    /// (`//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/R`).
    #[arg(long, value_name = "AUDIENCE")]
    pub gcp_audience: Option<String>,
    /// With --output gcp-config: a service account for the Google SDK to impersonate.
    #[arg(long, value_name = "EMAIL")]
    pub gcp_service_account: Option<String>,
    /// With --output gcp-config: Google STS's base URL (default https://sts.googleapis.com).
    #[arg(long, value_name = "URL")]
    pub gcp_sts_endpoint: Option<String>,
    /// With --output gcp-config: IAM Credentials' base URL (default
    /// https://iamcredentials.googleapis.com).
    #[arg(long, value_name = "URL")]
    pub gcp_iamcredentials_endpoint: Option<String>,
    /// Where cached credentials are kept; default $XDG_CACHE_HOME/fedbroker or
    /// ~/.cache/fedbroker. `none` turns the cache off.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<String>,
}

/// Why the command failed: a message for stderr (never a token).
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{0}")]
    Source(String),
    #[error("broker {0}")]
    Broker(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
}

impl WorkloadError {
    /// A short code for formats that carry one (Google's executable response).
    fn code(&self) -> &'static str {
        match self {
            WorkloadError::Source(_) => "SUBJECT_TOKEN_UNAVAILABLE",
            WorkloadError::Broker(_) => "BROKER_REFUSED",
            WorkloadError::Usage(_) => "USAGE",
            WorkloadError::Io(_) => "IO",
        }
    }
}

/// The broker's answer, as far as the outputs need it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Issued {
    pub access_token: String,
    pub issued_token_type: String,
    pub expires_in: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_credentials: Option<Value>,
    /// Unix seconds at which it expires (set here, from `expires_in`).
    #[serde(default)]
    pub expires_at: u64,
}

pub fn main(args: CredentialsArgs) -> ExitCode {
    let output = match output::choose(&args) {
        Ok(output) => output,
        Err(e) => return fail(None, &e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                Some(output),
                &WorkloadError::Io(format!("cannot start the runtime: {e}")),
            );
        }
    };
    match runtime.block_on(run(&args, output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(Some(output), &e),
    }
}

fn fail(output: Option<Output>, e: &WorkloadError) -> ExitCode {
    eprintln!("fedbroker credentials: {e}");
    if output == Some(Output::GcpExecutable) {
        println!("{}", output::gcp_error(e.code(), &e.to_string()));
    }
    ExitCode::FAILURE
}

async fn run(args: &CredentialsArgs, output: Output) -> Result<(), WorkloadError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("fedbroker-credentials/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WorkloadError::Io(format!("HTTP client: {e}")))?;
    if output == Output::GcpConfig {
        println!("{}", output::gcp_config(args)?);
        return Ok(());
    }
    let requested = output.requested_token_type(args.kind);
    let Some(path) = &args.watch else {
        let issued = obtain(&client, args, requested).await?;
        println!("{}", output.render(&issued)?);
        return Ok(());
    };
    loop {
        let issued = obtain(&client, args, TT_JWT).await?;
        output::write_token_file(path, &issued.access_token)?;
        if args.once {
            return Ok(());
        }
        tokio::time::sleep(cache::refresh_in(&issued)).await;
    }
}

/// A credential for `requested`: from the cache while it is fresh, else from the broker.
async fn obtain(
    client: &reqwest::Client,
    args: &CredentialsArgs,
    requested: &str,
) -> Result<Issued, WorkloadError> {
    let source = match &args.subject_token_source {
        Some(source) => source.clone(),
        None => Source::detect()?,
    };
    let home = source.read(client, args.source_audience.as_deref()).await?;
    let cache = cache::Cache::new(args.cache_dir.as_deref(), args, requested, &home);
    if let Some(issued) = cache.as_ref().and_then(cache::Cache::fresh) {
        return Ok(issued);
    }
    let issued = exchange(client, args, requested, &home).await?;
    if let Some(cache) = &cache {
        cache.store(&issued);
    }
    Ok(issued)
}

/// Connection attempts to the broker before giving up.
const CONNECT_ATTEMPTS: u32 = 3;

/// `send()`, tried again (after 200 ms, then 400 ms) when the connection could not be made:
/// the request never left, so the one-time home token was not presented. Any other
/// failure, once the request may have been sent, is final (a second try would be
/// refused as a replay).
async fn send_with_connect_retries<F, Fut>(send: F) -> Result<reqwest::Response, reqwest::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
{
    let mut attempt = 1;
    loop {
        match send().await {
            Err(e) if e.is_connect() && attempt < CONNECT_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(200 << (attempt - 1))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn exchange(
    client: &reqwest::Client,
    args: &CredentialsArgs,
    requested: &str,
    home: &source::Home,
) -> Result<Issued, WorkloadError> {
    let mut form = vec![
        ("grant_type", GRANT_TYPE),
        ("subject_token", home.token.as_str()),
        ("subject_token_type", home.token_type),
        ("requested_token_type", requested),
    ];
    form.extend(args.audience.iter().map(|a| ("audience", a.as_str())));
    form.extend(args.resource.iter().map(|r| ("resource", r.as_str())));
    let url = format!("{}/token", args.broker.trim_end_matches('/'));
    let resp = send_with_connect_retries(|| client.post(&url).form(&form).send())
        .await
        .map_err(|e| {
            WorkloadError::Broker(format!("{url}: {}", crate::error::with_sources(&e.without_url())))
        })?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| {
        WorkloadError::Broker(format!("{url}: answered {status}, not JSON: {}", e.without_url()))
    })?;
    if !status.is_success() {
        return Err(WorkloadError::Broker(format!(
            "refused ({status}): {}: {}",
            body["error"].as_str().unwrap_or("?"),
            body["error_description"].as_str().unwrap_or("")
        )));
    }
    let mut issued: Issued = serde_json::from_value(body)
        .map_err(|e| WorkloadError::Broker(format!("answered an unexpected document: {e}")))?;
    issued.expires_at = cache::now().saturating_add(issued.expires_in);
    Ok(issued)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A loopback port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn a_refused_connection_is_tried_three_times() {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/token", closed_port());
        let calls = AtomicU32::new(0);
        let result = send_with_connect_retries(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            client.post(&url).send()
        })
        .await;
        assert!(
            result.as_ref().is_err_and(reqwest::Error::is_connect),
            "{result:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), CONNECT_ATTEMPTS);
    }

    #[tokio::test]
    async fn an_answer_or_a_failure_after_connecting_is_not_tried_again() {
        // A server that accepts and closes at once: the request may have been read.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/token");
        let calls = AtomicU32::new(0);
        let result = send_with_connect_retries(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            client.post(&url).send()
        })
        .await;
        assert!(result.as_ref().is_err_and(|e| !e.is_connect()), "{result:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
