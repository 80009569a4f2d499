//! The rest of an advert: its full record, kept in the cloud store (`adverts/{id}.json`). Loaded
//! in the background when the advert is served, so the owner's `/full` request usually finds it
//! in memory; a miss is fetched on that request, never on the serve path. A request that misses
//! while the record is on its way shares that load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use tokio::sync::Semaphore;

use crate::domain::{AdvertId, CustomerId};
use crate::platform::cloud::{CloudError, CloudStore};
use crate::platform::db::{Db, DbError};
use crate::platform::shared_loads::{Load, SharedLoads};
use crate::platform::telemetry::CacheUsage;

use super::store;

/// Background fetches running at once; a prefetch asked for while they are all busy is skipped
/// (the owner's request fetches on a miss), so a serve never queues work behind the cloud store.
const PREFETCH_CONCURRENCY: usize = 8;
/// A record the cloud store does not have yet (its clone job has not run) is not asked for
/// again on every serve for this long.
const ABSENT_FOR: Duration = Duration::from_secs(30);
/// Prefetches started per second at most (after a quiet second, as many at once). A catalogue
/// larger than the cache, served at random, would otherwise fetch (and evict) a record on almost
/// every serve, for no later hit.
const PREFETCHES_PER_SECOND: u64 = 200;

/// The prefetches' budget: a start every `1 / PREFETCHES_PER_SECOND` on average, up to a
/// second's worth at once. Whether a start would be allowed is one atomic read, so the serves
/// of a large catalogue, nearly all past the budget, cost no cache look-up; a start spends it
/// only once the record is known to be missing.
struct Budget {
    started: Instant,
    /// When the budget is next fully spent at the current pace, in microseconds since
    /// `started` (the generic cell rate algorithm's theoretical arrival time).
    busy_until_us: AtomicU64,
}

impl Budget {
    const GAP_US: u64 = 1_000_000 / PREFETCHES_PER_SECOND;
    const WINDOW_US: u64 = 1_000_000;

