//! Real `redis-server` processes for the replay-store tests: one server, or a Redis
//! Cluster of masters and replicas, each on free loopback ports in its own tempdir,
//! never shared between tests. The servers keep nothing on disk (`--save ''`,
//! `--appendonly no`) and die with their handle.
//!
//! A machine without `redis-server` fails these tests with a message that names it,
//! unless `FEDBROKER_SKIP_REDIS_TESTS=1` (then [`redis_available`] is false and the
//! tests return early).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::broker::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether the Redis tests should run: `redis-server` and `redis-cli` are on `PATH`.
/// Panics, naming what is missing and how to install it, unless
/// `FEDBROKER_SKIP_REDIS_TESTS=1` asks to skip them.
pub fn redis_available() -> bool {
    let missing: Vec<&str> = ["redis-server", "redis-cli"]
        .into_iter()
        .filter(|bin| which(bin).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("FEDBROKER_SKIP_REDIS_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "skipping a Redis test: {} not found and FEDBROKER_SKIP_REDIS_TESTS=1",
            missing.join(" and ")
        );
        return false;
    }
    panic!(
        "{} not found on PATH: the replay-store tests spawn real Redis servers. Install \
         redis-server (Debian: `apt-get install redis-server`, which brings redis-cli), or set \
         FEDBROKER_SKIP_REDIS_TESTS=1 to skip them",
        missing.join(" and ")
    );
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(bin))
        .find(|p| p.is_file())
}

/// One `redis-server` on `127.0.0.1`. Dropping it kills the process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// `redis-cli` options this server needs (TLS, password).
    cli_options: Vec<String>,
}

impl RedisServer {
    /// A standalone server on a free port.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A free port for a server that is not running yet: [`Self::restart`] starts it.
    pub fn not_started() -> RedisServer {
        RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            extra: Vec::new(),
            cli_options: Vec::new(),
        }
    }

    /// A server with extra `redis-server` arguments (e.g. `["--maxmemory-policy", "allkeys-lru"]`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cli_options: Vec::new(),
        };
        server.spawn();
        server
    }

    /// A server that speaks only TLS (a certificate for `127.0.0.1` and `localhost`
    /// from a fresh CA, made with the `openssl` command) and requires `password`.
    /// `ca_pem()` is the CA to trust (e.g. `SSL_CERT_FILE` for the broker).
    pub fn start_tls(password: &str) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        make_certificates(dir.path());
        let file = |name: &str| dir.path().join(name).to_str().expect("UTF-8 tempdir").to_owned();
        let port = free_port();
        let extra: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &file("server.pem"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cli_options = vec![
            "--tls".to_owned(),
            "--cacert".to_owned(),
            file("ca.pem"),
            "--no-auth-warning".to_owned(),
            "-a".to_owned(),
            password.to_owned(),
        ];
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra,
            cli_options,
        };
        server.spawn();
        server
    }

    /// The CA certificate of a [`Self::start_tls`] server.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(&self.extra)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.path().to_str().expect("UTF-8 tempdir")])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn redis-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while self.cli(&["PING"]).trim() != "PONG" {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL): every key is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start (again) on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the socket stays open but nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        crate::broker::signal(self.child.as_ref().expect("redis-server running").id(), name);
    }

    /// Run `redis-cli -p PORT ARGS` and return its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = self.cli_options.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        cli(self.port, &all)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process dies of SIGKILL too; CONT first so it leaves no zombie state.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.kill();
    }
}

/// A CA and a server certificate for `127.0.0.1`/`localhost` signed by it, in `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
fn make_certificates(dir: &std::path::Path) {
    crate::tls_issuer::make_ca(dir);
    crate::tls_issuer::make_server_certificate(dir, "IP:127.0.0.1,DNS:localhost");
}

/// `redis-cli -p PORT ARGS` (raw output, 5 s timeout); empty when it fails.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args([
            "5",
            "redis-cli",
            "--raw",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(_) => String::new(),
    }
}

