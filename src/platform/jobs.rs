//! The durable job queue: jobs are rows written in the same transaction as the data they act on
//! (an outbox), claimed by a pool of workers on any instance, retried with exponential backoff
//! and dead-lettered after a configured number of attempts. Delivery is at least once, so every
//! handler must be idempotent.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::platform::db::schema::jobs;
use crate::platform::db::{Backend, Db, DbConnection, DbError, now_ms};
use crate::platform::request_id::{self, RequestId};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    pub workers: usize,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    pub poll_interval_ms: u64,
    pub lease_secs: u64,
}

impl JobSettings {
    /// The delay before attempt `attempts + 1`, after `attempts` failures.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let ms = self.backoff_base_ms.saturating_mul(1u64 << exp);
        Duration::from_millis(ms.min(self.backoff_max_secs.saturating_mul(1000)))
    }
}

/// The life of a job row. Finished jobs are deleted; dead ones stay for people to look at.
pub mod status {
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const DEAD: &str = "dead";
}

/// One kind of background work.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The `kind` column value this handler runs.
    fn kind(&self) -> &'static str;
    /// Does the work; an error means "try again later" until the attempts run out.
    async fn run(&self, payload: &str) -> Result<(), String>;
    /// Called once when the job has failed for the last time.
    async fn dead_lettered(&self, payload: &str, error: &str);
}

/// Records a job. Call it inside the transaction that writes the data the job acts on, so that
/// both exist or neither does. The job remembers the request (or job) it was enqueued by.
pub fn enqueue(
    conn: &mut DbConnection,
    kind: &str,
    payload: &str,
    max_attempts: u32,
) -> QueryResult<i64> {
    insert(conn, kind, payload, max_attempts, now_ms())
}

fn insert(
    conn: &mut DbConnection,
    kind: &str,
    payload: &str,
    max_attempts: u32,
    run_at: i64,
) -> QueryResult<i64> {
    let now = now_ms();
    diesel::insert_into(jobs::table)
        .values((
            jobs::kind.eq(kind),
            jobs::payload.eq(payload),
            jobs::status.eq(status::QUEUED),
            jobs::attempts.eq(0),
            jobs::max_attempts.eq(i32::try_from(max_attempts).unwrap_or(i32::MAX)),
            jobs::run_at.eq(run_at),
            jobs::created_at.eq(now),
            jobs::updated_at.eq(now),
            jobs::request_id.eq(request_id::current().map(|id| id.to_string())),
        ))
        .returning(jobs::id)
        .get_result(conn)
}

/// Records a job to run at `run_at` (Unix milliseconds) unless one of the same kind and payload
/// is already waiting; `true` if it recorded one. For work that reschedules itself, so that
/// however often it is started, one run waits at a time.
pub fn enqueue_once_at(
    conn: &mut DbConnection,
    kind: &str,
    payload: &str,
    max_attempts: u32,
    run_at: i64,
) -> QueryResult<bool> {
    let waiting: i64 = jobs::table
        .filter(jobs::kind.eq(kind))
        .filter(jobs::payload.eq(payload))
        .filter(jobs::status.eq(status::QUEUED))
        .count()
        .get_result(conn)?;
    if waiting > 0 {
        return Ok(false);
    }
    insert(conn, kind, payload, max_attempts, run_at)?;
    Ok(true)
}

#[derive(Debug, QueryableByName)]
struct ClaimedJob {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    payload: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Integer)]
    max_attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    request_id: Option<String>,
}

/// Counters since start, for metrics and tests.
#[derive(Debug, Default)]
pub struct JobStats {
    pub succeeded: AtomicU64,
    pub retried: AtomicU64,
    pub dead: AtomicU64,
}

/// Job counts by state, read from the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    pub queued: i64,
    pub running: i64,
    pub dead: i64,
}

pub struct JobQueue {
    db: Db,
    settings: JobSettings,
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
    wake: Arc<Notify>,
    stats: JobStats,
}

