//! Hot reload: the config file, rule files and `jwks_file`s are watched (and SIGHUP asks
//! for a reload). A reload builds a whole new policy and swaps it in atomically; one that
//! fails keeps the old policy serving (see [`AppState::reload`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::config::{Config, KeySource};

/// Quiet time after the last file event before reloading (editors write in bursts).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// What to watch: directories, and which paths in them matter.
#[derive(Debug, Default)]
pub struct Watched {
    pub dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
    patterns: Vec<glob::Pattern>,
}

impl Watched {
    pub fn from_config(config_path: Option<&Path>, config: &Config) -> Watched {
        let Some(config_path) = config_path else {
            return Watched::default();
        };
        let config_path = absolute(config_path);
        let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut w = Watched::default();
        w.add_file(config_path.clone());
        for pattern in &config.rules_files {
            let full = base.join(pattern);
            if let Ok(p) = glob::Pattern::new(&full.to_string_lossy()) {
                w.patterns.push(p);
            }
            // The deepest directory without glob characters.
            let mut dir = PathBuf::new();
            for part in full.parent().into_iter().flat_map(Path::components) {
                let text = part.as_os_str().to_string_lossy();
                if text.contains(['*', '?', '[']) {
                    break;
                }
                dir.push(part);
            }
            w.add_dir(dir);
        }
        for issuer in &config.issuers {
            if let KeySource::File(path, _) = &issuer.keys {
                w.add_file(absolute(path));
            }
        }
        w
    }

    fn add_file(&mut self, path: PathBuf) {
        if let Some(dir) = path.parent() {
            self.add_dir(dir.to_path_buf());
        }
        self.files.push(path);
    }

    fn add_dir(&mut self, dir: PathBuf) {
        if !self.dirs.contains(&dir) {
            self.dirs.push(dir);
        }
    }

    /// Whether a change at `path` should trigger a reload.
    pub fn matters(&self, path: &Path) -> bool {
        self.files.iter().any(|f| f == path) || self.patterns.iter().any(|p| p.matches_path(path))
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Watch the files and listen for SIGHUP; reload on either. Runs until the process ends.
pub fn spawn(state: Arc<AppState>) {
    if state.config_path.is_none() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watched = state.watched();
    let dirs = watched.dirs.clone();
    let file_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event.kind.is_access() {
                return;
            }
            if event.paths.iter().any(|p| watched.matters(p)) {
                let _ = file_tx.send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch configuration files; reload with SIGHUP");
            None
        }
    };
    if let Some(w) = watcher.as_mut() {
        for dir in &dirs {
            if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
            }
        }
    }
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            let _ = tx.send(());
        }
    });
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            // Debounce: wait until events stop for DEBOUNCE.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || st.reload()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_config_rule_globs_and_not_the_audit_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.yaml");
        std::fs::create_dir_all(dir.path().join("rules")).expect("mkdir");
        std::fs::write(
            &cfg,
            "version: 1\nrules_files: [rules/*.yaml]\naudit:\n  path: audit.jsonl\n",
        )
        .expect("write");
        let config = crate::config::load(&cfg).expect("valid");
        let w = Watched::from_config(Some(&cfg), &config);
        let root = std::path::absolute(dir.path()).expect("abs");
        assert!(w.matters(&root.join("config.yaml")));
        assert!(w.matters(&root.join("rules/a.yaml")));
        assert!(!w.matters(&root.join("audit.jsonl")));
        assert!(!w.matters(&root.join("rules/a.yaml.swp")));
        assert!(w.dirs.contains(&root.join("rules")));
    }
}
