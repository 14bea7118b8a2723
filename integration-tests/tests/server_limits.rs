//! What one client may hold, through the real binaries: the broker's header and body
//! read timeouts and its connection cap (`server.header_timeout`, `body_timeout`,
//! `max_connections`, on the main listener and `admin.listen`), the permissions of its
//! signing keys, and the Terraform provider's TLS handshakes and error texts.
//!
//! Time bounds here are generous upper bounds ("closed within 30 s" of a 1 s timeout),
//! never lower bounds.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::broker::free_port;
use integration_tests::terraform_support::{self, Terraform, provider_bin, require_tools};
use integration_tests::tls_issuer::openssl;
use integration_tests::{Broker, BrokerConfig, run_cli_in};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bound on anything that should happen after a 1 s timeout.
const GENEROUS: Duration = Duration::from_secs(30);

/// A client that opens a new connection for every request, so that no pooled
/// connection is closed under it by the broker's idle timeout.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(GENEROUS)
        .build()
        .expect("HTTP client")
}

async fn healthz_status(client: &reqwest::Client, origin: &str) -> u16 {
    client
        .get(format!("{origin}/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {origin}/healthz: {e}"))
        .status()
        .as_u16()
}

/// A broker with `server_setting`, a fresh client, and a connection to the broker that
/// has sent `sent` (part of a request) and stalls.
async fn stalled_request(server_setting: &str, sent: &[u8]) -> (Broker, reqwest::Client, TcpStream) {
    let broker = Broker::start(&BrokerConfig::new().server(server_setting).render()).await;
    let mut stalled = connect(broker.port()).await;
    stalled.write_all(sent).await.expect("send part of a request");
    (broker, fresh_client(), stalled)
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the broker")
}

/// Read until the peer closes (EOF or reset), within [`GENEROUS`]; returns what was
/// read. Panics when the connection is still open at the deadline.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(GENEROUS, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("{what}: read failed: {e}"),
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "{what}: the broker did not close the connection within {GENEROUS:?}; received {:?}",
        String::from_utf8_lossy(&received)
    );
    String::from_utf8_lossy(&received).into_owned()
}

/// A client that sends half a request's headers and stalls is disconnected after
/// `header_timeout`; other clients are served all the while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalled_in_its_headers_is_disconnected_while_others_are_served() {
    let half_headers = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let (broker, client, mut stalled) = stalled_request("header_timeout: 1s", half_headers).await;
    for _ in 0..5 {
        assert_eq!(healthz_status(&client, &broker.origin()).await, 200);
    }
    let received = read_until_closed(&mut stalled, "half the headers").await;
    assert!(
        !received.contains("200 OK"),
        "a request with half its headers was answered: {received}"
    );
    assert_eq!(healthz_status(&client, &broker.origin()).await, 200);
}

/// A body that stops arriving is answered `408` (`invalid_request`) after
/// `body_timeout`, and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_answered_408_and_the_connection_closed() {
    let head = "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n\
                grant_type=urn";
    let (broker, client, mut stalled) = stalled_request("body_timeout: 1s", head.as_bytes()).await;
    assert_eq!(healthz_status(&client, &broker.origin()).await, 200);
    let received = read_until_closed(&mut stalled, "a stalled body").await;
    assert!(
        received.starts_with("HTTP/1.1 408"),
        "expected 408 for a stalled body, got: {received}"
    );
    assert!(
        received.contains("\"invalid_request\"") && received.contains("did not arrive within 1s"),
        "{received}"
    );
    assert!(
        received.to_ascii_lowercase().contains("connection: close"),
        "{received}"
    );
    // The audit line tells why: not "too large".
    let lines = broker.wait_for_audit_lines(1).await;
    let reason = lines
        .iter()
        .find_map(|l| l["reason"].as_str())
        .unwrap_or_else(|| panic!("no audit line with a reason: {lines:?}"));
    assert!(reason.contains("did not arrive within 1s"), "{reason}");
    assert_eq!(healthz_status(&client, &broker.origin()).await, 200);
}

