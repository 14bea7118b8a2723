//! The broker serving TLS itself (`server.tls`, `admin.tls`): HTTPS with a certificate
//! from a CA made in the test (with the `openssl` command), TLS 1.2 and 1.3 only, the
//! certificate replaced on disk and served without a restart, and mutual TLS with
//! client certificates required or optional.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use integration_tests::broker::client_builder;
use integration_tests::tls_issuer::{make_ca, make_certificate};
use integration_tests::tokens::verify_issued;
use integration_tests::{Broker, BrokerConfig, FakeIssuer, Http, eventually_explained, run_cli_in};
use serde_json::json;

use crate::support::{ISSUER_NAME, TARGET, assert_denied_by_policy, default_rule, subject_rule};

const SPIFFE_ID: &str = "spiffe://example.org/ns/payments/sa/api";

/// A CA and a server certificate for 127.0.0.1 in a fresh directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        make_ca(dir.path());
        make_certificate(
            dir.path(),
            "server",
            "/CN=fedbroker one",
            &["subjectAltName=IP:127.0.0.1"],
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn text(&self, name: &str) -> String {
        self.path(name).to_str().expect("UTF-8 path").to_owned()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read PKI file")
    }

    /// A client certificate for the SPIFFE ID, `client.pem` and `client.key`.
    fn client(&self, name: &str) -> reqwest::Identity {
        make_certificate(
            self.dir.path(),
            name,
            &format!("/O=Example/CN={name}"),
            &[
                &format!("subjectAltName=URI:{SPIFFE_ID}"),
                "extendedKeyUsage=clientAuth",
            ],
        );
        let mut pem = self.read(&format!("{name}.pem"));
        pem.extend(self.read(&format!("{name}.key")));
        reqwest::Identity::from_pem(&pem).expect("client identity")
    }

    /// A client that trusts this CA, presenting `identity` if given.
    fn https_client(&self, identity: Option<reqwest::Identity>) -> reqwest::Client {
        let roots = reqwest::Certificate::from_pem_bundle(&self.read("ca.pem")).expect("CA PEM");
        let mut builder = client_builder().tls_certs_only(roots);
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        builder.build().expect("HTTPS client")
    }

    /// `server.tls` lines for [`BrokerConfig::server`], with `extra` keys under `tls:`.
    fn server_tls(&self, extra: &[String]) -> Vec<String> {
        let mut lines = vec![
            "tls:".to_owned(),
            format!("  cert_file: {}", self.text("server.pem")),
            format!("  key_file: {}", self.text("server.key")),
        ];
        lines.extend(extra.iter().map(|l| format!("  {l}")));
        lines
    }
}

/// The fake as `k8s` with the default rule, served over TLS with `tls_extra`.
fn tls_config(fake: &FakeIssuer, pki: &Pki, tls_extra: &[String]) -> String {
    tls_config_with_rules(fake, pki, tls_extra, &default_rule())
}

/// [`tls_config`] with `rules`.
fn tls_config_with_rules(fake: &FakeIssuer, pki: &Pki, tls_extra: &[String], rules: &str) -> String {
    let mut config = BrokerConfig::new()
        .issuer(fake.issuer_yaml(ISSUER_NAME))
        .rules(rules);
    for line in pki.server_tls(tls_extra) {
        config = config.server(&line);
    }
    config
        .render()
        .replace("public_url: http://", "public_url: https://")
}

