//! The audit stream (contract §6): one JSON line per decision, to `audit.path` or stderr.
//! Never a whole token: incoming tokens are named by `jti` or SHA-256.
//!
//! Requests never write: a record is serialised by the request and queued (bounded, at
//! most [`QUEUE_RECORDS`] lines; only an event recorded from outside the runtime goes in
//! over it) to one writer thread, which writes whatever has queued up with one `write`
//! call (group commit). A request is answered only once its record is written: like Vault's
//! audit devices, no token leaves the broker before the line that records it, and under
//! load one `write` carries the lines of many requests. The request's task waits without
//! holding a worker thread. When the queue is full, new records wait for room
//! (back-pressure, counted in `fedbroker_audit_queue_full_total`): no record is ever
//! dropped. [`AuditLog::flush`] waits until everything queued before it is written; the
//! server calls it when it stops.
//!
//! A token request says when it starts minting ([`AuditLog::expect_record`]): from
//! there its line is a few tens of microseconds of work away (unless its signer is
//! remote; a request asking a cloud for credentials stops being awaited while it
//! does). While such a line is still to come, the writer waits for it before writing,
//! at most [`LINGER`] after the batch's first line (PostgreSQL's `commit_delay`, ended as
//! soon as the last awaited line is queued or its request goes away). A request alone is
//! written at once, as before. Under load the writer wakes once for many lines instead
//! of once for one or two: on a machine with few cores each of those wakes took a core
//! from a request (docs/performance.md).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::{Semaphore, TryAcquireError, oneshot};

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
/// How long the writer waits, after a batch's first line, for the lines of the token
/// requests still in flight.
pub const LINGER: Duration = Duration::from_millis(1);

enum Sink {
    Stderr,
    File(File),
    #[cfg(test)]
    Other(Box<dyn Write + Send>),
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stderr => std::io::stderr().lock().write_all(bytes),
            Sink::File(f) => f.write_all(bytes),
            #[cfg(test)]
            Sink::Other(w) => w.write_all(bytes),
        }
    }
}

enum Message {
    /// A line, who waits for it to be written, and whether it holds a place in the
    /// queue (a permit of [`Shared::room`]).
    Line(Vec<u8>, Waiter, bool),
    /// Answered once every line queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// What the log, its writer thread and the requests in flight share.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer: a first line, a flush or a waiting thread, or the last line
    /// it was waiting for.
    wake: Condvar,
    /// Places in the queue, [`QUEUE_RECORDS`] of them. Closed when the writer ends.
    room: Semaphore,
    /// At most this long from a batch's first line to its write ([`LINGER`]).
    linger: Duration,
}

#[derive(Default)]
struct Queue {
    messages: Vec<Message>,
    /// When the first of `messages` was queued.
    first_at: Option<Instant>,
    /// Token requests that will queue a line and have not yet ([`Expected`]).
    expected: usize,
    /// A flush or a thread waits: write without lingering.
    urgent: bool,
    /// The log is gone: write what is queued and end.
    closed: bool,
    /// The writer has ended (only if it panicked, while the log lives): nothing more
    /// is written, and whoever would wait for a line is answered at once.
    dead: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `message`; `expected`, the request's own guard, ends as the line goes in.
    fn push(&self, message: Message, expected: Option<Expected>) {
        let mut queue = self.lock();
        if let Some(mut expected) = expected {
            expected.spent = true;
            queue.expected = queue.expected.saturating_sub(1);
        }
        if queue.dead {
            drop(queue);
            message.answer();
            return;
        }
        let first = queue.messages.is_empty();
        if first {
            queue.first_at = Some(Instant::now());
        }
        queue.urgent |= matches!(
            message,
            Message::Flush(_) | Message::Line(_, Waiter::Thread(_), _)
        );
        queue.messages.push(message);
        let wake = first || queue.urgent || !self.worth_waiting(&queue);
        drop(queue);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Whether the writer should wait for more lines: a token request that is minting
    /// has yet to queue its line (it is being worked on, most likely on a core that
    /// waking the writer would take from it). Never while the queue is full.
    fn worth_waiting(&self, queue: &Queue) -> bool {
        queue.expected > 0 && self.room.available_permits() > 0
    }

    /// Wait for a place in the queue (counted in `full` when there is none at once);
    /// `false` once the writer has ended.
    async fn room(&self, full: &Counter) -> bool {
        let permit = match self.room.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                full.inc();
                match self.room.acquire().await {
                    Ok(permit) => permit,
                    Err(_) => return false,
                }
            }
            Err(TryAcquireError::Closed) => return false,
        };
        permit.forget();
        true
    }
}

