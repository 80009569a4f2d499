//! The rest of an advert: its full record, kept in the cloud store (`adverts/{id}.json`). Loaded
//! in the background when the advert is served, so the owner's `/full` request usually finds it
//! in memory; a miss is fetched on that request, never on the serve path.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
/// Prefetches started per second at most. A catalogue larger than the cache, served at random,
/// would otherwise fetch (and evict) a record on almost every serve, for no later hit.
const PREFETCHES_PER_SECOND: u32 = 200;

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
    budget: Arc<governor::DefaultDirectRateLimiter>,
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
            budget: Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
                NonZeroU32::new(PREFETCHES_PER_SECOND).unwrap_or(NonZeroU32::MIN),
            ))),
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
        // budget it must cost no lock. A token spent on a record already on its way only narrows
        // the budget, which bounds work, not correctness.
        if self.cache.contains_key(&id)
            || self.absent.contains_key(&id)
            || self.budget.check().is_err()
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
