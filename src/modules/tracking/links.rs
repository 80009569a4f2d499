//! Tracked links: code -> where to send the visitor. An in-process cache (moka) in front of Redis
//! (when configured) in front of the database; unknown codes are cached briefly too, so a flood of
//! them cannot reach the database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderValue;
use deadpool_redis::redis;
use moka::Expiry;
use moka::future::Cache;

use crate::domain::AdvertId;
use crate::platform::db::{Db, DbError};
use crate::platform::redis::Redis;
use crate::platform::telemetry::CacheMetrics;

use super::store::{self, LinkRow};

/// What a code leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// An active advert: redirect to `location`.
    Live {
        advert: AdvertId,
        location: HeaderValue,
    },
    /// A paused or deleted advert.
    Gone { advert: AdvertId },
    /// No such code.
    Unknown,
}

impl Link {
    fn from_row(row: Option<LinkRow>) -> Self {
        match row {
            None => Self::Unknown,
            Some(row) if row.status == "active" => match HeaderValue::from_str(&row.target_url) {
                Ok(location) => Self::Live {
                    advert: row.advert_id,
                    location,
                },
                // Stored targets are validated ASCII; a value that is not a header is unusable.
                Err(_) => Self::Gone {
                    advert: row.advert_id,
                },
            },
            Some(row) => Self::Gone {
                advert: row.advert_id,
            },
        }
    }

    /// The Redis form: `advert_id \t status \t target`.
    fn encode(row: &LinkRow) -> String {
        format!("{}\t{}\t{}", row.advert_id.0, row.status, row.target_url)
    }

    fn decode(text: &str) -> Option<LinkRow> {
        let mut parts = text.splitn(3, '\t');
        Some(LinkRow {
            advert_id: AdvertId(parts.next()?.parse().ok()?),
            status: parts.next()?.to_owned(),
            target_url: parts.next()?.to_owned(),
        })
    }
}

struct LinkExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<Box<str>, Arc<Link>> for LinkExpiry {
    fn expire_after_create(
        &self,
        _key: &Box<str>,
        value: &Arc<Link>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(match **value {
            Link::Unknown => self.negative_ttl,
            _ => self.ttl,
        })
    }
}

#[derive(Clone)]
pub struct LinkResolver {
    cache: Cache<Box<str>, Arc<Link>>,
    db: Db,
    redis: Option<Redis>,
    ttl: Duration,
    metrics: CacheMetrics,
}

/// Longest code worth looking up; anything else is unknown without asking anyone.
const MAX_CODE_LEN: usize = 32;

impl LinkResolver {
    pub fn new(
        db: Db,
        redis: Option<Redis>,
        capacity: u64,
        ttl: Duration,
        negative_ttl: Duration,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(LinkExpiry { ttl, negative_ttl })
            .build();
        Self {
            cache,
            db,
            redis,
            ttl,
            metrics: CacheMetrics::new("links"),
        }
    }

    /// Resolves a code; only a cold miss leaves the process.
    pub async fn resolve(&self, code: &str) -> Result<Arc<Link>, DbError> {
        if code.is_empty()
            || code.len() > MAX_CODE_LEN
            || !code.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Ok(Arc::new(Link::Unknown));
        }
        if let Some(hit) = self.cache.get(code).await {
            self.metrics.memory(true);
            return Ok(hit);
        }
        self.metrics.memory(false);
        let key: Box<str> = code.into();
        self.cache
            .try_get_with(key, self.load(code.to_owned()))
            .await
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    async fn load(&self, code: String) -> Result<Arc<Link>, DbError> {
        if let Some(redis) = &self.redis {
            let key = redis.key(&format!("link:{code}"));
            let cached: Result<Option<String>, _> =
                redis
                    .with(|mut conn| async move {
                        redis::cmd("GET").arg(key).query_async(&mut conn).await
                    })
                    .await;
            if let Ok(Some(text)) = cached
                && let Some(row) = Link::decode(&text)
            {
                self.metrics.redis(true);
                return Ok(Arc::new(Link::from_row(Some(row))));
            }
            self.metrics.redis(false);
        }
        let lookup = code.clone();
        let row = self
            .db
            .run(move |conn| store::find_link(conn, &lookup))
            .await?;
        if let (Some(redis), Some(row)) = (&self.redis, &row) {
            let key = redis.key(&format!("link:{code}"));
            let value = Link::encode(row);
            let ttl = self.ttl.as_secs().max(1);
            // Best effort: the database answered, Redis only saves the next instance a query.
            let _ = redis
                .with(|mut conn| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("EX")
                        .arg(ttl)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        }
        Ok(Arc::new(Link::from_row(row)))
    }

    /// Forgets a code everywhere this instance can reach (after a status or target change).
    pub async fn forget(&self, code: &str) {
        self.cache.invalidate(code).await;
        if let Some(redis) = &self.redis {
            let key = redis.key(&format!("link:{code}"));
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