/// A token request in flight that will write an audit line
/// ([`AuditLog::expect_record`]). It ends when its line is queued
/// ([`AuditLog::record_expected`]), or when dropped (a request that went away).
pub struct Expected {
    shared: Arc<Shared>,
    spent: bool,
}

impl Drop for Expected {
    fn drop(&mut self) {
        if self.spent {
            return;
        }
        let mut queue = self.shared.lock();
        queue.expected = queue.expected.saturating_sub(1);
        let wake = !queue.messages.is_empty() && !self.shared.worth_waiting(&queue);
        drop(queue);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

impl Message {
    /// Tell whoever waits, without writing (the writer has ended).
    fn answer(self) {
        match self {
            Message::Line(_, waiter, _) => waiter.written(),
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
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
    shared: Arc<Shared>,
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
        Self::start_with(sink, metrics, QUEUE_RECORDS, LINGER)
    }

    fn start_with(sink: Sink, metrics: &Metrics, places: usize, linger: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            room: Semaphore::new(places),
            linger,
        });
        let write_errors = metrics.audit_write_errors();
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("fedbroker-audit".into())
            .spawn(move || writer(sink, theirs, &write_errors))?;
        Ok(AuditLog {
            shared,
            queue_full: metrics.audit_queue_full(),
            tap: std::sync::OnceLock::new(),
        })
    }

    /// A token request is about to write its line (it starts minting): until that line
    /// is queued ([`AuditLog::record_expected`]) or the guard dropped, the writer may
    /// wait for it, up to [`LINGER`] after a batch's first line.
    pub fn expect_record(&self) -> Expected {
        self.shared.lock().expected += 1;
        Expected {
            shared: self.shared.clone(),
            spent: false,
        }
    }

    /// Queue a decision's line and wait until it is written.
    pub async fn record(&self, rec: &AuditRecord<'_>) {
        self.record_expected(None, rec).await;
    }

    /// [`AuditLog::record`] for a request that said it would ([`AuditLog::expect_record`]).
    pub async fn record_expected(&self, expected: Option<Expected>, rec: &AuditRecord<'_>) {
        let Ok(line) = line(rec) else { return };
        // Only decisions reach the console's tail: logins and the like never push
        // them out of its recent ones.
        let tapped = self
            .tap
            .get()
            .filter(|_| rec.event == "token_exchange")
            .map(|tap| (tap, line.clone()));
        let (done, written) = oneshot::channel();
        if !self.shared.room(&self.queue_full).await {
            return;
        }
        self.shared
            .push(Message::Line(line, Waiter::Task(done), true), expected);
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
    /// as one write takes: the writer does not linger for it). When the queue is full,
    /// the line waits for room in a task of its own and this returns at once; outside
    /// the runtime (nothing to wait in), it goes in over the bound rather than be lost.
    pub fn record_value(&self, value: &serde_json::Value) {
        let Ok(line) = line(value) else { return };
        match self.shared.room.try_acquire() {
            Ok(permit) => {
                permit.forget();
                let (done, written) = std::sync::mpsc::sync_channel(1);
                self.shared
                    .push(Message::Line(line, Waiter::Thread(done), true), None);
                let _ = written.recv();
                return;
            }
            Err(TryAcquireError::NoPermits) => {}
            // The writer has ended: nothing is written any more.
            Err(TryAcquireError::Closed) => return,
        }
        self.queue_full.inc();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let shared = self.shared.clone();
                let full = self.queue_full.clone();
                // The task's share of the log keeps the writer until the line is in.
                runtime.spawn(async move {
                    if shared.room(&full).await {
                        shared.push(Message::Line(line, Waiter::None, true), None);
                    }
                });
            }
            Err(_) => self.shared.push(Message::Line(line, Waiter::None, false), None),
        }
    }

