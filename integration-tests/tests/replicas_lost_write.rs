//! Issue 10, item 5: an admin write whose reply was lost, and which never reached Redis,
//! end to end (one `serve` process and a real `redis-server` spawned here).
//!
//! A proxy between the broker and Redis swallows the write (the compare-and-set `EVAL`)
//! and closes that connection, as a connection that breaks before the command gets
//! through does. The broker reads the change id back on its next connection: not in
//! `changes`, so it is cancelled in the same atomic step and the answer is 503 "not
//! applied, try again", audited `rejected`; nothing changed, and the client's retry of
//! the same PUT creates the item (201).
//!
//! Without `redis-server` this test fails naming it, unless
//! `FEDBROKER_SKIP_REDIS_TESTS=1` (see `integration_tests::redis_server`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use integration_tests::eventually;
use integration_tests::redis_server::{RedisServer, redis_available, resp_command};
use integration_tests::{Broker, BrokerConfig, FakeIssuer};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    ADMIN_TOKEN, HMAC_KEY, TARGET, admin_names, admin_send as send, change_lines, hget, issuer_body,
    rule_body,
};

/// A TCP proxy in front of one Redis that, once armed, drops the next `EVAL` (or
/// `EVALSHA`) command the broker sends, and closes that connection without forwarding
/// anything more in either direction: the command never reaches Redis and no reply
/// comes. Every other command, and every other connection (the broker's next one
/// included), passes through untouched.
struct SwallowProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    swallowed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SwallowProxy {
    async fn start(upstream_port: u16) -> SwallowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let armed = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(AtomicUsize::new(0));
        let (armed2, swallowed2) = (armed.clone(), swallowed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(relay(client, upstream_port, armed2.clone(), swallowed2.clone()));
            }
        });
        SwallowProxy {
            port,
            armed,
            swallowed,
            task,
        }
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn swallowed(&self) -> usize {
        self.swallowed.load(Ordering::SeqCst)
    }
}

impl Drop for SwallowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, upstream_port: u16, armed: Arc<AtomicBool>, swallowed: Arc<AtomicUsize>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Redis → broker, as it comes.
    let replies = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    // Broker → Redis, command by command.
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while !pending.is_empty() {
            let Some((len, parts)) = resp_command(&pending) else {
                if pending[0] != b'*' {
                    // Not RESP: pass it through as it is.
                    let _ = server_write.write_all(&pending).await;
                    pending.clear();
                }
                break;
            };
            let frame: Vec<u8> = pending.drain(..len).collect();
            let is_eval = parts.first().is_some_and(|name| {
                name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVALSHA")
            });
            if is_eval
                && armed
                    .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                // Dropped: Redis never sees it. Counted before the broker can see the
                // connection close (and answer); then both directions stop, and the
                // broker's side of the connection is closed when this task ends.
                swallowed.fetch_add(1, Ordering::SeqCst);
                replies.abort();
                return;
            }
            if server_write.write_all(&frame).await.is_err() {
                replies.abort();
                return;
            }
        }
    }
    replies.abort();
}

/// One broker, the admin API on its main listener, the replay marks and the admin state
/// in the Redis behind `proxy`.
fn config(proxy: &SwallowProxy) -> String {
    BrokerConfig::new()
        .top_level(format!(
            "replay:\n  backend: redis\n  redis_url: redis://127.0.0.1:{}\n  command_timeout: 1s\n\
             admin:\n  tokens: [\"{ADMIN_TOKEN}\"]\n  allow_insecure_issuers: true\n  \
             state_hmac_key: {HMAC_KEY}\n",
            proxy.port
        ))
        .render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_lost_before_it_reached_redis_is_read_back_as_not_applied_and_can_be_retried() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::start();
    let proxy = SwallowProxy::start(redis.port()).await;
    let fake = FakeIssuer::start();
    let broker = Broker::start(&config(&proxy)).await;
    eventually(Duration::from_secs(15), "/readyz 200", || async {
        (broker.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    let reply = send(
        &broker,
        Method::PUT,
        "/admin/v1/issuers/fake",
        &[],
        Some(&issuer_body(&fake)),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}\n{}", broker.stderr());
    let version = hget(&redis, "version");
    let changes = hget(&redis, "changes");
    assert_eq!(version, "1");

    // The write of r1 is dropped on its way to Redis and its connection closed: the
    // broker reads its change id back (on the connection it makes next), finds it not
    // applied and cancels it: 503, "not applied, try again".
    let create = [("if-none-match", "*")];
    proxy.arm();
    let reply = send(
        &broker,
        Method::PUT,
        "/admin/v1/rules/r1",
        &create,
        Some(&rule_body("fake", TARGET)),
    )
    .await;
    assert_eq!(proxy.swallowed(), 1, "the proxy dropped the write: {reply:?}");
    reply.assert_error(503, "temporarily_unavailable", "");
    let description = reply.json["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains("not applied"),
        "{reply:?}\n{}",
        broker.stderr()
    );
    assert!(
        broker.stderr().contains("reading back whether it applied"),
        "the write's reply was lost:\n{}",
        broker.stderr()
    );

    // One attempt, one audit line: rejected, with the read-back's finding.
    let lines = change_lines(&broker, "admin_change", "r1");
    assert_eq!(lines.len(), 1, "one attempt, one line: {lines:?}");
    assert_eq!(lines[0]["outcome"], "rejected", "{lines:?}");
    assert_eq!(lines[0]["action"], "create", "{lines:?}");
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("read back: not applied (and cancelled)"),
        "{lines:?}"
    );
    let change_id = lines[0]["change_id"].as_str().expect("change_id").to_owned();
    assert_eq!(change_id.len(), 32, "{lines:?}");

    // Nothing changed in Redis, except that the change id is cancelled for good.
    assert_eq!(hget(&redis, "version"), version);
    assert_eq!(hget(&redis, "changes"), changes);
    assert!(
        hget(&redis, "cancelled")
            .split_whitespace()
            .any(|id| id == change_id),
        "the lost write's id is cancelled"
    );

    // Nor in the API: r1 does not exist.
    let reply = send(&broker, Method::GET, "/admin/v1/rules/r1", &[], None).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(
        !admin_names(&broker, "rules").await.contains(&"r1".to_owned()),
        "r1 is not listed"
    );

    // The client's retry of the same create goes through: 201, with a new change id.
    let retry = send(
        &broker,
        Method::PUT,
        "/admin/v1/rules/r1",
        &create,
        Some(&rule_body("fake", TARGET)),
    )
    .await;
    assert_eq!(retry.status, 201, "{retry:?}\n{}", broker.stderr());
    assert_eq!(proxy.swallowed(), 1, "{retry:?}");
    let lines = change_lines(&broker, "admin_change", "r1");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["outcome"], "applied", "{lines:?}");
    assert_ne!(lines[1]["change_id"], change_id.as_str(), "{lines:?}");
    assert_eq!(hget(&redis, "version"), "2");
    let reply = send(&broker, Method::GET, "/admin/v1/rules/r1", &[], None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(admin_names(&broker, "rules").await.contains(&"r1".to_owned()));
    assert_eq!(
        broker.exchange(&fake.mint(json!({})), TARGET).await.status,
        200,
        "r1 issues"
    );
}
