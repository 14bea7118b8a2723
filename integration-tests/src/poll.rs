//! Waiting for something a broker does in the background (a reload, a change reaching
//! another replica, a process becoming ready).

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll `probe` every 50 ms until it returns `Some`, for at most `limit` (then panic
/// naming `what`).
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_timed(limit, what, probe).await.0
}

/// [`eventually`], and how long it took.
pub async fn eventually_timed<T, F, Fut>(limit: Duration, what: &str, probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(limit, what, probe, String::new).await
}

/// [`eventually`], whose panic also says `explain()` (a broker's stderr, say), read when
/// the time is up.
pub async fn eventually_explained<T, F, Fut>(
    limit: Duration,
    what: &str,
    probe: F,
    explain: impl Fn() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(limit, what, probe, explain).await.0
}

async fn poll<T, F, Fut>(
    limit: Duration,
    what: &str,
    mut probe: F,
    explain: impl Fn() -> String,
) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "not within {limit:?}: {what}\n{}",
            explain()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
