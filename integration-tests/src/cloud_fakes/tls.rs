//! HTTPS in front of a fake, for clients that insist on TLS (an `https` authority
//! host): a TLS terminator on its own loopback port, with a certificate for
//! `IP:127.0.0.1` from a fresh private CA (made with the `openssl` command, as
//! [`crate::tls_issuer`] does), relaying each connection's plaintext to the fake's
//! plain HTTP port. rustls does the TLS; no TLS server crate is needed.
//!
//! One thread accepts, one thread per connection relays (both poll a stop flag), so a
//! stalled fake keeps the client's connection open just as without TLS.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls_issuer::{make_ca, make_server_certificate};

const POLL: Duration = Duration::from_millis(10);

/// A running TLS terminator. Dropping it stops it (and its relays).
pub(crate) struct TlsFront {
    url: String,
    ca_pem: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TlsFront {
    /// Terminate TLS on a free loopback port and relay to `backend`.
    pub(crate) fn start(backend: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for the TLS front's certificates");
        let ca_pem = make_ca(dir.path());
        make_server_certificate(dir.path(), "IP:127.0.0.1");
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.path().join("server.pem"))
                .expect("server.pem readable")
                .collect::<Result<_, _>>()
                .expect("server.pem holds certificates");
        let key = PrivateKeyDer::from_pem_file(dir.path().join("server.key")).expect("server.key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate and key");
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS front");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("TLS front address");
        let stop = Arc::new(AtomicBool::new(false));
        let accept_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tls-front-{}", addr.port()))
            .spawn(move || {
                while !accept_stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let (config, stop) = (config.clone(), accept_stop.clone());
                            let _ = std::thread::Builder::new()
                                .name("tls-front-relay".to_owned())
                                .spawn(move || relay(client, config, backend, &stop));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
                        Err(_) => std::thread::sleep(POLL),
                    }
                }
            })
            .expect("spawn the TLS front");
        Self {
            url: format!("https://{addr}"),
            ca_pem,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The CA certificate (PEM file) that signed the front's certificate.
    pub(crate) fn ca_pem(&self) -> PathBuf {
        self.ca_pem.clone()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Relay one client connection until either side closes or the front stops.
fn relay(mut client: TcpStream, config: Arc<rustls::ServerConfig>, backend: SocketAddr, stop: &AtomicBool) {
    let _ = client.set_nonblocking(false);
    let Ok(mut conn) = ServerConnection::new(config) else {
        return;
    };
    let Ok(mut upstream) = TcpStream::connect(backend) else {
        return;
    };
    if client.set_read_timeout(Some(POLL)).is_err() || upstream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    let mut upstream_open = true;
    while !stop.load(Ordering::SeqCst) {
        // TLS records from the client.
        match conn.read_tls(&mut client) {
            Ok(0) => break,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    let _ = conn.write_tls(&mut client);
                    break;
                }
            }
            Err(e) if would_block(&e) => {}
            Err(_) => break,
        }
        // Their plaintext to the fake.
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => {
                    let _ = upstream.shutdown(Shutdown::Write);
                    break;
                }
                Ok(n) => {
                    if upstream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        // The fake's answer back, encrypted.
        if upstream_open {
            match upstream.read(&mut buf) {
                Ok(0) => {
                    upstream_open = false;
                    conn.send_close_notify();
                }
                Ok(n) => {
                    if conn.writer().write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
        }
        while conn.wants_write() {
            if conn.write_tls(&mut client).is_err() {
                return;
            }
        }
        if !upstream_open {
            break;
        }
    }
}
