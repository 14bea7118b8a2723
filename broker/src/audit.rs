//! The audit stream (contract §6): one JSON line per decision, to `audit.path` or stderr.
//! Never a whole token: incoming tokens are named by `jti` or SHA-256.
//!
//! Requests never write: a record is serialised by the request and queued (bounded, at
//! most [`QUEUE_RECORDS`] lines) to one writer thread, which writes whatever has queued
//! up with one `write` call (group commit). A request is answered only once its record
//! is written: like Vault's audit devices, no token leaves the broker before the line
//! that records it, and under load one `write` carries the lines of many requests. The
//! request's task waits without holding a worker thread. When the queue is full, new
//! records wait for room (back-pressure, counted in `fedbroker_audit_queue_full_total`):
//! no record is ever dropped. [`AuditLog::flush`] waits until everything queued before it
//! is written; the server calls it when it stops.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// One decision.
#[derive(Debug, Default, Serialize)]
pub struct AuditRecord<'a> {
    pub time: String,
    pub event: &'static str,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    /// The requested target(s): a string when one, else a list (like `aud`).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub target: serde_json::Value,
    /// Instead of `target` for a request refused before its subject token verified:
    /// SHA-256 (hex) of the JSON array of the requested targets, so an unauthenticated
    /// caller cannot write what it likes, at any length, into the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<&'a str>,
    /// The issuer's kind, and the claims that kind says are worth recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// The cloud native credentials were requested from (`aws`, `gcp`, `azure`); its
    /// answer is never recorded, its refusal is in `reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<&'a str>,
    /// The request's `grant_type` (the token exchange, `client_credentials` or
    /// `jwt-bearer`), once its form parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<&'a str>,
    /// The RFC 7638 thumbprint of the request's DPoP proof key, once it verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<&'a str>,
    /// What became of the proof's `jti` in the replay store (as `replay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpop_replay: Option<&'a str>,
    /// SHA-256 (hex) of the mutual-TLS client certificate the request came with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_sha256: Option<&'a str>,
    /// The request's `X-Request-Id` ([`crate::request_id`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    /// The replica that answered (`FEDBROKER_REPLICA`, else the host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<&'a str>,
}

/// At most this many records wait for the writer; beyond, requests wait for room.
pub const QUEUE_RECORDS: usize = 16_384;
/// The writer writes at most this many bytes per `write` call.
const BATCH_BYTES: usize = 256 * 1024;

enum Sink {
    Stderr,
    File(File),
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stderr => std::io::stderr().lock().write_all(bytes),
            Sink::File(f) => f.write_all(bytes),
        }
    }
}

enum Message {
    /// A line, and who waits for it to be written.
    Line(Vec<u8>, Waiter),
    /// Answered once every line queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Who waits for a line to be written: a request's task, a thread that cannot await,
/// or no one (only when the queue was full for a thread that cannot await).
enum Waiter {
    Task(oneshot::Sender<()>),
    Thread(std::sync::mpsc::SyncSender<()>),
    None,
}

impl Waiter {
    fn written(self) {
        match self {
            Waiter::Task(done) => {
                let _ = done.send(());
            }
            Waiter::Thread(done) => {
                let _ = done.send(());
            }
            Waiter::None => {}
        }
    }
}

/// The audit log: a queue to its writer thread. The thread ends when the log is dropped,
/// after writing what was queued.
pub struct AuditLog {
    queue: mpsc::Sender<Message>,
    queue_full: Counter,
    /// With the console on: decisions shown live once written ([`AuditLog::tap`]).
    tap: std::sync::OnceLock<DecisionTap>,
}

/// How many recent decisions the tap keeps for a page that opens.
pub const TAP_RECENT: usize = 200;

/// Decisions' audit lines as they are written, for the console's live tail: the last
/// [`TAP_RECENT`] kept, and each sent to whoever listens. A listener that falls behind
/// loses lines (and is told), never slows a request.
pub struct DecisionTap {
    sender: tokio::sync::broadcast::Sender<std::sync::Arc<str>>,
    recent: std::sync::Mutex<std::collections::VecDeque<std::sync::Arc<str>>>,
}

impl DecisionTap {
    fn new() -> DecisionTap {
        DecisionTap {
            sender: tokio::sync::broadcast::channel(1024).0,
            recent: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(TAP_RECENT)),
        }
    }

    fn push(&self, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            return;
        };
        let text: std::sync::Arc<str> = std::sync::Arc::from(text.trim_end());
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == TAP_RECENT {
                recent.pop_front();
            }
            recent.push_back(text.clone());
        }
        let _ = self.sender.send(text);
    }

    /// The recent decisions, oldest first.
    pub fn recent(&self) -> Vec<std::sync::Arc<str>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }

    /// A receiver of the decisions to come.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<str>> {
        self.sender.subscribe()
    }
}

impl AuditLog {
    /// Audit lines on stderr.
    pub fn stderr(metrics: &Metrics) -> std::io::Result<Self> {
        Self::start(Sink::Stderr, metrics)
    }

