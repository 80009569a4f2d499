//! The shared counter tier in Redis: every instance pushes its micro-batches into one pending
//! hash; any instance moves that hash to the database. Redis is a cache here, never the only
//! copy of a count: each instance keeps what it pushed until the database holds it.
//!
//! - `{counters}:epoch` names this Redis's data (a random id, set once with SET NX). Every push
//!   and drain names the epoch it expects; a missing or different one means Redis lost its data,
//!   and the pushing instance recovers what it kept (see `pipeline.rs`).
//! - `{counters}:gen` is the generation pushes land in; a drain moves the pending hash to
//!   `drain:{epoch}-{gen}` and starts the next generation, so a drain's flush id,
//!   `redis-{epoch}-{gen}`, is known to every instance whose pushes it holds.
//! - a push is applied at most once: its id is remembered (with the generation it landed in)
//!   until the pushing instance has the answer, which it says by naming the id in a later push,
//!   or for 7 days (the flush id retention) if it never does.
//!
//! The pending hash holds one field per advert, hour and metric, `{advert}:{bucket}:{metric}`,
//! with every placement's counts added up, a second field per named placement,
//! `{advert}:{bucket}:{metric}:{placement}`, with that placement's share, and a third per known
//! creative, `{advert}:{bucket}:{metric}:+{creative}`, with that creative's share (no placement
//! name holds a `+`; earlier versions skip these fields as foreign). Totals therefore keep
//! the layout of earlier versions: a hash pushed by an earlier version reads as the generic card,
//! and an earlier version draining this one's hash still counts every total (it skips the shares).
//! Drains of earlier versions (`{ms}-{random}` ids, no start time recorded) are still found and
//! applied as abandoned ones; an earlier version sees this one's drain ids as abandoned at once
//! and may apply one beside this version, which the flush id in the database settles.

use std::collections::HashMap;

use redis::{self, Script};

use crate::domain::AdvertId;
use crate::domain::creative::CreativeId;
use crate::platform::db::now_ms;
use crate::platform::redis::{Redis, RedisError};
use crate::platform::tokens::random_base62;

use super::ascii::{self, Placements};
use super::counters::{Batch, BatchSize, Counts, HourShares, Metric, PlacementName, ViewerGroup};

/// Field holding the pending click total, for the flush threshold.
const TOTAL_FIELD: &str = "_clicks";
/// How long Redis remembers a push id the pushing instance never confirmed (it died): as long as
/// the database remembers flush ids, longer than any retry.
const PUSH_MEMORY_SECS: u64 = 7 * 24 * 3600;
/// A drain key older than this is assumed abandoned by a crashed instance.
pub const ABANDONED_DRAIN_MS: i64 = 10_000;
/// Fields asked for per `HSCAN` call when reading a drain: a page takes Redis about a
/// millisecond, so a drain's read never holds Redis, or outlasts `redis.timeout_ms`, however
/// large the drain.
const DRAIN_PAGE_FIELDS: usize = 4096;
/// Confirmed push ids forgotten per push call, so one call stays small.
pub const FORGET_PER_PUSH: usize = 512;

const EPOCH_SCRIPT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
";

// KEYS: pending, this push's id, epoch, generation, then push ids to forget.
// ARGV: memory secs, expected epoch, then field, count pairs.
// Returns {generation the push landed in, pending clicks}, or {-1, 0} when the epoch is not the
// expected one (nothing applied).
const PUSH_SCRIPT: &str = r"
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return {-1, 0} end
for i = 5, #KEYS do redis.call('DEL', KEYS[i]) end
local landed = redis.call('GET', KEYS[2])
if not landed then
  landed = redis.call('GET', KEYS[4]) or '0'
  redis.call('SET', KEYS[2], landed, 'EX', ARGV[1])
  for i = 3, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return {tonumber(landed), tonumber(redis.call('HGET', KEYS[1], '_clicks') or '0')}
";

// KEYS: pending, drains set, epoch, generation, drain start times.
// ARGV: expected epoch, drain key prefix, now (ms).
// Returns {1, id} when a drain started, {0, ''} when nothing was pending, {-1, ''} when the epoch
// is not the expected one.
const DRAIN_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[3])
if epoch ~= ARGV[1] then return {-1, ''} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local gen = redis.call('INCR', KEYS[4]) - 1
local id = epoch .. '-' .. gen
redis.call('RENAME', KEYS[1], ARGV[2] .. id)
redis.call('SADD', KEYS[2], id)
redis.call('HSET', KEYS[5], id, ARGV[3])
return {1, id}
";

