//! The broker's world: issuer keys, the config and rules files, a Redis when asked for,
//! and the broker process itself (stopped with SIGTERM when dropped).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::crypto::{Alg, SigningKey};

/// The audience every issuer accepts and every subject token carries.
pub const ISSUER_AUDIENCE: &str = "fedbroker";
/// The target every rule grants and every request asks for.
pub const TARGET: &str = "sts.amazonaws.com";

pub fn issuer_url(i: usize) -> String {
    format!("https://iss{i}.loadgen.test")
}

pub fn subject(rule: usize) -> String {
    format!("system:serviceaccount:ns{rule}:sa{rule}")
}

/// Generates `distinct` key pairs on all cores (issuer i uses key i % distinct).
pub fn issuer_keys(alg: Alg, distinct: usize, threads: usize) -> Result<Vec<SigningKey>> {
    let threads = threads.clamp(1, distinct.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<Vec<SigningKey>> {
                    (t..distinct)
                        .step_by(threads)
                        .map(|_| SigningKey::generate(alg))
                        .collect()
                })
            })
            .collect();
        let mut per_thread = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a key generation thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()?;
        // Put them back in index order: key k was made by thread k % threads.
        let mut keys = Vec::with_capacity(distinct);
        let mut iters: Vec<_> = per_thread.iter_mut().map(|v| v.drain(..)).collect();
        for k in 0..distinct {
            keys.push(
                iters[k % threads]
                    .next()
                    .ok_or_else(|| anyhow!("key {k} missing"))?,
            );
        }
        Ok(keys)
    })
}

pub struct Layout {
    pub config: PathBuf,
    pub port: u16,
}

pub struct Settings<'a> {
    pub issuers: usize,
    pub rules: usize,
    pub subject_alg: Alg,
    pub issued_alg: Alg,
    pub redis_url: Option<&'a str>,
    pub audit_file: bool,
    pub max_connections: usize,
}

/// Writes `config.yaml` and `rules/rules-NNNNN.yaml` into `dir`: block YAML whose items
/// are one-line JSON objects (see [`one_item_a_line`]).
pub fn write_config(dir: &Path, s: &Settings<'_>, keys: &[SigningKey]) -> Result<Layout> {
    let port = free_port()?;
    let issuers: Vec<Value> = (0..s.issuers)
        .map(|i| {
            json!({
                "name": format!("iss{i}"),
                "issuer": issuer_url(i),
                "audiences": [ISSUER_AUDIENCE],
                "algorithms": [s.subject_alg.as_str()],
                "jwks": {"keys": [keys[i % keys.len()].public_jwk(&format!("k{i}"))]},
            })
        })
        .collect();
    let mut config = json!({
        "version": 1,
        "server": {
            "listen": format!("127.0.0.1:{port}"),
            "max_connections": s.max_connections,
        },
        "signing": {"algorithm": s.issued_alg.as_str(), "key_dir": "./keys"},
        "issuers": issuers,
        "rules_files": ["./rules/*.yaml"],
    });
    if let Some(url) = s.redis_url {
        config["replay"] = json!({"backend": "redis", "redis_url": url});
    }
    if s.audit_file {
        config["audit"] = json!({"path": "./audit.jsonl"});
    }
    std::fs::create_dir_all(dir.join("rules")).context("creating the rules directory")?;
    let config_path = dir.join("config.yaml");
    let text = one_item_a_line(&config)?;
    if text.len() > FILE_CAP {
        bail!(
            "the config file would be {} bytes, over the broker's 4 MiB cap: fewer issuers, or a \
             subject algorithm with smaller keys (--subject-alg ES256 or EdDSA)",
            text.len()
        );
    }
    std::fs::write(&config_path, text).with_context(|| format!("writing {}", config_path.display()))?;
    // Rule files of RULES_PER_FILE rules (a file may hold at most 4 MiB), one rule a line
    // so that an error's line number names the rule.
    for (f, first) in (0..s.rules).step_by(RULES_PER_FILE).enumerate() {
        let mut rules = String::new();
        let last = (first + RULES_PER_FILE).min(s.rules);
        for i in first..last {
            let rule = json!({
                "name": format!("r{i}"),
                "match": {"issuer": format!("iss{}", i % s.issuers), "subject": subject(i), "audiences": [TARGET]},
            });
            rules.push_str("- ");
            rules.push_str(&rule.to_string());
            rules.push('\n');
        }
        let rules_path = dir.join(format!("rules/rules-{f:05}.yaml"));
        std::fs::write(&rules_path, rules).with_context(|| format!("writing {}", rules_path.display()))?;
    }
    Ok(Layout {
        config: config_path,
        port,
    })
}

/// The broker's size cap for the config file and each rule file.
const FILE_CAP: usize = 4 << 20;
const RULES_PER_FILE: usize = 10_000;