impl JobQueue {
    pub fn new(db: Db, settings: JobSettings) -> Self {
        Self {
            db,
            settings,
            handlers: HashMap::new(),
            wake: Arc::new(Notify::new()),
            stats: JobStats::default(),
        }
    }

    pub fn register(&mut self, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(handler.kind(), handler);
    }

    pub fn settings(&self) -> &JobSettings {
        &self.settings
    }

    /// What code that enqueues jobs needs: their attempts, and a waker that lets it wake a
    /// local worker at once instead of at the next poll.
    pub fn enqueuer(&self) -> Enqueuer {
        Enqueuer {
            max_attempts: self.settings.max_attempts,
            waker: JobWaker(self.wake.clone()),
        }
    }

    pub fn stats(&self) -> &JobStats {
        &self.stats
    }

    pub async fn depth(&self) -> Result<QueueDepth, DbError> {
        self.db
            .run(|conn| {
                let rows: Vec<(String, i64)> = jobs::table
                    .group_by(jobs::status)
                    .select((jobs::status, diesel::dsl::count_star()))
                    .load(conn)?;
                let mut depth = QueueDepth::default();
                for (state, n) in rows {
                    match state.as_str() {
                        status::QUEUED => depth.queued = n,
                        status::RUNNING => depth.running = n,
                        status::DEAD => depth.dead = n,
                        _ => {}
                    }
                }
                Ok(depth)
            })
            .await
    }

    /// Starts the worker pool. Each worker finishes the job it holds when `cancel` fires.
    pub fn spawn_workers(self: &Arc<Self>, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        (0..self.settings.workers.max(1))
            .map(|n| {
                let queue = self.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tracing::debug!(worker = n, "job worker started");
                    queue.work(cancel).await;
                    tracing::debug!(worker = n, "job worker stopped");
                })
            })
            .collect()
    }

    /// Runs due jobs until `cancel` fires. With none due, a worker sleeps until the earliest job
    /// it knows of falls due (a retry after its backoff, a job scheduled for later), a local
    /// enqueue wakes it, or the poll interval passes (jobs other instances enqueue), whichever
    /// comes first; after a database error, at most a second.
    async fn work(&self, cancel: CancellationToken) {
        let idle = Duration::from_millis(self.settings.poll_interval_ms.max(MIN_SLEEP_MS));
        while !cancel.is_cancelled() {
            let sleep = match self.run_next().await {
                Ok(Next::Ran) => continue,
                Ok(Next::Idle { next_due_in }) => next_due_in.map_or(idle, |due| due.min(idle)),
                Err(e) => {
                    tracing::warn!(error = %e, "job queue unavailable; will retry");
                    idle.min(RETRY_AFTER_ERROR)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep.max(Duration::from_millis(MIN_SLEEP_MS))) => {}
            }
        }
    }

    /// Claims and runs one due job, or tells how long until the earliest known one falls due.
    async fn run_next(&self) -> Result<Next, DbError> {
        let lease_ms =
            i64::try_from(self.settings.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let job = match self.db.run(move |conn| claim(conn, lease_ms)).await? {
            Claim::Job(job) => job,
            Claim::NoneDue { next_at } => {
                let next_due_in = next_at.map(|at| {
                    Duration::from_millis(u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0))
                });
                return Ok(Next::Idle { next_due_in });
            }
        };
        // The job runs as part of the request that caused it: its logs carry that request's id,
        // and so do the jobs it enqueues in turn.
        let request = job
            .request_id
            .as_deref()
            .and_then(RequestId::parse)
            .unwrap_or_default();
        let span = tracing::info_span!(
            "job",
            id = job.id,
            kind = %job.kind,
            attempt = job.attempts,
            request_id = %request
        );
        request_id::scope(request, self.execute(job).instrument(span)).await?;
        Ok(Next::Ran)
    }

    async fn execute(&self, job: ClaimedJob) -> Result<(), DbError> {
        let outcome = match self.handlers.get(job.kind.as_str()) {
            Some(handler) => {
                let limit = Duration::from_secs(self.settings.lease_secs.max(2) - 1);
                match tokio::time::timeout(limit, handler.run(&job.payload)).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("timed out after {}s", limit.as_secs())),
                }
            }
            None => Err(format!("no handler for job kind {:?}", job.kind)),
        };
        let id = job.id;
        match outcome {
            Ok(()) => {
                self.db
                    .run(move |conn| {
                        diesel::delete(jobs::table.find(id)).execute(conn)?;
                        Ok::<_, DbError>(())
                    })
                    .await?;
                self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::info!("job done");
            }
            Err(error) => {
                let attempts = u32::try_from(job.attempts).unwrap_or(0);
                let dead = job.attempts >= job.max_attempts;
                let run_at = now_ms()
                    + i64::try_from(self.settings.backoff(attempts).as_millis())
                        .unwrap_or(i64::MAX / 2);
                let stored_error = truncate(&error, 2000);
                self.db
                    .run(move |conn| {
                        diesel::update(jobs::table.find(id))
                            .set((
                                jobs::status.eq(if dead { status::DEAD } else { status::QUEUED }),
                                jobs::run_at.eq(run_at),
                                jobs::locked_until.eq(None::<i64>),
                                jobs::last_error.eq(stored_error),
                                jobs::updated_at.eq(now_ms()),
                            ))
                            .execute(conn)?;
                        Ok::<_, DbError>(())
                    })
                    .await?;
                if dead {
                    self.stats.dead.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%error, attempts, "job dead-lettered");
                    if let Some(handler) = self.handlers.get(job.kind.as_str()) {
                        handler.dead_lettered(&job.payload, &error).await;
                    }
                } else {
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, attempts, "job failed; will retry");
                }
            }
        }
        Ok(())
    }
}