/// The flush id the database records for the drain of `generation` of `epoch`.
pub fn drain_flush_id(epoch: &str, generation: u64) -> String {
    format!("redis-{epoch}-{generation}")
}

/// Recorded beside `drain_flush_id` when the drain was lost with Redis's data: the instances
/// that pushed into it push their share again.
pub fn lost_flush_id(epoch: &str, generation: u64) -> String {
    format!("lost-{epoch}-{generation}")
}

/// Keys share one hash tag so that the scripts work on Redis Cluster too.
struct Keys {
    pending: String,
    drains: String,
    epoch: String,
    generation: String,
    drain_started: String,
    drain_prefix: String,
}

pub struct RedisCounters {
    redis: Redis,
    keys: Keys,
    epoch: Script,
    push: Script,
    drain: Script,
}

/// A micro-batch on its way to Redis. A push whose outcome is unknown (the connection broke
/// after sending) is retried with the same id, which Redis applies at most once.
#[derive(Debug, Clone)]
pub struct PendingPush {
    pub id: String,
    pub batch: Batch,
    /// The epoch it is meant for.
    pub epoch: String,
    /// The latest generation the instance saw when it sent the push: where the push landed, if
    /// at all, when Redis lost its data before answering.
    pub generation_hint: u64,
}

/// Where a push landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub generation: u64,
    /// The deployment's clicks pending in Redis after it.
    pub pending_clicks: u64,
}

#[derive(Debug)]
pub enum PushFailure {
    /// Nothing reached Redis.
    NotSent(RedisError),
    /// The pushes may or may not have been applied: retry them with the same ids.
    Unknown(RedisError),
}

/// What starting a drain found.
#[derive(Debug, PartialEq, Eq)]
pub enum DrainStart {
    Nothing,
    Started(String),
    /// Redis's epoch is not the one expected: it lost its data.
    EpochChanged,
}

/// A batch moved out of Redis, to be applied to the database under `flush_id`.
pub struct Drained {
    pub flush_id: String,
    pub batch: Batch,
}

impl RedisCounters {
    pub fn new(redis: Redis) -> Self {
        let keys = Keys {
            pending: redis.key("{counters}:pending"),
            drains: redis.key("{counters}:drains"),
            epoch: redis.key("{counters}:epoch"),
            generation: redis.key("{counters}:gen"),
            drain_started: redis.key("{counters}:drain_started"),
            drain_prefix: redis.key("{counters}:drain:"),
        };
        Self {
            redis,
            keys,
            epoch: Script::new(EPOCH_SCRIPT),
            push: Script::new(PUSH_SCRIPT),
            drain: Script::new(DRAIN_SCRIPT),
        }
    }

    pub fn new_push(batch: Batch, epoch: String, generation_hint: u64) -> PendingPush {
        PendingPush {
            id: format!("{}-{}", now_ms(), random_base62(12)),
            batch,
            epoch,
            generation_hint,
        }
    }

    fn push_key(&self, id: &str) -> String {
        self.redis.key(&format!("{{counters}}:push:{id}"))
    }

    /// The epoch of Redis's data, naming one if Redis has none (new, or emptied).
    pub async fn epoch(&self) -> Result<String, RedisError> {
        let (script, key) = (self.epoch.clone(), self.keys.epoch.clone());
        let candidate = format!("e{}", random_base62(12));
        self.redis
            .with(|mut conn| async move {
                script
                    .key(key)
                    .arg(candidate)
                    .invoke_async::<String>(&mut conn)
                    .await
            })
            .await
    }

    /// The epoch Redis has now, if any (a cheap check for a loss).
    pub async fn current_epoch(&self) -> Result<Option<String>, RedisError> {
        let key = self.keys.epoch.clone();
        self.redis
            .with(|mut conn| async move { redis::cmd("GET").arg(key).query_async(&mut conn).await })
            .await
    }

