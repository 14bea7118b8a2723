//! An OIDC issuer over HTTPS on `127.0.0.1`, with a certificate from a private CA.
//!
//! The certificates (a fresh CA, and a certificate for `IP:127.0.0.1` signed by it) are
//! made with the `openssl` command, and `openssl s_server -WWW` serves the discovery
//! document and the JWKS as files: a real TLS server, without TLS server crates in this
//! package. It answers one connection at a time, HTTP/1.0, which is all the broker's
//! key fetches need.
//!
//! A machine without `openssl` fails these tests with a message that names it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_issuer::{DEFAULT_AUDIENCE, DEFAULT_SUBJECT, KeyKind, SigningKey};
use crate::tokens::{now, random_hex};

const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Run `openssl ARGS` in `dir`; panics (naming `openssl`) when it is missing or fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run openssl ({e}): the TLS tests make a private CA and certificates \
                 with the `openssl` command; install it (Debian: `apt-get install openssl`)"
            )
        });
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A fresh self-signed CA in `dir`: `ca.pem` (the certificate) and `ca.key`.
/// Returns the path of `ca.pem`.
pub fn make_ca(dir: &Path) -> PathBuf {
    let args = [
        &["req", "-x509"][..],
        &EC_KEY,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=fedbroker test issuer CA",
        ],
    ]
    .concat();
    openssl(dir, &args);
    dir.join("ca.pem")
}

/// A server certificate for `subject_alt_names` (e.g. `IP:127.0.0.1`) signed by the CA
/// in `dir` (`ca.pem`, `ca.key`): `server.pem`, `server.key`.
pub fn make_server_certificate(dir: &Path, subject_alt_names: &str) {
    make_certificate(
        dir,
        "server",
        "/CN=127.0.0.1",
        &[&format!("subjectAltName={subject_alt_names}")],
    );
}

/// A certificate signed by the CA in `dir` (`ca.pem`, `ca.key`), with subject
/// `subject` (`/CN=...`) and the X.509v3 `extensions` lines (e.g.
/// `subjectAltName=URI:spiffe://example.org/ns/a/sa/b`): `{name}.pem` and
/// `{name}.key` (PKCS#8) in `dir`. Returns the PEM certificate's path.
pub fn make_certificate(dir: &Path, name: &str, subject: &str, extensions: &[&str]) -> PathBuf {
    let ext = format!("{name}.ext");
    fs::write(dir.join(&ext), extensions.join("\n") + "\n").expect("write ext");
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let request = [
        &["req"][..],
        &EC_KEY,
        &["-keyout", &key, "-out", &csr, "-subj", subject],
    ]
    .concat();
    openssl(dir, &request);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    dir.join(pem)
}

/// A running HTTPS issuer (`openssl s_server`). Dropping it kills the server.
pub struct TlsIssuer {
    child: Child,
    dir: tempfile::TempDir,
    issuer: String,
    key: SigningKey,
}

impl TlsIssuer {
    /// An issuer whose certificate comes from a fresh CA of its own.
    pub fn start() -> TlsIssuer {
        let dir = tempfile::tempdir().expect("tempdir");
        make_ca(dir.path());
        Self::serve(dir)
    }

    /// An issuer whose certificate is signed by `other`'s CA.
    pub fn start_with_ca_of(other: &TlsIssuer) -> TlsIssuer {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["ca.pem", "ca.key"] {
            fs::copy(other.dir.path().join(file), dir.path().join(file)).expect("copy CA");
        }
        Self::serve(dir)
    }

    fn serve(dir: tempfile::TempDir) -> TlsIssuer {
        make_server_certificate(dir.path(), "IP:127.0.0.1");
        let www = dir.path().join("www");
        fs::create_dir_all(www.join(".well-known")).expect("www dir");
        let log_path = dir.path().join("s_server.log");
        let log = fs::File::create(&log_path).expect("log file");
        let path = |name: &str| dir.path().join(name).to_str().expect("UTF-8 tempdir").to_owned();
        let mut child = Command::new("openssl")
            .args(["s_server", "-WWW", "-accept", "127.0.0.1:0"])
            .args(["-cert", &path("server.pem"), "-key", &path("server.key")])
            .current_dir(&www)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `openssl s_server` (install openssl): {e}"));
        // s_server prints `ACCEPT 127.0.0.1:PORT` once it listens.
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            let port = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("ACCEPT 127.0.0.1:"))
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(port) = port {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("openssl s_server exited ({status}):\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("openssl s_server did not listen within {START_TIMEOUT:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let issuer = format!("https://127.0.0.1:{port}");
        let key = SigningKey::generate(KeyKind::Ec);
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks.json"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        fs::write(
            www.join(".well-known/openid-configuration"),
            discovery.to_string(),
        )
        .expect("write discovery");
        fs::write(www.join("jwks.json"), json!({"keys": [key.jwk()]}).to_string()).expect("write JWKS");
        TlsIssuer {
            child,
            dir,
            issuer,
            key,
        }
    }

    /// `https://127.0.0.1:PORT` (no trailing slash): `iss` of its tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// An ES256 token from this issuer (`kid` set) for [`DEFAULT_AUDIENCE`] and
    /// [`DEFAULT_SUBJECT`], valid for 10 minutes.
    pub fn mint(&self) -> String {
        let now = now();
        let header: Value = json!({"alg": "ES256", "typ": "JWT", "kid": self.key.kid});
        let claims = json!({
            "iss": self.issuer,
            "aud": DEFAULT_AUDIENCE,
            "sub": DEFAULT_SUBJECT,
            "iat": now,
            "exp": now + 600,
            "jti": random_hex(16),
        });
        self.key.sign(&header, &claims)
    }

    /// The issuer's entry for a broker config (discovery, ES256,
    /// `danger_allow_insecure: true` for the loopback address), with
    /// `tls_ca_file: <path>` when given.
    pub fn issuer_yaml(&self, name: &str, tls_ca_file: Option<&Path>) -> String {
        let mut out = format!(
            "- name: {name}\n  issuer: {}\n  audiences: [{DEFAULT_AUDIENCE}]\n  algorithms: [ES256]\n  \
             danger_allow_insecure: true\n",
            self.issuer
        );
        if let Some(path) = tls_ca_file {
            out.push_str(&format!(
                "  tls_ca_file: {}\n",
                path.to_str().expect("UTF-8 path")
            ));
        }
        out
    }

    /// What `openssl s_server` printed so far (requests, handshake failures).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("s_server.log")).unwrap_or_default()
    }
}

impl Drop for TlsIssuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
