//! Frequency caps: at most `cap` impressions of one advert to one user per window. Kept in
//! process (moka); with Redis, increments are pushed in batches and a user first seen on this
//! instance is read once from Redis (reads of many new users at once share one pipeline), so
//! instances behind a load balancer share the counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_redis::redis;

use crate::domain::AdvertId;
use crate::platform::redis::{HashReads, Redis};

use super::tokens::UserKey;

/// One advert shown to the user in its current window: 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Seen {
    advert: i64,
    /// Window start, in seconds since the Unix epoch (rounded up).
    start_secs: u32,
    count: u16,
}

/// The adverts a user was shown within their windows, sorted by advert, so that a check during a
/// draw is a binary search. Expired entries go when the list would otherwise grow.
#[derive(Debug, Default)]
struct History {
    seen: Vec<Seen>,
}

/// Whole seconds, rounded up: a window may end up to a second late, never early.
fn secs(ms: i64) -> u32 {
    u32::try_from(ms.saturating_add(999).div_euclid(1000)).unwrap_or(if ms < 0 {
        0
    } else {
        u32::MAX
    })
}

impl History {
    fn live(seen: &Seen, now: i64, window_ms: i64) -> bool {
        now - i64::from(seen.start_secs) * 1000 < window_ms
    }

    fn count(&self, advert: AdvertId, now: i64, window_ms: i64) -> u32 {
        match self.seen.binary_search_by_key(&advert.0, |s| s.advert) {
            Ok(i) if Self::live(&self.seen[i], now, window_ms) => u32::from(self.seen[i].count),
            _ => 0,
        }
    }

    fn add(&mut self, advert: AdvertId, n: u32, now: i64, window_ms: i64) {
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        let fresh = Seen {
            advert: advert.0,
            start_secs: secs(now),
            count: n,
        };
        match self.seen.binary_search_by_key(&advert.0, |s| s.advert) {
            Ok(i) if Self::live(&self.seen[i], now, window_ms) => {
                self.seen[i].count = self.seen[i].count.saturating_add(n);
            }
            Ok(i) => self.seen[i] = fresh,
            Err(mut at) => {
                if self.seen.len() == self.seen.capacity() {
                    self.seen.retain(|s| Self::live(s, now, window_ms));
                    at = self.seen.partition_point(|s| s.advert < advert.0);
                }
                self.seen.insert(at, fresh);
            }
        }
    }
}

type Shared = Arc<Mutex<History>>;

pub struct FrequencyCaps {
    cap: u32,
    window_ms: i64,
    users: moka::sync::Cache<UserKey, Shared>,
    redis: Option<Redis>,
    reads: Option<HashReads>,
    /// Increments not yet pushed to Redis.
    unpushed: Mutex<HashMap<UserKey, HashMap<AdvertId, u32>>>,
}

impl FrequencyCaps {
    pub fn new(
        cap: u32,
        window: Duration,
        capacity: u64,
        redis: Option<Redis>,
        reads: Option<HashReads>,
    ) -> Self {
        Self {
            cap,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            users: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(window)
                .build(),
            redis,
            reads,
            unpushed: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, user: UserKey) -> Option<String> {
        self.redis
            .as_ref()
            .map(|r| r.key(&format!("fc:{:016x}", user.0)))
    }

    /// The user's history; a user this instance has not seen is read from Redis once.
    pub async fn history(&self, user: UserKey, now: i64) -> UserCaps {
        if let Some(found) = self.users.get(&user) {
            return UserCaps { history: found };
        }
        let history = Arc::new(Mutex::new(History::default()));
        if let (Some(reads), Some(key)) = (&self.reads, self.key(user))
            && let Ok(fields) = reads.read(key).await
            && let Ok(mut h) = history.lock()
        {
            for (advert, n) in fields {
                if let (Ok(advert), Ok(n)) = (advert.parse(), n.parse()) {
                    h.add(AdvertId(advert), n, now, self.window_ms);
                }
            }
        }
        let history = self.users.get_with(user, || history);
        UserCaps { history }
    }

    pub fn allows(&self, caps: &UserCaps, advert: AdvertId, now: i64) -> bool {
        caps.history
            .lock()
            .map(|h| h.count(advert, now, self.window_ms) < self.cap)
            .unwrap_or(true)
    }

    pub fn record(&self, caps: &UserCaps, user: UserKey, advert: AdvertId, now: i64) {
        if let Ok(mut h) = caps.history.lock() {
            h.add(advert, 1, now, self.window_ms);
        }
        if self.redis.is_some()
            && let Ok(mut unpushed) = self.unpushed.lock()
        {
            *unpushed.entry(user).or_default().entry(advert).or_default() += 1;
        }
    }

    /// Pushes the increments of the last interval to Redis in one pipeline.
    pub async fn push(&self) -> bool {
        let Some(redis) = &self.redis else {
            return true;
        };
        let batch = match self.unpushed.lock() {
            Ok(mut unpushed) => std::mem::take(&mut *unpushed),
            Err(_) => return false,
        };
        if batch.is_empty() {
            return true;
        }
        let window_secs = (self.window_ms / 1000).max(1);
        let mut pipe = redis::pipe();
        for (user, adverts) in &batch {
            let Some(key) = self.key(*user) else { continue };
            for (advert, n) in adverts {
                pipe.cmd("HINCRBY").arg(&key).arg(advert.0).arg(*n).ignore();
            }
            pipe.cmd("EXPIRE")
                .arg(&key)
                .arg(window_secs)
                .arg("NX")
                .ignore();
        }
        if let Err(e) = redis
            .with(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await
        {
            // Local caps still hold; other instances may overshoot by this batch.
            tracing::debug!(error = %e, "frequency cap push failed");
            return false;
        }
        true
    }
}

/// One user's cap state for the length of a request.
pub struct UserCaps {
    history: Shared,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advert_in_a_history_takes_16_bytes() {
        assert_eq!(std::mem::size_of::<Seen>(), 16);
    }

    #[test]
    fn many_adverts_keep_their_own_counts_and_expired_ones_make_room() {
        let window = 10_000;
        let mut h = History::default();
        for advert in (0..100).rev() {
            h.add(AdvertId(advert), 1, 0, window);
        }
        h.add(AdvertId(42), 2, 1_000, window);
        assert_eq!(h.count(AdvertId(42), 1_000, window), 3);
        assert_eq!(h.count(AdvertId(7), 1_000, window), 1);
        assert_eq!(h.count(AdvertId(100), 1_000, window), 0);
        // After the window, adding past the capacity drops what expired.
        let capacity = h.seen.capacity();
        for advert in 1_000..1_000 + capacity as i64 {
            h.add(AdvertId(advert), 1, 20_000, window);
        }
        assert_eq!(h.count(AdvertId(42), 20_000, window), 0);
        assert!(h.seen.len() <= capacity, "{} entries", h.seen.len());
        assert!(h.seen.windows(2).all(|w| w[0].advert < w[1].advert));
    }

    #[test]
    fn the_window_resets_the_count() {
        let mut h = History::default();
        h.add(AdvertId(1), 1, 0, 1000);
        h.add(AdvertId(1), 1, 500, 1000);
        assert_eq!(h.count(AdvertId(1), 999, 1000), 2);
        assert_eq!(h.count(AdvertId(1), 1000, 1000), 0);
        h.add(AdvertId(1), 1, 1000, 1000);
        assert_eq!(h.count(AdvertId(1), 1000, 1000), 1);
        assert_eq!(h.count(AdvertId(2), 1000, 1000), 0);
    }
}
