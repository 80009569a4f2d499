//! A request's deadline: the instant by which every backend call made for it must be over, so a
//! request answers (503 at worst) within a bound of its arrival however many calls it makes.
//! Set for each request by the edge middleware (`platform::edge`); background work runs without one and is bounded by
//! each backend's own timeout.

use std::future::Future;
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// `work` with `deadline` as the current task's deadline (a future of a type that can be named,
/// for the edge middleware).
pub fn scoped<F: Future>(deadline: Instant, work: F) -> TaskLocalFuture<Instant, F> {
    DEADLINE.scope(deadline, work)
}

/// The current task's deadline, if it runs for a request.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// How long a backend call may take: `limit`, or less when the request's deadline comes sooner
/// (zero once it has passed).
pub fn bound(limit: Duration) -> Duration {
    match current() {
        Some(deadline) => limit.min(deadline.saturating_duration_since(Instant::now())),
        None => limit,
    }
}

/// `work` bounded by `limit` (shortened to the request's deadline); `None` if it ran out.
pub async fn within<F: Future>(limit: Duration, work: F) -> Option<F::Output> {
    let limit = bound(limit);
    if limit.is_zero() {
        return None;
    }
    tokio::time::timeout(limit, work).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_gets_its_own_limit_or_what_is_left_of_the_request() {
        assert_eq!(bound(Duration::from_secs(4)), Duration::from_secs(4));
        let deadline = Instant::now() + Duration::from_millis(300);
        scoped(deadline, async {
            assert_eq!(
                bound(Duration::from_millis(100)),
                Duration::from_millis(100)
            );
            let left = bound(Duration::from_secs(4));
            assert!(left <= Duration::from_millis(300) && left > Duration::from_millis(200));
            tokio::time::sleep_until(deadline).await;
            assert_eq!(bound(Duration::from_secs(4)), Duration::ZERO);
            assert_eq!(within(Duration::from_secs(4), async { 1 }).await, None);
        })
        .await;
        assert_eq!(current(), None);
    }

    #[tokio::test]
    async fn work_past_its_bound_is_abandoned() {
        let slow = within(Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        assert_eq!(slow.await, None);
        assert_eq!(
            within(Duration::from_millis(20), async { 7 }).await,
            Some(7)
        );
    }
}
