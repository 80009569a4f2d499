//! The counter pipeline: hot buffer -> (every push interval) Redis or the local journal ->
//! (on report, interval or threshold) the database. Background tasks and the blocking pool do
//! all the I/O; the hot paths only add to the buffer. What an instance pushed to Redis it keeps
//! until the database holds it, and counts again if Redis loses it.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::AdvertId;
use crate::domain::creative::CreativeId;
use crate::domain::events::EventType;
use crate::domain::targeting::Viewer;
use crate::platform::db::{Db, DbError, now_ms};
use crate::platform::events::Outbox;
use crate::platform::redis::RedisError;

use super::counters::{Batch, BatchSize, CounterBuffer, Metric, PlacementName};
use super::journal::{self, Journal, SegmentContents};
use super::redis_tier::{
    ABANDONED_DRAIN_MS, DrainStart, FORGET_PER_PUSH, Landed, PendingPush, PushFailure,
    RedisCounters, drain_flush_id, lost_flush_id,
};
use super::store::{self, Applied};

/// After a failed Redis call, the instance works locally this long before trying Redis again.
const REDIS_RETRY_MS: i64 = 1000;
/// Flush ids older than this are forgotten.
const FLUSH_ID_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Segments applied per flush, so one flush after a long outage stays a bounded transaction.
const MAX_SEGMENTS_PER_FLUSH: usize = 2000;
/// Pushes whose answer never came, kept for a retry with their ids. Past it, new counts go to
/// the journal instead of Redis until Redis answers again.
const MAX_UNCONFIRMED_PUSHES: usize = 256;
/// Counts neither Redis nor the journal took (a full disk while Redis is down), in (advert,
/// hour, placement) keys. Past it, further counts are dropped, counted in
/// `reklama_counter_dropped_total` and logged.
const MAX_STRANDED_KEYS: usize = 1_000_000;
/// How often an instance with kept pushes looks whether Redis still has its epoch, so that it
/// recovers a loss even when it has nothing new to push.
const EPOCH_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// A flush that pending counts ask for starts no sooner than this many times the last flush's
/// length after that one ended. A flush holds the database's writer for its whole length
/// (SQLite has one writer), so under a click load that keeps the threshold reached, flushing
/// takes at most a quarter of the writer's time and intake and the job queue get the rest.
/// Rarer flushes also write fewer rows per click: each writes one row per advert and hour it
/// touched, however many clicks that row sums.
const FLUSH_GAP_FACTOR: u32 = 3;
/// How long one flush's transaction may take. It writes a row per advert and hour touched (at
/// 100 000 adverts under a steady click load, several seconds on SQLite), longer than a request's
/// `database.call_timeout_ms` allows; abandoned at that bound, it went on holding the writer in
/// its thread, committed, and was retried as a failure, so the flushes the threshold and the
/// interval ask for never counted as done. Each statement stays under the database's own
/// deadlines (`statement_timeout_ms` on PostgreSQL, the lock wait on SQLite); a report's flush is
/// still held to the request's deadline.
const FLUSH_CALL_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub push_interval: Duration,
    pub flush_interval: Duration,
    pub flush_threshold: u64,
    pub journal_warn_bytes: u64,
    /// How much memory the pushes an instance keeps against a loss of Redis may take (see
    /// `retained`); past it, new counts go to the journal until the database holds enough.
    pub redis_kept_bytes: u64,
    /// Whether to record a `stats.flushed` event per advert and hour with every flush, asked
    /// at each flush (a webhook may subscribe at any time).
    pub outbox: Outbox,
}

/// Counters about the pipeline itself, for metrics and tests.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub redis_pushes: AtomicU64,
    pub journal_appends: AtomicU64,
    pub rows_flushed: AtomicU64,
    /// Drains waiting in Redis (every instance's), as this instance last saw them.
    pub redis_drains: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("journal: {0}")]
    Journal(#[from] std::io::Error),
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("counts redis lost are being pushed again")]
    Recovering,
}

/// How hard a flush tries to reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Background flushes: skip Redis while it is known to be down.
    BestEffort,
    /// Reports: Redis holds other instances' clicks, so try it even when it failed a moment ago,
    /// and fail the flush if it cannot be drained.
    Everything,
}

