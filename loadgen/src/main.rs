//! fedbroker-load: sets up M issuers with static key sets and N simple rules, pre-mints
//! subject tokens, starts the real broker and drives `POST /token` over keep-alive
//! HTTP/1.1; reports throughput, latency, errors, CPU per request, memory and the
//! machine's crypto bound measured in the same run. See docs/performance.md.

mod crypto;
mod drive;
mod peer;
mod report;
mod setup;
mod tokens;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use crate::crypto::Alg;
use crate::report::{LoadFigures, ReloadFigures, Report, percentile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Replay {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Audit {
    /// audit.path: a file in the work dir
    File,
    /// no audit.path: audit lines on the broker's stderr, sent to broker.log in the work dir
    Stderr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PeerKind {
    /// panva's oidc-provider (npm) with an RFC 8693 grant: loadgen/peer/oidc-provider
    OidcProvider,
}

#[derive(Debug, Parser)]
#[command(name = "fedbroker-load", about = "Load generator for fedbroker's POST /token")]
struct Args {
    /// The broker binary.
    #[arg(long, default_value = "target/release/fedbroker")]
    broker: PathBuf,
    /// Issuers, each with its own static key set.
    #[arg(long, default_value_t = 1)]
    issuers: usize,
    /// Distinct subject key pairs (issuer i uses key i % N); default: one per issuer.
    /// Fewer makes setups with many RSA issuers quick to generate (about 0.1 s per RSA
    /// key and core); each issuer still gets its own JWK (own kid), but a broker that
    /// shares identical key material would hold less: use distinct keys (ES256 or EdDSA
    /// are quick) for memory figures.
    #[arg(long)]
    issuer_keys: Option<usize>,
    /// Simple rules: rule i matches issuer i % issuers and one service account subject.
    #[arg(long, default_value_t = 1)]
    rules: usize,
    /// Algorithm of the broker's issued tokens (signing.algorithm).
    #[arg(long, value_enum, default_value = "RS256")]
    issued_alg: Alg,
    /// Algorithm of the subject tokens.
    #[arg(long, value_enum, default_value = "RS256")]
    subject_alg: Alg,
    /// Replay store: memory, or redis (a redis-server of its own on a free port).
    #[arg(long, value_enum, default_value = "memory")]
    replay: Replay,
    #[arg(long, value_enum, default_value = "file")]
    audit: Audit,
    /// Pre-minted subject tokens (each used once); default: 60,000, or enough for --rate.
    #[arg(long)]
    tokens: Option<usize>,
    /// Connections, each in its own task.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds; 0 means the scale run: start, reload (SIGHUP), stop.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measured window (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Total requests per second, paced over the connections (latency counted from when
    /// each request was due); default: as fast as the broker answers.
    #[arg(long)]
    rate: Option<f64>,
    /// The scale run (same as --duration 0).
    #[arg(long)]
    scale: bool,
    /// Skip the crypto bound measurement (aws-lc-rs and openssl speed).
    #[arg(long)]
    no_crypto_bound: bool,
    /// Keep everything here instead of a temporary directory (must be empty or absent).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Drive the peer instead of the broker: the same subject issuer, tokens and report
    /// (one issuer, one rule-equivalent, memory replay). Needs node and npm; runs `npm ci`
    /// in --peer-dir when its node_modules is missing.
    #[arg(long, value_enum)]
    peer: Option<PeerKind>,
    /// The peer's directory (package.json, package-lock.json, server.js).
    #[arg(long, default_value = "loadgen/peer/oidc-provider")]
    peer_dir: PathBuf,
    /// Run the broker, then the peer (--peer, default oidc-provider), with the same
    /// settings and equal shares of one batch of tokens; print both reports and the ratios.
    #[arg(long)]
    side_by_side: bool,
    /// Also write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one measured run drives.
enum Target<'a> {
    Broker(&'a std::path::Path),
    Peer(&'a peer::Peer),
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.issuers == 0 || args.rules == 0 || args.concurrency == 0 {
        bail!("--issuers, --rules and --concurrency must be at least 1");
    }
    let scale = args.scale || args.duration == 0.0;
    let with_peer = args.peer.is_some() || args.side_by_side;
    if with_peer {
        if args.issuers > 1 || args.rules > 1 {
            bail!("--peer and --side-by-side take one issuer and one rule (no --issuers/--rules over 1)");
        }
        if args.replay != Replay::Memory {
            bail!("--peer and --side-by-side measure memory replay only (the peer has no Redis store)");
        }
        if scale {
            bail!("--peer and --side-by-side measure a load, not the scale run");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Ctrl-C: stop the broker, the peer and Redis before exiting (a signal skips destructors).
    rt.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping the servers");
            setup::terminate_children();
            std::process::exit(130);
        }
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let broker = if args.peer.is_none() || args.side_by_side {
        Some(std::fs::canonicalize(&args.broker).with_context(|| {
            format!(
                "the broker binary {} (build it: cargo build --release -p broker)",
                args.broker.display()
            )
        })?)
    } else {
        None
    };
    let peer = if with_peer {
        Some(peer::prepare(&args.peer_dir)?)
    } else {
        None
    };
    let (_tmp, dir) = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            if std::fs::read_dir(d)?.next().is_some() {
                bail!("--work-dir {} is not empty", d.display());
            }
            (None, std::fs::canonicalize(d)?)
        }
        None => {
            let t = tempfile::Builder::new().prefix("fedbroker-load").tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let base = Report {
        cores,
        issuers: args.issuers,
        rules: args.rules,
        subject_alg: args.subject_alg.as_str().into(),
        issued_alg: args.issued_alg.as_str().into(),
        replay: format!("{:?}", args.replay).to_lowercase(),
        ..Report::default()
    };
    let mut bounds = (None, None, None);
    if !scale && !args.no_crypto_bound {
        eprintln!("measuring the crypto bound on {cores} threads ...");
        bounds.0 = Some(crypto::measure(
            args.subject_alg,
            args.issued_alg,
            cores,
            Duration::from_millis(1500),
        )?);
        match crypto::openssl_speed(args.subject_alg, args.issued_alg, cores) {
            Ok(b) => bounds.1 = Some(b),
            Err(e) => bounds.2 = Some(format!("{e:#}")),
        }
    }

    let t = Instant::now();
    let distinct = args.issuer_keys.unwrap_or(args.issuers).clamp(1, args.issuers);
    let keys = setup::issuer_keys(args.subject_alg, distinct, cores)?;
    eprintln!(
        "{distinct} issuer key pairs in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let runs = if args.side_by_side { 2 } else { 1 };
    let mut tokens = if scale {
        Vec::new()
    } else {
        let each = args.tokens.unwrap_or_else(|| match args.rate {
            Some(r) => (r * (args.warmup + args.duration) * 1.05) as usize + args.concurrency,
            None => 60_000,
        });
        let count = each * runs;
        let t = Instant::now();
        let minted = tokens::mint(&tokens::Plan {
            count,
            issuers: args.issuers,
            rules: args.rules,
            alg: args.subject_alg,
            keys: &keys,
            threads: cores,
            lifetime: 3 * 3600,
        })?;
        eprintln!(
            "{count} subject tokens minted in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        minted
    };

    let mut reports = Vec::new();
    if let Some(b) = &broker {
        let mine = if args.side_by_side {
            let rest = tokens.split_off(tokens.len() / 2);
            std::mem::replace(&mut tokens, rest)
        } else {
            std::mem::take(&mut tokens)
        };
        let report = Report {
            broker: b.display().to_string(),
            broker_version: broker_version(b),
            audit: format!("{:?}", args.audit).to_lowercase(),
            crypto_bound: bounds.0.clone(),
            openssl_bound: bounds.1.clone(),
            openssl_error: bounds.2.clone(),
            ..base.clone()
        };
        reports.push(measure(
            &args,
            &rt,
            &dir,
            &keys,
            Target::Broker(b),
            mine,
            report,
            scale,
        )?);
    }
    if let Some(p) = &peer {
        let mine = std::mem::take(&mut tokens)
            .iter()
            .map(|t| peer::form_body(t))
            .collect();
        let report = Report {
            broker: format!("node server.js in {}", p.dir.display()),
            broker_version: p.version.clone(),
            audit: "none (oidc-provider writes no audit line)".into(),
            crypto_bound: bounds.0.clone(),
            openssl_bound: bounds.1.clone(),
            openssl_error: bounds.2.clone(),
            ..base.clone()
        };
        let work = if args.side_by_side {
            dir.join("peer")
        } else {
            dir.clone()
        };
        reports.push(measure(
            &args,
            &rt,
            &work,
            &keys,
            Target::Peer(p),
            mine,
            report,
            scale,
        )?);
    }
    drop(keys);

    let mut text = String::new();
    for r in &reports {
        text.push_str(&report::render(r));
        text.push('\n');
    }
    if let [b, p] = reports.as_slice() {
        text.push_str(&report::render_ratios(b, p));
    }
    println!("{}", text.trim_end());
    if let Some(path) = &args.json {
        let json = match reports.as_slice() {
            [b, p] => serde_json::to_string_pretty(&serde_json::json!({"broker": b, "peer": p}))?,
            [one] => serde_json::to_string_pretty(one)?,
            _ => bail!("no report"),
        };
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.work_dir.is_some() {
        eprintln!("work dir kept: {}", dir.display());
    }
    Ok(())
}

/// Starts the target (broker or peer), drives it, stops it; returns the report.
#[allow(clippy::too_many_arguments)]
fn measure(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    keys: &[crypto::SigningKey],
    target: Target<'_>,
    tokens: Vec<String>,
    mut report: Report,
    scale: bool,
) -> Result<Report> {
    report.loadavg_before = loadavg();
    let mut redis = None;
    let (mut proc, port, log) = match target {
        Target::Broker(broker) => {
            let redis_url = if args.replay == Replay::Redis {
                let (guard, url) = setup::start_redis(dir)?;
                redis = Some(guard);
                Some(url)
            } else {
                None
            };
            let settings = setup::Settings {
                issuers: args.issuers,
                rules: args.rules,
                subject_alg: args.subject_alg,
                issued_alg: args.issued_alg,
                redis_url: redis_url.as_deref(),
                audit_file: args.audit == Audit::File,
                max_connections: args.concurrency + 64,
            };
            let layout = setup::write_config(dir, &settings, keys)?;
            setup::generate_signing_key(broker, &layout.config)?;
            let log = dir.join("broker.log");
            let spawned = Instant::now();
            let mut proc = setup::spawn_broker(broker, &layout.config, &log)?;
            let ready = rt.block_on(setup::wait_ready(
                &mut proc,
                layout.port,
                Duration::from_secs(120),
            ));
            if let Err(e) = ready {
                bail!("{e:#}\n--- broker.log (end) ---\n{}", log_tail(&log));
            }
            report.startup_ms = spawned.elapsed().as_secs_f64() * 1000.0;
            (proc, layout.port, log)
        }
        Target::Peer(p) => {
            let key = keys.first().context("no issuer key")?;
            let spawned = Instant::now();
            let (mut proc, port) = peer::spawn(p, dir, key, args.subject_alg, args.issued_alg)?;
            let log = dir.join("peer.log");
            let ready = rt.block_on(peer::wait_ready(&mut proc, port, Duration::from_secs(60)));
            if let Err(e) = ready {
                bail!("{e:#}\n--- peer.log (end) ---\n{}", log_tail(&log));
            }
            report.startup_ms = spawned.elapsed().as_secs_f64() * 1000.0;
            (proc, port, log)
        }
    };
    let pid = proc.pid();
    report.rss_after_startup = setup::rss(pid)?;
    eprintln!("{} ready in {:.0} ms", proc.name, report.startup_ms);
    let redis_pid = redis.as_ref().map(setup::Guard::pid);
    let result = rt.block_on(async {
        if scale {
            tokio::time::sleep(report::SETTLE).await;
            report.rss_settled = Some(setup::rss(pid)?);
            report.reload = Some(reload(pid, port).await?);
        } else {
            let load = drive::Load {
                port,
                concurrency: args.concurrency,
                warmup: Duration::from_secs_f64(args.warmup),
                duration: Duration::from_secs_f64(args.duration),
                rate: args.rate,
                broker_pid: pid,
                redis_pid,
                ticks_per_s: setup::clock_ticks(),
            };
            let count = tokens.len();
            let outcome = drive::run(&load, Arc::new(tokens)).await?;
            report.load = Some(figures(args, count, outcome, &report));
        }
        report.rss_after_run = Some(setup::rss(pid)?);
        anyhow::Ok(())
    });
    let stopped = proc.stop();
    drop(redis);
    if let Err(e) = result {
        bail!("{e:#}\n--- {} (end) ---\n{}", log.display(), log_tail(&log));
    }
    stopped?;
    report.loadavg_after = loadavg();
    Ok(report)
}

fn figures(args: &Args, tokens: usize, mut o: drive::Outcome, report: &Report) -> LoadFigures {
    o.latencies_ns.sort_unstable();
    let ms = |p: f64| percentile(&o.latencies_ns, p).map(|ns| ns as f64 / 1e6);
    let requests: u64 = o.statuses.values().sum();
    let ok = o.statuses.get(&200).copied().unwrap_or(0);
    let window = o.window.as_secs_f64();
    let req_per_s = if window > 0.0 {
        requests as f64 / window
    } else {
        0.0
    };
    let per_req = |cpu: f64| (requests > 0).then(|| cpu * 1000.0 / requests as f64);
    let pct = |b: &Option<crypto::Bound>| {
        b.as_ref()
            .filter(|b| b.exchanges_per_s > 0.0)
            .map(|b| req_per_s / b.exchanges_per_s * 100.0)
    };
    LoadFigures {
        concurrency: args.concurrency,
        rate: args.rate,
        tokens,
        warmup_s: args.warmup,
        window_s: window,
        ran_out_of_tokens: o.ran_out,
        requests,
        ok,
        req_per_s,
        p50_ms: ms(50.0),
        p99_ms: ms(99.0),
        p999_ms: ms(99.9),
        max_ms: ms(100.0),
        non_200: requests - ok,
        first_error: o.first_error.map(|(s, b)| format!("HTTP {s}: {b}")),
        connection_errors: o.io_errors,
        first_connection_error: o.first_io_error,
        broker_cpu_ms_per_req: per_req(o.broker_cpu_s),
        broker_cpu_cores: if window > 0.0 {
            o.broker_cpu_s / window
        } else {
            0.0
        },
        loadgen_cpu_ms_per_req: per_req(o.self_cpu_s),
        redis_cpu_ms_per_req: o.redis_cpu_s.and_then(per_req),
        loadgen_cpu_cores: if window > 0.0 { o.self_cpu_s / window } else { 0.0 },
        statuses: o.statuses,
        pct_of_crypto_bound: pct(&report.crypto_bound),
        pct_of_openssl_bound: pct(&report.openssl_bound),
        pct_of_cpu_bound: report
            .crypto_bound
            .as_ref()
            .and_then(|b| b.cpu_ms_per_exchange)
            .map(|ms| req_per_s / (report.cores as f64 * 1000.0 / ms) * 100.0),
        crypto_pct_of_broker_cpu: report
            .crypto_bound
            .as_ref()
            .and_then(|b| b.cpu_ms_per_exchange)
            .zip(per_req(o.broker_cpu_s))
            .map(|(crypto, broker)| crypto / broker * 100.0),
    }
}

/// SIGHUP, then VmRSS every 10 ms until `/readyz` shows a newer rules generation and no
/// load running.
async fn reload(pid: u32, port: u16) -> Result<ReloadFigures> {
    let generation = |body: &str| -> Result<(u64, bool, Option<String>)> {
        let v: serde_json::Value = serde_json::from_str(body).context("/readyz is not JSON")?;
        let rules = &v["rules"];
        let g = rules["generation"]
            .as_u64()
            .context("/readyz has no rules.generation")?;
        let reloading = rules["reloading"].as_bool().unwrap_or(false);
        let error = rules["last_reload_error"].as_str().map(str::to_string);
        Ok((g, reloading, error))
    };
    let (_, body) = setup::get(port, "/readyz").await?;
    let (before, _, error_before) = generation(&body)?;
    let start = Instant::now();
    setup::signal(pid, "HUP")?;
    let mut peak = 0;
    loop {
        peak = peak.max(setup::rss(pid)?.rss_kib);
        let (_, body) = setup::get(port, "/readyz").await?;
        let (g, reloading, error) = generation(&body)?;
        if g > before && !reloading {
            break;
        }
        if let Some(e) = error.filter(|e| Some(e) != error_before.as_ref()) {
            bail!("the reload failed: {e}");
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("no reload finished within 300 s of SIGHUP");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reload_ms = start.elapsed().as_secs_f64() * 1000.0;
    let rss_after = setup::rss(pid)?;
    tokio::time::sleep(report::SETTLE).await;
    Ok(ReloadFigures {
        reload_ms,
        peak_rss_kib: peak.max(rss_after.rss_kib),
        rss_after,
        rss_settled: setup::rss(pid)?,
    })
}

fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn broker_version(broker: &std::path::Path) -> String {
    Command::new(broker)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown: {e}"))
}

fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
