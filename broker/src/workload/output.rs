//! What `fedbroker credentials` prints: each SDK hook's own format.

use std::io::Write as _;
use std::path::Path;

use clap::ValueEnum;
use serde_json::json;

use super::{CredentialsArgs, Issued, Kind, WorkloadError};
use crate::exchange::{TT_AWS_CREDENTIALS, TT_AZURE_ACCESS_TOKEN, TT_GCP_ACCESS_TOKEN, TT_JWT};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// AWS `credential_process`: `{"Version": 1, "AccessKeyId", "SecretAccessKey",
    /// "SessionToken", "Expiration"}`.
    CredentialProcess,
    /// Google's executable-sourced credential response: `{"version": 1, "success": true,
    /// "token_type", "id_token", "expiration_time"}` (the error object on failure).
    GcpExecutable,
    /// The cloud's access token: `{"accessToken", "expiresOn", "expires_on", "tokenType"}`.
    AccessToken,
    /// The broker's JWT alone.
    Jwt,
}

/// The output for the arguments: `--output`, else the kind's own; a pair that makes no
/// sense is a usage error.
pub(super) fn choose(args: &CredentialsArgs) -> Result<Output, WorkloadError> {
    if args.watch.is_some() {
        return match args.output {
            None | Some(Output::Jwt) => Ok(Output::Jwt),
            Some(other) => Err(WorkloadError::Usage(format!(
                "--watch writes the broker's JWT to a file; --output {} does not apply",
                name(other)
            ))),
        };
    }
    let default = match args.kind {
        Kind::Aws => Output::CredentialProcess,
        Kind::Gcp => Output::GcpExecutable,
        Kind::Azure => Output::AccessToken,
        Kind::Token => Output::Jwt,
    };
    let output = args.output.unwrap_or(default);
    let fits = match output {
        Output::CredentialProcess => args.kind == Kind::Aws,
        Output::GcpExecutable => args.kind == Kind::Gcp,
        Output::AccessToken => matches!(args.kind, Kind::Gcp | Kind::Azure),
        Output::Jwt => true,
    };
    if fits {
        Ok(output)
    } else {
        Err(WorkloadError::Usage(format!(
            "--output {} does not apply to `{}`",
            name(output),
            args.kind
                .to_possible_value()
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default()
        )))
    }
}

fn name(output: Output) -> String {
    output
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

impl Output {
    /// The `requested_token_type` this output needs from the broker.
    pub(super) fn requested_token_type(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Output::CredentialProcess, _) => TT_AWS_CREDENTIALS,
            (Output::AccessToken, Kind::Gcp) => TT_GCP_ACCESS_TOKEN,
            (Output::AccessToken, _) => TT_AZURE_ACCESS_TOKEN,
            (Output::GcpExecutable | Output::Jwt, _) => TT_JWT,
        }
    }

    /// The text to print.
    pub(super) fn render(self, issued: &Issued) -> Result<String, WorkloadError> {
        Ok(match self {
            Output::CredentialProcess => {
                let creds = issued
                    .aws_credentials
                    .as_ref()
                    .ok_or_else(|| WorkloadError::Broker("answered without aws_credentials".into()))?;
                json!({
                    "Version": 1,
                    "AccessKeyId": creds["AccessKeyId"],
                    "SecretAccessKey": creds["SecretAccessKey"],
                    "SessionToken": creds["SessionToken"],
                    "Expiration": creds["Expiration"],
                })
                .to_string()
            }
            Output::GcpExecutable => json!({
                "version": 1,
                "success": true,
                "token_type": TT_JWT,
                "id_token": issued.access_token,
                "expiration_time": issued.expires_at,
            })
            .to_string(),
            Output::AccessToken => json!({
                "accessToken": issued.access_token,
                "expiresOn": humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(issued.expires_at)
                )
                .to_string(),
                "expires_on": issued.expires_at,
                "tokenType": "Bearer",
            })
            .to_string(),
            Output::Jwt => issued.access_token.clone(),
        })
    }
}

/// Google's executable-sourced error response.
pub(super) fn gcp_error(code: &str, message: &str) -> String {
    json!({"version": 1, "success": false, "code": code, "message": message}).to_string()
}

/// Writes `token` to `path` atomically: a temporary file beside it (mode 0600), renamed.
pub(super) fn write_token_file(path: &Path, token: &str) -> Result<(), WorkloadError> {
    let io = |e: std::io::Error| WorkloadError::Io(format!("{}: {e}", path.display()));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("token");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = open_private(&tmp).map_err(io)?;
    file.write_all(token.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A new file, readable and writable by its owner only.
pub(super) fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
