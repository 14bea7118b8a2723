//! The HTTP listeners (the public one and `admin.listen`): HTTP/1.1 served by hyper's
//! connection builder, so that one slow or idle client cannot hold a listener.
//!
//! - `server.header_timeout`: a request's headers must arrive within this, counted
//!   from when the connection starts waiting for them; an idle keep-alive connection is
//!   waiting for headers too, so it is closed after the same time.
//! - `server.body_timeout`: once the headers are in, the body must arrive within this;
//!   otherwise the answer is `408` (`invalid_request`) and the connection is closed.
//! - `server.max_connections`: connections open at once on this listener. The next
//!   connection is not accepted until one closes: it waits in the kernel's accept
//!   backlog (the timeouts above bound how long any connection holds its slot).
//!
//! - With TLS ([`crate::tls`]), the handshake must also finish within
//!   `server.header_timeout`; it runs on the connection's own task, never in the accept
//!   loop. A verified client certificate is put in each request's extensions as an
//!   `Arc<ClientCert>`.
//!
//! Shutdown: the listener closes at once, idle connections close, requests in flight
//! finish (the caller bounds how long that may take).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::client_cert::ClientCert;
use crate::config::ConnectionLimits;
use crate::tls::TlsServer;

/// Serve `router` on `listener` under `limits` (over TLS when `tls` is given) until
/// `shutdown` resolves; then stop accepting, close idle connections and return once
/// every request in flight is done.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<TlsServer>>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut full_logged = false;
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !full_logged {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait until one closes"
                    );
                    full_logged = true;
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    drop(slot);
                    if !is_connection_error(&e) {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::error!(error = %e, "accepting a connection failed; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
        };
        if slots.available_permits() > limits.max_connections / 2 {
            full_logged = false;
        }
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = |client_cert| RequestService {
                router,
                body_timeout: limits.body_timeout,
                client_cert,
                peer: PeerAddr(peer),
            };
            let result = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service(None));
                    watcher.watch(conn).await
                }
                Some(tls) => {
                    let accept = tls.acceptor().accept(stream);
                    let stream = match tokio::time::timeout(limits.header_timeout, accept).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            // No certificate when one is required, one that does not
                            // verify, a plain-HTTP client: the client's problem.
                            tracing::debug!(error = %e, "TLS handshake failed");
                            drop(slot);
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake did not finish within server.header_timeout");
                            drop(slot);
                            return;
                        }
                    };
                    let client_cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|der| crate::tls::client_cert(der))
                        .map(Arc::new);
                    let conn = builder.serve_connection(TokioIo::new(stream), service(client_cert));
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                // Header timeouts, resets, malformed requests: the client's problem.
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Accept errors that concern one connection only (the next accept may succeed).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// The router behind hyper, with every request body under the body deadline.
#[derive(Clone)]
struct RequestService {
    router: Router,
    body_timeout: Duration,
    /// The connection's verified client certificate (mutual TLS).
    client_cert: Option<Arc<ClientCert>>,
    peer: PeerAddr,
}

/// The address a connection came from, in each request's extensions (rate limits per
/// client address). Behind a proxy, it is the proxy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<axum::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut router = self.router.clone();
        let body_timeout = self.body_timeout;
        let client_cert = self.client_cert.clone();
        let peer = self.peer;
        Box::pin(async move {
            let timed_out = Arc::new(AtomicBool::new(false));
            let mut req = req.map(|body| DeadlineBody::new(body, body_timeout, timed_out.clone()));
            if let Some(cert) = client_cert {
                req.extensions_mut().insert(cert);
            }
            req.extensions_mut().insert(peer);
            let response = tower_service::Service::call(&mut router, req).await?;
            if timed_out.load(Ordering::Acquire) {
                return Ok(body_timeout_response(body_timeout));
            }
            Ok(response)
        })
    }
}

/// `408` for a body that did not arrive in time; the connection closes after it.
fn body_timeout_response(limit: Duration) -> Response<axum::body::Body> {
    let body = serde_json::json!({
        "error": "invalid_request",
        "error_description": format!("the request body did not arrive within {}s", limit.as_secs()),
    });
    let mut resp = (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A request body that fails once `limit` has passed since the request's headers
/// arrived while the client still owes data. Bytes that did arrive in time are never
/// refused, however late the handler reads them.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    timed_out: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration, timed_out: Arc<AtomicBool>) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            timed_out,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0}s")]
struct BodyTimeout(u64);

/// Whether reading a request body failed because `server.body_timeout` passed (the
/// client will be answered 408 whatever the handler returns; this lets the handler
/// record the right reason). `None` when `err` is another error.
pub fn body_timeout_message(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(timeout) = e.downcast_ref::<BodyTimeout>() {
            return Some(timeout.to_string());
        }
        current = e.source();
    }
    None
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Release);
                    Poll::Ready(Some(Err(BodyTimeout(this.limit.as_secs()).into())))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
