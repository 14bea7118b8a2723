//! Hot reload: the config file, rule files, `jwks_file`s, `admin.tokens_file` and the
//! listeners' TLS files are watched (and SIGHUP asks
//! for a reload). A reload builds a whole new policy and swaps it in atomically; one that
//! fails keeps the old policy serving (see [`AppState::reload`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::state::AppState;
pub use crate::watched::{Watched, normalize_lexically};

/// Quiet time after the last file event before reloading (editors write in bursts).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Keeps the OS watches in line with a [`Watched`]: a directory that does not exist yet
/// is covered by watching its nearest existing ancestor until it appears.
struct Watches {
    watcher: Option<notify::RecommendedWatcher>,
    active: Vec<(PathBuf, RecursiveMode)>,
}

impl Watches {
    fn sync(&mut self, wanted: &Watched) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let mut desired: Vec<(PathBuf, RecursiveMode)> = Vec::new();
        for (dir, recursive) in &wanted.dirs {
            let mode = if *recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            let mut target = dir.clone();
            while !target.is_dir() {
                match target.parent() {
                    Some(parent) => target = parent.to_path_buf(),
                    None => break,
                }
            }
            let mode = if target == *dir {
                mode
            } else {
                RecursiveMode::NonRecursive
            };
            if !desired.iter().any(|(d, m)| *d == target && *m == mode) {
                desired.push((target, mode));
            }
        }
        for (dir, mode) in &self.active {
            if !desired.contains(&(dir.clone(), *mode)) {
                let _ = watcher.unwatch(dir);
            }
        }
        let mut active = Vec::new();
        for (dir, mode) in desired {
            if self.active.contains(&(dir.clone(), mode)) {
                active.push((dir, mode));
                continue;
            }
            match watcher.watch(&dir, mode) {
                Ok(()) => active.push((dir, mode)),
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory"),
            }
        }
        self.active = active;
    }
}

enum Event {
    /// A watched file changed, or SIGHUP.
    Reload,
    /// A directory appeared: watch again (a rules directory may have been created).
    Rescan,
}

/// Watch the files and listen for SIGHUP; reload on either. Runs until the process ends.
pub fn spawn(state: Arc<AppState>) {
    if state.config_path.is_none() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    // Register SIGHUP now, before returning, so an early SIGHUP never kills the process.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            let tx = tx.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading");
                    let _ = tx.send(Event::Reload);
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
    }
    let wanted = Arc::new(std::sync::RwLock::new(state.watched()));
    let filter = wanted.clone();
    let file_tx = tx;
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let w = filter.read().unwrap_or_else(|e| e.into_inner());
        let created_dirs =
            || matches!(event.kind, notify::EventKind::Create(_)) && event.paths.iter().any(|p| p.is_dir());
        if event.paths.iter().any(|p| w.matters(p))
            || (created_dirs() && event.paths.iter().any(|p| p.is_dir() && w.covers_dir(p)))
        {
            // A reload also watches the directories that appeared.
            let _ = file_tx.send(Event::Reload);
        } else if created_dirs() {
            let _ = file_tx.send(Event::Rescan);
        }
    });
    let mut watches = Watches {
        watcher: match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch configuration files; reload with SIGHUP");
                None
            }
        },
        active: Vec::new(),
    };
    watches.sync(&state.watched());
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if matches!(event, Event::Rescan) {
                watches.sync(&wanted.read().unwrap_or_else(|e| e.into_inner()).clone());
                continue;
            }
            // Debounce: wait until events stop for DEBOUNCE.
            while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || {
                st.reload_tls();
                st.reload()
            })
            .await;
            // The config may name other rule files or key files now.
            let now_wanted = state.watched();
            watches.sync(&now_wanted);
            *wanted.write().unwrap_or_else(|e| e.into_inner()) = now_wanted;
        }
    });
}
