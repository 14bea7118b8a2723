//! A fake OIDC issuer in the Kubernetes style: discovery without an
//! `authorization_endpoint`, a JWKS, and real keys that mint tokens.
//!
//! It runs on its own thread with its own runtime so that it keeps answering
//! while a test blocks (on a child process, on a CLI run) or between tests'
//! runtimes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use aws_lc_rs::encoding::AsDer as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::tokens::{compact, now, random_hex, signing_input};

/// The `aud` the fake puts in tokens by default, and lists in its issuer YAML.
pub const DEFAULT_AUDIENCE: &str = "fedbroker";
/// The `sub` the fake puts in tokens by default.
pub const DEFAULT_SUBJECT: &str = "system:serviceaccount:ci:deployer";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048, RS256 by default.
    Rsa,
    /// EC P-256, ES256.
    Ec,
}

/// A private signing key with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// SubjectPublicKeyInfo DER of the public key.
    pub public_spki_der: Vec<u8>,
}

impl SigningKey {
    pub fn generate(kind: KeyKind) -> Self {
        Self::generate_with_kid(kind, &random_hex(8))
    }

    pub fn generate_with_kid(kind: KeyKind, kid: &str) -> Self {
        let (alg, encoding, public_spki_der) = match kind {
            KeyKind::Rsa => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .expect("generate RSA key");
                let pkcs8 = pair.as_der().expect("PKCS#8 DER");
                // `EncodingKey::from_rsa_der` wants PKCS#1; the PEM route accepts PKCS#8.
                let pem = pem_encode("PRIVATE KEY", pkcs8.as_ref());
                let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA PEM key");
                let spki = aws_lc_rs::signature::KeyPair::public_key(&pair)
                    .as_der()
                    .expect("SPKI DER")
                    .as_ref()
                    .to_vec();
                (Algorithm::RS256, encoding, spki)
            }
            KeyKind::Ec => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let alg = &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 =
                    aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generate EC key");
                let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref())
                    .expect("EC key parses");
                let spki = aws_lc_rs::signature::KeyPair::public_key(&pair)
                    .as_der()
                    .expect("SPKI DER")
                    .as_ref()
                    .to_vec();
                (Algorithm::ES256, EncodingKey::from_ec_der(pkcs8.as_ref()), spki)
            }
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK");
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk: serde_json::to_value(jwk).expect("JWK serialises"),
            public_spki_der,
        }
    }

    /// The public JWK (with `kid`, `alg`, `use`).
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// The public key as SPKI PEM (the text an algorithm-confusion attacker would MAC with).
    pub fn public_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.public_spki_der)
    }

    /// Sign `claims` as is under `header` as is. The signing algorithm is the
    /// header's `alg` when that is one this key can make (RS512 with an RSA key),
    /// else the key's own; the header is never changed, so it may lie.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let family = self.alg.family();
        let alg = header["alg"]
            .as_str()
            .and_then(|a| a.parse::<Algorithm>().ok())
            .filter(|a| a.family() == family)
            .unwrap_or(self.alg);
        let input = signing_input(header, claims);
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, alg).expect("sign");
        compact(header, claims, &signature)
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

struct Shared {
    issuer: String,
    /// Published keys; the last one signs.
    keys: Mutex<Vec<Arc<SigningKey>>>,
    /// `issuer` value served in discovery instead of the real one.
    discovery_issuer: Mutex<Option<String>>,
    outage: AtomicBool,
    discovery_requests: AtomicUsize,
    jwks_requests: AtomicUsize,
}

