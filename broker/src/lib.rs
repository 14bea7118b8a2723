//! fedbroker: trade a workload's home-cloud identity token for a short-lived JWT scoped
//! to a target cloud, by OAuth 2.0 Token Exchange (RFC 8693).
//!
//! All I/O lives here; verification (`issuers`) and policy (`federation_rules`) are pure.
//!
//! - [`config`]: the YAML configuration and rule files, every error with file and line.
//! - [`admin`]: the admin API (issuers and rules over HTTP, ETags, state file).
//! - [`admin_store`]: where admin changes live: the state file, or Redis for replicas.
//! - [`app`]: the router, `serve(listener, state, shutdown)`, metadata and health routes.
//! - [`state`]: the shared state, and each route group's share of it (`FromRef`).
//! - [`policy`]: the issuers and rules in force, and the one way to swap them.
//! - [`exchange`]: `POST /token`, the one pipeline, and the RFC error mapping.
//! - [`explain`]: `fedbroker explain`, a dry run of one exchange.
//! - [`rule_tests`]: `fedbroker test`, rule test files (`*.test.yaml`) run through explain.
//! - [`issuer_keys`]: discovery and JWKS fetching, caching, coalesced refetch.
//! - [`files`]: reading configured files: regular files only, with a size cap.
//! - [`listener`]: the HTTP listeners: read timeouts, a connection cap, graceful shutdown.
//! - [`reload`]: hot reload of rules and issuers on file change or SIGHUP.
//! - [`watched`]: which files a configuration was read from.
//! - [`clock`]: the broker's one clock.
//! - [`netguard`]: which addresses outbound fetches may reach.
//! - [`signing`]: signing keys on disk, the published JWKS, minting.
//! - [`replay`]: the `ReplayStore` seam: in memory (one process) or Redis (replicas).
//! - [`audit`], [`metrics`]: the audit stream and Prometheus metrics.
//! - [`telemetry`]: OpenTelemetry traces over OTLP/HTTP (`telemetry.traces`), off by default.
//! - [`dev`]: `serve --dev`'s development issuer and example rule.
//! - [`cli`]: the `fedbroker` command line.
//! - [`client_cert`]: a mutual-TLS client certificate, as requests and rules see it.

// `expect` and `panic!` only in tests: nothing network input reaches may abort a request.
#![cfg_attr(not(test), warn(clippy::expect_used, clippy::panic))]

pub mod admin;
pub mod admin_store;
pub mod app;
pub mod audit;
pub mod cli;
pub mod client_cert;
pub mod clock;
pub mod config;
pub mod console;
pub mod credentials;
pub mod dev;
pub mod error;
pub mod exchange;
pub mod explain;
pub mod files;
pub mod hits;
pub mod issuer_keys;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod netguard;
pub mod policy;
pub mod reload;
pub mod replay;
pub mod request_id;
pub mod rule_tests;
pub mod signing;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod watched;
pub mod workload;
