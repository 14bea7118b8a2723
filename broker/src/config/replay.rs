//! `replay:`: where the marks of used tokens live (memory or Redis), and whether
//! replicas can share them.

use federation_rules::duration::parse_duration;
use marked_yaml::Node;

use super::error::Errors;
use super::model::*;
use super::raw::RawReplay;
use super::yaml::child;

/// Why a Redis URL is refused. The message never repeats the URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUrlError {
    #[error("must be a redis:// or rediss:// (TLS) URL")]
    Scheme,
    #[error("not a usable Redis URL: {0}")]
    Unusable(String),
}

/// Why a millisecond duration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MillisError {
    #[error("invalid duration `{0}`: write e.g. `250ms` or `2s`")]
    Millis(String),
    /// `federation_rules::parse_duration`'s message, which names the input.
    #[error("{0}")]
    Duration(String),
}

pub(super) fn build_replay(raw: RawReplay, node: Option<&Node>, errors: &mut Errors) -> ReplayConfig {
    let at = |k: &str| node.and_then(|n| child(n, k));
    let on_unavailable = match raw.on_unavailable.as_deref() {
        None | Some("fail_closed") => OnUnavailable::FailClosed,
        Some("fail_open") => OnUnavailable::FailOpen,
        Some(other) => {
            errors.at(
                at("on_unavailable"),
                "replay.on_unavailable",
                format!("unknown value `{other}`; expected fail_closed or fail_open"),
            );
            OnUnavailable::FailClosed
        }
    };
    let replicas = raw.replicas.unwrap_or(1);
    if replicas == 0 {
        errors.at(at("replicas"), "replay.replicas", "must be at least 1");
    }
    let backend = match raw.backend.as_deref() {
        None | Some("memory") => {
            for (key, given) in [
                ("redis_url", raw.redis_url.is_some()),
                ("redis_cluster_urls", raw.redis_cluster_urls.is_some()),
                ("key_prefix", raw.key_prefix.is_some()),
                ("command_timeout", raw.command_timeout.is_some()),
            ] {
                if given {
                    errors.at(
                        at(key),
                        format!("replay.{key}"),
                        "only used with `backend: redis`",
                    );
                }
            }
            ReplayBackend::Memory
        }
        Some("redis") => match build_redis(&raw, node, errors) {
            Some(redis) => ReplayBackend::Redis(redis),
            None => ReplayBackend::Memory,
        },
        Some(other) => {
            errors.at(
                at("backend"),
                "replay.backend",
                format!("unknown backend `{other}`; expected memory or redis"),
            );
            ReplayBackend::Memory
        }
    };
    ReplayConfig {
        backend,
        on_unavailable,
        replicas: replicas.max(1),
    }
}

/// `backend: redis`: exactly one of `redis_url` / `redis_cluster_urls`, URLs that the
/// client accepts (parsed only: no connection is made while loading).
pub(super) fn build_redis(raw: &RawReplay, node: Option<&Node>, errors: &mut Errors) -> Option<RedisConfig> {
    let at = |k: &str| node.and_then(|n| child(n, k));
    let before = errors.list.len();
    let mut check_url = |url: &str, key: &str, field: String| {
        if let Err(e) = redis_url_problem(url) {
            errors.at(at(key), field, e.to_string());
        }
    };
    let target = match (&raw.redis_url, &raw.redis_cluster_urls) {
        (Some(url), None) => {
            check_url(url, "redis_url", "replay.redis_url".into());
            Some(RedisTarget::Standalone(url.clone()))
        }
        (None, Some(urls)) if !urls.is_empty() => {
            for (i, url) in urls.iter().enumerate() {
                check_url(
                    url,
                    "redis_cluster_urls",
                    format!("replay.redis_cluster_urls[{i}]"),
                );
            }
            Some(RedisTarget::Cluster(urls.clone()))
        }
        (None, Some(_)) => {
            errors.at(
                at("redis_cluster_urls"),
                "replay.redis_cluster_urls",
                "must list at least one node",
            );
            None
        }
        (None, None) => {
            errors.at(
                node,
                "replay.redis_url",
                "`backend: redis` needs `redis_url` (one server) or `redis_cluster_urls` (a Redis Cluster)",
            );
            None
        }
        (Some(_), Some(_)) => {
            errors.at(
                at("redis_cluster_urls"),
                "replay.redis_cluster_urls",
                "give either `redis_url` or `redis_cluster_urls`, not both",
            );
            None
        }
    };
    let key_prefix = raw
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string());
    if key_prefix.is_empty() {
        errors.at(at("key_prefix"), "replay.key_prefix", "must not be empty");
    }
    let command_timeout = match raw.command_timeout.as_deref() {
        None => DEFAULT_REDIS_COMMAND_TIMEOUT,
        Some(text) => match parse_millis(text) {
            Ok(d) if (10..=30_000).contains(&d.as_millis()) => d,
            Ok(_) => {
                errors.at(
                    at("command_timeout"),
                    "replay.command_timeout",
                    "must be between 10ms and 30s",
                );
                DEFAULT_REDIS_COMMAND_TIMEOUT
            }
            Err(e) => {
                errors.at(at("command_timeout"), "replay.command_timeout", e.to_string());
                DEFAULT_REDIS_COMMAND_TIMEOUT
            }
        },
    };
    let target = target?;
    (errors.list.len() == before).then_some(RedisConfig {
        target,
        key_prefix,
        command_timeout,
    })
}

/// Why the redis client would refuse `url`, if it would. The message never repeats the
/// URL (it may hold a password).
pub(super) fn redis_url_problem(url: &str) -> Result<(), RedisUrlError> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    if !matches!(scheme, "redis" | "rediss") {
        return Err(RedisUrlError::Scheme);
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| RedisUrlError::Unusable(e.to_string()))
}

/// A duration with millisecond precision: `250ms`, or any duration `90s`, `1m` takes.
pub(super) fn parse_millis(text: &str) -> Result<std::time::Duration, MillisError> {
    if let Some(ms) = text.trim().strip_suffix("ms") {
        return ms
            .trim()
            .parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|_| MillisError::Millis(text.to_string()));
    }
    parse_duration(text)
        .map(std::time::Duration::from_secs)
        .map_err(|e| MillisError::Duration(e.to_string()))
}

/// With more than one replica, a `one_time` issuer needs marks that every replica sees.
pub(super) fn check_replicas(
    replay: &ReplayConfig,
    issuers: &[IssuerConfig],
    node: Option<&Node>,
    errors: &mut Errors,
) {
    if replay.replicas <= 1 || replay.backend != ReplayBackend::Memory {
        return;
    }
    let one_time: Vec<&str> = issuers
        .iter()
        .filter(|i| i.replay == ReplayMode::OneTime)
        .map(|i| i.name.as_str())
        .collect();
    if !one_time.is_empty() {
        errors.at(
            node.and_then(|n| child(n, "replicas")).or(node),
            "replay.replicas",
            format!(
                "{} replicas cannot share the memory backend: a token accepted by one would be accepted again by another. \
                 Use `backend: redis`, or `replay: reusable` on issuer(s) {}",
                replay.replicas,
                one_time.join(", ")
            ),
        );
    }
}
