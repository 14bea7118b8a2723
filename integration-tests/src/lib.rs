//! Support for fedbroker's end-to-end tests (`tests/main.rs`).
//!
//! - [`fake_issuer`]: an OIDC issuer on a loopback port with real keys: serves
//!   discovery and JWKS, mints tokens, counts fetches, rotates keys, fails on demand.
//! - [`broker`]: builds and spawns the real `fedbroker` binary on a free port with a
//!   config in its own tempdir, and talks HTTP to it; [`broker::run_cli`] runs the
//!   other subcommands.
//! - [`http`]: what a test says to a broker over HTTP ([`Http`]: `exchange`, `get`,
//!   `admin_request`, ...) and the [`Reply`] it reads, the same for both kinds of broker.
//! - [`in_process`]: the broker's router in this test process, built from the same
//!   config YAML, for protocol-level cases that need no process.
//! - [`dpop`]: a DPoP client with a real P-256 key: its JWK, its RFC 7638 thumbprint
//!   and proofs, correct or broken on purpose.
//! - [`python`]: the test tools' Python, to drive the real cloud SDKs as a workload.
//! - [`deploy_tools`]: Helm's engine and linter (PyPI helm-python-sdk), kubernetes-validate,
//!   hadolint and systemd-analyze, for the files under `deploy/`.
//! - [`poll`]: [`eventually`], waiting for what a broker does in the background.
//! - [`config`]: composes broker configuration YAML from issuer and rule blocks.
//! - [`redis_server`]: real `redis-server` processes (one server, or a cluster with
//!   replicas) on free ports, to kill, pause, restart and fail over.
//! - [`redis_proxy`]: a TCP proxy in front of a Redis that drops, or cuts the reply
//!   of, one command a test picks out.
//! - [`sigv4`]: a SigV4 signer for STS requests, and signed GetCallerIdentity requests
//!   as `aws4_request` subject tokens.
//! - [`terraform_support`]: the real `terraform` binary with the provider built from
//!   this workspace, installed from a filesystem mirror (offline).
//! - [`tls_issuer`]: an issuer over HTTPS (`openssl s_server`) with a certificate
//!   from a private CA, for `tls_ca_file`.
//! - [`tokens`]: protocol constants, JWT plumbing (unverified decoding, hand-made
//!   compact tokens) and verification of issued tokens against the broker's JWKS
//!   with an independent library (jsonwebtoken).

pub mod attack_support;
pub mod broker;
pub mod cloud_fakes;
pub mod config;
pub mod deploy_tools;
pub mod dpop;
pub mod fake_issuer;
pub mod http;
pub mod in_process;
pub mod moto;
pub mod poll;
pub mod python;
pub mod redis_proxy;
pub mod redis_server;
pub mod sigv4;
pub mod terraform_support;
pub mod tls_issuer;
pub mod tokens;

pub use broker::{Broker, BrokerBuilder, CliOutput, run_cli, run_cli_in, run_cli_with_timeout};
pub use config::{BrokerConfig, dedent};
pub use fake_issuer::{FakeIssuer, KeyKind, SigningKey};
pub use http::{Http, Reply, exchange_form};
pub use in_process::InProcess;
pub use poll::{eventually, eventually_explained, eventually_timed};
