//! Prometheus metrics (`GET /metrics`), text exposition format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

type Labels = Vec<(&'static str, String)>;

/// Buckets of the `/token` and stage latency histograms, in seconds (100 µs to 10 s).
const TOKEN_LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// Buckets of the JWKS fetch latency histogram, in seconds.
const FETCH_LATENCY_BUCKETS: [f64; 9] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Buckets of the cloud latency histogram, in seconds.
const CLOUD_LATENCY_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub struct Metrics {
    registry: Registry,
    exchanges: Family<Labels, Counter>,
    jwks_fetches: Family<Labels, Counter>,
    replay_errors: Counter,
    replay_store_up: Gauge,
    issuer_keys: Family<Labels, Gauge>,
    rules_loaded: Gauge,
    rules_generation: Gauge,
    reloads: Family<Labels, Counter>,
    cloud_requests: Family<Labels, Counter>,
    cloud_latency: Family<Labels, Histogram, fn() -> Histogram>,
    audit_queue_full: Counter,
    audit_write_errors: Counter,
    rate_limited: Family<Labels, Counter>,
    rate_limit_untracked: Family<Labels, Counter>,
    /// The `/token` and stage histograms of each label, resolved once (no allocation
    /// or lock per request, as for `exchange_counters`).
    token_latency: Vec<(&'static str, Histogram)>,
    stage_latency: Vec<(&'static str, Histogram)>,
    fetch_latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// `token_exchanges` of the outcomes requests have, resolved once: counting an
    /// exchange is one atomic add, no label allocation and no lock.
    exchange_counters: Vec<(&'static str, &'static str, Counter)>,
}

/// Every (outcome, error) pair an exchange can be counted under; an error code missing
/// here still counts, through the labelled family.
const EXCHANGE_OUTCOMES: [(&str, &str); 11] = [
    ("allow", ""),
    ("deny", "invalid_request"),
    ("deny", "invalid_grant"),
    ("deny", "invalid_target"),
    ("deny", "unsupported_grant_type"),
    ("deny", "invalid_scope"),
    ("deny", "temporarily_unavailable"),
    ("deny", "server_error"),
    ("deny", "invalid_client"),
    ("deny", "invalid_dpop_proof"),
    ("deny", "use_dpop_nonce"),
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A new metric of its type, registered as `fedbroker_<name>` with `help` (metrics are
/// exposed in the order they were registered).
fn registered<M: Metric + Default + Clone>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fedbroker");
        let exchanges: Family<Labels, Counter> = registered(
            &mut registry,
            "token_exchanges",
            "Token exchange requests by outcome and error code",
        );
        let jwks_fetches = registered(
            &mut registry,
            "jwks_fetches",
            "Issuer discovery/JWKS fetches by issuer and result",
        );
        let replay_errors = registered(
            &mut registry,
            "replay_store_errors",
            "Replay store operations that failed",
        );
        let replay_store_up = registered(
            &mut registry,
            "replay_store_up",
            "1 when the replay store answered its last command or health check, else 0",
        );
        let issuer_keys = registered(
            &mut registry,
            "issuer_keys",
            "Usable verification keys cached per issuer",
        );
        let rules_loaded = registered(&mut registry, "rules_loaded", "Rules in the active rule set");
        let rules_generation = registered(
            &mut registry,
            "rules_generation",
            "Generation of the loaded configuration (1 at start, +1 per successful reload)",
        );
        let reloads = registered(&mut registry, "reloads", "Configuration reloads by result");
        let cloud_requests = registered(
            &mut registry,
            "cloud_requests",
            "Native-credential requests to clouds by cloud and outcome (issued, refused, unavailable)",
        );
        let cloud_latency: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(CLOUD_LATENCY_BUCKETS));
        registry.register(
            "cloud_request_duration_seconds",
            "Time a cloud took to answer a native-credential request, retries included",
            cloud_latency.clone(),
        );
        let audit_queue_full = registered(
            &mut registry,
            "audit_queue_full",
            "Audit records that waited for room in the full audit queue (the request waited; no record is dropped)",
        );
        let audit_write_errors = registered(
            &mut registry,
            "audit_write_errors",
            "Writes of queued audit lines to the audit sink that failed",
        );
        let rate_limited = registered(
            &mut registry,
            "rate_limited",
            "Requests to /token refused with 429 by limit (per_issuer, per_subject, per_client_address)",
        );
        let rate_limit_untracked = registered(
            &mut registry,
            "rate_limit_untracked",
            "Requests let through uncounted because a limit's table of keys was full",
        );
        let token_latency: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(TOKEN_LATENCY_BUCKETS));
        registry.register(
            "token_request_duration_seconds",
            "Time /token took to answer, by outcome (allow, deny), audit line included",
            token_latency.clone(),
        );
        let stage_latency: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(TOKEN_LATENCY_BUCKETS));
        registry.register(
            "token_stage_duration_seconds",
            "Time each stage of /token took: verify (issuer keys, a fetch when needed, and the signature), replay (the store), sign",
            stage_latency.clone(),
        );
        let fetch_latency: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(FETCH_LATENCY_BUCKETS));
        registry.register(
            "jwks_fetch_duration_seconds",
            "Time an issuer's discovery and JWKS fetch took, by issuer",
            fetch_latency.clone(),
        );
        let resolve = |family: &Family<Labels, Histogram, fn() -> Histogram>,
                       label: &'static str,
                       values: &[&'static str]| {
            values
                .iter()
                .map(|&v| (v, family.get_or_create(&vec![(label, v.to_string())]).clone()))
                .collect::<Vec<_>>()
        };
        let token_latency = resolve(&token_latency, "outcome", &["allow", "deny"]);
        let stage_latency = resolve(&stage_latency, "stage", &["verify", "replay", "sign"]);
        let exchange_counters = EXCHANGE_OUTCOMES
            .iter()
            .map(|&(outcome, error)| {
                let labels = vec![("outcome", outcome.to_string()), ("error", error.to_string())];
                (outcome, error, exchanges.get_or_create(&labels).clone())
            })
            .collect();
        Metrics {
            registry,
            rate_limited,
            rate_limit_untracked,
            token_latency,
            stage_latency,
            fetch_latency,
            audit_queue_full,
            audit_write_errors,
            exchange_counters,
            cloud_requests,
            cloud_latency,
            rules_generation,
            reloads,
            exchanges,
            jwks_fetches,
            replay_errors,
            replay_store_up,
            issuer_keys,
            rules_loaded,
        }
    }

    /// `outcome`: `allow` or `deny`.
    pub fn token_request_duration(&self, outcome: &'static str, took: std::time::Duration) {
        if let Some((_, h)) = self.token_latency.iter().find(|(o, _)| *o == outcome) {
            h.observe(took.as_secs_f64());
        }
    }

    /// `stage`: `verify`, `replay` or `sign`.
    pub fn stage_duration(&self, stage: &'static str, took: std::time::Duration) {
        if let Some((_, h)) = self.stage_latency.iter().find(|(s, _)| *s == stage) {
            h.observe(took.as_secs_f64());
        }
    }

    pub fn jwks_fetch_duration(&self, issuer: &str, took: std::time::Duration) {
        self.fetch_latency
            .get_or_create(&vec![("issuer", issuer.to_string())])
            .observe(took.as_secs_f64());
    }

    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&vec![("limit", limit.to_string())])
            .inc();
    }

    pub fn rate_limit_untracked(&self, limit: &'static str) {
        self.rate_limit_untracked
            .get_or_create(&vec![("limit", limit.to_string())])
            .inc();
    }

    pub fn exchange(&self, outcome: &'static str, error: &'static str) {
        if let Some((_, _, counter)) = self
            .exchange_counters
            .iter()
            .find(|(o, e, _)| *o == outcome && *e == error)
        {
            counter.inc();
            return;
        }
        self.exchanges
            .get_or_create(&vec![
                ("outcome", outcome.to_string()),
                ("error", error.to_string()),
            ])
            .inc();
    }

    /// One native-credential request to `cloud`, answered with `outcome` after `seconds`.
    pub fn cloud_request(&self, cloud: &'static str, outcome: &'static str, seconds: f64) {
        self.cloud_requests
            .get_or_create(&vec![
                ("cloud", cloud.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.cloud_latency
            .get_or_create(&vec![("cloud", cloud.to_string())])
            .observe(seconds);
    }

    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.jwks_fetches
            .get_or_create(&vec![
                ("issuer", issuer.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    pub fn replay_error(&self) {
        self.replay_errors.inc();
    }

    pub fn set_replay_store_up(&self, up: bool) {
        self.replay_store_up.set(i64::from(up));
    }

    pub fn set_issuer_keys(&self, issuer: &str, n: usize) {
        self.issuer_keys
            .get_or_create(&vec![("issuer", issuer.to_string())])
            .set(n as i64);
    }

    pub fn set_rules_loaded(&self, n: usize) {
        self.rules_loaded.set(n as i64);
    }

    pub fn set_generation(&self, generation: u64) {
        self.rules_generation.set(generation as i64);
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    /// The audit log's counters (it is made after the metrics).
    pub fn audit_queue_full(&self) -> Counter {
        self.audit_queue_full.clone()
    }

    pub fn audit_write_errors(&self) -> Counter {
        self.audit_write_errors.clone()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::new();
        m.exchange("allow", "");
        m.jwks_fetch("gha", false);
        m.set_replay_store_up(true);
        let text = m.render();
        assert!(
            text.contains("fedbroker_token_exchanges_total{outcome=\"allow\",error=\"\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fedbroker_jwks_fetches_total{issuer=\"gha\",result=\"error\"} 1"),
            "{text}"
        );
        assert!(text.contains("fedbroker_replay_store_up 1"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