/// With `max_connections: 2`, two idle connections fill the listener: the next
/// connection waits in the accept backlog, the idle ones are closed by the header
/// timeout, and `/healthz` is then answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_the_cap_are_closed_and_the_next_client_is_served() {
    let config = BrokerConfig::new()
        .server("max_connections: 2")
        .server("header_timeout: 1s")
        .render();
    let broker = Broker::start(&config).await;
    let mut idle = [connect(broker.port()).await, connect(broker.port()).await];

    // The broker says so when the cap is reached (the harness's health-check
    // connection may be one of the two).
    let deadline = Instant::now() + GENEROUS;
    while !broker.stderr().contains("connection limit reached") {
        assert!(
            Instant::now() < deadline,
            "no `connection limit reached` in the log\n{}",
            broker.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(healthz_status(&fresh_client(), &broker.origin()).await, 200);
    for (i, stream) in idle.iter_mut().enumerate() {
        let received = read_until_closed(stream, &format!("idle connection {i}")).await;
        assert_eq!(received, "", "an idle connection was sent something");
    }
    assert_eq!(healthz_status(&fresh_client(), &broker.origin()).await, 200);
}

/// `admin.listen` is served the same way: a stalled client is disconnected there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_the_same_header_timeout() {
    let admin_port = free_port();
    let config = BrokerConfig::new()
        .server("header_timeout: 1s")
        .top_level(format!(
            "admin:\n  tokens: [\"server-limits-admin-token-0123456789\"]\n  listen: 127.0.0.1:{admin_port}\n"
        ))
        .render();
    let broker = Broker::start(&config).await;
    let admin_origin = format!("http://127.0.0.1:{admin_port}");
    let client = fresh_client();

    let mut stalled = connect(admin_port).await;
    stalled
        .write_all(b"GET /admin/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("send half the headers");
    let doc = client
        .get(format!("{admin_origin}/admin/v1/openapi.json"))
        .send()
        .await
        .expect("the admin listener answers");
    assert_eq!(doc.status().as_u16(), 200);
    let received = read_until_closed(&mut stalled, "admin listener, half the headers").await;
    assert!(!received.contains("200 OK"), "{received}");
    assert_eq!(healthz_status(&client, &broker.origin()).await, 200);
}

/// The rendered config with its placeholders filled, written to `dir/fedbroker.yaml`.
fn write_config(dir: &Path, config: &str) -> String {
    let text = config
        .replace("@PORT@", &free_port().to_string())
        .replace("@DIR@", dir.to_str().expect("UTF-8 path"));
    let path = dir.join("fedbroker.yaml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("UTF-8 path").to_owned()
}

/// Like `ssh`: a private key that group or others can read stops `serve`, with a
/// message naming the file and its mode.
#[test]
fn serve_refuses_a_private_key_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let out = run_cli_in(
        dir.path(),
        &["keys", "generate", "--dir", keys.to_str().expect("path")],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.all());
    let key = std::fs::read_dir(&keys)
        .expect("key dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "pem"))
        .expect("a generated key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = write_config(dir.path(), &BrokerConfig::new().render());

    let out = run_cli_in(dir.path(), &["serve", "--config", &config], &[]);
    assert!(
        out.code.is_some_and(|c| c != 0),
        "serve started with a 0644 private key\n{}",
        out.all()
    );
    let key_text = key.display().to_string();
    assert!(
        out.stderr.contains(&key_text) && out.stderr.contains("0644") && out.stderr.contains("too open"),
        "the error does not name the file and its mode\n{}",
        out.all()
    );

    // The advice it gives works.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = run_cli_in(dir.path(), &["check", "--config", &config], &[]);
    assert_eq!(out.code, Some(0), "{}", out.all());
}

/// A `key_dir` that does not exist yet is created with mode 0700 (parents too), the
/// generated key with 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_key_dir_is_created_0700() {
    use std::os::unix::fs::PermissionsExt;
    let config = BrokerConfig::new()
        .render()
        .replace("key_dir: @DIR@/keys", "key_dir: @DIR@/state/signing");
    let broker = Broker::start(&config).await;
    for dir in ["state", "state/signing"] {
        let mode = std::fs::metadata(broker.dir().join(dir))
            .expect("key dir")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{dir} has mode {mode:o}");
    }
    let key = std::fs::read_dir(broker.dir().join("state/signing"))
        .expect("key dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "pem"))
        .expect("a generated key");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// A self-signed client certificate like the one Terraform makes: `NAME.pem`, `NAME.key`.
fn client_certificate(dir: &Path, name: &str) -> String {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "1",
            "-subj",
            "/O=HashiCorp/CN=localhost",
        ],
    );
    std::fs::read_to_string(dir.join(&cert)).expect("read the certificate")
}

/// One TLS 1.2 handshake with `openssl s_client` presenting `NAME.pem`: `true` when it
/// completed. In TLS 1.2 the server's Finished comes after it checked the client's
/// certificate, so a completed handshake means the certificate was accepted.
fn tls_handshake(dir: &Path, port: u16, name: &str) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-tls1_2",
            "-alpn",
            "h2",
            "-cert",
            &format!("{name}.pem"),
            "-key",
            &format!("{name}.key"),
            "-brief",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    let deadline = Instant::now() + GENEROUS;
    loop {
        if child.try_wait().expect("wait for s_client").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("s_client output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text.contains("CONNECTION ESTABLISHED"), text)
}

/// The provider started the way Terraform starts it (magic cookie, `PLUGIN_CLIENT_CERT`):
/// with 16 idle TCP connections open to its port, a real TLS handshake still completes,
/// and a certificate other than Terraform's is still refused.
#[test]
fn idle_connections_do_not_block_the_terraform_providers_tls_handshakes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let terraform_cert = client_certificate(dir.path(), "terraform");
    client_certificate(dir.path(), "stranger");
    let mut provider = Command::new(provider_bin())
        .env(
            "TF_PLUGIN_MAGIC_COOKIE",
            "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
        )
        .env("PLUGIN_PROTOCOL_VERSIONS", "6")
        .env("PLUGIN_CLIENT_CERT", &terraform_cert)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the provider");
    let stdout = provider.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("handshake line");
    // 1|6|tcp|127.0.0.1:PORT|grpc|CERT
    let fields: Vec<&str> = line.trim().split('|').collect();
    assert!(fields.len() == 6 && fields[2] == "tcp", "handshake line: {line}");
    let port: u16 = fields[3]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line}"));

    let idle: Vec<std::net::TcpStream> = (0..16)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("idle connection"))
        .collect();
    let (ok, text) = tls_handshake(dir.path(), port, "terraform");
    let (stranger_ok, stranger_text) = tls_handshake(dir.path(), port, "stranger");
    drop(idle);
    let _ = provider.kill();
    let _ = provider.wait();
    assert!(ok, "no TLS handshake with 16 idle connections open:\n{text}");
    assert!(
        !stranger_ok,
        "a certificate other than Terraform's was accepted:\n{stranger_text}"
    );
}

/// With `RUST_BACKTRACE=1` in Terraform's environment (it passes it on to the
/// provider), the provider's errors carry no Rust backtrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_carry_no_backtrace_with_rust_backtrace_set() {
    if !require_tools() {
        return;
    }
    let closed_port = free_port();
    let tf = Terraform::new()
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .env("FEDBROKER_ADMIN_TOKEN", "server-limits-admin-token-0123456789");
    let provider = terraform_support::provider_block(&format!("http://127.0.0.1:{closed_port}"));
    let bad = terraform_support::misspelled_kind_issuer("https://issuer.example.com", "");
    let config = format!("{provider}{bad}");
    tf.write("main.tf", &config);
    tf.init();
    let out = tf.run(&["plan", "-no-color", "-input=false"]);
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("githab-actions"), "{}", out.all());
    let all = out.all();
    for marker in [
        "stack backtrace",
        "Stack backtrace",
        "backtrace::",
        "at /rustc/",
        "rust_begin_unwind",
    ] {
        assert!(!all.contains(marker), "`{marker}` in Terraform's output:\n{all}");
    }
    assert!(
        !all.lines().any(|l| l.trim_start().starts_with("0: ")),
        "a backtrace frame in Terraform's output:\n{all}"
    );
}
