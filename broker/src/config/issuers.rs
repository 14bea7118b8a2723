//! `issuers:` (and the admin API's issuers): each raw issuer through the checks of
//! [`issuer_schema`], plus what only the broker can check — the files it names
//! (`tls_ca_file`, `jwks_file`) and names and URLs that two issuers share. Problems are
//! reported in the order the steps run, which is the order the contract's messages
//! have always come in.

use std::collections::HashSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use issuer_schema as schema;
use issuers::{IssuerKind, IssuerPolicy, JwksError, KeySet};

use super::error::Errors;
use super::model::*;
use super::raw::RawIssuer;

/// How the configuration reads the files an issuer names (a function, so that parsing
/// stays testable without files).
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> std::io::Result<Vec<u8>>;

/// What only the broker can find wrong with an issuer: its files, and its neighbours.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum IssuerFileError {
    #[error("{}: cannot read: {}", .0.display(), .1)]
    Read(PathBuf, std::io::Error),
    #[error("{}: no usable PEM CA certificate", .0.display())]
    NoCaCertificate(PathBuf),
    #[error("{}: no usable key", .0.display())]
    NoKey(PathBuf),
    #[error("{}: invalid key set: {}", .0.display(), .1)]
    InvalidKeySet(PathBuf, JwksError),
    #[error("duplicate issuer name `{0}`")]
    DuplicateName(String),
    #[error("another issuer has the same `issuer` URL")]
    DuplicateUrl,
    #[error("another aws-iam issuer has the same `server_id`")]
    DuplicateServerId,
}

/// Validate raw issuers into [`IssuerConfig`]s. `read_file` reads `jwks_file`s and
/// `tls_ca_file`s (relative to `base`).
pub(super) fn build_issuers(
    raw: &[(PathBuf, super::parse::ItemLines, RawIssuer)],
    base: &Path,
    errors: &mut Errors,
    read_file: ReadFile<'_>,
) -> Vec<IssuerConfig> {
    let mut seen = Seen::default();
    let mut out = Vec::new();
    let outer_file = errors.file.clone();
    for (file, node, r) in raw {
        errors.file = file.clone();
        // The config file's issuers by position in its list (an issuer that did not
        // parse keeps its place), the admin API's by name.
        let label = match node.index() {
            Some(i) if *file == outer_file => format!("issuers[{i}]"),
            _ => format!("issuer `{}`", r.name),
        };
        let mut report = Report {
            errors,
            lines: node,
            label,
        };
        if let Some(issuer) = build_issuer(r, base, &mut seen, &mut report, read_file) {
            out.push(issuer);
        }
    }
    errors.file = outer_file;
    out
}

/// Names and `iss` URLs of the issuers built so far: each may appear once.
#[derive(Default)]
struct Seen {
    names: HashSet<String>,
    urls: HashSet<String>,
    /// aws-iam issuers' `server_id`s: the one a signed request names picks its issuer.
    server_ids: HashSet<String>,
}

/// One issuer's problems, each at its field's line (or the issuer's, when the field is
/// not written).
struct Report<'a> {
    errors: &'a mut Errors,
    lines: &'a super::parse::ItemLines,
    label: String,
}

impl Report<'_> {
    fn at(&mut self, key: &str, message: impl Display) {
        let line = self.lines.key_line(key);
        self.errors
            .at_line(line, format!("{}.{key}", self.label), message.to_string());
    }
    /// At the issuer's own line: for what is missing or spans several fields.
    fn at_issuer(&mut self, key: &str, message: impl Display) {
        let line = self.lines.line();
        self.errors
            .at_line(line, format!("{}.{key}", self.label), message.to_string());
    }
    fn count(&self) -> usize {
        self.errors.list.len()
    }
}

