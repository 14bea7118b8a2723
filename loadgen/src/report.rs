//! Figures: percentiles, the human-readable table and the JSON document.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::crypto::Bound;
use crate::setup::Rss;

/// Nearest-rank percentile of sorted values: the smallest value with at least p% of
/// the values at or below it. None when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999 despite binary fractions.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub broker: String,
    pub broker_version: String,
    pub cores: usize,
    pub issuers: usize,
    pub rules: usize,
    pub subject_alg: String,
    pub issued_alg: String,
    pub replay: String,
    pub audit: String,
    /// 1-minute load average (/proc/loadavg) before the setup and after the run: other
    /// work sharing the cores.
    pub loadavg_before: Option<f64>,
    pub loadavg_after: Option<f64>,
    pub startup_ms: f64,
    pub rss_after_startup: Rss,
    /// The scale run: [`SETTLE`] after startup, once the allocator has given back what
    /// the load freed (the broker's jemalloc returns memory unused for about a second).
    pub rss_settled: Option<Rss>,
    pub rss_after_run: Option<Rss>,
    pub load: Option<LoadFigures>,
    pub reload: Option<ReloadFigures>,
    pub crypto_bound: Option<Bound>,
    pub openssl_bound: Option<Bound>,
    pub openssl_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadFigures {
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub tokens: usize,
    pub warmup_s: f64,
    pub window_s: f64,
    pub ran_out_of_tokens: bool,
    pub requests: u64,
    pub ok: u64,
    pub req_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub statuses: BTreeMap<u16, u64>,
    pub non_200: u64,
    pub first_error: Option<String>,
    pub connection_errors: u64,
    pub first_connection_error: Option<String>,
    pub broker_cpu_ms_per_req: Option<f64>,
    pub broker_cpu_cores: f64,
    pub loadgen_cpu_ms_per_req: Option<f64>,
    pub redis_cpu_ms_per_req: Option<f64>,
    pub loadgen_cpu_cores: f64,
    pub pct_of_crypto_bound: Option<f64>,
    pub pct_of_openssl_bound: Option<f64>,
    /// req/s as a share of cores × 1000 / crypto CPU ms per exchange: the bound if every
    /// core were the broker's, whatever else ran meanwhile.
    pub pct_of_cpu_bound: Option<f64>,
    /// The crypto's CPU per exchange (aws-lc-rs, thread CPU time) as a share of the
    /// broker's CPU per request: robust to other processes sharing the cores.
    pub crypto_pct_of_broker_cpu: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadFigures {
    pub reload_ms: f64,
    /// Highest VmRSS seen, sampling every 10 ms from SIGHUP to the reload's end.
    pub peak_rss_kib: u64,
    pub rss_after: Rss,
    /// [`SETTLE`] after the reload.
    pub rss_settled: Rss,
}

/// How long the scale run waits before reading the settled RSS.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn opt(v: Option<f64>, unit: &str, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}{unit}"))
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(s, "  {k:<28} {v}");
    };
    row("server", format!("{} ({})", r.broker, r.broker_version));
    row(
        "setup",
        format!(
            "{} issuers, {} rules, subject {}, issued {}, replay {}, audit {}, {} cores",
            r.issuers, r.rules, r.subject_alg, r.issued_alg, r.replay, r.audit, r.cores
        ),
    );
    row(
        "load average (1 min)",
        format!(
            "{} before, {} after",
            opt(r.loadavg_before, "", 2),
            opt(r.loadavg_after, "", 2)
        ),
    );
    row("startup (spawn to ready)", format!("{:.0} ms", r.startup_ms));
    row(
        "RSS after startup",
        format!(
            "{} (HWM {})",
            mib(r.rss_after_startup.rss_kib),
            mib(r.rss_after_startup.hwm_kib)
        ),
    );
    if let Some(settled) = &r.rss_settled {
        row(
            &format!("RSS {} s after startup", SETTLE.as_secs()),
            mib(settled.rss_kib),
        );
    }
    if let Some(l) = &r.load {
        row(
            "load",
            format!(
                "c={}{}, {} tokens, {:.1} s measured after {:.1} s warm-up{}",
                l.concurrency,
                l.rate
                    .map_or_else(String::new, |r| format!(", paced at {r:.0} req/s")),
                l.tokens,
                l.window_s,
                l.warmup_s,
                if l.ran_out_of_tokens {
                    " (TOKENS RAN OUT: window cut short; mint more with --tokens)"
                } else {
                    ""
                }
            ),
        );
        row(
            "throughput",
            format!("{:.0} req/s ({} requests, {} ok)", l.req_per_s, l.requests, l.ok),
        );
        row(
            "latency p50 / p99 / p999",
            format!(
                "{} / {} / {} (max {})",
                opt(l.p50_ms, " ms", 3),
                opt(l.p99_ms, " ms", 3),
                opt(l.p999_ms, " ms", 3),
                opt(l.max_ms, " ms", 3)
            ),
        );
        let statuses: Vec<String> = l.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        row("statuses", statuses.join(", "));
        if let Some(e) = &l.first_error {
            row("first error", e.clone());
        }
        if l.connection_errors > 0 {
            row(
                "connection errors",
                format!(
                    "{} (first: {})",
                    l.connection_errors,
                    l.first_connection_error.as_deref().unwrap_or("")
                ),
            );
        }
        row(
            "server CPU",
            format!(
                "{} per request, {:.2} cores",
                opt(l.broker_cpu_ms_per_req, " ms", 3),
                l.broker_cpu_cores
            ),
        );
        if let Some(p) = l.pct_of_cpu_bound {
            row(
                "% of the all-cores bound",
                format!("{p:.1}% (cores x 1 / crypto CPU per exchange)"),
            );
        }
        if let Some(p) = l.crypto_pct_of_broker_cpu {
            row(
                "  of which crypto",
                format!("{p:.0}% (verify + sign CPU time, measured apart)"),
            );
        }
        if let Some(ms) = l.redis_cpu_ms_per_req {
            row("redis-server CPU", format!("{ms:.3} ms per request"));
        }
        row(
            "loadgen CPU",
            format!(
                "{} per request, {:.2} cores",
                opt(l.loadgen_cpu_ms_per_req, " ms", 3),
                l.loadgen_cpu_cores
            ),
        );
    }
    for (name, b, pct) in [
        (
            "crypto bound (aws-lc-rs)",
            &r.crypto_bound,
            r.load.as_ref().and_then(|l| l.pct_of_crypto_bound),
        ),
        (
            "crypto bound (openssl)",
            &r.openssl_bound,
            r.load.as_ref().and_then(|l| l.pct_of_openssl_bound),
        ),
    ] {
        if let Some(b) = b {
            row(
                name,
                format!(
                    "{:.0} exchanges/s ({} verify {:.0}/s, {} sign {:.0}/s{}){}",
                    b.exchanges_per_s,
                    b.verify_alg.as_str(),
                    b.verify_per_s,
                    b.sign_alg.as_str(),
                    b.sign_per_s,
                    b.cpu_ms_per_exchange
                        .map_or_else(String::new, |ms| format!(", {ms:.3} ms CPU per verify + sign")),
                    pct.map_or_else(String::new, |p| format!("; the load reached {p:.1}% of it"))
                ),
            );
        }
    }
    if let Some(e) = &r.openssl_error {
        row("openssl speed", format!("not measured: {e}"));
    }
    if let Some(rl) = &r.reload {
        row("reload (SIGHUP to done)", format!("{:.0} ms", rl.reload_ms));
        row("peak RSS during reload", mib(rl.peak_rss_kib));
        row(
            "RSS after reload",
            format!(
                "{} (HWM {})",
                mib(rl.rss_after.rss_kib),
                mib(rl.rss_after.hwm_kib)
            ),
        );
        row(
            &format!("RSS {} s after reload", SETTLE.as_secs()),
            mib(rl.rss_settled.rss_kib),
        );
    }
    if let Some(a) = &r.rss_after_run {
        row(
            "RSS after the run",
            format!("{} (HWM {})", mib(a.rss_kib), mib(a.hwm_kib)),
        );
    }
    s
}

