//! TLS serving (`server.tls`, `admin.tls`): rustls on aws-lc-rs, TLS 1.2 and 1.3 only,
//! HTTP/1.1 over it, and optionally mutual TLS with client certificates that must chain
//! to `client_ca_file` (webpki path building, the same checks a browser makes, with the
//! `clientAuth` extended key usage).
//!
//! The certificate, its key and the client CA file are read again when they change: the
//! reload watcher asks on a file event or SIGHUP, and a poll every [`POLL`] catches what
//! no event announces (a Kubernetes Secret volume swaps a symbolic link). A new
//! connection gets the newest material; connections already open keep theirs. Files
//! that do not load (a certificate written before its key) leave the previous material
//! serving, and are tried again at the next change.
//!
//! A verified client certificate becomes a [`ClientCert`]: the listener puts it in each
//! request's extensions, rules see it as `request.client_cert`, and the issued token is
//! bound to it (`cnf["x5t#S256"]`, RFC 8705).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::client_cert::ClientCert;
use crate::config::{ClientAuth, TlsConfig};
use crate::files::{MAX_CA_BYTES, read_regular_file};

/// How often the files are compared with what is serving, whatever the watcher saw.
pub const POLL: Duration = Duration::from_secs(5);

/// The largest certificate chain or key file read.
const MAX_PEM_BYTES: u64 = 256 * 1024;

/// Why TLS files cannot be used. Each names the field it concerns (`field()`).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { field: &'static str, path: PathBuf },
    #[error("{path}: not a PEM certificate file: {reason}")]
    BadCertificate {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{path}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("the key in {key} does not fit the certificate in {cert}, or is not usable: {reason}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{path}: no usable CA certificate: {reason}")]
    BadClientCa { path: PathBuf, reason: String },
}

impl TlsError {
    /// The `tls` key the error concerns.
    pub fn field(&self) -> &'static str {
        match self {
            TlsError::Read { field, .. }
            | TlsError::NoCertificate { field, .. }
            | TlsError::BadCertificate { field, .. } => field,
            TlsError::NoKey { .. } | TlsError::KeyMismatch { .. } => "key_file",
            TlsError::BadClientCa { .. } => "client_ca_file",
        }
    }
}

/// Read and check the files `tls` names, as `serve` would use them.
pub fn check(tls: &TlsConfig) -> Result<(), TlsError> {
    Material::read(tls).and_then(|m| m.server_config(tls)).map(|_| ())
}

/// The bytes of the files, as last read: a reload compares them to know whether
/// anything changed.
#[derive(PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Material {
    fn read(tls: &TlsConfig) -> Result<Material, TlsError> {
        let read = |field: &'static str, path: &Path, cap: u64| {
            read_regular_file(path, cap).map_err(|source| TlsError::Read {
                field,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Material {
            cert: read("cert_file", &tls.cert_file, MAX_PEM_BYTES)?,
            key: read("key_file", &tls.key_file, MAX_PEM_BYTES)?,
            client_ca: match &tls.client_ca_file {
                Some(path) => Some(read("client_ca_file", path, MAX_CA_BYTES)?),
                None => None,
            },
        })
    }

    fn server_config(&self, tls: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = certificates(&self.cert, "cert_file", &tls.cert_file)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|_| TlsError::NoKey {
            path: tls.key_file.clone(),
        })?;
        let mismatch = |reason: String| TlsError::KeyMismatch {
            cert: tls.cert_file.clone(),
            key: tls.key_file.clone(),
            reason,
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| mismatch(e.to_string()))?;
        let builder = match (&self.client_ca, tls.client_auth) {
            (Some(ca), ClientAuth::Optional | ClientAuth::Required) => {
                let path = tls.client_ca_file.clone().unwrap_or_default();
                let bad = |reason: String| TlsError::BadClientCa {
                    path: path.clone(),
                    reason,
                };
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(ca, "client_ca_file", &path)? {
                    roots.add(cert).map_err(|e| bad(e.to_string()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if tls.client_auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(|e| bad(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| mismatch(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Every certificate of a PEM file; at least one.
fn certificates(
    pem: &[u8],
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            field,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            field,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// One listener's TLS: what new connections are served with, replaced when the files
/// change.
pub struct TlsServer {
    settings: TlsConfig,
    /// Which listener, for logs (`public`, `admin`).
    listener: &'static str,
    current: RwLock<(Arc<rustls::ServerConfig>, Material)>,
}

impl TlsServer {
    pub fn load(settings: &TlsConfig, listener: &'static str) -> Result<TlsServer, TlsError> {
        let material = Material::read(settings)?;
        let config = material.server_config(settings)?;
        Ok(TlsServer {
            settings: settings.clone(),
            listener,
            current: RwLock::new((Arc::new(config), material)),
        })
    }

    /// The acceptor for a new connection: the newest material.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        tokio_rustls::TlsAcceptor::from(current.0.clone())
    }

    /// Whether client certificates are asked for.
    pub fn client_auth(&self) -> ClientAuth {
        self.settings.client_auth
    }

    /// Read the files again; serve them from the next connection on if they changed and
    /// load. Returns whether the material in use changed. An error leaves the previous
    /// material serving, and is logged.
    pub fn reload(&self) -> bool {
        let material = match Material::read(&self.settings) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(listener = self.listener, error = %e, "TLS files not reloaded; the previous certificate still serves");
                return false;
            }
        };
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == material {
            return false;
        }
        match material.server_config(&self.settings) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(config), material);
                tracing::info!(
                    listener = self.listener,
                    cert_file = %self.settings.cert_file.display(),
                    "TLS certificate reloaded: new connections use it"
                );
                true
            }
            Err(e) => {
                tracing::error!(listener = self.listener, error = %e, "TLS files not reloaded; the previous certificate still serves");
                false
            }
        }
    }

    /// The files to watch.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.settings.cert_file.clone(), self.settings.key_file.clone()];
        files.extend(self.settings.client_ca_file.clone());
        files
    }

    /// Poll the files every [`POLL`] until the process ends.
    pub fn spawn_poll(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || this.reload()).await;
            }
        });
    }
}

/// The identity of a verified client certificate (DER), for rules and `cnf`. `None`
/// when it does not parse (webpki accepted it, so this does not happen in practice).
pub fn client_cert(der: &[u8]) -> Option<ClientCert> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut uri_sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uri_sans.push((*uri).to_string());
            }
        }
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    Some(ClientCert {
        uri_sans,
        subject: rfc4514(cert.subject()),
        sha256: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        x5t_s256: B64.encode(digest.as_ref()),
    })
}

/// A distinguished name in RFC 4514's string form: the last RDN first, attributes by
/// their short names (`CN`, `O`, ...) or dotted OIDs, values escaped.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let key = match x509_parser::objects::oid2abbrev(oid, registry) {
                        Ok(abbrev) => abbrev.to_string(),
                        Err(_) => oid.to_id_string(),
                    };
                    let value = match attr.as_str() {
                        Ok(text) => escape_rfc4514(text),
                        Err(_) => format!("#{}", hex(attr.attr_value().data)),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 4514 §2.4: escape `"+,;<>\` anywhere, `#` and a space at the start, a space at the end.
fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}