    /// Sends `pushes` in one round trip, forgetting the ids in `forget` (pushes whose answers
    /// arrived). Each push comes back with where it landed, or `None` when Redis's epoch is not
    /// the push's (nothing of it was applied).
    pub async fn push_all(
        &self,
        pushes: &[PendingPush],
        forget: &[String],
    ) -> Result<Vec<Option<Landed>>, PushFailure> {
        let invocations: Vec<_> = pushes
            .iter()
            .enumerate()
            .map(|(i, push)| {
                let forget: &[String] = if i == 0 { forget } else { &[] };
                self.invocation(push, forget)
            })
            .collect();
        let mut pipe = redis::pipe();
        pipe.load_script(&self.push).ignore();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        let mut conn = match self.redis.connection().await {
            Ok(conn) => conn,
            Err(e) => return Err(PushFailure::NotSent(e)),
        };
        let answers: Vec<(i64, u64)> = self
            .redis
            .bounded(pipe.query_async(&mut conn))
            .await
            .map_err(PushFailure::Unknown)?;
        Ok(answers
            .into_iter()
            .map(|(generation, pending_clicks)| {
                u64::try_from(generation).ok().map(|generation| Landed {
                    generation,
                    pending_clicks,
                })
            })
            .collect())
    }

    fn invocation<'a>(
        &'a self,
        push: &PendingPush,
        forget: &[String],
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = self.push.prepare_invoke();
        invocation
            .key(&self.keys.pending)
            .key(self.push_key(&push.id))
            .key(&self.keys.epoch)
            .key(&self.keys.generation);
        for id in forget {
            invocation.key(self.push_key(id));
        }
        invocation.arg(PUSH_MEMORY_SECS).arg(&push.epoch);
        let clicks = push_fields(&push.batch, |field, n| {
            invocation.arg(field).arg(n);
        });
        invocation.arg(TOTAL_FIELD).arg(clicks);
        invocation
    }

    /// Moves everything pending out of Redis, atomically, to the drain key of the current
    /// generation, recorded in the drains set; `read_drain` reads it.
    pub async fn start_drain(&self, epoch: &str) -> Result<DrainStart, RedisError> {
        let (moved, id): (i64, String) = self
            .redis
            .with(|mut conn| {
                let script = self.drain.clone();
                let keys = [
                    self.keys.pending.clone(),
                    self.keys.drains.clone(),
                    self.keys.epoch.clone(),
                    self.keys.generation.clone(),
                    self.keys.drain_started.clone(),
                ];
                let (epoch, prefix) = (epoch.to_owned(), self.keys.drain_prefix.clone());
                async move {
                    let mut invocation = script.prepare_invoke();
                    for key in keys {
                        invocation.key(key);
                    }
                    invocation
                        .arg(epoch)
                        .arg(prefix)
                        .arg(now_ms())
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        Ok(match moved {
            1 => DrainStart::Started(id),
            0 => DrainStart::Nothing,
            _ => DrainStart::EpochChanged,
        })
    }

    /// A drain's contents; `None` when its key is gone (Redis lost it, or it was finished).
    ///
    /// Read in pages of about `DRAIN_PAGE_FIELDS` fields, each its own call within
    /// `redis.timeout_ms`: a drain of a busy hour holds hundreds of thousands of fields, which one
    /// `HGETALL` would answer in a single reply that keeps Redis from everyone else for longer
    /// than a call may take. A drain is never written after it is moved, so a field that `HSCAN`
    /// returns twice (while Redis resizes the hash) carries the same count both times and is
    /// kept once. A drain deleted during the read (another instance applied and finished it, or
    /// Redis lost its data) may have been read in part; the read then ends with a check that the
    /// key still exists, so a partial read is never applied under the drain's flush id.
    pub async fn read_drain(&self, id: String) -> Result<Option<Drained>, RedisError> {
        let key = format!("{}{id}", self.keys.drain_prefix);
        let mut conn = self.redis.connection().await?;
        let length: usize = self
            .redis
            .bounded(redis::cmd("HLEN").arg(&key).query_async(&mut conn))
            .await?;
        let mut fields = DrainFields::with_room(length);
        let mut returned = 0usize;
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<FieldBytes>) = self
                .redis
                .bounded(
                    redis::cmd("HSCAN")
                        .arg(&key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(DRAIN_PAGE_FIELDS)
                        .query_async(&mut conn),
                )
                .await?;
            returned += page.len();
            for (field, n) in &page {
                fields.read(field, n);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let exists: bool = self
            .redis
            .bounded(redis::cmd("EXISTS").arg(&key).query_async(&mut conn))
            .await?;
        // A drain is never empty (only an existing pending hash is moved), so an empty answer is
        // a drain that is gone: applying it would record its id with none of its counts.
        if !exists || returned == 0 {
            return Ok(None);
        }
        Ok(Some(Drained {
            flush_id: format!("redis-{id}"),
            batch: fields.into_batch(),
        }))
    }

    /// Forgets a drain once the database has it (or once it is gone). `UNLINK` frees the hash's
    /// memory off Redis's main thread: deleting a drain of hundreds of thousands of fields with
    /// `DEL` would stall every other call for as long.
    pub async fn finish(&self, id: &str) -> Result<(), RedisError> {
        let (key, set, started, id) = (
            format!("{}{id}", self.keys.drain_prefix),
            self.keys.drains.clone(),
            self.keys.drain_started.clone(),
            id.to_owned(),
        );
        self.redis
            .with(|mut conn| async move {
                redis::pipe()
                    .unlink(key)
                    .ignore()
                    .srem(set, &id)
                    .ignore()
                    .hdel(started, &id)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    /// How many drains wait in Redis, every instance's.
    pub async fn drain_count(&self) -> Result<u64, RedisError> {
        let set = self.keys.drains.clone();
        self.redis
            .with(
                |mut conn| async move { redis::cmd("SCARD").arg(set).query_async(&mut conn).await },
            )
            .await
    }

    /// Every drain moved out of Redis and not finished yet, with when it was moved
    /// (milliseconds since the Unix epoch; 0 when unknown): one an instance is applying, one it
    /// failed to apply and will try again, or one left behind by an instance that died between
    /// moving and applying it. Applying a drain that its owner applies too is harmless: its flush
    /// id makes the second apply a no-op.
    pub async fn waiting_drains(&self) -> Result<Vec<(String, i64)>, RedisError> {
        let (set, started) = (self.keys.drains.clone(), self.keys.drain_started.clone());
        let (ids, starts): (Vec<String>, HashMap<String, i64>) = self
            .redis
            .with(|mut conn| async move {
                redis::pipe()
                    .smembers(set)
                    .hgetall(started)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(ids
            .into_iter()
            .map(|id| {
                // Earlier versions' ids start with their start time.
                let started = starts
                    .get(&id)
                    .copied()
                    .or_else(|| id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()))
                    .unwrap_or(0);
                (id, started)
            })
            .collect())
    }
}

/// Gives `field` each field a push of `batch` adds to the pending hash, with its count (see the
/// module's description of the layout); answers the clicks of every kind among them.
fn push_fields(batch: &Batch, mut field: impl FnMut(String, u64)) -> u64 {
    let mut clicks = 0u64;
    for ((advert, bucket), counts) in batch.totals() {
        for metric in Metric::ALL {
            let n = counts[metric];
            if n > 0 {
                field(format!("{}:{}:{}", advert.0, bucket, metric as usize), n);
                if metric.is_click() {
                    clicks += n;
                }
            }
        }
    }
    let shares = batch
        .named()
        .into_iter()
        .map(|((advert, bucket, placement), counts)| {
            (advert, bucket, placement.to_string(), counts)
        })
        .chain(
            batch
                .creatives()
                .into_iter()
                .map(|((advert, bucket, creative), counts)| {
                    (advert, bucket, format!("+{creative}"), counts)
                }),
        )
        .chain(
            batch
                .groups
                .iter()
                .map(|((advert, bucket, group), counts)| {
                    (*advert, *bucket, group.token(), *counts)
                }),
        );
    for (advert, bucket, share, counts) in shares {
        for metric in Metric::ALL {
            let n = counts[metric];
            if n > 0 {
                field(
                    format!("{}:{}:{}:{share}", advert.0, bucket, metric as usize),
                    n,
                );
            }
        }
    }
    clicks
}

/// A hash's field and its value, as Redis answers them.
type FieldBytes = (Vec<u8>, Vec<u8>);

/// What a field of a pending or drain hash counts (see the module's description of the
/// layout): an advert's hour in all, or one share of it. Ordered with the total first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Share {
    Total,
    Placement(PlacementName),
    Creative(CreativeId),
    Group(ViewerGroup),
}

/// One field of a drain, parsed.
#[derive(Debug)]
struct Field {
    advert: AdvertId,
    bucket: i64,
    share: Share,
    metric: Metric,
    n: u64,
}

impl Field {
    /// What the field counts: its hour, its share and its metric.
    fn key(&self) -> (AdvertId, i64, &Share, u8) {
        (self.advert, self.bucket, &self.share, self.metric as u8)
    }
}

/// The fields of a drain, parsed straight from their bytes as its pages arrive, one after
/// another in a vector sized by the drain's length: 56 bytes a field, written in order, where
/// maps that grow field by field have the kernel clear pages they then scatter over. Each number
/// has one spelling ([`ascii::unsigned`]), so a field `HSCAN` returns twice has the same key
/// twice, and sorting puts the two side by side, where the second sets the metric to the count
/// the first did. Fields that do not parse, and counts that are not positive, are left out,
/// rather than fail every read of the drain (a hand-edited hash).
#[derive(Debug, Default)]
struct DrainFields {
    fields: Vec<Field>,
    placements: Placements,
}

impl DrainFields {
    fn with_room(fields: usize) -> Self {
        Self {
            fields: Vec::with_capacity(fields),
            placements: Placements::default(),
        }
    }

    fn read(&mut self, field: &[u8], n: &[u8]) {
        let Some(n) = ascii::signed(n)
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n > 0)
        else {
            return;
        };
        if let Some((advert, bucket, metric, share)) = self.parse(field) {
            self.fields.push(Field {
                advert,
                bucket,
                share,
                metric,
                n,
            });
        }
    }

    /// `{advert}:{bucket}:{metric}`, then the share's name if any: a placement, `+{creative}`,
    /// `@{device}` or `~{country}`.
    fn parse(&mut self, field: &[u8]) -> Option<(AdvertId, i64, Metric, Share)> {
        let (advert, rest) = ascii::split_once(field, b':')?;
        let (bucket, rest) = ascii::split_once(rest, b':')?;
        let (metric, share) = match ascii::split_once(rest, b':') {
            Some((metric, share)) => (metric, Some(share)),
            None => (rest, None),
        };
        let metric = Metric::from_index(usize::try_from(ascii::unsigned(metric)?).ok()?)?;
        let share = match share {
            None => Share::Total,
            Some([b'+', creative @ ..]) => {
                Share::Creative(CreativeId(u32::try_from(ascii::unsigned(creative)?).ok()?))
            }
            Some(token @ [b'@' | b'~', ..]) => {
                Share::Group(ViewerGroup::from_token(std::str::from_utf8(token).ok()?)?)
            }
            Some(name) => Share::Placement(self.placements.name(name)?),
        };
        Some((
            AdvertId(ascii::signed(advert)?),
            ascii::signed(bucket)?,
            metric,
            share,
        ))
    }

    /// The batch the fields make: sorted, so that each hour's fields are side by side, the
    /// total first, then each share's metrics; each hour's shares split from its total
    /// ([`Batch::add_hour`]).
    fn into_batch(self) -> Batch {
        let mut fields = self.fields;
        fields.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
        let hour_of = |f: &Field| (f.advert, f.bucket);
        let hours = fields.chunk_by(|a, b| hour_of(a) == hour_of(b)).count();
        let mut batch = Batch::with_room(BatchSize {
            keys: hours,
            groups: 0,
        });
        for hour_fields in fields.chunk_by(|a, b| hour_of(a) == hour_of(b)) {
            let mut hour = HourShares::default();
            for same in hour_fields.chunk_by(|a, b| a.share == b.share) {
                let mut counts = Counts::default();
                for field in same {
                    // Set, not added: a field returned twice gives the same count twice.
                    counts[field.metric] = field.n;
                }
                match &same[0].share {
                    Share::Total => hour.total = counts,
                    Share::Placement(name) => hour.placements.push((name.clone(), counts)),
                    Share::Creative(creative) => hour.creatives.push((*creative, counts)),
                    Share::Group(group) => hour.groups.push((*group, counts)),
                }
            }
            let (advert, bucket) = hour_of(&hour_fields[0]);
            batch.add_hour(advert, bucket, hour);
        }
        batch
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::modules::tracking::counters::CounterKey;

    /// The batch a drain of these fields, in this order, reads as.
    fn batch_from_fields(list: &[(&str, i64)]) -> Batch {
        let mut fields = DrainFields::default();
        for (field, n) in list {
            fields.read(field.as_bytes(), n.to_string().as_bytes());
        }
        fields.into_batch()
    }

    #[test]
    fn a_hash_pushed_before_placements_reads_as_the_generic_card() {
        // The layout of earlier versions: totals only.
        let batch = batch_from_fields(&[
            ("7:3600:0", 5),
            ("7:3600:3", 40),
            ("8:7200:1", 2),
            ("_clicks", 7),
        ]);
        assert_eq!(batch.deltas.len(), 2);
        assert_eq!(
            batch.deltas[&CounterKey::generic(AdvertId(7), 3600)],
            Counts::from_values([5, 0, 0, 40, 0, 0])
        );
        assert_eq!(
            batch.deltas[&CounterKey::generic(AdvertId(8), 7200)],
            Counts::from_values([0, 2, 0, 0, 0, 0])
        );
    }

    #[test]
    fn a_field_returned_twice_counts_once_and_a_number_has_one_spelling() {
        let mut fields = DrainFields::default();
        for (field, n) in [
            ("7:3600:3", "40"),
            ("7:3600:3:leaderboard", "10"),
            ("7:3600:3:@mobile", "12"),
            // What HSCAN may return again while Redis resizes the hash.
            ("7:3600:3", "40"),
            ("7:3600:3:leaderboard", "10"),
            ("7:3600:3:@mobile", "12"),
            // Other spellings of the same numbers, values that are not positive counts, and
            // the pending click total: left out.
            ("07:3600:3", "5"),
            ("7:03600:3", "5"),
            ("7:3600:03", "5"),
            ("+7:3600:3", "5"),
            ("7:3600:3:+02", "5"),
            ("7:3600:0", "05"),
            ("7:3600:0", "-5"),
            ("7:3600:0", "0"),
            ("7:3600:0", "x"),
            ("7:3600:1", "+5"),
            ("7:3600:6", "5"),
            ("7:3600", "5"),
            ("7:3600:3:a:b", "5"),
            ("_clicks", "40"),
        ] {
            fields.read(field.as_bytes(), n.as_bytes());
        }
        let batch = fields.into_batch();
        assert_eq!(
            batch.totals()[&(AdvertId(7), 3600)],
            Counts::from_values([0, 0, 0, 40, 0, 0])
        );
        let leaderboard = PlacementName::from("leaderboard");
        assert_eq!(
            batch.named()[&(AdvertId(7), 3600, &leaderboard)],
            Counts::from_values([0, 0, 0, 10, 0, 0])
        );
        assert_eq!(batch.deltas.len(), 2);
        assert!(batch.creatives().is_empty());
        let mobile = ViewerGroup::Device(crate::domain::targeting::Device::Mobile);
        assert_eq!(
            batch.groups[&(AdvertId(7), 3600, mobile)],
            Counts::from_values([0, 0, 0, 12, 0, 0])
        );
        assert_eq!(batch.groups.len(), 1);
    }

    #[test]
    fn a_drain_of_many_hours_reads_back_as_the_batch_pushed() {
        use crate::domain::targeting::{Country, Device};
        let (wide, box_): (PlacementName, PlacementName) = ("wide".into(), "box".into());
        let mobile = ViewerGroup::Device(Device::Mobile);
        let germany = ViewerGroup::Country(Country::known("DE").unwrap());
        let mut pushed = Batch::default();
        for advert in -3..200 {
            for bucket in [0, 3600, -3600] {
                let n = u64::try_from(advert + 4).unwrap() * 3
                    + u64::try_from(bucket / 3600 + 1).unwrap();
                for (placement, creative, metric) in [
                    (None, None, Metric::Click),
                    (Some(&wide), Some(2), Metric::Impression),
                    (Some(&box_), None, Metric::DuplicateClick),
                    (None, Some(5), Metric::SuspiciousImpression),
                ] {
                    let key = CounterKey::new(AdvertId(advert), bucket, placement.cloned())
                        .with_creative(creative.map(CreativeId));
                    pushed.add(key, metric, n);
                }
                // Every impression on a mobile; every click in Germany, the duplicates too.
                let mut impressions = Counts::default();
                impressions[Metric::Impression] = n;
                pushed.add_group(AdvertId(advert), bucket, mobile, &impressions);
                let mut clicks = Counts::default();
                clicks[Metric::Click] = n;
                clicks[Metric::DuplicateClick] = n;
                pushed.add_group(AdvertId(advert), bucket, germany, &clicks);
            }
        }
        // The size the reader's description gives.
        assert_eq!(std::mem::size_of::<Field>(), 56);
        let mut fields = DrainFields::default();
        let clicks = push_fields(&pushed, |field, n| {
            fields.read(field.as_bytes(), n.to_string().as_bytes());
        });
        assert_eq!(clicks, pushed.clicks_of_any_kind());
        let read = fields.into_batch();
        assert_eq!(read.totals(), pushed.totals());
        assert_eq!(read.named(), pushed.named());
        assert_eq!(read.creatives(), pushed.creatives());
        assert_eq!(read.groups, pushed.groups);
        assert_eq!(
            read.total(Metric::Impression),
            pushed.total(Metric::Impression)
        );
    }

    #[test]
    fn placement_shares_are_split_from_their_totals() {
        let batch = batch_from_fields(&[
            ("7:3600:0", 5),
            ("7:3600:3", 40),
            ("7:3600:0:medium_rectangle", 2),
            ("7:3600:3:medium_rectangle", 30),
            ("7:3600:3:leaderboard", 10),
            // Not a placement name, or no total to split: left out.
            ("7:3600:3:Bad-Name", 1),
            ("9:0:0:square", 1),
            ("x:0:0", 1),
        ]);
        let key = |p: Option<&str>| CounterKey::new(AdvertId(7), 3600, p.map(PlacementName::from));
        assert_eq!(
            batch.deltas[&key(Some("medium_rectangle"))],
            Counts::from_values([2, 0, 0, 30, 0, 0])
        );
        assert_eq!(
            batch.deltas[&key(Some("leaderboard"))],
            Counts::from_values([0, 0, 0, 10, 0, 0])
        );
        assert_eq!(
            batch.deltas[&key(None)],
            Counts::from_values([3, 0, 0, 0, 0, 0])
        );
        assert_eq!(batch.deltas.len(), 3);
        assert_eq!(
            batch.totals()[&(AdvertId(7), 3600)],
            Counts::from_values([5, 0, 0, 40, 0, 0])
        );
    }

    #[test]
    fn creative_shares_are_read_beside_the_placement_shares() {
        let batch = batch_from_fields(&[
            ("7:3600:0", 5),
            ("7:3600:3", 40),
            ("7:3600:3:leaderboard", 10),
            ("7:3600:0:+2", 4),
            ("7:3600:3:+2", 25),
            ("7:3600:3:+1", 15),
            // Not a creative number: left out.
            ("7:3600:3:+x", 1),
            ("7:3600:3:+", 1),
        ]);
        assert_eq!(
            batch.totals()[&(AdvertId(7), 3600)],
            Counts::from_values([5, 0, 0, 40, 0, 0])
        );
        let creatives = batch.creatives();
        assert_eq!(creatives.len(), 2);
        assert_eq!(
            creatives[&(AdvertId(7), 3600, CreativeId(2))],
            Counts::from_values([4, 0, 0, 25, 0, 0])
        );
        assert_eq!(
            creatives[&(AdvertId(7), 3600, CreativeId(1))],
            Counts::from_values([0, 0, 0, 15, 0, 0])
        );
        let leaderboard = PlacementName::from("leaderboard");
        assert_eq!(
            batch.named()[&(AdvertId(7), 3600, &leaderboard)],
            Counts::from_values([0, 0, 0, 10, 0, 0])
        );
    }

    #[test]
    fn device_and_country_shares_are_read_and_never_claim_more_than_their_total() {
        use crate::domain::targeting::{Country, Device};
        let batch = batch_from_fields(&[
            ("7:3600:0", 5),
            ("7:3600:3", 40),
            ("7:3600:3:@mobile", 30),
            ("7:3600:3:@tablet", 30),
            ("7:3600:0:~DE", 2),
            ("7:3600:3:~DE", 12),
            // Not a device or a country: left out.
            ("7:3600:3:@phone", 1),
            ("7:3600:3:~ZZ", 1),
            ("7:3600:3:~de", 1),
        ]);
        let group = |g| batch.groups.get(&(AdvertId(7), 3600, g)).copied();
        assert_eq!(
            group(ViewerGroup::Country(Country::known("DE").unwrap())),
            Some(Counts::from_values([2, 0, 0, 12, 0, 0]))
        );
        // 60 impressions claimed of 40: the devices' shares are cut to the total.
        let mobile = group(ViewerGroup::Device(Device::Mobile)).unwrap_or_default();
        let tablet = group(ViewerGroup::Device(Device::Tablet)).unwrap_or_default();
        assert_eq!(mobile.impressions + tablet.impressions, 40);
        assert_eq!(batch.groups.len(), 3);
        assert_eq!(
            batch.totals()[&(AdvertId(7), 3600)],
            Counts::from_values([5, 0, 0, 40, 0, 0])
        );
    }
}