pub struct CounterPipeline {
    buffer: CounterBuffer,
    journal: Arc<Journal>,
    redis: Option<RedisCounters>,
    db: Db,
    settings: PipelineSettings,
    /// One flush at a time per instance; a report waits for the running one, then flushes again.
    flush_lock: tokio::sync::Mutex<()>,
    /// One push at a time: a flush's own push waits for a background push that has drained the
    /// buffer but not yet written it out, so a report includes every count taken before it.
    push_lock: tokio::sync::Mutex<()>,
    /// Pushes whose outcome Redis did not confirm, retried with their ids.
    unconfirmed: Mutex<Vec<PendingPush>>,
    /// Ids of answered pushes, for Redis to forget with the next push.
    confirmed: Mutex<Vec<String>>,
    /// Redis's epoch as this instance last saw it.
    epoch: Mutex<Option<String>>,
    last_generation: AtomicU64,
    /// What this instance pushed, merged per (epoch, generation), until the database holds the
    /// drain of that generation. A generation lasts from one drain to the next, and an instance
    /// starts no drain while one of its own waits, so this holds a few generations, each
    /// bounded by the keys counted in it; `settings.redis_kept_bytes` bounds the whole.
    retained: Mutex<BTreeMap<(String, u64), Batch>>,
    /// `retained` is past `settings.redis_kept_bytes`: counts go to the journal.
    kept_full: AtomicBool,
    /// Redis lost an epoch this instance kept pushes of.
    recovery_wanted: AtomicBool,
    /// Drains this instance moved out of Redis but has not applied yet.
    own_drains: Mutex<Vec<String>>,
    /// Deltas that could be neither pushed nor journaled, retried on the next tick.
    stranded: Mutex<Batch>,
    /// The segments a flush read but the database did not take, and their sum: the next flush
    /// reads only segments closed since, not the whole journal again.
    unapplied_segments: Mutex<Option<(Vec<String>, Arc<Batch>)>>,
    /// The size of the last batch read from the journal: the next flush makes this much room
    /// before reading (a flush at 100 000 adverts reads about 150 000 keys).
    journal_batch_size: Mutex<BatchSize>,
    redis_paused_until: AtomicI64,
    journal_clicks: AtomicU64,
    /// The deployment's clicks waiting in Redis, as the last push or drain saw them.
    redis_clicks: AtomicU64,
    flush_wanted: Notify,
    stats: PipelineStats,
}

