//! Live delivery counters for adverts with caps (max impressions, max clicks, daily impressions).
//! Decisions read them in memory. Without Redis they start from the database's totals and count
//! locally (one instance sees everything). With Redis every instance pushes its increments every
//! sync interval and reads back the shared totals, so a capped advert stops across instances
//! within one sync interval of serving (the documented overshoot).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use deadpool_redis::redis;

use crate::domain::AdvertId;
use crate::domain::advert::DeliveryCaps;
use crate::platform::db::{Db, DbError};
use crate::platform::redis::Redis;

use super::store;

const IMPRESSIONS: usize = 0;
const CLICKS: usize = 1;
const TODAY: usize = 2;

#[derive(Debug, Default)]
struct Live {
    /// UTC day (Unix seconds of its midnight) that `TODAY` counts.
    day: AtomicI64,
    /// Totals known to be stored (database at load, Redis after each sync).
    shared: [AtomicU64; 3],
    /// Taken by the push in flight: still counted until Redis's answer includes them.
    pushing: [AtomicU64; 3],
    /// Counted here since the last push.
    unsynced: [AtomicU64; 3],
}

impl Live {
    /// Never below the true total: an increment moves from `unsynced` to `pushing` (added before
    /// it is taken) and leaves `pushing` only after the total that includes it is stored.
    fn total(&self, i: usize) -> u64 {
        self.shared[i].load(Ordering::Relaxed)
            + self.pushing[i].load(Ordering::Relaxed)
            + self.unsynced[i].load(Ordering::Relaxed)
    }

    fn roll_day(&self, day: i64) {
        let previous = self.day.swap(day, Ordering::Relaxed);
        if previous != day {
            self.shared[TODAY].store(0, Ordering::Relaxed);
            self.pushing[TODAY].store(0, Ordering::Relaxed);
            self.unsynced[TODAY].store(0, Ordering::Relaxed);
        }
    }

    /// Moves what was counted here into `pushing`, and says how much that was.
    fn take_unsynced(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| {
            let n = self.unsynced[i].load(Ordering::Relaxed);
            self.pushing[i].fetch_add(n, Ordering::Relaxed);
            release(&self.unsynced[i], n);
            n
        })
    }

    /// The push of `taken` landed and Redis answered with `totals`, which include it.
    fn pushed(&self, taken: [u64; 3], totals: &[u64]) {
        for (i, (n, total)) in taken.into_iter().zip(totals).enumerate() {
            self.shared[i].store(*total, Ordering::Relaxed);
            release(&self.pushing[i], n);
        }
    }

    /// The push of `taken` failed: it goes back to be pushed with the next sync.
    fn push_failed(&self, taken: [u64; 3]) {
        for (i, n) in taken.into_iter().enumerate() {
            self.unsynced[i].fetch_add(n, Ordering::Relaxed);
            release(&self.pushing[i], n);
        }
    }
}

/// Takes `n` off a count, which a day roll may have zeroed meanwhile.
fn release(count: &AtomicU64, n: u64) {
    let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
        Some(c.saturating_sub(n))
    });
}

pub fn utc_day(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(86_400) * 86_400
}

pub struct Delivery {
    adverts: RwLock<HashMap<AdvertId, Arc<Live>>>,
    db: Db,
    redis: Option<Redis>,
}

impl Delivery {
    pub fn new(db: Db, redis: Option<Redis>) -> Self {
        Self {
            adverts: RwLock::new(HashMap::new()),
            db,
            redis,
        }
    }

    fn live(&self, advert: AdvertId) -> Option<Arc<Live>> {
        self.adverts.read().ok()?.get(&advert).cloned()
    }