    /// Wait until every line queued before this call is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        self.shared.push(Message::Flush(done), None);
        let _ = written.await;
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

fn line<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(512);
    serde_json::to_writer(&mut line, value)?;
    line.push(b'\n');
    Ok(line)
}

/// The writer thread: wait for a line, then for the lines of the token requests in
/// flight while [`Shared::worth_waiting`] says so (at most the linger after the batch's
/// first line; not at all for a flush or a waiting thread), take what has queued up and
/// write it (at most [`BATCH_BYTES`] a call), then tell whoever waits on those lines
/// (or on a flush) and give their places back. It ends once the log is dropped, nothing
/// else holds a share of it (a task still waiting for room, a request's [`Expected`]:
/// it looks again every 10 ms) and everything queued is written. A failed write is
/// logged and counted, and its waiters are answered all the same (as before the queue:
/// the request's answer does not depend on the audit sink).
fn writer(mut sink: Sink, shared: Arc<Shared>, write_errors: &Counter) {
    /// However the writer ends, nobody waits for it afterwards.
    struct Ending<'a>(&'a Shared);
    impl Drop for Ending<'_> {
        fn drop(&mut self) {
            let mut queue = self.0.lock();
            queue.dead = true;
            let messages = std::mem::take(&mut queue.messages);
            drop(queue);
            self.0.room.close();
            for message in messages {
                message.answer();
            }
        }
    }
    let _ending = Ending(&shared);
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut taken: Vec<Message> = Vec::new();
    let mut waiting: Vec<Waiter> = Vec::new();
    loop {
        {
            let mut queue = shared.lock();
            while queue.messages.is_empty() {
                if queue.closed {
                    // Tasks that wait for room hold a share: their lines come first.
                    if Arc::strong_count(&shared) == 1 {
                        return;
                    }
                    queue = shared
                        .wake
                        .wait_timeout(queue, Duration::from_millis(10))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                } else {
                    queue = shared.wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
                }
            }
            let first_at = queue.first_at.unwrap_or_else(Instant::now);
            while !queue.urgent
                && !queue.closed
                && shared.worth_waiting(&queue)
                && let Some(left) = shared
                    .linger
                    .checked_sub(first_at.elapsed())
                    .filter(|left| !left.is_zero())
            {
                queue = shared
                    .wake
                    .wait_timeout(queue, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut queue.messages, &mut taken);
            queue.first_at = None;
            queue.urgent = false;
        }
        let mut places = 0;
        let mut messages = taken.drain(..).peekable();
        while let Some(message) = messages.next() {
            match message {
                Message::Line(line, waiter, place) => {
                    batch.extend_from_slice(&line);
                    waiting.push(waiter);
                    places += usize::from(place);
                }
                Message::Flush(done) => waiting.push(Waiter::Task(done)),
            }
            if batch.len() < BATCH_BYTES && messages.peek().is_some() {
                continue;
            }
            if !batch.is_empty() {
                if let Err(e) = sink.write(&batch) {
                    write_errors.inc();
                    tracing::error!(error = %e, bytes = batch.len(), "writing the audit log failed");
                }
                batch.clear();
            }
            shared.room.add_permits(std::mem::take(&mut places));
            for waiter in waiting.drain(..) {
                waiter.written();
            }
        }
        drop(messages);
        if batch.capacity() > 4 * BATCH_BYTES {
            batch.shrink_to(BATCH_BYTES);
        }
        if taken.capacity() > QUEUE_RECORDS {
            taken.shrink_to(1024);
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

    /// A sink whose writes wait until the test opens it.
    struct Gated {
        open: Arc<(Mutex<bool>, Condvar)>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gated {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let (open, opened) = &*self.open;
            let mut is_open = open.lock().unwrap_or_else(PoisonError::into_inner);
            while !*is_open {
                is_open = opened.wait(is_open).unwrap_or_else(PoisonError::into_inner);
            }
            self.out
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// With the queue full, records wait for room, are counted, and none is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_makes_records_wait_and_loses_none() {
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let metrics = Metrics::new();
        let sink = Sink::Other(Box::new(Gated {
            open: open.clone(),
            out: out.clone(),
        }));
        let log = Arc::new(AuditLog::start_with(sink, &metrics, 2, LINGER).expect("start"));
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    let rule = format!("r{i}");
                    log.record(&AuditRecord {
                        outcome: "allow",
                        event: "token_exchange",
                        rule: Some(&rule),
                        ..Default::default()
                    })
                    .await;
                })
            })
            .collect();
        // Two places: the other four wait, and say so, while the sink is shut.
        let full = metrics.audit_queue_full();
        let deadline = Instant::now() + Duration::from_secs(30);
        while full.get() < 4 {
            assert!(
                Instant::now() < deadline,
                "only {} records found the queue full",
                full.get()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(tasks.iter().all(|t| !t.is_finished()), "nothing is written yet");
        *open.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        open.1.notify_all();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("every record is written once there is room")
                .expect("record");
        }
        assert_eq!(full.get(), 4);
        log.flush().await;
        assert_eq!(
            log.shared.room.available_permits(),
            2,
            "every place is given back once"
        );
        let text =
            String::from_utf8(out.lock().unwrap_or_else(PoisonError::into_inner).clone()).expect("UTF-8");
        let mut rules: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["rule"].to_string())
            .collect();
        rules.sort();
        assert_eq!(rules, (0..6).map(|i| format!("\"r{i}\"")).collect::<Vec<_>>());
    }

    fn exchange_record() -> AuditRecord<'static> {
        AuditRecord {
            outcome: "allow",
            event: "token_exchange",
            ..Default::default()
        }
    }

    /// A file log lingering `linger`, and its directory.
    fn lingering(linger: Duration) -> (Arc<AuditLog>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("audit.jsonl"))
            .expect("open");
        let log = AuditLog::start_with(Sink::File(f), &Metrics::new(), QUEUE_RECORDS, linger).expect("start");
        (Arc::new(log), dir)
    }

    /// A request whose line is still to come holds the others' back, the linger at most.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_in_flight_holds_lines_back_for_the_linger_at_most() {
        let linger = Duration::from_millis(200);
        let (log, _dir) = lingering(linger);
        let in_flight = log.expect_record();
        for _ in 0..2 {
            let started = Instant::now();
            let mine = log.expect_record();
            tokio::time::timeout(
                Duration::from_secs(30),
                log.record_expected(Some(mine), &exchange_record()),
            )
            .await
            .expect("written after the linger");
            assert!(started.elapsed() >= linger, "written before the linger ended");
        }
        drop(in_flight);
        // Nothing to wait for: at once (a request alone is never held back).
        let mine = log.expect_record();
        log.record_expected(Some(mine), &exchange_record()).await;
        assert_eq!(log.shared.lock().expected, 0);
    }

    /// The writer stops waiting as soon as the line it waits for comes, or its request
    /// goes away: not when the (here one-minute) linger ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_stops_waiting_when_the_awaited_line_comes_or_its_request_goes() {
        let (log, dir) = lingering(Duration::from_secs(60));
        for goes_away in [false, true] {
            let other = log.expect_record();
            let mine = log.expect_record();
            let task = tokio::spawn({
                let log = log.clone();
                async move { log.record_expected(Some(mine), &exchange_record()).await }
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            while log.shared.lock().messages.is_empty() {
                assert!(Instant::now() < deadline, "the line was not queued");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(
                !task.is_finished(),
                "held back while the other request is in flight"
            );
            if goes_away {
                drop(other);
            } else {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    log.record_expected(Some(other), &exchange_record()),
                )
                .await
                .expect("the awaited line is written at once");
            }
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("written without waiting out the linger")
                .expect("record");
        }
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("read");
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