fn build_issuer(
    r: &RawIssuer,
    base: &Path,
    seen: &mut Seen,
    report: &mut Report<'_>,
    read_file: ReadFile<'_>,
) -> Option<IssuerConfig> {
    let before = report.count();
    let kind = schema::kind(r).unwrap_or_else(|e| {
        report.at("kind", e);
        IssuerKind::Generic
    });
    let kind_params = schema::kind_params(r);
    let issuer_text = schema::issuer_url(r, kind, &kind_params).unwrap_or_else(|e| {
        report.at_issuer("issuer", e);
        String::new()
    });
    if let Err(e) = schema::kind_config(kind, &issuer_text, &kind_params) {
        report.at("kind", e);
    }
    // An aws-iam issuer fetches nothing: its `tls_ca_file` is refused, never read.
    let tls_ca_file = r.tls_ca_file.as_ref().filter(|_| kind != IssuerKind::AwsIam);
    let tls_ca_pem = tls_ca_file.and_then(|p| {
        read_tls_ca(&base.join(p), read_file)
            .map_err(|e| report.at("tls_ca_file", e))
            .ok()
    });
    check_unique(r, &issuer_text, seen, report);
    if let Err(e) = schema::extra_claims(r) {
        report.at("extra_claims", e);
    }
    if kind == IssuerKind::AwsIam {
        return build_aws_iam(r, kind, kind_params, issuer_text, seen, report, before);
    }
    let issuer_url = schema::check_fetch_url(&issuer_text, r.danger_allow_insecure)
        .map_err(|e| report.at("issuer", e))
        .ok();
    if let Err(e) = schema::audiences(r) {
        report.at("audiences", e);
    }
    if let Err(e) = schema::one_key_source(r) {
        report.at_issuer("jwks_uri", e);
    }
    let keys = key_source(r, base, report, read_file);
    let (algorithms, problems) = schema::algorithms(r, kind);
    for e in problems {
        report.at("algorithms", e);
    }
    let replay = schema::replay(r).unwrap_or_else(|e| {
        report.at("replay", e);
        ReplayMode::OneTime
    });
    let max_token_lifetime = schema::max_token_lifetime(r).unwrap_or_else(|e| {
        report.at("max_token_lifetime", e);
        DEFAULT_MAX_TOKEN_LIFETIME
    });
    if report.count() != before {
        return None;
    }
    issuer_url?;
    Some(IssuerConfig {
        name: r.name.clone(),
        kind,
        kind_params,
        allow_access_tokens: r.allow_access_tokens,
        extra_claims: r.extra_claims.clone().unwrap_or_default(),
        tls_ca_pem,
        policy: IssuerPolicy {
            issuer: issuer_text,
            audiences: r.audiences.clone(),
            algorithms,
            max_token_lifetime: Some(max_token_lifetime),
            clock_skew: 0,
        },
        keys,
        replay,
        danger_allow_insecure: r.danger_allow_insecure,
    })
}

/// A `kind: aws-iam` issuer: no keys and no token checks, the aws-iam fields instead
/// (`issuer_schema::aws_iam`), and a `server_id` no other aws-iam issuer has.
fn build_aws_iam(
    r: &RawIssuer,
    kind: IssuerKind,
    kind_params: issuers::KindParams,
    issuer_text: String,
    seen: &mut Seen,
    report: &mut Report<'_>,
    before: usize,
) -> Option<IssuerConfig> {
    for (field, e) in schema::aws_iam(r) {
        report.at(field, e);
    }
    if let Some(id) = &r.server_id
        && !seen.server_ids.insert(id.clone())
    {
        report.at("server_id", IssuerFileError::DuplicateServerId);
    }
    let replay = schema::replay(r).unwrap_or_else(|e| {
        report.at("replay", e);
        ReplayMode::OneTime
    });
    if report.count() != before || issuer_text.is_empty() {
        return None;
    }
    let no_keys = KeySet::from_jwks_value(&serde_json::json!({"keys": []})).ok()?;
    Some(IssuerConfig {
        name: r.name.clone(),
        kind,
        kind_params,
        allow_access_tokens: false,
        extra_claims: r.extra_claims.clone().unwrap_or_default(),
        tls_ca_pem: None,
        policy: IssuerPolicy {
            issuer: issuer_text,
            audiences: Vec::new(),
            algorithms: Vec::new(),
            max_token_lifetime: None,
            clock_skew: 0,
        },
        keys: KeySource::Static(Arc::new(no_keys)),
        replay,
        danger_allow_insecure: r.danger_allow_insecure,
    })
}