    fn new() -> Self {
        Self {
            started: Instant::now(),
            busy_until_us: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The time one more start would take the budget to, if it is allowed.
    fn after_one_more(busy_until_us: u64, now_us: u64) -> Option<u64> {
        let next = busy_until_us.max(now_us) + Self::GAP_US;
        (next - now_us <= Self::WINDOW_US).then_some(next)
    }

    fn allows(&self, now_us: u64) -> bool {
        Self::after_one_more(self.busy_until_us.load(Ordering::Relaxed), now_us).is_some()
    }

    fn spend(&self, now_us: u64) -> bool {
        self.busy_until_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |busy| {
                Self::after_one_more(busy, now_us)
            })
            .is_ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FullError {
    #[error("no such advert")]
    NotFound,
    #[error("the full record is still being copied to the cloud store")]
    NotYetInCloud,
    #[error("cloud store: {0}")]
    Cloud(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

#[derive(Clone)]
pub struct FullRecords {
    db: Db,
    cloud: Arc<dyn CloudStore>,
    cache: Cache<AdvertId, Arc<Vec<u8>>>,
    /// Records found missing by a prefetch, briefly.
    absent: moka::sync::Cache<AdvertId, ()>,
    /// Records on their way from the cloud store (`None`: the store does not have it yet).
    loads: Arc<SharedLoads<AdvertId, Option<Arc<Vec<u8>>>>>,
    /// Slots of the background loads.
    permits: Arc<Semaphore>,
    budget: Arc<Budget>,
}

fn key(id: AdvertId) -> String {
    format!("adverts/{id}.json")
}

impl FullRecords {
    pub fn new(db: Db, cloud: Arc<dyn CloudStore>, capacity: u64) -> Self {
        Self {
            db,
            cloud,
            cache: Cache::new(capacity),
            absent: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ABSENT_FOR)
                .build(),
            loads: Arc::default(),
            permits: Arc::new(Semaphore::new(PREFETCH_CONCURRENCY)),
            budget: Arc::new(Budget::new()),
        }
    }

    pub fn is_cached(&self, id: AdvertId) -> bool {
        self.cache.contains_key(&id)
    }

    /// The records held in memory (bounded by `serving.full_cache_capacity` records).
    pub async fn usage(&self) -> CacheUsage {
        CacheUsage::of(&self.cache, false).await
    }

    /// Starts loading the record in the background unless it is cached or already on its way.
    pub fn prefetch(&self, id: AdvertId) {
        // Cheapest first: this runs on nearly every serve of a large catalogue, and past the
        // budget it must cost no cache look-up. A start spent on a record already on its way
        // only narrows the budget, which bounds work, not correctness.
        let now_us = self.budget.now_us();
        if !self.budget.allows(now_us)
            || self.cache.contains_key(&id)
            || self.absent.contains_key(&id)
            || !self.budget.spend(now_us)
        {
            return;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return;
        };
        let Some(shared) = self.loads.start(id) else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.load(id, &shared).await {
                tracing::debug!(advert_id = %id, error = %e, "prefetch of the full record failed");
            }
            drop(permit);
        });
    }

    /// The owner's full record, from memory or the cloud store.
    pub async fn get(&self, owner: CustomerId, id: AdvertId) -> Result<Arc<Vec<u8>>, FullError> {
        let stored_owner = self.db.run(move |conn| store::owner(conn, id)).await?;
        if stored_owner != Some(owner.0) {
            return Err(FullError::NotFound);
        }
        self.record(id).await
    }

    /// The record from memory, else from the load under way or a new one.
    async fn record(&self, id: AdvertId) -> Result<Arc<Vec<u8>>, FullError> {
        if let Some(hit) = self.cache.get(&id).await {
            return Ok(hit);
        }
        match self.load(id, &self.loads.share(id)).await {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(FullError::NotYetInCloud),
            Err(e) => Err(FullError::Cloud(e)),
        }
    }

    /// Runs (or joins) the shared load of `id`. What it read is kept unless the advert changed
    /// while it ran ([`Self::forget`]).
    async fn load(
        &self,
        id: AdvertId,
        shared: &Load<Option<Arc<Vec<u8>>>>,
    ) -> Result<Option<Arc<Vec<u8>>>, String> {
        self.loads
            .run(id, shared, |generation| async move {
                match self.cloud.get(&key(id)).await {
                    Ok(bytes) => {
                        let bytes = Arc::new(bytes);
                        if self.loads.is_current(generation) {
                            self.cache.insert(id, bytes.clone()).await;
                        }
                        Ok(Some(bytes))
                    }
                    Err(CloudError::NotFound(_)) => {
                        if self.loads.is_current(generation) {
                            self.absent.insert(id, ());
                        }
                        Ok(None)
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
    }

    /// Drops a cached record (the advert changed; its clone will be rewritten).
    pub async fn forget(&self, id: AdvertId) {
        self.loads.overtake([id]);
        self.cache.invalidate(&id).await;
        self.absent.invalidate(&id);
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use tokio::sync::watch;

    use super::*;

    /// A cloud store that holds one record, counts its reads and answers each only once let go.
    struct HeldStore {
        reads: AtomicUsize,
        go: watch::Receiver<bool>,
    }

    #[async_trait]
    impl CloudStore for HeldStore {
        async fn put(&self, _: &str, _: Vec<u8>) -> Result<(), CloudError> {
            Ok(())
        }

        async fn get(&self, key: &str) -> Result<Vec<u8>, CloudError> {
            let read = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = self.go.clone().wait_for(|go| *go).await;
            match key {
                "adverts/7.json" => Ok(format!("record 7, read {read}").into_bytes()),
                _ => Err(CloudError::NotFound(key.to_owned())),
            }
        }

        fn describe(&self) -> String {
            "held".into()
        }
    }

    fn held() -> (
        tempfile::TempDir,
        FullRecords,
        Arc<HeldStore>,
        watch::Sender<bool>,
    ) {
        let (dir, db) = Db::temporary();
        let (go, held) = watch::channel(false);
        let store = Arc::new(HeldStore {
            reads: AtomicUsize::new(0),
            go: held,
        });
        (dir, FullRecords::new(db, store.clone(), 16), store, go)
    }

    async fn until(what: impl Fn() -> bool) {
        for _ in 0..200 {
            if what() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("not reached in a second");
    }

    #[tokio::test]
    async fn a_miss_while_the_record_is_prefetched_shares_that_read() {
        let (_dir, records, store, go) = held();
        records.prefetch(AdvertId(7));
        until(|| store.reads.load(Ordering::SeqCst) == 1).await;
        let waiting = tokio::spawn({
            let records = records.clone();
            async move { records.record(AdvertId(7)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        go.send(true).expect("the store waits");
        let record = waiting.await.expect("no panic").expect("found");
        assert_eq!(record.as_slice(), b"record 7, read 1");
        assert_eq!(store.reads.load(Ordering::SeqCst), 1, "one read for both");
        until(|| records.is_cached(AdvertId(7))).await;

        // A record the store lacks: the miss says so, and prefetches skip it for a while.
        assert!(matches!(
            records.record(AdvertId(8)).await,
            Err(FullError::NotYetInCloud)
        ));
        records.prefetch(AdvertId(8));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_record_read_before_its_advert_changed_is_not_kept() {
        let (_dir, records, store, go) = held();
        records.prefetch(AdvertId(7));
        until(|| store.reads.load(Ordering::SeqCst) == 1).await;
        records.forget(AdvertId(7)).await;
        // The change forgot the load under way: a miss now reads afresh.
        let fresh = tokio::spawn({
            let records = records.clone();
            async move { records.record(AdvertId(7)).await }
        });
        until(|| store.reads.load(Ordering::SeqCst) == 2).await;
        go.send(true).expect("the store waits");
        let record = fresh.await.expect("no panic").expect("found");
        assert_eq!(record.as_slice(), b"record 7, read 2");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            records
                .cache
                .get(&AdvertId(7))
                .await
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"record 7, read 2"[..]),
            "the read from before the change was dropped, the fresh one kept"
        );
    }

    #[test]
    fn the_prefetch_budget_allows_a_second_at_once_then_its_pace() {
        let budget = Budget::new();
        let per_second = PREFETCHES_PER_SECOND as usize;
        let at_once = (0..per_second * 2)
            .take_while(|_| budget.allows(0) && budget.spend(0))
            .count();
        assert_eq!(at_once, per_second);
        assert!(!budget.allows(Budget::GAP_US - 1));
        assert!(budget.allows(Budget::GAP_US));
        // A look that spends nothing leaves the start for the next.
        assert!(budget.allows(Budget::GAP_US));
        assert!(budget.spend(Budget::GAP_US));
        assert!(!budget.spend(Budget::GAP_US));
        // After a quiet second, a second's worth again.
        let later = 10 * Budget::WINDOW_US;
        let again = (0..per_second * 2)
            .take_while(|_| budget.spend(later))
            .count();
        assert_eq!(again, per_second);
    }
}
