//! Tools for the attack suite (`tests/attacks.rs`):
//!
//! - [`RawSigner`]: an ES256 key that signs arbitrary signing inputs, so a test can
//!   send correctly signed tokens whose header or payload bytes no JSON value can
//!   produce (duplicate members, invalid UTF-8, padded or `+`/`/` base64).
//! - [`JwksServer`]: a minimal issuer on loopback serving a fixed key set (and a
//!   discovery document naming itself), counting requests.
//! - [`ConnectionCounter`]: a bare TCP listener on loopback that counts accepted
//!   connections and never answers: the target of `jku`/`x5u` headers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::fake_issuer::{bind_loopback, serve_on_thread};
use crate::tokens::b64url;

/// An EC P-256 key signing ES256 over whatever bytes it is given.
pub struct RawSigner {
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl RawSigner {
    pub fn generate(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate EC key");
        Self {
            kid: kid.to_owned(),
            pair,
        }
    }

    /// The public JWK: `kty EC`, `crv P-256`, `x`, `y`, `kid`, `alg ES256`, `use sig`.
    pub fn jwk(&self) -> Value {
        // Uncompressed point: 0x04 || x || y.
        let point = self.pair.public_key().as_ref();
        assert_eq!(point.len(), 65, "uncompressed P-256 point");
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(&point[1..33]),
            "y": b64url(&point[33..]),
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        })
    }

    /// `{"keys": [jwk]}`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    /// The raw ES256 signature (`r || s`, 64 bytes) over `input` as given.
    pub fn sign_bytes(&self, input: &[u8]) -> Vec<u8> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&rng, input)
            .expect("ECDSA signing")
            .as_ref()
            .to_vec()
    }

    /// `header_b64.payload_b64.signature`, the encoded parts taken as they are
    /// (whatever their encoding) and signed.
    pub fn sign_encoded(&self, header_b64: &str, payload_b64: &str) -> String {
        let input = format!("{header_b64}.{payload_b64}");
        let signature = self.sign_bytes(input.as_bytes());
        format!("{input}.{}", b64url(&signature))
    }

    /// A token over raw header and payload bytes (base64url-encoded canonically).
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> String {
        self.sign_encoded(&b64url(header), &b64url(payload))
    }

    /// A token over JSON values, header `{"alg": "ES256", "typ": "JWT", "kid"}`.
    pub fn sign_claims(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        self.sign_raw(
            &serde_json::to_vec(&header).expect("header JSON"),
            &serde_json::to_vec(claims).expect("claims JSON"),
        )
    }
}

struct JwksShared {
    url: String,
    jwks: Mutex<Value>,
    requests: AtomicUsize,
}

/// A minimal issuer on `127.0.0.1`: discovery (naming itself) and a fixed JWKS.
/// Dropping it stops it.
pub struct JwksServer {
    shared: Arc<JwksShared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    pub fn start(jwks: Value) -> Self {
        let (listener, addr) = bind_loopback("JWKS server");
        let shared = Arc::new(JwksShared {
            url: format!("http://{addr}"),
            jwks: Mutex::new(jwks),
            requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(jwks_discovery))
            .route("/jwks.json", get(jwks_document))
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = serve_on_thread("jwks-server", listener, app, rx);
        Self {
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`: the issuer URL its discovery document names.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.shared.url)
    }

    /// Requests to discovery and the JWKS together.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn jwks_discovery(State(shared): State<Arc<JwksShared>>) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "issuer": shared.url,
        "jwks_uri": format!("{}/jwks.json", shared.url),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
    .into_response()
}

async fn jwks_document(State(shared): State<Arc<JwksShared>>) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let jwks = shared.jwks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    axum::Json(jwks).into_response()
}

/// A TCP listener on `127.0.0.1` that accepts, counts and drops connections.
/// Dropping it stops it.
pub struct ConnectionCounter {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ConnectionCounter {
    pub fn start() -> Self {
        let (listener, addr) = crate::fake_issuer::bind_loopback("connection counter");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("connection-counter-{}", addr.port()))
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                                drop(stream);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
                .expect("spawn counter thread")
        };
        Self {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