/// A Redis Cluster on loopback: `masters` masters with `replicas` replicas each,
/// created with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                // The cluster bus gets its own free port (cluster-port), not PORT+10000,
                // which may be taken or out of range.
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let replicas_arg = replicas.to_string();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", &replicas_arg, "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// Wait until every node reports `cluster_state:ok` and agrees on the masters.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node (index into `nodes`) that is master for `key`'s slot now.
    pub fn master_for(&self, key: &str) -> usize {
        let port = self.nodes[0].port();
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT");
        let nodes = cli(port, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => range.parse::<u16>() == Ok(slot),
            });
            if serves {
                let node_port = node_port(fields[1]);
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port() == node_port)
                    .expect("master is one of ours");
            }
        }
        panic!("no master serves slot {slot}:\n{nodes}");
    }

    /// A replica (index into `nodes`) of the master at `master`, once the master knows
    /// one (`CLUSTER NODES`: a `slave` whose master id is the master's).
    pub fn replica_of(&self, master: usize) -> usize {
        let id = self.nodes[master].cli(&["CLUSTER", "MYID"]).trim().to_owned();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let nodes = self.nodes[master].cli(&["CLUSTER", "NODES"]);
            let replica = nodes.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.len() > 3 && fields[2].contains("slave") && fields[3] == id)
                    .then(|| node_port(fields[1]))
            });
            if let Some(port) = replica {
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port() == port)
                    .expect("replica is one of ours");
            }
            assert!(Instant::now() < deadline, "master {id} has no replica:\n{nodes}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `CLUSTER FAILOVER` on `replica` (a coordinated, no-data-loss failover) and wait
    /// until it is a master and the cluster is ok again.
    ///
    /// A manual failover gives up without a word when the replica cannot catch up with
    /// its paused master within Redis's manual-failover timeout (5 s), which happens on
    /// a loaded machine, or when the replica's link to its master is not up yet. So
    /// each attempt starts once the link is up, waits 10 s for the promotion and is
    /// repeated until a 60 s deadline.
    pub fn failover(&self, replica: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let node = &self.nodes[replica];
        let mut attempts = 0;
        while !node.cli(&["ROLE"]).starts_with("master") {
            assert!(
                Instant::now() < deadline,
                "the replica did not take over after {attempts} CLUSTER FAILOVER attempts; its log:\n{}",
                node.log()
            );
            if !node
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
            {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            if attempts > 0 {
                eprintln!("CLUSTER FAILOVER attempt {attempts} did not finish in 10 s; asking again");
            }
            let answer = node.cli(&["CLUSTER", "FAILOVER"]);
            assert_eq!(answer.trim(), "OK", "CLUSTER FAILOVER: {answer}");
            attempts += 1;
            let attempt_ends = Instant::now() + Duration::from_secs(10);
            while Instant::now() < attempt_ends && !node.cli(&["ROLE"]).starts_with("master") {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.wait_until_ok();
    }
}

/// The port in a `CLUSTER NODES` address field, `127.0.0.1:7000@17000`.
fn node_port(field: &str) -> u16 {
    field
        .split('@')
        .next()
        .and_then(|hp| hp.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {field}"))
}

/// One complete RESP array of bulk strings at the start of `buf`: its length in bytes
/// and its elements. `None` when incomplete or not an array (test proxies forward such bytes raw).
pub fn resp_command(buf: &[u8]) -> Option<(usize, Vec<Vec<u8>>)> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buf[at..end], end + 2))
    }
    let (head, mut at) = line(buf, 0)?;
    let count: usize = std::str::from_utf8(head.strip_prefix(b"*")?).ok()?.parse().ok()?;
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, next) = line(buf, at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?).ok()?.parse().ok()?;
        if buf.len() < next + len + 2 {
            return None;
        }
        parts.push(buf[next..next + len].to_vec());
        at = next + len + 2;
    }
    Some((at, parts))
}