/// The config as block YAML: a top-level key a line, each element of a top-level list on
/// a line of its own (`- ` and the element as one-line JSON, which YAML reads as a flow
/// mapping). Not one JSON document: a YAML scanner cannot tell where a key ends inside an
/// open flow collection, so it reads a document-wide `{...}` or `[...]` whole before it
/// yields its first event (yaml-rust2 does: 2.45 s against 2.15 s to start on the
/// 100,000-rule scale set).
fn one_item_a_line(config: &Value) -> Result<String> {
    let map = config
        .as_object()
        .ok_or_else(|| anyhow!("the config is not an object"))?;
    let mut out = String::new();
    for (key, value) in map {
        out.push_str(&serde_json::to_string(key)?);
        out.push(':');
        match value {
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                for item in items {
                    out.push_str("  - ");
                    out.push_str(&item.to_string());
                    out.push('\n');
                }
            }
            other => {
                out.push(' ');
                out.push_str(&other.to_string());
                out.push('\n');
            }
        }
    }
    Ok(out)
}

pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Children still running, for the Ctrl-C handler (a signal skips destructors).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGTERM to every child still running; for the Ctrl-C handler.
pub fn terminate_children() {
    let pids = RUNNING.lock().map(|v| v.clone()).unwrap_or_default();
    for pid in pids {
        let _ = signal(pid, "TERM");
    }
}

/// A child process that gets SIGTERM (then SIGKILL after 10 s) when dropped.
pub struct Guard {
    pub name: &'static str,
    pub child: Child,
}

impl Guard {
    pub fn new(name: &'static str, child: Child) -> Guard {
        if let Ok(mut v) = RUNNING.lock() {
            v.push(child.id());
        }
        Guard { name, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait up to 10 s, then SIGKILL.
    pub fn stop(&mut self) -> Result<()> {
        let pid = self.pid();
        if let Ok(mut v) = RUNNING.lock() {
            v.retain(|&p| p != pid);
        }
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        signal(self.pid(), "TERM")?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill().context("killing")?;
        self.child.wait()?;
        bail!("{} did not stop within 10 s of SIGTERM; killed", self.name)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping {}: {e:#}", self.name);
        }
    }
}

/// Sends a signal with the `kill` command (unsafe code is forbidden in this workspace).
pub fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed: {status}");
    }
    Ok(())
}

pub fn start_redis(dir: &Path) -> Result<(Guard, String)> {
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("redis.log"))?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| anyhow!("cannot start redis-server (is it on PATH?): {e}"))?;
    let guard = Guard::new("redis-server", child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "redis-server did not listen on port {port} within 10 s (see {}/redis.log)",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((guard, format!("redis://127.0.0.1:{port}/0")))
}

/// Adds a signing key to key_dir with `fedbroker keys generate`, so that startup does
/// not include key generation.
pub fn generate_signing_key(broker: &Path, config: &Path) -> Result<()> {
    let out = Command::new(broker)
        .args(["keys", "generate", "--config"])
        .arg(config)
        .output()
        .with_context(|| format!("running {} keys generate", broker.display()))?;
    if !out.status.success() {
        bail!(
            "{} keys generate failed: {}{}",
            broker.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub fn spawn_broker(broker: &Path, config: &Path, log: &Path) -> Result<Guard> {
    let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(broker)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", broker.display()))?;
    Ok(Guard::new("fedbroker", child))
}

/// One GET on a fresh connection: (status, body).
pub async fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status line from GET {path}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `/readyz` every 2 ms until 200; fails if the broker exits or `limit` passes.
pub async fn wait_ready(broker: &mut Guard, port: u16, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Some(status) = broker.child.try_wait()? {
            bail!("the broker exited during startup ({status}); see broker.log in the work dir");
        }
        if let Ok((200, _)) = get(port, "/readyz").await {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("the broker was not ready within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// VmRSS and VmHWM of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Rss {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn rss(pid: u32) -> Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Rss {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    })
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: Option<u32>, ticks_per_s: f64) -> Result<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    cpu_from_stat(&stat, ticks_per_s)
}

/// Fields 14 and 15 (utime, stime) of /proc/PID/stat; the command name (field 2) may
/// hold spaces, so count from its closing parenthesis.
pub fn cpu_from_stat(stat: &str, ticks_per_s: f64) -> Result<f64> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, index 11 here.
    let utime: f64 = fields
        .get(11)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no utime"))?;
    let stime: f64 = fields
        .get(12)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no stime"))?;
    Ok((utime + stime) / ticks_per_s)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that fails).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_text_is_block_yaml_one_item_a_line() {
        let config = json!({"version": 1, "issuers": [{"name": "a"}, {"name": "b"}], "rules_files": [], "x": {"y": 2}});
        let text = one_item_a_line(&config).expect("text");
        assert_eq!(
            text,
            "\"version\": 1\n\"issuers\":\n  - {\"name\":\"a\"}\n  - {\"name\":\"b\"}\n\"rules_files\": []\n\"x\": {\"y\":2}\n"
        );
    }

    #[test]
    fn reads_utime_and_stime_past_a_command_with_spaces() {
        let stat = "1234 (fed broker) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345 0 0";
        assert_eq!(cpu_from_stat(stat, 100.0).expect("stat"), 3.0);
    }
}
