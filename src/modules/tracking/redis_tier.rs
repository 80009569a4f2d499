//! The shared counter tier in Redis: every instance pushes its micro-batches into one pending
//! hash; any instance moves that hash to the database. Pushes are idempotent (each carries an id
//! that Redis remembers for an hour) and the move is atomic (RENAME to a drain key recorded
//! before it is read), so a crash anywhere neither loses nor double counts.
//!
//! The pending hash holds one field per advert, hour and metric, `{advert}:{bucket}:{metric}`,
//! with every placement's counts added up, and a second field per named placement,
//! `{advert}:{bucket}:{metric}:{placement}`, with that placement's share. Totals therefore keep
//! the layout of earlier versions: a hash pushed by an earlier version reads as the generic card,
//! and an earlier version draining this one's hash still counts every total (it skips the shares).

use std::collections::HashMap;

use deadpool_redis::redis::{self, Script};

use crate::domain::AdvertId;
use crate::platform::db::now_ms;
use crate::platform::redis::{Redis, RedisError};
use crate::platform::tokens::random_base62;

use super::counters::{Batch, CounterKey, Counts, Metric, PlacementName, is_placement_name};

/// Field holding the pending click total, for the flush threshold.
const TOTAL_FIELD: &str = "_clicks";
/// How long Redis remembers a push id (a retried push is always much sooner).
const PUSH_MEMORY_SECS: u64 = 3600;
/// A drain key older than this is assumed abandoned by a crashed instance.
const ABANDONED_DRAIN_MS: i64 = 10_000;

const PUSH_SCRIPT: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  for i = 2, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return tonumber(redis.call('HGET', KEYS[1], '_clicks') or '0')
";

const DRAIN_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
";

/// Keys share one hash tag so that the scripts work on Redis Cluster too.
struct Keys {
    pending: String,
    drains: String,
}

pub struct RedisCounters {
    redis: Redis,
    keys: Keys,
    push: Script,
    drain: Script,
}

/// A push whose outcome is unknown (the connection broke after sending): it is retried with the
/// same id, which Redis applies at most once.
#[derive(Debug, Clone)]
pub struct PendingPush {
    pub id: String,
    pub batch: Batch,
}

#[derive(Debug)]
pub enum PushError {
    /// Nothing reached Redis: the push comes back untouched.
    NotSent(PendingPush, RedisError),
    /// The batch may or may not have been applied: retry it with the same id.
    Unknown(PendingPush, RedisError),
}

/// A batch moved out of Redis, to be applied to the database under `flush_id`.
pub struct Drained {
    pub flush_id: String,
    drain_key: String,
    id: String,
    pub batch: Batch,
}

impl RedisCounters {
    pub fn new(redis: Redis) -> Self {
        let keys = Keys {
            pending: redis.key("{counters}:pending"),
            drains: redis.key("{counters}:drains"),
        };
        Self {
            redis,
            keys,
            push: Script::new(PUSH_SCRIPT),
            drain: Script::new(DRAIN_SCRIPT),
        }
    }

    pub fn new_push(batch: Batch) -> PendingPush {
        PendingPush {
            id: format!("{}-{}", now_ms(), random_base62(12)),
            batch,
        }
    }

    /// Adds a micro-batch to the shared pending hash; returns the pending click total.
    pub async fn push(&self, push: PendingPush) -> Result<u64, PushError> {
        let mut invocation = self.push.prepare_invoke();
        invocation
            .key(&self.keys.pending)
            .key(self.redis.key(&format!("{{counters}}:push:{}", push.id)))
            .arg(PUSH_MEMORY_SECS);
        let mut clicks = 0u64;
        for ((advert, bucket), counts) in push.batch.totals() {
            for metric in Metric::ALL {
                let n = counts[metric as usize];
                if n > 0 {
                    invocation
                        .arg(format!("{}:{}:{}", advert.0, bucket, metric as usize))
                        .arg(n);
                    if metric != Metric::Impression {
                        clicks += n;
                    }
                }
            }
        }
        for (advert, bucket, placement, counts) in push.batch.named() {
            for metric in Metric::ALL {
                let n = counts[metric as usize];
                if n > 0 {
                    invocation
                        .arg(format!(
                            "{}:{}:{}:{}",
                            advert.0, bucket, metric as usize, placement
                        ))
                        .arg(n);
                }
            }
        }
        invocation.arg(TOTAL_FIELD).arg(clicks);
        let mut conn = match self.redis.connection().await {
            Ok(conn) => conn,
            Err(e) => return Err(PushError::NotSent(push, e)),
        };
        match self
            .redis
            .bounded(invocation.invoke_async::<u64>(&mut conn))
            .await
        {
            Ok(total) => Ok(total),
            Err(e) => Err(PushError::Unknown(push, e)),
        }
    }

