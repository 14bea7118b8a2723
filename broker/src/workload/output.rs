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
    /// The Google SDK's `external_account` configuration file whose executable source is
    /// this command (with --output gcp-executable); asks the broker nothing.
    GcpConfig,
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
        Output::GcpExecutable | Output::GcpConfig => args.kind == Kind::Gcp,
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
            (Output::GcpExecutable | Output::GcpConfig | Output::Jwt, _) => TT_JWT,
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
            Output::Jwt | Output::GcpConfig => issued.access_token.clone(),
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

/// The `external_account` configuration (Google's executable-sourced credentials) that
/// runs this very command with `--output gcp-executable`: point
/// `GOOGLE_APPLICATION_CREDENTIALS` at it and set `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`.
pub(super) fn gcp_config(args: &CredentialsArgs) -> Result<String, WorkloadError> {
    let audience = args
        .gcp_audience
        .as_deref()
        .ok_or_else(|| WorkloadError::Usage("--output gcp-config needs --gcp-audience".into()))?;
    let exe = std::env::current_exe().map_err(|e| WorkloadError::Io(format!("this program's path: {e}")))?;
    let mut command = vec![
        exe.to_string_lossy().into_owned(),
        "credentials".into(),
        "gcp".into(),
    ];
    let mut flag = |name: &str, value: &str| {
        command.push(format!("--{name}"));
        command.push(value.to_owned());
    };
    flag("broker", &args.broker);
    for a in &args.audience {
        flag("audience", a);
    }
    for r in &args.resource {
        flag("resource", r);
    }
    if let Some(source) = &args.subject_token_source {
        flag("subject-token-source", &source.to_string());
    }
    if let Some(a) = &args.source_audience {
        flag("source-audience", a);
    }
    if let Some(dir) = &args.cache_dir {
        flag("cache-dir", dir);
    }
    let sts = args
        .gcp_sts_endpoint
        .as_deref()
        .unwrap_or(federation_rules::credentials::GCP_STS_ENDPOINT)
        .trim_end_matches('/');
    let mut config = json!({
        "type": "external_account",
        "audience": audience,
        "subject_token_type": TT_JWT,
        "token_url": format!("{sts}/v1/token"),
        "credential_source": {"executable": {
            "command": command.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "),
            "timeout_millis": 30000,
        }},
    });
    if let Some(sa) = &args.gcp_service_account {
        let iam = args
            .gcp_iamcredentials_endpoint
            .as_deref()
            .unwrap_or(federation_rules::credentials::GCP_IAMCREDENTIALS_ENDPOINT)
            .trim_end_matches('/');
        config["service_account_impersonation_url"] = json!(format!(
            "{iam}/v1/projects/-/serviceAccounts/{sa}:generateAccessToken"
        ));
    }
    serde_json::to_string_pretty(&config).map_err(|e| WorkloadError::Io(e.to_string()))
}

/// `arg` as a POSIX shell word (Google's SDKs split the command with shell rules).
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\"'\"'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(shell_quote("file:/a/b"), "file:/a/b");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\"'\"'s'");
        assert_eq!(shell_quote(""), "''");
    }
}