impl Shared {
    fn keys(&self) -> MutexGuard<'_, Vec<Arc<SigningKey>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake issuer. Dropping it stops it.
pub struct FakeIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    kind: KeyKind,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A nonblocking listener on a free loopback port, and its address.
pub(crate) fn bind_loopback(what: &str) -> (std::net::TcpListener, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind {what}: {e}"));
    listener.set_nonblocking(true).expect("nonblocking listener");
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{what} address: {e}"));
    (listener, addr)
}

/// Serve `app` on `listener` from a thread of its own (named `name-PORT`, with a
/// runtime of its own) until `stop` fires or is dropped. Dropping the runtime then drops
/// every open connection: a hard stop.
pub(crate) fn serve_on_thread(
    name: &str,
    listener: std::net::TcpListener,
    app: Router,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> JoinHandle<()> {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let name = format!("{name}-{port}");
    let label = name.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                tokio::select! {
                    result = axum::serve(listener, app) => {
                        if let Err(e) = result { eprintln!("{label} stopped: {e}"); }
                    }
                    _ = stop => {}
                }
            });
        })
        .unwrap_or_else(|e| panic!("spawn a server thread: {e}"))
}

impl FakeIssuer {
    /// An issuer with one RSA key, signing RS256.
    pub fn start() -> Self {
        Self::start_with(KeyKind::Rsa)
    }

    pub fn start_with(kind: KeyKind) -> Self {
        let (listener, addr) = bind_loopback("fake issuer");
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            keys: Mutex::new(vec![Arc::new(SigningKey::generate(kind))]),
            discovery_issuer: Mutex::new(None),
            outage: AtomicBool::new(false),
            discovery_requests: AtomicUsize::new(0),
            jwks_requests: AtomicUsize::new(0),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks.json", get(jwks))
            .fallback(fallback)
            .with_state(shared.clone());
        let thread = serve_on_thread("fake-issuer", listener, app, rx);
        Self {
            shared,
            addr,
            kind,
            shutdown: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// The issuer URL, `http://127.0.0.1:PORT` (no trailing slash): `iss` of its tokens.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.shared.issuer)
    }

    pub fn key_kind(&self) -> KeyKind {
        self.kind
    }

    /// The key that signs now.
    pub fn current_key(&self) -> Arc<SigningKey> {
        self.shared
            .keys()
            .last()
            .cloned()
            .expect("the fake always has a key")
    }

    /// The published key set, `{"keys": [...]}`.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.shared.keys().iter().map(|k| k.jwk()).collect::<Vec<_>>()})
    }

    /// Number of requests (in outage too) to the discovery document.
    pub fn discovery_requests(&self) -> usize {
        self.shared.discovery_requests.load(Ordering::SeqCst)
    }

    /// Number of requests (in outage too) to the JWKS.
    pub fn jwks_requests(&self) -> usize {
        self.shared.jwks_requests.load(Ordering::SeqCst)
    }

    /// Requests to the discovery document and to the JWKS so far: `(0, 0)` when nothing
    /// fetched this issuer's keys.
    pub fn key_fetches(&self) -> (usize, usize) {
        (self.discovery_requests(), self.jwks_requests())
    }

    /// Add a new key (new kid) that signs from now on; `drop_old` unpublishes the others.
    /// Returns the new kid.
    pub fn rotate(&self, drop_old: bool) -> String {
        let key = Arc::new(SigningKey::generate(self.kind));
        let kid = key.kid.clone();
        let mut keys = self.shared.keys();
        if drop_old {
            keys.clear();
        }
        keys.push(key);
        kid
    }

