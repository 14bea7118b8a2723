//! Rate limits at `POST /token` (`limits:`): per client address (before the body is
//! read), per issuer and per subject (once the subject token verified, so that nobody can
//! spend another issuer's or subject's budget with forged tokens). Beyond a limit the
//! answer is 429 with `Retry-After`.
//!
//! Each limit is a GCRA (the generic cell rate algorithm, the "leaky bucket as a meter"
//! of ATM networks): a rate of N per period lets N requests through at once, then one
//! every period/N. A key's state is one time, its "theoretical arrival time"; a key whose
//! time has passed holds nothing and is dropped.
//!
//! With `replay.backend: redis`, the counters are shared by the replicas: one Lua script
//! per check, one round trip, on Redis's clock. When Redis does not answer, the replica
//! falls back to its own counters (it still limits, on its share of the traffic) and
//! logs it. Without Redis, each replica counts on its own.
//!
//! Memory: at most [`MAX_KEYS`] keys per limit are tracked in a process; keys whose time
//! has passed are swept first; beyond that a new key is let through untracked (and
//! counted in `fedbroker_rate_limit_untracked_total`) rather than refused, so that
//! filling the table cannot lock out clients it has never seen. IPv6 clients are counted
//! per /64, the block one host is usually given.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::replay::redis_conn::RedisConn;

/// Keys tracked per limit in one process.
pub const MAX_KEYS: usize = 100_000;
const SHARDS: usize = 16;

/// One configured rate: `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// `N/s`, `N/m` or `N/h` (also `N/second`, `N/minute`, `N/hour`), N from 1.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (n, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: expected N/s, N/m or N/h, e.g. 100/s"))?;
        let count: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|c| *c >= 1)
            .ok_or_else(|| format!("`{text}`: the count must be a whole number from 1"))?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("`{text}`: unknown unit `{other}`, expected s, m or h")),
        };
        Ok(Rate { count, period })
    }

    /// The time one request uses up.
    fn emission(self) -> Duration {
        self.period / self.count
    }
}

/// Which limit: the label of metrics and audit lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    PerIssuer,
    PerSubject,
    PerClientAddress,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::PerIssuer => "per_issuer",
            Limit::PerSubject => "per_subject",
            Limit::PerClientAddress => "per_client_address",
        }
    }
}

/// `limits:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsConfig {
    pub per_issuer: Option<Rate>,
    pub per_subject: Option<Rate>,
    pub per_client_address: Option<Rate>,
}

impl LimitsConfig {
    fn rate(&self, limit: Limit) -> Option<Rate> {
        match limit {
            Limit::PerIssuer => self.per_issuer,
            Limit::PerSubject => self.per_subject,
            Limit::PerClientAddress => self.per_client_address,
        }
    }
}

/// A request over a limit: how long until one more would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limit,
    pub retry_after: Duration,
}

impl Exceeded {
    /// `Retry-After`, whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

/// The key a client address is counted under: the address, or its /64 for IPv6.
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The limits in force and their counters.
pub struct Limiter {
    config: LimitsConfig,
    local: [Local; 3],
    redis: Option<(RedisConn, String)>,
    metrics: Arc<Metrics>,
}

impl Limiter {
    /// Limits counted in this process.
    pub fn local(config: LimitsConfig, metrics: Arc<Metrics>) -> Limiter {
        Limiter {
            config,
            local: [Local::new(), Local::new(), Local::new()],
            redis: None,
            metrics,
        }
    }

    /// Limits counted in Redis (keys `<prefix>limit:<limit>:<key digest>`).
    pub(crate) fn shared(
        config: LimitsConfig,
        conn: RedisConn,
        prefix: String,
        metrics: Arc<Metrics>,
    ) -> Limiter {
        Limiter {
            redis: Some((conn, prefix)),
            ..Limiter::local(config, metrics)
        }
    }

    /// Whether any limit is configured.
    pub fn any(&self) -> bool {
        self.config != LimitsConfig::default()
    }

    pub fn configured(&self, limit: Limit) -> bool {
        self.config.rate(limit).is_some()
    }