    /// Audit lines appended to `path` (its directory made when missing).
    pub fn file(path: &Path, metrics: &Metrics) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Self::start(Sink::File(f), metrics)
    }

    fn start(sink: Sink, metrics: &Metrics) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel(QUEUE_RECORDS);
        let write_errors = metrics.audit_write_errors();
        std::thread::Builder::new()
            .name("fedbroker-audit".into())
            .spawn(move || writer(sink, rx, write_errors))?;
        Ok(AuditLog {
            queue,
            queue_full: metrics.audit_queue_full(),
            tap: std::sync::OnceLock::new(),
        })
    }

    /// Queue a decision's line and wait until it is written.
    pub async fn record(&self, rec: &AuditRecord<'_>) {
        let Ok(line) = line(rec) else { return };
        // Only decisions reach the console's tail: logins and the like never push
        // them out of its recent ones.
        let tapped = self
            .tap
            .get()
            .filter(|_| rec.event == "token_exchange")
            .map(|tap| (tap, line.clone()));
        let (done, written) = oneshot::channel();
        self.send(Message::Line(line, Waiter::Task(done))).await;
        let _ = written.await;
        if let Some((tap, line)) = tapped {
            tap.push(&line);
        }
    }

    /// Start keeping decisions for the console (once; later calls change nothing).
    pub fn enable_tap(&self) {
        let _ = self.tap.set(DecisionTap::new());
    }

    /// The decision tap, when enabled.
    pub fn tap(&self) -> Option<&DecisionTap> {
        self.tap.get()
    }

    /// Any other audited event (admin changes, rare), as one JSON line, written before
    /// this returns; callable where nothing can be awaited (the thread waits, as long
    /// as one write takes). When the queue is full, the line waits for room in a task
    /// of its own (or, outside the runtime, this thread waits) and this returns at once.
    pub fn record_value(&self, value: &serde_json::Value) {
        let Ok(line) = line(value) else { return };
        let (done, written) = std::sync::mpsc::sync_channel(1);
        let message = match self.queue.try_send(Message::Line(line, Waiter::Thread(done))) {
            Ok(()) => {
                let _ = written.recv();
                return;
            }
            Err(mpsc::error::TrySendError::Full(Message::Line(line, _))) => Message::Line(line, Waiter::None),
            Err(_) => return,
        };
        self.queue_full.inc();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let queue = self.queue.clone();
                runtime.spawn(async move { queue.send(message).await });
            }
            Err(_) => {
                let _ = self.queue.blocking_send(message);
            }
        }
    }

    async fn send(&self, message: Message) {
        let message = match self.queue.try_send(message) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(message)) => message,
            // The writer is gone only if it could not run at all; nothing to wait for.
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        };
        self.queue_full.inc();
        let _ = self.queue.send(message).await;
    }

    /// Wait until every line queued before this call is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

fn line<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(512);
    serde_json::to_writer(&mut line, value)?;
    line.push(b'\n');
    Ok(line)
}

/// The writer thread: take what has queued up (up to [`BATCH_BYTES`]), write it in one
/// call, then tell whoever waits on those lines (or on a flush); end when every sender
/// is gone. A failed write is logged and counted, and its waiters are answered all the
/// same (as before the queue: the request's answer does not depend on the audit sink).
fn writer(mut sink: Sink, mut rx: mpsc::Receiver<Message>, write_errors: Counter) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut waiting: Vec<Waiter> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line, waiter) => {
                    batch.extend_from_slice(&line);
                    waiting.push(waiter);
                }
                Message::Flush(done) => waiting.push(Waiter::Task(done)),
            }
            if batch.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = sink.write(&batch) {
                write_errors.inc();
                tracing::error!(error = %e, bytes = batch.len(), "writing the audit log failed");
            }
            batch.clear();
            if batch.capacity() > 4 * BATCH_BYTES {
                batch.shrink_to(BATCH_BYTES);
            }
        }
        for waiter in waiting.drain(..) {
            waiter.written();
        }
    }
}

/// RFC 3339 UTC time with milliseconds.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_900_000_123);
        assert_eq!(rfc3339(t), "2026-11-28T21:06:40.123Z");
    }

    #[tokio::test]
    async fn writes_one_json_line_per_record_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/audit.jsonl");
        let metrics = Metrics::new();
        let log = AuditLog::file(&path, &metrics).expect("open");
        log.record(&AuditRecord {
            outcome: "allow",
            event: "token_exchange",
            rule: Some("r"),
            ..Default::default()
        })
        .await;
        for i in 0..1000 {
            let rule = format!("r{i}");
            log.record(&AuditRecord {
                outcome: "deny",
                event: "token_exchange",
                rule: Some(&rule),
                reason: Some("x"),
                ..Default::default()
            })
            .await;
        }
        log.flush().await;
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 1001);
        assert_eq!(lines[0]["outcome"], "allow");
        assert_eq!(lines[1]["reason"], "x");
        for (i, line) in lines[1..].iter().enumerate() {
            assert_eq!(line["rule"], format!("r{i}"));
        }
    }

    /// Both kinds of record are in the file when the call returns: a decision's after
    /// its `await`, an admin event's (from a runtime thread) at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_are_written_when_the_call_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::file(&path, &Metrics::new()).expect("open");
        for i in 0..50 {
            log.record_value(&serde_json::json!({"event": "admin_change", "n": i}));
            let text = std::fs::read_to_string(&path).expect("read");
            assert_eq!(text.lines().count(), 2 * i + 1, "{text}");
            assert!(text.ends_with(&format!("\"n\":{i}}}\n")), "{text}");
            log.record(&AuditRecord {
                outcome: "allow",
                event: "token_exchange",
                ..Default::default()
            })
            .await;
            let text = std::fs::read_to_string(&path).expect("read");
            assert_eq!(text.lines().count(), 2 * i + 2, "{text}");
        }
    }
}