    /// Starts tracking a capped advert from its stored totals (a no-op when already tracked).
    pub async fn track(&self, advert: AdvertId, now_secs: i64) -> Result<(), DbError> {
        if self.live(advert).is_some() {
            return Ok(());
        }
        let day = utc_day(now_secs);
        let (impressions, clicks, today) = self
            .db
            .run(move |conn| store::delivered(conn, advert, day))
            .await?;
        let live = Arc::new(Live::default());
        live.day.store(day, Ordering::Relaxed);
        for (i, n) in [impressions, clicks, today].into_iter().enumerate() {
            live.shared[i].store(n, Ordering::Relaxed);
        }
        if let Some(redis) = &self.redis {
            // The first instance to track the advert seeds the shared totals.
            let key = self.key(redis, advert);
            let today_field = format!("d{day}");
            let _ = redis
                .with(|mut conn| async move {
                    redis::pipe()
                        .cmd("HSETNX")
                        .arg(&key)
                        .arg("imp")
                        .arg(impressions)
                        .ignore()
                        .cmd("HSETNX")
                        .arg(&key)
                        .arg("clk")
                        .arg(clicks)
                        .ignore()
                        .cmd("HSETNX")
                        .arg(&key)
                        .arg(today_field)
                        .arg(today)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        }
        if let Ok(mut adverts) = self.adverts.write() {
            adverts.entry(advert).or_insert(live);
        }
        Ok(())
    }

    fn key(&self, redis: &Redis, advert: AdvertId) -> String {
        redis.key(&format!("live:{}", advert.0))
    }

    /// Whether another impression stays within the caps. An advert not yet tracked is held back
    /// until its totals are loaded.
    pub fn allows(&self, advert: AdvertId, caps: &DeliveryCaps, now_secs: i64) -> bool {
        let Some(live) = self.live(advert) else {
            return false;
        };
        live.roll_day(utc_day(now_secs));
        let under = |limit: Option<u64>, i: usize| limit.is_none_or(|max| live.total(i) < max);
        under(caps.max_impressions, IMPRESSIONS)
            && under(caps.max_clicks, CLICKS)
            && under(caps.daily_max_impressions, TODAY)
    }

    pub fn impression(&self, advert: AdvertId, now_secs: i64) {
        if let Some(live) = self.live(advert) {
            live.roll_day(utc_day(now_secs));
            live.unsynced[IMPRESSIONS].fetch_add(1, Ordering::Relaxed);
            live.unsynced[TODAY].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn click(&self, advert: AdvertId) {
        if let Some(live) = self.live(advert) {
            live.unsynced[CLICKS].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// With Redis: pushes local increments and reads back the shared totals, one pipeline.
    /// False when Redis could not be reached (the increments wait for the next sync).
    pub async fn sync(&self, now_secs: i64) -> bool {
        let Some(redis) = &self.redis else {
            return true;
        };
        let tracked: Vec<(AdvertId, Arc<Live>)> = match self.adverts.read() {
            Ok(adverts) => adverts.iter().map(|(a, l)| (*a, l.clone())).collect(),
            Err(_) => return false,
        };
        if tracked.is_empty() {
            return true;
        }
        let day = utc_day(now_secs);
        let today_field = format!("d{day}");
        // MULTI/EXEC: the increments land together or not at all.
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut taken = Vec::with_capacity(tracked.len());
        for (advert, live) in &tracked {
            live.roll_day(day);
            let key = self.key(redis, *advert);
            let counts = live.take_unsynced();
            pipe.cmd("HINCRBY")
                .arg(&key)
                .arg("imp")
                .arg(counts[IMPRESSIONS]);
            pipe.cmd("HINCRBY").arg(&key).arg("clk").arg(counts[CLICKS]);
            pipe.cmd("HINCRBY")
                .arg(&key)
                .arg(&today_field)
                .arg(counts[TODAY]);
            taken.push(counts);
        }
        let result: Result<Vec<u64>, _> = redis
            .with(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await;
        match result {
            Ok(totals) => {
                for ((_, live), (counts, chunk)) in
                    tracked.iter().zip(taken.into_iter().zip(totals.chunks(3)))
                {
                    live.pushed(counts, chunk);
                }
                true
            }
            Err(e) => {
                // Keep the increments for the next sync, so no impression is forgotten.
                for ((_, live), counts) in tracked.iter().zip(taken) {
                    live.push_failed(counts);
                }
                tracing::debug!(error = %e, "delivery counter sync failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(live: &Live) -> [u64; 3] {
        [0, 1, 2].map(|i| live.total(i))
    }

    #[test]
    fn a_push_in_flight_still_counts() {
        let live = Live::default();
        live.shared[IMPRESSIONS].store(10, Ordering::Relaxed);
        live.unsynced[IMPRESSIONS].store(3, Ordering::Relaxed);
        live.unsynced[CLICKS].store(1, Ordering::Relaxed);
        let taken = live.take_unsynced();
        assert_eq!(taken, [3, 1, 0]);
        assert_eq!(counted(&live), [13, 1, 0]);
        // Counted here while the push is on its way.
        live.unsynced[IMPRESSIONS].fetch_add(1, Ordering::Relaxed);
        // Another instance served 5 meanwhile: Redis answers 10 + 3 + 5.
        live.pushed(taken, &[18, 1, 0]);
        assert_eq!(counted(&live), [19, 1, 0]);
        assert_eq!(live.take_unsynced(), [1, 0, 0]);
    }

    #[test]
    fn a_failed_push_is_pushed_again() {
        let live = Live::default();
        live.unsynced[TODAY].store(4, Ordering::Relaxed);
        let taken = live.take_unsynced();
        live.push_failed(taken);
        assert_eq!(counted(&live), [0, 0, 4]);
        assert_eq!(live.take_unsynced(), [0, 0, 4]);
    }

    #[test]
    fn a_new_day_during_a_push_does_not_wrap_the_count() {
        let live = Live::default();
        live.roll_day(0);
        live.unsynced[TODAY].store(2, Ordering::Relaxed);
        let taken = live.take_unsynced();
        live.roll_day(86_400);
        live.pushed(taken, &[2, 0, 2]);
        assert_eq!(live.pushing[TODAY].load(Ordering::Relaxed), 0);
    }
}
