//! The load: `concurrency` keep-alive HTTP/1.1 connections, each in its own task, each
//! sending `POST /token` with the next unused pre-minted token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

pub struct Load {
    pub port: u16,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Total requests per second, spread over the connections; None: as fast as answered.
    pub rate: Option<f64>,
    pub broker_pid: u32,
    /// redis-server, whose CPU is reported apart.
    pub redis_pid: Option<u32>,
    pub ticks_per_s: f64,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Latencies in nanoseconds of the requests completed in the measured window.
    pub latencies_ns: Vec<u64>,
    /// Answers in the measured window by HTTP status (200 included).
    pub statuses: BTreeMap<u16, u64>,
    /// The first non-200 answer (status, body truncated), in or out of the window.
    pub first_error: Option<(u16, String)>,
    /// Connection errors (connect, read, write, malformed answer) in the whole run.
    pub io_errors: u64,
    pub first_io_error: Option<String>,
    /// The measured window: warm-up end to the deadline, or to the last answer when the
    /// tokens ran out first.
    pub window: Duration,
    pub ran_out: bool,
    pub warmup_requests: u64,
    pub broker_cpu_s: f64,
    pub self_cpu_s: f64,
    pub redis_cpu_s: Option<f64>,
}

#[derive(Default)]
struct TaskResult {
    latencies_ns: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    first_error: Option<(u16, String)>,
    io_errors: u64,
    first_io_error: Option<String>,
    warmup_requests: u64,
}

