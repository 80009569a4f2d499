//! The rest of an advert: its full record, kept in the cloud store (`adverts/{id}.json`). Loaded
//! in the background when the advert is served, so the owner's `/full` request usually finds it
//! in memory; a miss is fetched on that request, never on the serve path.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;
use tokio::sync::Semaphore;

use crate::domain::{AdvertId, CustomerId};
use crate::platform::cloud::{CloudError, CloudStore};
use crate::platform::db::{Db, DbError};
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
    inflight: Arc<Mutex<HashSet<AdvertId>>>,
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
            inflight: Arc::new(Mutex::new(HashSet::new())),
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
        let fresh = self
            .inflight
            .lock()
            .map(|mut inflight| inflight.insert(id))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.cloud.get(&key(id)).await {
                Ok(bytes) => this.cache.insert(id, Arc::new(bytes)).await,
                Err(CloudError::NotFound(_)) => this.absent.insert(id, ()),
                Err(e) => {
                    tracing::debug!(advert_id = %id, error = %e, "prefetch of the full record failed")
                }
            }
            drop(permit);
            if let Ok(mut inflight) = this.inflight.lock() {
                inflight.remove(&id);
            }
        });
    }

    /// The owner's full record, from memory or the cloud store.
    pub async fn get(&self, owner: CustomerId, id: AdvertId) -> Result<Arc<Vec<u8>>, FullError> {
        let stored_owner = self.db.run(move |conn| store::owner(conn, id)).await?;
        if stored_owner != Some(owner.0) {
            return Err(FullError::NotFound);
        }
        if let Some(hit) = self.cache.get(&id).await {
            return Ok(hit);
        }
        match self.cloud.get(&key(id)).await {
            Ok(bytes) => {
                let bytes = Arc::new(bytes);
                self.cache.insert(id, bytes.clone()).await;
                Ok(bytes)
            }
            Err(CloudError::NotFound(_)) => Err(FullError::NotYetInCloud),
            Err(e) => Err(FullError::Cloud(e.to_string())),
        }
    }

    /// Drops a cached record (the advert changed; its clone will be rewritten).
    pub async fn forget(&self, id: AdvertId) {
        self.cache.invalidate(&id).await;
        self.absent.invalidate(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