impl CounterPipeline {
    pub fn new(
        db: Db,
        journal: Journal,
        redis: Option<RedisCounters>,
        settings: PipelineSettings,
    ) -> Self {
        Self {
            buffer: CounterBuffer::default(),
            journal: Arc::new(journal),
            redis,
            db,
            settings,
            flush_lock: tokio::sync::Mutex::new(()),
            push_lock: tokio::sync::Mutex::new(()),
            unconfirmed: Mutex::new(Vec::new()),
            confirmed: Mutex::new(Vec::new()),
            epoch: Mutex::new(None),
            last_generation: AtomicU64::new(0),
            retained: Mutex::new(BTreeMap::new()),
            kept_full: AtomicBool::new(false),
            recovery_wanted: AtomicBool::new(false),
            own_drains: Mutex::new(Vec::new()),
            stranded: Mutex::new(Batch::default()),
            unapplied_segments: Mutex::new(None),
            journal_batch_size: Mutex::new(BatchSize::default()),
            redis_paused_until: AtomicI64::new(0),
            journal_clicks: AtomicU64::new(0),
            redis_clicks: AtomicU64::new(0),
            flush_wanted: Notify::new(),
            stats: PipelineStats::default(),
        }
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// Bytes of counts waiting in the local journal for the database.
    pub fn journal_bytes(&self) -> u64 {
        self.journal.size_on_disk()
    }

    /// The generations of pushes this instance keeps against a loss of Redis, and about how
    /// much memory they take.
    pub fn kept(&self) -> (usize, usize) {
        let retained = Self::lock(&self.retained);
        (
            retained.len(),
            retained.values().map(Batch::heap_bytes).sum(),
        )
    }

    /// Whether what this instance keeps of its pushes leaves room for more. Past
    /// `settings.redis_kept_bytes` (the database has not taken the drains for a while), new
    /// counts go to the journal, which needs no copy: every count stays protected from a loss
    /// of Redis, and memory stays bounded.
    fn room_to_keep(&self) -> bool {
        let (_, bytes) = self.kept();
        let full = bytes as u64 > self.settings.redis_kept_bytes;
        if self.kept_full.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::warn!(
                    bytes,
                    "pushes kept against a loss of redis reached tracking.redis_kept_bytes; counting to the journal until the database takes the drains"
                );
            } else {
                tracing::info!(
                    "pushes kept against a loss of redis are below the bound again; pushing to redis"
                );
            }
        }
        !full
    }

    /// Clicks counted but not yet in the database: this instance's journal, plus the
    /// deployment's in Redis as last seen.
    pub fn pending_clicks(&self) -> u64 {
        self.journal_clicks.load(Ordering::Relaxed) + self.redis_clicks.load(Ordering::Relaxed)
    }

    /// Whether a flush is wanted now: the threshold is reached, or Redis lost counts this
    /// instance must push again. A push made while the last flush ran may have asked for the
    /// counts that flush took.
    fn flush_due(&self) -> bool {
        self.recovery_wanted.load(Ordering::Relaxed)
            || self.pending_clicks() >= self.settings.flush_threshold
    }

    /// The hot path: one count, in memory.
    pub fn record(
        &self,
        advert: AdvertId,
        placement: Option<&PlacementName>,
        creative: Option<CreativeId>,
        viewer: Viewer,
        metric: Metric,
    ) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.buffer
            .add(advert, placement, creative, viewer, metric, now);
    }

    fn redis_usable(&self) -> Option<&RedisCounters> {
        let paused = self.redis_paused_until.load(Ordering::Relaxed) > now_ms();
        self.redis.as_ref().filter(|_| !paused)
    }

    fn pause_redis(&self, error: &dyn std::fmt::Display) {
        let previous = self
            .redis_paused_until
            .swap(now_ms() + REDIS_RETRY_MS, Ordering::Relaxed);
        if previous == 0 || previous < now_ms() - REDIS_RETRY_MS {
            tracing::warn!(%error, "redis unavailable; counting locally until it returns");
        }
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The epoch this instance pushes into, learning it (or naming a new one) when it has none.
    /// A different epoch than the one it knew means Redis lost its data: what this instance kept
    /// of its earlier pushes is recovered by the next flush.
    async fn epoch(&self, redis: &RedisCounters) -> Result<String, RedisError> {
        if let Some(epoch) = Self::lock(&self.epoch).clone() {
            return Ok(epoch);
        }
        let epoch = redis.epoch().await?;
        *Self::lock(&self.epoch) = Some(epoch.clone());
        self.last_generation.store(0, Ordering::Relaxed);
        if Self::lock(&self.retained).keys().any(|(e, _)| *e != epoch) {
            self.recovery_wanted.store(true, Ordering::Relaxed);
            self.flush_wanted.notify_one();
        }
        Ok(epoch)
    }

    /// Redis answered with another epoch than this instance's: it lost its data.
    fn epoch_lost(&self) {
        let known = Self::lock(&self.epoch).take();
        if known.is_some() {
            tracing::error!(
                "redis lost its counter data; pushing again what this instance kept of it"
            );
            metrics::counter!("reklama_counter_redis_losses_total").increment(1);
        }
        self.recovery_wanted.store(true, Ordering::Relaxed);
        self.flush_wanted.notify_one();
    }

    /// Moves the hot buffer out of the process: to Redis (with the unconfirmed pushes, in one
    /// round trip), or to the journal.
    pub async fn push(&self) {
        let _one_at_a_time = self.push_lock.lock().await;
        let mut batch = self.buffer.drain();
        batch.merge(std::mem::take(&mut *Self::lock(&self.stranded)));
        if let Some(redis) = self.redis_usable().filter(|_| self.room_to_keep()) {
            match self.epoch(redis).await {
                Ok(epoch) => batch = self.push_to_redis(redis, epoch, batch).await,
                Err(e) => self.pause_redis(&e),
            }
        }
        if batch.is_empty() {
            return;
        }
        self.append_to_journal(batch).await;
    }

    /// Sends the unconfirmed pushes and `batch`; returns what did not reach Redis.
    async fn push_to_redis(&self, redis: &RedisCounters, epoch: String, batch: Batch) -> Batch {
        let mut pushes = std::mem::take(&mut *Self::lock(&self.unconfirmed));
        // Pushes meant for an epoch Redis lost: where they landed, if at all, is settled with
        // the database like the rest of what this instance kept of that epoch.
        let (stale, retries): (Vec<_>, Vec<_>) = pushes.drain(..).partition(|p| p.epoch != epoch);
        if !stale.is_empty() {
            let mut retained = Self::lock(&self.retained);
            for push in stale {
                retained
                    .entry((push.epoch, push.generation_hint))
                    .or_default()
                    .merge(push.batch);
            }
            self.recovery_wanted.store(true, Ordering::Relaxed);
        }
        pushes = retries;
        // While Redis leaves too many pushes unanswered, new counts wait in the journal rather
        // than pile up in memory.
        let mut kept = Batch::default();
        let fresh = !batch.is_empty() && pushes.len() < MAX_UNCONFIRMED_PUSHES;
        if fresh {
            let hint = self.last_generation.load(Ordering::Relaxed);
            pushes.push(RedisCounters::new_push(batch, epoch.clone(), hint));
        } else {
            kept = batch;
        }
        if pushes.is_empty() {
            return kept;
        }
        let forget: Vec<String> = {
            let mut confirmed = Self::lock(&self.confirmed);
            let n = confirmed.len().min(FORGET_PER_PUSH);
            confirmed.drain(..n).collect()
        };
        match redis.push_all(&pushes, &forget).await {
            Ok(answers) => {
                let mut lost = false;
                let last = pushes.len() - 1;
                for (i, (push, answer)) in pushes.into_iter().zip(answers).enumerate() {
                    match answer {
                        Some(landed) => self.landed(&epoch, push, landed),
                        // The new batch was never sent before: not applied now, its counts are
                        // only here.
                        None if fresh && i == last => {
                            lost = true;
                            kept.merge(push.batch);
                        }
                        // A retry may have landed before Redis lost its data: settled with the
                        // database like the rest of the lost epoch.
                        None => {
                            lost = true;
                            Self::lock(&self.retained)
                                .entry((push.epoch, push.generation_hint))
                                .or_default()
                                .merge(push.batch);
                        }
                    }
                }
                if lost {
                    self.epoch_lost();
                }
            }
            Err(PushFailure::NotSent(e)) => {
                self.pause_redis(&e);
                Self::lock(&self.confirmed).extend(forget);
                if fresh && let Some(push) = pushes.pop() {
                    kept.merge(push.batch);
                }
                Self::lock(&self.unconfirmed).extend(pushes);
            }
            Err(PushFailure::Unknown(e)) => {
                // Forgetting an answered push's id twice is harmless.
                self.pause_redis(&e);
                Self::lock(&self.confirmed).extend(forget);
                Self::lock(&self.unconfirmed).extend(pushes);
            }
        }
        kept
    }

    /// A push Redis answered: kept until the database holds the drain of its generation.
    fn landed(&self, epoch: &str, push: PendingPush, landed: Landed) {
        self.stats.redis_pushes.fetch_add(1, Ordering::Relaxed);
        self.redis_clicks
            .store(landed.pending_clicks, Ordering::Relaxed);
        self.last_generation
            .fetch_max(landed.generation, Ordering::Relaxed);
        if landed.pending_clicks >= self.settings.flush_threshold {
            self.flush_wanted.notify_one();
        }
        Self::lock(&self.confirmed).push(push.id);
        Self::lock(&self.retained)
            .entry((epoch.to_owned(), landed.generation))
            .or_default()
            .merge(push.batch);
    }

    /// Appends to the journal on the blocking pool; what it cannot take stays in memory, up to
    /// a bound past which it is dropped, counted and logged.
    async fn append_to_journal(&self, batch: Batch) {
        let clicks = batch.clicks_of_any_kind();
        // File I/O stays off the async workers: a report's push runs on an HTTP worker.
        let journal = self.journal.clone();
        let appended = tokio::task::spawn_blocking(move || {
            let result = journal.append(&batch);
            (batch, result)
        })
        .await;
        let (batch, result) = match appended {
            Ok(done) => done,
            Err(e) => {
                // Only a panic gets here, and the batch went with it.
                dropped(clicks, &e);
                return;
            }
        };
        match result {
            Ok(()) => {
                self.stats.journal_appends.fetch_add(1, Ordering::Relaxed);
                let pending = self.journal_clicks.fetch_add(clicks, Ordering::Relaxed) + clicks;
                if pending >= self.settings.flush_threshold {
                    self.flush_wanted.notify_one();
                }
            }
            Err(e) => {
                let mut stranded = Self::lock(&self.stranded);
                if stranded.deltas.len() + batch.deltas.len() > MAX_STRANDED_KEYS {
                    dropped(clicks, &e);
                    return;
                }
                tracing::error!(error = %e, "cannot append to the counter journal; keeping counts in memory");
                stranded.merge(batch);
            }
        }
    }

    /// Pushes, then moves every pending count (journal segments, Redis drains) into the
    /// database. A report calls this before reading, so it sees every click answered before.
    pub async fn flush(&self, reach: Reach) -> Result<(), FlushError> {
        if reach == Reach::Everything {
            self.redis_paused_until.store(0, Ordering::Relaxed);
        }
        self.push().await;
        let _one_at_a_time = self.flush_lock.lock().await;
        let started = std::time::Instant::now();
        let result = async {
            if self.recover().await? {
                // What Redis lost goes back to it (or to the journal) before the drain.
                self.push().await;
            }
            self.flush_journal().await?;
            self.flush_redis(reach).await?;
            if reach == Reach::Everything && self.recovery_wanted.load(Ordering::Relaxed) {
                return Err(FlushError::Recovering);
            }
            Ok::<_, FlushError>(())
        }
        .await;
        match &result {
            Ok(()) => {
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                metrics::histogram!("reklama_counter_flush_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "counters flushed"
                );
            }
            Err(e) => {
                self.stats.flush_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "counter flush failed; counts stay pending and will be retried");
            }
        }
        result
    }

    async fn flush_journal(&self) -> Result<(), FlushError> {
        let journal = self.journal.clone();
        let unapplied = self
            .unapplied_segments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let room = *Self::lock(&self.journal_batch_size);
        let (segments, batch) = blocking(move || {
            // The segment is closed under the lock appends take: nothing appended after this
            // goes into a segment this flush reads.
            journal.rotate();
            let mut segments = journal.closed_segments()?;
            segments.truncate(MAX_SEGMENTS_PER_FLUSH);
            let listed: HashSet<&str> = segments.iter().map(|s| s.id.as_str()).collect();
            let (batch, known) = match unapplied {
                Some((ids, sum)) if ids.iter().all(|id| listed.contains(id.as_str())) => {
                    (Arc::unwrap_or_clone(sum), ids.into_iter().collect())
                }
                _ if segments.is_empty() => (Batch::default(), HashSet::new()),
                _ => (Batch::with_room(room), HashSet::new()),
            };
            let mut read = SegmentContents { batch, skipped: 0 };
            for segment in segments.iter().filter(|s| !known.contains(&s.id)) {
                journal::read_segment_into(segment, &mut read)?;
            }
            Ok((segments, read.batch))
        })
        .await?;
        if segments.is_empty() {
            return Ok(());
        }
        *Self::lock(&self.journal_batch_size) = batch.size();
        let clicks = batch.clicks_of_any_kind();
        let ids: Vec<String> = segments.iter().map(|s| s.id.clone()).collect();
        let batch = Arc::new(batch);
        let applied = match self.apply(batch.clone(), ids.clone()).await {
            Ok(applied) => applied,
            Err(e) => {
                *self
                    .unapplied_segments
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some((ids, batch));
                return Err(e);
            }
        };
        let journal = self.journal.clone();
        let done = match applied {
            Applied::Done => segments,
            Applied::AlreadyApplied(seen) => {
                // A crash after a commit left these behind: drop them and apply the rest.
                let (rest, sum) = blocking(move || {
                    let (old, rest): (Vec<_>, Vec<_>) =
                        segments.into_iter().partition(|s| seen.contains(&s.id));
                    for segment in &old {
                        journal.remove(segment)?;
                    }
                    let mut sum = SegmentContents::default();
                    for segment in &rest {
                        journal::read_segment_into(segment, &mut sum)?;
                    }
                    Ok((rest, sum.batch))
                })
                .await?;
                let ids = rest.iter().map(|s| s.id.clone()).collect();
                match self.apply(Arc::new(sum), ids).await? {
                    Applied::Done => rest,
                    Applied::AlreadyApplied(_) => Vec::new(),
                }
            }
        };
        let journal = self.journal.clone();
        blocking(move || {
            for segment in &done {
                journal.remove(segment)?;
            }
            Ok(())
        })
        .await?;
        let _ = self
            .journal_clicks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(clicks))
            });
        Ok(())
    }

    async fn flush_redis(&self, reach: Reach) -> Result<(), FlushError> {
        let redis = match (reach, self.redis.as_ref()) {
            (_, None) => return Ok(()),
            (Reach::Everything, Some(redis)) => redis,
            (Reach::BestEffort, Some(_)) => match self.redis_usable() {
                Some(redis) => redis,
                None => return Ok(()),
            },
        };
        let drained = self.drain_redis(redis, reach).await;
        if drained.is_ok() {
            self.redis_clicks.store(0, Ordering::Relaxed);
        }
        if !matches!(drained, Err(FlushError::Redis(_)))
            && let Ok(waiting) = redis.drain_count().await
        {
            self.stats.redis_drains.store(waiting, Ordering::Relaxed);
        }
        // Kept pushes whose drain the database holds are let go even when this flush could not
        // apply a drain of its own: another instance may have applied theirs.
        let result = match (drained, self.release_applied().await) {
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        };
        if let Err(FlushError::Redis(e)) = &result {
            self.pause_redis(e);
            if reach == Reach::BestEffort {
                tracing::warn!(error = %e, "counts in redis wait for the next flush");
                return Ok(());
            }
        }
        result
    }

    /// Applies the drains this instance started and has not applied yet, then (only once none
    /// waits) moves the pending hash to a new drain and applies it, then drains abandoned by
    /// crashed instances. A drain that fails (a slow Redis, a database refusing it) therefore
    /// stays the one this instance retries, while pushes keep adding to the pending hash; a new
    /// drain per flush would pile up in Redis, each kept in memory against a loss of Redis. A
    /// report (`Reach::Everything`) also applies drains other instances are applying at this
    /// moment, so it includes the clicks they moved out of Redis just before it.
    async fn drain_redis(&self, redis: &RedisCounters, reach: Reach) -> Result<(), FlushError> {
        let epoch = self.epoch(redis).await?;
        let waiting = Self::lock(&self.own_drains).clone();
        for id in waiting {
            self.apply_drain(redis, &id).await?;
        }
        match redis.start_drain(&epoch).await? {
            DrainStart::Started(id) => {
                Self::lock(&self.own_drains).push(id.clone());
                self.apply_drain(redis, &id).await?;
            }
            DrainStart::Nothing => {}
            DrainStart::EpochChanged => self.epoch_lost(),
        }
        let waiting = redis.waiting_drains().await?;
        let cutoff = match reach {
            Reach::Everything => i64::MAX,
            Reach::BestEffort => now_ms() - ABANDONED_DRAIN_MS,
        };
        for (id, started) in waiting {
            if started <= cutoff {
                self.apply_drain(redis, &id).await?;
            }
        }
        Ok(())
    }

    /// Reads one drain and applies it, then forgets it in Redis and here.
    async fn apply_drain(&self, redis: &RedisCounters, id: &str) -> Result<(), FlushError> {
        if let Some(drained) = redis.read_drain(id.to_owned()).await? {
            let applied = self
                .apply(Arc::new(drained.batch), vec![drained.flush_id])
                .await;
            match applied {
                Ok(_) => {}
                // Another instance applied the same drain at the same moment.
                Err(FlushError::Db(e)) if e.is_unique_violation() => {}
                Err(e) => return Err(e),
            }
        }
        // Applied (now or before), or gone with Redis's data: a failure to forget it only
        // leaves a drain that the next flush finds applied, or gone.
        redis.finish(id).await?;
        Self::lock(&self.own_drains).retain(|own| own != id);
        Ok(())
    }

    /// Lets go of kept pushes whose drain the database holds. A drain recorded as lost (another
    /// instance saw Redis lose it first) is recovered like one this instance saw lost.
    async fn release_applied(&self) -> Result<(), FlushError> {
        let kept: Vec<(String, u64)> = Self::lock(&self.retained).keys().cloned().collect();
        if kept.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = kept
            .iter()
            .flat_map(|(e, g)| [drain_flush_id(e, *g), lost_flush_id(e, *g)])
            .collect();
        let present: HashSet<String> = self
            .db
            .run(move |conn| store::flush_ids_present(conn, &ids))
            .await?
            .into_iter()
            .collect();
        let mut retained = Self::lock(&self.retained);
        for (epoch, generation) in kept {
            if present.contains(&lost_flush_id(&epoch, generation)) {
                self.recovery_wanted.store(true, Ordering::Relaxed);
                self.flush_wanted.notify_one();
            } else if present.contains(&drain_flush_id(&epoch, generation)) {
                retained.remove(&(epoch, generation));
            }
        }
        Ok(())
    }

    /// Settles, with the database, every kept generation of an epoch Redis lost: a drain the
    /// database holds is released; one it does not is marked lost there (so a late attempt to
    /// apply it applies nothing) and its counts go back into this instance's pending counts.
    /// Returns whether anything came back.
    async fn recover(&self) -> Result<bool, FlushError> {
        if !self.recovery_wanted.swap(false, Ordering::Relaxed) {
            return Ok(false);
        }
        let Some(current) = Self::lock(&self.epoch).clone() else {
            // Redis has not been reached since the loss: the next flush tries again.
            self.recovery_wanted.store(true, Ordering::Relaxed);
            return Ok(false);
        };
        let dead: Vec<(String, u64)> = Self::lock(&self.retained)
            .keys()
            .filter(|(epoch, _)| *epoch != current)
            .cloned()
            .collect();
        let mut back = false;
        for (epoch, generation) in dead {
            let (applied, lost) = (
                drain_flush_id(&epoch, generation),
                lost_flush_id(&epoch, generation),
            );
            let settled = self
                .db
                .run(move |conn| store::settle_lost_drain(conn, &applied, &lost))
                .await;
            let was_lost = match settled {
                Ok(was_lost) => was_lost,
                Err(e) => {
                    self.recovery_wanted.store(true, Ordering::Relaxed);
                    return Err(e.into());
                }
            };
            let Some(batch) = Self::lock(&self.retained).remove(&(epoch, generation)) else {
                continue;
            };
            if was_lost {
                back = true;
                Self::lock(&self.stranded).merge(batch);
            }
        }
        Ok(back)
    }

    async fn apply(&self, batch: Arc<Batch>, ids: Vec<String>) -> Result<Applied, FlushError> {
        if ids.is_empty() {
            return Ok(Applied::Done);
        }
        let rows = batch.deltas.len() as u64;
        let flush_events = self.settings.outbox.wants(EventType::StatsFlushed);
        let applied = self
            .db
            .run_within(FLUSH_CALL_LIMIT, move |conn| {
                store::apply_batch(conn, &batch, &ids, flush_events)
            })
            .await?;
        if applied == Applied::Done {
            self.stats.rows_flushed.fetch_add(rows, Ordering::Relaxed);
        }
        Ok(applied)
    }

    /// Starts the push and flush loops.
    pub fn spawn(self: &Arc<Self>, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        let pusher = {
            let pipeline = self.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(pipeline.settings.push_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut epoch_checked = std::time::Instant::now();
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => pipeline.push().await,
                    }
                    if epoch_checked.elapsed() >= EPOCH_CHECK_INTERVAL {
                        epoch_checked = std::time::Instant::now();
                        pipeline.check_epoch().await;
                    }
                }
            })
        };
        let flusher = {
            let pipeline = self.clone();
            tokio::spawn(async move {
                let mut backoff = Duration::ZERO;
                let mut last_size_check = std::time::Instant::now();
                let mut last_end = tokio::time::Instant::now();
                let mut last_length = Duration::ZERO;
                loop {
                    let due = last_end + pipeline.settings.flush_interval.max(backoff);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = pipeline.flush_wanted.notified(), if backoff.is_zero() => {
                            if !pipeline.flush_due() {
                                continue;
                            }
                            let paced = last_end + last_length * FLUSH_GAP_FACTOR;
                            tokio::select! {
                                _ = cancel.cancelled() => break,
                                _ = tokio::time::sleep_until(paced) => {}
                            }
                        }
                        _ = tokio::time::sleep_until(due) => {}
                    }
                    let started = tokio::time::Instant::now();
                    backoff = match pipeline.flush(Reach::BestEffort).await {
                        Ok(()) => Duration::ZERO,
                        Err(_) => {
                            (backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(30))
                        }
                    };
                    last_end = tokio::time::Instant::now();
                    last_length = last_end - started;
                    if last_size_check.elapsed() > Duration::from_secs(60) {
                        last_size_check = std::time::Instant::now();
                        pipeline.housekeeping().await;
                    }
                }
            })
        };
        vec![pusher, flusher]
    }

    /// An instance that keeps pushes but has nothing new to push would not notice that Redis
    /// lost them: it looks at the epoch now and then.
    async fn check_epoch(&self) {
        let Some(redis) = self.redis_usable() else {
            return;
        };
        if Self::lock(&self.retained).is_empty() {
            return;
        }
        let Some(known) = Self::lock(&self.epoch).clone() else {
            return;
        };
        match redis.current_epoch().await {
            Ok(current) if current.as_deref() != Some(known.as_str()) => self.epoch_lost(),
            Ok(_) => {}
            Err(e) => self.pause_redis(&e),
        }
    }

    async fn housekeeping(&self) {
        let size = self.journal.size_on_disk();
        if size > self.settings.journal_warn_bytes {
            tracing::warn!(
                bytes = size,
                "the counter journal is large: the database has not taken counts for a while"
            );
        }
        let cutoff = now_ms() - FLUSH_ID_RETENTION_MS;
        if let Err(e) = self
            .db
            .run(move |conn| store::prune_flush_ids(conn, cutoff))
            .await
        {
            tracing::debug!(error = %e, "pruning flush ids failed");
        }
    }

    /// On shutdown: push what is in memory and try to flush it, within `deadline`. What the
    /// database does not take stays in Redis or the journal for the next flush.
    pub async fn drain_on_shutdown(&self, deadline: Duration) {
        let attempt = async {
            self.push().await;
            for _ in 0..3 {
                if self
                    .unconfirmed
                    .lock()
                    .map(|u| u.is_empty())
                    .unwrap_or(true)
                {
                    break;
                }
                self.redis_paused_until.store(0, Ordering::Relaxed);
                self.push().await;
            }
            if let Err(e) = self.flush(Reach::BestEffort).await {
                tracing::warn!(error = %e, "final flush failed; counts wait in the journal or Redis");
            }
        };
        if tokio::time::timeout(deadline, attempt).await.is_err() {
            tracing::warn!("final counter flush timed out; counts wait in the journal or Redis");
        }
        let left = self.unconfirmed.lock().map(|u| u.len()).unwrap_or(0);
        if left > 0 {
            tracing::error!(
                pushes = left,
                "redis never confirmed some pushes; they may be missing"
            );
        }
    }
}