/// Broker against peer, from two reports of the same invocation.
pub fn render_ratios(broker: &Report, peer: &Report) -> String {
    let mut s = String::from("broker / peer (same tokens, settings and machine, one after the other)\n");
    let (Some(b), Some(p)) = (&broker.load, &peer.load) else {
        s.push_str("  no load figures\n");
        return s;
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_string(),
    };
    let mut row = |k: &str, bv: String, pv: String, r: String| {
        let _ = writeln!(s, "  {k:<28} {bv:>14} {pv:>14}   {r}");
    };
    row("", "broker".into(), "peer".into(), "ratio".into());
    row(
        "throughput",
        format!("{:.0} req/s", b.req_per_s),
        format!("{:.0} req/s", p.req_per_s),
        format!("{} broker/peer", ratio(Some(b.req_per_s), Some(p.req_per_s))),
    );
    row(
        "server CPU per request",
        opt(b.broker_cpu_ms_per_req, " ms", 3),
        opt(p.broker_cpu_ms_per_req, " ms", 3),
        format!(
            "{} peer/broker",
            ratio(p.broker_cpu_ms_per_req, b.broker_cpu_ms_per_req)
        ),
    );
    for (name, bv, pv) in [
        ("latency p50", b.p50_ms, p.p50_ms),
        ("latency p99", b.p99_ms, p.p99_ms),
    ] {
        row(
            name,
            opt(bv, " ms", 3),
            opt(pv, " ms", 3),
            format!("{} peer/broker", ratio(pv, bv)),
        );
    }
    let rss = |r: &Report| r.rss_after_run.map(|x| x.rss_kib as f64);
    row(
        "RSS after the run",
        rss(broker).map_or_else(|| "-".into(), |k| mib(k as u64)),
        rss(peer).map_or_else(|| "-".into(), |k| mib(k as u64)),
        format!("{} peer/broker", ratio(rss(peer), rss(broker))),
    );
    row(
        "% of the crypto bound",
        opt(b.pct_of_crypto_bound, "%", 1),
        opt(p.pct_of_crypto_bound, "%", 1),
        "(aws-lc-rs, same run)".into(),
    );
    row(
        "non-200 answers",
        b.non_200.to_string(),
        p.non_200.to_string(),
        String::new(),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), Some(500));
        assert_eq!(percentile(&v, 99.0), Some(990));
        assert_eq!(percentile(&v, 99.9), Some(999));
        assert_eq!(percentile(&v, 100.0), Some(1000));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        let small = [10, 20, 30, 40];
        assert_eq!(percentile(&small, 50.0), Some(20));
        assert_eq!(percentile(&small, 51.0), Some(30));
    }

    #[test]
    fn ratios_divide_broker_by_peer_for_throughput_and_peer_by_broker_for_cost() {
        let load = |rps: f64, cpu: f64| LoadFigures {
            req_per_s: rps,
            broker_cpu_ms_per_req: Some(cpu),
            p50_ms: Some(cpu),
            p99_ms: Some(cpu * 2.0),
            ..LoadFigures::default()
        };
        let broker = Report {
            load: Some(load(5000.0, 0.2)),
            ..Report::default()
        };
        let peer = Report {
            load: Some(load(2000.0, 0.9)),
            ..Report::default()
        };
        let text = render_ratios(&broker, &peer);
        assert!(text.contains("2.50x broker/peer"), "{text}");
        assert!(text.contains("4.50x peer/broker"), "{text}");
        let none = render_ratios(&broker, &Report::default());
        assert!(none.contains("no load figures"), "{none}");
    }
}