    /// `limits.per_client_address` for a request from `peer` (none: a request that did
    /// not come over a listener, never limited); `Ok` when that limit is not configured.
    /// Checked before a body is read, at `/token` and at the console's login alike.
    pub async fn check_client(&self, peer: Option<&crate::listener::PeerAddr>) -> Result<(), Exceeded> {
        match peer {
            Some(peer) if self.configured(Limit::PerClientAddress) => {
                self.check(Limit::PerClientAddress, &address_key(peer.0.ip()))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Count one request under `limit` for `key`; `Err` when it is over the limit.
    pub async fn check(&self, limit: Limit, key: &str) -> Result<(), Exceeded> {
        let Some(rate) = self.config.rate(limit) else {
            return Ok(());
        };
        let result = match &self.redis {
            Some((conn, prefix)) => match redis_check(conn, prefix, limit, key, rate).await {
                Ok(result) => result,
                Err(e) => {
                    tracing::warn!(limit = limit.as_str(), error = %e, "Redis did not answer a rate-limit check: counting on this replica only");
                    self.local_check(limit, key, rate)
                }
            },
            None => self.local_check(limit, key, rate),
        };
        if let Err(exceeded) = &result {
            self.metrics.rate_limited(exceeded.limit.as_str());
        }
        result
    }

    fn local_check(&self, limit: Limit, key: &str, rate: Rate) -> Result<(), Exceeded> {
        let local = &self.local[limit as usize];
        match local.check(key, rate, Instant::now()) {
            LocalOutcome::Allowed => Ok(()),
            LocalOutcome::Untracked => {
                self.metrics.rate_limit_untracked(limit.as_str());
                Ok(())
            }
            LocalOutcome::Exceeded(retry_after) => Err(Exceeded { limit, retry_after }),
        }
    }
}

enum LocalOutcome {
    Allowed,
    /// The table is full: let through, not counted.
    Untracked,
    Exceeded(Duration),
}

/// One limit's counters in this process: key → theoretical arrival time.
struct Local {
    shards: Vec<Mutex<HashMap<String, Instant>>>,
}

impl Local {
    fn new() -> Local {
        Local {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn check(&self, key: &str, rate: Rate, now: Instant) -> LocalOutcome {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let shard = &self.shards[(hasher.finish() as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tolerance = rate.period;
        let emission = rate.emission();
        match map.get_mut(key) {
            Some(tat) => {
                let start = (*tat).max(now);
                let next = start + emission;
                if next.saturating_duration_since(now) > tolerance {
                    return LocalOutcome::Exceeded(next.saturating_duration_since(now) - tolerance);
                }
                *tat = next;
                LocalOutcome::Allowed
            }
            None => {
                if map.len() >= MAX_KEYS / SHARDS {
                    map.retain(|_, tat| *tat > now);
                    if map.len() >= MAX_KEYS / SHARDS {
                        return LocalOutcome::Untracked;
                    }
                }
                map.insert(key.to_owned(), now + emission);
                LocalOutcome::Allowed
            }
        }
    }
}

/// GCRA in Redis, on Redis's clock, in one round trip. KEYS[1] the key; ARGV[1] the
/// emission interval and ARGV[2] the tolerance, in microseconds. Returns 0 when allowed,
/// else the microseconds to wait.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + emission
if nxt - now > tolerance then
  return nxt - now - tolerance
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return 0
"#;

async fn redis_check(
    conn: &RedisConn,
    prefix: &str,
    limit: Limit,
    key: &str,
    rate: Rate,
) -> Result<Result<(), Exceeded>, crate::replay::ReplayError> {
    // The key's digest: bounded length, whatever the subject or issuer name.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(GCRA_SCRIPT)
        .arg(1)
        .arg(format!("{prefix}limit:{}:{hex}", limit.as_str()))
        .arg(rate.emission().as_micros() as u64)
        .arg(rate.period.as_micros() as u64);
    let wait = match conn.query(&cmd).await? {
        redis::Value::Int(n) => n.max(0) as u64,
        other => {
            return Err(crate::replay::ReplayError::Unavailable(format!(
                "unexpected answer to the rate-limit script: {other:?}"
            )));
        }
    };
    Ok(if wait == 0 {
        Ok(())
    } else {
        Err(Exceeded {
            limit,
            retry_after: Duration::from_micros(wait),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            Rate::parse("100/s"),
            Ok(Rate {
                count: 100,
                period: Duration::from_secs(1)
            })
        );
        assert_eq!(Rate::parse("5/m").map(|r| r.period), Ok(Duration::from_secs(60)));
        assert_eq!(
            Rate::parse("1/hour").map(|r| r.period),
            Ok(Duration::from_secs(3600))
        );
        for bad in ["100", "0/s", "-1/s", "1.5/s", "10/d", "x/s", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_of_n_then_one_per_interval() {
        let local = Local::new();
        let rate = Rate::parse("4/s").expect("rate");
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(matches!(local.check("k", rate, t0), LocalOutcome::Allowed));
        }
        let LocalOutcome::Exceeded(wait) = local.check("k", rate, t0) else {
            panic!("the fifth at once must wait");
        };
        assert_eq!(wait, Duration::from_millis(250));
        // Another key has its own budget.
        assert!(matches!(local.check("other", rate, t0), LocalOutcome::Allowed));
        // One interval later, one more passes, and only one.
        let t1 = t0 + Duration::from_millis(250);
        assert!(matches!(local.check("k", rate, t1), LocalOutcome::Allowed));
        assert!(matches!(local.check("k", rate, t1), LocalOutcome::Exceeded(_)));
    }

    #[test]
    fn the_table_is_bounded_and_swept() {
        let local = Local::new();
        let rate = Rate::parse("1/s").expect("rate");
        let t0 = Instant::now();
        let mut untracked = 0;
        for i in 0..(MAX_KEYS + 1000) {
            if matches!(local.check(&format!("k{i}"), rate, t0), LocalOutcome::Untracked) {
                untracked += 1;
            }
        }
        assert!(
            untracked >= 1000,
            "beyond the bound, keys go untracked: {untracked}"
        );
        let held: usize = local.shards.iter().map(|s| s.lock().expect("lock").len()).sum();
        assert!(held <= MAX_KEYS, "{held}");
        // Once their times have passed, old keys make room.
        let later = t0 + Duration::from_secs(2);
        assert!(matches!(local.check("fresh", rate, later), LocalOutcome::Allowed));
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(address_key(mapped), "192.0.2.1");
    }
}
