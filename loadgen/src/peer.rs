//! The peer: panva's `oidc-provider` (npm) with an RFC 8693 grant, from
//! `loadgen/peer/oidc-provider/server.js`, run with node against the same subject issuer
//! and tokens as the broker.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::crypto::{Alg, SigningKey};
use crate::setup::{self, Guard, TARGET, issuer_url, subject};

/// The client the peer registers (token_endpoint_auth_method none).
pub const CLIENT_ID: &str = "fedbroker-load";

pub struct Peer {
    pub dir: PathBuf,
    /// "oidc-provider 9.13.3, node v20.20.2"
    pub version: String,
}

fn tool_version(tool: &str) -> Result<String> {
    let out = Command::new(tool).arg("--version").output().map_err(|e| {
        anyhow!("{tool} is needed for --peer oidc-provider but cannot be run (is Node.js installed and on PATH?): {e}")
    })?;
    if !out.status.success() {
        bail!("{tool} --version failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Checks node and npm, runs `npm ci` in `dir` when its node_modules is missing.
pub fn prepare(dir: &Path) -> Result<Peer> {
    let dir = std::fs::canonicalize(dir).with_context(|| {
        format!(
            "the peer directory {} (--peer-dir; run from the repository root)",
            dir.display()
        )
    })?;
    if !dir.join("server.js").is_file() {
        bail!("{} has no server.js", dir.display());
    }
    let node = tool_version("node")?;
    if !dir.join("node_modules").is_dir() {
        tool_version("npm")?;
        eprintln!("npm ci in {} ...", dir.display());
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .status()
            .context("running npm ci")?;
        if !status.success() {
            bail!("npm ci in {} failed: {status}", dir.display());
        }
    }
    let manifest = dir.join("node_modules/oidc-provider/package.json");
    let text =
        std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let version = format!(
        "oidc-provider {}, node {node}",
        v["version"].as_str().unwrap_or("unknown")
    );
    Ok(Peer { dir, version })
}

/// Writes the subject issuer's public JWKS to `work/jwks.json` and starts
/// `node server.js` on a free port; returns the process and the port.
pub fn spawn(
    peer: &Peer,
    work: &Path,
    key: &SigningKey,
    subject_alg: Alg,
    issued_alg: Alg,
) -> Result<(Guard, u16)> {
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let jwks = work.join("jwks.json");
    let set = serde_json::json!({"keys": [key.public_jwk("k0")]});
    std::fs::write(&jwks, set.to_string()).with_context(|| format!("writing {}", jwks.display()))?;
    let port = setup::free_port()?;
    let log_path = work.join("peer.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let child = Command::new("node")
        .arg("server.js")
        .current_dir(&peer.dir)
        .env("NODE_ENV", "production")
        .env("PORT", port.to_string())
        .env("JWKS_PATH", &jwks)
        .env("SUBJECT_ISSUER", issuer_url(0))
        .env("SUBJECT_ALG", subject_alg.as_str())
        .env("SUBJECT", subject(0))
        .env("ALG", issued_alg.as_str())
        .env("TARGET", TARGET)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting node server.js")?;
    Ok((Guard::new("oidc-provider", child), port))
}

/// Polls the discovery document every 5 ms until 200.
pub async fn wait_ready(peer: &mut Guard, port: u16, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Some(status) = peer.child.try_wait()? {
            bail!("the peer exited during startup ({status}); see peer/peer.log in the work dir");
        }
        if let Ok((200, _)) = setup::get(port, "/.well-known/openid-configuration").await {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("the peer was not ready within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The broker's form body plus the client the peer requires.
pub fn form_body(broker_form: &str) -> String {
    format!("{broker_form}&client_id={CLIENT_ID}")
}
