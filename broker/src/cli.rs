//! The `fedbroker` command line (contract §1).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::serve;
use crate::config;
use crate::signing::{Signer, write_new_key};
use crate::state::AppState;

/// How long in-flight requests may take to finish after SIGTERM/SIGINT.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(
    name = "fedbroker",
    version,
    about = "Workload identity federation broker: trade a home-cloud token for a target-cloud JWT (RFC 8693)"
)]
pub struct Cli {
    /// Log format on stderr; default: text on a terminal, JSON lines otherwise.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the broker.
    Serve {
        /// The configuration file.
        #[arg(long, required_unless_present = "dev", conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Built-in development configuration: dev issuer at /dev/issuer, one example rule, keys in memory. Loopback only.
        #[arg(long)]
        dev: bool,
        /// Listen address, overriding server.listen (with --dev: default 127.0.0.1:8080, public_url follows it).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate the configuration and every rule file without network access; print every
    /// error, then every warning (`--strict`: warnings are errors).
    Check {
        #[arg(long)]
        config: PathBuf,
        /// `text` (file:line: field: message, one a line) or `json` (for CI bots).
        #[arg(long, value_enum, default_value = "text")]
        format: CheckFormat,
        /// Treat warnings as errors (exit 1 when there is one): rules whose subjects
        /// are indistinguishable across issuers, credentials that can exceed a cloud's
        /// limits, claims a rule refers to that its issuer's kind never carries.
        #[arg(long)]
        strict: bool,
    },
    /// Dry run: verify a token as the server would, evaluate every rule, print the decision,
    /// why each other rule did not match, and the claims the issued token would carry.
    /// Issues nothing, records no replay. Exit 0 allow, 2 deny, 1 error. A signed AWS
    /// request (--subject-token-type urn:ietf:params:aws:token-type:aws4_request) is
    /// verified by sending it to its aws-iam issuer's STS endpoint, as /token does.
    Explain {
        #[arg(long)]
        config: PathBuf,
        /// The subject token, or @PATH to read it from a file.
        #[arg(long, value_name = "TOKEN|@PATH", required_unless_present = "claims")]
        subject_token: Option<String>,
        /// What the subject token is, as `subject_token_type` names it: a JWT (the
        /// default) or urn:ietf:params:aws:token-type:aws4_request, a signed
        /// GetCallerIdentity request, which explain sends to STS to learn the caller.
        #[arg(long, value_name = "URN", requires = "subject_token")]
        subject_token_type: Option<String>,
        /// A JSON claims document to explain instead of a token (no verification).
        #[arg(long, value_name = "FILE", conflicts_with = "subject_token")]
        claims: Option<PathBuf>,
        /// With --claims: the issuer name, when the document has no `iss`.
        #[arg(long, value_name = "NAME", requires = "claims")]
        issuer: Option<String>,
        /// An actor token (delegation), or @PATH.
        #[arg(long, value_name = "TOKEN|@PATH")]
        actor_token: Option<String>,
        /// A requested audience; may repeat.
        #[arg(long)]
        audience: Vec<String>,
        /// A requested resource; may repeat.
        #[arg(long)]
        resource: Vec<String>,
        /// Space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// Explain a request for an access token (requested_token_type access_token).
        #[arg(long)]
        access_token: bool,
        /// Explain a request that carries a valid DPoP proof (match.require_dpop).
        #[arg(long)]
        dpop: bool,
        /// Explain a request over mutual TLS whose client certificate has this URI SAN
        /// (request.client_cert.uri_sans); may repeat.
        #[arg(long, value_name = "URI")]
        client_cert_uri: Vec<String>,
        /// The client certificate's subject DN, RFC 4514 form (request.client_cert.subject).
        #[arg(long, value_name = "DN")]
        client_cert_subject: Option<String>,
        /// The client certificate's SHA-256, hex (request.client_cert.sha256).
        #[arg(long, value_name = "HEX")]
        client_cert_sha256: Option<String>,
        /// Print a JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run rule tests: each case of the test files (YAML: a claims document, the targets,
    /// the decision expected, optionally the deciding rule and claims the issued token
    /// must carry) is decided against the configuration's rules as `explain --claims`
    /// decides it: no network, no replay marks. Files named *.test.yaml are never loaded
    /// as rules, so they can sit beside the rules they test. Exit 0 every case passed,
    /// 1 a case failed (each failure: the case's file:line, what was expected, what was
    /// decided, the deciding rule or the first condition that failed), 2 a configuration
    /// or test-file error (nothing is run). See docs/rules.md, "Testing rules".
    Test {
        /// The configuration file: its issuers and rules (and rule files) are tested.
        #[arg(long)]
        config: PathBuf,
        /// `text` (a line per case, failures in full, a summary) or `junit` (JUnit XML on
        /// stdout, for CI systems).
        #[arg(long, value_enum, default_value = "text")]
        format: crate::rule_tests::TestFormat,
        /// Test files, or directories whose *.test.yaml files to run. Default: every
        /// *.test.yaml in the directories of the files the `rules_files` globs match (the
        /// config file's directory when it has no `rules_files`).
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// The workload's side: read the home token where the platform puts it, trade it at
    /// a broker, and print what a cloud SDK's credential hook consumes (AWS
    /// credential_process, Google's executable-sourced credentials), or keep a token file
    /// fresh (--watch). Exit 0 on success, 1 on any error (message on stderr).
    Credentials(crate::workload::CredentialsArgs),
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write a new signing key (PKCS#8 PEM, mode 0600) into DIR and print its path.
    /// Without `signing.active_kid`, the newest fitting key signs after a restart.
    Generate {
        /// The key directory; default with --config: its `signing.key_dir`.
        #[arg(long, required_unless_present = "config")]
        dir: Option<PathBuf>,
        /// RS256, ES256, PS256 or EdDSA; default: `signing.algorithm` of --config, else RS256.
        /// One that needs another key type than the configuration's is an error.
        #[arg(long)]
        algorithm: Option<String>,
        /// Take the key directory and algorithm from this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show the signing keys of a configuration's `signing.key_dir`: which signs now,
    /// which are published, and with `signing.rotation` when each signs, until when each
    /// stays published and when the next key is made. Changes nothing.
    /// Exit 0, 1 on an invalid configuration or an unreadable key directory.
    List {
        #[arg(long)]
        config: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Make the next signing key now, ahead of the schedule (under the key directory's
    /// lock) and print its path. With `signing.rotation` it is published at once and
    /// signs after `signing.rotation.prepublish`, on every running replica, without a
    /// restart; the schedule continues from it. Without rotation it signs after a
    /// restart, like `keys generate`. Exit 0, 1 on an invalid configuration or I/O error.
    Rotate {
        #[arg(long)]
        config: PathBuf,
    },
}

/// Crates whose debug and trace output can hold a token or a credential.
const QUIET_TARGETS: [&str; 9] = [
    "aws_smithy_runtime",
    "aws_smithy_http_client",
    "aws_sdk_sts",
    "aws_runtime",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
];

/// Log lines go to stderr from a thread of their own, through a bounded queue: a request
/// never waits for stderr. When a flood of lines (a burst of denials) fills the queue,
/// further lines are dropped until it drains; every decision is still in the audit log,
/// which never drops. The guard writes what is queued when dropped: keep it for the
/// command's life.
///
/// With `tracer` (`telemetry.traces`), the spans of [`crate::telemetry::TARGET`] go to it,
/// whatever RUST_LOG says, and nothing else does; log lines never show those spans.
fn init_logging(
    format: Option<LogFormat>,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, filter};
    let mut filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // The HTTP stacks that carry tokens and cloud credentials log request and response
    // contents at debug and trace: never below info, whatever RUST_LOG asks.
    for target in QUIET_TARGETS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("fedbroker-log")
        // Buffered: the writer thread flushes once the queue is empty, so a burst of
        // lines costs one write.
        .finish(std::io::BufWriter::with_capacity(64 * 1024, WholeStderr));
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    };
    let logged = filter::filter_fn(|meta| meta.target() != crate::telemetry::TARGET);
    let traces = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(filter::filter_fn(crate::telemetry::exported))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter::FilterExt::and(filter, logged)))
        .with(traces)
        .init();
    guard
}

/// Log lines waiting for stderr, at most.
const LOG_QUEUE_LINES: usize = 16_384;

/// stderr, each write whole under its lock: the log thread's batches and the audit
/// writer's (with the audit on stderr) never interleave mid-line.
struct WholeStderr;

impl std::io::Write for WholeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().lock().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            config,
            format,
            strict,
        } => check(&config, format, strict),
        Command::Explain {
            config,
            subject_token,
            subject_token_type,
            claims,
            issuer,
            actor_token,
            audience,
            resource,
            scope,
            access_token,
            dpop,
            client_cert_uri,
            client_cert_subject,
            client_cert_sha256,
            json,
        } => {
            let _log = init_logging(cli.log_format.or(Some(LogFormat::Text)), None);
            let args = crate::explain::ExplainArgs {
                config,
                subject_token,
                subject_token_type,
                claims,
                issuer,
                actor_token,
                audiences: audience,
                resources: resource,
                scope,
                access_token,
                dpop,
                client_cert: crate::explain::client_cert_arg(
                    client_cert_uri,
                    client_cert_subject,
                    client_cert_sha256,
                ),
                json,
            };
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(crate::explain::run(args)),
                Err(e) => {
                    eprintln!("fedbroker: cannot start the runtime: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Test {
            config,
            format,
            paths,
        } => {
            let _log = init_logging(cli.log_format.or(Some(LogFormat::Text)), None);
            crate::rule_tests::run(crate::rule_tests::TestArgs {
                config,
                format,
                paths,
            })
        }
        Command::Credentials(args) => crate::workload::main(args),
        Command::Keys {
            command:
                KeysCommand::Generate {
                    dir,
                    algorithm,
                    config,
                },
        } => keys_generate(dir, algorithm.as_deref(), config.as_deref()),
        Command::Keys {
            command: KeysCommand::List { config, json },
        } => keys_list(&config, json),
        Command::Keys {
            command: KeysCommand::Rotate { config },
        } => keys_rotate(&config),
        Command::Serve { config, dev, listen } => serve_command(cli.log_format, config, dev, listen),
    }
}

/// `check`'s report (the errors found in the files, or `ok`) goes to stdout, in either
/// format. An error of running check itself (the config file cannot be read) goes to
/// stderr in the text format; the JSON format keeps stdout a JSON document. Exit codes:
/// 0 valid, 1 invalid or unreadable. Warnings (`warning: ...`) leave the exit code
/// alone; with `strict` they are errors (`error: ...`, exit 1; in JSON, `valid` is
/// false and they are listed under `errors`, with the config file and no line).
fn check(path: &std::path::Path, format: CheckFormat, strict: bool) -> ExitCode {
    if let (CheckFormat::Text, Err(e)) = (format, std::fs::metadata(path)) {
        eprintln!("fedbroker check: cannot read {}: {e}", path.display());
        return ExitCode::from(1);
    }
    let result = config::load(path);
    let warnings = result.as_ref().map(|c| c.warnings()).unwrap_or_default();
    let valid = result.is_ok() && (!strict || warnings.is_empty());
    match format {
        CheckFormat::Json => {
            let warning_errors = || {
                warnings
                    .iter()
                    .map(|w| {
                        serde_json::json!({
                            "file": path.display().to_string(),
                            "line": null,
                            "field": "",
                            "message": w.message,
                        })
                    })
                    .collect::<Vec<_>>()
            };
            let doc = match &result {
                Ok(c) if strict => serde_json::json!({
                    "valid": valid,
                    "issuers": c.issuers.len(),
                    "rules": c.rules.len(),
                    "errors": warning_errors(),
                    "warnings": [],
                }),
                Ok(c) => serde_json::json!({
                    "valid": true,
                    "issuers": c.issuers.len(),
                    "rules": c.rules.len(),
                    "errors": [],
                    "warnings": warnings,
                }),
                Err(errors) => serde_json::json!({
                    "valid": false,
                    "warnings": [],
                    "errors": errors.0.iter().map(|e| serde_json::json!({
                        "file": e.file.display().to_string(),
                        "line": e.line,
                        "field": e.field,
                        "message": e.message,
                    })).collect::<Vec<_>>(),
                }),
            };
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        CheckFormat::Text => match &result {
            Ok(_) if !valid => {
                for warning in &warnings {
                    println!("error: {warning}");
                }
                println!("{} error(s) (warnings, with --strict)", warnings.len());
            }
            Ok(c) => {
                println!(
                    "{}: ok ({} issuer(s), {} rule(s))",
                    path.display(),
                    c.issuers.len(),
                    c.rules.len()
                );
                // Warnings never change the exit code, unless --strict.
                for warning in &warnings {
                    println!("warning: {warning}");
                }
            }
            Err(errors) => {
                for e in &errors.0 {
                    println!("{e}");
                }
                println!("{} error(s)", errors.0.len());
            }
        },
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `keys list`: exit 0, 1 on an invalid configuration or an unreadable key directory.
fn keys_list(config_path: &std::path::Path, json: bool) -> ExitCode {
    let config = match config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fedbroker: invalid configuration:\n{e}");
            return ExitCode::from(1);
        }
    };
    let listing = if config.signing.kms.is_some() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(crate::signing::list_kms_keys(&config.signing)),
            Err(e) => {
                eprintln!("fedbroker: cannot start the runtime: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        crate::signing::list_keys(&config.signing, crate::signing::unix_now())
    };
    let listing = match listing {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fedbroker: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        match serde_json::to_string_pretty(&listing) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("fedbroker: {e}");
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    match &config.signing.kms {
        Some(kms) => println!("kms: aws, {} key(s); the first signs", kms.keys.len()),
        None => println!("key_dir: {}", listing.key_dir.display()),
    }
    println!("algorithm: {}", listing.algorithm);
    match &listing.rotation {
        Some(r) => println!(
            "rotation: every {}, prepublish {}; next key made at {}",
            humantime::format_duration(std::time::Duration::from_secs(r.every)),
            humantime::format_duration(std::time::Duration::from_secs(r.prepublish)),
            r.next_key_at.as_deref().unwrap_or("-"),
        ),
        None if config.signing.kms.is_some() => {
            println!("rotation: by hand, in signing.kms.keys (docs/operations.md, \"External signers\")")
        }
        None => println!("rotation: none (keys change by hand: `fedbroker keys rotate`, then a restart)"),
    }
    println!(
        "signing: {}",
        listing
            .active_kid
            .as_deref()
            .unwrap_or("(no key yet: serve makes one)")
    );
    println!(
        "{:<43}  {:<9}  {:<7}  {:<20}  {:<20}  {:<20}  {:<20}",
        "KID", "STATE", "TYPE", "CREATED", "SIGNS FROM", "SIGNS UNTIL", "PUBLISHED UNTIL"
    );
    for k in &listing.keys {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        println!(
            "{:<43}  {:<9}  {:<7}  {:<20}  {:<20}  {:<20}  {:<20}",
            k.kid,
            k.state,
            k.key_type,
            k.created,
            or_dash(&k.signs_from),
            or_dash(&k.signs_until),
            or_dash(&k.published_until),
        );
    }
    ExitCode::SUCCESS
}

/// Why `keys rotate` and `keys generate` write nothing with `signing.kms`.
const KMS_KEYS_BY_HAND: &str = "fedbroker: signing.kms: the keys are made in the key management service: create the new key \
     there, add it to signing.kms.keys after the others (published, not signing) and restart; once the clouds have \
     read it (a day), move it first (it signs) and restart again";

/// `keys rotate`: exit 0 written, 1 an invalid configuration or I/O error.
fn keys_rotate(config_path: &std::path::Path) -> ExitCode {
    let config = match config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fedbroker: invalid configuration:\n{e}");
            return ExitCode::from(1);
        }
    };
    let signing = &config.signing;
    if signing.kms.is_some() {
        eprintln!("{KMS_KEYS_BY_HAND}");
        return ExitCode::from(1);
    }
    let Some(dir) = &signing.key_dir else {
        eprintln!("fedbroker: the configuration has no signing.key_dir");
        return ExitCode::from(1);
    };
    match write_new_key(dir, signing.algorithm) {
        Ok(path) => {
            println!("{}", path.display());
            let kid = kid_of_key_file(&path);
            match (&signing.rotation, &signing.active_kid) {
                (Some(r), _) => eprintln!(
                    "fedbroker: made {} key {kid}: published now by every running replica (within 30s), it signs in {}; \
                     the schedule continues from it",
                    signing.algorithm,
                    humantime::format_duration(std::time::Duration::from_secs(r.prepublish)),
                ),
                (None, Some(active)) => eprintln!(
                    "fedbroker: made {} key {kid}. signing.active_kid pins {active}: set signing.active_kid: {kid} \
                     and restart once every replica publishes it",
                    signing.algorithm
                ),
                (None, None) => eprintln!(
                    "fedbroker: made {} key {kid}; it signs after a restart (no signing.rotation: keys are read at start)",
                    signing.algorithm
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fedbroker: {e}");
            ExitCode::from(1)
        }
    }
}

/// The kid of a key file `write_new_key` wrote (`<kid>.pem`).
fn kid_of_key_file(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `keys generate`: exit 0 written, 1 the configuration is invalid or the key cannot be
/// written, 2 bad arguments (an unknown algorithm, or one whose key type differs from
/// the configuration's `signing.algorithm`).
fn keys_generate(
    dir: Option<PathBuf>,
    algorithm: Option<&str>,
    config_path: Option<&std::path::Path>,
) -> ExitCode {
    let explicit = match algorithm.map(config::parse_signing_algorithm).transpose() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fedbroker: {e}");
            return ExitCode::from(2);
        }
    };
    let signing = match config_path {
        None => None,
        Some(path) => match config::load(path) {
            Ok(c) => Some(c.signing),
            Err(e) => {
                eprintln!("fedbroker: invalid configuration:\n{e}");
                return ExitCode::from(1);
            }
        },
    };
    if dir.is_none() && signing.as_ref().is_some_and(|s| s.kms.is_some()) {
        eprintln!("{KMS_KEYS_BY_HAND}");
        return ExitCode::from(2);
    }
    let alg = match (&signing, explicit) {
        (Some(s), Some(a)) if !crate::signing::same_key_type(a, s.algorithm) => {
            eprintln!(
                "fedbroker: --algorithm {a} disagrees with signing.algorithm {} in the configuration: \
                 a {a} key would never sign there; drop --algorithm (or change signing.algorithm first)",
                s.algorithm
            );
            return ExitCode::from(2);
        }
        (_, Some(a)) => a,
        (Some(s), None) => s.algorithm,
        (None, None) => issuers::Algorithm::RS256,
    };
    let Some(dir) = dir.or_else(|| signing.as_ref().and_then(|s| s.key_dir.clone())) else {
        eprintln!("fedbroker: --dir DIR is required (the configuration has no signing.key_dir)");
        return ExitCode::from(2);
    };
    match write_new_key(&dir, alg) {
        Ok(path) => {
            println!("{}", path.display());
            let kid = kid_of_key_file(&path);
            match signing.as_ref().and_then(|s| s.active_kid.as_deref()) {
                Some(active) => eprintln!(
                    "fedbroker: wrote {alg} key {kid}. signing.active_kid pins {active}: after a restart every \
                     replica publishes the new key and keeps signing with {active}; set signing.active_kid: {kid} \
                     and restart again once every replica publishes it"
                ),
                None => eprintln!(
                    "fedbroker: wrote {alg} key {kid}; it signs after a restart (the newest fitting key signs)"
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fedbroker: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// `serve`. The configuration is read before logging starts: whether spans are exported
/// is decided there (`telemetry.traces`), and the logging layers are set once.
fn serve_command(
    log_format: Option<LogFormat>,
    config_path: Option<PathBuf>,
    dev: bool,
    listen: Option<SocketAddr>,
) -> ExitCode {
    // reqwest/rustls: one crypto provider for the whole process (the traces' exporter
    // has a client too).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fedbroker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let loaded = match (config_path, dev) {
        (Some(path), false) => Some(config::load(&path).map(|c| (path, c))),
        _ => None,
    };
    let traces = match &loaded {
        Some(Ok((_, c))) => Ok(c.telemetry.traces.clone()),
        Some(Err(_)) => Ok(None),
        // `--dev` has no file: the standard variable alone.
        None => config::traces_from_env(&|n| std::env::var(n).ok()),
    };
    // The batch task is spawned on the serve runtime.
    let started = match &traces {
        Ok(Some(t)) => {
            let _in_runtime = runtime.enter();
            Some(crate::telemetry::start(t))
        }
        _ => None,
    };
    let (pipeline, tracer) = match started {
        Some(Ok((pipeline, tracer))) => (Some(pipeline), Some(tracer)),
        Some(Err(e)) => {
            let _log = init_logging(log_format, None);
            tracing::error!("cannot export traces: {e}");
            eprintln!("fedbroker: cannot export traces: {e}");
            return ExitCode::FAILURE;
        }
        None => (None, None),
    };
    let _log = init_logging(log_format, tracer);
    let result = match traces {
        Err(e) => Err(anyhow::anyhow!("{e}")),
        Ok(traces) => {
            if let Some(t) = &traces {
                tracing::info!(
                    endpoint = %t.endpoint,
                    from = if t.endpoint_from_env { config::TRACES_ENDPOINT_ENV } else { "telemetry.traces.endpoint" },
                    sample_ratio = t.sample_ratio,
                    "exporting traces over OTLP/HTTP"
                );
            }
            runtime.block_on(run_serve(loaded, dev, listen))
        }
    };
    // What is queued leaves before the runtime stops: the batch task runs on it.
    if let Some(pipeline) = pipeline {
        pipeline.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("fedbroker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `loaded`: the configuration file's path and what loading it gave; `None` with `--dev`.
async fn run_serve(
    loaded: Option<Result<(PathBuf, config::Config), config::ConfigErrors>>,
    dev: bool,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    // reqwest/rustls: one crypto provider for the whole process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config_file = None;
    let (config, signer, dev_issuer) = if dev {
        let addr = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let (config, signer, dev_issuer) = crate::dev::config(addr)?;
        (config, signer, Some(dev_issuer))
    } else {
        let (path, mut config) = loaded
            .ok_or_else(|| anyhow::anyhow!("--config FILE or --dev is required"))?
            .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
        config_file = Some(path);
        if let Some(addr) = listen {
            config.server.listen = addr;
        }
        let signer = Signer::open(&config.signing).await?;
        (config, signer, None)
    };
    let addr = config.server.listen;
    let public_url = config.server.public_url.clone();
    let issuers = config.issuers.len();
    let rules = config.rules.len();
    let warnings = config.warnings();
    let state = AppState::build(config, config_file, signer, dev_issuer)?;
    crate::reload::spawn(state.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, %public_url, issuers, rules, kid = state.signer.kid(), dev, "fedbroker listening");
    for warning in warnings {
        tracing::warn!(kind = warning.kind, target = %warning.target, "{warning}");
    }
    if dev {
        tracing::info!(
            "development mode: mint a token with `curl -s -X POST {public_url}/dev/issuer/token -d '{{\"sub\":\"me\"}}'`"
        );
    }
    serve(listener, state, shutdown_signal(), DRAIN_TIMEOUT).await?;
    tracing::info!("stopped");
    Ok(())
}
