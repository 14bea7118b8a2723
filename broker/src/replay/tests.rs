use super::redis_conn::not_run;
use super::redis_store::eviction_policies;
use super::*;
use std::sync::Arc;

#[tokio::test]
async fn marks_once_until_expiry() {
    let store = MemoryReplayStore::new();
    assert!(store.mark("k", 100, 10).await.expect("mark"));
    assert!(!store.mark("k", 100, 50).await.expect("mark"));
    // Expired: usable again (the token itself would be rejected as expired anyway).
    assert!(store.mark("k", 200, 101).await.expect("mark"));
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn sweeps_expired_entries() {
    let store = MemoryReplayStore::new();
    for i in 0..100 {
        store.mark(&format!("k{i}"), 10, 0).await.expect("mark");
    }
    store.mark("fresh", 100, 20).await.expect("mark");
    assert_eq!(store.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_of_many_parallel_marks_wins() {
    let store = Arc::new(MemoryReplayStore::new());
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.mark("same", 100, 1).await.expect("mark") })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        if t.await.expect("join") {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

#[test]
fn marks_outlive_the_acceptance_window_by_the_margin() {
    assert_eq!(mark_expiry(1_000, 60), 1_062);
    assert_eq!(mark_expiry(1_000, 600), 1_602);
    assert_eq!(mark_expiry(u64::MAX - 1, 600), u64::MAX);
}

#[tokio::test]
async fn memory_mark_refuses_through_the_last_accepted_second_and_the_margin() {
    // Verification accepts `now <= exp + skew`; the mark must refuse all of it.
    let (exp, skew) = (1_000, 60);
    let store = MemoryReplayStore::new();
    assert!(store.mark("k", mark_expiry(exp, skew), exp).await.expect("mark"));
    for now in [exp + skew, exp + skew + MARK_MARGIN_SECS] {
        assert!(
            !store.mark("k", mark_expiry(exp, skew), now).await.expect("mark"),
            "{now}"
        );
    }
}

#[test]
fn a_mark_is_resent_only_after_errors_by_which_redis_did_not_run_it() {
    use redis::{ErrorKind, RedisError, ServerErrorKind as S};
    let server = |kind| RedisError::from((ErrorKind::Server(kind), "test"));
    for kind in [
        S::Moved,
        S::TryAgain,
        S::ClusterDown,
        S::MasterDown,
        S::ReadOnly,
        S::BusyLoading,
    ] {
        assert!(not_run(&server(kind)), "{kind:?}");
    }
    assert!(not_run(&RedisError::from((
        ErrorKind::ClusterConnectionNotFound,
        "none"
    ))));
    // ASK needs ASKING first; the others may have run.
    for kind in [S::Ask, S::ResponseError, S::NoScript] {
        assert!(!not_run(&server(kind)), "{kind:?}");
    }
    for kind in [
        std::io::ErrorKind::ConnectionReset,
        std::io::ErrorKind::UnexpectedEof,
        std::io::ErrorKind::BrokenPipe,
        std::io::ErrorKind::TimedOut,
    ] {
        let e = RedisError::from(std::io::Error::new(kind, "dropped"));
        assert!(!not_run(&e), "{kind:?}: the mark may have been applied");
    }
}

#[test]
fn eviction_policies_are_read_from_one_node_or_every_node() {
    use redis::Value::{Array, BulkString, Map};
    let pair = |policy: &str| {
        Array(vec![
            BulkString(b"maxmemory-policy".to_vec()),
            BulkString(policy.as_bytes().to_vec()),
        ])
    };
    assert_eq!(eviction_policies(&pair("noeviction")), ["noeviction"]);
    let cluster = Map(vec![
        (BulkString(b"127.0.0.1:7000".to_vec()), pair("noeviction")),
        (BulkString(b"127.0.0.1:7001".to_vec()), pair("allkeys-lru")),
    ]);
    assert_eq!(eviction_policies(&cluster), ["noeviction", "allkeys-lru"]);
    assert!(eviction_policies(&Array(vec![])).is_empty());
}

#[test]
fn keys_differ_by_issuer_and_fall_back_to_the_signing_input() {
    assert_ne!(replay_key("a", Some("1"), "t"), replay_key("b", Some("1"), "t"));
    assert_ne!(replay_key("a", None, "t1"), replay_key("a", None, "t2"));
    assert_ne!(replay_key("a", None, "t"), replay_key("b", None, "t"));
    assert_eq!(replay_key("a", Some("1"), "t1"), replay_key("a", Some("1"), "t2"));
    // An empty jti is no jti: keyed by what was signed, not one shared mark.
    assert_eq!(replay_key("a", Some(""), "t1"), replay_key("a", None, "t1"));
    assert_ne!(replay_key("a", Some(""), "t1"), replay_key("a", Some(""), "t2"));
    // A jti-less key never collides with a jti key made of the same bytes.
    assert_ne!(replay_key("a", None, "x"), replay_key("a", Some("x"), "x"));
    // The signature is not part of the key: the same signed bytes, one key.
    assert_eq!(signing_input("h.p.sig1"), "h.p");
    assert_eq!(
        replay_key("a", None, signing_input("h.p.sig1")),
        replay_key("a", None, signing_input("h.p.sig2"))
    );
    assert_eq!(
        token_digest("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[tokio::test]
async fn memory_keys_in_hex_and_other_keys_are_told_apart() {
    let store = MemoryReplayStore::new();
    let hex = replay_key("iss", Some("a"), "");
    assert!(store.mark(&hex, 100, 1).await.expect("mark"));
    assert!(!store.mark(&hex, 100, 1).await.expect("mark"));
    // Not hex: digested, so it is its own mark, as are upper-case and odd-length keys.
    for other in ["k", &hex.to_uppercase(), &hex[..63]] {
        assert!(store.mark(other, 100, 1).await.expect("mark"), "{other}");
        assert!(!store.mark(other, 100, 1).await.expect("mark"), "{other}");
    }
    assert_eq!(store.len(), 4);
}

#[tokio::test]
async fn a_key_marked_again_after_expiry_keeps_its_new_mark_through_the_old_sweep() {
    let store = MemoryReplayStore::new();
    assert!(store.mark("k", 10, 0).await.expect("mark"));
    // Expired at 11: marked again, now until 100.
    assert!(store.mark("k", 100, 11).await.expect("mark"));
    // The sweep at 12 drops second 10's list, not the new mark.
    assert!(!store.mark("k", 100, 12).await.expect("mark"));
    assert_eq!(store.len(), 1);
    // Past 100 it is swept.
    store.mark("other", 200, 150).await.expect("mark");
    assert_eq!(store.len(), 1);
}