pub async fn run(load: &Load, tokens: Arc<Vec<String>>) -> Result<Outcome> {
    let start = Instant::now();
    let warm_end = start + load.warmup;
    let deadline = warm_end + load.duration;
    let next = Arc::new(AtomicUsize::new(0));
    let ran_out = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Notify::new());

    // CPU of both processes at the window's start and end.
    let (pid, ticks, redis) = (load.broker_pid, load.ticks_per_s, load.redis_pid);
    let sample = move || -> Result<(f64, f64, Option<f64>)> {
        Ok((
            crate::setup::cpu_seconds(Some(pid), ticks)?,
            crate::setup::cpu_seconds(None, ticks)?,
            redis
                .map(|r| crate::setup::cpu_seconds(Some(r), ticks))
                .transpose()?,
        ))
    };
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(warm_end).await;
            let a = sample()?;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = done.notified() => {}
            }
            let end = Instant::now().min(deadline);
            let b = sample()?;
            anyhow::Ok((end, b.0 - a.0, b.1 - a.1, b.2.zip(a.2).map(|(b, a)| b - a)))
        })
    };

    let interval = load
        .rate
        .map(|r| Duration::from_secs_f64(load.concurrency as f64 / r));
    let mut tasks = Vec::with_capacity(load.concurrency);
    for c in 0..load.concurrency {
        let (tokens, next, ran_out) = (tokens.clone(), next.clone(), ran_out.clone());
        let port = load.port;
        // Paced connections start spread over one interval.
        let first = interval.map(|i| start + i.mul_f64(c as f64 / load.concurrency as f64));
        tasks.push(tokio::spawn(async move {
            connection(
                port, &tokens, &next, &ran_out, first, interval, warm_end, deadline,
            )
            .await
        }));
    }
    let mut out = Outcome::default();
    let mut last_answer = start;
    for t in tasks {
        let (r, last) = t.await.context("a connection task panicked")?;
        last_answer = last_answer.max(last);
        out.latencies_ns.extend(r.latencies_ns);
        for (s, n) in r.statuses {
            *out.statuses.entry(s).or_default() += n;
        }
        out.first_error = out.first_error.or(r.first_error);
        out.io_errors += r.io_errors;
        out.first_io_error = out.first_io_error.or(r.first_io_error);
        out.warmup_requests += r.warmup_requests;
    }
    done.notify_one();
    let (end, broker_cpu, self_cpu, redis_cpu) = sampler.await.context("the CPU sampler panicked")??;
    out.ran_out = ran_out.load(Ordering::Relaxed);
    if out.ran_out && last_answer < warm_end {
        bail!(
            "the tokens ran out during the warm-up ({} requests); mint more with --tokens",
            out.warmup_requests
        );
    }
    let end = if out.ran_out {
        last_answer.min(end)
    } else {
        deadline
    };
    out.window = end.saturating_duration_since(warm_end);
    out.broker_cpu_s = broker_cpu;
    out.self_cpu_s = self_cpu;
    out.redis_cpu_s = redis_cpu;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    port: u16,
    tokens: &[String],
    next: &AtomicUsize,
    ran_out: &AtomicBool,
    mut scheduled: Option<Instant>,
    interval: Option<Duration>,
    warm_end: Instant,
    deadline: Instant,
) -> (TaskResult, Instant) {
    let mut r = TaskResult::default();
    let mut last = Instant::now();
    let mut conn: Option<Conn> = None;
    loop {
        let sent_at = match (scheduled, interval) {
            (Some(at), Some(i)) => {
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at).await;
                scheduled = Some(at + i);
                // Latency from when the request was due, not when it could be sent.
                at
            }
            _ => Instant::now(),
        };
        if Instant::now() >= deadline {
            break;
        }
        if conn.is_none() {
            match Conn::connect(port).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    r.io_errors += 1;
                    r.first_io_error.get_or_insert_with(|| format!("{e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let idx = next.fetch_add(1, Ordering::Relaxed);
        let Some(body) = tokens.get(idx) else {
            ran_out.store(true, Ordering::Relaxed);
            break;
        };
        let answer = c.post_token(body).await;
        let now = Instant::now();
        last = now;
        let (status, body, close) = match answer {
            Ok(a) => a,
            Err(e) => {
                r.io_errors += 1;
                r.first_io_error.get_or_insert_with(|| format!("{e:#}"));
                conn = None;
                continue;
            }
        };
        if close {
            conn = None;
        }
        if status != 200 && r.first_error.is_none() {
            let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            r.first_error = Some((status, text));
        }
        if now < warm_end {
            r.warmup_requests += 1;
        } else if now <= deadline {
            r.latencies_ns
                .push(now.saturating_duration_since(sent_at).as_nanos() as u64);
            *r.statuses.entry(status).or_default() += 1;
        }
    }
    (r, last)
}

/// One keep-alive HTTP/1.1 connection with reused buffers.
struct Conn {
    stream: TcpStream,
    host: String,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(port: u16) -> Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .context("connecting")?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            host: format!("127.0.0.1:{port}"),
            request: Vec::with_capacity(4096),
            buf: Vec::with_capacity(8192),
        })
    }

    /// (status, body, whether the server closes the connection).
    async fn post_token(&mut self, form: &str) -> Result<(u16, Vec<u8>, bool)> {
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST /token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Accept: application/json\r\nContent-Length: {}\r\n\r\n",
                self.host,
                form.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(form.as_bytes());
        self.stream.write_all(&self.request).await.context("sending")?;
        self.buf.clear();
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            self.fill().await?;
        };
        let head = parse_head(&self.buf[..head_end])?;
        while self.buf.len() < head_end + head.content_length {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + head.content_length].to_vec();
        Ok((head.status, body, head.close))
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.context("reading")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    content_length: usize,
    close: bool,
}

fn parse_head(head: &[u8]) -> Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| anyhow!("the response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse()
                    .map_err(|_| anyhow!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("Transfer-Encoding {value:?} is not supported by this client");
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    Ok(Head {
        status,
        content_length: content_length.ok_or_else(|| anyhow!("no Content-Length in the answer"))?,
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_head() {
        let head =
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nContent-Length: 42\r\n\r\n";
        assert_eq!(
            parse_head(head).expect("head"),
            Head {
                status: 400,
                content_length: 42,
                close: false
            }
        );
        let close = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_head(close).expect("head").close);
    }

    #[test]
    fn refuses_heads_it_cannot_frame() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
