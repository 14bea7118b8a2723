//! The broker's router in this test process: `broker::app::app(state)` called with
//! `tower::ServiceExt::oneshot`, for protocol-level cases (form parsing, error answers,
//! metadata) that need no process, no listener and no signal.
//!
//! [`InProcess::start`] takes the same config YAML as [`crate::Broker::start`]
//! (placeholders included) and builds the state the way `fedbroker serve --config`
//! does: this is the one place that knows the broker's constructor. Fake issuers stay
//! on their loopback ports: the broker fetches their keys over real HTTP.

use std::path::PathBuf;

use crate::broker::free_port;
use crate::config::fill_placeholders;
use crate::http::Http;

/// A broker's router, with its tempdir (config, keys/, audit.jsonl).
pub struct InProcess {
    http: Http,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for InProcess {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

impl InProcess {
    /// Write `config_yaml` (`@PORT@`, `@DIR@` filled; the port is never bound) to
    /// `<tempdir>/fedbroker.yaml`, load it as `serve --config` does and build the router.
    /// Panics with the configuration errors when it does not load.
    pub async fn start(config_yaml: &str) -> InProcess {
        // What `fedbroker serve` installs first: one crypto provider for the process.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("keys")).expect("key dir");
        let dir_text = dir.path().to_str().expect("UTF-8 tempdir").to_owned();
        let config_text = fill_placeholders(config_yaml, free_port(), &dir_text);
        let path: PathBuf = dir.path().join("fedbroker.yaml");
        std::fs::write(&path, &config_text).expect("write config");
        let config = broker::config::load(&path)
            .unwrap_or_else(|e| panic!("invalid configuration:\n{e}\n--- config ---\n{config_text}"));
        let public_url = config.server.public_url.trim_end_matches('/').to_owned();
        let signer = broker::signing::Signer::from_config(&config.signing)
            .unwrap_or_else(|e| panic!("signing keys: {e}"));
        let state = broker::app::AppState::build(config, Some(path), signer, None)
            .unwrap_or_else(|e| panic!("broker state: {e}"));
        InProcess {
            http: Http::router(public_url, broker::app::app(state), dir.path().to_path_buf()),
            _dir: dir,
        }
    }
}