    /// While on, every request is answered 503.
    pub fn set_outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::SeqCst);
    }

    /// Serve `issuer` in the discovery document instead of the real issuer URL.
    pub fn set_discovery_issuer(&self, issuer: Option<&str>) {
        *self
            .shared
            .discovery_issuer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = issuer.map(str::to_owned);
    }

    /// Stop serving: connections are refused from now on.
    pub fn stop(&self) {
        if let Some(tx) = self.shutdown.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }

    /// Claims with the defaults filled in: `iss` (this issuer), `aud`
    /// ([`DEFAULT_AUDIENCE`]), `sub` ([`DEFAULT_SUBJECT`]), `iat` (now), `exp`
    /// (now + 10 min) and a random `jti`, each unless `overrides` gives it.
    /// An override of `null` removes the claim.
    pub fn claims(&self, overrides: Value) -> Value {
        let now = now();
        let mut claims = json!({
            "iss": self.shared.issuer,
            "aud": DEFAULT_AUDIENCE,
            "sub": DEFAULT_SUBJECT,
            "iat": now,
            "exp": now + 600,
            "jti": random_hex(16),
        });
        merge(&mut claims, overrides);
        claims
    }

    /// A token signed with the current key, `kid` set, defaults filled.
    pub fn mint(&self, claims: Value) -> String {
        self.mint_with_header(json!({}), claims)
    }

    /// [`mint`](Self::mint) with header fields changed: `header` is merged over
    /// `{"alg", "typ": "JWT", "kid"}` (`null` removes a field). The signature
    /// is made with the current key whatever the header says (see [`SigningKey::sign`]).
    pub fn mint_with_header(&self, header: Value, claims: Value) -> String {
        self.mint_with_key(&self.current_key(), header, claims)
    }

    /// Like [`mint_with_header`](Self::mint_with_header), signed with `key`
    /// (which need not be published) and its kid unless `header` sets one.
    pub fn mint_with_key(&self, key: &SigningKey, header: Value, claims: Value) -> String {
        let mut full = json!({"alg": format!("{:?}", key.alg), "typ": "JWT", "kid": key.kid});
        merge(&mut full, header);
        key.sign(&full, &self.claims(claims))
    }

    /// The issuer's entry for a broker config: name, issuer URL, audiences
    /// `[DEFAULT_AUDIENCE]`, algorithms (RS256 or ES256), `danger_allow_insecure: true`.
    pub fn issuer_yaml(&self, name: &str) -> String {
        self.issuer_yaml_with(name, "")
    }

    /// [`issuer_yaml`](Self::issuer_yaml) plus `extra` keys (written at column 0,
    /// e.g. `"replay: reusable"`); a key in `extra` replaces the default one.
    pub fn issuer_yaml_with(&self, name: &str, extra: &str) -> String {
        let extra = crate::config::dedent(extra);
        let extra_keys: Vec<&str> = extra
            .lines()
            .filter(|l| !l.starts_with(' ') && l.contains(':'))
            .filter_map(|l| l.split(':').next())
            .collect();
        let alg = match self.kind {
            KeyKind::Rsa => "RS256",
            KeyKind::Ec => "ES256",
        };
        let defaults = [
            ("issuer", self.shared.issuer.clone()),
            ("audiences", format!("[{DEFAULT_AUDIENCE}]")),
            ("algorithms", format!("[{alg}]")),
            ("danger_allow_insecure", "true".to_owned()),
        ];
        let mut out = format!("- name: {name}\n");
        for (key, value) in defaults {
            if !extra_keys.contains(&key) {
                out.push_str(&format!("  {key}: {value}\n"));
            }
        }
        for line in extra.lines() {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Merge `overrides` into `base` (objects, one level): `null` removes.
fn merge(base: &mut Value, overrides: Value) {
    let Value::Object(overrides) = overrides else {
        panic!("overrides must be a JSON object, got {overrides}");
    };
    let base = base.as_object_mut().expect("base is an object");
    for (key, value) in overrides {
        if value.is_null() {
            base.remove(&key);
        } else {
            base.insert(key, value);
        }
    }
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "outage").into_response()
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_requests.fetch_add(1, Ordering::SeqCst);
    if shared.outage.load(Ordering::SeqCst) {
        return unavailable();
    }
    let issuer = shared
        .discovery_issuer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| shared.issuer.clone());
    let algs: Vec<String> = shared.keys().iter().map(|k| format!("{:?}", k.alg)).collect();
    axum::Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/jwks.json", shared.issuer),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if shared.outage.load(Ordering::SeqCst) {
        return unavailable();
    }
    let keys: Vec<Value> = shared.keys().iter().map(|k| k.jwk()).collect();
    axum::Json(json!({ "keys": keys })).into_response()
}

async fn fallback(State(shared): State<Arc<Shared>>) -> Response {
    if shared.outage.load(Ordering::SeqCst) {
        return unavailable();
    }
    StatusCode::NOT_FOUND.into_response()
}
