//! The card tier: the important business part of each advert (title, text, creative URL, tracked
//! link), in moka bounded by bytes with a TTL, in front of Redis (shared by instances), in front
//! of the database. A cold start fills it from the same read that builds the index, so a warm
//! instance never leaves the process for a card.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis;
use moka::future::Cache;
use serde::{Deserialize, Serialize};

use crate::domain::{AdvertId, Genre};
use crate::platform::db::{Db, DbError};
use crate::platform::redis::Redis;
use crate::platform::urls::PublicUrls;

use super::store::{self, AdvertRow};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardData {
    pub title: String,
    pub text: String,
    pub genre: Genre,
    pub image_url: String,
    pub tracked_url: String,
}

impl CardData {
    pub fn from_row(row: &AdvertRow, urls: &PublicUrls) -> Option<Self> {
        Some(Self {
            title: row.title.clone(),
            text: row.body.clone(),
            genre: Genre::parse(&row.genre).ok()?,
            image_url: urls.creative(AdvertId(row.id), &row.image_hash),
            tracked_url: urls.tracked_link(&row.link_code),
        })
    }

    fn weight(&self) -> u32 {
        let bytes =
            self.title.len() + self.text.len() + self.image_url.len() + self.tracked_url.len();
        u32::try_from(bytes + 96).unwrap_or(u32::MAX)
    }
}

#[derive(Clone)]
pub struct Cards {
    cache: Cache<AdvertId, Arc<CardData>>,
    redis: Option<Redis>,
    db: Db,
    urls: PublicUrls,
    ttl: Duration,
}

impl Cards {
    pub fn new(
        db: Db,
        redis: Option<Redis>,
        urls: PublicUrls,
        max_bytes: u64,
        ttl: Duration,
    ) -> Self {
        Self {
            cache: Cache::builder()
                .weigher(|_k: &AdvertId, v: &Arc<CardData>| v.weight())
                .max_capacity(max_bytes)
                .time_to_live(ttl)
                .build(),
            redis,
            db,
            urls,
            ttl,
        }
    }

    fn redis_key(redis: &Redis, id: AdvertId) -> String {
        redis.key(&format!("card:{}", id.0))
    }

    /// Puts a card in memory (cold start, or a change read from the database).
    pub async fn put(&self, id: AdvertId, card: CardData) {
        self.cache.insert(id, Arc::new(card)).await;
    }

    /// A card from memory, else Redis, else the database.
    pub async fn get(&self, id: AdvertId) -> Result<Option<Arc<CardData>>, DbError> {
        if let Some(hit) = self.cache.get(&id).await {
            return Ok(Some(hit));
        }
        let loaded = self
            .cache
            .try_get_with(id, async {
                self.load(id)
                    .await?
                    .map(Arc::new)
                    .ok_or(DbError::Query(diesel::result::Error::NotFound))
            })
            .await;
        match loaded {
            Ok(card) => Ok(Some(card)),
            Err(e) => match &*e {
                DbError::Query(diesel::result::Error::NotFound) => Ok(None),
                DbError::Unavailable(reason) => Err(DbError::Unavailable(reason.clone())),
                other => Err(DbError::Unavailable(other.to_string())),
            },
        }
    }

    async fn load(&self, id: AdvertId) -> Result<Option<CardData>, DbError> {
        if let Some(redis) = &self.redis {
            let key = Self::redis_key(redis, id);
            let cached: Result<Option<String>, _> =
                redis
                    .with(|mut conn| async move {
                        redis::cmd("GET").arg(key).query_async(&mut conn).await
                    })
                    .await;
            if let Ok(Some(json)) = cached
                && let Ok(card) = serde_json::from_str::<CardData>(&json)
            {
                return Ok(Some(card));
            }
        }
        let row = self.db.run(move |conn| store::advert(conn, id)).await?;
        let Some(card) = row.as_ref().and_then(|r| CardData::from_row(r, &self.urls)) else {
            return Ok(None);
        };
        if let (Some(redis), Ok(json)) = (&self.redis, serde_json::to_string(&card)) {
            let key = Self::redis_key(redis, id);
            let ttl = self.ttl.as_secs().max(1);
            // Best effort: Redis only spares other instances a database read.
            let _ = redis
                .with(|mut conn| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(json)
                        .arg("EX")
                        .arg(ttl)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        }
        Ok(Some(card))
    }

    /// Drops a card everywhere (its advert changed).
    pub async fn forget(&self, id: AdvertId) {
        self.cache.invalidate(&id).await;
        if let Some(redis) = &self.redis {
            let key = Self::redis_key(redis, id);
            let _ = redis
                .with(|mut conn| async move {
                    redis::cmd("DEL")
                        .arg(key)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        }
    }
}