/// The attempts a job gets before it is dead-lettered, and the waker for after the commit.
#[derive(Clone)]
pub struct Enqueuer {
    pub max_attempts: u32,
    pub waker: JobWaker,
}

/// Wakes a local worker after a job was committed.
#[derive(Clone)]
pub struct JobWaker(Arc<Notify>);

impl JobWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// The shortest sleep of an idle worker, and its longest after a database error.
const MIN_SLEEP_MS: u64 = 10;
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// What a worker's look for a job came to.
enum Next {
    Ran,
    /// No job due; the earliest known falls due after this long (`None`: no job waits).
    Idle {
        next_due_in: Option<Duration>,
    },
}

/// A claimed job, or when the earliest job not yet due will be (Unix milliseconds): a queued
/// job's `run_at`, or a running job's `locked_until`, after which another worker may claim it.
enum Claim {
    Job(ClaimedJob),
    NoneDue { next_at: Option<i64> },
}

#[derive(QueryableByName)]
struct NextDue {
    #[diesel(sql_type = Nullable<BigInt>)]
    at: Option<i64>,
}

/// Takes the oldest due job, or one whose lease ran out because its worker died. One statement, so
/// two workers never get the same job: PostgreSQL skips rows other workers hold; SQLite has a
/// single writer. With none due, reads when the next one will be (two short reads by the ready
/// index).
fn claim(conn: &mut DbConnection, lease_ms: i64) -> Result<Claim, DbError> {
    let lock = match conn_backend(conn) {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE jobs SET status = '{running}', attempts = attempts + 1, locked_until = $1, updated_at = $2 \
         WHERE id = (SELECT id FROM jobs \
             WHERE (status = '{queued}' AND run_at <= $2) OR (status = '{running}' AND locked_until < $2) \
             ORDER BY run_at, id LIMIT 1{lock}) \
         RETURNING id, kind, payload, attempts, max_attempts, request_id",
        running = status::RUNNING,
        queued = status::QUEUED,
    );
    let now = now_ms();
    let mut rows: Vec<ClaimedJob> = diesel::sql_query(sql)
        .bind::<BigInt, _>(now.saturating_add(lease_ms))
        .bind::<BigInt, _>(now)
        .load(conn)?;
    if let Some(job) = rows.pop() {
        return Ok(Claim::Job(job));
    }
    let next: NextDue = diesel::sql_query(format!(
        "SELECT MIN(at) AS at FROM ( \
             SELECT MIN(run_at) AS at FROM jobs WHERE status = '{queued}' \
             UNION ALL SELECT MIN(locked_until) AS at FROM jobs WHERE status = '{running}') AS due",
        running = status::RUNNING,
        queued = status::QUEUED,
    ))
    .get_result(conn)?;
    Ok(Claim::NoneDue { next_at: next.at })
}