/// Runs journal file I/O on the blocking pool, off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, FlushError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
        .map_err(FlushError::from)
}

/// Counts that are gone: never silent.
fn dropped(clicks: u64, error: &dyn std::fmt::Display) {
    metrics::counter!("reklama_counter_dropped_total").increment(clicks.max(1));
    tracing::error!(%error, clicks, "counts dropped: neither redis nor the journal could take them");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::modules::tracking::journal::full_disk::full_disk_journal;

    fn settings() -> PipelineSettings {
        PipelineSettings {
            push_interval: Duration::from_millis(10),
            flush_interval: Duration::from_secs(3600),
            flush_threshold: u64::MAX,
            journal_warn_bytes: u64::MAX,
            redis_kept_bytes: u64::MAX,
            outbox: Outbox::everything(),
        }
    }

    /// A billable click on the generic card, by a viewer of no known device or country.
    fn click(pipeline: &CounterPipeline, advert: AdvertId) {
        pipeline.record(advert, None, None, Viewer::default(), Metric::Click);
    }

    fn stranded_clicks(pipeline: &CounterPipeline) -> u64 {
        CounterPipeline::lock(&pipeline.stranded).total(Metric::Click)
    }

    async fn stored_clicks(db: &Db, advert: AdvertId) -> u64 {
        let rows = db
            .run(move |conn| store::hourly_rows(conn, advert, 0, i64::MAX))
            .await
            .unwrap();
        rows.iter().map(|(_, counts)| counts.clicks).sum()
    }

    #[tokio::test]
    async fn counts_a_full_disk_refused_wait_in_memory_and_reach_the_database_once() {
        let (_db_dir, db) = Db::temporary();
        let dir = tempfile::tempdir().unwrap();
        let (journal, budget, _) = full_disk_journal(dir.path());
        let pipeline = CounterPipeline::new(db.clone(), journal, None, settings());
        let advert = AdvertId(1);
        click(&pipeline, advert);
        pipeline.push().await;
        // The disk fills up: pushes fail halfway, again and again.
        budget.store(20, Ordering::SeqCst);
        for _ in 0..3 {
            for _ in 0..5 {
                click(&pipeline, advert);
            }
            pipeline.push().await;
            budget.store(20, Ordering::SeqCst);
        }
        assert_eq!(
            stranded_clicks(&pipeline),
            15,
            "the refused counts wait in memory"
        );
        // Only the first push reached the journal.
        let journal = pipeline.journal.clone();
        journal.rotate();
        let on_disk: u64 = journal
            .closed_segments()
            .unwrap()
            .iter()
            .map(|s| journal::read_segment(s).unwrap().batch.total(Metric::Click))
            .sum();
        assert_eq!(on_disk, 1);
        budget.store(u64::MAX, Ordering::SeqCst);
        pipeline.flush(Reach::Everything).await.unwrap();
        assert_eq!(stored_clicks(&db, advert).await, 16);
        assert_eq!(stranded_clicks(&pipeline), 0);
        pipeline.flush(Reach::Everything).await.unwrap();
        assert_eq!(stored_clicks(&db, advert).await, 16);
    }

    #[tokio::test]
    async fn a_flush_makes_the_room_the_last_journal_batch_took() {
        let (_db_dir, db) = Db::temporary();
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), false).unwrap();
        let pipeline = CounterPipeline::new(db.clone(), journal, None, settings());
        let mobile = Viewer {
            device: Some(crate::domain::targeting::Device::parse("mobile").unwrap()),
            country: None,
        };
        for advert in 1..=3 {
            pipeline.record(AdvertId(advert), None, None, mobile, Metric::Click);
            // A second segment for the same flush: its keys add to the first one's.
            pipeline.push().await;
            pipeline.journal.rotate();
            click(&pipeline, AdvertId(advert));
        }
        pipeline.flush(Reach::Everything).await.unwrap();
        let size = *CounterPipeline::lock(&pipeline.journal_batch_size);
        assert_eq!(size, BatchSize { keys: 3, groups: 3 });
        for advert in 1..=3 {
            assert_eq!(stored_clicks(&db, AdvertId(advert)).await, 2);
        }
        // A flush with nothing to read keeps the size it will make room for.
        pipeline.flush(Reach::Everything).await.unwrap();
        assert_eq!(*CounterPipeline::lock(&pipeline.journal_batch_size), size);
    }

    #[tokio::test]
    async fn flushes_the_threshold_asks_for_leave_the_writer_three_times_their_length() {
        use diesel::{Connection, RunQueryDsl, SqliteConnection};

        let (db_dir, db) = Db::temporary();
        let journal_dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(journal_dir.path(), false).unwrap();
        let pipeline = Arc::new(CounterPipeline::new(
            db.clone(),
            journal,
            None,
            PipelineSettings {
                flush_threshold: 1,
                ..settings()
            },
        ));
        let cancel = CancellationToken::new();
        let tasks = pipeline.spawn(cancel.clone());
        // Another writer holds the database while the first click arrives, so the first flush
        // waits for it and lasts at least HELD minus a push's interval.
        const HELD: Duration = Duration::from_millis(600);
        let path = db_dir.path().join("test.db");
        let holder = std::thread::spawn(move || {
            let mut other = SqliteConnection::establish(&path.display().to_string()).unwrap();
            diesel::sql_query("BEGIN IMMEDIATE")
                .execute(&mut other)
                .unwrap();
            std::thread::sleep(HELD);
            diesel::sql_query("COMMIT").execute(&mut other).unwrap();
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let advert = AdvertId(7);
        let started = std::time::Instant::now();
        let (mut ends, mut clicks) = (Vec::new(), 0);
        // A click every 20 ms keeps the threshold reached the whole time.
        while ends.len() < 2 && started.elapsed() < Duration::from_secs(15) {
            click(&pipeline, advert);
            clicks += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let flushes = pipeline.stats.flushes.load(Ordering::Relaxed) as usize;
            if flushes > ends.len() {
                ends.push(started.elapsed());
            }
        }
        holder.join().unwrap();
        assert_eq!(ends.len(), 2, "two flushes within 15 s: {ends:?}");
        assert!(
            ends[0] >= HELD - Duration::from_millis(100),
            "the first flush waited for the other writer: {ends:?}"
        );
        // The first flush lasted at least HELD - 50 ms - a push interval; the second started
        // no sooner than three times that after the first ended (it lasts milliseconds).
        let gap = ends[1] - ends[0];
        assert!(
            gap >= (HELD - Duration::from_millis(100)) * 3,
            "the second flush came {gap:?} after the first"
        );
        assert!(gap < Duration::from_secs(10), "and it came: {gap:?}");
        cancel.cancel();
        for task in tasks {
            task.await.unwrap();
        }
        pipeline.flush(Reach::Everything).await.unwrap();
        assert_eq!(
            stored_clicks(&db, advert).await,
            clicks,
            "every click reached the database"
        );
    }

    #[tokio::test]
    async fn a_flush_longer_than_a_request_s_database_call_completes() {
        // Every ordinary call gives up after 50 ms; a flush of tens of thousands of rows takes
        // longer than that.
        let (_dir, db) = Db::temporary_with(|s| s.call_timeout_ms = 50);
        let journal_dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(journal_dir.path(), false).unwrap();
        let pipeline = CounterPipeline::new(db.clone(), journal, None, settings());
        const ADVERTS: i64 = 20_000;
        for advert in 1..=ADVERTS {
            click(&pipeline, AdvertId(advert));
        }
        pipeline.flush(Reach::Everything).await.unwrap();
        assert_eq!(pipeline.stats.flushes.load(Ordering::Relaxed), 1);
        assert_eq!(pipeline.pending_clicks(), 0);
        let stored: u64 = db
            .run_within(Duration::from_secs(30), move |conn| {
                let mut sum = 0;
                for advert in 1..=ADVERTS {
                    let rows = store::hourly_rows(conn, AdvertId(advert), 0, i64::MAX)?;
                    sum += rows.iter().map(|(_, counts)| counts.clicks).sum::<u64>();
                }
                Ok::<_, DbError>(sum)
            })
            .await
            .unwrap();
        assert_eq!(
            stored, ADVERTS as u64,
            "every click reached the database once"
        );
    }
}