    /// Moves everything pending out of Redis, atomically, to a drain key recorded in the drains
    /// set. Returns the drain's id (`None` when nothing was pending); `read_drain` reads it.
    pub async fn start_drain(&self) -> Result<Option<String>, RedisError> {
        let id = format!("{}-{}", now_ms(), random_base62(12));
        let drain_key = self.redis.key(&format!("{{counters}}:drain:{id}"));
        let moved: i64 = self
            .redis
            .with(|mut conn| {
                let script = self.drain.clone();
                let (pending, drain_key, drains, id) = (
                    self.keys.pending.clone(),
                    drain_key.clone(),
                    self.keys.drains.clone(),
                    id.clone(),
                );
                async move {
                    script
                        .key(pending)
                        .key(drain_key)
                        .key(drains)
                        .arg(id)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok((moved != 0).then_some(id))
    }

    pub async fn read_drain(&self, id: String) -> Result<Drained, RedisError> {
        let drain_key = self.redis.key(&format!("{{counters}}:drain:{id}"));
        let key = drain_key.clone();
        let fields: Vec<(String, i64)> =
            self.redis
                .with(|mut conn| async move {
                    redis::cmd("HGETALL").arg(key).query_async(&mut conn).await
                })
                .await?;
        let batch = batch_from_fields(fields);
        Ok(Drained {
            flush_id: format!("redis-{id}"),
            drain_key,
            id,
            batch,
        })
    }

    /// Forgets a drain once the database has it.
    pub async fn finish(&self, drained: &Drained) -> Result<(), RedisError> {
        let (key, set, id) = (
            drained.drain_key.clone(),
            self.keys.drains.clone(),
            drained.id.clone(),
        );
        self.redis
            .with(|mut conn| async move {
                redis::pipe()
                    .del(key)
                    .ignore()
                    .srem(set, id)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    /// Ids of drains left behind by an instance that died between moving and applying them.
    pub async fn abandoned(&self) -> Result<Vec<String>, RedisError> {
        let set = self.keys.drains.clone();
        let ids: Vec<String> =
            self.redis
                .with(|mut conn| async move {
                    redis::cmd("SMEMBERS").arg(set).query_async(&mut conn).await
                })
                .await?;
        let cutoff = now_ms() - ABANDONED_DRAIN_MS;
        Ok(ids
            .into_iter()
            .filter(|id| {
                let started = id.split('-').next().and_then(|ms| ms.parse::<i64>().ok());
                started.unwrap_or(0) < cutoff
            })
            .collect())
    }
}

/// Reads the fields of a pending or drain hash (see the module's description of the layout).
/// Fields that do not parse are left out.
fn batch_from_fields(fields: Vec<(String, i64)>) -> Batch {
    let mut totals: HashMap<(AdvertId, i64), Counts> = HashMap::new();
    let mut named: HashMap<CounterKey, Counts> = HashMap::new();
    for (field, n) in fields {
        if field == TOTAL_FIELD || n <= 0 {
            continue;
        }
        let mut parts = field.split(':');
        let (Some(advert), Some(bucket), Some(metric)) = (
            parts.next().and_then(|p| p.parse::<i64>().ok()),
            parts.next().and_then(|p| p.parse::<i64>().ok()),
            parts
                .next()
                .and_then(|p| p.parse::<usize>().ok())
                .and_then(Metric::from_index),
        ) else {
            continue;
        };
        let counts = match (parts.next(), parts.next()) {
            (None, _) => totals.entry((AdvertId(advert), bucket)).or_default(),
            (Some(name), None) if is_placement_name(name) => {
                let placement: PlacementName = name.into();
                named
                    .entry(CounterKey::new(AdvertId(advert), bucket, Some(placement)))
                    .or_default()
            }
            _ => continue,
        };
        counts[metric as usize] += n.unsigned_abs();
    }
    Batch::from_totals_and_named(totals, named)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|(f, n)| ((*f).to_owned(), *n)).collect()
    }

    #[test]
    fn a_hash_pushed_before_placements_reads_as_the_generic_card() {
        // The layout of earlier versions: totals only.
        let batch = batch_from_fields(fields(&[
            ("7:3600:0", 5),
            ("7:3600:3", 40),
            ("8:7200:1", 2),
            ("_clicks", 7),
        ]));
        assert_eq!(batch.deltas.len(), 2);
        assert_eq!(
            batch.deltas[&CounterKey::generic(AdvertId(7), 3600)],
            [5, 0, 0, 40]
        );
        assert_eq!(
            batch.deltas[&CounterKey::generic(AdvertId(8), 7200)],
            [0, 2, 0, 0]
        );
    }

    #[test]
    fn placement_shares_are_split_from_their_totals() {
        let batch = batch_from_fields(fields(&[
            ("7:3600:0", 5),
            ("7:3600:3", 40),
            ("7:3600:0:medium_rectangle", 2),
            ("7:3600:3:medium_rectangle", 30),
            ("7:3600:3:leaderboard", 10),
            // Not a placement name, or no total to split: left out.
            ("7:3600:3:Bad-Name", 1),
            ("9:0:0:square", 1),
            ("x:0:0", 1),
        ]));
        let key = |p: Option<&str>| CounterKey::new(AdvertId(7), 3600, p.map(PlacementName::from));
        assert_eq!(batch.deltas[&key(Some("medium_rectangle"))], [2, 0, 0, 30]);
        assert_eq!(batch.deltas[&key(Some("leaderboard"))], [0, 0, 0, 10]);
        assert_eq!(batch.deltas[&key(None)], [3, 0, 0, 0]);
        assert_eq!(batch.deltas.len(), 3);
        assert_eq!(batch.totals()[&(AdvertId(7), 3600)], [5, 0, 0, 40]);
    }
}