fn conn_backend(conn: &DbConnection) -> Backend {
    match conn {
        DbConnection::Postgresql(_) => Backend::Postgres,
        DbConnection::Sqlite(_) => Backend::Sqlite,
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;

    /// Fails each payload's first attempt and records when each attempt started.
    struct FailsOnce(Mutex<Vec<(String, Instant)>>);

    #[async_trait]
    impl JobHandler for FailsOnce {
        fn kind(&self) -> &'static str {
            "fails-once"
        }

        async fn run(&self, payload: &str) -> Result<(), String> {
            let mut attempts = self.0.lock().expect("not poisoned");
            let first = !attempts.iter().any(|(p, _)| p == payload);
            attempts.push((payload.to_owned(), Instant::now()));
            if first { Err("not yet".into()) } else { Ok(()) }
        }

        async fn dead_lettered(&self, _payload: &str, _error: &str) {}
    }

    /// With an hour between polls, a retry still runs after its backoff, and a job scheduled for
    /// later when it falls due: the worker sleeps until the earliest job it knows of.
    #[tokio::test]
    async fn an_idle_worker_wakes_when_the_next_job_falls_due_not_at_the_next_poll() {
        let (_dir, db) = crate::platform::db::Db::temporary();
        let settings = JobSettings {
            workers: 1,
            max_attempts: 3,
            backoff_base_ms: 300,
            backoff_max_secs: 60,
            poll_interval_ms: 3_600_000,
            lease_secs: 60,
        };
        let handler = Arc::new(FailsOnce(Mutex::new(Vec::new())));
        let mut queue = JobQueue::new(db.clone(), settings);
        queue.register(handler.clone());
        let queue = Arc::new(queue);
        let cancel = CancellationToken::new();
        let workers = queue.spawn_workers(cancel.clone());
        let at = now_ms() + 400;
        db.run(move |conn| {
            enqueue(conn, "fails-once", "retried", 3)?;
            enqueue_once_at(conn, "fails-once", "later", 3, at)?;
            Ok::<_, DbError>(())
        })
        .await
        .expect("enqueued");
        queue.enqueuer().waker.wake();
        let started = Instant::now();
        while queue.stats().succeeded.load(Ordering::SeqCst) < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "jobs still waiting: {:?}",
                handler.0.lock().expect("not poisoned")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        for worker in workers {
            worker.await.expect("stopped");
        }
        let attempts = handler.0.lock().expect("not poisoned").clone();
        let of = |payload: &str| -> Vec<Instant> {
            attempts
                .iter()
                .filter(|(p, _)| p == payload)
                .map(|(_, at)| *at)
                .collect()
        };
        // Each failed once and ran again no sooner than its backoff.
        for payload in ["retried", "later"] {
            let runs = of(payload);
            assert_eq!(runs.len(), 2, "{payload}: {attempts:?}");
            assert!(
                runs[1] - runs[0] >= Duration::from_millis(290),
                "{payload}: {runs:?}"
            );
        }
        assert_eq!(queue.stats().retried.load(Ordering::SeqCst), 2);
        assert_eq!(queue.depth().await.expect("read"), QueueDepth::default());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = JobSettings {
            workers: 1,
            max_attempts: 5,
            backoff_base_ms: 100,
            backoff_max_secs: 1,
            poll_interval_ms: 100,
            lease_secs: 60,
        };
        assert_eq!(s.backoff(1), Duration::from_millis(100));
        assert_eq!(s.backoff(2), Duration::from_millis(200));
        assert_eq!(s.backoff(4), Duration::from_millis(800));
        assert_eq!(s.backoff(5), Duration::from_secs(1));
        assert_eq!(s.backoff(60), Duration::from_secs(1));
    }
}
