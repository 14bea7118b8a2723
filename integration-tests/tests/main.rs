//! fedbroker end to end: the real binary against fake issuers, over HTTP and the CLI.
//!
//! One test binary (each extra file would be an extra link); one module per area.
//! Every test owns its ports, tempdirs, fake issuers and broker processes, so
//! they run in parallel.

mod support;

mod admin;
mod admin_hardening;
mod admin_redis;
mod assertion_grants;
mod attacks;
mod audit;
mod aws_iam;
mod claim_names;
mod cli;
mod cloud_conformance;
mod cloud_fakes;
mod console;
mod console_browser;
mod credentials;
mod deploy;
mod dev_mode;
mod dpop_nonce;
mod errors;
mod exchange;
mod explain;
mod harness;
mod issuer_schema;
mod key_rotation;
mod keys_fetch;
mod kms_signing;
mod moto_server;
mod new_user;
mod observability;
mod rate_limits;
mod redis;
mod reload;
mod replay;
mod replay_hardening;
mod replicas_keys;
mod replicas_lost_write;
mod replicas_names;
mod replicas_policy;
mod replicas_state;
mod rule_tests;
mod rules_e2e;
mod rules_fail_closed;
mod sender_constrained;
mod server_limits;
mod telemetry;
mod terraform;
mod tls_ca;
mod tls_serving;
mod workload;
