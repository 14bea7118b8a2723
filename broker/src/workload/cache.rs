//! The credential cache: one file (mode 0600, in a 0700 directory) per broker, request
//! and home subject, reused while it has more than a minute left.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::output::open_private;
use super::source::Home;
use super::{CredentialsArgs, Issued};
use crate::replay::token_digest;

/// A cached credential is reused while it has at least this long left (seconds), plus
/// up to as much again at random, so that many workloads do not refresh at once.
const MARGIN_SECS: u64 = 60;

pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A number in [0, n), from the system's random source.
fn random_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    if n == 0 || aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0;
    }
    u64::from_le_bytes(bytes) % n
}

/// How long a `--watch` loop sleeps before fetching again: 80% of the lifetime left,
/// minus up to 10% at random, at least 5 seconds.
pub(super) fn refresh_in(issued: &Issued) -> Duration {
    let left = issued.expires_at.saturating_sub(now());
    let base = left * 8 / 10;
    Duration::from_secs(base.saturating_sub(random_below(left / 10 + 1)).max(5))
}

pub(super) struct Cache {
    path: PathBuf,
}

impl Cache {
    /// The cache entry of this request, or `None` when caching is off (`--cache-dir
    /// none`) or there is no cache directory.
    pub(super) fn new(
        dir: Option<&str>,
        args: &CredentialsArgs,
        requested: &str,
        home: &Home,
    ) -> Option<Cache> {
        let dir = match dir {
            Some("none") => return None,
            Some(dir) => PathBuf::from(dir),
            None => match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
                (Some(cache), _) if !cache.is_empty() => PathBuf::from(cache).join("fedbroker"),
                (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".cache/fedbroker"),
                _ => return None,
            },
        };
        // Keyed by broker, request and home subject; a token without one is its own key.
        let subject = home
            .subject
            .clone()
            .unwrap_or_else(|| json!(token_digest(&home.token)));
        let key = json!([
            args.broker.trim_end_matches('/'),
            requested,
            args.audience,
            args.resource,
            subject
        ]);
        Some(Cache {
            path: dir.join(format!("{}.json", token_digest(&key.to_string()))),
        })
    }

    /// The cached credential, when it has more than the margin left.
    pub(super) fn fresh(&self) -> Option<Issued> {
        let text = crate::files::read_regular_text(&self.path, 256 * 1024).ok()?;
        let issued: Issued = serde_json::from_str(&text).ok()?;
        let margin = MARGIN_SECS + random_below(MARGIN_SECS);
        (issued.expires_at > now() + margin).then_some(issued)
    }

    /// Keeps `issued`; a cache that cannot be written is skipped with a warning.
    pub(super) fn store(&self, issued: &Issued) {
        if let Err(e) = self.write(issued) {
            eprintln!("fedbroker credentials: not cached ({}): {e}", self.path.display());
        }
    }

    fn write(&self, issued: &Issued) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::DirBuilderExt as _;
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let tmp = self.path.with_extension(format!("{}.tmp", std::process::id()));
        let mut file = open_private(&tmp)?;
        file.write_all(serde_json::to_string(issued).unwrap_or_default().as_bytes())?;
        std::fs::rename(&tmp, &self.path)
    }
}
