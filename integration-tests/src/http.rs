//! What a test says to a broker over HTTP, and what it reads back: the same calls
//! whether the broker is a process ([`crate::Broker`], over the network) or a router
//! in this process ([`crate::in_process::InProcess`], through `tower::ServiceExt::oneshot`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use broker::client_cert::ClientCert;
use jsonwebtoken::jwk::JwkSet;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tower::ServiceExt;

use crate::tokens::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_JWT};

/// An HTTP answer: status, headers, body text and (when it parses) JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON; `Value::Null` when it is not JSON.
    pub json: Value,
}

impl Reply {
    fn new(status: u16, headers: HeaderMap, text: String) -> Reply {
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// Reads a whole response: status, headers, body text and (when it parses) JSON.
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        Reply::new(status, headers, text)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `access_token` of a 200 answer; panics with the answer otherwise.
    pub fn access_token(&self) -> &str {
        assert_eq!(self.status, 200, "expected a token, got {self:?}");
        self.json["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {}", self.text))
    }

    /// Assert an error answer per RFC 6749 §5.2: the status, `error`, a string
    /// `error_description`, and no trace of `secret` (a token) in the body.
    pub fn assert_error(&self, status: u16, error: &str, secret: &str) {
        assert_eq!(
            (self.status, self.json["error"].as_str()),
            (status, Some(error)),
            "unexpected answer: {} {}",
            self.status,
            self.text
        );
        assert!(
            self.json["error_description"].is_string(),
            "error_description missing: {}",
            self.text
        );
        if !secret.is_empty() {
            assert!(
                !self.text.contains(secret),
                "the error answer echoes the token: {}",
                self.text
            );
        }
    }
}

/// How requests reach the broker.
#[derive(Clone)]
enum Transport {
    /// A broker process, over the network.
    Network(reqwest::Client),
    /// The broker's router in this process.
    Router(axum::Router),
}

/// A broker to talk HTTP to: its public URL, a way to reach it, and its directory
/// (config, keys/, audit.jsonl and, for a process, stderr.log). [`crate::Broker`] and
/// [`crate::in_process::InProcess`] dereference to it.
#[derive(Clone)]
pub struct Http {
    public_url: String,
    transport: Transport,
    dir: PathBuf,
}

impl Http {
    /// A broker process over the network, with `client`.
    pub fn network(public_url: String, client: reqwest::Client, dir: PathBuf) -> Http {
        Http {
            public_url,
            transport: Transport::Network(client),
            dir,
        }
    }

    /// Through `router` in this process; paths are under `public_url`'s path, as they
    /// are for a process.
    pub fn router(public_url: String, router: axum::Router, dir: PathBuf) -> Http {
        Http {
            public_url,
            transport: Transport::Router(router),
            dir,
        }
    }

    /// The broker's directory (config, keys/, audit.jsonl, stderr.log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the broker process wrote to stderr so far (nothing in process: its logs
    /// are this test's).
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// Every line of the audit file as JSON (panics on a line that is not JSON).
    pub fn audit_lines(&self) -> Vec<Value> {
        self.audit_text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
            .collect()
    }

    /// The raw audit file.
    pub fn audit_text(&self) -> String {
        fs::read_to_string(self.audit_path()).unwrap_or_default()
    }

    /// Poll stderr until it has a line containing `needle` (10 s; log lines are written
    /// by the broker's log thread, a moment after the event); answers all of stderr.
    pub async fn wait_for_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.stderr();
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Poll the audit file until it has at least `n` lines (10 s).
    pub async fn wait_for_audit_lines(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.audit_lines();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The public URL (`server.public_url`): `iss` of issued tokens, base of every path.
    pub fn url(&self) -> &str {
        &self.public_url
    }

    /// `url() + path`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// Send one request to `url() + path` and read the whole answer; panics (with the
    /// broker's stderr, for a process) when no answer comes.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        self.send_inner(method, path, headers, body, None).await
    }