/// `openssl s_client` against `port` with `args`: whether it succeeded, and its output.
fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client (install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The subject of the certificate the listener on `port` presents now.
fn presented_subject(port: u16) -> String {
    let (_, text) = s_client(port, &[]);
    text.lines()
        .find_map(|l| l.strip_prefix("subject=").map(str::to_owned))
        .unwrap_or_else(|| format!("(no certificate: {text})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_tls12_and_13_only_and_reloads_its_certificate() {
    let fake = FakeIssuer::start();
    let pki = Pki::new();
    let broker = Broker::builder()
        .client(pki.https_client(None))
        .start(&tls_config(&fake, &pki, &[]))
        .await;
    assert!(broker.url().starts_with("https://"), "{}", broker.url());

    // An exchange over HTTPS, and the discovery document names the https issuer.
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let discovery = broker.get("/.well-known/openid-configuration").await;
    assert_eq!(discovery.json["issuer"], broker.url());

    // Plain HTTP on the TLS port gets no answer.
    let plain = client_builder()
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{}/healthz", broker.port()))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");

    // TLS 1.2 and 1.3 are served; TLS 1.1 is refused by the server (the client is told
    // to allow it, so the refusal is the broker's).
    for version in ["-tls1_2", "-tls1_3"] {
        let (ok, text) = s_client(broker.port(), &[version]);
        assert!(ok, "{version} must be served:\n{text}");
    }
    let (ok, text) = s_client(broker.port(), &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(!ok, "TLS 1.1 must be refused:\n{text}");
    // The client sent a TLS 1.1 hello and the server answered with an alert (rustls
    // sends handshake_failure when no version is shared).
    assert!(
        text.contains("Protocol  : TLSv1.1") && text.contains("alert"),
        "TLS 1.1 refused by the server's alert:\n{text}"
    );

    // A new certificate (and key) written over the old: new connections get it,
    // without a restart.
    assert!(presented_subject(broker.port()).contains("fedbroker one"));
    make_certificate(
        pki.dir.path(),
        "next",
        "/CN=fedbroker two",
        &["subjectAltName=IP:127.0.0.1"],
    );
    replace(&pki.path("next.key"), &pki.path("server.key"));
    replace(&pki.path("next.pem"), &pki.path("server.pem"));
    eventually_explained(
        Duration::from_secs(20),
        "the broker serves the new certificate",
        || async {
            presented_subject(broker.port())
                .contains("fedbroker two")
                .then_some(())
        },
        || broker.stderr(),
    )
    .await;
    assert!(
        broker.stderr().contains("TLS certificate reloaded"),
        "{}",
        broker.stderr()
    );
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "after the reload: {reply:?}");

    // A key that does not fit the certificate: the previous material keeps serving.
    make_certificate(
        pki.dir.path(),
        "third",
        "/CN=fedbroker three",
        &["subjectAltName=IP:127.0.0.1"],
    );
    replace(&pki.path("third.pem"), &pki.path("server.pem"));
    eventually_explained(
        Duration::from_secs(20),
        "the broker logs that the mismatched files were not loaded",
        || async { broker.stderr().contains("TLS files not reloaded").then_some(()) },
        || broker.stderr(),
    )
    .await;
    assert!(presented_subject(broker.port()).contains("fedbroker two"));
    let health = broker.get("/healthz").await;
    assert_eq!(health.status, 200);
}

/// Replace `to` with a copy of `from` in one rename, as a deployment tool does.
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_must_chain_to_the_client_ca() {
    let fake = FakeIssuer::start();
    let pki = Pki::new();
    let identity = pki.client("workload");
    let extra = [
        format!("client_ca_file: {}", pki.text("ca.pem")),
        "client_auth: required".to_owned(),
    ];
    let broker = Broker::builder()
        .client(pki.https_client(Some(identity)))
        .start(&tls_config(&fake, &pki, &extra))
        .await;
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // No certificate: the handshake fails, nothing is answered.
    let url = format!("{}/healthz", broker.url());
    let bare = pki.https_client(None).get(&url).send().await;
    assert!(bare.is_err(), "no client certificate: {bare:?}");

    // A certificate from another CA: refused too.
    let other = Pki::new();
    let stranger = other.client("stranger");
    let foreign = pki.https_client(Some(stranger)).get(&url).send().await;
    assert!(foreign.is_err(), "a certificate from another CA: {foreign:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_verify_when_presented() {
    let fake = FakeIssuer::start();
    let pki = Pki::new();
    let extra = [format!("client_ca_file: {}", pki.text("ca.pem"))];
    let broker = Broker::builder()
        .client(pki.https_client(None))
        .start(&tls_config(&fake, &pki, &extra))
        .await;
    let url = format!("{}/healthz", broker.url());
    let with_cert = pki.https_client(Some(pki.client("workload")));
    let reply = with_cert.get(&url).send().await.expect("with a certificate");
    assert_eq!(reply.status(), 200);
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "without a certificate: {reply:?}");

    let other = Pki::new();
    let foreign = pki
        .https_client(Some(other.client("stranger")))
        .get(&url)
        .send()
        .await;
    assert!(
        foreign.is_err(),
        "a certificate that does not verify: {foreign:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_tls_too() {
    let fake = FakeIssuer::start();
    let pki = Pki::new();
    make_certificate(
        pki.dir.path(),
        "admin",
        "/CN=fedbroker admin",
        &["subjectAltName=IP:127.0.0.1"],
    );
    let admin_port = integration_tests::broker::free_port();
    let config = tls_config(&fake, &pki, &[]).to_string()
        + &format!(
            "admin:\n  listen: 127.0.0.1:{admin_port}\n  tokens: [\"0123456789abcdef-admin-token\"]\n  state_file: @DIR@/admin-state.json\n  tls:\n    cert_file: {}\n    key_file: {}\n",
            pki.text("admin.pem"),
            pki.text("admin.key")
        );
    let broker = Broker::builder()
        .client(pki.https_client(None))
        .start(&config)
        .await;
    let client = pki.https_client(None);
    let reply = client
        .get(format!("https://127.0.0.1:{admin_port}/jwks.json"))
        .send()
        .await
        .expect("admin listener over HTTPS");
    assert_eq!(reply.status(), 200);
    assert!(presented_subject(admin_port).contains("fedbroker admin"));
    assert!(presented_subject(broker.port()).contains("fedbroker one"));
}

#[test]
fn check_reports_unusable_tls_settings() {
    let fake = FakeIssuer::start();
    let pki = Pki::new();
    make_certificate(
        pki.dir.path(),
        "other",
        "/CN=other",
        &["subjectAltName=IP:127.0.0.1"],
    );
    let cases: [(Vec<String>, &str, &str); 5] = [
        (
            vec![
                "tls:".into(),
                format!("  cert_file: {}", pki.text("missing.pem")),
                format!("  key_file: {}", pki.text("server.key")),
            ],
            "server.tls.cert_file",
            "missing.pem",
        ),
        (
            vec![
                "tls:".into(),
                format!("  cert_file: {}", pki.text("server.pem")),
                format!("  key_file: {}", pki.text("other.key")),
            ],
            "server.tls.key_file",
            "does not fit",
        ),
        (
            vec![
                "tls:".into(),
                format!("  cert_file: {}", pki.text("server.pem")),
                format!("  key_file: {}", pki.text("server.key")),
                "  client_auth: required".into(),
            ],
            "server.tls.client_auth",
            "needs `client_ca_file`",
        ),
        (
            vec![
                "tls:".into(),
                format!("  cert_file: {}", pki.text("server.pem")),
                format!("  key_file: {}", pki.text("server.key")),
                format!("  client_ca_file: {}", pki.text("ca.pem")),
                "  client_auth: sometimes".into(),
            ],
            "server.tls.client_auth",
            "unknown value `sometimes`",
        ),
        (
            vec![
                "tls:".into(),
                format!("  cert_file: {}", pki.text("server.pem")),
                format!("  key_file: {}", pki.text("server.key")),
                format!("  client_ca_file: {}", pki.text("server.key")),
            ],
            "server.tls.client_ca_file",
            "no PEM certificate",
        ),
    ];
    for (lines, field, message) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new()
            .issuer(fake.issuer_yaml(ISSUER_NAME))
            .rules(default_rule());
        for line in &lines {
            config = config.server(line);
        }
        let path = config.write_to(dir.path());
        let out = run_cli_in(
            dir.path(),
            &["check", "--config", path.to_str().expect("UTF-8")],
            &[],
        );
        assert_eq!(out.code, Some(1), "{field}: {}", out.all());
        assert!(
            out.all().contains(field) && out.all().contains(message),
            "{field} / {message}:\n{}",
            out.all()
        );
    }
}

/// RFC 8705's `x5t#S256` of the PEM certificate at `path`, computed here from the file.
fn x5t_s256(path: &Path) -> String {
    let pem = std::fs::read_to_string(path).expect("read certificate");
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = STANDARD.decode(body).expect("PEM base64");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_binds_the_issued_token_and_rules_match_its_spiffe_id() {
    let fake = FakeIssuer::start();
    let pki = Pki::new();
    // target-b: only for a caller whose certificate names the SPIFFE ID its home token
    // names (a workload presenting its X.509-SVID and its JWT-SVID).
    let rules = format!(
        "{}{}",
        subject_rule("open", &format!("audiences: [{TARGET}]"), ""),
        subject_rule(
            "svid-match",
            "audiences: [target-b]\nrequire_client_cert: true\ncondition: \"claims.spiffe_id in request.client_cert.uri_sans\"",
            ""
        )
    );
    let extra = [format!("client_ca_file: {}", pki.text("ca.pem"))];
    let broker = Broker::builder()
        .client(pki.https_client(None))
        .start(&tls_config_with_rules(&fake, &pki, &extra, &rules))
        .await;
    let discovery = broker.get("/.well-known/openid-configuration").await;
    assert_eq!(discovery.json["tls_client_certificate_bound_access_tokens"], true);

    let identity = pki.client("workload");
    let with_cert = Http::network(
        broker.url().to_owned(),
        pki.https_client(Some(identity)),
        broker.dir().to_path_buf(),
    );
    let thumbprint = x5t_s256(&pki.path("workload.pem"));

    // Over mutual TLS, the issued token is bound to the certificate.
    let reply = with_cert.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert_eq!(claims["cnf"], json!({"x5t#S256": thumbprint}));
    // Without a certificate, a bearer token.
    let reply = broker.exchange(&fake.mint(json!({})), TARGET).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (_, claims) = verify_issued(&broker, reply.access_token(), &[TARGET]).await;
    assert!(claims.get("cnf").is_none(), "{claims}");

    // The SPIFFE rule: the certificate's URI SAN must be the token's spiffe_id.
    let token = fake.mint(json!({"spiffe_id": SPIFFE_ID}));
    let reply = with_cert.exchange(&token, "target-b").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let token = fake.mint(json!({"spiffe_id": "spiffe://example.org/ns/billing/sa/api"}));
    let reply = with_cert.exchange(&token, "target-b").await;
    assert_denied_by_policy(&reply, &token);
    let token = fake.mint(json!({"spiffe_id": SPIFFE_ID}));
    let reply = broker.exchange(&token, "target-b").await;
    assert_denied_by_policy(&reply, &token);
}

/// The console (served with the admin API, here on `admin.listen` over TLS) marks its
/// cookies `Secure`, and logs in there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_over_tls_sets_secure_cookies() {
    let fake = FakeIssuer::start();
    let pki = Pki::new();
    let admin_port = integration_tests::broker::free_port();
    let token = "0123456789abcdef-admin-token";
    let config = tls_config(&fake, &pki, &[]).to_string()
        + &format!(
            "admin:\n  listen: 127.0.0.1:{admin_port}\n  tokens: [\"{token}\"]\n  state_file: @DIR@/admin-state.json\nconsole:\n  enabled: true\n"
        );
    let _broker = Broker::builder()
        .client(pki.https_client(None))
        .start(&config)
        .await;
    let client = pki.https_client(None);
    let console = format!("https://127.0.0.1:{admin_port}/console");
    let first = client.get(format!("{console}/")).send().await.expect("console");
    assert_eq!(first.status(), 303);
    assert_eq!(
        first.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/console/login")
    );
    let form = client
        .get(format!("{console}/login"))
        .send()
        .await
        .expect("login form");
    let cookie_of = |resp: &reqwest::Response, name: &str| -> String {
        resp.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie"))
            .to_owned()
    };
    let nonce = cookie_of(&form, "fedbroker_console_login");
    assert!(nonce.contains("; Secure"), "{nonce}");
    let page = form.text().await.expect("page");
    let marker = "name=\"csrf\" value=\"";
    let at = page.find(marker).expect("csrf field") + marker.len();
    let csrf = page[at..].split('"').next().unwrap_or("").to_owned();
    let login = client
        .post(format!("{console}/login"))
        .header("cookie", nonce.split(';').next().unwrap_or(""))
        .form(&[("csrf", csrf.as_str()), ("token", token)])
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 303);
    let session = cookie_of(&login, "fedbroker_console");
    for attribute in ["; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/console/"] {
        assert!(session.contains(attribute), "{attribute} in {session}");
    }
    // The main listener does not serve the console when the admin API has its own.
    let main = client
        .get(format!("https://127.0.0.1:{}/console/", _broker.port()))
        .send()
        .await
        .expect("main listener");
    assert_eq!(main.status(), 404);
}
