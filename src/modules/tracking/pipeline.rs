//! The counter pipeline: hot buffer -> (every push interval) Redis or the local journal ->
//! (on report, interval or threshold) the database. Background tasks do all the I/O; the hot
//! paths only add to the buffer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::AdvertId;
use crate::platform::db::{Db, DbError, now_ms};

use super::counters::{Batch, CounterBuffer, Metric, PlacementName};
use super::journal::{self, Journal};
use super::redis_tier::{PendingPush, PushError, RedisCounters};
use super::store::{self, Applied};

/// After a failed Redis call, the instance works locally this long before trying Redis again.
const REDIS_RETRY_MS: i64 = 1000;
/// Flush ids older than this are forgotten.
const FLUSH_ID_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// Segments applied per flush, so one flush after a long outage stays a bounded transaction.
const MAX_SEGMENTS_PER_FLUSH: usize = 2000;

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub push_interval: Duration,
    pub flush_interval: Duration,
    pub flush_threshold: u64,
    pub journal_warn_bytes: u64,
}

/// Counters about the pipeline itself, for metrics and tests.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub flushes: AtomicU64,
    pub flush_failures: AtomicU64,
    pub redis_pushes: AtomicU64,
    pub journal_appends: AtomicU64,
    pub rows_flushed: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("journal: {0}")]
    Journal(#[from] std::io::Error),
    #[error("redis: {0}")]
    Redis(#[from] crate::platform::redis::RedisError),
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
    /// Drains this instance moved out of Redis but has not applied yet.
    own_drains: Mutex<Vec<String>>,
    /// Deltas that could be neither pushed nor journaled, retried on the next tick.
    stranded: Mutex<Batch>,
    /// The segments a flush read but the database did not take, and their sum: the next flush
    /// reads only segments closed since, not the whole journal again.
    unapplied_segments: Mutex<Option<(Vec<String>, Arc<Batch>)>>,
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
            own_drains: Mutex::new(Vec::new()),
            stranded: Mutex::new(Batch::default()),
            unapplied_segments: Mutex::new(None),
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

    /// Clicks counted but not yet in the database: this instance's journal, plus the
    /// deployment's in Redis as last seen.
    pub fn pending_clicks(&self) -> u64 {
        self.journal_clicks.load(Ordering::Relaxed) + self.redis_clicks.load(Ordering::Relaxed)
    }

    /// The hot path: one count, in memory.
    pub fn record(&self, advert: AdvertId, placement: Option<&PlacementName>, metric: Metric) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.buffer.add(advert, placement, metric, now);
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

    /// Moves the hot buffer out of the process: to Redis, or to the journal.
    pub async fn push(&self) {
        let _one_at_a_time = self.push_lock.lock().await;
        let mut batch = self.buffer.drain();
        batch.merge(std::mem::take(
            &mut *self.stranded.lock().unwrap_or_else(|p| p.into_inner()),
        ));
        if let Some(redis) = self.redis_usable() {
            let retries =
                std::mem::take(&mut *self.unconfirmed.lock().unwrap_or_else(|p| p.into_inner()));
            for retry in retries {
                // A retry keeps its id whatever happens: an earlier attempt may have landed.
                if let Some(back) = self.push_to_redis(redis, retry).await {
                    self.unconfirmed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(back);
                }
            }
            if batch.is_empty() {
                return;
            }
            match self
                .push_to_redis(redis, RedisCounters::new_push(batch))
                .await
            {
                None => return,
                Some(not_sent) => batch = not_sent.batch,
            }
        }
        if batch.is_empty() {
            return;
        }
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
                metrics::counter!("reklama_counter_dropped_total").increment(clicks);
                tracing::error!(error = %e, clicks, "a journal append panicked; its counts are lost");
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
                tracing::error!(error = %e, "cannot append to the counter journal; keeping counts in memory");
                self.stranded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .merge(batch);
            }
        }
    }

    /// Returns the push when nothing reached Redis. A push whose outcome is unknown is queued
    /// for a retry with the same id.
    async fn push_to_redis(&self, redis: &RedisCounters, push: PendingPush) -> Option<PendingPush> {
        match redis.push(push).await {
            Ok(pending_clicks) => {
                self.stats.redis_pushes.fetch_add(1, Ordering::Relaxed);
                self.redis_clicks.store(pending_clicks, Ordering::Relaxed);
                if pending_clicks >= self.settings.flush_threshold {
                    self.flush_wanted.notify_one();
                }
                None
            }
            Err(PushError::NotSent(push, e)) => {
                self.pause_redis(&e);
                Some(push)
            }
            Err(PushError::Unknown(push, e)) => {
                self.pause_redis(&e);
                self.unconfirmed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(push);
                None
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
            self.flush_journal().await?;
            self.flush_redis(reach).await?;
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
        let (segments, batch) = blocking(move || {
            // The segment is closed under the lock appends take: nothing appended after this
            // goes into a segment this flush reads.
            journal.rotate();
            let mut segments = journal.closed_segments()?;
            segments.truncate(MAX_SEGMENTS_PER_FLUSH);
            let listed: HashSet<&str> = segments.iter().map(|s| s.id.as_str()).collect();
            let (mut batch, known) = match unapplied {
                Some((ids, sum)) if ids.iter().all(|id| listed.contains(id.as_str())) => {
                    (Arc::unwrap_or_clone(sum), ids.into_iter().collect())
                }
                _ => (Batch::default(), HashSet::new()),
            };
            for segment in segments.iter().filter(|s| !known.contains(&s.id)) {
                batch.merge(journal::read_segment(segment)?.batch);
            }
            Ok((segments, batch))
        })
        .await?;
        if segments.is_empty() {
            return Ok(());
        }
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
                    let mut sum = Batch::default();
                    for segment in &rest {
                        sum.merge(journal::read_segment(segment)?.batch);
                    }
                    Ok((rest, sum))
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
        let result = self.drain_redis(redis).await;
        if result.is_ok() {
            self.redis_clicks.store(0, Ordering::Relaxed);
        }
        if let Err(FlushError::Redis(e)) = &result {
            self.pause_redis(e);
            if reach == Reach::BestEffort {
                return Ok(());
            }
        }
        result
    }

    /// Applies every drain this instance started, the pending hash, and drains abandoned by
    /// crashed instances.
    async fn drain_redis(&self, redis: &RedisCounters) -> Result<(), FlushError> {
        if let Some(id) = redis.start_drain().await? {
            self.own_drains
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(id);
        }
        let mut ids = self
            .own_drains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for id in redis.abandoned().await? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        for id in ids {
            let drained = redis.read_drain(id.clone()).await?;
            let batch = Arc::new(drained.batch.clone());
            self.apply(batch, vec![drained.flush_id.clone()]).await?;
            // Applied (now or before): a failure to forget it only leaves a drain that the next
            // flush finds already applied.
            redis.finish(&drained).await?;
            self.own_drains
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|own| *own != id);
        }
        Ok(())
    }

    async fn apply(&self, batch: Arc<Batch>, ids: Vec<String>) -> Result<Applied, FlushError> {
        if ids.is_empty() {
            return Ok(Applied::Done);
        }
        let rows = batch.deltas.len() as u64;
        let applied = self
            .db
            .run(move |conn| store::apply_batch(conn, &batch, &ids))
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
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => pipeline.push().await,
                    }
                }
            })
        };
        let flusher = {
            let pipeline = self.clone();
            tokio::spawn(async move {
                let mut backoff = Duration::ZERO;
                let mut last_size_check = std::time::Instant::now();
                loop {
                    let wait = pipeline.settings.flush_interval.max(backoff);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = pipeline.flush_wanted.notified(), if backoff.is_zero() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = match pipeline.flush(Reach::BestEffort).await {
                        Ok(()) => Duration::ZERO,
                        Err(_) => {
                            (backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(30))
                        }
                    };
                    if last_size_check.elapsed() > Duration::from_secs(60) {
                        last_size_check = std::time::Instant::now();
                        pipeline.housekeeping().await;
                    }
                }
            })
        };
        vec![pusher, flusher]
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