/// A name, and an `iss` URL, that no issuer before this one has.
fn check_unique(r: &RawIssuer, issuer_text: &str, seen: &mut Seen, report: &mut Report<'_>) {
    if let Err(e) = schema::name(r) {
        report.at("name", e);
    } else if !seen.names.insert(r.name.clone()) {
        report.at("name", IssuerFileError::DuplicateName(r.name.clone()));
    }
    if !issuer_text.is_empty() && !seen.urls.insert(issuer_text.to_string()) {
        report.at("issuer", IssuerFileError::DuplicateUrl);
    }
}

/// Where the keys come from: the first of `jwks_uri`, `jwks` and `jwks_file` given, or
/// discovery (also when the one given is refused: the issuer is not built then).
fn key_source(r: &RawIssuer, base: &Path, report: &mut Report<'_>, read_file: ReadFile<'_>) -> KeySource {
    let refused = |report: &mut Report<'_>, key: &str, e: &dyn Display| {
        report.at(key, e);
        KeySource::Discovery
    };
    if let Some(uri) = &r.jwks_uri {
        match schema::check_fetch_url(uri, r.danger_allow_insecure) {
            Ok(u) => KeySource::JwksUri(u),
            Err(e) => refused(report, "jwks_uri", &e),
        }
    } else if let Some(jwks) = &r.jwks {
        match schema::static_jwks(jwks) {
            Ok(set) => KeySource::Static(Arc::new(set)),
            Err(e) => refused(report, "jwks", &e),
        }
    } else if let Some(path) = &r.jwks_file {
        let path = base.join(path);
        match read_jwks_file(&path, read_file) {
            Ok(set) => KeySource::File(path, Arc::new(set)),
            Err(e) => refused(report, "jwks_file", &e),
        }
    } else {
        KeySource::Discovery
    }
}

fn read_jwks_file(path: &Path, read_file: ReadFile<'_>) -> Result<KeySet, IssuerFileError> {
    let bytes = read_file(path).map_err(|e| IssuerFileError::Read(path.to_path_buf(), e))?;
    match KeySet::from_jwks_json(&bytes) {
        Ok(set) if !set.is_empty() => Ok(set),
        Ok(_) => Err(IssuerFileError::NoKey(path.to_path_buf())),
        Err(e) => Err(IssuerFileError::InvalidKeySet(path.to_path_buf(), e)),
    }
}

fn read_tls_ca(path: &Path, read_file: ReadFile<'_>) -> Result<Vec<u8>, IssuerFileError> {
    let pem = read_file(path).map_err(|e| IssuerFileError::Read(path.to_path_buf(), e))?;
    if pem_has_certificate(&pem) {
        Ok(pem)
    } else {
        Err(IssuerFileError::NoCaCertificate(path.to_path_buf()))
    }
}

/// Whether `pem` holds at least one certificate and every certificate in it is one the
/// TLS stack accepts as a root (so `check` catches what `serve` would refuse).
fn pem_has_certificate(pem: &[u8]) -> bool {
    let has_cert = pem::parse_many(pem).is_ok_and(|all| all.iter().any(|p| p.tag() == "CERTIFICATE"));
    has_cert
        && reqwest::Certificate::from_pem_bundle(pem).is_ok_and(|certs| {
            !certs.is_empty() && reqwest::Client::builder().tls_certs_merge(certs).build().is_ok()
        })
}