    /// POST form `pairs` to `/token` with extra `headers` (repeats allowed) and, for a
    /// broker in process only, `client_cert` in the request's extensions, as the TLS
    /// listener hands a verified client certificate to requests.
    pub async fn token_request_with(
        &self,
        pairs: &[(&str, &str)],
        headers: &[(&str, &str)],
        client_cert: Option<Arc<ClientCert>>,
    ) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.send_inner(Method::POST, "/token", &all, Some(body.into_bytes()), client_cert)
            .await
    }

    async fn send_inner(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        client_cert: Option<Arc<ClientCert>>,
    ) -> Reply {
        let url = self.endpoint(path);
        match &self.transport {
            Transport::Network(_) if client_cert.is_some() => {
                panic!("a client certificate can be handed to a broker in process only")
            }
            Transport::Network(client) => {
                let mut request = client.request(method.clone(), &url);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                if let Some(body) = body {
                    request = request.body(body);
                }
                match request.send().await {
                    Ok(response) => Reply::read(response).await,
                    Err(e) => panic!("{method} {url}: {e}\n{}", self.stderr()),
                }
            }
            Transport::Router(router) => {
                // The router sees the path (and query) only, as it does behind a listener.
                let parsed = reqwest::Url::parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
                let uri = match parsed.query() {
                    Some(query) => format!("{}?{query}", parsed.path()),
                    None => parsed.path().to_owned(),
                };
                let mut request = axum::http::Request::builder().method(method.clone()).uri(uri);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                let mut request = request
                    .body(Body::from(body.unwrap_or_default()))
                    .expect("request");
                if let Some(cert) = client_cert {
                    request.extensions_mut().insert(cert);
                }
                let response = router
                    .clone()
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap_or_else(|e| panic!("{method} {url}: body: {e}"));
                Reply::new(status, headers, String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }

    /// POST form `pairs` (repeats allowed) to `/token`.
    pub async fn token_request(&self, pairs: &[(&str, &str)]) -> Reply {
        self.post_form("/token", pairs).await
    }

    /// A plain exchange: JWT subject token for one audience.
    pub async fn exchange(&self, subject_token: &str, audience: &str) -> Reply {
        self.token_request(&exchange_form(subject_token, audience)).await
    }

    /// A plain exchange of `subject_token` for `audience` that must be refused: `status`
    /// with `error`, per [`Reply::assert_error`], not echoing the token. Returns the answer.
    pub async fn exchange_refused(
        &self,
        subject_token: &str,
        audience: &str,
        status: u16,
        error: &str,
    ) -> Reply {
        let reply = self.exchange(subject_token, audience).await;
        reply.assert_error(status, error, subject_token);
        reply
    }

    /// POST form `pairs` (repeats allowed), `application/x-www-form-urlencoded`.
    pub async fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let content_type = "application/x-www-form-urlencoded";
        self.post_raw(path, Some(content_type), body.into_bytes()).await
    }

    /// POST an arbitrary body with an arbitrary content type (none when `None`).
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
        let headers: Vec<(&str, &str)> = content_type.map(|c| ("content-type", c)).into_iter().collect();
        self.send(Method::POST, path, &headers, Some(body)).await
    }

    /// Any method on `url() + path`, without a body.
    pub async fn request(&self, method: Method, path: &str) -> Reply {
        self.send(method, path, &[], None).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path).await
    }

    /// An admin API request with `Bearer token`, extra headers and an optional JSON
    /// body.
    pub async fn admin_request(
        &self,
        token: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let authorization = format!("Bearer {token}");
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        self.send_authorized(Some(&authorization), method, path, headers, body)
            .await
    }

    /// A request with `authorization` as the `Authorization` header (none when `None`),
    /// extra headers and an optional body sent as `application/json` (any bytes).
    pub async fn send_authorized(
        &self,
        authorization: Option<&str>,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut all: Vec<(&str, &str)> = authorization.map(|a| ("authorization", a)).into_iter().collect();
        all.extend_from_slice(headers);
        if body.is_some() {
            all.push(("content-type", "application/json"));
        }
        self.send(method, path, &all, body).await
    }

    /// `GET /jwks.json`, parsed by jsonwebtoken.
    pub async fn jwks(&self) -> JwkSet {
        let reply = self.get("/jwks.json").await;
        assert_eq!(reply.status, 200, "GET /jwks.json: {reply:?}");
        serde_json::from_str(&reply.text)
            .unwrap_or_else(|e| panic!("jsonwebtoken cannot read the JWKS ({e}): {}", reply.text))
    }
}

/// The form of a plain exchange: token-exchange grant, a JWT subject token, one audience.
pub fn exchange_form<'a>(subject_token: &'a str, audience: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", TOKEN_TYPE_JWT),
        ("audience", audience),
    ]
}
