//! A TCP proxy in front of one Redis that, once armed, traps the next command the
//! broker sends that a test picks out, and closes that connection: the command is
//! dropped before Redis sees it ([`Trap::Swallow`]), or forwarded and its reply cut
//! once Redis has applied it ([`Trap::CutAfterApplied`]). Every other command, and
//! every other connection (the broker's next one included), passes through untouched.
//! The proxy parses the broker's commands (RESP arrays, [`resp_command`]); bytes that
//! are not RESP pass through as they are.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::redis_server::resp_command;

/// What the proxy does with the command it traps.
#[derive(Clone, Copy, Debug)]
pub enum Trap {
    /// Drop it (Redis never sees it, no reply comes) and close the connection.
    Swallow,
    /// Stop forwarding Redis's replies on that connection, forward the command, wait
    /// until Redis holds the key it names (its second element) and close the
    /// connection: applied, but its reply never reaches the broker.
    CutAfterApplied,
}

/// Which commands the proxy traps once armed: the command's elements (name first).
pub type Pick = fn(&[Vec<u8>]) -> bool;

pub struct TrapProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    trapped: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TrapProxy {
    /// Listen on a free port now; forward each connection to the port in `upstream`
    /// when it comes (a cluster node must announce the proxy's port before it starts).
    pub async fn listen(upstream: Arc<AtomicU16>, pick: Pick, trap: Trap) -> TrapProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let armed = Arc::new(AtomicBool::new(false));
        let trapped = Arc::new(AtomicUsize::new(0));
        let relay = Relay {
            pick,
            trap,
            armed: armed.clone(),
            trapped: trapped.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let upstream_port = upstream.load(Ordering::SeqCst);
                tokio::spawn(relay.clone().run(client, upstream_port));
            }
        });
        TrapProxy {
            port,
            armed,
            trapped,
            task,
        }
    }

    /// [`Self::listen`] in front of the Redis at `upstream_port`.
    pub async fn start(upstream_port: u16, pick: Pick, trap: Trap) -> TrapProxy {
        Self::listen(Arc::new(AtomicU16::new(upstream_port)), pick, trap).await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Trap the next command picked out.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many commands it trapped so far.
    pub fn trapped(&self) -> usize {
        self.trapped.load(Ordering::SeqCst)
    }
}

impl Drop for TrapProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection's relay.
#[derive(Clone)]
struct Relay {
    pick: Pick,
    trap: Trap,
    armed: Arc<AtomicBool>,
    trapped: Arc<AtomicUsize>,
}

impl Relay {
    async fn run(self, client: TcpStream, upstream_port: u16) {
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
            return;
        };
        let (mut client_read, client_write) = client.into_split();
        let (server_read, mut server_write) = server.into_split();
        let client_write = Arc::new(Mutex::new(client_write));
        let hold = Arc::new(AtomicBool::new(false));
        let replies = tokio::spawn(forward_replies(server_read, client_write.clone(), hold.clone()));
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
                if (self.pick)(&parts)
                    && self
                        .armed
                        .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    // No reply reaches the broker from here on.
                    hold.store(true, Ordering::SeqCst);
                    if let Trap::CutAfterApplied = self.trap {
                        let _ = server_write.write_all(&frame).await;
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while !redis_has(upstream_port, &parts[1]).await {
                            assert!(Instant::now() < deadline, "Redis never applied the command");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    // Counted before the broker can see the connection close (and
                    // answer); then both directions stop.
                    self.trapped.fetch_add(1, Ordering::SeqCst);
                    replies.abort();
                    let _ = client_write.lock().await.shutdown().await;
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
}

/// Redis → broker, as it comes, until `hold` is set or Redis closes the connection.
async fn forward_replies(
    mut server_read: tokio::net::tcp::OwnedReadHalf,
    client_write: Arc<Mutex<OwnedWriteHalf>>,
    hold: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = client_write.lock().await.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if hold.load(Ordering::SeqCst) {
            return;
        }
        if client_write.lock().await.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Whether Redis at `port` holds `key` (`EXISTS`, on a connection of its own).
async fn redis_has(port: u16, key: &[u8]) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut cmd = format!("*2\r\n$6\r\nEXISTS\r\n${}\r\n", key.len()).into_bytes();
    cmd.extend_from_slice(key);
    cmd.extend_from_slice(b"\r\n");
    if conn.write_all(&cmd).await.is_err() {
        return false;
    }
    let mut reply = [0u8; 16];
    matches!(conn.read(&mut reply).await, Ok(n) if reply[..n].starts_with(b":1"))
}
